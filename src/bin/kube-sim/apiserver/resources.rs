//! get, list and watch of the stored kinds, in JSON, `PartialObjectMetadata(List)` and Table,
//! with kube-apiserver's resourceVersion, paging and watch semantics.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body::Frame;
use metrics_bridge::selector::{FieldSelector, LabelSelector};
use metrics_bridge::status::Status;
use serde_json::{Value, json};

use super::ApiServer;
use super::negotiate::parse_accept;
use super::request::{Query, RequestInfo, query_get};
use super::table;
use crate::objects::{EventType, Key, Kind, ListRequest, ReadError, Snapshot, Store, Stored};

/// How objects are represented in a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repr {
    Json,
    /// `PartialObjectMetadata` (`meta.k8s.io/v1` or `v1beta1`).
    Metadata(&'static str),
    /// Table (`meta.k8s.io/v1` or `v1beta1`), with `includeObject`.
    Table(&'static str, IncludeObject),
}

/// Table's `includeObject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

fn meta_version(v: &str) -> Option<&'static str> {
    match v {
        "v1" => Some("v1"),
        "v1beta1" => Some("v1beta1"),
        _ => None,
    }
}

/// Chooses the representation from `Accept`, as kube-apiserver: the first acceptable media
/// range wins; a conversion target must fit the request (`PartialObjectMetadataList` for a
/// list, `PartialObjectMetadata` for get and watch).
pub fn negotiate(accept: Option<&str>, list: bool, query: &Query) -> Result<Repr, Status> {
    let include = match query_get(query, "includeObject").unwrap_or("") {
        "" | "Metadata" => IncludeObject::Metadata,
        "None" => IncludeObject::None,
        "Object" => IncludeObject::Object,
        other => {
            return Err(Status::bad_request(format!(
                "includeObject: Unsupported value: {other:?}: supported values: \"Metadata\", \"None\", \"Object\""
            )));
        }
    };
    for r in parse_accept(accept) {
        if !r.accepts_json() {
            continue;
        }
        match r.target() {
            None => return Ok(Repr::Json),
            Some((as_, g, v)) => {
                let Some(v) = meta_version(v) else { continue };
                if g != "meta.k8s.io" {
                    continue;
                }
                match as_ {
                    "Table" => return Ok(Repr::Table(v, include)),
                    "PartialObjectMetadataList" if list => return Ok(Repr::Metadata(v)),
                    "PartialObjectMetadata" if !list => return Ok(Repr::Metadata(v)),
                    _ => continue,
                }
            }
        }
    }
    Err(Status::not_acceptable(&[
        "application/json",
        "application/json;as=Table;v=v1;g=meta.k8s.io",
        "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io",
    ]))
}

pub(super) fn json_response(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut res = (status, body.into()).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// An object in the requested representation (not Table).
fn push_object(out: &mut Vec<u8>, obj: &Stored, repr: Repr) {
    match repr {
        Repr::Metadata(v) => {
            out.extend_from_slice(
                b"{\"kind\":\"PartialObjectMetadata\",\"apiVersion\":\"meta.k8s.io/",
            );
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\",\"metadata\":");
            out.extend_from_slice(obj.metadata_json());
            out.push(b'}');
        }
        _ => out.extend_from_slice(&obj.json),
    }
}

fn partial_metadata(obj: &Stored) -> Value {
    let meta: Value = serde_json::from_slice(obj.metadata_json()).unwrap_or(Value::Null);
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta})
}

/// A Table of `items`.
fn table_json<'a>(
    kind: Kind,
    version: &str,
    items: impl IntoIterator<Item = &'a Stored>,
    list_meta: Value,
    include: IncludeObject,
    headers: bool,
) -> Result<Value, Status> {
    let now = SystemTime::now();
    let mut rows = Vec::new();
    for obj in items {
        let (cells, conditions) = table::row(kind, obj, now).map_err(|e| {
            Status::internal(format!("printing {} {}: {e}", kind.singular(), obj.name))
        })?;
        let mut row = json!({"cells": cells});
        if let Some(c) = conditions {
            row["conditions"] = c;
        }
        match include {
            IncludeObject::None => {}
            IncludeObject::Metadata => row["object"] = partial_metadata(obj),
            IncludeObject::Object => {
                row["object"] = serde_json::from_slice(&obj.json).unwrap_or(Value::Null)
            }
        }
        rows.push(row);
    }
    let mut t = json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": list_meta,
        "rows": rows,
    });
    if headers {
        t["columnDefinitions"] = table::column_definitions(kind);
    }
    Ok(t)
}

