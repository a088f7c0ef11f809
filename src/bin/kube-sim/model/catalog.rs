//! The fixed vocabulary of the simulated cluster: namespaces, workloads, sidecars, node
//! sizes, zones and kubelet versions. Pods are drawn from these templates by the seed, so a
//! cluster looks like a real one (Deployments with ReplicaSet hashes, a kube-proxy DaemonSet
//! pod on every node, CronJob pods that have Succeeded) rather than `pod-1 … pod-n`.

/// Every namespace the cluster has, in creation order. Pods live in the ones that have
/// workloads; `kube-public` and `kube-node-lease` exist, empty, as in any cluster.
pub const NAMESPACES: &[&str] = &[
    "default",
    "kube-node-lease",
    "kube-public",
    "kube-system",
    "monitoring",
    "team-alpha",
    "team-bravo",
    "team-charlie",
    "team-delta",
];

/// Index of a namespace in [`NAMESPACES`].
pub type NsIdx = u8;

/// How a workload's pods are named, labelled and finish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `app-<template hash>-<suffix>`, owned by a ReplicaSet, restartPolicy Always.
    Deployment,
    /// `app-<suffix>`, one per node, owned by a DaemonSet.
    DaemonSet,
    /// `app-<schedule minute>-<suffix>`, owned by a Job, restartPolicy Never; its pods have
    /// run to completion (phase Succeeded).
    CronJob,
}

/// Requests and limits of one container (limits `0` = none).
#[derive(Clone, Copy, Debug)]
pub struct Resources {
    pub cpu_request_m: u32,
    pub memory_request_mi: u32,
    pub cpu_limit_m: u32,
    pub memory_limit_mi: u32,
}

/// A container template: what it is called, runs, asks for and actually uses.
#[derive(Clone, Copy, Debug)]
pub struct ContainerTemplate {
    /// Container name; `None` means "the workload's app name".
    pub name: Option<&'static str>,
    pub image: &'static str,
    pub resources: Resources,
    /// CPU usage as a range of per-mille of the CPU request.
    pub cpu_use_permille: (u32, u32),
    /// Working set as a range of per-mille of the memory request.
    pub memory_use_permille: (u32, u32),
    /// Container port, if it serves one.
    pub port: Option<(&'static str, i32)>,
}

/// A workload template.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    pub namespace: &'static str,
    pub app: &'static str,
    pub kind: Kind,
    pub tier: &'static str,
    pub team: &'static str,
    /// Relative share of the non-DaemonSet pods.
    pub weight: u32,
    pub main: ContainerTemplate,
    /// Containers 2, 3, … of its pods, in order.
    pub sidecars: &'static [ContainerTemplate],
}

/// The `app` label (and Deployment name) of a workload's Deployment `instance`: the
/// workload's app for instance 0, `<app>-<instance>` for the others.
pub fn app_name(workload: &Workload, instance: u32) -> std::borrow::Cow<'static, str> {
    if instance == 0 {
        std::borrow::Cow::Borrowed(workload.app)
    } else {
        std::borrow::Cow::Owned(format!("{}-{instance}", workload.app))
    }
}

const fn res(cpu_m: u32, mem_mi: u32, cpu_lim_m: u32, mem_lim_mi: u32) -> Resources {
    Resources {
        cpu_request_m: cpu_m,
        memory_request_mi: mem_mi,
        cpu_limit_m: cpu_lim_m,
        memory_limit_mi: mem_lim_mi,
    }
}

