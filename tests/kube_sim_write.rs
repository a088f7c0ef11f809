//! Writes to kube-sim's API server as a control plane gets them from a kubelet, a scheduler
//! and kubectl: create (and `AlreadyExists`), the status subresources, `pods/binding`,
//! updates with stale resourceVersions (409), patches of the three kinds, graceful pod
//! deletion, namespace termination, leases, and the 410 of an expired continue token, all
//! observed through kube-rs and real kubectl, with the watch events they produce.

mod support;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::json;
use support::{KUBECTL_1_27, KUBECTL_1_33, KubeSim};

fn api_error(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Collects watch events (type, name, resourceVersion, deletionTimestamp set, nodeName, phase)
/// of pods until `n` arrive or 10 s pass.
async fn events(
    stream: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<Pod>>> + Unpin),
    n: usize,
) -> Vec<(String, String, bool, String, String)> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        let ev = tokio::time::timeout_at(deadline, stream.try_next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} events: {out:?}", out.len()))
            .unwrap()
            .unwrap();
        let (ty, p) = match ev {
            WatchEvent::Added(p) => ("ADDED", p),
            WatchEvent::Modified(p) => ("MODIFIED", p),
            WatchEvent::Deleted(p) => ("DELETED", p),
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Error(e) => panic!("watch error {e:?}"),
        };
        out.push((
            ty.to_string(),
            p.metadata.name.clone().unwrap_or_default(),
            p.metadata.deletion_timestamp.is_some(),
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
            p.status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default(),
        ));
    }
    out
}

fn node(name: &str, ip: &str) -> Node {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {"podCIDR": "10.9.0.0/24", "podCIDRs": ["10.9.0.0/24"]},
        "status": {
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "3900m", "memory": "7Gi", "pods": "110"},
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "kubelet is posting ready status",
                            "lastHeartbeatTime": "2025-01-01T00:00:00Z",
                            "lastTransitionTime": "2025-01-01T00:00:00Z"}]
        }
    }))
    .unwrap()
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "ext"}},
        "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                          "limits": {"cpu": "100m", "memory": "64Mi"}}}]},
        // A client cannot create a pod Running: the server resets this.
        "status": {"phase": "Running"}
    }))
    .unwrap()
}

