#!/usr/bin/env bash
# Scale run of metrics-bridge against kube-sim (issue 6 §2); figures go into BENCHMARKS.md.
#
# Starts a release kube-sim with NODES × PODS × CONTAINERS and a release metrics-bridge as a
# separate process at a RESOLUTION, lets it tick TICKS times after two warm-up ticks, and
# records, for metrics-bridge alone (from /proc/PID):
#   - resident memory: steady (median VmRSS over the measured ticks) and peak (VmHWM);
#   - CPU seconds per minute (utime+stime over the measured ticks), per node and per pod;
#   - tick duration p50/p99/max and scrape failures (its "tick finished" log lines, -v=2);
#   - API latency with wrk: the HPA query (one namespace, app=X, protobuf Accept) paced at
#     HPA_RATE req/s, and `top pod -A` (every pod, JSON) back to back on one connection;
#     then the HPA query again from a second client (scripts/scale/hpaclient.py, Python, one
#     kept-alive connection) at the same rate;
#   - the bridged Prometheus exposition (/metrics/resource) time, size and series, when
#     it is served.
# With --churn-percent P, kube-sim replaces P % of the pods per minute and memory is sampled
# every SAMPLE seconds for --duration; the summary gives the RSS slope (least squares), and
# the live heap's (jemalloc's allocated bytes, read from /metrics at each sample), over the
# whole window and its second half.
#
#   scripts/scale.sh --nodes 1000
#   scripts/scale.sh --nodes 5000 --ticks 20
#   scripts/scale.sh --nodes 5000 --churn-percent 1 --duration 1800 --sample 30
#   scripts/scale.sh --nodes 20000 --pin
#
# One kube-sim holds about 9,900 nodes under a hard RLIMIT_NOFILE of 20,000 (a listener and a
# connection per node). Above what one process can hold (or with --sims K > 1), the cluster
# is split as a real one would be simulated with KWOK: a kube-sim serving the API with no
# nodes, and K kube-sims in --external-apiserver mode, each with its own --first-node range
# (multiples of 32) and CA, started one after another; metrics-bridge verifies every kubelet
# against the bundle of their CAs. --lease-renew S sets their kubelets' lease renewal
# (default 10 s, as the kubelet; 20,000 leases every 10 s are 2,000 writes/s to the serving
# kube-sim).
# --pin puts metrics-bridge alone on the last CPU and kube-sim(s) (once ready), wrk and curl on
# the others (taskset), so tick durations measure metrics-bridge, not its competition for cores.
# --pin also moves DAMON's kernel thread (kdamond, active on this VM) off metrics-bridge's CPU for
# the run: it ran up to 4 ms at a time there, 61 times in 20 s, delaying the API's threads.
# --wrk-rt runs the HPA query's wrk and second client at real-time priority (chrt -f 50), so
# their own pacing and timing are not delayed by the simulator on the same CPU: what they
# measure is then the server and the VM. (`top pod -A`'s wrk stays at normal priority.)
#
# Builds both binaries first (cargo build --release) unless --no-build; uses
# $CARGO_TARGET_DIR (or ./target). Everything it writes goes to --out (default a fresh
# directory under /tmp), including summary.md; the summary is also printed.
set -euo pipefail

NODES=1000
PODS=30
CONTAINERS=2
RESOLUTION=15
TICKS=20
HPA_RATE=500
HPA_SECONDS=30
TOP_SECONDS=30
CHURN_PERCENT=0
DURATION=0
SAMPLE=5
OUT=""
BUILD=1
SIMS=0
LEASE_RENEW=10
PIN=0
WRK_RT=0

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    echo "options: --nodes N --pods-per-node P --containers-per-pod C --resolution SECONDS"
    echo "         --ticks T --hpa-rate R --hpa-seconds S --top-seconds S --churn-percent P"
    echo "         --duration SECONDS --sample SECONDS --out DIR --no-build"
    echo "         --sims K --lease-renew SECONDS --pin --wrk-rt"
    exit "${1:-0}"
}

