//! The kubelet's webhook authentication and authorization against an API server, as
//! `--authentication-token-webhook` and `--authorization-mode=Webhook` configure a real
//! kubelet (`pkg/kubelet/server/auth.go`, k8s.io/apiserver's delegating authenticator and
//! authorizer):
//!
//! - a bearer token is sent in a `TokenReview` (no audiences, as the kubelet sends it); the
//!   answer is cached for `cacheTTL` (2 minutes), authenticated or not;
//! - a client certificate is verified against the cluster's client CA, when kube-sim could
//!   read one (`kube-system/extension-apiserver-authentication`'s `client-ca-file`);
//! - the request's attributes (`get` `nodes/metrics` of this node for `/metrics/resource`,
//!   `nodes/proxy` for other paths, ...) are sent in a `SubjectAccessReview` with the user's
//!   name, uid, groups and extra; an allow is cached for 5 minutes, a denial for 30 seconds
//!   (`cacheAuthorizedTTL`, `cacheUnauthorizedTTL`);
//! - a review that fails (the API server unreachable, an error status) is not cached: the
//!   request is 401 for authentication, 500 `Authorization error (...)` for authorization.
//!
//! Each kubelet has its own cache, as each real kubelet has, so thousands of kubelets never
//! share a lock.
//!
//! Reviews travel over HTTP/2, as a kubelet's client-go talks to kube-apiserver: a running
//! kubelet sends them on the connection it already holds, so a review costs no TLS handshake.
//! Over kube's default HTTP/1.1 pool, every review in flight at once needed a connection of
//! its own: metrics-bridge's first tick over 2,000 nodes opened 1,661, each a handshake on
//! both simulators (BENCHMARKS.md, "The first tick").

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{HeaderMap, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes as SarResource, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use kube::client::ConfigExt as _;
use metrics_bridge::https::ConnInfo;

use crate::auth::{ResourceAttributes, UserInfo, bearer, certificate_user};
use crate::pki::ClientCaBundle;

/// How long a `TokenReview` answer is kept (`authentication.webhook.cacheTTL`).
pub const AUTHN_TTL: Duration = Duration::from_secs(120);
/// How long an allow is kept (`authorization.webhook.cacheAuthorizedTTL`).
pub const ALLOWED_TTL: Duration = Duration::from_secs(300);
/// How long a denial is kept (`authorization.webhook.cacheUnauthorizedTTL`).
pub const DENIED_TTL: Duration = Duration::from_secs(30);

/// Why a review could not be made.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("TokenReview failed: {0}")]
    TokenReview(#[source] kube::Error),
    #[error("SubjectAccessReview failed: {0}")]
    SubjectAccessReview(#[source] kube::Error),
    #[error("building the reviews' client: {0}")]
    Client(#[source] kube::Error),
    #[error("building the reviews' client: invalid tls-server-name {name:?}: {source}")]
    ServerName {
        name: String,
        #[source]
        source: rustls_pki_types::InvalidDnsNameError,
    },
}

/// Reviews credentials and requests against an API server for the kubelets.
pub struct Webhook {
    /// HTTP/2 to the API server (see the module's doc).
    client: kube::Client,
    /// The cluster's client CA, if kube-sim could read it.
    client_ca: Option<ClientCaBundle>,
    reviews: AtomicU64,
    /// TCP connections the client opened.
    connections: Arc<AtomicU64>,
}

/// The TCP connector of the reviews' client, counting the connections it opens.
#[derive(Clone)]
struct CountingConnector {
    inner: HttpConnector,
    opened: Arc<AtomicU64>,
}

impl tower::Service<Uri> for CountingConnector {
    type Response = <HttpConnector as tower::Service<Uri>>::Response;
    type Error = <HttpConnector as tower::Service<Uri>>::Error;
    type Future = <HttpConnector as tower::Service<Uri>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        self.opened.fetch_add(1, Ordering::Relaxed);
        self.inner.call(uri)
    }
}

/// One credential's cached answers.
struct Entry {
    user: Option<UserInfo>,
    authn_until: Instant,
    /// `(verb, subresource)` → (allowed, until).
    decisions: Vec<(String, String, bool, Instant)>,
}

/// A kubelet's cache of review answers, keyed by credential (the token, or the client
/// certificate's DER).
#[derive(Default)]
pub struct Cache {
    entries: Mutex<HashMap<Vec<u8>, Entry>>,
}

impl Cache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The outcome of authenticating a kubelet request.
pub enum Authenticated {
    User(UserInfo),
    /// No credential, or one the API server rejects: 401.
    Rejected,
}

impl Webhook {
    /// Reviews against the API server `config` names, over HTTP/2 with `config`'s TLS and
    /// credentials; no connection is opened before the first review.
    pub fn connect(
        config: &kube::Config,
        client_ca: Option<ClientCaBundle>,
    ) -> Result<Webhook, WebhookError> {
        let tls = config
            .rustls_client_config()
            .map_err(WebhookError::Client)?;
        let connections = Arc::new(AtomicU64::new(0));
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        let tcp = CountingConnector {
            inner: tcp,
            opened: Arc::clone(&connections),
        };
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        // As kube's own connector: a kubeconfig's tls-server-name replaces the URL's host.
        let builder =
            match &config.tls_server_name {
                Some(name) => {
                    let server_name = rustls_pki_types::ServerName::try_from(name.clone())
                        .map_err(|source| WebhookError::ServerName {
                            name: name.clone(),
                            source,
                        })?;
                    builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(
                        server_name,
                    ))
                }
                None => builder,
            };
        let https = builder.enable_http2().wrap_connector(tcp);
        let http: hyper_util::client::legacy::Client<_, kube::client::Body> =
            hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build(https);
        let service = tower::ServiceBuilder::new()
            .layer(config.base_uri_layer())
            .option_layer(config.auth_layer().map_err(WebhookError::Client)?)
            // The token layer's errors are boxed; the client's must be too.
            .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })
            .service(http);
        Ok(Webhook {
            client: kube::Client::new(service, config.default_namespace.clone()),
            client_ca,
            reviews: AtomicU64::new(0),
            connections,
        })
    }

    /// Reviews sent so far (TokenReviews and SubjectAccessReviews), for `/sim/info`.
    pub fn reviews(&self) -> u64 {
        self.reviews.load(Ordering::Relaxed)
    }

    /// Connections opened to the API server for reviews so far, for `/sim/info`.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    fn count(&self) {
        self.reviews.fetch_add(1, Ordering::Relaxed);
    }

    /// Authenticates by client certificate (against the cluster's client CA) or bearer token
    /// (TokenReview, cached), in the kubelet's order. A review that fails is logged and the
    /// request rejected, as the kubelet's filter does.
    pub async fn authenticate(
        &self,
        cache: &Cache,
        conn: Option<&ConnInfo>,
        headers: &HeaderMap,
    ) -> Authenticated {
        if let (Some(ca), Some(chain)) = (
            self.client_ca.as_ref(),
            conn.and_then(|c| c.peer_certificates.as_deref()),
        ) && let Ok(user) = certificate_user(ca, chain)
        {
            return Authenticated::User(user);
        }
        let Some(token) = headers.get(http::header::AUTHORIZATION).and_then(bearer) else {
            return Authenticated::Rejected;
        };
        let now = Instant::now();
        if let Some(e) = cache.lock().get(token.as_bytes())
            && e.authn_until > now
        {
            return match &e.user {
                Some(u) => Authenticated::User(u.clone()),
                None => Authenticated::Rejected,
            };
        }
        match self.token_review(token).await {
            Ok(user) => {
                let mut entries = cache.lock();
                let entry = entries.entry(token.as_bytes().to_vec()).or_insert(Entry {
                    user: None,
                    authn_until: now,
                    decisions: Vec::new(),
                });
                if entry.user != user {
                    entry.decisions.clear();
                }
                entry.user = user.clone();
                entry.authn_until = now + AUTHN_TTL;
                match user {
                    Some(u) => Authenticated::User(u),
                    None => Authenticated::Rejected,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "kubelet: unable to authenticate the request");
                Authenticated::Rejected
            }
        }
    }

    async fn token_review(&self, token: &str) -> Result<Option<UserInfo>, WebhookError> {
        self.count();
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: None,
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(WebhookError::TokenReview)?;
        let Some(status) = answer.status else {
            return Ok(None);
        };
        if status.authenticated != Some(true) {
            return Ok(None);
        }
        let u = status.user.unwrap_or_default();
        Ok(Some(UserInfo {
            username: u.username.unwrap_or_default(),
            uid: u.uid.unwrap_or_default(),
            groups: u.groups.unwrap_or_default(),
            extra: u.extra.unwrap_or_default().into_iter().collect(),
        }))
    }

    /// Authorizes `attrs` for `user` with a SubjectAccessReview (cached per credential).
    /// `Err` when the review could not be made: the kubelet answers 500.
    pub async fn authorize(
        &self,
        cache: &Cache,
        credential: Option<&[u8]>,
        user: &UserInfo,
        attrs: &ResourceAttributes,
    ) -> Result<bool, WebhookError> {
        let now = Instant::now();
        if let Some(key) = credential
            && let Some(e) = cache.lock().get(key)
            && let Some(d) = e
                .decisions
                .iter()
                .find(|d| d.0 == attrs.verb && d.1 == attrs.subresource && d.3 > now)
        {
            return Ok(d.2);
        }
        let allowed = self.subject_access_review(user, attrs).await?;
        if let Some(key) = credential
            && let Some(e) = cache.lock().get_mut(key)
        {
            e.decisions
                .retain(|d| !(d.0 == attrs.verb && d.1 == attrs.subresource));
            let ttl = if allowed { ALLOWED_TTL } else { DENIED_TTL };
            e.decisions.push((
                attrs.verb.clone(),
                attrs.subresource.clone(),
                allowed,
                now + ttl,
            ));
        }
        Ok(allowed)
    }

    async fn subject_access_review(
        &self,
        user: &UserInfo,
        attrs: &ResourceAttributes,
    ) -> Result<bool, WebhookError> {
        self.count();
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                resource_attributes: Some(SarResource {
                    namespace: opt(&attrs.namespace),
                    verb: opt(&attrs.verb),
                    group: opt(&attrs.group),
                    version: opt(&attrs.version),
                    resource: opt(&attrs.resource),
                    subresource: opt(&attrs.subresource),
                    name: opt(&attrs.name),
                    ..Default::default()
                }),
                user: opt(&user.username),
                uid: opt(&user.uid),
                groups: (!user.groups.is_empty()).then(|| user.groups.clone()),
                extra: (!user.extra.is_empty()).then(|| {
                    user.extra
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect::<BTreeMap<_, _>>()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(WebhookError::SubjectAccessReview)?;
        Ok(answer.status.is_some_and(|s| s.allowed))
    }
}

/// The credential a request's cache entry is keyed by: the bearer token (when the request
/// authenticated by token) or the client certificate.
pub fn credential<'a>(conn: Option<&'a ConnInfo>, headers: &'a HeaderMap) -> Option<&'a [u8]> {
    if let Some(token) = headers.get(http::header::AUTHORIZATION).and_then(bearer) {
        return Some(token.as_bytes());
    }
    conn.and_then(|c| c.peer_certificates.as_deref())
        .and_then(|chain| chain.first())
        .map(|c| c.as_ref())
}
