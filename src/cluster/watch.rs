//! The watchers that keep [`ClusterState`] current: Nodes (filtered by `--node-selector`) and
//! the metadata of Running pods, as metrics-server's informers do.
//!
//! What they promise:
//! - only the fields the pipeline uses are decoded at all: the watched types below skip
//!   `managedFields`, node images, conditions and every annotation but one while parsing, so a
//!   20,000-node relist costs little more than the names, labels and addresses;
//! - a relist replaces the whole set at once; nodes and pods that vanished are removed from
//!   the state and reported through the removal callbacks (the store drops them at once);
//! - the first complete list marks the state synced; the API is served only after both are;
//! - watch errors are logged and retried with kube-runtime's default backoff (client-go's
//!   parameters); they never stop the process.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use serde::Deserialize;

use super::{ClusterState, LabelSet, NodeAddressType, NodeInfo, PodInfo};
use crate::selector::LabelSelector;

/// The node annotation that overrides the kubelet metrics path, as in metrics-server.
pub const METRICS_PATH_ANNOTATION: &str = "metrics.k8s.io/resource-metrics-path";

/// The field selector of metrics-server's pod informer: only Running pods are served.
pub const RUNNING_PODS: &str = "status.phase=Running";

/// Called with the name of a node that left the cluster (or the node selector).
pub type NodeRemoved = Arc<dyn Fn(&str) + Send + Sync>;
/// Called with the namespace and name of a pod that left (or stopped Running).
pub type PodRemoved = Arc<dyn Fn(&str, &str) + Send + Sync>;

// ---------------------------------------------------------------------------------------------
// Slim watched types

/// Object metadata reduced, while parsing, to what the watcher and the pipeline read.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SlimMetaIn {
    name: Option<String>,
    namespace: Option<String>,
    resource_version: Option<String>,
    uid: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<SlimAnnotations>,
}

/// Of all annotations, only the metrics path.
#[derive(Deserialize)]
struct SlimAnnotations {
    #[serde(rename = "metrics.k8s.io/resource-metrics-path")]
    metrics_path: Option<String>,
}

fn slim_meta<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = SlimMetaIn::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        resource_version: m.resource_version,
        uid: m.uid,
        labels: m.labels,
        annotations: m
            .annotations
            .and_then(|a| a.metrics_path)
            .map(|p| BTreeMap::from([(METRICS_PATH_ANNOTATION.to_owned(), p)])),
        ..ObjectMeta::default()
    })
}

/// A Node with only what [`NodeInfo`] needs.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SlimNode {
    #[serde(default, deserialize_with = "slim_meta")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub status: SlimNodeStatus,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimNodeStatus {
    #[serde(default)]
    pub addresses: Vec<SlimAddress>,
    #[serde(default)]
    pub daemon_endpoints: SlimDaemonEndpoints,
    #[serde(default)]
    pub allocatable: SlimResources,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct SlimAddress {
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default)]
    pub address: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimDaemonEndpoints {
    #[serde(default)]
    pub kubelet_endpoint: SlimEndpoint,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct SlimEndpoint {
    /// Kubernetes spells this field with a capital P.
    #[serde(rename = "Port", default)]
    pub port: i64,
}

/// Of all allocatable resources, CPU and memory.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SlimResources {
    pub cpu: Option<String>,
    pub memory: Option<String>,
}

/// A pod's metadata, fetched through the metadata-only API
/// (`PartialObjectMetadata`, as client-go's metadata informer does).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PodMeta {
    #[serde(default, deserialize_with = "slim_meta")]
    pub metadata: ObjectMeta,
}

/// Implements `kube::Resource` for a slim core/v1 type, so kube's watcher lists and watches
/// it at the real resource's URL while we decode only our fields.
macro_rules! core_v1_resource {
    ($ty:ty, $kind:literal, $plural:literal, $scope:ty, metadata_api: $meta:literal) => {
        impl kube::Resource for $ty {
            type DynamicType = ();
            type Scope = $scope;

            fn metadata_api() -> bool {
                $meta
            }
            fn kind(_: &()) -> Cow<'_, str> {
                $kind.into()
            }
            fn group(_: &()) -> Cow<'_, str> {
                "".into()
            }
            fn version(_: &()) -> Cow<'_, str> {
                "v1".into()
            }
            fn plural(_: &()) -> Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

