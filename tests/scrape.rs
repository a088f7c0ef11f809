//! The scraper against fake kubelets: real HTTPS servers with certificates from a test CA,
//! each on its own 127.x address, serving kubelet pages whose counters advance by a known
//! rate on every request. Every failure mode is exercised next to healthy nodes, and the
//! store's numbers are compared exactly.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, StatusCode};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use metrics_bridge::cluster::{ClusterState, LabelSet, NodeAddressType, NodeInfo};
use metrics_bridge::scrape::{
    FailureReason, KubeletAuth, ScrapeConfig, ScrapeStats, Scraper, TokenSource,
};
use metrics_bridge::store::Store;
use metrics_bridge::tls::{ClientIdentity, KubeletTrust};

// ---------------------------------------------------------------------------------------------
// PKI

struct Ca {
    cert: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new(cn: &str) -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.self_signed(&key).unwrap();
        Self {
            cert,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A leaf for `names` (IPs or DNS names), for serving or client use.
    fn leaf(
        &self,
        cn: &str,
        names: &[String],
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(names.to_vec()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Fake kubelets

/// Simulated seconds between two consecutive requests to the same kubelet.
const STEP_S: u64 = 10;
const T0_MS: u64 = 1_700_000_000_000;

/// A container: CPU rate in nanocores and working set in bytes.
#[derive(Clone, Copy)]
struct Container {
    name: &'static str,
    nanocores: u64,
    memory: u64,
}

const NODE_NANOCORES: u64 = 1_250_000_000;
const NODE_MEMORY: u64 = 3_221_225_472;
const WEB: [Container; 2] = [
    Container {
        name: "app",
        nanocores: 250_000_000,
        memory: 52_428_800,
    },
    Container {
        name: "sidecar",
        nanocores: 7_500_000,
        memory: 10_485_760,
    },
];
const DNS: [Container; 1] = [Container {
    name: "coredns",
    nanocores: 3_000_000,
    memory: 20_971_520,
}];

fn seconds(ns: u64) -> String {
    format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000)
}

/// The `k`-th page of a kubelet: counters at `(k + 1) × STEP_S` seconds of runtime, in the current
/// kubelet format (`[STABLE]` help, millisecond timestamps, start times without timestamps).
fn render_page(node: &str, k: u64) -> String {
    // Runtime starts at one step: a zero counter would drop the node (metrics-server's rule).
    let t = (k + 1) * STEP_S;
    let ts = T0_MS + t * 1000;
    let start = (T0_MS / 1000 - 3600) as f64;
    let pods = [
        (format!("{node}-web"), "shop", &WEB[..]),
        (format!("{node}-dns"), "kube-system", &DNS[..]),
    ];
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str| {
        out.push_str(&format!(
            "# HELP {name} [STABLE] {help}\n# TYPE {name} {kind}\n"
        ));
    };
    family(
        "container_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the container in core-seconds",
    );
    let mut body = String::new();
    for (pod, ns, containers) in &pods {
        for c in containers.iter() {
            body.push_str(&format!(
                "container_cpu_usage_seconds_total{{container=\"{}\",namespace=\"{ns}\",pod=\"{pod}\"}} {} {ts}\n",
                c.name,
                seconds(c.nanocores * t)
            ));
        }
    }
    out.push_str(&body);
    out.push_str("# HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes\n# TYPE container_memory_working_set_bytes gauge\n");
    for (pod, ns, containers) in &pods {
        for c in containers.iter() {
            out.push_str(&format!(
                "container_memory_working_set_bytes{{container=\"{}\",namespace=\"{ns}\",pod=\"{pod}\"}} {} {ts}\n",
                c.name, c.memory
            ));
        }
    }
    out.push_str("# HELP container_start_time_seconds [STABLE] Start time of the container since unix epoch in seconds\n# TYPE container_start_time_seconds gauge\n");
    for (pod, ns, containers) in &pods {
        for c in containers.iter() {
            out.push_str(&format!(
                "container_start_time_seconds{{container=\"{}\",namespace=\"{ns}\",pod=\"{pod}\"}} {start:e}\n",
                c.name
            ));
        }
    }
    out.push_str(&format!(
        "# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds\n\
         # TYPE node_cpu_usage_seconds_total counter\n\
         node_cpu_usage_seconds_total {} {ts}\n\
         # HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes\n\
         # TYPE node_memory_working_set_bytes gauge\n\
         node_memory_working_set_bytes {NODE_MEMORY} {ts}\n\
         # HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise\n\
         # TYPE resource_scrape_error gauge\n\
         resource_scrape_error 0\n",
        seconds(NODE_NANOCORES * t)
    ));
    out
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Behaviour {
    Healthy,
    /// Healthy, but gzip-compressed when the client accepts it.
    Gzip,
    /// Healthy, but 401 unless the bearer token is the one in `Kubelet::token`.
    RequireToken,
    Hang,
    Status500,
    Garbage,
    /// A body over the limit with a Content-Length.
    TooBig,
    /// A body over the limit, streamed without a length.
    TooBigChunked,
}

struct KubeletState {
    node: String,
    behaviour: Behaviour,
    requests: AtomicU64,
    token: Mutex<String>,
    seen_tokens: Mutex<Vec<String>>,
    accept_encodings: Mutex<Vec<String>>,
}

async fn metrics_resource(State(s): State<Arc<KubeletState>>, headers: HeaderMap) -> Response {
    let header = |name: http::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let auth = header(http::header::AUTHORIZATION);
    s.seen_tokens.lock().unwrap().push(auth.clone());
    s.accept_encodings
        .lock()
        .unwrap()
        .push(header(http::header::ACCEPT_ENCODING));
    match s.behaviour {
        Behaviour::Hang => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return "too late".into_response();
        }
        Behaviour::Status500 => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "kubelet exploded").into_response();
        }
        Behaviour::Garbage => return "this is { not a kubelet page\n".into_response(),
        Behaviour::TooBig => return "# padding\n".repeat(20_000).into_response(),
        Behaviour::TooBigChunked => {
            let chunks = (0..200).map(|_| Ok::<_, std::io::Error>("# padding\n".repeat(1000)));
            return Body::from_stream(futures::stream::iter(chunks)).into_response();
        }
        Behaviour::RequireToken if auth != format!("Bearer {}", s.token.lock().unwrap()) => {
            return (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
        }
        _ => {}
    }
    let k = s.requests.fetch_add(1, Ordering::SeqCst);
    let page = render_page(&s.node, k);
    if s.behaviour == Behaviour::Gzip && header(http::header::ACCEPT_ENCODING).contains("gzip") {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(page.as_bytes()).unwrap();
        return (
            [(http::header::CONTENT_ENCODING, "gzip")],
            enc.finish().unwrap(),
        )
            .into_response();
    }
    page.into_response()
}

struct Kubelet {
    addr: SocketAddr,
    state: Arc<KubeletState>,
}

async fn start_kubelet(
    node: &str,
    ip: Ipv4Addr,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca: Option<CertificateDer<'static>>,
    behaviour: Behaviour,
) -> Kubelet {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = metrics_bridge::https::alpn(false);
    let state = Arc::new(KubeletState {
        node: node.to_owned(),
        behaviour,
        requests: AtomicU64::new(0),
        token: Mutex::new("secret-token".into()),
        seen_tokens: Mutex::new(Vec::new()),
        accept_encodings: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route("/metrics/resource", get(metrics_resource))
        .with_state(Arc::clone(&state));
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(IpAddr::V4(ip), 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(metrics_bridge::https::serve(
        listener,
        Arc::new(config),
        app,
        metrics_bridge::https::ServeOptions {
            http2: false,
            ..Default::default()
        },
        std::future::pending(),
    ));
    Kubelet { addr, state }
}

fn node_info(name: &str, addresses: Vec<(NodeAddressType, String)>, port: u16) -> NodeInfo {
    NodeInfo {
        name: Arc::from(name),
        labels: LabelSet::default(),
        addresses: addresses
            .into_iter()
            .map(|(t, a)| (t, a.into_boxed_str()))
            .collect(),
        kubelet_port: port,
        metrics_path: None,
        allocatable_cpu_millis: 4000,
        allocatable_memory_bytes: 16 << 30,
    }
}

const RESOLUTION: Duration = Duration::from_secs(3);
const TIMEOUT: Duration = Duration::from_millis(400);
const BODY_LIMIT: usize = 64 * 1024;

fn scrape_config() -> ScrapeConfig {
    ScrapeConfig {
        resolution: RESOLUTION,
        request_timeout: TIMEOUT,
        port: 1,
        use_node_status_port: true,
        preferred_address_types: Arc::from([NodeAddressType::InternalIP].as_slice()),
        max_concurrent: 8,
        max_body_bytes: BODY_LIMIT,
        max_idle_connections: 100,
    }
}

struct Rig {
    cluster: Arc<ClusterState>,
    store: Arc<Store>,
    stats: Arc<ScrapeStats>,
    scraper: Scraper,
}

fn rig(cluster: ClusterState, auth: KubeletAuth) -> Rig {
    let cluster = Arc::new(cluster);
    let store = Arc::new(Store::new(RESOLUTION));
    let stats = Arc::new(ScrapeStats::new(RESOLUTION));
    let scraper = Scraper::with_auth(
        scrape_config(),
        auth,
        Arc::clone(&cluster),
        Arc::clone(&store),
        Arc::clone(&stats),
    )
    .unwrap();
    Rig {
        cluster,
        store,
        stats,
        scraper,
    }
}

fn trusting(ca: &Ca) -> KubeletTrust {
    KubeletTrust::Roots {
        roots: vec![ca.der()],
        origin: "test CA".into(),
    }
}

fn static_token() -> TokenSource {
    TokenSource::Static(http::HeaderValue::from_static("Bearer secret-token"))
}

/// The usual kubelet auth of these tests: trust `ca`, send the static token.
fn token_auth(ca: &Ca) -> KubeletAuth {
    KubeletAuth {
        trust: trusting(ca),
        identity: None,
        token: static_token(),
    }
}

/// Asserts the store serves the node and both its pods with exactly the simulated rates.
fn assert_served(store: &Store, node: &str) {
    let usage = store
        .node_usage(node)
        .unwrap_or_else(|| panic!("node {node} is not served"));
    assert_eq!(usage.cpu_nanocores, NODE_NANOCORES, "node {node} cpu");
    assert_eq!(usage.memory_bytes, NODE_MEMORY, "node {node} memory");
    assert_eq!(
        usage.window,
        Duration::from_secs(STEP_S),
        "node {node} window"
    );
    for (pod, ns, containers) in [
        (format!("{node}-web"), "shop", &WEB[..]),
        (format!("{node}-dns"), "kube-system", &DNS[..]),
    ] {
        let usage = store
            .pod_usage(ns, &pod)
            .unwrap_or_else(|| panic!("pod {ns}/{pod} is not served"));
        let got: Vec<(String, u64, u64)> = usage
            .containers
            .iter()
            .map(|c| (c.name.to_string(), c.cpu_nanocores, c.memory_bytes))
            .collect();
        let want: Vec<(String, u64, u64)> = containers
            .iter()
            .map(|c| (c.name.to_owned(), c.nanocores, c.memory))
            .collect();
        assert_eq!(got, want, "pod {ns}/{pod}");
    }
}

fn assert_not_served(store: &Store, node: &str) {
    assert_eq!(
        store.node_usage(node),
        None,
        "failing node {node} is served"
    );
    assert!(store.pod_usage("shop", &format!("{node}-web")).is_none());
}

fn last_error(stats: &ScrapeStats, node: &str) -> (FailureReason, String) {
    let e = stats
        .node(node)
        .and_then(|s| s.last_error())
        .unwrap_or_else(|| panic!("node {node} has no recorded error"));
    (e.reason, e.message.to_string())
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn failing_kubelets_are_missing_counted_and_explained_while_the_rest_are_served() {
    let ca = Ca::new("cluster-ca");
    let other_ca = Ca::new("someone-else");
    let ip = |i: u8| Ipv4Addr::new(127, 61, 0, i);
    let cluster = ClusterState::new();
    let mut kubelets = Vec::new();

    let behaviours = [
        ("good-1", Behaviour::Healthy),
        ("good-2", Behaviour::Healthy),
        ("gzip", Behaviour::Gzip),
        ("hang", Behaviour::Hang),
        ("status-500", Behaviour::Status500),
        ("garbage", Behaviour::Garbage),
        ("too-big", Behaviour::TooBig),
        ("too-big-chunked", Behaviour::TooBigChunked),
    ];
    for (i, (name, behaviour)) in behaviours.iter().enumerate() {
        let addr = ip(i as u8 + 1);
        let (chain, key) = ca.leaf(name, &[addr.to_string()]);
        let k = start_kubelet(name, addr, chain, key, None, *behaviour).await;
        cluster.upsert_node(node_info(
            name,
            vec![
                (NodeAddressType::Hostname, (*name).into()),
                (NodeAddressType::InternalIP, addr.to_string()),
            ],
            k.addr.port(),
        ));
        kubelets.push((*name, k));
    }

    // Signed by a CA we do not trust.
    let (chain, key) = other_ca.leaf("unknown-ca", &[ip(20).to_string()]);
    let k = start_kubelet("unknown-ca", ip(20), chain, key, None, Behaviour::Healthy).await;
    cluster.upsert_node(node_info(
        "unknown-ca",
        vec![(NodeAddressType::InternalIP, ip(20).to_string())],
        k.addr.port(),
    ));

    // Trusted, but issued for other names than the address we dial.
    let (chain, key) = ca.leaf(
        "san-mismatch",
        &["wrong-node.example".into(), ip(99).to_string()],
    );
    let k = start_kubelet("san-mismatch", ip(21), chain, key, None, Behaviour::Healthy).await;
    cluster.upsert_node(node_info(
        "san-mismatch",
        vec![(NodeAddressType::InternalIP, ip(21).to_string())],
        k.addr.port(),
    ));

    // Nobody listens: the port was bound and released.
    let refused_port = {
        let l = std::net::TcpListener::bind(SocketAddr::new(IpAddr::V4(ip(22)), 0)).unwrap();
        l.local_addr().unwrap().port()
    };
    cluster.upsert_node(node_info(
        "refused",
        vec![(NodeAddressType::InternalIP, ip(22).to_string())],
        refused_port,
    ));

    // No address of the preferred type at all.
    cluster.upsert_node(node_info(
        "hostname-only",
        vec![(NodeAddressType::Hostname, "hostname-only".into())],
        10250,
    ));

    let rig = rig(cluster, token_auth(&ca));

    let first = rig.scraper.tick().await;
    assert_eq!((first.nodes, first.succeeded), (12, 3));
    // One point per node is not a rate yet.
    assert_eq!(rig.store.node_usage("good-1"), None);
    let second = rig.scraper.tick().await;
    assert_eq!((second.nodes, second.succeeded), (12, 3));

    for good in ["good-1", "good-2", "gzip"] {
        assert_served(&rig.store, good);
        let s = rig.stats.node(good).unwrap();
        assert!(s.healthy());
        assert_eq!(s.duration.snapshot().count, 2);
    }
    for (name, k) in &kubelets {
        if ["good-1", "good-2", "gzip"].contains(name) {
            assert_eq!(k.state.requests.load(Ordering::SeqCst), 2, "{name}");
            assert_eq!(
                *k.state.seen_tokens.lock().unwrap(),
                ["Bearer secret-token"; 2]
            );
            assert_eq!(*k.state.accept_encodings.lock().unwrap(), ["gzip"; 2]);
        }
    }
    for bad in [
        "hang",
        "status-500",
        "garbage",
        "too-big",
        "too-big-chunked",
        "unknown-ca",
        "san-mismatch",
        "refused",
        "hostname-only",
    ] {
        assert_not_served(&rig.store, bad);
        assert_eq!(
            rig.stats.node(bad).unwrap().consecutive_failures(),
            2,
            "{bad}"
        );
    }

    // Counted by reason, twice each (two ticks).
    let count = |r| rig.stats.failures(r);
    assert_eq!(count(FailureReason::Timeout), 2);
    assert_eq!(count(FailureReason::HttpStatus), 2);
    assert_eq!(count(FailureReason::Decode), 2);
    assert_eq!(count(FailureReason::BodyTooLarge), 4);
    assert_eq!(count(FailureReason::Tls), 4);
    assert_eq!(count(FailureReason::Connect), 2);
    assert_eq!(count(FailureReason::NoAddress), 2);
    assert_eq!(count(FailureReason::Unauthorized), 0);
    assert_eq!(count(FailureReason::Transfer), 0);
    let totals = rig.stats.totals();
    assert_eq!((totals.requests_ok, totals.requests_failed), (6, 18));
    let page_len = |k: u64, node: &str| render_page(node, k).len() as u64;
    let decoded: u64 = ["good-1", "good-2", "gzip"]
        .iter()
        .map(|n| page_len(0, n) + page_len(1, n))
        .sum();
    assert_eq!(totals.bytes_decoded, decoded);
    assert!(
        totals.bytes_received < decoded,
        "the gzip node's bytes arrive compressed"
    );
    assert_eq!(rig.stats.last_tick_result(), (3, 12));

    // Each reason explained, naming the address.
    let url = |i: u8, port: u16| format!("https://{}:{port}/metrics/resource", ip(i));
    let port_of = |name: &str| {
        kubelets
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap()
            .1
            .addr
            .port()
    };
    assert_eq!(
        last_error(&rig.stats, "hang"),
        (
            FailureReason::Timeout,
            format!(
                "no complete answer from {} within 400ms",
                url(4, port_of("hang"))
            )
        )
    );
    assert_eq!(
        last_error(&rig.stats, "status-500"),
        (
            FailureReason::HttpStatus,
            format!(
                "{} answered 500 Internal Server Error: \"kubelet exploded\"",
                url(5, port_of("status-500"))
            )
        )
    );
    let (reason, msg) = last_error(&rig.stats, "garbage");
    assert_eq!(reason, FailureReason::Decode);
    assert!(
        msg.starts_with(&format!(
            "cannot decode the page from {}: ",
            url(6, port_of("garbage"))
        )),
        "{msg}"
    );
    assert!(msg.contains("line 1"), "{msg}");
    for (name, i) in [("too-big", 7), ("too-big-chunked", 8)] {
        assert_eq!(
            last_error(&rig.stats, name),
            (
                FailureReason::BodyTooLarge,
                format!(
                    "the response from {} is larger than the 65536-byte limit; stopped reading",
                    url(i, port_of(name))
                )
            )
        );
    }
    let (reason, msg) = last_error(&rig.stats, "unknown-ca");
    assert_eq!(reason, FailureReason::Tls);
    assert!(
        msg.contains("certificate signed by unknown authority"),
        "{msg}"
    );
    assert!(msg.contains("issuer \"CN=someone-else\""), "{msg}");
    assert!(msg.contains("--kubelet-certificate-authority"), "{msg}");
    let (reason, msg) = last_error(&rig.stats, "san-mismatch");
    assert_eq!(reason, FailureReason::Tls);
    assert!(
        msg.contains(&format!("certificate is not valid for {}", ip(21))),
        "{msg}"
    );
    assert!(
        msg.contains(&format!(
            "it is valid for DNS:wrong-node.example, IP:{}",
            ip(99)
        )),
        "{msg}"
    );
    assert!(msg.contains("--kubelet-preferred-address-types"), "{msg}");
    let (reason, msg) = last_error(&rig.stats, "refused");
    assert_eq!(reason, FailureReason::Connect);
    assert!(
        msg.starts_with(&format!(
            "cannot connect to https://{}:{refused_port}/",
            ip(22)
        )),
        "{msg}"
    );
    assert!(msg.contains("Connection refused"), "{msg}");
    assert!(msg.contains("check --kubelet-port"), "{msg}");
    let (reason, msg) = last_error(&rig.stats, "hostname-only");
    assert_eq!(reason, FailureReason::NoAddress);
    assert!(
        msg.ends_with("its addresses are: Hostname=hostname-only"),
        "{msg}"
    );
    assert_eq!(
        rig.stats
            .node("hostname-only")
            .unwrap()
            .duration
            .snapshot()
            .count,
        0
    );

    // The tick's start and length are recorded for health and self-metrics.
    assert!(rig.stats.last_tick_start_ns() > 0);
    assert_eq!(rig.stats.ticks.snapshot().count, 2);
}

#[tokio::test]
async fn a_recovered_node_is_served_again_and_a_deleted_node_leaves_no_trace() {
    let ca = Ca::new("cluster-ca");
    let ip = Ipv4Addr::new(127, 62, 0, 1);
    let (chain, key) = ca.leaf("n1", &[ip.to_string()]);
    let k = start_kubelet("n1", ip, chain, key, None, Behaviour::Healthy).await;
    let cluster = ClusterState::new();
    // First with the wrong port: a connection failure.
    let refused_port = {
        let l = std::net::TcpListener::bind(SocketAddr::new(IpAddr::V4(ip), 0)).unwrap();
        l.local_addr().unwrap().port()
    };
    cluster.upsert_node(node_info(
        "n1",
        vec![(NodeAddressType::InternalIP, ip.to_string())],
        refused_port,
    ));
    let rig = rig(cluster, token_auth(&ca));
    rig.scraper.tick().await;
    assert_eq!(last_error(&rig.stats, "n1").0, FailureReason::Connect);

    rig.cluster.upsert_node(node_info(
        "n1",
        vec![(NodeAddressType::InternalIP, ip.to_string())],
        k.addr.port(),
    ));
    rig.scraper.tick().await;
    rig.scraper.tick().await;
    assert_served(&rig.store, "n1");
    let s = rig.stats.node("n1").unwrap();
    assert!(s.healthy());
    // The last failure stays visible after recovery.
    assert_eq!(s.last_error().unwrap().reason, FailureReason::Connect);

    // Deleted: a tick no longer touches it, and its stats are gone.
    assert!(rig.cluster.remove_node("n1"));
    rig.store.remove_node("n1");
    let summary = rig.scraper.tick().await;
    assert_eq!(summary.nodes, 0);
    assert!(rig.stats.node("n1").is_none());
    assert_eq!(rig.store.node_usage("n1"), None);
    assert_eq!(k.state.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_rotated_token_file_is_used_from_the_next_tick() {
    let ca = Ca::new("cluster-ca");
    let ip = Ipv4Addr::new(127, 63, 0, 1);
    let (chain, key) = ca.leaf("n1", &[ip.to_string()]);
    let k = start_kubelet("n1", ip, chain, key, None, Behaviour::RequireToken).await;
    let cluster = ClusterState::new();
    cluster.upsert_node(node_info(
        "n1",
        vec![(NodeAddressType::InternalIP, ip.to_string())],
        k.addr.port(),
    ));

    let dir = tempfile::tempdir().unwrap();
    let token_path = dir.path().join("token");
    std::fs::write(&token_path, "old-token\n").unwrap();
    let rig = rig(
        cluster,
        KubeletAuth {
            trust: trusting(&ca),
            identity: None,
            token: TokenSource::file(token_path.clone()).unwrap(),
        },
    );
    rig.scraper.tick().await;
    let (reason, msg) = last_error(&rig.stats, "n1");
    assert_eq!(reason, FailureReason::Unauthorized);
    assert!(
        msg.contains("answered 401 Unauthorized (the kubelet did not accept our credentials"),
        "{msg}"
    );

    // The kubelet now expects the new token, and the projected token file is rotated.
    *k.state.token.lock().unwrap() = "new-token".into();
    std::fs::write(&token_path, "new-token\n").unwrap();
    let file = std::fs::File::options()
        .write(true)
        .open(&token_path)
        .unwrap();
    file.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    rig.scraper.tick().await;
    rig.scraper.tick().await;
    assert_eq!(
        *k.state.seen_tokens.lock().unwrap(),
        ["Bearer old-token", "Bearer new-token", "Bearer new-token"]
    );
    assert_served(&rig.store, "n1");
}

#[tokio::test]
async fn client_certificates_are_presented_and_insecure_mode_accepts_any_kubelet() {
    let stranger = Ca::new("self-signed-kubelet");
    let client_ca = Ca::new("kubelet-client-ca");
    let ip = |i| Ipv4Addr::new(127, 64, 0, i);
    let cluster = ClusterState::new();

    // Requires a client certificate from client_ca; its serving cert is from an unknown CA.
    let (chain, key) = stranger.leaf("n1", &[ip(1).to_string()]);
    let k = start_kubelet(
        "n1",
        ip(1),
        chain,
        key,
        Some(client_ca.der()),
        Behaviour::Healthy,
    )
    .await;
    cluster.upsert_node(node_info(
        "n1",
        vec![(NodeAddressType::InternalIP, ip(1).to_string())],
        k.addr.port(),
    ));

    let (client_chain, client_key) = client_ca.leaf("metrics-bridge", &[]);
    let rig = rig(
        cluster,
        KubeletAuth {
            trust: KubeletTrust::Insecure,
            identity: Some(ClientIdentity {
                chain: client_chain,
                key: client_key,
                origin: "test".into(),
            }),
            token: TokenSource::None,
        },
    );
    rig.scraper.tick().await;
    rig.scraper.tick().await;
    assert_served(&rig.store, "n1");
    assert_eq!(*k.state.seen_tokens.lock().unwrap(), ["", ""]);

    // Without the client certificate the kubelet refuses the handshake.
    let cluster = ClusterState::new();
    cluster.upsert_node(node_info(
        "n1",
        vec![(NodeAddressType::InternalIP, ip(1).to_string())],
        k.addr.port(),
    ));
    let anonymous = rig_with(cluster, KubeletTrust::Insecure, None);
    anonymous.scraper.tick().await;
    let (reason, _) = last_error(&anonymous.stats, "n1");
    assert!(
        matches!(reason, FailureReason::Tls | FailureReason::Transfer),
        "{reason:?}"
    );
    assert_not_served(&anonymous.store, "n1");
}

fn rig_with(cluster: ClusterState, trust: KubeletTrust, identity: Option<ClientIdentity>) -> Rig {
    rig(
        cluster,
        KubeletAuth {
            trust,
            identity,
            token: TokenSource::None,
        },
    )
}

/// A kubelet that drops the first `drop_first` connections right after reading the request,
/// as a kubelet closing an idle keep-alive connection does when our request crosses its
/// close, and answers the others with a page (closing after each answer).
async fn start_flaky_kubelet(
    ip: Ipv4Addr,
    ca: &Ca,
    drop_first: u64,
) -> (SocketAddr, Arc<AtomicU64>, Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (chain, key) = ca.leaf("flaky", &[ip.to_string()]);
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(IpAddr::V4(ip), 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicU64::new(0));
    let pages = Arc::new(AtomicU64::new(0));
    let (c, p) = (Arc::clone(&connections), Arc::clone(&pages));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let n = c.fetch_add(1, Ordering::SeqCst);
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(len) => request.extend_from_slice(&buf[..len]),
                }
            }
            if n < drop_first {
                drop(tls);
                continue;
            }
            let page = render_page("flaky", p.fetch_add(1, Ordering::SeqCst));
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                page.len()
            );
            let _ = tls.write_all(head.as_bytes()).await;
            let _ = tls.write_all(page.as_bytes()).await;
            let _ = tls.shutdown().await;
        }
    });
    (addr, connections, pages)
}

#[tokio::test]
async fn a_connection_closed_before_the_answer_is_retried_once() {
    let ca = Ca::new("cluster-ca");
    let ip = |i| Ipv4Addr::new(127, 65, 0, i);
    let (recovers, recovers_conns, recovers_pages) = start_flaky_kubelet(ip(1), &ca, 1).await;
    let (always, always_conns, _) = start_flaky_kubelet(ip(2), &ca, u64::MAX).await;
    let cluster = ClusterState::new();
    cluster.upsert_node(node_info(
        "flaky",
        vec![(NodeAddressType::InternalIP, ip(1).to_string())],
        recovers.port(),
    ));
    cluster.upsert_node(node_info(
        "closer",
        vec![(NodeAddressType::InternalIP, ip(2).to_string())],
        always.port(),
    ));
    let rig = rig(cluster, token_auth(&ca));
    rig.scraper.tick().await;
    rig.scraper.tick().await;

    // The first attempt was dropped and retried; both ticks then got pages.
    assert_eq!(recovers_pages.load(Ordering::SeqCst), 2);
    assert_eq!(recovers_conns.load(Ordering::SeqCst), 3);
    assert_served(&rig.store, "flaky");
    // A kubelet that always closes costs exactly one retry per tick, then fails.
    assert_eq!(always_conns.load(Ordering::SeqCst), 4);
    let (reason, msg) = last_error(&rig.stats, "closer");
    assert_eq!(reason, FailureReason::Transfer);
    assert!(msg.contains("failed during the exchange"), "{msg}");
    assert_eq!(rig.stats.failures(FailureReason::Transfer), 2);
}

// ---------------------------------------------------------------------------------------------
// End to end through kube-sim: its API server feeds the watchers, its kubelets the scraper.

mod support;

fn nanocores(cores: &serde_json::Value) -> u64 {
    (cores.as_f64().unwrap() * 1e9).round() as u64
}

fn assert_cpu_close(got: u64, want: u64, what: &str) {
    let diff = got.abs_diff(want) as f64;
    assert!(
        diff <= want as f64 * 0.01,
        "{what}: {got} nanocores, expected {want} within 1%"
    );
}

/// kube-sim's kubelet faults and the reason each must be counted under.
const FAULTS: [(&str, &str, FailureReason); 8] = [
    ("node-00002", "hang", FailureReason::Timeout),
    ("node-00003", "http500", FailureReason::HttpStatus),
    ("node-00004", "truncated", FailureReason::Transfer),
    ("node-00005", "garbage", FailureReason::Decode),
    ("node-00006", "wrong-san", FailureReason::Tls),
    ("node-00007", "wrong-ca", FailureReason::Tls),
    ("node-00008", "refused", FailureReason::Connect),
    ("node-00009", "huge", FailureReason::BodyTooLarge),
];

fn faulty(node: &str) -> bool {
    FAULTS.iter().any(|(n, _, _)| *n == node)
}

/// Checks every node and Running pod of kube-sim's `/sim/expected` against the store: healthy
/// ones within 1% CPU and exact memory, those on `faulty` nodes absent. Returns how many pods
/// were served.
async fn check_against_expected(
    sim: &support::KubeSim,
    c: &metrics_bridge::server::Components,
    faulty: impl Fn(&str) -> bool,
) -> usize {
    let expected = sim.expected().await;
    for node in expected["nodes"].as_array().unwrap() {
        let name = node["name"].as_str().unwrap();
        let usage = c.store.node_usage(name);
        if faulty(name) {
            assert_eq!(usage, None, "faulty {name} is served");
            continue;
        }
        let usage = usage.unwrap_or_else(|| panic!("{name} is not served"));
        assert_cpu_close(usage.cpu_nanocores, nanocores(&node["cpu_cores"]), name);
        assert_eq!(
            usage.memory_bytes,
            node["memory_bytes"].as_u64().unwrap(),
            "{name}"
        );
    }
    let pods = sim.admin("GET", "/api/v1/pods").await.json();
    let node_of = |ns: &str, name: &str| {
        pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["metadata"]["namespace"] == ns && p["metadata"]["name"] == name)
            .and_then(|p| p["spec"]["nodeName"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let mut served = 0;
    for pod in expected["pods"].as_array().unwrap() {
        let (ns, name) = (
            pod["namespace"].as_str().unwrap(),
            pod["name"].as_str().unwrap(),
        );
        let usage = c.store.pod_usage(ns, name);
        if faulty(&node_of(ns, name)) {
            assert!(usage.is_none(), "{ns}/{name} is on a faulty node");
            continue;
        }
        let usage = usage.unwrap_or_else(|| panic!("{ns}/{name} is not served"));
        let mut want: Vec<&serde_json::Value> =
            pod["containers"].as_array().unwrap().iter().collect();
        want.sort_by_key(|c| c["name"].as_str().unwrap().to_owned());
        assert_eq!(usage.containers.len(), want.len(), "{ns}/{name}");
        for (got, want) in usage.containers.iter().zip(want) {
            assert_eq!(&*got.name, want["name"].as_str().unwrap());
            assert_cpu_close(got.cpu_nanocores, nanocores(&want["cpu_cores"]), name);
            assert_eq!(got.memory_bytes, want["memory_bytes"].as_u64().unwrap());
        }
        served += 1;
    }
    served
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_follows_kube_sim_through_faults_and_removals() {
    use metrics_bridge::server;
    let mut args = vec!["--nodes", "10", "--pods-per-node", "4"];
    let fault_flags: Vec<String> = FAULTS
        .iter()
        .map(|(node, kind, _)| format!("{node}={kind}"))
        .chain(["node-00010=slow:100ms".to_owned()])
        .collect();
    for f in &fault_flags {
        args.extend(["--fault", f.as_str()]);
    }
    let sim = support::KubeSim::start(&args);
    let pipeline = support::Pipeline::start(&sim, &["--kubelet-request-timeout=1s"]).await;
    let c = &pipeline.c;
    assert_eq!(c.cluster.node_count(), 10);
    let expected = sim.expected().await;
    assert_eq!(
        c.cluster.pod_count(),
        expected["pods"].as_array().unwrap().len(),
        "Running pods only"
    );

    // Two scrapes a second apart give every healthy node and pod a rate; each faulty kubelet
    // fails on its own, for its own reason.
    let scraper = pipeline.scraper();
    assert_eq!(scraper.tick().await.succeeded, 2);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(scraper.tick().await.succeeded, 2);
    assert!(check_against_expected(&sim, c, faulty).await > 0);
    for (node, kind, reason) in FAULTS {
        let e = c.scrape_stats.node(node).unwrap().last_error().unwrap();
        assert_eq!(e.reason, reason, "{node} ({kind}): {}", e.message);
        assert!(c.scrape_stats.failures(reason) > 0);
    }
    let msg = |node| {
        c.scrape_stats
            .node(node)
            .unwrap()
            .last_error()
            .unwrap()
            .message
    };
    assert!(
        msg("node-00006").contains("it is valid for"),
        "{}",
        msg("node-00006")
    );
    assert!(
        msg("node-00006").contains("IP:127.0.0.254"),
        "{}",
        msg("node-00006")
    );
    assert!(
        msg("node-00007").contains("unknown authority"),
        "{}",
        msg("node-00007")
    );
    assert!(
        msg("node-00009").contains("stopped reading"),
        "{}",
        msg("node-00009")
    );
    let t = c.scrape_stats.totals();
    assert_eq!((t.requests_ok, t.requests_failed), (4, 16));
    assert!(
        t.bytes_received < t.bytes_decoded,
        "kube-sim's kubelets gzip for us"
    );

    // A fault cleared at run time: the node is back after two scrapes.
    let reply = sim.admin("DELETE", "/sim/faults/node-00003").await;
    assert!(reply.status < 300, "{}", reply.text());
    scraper.tick().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    scraper.tick().await;
    assert!(c.store.node_usage("node-00003").is_some());
    assert!(c.scrape_stats.node("node-00003").unwrap().healthy());

    // A deleted pod and a deleted node leave the cluster state and the store at once.
    let victim = expected["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["namespace"].as_str().unwrap(),
                p["name"].as_str().unwrap(),
            )
        })
        .find(|(ns, name)| c.store.pod_usage(ns, name).is_some())
        .unwrap();
    let (ns, name) = victim;
    let reply = sim.admin("DELETE", &format!("/sim/pods/{ns}/{name}")).await;
    assert!(reply.status < 300, "{}", reply.text());
    support::eventually("the deleted pod to leave", || {
        c.cluster.pod(ns, name).is_none() && c.store.pod_usage(ns, name).is_none()
    })
    .await;

    assert!(c.store.node_usage("node-00001").is_some());
    let reply = sim.admin("DELETE", "/sim/nodes/node-00001").await;
    assert!(reply.status < 300, "{}", reply.text());
    support::eventually("the deleted node to leave", || {
        c.cluster.node("node-00001").is_none()
            && c.store.node_usage("node-00001").is_none()
            && c.scrape_stats.node("node-00001").is_none()
    })
    .await;

    // The API serves what is left.
    let resp = tower::ServiceExt::oneshot(
        server::app(c),
        http::Request::get("/apis/metrics.k8s.io/v1beta1/nodes")
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["node-00003", "node-00010"]);
}

/// The sockets this process holds connected to `port` on 127.1.0.0/16 (kube-sim's kubelets):
/// the descriptors in /proc/self/fd that are sockets, matched by inode against
/// /proc/net/tcp's connections whose remote end is that port.
fn sockets_to_kubelets(port: u16) -> usize {
    let mut inodes = std::collections::HashSet::new();
    for fd in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(target) = std::fs::read_link(fd.path()) else {
            continue; // closed while we listed
        };
        let target = target.to_string_lossy().into_owned();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|t| t.strip_suffix(']'))
        {
            inodes.insert(inode.to_owned());
        }
    }
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let remote = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // rem_address is little-endian hex: 127.1.x.y shows as yyxx017F.
            fields.len() > 9
                && fields[2].ends_with(&remote)
                && fields[2].get(4..8) == Some("017F")
                && inodes.contains(fields[9])
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fewer_idle_connections_than_nodes_every_node_is_scraped_and_reconnects_resume() {
    const NODES: usize = 12;
    const BUDGET: usize = 4;
    let sim = support::KubeSim::start(&["--nodes", "12", "--pods-per-node", "3"]);
    let budget = format!("--kubelet-max-idle-connections={BUDGET}");
    let pipeline = support::Pipeline::start(&sim, &[&budget]).await;
    let c = &pipeline.c;
    assert_eq!(pipeline.options.kubelet.max_idle_connections, BUDGET);
    assert_eq!(c.cluster.node_count(), NODES);
    let scraper = pipeline.scraper();
    let budget_held = |what: &str| {
        let stats = scraper.pool_stats();
        assert_eq!(stats.budget, BUDGET);
        assert!(
            stats.idle <= BUDGET && stats.idle_peak <= BUDGET,
            "{what}: {stats:?}"
        );
        stats
    };

    // The first tick connects to every kubelet with a full handshake and keeps only BUDGET
    // connections.
    assert_eq!(scraper.tick().await.succeeded, NODES);
    let first = budget_held("after the first tick");
    assert_eq!(
        (first.opened, first.resumed, first.reused),
        (NODES as u64, 0, 0)
    );
    assert_eq!(first.idle, BUDGET);
    assert_eq!(first.evicted, (NODES - BUDGET) as u64);
    support::eventually("the evicted connections' sockets to close", || {
        sockets_to_kubelets(sim.kubelet_port) <= BUDGET
    })
    .await;
    assert!(
        sockets_to_kubelets(sim.kubelet_port) > 0,
        "the count sees our sockets"
    );

    // Every later tick scrapes every node, reusing the BUDGET connections held and
    // reconnecting to the rest, each reconnect resuming its TLS session.
    let mut before = first;
    for tick in 2..=3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(scraper.tick().await.succeeded, NODES, "tick {tick}");
        let now = budget_held(&format!("after tick {tick}"));
        let opened = now.opened - before.opened;
        let reused = now.reused - before.reused;
        assert_eq!(reused, BUDGET as u64, "tick {tick}: {now:?}");
        assert_eq!(opened, (NODES - BUDGET) as u64, "tick {tick}: {now:?}");
        assert_eq!(now.idle, BUDGET, "tick {tick}: {now:?}");
        assert_eq!(
            now.resumed - before.resumed,
            opened,
            "tick {tick}: every reconnect resumed its TLS session: {now:?}"
        );
        support::eventually("the evicted connections' sockets to close", || {
            sockets_to_kubelets(sim.kubelet_port) <= BUDGET
        })
        .await;
        before = now;
    }
    assert!(check_against_expected(&sim, c, |_| false).await > 0);
    assert_eq!(c.scrape_stats.totals().requests_failed, 0);
}

/// Warming up (what the scraper does while the pod cache syncs) connects to the kubelets in
/// the first tick's order, as many as the idle budget holds, without a request; the first
/// tick then reuses every one of those connections instead of handshaking inside its window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_up_connects_kubelets_within_the_budget_and_the_first_tick_reuses_them() {
    const NODES: usize = 12;
    const BUDGET: usize = 8;
    let sim = support::KubeSim::start(&["--nodes", "12", "--pods-per-node", "3"]);
    let budget = format!("--kubelet-max-idle-connections={BUDGET}");
    let pipeline = support::Pipeline::start(&sim, &[&budget]).await;
    let c = &pipeline.c;
    assert_eq!(c.cluster.node_count(), NODES);
    let scraper = pipeline.scraper();
    let kubelet_requests = || async {
        sim.admin("GET", "/sim/info").await.json()["kubeletRequests"]
            .as_u64()
            .unwrap()
    };
    let requests_before = kubelet_requests().await;

