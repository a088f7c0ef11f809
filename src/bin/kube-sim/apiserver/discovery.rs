//! Discovery documents: `/api`, `/apis`, `/apis/GROUP`, `/apis/GROUP/VERSION`, `/api/v1`,
//! both the legacy kinds (`APIVersions`, `APIGroupList`, `APIGroup`, `APIResourceList`) and
//! aggregated discovery (`apidiscovery.k8s.io` v2 and v2beta1, `APIGroupDiscoveryList`), which
//! kubectl 1.27+ asks for first. Groups served by aggregated backends are merged in while
//! their APIServices are available.

use serde_json::{Value, json};

/// One served resource.
pub struct ResourceDesc {
    pub name: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub verbs: &'static [&'static str],
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub subresources: &'static [SubresourceDesc],
}

/// A subresource of a served resource (`pods/status`, `pods/binding`).
pub struct SubresourceDesc {
    pub name: &'static str,
    pub kind: &'static str,
    pub verbs: &'static [&'static str],
}

/// One served group version.
pub struct GroupVersion {
    /// Empty for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub resources: &'static [ResourceDesc],
}

const CREATE: &[&str] = &["create"];
/// The verbs of a fully served kind, in kube-apiserver's order.
const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const STATUS: SubresourceDesc = SubresourceDesc {
    name: "status",
    kind: "",
    verbs: &["get", "patch", "update"],
};
const NONE: &[SubresourceDesc] = &[];

/// Everything kube-sim itself serves (aggregated groups come on top).
pub const BUILTIN: &[GroupVersion] = &[
    GroupVersion {
        group: "",
        version: "v1",
        resources: &[
            ResourceDesc {
                name: "configmaps",
                singular: "configmap",
                kind: "ConfigMap",
                namespaced: true,
                verbs: ALL_VERBS,
                short_names: &["cm"],
                categories: &[],
                subresources: NONE,
            },
            ResourceDesc {
                name: "namespaces",
                singular: "namespace",
                kind: "Namespace",
                namespaced: false,
                verbs: &[
                    "create", "delete", "get", "list", "patch", "update", "watch",
                ],
                short_names: &["ns"],
                categories: &[],
                subresources: &[STATUS],
            },
            ResourceDesc {
                name: "nodes",
                singular: "node",
                kind: "Node",
                namespaced: false,
                verbs: ALL_VERBS,
                short_names: &["no"],
                categories: &[],
                subresources: &[STATUS],
            },
            ResourceDesc {
                name: "pods",
                singular: "pod",
                kind: "Pod",
                namespaced: true,
                verbs: ALL_VERBS,
                short_names: &["po"],
                categories: &["all"],
                subresources: &[
                    SubresourceDesc {
                        name: "binding",
                        kind: "Binding",
                        verbs: CREATE,
                    },
                    STATUS,
                ],
            },
        ],
    },
    GroupVersion {
        group: "authentication.k8s.io",
        version: "v1",
        resources: &[
            ResourceDesc {
                name: "selfsubjectreviews",
                singular: "selfsubjectreview",
                kind: "SelfSubjectReview",
                namespaced: false,
                verbs: CREATE,
                short_names: &[],
                categories: &[],
                subresources: NONE,
            },
            ResourceDesc {
                name: "tokenreviews",
                singular: "tokenreview",
                kind: "TokenReview",
                namespaced: false,
                verbs: CREATE,
                short_names: &[],
                categories: &[],
                subresources: NONE,
            },
        ],
    },
    GroupVersion {
        group: "authorization.k8s.io",
        version: "v1",
        resources: &[
            ResourceDesc {
                name: "localsubjectaccessreviews",
                singular: "localsubjectaccessreview",
                kind: "LocalSubjectAccessReview",
                namespaced: true,
                verbs: CREATE,
                short_names: &[],
                categories: &[],
                subresources: NONE,
            },
            ResourceDesc {
                name: "selfsubjectaccessreviews",
                singular: "selfsubjectaccessreview",
                kind: "SelfSubjectAccessReview",
                namespaced: false,
                verbs: CREATE,
                short_names: &[],
                categories: &[],
                subresources: NONE,
            },
            ResourceDesc {
                name: "subjectaccessreviews",
                singular: "subjectaccessreview",
                kind: "SubjectAccessReview",
                namespaced: false,
                verbs: CREATE,
                short_names: &[],
                categories: &[],
                subresources: NONE,
            },
        ],
    },
    GroupVersion {
        group: "coordination.k8s.io",
        version: "v1",
        resources: &[ResourceDesc {
            name: "leases",
            singular: "lease",
            kind: "Lease",
            namespaced: true,
            verbs: ALL_VERBS,
            short_names: &[],
            categories: &[],
            subresources: NONE,
        }],
    },
];

/// A group served by an aggregated backend, as discovery shows it.
#[derive(Debug, Clone)]
pub struct AggregatedGroup {
    pub name: String,
    /// Preferred first.
    pub versions: Vec<AggregatedVersion>,
}

