//! `/livez`, `/readyz` and `/healthz` with metrics-server's checks, answered the way
//! k8s.io/apiserver's `healthz` package answers them, so that kubelet probes, dashboards and
//! scripts written for metrics-server read the same bytes.
//!
//! What it promises:
//! - `GET /livez` (and `/readyz`, `/healthz`) is `200 ok` when every check passes; with
//!   `?verbose` the body lists each check (`[+]ping ok`) and ends `livez check passed`.
//! - When a check fails the answer is 500, always verbose, with `[-]NAME failed: reason
//!   withheld` (the reason goes to the log, never to the unauthenticated caller) and ends
//!   `livez check failed`.
//! - `?exclude=NAME` (repeatable) skips a check (`[+]NAME excluded: ok`); a name that matches
//!   nothing adds a `warn:` line.
//! - `GET /livez/NAME` runs one check: `ok`, or 500 `internal server error: REASON`.
//! - The fixed checks of every Kubernetes API server are built in: `ping`, `log`, two
//!   `poststarthook/…` entries, and on `/readyz` `shutdown`, which fails once
//!   [`Health::begin_shutdown`] is called, so load balancers drain before the listener
//!   closes.
//!
//! Checks are closures that the wiring code registers ([`Health::liveness`],
//! [`Health::readiness`], [`Health::health_check`], or all of metrics-server's at once with
//! [`Health::metrics_server`]). A check runs on every probe: it must be cheap and must not
//! block (read an atomic, compare a timestamp).

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::RawQuery;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;

/// A health check: `Err` carries the reason, which is logged and shown only on the check's
/// own path.
pub type Check = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The three health endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Healthz,
    Livez,
    Readyz,
}

impl Endpoint {
    pub const ALL: [Endpoint; 3] = [Endpoint::Healthz, Endpoint::Livez, Endpoint::Readyz];

    /// `healthz`, `livez` or `readyz`, as the body's last line names it.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Healthz => "healthz",
            Endpoint::Livez => "livez",
            Endpoint::Readyz => "readyz",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The poststarthooks every metrics-server reports. metrics-bridge has no such hooks to
/// wait for; the entries keep probe output identical to metrics-server's.
const POST_START_HOOKS: [&str; 2] = [
    "poststarthook/max-in-flight-filter",
    "poststarthook/storage-object-count-tracker-hook",
];

#[derive(Clone)]
struct Named {
    name: Cow<'static, str>,
    check: Check,
}

/// The checks of the three endpoints, and the shutdown flag.
pub struct Health {
    endpoints: [Vec<Named>; 3],
    shutting_down: Arc<AtomicBool>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Health");
        for endpoint in Endpoint::ALL {
            d.field(endpoint.name(), &self.names(endpoint));
        }
        d.field("shutting_down", &self.is_shutting_down()).finish()
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// The built-in checks only: `ping`, `log` and the poststarthooks on every endpoint, and
    /// `shutdown` last on `/readyz`.
    pub fn new() -> Self {
        let shutting_down = Arc::new(AtomicBool::new(false));
        let mut health = Self {
            endpoints: Default::default(),
            shutting_down: Arc::clone(&shutting_down),
        };
        for endpoint in Endpoint::ALL {
            health.add(endpoint, "ping", Arc::new(|| Ok(())));
            health.add(endpoint, "log", Arc::new(crate::logging::check_not_blocked));
            for hook in POST_START_HOOKS {
                health.add(endpoint, hook, Arc::new(|| Ok(())));
            }
        }
        health.add(
            Endpoint::Readyz,
            "shutdown",
            Arc::new(move || {
                if shutting_down.load(Ordering::Relaxed) {
                    Err("process is shutting down".into())
                } else {
                    Ok(())
                }
            }),
        );
        health
    }

