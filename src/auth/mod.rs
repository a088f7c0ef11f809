//! Delegated authentication and authorization: metrics-bridge lets in exactly whom
//! kube-apiserver would, as a k8s.io/apiserver-based aggregated API server (metrics-server)
//! does.
//!
//! Every request passes [`Auth::protect`]'s guard, in this order:
//!
//! 1. **Request info** ([`RequestInfo`], as `WithRequestInfo`): a path that cannot be parsed
//!    is a 500.
//! 2. **Authentication**, the first authenticator that succeeds wins; a credential that
//!    fails is remembered, and if none succeeds the request is a 401:
//!    - *requestheader*: the connection's client certificate verifies against the
//!      requestheader CA and its CN is allowed; then the user, UID, groups and extras come
//!      from the configured headers (see [`requestheader`]);
//!    - *x509*: the client certificate verifies against the client CA; user = CN, groups =
//!      O values;
//!    - *bearer token*: `TokenReview`, cached (see [`token`]);
//!    - *anonymous*: a request with no credential at all is `system:anonymous` on an
//!      always-allowed path, and a 401 everywhere else. (metrics-server would send a
//!      `SubjectAccessReview` for `system:anonymous` and answer 403; answering 401 without
//!      asking, as kube-apiserver's anonymous-endpoint restriction does, costs the API
//!      server nothing for scanners and reveals nothing.) A request that presents a failing
//!      credential is a 401 even on an always-allowed path, as upstream.
//!
//!    Authenticated users get `system:authenticated`. The `Authorization` header and every
//!    identity header (`X-Remote-*` and the configured ones) are removed before anything
//!    else reads the request.
//! 3. **Authorization** (see [`authz`]): `system:masters`, then always-allowed paths, then a
//!    cached `SubjectAccessReview`. A denial is kube-apiserver's 403 `Status` with the
//!    reviewer's reason; a review that gets no answer is a 500.
//!
//! The handler then finds the user as an `Arc<User>` request extension.

pub mod authz;
pub mod cache;
pub mod requestheader;
pub mod sources;
pub mod token;
pub mod webhook;
pub mod x509;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use rustls::crypto::CryptoProvider;

use crate::api::RequestInfo;
use crate::https::ConnInfo;
use crate::options::{AuthenticationOptions, AuthorizationOptions};
use crate::status::Status;
use crate::tls::ClientAuth;

use authz::Authorizer;
use sources::{CaState, SourceError, Sources};
use token::{TokenAnswer, TokenAuthenticator, TokenError};
use webhook::RetryPolicy;
use x509::CertCache;

/// The user every request without a credential is, where anonymous requests are allowed.
pub const ANONYMOUS: &str = "system:anonymous";
/// The group of [`ANONYMOUS`].
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
/// The group every authenticated user is in.
pub const AUTHENTICATED: &str = "system:authenticated";

/// An authenticated user, as Kubernetes' `user.Info`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl User {
    /// `system:anonymous` in `system:unauthenticated`.
    pub fn anonymous() -> Self {
        Self {
            name: ANONYMOUS.into(),
            groups: vec![UNAUTHENTICATED.into()],
            ..Self::default()
        }
    }

    /// k8s.io/apiserver's `AuthenticatedGroupAdder`: every authenticated user is in
    /// `system:authenticated`. Applied before a user is cached, so a cache hit is shared
    /// as is.
    fn with_authenticated_group(mut self) -> Self {
        if self.name != ANONYMOUS && !self.groups.iter().any(|g| g == AUTHENTICATED) {
            self.groups.push(AUTHENTICATED.into());
        }
        self
    }
}

