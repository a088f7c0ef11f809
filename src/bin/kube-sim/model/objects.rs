//! Kubernetes objects built on demand from the compact state.
//!
//! They look like what a kube-apiserver returns for a kubeadm/GKE-style cluster: nodes with
//! the well-known labels, addresses, capacity and allocatable, conditions and `nodeInfo`; pods
//! with owner references, requests and limits, conditions, container statuses (restart counts,
//! last termination, container IDs that change on restart) and IPs. `resourceVersion` is left
//! to the API server's object store. Times are whole seconds, as the API serialises them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, ContainerState as K8sContainerState, ContainerStateRunning,
    ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, DaemonEndpoint, HostIP,
    Namespace, NamespaceSpec, NamespaceStatus, Node, NodeAddress, NodeCondition,
    NodeDaemonEndpoints, NodeSpec, NodeStatus, NodeSystemInfo, Pod, PodCondition, PodIP, PodSpec,
    PodStatus, ResourceRequirements, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;

use super::catalog::{self, Kind, NODE_SIZES, REGION, ZONES};
use super::generate::{self, Vocabulary};
use super::seed::{self, Domain, Rng};
use super::state::{self, ContainerState, NodeState, Phase, PodState};

/// Which moment of a pod's life to show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodView {
    /// The pod as the model holds it.
    Current,
    /// Just bound to its node, containers still being created (the first event of a pod
    /// created at run time).
    Scheduled,
}

/// An API `Time` for `ms`, truncated to whole seconds as the API serialises it.
pub fn time(ms: i64) -> Time {
    let secs = ms.div_euclid(1000);
    Time(Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// RFC 3339 with milliseconds, e.g. `2025-01-31T12:00:00.123Z`.
pub fn rfc3339_ms(ms: i64) -> String {
    let ts = Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH);
    k8s_openapi::jiff::fmt::strtime::format("%Y-%m-%dT%H:%M:%S%.3fZ", ts)
        .unwrap_or_else(|_| ts.to_string())
}

fn q(s: impl Into<String>) -> Quantity {
    Quantity(s.into())
}

/// CPU in the canonical form the API server returns (`250m`, `2`).
fn cpu_quantity(milli: u64) -> Quantity {
    if milli.is_multiple_of(1000) {
        q((milli / 1000).to_string())
    } else {
        q(format!("{milli}m"))
    }
}

/// Bytes in the canonical binary form the API server returns: the largest binary suffix
/// that divides exactly (`512Mi`, `1Gi`, `60986301Ki`).
fn memory_quantity(bytes: u64) -> Quantity {
    const SUFFIXES: [(&str, u32); 6] = [
        ("Ei", 60),
        ("Pi", 50),
        ("Ti", 40),
        ("Gi", 30),
        ("Mi", 20),
        ("Ki", 10),
    ];
    if bytes == 0 {
        return q("0");
    }
    for (suffix, shift) in SUFFIXES {
        if bytes.trailing_zeros() >= shift {
            return q(format!("{}{suffix}", bytes >> shift));
        }
    }
    q(bytes.to_string())
}

fn labels<const N: usize>(pairs: [(&str, &str); N]) -> BTreeMap<String, String> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A stable UUID for an object, keyed by what it is.
fn uid(seed: u64, key: u64) -> String {
    seed::uuid(&mut Rng::keyed(seed, Domain::Uid, key))
}

/// Keys for [`uid`]: the top byte says what kind of object the rest numbers.
mod key {
    pub const POD: u64 = 0;
    pub const NODE: u64 = 1 << 56;
    pub const NAMESPACE: u64 = 2 << 56;
    pub const OWNER: u64 = 3 << 56;
    pub const BOOT: u64 = 4 << 56;
    pub const MACHINE: u64 = 5 << 56;
    pub const CONTAINER: u64 = 6 << 56;
}

/// The cluster's namespaces, all created with the cluster.
pub fn namespaces(seed: u64, created_ms: i64) -> Vec<Namespace> {
    catalog::NAMESPACES
        .iter()
        .enumerate()
        .map(|(i, &name)| Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                uid: Some(uid(seed, key::NAMESPACE | i as u64)),
                creation_timestamp: Some(time(created_ms)),
                labels: Some(labels([("kubernetes.io/metadata.name", name)])),
                ..ObjectMeta::default()
            },
            spec: Some(NamespaceSpec {
                finalizers: Some(vec!["kubernetes".to_owned()]),
            }),
            status: Some(NamespaceStatus {
                phase: Some("Active".to_owned()),
                ..NamespaceStatus::default()
            }),
        })
        .collect()
}

