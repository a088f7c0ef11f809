//! The kubelets: authentication and authorization, the page read by an independent parser
//! (Python prometheus_client) against /sim/expected, and every fault.

mod support;

use std::time::Duration;

use support::{Cred, KubeSim, https};

const PARSE: &str = r#"
import sys, json
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        l = s.labels
        key = s.name + "|" + l.get("namespace", "") + "|" + l.get("pod", "") + "|" + l.get("container", "")
        out[key] = [s.value, s.timestamp]
print(json.dumps(out))
"#;

fn parse(page: &str) -> serde_json::Value {
    let mut child = std::process::Command::new("python3")
        .args(["-c", PARSE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn scrape(sim: &KubeSim, ip: &str, token: &str) -> support::Reply {
    https(
        "GET",
        &sim.kubelet_url(ip, "/metrics/resource"),
        Some(&sim.read("ca.crt")),
        Cred::Token(token),
        &[],
        Vec::new(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn kubelet_auth_and_page_match_expected() {
    let sim = KubeSim::start(&["--nodes", "2", "--pods-per-node", "6", "--seed", "3"]);
    let ca = sim.read("ca.crt");
    let url = sim.kubelet_url("127.1.0.1", "/metrics/resource");
    let anon = https("GET", &url, Some(&ca), Cred::None, &[], Vec::new())
        .await
        .unwrap();
    assert_eq!((anon.status, anon.text().as_str()), (401, "Unauthorized"));
    let bad = https("GET", &url, Some(&ca), Cred::Token("nope"), &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(bad.status, 401);
    let viewer = scrape(&sim, "127.1.0.1", &sim.token("viewer")).await;
    assert_eq!(
        (viewer.status, viewer.text().as_str()),
        (
            403,
            "Forbidden (user=viewer, verb=get, resource=nodes, subresource=metrics)"
        )
    );
    let health = https(
        "GET",
        &sim.kubelet_url("127.1.0.1", "/healthz"),
        Some(&ca),
        Cred::Token(&sim.token("metrics-bridge")),
        &[],
        Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        health.status, 403,
        "metrics-server's role has no nodes/proxy"
    );
    let (cert, key) = (sim.read("admin.crt"), sim.read("admin.key"));
    let health = https(
        "GET",
        &sim.kubelet_url("127.1.0.1", "/healthz"),
        Some(&ca),
        Cred::Cert(&cert, &key),
        &[],
        Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!((health.status, health.text().as_str()), (200, "ok"));

    let token = sim.token("metrics-bridge");
    let first = scrape(&sim, "127.1.0.1", &token).await;
    assert_eq!(first.status, 200);
    assert!(
        first.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = scrape(&sim, "127.1.0.1", &token).await;
    let expected = sim.expected().await;
    let (a, b) = (parse(&first.text()), parse(&second.text()));
    let node = expected["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "node-00001")
        .unwrap();
    let rate = |key: &str| {
        let (x, y) = (&a[key], &b[key]);
        let dt = y[1].as_f64().unwrap() - x[1].as_f64().unwrap();
        assert!(dt > 0.0, "{key}: timestamps did not advance");
        (y[0].as_f64().unwrap() - x[0].as_f64().unwrap()) / dt
    };
    let node_rate = rate("node_cpu_usage_seconds_total|||");
    let want = node["cpu_cores"].as_f64().unwrap();
    assert!(
        (node_rate - want).abs() < 1e-6,
        "node cpu {node_rate} vs {want}"
    );
    assert_eq!(
        b["node_memory_working_set_bytes|||"][0].as_f64().unwrap() as u64,
        node["memory_bytes"].as_u64().unwrap()
    );
    let mut checked = 0;
    for pod in expected["pods"].as_array().unwrap() {
        for c in pod["containers"].as_array().unwrap() {
            let key = format!(
                "container_cpu_usage_seconds_total|{}|{}|{}",
                pod["namespace"].as_str().unwrap(),
                pod["name"].as_str().unwrap(),
                c["name"].as_str().unwrap()
            );
            if a.get(&key).is_none() {
                continue; // on the other node
            }
            let r = rate(&key);
            let want = c["cpu_cores"].as_f64().unwrap();
            assert!((r - want).abs() < 1e-6, "{key}: {r} vs {want}");
            let mem_key = key.replace(
                "container_cpu_usage_seconds_total",
                "container_memory_working_set_bytes",
            );
            assert_eq!(
                b[&mem_key][0].as_f64().unwrap() as u64,
                c["memory_bytes"].as_u64().unwrap(),
                "{mem_key}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 2, "only {checked} containers compared");
}

#[tokio::test]
async fn every_fault_is_observable() {
    let sim = KubeSim::start(&[
        "--nodes",
        "9",
        "--pods-per-node",
        "2",
        "--fault",
        "node-00002=http500",
        "--fault",
        "node-00003=refused",
    ]);
    let token = sim.token("metrics-bridge");
    let ca = sim.read("ca.crt");
    let r = scrape(&sim, "127.1.0.2", &token).await;
    assert_eq!(r.status, 500);
    let err = https(
        "GET",
        &sim.kubelet_url("127.1.0.3", "/metrics/resource"),
        Some(&ca),
        Cred::Token(&token),
        &[],
        Vec::new(),
    )
    .await
    .unwrap_err();
    assert!(err.contains("connect") && err.contains("refused"), "{err}");

    let set = |node: &str, fault: &str| format!("/sim/faults/{node}?fault={fault}");
    for (node, fault) in [
        ("node-00004", "truncated"),
        ("node-00005", "garbage"),
        ("node-00006", "wrong-san"),
        ("node-00007", "wrong-ca"),
        ("node-00008", "huge:5000000"),
        ("node-00009", "slow:1500ms"),
        ("node-00001", "hang"),
    ] {
        let r = sim.admin("PUT", &set(node, fault)).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let faults = sim.admin("GET", "/sim/faults").await.json();
    assert_eq!(faults["node-00008"], "huge:5000000");
    assert_eq!(faults["node-00002"], "http500");

    let t = https(
        "GET",
        &sim.kubelet_url("127.1.0.4", "/metrics/resource"),
        Some(&ca),
        Cred::Token(&token),
        &[],
        Vec::new(),
    )
    .await;
    assert!(t.is_err(), "a truncated body must fail to read: {t:?}");
    let g = scrape(&sim, "127.1.0.5", &token).await;
    assert_eq!(g.status, 200);
    assert!(std::str::from_utf8(&g.body).is_err(), "garbage is not text");
    let san = https(
        "GET",
        &sim.kubelet_url("127.1.0.6", "/metrics/resource"),
        Some(&ca),
        Cred::Token(&token),
        &[],
        Vec::new(),
    )
    .await
    .unwrap_err();
    assert!(
        san.contains("NotValidForName") || san.contains("not valid for name"),
        "{san}"
    );
    let wrong_ca = https(
        "GET",
        &sim.kubelet_url("127.1.0.7", "/metrics/resource"),
        Some(&ca),
        Cred::Token(&token),
        &[],
        Vec::new(),
    )
    .await
    .unwrap_err();
    assert!(wrong_ca.contains("UnknownIssuer"), "{wrong_ca}");
    // Without verification the wrong-CA kubelet still answers (--kubelet-insecure-tls).
    let insecure = https(
        "GET",
        &sim.kubelet_url("127.1.0.7", "/metrics/resource"),
        None,
        Cred::Token(&token),
        &[],
        Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(insecure.status, 200);
    let huge = scrape(&sim, "127.1.0.8", &token).await;
    assert_eq!(huge.body.len(), 5_000_000);
    assert!(
        huge.headers.get("content-length").is_none(),
        "streamed, not sized"
    );
    let started = std::time::Instant::now();
    let slow = scrape(&sim, "127.1.0.9", &token).await;
    assert_eq!(slow.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(1500));
    let hang =
        tokio::time::timeout(Duration::from_secs(2), scrape(&sim, "127.1.0.1", &token)).await;
    assert!(hang.is_err(), "a hanging kubelet must not answer");

    // Clearing restores service, including the listener and the certificate.
    for node in ["node-00003", "node-00006", "node-00001"] {
        assert_eq!(
            sim.admin("DELETE", &format!("/sim/faults/{node}"))
                .await
                .status,
            200
        );
    }
    for ip in ["127.1.0.3", "127.1.0.6", "127.1.0.1"] {
        assert_eq!(scrape(&sim, ip, &token).await.status, 200, "{ip}");
    }
}