const fn main(
    image: &'static str,
    resources: Resources,
    cpu_use: (u32, u32),
    mem_use: (u32, u32),
    port: Option<(&'static str, i32)>,
) -> ContainerTemplate {
    ContainerTemplate {
        name: None,
        image,
        resources,
        cpu_use_permille: cpu_use,
        memory_use_permille: mem_use,
        port,
    }
}

/// Index of the kube-proxy DaemonSet in [`WORKLOADS`]; every node's first pod.
pub const KUBE_PROXY: usize = 0;

/// The workload templates. CPU use is a share of the request (0.05 to 1.2 of it, so the HPA
/// sees both idle and busy pods); the working set is a share of the memory request.
pub const WORKLOADS: &[Workload] = &[
    Workload {
        namespace: "kube-system",
        app: "kube-proxy",
        kind: Kind::DaemonSet,
        tier: "node",
        team: "platform",
        weight: 0,
        main: main(
            "registry.k8s.io/kube-proxy",
            res(100, 64, 0, 0),
            (20, 150),
            (250, 500),
            None,
        ),
        sidecars: NODE_SIDECARS,
    },
    Workload {
        namespace: "kube-system",
        app: "coredns",
        kind: Kind::Deployment,
        tier: "dns",
        team: "platform",
        weight: 2,
        main: main(
            "registry.k8s.io/coredns/coredns:v1.12.0",
            res(100, 70, 0, 170),
            (30, 300),
            (300, 900),
            Some(("dns", 53)),
        ),
        sidecars: SIDECARS,
    },
    Workload {
        namespace: "monitoring",
        app: "grafana",
        kind: Kind::Deployment,
        tier: "frontend",
        team: "observability",
        weight: 1,
        main: main(
            "docker.io/grafana/grafana:11.4.0",
            res(250, 256, 1000, 512),
            (50, 600),
            (400, 950),
            Some(("http", 3000)),
        ),
        sidecars: SIDECARS,
    },
    Workload {
        namespace: "monitoring",
        app: "kube-state-metrics",
        kind: Kind::Deployment,
        tier: "backend",
        team: "observability",
        weight: 1,
        main: main(
            "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.14.0",
            res(100, 190, 0, 250),
            (100, 700),
            (500, 1000),
            Some(("http-metrics", 8080)),
        ),
        sidecars: SIDECARS,
    },
    Workload {
        namespace: "default",
        app: "web",
        kind: Kind::Deployment,
        tier: "frontend",
        team: "storefront",
        weight: 6,
        main: main(
            "registry.example.com/storefront/web:2.8.1",
            res(250, 256, 1000, 512),
            (100, 1200),
            (300, 1000),
            Some(("http", 8080)),
        ),
        sidecars: SIDECARS,
    },
    Workload {
        namespace: "default",
        app: "api",
        kind: Kind::Deployment,
        tier: "backend",
        team: "storefront",
        weight: 5,
        main: main(
            "registry.example.com/storefront/api:3.1.0",
            res(500, 512, 2000, 1024),
            (80, 1100),
            (350, 1000),
            Some(("http", 8080)),
        ),
        sidecars: SIDECARS,
    },
    Workload {
        namespace: "team-alpha",
        app: "checkout",
        kind: Kind::Deployment,
        tier: "backend",
        team: "alpha",
        weight: 5,
        main: main(
            "registry.example.com/alpha/checkout:1.14.3",
            res(200, 384, 1000, 768),
            (50, 1000),
            (300, 950),
            Some(("http", 8080)),
        ),
        sidecars: SIDECARS,
    },
    Workload {
        namespace: "team-alpha",
        app: "cart",
        kind: Kind::Deployment,
        tier: "backend",
        team: "alpha",
        weight: 4,
        main: main(
            "registry.example.com/alpha/cart:0.9.7",
            res(150, 256, 500, 512),
            (50, 900),
            (300, 900),
            Some(("grpc", 9090)),
        ),
        sidecars: SIDECARS,
    },
    Workload {
        namespace: "team-bravo",
        app: "search",
        kind: Kind::Deployment,
        tier: "backend",
        team: "bravo",
        weight: 5,
        main: main(
            "registry.example.com/bravo/search:5.2.0",
            res(400, 1024, 2000, 2048),
            (100, 1200),
            (400, 1000),
            Some(("http", 9200)),
        ),
        sidecars: SIDECARS,
    },
    Workload {
        namespace: "team-bravo",
        app: "indexer",
        kind: Kind::Deployment,
        tier: "worker",
        team: "bravo",
        weight: 3,
        main: main(
            "registry.example.com/bravo/indexer:5.2.0",
            res(300, 512, 0, 1024),
            (200, 1200),
            (300, 1000),
            None,
        ),
        sidecars: SIDECARS,
    },
    Workload {
        namespace: "team-charlie",
        app: "payments",
        kind: Kind::Deployment,
        tier: "backend",
        team: "charlie",
        weight: 4,
        main: main(
            "registry.example.com/charlie/payments:4.0.2",
            res(250, 384, 1000, 768),
            (50, 800),
            (300, 900),
            Some(("https", 8443)),
        ),
        sidecars: SIDECARS,
    },
    Workload {
        namespace: "team-charlie",
        app: "ledger",
        kind: Kind::Deployment,
        tier: "backend",
        team: "charlie",
        weight: 3,
        main: main(
            "registry.example.com/charlie/ledger:2.3.9",
            res(200, 512, 1000, 1024),
            (50, 700),
            (400, 950),
            Some(("grpc", 9090)),
        ),
        sidecars: SIDECARS,
    },
    Workload {
        namespace: "team-delta",
        app: "notifications",
        kind: Kind::Deployment,
        tier: "worker",
        team: "delta",
        weight: 3,
        main: main(
            "registry.example.com/delta/notifications:1.2.0",
            res(100, 128, 500, 256),
            (50, 1000),
            (300, 950),
            None,
        ),
        sidecars: SIDECARS,
    },
    Workload {
        namespace: "team-delta",
        app: "report",
        kind: Kind::CronJob,
        tier: "batch",
        team: "delta",
        weight: 2,
        main: main(
            "registry.example.com/delta/report:7.0.1",
            res(500, 512, 0, 1024),
            (500, 1000),
            (300, 900),
            None,
        ),
        sidecars: SIDECARS,
    },
];

const ISTIO_PROXY: ContainerTemplate = ContainerTemplate {
    name: Some("istio-proxy"),
    image: "docker.io/istio/proxyv2:1.24.2",
    resources: res(100, 128, 2000, 1024),
    cpu_use_permille: (50, 600),
    memory_use_permille: (300, 800),
    port: Some(("http-envoy-prom", 15090)),
};
const LOG_SHIPPER: ContainerTemplate = ContainerTemplate {
    name: Some("log-shipper"),
    image: "cr.fluentbit.io/fluent/fluent-bit:3.2.4",
    resources: res(50, 64, 200, 128),
    cpu_use_permille: (50, 500),
    memory_use_permille: (300, 900),
    port: None,
};
const CONFIG_RELOADER: ContainerTemplate = ContainerTemplate {
    name: Some("config-reloader"),
    image: "ghcr.io/jimmidyson/configmap-reload:v0.14.0",
    resources: res(10, 16, 50, 32),
    cpu_use_permille: (100, 800),
    memory_use_permille: (300, 900),
    port: None,
};
const METRICS_EXPORTER: ContainerTemplate = ContainerTemplate {
    name: Some("metrics-exporter"),
    image: "quay.io/prometheus/statsd-exporter:v0.28.0",
    resources: res(20, 32, 100, 64),
    cpu_use_permille: (100, 900),
    memory_use_permille: (300, 900),
    port: Some(("metrics", 9102)),
};

/// Containers 2, 3, … of an application pod, in order. Past the end of the list,
/// `sidecar-<n>` repeats the last template under a unique name.
pub const SIDECARS: &[ContainerTemplate] =
    &[ISTIO_PROXY, LOG_SHIPPER, CONFIG_RELOADER, METRICS_EXPORTER];

/// Containers 2, 3, … of a node agent (DaemonSet) pod: no service mesh on the host network.
pub const NODE_SIDECARS: &[ContainerTemplate] = &[METRICS_EXPORTER, LOG_SHIPPER];

/// Machine shapes: (cores, memory GiB, instance type).
pub const NODE_SIZES: &[(u32, u32, &str)] = &[
    (4, 16, "standard-4"),
    (8, 32, "standard-8"),
    (16, 64, "standard-16"),
    (32, 128, "standard-32"),
    (64, 256, "standard-64"),
    (96, 384, "standard-96"),
];

pub const REGION: &str = "sim-central1";
pub const ZONES: &[&str] = &["sim-central1-a", "sim-central1-b", "sim-central1-c"];

/// What a node's kubelet is: the versions differ in what `/metrics/resource` carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KubeletRelease {
    pub version: &'static str,
    pub containerd: &'static str,
    /// 1.29 deprecated `scrape_error` (still shown, HELP prefixed "(Deprecated since
    /// 1.29.0)"); component-base hides a metric one minor release after its deprecation, so
    /// 1.30+ kubelets no longer emit it.
    pub emits_scrape_error: bool,
    /// The kubelet stopped filling `nodeInfo.kubeProxyVersion` (DisableNodeKubeProxyVersion).
    pub reports_kube_proxy_version: bool,
}