while [ $# -gt 0 ]; do
    case "$1" in
    --nodes) NODES=$2; shift 2 ;;
    --pods-per-node) PODS=$2; shift 2 ;;
    --containers-per-pod) CONTAINERS=$2; shift 2 ;;
    --resolution) RESOLUTION=$2; shift 2 ;;
    --ticks) TICKS=$2; shift 2 ;;
    --hpa-rate) HPA_RATE=$2; shift 2 ;;
    --hpa-seconds) HPA_SECONDS=$2; shift 2 ;;
    --top-seconds) TOP_SECONDS=$2; shift 2 ;;
    --churn-percent) CHURN_PERCENT=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --sample) SAMPLE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --sims) SIMS=$2; shift 2 ;;
    --lease-renew) LEASE_RENEW=$2; shift 2 ;;
    --pin) PIN=1; shift ;;
    --wrk-rt) WRK_RT=1; shift ;;
    -h | --help) usage 0 ;;
    *) echo "scale.sh: unknown argument $1" >&2; usage 2 >&2 ;;
    esac
done

WRK_PREFIX=()
if [ "$WRK_RT" = 1 ]; then
    chrt -f 50 true 2>/dev/null || { echo "scale.sh: --wrk-rt needs chrt and the right to use SCHED_FIFO" >&2; exit 1; }
    WRK_PREFIX=(chrt -f 50)
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release
if [ "$BUILD" = 1 ]; then
    (cd "$ROOT" && cargo build --release --bin metrics-bridge --bin kube-sim)
fi
for b in metrics-bridge kube-sim; do
    [ -x "$BIN/$b" ] || { echo "scale.sh: $BIN/$b is missing (build it or drop --no-build)" >&2; exit 1; }
done
command -v wrk >/dev/null || { echo "scale.sh: wrk is not installed" >&2; exit 1; }

