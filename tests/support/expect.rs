//! What a correct metrics pipeline must report for a kube-sim cluster, and the comparisons the
//! end-to-end tests make against it: `metrics.k8s.io` JSON items (CPU within 1%, memory
//! exact), `kubectl top` columns (with kubectl's own rounding), and protobuf as decoded by
//! `protoc --decode_raw`.
//!
//! The oracle is kube-sim's `/sim/expected` (rates and working sets) joined with its core API
//! (labels, placement, phases, allocatable). Quantities are parsed here, independently of
//! metrics-bridge's own formatting code.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::jiff;
use serde_json::{Value, json};

use super::KubeSim;

/// CPU and memory of one node or container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub cpu_nanos: u64,
    pub memory: u64,
}

#[derive(Debug, Clone)]
pub struct NodeTruth {
    pub usage: Usage,
    pub labels: BTreeMap<String, String>,
    /// `status.allocatable`, which `kubectl top node` divides by: CPU in nanocores, memory in
    /// bytes.
    pub allocatable: Usage,
}

#[derive(Debug, Clone)]
pub struct PodTruth {
    pub node: String,
    pub labels: BTreeMap<String, String>,
    /// By container name.
    pub containers: BTreeMap<String, Usage>,
}

impl PodTruth {
    pub fn total(&self) -> Usage {
        self.containers.values().fold(
            Usage {
                cpu_nanos: 0,
                memory: 0,
            },
            |a, c| Usage {
                cpu_nanos: a.cpu_nanos + c.cpu_nanos,
                memory: a.memory + c.memory,
            },
        )
    }
}

/// `(namespace, name)`.
pub type PodKey = (String, String);

/// The cluster as a correct pipeline must report it.
#[derive(Debug, Clone)]
pub struct Truth {
    pub nodes: BTreeMap<String, NodeTruth>,
    /// Running pods only: the ones the metrics API serves.
    pub pods: BTreeMap<PodKey, PodTruth>,
    /// Pods the API server lists that are not Running, with their phase: never served.
    pub not_running: BTreeMap<PodKey, String>,
}

fn labels_of(meta: &Value) -> BTreeMap<String, String> {
    meta["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v}"))
}

fn nanos_of_cores(cores: &Value) -> u64 {
    let c = cores
        .as_f64()
        .unwrap_or_else(|| panic!("cpu_cores is not a number: {cores}"));
    (c * 1e9).round() as u64
}

impl Truth {
    /// Reads `/sim/expected`, `/api/v1/nodes` and `/api/v1/pods` as the admin.
    pub async fn fetch(sim: &KubeSim) -> Truth {
        let expected = sim.expected().await;
        let nodes_json = sim.admin("GET", "/api/v1/nodes").await.json();
        let pods_json = sim.admin("GET", "/api/v1/pods").await.json();

        let mut node_meta: BTreeMap<String, (BTreeMap<String, String>, Usage)> = BTreeMap::new();
        for n in nodes_json["items"].as_array().into_iter().flatten() {
            let name = str_of(&n["metadata"]["name"], "node name").to_owned();
            let alloc = &n["status"]["allocatable"];
            let allocatable = Usage {
                cpu_nanos: quantity_nanos(str_of(&alloc["cpu"], "allocatable cpu"))
                    .unwrap_or_else(|e| panic!("{name}: {e}")) as u64,
                memory: quantity_integer(str_of(&alloc["memory"], "allocatable memory"))
                    .unwrap_or_else(|e| panic!("{name}: {e}")),
            };
            node_meta.insert(name, (labels_of(&n["metadata"]), allocatable));
        }
        let mut nodes = BTreeMap::new();
        for n in expected["nodes"].as_array().into_iter().flatten() {
            let name = str_of(&n["name"], "expected node name").to_owned();
            // A node deleted through the API keeps its simulated kubelet (and so its place in
            // /sim/expected), but is no longer part of the cluster: never served.
            let Some((labels, allocatable)) = node_meta.get(&name).cloned() else {
                continue;
            };
            nodes.insert(
                name,
                NodeTruth {
                    usage: Usage {
                        cpu_nanos: nanos_of_cores(&n["cpu_cores"]),
                        memory: n["memory_bytes"].as_u64().unwrap_or_default(),
                    },
                    labels,
                    allocatable,
                },
            );
        }

        let mut pod_meta: BTreeMap<PodKey, (String, String, BTreeMap<String, String>)> =
            BTreeMap::new();
        for p in pods_json["items"].as_array().into_iter().flatten() {
            let key = (
                str_of(&p["metadata"]["namespace"], "pod namespace").to_owned(),
                str_of(&p["metadata"]["name"], "pod name").to_owned(),
            );
            let node = p["spec"]["nodeName"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let phase = p["status"]["phase"].as_str().unwrap_or_default().to_owned();
            pod_meta.insert(key, (node, phase, labels_of(&p["metadata"])));
        }
        let mut pods = BTreeMap::new();
        for p in expected["pods"].as_array().into_iter().flatten() {
            let key = (
                str_of(&p["namespace"], "expected pod namespace").to_owned(),
                str_of(&p["name"], "expected pod name").to_owned(),
            );
            // Under churn a pod may be created between the two reads: judged next time.
            let Some((node, _, labels)) = pod_meta.get(&key).cloned() else {
                continue;
            };
            let containers = p["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    (
                        str_of(&c["name"], "container name").to_owned(),
                        Usage {
                            cpu_nanos: nanos_of_cores(&c["cpu_cores"]),
                            memory: c["memory_bytes"].as_u64().unwrap_or_default(),
                        },
                    )
                })
                .collect();
            pods.insert(
                key,
                PodTruth {
                    node,
                    labels,
                    containers,
                },
            );
        }
        let not_running = pod_meta
            .into_iter()
            .filter(|(key, (_, phase, _))| phase != "Running" && !pods.contains_key(key))
            .map(|(key, (_, phase, _))| (key, phase))
            .collect();
        Truth {
            nodes,
            pods,
            not_running,
        }
    }

    /// Namespaces with at least one Running pod.
    pub fn namespaces(&self) -> BTreeSet<String> {
        self.pods.keys().map(|(ns, _)| ns.clone()).collect()
    }

    /// The Running pods matching `keep`, in the API's order (namespace, then name).
    pub fn pods_where(&self, keep: impl Fn(&PodKey, &PodTruth) -> bool) -> Vec<PodKey> {
        self.pods
            .iter()
            .filter(|(k, p)| keep(k, p))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The nodes matching `keep`, by name.
    pub fn nodes_where(&self, keep: impl Fn(&str, &NodeTruth) -> bool) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(n, t)| keep(n, t))
            .map(|(n, _)| n.clone())
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Quantities

