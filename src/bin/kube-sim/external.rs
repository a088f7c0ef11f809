//! `--external-apiserver KUBECONFIG`: kube-sim's nodes and pods inside a real control plane
//! that has no kubelets (as KWOK provides one), instead of kube-sim's own API server.
//!
//! kube-sim then does to that cluster what kubelets and a scheduler do:
//!
//! - each node registers: the Node is created with its status (addresses, kubelet port,
//!   capacity, allocatable, conditions, `nodeInfo`), the status is then written through the
//!   `status` subresource, and a Lease in `kube-node-lease` is created and renewed every
//!   `--node-lease-renew-interval` (10 s, as the kubelet's `renewInterval` for the default
//!   40 s lease); the Ready condition's heartbeat is re-posted every 5 minutes
//!   (`nodeStatusReportFrequency`), so a node lifecycle controller keeps the nodes Ready;
//! - each pod is created unbound, bound to its node through `pods/binding`, and its status
//!   written through `pods/status` (`Pending` while its containers are created, then what the
//!   model says: Running and Ready, Pending or Succeeded); restarts update the status;
//! - a pod the model deletes is deleted gracefully, then (as its kubelet) with grace 0; a pod
//!   someone else deletes (`kubectl delete pod`) is stopped in the model and its deletion
//!   finished the same way; a node someone deletes is removed from the simulation;
//! - namespaces the cluster lacks are created, and deleted again at the end;
//! - on SIGINT/SIGTERM everything it created is deleted; at start, what a previous run left
//!   (anything labelled `kube-sim.io/owned=true` and this instance's
//!   `kube-sim.io/instance=<first node>`) is deleted first. Several kube-sims with disjoint
//!   node ranges (`--first-node`) share a cluster: each touches only its instance's objects,
//!   and a namespace another one still uses is handed over to it instead of deleted.
//!
//! Objects are adapted to a real cluster's admission and controllers: no `ownerReferences`
//! (the garbage collector would delete pods whose owners do not exist), no
//! `priority`/`preemptionPolicy` (the Priority admission plugin computes them), the `default`
//! service account with `automountServiceAccountToken: false` (the accounts the model names
//! may not exist), no node `providerID` or pod CIDRs (a cloud's node controller would delete
//! unknown nodes; IPAM allocates CIDRs), the pod's `qosClass` left to the server, and the
//! server assigns uids and timestamps.
//!
//! The kubelets authenticate and authorize against this cluster ([`crate::webhook`]).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Binding, ConfigMap, Namespace, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher;
use serde_json::{Value, json};

use crate::control::Control;
use crate::model::{Change, Model};
use crate::pki::ClientCaBundle;

/// The label on everything kube-sim creates in an external cluster.
pub const OWNED_LABEL: &str = "kube-sim.io/owned";
const OWNED_SELECTOR: &str = "kube-sim.io/owned=true";
/// Which kube-sim created an object: the name of its first node (`--first-node`), so that
/// several kube-sims with disjoint node ranges share one cluster and each cleans up only
/// its own objects.
pub const INSTANCE_LABEL: &str = "kube-sim.io/instance";
const LEASE_NAMESPACE: &str = "kube-node-lease";
const PP: PostParams = PostParams {
    dry_run: false,
    field_manager: None,
};
const PATCH: PatchParams = PatchParams {
    dry_run: false,
    force: false,
    field_manager: None,
    field_validation: None,
};

/// Why the external cluster could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ExternalError {
    #[error("reading --external-apiserver {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("connecting to the cluster of --external-apiserver {path}: {source}")]
    Client {
        path: PathBuf,
        #[source]
        source: kube::Error,
    },
    #[error("{what}: {}", describe(source))]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "{kind} {name} exists in the cluster without the label {OWNED_LABEL}=true: kube-sim will not touch objects it did not create"
    )]
    Foreign { kind: &'static str, name: String },
    #[error(
        "{kind} {name} belongs to another kube-sim ({INSTANCE_LABEL}={instance}): give each kube-sim its own node range (--first-node)"
    )]
    OtherInstance {
        kind: &'static str,
        name: String,
        instance: String,
    },
    #[error("{0} still exists after 120 s")]
    Stuck(String),
}

