//! kube-rs against kube-sim's API server: list/watch, 410 and resume, metadata watches,
//! a reflector through churn, paging, and the review APIs for each identity.

mod support;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;
use support::KubeSim;

#[tokio::test]
async fn list_watch_and_resume_after_410() {
    let sim = KubeSim::start(&[
        "--nodes",
        "3",
        "--pods-per-node",
        "4",
        "--bookmark-interval",
        "1s",
    ]);
    let client = sim.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 3);
    let pods: Api<Pod> = Api::all(client.clone());
    let page = pods.list(&ListParams::default().limit(5)).await.unwrap();
    assert_eq!(page.items.len(), 5);
    assert_eq!(page.metadata.remaining_item_count, Some(7));
    let rest = pods
        .list(&ListParams::default().continue_token(page.metadata.continue_.as_deref().unwrap()))
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 7);
    let rv = page.metadata.resource_version.clone().unwrap();

    // A watch from the list's revision sees a new pod as ADDED, then a BOOKMARK.
    let mut stream = pods
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    assert_eq!(sim.admin("POST", "/sim/pods?count=1").await.status, 200);
    let mut added = None;
    let mut bookmark = false;
    while added.is_none() || !bookmark {
        match tokio::time::timeout(Duration::from_secs(5), stream.try_next())
            .await
            .unwrap()
            .unwrap()
        {
            Some(WatchEvent::Added(p)) => added = p.metadata.name,
            Some(WatchEvent::Bookmark(_)) => bookmark = true,
            // The model may move a new pod along (e.g. Pending to Running).
            Some(WatchEvent::Modified(p)) => assert_eq!(p.metadata.name, added),
            other => panic!("unexpected {other:?}"),
        }
    }
    let name = added.unwrap();
    let pod = pods
        .list(&ListParams::default().fields(&format!("metadata.name={name}")))
        .await
        .unwrap();
    assert_eq!(pod.items.len(), 1);

    // After a compaction the old revision is gone: 410 as an ERROR event.
    assert_eq!(sim.admin("POST", "/sim/compact").await.status, 200);
    let mut stream = pods
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Error(e)) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
            assert!(
                e.message
                    .starts_with(&format!("too old resource version: {rv} (")),
                "{}",
                e.message
            );
        }
        other => panic!("expected 410, got {other:?}"),
    }
    // kube-rs's watcher relists after the 410 and goes on.
    let events = watcher(pods.clone(), watcher::Config::default()).applied_objects();
    let mut events = Box::pin(events);
    let first = tokio::time::timeout(Duration::from_secs(5), events.try_next())
        .await
        .unwrap()
        .unwrap();
    assert!(first.is_some());
}

#[tokio::test]
async fn metadata_watcher_of_running_pods_and_reflector_through_churn() {
    let sim = KubeSim::start(&["--nodes", "4", "--pods-per-node", "5"]);
    let client = sim.client().await;
    let pods: Api<Pod> = Api::all(client.clone());
    let running = pods
        .list(&ListParams::default().fields("status.phase=Running"))
        .await
        .unwrap();
    let expected = sim.expected().await;
    assert_eq!(
        running.items.len(),
        expected["pods"].as_array().unwrap().len(),
        "Running pods = /sim/expected pods"
    );

    // kube-rs's metadata watcher: metadata-only lists and watches
    // (`as=PartialObjectMetadataList` / `as=PartialObjectMetadata`).
    let meta_api: Api<PartialObjectMeta<Pod>> = Api::all(client.clone());
    let meta = watcher(
        meta_api,
        watcher::Config::default().fields("status.phase=Running"),
    );
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, meta).applied_objects();
    let task = tokio::spawn(async move {
        let mut s = Box::pin(stream);
        while let Some(Ok(_)) = s.next().await {}
    });
    reader.wait_until_ready().await.unwrap();
    assert_eq!(reader.len(), running.items.len());

    // Churn: delete 3, create 3, remove a node (its pods go too).
    assert_eq!(sim.admin("DELETE", "/sim/pods?count=3").await.status, 200);
    assert_eq!(sim.admin("POST", "/sim/pods?count=3").await.status, 200);
    assert_eq!(
        sim.admin("DELETE", "/sim/nodes/node-00004").await.status,
        200
    );
    let want = sim.expected().await["pods"].as_array().unwrap().len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while reader.len() != want && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reader.len(), want, "the reflector follows churn");
    let now: Vec<String> = pods
        .list(&ListParams::default().fields("status.phase=Running"))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| p.metadata.name.unwrap())
        .collect();
    let mut cached: Vec<String> = reader
        .state()
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    cached.sort();
    let mut now_sorted = now.clone();
    now_sorted.sort();
    assert_eq!(cached, now_sorted);
    task.abort();
}

