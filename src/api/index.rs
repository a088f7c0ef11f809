//! A label index for the HPA's query: pods of one namespace with `key=value`.
//!
//! The HPA asks every 15 s for the pods of one namespace that match its target's
//! `matchLabels`. Scanning a large namespace means following four pointers per pod (pod,
//! label list, key, value) for every pod; this index answers with the matching pods
//! directly.
//!
//! It never serves stale data. Each namespace's entry is a view of its pods: the pods by
//! name and, per indexed key, value → the pods with that value in name order, as of the
//! namespace's [`ClusterState::pods_generation`] the view records. A query first compares
//! that generation with the current one: one lookup, however large the namespace, and
//! changes to other namespaces do not count. If they differ, the query brings the view up
//! to date before it answers:
//! - from [`ClusterState::changes_since`], the pods changed since the view's generation
//!   with their current state: a few map and list updates per changed pod, so a query after
//!   a few changes to a namespace of 15,000 pods costs microseconds;
//! - or, when the namespace's change log no longer reaches back that far (more changes
//!   than it keeps, a re-list, the namespace dropped and re-created), by reading the
//!   namespace afresh, as a new entry is built.
//!
//! Either way the view then reflects the namespace at one generation, read under one lock.
//! Views are updated in place under their write lock; queries of a current view share its
//! read lock and allocate nothing.
//!
//! Per key, the value → pods map is built on first use and kept current from then on.
//! Entries are sharded by namespace; those not used for [`IDLE`] are dropped by the first
//! query after the next sweep (one every [`SWEEP`]), so deleted namespaces release their
//! pods.

use std::borrow::Borrow;
use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::cluster::{ClusterState, LabelSet, PodChange, PodInfo};
use crate::selector::Labels;

const SHARDS: usize = 64;
/// How long an unused namespace entry is kept.
pub const IDLE: Duration = Duration::from_secs(600);
/// How often queries look for entries idle for [`IDLE`].
pub const SWEEP: Duration = Duration::from_secs(60);

/// For each value of one key: the pods with that value, in name order. A value without
/// pods has no list, so values that come and go with churn do not pile up.
type KeyIndex = HashMap<Box<str>, Vec<Arc<PodInfo>>>;
type Shard = Mutex<HashMap<Box<str>, Arc<NsEntry>>>;

struct NsEntry {
    view: RwLock<View>,
    /// Seconds since the index was created, at last use.
    last_used: AtomicU64,
}

/// A pod in a set ordered, and looked up, by its name (pods of one namespace).
struct ByName(Arc<PodInfo>);

impl Borrow<str> for ByName {
    fn borrow(&self) -> &str {
        &self.0.name
    }
}

impl PartialEq for ByName {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for ByName {}

impl PartialOrd for ByName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.name.cmp(&other.0.name)
    }
}

/// One namespace's pods as of `generation`, and the indexes of the keys asked about. The
/// default, generation 0 without pods, is what a namespace without pods has.
#[derive(Default)]
struct View {
    /// The namespace's [`ClusterState::pods_generation`] that `pods` and `keys` reflect.
    generation: u64,
    pods: BTreeSet<ByName>,
    /// Per indexed key, the same `Arc`s as `pods`.
    keys: HashMap<Box<str>, KeyIndex>,
    /// How many times the view was read afresh from the namespace (for tests).
    rebuilds: u64,
}

fn position(pods: &[Arc<PodInfo>], name: &str) -> Result<usize, usize> {
    pods.binary_search_by(|p| (*p.name).cmp(name))
}

impl View {
    /// Brings the view to the namespace's current generation: by its changes if the
    /// namespace's change log reaches back to the view's generation, else afresh.
    fn follow(&mut self, cluster: &ClusterState, namespace: &str) {
        match cluster.changes_since(namespace, self.generation) {
            Some((generation, changes)) => {
                for change in &changes {
                    self.apply(change);
                }
                self.generation = generation;
            }
            None => {
                let (generation, pods) = cluster.snapshot_namespace(namespace);
                self.generation = generation;
                self.pods = pods.into_iter().map(ByName).collect();
                // Indexed again on their next use, from the new pods.
                self.keys.clear();
                self.rebuilds += 1;
            }
        }
    }

