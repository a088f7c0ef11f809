//! The RBAC of `deploy/components.yaml`, evaluated by kube-sim (`--rbac`) with
//! kube-apiserver's RBAC semantics: its service account may do everything metrics-bridge
//! does — list and watch nodes and pod metadata with kube-rs (the client metrics-bridge
//! uses), read and watch the authentication ConfigMap, create TokenReviews and
//! SubjectAccessReviews, scrape every kubelet's `/metrics/resource` — and each grant in the
//! file is needed: without it, the request metrics-bridge would make fails with
//! kube-apiserver's (or the kubelet's) message naming what is missing. kubectl 1.27 and 1.33
//! (`auth can-i`) and the aggregated `view` role are checked against the same policy, and the
//! prometheus overlay lets Prometheus scrape both endpoints and discover the Service.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use serde_json::{Value, json};
use support::{Cred, KUBECTL_1_27, KUBECTL_1_33, KubeSim};

const SERVICE_ACCOUNT: &str = "system:serviceaccount:kube-system:metrics-bridge";
const AUTH_CONFIGMAP: &str = "extension-apiserver-authentication";

fn components_yaml() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/components.yaml")
}

fn components_text() -> String {
    std::fs::read_to_string(components_yaml()).expect("deploy/components.yaml")
}

/// kube-sim with three nodes, authorizing with `rbac_file`.
fn start(rbac_file: &Path) -> KubeSim {
    let file = rbac_file.to_str().expect("UTF-8 path");
    KubeSim::start(&["--rbac", file, "--nodes", "3", "--pods-per-node", "4"])
}

/// A temp file holding `text`.
fn temp_yaml(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .expect("temp file");
    std::fs::write(file.path(), text).expect("write");
    file
}

/// `components.yaml` without the documents of `kind` named `name`.
fn without_document(text: &str, kind: &str, name: &str) -> String {
    let docs: Vec<&str> = text.split("\n---\n").collect();
    let kept: Vec<&str> = docs
        .iter()
        .copied()
        .filter(|d| {
            !(d.lines().any(|l| l == format!("kind: {kind}"))
                && d.lines().any(|l| l == format!("  name: {name}")))
        })
        .collect();
    assert_eq!(
        kept.len() + 1,
        docs.len(),
        "{kind} {name} in components.yaml"
    );
    kept.join("\n---\n")
}

/// `components.yaml` without one rule of the ClusterRole `system:metrics-bridge`.
fn without_rule(text: &str, rule: &str) -> String {
    let out = text.replacen(rule, "", 1);
    assert_ne!(out, text, "rule {rule:?} in components.yaml");
    out
}

const NODES_METRICS_RULE: &str =
    "- apiGroups:\n  - \"\"\n  resources:\n  - nodes/metrics\n  verbs:\n  - get\n";
const PODS_NODES_RULE: &str = "- apiGroups:\n  - \"\"\n  resources:\n  - pods\n  - nodes\n  verbs:\n  - get\n  - list\n  - watch\n";

/// kube-rs as metrics-bridge: its service account's kubeconfig.
async fn bridge_client(sim: &KubeSim) -> kube::Client {
    sim.client_for("metrics-bridge.kubeconfig").await
}

/// Runs a kube-rs watcher until its initial list is complete; the objects it listed.
async fn initial_list<K>(api: Api<K>, config: watcher::Config) -> Result<usize, watcher::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let mut stream = watcher(api, config).boxed();
    let mut count = 0;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("the watch answers within 20s")
            .expect("the watch stream goes on");
        match next? {
            watcher::Event::InitApply(_) => count += 1,
            watcher::Event::InitDone => return Ok(count),
            _ => {}
        }
    }
}

