//! Float formatting exactly as the Go Prometheus client writes sample values.
//!
//! Go's text exposition (`expfmt.writeFloat`) writes `1`, `0`, `-1`, `NaN`, `+Inf` and `-Inf`
//! literally and everything else with `strconv.AppendFloat(f, 'g', -1, 64)`: the shortest
//! decimal that parses back to the same `f64`, in plain notation when the decimal exponent is
//! in `-4..6` (`100000`, `0.000123`, `357.35491`) and in exponent notation otherwise, with a
//! signed exponent of at least two digits (`1e+06`, `1.23e-05`, `1.6243962483020916e+09`).
//! A negative zero compares equal to zero and is therefore written `0`, as Go does.
//!
//! Kubelet pages, the bridged `/metrics/resource` exposition and every test that compares
//! pages byte for byte rely on this matching Go to the byte. Nothing here allocates: the text
//! is built in a fixed stack buffer and then appended or written.

use std::fmt::{self, Write as _};

/// The longest text [`format()`] can produce, e.g. `-1.2345678901234567e-308` (24 bytes).
pub const MAX_LEN: usize = 32;

/// The formatted text of one float, held on the stack.
#[derive(Clone, Copy)]
pub struct Formatted {
    buf: [u8; MAX_LEN],
    len: usize,
}

impl Formatted {
    /// The formatted text.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }

    /// The formatted text as a string (it is always ASCII).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

impl fmt::Debug for Formatted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// `Display` adapter: `format!("{}", GoFloat(x))` writes `x` as Go's Prometheus client does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GoFloat(pub f64);

impl fmt::Display for GoFloat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(format(self.0).as_str())
    }
}

/// Appends `f` to `out` as Go's Prometheus client writes a sample value.
pub fn append(out: &mut Vec<u8>, f: f64) {
    out.extend_from_slice(format(f).as_bytes());
}

/// Writes `f` to `w` as Go's Prometheus client writes a sample value.
pub fn write<W: fmt::Write + ?Sized>(w: &mut W, f: f64) -> fmt::Result {
    w.write_str(format(f).as_str())
}

/// Formats `f` as Go's Prometheus client writes a sample value.
pub fn format(f: f64) -> Formatted {
    let mut out = Formatted {
        buf: [0; MAX_LEN],
        len: 0,
    };
    let literal: Option<&[u8]> = if f.is_nan() {
        Some(b"NaN")
    } else if f == f64::INFINITY {
        Some(b"+Inf")
    } else if f == f64::NEG_INFINITY {
        Some(b"-Inf")
    } else if f == 0.0 {
        Some(b"0")
    } else if f == 1.0 {
        Some(b"1")
    } else if f == -1.0 {
        Some(b"-1")
    } else {
        None
    };
    let mut w = Cursor {
        buf: &mut out.buf,
        len: 0,
    };
    match literal {
        Some(text) => w.put_all(text),
        None => shortest_g(f, &mut w),
    }
    out.len = w.len;
    out
}

/// The shortest round-trip digits of a finite, non-zero float and its decimal point position.
struct Digits {
    /// ASCII digits, no leading or trailing zeros (at most 17 for an `f64`).
    digits: [u8; 20],
    nd: usize,
    /// Position of the decimal point relative to the first digit, as Go's `decimalSlice.dp`:
    /// the value is `0.d1d2…dn × 10^dp`.
    dp: i32,
}

impl Digits {
    fn digit(&self, i: i32) -> u8 {
        usize::try_from(i)
            .ok()
            .filter(|&i| i < self.nd)
            .and_then(|i| self.digits.get(i).copied())
            .unwrap_or(b'0')
    }
}

/// Rust's `{:e}` yields the same shortest round-trip digits as Go's `strconv` (both produce
/// the shortest decimal that reads back to the same float, and the closest one when several
/// are equally short); only the layout differs, so the digits are taken from it and laid out
/// the Go way.
fn shortest_digits(abs: f64) -> Digits {
    if let Some(d) = integer_digits(abs) {
        return d;
    }
    let mut scratch = [0u8; MAX_LEN];
    let mut w = Cursor {
        buf: &mut scratch,
        len: 0,
    };
    // Writing into a fixed 32-byte buffer cannot fail for an f64: `{:e}` of a finite
    // positive f64 is at most 23 bytes.
    let _ = write!(w, "{abs:e}");
    let len = w.len;
    let text = scratch.get(..len).unwrap_or_default();

    let mut d = Digits {
        digits: [0; 20],
        nd: 0,
        dp: 0,
    };
    let mut exp: i32 = 0;
    let mut exp_neg = false;
    let mut in_exp = false;
    for &c in text {
        match c {
            b'e' => in_exp = true,
            b'-' if in_exp => exp_neg = true,
            b'0'..=b'9' if in_exp => exp = exp * 10 + i32::from(c - b'0'),
            b'0'..=b'9' => {
                if let Some(slot) = d.digits.get_mut(d.nd) {
                    *slot = c;
                    d.nd += 1;
                }
            }
            _ => {}
        }
    }
    while d.nd > 1 && d.digits.get(d.nd - 1) == Some(&b'0') {
        d.nd -= 1;
    }
    if exp_neg {
        exp = -exp;
    }
    d.dp = exp + 1;
    d
}

