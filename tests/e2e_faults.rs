//! End to end with real binaries, through kube-sim's aggregation layer: faulty kubelets next
//! to healthy ones, and a cluster that changes under metrics-bridge (container restarts, pod
//! deletions and creations, node removals). Numbers are compared with `/sim/expected` at every
//! observation, not only at the end: a wrong figure served on the way fails at once.

mod support;

use std::collections::BTreeSet;

use serde_json::Value;
use support::bridge::{Bridge, Cluster};
use support::expect::{Mismatch, PodKey, Truth, go_duration_secs, until_ok};
use support::{KUBECTL_1_27, KUBECTL_1_33};

const V1BETA1: &str = "metrics.k8s.io/v1beta1";
const BASE: &str = "/apis/metrics.k8s.io/v1beta1";

/// Every fault kind kube-sim's kubelets offer, on its own node, and the reason metrics-bridge
/// must log the failure under. `slow:3s` is beyond the tests' 1.5 s kubelet timeout.
const FAULTS: [(&str, &str, &str); 9] = [
    ("node-00001", "slow:3s", "timeout"),
    ("node-00002", "hang", "timeout"),
    ("node-00003", "http500", "http_status"),
    ("node-00004", "truncated", "transfer"),
    ("node-00005", "garbage", "decode"),
    ("node-00006", "wrong-san", "tls"),
    ("node-00007", "wrong-ca", "tls"),
    ("node-00008", "refused", "connect"),
    ("node-00009", "huge", "body_too_large"),
];

/// The log records of failed scrapes of `node`.
fn failures_of(bridge: &Bridge, node: &str) -> Vec<Value> {
    bridge
        .logged("failed to scrape node")
        .into_iter()
        .filter(|r| r["node"] == node)
        .collect()
}

/// GET through the aggregator as the admin: the JSON body, or `None` for a 404.
async fn get_or_404(cluster: &Cluster, path: &str) -> Result<Option<Value>, Mismatch> {
    let r = cluster.get(path).await;
    match r.status {
        200 => Ok(Some(r.json())),
        404 => Ok(None),
        s => Err(Mismatch::Wrong(format!("{path}: {s} {}", r.text()))),
    }
}

/// Waits until `path` is 404; anything but 200 on the way is wrong.
async fn until_gone(cluster: &Cluster, path: &str) {
    until_ok(&format!("{path} to leave"), async || {
        match get_or_404(cluster, path).await? {
            None => Ok(()),
            Some(_) => Err(Mismatch::Missing(format!("{path} is still served"))),
        }
    })
    .await;
}

