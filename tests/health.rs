//! The health endpoints through a real client: kubectl 1.27 and 1.33 reading `/readyz`,
//! `/livez` and per-check paths over TLS, as an operator does with `kubectl get --raw`
//! against metrics-server. kubectl must print metrics-server's bytes when healthy and report a
//! failing probe the way it reports kube-apiserver's.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use metrics_bridge::health::{self, Health};
use metrics_bridge::https::{self, ServeOptions};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const LIVEZ_FIXTURE: &str =
    include_str!("fixtures/kubelet/metrics-server-e2e-expected/livez-verbose.txt");
const READYZ_FIXTURE: &str =
    include_str!("fixtures/kubelet/metrics-server-e2e-expected/readyz-verbose.txt");

const KUBECTLS: [&str; 2] = [
    "/usr/lib/google-cloud-sdk/bin/kubectl.1.27",
    "/usr/lib/google-cloud-sdk/bin/kubectl.1.33",
];

fn tls_config() -> Arc<ServerConfig> {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap_or_else(|e| panic!("self-signed certificate: {e}"));
    let cert = CertificateDer::from(generated.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        generated.signing_key.serialize_der(),
    ));
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(vec![cert], key))
            .unwrap_or_else(|e| panic!("TLS config: {e}"));
    config.alpn_protocols = https::alpn(true);
    Arc::new(config)
}

/// Serves `health` on a free loopback port until the sender is dropped.
async fn serve(health: Arc<Health>) -> (String, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local addr: {e}"));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(https::serve(
        listener,
        tls_config(),
        health::router(health),
        ServeOptions::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    (format!("https://{addr}"), stop)
}

struct Kubectl {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn kubectl(binary: &str, server: &str, path: &str) -> Kubectl {
    let out = tokio::process::Command::new(binary)
        .args([
            "--kubeconfig=/dev/null",
            &format!("--server={server}"),
            "--insecure-skip-tls-verify",
            // A token keeps kubectl from prompting for a user name.
            "--token=probe",
            "get",
            "--raw",
            path,
        ])
        .env_clear()
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {binary}: {e}"));
    Kubectl {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// metrics-server's checks over switchable state.
fn checks(store_ready: &Arc<AtomicBool>) -> Arc<Health> {
    let ready = Arc::clone(store_ready);
    Arc::new(Health::metrics_server(
        Duration::from_secs(15),
        || Some(SystemTime::now()),
        move || ready.load(Ordering::Relaxed),
        || true,
        || true,
    ))
}

#[tokio::test]
async fn kubectl_reads_metrics_servers_probe_bodies() {
    let store_ready = Arc::new(AtomicBool::new(true));
    let (server, _stop) = serve(checks(&store_ready)).await;
    for binary in KUBECTLS {
        assert!(Path::new(binary).exists(), "{binary} is missing");
        let r = kubectl(binary, &server, "/readyz?verbose").await;
        assert_eq!(r.code, Some(0), "{binary}: {}", r.stderr);
        assert_eq!(r.stdout, READYZ_FIXTURE, "{binary}");
        let r = kubectl(binary, &server, "/livez?verbose").await;
        assert_eq!(r.stdout, LIVEZ_FIXTURE, "{binary}");
        let r = kubectl(binary, &server, "/healthz").await;
        assert_eq!(r.stdout, "ok", "{binary}");
        let r = kubectl(binary, &server, "/readyz/metric-storage-ready").await;
        assert_eq!(r.stdout, "ok", "{binary}");
    }
}

#[tokio::test]
async fn kubectl_reports_a_failing_probe_as_a_server_error() {
    let store_ready = Arc::new(AtomicBool::new(false));
    let health = checks(&store_ready);
    let (server, _stop) = serve(Arc::clone(&health)).await;
    for binary in KUBECTLS {
        let r = kubectl(binary, &server, "/readyz").await;
        assert_eq!(r.code, Some(1), "{binary}: {}", r.stdout);
        assert!(
            r.stderr
                .starts_with("Error from server (InternalError): an error on the server"),
            "{binary}: {}",
            r.stderr
        );
        assert!(
            r.stderr
                .contains("[-]metric-storage-ready failed: reason withheld"),
            "{binary}: {}",
            r.stderr
        );
        assert!(
            r.stderr.contains("readyz check failed"),
            "{binary}: {}",
            r.stderr
        );
        // Liveness is unaffected, and the check's own path gives the reason.
        assert_eq!(kubectl(binary, &server, "/livez").await.stdout, "ok");
        let r = kubectl(binary, &server, "/readyz/metric-storage-ready").await;
        assert_eq!(r.code, Some(1));
        assert!(
            r.stderr
                .contains("internal server error: no metrics to serve yet"),
            "{binary}: {}",
            r.stderr
        );
    }
    // Once the store is ready and until shutdown begins, readiness passes.
    store_ready.store(true, Ordering::Relaxed);
    assert_eq!(kubectl(KUBECTLS[1], &server, "/readyz").await.stdout, "ok");
    health.begin_shutdown();
    let r = kubectl(KUBECTLS[1], &server, "/readyz?verbose").await;
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("[-]shutdown failed: reason withheld"),
        "{}",
        r.stderr
    );
}
