//! The aggregation layer against a test backend that records what it receives.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::IntoResponse;
use metrics_bridge::https::ConnInfo;
use serde_json::{Value, json};
use support::{Cred, KUBECTL_1_33, KubeSim, https};

#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: http::HeaderMap,
    client_cn: String,
    client_issuer: String,
    /// The SNI the connection asked for.
    sni: Option<String>,
}

#[derive(Default)]
struct Backend {
    seen: Mutex<Vec<Seen>>,
    /// "aggregated", "406", "404" or "down".
    mode: Mutex<&'static str>,
}

fn names(der: &[u8]) -> (String, String) {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let cn = |n: &x509_parser::x509::X509Name| {
        n.iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .unwrap_or("")
            .to_string()
    };
    (cn(cert.subject()), cn(cert.issuer()))
}

async fn backend_handler(State(b): State<Arc<Backend>>, req: Request) -> axum::response::Response {
    let conn = req.extensions().get::<ConnInfo>().cloned();
    let sni = conn
        .as_ref()
        .and_then(|c| c.server_name.as_deref().map(str::to_string));
    let (client_cn, client_issuer) = conn
        .and_then(|c| c.peer_certificates)
        .map(|chain| names(&chain[0]))
        .unwrap_or_default();
    let path = req.uri().path().to_string();
    b.seen.lock().unwrap().push(Seen {
        path: req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: req.headers().clone(),
        client_cn,
        client_issuer,
        sni,
    });
    let mode = *b.mode.lock().unwrap();
    let resources = json!([
        {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]},
        {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]}
    ]);
    let json_res = |code: u16, v: Value, ct: &str| {
        let mut r = (http::StatusCode::from_u16(code).unwrap(), v.to_string()).into_response();
        r.headers_mut().insert("content-type", ct.parse().unwrap());
        r
    };
    match path.as_str() {
        "/apis" => match mode {
            "406" => json_res(
                406,
                json!({"kind": "Status", "code": 406}),
                "application/json",
            ),
            "404" => json_res(
                404,
                json!({"kind": "Status", "code": 404}),
                "application/json",
            ),
            _ => json_res(
                200,
                json!({
                    "kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {},
                    "items": [{"metadata": {"name": "metrics.k8s.io"}, "versions": [{"version": "v1beta1", "resources": [
                        {"resource": "nodes", "responseKind": {"group": "", "version": "", "kind": "NodeMetrics"}, "scope": "Cluster", "singularResource": "", "verbs": ["get", "list"]},
                        {"resource": "pods", "responseKind": {"group": "", "version": "", "kind": "PodMetrics"}, "scope": "Namespaced", "singularResource": "", "verbs": ["get", "list"]}
                    ], "freshness": "Current"}]}]
                }),
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
            ),
        },
        "/apis/metrics.k8s.io/v1beta1" if mode == "down" => {
            json_res(503, json!({}), "application/json")
        }
        "/apis/metrics.k8s.io/v1beta1" => json_res(
            200,
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "metrics.k8s.io/v1beta1", "resources": resources}),
            "application/json",
        ),
        _ => json_res(
            200,
            json!({"kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": []}),
            "application/json",
        ),
    }
}

async fn discovery_groups(sim: &KubeSim) -> Vec<(String, String)> {
    let (cert, key) = (sim.read("admin.crt"), sim.read("admin.key"));
    let accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
    let r = https(
        "GET",
        &format!("{}/apis", sim.url),
        Some(&sim.read("ca.crt")),
        Cred::Cert(&cert, &key),
        &[("accept", accept)],
        Vec::new(),
    )
    .await
    .unwrap();
    r.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| {
            let name = i["metadata"]["name"].as_str().unwrap().to_string();
            i["versions"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |v| (name.clone(), v["freshness"].as_str().unwrap().to_string()))
        })
        .filter(|(n, _)| n == "metrics.k8s.io")
        .collect()
}

async fn wait_for(sim: &KubeSim, want: &[(&str, &str)]) {
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    for _ in 0..100 {
        if discovery_groups(sim).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "discovery never became {want:?}: {:?}",
        discovery_groups(sim).await
    );
}

