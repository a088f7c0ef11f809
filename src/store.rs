//! The metrics store: two points per node and per container, and the rates the API serves.
//!
//! The rules are metrics-server's (`pkg/storage/{node,pod,types}.go`), applied per node as each
//! scrape finishes instead of per tick batch:
//!
//! - Every node and container keeps its last point and, when one qualifies, a previous point.
//!   CPU is `Δcpu / Δt` over the kubelet's own sample timestamps, in nanocores; memory is the
//!   last working set.
//! - A new point becomes `last`. The old `last` becomes `prev` only when the new point is newer;
//!   otherwise (a duplicate or out-of-order point) the old `prev` is kept if it is still older
//!   than the new point, and dropped if not.
//! - A container whose start time is not before the stored `last` timestamp has restarted: it
//!   loses its `prev` and needs another scrape.
//! - A fresh container (started between 10 s and one resolution before its sample) gets
//!   `prev = (start time, cpu 0)`, so new pods are served after one scrape.
//! - A decreasing CPU counter or start time yields no rate for that node or container (logged
//!   as an error).
//! - A pod is served only when all its containers have a previous point; its timestamp is the
//!   earliest container timestamp, with that container's window.
//!
//! `ingest(node, page)` replaces that node's point and its pod set, which is what a
//! metrics-server tick does for every node in the batch; `scrape_failed` and `remove_node` drop
//! a node and its pods as a node missing from the batch would be dropped.
//!
//! For `/metrics/resource` the store also keeps, per node, the last kubelet page as received
//! ([`KubeletPage`], shared, indexed for re-exposition; it goes with the node's points) and the
//! node's scrape health ([`NodeHealth`]; it outlives a failed scrape, which is what it reports,
//! and goes only with `remove_node`). The exposition reads both from here, so everything it
//! writes comes from one place, in the same order as the metrics API reads it.
//!
//! Concurrency: nodes are sharded by name and pods by `(namespace, name)`; an ingest locks one
//! node (its own mutex) and one pod shard at a time, so scrapes of different nodes proceed in
//! parallel and API reads only ever take a shard's read lock for a lookup. Each pod shard is
//! ordered by `(namespace, name)`, the order the API lists pods in, so a list joins its pods
//! with their usage by walking the shards forward ([`Store::join_sorted`]) rather than
//! by one hash probe per pod. Rates are computed at ingest, so reads are lookups. In steady state (same pods, same containers) an ingest
//! allocates nothing: points and usages are updated in place.
//!
//! Two deliberate differences from metrics-server, both where its behaviour is an accident:
//! - A container that appears in a pod whose other containers already had a previous point
//!   gets no previous point (metrics-server pairs it with a zero point from year 1, which yields
//!   a ~292-year window and a zero rate).
//! - A pod whose every container has a decreasing counter is not served (metrics-server serves
//!   it with no containers and a zero timestamp).

use std::borrow::Borrow;
use std::cmp::Ordering as CmpOrdering;
use std::collections::{BTreeMap, HashMap, HashSet, btree_map};
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::iter::Peekable;
use std::ops::{Bound, Range};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use crate::decode::{ContainerPoint, Page, Point};
use crate::exposition::KubeletPage;

const SHARDS: usize = 64;

/// How many pods [`Store::join_sorted`] walks under the store's read locks at a time: large
/// enough that taking every shard's lock and seeking every shard's cursor are paid rarely,
/// small enough that ingests (and the caller's work under the locks) wait little.
pub const JOIN_BATCH: usize = 1_024;

/// Below this many pods [`Store::join_sorted`] looks each one up instead of walking: a walk
/// takes all the shards' locks and seeks a cursor in each shard it visits.
const JOIN_POINT_LOOKUPS: usize = 64;

/// metrics-server's `freshContainerMinMetricsResolution`: a container younger than this at its
/// first sample does not get the start-time shortcut, because so short a window is inaccurate.
const FRESH_CONTAINER_MIN_AGE_NS: i64 = 10_000_000_000;

/// A node's usage as the metrics API serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// The later point's timestamp, in nanoseconds since the epoch.
    pub timestamp_ns: i64,
    /// The time between the two points the rate was computed from.
    pub window: Duration,
    /// CPU rate in nanocores (ΔcpuNs / Δt).
    pub cpu_nanocores: u64,
    /// The later point's working set in bytes.
    pub memory_bytes: u64,
}

/// One container's usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerUsage {
    /// Shared with the store's own bookkeeping, so serving a pod copies no strings.
    pub name: Arc<str>,
    pub cpu_nanocores: u64,
    pub memory_bytes: u64,
}

/// A pod's usage: served only when every container has two points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodUsage {
    /// The earliest container timestamp, as metrics-server reports it.
    pub timestamp_ns: i64,
    /// The window belonging to that earliest timestamp.
    pub window: Duration,
    /// Sorted by container name.
    pub containers: Box<[ContainerUsage]>,
}

/// What the metrics API's encoders read of a served pod's usage: the store's own
/// [`PodUsage`], or the copy a [`UsageBatch`] holds.
pub trait PodValues {
    /// The usage's timestamp (ns since the epoch) and window.
    fn time(&self) -> (i64, Duration);
    /// Each container's name, CPU rate in nanocores and memory bytes, sorted by name.
    fn containers(&self) -> impl Iterator<Item = (&str, u64, u64)>;
}

impl PodValues for PodUsage {
    fn time(&self) -> (i64, Duration) {
        (self.timestamp_ns, self.window)
    }
    fn containers(&self) -> impl Iterator<Item = (&str, u64, u64)> {
        self.containers
            .iter()
            .map(|c| (&*c.name, c.cpu_nanocores, c.memory_bytes))
    }
}

impl<T: PodValues + ?Sized> PodValues for &T {
    fn time(&self) -> (i64, Duration) {
        (**self).time()
    }
    fn containers(&self) -> impl Iterator<Item = (&str, u64, u64)> {
        (**self).containers()
    }
}

impl<T: PodValues + ?Sized> PodValues for Arc<T> {
    fn time(&self) -> (i64, Duration) {
        (**self).time()
    }
    fn containers(&self) -> impl Iterator<Item = (&str, u64, u64)> {
        (**self).containers()
    }
}

/// The served usage of a batch of listed pods, copied out of the store by
/// [`Store::join_values`], so that a list is encoded after the store's locks are released
/// without taking a reference per pod (an atomic increment, and later a decrement, on a
/// cache line nothing else writes) and without an allocation per pod: the copies are plain
/// values in buffers kept from batch to batch.
#[derive(Debug, Default)]
pub struct UsageBatch {
    /// One per listed pod, `None` where the store serves no usage for it.
    pods: Vec<Option<PodCopy>>,
    containers: Vec<ContainerCopy>,
    /// The containers' names, end to end.
    names: String,
}

#[derive(Debug)]
struct PodCopy {
    timestamp_ns: i64,
    window: Duration,
    /// Its containers in [`UsageBatch::containers`].
    containers: Range<usize>,
}

#[derive(Debug)]
struct ContainerCopy {
    /// Its name in [`UsageBatch::names`].
    name: Range<usize>,
    cpu_nanocores: u64,
    memory_bytes: u64,
}

/// One pod's usage in a [`UsageBatch`].
#[derive(Debug, Clone, Copy)]
pub struct CopiedUsage<'b> {
    batch: &'b UsageBatch,
    pod: &'b PodCopy,
}

impl UsageBatch {
    fn clear(&mut self) {
        self.pods.clear();
        self.containers.clear();
        self.names.clear();
    }

    fn push(&mut self, usage: Option<&PodUsage>) {
        let copy = usage.map(|u| {
            let start = self.containers.len();
            self.containers.extend(u.containers.iter().map(|c| {
                let name_start = self.names.len();
                self.names.push_str(&c.name);
                ContainerCopy {
                    name: name_start..self.names.len(),
                    cpu_nanocores: c.cpu_nanocores,
                    memory_bytes: c.memory_bytes,
                }
            }));
            PodCopy {
                timestamp_ns: u.timestamp_ns,
                window: u.window,
                containers: start..self.containers.len(),
            }
        });
        self.pods.push(copy);
    }

    /// The usage of the `i`th pod of the last join, `None` where the store served none.
    pub fn get(&self, i: usize) -> Option<CopiedUsage<'_>> {
        let pod = self.pods.get(i)?.as_ref()?;
        Some(CopiedUsage { batch: self, pod })
    }
}

impl PodValues for CopiedUsage<'_> {
    fn time(&self) -> (i64, Duration) {
        (self.pod.timestamp_ns, self.pod.window)
    }
    fn containers(&self) -> impl Iterator<Item = (&str, u64, u64)> {
        let names = self.batch.names.as_str();
        self.batch
            .containers
            .get(self.pod.containers.clone())
            .unwrap_or_default()
            .iter()
            .map(move |c| {
                let name = names.get(c.name.clone()).unwrap_or_default();
                (name, c.cpu_nanocores, c.memory_bytes)
            })
    }
}

/// A pod the store serves, as a join hands it out: borrowed under the store's read locks.
#[derive(Debug, Clone, Copy)]
pub struct ServedPod<'s> {
    /// The node whose page last carried the pod.
    pub node: &'s Arc<str>,
    pub usage: &'s Arc<PodUsage>,
}

/// A node's scrape health, as `/metrics/resource` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeHealth {
    /// Whether the latest scrape succeeded.
    pub up: bool,
    /// When the latest successful scrape started, in nanoseconds since the epoch; 0 when no
    /// scrape of the node has succeeded yet.
    pub last_success_ns: i64,
    /// Why the latest scrape failed (a short, fixed reason such as `timeout`); `None` when it
    /// succeeded.
    pub error: Option<&'static str>,
}

/// Counts of what the store can serve (metrics-server's `storage_points{type}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Nodes with a previous point (`storage_points{type="node"}`).
    pub nodes: usize,
    /// Pods with at least one container that has a previous point.
    pub pods: usize,
    /// Containers with a previous point (`storage_points{type="container"}`).
    pub containers: usize,
}

