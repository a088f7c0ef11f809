//! A label index for the HPA's query: pods of one namespace with `key=value`.
//!
//! The HPA asks every 15 s for the pods of one namespace that match its target's
//! `matchLabels`. Scanning a large namespace means following four pointers per pod (pod,
//! label list, key, value) for every pod; this index answers with the matching pods
//! directly.
//!
//! It never serves stale data. Each namespace's entry keeps the `Arc`s of the pods it was
//! built from, in name order, with the namespace's [`ClusterState::pods_generation`] they
//! were read with (under one lock, so the two always belong together). Before use the entry
//! is checked by comparing that generation with the current one: one lookup, however large
//! the namespace. Every change to a pod of the namespace (a new pod, a removal, new labels)
//! gives it a new generation, so any change fails the check and the entry is rebuilt; changes
//! to other namespaces do not.
//!
//! Per key, the value → pods map is built on first use. Entries are sharded by namespace;
//! those not used for [`IDLE`] are dropped when their shard next changes, so deleted
//! namespaces release their pods.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::cluster::{ClusterState, LabelSet, PodInfo};
use crate::selector::Labels;

const SHARDS: usize = 64;
/// How long an unused namespace entry is kept.
pub const IDLE: Duration = Duration::from_secs(600);

type KeyIndex = HashMap<Box<str>, Vec<u32>>;
type Shard = Mutex<HashMap<Box<str>, Arc<NsEntry>>>;

struct NsEntry {
    /// The namespace's [`ClusterState::pods_generation`] when `pods` was read.
    generation: u64,
    /// The namespace's pods when the entry was built, in name order.
    pods: Vec<Arc<PodInfo>>,
    /// For each indexed key: value → positions in `pods`.
    keys: RwLock<HashMap<Box<str>, Arc<KeyIndex>>>,
    /// Seconds since the index was created, at last use.
    last_used: AtomicU64,
}

/// Label indexes of the namespaces that label-selected queries have asked about.
pub struct LabelIndex {
    hasher: std::collections::hash_map::RandomState,
    shards: Box<[Shard]>,
    epoch: Instant,
}

impl std::fmt::Debug for LabelIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LabelIndex({} namespaces)", self.namespaces())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Entries are replaced whole; a poisoned lock still holds a consistent map.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A label lookup by a linear scan that compares lengths before bytes. Objects carry a
/// handful of labels whose lengths mostly differ, so a lookup touches the key bytes about
/// once instead of at every step of a binary search.
pub fn scan_label<'a>(labels: &'a LabelSet, key: &str) -> Option<&'a str> {
    labels
        .0
        .iter()
        .find(|(k, _)| k.len() == key.len() && **k == *key)
        .map(|(_, v)| &**v)
}

/// A [`LabelSet`] read through [`scan_label`], for selector matching over many objects.
pub struct ScanLabels<'a>(pub &'a LabelSet);

impl Labels for ScanLabels<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        scan_label(self.0, key)
    }
}

impl Default for LabelIndex {
    fn default() -> Self {
        Self {
            hasher: Default::default(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            epoch: Instant::now(),
        }
    }
}

impl LabelIndex {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    /// Calls `f` with every pod of `namespace` whose label `key` is `value`, in name order,
    /// as the cluster state holds them now.
    pub fn for_each_with_label(
        &self,
        cluster: &ClusterState,
        namespace: &str,
        key: &str,
        value: &str,
        mut f: impl FnMut(&Arc<PodInfo>),
    ) {
        let entry = self.current(cluster, namespace);
        let keys = entry.keys.read().unwrap_or_else(|e| e.into_inner());
        let index = match keys.get(key) {
            Some(index) => Arc::clone(index),
            None => {
                drop(keys);
                let mut built: KeyIndex = HashMap::new();
                for (i, pod) in entry.pods.iter().enumerate() {
                    if let (Some(v), Ok(i)) = (scan_label(&pod.labels, key), u32::try_from(i)) {
                        built.entry(v.into()).or_default().push(i);
                    }
                }
                let built = Arc::new(built);
                entry
                    .keys
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key.into(), Arc::clone(&built));
                built
            }
        };
        for &i in index.get(value).map(Vec::as_slice).unwrap_or_default() {
            if let Some(pod) = entry.pods.get(i as usize) {
                f(pod);
            }
        }
    }

    /// The namespace's entry, checked against the cluster state and rebuilt if anything
    /// changed.
    fn current(&self, cluster: &ClusterState, namespace: &str) -> Arc<NsEntry> {
        let shard = &self.shards[(self.hasher.hash_one(namespace) as usize) % SHARDS];
        let cached = lock(shard).get(namespace).cloned();
        let now = self.now();
        if let Some(entry) = cached
            && entry.generation == cluster.pods_generation(namespace)
        {
            entry.last_used.store(now, Ordering::Relaxed);
            return entry;
        }
        let (generation, pods) = cluster.snapshot_namespace(namespace);
        let entry = Arc::new(NsEntry {
            generation,
            pods,
            keys: RwLock::default(),
            last_used: AtomicU64::new(now),
        });
        let idle = IDLE.as_secs();
        let mut map = lock(shard);
        map.retain(|_, e| now.saturating_sub(e.last_used.load(Ordering::Relaxed)) < idle);
        map.insert(namespace.into(), Arc::clone(&entry));
        entry
    }