#[tokio::test]
async fn aggregation_layer_forwards_like_kube_apiserver() {
    // The backend must trust the front-proxy CA, which kube-sim makes: start kube-sim first
    // pointing at a port we then bind.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let flag = format!("metrics.k8s.io/v1beta1=https://127.0.0.1:{port}");
    let sim = KubeSim::start(&[
        "--nodes",
        "1",
        "--pods-per-node",
        "1",
        "--aggregate",
        &flag,
        "--aggregator-probe-interval",
        "200ms",
    ]);
    let backend = start_backend_on(&sim.read("front-proxy-ca.crt"), port).await;
    wait_for(&sim, &[("metrics.k8s.io", "Current")]).await;

    // Probes: as system:kube-aggregator in system:masters, with the front-proxy certificate.
    {
        let seen = backend.seen.lock().unwrap();
        let probe = seen
            .iter()
            .find(|s| s.path == "/apis/metrics.k8s.io/v1beta1")
            .unwrap();
        assert_eq!(probe.headers["x-remote-user"], "system:kube-aggregator");
        assert_eq!(probe.headers["x-remote-group"], "system:masters");
        assert_eq!(
            (probe.client_cn.as_str(), probe.client_issuer.as_str()),
            ("front-proxy-client", "front-proxy-ca")
        );
        let disc = seen.iter().find(|s| s.path == "/apis").unwrap();
        assert!(
            disc.headers["accept"].to_str().unwrap().starts_with(
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
            )
        );
    }
    backend.seen.lock().unwrap().clear();

    // A forwarded request.
    let viewer = sim.token("viewer");
    let path = "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods?labelSelector=app%3Dweb";
    let r = sim.as_token(&viewer, "GET", path, Vec::new()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["kind"], "PodMetricsList");
    {
        let seen = backend.seen.lock().unwrap();
        let s = seen.iter().find(|s| s.path == path).expect("forwarded");
        assert!(
            s.headers.get("authorization").is_none(),
            "Authorization must be dropped"
        );
        assert_eq!(s.headers["x-remote-user"], "viewer");
        let groups: Vec<_> = s.headers.get_all("x-remote-group").iter().collect();
        assert_eq!(groups, ["system:authenticated"]);
        assert_eq!(s.headers["x-forwarded-proto"], "https");
        assert_eq!(
            s.headers["x-forwarded-uri"],
            "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods"
        );
        assert_eq!(s.headers["x-forwarded-for"], "127.0.0.1");
        assert_eq!(
            s.headers["x-forwarded-host"],
            sim.url.trim_start_matches("https://")
        );
        assert_eq!(
            (s.client_cn.as_str(), s.client_issuer.as_str()),
            ("front-proxy-client", "front-proxy-ca")
        );
    }
    // Extras become one X-Remote-Extra header per value, key escaped.
    let r = sim
        .as_token(
            &sim.token("metrics-bridge"),
            "GET",
            "/apis/metrics.k8s.io/v1beta1/nodes",
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, 403, "metrics-server's role has no metrics.k8s.io");
    let r = sim
        .as_token(&sim.token("hpa"), "GET", path, Vec::new())
        .await;
    assert_eq!(r.status, 200);
    {
        let seen = backend.seen.lock().unwrap();
        let s = seen.last().unwrap();
        assert_eq!(
            s.headers["x-remote-user"],
            "system:serviceaccount:kube-system:horizontal-pod-autoscaler"
        );
        let groups: Vec<_> = s.headers.get_all("x-remote-group").iter().collect();
        assert_eq!(
            groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:kube-system",
                "system:authenticated"
            ]
        );
        assert_eq!(
            s.headers
                .get_all("x-remote-extra-authentication.kubernetes.io%2fcredential-id")
                .iter()
                .count(),
            1
        );
    }
    // Denied callers never reach the backend.
    let before = backend
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.path.contains("/nodes"))
        .count();
    let r = sim
        .as_token(
            &viewer,
            "GET",
            "/apis/metrics.k8s.io/v1beta1/nodes",
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json()["message"],
        r#"nodes.metrics.k8s.io is forbidden: User "viewer" cannot list resource "nodes" in API group "metrics.k8s.io" at the cluster scope"#
    );
    assert_eq!(
        backend
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path.contains("/nodes"))
            .count(),
        before
    );

    // Down: left out of discovery, 503, and kubectl top says so.
    *backend.mode.lock().unwrap() = "down";
    wait_for(&sim, &[]).await;
    let r = sim.as_token(&viewer, "GET", path, Vec::new()).await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.json()["message"],
        "the server is currently unable to handle the request"
    );
    let top = sim.kubectl(KUBECTL_1_33, "kubeconfig", &["top", "pod"]);
    assert_eq!(
        String::from_utf8_lossy(&top.stderr).trim(),
        "error: Metrics API not available"
    );
    // Back.
    *backend.mode.lock().unwrap() = "aggregated";
    wait_for(&sim, &[("metrics.k8s.io", "Current")]).await;
    // 406 on aggregated discovery: per-version fallback as system:kube-aggregator, no group.
    backend.seen.lock().unwrap().clear();
    *backend.mode.lock().unwrap() = "406";
    for _ in 0..50 {
        if backend.seen.lock().unwrap().iter().any(|s| {
            s.path == "/apis/metrics.k8s.io/v1beta1" && s.headers.get("x-remote-group").is_none()
        }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        backend
            .seen
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.path == "/apis/metrics.k8s.io/v1beta1"
                && s.headers.get("x-remote-group").is_none())
    );
    wait_for(&sim, &[("metrics.k8s.io", "Current")]).await;
    // 404 on aggregated discovery: Stale, while raw requests still work.
    *backend.mode.lock().unwrap() = "404";
    wait_for(&sim, &[("metrics.k8s.io", "Stale")]).await;
    assert_eq!(
        sim.as_token(&viewer, "GET", path, Vec::new()).await.status,
        200
    );
}

