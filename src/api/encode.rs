//! NodeMetrics and PodMetrics, one by one and as lists, written straight into a buffer as
//! JSON (exactly what metrics-server's Go encoder writes), protobuf (what its gogo-generated
//! code writes, inside the `k8s\0` + `runtime.Unknown` envelope), `meta.k8s.io` Tables and
//! `PartialObjectMetadata`.
//!
//! No intermediate trees: each item is written from the cluster's metadata and the store's
//! precomputed usage.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use super::quantity;
use super::wire::{
    ENVELOPE_TAIL, Message, Sink, envelope_head, json_key, json_str, rfc3339, unix_seconds,
    varint_len,
};
use crate::cluster::{LabelSet, NodeInfo, PodInfo};
use crate::duration;
use crate::store::{PodUsage, PodValues, Usage};

/// The served versions of `metrics.k8s.io`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiVersion {
    V1beta1,
    V1,
}

impl ApiVersion {
    /// In preference order: v1beta1 is what every shipped client asks for.
    pub const ALL: [ApiVersion; 2] = [ApiVersion::V1beta1, ApiVersion::V1];

    pub fn version(self) -> &'static str {
        match self {
            ApiVersion::V1beta1 => "v1beta1",
            ApiVersion::V1 => "v1",
        }
    }

    pub fn group_version(self) -> &'static str {
        match self {
            ApiVersion::V1beta1 => "metrics.k8s.io/v1beta1",
            ApiVersion::V1 => "metrics.k8s.io/v1",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.version() == s)
    }
}

/// Request-wide facts every item shares.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub version: ApiVersion,
    /// metrics-server sets each object's `creationTimestamp` to the time of the request.
    pub now_secs: i64,
    /// `now_secs` as a quoted RFC 3339 JSON string, formatted once.
    created_json: Vec<u8>,
    /// The last timestamp and window written: items of one node share them, so most are
    /// copied rather than formatted again.
    last_timestamp: Cell<Formatted<i64>>,
    last_window: Cell<Formatted<Duration>>,
}

/// A value and its rendering.
#[derive(Debug, Clone, Copy)]
struct Formatted<T> {
    value: Option<T>,
    len: usize,
    text: [u8; 32],
}

impl<T: Copy + PartialEq> Formatted<T> {
    fn empty() -> Cell<Self> {
        Cell::new(Self {
            value: None,
            len: 0,
            text: [0; 32],
        })
    }

    /// Appends the rendering of `value`, reusing the cached one when it is the same value.
    fn write(cell: &Cell<Self>, value: T, out: &mut Vec<u8>, render: impl FnOnce(&mut Vec<u8>)) {
        let cached = cell.get();
        if cached.value == Some(value) {
            out.extend_from_slice(&cached.text[..cached.len]);
            return;
        }
        let start = out.len();
        render(out);
        let written = &out[start..];
        let mut next = Self {
            value: Some(value),
            len: written.len().min(32),
            text: [0; 32],
        };
        next.text[..next.len].copy_from_slice(&written[..next.len]);
        if written.len() <= 32 {
            cell.set(next);
        }
    }
}

impl Ctx {
    pub fn new(version: ApiVersion, now_secs: i64) -> Self {
        let mut created_json = Vec::with_capacity(24);
        created_json.push(b'"');
        rfc3339(&mut created_json, now_secs);
        created_json.push(b'"');
        Self {
            version,
            now_secs,
            created_json,
            last_timestamp: Formatted::empty(),
            last_window: Formatted::empty(),
        }
    }
}

/// The metadata an item is served with.
pub struct Meta<'a> {
    pub name: &'a str,
    pub namespace: Option<&'a str>,
    pub labels: &'a LabelSet,
}