    /// metrics-server's checks, in its order, over the built-ins:
    /// - `metric-storage-ready` (readiness): `store_ready()`;
    /// - `metric-informer-sync` (readiness): `nodes_synced()`;
    /// - `metric-collection-timely` (liveness): no tick has gone unstarted for longer than
    ///   1.5 × `resolution` ([`collection_timely`]);
    /// - `metadata-informer-sync` (all three endpoints): `pods_synced()`.
    pub fn metrics_server(
        resolution: Duration,
        last_tick_start: impl Fn() -> Option<SystemTime> + Send + Sync + 'static,
        store_ready: impl Fn() -> bool + Send + Sync + 'static,
        nodes_synced: impl Fn() -> bool + Send + Sync + 'static,
        pods_synced: impl Fn() -> bool + Send + Sync + 'static,
    ) -> Self {
        Self::new()
            .readiness("metric-storage-ready", move || {
                if store_ready() {
                    Ok(())
                } else {
                    Err("no metrics to serve yet".into())
                }
            })
            .readiness(
                "metric-informer-sync",
                informer_synced("/v1, Resource=nodes", nodes_synced),
            )
            .liveness(
                "metric-collection-timely",
                collection_timely(resolution, last_tick_start),
            )
            .health_check(
                "metadata-informer-sync",
                informer_synced("/v1, Resource=pods", pods_synced),
            )
    }

    /// Adds a check to `/livez` only.
    #[must_use]
    pub fn liveness(
        mut self,
        name: impl Into<Cow<'static, str>>,
        check: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.add(Endpoint::Livez, name, Arc::new(check));
        self
    }

    /// Adds a check to `/readyz` only.
    #[must_use]
    pub fn readiness(
        mut self,
        name: impl Into<Cow<'static, str>>,
        check: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.add(Endpoint::Readyz, name, Arc::new(check));
        self
    }

    /// Adds a check to `/healthz`, `/livez` and `/readyz`, as k8s.io/apiserver's
    /// `AddHealthChecks` does.
    #[must_use]
    pub fn health_check(
        mut self,
        name: impl Into<Cow<'static, str>>,
        check: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        let name = name.into();
        let check: Check = Arc::new(check);
        for endpoint in Endpoint::ALL {
            self.add(endpoint, name.clone(), Arc::clone(&check));
        }
        self
    }

    /// Registers `check` on `endpoint`. A name already there is replaced in place; a new
    /// one goes before `shutdown`, which stays last.
    fn add(&mut self, endpoint: Endpoint, name: impl Into<Cow<'static, str>>, check: Check) {
        let name = name.into();
        let checks = &mut self.endpoints[endpoint.index()];
        if let Some(existing) = checks.iter_mut().find(|c| c.name == name) {
            existing.check = check;
            return;
        }
        let at = checks
            .iter()
            .position(|c| c.name == "shutdown")
            .unwrap_or(checks.len());
        checks.insert(at, Named { name, check });
    }

    /// The flag behind the `shutdown` check, for wiring that keeps its own handle.
    pub fn shutdown_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.shutting_down)
    }

    /// Makes `/readyz` fail from now on: the process is going away.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// The check names of `endpoint`, in order.
    pub fn names(&self, endpoint: Endpoint) -> Vec<&str> {
        self.endpoints[endpoint.index()]
            .iter()
            .map(|c| c.name.as_ref())
            .collect()
    }

    /// Runs the checks of `endpoint` and renders the answer k8s.io/apiserver gives.
    pub fn report(&self, endpoint: Endpoint, verbose: bool, exclude: &[String]) -> Report {
        let mut excluded: BTreeSet<&str> = exclude.iter().map(String::as_str).collect();
        let mut body = String::new();
        let mut failures = Vec::new();
        for c in &self.endpoints[endpoint.index()] {
            if excluded.remove(c.name.as_ref()) {
                let _ = writeln!(body, "[+]{} excluded: ok", c.name);
                continue;
            }
            match (c.check)() {
                Ok(()) => {
                    let _ = writeln!(body, "[+]{} ok", c.name);
                }
                Err(reason) => {
                    let _ = writeln!(body, "[-]{} failed: reason withheld", c.name);
                    failures.push((c.name.to_string(), reason));
                }
            }
        }
        if !excluded.is_empty() {
            let names: Vec<String> = excluded.iter().map(|n| format!("{n:?}")).collect();
            let names = names.join(",");
            let _ = writeln!(
                body,
                "warn: some health checks cannot be excluded: no matches for {names}"
            );
            tracing::warn!(
                endpoint = endpoint.name(),
                "cannot exclude some health checks, no health checks are installed matching {names}"
            );
        }
        if !failures.is_empty() {
            let _ = writeln!(body, "{} check failed", endpoint.name());
            let reasons: Vec<String> = failures
                .iter()
                .map(|(name, reason)| format!("{name}: {reason}"))
                .collect();
            tracing::info!(
                endpoint = endpoint.name(),
                failed = %reasons.join("; "),
                "health check failed"
            );
            return Report {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                body,
                failures,
            };
        }
        if verbose {
            let _ = writeln!(body, "{} check passed", endpoint.name());
        } else {
            body = String::from("ok");
        }
        Report {
            status: StatusCode::OK,
            body,
            failures,
        }
    }

    /// Runs the one check `name` of `endpoint`; `None` when there is no such check.
    pub fn report_one(&self, endpoint: Endpoint, name: &str) -> Option<Report> {
        let c = self.endpoints[endpoint.index()]
            .iter()
            .find(|c| c.name == name)?;
        Some(match (c.check)() {
            Ok(()) => Report {
                status: StatusCode::OK,
                body: String::from("ok"),
                failures: Vec::new(),
            },
            Err(reason) => {
                tracing::info!(endpoint = endpoint.name(), check = name, %reason, "health check failed");
                Report {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    body: format!("internal server error: {reason}\n"),
                    failures: vec![(name.to_string(), reason)],
                }
            }
        })
    }
}