core_v1_resource!(SlimNode, "Node", "nodes", k8s_openapi::ClusterResourceScope, metadata_api: false);
core_v1_resource!(PodMeta, "Pod", "pods", k8s_openapi::NamespaceResourceScope, metadata_api: true);

// ---------------------------------------------------------------------------------------------
// Translation

/// Parses a Kubernetes quantity ("250m", "3.5", "16Gi", "1e3", "129M") and returns
/// `ceil(value × 10^scale10)` (the rounding of resource.Quantity's `MilliValue`/`Value`),
/// saturating at `u64::MAX`. Negative values give 0; malformed input gives `None`.
pub fn parse_quantity(s: &str, scale10: i32) -> Option<u64> {
    let s = s.trim();
    let (negative, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(num_end);
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    let (exp10, exp2): (i64, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        exp => {
            let digits = exp.strip_prefix(['e', 'E'])?;
            (digits.parse::<i64>().ok()?, 0)
        }
    };
    let digits = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() || negative {
        return Some(0);
    }
    // Beyond 38 significant digits the value cannot fit anyway; keep the precision we can.
    let kept = digits.len().min(38);
    let mantissa: u128 = digits[..kept].parse().ok()?;
    let exp = exp10 + i64::from(scale10) - frac_part.len() as i64 + (digits.len() - kept) as i64;
    let mantissa = mantissa.checked_shl(exp2).filter(|m| m >> exp2 == mantissa);
    let Some(mut value) = mantissa else {
        return Some(u64::MAX);
    };
    if exp >= 0 {
        for _ in 0..exp {
            match value.checked_mul(10) {
                Some(v) => value = v,
                None => return Some(u64::MAX),
            }
        }
    } else {
        let div = (-exp).min(39);
        let divisor = 10u128.checked_pow(u32::try_from(div).unwrap_or(39));
        value = match divisor {
            Some(d) => value.div_ceil(d),
            // Smaller than one unit but positive: rounds up to one.
            None => 1,
        };
    }
    Some(u64::try_from(value).unwrap_or(u64::MAX))
}

/// The pipeline's view of a node; `None` for an object without a name.
pub fn node_info(node: &SlimNode) -> Option<NodeInfo> {
    let meta = &node.metadata;
    let name = meta.name.as_deref().filter(|n| !n.is_empty())?;
    let status = &node.status;
    let addresses = status
        .addresses
        .iter()
        .filter(|a| !a.address.is_empty())
        .filter_map(|a| {
            Some((
                NodeAddressType::parse(&a.type_)?,
                Box::from(a.address.as_str()),
            ))
        })
        .collect();
    let port = status.daemon_endpoints.kubelet_endpoint.port;
    let quantity = |q: &Option<String>, scale| {
        q.as_deref()
            .and_then(|q| parse_quantity(q, scale))
            .unwrap_or(0)
    };
    Some(NodeInfo {
        name: Arc::from(name),
        labels: labels(meta),
        addresses,
        kubelet_port: u16::try_from(port).unwrap_or(0),
        metrics_path: meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(METRICS_PATH_ANNOTATION))
            .filter(|p| !p.is_empty())
            .map(|p| Box::from(p.as_str())),
        allocatable_cpu_millis: quantity(&status.allocatable.cpu, 3),
        allocatable_memory_bytes: quantity(&status.allocatable.memory, 0),
    })
}

fn labels(meta: &ObjectMeta) -> LabelSet {
    meta.labels
        .as_ref()
        .map(|l| LabelSet::from_pairs(l.iter().map(|(k, v)| (k.as_str(), v.as_str()))))
        .unwrap_or_default()
}

/// Shares one `Arc<str>` per namespace among all its pods.
#[derive(Debug, Default)]
pub struct Namespaces(HashSet<Arc<str>>);

impl Namespaces {
    pub fn intern(&mut self, ns: &str) -> Arc<str> {
        if let Some(existing) = self.0.get(ns) {
            return Arc::clone(existing);
        }
        let fresh: Arc<str> = Arc::from(ns);
        self.0.insert(Arc::clone(&fresh));
        fresh
    }