/// One served object: a node or a pod with its usage.
pub trait Item {
    const KIND: &'static str;
    const LIST_KIND: &'static str;
    fn meta(&self) -> Meta<'_>;
    /// The usage's timestamp (ns since the epoch) and window.
    fn time(&self) -> (i64, Duration);
    fn timestamp_ns(&self) -> i64 {
        self.time().0
    }
    fn window(&self) -> Duration {
        self.time().1
    }
    /// The JSON member after `window`: `"usage":{…}` or `"containers":[…]`.
    fn json_usage(&self, out: &mut Vec<u8>);
    /// Protobuf field 4: the usage map entries or the container messages.
    fn proto_usage<S: Sink>(&self, s: &mut S);
    /// Total CPU nanocores and memory bytes (a pod's sum over its containers).
    fn totals(&self) -> (u128, u128);
}

/// A node and its usage.
pub type NodeItem = (Arc<NodeInfo>, Usage);
/// A pod and its usage.
pub type PodItem = (Arc<PodInfo>, Arc<PodUsage>);

fn json_resources(out: &mut Vec<u8>, cpu: u64, memory: u64) {
    out.extend_from_slice(b"{\"cpu\":\"");
    out.extend_from_slice(quantity::cpu(cpu).as_bytes());
    out.extend_from_slice(b"\",\"memory\":\"");
    out.extend_from_slice(quantity::memory(memory).as_bytes());
    out.extend_from_slice(b"\"}");
}

/// A `map<string, Quantity>` entry: `{1: key, 2: Quantity{1: value}}`.
struct QuantityEntry<'a> {
    key: &'a str,
    value: &'a [u8],
}

impl Message for QuantityEntry<'_> {
    fn encode<S: Sink>(&self, s: &mut S) {
        s.string(1, self.key);
        s.message(2, &QuantityMsg(self.value));
    }
}

struct QuantityMsg<'a>(&'a [u8]);

impl Message for QuantityMsg<'_> {
    fn encode<S: Sink>(&self, s: &mut S) {
        s.bytes_field(1, self.0);
    }
}

/// CPU and memory quantities, formatted once and written as `usage` map entries.
struct Resources {
    cpu: quantity::QStr,
    memory: quantity::QStr,
}

impl Resources {
    fn new(cpu: u64, memory: u64) -> Self {
        Self {
            cpu: quantity::cpu(cpu),
            memory: quantity::memory(memory),
        }
    }

    /// The `usage` map as field `field`, keys in Go's sorted order.
    fn encode<S: Sink>(&self, s: &mut S, field: u32) {
        for (key, value) in [("cpu", &self.cpu), ("memory", &self.memory)] {
            s.message(
                field,
                &QuantityEntry {
                    key,
                    value: value.as_bytes(),
                },
            );
        }
    }
}

impl Item for NodeItem {
    const KIND: &'static str = "NodeMetrics";
    const LIST_KIND: &'static str = "NodeMetricsList";
    fn meta(&self) -> Meta<'_> {
        Meta {
            name: &self.0.name,
            namespace: None,
            labels: &self.0.labels,
        }
    }
    fn time(&self) -> (i64, Duration) {
        (self.1.timestamp_ns, self.1.window)
    }
    fn json_usage(&self, out: &mut Vec<u8>) {
        json_key(out, "usage");
        json_resources(out, self.1.cpu_nanocores, self.1.memory_bytes);
    }
    fn proto_usage<S: Sink>(&self, s: &mut S) {
        Resources::new(self.1.cpu_nanocores, self.1.memory_bytes).encode(s, 4);
    }
    fn totals(&self) -> (u128, u128) {
        (
            u128::from(self.1.cpu_nanocores),
            u128::from(self.1.memory_bytes),
        )
    }
}

/// `ContainerMetrics{1: name, 2: usage}`, with its quantities formatted once for both the
/// measuring and the writing pass.
struct ContainerMsg<'a> {
    name: &'a str,
    usage: Resources,
}

impl Message for ContainerMsg<'_> {
    fn encode<S: Sink>(&self, s: &mut S) {
        s.string(1, self.name);
        self.usage.encode(s, 2);
    }
}

