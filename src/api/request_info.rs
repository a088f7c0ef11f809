//! What a request asks for, in authorization terms: k8s.io/apiserver's `RequestInfoFactory`.
//!
//! The security layer builds SubjectAccessReviews from this, so it follows the Go parser
//! exactly: `/apis/{group}/{version}/…` and `/api/{version}/…` are resource requests;
//! `namespaces/{ns}/` scopes them; `watch/` and `proxy/` prefixes set the verb; a GET with no
//! name is `list` (or `watch` with `?watch=true`), and a `fieldSelector` that pins
//! `metadata.name` names the object. Everything else is a non-resource request whose verb is
//! the lower-cased HTTP method.

use http::Method;

use super::query::{ListOptions, Query, unescape_path};

/// The parsed request, as `k8s.io/apiserver/pkg/endpoints/request.RequestInfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    pub is_resource_request: bool,
    /// The URL path, percent-decoded.
    pub path: String,
    /// The Kubernetes verb for resource requests (`get`, `list`, `watch`, `create`, …); the
    /// lower-cased HTTP method otherwise.
    pub verb: String,
    pub api_prefix: String,
    pub api_group: String,
    pub api_version: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    /// The path parts from the resource on (`resource/name/subresource/…`).
    pub parts: Vec<String>,
    /// The raw `fieldSelector` of a list or watch (for selector-aware authorization).
    pub field_selector: String,
    /// The raw `labelSelector` of a list or watch.
    pub label_selector: String,
}

/// A path that names a special verb but nothing to apply it to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to determine kind and namespace from url, {url}")]
pub struct RequestInfoError {
    /// The request URL as Go prints it (path and query).
    pub url: String,
    /// What could be parsed before the failure.
    pub partial: Box<RequestInfo>,
}

const API_PREFIXES: &[&str] = &["api", "apis"];
const GROUPLESS_PREFIXES: &[&str] = &["api"];
const SPECIAL_VERBS: &[&str] = &["proxy", "watch"];
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

impl RequestInfo {
    /// Parses a request from its method, raw path and raw query.
    pub fn new(method: &Method, path: &str, query: Option<&str>) -> Result<Self, RequestInfoError> {
        let path = unescape_path(path);
        let mut info = RequestInfo {
            path: path.to_string(),
            verb: method.as_str().to_ascii_lowercase(),
            ..Default::default()
        };
        let trimmed = path.trim_matches('/');
        let mut parts: Vec<&str> = if trimmed.is_empty() {
            Vec::new()
        } else {
            trimmed.split('/').collect()
        };
        if parts.len() < 3 || !API_PREFIXES.contains(&parts[0]) {
            return Ok(info);
        }
        info.api_prefix = parts[0].to_string();
        parts.remove(0);
        if !GROUPLESS_PREFIXES.contains(&info.api_prefix.as_str()) {
            if parts.len() < 3 {
                return Ok(info);
            }
            info.api_group = parts.remove(0).to_string();
        }
        info.is_resource_request = true;
        info.api_version = parts.remove(0).to_string();

        let mut verb_via_path = false;
        if SPECIAL_VERBS.contains(&parts[0]) {
            if parts.len() < 2 {
                let url = match query {
                    Some(q) => format!("{}?{q}", info.path),
                    None => info.path.clone(),
                };
                return Err(RequestInfoError {
                    url,
                    partial: Box::new(info),
                });
            }
            info.verb = parts.remove(0).to_string();
            verb_via_path = true;
        } else {
            info.verb = match *method {
                Method::POST => "create",
                Method::GET | Method::HEAD => "get",
                Method::PUT => "update",
                Method::PATCH => "patch",
                Method::DELETE => "delete",
                _ => "",
            }
            .to_string();
        }

        if parts[0] == "namespaces" && parts.len() > 1 {
            info.namespace = parts[1].to_string();
            if parts.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&parts[2]) {
                parts.drain(..2);
            }
        }
        info.parts = parts.iter().map(|p| p.to_string()).collect();
        if parts.len() >= 3 && info.verb != "proxy" {
            info.subresource = parts[2].to_string();
        }
        if parts.len() >= 2 {
            info.name = parts[1].to_string();
        }
        if !parts.is_empty() {
            info.resource = parts[0].to_string();
        }

        let q = Query::parse(query);
        if info.name.is_empty() && info.verb == "get" {
            match ListOptions::decode(&q) {
                Ok(opts) => {
                    info.verb = if opts.watch { "watch" } else { "list" }.to_string();
                    if let Some(name) = opts.fields.required_value("metadata.name")
                        && is_valid_path_segment_name(name)
                    {
                        info.name = name.to_string();
                    }
                }
                // A bad parameter still leaves the verb list, or watch if asked for.
                Err(_) => {
                    info.verb = if q.flag("watch") { "watch" } else { "list" }.to_string();
                }
            }
        }
        if info.name.is_empty() && info.verb == "delete" {
            info.verb = "deletecollection".to_string();
        }
        if !verb_via_path && matches!(info.verb.as_str(), "list" | "watch" | "deletecollection") {
            info.field_selector = q.get("fieldSelector").unwrap_or("").to_string();
            info.label_selector = q.get("labelSelector").unwrap_or("").to_string();
        }
        Ok(info)
    }
}

