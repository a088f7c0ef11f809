//! Wiring: the HTTP app, and the process lifecycle that runs watchers, scraper and the secure
//! port together.
//!
//! Start-up order and why:
//! 1. raise the open-file soft limit to the hard limit (Go does this implicitly; thousands of
//!    keep-alive kubelet connections need it);
//! 2. load the kube client config (`--kubeconfig`, else in-cluster) and the kubelet
//!    credentials, and build both TLS configs once; bad input fails here, before anything
//!    listens;
//! 3. start the node and pod watchers, then listen at once: health answers immediately, while
//!    the metrics API answers 503 (a Kubernetes `Status`, with `Retry-After`) until both caches
//!    have synced. kube-apiserver's availability check then reports the backend as failing
//!    with a clear status instead of "connection refused", `/readyz` keeps the Service from
//!    routing to us until we can answer, and nothing is ever served from a half-filled cache;
//! 4. start scraping once the node cache has synced (an empty first tick would only delay the
//!    first two points).
//!
//! Shutdown (SIGTERM or SIGINT): the `shutdown` readiness check fails first, then the listener
//! closes and in-flight requests finish, then the scraper and watchers stop.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use crate::cluster::ClusterState;
use crate::cluster::watch::{NodeSync, PodSync};
use crate::options::Options;
use crate::scrape::{KubeletAuth, ScrapeConfig, ScrapeError, ScrapeStats, Scraper};
use crate::status::Status;
use crate::store::Store;
use crate::tls::{ReloadingServerConfig, TlsError};

/// Why the server could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot load the kubeconfig {path}: {source}")]
    Kubeconfig {
        path: std::path::PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error(
        "cannot load the in-cluster configuration (pass --kubeconfig when running outside a \
         cluster): {source}"
    )]
    InCluster {
        #[source]
        source: kube::config::InClusterError,
    },
    #[error("cannot create the Kubernetes client: {source}")]
    Client {
        #[source]
        source: kube::Error,
    },
    #[error("kubelet client: {0}")]
    Scrape(#[from] ScrapeError),
    #[error("serving certificate: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot listen on {addr} (--bind-address/--secure-port): {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the secure port failed: {source}")]
    Serve {
        #[source]
        source: std::io::Error,
    },
}

/// The long-lived state every part reads.
#[derive(Debug, Clone)]
pub struct Components {
    pub cluster: Arc<ClusterState>,
    pub store: Arc<Store>,
    pub scrape_stats: Arc<ScrapeStats>,
    /// Set when shutdown begins; the `shutdown` readiness check reads it.
    pub shutting_down: Arc<AtomicBool>,
    pub resolution: Duration,
    /// When the process started: stands in for the first tick's start in the liveness check.
    pub started: SystemTime,
}

impl Components {
    pub fn new(resolution: Duration) -> Self {
        Self {
            cluster: Arc::new(ClusterState::new()),
            store: Arc::new(Store::new(resolution)),
            scrape_stats: Arc::new(ScrapeStats::new(resolution)),
            shutting_down: Arc::new(AtomicBool::new(false)),
            resolution,
            started: SystemTime::now(),
        }
    }

    /// Both caches have synced, so the API may answer.
    pub fn synced(&self) -> bool {
        self.cluster.nodes_synced() && self.cluster.pods_synced()
    }

    /// `metric-collection-timely`: a tick has started within 1.5 × the resolution.
    pub fn check_collection_timely(&self) -> Result<(), String> {
        let last = match self.scrape_stats.last_tick_start_ns() {
            0 => self.started,
            ns => SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(ns).unwrap_or(0)),
        };
        let waited = SystemTime::now().duration_since(last).unwrap_or_default();
        let limit = self.resolution.mul_f64(1.5);
        if waited > limit {
            return Err(format!(
                "time since last tick ({}) was greater than expected metrics resolution ({})",
                crate::duration::format(waited),
                crate::duration::format(limit)
            ));
        }
        Ok(())
    }

    /// `metric-informer-sync`: the node cache has synced.
    pub fn check_nodes_synced(&self) -> Result<(), String> {
        passed(self.cluster.nodes_synced(), "node informer not synced yet")
    }

    /// `metadata-informer-sync`: the pod metadata cache has synced.
    pub fn check_pods_synced(&self) -> Result<(), String> {
        passed(
            self.cluster.pods_synced(),
            "1 informers not started yet: [/v1, Resource=pods]",
        )
    }

    /// `metric-storage-ready`: the store can serve rates.
    pub fn check_storage_ready(&self) -> Result<(), String> {
        passed(self.store.ready(), "no metrics to serve")
    }

    /// `shutdown`: fails from the moment shutdown begins.
    pub fn check_not_shutting_down(&self) -> Result<(), String> {
        passed(
            !self.shutting_down.load(Ordering::Acquire),
            "process is shutting down",
        )
    }
}

fn passed(ok: bool, failure: &str) -> Result<(), String> {
    if ok { Ok(()) } else { Err(failure.to_owned()) }
}

/// Answers 503 until both caches have synced.
async fn until_synced(State(c): State<Components>, req: Request, next: Next) -> Response {
    if c.synced() {
        return next.run(req).await;
    }
    let mut resp = Status::service_unavailable().into_response();
    resp.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
    resp
}

/// Puts `api` behind the sync gate and merges it with the routes that answer at once.
pub fn compose(c: &Components, api: Router, always: Router) -> Router {
    let gated = api.layer(axum::middleware::from_fn_with_state(
        c.clone(),
        until_synced,
    ));
    always.merge(gated)
}

