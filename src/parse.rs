//! A zero-copy parser of the Prometheus text exposition format (version 0.0.4).
//!
//! [`Parser`] walks a payload line by line and yields [`Entry`] values that borrow from it:
//! HELP and TYPE lines, other comments, and samples. Nothing is copied or allocated per
//! sample; label values are unescaped (and then allocated) only when they contain a
//! backslash escape and a caller asks for them.
//!
//! The accepted language is what Prometheus's own scraper (`model/textparse`, `PromParser`)
//! accepts, so that a page Prometheus can scrape is a page we can decode:
//!
//! - spaces and tabs separate tokens anywhere on a line, including before the first token,
//!   around `{`, `=`, `,` and `}`, and after the timestamp;
//! - blank lines are skipped; `\n` and `\r\n` both end a line, and the last line need not end;
//! - `# HELP name text` and `# TYPE name type` are metadata when `HELP`/`TYPE` is followed by
//!   whitespace; any other line starting with `#` is a comment;
//! - a label set may be empty (`{}`) and may end in a comma (`{a="1",}`);
//! - values are Go `strconv.ParseFloat` numbers: decimals with optional fraction and
//!   exponent, `NaN`, `Inf`/`Infinity` with an optional sign, all case-insensitive; hex
//!   floats and `_` separators are refused, as Prometheus refuses them, and so is a decimal
//!   that overflows float64 (Go's `ErrRange`);
//! - timestamps are non-negative integers of milliseconds since the epoch (a `-` is refused,
//!   as Prometheus's lexer refuses it).
//!
//! Where Prometheus is looser than the format's specification we chose the specification,
//! and say so: the payload must be UTF-8 (Prometheus checks only label values and HELP
//! text), pairs in a label set must be separated by commas (Prometheus lets
//! `{a="1" b="2"}` through, an accident its own source comments on), a label value may not
//! span lines, and metric and label names must be the classic unquoted ones. Errors stop the
//! iteration: after an `Err`, the parser yields nothing more.
//!
//! Speed (see `benches/parser.rs`): the payload is checked for UTF-8 once, in bulk, so that
//! tokens can be sliced as `&str` without further checks; lines are split with `memchr`;
//! label values, most of a kubelet page, are scanned eight bytes at a time; a sample's name
//! is first compared with the previous sample's; values take Clinger's exact fast path.

use std::borrow::Cow;
use std::fmt;
use std::iter::FusedIterator;

/// One line of meaning in a text-format payload. Blank lines are not entries.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry<'a> {
    /// `# HELP metric text`.
    Help(Help<'a>),
    /// `# TYPE metric kind`.
    Type { metric: &'a str, kind: MetricType },
    /// Any other line starting with `#`: the text after the `#`, without the leading blanks.
    Comment(&'a str),
    /// A sample line.
    Sample(Sample<'a>),
}

/// A `# HELP` line. The text is kept escaped until asked for, because most consumers skip it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Help<'a> {
    pub metric: &'a str,
    raw_text: &'a str,
}

impl<'a> Help<'a> {
    /// The help text with `\\` and `\n` unescaped; borrowed unless it held an escape.
    pub fn text(&self) -> Cow<'a, str> {
        unescape(self.raw_text, false)
    }

    /// The help text exactly as written (after the single separator following the name).
    pub fn raw_text(&self) -> &'a str {
        self.raw_text
    }
}

/// The metric types of the text format's `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

impl MetricType {
    /// The type's name as it appears in a `# TYPE` line.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::Summary => "summary",
            MetricType::Untyped => "untyped",
        }
    }

    fn from_text(text: &str) -> Option<Self> {
        Some(match text {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" => MetricType::Histogram,
            "summary" => MetricType::Summary,
            "untyped" => MetricType::Untyped,
            _ => return None,
        })
    }
}

impl fmt::Display for MetricType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One sample line. Every part borrows from the payload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample<'a> {
    /// The metric name, e.g. `container_cpu_usage_seconds_total`.
    pub name: &'a str,
    /// The label set, already validated; iterate it lazily.
    pub labels: Labels<'a>,
    /// The value, exactly as Go's `strconv.ParseFloat` reads it.
    pub value: f64,
    /// The optional timestamp, in milliseconds since the Unix epoch (never negative).
    pub timestamp_ms: Option<i64>,
    /// The 1-based line number of the sample in the payload.
    pub line: usize,
}

impl<'a> Sample<'a> {
    /// The label text between the braces; see [`Labels::raw`].
    pub fn labels_raw(&self) -> &'a str {
        self.labels.raw
    }
}

/// A validated label set, iterated lazily.
///
/// Only the parser makes these, after checking the syntax, so iterating cannot fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Labels<'a> {
    raw: &'a str,
    /// Whether any value holds a backslash; without one no value needs unescaping.
    escaped: bool,
}

impl<'a> Labels<'a> {
    /// The label pairs as written between the braces, without the blanks that surround them
    /// and without a trailing comma, so that `format!("{{{raw},node=\"n\"}}")` (or just
    /// `node="n"` when empty) is always a valid label set. Escapes are left as they are.
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// Whether the set has no labels (no braces, or `{}`).
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Whether some value holds a backslash escape. When not, every raw value is its own
    /// unescaped value.
    pub fn has_escapes(&self) -> bool {
        self.escaped
    }

    /// A raw value of this set, unescaped.
    #[inline]
    pub fn unescape(&self, raw_value: &'a str) -> Cow<'a, str> {
        if self.escaped {
            unescape_label_value(raw_value)
        } else {
            Cow::Borrowed(raw_value)
        }
    }

    /// The pairs in order, with values unescaped (borrowed unless they held an escape).
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, Cow<'a, str>)> + 'a {
        let labels = *self;
        self.iter_raw()
            .map(move |(name, value)| (name, labels.unescape(value)))
    }

    /// The pairs in order, with values exactly as written between the quotes.
    pub fn iter_raw(&self) -> RawLabels<'a> {
        RawLabels {
            raw: self.raw,
            pos: 0,
        }
    }

    /// The unescaped value of the first label called `name`.
    pub fn get(&self, name: &str) -> Option<Cow<'a, str>> {
        self.iter_raw()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| self.unescape(v))
    }
}

/// Iterator over `(name, raw value)` pairs of a validated label set.
#[derive(Debug, Clone)]
pub struct RawLabels<'a> {
    raw: &'a str,
    pos: usize,
}