/// The Status a kube-rs call failed with.
fn status<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// GET every node's kubelet `/metrics/resource` with metrics-bridge's token, at the address
/// and port its Node object advertises; (node, status, body) each.
async fn scrape_every_kubelet(sim: &KubeSim) -> Vec<(String, u16, String)> {
    let nodes: Api<Node> = Api::all(sim.client().await);
    let token = sim.token("metrics-bridge");
    let ca = sim.read("ca.crt");
    let mut out = Vec::new();
    for node in nodes.list(&ListParams::default()).await.expect("nodes") {
        let name = node.metadata.name.clone().unwrap_or_default();
        let status = node.status.expect("status");
        let ip = status
            .addresses
            .unwrap_or_default()
            .into_iter()
            .find(|a| a.type_ == "InternalIP")
            .expect("InternalIP")
            .address;
        let port = status
            .daemon_endpoints
            .and_then(|d| d.kubelet_endpoint)
            .expect("kubelet endpoint")
            .port;
        let reply = support::https(
            "GET",
            &format!("https://{ip}:{port}/metrics/resource"),
            Some(&ca),
            Cred::Token(&token),
            &[],
            Vec::new(),
        )
        .await
        .unwrap_or_else(|e| panic!("scraping {name}: {e}"));
        out.push((name, reply.status, reply.text()));
    }
    out
}

/// POSTs a review as metrics-bridge.
async fn review(sim: &KubeSim, path: &str, body: Value) -> (u16, Value) {
    let reply = sim
        .as_token(
            &sim.token("metrics-bridge"),
            "POST",
            path,
            body.to_string().into_bytes(),
        )
        .await;
    (reply.status, reply.json())
}

fn token_review(token: &str) -> Value {
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}})
}

fn access_review(user: &str, groups: &[&str], verb: &str, group: &str, resource: &str) -> Value {
    json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": groups,
            "resourceAttributes": {"verb": verb, "group": group, "resource": resource, "namespace": "default"},
        },
    })
}

const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
const ACCESS_REVIEWS: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";

