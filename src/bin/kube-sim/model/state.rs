//! The compact state behind the model: a few dozen bytes per container, no Kubernetes objects.
//!
//! Times are milliseconds since the Unix epoch (`i64`), CPU rates microcores (`u64`,
//! 1 µcore × 1 ms = 1 ns of CPU time, so every counter is an exact integer number of
//! nanoseconds, as the kubelet's `usageCoreNanoSeconds` is), memory bytes.
//!
//! CPU accounting:
//! - a container's counter is `rate × (t − start)`: it restarts from 0 at each (re)start;
//! - a pod's counter is `Σ rate × (t − origin)` over its containers, `origin` being the first
//!   start: the pod cgroup keeps counting across container restarts, as in a real kubelet;
//! - a node's counter is `overhead × (t − boot) + Σ rate × (t − origin)` over its running
//!   containers, plus what removed or finished containers consumed while they ran
//!   (`retired_cpu_ns`). It never decreases.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use super::catalog::{self, KubeletRelease, NsIdx};

/// Stable index of a node (see `super::NodeId`).
pub type NodeId = usize;

/// The lifecycle phase of a pod, as far as the model distinguishes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Scheduled, containers not started (ContainerCreating or ImagePullBackOff): no stats.
    Pending,
    Running,
    /// All containers ran to completion (CronJob pods): no stats.
    Succeeded,
}

/// One container of a pod.
#[derive(Clone, Debug)]
pub struct ContainerState {
    pub name: Arc<str>,
    /// Position in the pod spec (selects the template, see `catalog::container_template`).
    pub slot: u16,
    /// Constant CPU usage, microcores.
    pub rate_uc: u64,
    /// Constant working set, bytes (a multiple of 4096).
    pub working_set: u64,
    /// First start: the pod and node count this container's CPU from here.
    pub origin_ms: i64,
    /// Start of the current incarnation; its counter counts from here.
    pub start_ms: i64,
    /// Start of the previous incarnation (meaningful when `restarts > 0`).
    pub prev_start_ms: i64,
    /// When the previous incarnation ended (`restarts > 0`), or when the container
    /// completed (pods that Succeeded).
    pub finished_ms: i64,
    pub restarts: u32,
    /// How far this container's samples trail the scrape time (cAdvisor housekeeping).
    pub lag_ms: u32,
    /// Why the previous incarnation ended (index into `objects::EXIT_REASONS`).
    pub last_exit: u8,
}

impl ContainerState {
    /// Sample time of this container's stats when scraped at `now_ms`.
    pub fn sample_ms(&self, now_ms: i64) -> i64 {
        now_ms - i64::from(self.lag_ms)
    }

    /// The container's own counter at `ts_ms`, or `None` while the current incarnation has
    /// no stats yet (its first housekeeping sample is still to come).
    pub fn counter_ns(&self, ts_ms: i64) -> Option<u64> {
        let elapsed = ts_ms.checked_sub(self.start_ms).filter(|&d| d > 0)?;
        Some(self.rate_uc.saturating_mul(elapsed.unsigned_abs()))
    }

    /// CPU this container has added to its pod and node up to `ts_ms`.
    pub fn lifetime_ns(&self, ts_ms: i64) -> u64 {
        let elapsed = ts_ms.saturating_sub(self.origin_ms).max(0);
        self.rate_uc.saturating_mul(elapsed.unsigned_abs())
    }
}

/// One pod.
#[derive(Clone, Debug)]
pub struct PodState {
    pub name: Arc<str>,
    pub ns: NsIdx,
    /// Index into `catalog::WORKLOADS`.
    pub workload: u16,
    /// Which of the workload's Deployments the pod belongs to (0 for DaemonSet and CronJob
    /// pods); see `generate::Generator::replica_set`.
    pub instance: u32,
    /// Unique serial number: keys the pod's random stream, uid and name suffix.
    pub serial: u64,
    pub phase: Phase,
    pub ip: Ipv4Addr,
    pub created_ms: i64,
    /// `status.startTime`.
    pub start_ms: i64,
    pub lag_ms: u32,
    pub containers: Box<[ContainerState]>,
}

