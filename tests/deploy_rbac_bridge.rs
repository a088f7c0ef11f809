//! The shipped ServiceAccount's permissions suffice for the real binary: metrics-bridge runs
//! as `system:serviceaccount:kube-system:metrics-bridge` against kube-sim authorizing with
//! `deploy/components.yaml` (`--rbac`, kube-apiserver's RBAC semantics), registered behind
//! kube-sim's aggregation layer. Everything it asks kube-apiserver for goes through that
//! policy: the node and pod watches, the kubelets' `nodes/metrics`, the
//! `extension-apiserver-authentication` ConfigMap (without which the front proxy is refused),
//! and the TokenReviews and SubjectAccessReviews of delegated authentication.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Cred, KUBECTL_1_33, KubeSim, https};

/// A free port on 127.0.0.1 (bound and released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GET `path` on the bridge, as `token` or anonymous.
async fn get(port: u16, path: &str, token: Option<&str>) -> Result<support::Reply, String> {
    let cred = match token {
        Some(t) => Cred::Token(t),
        None => Cred::None,
    };
    let url = format!("https://127.0.0.1:{port}{path}");
    https("GET", &url, None, cred, &[], Vec::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_on_the_shipped_service_account_permissions() {
    let port = free_port();
    let rbac = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/components.yaml");
    let sim = KubeSim::start(&[
        "--rbac",
        rbac.to_str().expect("UTF-8 path"),
        "--nodes",
        "3",
        "--pods-per-node",
        "4",
        "--aggregate",
        &format!("metrics.k8s.io=https://127.0.0.1:{port}"),
        "--aggregator-probe-interval",
        "1s",
    ]);
    let log = sim.path("bridge.log");
    let mut bridge = Killed(
        Command::new(env!("CARGO_BIN_EXE_metrics-bridge"))
            .arg(format!(
                "--kubeconfig={}",
                sim.path("metrics-bridge.kubeconfig").display()
            ))
            .args(["--bind-address=127.0.0.1", &format!("--secure-port={port}")])
            .arg(format!("--cert-dir={}", sim.path("bridge-certs").display()))
            .arg(format!("--kubelet-port={}", sim.kubelet_port))
            .args([
                "--kubelet-preferred-address-types=InternalIP",
                "--metric-resolution=2s",
                "--kubelet-request-timeout=1s",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn metrics-bridge"),
    );
    let log = || std::fs::read_to_string(&log).unwrap_or_default();

    // /readyz: the watches (list and watch nodes and pods) synced and the kubelets answered
    // (nodes/metrics); the ConfigMap read at start did not fail, or the process would be gone.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = bridge.0.try_wait().expect("try_wait") {
            panic!("metrics-bridge exited ({status}):\n{}", log());
        }
        if let Ok(r) = get(port, "/readyz", None).await
            && r.status == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "/readyz never 200:\n{}", log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // kubectl top node through the aggregator (front-proxy certificate verified against the
    // ConfigMap's requestheader CA), numbers as /sim/expected.
    let expected = sim.expected().await;
    let nodes = expected["nodes"].as_array().expect("nodes");
    let deadline = Instant::now() + Duration::from_secs(60);
    let out = loop {
        let top = sim.kubectl(KUBECTL_1_33, "kubeconfig", &["top", "node", "--no-headers"]);
        let stdout = String::from_utf8_lossy(&top.stdout).into_owned();
        if top.status.success() && stdout.lines().count() == nodes.len() {
            break stdout;
        }
        assert!(
            Instant::now() < deadline,
            "kubectl top node never listed {} nodes: {stdout}{}\n{}",
            nodes.len(),
            String::from_utf8_lossy(&top.stderr),
            log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    for node in nodes {
        let name = node["name"].as_str().expect("name");
        let line = out
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing from {out}"));
        let cols: Vec<&str> = line.split_whitespace().collect();
        // kubectl rounds CPU to whole millicores (kube-sim's rates are never on one) and
        // memory down to Mi.
        let milli = (node["cpu_cores"].as_f64().expect("cpu") * 1000.0).ceil() as i64;
        assert_eq!(cols[1], format!("{milli}m"), "{line}");
        let mi = node["memory_bytes"].as_u64().expect("memory") / (1 << 20);
        assert_eq!(cols[3], format!("{mi}Mi"), "{line}");
    }

    // A bearer token makes the bridge create a TokenReview, and the decision a
    // SubjectAccessReview, both as its service account: a 200 for the viewer's pods and
    // kube-apiserver's 403 for nodes prove both were answered (a refused review is a 401
    // or a 500).
    let viewer = sim.token("viewer");
    let pods = get(
        port,
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods",
        Some(viewer.trim()),
    )
    .await
    .expect("pods as the viewer");
    assert_eq!(pods.status, 200, "{}\n{}", pods.text(), log());
    assert!(!pods.json()["items"].as_array().expect("items").is_empty());
    let denied = get(
        port,
        "/apis/metrics.k8s.io/v1beta1/nodes",
        Some(viewer.trim()),
    )
    .await
    .expect("nodes as the viewer");
    assert_eq!(denied.status, 403, "{}\n{}", denied.text(), log());
    assert_eq!(
        denied.json()["message"],
        r#"nodes.metrics.k8s.io is forbidden: User "viewer" cannot list resource "nodes" in API group "metrics.k8s.io" at the cluster scope"#
    );
    let logged = log();
    assert!(!logged.contains(" ERROR "), "{logged}");
    assert!(!logged.contains("forbidden"), "{logged}");
}