#[tokio::test]
async fn nodes_pods_bindings_status_and_graceful_deletion() {
    let sim = KubeSim::start(&["--nodes", "0"]);
    let client = sim.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "team-alpha");
    let pp = PostParams::default();

    // A node registers with its status, as a kubelet does.
    let created = nodes
        .create(&pp, &node("ext-1", "127.3.0.1"))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert_eq!(meta.uid.as_ref().map(String::len), Some(36));
    assert!(meta.creation_timestamp.is_some());
    let rv1: u64 = meta.resource_version.as_deref().unwrap().parse().unwrap();
    let status = created.status.clone().unwrap();
    assert_eq!(status.addresses.unwrap()[0].address, "127.3.0.1");
    assert_eq!(status.capacity.unwrap()["cpu"].0, "4");
    let e = api_error(
        nodes
            .create(&pp, &node("ext-1", "127.3.0.1"))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(e.message, r#"nodes "ext-1" already exists"#);

    // The status subresource: a stale resourceVersion is a conflict; spec is left alone.
    let mut stale = created.clone();
    stale.metadata.resource_version = Some("1".into());
    let e = api_error(
        nodes
            .replace_status("ext-1", &pp, &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        e.message,
        r#"Operation cannot be fulfilled on nodes "ext-1": the object has been modified; please apply your changes to the latest version and try again"#
    );
    let mut fresh = created.clone();
    fresh
        .status
        .as_mut()
        .unwrap()
        .capacity
        .as_mut()
        .unwrap()
        .insert(
            "cpu".into(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("8".into()),
        );
    fresh.spec.as_mut().unwrap().unschedulable = Some(true);
    let updated = nodes.replace_status("ext-1", &pp, &fresh).await.unwrap();
    assert_eq!(updated.status.unwrap().capacity.unwrap()["cpu"].0, "8");
    assert_eq!(
        updated.spec.unwrap().unschedulable,
        None,
        "status cannot change spec"
    );
    let rv2: u64 = updated.metadata.resource_version.unwrap().parse().unwrap();
    assert!(rv2 > rv1);
    // A strategic merge patch of the status merges conditions by type.
    let patched = nodes
        .patch_status(
            "ext-1",
            &PatchParams::default(),
            &Patch::Strategic(json!({"status": {"conditions": [
                {"type": "MemoryPressure", "status": "False"}
            ]}})),
        )
        .await
        .unwrap();
    let types: Vec<String> = patched
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .map(|c| c.type_)
        .collect();
    assert_eq!(types, ["Ready", "MemoryPressure"]);
    // A patch that changes nothing records nothing.
    let same = nodes
        .patch(
            "ext-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"kubernetes.io/hostname": "ext-1"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        same.metadata.resource_version,
        patched.metadata.resource_version
    );

    // Pods: watch what a scheduler and a kubelet do to one.
    let start_rv = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut watch = pods
        .watch(&WatchParams::default().timeout(30), &start_rv)
        .await
        .unwrap()
        .boxed();
    let p = pods.create(&pp, &pod("web-1")).await.unwrap();
    let st = p.status.clone().unwrap();
    assert_eq!(st.phase.as_deref(), Some("Pending"));
    assert_eq!(st.qos_class.as_deref(), Some("Guaranteed"));
    assert_eq!(
        p.spec.as_ref().unwrap().service_account_name.as_deref(),
        Some("default")
    );
    let uid = p.metadata.uid.clone().unwrap();
    let binding = json!({"apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": "web-1"}, "target": {"apiVersion": "v1", "kind": "Node", "name": "ext-1"}});
    let s: kube::core::Status = pods
        .create_subresource("binding", "web-1", &pp, &binding)
        .await
        .unwrap();
    assert!(s.is_success(), "{s:?}");
    let e = api_error(
        pods.create_subresource::<_, kube::core::Status>("binding", "web-1", &pp, &binding)
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 409);
    assert_eq!(
        e.message,
        r#"Operation cannot be fulfilled on pods/binding "web-1": pod web-1 is already assigned to node "ext-1""#
    );
    let bound = pods.get("web-1").await.unwrap();
    assert_eq!(
        bound.spec.as_ref().unwrap().node_name.as_deref(),
        Some("ext-1")
    );
    let scheduled = bound.status.as_ref().unwrap().conditions.as_ref().unwrap();
    assert!(
        scheduled
            .iter()
            .any(|c| c.type_ == "PodScheduled" && c.status == "True")
    );
    // The kubelet reports Running.
    pods.patch_status(
        "web-1",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running", "podIP": "10.9.0.5",
            "conditions": [{"type": "Ready", "status": "True"}]}})),
    )
    .await
    .unwrap();
    // A pod cannot be moved by an update.
    let mut moved = pods.get("web-1").await.unwrap();
    moved.spec.as_mut().unwrap().node_name = Some("elsewhere".into());
    let e = api_error(pods.replace("web-1", &pp, &moved).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(
        e.message.starts_with(r#"Pod "web-1" is invalid: spec: Forbidden: pod updates may not change fields other than"#),
        "{}",
        e.message
    );
    // A delete with the wrong uid precondition is a conflict.
    let e = api_error(
        pods.delete(
            "web-1",
            &DeleteParams::default().preconditions(kube::api::Preconditions {
                uid: Some("not-it".into()),
                resource_version: None,
            }),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 409);
    assert_eq!(
        e.message,
        format!(
            r#"Operation cannot be fulfilled on pods "web-1": Precondition failed: UID in precondition: not-it, UID in object meta: {uid}"#
        )
    );
    // A user's delete is graceful: the pod stays, terminating, until its kubelet (not
    // kube-sim's: ext-1 is nobody's) deletes it with grace 0.
    let first = pods
        .delete("web-1", &DeleteParams::default())
        .await
        .unwrap();
    let terminating = first.left().expect("a pod delete returns the pod");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(30));
    assert!(pods.get("web-1").await.is_ok());
    pods.delete(
        "web-1",
        &DeleteParams::default()
            .grace_period(0)
            .preconditions(kube::api::Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
    )
    .await
    .unwrap();
    assert_eq!(api_error(pods.get("web-1").await.unwrap_err()).code, 404);
    let seen = events(&mut watch, 6).await;
    let row = |t: &str, del: bool, node: &str, phase: &str| {
        (
            t.to_string(),
            "web-1".to_string(),
            del,
            node.to_string(),
            phase.to_string(),
        )
    };
    assert_eq!(
        seen,
        [
            row("ADDED", false, "", "Pending"),
            row("MODIFIED", false, "ext-1", "Pending"),
            row("MODIFIED", false, "ext-1", "Running"),
            row("MODIFIED", true, "ext-1", "Running"),
            row("MODIFIED", true, "ext-1", "Running"),
            row("DELETED", true, "ext-1", "Running"),
        ]
    );

    // Namespaces: a pod cannot go into a missing one; a deleted one terminates, its pods go,
    // then it goes.
    let nowhere: Api<Pod> = Api::namespaced(client.clone(), "nope");
    let e = api_error(nowhere.create(&pp, &pod("x")).await.unwrap_err());
    assert_eq!(
        (e.code, e.message.as_str()),
        (404, r#"namespaces "nope" not found"#)
    );
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "scratch"}})).unwrap();
    let ns = namespaces.create(&pp, &ns).await.unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Active"));
    assert_eq!(ns.spec.unwrap().finalizers.unwrap(), ["kubernetes"]);
    let scratch: Api<Pod> = Api::namespaced(client.clone(), "scratch");
    scratch.create(&pp, &pod("tmp")).await.unwrap();
    let gone = namespaces
        .delete("scratch", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(
        gone.left().unwrap().status.unwrap().phase.as_deref(),
        Some("Terminating")
    );
    let e = api_error(scratch.create(&pp, &pod("late")).await.unwrap_err());
    assert_eq!(e.code, 403);
    assert_eq!(
        e.message,
        r#"pods "late" is forbidden: unable to create new content in namespace scratch because it is being terminated"#
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while namespaces.get("scratch").await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "namespace never went"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(api_error(scratch.get("tmp").await.unwrap_err()).code, 404);
    let e = api_error(
        namespaces
            .delete("default", &DeleteParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            403,
            r#"namespaces "default" is forbidden: this namespace may not be deleted"#
        )
    );

    // Leases: the node heartbeat.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "ext-1"},
        "spec": {"holderIdentity": "ext-1", "leaseDurationSeconds": 40,
                 "renewTime": "2025-01-01T00:00:00.000000Z"}}))
    .unwrap();
    let mut lease = leases.create(&pp, &lease).await.unwrap();
    lease.spec.as_mut().unwrap().renew_time =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            "2025-01-01T00:00:10Z".parse().unwrap(),
        ));
    let renewed = leases.replace("ext-1", &pp, &lease).await.unwrap();
    assert_ne!(
        renewed.metadata.resource_version,
        lease.metadata.resource_version
    );
    let e = api_error(leases.replace("ext-1", &pp, &lease).await.unwrap_err());
    assert_eq!(
        e.message,
        r#"Operation cannot be fulfilled on leases.coordination.k8s.io "ext-1": the object has been modified; please apply your changes to the latest version and try again"#
    );

    // Deleting a node answers a Status naming it.
    let done = nodes
        .delete("ext-1", &DeleteParams::default())
        .await
        .unwrap();
    let status = done.right().expect("a node delete returns a Status");
    assert!(status.is_success());
    assert_eq!(status.details.unwrap().uid, created.metadata.uid.unwrap());
    assert!(
        nodes
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn deleting_simulated_pods_is_graceful_and_expired_continue_tokens_carry_one() {
    let sim = KubeSim::start(&["--nodes", "2", "--pods-per-node", "6"]);
    let client = sim.client().await;
    let pods: Api<Pod> = Api::all(client.clone());
    let list = pods.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.clone().unwrap();
    let mut watch = pods
        .watch(&WatchParams::default().timeout(30), &rv)
        .await
        .unwrap()
        .boxed();
    // A simulated pod deleted through the API: kube-sim is its kubelet and finishes it.
    let victim = list
        .items
        .iter()
        .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .unwrap();
    let (ns, name) = (
        victim.metadata.namespace.clone().unwrap(),
        victim.metadata.name.clone().unwrap(),
    );
    let in_ns: Api<Pod> = Api::namespaced(client.clone(), &ns);
    in_ns.delete(&name, &DeleteParams::default()).await.unwrap();
    let seen = events(&mut watch, 3).await;
    let kinds: Vec<(&str, bool)> = seen.iter().map(|e| (e.0.as_str(), e.2)).collect();
    assert_eq!(
        kinds,
        [("MODIFIED", true), ("MODIFIED", true), ("DELETED", true)]
    );
    assert!(seen.iter().all(|e| e.1 == name));
    let expected = sim.expected().await;
    assert!(
        !expected["pods"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == name.as_str()),
        "the model let the pod go"
    );
    // A pod the model deletes (churn) goes the same way.
    assert_eq!(sim.admin("DELETE", "/sim/pods?count=1").await.status, 200);
    let seen = events(&mut watch, 3).await;
    let kinds: Vec<(&str, bool)> = seen.iter().map(|e| (e.0.as_str(), e.2)).collect();
    assert_eq!(
        kinds,
        [("MODIFIED", true), ("MODIFIED", true), ("DELETED", true)]
    );

    // A continue token older than the history: 410 with a fresh token in the Status, which
    // continues at the latest revision.
    let page = sim.admin("GET", "/api/v1/pods?limit=4").await.json();
    let token = page["metadata"]["continue"].as_str().unwrap().to_string();
    let last = &page["items"][3]["metadata"];
    let last_key = (
        last["namespace"].as_str().unwrap().to_string(),
        last["name"].as_str().unwrap().to_string(),
    );
    // A change after the page's revision, then a compaction: the revision is gone.
    assert_eq!(sim.admin("POST", "/sim/pods?count=1").await.status, 200);
    assert_eq!(sim.admin("POST", "/sim/compact").await.status, 200);
    let r = sim
        .admin("GET", &format!("/api/v1/pods?limit=4&continue={token}"))
        .await;
    assert_eq!(r.status, 410, "{}", r.text());
    let status = r.json();
    assert_eq!(status["reason"], "Expired");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with("The provided continue parameter is too old")
    );
    let fresh = status["metadata"]["continue"].as_str().unwrap();
    let rest = sim
        .admin("GET", &format!("/api/v1/pods?continue={fresh}"))
        .await;
    assert_eq!(rest.status, 200, "{}", rest.text());
    let after: Vec<(String, String)> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| (p.metadata.namespace.unwrap(), p.metadata.name.unwrap()))
        .filter(|k| *k > last_key)
        .collect();
    let rest = rest.json();
    let got: Vec<(String, String)> = rest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["metadata"]["namespace"].as_str().unwrap().to_string(),
                p["metadata"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        got, after,
        "the fresh token continues after the first page, at the latest revision"
    );
    assert_eq!(
        rest["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap(),
        sim.admin("GET", "/api/v1/pods?limit=1").await.json()["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    );
}

#[test]
fn kubectl_creates_labels_patches_and_deletes() {
    let sim = KubeSim::start(&["--nodes", "1", "--pods-per-node", "2"]);
    let manifest = sim.path("pod.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: hello\n  namespace: default\n  labels: {app: hello}\nspec:\n  containers:\n  - name: c\n    image: nginx:1.27\n",
    )
    .unwrap();
    let manifest = manifest.to_str().unwrap();
    for kubectl in [KUBECTL_1_27, KUBECTL_1_33] {
        let run = |args: &[&str]| {
            let o = sim.kubectl(kubectl, "kubeconfig", args);
            (
                o.status.success(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        };
        // kube-sim serves no OpenAPI v3, so kubectl cannot validate client-side.
        let (ok, out, err) = run(&["create", "-f", manifest, "--validate=false"]);
        assert!(ok, "{kubectl}: {err}");
        assert_eq!(out.trim(), "pod/hello created");
        let (ok, _, err) = run(&["create", "-f", manifest, "--validate=false"]);
        assert!(!ok);
        assert!(
            err.contains(r#"Error from server (AlreadyExists): error when creating"#)
                && err.contains(r#"pods "hello" already exists"#),
            "{kubectl}: {err}"
        );
        let (ok, out, err) = run(&["label", "pod", "hello", "tier=web"]);
        assert!(ok, "{kubectl}: {err}");
        assert_eq!(out.trim(), "pod/hello labeled");
        let (ok, _, err) = run(&[
            "patch",
            "pod",
            "hello",
            "-p",
            r#"{"spec":{"containers":[{"name":"c","image":"nginx:1.28"}]}}"#,
        ]);
        assert!(ok, "{kubectl}: {err}");
        let (ok, _, err) = run(&[
            "patch",
            "pod",
            "hello",
            "--type=json",
            "-p",
            r#"[{"op":"add","path":"/metadata/annotations","value":{"k":"v"}}]"#,
        ]);
        assert!(ok, "{kubectl}: {err}");
        let (_, out, _) = run(&[
            "get",
            "pod",
            "hello",
            "-o",
            "jsonpath={.metadata.labels.tier} {.spec.containers[0].image} {.metadata.annotations.k} {.status.phase}",
        ]);
        assert_eq!(out, "web nginx:1.28 v Pending", "{kubectl}");
        let (ok, _, err) = run(&[
            "patch",
            "pod",
            "hello",
            "-p",
            r#"{"spec":{"nodeName":"x"}}"#,
        ]);
        assert!(!ok);
        assert!(
            err.contains("is invalid: spec: Forbidden: pod updates may not change fields"),
            "{kubectl}: {err}"
        );
        // Unbound: deleted at once (MODIFIED then DELETED), and `kubectl delete` waits for it.
        let (ok, out, err) = run(&["delete", "pod", "hello"]);
        assert!(ok, "{kubectl}: {err}");
        assert_eq!(out.trim(), r#"pod "hello" deleted"#);
        let (ok, _, err) = run(&["get", "pod", "hello"]);
        assert!(!ok);
        assert!(err.contains(r#"pods "hello" not found"#), "{err}");
        // The viewer may not write.
        let o = sim.kubectl(
            kubectl,
            "viewer.kubeconfig",
            &["create", "-f", manifest, "--validate=false"],
        );
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(r#"pods is forbidden: User "viewer" cannot create resource "pods" in API group "" in the namespace "default""#),
            "{kubectl}: {err}"
        );
    }
}