impl PodState {
    pub fn namespace(&self) -> &'static str {
        catalog::namespace_name(self.ns)
    }

    pub fn workload(&self) -> &'static catalog::Workload {
        catalog::WORKLOADS
            .get(usize::from(self.workload))
            .unwrap_or(&catalog::WORKLOADS[catalog::KUBE_PROXY])
    }

    /// The `app` label: the workload's app, suffixed `-N` for its Deployment N > 0.
    pub fn app(&self) -> std::borrow::Cow<'static, str> {
        catalog::app_name(self.workload(), self.instance)
    }

    pub fn running(&self) -> bool {
        self.phase == Phase::Running
    }

    /// Sum of the containers' CPU rates, microcores.
    pub fn rate_uc(&self) -> u64 {
        self.containers.iter().map(|c| c.rate_uc).sum()
    }

    /// Sum of the containers' working sets, bytes.
    pub fn working_set(&self) -> u64 {
        self.containers.iter().map(|c| c.working_set).sum()
    }

    /// CPU the pod's containers consumed up to `ts_ms`, across restarts.
    pub fn lifetime_ns(&self, ts_ms: i64) -> u64 {
        self.containers.iter().map(|c| c.lifetime_ns(ts_ms)).sum()
    }
}

/// One node and the pods bound to it.
#[derive(Clone, Debug)]
pub struct NodeState {
    pub id: NodeId,
    pub name: Arc<str>,
    pub ip: Ipv4Addr,
    pub zone: u8,
    pub arm64: bool,
    pub release: &'static KubeletRelease,
    /// Index into `catalog::NODE_SIZES`.
    pub size: u8,
    /// Memory capacity in KiB (a little under the nominal size, as the kernel reserves some).
    pub memory_kib: u64,
    pub created_ms: i64,
    pub boot_ms: i64,
    /// CPU used by the system outside pods (kubelet, runtime, kernel), microcores.
    pub overhead_uc: u64,
    /// Memory used outside pods, bytes.
    pub overhead_memory: u64,
    pub lag_ms: u32,
    /// CPU consumed by containers that are no longer running on the node.
    pub retired_cpu_ns: u64,
    /// Next host number handed out in the node's pod CIDR.
    pub next_host: u8,
    pub pods: Vec<PodState>,
    /// Running pods' containers as (pod index, container index), sorted as the kubelet's Go
    /// registry sorts series: by container, then namespace, then pod.
    pub container_order: Vec<(u32, u32)>,
    /// Running pods, sorted by namespace, then name.
    pub pod_order: Vec<u32>,
}

impl NodeState {
    /// Rebuilds the render orders; call after any change to `pods`.
    pub fn reindex(&mut self) {
        let pods = &self.pods;
        self.pod_order.clear();
        self.container_order.clear();
        for (pi, pod) in pods.iter().enumerate() {
            if !pod.running() {
                continue;
            }
            let Ok(pi) = u32::try_from(pi) else { continue };
            self.pod_order.push(pi);
            for ci in 0..pod.containers.len() {
                if let Ok(ci) = u32::try_from(ci) {
                    self.container_order.push((pi, ci));
                }
            }
        }
        let pod_at = |i: u32| pods.get(i as usize);
        self.pod_order.sort_by(|&a, &b| {
            let key = |i| pod_at(i).map(|p| (p.namespace(), &*p.name));
            key(a).cmp(&key(b))
        });
        self.container_order.sort_by(|&(pa, ca), &(pb, cb)| {
            let key = |pi: u32, ci: u32| {
                pod_at(pi).and_then(|p| {
                    let c = p.containers.get(ci as usize)?;
                    Some((&*c.name, p.namespace(), &*p.name))
                })
            };
            key(pa, ca).cmp(&key(pb, cb))
        });
    }

    /// Total CPU rate of the node now: overhead plus its running containers, microcores.
    pub fn rate_uc(&self) -> u64 {
        self.overhead_uc
            + self
                .pods
                .iter()
                .filter(|p| p.running())
                .map(PodState::rate_uc)
                .sum::<u64>()
    }

    /// Working set of the node: overhead plus its running containers, bytes.
    pub fn working_set(&self) -> u64 {
        self.overhead_memory
            + self
                .pods
                .iter()
                .filter(|p| p.running())
                .map(PodState::working_set)
                .sum::<u64>()
    }

    /// The node's cumulative CPU counter at `ts_ms`.
    pub fn counter_ns(&self, ts_ms: i64) -> u64 {
        let own = self
            .overhead_uc
            .saturating_mul(ts_ms.saturating_sub(self.boot_ms).max(0).unsigned_abs());
        let pods: u64 = self
            .pods
            .iter()
            .filter(|p| p.running())
            .map(|p| p.lifetime_ns(ts_ms))
            .sum();
        own + pods + self.retired_cpu_ns
    }

