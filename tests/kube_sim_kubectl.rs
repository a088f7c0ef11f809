//! Real kubectl (1.27 and 1.33) against kube-sim: listing, columns, discovery, authorization.

mod support;

use support::{KUBECTL_1_27, KUBECTL_1_33, KubeSim};

fn stdout(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn kubectl_lists_nodes_and_pods_with_apiserver_columns() {
    let sim = KubeSim::start(&["--nodes", "4", "--pods-per-node", "5", "--seed", "7"]);
    for kubectl in [KUBECTL_1_27, KUBECTL_1_33] {
        let out = stdout(&sim.kubectl(kubectl, "kubeconfig", &["get", "nodes", "-o", "wide"]));
        let mut lines = out.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            [
                "NAME",
                "STATUS",
                "ROLES",
                "AGE",
                "VERSION",
                "INTERNAL-IP",
                "EXTERNAL-IP",
                "OS-IMAGE",
                "KERNEL-VERSION",
                "CONTAINER-RUNTIME"
            ],
            "{kubectl}: {out}"
        );
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(rows.len(), 4, "{kubectl}: {out}");
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(row[1], "Ready");
            assert_eq!(
                row[5],
                format!("127.1.0.{}", i + 1),
                "InternalIP of {}",
                row[0]
            );
        }
        let out = stdout(&sim.kubectl(kubectl, "kubeconfig", &["get", "pods", "-A"]));
        let mut lines = out.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"]
        );
        assert_eq!(lines.count(), 20, "{out}");
        // Paged listing (kubectl's --chunk-size) must give the same set.
        let paged = stdout(&sim.kubectl(
            kubectl,
            "kubeconfig",
            &["get", "pods", "-A", "--chunk-size=3", "-o", "name"],
        ));
        assert_eq!(paged.lines().count(), 20, "{paged}");
    }
}

#[test]
fn kubectl_discovery_and_forbidden_messages() {
    let sim = KubeSim::start(&["--nodes", "2", "--pods-per-node", "2"]);
    for kubectl in [KUBECTL_1_27, KUBECTL_1_33] {
        let apis: serde_json::Value = serde_json::from_str(&stdout(&sim.kubectl(
            kubectl,
            "kubeconfig",
            &["get", "--raw", "/apis"],
        )))
        .unwrap();
        let groups: Vec<&str> = apis["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            groups,
            [
                "authentication.k8s.io",
                "authorization.k8s.io",
                "coordination.k8s.io"
            ]
        );
        let v1: serde_json::Value = serde_json::from_str(&stdout(&sim.kubectl(
            kubectl,
            "kubeconfig",
            &["get", "--raw", "/api/v1"],
        )))
        .unwrap();
        assert_eq!(v1["groupVersion"], "v1");
        let resources = stdout(&sim.kubectl(
            kubectl,
            "kubeconfig",
            &["api-resources", "--no-headers", "-o", "name"],
        ));
        for r in [
            "pods",
            "nodes",
            "namespaces",
            "configmaps",
            "tokenreviews",
            "leases",
        ] {
            assert!(
                resources.lines().any(|l| l.split('.').next() == Some(r)),
                "{r} missing: {resources}"
            );
        }
        let denied = sim.kubectl(kubectl, "viewer.kubeconfig", &["get", "nodes"]);
        assert!(!denied.status.success());
        assert_eq!(
            String::from_utf8_lossy(&denied.stderr).trim(),
            r#"Error from server (Forbidden): nodes is forbidden: User "viewer" cannot list resource "nodes" in API group "" at the cluster scope"#
        );
        let can = stdout(&sim.kubectl(
            kubectl,
            "metrics-bridge.kubeconfig",
            &["auth", "can-i", "get", "nodes/metrics"],
        ));
        assert_eq!(can.trim(), "yes");
        let cannot = sim.kubectl(
            kubectl,
            "metrics-bridge.kubeconfig",
            &["auth", "can-i", "delete", "pods"],
        );
        assert_eq!(String::from_utf8_lossy(&cannot.stdout).trim(), "no");
    }
    let who = stdout(&sim.kubectl(
        KUBECTL_1_33,
        "hpa.kubeconfig",
        &["auth", "whoami", "-o", "json"],
    ));
    let who: serde_json::Value = serde_json::from_str(&who).unwrap();
    assert_eq!(
        who["status"]["userInfo"]["username"],
        "system:serviceaccount:kube-system:horizontal-pod-autoscaler"
    );
    // kubectl top needs the metrics API, which is not aggregated here.
    let top = sim.kubectl(KUBECTL_1_33, "kubeconfig", &["top", "node"]);
    assert_eq!(
        String::from_utf8_lossy(&top.stderr).trim(),
        "error: Metrics API not available"
    );
}