/// A Kubernetes quantity (`250m`, `71861u`, `1234567n`, `3`, `60986301Ki`, `1.5Gi`, `2e3`)
/// in billionths of its unit, exactly.
pub fn quantity_nanos(q: &str) -> Result<i128, String> {
    let bad = || format!("{q:?} is not a quantity");
    let (sign, body) = match q.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, q.strip_prefix('+').unwrap_or(q)),
    };
    let split = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, suffix) = body.split_at(split);
    if number.is_empty() || number == "." {
        return Err(bad());
    }
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    let digits: String = format!("{whole}{frac}");
    let mantissa: i128 = digits.parse().map_err(|_| bad())?;
    // value = mantissa × 10^(-frac_len) × multiplier; in nanos: × 10^9.
    let (pow10, pow2): (i32, u32) = match suffix {
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "" => (0, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        s if s.starts_with(['e', 'E']) => (s[1..].parse().map_err(|_| bad())?, 0),
        _ => return Err(bad()),
    };
    let exp = pow10 + 9 - frac.len() as i32;
    let scaled = if exp >= 0 {
        mantissa * 10i128.pow(exp as u32)
    } else {
        let div = 10i128.pow((-exp) as u32);
        let scaled = mantissa * (1i128 << pow2);
        if scaled % div != 0 {
            return Err(format!("{q:?} has a fraction below one nano"));
        }
        return Ok(sign * scaled / div);
    };
    Ok(sign * scaled * (1i128 << pow2))
}

/// A quantity that must be a whole number of units (bytes).
pub fn quantity_integer(q: &str) -> Result<u64, String> {
    let n = quantity_nanos(q)?;
    if n < 0 || n % 1_000_000_000 != 0 {
        return Err(format!("{q:?} is not a whole non-negative number"));
    }
    u64::try_from(n / 1_000_000_000).map_err(|_| format!("{q:?} is out of range"))
}

/// A served CPU quantity in nanocores: never negative.
pub fn cpu_nanos(q: &str) -> Result<u64, String> {
    let n = quantity_nanos(q)?;
    u64::try_from(n).map_err(|_| format!("CPU {q:?} is negative"))
}

/// A Go duration as metrics-server prints `window` (`2s`, `2.008s`, `1m0.5s`, `500ms`).
pub fn go_duration_secs(d: &str) -> Result<f64, String> {
    let bad = || format!("{d:?} is not a Go duration");
    let mut rest = d;
    let mut total = 0.0;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(split);
        let value: f64 = num.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = tail;
    }
    Ok(total)
}

// ---------------------------------------------------------------------------------------------
// Comparisons

