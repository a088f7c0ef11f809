//! The guard end to end in process: certificates minted here, a scripted kube-apiserver
//! behind the kube client (TokenReview, SubjectAccessReview, the ConfigMap), requests through
//! the real middleware. The TLS-level behaviour and the real kube-sim peer are in
//! `tests/security.rs`.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use http_body_util::BodyExt as _;
use rustls_pki_types::CertificateDer;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::*;
use crate::options::Options;

// ---------------------------------------------------------------------------------------------
// Certificates

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

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A client certificate valid from and until the given numbers of days from now
    /// (`None`: rcgen's default window, decades around now).
    fn client(
        &self,
        cn: &str,
        orgs: &[&str],
        valid_days: Option<(i64, i64)>,
    ) -> Arc<[CertificateDer<'static>]> {
        self.client_with(
            cn,
            orgs,
            valid_days.map(|(from, until)| (from * 86400, until * 86400)),
            &[rcgen::ExtendedKeyUsagePurpose::ClientAuth],
        )
    }

    /// A certificate with the given extended key usages, valid from and until the given
    /// numbers of seconds from now.
    fn client_with(
        &self,
        cn: &str,
        orgs: &[&str],
        valid_secs: Option<(i64, i64)>,
        eku: &[rcgen::ExtendedKeyUsagePurpose],
    ) -> Arc<[CertificateDer<'static>]> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        if !cn.is_empty() {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
        }
        // rcgen keeps one value per attribute type, so a second O goes in under the same OID
        // (2.5.4.10) spelled as a custom type: the certificate then has two.
        assert!(orgs.len() <= 2, "at most two organizations");
        for (i, o) in orgs.iter().enumerate() {
            let ty = if i == 0 {
                rcgen::DnType::OrganizationName
            } else {
                rcgen::DnType::CustomDnType(vec![2, 5, 4, 10])
            };
            params.distinguished_name.push(ty, *o);
        }
        params.extended_key_usages = eku.to_vec();
        if let Some((from, until)) = valid_secs {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            params.not_before = x509_parser::time::ASN1Time::from_timestamp(now + from)
                .unwrap()
                .to_datetime();
            params.not_after = x509_parser::time::ASN1Time::from_timestamp(now + until)
                .unwrap()
                .to_datetime();
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Arc::from(vec![cert.der().clone()])
    }
}

// ---------------------------------------------------------------------------------------------
// A scripted kube-apiserver

#[derive(Default)]
struct ApiServer {
    /// token → TokenReview status
    tokens: HashMap<String, Value>,
    /// user → allowed (user, verb/path) pairs; everything else is denied with `deny_reason`.
    grants: Vec<(String, String)>,
    deny_reason: String,
    /// Answer reviews with this HTTP status instead.
    failing: Option<u16>,
    configmap: Option<BTreeMap<String, String>>,
    token_reviews: usize,
    access_reviews: Vec<Value>,
}

type Shared = Arc<Mutex<ApiServer>>;

fn respond(code: u16, body: Value) -> http::Response<http_body_util::Full<bytes::Bytes>> {
    http::Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .unwrap()
}

fn status(code: u16, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "code": code})
}

/// What a review is about, in one word: the verb and resource, or the verb and path.
fn what(spec: &Value) -> String {
    if let Some(r) = spec.get("resourceAttributes") {
        format!(
            "{} {}",
            r["verb"].as_str().unwrap_or(""),
            r["resource"].as_str().unwrap_or("")
        )
    } else {
        let n = &spec["nonResourceAttributes"];
        format!(
            "{} {}",
            n["verb"].as_str().unwrap_or(""),
            n["path"].as_str().unwrap_or("")
        )
    }
}