    /// Forgets namespaces no pod uses any more (after a relist).
    pub fn prune(&mut self) {
        self.0.retain(|ns| Arc::strong_count(ns) > 1);
    }
}

/// The pipeline's view of a pod; `None` without a name or namespace.
pub fn pod_info(pod: &PodMeta, namespaces: &mut Namespaces) -> Option<PodInfo> {
    let meta = &pod.metadata;
    let name = meta.name.as_deref().filter(|n| !n.is_empty())?;
    let namespace = meta.namespace.as_deref().filter(|n| !n.is_empty())?;
    Some(PodInfo {
        namespace: namespaces.intern(namespace),
        name: Box::from(name),
        labels: labels(meta),
    })
}

// ---------------------------------------------------------------------------------------------
// Applying events

/// Applies node watch events to the state. Separate from the stream so it can be tested
/// without an API server.
pub struct NodeSync {
    cluster: Arc<ClusterState>,
    removed: NodeRemoved,
    relist: Option<Vec<NodeInfo>>,
}

impl NodeSync {
    pub fn new(cluster: Arc<ClusterState>, removed: NodeRemoved) -> Self {
        Self {
            cluster,
            removed,
            relist: None,
        }
    }

    pub fn apply(&mut self, event: Event<SlimNode>) {
        match event {
            Event::Init => self.relist = Some(Vec::new()),
            Event::InitApply(node) => match (&mut self.relist, node_info(&node)) {
                (Some(buffer), Some(info)) => buffer.push(info),
                (None, Some(info)) => self.upsert(info),
                (_, None) => tracing::warn!("ignoring a node without a name"),
            },
            Event::InitDone => {
                let fresh = self.relist.take().unwrap_or_default();
                let count = fresh.len();
                for name in self.cluster.replace_nodes(fresh) {
                    (self.removed)(&name);
                }
                if !self.cluster.nodes_synced() {
                    tracing::info!(nodes = count, "node cache synced");
                    self.cluster.set_nodes_synced();
                }
            }
            Event::Apply(node) => match node_info(&node) {
                Some(info) => self.upsert(info),
                None => tracing::warn!("ignoring a node without a name"),
            },
            Event::Delete(node) => {
                if let Some(name) = node.metadata.name.as_deref()
                    && self.cluster.remove_node(name)
                {
                    (self.removed)(name);
                }
            }
        }
    }

    fn upsert(&self, info: NodeInfo) {
        // Node status heartbeats rarely change what we keep; skip the write when they don't.
        if self.cluster.node(&info.name).as_deref() != Some(&info) {
            self.cluster.upsert_node(info);
        }
    }
}

/// Applies pod metadata watch events to the state.
pub struct PodSync {
    cluster: Arc<ClusterState>,
    removed: PodRemoved,
    namespaces: Namespaces,
    relist: Option<Vec<PodInfo>>,
}

impl PodSync {
    pub fn new(cluster: Arc<ClusterState>, removed: PodRemoved) -> Self {
        Self {
            cluster,
            removed,
            namespaces: Namespaces::default(),
            relist: None,
        }
    }

    pub fn apply(&mut self, event: Event<PodMeta>) {
        match event {
            Event::Init => self.relist = Some(Vec::new()),
            Event::InitApply(pod) => match (pod_info(&pod, &mut self.namespaces), &mut self.relist)
            {
                (Some(info), Some(buffer)) => buffer.push(info),
                (Some(info), None) => self.upsert(info),
                (None, _) => tracing::warn!("ignoring a pod without a name or namespace"),
            },
            Event::InitDone => {
                let fresh = self.relist.take().unwrap_or_default();
                let count = fresh.len();
                for (namespace, name) in self.cluster.replace_pods(fresh) {
                    (self.removed)(&namespace, &name);
                }
                self.namespaces.prune();
                if !self.cluster.pods_synced() {
                    tracing::info!(pods = count, "pod cache synced");
                    self.cluster.set_pods_synced();
                }
            }
            Event::Apply(pod) => match pod_info(&pod, &mut self.namespaces) {
                Some(info) => self.upsert(info),
                None => tracing::warn!("ignoring a pod without a name or namespace"),
            },
            Event::Delete(pod) => {
                let meta = &pod.metadata;
                if let (Some(ns), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref())
                    && self.cluster.remove_pod(ns, name)
                {
                    (self.removed)(ns, name);
                }
            }
        }
    }