    /// Sample time of the node's stats when scraped at `now_ms`.
    pub fn sample_ms(&self, now_ms: i64) -> i64 {
        now_ms - i64::from(self.lag_ms)
    }

    /// Stops counting pod `index` towards the node (it was deleted or finished at `at_ms`):
    /// what it consumed so far moves into `retired_cpu_ns` so the node counter never drops.
    pub fn retire(&mut self, index: usize, at_ms: i64) -> Option<PodState> {
        if index >= self.pods.len() {
            return None;
        }
        let pod = self.pods.remove(index);
        if pod.running() {
            self.retired_cpu_ns = self.retired_cpu_ns.saturating_add(pod.lifetime_ns(at_ms));
        }
        self.reindex();
        Some(pod)
    }

    pub fn pod_index(&self, ns: NsIdx, name: &str) -> Option<usize> {
        self.pods
            .iter()
            .position(|p| p.ns == ns && &*p.name == name)
    }

    /// The next pod address in the node's /24, cycling through .2–.254.
    pub fn allocate_host(&mut self) -> Ipv4Addr {
        let host = self.next_host.clamp(2, 254);
        self.next_host = if host >= 254 { 2 } else { host + 1 };
        let [a, b, c, _] = pod_cidr_base(self.id).octets();
        Ipv4Addr::new(a, b, c, host)
    }
}

/// 127.1.0.0 + (id + 1): node i's kubelet address.
pub fn node_ip(id: NodeId) -> Option<Ipv4Addr> {
    let offset = u32::try_from(id).ok()?.checked_add(1)?;
    let base = u32::from(Ipv4Addr::new(127, 1, 0, 0));
    let ip = base.checked_add(offset)?;
    // Stay inside 127.0.0.0/8.
    (ip >> 24 == 127).then(|| Ipv4Addr::from(ip))
}

/// Base of node `id`'s pod CIDR: 10.a.b.0/24 with a.b = id + 1 (room for 65,535 nodes;
/// beyond that CIDRs repeat, which only matters for pod IP uniqueness).
pub fn pod_cidr_base(id: NodeId) -> Ipv4Addr {
    let n = (id as u64 + 1) & 0xFFFF;
    let n = u32::try_from(n).unwrap_or(0);
    Ipv4Addr::from(0x0A00_0000 | (n << 8))
}

/// `node-00001` for id 0: zero-padded to 5 digits so names sort like ids up to 99,999 nodes.
pub fn node_name(id: NodeId) -> String {
    format!("node-{:05}", id as u64 + 1)
}

/// Inverse of [`node_name`].
pub fn parse_node_name(name: &str) -> Option<NodeId> {
    let digits = name.strip_prefix("node-")?;
    if digits.len() < 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let id = usize::try_from(n.checked_sub(1)?).ok()?;
    // Reject non-canonical spellings (extra leading zeros) so each node has one name.
    (node_name(id) == name).then_some(id)
}

type Slot = RwLock<Option<Box<NodeState>>>;

const CHUNK: usize = 1024;
const MAX_CHUNKS: usize = 1024;

/// Most node ids a model can hand out (removed nodes keep theirs).
pub const MAX_NODES: usize = CHUNK * MAX_CHUNKS;

/// Node slots by id, each behind its own lock, growable without a table-wide lock: ids map
/// to fixed chunks allocated on first use, so a kubelet render locks only its own node.
pub struct NodeTable {
    chunks: Box<[OnceLock<Box<[Slot]>>]>,
    /// Ids `0..len` have been handed out.
    len: AtomicUsize,
}

impl NodeTable {
    pub fn new() -> NodeTable {
        NodeTable {
            chunks: (0..MAX_CHUNKS).map(|_| OnceLock::new()).collect(),
            len: AtomicUsize::new(0),
        }
    }