/// Below 2^53 every integer is a float and so is its neighbour one away, so the shortest
/// round-trip digits of an integer-valued float are its decimal digits without trailing
/// zeros: no need for the general algorithm (byte counts and whole seconds are common).
fn integer_digits(abs: f64) -> Option<Digits> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if !((1.0..EXACT).contains(&abs) && abs.fract() == 0.0) {
        return None;
    }
    // Exact: `abs` is an integer below 2^53.
    let mut n = abs as u64;
    let mut rev = [0u8; 20];
    let mut len = 0;
    while n > 0 {
        *rev.get_mut(len)? = b'0' + (n % 10) as u8;
        n /= 10;
        len += 1;
    }
    let mut d = Digits {
        digits: [0; 20],
        nd: 0,
        dp: i32::try_from(len).ok()?,
    };
    let zeros = rev.iter().take(len).take_while(|&&c| c == b'0').count();
    for &c in rev.get(zeros..len)?.iter().rev() {
        *d.digits.get_mut(d.nd)? = c;
        d.nd += 1;
    }
    Some(d)
}

/// `strconv.AppendFloat(f, 'g', -1, 64)` for finite, non-zero `f`.
fn shortest_g(f: f64, w: &mut Cursor<'_>) {
    if f.is_sign_negative() {
        w.put(b'-');
    }
    let d = shortest_digits(f.abs());
    let exp = d.dp - 1;
    // Go: with the shortest precision, %e is used when exp < -4 || exp >= 6.
    if !(-4..6).contains(&exp) {
        w.put(d.digit(0));
        if d.nd > 1 {
            w.put(b'.');
            for i in 1..d.nd {
                w.put(d.digit(i32::try_from(i).unwrap_or(i32::MAX)));
            }
        }
        w.put(b'e');
        w.put(if exp < 0 { b'-' } else { b'+' });
        let e = exp.unsigned_abs();
        if e >= 100 {
            w.put(b'0' + u8::try_from(e / 100).unwrap_or(0));
        }
        w.put(b'0' + u8::try_from(e / 10 % 10).unwrap_or(0));
        w.put(b'0' + u8::try_from(e % 10).unwrap_or(0));
        return;
    }
    // %f with exactly the digits needed: integer part (zero-padded up to dp), then the
    // fraction digits that remain.
    if d.dp > 0 {
        for i in 0..d.dp {
            w.put(d.digit(i));
        }
    } else {
        w.put(b'0');
    }
    let nd = i32::try_from(d.nd).unwrap_or(i32::MAX);
    let frac = (nd - d.dp).max(0);
    if frac > 0 {
        w.put(b'.');
        for i in 0..frac {
            w.put(d.digit(d.dp + i));
        }
    }
}

/// A bounded writer over a stack buffer; bytes past the end are dropped (cannot happen for
/// the lengths produced here, see [`MAX_LEN`]).
struct Cursor<'a> {
    buf: &'a mut [u8; MAX_LEN],
    len: usize,
}

impl Cursor<'_> {
    fn put(&mut self, c: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = c;
            self.len += 1;
        }
    }

    fn put_all(&mut self, s: &[u8]) {
        for &c in s {
            self.put(c);
        }
    }
}

