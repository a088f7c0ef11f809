//! Deterministic randomness for the model.
//!
//! Scheme: every entity draws from its own stream, keyed by `(seed, domain, index)`:
//! the key is hashed with the splitmix64 finaliser into a starting state, and the stream is
//! then plain splitmix64 (add the golden-ratio increment, finalise). So node 17's size, zone
//! and pods depend only on the seed and on 17 — not on how many nodes exist or in which order
//! things were generated — and a different seed changes everything. Dynamics (pods created,
//! deleted or restarted at run time) are keyed by a per-model operation counter, so the same
//! sequence of operations on the same seed gives the same cluster.
//!
//! Pod-name suffixes must be unique, which random draws cannot promise at 600,000 pods. They
//! are a bijection of the pod's serial number instead (see [`suffix_code`]), which looks
//! random and can never collide.

/// What a stream is for; part of the key so different kinds of entity never share a stream.
#[derive(Clone, Copy, Debug)]
#[repr(u64)]
pub enum Domain {
    Node = 1,
    Pod = 2,
    Workload = 3,
    Op = 4,
    Suffix = 5,
    Uid = 6,
    /// Which Deployment of its workload a pod joins, and the Deployments' relative sizes.
    Replica = 7,
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The splitmix64 finaliser: a bijective, well-mixing 64-bit hash.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A splitmix64 stream.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// The stream of entity `index` of kind `domain` under `seed`.
    pub fn keyed(seed: u64, domain: Domain, index: u64) -> Rng {
        let k = mix(seed.wrapping_add(GOLDEN));
        let k = mix(k ^ (domain as u64).wrapping_mul(GOLDEN));
        Rng {
            state: mix(k ^ index.wrapping_mul(0xD6E8_FEB8_6659_FD93)),
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix(self.state)
    }

    /// Uniform in `0..n` (0 when `n` is 0), by multiply-shift (no modulo bias worth naming
    /// at these sizes).
    pub fn below(&mut self, n: u64) -> u64 {
        let wide = u128::from(self.next_u64()) * u128::from(n);
        u64::try_from(wide >> 64).unwrap_or(0)
    }

    /// Uniform in `lo..=hi` (`lo` when `hi < lo`).
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    /// Index into `weights`, chosen with probability proportional to the weight.
    pub fn weighted(&mut self, weights: impl Iterator<Item = u32> + Clone) -> usize {
        let total: u64 = weights.clone().map(u64::from).sum();
        let mut pick = self.below(total);
        let mut last = 0;
        for (i, w) in weights.enumerate() {
            last = i;
            let w = u64::from(w);
            if pick < w {
                return i;
            }
            pick -= w;
        }
        last
    }
}

/// The alphabet Kubernetes uses for generated name suffixes and template hashes
/// (`k8s.io/apimachinery/pkg/util/rand`): no vowels, no confusable characters.
pub const ALPHANUMS: &[u8; 27] = b"bcdfghjklmnpqrstvwxz2456789";

/// Number of distinct 5-character suffixes.
const SUFFIX_SPACE: u64 = 27 * 27 * 27 * 27 * 27;

/// A unique, random-looking code for pod serial `serial`, in `0..27^5` for the first 27^5
/// serials: a keyed bijection on 24 bits, cycle-walked into range. Serials beyond that map
/// past 27^5, so codes stay unique (the suffix just grows a character).
pub fn suffix_code(seed: u64, serial: u64) -> u64 {
    if serial >= SUFFIX_SPACE {
        return serial;
    }
    const MASK: u64 = (1 << 24) - 1;
    let key = Rng::keyed(seed, Domain::Suffix, 0).next_u64();
    let mut x = serial;
    loop {
        // Each step is a bijection of 0..2^24: xor with a constant, multiply by an odd
        // number modulo 2^24, xor-shift right.
        x ^= key & MASK;
        x = x.wrapping_mul(0x9E_3779) & MASK;
        x ^= x >> 11;
        x = x.wrapping_mul(0x5B_D1E9 | 1) & MASK;
        x ^= x >> 13;
        x ^= (key >> 24) & MASK;
        // Cycle walking: applying the permutation again until the value lands in range keeps
        // the map a bijection of 0..27^5.
        if x < SUFFIX_SPACE {
            return x;
        }
    }
}

/// Appends `code` in the name alphabet, at least `width` characters.
pub fn push_code(out: &mut String, mut code: u64, width: usize) {
    let mut chars = [0u8; 16];
    let mut n = 0;
    while (code > 0 || n < width) && n < chars.len() {
        let digit = usize::try_from(code % 27).unwrap_or(0);
        chars[n] = ALPHANUMS[digit];
        n += 1;
        code /= 27;
    }
    for &c in chars[..n].iter().rev() {
        out.push(char::from(c));
    }
}

/// Appends the low `digits` hex digits of `v`, most significant first.
fn push_hex(out: &mut String, v: u128, digits: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..digits).rev() {
        let nibble = usize::try_from((v >> (4 * i)) & 0xF).unwrap_or(0);
        out.push(char::from(HEX[nibble]));
    }
}