/// The `continue` token kube-apiserver's etcd storage issues: base64url (unpadded) of
/// `{"v":"meta.k8s.io/v1","rv":N,"start":"KEY\u0000"}` with the key relative to the resource.
/// `rv` -1 (only in the token of an expired-continue 410) continues at the latest revision.
fn encode_continue(rv: i64, key: &Key) -> String {
    let start = if key.0.is_empty() {
        format!("{}\u{0}", key.1)
    } else {
        format!("{}/{}\u{0}", key.0, key.1)
    };
    let doc = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start});
    base64url(doc.to_string().as_bytes())
}

/// Decodes a continue token as `storage.DecodeContinue`: the revision to list at (`None` for
/// the latest, a token's `-1`) and the key to continue after.
fn decode_continue(token: &str, kind: Kind) -> Result<(Option<u64>, Key), String> {
    const BAD_RV: &str = "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)";
    let raw = base64url_decode(token).ok_or("illegal base64 data")?;
    let doc: Value = serde_json::from_slice(&raw).map_err(|e| e.to_string())?;
    if doc["v"] != "meta.k8s.io/v1" {
        return Err(BAD_RV.into());
    }
    let rv = match doc["rv"].as_i64() {
        Some(rv) if rv > 0 => Some(rv as u64),
        Some(rv) if rv < 0 => None,
        _ => return Err(BAD_RV.into()),
    };
    let start = doc["start"]
        .as_str()
        .ok_or("continue key is not valid: no start key")?;
    let start = start.strip_suffix('\u{0}').unwrap_or(start);
    let key = if kind.namespaced() {
        let (ns, name) = start
            .split_once('/')
            .ok_or("continue key is not valid: malformed start key")?;
        (Arc::from(ns), Arc::from(name))
    } else {
        (Arc::from(""), Arc::from(start))
    };
    Ok((rv, key))
}

fn base64url(data: &[u8]) -> String {
    crate::pki::base64(data)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            b'=' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

fn invalid_list_options(errors: &[String]) -> Status {
    let message = if errors.len() == 1 {
        format!("ListOptions.meta.k8s.io \"\" is invalid: {}", errors[0])
    } else {
        format!(
            "ListOptions.meta.k8s.io \"\" is invalid: [{}]",
            errors.join(", ")
        )
    };
    Status::failure(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message)
}

/// `metav1.ListOptions`, parsed and validated as `ValidateListOptions` does.
pub struct ListOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub resource_version: String,
    pub rv_match: String,
    pub limit: usize,
    pub continue_: String,
    pub watch: bool,
    pub bookmarks: bool,
    pub timeout: Option<Duration>,
    pub send_initial_events: Option<bool>,
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "t" => Some(true),
        "false" | "0" | "f" | "" => Some(false),
        _ => None,
    }
}