    /// Number of ids handed out so far (including removed nodes).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    fn slot(&self, id: NodeId) -> Option<&Slot> {
        if id >= self.len() {
            return None;
        }
        self.chunks.get(id / CHUNK)?.get()?.get(id % CHUNK)
    }

    /// Runs `f` on a live node under its read lock; `None` if the id is unknown or removed.
    pub fn read<R>(&self, id: NodeId, f: impl FnOnce(&NodeState) -> R) -> Option<R> {
        let guard = self
            .slot(id)?
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        guard.as_deref().map(f)
    }

    /// Runs `f` on a live node under its write lock; `None` if the id is unknown or removed.
    pub fn write<R>(&self, id: NodeId, f: impl FnOnce(&mut NodeState) -> R) -> Option<R> {
        let mut guard = self
            .slot(id)?
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        guard.as_deref_mut().map(f)
    }

    /// Stores `node` under the next id (which must be `node.id`) and publishes it. Callers
    /// serialise pushes (the model's mutation lock). `None` when the table is full.
    pub fn push(&self, node: NodeState) -> Option<NodeId> {
        let id = self.len();
        if id != node.id || id >= MAX_NODES {
            return None;
        }
        let chunk = self
            .chunks
            .get(id / CHUNK)?
            .get_or_init(|| (0..CHUNK).map(|_| RwLock::new(None)).collect());
        let slot = chunk.get(id % CHUNK)?;
        *slot.write().unwrap_or_else(PoisonError::into_inner) = Some(Box::new(node));
        self.len.store(id + 1, Ordering::Release);
        Some(id)
    }

    /// Makes ids below `first` holes (a model whose nodes start at `first`). Only before
    /// the first push; chunks of holes are never allocated.
    pub fn skip_to(&self, first: NodeId) {
        if self.len() < first {
            self.len.store(first.min(MAX_NODES), Ordering::Release);
        }
    }

    /// Takes a node out, leaving its id as a hole.
    pub fn remove(&self, id: NodeId) -> Option<Box<NodeState>> {
        self.slot(id)?
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_and_ips_follow_the_scheme() {
        assert_eq!(node_name(0), "node-00001");
        assert_eq!(node_name(19_999), "node-20000");
        assert_eq!(node_name(99_999), "node-100000");
        assert_eq!(parse_node_name("node-00001"), Some(0));
        assert_eq!(parse_node_name("node-20000"), Some(19_999));
        assert_eq!(parse_node_name("node-100000"), Some(99_999));
        for bad in [
            "node-0001",
            "node-000001",
            "node-00000",
            "node-",
            "nod-00001",
            "node-0000a",
        ] {
            assert_eq!(parse_node_name(bad), None, "{bad}");
        }
        assert_eq!(node_ip(0), Some(Ipv4Addr::new(127, 1, 0, 1)));
        assert_eq!(node_ip(254), Some(Ipv4Addr::new(127, 1, 0, 255)));
        assert_eq!(node_ip(255), Some(Ipv4Addr::new(127, 1, 1, 0)));
        assert_eq!(node_ip(19_999), Some(Ipv4Addr::new(127, 1, 78, 32)));
        assert_eq!(node_ip(usize::MAX), None);
        assert_eq!(pod_cidr_base(0), Ipv4Addr::new(10, 0, 1, 0));
        assert_eq!(pod_cidr_base(300), Ipv4Addr::new(10, 1, 45, 0));
    }

    #[test]
    fn table_grows_across_chunks_and_keeps_holes() {
        let t = NodeTable::new();
        assert!(t.read(0, |_| ()).is_none());
        let proto = |id| NodeState {
            id,
            name: Arc::from(node_name(id)),
            ip: Ipv4Addr::LOCALHOST,
            zone: 0,
            arm64: false,
            release: &catalog::KUBELET_CURRENT,
            size: 0,
            memory_kib: 0,
            created_ms: 0,
            boot_ms: 0,
            overhead_uc: 0,
            overhead_memory: 0,
            lag_ms: 0,
            retired_cpu_ns: 0,
            next_host: 2,
            pods: Vec::new(),
            container_order: Vec::new(),
            pod_order: Vec::new(),
        };
        for id in 0..CHUNK + 3 {
            assert_eq!(t.push(proto(id)), Some(id));
        }
        assert_eq!(t.push(proto(5)), None, "ids are handed out in order");
        assert_eq!(t.len(), CHUNK + 3);
        assert_eq!(
            t.read(CHUNK + 1, |n| n.name.clone()).as_deref(),
            Some("node-01026")
        );
        assert!(t.remove(3).is_some());
        assert!(t.read(3, |_| ()).is_none());
        assert!(t.write(3, |_| ()).is_none());
        assert!(t.remove(3).is_none());
        assert!(t.read(CHUNK + 3, |_| ()).is_none());
    }
}