/// Most nodes run the current release; one in eight is still on 1.29 (version skew during an
/// upgrade), so pages with and without the deprecated `scrape_error` both occur.
pub const KUBELET_CURRENT: KubeletRelease = KubeletRelease {
    version: "v1.33.4",
    containerd: "containerd://2.0.5",
    emits_scrape_error: false,
    reports_kube_proxy_version: false,
};
pub const KUBELET_OLD: KubeletRelease = KubeletRelease {
    version: "v1.29.15",
    containerd: "containerd://1.7.27",
    emits_scrape_error: true,
    reports_kube_proxy_version: true,
};

/// The image a container runs: the template's, with kube-proxy's tag following its node's
/// kubelet release.
pub fn image_ref(template_image: &str, release: &KubeletRelease) -> String {
    if template_image.contains(':') {
        template_image.to_owned()
    } else {
        format!("{template_image}:{}", release.version)
    }
}

/// Every image the cluster runs.
pub fn all_images() -> Vec<String> {
    let mut images: Vec<String> = WORKLOADS
        .iter()
        .flat_map(|w| std::iter::once(&w.main).chain(w.sidecars.iter()))
        .flat_map(|t| {
            [&KUBELET_CURRENT, &KUBELET_OLD]
                .into_iter()
                .map(|r| image_ref(t.image, r))
        })
        .collect();
    images.sort();
    images.dedup();
    images
}

