//! metrics-bridge as a real Prometheus (Debian's 2.42, on loopback) scrapes it: both
//! endpoints over TLS with a bearer token that kube-sim's RBAC (the shipped
//! `metrics-bridge:metrics-reader` role) allows, metrics-bridge running against kube-sim.
//!
//! Checked through Prometheus's own HTTP API: `rate()` of the bridged kubelet counters and
//! the usage gauges equal kube-sim's `/sim/expected` within 2%; a deleted pod's derived
//! series go stale at once (staleness marker) while its timestamped kubelet series stay
//! visible until the lookback delta has passed (Prometheus 2.42 writes no marker for
//! timestamped samples); every query of the shipped Grafana dashboards and alert rules
//! parses and every dashboard query returns data. Checked on the bodies: `promtool check
//! metrics` is clean on both endpoints, Python `prometheus_client` parses the OpenMetrics
//! and the 0.0.4 output with the sample counts we wrote, and the `metrics_server_*` family
//! names equal metrics-server's.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::{Cred, KubeSim, Reply};

/// Prometheus's `--query.lookback-delta` here: short, so the test sees timestamped series
/// vanish in seconds, long enough that nothing else in the test races it.
const LOOKBACK_S: f64 = 20.0;

/// A child process killed (by its own handle) when dropped; its stderr goes to a file, so
/// a chatty child never blocks on a full pipe.
struct Proc {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let err = std::fs::read_to_string(&self.log).unwrap_or_default();
            panic!("{} exited ({status}):\n{err}", self.name);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// kube-sim's RBAC: what `deploy/components.yaml` grants metrics-bridge, plus the prometheus
/// component's reader role bound to kube-sim's `viewer` user, whose token Prometheus sends.
fn rbac_file(dir: &Path) -> PathBuf {
    let components = std::fs::read_to_string(repo("deploy/components.yaml")).unwrap();
    let reader = std::fs::read_to_string(repo("deploy/components/prometheus/rbac.yaml"))
        .unwrap()
        .replace(
            "  - kind: ServiceAccount\n    name: prometheus-k8s\n    namespace: monitoring",
            "  - apiGroup: rbac.authorization.k8s.io\n    kind: User\n    name: viewer",
        );
    assert!(reader.contains("name: viewer"), "subject not rewritten");
    // The test also reads the metrics API as `viewer`, to fill the API's self-metrics.
    let api_reader = "apiVersion: rbac.authorization.k8s.io/v1\n\
                      kind: ClusterRole\n\
                      metadata:\n  name: test:metrics-api-reader\n\
                      rules:\n  - apiGroups: [metrics.k8s.io]\n    resources: [pods, nodes]\n    verbs: [get, list]\n\
                      ---\n\
                      apiVersion: rbac.authorization.k8s.io/v1\n\
                      kind: ClusterRoleBinding\n\
                      metadata:\n  name: test:metrics-api-reader\n\
                      roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: test:metrics-api-reader\n\
                      subjects:\n  - apiGroup: rbac.authorization.k8s.io\n    kind: User\n    name: viewer\n";
    let path = dir.join("rbac.yaml");
    std::fs::write(
        &path,
        format!("{components}\n---\n{reader}\n---\n{api_reader}"),
    )
    .unwrap();
    path
}

struct Setup {
    sim: KubeSim,
    bridge: Proc,
    prom: Proc,
    bridge_url: String,
    prom_url: String,
    token: String,
    _dir: tempfile::TempDir,
}

fn start() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let rbac = rbac_file(dir.path());
    let sim = KubeSim::start(&[
        "--nodes",
        "3",
        "--pods-per-node",
        "3",
        "--rbac",
        rbac.to_str().unwrap(),
    ]);
    let port = free_port();
    let log = |name: &str| {
        let path = dir.path().join(name);
        (std::fs::File::create(&path).unwrap(), path)
    };
    let (bridge_log, bridge_log_path) = log("metrics-bridge.log");
    let bridge = Command::new(env!("CARGO_BIN_EXE_metrics-bridge"))
        .arg(format!(
            "--kubeconfig={}",
            sim.path("metrics-bridge.kubeconfig").display()
        ))
        .args(["--bind-address=127.0.0.1", &format!("--secure-port={port}")])
        .arg(format!("--cert-dir={}", dir.path().join("certs").display()))
        .arg(format!("--kubelet-port={}", sim.kubelet_port))
        .args([
            "--kubelet-preferred-address-types=InternalIP",
            "--metric-resolution=1s",
            "--kubelet-request-timeout=900ms",
            "--metric-labels-allowlist=pods=[app,team],nodes=[topology.kubernetes.io/zone]",
        ])
        .stdout(Stdio::null())
        .stderr(bridge_log)
        .spawn()
        .expect("spawn metrics-bridge");
    let bridge = Proc {
        child: bridge,
        name: "metrics-bridge",
        log: bridge_log_path,
    };
    let bridge_url = format!("https://127.0.0.1:{port}");