/// Tunables of external mode.
#[derive(Debug, Clone)]
pub struct ExternalOptions {
    /// API requests in flight during the initial sync and the clean-ups.
    pub concurrency: usize,
    /// How often each node's Lease is renewed.
    pub lease_renew_interval: Duration,
    /// `leaseDurationSeconds` of the node Leases.
    pub lease_duration_seconds: i32,
    /// How often each node re-posts its status heartbeat.
    pub status_report_interval: Duration,
    /// This kube-sim's `kube-sim.io/instance` label value (the name of its first node).
    pub instance: String,
}

impl Default for ExternalOptions {
    fn default() -> ExternalOptions {
        ExternalOptions {
            concurrency: 32,
            lease_renew_interval: Duration::from_secs(10),
            lease_duration_seconds: 40,
            status_report_interval: Duration::from_secs(300),
            instance: "node-00001".into(),
        }
    }
}

/// Reads a kubeconfig and builds a client for it; the client, the config it was built from
/// (for the kubelets' reviews' client, [`crate::webhook::Webhook::connect`]) and the
/// cluster's URL.
pub async fn connect(path: &Path) -> Result<(kube::Client, kube::Config, String), ExternalError> {
    let kubeconfig =
        kube::config::Kubeconfig::read_from(path).map_err(|source| ExternalError::Kubeconfig {
            path: path.to_path_buf(),
            source,
        })?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|source| ExternalError::Kubeconfig {
            path: path.to_path_buf(),
            source,
        })?;
    let url = config.cluster_url.to_string();
    let client =
        kube::Client::try_from(config.clone()).map_err(|source| ExternalError::Client {
            path: path.to_path_buf(),
            source,
        })?;
    // Fail now, with the cause, rather than on the first write.
    client
        .apiserver_version()
        .await
        .map_err(|source| ExternalError::Client {
            path: path.to_path_buf(),
            source,
        })?;
    Ok((client, config, url.trim_end_matches('/').to_string()))
}

/// The cluster's client CA (`client-ca-file` of `kube-system/extension-apiserver-authentication`),
/// for kubelets to accept client certificates, if kube-sim may read it.
pub async fn client_ca(client: &kube::Client) -> Option<ClientCaBundle> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let cm = match api.get("extension-apiserver-authentication").await {
        Ok(cm) => cm,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the cluster's client CA: kubelets accept bearer tokens only");
            return None;
        }
    };
    let pem = cm.data?.remove("client-ca-file")?;
    ClientCaBundle::from_pem(&pem)
        .map_err(|e| tracing::warn!(error = %e, "the cluster's client-ca-file does not parse"))
        .ok()
}

/// A request's failure in a line: the Status message and code for API errors.
pub fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({} {})", s.message, s.code, s.reason),
        other => other.to_string(),
    }
}

fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> ExternalError {
    let what = what.into();
    move |source| ExternalError::Api { what, source }
}

fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Whether a failed request is worth repeating: throttling, server errors, the network; and a
/// pod created in a namespace whose `default` service account does not exist yet.
fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => {
            matches!(s.code, 429 | 500 | 502 | 503 | 504)
                || (s.code == 403 && s.message.contains("service account"))
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// Runs `op` until it succeeds, fails for good, or has failed transiently for 30 s.
async fn retry<T, F, Fut>(mut op: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut delay = Duration::from_millis(100);
    loop {
        match op().await {
            Err(e) if transient(&e) && tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

fn micro_now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// Object metadata as a client sends it for a create: the server sets uids, versions and
/// timestamps; owner references point at objects this cluster does not have. Labelled as
/// kube-sim's, of `instance`.
fn owned_meta(meta: &mut ObjectMeta, instance: &str) {
    let labels = meta.labels.get_or_insert_with(Default::default);
    labels.insert(OWNED_LABEL.into(), "true".into());
    labels.insert(INSTANCE_LABEL.into(), instance.into());
    meta.uid = None;
    meta.resource_version = None;
    meta.creation_timestamp = None;
    meta.deletion_timestamp = None;
    meta.deletion_grace_period_seconds = None;
    meta.generation = None;
    meta.managed_fields = None;
    meta.owner_references = None;
}

/// A pod as its controller would create it in this cluster: unbound, no status.
fn pod_for_create(pod: &Pod, instance: &str) -> Pod {
    let mut p = pod.clone();
    owned_meta(&mut p.metadata, instance);
    if let Some(spec) = p.spec.as_mut() {
        spec.node_name = None;
        spec.priority = None;
        spec.preemption_policy = None;
        spec.service_account_name = Some("default".into());
        spec.service_account = Some("default".into());
        spec.automount_service_account_token = Some(false);
    }
    p.status = None;
    p
}

fn pod_key(pod: &Pod) -> (String, String) {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

/// What kube-sim has created in the external cluster.
#[derive(Default)]
struct Created {
    /// Pod (namespace, name) → uid.
    pods: HashMap<(String, String), String>,
    /// Node name → uid.
    nodes: HashMap<String, String>,
    namespaces: BTreeSet<String>,
    /// Pods and nodes kube-sim is deleting itself (their watch events are not news).
    deleting_pods: HashSet<(String, String)>,
    deleting_nodes: HashSet<String>,
    /// The last Lease written per node, for the next renewal's update.
    leases: HashMap<String, Lease>,
}

/// kube-sim's side of an external cluster.
pub struct External {
    client: kube::Client,
    server: String,
    opts: ExternalOptions,
    created: Mutex<Created>,
    requests: AtomicU64,
    errors: AtomicU64,
    renewals: AtomicU64,
}

impl External {
    pub fn new(client: kube::Client, server: String, opts: ExternalOptions) -> External {
        External {
            client,
            server,
            opts,
            created: Mutex::new(Created::default()),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            renewals: AtomicU64::new(0),
        }
    }

    /// The label selector of what this kube-sim (its instance) created.
    fn own_labels(&self) -> String {
        format!("{OWNED_SELECTOR},{INSTANCE_LABEL}={}", self.opts.instance)
    }

    fn own_selector(&self) -> ListParams {
        ListParams::default().labels(&self.own_labels())
    }

    fn created(&self) -> std::sync::MutexGuard<'_, Created> {
        self.created
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts one API request and its failure.
    async fn call<T, F, Fut>(&self, op: F) -> Result<T, kube::Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let r = retry(op).await;
        if r.is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// Figures for `/sim/info`.
    pub fn info(&self) -> Value {
        let c = self.created();
        json!({
            "server": self.server,
            "pods": c.pods.len(),
            "nodes": c.nodes.len(),
            "namespacesCreated": c.namespaces.iter().collect::<Vec<_>>(),
            "requests": self.requests.load(Ordering::Relaxed),
            "errors": self.errors.load(Ordering::Relaxed),
            "leaseRenewals": self.renewals.load(Ordering::Relaxed),
        })
    }

    /// Deletes what a previous run left behind (anything labelled `kube-sim.io/owned=true`)
    /// and waits until it is gone. Returns how many objects it deleted.
    pub async fn clean_leftovers(&self) -> Result<usize, ExternalError> {
        let lp = self.own_selector();
        let pods: Api<Pod> = Api::all(self.client.clone());
        let leftover_pods = self
            .call(|| pods.list(&lp))
            .await
            .map_err(api_err("listing leftover pods"))?;
        let mut namespaces: BTreeSet<String> = leftover_pods
            .items
            .iter()
            .filter_map(|p| p.metadata.namespace.clone())
            .collect();
        let mut count = leftover_pods.items.len();
        let nodes: Api<Node> = Api::all(self.client.clone());
        let nss: Api<Namespace> = Api::all(self.client.clone());
        let leftover_nodes = self
            .call(|| nodes.list(&lp))
            .await
            .map_err(api_err("listing leftover nodes"))?;
        let leftover_ns = self
            .call(|| nss.list(&lp))
            .await
            .map_err(api_err("listing leftover namespaces"))?;
        count += leftover_nodes.items.len() + leftover_ns.items.len();
        if count == 0 {
            return Ok(0);
        }
        tracing::info!(
            pods = leftover_pods.items.len(),
            nodes = leftover_nodes.items.len(),
            namespaces = leftover_ns.items.len(),
            "deleting what a previous kube-sim left"
        );
        namespaces.extend(
            leftover_ns
                .items
                .iter()
                .filter_map(|n| n.metadata.name.clone()),
        );
        self.delete_everything(&namespaces, &leftover_ns.items)
            .await?;
        Ok(count)
    }

    /// Deletes kube-sim's pods (in `namespaces`), leases, nodes and the given namespaces by
    /// label, then waits for them to be gone.
    async fn delete_everything(
        &self,
        namespaces: &BTreeSet<String>,
        own_namespaces: &[Namespace],
    ) -> Result<(), ExternalError> {
        let lp = self.own_selector();
        // Grace 0: the kubelets are kube-sim's, and they are stopping.
        let now = DeleteParams::default().grace_period(0);
        for ns in namespaces {
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
            self.call(|| pods.delete_collection(&now, &lp))
                .await
                .map(|_| ())
                .or_else(ignore_missing)
                .map_err(api_err(format!("deleting kube-sim's pods in {ns}")))?;
        }
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        self.call(|| leases.delete_collection(&now, &lp))
            .await
            .map(|_| ())
            .or_else(ignore_missing)
            .map_err(api_err("deleting kube-sim's node leases"))?;
        let nodes: Api<Node> = Api::all(self.client.clone());
        self.call(|| nodes.delete_collection(&now, &lp))
            .await
            .map_err(api_err("deleting kube-sim's nodes"))?;
        let nss: Api<Namespace> = Api::all(self.client.clone());
        let graceful = DeleteParams::default();
        let any_kube_sim = ListParams::default().labels(OWNED_SELECTOR);
        for ns in own_namespaces {
            let name = ns.metadata.name.clone().unwrap_or_default();
            // Another kube-sim's pods may live in a namespace this one created: hand the
            // namespace over to that kube-sim (the last one out deletes it).
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), &name);
            let others = self
                .call(|| pods.list(&any_kube_sim))
                .await
                .map(|l| l.items)
                .or_else(|e| ignore_missing(e).map(|()| Vec::new()))
                .map_err(api_err(format!("listing kube-sim pods in {name}")))?;
            let heir = others.iter().find_map(|p| {
                let instance = p.metadata.labels.as_ref()?.get(INSTANCE_LABEL)?;
                (*instance != self.opts.instance).then(|| instance.clone())
            });
            if let Some(heir) = heir {
                let relabel = Patch::Merge(json!({"metadata": {"labels": {INSTANCE_LABEL: heir}}}));
                self.call(|| nss.patch(&name, &PATCH, &relabel))
                    .await
                    .map(|_| ())
                    .or_else(ignore_missing)
                    .map_err(api_err(format!("handing namespace {name} over to {heir}")))?;
                continue;
            }
            self.call(|| nss.delete(&name, &graceful))
                .await
                .map(|_| ())
                .or_else(ignore_missing)
                .map_err(api_err(format!("deleting namespace {name}")))?;
        }
        // Wait until the cluster has let them go (a namespace terminates first).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let pods: Api<Pod> = Api::all(self.client.clone());
            let left_pods = self
                .call(|| pods.list(&lp))
                .await
                .map_err(api_err("listing kube-sim's pods"))?
                .items
                .len();
            let left_ns = self
                .call(|| nss.list(&lp))
                .await
                .map_err(api_err("listing kube-sim's namespaces"))?
                .items
                .len();
            if left_pods == 0 && left_ns == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(ExternalError::Stuck(format!(
                    "{left_pods} pods and {left_ns} namespaces of kube-sim's"
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Deletes everything this run created (SIGINT/SIGTERM), and the namespaces another
    /// kube-sim handed over to it.
    pub async fn clean_up(&self) -> Result<(), ExternalError> {
        let (mut namespaces, mut own): (BTreeSet<String>, BTreeSet<String>) = {
            let c = self.created();
            (
                c.pods.keys().map(|(ns, _)| ns.clone()).collect(),
                c.namespaces.iter().cloned().collect(),
            )
        };
        let nss: Api<Namespace> = Api::all(self.client.clone());
        let lp = self.own_selector();
        let labelled = self
            .call(|| nss.list(&lp))
            .await
            .map_err(api_err("listing kube-sim's namespaces"))?;
        own.extend(labelled.items.into_iter().filter_map(|n| n.metadata.name));
        namespaces.extend(own.iter().cloned());
        let own: Vec<Namespace> = own
            .into_iter()
            .map(|name| Namespace {
                metadata: ObjectMeta {
                    name: Some(name),
                    ..Default::default()
                },
                ..Default::default()
            })
            .collect();
        self.delete_everything(&namespaces, &own).await?;
        let mut c = self.created();
        c.pods.clear();
        c.nodes.clear();
        c.leases.clear();
        c.namespaces.clear();
        Ok(())
    }

    /// Creates the model's namespaces the cluster lacks, then every node and its pods, with
    /// up to `concurrency` nodes at a time. The first failure stops the sync.
    pub async fn sync(&self, model: &Model) -> Result<(), ExternalError> {
        let nss: Api<Namespace> = Api::all(self.client.clone());
        for ns in model.namespaces() {
            let name = ns.metadata.name.clone().unwrap_or_default();
            if self
                .call(|| nss.get_opt(&name))
                .await
                .map_err(api_err(format!("reading namespace {name}")))?
                .is_some()
            {
                continue;
            }
            let mut new = Namespace {
                metadata: ns.metadata.clone(),
                ..Default::default()
            };
            owned_meta(&mut new.metadata, &self.opts.instance);
            self.call(|| nss.create(&PP, &new))
                .await
                .map_err(api_err(format!("creating namespace {name}")))?;
            self.created().namespaces.insert(name);
        }
        let ids = model.node_ids();
        let results = futures::stream::iter(ids)
            .map(|id| async move {
                let Some(node) = model.node_object(id) else {
                    return Ok(());
                };
                self.create_node(node).await?;
                for pod in model.pod_objects_on_node(id).unwrap_or_default() {
                    self.upsert_pod(pod).await?;
                }
                Ok::<(), ExternalError>(())
            })
            .buffer_unordered(self.opts.concurrency.max(1));
        futures::pin_mut!(results);
        while let Some(r) = results.next().await {
            r?;
        }
        Ok(())
    }

    /// Publishes one model change; a one-line summary.
    pub async fn publish(&self, change: Change) -> Result<String, ExternalError> {
        match change {
            Change::UpsertNamespace(ns) => Ok(format!(
                "namespace {}",
                ns.metadata.name.unwrap_or_default()
            )),
            Change::UpsertNode(node) => {
                let name = node.metadata.name.clone().unwrap_or_default();
                self.create_node(node).await?;
                Ok(format!("node {name}"))
            }
            Change::DeleteNode { name } => {
                self.delete_node(&name).await?;
                Ok(format!("deleted node {name}"))
            }
            Change::UpsertPod(pod) => {
                let (ns, name) = pod_key(&pod);
                self.upsert_pod(pod).await?;
                Ok(format!("pod {ns}/{name}"))
            }
            Change::DeletePod { namespace, name } => {
                self.delete_pod(&namespace, &name).await?;
                Ok(format!("deleted pod {namespace}/{name}"))
            }
        }
    }

    /// Registers a node as its kubelet does: the Node with its status, the status through the
    /// subresource, and its Lease.
    async fn create_node(&self, node: Node) -> Result<(), ExternalError> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let nodes: Api<Node> = Api::all(self.client.clone());
        let mut new = node.clone();
        owned_meta(&mut new.metadata, &self.opts.instance);
        // A cloud's node controller would delete a node whose provider ID it does not know,
        // and a node IPAM controller allocates pod CIDRs itself.
        if let Some(spec) = new.spec.as_mut() {
            spec.provider_id = None;
            spec.pod_cidr = None;
            spec.pod_cidrs = None;
        }
        let created = match self.call(|| nodes.create(&PP, &new)).await {
            Ok(n) => n,
            Err(e) if code(&e) == Some(409) => {
                // A retried create that had gone through, or someone else's node.
                let existing = self
                    .call(|| nodes.get(&name))
                    .await
                    .map_err(api_err(format!("reading node {name}")))?;
                let labels = existing.metadata.labels.as_ref();
                let ours = labels
                    .and_then(|l| l.get(OWNED_LABEL))
                    .is_some_and(|v| v == "true");
                if !ours {
                    return Err(ExternalError::Foreign { kind: "node", name });
                }
                let instance = labels.and_then(|l| l.get(INSTANCE_LABEL));
                if instance != Some(&self.opts.instance) {
                    return Err(ExternalError::OtherInstance {
                        kind: "node",
                        name,
                        instance: instance.cloned().unwrap_or_default(),
                    });
                }
                existing
            }
            Err(e) => return Err(api_err(format!("creating node {name}"))(e)),
        };
        let uid = created.metadata.uid.clone().unwrap_or_default();
        let status = Patch::Strategic(json!({"status": node.status}));
        self.call(|| nodes.patch_status(&name, &PATCH, &status))
            .await
            .map_err(api_err(format!("writing the status of node {name}")))?;
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(LEASE_NAMESPACE.into()),
                labels: Some(
                    [
                        (OWNED_LABEL.to_string(), "true".to_string()),
                        (INSTANCE_LABEL.to_string(), self.opts.instance.clone()),
                    ]
                    .into(),
                ),
                owner_references: Some(vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: name.clone(),
                    uid: uid.clone(),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(name.clone()),
                lease_duration_seconds: Some(self.opts.lease_duration_seconds),
                renew_time: Some(micro_now()),
                ..Default::default()
            }),
        };
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        let lease = match self.call(|| leases.create(&PP, &lease)).await {
            Ok(l) => l,
            Err(e) if code(&e) == Some(409) => self
                .call(|| leases.get(&name))
                .await
                .map_err(api_err(format!("reading the lease of node {name}")))?,
            Err(e) => return Err(api_err(format!("creating the lease of node {name}"))(e)),
        };
        let mut c = self.created();
        c.nodes.insert(name.clone(), uid);
        c.leases.insert(name, lease);
        Ok(())
    }

    async fn delete_node(&self, name: &str) -> Result<(), ExternalError> {
        let dp = DeleteParams::default();
        self.created().deleting_nodes.insert(name.to_string());
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        self.call(|| leases.delete(name, &dp))
            .await
            .map(|_| ())
            .or_else(ignore_missing)
            .map_err(api_err(format!("deleting the lease of node {name}")))?;
        let nodes: Api<Node> = Api::all(self.client.clone());
        let r = self
            .call(|| nodes.delete(name, &dp))
            .await
            .map(|_| ())
            .or_else(ignore_missing)
            .map_err(api_err(format!("deleting node {name}")));
        let mut c = self.created();
        c.nodes.remove(name);
        c.leases.remove(name);
        r
    }

    /// Creates, binds and reports a new pod, or reports the new status of a known one.
    async fn upsert_pod(&self, pod: Pod) -> Result<(), ExternalError> {
        let (ns, name) = pod_key(&pod);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let known = self
            .created()
            .pods
            .contains_key(&(ns.clone(), name.clone()));
        if !known {
            let new = pod_for_create(&pod, &self.opts.instance);
            let created = match self.call(|| pods.create(&PP, &new)).await {
                Ok(p) => p,
                Err(e) if code(&e) == Some(409) => self
                    .call(|| pods.get(&name))
                    .await
                    .map_err(api_err(format!("reading pod {ns}/{name}")))?,
                Err(e) => return Err(api_err(format!("creating pod {ns}/{name}"))(e)),
            };
            let uid = created.metadata.uid.clone().unwrap_or_default();
            let bound = created
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| !n.is_empty());
            let node = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            if !bound {
                let binding = Binding {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(ns.clone()),
                        uid: Some(uid.clone()),
                        ..Default::default()
                    },
                    target: ObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Node".into()),
                        name: Some(node.clone()),
                        ..Default::default()
                    },
                };
                self.call(|| {
                    pods.create_subresource::<_, kube::core::Status>(
                        "binding", &name, &PP, &binding,
                    )
                })
                .await
                .map_err(api_err(format!("binding pod {ns}/{name} to {node}")))?;
            }
            self.created().pods.insert((ns.clone(), name.clone()), uid);
        }
        // The QoS class is the API server's (computed at creation, immutable): leave it out.
        let mut status = pod.status.clone().unwrap_or_default();
        status.qos_class = None;
        let status = Patch::Strategic(json!({ "status": status }));
        self.call(|| pods.patch_status(&name, &PATCH, &status))
            .await
            .map_err(api_err(format!("writing the status of pod {ns}/{name}")))?;
        Ok(())
    }

    /// Deletes a pod as its owner then its kubelet do: gracefully, then with grace 0 on its uid.
    async fn delete_pod(&self, ns: &str, name: &str) -> Result<(), ExternalError> {
        let key = (ns.to_string(), name.to_string());
        let uid = {
            let mut c = self.created();
            c.deleting_pods.insert(key.clone());
            c.pods.get(&key).cloned()
        };
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let graceful = DeleteParams::default();
        let r = async {
            match self.call(|| pods.delete(name, &graceful)).await {
                Err(e) if code(&e) == Some(404) => return Ok(()),
                Err(e) => return Err(api_err(format!("deleting pod {ns}/{name}"))(e)),
                Ok(_) => {}
            }
            self.finalize_pod(ns, name, uid.clone()).await
        }
        .await;
        let mut c = self.created();
        c.pods.remove(&key);
        c.deleting_pods.remove(&key);
        r
    }

    /// The kubelet's final delete of a pod it has stopped.
    async fn finalize_pod(
        &self,
        ns: &str,
        name: &str,
        uid: Option<String>,
    ) -> Result<(), ExternalError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let dp = DeleteParams::default()
            .grace_period(0)
            .preconditions(Preconditions {
                uid,
                resource_version: None,
            });
        self.call(|| pods.delete(name, &dp))
            .await
            .map(|_| ())
            .or_else(ignore_missing)
            .map_err(api_err(format!(
                "finishing the deletion of pod {ns}/{name}"
            )))
    }

    /// Renews every node's Lease every `lease_renew_interval`, spread over the interval, and
    /// re-posts each node's heartbeat every `status_report_interval`, until `shutdown`.
    pub async fn heartbeats(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        const SLOTS: u32 = 20;
        let slot = self.opts.lease_renew_interval / SLOTS;
        let mut tick = tokio::time::interval(slot.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u64 = 0;
        let mut last_report = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let report = last_report.elapsed() >= self.opts.status_report_interval;
            if report {
                last_report = tokio::time::Instant::now();
            }
            let due: Vec<String> = {
                let c = self.created();
                c.leases
                    .keys()
                    .filter(|name| report || hash(name) % u64::from(SLOTS) == n % u64::from(SLOTS))
                    .cloned()
                    .collect()
            };
            n += 1;
            let this = &self;
            futures::stream::iter(due)
                .for_each_concurrent(self.opts.concurrency.max(1), |name| async move {
                    if let Err(e) = this.renew(&name).await {
                        tracing::warn!(node = %name, error = %e, "renewing the node lease failed");
                    }
                    if report && let Err(e) = this.report_status(&name).await {
                        tracing::warn!(node = %name, error = %e, "posting the node heartbeat failed");
                    }
                })
                .await;
        }
    }

    /// Renews one node's Lease: an update with the last version written, as the kubelet's
    /// lease controller does; on a conflict or absence, from the current state.
    async fn renew(&self, node: &str) -> Result<(), ExternalError> {
        let Some(mut lease) = self.created().leases.get(node).cloned() else {
            return Ok(());
        };
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        if let Some(spec) = lease.spec.as_mut() {
            spec.renew_time = Some(micro_now());
        }
        let renewed = match self.call(|| leases.replace(node, &PP, &lease)).await {
            Ok(l) => l,
            Err(e) if code(&e) == Some(409) => {
                let mut fresh = self
                    .call(|| leases.get(node))
                    .await
                    .map_err(api_err(format!("reading the lease of node {node}")))?;
                if let Some(spec) = fresh.spec.as_mut() {
                    spec.renew_time = Some(micro_now());
                }
                self.call(|| leases.replace(node, &PP, &fresh))
                    .await
                    .map_err(api_err(format!("renewing the lease of node {node}")))?
            }
            Err(e) => return Err(api_err(format!("renewing the lease of node {node}"))(e)),
        };
        self.renewals.fetch_add(1, Ordering::Relaxed);
        if let Some(l) = self.created().leases.get_mut(node) {
            *l = renewed;
        }
        Ok(())
    }

    /// Re-posts a node's conditions with a fresh heartbeat.
    async fn report_status(&self, node: &str) -> Result<(), ExternalError> {
        let now = crate::apiserver::write::rfc3339(SystemTime::now());
        let conditions: Vec<Value> = ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
            .iter()
            .map(|t| json!({"type": t, "lastHeartbeatTime": now}))
            .collect();
        let body = Patch::Strategic(json!({"status": {"conditions": conditions}}));
        let nodes: Api<Node> = Api::all(self.client.clone());
        self.call(|| nodes.patch_status(node, &PATCH, &body))
            .await
            .map(|_| ())
            .map_err(api_err(format!("posting the status of node {node}")))
    }

    /// Watches kube-sim's pods and nodes for what others do to them, as kubelets would see
    /// it: a pod someone deletes is stopped (the model lets it go) and its deletion finished
    /// with grace 0; a node someone deletes leaves the simulation.
    pub async fn watch_others(
        self: Arc<Self>,
        control: Arc<Control>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let nodes: Api<Node> = Api::all(self.client.clone());
        let cfg = watcher::Config::default().labels(&self.own_labels());
        let pod_events = watcher(pods, cfg.clone()).map_ok(Watched::Pod);
        let node_events = watcher(nodes, cfg).map_ok(Watched::Node);
        let mut events = futures::stream::select(pod_events, node_events).boxed();
        loop {
            let ev = tokio::select! {
                ev = events.next() => ev,
                _ = shutdown.changed() => return,
            };
            match ev {
                None => return,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "watching kube-sim's objects");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Some(Ok(Watched::Pod(watcher::Event::Apply(p))))
                    if p.metadata.deletion_timestamp.is_some() =>
                {
                    self.deleted_by_others(&control, pod_key(&p), p.metadata.uid.clone())
                        .await;
                }
                Some(Ok(Watched::Pod(watcher::Event::Delete(p)))) => {
                    self.deleted_by_others(&control, pod_key(&p), None).await;
                }
                Some(Ok(Watched::Node(watcher::Event::Delete(n)))) => {
                    let name = n.metadata.name.clone().unwrap_or_default();
                    let ours = {
                        let c = self.created();
                        c.nodes.contains_key(&name) && !c.deleting_nodes.contains(&name)
                    };
                    if ours {
                        tracing::info!(node = %name, "node deleted from outside: removing it from the simulation");
                        self.created().nodes.remove(&name);
                        let changes = control.model().remove_node(&name);
                        control.apply(changes).await;
                    }
                }
                Some(Ok(_)) => {}
            }
        }
    }

    async fn deleted_by_others(
        &self,
        control: &Control,
        key: (String, String),
        uid: Option<String>,
    ) {
        let ours = {
            let c = self.created();
            c.pods.contains_key(&key) && !c.deleting_pods.contains(&key)
        };
        if !ours {
            return;
        }
        let (ns, name) = &key;
        tracing::info!(pod = %format!("{ns}/{name}"), "pod deleted from outside: its kubelet stops it");
        // The model lets the pod go; the change it returns is this very deletion.
        let _ = control.model().delete_pod(ns, name);
        self.created().deleting_pods.insert(key.clone());
        if uid.is_some()
            && let Err(e) = self.finalize_pod(ns, name, uid).await
        {
            tracing::warn!(error = %e, "finishing a pod deletion failed");
        }
        let mut c = self.created();
        c.pods.remove(&key);
        c.deleting_pods.remove(&key);
    }
}