    fn upsert(&self, info: PodInfo) {
        // Every status change of a pod is a metadata event too; most change nothing we keep.
        if self.cluster.pod(&info.namespace, &info.name).as_deref() != Some(&info) {
            self.cluster.upsert_pod(info);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running the watches

fn watch_config() -> watcher::Config {
    // Lists may be served from the API server's watch cache, as client-go's informers do
    // (resourceVersion=0): much cheaper for the API server on every relist.
    watcher::Config::default().any_semantic()
}

/// Something that applies one kind of watch event to the state.
pub trait ApplyEvents<K> {
    /// What is watched, for log lines.
    const WHAT: &'static str;
    fn apply(&mut self, event: Event<K>);
}

impl ApplyEvents<SlimNode> for NodeSync {
    const WHAT: &'static str = "node";
    fn apply(&mut self, event: Event<SlimNode>) {
        NodeSync::apply(self, event);
    }
}

impl ApplyEvents<PodMeta> for PodSync {
    const WHAT: &'static str = "pod";
    fn apply(&mut self, event: Event<PodMeta>) {
        PodSync::apply(self, event);
    }
}

/// Runs a watch forever, feeding `sync`; errors are logged and retried with backoff.
async fn run_watch<K, S>(api: Api<K>, mut config: watcher::Config, mut sync: S)
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K: Send + 'static,
    S: ApplyEvents<K>,
{
    loop {
        let stream = watcher::watcher(api.clone(), config.clone()).default_backoff();
        futures::pin_mut!(stream);
        let mut restart = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => sync.apply(event),
                Err(e) if config.page_size.is_some() && continue_expired(&e) => {
                    // A paginated list slower than the API server's history (a large cluster
                    // under churn) restarts forever: each attempt expires like the last. As
                    // client-go's pager does (FullListIfExpired), list in one request instead.
                    tracing::warn!(
                        error = %e,
                        "the {} list outlived its continue token; listing without pagination from now on",
                        S::WHAT
                    );
                    config.page_size = None;
                    restart = true;
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "{} watch failed; retrying with backoff", S::WHAT)
                }
            }
        }
        if !restart {
            break;
        }
    }
    tracing::error!("the {} watch ended unexpectedly", S::WHAT);
}

/// Whether a watcher error is a paginated list's continue token expiring (410 Expired).
fn continue_expired(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::InitialListFailed(kube::Error::Api(status))
        if status.code == 410 && status.reason == "Expired")
}

/// Watches Nodes (matching `selector`) forever, feeding `sync`.
pub async fn watch_nodes(client: kube::Client, selector: Option<LabelSelector>, sync: NodeSync) {
    let mut config = watch_config();
    if let Some(sel) = selector.filter(|s| !s.is_empty()) {
        config = config.labels(&sel.to_string());
    }
    run_watch(Api::<SlimNode>::all(client), config, sync).await;
}

