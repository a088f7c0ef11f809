//! What one kubelet scrape costs kube-sim at scale: starts the real `kube-sim` (the bench
//! profile's release build) with `SIM_NODES` × `SIM_PODS` × 2 containers (default 5,000 × 30),
//! then scrapes every kubelet's `/metrics/resource` over one keep-alive HTTPS connection per
//! node, as metrics-bridge does, with `SIM_CONCURRENCY` requests in flight (default 64), for
//! `SIM_ROUNDS` rounds (default 3) plain and as many with `Accept-Encoding: gzip`.
//!
//! Prints kube-sim's CPU time per scrape (utime + stime from `/proc/PID/stat`, so the
//! client's own work is not counted), scrapes per second and latency percentiles; the first
//! round, which opens the connections, is reported apart since it pays the TLS handshakes.
//! The client shares the machine, so throughput is a floor; CPU per scrape is the figure.
//!
//! `cargo bench --bench kube_sim_scrape` (`SIM_NODES=20000 SIM_PODS=5 ...` for other sizes).
//! With `SIM_PERF=FILE`, `perf record` samples kube-sim during the keep-alive rounds into
//! FILE (`perf report -i FILE` then shows where a scrape's time goes).

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use http_body_util::BodyExt;
use rustls_pki_types::pem::PemObject;
use support::KubeSim;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// kube-sim's CPU seconds so far (user + system).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>;

/// One keep-alive connection to a kubelet.
async fn connect(tls: &Arc<rustls::ClientConfig>, ip: &str, port: u16) -> Sender {
    let tcp = tokio::net::TcpStream::connect((ip, port))
        .await
        .expect("connect");
    tcp.set_nodelay(true).unwrap();
    let name = rustls_pki_types::ServerName::try_from(ip.to_string()).unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::clone(tls))
        .connect(name, tcp)
        .await
        .expect("TLS");
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .expect("HTTP/1.1");
    tokio::spawn(conn);
    send
}

/// Scrapes once; the body's length and the latency.
async fn scrape(send: &mut Sender, ip: &str, token: &str, gzip: bool) -> (usize, Duration) {
    let t = Instant::now();
    let mut req = http::Request::builder()
        .uri("/metrics/resource")
        .header("host", ip)
        .header("authorization", format!("Bearer {token}"));
    if gzip {
        req = req.header("accept-encoding", "gzip");
    }
    send.ready().await.expect("connection ready");
    let res = send
        .send_request(req.body(http_body_util::Empty::new()).unwrap())
        .await
        .expect("response");
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.expect("body").to_bytes();
    (body.len(), t.elapsed())
}

struct Round {
    scrapes: usize,
    bytes: usize,
    wall: Duration,
    cpu: f64,
    latencies: Vec<Duration>,
}

impl Round {
    fn print(&self, what: &str) {
        let mut l = self.latencies.clone();
        l.sort();
        let pct = |p: f64| l[((l.len() as f64 * p) as usize).min(l.len() - 1)];
        println!(
            "  {what:<26} {:>6} scrapes in {:>6.2} s = {:>6.0}/s, page {:>6.1} KiB, kube-sim CPU {:>6.1} µs/scrape, latency p50 {:>6.1} ms p99 {:>6.1} ms",
            self.scrapes,
            self.wall.as_secs_f64(),
            self.scrapes as f64 / self.wall.as_secs_f64(),
            self.bytes as f64 / self.scrapes as f64 / 1024.0,
            self.cpu / self.scrapes as f64 * 1e6,
            pct(0.5).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
        );
    }
}

async fn round(
    conns: &mut [(String, Option<Sender>)],
    tls: &Arc<rustls::ClientConfig>,
    port: u16,
    token: &str,
    gzip: bool,
    concurrency: usize,
    pid: u32,
) -> Round {
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let results: Vec<(usize, Duration)> = futures::stream::iter(conns.iter_mut())
        .map(|(ip, send)| async move {
            if send.is_none() {
                *send = Some(connect(tls, ip, port).await);
            }
            let s = send.as_mut().expect("connected");
            scrape(s, ip, token, gzip).await
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    Round {
        scrapes: results.len(),
        bytes: results.iter().map(|r| r.0).sum(),
        wall: t0.elapsed(),
        cpu: cpu_seconds(pid) - cpu0,
        latencies: results.iter().map(|r| r.1).collect(),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test --all-targets` this runs as a smoke
    // test of the bench at a size a debug build handles quickly.
    let full = std::env::args().any(|a| a == "--bench");
    let nodes = env("SIM_NODES", if full { 5000 } else { 50 });
    let pods = env("SIM_PODS", 30);
    let rounds = env("SIM_ROUNDS", 3).max(1);
    let concurrency = env("SIM_CONCURRENCY", 64).max(1);
    let started = Instant::now();
    let sim = KubeSim::start(&[
        "--nodes",
        &nodes.to_string(),
        "--pods-per-node",
        &pods.to_string(),
    ]);
    let ready = started.elapsed();
    let info: serde_json::Value = serde_json::from_str(&sim.read("kube-sim.json")).unwrap();
    let pid = info["pid"].as_u64().unwrap() as u32;
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .map(|l| l.trim_start_matches("VmRSS:").trim().to_string())
        .unwrap_or_default();
    println!(
        "kube-sim: {nodes} nodes × {pods} pods × 2 containers, ready in {:.2} s (harness wall), RSS {rss}",
        ready.as_secs_f64()
    );

    let token = sim.token("metrics-bridge");
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(sim.read("ca.crt").as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut conns: Vec<(String, Option<Sender>)> = (1..=nodes)
            .map(|i| format!("127.1.{}.{}", i / 256, i % 256))
            .map(|ip| (ip, None))
            .collect();
        let port = sim.kubelet_port;
        let first = round(&mut conns, &tls, port, &token, false, concurrency, pid).await;
        first.print("first (TLS handshakes)");
        let perf = std::env::var("SIM_PERF").ok().map(|file| {
            let child = std::process::Command::new("perf")
                .args(["record", "-e", "cpu-clock", "-F", "999", "-g", "-o", &file])
                .args(["-p", &pid.to_string()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("perf record");
            std::thread::sleep(Duration::from_millis(500));
            child
        });
        for gzip in [false, true] {
            let mut total = Round {
                scrapes: 0,
                bytes: 0,
                wall: Duration::ZERO,
                cpu: 0.0,
                latencies: Vec::new(),
            };
            for _ in 0..rounds {
                let r = round(&mut conns, &tls, port, &token, gzip, concurrency, pid).await;
                total.scrapes += r.scrapes;
                total.bytes += r.bytes;
                total.wall += r.wall;
                total.cpu += r.cpu;
                total.latencies.extend(r.latencies);
            }
            total.print(if gzip {
                "keep-alive, gzip"
            } else {
                "keep-alive, plain"
            });
        }
        if let Some(mut child) = perf {
            let _ = std::process::Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    });
}