impl<'a> Iterator for RawLabels<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        // The text was validated by the parser; every step still checks its bounds so that a
        // broken invariant ends the iteration instead of panicking.
        let b = self.raw.as_bytes();
        let mut p = skip_blanks(b, self.pos);
        let name_start = p;
        p = scan_label_name(b, p);
        let name = self.raw.get(name_start..p)?;
        p = skip_blanks(b, p);
        if b.get(p) != Some(&b'=') {
            return None;
        }
        p = skip_blanks(b, p + 1);
        if b.get(p) != Some(&b'"') {
            return None;
        }
        let value_start = p + 1;
        let (value_end, _) = find_closing_quote(b, value_start)?;
        let value = self.raw.get(value_start..value_end)?;
        p = skip_blanks(b, value_end + 1);
        if b.get(p) == Some(&b',') {
            p += 1;
        }
        self.pos = p;
        if name.is_empty() {
            return None;
        }
        Some((name, value))
    }
}

impl FusedIterator for RawLabels<'_> {}

/// Unescapes a label value as Prometheus does: `\"`, `\\` and `\n`; any other backslash
/// sequence is kept as written. Borrowed when there is nothing to unescape.
pub fn unescape_label_value(raw: &str) -> Cow<'_, str> {
    unescape(raw, true)
}

fn unescape(raw: &str, quotes: bool) -> Cow<'_, str> {
    if !raw.as_bytes().contains(&b'\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.clone().next() {
            Some('\\') => {
                out.push('\\');
                chars.next();
            }
            Some('n') => {
                out.push('\n');
                chars.next();
            }
            Some('"') if quotes => {
                out.push('"');
                chars.next();
            }
            _ => out.push('\\'),
        }
    }
    Cow::Owned(out)
}

/// A malformed payload: where, and what was expected there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {kind}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// 1-based byte column within the line.
    pub column: usize,
    pub kind: ParseErrorKind,
}

/// What a [`ParseError`] found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    #[error("invalid UTF-8")]
    InvalidUtf8,
    #[error("expected a metric name, a comment or a blank line, found {found}")]
    ExpectedMetricName { found: Found },
    #[error("expected a metric name after # {directive}, found {found}")]
    ExpectedMetadataName {
        directive: &'static str,
        found: Found,
    },
    #[error("expected a space after the metric name in # {directive}, found {found}")]
    ExpectedMetadataSeparator {
        directive: &'static str,
        found: Found,
    },
    #[error(
        "unknown metric type {found:?} (expected counter, gauge, histogram, summary or untyped)"
    )]
    UnknownMetricType { found: String },
    #[error("expected a space or '{{' after metric name {name:?}, found {found}")]
    ExpectedLabelsOrValue { name: String, found: Found },
    #[error("expected a label name or '}}', found {found}")]
    ExpectedLabelName { found: Found },
    #[error("expected '=' after label name {name:?}, found {found}")]
    ExpectedEquals { name: String, found: Found },
    #[error("expected '\"' to open the value of label {name:?}, found {found}")]
    ExpectedQuote { name: String, found: Found },
    #[error("the value of label {name:?} has no closing '\"'")]
    UnterminatedLabelValue { name: String },
    #[error("expected ',' or '}}' after the value of label {name:?}, found {found}")]
    ExpectedCommaOrBrace { name: String, found: Found },
    #[error("expected a sample value after {name:?}")]
    MissingValue { name: String },
    #[error("invalid sample value {token:?} (expected a decimal number, NaN, +Inf or -Inf)")]
    InvalidValue { token: String },
    #[error("sample value {token:?} is out of the float64 range")]
    ValueOutOfRange { token: String },
    #[error(
        "invalid timestamp {token:?} (expected non-negative integer milliseconds since the epoch)"
    )]
    InvalidTimestamp { token: String },
    #[error("expected the end of the line after the timestamp, found {found}")]
    ExpectedEndOfLine { found: Found },
}

/// What the parser found where it expected something else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Char(char),
    EndOfLine,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Char(c) => write!(f, "{c:?}"),
            Found::EndOfLine => f.write_str("the end of the line"),
        }
    }
}

/// The longest token an error message quotes, so that one bad line cannot flood a log.
const MAX_QUOTED: usize = 64;

/// Iterator over the entries of a text-format payload.
///
/// Each call to `next` consumes at least one line, so iteration always ends. After an error
/// the iterator is exhausted.
#[derive(Debug, Clone)]
pub struct Parser<'a> {
    /// The payload up to the start of the line holding the first invalid UTF-8 byte.
    text: &'a str,
    pos: usize,
    /// Lines consumed so far; the line being parsed is `line + 1`.
    line: usize,
    /// Column (1-based) of the first invalid UTF-8 byte in the line that follows `text`.
    utf8_error_column: Option<usize>,
    done: bool,
    /// The previous sample's metric name: a family's samples share it, so checking for it
    /// first skips most per-byte name scanning.
    last_name: &'a str,
}

impl<'a> Parser<'a> {
    /// A parser over `payload`. UTF-8 is checked once, here, in bulk; an invalid byte
    /// surfaces as an error on its line after the lines before it were yielded.
    pub fn new(payload: &'a [u8]) -> Self {
        let (text, utf8_error_column) = match std::str::from_utf8(payload) {
            Ok(text) => (text, None),
            Err(e) => {
                let valid = e.valid_up_to();
                let prefix = payload.get(..valid).unwrap_or_default();
                let line_start = memchr::memrchr(b'\n', prefix).map_or(0, |i| i + 1);
                let text = payload
                    .get(..line_start)
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .unwrap_or_default();
                (text, Some(valid - line_start + 1))
            }
        };
        Self {
            text,
            pos: 0,
            line: 0,
            utf8_error_column,
            done: false,
            last_name: "",
        }
    }

    /// How many lines have been consumed so far.
    pub fn lines_read(&self) -> usize {
        self.line
    }
}

impl<'a> Iterator for Parser<'a> {
    type Item = Result<Entry<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let bytes = self.text.as_bytes();
            let start = self.pos;
            if start >= bytes.len() {
                self.done = true;
                return self.utf8_error_column.map(|column| {
                    Err(ParseError {
                        line: self.line + 1,
                        column,
                        kind: ParseErrorKind::InvalidUtf8,
                    })
                });
            }
            let rest = bytes.get(start..).unwrap_or_default();
            let (mut end, next) = match memchr::memchr(b'\n', rest) {
                Some(i) => (start + i, start + i + 1),
                None => (bytes.len(), bytes.len()),
            };
            if end > start && bytes.get(end - 1) == Some(&b'\r') {
                end -= 1;
            }
            self.pos = next;
            self.line += 1;
            // `start` follows a '\n' (or is 0) and `end` precedes '\r', '\n' or the end, so
            // both are character boundaries; `get` only guards the invariant.
            let Some(line) = self.text.get(start..end) else {
                self.done = true;
                return Some(Err(ParseError {
                    line: self.line,
                    column: 1,
                    kind: ParseErrorKind::InvalidUtf8,
                }));
            };
            match parse_line(line, self.last_name) {
                Ok(None) => continue,
                Ok(Some(entry)) => {
                    return Some(Ok(match entry {
                        Entry::Sample(mut s) => {
                            s.line = self.line;
                            self.last_name = s.name;
                            Entry::Sample(s)
                        }
                        other => other,
                    }));
                }
                Err((column, kind)) => {
                    self.done = true;
                    return Some(Err(ParseError {
                        line: self.line,
                        column: column + 1,
                        kind,
                    }));
                }
            }
        }
        None
    }
}

