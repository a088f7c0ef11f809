//! `--external-apiserver`: one kube-sim serves the API (`--nodes 0`), a second one puts its
//! nodes and pods into it as kubelets and a scheduler would, with the identity and
//! ClusterRole the docs give (`kube-sim-external.kubeconfig`, `kube-sim:external`). Checked
//! through kube-rs and kubectl against the first one: the objects and their status, the
//! watch events of scheduling, status updates and graceful deletion, lease heartbeats, the
//! kubelets' webhook authentication and authorization against the first one's TokenReview
//! and SubjectAccessReview (with their cache), deletions made by others, the clean-up on
//! SIGTERM and of a killed run's leftovers.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, WatchEvent, WatchParams};
use support::{Cred, KUBECTL_1_27, KUBECTL_1_33, KubeSim, https};

const OWNED: &str = "kube-sim.io/owned=true";

/// Starts the kube-sim that plays the nodes, against `api`'s API server.
fn external(api: &KubeSim, args: &[&str]) -> KubeSim {
    let kubeconfig = api.path("kube-sim-external.kubeconfig");
    let mut all = vec!["--external-apiserver", kubeconfig.to_str().unwrap()];
    all.extend_from_slice(args);
    KubeSim::start(&all)
}

async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn names<K: kube::Resource>(items: &[K]) -> BTreeSet<String> {
    items
        .iter()
        .map(|o| {
            let m = o.meta();
            match &m.namespace {
                Some(ns) => format!("{ns}/{}", m.name.clone().unwrap_or_default()),
                None => m.name.clone().unwrap_or_default(),
            }
        })
        .collect()
}

fn running_in(expected: &serde_json::Value) -> BTreeSet<String> {
    expected["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}/{}",
                p["namespace"].as_str().unwrap(),
                p["name"].as_str().unwrap()
            )
        })
        .collect()
}

/// One GET verifying the server against `ca`.
async fn fetch(url: &str, ca: &str, cred: Cred<'_>) -> support::Reply {
    https("GET", url, Some(ca), cred, &[], Vec::new())
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Whether `api` lists nothing with `params`.
async fn none_listed<K>(api: &Api<K>, params: ListParams) -> bool
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(&params).await.unwrap().items.is_empty()
}

