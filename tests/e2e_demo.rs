//! `./demo.sh`, the README's first command, run as a user runs it: it must start kube-sim and
//! metrics-bridge, get `kubectl top node` working through the aggregation layer, print
//! commands that work as printed, and stop both processes on Ctrl-C (SIGINT to the whole
//! foreground process group, as a terminal sends it) or, with `DEMO_EXIT_AFTER_READY=1`, on
//! its own. The binaries are this test build's (`DEMO_BIN_DIR`): a release build has no place
//! in the test suite.

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use support::bridge::free_port;
use support::expect::table_rows;

const NODES: usize = 20;

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_metrics-bridge"))
        .parent()
        .expect("the binary has a directory")
        .to_path_buf()
}

/// `./demo.sh` with the test build's binaries, a private cluster directory, per-test ports and
/// a short resolution (so two scrapes land within seconds).
fn demo(home: &Path, cluster_dir: &Path, port: u16) -> Command {
    // Through `env --default-signal=INT`: a test run started in the background (nohup, `&`
    // in a script, some CI runners) inherits SIGINT *ignored*, and a shell cannot trap a
    // signal that was ignored when it started, so "Ctrl-C" would never reach the demo.
    let mut cmd = Command::new("env");
    cmd.arg("--default-signal=INT")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/demo.sh"));
    cmd.env("DEMO_BIN_DIR", bin_dir())
        .env("DEMO_DIR", cluster_dir)
        .env("DEMO_PORT", port.to_string())
        .env("DEMO_KUBELET_PORT", support::kubelet_port().to_string())
        .env("DEMO_RESOLUTION", "2s")
        .env("DEMO_KUBELET_TIMEOUT", "1500ms")
        .env_remove("DEMO_EXIT_AFTER_READY")
        // kubectl's discovery cache goes under $HOME.
        .env("HOME", home);
    cmd
}

/// The port in `kube-sim.json`'s API server URL.
fn apiserver_port(cluster_dir: &Path) -> u16 {
    let info: serde_json::Value = serde_json::from_slice(
        &std::fs::read(cluster_dir.join("kube-sim.json")).expect("kube-sim.json"),
    )
    .expect("kube-sim.json is JSON");
    let url = info["apiserver"]
        .as_str()
        .unwrap_or_else(|| panic!("no API server URL in kube-sim.json: {info}"));
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

/// Nothing listens on 127.0.0.1:`port` any more: the process that served it has gone.
fn assert_closed(port: u16, what: &str) {
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "{what} still listens on 127.0.0.1:{port} after the demo stopped"
    );
}

/// The `kubectl top node` table the demo printed: every node of the cluster, once, with
/// figures kubectl could only print from served metrics.
fn assert_top_table(stdout: &str) {
    let start = stdout
        .find("NAME ")
        .unwrap_or_else(|| panic!("no top table in:\n{stdout}"));
    let table: String = stdout[start..]
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    let rows = table_rows(&table);
    let names: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    let want: Vec<String> = (1..=NODES).map(|i| format!("node-{i:05}")).collect();
    assert_eq!(names, want, "{table}");
    for row in &rows {
        let [_, cpu, cpu_pct, mem, mem_pct] = row[..] else {
            panic!("row {row:?} in\n{table}");
        };
        let milli: u64 = cpu
            .strip_suffix('m')
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("CPU {cpu} in {row:?}"));
        let mi: u64 = mem
            .strip_suffix("Mi")
            .and_then(|m| m.parse().ok())
            .unwrap_or_else(|| panic!("memory {mem} in {row:?}"));
        assert!(milli > 0 && mi > 0, "{row:?}");
        assert!(cpu_pct.ends_with('%') && mem_pct.ends_with('%'), "{row:?}");
    }
}

/// The kubectl commands the demo tells the user to try, as printed (`KUBECTL --kubeconfig
/// PATH ...`, KUBECTL being `kubectl` when it is on PATH).
fn printed_commands<'a>(stdout: &'a str, kubeconfig: &Path) -> Vec<&'a str> {
    let flag = format!(" --kubeconfig {} ", kubeconfig.display());
    let commands: Vec<&str> = stdout
        .lines()
        .map(str::trim)
        .filter(|l| l.contains(&flag) && !l.starts_with("demo:"))
        .collect();
    for sub in ["top node", "top pod -A"] {
        assert!(
            commands
                .iter()
                .any(|c| c.ends_with(&format!("{flag}{sub}"))),
            "the demo does not print `kubectl{flag}{sub}`:\n{stdout}"
        );
    }
    commands
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn demo_exits_after_the_first_working_top_when_asked_and_stops_both() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let cluster_dir = tmp.path().join("demo-cluster");
    let port = free_port();
    let out = demo(tmp.path(), &cluster_dir, port)
        .env("DEMO_EXIT_AFTER_READY", "1")
        .output()
        .expect("demo.sh runs");
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "demo.sh failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert_top_table(&stdout);
    printed_commands(&stdout, &cluster_dir.join("kubeconfig"));
    assert!(
        stdout.contains("stopped metrics-bridge (exit 0) and kube-sim (exit 0)"),
        "{stdout}\n{stderr}"
    );
    assert!(
        !stdout.contains("Press Ctrl-C"),
        "DEMO_EXIT_AFTER_READY=1 must not wait for Ctrl-C:\n{stdout}"
    );
    assert_closed(port, "metrics-bridge");
    assert_closed(apiserver_port(&cluster_dir), "kube-sim");
}