/// Everything the store holds, whatever its state: each count follows the live cluster's size
/// (nodes, Running pods and their containers) and must not grow with churn. For leak checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreEntries {
    /// Node slots (points, usage, the kubelet page).
    pub nodes: usize,
    /// Pod entries, served or not.
    pub pods: usize,
    /// Container states in those pod entries.
    pub containers: usize,
    /// Per-node scrape health records.
    pub health: usize,
    /// Pod keys in the nodes' last-page lists.
    pub node_pod_keys: usize,
    /// Interned namespaces and container names, including those not yet swept.
    pub names: usize,
    /// Interned names some entry still uses.
    pub names_in_use: usize,
}

type NodeShard = RwLock<HashMap<Arc<str>, Arc<NodeSlot>, FastState>>;
/// Each pod shard keeps its pods in `(namespace, name)` order, the order the metrics API
/// lists them in, so a list joins its pods with their usage by walking each shard forward
/// (see [`Store::join_sorted`]) instead of one hash probe per pod.
type PodShard = RwLock<BTreeMap<PodKey, PodEntry>>;
type HealthShard = RwLock<HashMap<Arc<str>, NodeHealth, FastState>>;

/// A seeded multiply-xor string hash, which picks the shard of every pod an ingest or an API
/// list names (SipHash, computed for the shard and again in the map, was a fifth of
/// `top pod -A` when the pods were hash maps).
/// The seed is random per process, so bucket placement cannot be predicted from outside;
/// names come from the cluster's own pods, whose authors could exhaust the cluster far more
/// directly than through hash collisions.
#[derive(Clone, Copy)]
struct FastState(u64);

impl Default for FastState {
    fn default() -> Self {
        Self(std::collections::hash_map::RandomState::new().hash_one(0x006d_6574_7269_6373_u64) | 1)
    }
}

impl BuildHasher for FastState {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(self.0)
    }
}

#[derive(Clone, Copy)]
struct FastHasher(u64);

const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(c);
            self.0 = (self.0 ^ u64::from_le_bytes(word))
                .wrapping_mul(MULTIPLIER)
                .rotate_left(29);
        }
        let rest = chunks.remainder();
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        self.0 = (self.0 ^ u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59))
            .wrapping_mul(MULTIPLIER)
            .rotate_left(29);
    }

    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0 ^ u64::from(i))
            .wrapping_mul(MULTIPLIER)
            .rotate_left(29);
    }

    fn finish(&self) -> u64 {
        // Mix the high bits down: hashbrown takes its control bits from the top.
        let h = self.0 ^ (self.0 >> 32);
        let h = h.wrapping_mul(MULTIPLIER);
        h ^ (h >> 29)
    }
}

/// Points and rates for every node and pod, safe to read while scrapes write.
pub struct Store {
    resolution_ns: i64,
    hasher: FastState,
    nodes: Box<[NodeShard]>,
    pods: Box<[PodShard]>,
    health: Box<[HealthShard]>,
    /// Namespaces and container names repeat across thousands of pods; each is kept once.
    names: Interner,
    nodes_with_prev: AtomicUsize,
    pods_with_prev: AtomicUsize,
    containers_with_prev: AtomicUsize,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("resolution_ns", &self.resolution_ns)
            .field("stats", &self.stats())
            .finish()
    }
}

/// One node's state. The map holds it behind an `Arc` so that an ingest holds only this node's
/// mutex, never a shard lock, while it works through the page.
struct NodeSlot {
    name: Arc<str>,
    /// What the API serves; written at the end of each ingest.
    usage: RwLock<Option<Usage>>,
    /// The page the points came from, for `/metrics/resource`.
    page: RwLock<Option<Arc<KubeletPage>>>,
    state: Mutex<NodeState>,
}

#[derive(Default)]
struct NodeState {
    /// Set once the slot has left the map; a concurrent ingest then drops its page.
    removed: bool,
    last: Option<Point>,
    prev: Option<Point>,
    /// The pods of the last ingested page, sorted, so the next page's missing pods can be
    /// found by a merge.
    pods: Vec<PodKey>,
    /// The previous `pods` buffer, kept for its capacity.
    scratch: Vec<PodKey>,
}

struct PodEntry {
    key: PodKey,
    /// The node whose page last carried this pod; only that node's updates may remove it.
    node: Arc<str>,
    /// Sorted by name.
    containers: Vec<ContainerState>,
    usage: Option<Arc<PodUsage>>,
    /// Containers with a previous point, as counted in the stats.
    with_prev: usize,
}

struct ContainerState {
    name: Arc<str>,
    last: Point,
    prev: Option<Point>,
}

impl PodEntry {
    fn served(&self) -> Option<ServedPod<'_>> {
        self.usage.as_ref().map(|usage| ServedPod {
            node: &self.node,
            usage,
        })
    }
}

/// `(namespace, name)` of a pod: the namespace shared (interned), the name kept in the key
/// itself when it is short enough, as nearly all are (see [`PodName`]).
#[derive(Clone)]
struct PodKey {
    namespace: Arc<str>,
    name: PodName,
}

/// A pod's name. Up to [`PodName::INLINE`] bytes it lives inside the key, so walking a shard
/// in order compares names where it reads the keys (the B-tree's key array, read front to
/// back) instead of following a pointer to a separate allocation per pod, a dependent cache
/// miss that perf put at four tenths of a list's join. Longer names are shared strings.
#[derive(Clone)]
enum PodName {
    Inline {
        len: u8,
        bytes: [u8; PodName::INLINE],
    },
    Shared(Arc<str>),
}

impl PodName {
    /// With the tag and length, and the namespace's pointer and length, a key is 64 bytes.
    const INLINE: usize = 46;

    fn new(name: &str) -> Self {
        match u8::try_from(name.len()) {
            Ok(len) if name.len() <= Self::INLINE => {
                let mut bytes = [0; Self::INLINE];
                bytes[..name.len()].copy_from_slice(name.as_bytes());
                PodName::Inline { len, bytes }
            }
            _ => PodName::Shared(Arc::from(name)),
        }
    }

    /// The name's bytes (UTF-8, as given to [`PodName::new`]); names order as their bytes do.
    fn as_bytes(&self) -> &[u8] {
        match self {
            PodName::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            PodName::Shared(name) => name.as_bytes(),
        }
    }
}

impl fmt::Display for PodName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

/// Lets the pod map be searched with borrowed `(&str, &str)` without building a key.
trait PodRef {
    fn namespace(&self) -> &str;
    /// The name's UTF-8 bytes: ordered as the string is, and readable from a [`PodName`]
    /// without validating it again.
    fn name(&self) -> &[u8];
}

impl PodRef for PodKey {
    fn namespace(&self) -> &str {
        &self.namespace
    }
    fn name(&self) -> &[u8] {
        self.name.as_bytes()
    }
}

impl PodRef for (&str, &str) {
    fn namespace(&self) -> &str {
        self.0
    }
    fn name(&self) -> &[u8] {
        self.1.as_bytes()
    }
}

impl Hash for dyn PodRef + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.namespace().hash(state);
        self.name().hash(state);
    }
}

impl PartialEq for dyn PodRef + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.namespace() == other.namespace() && self.name() == other.name()
    }
}

impl Eq for dyn PodRef + '_ {}

/// `(namespace, name)` order, as [`PodKey`]'s derived order and the cluster's pod listing.
impl Ord for dyn PodRef + '_ {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.namespace()
            .cmp(other.namespace())
            .then_with(|| self.name().cmp(other.name()))
    }
}

impl PartialOrd for dyn PodRef + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Hash for PodKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self as &dyn PodRef).hash(state);
    }
}

/// Equality and order are those of `(namespace, name)`, however the name is kept.
impl PartialEq for PodKey {
    fn eq(&self, other: &Self) -> bool {
        (self as &dyn PodRef) == (other as &dyn PodRef)
    }
}

impl Eq for PodKey {}

impl Ord for PodKey {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (self as &dyn PodRef).cmp(other as &dyn PodRef)
    }
}

impl PartialOrd for PodKey {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl<'a> Borrow<dyn PodRef + 'a> for PodKey {
    fn borrow(&self) -> &(dyn PodRef + 'a) {
        self
    }
}

/// Whether two strings are the same borrowed bytes (same address and length), which
/// implies equal contents without reading them.
fn same_str(a: &str, b: &str) -> bool {
    std::ptr::eq(a.as_ptr(), b.as_ptr()) && a.len() == b.len()
}

/// Remembers the last stored and listed strings found equal, so the next comparison of
/// those same two strings is answered from their addresses. Valid only while both stay
/// borrowed: a freed string's address can be reused by another.
#[derive(Default)]
struct SameStr {
    known: Option<(*const u8, *const u8, usize)>,
}

impl SameStr {
    fn cmp(&mut self, stored: &str, listed: &str) -> CmpOrdering {
        let pair = (stored.as_ptr(), listed.as_ptr(), listed.len());
        if self.known == Some(pair) && stored.len() == listed.len() {
            return CmpOrdering::Equal;
        }
        let order = stored.cmp(listed);
        if order == CmpOrdering::Equal {
            self.known = Some(pair);
        }
        order
    }
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    // Every update under these locks leaves the data consistent before any call that could
    // panic, so a poisoned lock is still safe to use.
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

fn lock<T>(lock: &Mutex<T>) -> MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(|e| e.into_inner())
}

/// Moves a gauge from `old` to `new`. Each entry applies its own changes under its own lock,
/// so the sum stays exact.
fn adjust(counter: &AtomicUsize, old: usize, new: usize) {
    if new > old {
        counter.fetch_add(new - old, Ordering::Relaxed);
    } else if old > new {
        counter.fetch_sub(old - new, Ordering::Relaxed);
    }
}

/// Why two points give no rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum RateError {
    #[error("unexpected decrease in startTime of node/container")]
    StartTimeDecreased,
    #[error("unexpected decrease in cumulative CPU usage value")]
    CounterDecreased,
}

/// metrics-server's `resourceUsage`: the CPU rate between `prev` and `last` in nanocores, and
/// the window. A start time or a counter that went backwards gives no rate. The arithmetic is Go's: `float64(Δcpu) / window.Seconds()`, truncated.
fn rate(last: &Point, prev: &Point) -> Result<(u64, Duration), RateError> {
    if last.start_time_ns < prev.start_time_ns {
        return Err(RateError::StartTimeDecreased);
    }
    if last.cpu_ns < prev.cpu_ns {
        return Err(RateError::CounterDecreased);
    }
    // Callers only pair points with prev older than last; the guard keeps a bad pair from
    // dividing by zero or producing a negative window.
    let window_ns = last.timestamp_ns.saturating_sub(prev.timestamp_ns).max(1);
    // Go's Duration.Seconds(): whole seconds plus the fraction, each converted separately.
    let seconds = (window_ns / 1_000_000_000) as f64 + (window_ns % 1_000_000_000) as f64 / 1e9;
    let cpu = ((last.cpu_ns - prev.cpu_ns) as f64 / seconds) as u64;
    Ok((cpu, Duration::from_nanos(window_ns as u64)))
}

