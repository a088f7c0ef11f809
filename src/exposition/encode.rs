//! Writing `/metrics/resource`: a snapshot of what the store and the cluster state hold,
//! then every family, in chunks.
//!
//! [`Snapshot::take`] copies references, not data: each node's page (an `Arc`), its usage,
//! health and allocatable, and each served pod's usage (an `Arc`), with the label text of
//! every object rendered once into one arena. Taking it holds each lock only for a lookup,
//! and writing it holds none, so a slow scraper (the body is streamed with back-pressure)
//! never holds up a scrape or a watcher.
//!
//! [`write()`] then writes, family by family, through an [`Output`] that cuts the body into
//! chunks of about [`CHUNK`] bytes, gzipped or not, and hands each to a sink; a sink that
//! reports the client gone stops the work. Nothing is allocated per series: kubelet samples
//! are copied from their pages piece by piece, numbers are written as decimal digits.

use std::io::Write as _;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;

use crate::cluster::{ClusterState, PodInfo};
use crate::store::{ContainerUsage, JOIN_BATCH, NodeHealth, PodUsage, Store, Usage};

use super::labels::{self, LabelsAllowlist};
use super::page::{
    BRIDGED, KubeletPage, NODE_LABEL, NOT_OPENMETRICS, ODD_ESCAPE, PLAIN_VALUE, SampleView,
};
use super::text::{self, Format, Kind};

/// The size of the pieces the body is sent in.
pub const CHUNK: usize = 256 << 10;

/// The client went away; the rest of the body is not wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

/// Where the body goes: the uncompressed text is built in `buf`, then sent (gzipped when
/// asked) in chunks.
pub struct Output<'s> {
    buf: Vec<u8>,
    gzip: Option<GzEncoder<Vec<u8>>>,
    sink: &'s mut dyn FnMut(Bytes) -> bool,
    written: u64,
    sent: u64,
}

/// Sizes of a finished body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// The body before compression.
    pub written: u64,
    /// The body as sent.
    pub sent: u64,
}

impl<'s> Output<'s> {
    /// `sink` receives each chunk in order and returns false once the client is gone.
    pub fn new(gzip: bool, sink: &'s mut dyn FnMut(Bytes) -> bool) -> Self {
        Self {
            buf: Vec::with_capacity(CHUNK + CHUNK / 4),
            // Level 1: a large exposition is hundreds of megabytes; the fastest level already
            // shrinks these repetitive lines about tenfold.
            gzip: gzip.then(|| GzEncoder::new(Vec::with_capacity(CHUNK), Compression::fast())),
            sink,
            written: 0,
            sent: 0,
        }
    }

    /// The buffer to append text to; call [`Output::check`] after each series.
    #[inline]
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Sends a chunk if the buffer has grown to one.
    #[inline]
    pub fn check(&mut self) -> Result<(), Gone> {
        if self.buf.len() >= CHUNK {
            self.flush(false)
        } else {
            Ok(())
        }
    }

    fn send(&mut self, chunk: Vec<u8>) -> Result<(), Gone> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.sent += chunk.len() as u64;
        if (self.sink)(Bytes::from(chunk)) {
            Ok(())
        } else {
            Err(Gone)
        }
    }

    fn flush(&mut self, last: bool) -> Result<(), Gone> {
        self.written += self.buf.len() as u64;
        match &mut self.gzip {
            None => {
                let next = if last {
                    Vec::new()
                } else {
                    Vec::with_capacity(CHUNK + CHUNK / 4)
                };
                let chunk = std::mem::replace(&mut self.buf, next);
                self.send(chunk)
            }
            Some(gz) => {
                // Writing into a Vec cannot fail.
                if let Err(e) = gz.write_all(&self.buf) {
                    tracing::error!(error = %e, "gzip failed");
                    return Err(Gone);
                }
                self.buf.clear();
                let ready = gz.get_ref().len() >= CHUNK;
                if ready {
                    let chunk = std::mem::replace(gz.get_mut(), Vec::with_capacity(CHUNK));
                    self.send(chunk)?;
                }
                Ok(())
            }
        }
    }

    /// Sends what is left (and the gzip trailer).
    pub fn finish(mut self) -> Result<Totals, Gone> {
        self.flush(true)?;
        if let Some(gz) = self.gzip.take() {
            match gz.finish() {
                Ok(rest) => self.send(rest)?,
                Err(e) => {
                    tracing::error!(error = %e, "gzip failed");
                    return Err(Gone);
                }
            }
        }
        Ok(Totals {
            written: self.written,
            sent: self.sent,
        })
    }
}

