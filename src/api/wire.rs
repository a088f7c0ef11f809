//! Low-level writers: JSON strings and timestamps exactly as Go's `encoding/json` and
//! `metav1.Time` write them, and a protobuf sink that can also just count bytes.
//!
//! Everything appends to a caller's `Vec<u8>`; nothing allocates per value.

/// Bytes that Go's `encoding/json` escapes (with its default HTML escaping), plus 0xE2, the
/// lead byte of U+2028 and U+2029, which it also escapes.
const fn needs_escape_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t[b'<' as usize] = true;
    t[b'>' as usize] = true;
    t[b'&' as usize] = true;
    t[0xE2] = true;
    t
}

static NEEDS_ESCAPE: [bool; 256] = needs_escape_table();
const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `s` as a JSON string literal, escaped as Go's `json.Marshal` escapes it.
pub fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    json_str_body(out, s);
    out.push(b'"');
}

/// The escaped contents of a JSON string, without quotes.
pub fn json_str_body(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if !NEEDS_ESCAPE[c as usize] {
            i += 1;
            continue;
        }
        if c == 0xE2 {
            // Only U+2028 (E2 80 A8) and U+2029 (E2 80 A9) are escaped.
            let tail = (b.get(i + 1).copied(), b.get(i + 2).copied());
            if let (Some(0x80), Some(last @ (0xA8 | 0xA9))) = tail {
                out.extend_from_slice(&b[start..i]);
                out.extend_from_slice(if last == 0xA8 { b"\\u2028" } else { b"\\u2029" });
                i += 3;
                start = i;
            } else {
                i += 1;
            }
            continue;
        }
        out.extend_from_slice(&b[start..i]);
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            // Go 1.22 and later write \b and \f in short form.
            0x08 => out.extend_from_slice(b"\\b"),
            0x0C => out.extend_from_slice(b"\\f"),
            _ => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(c >> 4) as usize]);
                out.push(HEX[(c & 0xF) as usize]);
            }
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&b[start..]);
}

/// Appends a JSON object key and colon: `"key":`. `key` must need no escaping.
pub fn json_key(out: &mut Vec<u8>, key: &str) {
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

/// Seconds since the epoch, floored, of a nanosecond timestamp.
pub fn unix_seconds(ns: i64) -> i64 {
    ns.div_euclid(1_000_000_000)
}

/// Appends `secs` as RFC 3339 in UTC with whole seconds (`2006-01-02T15:04:05Z`), as
/// `metav1.Time` marshals.
pub fn rfc3339(out: &mut Vec<u8>, secs: i64) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let mut buf = [0u8; 20];
    let year_digits = write_year(year, &mut buf);
    out.extend_from_slice(year_digits);
    let two = |v: i64| [b'0' + (v / 10) as u8, b'0' + (v % 10) as u8];
    out.push(b'-');
    out.extend_from_slice(&two(month));
    out.push(b'-');
    out.extend_from_slice(&two(day));
    out.push(b'T');
    out.extend_from_slice(&two(rem / 3600));
    out.push(b':');
    out.extend_from_slice(&two(rem / 60 % 60));
    out.push(b':');
    out.extend_from_slice(&two(rem % 60));
    out.push(b'Z');
}

/// Go pads years to four digits and writes larger or negative years as they are.
fn write_year(year: i64, buf: &mut [u8; 20]) -> &[u8] {
    let negative = year < 0;
    let mut v = year.unsigned_abs();
    let mut i = buf.len();
    let mut digits = 0;
    while v > 0 || digits < 4 {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        digits += 1;
    }
    if negative {
        i -= 1;
        buf[i] = b'-';
    }
    &buf[i..]
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Where protobuf bytes go: a buffer, or a counter that only measures.
pub trait Sink {
    fn put(&mut self, bytes: &[u8]);
    fn varint(&mut self, v: u64);
    /// A length-delimited submessage: key, length, then the message.
    fn message<M: Message + ?Sized>(&mut self, field: u32, m: &M);

    fn key(&mut self, field: u32, wire_type: u32) {
        self.varint(u64::from(field << 3 | wire_type));
    }

    /// A string field. Go's generated code writes non-pointer strings even when empty, and so
    /// do we, so our bytes match.
    fn string(&mut self, field: u32, s: &str) {
        self.bytes_field(field, s.as_bytes());
    }

    fn bytes_field(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.put(b);
    }

    fn int64(&mut self, field: u32, v: i64) {
        self.key(field, 0);
        // Negative int64 values are sign-extended to ten bytes, as protobuf requires.
        self.varint(v as u64);
    }
}

/// A protobuf message that can write itself to any sink.
pub trait Message {
    fn encode<S: Sink>(&self, s: &mut S);

    fn encoded_len(&self) -> usize {
        let mut c = Counter(0);
        self.encode(&mut c);
        c.0
    }
}

/// Counts bytes without writing them.
pub struct Counter(pub usize);

pub fn varint_len(v: u64) -> usize {
    // One byte per started group of seven bits.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

impl Sink for Counter {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
    fn varint(&mut self, v: u64) {
        self.0 += varint_len(v);
    }
    fn message<M: Message + ?Sized>(&mut self, field: u32, m: &M) {
        let len = m.encoded_len();
        self.0 += varint_len(u64::from(field << 3 | 2)) + varint_len(len as u64) + len;
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.push(v as u8);
    }
    fn message<M: Message + ?Sized>(&mut self, field: u32, m: &M) {
        self.key(field, 2);
        self.varint(m.encoded_len() as u64);
        m.encode(self);
    }
}

/// Bytes that are already an encoded message.
pub struct Raw<'a>(pub &'a [u8]);

impl Message for Raw<'_> {
    fn encode<S: Sink>(&self, s: &mut S) {
        s.put(self.0);
    }
    fn encoded_len(&self) -> usize {
        self.0.len()
    }
}