impl ListOptions {
    pub fn parse(kind: Kind, query: &Query, watch_path: bool) -> Result<ListOptions, Status> {
        let get = |k| query_get(query, k).unwrap_or("");
        let labels =
            LabelSelector::parse(get("labelSelector")).map_err(|e| Status::bad_request(e.0))?;
        let mut fields =
            FieldSelector::parse(get("fieldSelector")).map_err(|e| Status::bad_request(e.0))?;
        kind.check_field_selector(&mut fields)
            .map_err(Status::bad_request)?;
        let int = |name: &str| -> Result<Option<i64>, Status> {
            match query_get(query, name).filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
                    Status::bad_request(format!(
                        "unable to parse {name}: strconv.ParseInt: parsing {v:?}: invalid syntax"
                    ))
                }),
            }
        };
        let boolean = |name: &str| -> Result<Option<bool>, Status> {
            match query_get(query, name) {
                None => Ok(None),
                Some(v) => parse_bool(v).map(Some).ok_or_else(|| {
                    Status::bad_request(format!(
                        "unable to parse {name}: strconv.ParseBool: parsing {v:?}: invalid syntax"
                    ))
                }),
            }
        };
        let opts = ListOptions {
            labels,
            fields,
            resource_version: get("resourceVersion").to_string(),
            rv_match: get("resourceVersionMatch").to_string(),
            limit: int("limit")?.unwrap_or(0).max(0) as usize,
            continue_: get("continue").to_string(),
            watch: watch_path || boolean("watch")?.unwrap_or(false),
            bookmarks: boolean("allowWatchBookmarks")?.unwrap_or(false),
            timeout: int("timeoutSeconds")?
                .filter(|t| *t > 0)
                .map(|t| Duration::from_secs(t as u64)),
            send_initial_events: boolean("sendInitialEvents")?,
        };
        opts.validate()?;
        Ok(opts)
    }

    fn validate(&self) -> Result<(), Status> {
        let mut errs = Vec::new();
        let m = self.rv_match.as_str();
        if self.watch {
            if self.send_initial_events.is_some() && m != "NotOlderThan" {
                errs.push("resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan".to_string());
            }
            if !m.is_empty() {
                if self.send_initial_events.is_none() {
                    errs.push("resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided".into());
                }
                if m != "NotOlderThan" {
                    errs.push(format!("resourceVersionMatch: Unsupported value: {m:?}: supported values: \"NotOlderThan\""));
                }
                if !self.continue_.is_empty() {
                    errs.push("resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden when continue is provided".into());
                }
            }
        } else {
            if !m.is_empty() {
                if self.resource_version.is_empty() {
                    errs.push("resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided".into());
                }
                if !self.continue_.is_empty() {
                    errs.push("resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden when continue is provided".into());
                }
                if m != "Exact" && m != "NotOlderThan" {
                    errs.push(format!("resourceVersionMatch: Unsupported value: {m:?}: supported values: \"Exact\", \"NotOlderThan\", \"\""));
                }
                if m == "Exact" && self.resource_version == "0" {
                    errs.push("resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"".into());
                }
            }
            if self.send_initial_events.is_some() {
                errs.push(
                    "sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list".into(),
                );
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(invalid_list_options(&errs))
        }
    }

    fn rv_number(&self) -> Result<Option<u64>, Status> {
        match self.resource_version.as_str() {
            "" | "0" => Ok(None),
            v => v
                .parse::<u64>()
                .map(Some)
                .map_err(|_| Status::bad_request(format!("invalid resource version: {v}"))),
        }
    }
}

fn too_large(requested: u64, current: u64) -> Status {
    let mut s = Status::failure(
        StatusCode::GATEWAY_TIMEOUT,
        "Timeout",
        format!("Timeout: Too large resource version: {requested}, current: {current}"),
    );
    s.details = Some(Default::default());
    s
}

fn expired(requested: u64, oldest: u64) -> Status {
    Status::gone(format!(
        "too old resource version: {requested} ({})",
        oldest
    ))
}

const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

/// The 410 for a continue token whose revision was compacted, as etcd3's
/// `handleCompactedErrorForPaging`: its `metadata.continue` holds a token for the same key at
/// revision -1, which continues the list at the latest revision (inconsistently, as the
/// message says).
fn continue_expired(key: &Key) -> Response {
    let status = Status::gone(CONTINUE_EXPIRED);
    let code = status.status_code();
    let mut body = serde_json::to_value(&status).unwrap_or(Value::Null);
    body["metadata"] = json!({"continue": encode_continue(-1, key)});
    json_response(code, body.to_string())
}

/// Waits (up to 3 s, as the watch cache does) for `kind` to reach revision `rv`.
async fn wait_for_revision(store: &Store, kind: Kind, rv: u64) -> Result<(), Status> {
    if store.revision() >= rv {
        return Ok(());
    }
    let mut rx = store.subscribe(kind);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        if store.revision() >= rv {
            return Ok(());
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            _ => return Err(too_large(rv, store.revision())),
        }
    }
}