/// An HTTPS backend on `port` that trusts the front-proxy CA for client certificates, with a
/// self-signed certificate for `localhost` (kube-sim does not verify it in the plain form).
async fn start_backend_on(front_proxy_ca: &str, port: u16) -> Arc<Backend> {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    start_backend_with(
        front_proxy_ca,
        port,
        cert.der().clone(),
        key.serialize_der(),
    )
    .await
}

/// An HTTPS backend on `port` serving `cert` (DER) with `key` (PKCS#8 DER).
async fn start_backend_with(
    front_proxy_ca: &str,
    port: u16,
    cert: rustls_pki_types::CertificateDer<'static>,
    key: Vec<u8>,
) -> Arc<Backend> {
    use rustls_pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(front_proxy_ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .allow_unauthenticated()
    .build()
    .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![cert],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.into()),
        )
        .unwrap();
    config.alpn_protocols = metrics_bridge::https::alpn(true);
    let backend = Arc::new(Backend {
        mode: Mutex::new("aggregated"),
        ..Default::default()
    });
    let app = axum::Router::new()
        .fallback(backend_handler)
        .with_state(Arc::clone(&backend));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(metrics_bridge::https::serve(
        listener,
        Arc::new(config),
        app,
        Default::default(),
        std::future::pending(),
    ));
    backend
}

/// A CA, and a serving certificate from it for `name` (DER, PKCS#8 key DER).
fn ca_and_leaf(
    ca_name: &str,
    name: &str,
) -> (String, rustls_pki_types::CertificateDer<'static>, Vec<u8>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![name.to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca_cert.pem(), leaf.der().clone(), key.serialize_der())
}

fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

/// The APIService's state in `/sim/info`.
async fn api_service(sim: &KubeSim) -> Value {
    sim.admin("GET", "/sim/info").await.json()["apiServices"]["v1beta1.metrics.k8s.io"].clone()
}

async fn until_available(sim: &KubeSim, want: bool) -> Value {
    for _ in 0..100 {
        let s = api_service(sim).await;
        if s["available"] == want {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "APIService never became available={want}: {}",
        api_service(sim).await
    );
}

#[tokio::test]
async fn ca_bundle_verifies_the_backend_as_service_namespace_svc() {
    const NAME: &str = "metrics-bridge.kube-system.svc";
    let (ca_pem, cert, key) = ca_and_leaf("backend-ca", NAME);
    let (other_ca, _, _) = ca_and_leaf("someone-elses-ca", NAME);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.crt");
    let other_file = dir.path().join("other.crt");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    std::fs::write(&other_file, &other_ca).unwrap();
    let port = free_port();
    let flag = |ca: &std::path::Path, name: &str| {
        format!(
            "metrics.k8s.io/v1beta1=https://127.0.0.1:{port},ca={},name={name}",
            ca.display()
        )
    };
    let common = [
        "--nodes",
        "1",
        "--pods-per-node",
        "1",
        "--aggregator-probe-interval",
        "200ms",
    ];
    let start = |f: String| {
        let mut args: Vec<&str> = common.to_vec();
        let f: &'static str = Box::leak(f.into_boxed_str());
        args.extend(["--aggregate", f]);
        KubeSim::start(&args)
    };
    let good = start(flag(&ca_file, NAME));
    let wrong_ca = start(flag(&other_file, NAME));
    let wrong_name = start(flag(&ca_file, "other.kube-system.svc"));
    // One backend; it trusts the front-proxy CA of the first kube-sim only, which does not
    // matter for the others: they fail before presenting a client certificate.
    let backend = start_backend_with(&good.read("front-proxy-ca.crt"), port, cert, key).await;

    until_available(&good, true).await;
    wait_for(&good, &[("metrics.k8s.io", "Current")]).await;
    let path = "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods";
    let r = good
        .as_token(&good.token("viewer"), "GET", path, Vec::new())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    {
        let seen = backend.seen.lock().unwrap();
        assert!(!seen.is_empty());
        assert!(
            seen.iter().all(|s| s.sni.as_deref() == Some(NAME)),
            "probes and requests send the service name as SNI: {:?}",
            seen.iter().map(|s| &s.sni).collect::<Vec<_>>()
        );
    }

    // A certificate from another CA, or for another name: unavailable, 503, never reached.
    for (sim, why) in [
        (&wrong_ca, "invalid peer certificate: UnknownIssuer"),
        (
            &wrong_name,
            r#"invalid peer certificate: certificate not valid for name "other.kube-system.svc""#,
        ),
    ] {
        let state = until_available(sim, false).await;
        let message = state["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!(
                "failing or missing response from https://127.0.0.1:{port}/apis/metrics.k8s.io/v1beta1:"
            )) && message.contains(why),
            "{message}"
        );
        let r = sim
            .as_token(&sim.token("viewer"), "GET", path, Vec::new())
            .await;
        assert_eq!(r.status, 503);
        assert_eq!(
            r.json()["message"],
            "the server is currently unable to handle the request"
        );
        assert!(discovery_groups(sim).await.is_empty());
    }
    let reached = backend.seen.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = backend.seen.lock().unwrap();
    assert!(
        seen.iter()
            .skip(reached)
            .all(|s| s.sni.as_deref() == Some(NAME)),
        "only the good kube-sim gets through"
    );
}