/// Raises the soft open-file limit to the hard limit.
pub fn raise_nofile_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}

/// The Kubernetes client config: `--kubeconfig`, else in-cluster.
pub async fn kube_config(path: Option<&Path>) -> Result<kube::Config, ServerError> {
    match path {
        Some(path) => {
            let err = |source| ServerError::Kubeconfig {
                path: path.to_owned(),
                source,
            };
            let file = kube::config::Kubeconfig::read_from(path).map_err(err)?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(err)
        }
        None => kube::Config::incluster().map_err(|source| ServerError::InCluster { source }),
    }
}

/// Starts the node and pod watchers; removals reach the store and the scrape stats at once.
pub fn spawn_watchers(
    client: kube::Client,
    options: &Options,
    c: &Components,
) -> Vec<tokio::task::JoinHandle<()>> {
    let store = Arc::clone(&c.store);
    let stats = Arc::clone(&c.scrape_stats);
    let nodes = NodeSync::new(
        Arc::clone(&c.cluster),
        Arc::new(move |node: &str| {
            store.remove_node(node);
            stats.remove_node(node);
        }),
    );
    let store = Arc::clone(&c.store);
    let pods = PodSync::new(
        Arc::clone(&c.cluster),
        Arc::new(move |ns: &str, name: &str| store.remove_pod(ns, name)),
    );
    vec![
        tokio::spawn(crate::cluster::watch::watch_nodes(
            client.clone(),
            options.cluster.node_selector.clone(),
            nodes,
        )),
        tokio::spawn(crate::cluster::watch::watch_pods(client, pods)),
    ]
}

/// Waits for SIGTERM or SIGINT.
pub async fn termination_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = term => tracing::info!("received SIGTERM; shutting down"),
        r = tokio::signal::ctrl_c() => match r {
            Ok(()) => tracing::info!("received SIGINT; shutting down"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGINT");
                std::future::pending::<()>().await;
            }
        },
    }
}

/// Resolves when `flag` turns true.
async fn flagged(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|&v| v).await;
}

/// Runs the scraper once the node cache has synced, until `stop` resolves.
pub async fn run_scraper(
    scraper: Scraper,
    cluster: Arc<ClusterState>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    while !cluster.nodes_synced() {
        tokio::select! {
            _ = poll.tick() => {}
            () = &mut stop => return,
        }
    }
    scraper.run(stop).await;
}

/// Builds the scraper from the options and the kube client config.
pub fn build_scraper(
    options: &Options,
    kube: &kube::Config,
    c: &Components,
) -> Result<Scraper, ServerError> {
    let auth = KubeletAuth::from_kube_config(kube, &options.kubelet)?;
    Ok(Scraper::with_auth(
        ScrapeConfig::from_options(options),
        auth,
        Arc::clone(&c.cluster),
        Arc::clone(&c.store),
        Arc::clone(&c.scrape_stats),
    )?)
}

/// Binds the secure port.
pub async fn bind(options: &Options) -> Result<tokio::net::TcpListener, ServerError> {
    let addr = SocketAddr::new(options.serving.bind_address, options.serving.secure_port);
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// Serves `app` on `listener` until `stop` resolves, reloading the certificate when it changes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<ReloadingServerConfig>,
    app: Router,
    http2: bool,
    stop: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let reload =
        tokio::spawn(Arc::clone(&tls).watch(crate::tls::RELOAD_INTERVAL, flagged(stop.clone())));
    let opts = crate::https::ServeOptions {
        http2,
        ..Default::default()
    };
    let served = crate::https::serve(listener, tls, app, opts, flagged(stop)).await;
    reload.abort();
    served.map_err(|source| ServerError::Serve { source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tower::ServiceExt as _;

    async fn get_status(app: &Router, path: &str) -> (u16, Option<String>) {
        let resp = app
            .clone()
            .oneshot(
                http::Request::get(path)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let retry = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned());
        (resp.status().as_u16(), retry)
    }

    #[tokio::test]
    async fn the_api_answers_503_until_both_caches_sync_and_health_at_once() {
        let c = Components::new(Duration::from_secs(15));
        let api = Router::new().route("/apis", get(|| async { "api" }));
        let always = Router::new().route("/livez", get(|| async { "ok" }));
        let app = compose(&c, api, always);
        assert_eq!(get_status(&app, "/livez").await, (200, None));
        assert_eq!(get_status(&app, "/apis").await, (503, Some("1".into())));
        c.cluster.set_nodes_synced();
        assert_eq!(get_status(&app, "/apis").await.0, 503);
        c.cluster.set_pods_synced();
        assert_eq!(get_status(&app, "/apis").await, (200, None));
    }

    #[test]
    fn checks_report_sync_shutdown_and_tick_age() {
        let mut c = Components::new(Duration::from_secs(10));
        assert!(c.check_nodes_synced().is_err());
        c.cluster.set_nodes_synced();
        assert_eq!(c.check_nodes_synced(), Ok(()));
        assert!(c.check_pods_synced().is_err());
        assert_eq!(c.check_not_shutting_down(), Ok(()));
        c.shutting_down.store(true, Ordering::Release);
        assert!(c.check_not_shutting_down().is_err());

        // No tick yet: measured from the process start.
        assert_eq!(c.check_collection_timely(), Ok(()));
        c.started = SystemTime::now() - Duration::from_secs(16);
        let err = c.check_collection_timely().unwrap_err();
        assert!(err.starts_with("time since last tick (16"), "{err}");
        assert!(
            err.ends_with("was greater than expected metrics resolution (15s)"),
            "{err}"
        );
    }
}