/// A pod and its usage, owned ([`PodItem`]) or borrowed while the cluster state and the
/// store are being visited, the usage the store's own or a copy ([`PodValues`]).
impl<P, U> Item for (P, U)
where
    P: std::ops::Deref<Target = PodInfo>,
    U: PodValues,
{
    const KIND: &'static str = "PodMetrics";
    const LIST_KIND: &'static str = "PodMetricsList";
    fn meta(&self) -> Meta<'_> {
        Meta {
            name: &self.0.name,
            namespace: Some(&self.0.namespace),
            labels: &self.0.labels,
        }
    }
    fn time(&self) -> (i64, Duration) {
        self.1.time()
    }
    fn json_usage(&self, out: &mut Vec<u8>) {
        json_key(out, "containers");
        out.push(b'[');
        for (i, (name, cpu, memory)) in self.1.containers().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"name\":");
            json_str(out, name);
            out.extend_from_slice(b",\"usage\":");
            json_resources(out, cpu, memory);
            out.push(b'}');
        }
        out.push(b']');
    }
    fn proto_usage<S: Sink>(&self, s: &mut S) {
        for (name, cpu, memory) in self.1.containers() {
            let msg = ContainerMsg {
                name,
                usage: Resources::new(cpu, memory),
            };
            s.message(4, &msg);
        }
    }
    fn totals(&self) -> (u128, u128) {
        self.1.containers().fold((0, 0), |(cpu, mem), (_, c, m)| {
            (cpu + u128::from(c), mem + u128::from(m))
        })
    }
}

// ---------------------------------------------------------------------------------------
// JSON

/// `"metadata":{"name":…,"namespace":…,"creationTimestamp":…,"labels":{…}}` in Go's
/// `ObjectMeta` field order.
fn json_metadata<I: Item>(out: &mut Vec<u8>, item: &I, ctx: &Ctx) {
    let meta = item.meta();
    out.extend_from_slice(b"\"metadata\":{\"name\":");
    json_str(out, meta.name);
    if let Some(ns) = meta.namespace {
        out.extend_from_slice(b",\"namespace\":");
        json_str(out, ns);
    }
    out.extend_from_slice(b",\"creationTimestamp\":");
    out.extend_from_slice(&ctx.created_json);
    let labels = meta.labels;
    if !labels.is_empty() {
        // LabelSet is sorted by key, which is the order Go writes map keys in.
        out.extend_from_slice(b",\"labels\":{");
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json_str(out, k);
            out.push(b':');
            json_str(out, v);
        }
        out.push(b'}');
    }
    out.push(b'}');
}

/// One object. `typed` adds `kind` and `apiVersion`, as a single GET has them and list items
/// do not.
pub fn json_item<I: Item>(out: &mut Vec<u8>, item: &I, ctx: &Ctx, typed: bool) {
    out.push(b'{');
    if typed {
        out.extend_from_slice(b"\"kind\":\"");
        out.extend_from_slice(I::KIND.as_bytes());
        out.extend_from_slice(b"\",\"apiVersion\":\"");
        out.extend_from_slice(ctx.version.group_version().as_bytes());
        out.extend_from_slice(b"\",");
    }
    json_metadata(out, item, ctx);
    let (timestamp_ns, window) = item.time();
    let secs = unix_seconds(timestamp_ns);
    out.extend_from_slice(b",\"timestamp\":\"");
    Formatted::write(&ctx.last_timestamp, secs, out, |o| rfc3339(o, secs));
    out.extend_from_slice(b"\",\"window\":\"");
    write_window(out, ctx, window);
    out.extend_from_slice(b"\",");
    item.json_usage(out);
    out.push(b'}');
}

fn write_window(out: &mut Vec<u8>, ctx: &Ctx, d: Duration) {
    Formatted::write(&ctx.last_window, d, out, |o| {
        use std::io::Write;
        // GoDuration's Display writes from a stack buffer; a Vec never fails to take it.
        let _ = write!(o, "{}", duration::format(d));
    });
}

/// What a response carries: the one object a GET names, or a list.
#[derive(Debug)]
pub enum Shape<'a, I> {
    One(&'a I),
    List(&'a [I]),
}

impl<I> Clone for Shape<'_, I> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<I> Copy for Shape<'_, I> {}

impl<'a, I> Shape<'a, I> {
    pub fn items(self) -> &'a [I] {
        match self {
            Shape::One(item) => std::slice::from_ref(item),
            Shape::List(items) => items,
        }
    }
}

