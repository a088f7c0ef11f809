//! Test harness shared by the integration tests: starts the real `kube-sim` binary in a
//! temporary directory on a free API port, waits for its `ready` line, exposes its files and
//! URLs, runs real kubectl and Python against it, and kills it on drop.
#![allow(dead_code)]

pub mod bridge;
pub mod expect;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// kubectl binaries the tests run against kube-sim.
pub const KUBECTL_1_27: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";
pub const KUBECTL_1_33: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";

/// A kubelet port unique to this test process and call, so tests run in parallel (each
/// kube-sim binds 127.1.x.y:PORT for its nodes).
pub fn kubelet_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20000 + (std::process::id() % 2000) as u16 * 16;
    base + NEXT.fetch_add(1, Ordering::Relaxed) % 16
}

/// A running kube-sim.
pub struct KubeSim {
    child: Child,
    pub dir: tempfile::TempDir,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    pub kubelet_port: u16,
    stderr: Arc<Mutex<String>>,
}

impl KubeSim {
    /// Starts kube-sim with `args` added to `--dir`, `--apiserver-addr 127.0.0.1:0` and a
    /// per-test `--kubelet-port`. Panics (with kube-sim's stderr) if it is not ready in 60 s.
    pub fn start(args: &[&str]) -> KubeSim {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = kubelet_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_kube-sim"))
            .arg("--dir")
            .arg(dir.path())
            .args(["--apiserver-addr", "127.0.0.1:0"])
            .args(["--kubelet-port", &port.to_string()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kube-sim");
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(mut err) = child.stderr.take() {
            let sink = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut s) = sink.lock() {
                        s.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            });
        }
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains("ready") => {
                    let url = line
                        .split_whitespace()
                        .find(|w| w.starts_with("https://"))
                        .expect("URL in the ready line")
                        .to_string();
                    break url;
                }
                Ok(_) => continue,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let err = stderr.lock().map(|s| s.clone()).unwrap_or_default();
                    panic!("kube-sim was not ready within 60s; stderr:\n{err}");
                }
            }
        };
        KubeSim {
            child,
            dir,
            url,
            kubelet_port: port,
            stderr,
        }
    }

    /// Stops kube-sim with SIGTERM, as a service manager would, and waits (up to 120 s) for
    /// it to exit; its exit status and stderr.
    pub fn terminate(&mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (status, self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "kube-sim did not exit within 120 s of SIGTERM; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.path("kubeconfig")
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"))
    }

    pub fn token(&self, who: &str) -> String {
        self.read(&format!("{who}.token"))
    }

    /// kube-sim's stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Runs `kubectl` (a path) with the given kubeconfig (a file name in the dir) and a
    /// private discovery cache.
    pub fn kubectl(&self, kubectl: &str, kubeconfig: &str, args: &[&str]) -> Output {
        let cache = self.path(&format!(
            "cache-{}-{kubeconfig}",
            Path::new(kubectl)
                .file_name()
                .and_then(|f| f.to_str())
                .unwrap_or("k")
        ));
        Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(self.path(kubeconfig))
            .arg("--cache-dir")
            .arg(cache)
            .args(args)
            .env("HOME", self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("running {kubectl}: {e}"))
    }

    /// A kube-rs client as the admin.
    pub async fn client(&self) -> kube::Client {
        self.client_for("kubeconfig").await
    }

    /// A kube-rs client from a kubeconfig in the dir.
    pub async fn client_for(&self, kubeconfig: &str) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(self.path(kubeconfig)).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("config");
        kube::Client::try_from(config).expect("client")
    }

    /// Runs a Python snippet; returns stdout. Panics with stderr on failure.
    pub fn python(&self, code: &str, args: &[&str]) -> String {
        let out = Command::new("python3")
            .arg("-c")
            .arg(code)
            .args(args)
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "python failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for KubeSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response from [`https`].
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// How a request authenticates.
pub enum Cred<'a> {
    None,
    Token(&'a str),
    /// PEM certificate and key.
    Cert(&'a str, &'a str),
}

/// One HTTPS request over a fresh connection (HTTP/1.1), verifying the server against
/// `ca_pem` (or not at all when `None`).
pub async fn https(
    method: &str,
    url: &str,
    ca_pem: Option<&str>,
    cred: Cred<'_>,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<Reply, String> {
    use http_body_util::BodyExt;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match ca_pem {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots
                    .add(c.map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            }
            builder.with_root_certificates(roots)
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider))),
    };
    let config = match &cred {
        Cred::Cert(cert, key) => {
            let certs: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|e| e.to_string())?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| e.to_string())?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| e.to_string())?
        }
        _ => builder.with_no_client_auth(),
    };
    let uri: http::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let host = uri.host().ok_or("no host")?.to_string();
    let port = uri.port_u16().unwrap_or(443);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header("host", format!("{host}:{port}"));
    if let Cred::Token(t) = cred {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let res = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes()
        .to_vec();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls_pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls_pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl KubeSim {
    /// A request to the API server as the admin (client certificate).
    pub async fn admin(&self, method: &str, path: &str) -> Reply {
        let (cert, key) = (self.read("admin.crt"), self.read("admin.key"));
        https(
            method,
            &format!("{}{path}", self.url),
            Some(&self.read("ca.crt")),
            Cred::Cert(&cert, &key),
            &[],
            Vec::new(),
        )
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// A request to the API server with a bearer token.
    pub async fn as_token(&self, token: &str, method: &str, path: &str, body: Vec<u8>) -> Reply {
        https(
            method,
            &format!("{}{path}", self.url),
            Some(&self.read("ca.crt")),
            Cred::Token(token),
            &[("content-type", "application/json")],
            body,
        )
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// `GET /sim/expected`.
    pub async fn expected(&self) -> serde_json::Value {
        self.admin("GET", "/sim/expected").await.json()
    }

    /// The URL of node `ip`'s kubelet.
    pub fn kubelet_url(&self, ip: &str, path: &str) -> String {
        format!("https://{ip}:{}{path}", self.kubelet_port)
    }
}

/// Polls `done` every 50 ms until it holds; panics naming `what` after 30 s. For state that
/// follows a change asynchronously (watch events), without asserting on timing.
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// metrics-bridge's pipeline in this process against `sim`: its options (`extra` added to the
/// flags every such test needs), the kube client config, the components and their running
/// watchers, synced.
pub struct Pipeline {
    pub options: metrics_bridge::options::Options,
    pub kube: kube::Config,
    pub c: metrics_bridge::server::Components,
    pub watchers: Vec<tokio::task::JoinHandle<()>>,
}

impl Pipeline {
    pub async fn start(sim: &KubeSim, extra: &[&str]) -> Pipeline {
        use metrics_bridge::server;
        let kubeconfig = sim.path("metrics-bridge.kubeconfig");
        let args = [
            "metrics-bridge".to_owned(),
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--kubelet-port={}", sim.kubelet_port),
            "--kubelet-preferred-address-types=InternalIP".to_owned(),
            "--metric-resolution=15s".to_owned(),
        ];
        let options = metrics_bridge::options::Options::from_args(
            args.into_iter()
                .chain(extra.iter().map(|a| (*a).to_owned())),
        )
        .unwrap();
        let kube = server::kube_config(Some(&kubeconfig)).await.unwrap();
        let client = kube::Client::try_from(kube.clone()).unwrap();
        let c = server::Components::new(options.metric_resolution);
        let watchers =
            server::spawn_watchers(&tokio::runtime::Handle::current(), client, &options, &c);
        eventually("both caches to sync", || c.synced()).await;
        Pipeline {
            options,
            kube,
            c,
            watchers,
        }
    }

    pub fn scraper(&self) -> metrics_bridge::scrape::Scraper {
        metrics_bridge::server::build_scraper(&self.options, &self.kube, &self.c).unwrap()
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        for w in &self.watchers {
            w.abort();
        }
    }
}