/// Why a comparison failed: something not (yet) served, which a poll may wait out, or
/// something served wrong, which must fail the test at once.
#[derive(Debug)]
pub enum Mismatch {
    Missing(String),
    Wrong(String),
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mismatch::Missing(m) => write!(f, "missing: {m}"),
            Mismatch::Wrong(m) => write!(f, "wrong: {m}"),
        }
    }
}

/// Tolerance of the API's CPU figures against `/sim/expected`.
pub const CPU_TOLERANCE: f64 = 0.01;

/// CPU within 1% and memory exact.
pub fn check_usage(what: &str, got: Usage, want: Usage) -> Result<(), Mismatch> {
    let diff = got.cpu_nanos.abs_diff(want.cpu_nanos) as f64;
    if diff > want.cpu_nanos as f64 * CPU_TOLERANCE {
        return Err(Mismatch::Wrong(format!(
            "{what}: CPU {}n, expected {}n within 1%",
            got.cpu_nanos, want.cpu_nanos
        )));
    }
    if got.memory != want.memory {
        return Err(Mismatch::Wrong(format!(
            "{what}: memory {} bytes, expected {}",
            got.memory, want.memory
        )));
    }
    Ok(())
}

fn usage_of(what: &str, usage: &Value) -> Result<Usage, Mismatch> {
    let wrong = |e: String| Mismatch::Wrong(format!("{what}: {e}"));
    let field = |k: &str| {
        usage[k]
            .as_str()
            .ok_or_else(|| Mismatch::Wrong(format!("{what}: usage.{k} missing in {usage}")))
    };
    Ok(Usage {
        cpu_nanos: cpu_nanos(field("cpu")?).map_err(wrong)?,
        memory: quantity_integer(field("memory")?).map_err(wrong)?,
    })
}

/// `timestamp` is the later sample's time (RFC 3339, recent) and `window` a positive Go
/// duration no longer than a few scrapes.
fn check_time(what: &str, item: &Value) -> Result<(), Mismatch> {
    let wrong = |e: String| Mismatch::Wrong(format!("{what}: {e}"));
    let ts = item["timestamp"]
        .as_str()
        .ok_or_else(|| wrong(format!("no timestamp in {item}")))?;
    let ts: jiff::Timestamp = ts
        .parse()
        .map_err(|e| wrong(format!("timestamp {ts:?}: {e}")))?;
    let age = jiff::Timestamp::now().as_second() - ts.as_second();
    // kube-sim samples lag at most 5 s behind a scrape.
    if !(-2..=120).contains(&age) {
        return Err(wrong(format!("timestamp {ts} is {age} s old")));
    }
    let window = item["window"]
        .as_str()
        .ok_or_else(|| wrong(format!("no window in {item}")))?;
    let secs = go_duration_secs(window).map_err(wrong)?;
    if !(secs > 0.0 && secs <= 120.0) {
        return Err(wrong(format!("window {window}")));
    }
    Ok(())
}

fn check_labels(what: &str, item: &Value, want: &BTreeMap<String, String>) -> Result<(), Mismatch> {
    let got = labels_of(&item["metadata"]);
    if &got != want {
        return Err(Mismatch::Wrong(format!(
            "{what}: labels {got:?}, expected {want:?}"
        )));
    }
    Ok(())
}

impl Truth {
    /// One `NodeMetrics` object: kind, name, labels, time fields and usage. A list item
    /// (`api_version` `None`) carries no kind or apiVersion, as in every Kubernetes list.
    pub fn check_node(&self, item: &Value, api_version: Option<&str>) -> Result<String, Mismatch> {
        let name = item["metadata"]["name"]
            .as_str()
            .ok_or_else(|| Mismatch::Wrong(format!("a node item without a name: {item}")))?;
        let want = self
            .nodes
            .get(name)
            .ok_or_else(|| Mismatch::Wrong(format!("{name} is served but not in the cluster")))?;
        check_type(name, item, "NodeMetrics", api_version)?;
        check_labels(name, item, &want.labels)?;
        check_time(name, item)?;
        check_usage(name, usage_of(name, &item["usage"])?, want.usage)?;
        Ok(name.to_owned())
    }