impl FusedIterator for Parser<'_> {}

/// An error inside a line: the 0-based byte column and what was wrong.
type LineError = (usize, ParseErrorKind);

const METRIC_START: u8 = 1;
const METRIC_CONT: u8 = 2;
const LABEL_START: u8 = 4;
const LABEL_CONT: u8 = 8;

/// Character classes of metric names (`[a-zA-Z_:][a-zA-Z0-9_:]*`) and label names
/// (`[a-zA-Z_][a-zA-Z0-9_]*`), one table lookup per byte.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        let alpha = b.is_ascii_alphabetic() || b == b'_';
        let digit = b.is_ascii_digit();
        let mut v = 0;
        if alpha || b == b':' {
            v |= METRIC_START | METRIC_CONT;
        }
        if digit {
            v |= METRIC_CONT | LABEL_CONT;
        }
        if alpha {
            v |= LABEL_START | LABEL_CONT;
        }
        t[c] = v;
        c += 1;
    }
    t
};

#[inline]
fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

#[inline]
fn skip_blanks(b: &[u8], mut p: usize) -> usize {
    while let Some(&c) = b.get(p) {
        if !is_blank(c) {
            break;
        }
        p += 1;
    }
    p
}

#[inline]
fn scan_class(b: &[u8], p: usize, start: u8, cont: u8) -> usize {
    match b.get(p) {
        Some(&c) if CLASS[usize::from(c)] & start != 0 => {}
        _ => return p,
    }
    let mut q = p + 1;
    while let Some(&c) = b.get(q) {
        if CLASS[usize::from(c)] & cont == 0 {
            break;
        }
        q += 1;
    }
    q
}

/// End of the metric name starting at `p` (`p` itself when there is none).
#[inline]
fn scan_metric_name(b: &[u8], p: usize) -> usize {
    scan_class(b, p, METRIC_START, METRIC_CONT)
}

/// End of the label name starting at `p` (`p` itself when there is none).
#[inline]
fn scan_label_name(b: &[u8], p: usize) -> usize {
    scan_class(b, p, LABEL_START, LABEL_CONT)
}

/// Index of the `"` closing a label value whose text starts at `p`, and whether the value
/// holds a backslash (which escapes the byte after it). Multi-byte characters never contain
/// `"` or `\`, so bytes are enough.
///
/// Label values are most of a kubelet page's bytes, so this looks at eight at a time.
#[inline]
fn find_closing_quote(b: &[u8], mut p: usize) -> Option<(usize, bool)> {
    let mut escaped = false;
    loop {
        if let Some(chunk) = b.get(p..p + 8).and_then(|c| <[u8; 8]>::try_from(c).ok()) {
            let x = u64::from_le_bytes(chunk);
            let marks = bytes_equal(x, b'"') | bytes_equal(x, b'\\');
            if marks == 0 {
                p += 8;
                continue;
            }
            p += (marks.trailing_zeros() / 8) as usize;
        }
        match *b.get(p)? {
            b'"' => return Some((p, escaped)),
            b'\\' => {
                escaped = true;
                p += 2;
            }
            _ => p += 1,
        }
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Sets the high bit of each byte of `x` (little-endian) that equals `byte`. Only the lowest
/// mark is guaranteed exact (a borrow can mark a byte above a match), which is the one the
/// caller uses.
#[inline]
fn bytes_equal(x: u64, byte: u8) -> u64 {
    let y = x ^ (ONES * u64::from(byte));
    y.wrapping_sub(ONES) & !y & HIGHS
}

/// End of the token starting at `p`: the next blank or the end of the line.
#[inline]
fn scan_token(b: &[u8], mut p: usize) -> usize {
    while let Some(&c) = b.get(p) {
        if is_blank(c) {
            break;
        }
        p += 1;
    }
    p
}

fn found_at(line: &str, p: usize) -> Found {
    line.get(p..)
        .and_then(|s| s.chars().next())
        .map_or(Found::EndOfLine, Found::Char)
}

/// The text of `line[a..b]` for an error message, cut to [`MAX_QUOTED`] bytes.
fn quoted(line: &str, a: usize, b: usize) -> String {
    let s = line.get(a..b).unwrap_or_default();
    if s.len() <= MAX_QUOTED {
        return s.to_owned();
    }
    let mut cut = MAX_QUOTED;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = s.get(..cut).unwrap_or_default().to_owned();
    out.push('…');
    out
}

/// Slices `line` at positions the grammar guarantees are character boundaries (next to an
/// ASCII byte or at an end); a broken guarantee is reported rather than panicking.
#[inline]
fn sub(line: &str, a: usize, b: usize) -> Result<&str, LineError> {
    line.get(a..b).ok_or((a, ParseErrorKind::InvalidUtf8))
}

/// Parses one line without its terminator. `Ok(None)` for a blank line. `name_hint` is a
/// valid metric name the line probably starts with.
fn parse_line<'a>(line: &'a str, name_hint: &str) -> Result<Option<Entry<'a>>, LineError> {
    let b = line.as_bytes();
    let p = skip_blanks(b, 0);
    match b.get(p) {
        None => Ok(None),
        Some(b'#') => parse_hash_line(line, p + 1).map(Some),
        Some(_) => parse_sample(line, p, name_hint).map(|s| Some(Entry::Sample(s))),
    }
}

