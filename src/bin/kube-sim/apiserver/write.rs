//! The write verbs of kube-sim's API server: create, update (PUT), patch, delete and
//! deletecollection of the stored kinds, the `status` subresources of pods, nodes and
//! namespaces, and `pods/binding`, with kube-apiserver's semantics:
//!
//! - **Create**: the server sets `uid`, `creationTimestamp` and `resourceVersion`, expands
//!   `generateName`, applies the kind's strategy (a pod's status is reset to `Pending` with its
//!   QoS class; a namespace gets the `kubernetes` finalizer and `Active`; a node keeps the
//!   status it is created with, as the kubelet registers), the defaulting and admission that
//!   change pods (service account, default tolerations, container defaults), and the
//!   namespace lifecycle checks (404 in a missing namespace, 403 in a terminating one). An
//!   existing name is 409 `AlreadyExists`.
//! - **Update/patch**: a stale `metadata.resourceVersion` is 409 `Conflict`; the main
//!   resource cannot change `status`, the `status` subresource cannot change `spec`, labels,
//!   annotations, finalizers or owner references; system metadata (`uid`, timestamps) is kept;
//!   a write that changes nothing records nothing. Patches: JSON merge, JSON patch and
//!   strategic merge ([`super::patch`]); server-side apply is 415.
//! - **Delete**: a pod is deleted gracefully as kube-apiserver's pod strategy says (bound,
//!   non-terminal pods get `deletionTimestamp` now + grace period and stay until their kubelet
//!   deletes them with grace 0; any pod deletion is first a MODIFIED with the deletion
//!   timestamp, then DELETED); a namespace turns `Terminating`, its content is deleted and it
//!   goes once empty; other kinds go at once. `preconditions` (uid, resourceVersion) are
//!   honoured; pods return their last state, other kinds a `Status` with the deleted uid.
//! - **Binding**: sets `spec.nodeName` of an unbound pod and its `PodScheduled` condition;
//!   binding a bound or terminating pod is 409.
//!
//! `?dryRun=All` runs everything but the write. Request bodies are JSON (protobuf and YAML are
//! 415); unknown fields are dropped, as with `fieldValidation=Ignore`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use metrics_bridge::status::Status;
use serde_json::{Map, Value, json};

use super::ApiServer;
use super::patch::{self, PatchError};
use super::request::{Query, RequestInfo, query_get};
use super::resources::json_response;
use crate::objects::{Kind, ListRequest, Mutation, Object, ObjectsError, Outcome, Store, Stored};

/// A request rejected with a Kubernetes `Status` body.
pub struct Reject(pub Response);

impl From<Status> for Reject {
    fn from(s: Status) -> Reject {
        Reject(s.into_response())
    }
}

impl From<ObjectsError> for Reject {
    fn from(e: ObjectsError) -> Reject {
        Reject(Status::internal(e.to_string()).into_response())
    }
}

/// The media type of a `Content-Type` header, lowercased, without parameters.
fn media_type(content_type: Option<&str>) -> String {
    content_type
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// A failure `Status` with `details` (name, group, kind and optional causes or uid).
fn failure(code: StatusCode, reason: &str, message: String, details: Value) -> Reject {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code.as_u16(),
    });
    Reject(json_response(code, body.to_string()))
}

/// `pods`, or `leases.coordination.k8s.io`, as kube-apiserver names a resource in messages.
fn qualified(kind: Kind, sub: &str) -> String {
    let resource = if sub.is_empty() {
        kind.resource().to_string()
    } else {
        format!("{}/{sub}", kind.resource())
    };
    if kind.group().is_empty() {
        resource
    } else {
        format!("{resource}.{}", kind.group())
    }
}

fn not_found(kind: Kind, name: &str) -> Reject {
    Status::not_found(kind.group(), kind.resource(), name).into()
}

/// 409 `AlreadyExists`.
fn already_exists(kind: Kind, name: &str) -> Reject {
    failure(
        StatusCode::CONFLICT,
        "AlreadyExists",
        format!("{} \"{name}\" already exists", qualified(kind, "")),
        json!({"name": name, "group": kind.group(), "kind": kind.resource()}),
    )
}

/// 409 `Conflict`: `Operation cannot be fulfilled on pods "x": <why>`.
fn conflict(kind: Kind, sub: &str, name: &str, why: &str) -> Reject {
    let resource = if sub.is_empty() {
        kind.resource().to_string()
    } else {
        format!("{}/{sub}", kind.resource())
    };
    failure(
        StatusCode::CONFLICT,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} \"{name}\": {why}",
            qualified(kind, sub)
        ),
        json!({"name": name, "group": kind.group(), "kind": resource}),
    )
}

const MODIFIED: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