    /// Puts one pod's change into the pods and every key's index.
    fn apply(&mut self, change: &PodChange) {
        let name = change.name();
        let new = match change {
            PodChange::Present(pod) => Some(pod),
            PodChange::Removed(_) => None,
        };
        let old = self.pods.take(name).map(|ByName(pod)| pod);
        for (key, index) in &mut self.keys {
            let before = old.as_ref().and_then(|p| scan_label(&p.labels, key));
            let after = new.and_then(|p| scan_label(&p.labels, key).map(|v| (v, p)));
            if let (Some(before), Some((after, pod))) = (before, after)
                && before == after
            {
                // Same value: the new object takes the old one's place.
                if let Some(list) = index.get_mut(before)
                    && let Ok(i) = position(list, name)
                {
                    list[i] = Arc::clone(pod);
                }
                continue;
            }
            if let Some(before) = before
                && let Some(list) = index.get_mut(before)
            {
                if let Ok(i) = position(list, name) {
                    list.remove(i);
                }
                if list.is_empty() {
                    index.remove(before);
                }
            }
            if let Some((after, pod)) = after {
                match index.get_mut(after) {
                    Some(list) => match position(list, name) {
                        Ok(i) => list[i] = Arc::clone(pod),
                        Err(i) => list.insert(i, Arc::clone(pod)),
                    },
                    None => {
                        index.insert(after.into(), vec![Arc::clone(pod)]);
                    }
                }
            }
        }
        if let Some(pod) = new {
            self.pods.insert(ByName(Arc::clone(pod)));
        }
    }

    /// Indexes `key` over the view's pods, if it is not yet.
    fn index_key(&mut self, key: &str) {
        if self.keys.contains_key(key) {
            return;
        }
        let mut index = KeyIndex::new();
        for ByName(pod) in &self.pods {
            if let Some(value) = scan_label(&pod.labels, key) {
                // Looked up before inserting: one allocation per value, not per pod.
                match index.get_mut(value) {
                    Some(list) => list.push(Arc::clone(pod)),
                    None => {
                        index.insert(value.into(), vec![Arc::clone(pod)]);
                    }
                }
            }
        }
        self.keys.insert(key.into(), index);
    }

    /// The indexed pods with `key=value`, in name order (none if `key` is not indexed).
    fn with_label(&self, key: &str, value: &str) -> &[Arc<PodInfo>] {
        self.keys
            .get(key)
            .and_then(|index| index.get(value))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

/// Label indexes of the namespaces that label-selected queries have asked about.
pub struct LabelIndex {
    hasher: std::collections::hash_map::RandomState,
    shards: Box<[Shard]>,
    epoch: Instant,
    /// Seconds since `epoch` from which the next query sweeps idle entries.
    next_sweep: AtomicU64,
}

impl std::fmt::Debug for LabelIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LabelIndex({} namespaces)", self.namespaces())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Entries are inserted and removed whole; a poisoned lock still holds a consistent map.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn write(view: &RwLock<View>) -> std::sync::RwLockWriteGuard<'_, View> {
    match view.write() {
        Ok(guard) => guard,
        Err(poisoned) => {
            // A panic while updating left the view in an unknown state: start it afresh
            // (generation 0, so the next follow reads the namespace anew).
            let mut guard = poisoned.into_inner();
            *guard = View::default();
            view.clear_poison();
            guard
        }
    }
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
            next_sweep: AtomicU64::new(SWEEP.as_secs()),
        }
    }
}

impl LabelIndex {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    /// Calls `f` with every pod of `namespace` whose label `key` is `value`, in name order,
    /// as the cluster state holds them now. `f` runs under the namespace entry's lock, so it
    /// must not call back into this index.
    pub fn for_each_with_label(
        &self,
        cluster: &ClusterState,
        namespace: &str,
        key: &str,
        value: &str,
        mut f: impl FnMut(&Arc<PodInfo>),
    ) {
        let entry = self.entry(namespace, self.now());
        let generation = cluster.pods_generation(namespace);
        // A poisoned view is reset by `write`, below.
        if let Ok(view) = entry.view.read()
            && view.generation == generation
            && view.keys.contains_key(key)
        {
            view.with_label(key, value).iter().for_each(&mut f);
            return;
        }
        let mut view = write(&entry.view);
        // Another query may have brought it up to date (or beyond `generation`) meanwhile.
        if view.generation != generation {
            view.follow(cluster, namespace);
        }
        view.index_key(key);
        view.with_label(key, value).iter().for_each(f);
    }

