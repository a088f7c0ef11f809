//! The kubelet's `/metrics/resource` page, rendered from a node's compact state.
//!
//! Byte-for-byte what a kubelet's resource-metrics collector produces through Go's Prometheus
//! registry (`pkg/kubelet/metrics/collectors/resource_metrics.go`, text format 0.0.4):
//! - families sorted by name, each with `# HELP` (stability level prefixed, as
//!   component-base annotates it) and `# TYPE`; families with no series are left out;
//! - series sorted by label values in label-name order (`container`, `namespace`, `pod`);
//! - CPU counters are `usageCoreNanoSeconds / 1e9` as a float64, memory the working set,
//!   swap 0 (no swap configured); values written as Go's `strconv` writes them;
//! - millisecond timestamps on every sample but `container_start_time_seconds` and the
//!   scrape-error gauges;
//! - a container whose current incarnation has no sample yet (it (re)started less than its
//!   sample lag ago) only has its start time, like a kubelet before cAdvisor's first
//!   housekeeping of the new cgroup; a pod likewise has no pod series before its first sample.
//! - 1.29 kubelets also emit the deprecated `scrape_error`; 1.30+ hide it.
//!
//! Nothing is allocated per series: names, labels and numbers go straight into `out`.

use metrics_bridge::gofloat;

use super::state::{ContainerState, NodeState, PodState};

struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
}

const CONTAINER_CPU: Family = Family {
    name: "container_cpu_usage_seconds_total",
    help: "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
    kind: "counter",
};
const CONTAINER_MEMORY: Family = Family {
    name: "container_memory_working_set_bytes",
    help: "[STABLE] Current working set of the container in bytes",
    kind: "gauge",
};
const CONTAINER_START: Family = Family {
    name: "container_start_time_seconds",
    help: "[STABLE] Start time of the container since unix epoch in seconds",
    kind: "gauge",
};
const CONTAINER_SWAP: Family = Family {
    name: "container_swap_usage_bytes",
    help: "[ALPHA] Current amount of the container swap usage in bytes. Reported only on non-windows systems",
    kind: "gauge",
};
const NODE_CPU: Family = Family {
    name: "node_cpu_usage_seconds_total",
    help: "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
    kind: "counter",
};
const NODE_MEMORY: Family = Family {
    name: "node_memory_working_set_bytes",
    help: "[STABLE] Current working set of the node in bytes",
    kind: "gauge",
};
const NODE_SWAP: Family = Family {
    name: "node_swap_usage_bytes",
    help: "[ALPHA] Current swap usage of the node in bytes. Reported only on non-windows systems",
    kind: "gauge",
};
const POD_CPU: Family = Family {
    name: "pod_cpu_usage_seconds_total",
    help: "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
    kind: "counter",
};
const POD_MEMORY: Family = Family {
    name: "pod_memory_working_set_bytes",
    help: "[STABLE] Current working set of the pod in bytes",
    kind: "gauge",
};
const POD_SWAP: Family = Family {
    name: "pod_swap_usage_bytes",
    help: "[ALPHA] Current amount of the pod swap usage in bytes. Reported only on non-windows systems",
    kind: "gauge",
};
const RESOURCE_SCRAPE_ERROR: Family = Family {
    name: "resource_scrape_error",
    help: "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise",
    kind: "gauge",
};
const SCRAPE_ERROR_DEPRECATED: Family = Family {
    name: "scrape_error",
    help: "[ALPHA] (Deprecated since 1.29.0) 1 if there was an error while getting container metrics, 0 otherwise",
    kind: "gauge",
};