/// One version of an aggregated group.
#[derive(Debug, Clone)]
pub struct AggregatedVersion {
    pub version: String,
    /// The `resources` array of aggregated discovery (v2 shape).
    pub resources: Value,
    /// `Current`, or `Stale` when the backend's discovery could not be read.
    pub freshness: &'static str,
}

/// The builtin group version, if served.
pub fn builtin(group: &str, version: &str) -> Option<&'static GroupVersion> {
    BUILTIN
        .iter()
        .find(|gv| gv.group == group && gv.version == version)
}

fn builtin_groups() -> impl Iterator<Item = &'static GroupVersion> {
    BUILTIN.iter().filter(|gv| !gv.group.is_empty())
}

/// `/api`.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_json(name: &str, versions: &[&str]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    let preferred = vs.first().cloned().unwrap_or(Value::Null);
    json!({"name": name, "versions": vs, "preferredVersion": preferred})
}

/// `/apis` (legacy `APIGroupList`).
pub fn api_group_list(aggregated: &[AggregatedGroup]) -> Value {
    let mut groups: Vec<Value> = builtin_groups()
        .map(|gv| group_json(gv.group, &[gv.version]))
        .collect();
    for g in aggregated {
        let versions: Vec<&str> = g.versions.iter().map(|v| v.version.as_str()).collect();
        groups.push(group_json(&g.name, &versions));
    }
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/GROUP` (legacy `APIGroup`), for builtin or aggregated groups.
pub fn api_group(group: &str, aggregated: &[AggregatedGroup]) -> Option<Value> {
    let mut doc = if let Some(gv) = builtin_groups().find(|gv| gv.group == group) {
        group_json(gv.group, &[gv.version])
    } else {
        let g = aggregated.iter().find(|g| g.name == group)?;
        let versions: Vec<&str> = g.versions.iter().map(|v| v.version.as_str()).collect();
        group_json(&g.name, &versions)
    };
    if let Some(obj) = doc.as_object_mut() {
        obj.insert("kind".into(), json!("APIGroup"));
        obj.insert("apiVersion".into(), json!("v1"));
    }
    Some(doc)
}

/// `/api/v1` or `/apis/GROUP/VERSION` for a builtin group version (legacy `APIResourceList`).
pub fn resource_list(gv: &GroupVersion) -> Value {
    let mut resources: Vec<Value> = Vec::new();
    for r in gv.resources {
        let mut v = json!({
            "name": r.name,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            v["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            v["categories"] = json!(r.categories);
        }
        resources.push(v);
        // Subresources follow their resource as `resource/sub`, with an empty singular name.
        for sub in r.subresources {
            let mut s = json!({
                "name": format!("{}/{}", r.name, sub.name),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": if sub.kind.is_empty() { r.kind } else { sub.kind },
                "verbs": sub.verbs,
            });
            if sub.kind == "Binding" {
                s["group"] = json!("");
                s["version"] = json!("v1");
            }
            resources.push(s);
        }
    }
    if gv.group.is_empty() {
        json!({"kind": "APIResourceList", "groupVersion": gv.version, "resources": resources})
    } else {
        json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": format!("{}/{}", gv.group, gv.version),
            "resources": resources,
        })
    }
}

/// The v2 `resources` array of a builtin group version.
fn aggregated_resources(gv: &GroupVersion) -> Value {
    Value::Array(
        gv.resources
            .iter()
            .map(|r| {
                let mut v = json!({
                    "resource": r.name,
                    "responseKind": {"group": "", "version": "", "kind": r.kind},
                    "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                    "singularResource": r.singular,
                    "verbs": r.verbs,
                });
                if !r.short_names.is_empty() {
                    v["shortNames"] = json!(r.short_names);
                }
                if !r.categories.is_empty() {
                    v["categories"] = json!(r.categories);
                }
                if !r.subresources.is_empty() {
                    v["subresources"] = r
                        .subresources
                        .iter()
                        .map(|sub| {
                            json!({
                                "subresource": sub.name,
                                "responseKind": {"group": "", "version": "", "kind": if sub.kind.is_empty() { r.kind } else { sub.kind }},
                                "verbs": sub.verbs,
                            })
                        })
                        .collect();
                }
                v
            })
            .collect(),
    )
}

/// Converts a legacy `APIResourceList`'s resources (from a backend that answered 406 to
/// aggregated discovery) into the v2 `resources` array, subresources folded into their parent,
/// as kube-apiserver's discovery manager converts them.
pub fn legacy_to_aggregated(list: &Value) -> Value {
    let mut out: Vec<Value> = Vec::new();
    let items = list["resources"].as_array().cloned().unwrap_or_default();
    for r in &items {
        let name = r["name"].as_str().unwrap_or_default();
        if name.contains('/') {
            continue;
        }
        let mut v = json!({
            "resource": name,
            "responseKind": {"group": r["group"].as_str().unwrap_or(""), "version": r["version"].as_str().unwrap_or(""), "kind": r["kind"]},
            "scope": if r["namespaced"].as_bool().unwrap_or(false) { "Namespaced" } else { "Cluster" },
            "singularResource": r["singularName"],
            "verbs": r["verbs"],
        });
        for key in ["shortNames", "categories"] {
            if let Some(x) = r.get(key).filter(|x| x.is_array()) {
                v[key] = x.clone();
            }
        }
        let subs: Vec<Value> = items
            .iter()
            .filter_map(|s| {
                let sn = s["name"].as_str()?;
                let sub = sn.strip_prefix(name)?.strip_prefix('/')?;
                Some(json!({
                    "subresource": sub,
                    "responseKind": {"group": "", "version": "", "kind": s["kind"]},
                    "verbs": s["verbs"],
                }))
            })
            .collect();
        if !subs.is_empty() {
            v["subresources"] = Value::Array(subs);
        }
        out.push(v);
    }
    Value::Array(out)
}

/// The aggregated discovery document for `/api` (`apis == false`) or `/apis`, in
/// `apidiscovery.k8s.io/{version}`.
pub fn aggregated(apis: bool, version: &str, aggregated: &[AggregatedGroup]) -> Value {
    let mut items: Vec<Value> = Vec::new();
    if apis {
        for gv in builtin_groups() {
            items.push(json!({
                "metadata": {"name": gv.group, "creationTimestamp": null},
                "versions": [{"version": gv.version, "resources": aggregated_resources(gv), "freshness": "Current"}],
            }));
        }
        for g in aggregated {
            let versions: Vec<Value> = g
                .versions
                .iter()
                .map(|v| json!({"version": v.version, "resources": v.resources, "freshness": v.freshness}))
                .collect();
            items.push(json!({
                "metadata": {"name": g.name, "creationTimestamp": null},
                "versions": versions,
            }));
        }
    } else if let Some(core) = builtin("", "v1") {
        items.push(json!({
            "metadata": {"creationTimestamp": null},
            "versions": [{"version": "v1", "resources": aggregated_resources(core), "freshness": "Current"}],
        }));
    }
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    })
}

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "emulationMajor": "1",
        "emulationMinor": "33",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "32",
        "gitVersion": "v1.33.0",
        "gitCommit": "60a317eadfcb839692a5551a8ba9b5d6ddaad2e0",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T13:02:53Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// A minimal `/openapi/v2`: valid Swagger 2.0 naming the served kinds, enough for clients that
/// fetch it to learn nothing is wrong (kubectl `get` does not need schemas).
pub fn openapi_v2() -> Value {
    let mut definitions = serde_json::Map::new();
    for gv in BUILTIN {
        for r in gv.resources {
            let group = if gv.group.is_empty() {
                "core"
            } else {
                gv.group.split('.').next().unwrap_or(gv.group)
            };
            definitions.insert(
                format!("io.k8s.api.{group}.{}.{}", gv.version, r.kind),
                json!({
                    "type": "object",
                    "x-kubernetes-group-version-kind": [{"group": gv.group, "version": gv.version, "kind": r.kind}],
                }),
            );
        }
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": {},
        "definitions": definitions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_discovery_shapes() {
        let agg = vec![AggregatedGroup {
            name: "metrics.k8s.io".into(),
            versions: vec![AggregatedVersion {
                version: "v1beta1".into(),
                resources: json!([{"resource": "pods"}]),
                freshness: "Current",
            }],
        }];
        let apis = aggregated(true, "v2", &agg);
        assert_eq!(apis["apiVersion"], "apidiscovery.k8s.io/v2");
        let names: Vec<&str> = apis["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "authentication.k8s.io",
                "authorization.k8s.io",
                "coordination.k8s.io",
                "metrics.k8s.io"
            ]
        );
        let api = aggregated(false, "v2beta1", &[]);
        let pods = &api["items"][0]["versions"][0]["resources"][3];
        assert_eq!(pods["resource"], "pods");
        assert_eq!(pods["scope"], "Namespaced");
        assert_eq!(pods["responseKind"]["kind"], "Pod");
        assert_eq!(pods["subresources"][0]["subresource"], "binding");
        assert_eq!(
            pods["subresources"][1]["verbs"],
            json!(["get", "patch", "update"])
        );
        let legacy = resource_list(builtin("", "v1").unwrap());
        let names: Vec<&str> = legacy["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "configmaps",
                "namespaces",
                "namespaces/status",
                "nodes",
                "nodes/status",
                "pods",
                "pods/binding",
                "pods/status"
            ]
        );
        let list = api_group_list(&agg);
        assert_eq!(
            list["groups"][3]["preferredVersion"]["groupVersion"],
            "metrics.k8s.io/v1beta1"
        );
    }

    #[test]
    fn legacy_resource_lists_fold_subresources() {
        let legacy = json!({"resources": [
            {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]},
            {"name": "pods/status", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get"]},
            {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]},
        ]});
        let v2 = legacy_to_aggregated(&legacy);
        assert_eq!(v2.as_array().unwrap().len(), 2);
        assert_eq!(v2[0]["subresources"][0]["subresource"], "status");
        assert_eq!(v2[1]["scope"], "Cluster");
    }
}