/// One node as the exposition sees it.
struct NodeRow {
    /// `node="NAME"` in the arena.
    labels: Range<usize>,
    /// `,label_…="…"` pairs from the allowlist, in the arena.
    join: Range<usize>,
    page: Option<Arc<KubeletPage>>,
    usage: Option<Usage>,
    health: Option<NodeHealth>,
    allocatable_cpu_millis: u64,
    allocatable_memory_bytes: u64,
}

/// One served pod.
struct PodRow {
    /// `namespace="…",pod="…",node="…"` in the arena.
    labels: Range<usize>,
    join: Range<usize>,
    usage: Arc<PodUsage>,
}

/// Everything one response writes, gathered up front.
pub struct Snapshot {
    nodes: Vec<NodeRow>,
    pods: Vec<PodRow>,
    arena: Vec<u8>,
    pod_labels: bool,
    node_labels: bool,
}

impl Snapshot {
    /// Gathers the cluster's nodes (sorted by name) with their pages, usage, health and
    /// allocatable, and the pods the metrics API serves (Running pods of the cluster state
    /// with usage in the store, in namespace and name order).
    pub fn take(cluster: &ClusterState, store: &Store, allow: &LabelsAllowlist) -> Self {
        let mut arena = Vec::new();
        let mut scratch = labels::Scratch::default();
        let nodes: Vec<NodeRow> = cluster
            .nodes()
            .iter()
            .map(|n| {
                let start = arena.len();
                push_label(&mut arena, "node", &n.name);
                let labels = start..arena.len();
                labels::render(&allow.nodes, &n.labels, &mut scratch, &mut arena);
                NodeRow {
                    join: labels.end..arena.len(),
                    labels,
                    page: store.kubelet_page(&n.name),
                    usage: store.node_usage(&n.name),
                    health: store.node_health(&n.name),
                    allocatable_cpu_millis: n.allocatable_cpu_millis,
                    allocatable_memory_bytes: n.allocatable_memory_bytes,
                }
            })
            .collect();
        let mut listed = Vec::with_capacity(JOIN_BATCH);
        let mut served = Vec::with_capacity(JOIN_BATCH);
        let mut pods = Vec::new();
        // Joined with the store a batch at a time by its ordered walk; the labels are
        // rendered after the store's locks are released.
        let mut flush = |listed: &mut Vec<Arc<PodInfo>>| {
            store.join_sorted(
                listed.as_slice(),
                |p| p.key(),
                |_, s| {
                    served.push(s.map(|s| (Arc::clone(s.node), Arc::clone(s.usage))));
                },
            );
            for (pod, s) in listed.drain(..).zip(served.drain(..)) {
                let Some((node, usage)) = s else { continue };
                let start = arena.len();
                push_label(&mut arena, "namespace", &pod.namespace);
                arena.push(b',');
                push_label(&mut arena, "pod", &pod.name);
                arena.push(b',');
                push_label(&mut arena, "node", &node);
                let labels = start..arena.len();
                labels::render(&allow.pods, &pod.labels, &mut scratch, &mut arena);
                pods.push(PodRow {
                    join: labels.end..arena.len(),
                    labels,
                    usage,
                });
            }
        };
        cluster.for_each_pod(None, |pod| {
            listed.push(Arc::clone(pod));
            if listed.len() >= JOIN_BATCH {
                flush(&mut listed);
            }
        });
        flush(&mut listed);
        Snapshot {
            nodes,
            pods,
            arena,
            pod_labels: !allow.pods.is_nothing(),
            node_labels: !allow.nodes.is_nothing(),
        }
    }

    fn text(&self, range: &Range<usize>) -> &[u8] {
        self.arena.get(range.clone()).unwrap_or_default()
    }

    /// How many nodes and pods it holds.
    pub fn len(&self) -> (usize, usize) {
        (self.nodes.len(), self.pods.len())
    }
}

/// Appends `name="value"` with the value escaped.
fn push_label(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"=\"");
    labels::push_escaped(value, out);
    out.push(b'"');
}

/// A family whose header is written with its first series, so that a family without
/// series leaves no trace (as a Go registry drops it).
struct Family<'o, 's> {
    out: &'o mut Output<'s>,
    format: Format,
    name: &'static str,
    kind: Kind,
    help: &'static str,
    started: bool,
    series: u64,
}

/// A piece of a label set.
enum Part<'a> {
    /// Label text, already escaped, with its own commas.
    Raw(&'a [u8]),
    /// `name="value"`, the value to be escaped.
    Label(&'a str, &'a str),
}

impl<'o, 's> Family<'o, 's> {
    fn new(
        out: &'o mut Output<'s>,
        format: Format,
        name: &'static str,
        kind: Kind,
        help: &'static str,
    ) -> Self {
        Self {
            out,
            format,
            name,
            kind,
            help,
            started: false,
            series: 0,
        }
    }