/// A line starting with `#`; `p` is just after it.
fn parse_hash_line(line: &str, p: usize) -> Result<Entry<'_>, LineError> {
    let b = line.as_bytes();
    let text_start = skip_blanks(b, p);
    let comment = || sub(line, text_start, b.len()).map(Entry::Comment);
    // Only `#`, blanks, then HELP or TYPE, then blanks make a metadata line.
    if text_start == p {
        return comment();
    }
    let directive = match b.get(text_start..text_start + 4) {
        Some(b"HELP") => "HELP",
        Some(b"TYPE") => "TYPE",
        _ => return comment(),
    };
    let after = text_start + 4;
    match b.get(after) {
        Some(&c) if is_blank(c) => {}
        _ => return comment(),
    }
    let name_start = skip_blanks(b, after);
    let name_end = scan_metric_name(b, name_start);
    if name_end == name_start {
        return Err((
            name_start,
            ParseErrorKind::ExpectedMetadataName {
                directive,
                found: found_at(line, name_start),
            },
        ));
    }
    let metric = sub(line, name_start, name_end)?;
    // Prometheus drops exactly one separator after the name: the rest is the text.
    let text_start = match b.get(name_end) {
        None => name_end,
        Some(&c) if is_blank(c) => name_end + 1,
        Some(_) => {
            return Err((
                name_end,
                ParseErrorKind::ExpectedMetadataSeparator {
                    directive,
                    found: found_at(line, name_end),
                },
            ));
        }
    };
    let text = sub(line, text_start, b.len())?;
    if directive == "HELP" {
        return Ok(Entry::Help(Help {
            metric,
            raw_text: text,
        }));
    }
    let word = text.trim_end_matches([' ', '\t']);
    match MetricType::from_text(word) {
        Some(kind) => Ok(Entry::Type { metric, kind }),
        None => Err((
            text_start,
            ParseErrorKind::UnknownMetricType {
                found: quoted(line, text_start, text_start + word.len()),
            },
        )),
    }
}

/// A sample line whose first non-blank byte is at `p`; see [`parse_line`] for `name_hint`.
fn parse_sample<'a>(line: &'a str, p: usize, name_hint: &str) -> Result<Sample<'a>, LineError> {
    let b = line.as_bytes();
    let rest = b.get(p..).unwrap_or_default();
    let hinted = p + name_hint.len();
    let name_end = if !name_hint.is_empty()
        && rest.starts_with(name_hint.as_bytes())
        && b.get(hinted)
            .is_none_or(|&c| CLASS[usize::from(c)] & METRIC_CONT == 0)
    {
        hinted
    } else {
        scan_metric_name(b, p)
    };
    if name_end == p {
        return Err((
            p,
            ParseErrorKind::ExpectedMetricName {
                found: found_at(line, p),
            },
        ));
    }
    let name = sub(line, p, name_end)?;
    let mut q = skip_blanks(b, name_end);
    let mut labels = Labels::default();
    if b.get(q) == Some(&b'{') {
        let (set, close) = parse_label_set(line, q + 1)?;
        labels = set;
        q = skip_blanks(b, close + 1);
    } else if q == name_end && q < b.len() {
        return Err((
            q,
            ParseErrorKind::ExpectedLabelsOrValue {
                name: quoted(line, p, name_end),
                found: found_at(line, q),
            },
        ));
    }
    if q >= b.len() {
        return Err((
            q,
            ParseErrorKind::MissingValue {
                name: quoted(line, p, name_end),
            },
        ));
    }
    let value_end = scan_token(b, q);
    let value = parse_value(b.get(q..value_end).unwrap_or_default()).map_err(|out_of_range| {
        let token = quoted(line, q, value_end);
        let kind = if out_of_range {
            ParseErrorKind::ValueOutOfRange { token }
        } else {
            ParseErrorKind::InvalidValue { token }
        };
        (q, kind)
    })?;
    let ts_start = skip_blanks(b, value_end);
    let mut timestamp_ms = None;
    if ts_start < b.len() {
        let ts_end = scan_token(b, ts_start);
        let ts = parse_timestamp(b.get(ts_start..ts_end).unwrap_or_default()).ok_or_else(|| {
            (
                ts_start,
                ParseErrorKind::InvalidTimestamp {
                    token: quoted(line, ts_start, ts_end),
                },
            )
        })?;
        timestamp_ms = Some(ts);
        let tail = skip_blanks(b, ts_end);
        if tail < b.len() {
            return Err((
                tail,
                ParseErrorKind::ExpectedEndOfLine {
                    found: found_at(line, tail),
                },
            ));
        }
    }
    Ok(Sample {
        name,
        labels,
        value,
        timestamp_ms,
        line: 0,
    })
}

/// Validates the label set whose text starts at `p` (just after `{`). Returns the labels
/// and the index of the closing `}`.
fn parse_label_set(line: &str, p: usize) -> Result<(Labels<'_>, usize), LineError> {
    let b = line.as_bytes();
    let first = skip_blanks(b, p);
    let mut last_end = first;
    let mut q = first;
    let mut escaped = false;
    loop {
        match b.get(q) {
            Some(b'}') => {
                let raw = sub(line, first, last_end)?;
                return Ok((Labels { raw, escaped }, q));
            }
            Some(_) => {}
            None => {
                return Err((
                    q,
                    ParseErrorKind::ExpectedLabelName {
                        found: Found::EndOfLine,
                    },
                ));
            }
        }
        let name_end = scan_label_name(b, q);
        if name_end == q {
            return Err((
                q,
                ParseErrorKind::ExpectedLabelName {
                    found: found_at(line, q),
                },
            ));
        }
        let name_start = q;
        let label = || quoted(line, name_start, name_end);
        q = skip_blanks(b, name_end);
        if b.get(q) != Some(&b'=') {
            return Err((
                q,
                ParseErrorKind::ExpectedEquals {
                    name: label(),
                    found: found_at(line, q),
                },
            ));
        }
        q = skip_blanks(b, q + 1);
        if b.get(q) != Some(&b'"') {
            return Err((
                q,
                ParseErrorKind::ExpectedQuote {
                    name: label(),
                    found: found_at(line, q),
                },
            ));
        }
        let (close, value_escaped) = find_closing_quote(b, q + 1)
            .ok_or_else(|| (q, ParseErrorKind::UnterminatedLabelValue { name: label() }))?;
        escaped |= value_escaped;
        last_end = close + 1;
        q = skip_blanks(b, last_end);
        match b.get(q) {
            Some(b',') => q = skip_blanks(b, q + 1),
            Some(b'}') => {}
            _ => {
                return Err((
                    q,
                    ParseErrorKind::ExpectedCommaOrBrace {
                        name: label(),
                        found: found_at(line, q),
                    },
                ));
            }
        }
    }
}

/// Exact powers of ten representable in an f64 (10^22 is the last one).
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Largest integer every smaller one of which an f64 holds exactly.
const MAX_EXACT_INT: u64 = 1 << 53;