/// One field error of a 422.
struct FieldError {
    field: String,
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueForbidden`, ...
    reason: &'static str,
    message: String,
}

impl FieldError {
    fn required(field: &str, detail: &str) -> FieldError {
        let message = if detail.is_empty() {
            "Required value".to_string()
        } else {
            format!("Required value: {detail}")
        };
        FieldError {
            field: field.into(),
            reason: "FieldValueRequired",
            message,
        }
    }

    fn invalid(field: &str, value: &str, detail: &str) -> FieldError {
        FieldError {
            field: field.into(),
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {value:?}: {detail}"),
        }
    }

    fn forbidden(field: &str, detail: &str) -> FieldError {
        FieldError {
            field: field.into(),
            reason: "FieldValueForbidden",
            message: format!("Forbidden: {detail}"),
        }
    }

    fn unsupported(field: &str, value: &str, supported: &[&str]) -> FieldError {
        let list = supported
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        FieldError {
            field: field.into(),
            reason: "FieldValueNotSupported",
            message: format!("Unsupported value: {value:?}: supported values: {list}"),
        }
    }
}

/// 422 `Invalid`: `Pod "x" is invalid: field: message` (a list in brackets when several).
fn invalid(kind_name: &str, group: &str, name: &str, errors: Vec<FieldError>) -> Reject {
    let parts: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect();
    let what = if parts.len() == 1 {
        parts.concat()
    } else {
        format!("[{}]", parts.join(", "))
    };
    let causes: Vec<Value> = errors
        .iter()
        .map(|e| json!({"reason": e.reason, "message": e.message, "field": e.field}))
        .collect();
    failure(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("{kind_name} \"{name}\" is invalid: {what}"),
        json!({"name": name, "group": group, "kind": kind_name, "causes": causes}),
    )
}

/// The request body as JSON; kube-sim reads no other encoding.
fn body_json(content_type: Option<&str>, body: &[u8], accepted: &[&str]) -> Result<Value, Reject> {
    let media = media_type(content_type);
    if !accepted.contains(&media.as_str()) {
        return Err(Status::failure(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ),
        )
        .into());
    }
    serde_json::from_slice(body).map_err(|e| {
        Status::bad_request(format!("couldn't get version/kind; json parse error: {e}")).into()
    })
}

const JSON: &[&str] = &["application/json"];

/// `?dryRun=All`.
fn dry_run(query: &Query, body: Option<&Value>) -> Result<bool, Reject> {
    let from_body = body
        .and_then(|b| b["dryRun"].as_array())
        .is_some_and(|a| !a.is_empty());
    match query_get(query, "dryRun") {
        None | Some("") => Ok(from_body),
        Some("All") => Ok(true),
        Some(other) => Err(Status::bad_request(format!(
            "Invalid dryRun value: {other}: supported values: \"All\""
        ))
        .into()),
    }
}

/// A timestamp as `metav1.Time` encodes it: RFC 3339, whole seconds, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let ts = k8s_openapi::jiff::Timestamp::from_second(secs)
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    k8s_openapi::jiff::fmt::strtime::format("%Y-%m-%dT%H:%M:%SZ", ts)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let ts: k8s_openapi::jiff::Timestamp = s.parse().ok()?;
    let secs = u64::try_from(ts.as_second()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// A random (version 4) UUID, as kube-apiserver gives every new object.
pub fn new_uid() -> String {
    let mut b = [0u8; 16];
    if crate::pki::random_bytes(&mut b).is_err() {
        // The system RNG failing is not something a simulator can recover from; fall back
        // to the clock so that uids stay unique within the process.
        let n = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = n.to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// `generateName` + five characters from apimachinery's alphabet (no vowels, no confusables).
fn generated_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut b = [0u8; 5];
    let _ = crate::pki::random_bytes(&mut b);
    let mut prefix = prefix.to_string();
    // As SimpleNameGenerator: the prefix is cut so the name fits 63 characters.
    prefix.truncate(58);
    let suffix: String = b
        .iter()
        .map(|x| char::from(ALPHABET[usize::from(*x) % ALPHABET.len()]))
        .collect();
    format!("{prefix}{suffix}")
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

/// A quantity in milli-units, enough to compare requests and limits (`1` = `1000m`,
/// `1Gi` = `1073741824`).
fn quantity_milli(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0f64.powi(2),
        "Gi" => 1024.0f64.powi(3),
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * mult * 1e3)
}

/// The pod's QoS class, as `qos.GetPodQOS` (CPU and memory of the app containers).
fn qos_class(spec: &Value) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    let containers = spec["containers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    for c in containers {
        let requests = c["resources"]["requests"].as_object();
        let limits = c["resources"]["limits"].as_object();
        let relevant = |m: Option<&Map<String, Value>>| {
            m.is_some_and(|m| m.contains_key("cpu") || m.contains_key("memory"))
        };
        any |= relevant(requests) || relevant(limits);
        for res in ["cpu", "memory"] {
            let lim = limits
                .and_then(|m| m.get(res))
                .and_then(Value::as_str)
                .and_then(quantity_milli);
            let req = requests
                .and_then(|m| m.get(res))
                .and_then(Value::as_str)
                .and_then(quantity_milli);
            // A request defaults to its limit; a missing limit is not Guaranteed.
            if lim.is_none() || req.is_some_and(|r| Some(r) != lim) {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

fn set_default(obj: &mut Value, key: &str, value: Value) {
    if let Value::Object(m) = obj
        && m.get(key).is_none_or(Value::is_null)
    {
        m.insert(key.to_string(), value);
    }
}

/// The defaulting and the admission plugins of a stock kube-apiserver that change a new pod:
/// `SetDefaults_Pod`/`PodSpec`/`Container`, ServiceAccount (the `default` account),
/// DefaultTolerationSeconds and Priority (no class: 0).
fn default_pod(pod: &mut Value) {
    let spec = &mut pod["spec"];
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "enableServiceLinks", json!(true));
    set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    set_default(spec, "priority", json!(0));
    let sa = spec["serviceAccountName"]
        .as_str()
        .or_else(|| spec["serviceAccount"].as_str())
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string();
    spec["serviceAccountName"] = json!(sa);
    spec["serviceAccount"] = json!(sa);
    for field in ["containers", "initContainers"] {
        if let Some(list) = spec[field].as_array_mut() {
            for c in list {
                let image = c["image"].as_str().unwrap_or("");
                let tag = image.rsplit('/').next().unwrap_or("");
                let latest =
                    !image.contains('@') && (!tag.contains(':') || tag.ends_with(":latest"));
                set_default(
                    c,
                    "imagePullPolicy",
                    json!(if latest { "Always" } else { "IfNotPresent" }),
                );
                set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
                set_default(c, "terminationMessagePolicy", json!("File"));
                set_default(c, "resources", json!({}));
                if let Some(ports) = c["ports"].as_array_mut() {
                    for p in ports {
                        set_default(p, "protocol", json!("TCP"));
                    }
                }
            }
        }
    }
    if !spec["tolerations"].is_array() {
        spec["tolerations"] = json!([]);
    }
    if let Some(tolerations) = spec["tolerations"].as_array_mut() {
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ] {
            let covered = tolerations.iter().any(|t| {
                (t["key"] == key || (t["key"].is_null() && t["operator"] == "Exists"))
                    && (t["effect"] == "NoExecute" || t["effect"].is_null())
            });
            if !covered {
                tolerations.push(json!({
                    "key": key,
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                }));
            }
        }
    }
}

/// The name, namespace and kind checks of a create, as the create handler and
/// `ValidateObjectMeta` do them.
fn check_identity(
    kind: Kind,
    info: &RequestInfo,
    obj: &mut Value,
    url_name: Option<&str>,
) -> Result<(), Reject> {
    let k = obj["kind"].as_str().unwrap_or("");
    let v = obj["apiVersion"].as_str().unwrap_or("");
    if (!k.is_empty() && k != kind.kind()) || (!v.is_empty() && v != kind.api_version()) {
        return Err(Status::bad_request(format!(
            "the API version in the data ({v}) does not match the expected API version ({})",
            kind.api_version()
        ))
        .into());
    }
    obj["kind"] = json!(kind.kind());
    obj["apiVersion"] = json!(kind.api_version());
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    let meta = &mut obj["metadata"];
    if kind.namespaced() {
        match meta["namespace"].as_str() {
            None | Some("") => meta["namespace"] = json!(info.namespace),
            Some(ns) if ns == info.namespace => {}
            Some(_) => {
                return Err(Status::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
                .into());
            }
        }
    } else if let Value::Object(m) = meta {
        m.remove("namespace");
    }
    if let Some(url_name) = url_name {
        let body_name = meta["name"].as_str().unwrap_or("");
        if body_name.is_empty() {
            meta["name"] = json!(url_name);
        } else if body_name != url_name {
            return Err(Status::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({url_name})"
            ))
            .into());
        }
    }
    Ok(())
}

fn name_errors(kind: Kind, name: &str) -> Vec<FieldError> {
    let (ok, msg) = if kind == Kind::Namespace {
        (is_dns_label(name), LABEL_MSG)
    } else {
        (is_dns_subdomain(name), SUBDOMAIN_MSG)
    };
    if ok {
        Vec::new()
    } else {
        vec![FieldError::invalid("metadata.name", name, msg)]
    }
}

/// What `ValidatePodCreate` and friends check that a client can get wrong easily.
fn validate_spec(kind: Kind, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match kind {
        Kind::Pod => match obj["spec"]["containers"].as_array() {
            Some(list) if !list.is_empty() => {
                for (i, c) in list.iter().enumerate() {
                    if c["name"].as_str().is_none_or(str::is_empty) {
                        errs.push(FieldError::required(
                            &format!("spec.containers[{i}].name"),
                            "",
                        ));
                    }
                    if c["image"].as_str().is_none_or(str::is_empty) {
                        errs.push(FieldError::required(
                            &format!("spec.containers[{i}].image"),
                            "",
                        ));
                    }
                }
            }
            _ => errs.push(FieldError::required("spec.containers", "")),
        },
        Kind::Lease => {
            if let Some(d) = obj["spec"]["leaseDurationSeconds"].as_i64()
                && d <= 0
            {
                errs.push(FieldError::invalid(
                    "spec.leaseDurationSeconds",
                    &d.to_string(),
                    "must be greater than 0",
                ));
            }
        }
        _ => {}
    }
    errs
}

fn decode_object(kind: Kind, value: Value) -> Result<Object, Reject> {
    Object::from_value(kind, value).map_err(|e| {
        Status::bad_request(format!(
            "{k} in version \"v1\" cannot be handled as a {k}: {e}",
            k = kind.kind()
        ))
        .into()
    })
}

fn stored_value(obj: &Stored) -> Result<Value, Reject> {
    serde_json::from_slice(&obj.json).map_err(|e| Status::internal(e.to_string()).into())
}

/// The namespace lifecycle admission for a new object in `namespace`.
fn check_namespace(store: &Store, kind: Kind, namespace: &str, name: &str) -> Result<(), Reject> {
    if !kind.namespaced() {
        return Ok(());
    }
    let Some(ns) = store.get(Kind::Namespace, "", namespace) else {
        return Err(not_found(Kind::Namespace, namespace));
    };
    let v = stored_value(&ns)?;
    if v["status"]["phase"] == "Terminating" {
        return Err(failure(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                qualified(kind, "")
            ),
            json!({"name": name, "group": kind.group(), "kind": kind.resource(), "causes": [{
                "reason": "NamespaceTerminating",
                "message": format!("namespace {namespace} is being terminated"),
                "field": "metadata.namespace",
            }]}),
        ));
    }
    Ok(())
}

fn object_response(code: StatusCode, obj: &Stored) -> Response {
    json_response(code, obj.json.clone())
}

/// Serves a write request. `sub` is the subresource (`""`, `status` or `binding`).
pub async fn serve(
    api: &ApiServer,
    kind: Kind,
    info: &RequestInfo,
    query: &Query,
    content_type: Option<&str>,
    body: Body,
) -> Response {
    let body = match super::read_body(body).await {
        Ok(b) => b,
        Err(s) => return s.into_response(),
    };
    let result = match (info.verb.as_str(), info.subresource.as_str()) {
        ("create", "") if info.name.is_empty() => {
            create(api, kind, info, query, content_type, &body)
        }
        ("create", "binding") if kind == Kind::Pod => bind(api, info, query, content_type, &body),
        ("update", sub @ ("" | "status")) if !info.name.is_empty() => {
            update(api, kind, info, sub, query, content_type, &body)
        }
        ("patch", sub @ ("" | "status")) if !info.name.is_empty() => {
            patch(api, kind, info, sub, query, content_type, &body)
        }
        ("delete", "") if !info.name.is_empty() => delete(api, kind, info, query, &body),
        ("deletecollection", "") => delete_collection(api, kind, info, query, &body),
        (verb, _) => Err(Status::method_not_supported(kind.group(), kind.resource(), verb).into()),
    };
    match result {
        Ok(r) => r,
        Err(Reject(r)) => r,
    }
}

fn create(
    api: &ApiServer,
    kind: Kind,
    info: &RequestInfo,
    query: &Query,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Response, Reject> {
    let mut obj = body_json(content_type, body, JSON)?;
    let dry = dry_run(query, None)?;
    check_identity(kind, info, &mut obj, None)?;
    let now = rfc3339(SystemTime::now());
    let meta = &mut obj["metadata"];
    let mut name = meta["name"].as_str().unwrap_or("").to_string();
    if name.is_empty() {
        match meta["generateName"].as_str().filter(|g| !g.is_empty()) {
            Some(prefix) => name = generated_name(prefix),
            None => {
                return Err(invalid(
                    kind.kind(),
                    kind.group(),
                    "",
                    vec![FieldError::required(
                        "metadata.name",
                        "name or generateName is required",
                    )],
                ));
            }
        }
        meta["name"] = json!(name);
    }
    let mut errs = name_errors(kind, &name);
    errs.extend(validate_spec(kind, &obj));
    if !errs.is_empty() {
        return Err(invalid(kind.kind(), kind.group(), &name, errs));
    }
    if let Value::Object(m) = &mut obj["metadata"] {
        for k in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "managedFields",
        ] {
            m.remove(k);
        }
        m.insert("uid".into(), json!(new_uid()));
        m.insert("creationTimestamp".into(), json!(now));
    }
    match kind {
        Kind::Pod => {
            default_pod(&mut obj);
            let qos = qos_class(&obj["spec"]);
            obj["status"] = json!({"phase": "Pending", "qosClass": qos});
        }
        Kind::Namespace => {
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
        }
        _ => {}
    }
    let namespace = if kind.namespaced() {
        info.namespace.as_str()
    } else {
        ""
    };
    check_namespace(&api.store, kind, namespace, &name)?;
    let object = decode_object(kind, obj)?;
    let outcome = api.store.modify(kind, namespace, &name, dry, |cur| {
        if cur.is_some() {
            return Err(already_exists(kind, &name));
        }
        Ok(Mutation::Put(object))
    })?;
    let stored = outcome
        .object
        .ok_or_else(|| Reject::from(Status::internal("the new object was not stored")))?;
    Ok(object_response(StatusCode::CREATED, &stored))
}

/// What an update may change, as the kind's update strategies and `ValidateObjectMetaUpdate`:
/// the result is `new` with the server-owned parts taken from `old`.
fn prepare_update(
    kind: Kind,
    sub: &str,
    name: &str,
    mut new: Value,
    old: &Value,
) -> Result<Value, Reject> {
    if !new["metadata"].is_object() {
        new["metadata"] = json!({});
    }
    let old_uid = old["metadata"]["uid"].as_str().unwrap_or("");
    match new["metadata"]["uid"].as_str() {
        None | Some("") => new["metadata"]["uid"] = json!(old_uid),
        Some(u) if u == old_uid => {}
        Some(u) => {
            return Err(invalid(
                kind.kind(),
                kind.group(),
                name,
                vec![FieldError::invalid("metadata.uid", u, "field is immutable")],
            ));
        }
    }
    let copy_meta = |new: &mut Value, keys: &[&str]| {
        for k in keys {
            match old["metadata"].get(*k) {
                Some(v) => new["metadata"][*k] = v.clone(),
                None => {
                    if let Value::Object(m) = &mut new["metadata"] {
                        m.remove(*k);
                    }
                }
            }
        }
    };
    copy_meta(
        &mut new,
        &[
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
            "name",
        ],
    );
    if let Value::Object(m) = &mut new["metadata"] {
        m.remove("resourceVersion");
        m.remove("managedFields");
        m.remove("selfLink");
    }
    new["kind"] = json!(kind.kind());
    new["apiVersion"] = json!(kind.api_version());
    let has_status = matches!(kind, Kind::Pod | Kind::Node | Kind::Namespace);
    match sub {
        "status" => {
            new["spec"] = old["spec"].clone();
            copy_meta(
                &mut new,
                &["labels", "annotations", "finalizers", "ownerReferences"],
            );
            if kind == Kind::Pod && new["status"]["qosClass"].as_str().is_none_or(str::is_empty) {
                new["status"]["qosClass"] = old["status"]["qosClass"].clone();
            }
        }
        _ if has_status => new["status"] = old["status"].clone(),
        _ => {}
    }
    if let Value::Object(m) = &mut new {
        m.retain(|_, v| !v.is_null());
    }
    let mut errs = validate_spec(kind, &new);
    errs.extend(validate_update(kind, &new, old));
    if !errs.is_empty() {
        return Err(invalid(kind.kind(), kind.group(), name, errs));
    }
    Ok(new)
}

/// `ValidatePodUpdate`'s and `ValidateNodeUpdate`'s immutability rules.
fn validate_update(kind: Kind, new: &Value, old: &Value) -> Vec<FieldError> {
    match kind {
        Kind::Pod => {
            // Erase what may change, then any other difference is forbidden.
            let mut a = new["spec"].clone();
            let b = &old["spec"];
            for field in ["containers", "initContainers"] {
                if let (Some(na), Some(ob)) = (a[field].as_array_mut(), b[field].as_array())
                    && na.len() == ob.len()
                {
                    for (n, o) in na.iter_mut().zip(ob) {
                        n["image"] = o["image"].clone();
                    }
                }
            }
            for field in [
                "activeDeadlineSeconds",
                "tolerations",
                "terminationGracePeriodSeconds",
            ] {
                a[field] = b[field].clone();
            }
            let strip = |v: &mut Value| {
                if let Value::Object(m) = v {
                    m.retain(|_, x| !x.is_null());
                }
            };
            let mut b = b.clone();
            strip(&mut a);
            strip(&mut b);
            if a != b {
                return vec![FieldError::forbidden(
                    "spec",
                    "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
                )];
            }
            Vec::new()
        }
        Kind::Node => {
            let mut errs = Vec::new();
            let old_cidrs = &old["spec"]["podCIDRs"];
            if !old_cidrs.is_null() && new["spec"]["podCIDRs"] != *old_cidrs {
                errs.push(FieldError::forbidden(
                    "spec.podCIDRs",
                    "node updates may not change podCIDR except from \"\" to valid",
                ));
            }
            let old_provider = &old["spec"]["providerID"];
            if !old_provider.is_null() && new["spec"]["providerID"] != *old_provider {
                errs.push(FieldError::forbidden(
                    "spec.providerID",
                    "node updates may not change providerID except from \"\" to valid",
                ));
            }
            errs
        }
        _ => Vec::new(),
    }
}

fn rv_of(v: &Value) -> &str {
    v["metadata"]["resourceVersion"].as_str().unwrap_or("")
}

/// Writes `new` (already checked against `old`) in place of the current object.
fn replace(
    store: &Store,
    kind: Kind,
    namespace: &str,
    name: &str,
    sub: &str,
    dry: bool,
    compute: impl FnOnce(&Value) -> Result<Value, Reject>,
) -> Result<Outcome, Reject> {
    store.modify(kind, namespace, name, dry, |cur| {
        let cur = cur.ok_or_else(|| not_found(kind, name))?;
        let old = stored_value(cur)?;
        let proposed = compute(&old)?;
        let wanted = rv_of(&proposed);
        if !wanted.is_empty() && wanted != cur.rv.to_string() {
            return Err(conflict(kind, "", name, MODIFIED));
        }
        let new = prepare_update(kind, sub, name, proposed, &old)?;
        Ok(Mutation::Put(decode_object(kind, new)?))
    })
}

fn namespace_of(kind: Kind, info: &RequestInfo) -> &str {
    if kind.namespaced() {
        info.namespace.as_str()
    } else {
        ""
    }
}

fn update(
    api: &ApiServer,
    kind: Kind,
    info: &RequestInfo,
    sub: &str,
    query: &Query,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Response, Reject> {
    let mut obj = body_json(content_type, body, JSON)?;
    let dry = dry_run(query, None)?;
    check_identity(kind, info, &mut obj, Some(&info.name))?;
    let ns = namespace_of(kind, info);
    let outcome = replace(&api.store, kind, ns, &info.name, sub, dry, |_| Ok(obj))?;
    let stored = outcome.object.ok_or_else(|| not_found(kind, &info.name))?;
    Ok(object_response(StatusCode::OK, &stored))
}

const PATCH_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

fn patch(
    api: &ApiServer,
    kind: Kind,
    info: &RequestInfo,
    sub: &str,
    query: &Query,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Response, Reject> {
    let media = media_type(content_type);
    let patch_doc = body_json(Some(&media), body, PATCH_TYPES)?;
    let dry = dry_run(query, None)?;
    let ns = namespace_of(kind, info);
    let name = info.name.as_str();
    let outcome = replace(&api.store, kind, ns, name, sub, dry, |old| {
        let unprocessable = |e: PatchError| {
            Reject::from(Status::failure(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                e.0,
            ))
        };
        let mut doc = old.clone();
        match media.as_str() {
            "application/json-patch+json" => {
                doc = patch::json_patch(doc, &patch_doc).map_err(unprocessable)?
            }
            "application/merge-patch+json" => patch::merge_patch(&mut doc, &patch_doc),
            _ => patch::strategic_merge_patch(&mut doc, &patch_doc, kind.kind())
                .map_err(unprocessable)?,
        }
        // A patch may not rename or move the object.
        for (field, want) in [("name", name), ("namespace", ns)] {
            let got = doc["metadata"][field].as_str().unwrap_or("");
            if got != want && !(field == "namespace" && want.is_empty()) {
                return Err(Status::bad_request(format!(
                    "metadata.{field}: Invalid value: {got:?}: field is immutable"
                ))
                .into());
            }
        }
        Ok(doc)
    })?;
    let stored = outcome.object.ok_or_else(|| not_found(kind, name))?;
    Ok(object_response(StatusCode::OK, &stored))
}

/// `DeleteOptions` from the body and the query.
#[derive(Debug, Default, Clone)]
pub struct DeleteOptions {
    pub grace_period: Option<i64>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub dry_run: bool,
}

impl DeleteOptions {
    fn parse(query: &Query, body: &[u8]) -> Result<DeleteOptions, Reject> {
        let doc: Value = if body.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(body).map_err(|e| {
                Reject::from(Status::bad_request(format!(
                    "couldn't get version/kind; json parse error: {e}"
                )))
            })?
        };
        let mut grace_period = doc["gracePeriodSeconds"].as_i64();
        if let Some(q) = query_get(query, "gracePeriodSeconds") {
            grace_period = Some(q.parse().map_err(|_| {
                Reject::from(Status::bad_request(format!(
                    "unable to parse gracePeriodSeconds: strconv.ParseInt: parsing {q:?}: invalid syntax"
                )))
            })?);
        }
        let pre = &doc["preconditions"];
        Ok(DeleteOptions {
            grace_period,
            uid: pre["uid"].as_str().map(str::to_string),
            resource_version: pre["resourceVersion"].as_str().map(str::to_string),
            dry_run: dry_run(query, Some(&doc))?,
        })
    }

    fn check(&self, kind: Kind, name: &str, obj: &Stored, v: &Value) -> Result<(), Reject> {
        let uid = v["metadata"]["uid"].as_str().unwrap_or("");
        if let Some(want) = &self.uid
            && want != uid
        {
            return Err(conflict(
                kind,
                "",
                name,
                &format!(
                    "Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"
                ),
            ));
        }
        let rv = obj.rv.to_string();
        if let Some(want) = &self.resource_version
            && *want != rv
        {
            return Err(conflict(
                kind,
                "",
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {rv}"
                ),
            ));
        }
        Ok(())
    }
}

/// The result of deleting a pod.
pub struct PodDeletion {
    /// The pod's last state.
    pub object: Arc<Stored>,
    /// Whether it is gone (else it waits for its kubelet, `deletionTimestamp` set).
    pub gone: bool,
}

/// Deletes a pod as kube-apiserver: `podStrategy.CheckGracefulDelete` picks the grace period
/// (the request's, else the pod's `terminationGracePeriodSeconds`; 0 for unbound or terminal
/// pods); the pod is updated with `deletionTimestamp` = now + grace (MODIFIED) and, when the
/// grace is 0, deleted (DELETED). A pod already being deleted may only have its grace period
/// shortened (its kubelet's final delete uses 0).
pub fn delete_pod(
    store: &Store,
    namespace: &str,
    name: &str,
    opts: &DeleteOptions,
) -> Result<PodDeletion, Reject> {
    let now = SystemTime::now();
    let mut grace_used = 0i64;
    let outcome = store.modify::<Reject>(Kind::Pod, namespace, name, opts.dry_run, |cur| {
        let cur = cur.ok_or_else(|| not_found(Kind::Pod, name))?;
        let mut pod = stored_value(cur)?;
        opts.check(Kind::Pod, name, cur, &pod)?;
        let mut grace = opts
            .grace_period
            .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
            .unwrap_or(0);
        if pod["spec"]["nodeName"].as_str().is_none_or(str::is_empty) {
            grace = 0;
        }
        if matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        ) {
            grace = 0;
        }
        if grace < 0 {
            grace = 1;
        }
        let meta = &mut pod["metadata"];
        if let Some(ts) = meta["deletionTimestamp"].as_str().and_then(parse_rfc3339) {
            let current = meta["deletionGracePeriodSeconds"].as_i64().unwrap_or(0);
            if current == 0 {
                grace_used = 0;
                return Ok(Mutation::Keep);
            }
            match opts.grace_period {
                Some(g) if g.max(0) < current => {
                    let g = g.max(0);
                    let shortened = ts
                        .checked_sub(Duration::from_secs(current as u64))
                        .and_then(|t| t.checked_add(Duration::from_secs(g as u64)))
                        .unwrap_or(now);
                    meta["deletionTimestamp"] = json!(rfc3339(shortened));
                    meta["deletionGracePeriodSeconds"] = json!(g);
                    grace_used = g;
                }
                _ => {
                    grace_used = current;
                    return Ok(Mutation::Keep);
                }
            }
        } else {
            let at = now + Duration::from_secs(grace as u64);
            meta["deletionTimestamp"] = json!(rfc3339(at));
            meta["deletionGracePeriodSeconds"] = json!(grace);
            grace_used = grace;
        }
        Ok(Mutation::Put(decode_object(Kind::Pod, pod)?))
    })?;
    let object = outcome.object.ok_or_else(|| not_found(Kind::Pod, name))?;
    if grace_used > 0 {
        return Ok(PodDeletion {
            object,
            gone: false,
        });
    }
    let last = store.modify(Kind::Pod, namespace, name, opts.dry_run, |_| {
        Ok::<_, Reject>(Mutation::Delete)
    })?;
    Ok(PodDeletion {
        object: last.object.unwrap_or(object),
        gone: true,
    })
}

/// The kubelet's final delete of a pod it has stopped: grace 0, on the uid it knows.
pub fn finalize_pod(store: &Store, namespace: &str, name: &str) -> Result<(), Reject> {
    let Some(cur) = store.get(Kind::Pod, namespace, name) else {
        return Ok(());
    };
    let uid = stored_value(&cur)?["metadata"]["uid"]
        .as_str()
        .map(str::to_string);
    delete_pod(
        store,
        namespace,
        name,
        &DeleteOptions {
            grace_period: Some(0),
            uid,
            ..Default::default()
        },
    )
    .map(|_| ())
}

/// The namespaces `NamespaceLifecycle` admission never lets go.
const IMMORTAL: &[&str] = &["default", "kube-system", "kube-public"];

fn delete(
    api: &ApiServer,
    kind: Kind,
    info: &RequestInfo,
    query: &Query,
    body: &[u8],
) -> Result<Response, Reject> {
    let opts = DeleteOptions::parse(query, body)?;
    let ns = namespace_of(kind, info);
    let (code, body) = delete_one(api, kind, ns, &info.name, &opts)?;
    Ok(json_response(code, body))
}

/// Deletes one object; the response code and body.
fn delete_one(
    api: &ApiServer,
    kind: Kind,
    ns: &str,
    name: &str,
    opts: &DeleteOptions,
) -> Result<(StatusCode, Vec<u8>), Reject> {
    match kind {
        Kind::Pod => {
            let d = delete_pod(&api.store, ns, name, opts)?;
            if !d.gone && !opts.dry_run {
                api.control.pod_terminating(ns, name);
            }
            Ok((StatusCode::OK, d.object.json.to_vec()))
        }
        Kind::Namespace => {
            if IMMORTAL.contains(&name) {
                return Err(failure(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    format!(
                        "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
                    ),
                    json!({"name": name, "kind": "namespaces"}),
                ));
            }
            let now = rfc3339(SystemTime::now());
            let outcome =
                api.store
                    .modify::<Reject>(Kind::Namespace, "", name, opts.dry_run, |cur| {
                        let cur = cur.ok_or_else(|| not_found(kind, name))?;
                        let mut v = stored_value(cur)?;
                        opts.check(kind, name, cur, &v)?;
                        if v["metadata"]["deletionTimestamp"].is_string() {
                            return Ok(Mutation::Keep);
                        }
                        v["metadata"]["deletionTimestamp"] = json!(now);
                        v["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                        v["status"]["phase"] = json!("Terminating");
                        Ok(Mutation::Put(decode_object(kind, v)?))
                    })?;
            if outcome.event.is_some() {
                let store = Arc::clone(&api.store);
                let control = Arc::clone(&api.control);
                let ns = name.to_string();
                tokio::spawn(async move { namespace_controller(store, control, ns).await });
            }
            let obj = outcome.object.ok_or_else(|| not_found(kind, name))?;
            Ok((StatusCode::OK, obj.json.to_vec()))
        }
        _ => {
            let outcome = api
                .store
                .modify::<Reject>(kind, ns, name, opts.dry_run, |cur| {
                    let cur = cur.ok_or_else(|| not_found(kind, name))?;
                    let v = stored_value(cur)?;
                    opts.check(kind, name, cur, &v)?;
                    Ok(Mutation::Delete)
                })?;
            let obj = outcome.object.ok_or_else(|| not_found(kind, name))?;
            let uid = stored_value(&obj)?["metadata"]["uid"].clone();
            // `finalizeDelete` without ReturnDeletedObject: a Status naming the object.
            let body = json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {"name": name, "group": kind.group(), "kind": kind.resource(), "uid": uid},
            });
            Ok((StatusCode::OK, body.to_string().into_bytes()))
        }
    }
}

/// kube-controller-manager's namespace controller for one terminating namespace: deletes its
/// content (pods gracefully, so their kubelets finish them), waits for it to be gone, then
/// removes the `kubernetes` finalizer and the namespace.
async fn namespace_controller(
    store: Arc<Store>,
    control: Arc<crate::control::Control>,
    ns: String,
) {
    let none_l = metrics_bridge::selector::LabelSelector::default();
    let none_f = metrics_bridge::selector::FieldSelector::default();
    let mut asked: std::collections::HashSet<String> = Default::default();
    loop {
        let mut remaining = 0usize;
        for kind in [Kind::Pod, Kind::ConfigMap, Kind::Lease] {
            let Ok(snap) = store.list(
                kind,
                &ListRequest {
                    namespace: Some(&ns),
                    labels: &none_l,
                    fields: &none_f,
                    limit: 0,
                    after: None,
                    at: None,
                },
            ) else {
                continue;
            };
            remaining += snap.items.len();
            for obj in snap.items {
                let name = obj.name.to_string();
                if kind == Kind::Pod {
                    if asked.insert(name.clone())
                        && let Ok(d) = delete_pod(&store, &ns, &name, &DeleteOptions::default())
                        && !d.gone
                    {
                        control.pod_terminating(&ns, &name);
                    }
                } else {
                    let _ = store.modify(kind, &ns, &name, false, |_| {
                        Ok::<_, Reject>(Mutation::Delete)
                    });
                }
            }
        }
        if remaining == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let finalized = store.modify(Kind::Namespace, "", &ns, false, |cur| {
        let Some(cur) = cur else {
            return Ok::<_, Reject>(Mutation::Keep);
        };
        let mut v = stored_value(cur)?;
        v["spec"]["finalizers"] = json!([]);
        Ok(Mutation::Put(decode_object(Kind::Namespace, v)?))
    });
    if finalized.is_ok() {
        let _ = store.modify(Kind::Namespace, "", &ns, false, |_| {
            Ok::<_, Reject>(Mutation::Delete)
        });
    }
}

fn delete_collection(
    api: &ApiServer,
    kind: Kind,
    info: &RequestInfo,
    query: &Query,
    body: &[u8],
) -> Result<Response, Reject> {
    let opts = DeleteOptions::parse(query, body)?;
    let list = super::resources::ListOptions::parse(kind, query, false).map_err(Reject::from)?;
    let ns = namespace_of(kind, info);
    let snap = api
        .store
        .list(
            kind,
            &ListRequest {
                namespace: (!ns.is_empty()).then_some(ns),
                labels: &list.labels,
                fields: &list.fields,
                limit: 0,
                after: None,
                at: None,
            },
        )
        .map_err(|_| Reject::from(Status::internal("listing the collection failed")))?;
    let mut items: Vec<u8> = Vec::new();
    let mut first = true;
    for obj in &snap.items {
        let result = if kind == Kind::Pod || kind == Kind::Namespace {
            delete_one(api, kind, &obj.namespace, &obj.name, &opts).map(|(_, b)| b)
        } else {
            api.store
                .modify(kind, &obj.namespace, &obj.name, opts.dry_run, |_| {
                    Ok::<_, Reject>(Mutation::Delete)
                })
                .map(|o| o.object.map(|s| s.json.to_vec()).unwrap_or_default())
        };
        match result {
            Ok(b) if !b.is_empty() => {
                if !first {
                    items.push(b',');
                }
                first = false;
                items.extend_from_slice(&b);
            }
            // Gone meanwhile (or immortal): deletecollection carries on, as kube-apiserver.
            _ => {}
        }
    }
    let mut out = format!(
        "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{{\"resourceVersion\":\"{}\"}},\"items\":[",
        kind.kind(),
        kind.api_version(),
        api.store.revision()
    )
    .into_bytes();
    out.extend_from_slice(&items);
    out.extend_from_slice(b"]}");
    Ok(json_response(StatusCode::OK, out))
}

fn bind(
    api: &ApiServer,
    info: &RequestInfo,
    query: &Query,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Response, Reject> {
    let binding = body_json(content_type, body, JSON)?;
    let dry = dry_run(query, None)?;
    let name = info.name.as_str();
    let ns = info.namespace.as_str();
    let body_name = binding["metadata"]["name"].as_str().unwrap_or("");
    if !body_name.is_empty() && body_name != name {
        return Err(
            Status::bad_request("name in URL does not match name in Binding object").into(),
        );
    }
    let target_kind = binding["target"]["kind"].as_str().unwrap_or("");
    let target = binding["target"]["name"].as_str().unwrap_or("");
    let mut errs = Vec::new();
    if !target_kind.is_empty() && target_kind != "Node" {
        errs.push(FieldError::unsupported(
            "target.kind",
            target_kind,
            &["Node"],
        ));
    }
    if target.is_empty() {
        errs.push(FieldError::required("target.name", ""));
    }
    if !errs.is_empty() {
        return Err(invalid("Binding", "", name, errs));
    }
    let now = rfc3339(SystemTime::now());
    let annotations = binding["metadata"]["annotations"].as_object().cloned();
    let want_uid = binding["metadata"]["uid"]
        .as_str()
        .filter(|u| !u.is_empty());
    api.store.modify(Kind::Pod, ns, name, dry, |cur| {
        let cur = cur.ok_or_else(|| not_found(Kind::Pod, name))?;
        let mut pod = stored_value(cur)?;
        let uid = pod["metadata"]["uid"].as_str().unwrap_or("");
        if let Some(want) = want_uid
            && want != uid
        {
            return Err(conflict(
                Kind::Pod,
                "binding",
                name,
                &format!(
                    "Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"
                ),
            ));
        }
        if pod["metadata"]["deletionTimestamp"].is_string() {
            return Err(conflict(
                Kind::Pod,
                "binding",
                name,
                &format!("pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        let current = pod["spec"]["nodeName"].as_str().unwrap_or("");
        if !current.is_empty() {
            return Err(conflict(
                Kind::Pod,
                "binding",
                name,
                &format!("pod {name} is already assigned to node {current:?}"),
            ));
        }
        pod["spec"]["nodeName"] = json!(target);
        if let Some(a) = &annotations {
            for (k, v) in a {
                pod["metadata"]["annotations"][k] = v.clone();
            }
        }
        // `UpdatePodCondition`: PodScheduled True, its transition time moved when it changes.
        if !pod["status"]["conditions"].is_array() {
            pod["status"]["conditions"] = json!([]);
        }
        if let Some(conds) = pod["status"]["conditions"].as_array_mut() {
            match conds.iter_mut().find(|c| c["type"] == "PodScheduled") {
                Some(c) => {
                    if c["status"] != "True" {
                        c["status"] = json!("True");
                        c["lastTransitionTime"] = json!(now);
                    }
                    if let Value::Object(m) = c {
                        m.remove("reason");
                        m.remove("message");
                    }
                }
                None => conds.push(json!({
                    "type": "PodScheduled",
                    "status": "True",
                    "lastProbeTime": null,
                    "lastTransitionTime": now,
                })),
            }
        }
        Ok(Mutation::Put(decode_object(Kind::Pod, pod)?))
    })?;
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    Ok(json_response(StatusCode::CREATED, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_and_qos() {
        assert_eq!(quantity_milli("1"), quantity_milli("1000m"));
        assert_eq!(quantity_milli("1Gi"), Some(1024f64.powi(3) * 1e3));
        assert_eq!(quantity_milli("1e3"), quantity_milli("1k"));
        assert_eq!(quantity_milli("x"), None);
        let guaranteed = json!({"containers": [{"resources": {
            "requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1000m", "memory": "1Gi"}}}]});
        assert_eq!(qos_class(&guaranteed), "Guaranteed");
        let limits_only =
            json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]});
        assert_eq!(qos_class(&limits_only), "Guaranteed");
        let burstable = json!({"containers": [{"resources": {"requests": {"cpu": "100m"}}}]});
        assert_eq!(qos_class(&burstable), "Burstable");
        assert_eq!(
            qos_class(&json!({"containers": [{"name": "a"}]})),
            "BestEffort"
        );
    }

    #[test]
    fn names_uids_and_times() {
        assert!(is_dns_subdomain("node-00001.example"));
        assert!(!is_dns_subdomain("Node"));
        assert!(!is_dns_label("a.b"));
        let n = generated_name("web-7d9f8b6c5-");
        assert_eq!(n.len(), "web-7d9f8b6c5-".len() + 5);
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(u.as_bytes()[14], b'4');
        assert_ne!(u, new_uid());
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20Z"), Some(t));
    }

    #[test]
    fn pod_defaults_and_admission() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "image": "nginx", "ports": [{"containerPort": 80}]},
            {"name": "b", "image": "reg/x:1.2"}
        ]}});
        default_pod(&mut pod);
        let s = &pod["spec"];
        assert_eq!(s["serviceAccountName"], "default");
        assert_eq!(s["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(s["containers"][1]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(s["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(s["tolerations"].as_array().unwrap().len(), 2);
        assert_eq!(s["tolerations"][1]["key"], "node.kubernetes.io/unreachable");
        // An Exists toleration without a key covers both.
        let mut ds = json!({"spec": {"containers": [{"name": "a", "image": "x:1"}],
            "tolerations": [{"operator": "Exists"}]}});
        default_pod(&mut ds);
        assert_eq!(ds["spec"]["tolerations"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn update_rules() {
        let old = json!({"kind": "Pod", "metadata": {"name": "p", "uid": "u1", "creationTimestamp": "t",
            "labels": {"a": "1"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}], "nodeName": "n"},
            "status": {"phase": "Running", "qosClass": "BestEffort"}});
        // The main resource keeps the status; an image change is allowed.
        let mut new = old.clone();
        new["status"]["phase"] = json!("Failed");
        new["spec"]["containers"][0]["image"] = json!("i:2");
        new["metadata"]["creationTimestamp"] = json!("other");
        let out = prepare_update(Kind::Pod, "", "p", new, &old).ok().unwrap();
        assert_eq!(out["status"]["phase"], "Running");
        assert_eq!(out["spec"]["containers"][0]["image"], "i:2");
        assert_eq!(out["metadata"]["creationTimestamp"], "t");
        // The status subresource keeps spec and labels, backfills the QoS class.
        let mut new = old.clone();
        new["status"] = json!({"phase": "Succeeded"});
        new["metadata"]["labels"] = json!({"b": "2"});
        new["spec"]["nodeName"] = json!("elsewhere");
        let out = prepare_update(Kind::Pod, "status", "p", new, &old)
            .ok()
            .unwrap();
        assert_eq!(
            out["status"],
            json!({"phase": "Succeeded", "qosClass": "BestEffort"})
        );
        assert_eq!(out["metadata"]["labels"], json!({"a": "1"}));
        assert_eq!(out["spec"]["nodeName"], "n");
        // Moving a pod by update is forbidden; so is changing the uid.
        let mut new = old.clone();
        new["spec"]["nodeName"] = json!("elsewhere");
        assert!(prepare_update(Kind::Pod, "", "p", new, &old).is_err());
        let mut new = old.clone();
        new["metadata"]["uid"] = json!("u2");
        assert!(prepare_update(Kind::Pod, "", "p", new, &old).is_err());
    }
}