/// GET of one object.
pub async fn get(
    api: &ApiServer,
    kind: Kind,
    info: &RequestInfo,
    accept: Option<&str>,
    query: &Query,
) -> Response {
    let repr = match negotiate(accept, false, query) {
        Ok(r) => r,
        Err(s) => return s.into_response(),
    };
    let ns = if kind.namespaced() {
        info.namespace.as_str()
    } else {
        ""
    };
    let Some(obj) = api.store.get(kind, ns, &info.name) else {
        return Status::not_found(kind.group(), kind.resource(), &info.name).into_response();
    };
    match repr {
        Repr::Table(v, include) => {
            let meta = json!({"resourceVersion": obj.rv.to_string()});
            match table_json(kind, v, [&*obj], meta, include, true) {
                Ok(t) => json_response(StatusCode::OK, t.to_string()),
                Err(s) => s.into_response(),
            }
        }
        _ => {
            let mut out = Vec::with_capacity(obj.json.len() + 64);
            push_object(&mut out, &obj, repr);
            json_response(StatusCode::OK, out)
        }
    }
}

/// LIST.
pub async fn list(
    api: &ApiServer,
    kind: Kind,
    info: &RequestInfo,
    accept: Option<&str>,
    query: &Query,
) -> Response {
    let repr = match negotiate(accept, true, query) {
        Ok(r) => r,
        Err(s) => return s.into_response(),
    };
    let opts = match ListOptions::parse(kind, query, false) {
        Ok(o) => o,
        Err(s) => return s.into_response(),
    };
    let store = &api.store;
    let mut after = None;
    let mut at = None;
    if !opts.continue_.is_empty() {
        if !opts.resource_version.is_empty() && opts.resource_version != "0" {
            return Status::bad_request(
                "specifying resource version is not allowed when using continue",
            )
            .into_response();
        }
        match decode_continue(&opts.continue_, kind) {
            Ok((rv, key)) => {
                at = rv;
                after = Some(key);
            }
            Err(e) => return Status::bad_request(e).into_response(),
        }
    } else {
        let rv = match opts.rv_number() {
            Ok(rv) => rv,
            Err(s) => return s.into_response(),
        };
        if let Some(rv) = rv {
            if let Err(s) = wait_for_revision(store, kind, rv).await {
                return s.into_response();
            }
            if opts.rv_match == "Exact" {
                at = Some(rv);
            }
        }
    }
    let namespace =
        (kind.namespaced() && !info.namespace.is_empty()).then_some(info.namespace.as_str());
    let req = ListRequest {
        namespace,
        labels: &opts.labels,
        fields: &opts.fields,
        limit: opts.limit,
        after,
        at,
    };
    let snap = match store.list(kind, &req) {
        Ok(s) => s,
        Err(ReadError::Expired { requested, oldest }) => {
            return match &req.after {
                None => expired(requested, oldest).into_response(),
                Some(key) => continue_expired(key),
            };
        }
        Err(ReadError::TooLarge { requested, current }) => {
            return too_large(requested, current).into_response();
        }
    };
    let mut list_meta = json!({"resourceVersion": snap.rv.to_string()});
    if let Some(key) = &snap.continue_after {
        list_meta["continue"] = json!(encode_continue(snap.rv as i64, key));
    }
    if let Some(n) = snap.remaining {
        list_meta["remainingItemCount"] = json!(n);
    }
    match repr {
        Repr::Table(v, include) => match table_json(
            kind,
            v,
            snap.items.iter().map(|o| &**o),
            list_meta,
            include,
            true,
        ) {
            Ok(t) => json_response(StatusCode::OK, t.to_string()),
            Err(s) => s.into_response(),
        },
        _ => {
            let (list_kind, api_version) = match repr {
                Repr::Metadata(v) => (
                    "PartialObjectMetadataList".to_string(),
                    format!("meta.k8s.io/{v}"),
                ),
                _ => (
                    format!("{}List", kind.kind()),
                    kind.api_version().to_string(),
                ),
            };
            let head = format!(
                "{{\"kind\":\"{list_kind}\",\"apiVersion\":\"{api_version}\",\"metadata\":{list_meta},\"items\":["
            );
            let body = ListBody::new(Bytes::from(head), snap, repr);
            json_response(StatusCode::OK, Body::new(body))
        }
    }
}