/// Parses a sample value with Go's `strconv.ParseFloat` grammar and results (minus the hex
/// and `_` forms Prometheus refuses). `Err(true)` means a well-formed decimal that overflows
/// float64; `Err(false)` a malformed token.
///
/// Most kubelet values have few digits and a small exponent. Those take Clinger's fast path:
/// when the decimal mantissa `m` is at most 2^53 and the power of ten `e` is within ±22, both
/// `m` and `10^|e|` are exact f64s, so the one IEEE multiply or divide is correctly rounded,
/// which is what Go's (and Rust's) correctly rounded conversion also returns. Everything
/// else goes to `str::parse::<f64>`, which is correctly rounded for any input.
fn parse_value(tok: &[u8]) -> Result<f64, bool> {
    let (negative, body) = match tok.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, tok),
    };
    let Some(&first) = body.first() else {
        return Err(false);
    };
    if first.is_ascii_alphabetic() {
        return parse_special(body, tok.len() != body.len(), negative);
    }

    // Decimal grammar: digits [ '.' digits ] [ ('e'|'E') [sign] digits ], at least one digit
    // in the mantissa.
    let mut i = 0;
    let mut mantissa: u64 = 0;
    let mut digits = 0usize; // significant digits folded into `mantissa` (leading zeros skipped)
    let mut int_digits = 0usize;
    while let Some(&c) = body.get(i) {
        if !c.is_ascii_digit() {
            break;
        }
        fold_digit(&mut mantissa, &mut digits, c);
        int_digits += 1;
        i += 1;
    }
    let mut frac_digits = 0usize;
    if body.get(i) == Some(&b'.') {
        i += 1;
        while let Some(&c) = body.get(i) {
            if !c.is_ascii_digit() {
                break;
            }
            fold_digit(&mut mantissa, &mut digits, c);
            frac_digits += 1;
            i += 1;
        }
    }
    if int_digits + frac_digits == 0 {
        return Err(false);
    }
    let mut exp: i64 = 0;
    if matches!(body.get(i), Some(b'e' | b'E')) {
        i += 1;
        let exp_negative = match body.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let exp_start = i;
        while let Some(&c) = body.get(i) {
            if !c.is_ascii_digit() {
                break;
            }
            // Saturate: any exponent this large already means overflow or underflow.
            exp = (exp * 10 + i64::from(c - b'0')).min(1_000_000);
            i += 1;
        }
        if i == exp_start {
            return Err(false);
        }
        if exp_negative {
            exp = -exp;
        }
    }
    if i != body.len() {
        return Err(false);
    }

    if digits <= 19 && mantissa <= MAX_EXACT_INT {
        // `frac_digits` is bounded by the token length, far below i64::MAX.
        let e10 = exp.saturating_sub(i64::try_from(frac_digits).unwrap_or(i64::MAX));
        let m = mantissa as f64;
        let v = if mantissa == 0 {
            Some(0.0)
        } else if (0..=22).contains(&e10) {
            POW10.get(e10.unsigned_abs() as usize).map(|p| m * p)
        } else if (-22..0).contains(&e10) {
            POW10.get(e10.unsigned_abs() as usize).map(|p| m / p)
        } else {
            None
        };
        if let Some(v) = v {
            return Ok(if negative { -v } else { v });
        }
    }
    slow_parse(tok)
}

/// Appends one decimal digit to the mantissa, ignoring leading zeros; past 19 significant
/// digits only the count grows, which sends the value to the slow path.
#[inline]
fn fold_digit(mantissa: &mut u64, digits: &mut usize, c: u8) {
    let d = u64::from(c - b'0');
    if *digits == 0 && d == 0 {
        return;
    }
    if *digits < 19 {
        *mantissa = *mantissa * 10 + d;
    }
    *digits += 1;
}

/// The correctly rounded conversion of a token already known to be a Go decimal.
#[cold]
fn slow_parse(tok: &[u8]) -> Result<f64, bool> {
    let s = std::str::from_utf8(tok).map_err(|_| false)?;
    let v: f64 = s.parse().map_err(|_| false)?;
    if v.is_infinite() {
        // Only an overflowing decimal gets here; Go reports it as ErrRange.
        return Err(true);
    }
    Ok(v)
}

/// `Inf`, `Infinity` (optionally signed) and `NaN` (unsigned), in any case, as Go reads them.
#[cold]
fn parse_special(body: &[u8], signed: bool, negative: bool) -> Result<f64, bool> {
    if body.eq_ignore_ascii_case(b"inf") || body.eq_ignore_ascii_case(b"infinity") {
        Ok(if negative {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        })
    } else if !signed && body.eq_ignore_ascii_case(b"nan") {
        Ok(f64::NAN)
    } else {
        Err(false)
    }
}