    /// One `PodMetrics` object: kind, names, labels, time fields and every container. A list
    /// item (`api_version` `None`) carries no kind or apiVersion.
    pub fn check_pod(&self, item: &Value, api_version: Option<&str>) -> Result<PodKey, Mismatch> {
        let meta = &item["metadata"];
        let (Some(ns), Some(name)) = (meta["namespace"].as_str(), meta["name"].as_str()) else {
            return Err(Mismatch::Wrong(format!("a pod item without names: {item}")));
        };
        let what = format!("{ns}/{name}");
        let key = (ns.to_owned(), name.to_owned());
        let want = self.pods.get(&key).ok_or_else(|| {
            Mismatch::Wrong(match self.not_running.get(&key) {
                Some(phase) => format!("{what} is served but {phase}"),
                None => format!("{what} is served but not in the cluster"),
            })
        })?;
        check_type(&what, item, "PodMetrics", api_version)?;
        check_labels(&what, item, &want.labels)?;
        check_time(&what, item)?;
        let containers = item["containers"].as_array().cloned().unwrap_or_default();
        let mut seen = BTreeSet::new();
        for c in &containers {
            let cname = c["name"].as_str().unwrap_or_default();
            let cwhat = format!("{what} container {cname}");
            let cwant = want
                .containers
                .get(cname)
                .ok_or_else(|| Mismatch::Wrong(format!("{cwhat} is not in the pod")))?;
            if !seen.insert(cname) {
                return Err(Mismatch::Wrong(format!("{cwhat} appears twice")));
            }
            check_usage(&cwhat, usage_of(&cwhat, &c["usage"])?, *cwant)?;
        }
        if seen.len() != want.containers.len() {
            return Err(Mismatch::Wrong(format!(
                "{what}: containers {seen:?}, expected {:?}",
                want.containers.keys().collect::<Vec<_>>()
            )));
        }
        Ok(key)
    }

    /// A `NodeMetricsList` that must hold exactly `want` (in name order). A node of `want`
    /// that is absent is [`Mismatch::Missing`]; anything else that differs is wrong.
    pub fn check_node_list(
        &self,
        list: &Value,
        api_version: &str,
        want: &[String],
    ) -> Result<(), Mismatch> {
        check_list_kind(list, "NodeMetricsList", api_version)?;
        let mut got = Vec::new();
        for item in list["items"].as_array().into_iter().flatten() {
            got.push(self.check_node(item, None)?);
        }
        compare_names(&got, want)
    }

    /// A `PodMetricsList` that must hold exactly `want` (in namespace, name order).
    pub fn check_pod_list(
        &self,
        list: &Value,
        api_version: &str,
        want: &[PodKey],
    ) -> Result<(), Mismatch> {
        check_list_kind(list, "PodMetricsList", api_version)?;
        let mut got = Vec::new();
        for item in list["items"].as_array().into_iter().flatten() {
            got.push(self.check_pod(item, None)?);
        }
        compare_names(&got, want)
    }
}

/// A single object names its kind and version; a list item names neither.
fn check_type(
    what: &str,
    item: &Value,
    kind: &str,
    api_version: Option<&str>,
) -> Result<(), Mismatch> {
    let (want_kind, want_version) = match api_version {
        Some(v) => (json!(kind), json!(v)),
        None => (Value::Null, Value::Null),
    };
    if item["kind"] != want_kind || item["apiVersion"] != want_version {
        return Err(Mismatch::Wrong(format!(
            "{what}: kind {} apiVersion {}, expected {want_kind} {want_version}",
            item["kind"], item["apiVersion"]
        )));
    }
    Ok(())
}

fn check_list_kind(list: &Value, kind: &str, api_version: &str) -> Result<(), Mismatch> {
    if list["kind"] != kind || list["apiVersion"] != api_version {
        return Err(Mismatch::Wrong(format!(
            "expected a {kind} of {api_version}, got {}",
            truncate(&list.to_string())
        )));
    }
    Ok(())
}

/// `got` must equal `want`, order included; a strict subset of `want` in the right order is
/// only "missing".
fn compare_names<T: Ord + Clone + std::fmt::Debug>(got: &[T], want: &[T]) -> Result<(), Mismatch> {
    if got == want {
        return Ok(());
    }
    let wanted: BTreeSet<&T> = want.iter().collect();
    let extra: Vec<&T> = got.iter().filter(|g| !wanted.contains(g)).collect();
    if !extra.is_empty() {
        return Err(Mismatch::Wrong(format!("unexpected items {extra:?}")));
    }
    let mut sorted = got.to_vec();
    sorted.sort();
    sorted.dedup();
    if sorted.as_slice() != got {
        return Err(Mismatch::Wrong(format!(
            "items out of order or repeated: {got:?}"
        )));
    }
    let have: BTreeSet<&T> = got.iter().collect();
    let missing: Vec<&T> = want.iter().filter(|w| !have.contains(w)).collect();
    Err(Mismatch::Missing(format!("{missing:?}")))
}

