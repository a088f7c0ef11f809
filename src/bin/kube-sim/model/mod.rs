//! The simulated cluster's deterministic model: nodes, pods, containers, their CPU rates,
//! working sets, start times, restarts and churn; the kubelet `/metrics/resource` pages; and
//! the figures a correct pipeline must report (`/sim/expected`).
//!
//! Pure data and arithmetic: no sockets, no tokio. The API server (objects for list/watch),
//! the kubelets (pages) and `/sim/expected` all read it.
//!
//! # Determinism
//! Everything is drawn from `--seed` (scheme in [`seed`]): the same seed gives the same
//! names, labels, placement, phases, rates and working sets, and the same pages for the same
//! scrape times; node `i` is the same whatever the node count. Run-time operations are keyed
//! by an operation counter, so the same sequence of calls gives the same cluster.
//!
//! # Numbers
//! Every running container has a constant CPU rate (whole microcores, never on a whole
//! millicore) and a constant working set (whole 4 KiB pages). Its counter is exactly
//! `rate × (sample time − start)`, in integer nanoseconds; a node's is `overhead × (t − boot)`
//! plus its containers' (see [`state`]). Samples trail the scrape time by a fixed per-series
//! lag below [`generate::MAX_LAG_MS`], like cAdvisor's housekeeping.
//!
//! # What tests should expect (`expected`)
//! Since the rates are constant, `expected(now)` is exactly what any correct pipeline reports
//! from any two samples, whatever the window. Exceptions, all transient:
//! - right after a restart, the container has only its start time on the page until its
//!   first sample (up to 5 s), and a pipeline needs a second point or metrics-server's
//!   "fresh container" rule (≥ 10 s since start) before it reports the pod again; its figures
//!   when it does are unchanged. Tests should poll until the pod is back, then compare.
//! - a pod created at run time appears on the page within 5 s and in a pipeline's output
//!   after its second scrape (or 10 s after start);
//! - a node's rate changes when pods on it are created or deleted; a pipeline whose window
//!   spans that moment reports a blend for one window.
//!
//! Pending and Succeeded pods have no running containers: they are on no page and not in
//! `expected`.

mod catalog;
mod generate;
mod objects;
mod render;
mod seed;
mod state;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};

use catalog::Kind;
use generate::{Birth, Generator, Vocabulary};
use objects::PodView;
use seed::{Domain, Rng};
use state::NodeTable;

pub use state::{MAX_NODES, node_name};

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimParams {
    pub nodes: usize,
    /// Id of the first node (`--first-node`): ids below it are holes, and the initial pods'
    /// serials start at `first_node × pods_per_node`, so node i and its pods are the same as
    /// in one kube-sim holding all the nodes.
    pub first_node: usize,
    pub pods_per_node: usize,
    pub containers_per_pod: usize,
    pub seed: u64,
    /// Port each node's kubelet listens on; goes into status.daemonEndpoints.kubeletEndpoint.port.
    pub kubelet_port: u16,
}

/// Stable index of a node for the life of the process (removed nodes leave a hole).
pub type NodeId = usize;

/// An object change the API server must publish as a watch event.
// Objects by value, as the contract says: changes are rare, short-lived and handed straight
// to the object store, so boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Change {
    /// Part of the contract for the API server; the model's namespaces are fixed, so it
    /// never emits one.
    #[allow(dead_code)]
    UpsertNamespace(Namespace),
    UpsertNode(Node),
    DeleteNode {
        name: String,
    },
    UpsertPod(Pod),
    DeletePod {
        namespace: String,
        name: String,
    },
}

/// What a correct pipeline must report at `time`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Expected {
    /// RFC 3339 time the figures are for.
    pub time: String,
    /// Sorted by name.
    pub nodes: Vec<ExpectedNode>,
    /// Running pods only, sorted by (namespace, name).
    pub pods: Vec<ExpectedPod>,
}