/// The Node object of `node`, whose kubelet listens on `kubelet_port` and admits up to
/// `max_pods` pods (the kubelet default, 110, unless the cluster packs more).
pub fn node(seed: u64, node: &NodeState, kubelet_port: u16, max_pods: usize) -> Node {
    let max_pods = max_pods.max(110).to_string();
    let (cores, _, instance_type) = NODE_SIZES
        .get(usize::from(node.size))
        .copied()
        .unwrap_or(NODE_SIZES[0]);
    let zone = ZONES
        .get(usize::from(node.zone))
        .copied()
        .unwrap_or(ZONES[0]);
    let arch = if node.arm64 { "arm64" } else { "amd64" };
    let name = &*node.name;
    let id = node.id as u64;

    let storage_kib: u64 = 101_430_960;
    let capacity = BTreeMap::from([
        ("cpu".to_owned(), q(cores.to_string())),
        (
            "ephemeral-storage".to_owned(),
            q(format!("{storage_kib}Ki")),
        ),
        ("hugepages-1Gi".to_owned(), q("0")),
        ("hugepages-2Mi".to_owned(), q("0")),
        ("memory".to_owned(), memory_quantity(node.memory_kib * 1024)),
        ("pods".to_owned(), q(max_pods.clone())),
    ]);
    let allocatable = BTreeMap::from([
        (
            "cpu".to_owned(),
            cpu_quantity(generate::allocatable_cpu_m(cores)),
        ),
        (
            "ephemeral-storage".to_owned(),
            q((storage_kib * 1024 * 9 / 10).to_string()),
        ),
        ("hugepages-1Gi".to_owned(), q("0")),
        ("hugepages-2Mi".to_owned(), q("0")),
        (
            "memory".to_owned(),
            memory_quantity(generate::allocatable_memory_kib(node.memory_kib) * 1024),
        ),
        ("pods".to_owned(), q(max_pods.clone())),
    ]);
    let ready_since = time(node.boot_ms + 30_000);
    let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_heartbeat_time: Some(ready_since.clone()),
        last_transition_time: Some(ready_since.clone()),
    };
    let cidr = format!("{}/24", state::pod_cidr_base(node.id));
    let release = node.release;

    Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            uid: Some(uid(seed, key::NODE | id)),
            creation_timestamp: Some(time(node.created_ms)),
            labels: Some(labels([
                ("beta.kubernetes.io/arch", arch),
                ("beta.kubernetes.io/instance-type", instance_type),
                ("beta.kubernetes.io/os", "linux"),
                ("failure-domain.beta.kubernetes.io/region", REGION),
                ("failure-domain.beta.kubernetes.io/zone", zone),
                ("kubernetes.io/arch", arch),
                ("kubernetes.io/hostname", name),
                ("kubernetes.io/os", "linux"),
                ("node.kubernetes.io/instance-type", instance_type),
                ("topology.kubernetes.io/region", REGION),
                ("topology.kubernetes.io/zone", zone),
            ])),
            annotations: Some(labels([
                ("node.alpha.kubernetes.io/ttl", "0"),
                (
                    "volumes.kubernetes.io/controller-managed-attach-detach",
                    "true",
                ),
            ])),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some(cidr.clone()),
            pod_cidrs: Some(vec![cidr]),
            provider_id: Some(format!("sim://{zone}/{name}")),
            ..NodeSpec::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".to_owned(),
                    address: node.ip.to_string(),
                },
                NodeAddress {
                    type_: "Hostname".to_owned(),
                    address: name.to_owned(),
                },
            ]),
            allocatable: Some(allocatable),
            capacity: Some(capacity),
            conditions: Some(vec![
                condition(
                    "MemoryPressure",
                    "False",
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                ),
                condition(
                    "DiskPressure",
                    "False",
                    "KubeletHasNoDiskPressure",
                    "kubelet has no disk pressure",
                ),
                condition(
                    "PIDPressure",
                    "False",
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available",
                ),
                condition(
                    "Ready",
                    "True",
                    "KubeletReady",
                    "kubelet is posting ready status",
                ),
            ]),
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint {
                    port: i32::from(kubelet_port),
                }),
            }),
            node_info: Some(NodeSystemInfo {
                architecture: arch.to_owned(),
                boot_id: uid(seed, key::BOOT | id),
                container_runtime_version: release.containerd.to_owned(),
                kernel_version: "6.8.0-1024-sim".to_owned(),
                kube_proxy_version: if release.reports_kube_proxy_version {
                    release.version.to_owned()
                } else {
                    String::new()
                },
                kubelet_version: release.version.to_owned(),
                machine_id: seed::hex(&mut Rng::keyed(seed, Domain::Uid, key::MACHINE | id), 32),
                operating_system: "linux".to_owned(),
                os_image: "Ubuntu 24.04.2 LTS".to_owned(),
                system_uuid: uid(seed, key::MACHINE | id),
                ..NodeSystemInfo::default()
            }),
            ..NodeStatus::default()
        }),
    }
}

