//! The real `metrics-bridge` binary as the end-to-end tests run it: registered behind a
//! [`KubeSim`]'s aggregation layer (`--aggregate metrics.k8s.io=https://127.0.0.1:PORT`),
//! scraping kube-sim's kubelets with the service-account kubeconfig kube-sim writes, logging
//! JSON so tests can read what it reported, and killed on drop.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::expect::Mismatch;
use super::{Cred, KubeSim, Reply, https};

/// A free TCP port on 127.0.0.1 (bound, then released for the caller to bind).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on 127.0.0.1: {e}"))
}

/// `--metric-resolution` of the end-to-end runs: short, so two points exist within seconds
/// (metrics-bridge warns below 10s, which is expected here).
pub const RESOLUTION: &str = "2s";
/// `--kubelet-request-timeout`: generous (the limit is 0.9 × the resolution) so that a loaded
/// CI machine does not turn a healthy kubelet into a timeout.
pub const REQUEST_TIMEOUT: &str = "1500ms";

/// A kube-sim with metrics-bridge's port registered for `metrics.k8s.io`, probed every second.
/// The bridge itself is started separately ([`Bridge::start`]) so that tests can observe the
/// API while it is down.
pub struct Cluster {
    pub sim: KubeSim,
    /// The port metrics-bridge serves on (and kube-sim's aggregator proxies to).
    pub port: u16,
}

impl Cluster {
    /// kube-sim with `args` (nodes, pods, faults, seed…) and the aggregation flags.
    pub fn new(args: &[&str]) -> Cluster {
        let port = free_port();
        let backend = format!("metrics.k8s.io=https://127.0.0.1:{port}");
        let mut all = vec![
            "--aggregate",
            backend.as_str(),
            "--aggregator-probe-interval",
            "1s",
        ];
        all.extend_from_slice(args);
        Cluster {
            sim: KubeSim::start(&all),
            port,
        }
    }

    /// Starts metrics-bridge for this cluster and waits for `/readyz`.
    pub async fn start_bridge(&self, extra: &[&str]) -> Bridge {
        let bridge = Bridge::spawn(&self.sim, self.port, extra);
        bridge.wait_ready().await;
        bridge
    }

