//! Discovery documents, `/version` and `/openapi/v2`, built once when the router is built.
//!
//! The shapes are what a k8s.io/apiserver-based server such as metrics-server serves:
//! - `/apis`: aggregated discovery (`APIGroupDiscoveryList`, v2 and v2beta1) when asked for
//!   it, else the legacy `APIGroupList`;
//! - `/apis/metrics.k8s.io`: `APIGroup`;
//! - `/apis/metrics.k8s.io/{v1beta1,v1}`: `APIResourceList`.
//!
//! Each is kept as JSON, YAML and protobuf, so serving one is a copy of a reference-counted
//! buffer. `preferredVersion` (and the first aggregated version) is v1beta1, which every
//! shipped client asks for; v1 is served alongside it.

use std::hash::{Hash, Hasher};

use bytes::Bytes;
use prost::Message as _;

use super::encode::ApiVersion;
use super::format::json_to_yaml;
use super::negotiate::Format;
use super::wire::envelope;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;

pub const GROUP: &str = "metrics.k8s.io";

/// A document in every format it can be served in.
#[derive(Debug, Clone)]
pub struct Doc {
    json: Bytes,
    yaml: Bytes,
    proto: Bytes,
}

impl Doc {
    fn new(json: String, proto_type: (&str, &str), proto: Vec<u8>) -> Self {
        let yaml = json_to_yaml(json.as_bytes()).unwrap_or_default();
        let mut json = json.into_bytes();
        json.push(b'\n');
        Self {
            json: Bytes::from(json),
            yaml: Bytes::from(yaml),
            proto: Bytes::from(envelope(proto_type.0, proto_type.1, &proto)),
        }
    }

    pub fn get(&self, format: Format) -> Bytes {
        match format {
            Format::Json => self.json.clone(),
            Format::Yaml => self.yaml.clone(),
            Format::Protobuf => self.proto.clone(),
        }
    }
}

/// What `/version` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    pub major: String,
    pub minor: String,
    pub git_version: String,
    pub git_commit: String,
    pub git_tree_state: String,
    pub build_date: String,
    pub platform: String,
}

impl Default for VersionInfo {
    /// This crate's version, and the platform in Go's spelling (`linux/amd64`).
    fn default() -> Self {
        let version = env!("CARGO_PKG_VERSION");
        let mut parts = version.split('.');
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Self {
            major: parts.next().unwrap_or("0").to_string(),
            minor: parts.next().unwrap_or("0").to_string(),
            git_version: format!("v{version}"),
            git_commit: String::new(),
            git_tree_state: String::new(),
            build_date: String::new(),
            platform: format!("{}/{arch}", std::env::consts::OS),
        }
    }
}

/// All discovery documents.
#[derive(Debug, Clone)]
pub struct Discovery {
    pub group_list: Doc,
    pub aggregated_v2: Doc,
    pub aggregated_v2beta1: Doc,
    /// The `ETag` of the aggregated document (quoted), for `If-None-Match`.
    pub aggregated_etag: String,
    pub group: Doc,
    pub resources_v1beta1: Doc,
    pub resources_v1: Doc,
    pub version: Bytes,
    pub openapi_v2: Bytes,
}

struct ResourceDef {
    name: &'static str,
    singular: &'static str,
    namespaced: bool,
    kind: &'static str,
}

/// The two resources. The singular names are metrics-server's (`GetSingularName`): `node`
/// for nodes and none for pods.
const RESOURCES: [ResourceDef; 2] = [
    ResourceDef {
        name: "nodes",
        singular: "node",
        namespaced: false,
        kind: "NodeMetrics",
    },
    ResourceDef {
        name: "pods",
        singular: "",
        namespaced: true,
        kind: "PodMetrics",
    },
];

const VERBS: [&str; 2] = ["get", "list"];

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn gv_json(v: ApiVersion) -> String {
    format!(
        r#"{{"groupVersion":"{}","version":"{}"}}"#,
        v.group_version(),
        v.version()
    )
}

fn gv_proto(v: ApiVersion) -> meta::GroupVersionForDiscovery {
    meta::GroupVersionForDiscovery {
        group_version: s(v.group_version()),
        version: s(v.version()),
    }
}

fn group_json_body() -> String {
    let versions: Vec<String> = ApiVersion::ALL.iter().map(|v| gv_json(*v)).collect();
    format!(
        r#""name":"{GROUP}","versions":[{}],"preferredVersion":{}"#,
        versions.join(","),
        gv_json(ApiVersion::V1beta1)
    )
}

fn group_proto() -> meta::APIGroup {
    meta::APIGroup {
        name: s(GROUP),
        versions: ApiVersion::ALL.iter().map(|v| gv_proto(*v)).collect(),
        preferred_version: Some(gv_proto(ApiVersion::V1beta1)),
        server_address_by_client_cid_rs: Vec::new(),
    }
}

