//! Go-compatible durations.
//!
//! metrics-server's flags take Go duration strings (`--metric-resolution=15s`,
//! `--kubelet-request-timeout=1m30s`), and the metrics API renders `window` with Go's
//! `time.Duration.String()` (`"15.012s"`, `"1m0s"`). Users copy both from their existing
//! manifests and dashboards, so we accept and print exactly what Go does.

use std::fmt;
use std::time::Duration;

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("invalid duration {0:?}")]
    Invalid(String),
    #[error("unknown unit {unit:?} in duration {input:?}")]
    UnknownUnit { unit: String, input: String },
    #[error("missing unit in duration {0:?}")]
    MissingUnit(String),
    #[error("invalid duration {0:?}: out of range")]
    Overflow(String),
    #[error("invalid duration {0:?}: must not be negative")]
    Negative(String),
}

/// Parses a Go duration (`time.ParseDuration`): a sequence of decimal numbers with optional
/// fractions and a unit each (`ns`, `us`, `µs`, `μs`, `ms`, `s`, `m`, `h`), such as `1h2m3.5s`.
/// A bare `0` is allowed. Negative durations are rejected because no flag of ours takes one.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError::Invalid(input.to_string());
    let mut s = input;
    let mut negative = false;
    if let Some(rest) = s.strip_prefix('-') {
        negative = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        // Integer part.
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, rest) = s.split_at(int_len);
        s = rest;
        // Fraction.
        let mut frac_digits = "";
        if let Some(rest) = s.strip_prefix('.') {
            let frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            frac_digits = &rest[..frac_len];
            s = &rest[frac_len..];
        }
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(invalid());
        }
        // Unit: everything up to the next digit or '.'.
        let unit_len = s
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(s.len(), |(i, _)| i);
        let (unit, rest) = s.split_at(unit_len);
        s = rest;
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(DurationError::MissingUnit(input.to_string())),
            other => {
                return Err(DurationError::UnknownUnit {
                    unit: other.to_string(),
                    input: input.to_string(),
                });
            }
        };
        let overflow = || DurationError::Overflow(input.to_string());
        let int: u128 = if int_digits.is_empty() {
            0
        } else {
            int_digits.parse().map_err(|_| overflow())?
        };
        let mut nanos = int.checked_mul(scale).ok_or_else(overflow)?;
        // Go truncates fractions below a nanosecond; so do we.
        let mut frac_scale = scale;
        for d in frac_digits.bytes() {
            frac_scale /= 10;
            if frac_scale == 0 {
                break;
            }
            nanos += u128::from(d - b'0') * frac_scale;
        }
        total = total.checked_add(nanos).ok_or_else(overflow)?;
        // Go's Duration is an int64 of nanoseconds.
        if total > i64::MAX as u128 {
            return Err(overflow());
        }
    }
    if negative && total != 0 {
        return Err(DurationError::Negative(input.to_string()));
    }
    Ok(Duration::from_nanos(total as u64))
}

/// Formats like Go's `time.Duration.String()`: `0s`, `1.5ms`, `15.012s`, `1m0s`, `1h0m0s`.
/// Durations beyond Go's int64 range saturate, which no real window reaches.
pub fn format(d: Duration) -> GoDuration {
    GoDuration(d)
}

/// A [`Duration`] that displays as Go does. Writing it allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoDuration(pub Duration);

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 32];
        let start = format_into(self.0, &mut buf);
        // Only ASCII and the two-byte 'µ' are written, so this is valid UTF-8.
        f.write_str(std::str::from_utf8(&buf[start..]).map_err(|_| fmt::Error)?)
    }
}