/// The previous point a node or a container keeps when `new` arrives after `last`/`prev`.
fn carried_prev(new: &Point, last: &Point, prev: Option<Point>) -> Option<Point> {
    if new.timestamp_ns > last.timestamp_ns {
        Some(*last)
    } else {
        prev.filter(|p| p.timestamp_ns < new.timestamp_ns)
    }
}

/// The previous point of a container after `new` arrives, given its stored `(last, prev)`.
fn container_prev(
    new: &Point,
    stored: Option<(&Point, Option<Point>)>,
    resolution_ns: i64,
) -> Option<Point> {
    let age = new.timestamp_ns.saturating_sub(new.start_time_ns);
    if new.start_time_ns < new.timestamp_ns
        && age < resolution_ns
        && age >= FRESH_CONTAINER_MIN_AGE_NS
    {
        return Some(Point {
            timestamp_ns: new.start_time_ns,
            cpu_ns: 0,
            ..*new
        });
    }
    let (last, prev) = stored?;
    if new.start_time_ns >= last.timestamp_ns {
        // Restarted since the stored point: the counters started over.
        return None;
    }
    carried_prev(new, last, prev)
}

/// Each container of a pod group once, in name order (the page is sorted; a duplicate is
/// skipped as metrics-server skips it).
fn unique_containers<'p, 'a>(
    group: &'p [ContainerPoint<'a>],
) -> impl Iterator<Item = &'p ContainerPoint<'a>> + Clone {
    group.iter().enumerate().filter_map(move |(i, cp)| {
        let duplicate = i > 0
            && group
                .get(i - 1)
                .is_some_and(|p| p.container == cp.container);
        if duplicate {
            tracing::error!(
                namespace = %cp.namespace,
                pod = %cp.pod,
                container = %cp.container,
                "Got duplicate Container point"
            );
            None
        } else {
            Some(cp)
        }
    })
}

impl Store {
    /// `resolution` is `--metric-resolution`, which the fresh-container rule depends on.
    pub fn new(resolution: Duration) -> Self {
        Self {
            resolution_ns: i64::try_from(resolution.as_nanos()).unwrap_or(i64::MAX),
            hasher: Default::default(),
            nodes: (0..SHARDS).map(|_| RwLock::default()).collect(),
            pods: (0..SHARDS).map(|_| RwLock::default()).collect(),
            health: (0..SHARDS).map(|_| RwLock::default()).collect(),
            names: Interner::new(),
            nodes_with_prev: AtomicUsize::new(0),
            pods_with_prev: AtomicUsize::new(0),
            containers_with_prev: AtomicUsize::new(0),
        }
    }

    fn node_shard(&self, node: &str) -> &NodeShard {
        // The high bits pick the shard; the map uses the low bits for its buckets.
        &self.nodes[(self.hasher.hash_one(node) >> 58) as usize % SHARDS]
    }

    fn health_shard(&self, node: &str) -> &HealthShard {
        &self.health[(self.hasher.hash_one(node) >> 58) as usize % SHARDS]
    }

    fn pod_shard(&self, key: &dyn PodRef) -> &PodShard {
        &self.pods[self.pod_shard_index(key)]
    }

    fn pod_shard_index(&self, key: &dyn PodRef) -> usize {
        self.pod_shard_index_from(self.namespace_hash(key.namespace()), key.name())
    }

    /// The hash of a pod key after its namespace: pods of one namespace share it, so a walk
    /// hashes each namespace once.
    fn namespace_hash(&self, namespace: &str) -> FastHasher {
        let mut hasher = self.hasher.build_hasher();
        namespace.hash(&mut hasher);
        hasher
    }

    /// The shard of the pod named `name` in the namespace hashed into `hasher`: the same as
    /// hashing the whole key (`Hash for dyn PodRef`).
    fn pod_shard_index_from(&self, mut hasher: FastHasher, name: &[u8]) -> usize {
        name.hash(&mut hasher);
        (hasher.finish() >> 58) as usize % SHARDS
    }

    fn node_slot(&self, node: &str) -> Arc<NodeSlot> {
        if let Some(slot) = read(self.node_shard(node)).get(node) {
            return Arc::clone(slot);
        }
        let mut shard = write(self.node_shard(node));
        if let Some(slot) = shard.get(node) {
            return Arc::clone(slot);
        }
        let name: Arc<str> = Arc::from(node);
        let slot = Arc::new(NodeSlot {
            name: Arc::clone(&name),
            usage: RwLock::new(None),
            page: RwLock::new(None),
            state: Mutex::new(NodeState::default()),
        });
        shard.insert(name, Arc::clone(&slot));
        slot
    }

    /// Stores one node's freshly scraped page. The node's pods not on the page leave the store.
    pub fn ingest(&self, node: &str, page: &Page<'_>) {
        self.ingest_with(node, page, None);
    }

    /// [`Store::ingest`], also keeping the page as received for `/metrics/resource`.
    pub fn ingest_page(&self, node: &str, page: &Page<'_>, raw: Arc<KubeletPage>) {
        self.ingest_with(node, page, Some(raw));
    }

    fn ingest_with(&self, node: &str, page: &Page<'_>, raw: Option<Arc<KubeletPage>>) {
        let slot = self.node_slot(node);
        let mut state = lock(&slot.state);
        if state.removed {
            // The node was removed while this scrape was in flight; its data is unwanted.
            return;
        }
        // Replaced under the node's lock, so a concurrent removal cannot leave it behind.
        *write(&slot.page) = raw;

        // The node's own point.
        let (last, prev) = match page.node {
            Some(new) => {
                let prev = state
                    .last
                    .as_ref()
                    .and_then(|last| carried_prev(&new, last, state.prev));
                (Some(new), prev)
            }
            None => (None, None),
        };
        adjust(
            &self.nodes_with_prev,
            usize::from(state.prev.is_some()),
            usize::from(prev.is_some()),
        );
        state.last = last;
        state.prev = prev;
        let usage = match (last, prev) {
            (Some(last), Some(prev)) => match rate(&last, &prev) {
                Ok((cpu_nanocores, window)) => Some(Usage {
                    timestamp_ns: last.timestamp_ns,
                    window,
                    cpu_nanocores,
                    memory_bytes: last.memory_bytes,
                }),
                Err(e) => {
                    tracing::error!(node, error = %e, "Skipping node usage metric");
                    None
                }
            },
            _ => None,
        };
        *write(&slot.usage) = usage;

        // The pods.
        let mut fresh = std::mem::take(&mut state.scratch);
        fresh.clear();
        for group in page.pods() {
            if group.is_empty() {
                continue;
            }
            fresh.push(self.upsert_pod(&slot.name, group));
        }
        if !fresh.is_sorted() {
            fresh.sort_unstable();
        }
        fresh.dedup();
        self.drop_missing(&slot.name, &state.pods, &fresh);
        let mut old = std::mem::replace(&mut state.pods, fresh);
        old.clear();
        state.scratch = old;
    }

    /// Removes the pods in `old` that are not in `fresh` (both sorted).
    fn drop_missing(&self, node: &Arc<str>, old: &[PodKey], fresh: &[PodKey]) {
        let mut j = 0;
        for key in old {
            while fresh.get(j).is_some_and(|f| f < key) {
                j += 1;
            }
            if fresh.get(j) != Some(key) {
                self.remove_pod_of(key, Some(node));
            }
        }
    }

