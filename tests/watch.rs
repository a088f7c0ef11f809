//! The node and pod watchers against kube-sim's API server: kube-rs list/watch with our slim
//! types, the metadata-only pod watch with `status.phase=Running`, `--node-selector`, and
//! removals reaching the callbacks as they happen.

mod support;

use std::sync::{Arc, Mutex};

use metrics_bridge::cluster::ClusterState;
use metrics_bridge::cluster::watch::{NodeSync, PodSync, watch_nodes, watch_pods};
use metrics_bridge::selector::LabelSelector;

fn names(values: &serde_json::Value) -> Vec<String> {
    values["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let m = &o["metadata"];
            match m["namespace"].as_str() {
                Some(ns) => format!("{ns}/{}", m["name"].as_str().unwrap()),
                None => m["name"].as_str().unwrap().to_owned(),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_track_selected_nodes_and_running_pods_as_they_change() {
    let sim = support::KubeSim::start(&["--nodes", "4", "--pods-per-node", "6"]);
    let kubeconfig = sim.path("metrics-bridge.kubeconfig");
    let kube = metrics_bridge::server::kube_config(Some(&kubeconfig))
        .await
        .unwrap();
    let client = kube::Client::try_from(kube).unwrap();

    let cluster = Arc::new(ClusterState::new());
    let removed_nodes = Arc::new(Mutex::new(Vec::<String>::new()));
    let removed_pods = Arc::new(Mutex::new(Vec::<String>::new()));
    let (rn, rp) = (Arc::clone(&removed_nodes), Arc::clone(&removed_pods));
    let selector = LabelSelector::parse("kubernetes.io/hostname!=node-00002").unwrap();
    let nodes = tokio::spawn(watch_nodes(
        client.clone(),
        Some(selector),
        NodeSync::new(
            Arc::clone(&cluster),
            Arc::new(move |n: &str| rn.lock().unwrap().push(n.to_owned())),
        ),
    ));
    let pods = tokio::spawn(watch_pods(
        client,
        PodSync::new(
            Arc::clone(&cluster),
            Arc::new(move |ns: &str, n: &str| rp.lock().unwrap().push(format!("{ns}/{n}"))),
        ),
    ));
    support::eventually("both caches to sync", || {
        cluster.nodes_synced() && cluster.pods_synced()
    })
    .await;

    // The selected nodes, with what the scraper needs from their status.
    let got: Vec<String> = cluster.nodes().iter().map(|n| n.name.to_string()).collect();
    assert_eq!(got, ["node-00001", "node-00003", "node-00004"]);
    let all_nodes = sim.admin("GET", "/api/v1/nodes").await.json();
    let n1 = &all_nodes["items"][0];
    let info = cluster.node("node-00001").unwrap();
    assert_eq!(
        info.addresses
            .iter()
            .map(|(t, a)| format!("{}={a}", t.as_str()))
            .collect::<Vec<_>>(),
        n1["status"]["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| format!(
                "{}={}",
                a["type"].as_str().unwrap(),
                a["address"].as_str().unwrap()
            ))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        info.kubelet_port,
        n1["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
            .as_u64()
            .unwrap() as u16
    );
    assert_eq!(info.kubelet_port, sim.kubelet_port);
    assert!(info.allocatable_cpu_millis > 0 && info.allocatable_memory_bytes > 0);

    // Exactly the Running pods, as a field-selected list reports them.
    let running = |cluster: &ClusterState| {
        let mut v = Vec::new();
        cluster.for_each_pod(None, |p| v.push(format!("{}/{}", p.namespace, p.name)));
        v
    };
    let listed = names(
        &sim.admin("GET", "/api/v1/pods?fieldSelector=status.phase%3DRunning")
            .await
            .json(),
    );
    let mut want = listed.clone();
    want.sort();
    assert_eq!(running(&cluster), want);
    let all_pods = names(&sim.admin("GET", "/api/v1/pods").await.json());
    assert!(
        all_pods.len() > listed.len(),
        "kube-sim has non-Running pods too"
    );

    // A pod deleted, new pods created, a node added and a selected node removed: every
    // change arrives as a watch event.
    let victim = listed[0].clone();
    let reply = sim.admin("DELETE", &format!("/sim/pods/{victim}")).await;
    assert!(reply.status < 300, "{}", reply.text());
    let reply = sim.admin("POST", "/sim/nodes?count=1").await;
    assert!(reply.status < 300, "{}", reply.text());
    let reply = sim.admin("DELETE", "/sim/nodes/node-00003").await;
    assert!(reply.status < 300, "{}", reply.text());
    support::eventually("node changes", || {
        let names: Vec<String> = cluster.nodes().iter().map(|n| n.name.to_string()).collect();
        names == ["node-00001", "node-00004", "node-00005"]
    })
    .await;
    support::eventually("pod changes", || {
        let listed_now = running(&cluster);
        !listed_now.contains(&victim)
            && !removed_pods.lock().unwrap().is_empty()
            && listed_now.len() > 3
    })
    .await;
    let want_now = {
        let mut v = names(
            &sim.admin("GET", "/api/v1/pods?fieldSelector=status.phase%3DRunning")
                .await
                .json(),
        );
        v.sort();
        v
    };
    support::eventually("the pod set to match the API's", || {
        running(&cluster) == want_now
    })
    .await;
    assert_eq!(*removed_nodes.lock().unwrap(), ["node-00003"]);
    assert!(removed_pods.lock().unwrap().contains(&victim));
    nodes.abort();
    pods.abort();
}
