//! Kubernetes resource quantities rendered byte for byte as Go's `resource.Quantity.String()`
//! renders the ones metrics-server builds.
//!
//! metrics-server builds CPU as `NewScaledQuantity(nanocores, -9)` (DecimalSI) and memory as
//! `NewScaledQuantity(bytes, 0)` with the BinarySI format, both through `uint64Quantity`, which
//! divides values above `MaxInt64` by ten and raises the scale by one. `String()` then writes
//! the canonical form: for DecimalSI the mantissa with all factors of ten moved into an exponent
//! that is a multiple of three and a suffix (`n`, `u`, `m`, ``, `k`, `M`, …); for BinarySI the
//! mantissa with factors of 1024 moved into `Ki`, `Mi`, …, except that values below 1024 and
//! values that are not whole numbers fall back to DecimalSI.
//!
//! Values are carried as `u128` so that sums (the Table's per-pod totals) stay exact where Go
//! would switch to its arbitrary-precision path; the canonical string is the same either way.

/// A formatted quantity, held on the stack: the longest (a u128 mantissa and a suffix) fits.
#[derive(Clone, Copy)]
pub struct QStr {
    buf: [u8; 48],
    len: usize,
}

impl QStr {
    fn new() -> Self {
        Self {
            buf: [0; 48],
            len: 0,
        }
    }

    fn extend_from_slice(&mut self, b: &[u8]) {
        let end = (self.len + b.len()).min(self.buf.len());
        let n = end - self.len;
        self.buf[self.len..end].copy_from_slice(&b[..n]);
        self.len = end;
    }