/// A watch event of either kind kube-sim watches.
// One at a time, straight from the stream to the match: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Watched {
    Pod(watcher::Event<Pod>),
    Node(watcher::Event<Node>),
}

fn ignore_missing(e: kube::Error) -> Result<(), kube::Error> {
    if code(&e) == Some(404) {
        Ok(())
    } else {
        Err(e)
    }
}

/// FNV-1a, to spread nodes over the renewal slots.
fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_are_created_as_a_controller_would() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "team-a", "uid": "u", "resourceVersion": "9",
                "creationTimestamp": "2025-01-01T00:00:00Z", "labels": {"app": "web"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "x"}]},
            "spec": {"nodeName": "node-00001", "priority": 0, "preemptionPolicy": "PreemptLowerPriority",
                "serviceAccountName": "coredns", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running"}
        }))
        .unwrap();
        let p = pod_for_create(&pod, "node-00001");
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(
            v["metadata"],
            json!({"name": "web-1", "namespace": "team-a",
            "labels": {"app": "web", "kube-sim.io/owned": "true", "kube-sim.io/instance": "node-00001"}})
        );
        assert_eq!(
            v["spec"],
            json!({"automountServiceAccountToken": false,
            "serviceAccount": "default", "serviceAccountName": "default",
            "containers": [{"name": "c", "image": "i"}]})
        );
        assert!(v.get("status").is_none());
    }

    #[test]
    fn lease_slots_spread_nodes() {
        let mut counts = [0u32; 20];
        for i in 0..2000 {
            counts[(hash(&format!("node-{i:05}")) % 20) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (60..=140).contains(c)), "{counts:?}");
    }
}
