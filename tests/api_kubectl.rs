//! Real kubectl (1.27, 1.32 and 1.33) against the metrics API router: discovery (aggregated
//! for 1.33 and 1.32, v2beta1 for 1.27), `get` with Tables, JSON lists and raw paths.
//!
//! The router is served over plain HTTP on loopback with two stub documents for the core
//! group (`/api`, `/api/v1`), which kubectl's discovery needs and metrics-bridge does not
//! serve itself.

#[path = "support/api_fixture.rs"]
mod fixture;

use std::path::{Path, PathBuf};
use std::process::Command;

use axum::Router;
use axum::routing::get;
use serde_json::Value;

const KUBECTLS: &[&str] = &[
    "/usr/lib/google-cloud-sdk/bin/kubectl.1.27",
    "/usr/bin/kubectl",
    "/usr/lib/google-cloud-sdk/bin/kubectl.1.33",
];

async fn serve() -> (String, tempfile::TempDir) {
    let app = fixture::app(fixture::small_cluster())
        .merge(
            Router::new()
                .route(
                    "/api",
                    get(|| async {
                        axum::Json(serde_json::json!({"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":[]}))
                    }),
                )
                .route(
                    "/api/v1",
                    get(|| async {
                        axum::Json(serde_json::json!({"kind":"APIResourceList","groupVersion":"v1","resources":[
                            {"name":"namespaces","singularName":"namespace","namespaced":false,"kind":"Namespace","verbs":["get","list"]}
                        ]}))
                    }),
                ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: http://{addr}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  context:\n    cluster: t\n    user: u\ncurrent-context: c\n"
    );
    std::fs::write(dir.path().join("kubeconfig"), kubeconfig).unwrap();
    (addr.to_string(), dir)
}

/// Runs kubectl with its own discovery cache, returning stdout; fails the test on error.
fn kubectl(bin: &str, dir: &Path, args: &[&str]) -> String {
    let cache: PathBuf = dir.join(format!("cache-{}", bin.replace('/', "_")));
    let out = Command::new(bin)
        .arg("--kubeconfig")
        .arg(dir.join("kubeconfig"))
        .arg("--cache-dir")
        .arg(&cache)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{bin}: {e}"));
    assert!(
        out.status.success(),
        "{bin} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The whitespace-separated cells of each output line.
fn rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reads_the_metrics_api() {
    let (_addr, dir) = serve().await;
    let dir = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        for &bin in KUBECTLS {
            // Tables: columns from the server, NAMESPACE added by kubectl for -A.
            let out = kubectl(bin, &dir, &["get", "nodes.metrics.k8s.io"]);
            assert_eq!(
                rows(&out),
                [
                    vec!["NAME", "CPU", "MEMORY", "WINDOW"],
                    vec!["node-1", "1", "1578392Ki", "15s"],
                    vec!["node-2", "250m", "50Mi", "15s"],
                ],
                "{bin}"
            );
            let out = kubectl(bin, &dir, &["get", "podmetrics", "-A"]);
            assert_eq!(
                rows(&out),
                [
                    vec!["NAMESPACE", "NAME", "CPU", "MEMORY", "WINDOW"],
                    vec!["default", "web-1", "260m", "63440Ki", "15s"],
                    vec!["default", "web-2", "1500m", "1Gi", "15s"],
                    vec!["kube-system", "coredns-1", "4710169n", "12240Ki", "15s"],
                ],
                "{bin}"
            );
            let out = kubectl(
                bin,
                &dir,
                &["get", "podmetrics.v1.metrics.k8s.io", "-n", "default", "-l", "tier=frontend"],
            );
            assert_eq!(rows(&out)[1], ["web-1", "260m", "63440Ki", "15s"], "{bin}");

            // A JSON list through kubectl's own decoder.
            let out = kubectl(
                bin,
                &dir,
                &["get", "podmetrics", "-n", "kube-system", "-o", "json"],
            );
            let list: Value = serde_json::from_str(&out).unwrap();
            assert_eq!(
                list["items"][0]["containers"][0]["usage"]["cpu"], "4710169n",
                "{bin}"
            );

            // Raw paths, both versions, with selectors.
            let out = kubectl(
                bin,
                &dir,
                &[
                    "get",
                    "--raw",
                    "/apis/metrics.k8s.io/v1/namespaces/default/pods?labelSelector=app%3Dweb&fieldSelector=metadata.name%3Dweb-2",
                ],
            );
            let list: Value = serde_json::from_str(&out).unwrap();
            assert_eq!(list["apiVersion"], "metrics.k8s.io/v1");
            assert_eq!(list["items"].as_array().unwrap().len(), 1, "{bin}");
            assert_eq!(list["items"][0]["containers"][0]["usage"]["cpu"], "1500m");

            // Discovery as kubectl sees it.
            let out = kubectl(bin, &dir, &["api-resources", "--api-group=metrics.k8s.io"]);
            let listed = rows(&out);
            assert!(
                listed.iter().any(|r| r.first().map(String::as_str) == Some("pods")
                    && r.contains(&"PodMetrics".to_string())
                    && r.contains(&"true".to_string())),
                "{bin}: {out}"
            );
            assert!(
                listed.iter().any(|r| r.first().map(String::as_str) == Some("nodes")
                    && r.contains(&"metrics.k8s.io/v1beta1".to_string())),
                "{bin}: preferred version v1beta1: {out}"
            );
        }
    })
    .await
    .unwrap();
}