    fn start(&mut self) {
        if !self.started {
            self.started = true;
            text::family_header(self.out.buf(), self.format, self.name, self.kind, self.help);
        }
    }

    /// One series: `name{parts…} value`.
    fn series(&mut self, parts: &[Part<'_>], value: Value) -> Result<(), Gone> {
        self.start();
        let buf = self.out.buf();
        buf.extend_from_slice(self.name.as_bytes());
        if !parts.is_empty() {
            buf.push(b'{');
            for part in parts {
                match part {
                    Part::Raw(text) => buf.extend_from_slice(text),
                    Part::Label(name, value) => push_label(buf, name, value),
                }
            }
            buf.push(b'}');
        }
        buf.push(b' ');
        value.write(buf);
        buf.push(b'\n');
        self.series += 1;
        self.out.check()
    }
}

/// A sample value, kept as the integer it is until written as an exact decimal.
#[derive(Debug, Clone, Copy)]
enum Value {
    Integer(u64),
    /// Billionths: nanocores as cores, nanoseconds as seconds.
    Nanos(u64),
    /// Thousandths: millicores as cores.
    Millis(u64),
}

impl Value {
    fn write(self, out: &mut Vec<u8>) {
        match self {
            Value::Integer(n) => text::push_u64(out, n),
            Value::Nanos(n) => text::push_scaled(out, n, 9),
            Value::Millis(n) => text::push_scaled(out, n, 3),
        }
    }

    fn nanos(n: impl TryInto<u64>) -> Self {
        Value::Nanos(n.try_into().unwrap_or(0))
    }
}

/// Writes the whole exposition; returns how many series it wrote.
pub fn write(snapshot: &Snapshot, format: Format, out: &mut Output<'_>) -> Result<u64, Gone> {
    let mut series = write_bridged(snapshot, format, out)?;
    series += write_nodes(snapshot, format, out)?;
    series += write_pods(snapshot, format, out)?;
    series += write_health(snapshot, format, out)?;
    text::end(out.buf(), format);
    Ok(series)
}

/// The kubelets' own series, each node's with `node="NAME"` added.
fn write_bridged(s: &Snapshot, format: Format, out: &mut Output<'_>) -> Result<u64, Gone> {
    let om = format.is_openmetrics();
    let mut series = 0;
    for (f, family) in BRIDGED.iter().enumerate() {
        let mut started = false;
        for node in &s.nodes {
            let Some(page) = &node.page else {
                continue;
            };
            if !page.has_family(f) {
                continue;
            }
            if !started {
                started = true;
                text::family_header(out.buf(), format, family.name, family.kind, family.help);
            }
            let node_label = s.text(&node.labels);
            for sample in page.family(f) {
                if om && sample.flags & NOT_OPENMETRICS != 0 {
                    continue;
                }
                write_sample(out.buf(), format, &sample, node_label);
                series += 1;
                out.check()?;
            }
        }
    }
    Ok(series)
}

/// One kubelet sample with the node label added.
#[inline]
fn write_sample(buf: &mut Vec<u8>, format: Format, s: &SampleView<'_>, node_label: &[u8]) {
    buf.extend_from_slice(s.name);
    buf.push(b'{');
    if s.flags & (NODE_LABEL | ODD_ESCAPE) != 0 {
        rewrite_labels(buf, s.labels);
    } else if !s.labels.is_empty() {
        buf.extend_from_slice(s.labels);
        buf.push(b',');
    }
    buf.extend_from_slice(node_label);
    buf.extend_from_slice(b"} ");
    if format.is_openmetrics() && s.flags & PLAIN_VALUE == 0 {
        // Spelled in a way only the text format accepts (`Inf`, `1.`): write the float.
        let value = std::str::from_utf8(s.value)
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN);
        text::push_f64(buf, value);
    } else {
        buf.extend_from_slice(s.value);
    }
    if let Some(ts) = s.timestamp_ms {
        buf.push(b' ');
        text::push_timestamp_ms(buf, format, ts);
    }
    buf.push(b'\n');
}

/// Writes validated raw label pairs (and a trailing comma) with `node` renamed
/// `exported_node` and every value re-escaped to the three escapes both formats share.
fn rewrite_labels(buf: &mut Vec<u8>, raw: &[u8]) {
    for (name, value) in (RawPairs { raw, pos: 0 }) {
        if name == b"node" {
            buf.extend_from_slice(b"exported_node");
        } else {
            buf.extend_from_slice(name);
        }
        buf.extend_from_slice(b"=\"");
        let mut i = 0;
        while let Some(&b) = value.get(i) {
            if b == b'\\' {
                match value.get(i + 1) {
                    Some(&e @ (b'\\' | b'"' | b'n')) => {
                        buf.push(b'\\');
                        buf.push(e);
                        i += 2;
                        continue;
                    }
                    // Prometheus keeps any other backslash as a character: escape it.
                    _ => buf.extend_from_slice(b"\\\\"),
                }
            } else {
                buf.push(b);
            }
            i += 1;
        }
        buf.extend_from_slice(b"\",");
    }
}