    /// A request through kube-sim's API server (and so its aggregator) with a bearer token.
    pub async fn get_as(&self, token: &str, path: &str, accept: &str) -> Reply {
        https(
            "GET",
            &format!("{}{path}", self.sim.url),
            Some(&self.sim.read("ca.crt")),
            Cred::Token(token),
            &[("accept", accept)],
            Vec::new(),
        )
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// A JSON request through the aggregator as the admin.
    pub async fn get(&self, path: &str) -> Reply {
        self.sim.admin("GET", path).await
    }

    /// Whether kube-sim's aggregator currently counts `v1beta1.metrics.k8s.io` available.
    pub async fn api_available(&self) -> bool {
        let info = self.sim.admin("GET", "/sim/info").await.json();
        info["apiServices"]["v1beta1.metrics.k8s.io"]["available"] == true
            && info["apiServices"]["v1.metrics.k8s.io"]["available"] == true
    }

    /// Waits until kube-sim's aggregator has probed the backend and found it unavailable.
    pub async fn wait_api_unavailable(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let info = self.sim.admin("GET", "/sim/info").await.json();
            let state = &info["apiServices"]["v1beta1.metrics.k8s.io"];
            // The message is filled in by the first failed probe.
            if state["available"] == false
                && state["message"].as_str().is_some_and(|m| !m.is_empty())
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the aggregator never marked metrics.k8s.io unavailable: {info}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until kube-sim's aggregator lists both versions as available.
    pub async fn wait_api_available(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.api_available().await {
            assert!(
                Instant::now() < deadline,
                "the aggregator never marked metrics.k8s.io available: {}",
                self.sim.admin("GET", "/sim/info").await.text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `kubectl` (a path) as the admin and returns its stdout. A failure is only
    /// [`Mismatch::Missing`] (the aggregator may not have seen the backend yet); callers poll
    /// with [`until_ok`](super::expect::until_ok), which reports stderr if it persists.
    pub fn kubectl(&self, kubectl: &str, args: &[&str]) -> Result<String, Mismatch> {
        let out = self.sim.kubectl(kubectl, "kubeconfig", args);
        if !out.status.success() {
            return Err(Mismatch::Missing(format!(
                "{kubectl} {} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        String::from_utf8(out.stdout)
            .map_err(|e| Mismatch::Wrong(format!("{kubectl} printed non-UTF-8: {e}")))
    }

    /// `kubectl get --raw PATH` as the admin, parsed as JSON.
    pub fn raw(&self, kubectl: &str, path: &str) -> Result<serde_json::Value, Mismatch> {
        let out = self.kubectl(kubectl, &["get", "--raw", path])?;
        serde_json::from_str(&out)
            .map_err(|e| Mismatch::Wrong(format!("{path}: not JSON ({e}): {out}")))
    }

    /// `kubectl get --raw PATH` must fail with this reason; returns kubectl's message.
    pub fn raw_error(&self, kubectl: &str, path: &str, reason: &str) -> String {
        let out = self
            .sim
            .kubectl(kubectl, "kubeconfig", &["get", "--raw", path]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "{path} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            stderr.contains(&format!("Error from server ({reason}): ")),
            "{path}: expected {reason}, got {stderr}"
        );
        stderr
    }

    /// kube-sim's count of kubelet requests answered so far (every node).
    pub async fn kubelet_requests(&self) -> u64 {
        let info = self.sim.admin("GET", "/sim/info").await.json();
        info["kubeletRequests"]
            .as_u64()
            .unwrap_or_else(|| panic!("no kubeletRequests in /sim/info: {info}"))
    }
}

/// A running `metrics-bridge` process.
pub struct Bridge {
    child: Child,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// Its stderr, one entry per line (JSON log records).
    log: Arc<Mutex<Vec<String>>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
    pub cert_dir: PathBuf,
}

impl Bridge {
    /// The command line the tests run metrics-bridge with against `sim`, serving on `port`:
    /// the service-account kubeconfig kube-sim writes (so kubelet requests carry a token the
    /// kubelets authorize), kube-sim's per-test kubelet port, InternalIP (each kubelet's own
    /// 127.1.x.y, whose certificate carries it), short resolution, JSON logs.
    pub fn command(sim: &KubeSim, port: u16, cert_dir: &std::path::Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_metrics-bridge"));
        cmd.arg(format!(
            "--kubeconfig={}",
            sim.path("metrics-bridge.kubeconfig").display()
        ))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--secure-port={port}"))
        .arg(format!("--cert-dir={}", cert_dir.display()))
        .arg(format!("--kubelet-port={}", sim.kubelet_port))
        .arg("--kubelet-preferred-address-types=InternalIP")
        .arg(format!("--metric-resolution={RESOLUTION}"))
        .arg(format!("--kubelet-request-timeout={REQUEST_TIMEOUT}"))
        .arg("--logging-format=json");
        cmd
    }

    /// Starts metrics-bridge with [`Bridge::command`] plus `extra` (later flags win), without
    /// waiting for it.
    pub fn spawn(sim: &KubeSim, port: u16, extra: &[&str]) -> Bridge {
        let cert_dir = sim.path(&format!("bridge-certs-{port}"));
        let mut child = Self::command(sim, port, &cert_dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start metrics-bridge: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr_reader = child.stderr.take().map(|err| {
            let sink = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(mut l) = sink.lock() {
                        l.push(line);
                    }
                }
            })
        });
        Bridge {
            child,
            url: format!("https://127.0.0.1:{port}"),
            log,
            stderr_reader,
            cert_dir,
        }
    }

    /// A request straight to metrics-bridge (not through the aggregator), unauthenticated and
    /// without verifying its self-signed certificate: for the health endpoints.
    pub async fn get_direct(&self, path: &str) -> Result<Reply, String> {
        https(
            "GET",
            &format!("{}{path}", self.url),
            None,
            Cred::None,
            &[],
            Vec::new(),
        )
        .await
    }

    /// Waits (up to 60 s) for `/readyz` to answer 200: the caches have synced and the store
    /// can serve a rate. Panics with the log if the process exits or never gets there.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = self.get_direct("/readyz").await
                && r.status == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "metrics-bridge was not ready within 60 s; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The stderr lines so far.
    pub fn log_text(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// The log records so far, parsed (lines that are not JSON are skipped).
    pub fn log_records(&self) -> Vec<serde_json::Value> {
        self.log
            .lock()
            .map(|l| {
                l.iter()
                    .filter_map(|line| serde_json::from_str(line).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The log records with this message.
    pub fn logged(&self, msg: &str) -> Vec<serde_json::Value> {
        self.log_records()
            .into_iter()
            .filter(|r| r["msg"] == msg)
            .collect()
    }

    /// The error-level log records so far: none is expected in any end-to-end run.
    pub fn errors(&self) -> Vec<serde_json::Value> {
        self.log_records()
            .into_iter()
            .filter(|r| r["level"] == "error")
            .collect()
    }

    /// Sends SIGTERM and waits (up to 60 s) for the process to exit; its status and the whole
    /// log.
    pub fn terminate(&mut self) -> (ExitStatus, String) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap_or_else(|e| panic!("kill: {e}"));
        assert!(sent.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(e) => panic!("waiting for metrics-bridge: {e}"),
            }
            assert!(
                Instant::now() < deadline,
                "metrics-bridge did not exit within 60 s of SIGTERM; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        // The reader ends at EOF, which follows the exit: the log is then complete.
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        (status, self.log_text())
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