/// The answer to one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub status: StatusCode,
    pub body: String,
    /// The failed checks and their reasons.
    pub failures: Vec<(String, String)>,
}

impl IntoResponse for Report {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        response
    }
}

/// metrics-server's `metric-collection-timely`: fails when the last tick started more than
/// 1.5 × `resolution` ago. Before the first tick it passes, as metrics-server's does, so that
/// a slow cache sync does not get the process restarted.
pub fn collection_timely(
    resolution: Duration,
    last_tick_start: impl Fn() -> Option<SystemTime> + Send + Sync + 'static,
) -> impl Fn() -> Result<(), String> + Send + Sync + 'static {
    move || timely_at(resolution, last_tick_start(), SystemTime::now())
}

fn timely_at(
    resolution: Duration,
    last: Option<SystemTime>,
    now: SystemTime,
) -> Result<(), String> {
    let Some(last) = last else {
        return Ok(());
    };
    // A clock stepped backwards reads as "just now", never as a stall.
    let waited = now.duration_since(last).unwrap_or_default();
    let allowed = resolution.mul_f64(1.5);
    if waited > allowed {
        Err(format!(
            "metric collection didn't finish on time: the last tick started {} ago, more than \
             1.5 × --metric-resolution ({})",
            crate::duration::format(waited),
            crate::duration::format(allowed)
        ))
    } else {
        Ok(())
    }
}

/// An informer-sync check: fails with client-go's wording until `synced()` holds.
/// `resource` names the informer as client-go prints a GroupVersionResource
/// (`/v1, Resource=pods`).
pub fn informer_synced(
    resource: &'static str,
    synced: impl Fn() -> bool + Send + Sync + 'static,
) -> impl Fn() -> Result<(), String> + Send + Sync + 'static {
    move || {
        if synced() {
            Ok(())
        } else {
            Err(format!("1 informers not started yet: [{resource}]"))
        }
    }
}

/// The routes: `/healthz`, `/livez`, `/readyz`, and one path per check under each.
pub fn router(health: Arc<Health>) -> Router {
    let mut router = Router::new();
    for endpoint in Endpoint::ALL {
        let h = Arc::clone(&health);
        router = router.route(
            &format!("/{}", endpoint.name()),
            any(move |RawQuery(query): RawQuery| {
                let h = Arc::clone(&h);
                async move {
                    let query = Query::parse(query.as_deref().unwrap_or(""));
                    h.report(endpoint, query.verbose, &query.exclude)
                }
            }),
        );
        for name in health.names(endpoint) {
            // Names are code constants; one that would be read as a route pattern is served
            // only through the aggregate endpoint rather than risk a bad route.
            if !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
            {
                continue;
            }
            let h = Arc::clone(&health);
            let check = name.to_string();
            router = router.route(
                &format!("/{}/{name}", endpoint.name()),
                any(move || {
                    let h = Arc::clone(&h);
                    let check = check.clone();
                    async move {
                        h.report_one(endpoint, &check).map_or_else(
                            || StatusCode::NOT_FOUND.into_response(),
                            IntoResponse::into_response,
                        )
                    }
                }),
            );
        }
    }
    router
}

