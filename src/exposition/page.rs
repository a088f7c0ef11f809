//! A kubelet's `/metrics/resource` page, kept as received and indexed for re-exposition.
//!
//! The scraper builds a [`KubeletPage`] from the body it just decoded and hands it to the
//! store; `/metrics/resource` later writes the page's series with a `node` label added. The
//! body itself is kept (a [`Bytes`], shared, never copied); the index records, for every
//! sample of a [bridged family](BRIDGED), where its name, labels, value and timestamp are, so
//! that exposing a sample is a few `memcpy`s: no parsing, no float formatting, no
//! allocation. The index costs 24 bytes per bridged sample, about a sixth of the page.
//!
//! What is bridged: the families of the kubelet's resource-metrics collector (the table
//! [`BRIDGED`]), with the type the kubelet gives them. A page that declares one of them with
//! another type loses that family (a kubelet never does; anything else would be exposed with
//! a type Prometheus cannot trust). Other families on the page, as a custom
//! `metrics.k8s.io/resource-metrics-path` might bring, are not bridged, so the exposition's
//! size and cardinality stay those documented in `docs/metrics.md`.
//!
//! Sample by sample:
//! - values are kept as written: Go's text, which both formats accept. A value OpenMetrics
//!   would spell differently (`Inf`, `1.`) is rewritten there from its float, and a counter
//!   sample OpenMetrics forbids (negative or NaN) is left out of OpenMetrics only;
//! - timestamps are kept (milliseconds; OpenMetrics writes them as seconds), so `rate()`
//!   sees the kubelet's own sampling times;
//! - a series that already has a `node` label keeps it as `exported_node`, as Prometheus
//!   renames a clashing target label;
//! - label values with a backslash sequence other than `\\`, `\"` and `\n` (which the text
//!   format lets through but OpenMetrics refuses) are re-escaped.

use bytes::Bytes;

use crate::parse::{Entry, MetricType, ParseError, Parser};

use super::text::Kind;

/// One bridged family: the samples' name, their kind and the HELP text the exposition
/// writes (the kubelet's, without its stability prefix, which differs between versions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgedFamily {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

const fn family(name: &'static str, kind: Kind, help: &'static str) -> BridgedFamily {
    BridgedFamily { name, kind, help }
}

/// The kubelet families `/metrics/resource` bridges, in the order they are written.
pub const BRIDGED: [BridgedFamily; 15] = [
    family(
        "container_cpu_usage_seconds_total",
        Kind::Counter,
        "Cumulative cpu time consumed by the container in core-seconds",
    ),
    family(
        "container_memory_commit_bytes",
        Kind::Gauge,
        "Committed memory of the container in bytes. Reported only on Windows systems",
    ),
    family(
        "container_memory_working_set_bytes",
        Kind::Gauge,
        "Current working set of the container in bytes",
    ),
    family(
        "container_start_time_seconds",
        Kind::Gauge,
        "Start time of the container since unix epoch in seconds",
    ),
    family(
        "container_swap_limit_bytes",
        Kind::Gauge,
        "Current amount of the container swap limit in bytes. Reported only on non-windows systems",
    ),
    family(
        "container_swap_usage_bytes",
        Kind::Gauge,
        "Current amount of the container swap usage in bytes. Reported only on non-windows systems",
    ),
    family(
        "node_cpu_usage_seconds_total",
        Kind::Counter,
        "Cumulative cpu time consumed by the node in core-seconds",
    ),
    family(
        "node_memory_commit_bytes",
        Kind::Gauge,
        "Committed memory of the node in bytes. Reported only on Windows systems",
    ),
    family(
        "node_memory_working_set_bytes",
        Kind::Gauge,
        "Current working set of the node in bytes",
    ),
    family(
        "node_swap_usage_bytes",
        Kind::Gauge,
        "Current swap usage of the node in bytes. Reported only on non-windows systems",
    ),
    family(
        "pod_cpu_usage_seconds_total",
        Kind::Counter,
        "Cumulative cpu time consumed by the pod in core-seconds",
    ),
    family(
        "pod_memory_working_set_bytes",
        Kind::Gauge,
        "Current working set of the pod in bytes",
    ),
    family(
        "pod_swap_usage_bytes",
        Kind::Gauge,
        "Current amount of the pod swap usage in bytes. Reported only on non-windows systems",
    ),
    family(
        "resource_scrape_error",
        Kind::Gauge,
        "1 if there was an error while getting container metrics, 0 otherwise",
    ),
    family(
        "scrape_error",
        Kind::Gauge,
        "1 if there was an error while getting container metrics, 0 otherwise (deprecated by \
         the kubelet since 1.29 in favour of resource_scrape_error)",
    ),
];