#[tokio::test]
async fn the_service_account_can_do_everything_metrics_bridge_does() {
    let sim = start(&components_yaml());
    let client = bridge_client(&sim).await;

    // The node watch, and the metadata-only watch of Running pods, as metrics-bridge runs
    // them: each lists exactly what the admin sees.
    let admin = sim.client().await;
    let all_nodes = Api::<Node>::all(admin.clone())
        .list(&ListParams::default())
        .await
        .expect("admin lists nodes");
    let running = Api::<Pod>::all(admin)
        .list_metadata(&ListParams::default().fields("status.phase=Running"))
        .await
        .expect("admin lists pods");
    assert_eq!(all_nodes.items.len(), 3);
    assert!(!running.items.is_empty());
    let nodes = initial_list(
        Api::<Node>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    )
    .await
    .expect("metrics-bridge watches nodes");
    assert_eq!(nodes, all_nodes.items.len());
    // Metadata only (`Api<PartialObjectMeta<_>>`), as kube-rs' metadata watcher asks.
    let listed = initial_list(
        Api::<PartialObjectMeta<Pod>>::all(client.clone()),
        watcher::Config::default()
            .any_semantic()
            .fields("status.phase=Running"),
    )
    .await
    .expect("metrics-bridge watches pod metadata");
    assert_eq!(listed, running.items.len());

    // The authentication ConfigMap: a get, and a watch of that one object.
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let cm = configmaps
        .get(AUTH_CONFIGMAP)
        .await
        .expect("get the ConfigMap");
    let data = cm.data.unwrap_or_default();
    assert!(data.contains_key("client-ca-file"), "{data:?}");
    assert!(
        data.contains_key("requestheader-client-ca-file"),
        "{data:?}"
    );
    let watched = initial_list(
        configmaps,
        watcher::Config::default().fields(&format!("metadata.name={AUTH_CONFIGMAP}")),
    )
    .await
    .expect("watch the ConfigMap");
    assert_eq!(watched, 1);

    // Delegated authentication and authorization.
    let (code, tr) = review(&sim, TOKEN_REVIEWS, token_review(&sim.token("viewer"))).await;
    assert_eq!(code, 201, "{tr}");
    assert_eq!(tr["status"]["user"]["username"], "viewer");
    let (code, sar) = review(
        &sim,
        ACCESS_REVIEWS,
        access_review(
            "viewer",
            &["system:authenticated"],
            "list",
            "metrics.k8s.io",
            "pods",
        ),
    )
    .await;
    assert_eq!(code, 201, "{sar}");
    assert_eq!(sar["status"]["allowed"], true);

    // Every kubelet answers metrics-bridge's scrape.
    let scrapes = scrape_every_kubelet(&sim).await;
    assert_eq!(scrapes.len(), 3);
    for (node, code, body) in &scrapes {
        assert_eq!(*code, 200, "{node}: {body}");
        assert!(
            body.lines()
                .any(|l| l.starts_with("node_cpu_usage_seconds_total ")),
            "{node}: {body}"
        );
    }

    // kubectl's view of the same policy, 1.27 and 1.33.
    let can_i: &[(&[&str], &str)] = &[
        (&["get", "nodes", "--subresource=metrics"], "yes"),
        (&["list", "nodes"], "yes"),
        (&["watch", "pods", "--all-namespaces"], "yes"),
        (&["create", "tokenreviews.authentication.k8s.io"], "yes"),
        (
            &["create", "subjectaccessreviews.authorization.k8s.io"],
            "yes",
        ),
        (
            &[
                "watch",
                "configmaps/extension-apiserver-authentication",
                "-n",
                "kube-system",
            ],
            "yes",
        ),
        (&["list", "configmaps", "-n", "kube-system"], "no"),
        (&["get", "nodes", "--subresource=proxy"], "no"),
        (&["list", "secrets", "--all-namespaces"], "no"),
        (&["delete", "pods", "-n", "default"], "no"),
        (&["list", "nodes.metrics.k8s.io"], "no"),
    ];
    for kubectl in [KUBECTL_1_27, KUBECTL_1_33] {
        for (args, want) in can_i {
            let mut full = vec!["auth", "can-i"];
            full.extend_from_slice(args);
            let out = sim.kubectl(kubectl, "metrics-bridge.kubeconfig", &full);
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                *want,
                "{kubectl} auth can-i {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[tokio::test]
async fn each_grant_of_components_yaml_is_needed() {
    let text = components_text();
    let forbidden = |verb: &str, resource: &str, group: &str, scope: &str| {
        let qualified = if group.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}.{group}")
        };
        format!(
            "{qualified} is forbidden: User \"{SERVICE_ACCOUNT}\" cannot {verb} resource \"{resource}\" in API group \"{group}\" {scope}"
        )
    };

    // Without `get nodes/metrics`, every kubelet refuses the scrape; the watches still work.
    let file = temp_yaml(&without_rule(&text, NODES_METRICS_RULE));
    let sim = start(file.path());
    let scrapes = scrape_every_kubelet(&sim).await;
    assert_eq!(scrapes.len(), 3);
    for (node, code, body) in &scrapes {
        assert_eq!(*code, 403, "{node}");
        assert_eq!(
            body,
            &format!(
                "Forbidden (user={SERVICE_ACCOUNT}, verb=get, resource=nodes, subresource=metrics)"
            )
        );
    }
    let nodes = Api::<Node>::all(bridge_client(&sim).await);
    assert_eq!(
        nodes
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len(),
        3
    );
    drop(sim);

    // Without list/watch on pods and nodes, the watches fail with kube-apiserver's 403.
    let file = temp_yaml(&without_rule(&text, PODS_NODES_RULE));
    let sim = start(file.path());
    let client = bridge_client(&sim).await;
    let s = status(
        Api::<Node>::all(client.clone())
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(s.code, 403);
    assert_eq!(
        s.message,
        forbidden("list", "nodes", "", "at the cluster scope")
    );
    let s = status(
        Api::<Pod>::all(client.clone())
            .list_metadata(&ListParams::default().fields("status.phase=Running"))
            .await,
    );
    assert_eq!(
        s.message,
        forbidden("list", "pods", "", "at the cluster scope")
    );
    match initial_list(Api::<Node>::all(client), watcher::Config::default()).await {
        Err(watcher::Error::InitialListFailed(kube::Error::Api(s))) => {
            assert_eq!(
                s.message,
                forbidden("list", "nodes", "", "at the cluster scope")
            )
        }
        other => panic!("the node watch must fail its initial list: {other:?}"),
    }
    assert_eq!(
        scrape_every_kubelet(&sim).await.len(),
        3,
        "kubelets still answer"
    );
    drop(sim);

    // Without the auth-delegator binding: no TokenReview, no SubjectAccessReview.
    let file = temp_yaml(&without_document(
        &text,
        "ClusterRoleBinding",
        "metrics-bridge:system:auth-delegator",
    ));
    let sim = start(file.path());
    let (code, body) = review(&sim, TOKEN_REVIEWS, token_review("x")).await;
    assert_eq!(code, 403);
    assert_eq!(
        body["message"],
        forbidden(
            "create",
            "tokenreviews",
            "authentication.k8s.io",
            "at the cluster scope"
        )
    );
    let (code, body) = review(
        &sim,
        ACCESS_REVIEWS,
        access_review("viewer", &[], "list", "metrics.k8s.io", "pods"),
    )
    .await;
    assert_eq!(code, 403);
    assert_eq!(
        body["message"],
        forbidden(
            "create",
            "subjectaccessreviews",
            "authorization.k8s.io",
            "at the cluster scope"
        )
    );
    drop(sim);

    // Without the auth-reader RoleBinding, the authentication ConfigMap is out of reach.
    let file = temp_yaml(&without_document(
        &text,
        "RoleBinding",
        "metrics-bridge-auth-reader",
    ));
    let sim = start(file.path());
    let configmaps: Api<ConfigMap> = Api::namespaced(bridge_client(&sim).await, "kube-system");
    let s = status(configmaps.get(AUTH_CONFIGMAP).await);
    assert_eq!(
        s.message,
        format!(
            "configmaps \"{AUTH_CONFIGMAP}\" is forbidden: User \"{SERVICE_ACCOUNT}\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"kube-system\""
        )
    );
    drop(sim);

    // A binding to a misspelled role grants nothing, and the 403 says why, as a real one.
    let file = temp_yaml(&text.replacen(
        "  kind: ClusterRole\n  name: system:metrics-bridge\n",
        "  kind: ClusterRole\n  name: system:metrics-brige\n",
        1,
    ));
    let sim = start(file.path());
    let s = status(
        Api::<Node>::all(bridge_client(&sim).await)
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(
        s.message,
        format!(
            "{}: RBAC: clusterrole.rbac.authorization.k8s.io \"system:metrics-brige\" not found",
            forbidden("list", "nodes", "", "at the cluster scope")
        )
    );
    assert!(
        sim.stderr().contains(
            "ClusterRoleBinding system:metrics-bridge: clusterrole.rbac.authorization.k8s.io \"system:metrics-brige\" not found; it grants nothing"
        ),
        "{}",
        sim.stderr()
    );
}

/// A SubjectAccessReview posted by the admin (who may always create one).
async fn admin_review(sim: &KubeSim, body: Value) -> Value {
    let (cert, key) = (sim.read("admin.crt"), sim.read("admin.key"));
    let reply = support::https(
        "POST",
        &format!("{}{ACCESS_REVIEWS}", sim.url),
        Some(&sim.read("ca.crt")),
        Cred::Cert(&cert, &key),
        &[("content-type", "application/json")],
        body.to_string().into_bytes(),
    )
    .await
    .expect("SubjectAccessReview");
    assert_eq!(reply.status, 201, "{}", reply.text());
    reply.json()
}

#[tokio::test]
async fn the_aggregated_metrics_reader_reaches_everyone_with_view() {
    let binding = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\n\
                   metadata: {name: jane-view}\nroleRef: {apiGroup: rbac.authorization.k8s.io, \
                   kind: ClusterRole, name: view}\nsubjects: [{kind: User, name: jane}]\n";
    let jane = access_review(
        "jane",
        &["system:authenticated"],
        "list",
        "metrics.k8s.io",
        "nodes",
    );

    let with = temp_yaml(&format!("{}\n---\n{binding}", components_text()));
    let sim = start(with.path());
    let sar = admin_review(&sim, jane.clone()).await;
    assert_eq!(
        sar["status"],
        json!({
            "allowed": true,
            "reason": "RBAC: allowed by ClusterRoleBinding \"jane-view\" of ClusterRole \"view\" to User \"jane\"",
        })
    );
    drop(sim);

    // Without components.yaml, view holds no metrics rule.
    let without = temp_yaml(binding);
    let sim = start(without.path());
    let sar = admin_review(&sim, jane).await;
    assert_eq!(sar["status"]["allowed"], false, "{sar}");
}

#[test]
fn a_bad_rbac_file_stops_kube_sim_with_one_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = temp_yaml(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: x}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: rb}\n\
         roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: r}\n",
    );
    let missing = dir.path().join("missing.yaml");
    let cases = [
        (
            bad.path().to_path_buf(),
            format!(
                "kube-sim: --rbac file {}: document 2: RoleBinding \"rb\" has no metadata.namespace\n",
                bad.path().display()
            ),
        ),
        (
            missing.clone(),
            format!(
                "kube-sim: reading --rbac file {}: No such file or directory (os error 2)\n",
                missing.display()
            ),
        ),
    ];
    for (file, want) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kube-sim"))
            .arg("--dir")
            .arg(dir.path())
            .args(["--apiserver-addr", "127.0.0.1:0", "--nodes", "1"])
            .arg("--rbac")
            .arg(&file)
            .output()
            .expect("run kube-sim");
        assert_eq!(out.status.code(), Some(1), "{}", file.display());
        assert_eq!(String::from_utf8_lossy(&out.stderr), want);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    }
}