fn resource_list(v: ApiVersion) -> Doc {
    let resources: Vec<String> = RESOURCES
        .iter()
        .map(|r| {
            format!(
                r#"{{"name":"{}","singularName":"{}","namespaced":{},"kind":"{}","verbs":["get","list"]}}"#,
                r.name, r.singular, r.namespaced, r.kind
            )
        })
        .collect();
    let json = format!(
        r#"{{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"{}","resources":[{}]}}"#,
        v.group_version(),
        resources.join(",")
    );
    let proto = meta::APIResourceList {
        group_version: s(v.group_version()),
        resources: RESOURCES
            .iter()
            .map(|r| meta::APIResource {
                name: s(r.name),
                singular_name: s(r.singular),
                namespaced: Some(r.namespaced),
                group: s(""),
                version: s(""),
                kind: s(r.kind),
                verbs: Some(meta::Verbs {
                    items: VERBS.iter().map(|v| v.to_string()).collect(),
                }),
                short_names: Vec::new(),
                categories: Vec::new(),
                storage_version_hash: s(""),
            })
            .collect(),
    };
    Doc::new(json, ("v1", "APIResourceList"), proto.encode_to_vec())
}

/// The aggregated document's JSON, the same for v2 and v2beta1 but for `apiVersion`.
fn aggregated_json(api_version: &str) -> String {
    let versions: Vec<String> = ApiVersion::ALL
        .iter()
        .map(|v| {
            let resources: Vec<String> = RESOURCES
                .iter()
                .map(|r| {
                    format!(
                        r#"{{"resource":"{}","responseKind":{{"group":"","version":"","kind":"{}"}},"scope":"{}","singularResource":"{}","verbs":["get","list"]}}"#,
                        r.name,
                        r.kind,
                        if r.namespaced { "Namespaced" } else { "Cluster" },
                        r.singular
                    )
                })
                .collect();
            format!(
                r#"{{"version":"{}","resources":[{}],"freshness":"Current"}}"#,
                v.version(),
                resources.join(",")
            )
        })
        .collect();
    format!(
        r#"{{"kind":"APIGroupDiscoveryList","apiVersion":"{api_version}","metadata":{{}},"items":[{{"metadata":{{"name":"{GROUP}","creationTimestamp":null}},"versions":[{}]}}]}}"#,
        versions.join(",")
    )
}

macro_rules! aggregated_proto {
    ($module:ident) => {{
        use k8s_pb::api::apidiscovery::$module as d;
        d::APIGroupDiscoveryList {
            metadata: Some(meta::ListMeta {
                self_link: s(""),
                resource_version: s(""),
                r#continue: s(""),
                remaining_item_count: None,
            }),
            items: vec![d::APIGroupDiscovery {
                metadata: Some(meta::ObjectMeta {
                    name: s(GROUP),
                    ..Default::default()
                }),
                versions: ApiVersion::ALL
                    .iter()
                    .map(|v| d::APIVersionDiscovery {
                        version: s(v.version()),
                        resources: RESOURCES
                            .iter()
                            .map(|r| d::APIResourceDiscovery {
                                resource: s(r.name),
                                response_kind: Some(meta::GroupVersionKind {
                                    group: s(""),
                                    version: s(""),
                                    kind: s(r.kind),
                                }),
                                scope: s(if r.namespaced {
                                    "Namespaced"
                                } else {
                                    "Cluster"
                                }),
                                singular_resource: s(r.singular),
                                verbs: VERBS.iter().map(|v| v.to_string()).collect(),
                                short_names: Vec::new(),
                                categories: Vec::new(),
                                subresources: Vec::new(),
                            })
                            .collect(),
                        freshness: s("Current"),
                    })
                    .collect(),
            }],
        }
        .encode_to_vec()
    }};
}

fn version_json(v: &VersionInfo) -> Bytes {
    // apiserver writes /version with json.MarshalIndent.
    let json = serde_json::json!({
        "major": v.major,
        "minor": v.minor,
        "gitVersion": v.git_version,
        "gitCommit": v.git_commit,
        "gitTreeState": v.git_tree_state,
        "buildDate": v.build_date,
        "goVersion": "",
        "compiler": "rustc",
        "platform": v.platform,
    });
    // Keep Go's field order rather than serde_json's sorted map order.
    let order = [
        "major",
        "minor",
        "gitVersion",
        "gitCommit",
        "gitTreeState",
        "buildDate",
        "goVersion",
        "compiler",
        "platform",
    ];
    let mut out = String::from("{\n");
    for (i, key) in order.iter().enumerate() {
        let value = json.get(*key).map(|v| v.to_string()).unwrap_or_default();
        out.push_str(&format!("  \"{key}\": {value}"));
        out.push_str(if i + 1 < order.len() { ",\n" } else { "\n" });
    }
    out.push('}');
    Bytes::from(out)
}