/// A non-negative decimal integer that fits an i64, as Prometheus's lexer and `ParseInt`
/// accept timestamps.
fn parse_timestamp(tok: &[u8]) -> Option<i64> {
    if tok.is_empty() {
        return None;
    }
    if !tok.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Eighteen digits cannot overflow an i64; only longer tokens need checked arithmetic.
    if tok.len() <= 18 {
        return Some(tok.iter().fold(0, |v, &c| v * 10 + i64::from(c - b'0')));
    }
    tok.iter().try_fold(0i64, |v, &c| {
        v.checked_mul(10)?.checked_add(i64::from(c - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(input: &str) -> Vec<Entry<'_>> {
        Parser::new(input.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap_or_else(|e| panic!("{input:?} failed: {e}"))
    }

    fn samples(input: &str) -> Vec<Sample<'_>> {
        entries(input)
            .into_iter()
            .filter_map(|e| match e {
                Entry::Sample(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    fn one(input: &str) -> Sample<'_> {
        let s = samples(input);
        assert_eq!(s.len(), 1, "{input:?}");
        s[0]
    }

    fn error(input: &str) -> ParseError {
        match Parser::new(input.as_bytes()).find_map(Result::err) {
            Some(e) => e,
            None => panic!("{input:?} parsed without error"),
        }
    }

    fn labels(s: &Sample<'_>) -> Vec<(String, String)> {
        s.labels
            .iter()
            .map(|(n, v)| (n.to_owned(), v.into_owned()))
            .collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn kubelet_sample_line() {
        let s = one(
            "container_cpu_usage_seconds_total{container=\"coredns\",namespace=\"kube-system\",pod=\"coredns-558bd4d5db-4dpjz\"} 4.710169 1633253812125\n",
        );
        assert_eq!(s.name, "container_cpu_usage_seconds_total");
        assert_eq!(s.value, 4.710169);
        assert_eq!(s.timestamp_ms, Some(1_633_253_812_125));
        assert_eq!(s.line, 1);
        assert_eq!(
            s.labels_raw(),
            "container=\"coredns\",namespace=\"kube-system\",pod=\"coredns-558bd4d5db-4dpjz\""
        );
        assert_eq!(
            labels(&s),
            pairs(&[
                ("container", "coredns"),
                ("namespace", "kube-system"),
                ("pod", "coredns-558bd4d5db-4dpjz"),
            ])
        );
        assert_eq!(
            s.labels.get("pod").as_deref(),
            Some("coredns-558bd4d5db-4dpjz")
        );
        assert_eq!(s.labels.get("node"), None);
        assert!(matches!(s.labels.get("pod"), Some(Cow::Borrowed(_))));
    }

    #[test]
    fn metadata_comments_and_blank_lines() {
        let input = "# HELP m_total Cumulative \\\\ things\\nsecond line\n\
                     # TYPE m_total counter\n\
                     \n   \t\n\
                     # just a comment\n\
                     #HELP not metadata\n\
                     # HELPER not metadata either\n\
                     # HELP\n\
                     m_total 1\n";
        let e = entries(input);
        assert_eq!(e.len(), 7);
        let Entry::Help(h) = &e[0] else {
            panic!("{:?}", e[0])
        };
        assert_eq!(h.metric, "m_total");
        assert_eq!(h.raw_text(), "Cumulative \\\\ things\\nsecond line");
        assert_eq!(h.text(), "Cumulative \\ things\nsecond line");
        assert_eq!(
            e[1],
            Entry::Type {
                metric: "m_total",
                kind: MetricType::Counter
            }
        );
        assert_eq!(e[2], Entry::Comment("just a comment"));
        assert_eq!(e[3], Entry::Comment("HELP not metadata"));
        assert_eq!(e[4], Entry::Comment("HELPER not metadata either"));
        assert_eq!(e[5], Entry::Comment("HELP"));
        let Entry::Sample(s) = &e[6] else {
            panic!("{:?}", e[6])
        };
        assert_eq!((s.name, s.value, s.line), ("m_total", 1.0, 9));
    }

    #[test]
    fn help_text_keeps_all_but_one_separator_and_unknown_escapes() {
        let e = entries("# HELP a  two spaces \\t\\\"\n# HELP b\n# HELP c \n");
        let texts: Vec<_> = e
            .iter()
            .map(|e| match e {
                Entry::Help(h) => (h.metric, h.text().into_owned()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            texts,
            [
                ("a", " two spaces \\t\\\"".to_owned()),
                ("b", String::new()),
                ("c", String::new())
            ]
        );
    }

    #[test]
    fn every_metric_type() {
        for kind in [
            MetricType::Counter,
            MetricType::Gauge,
            MetricType::Histogram,
            MetricType::Summary,
            MetricType::Untyped,
        ] {
            let input = format!("# TYPE x\t{kind}\t \n");
            assert_eq!(entries(&input), [Entry::Type { metric: "x", kind }]);
        }
        let e = error("# TYPE x Gauge\n");
        assert_eq!(
            e.kind,
            ParseErrorKind::UnknownMetricType {
                found: "Gauge".into()
            }
        );
        assert_eq!((e.line, e.column), (1, 10));
        assert_eq!(
            error("# TYPE x\n").kind,
            ParseErrorKind::UnknownMetricType { found: "".into() }
        );
    }

    #[test]
    fn crlf_line_endings_and_missing_final_newline() {
        let s = samples("# TYPE a gauge\r\na{x=\"1\"} 1 5\r\n\r\nb 2\r\nc 3");
        let got: Vec<_> = s
            .iter()
            .map(|s| (s.name, s.value, s.timestamp_ms, s.line))
            .collect();
        assert_eq!(
            got,
            [
                ("a", 1.0, Some(5), 2),
                ("b", 2.0, None, 4),
                ("c", 3.0, None, 5)
            ]
        );
    }

    #[test]
    fn blanks_between_every_token() {
        let s = one(" \t m \t{ \t a \t= \t\"1\" \t, b=\"2\" , \t} \t 7 \t 8 \t");
        assert_eq!(s.name, "m");
        assert_eq!(s.labels_raw(), "a \t= \t\"1\" \t, b=\"2\"");
        assert_eq!(labels(&s), pairs(&[("a", "1"), ("b", "2")]));
        assert_eq!((s.value, s.timestamp_ms), (7.0, Some(8)));
        // A value may follow `}` directly, as Prometheus allows.
        let s = one("m{a=\"1\"}9");
        assert_eq!(s.value, 9.0);
    }

    #[test]
    fn empty_and_trailing_comma_label_sets() {
        for input in ["m{} 1", "m { } 1", "m 1"] {
            let s = one(input);
            assert!(s.labels.is_empty(), "{input}");
            assert_eq!(s.labels.iter().count(), 0);
        }
        let s = one("m{a=\"1\",} 1");
        assert_eq!(s.labels_raw(), "a=\"1\"");
        assert_eq!(labels(&s), pairs(&[("a", "1")]));
        let s = one("m{a=\"1\" , } 1");
        assert_eq!(s.labels_raw(), "a=\"1\"");
    }

    #[test]
    fn label_values_with_separators_quotes_and_escapes() {
        let s = one(
            r#"m{a="x,y=z}w",b="say \"hi\"",c="back\\slash",d="new\nline",e="odd\q",f="ünï"} 1"#,
        );
        assert_eq!(
            labels(&s),
            pairs(&[
                ("a", "x,y=z}w"),
                ("b", "say \"hi\""),
                ("c", "back\\slash"),
                ("d", "new\nline"),
                ("e", "odd\\q"),
                ("f", "ünï"),
            ])
        );
        let raw: Vec<_> = s.labels.iter_raw().collect();
        assert_eq!(raw[1], ("b", r#"say \"hi\""#));
        assert!(matches!(s.labels.get("a"), Some(Cow::Borrowed("x,y=z}w"))));
        assert!(matches!(s.labels.get("b"), Some(Cow::Owned(_))));
        // Escapes are read left to right: `\\n` is a backslash then `n`.
        assert_eq!(unescape_label_value(r"\\n"), "\\n");
        assert_eq!(unescape_label_value(r"end\"), "end\\");
    }

    #[test]
    fn metric_and_label_name_syntax() {
        let s = one("a:b_C9:{_x9=\"1\"} 1");
        assert_eq!(s.name, "a:b_C9:");
        assert_eq!(labels(&s), pairs(&[("_x9", "1")]));
        let s = one(":m 1");
        assert_eq!(s.name, ":m");

        let cases: &[(&str, ParseErrorKind, usize)] = &[
            (
                "9m 1",
                ParseErrorKind::ExpectedMetricName {
                    found: Found::Char('9'),
                },
                1,
            ),
            (
                "m{a:b=\"1\"} 1",
                ParseErrorKind::ExpectedEquals {
                    name: "a".into(),
                    found: Found::Char(':'),
                },
                4,
            ),
            (
                "m{9=\"1\"} 1",
                ParseErrorKind::ExpectedLabelName {
                    found: Found::Char('9'),
                },
                3,
            ),
            (
                "m-x 1",
                ParseErrorKind::ExpectedLabelsOrValue {
                    name: "m".into(),
                    found: Found::Char('-'),
                },
                2,
            ),
        ];
        assert_errors(cases);
    }

    #[test]
    fn malformed_label_sets_name_what_was_expected() {
        let cases: &[(&str, ParseErrorKind, usize)] = &[
            (
                "m{a=\"1\" b=\"2\"} 1",
                ParseErrorKind::ExpectedCommaOrBrace {
                    name: "a".into(),
                    found: Found::Char('b'),
                },
                9,
            ),
            (
                "m{a=\"1\",,} 1",
                ParseErrorKind::ExpectedLabelName {
                    found: Found::Char(','),
                },
                9,
            ),
            (
                "m{,} 1",
                ParseErrorKind::ExpectedLabelName {
                    found: Found::Char(','),
                },
                3,
            ),
            (
                "m{a=1} 1",
                ParseErrorKind::ExpectedQuote {
                    name: "a".into(),
                    found: Found::Char('1'),
                },
                5,
            ),
            (
                "m{a=\"1} 1",
                ParseErrorKind::UnterminatedLabelValue { name: "a".into() },
                5,
            ),
            (
                "m{a=\"1\\\"} 1",
                ParseErrorKind::UnterminatedLabelValue { name: "a".into() },
                5,
            ),
            (
                "m{a=\"1\"",
                ParseErrorKind::ExpectedCommaOrBrace {
                    name: "a".into(),
                    found: Found::EndOfLine,
                },
                8,
            ),
            (
                "m{a",
                ParseErrorKind::ExpectedEquals {
                    name: "a".into(),
                    found: Found::EndOfLine,
                },
                4,
            ),
            (
                "m{",
                ParseErrorKind::ExpectedLabelName {
                    found: Found::EndOfLine,
                },
                3,
            ),
        ];
        assert_errors(cases);
    }

    /// Each one-line input fails on line 1 with the given kind at the given column.
    fn assert_errors(cases: &[(&str, ParseErrorKind, usize)]) {
        for (input, kind, column) in cases {
            let e = error(input);
            assert_eq!((&e.kind, e.column, e.line), (kind, *column, 1), "{input}");
        }
    }

    #[test]
    fn values_follow_go_parse_float() {
        let cases: &[(&str, f64)] = &[
            ("0", 0.0),
            ("-0", -0.0),
            ("+1.5", 1.5),
            ("1.", 1.0),
            (".5", 0.5),
            ("1.e2", 100.0),
            ("1E+2", 100.0),
            ("1.253376e+07", 12_533_760.0),
            ("1.633252712e+9", 1_633_252_712.0),
            ("1.616273408e+09", 1_616_273_408.0),
            ("357.35491", 357.35491),
            ("0.000001234", 1.234e-6),
            ("1e-400", 0.0),
            ("-1e-400", -0.0),
            ("1.7976931348623157e308", f64::MAX),
            ("4.9e-324", 5e-324),
            ("123456789012345678901234567890", 1.2345678901234568e29),
            ("9007199254740993", 9_007_199_254_740_992.0),
            ("Inf", f64::INFINITY),
            ("+inf", f64::INFINITY),
            ("-INF", f64::NEG_INFINITY),
            ("infinity", f64::INFINITY),
            ("-Infinity", f64::NEG_INFINITY),
        ];
        for (tok, want) in cases {
            let got = parse_value(tok.as_bytes()).unwrap_or_else(|e| panic!("{tok}: {e}"));
            assert_eq!(got.to_bits(), want.to_bits(), "{tok}");
        }
        for tok in ["NaN", "nan", "NAN", "nAn"] {
            assert!(parse_value(tok.as_bytes()).is_ok_and(f64::is_nan), "{tok}");
        }
        for tok in [
            "", "+", "-", ".", "e5", ".e5", "1e", "1e+", "1.2.3", "0x10", "0x1p3", "1_000", "+nan",
            "-NaN", "infin", "in", "1f", "--1", "1e5.0", "١",
        ] {
            assert_eq!(parse_value(tok.as_bytes()), Err(false), "{tok:?}");
        }
        for tok in [
            "1e309",
            "-1e309",
            "1.7976931348623159e308",
            "1e999999999999",
        ] {
            assert_eq!(parse_value(tok.as_bytes()), Err(true), "{tok:?}");
        }
    }

    /// The fast path must never disagree with the correctly rounded slow path.
    #[test]
    fn fast_path_agrees_with_std_on_generated_decimals() {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut buf = String::new();
        for _ in 0..200_000 {
            let r = next();
            let digits = (r % 20) as usize + 1;
            let point = (r >> 8) as usize % (digits + 1);
            buf.clear();
            if r & (1 << 20) != 0 {
                buf.push('-');
            }
            let mut d = next();
            for i in 0..digits {
                if i == point {
                    buf.push('.');
                }
                buf.push(char::from(b'0' + (d % 10) as u8));
                d /= 10;
                if d == 0 {
                    d = next();
                }
            }
            if r & (1 << 21) != 0 {
                let e = (next() % 70) as i64 - 35;
                buf.push_str(&format!("e{e}"));
            }
            let want: f64 = buf.parse().unwrap_or_else(|e| panic!("{buf}: {e}"));
            let got = parse_value(buf.as_bytes()).unwrap_or_else(|e| panic!("{buf}: {e}"));
            assert_eq!(got.to_bits(), want.to_bits(), "{buf}");
        }
    }

    #[test]
    fn value_errors_name_the_token() {
        let e = error("m 12abc 5\n");
        assert_eq!(
            e.kind,
            ParseErrorKind::InvalidValue {
                token: "12abc".into()
            }
        );
        assert_eq!((e.line, e.column), (1, 3));
        assert_eq!(
            error("m 1e400\n").kind,
            ParseErrorKind::ValueOutOfRange {
                token: "1e400".into()
            }
        );
        assert_eq!(
            error("m{a=\"b\"}\n").kind,
            ParseErrorKind::MissingValue { name: "m".into() }
        );
        assert_eq!(
            error("m \n").kind,
            ParseErrorKind::MissingValue { name: "m".into() }
        );
        let long = format!("m {}", "9".repeat(500) + "x");
        let ParseErrorKind::InvalidValue { token } = error(&long).kind else {
            panic!()
        };
        assert_eq!(token.chars().count(), MAX_QUOTED + 1);
    }

    #[test]
    fn timestamps() {
        assert_eq!(one("m 1 0").timestamp_ms, Some(0));
        assert_eq!(one("m 1 007").timestamp_ms, Some(7));
        assert_eq!(one("m 1 9223372036854775807").timestamp_ms, Some(i64::MAX));
        for bad in [
            "-62135596800000",
            "9223372036854775808",
            "1.5",
            "1e3",
            "+5",
            "5x",
        ] {
            let e = error(&format!("m 1 {bad}\n"));
            assert_eq!(
                e.kind,
                ParseErrorKind::InvalidTimestamp { token: bad.into() },
                "{bad}"
            );
            assert_eq!(e.column, 5);
        }
        let e = error("m 1 2 3\n");
        assert_eq!(
            e.kind,
            ParseErrorKind::ExpectedEndOfLine {
                found: Found::Char('3')
            }
        );
        assert_eq!(e.column, 7);
    }

    #[test]
    fn metadata_errors() {
        let e = error("# HELP 9x text\n");
        assert_eq!(
            e.kind,
            ParseErrorKind::ExpectedMetadataName {
                directive: "HELP",
                found: Found::Char('9')
            }
        );
        let e = error("# TYPE \n");
        assert_eq!(
            e.kind,
            ParseErrorKind::ExpectedMetadataName {
                directive: "TYPE",
                found: Found::EndOfLine
            }
        );
        let e = error("# HELP x{y} text\n");
        assert_eq!(
            e.kind,
            ParseErrorKind::ExpectedMetadataSeparator {
                directive: "HELP",
                found: Found::Char('{')
            }
        );
        assert_eq!(e.column, 9);
    }

    #[test]
    fn errors_carry_the_line_number_and_stop_iteration() {
        let input = "# HELP a x\na 1\n\nb{ 2\nc 3\n";
        let mut p = Parser::new(input.as_bytes());
        assert!(matches!(p.next(), Some(Ok(Entry::Help(_)))));
        assert!(matches!(p.next(), Some(Ok(Entry::Sample(_)))));
        let e = p.next().and_then(Result::err).expect("error");
        assert_eq!((e.line, e.column), (4, 4));
        assert_eq!(
            e.to_string(),
            "line 4, column 4: expected a label name or '}', found '2'"
        );
        assert!(p.next().is_none());
        assert!(p.next().is_none());
    }

    #[test]
    fn invalid_utf8_is_reported_on_its_line_after_earlier_entries() {
        let mut input = b"a 1\nb{x=\"".to_vec();
        input.extend_from_slice(&[0xff, 0xfe]);
        input.extend_from_slice(b"\"} 2\nc 3\n");
        let mut p = Parser::new(&input);
        assert!(matches!(p.next(), Some(Ok(Entry::Sample(s))) if s.name == "a"));
        let e = p.next().and_then(Result::err).expect("error");
        assert_eq!(
            e,
            ParseError {
                line: 2,
                column: 6,
                kind: ParseErrorKind::InvalidUtf8
            }
        );
        assert!(p.next().is_none());
        // On the first line, too.
        let e = error_bytes(&[b'm', b' ', 0xc3]);
        assert_eq!((e.line, e.column), (1, 3));
    }

    fn error_bytes(input: &[u8]) -> ParseError {
        match Parser::new(input).find_map(Result::err) {
            Some(e) => e,
            None => panic!("{input:?} parsed without error"),
        }
    }

    #[test]
    fn nul_and_multibyte_characters_inside_values_and_comments() {
        let input = "# ünïcode \0 comment\nm{a=\"\0ü\\\\\"} 1\n";
        let e = entries(input);
        assert_eq!(e[0], Entry::Comment("ünïcode \0 comment"));
        let Entry::Sample(s) = &e[1] else { panic!() };
        assert_eq!(labels(s), pairs(&[("a", "\0ü\\")]));
    }

    #[test]
    fn empty_input_and_only_blank_lines() {
        assert!(entries("").is_empty());
        assert!(entries("\n\r\n \t\n").is_empty());
        assert_eq!(Parser::new(b"\n\n").lines_read(), 0);
    }

    #[test]
    fn the_previous_name_is_only_a_hint() {
        let got: Vec<_> = samples("m 1\nm_total 2\nm{a=\"1\"} 3\nm:x 4\nm 5\nmm 6\nm\t7\n")
            .iter()
            .map(|s| (s.name, s.value))
            .collect();
        assert_eq!(
            got,
            [
                ("m", 1.0),
                ("m_total", 2.0),
                ("m", 3.0),
                ("m:x", 4.0),
                ("m", 5.0),
                ("mm", 6.0),
                ("m", 7.0)
            ]
        );
        let e = error("abc 1\nabc-d 2\n");
        assert_eq!((e.line, e.column), (2, 4));
    }

    /// The eight-bytes-at-a-time search must find quotes and backslashes at every offset.
    #[test]
    fn closing_quotes_and_escapes_at_every_offset() {
        for len in 0..40 {
            for esc in [None, Some(0), Some(7), Some(8), Some(15)] {
                let mut value = "v".repeat(len);
                let mut want = value.clone();
                if let Some(at) = esc.filter(|&at| at <= len) {
                    value.insert_str(at, "\\\"");
                    want.insert(at, '"');
                }
                let line = format!("m{{a=\"{value}\",b=\"x\"}} 1");
                let s = one(&line);
                assert_eq!(labels(&s), pairs(&[("a", &want), ("b", "x")]), "{line}");
                assert_eq!(s.labels.has_escapes(), value.contains('\\'), "{line}");
            }
            let line = format!("m{{a=\"{}", "v".repeat(len));
            assert_eq!(
                error(&line).kind,
                ParseErrorKind::UnterminatedLabelValue { name: "a".into() },
                "{line}"
            );
        }
    }

    #[test]
    fn long_timestamps_are_checked_for_overflow() {
        assert_eq!(
            one("m 1 999999999999999999").timestamp_ms,
            Some(999_999_999_999_999_999)
        );
        assert_eq!(one("m 1 0000000000000000000000001").timestamp_ms, Some(1));
        assert_eq!(
            error("m 1 9999999999999999999").kind,
            ParseErrorKind::InvalidTimestamp {
                token: "9999999999999999999".into()
            }
        );
    }

    #[test]
    fn lone_carriage_return_is_not_a_line_end() {
        let e = error("m 1\r2\n");
        assert_eq!(
            e.kind,
            ParseErrorKind::InvalidValue {
                token: "1\r2".into()
            }
        );
    }
}
