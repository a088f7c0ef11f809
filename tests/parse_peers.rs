//! The parser against independent peers: Python's `prometheus_client` text parser, sample for
//! sample, on every fixture and on payloads with hard label values; Python's correctly
//! rounded `float()` on hard decimals; and the `prometheus-parse` crate, to show the
//! payloads it reads wrongly.

#[path = "../benches/support/kubelet_page.rs"]
#[allow(dead_code)]
mod kubelet_page;
mod peer;

use std::path::Path;

use metrics_bridge::parse::{Entry, Parser};
use serde_json::{Value, json};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kubelet");

/// Prints each sample as a JSON array: name, sorted label pairs, value bits (or "nan"),
/// timestamp in ms (or null).
const PEER_SAMPLES: &str = r#"
import json, struct, sys
from prometheus_client.parser import text_string_to_metric_families

def bits(v):
    v = float(v)
    return "nan" if v != v else str(struct.unpack("<Q", struct.pack("<d", v))[0])

for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        ts = None if s.timestamp is None else round(s.timestamp * 1000)
        print(json.dumps([s.name, sorted(s.labels.items()), bits(s.value), ts]))
"#;

fn ours(payload: &[u8]) -> Vec<Value> {
    Parser::new(payload)
        .filter_map(
            |e| match e.unwrap_or_else(|e| panic!("our parser failed: {e}")) {
                Entry::Sample(s) => Some(s),
                _ => None,
            },
        )
        .map(|s| {
            let mut labels: Vec<(String, String)> = s
                .labels
                .iter()
                .map(|(n, v)| (n.to_owned(), v.into_owned()))
                .collect();
            labels.sort();
            let bits = if s.value.is_nan() {
                "nan".to_owned()
            } else {
                s.value.to_bits().to_string()
            };
            json!([s.name, labels, bits, s.timestamp_ms])
        })
        .collect()
}

fn theirs(payload: &[u8]) -> Vec<Value> {
    peer::python(PEER_SAMPLES, &[], payload)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn assert_same_samples(what: &str, payload: &[u8]) -> usize {
    let ours = ours(payload);
    let theirs = theirs(payload);
    assert_eq!(ours.len(), theirs.len(), "{what}: sample count");
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(a, b, "{what}: sample {i}");
    }
    ours.len()
}

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in ["", "metrics-server-decode-cases", "kubelet-collector-cases"] {
        let dir = Path::new(FIXTURES).join(dir);
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "prom"))
            .collect();
        entries.sort();
        for path in entries {
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((path.display().to_string(), bytes));
        }
    }
    out
}

#[test]
fn every_fixture_parses_like_prometheus_client() {
    let mut total = 0;
    let mut files = 0;
    for (name, bytes) in fixtures() {
        if name.ends_with("containing-an-incorrect-timestamp.prom") {
            // prometheus_client accepts a negative timestamp; Prometheus's own scraper, which
            // we follow, does not (and metrics-server's test expects the failure).
            assert!(Parser::new(&bytes).any(|e| e.is_err()), "{name}");
            assert_eq!(theirs(&bytes).len(), 2, "{name}");
            continue;
        }
        total += assert_same_samples(&name, &bytes);
        files += 1;
    }
    assert_eq!(files, 18);
    assert!(total > 300, "{total} samples compared");
}

#[test]
fn synthetic_kubelet_page_parses_like_prometheus_client() {
    let page = kubelet_page::kubelet_page(110, 3);
    assert_eq!(
        assert_same_samples("synthetic", page.text.as_bytes()),
        page.samples
    );
}

/// Label values with every character the format makes awkward, blanks where Prometheus
/// allows them, CRLF, special values and values with many digits.
const HARD: &str = concat!(
    "# HELP hard_total A counter with \\\\ and \\n in its help.\n",
    "# TYPE hard_total counter\n",
    "hard_total{path=\"/a,b\",expr=\"x=y\",brace=\"}{\",quote=\"say \\\"hi\\\"\",nl=\"a\\nb\",bs=\"c:\\\\d\"} 1.5 1700000000123\n",
    "hard_total{utf8=\"ünïcødé ✓\",empty=\"\",} 2\r\n",
    "hard_total { spaced = \"yes\" , tabbed\t=\t\"too\" } \t 3 \t 1700000000124\n",
    "\n",
    "# a comment\n",
    "special{kind=\"nan\"} NaN\n",
    "special{kind=\"inf\"} +Inf\n",
    "special{kind=\"-inf\"} -Inf\n",
    "special{kind=\"long\"} 3.14159265358979323846264338327950288\n",
    "special{kind=\"tiny\"} 4.9406564584124654e-324\n",
    "special{kind=\"big\"} 1.7976931348623157e308\n",
    "special{kind=\"halfway\"} 9007199254740993\n",
    "special{kind=\"exp\"} -1.2345e-7\n",
);