/// A node's usage. `cpu_cores` is a whole number of microcores, so
/// `(cpu_cores * 1e9).round()` is the exact nanocore figure.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExpectedNode {
    pub name: String,
    pub cpu_cores: f64,
    pub memory_bytes: u64,
}

/// A Running pod's containers, in spec order.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExpectedPod {
    pub namespace: String,
    pub name: String,
    pub containers: Vec<ExpectedContainer>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExpectedContainer {
    pub name: String,
    pub cpu_cores: f64,
    pub memory_bytes: u64,
}

/// Bookkeeping only mutations touch (renders never do).
struct Registry {
    next_serial: u64,
    /// Keys the random stream of each run-time operation.
    op_seq: u64,
    /// Pod name → node, per namespace index.
    pods: Vec<HashMap<Arc<str>, NodeId>>,
    /// Live node ids, ascending.
    live: Vec<NodeId>,
}

impl Registry {
    fn next_op(&mut self, seed: u64) -> Rng {
        let rng = Rng::keyed(seed, Domain::Op, self.op_seq);
        self.op_seq += 1;
        rng
    }

    fn index(&mut self, node: &state::NodeState) {
        for pod in &node.pods {
            if let Some(map) = self.pods.get_mut(usize::from(pod.ns)) {
                map.insert(pod.name.clone(), node.id);
            }
        }
    }

    fn lookup(&self, namespace: &str, name: &str) -> Option<(catalog::NsIdx, NodeId)> {
        let ns = catalog::namespace_index(namespace)?;
        let id = *self.pods.get(usize::from(ns))?.get(name)?;
        Some((ns, id))
    }

    fn forget(&mut self, ns: catalog::NsIdx, name: &str) {
        if let Some(map) = self.pods.get_mut(usize::from(ns)) {
            map.remove(name);
        }
    }
}

/// The simulated cluster. Send + Sync; every method takes `&self`. Each node sits behind its
/// own lock, so kubelet renders of different nodes never contend and a render contends only
/// with a mutation of its own node; mutations are serialised by a registry lock renders never
/// take.
pub struct Model {
    params: SimParams,
    vocab: Vocabulary,
    nodes: NodeTable,
    registry: Mutex<Registry>,
    cluster_created_ms: i64,
}

/// Milliseconds since the Unix epoch (negative before it).
fn millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => {
            let before = e.duration();
            let ms = i64::try_from(before.as_millis()).unwrap_or(i64::MAX);
            // Floor, so sub-millisecond instants before the epoch round down too.
            if before.subsec_nanos() % 1_000_000 != 0 {
                -ms - 1
            } else {
                -ms
            }
        }
    }
}

impl Model {
    /// Builds the cluster as it is at `now`: `params.nodes` nodes that have been up for hours
    /// to weeks, each with `pods_per_node` pods (the first a kube-proxy DaemonSet pod) of
    /// `containers_per_pod` containers (at least one: the API requires it).
    pub fn new(mut params: SimParams, now: SystemTime) -> Model {
        params.containers_per_pod = params.containers_per_pod.max(1);
        let now_ms = millis(now);
        let vocab = Vocabulary::new(params.seed, params.containers_per_pod);
        let nodes = NodeTable::new();
        let mut registry = Registry {
            next_serial: (params.first_node * params.pods_per_node) as u64,
            op_seq: 0,
            pods: vec![HashMap::new(); catalog::NAMESPACES.len()],
            live: Vec::with_capacity(params.nodes),
        };
        let mut earliest = now_ms;
        {
            let generator = Generator {
                seed: params.seed,
                pods_per_node: params.pods_per_node,
                containers_per_pod: params.containers_per_pod,
                vocab: &vocab,
            };
            nodes.skip_to(params.first_node);
            let last = params
                .first_node
                .saturating_add(params.nodes)
                .min(MAX_NODES);
            for id in params.first_node.min(last)..last {
                let node = generator.node(id, now_ms, false, &mut registry.next_serial);
                earliest = earliest.min(node.created_ms);
                registry.index(&node);
                if nodes.push(node).is_some() {
                    registry.live.push(id);
                }
            }
        }
        // Pods created at run time by a kube-sim whose nodes start further on get serials of
        // their own, far above every initial pod's, so kube-sims sharing a cluster never make
        // the same pod name (the one starting at node 0 keeps the serials after its nodes').
        if params.first_node > 0 {
            registry.next_serial = registry.next_serial.max((params.first_node as u64) << 32);
        }
        Model {
            params,
            vocab,
            nodes,
            registry: Mutex::new(registry),
            cluster_created_ms: earliest - 3_600_000,
        }
    }

