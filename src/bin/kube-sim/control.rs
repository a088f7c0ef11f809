//! The `/sim/*` control endpoints (admin only, on the API server) and the background dynamics
//! (pod churn, container restarts). Every change goes through the model and comes out as real
//! watch events; node additions and removals start and stop kubelets.
//!
//! | method and path | what it does |
//! |---|---|
//! | `GET /sim/expected` | what a correct pipeline reports now (the model's `expected(now)`) |
//! | `GET /sim/info` | URLs, ports, counts, revision, faults, rates |
//! | `POST /sim/pods?count=N` | creates N pods |
//! | `DELETE /sim/pods?count=N` | deletes N pods chosen from the seed |
//! | `DELETE /sim/pods/NS/NAME` | deletes one pod |
//! | `POST /sim/restart?namespace=NS&pod=NAME[&container=C]` | restarts a container (all of the pod's without `container`) |
//! | `POST /sim/nodes?count=N` | adds N nodes (and their kubelets and pods) |
//! | `DELETE /sim/nodes/NAME` | removes a node, its kubelet and its pods |
//! | `GET /sim/faults` | the kubelet faults set now |
//! | `PUT /sim/faults/NODE?fault=KIND` | sets a kubelet fault (see `--fault`) |
//! | `DELETE /sim/faults/NODE` | clears it |
//! | `PUT /sim/churn?podsPerMinute=X&restartsPerMinute=Y` | sets the background rates (either or both) |
//! | `POST /sim/compact` | drops the watch history: older resourceVersions get 410 |
//! | `POST /sim/rotate-ca?ca=client\|front-proxy[&keepOld=true]` | rotates a CA, rewrites the files and the ConfigMap |

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};
use metrics_bridge::selector::{FieldSelector, LabelSelector};
use metrics_bridge::status::Status;
use serde_json::{Value, json};

use crate::aggregator::Aggregator;
use crate::apiserver::request::{Query, query_get};
use crate::apiserver::write;
use crate::auth::Authenticator;
use crate::external::External;
use crate::kubelet::{Fault, Kubelets};
use crate::model::{Change, Model};
use crate::objects::{Kind, ListRequest, Object, Store};
use crate::pki::{Pki, WhichCa};

/// Serves the control endpoints on their own HTTPS listener when there is no local API
/// server (`--external-apiserver`): authenticated and authorized as kube-sim's API server
/// would (admin client certificate or `admin.token`), plus the health probes.
pub fn router(control: Arc<Control>, authn: Arc<Authenticator>) -> axum::Router {
    axum::Router::new()
        .fallback(serve_control)
        .with_state((control, authn))
}

async fn serve_control(
    axum::extract::State((control, authn)): axum::extract::State<(
        Arc<Control>,
        Arc<Authenticator>,
    )>,
    req: axum::extract::Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let admitted = match crate::apiserver::admit(&authn, &parts) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let path = parts.uri.path();
    match path {
        "/healthz" | "/livez" | "/readyz" => (StatusCode::OK, "ok").into_response(),
        _ if path == "/sim" || path.starts_with("/sim/") => {
            control
                .handle(&parts.method, path, &admitted.query, body)
                .await
        }
        _ => Status::path_not_found().into_response(),
    }
}

/// Background rates, per minute.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    pub pods_per_minute: f64,
    pub restarts_per_minute: f64,
}

/// Where the simulation's objects live.
pub enum Plane {
    /// kube-sim's own API server.
    Local {
        store: Arc<Store>,
        aggregator: Arc<Aggregator>,
    },
    /// A real control plane (`--external-apiserver`).
    External(Arc<External>),
}

/// The control plane of the simulation.
pub struct Control {
    model: Arc<Model>,
    plane: Plane,
    kubelets: Arc<Kubelets>,
    pki: Arc<Pki>,
    server_url: String,
    rates: tokio::sync::watch::Sender<Rates>,
    rng: Mutex<u64>,
    changes_applied: AtomicU64,
}

fn ok(body: Value) -> Response {
    let mut res = (StatusCode::OK, body.to_string()).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

fn count(query: &Query) -> Result<usize, Status> {
    let raw = query_get(query, "count").unwrap_or("1");
    raw.parse::<usize>().map_err(|_| {
        Status::bad_request(format!("count must be a non-negative integer, not {raw:?}"))
    })
}

fn rate(query: &Query, name: &str) -> Result<Option<f64>, Status> {
    match query_get(query, name) {
        None => Ok(None),
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|r| r.is_finite() && *r >= 0.0)
            .map(Some)
            .ok_or_else(|| {
                Status::bad_request(format!("{name} must be a non-negative number, not {v:?}"))
            }),
    }
}

