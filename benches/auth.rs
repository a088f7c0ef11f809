//! The cost the authentication and authorization guard adds to every request once its caches
//! are warm (the steady state of the aggregator's and the HPA's traffic, over long-lived
//! connections): a front-proxy request as `system:masters` (certificate verdict kept by the
//! connection, no review), the same over a new connection per request (verdict from the
//! shared cache), as a user whose `SubjectAccessReview` is cached, a bearer token with both
//! reviews cached, and an anonymous `/livez`. The handler is trivial, so the figures are the
//! guard's own, in µs per request.

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use http_body_util::BodyExt as _;
use metrics_bridge::auth::Auth;
use metrics_bridge::https::ConnInfo;
use metrics_bridge::options::Options;
use rustls_pki_types::CertificateDer;
use serde_json::{Value, json};
use tower::ServiceExt as _;

const NODES: &str = "/apis/metrics.k8s.io/v1beta1/nodes";
const PODS: &str = "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods?labelSelector=app%3Dweb";

/// kube-apiserver's reviews: one known token, everyone may read metrics.
async fn reviews(
    req: http::Request<kube::client::Body>,
) -> Result<http::Response<http_body_util::Full<bytes::Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    review["status"] = if path.ends_with("/tokenreviews") {
        json!({"authenticated": true, "user": {"username": "system:serviceaccount:kube-system:horizontal-pod-autoscaler", "groups": ["system:serviceaccounts"]}})
    } else {
        json!({"allowed": true})
    };
    Ok(http::Response::builder()
        .status(201)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            review.to_string(),
        )))
        .unwrap())
}

fn ca(cn: &str) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let pem = params.self_signed(&key).unwrap().pem();
    (pem, rcgen::Issuer::new(params, key))
}

fn client_cert(
    issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
    cn: &str,
) -> Arc<[CertificateDer<'static>]> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    Arc::from(vec![params.signed_by(&key, issuer).unwrap().der().clone()])
}

/// Where a benchmark's requests come from.
enum Connection {
    /// One long-lived connection, as kube-apiserver's to an aggregated server.
    Open(ConnInfo),
    /// A new connection with this certificate chain for every request.
    New(Option<Arc<[CertificateDer<'static>]>>),
}

/// A benchmark case: name, router, path, the connection, headers.
type Case<'a> = (
    &'static str,
    &'a Router,
    &'static str,
    Connection,
    &'static [(&'static str, &'static str)],
);

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (front_proxy_pem, front_proxy) = ca("front-proxy-ca");
    let (client_pem, _) = ca("client-ca");
    let fp_path = dir.path().join("front-proxy-ca.crt");
    let client_path = dir.path().join("client-ca.crt");
    std::fs::write(&fp_path, front_proxy_pem).unwrap();
    std::fs::write(&client_path, client_pem).unwrap();
    let mut options = Options::default();
    options.authentication.skip_lookup = true;
    options.authentication.requestheader_client_ca_file = Some(fp_path);
    options.authentication.client_ca_file = Some(client_path);
    options.authentication.requestheader_allowed_names = vec!["front-proxy-client".into()];
    let auth = rt.block_on(async {
        let client = kube::Client::new(tower::service_fn(reviews), "default");
        Auth::start(
            &options.authentication,
            &options.authorization,
            client.clone(),
            client,
        )
        .await
        .unwrap()
    });
    let bare = Router::new()
        .route(NODES, get(|| async { "ok" }))
        .route(
            "/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods",
            get(|| async { "ok" }),
        )
        .route("/livez", get(|| async { "ok" }));
    let guarded = auth.protect(bare.clone());
    let proxy = client_cert(&front_proxy, "front-proxy-client");
    let connection = |chain: Option<Arc<[CertificateDer<'static>]>>| ConnInfo {
        remote_addr: "127.0.0.1:40000".parse().unwrap(),
        local_addr: "127.0.0.1:443".parse().unwrap(),
        peer_certificates: chain,
        server_name: None,
        cert_verdict: Arc::default(),
    };
    let request = |path: &str, conn: &Connection, headers: &[(&str, &str)]| {
        let mut req = Request::get(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut req = req.body(Body::empty()).unwrap();
        req.extensions_mut().insert(match conn {
            Connection::Open(info) => info.clone(),
            Connection::New(chain) => connection(chain.clone()),
        });
        req
    };
    let cases: [Case; 6] = [
        (
            "baseline: the same request without the guard",
            &bare,
            PODS,
            Connection::Open(connection(Some(Arc::clone(&proxy)))),
            &[("x-remote-user", "viewer")],
        ),
        (
            "front proxy, system:masters",
            &guarded,
            NODES,
            Connection::Open(connection(Some(Arc::clone(&proxy)))),
            &[
                ("x-remote-user", "admin"),
                ("x-remote-group", "system:masters"),
            ],
        ),
        (
            "front proxy, system:masters, a new connection per request",
            &guarded,
            NODES,
            Connection::New(Some(Arc::clone(&proxy))),
            &[
                ("x-remote-user", "admin"),
                ("x-remote-group", "system:masters"),
            ],
        ),
        (
            "front proxy, cached SubjectAccessReview",
            &guarded,
            PODS,
            Connection::Open(connection(Some(Arc::clone(&proxy)))),
            &[
                ("x-remote-user", "viewer"),
                ("x-remote-group", "team-a"),
                ("x-remote-extra-scopes", "view"),
            ],
        ),
        (
            "bearer token, cached TokenReview and SubjectAccessReview",
            &guarded,
            PODS,
            Connection::Open(connection(None)),
            &[("authorization", "Bearer hpa-token")],
        ),
        (
            "anonymous /livez",
            &guarded,
            "/livez",
            Connection::Open(connection(None)),
            &[],
        ),
    ];
    let mut group = c.benchmark_group("auth guard");
    for (name, app, path, conn, headers) in cases {
        // Warm the caches, and check the guard lets the request through.
        let status = rt.block_on(async {
            let res = app
                .clone()
                .oneshot(request(path, &conn, headers))
                .await
                .unwrap();
            res.status().as_u16()
        });
        assert_eq!(status, 200, "{name}");
        group.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let res = app
                        .clone()
                        .oneshot(request(path, &conn, headers))
                        .await
                        .unwrap();
                    black_box(res.status())
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