/// The index of a bridged family in [`BRIDGED`].
fn bridged_index(name: &str) -> Option<u8> {
    // Every bridged name starts with one of four letters; most other names are rejected by
    // the first byte.
    if !matches!(
        name.as_bytes().first(),
        Some(b'c' | b'n' | b'p' | b'r' | b's')
    ) {
        return None;
    }
    BRIDGED
        .iter()
        .position(|f| f.name == name)
        .and_then(|i| u8::try_from(i).ok())
}

/// The value token is a number OpenMetrics accepts as written.
pub(crate) const PLAIN_VALUE: u8 = 1;
/// The labels include `node`, to be written as `exported_node`.
pub(crate) const NODE_LABEL: u8 = 2;
/// Some label value has a backslash sequence OpenMetrics does not know.
pub(crate) const ODD_ESCAPE: u8 = 4;
/// A counter sample whose value OpenMetrics forbids (negative or NaN).
pub(crate) const NOT_OPENMETRICS: u8 = 8;

/// Where one sample's parts are in the page. Offsets are relative to the line's first byte
/// (the name), which keeps the entry at 24 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SampleRef {
    pub start: u32,
    pub name_len: u16,
    /// 0 when the sample has no labels.
    pub labels_off: u16,
    pub labels_len: u16,
    pub value_off: u16,
    pub value_len: u16,
    pub flags: u8,
    pub family: u8,
    /// Milliseconds since the epoch; negative when the sample has none.
    pub timestamp_ms: i64,
}

/// One sample as the writer needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SampleView<'a> {
    pub name: &'a [u8],
    /// The label pairs as written between the braces (escapes kept), without a trailing comma.
    pub labels: &'a [u8],
    pub value: &'a [u8],
    pub flags: u8,
    pub timestamp_ms: Option<i64>,
}

/// A kubelet page and the index of its bridged samples.
#[derive(Debug, Clone)]
pub struct KubeletPage {
    bytes: Bytes,
    /// Grouped by family, in [`BRIDGED`] order.
    samples: Box<[SampleRef]>,
    /// Per family, the range of its samples in `samples`.
    families: [(u32, u32); BRIDGED.len()],
}

/// Why a sample could not be indexed (it is then left out of the exposition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    /// A line longer than the index's 16-bit offsets reach (64 KiB).
    TooLong,
}

impl KubeletPage {
    /// An empty page (a node with no page yet exposes nothing).
    pub fn empty() -> Self {
        Self {
            bytes: Bytes::new(),
            samples: Box::default(),
            families: [(0, 0); BRIDGED.len()],
        }
    }

    /// Indexes a page. The page was decoded already, so a parse error here is only possible
    /// when the caller passes another payload; it is returned as the parser reports it. The
    /// scraper does not call this: it indexes while it decodes, through [`PageIndexer`], so
    /// each page is parsed once.
    pub fn index(bytes: Bytes) -> Result<Self, ParseError> {
        let mut indexer = PageIndexer::new(bytes.clone());
        for entry in Parser::new(&bytes) {
            indexer.observe(&entry?);
        }
        Ok(indexer.finish())
    }