/// The Pod object of `pod` on `node`.
pub fn pod(seed: u64, vocab: &Vocabulary, node: &NodeState, pod: &PodState, view: PodView) -> Pod {
    let w = pod.workload();
    let wi = usize::from(pod.workload);
    let ns = pod.namespace();
    let name = &*pod.name;
    let phase = if view == PodView::Scheduled {
        Phase::Pending
    } else {
        pod.phase
    };
    let creating = view == PodView::Scheduled;

    // Metadata: labels and owner as the controller that made the pod sets them.
    let hash = vocab.instance_hash(wi, pod.instance);
    let hash = &*hash;
    let app = pod.app();
    let (generate_name, owner_kind, owner_api, owner_name) = match w.kind {
        Kind::Deployment => {
            let rs = format!("{app}-{hash}");
            (format!("{rs}-"), "ReplicaSet", "apps/v1", rs)
        }
        Kind::DaemonSet => (
            format!("{}-", w.app),
            "DaemonSet",
            "apps/v1",
            w.app.to_owned(),
        ),
        Kind::CronJob => {
            let job = name
                .rsplit_once('-')
                .map_or(name, |(job, _)| job)
                .to_owned();
            (format!("{job}-"), "Job", "batch/v1", job)
        }
    };
    let owner_key = match w.kind {
        // A Job's uid depends on which run it is.
        Kind::CronJob => {
            let run = owner_name.rsplit('-').next().unwrap_or("0");
            seed::mix(run.parse::<u64>().unwrap_or(0)) & 0x00FF_FFFF_FFFF_FFFF
        }
        _ => generate::workload_key(wi, pod.instance),
    };
    let owner_uid = uid(seed, key::OWNER | owner_key);
    let mut pod_labels = labels([("app", &*app), ("team", w.team), ("tier", w.tier)]);
    let mut add = |k: &str, v: &str| {
        pod_labels.insert(k.to_owned(), v.to_owned());
    };
    match w.kind {
        Kind::Deployment => add("pod-template-hash", hash),
        Kind::DaemonSet => {
            add("controller-revision-hash", hash);
            add("k8s-app", w.app);
            add("pod-template-generation", "1");
        }
        Kind::CronJob => {
            add("batch.kubernetes.io/controller-uid", &owner_uid);
            add("batch.kubernetes.io/job-name", &owner_name);
            add("controller-uid", &owner_uid);
            add("job-name", &owner_name);
        }
    }
    if w.app == "coredns" {
        add("k8s-app", "kube-dns");
    }

    // Spec.
    let containers: Vec<Container> = pod
        .containers
        .iter()
        .map(|c| {
            let t = catalog::container_template(w, usize::from(c.slot));
            let r = t.resources;
            const MI: u64 = 1024 * 1024;
            let requests = BTreeMap::from([
                ("cpu".to_owned(), cpu_quantity(r.cpu_request_m.into())),
                (
                    "memory".to_owned(),
                    memory_quantity(u64::from(r.memory_request_mi) * MI),
                ),
            ]);
            let mut limits = BTreeMap::new();
            if r.cpu_limit_m > 0 {
                limits.insert("cpu".to_owned(), cpu_quantity(r.cpu_limit_m.into()));
            }
            if r.memory_limit_mi > 0 {
                let bytes = u64::from(r.memory_limit_mi) * MI;
                limits.insert("memory".to_owned(), memory_quantity(bytes));
            }
            Container {
                name: c.name.to_string(),
                image: Some(catalog::image_ref(t.image, node.release)),
                image_pull_policy: Some("IfNotPresent".to_owned()),
                ports: t.port.map(|(port_name, port)| {
                    vec![ContainerPort {
                        name: Some(port_name.to_owned()),
                        container_port: port,
                        protocol: Some("TCP".to_owned()),
                        ..ContainerPort::default()
                    }]
                }),
                resources: Some(ResourceRequirements {
                    requests: Some(requests),
                    limits: (!limits.is_empty()).then_some(limits),
                    ..ResourceRequirements::default()
                }),
                termination_message_path: Some("/dev/termination-log".to_owned()),
                termination_message_policy: Some("File".to_owned()),
                ..Container::default()
            }
        })
        .collect();
    let qos = qos_class(&containers);
    let (priority_class, priority) = match w.app {
        "kube-proxy" => (Some("system-node-critical"), 2_000_001_000),
        "coredns" => (Some("system-cluster-critical"), 2_000_000_000),
        _ => (None, 0),
    };
    let tolerations = if w.kind == Kind::DaemonSet {
        vec![Toleration {
            operator: Some("Exists".to_owned()),
            ..Toleration::default()
        }]
    } else {
        [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ]
        .into_iter()
        .map(|k| Toleration {
            key: Some(k.to_owned()),
            operator: Some("Exists".to_owned()),
            effect: Some("NoExecute".to_owned()),
            toleration_seconds: Some(300),
            ..Toleration::default()
        })
        .collect()
    };
    let service_account = match w.app {
        "kube-proxy" | "coredns" => w.app,
        _ => "default",
    };

    // Status.
    let container_statuses: Vec<ContainerStatus> = pod
        .containers
        .iter()
        .map(|c| {
            let t = catalog::container_template(w, usize::from(c.slot));
            let image = catalog::image_ref(t.image, node.release);
            container_status(seed, vocab, pod, c, phase, creating, image)
        })
        .collect();
    let ready_at = pod
        .containers
        .iter()
        .map(|c| c.start_ms)
        .max()
        .unwrap_or(pod.start_ms)
        + 1000;
    let finished_at = pod
        .containers
        .iter()
        .map(|c| c.finished_ms)
        .max()
        .unwrap_or(pod.start_ms);
    let names = pod
        .containers
        .iter()
        .map(|c| &*c.name)
        .collect::<Vec<_>>()
        .join(" ");
    let cond = |type_: &str, ok: bool, at: i64, reason: Option<&str>, message: Option<String>| {
        PodCondition {
            type_: type_.to_owned(),
            status: if ok { "True" } else { "False" }.to_owned(),
            last_transition_time: Some(time(at)),
            reason: reason.map(str::to_owned),
            message,
            ..PodCondition::default()
        }
    };
    let scheduled = pod.created_ms;
    let start = pod.start_ms;
    let conditions = match phase {
        Phase::Running => vec![
            cond("PodReadyToStartContainers", true, start, None, None),
            cond("Initialized", true, start, None, None),
            cond("Ready", true, ready_at, None, None),
            cond("ContainersReady", true, ready_at, None, None),
            cond("PodScheduled", true, scheduled, None, None),
        ],
        Phase::Pending => {
            let not_ready = Some(format!("containers with unready status: [{names}]"));
            vec![
                cond("PodReadyToStartContainers", !creating, start, None, None),
                cond("Initialized", true, start, None, None),
                cond(
                    "Ready",
                    false,
                    start,
                    Some("ContainersNotReady"),
                    not_ready.clone(),
                ),
                cond(
                    "ContainersReady",
                    false,
                    start,
                    Some("ContainersNotReady"),
                    not_ready,
                ),
                cond("PodScheduled", true, scheduled, None, None),
            ]
        }
        Phase::Succeeded => vec![
            cond("PodReadyToStartContainers", false, finished_at, None, None),
            cond("Initialized", true, start, Some("PodCompleted"), None),
            cond("Ready", false, finished_at, Some("PodCompleted"), None),
            cond(
                "ContainersReady",
                false,
                finished_at,
                Some("PodCompleted"),
                None,
            ),
            cond("PodScheduled", true, scheduled, None, None),
        ],
    };
    let has_ip = !pod.ip.is_unspecified() && !creating;
    let phase_name = match phase {
        Phase::Pending => "Pending",
        Phase::Running => "Running",
        Phase::Succeeded => "Succeeded",
    };

    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            generate_name: Some(generate_name),
            namespace: Some(ns.to_owned()),
            uid: Some(uid(seed, key::POD | pod.serial)),
            creation_timestamp: Some(time(pod.created_ms)),
            labels: Some(pod_labels),
            owner_references: Some(vec![OwnerReference {
                api_version: owner_api.to_owned(),
                kind: owner_kind.to_owned(),
                name: owner_name,
                uid: owner_uid,
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers,
            dns_policy: Some("ClusterFirst".to_owned()),
            enable_service_links: Some(true),
            host_network: (w.kind == Kind::DaemonSet).then_some(true),
            node_name: Some(node.name.to_string()),
            preemption_policy: Some("PreemptLowerPriority".to_owned()),
            priority: Some(priority),
            priority_class_name: priority_class.map(str::to_owned),
            restart_policy: Some(
                if w.kind == Kind::CronJob {
                    "OnFailure"
                } else {
                    "Always"
                }
                .to_owned(),
            ),
            scheduler_name: Some("default-scheduler".to_owned()),
            service_account: Some(service_account.to_owned()),
            service_account_name: Some(service_account.to_owned()),
            termination_grace_period_seconds: Some(30),
            tolerations: Some(tolerations),
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some(phase_name.to_owned()),
            conditions: Some(conditions),
            container_statuses: Some(container_statuses),
            host_ip: Some(node.ip.to_string()),
            host_ips: Some(vec![HostIP {
                ip: node.ip.to_string(),
            }]),
            pod_ip: has_ip.then(|| pod.ip.to_string()),
            pod_ips: has_ip.then(|| {
                vec![PodIP {
                    ip: pod.ip.to_string(),
                }]
            }),
            qos_class: Some(qos.to_owned()),
            start_time: Some(time(pod.start_ms)),
            ..PodStatus::default()
        }),
    }
}