OUT=${OUT:-$(mktemp -d /tmp/scale.XXXXXX)}
mkdir -p "$OUT"
log() { echo "[$(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)] $*" >&2; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# One descriptor per kubelet listener and one per connection metrics-bridge keeps to it.
HARD_NOFILE=$(ulimit -Hn)
per_sim_max=$NODES
[ "$HARD_NOFILE" = unlimited ] || per_sim_max=$(((HARD_NOFILE - 256) / 2 / 32 * 32))
if [ "$SIMS" = 0 ]; then
    SIMS=$(((NODES + per_sim_max - 1) / per_sim_max))
    # Above one process, even ranges: four of 5,000 rather than two of 9,984 and a remainder.
    [ "$SIMS" -le 1 ] || SIMS=$(((NODES + 4999) / 5000))
fi
# Ranges start at multiples of 32 (kube-sim's Deployment blocks); the last takes the rest.
range=$(((NODES + SIMS - 1) / SIMS))
range=$(((range + 31) / 32 * 32))
if [ "$SIMS" -gt 1 ] && [ $((range * (SIMS - 1))) -ge "$NODES" ]; then
    echo "scale.sh: $NODES nodes do not split into $SIMS ranges of multiples of 32" >&2
    exit 2
fi
biggest=$NODES
[ "$SIMS" -le 1 ] || biggest=$range
if [ "$HARD_NOFILE" != unlimited ] && [ $((biggest * 2 + 256)) -gt "$HARD_NOFILE" ]; then
    echo "scale.sh: a kube-sim with $biggest nodes needs about $((biggest * 2 + 256)) descriptors (a" >&2
    echo "listener and a connection per node); the hard limit here is $HARD_NOFILE: use --sims" >&2
    exit 1
fi

# --pin: metrics-bridge on the last CPU, everything else on the rest.
SIM_CPUS=""
BRIDGE_CPUS=""
if [ "$PIN" = 1 ]; then
    command -v taskset >/dev/null || { echo "scale.sh: --pin needs taskset" >&2; exit 1; }
    ncpu=$(nproc)
    [ "$ncpu" -ge 2 ] || { echo "scale.sh: --pin needs at least 2 CPUs" >&2; exit 1; }
    SIM_CPUS=0-$((ncpu - 2))
    BRIDGE_CPUS=$((ncpu - 1))
    KDAMONDS=$(pgrep -x 'kdamond\.[0-9]+' || true)
    for pid in $KDAMONDS; do taskset -p -c "$SIM_CPUS" "$pid" >/dev/null 2>&1 || true; done
fi
on_sim_cpus() { if [ -n "$SIM_CPUS" ]; then taskset -c "$SIM_CPUS" "$@"; else "$@"; fi; }
# A prefix, not a function: taskset execs metrics-bridge, so $! is metrics-bridge's own pid
# (a function run with & would be a subshell whose /proc figures are its own).
ON_BRIDGE_CPUS=()
[ -z "$BRIDGE_CPUS" ] || ON_BRIDGE_CPUS=(taskset -c "$BRIDGE_CPUS")

SIM_PIDS=""
BRIDGE_PID=""
SAMPLER_PID=""
cleanup() {
    for pid in $SAMPLER_PID $BRIDGE_PID; do
        kill "$pid" 2>/dev/null || true
    done
    # External kube-sims would delete every object from the serving one first (minutes at
    # this size); the whole simulated cluster goes away, so they are killed outright.
    for pid in $SIM_PIDS; do
        if [ "$SIMS" -gt 1 ]; then kill -KILL "$pid" 2>/dev/null || true; else kill "$pid" 2>/dev/null || true; fi
    done
    for pid in $BRIDGE_PID $SIM_PIDS; do
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    done
    for pid in ${KDAMONDS:-}; do taskset -p -c "0-$(($(nproc) - 1))" "$pid" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts a kube-sim (log NAME.log, dir NAME) and waits for its ready line.
start_sim() { # name args...
    local name=$1
    shift
    "$BIN/kube-sim" --dir "$OUT/$name" --apiserver-addr 127.0.0.1:0 "$@" >"$OUT/$name.log" 2>&1 &
    local pid=$!
    SIM_PIDS="$SIM_PIDS $pid"
    for _ in $(seq 1 7200); do
        grep -q ready "$OUT/$name.log" && break
        kill -0 "$pid" 2>/dev/null || { tail -20 "$OUT/$name.log" >&2; exit 1; }
        sleep 0.5
    done
    grep -q ready "$OUT/$name.log" || { echo "scale.sh: $name never became ready" >&2; exit 1; }
    log "$(grep ready "$OUT/$name.log" | head -1)"
}

# --- kube-sim ------------------------------------------------------------------------------
KUBELET_PORT=$(free_port)
churn_per_minute=$(awk -v n="$NODES" -v p="$PODS" -v c="$CHURN_PERCENT" 'BEGIN { printf "%.0f", n * p * c / 100 }')
SIM_START=$(date +%s)
if [ "$SIMS" -le 1 ]; then
    log "starting kube-sim: $NODES nodes × $PODS pods × $CONTAINERS containers, kubelet port $KUBELET_PORT, churn $churn_per_minute pods/min"
    start_sim sim --kubelet-port "$KUBELET_PORT" \
        --nodes "$NODES" --pods-per-node "$PODS" --containers-per-pod "$CONTAINERS" \
        --churn-per-minute "$churn_per_minute"
    KUBELET_CA=$OUT/sim/ca.crt
else
    log "starting the serving kube-sim (no nodes), then $SIMS external kube-sims of up to $range nodes"
    start_sim sim --nodes 0
    : >"$OUT/kubelet-cas.crt"
    first=0
    i=0
    while [ "$first" -lt "$NODES" ]; do
        n=$range
        [ $((first + n)) -le "$NODES" ] || n=$((NODES - first))
        churn_i=$(awk -v n="$n" -v p="$PODS" -v c="$CHURN_PERCENT" 'BEGIN { printf "%.0f", n * p * c / 100 }')
        log "external kube-sim $i: nodes $((first + 1))–$((first + n)), churn $churn_i pods/min"
        start_sim "nodes-$i" --external-apiserver "$OUT/sim/kube-sim-external.kubeconfig" \
            --kubelet-port "$KUBELET_PORT" --first-node "$first" --nodes "$n" \
            --pods-per-node "$PODS" --containers-per-pod "$CONTAINERS" \
            --churn-per-minute "$churn_i" --external-concurrency 64 \
            --node-lease-renew-interval "${LEASE_RENEW}s" \
            --node-lease-duration-seconds $((LEASE_RENEW * 4))
        cat "$OUT/nodes-$i/ca.crt" >>"$OUT/kubelet-cas.crt"
        first=$((first + n))
        i=$((i + 1))
    done
    KUBELET_CA=$OUT/kubelet-cas.crt
fi
SIM_READY_S=$(($(date +%s) - SIM_START))
# The simulator builds the cluster on every CPU and is confined to its own once it is ready
# (every thread, -a; threads it starts later inherit the mask).
# Its threads also run at nice 5 then, so that wrk, which shares its CPUs, takes its
# timestamps when the answers arrive rather than after a simulator's time slice.
if [ -n "$SIM_CPUS" ]; then
    for pid in $SIM_PIDS; do
        taskset -a -p -c "$SIM_CPUS" "$pid" >/dev/null
        for task in /proc/"$pid"/task/*; do renice -n 5 -p "${task##*/}" >/dev/null 2>&1 || true; done
    done
fi
API=$(grep -o 'apiserver https://[0-9.:]*' "$OUT/sim.log" | head -1 | cut -d' ' -f2)

# --- metrics-bridge ------------------------------------------------------------------------
PORT=$(free_port)
log "starting metrics-bridge on 127.0.0.1:$PORT, resolution ${RESOLUTION}s"
"${ON_BRIDGE_CPUS[@]}" "$BIN/metrics-bridge" --kubeconfig="$OUT/sim/metrics-bridge.kubeconfig" \
    --kubelet-certificate-authority="$KUBELET_CA" \
    --bind-address=127.0.0.1 --secure-port="$PORT" --cert-dir="$OUT/bridge-certs" \
    --kubelet-port="$KUBELET_PORT" --kubelet-preferred-address-types=InternalIP \
    --metric-resolution="${RESOLUTION}s" -v=2 >"$OUT/metrics-bridge.out" 2>"$OUT/metrics-bridge.log" &
BRIDGE_PID=$!
BRIDGE_START=$(date +%s.%N)
sleep 0.2
[ "$(readlink "/proc/$BRIDGE_PID/exe" 2>/dev/null)" = "$(readlink -f "$BIN/metrics-bridge")" ] ||
    { echo "scale.sh: pid $BRIDGE_PID is not metrics-bridge" >&2; tail -20 "$OUT/metrics-bridge.log" >&2; exit 1; }
URL=https://127.0.0.1:$PORT

CLK_TCK=$(getconf CLK_TCK)
# /proc/PID/stat fields 14 and 15 (utime, stime) in clock ticks; the command name (field 2)
# has no spaces here.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$BRIDGE_PID/stat"; }
status_kb() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$BRIDGE_PID/status"; }
# The live heap as jemalloc counts it (metrics_bridge_allocator_allocated_bytes, in KiB; "-"
# before the API serves or without jemalloc), so that growth of the heap can be told from
# memory the allocator keeps.
heap_kb() {
    curl -sk -m 5 -H "Authorization: Bearer $(cat "$OUT/sim/admin.token")" "$URL/metrics" 2>/dev/null |
        awk '$1 == "metrics_bridge_allocator_allocated_bytes" { printf "%d", $2 / 1024; found = 1 } END { if (!found) printf "-" }'
}
sampler() {
    echo "unix_s rss_kb hwm_kb cpu_ticks load1 heap_kb" >"$OUT/samples.txt"
    while kill -0 "$BRIDGE_PID" 2>/dev/null; do
        echo "$(date +%s.%N) $(status_kb VmRSS) $(status_kb VmHWM) $(cpu_ticks) $(cut -d' ' -f1 /proc/loadavg) $(heap_kb)" >>"$OUT/samples.txt"
        sleep "$SAMPLE"
    done
}
sampler &
SAMPLER_PID=$!

ticks_done() { grep -c 'tick finished' "$OUT/metrics-bridge.log" || true; }
wait_ticks() {
    local want=$1 limit=$2
    local end=$(($(date +%s) + limit))
    while [ "$(ticks_done)" -lt "$want" ]; do
        kill -0 "$BRIDGE_PID" 2>/dev/null || { tail -20 "$OUT/metrics-bridge.log" >&2; exit 1; }
        [ "$(date +%s)" -lt "$end" ] || { echo "scale.sh: only $(ticks_done) of $want ticks in ${limit}s" >&2; exit 1; }
        sleep 1
    done
}

# Two warm-up ticks: the first only primes the rate bookkeeping and the caches sync first.
wait_ticks 2 $((RESOLUTION * 4 + 600))
log "warm: $(ticks_done) ticks"
M0_T=$(date +%s.%N)
M0_CPU=$(cpu_ticks)
if [ "$DURATION" -gt 0 ]; then
    measure_ticks=$(( DURATION / RESOLUTION ))
    [ "$measure_ticks" -ge "$TICKS" ] || measure_ticks=$TICKS
else
    measure_ticks=$TICKS
fi
wait_ticks $((2 + measure_ticks)) $(((measure_ticks + 4) * RESOLUTION + 60))
M1_T=$(date +%s.%N)
M1_CPU=$(cpu_ticks)
RSS_HWM_TICKS=$(status_kb VmHWM)
LOAD_MEASURE=$(cut -d' ' -f1-3 /proc/loadavg)
log "measured $measure_ticks ticks"

# --- API latency under load ---------------------------------------------------------------
AUTH=""
[ -f "$OUT/sim/hpa.token" ] && AUTH=$(cat "$OUT/sim/hpa.token")
NS=team-alpha
# An HPA on a Deployment asks for one namespace and the Deployment's selector (app=X).
# kube-sim's Deployments hold a handful to ~100 pods each; take the one closest to 50.
APP=$(curl -sf --cacert "$OUT/sim/ca.crt" -H "Authorization: Bearer $(cat "$OUT/sim/admin.token")" \
    -H 'Accept: application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1' \
    "$API/api/v1/namespaces/$NS/pods" |
    python3 -c 'import collections,json,sys
n = collections.Counter(i["metadata"]["labels"]["app"] for i in json.load(sys.stdin)["items"]
                        if "pod-template-hash" in i["metadata"].get("labels", {}))
print(min(n, key=lambda a: (abs(n[a] - 50), a)))')
HPA_PATH="/apis/metrics.k8s.io/v1beta1/namespaces/$NS/pods?labelSelector=app%3D$APP"
ALL_PATH="/apis/metrics.k8s.io/v1beta1/pods"
HPA_MATCHES=$(on_sim_cpus curl -sk -H "Authorization: Bearer $AUTH" "$URL$HPA_PATH" |
    python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))')
ALL_CURL=$(on_sim_cpus curl -sk -o "$OUT/all-pods.json" -w '%{size_download} %{time_total}' \
    -H 'Accept: application/json' -H "Authorization: Bearer $AUTH" "$URL$ALL_PATH")
ALL_ITEMS=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["items"]))' "$OUT/all-pods.json")
rm -f "$OUT/all-pods.json"

