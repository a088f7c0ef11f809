//! Feeds arbitrary bytes to the text parser and to metrics-server's decoder.
//!
//! Beyond "no panic, no hang" (libFuzzer reports both), it checks what callers rely on:
//! every error names a line of the input and a column from 1; the parser yields at most one
//! entry per line; each accepted sample's `labels_raw` re-parses to the same labels, also
//! with `node="…"` appended as the bridged exposition appends it; and the decoder keeps only
//! containers it saw samples for, in sorted order.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metrics_bridge::decode::decode;
use metrics_bridge::parse::{Entry, Parser, Sample};

fuzz_target!(|data: &[u8]| {
    let lines = data.split(|&b| b == b'\n').count();
    let mut entries = 0;
    for entry in Parser::new(data) {
        entries += 1;
        assert!(entries <= lines + 1, "more entries than lines");
        match entry {
            Ok(Entry::Sample(sample)) => labels_raw_round_trips(&sample),
            Ok(_) => {}
            Err(e) => {
                assert!((1..=lines).contains(&e.line), "{e}: {lines} lines");
                assert!(e.column >= 1, "{e}");
            }
        }
    }
    match decode(data, 1_700_000_000_000_000_000) {
        Ok(page) => {
            assert!(page.containers.len() <= page.samples);
            assert!(page.containers.is_sorted_by(|a, b| {
                (&a.namespace, &a.pod, &a.container) < (&b.namespace, &b.pod, &b.container)
            }));
        }
        Err(e) => assert!((1..=lines).contains(&e.line()), "{e}"),
    }
});

fn labels_raw_round_trips(sample: &Sample<'_>) {
    let raw = sample.labels_raw();
    let pairs: Vec<_> = sample.labels.iter().collect();
    let sep = if raw.is_empty() { "" } else { "," };
    for (text, extra) in [
        (format!("x{{{raw}}} 0"), None),
        (format!("x{{{raw}{sep}node=\"n\"}} 0"), Some(("node", "n"))),
    ] {
        let Some(Ok(Entry::Sample(again))) = Parser::new(text.as_bytes()).next() else {
            panic!("{text:?} does not re-parse");
        };
        let mut got: Vec<_> = again.labels.iter().collect();
        if let Some((name, value)) = extra {
            let last = got.pop().expect("the appended label");
            assert_eq!((last.0, &*last.1), (name, value));
        }
        assert_eq!(got, pairs, "{text:?}");
    }
}