/// Writes list items comma-separated into a buffer. After a sample of items the buffer is
/// reserved for the expected rest at the sample's average size (plus an eighth), so a 60 MB
/// list is neither grown by doubling (copying and faulting in twice the memory) nor
/// reserved blindly.
pub struct ItemWriter<'o> {
    out: &'o mut Vec<u8>,
    start: usize,
    written: usize,
    expected: usize,
}

impl<'o> ItemWriter<'o> {
    const SAMPLE: usize = 32;

    /// `expected` is how many items are likely to follow (0 when unknown).
    pub fn new(out: &'o mut Vec<u8>, expected: usize) -> Self {
        let start = out.len();
        Self {
            out,
            start,
            written: 0,
            expected,
        }
    }

    pub fn item(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        if self.written > 0 {
            self.out.push(b',');
        }
        write(self.out);
        self.written += 1;
        if self.written == Self::SAMPLE && self.expected > Self::SAMPLE {
            let average = (self.out.len() - self.start).div_ceil(Self::SAMPLE);
            let rest = self.expected - Self::SAMPLE;
            self.out.reserve(rest * average + rest * average / 8 + 64);
        }
    }
}

fn write_items<I>(out: &mut Vec<u8>, items: &[I], mut write: impl FnMut(&mut Vec<u8>, &I)) {
    let mut w = ItemWriter::new(out, items.len());
    for item in items {
        w.item(|out| write(out, item));
    }
}

/// The head of a NodeMetricsList or PodMetricsList: `{"kind":…,"apiVersion":…,"metadata":{},"items":[`.
pub fn json_list_head<I: Item>(out: &mut Vec<u8>, ctx: &Ctx) {
    out.extend_from_slice(b"{\"kind\":\"");
    out.extend_from_slice(I::LIST_KIND.as_bytes());
    out.extend_from_slice(b"\",\"apiVersion\":\"");
    out.extend_from_slice(ctx.version.group_version().as_bytes());
    out.extend_from_slice(b"\",\"metadata\":{},\"items\":[");
}

/// The end of a list, with Go's trailing newline.
pub const JSON_LIST_TAIL: &[u8] = b"]}\n";

/// One object with `kind` and `apiVersion` (as a GET returns it), or
/// `{"kind":"…List","apiVersion":…,"metadata":{},"items":[…]}` whose items have neither;
/// with Go's trailing newline.
pub fn json<I: Item>(shape: Shape<'_, I>, ctx: &Ctx) -> Vec<u8> {
    let items = match shape {
        Shape::One(item) => {
            let mut out = Vec::with_capacity(512);
            json_item(&mut out, item, ctx, true);
            out.push(b'\n');
            return out;
        }
        Shape::List(items) => items,
    };
    let mut out = Vec::with_capacity(16 * 1024);
    json_list_head::<I>(&mut out, ctx);
    write_items(&mut out, items, |out, item| {
        json_item(out, item, ctx, false)
    });
    out.extend_from_slice(JSON_LIST_TAIL);
    out
}

/// The `meta.k8s.io` version of a Table or PartialObjectMetadata response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaVersion {
    V1,
    V1beta1,
}

impl MetaVersion {
    pub fn parse(v: &str) -> Option<Self> {
        match v {
            "v1" => Some(Self::V1),
            "v1beta1" => Some(Self::V1beta1),
            _ => None,
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Self::V1 => "meta.k8s.io/v1",
            Self::V1beta1 => "meta.k8s.io/v1beta1",
        }
    }
}

/// `includeObject` of a Table request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    /// apiserver's values; empty means Metadata.
    pub fn parse(v: Option<&str>) -> Result<Self, String> {
        match v.unwrap_or("") {
            "" | "Metadata" => Ok(Self::Metadata),
            "None" => Ok(Self::None),
            "Object" => Ok(Self::Object),
            other => Err(format!("unrecognized includeObject value: {other:?}")),
        }
    }
}

