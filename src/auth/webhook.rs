//! Calls to kube-apiserver's review APIs (`TokenReview`, `SubjectAccessReview`) with
//! k8s.io/apiserver's webhook retry policy: up to five attempts, 500 ms apart growing by 1.5×
//! with 20% jitter, retried only for what is likely transient (a reset connection, HTTP 429,
//! 500 or 504), all within one deadline (10 s, k8s.io/apiserver's `TokenRequestTimeout` and
//! authorization client timeout).

use std::future::Future;
use std::time::Duration;

use crate::tls::error_chain;

/// How reviews are retried and how long one may take in all.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// The delay before the first retry; each next one is 1.5× longer, plus up to 20%.
    pub initial_delay: Duration,
    /// The deadline for one review, retries included.
    pub timeout: Duration,
}

/// k8s.io/apiserver's `DefaultAuthWebhookRetryBackoff` and 10 s request timeout.
pub const DEFAULT_RETRY: RetryPolicy = RetryPolicy {
    initial_delay: Duration::from_millis(500),
    timeout: Duration::from_secs(10),
};

const FACTOR: f64 = 1.5;
const JITTER: f64 = 0.2;
const STEPS: u32 = 5;

/// Why a review did not produce an answer. Such a failure never grants anything: an
/// unanswered `TokenReview` is a 401, an unanswered `SubjectAccessReview` a 500.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("no answer to the {what} within {after:?}")]
    Timeout { what: &'static str, after: Duration },
    #[error("the API server refused the {what} (HTTP {code}): {message}{hint}")]
    Refused {
        what: &'static str,
        code: u16,
        message: String,
        /// What to change when the refusal is about our own permissions.
        hint: &'static str,
    },
    #[error("cannot reach the API server for the {what}: {source}")]
    Transport {
        what: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("the {what} was abandoned (shutting down)")]
    Aborted { what: &'static str },
}

impl ReviewError {
    fn from_kube(what: &'static str, e: kube::Error) -> Self {
        match e {
            kube::Error::Api(status) => Self::Refused {
                what,
                code: status.code,
                hint: if status.code == 403 {
                    "; grant metrics-bridge's service account the ClusterRole \
                     system:auth-delegator (create tokenreviews and subjectaccessreviews)"
                } else {
                    ""
                },
                message: status.message,
            },
            source => Self::Transport { what, source },
        }
    }
}

/// Whether k8s.io/apiserver's `DefaultShouldRetry` would try again after `e`.
fn should_retry(e: &kube::Error) -> bool {
    if let kube::Error::Api(status) = e {
        return matches!(status.code, 429 | 500 | 504);
    }
    error_chain(e).any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            )
        }) || cause
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_incomplete_message)
    })
}

/// A uniform number in [0, 1) from the system's random source.
fn unit_random() -> f64 {
    let mut bytes = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

/// The delay before retry number `step` (0-based), with jitter.
fn delay(initial: Duration, step: u32) -> Duration {
    let base = initial.as_secs_f64() * FACTOR.powi(i32::try_from(step).unwrap_or(0));
    Duration::from_secs_f64(base * (1.0 + JITTER * unit_random()))
}

/// Runs `attempt` until it succeeds, fails for good, or `policy` runs out.
pub async fn with_retries<T, F, Fut>(
    policy: RetryPolicy,
    what: &'static str,
    mut attempt: F,
) -> Result<T, ReviewError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let run = async {
        let mut step = 0;
        loop {
            match attempt().await {
                Ok(v) => return Ok(v),
                Err(e) if step + 1 < STEPS && should_retry(&e) => {
                    tracing::debug!(error = %e, what, attempt = step + 1, "retrying");
                    tokio::time::sleep(delay(policy.initial_delay, step)).await;
                    step += 1;
                }
                Err(e) => return Err(ReviewError::from_kube(what, e)),
            }
        }
    };
    match tokio::time::timeout(policy.timeout, run).await {
        Ok(result) => result,
        Err(_) => Err(ReviewError::Timeout {
            what,
            after: policy.timeout,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            message: format!("code {code}"),
            ..Default::default()
        }))
    }

    #[test]
    fn backoff_grows_by_half_with_bounded_jitter() {
        for step in 0..4 {
            let base = 0.5 * 1.5f64.powi(step as i32);
            let d = delay(DEFAULT_RETRY.initial_delay, step).as_secs_f64();
            assert!(d >= base && d < base * 1.2 + 1e-9, "step {step}: {d}");
        }
    }

    #[test]
    fn only_transient_failures_are_retried() {
        assert!(should_retry(&api_error(500)));
        assert!(should_retry(&api_error(504)));
        assert!(should_retry(&api_error(429)));
        assert!(!should_retry(&api_error(403)));
        assert!(!should_retry(&api_error(404)));
        let reset = kube::Error::Service(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        assert!(should_retry(&reset));
        let refused = kube::Error::Service(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert!(
            !should_retry(&refused),
            "as DefaultShouldRetry: refused is not transient"
        );
    }

    const FAST: RetryPolicy = RetryPolicy {
        initial_delay: Duration::from_millis(1),
        timeout: Duration::from_secs(30),
    };

    #[tokio::test]
    async fn retries_stop_after_five_attempts_and_name_the_review() {
        let attempts = AtomicU32::new(0);
        let err = with_retries(FAST, "TokenReview", || {
            attempts.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(api_error(500)) }
        })
        .await
        .unwrap_err();
        assert_eq!(attempts.load(Ordering::SeqCst), 5);
        assert_eq!(
            err.to_string(),
            "the API server refused the TokenReview (HTTP 500): code 500"
        );

        let attempts = AtomicU32::new(0);
        let err = with_retries(FAST, "SubjectAccessReview", || {
            attempts.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(api_error(403)) }
        })
        .await
        .unwrap_err();
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
        assert!(err.to_string().contains("system:auth-delegator"), "{err}");

        let attempts = AtomicU32::new(0);
        let ok = with_retries(FAST, "TokenReview", || {
            let n = attempts.fetch_add(1, Ordering::SeqCst);
            async move { if n < 2 { Err(api_error(429)) } else { Ok(n) } }
        })
        .await
        .unwrap();
        assert_eq!(ok, 2);
    }

    #[tokio::test]
    async fn a_hanging_api_server_times_out() {
        let policy = RetryPolicy {
            timeout: Duration::from_millis(20),
            ..FAST
        };
        let err = with_retries(policy, "SubjectAccessReview", || async {
            std::future::pending::<Result<(), kube::Error>>().await
        })
        .await
        .unwrap_err();
        assert!(matches!(err, ReviewError::Timeout { .. }), "{err}");
    }
}
