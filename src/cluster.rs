//! Cluster state: the nodes to scrape and the Running pods to serve, kept current by watchers.
//!
//! Only the fields the pipeline needs are kept, because memory per node and per pod is a
//! product feature. Reads never take a global lock: nodes are sharded by name and pods by
//! namespace, so the HPA's "pods in one namespace" query touches one shard.
//!
//! Each namespace's pods carry a change generation and a bounded log of the pods changed
//! lately, so that a reader holding something derived from them (the API's label index) can
//! tell with one lookup whether it is current, and catch up from the changed pods alone
//! ([`ClusterState::changes_since`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::selector::Labels;

pub mod watch;

const SHARDS: usize = 64;

/// Labels as a compact sorted list; most objects have a handful.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSet(pub Box<[(Box<str>, Box<str>)]>);

impl LabelSet {
    /// Builds a set from any key/value pairs, sorted by key.
    pub fn from_pairs<K: Into<Box<str>>, V: Into<Box<str>>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let mut v: Vec<(Box<str>, Box<str>)> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Self(v.into_boxed_slice())
    }

    /// Iterates `(key, value)` in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Labels for LabelSet {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &*self.0[i].1)
    }
}

/// The kinds of `status.addresses` entries, in `--kubelet-preferred-address-types` spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeAddressType {
    Hostname,
    InternalDNS,
    InternalIP,
    ExternalDNS,
    ExternalIP,
}

impl NodeAddressType {
    /// Parses the spelling Kubernetes uses in `status.addresses[].type`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "Hostname" => Self::Hostname,
            "InternalDNS" => Self::InternalDNS,
            "InternalIP" => Self::InternalIP,
            "ExternalDNS" => Self::ExternalDNS,
            "ExternalIP" => Self::ExternalIP,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hostname => "Hostname",
            Self::InternalDNS => "InternalDNS",
            Self::InternalIP => "InternalIP",
            Self::ExternalDNS => "ExternalDNS",
            Self::ExternalIP => "ExternalIP",
        }
    }
}

/// What the pipeline needs about one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: Arc<str>,
    pub labels: LabelSet,
    /// `status.addresses` in the order the node lists them.
    pub addresses: Box<[(NodeAddressType, Box<str>)]>,
    /// `status.daemonEndpoints.kubeletEndpoint.port`, 0 when unset.
    pub kubelet_port: u16,
    /// The `metrics.k8s.io/resource-metrics-path` annotation, if set.
    pub metrics_path: Option<Box<str>>,
    /// `status.allocatable` CPU in millicores and memory in bytes, 0 when unknown.
    pub allocatable_cpu_millis: u64,
    pub allocatable_memory_bytes: u64,
}

impl NodeInfo {
    /// The first address in `preferred` order, as metrics-server picks it.
    pub fn preferred_address(
        &self,
        preferred: &[NodeAddressType],
    ) -> Option<(NodeAddressType, &str)> {
        preferred.iter().find_map(|want| {
            self.addresses
                .iter()
                .find(|(t, _)| t == want)
                .map(|(t, a)| (*t, &**a))
        })
    }
}

/// What the metrics API needs about one Running pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: Arc<str>,
    pub name: Box<str>,
    pub labels: LabelSet,
}

impl PodInfo {
    /// `(namespace, name)`: what the pod is known by, and the order pods are listed in.
    pub fn key(&self) -> (&str, &str) {
        (&self.namespace, &self.name)
    }
}

/// The source of every namespace's generation. One counter for all namespaces (and all
/// [`ClusterState`]s) means a value is never handed out twice, so a namespace that is emptied,
/// dropped and re-created cannot come back with a generation a reader has already seen. It
/// is only taken when a pod changes, never on a read, and always under the namespace's shard
/// write lock, so a namespace created anew (or re-listed) starts above every generation its
/// earlier self had: [`ClusterState::changes_since`] relies on that.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

/// A namespace's change log keeps the last eighth of its pod count in changes, within these
/// bounds. Past roughly that many changes a reader following them touches about as much as
/// one reading the namespace afresh, so a longer log would save little; the bounds let small
/// namespaces follow a burst, and cap a large one's log at about 70 KiB (names included).
pub const CHANGE_LOG_MIN: usize = 8;
pub const CHANGE_LOG_MAX: usize = 1024;