    /// Updates or creates the pod of one page group and returns its key.
    fn upsert_pod(&self, node: &Arc<str>, group: &[ContainerPoint<'_>]) -> PodKey {
        // Callers pass non-empty groups; the fallback key is never used.
        let (namespace, name) = group
            .first()
            .map_or(("", ""), |cp| (&*cp.namespace, &*cp.pod));
        let lookup: &dyn PodRef = &(namespace, name);
        let mut shard = write(self.pod_shard(lookup));
        if let Some(entry) = shard.get_mut(lookup) {
            self.update_pod(entry, node, group);
            return entry.key.clone();
        }
        let key = PodKey {
            namespace: self.names.intern(namespace),
            name: PodName::new(name),
        };
        let mut entry = PodEntry {
            key: key.clone(),
            node: Arc::clone(node),
            containers: Vec::new(),
            usage: None,
            with_prev: 0,
        };
        self.update_pod(&mut entry, node, group);
        shard.insert(key.clone(), entry);
        key
    }

    fn update_pod(&self, entry: &mut PodEntry, node: &Arc<str>, group: &[ContainerPoint<'_>]) {
        if !Arc::ptr_eq(&entry.node, node) {
            entry.node = Arc::clone(node);
        }
        let unique = unique_containers(group);
        let count = unique.clone().count();
        let same_set = count == entry.containers.len()
            && unique
                .clone()
                .zip(&entry.containers)
                .all(|(cp, c)| *cp.container == *c.name);
        if same_set {
            for (cp, c) in unique.zip(entry.containers.iter_mut()) {
                c.prev = container_prev(&cp.point, Some((&c.last, c.prev)), self.resolution_ns);
                c.last = cp.point;
            }
        } else {
            let old = std::mem::take(&mut entry.containers);
            // Sized exactly: the entry lives as long as the pod, and collecting the filtered
            // iterator would start at four slots (twice a typical pod's two containers).
            let mut containers = Vec::with_capacity(count);
            containers.extend(unique.map(|cp| {
                let stored = old
                    .binary_search_by(|c| (*c.name).cmp(&*cp.container))
                    .ok()
                    .and_then(|i| old.get(i));
                let name = match stored {
                    Some(c) => Arc::clone(&c.name),
                    None => self.names.intern(&cp.container),
                };
                ContainerState {
                    name,
                    last: cp.point,
                    prev: container_prev(
                        &cp.point,
                        stored.map(|c| (&c.last, c.prev)),
                        self.resolution_ns,
                    ),
                }
            }));
            entry.containers = containers;
        }

        let with_prev = entry.containers.iter().filter(|c| c.prev.is_some()).count();
        adjust(&self.containers_with_prev, entry.with_prev, with_prev);
        adjust(
            &self.pods_with_prev,
            usize::from(entry.with_prev > 0),
            usize::from(with_prev > 0),
        );
        entry.with_prev = with_prev;
        set_pod_usage(&mut entry.usage, &entry.containers, &entry.key);
    }

    /// Removes a pod entry; with `node`, only if that node still owns it.
    fn remove_pod_of(&self, key: &dyn PodRef, node: Option<&Arc<str>>) {
        let mut shard = write(self.pod_shard(key));
        let owned = match (shard.get(key), node) {
            (None, _) => false,
            (Some(_), None) => true,
            // The same allocation, not just the same name: a node that was removed and
            // re-added at once gets a new slot, whose pods the old slot must not take.
            (Some(entry), Some(node)) => Arc::ptr_eq(&entry.node, node),
        };
        if owned && let Some(entry) = shard.remove(key) {
            adjust(&self.containers_with_prev, entry.with_prev, 0);
            adjust(&self.pods_with_prev, usize::from(entry.with_prev > 0), 0);
        }
    }

    fn drop_node(&self, node: &str) {
        let Some(slot) = write(self.node_shard(node)).remove(node) else {
            return;
        };
        let mut state = lock(&slot.state);
        state.removed = true;
        adjust(&self.nodes_with_prev, usize::from(state.prev.is_some()), 0);
        state.last = None;
        state.prev = None;
        *write(&slot.usage) = None;
        *write(&slot.page) = None;
        for key in std::mem::take(&mut state.pods) {
            self.remove_pod_of(&key, Some(&slot.name));
        }
    }

    /// The node's scrape failed: it and its pods stop being served until it recovers, and need
    /// two fresh points again (as a node missing from a metrics-server tick does).
    pub fn scrape_failed(&self, node: &str) {
        self.drop_node(node);
    }

    /// The node is gone from the cluster (or from the node selector): its points, its page
    /// and its scrape health go.
    pub fn remove_node(&self, node: &str) {
        self.drop_node(node);
        write(self.health_shard(node)).remove(node);
    }

    /// Records that a scrape of `node` that started at `started_ns` succeeded.
    pub fn record_scrape_success(&self, node: &str, started_ns: i64) {
        self.set_health(node, |h| {
            h.up = true;
            h.last_success_ns = started_ns;
            h.error = None;
        });
    }

    /// Records that the latest scrape of `node` failed, and why (a short fixed reason: the
    /// exposition uses it as a label value, so it must come from a small set).
    pub fn record_scrape_failure(&self, node: &str, reason: &'static str) {
        self.set_health(node, |h| {
            h.up = false;
            h.error = Some(reason);
        });
    }

    fn set_health(&self, node: &str, update: impl FnOnce(&mut NodeHealth)) {
        let mut shard = write(self.health_shard(node));
        if let Some(h) = shard.get_mut(node) {
            update(h);
            return;
        }
        let mut h = NodeHealth {
            up: false,
            last_success_ns: 0,
            error: None,
        };
        update(&mut h);
        shard.insert(Arc::from(node), h);
    }

    /// The node's scrape health; `None` before its first scrape and after it was removed.
    pub fn node_health(&self, node: &str) -> Option<NodeHealth> {
        read(self.health_shard(node)).get(node).copied()
    }

    /// The node's last kubelet page, kept while its points are (a failed scrape drops it).
    pub fn kubelet_page(&self, node: &str) -> Option<Arc<KubeletPage>> {
        let slot = read(self.node_shard(node)).get(node).map(Arc::clone)?;
        read(&slot.page).clone()
    }

    /// The pod is gone from the cluster (or no longer Running).
    pub fn remove_pod(&self, namespace: &str, name: &str) {
        self.remove_pod_of(&(namespace, name), None);
    }

    /// The node's usage, if it has two usable points.
    pub fn node_usage(&self, node: &str) -> Option<Usage> {
        let slot = read(self.node_shard(node)).get(node).map(Arc::clone)?;
        *read(&slot.usage)
    }

    /// The pod's usage, if every container has two usable points.
    pub fn pod_usage(&self, namespace: &str, name: &str) -> Option<Arc<PodUsage>> {
        let key: &dyn PodRef = &(namespace, name);
        read(self.pod_shard(key))
            .get(key)
            .and_then(|e| e.usage.clone())
    }

    /// Calls `f` with the pod's usage, if every container has two usable points, without
    /// taking a reference: for readers that visit many pods (the shard's read lock is held
    /// while `f` runs, so `f` must not call back into the store).
    pub fn with_pod_usage<R>(
        &self,
        namespace: &str,
        name: &str,
        f: impl FnOnce(&PodUsage) -> R,
    ) -> Option<R> {
        let key: &dyn PodRef = &(namespace, name);
        read(self.pod_shard(key))
            .get(key)
            .and_then(|e| e.usage.as_deref())
            .map(f)
    }

    /// Joins pods listed in `(namespace, name)` order (the order the cluster lists them in)
    /// with their entries: calls `f` once per pod of `pods`, in order, with the pod's
    /// [`ServedPod`] or `None` where the store serves no usage for it. `key` gives a pod's
    /// `(namespace, name)`.
    ///
    /// This is how a list reads the store: instead of a hash probe per pod (several dependent
    /// cache misses each), every shard is walked forward from the first pod that falls in it,
    /// so a list costs one ordered pass over the entries it names. The pods are walked
    /// [`JOIN_BATCH`] at a time under every shard's read lock, and `f` runs under those locks
    /// (it must be short and must not call back into the store), so ingests wait at most one
    /// batch. A pod given out of order is still answered, by a lookup; fewer than
    /// `JOIN_POINT_LOOKUPS` pods are answered by lookups, which lock one shard each.
    pub fn join_sorted<P>(
        &self,
        pods: &[P],
        key: impl Fn(&P) -> (&str, &str),
        mut f: impl FnMut(&P, Option<ServedPod<'_>>),
    ) {
        if pods.len() < JOIN_POINT_LOOKUPS {
            for pod in pods {
                let (namespace, name) = key(pod);
                let wanted: &dyn PodRef = &(namespace, name);
                let shard = read(self.pod_shard(wanted));
                f(pod, shard.get(wanted).and_then(PodEntry::served));
            }
            return;
        }
        for batch in pods.chunks(JOIN_BATCH) {
            self.walk_batch(batch, &key, &mut f);
        }
    }

    /// [`Store::join_sorted`], keeping a copy of each pod's served usage: afterwards
    /// `batch.get(i)` is the usage of `pods[i]`. What the batch held before is dropped.
    pub fn join_values<P>(
        &self,
        pods: &[P],
        key: impl Fn(&P) -> (&str, &str),
        batch: &mut UsageBatch,
    ) {
        batch.clear();
        batch.pods.reserve(pods.len());
        self.join_sorted(pods, key, |_, served| {
            batch.push(served.map(|s| &**s.usage))
        });
    }

    fn walk_batch<P>(
        &self,
        pods: &[P],
        key: &impl Fn(&P) -> (&str, &str),
        f: &mut impl FnMut(&P, Option<ServedPod<'_>>),
    ) {
        let shards: [RwLockReadGuard<'_, BTreeMap<PodKey, PodEntry>>; SHARDS] =
            std::array::from_fn(|i| read(&self.pods[i]));
        let mut cursors: [Option<Peekable<btree_map::Range<'_, PodKey, PodEntry>>>; SHARDS] =
            std::array::from_fn(|_| None);
        // Namespaces repeat from pod to pod and are one shared string on each side (the
        // store interns its own), so once a listed and a stored namespace are found equal,
        // the same two strings are recognised by address and not compared again. Only valid
        // while the locks are held: a freed namespace's address may be reused.
        let mut same_namespace = SameStr::default();
        let mut previous: Option<(&str, &str)> = None;
        let mut namespace_hash: Option<(&str, FastHasher)> = None;
        for pod in pods {
            let (namespace, name) = key(pod);
            let wanted: &dyn PodRef = &(namespace, name);
            let hasher = match namespace_hash {
                Some((hashed, hasher)) if same_str(hashed, namespace) => hasher,
                _ => {
                    let hasher = self.namespace_hash(namespace);
                    namespace_hash = Some((namespace, hasher));
                    hasher
                }
            };
            let index = self.pod_shard_index_from(hasher, name.as_bytes());
            let (Some(shard), Some(cursor)) = (shards.get(index), cursors.get_mut(index)) else {
                f(pod, None);
                continue;
            };
            let in_order = previous.is_none_or(|(ns, n)| {
                if same_str(ns, namespace) {
                    n <= name
                } else {
                    (ns, n) <= (namespace, name)
                }
            });
            previous = Some((namespace, name));
            if !in_order {
                f(pod, shard.get(wanted).and_then(PodEntry::served));
                continue;
            }
            let cursor = cursor.get_or_insert_with(|| {
                shard
                    .range::<dyn PodRef, _>((Bound::Included(wanted), Bound::Unbounded))
                    .peekable()
            });
            let mut found = None;
            while let Some(&(stored, entry)) = cursor.peek() {
                let order = same_namespace
                    .cmp(&stored.namespace, namespace)
                    .then_with(|| stored.name.as_bytes().cmp(name.as_bytes()));
                match order {
                    CmpOrdering::Less => {
                        cursor.next();
                    }
                    CmpOrdering::Equal => {
                        // Not consumed: the same pod given twice is found twice.
                        found = entry.served();
                        break;
                    }
                    CmpOrdering::Greater => break,
                }
            }
            f(pod, found);
        }
    }

    /// metrics-server's `metric-storage-ready`: true once any rate can be served.
    pub fn ready(&self) -> bool {
        self.nodes_with_prev.load(Ordering::Relaxed) > 0
            || self.pods_with_prev.load(Ordering::Relaxed) > 0
    }

    /// Counts every entry the store holds (takes each shard's lock in turn: for tests and
    /// diagnostics, not for hot paths).
    pub fn entries(&self) -> StoreEntries {
        let mut e = StoreEntries::default();
        for shard in self.nodes.iter() {
            let slots: Vec<Arc<NodeSlot>> = read(shard).values().cloned().collect();
            e.nodes += slots.len();
            for slot in slots {
                e.node_pod_keys += lock(&slot.state).pods.len();
            }
        }
        for shard in self.pods.iter() {
            let shard = read(shard);
            e.pods += shard.len();
            e.containers += shard.values().map(|p| p.containers.len()).sum::<usize>();
        }
        e.health = self.health.iter().map(|s| read(s).len()).sum();
        (e.names, e.names_in_use) = self.names.counts();
        e
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            nodes: self.nodes_with_prev.load(Ordering::Relaxed),
            pods: self.pods_with_prev.load(Ordering::Relaxed),
            containers: self.containers_with_prev.load(Ordering::Relaxed),
        }
    }
}

/// Recomputes a pod's served usage from its containers, reusing the existing allocation when
/// no reader holds it.
fn set_pod_usage(slot: &mut Option<Arc<PodUsage>>, containers: &[ContainerState], key: &PodKey) {
    if containers.is_empty() || containers.iter().any(|c| c.prev.is_none()) {
        *slot = None;
        return;
    }
    let rate_of = |c: &ContainerState| c.prev.as_ref().map(|p| rate(&c.last, p));
    let mut usable = 0;
    let mut earliest: Option<(i64, Duration)> = None;
    for c in containers {
        match rate_of(c) {
            Some(Ok((_, window))) => {
                usable += 1;
                if earliest.is_none_or(|(ts, _)| ts > c.last.timestamp_ns) {
                    earliest = Some((c.last.timestamp_ns, window));
                }
            }
            Some(Err(e)) => tracing::error!(
                container = %c.name,
                pod = %format_args!("{}/{}", key.namespace, key.name),
                error = %e,
                "Skipping container usage metric"
            ),
            None => {}
        }
    }
    let Some((timestamp_ns, window)) = earliest else {
        *slot = None;
        return;
    };
    let fill = |out: &mut ContainerUsage, c: &ContainerState, cpu: u64| {
        if !Arc::ptr_eq(&out.name, &c.name) {
            out.name = Arc::clone(&c.name);
        }
        out.cpu_nanocores = cpu;
        out.memory_bytes = c.last.memory_bytes;
    };
    let usages = containers.iter().filter_map(|c| match rate_of(c) {
        Some(Ok((cpu, _))) => Some((c, cpu)),
        _ => None,
    });
    if let Some(existing) = slot.as_mut().and_then(Arc::get_mut)
        && existing.containers.len() == usable
    {
        existing.timestamp_ns = timestamp_ns;
        existing.window = window;
        for (out, (c, cpu)) in existing.containers.iter_mut().zip(usages) {
            fill(out, c, cpu);
        }
        return;
    }
    *slot = Some(Arc::new(PodUsage {
        timestamp_ns,
        window,
        containers: usages
            .map(|(c, cpu)| ContainerUsage {
                name: Arc::clone(&c.name),
                cpu_nanocores: cpu,
                memory_bytes: c.last.memory_bytes,
            })
            .collect(),
    }));
}

/// A sharded set of shared strings. Entries nobody else holds any more are swept when a shard
/// has doubled since its last sweep, so churn cannot grow it without bound.
struct Interner {
    hasher: std::collections::hash_map::RandomState,
    shards: Box<[Mutex<InternShard>]>,
}

struct InternShard {
    set: HashSet<Arc<str>>,
    sweep_at: usize,
}

impl Interner {
    const MIN_SWEEP: usize = 64;

    fn new() -> Self {
        Self {
            hasher: Default::default(),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(InternShard {
                        set: HashSet::new(),
                        sweep_at: Self::MIN_SWEEP,
                    })
                })
                .collect(),
        }
    }

    /// (entries, entries some other owner still holds).
    fn counts(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(all, used), shard| {
            let shard = lock(shard);
            let in_use = shard
                .set
                .iter()
                .filter(|a| Arc::strong_count(a) > 1)
                .count();
            (all + shard.set.len(), used + in_use)
        })
    }

    fn intern(&self, s: &str) -> Arc<str> {
        let mut shard = lock(&self.shards[(self.hasher.hash_one(s) as usize) % SHARDS]);
        if let Some(existing) = shard.set.get(s) {
            return Arc::clone(existing);
        }
        if shard.set.len() >= shard.sweep_at {
            shard.set.retain(|a| Arc::strong_count(a) > 1);
            shard.sweep_at = (shard.set.len() * 2).max(Self::MIN_SWEEP);
        }
        let new: Arc<str> = Arc::from(s);
        shard.set.insert(Arc::clone(&new));
        new
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    const S: i64 = 1_000_000_000;
    /// 2021-10-03T09:36:49Z, a realistic epoch offset.
    const T0: i64 = 1_633_253_809 * S;

    fn point(ts: i64, cpu: u64, mem: u64, start: i64) -> Point {
        Point {
            timestamp_ns: ts,
            cpu_ns: cpu,
            memory_bytes: mem,
            start_time_ns: start,
            ..Point::default()
        }
    }

    fn cp<'a>(ns: &'a str, pod: &'a str, c: &'a str, p: Point) -> ContainerPoint<'a> {
        ContainerPoint {
            namespace: Cow::Borrowed(ns),
            pod: Cow::Borrowed(pod),
            container: Cow::Borrowed(c),
            point: p,
        }
    }

    fn page<'a>(node: Option<Point>, mut containers: Vec<ContainerPoint<'a>>) -> Page<'a> {
        containers.sort_by(|a, b| {
            (&a.namespace, &a.pod, &a.container).cmp(&(&b.namespace, &b.pod, &b.container))
        });
        Page {
            node,
            samples: 0,
            containers,
        }
    }

    fn store() -> Store {
        Store::new(Duration::from_secs(15))
    }

    /// Pod ns/p with containers `a` and `b` sampled at `ts`.
    fn ab(ts: i64, cpu_a: u64, cpu_b: u64) -> Page<'static> {
        page(
            None,
            vec![
                cp("ns", "p", "a", point(ts, cpu_a, 1, OLD)),
                cp("ns", "p", "b", point(ts, cpu_b, 1, OLD)),
            ],
        )
    }

    /// Start time far in the past: no fresh-container shortcut.
    const OLD: i64 = T0 - 3600 * S;

    /// A pod's entry lives as long as the pod, so its containers cost their number, also
    /// when the set changes.
    #[test]
    fn a_pods_containers_have_no_spare_capacity() {
        let s = store();
        let capacity = |s: &Store| {
            let lookup: &dyn PodRef = &("ns", "p");
            let shard = read(s.pod_shard(lookup));
            let entry = shard.get(lookup).unwrap();
            (entry.containers.len(), entry.containers.capacity())
        };
        s.ingest("n1", &ab(T0, 0, 0));
        assert_eq!(capacity(&s), (2, 2));
        let three = |ts| {
            page(
                None,
                ["a", "b", "c"]
                    .into_iter()
                    .map(|c| cp("ns", "p", c, point(ts, 1, 1, OLD)))
                    .collect(),
            )
        };
        s.ingest("n1", &three(T0 + 15 * S));
        assert_eq!(capacity(&s), (3, 3));
        s.ingest("n1", &ab(T0 + 30 * S, 2, 2));
        assert_eq!(capacity(&s), (2, 2));
    }

    #[test]
    fn node_rate_is_delta_cpu_over_delta_t() {
        let s = store();
        s.ingest(
            "n1",
            &page(Some(point(T0, 100 * S as u64, 1000, 0)), vec![]),
        );
        assert_eq!(s.node_usage("n1"), None, "one point gives no rate");
        assert!(!s.ready());
        // 15 s later, 3.75 s of CPU more: 0.25 cores.
        s.ingest(
            "n1",
            &page(Some(point(T0 + 15 * S, 103_750_000_000, 2048, 0)), vec![]),
        );
        assert_eq!(
            s.node_usage("n1"),
            Some(Usage {
                timestamp_ns: T0 + 15 * S,
                window: Duration::from_secs(15),
                cpu_nanocores: 250_000_000,
                memory_bytes: 2048,
            })
        );
        assert!(s.ready());
        assert_eq!(
            s.stats(),
            StoreStats {
                nodes: 1,
                pods: 0,
                containers: 0
            }
        );
    }

    #[test]
    fn rate_uses_go_float_arithmetic() {
        // 15.012 s window, Δcpu 1e9 ns: 1e9 / 15.012 = 66613375.96... truncated.
        let (cpu, window) = rate(
            &point(15_012_000_000, 2_000_000_000, 0, 0),
            &point(0, 1_000_000_000, 0, 0),
        )
        .unwrap();
        assert_eq!(cpu, 66_613_375);
        assert_eq!(window, Duration::from_millis(15_012));
        assert_eq!(
            rate(&point(2, 1, 0, 0), &point(1, 2, 0, 0)),
            Err(RateError::CounterDecreased)
        );
        // An older start time on the later point (a stale sample from a previous instance).
        assert_eq!(
            rate(&point(20 * S, 2, 0, 5 * S), &point(10 * S, 1, 0, 6 * S)),
            Err(RateError::StartTimeDecreased)
        );
    }

    #[test]
    fn node_duplicate_and_out_of_order_points() {
        let s = store();
        let p1 = point(T0, 10 * S as u64, 1, 0);
        let p2 = point(T0 + 10 * S, 15 * S as u64, 2, 0);
        s.ingest("n", &page(Some(p1), vec![]));
        s.ingest("n", &page(Some(p2), vec![]));
        let u = s.node_usage("n").unwrap();
        assert_eq!(u.cpu_nanocores, 500_000_000);
        // The same point again: last = p2 (duplicate), prev stays p1, usage unchanged.
        s.ingest("n", &page(Some(p2), vec![]));
        assert_eq!(s.node_usage("n"), Some(u));
        // An older point than last but newer than prev: it becomes last, prev p1 kept.
        let p_mid = point(T0 + 5 * S, 11 * S as u64, 3, 0);
        s.ingest("n", &page(Some(p_mid), vec![]));
        let u = s.node_usage("n").unwrap();
        assert_eq!(
            (u.timestamp_ns, u.cpu_nanocores, u.memory_bytes),
            (T0 + 5 * S, 200_000_000, 3)
        );
        // A point older than prev: prev is dropped, nothing served.
        s.ingest("n", &page(Some(point(T0 - S, 9 * S as u64, 4, 0)), vec![]));
        assert_eq!(s.node_usage("n"), None);
        assert_eq!(s.stats().nodes, 0);
        assert!(!s.ready());
    }

    #[test]
    fn node_decreasing_counter_is_skipped() {
        let s = store();
        s.ingest("n", &page(Some(point(T0, 10 * S as u64, 1, 0)), vec![]));
        s.ingest(
            "n",
            &page(Some(point(T0 + 10 * S, 5 * S as u64, 1, 0)), vec![]),
        );
        assert_eq!(s.node_usage("n"), None);
        // The prev point still counts as stored, as in metrics-server.
        assert_eq!(s.stats().nodes, 1);
        s.ingest(
            "n",
            &page(Some(point(T0 + 20 * S, 7 * S as u64, 1, 0)), vec![]),
        );
        assert_eq!(s.node_usage("n").unwrap().cpu_nanocores, 200_000_000);
    }

    #[test]
    fn node_missing_from_page_drops_its_points() {
        let s = store();
        s.ingest("n", &page(Some(point(T0, S as u64, 1, 0)), vec![]));
        s.ingest(
            "n",
            &page(Some(point(T0 + 10 * S, 2 * S as u64, 1, 0)), vec![]),
        );
        assert!(s.node_usage("n").is_some());
        s.ingest("n", &page(None, vec![]));
        assert_eq!(s.node_usage("n"), None);
        s.ingest(
            "n",
            &page(Some(point(T0 + 20 * S, 3 * S as u64, 1, 0)), vec![]),
        );
        assert_eq!(s.node_usage("n"), None, "needs two points again");
    }

    #[test]
    fn pod_served_with_earliest_timestamp_and_its_window() {
        let s = store();
        let first = page(
            None,
            vec![
                cp("ns", "p", "a", point(T0, S as u64, 100, OLD)),
                cp("ns", "p", "b", point(T0 + S, S as u64, 200, OLD)),
            ],
        );
        s.ingest("n", &first);
        assert_eq!(s.pod_usage("ns", "p"), None);
        let second = page(
            None,
            vec![
                // a: 15 s window, 3.75 s CPU: 250m.
                cp(
                    "ns",
                    "p",
                    "a",
                    point(T0 + 15 * S, 4_750_000_000, 12_533_760, OLD),
                ),
                // b: 20 s window (T0+1 .. T0+21), 1 s CPU: 50m.
                cp(
                    "ns",
                    "p",
                    "b",
                    point(T0 + 21 * S, 2 * S as u64, 52_428_800, OLD),
                ),
            ],
        );
        s.ingest("n", &second);
        let u = s.pod_usage("ns", "p").unwrap();
        assert_eq!(u.timestamp_ns, T0 + 15 * S);
        assert_eq!(u.window, Duration::from_secs(15));
        assert_eq!(
            u.containers
                .iter()
                .map(|c| (&*c.name, c.cpu_nanocores, c.memory_bytes))
                .collect::<Vec<_>>(),
            [
                ("a", 250_000_000, 12_533_760),
                ("b", 50_000_000, 52_428_800)
            ]
        );
        assert_eq!(
            s.stats(),
            StoreStats {
                nodes: 0,
                pods: 1,
                containers: 2
            }
        );
        assert!(s.ready());
    }

    #[test]
    fn pod_needs_every_container_to_have_two_points() {
        let s = store();
        s.ingest(
            "n",
            &page(None, vec![cp("ns", "p", "a", point(T0, S as u64, 1, OLD))]),
        );
        // A second container appears: `a` has two points, `b` only one.
        s.ingest("n", &ab(T0 + 10 * S, 2 * S as u64, S as u64));
        assert_eq!(s.pod_usage("ns", "p"), None);
        assert_eq!(
            s.stats(),
            StoreStats {
                nodes: 0,
                pods: 1,
                containers: 1
            }
        );
        s.ingest("n", &ab(T0 + 20 * S, 3 * S as u64, 3 * S as u64));
        let u = s.pod_usage("ns", "p").unwrap();
        assert_eq!(
            u.containers
                .iter()
                .map(|c| c.cpu_nanocores)
                .collect::<Vec<_>>(),
            [100_000_000, 200_000_000]
        );
    }

    #[test]
    fn restarted_container_loses_its_previous_point() {
        let s = store();
        let c = |ts, cpu, start| page(None, vec![cp("ns", "p", "c", point(ts, cpu, 1, start))]);
        s.ingest("n", &c(T0, 50 * S as u64, OLD));
        s.ingest("n", &c(T0 + 15 * S, 51 * S as u64, OLD));
        assert!(s.pod_usage("ns", "p").is_some());
        // Restart at T0+20 s (after the stored timestamp), counter reset. The start time is
        // 70 s before the sample, outside the fresh window, so no shortcut either.
        let restart = T0 + 20 * S;
        s.ingest("n", &c(T0 + 90 * S, S as u64, restart));
        assert_eq!(s.pod_usage("ns", "p"), None);
        s.ingest("n", &c(T0 + 105 * S, 4 * S as u64, restart));
        let u = s.pod_usage("ns", "p").unwrap();
        assert_eq!(u.containers[0].cpu_nanocores, 200_000_000);
        assert_eq!(u.window, Duration::from_secs(15));
    }

    #[test]
    fn fresh_container_uses_its_start_time_as_previous_point() {
        // Resolution 60 s: a container 12 s old at its first sample qualifies.
        let s = Store::new(Duration::from_secs(60));
        let start = T0 - 12 * S;
        s.ingest(
            "n",
            &page(
                None,
                vec![cp("ns", "p", "c", point(T0, 3 * S as u64, 7, start))],
            ),
        );
        let u = s.pod_usage("ns", "p").unwrap();
        assert_eq!(u.containers[0].cpu_nanocores, 250_000_000);
        assert_eq!(u.window, Duration::from_secs(12));
        assert_eq!(u.timestamp_ns, T0);

        // Younger than 10 s: no shortcut.
        let s = Store::new(Duration::from_secs(60));
        s.ingest(
            "n",
            &page(
                None,
                vec![cp("ns", "q", "c", point(T0, S as u64, 7, T0 - 9 * S))],
            ),
        );
        assert_eq!(s.pod_usage("ns", "q"), None);
        // As old as the resolution: no shortcut.
        s.ingest(
            "n",
            &page(
                None,
                vec![cp("ns", "r", "c", point(T0, S as u64, 7, T0 - 60 * S))],
            ),
        );
        assert_eq!(s.pod_usage("ns", "r"), None);
    }

    #[test]
    fn decreasing_container_counter_skips_only_that_container() {
        let s = store();
        s.ingest("n", &ab(T0, 10 * S as u64, 10 * S as u64));
        s.ingest("n", &ab(T0 + 10 * S, 9 * S as u64, 11 * S as u64));
        let u = s.pod_usage("ns", "p").unwrap();
        assert_eq!(u.containers.len(), 1);
        assert_eq!(&*u.containers[0].name, "b");
        assert_eq!(u.containers[0].cpu_nanocores, 100_000_000);

        // Every container decreasing: not served.
        s.ingest("n", &ab(T0 + 20 * S, 8 * S as u64, 10 * S as u64));
        assert_eq!(s.pod_usage("ns", "p"), None);
    }

    #[test]
    fn pods_missing_from_the_page_leave_the_store() {
        let s = store();
        let two = |ts: i64, cpu: u64| {
            page(
                None,
                vec![
                    cp("a", "p1", "c", point(ts, cpu, 1, OLD)),
                    cp("b", "p2", "c", point(ts, cpu, 1, OLD)),
                ],
            )
        };
        s.ingest("n", &two(T0, S as u64));
        s.ingest("n", &two(T0 + 10 * S, 2 * S as u64));
        assert!(s.pod_usage("a", "p1").is_some() && s.pod_usage("b", "p2").is_some());
        s.ingest(
            "n",
            &page(
                None,
                vec![cp("b", "p2", "c", point(T0 + 20 * S, 3 * S as u64, 1, OLD))],
            ),
        );
        assert_eq!(s.pod_usage("a", "p1"), None);
        assert!(s.pod_usage("b", "p2").is_some());
        assert_eq!(s.stats().pods, 1);
        assert_eq!(s.stats().containers, 1);
    }

    #[test]
    fn scrape_failure_and_removals_drop_at_once() {
        let s = store();
        let pg = |ts: i64, cpu: u64| {
            page(
                Some(point(ts, cpu, 1, 0)),
                vec![
                    cp("ns", "p1", "c", point(ts, cpu, 1, OLD)),
                    cp("ns", "p2", "c", point(ts, cpu, 1, OLD)),
                ],
            )
        };
        s.ingest("n", &pg(T0, S as u64));
        s.ingest("n", &pg(T0 + 10 * S, 2 * S as u64));
        assert_eq!(
            s.stats(),
            StoreStats {
                nodes: 1,
                pods: 2,
                containers: 2
            }
        );
        s.remove_pod("ns", "p1");
        assert_eq!(s.pod_usage("ns", "p1"), None);
        assert_eq!(s.stats().pods, 1);

        s.scrape_failed("n");
        assert_eq!(s.node_usage("n"), None);
        assert_eq!(s.pod_usage("ns", "p2"), None);
        assert_eq!(s.stats(), StoreStats::default());
        assert!(!s.ready());
        // After the failure, two fresh points are needed again.
        s.ingest("n", &pg(T0 + 20 * S, 3 * S as u64));
        assert_eq!(s.node_usage("n"), None);
        s.ingest("n", &pg(T0 + 30 * S, 4 * S as u64));
        assert_eq!(s.node_usage("n").unwrap().cpu_nanocores, 100_000_000);

        s.remove_node("n");
        assert_eq!(s.node_usage("n"), None);
        assert_eq!(s.pod_usage("ns", "p1"), None);
        assert_eq!(s.stats(), StoreStats::default());
    }

    #[test]
    fn a_pod_that_moved_is_not_removed_by_its_old_node() {
        let s = store();
        let on = |ts: i64, cpu: u64| page(None, vec![cp("ns", "p", "c", point(ts, cpu, 1, OLD))]);
        s.ingest("a", &on(T0, S as u64));
        s.ingest("b", &on(T0 + 10 * S, 2 * S as u64));
        s.ingest("b", &on(T0 + 20 * S, 3 * S as u64));
        // Node a's next page no longer has the pod; it must not take b's pod with it.
        s.ingest("a", &page(None, vec![]));
        assert_eq!(
            s.pod_usage("ns", "p").unwrap().containers[0].cpu_nanocores,
            100_000_000
        );
        s.remove_node("a");
        assert!(s.pod_usage("ns", "p").is_some());
        s.remove_node("b");
        assert!(s.pod_usage("ns", "p").is_none());
    }

    #[test]
    fn duplicate_containers_are_counted_once() {
        let s = store();
        let pg = |ts: i64, cpu: u64| {
            page(
                None,
                vec![
                    cp("ns", "p", "c", point(ts, cpu, 1, OLD)),
                    cp("ns", "p", "c", point(ts, cpu + 5, 9, OLD)),
                ],
            )
        };
        s.ingest("n", &pg(T0, S as u64));
        s.ingest("n", &pg(T0 + 10 * S, 2 * S as u64));
        let u = s.pod_usage("ns", "p").unwrap();
        assert_eq!(u.containers.len(), 1);
        assert_eq!(u.containers[0].memory_bytes, 1, "the first point wins");
        assert_eq!(s.stats().containers, 1);
    }

    #[test]
    fn usage_is_updated_in_place_and_readers_keep_their_snapshot() {
        let s = store();
        let pg = |ts: i64, cpu: u64| page(None, vec![cp("ns", "p", "c", point(ts, cpu, 1, OLD))]);
        s.ingest("n", &pg(T0, S as u64));
        s.ingest("n", &pg(T0 + 10 * S, 2 * S as u64));
        let held = s.pod_usage("ns", "p").unwrap();
        s.ingest("n", &pg(T0 + 20 * S, 4 * S as u64));
        assert_eq!(held.containers[0].cpu_nanocores, 100_000_000);
        assert_eq!(
            s.pod_usage("ns", "p").unwrap().containers[0].cpu_nanocores,
            200_000_000
        );
        drop(held);
        let before = Arc::as_ptr(&s.pod_usage("ns", "p").unwrap());
        s.ingest("n", &pg(T0 + 30 * S, 5 * S as u64));
        let after = s.pod_usage("ns", "p").unwrap();
        assert_eq!(
            Arc::as_ptr(&after),
            before,
            "no reader held it: updated in place"
        );
        assert_eq!(after.containers[0].cpu_nanocores, 100_000_000);
    }

    #[test]
    fn sorted_join_answers_as_point_lookups_do() {
        let s = store();
        // 3 namespaces × 200 pods spread over the shards, all served except `ns-1/p-050`,
        // which is not in the store at all; `ns-1/p-1xx-single` have one point only.
        let names: Vec<(String, String)> = (0..3)
            .flat_map(|n| (0..200).map(move |p| (format!("ns-{n}"), format!("p-{p:03}"))))
            .filter(|(ns, p)| !(ns == "ns-1" && p == "p-050"))
            .collect();
        let singles: Vec<String> = (100..120).map(|p| format!("p-{p}-single")).collect();
        let pg = |ts: i64, cpu: u64| {
            page(
                None,
                names
                    .iter()
                    .map(|(ns, p)| cp(ns, p, "c", point(ts, cpu, 7, OLD)))
                    .collect(),
            )
        };
        s.ingest("n", &pg(T0, S as u64));
        s.ingest("n", &pg(T0 + 10 * S, 2 * S as u64));
        s.ingest(
            "m",
            &page(
                None,
                singles
                    .iter()
                    .map(|p| cp("ns-1", p, "c", point(T0, S as u64, 7, OLD)))
                    .collect(),
            ),
        );
        let own = |ns: &str, p: &str| (ns.to_string(), p.to_string());
        let mut listed: Vec<(String, String)> = (0..3)
            .flat_map(|n| (0..200).map(move |p| (format!("ns-{n}"), format!("p-{p:03}"))))
            .chain(singles.iter().map(|p| own("ns-1", p)))
            // Pods the store never saw, before, between and after its entries; a pod twice.
            .chain([
                own("a", "first"),
                own("ns-1", "p-099x"),
                own("ns-1", "p-099x"),
                own("ns-1", "p-100"),
                own("zz", "last"),
            ])
            .collect();
        listed.sort_unstable();
        // One out of order.
        listed.push(own("ns-0", "p-001"));
        let wanted: Vec<(&str, &str)> = listed
            .iter()
            .map(|(ns, p)| (ns.as_str(), p.as_str()))
            .collect();
        let joined = join(&s, &wanted);
        assert_eq!(joined, looked_up(&s, &wanted));
        // 599 pods served, `ns-1/p-100` twice and `ns-0/p-001` again at the end.
        assert_eq!(joined.iter().flatten().count(), 599 + 2);
        assert_eq!(joined.len(), 600 + 20 + 5 + 1);
        assert_eq!(
            joined
                .last()
                .cloned()
                .flatten()
                .map(|(node, u)| (node, u.containers[0].cpu_nanocores)),
            Some((Arc::from("n"), 100_000_000))
        );
        // Fewer pods than a walk is worth are looked up, with the same answers.
        let few = &wanted[395..420];
        assert!(few.len() < JOIN_POINT_LOOKUPS);
        assert_eq!(join(&s, few), looked_up(&s, few));
        assert_eq!(join(&s, &[]), Vec::new());
    }

    /// What [`Store::join_sorted`] hands out for each pod, owned.
    fn join(s: &Store, wanted: &[(&str, &str)]) -> Vec<Option<(Arc<str>, Arc<PodUsage>)>> {
        let mut joined = Vec::new();
        let mut visited = Vec::new();
        s.join_sorted(
            wanted,
            |p| *p,
            |p, served| {
                visited.push(*p);
                joined.push(served.map(|s| (Arc::clone(s.node), Arc::clone(s.usage))));
            },
        );
        assert_eq!(visited, wanted, "every pod once, in the order given");
        joined
    }

    /// The same, by one point lookup per pod.
    fn looked_up(s: &Store, wanted: &[(&str, &str)]) -> Vec<Option<(Arc<str>, Arc<PodUsage>)>> {
        wanted
            .iter()
            .map(|&key| {
                let key: &dyn PodRef = &key;
                read(s.pod_shard(key))
                    .get(key)
                    .and_then(|e| Some((Arc::clone(&e.node), e.usage.clone()?)))
            })
            .collect()
    }

    /// A pod's served values, owned, whichever [`PodValues`] they are read from.
    type Values = (i64, Duration, Vec<(String, u64, u64)>);

    fn values(v: &impl PodValues) -> Values {
        let (timestamp_ns, window) = v.time();
        let containers = v
            .containers()
            .map(|(name, cpu, memory)| (name.to_owned(), cpu, memory))
            .collect();
        (timestamp_ns, window, containers)
    }

    /// What [`Store::join_values`] copies for each pod, read back from `batch`.
    fn copied(s: &Store, wanted: &[(&str, &str)], batch: &mut UsageBatch) -> Vec<Option<Values>> {
        s.join_values(wanted, |p| *p, batch);
        let copies = (0..wanted.len())
            .map(|i| batch.get(i).map(|u| values(&u)))
            .collect();
        assert!(batch.get(wanted.len()).is_none(), "one entry per pod given");
        copies
    }

    /// The values [`join`] hands out, by reference to the store's own.
    fn served_values(joined: &[Option<(Arc<str>, Arc<PodUsage>)>]) -> Vec<Option<Values>> {
        joined
            .iter()
            .map(|j| j.as_ref().map(|(_, u)| values(&**u)))
            .collect()
    }

    #[test]
    fn join_values_copies_each_pods_containers() {
        let s = store();
        s.ingest("n", &ab(T0, 0, 0));
        s.ingest("n", &ab(T0 + 10 * S, 2 * S as u64, S as u64));
        s.ingest(
            "m",
            &page(None, vec![cp("ns", "q", "only", point(T0, 0, 5, OLD))]),
        );
        let listed = [("ns", "a"), ("ns", "p"), ("ns", "q"), ("ns", "p")];
        let mut batch = UsageBatch::default();
        let p = Some((
            T0 + 10 * S,
            Duration::from_secs(10),
            vec![
                ("a".to_owned(), 200_000_000, 1),
                ("b".to_owned(), 100_000_000, 1),
            ],
        ));
        assert_eq!(copied(&s, &listed, &mut batch), [None, p.clone(), None, p]);
        // The batch is reused: the next join's copies replace the last one's.
        s.ingest(
            "m",
            &page(
                None,
                vec![cp(
                    "ns",
                    "q",
                    "only",
                    point(T0 + 10 * S, 5 * S as u64, 6, OLD),
                )],
            ),
        );
        let q = Some((
            T0 + 10 * S,
            Duration::from_secs(10),
            vec![("only".to_owned(), 500_000_000, 6)],
        ));
        assert_eq!(copied(&s, &listed[2..3], &mut batch), [q]);
    }

    #[test]
    fn sorted_join_follows_churn_over_several_batches() {
        let s = store();
        // 4 nodes × 3 namespaces × 200 pods: 2,400 pods, more than two walk batches.
        let names: Vec<(String, String, String)> = (0..4)
            .flat_map(|node| {
                (0..3).flat_map(move |n| {
                    (0..200).map(move |p| {
                        (
                            format!("node-{node}"),
                            format!("ns-{n}"),
                            format!("p-{node}-{p:03}"),
                        )
                    })
                })
            })
            .collect();
        assert!(names.len() > 2 * JOIN_BATCH);
        // One core busy since the epoch: every later point has a rate.
        let cpu_at = |ts: i64| ts as u64;
        let ingest = |s: &Store, node: &str, ts: i64, keep: &dyn Fn(&str) -> bool| {
            let pg = page(
                None,
                names
                    .iter()
                    .filter(|(n, _, p)| n == node && keep(p))
                    .map(|(_, ns, p)| cp(ns, p, "c", point(ts, cpu_at(ts), 7, OLD)))
                    .collect(),
            );
            s.ingest(node, &pg);
        };
        for ts in [T0, T0 + 10 * S] {
            for node in 0..4 {
                ingest(&s, &format!("node-{node}"), ts, &|_| true);
            }
        }
        let mut listed: Vec<(&str, &str)> = names
            .iter()
            .map(|(_, ns, p)| (ns.as_str(), p.as_str()))
            .chain([("absent-ns", "p"), ("ns-1", "absent"), ("ns-9", "p-0-000")])
            .collect();
        listed.sort_unstable();
        let all = join(&s, &listed);
        assert_eq!(all, looked_up(&s, &listed));
        let mut batch = UsageBatch::default();
        assert_eq!(copied(&s, &listed, &mut batch), served_values(&all));
        assert_eq!(all.iter().flatten().count(), 2_400);

        // Churn: node-1 goes, node-2 fails its scrape, node-3 drops the pods ending in 7 and
        // gains new ones, a pod leaves the cluster, and a pod of node-0 moves to node-3.
        s.remove_node("node-1");
        s.scrape_failed("node-2");
        ingest(&s, "node-3", T0 + 20 * S, &|p| !p.ends_with('7'));
        let fresh: Vec<String> = (0..50).map(|p| format!("p-3-new-{p:02}")).collect();
        let moved = page(
            None,
            names
                .iter()
                .filter(|(n, _, p)| n == "node-3" && !p.ends_with('7'))
                .map(|(_, ns, p)| (ns.as_str(), p.as_str()))
                .chain(fresh.iter().map(|p| ("ns-2", p.as_str())))
                .chain([("ns-0", "p-0-005")])
                .map(|(ns, p)| cp(ns, p, "c", point(T0 + 30 * S, cpu_at(T0 + 30 * S), 7, OLD)))
                .collect(),
        );
        s.ingest("node-3", &moved);
        s.remove_pod("ns-1", "p-0-010");
        listed.extend(fresh.iter().map(|p| ("ns-2", p.as_str())));
        listed.sort_unstable();
        let churned = join(&s, &listed);
        assert_eq!(churned, looked_up(&s, &listed));
        assert_eq!(copied(&s, &listed, &mut batch), served_values(&churned));
        // node-0's 600 pods but the one gone (the moved one is served from node-3), node-3's
        // 600 less its 60 dropped; the fresh
        // pods have one point only and are not served yet.
        assert_eq!(churned.iter().flatten().count(), 599 + 540);
        let node_of = |ns: &str, p: &str| {
            let i = listed.binary_search(&(ns, p)).unwrap();
            churned[i].as_ref().map(|(node, _)| node.to_string())
        };
        assert_eq!(node_of("ns-0", "p-0-005").as_deref(), Some("node-3"));
        assert_eq!(node_of("ns-0", "p-0-006").as_deref(), Some("node-0"));
        assert_eq!(node_of("ns-1", "p-0-010"), None);
        assert_eq!(node_of("ns-1", "p-1-010"), None);
        assert_eq!(node_of("ns-2", "p-2-010"), None);
        assert_eq!(node_of("ns-2", "p-3-017"), None);
        assert_eq!(node_of("ns-2", "p-3-new-00"), None);
    }

    #[test]
    fn pod_keys_order_as_their_strings_whether_inline_or_shared() {
        let long = "p".repeat(PodName::INLINE);
        let longer = "p".repeat(PodName::INLINE + 1);
        let mut names = vec![
            "p".into(),
            long.clone(),
            longer.clone(),
            format!("{long}a"),
            format!("{}o", &long[1..]),
            "q".into(),
            "ünï".into(),
        ];
        let key = |ns: &str, n: &str| PodKey {
            namespace: Arc::from(ns),
            name: PodName::new(n),
        };
        assert_eq!(std::mem::size_of::<PodKey>(), 64);
        assert!(matches!(PodName::new(&long), PodName::Inline { .. }));
        assert!(matches!(PodName::new(&longer), PodName::Shared(_)));
        let mut keys: Vec<PodKey> = names
            .iter()
            .flat_map(|n| [key("b", n), key("a", n)])
            .collect();
        keys.sort_unstable();
        names.sort_unstable();
        let expected: Vec<(&str, &str)> = ["a", "b"]
            .into_iter()
            .flat_map(|ns| names.iter().map(move |n| (ns, n.as_str())))
            .collect();
        let sorted: Vec<(String, String)> = keys
            .iter()
            .map(|k| (k.namespace.to_string(), k.name.to_string()))
            .collect();
        let sorted: Vec<(&str, &str)> = sorted
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        assert_eq!(sorted, expected);
        // Found by borrowed strings, long or short, and not by a prefix.
        let s = store();
        let pg = |ts: i64| {
            page(
                None,
                names
                    .iter()
                    .map(|n| cp("ns", n, "c", point(ts, ts as u64, 7, OLD)))
                    .collect(),
            )
        };
        s.ingest("n", &pg(T0));
        s.ingest("n", &pg(T0 + 10 * S));
        for n in &names {
            assert!(s.pod_usage("ns", n).is_some(), "{n}");
        }
        assert!(s.pod_usage("ns", "pp").is_none());
        let wanted: Vec<(&str, &str)> = names
            .iter()
            .map(|n| ("ns", n.as_str()))
            .chain([("ns", &longer[2..])])
            .collect();
        // Each pod ten times over, in order: a walk finds it every time.
        let mut wanted: Vec<(&str, &str)> = std::iter::repeat_n(wanted, 10).flatten().collect();
        wanted.sort_unstable();
        let joined = join(&s, &wanted);
        assert_eq!(joined, looked_up(&s, &wanted));
        assert_eq!(joined.iter().flatten().count(), 10 * names.len());
    }

    #[test]
    fn strings_recognised_by_address_only_while_borrowed() {
        let mut same = SameStr::default();
        let stored: Arc<str> = Arc::from("ns-1");
        let listed = String::from("ns-1");
        assert_eq!(same.cmp(&stored, &listed), CmpOrdering::Equal);
        // The same two strings again, then a listed string at the same address but shorter.
        assert_eq!(same.cmp(&stored, &listed), CmpOrdering::Equal);
        assert_eq!(same.cmp(&stored, &listed[..3]), CmpOrdering::Greater);
        assert_eq!(same.cmp(&stored[..3], &listed[..3]), CmpOrdering::Equal);
        assert_eq!(same.cmp(&stored, "ns-2"), CmpOrdering::Less);
        assert!(same_str(&listed, &listed) && !same_str(&listed, &listed[..3]));
        assert!(!same_str(&stored, &listed));
    }

    #[test]
    fn names_are_shared() {
        let s = store();
        let pg = page(
            None,
            vec![
                cp("ns", "p1", "app", point(T0, 1, 1, OLD)),
                cp("ns", "p2", "app", point(T0, 1, 1, OLD)),
            ],
        );
        s.ingest("n", &pg);
        let key1: &dyn PodRef = &("ns", "p1");
        let key2: &dyn PodRef = &("ns", "p2");
        let ns1 = read(s.pod_shard(key1))
            .get(key1)
            .unwrap()
            .key
            .namespace
            .clone();
        let ns2 = read(s.pod_shard(key2))
            .get(key2)
            .unwrap()
            .key
            .namespace
            .clone();
        assert!(Arc::ptr_eq(&ns1, &ns2));
    }

    #[test]
    fn fast_hash_spreads_pod_keys_over_shards() {
        let state = FastState::default();
        let mut counts = [0usize; SHARDS];
        for i in 0..64_000 {
            let name = format!("web-7d9c8b6f5-{i:05}");
            let key: &dyn PodRef = &("default", name.as_str());
            counts[(state.hash_one(key) >> 58) as usize % SHARDS] += 1;
        }
        // 1,000 expected per shard.
        assert!(
            counts.iter().all(|&c| (850..1150).contains(&c)),
            "{counts:?}"
        );
        assert_ne!(
            state.hash_one("ab"),
            state.hash_one("ab\0"),
            "the length is part of the hash"
        );
    }

    #[test]
    fn interner_sweeps_unused_names() {
        let i = Interner::new();
        let keep = i.intern("keep");
        for n in 0..10_000 {
            let _ = i.intern(&format!("gone-{n}"));
        }
        let total: usize = i.shards.iter().map(|s| lock(s).set.len()).sum();
        assert!(total < 10_000 / 4, "swept: {total}");
        assert!(Arc::ptr_eq(&keep, &i.intern("keep")));
    }

    #[test]
    fn concurrent_ingests_and_reads() {
        let s = Arc::new(store());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let s = Arc::clone(&s);
                std::thread::spawn(move || {
                    let node = format!("node-{t}");
                    let names: Vec<String> = (0..30).map(|p| format!("pod-{t}-{p:02}")).collect();
                    for tick in 0..20i64 {
                        let ts = T0 + tick * 10 * S;
                        let cpu = (tick as u64 + 1) * S as u64;
                        let containers = names
                            .iter()
                            .map(|n| cp("ns", n, "c", point(ts, cpu, 1, OLD)))
                            .collect();
                        s.ingest(&node, &page(Some(point(ts, cpu, 1, 0)), containers));
                        let _ = s.pod_usage("ns", &names[0]);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            s.stats(),
            StoreStats {
                nodes: 4,
                pods: 120,
                containers: 120
            }
        );
        assert_eq!(
            s.pod_usage("ns", "pod-3-29").unwrap().containers[0].cpu_nanocores,
            100_000_000
        );
    }

    #[test]
    fn pages_go_with_points_and_health_outlives_failures() {
        let s = store();
        let raw = Arc::new(KubeletPage::empty());
        s.ingest_page("n", &ab(T0, 1, 1), Arc::clone(&raw));
        s.record_scrape_success("n", T0);
        assert!(s.kubelet_page("n").is_some_and(|p| Arc::ptr_eq(&p, &raw)));
        assert_eq!(
            s.node_health("n"),
            Some(NodeHealth {
                up: true,
                last_success_ns: T0,
                error: None
            })
        );
        // A failed scrape drops the page with the points, keeps the last success.
        s.scrape_failed("n");
        s.record_scrape_failure("n", "timeout");
        assert!(s.kubelet_page("n").is_none());
        assert_eq!(
            s.node_health("n"),
            Some(NodeHealth {
                up: false,
                last_success_ns: T0,
                error: Some("timeout")
            })
        );
        // A node that never succeeded reports no success time.
        s.record_scrape_failure("m", "dial");
        assert_eq!(s.node_health("m").map(|h| h.last_success_ns), Some(0));
        // Removal takes everything.
        s.ingest_page("n", &ab(T0 + 15 * S, 2, 2), raw);
        s.remove_node("n");
        assert!(s.kubelet_page("n").is_none());
        assert_eq!(s.node_health("n"), None);
        // A plain ingest keeps no page.
        s.ingest("k", &ab(T0, 1, 1));
        assert!(s.kubelet_page("k").is_none());
    }
}