pub fn truncate(s: &str) -> String {
    if s.len() <= 2000 {
        return s.to_owned();
    }
    let mut end = 2000;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

// ---------------------------------------------------------------------------------------------
// kubectl top

/// kubectl prints CPU as `Quantity.MilliValue()`, which rounds up. The API's figure may differ
/// from `/sim/expected` by float noise (kube-sim's container rates are whole microcores, never
/// on a whole millicore, so the rounding cannot flip for a container); a sum of `parts` rates
/// may land exactly on a millicore, where either side is right.
pub fn kubectl_millicores(nanos: u64, parts: u64) -> std::ops::RangeInclusive<u64> {
    let slack = 1_000 * parts.max(1);
    let up = |n: u64| n.div_ceil(1_000_000);
    up(nanos.saturating_sub(slack))..=up(nanos + slack)
}

/// kubectl prints memory as `Value() / 2^20`, rounded down.
pub fn kubectl_mebibytes(bytes: u64) -> u64 {
    bytes / (1 << 20)
}

/// kubectl's percentage: `int64(float64(usage.MilliValue()) / float64(allocatable.MilliValue()) * 100)`.
pub fn kubectl_percent(usage_milli: u64, allocatable_milli: u64) -> i64 {
    if allocatable_milli == 0 {
        return 0;
    }
    (usage_milli as f64 / allocatable_milli as f64 * 100.0) as i64
}

/// The cells of every line after the header.
pub fn table_rows(out: &str) -> Vec<Vec<&str>> {
    out.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect()
}

fn printed_milli(cell: &str) -> Result<u64, String> {
    cell.strip_suffix('m')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("CPU cell {cell:?}"))
}

fn printed_mi(cell: &str) -> Result<u64, String> {
    cell.strip_suffix("Mi")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("memory cell {cell:?}"))
}

fn printed_percent(cell: &str) -> Result<i64, String> {
    cell.strip_suffix('%')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("percent cell {cell:?}"))
}

/// Checks one printed CPU/memory pair against the truth, with kubectl's rounding.
fn check_printed(
    what: &str,
    cpu_cell: &str,
    mem_cell: &str,
    want: Usage,
    parts: u64,
) -> Result<u64, Mismatch> {
    let wrong = |e: String| Mismatch::Wrong(format!("{what}: {e}"));
    let milli = printed_milli(cpu_cell).map_err(wrong)?;
    let range = kubectl_millicores(want.cpu_nanos, parts);
    if !range.contains(&milli) {
        return Err(wrong(format!(
            "CPU {milli}m, expected {range:?}m for {}n",
            want.cpu_nanos
        )));
    }
    let mi = printed_mi(mem_cell).map_err(wrong)?;
    if mi != kubectl_mebibytes(want.memory) {
        return Err(wrong(format!(
            "memory {mi}Mi, expected {}Mi for {} bytes",
            kubectl_mebibytes(want.memory),
            want.memory
        )));
    }
    Ok(milli)
}

impl Truth {
    /// `kubectl top node`: every node of `want` has a row, and no other; those in `down` (faulty
    /// kubelets) print `<unknown>`, every other node prints its numbers and percentages of
    /// allocatable exactly as kubectl computes them. A healthy node printing `<unknown>` is
    /// only "missing" (a scrape may have failed on a loaded machine).
    pub fn check_top_nodes(
        &self,
        out: &str,
        want: &[String],
        down: &BTreeSet<String>,
    ) -> Result<(), Mismatch> {
        let mut seen = BTreeSet::new();
        for row in table_rows(out) {
            let [name, cpu, cpu_pct, mem, mem_pct] = row[..] else {
                return Err(Mismatch::Wrong(format!("row {row:?} in\n{out}")));
            };
            let want = self
                .nodes
                .get(name)
                .ok_or_else(|| Mismatch::Wrong(format!("{name} is not a node of the cluster")))?;
            seen.insert(name.to_owned());
            if cpu == "<unknown>" {
                if row.iter().skip(1).any(|c| *c != "<unknown>") {
                    return Err(Mismatch::Wrong(format!("half-unknown row {row:?}")));
                }
                if down.contains(name) {
                    continue;
                }
                return Err(Mismatch::Missing(format!("{name} prints <unknown>")));
            }
            if down.contains(name) {
                return Err(Mismatch::Wrong(format!(
                    "{name}'s kubelet is faulty, yet top prints {row:?}"
                )));
            }
            let milli = check_printed(name, cpu, mem, want.usage, 1)?;
            let wrong = |e: String| Mismatch::Wrong(format!("{name}: {e}"));
            let alloc_milli = want.allocatable.cpu_nanos.div_ceil(1_000_000);
            let want_cpu_pct = kubectl_percent(milli, alloc_milli);
            if printed_percent(cpu_pct).map_err(wrong)? != want_cpu_pct {
                return Err(wrong(format!("CPU {cpu_pct}, expected {want_cpu_pct}%")));
            }
            let want_mem_pct =
                kubectl_percent(want.usage.memory * 1000, want.allocatable.memory * 1000);
            if printed_percent(mem_pct).map_err(wrong)? != want_mem_pct {
                return Err(wrong(format!("memory {mem_pct}, expected {want_mem_pct}%")));
            }
        }
        let all: BTreeSet<String> = want.iter().cloned().collect();
        if seen != all {
            return Err(Mismatch::Wrong(format!(
                "top node listed {seen:?}, expected {all:?}"
            )));
        }
        Ok(())
    }

