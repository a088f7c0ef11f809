//! kube-sim: a simulated Kubernetes cluster (API server, aggregation layer, kubelets) to run
//! and test metrics-bridge against.
//!
//! Startup: bind the API server's port (so `127.0.0.1:0` resolves first), make the PKI, the
//! model and the object store, start every kubelet, write the files into `--dir`, serve the
//! API, and print one line containing `ready`. SIGINT and SIGTERM stop everything.
#![forbid(unsafe_code)]
// Handlers return `Result<_, Status>` where the error is the Kubernetes Status body sent once
// per failed request; boxing it would only add an allocation to the error path.
#![allow(clippy::result_large_err)]

mod aggregator;
mod apiserver;
mod auth;
mod control;
mod external;
mod kubelet;
mod model;
mod objects;
mod pki;
mod rbac;
mod webhook;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;

use crate::aggregator::{Aggregator, BackendSpec};
use crate::apiserver::{ApiOptions, ApiServer, ReloadingTls};
use crate::auth::Authenticator;
use crate::control::{Control, Plane, Rates};
use crate::external::{External, ExternalOptions};
use crate::kubelet::{Fault, KubeletAuth, Kubelets};
use crate::model::{Model, SimParams};
use crate::objects::{Object, Store};
use crate::pki::Pki;

fn files_help() -> String {
    let mut s = String::from("Files written to --dir:\n");
    for (name, what) in pki::FILES {
        s.push_str(&format!("  {name:<26} {what}\n"));
    }
    s.push_str("\nControl endpoints (admin only) are listed in docs/kube-sim.md.");
    s
}

/// A `--fault NODE=KIND` flag.
#[derive(Debug, Clone)]
struct FaultFlag {
    node: String,
    fault: Fault,
}

fn parse_fault_flag(s: &str) -> Result<FaultFlag, String> {
    let (node, kind) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NODE=KIND, got {s:?}"))?;
    let fault = kind.parse::<Fault>().map_err(|e| e.to_string())?;
    Ok(FaultFlag {
        node: node.to_string(),
        fault,
    })
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    metrics_bridge::duration::parse(s).map_err(|e| e.to_string())
}