    /// How many namespaces have an entry (for tests).
    pub fn namespaces(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// How many pods the entries hold, stale snapshots included (for leak checks: at most the
    /// pods of the namespaces asked about, as they were at their last query).
    pub fn held_pods(&self) -> usize {
        self.shards
            .iter()
            .map(|s| lock(s).values().map(|e| e.pods.len()).sum::<usize>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, app: &str) -> PodInfo {
        PodInfo {
            namespace: Arc::from(ns),
            name: name.into(),
            labels: LabelSet::from_pairs([("app", app), ("team", "t")]),
        }
    }

    fn names(index: &LabelIndex, cluster: &ClusterState, ns: &str, app: &str) -> Vec<String> {
        let mut out = Vec::new();
        index.for_each_with_label(cluster, ns, "app", app, |p| out.push(p.name.to_string()));
        out
    }

    #[test]
    fn follows_every_change_of_the_cluster_state() {
        let cluster = ClusterState::new();
        for (name, app) in [("a", "web"), ("b", "db"), ("c", "web")] {
            cluster.upsert_pod(pod("ns", name, app));
        }
        cluster.upsert_pod(pod("other", "x", "web"));
        let index = LabelIndex::default();
        assert_eq!(names(&index, &cluster, "ns", "web"), ["a", "c"]);
        assert_eq!(names(&index, &cluster, "ns", "none"), Vec::<String>::new());
        // A new pod, a relabelled pod and a removed pod are all seen at once.
        cluster.upsert_pod(pod("ns", "d", "web"));
        assert_eq!(names(&index, &cluster, "ns", "web"), ["a", "c", "d"]);
        cluster.upsert_pod(pod("ns", "a", "db"));
        assert_eq!(names(&index, &cluster, "ns", "web"), ["c", "d"]);
        assert_eq!(names(&index, &cluster, "ns", "db"), ["a", "b"]);
        cluster.remove_pod("ns", "c");
        assert_eq!(names(&index, &cluster, "ns", "web"), ["d"]);
        // Re-adding an identical pod is a new object, and is found.
        cluster.upsert_pod(pod("ns", "c", "web"));
        assert_eq!(names(&index, &cluster, "ns", "web"), ["c", "d"]);
        assert_eq!(names(&index, &cluster, "other", "web"), ["x"]);
        assert_eq!(
            names(&index, &cluster, "missing", "web"),
            Vec::<String>::new()
        );
        assert_eq!(index.namespaces(), 3);
        // Another key of the same namespace.
        let mut teams = Vec::new();
        index.for_each_with_label(&cluster, "ns", "team", "t", |p| {
            teams.push(p.name.to_string())
        });
        assert_eq!(teams, ["a", "b", "c", "d"]);
    }

    #[test]
    fn is_rebuilt_after_a_change_of_its_namespace_and_only_then() {
        let cluster = ClusterState::new();
        for (name, app) in [("a", "web"), ("b", "db")] {
            cluster.upsert_pod(pod("ns", name, app));
        }
        let index = LabelIndex::default();
        let first = index.current(&cluster, "ns");
        assert!(Arc::ptr_eq(&first, &index.current(&cluster, "ns")));
        // Queries, and changes to other namespaces, keep the entry and its key indexes.
        assert_eq!(names(&index, &cluster, "ns", "web"), ["a"]);
        cluster.upsert_pod(pod("other", "a", "web"));
        assert!(cluster.remove_pod("other", "a"));
        assert_eq!(names(&index, &cluster, "ns", "web"), ["a"]);
        let kept = index.current(&cluster, "ns");
        assert!(Arc::ptr_eq(&first, &kept));
        assert_eq!(kept.keys.read().unwrap().len(), 1);

        // A change is seen once, by a new entry that is then kept in its turn.
        cluster.upsert_pod(pod("ns", "b", "web"));
        let rebuilt = index.current(&cluster, "ns");
        assert!(!Arc::ptr_eq(&first, &rebuilt));
        assert_eq!(rebuilt.generation, cluster.pods_generation("ns"));
        assert!(Arc::ptr_eq(&rebuilt, &index.current(&cluster, "ns")));
        assert_eq!(names(&index, &cluster, "ns", "web"), ["a", "b"]);

        // So is the namespace emptying, and being re-created.
        assert!(cluster.remove_pod("ns", "a"));
        assert!(cluster.remove_pod("ns", "b"));
        let emptied = index.current(&cluster, "ns");
        assert!(!Arc::ptr_eq(&rebuilt, &emptied));
        assert!(emptied.pods.is_empty());
        assert!(Arc::ptr_eq(&emptied, &index.current(&cluster, "ns")));
        cluster.upsert_pod(pod("ns", "a", "web"));
        assert_eq!(names(&index, &cluster, "ns", "web"), ["a"]);
        assert!(!Arc::ptr_eq(&emptied, &index.current(&cluster, "ns")));
    }
}