impl fmt::Write for Cursor<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        match self.buf.get_mut(self.len..end) {
            Some(dst) => {
                dst.copy_from_slice(s.as_bytes());
                self.len = end;
                Ok(())
            }
            None => Err(fmt::Error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go(f: f64) -> String {
        format(f).as_str().to_owned()
    }

    /// Outputs of Go 1.22 `strconv.FormatFloat(f, 'g', -1, 64)` (through `expfmt.writeFloat`
    /// for the special cases), several taken verbatim from kubelet pages in
    /// `tests/fixtures/kubelet/`.
    #[test]
    fn matches_go_outputs() {
        let cases: &[(f64, &str)] = &[
            (12_533_760.0, "1.253376e+07"),
            (357.35491, "357.35491"),
            (1_624_396_248.302_091_6, "1.6243962483020916e+09"),
            (1e6, "1e+06"),
            (100_000.0, "100000"),
            (999_999.0, "999999"),
            (0.000123, "0.000123"),
            (1.23e-05, "1.23e-05"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (4.710169, "4.710169"),
            (1_616_273_408.0, "1.616273408e+09"),
            (32_923_648.0, "3.2923648e+07"),
            (392_847_388_672.0, "3.92847388672e+11"),
            (0.1, "0.1"),
            (0.3, "0.3"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1.5, "1.5"),
            (-1.5, "-1.5"),
            (2.0, "2"),
            (10.0, "10"),
            (123_456.0, "123456"),
            (1_234_567.0, "1.234567e+06"),
            (1e21, "1e+21"),
            (1e100, "1e+100"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (2.2250738585072014e-308, "2.2250738585072014e-308"),
            (-0.000123, "-0.000123"),
            (-1e-7, "-1e-07"),
            (1000.0, "1000"),
            (0.5, "0.5"),
            (1.0 / 3.0, "0.3333333333333333"),
            (2.0 / 3.0, "0.6666666666666666"),
            (100.0 / 3.0, "33.333333333333336"),
            (9_007_199_254_740_993.0, "9.007199254740992e+15"),
            (86.500663, "86.500663"),
            (1.121325, "1.121325"),
            (4.7026176e+07, "4.7026176e+07"),
        ];
        for &(f, want) in cases {
            assert_eq!(go(f), want, "formatting {f:?}");
        }
    }

    #[test]
    fn special_values_as_expfmt_writes_them() {
        assert_eq!(go(0.0), "0");
        assert_eq!(go(-0.0), "0");
        assert_eq!(go(1.0), "1");
        assert_eq!(go(-1.0), "-1");
        assert_eq!(go(f64::NAN), "NaN");
        assert_eq!(go(f64::INFINITY), "+Inf");
        assert_eq!(go(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn all_entry_points_agree() {
        for f in [0.25, 1e-9, 3.2923648e7, -7.0, f64::NAN] {
            let mut v = b"x=".to_vec();
            append(&mut v, f);
            let mut s = String::from("x=");
            write(&mut s, f).unwrap();
            assert_eq!(v, s.as_bytes());
            assert_eq!(format!("x={}", GoFloat(f)), s);
        }
    }

    /// The output must parse back to the very same float (the shortest round trip), over a
    /// deterministic spread of magnitudes and bit patterns.
    #[test]
    fn round_trips_bit_exactly() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let f = f64::from_bits(x);
            if !f.is_finite() {
                continue;
            }
            let text = go(f);
            let back: f64 = text.parse().unwrap();
            assert_eq!(
                back.to_bits(),
                if f == 0.0 { 0 } else { f.to_bits() },
                "{text}"
            );
            assert!(text.len() <= 24, "{text}");
        }
    }

    /// The integer fast path gives exactly what the general path gives.
    #[test]
    fn integer_fast_path_agrees_with_general_digits() {
        let general = |f: f64| {
            let mut buf = String::new();
            write!(buf, "{f:e}").unwrap();
            let (mantissa, exp) = buf.split_once('e').unwrap();
            let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
            let digits = digits.trim_end_matches('0').to_owned();
            (digits, exp.parse::<i32>().unwrap() + 1)
        };
        let mut x: u64 = 12345;
        let check = |n: u64| {
            let f = n as f64;
            let d = integer_digits(f).unwrap();
            let ours = String::from_utf8(d.digits[..d.nd].to_vec()).unwrap();
            assert_eq!((ours, d.dp), general(f), "{n}");
        };
        for n in [
            1,
            9,
            10,
            100,
            4096,
            12_533_760,
            1 << 52,
            (1 << 53) - 1,
            999_999_999_999,
        ] {
            check(n);
        }
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            check((x >> 11).max(1));
            check((x >> (11 + x % 40)).max(1));
            check(((x >> 30) * 4096).max(1));
        }
        assert!(integer_digits(0.5).is_none());
        assert!(integer_digits(9_007_199_254_740_992.0).is_none());
        assert!(integer_digits(0.0).is_none());
    }

    /// Plain notation exactly for decimal exponents -4..=5, as Go's `%g` rule says.
    #[test]
    fn notation_switches_at_go_thresholds() {
        for exp in -30i32..30 {
            let f = 1.5 * 10f64.powi(exp);
            let text = go(f);
            let plain = !text.contains('e');
            assert_eq!(plain, (-4..6).contains(&exp), "{f:e} -> {text}");
        }
    }
}