/// Appends `node`'s page as scraped at `now_ms`.
pub fn page(node: &NodeState, now_ms: i64, out: &mut Vec<u8>) {
    // Rough size: ~150 bytes per series, 4 series per container, 3 per pod.
    out.reserve(2048 + node.container_order.len() * 600 + node.pod_order.len() * 450);

    let containers = || {
        node.container_order.iter().filter_map(|&(pi, ci)| {
            let pod = node.pods.get(pi as usize)?;
            let c = pod.containers.get(ci as usize)?;
            Some((pod, c))
        })
    };
    let sampled = || {
        containers().filter_map(move |(pod, c)| {
            let ts = c.sample_ms(now_ms);
            c.counter_ns(ts).map(|cpu| (pod, c, ts, cpu))
        })
    };
    let pods = || {
        node.pod_order.iter().filter_map(move |&pi| {
            let pod = node.pods.get(pi as usize)?;
            let ts = now_ms - i64::from(pod.lag_ms);
            (ts > pod.start_ms).then_some((pod, ts))
        })
    };

    let mut f = FamilyWriter::new(out, &CONTAINER_CPU);
    for (pod, c, ts, cpu) in sampled() {
        f.container_series(pod, c, seconds(cpu), Some(ts));
    }
    f.next(&CONTAINER_MEMORY);
    for (pod, c, ts, _) in sampled() {
        f.container_series(pod, c, c.working_set as f64, Some(ts));
    }
    f.next(&CONTAINER_START);
    for (pod, c) in containers() {
        // float64(StartTime.UnixNano()) / 1e9, as the collector computes it.
        let start = (c.start_ms as f64 * 1e6) / 1e9;
        f.container_series(pod, c, start, None);
    }
    f.next(&CONTAINER_SWAP);
    for (pod, c, ts, _) in sampled() {
        f.container_series(pod, c, 0.0, Some(ts));
    }

    let node_ts = node.sample_ms(now_ms);
    f.next(&NODE_CPU);
    f.series(&[], seconds(node.counter_ns(node_ts)), Some(node_ts));
    f.next(&NODE_MEMORY);
    f.series(&[], node.working_set() as f64, Some(node_ts));
    f.next(&NODE_SWAP);
    f.series(&[], 0.0, Some(node_ts));

    f.next(&POD_CPU);
    for (pod, ts) in pods() {
        f.pod_series(pod, seconds(pod.lifetime_ns(ts)), Some(ts));
    }
    f.next(&POD_MEMORY);
    for (pod, ts) in pods() {
        f.pod_series(pod, pod.working_set() as f64, Some(ts));
    }
    f.next(&POD_SWAP);
    for (pod, ts) in pods() {
        f.pod_series(pod, 0.0, Some(ts));
    }

    f.next(&RESOURCE_SCRAPE_ERROR);
    f.series(&[], 0.0, None);
    if node.release.emits_scrape_error {
        f.next(&SCRAPE_ERROR_DEPRECATED);
        f.series(&[], 0.0, None);
    }
}

/// `float64(ns) / float64(time.Second)`, as the collector converts counters.
fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Writes series of one family at a time; the HELP/TYPE header goes out with the first
/// series, so a family without series leaves no trace (as Go's registry drops it).
struct FamilyWriter<'a> {
    out: &'a mut Vec<u8>,
    family: &'static Family,
    header_written: bool,
}

impl<'a> FamilyWriter<'a> {
    fn new(out: &'a mut Vec<u8>, family: &'static Family) -> Self {
        FamilyWriter {
            out,
            family,
            header_written: false,
        }
    }

    fn next(&mut self, family: &'static Family) {
        self.family = family;
        self.header_written = false;
    }

    fn start_series(&mut self) {
        if !self.header_written {
            self.header_written = true;
            let f = self.family;
            for part in [
                "# HELP ",
                f.name,
                " ",
                f.help,
                "\n# TYPE ",
                f.name,
                " ",
                f.kind,
                "\n",
            ] {
                self.out.extend_from_slice(part.as_bytes());
            }
        }
        self.out.extend_from_slice(self.family.name.as_bytes());
    }

    fn container_series(&mut self, pod: &PodState, c: &ContainerState, v: f64, ts: Option<i64>) {
        let labels = [
            ("container", &*c.name),
            ("namespace", pod.namespace()),
            ("pod", &*pod.name),
        ];
        self.series(&labels, v, ts);
    }

    fn pod_series(&mut self, pod: &PodState, v: f64, ts: Option<i64>) {
        self.series(
            &[("namespace", pod.namespace()), ("pod", &*pod.name)],
            v,
            ts,
        );
    }

    /// One sample line; `labels` are already in name order, their values need no escaping
    /// (Kubernetes names are DNS labels and subdomains).
    fn series(&mut self, labels: &[(&str, &str)], v: f64, ts: Option<i64>) {
        self.start_series();
        for (i, (name, value)) in labels.iter().enumerate() {
            self.out.push(if i == 0 { b'{' } else { b',' });
            self.out.extend_from_slice(name.as_bytes());
            self.out.extend_from_slice(b"=\"");
            self.out.extend_from_slice(value.as_bytes());
            self.out.push(b'"');
        }
        if !labels.is_empty() {
            self.out.push(b'}');
        }
        self.finish(v, ts);
    }

    fn finish(&mut self, v: f64, ts: Option<i64>) {
        self.out.push(b' ');
        gofloat::append(self.out, v);
        if let Some(ts) = ts {
            self.out.push(b' ');
            push_int(self.out, ts);
        }
        self.out.push(b'\n');
    }
}

/// Appends a decimal integer without going through `fmt`.
fn push_int(out: &mut Vec<u8>, v: i64) {
    let mut buf = [0u8; 20];
    let mut n = v.unsigned_abs();
    let mut i = buf.len();
    loop {
        i -= 1;
        if let Some(slot) = buf.get_mut(i) {
            *slot = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    if v < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(buf.get(i..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_written_like_strconv() {
        for v in [0i64, 7, -7, 10, 1_624_396_278_302, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            push_int(&mut out, v);
            assert_eq!(String::from_utf8(out).unwrap(), v.to_string());
        }
    }
}