#[test]
fn hard_label_values_and_numbers_parse_like_prometheus_client() {
    assert_eq!(assert_same_samples("hard", HARD.as_bytes()), 11);
}

/// Decimals chosen to stress correct rounding, with Python's `float()` (David Gay's
/// correctly rounded conversion) as the reference.
#[test]
fn values_round_like_python_float() {
    let mut tokens: Vec<String> = [
        "0.1", "0.2", "0.3", "1e23", "8.589973e9", "2.2250738585072011e-308",
        "2.2250738585072012e-308", "4.35", "1.005", "9007199254740993", "9007199254740992.5",
        "123456789012345678", "1234567890123456789", "12345678901234567890",
        "0.000000000000000000000000000001", "7.0e-10", "1.7976931348623157e308",
        "4.9e-324", "2.4703282292062328e-324", "2.4703282292062327e-324",
        "179769313486231570000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "1.6243962483020916e+09", "1.253376e+07", "357.35491", "4.710169",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    // Plus a deterministic spread of 1–19 digit mantissas and exponents around the fast
    // path's edges (±22, 2^53).
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    for _ in 0..3000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let digits = (state % 19 + 1) as u32;
        let mantissa = (state >> 5) % 10u64.pow(digits);
        let exp = ((state >> 40) % 61) as i64 - 30;
        tokens.push(format!("{mantissa}e{exp}"));
    }
    let payload: String = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| format!("v{{i=\"{i}\"}} {t}\n"))
        .collect();
    let script = r#"
import struct, sys
for line in sys.stdin:
    print(struct.unpack("<Q", struct.pack("<d", float(line.split()[-1])))[0])
"#;
    let want: Vec<u64> = peer::python(script, &[], payload.as_bytes())
        .lines()
        .map(|l| l.parse().expect("bits"))
        .collect();
    let got: Vec<u64> = Parser::new(payload.as_bytes())
        .map(|e| match e {
            Ok(Entry::Sample(s)) => s.value.to_bits(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(got.len(), tokens.len());
    for ((t, g), w) in tokens.iter().zip(&got).zip(&want) {
        assert_eq!(
            g,
            w,
            "{t}: {} vs {}",
            f64::from_bits(*g),
            f64::from_bits(*w)
        );
    }
}

/// The `prometheus-parse` crate splits label sets on `,` and `=` and stops at the first `}`,
/// so label values holding those characters, or escaped quotes, come out wrong. Ours are
/// right, which is one reason we wrote our own parser.
#[test]
fn prometheus_parse_misreads_label_values_that_we_read_right() {
    let line = r#"http_requests_total{path="/a,b",expr="x=y",quote="say \"hi\"",brace="}"} 7"#;
    let truth: Vec<(String, String)> = vec![
        ("brace".into(), "}".into()),
        ("expr".into(), "x=y".into()),
        ("path".into(), "/a,b".into()),
        ("quote".into(), "say \"hi\"".into()),
    ];

    let Some(Ok(Entry::Sample(s))) = Parser::new(line.as_bytes()).next() else {
        panic!("our parser failed")
    };
    let mut ours: Vec<(String, String)> = s
        .labels
        .iter()
        .map(|(n, v)| (n.to_owned(), v.into_owned()))
        .collect();
    ours.sort();
    assert_eq!(ours, truth);
    assert_eq!(s.value, 7.0);

    let scrape = prometheus_parse::Scrape::parse(std::iter::once(Ok(line.to_owned())))
        .expect("prometheus-parse returns a scrape");
    let theirs: Vec<(String, String)> = scrape
        .samples
        .first()
        .map(|s| {
            let mut v: Vec<(String, String)> = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            v.sort();
            v
        })
        .unwrap_or_default();
    assert_ne!(theirs, truth, "prometheus-parse got it right after all");
    // Concretely: "/a,b" is cut at the comma, and "x=y" is lost to the split on '='.
    assert!(
        !theirs.contains(&("path".into(), "/a,b".into())),
        "{theirs:?}"
    );
    assert!(!theirs.iter().any(|(k, _)| k == "expr"), "{theirs:?}");
}