#[tokio::test]
async fn nodes_and_pods_in_another_control_plane() {
    let api = KubeSim::start(&["--nodes", "0"]);
    let client = api.client().await;
    // A namespace the cluster lacks: the external kube-sim must create it (and remove it).
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete("team-delta", &DeleteParams::default())
        .await
        .unwrap();
    until("team-delta gone", || async {
        namespaces.get_opt("team-delta").await.unwrap().is_none()
    })
    .await;

    let mut sim = external(
        &api,
        &[
            "--nodes",
            "3",
            "--pods-per-node",
            "6",
            "--seed",
            "5",
            "--node-lease-renew-interval",
            "1s",
        ],
    );
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());

    // Nodes, registered with their status.
    let listed = nodes.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        names(&listed.items),
        ["node-00001", "node-00002", "node-00003"]
            .map(String::from)
            .into()
    );
    for (i, n) in listed.items.iter().enumerate() {
        let labels = n.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["kube-sim.io/owned"], "true");
        assert_eq!(
            labels["kubernetes.io/hostname"],
            n.metadata.name.clone().unwrap()
        );
        let st = n.status.as_ref().unwrap();
        let addrs = st.addresses.as_ref().unwrap();
        assert_eq!(addrs[0].type_, "InternalIP");
        assert_eq!(addrs[0].address, format!("127.1.0.{}", i + 1));
        assert_eq!(
            st.daemon_endpoints
                .as_ref()
                .unwrap()
                .kubelet_endpoint
                .as_ref()
                .unwrap()
                .port,
            i32::from(sim.kubelet_port)
        );
        assert!(st.capacity.as_ref().unwrap().contains_key("cpu"));
        assert!(st.allocatable.as_ref().unwrap().contains_key("memory"));
        let ready = st
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        assert!(!st.node_info.as_ref().unwrap().kubelet_version.is_empty());
        // Left to the cluster's controllers.
        let spec = n.spec.clone().unwrap_or_default();
        assert_eq!((spec.provider_id, spec.pod_cidr), (None, None));
    }

    // Pods: bound to their nodes, with the status the model gives them.
    let expected = sim.expected().await;
    let all = pods
        .list(&ListParams::default().labels(OWNED))
        .await
        .unwrap();
    assert_eq!(all.items.len(), 18);
    let running: BTreeSet<String> = names(
        &all.items
            .iter()
            .filter(|p| phase(p) == "Running")
            .cloned()
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        running,
        running_in(&expected),
        "Running pods = /sim/expected"
    );
    for p in &all.items {
        let spec = p.spec.as_ref().unwrap();
        assert!(spec.node_name.as_deref().unwrap().starts_with("node-0000"));
        assert!(p.metadata.owner_references.is_none());
        let qos = p.status.as_ref().unwrap().qos_class.as_deref().unwrap();
        assert!(
            ["Guaranteed", "Burstable", "BestEffort"].contains(&qos),
            "{qos}"
        );
        let conds = p
            .status
            .as_ref()
            .unwrap()
            .conditions
            .clone()
            .unwrap_or_default();
        assert!(
            conds
                .iter()
                .any(|c| c.type_ == "PodScheduled" && c.status == "True")
        );
        if phase(p) == "Running" {
            assert!(
                conds
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            );
        }
    }
    let delta = namespaces.get("team-delta").await.unwrap();
    assert_eq!(delta.metadata.labels.unwrap()["kube-sim.io/owned"], "true");

    // Leases are renewed.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let first = leases.get("node-00001").await.unwrap();
    assert_eq!(
        first.spec.as_ref().unwrap().holder_identity.as_deref(),
        Some("node-00001")
    );
    until("a lease renewal", || async {
        let now = leases.get("node-00001").await.unwrap();
        now.spec.as_ref().unwrap().renew_time != first.spec.as_ref().unwrap().renew_time
    })
    .await;

    // The kubelets: serving certificates from the external kube-sim's CA, webhook
    // authentication and authorization against the first kube-sim, cached.
    let page_url = sim.kubelet_url("127.1.0.1", "/metrics/resource");
    let ca = sim.read("ca.crt");
    let mb = api.token("metrics-bridge");
    let viewer = api.token("viewer");
    let get = |cred| fetch(&page_url, &ca, cred);
    let (sim_ca, sim_admin) = (sim.read("ca.crt"), sim.token("admin"));
    let info_url = format!("{}/sim/info", sim.url);
    let reviews = || async {
        fetch(&info_url, &sim_ca, Cred::Token(&sim_admin))
            .await
            .json()["kubeletReviews"]
            .as_u64()
            .unwrap()
    };
    let before = reviews().await;
    let page = get(Cred::Token(&mb)).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let denied = get(Cred::Token(&viewer)).await;
    assert_eq!(
        (denied.status, denied.text().as_str()),
        (
            403,
            "Forbidden (user=viewer, verb=get, resource=nodes, subresource=metrics)"
        )
    );
    let unknown = get(Cred::Token("not-a-token")).await;
    assert_eq!(
        (unknown.status, unknown.text().as_str()),
        (401, "Unauthorized")
    );
    assert_eq!(get(Cred::None).await.status, 401);
    assert_eq!(
        reviews().await - before,
        5,
        "TokenReview + SAR for each of two tokens, a TokenReview for the unknown one"
    );
    for _ in 0..3 {
        assert_eq!(get(Cred::Token(&mb)).await.status, 200);
        assert_eq!(get(Cred::Token(&viewer)).await.status, 403);
    }
    assert_eq!(reviews().await - before, 5, "answers come from the cache");
    // Client certificates verify against the cluster's client CA, read from its
    // extension-apiserver-authentication ConfigMap: the first kube-sim's admin gets in (one
    // more SubjectAccessReview), the external kube-sim's own admin certificate does not.
    let (cert, key) = (api.read("admin.crt"), api.read("admin.key"));
    let r = fetch(&page_url, &ca, Cred::Cert(&cert, &key)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (cert, key) = (sim.read("admin.crt"), sim.read("admin.key"));
    let r = fetch(&page_url, &ca, Cred::Cert(&cert, &key)).await;
    assert_eq!((r.status, r.text().as_str()), (401, "Unauthorized"));
    assert_eq!(reviews().await - before, 6);
    // The page's numbers are the external kube-sim's model's (independent parser).
    let scrape =
        prometheus_parse::Scrape::parse(page.text().lines().map(|l| Ok(l.to_string()))).unwrap();
    let memory = scrape
        .samples
        .iter()
        .find(|s| s.metric == "node_memory_working_set_bytes")
        .map(|s| match s.value {
            prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("not a gauge"),
        })
        .unwrap();
    let expected_node = expected["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "node-00001")
        .unwrap();
    assert_eq!(memory, expected_node["memory_bytes"].as_f64().unwrap());

    // Dynamics reach the other cluster as a scheduler and kubelets would make them.
    let rv = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut watch = pods
        .watch(&WatchParams::default().labels(OWNED).timeout(60), &rv)
        .await
        .unwrap()
        .boxed();
    let created = sim.admin("POST", "/sim/pods?count=1").await;
    assert_eq!(created.status, 200, "{}", created.text());
    let mut seen = Vec::new();
    while seen.len() < 4 {
        match tokio::time::timeout(Duration::from_secs(10), watch.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Added(p) | WatchEvent::Modified(p) => seen.push((
                p.metadata.name.clone().unwrap(),
                p.spec.as_ref().unwrap().node_name.is_some(),
                phase(&p).to_string(),
            )),
            WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let new_pod = seen[0].0.clone();
    assert!(seen.iter().all(|s| s.0 == new_pod));
    let steps: Vec<(bool, &str)> = seen.iter().map(|s| (s.1, s.2.as_str())).collect();
    assert_eq!(
        steps,
        [
            (false, "Pending"),
            (true, "Pending"),
            (true, "Pending"),
            (true, "Running")
        ],
        "created, bound, containers being created, running"
    );
    let new = pods
        .list(&ListParams::default().fields(&format!("metadata.name={new_pod}")))
        .await
        .unwrap()
        .items
        .remove(0);
    let ns = new.metadata.namespace.clone().unwrap();
    // A restart shows in the status.
    let r = sim
        .admin(
            "POST",
            &format!("/sim/restart?namespace={ns}&pod={new_pod}"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let in_ns: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let restarted = in_ns.get(&new_pod).await.unwrap();
    assert!(
        restarted
            .status
            .unwrap()
            .container_statuses
            .unwrap()
            .iter()
            .all(|c| c.restart_count == 1)
    );
    // The model deletes it: graceful, then the kubelet's grace-0 delete.
    let r = sim
        .admin("DELETE", &format!("/sim/pods/{ns}/{new_pod}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut steps = Vec::new();
    while steps.last().map(|s: &(String, bool)| s.0.as_str()) != Some("DELETED") {
        match tokio::time::timeout(Duration::from_secs(10), watch.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            // The restart's update may still be in the stream.
            WatchEvent::Modified(p) if p.metadata.deletion_timestamp.is_none() => {}
            WatchEvent::Modified(p) => {
                steps.push(("MODIFIED".into(), p.metadata.deletion_timestamp.is_some()))
            }
            WatchEvent::Deleted(p) => {
                steps.push(("DELETED".into(), p.metadata.deletion_timestamp.is_some()))
            }
            WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        steps,
        [
            ("MODIFIED".to_string(), true),
            ("MODIFIED".to_string(), true),
            ("DELETED".to_string(), true)
        ]
    );

    // A node added and removed at run time.
    assert_eq!(sim.admin("POST", "/sim/nodes?count=1").await.status, 200);
    let n4 = nodes.get("node-00004").await.unwrap();
    assert_eq!(
        n4.status.unwrap().addresses.unwrap()[0].address,
        "127.1.0.4"
    );
    let on_n4 = pods
        .list(&ListParams::default().fields("spec.nodeName=node-00004"))
        .await
        .unwrap();
    assert_eq!(on_n4.items.len(), 6);
    assert_eq!(
        sim.admin("DELETE", "/sim/nodes/node-00004").await.status,
        200
    );
    assert!(nodes.get_opt("node-00004").await.unwrap().is_none());
    assert!(leases.get_opt("node-00004").await.unwrap().is_none());
    assert!(
        pods.list(&ListParams::default().fields("spec.nodeName=node-00004"))
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // Someone else deletes a pod: its kubelet (the external kube-sim) finishes it and the
    // model lets it go.
    let victim = all
        .items
        .iter()
        .find(|p| phase(p) == "Running")
        .unwrap()
        .clone();
    let (vns, vname) = (
        victim.metadata.namespace.clone().unwrap(),
        victim.metadata.name.clone().unwrap(),
    );
    let victims: Api<Pod> = Api::namespaced(client.clone(), &vns);
    victims
        .delete(&vname, &DeleteParams::default())
        .await
        .unwrap();
    until("the victim gone", || async {
        victims.get_opt(&vname).await.unwrap().is_none()
    })
    .await;
    assert!(!running_in(&sim.expected().await).contains(&format!("{vns}/{vname}")));
    // Someone else deletes a node: it leaves the simulation, its pods go.
    nodes
        .delete("node-00003", &DeleteParams::default())
        .await
        .unwrap();
    until("node-00003's pods gone", || async {
        pods.list(&ListParams::default().fields("spec.nodeName=node-00003"))
            .await
            .unwrap()
            .items
            .is_empty()
    })
    .await;
    let exp = sim.expected().await;
    assert!(
        !exp["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["name"] == "node-00003")
    );

    // Real kubectl sees Ready nodes.
    for kubectl in [KUBECTL_1_27, KUBECTL_1_33] {
        let out = api.kubectl(kubectl, "kubeconfig", &["get", "nodes", "--no-headers"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let rows: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows.len(), 2, "{text}");
        assert!(rows.iter().all(|r| r[1] == "Ready"), "{text}");
    }

    // SIGTERM: everything the external kube-sim created goes.
    let (status, stderr) = sim.terminate();
    assert!(status.success(), "exit {status:?}: {stderr}");
    assert!(none_listed(&nodes, ListParams::default()).await);
    assert!(none_listed(&pods, ListParams::default().labels(OWNED)).await);
    assert!(none_listed(&leases, ListParams::default()).await);
    until("team-delta deleted again", || async {
        namespaces.get_opt("team-delta").await.unwrap().is_none()
    })
    .await;
    assert!(
        namespaces.get_opt("team-alpha").await.unwrap().is_some(),
        "not kube-sim's"
    );
}

#[tokio::test]
async fn a_killed_runs_leftovers_are_cleaned_and_rbac_is_enforced() {
    let api = KubeSim::start(&["--nodes", "0"]);
    let client = api.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let args = ["--nodes", "2", "--pods-per-node", "3"];
    let killed = external(&api, &args);
    let old_uids: BTreeSet<String> = nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|n| n.metadata.uid.clone().unwrap())
        .collect();
    assert_eq!(old_uids.len(), 2);
    drop(killed); // SIGKILL: nothing is cleaned up.
    let pods: Api<Pod> = Api::all(client.clone());
    assert_eq!(
        pods.list(&ListParams::default().labels(OWNED))
            .await
            .unwrap()
            .items
            .len(),
        6
    );
    let mut again = external(&api, &args);
    let new_nodes = nodes.list(&ListParams::default()).await.unwrap();
    let new_uids: BTreeSet<String> = new_nodes
        .items
        .iter()
        .map(|n| n.metadata.uid.clone().unwrap())
        .collect();
    assert_eq!(new_uids.len(), 2);
    assert!(
        new_uids.is_disjoint(&old_uids),
        "the leftovers were deleted and recreated"
    );
    assert_eq!(
        pods.list(&ListParams::default().labels(OWNED))
            .await
            .unwrap()
            .items
            .len(),
        6
    );
    let (status, stderr) = again.terminate();
    assert!(status.success(), "{stderr}");

    // An identity without the ClusterRole: kube-sim says what it was refused, and exits.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kube-sim"))
        .arg("--dir")
        .arg(dir.path())
        .args(["--apiserver-addr", "127.0.0.1:0", "--nodes", "1"])
        .args(["--kubelet-port", &support::kubelet_port().to_string()])
        .arg("--external-apiserver")
        .arg(api.path("viewer.kubeconfig"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"pods is forbidden: User "viewer" cannot list resource "pods" in API group "" at the cluster scope"#),
        "{err}"
    );
    assert!(
        err.lines()
            .any(|l| l.starts_with("kube-sim: listing leftover pods")),
        "{err}"
    );
}

/// A quantity as metrics-server writes usage (`123456n`, `2m`, `1024Ki`, `3`) in base units.
/// A first scrape of many kubelets at once (metrics-bridge's first tick) makes every kubelet
/// review its credential: the reviews share one HTTP/2 connection to the API server, as
/// running kubelets send them on the connection they hold, instead of a connection (a TLS
/// handshake on both ends) per review in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_scrapes_review_over_one_connection() {
    const NODES: usize = 24;
    let api = KubeSim::start(&["--nodes", "0"]);
    let nodes = NODES.to_string();
    let sim = external(&api, &["--nodes", &nodes, "--pods-per-node", "2"]);
    let (ca, mb) = (sim.read("ca.crt"), api.token("metrics-bridge"));
    let (sim_admin, info_url) = (sim.token("admin"), format!("{}/sim/info", sim.url));
    let info = || async {
        let info = fetch(&info_url, &ca, Cred::Token(&sim_admin)).await.json();
        (
            info["kubeletReviews"].as_u64().unwrap(),
            info["kubeletReviewConnections"].as_u64().unwrap(),
        )
    };
    let (reviews_before, _) = info().await;
    let urls: Vec<String> = (1..=NODES)
        .map(|i| sim.kubelet_url(&format!("127.1.0.{i}"), "/metrics/resource"))
        .collect();
    let pages =
        futures::future::join_all(urls.iter().map(|u| fetch(u, &ca, Cred::Token(&mb)))).await;
    for (url, page) in urls.iter().zip(&pages) {
        assert_eq!(page.status, 200, "{url}: {}", page.text());
    }
    let (reviews, connections) = info().await;
    assert_eq!(
        reviews - reviews_before,
        2 * NODES as u64,
        "a TokenReview and a SubjectAccessReview per kubelet (each has its own cache)"
    );
    assert_eq!(connections, 1, "every review on one HTTP/2 connection");
}

fn quantity(q: &str) -> f64 {
    let split = q.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(q.len());
    let (n, suffix) = q.split_at(split);
    let n: f64 = n.parse().unwrap_or_else(|_| panic!("quantity {q:?}"));
    n * match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        other => panic!("suffix {other:?} in {q:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_bridge_reports_the_external_nodes_through_the_serving_cluster() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let backend = format!("metrics.k8s.io=https://127.0.0.1:{port}");
    let api = KubeSim::start(&[
        "--nodes",
        "0",
        "--aggregate",
        &backend,
        "--aggregator-probe-interval",
        "1s",
    ]);
    let sim = external(
        &api,
        &["--nodes", "3", "--pods-per-node", "5", "--seed", "11"],
    );
    // The real binary, as deployed against the serving cluster: its service account's
    // kubeconfig, the kubelets' port, and their CA (the external kube-sim's), verified.
    let mut bridge = std::process::Command::new(env!("CARGO_BIN_EXE_metrics-bridge"))
        .arg(format!(
            "--kubeconfig={}",
            api.path("metrics-bridge.kubeconfig").display()
        ))
        .args(["--bind-address=127.0.0.1", &format!("--secure-port={port}")])
        .arg(format!("--cert-dir={}", api.path("bridge-certs").display()))
        .arg(format!("--kubelet-port={}", sim.kubelet_port))
        .arg(format!(
            "--kubelet-certificate-authority={}",
            sim.path("ca.crt").display()
        ))
        .args([
            "--kubelet-preferred-address-types=InternalIP",
            "--metric-resolution=2s",
            "--kubelet-request-timeout=1s",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(api.path("bridge.log")).unwrap())
        .spawn()
        .expect("spawn metrics-bridge");
    let expected = sim.expected().await;
    let want_nodes = expected["nodes"].as_array().unwrap();
    let want_pods = expected["pods"].as_array().unwrap();

    // Through the serving kube-sim's aggregator, as kubectl and the HPA ask.
    let (api_ca, cert, key) = (
        api.read("ca.crt"),
        api.read("admin.crt"),
        api.read("admin.key"),
    );
    let get = |path: &str| {
        let url = format!("{}{path}", api.url);
        let (ca, cert, key) = (&api_ca, &cert, &key);
        async move { fetch(&url, ca, Cred::Cert(cert, key)).await }
    };
    let mut nodes = serde_json::Value::Null;
    let mut pods = serde_json::Value::Null;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n = get("/apis/metrics.k8s.io/v1beta1/nodes").await;
        let p = get("/apis/metrics.k8s.io/v1beta1/pods").await;
        if n.status == 200 && p.status == 200 {
            nodes = n.json();
            pods = p.json();
            if nodes["items"].as_array().unwrap().len() == want_nodes.len()
                && pods["items"].as_array().unwrap().len() == want_pods.len()
            {
                break;
            }
        }
        if std::time::Instant::now() > deadline {
            let _ = bridge.kill();
            panic!(
                "metrics-bridge never reported every node and pod: {nodes} {pods}\n{}",
                api.read("bridge.log")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for want in want_nodes {
        let got = nodes["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["metadata"]["name"] == want["name"])
            .unwrap_or_else(|| panic!("{} missing", want["name"]));
        let cpu = quantity(got["usage"]["cpu"].as_str().unwrap());
        let want_cpu = want["cpu_cores"].as_f64().unwrap();
        assert!(
            (cpu - want_cpu).abs() <= want_cpu * 1e-6 + 1e-9,
            "{}: cpu {cpu} vs {want_cpu}",
            want["name"]
        );
        assert_eq!(
            quantity(got["usage"]["memory"].as_str().unwrap()),
            want["memory_bytes"].as_f64().unwrap(),
            "{}",
            want["name"]
        );
    }
    for want in want_pods {
        let got = pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| {
                p["metadata"]["namespace"] == want["namespace"]
                    && p["metadata"]["name"] == want["name"]
            })
            .unwrap_or_else(|| panic!("{} missing", want["name"]));
        for c in want["containers"].as_array().unwrap() {
            let gc = got["containers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["name"] == c["name"])
                .unwrap();
            let cpu = quantity(gc["usage"]["cpu"].as_str().unwrap());
            let want_cpu = c["cpu_cores"].as_f64().unwrap();
            assert!(
                (cpu - want_cpu).abs() <= want_cpu * 1e-6 + 1e-9,
                "{}/{}: cpu {cpu} vs {want_cpu}",
                want["name"],
                c["name"]
            );
            assert_eq!(
                quantity(gc["usage"]["memory"].as_str().unwrap()),
                c["memory_bytes"].as_f64().unwrap()
            );
        }
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &bridge.id().to_string()])
        .status();
    let _ = bridge.wait();
}

/// Names of the nodes in `/sim/expected`.
fn expected_nodes(expected: &serde_json::Value) -> BTreeSet<String> {
    expected["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Two external kube-sims with disjoint node ranges (`--first-node`) fill one cluster; each
/// cleans up only its own objects, a namespace both use outlives the first one to stop, and a
/// third whose range overlaps is refused without touching the others' objects.
#[tokio::test]
async fn kube_sims_with_disjoint_node_ranges_share_one_cluster() {
    let api = KubeSim::start(&["--nodes", "0"]);
    let client = api.client().await;
    // Namespaces the first external kube-sim creates, and the second one uses too.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in ["team-alpha", "team-bravo", "team-charlie", "team-delta"] {
        namespaces
            .delete(ns, &DeleteParams::default())
            .await
            .unwrap();
    }
    until("team namespaces gone", || async {
        let left = namespaces.list(&ListParams::default()).await.unwrap();
        !names(&left.items).iter().any(|n| n.starts_with("team-"))
    })
    .await;
    let common = ["--pods-per-node", "8", "--seed", "4"];
    let mut first = external(&api, &[&["--nodes", "2"][..], &common].concat());
    let mut second = external(
        &api,
        &[&["--first-node", "32", "--nodes", "2"][..], &common].concat(),
    );
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());

    let (exp1, exp2) = (first.expected().await, second.expected().await);
    let (nodes1, nodes2) = (expected_nodes(&exp1), expected_nodes(&exp2));
    assert_eq!(
        nodes1,
        ["node-00001", "node-00002"].map(String::from).into()
    );
    assert_eq!(
        nodes2,
        ["node-00033", "node-00034"].map(String::from).into()
    );
    let listed = nodes.list(&ListParams::default()).await.unwrap();
    assert_eq!(names(&listed.items), &nodes1 | &nodes2);
    for n in &listed.items {
        let name = n.metadata.name.clone().unwrap();
        let index: u32 = name.trim_start_matches("node-").parse().unwrap();
        let addrs = n.status.as_ref().unwrap().addresses.as_ref().unwrap();
        assert_eq!(addrs[0].address, format!("127.1.0.{index}"), "{name}");
        let instance = if index <= 2 {
            "node-00001"
        } else {
            "node-00033"
        };
        let labels = n.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["kube-sim.io/instance"], instance, "{name}");
    }
    // Every pod of both, the Running ones exactly both /sim/expected's, each on its own range.
    let (run1, run2) = (running_in(&exp1), running_in(&exp2));
    assert!(run1.is_disjoint(&run2));
    let all = pods
        .list(&ListParams::default().labels(OWNED))
        .await
        .unwrap();
    assert_eq!(all.items.len(), 32);
    let running: Vec<Pod> = all
        .items
        .iter()
        .filter(|p| phase(p) == "Running")
        .cloned()
        .collect();
    assert_eq!(names(&running), &run1 | &run2);
    let of = |nodes: &BTreeSet<String>| -> BTreeSet<String> {
        names(
            &all.items
                .iter()
                .filter(|p| nodes.contains(p.spec.as_ref().unwrap().node_name.as_deref().unwrap()))
                .cloned()
                .collect::<Vec<_>>(),
        )
    };
    let (pods1, pods2) = (of(&nodes1), of(&nodes2));
    assert_eq!((pods1.len(), pods2.len()), (16, 16));
    assert!(run2.is_subset(&pods2));
    let mut shared_ns: BTreeSet<&str> =
        pods2.iter().map(|p| p.split('/').next().unwrap()).collect();
    shared_ns.retain(|ns| ns.starts_with("team-"));
    assert!(
        !shared_ns.is_empty(),
        "the second kube-sim uses the first one's namespaces"
    );

    // A third whose range overlaps the second's is refused, and leaves the others alone.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kube-sim"))
        .arg("--dir")
        .arg(dir.path())
        .args([
            "--apiserver-addr",
            "127.0.0.1:0",
            "--first-node",
            "33",
            "--nodes",
            "2",
        ])
        .args(["--kubelet-port", &support::kubelet_port().to_string()])
        .args(common)
        .arg("--external-apiserver")
        .arg(api.path("kube-sim-external.kubeconfig"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "node node-00034 belongs to another kube-sim (kube-sim.io/instance=node-00033)"
        ),
        "{err}"
    );
    let listed = nodes.list(&ListParams::default()).await.unwrap();
    assert_eq!(names(&listed.items), &nodes1 | &nodes2);
    let still = pods
        .list(&ListParams::default().labels(OWNED))
        .await
        .unwrap();
    assert_eq!(names(&still.items), &pods1 | &pods2);

    // The first stops: its nodes and pods go, the second's all stay, and so do the
    // namespaces they are in (handed over to the second).
    let (status, stderr) = first.terminate();
    assert!(status.success(), "{stderr}");
    let listed = nodes.list(&ListParams::default()).await.unwrap();
    assert_eq!(names(&listed.items), nodes2);
    let left = pods
        .list(&ListParams::default().labels(OWNED))
        .await
        .unwrap();
    assert_eq!(names(&left.items), pods2);
    for ns in &shared_ns {
        let n = namespaces.get(ns).await.unwrap();
        assert_eq!(n.status.unwrap().phase.as_deref(), Some("Active"), "{ns}");
        assert_eq!(
            n.metadata.labels.unwrap()["kube-sim.io/instance"],
            "node-00033"
        );
    }
    assert_eq!(running_in(&second.expected().await), run2);

    // The last one out deletes them.
    let (status, stderr) = second.terminate();
    assert!(status.success(), "{stderr}");
    assert!(none_listed(&nodes, ListParams::default()).await);
    assert!(none_listed(&pods, ListParams::default().labels(OWNED)).await);
    for ns in &shared_ns {
        assert!(namespaces.get_opt(ns).await.unwrap().is_none(), "{ns}");
    }
}