/// Streams a list's items in ~64 KiB chunks, copying each object's bytes once.
struct ListBody {
    head: Option<Bytes>,
    items: std::vec::IntoIter<Arc<Stored>>,
    first: bool,
    done: bool,
    repr: Repr,
}

impl ListBody {
    fn new(head: Bytes, snap: Snapshot, repr: Repr) -> ListBody {
        ListBody {
            head: Some(head),
            items: snap.items.into_iter(),
            first: true,
            done: false,
            repr,
        }
    }
}

impl http_body::Body for ListBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.done {
            return Poll::Ready(None);
        }
        const CHUNK: usize = 64 * 1024;
        let mut buf = Vec::with_capacity(CHUNK + 4096);
        if let Some(head) = self.head.take() {
            buf.extend_from_slice(&head);
        }
        while buf.len() < CHUNK {
            let Some(obj) = self.items.next() else {
                buf.extend_from_slice(b"]}");
                self.done = true;
                break;
            };
            if !self.first {
                buf.push(b',');
            }
            self.first = false;
            push_object(&mut buf, &obj, self.repr);
        }
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// WATCH: a stream of newline-delimited JSON events.
pub async fn watch(
    api: &ApiServer,
    kind: Kind,
    info: &RequestInfo,
    accept: Option<&str>,
    query: &Query,
    watch_path: bool,
) -> Response {
    let repr = match negotiate(accept, false, query) {
        Ok(r) => r,
        Err(s) => return s.into_response(),
    };
    let opts = match ListOptions::parse(kind, query, watch_path) {
        Ok(o) => o,
        Err(s) => return s.into_response(),
    };
    let rv = match opts.rv_number() {
        Ok(rv) => rv,
        Err(s) => return s.into_response(),
    };
    let namespace: Option<Arc<str>> = (kind.namespaced() && !info.namespace.is_empty())
        .then(|| Arc::from(info.namespace.as_str()));
    let send_initial = opts.send_initial_events.unwrap_or(rv.is_none());
    let timeout = opts.timeout.unwrap_or_else(|| {
        // kube-apiserver: --min-request-timeout (1800 s) times a random factor in [1, 2).
        let jitter = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() % 1800)
            .unwrap_or(0);
        Duration::from_secs(1800 + u64::from(jitter))
    });
    let w = Watcher {
        store: Arc::clone(&api.store),
        kind,
        namespace,
        labels: opts.labels,
        fields: opts.fields,
        repr,
        bookmarks: opts.bookmarks,
        bookmark_interval: api.opts.bookmark_interval,
        initial: send_initial,
        initial_end_bookmark: opts.send_initial_events == Some(true),
        from: rv,
        timeout,
        table_headers_sent: false,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    tokio::spawn(w.run(tx));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut res = Response::new(Body::new(http_body_util::StreamBody::new(stream)));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    res
}

struct Watcher {
    store: Arc<Store>,
    kind: Kind,
    namespace: Option<Arc<str>>,
    labels: LabelSelector,
    fields: FieldSelector,
    repr: Repr,
    bookmarks: bool,
    bookmark_interval: Duration,
    initial: bool,
    initial_end_bookmark: bool,
    from: Option<u64>,
    timeout: Duration,
    table_headers_sent: bool,
}

impl Watcher {
    fn passes(&self, obj: &Stored) -> bool {
        self.namespace
            .as_ref()
            .is_none_or(|ns| *ns == obj.namespace)
            && obj.matches(self.kind, &self.labels, &self.fields)
    }