    /// The namespace's entry, created empty (as a namespace without pods) if it has none.
    /// `now` is in seconds since the index was created; past the next sweep's time, entries
    /// idle for [`IDLE`] are dropped first.
    fn entry(&self, namespace: &str, now: u64) -> Arc<NsEntry> {
        let due = self.next_sweep.load(Ordering::Relaxed);
        if now >= due
            && self
                .next_sweep
                .compare_exchange(
                    due,
                    now + SWEEP.as_secs(),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            self.sweep(now);
        }
        let shard = &self.shards[(self.hasher.hash_one(namespace) as usize) % SHARDS];
        let mut map = lock(shard);
        let entry = match map.get(namespace) {
            Some(entry) => Arc::clone(entry),
            None => {
                let entry = Arc::new(NsEntry {
                    view: RwLock::default(),
                    last_used: AtomicU64::new(now),
                });
                map.insert(namespace.into(), Arc::clone(&entry));
                entry
            }
        };
        drop(map);
        entry.last_used.store(now, Ordering::Relaxed);
        entry
    }

    /// Drops the entries not used for [`IDLE`] at `now`.
    fn sweep(&self, now: u64) {
        let idle = IDLE.as_secs();
        for shard in self.shards.iter() {
            let dropped: Vec<Arc<NsEntry>> = lock(shard)
                .extract_if(|_, e| now.saturating_sub(e.last_used.load(Ordering::Relaxed)) >= idle)
                .map(|(_, e)| e)
                .collect();
            // Their pods are released here, outside the shard's lock.
            drop(dropped);
        }
    }

    /// How many namespaces have an entry (for tests).
    pub fn namespaces(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// How many pods the entries hold (for leak checks: at most the pods of the namespaces
    /// asked about, as they were at their last query).
    pub fn held_pods(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                lock(s)
                    .values()
                    .map(|e| {
                        let view = e.view.read().unwrap_or_else(|p| p.into_inner());
                        view.pods.len()
                    })
                    .sum::<usize>()
            })
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