    /// The page as received.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// How many samples the exposition will write for this page.
    pub fn bridged_samples(&self) -> usize {
        self.samples.len()
    }

    /// The samples of family `family` (an index into [`BRIDGED`]).
    pub(crate) fn family(&self, family: usize) -> impl Iterator<Item = SampleView<'_>> + '_ {
        let (start, end) = self.families.get(family).copied().unwrap_or((0, 0));
        self.samples
            .get(start as usize..end as usize)
            .unwrap_or_default()
            .iter()
            .map(|r| self.view(r))
    }

    pub(crate) fn has_family(&self, family: usize) -> bool {
        self.families.get(family).is_some_and(|(s, e)| e > s)
    }

    #[inline]
    fn view(&self, r: &SampleRef) -> SampleView<'_> {
        let start = r.start as usize;
        let part = |off: u16, len: u16| {
            let s = start + usize::from(off);
            self.bytes.get(s..s + usize::from(len)).unwrap_or_default()
        };
        SampleView {
            name: part(0, r.name_len),
            labels: part(r.labels_off, r.labels_len),
            value: part(r.value_off, r.value_len),
            flags: r.flags,
            timestamp_ms: (r.timestamp_ms >= 0).then_some(r.timestamp_ms),
        }
    }
}

/// Builds a [`KubeletPage`] from the entries of a parse of its bytes, so that the parse the
/// decoder makes anyway also indexes the page (see `decode::decode_observed`).
pub struct PageIndexer {
    bytes: Bytes,
    samples: Vec<SampleRef>,
    /// Families a TYPE line gave another type than the kubelet's.
    mistyped: [bool; BRIDGED.len()],
    skipped: usize,
}

impl PageIndexer {
    /// An indexer for `bytes`; the entries given to [`PageIndexer::observe`] must come from a
    /// parse of these same bytes (a clone of the `Bytes` shares them), since samples are
    /// recorded as offsets into them.
    pub fn new(bytes: Bytes) -> Self {
        Self {
            samples: Vec::with_capacity(bytes.len() / 160 + 8),
            bytes,
            mistyped: [false; BRIDGED.len()],
            skipped: 0,
        }
    }

    /// Records one parsed entry.
    pub fn observe(&mut self, entry: &Entry<'_>) {
        match entry {
            Entry::Type { metric, kind } => {
                if let Some(i) = bridged_index(metric) {
                    let want = match BRIDGED[usize::from(i)].kind {
                        Kind::Counter => MetricType::Counter,
                        Kind::Gauge | Kind::Info => MetricType::Gauge,
                    };
                    if *kind != want {
                        self.mistyped[usize::from(i)] = true;
                    }
                }
            }
            Entry::Sample(sample) => {
                let Some(family) = bridged_index(sample.name) else {
                    return;
                };
                let base = self.bytes.as_ptr() as usize;
                match sample_ref(&self.bytes, base, sample, family) {
                    Ok(r) => self.samples.push(r),
                    Err(Skip::TooLong) => self.skipped += 1,
                }
            }
            Entry::Help(_) | Entry::Comment(_) => {}
        }
    }

    /// The indexed page.
    pub fn finish(self) -> KubeletPage {
        let Self {
            bytes,
            mut samples,
            mistyped,
            skipped,
        } = self;
        if skipped > 0 {
            tracing::debug!(
                skipped,
                "kubelet page lines longer than 64 KiB are not bridged"
            );
        }
        samples.retain(|s| !mistyped[usize::from(s.family)]);
        // A kubelet writes each family in one block, in name order; sort only otherwise.
        if !samples.is_sorted_by_key(|s| s.family) {
            samples.sort_by_key(|s| s.family);
        }
        let mut families = [(0u32, 0u32); BRIDGED.len()];
        let mut i = 0usize;
        for (f, range) in families.iter_mut().enumerate() {
            let start = i;
            while samples.get(i).is_some_and(|s| usize::from(s.family) == f) {
                i += 1;
            }
            *range = (
                u32::try_from(start).unwrap_or(u32::MAX),
                u32::try_from(i).unwrap_or(u32::MAX),
            );
        }
        KubeletPage {
            bytes,
            samples: samples.into_boxed_slice(),
            families,
        }
    }
}