/// The protobuf serializer's magic prefix.
pub const PROTO_MAGIC: &[u8; 4] = b"k8s\0";

/// The head of a `runtime.Unknown` envelope up to its `raw` bytes, for a message of
/// `raw_len` bytes: `k8s\0`, the envelope key and length, `typeMeta`, and `raw`'s key and
/// length. The caller appends the message and then [`ENVELOPE_TAIL`].
pub fn envelope_head(api_version: &str, kind: &str, raw_len: usize) -> Vec<u8> {
    let type_meta_len = 1
        + varint_len(api_version.len() as u64)
        + api_version.len()
        + 1
        + varint_len(kind.len() as u64)
        + kind.len();
    let mut out = Vec::with_capacity(32 + api_version.len() + kind.len());
    out.extend_from_slice(PROTO_MAGIC);
    // The Unknown message follows the magic bare, without a key or length of its own.
    out.key(1, 2);
    out.varint(type_meta_len as u64);
    out.string(1, api_version);
    out.string(2, kind);
    out.key(2, 2);
    out.varint(raw_len as u64);
    out
}

/// `contentEncoding` and `contentType`, both empty, which Go writes after `raw`.
pub const ENVELOPE_TAIL: &[u8] = &[0x1a, 0x00, 0x22, 0x00];

/// A whole `k8s\0` + `runtime.Unknown` envelope around an encoded message.
pub fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let mut out = envelope_head(api_version, kind, raw.len());
    out.reserve(raw.len() + ENVELOPE_TAIL.len());
    out.extend_from_slice(raw);
    out.extend_from_slice(ENVELOPE_TAIL);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn js(s: &str) -> String {
        let mut out = Vec::new();
        json_str(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_strings_escape_like_go() {
        // Expected values are Go's json.Marshal output.
        assert_eq!(js("plain-name.1"), r#""plain-name.1""#);
        assert_eq!(js(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(js("<a&b>"), r#""\u003ca\u0026b\u003e""#);
        assert_eq!(js("x\ny\tz\r"), r#""x\ny\tz\r""#);
        assert_eq!(js("\u{8}\u{c}\u{1}\u{1f}"), r#""\b\f\u0001\u001f""#);
        assert_eq!(js("a\u{2028}b\u{2029}c"), r#""a\u2028b\u2029c""#);
        assert_eq!(js("ünïcode €"), "\"ünïcode €\"");
        // Other characters starting with 0xE2 stay as they are.
        assert_eq!(js("→"), "\"→\"");
        // Whatever we write, a JSON parser reads back.
        for s in ["a\u{2028}", "\"<>&\u{0}", "→\u{2029}→"] {
            let parsed: String = serde_json::from_str(&js(s)).unwrap();
            assert_eq!(parsed, s);
        }
    }

    fn ts(secs: i64) -> String {
        let mut out = Vec::new();
        rfc3339(&mut out, secs);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn timestamps_match_go() {
        assert_eq!(ts(0), "1970-01-01T00:00:00Z");
        assert_eq!(ts(1_633_253_809), "2021-10-03T09:36:49Z");
        assert_eq!(ts(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(ts(4_102_444_799), "2099-12-31T23:59:59Z");
        assert_eq!(ts(-1), "1969-12-31T23:59:59Z");
        assert_eq!(ts(-62_135_596_800), "0001-01-01T00:00:00Z");
        assert_eq!(ts(253_402_300_800), "10000-01-01T00:00:00Z");
        assert_eq!(unix_seconds(-1), -1);
        assert_eq!(unix_seconds(1_999_999_999), 1);
    }

    #[test]
    fn varints_and_counter_agree() {
        for v in [0u64, 1, 127, 128, 16_383, 16_384, u64::MAX, (-1i64) as u64] {
            let mut out = Vec::new();
            out.varint(v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            let decoded = prost::encoding::decode_varint(&mut out.as_slice()).unwrap();
            assert_eq!(decoded, v);
        }
    }

    #[test]
    fn envelope_decodes_as_runtime_unknown() {
        use prost::Message as _;
        let raw = vec![7u8; 300];
        let bytes = envelope("metrics.k8s.io/v1beta1", "NodeMetrics", &raw);
        assert_eq!(&bytes[..4], PROTO_MAGIC);
        let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(&bytes[4..]).unwrap();
        let tm = unknown.type_meta.unwrap();
        assert_eq!(tm.api_version.as_deref(), Some("metrics.k8s.io/v1beta1"));
        assert_eq!(tm.kind.as_deref(), Some("NodeMetrics"));
        assert_eq!(unknown.raw.as_deref(), Some(&raw[..]));
        assert_eq!(unknown.content_encoding.as_deref(), Some(""));
        assert_eq!(unknown.content_type.as_deref(), Some(""));
    }
}