/// `{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{…}}`.
fn json_partial_item<I: Item>(out: &mut Vec<u8>, item: &I, ctx: &Ctx, meta: MetaVersion) {
    out.extend_from_slice(b"{\"kind\":\"PartialObjectMetadata\",\"apiVersion\":\"");
    out.extend_from_slice(meta.api_version().as_bytes());
    out.extend_from_slice(b"\",");
    json_metadata(out, item, ctx);
    out.push(b'}');
}

/// The head of a Table, up to its first row: `{"kind":"Table",…,"columnDefinitions":[…],"rows":[`.
fn table_head(out: &mut Vec<u8>, meta: MetaVersion) {
    out.extend_from_slice(b"{\"kind\":\"Table\",\"apiVersion\":\"");
    out.extend_from_slice(meta.api_version().as_bytes());
    out.extend_from_slice(
        b"\",\"metadata\":{},\"columnDefinitions\":[\
{\"name\":\"Name\",\"type\":\"string\",\"format\":\"name\",\"description\":\"Name of the resource\",\"priority\":0},\
{\"name\":\"cpu\",\"type\":\"string\",\"format\":\"quantity\",\"description\":\"\",\"priority\":0},\
{\"name\":\"memory\",\"type\":\"string\",\"format\":\"quantity\",\"description\":\"\",\"priority\":0},\
{\"name\":\"Window\",\"type\":\"string\",\"format\":\"duration\",\"description\":\"\",\"priority\":0}],\
\"rows\":[",
    );
}

/// The end of a Table, with Go's trailing newline.
const TABLE_TAIL: &[u8] = b"]}\n";

/// One Table row: its cells and the object as `include` asks.
fn table_row<I: Item>(
    out: &mut Vec<u8>,
    item: &I,
    ctx: &Ctx,
    meta: MetaVersion,
    include: IncludeObject,
) {
    out.extend_from_slice(b"{\"cells\":[");
    json_str(out, item.meta().name);
    let (cpu, mem) = item.totals();
    out.extend_from_slice(b",\"");
    out.extend_from_slice(quantity::cpu_total(cpu).as_bytes());
    out.extend_from_slice(b"\",\"");
    out.extend_from_slice(quantity::memory_total(mem).as_bytes());
    out.extend_from_slice(b"\",\"");
    write_window(out, ctx, item.window());
    out.extend_from_slice(b"\"],\"object\":");
    match include {
        IncludeObject::None => out.extend_from_slice(b"null"),
        IncludeObject::Metadata => json_partial_item(out, item, ctx, meta),
        IncludeObject::Object => json_item(out, item, ctx, true),
    }
    out.push(b'}');
}

/// metrics-server's Table: Name, then each resource (`cpu`, `memory`, sorted), then Window;
/// a pod's cells are the sums over its containers.
pub fn json_table<I: Item>(
    items: &[I],
    ctx: &Ctx,
    meta: MetaVersion,
    include: IncludeObject,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * 1024);
    table_head(&mut out, meta);
    write_items(&mut out, items, |out, item| {
        table_row(out, item, ctx, meta, include)
    });
    out.extend_from_slice(TABLE_TAIL);
    out
}

/// `PartialObjectMetadata` for one object, `PartialObjectMetadataList` for a list.
pub fn json_partial<I: Item>(shape: Shape<'_, I>, ctx: &Ctx, meta: MetaVersion) -> Vec<u8> {
    let items = match shape {
        Shape::One(item) => {
            let mut out = Vec::with_capacity(256);
            json_partial_item(&mut out, item, ctx, meta);
            out.push(b'\n');
            return out;
        }
        Shape::List(items) => items,
    };
    let mut out = Vec::with_capacity(16 * 1024);
    out.extend_from_slice(b"{\"kind\":\"PartialObjectMetadataList\",\"apiVersion\":\"");
    out.extend_from_slice(meta.api_version().as_bytes());
    out.extend_from_slice(b"\",\"metadata\":{},\"items\":[");
    write_items(&mut out, items, |out, item| {
        json_partial_item(out, item, ctx, meta)
    });
    out.extend_from_slice(b"]}\n");
    out
}

// ---------------------------------------------------------------------------------------
// Protobuf