#[tokio::test]
async fn the_prometheus_overlay_lets_prometheus_scrape_both_endpoints() {
    let rendered = std::process::Command::new("/usr/bin/kubectl")
        .arg("kustomize")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/overlays/prometheus"))
        .output()
        .expect("kubectl kustomize");
    assert!(rendered.status.success(), "{rendered:?}");
    let file = temp_yaml(&String::from_utf8_lossy(&rendered.stdout));
    let sim = start(file.path());
    let prometheus = "system:serviceaccount:monitoring:prometheus-k8s";
    let groups = [
        "system:serviceaccounts",
        "system:serviceaccounts:monitoring",
        "system:authenticated",
    ];
    let path_review = |path: &str| {
        json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {"user": prometheus, "groups": groups,
                     "nonResourceAttributes": {"path": path, "verb": "get"}},
        })
    };
    let resource_review = |verb: &str, group: &str, resource: &str, namespace: &str| {
        json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {"user": prometheus, "groups": groups,
                     "resourceAttributes": {"verb": verb, "group": group, "resource": resource, "namespace": namespace}},
        })
    };
    let reader = "RBAC: allowed by ClusterRoleBinding \"metrics-bridge:prometheus\" of ClusterRole \"metrics-bridge:metrics-reader\" to ServiceAccount \"prometheus-k8s/monitoring\"";
    let discovery = "RBAC: allowed by RoleBinding \"metrics-bridge:prometheus-discovery/kube-system\" of Role \"metrics-bridge:prometheus-discovery\" to ServiceAccount \"prometheus-k8s/monitoring\"";
    let cases = [
        (
            path_review("/metrics"),
            json!({"allowed": true, "reason": reader}),
        ),
        (
            path_review("/metrics/resource"),
            json!({"allowed": true, "reason": reader}),
        ),
        (
            path_review("/metrics/resource/x"),
            json!({"allowed": false}),
        ),
        (
            path_review("/debug/pprof/profile"),
            json!({"allowed": false}),
        ),
        (
            resource_review("list", "discovery.k8s.io", "endpointslices", "kube-system"),
            json!({"allowed": true, "reason": discovery}),
        ),
        (
            resource_review("watch", "", "pods", "kube-system"),
            json!({"allowed": true, "reason": discovery}),
        ),
        (
            resource_review("list", "", "pods", "default"),
            json!({"allowed": false}),
        ),
        (
            resource_review("list", "", "secrets", "kube-system"),
            json!({"allowed": false}),
        ),
    ];
    for (review, want) in cases {
        let got = admin_review(&sim, review.clone()).await;
        assert_eq!(got["status"], want, "{review}");
    }
}
