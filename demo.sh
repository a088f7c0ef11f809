#!/usr/bin/env bash
# The demo: a simulated cluster (kube-sim: an API server with an aggregation layer and one
# kubelet per node) and the real metrics-bridge against it, as two separate processes, with
# metrics-bridge registered for metrics.k8s.io through kube-sim's aggregator exactly as an
# APIService registers metrics-server with kube-apiserver. Waits until `kubectl top node`
# works, prints the commands to try, and runs until Ctrl-C, which stops both.
#
# Settings (environment):
#   DEMO_NODES              nodes in the simulated cluster (default 20)
#   DEMO_PODS_PER_NODE      pods per node (default 10)
#   DEMO_DIR                where kube-sim writes its kubeconfigs and both processes log
#                           (default ./demo-cluster; emptied at start)
#   DEMO_RESOLUTION         metrics-bridge's --metric-resolution (default 10s)
#   DEMO_KUBELET_TIMEOUT    its --kubelet-request-timeout (default 5s; at most 90% of the
#                           resolution)
#   DEMO_PORT               metrics-bridge's port (default: the first free one from 4443)
#   DEMO_KUBELET_PORT       the simulated kubelets' port (default: the first free one from 10250)
#   DEMO_BIN_DIR            a directory holding already built `kube-sim` and `metrics-bridge`:
#                           skips the release build (the tests point it at their debug build)
#   DEMO_EXIT_AFTER_READY=1 stop both and exit 0 once `kubectl top node` has worked
set -euo pipefail

cd "$(dirname "$0")"

say() { printf 'demo: %s\n' "$*"; }
die() {
    printf 'demo: error: %s\n' "$*" >&2
    exit 1
}

nodes=${DEMO_NODES:-20}
pods_per_node=${DEMO_PODS_PER_NODE:-10}
resolution=${DEMO_RESOLUTION:-10s}
kubelet_timeout=${DEMO_KUBELET_TIMEOUT:-5s}
dir=${DEMO_DIR:-demo-cluster}

# --- kubectl: the one on PATH, else the Google Cloud SDK's ---------------------------------
if command -v kubectl >/dev/null 2>&1; then
    kubectl=kubectl
elif [ -x /usr/lib/google-cloud-sdk/bin/kubectl ]; then
    kubectl=/usr/lib/google-cloud-sdk/bin/kubectl
else
    die "kubectl is not on PATH (nor in /usr/lib/google-cloud-sdk/bin); install it to run the demo"
fi

# --- the binaries ----------------------------------------------------------------------------
if [ -n "${DEMO_BIN_DIR:-}" ]; then
    bin_dir=$DEMO_BIN_DIR