/// One namespace's pods, in name order, their generation and the log of their changes. Not
/// `Clone`: a copy would share its generation with the original while the two could change
/// apart.
struct NamespacePods {
    /// Replaced under the shard's write lock by every change to `pods`.
    generation: u64,
    pods: BTreeMap<Box<str>, Arc<PodInfo>>,
    /// The name of each pod changed since `log_floor`, with the generation its change gave
    /// the namespace, oldest first. Names, not pods: the log never keeps a removed pod alive.
    log: VecDeque<(u64, Box<str>)>,
    /// The generation the log reaches back to: every change after it is in `log`.
    log_floor: u64,
}

impl NamespacePods {
    /// Takes a new generation: to be called under the shard's write lock.
    fn new(pods: BTreeMap<Box<str>, Arc<PodInfo>>) -> Self {
        let generation = next_generation();
        Self {
            generation,
            pods,
            log: VecDeque::new(),
            log_floor: generation,
        }
    }

    /// To be called, under the shard's write lock, after every change to the pod `name`.
    fn changed(&mut self, name: Box<str>) {
        self.generation = next_generation();
        self.log.push_back((self.generation, name));
        let keep = (self.pods.len() / 8).clamp(CHANGE_LOG_MIN, CHANGE_LOG_MAX);
        while self.log.len() > keep {
            if let Some((generation, _)) = self.log.pop_front() {
                self.log_floor = generation;
            }
        }
    }
}

/// One pod's change, as [`ClusterState::changes_since`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodChange {
    /// The pod as it is now: added or replaced since.
    Present(Arc<PodInfo>),
    /// The pod of this name is gone.
    Removed(Box<str>),
}

impl PodChange {
    pub fn name(&self) -> &str {
        match self {
            Self::Present(pod) => &pod.name,
            Self::Removed(name) => name,
        }
    }
}

fn next_generation() -> u64 {
    // Readers compare generations taken under the shard locks, which order them; the counter
    // itself only has to be unique.
    GENERATIONS.fetch_add(1, Ordering::Relaxed)
}

type NodeShard = RwLock<HashMap<Arc<str>, Arc<NodeInfo>>>;
type PodShard = RwLock<HashMap<Arc<str>, NamespacePods>>;

/// The watched cluster: nodes and Running pods, readable from many threads at once.
pub struct ClusterState {
    hasher: std::collections::hash_map::RandomState,
    nodes: Box<[NodeShard]>,
    pods: Box<[PodShard]>,
    nodes_synced: AtomicBool,
    pods_synced: AtomicBool,
}

impl Default for ClusterState {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ClusterState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterState")
            .field("nodes", &self.node_count())
            .field("pods", &self.pod_count())
            .finish()
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // A panic while holding the lock cannot leave these maps half-updated (every update is a
    // single insert or remove), so a poisoned lock is still safe to read.
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

impl ClusterState {
    pub fn new() -> Self {
        Self {
            hasher: Default::default(),
            nodes: (0..SHARDS).map(|_| RwLock::default()).collect(),
            pods: (0..SHARDS).map(|_| RwLock::default()).collect(),
            nodes_synced: AtomicBool::new(false),
            pods_synced: AtomicBool::new(false),
        }
    }

    fn shard<K: Hash + ?Sized>(&self, key: &K) -> usize {
        (self.hasher.hash_one(key) as usize) % SHARDS
    }

    /// Adds or replaces a node.
    pub fn upsert_node(&self, node: NodeInfo) {
        let shard = self.shard(&*node.name);
        write(&self.nodes[shard]).insert(Arc::clone(&node.name), Arc::new(node));
    }

    /// Removes a node; returns whether it was known.
    pub fn remove_node(&self, name: &str) -> bool {
        write(&self.nodes[self.shard(name)]).remove(name).is_some()
    }

    pub fn node(&self, name: &str) -> Option<Arc<NodeInfo>> {
        read(&self.nodes[self.shard(name)]).get(name).cloned()
    }

