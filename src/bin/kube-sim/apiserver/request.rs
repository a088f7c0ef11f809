//! Request attributes, as k8s.io/apiserver's `RequestInfoFactory` derives them from the path,
//! method and query, so that authorization sees exactly what kube-apiserver's would.

use crate::auth::{Attributes, NonResourceAttributes, ResourceAttributes};

/// What a request is about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    pub is_resource: bool,
    pub path: String,
    pub verb: String,
    /// `api` or `apis`.
    pub prefix: String,
    pub group: String,
    pub version: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    /// The path segments from the resource on.
    pub parts: Vec<String>,
}

/// Query parameters as `(name, value)` pairs, decoded.
pub type Query = Vec<(String, String)>;

/// The first value of a query parameter.
pub fn query_get<'a>(q: &'a Query, name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Decodes a URL query string (`+` is a space, as Go's `url.ParseQuery`).
pub fn parse_query(raw: Option<&str>) -> Query {
    let Some(raw) = raw else {
        return Vec::new();
    };
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Percent-decodes a query component; invalid escapes are kept literally.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| {
                    std::str::from_utf8(h)
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                });
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_valid_path_segment_name(name: &str) -> bool {
    name != "." && name != ".." && !name.contains('/') && !name.contains('%')
}

impl RequestInfo {
    /// Derives the request's attributes as `RequestInfoFactory.NewRequestInfo`.
    pub fn parse(method: &http::Method, path: &str, query: &Query) -> RequestInfo {
        let mut info = RequestInfo {
            path: path.to_string(),
            verb: method.as_str().to_ascii_lowercase(),
            ..Default::default()
        };
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        if parts.len() < 3 || (parts[0] != "api" && parts[0] != "apis") {
            return info;
        }
        info.prefix = parts[0].to_string();
        let mut cur: &[&str] = &parts[1..];
        if info.prefix == "apis" {
            if cur.len() < 3 {
                return info;
            }
            info.group = cur[0].to_string();
            cur = &cur[1..];
        }
        info.is_resource = true;
        info.version = cur[0].to_string();
        cur = &cur[1..];
        let mut via_path = false;
        if matches!(cur.first(), Some(&"proxy") | Some(&"watch")) {
            if cur.len() < 2 {
                info.is_resource = false;
                return info;
            }
            info.verb = cur[0].to_string();
            cur = &cur[1..];
            via_path = true;
        } else {
            info.verb = crate::auth::method_verb(method).to_string();
        }
        if cur.first() == Some(&"namespaces")
            && let Some(ns) = cur.get(1)
        {
            info.namespace = ns.to_string();
            if cur.len() > 2 && cur[2] != "status" && cur[2] != "finalize" {
                cur = &cur[2..];
            }
        }
        info.parts = cur.iter().map(|s| s.to_string()).collect();
        if info.parts.len() >= 3 && info.verb != "proxy" {
            info.subresource = info.parts[2].clone();
        }
        if info.parts.len() >= 2 {
            info.name = info.parts[1].clone();
        }
        if let Some(r) = info.parts.first() {
            info.resource = r.clone();
        }
        if info.name.is_empty() && info.verb == "get" {
            let watch = query_get(query, "watch")
                .is_some_and(|w| !matches!(w.to_ascii_lowercase().as_str(), "false" | "0" | ""));
            info.verb = if watch { "watch" } else { "list" }.into();
            if let Some(sel) = query_get(query, "fieldSelector")
                .and_then(|fs| metrics_bridge::selector::FieldSelector::parse(fs).ok())
                && let Some(name) = sel.required_value("metadata.name")
                && sel.requirements.len() == 1
                && is_valid_path_segment_name(name)
            {
                info.name = name.to_string();
            }
        }
        if info.name.is_empty() && info.verb == "delete" {
            info.verb = "deletecollection".into();
        }
        let _ = via_path;
        info
    }

    /// The attributes to authorize.
    pub fn attributes(&self) -> Attributes {
        if self.is_resource {
            Attributes::Resource(ResourceAttributes {
                namespace: self.namespace.clone(),
                verb: self.verb.clone(),
                group: self.group.clone(),
                version: self.version.clone(),
                resource: self.resource.clone(),
                subresource: self.subresource.clone(),
                name: self.name.clone(),
            })
        } else {
            Attributes::NonResource(NonResourceAttributes {
                path: self.path.clone(),
                verb: self.verb.clone(),
            })
        }
    }

    /// The 403 kube-apiserver answers when this request is denied; a non-empty `reason`
    /// (the authorizer's) is appended to the message, as kube-apiserver does.
    pub fn forbidden(&self, user: &str, reason: &str) -> metrics_bridge::status::Status {
        use metrics_bridge::status::Status;
        let reason = Some(reason);
        if !self.is_resource {
            return Status::forbidden_path(user, &self.verb, &self.path, reason);
        }
        let resource = if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        };
        let ns = (!self.namespace.is_empty()).then_some(self.namespace.as_str());
        let name = (!self.name.is_empty()).then_some(self.name.as_str());
        Status::forbidden_resource(user, &self.verb, &self.group, &resource, ns, name, reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn info(method: Method, path_and_query: &str) -> RequestInfo {
        let (path, q) = path_and_query
            .split_once('?')
            .map_or((path_and_query, None), |(p, q)| (p, Some(q)));
        RequestInfo::parse(&method, path, &parse_query(q))
    }

    #[test]
    fn request_info_like_the_apiserver() {
        let i = info(Method::GET, "/api/v1/nodes");
        assert!(i.is_resource);
        assert_eq!((i.verb.as_str(), i.resource.as_str()), ("list", "nodes"));
        let i = info(Method::GET, "/api/v1/namespaces/ns/pods/p");
        assert_eq!(
            (i.verb.as_str(), i.namespace.as_str(), i.name.as_str()),
            ("get", "ns", "p")
        );
        let i = info(Method::GET, "/api/v1/pods?watch=true&resourceVersion=5");
        assert_eq!(i.verb, "watch");
        let i = info(Method::GET, "/api/v1/watch/namespaces/ns/pods");
        assert_eq!((i.verb.as_str(), i.namespace.as_str()), ("watch", "ns"));
        let i = info(
            Method::GET,
            "/api/v1/namespaces/kube-system/configmaps?fieldSelector=metadata.name%3Dextension-apiserver-authentication&watch=1",
        );
        assert_eq!(
            (i.verb.as_str(), i.name.as_str()),
            ("watch", "extension-apiserver-authentication")
        );
        let i = info(Method::GET, "/api/v1/namespaces/default");
        assert_eq!(
            (i.resource.as_str(), i.name.as_str(), i.namespace.as_str()),
            ("namespaces", "default", "default")
        );
        let i = info(Method::GET, "/api/v1/nodes/n1/status");
        assert_eq!(i.subresource, "status");
        let i = info(Method::GET, "/apis/metrics.k8s.io/v1beta1");
        assert!(!i.is_resource);
        let i = info(
            Method::POST,
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        );
        assert_eq!(
            (i.verb.as_str(), i.group.as_str(), i.resource.as_str()),
            ("create", "authorization.k8s.io", "subjectaccessreviews")
        );
        let i = info(Method::DELETE, "/api/v1/namespaces/a/pods");
        assert_eq!(i.verb, "deletecollection");
        let i = info(Method::GET, "/healthz");
        assert_eq!((i.is_resource, i.verb.as_str()), (false, "get"));
        assert_eq!(
            info(Method::GET, "/api/v1/nodes")
                .forbidden("viewer", "")
                .message,
            r#"nodes is forbidden: User "viewer" cannot list resource "nodes" in API group "" at the cluster scope"#
        );
    }

    #[test]
    fn query_decoding() {
        let q = parse_query(Some("&labelSelector=app%3Dweb%2Ctier+in+(a)&limit=5&x"));
        assert_eq!(query_get(&q, "labelSelector"), Some("app=web,tier in (a)"));
        assert_eq!(query_get(&q, "limit"), Some("5"));
        assert_eq!(query_get(&q, "x"), Some(""));
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