/// Why delegated authentication could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("delegated authentication: {0}")]
    Sources(#[from] SourceError),
    #[error("delegated authentication: {0}")]
    Random(#[from] token::RandomError),
}

/// Why a request was not authenticated; logged, never shown to the client.
#[derive(Debug)]
struct Unauthenticated {
    /// What each failing credential said; empty when there was no credential.
    reasons: Vec<String>,
    /// A review could not be made (the API server is unreachable or refused us): an
    /// operational problem rather than a bad client.
    unavailable: bool,
}

/// Delegated authentication and authorization for the secure port.
pub struct Auth {
    sources: Arc<Sources>,
    certs: CertCache,
    tokens: TokenAuthenticator,
    authorizer: Authorizer,
    provider: Arc<CryptoProvider>,
    authn_client: kube::Client,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("sources", &self.sources)
            .field("tokens", &self.tokens)
            .field("authorizer", &self.authorizer)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Loads the CA files, looks the ConfigMap up (fatal on failure unless
    /// `--authentication-tolerate-lookup-failure`), and builds the authenticators. The
    /// clients reach kube-apiserver for reviews and the ConfigMap: `authn_client` from
    /// `--authentication-kubeconfig`, `authz_client` from `--authorization-kubeconfig`
    /// (each the cluster client when its flag is empty).
    pub async fn start(
        authn: &AuthenticationOptions,
        authz: &AuthorizationOptions,
        authn_client: kube::Client,
        authz_client: kube::Client,
    ) -> Result<Arc<Self>, AuthError> {
        Self::start_with(
            authn,
            authz,
            authn_client,
            authz_client,
            webhook::DEFAULT_RETRY,
        )
        .await
    }

    async fn start_with(
        authn: &AuthenticationOptions,
        authz: &AuthorizationOptions,
        authn_client: kube::Client,
        authz_client: kube::Client,
        retry: RetryPolicy,
    ) -> Result<Arc<Self>, AuthError> {
        let provider = crate::tls::provider();
        let sources = Sources::load(authn, Arc::clone(&provider))?;
        if sources.uses_configmap() {
            match sources.lookup(authn_client.clone()).await {
                Ok(()) => {}
                Err(e) if authn.tolerate_lookup_failure => {
                    tracing::warn!(error = %e, "error looking up in-cluster authentication configuration; continuing without it until the ConfigMap can be read (--authentication-tolerate-lookup-failure): client certificates and front-proxy requests are refused meanwhile");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Arc::new(Self {
            sources: Arc::new(sources),
            certs: CertCache::default(),
            tokens: TokenAuthenticator::new(
                authn_client.clone(),
                authn.token_webhook_cache_ttl,
                retry,
            )?,
            authorizer: Authorizer::new(authz_client, authz, retry),
            provider,
            authn_client,
        }))
    }

    /// The TLS layer's client-certificate policy: ask for one when some CA could accept it.
    pub fn client_cert_verifier(&self) -> Option<ClientAuth> {
        self.sources.wants_client_certificates().then(|| {
            let verifier: ClientAuth = Arc::new(x509::RequestClientCert::new(&self.provider));
            verifier
        })
    }

    /// Starts following the ConfigMap and the CA files until `stop` turns true.
    pub fn spawn(
        self: &Arc<Self>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|&v| v).await;
        };
        let mut tasks = vec![tokio::spawn(
            Arc::clone(&self.sources).watch_files(sources::RELOAD_INTERVAL, stopped(stop.clone())),
        )];
        if self.sources.uses_configmap() {
            tasks.push(tokio::spawn(
                Arc::clone(&self.sources).watch_configmap(self.authn_client.clone(), stopped(stop)),
            ));
        }
        tasks
    }

    /// Puts every route of `app` (and its fallback) behind authentication and authorization.
    pub fn protect(self: &Arc<Self>, app: Router) -> Router {
        app.layer(axum::middleware::from_fn_with_state(
            Arc::clone(self),
            guard,
        ))
    }

    /// Who sent the request, if anyone, judged by the CA `state` the caller also uses to
    /// clear the request-header headers, so that one request sees one set of CAs and names.
    async fn authenticate(
        &self,
        state: &CaState,
        conn: Option<&ConnInfo>,
        headers: &HeaderMap,
        anonymous_allowed: bool,
    ) -> Result<Arc<User>, Unauthenticated> {
        let mut reasons = Vec::new();
        let mut unavailable = false;
        if let Some((chain, memo)) =
            conn.and_then(|c| Some((c.peer_certificates.as_ref()?, &c.cert_verdict)))
        {
            let verdict = self.certs.verdict(chain, memo, state);
            if let (Some(front_proxy), Some(rh)) = (&verdict.front_proxy, &state.request_header) {
                match front_proxy {
                    Ok(()) => match rh.user(headers) {
                        Ok(Some(user)) => return Ok(Arc::new(user.with_authenticated_group())),
                        Ok(None) => {}
                        Err(e) => reasons.push(e),
                    },
                    Err(e) => reasons.push(e.clone()),
                }
            }
            match &verdict.client {
                Some(Ok(Some(user))) => {
                    return Ok(Arc::clone(user));
                }
                Some(Err(e)) => reasons.push(e.clone()),
                Some(Ok(None)) | None => {}
            }
        }
        match token::bearer(headers) {
            Ok(Some(token)) => match self.tokens.authenticate(token).await {
                Ok(TokenAnswer::User(user)) => {
                    return Ok(user);
                }
                Ok(TokenAnswer::Unknown) => reasons.push("invalid bearer token".into()),
                Err(e @ TokenError::Rejected(_)) => reasons.push(e.to_string()),
                Err(TokenError::Review(e)) => {
                    unavailable = true;
                    reasons.push(e.to_string());
                }
            },
            Ok(None) => {}
            Err(e) => reasons.push(e.into()),
        }
        if reasons.is_empty() && anonymous_allowed {
            return Ok(Arc::new(User::anonymous()));
        }
        Err(Unauthenticated {
            reasons,
            unavailable,
        })
    }
}

/// The middleware: request info, authentication, authorization, then the handler.
async fn guard(State(auth): State<Arc<Auth>>, mut req: Request, next: Next) -> Response {
    let info = match RequestInfo::new(req.method(), req.uri().path(), req.uri().query()) {
        Ok(info) => info,
        Err(e) => {
            return Status::internal(format!("failed to create RequestInfo: {e}")).into_response();
        }
    };
    let anonymous_allowed =
        !info.is_resource_request && auth.authorizer.allow_paths().matches(&info.path);
    let state = auth.sources.current();
    let authenticated = auth
        .authenticate(
            &state,
            req.extensions().get::<ConnInfo>(),
            req.headers(),
            anonymous_allowed,
        )
        .await;
    let headers = req.headers_mut();
    headers.remove(http::header::AUTHORIZATION);
    requestheader::clear(headers, state.request_header.as_ref());
    let user = match authenticated {
        Ok(user) => user,
        Err(failure) => {
            let peer = req.extensions().get::<ConnInfo>().map(|c| c.remote_addr);
            if failure.unavailable {
                tracing::warn!(path = %info.path, ?peer, reasons = ?failure.reasons, "unable to authenticate the request: the token review failed");
            } else {
                tracing::debug!(path = %info.path, ?peer, reasons = ?failure.reasons, "unable to authenticate the request");
            }
            return Status::unauthorized().into_response();
        }
    };
    match auth.authorizer.authorize(&user, &info).await {
        Ok(d) if d.allowed => {}
        Ok(d) => {
            tracing::debug!(user = %user.name, path = %info.path, verb = %info.verb, reason = %d.reason, "forbidden");
            return authz::forbidden(&user, &info, &d.reason).into_response();
        }
        Err(e) => {
            tracing::warn!(user = %user.name, path = %info.path, error = %e, "authorization failed");
            return Status::internal(e.to_string()).into_response();
        }
    }
    req.extensions_mut().insert(user);
    next.run(req).await
}

#[cfg(test)]
mod tests;