    fn generator(&self) -> Generator<'_> {
        Generator {
            seed: self.params.seed,
            pods_per_node: self.params.pods_per_node,
            containers_per_pod: self.params.containers_per_pod,
            vocab: &self.vocab,
        }
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Live node ids, ascending.
    pub fn node_ids(&self) -> Vec<NodeId> {
        (0..self.nodes.len())
            .filter(|&id| self.nodes.read(id, |_| ()).is_some())
            .collect()
    }

    pub fn node_name(&self, id: NodeId) -> Option<Arc<str>> {
        self.nodes.read(id, |n| n.name.clone())
    }

    /// The id of a live node by name (`node-00001` is id 0).
    pub fn node_id(&self, name: &str) -> Option<NodeId> {
        let id = state::parse_node_name(name)?;
        self.nodes.read(id, |_| ())?;
        Some(id)
    }

    /// 127.1.x.y for node i: the (i+1)-th address after 127.1.0.0.
    pub fn node_ip(&self, id: NodeId) -> Option<Ipv4Addr> {
        self.nodes.read(id, |n| n.ip)
    }

    /// The cluster's namespaces (`default`, `kube-system`, team namespaces, …).
    pub fn namespaces(&self) -> Vec<Namespace> {
        objects::namespaces(self.params.seed, self.cluster_created_ms)
    }

    pub fn node_object(&self, id: NodeId) -> Option<Node> {
        self.nodes.read(id, |n| {
            objects::node(
                self.params.seed,
                n,
                self.params.kubelet_port,
                self.params.pods_per_node,
            )
        })
    }

    /// Every pod of every node (all phases), node by node.
    ///
    /// At scale prefer [`Model::pod_objects_on_node`]: a `Pod` takes ~15 KiB in memory, so
    /// 150,000 of them at once (2.2 GiB) cost far more than the whole model (54 MiB).
    // Contract entry point; the API server loads node by node instead.
    #[allow(dead_code)]
    pub fn pod_objects(&self) -> Vec<Pod> {
        let mut out = Vec::new();
        for id in 0..self.nodes.len() {
            self.nodes.read(id, |n| self.append_pods(n, &mut out));
        }
        out
    }

    /// The pods bound to one node; `None` if the node is gone. Lets a caller convert a large
    /// cluster node by node instead of holding every object at once.
    pub fn pod_objects_on_node(&self, id: NodeId) -> Option<Vec<Pod>> {
        self.nodes.read(id, |n| {
            let mut out = Vec::with_capacity(n.pods.len());
            self.append_pods(n, &mut out);
            out
        })
    }

    fn append_pods(&self, node: &state::NodeState, out: &mut Vec<Pod>) {
        out.extend(
            node.pods
                .iter()
                .map(|p| objects::pod(self.params.seed, &self.vocab, node, p, PodView::Current)),
        );
    }

    /// Appends the node kubelet's `/metrics/resource` page at `now`; false if the node is gone.
    pub fn render_resource_metrics(&self, id: NodeId, now: SystemTime, out: &mut Vec<u8>) -> bool {
        let now_ms = millis(now);
        self.nodes
            .read(id, |n| render::page(n, now_ms, out))
            .is_some()
    }

