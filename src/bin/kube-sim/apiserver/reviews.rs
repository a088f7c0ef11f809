//! `TokenReview`, `SelfSubjectReview`, `SubjectAccessReview`, `SelfSubjectAccessReview` and
//! `LocalSubjectAccessReview`: the endpoints delegated authentication and authorization call,
//! answered from the same authenticator and policy the API server itself uses.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use metrics_bridge::status::Status;
use serde_json::{Value, json};

use crate::auth::{
    self, Attributes, Authenticator, NonResourceAttributes, ResourceAttributes, UserInfo,
};

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

/// The media types review bodies may come in (kubectl 1.33 sends protobuf).
const ACCEPTED: &str = "application/json, application/vnd.kubernetes.protobuf";

fn decode(
    body: &[u8],
    content_type: Option<&str>,
    group: &str,
    kind: &str,
) -> Result<Value, Status> {
    let media = content_type
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase())
        .unwrap_or_else(|| "application/json".into());
    let v: Value = match media.as_str() {
        "application/json" | "" => serde_json::from_slice(body)
            .map_err(|e| Status::bad_request(format!("error decoding the {kind} body: {e}")))?,
        "application/vnd.kubernetes.protobuf" => proto::decode(body, kind)
            .map_err(|e| Status::bad_request(format!("error decoding the {kind} body: {e}")))?,
        other => {
            return Err(Status::failure(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: {ACCEPTED} (got {other})"
                ),
            ));
        }
    };
    let api_version = v["apiVersion"].as_str().unwrap_or("");
    let k = v["kind"].as_str().unwrap_or("");
    if (!api_version.is_empty() && api_version != format!("{group}/v1"))
        || (!k.is_empty() && k != kind)
    {
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
pub fn token_review(authn: &Authenticator, body: &[u8], content_type: Option<&str>) -> Response {
    let mut review = match decode(body, content_type, "authentication.k8s.io", "TokenReview") {
        Ok(v) => v,
        Err(s) => return s.into_response(),
    };
    let token = review["spec"]["token"].as_str().unwrap_or("").to_string();
    if token.is_empty() {
        return Status::bad_request("token is required for TokenReview in authentication")
            .into_response();
    }
    let audiences: Vec<String> = review["spec"]["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let mut status = json!({"user": {}});
    if let Some(user) = authn.token(&token) {
        if audiences.is_empty() || audiences.iter().any(|a| a == API_AUDIENCE) {
            status = json!({
                "authenticated": true,
                "user": user,
                // The intersection of the requested audiences and the token's (the API's).
                "audiences": [API_AUDIENCE],
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
pub fn subject_access_review(
    body: &[u8],
    content_type: Option<&str>,
    namespace: Option<&str>,
) -> Response {
    let kind = if namespace.is_some() {
        "LocalSubjectAccessReview"
    } else {
        "SubjectAccessReview"
    };
    let mut review = match decode(body, content_type, "authorization.k8s.io", kind) {
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
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        extra: serde_json::from_value(spec["extra"].clone()).unwrap_or_default(),
    };
    if user.username.is_empty() && user.groups.is_empty() {
        return invalid(
            kind,
            "authorization.k8s.io",
            "spec.user: Invalid value: \"\": at least one of user or group must be specified",
        )
        .into_response();
    }
    review["kind"] = json!(kind);
    review["apiVersion"] = json!("authorization.k8s.io/v1");
    review["metadata"] = json!({"creationTimestamp": null});
    review["status"] = decision_status(&user, &attrs);
    created(review)
}

/// `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews` (`kubectl auth can-i`).
pub fn self_subject_access_review(
    user: &UserInfo,
    body: &[u8],
    content_type: Option<&str>,
) -> Response {
    let mut review = match decode(
        body,
        content_type,
        "authorization.k8s.io",
        "SelfSubjectAccessReview",
    ) {
        Ok(v) => v,
        Err(s) => return s.into_response(),
    };
    let attrs = match attributes(&review["spec"]) {
        Ok(a) => a,
        Err(e) => {
            return invalid("SelfSubjectAccessReview", "authorization.k8s.io", &e).into_response();
        }
    };
    review["kind"] = json!("SelfSubjectAccessReview");
    review["apiVersion"] = json!("authorization.k8s.io/v1");
    review["metadata"] = json!({"creationTimestamp": null});
    review["status"] = decision_status(user, &attrs);
    created(review)
}

/// Protobuf request bodies (`k8s\0` + `runtime.Unknown`), decoded with k8s-pb into the same
/// JSON shape the JSON path sees.
mod proto {
    use k8s_pb::api::authentication::v1 as authn;
    use k8s_pb::api::authorization::v1 as authz;
    use prost::Message;
    use serde_json::{Value, json};

    fn resource(r: &authz::ResourceAttributes) -> Value {
        json!({
            "namespace": r.namespace.clone().unwrap_or_default(),
            "verb": r.verb.clone().unwrap_or_default(),
            "group": r.group.clone().unwrap_or_default(),
            "version": r.version.clone().unwrap_or_default(),
            "resource": r.resource.clone().unwrap_or_default(),
            "subresource": r.subresource.clone().unwrap_or_default(),
            "name": r.name.clone().unwrap_or_default(),
        })
    }

    fn non_resource(n: &authz::NonResourceAttributes) -> Value {
        json!({"path": n.path.clone().unwrap_or_default(), "verb": n.verb.clone().unwrap_or_default()})
    }

    fn attrs(
        r: Option<&authz::ResourceAttributes>,
        n: Option<&authz::NonResourceAttributes>,
    ) -> serde_json::Map<String, Value> {
        let mut spec = serde_json::Map::new();
        if let Some(r) = r {
            spec.insert("resourceAttributes".into(), resource(r));
        }
        if let Some(n) = n {
            spec.insert("nonResourceAttributes".into(), non_resource(n));
        }
        spec
    }

    fn sar_spec(s: &authz::SubjectAccessReviewSpec) -> Value {
        let mut spec = attrs(
            s.resource_attributes.as_ref(),
            s.non_resource_attributes.as_ref(),
        );
        spec.insert("user".into(), json!(s.user.clone().unwrap_or_default()));
        spec.insert("groups".into(), json!(s.groups));
        spec.insert("uid".into(), json!(s.uid.clone().unwrap_or_default()));
        let extra: serde_json::Map<String, Value> = s
            .extra
            .iter()
            .map(|(k, v)| (k.clone(), json!(v.items)))
            .collect();
        spec.insert("extra".into(), Value::Object(extra));
        Value::Object(spec)
    }

    /// Decodes a protobuf-encoded review of `kind`.
    pub fn decode(body: &[u8], kind: &str) -> Result<Value, String> {
        let raw = body
            .strip_prefix(b"k8s\x00")
            .ok_or("the protobuf body lacks the k8s envelope")?;
        let unknown =
            k8s_pb::apimachinery::pkg::runtime::Unknown::decode(raw).map_err(|e| e.to_string())?;
        let got = unknown
            .type_meta
            .as_ref()
            .and_then(|t| t.kind.clone())
            .unwrap_or_default();
        if got != kind {
            return Err(format!("expected a {kind}, got {got:?}"));
        }
        let inner = unknown.raw.unwrap_or_default();
        let spec = match kind {
            "TokenReview" => {
                let r = authn::TokenReview::decode(inner.as_slice()).map_err(|e| e.to_string())?;
                let s = r.spec.unwrap_or_default();
                json!({"token": s.token.unwrap_or_default(), "audiences": s.audiences})
            }
            "SubjectAccessReview" => {
                let r = authz::SubjectAccessReview::decode(inner.as_slice())
                    .map_err(|e| e.to_string())?;
                sar_spec(&r.spec.unwrap_or_default())
            }
            "LocalSubjectAccessReview" => {
                let r = authz::LocalSubjectAccessReview::decode(inner.as_slice())
                    .map_err(|e| e.to_string())?;
                sar_spec(&r.spec.unwrap_or_default())
            }
            "SelfSubjectAccessReview" => {
                let r = authz::SelfSubjectAccessReview::decode(inner.as_slice())
                    .map_err(|e| e.to_string())?;
                let s = r.spec.unwrap_or_default();
                Value::Object(attrs(
                    s.resource_attributes.as_ref(),
                    s.non_resource_attributes.as_ref(),
                ))
            }
            other => return Err(format!("{other} is not accepted as protobuf")),
        };
        Ok(json!({"spec": spec}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn protobuf_self_subject_access_review() {
        use k8s_pb::api::authorization::v1 as authz;
        let review = authz::SelfSubjectAccessReview {
            spec: Some(authz::SelfSubjectAccessReviewSpec {
                resource_attributes: Some(authz::ResourceAttributes {
                    verb: Some("get".into()),
                    resource: Some("nodes".into()),
                    subresource: Some("metrics".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown {
            type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
                api_version: Some("authorization.k8s.io/v1".into()),
                kind: Some("SelfSubjectAccessReview".into()),
            }),
            raw: Some(review.encode_to_vec()),
            ..Default::default()
        };
        let mut body = b"k8s\x00".to_vec();
        body.extend(unknown.encode_to_vec());
        let v = decode(
            &body,
            Some("application/vnd.kubernetes.protobuf"),
            "authorization.k8s.io",
            "SelfSubjectAccessReview",
        )
        .unwrap();
        assert_eq!(v["spec"]["resourceAttributes"]["subresource"], "metrics");
        let admin = UserInfo {
            username: "a".into(),
            groups: vec!["system:masters".into()],
            ..Default::default()
        };
        let res =
            self_subject_access_review(&admin, &body, Some("application/vnd.kubernetes.protobuf"));
        assert_eq!(res.status(), StatusCode::CREATED);
    }
}
