//! Parser and decoder throughput on kubelet `/metrics/resource` pages, against the
//! `prometheus-parse` crate measured in the same run.
//!
//! Two payloads: the 70-pod page of a kind node (kubelet 1.21, `tests/fixtures`) and a
//! synthetic page of 110 pods × 3 containers in the current kubelet format
//! (`benches/support/kubelet_page.rs`). Four readers:
//!
//! - `parse`: our parser, every line validated, every sample's value and label text touched;
//! - `parse+labels`: the same, also iterating (and unescaping) every label pair;
//! - `decode`: metrics-server's rules on top, producing the node and container points;
//! - `prometheus-parse`: `Scrape::parse` over the page's lines, the crate's only API.
//!
//! Criterion measures each; afterwards, a summary table prints MB/s, samples/s and the
//! ratio to prometheus-parse, measured again back to back so the ratio compares like with
//! like. Run with `cargo bench --bench parser`.

#[path = "support/kubelet_page.rs"]
#[allow(dead_code)]
mod kubelet_page;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use metrics_bridge::decode::decode;
use metrics_bridge::parse::{Entry, Parser};

/// Any scrape time; both pages carry their own timestamps.
const SCRAPE_NS: i64 = 1_767_225_600_000_000_000;

struct Workload {
    name: &'static str,
    text: String,
    samples: usize,
}

fn workloads() -> Vec<Workload> {
    let kind = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/kubelet/metrics-resource-kind-70pods.prom"
    ))
    .expect("the 70-pod fixture is readable");
    let synthetic = kubelet_page::kubelet_page(110, 3);
    let mut out = vec![
        Workload {
            name: "kind-70-pods",
            samples: 0,
            text: kind,
        },
        Workload {
            name: "kubelet-110x3",
            samples: synthetic.samples,
            text: synthetic.text,
        },
    ];
    for w in &mut out {
        let counted = parse_only(w.text.as_bytes());
        assert!(w.samples == 0 || w.samples == counted, "{}", w.name);
        w.samples = counted;
    }
    out
}

/// Our parser: validates every line and touches each sample. Returns the sample count.
fn parse_only(payload: &[u8]) -> usize {
    let mut n = 0;
    for entry in Parser::new(payload) {
        match entry {
            Ok(Entry::Sample(s)) => {
                black_box((s.value, s.timestamp_ms, s.labels_raw()));
                n += 1;
            }
            Ok(_) => {}
            Err(e) => panic!("benchmark payload does not parse: {e}"),
        }
    }
    n
}

/// Our parser, also iterating every label pair with its unescaped value.
fn parse_with_labels(payload: &[u8]) -> usize {
    let mut n = 0;
    for entry in Parser::new(payload) {
        if let Ok(Entry::Sample(s)) = entry {
            for pair in s.labels.iter() {
                black_box(pair);
            }
            black_box(s.value);
            n += 1;
        }
    }
    n
}

/// The full decode the scraper runs on every page.
fn decode_page(payload: &[u8]) -> usize {
    let page = decode(payload, SCRAPE_NS).expect("benchmark payload decodes");
    black_box(&page);
    page.samples
}

/// The reference: prometheus-parse takes owned lines, so feeding it includes that copy.
fn prometheus_parse(text: &str) -> usize {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("prometheus-parse reads the payload");
    black_box(&scrape);
    scrape.samples.len()
}

type Reader = (&'static str, fn(&str) -> usize);

const READERS: [Reader; 4] = [
    ("parse", |t| parse_only(t.as_bytes())),
    ("parse+labels", |t| parse_with_labels(t.as_bytes())),
    ("decode", |t| decode_page(t.as_bytes())),
    ("prometheus-parse", prometheus_parse),
];

fn criterion_benches(c: &mut Criterion, workloads: &[Workload]) {
    for w in workloads {
        let mut group = c.benchmark_group(w.name);
        group.throughput(Throughput::Bytes(w.text.len() as u64));
        for (name, read) in READERS {
            group.bench_function(name, |b| b.iter(|| read(black_box(&w.text))));
        }
        group.finish();
    }
}

/// On-CPU time of this thread (`CLOCK_THREAD_CPUTIME_ID`). Timing by CPU time keeps the
/// figures meaningful on a shared machine, where wall time also counts the time other
/// processes hold the core.
fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// Median CPU time of one call of `f`, from batches of about 5 ms run for `budget`.
fn median_time(f: impl Fn() -> usize, budget: Duration) -> Duration {
    let start = Instant::now();
    f();
    let once = start.elapsed().max(Duration::from_nanos(100));
    let per_batch = (Duration::from_millis(5).as_nanos() / once.as_nanos()).max(1) as u32;
    let warm_until = Instant::now() + budget / 5;
    while Instant::now() < warm_until {
        f();
    }
    let mut times = Vec::new();
    let until = Instant::now() + budget;
    while Instant::now() < until || times.len() < 5 {
        let cpu = thread_cpu_time();
        for _ in 0..per_batch {
            f();
        }
        times.push(thread_cpu_time().saturating_sub(cpu) / per_batch);
    }
    times.sort_unstable();
    times[times.len() / 2]
}

fn summary(workloads: &[Workload]) {
    println!();
    println!("summary: median thread CPU time per page; ratio = throughput / prometheus-parse's");
    println!(
        "{:<14} {:>8} {:>8}  {:<17} {:>11} {:>9} {:>13} {:>9}",
        "payload", "bytes", "samples", "reader", "time/page", "MB/s", "samples/s", "ratio"
    );
    for w in workloads {
        let times: Vec<(&str, Duration)> = READERS
            .iter()
            .map(|(name, read)| (*name, median_time(|| read(&w.text), Duration::from_secs(2))))
            .collect();
        let reference = times
            .iter()
            .find(|(n, _)| *n == "prometheus-parse")
            .map_or(Duration::MAX, |(_, t)| *t);
        for (name, t) in &times {
            let secs = t.as_secs_f64();
            println!(
                "{:<14} {:>8} {:>8}  {:<17} {:>9.1}µs {:>9.0} {:>12.2}M {:>8.1}×",
                w.name,
                w.text.len(),
                w.samples,
                name,
                secs * 1e6,
                w.text.len() as f64 / secs / 1e6,
                w.samples as f64 / secs / 1e6,
                reference.as_secs_f64() / secs,
            );
        }
    }
}

fn main() {
    let workloads = workloads();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    criterion_benches(&mut c, &workloads);
    c.final_summary();
    // `cargo test --benches` runs each benchmark once to check it; the summary is for real
    // runs only.
    if std::env::args().any(|a| a == "--bench") {
        summary(&workloads);
    }
}
