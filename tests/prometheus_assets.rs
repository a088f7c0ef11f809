//! The shipped Prometheus and Grafana assets, checked without a running Prometheus:
//! `deploy/prometheus/rules.yaml` with `promtool check rules` and its unit tests with
//! `promtool test rules`; the dashboards in `grafana/` against the conventions (stable uids,
//! a `datasource` variable used by every panel and query, units and descriptions on every
//! panel, `$__rate_interval` for every range, counters only inside rate/irate/increase); the
//! kustomization rendered by real `kubectl kustomize` into one labelled ConfigMap holding the
//! dashboards byte for byte. (`tests/prometheus.rs` runs every query against Prometheus.)

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn run(cmd: &str, args: &[&str], dir: &Path) -> String {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd} {args:?} failed:\n{text}");
    text
}

#[test]
fn promtool_checks_and_unit_tests_the_rules() {
    let dir = repo("deploy/prometheus");
    let out = run("promtool", &["check", "rules", "rules.yaml"], &dir);
    assert!(out.contains("SUCCESS: 6 rules found"), "{out}");
    let out = run("promtool", &["test", "rules", "rules_test.yaml"], &dir);
    assert!(out.contains("SUCCESS"), "{out}");
    // Every alert of the file has a test that expects it to fire.
    let rules = std::fs::read_to_string(dir.join("rules.yaml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("rules_test.yaml")).unwrap();
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!(
                "alertname: {alert}\n        exp_alerts:\n          - "
            )),
            "no firing test for {alert}"
        );
    }
}

fn dashboards() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo("grafana")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("json") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let v = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            out.push((name, v));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The innermost function call enclosing byte `at` of `expr`, if any.
fn enclosing_call(expr: &str, at: usize) -> Option<&str> {
    let bytes = expr.as_bytes();
    let mut depth = 0i32;
    let mut i = at;
    while i > 0 {
        i -= 1;
        match bytes[i] {
            b')' => depth += 1,
            b'(' if depth > 0 => depth -= 1,
            b'(' => {
                let end = i;
                let mut start = i;
                while start > 0
                    && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_')
                {
                    start -= 1;
                }
                return Some(&expr[start..end]);
            }
            _ => {}
        }
    }
    None
}

/// Names in `expr` that are counters: `*_total` and a histogram's `_bucket`, `_sum`, `_count`.
fn counter_uses(expr: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_alphabetic() || bytes[i] == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            let word = &expr[start..i];
            let in_string = expr[..start].matches('"').count() % 2 == 1;
            if !in_string
                && ["_total", "_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| word.ends_with(s))
            {
                out.push((start, word));
            }
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn dashboards_follow_the_conventions() {
    let all = dashboards();
    let uids: Vec<&str> = all
        .iter()
        .map(|(_, d)| d["uid"].as_str().unwrap())
        .collect();
    assert_eq!(
        uids,
        ["metrics-bridge-cluster-resources", "metrics-bridge-self"]
    );
    for (name, d) in &all {
        let vars = d["templating"]["list"].as_array().unwrap();
        let ds = vars
            .iter()
            .find(|v| v["name"] == "datasource")
            .unwrap_or_else(|| panic!("{name}: no datasource variable"));
        assert_eq!(ds["type"], "datasource");
        assert_eq!(ds["query"], "prometheus");
        for v in vars.iter().filter(|v| v["type"] == "query") {
            assert_eq!(
                v["datasource"]["uid"], "${datasource}",
                "{name}: {}",
                v["name"]
            );
        }
        let panels: Vec<&Value> = d["panels"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["type"] != "row")
            .collect();
        assert!(panels.len() >= 10, "{name}: {} panels", panels.len());
        let mut ids = std::collections::BTreeSet::new();
        for p in panels {
            let title = p["title"].as_str().unwrap();
            assert!(
                ids.insert(p["id"].as_u64().unwrap()),
                "{name}: duplicate id"
            );
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{name}: {title}");
            assert!(
                p["description"].as_str().is_some_and(|s| s.len() > 20),
                "{name}: {title} has no description"
            );
            assert!(
                p["fieldConfig"]["defaults"]["unit"]
                    .as_str()
                    .is_some_and(|u| !u.is_empty()),
                "{name}: {title} has no unit"
            );
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{name}: {title} has no query");
            for t in targets {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{name}: {title}");
                let expr = t["expr"].as_str().unwrap();
                // Every range is $__rate_interval (or $__range for a whole-window count).
                for (i, _) in expr.match_indices('[') {
                    let rest = &expr[i..];
                    assert!(
                        rest.starts_with("[$__rate_interval]") || rest.starts_with("[$__range]"),
                        "{name}: {title}: range other than $__rate_interval in {expr}"
                    );
                }
                for (at, counter) in counter_uses(expr) {
                    let call = enclosing_call(expr, at);
                    assert!(
                        matches!(call, Some("rate" | "irate" | "increase")),
                        "{name}: {title}: counter {counter} outside rate/increase in {expr}"
                    );
                }
            }
        }
    }
}

#[test]
fn the_counter_check_catches_a_bare_counter() {
    let bad = "sum(metrics_server_kubelet_request_total)";
    let (at, name) = counter_uses(bad)[0];
    assert_eq!(name, "metrics_server_kubelet_request_total");
    assert_eq!(enclosing_call(bad, at), Some("sum"));
    let good = "sum(rate(x_bucket{le=\"1\"}[$__rate_interval]))";
    let (at, _) = counter_uses(good)[0];
    assert_eq!(enclosing_call(good, at), Some("rate"));
    // Label values in strings are not metric names.
    assert!(counter_uses("up{job=\"a_total\"}").is_empty());
}

#[test]
fn kustomize_renders_one_labelled_configmap_with_the_dashboards() {
    let out = Command::new("kubectl")
        .args(["kustomize", "grafana"])
        .current_dir(repo(""))
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // kubectl prints YAML; read it with Python's yaml (installed with the test deps).
    let script = "import sys, json, yaml\n\
                  docs = [d for d in yaml.safe_load_all(sys.stdin) if d]\n\
                  print(json.dumps(docs))\n";
    let mut py = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    std::io::Write::write_all(&mut py.stdin.take().unwrap(), &out.stdout).unwrap();
    let json = py.wait_with_output().unwrap();
    let docs: Vec<Value> = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(docs.len(), 1);
    let cm = &docs[0];
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "metrics-bridge-dashboards");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    for (name, _) in dashboards() {
        let file = std::fs::read_to_string(repo(&format!("grafana/{name}"))).unwrap();
        assert_eq!(cm["data"][&name].as_str(), Some(file.as_str()), "{name}");
    }
}
