//! `TokenReview`, `SelfSubjectReview`, `SubjectAccessReview`, `SelfSubjectAccessReview` and
//! `LocalSubjectAccessReview`: the endpoints delegated authentication and authorization call,
//! answered from the same authenticator and policy the API server itself uses.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use metrics_bridge::status::Status;
use serde_json::{Value, json};

use crate::auth::{self, Attributes, Authenticator, NonResourceAttributes, ResourceAttributes, UserInfo};

/// The audience kube-apiserver's tokens are for by default.
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

fn created(body: Value) -> Response {
    let mut res = (StatusCode::CREATED, body.to_string()).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

fn decode(body: &[u8], group: &str, kind: &str) -> Result<Value, Status> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        Status::bad_request(format!("the body of the request was in an unknown format - accepted media types include: application/json: {e}"))
    })?;
    let api_version = v["apiVersion"].as_str().unwrap_or("");
    let k = v["kind"].as_str().unwrap_or("");
    if (!api_version.is_empty() && api_version != format!("{group}/v1")) || (!k.is_empty() && k != kind) {
        return Err(Status::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({group}/v1)"
        )));
    }
    Ok(v)
}

fn invalid(kind: &str, group: &str, detail: &str) -> Status {
    Status::failure(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("{kind}.{group} \"\" is invalid: {detail}"),
    )
}

/// `POST /apis/authentication.k8s.io/v1/tokenreviews`.
pub fn token_review(authn: &Authenticator, body: &[u8]) -> Response {
    let mut review = match decode(body, "authentication.k8s.io", "TokenReview") {
        Ok(v) => v,
        Err(s) => return s.into_response(),
    };
    let token = review["spec"]["token"].as_str().unwrap_or("").to_string();
    if token.is_empty() {
        return Status::bad_request("token is required for TokenReview in authentication").into_response();
    }
    let audiences: Vec<String> = review["spec"]["audiences"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
        .unwrap_or_default();
    let mut status = json!({"user": {}});
    if let Some(user) = authn.token(&token) {
        if audiences.is_empty() || audiences.iter().any(|a| a == API_AUDIENCE) {
            status = json!({
                "authenticated": true,
                "user": user,
                "audiences": if audiences.is_empty() { vec![API_AUDIENCE.to_string()] } else { vec![API_AUDIENCE.to_string()] },
            });
        } else {
            status = json!({
                "user": {},
                "error": format!("token audiences {:?} is invalid for the target audiences {audiences:?}", [API_AUDIENCE]),
            });
        }
    }
    review["kind"] = json!("TokenReview");
    review["apiVersion"] = json!("authentication.k8s.io/v1");
    review["metadata"] = json!({"creationTimestamp": null});
    review["status"] = status;
    created(review)
}

/// `POST /apis/authentication.k8s.io/v1/selfsubjectreviews` (`kubectl auth whoami`).
pub fn self_subject_review(user: &UserInfo) -> Response {
    created(json!({
        "kind": "SelfSubjectReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "status": {"userInfo": user},
    }))
}

fn attributes(spec: &Value) -> Result<Attributes, String> {
    let res = spec.get("resourceAttributes").filter(|v| !v.is_null());
    let non = spec.get("nonResourceAttributes").filter(|v| !v.is_null());
    match (res, non) {
        (Some(r), None) => serde_json::from_value::<ResourceAttributes>(r.clone())
            .map(Attributes::Resource)
            .map_err(|e| e.to_string()),
        (None, Some(n)) => serde_json::from_value::<NonResourceAttributes>(n.clone())
            .map(Attributes::NonResource)
            .map_err(|e| e.to_string()),
        (Some(_), Some(_)) => Err("spec.nonResourceAttributes: Invalid value: \"null\": cannot be specified in combination with resourceAttributes".into()),
        (None, None) => Err("spec.resourceAttributes: Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified".into()),
    }
}

fn decision_status(user: &UserInfo, attrs: &Attributes) -> Value {
    let d = auth::authorize(user, attrs);
    if d.allowed {
        json!({"allowed": true, "reason": d.reason})
    } else {
        json!({"allowed": false})
    }
}

/// `POST /apis/authorization.k8s.io/v1/subjectaccessreviews` and, with `namespace`,
/// `.../namespaces/NS/localsubjectaccessreviews`.
pub fn subject_access_review(body: &[u8], namespace: Option<&str>) -> Response {
    let kind = if namespace.is_some() {
        "LocalSubjectAccessReview"
    } else {
        "SubjectAccessReview"
    };
    let mut review = match decode(body, "authorization.k8s.io", kind) {
        Ok(v) => v,
        Err(s) => return s.into_response(),
    };
    let spec = review["spec"].clone();
    let attrs = match attributes(&spec) {
        Ok(a) => a,
        Err(e) => return invalid(kind, "authorization.k8s.io", &e).into_response(),
    };
    if let Some(ns) = namespace {
        match &attrs {
            Attributes::Resource(r) if r.namespace == ns => {}
            Attributes::Resource(r) => {
                return Status::bad_request(format!(
                    "spec.resourceAttributes.namespace must match namespace: {ns}: {}",
                    r.namespace
                ))
                .into_response();
            }
            Attributes::NonResource(_) => {
                return invalid(kind, "authorization.k8s.io", "spec.nonResourceAttributes: Invalid value: \"null\": disallowed on this kind of request").into_response();
            }
        }
    }
    let user = UserInfo {
        username: spec["user"].as_str().unwrap_or("").to_string(),
        uid: spec["uid"].as_str().unwrap_or("").to_string(),
        groups: spec["groups"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
            .unwrap_or_default(),
        extra: serde_json::from_value(spec["extra"].clone()).unwrap_or_default(),
    };
    if user.username.is_empty() && user.groups.is_empty() {
        return invalid(kind, "authorization.k8s.io", "spec.user: Invalid value: \"\": at least one of user or group must be specified").into_response();
    }
    review["kind"] = json!(kind);
    review["apiVersion"] = json!("authorization.k8s.io/v1");
    review["metadata"] = json!({"creationTimestamp": null});
    review["status"] = decision_status(&user, &attrs);
    created(review)
}

/// `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews` (`kubectl auth can-i`).
pub fn self_subject_access_review(user: &UserInfo, body: &[u8]) -> Response {
    let mut review = match decode(body, "authorization.k8s.io", "SelfSubjectAccessReview") {
        Ok(v) => v,
        Err(s) => return s.into_response(),
    };
    let attrs = match attributes(&review["spec"]) {
        Ok(a) => a,
        Err(e) => return invalid("SelfSubjectAccessReview", "authorization.k8s.io", &e).into_response(),
    };
    review["kind"] = json!("SelfSubjectAccessReview");
    review["apiVersion"] = json!("authorization.k8s.io/v1");
    review["metadata"] = json!({"creationTimestamp": null});
    review["status"] = decision_status(user, &attrs);
    created(review)
}