    /// All nodes, sorted by name.
    pub fn nodes(&self) -> Vec<Arc<NodeInfo>> {
        let mut all: Vec<Arc<NodeInfo>> = Vec::with_capacity(self.node_count());
        for shard in self.nodes.iter() {
            all.extend(read(shard).values().cloned());
        }
        all.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub fn node_count(&self) -> usize {
        self.nodes.iter().map(|s| read(s).len()).sum()
    }

    /// Replaces the whole node set (a watcher's re-list), keeping the `Arc`s of unchanged
    /// nodes. Returns the names of the nodes that are gone.
    pub fn replace_nodes(&self, nodes: impl IntoIterator<Item = NodeInfo>) -> Vec<Arc<str>> {
        let mut fresh: Vec<HashMap<Arc<str>, Arc<NodeInfo>>> = vec![HashMap::new(); SHARDS];
        for n in nodes {
            let shard = self.shard(&*n.name);
            fresh[shard].insert(Arc::clone(&n.name), Arc::new(n));
        }
        let mut removed = Vec::new();
        for (lock, mut new) in self.nodes.iter().zip(fresh) {
            let mut guard = write(lock);
            for (name, old) in guard.drain() {
                match new.get_mut(&name) {
                    Some(n) if **n == *old => *n = old,
                    Some(_) => {}
                    None => removed.push(name),
                }
            }
            *guard = new;
        }
        removed
    }

    /// Adds or replaces a pod.
    pub fn upsert_pod(&self, pod: PodInfo) {
        let shard = self.shard(&*pod.namespace);
        let mut guard = write(&self.pods[shard]);
        let ns = guard
            .entry(Arc::clone(&pod.namespace))
            .or_insert_with(|| NamespacePods::new(BTreeMap::new()));
        let name = pod.name.clone();
        ns.pods.insert(pod.name.clone(), Arc::new(pod));
        ns.changed(name);
    }

    /// Removes a pod; returns whether it was known.
    pub fn remove_pod(&self, namespace: &str, name: &str) -> bool {
        let mut guard = write(&self.pods[self.shard(namespace)]);
        let Some(ns) = guard.get_mut(namespace) else {
            return false;
        };
        let Some((name, _)) = ns.pods.remove_entry(name) else {
            return false;
        };
        ns.changed(name);
        if ns.pods.is_empty() {
            guard.remove(namespace);
        }
        true
    }

    /// Replaces the whole pod set (a watcher's re-list). Every namespace gets a new generation
    /// and an empty change log, since every pod is a new object. Returns the (namespace, name)
    /// of the pods that are gone.
    pub fn replace_pods(
        &self,
        pods: impl IntoIterator<Item = PodInfo>,
    ) -> Vec<(Arc<str>, Box<str>)> {
        type Pods = BTreeMap<Box<str>, Arc<PodInfo>>;
        let mut fresh: Vec<HashMap<Arc<str>, Pods>> = (0..SHARDS).map(|_| HashMap::new()).collect();
        for p in pods {
            let shard = self.shard(&*p.namespace);
            fresh[shard]
                .entry(Arc::clone(&p.namespace))
                .or_default()
                .insert(p.name.clone(), Arc::new(p));
        }
        let mut removed = Vec::new();
        for (lock, new) in self.pods.iter().zip(fresh) {
            let mut guard = write(lock);
            // The generations are taken under the lock (see `GENERATIONS`).
            let new = new
                .into_iter()
                .map(|(ns, pods)| (ns, NamespacePods::new(pods)))
                .collect();
            let old = std::mem::replace(&mut *guard, new);
            for (ns, pods) in old {
                let still = guard.get(&ns);
                removed.extend(
                    pods.pods
                        .into_keys()
                        .filter(|name| still.is_none_or(|p| !p.pods.contains_key(name)))
                        .map(|name| (Arc::clone(&ns), name)),
                );
            }
        }
        removed
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<Arc<PodInfo>> {
        read(&self.pods[self.shard(namespace)])
            .get(namespace)
            .and_then(|ns| ns.pods.get(name))
            .cloned()
    }

    /// The generation of a namespace's pods: it changes with every pod added to, replaced in
    /// or removed from the namespace, and with nothing else. A namespace without pods is 0,
    /// which no namespace with pods ever has. Costs one shard read lock and one lookup.
    pub fn pods_generation(&self, namespace: &str) -> u64 {
        read(&self.pods[self.shard(namespace)])
            .get(namespace)
            .map_or(0, |ns| ns.generation)
    }

    /// A namespace's pods in name order, with the [`Self::pods_generation`] they are from,
    /// both read under one lock so they always belong together.
    pub fn snapshot_namespace(&self, namespace: &str) -> (u64, Vec<Arc<PodInfo>>) {
        match read(&self.pods[self.shard(namespace)]).get(namespace) {
            Some(ns) => (ns.generation, ns.pods.values().cloned().collect()),
            None => (0, Vec::new()),
        }
    }

    /// What changed in a namespace's pods since generation `since`, at which a reader holds
    /// them: the current generation and, for each pod changed since, in name order, its
    /// current state. Read under one lock, so the changes applied to the pods as they were at
    /// `since` give the pods at the returned generation. No changes if `since` is current.
    ///
    /// `None` when the namespace's change log does not reach back to `since` (it keeps the
    /// last eighth of the namespace's pod count in changes, within [`CHANGE_LOG_MIN`] and
    /// [`CHANGE_LOG_MAX`]), or `since` is not a generation of the namespace as it is now (it
    /// was re-listed, or dropped and re-created, since): the reader must then read the
    /// namespace afresh ([`Self::snapshot_namespace`]).
    pub fn changes_since(&self, namespace: &str, since: u64) -> Option<(u64, Vec<PodChange>)> {
        let guard = read(&self.pods[self.shard(namespace)]);
        let Some(ns) = guard.get(namespace) else {
            return (since == 0).then(|| (0, Vec::new()));
        };
        if since == ns.generation {
            return Some((since, Vec::new()));
        }
        if since < ns.log_floor || since > ns.generation {
            return None;
        }
        let first = ns
            .log
            .partition_point(|(generation, _)| *generation <= since);
        let mut names: Vec<&str> = ns.log.range(first..).map(|(_, name)| &**name).collect();
        names.sort_unstable();
        names.dedup();
        let changes = names
            .into_iter()
            .map(|name| match ns.pods.get(name) {
                Some(pod) => PodChange::Present(Arc::clone(pod)),
                None => PodChange::Removed(name.into()),
            })
            .collect();
        Some((ns.generation, changes))
    }

    /// Visits the pods of one namespace, or of all namespaces, in (namespace, name) order.
    /// The visitor runs under a shard's read lock, so it must not call back into this state.
    pub fn for_each_pod(&self, namespace: Option<&str>, mut f: impl FnMut(&Arc<PodInfo>)) {
        match namespace {
            Some(ns) => {
                if let Some(ns) = read(&self.pods[self.shard(ns)]).get(ns) {
                    ns.pods.values().for_each(&mut f);
                }
            }
            None => {
                let mut namespaces: Vec<(Arc<str>, usize)> = Vec::new();
                for (i, shard) in self.pods.iter().enumerate() {
                    namespaces.extend(read(shard).keys().map(|k| (Arc::clone(k), i)));
                }
                namespaces.sort_unstable();
                for (ns, shard) in namespaces {
                    if let Some(ns) = read(&self.pods[shard]).get(&ns) {
                        ns.pods.values().for_each(&mut f);
                    }
                }
            }
        }
    }

    pub fn pod_count(&self) -> usize {
        self.pods
            .iter()
            .map(|s| read(s).values().map(|ns| ns.pods.len()).sum::<usize>())
            .sum()
    }

    pub fn set_nodes_synced(&self) {
        self.nodes_synced.store(true, Ordering::Release);
    }

    pub fn set_pods_synced(&self) {
        self.pods_synced.store(true, Ordering::Release);
    }

    pub fn nodes_synced(&self) -> bool {
        self.nodes_synced.load(Ordering::Acquire)
    }

    pub fn pods_synced(&self) -> bool {
        self.pods_synced.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, app: &str) -> PodInfo {
        PodInfo {
            namespace: Arc::from(ns),
            name: name.into(),
            labels: LabelSet::from_pairs([("app", app)]),
        }
    }

    #[test]
    fn pods_are_visited_in_namespace_then_name_order() {
        let state = ClusterState::new();
        for (ns, name) in [("b", "2"), ("a", "9"), ("b", "1"), ("c", "1"), ("a", "10")] {
            state.upsert_pod(pod(ns, name, "x"));
        }
        let mut seen = Vec::new();
        state.for_each_pod(None, |p| seen.push(format!("{}/{}", p.namespace, p.name)));
        assert_eq!(seen, ["a/10", "a/9", "b/1", "b/2", "c/1"]);
        let mut in_b = Vec::new();
        state.for_each_pod(Some("b"), |p| in_b.push(p.name.to_string()));
        assert_eq!(in_b, ["1", "2"]);
        assert!(state.remove_pod("b", "1"));
        assert!(!state.remove_pod("b", "1"));
        assert_eq!(state.pod_count(), 4);
        assert!(state.pod("a", "9").is_some());
    }

    #[test]
    fn the_generation_changes_with_every_pod_change_of_its_namespace_only() {
        let state = ClusterState::new();
        assert_eq!(state.pods_generation("ns"), 0);
        let mut seen = vec![0];
        let mut changed = |state: &ClusterState| {
            let generation = state.pods_generation("ns");
            assert!(!seen.contains(&generation), "{generation} repeats {seen:?}");
            seen.push(generation);
        };
        state.upsert_pod(pod("ns", "a", "web"));
        changed(&state);
        state.upsert_pod(pod("ns", "b", "web"));
        changed(&state);
        // Relabelled, and replaced by an identical pod: both are new objects.
        state.upsert_pod(pod("ns", "a", "db"));
        changed(&state);
        state.upsert_pod(pod("ns", "a", "db"));
        changed(&state);
        assert!(state.remove_pod("ns", "b"));
        changed(&state);

        // Other namespaces, and removals of pods that are not there, change nothing.
        let before = state.pods_generation("ns");
        state.upsert_pod(pod("other", "a", "web"));
        state.upsert_pod(pod("other", "a", "db"));
        assert!(state.remove_pod("other", "a"));
        assert!(!state.remove_pod("ns", "b"));
        assert!(!state.remove_pod("missing", "a"));
        assert_eq!(state.pods_generation("ns"), before);
        assert_eq!(state.pods_generation("other"), 0);

        // Emptied: the namespace is gone, and when re-created with the same pod it does not
        // come back with any generation it had before (nor 0).
        assert!(state.remove_pod("ns", "a"));
        assert_eq!(state.pods_generation("ns"), 0);
        state.upsert_pod(pod("ns", "a", "db"));
        changed(&state);

        // A re-list renews every namespace it fills.
        let (generation, pods) = state.snapshot_namespace("ns");
        assert_eq!(generation, state.pods_generation("ns"));
        assert_eq!(pods.len(), 1);
        state.replace_pods([pod("ns", "a", "db"), pod("ns", "c", "web")]);
        changed(&state);
        let (generation, pods) = state.snapshot_namespace("ns");
        assert_eq!(generation, state.pods_generation("ns"));
        let names: Vec<&str> = pods.iter().map(|p| &*p.name).collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(state.snapshot_namespace("missing"), (0, Vec::new()));
    }

    #[test]
    fn changes_since_names_each_changed_pod_once_with_its_state_now() {
        let state = ClusterState::new();
        assert_eq!(state.changes_since("ns", 0), Some((0, Vec::new())));
        for name in ["a", "b", "c"] {
            state.upsert_pod(pod("ns", name, "web"));
        }
        let since = state.pods_generation("ns");
        assert_eq!(state.changes_since("ns", since), Some((since, Vec::new())));
        // A new namespace's first reader has nothing to follow from.
        assert_eq!(state.changes_since("ns", 0), None);
        state.upsert_pod(pod("ns", "c", "db"));
        state.upsert_pod(pod("ns", "d", "web"));
        assert!(state.remove_pod("ns", "a"));
        state.upsert_pod(pod("ns", "c", "cache"));
        state.upsert_pod(pod("other", "a", "web"));
        let (generation, changes) = state.changes_since("ns", since).unwrap();
        assert_eq!(generation, state.pods_generation("ns"));
        assert_eq!(
            changes,
            [
                PodChange::Removed("a".into()),
                PodChange::Present(state.pod("ns", "c").unwrap()),
                PodChange::Present(state.pod("ns", "d").unwrap()),
            ]
        );
        assert_eq!(changes[1].name(), "c");
        // Only what came after `since`.
        let later = state.pods_generation("ns");
        state.upsert_pod(pod("ns", "b", "db"));
        let (_, changes) = state.changes_since("ns", later).unwrap();
        assert_eq!(changes, [PodChange::Present(state.pod("ns", "b").unwrap())]);

        // A re-list starts the log afresh; so does a namespace dropped and re-created.
        let before = state.pods_generation("ns");
        state.replace_pods([pod("ns", "a", "web")]);
        assert_eq!(state.changes_since("ns", before), None);
        let relisted = state.pods_generation("ns");
        assert!(state.remove_pod("ns", "a"));
        assert_eq!(state.changes_since("ns", relisted), None);
        state.upsert_pod(pod("ns", "a", "web"));
        assert_eq!(state.changes_since("ns", relisted), None);
    }

    #[test]
    fn the_change_log_is_bounded_and_keeps_no_removed_pod() {
        let state = ClusterState::new();
        for i in 0..40 {
            state.upsert_pod(pod("ns", &format!("p{i:02}"), "web"));
        }
        let log = |state: &ClusterState| {
            let guard = read(&state.pods[state.shard("ns")]);
            let ns = &guard["ns"];
            (ns.log.len(), ns.log_floor, ns.generation)
        };
        let start = state.pods_generation("ns");
        // 5,000 changes to a namespace of 40 pods: the log keeps CHANGE_LOG_MIN of them
        // (an eighth of 40 is less), and reaches back exactly that far.
        let mut generations = Vec::new();
        for i in 0..5_000 {
            state.upsert_pod(pod("ns", &format!("p{:02}", i % 40), ["db", "web"][i % 2]));
            generations.push(state.pods_generation("ns"));
        }
        let (len, floor, generation) = log(&state);
        assert_eq!(len, CHANGE_LOG_MIN);
        assert_eq!(floor, generations[5_000 - CHANGE_LOG_MIN - 1]);
        assert_eq!(state.changes_since("ns", start), None);
        assert_eq!(state.changes_since("ns", floor - 1), None);
        let (now, changes) = state.changes_since("ns", floor).unwrap();
        assert_eq!((now, changes.len()), (generation, CHANGE_LOG_MIN));

        // A removed pod is only a name in the log: its object is freed.
        let removed = Arc::downgrade(&state.pod("ns", "p17").unwrap());
        let since = state.pods_generation("ns");
        assert!(state.remove_pod("ns", "p17"));
        assert!(removed.upgrade().is_none());
        let (_, changes) = state.changes_since("ns", since).unwrap();
        assert_eq!(changes, [PodChange::Removed("p17".into())]);

        // A large namespace keeps an eighth of its pods in changes, up to CHANGE_LOG_MAX.
        for i in 0..20_000 {
            state.upsert_pod(pod("ns", &format!("q{i:05}"), "web"));
        }
        let count = state.snapshot_namespace("ns").1.len();
        assert_eq!(log(&state).0, (count / 8).min(CHANGE_LOG_MAX));
        assert_eq!(log(&state).0, CHANGE_LOG_MAX);
    }

    #[test]
    fn label_lookup_and_preferred_address() {
        let labels = LabelSet::from_pairs([("z", "1"), ("app", "web")]);
        assert_eq!(labels.get("app"), Some("web"));
        assert_eq!(labels.get("missing"), None);
        let node = NodeInfo {
            name: Arc::from("n1"),
            labels,
            addresses: vec![
                (NodeAddressType::InternalIP, "10.0.0.1".into()),
                (NodeAddressType::Hostname, "n1".into()),
            ]
            .into_boxed_slice(),
            kubelet_port: 10250,
            metrics_path: None,
            allocatable_cpu_millis: 0,
            allocatable_memory_bytes: 0,
        };
        use NodeAddressType::*;
        assert_eq!(
            node.preferred_address(&[InternalIP, Hostname]),
            Some((InternalIP, "10.0.0.1"))
        );
        assert_eq!(
            node.preferred_address(&[Hostname, InternalIP]),
            Some((Hostname, "n1"))
        );
        assert_eq!(node.preferred_address(&[ExternalIP]), None);
    }
}