    let token_file = sim.path("viewer.token");
    // Both endpoints as Prometheus would scrape them in a cluster: TLS, the bearer token;
    // /metrics/resource with the series' own labels and the kubelets' timestamps.
    let job = |name: &str, path: &str, extra: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    metrics_path: {path}\n{extra}    \
             authorization:\n      credentials_file: {token}\n    \
             tls_config:\n      insecure_skip_verify: true\n    \
             static_configs:\n      - targets: ['127.0.0.1:{port}']\n",
            token = token_file.display(),
        )
    };
    let config = format!(
        "global:\n  scrape_interval: 500ms\n  scrape_timeout: 450ms\n  evaluation_interval: 1s\n\
         rule_files:\n  - {rules}\n\
         scrape_configs:\n{self_job}{resource_job}",
        rules = repo("deploy/prometheus/rules.yaml").display(),
        self_job = job("metrics-bridge", "/metrics", ""),
        resource_job = job(
            "metrics-bridge-resource",
            "/metrics/resource",
            "    honor_labels: true\n    honor_timestamps: true\n"
        ),
    );
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    let prom_port = free_port();
    let (prom_log, prom_log_path) = log("prometheus.log");
    let prom = Command::new("/usr/bin/prometheus")
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .arg(format!("--query.lookback-delta={LOOKBACK_S}s"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(prom_log)
        .spawn()
        .expect("spawn prometheus");
    Setup {
        sim,
        bridge,
        prom: Proc {
            child: prom,
            name: "prometheus",
            log: prom_log_path,
        },
        bridge_url,
        prom_url: format!("http://127.0.0.1:{prom_port}"),
        token: std::fs::read_to_string(token_file).unwrap(),
        _dir: dir,
    }
}

/// `application/x-www-form-urlencoded` for one value.
fn form(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A plain-HTTP request to Prometheus (a form POST when `body` is not empty, else a GET);
/// the parsed JSON answer, or why there is none.
async fn prom_post(base: &str, path: &str, body: String) -> Result<Value, String> {
    use http_body_util::BodyExt;
    let uri: http::Uri = format!("{base}{path}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let host = uri.host().unwrap_or_default().to_string();
    let port = uri.port_u16().unwrap_or(80);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connect to prometheus: {e}"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let method = if body.is_empty() { "GET" } else { "POST" };
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("{host}:{port}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let res = send.send_request(req).await.map_err(|e| e.to_string())?;
    let bytes = res
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "{path}: not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    })
}

impl Setup {
    /// An instant query (at `time`, else now); the `data` object, or the error text.
    async fn try_query(&self, q: &str, time: Option<f64>) -> Result<Value, String> {
        let mut body = format!("query={}", form(q));
        if let Some(t) = time {
            body.push_str(&format!("&time={t:.3}"));
        }
        let v = prom_post(&self.prom_url, "/api/v1/query", body).await?;
        if v["status"] == "success" {
            Ok(v["data"].clone())
        } else {
            Err(format!("{}: {}", v["errorType"], v["error"]))
        }
    }

    /// The vector an instant query returns, as (labels, value).
    async fn vector(&self, q: &str, time: Option<f64>) -> Vec<(HashMap<String, String>, f64)> {
        let data = self
            .try_query(q, time)
            .await
            .unwrap_or_else(|e| panic!("{q}: {e}"));
        data["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{q}: not a vector: {data}"))
            .iter()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                let value = r["value"][1].as_str().unwrap().parse::<f64>().unwrap();
                (labels, value)
            })
            .collect()
    }

    /// Polls until `q` returns `n` series (or more, when `at_least`).
    async fn wait_for(&mut self, q: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            self.bridge.assert_running();
            self.prom.assert_running();
            let got = match self.try_query(q, None).await {
                Ok(data) => data["result"].as_array().map_or(0, |a| a.len()),
                Err(_) => 0,
            };
            if got == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{q} returned {got} series, never {n}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// GET on metrics-bridge with Prometheus's token.
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        support::https(
            "GET",
            &format!("{}{path}", self.bridge_url),
            None,
            Cred::Token(self.token.trim()),
            headers,
            Vec::new(),
        )
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }
}

fn key(labels: &HashMap<String, String>, names: &[&str]) -> String {
    names
        .iter()
        .map(|n| labels.get(*n).map_or("", String::as_str))
        .collect::<Vec<_>>()
        .join("/")
}

/// Asserts `got` has one value per expected key, each within 2% (or 1e-6 absolute).
fn assert_close(
    what: &str,
    got: &[(HashMap<String, String>, f64)],
    names: &[&str],
    want: &HashMap<String, f64>,
) {
    let got: HashMap<String, f64> = got.iter().map(|(l, v)| (key(l, names), *v)).collect();
    assert_eq!(
        got.keys().collect::<BTreeSet<_>>(),
        want.keys().collect::<BTreeSet<_>>(),
        "{what}: series differ"
    );
    for (k, w) in want {
        let g = got[k];
        assert!(
            (g - w).abs() <= w.abs() * 0.02 + 1e-6,
            "{what} {k}: Prometheus says {g}, kube-sim expects {w}"
        );
    }
}

const OPENMETRICS: &str = "application/openmetrics-text;version=1.0.0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_both_endpoints_and_sees_what_kube_sim_expects() {
    let mut s = start();
    let expected = s.sim.expected().await;
    let nodes = expected["nodes"].as_array().unwrap().clone();
    let pods = expected["pods"].as_array().unwrap().clone();
    let containers: usize = pods
        .iter()
        .map(|p| p["containers"].as_array().unwrap().len())
        .sum();

    s.wait_for("up == 1", 2).await;
    s.wait_for("metrics_bridge_container_cpu_usage_cores", containers)
        .await;
    // Enough history: every kubelet series has 20 samples (one a second) behind it, so the
    // rate windows below, [now-16s, now-6s], are covered from end to end.
    s.wait_for(
        "min(count_over_time(container_cpu_usage_seconds_total[25s])) >= 20 and min(count_over_time(node_cpu_usage_seconds_total[25s])) >= 20",
        1,
    )
    .await;
    // kube-sim's samples trail the scrape by a fixed lag of up to 5 s per series, as
    // cAdvisor's housekeeping does, and keep that timestamp through metrics-bridge. rate()
    // at "now" would extrapolate over the lag; evaluated 6 s back, every window is covered
    // by samples at both ends and rate() is the exact slope (see docs/metrics.md).
    // Prometheus scrapes twice per --metric-resolution, so it never misses a kubelet
    // sample: the samples are evenly spaced, and rate() extrapolates to both window edges.
    let at = now_s() - 6.0;

    // --- Numbers: Prometheus's view equals kube-sim's ground truth.
    let mut node_cpu = HashMap::new();
    let mut node_mem = HashMap::new();
    for n in &nodes {
        let name = n["name"].as_str().unwrap().to_string();
        node_cpu.insert(name.clone(), n["cpu_cores"].as_f64().unwrap());
        node_mem.insert(name, n["memory_bytes"].as_f64().unwrap());
    }
    let (mut c_cpu, mut c_mem, mut p_cpu, mut p_mem) = (
        HashMap::new(),
        HashMap::new(),
        HashMap::new(),
        HashMap::new(),
    );
    for p in &pods {
        let pod = format!(
            "{}/{}",
            p["namespace"].as_str().unwrap(),
            p["name"].as_str().unwrap()
        );
        for c in p["containers"].as_array().unwrap() {
            let k = format!("{pod}/{}", c["name"].as_str().unwrap());
            let cpu = c["cpu_cores"].as_f64().unwrap();
            let mem = c["memory_bytes"].as_f64().unwrap();
            c_cpu.insert(k.clone(), cpu);
            c_mem.insert(k, mem);
            *p_cpu.entry(pod.clone()).or_insert(0.0) += cpu;
            *p_mem.entry(pod.clone()).or_insert(0.0) += mem;
        }
    }
    let cont = ["namespace", "pod", "container"];
    let pod = ["namespace", "pod"];
    for (q, names, want) in [
        (
            "rate(container_cpu_usage_seconds_total[10s])",
            &cont[..],
            &c_cpu,
        ),
        (
            "metrics_bridge_container_cpu_usage_cores",
            &cont[..],
            &c_cpu,
        ),
        ("container_memory_working_set_bytes", &cont[..], &c_mem),
        (
            "metrics_bridge_container_memory_working_set_bytes",
            &cont[..],
            &c_mem,
        ),
        ("metrics_bridge_pod_cpu_usage_cores", &pod[..], &p_cpu),
        (
            "metrics_bridge_pod_memory_working_set_bytes",
            &pod[..],
            &p_mem,
        ),
        ("rate(pod_cpu_usage_seconds_total[10s])", &pod[..], &p_cpu),
        (
            "rate(node_cpu_usage_seconds_total[10s])",
            &["node"][..],
            &node_cpu,
        ),
        (
            "metrics_bridge_node_cpu_usage_cores",
            &["node"][..],
            &node_cpu,
        ),
        ("node_memory_working_set_bytes", &["node"][..], &node_mem),
        (
            "metrics_bridge_node_memory_working_set_bytes",
            &["node"][..],
            &node_mem,
        ),
    ] {
        let time = q.contains("rate(").then_some(at);
        let got = s.vector(q, time).await;
        assert_close(q, &got, names, want);
    }
    // The label joins: pods carry label_app, nodes their zone, on the usage series.
    let joined = s
        .vector("metrics_bridge_pod_cpu_usage_cores * on (namespace, pod) group_left (label_app) metrics_bridge_pod_labels", None)
        .await;
    assert_eq!(joined.len(), pods.len());
    assert!(joined.iter().all(|(l, _)| !l["label_app"].is_empty()));
    let zones = s
        .vector("count by (label_topology_kubernetes_io_zone) (metrics_bridge_node_allocatable_cpu_cores)", None)
        .await;
    assert_eq!(
        zones.iter().map(|(_, v)| *v).sum::<f64>(),
        nodes.len() as f64
    );
    // Scrape health: every node up, none failing.
    let up = s.vector("metrics_bridge_node_scrape_up", None).await;
    assert_eq!(up.len(), nodes.len());
    assert!(up.iter().all(|(_, v)| *v == 1.0));

    check_bodies(&s).await;
    check_staleness(&mut s, &pods).await;
    // Metrics API traffic, so that the API's self-metrics (requests, latency, freshness)
    // have series for the dashboards to show; then let Prometheus scrape them.
    for path in [
        "/apis/metrics.k8s.io/v1beta1/pods",
        "/apis/metrics.k8s.io/v1beta1/nodes",
        "/apis/metrics.k8s.io/v1beta1/namespaces/kube-system/pods",
    ] {
        let reply = s.get(path, &[]).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    }
    // Two scrapes of the new series, so that rate() over them has something to say.
    s.wait_for(
        "count(rate(metrics_server_api_metric_freshness_seconds_count[8s])) > 0 and count(rate(metrics_bridge_api_requests_total[8s])) > 0",
        1,
    )
    .await;
    check_dashboards_and_rules(&s, &nodes, &pods).await;
}

