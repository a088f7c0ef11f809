//! Runs Python's `prometheus_client` text parser as an independent peer.

use std::io::Write as _;
use std::process::{Command, Stdio};

/// Runs `script` with `python3`, feeding `stdin`, and returns its stdout. Panics with a clear
/// message when Python or `prometheus_client` is missing: these tests are the comparison
/// against a real peer and must not silently pass without it.
pub fn python(script: &str, args: &[&str], stdin: &[u8]) -> String {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 (install it and `pip install prometheus_client`): {e}")
        });
    // Write on a thread so a large page cannot dead-lock against a full stdout pipe.
    let mut pipe = child.stdin.take().expect("stdin is piped");
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || pipe.write_all(&input));
    let out = child.wait_with_output().expect("python3 runs");
    writer
        .join()
        .expect("writer thread")
        .expect("python3 reads stdin");
    assert!(
        out.status.success(),
        "python3 failed (is prometheus_client installed?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("python3 prints UTF-8")
}