    /// The entry's (generation, rebuilds, pods held, keys indexed).
    fn state(index: &LabelIndex, ns: &str) -> (u64, u64, usize, usize) {
        let entry = index.entry(ns, index.now());
        let view = entry.view.read().unwrap();
        (
            view.generation,
            view.rebuilds,
            view.pods.len(),
            view.keys.len(),
        )
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
    fn follows_changes_in_place_and_reads_afresh_only_when_it_must() {
        let cluster = ClusterState::new();
        for (name, app) in [("a", "web"), ("b", "db")] {
            cluster.upsert_pod(pod("ns", name, app));
        }
        let index = LabelIndex::default();
        assert_eq!(names(&index, &cluster, "ns", "web"), ["a"]);
        let first = index.entry("ns", index.now());
        assert_eq!(
            state(&index, "ns"),
            (cluster.pods_generation("ns"), 1, 2, 1)
        );
        // Queries, and changes to other namespaces, keep the view as it is.
        cluster.upsert_pod(pod("other", "a", "web"));
        assert!(cluster.remove_pod("other", "a"));
        assert_eq!(names(&index, &cluster, "ns", "web"), ["a"]);
        assert_eq!(
            state(&index, "ns"),
            (cluster.pods_generation("ns"), 1, 2, 1)
        );

        // A change is followed in the same entry, without reading the namespace again, and
        // the key's index is kept current rather than dropped.
        cluster.upsert_pod(pod("ns", "b", "web"));
        assert_eq!(names(&index, &cluster, "ns", "web"), ["a", "b"]);
        assert!(Arc::ptr_eq(&first, &index.entry("ns", index.now())));
        assert_eq!(
            state(&index, "ns"),
            (cluster.pods_generation("ns"), 1, 2, 1)
        );

        // So is the namespace emptying (it is dropped from the cluster state, so the view is
        // read afresh, as empty), and being re-created (afresh again: a new namespace).
        assert!(cluster.remove_pod("ns", "a"));
        assert_eq!(names(&index, &cluster, "ns", "web"), ["b"]);
        assert!(cluster.remove_pod("ns", "b"));
        assert_eq!(names(&index, &cluster, "ns", "web"), Vec::<String>::new());
        assert_eq!(state(&index, "ns"), (0, 2, 0, 1));
        cluster.upsert_pod(pod("ns", "a", "web"));
        assert_eq!(names(&index, &cluster, "ns", "web"), ["a"]);
        assert_eq!(
            state(&index, "ns"),
            (cluster.pods_generation("ns"), 3, 1, 1)
        );
        assert!(Arc::ptr_eq(&first, &index.entry("ns", index.now())));
        // A re-list renews every namespace: read afresh.
        cluster.replace_pods([pod("ns", "a", "web"), pod("ns", "z", "web")]);
        assert_eq!(names(&index, &cluster, "ns", "web"), ["a", "z"]);
        assert_eq!(state(&index, "ns").1, 4);
    }

    /// A cluster with the pods `p00`, `p01`, … of `ns`, all `app=web`.
    fn numbered(count: usize) -> ClusterState {
        let cluster = ClusterState::new();
        for i in 0..count {
            cluster.upsert_pod(pod("ns", &format!("p{i:02}"), "web"));
        }
        cluster
    }

    #[test]
    fn reads_afresh_when_the_change_log_no_longer_reaches_back() {
        let cluster = numbered(10);
        let index = LabelIndex::default();
        assert_eq!(names(&index, &cluster, "ns", "web").len(), 10);
        assert_eq!(state(&index, "ns").1, 1);

        // One change: followed, not read afresh.
        cluster.upsert_pod(pod("ns", "p03", "db"));
        assert_eq!(names(&index, &cluster, "ns", "db"), ["p03"]);
        assert_eq!(state(&index, "ns").1, 1);

        // More changes than a namespace of 10 pods logs: read afresh, and still right.
        let since = cluster.pods_generation("ns");
        for i in 0..10 {
            cluster.upsert_pod(pod("ns", &format!("p{i:02}"), "db"));
        }
        cluster.upsert_pod(pod("ns", "p00", "web"));
        assert!(cluster.changes_since("ns", since).is_none());
        assert_eq!(names(&index, &cluster, "ns", "web"), ["p00"]);
        assert_eq!(names(&index, &cluster, "ns", "db").len(), 9);
        assert_eq!(
            state(&index, "ns"),
            (cluster.pods_generation("ns"), 2, 10, 1)
        );
    }

    #[test]
    fn holds_no_removed_pod() {
        let cluster = numbered(40);
        let index = LabelIndex::default();
        assert_eq!(names(&index, &cluster, "ns", "web").len(), 40);
        let gone: Vec<std::sync::Weak<PodInfo>> = (0..40)
            .step_by(8)
            .map(|i| Arc::downgrade(&cluster.pod("ns", &format!("p{i:02}")).unwrap()))
            .collect();
        let replaced = Arc::downgrade(&cluster.pod("ns", "p01").unwrap());
        // Six changes: within what the log of a 40-pod namespace keeps.
        for i in (0..40).step_by(8) {
            assert!(cluster.remove_pod("ns", &format!("p{i:02}")));
        }
        cluster.upsert_pod(pod("ns", "p01", "web"));
        assert_eq!(names(&index, &cluster, "ns", "web").len(), 35);
        assert_eq!(state(&index, "ns").1, 1, "followed, not read afresh");
        assert!(gone.iter().all(|p| p.upgrade().is_none()));
        assert!(replaced.upgrade().is_none());
        assert_eq!(index.held_pods(), 35);
    }

    #[test]
    fn idle_entries_are_dropped_by_a_sweep() {
        let cluster = ClusterState::new();
        cluster.upsert_pod(pod("a", "x", "web"));
        cluster.upsert_pod(pod("b", "y", "web"));
        let index = LabelIndex::default();
        assert_eq!(names(&index, &cluster, "a", "web"), ["x"]);
        assert_eq!(names(&index, &cluster, "b", "web"), ["y"]);
        assert_eq!(index.held_pods(), 2);
        let idle = IDLE.as_secs();
        // "b" is used again later; by the first sweep after "a" has been idle for IDLE, only
        // "a" is dropped.
        index.entry("b", idle - 1);
        index.entry("b", idle);
        assert_eq!(index.namespaces(), 2);
        index.entry("b", idle + SWEEP.as_secs());
        assert_eq!(index.namespaces(), 1);
        assert_eq!(index.held_pods(), 1);
        assert_eq!(names(&index, &cluster, "b", "web"), ["y"]);
    }

    /// A small deterministic PRNG (SplitMix64), so the randomized test needs no dependency
    /// and fails the same way every time.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn answers_as_a_scan_of_the_cluster_state_through_random_churn() {
        const NAMESPACES: [&str; 2] = ["a", "b"];
        const APPS: [&str; 4] = ["web", "db", "cache", "batch"];
        const TIERS: [&str; 2] = ["front", "back"];
        // Queried: every value, and a value and a key no pod has.
        const KEYS: [&str; 3] = ["app", "tier", "absent"];
        let random_pod = |rng: &mut Rng, ns: &str, name: &str| {
            let mut labels = Vec::new();
            // Some pods lack a key, so changes add and drop keys too.
            if rng.below(8) != 0 {
                labels.push(("app", APPS[rng.below(APPS.len())]));
            }
            if rng.below(3) != 0 {
                labels.push(("tier", TIERS[rng.below(TIERS.len())]));
            }
            PodInfo {
                namespace: Arc::from(ns),
                name: name.into(),
                labels: LabelSet::from_pairs(labels),
            }
        };
        let mut rng = Rng(0x5eed);
        let cluster = ClusterState::new();
        let index = LabelIndex::default();
        let (mut changes, mut queries, mut rounds, mut gap) = (0usize, 0usize, 0u64, 1usize);
        for _ in 0..6_000 {
            let ns = NAMESPACES[rng.below(NAMESPACES.len())];
            let name = format!("pod-{:02}", rng.below(60));
            match rng.below(100) {
                // A re-list, now and then: a random part of the pods, or none.
                0 => {
                    let mut pods = Vec::new();
                    cluster.for_each_pod(None, |p| {
                        if rng.below(3) != 0 {
                            pods.push(PodInfo::clone(p));
                        }
                    });
                    cluster.replace_pods(pods);
                }
                // Removals, of pods that may or may not be there.
                1..=30 => {
                    cluster.remove_pod(ns, &name);
                }
                // New pods, re-added pods and relabelled pods.
                _ => cluster.upsert_pod(random_pod(&mut rng, ns, &name)),
            }
            changes += 1;
            // Queries after one change, after several, and now and then after more than the
            // log of a namespace this size keeps.
            gap -= 1;
            if gap > 0 {
                continue;
            }
            gap = match rng.below(10) {
                0 => 20 + rng.below(20),
                _ => 1 + rng.below(6),
            };
            rounds += 1;
            for ns in NAMESPACES {
                for key in KEYS {
                    let values: &[&str] = match key {
                        "app" => &["web", "db", "cache", "batch", "none"],
                        "tier" => &TIERS,
                        _ => &["web"],
                    };
                    for value in values {
                        let mut want = Vec::new();
                        cluster.for_each_pod(Some(ns), |p| {
                            if p.labels.get(key) == Some(*value) {
                                want.push(Arc::clone(p));
                            }
                        });
                        let mut got = Vec::new();
                        index.for_each_with_label(&cluster, ns, key, value, |p| {
                            got.push(Arc::clone(p))
                        });
                        let show = |pods: &[Arc<PodInfo>]| {
                            pods.iter()
                                .map(|p| format!("{}{:?}", p.name, p.labels))
                                .collect::<Vec<_>>()
                        };
                        // The same objects, not only the same names: a stale `Arc` fails.
                        assert!(
                            got.len() == want.len()
                                && got.iter().zip(&want).all(|(g, w)| Arc::ptr_eq(g, w)),
                            "after {changes} changes, {ns} {key}={value}:\n got {:?}\nwant {:?}",
                            show(&got),
                            show(&want)
                        );
                        queries += 1;
                    }
                }
            }
            assert_eq!(index.held_pods(), cluster.pod_count());
        }
        // Most queries after a change followed it rather than reading afresh, so the
        // comparisons above tested the deltas; the rest tested reading afresh.
        let rebuilds: u64 = NAMESPACES.iter().map(|ns| state(&index, ns).1).sum();
        assert!(queries > 10_000, "{queries} queries");
        assert!(
            rebuilds > 50 && rebuilds < rounds / 2,
            "{rebuilds} rebuilds of 2 namespaces in {rounds} rounds of queries"
        );
    }
}