    /// What a correct pipeline must report at `now` (served as `/sim/expected`).
    pub fn expected(&self, now: SystemTime) -> Expected {
        let mut nodes = Vec::new();
        let mut pods = Vec::new();
        for id in 0..self.nodes.len() {
            self.nodes.read(id, |n| {
                nodes.push(ExpectedNode {
                    name: n.name.to_string(),
                    cpu_cores: cores(n.rate_uc()),
                    memory_bytes: n.working_set(),
                });
                for p in n.pods.iter().filter(|p| p.running()) {
                    pods.push(ExpectedPod {
                        namespace: p.namespace().to_owned(),
                        name: p.name.to_string(),
                        containers: p
                            .containers
                            .iter()
                            .map(|c| ExpectedContainer {
                                name: c.name.to_string(),
                                cpu_cores: cores(c.rate_uc),
                                memory_bytes: c.working_set,
                            })
                            .collect(),
                    });
                }
            });
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Expected {
            time: objects::rfc3339_ms(millis(now)),
            nodes,
            pods,
        }
    }

    /// Creates `count` Running pods (Deployment pods, never DaemonSet or CronJob), each on a
    /// node drawn from the seed, started at `now`. Each pod yields two changes, as a watcher
    /// of a real cluster sees them: bound with containers being created, then Running.
    pub fn create_pods(&self, count: usize, now: SystemTime) -> Vec<Change> {
        self.create_pods_on(count, None, now)
    }

    /// [`Model::create_pods`], the `i`th pod on `on[i]` where given (a node that is no longer
    /// live gets none), else on a node drawn from the seed.
    fn create_pods_on(&self, count: usize, on: Option<&[NodeId]>, now: SystemTime) -> Vec<Change> {
        let now_ms = millis(now);
        let generator = self.generator();
        let mut reg = self.registry();
        let mut changes = Vec::with_capacity(count * 2);
        for i in 0..count {
            if reg.live.is_empty() {
                break;
            }
            // Every creation is an operation of the seed's sequence, placed or drawn.
            let mut rng = reg.next_op(self.params.seed);
            let id = match on {
                Some(on) => match on.get(i) {
                    Some(id) if reg.live.contains(id) => *id,
                    _ => continue,
                },
                None => {
                    let pick = usize::try_from(rng.below(reg.live.len() as u64)).unwrap_or(0);
                    match reg.live.get(pick) {
                        Some(&id) => id,
                        None => break,
                    }
                }
            };
            let serial = reg.next_serial;
            reg.next_serial += 1;
            let created = self.nodes.write(id, |node| {
                let pod = generator.pod(node, serial, None, now_ms, Birth::Created, false);
                let seed = self.params.seed;
                changes.push(Change::UpsertPod(objects::pod(
                    seed,
                    &self.vocab,
                    node,
                    &pod,
                    PodView::Scheduled,
                )));
                changes.push(Change::UpsertPod(objects::pod(
                    seed,
                    &self.vocab,
                    node,
                    &pod,
                    PodView::Current,
                )));
                let key = (pod.ns, pod.name.clone());
                node.pods.push(pod);
                node.reindex();
                key
            });
            if let Some((ns, name)) = created
                && let Some(map) = reg.pods.get_mut(usize::from(ns))
            {
                map.insert(name, id);
            }
        }
        changes
    }

    /// Deletes one pod (any phase); nothing if there is no such pod. Uses the wall clock as
    /// the deletion time; see [`Model::delete_pod_at`].
    pub fn delete_pod(&self, namespace: &str, name: &str) -> Vec<Change> {
        self.delete_pod_at(namespace, name, SystemTime::now())
    }

    /// [`Model::delete_pod`] at an explicit time: what the pod consumed up to `now` stays in
    /// its node's counter. `now` must not precede earlier renders of that node, or the node
    /// counter would step back.
    pub fn delete_pod_at(&self, namespace: &str, name: &str, now: SystemTime) -> Vec<Change> {
        let mut reg = self.registry();
        let Some((ns, id)) = reg.lookup(namespace, name) else {
            return Vec::new();
        };
        let removed = self
            .nodes
            .write(id, |node| {
                let i = node.pod_index(ns, name)?;
                node.retire(i, millis(now))
            })
            .flatten();
        reg.forget(ns, name);
        match removed {
            Some(pod) => vec![Change::DeletePod {
                namespace: pod.namespace().to_owned(),
                name: pod.name.to_string(),
            }],
            None => Vec::new(),
        }
    }

    /// Deletes `count` pods chosen deterministically from the seed (never DaemonSet pods,
    /// which their controller would recreate). Uses the wall clock as the deletion time; see
    /// [`Model::delete_pods_at`].
    pub fn delete_pods(&self, count: usize) -> Vec<Change> {
        self.delete_pods_at(count, SystemTime::now())
    }

    /// [`Model::delete_pods`] at an explicit time (see [`Model::delete_pod_at`]).
    pub fn delete_pods_at(&self, count: usize, now: SystemTime) -> Vec<Change> {
        self.delete_pods_where(count, now, |_| true).0
    }

    /// Replaces `count` Running pods, chosen as [`Model::delete_pods`] chooses, by as many
    /// new (Running) ones, as controllers replace pods: the Running population stays the
    /// same. Deleting pods of any phase instead would turn the Pending and Succeeded pods of
    /// the initial draw into Running ones over time, and a churn run would measure a cluster
    /// whose served pods grow (about 7 % over the first ~1.5 × its size in replacements).
    ///
    /// Each new pod goes to the node its predecessor left, as a scheduler's spreading puts a
    /// replacement on the node with room: with a node drawn at random per creation instead,
    /// every node's pod count would wander without bound over a long churn run, which no
    /// scheduled cluster does.
    pub fn replace_pods(&self, count: usize, now: SystemTime) -> Vec<Change> {
        let (mut changes, vacated) = self.delete_pods_where(count, now, state::PodState::running);
        changes.extend(self.create_pods_on(vacated.len(), Some(&vacated), now));
        changes
    }

    /// Deletes up to `count` non-DaemonSet pods for which `eligible` holds; returns the
    /// changes and, for each deleted pod, its node.
    fn delete_pods_where(
        &self,
        count: usize,
        now: SystemTime,
        eligible: impl Fn(&state::PodState) -> bool,
    ) -> (Vec<Change>, Vec<NodeId>) {
        let now_ms = millis(now);
        let mut reg = self.registry();
        let mut changes = Vec::with_capacity(count);
        let mut vacated = Vec::with_capacity(count);
        'next: for _ in 0..count {
            let mut rng = reg.next_op(self.params.seed);
            let n = reg.live.len();
            let start = usize::try_from(rng.below(n as u64)).unwrap_or(0);
            let pick = rng.next_u64();
            // Probe from a random node until one has a deletable pod.
            for k in 0..n {
                let Some(&id) = reg.live.get((start + k) % n) else {
                    continue;
                };
                let removed = self
                    .nodes
                    .write(id, |node| {
                        let deletable: Vec<usize> = (0..node.pods.len())
                            .filter(|&i| {
                                node.pods.get(i).is_some_and(|p| {
                                    p.workload().kind != Kind::DaemonSet && eligible(p)
                                })
                            })
                            .collect();
                        if deletable.is_empty() {
                            return None;
                        }
                        let which = usize::try_from(pick % deletable.len() as u64).unwrap_or(0);
                        let i = *deletable.get(which)?;
                        node.retire(i, now_ms)
                    })
                    .flatten();
                if let Some(pod) = removed {
                    reg.forget(pod.ns, &pod.name);
                    vacated.push(id);
                    changes.push(Change::DeletePod {
                        namespace: pod.namespace().to_owned(),
                        name: pod.name.to_string(),
                    });
                    continue 'next;
                }
            }
            // No deletable pod left anywhere.
            break;
        }
        (changes, vacated)
    }