/// Watches the metadata of Running pods forever, feeding `sync`.
pub async fn watch_pods(client: kube::Client, sync: PodSync) {
    run_watch(
        Api::<PodMeta>::all(client),
        watch_config().fields(RUNNING_PODS),
        sync,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn only_an_expired_continue_token_switches_off_pagination() {
        let list_error = |code: u16, reason: &str| {
            watcher::Error::InitialListFailed(kube::Error::Api(Box::new(kube::core::Status {
                code,
                reason: reason.to_owned(),
                ..Default::default()
            })))
        };
        assert!(continue_expired(&list_error(410, "Expired")));
        assert!(!continue_expired(&list_error(410, "Gone")));
        assert!(!continue_expired(&list_error(500, "Expired")));
        assert!(!continue_expired(&list_error(403, "Forbidden")));
    }

    #[test]
    fn quantities_round_up_like_kubernetes() {
        let milli = |s| parse_quantity(s, 3);
        let bytes = |s| parse_quantity(s, 0);
        assert_eq!(milli("4"), Some(4000));
        assert_eq!(milli("3800m"), Some(3800));
        assert_eq!(milli("1.5"), Some(1500));
        assert_eq!(milli("100u"), Some(1));
        assert_eq!(milli("250000n"), Some(1));
        assert_eq!(milli("1e3"), Some(1_000_000));
        assert_eq!(milli("0.0001"), Some(1));
        assert_eq!(bytes("16Gi"), Some(16 << 30));
        assert_eq!(bytes("16264820Ki"), Some(16_264_820 * 1024));
        assert_eq!(bytes("129M"), Some(129_000_000));
        assert_eq!(bytes("1.5Gi"), Some(1_610_612_736));
        assert_eq!(bytes("128974848"), Some(128_974_848));
        assert_eq!(bytes("1E3"), Some(1000));
        assert_eq!(
            bytes("12E"),
            Some(12_000_000_000_000_000_000u128.min(u64::MAX as u128) as u64)
        );
        assert_eq!(bytes("100Ei"), Some(u64::MAX));
        assert_eq!(bytes("-1"), Some(0));
        assert_eq!(bytes("0"), Some(0));
        assert_eq!(bytes(""), None);
        assert_eq!(bytes("abc"), None);
        assert_eq!(bytes("12Q"), None);
        assert_eq!(bytes("1e"), None);
    }

    fn node_json(name: &str, extra_annotation: bool) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "resourceVersion": "42",
                "labels": {"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": "z1"},
                "annotations": if extra_annotation {
                    serde_json::json!({
                        "metrics.k8s.io/resource-metrics-path": "/metrics/resource/v2",
                        "node.alpha.kubernetes.io/ttl": "0"
                    })
                } else {
                    serde_json::json!({"node.alpha.kubernetes.io/ttl": "0"})
                },
                "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}]
            },
            "spec": {"podCIDR": "10.244.0.0/24"},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": "10.0.0.5"},
                    {"type": "Hostname", "address": name},
                    {"type": "SomethingNew", "address": "x"},
                    {"type": "ExternalIP", "address": ""}
                ],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10255}},
                "allocatable": {"cpu": "3800m", "memory": "16264820Ki", "pods": "110"},
                "capacity": {"cpu": "4", "memory": "16367220Ki"},
                "conditions": [{"type": "Ready", "status": "True"}],
                "images": [{"names": ["registry.k8s.io/pause:3.9"], "sizeBytes": 321520}],
                "nodeInfo": {"kubeletVersion": "v1.33.0"}
            }
        })
    }

    #[test]
    fn a_real_node_object_translates_to_what_the_pipeline_keeps() {
        let node: SlimNode = serde_json::from_value(node_json("n1", true)).unwrap();
        assert_eq!(node.metadata.resource_version.as_deref(), Some("42"));
        assert!(node.metadata.managed_fields.is_none());
        let info = node_info(&node).unwrap();
        assert_eq!(&*info.name, "n1");
        assert_eq!(
            info.addresses.to_vec(),
            vec![
                (NodeAddressType::InternalIP, Box::from("10.0.0.5")),
                (NodeAddressType::Hostname, Box::from("n1")),
            ]
        );
        assert_eq!(info.kubelet_port, 10255);
        assert_eq!(info.metrics_path.as_deref(), Some("/metrics/resource/v2"));
        assert_eq!(info.allocatable_cpu_millis, 3800);
        assert_eq!(info.allocatable_memory_bytes, 16_264_820 * 1024);
        use crate::selector::Labels as _;
        assert_eq!(info.labels.get("topology.kubernetes.io/zone"), Some("z1"));

        let plain: SlimNode = serde_json::from_value(node_json("n2", false)).unwrap();
        assert_eq!(node_info(&plain).unwrap().metrics_path, None);
        // The one annotation we keep is all the metadata holds.
        assert!(plain.metadata.annotations.is_none());
    }

    #[test]
    fn pod_metadata_from_a_partial_object_metadata_list_item() {
        let pod: PodMeta = serde_json::from_value(serde_json::json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadata",
            "metadata": {
                "name": "web-1", "namespace": "shop", "resourceVersion": "7",
                "labels": {"app": "web"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "u"}]
            }
        }))
        .unwrap();
        let mut namespaces = Namespaces::default();
        let a = pod_info(&pod, &mut namespaces).unwrap();
        let b = pod_info(&pod, &mut namespaces).unwrap();
        assert_eq!((&*a.namespace, &*a.name), ("shop", "web-1"));
        assert!(
            Arc::ptr_eq(&a.namespace, &b.namespace),
            "namespaces are shared"
        );
        drop((a, b));
        namespaces.prune();
        assert!(namespaces.0.is_empty());
    }

    fn named_node(name: &str) -> SlimNode {
        serde_json::from_value(node_json(name, false)).unwrap()
    }

    fn named_pod(ns: &str, name: &str, app: &str) -> PodMeta {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns, "labels": {"app": app}}
        }))
        .unwrap()
    }

    #[test]
    fn node_relist_replaces_the_set_and_reports_vanished_nodes() {
        let cluster = Arc::new(ClusterState::new());
        let removed = Arc::new(Mutex::new(Vec::<String>::new()));
        let r = Arc::clone(&removed);
        let mut sync = NodeSync::new(
            Arc::clone(&cluster),
            Arc::new(move |n: &str| r.lock().unwrap().push(n.to_owned())),
        );
        sync.apply(Event::Init);
        sync.apply(Event::InitApply(named_node("a")));
        sync.apply(Event::InitApply(named_node("b")));
        assert_eq!(cluster.node_count(), 0, "a relist applies at InitDone");
        assert!(!cluster.nodes_synced());
        sync.apply(Event::InitDone);
        assert!(cluster.nodes_synced());
        assert_eq!(cluster.node_count(), 2);

        sync.apply(Event::Apply(named_node("c")));
        sync.apply(Event::Delete(named_node("a")));
        sync.apply(Event::Delete(named_node("zzz")));
        assert_eq!(*removed.lock().unwrap(), ["a"]);

        // A relist after a watch gap: "b" vanished while we were away.
        sync.apply(Event::Init);
        sync.apply(Event::InitApply(named_node("c")));
        sync.apply(Event::InitApply(named_node("d")));
        sync.apply(Event::InitDone);
        let names: Vec<String> = cluster.nodes().iter().map(|n| n.name.to_string()).collect();
        assert_eq!(names, ["c", "d"]);
        assert_eq!(*removed.lock().unwrap(), ["a", "b"]);
    }

    #[test]
    fn pod_events_keep_running_pods_and_report_removals() {
        let cluster = Arc::new(ClusterState::new());
        let removed = Arc::new(Mutex::new(Vec::<String>::new()));
        let r = Arc::clone(&removed);
        let mut sync = PodSync::new(
            Arc::clone(&cluster),
            Arc::new(move |ns: &str, n: &str| r.lock().unwrap().push(format!("{ns}/{n}"))),
        );
        sync.apply(Event::Init);
        sync.apply(Event::InitApply(named_pod("a", "p1", "web")));
        sync.apply(Event::InitApply(named_pod("b", "p2", "db")));
        sync.apply(Event::InitDone);
        assert!(cluster.pods_synced());
        assert_eq!(cluster.pod_count(), 2);

        // Relabelled, then gone from the Running set (the watch sends a deletion).
        sync.apply(Event::Apply(named_pod("a", "p1", "api")));
        use crate::selector::Labels as _;
        assert_eq!(
            cluster.pod("a", "p1").unwrap().labels.get("app"),
            Some("api")
        );
        sync.apply(Event::Delete(named_pod("a", "p1", "api")));
        assert!(cluster.pod("a", "p1").is_none());

        sync.apply(Event::Init);
        sync.apply(Event::InitApply(named_pod("c", "p3", "x")));
        sync.apply(Event::InitDone);
        assert_eq!(*removed.lock().unwrap(), ["a/p1", "b/p2"]);
        assert_eq!(cluster.pod_count(), 1);
    }
}