/// `(name, raw value)` pairs of a label set the parser validated.
struct RawPairs<'a> {
    raw: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for RawPairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.raw;
        let mut p = self.pos;
        let blank = |c: &u8| matches!(c, b' ' | b'\t' | b',');
        while b.get(p).is_some_and(blank) {
            p += 1;
        }
        let name_start = p;
        while b
            .get(p)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
        {
            p += 1;
        }
        let name = b.get(name_start..p)?;
        while b.get(p).is_some_and(|c| matches!(c, b' ' | b'\t' | b'=')) {
            p += 1;
        }
        if b.get(p) != Some(&b'"') {
            return None;
        }
        p += 1;
        let value_start = p;
        while let Some(&c) = b.get(p) {
            match c {
                b'\\' => p += 2,
                b'"' => break,
                _ => p += 1,
            }
        }
        let value = b.get(value_start..p)?;
        self.pos = p + 1;
        if name.is_empty() {
            return None;
        }
        Some((name, value))
    }
}

const NODE_CPU: &str = "metrics_bridge_node_cpu_usage_cores";
const NODE_MEMORY: &str = "metrics_bridge_node_memory_working_set_bytes";
const NODE_WINDOW: &str = "metrics_bridge_node_usage_window_seconds";
const NODE_TIMESTAMP: &str = "metrics_bridge_node_usage_timestamp_seconds";
const NODE_ALLOC_CPU: &str = "metrics_bridge_node_allocatable_cpu_cores";
const NODE_ALLOC_MEMORY: &str = "metrics_bridge_node_allocatable_memory_bytes";
const NODE_LABELS: &str = "metrics_bridge_node_labels";
const POD_CPU: &str = "metrics_bridge_pod_cpu_usage_cores";
const POD_MEMORY: &str = "metrics_bridge_pod_memory_working_set_bytes";
const CONTAINER_CPU: &str = "metrics_bridge_container_cpu_usage_cores";
const CONTAINER_MEMORY: &str = "metrics_bridge_container_memory_working_set_bytes";
const POD_LABELS: &str = "metrics_bridge_pod_labels";
const SCRAPE_UP: &str = "metrics_bridge_node_scrape_up";
const SCRAPE_LAST_SUCCESS: &str = "metrics_bridge_node_last_successful_scrape_timestamp_seconds";
const SCRAPE_ERROR: &str = "metrics_bridge_node_scrape_error_info";

/// The derived families, for documentation and tests: name, kind, help.
pub const DERIVED: [(&str, Kind, &str); 15] = [
    (
        NODE_CPU,
        Kind::Gauge,
        "CPU usage of the node in cores, as the metrics API serves it (rate over the usage window)",
    ),
    (
        NODE_MEMORY,
        Kind::Gauge,
        "Working set of the node in bytes, as the metrics API serves it",
    ),
    (
        NODE_WINDOW,
        Kind::Gauge,
        "Length of the window the node's CPU usage was computed over, in seconds",
    ),
    (
        NODE_TIMESTAMP,
        Kind::Gauge,
        "When the kubelet took the node sample behind the usage, in seconds since the epoch",
    ),
    (
        NODE_ALLOC_CPU,
        Kind::Gauge,
        "Allocatable CPU of the node in cores (status.allocatable)",
    ),
    (
        NODE_ALLOC_MEMORY,
        Kind::Gauge,
        "Allocatable memory of the node in bytes (status.allocatable)",
    ),
    (
        NODE_LABELS,
        Kind::Gauge,
        "The node's Kubernetes labels named in --metric-labels-allowlist, as label_* labels; always 1",
    ),
    (
        POD_CPU,
        Kind::Gauge,
        "CPU usage of the pod in cores (sum of its containers), as the metrics API serves it",
    ),
    (
        POD_MEMORY,
        Kind::Gauge,
        "Working set of the pod in bytes (sum of its containers), as the metrics API serves it",
    ),
    (
        CONTAINER_CPU,
        Kind::Gauge,
        "CPU usage of the container in cores, as the metrics API serves it",
    ),
    (
        CONTAINER_MEMORY,
        Kind::Gauge,
        "Working set of the container in bytes, as the metrics API serves it",
    ),
    (
        POD_LABELS,
        Kind::Gauge,
        "The pod's Kubernetes labels named in --metric-labels-allowlist, as label_* labels; always 1",
    ),
    (
        SCRAPE_UP,
        Kind::Gauge,
        "1 if the latest scrape of the node's kubelet succeeded, 0 if it failed",
    ),
    (
        SCRAPE_LAST_SUCCESS,
        Kind::Gauge,
        "When the latest successful scrape of the node's kubelet started, in seconds since the epoch",
    ),
    (
        SCRAPE_ERROR,
        Kind::Info,
        "Why the latest scrape of the node's kubelet failed; present only while it fails",
    ),
];