/// Reads the demo's stdout until it asks for Ctrl-C; everything read so far, and the lines
/// that follow (the reader keeps draining the pipe, so the script never meets SIGPIPE).
fn read_until_waiting(child: &mut Child) -> (String, Receiver<String>) {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains("Press Ctrl-C") {
                    return (seen, rx);
                }
            }
            Err(_) => {
                let _ = Command::new("kill")
                    .args(["-INT", "--", &format!("-{}", child.id())])
                    .status();
                panic!("the demo never asked for Ctrl-C; it printed:\n{seen}");
            }
        }
    }
}

#[test]
fn demo_prints_commands_that_work_and_stops_both_on_ctrl_c() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let cluster_dir = tmp.path().join("demo-cluster");
    let kubeconfig = cluster_dir.join("kubeconfig");
    let port = free_port();
    // Its own process group, as a shell gives a foreground job, so that "Ctrl-C" reaches the
    // script and both processes at once.
    let mut child = demo(tmp.path(), &cluster_dir, port)
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("demo.sh starts");
    let (seen, more) = read_until_waiting(&mut child);
    assert_top_table(&seen);

    // The printed commands, run exactly as printed (through the `kubectl` on PATH).
    for command in printed_commands(&seen, &kubeconfig) {
        let mut words = command.split_whitespace();
        let program = words.next().expect("a program");
        let out = Command::new(program)
            .args(words.take_while(|w| !w.starts_with('#')))
            .env("HOME", tmp.path())
            .output()
            .unwrap_or_else(|e| panic!("{command}: {e}"));
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{command}: {stdout}{stderr}");
        if command.ends_with("top pod -A") {
            let rows = table_rows(&stdout);
            assert!(
                rows.len() > NODES && rows.iter().any(|r| r[0] == "kube-system"),
                "{command}:\n{stdout}"
            );
        }
    }

    // The Prometheus endpoints, listed once the build serves them, answer an exposition.
    for command in seen
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("curl "))
    {
        let mut words = command.split_whitespace();
        let program = words.next().expect("a program");
        let out = Command::new(program)
            .args(words)
            .output()
            .unwrap_or_else(|e| panic!("{command}: {e}"));
        let (stdout, stderr) = text(&out);
        assert!(
            out.status.success() && stdout.contains("# TYPE "),
            "{command}: {stdout}{stderr}"
        );
    }

    // Ctrl-C: SIGINT to the whole foreground process group.
    let group = format!("-{}", child.id());
    let (out, rest, stderr) = signal_and_wait(child, more, &group, "-INT");
    assert!(
        out.status.success(),
        "demo.sh after Ctrl-C: {}\n{rest}\n{stderr}",
        out.status
    );
    assert!(
        rest.contains("stopped metrics-bridge (exit 0) and kube-sim (exit 0)"),
        "{rest}\n{stderr}"
    );
    assert_closed(port, "metrics-bridge");
    assert_closed(apiserver_port(&cluster_dir), "kube-sim");
    // The script stopped metrics-bridge itself (Ctrl-C reached only the script).
    let log = std::fs::read_to_string(cluster_dir.join("metrics-bridge.log")).unwrap_or_default();
    assert!(log.contains("received SIGTERM"), "{log}");
}

