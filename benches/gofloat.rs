//! Go-compatible float formatting (`metrics_bridge::gofloat`), a per-sample cost of every
//! kubelet page kube-sim renders and of the bridged `/metrics/resource` exposition.
//!
//! Prints ns/value for the value shapes a resource page carries: CPU counters (fractional
//! seconds), working sets (whole bytes, the integer fast path), start times (seconds with a
//! millisecond fraction) and zeros.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use metrics_bridge::gofloat;

fn values(shape: &str) -> Vec<f64> {
    // A deterministic spread, so runs compare.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let r = (x >> 11) as f64 / (1u64 << 53) as f64;
            match shape {
                "cpu_counter" => (r * 5e14).round() / 1e9,
                "working_set" => ((r * 4e9) as u64 & !4095) as f64,
                "start_time" => (1.75e12 + (r * 1e9).round()) * 1e6 / 1e9,
                _ => 0.0,
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("gofloat");
    for shape in ["cpu_counter", "working_set", "start_time", "zero"] {
        let vals = values(shape);
        group.throughput(Throughput::Elements(vals.len() as u64));
        let mut out = Vec::with_capacity(32 * vals.len());
        group.bench_function(shape, |b| {
            b.iter(|| {
                out.clear();
                for &v in &vals {
                    gofloat::append(&mut out, black_box(v));
                }
                black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