/// The query parameters the endpoints read, parsed as Go's `url.ParseQuery` does.
#[derive(Debug, Default, PartialEq, Eq)]
struct Query {
    verbose: bool,
    exclude: Vec<String>,
}

impl Query {
    fn parse(raw: &str) -> Self {
        let mut q = Query::default();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match decode(key).as_ref() {
                "verbose" => q.verbose = true,
                "exclude" => q.exclude.push(decode(value).into_owned()),
                _ => {}
            }
        }
        q
    }
}

/// Percent-decoding with `+` as a space; malformed escapes are kept as they are.
fn decode(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |j: usize| bytes.get(j).and_then(|c| (*c as char).to_digit(16));
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                if let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) {
                    out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'?'));
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            _ => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    const LIVEZ_FIXTURE: &str =
        include_str!("../tests/fixtures/kubelet/metrics-server-e2e-expected/livez-verbose.txt");
    const READYZ_FIXTURE: &str =
        include_str!("../tests/fixtures/kubelet/metrics-server-e2e-expected/readyz-verbose.txt");

    /// Switches for metrics-server's checks, flipped by tests.
    #[derive(Default)]
    struct State {
        last_tick: Mutex<Option<SystemTime>>,
        store_ready: AtomicBool,
        nodes_synced: AtomicBool,
        pods_synced: AtomicBool,
    }

    fn metrics_server(state: &Arc<State>, resolution: Duration) -> Health {
        let (a, b, c, d) = (
            Arc::clone(state),
            Arc::clone(state),
            Arc::clone(state),
            Arc::clone(state),
        );
        Health::metrics_server(
            resolution,
            move || a.last_tick.lock().ok().and_then(|t| *t),
            move || b.store_ready.load(Ordering::Relaxed),
            move || c.nodes_synced.load(Ordering::Relaxed),
            move || d.pods_synced.load(Ordering::Relaxed),
        )
    }

    fn healthy() -> Arc<State> {
        let state = Arc::new(State::default());
        state.store_ready.store(true, Ordering::Relaxed);
        state.nodes_synced.store(true, Ordering::Relaxed);
        state.pods_synced.store(true, Ordering::Relaxed);
        if let Ok(mut t) = state.last_tick.lock() {
            *t = Some(SystemTime::now());
        }
        state
    }

    async fn get(router: &Router, uri: &str) -> (StatusCode, String, Option<String>) {
        let request = Request::get(uri)
            .body(Body::empty())
            .unwrap_or_else(|e| panic!("{e}"));
        let response = router
            .clone()
            .oneshot(request)
            .await
            .unwrap_or_else(|e| match e {});
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        (
            status,
            String::from_utf8_lossy(&body).into_owned(),
            content_type,
        )
    }

    #[tokio::test]
    async fn verbose_bodies_match_metrics_server_byte_for_byte() {
        let app = super::router(Arc::new(metrics_server(
            &healthy(),
            Duration::from_secs(15),
        )));
        let (status, body, content_type) = get(&app, "/livez?verbose").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, LIVEZ_FIXTURE);
        assert_eq!(content_type.as_deref(), Some("text/plain; charset=utf-8"));
        let (status, body, _) = get(&app, "/readyz?verbose").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, READYZ_FIXTURE);
        // Any value of verbose counts, as with Go's URL.Query().
        let (_, body, _) = get(&app, "/readyz?verbose=false").await;
        assert_eq!(body, READYZ_FIXTURE);
    }

    #[tokio::test]
    async fn healthz_has_the_checks_every_endpoint_shares() {
        let app = super::router(Arc::new(metrics_server(
            &healthy(),
            Duration::from_secs(15),
        )));
        let (status, body, _) = get(&app, "/healthz?verbose").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            "[+]ping ok\n[+]log ok\n[+]poststarthook/max-in-flight-filter ok\n\
             [+]poststarthook/storage-object-count-tracker-hook ok\n\
             [+]metadata-informer-sync ok\nhealthz check passed\n"
        );
    }

    #[tokio::test]
    async fn healthy_and_not_verbose_is_plain_ok() {
        let app = super::router(Arc::new(metrics_server(
            &healthy(),
            Duration::from_secs(15),
        )));
        for path in ["/livez", "/readyz", "/healthz"] {
            let (status, body, _) = get(&app, path).await;
            assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"), "{path}");
        }
    }

    #[tokio::test]
    async fn a_failing_check_is_500_with_the_reason_withheld() {
        let state = healthy();
        state.store_ready.store(false, Ordering::Relaxed);
        let app = super::router(Arc::new(metrics_server(&state, Duration::from_secs(15))));
        let (status, body, content_type) = get(&app, "/readyz").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            body,
            READYZ_FIXTURE
                .replace(
                    "[+]metric-storage-ready ok",
                    "[-]metric-storage-ready failed: reason withheld"
                )
                .replace("readyz check passed", "readyz check failed")
        );
        assert_eq!(content_type.as_deref(), Some("text/plain; charset=utf-8"));
        // Liveness does not depend on the store.
        let (status, _, _) = get(&app, "/livez").await;
        assert_eq!(status, StatusCode::OK);
        // The check's own path tells the reason.
        let (status, body, _) = get(&app, "/readyz/metric-storage-ready").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body, "internal server error: no metrics to serve yet\n");
        let (status, body, _) = get(&app, "/readyz/metric-informer-sync").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    }

    #[tokio::test]
    async fn a_stalled_collection_fails_liveness() {
        let state = healthy();
        if let Ok(mut t) = state.last_tick.lock() {
            *t = SystemTime::now().checked_sub(Duration::from_secs(23));
        }
        let app = super::router(Arc::new(metrics_server(&state, Duration::from_secs(15))));
        let (status, body, _) = get(&app, "/livez").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            body,
            LIVEZ_FIXTURE
                .replace(
                    "[+]metric-collection-timely ok",
                    "[-]metric-collection-timely failed: reason withheld"
                )
                .replace("livez check passed", "livez check failed")
        );
        let (status, body, _) = get(&app, "/livez/metric-collection-timely").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            body.starts_with(
                "internal server error: metric collection didn't finish on time: the last tick \
                 started 23."
            ),
            "{body}"
        );
        // Readiness is not about timeliness.
        assert_eq!(get(&app, "/readyz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn unsynced_informers_fail_where_metrics_server_registers_them() {
        let state = healthy();
        state.nodes_synced.store(false, Ordering::Relaxed);
        let app = super::router(Arc::new(metrics_server(&state, Duration::from_secs(15))));
        assert_eq!(
            get(&app, "/readyz").await.0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(get(&app, "/livez").await.0, StatusCode::OK);
        let (_, body, _) = get(&app, "/readyz/metric-informer-sync").await;
        assert_eq!(
            body,
            "internal server error: 1 informers not started yet: [/v1, Resource=nodes]\n"
        );

        let state = healthy();
        state.pods_synced.store(false, Ordering::Relaxed);
        let app = super::router(Arc::new(metrics_server(&state, Duration::from_secs(15))));
        for path in ["/readyz", "/livez", "/healthz"] {
            assert_eq!(
                get(&app, path).await.0,
                StatusCode::INTERNAL_SERVER_ERROR,
                "{path}"
            );
        }
        let (_, body, _) = get(&app, "/healthz/metadata-informer-sync").await;
        assert_eq!(
            body,
            "internal server error: 1 informers not started yet: [/v1, Resource=pods]\n"
        );
    }

    #[tokio::test]
    async fn shutdown_fails_readiness_only() {
        let health = Arc::new(metrics_server(&healthy(), Duration::from_secs(15)));
        let app = super::router(Arc::clone(&health));
        assert_eq!(get(&app, "/readyz/shutdown").await.1, "ok");
        health.begin_shutdown();
        assert!(health.is_shutting_down());
        assert!(health.shutdown_flag().load(Ordering::Relaxed));
        let (status, body, _) = get(&app, "/readyz").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            body.ends_with("[-]shutdown failed: reason withheld\nreadyz check failed\n"),
            "{body}"
        );
        assert_eq!(get(&app, "/livez").await.0, StatusCode::OK);
        assert_eq!(get(&app, "/healthz").await.0, StatusCode::OK);
        let (_, body, _) = get(&app, "/readyz/shutdown").await;
        assert_eq!(body, "internal server error: process is shutting down\n");
    }

    #[tokio::test]
    async fn excluded_checks_are_skipped_and_unknown_ones_warned_about() {
        let state = healthy();
        state.store_ready.store(false, Ordering::Relaxed);
        let app = super::router(Arc::new(metrics_server(&state, Duration::from_secs(15))));
        let (status, body, _) = get(
            &app,
            "/readyz?exclude=metric-storage-ready&exclude=nope&exclude=also%2Dnope",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "ok", "excluding the failure makes it pass");
        let (status, body, _) = get(
            &app,
            "/readyz?verbose&exclude=metric-storage-ready&exclude=nope&exclude=also%2Dnope",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            READYZ_FIXTURE
                .replace(
                    "[+]metric-storage-ready ok",
                    "[+]metric-storage-ready excluded: ok"
                )
                .replace(
                    "readyz check passed",
                    "warn: some health checks cannot be excluded: no matches for \
                     \"also-nope\",\"nope\"\nreadyz check passed"
                )
        );
    }

    #[tokio::test]
    async fn unknown_check_paths_are_not_served_here() {
        let app = super::router(Arc::new(Health::new()));
        assert_eq!(get(&app, "/readyz/nope").await.0, StatusCode::NOT_FOUND);
        assert_eq!(get(&app, "/livez/shutdown").await.0, StatusCode::NOT_FOUND);
        assert_eq!(
            get(&app, "/livez/poststarthook/max-in-flight-filter")
                .await
                .1,
            "ok"
        );
    }

    #[test]
    fn registration_replaces_names_and_keeps_shutdown_last() {
        let health = Health::new()
            .readiness("a", || Ok(()))
            .readiness("ping", || Err("replaced".into()))
            .health_check("b", || Ok(()))
            .liveness("c", || Ok(()));
        assert_eq!(
            health.names(Endpoint::Readyz),
            [
                "ping",
                "log",
                POST_START_HOOKS[0],
                POST_START_HOOKS[1],
                "a",
                "b",
                "shutdown"
            ]
        );
        assert_eq!(
            health.names(Endpoint::Livez),
            [
                "ping",
                "log",
                POST_START_HOOKS[0],
                POST_START_HOOKS[1],
                "b",
                "c"
            ]
        );
        let report = health.report(Endpoint::Readyz, false, &[]);
        assert_eq!(
            report.failures,
            [("ping".to_string(), "replaced".to_string())]
        );
    }

    #[test]
    fn timeliness_allows_one_and_a_half_resolutions() {
        let now = SystemTime::now();
        let res = Duration::from_secs(10);
        let ago = |s: u64| now.checked_sub(Duration::from_secs(s));
        assert_eq!(timely_at(res, None, now), Ok(()), "before the first tick");
        let later = now.checked_add(Duration::from_secs(5));
        assert_eq!(timely_at(res, later, now), Ok(()), "clock stepped back");
        assert_eq!(timely_at(res, ago(15), now), Ok(()));
        assert_eq!(
            timely_at(res, ago(16), now),
            Err(
                "metric collection didn't finish on time: the last tick started 16s ago, more \
                 than 1.5 × --metric-resolution (15s)"
                    .into()
            )
        );
    }

    #[test]
    fn queries_decode_like_go() {
        assert_eq!(Query::parse(""), Query::default());
        assert_eq!(
            Query::parse("verbose&exclude=a%2Fb&exclude=c+d&x=1&exclude=%zz"),
            Query {
                verbose: true,
                exclude: vec!["a/b".into(), "c d".into(), "%zz".into()],
            }
        );
        assert!(Query::parse("verbose=0").verbose);
        assert!(Query::parse("v%65rbose").verbose);
    }
}