/// promtool, prometheus_client and the metrics-server name set, on both endpoints' bodies.
async fn check_bodies(s: &Setup) {
    let dir = tempfile::tempdir().unwrap();
    // Both endpoints are authorized: a token without the reader role is refused.
    let hpa = s.sim.token("hpa");
    for path in ["/metrics", "/metrics/resource"] {
        let refused = support::https(
            "GET",
            &format!("{}{path}", s.bridge_url),
            None,
            Cred::Token(hpa.trim()),
            &[],
            Vec::new(),
        )
        .await
        .unwrap();
        assert_eq!(refused.status, 403, "{path}: {}", refused.text());
    }
    for path in ["/metrics", "/metrics/resource"] {
        let text = s.get(path, &[]).await;
        assert_eq!(text.status, 200, "{path}: {}", text.text());
        assert_eq!(
            text.headers["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let om = s.get(path, &[("accept", OPENMETRICS)]).await;
        assert_eq!(
            om.headers["content-type"],
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        assert!(om.text().ends_with("# EOF\n"));

        // promtool reads the text format on stdin; clean means no output and exit 0.
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool");
        child.stdin.take().unwrap().write_all(&text.body).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "promtool check metrics {path}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        // prometheus_client's parsers accept each format and find every sample we wrote.
        let samples = |body: &str| {
            body.lines()
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .count()
        };
        let (tf, of) = (dir.path().join("text"), dir.path().join("om"));
        std::fs::write(&tf, &text.body).unwrap();
        std::fs::write(&of, &om.body).unwrap();
        let counted = s.sim.python(
            "import sys\n\
             from prometheus_client.parser import text_string_to_metric_families as text\n\
             from prometheus_client.openmetrics.parser import text_string_to_metric_families as om\n\
             t = sum(len(f.samples) for f in text(open(sys.argv[1]).read()))\n\
             o = sum(len(f.samples) for f in om(open(sys.argv[2]).read()))\n\
             print(t, o)\n",
            &[tf.to_str().unwrap(), of.to_str().unwrap()],
        );
        assert_eq!(
            counted.trim(),
            format!("{} {}", samples(&text.text()), samples(&om.text())),
            "{path}: prometheus_client's sample counts"
        );

        // gzip when asked, the same text inside.
        let gz = s.get(path, &[("accept-encoding", "gzip")]).await;
        assert_eq!(gz.headers["content-encoding"], "gzip");
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz.body[..]), &mut plain)
            .unwrap();
        assert_eq!(
            samples(&String::from_utf8_lossy(&plain)),
            samples(&text.text()),
            "{path}: gzipped body"
        );

        if path == "/metrics" {
            let names: BTreeSet<&str> = text
                .text()
                .lines()
                .filter_map(|l| l.strip_prefix("# TYPE "))
                .filter_map(|l| l.split(' ').next())
                .filter(|n| n.starts_with("metrics_server_"))
                .map(|n| Box::leak(n.to_string().into_boxed_str()) as &str)
                .collect();
            let fixture = std::fs::read_to_string(repo(
                "tests/fixtures/kubelet/metrics-server-e2e-expected/self-metric-names.txt",
            ))
            .unwrap();
            let want: BTreeSet<&str> = fixture.lines().filter(|l| !l.is_empty()).collect();
            assert_eq!(names, want);
        }
    }
}

/// A deleted pod: its derived series go stale at once, its kubelet series (timestamped)
/// stay until the lookback delta after their last sample.
async fn check_staleness(s: &mut Setup, pods: &[Value]) {
    let victim = pods
        .iter()
        .find(|p| p["namespace"] != "kube-system")
        .unwrap_or(&pods[0]);
    let (ns, name) = (
        victim["namespace"].as_str().unwrap(),
        victim["name"].as_str().unwrap(),
    );
    let sel = format!("{{namespace=\"{ns}\",pod=\"{name}\"}}");
    let reply = s
        .sim
        .admin("DELETE", &format!("/sim/pods/{ns}/{name}"))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    // Wait until metrics-bridge no longer writes the pod at all, and Prometheus has scraped
    // that: the derived series is then stale.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body = s.get("/metrics/resource", &[]).await.text();
        let derived = s
            .vector(&format!("metrics_bridge_pod_cpu_usage_cores{sel}"), None)
            .await;
        if !body.contains(&format!("pod=\"{name}\"")) && derived.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{ns}/{name} never left");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // One more scrape interval, so Prometheus has certainly seen the page without it.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The kubelet series' last sample, by its own (kubelet) timestamp.
    let last = s
        .vector(
            &format!("max(timestamp(container_cpu_usage_seconds_total{sel}))"),
            None,
        )
        .await;
    let (_, last_ts) = *last
        .first()
        .unwrap_or_else(|| panic!("{ns}/{name}'s kubelet series vanished before the lookback delta: a staleness marker was written"));
    let before = last_ts + LOOKBACK_S - 1.0;
    let after = last_ts + LOOKBACK_S + 1.0;
    // No staleness marker for the timestamped series: still there just before the lookback
    // delta runs out, ...
    let q = format!("container_cpu_usage_seconds_total{sel}");
    assert!(!s.vector(&q, Some(before)).await.is_empty());
    // ... while the derived gauge, whose last sample is newer, is already gone: its
    // staleness marker hid it.
    assert!(
        s.vector(
            &format!("metrics_bridge_container_cpu_usage_cores{sel}"),
            Some(before)
        )
        .await
        .is_empty()
    );
    // After the lookback delta the kubelet series is gone too.
    while now_s() < after {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(s.vector(&q, Some(after)).await.is_empty());
    assert!(s.vector(&q, None).await.is_empty());
    s.bridge.assert_running();
}

/// Every expression of the dashboards and the rules parses in Prometheus; every dashboard
/// query, its variables substituted, returns data.
async fn check_dashboards_and_rules(s: &Setup, nodes: &[Value], pods: &[Value]) {
    let node = nodes[0]["name"].as_str().unwrap();
    let pod = pods
        .iter()
        .find(|p| p["namespace"] == "kube-system")
        .unwrap_or(&pods[0]);
    let (ns, pod_name) = (
        pod["namespace"].as_str().unwrap(),
        pod["name"].as_str().unwrap(),
    );
    let mut checked = 0;
    for entry in std::fs::read_dir(repo("grafana")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let dash: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut exprs = Vec::new();
        collect_exprs(&dash, &mut exprs);
        assert!(!exprs.is_empty(), "{}: no queries", path.display());
        for expr in exprs {
            let q = expr
                .replace("$__rate_interval", "8s")
                .replace("$__interval", "2s")
                .replace("$__range", "30s")
                .replace("${node:regex}", node)
                .replace("$node", node)
                .replace("$namespace", ns)
                .replace("$pod", pod_name)
                .replace("$topn", "5")
                .replace("$job", "metrics-bridge");
            assert!(
                !q.contains('$'),
                "{}: unsubstituted variable in {q}",
                path.display()
            );
            let data = s
                .try_query(&q, None)
                .await
                .unwrap_or_else(|e| panic!("{}: {q}: {e}", path.display()));
            let non_empty = match data["resultType"].as_str() {
                Some("vector") | Some("matrix") => {
                    data["result"].as_array().is_some_and(|a| !a.is_empty())
                }
                _ => true,
            };
            assert!(non_empty, "{}: {q} returned nothing", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} dashboard queries");

    // The rules: Prometheus loaded them (they parse) and evaluates them without error.
    let rules = prom_post(&s.prom_url, "/api/v1/rules", String::new())
        .await
        .unwrap();
    let groups = rules["data"]["groups"].as_array().unwrap();
    let mut alerts = 0;
    for g in groups {
        for r in g["rules"].as_array().unwrap() {
            assert_eq!(r["health"], "ok", "rule {}: {}", r["name"], r["lastError"]);
            alerts += 1;
        }
    }
    assert!(alerts >= 5, "only {alerts} rules loaded");
    // Healthy cluster, healthy bridge: nothing fires.
    let firing = s.vector("ALERTS{alertstate=\"firing\"}", None).await;
    assert!(firing.is_empty(), "alerts firing: {firing:?}");
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(expr)) = map.get("expr") {
                out.push(expr.clone());
            }
            for (k, child) in map {
                // Variable queries are label_values(...), Grafana's, not PromQL.
                if k == "templating" {
                    continue;
                }
                collect_exprs(child, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_exprs(i, out)),
        _ => {}
    }
}
