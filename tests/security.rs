//! The security suite: the real `metrics-bridge` binary over TLS, with kube-sim as
//! kube-apiserver (TokenReview, SubjectAccessReview, the extension-apiserver-authentication
//! ConfigMap, the aggregation layer) and real kubectl and OpenSSL as clients.
//!
//! Every case states the exact status code, and every refusal is checked for leaks: no node
//! or pod name and no usage figure in the body. A scripted review server stands in for
//! kube-apiserver only where kube-sim cannot play the part: a policy that changes while the
//! bridge runs, and reviews that fail.

mod support;

use std::collections::HashSet;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt as _;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};

use support::{KUBECTL_1_33, KubeSim};

const NODES: &str = "/apis/metrics.k8s.io/v1beta1/nodes";
const PODS: &str = "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods";
const ALL_PODS: &str = "/apis/metrics.k8s.io/v1beta1/pods";

// ---------------------------------------------------------------------------------------------
// Processes

/// A free port on 127.0.0.1 (bound and released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// A running metrics-bridge; killed on drop.
struct Bridge {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Bridge {
    fn start(sim: &KubeSim, port: u16, name: &str, args: &[String]) -> Bridge {
        let log = sim.path(&format!("{name}.log"));
        let stderr = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_metrics-bridge"))
            .arg(format!(
                "--kubeconfig={}",
                sim.path("metrics-bridge.kubeconfig").display()
            ))
            .args(["--bind-address=127.0.0.1", &format!("--secure-port={port}")])
            .arg(format!("--kubelet-port={}", sim.kubelet_port))
            // The self-signed fallback goes to the test's directory, not the crate's.
            .arg(format!(
                "--cert-dir={}",
                sim.path(&format!("{name}-certs")).display()
            ))
            .args([
                "--kubelet-preferred-address-types=InternalIP",
                "--metric-resolution=2s",
                "--kubelet-request-timeout=1s",
            ])
            .args(args)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn metrics-bridge");
        Bridge { child, port, log }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/readyz` answers 200 to anonymous requests (the caches synced and a
    /// scrape landed).
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("metrics-bridge exited ({status}):\n{}", self.log());
            }
            if let Ok(r) = call(&self.url("/readyz"), &Client::default()).await
                && r.status == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "metrics-bridge never ready:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Certificates

/// A CA that can sign client certificates: minted here, or kube-sim's from its key file.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new(cn: &str) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.self_signed(&key).unwrap();
        Ca {
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// kube-sim's CA from its certificate and key files. Its subject is a lone CN (kube-sim's
    /// `Ca::new`), so an issuer with the same CN and key signs certificates that chain to it.
    fn of_sim(sim: &KubeSim, crt: &str, key: &str) -> Ca {
        let pem = sim.read(crt);
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::from_pem(&sim.read(key)).unwrap();
        Ca {
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A client certificate and key (PEM); `days` is the validity window relative to now.
    fn client(&self, cn: &str, org: Option<&str>, days: (i64, i64)) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        if let Some(o) = org {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, o);
        }
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let now = time_now();
        let at = |unix| {
            x509_parser::time::ASN1Time::from_timestamp(unix)
                .unwrap()
                .to_datetime()
        };
        params.not_before = at(now + days.0 * 86_400);
        params.not_after = at(now + days.1 * 86_400);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A serving certificate for 127.0.0.1 and localhost (ECDSA P-256), PEM cert and key.
fn serving_pair(cn: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

// ---------------------------------------------------------------------------------------------
// The client

/// How a request is made: credentials, headers, and the TLS offer.
#[derive(Default, Clone)]
struct Client {
    token: Option<String>,
    /// PEM certificate and key.
    cert: Option<(String, String)>,
    headers: Vec<(String, String)>,
    /// Only TLS 1.2, with these suites (rustls names), when set.
    tls12_suites: Option<Vec<rustls::CipherSuite>>,
}

impl Client {
    fn token(t: &str) -> Client {
        Client {
            token: Some(t.trim().to_owned()),
            ..Client::default()
        }
    }

    fn cert(pair: (String, String)) -> Client {
        Client {
            cert: Some(pair),
            ..Client::default()
        }
    }

    fn header(mut self, k: &str, v: &str) -> Client {
        self.headers.push((k.to_owned(), v.to_owned()));
        self
    }
}

struct Reply {
    status: u16,
    body: String,
    /// The server's leaf certificate.
    peer: Vec<u8>,
}

/// One GET over a fresh TLS connection (HTTP/1.1), the server certificate not verified (the
/// tests look at it instead).
async fn call(url: &str, c: &Client) -> Result<Reply, String> {
    let mut provider = rustls::crypto::ring::default_provider();
    let versions: &[&rustls::SupportedProtocolVersion] = match &c.tls12_suites {
        Some(suites) => {
            provider
                .cipher_suites
                .retain(|s| suites.contains(&s.suite()));
            &[&rustls::version::TLS12]
        }
        None => rustls::DEFAULT_VERSIONS,
    };
    let provider = Arc::new(provider);
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)));
    let config = match &c.cert {
        Some((cert, key)) => {
            let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| e.to_string())?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| e.to_string())?
        }
        None => builder.with_no_client_auth(),
    };
    let uri: http::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let port = uri.port_u16().unwrap_or(443);
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    let peer = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .unwrap_or_default();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let mut req = http::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header("host", format!("127.0.0.1:{port}"))
        .header("accept", "application/json");
    if let Some(t) = &c.token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in &c.headers {
        req = req.header(k, v);
    }
    let req = req
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let res = send
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = res.status().as_u16();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(Reply {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        peer,
    })
}

#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

// ---------------------------------------------------------------------------------------------
// What must not leak

/// Names and figures a refusal must not reveal: every node and pod name of the cluster.
struct Secrets(HashSet<String>);

impl Secrets {
    async fn of(sim: &KubeSim) -> Secrets {
        let expected = sim.expected().await;
        let mut names = HashSet::new();
        for kind in ["nodes", "pods"] {
            for item in expected[kind].as_array().unwrap() {
                names.insert(item["name"].as_str().unwrap().to_owned());
            }
        }
        assert!(names.len() > 3, "{expected}");
        Secrets(names)
    }

    /// Panics when `body` names any node or pod, or carries usage.
    fn assert_none_in(&self, case: &str, body: &str) {
        assert!(!body.contains("usage"), "{case}: usage leaked: {body}");
        assert!(!body.contains("\"items\""), "{case}: items leaked: {body}");
        for name in &self.0 {
            assert!(
                !body.contains(name.as_str()),
                "{case}: {name} leaked: {body}"
            );
        }
    }
}

/// What a case expects in the body besides its status.
enum Body {
    /// `Unauthorized`, kube-apiserver's 401 Status.
    Unauthorized,
    /// A 403 Status with exactly this message.
    Forbidden(&'static str),
    /// A metrics list with at least one item.
    Metrics,
    /// This text.
    Text(&'static str),
    /// A Status with the case's code (its message is the server's own).
    Failure,
}

struct Case {
    name: &'static str,
    path: &'static str,
    client: Client,
    status: u16,
    body: Body,
}

async fn run_cases(bridge: &Bridge, secrets: &Secrets, cases: Vec<Case>) {
    assert!(!cases.is_empty());
    for case in cases {
        let reply = call(&bridge.url(case.path), &case.client)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(reply.status, case.status, "{}: {}", case.name, reply.body);
        match case.body {
            Body::Metrics => {
                let v: Value = serde_json::from_str(&reply.body).unwrap();
                let items = v["items"].as_array().unwrap();
                assert!(!items.is_empty(), "{}: {}", case.name, reply.body);
                assert!(items[0]["metadata"]["name"].is_string());
                continue;
            }
            Body::Unauthorized => {
                let v: Value = serde_json::from_str(&reply.body)
                    .unwrap_or_else(|e| panic!("{}: {e}: {}", case.name, reply.body));
                assert_eq!(v["message"], "Unauthorized", "{}", case.name);
                assert_eq!(v["reason"], "Unauthorized", "{}", case.name);
                assert_eq!(v["code"], 401, "{}", case.name);
            }
            Body::Forbidden(message) => {
                let v: Value = serde_json::from_str(&reply.body)
                    .unwrap_or_else(|e| panic!("{}: {e}: {}", case.name, reply.body));
                assert_eq!(v["message"], message, "{}", case.name);
                assert_eq!(v["reason"], "Forbidden", "{}", case.name);
                assert_eq!(v["code"], 403, "{}", case.name);
            }
            Body::Text(text) => assert_eq!(reply.body, text, "{}", case.name),
            Body::Failure => {
                let v: Value = serde_json::from_str(&reply.body)
                    .unwrap_or_else(|e| panic!("{}: {e}: {}", case.name, reply.body));
                assert_eq!(v["kind"], "Status", "{}", case.name);
                assert_eq!(v["code"], case.status, "{}", case.name);
            }
        }
        secrets.assert_none_in(case.name, &reply.body);
    }
}

// ---------------------------------------------------------------------------------------------
// The suite against kube-sim

/// `--tls-cipher-suites` for the main bridge: TLS 1.2 with AES-128-GCM only (TLS 1.3 suites
/// are not configurable, as in Go).
const ALLOWED_SUITE: &str = "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegated_authn_and_authz_against_kube_sim() {
    let port = free_port();
    let sim = KubeSim::start(&[
        "--nodes",
        "2",
        "--pods-per-node",
        "3",
        "--aggregate",
        &format!("metrics.k8s.io=https://127.0.0.1:{port}"),
        "--aggregator-probe-interval",
        "1s",
    ]);
    let tls_dir = sim.path("serving");
    std::fs::create_dir_all(&tls_dir).unwrap();
    let (crt, key) = serving_pair("serving-1");
    let (crt_path, key_path) = (tls_dir.join("tls.crt"), tls_dir.join("tls.key"));
    std::fs::write(&crt_path, &crt).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    let mut bridge = Bridge::start(
        &sim,
        port,
        "bridge",
        &[
            format!("--tls-cert-file={}", crt_path.display()),
            format!("--tls-private-key-file={}", key_path.display()),
            "--tls-min-version=VersionTLS12".into(),
            format!("--tls-cipher-suites={ALLOWED_SUITE}"),
        ],
    );
    bridge.wait_ready().await;
    let secrets = Secrets::of(&sim).await;

    let front_proxy = Ca::of_sim(&sim, "front-proxy-ca.crt", "front-proxy-ca.key");
    let cluster_ca = Ca::of_sim(&sim, "ca.crt", "ca.key");
    let proxy_pair = (
        sim.read("front-proxy-client.crt"),
        sim.read("front-proxy-client.key"),
    );
    let proxied = |user: &str, group: &str| {
        Client::cert(proxy_pair.clone())
            .header("X-Remote-User", user)
            .header("X-Remote-Group", group)
    };
    let forged = |pair: (String, String)| {
        Client::cert(pair)
            .header("X-Remote-User", "admin")
            .header("X-Remote-Group", "system:masters")
    };
    let viewer = sim.token("viewer");
    let hpa = sim.token("hpa");
    let own = sim.token("metrics-bridge");

    use Body::*;
    let cases = vec![
        Case {
            name: "no certificate and no token",
            path: NODES,
            client: Client::default(),
            status: 401,
            body: Unauthorized,
        },
        Case {
            name: "forged X-Remote-User over plain TLS",
            path: NODES,
            client: Client::default()
                .header("X-Remote-User", "admin")
                .header("X-Remote-Group", "system:masters"),
            status: 401,
            body: Unauthorized,
        },
        Case {
            name: "front-proxy certificate from the wrong CA",
            path: NODES,
            client: forged(Ca::new("front-proxy-ca").client("front-proxy-client", None, (-1, 1))),
            status: 401,
            body: Unauthorized,
        },
        Case {
            name: "CN not in requestheader-allowed-names",
            path: NODES,
            client: forged(front_proxy.client("not-the-aggregator", None, (-1, 1))),
            status: 401,
            body: Unauthorized,
        },
        Case {
            name: "expired front-proxy certificate",
            path: NODES,
            client: forged(front_proxy.client("front-proxy-client", None, (-10, -1))),
            status: 401,
            body: Unauthorized,
        },
        Case {
            name: "front-proxy certificate not valid yet",
            path: NODES,
            client: forged(front_proxy.client("front-proxy-client", None, (1, 10))),
            status: 401,
            body: Unauthorized,
        },
        Case {
            name: "front-proxy certificate without a user header",
            path: NODES,
            client: Client::cert(proxy_pair.clone()).header("X-Remote-Group", "system:masters"),
            status: 401,
            body: Unauthorized,
        },
        Case {
            name: "front proxy as an admin",
            path: NODES,
            client: proxied("admin", "system:masters"),
            status: 200,
            body: Metrics,
        },
        Case {
            name: "front proxy as the viewer, on nodes",
            path: NODES,
            client: proxied("viewer", "system:authenticated"),
            status: 403,
            body: Forbidden(
                r#"nodes.metrics.k8s.io is forbidden: User "viewer" cannot list resource "nodes" in API group "metrics.k8s.io" at the cluster scope"#,
            ),
        },
        Case {
            name: "front proxy as the viewer, on pods",
            path: PODS,
            client: proxied("viewer", "system:authenticated"),
            status: 200,
            body: Metrics,
        },
        Case {
            name: "viewer token on nodes",
            path: NODES,
            client: Client::token(&viewer),
            status: 403,
            body: Forbidden(
                r#"nodes.metrics.k8s.io is forbidden: User "viewer" cannot list resource "nodes" in API group "metrics.k8s.io" at the cluster scope"#,
            ),
        },
        Case {
            name: "viewer token on pods",
            path: PODS,
            client: Client::token(&viewer),
            status: 200,
            body: Metrics,
        },
        Case {
            name: "viewer token on the metrics of all namespaces",
            path: ALL_PODS,
            client: Client::token(&viewer),
            status: 200,
            body: Metrics,
        },
        Case {
            name: "HPA token on pods",
            path: PODS,
            client: Client::token(&hpa),
            status: 200,
            body: Metrics,
        },
        Case {
            name: "metrics-bridge's own token on nodes",
            path: NODES,
            client: Client::token(&own),
            status: 403,
            body: Forbidden(
                r#"nodes.metrics.k8s.io is forbidden: User "system:serviceaccount:kube-system:metrics-bridge" cannot list resource "nodes" in API group "metrics.k8s.io" at the cluster scope"#,
            ),
        },
        Case {
            name: "unknown token",
            path: PODS,
            client: Client::token("not-a-token-anyone-issued"),
            status: 401,
            body: Unauthorized,
        },
        Case {
            name: "unknown token on an always-allowed path",
            path: "/livez",
            client: Client::token("not-a-token-anyone-issued"),
            status: 401,
            body: Unauthorized,
        },
        Case {
            name: "Basic credentials are no credential",
            path: PODS,
            client: Client::default().header("Authorization", "Basic YWRtaW46YWRtaW4="),
            status: 401,
            body: Unauthorized,
        },
        Case {
            name: "admin client certificate (client CA from the ConfigMap)",
            path: NODES,
            client: Client::cert((sim.read("admin.crt"), sim.read("admin.key"))),
            status: 200,
            body: Metrics,
        },
        Case {
            name: "client certificate of the viewer, on nodes",
            path: NODES,
            client: Client::cert(cluster_ca.client("viewer", None, (-1, 1))),
            status: 403,
            body: Forbidden(
                r#"nodes.metrics.k8s.io is forbidden: User "viewer" cannot list resource "nodes" in API group "metrics.k8s.io" at the cluster scope"#,
            ),
        },
        Case {
            name: "client certificate of the viewer, on pods",
            path: PODS,
            client: Client::cert(cluster_ca.client("viewer", None, (-1, 1))),
            status: 200,
            body: Metrics,
        },
        Case {
            name: "expired admin client certificate",
            path: NODES,
            client: Client::cert(cluster_ca.client(
                "kubernetes-admin",
                Some("system:masters"),
                (-30, -1),
            )),
            status: 401,
            body: Unauthorized,
        },
        Case {
            name: "client certificate as the front proxy's CN does not make headers count",
            path: NODES,
            client: forged(cluster_ca.client("front-proxy-client", None, (-1, 1))),
            status: 403,
            body: Forbidden(
                r#"nodes.metrics.k8s.io is forbidden: User "front-proxy-client" cannot list resource "nodes" in API group "metrics.k8s.io" at the cluster scope"#,
            ),
        },
        Case {
            name: "/livez anonymous",
            path: "/livez",
            client: Client::default(),
            status: 200,
            body: Text("ok"),
        },
        Case {
            name: "/readyz anonymous",
            path: "/readyz",
            client: Client::default(),
            status: 200,
            body: Text("ok"),
        },
        Case {
            name: "/metrics anonymous",
            path: "/metrics",
            client: Client::default(),
            status: 401,
            body: Unauthorized,
        },
        Case {
            name: "/metrics as the viewer",
            path: "/metrics",
            client: Client::token(&viewer),
            status: 403,
            body: Forbidden(r#"forbidden: User "viewer" cannot get path "/metrics""#),
        },
        Case {
            name: "an unknown path, anonymous",
            path: "/debug/pprof/",
            client: Client::default(),
            status: 401,
            body: Unauthorized,
        },
        Case {
            name: "discovery, anonymous",
            path: "/apis/metrics.k8s.io/v1beta1",
            client: Client::default(),
            status: 401,
            body: Unauthorized,
        },
    ];
    run_cases(&bridge, &secrets, cases).await;

    // TLS: 1.1 refused, a suite outside --tls-cipher-suites refused, the allowed one served.
    let tls11 = openssl_client(port, &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]);
    // The refusal is the server's: OpenSSL offered TLS 1.1 and read the server's alert
    // (rustls answers a hello without TLS 1.2 or 1.3 with handshake_failure).
    assert!(
        tls11.contains("alert handshake failure") || tls11.contains("alert protocol version"),
        "TLS 1.1 must be refused by the server: {tls11}"
    );
    assert!(tls11.contains("Cipher is (NONE)"), "{tls11}");
    let tls12 = openssl_client(port, &["-tls1_2"]);
    assert!(
        tls12.contains("Cipher is ECDHE-ECDSA-AES128-GCM-SHA256"),
        "the same client with TLS 1.2 gets the allowed suite: {tls12}"
    );
    let only = |suite| Client {
        tls12_suites: Some(vec![suite]),
        ..Client::default()
    };
    let refused = call(
        &bridge.url("/livez"),
        &only(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
    )
    .await;
    assert!(
        matches!(&refused, Err(e) if e.starts_with("tls:")),
        "a disallowed suite must fail the handshake: {:?}",
        refused.map(|r| r.status)
    );
    let allowed = call(
        &bridge.url("/livez"),
        &only(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
    )
    .await
    .unwrap();
    assert_eq!(allowed.status, 200);

    // The serving certificate rotated on disk is served afterwards (key first, then the
    // certificate, as a careless rotation would do; both renamed into place).
    let first = call(&bridge.url("/livez"), &Client::default())
        .await
        .unwrap();
    assert_eq!(first.peer, pem_der(&crt));
    let (crt2, key2) = serving_pair("serving-2");
    replace(&key_path, &key2);
    replace(&crt_path, &crt2);
    let want = pem_der(&crt2);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = call(&bridge.url("/livez"), &Client::default())
            .await
            .unwrap();
        if r.peer == want {
            assert_eq!(r.status, 200);
            break;
        }
        assert_eq!(r.peer, pem_der(&crt), "only the old or the new certificate");
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Through kube-sim's aggregation layer with real kubectl: the admin sees nodes, the
    // viewer is denied with kube-apiserver's message, and sees pods.
    let top = sim.kubectl(KUBECTL_1_33, "kubeconfig", &["top", "node"]);
    let out = String::from_utf8_lossy(&top.stdout);
    assert!(
        top.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&top.stderr)
    );
    assert_eq!(out.lines().count(), 3, "{out}");
    let top = sim.kubectl(KUBECTL_1_33, "viewer.kubeconfig", &["top", "node"]);
    assert!(!top.status.success());
    let err = String::from_utf8_lossy(&top.stderr);
    assert_eq!(
        err.trim(),
        r#"Error from server (Forbidden): nodes.metrics.k8s.io is forbidden: User "viewer" cannot list resource "nodes" in API group "metrics.k8s.io" at the cluster scope"#
    );
    secrets.assert_none_in(
        "kubectl top node as the viewer",
        &String::from_utf8_lossy(&top.stdout),
    );
    let top = sim.kubectl(
        KUBECTL_1_33,
        "viewer.kubeconfig",
        &["top", "pod", "-n", "default", "--no-headers"],
    );
    assert!(
        top.status.success(),
        "{}",
        String::from_utf8_lossy(&top.stderr)
    );

    // A ConfigMap CA rotation: the old front-proxy certificate stops working and the new one
    // works, without a restart.
    let old_proxy = proxy_pair.clone();
    let r = sim.admin("POST", "/sim/rotate-ca?ca=front-proxy").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let new_proxy = (
        sim.read("front-proxy-client.crt"),
        sim.read("front-proxy-client.key"),
    );
    assert_ne!(new_proxy.0, old_proxy.0);
    let as_admin = |pair: (String, String)| {
        Client::cert(pair)
            .header("X-Remote-User", "admin")
            .header("X-Remote-Group", "system:masters")
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let old = call(&bridge.url(NODES), &as_admin(old_proxy.clone()))
            .await
            .unwrap();
        let new = call(&bridge.url(NODES), &as_admin(new_proxy.clone()))
            .await
            .unwrap();
        if old.status == 401 && new.status == 200 {
            secrets.assert_none_in("the rotated-out front-proxy certificate", &old.body);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rotation not honoured: old {} new {}\n{}",
            old.status,
            new.status,
            bridge.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // kubectl through the aggregator, which now presents the new certificate.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let top = sim.kubectl(KUBECTL_1_33, "kubeconfig", &["top", "node", "--no-headers"]);
        if top.status.success() && String::from_utf8_lossy(&top.stdout).lines().count() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "kubectl top after the rotation: {}",
            String::from_utf8_lossy(&top.stderr)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(!bridge.log().contains(" ERROR "), "{}", bridge.log());
}

fn pem_der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec()
}

/// Writes `content` next to `path` and renames it into place.
fn replace(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `openssl s_client` against the port with `args`; its stdout and stderr together.
fn openssl_client(port: u16, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ---------------------------------------------------------------------------------------------
// A review server whose answers the test changes

/// What the scripted review server answers.
#[derive(Default)]
struct Script {
    /// Answer every review with this HTTP status instead.
    failing: Option<u16>,
    /// Users allowed to list nodes.
    may_list_nodes: HashSet<String>,
}

struct Reviews {
    script: Mutex<Script>,
    token_reviews: AtomicUsize,
    access_reviews: AtomicUsize,
}

async fn review(
    state: Arc<Reviews>,
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<http_body_util::Full<bytes::Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (failing, may) = {
        let s = state.script.lock().unwrap();
        (s.failing, s.may_list_nodes.clone())
    };
    let status = if path.ends_with("/tokenreviews") {
        state.token_reviews.fetch_add(1, Ordering::SeqCst);
        review["status"] = if review["spec"]["token"] == "viewer-token" {
            json!({"authenticated": true, "user": {"username": "viewer", "groups": ["system:authenticated"]}})
        } else {
            json!({"authenticated": false})
        };
        201
    } else if path.ends_with("/subjectaccessreviews") {
        state.access_reviews.fetch_add(1, Ordering::SeqCst);
        let user = review["spec"]["user"].as_str().unwrap_or("");
        let attrs = &review["spec"]["resourceAttributes"];
        let allowed =
            (attrs["resource"] == "pods") || (attrs["resource"] == "nodes" && may.contains(user));
        review["status"] = json!({"allowed": allowed});
        201
    } else {
        review = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404});
        404
    };
    let (status, review) = match failing {
        Some(code) => (
            code,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "scripted failure", "code": code}),
        ),
        None => (status, review),
    };
    Ok(http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            review.to_string(),
        )))
        .unwrap())
}

/// Serves reviews over HTTPS on a free port; returns the port.
async fn serve_reviews(state: Arc<Reviews>) -> u16 {
    let (crt, key) = serving_pair("reviews");
    let certs = vec![CertificateDer::from_pem_slice(crt.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, state) = (acceptor.clone(), Arc::clone(&state));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(move |req| review(Arc::clone(&state), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    port
}

fn write_kubeconfig(path: &Path, port: u16) {
    std::fs::write(
        path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: reviews\n  cluster:\n    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\nusers:\n- name: reviewer\n  user:\n    token: reviewer\ncontexts:\n- name: reviews\n  context:\n    cluster: reviews\n    user: reviewer\ncurrent-context: reviews\n"
        ),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_decisions_and_failing_reviews() {
    let sim = KubeSim::start(&["--nodes", "2", "--pods-per-node", "2"]);
    let reviews = Arc::new(Reviews {
        script: Mutex::default(),
        token_reviews: AtomicUsize::new(0),
        access_reviews: AtomicUsize::new(0),
    });
    let review_port = serve_reviews(Arc::clone(&reviews)).await;
    let kubeconfig = sim.path("reviews.kubeconfig");
    write_kubeconfig(&kubeconfig, review_port);
    const DENIAL_TTL: Duration = Duration::from_secs(8);
    let mut bridge = Bridge::start(
        &sim,
        free_port(),
        "bridge-reviews",
        &[
            format!("--authentication-kubeconfig={}", kubeconfig.display()),
            format!("--authorization-kubeconfig={}", kubeconfig.display()),
            // The CAs come from kube-sim's files; the review server has no ConfigMap.
            "--authentication-skip-lookup".into(),
            format!("--client-ca-file={}", sim.path("ca.crt").display()),
            format!(
                "--requestheader-client-ca-file={}",
                sim.path("front-proxy-ca.crt").display()
            ),
            "--requestheader-allowed-names=front-proxy-client".into(),
            format!(
                "--authorization-webhook-cache-unauthorized-ttl={}s",
                DENIAL_TTL.as_secs()
            ),
        ],
    );
    bridge.wait_ready().await;
    let secrets = Secrets::of(&sim).await;
    let viewer = Client::token("viewer-token");
    use Body::*;

    run_cases(
        &bridge,
        &secrets,
        vec![
            Case {
                name: "scripted: viewer on pods",
                path: PODS,
                client: viewer.clone(),
                status: 200,
                body: Metrics,
            },
            Case {
                name: "scripted: an unknown token",
                path: PODS,
                client: Client::token("nobody"),
                status: 401,
                body: Unauthorized,
            },
            Case {
                name: "scripted: the front proxy, flags instead of the ConfigMap",
                path: NODES,
                client: Client::cert((
                    sim.read("front-proxy-client.crt"),
                    sim.read("front-proxy-client.key"),
                ))
                .header("X-Remote-User", "admin")
                .header("X-Remote-Group", "system:masters"),
                status: 200,
                body: Metrics,
            },
        ],
    )
    .await;

    // The denial cache: a grant within the TTL does not flip the answer; after it, it does.
    let denied = r#"nodes.metrics.k8s.io is forbidden: User "viewer" cannot list resource "nodes" in API group "metrics.k8s.io" at the cluster scope"#;
    let before = reviews.access_reviews.load(Ordering::SeqCst);
    let denial = || Case {
        name: "scripted: viewer on nodes, denied",
        path: NODES,
        client: viewer.clone(),
        status: 403,
        body: Body::Forbidden(denied),
    };
    let denied_at = Instant::now();
    run_cases(&bridge, &secrets, vec![denial()]).await;
    reviews
        .script
        .lock()
        .unwrap()
        .may_list_nodes
        .insert("viewer".into());
    run_cases(&bridge, &secrets, vec![denial(), denial()]).await;
    if denied_at.elapsed() < DENIAL_TTL {
        assert_eq!(
            reviews.access_reviews.load(Ordering::SeqCst),
            before + 1,
            "the denial was answered from the cache"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = call(&bridge.url(NODES), &viewer).await.unwrap();
        if r.status == 200 {
            assert!(
                denied_at.elapsed() >= DENIAL_TTL,
                "the denial was dropped before its TTL"
            );
            break;
        }
        assert_eq!(r.status, 403, "{}", r.body);
        assert!(Instant::now() < deadline, "the grant never took effect");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Reviews that fail: TokenReview → 401, SubjectAccessReview → 500, never 200.
    reviews.script.lock().unwrap().failing = Some(503);
    run_cases(
        &bridge,
        &secrets,
        vec![
            Case {
                name: "scripted: TokenReview unavailable",
                path: PODS,
                client: Client::token("a-token-not-cached"),
                status: 401,
                body: Body::Unauthorized,
            },
            Case {
                name: "scripted: SubjectAccessReview unavailable",
                path: NODES,
                client: Client::cert(Ca::of_sim(&sim, "ca.crt", "ca.key").client(
                    "jane",
                    None,
                    (-1, 1),
                )),
                status: 500,
                body: Body::Failure,
            },
        ],
    )
    .await;
}