/// A minimal Swagger 2.0 document: the list and get operations of both versions and the
/// definitions they reference, with the `x-kubernetes-group-version-kind` extensions that
/// kube-apiserver's OpenAPI aggregation and `kubectl explain` key on.
fn openapi_v2(info: &VersionInfo) -> Bytes {
    use serde_json::{Map, Value, json};
    let meta_ref = |name: &str| json!({ "$ref": format!("#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.{name}") });
    let quantity_ref =
        json!({ "$ref": "#/definitions/io.k8s.apimachinery.pkg.api.resource.Quantity" });
    let usage = json!({
        "description": "The memory usage is the memory working set.",
        "type": "object",
        "additionalProperties": quantity_ref,
    });
    let mut definitions = Map::new();
    let mut paths = Map::new();
    let produces = json!([
        "application/json",
        "application/yaml",
        "application/vnd.kubernetes.protobuf"
    ]);
    let selector_params = json!([
        {"name": "labelSelector", "in": "query", "type": "string", "uniqueItems": true,
         "description": "A selector to restrict the list of returned objects by their labels. Defaults to everything."},
        {"name": "fieldSelector", "in": "query", "type": "string", "uniqueItems": true,
         "description": "A selector to restrict the list of returned objects by their fields (metadata.name, metadata.namespace). Defaults to everything."}
    ]);
    for v in ApiVersion::ALL {
        let pkg = format!("io.k8s.metrics.pkg.apis.metrics.{}", v.version());
        let def = |kind: &str| format!("{pkg}.{kind}");
        let def_ref = |kind: &str| json!({ "$ref": format!("#/definitions/{pkg}.{kind}") });
        let gvk = |kind: &str| json!([{ "group": GROUP, "version": v.version(), "kind": kind }]);
        let window =
            json!({ "$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.Duration" });
        definitions.insert(
            def("ContainerMetrics"),
            json!({
                "description": "ContainerMetrics sets resource usage metrics of a container.",
                "type": "object",
                "required": ["name", "usage"],
                "properties": {
                    "name": {"description": "Container name corresponding to the one from pod.spec.containers.", "type": "string"},
                    "usage": usage,
                }
            }),
        );
        for (kind, body_key, body) in [
            ("NodeMetrics", "usage", usage.clone()),
            (
                "PodMetrics",
                "containers",
                json!({
                    "description": "Metrics for all containers are collected within the same time window.",
                    "type": "array",
                    "items": def_ref("ContainerMetrics"),
                    "x-kubernetes-list-type": "atomic",
                }),
            ),
        ] {
            definitions.insert(
                def(kind),
                json!({
                    "description": format!("{kind} sets resource usage metrics of a {}.", if kind == "NodeMetrics" { "node" } else { "pod" }),
                    "type": "object",
                    "required": ["timestamp", "window", body_key],
                    "properties": {
                        "apiVersion": {"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."},
                        "kind": {"type": "string", "description": "Kind is a string value representing the REST resource this object represents."},
                        "metadata": meta_ref("ObjectMeta"),
                        "timestamp": meta_ref("Time"),
                        "window": window,
                        body_key: body,
                    },
                    "x-kubernetes-group-version-kind": gvk(kind),
                }),
            );
            let list = format!("{kind}List");
            definitions.insert(
                def(&list),
                json!({
                    "description": format!("{list} is a list of {kind}."),
                    "type": "object",
                    "required": ["items"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": meta_ref("ListMeta"),
                        "items": {"type": "array", "items": def_ref(kind)},
                    },
                    "x-kubernetes-group-version-kind": gvk(&list),
                }),
            );
        }
        let base = format!("/apis/{GROUP}/{}", v.version());
        let tag = format!("metrics_{}", v.version());
        let op = |action: &str, kind: &str, id: &str, params: Value| {
            json!({
                "description": format!("{action} {kind}"),
                "operationId": id,
                "produces": produces,
                "schemes": ["https"],
                "tags": [tag],
                "parameters": params,
                "responses": {
                    "200": {"description": "OK", "schema": def_ref(kind)},
                    "401": {"description": "Unauthorized"},
                },
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": {"group": GROUP, "version": v.version(), "kind": kind.trim_end_matches("List")},
            })
        };
        let name_param = json!({"name": "name", "in": "path", "required": true, "type": "string", "uniqueItems": true, "description": "name of the resource"});
        let ns_param = json!({"name": "namespace", "in": "path", "required": true, "type": "string", "uniqueItems": true, "description": "object name and auth scope, such as for teams and projects"});
        let ver = v
            .version()
            .replace("v1beta1", "V1beta1")
            .replace("v1", "V1");
        paths.insert(
            format!("{base}/nodes"),
            json!({"get": op("list", "NodeMetricsList", &format!("listMetrics{ver}NodeMetrics"), selector_params.clone())}),
        );
        paths.insert(
            format!("{base}/nodes/{{name}}"),
            json!({"get": op("get", "NodeMetrics", &format!("readMetrics{ver}NodeMetrics"), json!([])), "parameters": [name_param]}),
        );
        paths.insert(
            format!("{base}/pods"),
            json!({"get": op("list", "PodMetricsList", &format!("listMetrics{ver}PodMetricsForAllNamespaces"), selector_params.clone())}),
        );
        paths.insert(
            format!("{base}/namespaces/{{namespace}}/pods"),
            json!({"get": op("list", "PodMetricsList", &format!("listMetrics{ver}NamespacedPodMetrics"), selector_params.clone()), "parameters": [ns_param]}),
        );
        paths.insert(
            format!("{base}/namespaces/{{namespace}}/pods/{{name}}"),
            json!({"get": op("get", "PodMetrics", &format!("readMetrics{ver}NamespacedPodMetrics"), json!([])), "parameters": [name_param, ns_param]}),
        );
    }
    let meta_def = |name: &str| format!("io.k8s.apimachinery.pkg.apis.meta.v1.{name}");
    definitions.insert(
        meta_def("ObjectMeta"),
        json!({
            "description": "ObjectMeta is metadata that all persisted resources must have.",
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "namespace": {"type": "string"},
                "creationTimestamp": meta_ref("Time"),
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            }
        }),
    );
    definitions.insert(
        meta_def("ListMeta"),
        json!({
            "description": "ListMeta describes metadata that synthetic resources must have.",
            "type": "object",
            "properties": {
                "resourceVersion": {"type": "string"},
                "continue": {"type": "string"},
            }
        }),
    );
    definitions.insert(
        meta_def("Time"),
        json!({"description": "Time is a wrapper around time.Time which supports correct marshaling to YAML and JSON.", "type": "string", "format": "date-time"}),
    );
    definitions.insert(
        meta_def("Duration"),
        json!({"description": "Duration is a wrapper around time.Duration, written as a Go duration string such as \"15.012s\".", "type": "string"}),
    );
    definitions.insert(
        "io.k8s.apimachinery.pkg.api.resource.Quantity".to_string(),
        json!({"description": "Quantity is a fixed-point representation of a number, such as \"250m\" or \"12240Ki\".", "type": "string"}),
    );
    let doc = json!({
        "swagger": "2.0",
        "info": {"title": "metrics-bridge", "version": info.git_version},
        "paths": paths,
        "definitions": definitions,
    });
    Bytes::from(serde_json::to_vec(&doc).unwrap_or_default())
}

