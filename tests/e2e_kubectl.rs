//! End to end with real binaries: `kube-sim` (API server, aggregation layer, kubelets) and
//! `metrics-bridge` registered behind its aggregator, asked by real kubectl 1.27 and 1.33 and
//! by the HPA's own request. Every number is compared with kube-sim's `/sim/expected`: CPU
//! within 1% through the API, kubectl's printed columns exactly (with kubectl's rounding),
//! memory exactly everywhere.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use prost::Message as _;
use serde_json::{Value, json};
use support::bridge::Cluster;
use support::expect::{
    Mismatch, PodKey, Raw, Truth, go_duration_secs, parse_decode_raw, protoc_decode_raw, until_ok,
};
use support::{KUBECTL_1_27, KUBECTL_1_33};

/// 12 nodes × 6 pods with the default seed: several apps per namespace, arm64 and amd64
/// nodes in three zones, and pods that are Pending and Succeeded (never served).
const CLUSTER: &[&str] = &["--nodes", "12", "--pods-per-node", "6"];

const VERSIONS: [&str; 2] = ["v1beta1", "v1"];

fn api_version(v: &str) -> String {
    format!("metrics.k8s.io/{v}")
}

/// Percent-encodes a query value (everything but unreserved characters).
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

type Labels = BTreeMap<String, String>;

fn label<'a>(l: &'a Labels, k: &str) -> Option<&'a str> {
    l.get(k).map(String::as_str)
}

/// A label selector and, independently of any selector parser, which label sets it selects.
struct LabelCase {
    selector: &'static str,
    selects: fn(&Labels) -> bool,
}

/// One case per operator of the label-selector grammar, plus a conjunction and a selector
/// that matches nothing.
const POD_LABEL_CASES: &[LabelCase] = &[
    LabelCase {
        selector: "app=kube-proxy",
        selects: |l| label(l, "app") == Some("kube-proxy"),
    },
    LabelCase {
        selector: "app==web",
        selects: |l| label(l, "app") == Some("web"),
    },
    LabelCase {
        selector: "app!=kube-proxy",
        selects: |l| label(l, "app") != Some("kube-proxy"),
    },
    LabelCase {
        selector: "tier in (backend,frontend)",
        selects: |l| matches!(label(l, "tier"), Some("backend" | "frontend")),
    },
    LabelCase {
        selector: "tier notin (backend,node)",
        selects: |l| !matches!(label(l, "tier"), Some("backend" | "node")),
    },
    LabelCase {
        selector: "k8s-app",
        selects: |l| l.contains_key("k8s-app"),
    },
    LabelCase {
        selector: "!k8s-app",
        selects: |l| !l.contains_key("k8s-app"),
    },
    LabelCase {
        selector: "tier=backend,team!=alpha",
        selects: |l| label(l, "tier") == Some("backend") && label(l, "team") != Some("alpha"),
    },
    LabelCase {
        selector: "app in (no-such-app)",
        selects: |_| false,
    },
];

const NODE_LABEL_CASES: &[LabelCase] = &[
    LabelCase {
        selector: "kubernetes.io/arch=arm64",
        selects: |l| label(l, "kubernetes.io/arch") == Some("arm64"),
    },
    LabelCase {
        selector: "topology.kubernetes.io/zone!=sim-central1-a",
        selects: |l| label(l, "topology.kubernetes.io/zone") != Some("sim-central1-a"),
    },
    LabelCase {
        selector: "topology.kubernetes.io/zone in (sim-central1-b,sim-central1-c)",
        selects: |l| {
            matches!(
                label(l, "topology.kubernetes.io/zone"),
                Some("sim-central1-b" | "sim-central1-c")
            )
        },
    },
    LabelCase {
        selector: "node.kubernetes.io/instance-type notin (standard-16)",
        selects: |l| label(l, "node.kubernetes.io/instance-type") != Some("standard-16"),
    },
    LabelCase {
        selector: "kubernetes.io/hostname",
        selects: |l| l.contains_key("kubernetes.io/hostname"),
    },
    LabelCase {
        selector: "!node-role.kubernetes.io/control-plane",
        selects: |l| !l.contains_key("node-role.kubernetes.io/control-plane"),
    },
];

