//! Bearer tokens, reviewed by kube-apiserver (`TokenReview`), as k8s.io/apiserver's bearer
//! token and webhook token authenticators with their cache:
//!
//! - `Authorization: Bearer <token>` (scheme case-insensitive, the token is the second
//!   space-separated word); any other scheme is no token at all;
//! - the review asks for no particular audience, so kube-apiserver checks its own;
//! - answers are cached for `--authentication-token-webhook-cache-ttl`, the positive and the
//!   negative ones alike; failures (no answer, or a review that carries an error) are not;
//! - the cache is keyed by an HMAC of the token under a key made at start, so tokens are
//!   never kept in memory longer than the request that carried them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderMap;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::Api;
use kube::api::PostParams;

use super::User;
use super::cache::TtlCache;
use super::webhook::{RetryPolicy, ReviewError, with_retries};

/// What a bearer token turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenAnswer {
    User(Arc<User>),
    /// kube-apiserver does not know the token (a cached answer).
    Unknown,
}

/// Why a token did not authenticate anyone, beyond being unknown.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    #[error("the TokenReview rejected the token: {0}")]
    Rejected(String),
    #[error(transparent)]
    Review(Arc<ReviewError>),
}

/// The token of an `Authorization` header, as k8s.io/apiserver's bearer token authenticator
/// finds it. `Ok(None)`: no bearer token (no header, another scheme, an empty token).
/// `Err`: a bearer token that cannot be one (not text).
pub fn bearer(headers: &HeaderMap) -> Result<Option<&str>, &'static str> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let Ok(value) = std::str::from_utf8(value.as_bytes()) else {
        return Err("the Authorization header is not valid UTF-8");
    };
    let mut parts = value.trim().splitn(3, ' ');
    let (Some(scheme), Some(token)) = (parts.next(), parts.next()) else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Ok(None);
    }
    Ok(Some(token))
}

/// Reviews bearer tokens with kube-apiserver, through a cache.
pub struct TokenAuthenticator {
    client: kube::Client,
    ttl: Duration,
    retry: RetryPolicy,
    key: ring::hmac::Key,
    cache: Arc<TtlCache<TokenAnswer, TokenError>>,
}

impl std::fmt::Debug for TokenAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuthenticator")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Why the token cache key could not be made.
#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomError;

impl TokenAuthenticator {
    pub fn new(
        client: kube::Client,
        ttl: Duration,
        retry: RetryPolicy,
    ) -> Result<Self, RandomError> {
        let key =
            ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
                .map_err(|_| RandomError)?;
        Ok(Self {
            client,
            ttl,
            retry,
            key,
            cache: Arc::new(TtlCache::new(16_384)),
        })
    }

    /// Who `token` belongs to.
    pub async fn authenticate(&self, token: &str) -> Result<TokenAnswer, TokenError> {
        let mut key = [0u8; 32];
        key.copy_from_slice(ring::hmac::sign(&self.key, token.as_bytes()).as_ref());
        let ttl = self.ttl;
        // The client and the token are copied only on a miss: a hit allocates nothing.
        self.cache
            .get_or_fetch(
                Instant::now(),
                key,
                || review(self.client.clone(), token.to_owned(), self.retry),
                move |_| Some(ttl),
                |answer| matches!(answer, TokenAnswer::User(_)),
                || {
                    TokenError::Review(Arc::new(ReviewError::Aborted {
                        what: "TokenReview",
                    }))
                },
            )
            .await
    }
}

/// One `TokenReview`.
async fn review(
    client: kube::Client,
    token: String,
    retry: RetryPolicy,
) -> Result<TokenAnswer, TokenError> {
    let api: Api<TokenReview> = Api::all(client);
    let request = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token),
            audiences: None,
        },
        ..TokenReview::default()
    };
    let params = PostParams::default();
    let answer = with_retries(retry, "TokenReview", || api.create(&params, &request))
        .await
        .map_err(|e| TokenError::Review(Arc::new(e)))?;
    let status = answer.status.unwrap_or_default();
    if status.authenticated != Some(true) {
        return match status.error.filter(|e| !e.is_empty()) {
            Some(e) => Err(TokenError::Rejected(e)),
            None => Ok(TokenAnswer::Unknown),
        };
    }
    let info = status.user.unwrap_or_default();
    let user = User {
        name: info.username.unwrap_or_default(),
        uid: info.uid.unwrap_or_default(),
        groups: info.groups.unwrap_or_default(),
        extra: info.extra.unwrap_or_default().into_iter().collect(),
    };
    Ok(TokenAnswer::User(Arc::new(user.with_authenticated_group())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn auth(v: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_bytes(v).unwrap(),
        );
        h
    }

    #[test]
    fn bearer_tokens_are_found_as_upstream_finds_them() {
        assert_eq!(bearer(&HeaderMap::new()), Ok(None));
        assert_eq!(bearer(&auth(b"Bearer abc")), Ok(Some("abc")));
        assert_eq!(bearer(&auth(b"bEaReR abc")), Ok(Some("abc")));
        assert_eq!(bearer(&auth(b"  Bearer abc  ")), Ok(Some("abc")));
        assert_eq!(
            bearer(&auth(b"Bearer abc def")),
            Ok(Some("abc")),
            "the second word"
        );
        assert_eq!(
            bearer(&auth(b"Bearer  abc")),
            Ok(None),
            "an empty second word"
        );
        assert_eq!(bearer(&auth(b"Bearer")), Ok(None));
        assert_eq!(bearer(&auth(b"Basic YTpi")), Ok(None));
        assert!(bearer(&auth(b"Bearer \xff")).is_err());
    }
}