else
    command -v cargo >/dev/null 2>&1 || die "cargo is not on PATH: install Rust (https://rustup.rs)"
    say "building kube-sim and metrics-bridge (cargo build --release; the first build takes a few minutes)..."
    cargo build --release --quiet --bin kube-sim --bin metrics-bridge
    # Wherever cargo puts them (CARGO_TARGET_DIR, .cargo/config.toml, or ./target).
    target_dir=$(cargo metadata --format-version 1 --no-deps |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
    bin_dir=${target_dir:-target}/release
fi
for b in kube-sim metrics-bridge; do
    [ -x "$bin_dir/$b" ] || die "$bin_dir/$b is missing or not executable"
done

# --- ports -----------------------------------------------------------------------------------
# Whether something accepts connections on 127.0.0.1:PORT (bash's /dev/tcp, no extra tool).
port_busy() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
free_port_from() {
    local host=$1 port=$2
    while port_busy "$host" "$port"; do
        port=$((port + 1))
        [ "$port" -lt 65535 ] || die "no free port on $host"
    done
    echo "$port"
}
port=${DEMO_PORT:-$(free_port_from 127.0.0.1 4443)}
# The first kubelet listens on 127.1.0.1; a kubelet of a real node on 0.0.0.0:10250 would
# take the port from all of 127/8.
kubelet_port=${DEMO_KUBELET_PORT:-$(free_port_from 127.1.0.1 10250)}

# --- the cluster directory -------------------------------------------------------------------
# Emptied only when it is ours (a previous demo's), never an unrelated directory.
if [ -e "$dir" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
    [ -e "$dir/kube-sim.log" ] || [ -e "$dir/kubeconfig" ] ||
        die "$dir exists and is not a previous demo's cluster directory: set DEMO_DIR"
    rm -rf "$dir"
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

# --- stopping both, whatever happens ---------------------------------------------------------
sim_pid=
bridge_pid=
stopping=
status=
# Stops PID with SIGTERM (SIGKILL after 30 s); its exit status goes to $status.
terminate() {
    local pid=$1
    status=0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || status=$?
}
# Stops metrics-bridge, then kube-sim, says how each exited, and exits with CODE.
stop() {
    local code=$1
    [ -n "$stopping" ] && return
    stopping=1
    trap '' INT TERM HUP
    # metrics-bridge first, so that it never scrapes or watches a cluster that has gone.
    local bridge_status=- sim_status=-
    if [ -n "$bridge_pid" ]; then
        terminate "$bridge_pid"
        bridge_status=$status
    fi
    if [ -n "$sim_pid" ]; then
        terminate "$sim_pid"
        sim_status=$status
    fi
    if [ -n "$bridge_pid$sim_pid" ]; then
        say "stopped metrics-bridge (exit $bridge_status) and kube-sim (exit $sim_status); logs in $dir"
    fi
    exit "$code"
}
trap 'stop $?' EXIT
trap 'echo; stop 0' INT
trap 'stop 0' TERM HUP

# Both run in sessions of their own, so that Ctrl-C (SIGINT to the terminal's foreground
# process group) reaches only this script, which stops them in order: were they in our
# group, one could exit before the trap runs and look like a crash.
detach=()
command -v setsid >/dev/null 2>&1 && detach=(setsid)

# Fails the demo, showing the end of LOG, when PID has stopped on its own.
check_alive() {
    local pid=$1 name=$2 log=$3
    if ! kill -0 "$pid" 2>/dev/null; then
        local status=0
        wait "$pid" || status=$?
        [ "$name" = kube-sim ] && sim_pid= || bridge_pid=
        printf 'demo: error: %s exited (status %s); the end of %s:\n' "$name" "$status" "$log" >&2
        tail -n 20 "$log" >&2
        exit 1
    fi
}

# --- kube-sim --------------------------------------------------------------------------------
say "starting kube-sim: $nodes nodes, $pods_per_node pods per node, kubelets on 127.1.x.y:$kubelet_port"
${detach[@]+"${detach[@]}"} "$bin_dir/kube-sim" \
    --dir "$dir" \
    --nodes "$nodes" \
    --pods-per-node "$pods_per_node" \
    --apiserver-addr 127.0.0.1:0 \
    --kubelet-port "$kubelet_port" \
    --aggregate "metrics.k8s.io=https://127.0.0.1:$port" \
    --aggregator-probe-interval 2s \
    >"$dir/kube-sim.out" 2>"$dir/kube-sim.log" &
sim_pid=$!

apiserver=
for _ in $(seq 1 600); do
    check_alive "$sim_pid" kube-sim "$dir/kube-sim.log"
    apiserver=$(sed -n 's/.*ready: apiserver \(https:[^ ]*\).*/\1/p' "$dir/kube-sim.out")
    [ -n "$apiserver" ] && break
    sleep 0.1
done
[ -n "$apiserver" ] || die "kube-sim was not ready within 60s; see $dir/kube-sim.log"

# --- metrics-bridge --------------------------------------------------------------------------
say "starting metrics-bridge on https://127.0.0.1:$port (--metric-resolution=$resolution)"
${detach[@]+"${detach[@]}"} "$bin_dir/metrics-bridge" \
    --kubeconfig="$dir/metrics-bridge.kubeconfig" \
    --bind-address=127.0.0.1 \
    --secure-port="$port" \
    --cert-dir="$dir/metrics-bridge-certs" \
    --kubelet-port="$kubelet_port" \
    --kubelet-preferred-address-types=InternalIP \
    --metric-resolution="$resolution" \
    --kubelet-request-timeout="$kubelet_timeout" \
    >/dev/null 2>"$dir/metrics-bridge.log" &
bridge_pid=$!

# --- wait for kubectl top --------------------------------------------------------------------
k() { "$kubectl" --kubeconfig "$dir/kubeconfig" "$@"; }
say "waiting until kubectl top node shows every node (the aggregator must see metrics-bridge, and two scrapes of each kubelet must land)..."
top=
for _ in $(seq 1 180); do
    check_alive "$sim_pid" kube-sim "$dir/kube-sim.log"
    check_alive "$bridge_pid" metrics-bridge "$dir/metrics-bridge.log"
    if out=$(k top node 2>"$dir/kubectl.err"); then
        top=$out
        # A node whose second scrape has not landed yet shows <unknown>; on a busy machine
        # the first working `top` can come while some still do.
        case "$out" in *"<unknown>"*) ;; *) break ;; esac
    fi
    sleep 1
done
[ -n "$top" ] || die "kubectl top node did not work within 180s: $(cat "$dir/kubectl.err"); see $dir/*.log"

echo
echo "$top"
echo
printf -v kc '%q --kubeconfig %q' "$kubectl" "$dir/kubeconfig"
echo "metrics-bridge serves metrics.k8s.io through kube-sim's API server at $apiserver. Try:"
echo
echo "  $kc top node"
echo "  $kc top pod -A"
echo "  $kc top pod -n kube-system --containers"
echo "  $kc get --raw /apis/metrics.k8s.io/v1beta1/nodes"
echo "  $kc get --raw /apis/metrics.k8s.io/v1/namespaces/kube-system/pods"
echo "  $kc get --raw /sim/expected        # what the simulated kubelets' rates really are"

# The Prometheus endpoints, listed once this build serves them (kube-sim's admin client
# certificate is accepted by metrics-bridge's delegated authentication).
if command -v curl >/dev/null 2>&1; then
    curl_args=(-sk --cert "$dir/admin.crt" --key "$dir/admin.key")
    for path in /metrics/resource /metrics; do
        url="https://127.0.0.1:$port$path"
        code=$(curl "${curl_args[@]}" -o /dev/null -w '%{http_code}' "$url" 2>/dev/null || true)
        if [ "$code" = 200 ]; then
            printf '  curl'
            printf ' %q' "${curl_args[@]}" "$url"
            echo
        fi
    done
fi
echo
echo "Logs: $dir/kube-sim.log, $dir/metrics-bridge.log"

if [ "${DEMO_EXIT_AFTER_READY:-}" = 1 ]; then
    stop 0
fi
echo "Press Ctrl-C to stop both."

# Runs until Ctrl-C, or until either process stops on its own (which is an error).
while :; do
    wait -n 2>/dev/null || true
    check_alive "$sim_pid" kube-sim "$dir/kube-sim.log"
    check_alive "$bridge_pid" metrics-bridge "$dir/metrics-bridge.log"
done