    /// `kubectl top pod`: exactly the pods in `want`, each row's numbers with kubectl's
    /// rounding. `namespace` is `None` with `-A` (a NAMESPACE column), else the namespace
    /// all rows are in; with `containers`, one row per container (a POD column).
    pub fn check_top_pods(
        &self,
        out: &str,
        namespace: Option<&str>,
        containers: bool,
        want: &[PodKey],
    ) -> Result<(), Mismatch> {
        let mut seen: BTreeSet<PodKey> = BTreeSet::new();
        let mut container_rows: BTreeMap<PodKey, BTreeSet<String>> = BTreeMap::new();
        for row in table_rows(out) {
            let (ns, rest) = match namespace {
                None => match row.split_first() {
                    Some((ns, rest)) => (*ns, rest),
                    None => continue,
                },
                Some(ns) => (ns, &row[..]),
            };
            let bad_row = || Mismatch::Wrong(format!("row {row:?} in\n{out}"));
            let (pod, container, cpu, mem) = match (containers, rest) {
                (true, [pod, container, cpu, mem]) => (*pod, Some(*container), *cpu, *mem),
                (false, [pod, cpu, mem]) => (*pod, None, *cpu, *mem),
                _ => return Err(bad_row()),
            };
            let key = (ns.to_owned(), pod.to_owned());
            let truth = self.pods.get(&key).ok_or_else(|| {
                Mismatch::Wrong(format!("{ns}/{pod} is printed but not a Running pod"))
            })?;
            if !want.contains(&key) {
                return Err(Mismatch::Wrong(format!(
                    "{ns}/{pod} is printed but not selected"
                )));
            }
            match container {
                Some(c) => {
                    let usage = truth.containers.get(c).ok_or_else(|| {
                        Mismatch::Wrong(format!("{ns}/{pod} has no container {c}"))
                    })?;
                    check_printed(&format!("{ns}/{pod}/{c}"), cpu, mem, *usage, 1)?;
                    if !container_rows
                        .entry(key.clone())
                        .or_default()
                        .insert(c.to_owned())
                    {
                        return Err(Mismatch::Wrong(format!("{ns}/{pod}/{c} printed twice")));
                    }
                }
                None => {
                    let parts = truth.containers.len() as u64;
                    check_printed(&format!("{ns}/{pod}"), cpu, mem, truth.total(), parts)?;
                    if seen.contains(&key) {
                        return Err(Mismatch::Wrong(format!("{ns}/{pod} printed twice")));
                    }
                }
            }
            seen.insert(key);
        }
        for (key, names) in &container_rows {
            let all: BTreeSet<String> = self.pods[key].containers.keys().cloned().collect();
            if names != &all {
                return Err(Mismatch::Wrong(format!(
                    "{key:?}: containers {names:?}, expected {all:?}"
                )));
            }
        }
        let missing: Vec<&PodKey> = want.iter().filter(|k| !seen.contains(*k)).collect();
        if !missing.is_empty() {
            return Err(Mismatch::Missing(format!("pods {missing:?} not printed")));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// kubectl get nodemetrics / podmetrics (the server's Table)

/// One Table row's `CPU MEMORY WINDOW` cells, as the server formats them (quantities as in the
/// JSON, the window as a Go duration).
fn table_usage(what: &str, cells: &[&str]) -> Result<Usage, Mismatch> {
    let wrong = |e: String| Mismatch::Wrong(format!("{what}: {e}"));
    let [cpu, memory, window] = cells else {
        return Err(wrong(format!("cells {cells:?}")));
    };
    let secs = go_duration_secs(window).map_err(wrong)?;
    if !(secs > 0.0 && secs <= 120.0) {
        return Err(wrong(format!("window {window}")));
    }
    Ok(Usage {
        cpu_nanos: cpu_nanos(cpu).map_err(wrong)?,
        memory: quantity_integer(memory).map_err(wrong)?,
    })
}

/// The first line of kubectl's table is exactly these column names.
fn check_header(out: &str, want: &[&str]) -> Result<(), Mismatch> {
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    if header != want {
        return Err(Mismatch::Wrong(format!("header {header:?} in\n{out}")));
    }
    Ok(())
}

impl Truth {
    /// `kubectl get nodes.metrics.k8s.io`: header `NAME CPU MEMORY WINDOW`, exactly the nodes
    /// of `want` in order, CPU within 1% and memory exact.
    pub fn check_node_table(&self, out: &str, want: &[String]) -> Result<(), Mismatch> {
        check_header(out, &["NAME", "CPU", "MEMORY", "WINDOW"])?;
        let mut got = Vec::new();
        for row in table_rows(out) {
            let Some((name, cells)) = row.split_first() else {
                continue;
            };
            let truth = self
                .nodes
                .get(*name)
                .ok_or_else(|| Mismatch::Wrong(format!("{name} is not a node of the cluster")))?;
            check_usage(name, table_usage(name, cells)?, truth.usage)?;
            got.push((*name).to_owned());
        }
        compare_names(&got, want)
    }

    /// `kubectl get podmetrics -A`: header `NAMESPACE NAME CPU MEMORY WINDOW`, exactly the pods
    /// of `want` in order, each pod's containers summed.
    pub fn check_pod_table(&self, out: &str, want: &[PodKey]) -> Result<(), Mismatch> {
        check_header(out, &["NAMESPACE", "NAME", "CPU", "MEMORY", "WINDOW"])?;
        let mut got = Vec::new();
        for row in table_rows(out) {
            let [ns, name, cells @ ..] = &row[..] else {
                return Err(Mismatch::Wrong(format!("row {row:?}")));
            };
            let key = ((*ns).to_owned(), (*name).to_owned());
            let what = format!("{ns}/{name}");
            let truth = self
                .pods
                .get(&key)
                .ok_or_else(|| Mismatch::Wrong(format!("{what} is listed but not Running")))?;
            check_usage(&what, table_usage(&what, cells)?, truth.total())?;
            got.push(key);
        }
        compare_names(&got, want)
    }
}

// ---------------------------------------------------------------------------------------------
// protoc --decode_raw

/// One field of a message as `protoc --decode_raw` prints it. protoc knows no schema: it
/// prints a length-delimited field as a message whenever its bytes happen to parse as one
/// (the quantity `"5197u"` reads as field 6, fixed32 `0x75373931`), so a string field may come
/// back as a [`Raw::Message`]; [`Raw::text`] turns it back into the bytes protoc read.
#[derive(Debug, Clone, PartialEq)]
pub enum Raw {
    /// A quoted value (string or bytes), unescaped.
    Str(String),
    /// An unquoted value: a varint in decimal, or a fixed32/fixed64 as `0x` and 8/16 digits.
    Num(String),
    Message(Vec<(u32, Raw)>),
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl Raw {
    /// The fields numbered `n`.
    pub fn all(&self, n: u32) -> Vec<&Raw> {
        match self {
            Raw::Message(fields) => fields
                .iter()
                .filter(|(f, _)| *f == n)
                .map(|(_, v)| v)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The single field numbered `n`.
    pub fn one(&self, n: u32) -> Result<&Raw, String> {
        match self.all(n)[..] {
            [v] => Ok(v),
            ref vs => Err(format!("field {n} occurs {} times in {self:?}", vs.len())),
        }
    }

    /// The field numbered `n` as text: a string (re-encoded if protoc printed it as a message)
    /// or a number's digits.
    pub fn text(&self, n: u32) -> Result<String, String> {
        match self.one(n)? {
            Raw::Str(s) | Raw::Num(s) => Ok(s.clone()),
            m @ Raw::Message(_) => {
                let mut bytes = Vec::new();
                m.encode_body(&mut bytes)?;
                String::from_utf8(bytes)
                    .map_err(|e| format!("field {n} is neither a string nor expected: {m:?}: {e}"))
            }
        }
    }

    /// The wire bytes of a message's fields, as protoc read them (exact for what protoc
    /// mistakes a short ASCII string for: every varint, tag and length is one byte).
    fn encode_body(&self, out: &mut Vec<u8>) -> Result<(), String> {
        let Raw::Message(fields) = self else {
            return Err(format!("not a message: {self:?}"));
        };
        for (n, v) in fields {
            let key = u64::from(*n) << 3;
            match v {
                Raw::Str(s) => {
                    put_varint(out, key | 2);
                    put_varint(out, s.len() as u64);
                    out.extend_from_slice(s.as_bytes());
                }
                Raw::Message(_) => {
                    let mut inner = Vec::new();
                    v.encode_body(&mut inner)?;
                    put_varint(out, key | 2);
                    put_varint(out, inner.len() as u64);
                    out.extend_from_slice(&inner);
                }
                Raw::Num(t) => match t.strip_prefix("0x") {
                    Some(hex) if hex.len() == 8 => {
                        let v = u32::from_str_radix(hex, 16).map_err(|e| format!("{t}: {e}"))?;
                        put_varint(out, key | 5);
                        out.extend_from_slice(&v.to_le_bytes());
                    }
                    Some(hex) if hex.len() == 16 => {
                        let v = u64::from_str_radix(hex, 16).map_err(|e| format!("{t}: {e}"))?;
                        put_varint(out, key | 1);
                        out.extend_from_slice(&v.to_le_bytes());
                    }
                    Some(_) => return Err(format!("cannot re-encode {t}")),
                    None => {
                        let v: u64 = match t.parse::<u64>() {
                            Ok(v) => v,
                            Err(_) => t
                                .parse::<i64>()
                                .map(|v| v as u64)
                                .map_err(|e| format!("{t}: {e}"))?,
                        };
                        put_varint(out, key);
                        put_varint(out, v);
                    }
                },
            }
        }
        Ok(())
    }
}

/// Runs `protoc --decode_raw` on `bytes`: an independent protobuf decoder.
pub fn protoc_decode_raw(bytes: &[u8]) -> String {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new("protoc")
        .arg("--decode_raw")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run protoc (apt-get install protobuf-compiler): {e}"));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("protoc runs");
    let _ = writer.join();
    assert!(
        out.status.success(),
        "protoc --decode_raw failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("protoc prints UTF-8")
}

/// Parses `protoc --decode_raw` output into a tree.
pub fn parse_decode_raw(text: &str) -> Result<Raw, String> {
    let mut stack: Vec<(u32, Vec<(u32, Raw)>)> = vec![(0, Vec::new())];
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let at = |e: &str| format!("line {}: {e}: {line:?}", i + 1);
        if line == "}" {
            let (n, fields) = stack.pop().ok_or_else(|| at("unbalanced"))?;
            let parent = stack.last_mut().ok_or_else(|| at("unbalanced"))?;
            parent.1.push((n, Raw::Message(fields)));
        } else if let Some(n) = line.strip_suffix(" {") {
            let n = n.parse().map_err(|_| at("field number"))?;
            stack.push((n, Vec::new()));
        } else {
            let (n, value) = line.split_once(": ").ok_or_else(|| at("no value"))?;
            let n = n.parse().map_err(|_| at("field number"))?;
            let value = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                Some(quoted) => Raw::Str(unescape_c(quoted).map_err(|e| at(&e))?),
                None => Raw::Num(value.to_owned()),
            };
            let top = stack.last_mut().ok_or_else(|| at("unbalanced"))?;
            top.1.push((n, value));
        }
    }
    match stack.pop() {
        Some((0, fields)) if stack.is_empty() => Ok(Raw::Message(fields)),
        _ => Err("unbalanced braces at the end".into()),
    }
}

/// protoc's C escapes (`\"`, `\\`, `\n`, octal `\303`).
fn unescape_c(s: &str) -> Result<String, String> {
    let mut bytes = Vec::with_capacity(s.len());
    let mut it = s.bytes().peekable();
    while let Some(b) = it.next() {
        if b != b'\\' {
            bytes.push(b);
            continue;
        }
        match it.next() {
            Some(b'n') => bytes.push(b'\n'),
            Some(b'r') => bytes.push(b'\r'),
            Some(b't') => bytes.push(b'\t'),
            Some(d @ b'0'..=b'7') => {
                let mut v = u32::from(d - b'0');
                for _ in 0..2 {
                    match it.peek() {
                        Some(&o @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(o - b'0');
                            it.next();
                        }
                        _ => break,
                    }
                }
                bytes.push(u8::try_from(v).map_err(|_| format!("octal escape {v} in {s:?}"))?);
            }
            Some(c) => bytes.push(c),
            None => return Err(format!("trailing backslash in {s:?}")),
        }
    }
    String::from_utf8(bytes).map_err(|e| format!("{s:?}: {e}"))
}

/// Re-runs `check` every 250 ms while it reports [`Mismatch::Missing`] (state that follows
/// scrapes and watch events), for up to 60 s; returns its value. A [`Mismatch::Wrong`] fails
/// at once: a wrong number is never waited out.
pub async fn until_ok<T>(what: &str, mut check: impl AsyncFnMut() -> Result<T, Mismatch>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match check().await {
            Ok(v) => return v,
            Err(Mismatch::Wrong(e)) => panic!("{what}: {e}"),
            Err(Mismatch::Missing(e)) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{what}: still missing after 60 s: {e}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        }
    }
}