impl Discovery {
    pub fn new(info: &VersionInfo) -> Self {
        let group_list = Doc::new(
            format!(
                r#"{{"kind":"APIGroupList","apiVersion":"v1","groups":[{{{}}}]}}"#,
                group_json_body()
            ),
            ("v1", "APIGroupList"),
            meta::APIGroupList {
                groups: vec![group_proto()],
            }
            .encode_to_vec(),
        );
        let group = Doc::new(
            format!(
                r#"{{"kind":"APIGroup","apiVersion":"v1",{}}}"#,
                group_json_body()
            ),
            ("v1", "APIGroup"),
            group_proto().encode_to_vec(),
        );
        let v2 = aggregated_json("apidiscovery.k8s.io/v2");
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        v2.hash(&mut hasher);
        let aggregated_etag = format!("\"{:016X}\"", hasher.finish());
        Self {
            group_list,
            aggregated_v2: Doc::new(
                v2,
                ("apidiscovery.k8s.io/v2", "APIGroupDiscoveryList"),
                aggregated_proto!(v2),
            ),
            aggregated_v2beta1: Doc::new(
                aggregated_json("apidiscovery.k8s.io/v2beta1"),
                ("apidiscovery.k8s.io/v2beta1", "APIGroupDiscoveryList"),
                aggregated_proto!(v2beta1),
            ),
            aggregated_etag,
            group,
            resources_v1beta1: resource_list(ApiVersion::V1beta1),
            resources_v1: resource_list(ApiVersion::V1),
            version: version_json(info),
            openapi_v2: openapi_v2(info),
        }
    }

    pub fn resources(&self, v: ApiVersion) -> &Doc {
        match v {
            ApiVersion::V1beta1 => &self.resources_v1beta1,
            ApiVersion::V1 => &self.resources_v1,
        }
    }
}
