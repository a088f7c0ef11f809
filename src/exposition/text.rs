//! The two text formats Prometheus scrapes, at the byte level: family headers, numbers and
//! timestamps, written straight into a byte buffer without allocating.
//!
//! - Text format 0.0.4: `# HELP`/`# TYPE` name the samples (`foo_total` for a counter),
//!   timestamps are integer milliseconds.
//! - OpenMetrics 1.0: a counter family is named without its `_total` suffix and an info
//!   family without `_info` (the samples keep them), timestamps are seconds, and the body
//!   ends with `# EOF`.

/// The exposition format of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`.
    Text,
    /// `application/openmetrics-text` 1.0.0, or 0.0.1 when the client asked for that
    /// version (the two are written the same way).
    OpenMetrics { v1: bool },
}

impl Format {
    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics { v1: true } => {
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            }
            Format::OpenMetrics { v1: false } => {
                "application/openmetrics-text; version=0.0.1; charset=utf-8"
            }
        }
    }

    pub fn is_openmetrics(self) -> bool {
        matches!(self, Format::OpenMetrics { .. })
    }
}

/// What a family's samples are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Samples are named `<family>_total`.
    Counter,
    Gauge,
    /// A constant 1 whose labels carry the information; samples are named `<family>_info`.
    /// The text format calls it a gauge.
    Info,
}

/// Writes a family's `# HELP` and `# TYPE` lines. `sample_name` is the samples' name, with
/// its `_total` or `_info` suffix; OpenMetrics names the family without it.
pub fn family_header(out: &mut Vec<u8>, format: Format, sample_name: &str, kind: Kind, help: &str) {
    let (name, kind_text) = match (format, kind) {
        (Format::Text, Kind::Counter) => (sample_name, "counter"),
        (Format::Text, Kind::Gauge | Kind::Info) => (sample_name, "gauge"),
        (Format::OpenMetrics { .. }, Kind::Counter) => (
            sample_name.strip_suffix("_total").unwrap_or(sample_name),
            "counter",
        ),
        (Format::OpenMetrics { .. }, Kind::Gauge) => (sample_name, "gauge"),
        (Format::OpenMetrics { .. }, Kind::Info) => (
            sample_name.strip_suffix("_info").unwrap_or(sample_name),
            "info",
        ),
    };
    out.extend_from_slice(b"# HELP ");
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    push_help(out, format, help);
    out.extend_from_slice(b"\n# TYPE ");
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    out.extend_from_slice(kind_text.as_bytes());
    out.push(b'\n');
}

/// HELP text escaped for the format: `\` and newline in both, `"` in OpenMetrics too.
fn push_help(out: &mut Vec<u8>, format: Format, help: &str) {
    for &b in help.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'"' if format.is_openmetrics() => out.extend_from_slice(b"\\\""),
            _ => out.push(b),
        }
    }
}

/// The end of a response body: `# EOF` for OpenMetrics, nothing for the text format.
pub fn end(out: &mut Vec<u8>, format: Format) {
    if format.is_openmetrics() {
        out.extend_from_slice(b"# EOF\n");
    }
}

/// Appends the decimal digits of `n`.
#[inline]
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends `n`, with a `-` when negative.
#[inline]
pub fn push_i64(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    push_u64(out, n.unsigned_abs());
}