    /// Restarts one container (all of the pod's if `None`) of a Running pod: its counter
    /// starts again from 0 at `now`, `restartCount` goes up by one, and the previous run
    /// becomes `lastState.terminated`. The pod and node counters carry on. Nothing happens
    /// (no change) for an unknown pod or container, or a pod that is not Running.
    pub fn restart_container(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        now: SystemTime,
    ) -> Vec<Change> {
        let now_ms = millis(now);
        let mut reg = self.registry();
        let Some((ns, id)) = reg.lookup(namespace, pod) else {
            return Vec::new();
        };
        let mut rng = reg.next_op(self.params.seed);
        let exit = u8::try_from(rng.below(catalog::EXIT_REASONS.len() as u64)).unwrap_or(0);
        self.nodes
            .write(id, |node| {
                let i = node.pod_index(ns, pod)?;
                let p = node.pods.get_mut(i)?;
                if !p.running() {
                    return None;
                }
                let mut restarted = false;
                for c in p.containers.iter_mut() {
                    if container.is_some_and(|name| name != &*c.name) {
                        continue;
                    }
                    c.prev_start_ms = c.start_ms;
                    c.finished_ms = now_ms;
                    c.start_ms = now_ms;
                    c.restarts = c.restarts.saturating_add(1);
                    c.last_exit = exit;
                    restarted = true;
                }
                if !restarted {
                    return None;
                }
                let p = node.pods.get(i)?;
                Some(vec![Change::UpsertPod(objects::pod(
                    self.params.seed,
                    &self.vocab,
                    node,
                    p,
                    PodView::Current,
                ))])
            })
            .flatten()
            .unwrap_or_default()
    }