#[tokio::test]
async fn reviews_decide_for_each_identity() {
    let sim = KubeSim::start(&["--nodes", "1", "--pods-per-node", "1"]);
    let mb = sim.token("metrics-bridge");
    // TokenReview: each token, and an unknown one.
    for (who, user) in [
        (
            "metrics-bridge",
            "system:serviceaccount:kube-system:metrics-bridge",
        ),
        ("viewer", "viewer"),
        (
            "hpa",
            "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
        ),
    ] {
        let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": sim.token(who)}});
        let r = sim
            .as_token(
                &mb,
                "POST",
                "/apis/authentication.k8s.io/v1/tokenreviews",
                body.to_string().into_bytes(),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        let v = r.json();
        assert_eq!(v["status"]["authenticated"], true);
        assert_eq!(v["status"]["user"]["username"], user);
    }
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": "unknown"}});
    let v = sim
        .as_token(
            &mb,
            "POST",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            body.to_string().into_bytes(),
        )
        .await
        .json();
    assert_eq!(v["status"]["authenticated"], serde_json::Value::Null);
    // SubjectAccessReview decisions.
    let sar = |user: &str, groups: &[&str], attrs: serde_json::Value| {
        let mut spec = json!({"user": user, "groups": groups});
        for (k, v) in attrs.as_object().unwrap() {
            spec[k] = v.clone();
        }
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}).to_string()
    };
    let res = |verb: &str, group: &str, resource: &str, sub: &str| json!({"resourceAttributes": {"verb": verb, "group": group, "resource": resource, "subresource": sub}});
    let sa = "system:serviceaccount:kube-system:metrics-bridge";
    let sa_groups = [
        "system:serviceaccounts",
        "system:serviceaccounts:kube-system",
        "system:authenticated",
    ];
    let cases = [
        (
            sar(
                "kubernetes-admin",
                &["system:masters"],
                res("delete", "", "nodes", ""),
            ),
            true,
        ),
        (
            sar(
                "viewer",
                &["system:authenticated"],
                res("list", "metrics.k8s.io", "pods", ""),
            ),
            true,
        ),
        (
            sar(
                "viewer",
                &["system:authenticated"],
                res("list", "metrics.k8s.io", "nodes", ""),
            ),
            false,
        ),
        (
            sar(sa, &sa_groups, res("get", "", "nodes", "metrics")),
            true,
        ),
        (sar(sa, &sa_groups, res("get", "", "nodes", "proxy")), false),
        (sar(sa, &sa_groups, res("watch", "", "pods", "")), true),
        (
            sar(
                "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
                &sa_groups,
                res("list", "metrics.k8s.io", "pods", ""),
            ),
            true,
        ),
        (
            sar(
                "system:kube-aggregator",
                &["system:masters"],
                res("get", "metrics.k8s.io", "pods", ""),
            ),
            true,
        ),
        (
            sar(
                "system:anonymous",
                &["system:unauthenticated"],
                json!({"nonResourceAttributes": {"verb": "get", "path": "/healthz"}}),
            ),
            true,
        ),
        (
            sar(
                "system:anonymous",
                &["system:unauthenticated"],
                json!({"nonResourceAttributes": {"verb": "get", "path": "/api"}}),
            ),
            false,
        ),
    ];
    for (body, allowed) in cases {
        let r = sim
            .as_token(
                &mb,
                "POST",
                "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                body.clone().into_bytes(),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        assert_eq!(r.json()["status"]["allowed"], allowed, "{body}");
    }
    // The viewer may not create reviews; no credentials at all is anonymous and forbidden.
    let r = sim
        .as_token(
            &sim.token("viewer"),
            "POST",
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json()["message"],
        r#"subjectaccessreviews.authorization.k8s.io is forbidden: User "viewer" cannot create resource "subjectaccessreviews" in API group "authorization.k8s.io" at the cluster scope"#
    );
    let r = sim
        .as_token("bogus", "GET", "/api/v1/nodes", Vec::new())
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["message"], "Unauthorized");
    let anon = support::https(
        "GET",
        &format!("{}/api", sim.url),
        Some(&sim.read("ca.crt")),
        support::Cred::None,
        &[],
        Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(anon.status, 403);
    assert_eq!(
        anon.json()["message"],
        r#"forbidden: User "system:anonymous" cannot get path "/api""#
    );
    // The authentication ConfigMap, readable by metrics-bridge, as kube-apiserver fills it.
    let cm = sim
        .as_token(
            &mb,
            "GET",
            "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication",
            Vec::new(),
        )
        .await
        .json();
    assert_eq!(
        cm["data"]["requestheader-allowed-names"],
        r#"["front-proxy-client"]"#
    );
    assert_eq!(
        cm["data"]["requestheader-username-headers"],
        r#"["X-Remote-User"]"#
    );
    assert_eq!(cm["data"]["client-ca-file"], sim.read("client-ca.crt"));
    assert_eq!(
        cm["data"]["requestheader-client-ca-file"],
        sim.read("front-proxy-ca.crt")
    );
    // A rotation changes it (and the files) and is seen as a MODIFIED event.
    let before = cm["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        sim.admin("POST", "/sim/rotate-ca?ca=front-proxy")
            .await
            .status,
        200
    );
    let cm2 = sim
        .as_token(
            &mb,
            "GET",
            "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication",
            Vec::new(),
        )
        .await
        .json();
    assert_ne!(cm2["metadata"]["resourceVersion"], before.as_str());
    assert_ne!(
        cm2["data"]["requestheader-client-ca-file"],
        cm["data"]["requestheader-client-ca-file"]
    );
    assert_eq!(
        cm2["data"]["requestheader-client-ca-file"],
        sim.read("front-proxy-ca.crt")
    );
}

#[test]
fn more_nodes_than_file_descriptors_fail_early_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    // A hard limit of 600 for 1,000 listeners: kube-sim must say so before building anything.
    let script = format!(
        "ulimit -n 600 && exec {} --dir {} --apiserver-addr 127.0.0.1:0 --kubelet-port {} --nodes 1000 --pods-per-node 1",
        env!("CARGO_BIN_EXE_kube-sim"),
        dir.path().display(),
        support::kubelet_port()
    );
    let mut child = std::process::Command::new("bash")
        .args(["-c", &script])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            // Only a process allowed to raise its hard limit gets here: nothing to check.
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("kube-sim raised RLIMIT_NOFILE itself (privileged): skipped");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.trim(),
        "kube-sim: --nodes 1000 needs a listening socket per kubelet, more than RLIMIT_NOFILE allows: the limit is 600 (hard 600, which only a privileged process can raise); use fewer nodes or raise the hard limit (ulimit -Hn)"
    );
}