    fn push_event(&mut self, out: &mut Vec<u8>, ty: &str, obj: &Stored) {
        out.extend_from_slice(b"{\"type\":\"");
        out.extend_from_slice(ty.as_bytes());
        out.extend_from_slice(b"\",\"object\":");
        match self.repr {
            Repr::Table(v, include) => {
                let meta = json!({"resourceVersion": obj.rv.to_string()});
                let headers = !self.table_headers_sent;
                self.table_headers_sent = true;
                match table_json(self.kind, v, [obj], meta, include, headers) {
                    Ok(t) => out.extend_from_slice(t.to_string().as_bytes()),
                    Err(s) => out.extend_from_slice(&serde_json::to_vec(&s).unwrap_or_default()),
                }
            }
            repr => push_object(out, obj, repr),
        }
        out.extend_from_slice(b"}\n");
    }

    fn push_bookmark(&self, out: &mut Vec<u8>, rv: u64, initial_end: bool) {
        let (kind, api_version) = match self.repr {
            Repr::Json => (self.kind.kind(), self.kind.api_version().to_string()),
            Repr::Metadata(v) => ("PartialObjectMetadata", format!("meta.k8s.io/{v}")),
            Repr::Table(v, _) => ("Table", format!("meta.k8s.io/{v}")),
        };
        let mut meta = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let ev = json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version, "metadata": meta}});
        out.extend_from_slice(ev.to_string().as_bytes());
        out.push(b'\n');
    }

    fn push_error(out: &mut Vec<u8>, status: &Status) {
        out.extend_from_slice(b"{\"type\":\"ERROR\",\"object\":");
        out.extend_from_slice(&serde_json::to_vec(status).unwrap_or_default());
        out.extend_from_slice(b"}\n");
    }

    async fn run(mut self, tx: tokio::sync::mpsc::Sender<Bytes>) {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut rx = self.store.subscribe(self.kind);
        let mut out = Vec::new();
        let mut pos;
        if self.initial {
            let none_l = LabelSelector::default();
            let none_f = FieldSelector::default();
            let snap = self.store.list(
                self.kind,
                &ListRequest {
                    namespace: self.namespace.as_deref(),
                    labels: &none_l,
                    fields: &none_f,
                    limit: 0,
                    after: None,
                    at: None,
                },
            );
            let Ok(snap) = snap else { return };
            pos = snap.rv.max(self.from.unwrap_or(0));
            for obj in &snap.items {
                if self.passes(obj) {
                    self.push_event(&mut out, "ADDED", obj);
                    if out.len() > 64 * 1024
                        && tx
                            .send(Bytes::from(std::mem::take(&mut out)))
                            .await
                            .is_err()
                    {
                        return;
                    }
                }
            }
            if self.initial_end_bookmark {
                self.push_bookmark(&mut out, pos, true);
            }
        } else {
            pos = self.from.unwrap_or(0);
        }
        let mut next_bookmark = tokio::time::Instant::now() + self.bookmark_interval;
        loop {
            rx.borrow_and_update();
            match self.store.events_after(self.kind, pos, 1000) {
                Err(ReadError::Expired { requested, oldest }) => {
                    Self::push_error(&mut out, &expired(requested, oldest));
                    let _ = tx.send(Bytes::from(out)).await;
                    return;
                }
                Err(ReadError::TooLarge { .. }) => return,
                Ok(events) => {
                    let more = events.len() == 1000;
                    for ev in events {
                        pos = ev.rv;
                        let cur = ev.kind != EventType::Deleted && self.passes(&ev.object);
                        let old = ev.prev.as_deref().is_some_and(|p| self.passes(p));
                        match (cur, old) {
                            (true, false) => self.push_event(&mut out, "ADDED", &ev.object),
                            (true, true) => self.push_event(&mut out, "MODIFIED", &ev.object),
                            (false, true) => {
                                let gone = if ev.kind == EventType::Deleted {
                                    Arc::clone(&ev.object)
                                } else {
                                    ev.prev
                                        .as_ref()
                                        .map(|p| Arc::new(p.restamp(ev.rv)))
                                        .unwrap_or_else(|| Arc::clone(&ev.object))
                                };
                                self.push_event(&mut out, "DELETED", &gone);
                            }
                            (false, false) => {}
                        }
                    }
                    if more {
                        if !out.is_empty()
                            && tx
                                .send(Bytes::from(std::mem::take(&mut out)))
                                .await
                                .is_err()
                        {
                            return;
                        }
                        continue;
                    }
                }
            }
            if !out.is_empty()
                && tx
                    .send(Bytes::from(std::mem::take(&mut out)))
                    .await
                    .is_err()
            {
                return;
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return },
                () = tokio::time::sleep_until(next_bookmark), if self.bookmarks => {
                    next_bookmark = tokio::time::Instant::now() + self.bookmark_interval;
                    // Nothing of this kind is pending up to the store's revision once the log
                    // has been drained, so the bookmark may carry it.
                    if self.store.events_after(self.kind, pos, 1).is_ok_and(|e| e.is_empty()) {
                        let rv = self.store.revision().max(pos);
                        self.push_bookmark(&mut out, rv, false);
                        pos = rv.max(pos);
                    }
                }
                () = tokio::time::sleep_until(deadline) => return,
                () = tx.closed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let key: Key = (Arc::from("default"), Arc::from("web-1"));
        let t = encode_continue(42, &key);
        assert!(!t.contains('='));
        let (rv, k) = decode_continue(&t, Kind::Pod).unwrap();
        assert_eq!(rv, Some(42));
        let (rv, _) = decode_continue(&encode_continue(-1, &key), Kind::Pod).unwrap();
        assert_eq!(rv, None, "-1 continues at the latest revision");
        assert!(
            decode_continue(
                &base64url(br#"{"v":"meta.k8s.io/v1","rv":0,"start":"a/b\u0000"}"#),
                Kind::Pod
            )
            .is_err()
        );
        assert_eq!(k, key);
        let node: Key = (Arc::from(""), Arc::from("node-1"));
        let (_, k) = decode_continue(&encode_continue(7, &node), Kind::Node).unwrap();
        assert_eq!(k, node);
        assert!(decode_continue("!!", Kind::Pod).is_err());
        assert_eq!(
            base64url_decode(&base64url(b"hello?>")).unwrap(),
            b"hello?>"
        );
    }

    #[test]
    fn negotiation() {
        let q = Vec::new();
        assert_eq!(negotiate(None, true, &q).unwrap(), Repr::Json);
        assert_eq!(
            negotiate(
                Some("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"),
                true,
                &q
            )
            .unwrap(),
            Repr::Metadata("v1")
        );
        assert!(
            negotiate(
                Some("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"),
                false,
                &q
            )
            .is_err()
        );
        assert_eq!(
            negotiate(
                Some("application/json;as=Table;v=v1;g=meta.k8s.io,application/json"),
                true,
                &q
            )
            .unwrap(),
            Repr::Table("v1", IncludeObject::Metadata)
        );
        assert_eq!(
            negotiate(Some("application/vnd.kubernetes.protobuf"), true, &q)
                .unwrap_err()
                .code,
            406
        );
    }

    #[test]
    fn list_options_validation() {
        let q = |s: &str| super::super::request::parse_query(Some(s));
        let err = ListOptions::parse(Kind::Pod, &q("resourceVersionMatch=Exact"), false)
            .err()
            .unwrap();
        assert_eq!(err.code, 422);
        assert_eq!(
            err.message,
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"
        );
        assert!(
            ListOptions::parse(
                Kind::Pod,
                &q("watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"),
                false
            )
            .is_ok()
        );
        let err = ListOptions::parse(Kind::Pod, &q("fieldSelector=spec.foo%3Dx"), false)
            .err()
            .unwrap();
        assert_eq!(
            (err.code, err.message.as_str()),
            (400, "field label not supported: spec.foo")
        );
    }
}
