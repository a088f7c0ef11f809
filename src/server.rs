//! Wiring: the HTTP app, and the process lifecycle that runs watchers, scraper and the secure
//! port together.
//!
//! Start-up order and why:
//! 1. raise the open-file soft limit to the hard limit (Go does this implicitly; thousands of
//!    keep-alive kubelet connections need it);
//! 2. load the kube client config (`--kubeconfig`, else in-cluster) and the kubelet
//!    credentials, start delegated authentication (CA files, the
//!    `extension-apiserver-authentication` ConfigMap) and build both TLS configs once; bad
//!    input fails here, before anything listens;
//! 3. start the node and pod watchers, then listen at once: health answers immediately, while
//!    the metrics API answers 503 (a Kubernetes `Status`, with `Retry-After`) until both caches
//!    have synced. kube-apiserver's availability check then reports the backend as failing
//!    with a clear status instead of "connection refused", `/readyz` keeps the Service from
//!    routing to us until we can answer, and nothing is ever served from a half-filled cache;
//! 4. start scraping once both caches have synced, as metrics-server does (an empty first
//!    tick would only delay the first two points, and one run beside a large cluster's first
//!    pod list competes with it for the same threads; see [`run_scraper`]). Scraping and the
//!    watchers run on a runtime of their own, so that a tick's decoding never queues ahead of
//!    an API request (see `scraping_runtime`).
//!
//! Shutdown (SIGTERM or SIGINT): the `shutdown` readiness check fails first, then the listener
//! closes and in-flight requests finish, then the scraper and watchers stop.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use crate::api::ApiState;
use crate::auth::{Auth, AuthError};
use crate::cluster::ClusterState;
use crate::cluster::watch::{NodeSync, PodSync};
use crate::exposition::{ExpositionState, LabelsAllowlist};
use crate::health::Health;
use crate::options::Options;
use crate::scrape::{KubeletAuth, ScrapeConfig, ScrapeError, ScrapeStats, Scraper};
use crate::selfmetrics::SelfMetrics;
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
    #[error(transparent)]
    Auth(#[from] AuthError),
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
    #[error("cannot start the scraping runtime: {source}")]
    Runtime {
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
    /// metrics-server's probes over these components; its `shutdown` check fails once
    /// shutdown begins.
    pub health: Arc<Health>,
    /// `/metrics`, and the observers the API and `/metrics/resource` report to.
    pub self_metrics: Arc<SelfMetrics>,
    /// `--metric-labels-allowlist`, for `/metrics/resource`.
    pub labels: Arc<LabelsAllowlist>,
}

impl Components {
    pub fn new(resolution: Duration) -> Self {
        let cluster = Arc::new(ClusterState::new());
        let store = Arc::new(Store::new(resolution));
        let scrape_stats = Arc::new(ScrapeStats::new(resolution));
        let health = {
            let (stats, store, nodes, pods) = (
                Arc::clone(&scrape_stats),
                Arc::clone(&store),
                Arc::clone(&cluster),
                Arc::clone(&cluster),
            );
            Health::metrics_server(
                resolution,
                move || stats.last_tick_start(),
                move || store.ready(),
                move || nodes.nodes_synced(),
                move || pods.pods_synced(),
            )
        };
        let health = Arc::new(health);
        let self_metrics = {
            let (cluster, store, health) = (
                Arc::clone(&cluster),
                Arc::clone(&store),
                Arc::clone(&health),
            );
            SelfMetrics::new(crate::selfmetrics::Sources {
                resolution,
                scrape: Arc::clone(&scrape_stats),
                store: Arc::clone(&store),
                cluster: Arc::clone(&cluster),
                ready: Box::new(move || {
                    cluster.nodes_synced()
                        && cluster.pods_synced()
                        && store.ready()
                        && !health.is_shutting_down()
                }),
            })
        };
        Self {
            cluster,
            store,
            scrape_stats,
            health,
            self_metrics: Arc::new(self_metrics),
            labels: Arc::default(),
        }
    }

    /// Both caches have synced, so the API may answer.
    pub fn synced(&self) -> bool {
        self.cluster.nodes_synced() && self.cluster.pods_synced()
    }
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

/// Unknown paths get kube-apiserver's 404 `Status`.
async fn not_found() -> Response {
    Status::path_not_found().into_response()
}

/// Puts `api` behind the sync gate, next to the health probes, which answer at once.
pub fn compose(c: &Components, api: Router) -> Router {
    let gated = api.layer(axum::middleware::from_fn_with_state(
        c.clone(),
        until_synced,
    ));
    crate::health::router(Arc::clone(&c.health))
        .merge(gated)
        .fallback(not_found)
}

/// The whole HTTP app: the `metrics.k8s.io` API and `/metrics/resource` (after sync),
/// `/metrics` and the health probes.
pub fn app(c: &Components) -> Router {
    let api = crate::api::router(
        ApiState::new(Arc::clone(&c.cluster), Arc::clone(&c.store))
            .with_observer(c.self_metrics.api_observer()),
    )
    .layer(axum::middleware::from_fn_with_state(
        Arc::clone(c.self_metrics.api()),
        crate::selfmetrics::track_api,
    ));
    let resource = crate::exposition::router(
        ExpositionState::new(
            Arc::clone(&c.cluster),
            Arc::clone(&c.store),
            Arc::clone(&c.labels),
        )
        .with_observer(c.self_metrics.exposition_observer()),
    );
    compose(c, api.merge(resource)).merge(crate::selfmetrics::router(Arc::clone(&c.self_metrics)))
}

/// [`app`] behind authentication and authorization, with every request stamped on arrival
/// so that the API's latency includes both (see [`crate::selfmetrics::stamp_received`]).
pub fn secured(auth: &Arc<Auth>, c: &Components) -> Router {
    auth.protect(app(c)).layer(axum::middleware::from_fn(
        crate::selfmetrics::stamp_received,
    ))
}

/// Raises the soft open-file limit to the hard limit, as Go's runtime does at start (since Go
/// 1.19, so metrics-server gets it for free), and logs both: the kubelet connection budget is
/// derived from the soft limit (`scrape::idle_budget_for`).
pub fn raise_nofile_limit() {
    let before = rlimit::Resource::NOFILE.get();
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(soft) => {
            let hard = rlimit::Resource::NOFILE
                .get()
                .map_or(soft, |(_, hard)| hard);
            tracing::info!(
                soft,
                hard,
                was = before.map_or(soft, |(soft, _)| soft),
                "open-file limit"
            );
        }
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

/// Starts the node and pod watchers on `runtime`; removals reach the store and the scrape
/// stats at once.
pub fn spawn_watchers(
    runtime: &tokio::runtime::Handle,
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
        runtime.spawn(crate::cluster::watch::watch_nodes(
            client.clone(),
            options.cluster.node_selector.clone(),
            nodes,
        )),
        runtime.spawn(crate::cluster::watch::watch_pods(client, pods)),
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

/// Runs the scraper once the node and pod caches have synced, until `stop` resolves.
///
/// Waiting for the pods too is metrics-server's order (`WaitForCacheSync` on both informers
/// before `runScrape`), and it matters at scale: the first list of a large cluster's pods
/// (560,000 at 20,000 nodes) decodes on the scraping threads, and a first tick run beside
/// it, every node a fresh TLS handshake, timed out half the nodes. Nothing is lost by
/// waiting: the metrics API answers only once both caches have synced anyway.
///
/// Meanwhile, once the nodes are known, the scraper connects to their kubelets
/// ([`Scraper::warm_up`]), so that the first tick finds them connected. The first tick never
/// waits for that: it starts as soon as the pods have synced, and connections not yet opened
/// are left to it.
pub async fn run_scraper(
    scraper: Scraper,
    cluster: Arc<ClusterState>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    let synced = || cluster.nodes_synced() && cluster.pods_synced();
    while !cluster.nodes_synced() {
        tokio::select! {
            _ = poll.tick() => {}
            () = &mut stop => return,
        }
    }
    if !synced() {
        let started = std::time::Instant::now();
        let warm_up = scraper.warm_up();
        tokio::pin!(warm_up);
        let mut warming = true;
        while !synced() {
            tokio::select! {
                opened = &mut warm_up, if warming => {
                    warming = false;
                    tracing::info!(opened, took = ?started.elapsed(), "kubelet connections opened while the pod cache syncs");
                }
                _ = poll.tick() => {}
                () = &mut stop => return,
            }
        }
        if warming {
            tracing::info!(pool = ?scraper.pool_stats(), took = ?started.elapsed(), "the pod cache synced while kubelet connections were being opened; the first tick opens the rest");
        }
    }
    scraper.run(stop).await;
}

/// The client for delegated reviews: from `kubeconfig` (`--authentication-kubeconfig` or
/// `--authorization-kubeconfig`), else the cluster client, as metrics-server does.
async fn delegated_client(
    kubeconfig: Option<&Path>,
    cluster: &kube::Client,
) -> Result<kube::Client, ServerError> {
    match kubeconfig {
        None => Ok(cluster.clone()),
        Some(path) => kube::Client::try_from(kube_config(Some(path)).await?)
            .map_err(|source| ServerError::Client { source }),
    }
}

/// Starts delegated authentication and authorization (see [`crate::auth`]).
pub async fn start_auth(
    options: &Options,
    cluster: &kube::Client,
) -> Result<Arc<Auth>, ServerError> {
    let authn = delegated_client(options.authentication.kubeconfig.as_deref(), cluster).await?;
    let authz = delegated_client(options.authorization.kubeconfig.as_deref(), cluster).await?;
    Ok(Auth::start(
        &options.authentication,
        &options.authorization,
        authn,
        authz,
    )
    .await?)
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

/// The runtime that scrapes and watches, apart from the one that serves. A tick decodes
/// thousands of kubelet pages back to back; on one runtime an API request waits in the run
/// queue behind every scrape task that became ready before it (at 5,000 nodes on one core the
/// HPA query's p99 was 650 ms at 280 req/s). On threads of their own, the kernel shares the
/// CPU between serving and scraping threads fairly and a request's thread runs soon after it
/// wakes. The scraping threads are deliberately not given a lower priority: at nice +10, an
/// API load that kept the serving thread busy starved the scrapes of a 20,000-node cluster
/// into timeouts, and a busy metrics API must not cost the cluster its metrics. As many
/// workers as CPUs, like the serving runtime: either may use every core when the other is idle.
fn scraping_runtime() -> Result<tokio::runtime::Runtime, ServerError> {
    tokio::runtime::Builder::new_multi_thread()
        .thread_name("scrape")
        .enable_all()
        .build()
        .map_err(|source| ServerError::Runtime { source })
}

/// How long in-flight requests may take to finish after the listener closes (k8s.io/apiserver's
/// default `ShutdownTimeout`).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs metrics-bridge until SIGTERM/SIGINT: see the module docs for the order of things.
pub async fn run(options: Options) -> Result<(), ServerError> {
    raise_nofile_limit();
    let kube = kube_config(options.cluster.kubeconfig.as_deref()).await?;
    let client =
        kube::Client::try_from(kube.clone()).map_err(|source| ServerError::Client { source })?;
    let mut c = Components::new(options.metric_resolution);
    c.labels = Arc::new(options.metric_labels_allowlist.clone());
    let scraper = build_scraper(&options, &kube, &c)?;
    let auth = start_auth(&options, &client).await?;
    let tls = ReloadingServerConfig::new(options.serving.clone(), auth.client_cert_verifier())?;
    let listener = bind(&options).await?;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving on the secure port; the metrics API answers once the node and pod caches have synced");
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let scraping_rt = scraping_runtime()?;
    let watchers = spawn_watchers(scraping_rt.handle(), client, &options, &c);
    let auth_tasks = auth.spawn(stop_rx.clone());
    let scraping = scraping_rt.spawn(run_scraper(
        scraper,
        Arc::clone(&c.cluster),
        flagged(stop_rx.clone()),
    ));
    let mut serving = tokio::spawn(serve(
        listener,
        tls,
        secured(&auth, &c),
        !options.serving.disable_http2_serving,
        stop_rx,
    ));

    let early_end = tokio::select! {
        () = termination_signal() => None,
        ended = &mut serving => Some(ended),
    };
    // Readiness fails first, so load balancers stop sending before the listener closes.
    c.health.begin_shutdown();
    let _ = stop_tx.send(true);
    let served = match early_end {
        Some(ended) => ended,
        None => match tokio::time::timeout(DRAIN_TIMEOUT, &mut serving).await {
            Ok(ended) => ended,
            Err(_) => {
                tracing::warn!(
                    "in-flight requests did not finish within {DRAIN_TIMEOUT:?}; stopping anyway"
                );
                serving.abort();
                Ok(Ok(()))
            }
        },
    };
    let _ = scraping.await;
    for w in watchers.into_iter().chain(auth_tasks) {
        w.abort();
    }
    // Dropping a runtime blocks until its tasks end, which async code must not do; what is
    // left there (idle connections, aborted watchers) needs no waiting for.
    scraping_rt.shutdown_background();
    match served {
        Ok(result) => result,
        Err(join) => Err(ServerError::Serve {
            source: std::io::Error::other(join),
        }),
    }
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
        let app = compose(&c, api);
        // Health answers at once; as in metrics-server, the pod cache's sync is part of every
        // probe, and readiness also waits for the node cache and the store.
        assert_eq!(get_status(&app, "/livez/ping").await, (200, None));
        assert_eq!(get_status(&app, "/livez").await.0, 500);
        assert_eq!(get_status(&app, "/readyz").await.0, 500);
        assert_eq!(get_status(&app, "/apis").await, (503, Some("1".into())));
        c.cluster.set_nodes_synced();
        assert_eq!(get_status(&app, "/apis").await.0, 503);
        c.cluster.set_pods_synced();
        assert_eq!(get_status(&app, "/apis").await, (200, None));
        assert_eq!(get_status(&app, "/livez").await, (200, None));
        assert_eq!(get_status(&app, "/readyz").await.0, 500, "no metrics yet");
        assert_eq!(get_status(&app, "/nope").await.0, 404);
    }

    /// Scraping tasks run on the scraping runtime's own threads, never on the caller's.
    #[test]
    fn scraping_runs_on_threads_of_its_own() {
        let rt = scraping_runtime().unwrap();
        let here = std::thread::current().id();
        let (name, id) = rt
            .block_on(rt.spawn(async {
                let t = std::thread::current();
                (t.name().map(str::to_owned), t.id())
            }))
            .unwrap();
        assert_eq!(name.as_deref(), Some("scrape"));
        assert_ne!(id, here);
        rt.shutdown_background();
    }

    /// No tick starts before both caches have synced (metrics-server's order), and one starts
    /// as soon as they have.
    #[tokio::test]
    async fn scraping_starts_once_nodes_and_pods_have_synced() {
        let mut options = Options::default();
        options.kubelet.insecure_tls = true;
        let kube = kube::Config::new("https://127.0.0.1:6443".parse().unwrap());
        let c = Components::new(Duration::from_secs(15));
        let scraper = build_scraper(&options, &kube, &c).unwrap();
        let (stop_tx, stop_rx) = watch::channel(false);
        let running = tokio::spawn(run_scraper(
            scraper,
            Arc::clone(&c.cluster),
            flagged(stop_rx),
        ));

        // The scraper polls the flags every 50 ms, so six polls see the nodes synced.
        c.cluster.set_nodes_synced();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            c.scrape_stats.last_tick_start(),
            None,
            "pods not synced yet"
        );

        c.cluster.set_pods_synced();
        let mut waited = 0;
        while c.scrape_stats.last_tick_start().is_none() && waited < 100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            waited += 1;
        }
        assert!(
            c.scrape_stats.last_tick_start().is_some(),
            "no tick after sync"
        );

        stop_tx.send(true).unwrap();
        running.await.unwrap();
    }

    #[tokio::test]
    async fn the_real_app_serves_discovery_once_synced() {
        let c = Components::new(Duration::from_secs(15));
        let app = app(&c);
        assert_eq!(
            get_status(&app, "/apis/metrics.k8s.io/v1beta1").await.0,
            503
        );
        c.cluster.set_nodes_synced();
        c.cluster.set_pods_synced();
        assert_eq!(
            get_status(&app, "/apis/metrics.k8s.io/v1beta1").await.0,
            200
        );
        assert_eq!(get_status(&app, "/healthz").await.0, 200);
        c.health.begin_shutdown();
        assert_eq!(get_status(&app, "/readyz").await.0, 500);
    }
}