/// How a restarted container's previous incarnation ended: (reason, exit code).
pub const EXIT_REASONS: &[(&str, i32)] = &[("Error", 1), ("OOMKilled", 137), ("Error", 2)];

/// Index of `name` in [`NAMESPACES`].
pub fn namespace_index(name: &str) -> Option<NsIdx> {
    NAMESPACES
        .iter()
        .position(|&n| n == name)
        .and_then(|i| NsIdx::try_from(i).ok())
}

/// The namespace name of an index (empty for an out-of-range index, which the model never
/// stores).
pub fn namespace_name(idx: NsIdx) -> &'static str {
    NAMESPACES.get(usize::from(idx)).copied().unwrap_or("")
}

/// The template of container `slot` of a pod of `workload`.
pub fn container_template(workload: &Workload, slot: usize) -> &ContainerTemplate {
    match slot.checked_sub(1) {
        None => &workload.main,
        Some(i) => workload
            .sidecars
            .get(i)
            .or(workload.sidecars.last())
            .unwrap_or(&workload.main),
    }
}

/// The name of container `slot` of a pod of `workload`.
pub fn container_name(workload: &Workload, slot: usize) -> String {
    match slot.checked_sub(1) {
        None => workload.app.to_owned(),
        Some(i) => match workload.sidecars.get(i).and_then(|t| t.name) {
            Some(name) => name.to_owned(),
            None => format!("sidecar-{}", slot + 1),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_of_workloads_exist() {
        for w in WORKLOADS {
            assert!(namespace_index(w.namespace).is_some(), "{}", w.app);
        }
        assert_eq!(WORKLOADS[KUBE_PROXY].kind, Kind::DaemonSet);
        // Only the DaemonSet has weight 0, so it is never drawn for other slots.
        for (i, w) in WORKLOADS.iter().enumerate() {
            assert_eq!(w.weight == 0, i == KUBE_PROXY, "{}", w.app);
        }
    }

    #[test]
    fn container_names_are_unique_per_pod() {
        let w = &WORKLOADS[4];
        let names: Vec<String> = (0..12).map(|s| container_name(w, s)).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "{names:?}");
        assert_eq!(names[0], "web");
        assert_eq!(names[1], "istio-proxy");
        assert_eq!(names[5], "sidecar-6");
    }

    #[test]
    fn usage_ranges_are_sane() {
        let all = WORKLOADS
            .iter()
            .map(|w| &w.main)
            .chain(SIDECARS.iter())
            .chain(NODE_SIDECARS.iter());
        for t in all {
            assert!(t.cpu_use_permille.0 > 0 && t.cpu_use_permille.0 <= t.cpu_use_permille.1);
            assert!(t.memory_use_permille.0 > 0);
            assert!(t.memory_use_permille.0 <= t.memory_use_permille.1);
            assert!(t.resources.cpu_request_m > 0 && t.resources.memory_request_mi > 0);
        }
    }
}