run_wrk() { # name rate connections seconds accept path [prefix...]
    log "wrk $1: $2 req/s over $3 connections for $4 s"
    local name=$1 rate=$2 conns=$3 seconds=$4 accept=$5 path=$6
    shift 6
    WRK_ACCEPT=$accept WRK_BEARER=$AUTH WRK_RATE=$rate WRK_CONNECTIONS=$conns \
        on_sim_cpus "$@" wrk -t1 -c"$conns" -d"$seconds"s --timeout 30s -s "$ROOT/scripts/scale/wrk.lua" "$URL$path" >"$OUT/wrk-$name.txt" 2>&1
    grep '^WRK' "$OUT/wrk-$name.txt"
}
# 25 connections (as kube-apiserver's aggregator spreads HPA requests over its pool), each
# pacing 50 ms, so the service time costs the target rate only a few percent.
# metrics-bridge's own account of the same requests: its list-pods latency histogram
# (arrival, before authentication, to response head) before and after, which leaves out wrk's
# and the VM's wake-ups.
api_histogram() {
    on_sim_cpus curl -sk -H "Authorization: Bearer $(cat "$OUT/sim/admin.token")" "$URL/metrics" |
        grep '^metrics_bridge_api_request_duration_seconds_bucket{.*verb="list",resource="pods"' >"$1" || true
}
api_histogram "$OUT/api-histogram-before.txt"
HPA_WRK=$(run_wrk hpa "$HPA_RATE" 25 "$HPA_SECONDS" "application/vnd.kubernetes.protobuf, */*" "$HPA_PATH" "${WRK_PREFIX[@]}")
LOAD_HPA=$(cut -d' ' -f1-3 /proc/loadavg)
api_histogram "$OUT/api-histogram-after.txt"
# A second, independent client for the same query: one kept-alive TLS connection (Python's ssl
# and http.client), paced at the same rate. wrk's own tail dominates its p99 under 3 ms
# (BENCHMARKS.md, "The HPA query end to end"); this one measured 0.66 ms where wrk said 2.2 ms.
log "second HPA client: $HPA_RATE req/s on one connection for $HPA_SECONDS s"
printf '%s' "$AUTH" >"$OUT/hpa-client.token"
HPA_PY=$(on_sim_cpus "${WRK_PREFIX[@]}" python3 "$ROOT/scripts/scale/hpaclient.py" "$URL$HPA_PATH" \
    "$OUT/hpa-client.token" "$HPA_RATE" "$HPA_SECONDS" 2>"$OUT/hpa-client.err" | grep '^PYCLIENT' || true)