/// Sends `signal` to `target` (a pid, or `-PGID` for a process group), waits for the demo to
/// exit; its status, the rest of its stdout and its stderr.
fn signal_and_wait(
    mut child: Child,
    more: Receiver<String>,
    target: &str,
    signal: &str,
) -> (Output, String, String) {
    let sent = Command::new("kill")
        .args([signal, "--", target])
        .status()
        .expect("kill");
    assert!(sent.success(), "kill {signal} {target}");
    // A demo that ignores the signal must fail the test, not hang it.
    let deadline = Instant::now() + Duration::from_secs(90);
    while child.try_wait().expect("demo.sh status").is_none() {
        if Instant::now() >= deadline {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            panic!("demo.sh did not exit within 90 s of kill {signal} {target}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("demo.sh exits");
    let (_, stderr) = text(&out);
    // The reader ends at EOF, which follows the exit.
    let rest: String = more.iter().map(|l| l + "\n").collect();
    (out, rest, stderr)
}

/// The pid of the demo's child running `program`.
fn child_pid(demo: &Child, program: &str) -> String {
    let out = Command::new("pgrep")
        .args(["-P", &demo.id().to_string(), "-x", program])
        .output()
        .expect("pgrep");
    let pid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(!pid.is_empty(), "no {program} under the demo");
    pid
}

#[test]
fn demo_fails_and_stops_kube_sim_when_metrics_bridge_dies() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let cluster_dir = tmp.path().join("demo-cluster");
    let mut child = demo(tmp.path(), &cluster_dir, free_port())
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("demo.sh starts");
    let (_, more) = read_until_waiting(&mut child);
    let bridge = child_pid(&child, "metrics-bridge");
    let (out, rest, stderr) = signal_and_wait(child, more, &bridge, "-KILL");
    assert_eq!(out.status.code(), Some(1), "{rest}\n{stderr}");
    assert!(
        stderr.contains("metrics-bridge exited (status 137)"),
        "{stderr}"
    );
    assert!(
        rest.contains("stopped metrics-bridge (exit -) and kube-sim (exit 0)"),
        "{rest}\n{stderr}"
    );
    assert_closed(apiserver_port(&cluster_dir), "kube-sim");
}

/// A stand-in for `cargo` that records its arguments, answers `cargo metadata` with a target
/// directory of its own, and "builds" by linking the test build's binaries into its
/// `release` directory: the demo's build path, without a release build in the test suite.
const FAKE_CARGO: &str = r#"#!/bin/sh
echo "$*" >> "$FAKE_CARGO_LOG"
case "$1" in
metadata) printf '{"packages":[],"target_directory":"%s","version":1}' "$FAKE_TARGET" ;;
build)
    mkdir -p "$FAKE_TARGET/release"
    ln -sf "$FAKE_BIN_DIR/kube-sim" "$FAKE_TARGET/release/kube-sim"
    ln -sf "$FAKE_BIN_DIR/metrics-bridge" "$FAKE_TARGET/release/metrics-bridge"
    ;;
*) exit 1 ;;
esac
"#;

#[test]
fn demo_builds_release_binaries_with_cargo_and_runs_those() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().expect("temp dir");
    let fake_bin = tmp.path().join("fake-bin");
    std::fs::create_dir(&fake_bin).expect("mkdir");
    let cargo = fake_bin.join("cargo");
    std::fs::write(&cargo, FAKE_CARGO).expect("write fake cargo");
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let log = tmp.path().join("cargo.log");
    let target = tmp.path().join("target");
    let path = format!(
        "{}:{}",
        fake_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let cluster_dir = tmp.path().join("demo-cluster");
    let out = demo(tmp.path(), &cluster_dir, free_port())
        .env_remove("DEMO_BIN_DIR")
        .env("DEMO_EXIT_AFTER_READY", "1")
        .env("PATH", path)
        .env("FAKE_CARGO_LOG", &log)
        .env("FAKE_TARGET", &target)
        .env("FAKE_BIN_DIR", bin_dir())
        .output()
        .expect("demo.sh runs");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let calls = std::fs::read_to_string(&log).expect("cargo was called");
    let calls: Vec<&str> = calls.lines().collect();
    assert_eq!(
        calls.first().copied(),
        Some("build --release --quiet --bin kube-sim --bin metrics-bridge"),
        "{calls:?}"
    );
    assert!(
        calls.iter().any(|c| c.starts_with("metadata")),
        "the demo must ask cargo where the target directory is: {calls:?}"
    );
    // One progress line for the build, then the demo as usual, from the built binaries.
    let first = stdout.lines().next().unwrap_or_default();
    assert!(first.starts_with("demo: building"), "{stdout}");
    assert_top_table(&stdout);
    assert!(
        stdout.contains("stopped metrics-bridge (exit 0) and kube-sim (exit 0)"),
        "{stdout}\n{stderr}"
    );
}

#[test]
fn demo_refuses_to_empty_a_directory_that_is_not_a_demo_cluster() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("precious");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(dir.join("notes.txt"), "keep me").expect("write");
    let out = demo(tmp.path(), &dir, free_port())
        .output()
        .expect("demo.sh runs");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("is not a previous demo's cluster directory"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt"))
            .ok()
            .as_deref(),
        Some("keep me")
    );
}