/// apimachinery's `IsValidPathSegmentName`.
fn is_valid_path_segment_name(name: &str) -> bool {
    name != "." && name != ".." && !name.contains('/') && !name.contains('%')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(method: Method, path: &str, query: Option<&str>) -> RequestInfo {
        RequestInfo::new(&method, path, query).unwrap()
    }

    /// (verb, group, version, namespace, resource, subresource, name)
    fn summary(i: &RequestInfo) -> (bool, &str, &str, &str, &str, &str, &str, &str) {
        (
            i.is_resource_request,
            &i.verb,
            &i.api_group,
            &i.api_version,
            &i.namespace,
            &i.resource,
            &i.subresource,
            &i.name,
        )
    }

    #[test]
    fn every_path_we_serve() {
        let g = Method::GET;
        let m = "metrics.k8s.io";
        for v in ["v1beta1", "v1"] {
            let base = format!("/apis/{m}/{v}");
            let cases: Vec<(String, Option<&str>, _)> = vec![
                (
                    format!("{base}/nodes"),
                    None,
                    (true, "list", m, v, "", "nodes", "", ""),
                ),
                (
                    format!("{base}/nodes/n1"),
                    None,
                    (true, "get", m, v, "", "nodes", "", "n1"),
                ),
                (
                    format!("{base}/pods"),
                    None,
                    (true, "list", m, v, "", "pods", "", ""),
                ),
                (
                    format!("{base}/namespaces/kube-system/pods"),
                    None,
                    (true, "list", m, v, "kube-system", "pods", "", ""),
                ),
                (
                    format!("{base}/namespaces/kube-system/pods/p"),
                    None,
                    (true, "get", m, v, "kube-system", "pods", "", "p"),
                ),
                (
                    format!("{base}/namespaces/ns/pods"),
                    Some("watch=true"),
                    (true, "watch", m, v, "ns", "pods", "", ""),
                ),
                (
                    format!("{base}/nodes"),
                    Some("fieldSelector=metadata.name%3Dn2"),
                    (true, "list", m, v, "", "nodes", "", "n2"),
                ),
                (
                    format!("{base}/watch/namespaces/ns/pods/p"),
                    None,
                    (true, "watch", m, v, "ns", "pods", "", "p"),
                ),
            ];
            for (path, q, want) in cases {
                let i = info(g.clone(), &path, q);
                assert_eq!(summary(&i), want, "{path} {q:?}");
                assert_eq!(i.api_prefix, "apis");
            }
        }
    }

    #[test]
    fn non_resource_paths() {
        for path in [
            "/",
            "",
            "/apis",
            "/apis/metrics.k8s.io",
            "/apis/metrics.k8s.io/v1beta1",
            "/version",
            "/openapi/v2",
            "/metrics",
            "/metrics/resource",
            "/healthz",
            "/api",
            "/api/v1",
        ] {
            let i = info(Method::GET, path, None);
            assert!(!i.is_resource_request, "{path}");
            assert_eq!(i.verb, "get");
            assert_eq!(i.path, path);
        }
        assert_eq!(info(Method::POST, "/metrics", None).verb, "post");
    }

    #[test]
    fn verbs_from_methods_and_special_cases() {
        let p = "/apis/metrics.k8s.io/v1beta1/namespaces/ns/pods/p";
        assert_eq!(
            info(
                Method::POST,
                "/apis/metrics.k8s.io/v1beta1/namespaces/ns/pods",
                None
            )
            .verb,
            "create"
        );
        assert_eq!(info(Method::PUT, p, None).verb, "update");
        assert_eq!(info(Method::PATCH, p, None).verb, "patch");
        assert_eq!(info(Method::DELETE, p, None).verb, "delete");
        assert_eq!(
            info(
                Method::DELETE,
                "/apis/metrics.k8s.io/v1beta1/namespaces/ns/pods",
                None
            )
            .verb,
            "deletecollection"
        );
        assert_eq!(info(Method::HEAD, p, None).verb, "get");
        assert_eq!(info(Method::OPTIONS, p, None).verb, "");
        // Core group, namespace subresource, and a subresource of an object.
        let i = info(Method::GET, "/api/v1/namespaces/ns/status", None);
        assert_eq!(
            summary(&i),
            (true, "get", "", "v1", "ns", "namespaces", "status", "ns")
        );
        let i = info(Method::GET, "/api/v1/namespaces/ns/pods/p/log", None);
        assert_eq!(
            summary(&i),
            (true, "get", "", "v1", "ns", "pods", "log", "p")
        );
        // Proxy takes no subresource.
        let i = info(Method::GET, "/api/v1/proxy/namespaces/ns/pods/p/x", None);
        assert_eq!(
            summary(&i),
            (true, "proxy", "", "v1", "ns", "pods", "", "p")
        );
        // A bad selector keeps list (or watch) and no promoted name.
        let i = info(
            Method::GET,
            "/apis/metrics.k8s.io/v1beta1/nodes",
            Some("labelSelector=a%20b&watch=1&fieldSelector=metadata.name%3Dx"),
        );
        assert_eq!((i.verb.as_str(), i.name.as_str()), ("watch", ""));
        assert_eq!(i.label_selector, "a b");
        // An invalid name is not promoted.
        let i = info(
            Method::GET,
            "/apis/metrics.k8s.io/v1beta1/nodes",
            Some("fieldSelector=metadata.name%3D.."),
        );
        assert_eq!(i.name, "");
        assert_eq!(i.field_selector, "metadata.name=..");
        // Percent-encoded paths are decoded.
        let i = info(
            Method::GET,
            "/apis/metrics.k8s.io/v1beta1/nodes/a%2Eb",
            None,
        );
        assert_eq!(i.name, "a.b");
    }

    #[test]
    fn special_verb_without_resource_is_an_error() {
        let e = RequestInfo::new(
            &Method::GET,
            "/apis/metrics.k8s.io/v1beta1/watch",
            Some("x=1"),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "unable to determine kind and namespace from url, /apis/metrics.k8s.io/v1beta1/watch?x=1"
        );
        assert!(e.partial.is_resource_request);
    }
}