async fn serve(
    api: Shared,
    req: http::Request<kube::client::Body>,
) -> Result<http::Response<http_body_util::Full<bytes::Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut api = api.lock().unwrap();
    if path.ends_with("/configmaps/extension-apiserver-authentication") {
        return Ok(match &api.configmap {
            Some(data) => respond(
                200,
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system"}, "data": data}),
            ),
            None => respond(404, status(404, "not found")),
        });
    }
    let mut review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Some(code) = api.failing {
        if path.contains("tokenreviews") {
            api.token_reviews += 1;
        } else {
            api.access_reviews.push(review["spec"].clone());
        }
        return Ok(respond(code, status(code, "scripted failure")));
    }
    if path == "/apis/authentication.k8s.io/v1/tokenreviews" {
        api.token_reviews += 1;
        let token = review["spec"]["token"].as_str().unwrap_or("").to_owned();
        review["status"] = api
            .tokens
            .get(&token)
            .cloned()
            .unwrap_or(json!({"user": {}}));
        return Ok(respond(201, review));
    }
    if path == "/apis/authorization.k8s.io/v1/subjectaccessreviews" {
        let spec = review["spec"].clone();
        api.access_reviews.push(spec.clone());
        let user = spec["user"].as_str().unwrap_or("").to_owned();
        let allowed = api
            .grants
            .iter()
            .any(|(u, w)| *u == user && *w == what(&spec));
        review["status"] = if allowed {
            json!({"allowed": true, "reason": "granted"})
        } else {
            json!({"allowed": false, "reason": api.deny_reason})
        };
        return Ok(respond(201, review));
    }
    Ok(respond(
        404,
        status(404, "the server could not find the requested resource"),
    ))
}

fn client(api: &Shared) -> kube::Client {
    let api = Arc::clone(api);
    kube::Client::new(
        tower::service_fn(move |req| serve(Arc::clone(&api), req)),
        "default",
    )
}

const FAST: RetryPolicy = RetryPolicy {
    initial_delay: Duration::from_millis(1),
    timeout: Duration::from_secs(5),
};

fn configmap(front_proxy: &Ca, client_ca: &Ca, allowed: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("client-ca-file".into(), client_ca.pem()),
        ("requestheader-client-ca-file".into(), front_proxy.pem()),
        ("requestheader-allowed-names".into(), allowed.into()),
        (
            "requestheader-username-headers".into(),
            r#"["X-Remote-User"]"#.into(),
        ),
        (
            "requestheader-group-headers".into(),
            r#"["X-Remote-Group"]"#.into(),
        ),
        (
            "requestheader-extra-headers-prefix".into(),
            r#"["X-Remote-Extra-"]"#.into(),
        ),
    ])
}

/// What the handler saw: the user, their groups, and how many identity headers were left.
type Seen = (String, Vec<String>, usize);

