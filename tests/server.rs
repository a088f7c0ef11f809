//! The `metrics-bridge` binary as it is deployed: registered behind kube-sim's aggregation
//! layer, asked by real kubectl, and stopped with SIGTERM. (The figures kubectl prints are
//! compared exactly in `e2e_kubectl.rs`; this is the process lifecycle.)

mod support;

use std::collections::BTreeSet;

use support::bridge::Cluster;
use support::expect::{Truth, until_ok};
use support::{KUBECTL_1_27, KUBECTL_1_33};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_top_works_through_the_aggregator_and_sigterm_stops_cleanly() {
    let cluster = Cluster::new(&["--nodes", "3", "--pods-per-node", "4"]);
    let mut bridge = cluster.start_bridge(&[]).await;
    cluster.wait_api_available().await;
    let truth = Truth::fetch(&cluster.sim).await;
    let nodes: Vec<String> = truth.nodes.keys().cloned().collect();
    let pods = truth.pods_where(|_, _| true);
    for kubectl in [KUBECTL_1_27, KUBECTL_1_33] {
        until_ok(kubectl, async || {
            let out = cluster.kubectl(kubectl, &["top", "node"])?;
            truth.check_top_nodes(&out, &nodes, &BTreeSet::new())
        })
        .await;
        until_ok(kubectl, async || {
            let out = cluster.kubectl(kubectl, &["top", "pod", "-A"])?;
            truth.check_top_pods(&out, None, false, &pods)
        })
        .await;
    }

    // The self-signed serving pair went to --cert-dir, as metrics-server's does.
    assert!(bridge.cert_dir.join("apiserver.crt").exists());
    assert!(bridge.cert_dir.join("apiserver.key").exists());

    let (status, log) = bridge.terminate();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        !bridge.logged("received SIGTERM; shutting down").is_empty(),
        "{log}"
    );
    assert!(!bridge.logged("metrics-bridge stopped").is_empty(), "{log}");
    assert_eq!(bridge.errors(), Vec::<serde_json::Value>::new());
}
