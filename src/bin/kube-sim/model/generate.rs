//! Generation of nodes and pods from the seed (see `seed` for the scheme).
//!
//! Everything a node or pod is — size, zone, kubelet version, workload, phase, CPU rates,
//! working sets, start times, restarts, sample lags — is drawn here, once; afterwards only
//! the dynamics change the state.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use super::catalog::{self, Kind, NODE_SIZES, WORKLOADS, Workload};
use super::seed::{self, Domain, Rng};
use super::state::{self, ContainerState, NodeId, NodeState, Phase, PodState};

const SECOND: i64 = 1000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
const MIB: u64 = 1024 * 1024;

/// Samples trail the scrape time by `0..MAX_LAG_MS` ms, fixed per node, pod and container
/// (cAdvisor collects each cgroup on its own housekeeping schedule).
pub const MAX_LAG_MS: u32 = 5000;

/// Names and hashes derived once per model and shared by every pod.
pub struct Vocabulary {
    /// `[workload][container slot]`.
    container_names: Vec<Vec<Arc<str>>>,
    /// Per workload: the pod-template-hash (Deployments) or controller-revision-hash
    /// (DaemonSets).
    pub template_hashes: Vec<String>,
    /// Image → `imageID` (`repo@sha256:…`), a digest per image drawn from the seed.
    image_ids: HashMap<String, String>,
    seed: u64,
}

impl Vocabulary {
    pub fn new(seed: u64, containers_per_pod: usize) -> Vocabulary {
        Vocabulary {
            container_names: WORKLOADS
                .iter()
                .map(|w| {
                    (0..containers_per_pod)
                        .map(|slot| Arc::from(catalog::container_name(w, slot)))
                        .collect()
                })
                .collect(),
            template_hashes: (0..WORKLOADS.len())
                .map(|i| template_hash(&mut Rng::keyed(seed, Domain::Workload, i as u64)))
                .collect(),
            image_ids: catalog::all_images()
                .into_iter()
                .map(|image| {
                    let id = image_id(seed, &image);
                    (image, id)
                })
                .collect(),
            seed,
        }
    }

    /// The `imageID` a runtime reports for `image`.
    pub fn image_id(&self, seed: u64, image: &str) -> String {
        self.image_ids
            .get(image)
            .cloned()
            .unwrap_or_else(|| image_id(seed, image))
    }

    fn container_name(&self, workload: usize, slot: usize) -> Arc<str> {
        self.container_names
            .get(workload)
            .and_then(|names| names.get(slot))
            .cloned()
            .unwrap_or_else(|| Arc::from(format!("container-{slot}")))
    }

    pub fn template_hash(&self, workload: usize) -> &str {
        self.template_hashes
            .get(workload)
            .map(String::as_str)
            .unwrap_or("")
    }

    /// The pod-template-hash of the workload's Deployment `instance` (instance 0's is
    /// `template_hash(workload)`).
    pub fn instance_hash(&self, workload: usize, instance: u32) -> Cow<'_, str> {
        if instance == 0 {
            return Cow::Borrowed(self.template_hash(workload));
        }
        let key = workload_key(workload, instance);
        Cow::Owned(template_hash(&mut Rng::keyed(
            self.seed,
            Domain::Workload,
            key,
        )))
    }
}

/// Nodes per placement block: each Deployment's pods live on the nodes of one block, as a
/// real cluster's many small Deployments each spread over some of its nodes. Blocks keep a
/// node's pods independent of `--nodes` and Deployment sizes independent of the cluster's.
pub const BLOCK_NODES: usize = 32;

/// Average replicas of a Deployment; the sizes vary from about a fifth to twice this.
pub const MEAN_REPLICAS: u64 = 40;

/// Relative sizes of the Deployments sharing a block (drawn per Deployment).
const SIZE_WEIGHTS: (u64, u64) = (1, 10);

/// Keys a workload's Deployment `instance` in the `Workload` and `Replica` streams; instance
/// 0 keys as the workload alone.
pub fn workload_key(workload: usize, instance: u32) -> u64 {
    workload as u64 | u64::from(instance) << 16
}

/// `repo@sha256:<digest>` with a digest drawn from the seed and the image name.
fn image_id(seed: u64, image: &str) -> String {
    let key = image.bytes().fold(0u64, |h, b| seed::mix(h ^ u64::from(b)));
    let digest = seed::hex(&mut Rng::keyed(seed, Domain::Workload, key | 1 << 63), 64);
    let repo = match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => image,
    };
    format!("{repo}@sha256:{digest}")
}