struct Fixture {
    api: Shared,
    auth: Arc<Auth>,
    app: Router,
    front_proxy: Ca,
    client_ca: Ca,
    /// What the handler saw: the user and the identity headers left on the request.
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn fixture_with(tweak: impl FnOnce(&mut Options)) -> Fixture {
    let front_proxy = Ca::new("front-proxy-ca");
    let client_ca = Ca::new("client-ca");
    let api: Shared = Arc::default();
    {
        let mut a = api.lock().unwrap();
        a.configmap = Some(configmap(
            &front_proxy,
            &client_ca,
            r#"["front-proxy-client"]"#,
        ));
        a.tokens.insert(
            "viewer-token".into(),
            json!({"authenticated": true, "user": {"username": "viewer", "groups": ["system:authenticated"]}}),
        );
        a.tokens.insert(
            "error-token".into(),
            json!({"authenticated": false, "error": "token expired"}),
        );
        a.grants.push(("viewer".into(), "list pods".into()));
    }
    let mut options = Options::default();
    tweak(&mut options);
    let auth = Auth::start_with(
        &options.authentication,
        &options.authorization,
        client(&api),
        client(&api),
        FAST,
    )
    .await
    .unwrap();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let record = Arc::clone(&seen);
    let handler = move |axum::Extension(user): axum::Extension<Arc<User>>, headers: HeaderMap| {
        let record = Arc::clone(&record);
        async move {
            let identity = headers
                .keys()
                .filter(|k| k.as_str().starts_with("x-remote") || *k == http::header::AUTHORIZATION)
                .count();
            record
                .lock()
                .unwrap()
                .push((user.name.clone(), user.groups.clone(), identity));
            "metrics data"
        }
    };
    let app = Router::new()
        .route("/livez", get(handler.clone()))
        .route("/metrics", get(handler.clone()))
        .route("/apis/metrics.k8s.io/v1beta1/nodes", get(handler.clone()))
        .route(
            "/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods",
            get(handler),
        )
        .fallback(|| async { Status::path_not_found().into_response() });
    let app = auth.protect(app);
    Fixture {
        api,
        auth,
        app,
        front_proxy,
        client_ca,
        seen,
    }
}

async fn fixture() -> Fixture {
    fixture_with(|_| {}).await
}

fn conn(chain: Option<Arc<[CertificateDer<'static>]>>) -> ConnInfo {
    ConnInfo {
        remote_addr: "127.0.0.1:50000".parse().unwrap(),
        local_addr: "127.0.0.1:443".parse().unwrap(),
        peer_certificates: chain,
        server_name: None,
        cert_verdict: Arc::default(),
    }
}

impl Fixture {
    async fn call(
        &self,
        path: &str,
        chain: Option<Arc<[CertificateDer<'static>]>>,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        self.call_on(&conn(chain), path, headers).await
    }

    /// A request on the connection `conn` (whose clones share its per-connection state).
    async fn call_on(
        &self,
        conn: &ConnInfo,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let mut req = http::Request::get(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut req = req.body(axum::body::Body::empty()).unwrap();
        req.extensions_mut().insert(conn.clone());
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn front_proxy_client(&self) -> Arc<[CertificateDer<'static>]> {
        self.front_proxy.client("front-proxy-client", &[], None)
    }

    fn last_seen(&self) -> (String, Vec<String>, usize) {
        self.seen.lock().unwrap().last().cloned().unwrap()
    }

    fn access_reviews(&self) -> Vec<Value> {
        self.api.lock().unwrap().access_reviews.clone()
    }
}

const PODS: &str = "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods";
const NODES: &str = "/apis/metrics.k8s.io/v1beta1/nodes";

fn unauthorized(reply: &(u16, String)) {
    assert_eq!(reply.0, 401, "{}", reply.1);
    let body: Value = serde_json::from_str(&reply.1).unwrap();
    assert_eq!(body["message"], "Unauthorized");
    assert!(!reply.1.contains("metrics data"));
}

// ---------------------------------------------------------------------------------------------
// Authentication

#[tokio::test]
async fn front_proxy_identity_comes_from_the_headers_and_is_reviewed() {
    let f = fixture().await;
    let reply = f
        .call(
            PODS,
            Some(f.front_proxy_client()),
            &[
                ("X-Remote-User", "viewer"),
                ("X-Remote-Group", "team-a"),
                ("X-Remote-Extra-Scopes", "view"),
            ],
        )
        .await;
    assert_eq!(reply, (200, "metrics data".into()));
    assert_eq!(
        f.last_seen(),
        (
            "viewer".into(),
            vec!["team-a".into(), AUTHENTICATED.into()],
            0
        ),
        "identity headers are gone before the handler"
    );
    let reviews = f.access_reviews();
    assert_eq!(reviews.len(), 1);
    assert_eq!(reviews[0]["user"], "viewer");
    assert_eq!(reviews[0]["extra"], json!({"scopes": ["view"]}));
    assert_eq!(reviews[0]["resourceAttributes"]["namespace"], "default");
}

#[tokio::test]
async fn front_proxy_certificates_are_refused_unless_all_checks_pass() {
    let f = fixture().await;
    let headers = [
        ("X-Remote-User", "admin"),
        ("X-Remote-Group", "system:masters"),
    ];
    // Another CA signed it.
    let rogue = Ca::new("front-proxy-ca").client("front-proxy-client", &[], None);
    unauthorized(&f.call(NODES, Some(rogue), &headers).await);
    // The CN is not in requestheader-allowed-names.
    let stranger = f.front_proxy.client("someone-else", &[], None);
    unauthorized(&f.call(NODES, Some(stranger), &headers).await);
    // Expired, and not valid yet.
    let expired = f
        .front_proxy
        .client("front-proxy-client", &[], Some((-10, -1)));
    unauthorized(&f.call(NODES, Some(expired), &headers).await);
    let early = f
        .front_proxy
        .client("front-proxy-client", &[], Some((1, 10)));
    unauthorized(&f.call(NODES, Some(early), &headers).await);
    // A certificate for servers only.
    let server_only = f.front_proxy.client_with(
        "front-proxy-client",
        &[],
        None,
        &[rcgen::ExtendedKeyUsagePurpose::ServerAuth],
    );
    unauthorized(&f.call(NODES, Some(server_only), &headers).await);
    // No certificate: the headers are a forgery.
    unauthorized(&f.call(NODES, None, &headers).await);
    assert!(
        f.access_reviews().is_empty(),
        "nothing reached authorization"
    );
    // The real one works, and the admin group skips the review.
    let reply = f.call(NODES, Some(f.front_proxy_client()), &headers).await;
    assert_eq!(reply.0, 200, "{}", reply.1);
    assert!(f.access_reviews().is_empty());
}

#[tokio::test]
async fn an_empty_allowed_names_list_accepts_any_cn_of_the_requestheader_ca() {
    let f = fixture().await;
    let mut cm = configmap(&f.front_proxy, &f.client_ca, "[]");
    cm.remove("client-ca-file");
    assert_eq!(f.auth.sources.set_configmap(Some(cm)), Ok(true));
    let any = f.front_proxy.client("any-name", &[], None);
    let reply = f
        .call(
            NODES,
            Some(any),
            &[("X-Remote-User", "a"), ("X-Remote-Group", "system:masters")],
        )
        .await;
    assert_eq!(reply.0, 200, "{}", reply.1);
}

#[tokio::test]
async fn client_certificates_name_the_user_and_groups() {
    let f = fixture().await;
    let cert = f
        .client_ca
        .client("jane", &["system:masters", "devs"], None);
    let reply = f.call(NODES, Some(cert), &[]).await;
    assert_eq!(reply.0, 200, "{}", reply.1);
    assert_eq!(
        f.last_seen(),
        (
            "jane".into(),
            vec!["system:masters".into(), "devs".into(), AUTHENTICATED.into()],
            0
        )
    );
    // The client CA's certificates carry no requestheader authority.
    let cert = f.client_ca.client("front-proxy-client", &[], None);
    let reply = f
        .call(PODS, Some(cert), &[("X-Remote-User", "viewer")])
        .await;
    assert_eq!(
        reply.0, 403,
        "authenticated as the CN, not the header: {}",
        reply.1
    );
    assert!(
        reply.1.contains(r#"User \"front-proxy-client\""#),
        "{}",
        reply.1
    );
    // An expired client certificate.
    let old = f
        .client_ca
        .client("jane", &["system:masters"], Some((-30, -2)));
    unauthorized(&f.call(NODES, Some(old), &[]).await);
}

#[tokio::test]
async fn tokens_are_reviewed_once_per_ttl_and_failures_are_401() {
    let f = fixture().await;
    let bearer = [("Authorization", "Bearer viewer-token")];
    for _ in 0..3 {
        assert_eq!(f.call(PODS, None, &bearer).await.0, 200);
    }
    assert_eq!(f.api.lock().unwrap().token_reviews, 1, "cached");
    assert_eq!(f.access_reviews().len(), 1, "decision cached");
    assert_eq!(f.last_seen().2, 0, "the Authorization header is removed");

    let refused = [
        ("Bearer nobody", 2, "unknown tokens are cached too"),
        ("Bearer error-token", 4, "answers with an error are not"),
    ];
    for (header, reviews, why) in refused {
        for _ in 0..2 {
            unauthorized(&f.call(PODS, None, &[("Authorization", header)]).await);
        }
        assert_eq!(f.api.lock().unwrap().token_reviews, reviews, "{why}");
    }

    // TokenReview unavailable: 401, never an allow, and retried.
    f.api.lock().unwrap().failing = Some(500);
    unauthorized(
        &f.call(PODS, None, &[("Authorization", "Bearer fresh")])
            .await,
    );
    assert_eq!(f.api.lock().unwrap().token_reviews, 4 + 5, "five attempts");
    // Even on an always-allowed path, a failing credential is a 401.
    unauthorized(
        &f.call("/livez", None, &[("Authorization", "Bearer fresh")])
            .await,
    );
}

#[tokio::test]
async fn anonymous_requests_reach_only_always_allowed_paths() {
    let f = fixture().await;
    let reply = f.call("/livez", None, &[("X-Remote-User", "admin")]).await;
    assert_eq!(reply.0, 200);
    assert_eq!(
        f.last_seen(),
        (ANONYMOUS.into(), vec![UNAUTHENTICATED.into()], 0),
        "anonymous, with the forged header removed"
    );
    unauthorized(&f.call("/metrics", None, &[]).await);
    unauthorized(&f.call(NODES, None, &[]).await);
    unauthorized(&f.call("/no/such/path", None, &[]).await);
    assert!(f.access_reviews().is_empty());
    assert_eq!(f.api.lock().unwrap().token_reviews, 0);
}

// ---------------------------------------------------------------------------------------------
// Authorization

#[tokio::test]
async fn denials_are_kube_apiservers_403_with_the_reason_and_are_cached() {
    let f = fixture().await;
    f.api.lock().unwrap().deny_reason = "no RBAC policy matched".into();
    let bearer = [("Authorization", "Bearer viewer-token")];
    let reply = f.call(NODES, None, &bearer).await;
    assert_eq!(reply.0, 403);
    let body: Value = serde_json::from_str(&reply.1).unwrap();
    assert_eq!(
        body["message"],
        r#"nodes.metrics.k8s.io is forbidden: User "viewer" cannot list resource "nodes" in API group "metrics.k8s.io" at the cluster scope: no RBAC policy matched"#
    );
    assert_eq!(body["reason"], "Forbidden");
    assert_eq!(
        body["details"],
        json!({"group": "metrics.k8s.io", "kind": "nodes"})
    );
    // Granted now, but the denial stands until its TTL runs out.
    f.api
        .lock()
        .unwrap()
        .grants
        .push(("viewer".into(), "list nodes".into()));
    assert_eq!(f.call(NODES, None, &bearer).await.0, 403);
    assert_eq!(f.access_reviews().len(), 1);

    let reply = f.call("/metrics", None, &bearer).await;
    assert_eq!(reply.0, 403);
    assert!(
        reply
            .1
            .contains(r#"forbidden: User \"viewer\" cannot get path \"/metrics\""#),
        "{}",
        reply.1
    );
    assert_eq!(
        f.access_reviews()[1]["nonResourceAttributes"],
        json!({"path": "/metrics", "verb": "get"})
    );
}

#[tokio::test]
async fn decisions_expire_after_their_own_ttls() {
    let f = fixture_with(|o| {
        o.authorization.webhook_cache_authorized_ttl = Duration::from_millis(300);
        o.authorization.webhook_cache_unauthorized_ttl = Duration::ZERO;
    })
    .await;
    let bearer = [("Authorization", "Bearer viewer-token")];
    assert_eq!(f.call(NODES, None, &bearer).await.0, 403);
    assert_eq!(f.call(NODES, None, &bearer).await.0, 403);
    assert_eq!(
        f.access_reviews().len(),
        2,
        "a zero denial TTL caches nothing"
    );
    f.api
        .lock()
        .unwrap()
        .grants
        .push(("viewer".into(), "list nodes".into()));
    assert_eq!(f.call(NODES, None, &bearer).await.0, 200);
    f.api.lock().unwrap().grants.clear();
    assert_eq!(
        f.call(NODES, None, &bearer).await.0,
        200,
        "allowed from the cache"
    );
    assert_eq!(f.access_reviews().len(), 3);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        f.call(NODES, None, &bearer).await.0,
        403,
        "the allow expired"
    );
    assert_eq!(f.access_reviews().len(), 4);
}

#[tokio::test]
async fn a_failing_review_is_a_500_never_an_allow() {
    let f = fixture().await;
    f.api
        .lock()
        .unwrap()
        .grants
        .push(("jane".into(), "list nodes".into()));
    let cert = f.client_ca.client("jane", &[], None);
    f.api.lock().unwrap().failing = Some(403);
    let reply = f.call(NODES, Some(Arc::clone(&cert)), &[]).await;
    assert_eq!(reply.0, 500, "{}", reply.1);
    assert!(!reply.1.contains("metrics data"));
    assert!(reply.1.contains("system:auth-delegator"), "{}", reply.1);
    // Not cached: once the API server answers, so do we.
    f.api.lock().unwrap().failing = None;
    assert_eq!(f.call(NODES, Some(cert), &[]).await.0, 200);
}

#[tokio::test]
async fn a_request_path_that_cannot_be_parsed_is_a_500() {
    let f = fixture().await;
    let reply = f
        .call("/apis/metrics.k8s.io/v1beta1/watch", None, &[])
        .await;
    assert_eq!(reply.0, 500);
    assert!(
        reply.1.contains("failed to create RequestInfo"),
        "{}",
        reply.1
    );
}

// ---------------------------------------------------------------------------------------------
// Certificate verdicts per connection

/// How many times the chain was hashed to look a verdict up, and how many verdicts were
/// computed.
fn chain_work(certs: &x509::CertCache) -> (usize, usize) {
    use std::sync::atomic::Ordering::Relaxed;
    let counts = certs.counts();
    (
        counts.lookups.load(Relaxed),
        counts.verifications.load(Relaxed),
    )
}

#[tokio::test]
async fn a_connection_verifies_its_chain_once_and_reads_the_headers_every_time() {
    let f = fixture().await;
    let proxy = f.front_proxy_client();
    let live = conn(Some(Arc::clone(&proxy)));
    let masters = [("X-Remote-User", "a"), ("X-Remote-Group", "system:masters")];
    for _ in 0..3 {
        assert_eq!(f.call_on(&live, NODES, &masters).await.0, 200);
    }
    assert_eq!(
        chain_work(&f.auth.certs),
        (1, 1),
        "one lookup and one verification for three requests"
    );
    // The identity is still each request's own: another user on the same connection is
    // reviewed, and no user header falls through to the x509 path, which refuses the
    // front-proxy CA's certificate.
    let reply = f.call_on(&live, PODS, &[("X-Remote-User", "viewer")]).await;
    assert_eq!(reply.0, 200, "{}", reply.1);
    assert_eq!(f.last_seen().0, "viewer");
    assert_eq!(f.access_reviews().len(), 1);
    unauthorized(&f.call_on(&live, NODES, &[]).await);
    assert_eq!(chain_work(&f.auth.certs), (1, 1));
    // A second connection with the same chain finds the shared verdict, and then keeps its
    // own.
    let other = conn(Some(proxy));
    for _ in 0..2 {
        assert_eq!(f.call_on(&other, NODES, &masters).await.0, 200);
    }
    assert_eq!(chain_work(&f.auth.certs), (2, 1));
}

#[tokio::test]
async fn a_ca_rotation_reverifies_live_connections() {
    let f = fixture().await;
    let masters = [("X-Remote-User", "a"), ("X-Remote-Group", "system:masters")];
    let proxied = conn(Some(f.front_proxy_client()));
    let direct = conn(Some(f.client_ca.client("jane", &["system:masters"], None)));
    assert_eq!(f.call_on(&proxied, NODES, &masters).await.0, 200);
    assert_eq!(f.call_on(&direct, NODES, &[]).await.0, 200);
    assert_eq!(chain_work(&f.auth.certs), (2, 2));
    let (front_proxy, client_ca) = (Ca::new("front-proxy-ca-2"), Ca::new("client-ca-2"));
    assert_eq!(
        f.auth.sources.set_configmap(Some(configmap(
            &front_proxy,
            &client_ca,
            r#"["front-proxy-client"]"#
        ))),
        Ok(true)
    );
    unauthorized(&f.call_on(&proxied, NODES, &masters).await);
    unauthorized(&f.call_on(&direct, NODES, &[]).await);
    assert_eq!(chain_work(&f.auth.certs), (4, 4));
    // The rejections are kept too, under the new generation.
    unauthorized(&f.call_on(&proxied, NODES, &masters).await);
    assert_eq!(chain_work(&f.auth.certs), (4, 4));
}

/// A [`CaState`](sources::CaState) trusting `ca` for client certificates.
fn client_ca_state(generation: u64, ca: &Ca) -> sources::CaState {
    let bundle = x509::CaBundle::from_pem(
        "test client CA",
        ca.pem().as_bytes(),
        &crate::tls::provider(),
    )
    .unwrap();
    sources::CaState {
        generation,
        client_ca: Some(bundle),
        request_header: None,
    }
}

fn user_of(verdict: &x509::Verdict) -> Result<&str, &str> {
    match verdict.client.as_ref().unwrap() {
        Ok(user) => Ok(&user.as_ref().unwrap().name),
        Err(e) => Err(e),
    }
}

fn assert_rejected(verdict: &x509::Verdict, why: &str) {
    assert!(
        user_of(verdict).is_err_and(|e| e.contains(why)),
        "{verdict:?} is no rejection for {why:?}"
    );
}

#[test]
fn a_connection_verdict_ends_with_the_certificate_and_the_verdict_age() {
    let ca = Ca::new("client-ca");
    let state = client_ca_state(1, &ca);
    let certs = x509::CertCache::default();
    let (t0, w0) = (std::time::Instant::now(), std::time::SystemTime::now());
    let at = |secs: u64| {
        let d = Duration::from_secs(secs);
        (t0 + d, w0 + d)
    };

    // Valid for another minute: the verdict holds until then, and then the certificate has
    // expired.
    let short = ca.client_with(
        "jane",
        &[],
        Some((-86400, 60)),
        &[rcgen::ExtendedKeyUsagePurpose::ClientAuth],
    );
    let memo = x509::VerdictMemo::default();
    let verdict = |memo: &x509::VerdictMemo,
                   chain: &Arc<[CertificateDer<'static>]>,
                   (now, wall): (std::time::Instant, std::time::SystemTime)| {
        certs.verdict_at(chain, memo, &state, now, wall)
    };
    let first = verdict(&memo, &short, at(0));
    assert_eq!(user_of(&first), Ok("jane"));
    let later = verdict(&memo, &short, at(58));
    assert!(Arc::ptr_eq(&first, &later), "the same verdict, kept");
    assert_eq!(chain_work(&certs), (1, 1));
    let expired = verdict(&memo, &short, at(61));
    assert_rejected(&expired, "certificate has expired");
    assert_eq!(chain_work(&certs), (2, 2));
    // The rejection is kept for REJECTION_AGE (10 s), then verified again.
    verdict(&memo, &short, at(70));
    assert_eq!(chain_work(&certs), (2, 2));
    verdict(&memo, &short, at(72));
    assert_eq!(chain_work(&certs), (3, 3));

    // Valid for days: the verdict is reused for MAX_VERDICT_AGE (300 s), then renewed.
    let long = ca.client("joe", &[], None);
    let memo = x509::VerdictMemo::default();
    verdict(&memo, &long, at(0));
    verdict(&memo, &long, at(299));
    assert_eq!(chain_work(&certs), (4, 4));
    assert_eq!(user_of(&verdict(&memo, &long, at(301))), Ok("joe"));
    assert_eq!(chain_work(&certs), (5, 5));
}

#[test]
fn a_connection_verdict_holds_for_its_chain_and_generation_only() {
    let (old_ca, new_ca) = (Ca::new("client-ca"), Ca::new("client-ca-2"));
    let (old, new) = (client_ca_state(1, &old_ca), client_ca_state(2, &new_ca));
    let certs = x509::CertCache::default();
    let (now, wall) = (std::time::Instant::now(), std::time::SystemTime::now());
    let chain = old_ca.client("jane", &[], None);
    let memo = x509::VerdictMemo::default();
    assert_eq!(
        user_of(&certs.verdict_at(&chain, &memo, &old, now, wall)),
        Ok("jane")
    );
    let rotated = certs.verdict_at(&chain, &memo, &new, now, wall);
    assert_rejected(&rotated, "signed by unknown authority");
    assert_eq!(chain_work(&certs), (2, 2));
    // The memo answers for the chain it was computed on only, not for an equal copy, which
    // the shared cache answers for.
    let copy: Arc<[CertificateDer<'static>]> = Arc::from(chain.to_vec());
    certs.verdict_at(&copy, &memo, &new, now, wall);
    assert_eq!(chain_work(&certs), (3, 2));
    certs.verdict_at(&chain, &memo, &new, now, wall);
    assert_eq!(chain_work(&certs), (4, 2));
    // A request that read the CA state before the rotation and finishes after it does not
    // put the old generation's verdict back.
    certs.verdict_at(&chain, &memo, &old, now, wall);
    assert_eq!(chain_work(&certs), (5, 3));
    certs.verdict_at(&chain, &memo, &new, now, wall);
    assert_eq!(chain_work(&certs), (5, 3));
}

// ---------------------------------------------------------------------------------------------
// Sources

#[tokio::test]
async fn a_configmap_ca_rotation_applies_to_the_next_request() {
    let f = fixture().await;
    let headers = [("X-Remote-User", "a"), ("X-Remote-Group", "system:masters")];
    let old = f.front_proxy_client();
    assert_eq!(f.call(NODES, Some(Arc::clone(&old)), &headers).await.0, 200);
    let rotated = Ca::new("front-proxy-ca-2");
    let before = f.auth.sources.current().generation;
    assert_eq!(
        f.auth.sources.set_configmap(Some(configmap(
            &rotated,
            &f.client_ca,
            r#"["front-proxy-client"]"#
        ))),
        Ok(true)
    );
    assert_eq!(f.auth.sources.current().generation, before + 1);
    unauthorized(&f.call(NODES, Some(old), &headers).await);
    let new = rotated.client("front-proxy-client", &[], None);
    assert_eq!(f.call(NODES, Some(new.clone()), &headers).await.0, 200);
    // The same data again changes nothing; garbage keeps the settings in force.
    assert_eq!(
        f.auth.sources.set_configmap(Some(configmap(
            &rotated,
            &f.client_ca,
            r#"["front-proxy-client"]"#
        ))),
        Ok(false)
    );
    let mut bad = configmap(&rotated, &f.client_ca, "front-proxy-client");
    assert!(
        f.auth
            .sources
            .set_configmap(Some(bad.clone()))
            .unwrap_err()
            .contains("requestheader-allowed-names")
    );
    bad = configmap(&rotated, &f.client_ca, "[]");
    bad.insert(
        "requestheader-client-ca-file".into(),
        "not a certificate".into(),
    );
    assert!(f.auth.sources.set_configmap(Some(bad)).is_err());
    assert_eq!(f.call(NODES, Some(new.clone()), &headers).await.0, 200);
    // The ConfigMap deleted: nothing vouches for front proxies any more.
    assert_eq!(f.auth.sources.set_configmap(None), Ok(true));
    unauthorized(&f.call(NODES, Some(new), &headers).await);
}

#[tokio::test]
async fn flags_take_precedence_over_the_configmap_and_files_reload() {
    let dir = tempfile::tempdir().unwrap();
    let flag_ca = Ca::new("flag-front-proxy");
    let path = dir.path().join("front-proxy-ca.crt");
    std::fs::write(&path, flag_ca.pem()).unwrap();
    let p = path.clone();
    let f = fixture_with(move |o| {
        o.authentication.requestheader_client_ca_file = Some(p);
        o.authentication.requestheader_allowed_names = vec!["proxy".into()];
        o.authentication.requestheader_username_headers = vec!["X-Proxy-User".into()];
        o.authentication.requestheader_group_headers = vec!["X-Proxy-Group".into()];
    })
    .await;
    let cert = flag_ca.client("proxy", &[], None);
    let proxied = [
        ("X-Proxy-User", "u"),
        ("X-Proxy-Group", "system:masters"),
        ("X-Remote-Group", "forged"),
    ];
    let reply = f.call(NODES, Some(Arc::clone(&cert)), &proxied).await;
    assert_eq!(reply.0, 200, "{}", reply.1);
    assert_eq!(
        f.last_seen(),
        (
            "u".into(),
            vec!["system:masters".into(), AUTHENTICATED.into()],
            0
        ),
        "X-Remote-Group is not configured here, and is removed all the same"
    );
    // Without the configured group header, the same user is reviewed (and denied).
    let reply = f
        .call(
            NODES,
            Some(Arc::clone(&cert)),
            &[("X-Proxy-User", "u"), ("X-Remote-Group", "system:masters")],
        )
        .await;
    assert_eq!(reply.0, 403, "{}", reply.1);
    // The ConfigMap's front-proxy CA is not used.
    unauthorized(
        &f.call(
            NODES,
            Some(f.front_proxy_client()),
            &[("X-Proxy-User", "u")],
        )
        .await,
    );
    // The ConfigMap still supplies the client CA (no --client-ca-file).
    let jane = f.client_ca.client("jane", &["system:masters"], None);
    assert_eq!(f.call(NODES, Some(jane), &[]).await.0, 200);

    let rotated = Ca::new("flag-front-proxy-2");
    std::fs::write(&path, rotated.pem()).unwrap();
    assert_eq!(f.auth.sources.reload_files(), Ok(true));
    assert_eq!(f.auth.sources.reload_files(), Ok(false));
    unauthorized(&f.call(NODES, Some(cert), &[("X-Proxy-User", "u")]).await);
    let cert = rotated.client("proxy", &[], None);
    assert_eq!(
        f.call(
            NODES,
            Some(cert),
            &[("X-Proxy-User", "u"), ("X-Remote-Group", "g")]
        )
        .await
        .0,
        403
    );
}

#[tokio::test]
async fn an_unreadable_configmap_is_fatal_unless_tolerated() {
    let api: Shared = Arc::default();
    api.lock().unwrap().failing = Some(403);
    // `failing` applies to reviews; make the ConfigMap read fail too.
    let forbidden = |req: http::Request<kube::client::Body>| async move {
        let _ = req;
        Ok::<_, Infallible>(respond(
            403,
            status(
                403,
                "configmaps \"extension-apiserver-authentication\" is forbidden",
            ),
        ))
    };
    let start = |tweak: fn(&mut Options), c: kube::Client| async move {
        let mut options = Options::default();
        tweak(&mut options);
        Auth::start_with(
            &options.authentication,
            &options.authorization,
            c.clone(),
            c,
            FAST,
        )
        .await
    };
    let c = kube::Client::new(tower::service_fn(forbidden), "default");
    let err = start(|_| {}, c.clone()).await.unwrap_err().to_string();
    assert!(
        err.contains("extension-apiserver-authentication-reader"),
        "{err}"
    );
    assert!(
        err.contains("--authentication-tolerate-lookup-failure"),
        "{err}"
    );
    let auth = start(|o| o.authentication.tolerate_lookup_failure = true, c)
        .await
        .unwrap();
    assert!(auth.sources.current().request_header.is_none());
    assert!(
        auth.client_cert_verifier().is_some(),
        "the watch may still bring CAs"
    );
    // Skipping the lookup without CA flags: nothing to verify certificates with.
    let auth = start(|o| o.authentication.skip_lookup = true, client(&api))
        .await
        .unwrap();
    assert!(auth.client_cert_verifier().is_none());
}
