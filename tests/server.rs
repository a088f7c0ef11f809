//! The `metrics-bridge` binary as it is deployed: registered behind kube-sim's aggregation
//! layer, asked by real kubectl, and stopped with SIGTERM.

mod support;

use std::io::Read as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{KUBECTL_1_27, KUBECTL_1_33, KubeSim};

/// A free port on 127.0.0.1 (bound and released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Waits up to 60 s for `child` to exit; returns its code and stderr.
fn wait_exit(child: &mut Child) -> (Option<i32>, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("metrics-bridge did not exit within 60s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    (status.code(), stderr)
}

/// Reruns `kubectl top` until it succeeds (the aggregator probes the backend, then the
/// first two scrapes must land) and returns its stdout.
async fn top_until_served(sim: &KubeSim, kubectl: &str, args: &[&str], rows: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = sim.kubectl(kubectl, "kubeconfig", args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && stdout.lines().count() == rows + 1 {
            return stdout;
        }
        assert!(
            Instant::now() < deadline,
            "{kubectl} {args:?} never listed {rows} rows: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_top_works_through_the_aggregator_and_sigterm_stops_cleanly() {
    let port = free_port();
    let backend = format!("metrics.k8s.io=https://127.0.0.1:{port}");
    let sim = KubeSim::start(&[
        "--nodes",
        "3",
        "--pods-per-node",
        "4",
        "--aggregate",
        &backend,
        "--aggregator-probe-interval",
        "1s",
    ]);
    let cert_dir = sim.path("bridge-certs");
    let mut bridge = Command::new(env!("CARGO_BIN_EXE_metrics-bridge"))
        .arg(format!(
            "--kubeconfig={}",
            sim.path("metrics-bridge.kubeconfig").display()
        ))
        .args(["--bind-address=127.0.0.1", &format!("--secure-port={port}")])
        .arg(format!("--cert-dir={}", cert_dir.display()))
        .arg(format!("--kubelet-port={}", sim.kubelet_port))
        .args([
            "--kubelet-preferred-address-types=InternalIP",
            "--metric-resolution=2s",
            "--kubelet-request-timeout=1s",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn metrics-bridge");

    let expected = sim.expected().await;
    let nodes = expected["nodes"].as_array().unwrap().len();
    let pods = expected["pods"].as_array().unwrap().len();
    for kubectl in [KUBECTL_1_27, KUBECTL_1_33] {
        let out = top_until_served(&sim, kubectl, &["top", "node"], nodes).await;
        for node in expected["nodes"].as_array().unwrap() {
            let name = node["name"].as_str().unwrap();
            let line = out
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("{name} missing from {out}"));
            // kubectl prints whole millicores and Mi: compare with the expected figures.
            let cols: Vec<&str> = line.split_whitespace().collect();
            let milli = (node["cpu_cores"].as_f64().unwrap() * 1000.0).round() as i64;
            let got: i64 = cols[1].trim_end_matches('m').parse().unwrap();
            assert!((got - milli).abs() <= milli / 100 + 1, "{line} vs {milli}m");
            let mi = node["memory_bytes"].as_u64().unwrap() / (1 << 20);
            assert_eq!(cols[3], format!("{mi}Mi"), "{line}");
        }
        top_until_served(&sim, kubectl, &["top", "pod", "-A"], pods).await;
    }

    // The self-signed serving pair went to --cert-dir, as metrics-server's does.
    assert!(cert_dir.join("apiserver.crt").exists());
    assert!(cert_dir.join("apiserver.key").exists());

    let pid = bridge.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let (code, stderr) = wait_exit(&mut bridge);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("received SIGTERM; shutting down"),
        "{stderr}"
    );
    assert!(stderr.contains("metrics-bridge stopped"), "{stderr}");
    assert!(!stderr.contains(" ERROR "), "{stderr}");
}