/// A hash as Kubernetes renders `pod-template-hash`: the decimal form of a 32-bit hash, each
/// byte mapped through the name alphabet (`rand.SafeEncodeString`), e.g. `7d9f8b6c5`.
fn template_hash(rng: &mut Rng) -> String {
    let value = u32::try_from(rng.next_u64() >> 32).unwrap_or(u32::MAX);
    value
        .to_string()
        .bytes()
        .map(|b| char::from(seed::ALPHANUMS[usize::from(b) % seed::ALPHANUMS.len()]))
        .collect()
}

/// How a pod comes to exist, which decides its history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Birth {
    /// Part of the cluster at start-up or on a newly added node: its age, phase and restarts
    /// are drawn (any time since the node booted).
    Drawn,
    /// Created at run time by `create_pods`: Running, started at `now`, never restarted.
    Created,
}

/// Generation parameters.
pub struct Generator<'a> {
    pub seed: u64,
    pub pods_per_node: usize,
    pub containers_per_pod: usize,
    pub vocab: &'a Vocabulary,
}

impl Generator<'_> {
    /// Deployments of workload `w` per block of `BLOCK_NODES` nodes: its expected pods there
    /// over `MEAN_REPLICAS`, at least one.
    fn deployments_per_block(&self, w: &Workload) -> u64 {
        let total: u64 = WORKLOADS.iter().map(|w| u64::from(w.weight)).sum();
        // The first pod of every node is kube-proxy's.
        let pods = (BLOCK_NODES * self.pods_per_node.saturating_sub(1)) as u64;
        let expected = pods * u64::from(w.weight);
        ((expected + total * MEAN_REPLICAS / 2) / (total * MEAN_REPLICAS).max(1)).max(1)
    }

    /// Which Deployment of workload `wi` pod `serial` on `node` belongs to: one of the
    /// workload's Deployments of the node's block, drawn by their sizes. Numbered per
    /// workload across blocks, so block `b`'s are `b × per_block …`.
    pub fn replica_set(&self, node: NodeId, wi: usize, serial: u64) -> u32 {
        let Some(w) = WORKLOADS.get(wi).filter(|w| w.kind == Kind::Deployment) else {
            return 0;
        };
        let per_block = self.deployments_per_block(w);
        let first = (node / BLOCK_NODES) as u64 * per_block;
        let weights = (first..first + per_block).map(|instance| {
            let instance = u32::try_from(instance).unwrap_or(u32::MAX);
            let key = workload_key(wi, instance);
            let (lo, hi) = SIZE_WEIGHTS;
            u32::try_from(Rng::keyed(self.seed, Domain::Replica, key).between(lo, hi)).unwrap_or(1)
        });
        let pick = Rng::keyed(self.seed, Domain::Replica, serial | 1 << 63).weighted(weights);
        u32::try_from(first + pick as u64).unwrap_or(u32::MAX)
    }

    /// Node `id` with its pods. `fresh` nodes booted a few seconds ago and registered at
    /// `now_ms`; others have been up for hours to weeks. Pod serials come from
    /// `next_serial`.
    pub fn node(&self, id: NodeId, now_ms: i64, fresh: bool, next_serial: &mut u64) -> NodeState {
        let mut rng = Rng::keyed(self.seed, Domain::Node, id as u64);
        let zone = u8::try_from(rng.below(catalog::ZONES.len() as u64)).unwrap_or(0);
        let arm64 = rng.chance(1, 5);
        let release = if rng.chance(1, 8) {
            &catalog::KUBELET_OLD
        } else {
            &catalog::KUBELET_CURRENT
        };
        let preferred = rng.weighted([2u32, 5, 3, 1].into_iter());
        let (boot_ms, created_ms) = if fresh {
            (now_ms - to_ms(rng.between(20_000, 60_000)), now_ms)
        } else {
            let uptime = to_ms(rng.between(2 * HOUR as u64, 30 * DAY as u64));
            let boot = now_ms - uptime;
            // Registered on its first boot, possibly long before the last reboot.
            let registered_before = to_ms(rng.below(14 * DAY as u64));
            (boot, boot - registered_before + 20 * SECOND)
        };
        let overhead_uc = odd_microcores(rng.between(120_000, 450_000), &mut rng);
        let overhead_memory = pages(rng.between(600 * MIB, 1400 * MIB));
        let lag_ms = lag(&mut rng);
        let reserved_kib = rng.between(150_000, 400_000);

        let mut node = NodeState {
            id,
            name: Arc::from(state::node_name(id)),
            ip: state::node_ip(id).unwrap_or(Ipv4Addr::LOCALHOST),
            zone,
            arm64,
            release,
            size: 0,
            memory_kib: 0,
            created_ms,
            boot_ms,
            overhead_uc,
            overhead_memory,
            lag_ms,
            retired_cpu_ns: 0,
            next_host: 2,
            pods: Vec::with_capacity(self.pods_per_node),
            container_order: Vec::new(),
            pod_order: Vec::new(),
        };
        for slot in 0..self.pods_per_node {
            let serial = *next_serial;
            *next_serial += 1;
            let workload = (slot == 0).then_some(catalog::KUBE_PROXY);
            let pod = self.pod(&mut node, serial, workload, now_ms, Birth::Drawn, fresh);
            node.pods.push(pod);
        }
        let size = fit_size(&node, preferred);
        node.size = u8::try_from(size).unwrap_or(0);
        let (_, gib, _) = NODE_SIZES.get(size).copied().unwrap_or(NODE_SIZES[0]);
        node.memory_kib = (u64::from(gib) * 1024 * 1024).saturating_sub(reserved_kib);
        node.reindex();
        node
    }

    /// Pod `serial` on `node`. `workload` forces the template (else drawn by weight).
    /// On a `young_node` (one that just joined) pods start now and there are no CronJob pods,
    /// which a node up for a minute could not have run yet.
    pub fn pod(
        &self,
        node: &mut NodeState,
        serial: u64,
        workload: Option<usize>,
        now_ms: i64,
        birth: Birth,
        young_node: bool,
    ) -> PodState {
        let mut rng = Rng::keyed(self.seed, Domain::Pod, serial);
        let only_services = birth == Birth::Created || young_node;
        let drawn = rng.weighted(WORKLOADS.iter().map(|w| {
            if only_services && w.kind == Kind::CronJob {
                0
            } else {
                w.weight
            }
        }));
        let wi = workload.unwrap_or(drawn);
        let w: &Workload = WORKLOADS.get(wi).unwrap_or(&WORKLOADS[catalog::KUBE_PROXY]);
        let pending_draw = rng.chance(1, 40);
        let phase = match (birth, w.kind) {
            (Birth::Created, _) | (_, Kind::DaemonSet) => Phase::Running,
            (_, Kind::CronJob) => Phase::Succeeded,
            (Birth::Drawn, Kind::Deployment) if pending_draw => Phase::Pending,
            (Birth::Drawn, Kind::Deployment) => Phase::Running,
        };

        // Pods created at run time or on a node that just joined start now; others have a
        // history since the node booted.
        let fresh = birth == Birth::Created || young_node;
        let boot = node.boot_ms;
        let latest = now_ms - SECOND;
        let start_ms = match (phase, w.kind) {
            _ if fresh => now_ms,
            (_, Kind::DaemonSet) => (boot + to_ms(rng.between(5_000, 30_000))).min(latest),
            (Phase::Pending, _) => (now_ms - to_ms(rng.between(5_000, 300_000))).max(boot),
            (Phase::Succeeded, _) => {
                let lo = (boot + MINUTE).max(now_ms - 6 * HOUR);
                draw_time(&mut rng, lo, now_ms - 15 * MINUTE).min(latest)
            }
            (Phase::Running, _) => draw_time(&mut rng, boot + MINUTE, now_ms - MINUTE).min(latest),
        };
        let created_ms = if fresh {
            now_ms
        } else {
            start_ms - to_ms(rng.between(200, 3_000))
        };
        let lag_ms = lag(&mut rng);

        let instance = self.replica_set(node.id, wi, serial);
        let app = catalog::app_name(w, instance);
        let mut name = String::with_capacity(app.len() + 20);
        name.push_str(&app);
        name.push('-');
        match w.kind {
            Kind::Deployment => {
                name.push_str(&self.vocab.instance_hash(wi, instance));
                name.push('-');
            }
            Kind::CronJob => {
                // Jobs are named after their scheduled minute; the schedule is every 15 min.
                let minute = created_ms.div_euclid(MINUTE);
                name.push_str(&(minute - minute.rem_euclid(15)).to_string());
                name.push('-');
            }
            Kind::DaemonSet => {}
        }
        seed::push_code(&mut name, seed::suffix_code(self.seed, serial), 5);

        let ip = match (phase, w.kind) {
            (_, Kind::DaemonSet) => node.ip,
            (Phase::Pending, _) => Ipv4Addr::UNSPECIFIED,
            _ => node.allocate_host(),
        };

        let containers = (0..self.containers_per_pod)
            .map(|slot| self.container(&mut rng, wi, slot, phase, fresh, start_ms, now_ms))
            .collect();

        PodState {
            name: Arc::from(name),
            ns: catalog::namespace_index(w.namespace).unwrap_or(0),
            workload: u16::try_from(wi).unwrap_or(0),
            instance,
            serial,
            phase,
            ip,
            created_ms,
            start_ms,
            lag_ms,
            containers,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn container(
        &self,
        rng: &mut Rng,
        wi: usize,
        slot: usize,
        phase: Phase,
        fresh: bool,
        pod_start_ms: i64,
        now_ms: i64,
    ) -> ContainerState {
        let w = WORKLOADS.get(wi).unwrap_or(&WORKLOADS[catalog::KUBE_PROXY]);
        let t = catalog::container_template(w, slot);
        let (lo, hi) = t.cpu_use_permille;
        let rate_uc = odd_microcores(
            u64::from(t.resources.cpu_request_m) * rng.between(u64::from(lo), u64::from(hi)),
            rng,
        );
        let (lo, hi) = t.memory_use_permille;
        let request = u64::from(t.resources.memory_request_mi) * MIB;
        let working_set = pages(request * rng.between(u64::from(lo), u64::from(hi)) / 1000);
        let first_start = if fresh {
            now_ms
        } else {
            (pod_start_ms + to_ms(rng.between(300, 12_000))).min(now_ms - SECOND)
        };
        let restarted = rng.chance(1, 10);
        let restarts = u32::try_from(rng.between(1, 4)).unwrap_or(1);
        let last_exit = u8::try_from(rng.below(catalog::EXIT_REASONS.len() as u64)).unwrap_or(0);
        let mut c = ContainerState {
            name: self.vocab.container_name(wi, slot),
            slot: u16::try_from(slot).unwrap_or(u16::MAX),
            rate_uc,
            working_set,
            origin_ms: first_start,
            start_ms: first_start,
            prev_start_ms: first_start,
            finished_ms: 0,
            restarts: 0,
            lag_ms: lag(rng),
            last_exit: 0,
        };
        match phase {
            Phase::Running if !fresh && restarted => {
                let last = draw_time(rng, first_start + 30 * SECOND, now_ms - 30 * SECOND);
                if last > first_start {
                    c.restarts = restarts;
                    c.start_ms = last;
                    // CrashLoopBackOff waits at least 10 s before the next start.
                    c.finished_ms = last - 10 * SECOND;
                    c.prev_start_ms = if restarts == 1 {
                        first_start
                    } else {
                        draw_time(rng, first_start, c.finished_ms - SECOND)
                    };
                    c.last_exit = last_exit;
                }
            }
            Phase::Succeeded => {
                c.finished_ms = (first_start + to_ms(rng.between(20_000, 600_000))).min(now_ms);
            }
            _ => {}
        }
        c
    }
}

/// Smallest machine at least as big as `preferred` whose allocatable CPU and memory hold the
/// node's requests with 15% to spare (the largest when nothing does).
fn fit_size(node: &NodeState, preferred: usize) -> usize {
    let (mut cpu_m, mut mem) = (node.overhead_uc / 1000, node.overhead_memory);
    for pod in node.pods.iter().filter(|p| p.phase != Phase::Succeeded) {
        let w = pod.workload();
        for c in pod.containers.iter() {
            let r = catalog::container_template(w, usize::from(c.slot)).resources;
            cpu_m += u64::from(r.cpu_request_m);
            mem += u64::from(r.memory_request_mi) * MIB;
        }
    }
    let (cpu_m, mem) = (cpu_m * 115 / 100, mem * 115 / 100);
    (preferred..NODE_SIZES.len())
        .find(|&i| {
            let (cores, gib, _) = NODE_SIZES.get(i).copied().unwrap_or(NODE_SIZES[0]);
            let cap_kib = u64::from(gib) * 1024 * 1024;
            allocatable_cpu_m(cores) >= cpu_m && allocatable_memory_kib(cap_kib) * 1024 >= mem
        })
        .unwrap_or(NODE_SIZES.len() - 1)
}

/// Allocatable CPU after the kube-reserved share GKE uses: 6% of the first core, 1% of the
/// second, 0.5% of the next two, 0.25% of the rest.
pub fn allocatable_cpu_m(cores: u32) -> u64 {
    let cores = u64::from(cores);
    let milli = cores * 1000;
    let reserved_x10 = 600
        + 100 * cores.saturating_sub(1).min(1)
        + 50 * cores.saturating_sub(2).min(2)
        + 25 * cores.saturating_sub(4);
    milli.saturating_sub(reserved_x10 / 10)
}

/// Allocatable memory after GKE's kube-reserved share (25% of the first 4 GiB, 20% of the
/// next 4, 10% of the next 8, 6% of the next 112, 2% above) and the 100 MiB eviction
/// threshold.
pub fn allocatable_memory_kib(capacity_kib: u64) -> u64 {
    const GIB_KIB: u64 = 1024 * 1024;
    let bands = [
        (4 * GIB_KIB, 25),
        (4 * GIB_KIB, 20),
        (8 * GIB_KIB, 10),
        (112 * GIB_KIB, 6),
        (u64::MAX, 2),
    ];
    let mut rest = capacity_kib;
    let mut reserved = 0;
    for (width, pct) in bands {
        let part = rest.min(width);
        reserved += part * pct / 100;
        rest -= part;
    }
    capacity_kib.saturating_sub(reserved + 100 * 1024)
}

/// Replaces the sub-millicore part of a rate with one in 100–900 µcores (at least 1.1 m):
/// rates never sit on a whole millicore, so the ±1 ns float noise a pipeline may add can
/// never move `kubectl top`'s rounded-up millicores.
fn odd_microcores(rate_uc: u64, rng: &mut Rng) -> u64 {
    (rate_uc / 1000 * 1000 + rng.between(100, 900)).max(1100)
}

/// Rounds down to whole 4 KiB pages (at least one).
fn pages(bytes: u64) -> u64 {
    (bytes & !4095).max(4096)
}

fn lag(rng: &mut Rng) -> u32 {
    u32::try_from(rng.below(u64::from(MAX_LAG_MS))).unwrap_or(0)
}

fn to_ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Uniform in `lo..=hi` (`lo` when the range is empty).
fn draw_time(rng: &mut Rng, lo: i64, hi: i64) -> i64 {
    if hi <= lo {
        return lo;
    }
    lo + to_ms(rng.below((hi - lo) as u64 + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocatable_matches_gke_figures() {
        assert_eq!(allocatable_cpu_m(1), 940);
        assert_eq!(allocatable_cpu_m(2), 1930);
        assert_eq!(allocatable_cpu_m(4), 3920);
        assert_eq!(allocatable_cpu_m(8), 7910);
        assert_eq!(allocatable_cpu_m(16), 15890);
        assert_eq!(allocatable_cpu_m(32), 31850);
        // 16 GiB: 1 GiB + 0.8 GiB + 0.8 GiB reserved + 100 MiB eviction.
        let gib = 1024 * 1024;
        assert_eq!(
            allocatable_memory_kib(16 * gib),
            16 * gib - (gib + gib * 4 / 5 + gib * 8 / 10) - 100 * 1024
        );
    }

    #[test]
    fn template_hashes_look_like_kubernetes_ones() {
        let v = Vocabulary::new(1, 2);
        for (i, w) in WORKLOADS.iter().enumerate() {
            let h = v.template_hash(i);
            assert!((1..=10).contains(&h.len()), "{}: {h}", w.app);
            // Decimal digits through the alphabet only ever give these ten characters.
            assert!(h.bytes().all(|b| b"456789bcdf".contains(&b)), "{h}");
        }
    }

    #[test]
    fn odd_microcores_never_lands_on_a_millicore() {
        let mut rng = Rng::keyed(3, Domain::Op, 0);
        for base in [0, 999, 1000, 250_000, 1_234_567] {
            let r = odd_microcores(base, &mut rng);
            assert!((100..=900).contains(&(r % 1000)), "{r}");
            assert!(r >= 1100);
            assert_eq!(r / 1000, (base / 1000).max(1));
        }
    }
}
