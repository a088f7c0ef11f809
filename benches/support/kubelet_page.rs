//! A deterministic kubelet `/metrics/resource` page in the current format, for the parser
//! benchmark and the decode tests: `[STABLE]` HELP texts, families in the order a kubelet's
//! registry writes them (sorted by name, series sorted by label values), millisecond
//! timestamps except on `container_start_time_seconds`, swap series, and values formatted as
//! the kubelet's Go client formats them (`gofloat`).

use std::fmt::Write as _;

use metrics_bridge::gofloat::GoFloat;

/// What [`kubelet_page`] generated, with the counts a decoder should find.
pub struct SyntheticPage {
    pub text: String,
    /// Sample lines on the page.
    pub samples: usize,
    pub pods: usize,
    pub containers: usize,
}

const CONTAINER_NAMES: [&str; 4] = ["app", "istio-proxy", "log-shipper", "metrics-agent"];
const APPS: [&str; 8] = [
    "checkout",
    "payments",
    "frontend",
    "catalog",
    "search",
    "recommender",
    "cart",
    "ledger",
];
const HASH_CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A page of `pods` pods with `containers_per_pod` containers each (at most 4), spread over
/// ten namespaces. The same arguments always give the same page.
pub fn kubelet_page(pods: usize, containers_per_pod: usize) -> SyntheticPage {
    let mut rng = Rng(0x5DEE_CE66_D1CE_4E5B);
    let mut pod_list = Vec::with_capacity(pods);
    for i in 0..pods {
        let ns = format!("team-{}", i % 10);
        let app = APPS[i % APPS.len()];
        let pod = format!("{app}-{}-{}", rng.hash(10), rng.hash(5));
        pod_list.push((ns, pod));
    }
    let per_pod = containers_per_pod.min(CONTAINER_NAMES.len());
    // (container, namespace, pod): the order of the kubelet's label names.
    let mut series: Vec<(&str, &str, &str)> = Vec::with_capacity(pods * per_pod);
    for (ns, pod) in &pod_list {
        for c in &CONTAINER_NAMES[..per_pod] {
            series.push((c, ns, pod));
        }
    }
    series.sort_unstable();
    let mut pods_sorted: Vec<(&str, &str)> = pod_list
        .iter()
        .map(|(n, p)| (n.as_str(), p.as_str()))
        .collect();
    pods_sorted.sort_unstable();

    let mut page = Writer {
        out: String::with_capacity(series.len() * 700 + 4096),
        samples: 0,
    };
    // (family, type, help, value in base units, timestamp jitter in ms or None for none).
    type Gen = fn(&mut Rng) -> f64;
    let container_families: [(&str, &str, &str, Gen, Option<u64>); 5] = [
        (
            "container_cpu_usage_seconds_total",
            "counter",
            "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
            |r| r.below(5_000_000_000_000) as f64 / 1e9,
            Some(15_000),
        ),
        (
            "container_memory_working_set_bytes",
            "gauge",
            "[STABLE] Current working set of the container in bytes",
            |r| (4096 + r.below(4_000_000_000)) as f64,
            Some(15_000),
        ),
        (
            "container_start_time_seconds",
            "gauge",
            "[STABLE] Start time of the container since unix epoch in seconds",
            |r| ((TS_BASE - 86_400_000) * 1_000_000 + r.below(86_400_000_000_000)) as f64 / 1e9,
            None,
        ),
        (
            "container_swap_limit_bytes",
            "gauge",
            "[ALPHA] Current amount of the container swap limit in bytes. Reported only on non-windows systems",
            |_| 0.0,
            Some(1),
        ),
        (
            "container_swap_usage_bytes",
            "gauge",
            "[ALPHA] Current amount of the container swap usage in bytes. Reported only on non-windows systems",
            |r| {
                if r.below(4) == 0 {
                    r.below(100_000_000) as f64
                } else {
                    0.0
                }
            },
            Some(1),
        ),
    ];
    for (name, kind, help, value, jitter) in container_families {
        page.family(name, kind, help);
        for &(c, ns, pod) in &series {
            let labels = format!("container=\"{c}\",namespace=\"{ns}\",pod=\"{pod}\"");
            let v = value(&mut rng);
            let ts = jitter.map(|j| TS_BASE + rng.below(j));
            page.sample(name, &labels, v, ts);
        }
    }
    for (name, kind, help, v) in [
        (
            "node_cpu_usage_seconds_total",
            "counter",
            "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
            1_234_567.123_456_789,
        ),
        (
            "node_memory_working_set_bytes",
            "gauge",
            "[STABLE] Current working set of the node in bytes",
            98_765_432_100.0,
        ),
        (
            "node_swap_usage_bytes",
            "gauge",
            "[ALPHA] Current swap usage of the node in bytes. Reported only on non-windows systems",
            0.0,
        ),
    ] {
        page.family(name, kind, help);
        page.sample(name, "", v, Some(TS_BASE + 42));
    }
    for (name, kind, help) in [
        (
            "pod_cpu_usage_seconds_total",
            "counter",
            "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
        ),
        (
            "pod_memory_working_set_bytes",
            "gauge",
            "[STABLE] Current working set of the pod in bytes",
        ),
        (
            "pod_swap_usage_bytes",
            "gauge",
            "[ALPHA] Current amount of the pod swap usage in bytes. Reported only on non-windows systems",
        ),
    ] {
        page.family(name, kind, help);
        for (ns, pod) in &pods_sorted {
            let v = rng.below(1_000_000_000_000) as f64 / 1e6;
            page.sample(
                name,
                &format!("namespace=\"{ns}\",pod=\"{pod}\""),
                v,
                Some(TS_BASE + 7),
            );
        }
    }
    for name in ["resource_scrape_error", "scrape_error"] {
        let stability = if name == "scrape_error" {
            "ALPHA"
        } else {
            "STABLE"
        };
        let help = format!(
            "[{stability}] 1 if there was an error while getting container metrics, 0 otherwise"
        );
        page.family(name, "gauge", &help);
        page.sample(name, "", 0.0, None);
    }

    SyntheticPage {
        text: page.out,
        samples: page.samples,
        pods,
        containers: series.len(),
    }
}

/// 2026-01-01T00:00:00Z in milliseconds.
const TS_BASE: u64 = 1_767_225_600_000;

struct Writer {
    out: String,
    samples: usize,
}

impl Writer {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: f64, ts: Option<u64>) {
        self.out.push_str(name);
        if !labels.is_empty() {
            let _ = write!(self.out, "{{{labels}}}");
        }
        let _ = write!(self.out, " {}", GoFloat(value));
        if let Some(ts) = ts {
            let _ = write!(self.out, " {ts}");
        }
        self.out.push('\n');
        self.samples += 1;
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn hash(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| char::from(HASH_CHARS[self.below(HASH_CHARS.len() as u64) as usize]))
            .collect()
    }
}
