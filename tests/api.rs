//! The metrics API through its router, as kubectl, the HPA and kube-apiserver call it.

#[path = "support/api_fixture.rs"]
mod fixture;
mod support;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use prost::Message as _;
use serde_json::{Value, json};
use tower::ServiceExt;

use fixture::small_cluster;
use support::expect::protoc_decode_raw;

const HPA_ACCEPT: &str = "application/vnd.kubernetes.protobuf, */*";
const KUBECTL_TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
const APISERVER_DISCOVERY: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn call(app: &Router, method: Method, uri: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

async fn get(app: &Router, uri: &str) -> Reply {
    call(app, Method::GET, uri, &[]).await
}

async fn get_accept(app: &Router, uri: &str, accept: &str) -> Reply {
    call(app, Method::GET, uri, &[("accept", accept)]).await
}

/// The names of a list's items, in order.
fn item_names(r: &Reply) -> Vec<String> {
    r.json()["items"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {}", r.text()))
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn app() -> Router {
    fixture::app(small_cluster())
}

/// Replaces every `creationTimestamp` (the request time) after checking it is now.
fn scrub_created(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                if k == "creationTimestamp" && val.is_string() {
                    let s = val.as_str().unwrap();
                    let year: i32 = s[..4].parse().unwrap();
                    assert!(year >= 2024, "creationTimestamp is the request time: {s}");
                    assert!(s.ends_with('Z') && s.len() == 20, "{s}");
                    *val = json!("NOW");
                } else {
                    scrub_created(val);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(scrub_created),
        _ => {}
    }
}

fn scrubbed(r: &Reply) -> Value {
    let mut v = r.json();
    scrub_created(&mut v);
    v
}

fn node_item(name: &str, zone: &str, cpu: &str, memory: &str) -> Value {
    json!({
        "metadata": {
            "name": name,
            "creationTimestamp": "NOW",
            "labels": {"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": zone}
        },
        "timestamp": "2021-10-03T09:37:04Z",
        "window": "15s",
        "usage": {"cpu": cpu, "memory": memory}
    })
}

fn node1_item() -> Value {
    node_item("node-1", "a", "1", "1578392Ki")
}

fn node2_item() -> Value {
    node_item("node-2", "b", "250m", "50Mi")
}

fn web1_item() -> Value {
    json!({
        "metadata": {
            "name": "web-1",
            "namespace": "default",
            "creationTimestamp": "NOW",
            "labels": {"app": "web", "tier": "frontend"}
        },
        "timestamp": "2021-10-03T09:37:04Z",
        "window": "15s",
        "containers": [
            {"name": "app", "usage": {"cpu": "250m", "memory": "12240Ki"}},
            {"name": "sidecar", "usage": {"cpu": "10m", "memory": "50Mi"}}
        ]
    })
}

fn web2_item() -> Value {
    json!({
        "metadata": {"name": "web-2", "namespace": "default", "creationTimestamp": "NOW", "labels": {"app": "web"}},
        "timestamp": "2021-10-03T09:37:04Z",
        "window": "15s",
        "containers": [{"name": "app", "usage": {"cpu": "1500m", "memory": "1Gi"}}]
    })
}

fn coredns_item() -> Value {
    json!({
        "metadata": {"name": "coredns-1", "namespace": "kube-system", "creationTimestamp": "NOW", "labels": {"k8s-app": "kube-dns"}},
        "timestamp": "2021-10-03T09:37:04Z",
        "window": "15s",
        "containers": [{"name": "coredns", "usage": {"cpu": "4710169n", "memory": "12240Ki"}}]
    })
}

fn typed(kind: &str, version: &str, mut item: Value) -> Value {
    let m = item.as_object_mut().unwrap();
    let mut out = serde_json::Map::new();
    out.insert("kind".into(), json!(kind));
    out.insert(
        "apiVersion".into(),
        json!(format!("metrics.k8s.io/{version}")),
    );
    out.append(m);
    Value::Object(out)
}

fn list(kind: &str, version: &str, items: Vec<Value>) -> Value {
    json!({
        "kind": kind,
        "apiVersion": format!("metrics.k8s.io/{version}"),
        "metadata": {},
        "items": items
    })
}

#[tokio::test]
async fn node_list_is_byte_exact_json() {
    let app = app();
    let r = get(&app, "/apis/metrics.k8s.io/v1beta1/nodes").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type(), "application/json");
    let text = r.text();
    // Byte-level: Go's field order, no spaces, trailing newline.
    let created = &text[text.find("\"creationTimestamp\":\"").unwrap() + 21..][..20];
    let want = format!(
        "{{\"kind\":\"NodeMetricsList\",\"apiVersion\":\"metrics.k8s.io/v1beta1\",\"metadata\":{{}},\"items\":[\
{{\"metadata\":{{\"name\":\"node-1\",\"creationTimestamp\":\"{created}\",\"labels\":{{\"kubernetes.io/hostname\":\"node-1\",\"topology.kubernetes.io/zone\":\"a\"}}}},\"timestamp\":\"2021-10-03T09:37:04Z\",\"window\":\"15s\",\"usage\":{{\"cpu\":\"1\",\"memory\":\"1578392Ki\"}}}},\
{{\"metadata\":{{\"name\":\"node-2\",\"creationTimestamp\":\"{created}\",\"labels\":{{\"kubernetes.io/hostname\":\"node-2\",\"topology.kubernetes.io/zone\":\"b\"}}}},\"timestamp\":\"2021-10-03T09:37:04Z\",\"window\":\"15s\",\"usage\":{{\"cpu\":\"250m\",\"memory\":\"50Mi\"}}}}]}}\n"
    );
    assert_eq!(text, want);
}

#[tokio::test]
async fn every_resource_path_in_both_versions() {
    let app = app();
    for v in ["v1beta1", "v1"] {
        let base = format!("/apis/metrics.k8s.io/{v}");
        let r = get(&app, &format!("{base}/nodes")).await;
        assert_eq!(
            scrubbed(&r),
            list("NodeMetricsList", v, vec![node1_item(), node2_item()])
        );
        let r = get(&app, &format!("{base}/nodes/node-2")).await;
        assert_eq!(r.status, 200);
        assert_eq!(scrubbed(&r), typed("NodeMetrics", v, node2_item()));
        assert!(r.text().ends_with("}\n"));

        let r = get(&app, &format!("{base}/pods")).await;
        assert_eq!(
            scrubbed(&r),
            list(
                "PodMetricsList",
                v,
                vec![web1_item(), web2_item(), coredns_item()]
            )
        );
        let r = get(&app, &format!("{base}/namespaces/default/pods")).await;
        assert_eq!(
            scrubbed(&r),
            list("PodMetricsList", v, vec![web1_item(), web2_item()])
        );
        let r = get(
            &app,
            &format!("{base}/namespaces/kube-system/pods/coredns-1"),
        )
        .await;
        assert_eq!(scrubbed(&r), typed("PodMetrics", v, coredns_item()));
        let r = get(&app, &format!("{base}/namespaces/empty/pods")).await;
        assert_eq!(
            r.text(),
            format!(
                "{{\"kind\":\"PodMetricsList\",\"apiVersion\":\"metrics.k8s.io/{v}\",\"metadata\":{{}},\"items\":[]}}\n"
            )
        );
    }
}

#[tokio::test]
async fn label_selectors_full_syntax() {
    let app = app();
    let pods = "/apis/metrics.k8s.io/v1beta1/pods?labelSelector=";
    let cases: &[(&str, &[&str])] = &[
        ("app%3Dweb", &["web-1", "web-2"]),
        ("app%3D%3Dweb", &["web-1", "web-2"]),
        ("app!%3Dweb", &["coredns-1"]),
        ("app+in+(web,db)", &["web-1", "web-2"]),
        ("app+notin+(web)", &["coredns-1"]),
        ("tier", &["web-1"]),
        ("!tier", &["web-2", "coredns-1"]),
        ("app%3Dweb,!tier", &["web-2"]),
        ("k8s-app%3Dkube-dns", &["coredns-1"]),
        ("app%3Dnothing", &[]),
    ];
    for (sel, want) in cases {
        let r = get(&app, &format!("{pods}{sel}")).await;
        assert_eq!(r.status, 200, "{sel}: {}", r.text());
        assert_eq!(item_names(&r), *want, "{sel}");
    }
    // The HPA's query: one namespace and a selector.
    let r = get(
        &app,
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods?labelSelector=app%3Dweb",
    )
    .await;
    assert_eq!(item_names(&r), ["web-1", "web-2"]);
    let r = get(
        &app,
        "/apis/metrics.k8s.io/v1/nodes?labelSelector=topology.kubernetes.io/zone%3Db",
    )
    .await;
    assert_eq!(item_names(&r), ["node-2"]);
}

#[tokio::test]
async fn field_selectors() {
    let app = app();
    let b = "/apis/metrics.k8s.io/v1beta1";
    let cases: &[(&str, &[&str])] = &[
        ("pods?fieldSelector=metadata.name%3Dweb-2", &["web-2"]),
        (
            "pods?fieldSelector=metadata.namespace%3Dkube-system",
            &["coredns-1"],
        ),
        (
            "pods?fieldSelector=metadata.namespace!%3Ddefault",
            &["coredns-1"],
        ),
        (
            "pods?fieldSelector=metadata.namespace%3Ddefault,metadata.name%3Dweb-1",
            &["web-1"],
        ),
        (
            "namespaces/kube-system/pods?fieldSelector=metadata.name%3Dweb-1",
            &[],
        ),
        (
            "pods?fieldSelector=metadata.name%3Dweb-1&labelSelector=app%3Ddb",
            &[],
        ),
        ("nodes?fieldSelector=metadata.name%3Dnode-1", &["node-1"]),
        ("nodes?fieldSelector=metadata.name!%3Dnode-1", &["node-2"]),
        // Nodes have no namespace: only the empty value matches.
        ("nodes?fieldSelector=metadata.namespace%3Ddefault", &[]),
        (
            "nodes?fieldSelector=metadata.namespace%3D",
            &["node-1", "node-2"],
        ),
    ];
    for (path, want) in cases {
        let r = get(&app, &format!("{b}/{path}")).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(item_names(&r), *want, "{path}");
    }
}

/// A `Status` body; `details` omitted when `None`.
fn status(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut v = json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":message,"reason":reason,"code":code});
    if let Some(d) = details {
        v["details"] = d;
    }
    v
}

#[tokio::test]
async fn errors_are_exact_status_bodies() {
    let app = app();
    let b = "/apis/metrics.k8s.io/v1beta1";
    let cases: Vec<(Method, String, &str, u16, Value)> = vec![
        (
            Method::GET,
            format!("{b}/nodes/nope"),
            "",
            404,
            status(
                404,
                "NotFound",
                "node \"nope\" not found",
                Some(json!({"name":"nope","kind":"node"})),
            ),
        ),
        (
            Method::GET,
            format!("{b}/nodes/node-3"),
            "",
            404,
            status(
                404,
                "NotFound",
                "nodemetrics.metrics.k8s.io \"node-3\" not found",
                Some(json!({"name":"node-3","group":"metrics.k8s.io","kind":"nodemetrics"})),
            ),
        ),
        (
            Method::GET,
            format!("{b}/namespaces/default/pods/nope"),
            "",
            404,
            status(
                404,
                "NotFound",
                "pods \"nope\" not found",
                Some(json!({"name":"nope","kind":"pods"})),
            ),
        ),
        (
            Method::GET,
            format!("{b}/namespaces/default/pods/db-0"),
            "",
            404,
            status(
                404,
                "NotFound",
                "podmetrics.metrics.k8s.io \"default/db-0\" not found",
                Some(json!({"name":"default/db-0","group":"metrics.k8s.io","kind":"podmetrics"})),
            ),
        ),
        (
            // In the store, but not a Running pod of the cluster.
            Method::GET,
            format!("{b}/namespaces/default/pods/gone"),
            "",
            404,
            status(
                404,
                "NotFound",
                "pods \"gone\" not found",
                Some(json!({"name":"gone","kind":"pods"})),
            ),
        ),
        (
            Method::GET,
            format!("{b}/pods?labelSelector=a+b"),
            "",
            400,
            status(
                400,
                "BadRequest",
                "found 'b', expected: in, notin, =, ==, !=, gt, lt",
                None,
            ),
        ),
        (
            Method::GET,
            format!("{b}/pods?fieldSelector=spec.nodeName%3Dnode-1"),
            "",
            400,
            status(
                400,
                "BadRequest",
                "\"spec.nodeName\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\"",
                None,
            ),
        ),
        (
            Method::GET,
            format!("{b}/nodes?watch=true"),
            "",
            405,
            status(
                405,
                "MethodNotAllowed",
                "watch is not supported on resources of kind \"nodes.metrics.k8s.io\"",
                Some(json!({"group":"metrics.k8s.io","kind":"nodes"})),
            ),
        ),
        (
            Method::GET,
            format!("{b}/namespaces/default/pods?watch=1"),
            "",
            405,
            status(
                405,
                "MethodNotAllowed",
                "watch is not supported on resources of kind \"pods.metrics.k8s.io\"",
                Some(json!({"group":"metrics.k8s.io","kind":"pods"})),
            ),
        ),
        (
            Method::GET,
            format!("{b}/nodes"),
            "text/plain",
            406,
            status(406, "NotAcceptable", "406: Not Acceptable", Some(json!({}))),
        ),
        (
            Method::GET,
            format!("{b}/nodes"),
            "application/json;as=Unknown;g=x;v=y",
            406,
            status(
                406,
                "NotAcceptable",
                "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf",
                None,
            ),
        ),
        (
            Method::GET,
            format!("{b}/nodes?limit=ten"),
            "",
            400,
            status(
                400,
                "BadRequest",
                "strconv.ParseInt: parsing \"ten\": invalid syntax",
                None,
            ),
        ),
        (
            Method::GET,
            format!("{b}/nodes?includeObject=Everything"),
            KUBECTL_TABLE,
            400,
            status(
                400,
                "BadRequest",
                "Unable to convert to Table as requested: includeObject: Unsupported value: \"Everything\": supported values: \"\", \"Metadata\", \"None\", \"Object\"",
                None,
            ),
        ),
    ];
    let method_not_allowed = status(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        Some(json!({})),
    );
    let mut all = cases;
    // Paths no route serves: go-restful's 404.
    let route_not_found = status(
        404,
        "NotFound",
        "the server could not find the requested resource",
        Some(json!({})),
    );
    for path in [
        format!("{b}/watch/nodes"),
        format!("{b}/pods/web-1"),
        format!("{b}/nodes/node-1/status"),
        format!("{b}/namespaces/default"),
        "/apis/metrics.k8s.io/v2/nodes".into(),
    ] {
        all.push((Method::GET, path, "", 404, route_not_found.clone()));
    }
    for m in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        for path in [
            format!("{b}/nodes"),
            format!("{b}/nodes/node-1"),
            format!("{b}/namespaces/default/pods/web-1"),
            format!("{b}/pods"),
            b.to_string(),
            "/apis".into(),
            "/apis/metrics.k8s.io".into(),
        ] {
            all.push((m.clone(), path, "", 405, method_not_allowed.clone()));
        }
    }
    for (method, path, accept, code, want) in all {
        let headers: Vec<(&str, &str)> = if accept.is_empty() {
            vec![]
        } else {
            vec![("accept", accept)]
        };
        let r = call(&app, method.clone(), &path, &headers).await;
        assert_eq!(r.status.as_u16(), code, "{method} {path}: {}", r.text());
        assert_eq!(r.content_type(), "application/json", "{method} {path}");
        assert_eq!(r.json(), want, "{method} {path}");
    }
}

#[tokio::test]
async fn tables_for_kubectl_get() {
    let app = app();
    let r = get_accept(&app, "/apis/metrics.k8s.io/v1beta1/pods", KUBECTL_TABLE).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type(), "application/json");
    let columns = json!([
        {"name":"Name","type":"string","format":"name","description":"Name of the resource","priority":0},
        {"name":"cpu","type":"string","format":"quantity","description":"","priority":0},
        {"name":"memory","type":"string","format":"quantity","description":"","priority":0},
        {"name":"Window","type":"string","format":"duration","description":"","priority":0}
    ]);
    let partial = |name: &str, ns: &str, labels: Value| json!({"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{"name":name,"namespace":ns,"creationTimestamp":"NOW","labels":labels}});
    assert_eq!(
        scrubbed(&r),
        json!({
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {},
            "columnDefinitions": columns,
            "rows": [
                // A pod's cells are its containers' sums: 250m + 10m, 12240Ki + 50Mi.
                {"cells": ["web-1", "260m", "63440Ki", "15s"], "object": partial("web-1", "default", json!({"app":"web","tier":"frontend"}))},
                {"cells": ["web-2", "1500m", "1Gi", "15s"], "object": partial("web-2", "default", json!({"app":"web"}))},
                {"cells": ["coredns-1", "4710169n", "12240Ki", "15s"], "object": partial("coredns-1", "kube-system", json!({"k8s-app":"kube-dns"}))}
            ]
        })
    );

    // v1beta1 Table, includeObject=None, and a single object.
    let r = get_accept(
        &app,
        "/apis/metrics.k8s.io/v1/nodes/node-1?includeObject=None",
        "application/json;as=Table;v=v1beta1;g=meta.k8s.io",
    )
    .await;
    assert_eq!(
        r.json(),
        json!({"kind":"Table","apiVersion":"meta.k8s.io/v1beta1","metadata":{},"columnDefinitions":columns,"rows":[{"cells":["node-1","1","1578392Ki","15s"],"object":null}]})
    );
    // includeObject=Object carries the whole typed object.
    let r = get_accept(
        &app,
        "/apis/metrics.k8s.io/v1/nodes?includeObject=Object&labelSelector=topology.kubernetes.io/zone%3Db",
        KUBECTL_TABLE,
    )
    .await;
    assert_eq!(
        scrubbed(&r)["rows"][0]["object"],
        typed("NodeMetrics", "v1", node2_item())
    );
}

#[tokio::test]
async fn partial_object_metadata() {
    let app = app();
    let r = get_accept(
        &app,
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods",
        "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
    )
    .await;
    assert_eq!(
        scrubbed(&r),
        json!({"kind":"PartialObjectMetadataList","apiVersion":"meta.k8s.io/v1","metadata":{},"items":[
            {"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{"name":"web-1","namespace":"default","creationTimestamp":"NOW","labels":{"app":"web","tier":"frontend"}}},
            {"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{"name":"web-2","namespace":"default","creationTimestamp":"NOW","labels":{"app":"web"}}}
        ]})
    );
    let r = get_accept(
        &app,
        "/apis/metrics.k8s.io/v1beta1/nodes",
        "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
    )
    .await;
    assert_eq!(r.status, 406);
    assert_eq!(
        r.json()["message"],
        "you requested PartialObjectMetadata, but the requested object is a list (*metrics.NodeMetricsList)"
    );
    // Protobuf, decoded with k8s-pb.
    let r = get_accept(
        &app,
        "/apis/metrics.k8s.io/v1beta1/nodes/node-1",
        "application/vnd.kubernetes.protobuf;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
    )
    .await;
    let (api_version, kind, raw) = unwrap_envelope(&r.body);
    assert_eq!(
        (api_version.as_str(), kind.as_str()),
        ("meta.k8s.io/v1", "PartialObjectMetadata")
    );
    let pom =
        k8s_pb::apimachinery::pkg::apis::meta::v1::PartialObjectMetadata::decode(raw.as_slice())
            .unwrap();
    let meta = pom.metadata.unwrap();
    assert_eq!(meta.name.as_deref(), Some("node-1"));
    assert_eq!(
        meta.labels
            .get("topology.kubernetes.io/zone")
            .map(String::as_str),
        Some("a")
    );
}

fn unwrap_envelope(body: &[u8]) -> (String, String, Vec<u8>) {
    assert_eq!(&body[..4], b"k8s\0", "protobuf magic");
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(&body[4..]).unwrap();
    let tm = unknown.type_meta.unwrap();
    (
        tm.api_version.unwrap(),
        tm.kind.unwrap(),
        unknown.raw.unwrap(),
    )
}

#[tokio::test]
async fn protobuf_for_the_hpa() {
    use k8s_pb::metrics::pkg::apis::metrics::v1beta1 as m;
    let app = app();
    let r = get_accept(
        &app,
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods?labelSelector=app%3Dweb",
        HPA_ACCEPT,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type(), "application/vnd.kubernetes.protobuf");
    let (api_version, kind, raw) = unwrap_envelope(&r.body);
    assert_eq!(api_version, "metrics.k8s.io/v1beta1");
    assert_eq!(kind, "PodMetricsList");
    let list = m::PodMetricsList::decode(raw.as_slice()).unwrap();
    assert_eq!(list.items.len(), 2);
    let web1 = &list.items[0];
    let meta = web1.metadata.as_ref().unwrap();
    assert_eq!(meta.name.as_deref(), Some("web-1"));
    assert_eq!(meta.namespace.as_deref(), Some("default"));
    assert_eq!(
        meta.labels.get("tier").map(String::as_str),
        Some("frontend")
    );
    let created = meta.creation_timestamp.as_ref().unwrap();
    assert!(created.seconds.unwrap() > 1_700_000_000);
    assert_eq!(created.nanos, Some(0), "metav1.Time carries seconds only");
    assert_eq!(
        web1.timestamp.as_ref().unwrap().seconds,
        Some(1_633_253_824)
    );
    assert_eq!(web1.window.as_ref().unwrap().duration, Some(15_000_000_000));
    let quantities: Vec<(String, String, String)> = web1
        .containers
        .iter()
        .map(|c| {
            (
                c.name.clone().unwrap(),
                c.usage["cpu"].string.clone().unwrap(),
                c.usage["memory"].string.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        quantities,
        [
            ("app".into(), "250m".into(), "12240Ki".into()),
            ("sidecar".into(), "10m".into(), "50Mi".into())
        ]
    );
    // Re-encoding the decoded message with prost gives the same bytes: every field we write
    // is one prost knows, in field order.
    assert_eq!(list.encode_to_vec(), raw);

    // v1 objects carry the v1 group version in the envelope; the message is the same shape.
    let r = get_accept(&app, "/apis/metrics.k8s.io/v1/nodes/node-1", HPA_ACCEPT).await;
    let (api_version, kind, raw) = unwrap_envelope(&r.body);
    assert_eq!(
        (api_version.as_str(), kind.as_str()),
        ("metrics.k8s.io/v1", "NodeMetrics")
    );
    let node = m::NodeMetrics::decode(raw.as_slice()).unwrap();
    assert_eq!(node.usage["cpu"].string.as_deref(), Some("1"));
    assert_eq!(node.usage["memory"].string.as_deref(), Some("1578392Ki"));
    let r = get_accept(&app, "/apis/metrics.k8s.io/v1beta1/nodes", HPA_ACCEPT).await;
    let (_, kind, raw) = unwrap_envelope(&r.body);
    assert_eq!(kind, "NodeMetricsList");
    let nodes = m::NodeMetricsList::decode(raw.as_slice()).unwrap();
    assert_eq!(
        nodes
            .items
            .iter()
            .map(|n| n.metadata.as_ref().unwrap().name.clone().unwrap())
            .collect::<Vec<_>>(),
        ["node-1", "node-2"]
    );
}

#[tokio::test]
async fn protobuf_decodes_with_protoc() {
    let app = app();
    let r = get_accept(
        &app,
        "/apis/metrics.k8s.io/v1beta1/namespaces/kube-system/pods/coredns-1",
        HPA_ACCEPT,
    )
    .await;
    let (_, _, raw) = unwrap_envelope(&r.body);
    let decoded = protoc_decode_raw(&raw);
    // Field 1 ObjectMeta (name 1, namespace 3, labels 11), 2 Time, 3 Duration, 4 containers.
    for want in [
        "1 {\n  1: \"coredns-1\"",
        "  3: \"kube-system\"",
        "  11 {\n    1: \"k8s-app\"\n    2: \"kube-dns\"\n  }",
        "2 {\n  1: 1633253824\n  2: 0\n}",
        "3 {\n  1: 15000000000\n}",
        "4 {\n  1: \"coredns\"\n  2 {\n    1: \"cpu\"\n    2 {\n      1: \"4710169n\"\n    }\n  }\n  2 {\n    1: \"memory\"\n    2 {\n      1: \"12240Ki\"\n    }\n  }\n}",
    ] {
        assert!(decoded.contains(want), "missing {want:?} in:\n{decoded}");
    }
    // The envelope itself (protoc shows `raw` as the message it is).
    let envelope = protoc_decode_raw(&r.body[4..]);
    assert!(
        envelope.starts_with("1 {\n  1: \"metrics.k8s.io/v1beta1\"\n  2: \"PodMetrics\"\n}\n2 {\n  1 {\n    1: \"coredns-1\""),
        "{envelope}"
    );
    assert!(envelope.ends_with("3: \"\"\n4: \"\"\n"), "{envelope}");
}

fn aggregated_doc(api_version: &str) -> Value {
    let resources = json!([
        {"resource":"nodes","responseKind":{"group":"","version":"","kind":"NodeMetrics"},"scope":"Cluster","singularResource":"node","verbs":["get","list"]},
        {"resource":"pods","responseKind":{"group":"","version":"","kind":"PodMetrics"},"scope":"Namespaced","singularResource":"","verbs":["get","list"]}
    ]);
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": api_version,
        "metadata": {},
        "items": [{
            "metadata": {"name": "metrics.k8s.io", "creationTimestamp": null},
            "versions": [
                {"version": "v1beta1", "resources": resources, "freshness": "Current"},
                {"version": "v1", "resources": resources, "freshness": "Current"}
            ]
        }]
    })
}

#[tokio::test]
async fn aggregated_discovery_as_kube_apiserver_asks() {
    let app = app();
    let r = get_accept(&app, "/apis", APISERVER_DISCOVERY).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.content_type(),
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    );
    assert_eq!(r.json(), aggregated_doc("apidiscovery.k8s.io/v2"));
    let etag = r
        .headers
        .get(header::ETAG)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'));
    assert_eq!(r.headers.get(header::VARY).unwrap(), "Accept");

    // Older kube-apiservers ask for v2beta1 only.
    let r = get_accept(
        &app,
        "/apis",
        "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList",
    )
    .await;
    assert_eq!(
        r.content_type(),
        "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
    );
    assert_eq!(r.json(), aggregated_doc("apidiscovery.k8s.io/v2beta1"));

    // A cached copy is confirmed with 304.
    let r = call(
        &app,
        Method::GET,
        "/apis",
        &[("accept", APISERVER_DISCOVERY), ("if-none-match", &etag)],
    )
    .await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());

    // Protobuf aggregated discovery decodes with k8s-pb.
    let r = get_accept(
        &app,
        "/apis",
        "application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
    )
    .await;
    let (api_version, kind, raw) = unwrap_envelope(&r.body);
    assert_eq!(
        (api_version.as_str(), kind.as_str()),
        ("apidiscovery.k8s.io/v2", "APIGroupDiscoveryList")
    );
    let doc = k8s_pb::api::apidiscovery::v2::APIGroupDiscoveryList::decode(raw.as_slice()).unwrap();
    let versions: Vec<_> = doc.items[0]
        .versions
        .iter()
        .map(|v| v.version.clone().unwrap())
        .collect();
    assert_eq!(versions, ["v1beta1", "v1"]);
}

fn group_versions() -> Value {
    json!([
        {"groupVersion":"metrics.k8s.io/v1beta1","version":"v1beta1"},
        {"groupVersion":"metrics.k8s.io/v1","version":"v1"}
    ])
}

#[tokio::test]
async fn legacy_discovery_documents() {
    let app = app();
    let preferred = json!({"groupVersion":"metrics.k8s.io/v1beta1","version":"v1beta1"});
    for accept in ["", "application/json", "*/*"] {
        let r = get_accept(&app, "/apis", accept).await;
        assert_eq!(r.status, 200, "{accept}");
        assert_eq!(r.content_type(), "application/json");
        assert_eq!(
            r.json(),
            json!({"kind":"APIGroupList","apiVersion":"v1","groups":[{"name":"metrics.k8s.io","versions":group_versions(),"preferredVersion":preferred}]})
        );
    }
    let r = get(&app, "/apis/metrics.k8s.io").await;
    assert_eq!(
        r.json(),
        json!({"kind":"APIGroup","apiVersion":"v1","name":"metrics.k8s.io","versions":group_versions(),"preferredVersion":preferred})
    );
    for v in ["v1beta1", "v1"] {
        let r = get(&app, &format!("/apis/metrics.k8s.io/{v}")).await;
        assert_eq!(
            r.json(),
            json!({"kind":"APIResourceList","apiVersion":"v1","groupVersion":format!("metrics.k8s.io/{v}"),"resources":[
                {"name":"nodes","singularName":"node","namespaced":false,"kind":"NodeMetrics","verbs":["get","list"]},
                {"name":"pods","singularName":"","namespaced":true,"kind":"PodMetrics","verbs":["get","list"]}
            ]})
        );
        let r = get_accept(
            &app,
            &format!("/apis/metrics.k8s.io/{v}"),
            "application/vnd.kubernetes.protobuf",
        )
        .await;
        let (_, kind, raw) = unwrap_envelope(&r.body);
        assert_eq!(kind, "APIResourceList");
        let list =
            k8s_pb::apimachinery::pkg::apis::meta::v1::APIResourceList::decode(raw.as_slice())
                .unwrap();
        assert_eq!(list.resources[1].name.as_deref(), Some("pods"));
        assert_eq!(list.resources[1].namespaced, Some(true));
    }
    // 406 when nothing in Accept can be met, in both of apiserver's wordings.
    let r = get_accept(&app, "/apis", "text/html").await;
    assert_eq!(
        (r.status.as_u16(), r.json()["message"].clone()),
        (406, json!("406: Not Acceptable"))
    );
    let r = get_accept(
        &app,
        "/apis",
        "application/json;as=Table;g=meta.k8s.io;v=v1",
    )
    .await;
    assert_eq!(r.status, 406);
    assert_eq!(
        r.json()["message"],
        "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf"
    );
}

#[tokio::test]
async fn version_and_openapi() {
    let app = app();
    let r = get(&app, "/version").await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["gitVersion"], format!("v{}", env!("CARGO_PKG_VERSION")));
    assert!(
        r.text().starts_with("{\n  \"major\": "),
        "indented as Go writes it"
    );

    let r = get(&app, "/openapi/v2").await;
    assert_eq!(r.status, 200);
    let spec = r.json();
    assert_eq!(spec["swagger"], "2.0");
    let defs = spec["definitions"].as_object().unwrap();
    for v in ["v1beta1", "v1"] {
        for kind in [
            "NodeMetrics",
            "NodeMetricsList",
            "PodMetrics",
            "PodMetricsList",
        ] {
            let d = &defs[&format!("io.k8s.metrics.pkg.apis.metrics.{v}.{kind}")];
            assert_eq!(
                d["x-kubernetes-group-version-kind"][0],
                json!({"group":"metrics.k8s.io","version":v,"kind":kind})
            );
        }
    }
    // Every $ref resolves inside the document.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&spec, &mut all);
    assert!(all.len() > 20);
    for r in all {
        let name = r.strip_prefix("#/definitions/").unwrap();
        assert!(defs.contains_key(name), "dangling {r}");
    }
    assert_eq!(
        spec["paths"]["/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods"]["get"]["x-kubernetes-action"],
        "list"
    );
}

#[tokio::test]
async fn yaml_and_pretty_json() {
    let app = app();
    let r = get_accept(
        &app,
        "/apis/metrics.k8s.io/v1beta1/nodes/node-1",
        "application/yaml",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type(), "application/yaml");
    // Python's YAML parser (an independent reader) gets the same object as the JSON.
    let as_json = python_yaml_to_json(&r.body);
    let mut json_view = get(&app, "/apis/metrics.k8s.io/v1beta1/nodes/node-1")
        .await
        .json();
    let mut yaml_view = as_json;
    scrub_created(&mut json_view);
    scrub_created(&mut yaml_view);
    assert_eq!(yaml_view, json_view);

    let r = get(
        &app,
        "/apis/metrics.k8s.io/v1beta1/nodes/node-2?pretty=true",
    )
    .await;
    assert!(
        r.text()
            .starts_with("{\n  \"kind\": \"NodeMetrics\",\n  \"apiVersion\": ")
    );
    let r = call(
        &app,
        Method::GET,
        "/apis/metrics.k8s.io/v1beta1/nodes/node-2",
        &[("user-agent", "curl/8.5.0")],
    )
    .await;
    assert!(r.text().contains("\n    \"name\": \"node-2\""));
}

fn python_yaml_to_json(yaml: &[u8]) -> Value {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml; print(json.dumps(yaml.safe_load(sys.stdin.read())))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 with PyYAML");
    child.stdin.take().unwrap().write_all(yaml).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn nodes_and_pods_that_leave_are_not_served() {
    let state = small_cluster();
    let app = fixture::app(state.clone());
    let hpa = "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods?labelSelector=app%3Dweb";
    assert_eq!(item_names(&get(&app, hpa).await), ["web-1", "web-2"]);
    // The pod stops Running: the watcher removes it from the cluster state.
    state.cluster.remove_pod("default", "web-1");
    assert_eq!(item_names(&get(&app, hpa).await), ["web-2"]);
    let r = get(
        &app,
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/web-1",
    )
    .await;
    assert_eq!(r.json()["message"], "pods \"web-1\" not found");
    // A node whose scrape failed is missing while the others are served.
    state.store.scrape_failed("node-1");
    let r = get(&app, "/apis/metrics.k8s.io/v1beta1/nodes").await;
    assert_eq!(item_names(&r), ["node-2"]);
    let r = get(&app, "/apis/metrics.k8s.io/v1beta1/pods").await;
    assert_eq!(item_names(&r), ["web-2"]);
}

#[tokio::test]
async fn large_lists_match_their_small_pieces() {
    // Above the blocking-pool threshold, the list is the concatenation of what single GETs
    // return.
    let state = fixture::large_cluster(3, 1_000, 7);
    let app = fixture::app(state);
    let r = get(&app, "/apis/metrics.k8s.io/v1beta1/pods").await;
    let all = scrubbed(&r);
    let items = all["items"].as_array().unwrap();
    assert_eq!(items.len(), 3_000);
    let probe = &items[1_234];
    let ns = probe["metadata"]["namespace"].as_str().unwrap();
    let name = probe["metadata"]["name"].as_str().unwrap();
    let mut single = scrubbed(
        &get(
            &app,
            &format!("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods/{name}"),
        )
        .await,
    );
    let m = single.as_object_mut().unwrap();
    m.remove("kind");
    m.remove("apiVersion");
    assert_eq!(&single, probe);
    // 1234567890 ns over 15 s = 82304526 nanocores; 123456789 bytes has no 1024 factor.
    assert_eq!(
        probe["containers"][0]["usage"],
        json!({"cpu":"82304526n","memory":"123456789"})
    );
    assert_eq!(
        probe["containers"][1]["usage"],
        json!({"cpu":"6584362n","memory":"50Mi"})
    );
}

/// What a pod of [`varied_cluster`] is served with: (namespace, name, timestamp in seconds,
/// window in seconds, each container's name, nanocores and bytes).
type Served = (String, String, i64, u64, Vec<(String, u64, u64)>);

/// 9,000 pods in 3 namespaces whose served values all differ: each node's scrapes are at
/// their own time and window, each pod has 1 to 3 containers with rates and memory of its
/// own; every 11th pod was scraped once (not served), and each node's page carries a pod
/// the cluster does not run. Returns the served pods in list order. Large enough to be
/// joined in several batches and written in several pieces in every format.
fn varied_cluster() -> (metrics_bridge::api::ApiState, Vec<Served>) {
    use fixture::{S, T0, pod_info, scrape};
    use metrics_bridge::api::ApiState;
    use metrics_bridge::cluster::ClusterState;
    use metrics_bridge::store::Store;
    use std::sync::Arc;

    let cluster = Arc::new(ClusterState::new());
    let store = Arc::new(Store::new(std::time::Duration::from_secs(15)));
    let mut pods = Vec::new();
    for n in 0..3 {
        for p in 0..3_000 {
            let (ns, name) = (format!("ns-{n}"), format!("pod-{p:04}"));
            cluster.upsert_pod(pod_info(&ns, &name, &[("app", &format!("app-{}", p % 9))]));
            pods.push((ns, name));
        }
    }
    let mut served = Vec::new();
    for (k, node_pods) in pods.chunks(30).enumerate() {
        let node = format!("node-{k:03}");
        let window = 10 + (k as u64 % 3) * 5;
        let t0 = T0 + k as i64 * S;
        let t1 = t0 + window as i64 * S;
        let ghost = format!("ghost-{k}");
        let mut first = vec![("ns-1", ghost.as_str(), "c0", 1, 1)];
        let mut second = vec![("ns-1", ghost.as_str(), "c0", 1 + window, 1)];
        for (j, (ns, name)) in node_pods.iter().enumerate() {
            let i = k * 30 + j;
            let once = i % 11 == 5;
            let mut containers = Vec::new();
            for c in 0..1 + i as u64 % 3 {
                let container = ["c0", "c1", "c2"][c as usize];
                let nanocores = 1_000 + i as u64 * 37_013 + c;
                let bytes = (i as u64 + 1) * (1_024 + c);
                if !once {
                    first.push((ns.as_str(), name.as_str(), container, 0, bytes));
                }
                second.push((
                    ns.as_str(),
                    name.as_str(),
                    container,
                    nanocores * window,
                    bytes,
                ));
                containers.push((container.to_string(), nanocores, bytes));
            }
            if !once {
                served.push((ns.clone(), name.clone(), t1 / S, window, containers));
            }
        }
        scrape(&store, &node, t0, (0, 1 << 30), &first);
        scrape(&store, &node, t1, (window * S as u64, 1 << 30), &second);
    }
    cluster.set_nodes_synced();
    cluster.set_pods_synced();
    served.sort();
    (ApiState::new(cluster, store), served)
}

/// A full list is written while visiting the cluster state in JSON, protobuf and Table
/// alike: the three carry the same pods with the same timestamps, windows and usage, which
/// are the store's, and each is byte for byte what the collected path (`list_pods` and the
/// slice encoders, which the HPA's query takes) writes for the same state.
#[tokio::test]
async fn full_lists_agree_in_every_format() {
    use k8s_pb::metrics::pkg::apis::metrics::v1beta1 as m;
    use metrics_bridge::api::encode::{self, Ctx, IncludeObject, MetaVersion, Shape};
    use metrics_bridge::api::quantity;
    use metrics_bridge::api::wire::rfc3339;
    use metrics_bridge::api::{ApiVersion, list_pods};
    use metrics_bridge::selector::{FieldSelector, LabelSelector};

    let (state, served) = varied_cluster();
    assert_eq!(served.len(), (0..9_000).filter(|i| i % 11 != 5).count());
    let app = fixture::app(state.clone());
    let all = "/apis/metrics.k8s.io/v1beta1/pods";
    let table_object = "/apis/metrics.k8s.io/v1beta1/pods?includeObject=Object";
    let secs = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    let before = secs();
    let json = get_accept(&app, all, "application/json").await;
    let proto = get_accept(&app, all, "application/vnd.kubernetes.protobuf").await;
    let table = get_accept(&app, table_object, KUBECTL_TABLE).await;
    let after = secs();
    assert_eq!(proto.content_type(), "application/vnd.kubernetes.protobuf");
    assert_eq!(table.content_type(), "application/json");

    // Each agrees with the store's values.
    let rfc = |s: i64| {
        let mut out = Vec::new();
        rfc3339(&mut out, s);
        String::from_utf8(out).unwrap()
    };
    let json_items = json.json()["items"].as_array().unwrap().clone();
    let from_json: Vec<Value> = json_items
        .iter()
        .map(|i| {
            json!([
                i["metadata"]["namespace"],
                i["metadata"]["name"],
                i["timestamp"],
                i["window"],
                i["containers"]
            ])
        })
        .collect();
    let want_json: Vec<Value> = served
        .iter()
        .map(|(ns, name, ts, window, containers)| {
            let containers: Vec<Value> = containers
                .iter()
                .map(|(c, cpu, mem)| json!({"name": c, "usage": {"cpu": quantity::cpu(*cpu).as_str(), "memory": quantity::memory(*mem).as_str()}}))
                .collect();
            json!([ns, name, rfc(*ts), format!("{window}s"), containers])
        })
        .collect();
    assert_eq!(from_json.len(), want_json.len());
    assert_eq!(from_json, want_json);

    let (_, kind, raw) = unwrap_envelope(&proto.body);
    assert_eq!(kind, "PodMetricsList");
    let list = m::PodMetricsList::decode(raw.as_slice()).unwrap();
    // (namespace, name, timestamp s, window ns, each container's name and quantities)
    type Decoded = (String, String, i64, i64, Vec<[String; 3]>);
    let from_proto: Vec<Decoded> = list
        .items
        .iter()
        .map(|i| {
            let meta = i.metadata.as_ref().unwrap();
            let containers = i
                .containers
                .iter()
                .map(|c| {
                    let q = |k: &str| c.usage[k].string.clone().unwrap();
                    [c.name.clone().unwrap(), q("cpu"), q("memory")]
                })
                .collect();
            (
                meta.namespace.clone().unwrap(),
                meta.name.clone().unwrap(),
                i.timestamp.as_ref().unwrap().seconds.unwrap(),
                i.window.as_ref().unwrap().duration.unwrap(),
                containers,
            )
        })
        .collect();
    let want_proto: Vec<Decoded> = served
        .iter()
        .map(|(ns, name, ts, window, containers)| {
            let containers = containers
                .iter()
                .map(|(c, cpu, mem)| {
                    [
                        c.clone(),
                        quantity::cpu(*cpu).as_str().to_string(),
                        quantity::memory(*mem).as_str().to_string(),
                    ]
                })
                .collect();
            (
                ns.clone(),
                name.clone(),
                *ts,
                *window as i64 * 1_000_000_000,
                containers,
            )
        })
        .collect();
    assert_eq!(from_proto, want_proto);

    let rows = table.json()["rows"].as_array().unwrap().clone();
    assert_eq!(rows.len(), served.len());
    for ((row, item), (_, name, _, window, containers)) in rows.iter().zip(&json_items).zip(&served)
    {
        let cpu: u64 = containers.iter().map(|c| c.1).sum();
        let mem: u64 = containers.iter().map(|c| c.2).sum();
        assert_eq!(
            row["cells"],
            json!([
                name,
                quantity::cpu_total(u128::from(cpu)).as_str(),
                quantity::memory_total(u128::from(mem)).as_str(),
                format!("{window}s")
            ])
        );
        let mut object = row["object"].clone();
        let m = object.as_object_mut().unwrap();
        assert_eq!(m.remove("kind"), Some(json!("PodMetrics")));
        assert_eq!(
            m.remove("apiVersion"),
            Some(json!("metrics.k8s.io/v1beta1"))
        );
        assert_eq!(&object, item);
    }

    // Each is what the collected path writes for the same pods, at the request's second.
    let items = list_pods(
        &state,
        None,
        &LabelSelector::default(),
        &FieldSelector::default(),
    );
    assert_eq!(items.len(), served.len());
    let same = |body: &[u8], encode: &dyn Fn(&Ctx) -> Vec<u8>| {
        (before..=after).any(|now| encode(&Ctx::new(ApiVersion::V1beta1, now)) == body)
    };
    assert!(same(&json.body, &|ctx| encode::json(
        Shape::List(&items),
        ctx
    )));
    assert!(same(&proto.body, &|ctx| encode::proto(
        Shape::List(&items),
        ctx
    )));
    assert!(same(&table.body, &|ctx| {
        encode::json_table(&items, ctx, MetaVersion::V1, IncludeObject::Object)
    }));
    let kubectl = get_accept(&app, all, KUBECTL_TABLE).await;
    assert!((before..=secs()).any(|now| encode::json_table(
        &items,
        &Ctx::new(ApiVersion::V1beta1, now),
        MetaVersion::V1,
        IncludeObject::Metadata
    ) == kubectl.body));

    // A namespace's list streams too; the HPA's label-pinned query is collected. Both are
    // the full list's pods of that namespace (and label).
    let scrubbed_items = scrubbed(&json)["items"].as_array().unwrap().clone();
    let in_ns = |label: Option<&str>| -> Vec<Value> {
        scrubbed_items
            .iter()
            .filter(|i| i["metadata"]["namespace"] == "ns-2")
            .filter(|i| label.is_none_or(|l| i["metadata"]["labels"]["app"] == l))
            .cloned()
            .collect()
    };
    for (path, label) in [
        ("/apis/metrics.k8s.io/v1beta1/namespaces/ns-2/pods", None),
        (
            "/apis/metrics.k8s.io/v1beta1/namespaces/ns-2/pods?labelSelector=app%3Dapp-4",
            Some("app-4"),
        ),
    ] {
        let want = in_ns(label);
        assert!(want.len() > 100, "{path}");
        let json = get_accept(&app, path, "application/json").await;
        assert!(
            scrubbed(&json)["items"] == Value::Array(want.clone()),
            "{path}"
        );
        let proto = get_accept(&app, path, HPA_ACCEPT).await;
        let (_, _, raw) = unwrap_envelope(&proto.body);
        let names: Vec<String> = m::PodMetricsList::decode(raw.as_slice())
            .unwrap()
            .items
            .iter()
            .map(|i| i.metadata.as_ref().unwrap().name.clone().unwrap())
            .collect();
        assert_eq!(names, item_names(&json), "{path}");
        let table = get_accept(&app, path, KUBECTL_TABLE).await;
        let rows: Vec<Value> = table.json()["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["cells"][0].clone())
            .collect();
        let want: Vec<Value> = want.iter().map(|i| i["metadata"]["name"].clone()).collect();
        assert_eq!(rows, want, "{path}");
    }
}