fn container_status(
    seed: u64,
    vocab: &Vocabulary,
    pod: &PodState,
    c: &ContainerState,
    phase: Phase,
    creating: bool,
    image: String,
) -> ContainerStatus {
    let container_key = |incarnation: u32| {
        key::CONTAINER
            | (pod.serial << 16)
            | (u64::from(c.slot) << 8)
            | u64::from(incarnation & 0xFF)
    };
    let container_id = |incarnation| {
        format!(
            "containerd://{}",
            seed::hex(
                &mut Rng::keyed(seed, Domain::Uid, container_key(incarnation)),
                64
            )
        )
    };
    let image_id = vocab.image_id(seed, &image);
    let mut status = ContainerStatus {
        name: c.name.to_string(),
        image: image.clone(),
        image_id: String::new(),
        ready: false,
        restart_count: i32::try_from(c.restarts).unwrap_or(i32::MAX),
        started: Some(false),
        ..ContainerStatus::default()
    };
    match phase {
        Phase::Pending => {
            // Without the run-time pod's first event, some drawn pods are stuck on a pull.
            let pull_backoff = !creating && pod.serial % 2 == 1;
            status.restart_count = 0;
            status.state = Some(K8sContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(
                        if pull_backoff {
                            "ImagePullBackOff"
                        } else {
                            "ContainerCreating"
                        }
                        .to_owned(),
                    ),
                    message: pull_backoff.then(|| format!("Back-off pulling image \"{image}\"")),
                }),
                ..K8sContainerState::default()
            });
        }
        Phase::Running => {
            status.ready = true;
            status.started = Some(true);
            status.image_id = image_id;
            status.container_id = Some(container_id(c.restarts));
            status.state = Some(K8sContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(time(c.start_ms)),
                }),
                ..K8sContainerState::default()
            });
            if c.restarts > 0 {
                let (reason, code) = catalog::EXIT_REASONS
                    .get(usize::from(c.last_exit))
                    .copied()
                    .unwrap_or(("Error", 1));
                status.last_state = Some(K8sContainerState {
                    terminated: Some(ContainerStateTerminated {
                        container_id: Some(container_id(c.restarts - 1)),
                        exit_code: code,
                        reason: Some(reason.to_owned()),
                        started_at: Some(time(c.prev_start_ms)),
                        finished_at: Some(time(c.finished_ms)),
                        ..ContainerStateTerminated::default()
                    }),
                    ..K8sContainerState::default()
                });
            }
        }
        Phase::Succeeded => {
            status.image_id = image_id;
            let id = container_id(0);
            status.container_id = Some(id.clone());
            status.state = Some(K8sContainerState {
                terminated: Some(ContainerStateTerminated {
                    container_id: Some(id),
                    exit_code: 0,
                    reason: Some("Completed".to_owned()),
                    started_at: Some(time(c.start_ms)),
                    finished_at: Some(time(c.finished_ms)),
                    ..ContainerStateTerminated::default()
                }),
                ..K8sContainerState::default()
            });
        }
    }
    status
}