# At normal priority even with --wrk-rt: reading 100+ MB answers back to back, a real-time
# wrk would take the simulator's CPUs from the kubelets the ticks are scraping meanwhile.
TOP_WRK=$(run_wrk top 0 1 "$TOP_SECONDS" "application/json" "$ALL_PATH")
LOAD_TOP=$(cut -d' ' -f1-3 /proc/loadavg)

# --- the bridged exposition (as the cluster admin: Prometheus' own grant varies) -----------
EXPO=$(on_sim_cpus curl -sk -o "$OUT/metrics.txt" -w '%{http_code} %{size_download} %{time_total}' \
    -H "Authorization: Bearer $(cat "$OUT/sim/admin.token")" "$URL/metrics/resource" || true)
EXPO_SERIES=$(grep -vc '^#' "$OUT/metrics.txt" 2>/dev/null || echo 0)
rm -f "$OUT/metrics.txt"
RSS_HWM_END=$(status_kb VmHWM)

# --- summary -------------------------------------------------------------------------------
kill "$SAMPLER_PID" 2>/dev/null || true
SAMPLER_PID=""
python3 - "$OUT" <<EOF >"$OUT/summary.md"
import re, statistics, sys
out = sys.argv[1]
nodes, pods_per_node, containers = $NODES, $PODS, $CONTAINERS
pods = nodes * pods_per_node
m0_t, m1_t = $M0_T, $M1_T
cpu_s = ($M1_CPU - $M0_CPU) / $CLK_TCK
minutes = (m1_t - m0_t) / 60
def dur(s):
    # tracing prints a Duration with Debug: 1.234s, 812.3ms, 950µs, 12ns.
    m = re.fullmatch(r"([0-9.]+)(s|ms|µs|us|ns)", s)
    if not m:
        return None
    return float(m.group(1)) * {"s": 1, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9}[m.group(2)]