impl Control {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        model: Arc<Model>,
        plane: Plane,
        kubelets: Arc<Kubelets>,
        pki: Arc<Pki>,
        server_url: String,
        rates: Rates,
        seed: u64,
    ) -> Control {
        Control {
            model,
            plane,
            kubelets,
            pki,
            server_url,
            rates: tokio::sync::watch::channel(rates).0,
            rng: Mutex::new(seed ^ 0x5851_f42d_4c95_7f2d),
            changes_applied: AtomicU64::new(0),
        }
    }

    fn next_random(&self) -> u64 {
        let mut s = self
            .rng
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // splitmix64
        *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The model this control drives.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Publishes the model's changes: kubelets of new nodes start before their Node object
    /// appears (so a watcher never scrapes a node that is not listening yet), and kubelets of
    /// removed nodes stop after the deletion is published. Returns a summary per change.
    pub async fn apply(&self, changes: Vec<Change>) -> Vec<String> {
        let mut summary = Vec::with_capacity(changes.len());
        for change in changes {
            if let Change::UpsertNode(node) = &change {
                let name = node.metadata.name.clone().unwrap_or_default();
                if !self.kubelets.contains(&name)
                    && let Some(id) = self.model.node_id(&name)
                    && let Err(e) = self.kubelets.start(id, None).await
                {
                    tracing::error!(node = %name, error = %e, "starting the kubelet failed");
                }
            }
            let removed_node = match &change {
                Change::DeleteNode { name } => Some(name.clone()),
                _ => None,
            };
            let result = match &self.plane {
                Plane::Local { store, .. } => self.apply_local(store, change),
                Plane::External(ext) => ext.publish(change).await.map_err(|e| e.to_string()),
            };
            match result {
                Ok(line) => summary.push(line),
                Err(e) => {
                    tracing::error!(error = %e, "publishing a change failed");
                    summary.push(format!("failed: {e}"));
                }
            }
            if let Some(name) = removed_node {
                self.kubelets.remove(&name);
            }
            self.changes_applied.fetch_add(1, Ordering::Relaxed);
        }
        summary
    }

    fn apply_local(&self, store: &Store, change: Change) -> Result<String, String> {
        let err = |e: crate::objects::ObjectsError| e.to_string();
        match change {
            Change::UpsertNamespace(ns) => {
                let name = ns.metadata.name.clone().unwrap_or_default();
                store.upsert(Object::Namespace(ns)).map_err(err)?;
                Ok(format!("namespace {name}"))
            }
            Change::UpsertNode(node) => {
                let name = node.metadata.name.clone().unwrap_or_default();
                store.upsert(Object::Node(node)).map_err(err)?;
                Ok(format!("node {name}"))
            }
            Change::DeleteNode { name } => {
                store.delete(Kind::Node, "", &name);
                Ok(format!("deleted node {name}"))
            }
            Change::UpsertPod(pod) => {
                let line = format!(
                    "pod {}/{}",
                    pod.metadata.namespace.as_deref().unwrap_or(""),
                    pod.metadata.name.as_deref().unwrap_or("")
                );
                store.upsert(Object::Pod(pod)).map_err(err)?;
                Ok(line)
            }
            Change::DeletePod { namespace, name } => {
                delete_pod_as_owner(store, &namespace, &name);
                Ok(format!("deleted pod {namespace}/{name}"))
            }
        }
    }

    /// Called when kube-sim's API server has marked a pod for graceful deletion. If the pod is
    /// on a node kube-sim simulates, kube-sim is its kubelet: the model stops the pod and the
    /// deletion is finished with grace 0. A pod bound to a node that does not exist is
    /// finished by the pod garbage collector, at once. Otherwise the pod's own kubelet (an
    /// external kube-sim) finishes it.
    pub fn pod_terminating(&self, namespace: &str, name: &str) {
        let Plane::Local { store, .. } = &self.plane else {
            return;
        };
        let node = store
            .get(Kind::Pod, namespace, name)
            .and_then(|p| p.field(Kind::Pod, "spec.nodeName").map(str::to_string))
            .unwrap_or_default();
        let ours = self.model.node_id(&node).is_some();
        let orphan = store.get(Kind::Node, "", &node).is_none();
        if ours {
            let _ = self.model.delete_pod(namespace, name);
        }
        if (ours || orphan) && write::finalize_pod(store, namespace, name).is_err() {
            tracing::warn!(pod = %format!("{namespace}/{name}"), "finishing a pod deletion failed");
        }
    }

    /// A Running pod chosen by the control's random stream.
    fn random_running_pod(&self) -> Option<(String, String)> {
        let pods: Vec<(String, String)> = match &self.plane {
            Plane::Local { store, .. } => {
                let labels = LabelSelector::default();
                let fields = FieldSelector::parse("status.phase=Running").ok()?;
                let snap = store
                    .list(
                        Kind::Pod,
                        &ListRequest {
                            namespace: None,
                            labels: &labels,
                            fields: &fields,
                            limit: 0,
                            after: None,
                            at: None,
                        },
                    )
                    .ok()?;
                let i = (self.next_random() % snap.items.len().max(1) as u64) as usize;
                let p = snap.items.get(i)?;
                return Some((p.namespace.to_string(), p.name.to_string()));
            }
            Plane::External(_) => self
                .model
                .expected(SystemTime::now())
                .pods
                .into_iter()
                .map(|p| (p.namespace, p.name))
                .collect(),
        };
        let i = (self.next_random() % pods.len().max(1) as u64) as usize;
        pods.into_iter().nth(i)
    }

    /// Runs pod churn and container restarts at the current rates until `shutdown`.
    pub async fn run_dynamics(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut rates = self.rates.subscribe();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut churn_due, mut restart_due) = (0.0f64, 0.0f64);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let r = *rates.borrow_and_update();
            churn_due += r.pods_per_minute / 240.0;
            restart_due += r.restarts_per_minute / 240.0;
            while churn_due >= 1.0 {
                churn_due -= 1.0;
                let replaced = self.model.replace_pods(1, SystemTime::now());
                self.apply(replaced).await;
            }
            while restart_due >= 1.0 {
                restart_due -= 1.0;
                if let Some((ns, pod)) = self.random_running_pod() {
                    let changes = self
                        .model
                        .restart_container(&ns, &pod, None, SystemTime::now());
                    self.apply(changes).await;
                }
            }
        }
    }

    /// Serves `/sim/*`.
    pub async fn handle(
        &self,
        method: &Method,
        path: &str,
        query: &Query,
        _body: Body,
    ) -> Response {
        match self.route(method, path, query).await {
            Ok(r) => r,
            Err(s) => s.into_response(),
        }
    }

    async fn route(&self, method: &Method, path: &str, query: &Query) -> Result<Response, Status> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').skip(1).collect();
        let now = SystemTime::now();
        match (method.as_str(), segs.as_slice()) {
            ("GET", ["expected"]) => {
                let expected = self.model.expected(now);
                serde_json::to_value(&expected)
                    .map(ok)
                    .map_err(|e| Status::internal(e.to_string()))
            }
            ("GET", ["info"]) => Ok(ok(self.info())),
            ("POST", ["pods"]) => {
                let n = count(query)?;
                let changes = self.model.create_pods(n, now);
                Ok(ok(json!({"changes": self.apply(changes).await})))
            }
            ("DELETE", ["pods"]) => {
                let n = count(query)?;
                let changes = self.model.delete_pods(n);
                Ok(ok(json!({"changes": self.apply(changes).await})))
            }
            ("DELETE", ["pods", ns, name]) => {
                let changes = self.model.delete_pod(ns, name);
                if changes.is_empty() {
                    return Err(Status::not_found("", "pods", name));
                }
                Ok(ok(json!({"changes": self.apply(changes).await})))
            }
            ("POST", ["restart"]) => {
                let ns = query_get(query, "namespace")
                    .ok_or_else(|| Status::bad_request("namespace is required"))?;
                let pod = query_get(query, "pod")
                    .ok_or_else(|| Status::bad_request("pod is required"))?;
                let container = query_get(query, "container");
                let changes = self.model.restart_container(ns, pod, container, now);
                if changes.is_empty() {
                    return Err(Status::not_found("", "pods", pod));
                }
                Ok(ok(json!({"changes": self.apply(changes).await})))
            }
            ("POST", ["nodes"]) => {
                let n = count(query)?;
                let changes = self.model.add_nodes(n, now);
                Ok(ok(json!({"changes": self.apply(changes).await})))
            }
            ("DELETE", ["nodes", name]) => {
                let changes = self.model.remove_node(name);
                if changes.is_empty() {
                    return Err(Status::not_found("", "nodes", name));
                }
                Ok(ok(json!({"changes": self.apply(changes).await})))
            }
            ("GET", ["faults"]) => Ok(ok(self.faults_json())),
            ("PUT", ["faults", node]) | ("POST", ["faults", node]) => {
                let raw = query_get(query, "fault")
                    .ok_or_else(|| Status::bad_request("fault is required, e.g. ?fault=http500"))?;
                let fault: Fault = raw.parse().map_err(|e: crate::kubelet::KubeletError| {
                    Status::bad_request(e.to_string())
                })?;
                self.kubelets
                    .set_fault(node, Some(fault))
                    .await
                    .map_err(|e| Status::not_found("", "nodes", &e.to_string()))?;
                Ok(ok(self.faults_json()))
            }
            ("DELETE", ["faults", node]) => {
                self.kubelets
                    .set_fault(node, None)
                    .await
                    .map_err(|e| Status::not_found("", "nodes", &e.to_string()))?;
                Ok(ok(self.faults_json()))
            }
            ("PUT", ["churn"]) | ("POST", ["churn"]) => {
                let pods = rate(query, "podsPerMinute")?;
                let restarts = rate(query, "restartsPerMinute")?;
                self.rates.send_modify(|r| {
                    if let Some(p) = pods {
                        r.pods_per_minute = p;
                    }
                    if let Some(x) = restarts {
                        r.restarts_per_minute = x;
                    }
                });
                Ok(ok(self.info()))
            }
            ("POST", ["compact"]) => {
                let store = self.local_store()?;
                store.compact();
                Ok(ok(json!({"compactedAt": store.revision().to_string()})))
            }
            ("POST", ["rotate-ca"]) => {
                let store = self.local_store()?;
                let which = match query_get(query, "ca") {
                    Some("client") => WhichCa::Client,
                    Some("front-proxy") => WhichCa::FrontProxy,
                    other => {
                        return Err(Status::bad_request(format!(
                            "ca must be \"client\" or \"front-proxy\", not {other:?}"
                        )));
                    }
                };
                let keep_old = query_get(query, "keepOld").is_some_and(|v| v == "true" || v == "1");
                let cur = self
                    .pki
                    .rotate(which, keep_old)
                    .map_err(|e| Status::internal(e.to_string()))?;
                self.pki
                    .write_rotating(&self.server_url, &cur)
                    .map_err(|e| Status::internal(e.to_string()))?;
                let cm = crate::apiserver::auth_configmap(&self.pki, SystemTime::now());
                store
                    .upsert(cm)
                    .map_err(|e| Status::internal(e.to_string()))?;
                Ok(ok(json!({"generation": cur.generation})))
            }
            _ => Err(Status::path_not_found()),
        }
    }

    fn faults_json(&self) -> Value {
        let faults: serde_json::Map<String, Value> = self
            .kubelets
            .faults()
            .into_iter()
            .map(|(n, f)| (n, json!(f.to_string())))
            .collect();
        Value::Object(faults)
    }

    /// The local store, or 404 in external mode (where the API is someone else's).
    fn local_store(&self) -> Result<&Arc<Store>, Status> {
        match &self.plane {
            Plane::Local { store, .. } => Ok(store),
            Plane::External(_) => Err(Status::failure(
                StatusCode::NOT_FOUND,
                "NotFound",
                "not available with --external-apiserver: the API server is the external one",
            )),
        }
    }

    fn info(&self) -> Value {
        let r = *self.rates.borrow();
        let mut info = json!({
            "apiserver": self.server_url,
            "kubeletPort": self.kubelets.port(),
            "kubelets": self.kubelets.len(),
            "kubeletRequests": self.kubelets.requests(),
            "kubeletReviews": self.kubelets.reviews(),
            "kubeletReviewConnections": self.kubelets.review_connections(),
            "changesApplied": self.changes_applied.load(Ordering::Relaxed),
            "faults": self.faults_json(),
            "podsPerMinute": r.pods_per_minute,
            "restartsPerMinute": r.restarts_per_minute,
        });
        match &self.plane {
            Plane::Local { store, aggregator } => {
                info["nodes"] = json!(store.len(Kind::Node));
                info["pods"] = json!(store.len(Kind::Pod));
                info["resourceVersion"] = json!(store.revision().to_string());
                info["apiServices"] = aggregator.status();
            }
            Plane::External(ext) => {
                info["nodes"] = json!(self.model.node_ids().len());
                info["external"] = ext.info();
                info["pods"] = info["external"]["pods"].clone();
            }
        }
        info
    }
}

/// Deletes a pod the model has let go, as a real cluster does: its owner deletes it
/// gracefully (MODIFIED with `deletionTimestamp`) and its kubelet, here kube-sim's own,
/// finishes the deletion with grace 0 (DELETED). A pod whose node is already gone is
/// force-deleted, as the pod garbage collector does with orphans.
fn delete_pod_as_owner(store: &Store, namespace: &str, name: &str) {
    let orphan = store
        .get(Kind::Pod, namespace, name)
        .and_then(|p| p.field(Kind::Pod, "spec.nodeName").map(str::to_string))
        .is_none_or(|node| store.get(Kind::Node, "", &node).is_none());
    let opts = write::DeleteOptions {
        grace_period: orphan.then_some(0),
        ..Default::default()
    };
    match write::delete_pod(store, namespace, name, &opts) {
        Ok(d) if !d.gone => {
            if write::finalize_pod(store, namespace, name).is_err() {
                tracing::warn!(pod = %format!("{namespace}/{name}"), "finishing a pod deletion failed");
            }
        }
        Ok(_) => {}
        Err(_) => tracing::debug!(pod = %format!("{namespace}/{name}"), "pod already gone"),
    }
}