/// Guaranteed when every container's limits equal its requests for both CPU and memory,
/// BestEffort when nothing is requested, Burstable otherwise.
fn qos_class(containers: &[Container]) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    for c in containers {
        let r = c.resources.as_ref();
        let requests = r.and_then(|r| r.requests.as_ref());
        let limits = r.and_then(|r| r.limits.as_ref());
        any |= requests.is_some_and(|m| !m.is_empty()) || limits.is_some_and(|m| !m.is_empty());
        for res in ["cpu", "memory"] {
            let req = requests.and_then(|m| m.get(res));
            let lim = limits.and_then(|m| m.get(res));
            if lim.is_none() || req.is_some_and(|r| Some(r) != lim) {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_whole_seconds_and_rfc3339() {
        assert_eq!(time(1_624_396_278_302), time(1_624_396_278_000));
        assert_eq!(rfc3339_ms(1_624_396_278_302), "2021-06-22T21:11:18.302Z");
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        let json = serde_json::to_string(&time(1_624_396_278_302)).unwrap();
        assert_eq!(json, "\"2021-06-22T21:11:18Z\"");
    }

    #[test]
    fn quantities_are_canonical() {
        assert_eq!(cpu_quantity(250).0, "250m");
        assert_eq!(cpu_quantity(1000).0, "1");
        assert_eq!(cpu_quantity(15890).0, "15890m");
        assert_eq!(memory_quantity(512 << 20).0, "512Mi");
        assert_eq!(memory_quantity(1024 << 20).0, "1Gi");
        assert_eq!(memory_quantity(60_986_301 << 10).0, "60986301Ki");
        assert_eq!(memory_quantity(1000).0, "1000");
        assert_eq!(memory_quantity(0).0, "0");
    }

    #[test]
    fn qos_follows_kubernetes_rules() {
        let c = |req: &[(&str, &str)], lim: &[(&str, &str)]| {
            let m = |p: &[(&str, &str)]| {
                p.iter()
                    .map(|(k, v)| ((*k).to_owned(), q(*v)))
                    .collect::<BTreeMap<_, _>>()
            };
            Container {
                resources: Some(ResourceRequirements {
                    requests: Some(m(req)),
                    limits: Some(m(lim)),
                    ..ResourceRequirements::default()
                }),
                ..Container::default()
            }
        };
        let both = [("cpu", "1"), ("memory", "1Gi")];
        assert_eq!(qos_class(&[c(&both, &both)]), "Guaranteed");
        assert_eq!(qos_class(&[c(&both, &[("cpu", "1")])]), "Burstable");
        assert_eq!(qos_class(&[c(&[], &[])]), "BestEffort");
        assert_eq!(
            qos_class(&[c(&both, &both), c(&[("cpu", "1")], &[])]),
            "Burstable"
        );
    }
}