ticks = []
for line in open(f"{out}/metrics-bridge.log", encoding="utf-8", errors="replace"):
    if "tick finished" not in line:
        continue
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)
    f = dict(re.findall(r"(\w+)=(\S+)", line))
    ticks.append((int(f.get("nodes", 0)), int(f.get("succeeded", 0)), dur(f.get("took", ""))))
measured = ticks[2:2 + $measure_ticks]
took = sorted(t[2] for t in measured if t[2] is not None)
def pct(v, p):
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))] if v else float("nan")
failures = sum(n - s for n, s, _ in measured)
scraped = sum(n for n, _, _ in measured)
samples = []
for line in open(f"{out}/samples.txt").read().splitlines()[1:]:
    parts = line.split()
    if len(parts) >= 5 and parts[1] and parts[2]:
        heap = int(parts[5]) if len(parts) > 5 and parts[5].isdigit() else None
        samples.append((float(parts[0]), int(parts[1]), int(parts[2]), heap))
window = [s for s in samples if m0_t <= s[0] <= m1_t]
rss_steady = statistics.median(s[1] for s in window) / 1024 if window else float("nan")
rss_peak = $RSS_HWM_TICKS / 1024
rss_peak_end = $RSS_HWM_END / 1024
def slope_of(points):
    """Least-squares slope in MiB per minute of (unix_s, KiB) points, NaN if too few."""
    if len(points) < 3:
        return float("nan")
    xs = [(t - points[0][0]) / 60 for t, _ in points]
    ys = [kib / 1024 for _, kib in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else float("nan")
rss_points = [(s[0], s[1]) for s in window]
heap_points = [(s[0], s[3]) for s in window if s[3] is not None]
slope = slope_of(rss_points)
half = lambda points: [p for p in points if p[0] >= (m0_t + m1_t) / 2]
heap_steady = statistics.median(h for _, h in heap_points) / 1024 if heap_points else float("nan")
def wrk(line):
    return dict(kv.split("=") for kv in line.split()[1:]) if line.startswith("WRK") else {}
hpa, top = wrk("""$HPA_WRK"""), wrk("""$TOP_WRK""")
py = dict(kv.split("=") for kv in """$HPA_PY""".split()[1:])
expo = "$EXPO".split()
all_size, all_time = "$ALL_CURL".split()
cpu_per_min = cpu_s / minutes if minutes else float("nan")
print(f"### {nodes:,} nodes × {pods_per_node} pods × {containers} containers ({pods:,} pods), {$RESOLUTION} s resolution")
print()
sims = $SIMS
print(("One kube-sim" if sims <= 1 else f"A serving kube-sim and {sims} external kube-sims (lease renewal ${LEASE_RENEW} s)") + f", ready in {$SIM_READY_S} s" + ("; metrics-bridge pinned to CPU $BRIDGE_CPUS, the simulator, wrk and curl to CPUs $SIM_CPUS." if "$BRIDGE_CPUS" else "; nothing pinned.") + (" wrk and the second HPA client ran at real-time priority (--wrk-rt)." if $WRK_RT else ""))
print()
print(f"Measured over {len(measured)} ticks ({minutes:.1f} min) after 2 warm-up ticks; load average {'$LOAD_MEASURE'}; churn {'$churn_per_minute'} pods/min.")
print()
print("| figure | measured | per node | per pod |")
print("|---|---|---|---|")
print(f"| RSS steady (median VmRSS) | {rss_steady:.1f} MiB | {rss_steady / nodes * 1024:.1f} KiB | {rss_steady / pods * 1024:.2f} KiB |")
print(f"| RSS peak (VmHWM, ticks only) | {rss_peak:.1f} MiB | {rss_peak / nodes * 1024:.1f} KiB | {rss_peak / pods * 1024:.2f} KiB |")
print(f"| RSS peak (VmHWM, after the API load) | {rss_peak_end:.1f} MiB | {rss_peak_end / nodes * 1024:.1f} KiB | {rss_peak_end / pods * 1024:.2f} KiB |")
print(f"| CPU (utime+stime) | {cpu_per_min:.2f} s/min = {cpu_per_min / 60 * 1000:.0f} mCPU | {cpu_per_min / 60 * 1e6 / nodes:.1f} µCPU ({cpu_per_min / 60 * 1000 / nodes:.4f} mCPU) | {cpu_per_min / 60 * 1e6 / pods:.2f} µCPU |")
print(f"| tick duration p50 / p99 / max | {pct(took, 50):.3f} s / {pct(took, 99):.3f} s / {took[-1] if took else float('nan'):.3f} s | | |")
print(f"| scrape failures | {failures} of {scraped} node scrapes | | |")
if $DURATION > 0 and len(window) >= 3:
    print(f"| RSS slope (least squares over {len(window)} samples) | {slope * 60:+.2f} MiB/h; second half {slope_of(half(rss_points)) * 60:+.2f} MiB/h | | |")
    if heap_points:
        print(f"| live heap (jemalloc allocated): median, slope | {heap_steady:.1f} MiB; {slope_of(heap_points) * 60:+.2f} MiB/h, second half {slope_of(half(heap_points)) * 60:+.2f} MiB/h | {heap_steady / nodes * 1024:.1f} KiB | {heap_steady / pods * 1024:.2f} KiB |")
print()
print(f"API (load average during the HPA run {'$LOAD_HPA'}, during top {'$LOAD_TOP'}):")
print()
print("| query | rate | p50 | p90 | p99 | p99.9 | max | bytes | errors |")
print("|---|---|---|---|---|---|---|---|---|")
for name, w in ((f"HPA: {'$NS'}, app={'$APP'.replace('%2C', ',').replace('%3D', '=')} ($HPA_MATCHES pods), protobuf", hpa), (f"top pod -A ($ALL_ITEMS pods), JSON, 1 connection", top)):
    if not w:
        print(f"| {name} | wrk failed (see wrk-*.txt) | | | | | | | |")
        continue
    ms = lambda k: f"{int(w[k]) / 1000:.2f} ms"
    print(f"| {name} | {float(w['rate']):.1f}/s | {ms('p50_us')} | {ms('p90_us')} | {ms('p99_us')} | {ms('p999_us')} | {ms('max_us')} | {float(w['bytes_per_req']):,.0f} | {w['errors']} |")
    if w is hpa:
        if py:
            pms = lambda k: f"{float(py[k]):.2f} ms"
            print(f"| the same, second client (Python, 1 connection) | {float(py['rate']):.1f}/s | {pms('p50_ms')} | {pms('p90_ms')} | {pms('p99_ms')} | {pms('p999_ms')} | {pms('max_ms')} | {int(py['bytes']):,} | {py['errors']} |")
        else:
            print("| the same, second client (Python, 1 connection) | failed (see hpa-client.err) | | | | | | | |")
def buckets(name):
    b = {}
    for line in open(f"{out}/{name}"):
        m = re.search(r'le="([^"]+)".* ([0-9.e+]+)$', line.strip())
        if m:
            b[float(m.group(1))] = float(m.group(2))
    return b
def quantile(q, cumulative):
    # Prometheus' histogram_quantile: linear within the bucket the rank falls in.
    bounds = sorted(cumulative)
    total = cumulative[bounds[-1]] if bounds else 0
    if total <= 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for le in bounds:
        if cumulative[le] >= rank:
            if le == float("inf"):
                return lower
            return lower + (le - lower) * (rank - below) / max(cumulative[le] - below, 1e-9)
        lower, below = le, cumulative[le]
    return lower
try:
    before, after = buckets("api-histogram-before.txt"), buckets("api-histogram-after.txt")
    delta = {le: after[le] - before.get(le, 0) for le in after}
    n = delta.get(float("inf"), 0)
    p50, p99 = quantile(0.5, delta), quantile(0.99, delta)
    if n and p50 is not None:
        under_1ms = delta.get(0.001, 0) / n * 100
        print()
        print(f"metrics-bridge's own histogram for those {n:,.0f} HPA requests (metrics_bridge_api_request_duration_seconds, list pods, arrival (before authentication) to response head): p50 {p50 * 1e3:.3f} ms, p99 {p99 * 1e3:.3f} ms (interpolated as histogram_quantile), {under_1ms:.2f} % under 1 ms.")
except FileNotFoundError:
    pass
print()
print(f"One curl of top pod -A (pretty-printed: like kube-apiserver, the API indents JSON for curl's User-Agent): {int(all_size):,} bytes in {float(all_time) * 1000:.0f} ms.")
if len(expo) == 3 and expo[0] == "200":
    print(f"Bridged exposition /metrics/resource: {int(expo[1]):,} bytes, {$EXPO_SERIES:,} series, in {float(expo[2]) * 1000:.0f} ms.")
else:
    print(f"Bridged exposition /metrics/resource: not served (HTTP {expo[0] if expo else 'none'}).")
EOF
cat "$OUT/summary.md"
log "done; files in $OUT"