/// A simulated Kubernetes cluster: API server, aggregation layer and one kubelet per node.
#[derive(Debug, Parser)]
#[command(name = "kube-sim", version, after_help = files_help())]
struct Args {
    /// Directory for the kubeconfigs, CAs, keys and tokens (created if missing).
    #[arg(long, required_unless_present = "print_policy")]
    dir: Option<PathBuf>,
    /// Number of nodes (each gets a kubelet on 127.1.x.y).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Index of the first node: the nodes are node-<N+1> … on the matching 127.1.x.y
    /// addresses, so several kube-sims (with the same --seed and --pods-per-node) can put
    /// disjoint node ranges into one cluster (--external-apiserver).
    #[arg(long, default_value_t = 0, value_name = "N")]
    first_node: usize,
    #[arg(long, default_value_t = 10)]
    pods_per_node: usize,
    #[arg(long, default_value_t = 2)]
    containers_per_pod: usize,
    /// Seed of every name, placement, rate and working set.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Address of the API server; port 0 picks a free port (printed in the ready line).
    #[arg(long, default_value = "127.0.0.1:6443")]
    apiserver_addr: SocketAddr,
    /// Port every kubelet listens on, each on its node's own 127.1.x.y address.
    #[arg(long, default_value_t = 10250)]
    kubelet_port: u16,
    /// Serve GROUP through a backend, as an APIService: GROUP=URL or GROUP/V1,V2=URL
    /// (metrics.k8s.io defaults to versions v1beta1 and v1), not verifying the backend
    /// (insecureSkipTLSVerify); add ,ca=FILE[,name=SERVICE.NAMESPACE.svc] to verify it against
    /// that caBundle and name (also sent as SNI). Repeatable.
    #[arg(long, value_name = "GROUP=URL[,ca=FILE,name=HOST]")]
    aggregate: Vec<BackendSpec>,
    /// A kubelet fault from the start: NODE=KIND with KIND one of slow:DURATION, hang,
    /// http500, truncated, garbage, wrong-san, wrong-ca, refused, `huge[:BYTES]`. Repeatable.
    #[arg(long, value_name = "NODE=KIND", value_parser = parse_fault_flag)]
    fault: Vec<FaultFlag>,
    /// Pods replaced (one deleted, one created) per minute.
    #[arg(long, default_value_t = 0.0)]
    churn_per_minute: f64,
    /// Container restarts per minute, on Running pods chosen from the seed.
    #[arg(long, default_value_t = 0.0)]
    restarts_per_minute: f64,
    /// Events kept per resource for watches and paged lists; older resourceVersions get 410.
    #[arg(long, default_value_t = 10_000)]
    watch_history: usize,
    /// How often watches with allowWatchBookmarks=true get a BOOKMARK.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    bookmark_interval: Duration,
    /// How often the aggregator checks its backends' availability and discovery.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    aggregator_probe_interval: Duration,
    /// Treat requests without credentials as system:anonymous (kube-apiserver's default);
    /// with false they get 401.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    anonymous_auth: bool,
    /// Authorize with RBAC objects instead of the fixed policy: the cluster's bootstrap
    /// roles and bindings plus every ClusterRole, ClusterRoleBinding, Role and RoleBinding in
    /// FILE (multi-document YAML, such as deploy/components.yaml; other kinds are ignored).
    #[arg(long, value_name = "FILE")]
    rbac: Option<PathBuf>,
    /// Put the nodes and pods into the cluster of this kubeconfig instead of serving an API:
    /// for a control plane without kubelets (e.g. KWOK). kube-sim then registers the nodes,
    /// creates, binds and updates the pods, heartbeats, authenticates kubelet requests with
    /// TokenReview/SubjectAccessReview, serves only /sim/* on --apiserver-addr, and deletes
    /// what it created when it stops. The identity needs the ClusterRole kube-sim:external
    /// (docs/kube-sim.md).
    #[arg(long, value_name = "KUBECONFIG")]
    external_apiserver: Option<PathBuf>,
    /// With --external-apiserver: API requests in flight while syncing and cleaning up.
    #[arg(long, default_value_t = 32)]
    external_concurrency: usize,
    /// With --external-apiserver: how often each node's Lease is renewed.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    node_lease_renew_interval: Duration,
    /// With --external-apiserver: leaseDurationSeconds of the node Leases.
    #[arg(long, default_value_t = 40)]
    node_lease_duration_seconds: i32,
    /// With --external-apiserver: how often each node re-posts its status heartbeat.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    node_status_report_frequency: Duration,
    /// Print the authorization policy as a Markdown table and exit.
    #[arg(long)]
    print_policy: bool,
    /// Log verbosity (0-3); RUST_LOG overrides.
    #[arg(short = 'v', long, default_value_t = 0)]
    verbosity: u8,
}