    assert_eq!(scraper.warm_up().await, BUDGET);
    let warmed = scraper.pool_stats();
    assert_eq!(
        (warmed.opened, warmed.resumed, warmed.reused, warmed.idle),
        (BUDGET as u64, 0, 0, BUDGET),
        "{warmed:?}"
    );
    assert_eq!(sockets_to_kubelets(sim.kubelet_port), BUDGET);
    assert_eq!(kubelet_requests().await, requests_before, "no request sent");
    // With the budget full, warming up again connects to nothing.
    assert_eq!(scraper.warm_up().await, 0);
    assert_eq!(scraper.pool_stats().opened, BUDGET as u64);

    assert_eq!(scraper.tick().await.succeeded, NODES);
    let first = scraper.pool_stats();
    assert_eq!(
        first.reused, BUDGET as u64,
        "every warmed connection served its node's first scrape: {first:?}"
    );
    assert_eq!(
        first.opened - warmed.opened,
        (NODES - BUDGET) as u64,
        "{first:?}"
    );
    assert_eq!(
        kubelet_requests().await - requests_before,
        NODES as u64,
        "one request per node, in the tick"
    );
    // A second tick gives the CPU rates; the numbers are kube-sim's.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(scraper.tick().await.succeeded, NODES);
    assert!(check_against_expected(&sim, c, |_| false).await > 0);
    assert_eq!(c.scrape_stats.totals().requests_failed, 0);
}