/// `metav1.Time{1: seconds, 2: nanos}`; Kubernetes carries seconds only.
struct TimeMsg(i64);

impl Message for TimeMsg {
    fn encode<S: Sink>(&self, s: &mut S) {
        s.int64(1, self.0);
        s.int64(2, 0);
    }
}

/// `metav1.Duration{1: nanoseconds}`.
struct DurationMsg(Duration);

impl Message for DurationMsg {
    fn encode<S: Sink>(&self, s: &mut S) {
        s.int64(1, i64::try_from(self.0.as_nanos()).unwrap_or(i64::MAX));
    }
}

/// A `map<string, string>` entry.
struct StringEntry<'a>(&'a str, &'a str);

impl Message for StringEntry<'_> {
    fn encode<S: Sink>(&self, s: &mut S) {
        s.string(1, self.0);
        s.string(2, self.1);
    }
}

/// `ObjectMeta` as Go's generated code writes it: every plain string field (even empty),
/// `generation`, `creationTimestamp`, then the labels sorted by key.
struct ObjectMetaMsg<'a, I>(&'a I, &'a Ctx);

impl<I: Item> Message for ObjectMetaMsg<'_, I> {
    fn encode<S: Sink>(&self, s: &mut S) {
        let meta = self.0.meta();
        s.string(1, meta.name);
        s.string(2, "");
        s.string(3, meta.namespace.unwrap_or(""));
        s.string(4, "");
        s.string(5, "");
        s.string(6, "");
        s.int64(7, 0);
        s.message(8, &TimeMsg(self.1.now_secs));
        for (k, v) in meta.labels.iter() {
            s.message(11, &StringEntry(k, v));
        }
    }
}

/// A NodeMetrics or PodMetrics message.
struct ItemMsg<'a, I>(&'a I, &'a Ctx);

impl<I: Item> Message for ItemMsg<'_, I> {
    fn encode<S: Sink>(&self, s: &mut S) {
        s.message(1, &ObjectMetaMsg(self.0, self.1));
        s.message(2, &TimeMsg(unix_seconds(self.0.timestamp_ns())));
        s.message(3, &DurationMsg(self.0.window()));
        self.0.proto_usage(s);
    }
}

/// `PartialObjectMetadata{1: metadata}`.
struct PartialMsg<'a, I>(&'a I, &'a Ctx);

impl<I: Item> Message for PartialMsg<'_, I> {
    fn encode<S: Sink>(&self, s: &mut S) {
        s.message(1, &ObjectMetaMsg(self.0, self.1));
    }
}

/// An empty `ListMeta`: selfLink, resourceVersion and continue, each written empty.
const EMPTY_LIST_META: &[u8] = &[0x0a, 0x06, 0x0a, 0x00, 0x12, 0x00, 0x1a, 0x00];

/// Wraps one message in the envelope.
fn proto_single_with<M: Message>(api_version: &str, kind: &str, msg: &M) -> Vec<u8> {
    let len = msg.encoded_len();
    let mut out = envelope_head(api_version, kind, len);
    out.reserve(len + ENVELOPE_TAIL.len());
    msg.encode(&mut out);
    out.extend_from_slice(ENVELOPE_TAIL);
    out
}

/// One list item as field 2 of the list message, measured once.
fn proto_list_item<M: Message>(out: &mut Vec<u8>, msg: &M, size: usize) {
    out.key(2, 2);
    out.varint(size as u64);
    msg.encode(out);
}

/// Writes a list message (empty ListMeta, then each item as field 2) in the envelope,
/// measuring each item once.
fn proto_list_with<'i, M: Message + 'i>(
    api_version: &str,
    kind: &str,
    items: impl Iterator<Item = M> + Clone,
) -> Vec<u8> {
    let sizes: Vec<usize> = items.clone().map(|m| m.encoded_len()).collect();
    let body: usize = EMPTY_LIST_META.len()
        + sizes
            .iter()
            .map(|&n| 1 + varint_len(n as u64) + n)
            .sum::<usize>();
    let mut out = envelope_head(api_version, kind, body);
    out.reserve(body + ENVELOPE_TAIL.len());
    out.extend_from_slice(EMPTY_LIST_META);
    for (m, size) in items.zip(sizes) {
        proto_list_item(&mut out, &m, size);
    }
    out.extend_from_slice(ENVELOPE_TAIL);
    out
}

