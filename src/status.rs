//! Kubernetes `Status` objects: the error bodies of every Kubernetes API server.
//!
//! kubectl, client-go and kube-rs read `message`, `reason` and `code` from these, and print
//! the message to users. The wording of each constructor is kube-apiserver's, so errors from
//! metrics-bridge (and kube-sim) read exactly like the real thing.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};

/// A `meta.k8s.io/v1` `Status` with `status: Failure`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub kind: String,
    pub api_version: String,
    pub metadata: StatusMeta,
    pub status: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
    pub code: u16,
}

/// Always empty in errors; present because clients expect the key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusMeta {}

/// What the error is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusDetails {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
}

/// `resource.group` as kube-apiserver prints it: `pods` for the core group,
/// `pods.metrics.k8s.io` otherwise.
fn qualified(resource: &str, group: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

impl Status {
    /// A failure with the given code, reason and message, and no details.
    pub fn failure(code: StatusCode, reason: &str, message: impl Into<String>) -> Self {
        Self {
            kind: "Status".into(),
            api_version: "v1".into(),
            metadata: StatusMeta {},
            status: "Failure".into(),
            message: message.into(),
            reason: reason.into(),
            details: None,
            code: code.as_u16(),
        }
    }

    fn with_details(mut self, name: &str, group: &str, kind: &str) -> Self {
        self.details = Some(StatusDetails {
            name: name.into(),
            group: group.into(),
            kind: kind.into(),
        });
        self
    }

    /// 404: `podmetrics.metrics.k8s.io "ns/name" not found`.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        Self::failure(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(resource, group)),
        )
        .with_details(name, group, resource)
    }

    /// 404 for a path that no handler serves: kube-apiserver's body is the text
    /// `404 page not found`, but for API paths it answers a `Status` with reason `NotFound`
    /// and message `the server could not find the requested resource`.
    pub fn path_not_found() -> Self {
        Self::failure(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 400 with the given message (a bad selector, a bad query parameter).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::failure(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    /// 401, as kube-apiserver answers a request it could not authenticate.
    pub fn unauthorized() -> Self {
        Self::failure(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
    }

    /// 403 for a resource request:
    /// `pods.metrics.k8s.io is forbidden: User "u" cannot list resource "pods" in API group
    /// "metrics.k8s.io" in the namespace "ns"`. `name` is the object's name for get.
    /// `resource` may be `resource/subresource`: the user "cannot get resource
    /// \"nodes/proxy\"", while the subject and the details name the resource alone, as
    /// kube-apiserver words it.
    pub fn forbidden_resource(
        user: &str,
        verb: &str,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
        name: Option<&str>,
        reason: Option<&str>,
    ) -> Self {
        let base = resource.split_once('/').map_or(resource, |(r, _)| r);
        let subject = match name {
            Some(n) => format!("{} \"{n}\" is forbidden", qualified(base, group)),
            None => format!("{} is forbidden", qualified(base, group)),
        };
        let scope = match namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_string(),
        };
        let mut message = format!(
            "{subject}: User \"{user}\" cannot {verb} resource \"{resource}\" in API group \"{group}\" {scope}"
        );
        if let Some(r) = reason.filter(|r| !r.is_empty()) {
            message.push_str(": ");
            message.push_str(r);
        }
        Self::failure(StatusCode::FORBIDDEN, "Forbidden", message).with_details(
            name.unwrap_or(""),
            group,
            base,
        )
    }

    /// 403 for a non-resource path: `forbidden: User "u" cannot get path "/metrics"`.
    pub fn forbidden_path(user: &str, verb: &str, path: &str, reason: Option<&str>) -> Self {
        let mut message = format!("forbidden: User \"{user}\" cannot {verb} path \"{path}\"");
        if let Some(r) = reason.filter(|r| !r.is_empty()) {
            message.push_str(": ");
            message.push_str(r);
        }
        Self::failure(StatusCode::FORBIDDEN, "Forbidden", message)
    }

    /// 405 for a verb the resource does not serve.
    pub fn method_not_supported(group: &str, resource: &str, verb: &str) -> Self {
        Self::failure(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!(
                "{verb} is not supported on resources of kind \"{}\"",
                qualified(resource, group)
            ),
        )
        .with_details("", group, resource)
    }

    /// 406: nothing in `Accept` can be produced.
    pub fn not_acceptable(supported: &[&str]) -> Self {
        Self::failure(
            StatusCode::NOT_ACCEPTABLE,
            "NotAcceptable",
            format!(
                "only the following media types are accepted: {}",
                supported.join(", ")
            ),
        )
    }

    /// 503, what kube-apiserver's aggregator answers while a backend is unavailable.
    pub fn service_unavailable() -> Self {
        Self::failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        )
    }

    /// 500 with the given message.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
    }

    /// 410: the requested resourceVersion is older than the server keeps.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::failure(StatusCode::GONE, "Expired", message)
    }

    /// The HTTP status code.
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Status {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut res = (self.status_code(), body).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_match_kube_apiserver() {
        let s = Status::not_found("metrics.k8s.io", "podmetrics", "default/web-1");
        assert_eq!(
            s.message,
            r#"podmetrics.metrics.k8s.io "default/web-1" not found"#
        );
        assert_eq!(s.code, 404);
        let s = Status::forbidden_resource(
            "viewer",
            "list",
            "metrics.k8s.io",
            "nodes",
            None,
            None,
            None,
        );
        assert_eq!(
            s.message,
            r#"nodes.metrics.k8s.io is forbidden: User "viewer" cannot list resource "nodes" in API group "metrics.k8s.io" at the cluster scope"#
        );
        let s = Status::forbidden_resource("u", "get", "", "pods", Some("ns"), Some("p"), None);
        assert_eq!(
            s.message,
            r#"pods "p" is forbidden: User "u" cannot get resource "pods" in API group "" in the namespace "ns""#
        );
        let s = Status::forbidden_resource("u", "get", "", "nodes/proxy", None, Some("n1"), None);
        assert_eq!(
            s.message,
            r#"nodes "n1" is forbidden: User "u" cannot get resource "nodes/proxy" in API group "" at the cluster scope"#
        );
        assert_eq!(s.details.as_ref().map(|d| d.kind.as_str()), Some("nodes"));
        let s = Status::forbidden_path("system:anonymous", "get", "/metrics", None);
        assert_eq!(
            s.message,
            r#"forbidden: User "system:anonymous" cannot get path "/metrics""#
        );
        let json = serde_json::to_value(Status::unauthorized()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401})
        );
    }
}