/// The namespace and `app` label with the most Running pods (the HPA's typical target).
fn busiest_app(truth: &Truth) -> (String, String, Vec<PodKey>) {
    let mut by_app: BTreeMap<(String, String), Vec<PodKey>> = BTreeMap::new();
    for (key, pod) in &truth.pods {
        if let Some(app) = label(&pod.labels, "app") {
            by_app
                .entry((key.0.clone(), app.to_owned()))
                .or_default()
                .push(key.clone());
        }
    }
    let ((ns, app), pods) = by_app
        .into_iter()
        .max_by_key(|(_, pods)| pods.len())
        .expect("the cluster has pods with an app label");
    assert!(pods.len() >= 2, "{ns}/{app} has a single pod");
    (ns, app, pods)
}

/// A cluster with metrics-bridge serving every node and Running pod through the aggregator.
async fn served_cluster() -> (Cluster, support::bridge::Bridge, Truth) {
    let cluster = Cluster::new(CLUSTER);
    let bridge = cluster.start_bridge(&[]).await;
    cluster.wait_api_available().await;
    let truth = Truth::fetch(&cluster.sim).await;
    let all_nodes: Vec<String> = truth.nodes.keys().cloned().collect();
    let all_pods: Vec<PodKey> = truth.pods.keys().cloned().collect();
    until_ok("every node served", async || {
        let r = cluster.get("/apis/metrics.k8s.io/v1beta1/nodes").await;
        if r.status != 200 {
            return Err(Mismatch::Missing(format!("{}: {}", r.status, r.text())));
        }
        truth.check_node_list(&r.json(), "metrics.k8s.io/v1beta1", &all_nodes)
    })
    .await;
    until_ok("every Running pod served", async || {
        let r = cluster.get("/apis/metrics.k8s.io/v1beta1/pods").await;
        truth.check_pod_list(&r.json(), "metrics.k8s.io/v1beta1", &all_pods)
    })
    .await;
    (cluster, bridge, truth)
}

// ---------------------------------------------------------------------------------------------
// kubectl top