/// NodeMetrics/PodMetrics or their list, in the envelope.
pub fn proto<I: Item>(shape: Shape<'_, I>, ctx: &Ctx) -> Vec<u8> {
    let api_version = ctx.version.group_version();
    match shape {
        Shape::One(item) => proto_single_with(api_version, I::KIND, &ItemMsg(item, ctx)),
        Shape::List(items) => proto_list_with(
            api_version,
            I::LIST_KIND,
            items.iter().map(|i| ItemMsg(i, ctx)),
        ),
    }
}

/// `PartialObjectMetadata` or `PartialObjectMetadataList`, in the envelope.
pub fn proto_partial<I: Item>(shape: Shape<'_, I>, ctx: &Ctx, meta: MetaVersion) -> Vec<u8> {
    let api_version = meta.api_version();
    match shape {
        Shape::One(item) => {
            proto_single_with(api_version, "PartialObjectMetadata", &PartialMsg(item, ctx))
        }
        Shape::List(items) => proto_list_with(
            api_version,
            "PartialObjectMetadataList",
            items.iter().map(|i| PartialMsg(i, ctx)),
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Lists written item by item

/// A list written one item at a time, in pieces, as its items are visited: a long pod list
/// is written straight from the cluster state and the store in any of the list views a
/// full list is asked for, and produces the same bytes as [`json`], [`proto`] and
/// [`json_table`] do for the same items.
///
/// The pieces are, in order: [`ListEncoding::head`], each item ([`ListEncoding::item`]),
/// [`ListEncoding::tail`]; a protobuf list also needs [`ListEncoding::prefix`] in front,
/// which can only be written once the list's length is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListEncoding {
    /// `{"kind":"…List","apiVersion":…,"metadata":{},"items":[…]}`.
    Json,
    /// The list message in the `k8s\0` + `runtime.Unknown` envelope.
    Protobuf,
    /// A `meta.k8s.io` Table, one row per item.
    Table {
        meta: MetaVersion,
        include: IncludeObject,
    },
}

impl ListEncoding {
    /// What comes before the first item (for protobuf, the list message's empty ListMeta).
    pub fn head<I: Item>(self, out: &mut Vec<u8>, ctx: &Ctx) {
        match self {
            Self::Json => json_list_head::<I>(out, ctx),
            Self::Protobuf => out.extend_from_slice(EMPTY_LIST_META),
            Self::Table { meta, .. } => table_head(out, meta),
        }
    }

    /// Writes one item; `first` says whether it is the list's first (JSON items and rows
    /// are comma-separated).
    pub fn item<I: Item>(self, out: &mut Vec<u8>, item: &I, ctx: &Ctx, first: bool) {
        if !first && self != Self::Protobuf {
            out.push(b',');
        }
        match self {
            Self::Json => json_item(out, item, ctx, false),
            Self::Protobuf => {
                let msg = ItemMsg(item, ctx);
                proto_list_item(out, &msg, msg.encoded_len());
            }
            Self::Table { meta, include } => table_row(out, item, ctx, meta, include),
        }
    }

    /// What comes after the last item: Go's closing and newline, or for protobuf the
    /// envelope's tail, which is not part of the list message.
    pub fn tail(self, out: &mut Vec<u8>) {
        out.extend_from_slice(match self {
            Self::Json => JSON_LIST_TAIL,
            Self::Protobuf => ENVELOPE_TAIL,
            Self::Table { .. } => TABLE_TAIL,
        });
    }

    /// What goes in front of the head, given the length of everything from the head to the
    /// last item: for protobuf the envelope's head, which carries that length; nothing for
    /// the JSON views.
    pub fn prefix<I: Item>(self, ctx: &Ctx, list_len: usize) -> Option<Vec<u8>> {
        (self == Self::Protobuf)
            .then(|| envelope_head(ctx.version.group_version(), I::LIST_KIND, list_len))
    }
}