/// The nodes list and the pods list hold exactly `nodes` and `pods`, with the expected numbers.
async fn check_served(
    cluster: &Cluster,
    truth: &Truth,
    nodes: &[String],
    pods: &[PodKey],
) -> Result<(), Mismatch> {
    let list = cluster.get(&format!("{BASE}/nodes")).await.json();
    truth.check_node_list(&list, V1BETA1, nodes)?;
    let list = cluster.get(&format!("{BASE}/pods")).await.json();
    truth.check_pod_list(&list, V1BETA1, pods)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_kubelets_are_missing_while_the_rest_are_served_and_return_when_cleared() {
    let flags: Vec<String> = FAULTS
        .iter()
        .map(|(node, kind, _)| format!("{node}={kind}"))
        .collect();
    let mut args = vec!["--nodes", "12", "--pods-per-node", "3"];
    for f in &flags {
        args.extend(["--fault", f.as_str()]);
    }
    let cluster = Cluster::new(&args);
    let bridge = cluster.start_bridge(&[]).await;
    cluster.wait_api_available().await;
    let truth = Truth::fetch(&cluster.sim).await;
    let faulty: BTreeSet<String> = FAULTS.iter().map(|(n, _, _)| n.to_string()).collect();
    let all_nodes: Vec<String> = truth.nodes.keys().cloned().collect();
    let healthy = truth.nodes_where(|n, _| !faulty.contains(n));
    assert_eq!(healthy.len(), 3);
    let healthy_pods = truth.pods_where(|_, p| !faulty.contains(&p.node));
    let faulty_pods = truth.pods_where(|_, p| faulty.contains(&p.node));
    assert!(!healthy_pods.is_empty() && !faulty_pods.is_empty());

    // Exactly the healthy nodes and their pods, with the expected numbers; a faulty node
    // served even once is wrong at once.
    until_ok("the healthy nodes and pods", async || {
        check_served(&cluster, &truth, &healthy, &healthy_pods).await
    })
    .await;
    for (node, kind, _) in FAULTS {
        let r = cluster.get(&format!("{BASE}/nodes/{node}")).await;
        assert_eq!(r.status, 404, "{node} ({kind}): {}", r.text());
        assert_eq!(r.json()["reason"], "NotFound", "{node}");
    }
    for (ns, name) in &faulty_pods {
        let r = cluster
            .get(&format!("{BASE}/namespaces/{ns}/pods/{name}"))
            .await;
        assert_eq!(r.status, 404, "{ns}/{name}: {}", r.text());
    }
    // kubectl prints the faulty nodes as <unknown> and every other one with its figures.
    for kubectl in [KUBECTL_1_27, KUBECTL_1_33] {
        until_ok(kubectl, async || {
            let out = cluster.kubectl(kubectl, &["top", "node"])?;
            truth.check_top_nodes(&out, &all_nodes, &faulty)
        })
        .await;
        until_ok(kubectl, async || {
            let out = cluster.kubectl(kubectl, &["top", "pod", "-A"])?;
            truth.check_top_pods(&out, None, false, &healthy_pods)
        })
        .await;
    }
    // Each failure is logged, naming the node and why.
    for (node, kind, reason) in FAULTS {
        until_ok(&format!("the log of {node}'s failures"), async || {
            let records = failures_of(&bridge, node);
            let Some(last) = records.last() else {
                return Err(Mismatch::Missing(format!("no failure logged for {node}")));
            };
            if last["reason"] != reason {
                return Err(Mismatch::Wrong(format!(
                    "{node} ({kind}) failed for {}, expected {reason}: {last}",
                    last["reason"]
                )));
            }
            Ok(())
        })
        .await;
    }
    for node in &healthy {
        assert!(
            failures_of(&bridge, node).is_empty(),
            "healthy {node} failed: {:?}",
            failures_of(&bridge, node)
        );
    }

    // Cleared, every node comes back with its own numbers, and says so in the log.
    for (node, _, _) in FAULTS {
        let r = cluster
            .sim
            .admin("DELETE", &format!("/sim/faults/{node}"))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let all_pods: Vec<PodKey> = truth.pods.keys().cloned().collect();
    until_ok(
        "every node and pod after the faults are cleared",
        async || check_served(&cluster, &truth, &all_nodes, &all_pods).await,
    )
    .await;
    for (node, _, _) in FAULTS {
        until_ok(
            &format!("{node}'s recovery in the log"),
            async || match bridge
                .logged("kubelet scrape recovered")
                .iter()
                .any(|r| r["node"] == node)
            {
                true => Ok(()),
                false => Err(Mismatch::Missing(format!("{node} recovered silently"))),
            },
        )
        .await;
    }

    // A healthy node that turns faulty at run time leaves the API with its pods, and only it.
    let sick = healthy[0].clone();
    let r = cluster
        .sim
        .admin("PUT", &format!("/sim/faults/{sick}?fault=http500"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let others: Vec<String> = all_nodes.iter().filter(|n| **n != sick).cloned().collect();
    let their_pods = truth.pods_where(|_, p| p.node != sick);
    let listed = format!("\"{sick}\"");
    until_ok(
        &format!("{sick} to leave after turning faulty"),
        async || {
            check_served(&cluster, &truth, &others, &their_pods)
                .await
                // Served until its next scrape fails: it being listed is only "missing" then.
                .map_err(|e| match e {
                    Mismatch::Wrong(m) if m.contains(&listed) => Mismatch::Missing(m),
                    e => e,
                })
        },
    )
    .await;
}

/// `(timestamp, window)` of a node's metrics: they change with every successful scrape of it
/// (the timestamp moves by the resolution), so equal values mean no scrape landed in between.
async fn node_point(cluster: &Cluster, node: &str) -> Option<(Value, Value)> {
    let r = cluster.get(&format!("{BASE}/nodes/{node}")).await;
    (r.status == 200).then(|| {
        let v = r.json();
        (v["timestamp"].clone(), v["window"].clone())
    })
}

/// Waits until kube-sim's kubelets have answered `rounds` × `nodes` more requests: that many
/// scrape rounds of every node.
async fn wait_scrape_rounds(cluster: &Cluster, rounds: u64, nodes: u64) {
    let start = cluster.kubelet_requests().await;
    until_ok("scrape rounds", async || {
        let now = cluster.kubelet_requests().await;
        match now >= start + rounds * nodes {
            true => Ok(()),
            false => Err(Mismatch::Missing(format!("{} requests", now - start))),
        }
    })
    .await;
}

/// When a served item's window began, in Unix seconds (its timestamp is whole seconds).
fn window_start(item: &Value) -> f64 {
    let ts: k8s_openapi::jiff::Timestamp = item["timestamp"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("timestamp of {item}"));
    let window = item["window"]
        .as_str()
        .and_then(|w| go_duration_secs(w).ok())
        .unwrap_or_else(|| panic!("window of {item}"));
    ts.as_second() as f64 - window
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_deletions_creations_and_node_removals_are_followed() {
    let cluster = Cluster::new(&["--nodes", "6", "--pods-per-node", "5"]);
    let bridge = cluster.start_bridge(&[]).await;
    cluster.wait_api_available().await;
    let truth = Truth::fetch(&cluster.sim).await;
    let all_nodes: Vec<String> = truth.nodes.keys().cloned().collect();
    let all_pods: Vec<PodKey> = truth.pods.keys().cloned().collect();
    until_ok("every node and pod", async || {
        check_served(&cluster, &truth, &all_nodes, &all_pods).await
    })
    .await;

    // A restarted container: its counter starts again from 0. Whatever is served on the way
    // (the pre-restart rate, nothing, then the new rate) must be the container's constant
    // rate within 1%: never negative, never a spike. It ends with a window after the restart.
    let (ns, name) = truth
        .pods_where(|_, p| p.containers.len() >= 2)
        .into_iter()
        .next()
        .expect("a pod with sidecars");
    let node = truth.pods[&(ns.clone(), name.clone())].node.clone();
    let r = cluster
        .sim
        .admin("POST", &format!("/sim/restart?namespace={ns}&pod={name}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let pod = cluster
        .sim
        .admin("GET", &format!("/api/v1/namespaces/{ns}/pods/{name}"))
        .await
        .json();
    let restarted_at = pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["state"]["running"]["startedAt"].as_str())
        .filter_map(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .map(|t| t.as_second())
        .max()
        .unwrap_or_else(|| panic!("no running container in {pod}"));
    let mut served_during = 0;
    until_ok("the restarted pod's post-restart rate", async || {
        if let Some(item) = get_or_404(&cluster, &format!("{BASE}/nodes/{node}")).await? {
            truth.check_node(&item, Some(V1BETA1))?;
        }
        let path = format!("{BASE}/namespaces/{ns}/pods/{name}");
        let Some(item) = get_or_404(&cluster, &path).await? else {
            return Err(Mismatch::Missing(format!("{ns}/{name} is not served")));
        };
        truth.check_pod(&item, Some(V1BETA1))?;
        served_during += 1;
        // startedAt is whole seconds too: a window starting after the restart starts after
        // `restarted_at - 1`; one ending before it starts 2 s (the resolution) earlier.
        if window_start(&item) > (restarted_at - 1) as f64 {
            Ok(())
        } else {
            Err(Mismatch::Missing(format!(
                "{ns}/{name}'s window still starts before its restart: {item}"
            )))
        }
    })
    .await;
    assert!(served_during > 0);

    // A deleted pod leaves the API at once, with no scrape of its node in between: its node's
    // point is unchanged when the pod is already gone. A scrape may land in between on a
    // loaded machine, which proves nothing, so up to five pods are tried.
    let candidates = truth.pods_where(|k, p| p.node != node && k.1 != name);
    // The premise: a node's point changes with each scrape round.
    let probe = &truth.pods[&candidates[0]].node;
    let first = node_point(&cluster, probe).await;
    wait_scrape_rounds(&cluster, 2, all_nodes.len() as u64).await;
    assert_ne!(node_point(&cluster, probe).await, first, "{probe}");
    let mut conclusive = None;
    for key @ (ns, name) in candidates.iter().take(5) {
        let pod_node = &truth.pods[key].node;
        let before = node_point(&cluster, pod_node).await;
        assert!(before.is_some(), "{pod_node} is not served");
        let r = cluster
            .sim
            .admin("DELETE", &format!("/sim/pods/{ns}/{name}"))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let path = format!("{BASE}/namespaces/{ns}/pods/{name}");
        until_gone(&cluster, &path).await;
        let list = cluster
            .get(&format!("{BASE}/namespaces/{ns}/pods"))
            .await
            .json();
        assert!(
            !list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["metadata"]["name"] == name.as_str()),
            "{ns}/{name} is gone by name but still listed: {list}"
        );
        if node_point(&cluster, pod_node).await == before {
            conclusive = Some(key.clone());
            break;
        }
    }
    assert!(
        conclusive.is_some(),
        "every deleted pod's node was scraped before the pod left the API: removal may wait \
         for a scrape"
    );

    // New pods are served once two points exist, with their own numbers from the first time
    // they are served.
    let r = cluster.sim.admin("POST", "/sim/pods?count=4").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let truth = Truth::fetch(&cluster.sim).await;
    let before: BTreeSet<&PodKey> = all_pods.iter().collect();
    let new: Vec<PodKey> = truth
        .pods
        .keys()
        .filter(|k| !before.contains(k))
        .cloned()
        .collect();
    assert!(!new.is_empty(), "no new Running pod");
    for (ns, name) in &new {
        let path = format!("{BASE}/namespaces/{ns}/pods/{name}");
        until_ok(
            &format!("new pod {ns}/{name}"),
            async || match get_or_404(&cluster, &path).await? {
                Some(item) => truth.check_pod(&item, Some(V1BETA1)).map(drop),
                None => Err(Mismatch::Missing(format!("{ns}/{name} is not served yet"))),
            },
        )
        .await;
    }
    let pods_now: Vec<PodKey> = truth.pods.keys().cloned().collect();
    until_ok("every pod after the changes", async || {
        let list = cluster.get(&format!("{BASE}/pods")).await.json();
        truth.check_pod_list(&list, V1BETA1, &pods_now)
    })
    .await;

    // A node deleted through the API with real kubectl, while its kubelet keeps answering:
    // only the watch can remove it, and no later scrape may bring it back.
    let gone = all_nodes[1].clone();
    let gone_pods = truth.pods_where(|_, p| p.node == gone);
    let gone_ip = node_ip(&cluster, &gone).await;
    let out = cluster.kubectl(KUBECTL_1_33, &["delete", "node", &gone]);
    if let Err(e) = out {
        panic!("kubectl delete node: {e}");
    }
    let path = format!("{BASE}/nodes/{gone}");
    until_gone(&cluster, &path).await;
    wait_scrape_rounds(&cluster, 2, all_nodes.len() as u64).await;
    assert_eq!(get_or_404(&cluster, &path).await.ok(), Some(None), "{gone}");
    let kubelet = cluster.sim.kubelet_url(&gone_ip, "/healthz");
    let r = support::https(
        "GET",
        &kubelet,
        None,
        support::Cred::Token(&cluster.sim.token("admin")),
        &[],
        Vec::new(),
    )
    .await
    .unwrap_or_else(|e| panic!("{gone}'s kubelet: {e}"));
    assert_eq!(r.status, 200, "{gone}'s kubelet still answers");
    // Its pods are not served either (the API server keeps them: only the pod GC would
    // delete them, and kube-sim leaves that to /sim/nodes).
    let list = cluster.get(&format!("{BASE}/pods")).await.json();
    for (ns, name) in &gone_pods {
        assert!(
            !list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["metadata"]["namespace"] == ns.as_str()
                    && p["metadata"]["name"] == name.as_str()),
            "{ns}/{name} on deleted {gone} is still served"
        );
    }

    // A node removed with its kubelet (as a cloud deletes a VM) leaves the API too.
    let removed = all_nodes[4].clone();
    let r = cluster
        .sim
        .admin("DELETE", &format!("/sim/nodes/{removed}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let path = format!("{BASE}/nodes/{removed}");
    until_gone(&cluster, &path).await;
    let final_truth = Truth::fetch(&cluster.sim).await;
    assert!(!final_truth.nodes.contains_key(&removed));
    let pods_left = final_truth.pods_where(|_, p| p.node != gone);
    until_ok("the pods that are left", async || {
        let list = cluster.get(&format!("{BASE}/pods")).await.json();
        final_truth.check_pod_list(&list, V1BETA1, &pods_left)
    })
    .await;

    // Background churn (pods replaced, containers restarted) over four scrape rounds: every
    // pod served at any moment carries its containers' constant rates and working sets.
    let r = cluster
        .sim
        .admin("PUT", "/sim/churn?podsPerMinute=60&restartsPerMinute=300")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let start = cluster.kubelet_requests().await;
    let nodes_left = final_truth.nodes.len() as u64;
    let mut checked = 0;
    while cluster.kubelet_requests().await < start + 4 * nodes_left {
        // A pod is judged by the truth from just before or just after the list was served
        // (it may have been created or deleted in between); one in neither is too new or too
        // old to judge.
        let before = Truth::fetch(&cluster.sim).await;
        let list = cluster.get(&format!("{BASE}/pods")).await.json();
        let after = Truth::fetch(&cluster.sim).await;
        for item in list["items"].as_array().into_iter().flatten() {
            let key = (
                item["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                item["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
            let truth = match (
                after.pods.contains_key(&key),
                before.pods.contains_key(&key),
            ) {
                (true, _) => &after,
                (false, true) => &before,
                (false, false) => continue,
            };
            if let Err(e) = truth.check_pod(item, None) {
                panic!("under churn: {e}");
            }
            checked += 1;
        }
    }
    let info = cluster.sim.admin("GET", "/sim/info").await.json();
    assert!(checked > 0, "nothing served under churn: {info}");
    // None of it is an error in metrics-bridge's eyes.
    assert_eq!(bridge.errors(), Vec::<Value>::new());
}

/// A node's InternalIP, from the API server.
async fn node_ip(cluster: &Cluster, node: &str) -> String {
    let n = cluster
        .sim
        .admin("GET", &format!("/api/v1/nodes/{node}"))
        .await
        .json();
    n["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .unwrap_or_else(|| panic!("no InternalIP in {n}"))
        .to_owned()
}