async fn kubectl_top(kubectl: &str) {
    let (cluster, _bridge, truth) = served_cluster().await;
    let none = BTreeSet::new();
    let all_nodes: Vec<String> = truth.nodes.keys().cloned().collect();
    let all_pods: Vec<PodKey> = truth.pods.keys().cloned().collect();

    until_ok("top node", async || {
        truth.check_top_nodes(
            &cluster.kubectl(kubectl, &["top", "node"])?,
            &all_nodes,
            &none,
        )
    })
    .await;
    let one = all_nodes[2].clone();
    until_ok("top node NAME", async || {
        let out = cluster.kubectl(kubectl, &["top", "node", &one])?;
        truth.check_top_nodes(&out, std::slice::from_ref(&one), &none)
    })
    .await;
    // kubectl passes the selector to both the node list and the metrics list.
    let arm64 = truth.nodes_where(|_, n| label(&n.labels, "kubernetes.io/arch") == Some("arm64"));
    assert!(
        !arm64.is_empty() && arm64.len() < all_nodes.len(),
        "{arm64:?}"
    );
    until_ok("top node -l", async || {
        let out = cluster.kubectl(kubectl, &["top", "node", "-l", "kubernetes.io/arch=arm64"])?;
        truth.check_top_nodes(&out, &arm64, &none)
    })
    .await;

    until_ok("top pod -A", async || {
        let out = cluster.kubectl(kubectl, &["top", "pod", "-A"])?;
        truth.check_top_pods(&out, None, false, &all_pods)
    })
    .await;
    until_ok("top pod -A --containers", async || {
        let out = cluster.kubectl(kubectl, &["top", "pod", "-A", "--containers"])?;
        truth.check_top_pods(&out, None, true, &all_pods)
    })
    .await;

    let (ns, app, pods) = busiest_app(&truth);
    let selector = format!("app={app}");
    until_ok("top pod -n NS -l app=X", async || {
        let out = cluster.kubectl(kubectl, &["top", "pod", "-n", &ns, "-l", &selector])?;
        truth.check_top_pods(&out, Some(&ns), false, &pods)
    })
    .await;
    until_ok("top pod -n NS -l app=X --containers", async || {
        let out = cluster.kubectl(
            kubectl,
            &["top", "pod", "-n", &ns, "-l", &selector, "--containers"],
        )?;
        truth.check_top_pods(&out, Some(&ns), true, &pods)
    })
    .await;

    // The server's Tables, as `kubectl get` prints them.
    until_ok("get nodes.metrics.k8s.io", async || {
        let out = cluster.kubectl(kubectl, &["get", "nodes.metrics.k8s.io"])?;
        truth.check_node_table(&out, &all_nodes)
    })
    .await;
    until_ok("get podmetrics -A", async || {
        let out = cluster.kubectl(kubectl, &["get", "podmetrics", "-A"])?;
        truth.check_pod_table(&out, &all_pods)
    })
    .await;
    let (pod_ns, pod_name) = pods[0].clone();
    until_ok("top pod NAME", async || {
        let out = cluster.kubectl(kubectl, &["top", "pod", "-n", &pod_ns, &pod_name])?;
        truth.check_top_pods(&out, Some(&pod_ns), false, std::slice::from_ref(&pods[0]))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_27_top_and_get_print_the_expected_figures() {
    kubectl_top(KUBECTL_1_27).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_33_top_and_get_print_the_expected_figures() {
    kubectl_top(KUBECTL_1_33).await;
}

// ---------------------------------------------------------------------------------------------
// kubectl get --raw on every path

fn check_discovery(doc: &Value, v: &str) -> Result<(), Mismatch> {
    let wrong = |m: String| {
        Err(Mismatch::Wrong(format!(
            "/apis/metrics.k8s.io/{v}: {m}: {doc}"
        )))
    };
    if doc["kind"] != "APIResourceList" || doc["groupVersion"] != api_version(v) {
        return wrong("kind or groupVersion".into());
    }
    let resources: BTreeMap<&str, &Value> = doc["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| Some((r["name"].as_str()?, r)))
        .collect();
    if resources.keys().copied().collect::<Vec<_>>() != ["nodes", "pods"] {
        return wrong("resources".into());
    }
    for (name, kind, namespaced) in [
        ("nodes", "NodeMetrics", false),
        ("pods", "PodMetrics", true),
    ] {
        let r = resources[name];
        let verbs: BTreeSet<&str> = r["verbs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if r["kind"] != kind
            || r["namespaced"] != namespaced
            || verbs != BTreeSet::from(["get", "list"])
        {
            return wrong(name.to_string());
        }
    }
    Ok(())
}

async fn raw_paths(kubectl: &str) {
    let (cluster, _bridge, truth) = served_cluster().await;
    let c = &cluster;
    let all_nodes: Vec<String> = truth.nodes.keys().cloned().collect();
    let all_pods: Vec<PodKey> = truth.pods.keys().cloned().collect();
    assert!(
        truth.not_running.values().any(|p| p == "Pending")
            && truth.not_running.values().any(|p| p == "Succeeded"),
        "the cluster should have Pending and Succeeded pods: {:?}",
        truth.not_running
    );

    // The group, as the aggregator serves it, and in `/apis`.
    let group = until_ok("group", async || c.raw(kubectl, "/apis/metrics.k8s.io")).await;
    let apis = until_ok("apis", async || c.raw(kubectl, "/apis")).await;
    let listed = apis["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| g["name"] == "metrics.k8s.io")
        .unwrap_or_else(|| panic!("metrics.k8s.io missing from /apis: {apis}"));
    for doc in [&group, listed] {
        let versions: BTreeSet<&str> = doc["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["groupVersion"].as_str())
            .collect();
        assert_eq!(
            versions,
            BTreeSet::from(["metrics.k8s.io/v1", "metrics.k8s.io/v1beta1"]),
            "{doc}"
        );
    }

    for v in VERSIONS {
        let av = api_version(v);
        let base = format!("/apis/metrics.k8s.io/{v}");
        let av = av.as_str();
        until_ok("discovery", async || {
            check_discovery(&c.raw(kubectl, &base)?, v)
        })
        .await;

        // Nodes: list, get each, get one that does not exist.
        let nodes = format!("{base}/nodes");
        until_ok(&nodes, async || {
            truth.check_node_list(&c.raw(kubectl, &nodes)?, av, &all_nodes)
        })
        .await;
        for name in &all_nodes {
            let path = format!("{nodes}/{name}");
            let got = until_ok(&path, async || {
                truth.check_node(&c.raw(kubectl, &path)?, Some(av))
            })
            .await;
            assert_eq!(&got, name);
        }
        let err = c.raw_error(kubectl, &format!("{nodes}/no-such-node"), "NotFound");
        assert!(err.contains("\"no-such-node\" not found"), "{err}");

        // Pods: all namespaces, each namespace, get one per namespace.
        let pods = format!("{base}/pods");
        until_ok(&pods, async || {
            truth.check_pod_list(&c.raw(kubectl, &pods)?, av, &all_pods)
        })
        .await;
        for ns in truth.namespaces() {
            let path = format!("{base}/namespaces/{ns}/pods");
            let want = truth.pods_where(|k, _| k.0 == ns);
            until_ok(&path, async || {
                truth.check_pod_list(&c.raw(kubectl, &path)?, av, &want)
            })
            .await;
            let first = &want[0];
            let path = format!("{base}/namespaces/{ns}/pods/{}", first.1);
            let got = until_ok(&path, async || {
                truth.check_pod(&c.raw(kubectl, &path)?, Some(av))
            })
            .await;
            assert_eq!(&got, first);
        }
        let empty = format!("{base}/namespaces/no-such-namespace/pods");
        until_ok(&empty, async || {
            truth.check_pod_list(&c.raw(kubectl, &empty)?, av, &[])
        })
        .await;
        // Pods that are not Running are never served, by name or in lists.
        for ((ns, name), phase) in &truth.not_running {
            let err = c.raw_error(
                kubectl,
                &format!("{base}/namespaces/{ns}/pods/{name}"),
                "NotFound",
            );
            assert!(
                err.contains(&format!("\"{name}\" not found")),
                "{phase} {err}"
            );
        }

        // Label selectors, one per operator, across namespaces and in one namespace.
        for case in POD_LABEL_CASES {
            let want = truth.pods_where(|_, p| (case.selects)(&p.labels));
            if case.selector != "app in (no-such-app)" {
                assert!(
                    !want.is_empty() && want.len() < all_pods.len(),
                    "{} selects {} of {} pods: pick cases that discriminate",
                    case.selector,
                    want.len(),
                    all_pods.len()
                );
            }
            let path = format!("{pods}?labelSelector={}", enc(case.selector));
            until_ok(&path, async || {
                truth.check_pod_list(&c.raw(kubectl, &path)?, av, &want)
            })
            .await;
            let want: Vec<PodKey> = want.into_iter().filter(|k| k.0 == "kube-system").collect();
            let path = format!(
                "{base}/namespaces/kube-system/pods?labelSelector={}",
                enc(case.selector)
            );
            until_ok(&path, async || {
                truth.check_pod_list(&c.raw(kubectl, &path)?, av, &want)
            })
            .await;
        }
        for case in NODE_LABEL_CASES {
            let want = truth.nodes_where(|_, n| (case.selects)(&n.labels));
            assert!(!want.is_empty(), "{} selects no node", case.selector);
            let path = format!("{nodes}?labelSelector={}", enc(case.selector));
            until_ok(&path, async || {
                truth.check_node_list(&c.raw(kubectl, &path)?, av, &want)
            })
            .await;
        }

        // Field selectors: metadata.name and metadata.namespace, alone, negated, with a label
        // selector, and against the namespace of the path.
        let (ns0, name0) = all_pods[all_pods.len() / 2].clone();
        let (pending_ns, pending) = truth
            .not_running
            .keys()
            .next()
            .cloned()
            .expect("a pod that is not Running");
        let field_cases: Vec<(String, Vec<PodKey>)> = vec![
            (
                format!("fieldSelector={}", enc(&format!("metadata.name={name0}"))),
                vec![(ns0.clone(), name0.clone())],
            ),
            (
                format!("fieldSelector={}", enc(&format!("metadata.name!={name0}"))),
                truth.pods_where(|k, _| k.1 != name0),
            ),
            (
                format!("fieldSelector={}", enc("metadata.namespace=team-alpha")),
                truth.pods_where(|k, _| k.0 == "team-alpha"),
            ),
            (
                format!("fieldSelector={}", enc("metadata.namespace!=kube-system")),
                truth.pods_where(|k, _| k.0 != "kube-system"),
            ),
            (
                format!(
                    "fieldSelector={}&labelSelector={}",
                    enc("metadata.namespace==team-alpha"),
                    enc("tier=backend")
                ),
                truth.pods_where(|k, p| {
                    k.0 == "team-alpha" && label(&p.labels, "tier") == Some("backend")
                }),
            ),
            (
                format!(
                    "fieldSelector={}",
                    enc(&format!(
                        "metadata.name={pending},metadata.namespace={pending_ns}"
                    ))
                ),
                vec![],
            ),
        ];
        for (query, want) in &field_cases {
            let path = format!("{pods}?{query}");
            until_ok(&path, async || {
                truth.check_pod_list(&c.raw(kubectl, &path)?, av, want)
            })
            .await;
        }
        let path = format!(
            "{base}/namespaces/{ns0}/pods?fieldSelector={}",
            enc(&format!("metadata.namespace={ns0},metadata.name={name0}"))
        );
        let want = vec![(ns0.clone(), name0.clone())];
        until_ok(&path, async || {
            truth.check_pod_list(&c.raw(kubectl, &path)?, av, &want)
        })
        .await;
        let other = if ns0 == "default" {
            "kube-system"
        } else {
            "default"
        };
        let path = format!(
            "{base}/namespaces/{ns0}/pods?fieldSelector={}",
            enc(&format!("metadata.namespace={other}"))
        );
        until_ok(&path, async || {
            truth.check_pod_list(&c.raw(kubectl, &path)?, av, &[])
        })
        .await;
        let node0 = all_nodes[3].clone();
        for (selector, want) in [
            (format!("metadata.name={node0}"), vec![node0.clone()]),
            (
                format!("metadata.name!={node0}"),
                truth.nodes_where(|n, _| n != node0),
            ),
        ] {
            let path = format!("{nodes}?fieldSelector={}", enc(&selector));
            until_ok(&path, async || {
                truth.check_node_list(&c.raw(kubectl, &path)?, av, &want)
            })
            .await;
        }

        // Bad selectors are 400s that say what is wrong.
        let err = c.raw_error(
            kubectl,
            &format!("{pods}?labelSelector={}", enc("app in")),
            "BadRequest",
        );
        assert!(err.contains("expected: '('"), "{err}");
        let err = c.raw_error(
            kubectl,
            &format!("{pods}?fieldSelector={}", enc("spec.nodeName=node-00001")),
            "BadRequest",
        );
        assert!(err.contains("spec.nodeName"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_27_get_raw_serves_every_path_with_expected_numbers() {
    raw_paths(KUBECTL_1_27).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_33_get_raw_serves_every_path_with_expected_numbers() {
    raw_paths(KUBECTL_1_33).await;
}

// ---------------------------------------------------------------------------------------------
// The HPA's request

/// What the HPA controller sends (`k8s.io/client-go` with protobuf preferred).
const HPA_ACCEPT: &str = "application/vnd.kubernetes.protobuf, */*";

/// The `k8s\0` envelope: `runtime.Unknown`'s type meta and raw bytes (decoded with k8s-pb).
fn envelope(body: &[u8]) -> (String, String, Vec<u8>) {
    assert_eq!(body.get(..4), Some(&b"k8s\0"[..]), "protobuf magic");
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(&body[4..])
        .unwrap_or_else(|e| panic!("runtime.Unknown: {e}"));
    let tm = unknown.type_meta.unwrap_or_default();
    (
        tm.api_version.unwrap_or_default(),
        tm.kind.unwrap_or_default(),
        unknown.raw.unwrap_or_default(),
    )
}

fn rfc3339(seconds: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(seconds)
        .map(|t| t.to_string())
        .unwrap_or_else(|e| panic!("timestamp {seconds}: {e}"))
}

/// A `PodMetricsList` decoded by prost (k8s-pb types), in the JSON shape the checks read.
fn pod_list_from_prost(raw: &[u8], av: &str) -> Value {
    use k8s_pb::metrics::pkg::apis::metrics::v1beta1 as m;
    let list = m::PodMetricsList::decode(raw).unwrap_or_else(|e| panic!("PodMetricsList: {e}"));
    let items: Vec<Value> = list
        .items
        .iter()
        .map(|p| {
            let meta = p.metadata.clone().unwrap_or_default();
            let containers: Vec<Value> = p
                .containers
                .iter()
                .map(|c| {
                    let usage: serde_json::Map<String, Value> = c
                        .usage
                        .iter()
                        .map(|(k, q)| (k.clone(), json!(q.string.clone().unwrap_or_default())))
                        .collect();
                    json!({"name": c.name.clone().unwrap_or_default(), "usage": usage})
                })
                .collect();
            let ts = p.timestamp.unwrap_or_default().seconds.unwrap_or_default();
            let window = p.window.unwrap_or_default().duration.unwrap_or_default();
            json!({
                "metadata": {
                    "name": meta.name.unwrap_or_default(),
                    "namespace": meta.namespace.unwrap_or_default(),
                    "labels": meta.labels,
                },
                "timestamp": rfc3339(ts),
                "window": format!("{}s", window as f64 / 1e9),
                "containers": containers,
            })
        })
        .collect();
    json!({"kind": "PodMetricsList", "apiVersion": av, "items": items})
}

/// The same list as `protoc --decode_raw` sees it (field numbers from
/// k8s.io/metrics/pkg/apis/metrics/v1beta1/generated.proto).
fn pod_list_from_protoc(tree: &Raw, av: &str) -> Result<Value, String> {
    let mut items = Vec::new();
    // PodMetricsList: 1 metadata, 2 items.
    for p in tree.all(2) {
        // PodMetrics: 1 metadata (1 name, 3 namespace, 11 labels), 2 timestamp (1 seconds),
        // 3 window (1 nanoseconds), 4 containers (1 name, 2 usage: 1 key, 2 Quantity: 1 string).
        let meta = p.one(1)?;
        let labels: serde_json::Map<String, Value> = meta
            .all(11)
            .into_iter()
            .map(|e| Ok((e.text(1)?, json!(e.text(2)?))))
            .collect::<Result<_, String>>()?;
        let mut containers = Vec::new();
        for c in p.all(4) {
            let usage: serde_json::Map<String, Value> = c
                .all(2)
                .into_iter()
                .map(|e| Ok((e.text(1)?, json!(e.one(2)?.text(1)?))))
                .collect::<Result<_, String>>()?;
            containers.push(json!({"name": c.text(1)?, "usage": usage}));
        }
        let seconds: i64 = p
            .one(2)?
            .text(1)?
            .parse()
            .map_err(|e| format!("seconds: {e}"))?;
        let window: i64 = p
            .one(3)?
            .text(1)?
            .parse()
            .map_err(|e| format!("window: {e}"))?;
        items.push(json!({
            "metadata": {"name": meta.text(1)?, "namespace": meta.text(3)?, "labels": labels},
            "timestamp": rfc3339(seconds),
            "window": format!("{}s", window as f64 / 1e9),
            "containers": containers,
        }));
    }
    Ok(json!({"kind": "PodMetricsList", "apiVersion": av, "items": items}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hpa_request_in_protobuf_and_json_and_python_clients_carry_the_expected_figures() {
    let (cluster, _bridge, truth) = served_cluster().await;
    let hpa = cluster.sim.token("hpa");
    let (ns, app, want) = busiest_app(&truth);
    for v in VERSIONS {
        let av = api_version(v);
        let path = format!(
            "/apis/metrics.k8s.io/{v}/namespaces/{ns}/pods?labelSelector={}",
            enc(&format!("app={app}"))
        );

        let r = cluster.get_as(&hpa, &path, HPA_ACCEPT).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(
            r.headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/vnd.kubernetes.protobuf"),
            "{path}"
        );
        let (api_version, kind, raw) = envelope(&r.body);
        assert_eq!(
            (api_version.as_str(), kind.as_str()),
            (av.as_str(), "PodMetricsList")
        );

        let by_prost = pod_list_from_prost(&raw, &av);
        let tree = parse_decode_raw(&protoc_decode_raw(&raw))
            .unwrap_or_else(|e| panic!("protoc output: {e}"));
        let by_protoc =
            pod_list_from_protoc(&tree, &av).unwrap_or_else(|e| panic!("protoc tree: {e}"));
        assert_eq!(by_prost, by_protoc, "prost and protoc disagree");
        // protoc sees the envelope too: type meta, the same message as field 2, and empty
        // content encoding and type.
        let outer = parse_decode_raw(&protoc_decode_raw(&r.body[4..]))
            .unwrap_or_else(|e| panic!("protoc envelope: {e}"));
        let type_meta = outer.one(1).unwrap();
        assert_eq!(type_meta.text(1), Ok(av.clone()));
        assert_eq!(type_meta.text(2), Ok("PodMetricsList".to_owned()));
        assert_eq!(outer.one(2), Ok(&tree));
        assert_eq!(outer.text(3), Ok(String::new()));
        assert_eq!(outer.text(4), Ok(String::new()));
        if let Err(e) = truth.check_pod_list(&by_prost, &av, &want) {
            panic!("{path} in protobuf: {e}");
        }
        // Every window is a real span between two points, not a default.
        for item in by_prost["items"].as_array().unwrap() {
            let w = go_duration_secs(item["window"].as_str().unwrap()).unwrap();
            assert!(w > 0.0, "{item}");
        }

        let r = cluster.get_as(&hpa, &path, "application/json, */*").await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(
            r.headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "{path}"
        );
        if let Err(e) = truth.check_pod_list(&r.json(), &av, &want) {
            panic!("{path} in JSON: {e}");
        }

        // The same list through Python's `kubernetes` client, as the HPA identity, and the
        // nodes as the admin: a client library that knows nothing of metrics-bridge.
        let out = cluster.sim.python(
            PYTHON_METRICS,
            &[
                cluster
                    .sim
                    .path("hpa.kubeconfig")
                    .to_str()
                    .unwrap_or_default(),
                v,
                &ns,
                &format!("app={app}"),
            ],
        );
        if let Err(e) = truth.check_pod_list(&json_of(&out), &av, &want) {
            panic!("python kubernetes, {v} pods: {e}");
        }
        let out = cluster.sim.python(
            PYTHON_METRICS,
            &[
                cluster.sim.path("kubeconfig").to_str().unwrap_or_default(),
                v,
            ],
        );
        let nodes: Vec<String> = truth.nodes.keys().cloned().collect();
        if let Err(e) = truth.check_node_list(&json_of(&out), &av, &nodes) {
            panic!("python kubernetes, {v} nodes: {e}");
        }
    }
}

/// Python's `kubernetes` client: `KUBECONFIG VERSION [NAMESPACE SELECTOR]` lists pod metrics
/// of a namespace with a label selector, `KUBECONFIG VERSION` node metrics; prints the JSON.
const PYTHON_METRICS: &str = r#"
import json, sys
from kubernetes import client, config
kubeconfig, version = sys.argv[1], sys.argv[2]
api = client.CustomObjectsApi(config.new_client_from_config(config_file=kubeconfig))
if len(sys.argv) > 3:
    out = api.list_namespaced_custom_object(
        "metrics.k8s.io", version, sys.argv[3], "pods", label_selector=sys.argv[4])
else:
    out = api.list_cluster_custom_object("metrics.k8s.io", version, "nodes")
print(json.dumps(out))
"#;

fn json_of(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

// ---------------------------------------------------------------------------------------------
// The aggregation layer follows the backend

/// `kubectl top node` fails as it does on a real cluster whose metrics backend is down.
fn assert_top_unavailable(cluster: &Cluster) {
    for kubectl in [KUBECTL_1_27, KUBECTL_1_33] {
        let out = cluster.sim.kubectl(kubectl, "kubeconfig", &["top", "node"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{kubectl} top node succeeded");
        assert!(
            stderr.contains("Metrics API not available"),
            "{kubectl}: {stderr}"
        );
    }
}

async fn assert_raw_unavailable(cluster: &Cluster) {
    for v in VERSIONS {
        let path = format!("/apis/metrics.k8s.io/{v}/nodes");
        let r = cluster.get(&path).await;
        assert_eq!(r.status, 503, "{path}: {}", r.text());
        let status = r.json();
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["reason"], "ServiceUnavailable");
        assert_eq!(
            status["message"],
            "the server is currently unable to handle the request"
        );
        let err = cluster.raw_error(KUBECTL_1_33, &path, "ServiceUnavailable");
        assert!(
            err.contains("the server is currently unable to handle the request"),
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_top_follows_the_backend_through_the_aggregator() {
    let cluster = Cluster::new(&["--nodes", "5", "--pods-per-node", "3"]);
    cluster.wait_api_unavailable().await;
    assert_top_unavailable(&cluster);
    assert_raw_unavailable(&cluster).await;

    let mut bridge = cluster.start_bridge(&[]).await;
    cluster.wait_api_available().await;
    let truth = Truth::fetch(&cluster.sim).await;
    let all: Vec<String> = truth.nodes.keys().cloned().collect();
    for kubectl in [KUBECTL_1_27, KUBECTL_1_33] {
        until_ok(kubectl, async || {
            let out = cluster.kubectl(kubectl, &["top", "node"])?;
            truth.check_top_nodes(&out, &all, &BTreeSet::new())
        })
        .await;
    }

    let (status, log) = bridge.terminate();
    assert!(status.success(), "{status}: {log}");
    cluster.wait_api_unavailable().await;
    assert_top_unavailable(&cluster);
    assert_raw_unavailable(&cluster).await;
}

// ---------------------------------------------------------------------------------------------
// The harness's own parsers

#[test]
fn the_harness_parses_quantities_durations_and_protoc_output() {
    use support::expect::*;
    assert_eq!(quantity_nanos("250m"), Ok(250_000_000));
    assert_eq!(quantity_nanos("71861u"), Ok(71_861_000));
    assert_eq!(quantity_nanos("1234567n"), Ok(1_234_567));
    assert_eq!(quantity_nanos("3"), Ok(3_000_000_000));
    assert_eq!(quantity_nanos("1.5"), Ok(1_500_000_000));
    assert_eq!(quantity_nanos("2Ki"), Ok(2048 * 1_000_000_000));
    assert_eq!(quantity_nanos("1.5Gi"), Ok(1_610_612_736 * 1_000_000_000));
    assert_eq!(quantity_nanos("2e3"), Ok(2_000 * 1_000_000_000));
    assert_eq!(quantity_integer("60986301Ki"), Ok(60_986_301 * 1024));
    assert!(quantity_nanos("-5m").is_ok_and(|n| n < 0));
    assert!(cpu_nanos("-5m").is_err());
    assert!(quantity_nanos("5x").is_err());
    assert!(quantity_nanos("").is_err());
    assert!(quantity_integer("1500m").is_err());

    assert_eq!(kubectl_millicores(71_861_000, 1), 72..=72);
    assert_eq!(kubectl_millicores(254_000_000, 2), 254..=255);
    assert_eq!(kubectl_mebibytes((5 << 20) - 1), 4);
    assert_eq!(kubectl_percent(525, 15890), 3);

    assert_eq!(go_duration_secs("2s"), Ok(2.0));
    assert_eq!(go_duration_secs("2.008s"), Ok(2.008));
    assert_eq!(go_duration_secs("1m0.5s"), Ok(60.5));
    assert_eq!(go_duration_secs("500ms"), Ok(0.5));
    assert!(go_duration_secs("").is_err());
    assert!(go_duration_secs("2").is_err());

    let raw =
        parse_decode_raw("1 {\n  1: \"a\\\"b\"\n  2: 7\n}\n2 {\n}\n2 {\n  1: \"\\303\\251\"\n}\n")
            .unwrap();
    assert_eq!(raw.one(1).unwrap().text(1), Ok("a\"b".to_owned()));
    assert_eq!(raw.one(1).unwrap().text(2), Ok("7".to_owned()));
    assert_eq!(raw.all(2).len(), 2);
    assert_eq!(raw.all(2)[1].text(1), Ok("é".to_owned()));
    assert!(parse_decode_raw("1 {\n").is_err());
    // protoc prints the string "5197u" as a message (field 6, fixed32); text() restores it.
    let raw = parse_decode_raw("1 {\n  6: 0x75373931\n}\n").unwrap();
    assert_eq!(raw.text(1), Ok("5197u".to_owned()));
}