/// Where `sample`'s parts are, as offsets from its name.
fn sample_ref(
    bytes: &[u8],
    base: usize,
    sample: &crate::parse::Sample<'_>,
    family: u8,
) -> Result<SampleRef, Skip> {
    // The parser's slices point into `bytes`, so their addresses give their offsets.
    let offset = |s: &str| (s.as_ptr() as usize).wrapping_sub(base);
    let start = offset(sample.name);
    let rel = |abs: usize| u16::try_from(abs.wrapping_sub(start)).map_err(|_| Skip::TooLong);
    let name_len = rel(start + sample.name.len())?;
    let raw = sample.labels.raw();
    let (labels_off, labels_len, after_labels) = if raw.is_empty() {
        (0, 0, start + sample.name.len())
    } else {
        let off = offset(raw);
        (
            rel(off)?,
            u16::try_from(raw.len()).map_err(|_| Skip::TooLong)?,
            off + raw.len(),
        )
    };
    // After the labels come blanks, an optional trailing comma and the braces (or, without
    // labels, blanks and perhaps `{}`), then the value token.
    let mut p = after_labels;
    while bytes
        .get(p)
        .is_some_and(|b| matches!(b, b' ' | b'\t' | b',' | b'{' | b'}'))
    {
        p += 1;
    }
    let value_start = p;
    while bytes
        .get(p)
        .is_some_and(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
    {
        p += 1;
    }
    let value = bytes.get(value_start..p).unwrap_or_default();
    let value_off = rel(value_start)?;
    let value_len = u16::try_from(value.len()).map_err(|_| Skip::TooLong)?;

    let mut flags = 0;
    if is_plain_number(value) {
        flags |= PLAIN_VALUE;
    }
    if BRIDGED[usize::from(family)].kind == Kind::Counter
        && (sample.value.is_nan() || sample.value < 0.0)
    {
        flags |= NOT_OPENMETRICS;
    }
    if !raw.is_empty() {
        if memchr::memmem::find(raw.as_bytes(), b"node").is_some()
            && sample.labels.iter_raw().any(|(name, _)| name == "node")
        {
            flags |= NODE_LABEL;
        }
        if sample.labels.has_escapes()
            && sample
                .labels
                .iter_raw()
                .any(|(_, value)| has_odd_escape(value.as_bytes()))
        {
            flags |= ODD_ESCAPE;
        }
    }
    Ok(SampleRef {
        start: u32::try_from(start).map_err(|_| Skip::TooLong)?,
        name_len,
        labels_off,
        labels_len,
        value_off,
        value_len,
        flags,
        family,
        timestamp_ms: sample.timestamp_ms.unwrap_or(-1),
    })
}

/// A decimal OpenMetrics accepts as written: `[+-]digits[.digits][(e|E)[+-]digits]`, or
/// `+Inf`, `-Inf`, `NaN` exactly.
pub(crate) fn is_plain_number(v: &[u8]) -> bool {
    if matches!(v, b"+Inf" | b"-Inf" | b"NaN") {
        return true;
    }
    let mut i = usize::from(matches!(v.first(), Some(b'+' | b'-')));
    let digits = |i: &mut usize| {
        let from = *i;
        while v.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > from
    };
    if !digits(&mut i) {
        return false;
    }
    if v.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if matches!(v.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(v.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == v.len()
}

/// A raw label value holds a backslash sequence other than `\\`, `\"`, `\n`.
fn has_odd_escape(raw: &[u8]) -> bool {
    let mut i = 0;
    while let Some(p) = raw.get(i..).and_then(|r| memchr::memchr(b'\\', r)) {
        let at = i + p;
        if !matches!(raw.get(at + 1), Some(b'\\' | b'"' | b'n')) {
            return true;
        }
        i = at + 2;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scraper's path (index while decoding) and `KubeletPage::index` give the same
    /// index, on the real kubelet page and on a page with a mistyped family.
    #[test]
    fn indexing_while_decoding_equals_indexing_alone() {
        let real = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/kubelet/metrics-resource-kind-70pods.prom"
        ))
        .unwrap();
        let mistyped = b"# TYPE node_cpu_usage_seconds_total gauge\nnode_cpu_usage_seconds_total 5 1000\nnode_memory_working_set_bytes 7 1000\n".to_vec();
        for text in [real, mistyped] {
            let bytes = Bytes::from(text);
            let alone = KubeletPage::index(bytes.clone()).unwrap();
            let mut indexer = PageIndexer::new(bytes.clone());
            crate::decode::decode_observed(&bytes, 0, |e| indexer.observe(e)).unwrap();
            let shared = indexer.finish();
            assert!(!alone.samples.is_empty());
            assert_eq!(shared.samples, alone.samples);
            assert_eq!(shared.families, alone.families);
        }
    }

    fn views(page: &KubeletPage, family: &str) -> Vec<(String, String, String, u8, Option<i64>)> {
        let f = BRIDGED.iter().position(|f| f.name == family).unwrap();
        page.family(f)
            .map(|v| {
                (
                    String::from_utf8(v.name.to_vec()).unwrap(),
                    String::from_utf8(v.labels.to_vec()).unwrap(),
                    String::from_utf8(v.value.to_vec()).unwrap(),
                    v.flags,
                    v.timestamp_ms,
                )
            })
            .collect()
    }

    #[test]
    fn bridged_families_are_sorted_and_known() {
        assert!(BRIDGED.windows(2).all(|w| w[0].name < w[1].name));
        assert_eq!(bridged_index("container_cpu_usage_seconds_total"), Some(0));
        assert_eq!(bridged_index("scrape_error"), Some(14));
        assert_eq!(bridged_index("go_goroutines"), None);
        assert_eq!(bridged_index("container_cpu_usage_seconds"), None);
        for f in BRIDGED {
            assert_eq!(
                f.kind == Kind::Counter,
                f.name.ends_with("_total"),
                "{}",
                f.name
            );
        }
    }

    #[test]
    fn indexes_a_real_kubelet_page() {
        let text = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/kubelet/metrics-resource-kind-70pods.prom"
        ))
        .unwrap();
        let page = KubeletPage::index(Bytes::from(text)).unwrap();
        let cpu = views(&page, "container_cpu_usage_seconds_total");
        assert_eq!(cpu.len(), 70);
        let node = views(&page, "node_cpu_usage_seconds_total");
        assert_eq!(node.len(), 1);
        assert!(node[0].1.is_empty());
        assert_eq!(node[0].3 & PLAIN_VALUE, PLAIN_VALUE);
        assert!(node[0].4.is_some());
        assert_eq!(views(&page, "scrape_error").len(), 1);
        // Pod series are bridged too; the fixture has the 70 pods' CPU and memory.
        assert_eq!(views(&page, "pod_cpu_usage_seconds_total").len(), 70);
        assert_eq!(
            page.bridged_samples(),
            70 * 2 + 70 * 2 + 2 + 1,
            "container and pod CPU and memory, node CPU and memory, scrape_error"
        );
    }

    #[test]
    fn sample_parts_survive_odd_spacing_and_commas() {
        let text = "# TYPE container_cpu_usage_seconds_total counter\n\
                    container_cpu_usage_seconds_total { container=\"a\" , namespace=\"n\",pod=\"p\", } 1.5e+09 1633253812125\n\
                    node_memory_working_set_bytes{} 42\n\
                    node_swap_usage_bytes 0 17\r\n\
                    resource_scrape_error\t0\n\
                    other_metric{a=\"b\"} 1\n";
        let page = KubeletPage::index(Bytes::from(text)).unwrap();
        assert_eq!(
            views(&page, "container_cpu_usage_seconds_total"),
            [(
                "container_cpu_usage_seconds_total".into(),
                "container=\"a\" , namespace=\"n\",pod=\"p\"".into(),
                "1.5e+09".into(),
                PLAIN_VALUE,
                Some(1_633_253_812_125)
            )]
        );
        assert_eq!(
            views(&page, "node_memory_working_set_bytes"),
            [(
                "node_memory_working_set_bytes".into(),
                String::new(),
                "42".into(),
                PLAIN_VALUE,
                None
            )]
        );
        assert_eq!(views(&page, "node_swap_usage_bytes")[0].2, "0");
        assert_eq!(views(&page, "node_swap_usage_bytes")[0].4, Some(17));
        assert_eq!(views(&page, "resource_scrape_error")[0].2, "0");
        assert_eq!(page.bridged_samples(), 4);
    }

    #[test]
    fn flags_mark_what_openmetrics_needs_rewritten() {
        let text = "container_cpu_usage_seconds_total{container=\"a\",node=\"x\",pod=\"p\\tq\"} Inf\n\
                    container_cpu_usage_seconds_total{container=\"b\"} -1\n\
                    container_memory_working_set_bytes{container=\"a\",pod=\"p\\\\q\\\"r\\n\"} -1\n\
                    container_memory_working_set_bytes{container=\"nodes\"} NaN\n";
        let page = KubeletPage::index(Bytes::from(text)).unwrap();
        let cpu = views(&page, "container_cpu_usage_seconds_total");
        assert_eq!(cpu[0].3, NODE_LABEL | ODD_ESCAPE);
        assert_eq!(cpu[1].3, PLAIN_VALUE | NOT_OPENMETRICS);
        let mem = views(&page, "container_memory_working_set_bytes");
        // Negative gauges are fine; the known escapes are too; "nodes" is not a node label.
        assert_eq!(mem[0].3, PLAIN_VALUE);
        assert_eq!(mem[1].3, PLAIN_VALUE);
    }

    #[test]
    fn interleaved_families_are_grouped_and_mistyped_ones_dropped() {
        let text = "node_memory_working_set_bytes 1 1\n\
                    container_memory_working_set_bytes{container=\"a\"} 2 1\n\
                    node_memory_working_set_bytes 3 2\n\
                    # TYPE node_cpu_usage_seconds_total gauge\n\
                    node_cpu_usage_seconds_total 4 1\n";
        let page = KubeletPage::index(Bytes::from(text)).unwrap();
        let mem: Vec<String> = views(&page, "node_memory_working_set_bytes")
            .into_iter()
            .map(|v| v.2)
            .collect();
        assert_eq!(mem, ["1", "3"]);
        assert_eq!(views(&page, "container_memory_working_set_bytes").len(), 1);
        assert!(views(&page, "node_cpu_usage_seconds_total").is_empty());
        assert!(!page.has_family(6));
    }

    #[test]
    fn plain_numbers() {
        for ok in [
            "0",
            "-1",
            "+1",
            "1.5",
            "1.5e+09",
            "1E-3",
            "+Inf",
            "-Inf",
            "NaN",
            "12345678901234567890",
        ] {
            assert!(is_plain_number(ok.as_bytes()), "{ok}");
        }
        for odd in [
            "Inf", "inf", "nan", "+inf", "1.", ".5", "1e", "", "-", "0x1p3", "1_0", "Infinity",
        ] {
            assert!(!is_plain_number(odd.as_bytes()), "{odd}");
        }
    }

    #[test]
    fn a_malformed_page_is_an_error_with_its_line() {
        let err = KubeletPage::index(Bytes::from_static(b"ok 1\nbad{ 1\n")).unwrap_err();
        assert_eq!(err.line, 2);
    }
}