fn help(name: &str) -> &'static str {
    DERIVED
        .iter()
        .find(|(n, _, _)| *n == name)
        .map_or("", |(_, _, h)| h)
}

fn family<'o, 's>(out: &'o mut Output<'s>, format: Format, name: &'static str) -> Family<'o, 's> {
    let kind = DERIVED
        .iter()
        .find(|(n, _, _)| *n == name)
        .map_or(Kind::Gauge, |(_, k, _)| *k);
    Family::new(out, format, name, kind, help(name))
}

/// How a node usage family's value is read from the usage.
type UsageValue = fn(&Usage) -> Value;

fn write_nodes(s: &Snapshot, format: Format, out: &mut Output<'_>) -> Result<u64, Gone> {
    let mut series = 0;
    let usage_families: [(&'static str, UsageValue); 4] = [
        (NODE_CPU, |u| Value::Nanos(u.cpu_nanocores)),
        (NODE_MEMORY, |u| Value::Integer(u.memory_bytes)),
        (NODE_WINDOW, |u| Value::nanos(u.window.as_nanos())),
        (NODE_TIMESTAMP, |u| Value::nanos(u.timestamp_ns)),
    ];
    for (name, value) in usage_families {
        let mut f = family(out, format, name);
        for node in &s.nodes {
            if let Some(u) = &node.usage {
                f.series(
                    &[
                        Part::Raw(s.text(&node.labels)),
                        Part::Raw(s.text(&node.join)),
                    ],
                    value(u),
                )?;
            }
        }
        series += f.series;
    }
    let mut f = family(out, format, NODE_ALLOC_CPU);
    for node in s.nodes.iter().filter(|n| n.allocatable_cpu_millis > 0) {
        f.series(
            &[
                Part::Raw(s.text(&node.labels)),
                Part::Raw(s.text(&node.join)),
            ],
            Value::Millis(node.allocatable_cpu_millis),
        )?;
    }
    series += f.series;
    let mut f = family(out, format, NODE_ALLOC_MEMORY);
    for node in s.nodes.iter().filter(|n| n.allocatable_memory_bytes > 0) {
        f.series(
            &[
                Part::Raw(s.text(&node.labels)),
                Part::Raw(s.text(&node.join)),
            ],
            Value::Integer(node.allocatable_memory_bytes),
        )?;
    }
    series += f.series;
    if s.node_labels {
        let mut f = family(out, format, NODE_LABELS);
        for node in &s.nodes {
            f.series(
                &[
                    Part::Raw(s.text(&node.labels)),
                    Part::Raw(s.text(&node.join)),
                ],
                Value::Integer(1),
            )?;
        }
        series += f.series;
    }
    Ok(series)
}

/// How a pod usage family's value is read from the pod's usage.
type PodValue = fn(&PodUsage) -> Value;
/// How a container usage family's value is read from the container's usage.
type ContainerValue = fn(&ContainerUsage) -> Value;

fn write_pods(s: &Snapshot, format: Format, out: &mut Output<'_>) -> Result<u64, Gone> {
    let mut series = 0;
    // A pod's usage is the sum of its containers', as `kubectl top pod` shows it.
    let pod_families: [(&'static str, PodValue); 2] = [
        (POD_CPU, |u| {
            Value::Nanos(u.containers.iter().map(|c| c.cpu_nanocores).sum())
        }),
        (POD_MEMORY, |u| {
            Value::Integer(u.containers.iter().map(|c| c.memory_bytes).sum())
        }),
    ];
    for (name, value) in pod_families {
        let mut f = family(out, format, name);
        for pod in &s.pods {
            f.series(
                &[Part::Raw(s.text(&pod.labels)), Part::Raw(s.text(&pod.join))],
                value(&pod.usage),
            )?;
        }
        series += f.series;
    }
    let container_families: [(&'static str, ContainerValue); 2] = [
        (CONTAINER_CPU, |c| Value::Nanos(c.cpu_nanocores)),
        (CONTAINER_MEMORY, |c| Value::Integer(c.memory_bytes)),
    ];
    for (name, value) in container_families {
        let mut f = family(out, format, name);
        for pod in &s.pods {
            for c in pod.usage.containers.iter() {
                f.series(
                    &[
                        Part::Label("container", &c.name),
                        Part::Raw(b","),
                        Part::Raw(s.text(&pod.labels)),
                        Part::Raw(s.text(&pod.join)),
                    ],
                    value(c),
                )?;
            }
        }
        series += f.series;
    }
    if s.pod_labels {
        let mut f = family(out, format, POD_LABELS);
        for pod in &s.pods {
            f.series(
                &[Part::Raw(s.text(&pod.labels)), Part::Raw(s.text(&pod.join))],
                Value::Integer(1),
            )?;
        }
        series += f.series;
    }
    Ok(series)
}

fn write_health(s: &Snapshot, format: Format, out: &mut Output<'_>) -> Result<u64, Gone> {
    let mut series = 0;
    let mut f = family(out, format, SCRAPE_UP);
    for node in &s.nodes {
        if let Some(h) = &node.health {
            f.series(
                &[Part::Raw(s.text(&node.labels))],
                Value::Integer(u64::from(h.up)),
            )?;
        }
    }
    series += f.series;
    let mut f = family(out, format, SCRAPE_LAST_SUCCESS);
    for node in &s.nodes {
        if let Some(h) = node.health.filter(|h| h.last_success_ns > 0) {
            f.series(
                &[Part::Raw(s.text(&node.labels))],
                Value::nanos(h.last_success_ns),
            )?;
        }
    }
    series += f.series;
    let mut f = family(out, format, SCRAPE_ERROR);
    for node in &s.nodes {
        if let Some(reason) = node.health.and_then(|h| h.error) {
            f.series(
                &[
                    Part::Raw(s.text(&node.labels)),
                    Part::Raw(b","),
                    Part::Label("reason", reason),
                ],
                Value::Integer(1),
            )?;
        }
    }
    series += f.series;
    Ok(series)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{LabelSet, NodeInfo, PodInfo};
    use std::time::Duration;

    /// 2021-10-03T09:36:49Z, in milliseconds.
    const T0_MS: i64 = 1_633_253_809_000;

    /// A kubelet page for node `n1` with pod ns/p1 (container `app`) at `t_ms`.
    fn kubelet_page(t_ms: i64, node_cpu: &str, app_cpu: &str) -> String {
        format!(
            "# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds\n\
             # TYPE container_cpu_usage_seconds_total counter\n\
             container_cpu_usage_seconds_total{{container=\"app\",namespace=\"ns\",pod=\"p1\"}} {app_cpu} {t_ms}\n\
             # TYPE container_memory_working_set_bytes gauge\n\
             container_memory_working_set_bytes{{container=\"app\",namespace=\"ns\",pod=\"p1\"}} 1000 {t_ms}\n\
             # TYPE container_start_time_seconds gauge\n\
             container_start_time_seconds{{container=\"app\",namespace=\"ns\",pod=\"p1\"}} 1.6332e+09 {t_ms}\n\
             # TYPE node_cpu_usage_seconds_total counter\n\
             node_cpu_usage_seconds_total {node_cpu} {t_ms}\n\
             # TYPE node_memory_working_set_bytes gauge\n\
             node_memory_working_set_bytes 5000 {t_ms}\n\
             # TYPE scrape_error gauge\n\
             scrape_error 0\n\
             # TYPE go_goroutines gauge\n\
             go_goroutines 12\n"
        )
    }

    fn ingest(store: &Store, node: &str, text: String, t_ms: i64) {
        let body = Bytes::from(text);
        let (page, _) = crate::decode::decode_with_stats(&body, t_ms * 1_000_000).unwrap();
        let raw = Arc::new(KubeletPage::index(body.clone()).unwrap());
        store.ingest_page(node, &page, raw);
        store.record_scrape_success(node, t_ms * 1_000_000);
    }

    /// Node n1 (4 cores, 8 GiB, zone z1) and pod ns/p1 (app=web), scraped twice 10 s apart:
    /// the node used 1 core, the container half a core.
    fn cluster() -> (ClusterState, Store) {
        let cluster = ClusterState::new();
        cluster.upsert_node(NodeInfo {
            name: "n1".into(),
            labels: LabelSet::from_pairs([("topology.kubernetes.io/zone", "z1")]),
            addresses: Box::new([]),
            kubelet_port: 0,
            metrics_path: None,
            allocatable_cpu_millis: 4_000,
            allocatable_memory_bytes: 8 << 30,
        });
        cluster.upsert_pod(PodInfo {
            namespace: "ns".into(),
            name: "p1".into(),
            labels: LabelSet::from_pairs([("app", "web"), ("team", "a\"b")]),
        });
        let store = Store::new(Duration::from_secs(10));
        ingest(&store, "n1", kubelet_page(T0_MS, "100", "10"), T0_MS);
        let t1 = T0_MS + 10_000;
        ingest(&store, "n1", kubelet_page(t1, "110", "15"), t1);
        (cluster, store)
    }

    fn render(snapshot: &Snapshot, format: Format, gzip: bool) -> (String, u64, Totals) {
        let mut chunks = Vec::new();
        let mut sink = |chunk: Bytes| {
            chunks.push(chunk);
            true
        };
        let mut out = Output::new(gzip, &mut sink);
        let series = write(snapshot, format, &mut out).unwrap();
        let totals = out.finish().unwrap();
        let body: Vec<u8> = chunks.concat();
        let text = if gzip {
            let mut plain = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut plain)
                .unwrap();
            plain
        } else {
            body
        };
        (String::from_utf8(text).unwrap(), series, totals)
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn text_format_bridges_kubelet_series_and_writes_usage() {
        let (cluster, store) = cluster();
        let allow =
            LabelsAllowlist::parse("pods=[app,team],nodes=[topology.kubernetes.io/zone]").unwrap();
        let snap = Snapshot::take(&cluster, &store, &allow);
        let (text, series, totals) = render(&snap, Format::Text, false);
        let l = lines(&text);
        for want in [
            "# HELP container_cpu_usage_seconds_total Cumulative cpu time consumed by the container in core-seconds",
            "# TYPE container_cpu_usage_seconds_total counter",
            "container_cpu_usage_seconds_total{container=\"app\",namespace=\"ns\",pod=\"p1\",node=\"n1\"} 15 1633253819000",
            "node_cpu_usage_seconds_total{node=\"n1\"} 110 1633253819000",
            "scrape_error{node=\"n1\"} 0",
            "metrics_bridge_node_cpu_usage_cores{node=\"n1\",label_topology_kubernetes_io_zone=\"z1\"} 1",
            "metrics_bridge_node_memory_working_set_bytes{node=\"n1\",label_topology_kubernetes_io_zone=\"z1\"} 5000",
            "metrics_bridge_node_usage_window_seconds{node=\"n1\",label_topology_kubernetes_io_zone=\"z1\"} 10",
            "metrics_bridge_node_usage_timestamp_seconds{node=\"n1\",label_topology_kubernetes_io_zone=\"z1\"} 1633253819",
            "metrics_bridge_node_allocatable_cpu_cores{node=\"n1\",label_topology_kubernetes_io_zone=\"z1\"} 4",
            "metrics_bridge_node_allocatable_memory_bytes{node=\"n1\",label_topology_kubernetes_io_zone=\"z1\"} 8589934592",
            "metrics_bridge_node_labels{node=\"n1\",label_topology_kubernetes_io_zone=\"z1\"} 1",
            "metrics_bridge_pod_cpu_usage_cores{namespace=\"ns\",pod=\"p1\",node=\"n1\",label_app=\"web\",label_team=\"a\\\"b\"} 0.5",
            "metrics_bridge_pod_memory_working_set_bytes{namespace=\"ns\",pod=\"p1\",node=\"n1\",label_app=\"web\",label_team=\"a\\\"b\"} 1000",
            "metrics_bridge_container_cpu_usage_cores{container=\"app\",namespace=\"ns\",pod=\"p1\",node=\"n1\",label_app=\"web\",label_team=\"a\\\"b\"} 0.5",
            "metrics_bridge_pod_labels{namespace=\"ns\",pod=\"p1\",node=\"n1\",label_app=\"web\",label_team=\"a\\\"b\"} 1",
            "metrics_bridge_node_scrape_up{node=\"n1\"} 1",
            "metrics_bridge_node_last_successful_scrape_timestamp_seconds{node=\"n1\"} 1633253819",
        ] {
            assert!(l.contains(&want), "missing {want:?} in\n{text}");
        }
        // Families not bridged stay out; a healthy node has no error series.
        assert!(!text.contains("go_goroutines"));
        assert!(!text.contains("scrape_error_info"));
        assert!(!text.contains("# EOF"));
        // One header per family, and the series count is the sample lines.
        let types: Vec<&str> = l
            .iter()
            .filter(|x| x.starts_with("# TYPE "))
            .copied()
            .collect();
        let mut unique = types.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(types.len(), unique.len());
        let samples = l.iter().filter(|x| !x.starts_with('#')).count() as u64;
        assert_eq!(series, samples);
        assert_eq!(totals.written, text.len() as u64);
        assert_eq!(totals.sent, totals.written);
    }

    #[test]
    fn openmetrics_names_counter_families_without_total_and_ends_with_eof() {
        let (cluster, store) = cluster();
        let snap = Snapshot::take(&cluster, &store, &LabelsAllowlist::default());
        let (text, _, _) = render(&snap, Format::OpenMetrics { v1: true }, false);
        let l = lines(&text);
        assert!(l.contains(&"# TYPE container_cpu_usage_seconds counter"));
        assert!(l.contains(&"# TYPE node_cpu_usage_seconds counter"));
        assert!(l.contains(
            &"container_cpu_usage_seconds_total{container=\"app\",namespace=\"ns\",pod=\"p1\",node=\"n1\"} 15 1633253819"
        ));
        // Without an allowlist, no label_* and no *_labels families.
        assert!(l.contains(
            &"metrics_bridge_pod_cpu_usage_cores{namespace=\"ns\",pod=\"p1\",node=\"n1\"} 0.5"
        ));
        assert!(!text.contains("label_"));
        assert!(!text.contains("_labels{"));
        assert_eq!(l.last(), Some(&"# EOF"));
        assert_eq!(text.matches("# EOF").count(), 1);
    }

    #[test]
    fn failures_show_as_health_and_gone_pods_leave() {
        let (cluster, store) = cluster();
        store.scrape_failed("n1");
        store.record_scrape_failure("n1", "timeout");
        cluster.remove_pod("ns", "p1");
        let snap = Snapshot::take(&cluster, &store, &LabelsAllowlist::default());
        let (text, _, _) = render(&snap, Format::OpenMetrics { v1: true }, false);
        let l = lines(&text);
        assert!(l.contains(&"metrics_bridge_node_scrape_up{node=\"n1\"} 0"));
        assert!(l.contains(&"# TYPE metrics_bridge_node_scrape_error info"));
        assert!(
            l.contains(&"metrics_bridge_node_scrape_error_info{node=\"n1\",reason=\"timeout\"} 1")
        );
        // The last success is still reported; the failed node's page and usage are gone.
        assert!(l.contains(
            &"metrics_bridge_node_last_successful_scrape_timestamp_seconds{node=\"n1\"} 1633253819"
        ));
        assert!(!text.contains("container_cpu_usage_seconds_total"));
        assert!(!text.contains("metrics_bridge_node_cpu_usage_cores"));
        assert!(!text.contains("pod=\"p1\""));
        // Allocatable comes from the cluster state, so it stays.
        assert!(l.contains(&"metrics_bridge_node_allocatable_cpu_cores{node=\"n1\"} 4"));

        // A node removed from the cluster leaves entirely.
        cluster.remove_node("n1");
        store.remove_node("n1");
        let snap = Snapshot::take(&cluster, &store, &LabelsAllowlist::default());
        let (text, series, _) = render(&snap, Format::Text, false);
        assert_eq!((text.as_str(), series), ("", 0));
    }

    #[test]
    fn gzip_is_the_same_text_and_a_gone_client_stops_the_work() {
        let (cluster, store) = cluster();
        let snap = Snapshot::take(&cluster, &store, &LabelsAllowlist::default());
        let (plain, _, _) = render(&snap, Format::Text, false);
        let (unzipped, _, totals) = render(&snap, Format::Text, true);
        assert_eq!(plain, unzipped);
        assert_eq!(totals.written, plain.len() as u64);
        assert!(totals.sent > 0 && totals.sent != totals.written);

        let mut refused = 0;
        let mut sink = |_: Bytes| {
            refused += 1;
            false
        };
        let mut out = Output::new(false, &mut sink);
        write(&snap, Format::Text, &mut out).unwrap();
        assert_eq!(out.finish(), Err(Gone));
        assert_eq!(refused, 1);
    }

    #[test]
    fn a_kubelet_node_label_becomes_exported_node() {
        let cluster = ClusterState::new();
        cluster.upsert_node(NodeInfo {
            name: "n1".into(),
            labels: LabelSet::default(),
            addresses: Box::new([]),
            kubelet_port: 0,
            metrics_path: None,
            allocatable_cpu_millis: 0,
            allocatable_memory_bytes: 0,
        });
        let store = Store::new(Duration::from_secs(10));
        let text = format!(
            "# TYPE node_memory_working_set_bytes gauge\n\
             node_memory_working_set_bytes{{node=\"other\",path=\"a\\\\b\\q\"}} 5 {T0_MS}\n\
             # TYPE node_cpu_usage_seconds_total counter\n\
             node_cpu_usage_seconds_total 1 {T0_MS}\n"
        );
        ingest(&store, "n1", text, T0_MS);
        let snap = Snapshot::take(&cluster, &store, &LabelsAllowlist::default());
        let (text, _, _) = render(&snap, Format::Text, false);
        assert!(
            text.contains(
                "node_memory_working_set_bytes{exported_node=\"other\",path=\"a\\\\b\\\\q\",node=\"n1\"} 5 1633253809000\n"
            ),
            "{text}"
        );
        // Zero allocatable (unknown) writes no series.
        assert!(!text.contains("allocatable"));
    }
}