    /// Adds `count` nodes that booted moments before `now`, each with its pods (Running or
    /// Pending). Returns each node followed by its pods.
    pub fn add_nodes(&self, count: usize, now: SystemTime) -> Vec<Change> {
        let now_ms = millis(now);
        let generator = self.generator();
        let mut reg = self.registry();
        let mut changes = Vec::with_capacity(count * (1 + self.params.pods_per_node));
        for _ in 0..count {
            let id = self.nodes.len();
            if id >= MAX_NODES {
                break;
            }
            let node = generator.node(id, now_ms, true, &mut reg.next_serial);
            changes.push(Change::UpsertNode(objects::node(
                self.params.seed,
                &node,
                self.params.kubelet_port,
                self.params.pods_per_node,
            )));
            let mut pods = Vec::with_capacity(node.pods.len());
            self.append_pods(&node, &mut pods);
            changes.extend(pods.into_iter().map(Change::UpsertPod));
            reg.index(&node);
            if self.nodes.push(node).is_some() {
                reg.live.push(id);
            }
        }
        changes
    }

    /// Removes the node and deletes its pods: the node's deletion first, then its pods', as
    /// a real cluster's pod garbage collector follows a node deletion.
    pub fn remove_node(&self, name: &str) -> Vec<Change> {
        let mut reg = self.registry();
        let Some(id) = state::parse_node_name(name) else {
            return Vec::new();
        };
        let Some(node) = self.nodes.remove(id) else {
            return Vec::new();
        };
        reg.live.retain(|&l| l != id);
        let mut changes = Vec::with_capacity(1 + node.pods.len());
        changes.push(Change::DeleteNode {
            name: node.name.to_string(),
        });
        for pod in &node.pods {
            reg.forget(pod.ns, &pod.name);
            changes.push(Change::DeletePod {
                namespace: pod.namespace().to_owned(),
                name: pod.name.to_string(),
            });
        }
        changes
    }
}

fn cores(rate_uc: u64) -> f64 {
    rate_uc as f64 / 1e6
}