/// Appends `units / 10^scale` as an exact decimal, without trailing zeros (`250000000` at
/// scale 9 is `0.25`). Every integer quantity the exposition reports (nanocores, nanoseconds,
/// milliseconds) goes through here, so the text is the exact figure, which Prometheus reads
/// as the nearest float.
#[inline]
pub fn push_scaled(out: &mut Vec<u8>, units: u64, scale: u32) {
    let div = 10u64.pow(scale);
    push_u64(out, units / div);
    let mut frac = units % div;
    if frac == 0 {
        return;
    }
    let mut digits = scale;
    while frac.is_multiple_of(10) {
        frac /= 10;
        digits -= 1;
    }
    out.push(b'.');
    let mut buf = [b'0'; 20];
    let width = digits as usize;
    let mut i = width;
    while frac > 0 && i > 0 {
        i -= 1;
        buf[i] = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    out.extend_from_slice(&buf[..width]);
}

/// Appends a sample timestamp given in milliseconds: as is in the text format, as seconds
/// in OpenMetrics.
#[inline]
pub fn push_timestamp_ms(out: &mut Vec<u8>, format: Format, ms: i64) {
    match format {
        Format::Text => push_i64(out, ms),
        Format::OpenMetrics { .. } => {
            if ms < 0 {
                out.push(b'-');
            }
            push_scaled(out, ms.unsigned_abs(), 3);
        }
    }
}

/// Appends a float as Go's Prometheus client writes it (`1`, `0.25`, `1e+06`, `NaN`,
/// `+Inf`), which both formats accept.
#[inline]
pub fn push_f64(out: &mut Vec<u8>, v: f64) {
    crate::gofloat::append(out, v);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn integers_and_scaled_decimals_are_exact() {
        assert_eq!(s(|o| push_u64(o, 0)), "0");
        assert_eq!(s(|o| push_u64(o, u64::MAX)), "18446744073709551615");
        assert_eq!(s(|o| push_i64(o, i64::MIN)), "-9223372036854775808");
        assert_eq!(s(|o| push_scaled(o, 250_000_000, 9)), "0.25");
        assert_eq!(s(|o| push_scaled(o, 1_000_000_001, 9)), "1.000000001");
        assert_eq!(s(|o| push_scaled(o, 3_000_000_000, 9)), "3");
        assert_eq!(s(|o| push_scaled(o, 7, 9)), "0.000000007");
        assert_eq!(s(|o| push_scaled(o, 12_345, 3)), "12.345");
        assert_eq!(s(|o| push_scaled(o, 12_300, 3)), "12.3");
        assert_eq!(s(|o| push_scaled(o, 5, 0)), "5");
        assert_eq!(s(|o| push_scaled(o, u64::MAX, 9)), "18446744073.709551615");
    }

    #[test]
    fn timestamps_are_milliseconds_or_seconds() {
        let om = Format::OpenMetrics { v1: true };
        assert_eq!(
            s(|o| push_timestamp_ms(o, Format::Text, 1_633_253_812_125)),
            "1633253812125"
        );
        assert_eq!(
            s(|o| push_timestamp_ms(o, om, 1_633_253_812_125)),
            "1633253812.125"
        );
        assert_eq!(
            s(|o| push_timestamp_ms(o, om, 1_633_253_812_000)),
            "1633253812"
        );
        assert_eq!(
            s(|o| push_timestamp_ms(o, om, 1_633_253_812_050)),
            "1633253812.05"
        );
    }

    #[test]
    fn headers_follow_each_format() {
        let om = Format::OpenMetrics { v1: true };
        assert_eq!(
            s(|o| family_header(o, Format::Text, "a_total", Kind::Counter, "A \\ \"b\"\nc")),
            "# HELP a_total A \\\\ \"b\"\\nc\n# TYPE a_total counter\n"
        );
        assert_eq!(
            s(|o| family_header(o, om, "a_total", Kind::Counter, "A \"b\"")),
            "# HELP a A \\\"b\\\"\n# TYPE a counter\n"
        );
        assert_eq!(
            s(|o| family_header(o, om, "x_info", Kind::Info, "X")),
            "# HELP x X\n# TYPE x info\n"
        );
        assert_eq!(
            s(|o| family_header(o, Format::Text, "x_info", Kind::Info, "X")),
            "# HELP x_info X\n# TYPE x_info gauge\n"
        );
        assert_eq!(s(|o| end(o, om)), "# EOF\n");
        assert_eq!(s(|o| end(o, Format::Text)), "");
    }
}