/// Why kube-sim could not start.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("creating --dir {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("binding the API server to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error(transparent)]
    Rbac(#[from] rbac::RbacError),
    #[error(transparent)]
    Objects(#[from] objects::ObjectsError),
    #[error(transparent)]
    Kubelet(#[from] kubelet::KubeletError),
    #[error("--fault names node {0:?}, which does not exist")]
    FaultNode(String),
    #[error("--first-node plus --nodes is {0}, more than kube-sim supports ({max})", max = model::MAX_NODES)]
    TooManyNodes(usize),
    #[error("invalid --{flag}: {reason}")]
    Flag { flag: &'static str, reason: String },
    #[error(transparent)]
    External(#[from] external::ExternalError),
    #[error(transparent)]
    Webhook(#[from] webhook::WebhookError),
    #[error("a thread building the initial objects panicked")]
    LoadPanicked,
    #[error(
        "--nodes {nodes} needs a listening socket per kubelet, more than RLIMIT_NOFILE allows: the limit is {soft} (hard {hard}, which only a privileged process can raise); use fewer nodes or raise the hard limit (ulimit -Hn)"
    )]
    FdLimit { nodes: u64, soft: u64, hard: u64 },
    #[error("{0}; then cleaning up what was created failed: {1}")]
    ExternalCleanup(external::ExternalError, external::ExternalError),
}

/// File descriptors kube-sim needs besides one listener per kubelet: the API server, its
/// clients and watches, the runtime.
const FD_RESERVE: u64 = 256;

/// Raises RLIMIT_NOFILE as far as allowed (each kubelet holds a listener, and a connection
/// per client), and fails early, saying why, if even one listener per node does not fit.
fn raise_fd_limit(nodes: usize) -> Result<(), StartError> {
    let nodes = nodes as u64;
    let want = (nodes * 4 + 4096).max(65_536);
    let (soft, hard) = match rlimit::Resource::NOFILE.get() {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "reading RLIMIT_NOFILE failed");
            return Ok(());
        }
    };
    if rlimit::Resource::NOFILE
        .set(want.max(soft), hard.max(want))
        .is_err()
    {
        // Only a privileged process may raise the hard limit: take what there is.
        let _ = rlimit::Resource::NOFILE.set(hard.max(soft), hard);
    }
    let (soft, hard) = rlimit::Resource::NOFILE.get().unwrap_or((soft, hard));
    if nodes + FD_RESERVE > soft {
        return Err(StartError::FdLimit { nodes, soft, hard });
    }
    if nodes * 2 + FD_RESERVE > soft {
        tracing::warn!(
            nodes,
            limit = soft,
            "RLIMIT_NOFILE leaves no room for a connection to every kubelet: a client scraping them all with keep-alive will exhaust it"
        );
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

async fn run(args: Args) -> Result<(), StartError> {
    let started = Instant::now();
    if args.first_node.saturating_add(args.nodes) > model::MAX_NODES {
        return Err(StartError::TooManyNodes(
            args.first_node.saturating_add(args.nodes),
        ));
    }
    for (flag, v) in [
        ("churn-per-minute", args.churn_per_minute),
        ("restarts-per-minute", args.restarts_per_minute),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            return Err(StartError::Flag {
                flag,
                reason: format!("{v} is not a non-negative number"),
            });
        }
    }
    let dir = args.dir.clone().unwrap_or_default();
    std::fs::create_dir_all(&dir).map_err(|source| StartError::Dir {
        path: dir.clone(),
        source,
    })?;
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    raise_fd_limit(args.nodes)?;
    let listener = tokio::net::TcpListener::bind(args.apiserver_addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: args.apiserver_addr,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: args.apiserver_addr,
        source,
    })?;
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    let address = format!("{host}:{}", addr.port());
    let server_url = format!("https://{address}");

    if let Some(path) = &args.rbac {
        let (policy, loaded) = rbac::Rbac::with_bootstrap(path)?;
        for warning in policy.dangling_bindings() {
            tracing::warn!("--rbac {}: {warning}; it grants nothing", path.display());
        }
        tracing::info!(file = %path.display(), ?loaded, "RBAC objects loaded");
        auth::install_rbac(policy);
    }
    let pki = Arc::new(Pki::new(&dir, addr.ip())?);
    let authn = Arc::new(Authenticator::new(Arc::clone(&pki), args.anonymous_auth));
    let now = SystemTime::now();
    let model = Arc::new(Model::new(
        SimParams {
            nodes: args.nodes,
            first_node: args.first_node,
            pods_per_node: args.pods_per_node,
            containers_per_pod: args.containers_per_pod,
            seed: args.seed,
            kubelet_port: args.kubelet_port,
        },
        now,
    ));
    let mut faults = std::collections::HashMap::new();
    for f in &args.fault {
        if model.node_id(&f.node).is_none() {
            return Err(StartError::FaultNode(f.node.clone()));
        }
        faults.insert(f.node.clone(), f.fault.clone());
    }
    let setup = Setup {
        started,
        listener,
        address,
        server_url,
        pki,
        authn,
        model,
        faults,
        rates: Rates {
            pods_per_minute: args.churn_per_minute,
            restarts_per_minute: args.restarts_per_minute,
        },
    };
    match args.external_apiserver.clone() {
        Some(kubeconfig) => run_external(args, setup, kubeconfig).await,
        None => run_local(args, setup).await,
    }
}

/// What both modes start from.
struct Setup {
    started: Instant,
    listener: tokio::net::TcpListener,
    address: String,
    server_url: String,
    pki: Arc<Pki>,
    authn: Arc<Authenticator>,
    model: Arc<Model>,
    faults: std::collections::HashMap<String, Fault>,
    rates: Rates,
}

impl Setup {
    /// Starts every node's kubelet, with its `--fault` if any.
    async fn start_kubelets(&self, kubelets: &Kubelets) -> Result<(), StartError> {
        for id in self.model.node_ids() {
            let fault = self
                .model
                .node_name(id)
                .and_then(|n| self.faults.get(n.as_ref()).cloned());
            kubelets.start(id, fault).await?;
        }
        tracing::info!(elapsed = ?self.started.elapsed(), kubelets = kubelets.len(), "kubelets listening");
        Ok(())
    }
}

/// Serves `app` on the setup's listener with the API server's certificate until `stop`.
fn serve(
    setup_listener: tokio::net::TcpListener,
    pki: &Arc<Pki>,
    app: axum::Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<std::io::Result<()>>, StartError> {
    let tls = ReloadingTls::new(
        Arc::clone(pki),
        Arc::clone(&pki.apiserver_key),
        "the API server",
    )?;
    Ok(tokio::spawn(metrics_bridge::https::serve(
        setup_listener,
        tls,
        app,
        metrics_bridge::https::ServeOptions::default(),
        async move {
            let _ = stop.changed().await;
        },
    )))
}

/// Builds and encodes every node's objects into the store, a node at a time (the peak holds
/// one node's k8s-openapi structs per thread, not 150,000 pods' worth) on every core: this
/// is most of the start-up time at scale.
fn load_nodes(store: &Store, model: &Model) -> Result<(), StartError> {
    let ids = model.node_ids();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8)
        .min(ids.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<(), objects::ObjectsError> {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&id) = ids.get(i) else {
                            return Ok(());
                        };
                        let node = model.node_object(id).map(Object::Node);
                        let pods = model.pod_objects_on_node(id).unwrap_or_default();
                        store.load(node.into_iter().chain(pods.into_iter().map(Object::Pod)))?;
                    }
                })
            })
            .collect();
        for w in workers {
            match w.join() {
                Ok(r) => r?,
                Err(_) => return Err(StartError::LoadPanicked),
            }
        }
        Ok(())
    })
}

