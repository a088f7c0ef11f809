//! The real `metrics-bridge` binary's command line: exit codes and the exact stderr line for
//! bad, unknown and unsupported flags, bad config files and variables, `--version`, and that
//! metrics-server's own deployment args get past option parsing.
//!
//! Every run starts from an empty environment, so no `METRICS_BRIDGE_*` or in-cluster
//! variable of the machine leaks in.

use std::ffi::OsStr;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_metrics-bridge");

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run_env<I, S>(args: I, env: &[(&str, &str)]) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"));
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

fn run(args: &[&str]) -> Run {
    run_env(args, &[])
}

/// Asserts a usage error: exit code 2 and exactly `line` on stderr, nothing on stdout.
fn assert_usage_error(args: &[&str], env: &[(&str, &str)], line: &str) {
    let r = run_env(args, env);
    assert_eq!(r.code, Some(2), "{args:?}: stderr {:?}", r.stderr);
    assert_eq!(r.stderr, format!("metrics-bridge: {line}\n"), "{args:?}");
    assert_eq!(r.stdout, "", "{args:?}");
}

fn temp_config(ext: &str, text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new()
        .suffix(ext)
        .tempfile()
        .unwrap_or_else(|e| panic!("temp file: {e}"));
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("write: {e}"));
    f
}

/// A run that got past option parsing: it logged its start and then failed for want of a
/// cluster (no kubeconfig, not in a pod), with exit code 1 and no usage-error line.
fn assert_started(r: &Run, what: &str) {
    assert_eq!(r.code, Some(1), "{what}: {}", r.stderr);
    assert!(
        r.stderr.contains("starting metrics-bridge"),
        "{what}: {}",
        r.stderr
    );
    assert!(
        !r.stderr.lines().any(|l| l.starts_with("metrics-bridge: ")),
        "{what}: an options error: {}",
        r.stderr
    );
    let last = r.stderr.lines().last().unwrap_or("");
    assert!(
        last.contains("ERROR"),
        "{what}: the fatal error is logged last: {last}"
    );
}