    fn push(&mut self, b: u8) {
        self.extend_from_slice(&[b]);
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits and suffix letters are ever written.
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

impl std::fmt::Debug for QStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The CPU quantity for `nanocores`, e.g. `250m`, `1500m`, `2`, `123456789n`.
pub fn cpu(nanocores: u64) -> QStr {
    let (value, scale) = uint64_quantity(nanocores, -9);
    let mut out = QStr::new();
    decimal_si(value, scale, &mut out);
    out
}

/// The memory quantity for `bytes`, e.g. `12240Ki`, `50Mi`, `1023`.
pub fn memory(bytes: u64) -> QStr {
    let (value, scale) = uint64_quantity(bytes, 0);
    let mut out = QStr::new();
    binary_si(value, scale, &mut out);
    out
}

/// The CPU total of several containers (exact sum of nanocores), as Go's `Quantity.Add` of
/// each container's quantity renders it.
pub fn cpu_total(nanocores: u128) -> QStr {
    let mut out = QStr::new();
    decimal_si(nanocores, -9, &mut out);
    out
}

/// The memory total of several containers (exact sum of bytes).
pub fn memory_total(bytes: u128) -> QStr {
    let mut out = QStr::new();
    binary_si(bytes, 0, &mut out);
    out
}

/// metrics-server's `uint64Quantity`: values past `MaxInt64` lose their last digit.
fn uint64_quantity(value: u64, scale: i32) -> (u128, i32) {
    if value > i64::MAX as u64 {
        (u128::from(value / 10), scale + 1)
    } else {
        (u128::from(value), scale)
    }
}

/// Go's canonical DecimalSI form of `value × 10^scale`.
fn decimal_si(value: u128, scale: i32, out: &mut QStr) {
    if value == 0 {
        out.push(b'0');
        return;
    }
    // u128 division is a slow library call; every per-container value fits in u64.
    let (mantissa, exponent) = match u64::try_from(value) {
        Ok(v) => {
            let (m, e) = canonical_decimal_u64(v, scale);
            match m {
                Some(m) => {
                    write_u64(m, out);
                    (None, e)
                }
                None => (Some(canonical_decimal_u128(value, scale)), e),
            }
        }
        Err(_) => (Some(canonical_decimal_u128(value, scale)), 0),
    };
    let exponent = match mantissa {
        Some((m, e)) => {
            write_u128(m, out);
            e
        }
        None => exponent,
    };
    let suffix: &[u8] = match exponent {
        -9 => b"n",
        -6 => b"u",
        -3 => b"m",
        3 => b"k",
        6 => b"M",
        9 => b"G",
        12 => b"T",
        15 => b"P",
        18 => b"E",
        // Go has no suffix for other exponents and writes none.
        _ => b"",
    };
    out.extend_from_slice(suffix);
}

/// Moves factors of ten into the exponent and makes the exponent a multiple of three.
/// `None` for the mantissa when re-multiplying would overflow u64.
fn canonical_decimal_u64(value: u64, scale: i32) -> (Option<u64>, i32) {
    let mut mantissa = value;
    let mut exponent = scale;
    while mantissa >= 10 && mantissa.is_multiple_of(10) {
        mantissa /= 10;
        exponent += 1;
    }
    match exponent.rem_euclid(3) {
        1 => (mantissa.checked_mul(10), exponent - 1),
        2 => (mantissa.checked_mul(100), exponent - 2),
        _ => (Some(mantissa), exponent),
    }
}

fn canonical_decimal_u128(value: u128, scale: i32) -> (u128, i32) {
    let mut mantissa = value;
    let mut exponent = scale;
    while mantissa >= 10 && mantissa.is_multiple_of(10) {
        mantissa /= 10;
        exponent += 1;
    }
    // This only multiplies back factors of ten just removed, or fits easily in u128.
    match exponent.rem_euclid(3) {
        1 => (mantissa * 10, exponent - 1),
        2 => (mantissa * 100, exponent - 2),
        _ => (mantissa, exponent),
    }
}

/// Go's canonical BinarySI form of `value × 10^scale`.
fn binary_si(value: u128, scale: i32, out: &mut QStr) {
    // Values in (-1024, 1024) are shown as DecimalSI "to avoid rounding and confusion".
    let whole = if scale >= 0 {
        10u128
            .checked_pow(scale.unsigned_abs())
            .and_then(|m| value.checked_mul(m))
    } else {
        10u128
            .checked_pow(scale.unsigned_abs())
            .and_then(|d| value.is_multiple_of(d).then_some(value / d))
    };
    let below_1024 = match whole {
        Some(w) => w < 1024,
        // Not a whole number: a fraction of a byte, below 1024 only if its integer part is.
        None => {
            scale < 0
                && 10u128
                    .checked_pow(scale.unsigned_abs())
                    .is_some_and(|d| value / d < 1024)
        }
    };
    let Some(mut mantissa) = whole.filter(|_| !below_1024) else {
        // Below 1024, or not exactly representable at scale 0: DecimalSI.
        decimal_si(value, scale, out);
        return;
    };
    // Factors of 1024 are trailing zero bits.
    let exponent = mantissa.trailing_zeros() / 10;
    mantissa >>= 10 * exponent;
    write_u128(mantissa, out);
    let suffix: &[u8] = match exponent {
        1 => b"Ki",
        2 => b"Mi",
        3 => b"Gi",
        4 => b"Ti",
        5 => b"Pi",
        6 => b"Ei",
        _ => b"",
    };
    out.extend_from_slice(suffix);
}

/// Appends `v` in decimal.
fn write_u64(mut v: u64, out: &mut QStr) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends `v` in decimal, through u64 when it fits.
fn write_u128(mut v: u128, out: &mut QStr) {
    if let Ok(small) = u64::try_from(v) {
        write_u64(small, out);
        return;
    }
    let mut buf = [0u8; 40];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(q: QStr) -> String {
        q.as_str().to_string()
    }

    fn bin(value: u128, scale: i32) -> String {
        let mut out = QStr::new();
        binary_si(value, scale, &mut out);
        s(out)
    }

    #[test]
    fn cpu_matches_go() {
        // Expected strings are Go's resource.NewScaledQuantity(v, -9).String().
        let cases: &[(u64, &str)] = &[
            (0, "0"),
            (1, "1n"),
            (10, "10n"),
            (100, "100n"),
            (1_000, "1u"),
            (1_500, "1500n"),
            (123_456_789, "123456789n"),
            (250_000_000, "250m"),
            (1_000_000, "1m"),
            (1_500_000_000, "1500m"),
            (2_000_000_000, "2"),
            (10_000_000_000, "10"),
            (1_000_000_000_000, "1k"),
            (4_710_169, "4710169n"),
            (66_613_375, "66613375n"),
            (357_354_910_000, "357354910u"),
            (i64::MAX as u64, "9223372036854775807n"),
        ];
        for &(v, want) in cases {
            assert_eq!(s(cpu(v)), want, "{v}");
        }
        // Above MaxInt64: uint64Quantity keeps v/10 at scale -8.
        assert_eq!(s(cpu(u64::MAX)), "18446744073709551610n");
        assert_eq!(s(cpu(10_000_000_000_000_000_000)), "10G");
    }

    #[test]
    fn memory_matches_go() {
        // Expected strings are Go's Quantity{NewScaledQuantity(v, 0), BinarySI}.String().
        let cases: &[(u64, &str)] = &[
            (0, "0"),
            (1, "1"),
            (500, "500"),
            (1_000, "1k"),
            (1_023, "1023"),
            (1_024, "1Ki"),
            (1_025, "1025"),
            (2_048, "2Ki"),
            (12_533_760, "12240Ki"),
            (52_428_800, "50Mi"),
            (1_616_273_408, "1578392Ki"),
            (1_073_741_824, "1Gi"),
            (1_449_984, "1416Ki"),
            (1 << 60, "1Ei"),
            (123_456_789, "123456789"),
        ];
        for &(v, want) in cases {
            assert_eq!(s(memory(v)), want, "{v}");
        }
        assert_eq!(s(memory(u64::MAX)), "18446744073709551610");
    }

    #[test]
    fn totals_are_exact_sums() {
        assert_eq!(s(cpu_total(250_000_000 + 50_000_000)), "300m");
        assert_eq!(
            s(cpu_total(2 * u128::from(u64::MAX))),
            "36893488147419103230n"
        );
        assert_eq!(s(memory_total(12_533_760 + 52_428_800)), "63440Ki");
        // 1024^7 has no suffix in Go's table, which then writes none: Go's own (wrong) "1".
        assert_eq!(s(memory_total(1 << 70)), "1");
    }

    #[test]
    fn binary_si_falls_back_for_fractions() {
        // 1.5 × 1024 at scale -1 is not a whole number of bytes: DecimalSI.
        assert_eq!(bin(15_365, -1), "1536500m");
        assert_eq!(bin(20_480, -1), "2Ki");
        assert_eq!(bin(5, -1), "500m");
    }
}