/// `n` random-looking lowercase hex digits from a stream (container IDs, digests).
pub fn hex(rng: &mut Rng, n: usize) -> String {
    let mut s = String::with_capacity(n);
    while s.len() < n {
        let left = u32::try_from((n - s.len()).min(16)).unwrap_or(16);
        push_hex(&mut s, u128::from(rng.next_u64()), left);
    }
    s
}

/// A version-4-shaped UUID from a stream (deterministic, so objects compare equal across runs).
pub fn uuid(rng: &mut Rng) -> String {
    let hi = rng.next_u64();
    let lo = rng.next_u64();
    let bytes = (u128::from(hi) << 64) | u128::from(lo);
    // Version 4, variant 10xx.
    let bytes = (bytes & !(0xF << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    let mut s = String::with_capacity(36);
    for (i, digits) in [8u32, 4, 4, 4, 12].into_iter().enumerate() {
        if i > 0 {
            s.push('-');
        }
        let shift: u32 = [8u32, 4, 4, 4, 12][i + 1..].iter().sum::<u32>() * 4;
        push_hex(&mut s, bytes >> shift, digits);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn streams_are_keyed_and_reproducible() {
        let a: Vec<u64> = {
            let mut r = Rng::keyed(7, Domain::Node, 3);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::keyed(7, Domain::Node, 3);
            (0..4).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        let other_seed = Rng::keyed(8, Domain::Node, 3).next_u64();
        let other_index = Rng::keyed(7, Domain::Node, 4).next_u64();
        let other_domain = Rng::keyed(7, Domain::Pod, 3).next_u64();
        assert!(![other_seed, other_index, other_domain].contains(&a[0]));
    }

    #[test]
    fn below_and_between_stay_in_range() {
        let mut r = Rng::keyed(1, Domain::Op, 0);
        let mut seen = [false; 7];
        for _ in 0..10_000 {
            let v = r.below(7);
            seen[usize::try_from(v).unwrap()] = true;
            let w = r.between(10, 12);
            assert!((10..=12).contains(&w));
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(r.below(0), 0);
        assert_eq!(r.between(5, 5), 5);
        assert_eq!(r.between(5, 4), 5);
    }

    #[test]
    fn weighted_follows_weights() {
        let mut r = Rng::keyed(1, Domain::Op, 1);
        let weights = [1u32, 0, 3];
        let mut counts = [0u32; 3];
        for _ in 0..40_000 {
            counts[r.weighted(weights.iter().copied())] += 1;
        }
        assert_eq!(counts[1], 0);
        // 3:1 within a few percent.
        let ratio = f64::from(counts[2]) / f64::from(counts[0]);
        assert!((2.8..3.2).contains(&ratio), "{counts:?}");
    }

    #[test]
    fn suffix_codes_are_a_bijection() {
        let mut seen = HashSet::new();
        for serial in 0..300_000 {
            let c = suffix_code(42, serial);
            assert!(c < SUFFIX_SPACE);
            assert!(seen.insert(c), "collision at serial {serial}");
        }
        assert_ne!(suffix_code(42, 0), suffix_code(43, 0));
        assert_eq!(suffix_code(42, SUFFIX_SPACE + 5), SUFFIX_SPACE + 5);
    }

    #[test]
    fn codes_render_in_the_kubernetes_alphabet() {
        let mut s = String::new();
        push_code(&mut s, 0, 5);
        assert_eq!(s, "bbbbb");
        s.clear();
        push_code(&mut s, 26, 5);
        assert_eq!(s, "bbbb9");
        s.clear();
        push_code(&mut s, SUFFIX_SPACE, 5);
        assert_eq!(s.len(), 6);
    }

    #[test]
    fn hex_digits() {
        let mut s = String::new();
        push_hex(&mut s, 0xabc, 5);
        assert_eq!(s, "00abc");
        let h = hex(&mut Rng::keyed(1, Domain::Uid, 2), 64);
        assert_eq!(h.len(), 64);
        assert!(
            h.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(hex(&mut Rng::keyed(1, Domain::Uid, 2), 64), h);
        assert_eq!(hex(&mut Rng::keyed(1, Domain::Uid, 2), 20).len(), 20);
        assert_ne!(hex(&mut Rng::keyed(1, Domain::Uid, 3), 64), h);
    }

    #[test]
    fn uuids_have_the_v4_shape() {
        let mut r = Rng::keyed(1, Domain::Pod, 9);
        let u = uuid(&mut r);
        assert_eq!(u.len(), 36);
        let mut again = Rng::keyed(1, Domain::Pod, 9);
        let (hi, lo) = (again.next_u64(), again.next_u64());
        let digits: String = u.chars().filter(|&c| c != '-').collect();
        let raw = format!("{hi:016x}{lo:016x}");
        // Only the version nibble and the variant bits differ from the raw draw.
        let differing = digits
            .chars()
            .zip(raw.chars())
            .filter(|(a, b)| a != b)
            .count();
        assert!(differing <= 2, "{u} vs {raw}");
        let parts: Vec<&str> = u.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'));
        assert!(matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'));
    }
}