#[test]
fn version_prints_and_exits_zero() {
    let r = run(&["--version"]);
    assert_eq!(r.code, Some(0));
    assert_eq!(
        r.stdout,
        format!("metrics-bridge v{}\n", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(r.stderr, "");
    // Other flags are not even checked, as with metrics-server.
    let r = run(&["--metric-resolution=1ms", "--version"]);
    assert_eq!(r.code, Some(0));
}

#[test]
fn help_lists_the_flags_and_exits_zero() {
    let r = run(&["--help"]);
    assert_eq!(r.code, Some(0));
    for flag in [
        "--metric-resolution duration",
        "--kubelet-preferred-address-types strings",
        "-l, --node-selector string",
        "-v, --v int",
        "--config string",
    ] {
        assert!(
            r.stdout.contains(flag),
            "{flag} missing from:\n{}",
            r.stdout
        );
    }
    assert!(
        !r.stdout.contains("--profiling"),
        "unsupported flags are not offered"
    );
    assert_eq!(run(&["-h"]).stdout, r.stdout);
}

#[test]
fn bad_values_name_the_flag() {
    assert_usage_error(
        &["--metric-resolution=5x"],
        &[],
        "invalid value \"5x\" for --metric-resolution: unknown unit \"x\" in duration \"5x\"",
    );
    assert_usage_error(
        &["--metric-resolution", "500ms"],
        &[],
        "invalid value \"500ms\" for --metric-resolution: must be at least 1s",
    );
    assert_usage_error(
        &["--kubelet-preferred-address-types=InternalIP,Public"],
        &[],
        "invalid value \"InternalIP,Public\" for --kubelet-preferred-address-types: unknown \
         address type \"Public\"; use Hostname, InternalDNS, InternalIP, ExternalDNS or \
         ExternalIP",
    );
    assert_usage_error(
        &["--logging-format=xml"],
        &[],
        "invalid value \"xml\" for --logging-format: use text or json",
    );
    assert_usage_error(
        &["-v", "loud"],
        &[],
        "invalid value \"loud\" for --v: must be an integer from 0 to 255",
    );
    assert_usage_error(
        &["--tls-cipher-suites=TLS_RSA_WITH_AES_128_CBC_SHA"],
        &[],
        "invalid value \"TLS_RSA_WITH_AES_128_CBC_SHA\" for --tls-cipher-suites: cipher suite \
         TLS_RSA_WITH_AES_128_CBC_SHA is not implemented by metrics-bridge's TLS library \
         (rustls); use ECDHE with AES-GCM or ChaCha20-Poly1305, such as \
         TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    );
    assert_usage_error(
        &["--tls-sni-cert-key=only-a-cert.pem"],
        &[],
        "invalid value \"only-a-cert.pem\" for --tls-sni-cert-key: expected cert,key or \
         cert,key:name1,name2",
    );
    assert_usage_error(
        &["-l", "app in web"],
        &[],
        "invalid value \"app in web\" for --node-selector: found 'web', expected: '('",
    );
}

#[test]
fn rules_across_flags_are_enforced() {
    assert_usage_error(
        &["--metric-resolution=10s"],
        &[],
        "--kubelet-request-timeout=10s must not exceed 90% of --metric-resolution=10s (9s); \
         lower the timeout or raise the resolution",
    );
    assert_usage_error(
        &["--kubelet-client-key=/k.pem"],
        &[],
        "--kubelet-client-certificate and --kubelet-client-key must be given together \
         (--kubelet-client-certificate is missing)",
    );
    assert_usage_error(
        &[
            "--kubelet-insecure-tls",
            "--kubelet-certificate-authority=/ca.pem",
        ],
        &[],
        "--kubelet-certificate-authority and --kubelet-insecure-tls cannot be used together",
    );
}

#[test]
fn unknown_flags_and_arguments_are_named() {
    assert_usage_error(
        &["--kubelet-prot=10250"],
        &[],
        "unknown flag: --kubelet-prot (did you mean --kubelet-port?)",
    );
    assert_usage_error(&["--frobnicate"], &[], "unknown flag: --frobnicate");
    assert_usage_error(&["-q"], &[], "unknown flag: -q");
    assert_usage_error(
        &["serve"],
        &[],
        "unexpected argument \"serve\": metrics-bridge takes no positional arguments",
    );
    assert_usage_error(
        &["--kubelet-insecure-tls", "false"],
        &[],
        "unexpected argument \"false\": boolean flags take their value after \"=\", as in \
         --kubelet-insecure-tls=false",
    );
    assert_usage_error(
        &["--kubeconfig"],
        &[],
        "flag needs an argument: --kubeconfig",
    );
}

#[test]
fn unsupported_metrics_server_flags_are_named() {
    for (args, line) in [
        (
            &["--profiling"][..],
            "flag --profiling is not supported by metrics-bridge yet (only --profiling=false \
             is accepted)",
        ),
        (
            &["--contention-profiling=true"],
            "flag --contention-profiling is not supported by metrics-bridge yet (only \
             --contention-profiling=false is accepted)",
        ),
        (
            &["--audit-log-path", "/var/log/audit.log"],
            "flag --audit-log-path is not supported by metrics-bridge yet",
        ),
        (
            &["--audit-policy-file=/etc/audit.yaml"],
            "flag --audit-policy-file is not supported by metrics-bridge yet",
        ),
        (
            &["--deprecated-kubelet-completely-insecure"],
            "flag --deprecated-kubelet-completely-insecure is not supported by metrics-bridge \
             yet (only --deprecated-kubelet-completely-insecure=false is accepted)",
        ),
        (
            &["--permit-address-sharing"],
            "flag --permit-address-sharing is not supported by metrics-bridge yet",
        ),
        (
            &["--vmodule=scrape=4"],
            "flag --vmodule is not supported by metrics-bridge yet (only an empty --vmodule is \
             accepted)",
        ),
        (
            &["--log_dir=/var/log"],
            "flag --log-dir is not supported by metrics-bridge yet (only an empty --log-dir is \
             accepted)",
        ),
    ] {
        assert_usage_error(args, &[], line);
    }
}

#[test]
fn bad_config_files_name_the_file_and_key() {
    let unknown = temp_config(".yaml", "metric-resolution: 15s\nkubelet-prot: 1\n");
    let path = unknown.path().display().to_string();
    assert_usage_error(
        &[&format!("--config={path}")],
        &[],
        &format!("config file \"{path}\": unknown key \"kubelet-prot\""),
    );

    let bad_value = temp_config(".yaml", "kubelet-port: 99999\n");
    let path = bad_value.path().display().to_string();
    assert_usage_error(
        &["--config", &path],
        &[],
        &format!(
            "invalid value \"99999\" for kubelet-port in config file \"{path}\": must be a port \
             from 1 to 65535"
        ),
    );

    let broken = temp_config(".yaml", "metric-resolution: [15s\n");
    let path = broken.path().display().to_string();
    let r = run(&[&format!("--config={path}")]);
    assert_eq!(r.code, Some(2));
    assert_eq!(r.stderr.lines().count(), 1, "one line: {:?}", r.stderr);
    assert!(
        r.stderr
            .starts_with(&format!("metrics-bridge: config file \"{path}\": ")),
        "{}",
        r.stderr
    );

    assert_usage_error(
        &["--config=/nonexistent/metrics-bridge.yaml"],
        &[],
        "cannot read config file \"/nonexistent/metrics-bridge.yaml\": No such file or \
         directory (os error 2)",
    );
    assert_usage_error(
        &["--config=/etc/metrics-bridge.ini"],
        &[],
        "config file \"/etc/metrics-bridge.ini\": unknown format: the name must end in .yaml, \
         .yml or .toml",
    );
    let toml = temp_config(".toml", "profiling = true\n");
    let path = toml.path().display().to_string();
    assert_usage_error(
        &[],
        &[("METRICS_BRIDGE_CONFIG", &path)],
        &format!(
            "profiling in config file \"{path}\" is not supported by metrics-bridge yet (only \
             --profiling=false is accepted)"
        ),
    );
}

#[test]
fn bad_environment_variables_are_named() {
    assert_usage_error(
        &[],
        &[("METRICS_BRIDGE_METRIC_RESOLUTION", "soon")],
        "invalid value \"soon\" for METRICS_BRIDGE_METRIC_RESOLUTION: invalid duration \"soon\"",
    );
    assert_usage_error(
        &[],
        &[("METRICS_BRIDGE_PROFILING", "true")],
        "METRICS_BRIDGE_PROFILING is not supported by metrics-bridge yet (only \
         --profiling=false is accepted)",
    );
}

#[cfg(unix)]
#[test]
fn non_utf8_arguments_are_named() {
    use std::os::unix::ffi::OsStrExt as _;
    let r = run_env([OsStr::from_bytes(b"--kubeconfig=\xff")], &[]);
    assert_eq!(r.code, Some(2));
    assert_eq!(
        r.stderr,
        "metrics-bridge: argument 1 is not valid UTF-8: \"--kubeconfig=\u{fffd}\"\n"
    );
}

#[test]
fn metrics_servers_components_yaml_args_get_past_option_parsing() {
    // The args of metrics-server v0.7/v0.8's components.yaml.
    let r = run(&[
        "--cert-dir=/tmp",
        "--secure-port=10250",
        "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
        "--kubelet-use-node-status-port",
        "--metric-resolution=15s",
    ]);
    assert_started(&r, "components.yaml args");
    assert!(!r.stderr.contains("WARN"), "no warnings: {}", r.stderr);

    // The same settings from the example config file.
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/metrics-bridge.yaml");
    let r = run(&[&format!("--config={}", example.display())]);
    assert_started(&r, "config/metrics-bridge.yaml");
    assert!(
        r.stderr.contains("metrics-bridge.yaml"),
        "the start line names the config file: {}",
        r.stderr
    );
}

#[test]
fn start_up_warnings_are_logged() {
    let r = run(&[
        "--metric-resolution=5s",
        "--kubelet-request-timeout=4s",
        "--kubelet-insecure-tls",
    ]);
    assert_started(&r, "warnings");
    let warnings: Vec<&str> = r.stderr.lines().filter(|l| l.contains(" WARN ")).collect();
    assert_eq!(warnings.len(), 2, "{}", r.stderr);
    assert!(warnings[0].ends_with(
        "--metric-resolution=5s is below 10s: kubelets refresh resource metrics about every \
         10s, so scrapes may return the same samples and CPU rates may be noisy"
    ));
    assert!(
        warnings[1]
            .contains("--kubelet-insecure-tls: kubelet serving certificates are not verified"),
        "{}",
        warnings[1]
    );
}

#[test]
fn json_logging_writes_only_json_lines() {
    let r = run(&["--logging-format=json", "--kubelet-insecure-tls"]);
    assert_eq!(r.code, Some(1));
    let lines: Vec<serde_json::Value> = r
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines.len() >= 3, "{}", r.stderr);
    assert_eq!(lines[0]["level"], "warn");
    assert_eq!(lines[1]["msg"], "starting metrics-bridge");
    assert_eq!(
        lines[1]["version"],
        format!("v{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        lines.last().map(|l| l["level"].clone()),
        Some("error".into())
    );
}