/// Writes Go's rendering of `d` into the tail of `buf` and returns where it starts.
fn format_into(d: Duration, buf: &mut [u8; 32]) -> usize {
    let mut u = u64::try_from(d.as_nanos())
        .unwrap_or(u64::MAX)
        .min(i64::MAX as u64);
    let mut w = buf.len();
    if u < 1_000_000_000 {
        let prec;
        w -= 1;
        buf[w] = b's';
        w -= 1;
        if u == 0 {
            buf[w] = b'0';
            return w;
        } else if u < 1_000 {
            prec = 0;
            buf[w] = b'n';
        } else if u < 1_000_000 {
            prec = 3;
            w -= 1;
            buf[w..w + 2].copy_from_slice("µ".as_bytes());
        } else {
            prec = 6;
            buf[w] = b'm';
        }
        (w, u) = fmt_frac(buf, w, u, prec);
        w = fmt_int(buf, w, u);
    } else {
        w -= 1;
        buf[w] = b's';
        (w, u) = fmt_frac(buf, w, u, 9);
        w = fmt_int(buf, w, u % 60);
        u /= 60;
        if u > 0 {
            w -= 1;
            buf[w] = b'm';
            w = fmt_int(buf, w, u % 60);
            u /= 60;
            if u > 0 {
                w -= 1;
                buf[w] = b'h';
                w = fmt_int(buf, w, u);
            }
        }
    }
    w
}

/// Go's `fmtFrac`: the fraction of `v / 10^prec` without trailing zeros, and without the
/// point when the fraction is zero. Returns the new start and `v / 10^prec`.
fn fmt_frac(buf: &mut [u8; 32], mut w: usize, mut v: u64, prec: u32) -> (usize, u64) {
    let mut print = false;
    for _ in 0..prec {
        let digit = (v % 10) as u8;
        print = print || digit != 0;
        if print {
            w -= 1;
            buf[w] = digit + b'0';
        }
        v /= 10;
    }
    if print {
        w -= 1;
        buf[w] = b'.';
    }
    (w, v)
}

fn fmt_int(buf: &mut [u8; 32], mut w: usize, mut v: u64) -> usize {
    if v == 0 {
        w -= 1;
        buf[w] = b'0';
    } else {
        while v > 0 {
            w -= 1;
            buf[w] = (v % 10) as u8 + b'0';
            v /= 10;
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn formats_like_go() {
        // Expected strings are Go's own output for the same values.
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1), "1ns"),
            (Duration::from_nanos(1_100), "1.1µs"),
            (Duration::from_nanos(2_200_000), "2.2ms"),
            (ms(1_500), "1.5s"),
            (ms(15_012), "15.012s"),
            (ms(20_000), "20s"),
            (ms(60_000), "1m0s"),
            (ms(60_500), "1m0.5s"),
            (Duration::from_secs(3_600), "1h0m0s"),
            (Duration::from_nanos(4_000_000_001), "4.000000001s"),
            (Duration::from_secs(3 * 3600 + 25 * 60 + 45), "3h25m45s"),
        ];
        for (d, want) in cases {
            assert_eq!(format(d).to_string(), want, "{d:?}");
        }
    }

    #[test]
    fn parses_like_go() {
        let cases = [
            ("0", Duration::ZERO),
            ("1s", ms(1_000)),
            ("1m", ms(60_000)),
            ("1.5s", ms(1_500)),
            (".5s", ms(500)),
            ("1h2m3s", Duration::from_secs(3723)),
            ("100ms", ms(100)),
            ("10us", Duration::from_micros(10)),
            ("10µs", Duration::from_micros(10)),
            ("3ns", Duration::from_nanos(3)),
            ("+5s", ms(5_000)),
            ("1.0000000009s", Duration::from_nanos(1_000_000_000)),
            ("-0s", Duration::ZERO),
        ];
        for (s, want) in cases {
            assert_eq!(parse(s), Ok(want), "{s}");
        }
    }

    #[test]
    fn rejects_what_go_rejects_and_negatives() {
        for s in ["", "s", "1", "1x", "1.s.", ".", "-1s", "1ss", "1e3s"] {
            assert!(parse(s).is_err(), "{s:?} should be rejected");
        }
        assert!(matches!(
            parse("99999999999h"),
            Err(DurationError::Overflow(_))
        ));
        assert!(matches!(parse("10"), Err(DurationError::MissingUnit(_))));
        assert!(matches!(
            parse("10d"),
            Err(DurationError::UnknownUnit { .. })
        ));
    }

    #[test]
    fn round_trips() {
        for n in [
            1u64,
            999,
            1_000,
            123_456_789,
            1_000_000_000,
            59_999_999_999,
            7_322_000_000_000,
        ] {
            let d = Duration::from_nanos(n);
            assert_eq!(parse(&format(d).to_string()), Ok(d));
        }
    }
}