/// kube-sim with its own API server.
async fn run_local(args: Args, setup: Setup) -> Result<(), StartError> {
    let pki = &setup.pki;
    let model = &setup.model;
    let started = setup.started;
    let now = SystemTime::now();
    let store = Arc::new(Store::new(args.watch_history));
    let mut initial: Vec<Object> = Vec::new();
    initial.extend(model.namespaces().into_iter().map(Object::Namespace));
    initial.push(apiserver::auth_configmap(pki, now));
    store.load(initial)?;
    load_nodes(&store, model)?;
    tracing::info!(elapsed = ?started.elapsed(), "objects loaded");

    let kubelets = Arc::new(Kubelets::new(
        Arc::clone(model),
        Arc::clone(pki),
        KubeletAuth::Local(Arc::clone(&setup.authn)),
        args.kubelet_port,
    ));
    setup.start_kubelets(&kubelets).await?;

    let aggregator = Arc::new(Aggregator::new(
        args.aggregate.clone(),
        Arc::clone(pki),
        args.aggregator_probe_interval,
    )?);
    let control = Arc::new(Control::new(
        Arc::clone(model),
        Plane::Local {
            store: Arc::clone(&store),
            aggregator: Arc::clone(&aggregator),
        },
        Arc::clone(&kubelets),
        Arc::clone(pki),
        setup.server_url.clone(),
        setup.rates,
        args.seed,
    ));
    let api = Arc::new(ApiServer {
        store: Arc::clone(&store),
        authn: Arc::clone(&setup.authn),
        control: Arc::clone(&control),
        aggregator: Arc::clone(&aggregator),
        opts: ApiOptions {
            bookmark_interval: args.bookmark_interval,
        },
        address: setup.address.clone(),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server_url = setup.server_url.clone();
    let server = serve(
        setup.listener,
        &setup.pki,
        Arc::clone(&api).router(),
        stop_rx.clone(),
    )?;
    tokio::spawn(Arc::clone(&aggregator).run(stop_rx.clone()));
    tokio::spawn(Arc::clone(&control).run_dynamics(stop_rx.clone()));

    setup.pki.write_files(&server_url)?;
    let pods = store.len(objects::Kind::Pod);
    ready_line(
        &args,
        &server_url,
        &setup.pki,
        &setup.model,
        started,
        pods,
        None,
    )?;

    shutdown_signal().await;
    tracing::info!("stopping");
    let _ = stop_tx.send(true);
    kubelets.shutdown();
    // In-flight watches end with the process; give plain requests a moment to finish.
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    Ok(())
}

/// kube-sim's nodes inside another control plane.
async fn run_external(args: Args, setup: Setup, kubeconfig: PathBuf) -> Result<(), StartError> {
    if !args.aggregate.is_empty() {
        return Err(StartError::Flag {
            flag: "aggregate",
            reason: "the aggregation layer is kube-sim's API server's, which --external-apiserver does not run".into(),
        });
    }
    let (client, config, cluster) = external::connect(&kubeconfig).await?;
    let ext = Arc::new(External::new(
        client.clone(),
        cluster.clone(),
        ExternalOptions {
            concurrency: args.external_concurrency.max(1),
            lease_renew_interval: args.node_lease_renew_interval,
            lease_duration_seconds: args.node_lease_duration_seconds,
            status_report_interval: args.node_status_report_frequency,
            instance: model::node_name(args.first_node),
        },
    ));
    let cleaned = ext.clean_leftovers().await?;
    if cleaned > 0 {
        tracing::info!(objects = cleaned, "a previous run's objects deleted");
    }
    let client_ca = external::client_ca(&client).await;
    let webhook = Arc::new(webhook::Webhook::connect(&config, client_ca)?);
    let kubelets = Arc::new(Kubelets::new(
        Arc::clone(&setup.model),
        Arc::clone(&setup.pki),
        KubeletAuth::Webhook(webhook),
        args.kubelet_port,
    ));
    setup.start_kubelets(&kubelets).await?;
    if let Err(e) = ext.sync(&setup.model).await {
        kubelets.shutdown();
        return Err(match ext.clean_up().await {
            Ok(()) => e.into(),
            Err(cleanup) => StartError::ExternalCleanup(e, cleanup),
        });
    }
    tracing::info!(elapsed = ?setup.started.elapsed(), cluster = %cluster, "nodes and pods created in the external cluster");
    let control = Arc::new(Control::new(
        Arc::clone(&setup.model),
        Plane::External(Arc::clone(&ext)),
        Arc::clone(&kubelets),
        Arc::clone(&setup.pki),
        setup.server_url.clone(),
        setup.rates,
        args.seed,
    ));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let Setup {
        listener,
        server_url,
        pki,
        authn,
        model,
        started,
        ..
    } = setup;
    let server = serve(
        listener,
        &pki,
        control::router(Arc::clone(&control), authn),
        stop_rx.clone(),
    )?;
    tokio::spawn(Arc::clone(&ext).heartbeats(stop_rx.clone()));
    tokio::spawn(Arc::clone(&ext).watch_others(Arc::clone(&control), stop_rx.clone()));
    tokio::spawn(Arc::clone(&control).run_dynamics(stop_rx.clone()));

    pki.write_external_files(&server_url)?;
    let pods = ext.info()["pods"].as_u64().unwrap_or(0) as usize;
    ready_line(
        &args,
        &server_url,
        &pki,
        &model,
        started,
        pods,
        Some(&cluster),
    )?;

    shutdown_signal().await;
    tracing::info!("stopping: deleting what kube-sim created in the external cluster");
    let _ = stop_tx.send(true);
    let cleanup = ext.clean_up().await;
    kubelets.shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    cleanup.map_err(StartError::from)
}

/// Writes `kube-sim.json` and prints the one line containing `ready`.
fn ready_line(
    args: &Args,
    server_url: &str,
    pki: &Pki,
    model: &Model,
    started: Instant,
    pods: usize,
    external: Option<&str>,
) -> Result<(), StartError> {
    let dir = &pki.dir;
    let nodes = model.node_ids().len();
    let mut info = serde_json::json!({
        "apiserver": server_url,
        "kubeletPort": args.kubelet_port,
        "nodes": nodes,
        "pods": pods,
        "pid": std::process::id(),
        "dir": dir,
    });
    if let Some(url) = external {
        info["externalApiserver"] = serde_json::json!(url);
    }
    pki::write_file(dir, "kube-sim.json", info.to_string().as_bytes())?;
    let external = external
        .map(|u| format!(" external-apiserver {u}"))
        .unwrap_or_default();
    println!(
        "kube-sim ready: apiserver {server_url} dir {} kubeconfig {} nodes {nodes} pods {pods} kubelet-port {}{external} in {:.2}s",
        dir.display(),
        dir.join("kubeconfig").display(),
        args.kubelet_port,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.print_policy {
        print!("{}", auth::policy_markdown());
        return std::process::ExitCode::SUCCESS;
    }
    let level = match args.verbosity {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("kube_sim={level},metrics_bridge={level}"))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kube-sim: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // External errors already say what the cluster answered.
        Err(e @ (StartError::External(_) | StartError::ExternalCleanup(..))) => {
            eprintln!("kube-sim: {e}");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                let part = s.to_string();
                if !msg.contains(&part) {
                    msg.push_str(": ");
                    msg.push_str(&part);
                }
                src = s.source();
            }
            eprintln!("kube-sim: {msg}");
            std::process::ExitCode::FAILURE
        }
    }
}
