//! The API server's object store: resourceVersions, the event log, consistent paged lists
//! and watch fan-out, with etcd's and the watch cache's semantics.
//!
//! - One revision counter for the whole store, as etcd's: every change gets the next one, and
//!   a list's `resourceVersion` is the revision it was read at.
//! - Objects are kept pre-encoded (the JSON kube-apiserver would send), with the byte range of
//!   their `metadata` so that `PartialObjectMetadata` is a slice, plus the labels and the
//!   selectable fields. 150,000 pods cost their JSON and little more, and a list is a copy of
//!   bytes, not an encoding.
//! - Each kind keeps a bounded log of its last events, each with the object before the change.
//!   It serves watches from a resourceVersion, paged lists at the revision of their first page
//!   (`continue`), and `resourceVersionMatch=Exact`; anything older than the log is `410 Gone`,
//!   as after an etcd compaction.
//! - Watchers do not have queues: each keeps its position in the log and is woken when the log
//!   grows, so a slow watcher costs nothing until it falls off the log (then it gets 410, as
//!   kube-apiserver's watch cache terminates watchers that cannot keep up).
//!
//! Locks: one `RwLock` per kind, held only to copy `Arc`s, never while encoding or sending.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod};
use metrics_bridge::cluster::LabelSet;
use metrics_bridge::selector::{FieldSelector, LabelSelector};

/// Why an object could not be stored or a read could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    #[error("encoding {kind} {name:?}: {source}")]
    Encode {
        kind: &'static str,
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the encoded {kind} {name:?} has no metadata object")]
    NoMetadata { kind: &'static str, name: String },
}

/// The kinds the API server stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Namespace,
    Node,
    Pod,
    ConfigMap,
    /// `coordination.k8s.io/v1` Lease: the node heartbeats of `kube-node-lease`.
    Lease,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Namespace,
        Kind::Node,
        Kind::Pod,
        Kind::ConfigMap,
        Kind::Lease,
    ];

    fn index(self) -> usize {
        match self {
            Kind::Namespace => 0,
            Kind::Node => 1,
            Kind::Pod => 2,
            Kind::ConfigMap => 3,
            Kind::Lease => 4,
        }
    }

    /// The `kind` of one object.
    pub fn kind(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Node => "Node",
            Kind::Pod => "Pod",
            Kind::ConfigMap => "ConfigMap",
            Kind::Lease => "Lease",
        }
    }

    /// The API group (empty for the core group).
    pub fn group(self) -> &'static str {
        match self {
            Kind::Lease => "coordination.k8s.io",
            _ => "",
        }
    }

    /// The `apiVersion` of objects and lists of this kind.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Lease => "coordination.k8s.io/v1",
            _ => "v1",
        }
    }

    /// The plural resource name in URLs.
    pub fn resource(self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::Node => "nodes",
            Kind::Pod => "pods",
            Kind::ConfigMap => "configmaps",
            Kind::Lease => "leases",
        }
    }

    pub fn singular(self) -> &'static str {
        match self {
            Kind::Namespace => "namespace",
            Kind::Node => "node",
            Kind::Pod => "pod",
            Kind::ConfigMap => "configmap",
            Kind::Lease => "lease",
        }
    }

    pub fn namespaced(self) -> bool {
        matches!(self, Kind::Pod | Kind::ConfigMap | Kind::Lease)
    }

    /// The kind served as `resource` in `group` (version v1 for both served groups).
    pub fn from_group_resource(group: &str, resource: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.group() == group && k.resource() == resource)
    }

    /// The field selectors kube-apiserver accepts for this kind (its field label conversion
    /// functions), besides `metadata.name` and, for namespaced kinds, `metadata.namespace`.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Kind::Namespace => &["metadata.name", "status.phase"],
            Kind::Node => &["metadata.name", "spec.unschedulable"],
            Kind::Pod => &[
                "metadata.name",
                "metadata.namespace",
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.podIPs",
                "status.nominatedNodeName",
            ],
            Kind::ConfigMap | Kind::Lease => &["metadata.name", "metadata.namespace"],
        }
    }

    /// Checks and normalizes a field selector as kube-apiserver's conversion functions do,
    /// with their error messages (`field label not supported: spec.foo`). Pods also accept the
    /// legacy `spec.host`, meaning `spec.nodeName`.
    pub fn check_field_selector(self, sel: &mut FieldSelector) -> Result<(), String> {
        for r in &mut sel.requirements {
            if self == Kind::Pod && r.field == "spec.host" {
                r.field = "spec.nodeName".into();
            }
            if self.fields().contains(&r.field.as_str()) {
                continue;
            }
            return Err(match self {
                // Kinds without their own conversion function use the default one.
                Kind::ConfigMap | Kind::Lease => format!(
                    "{:?} is not a known field selector: only \"metadata.name\", \"metadata.namespace\"",
                    r.field
                ),
                _ => format!("field label not supported: {}", r.field),
            });
        }
        Ok(())
    }
}

/// An object's identity: (namespace, name); the namespace is empty for cluster-scoped kinds.
/// Ordered as etcd orders keys (`/registry/pods/NS/NAME`), which is the order lists come in.
pub type Key = (Arc<str>, Arc<str>);

/// One stored object, pre-encoded.
#[derive(Debug)]
pub struct Stored {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    pub rv: u64,
    /// The object as kube-apiserver encodes it in JSON.
    pub json: Bytes,
    /// Where `metadata`'s value is in `json`.
    meta: (u32, u32),
    /// Where the digits of `metadata.resourceVersion` are in `json`.
    rv_digits: (u32, u32),
    pub labels: LabelSet,
    /// Values of [`Kind::fields`], in that order; `metadata.*` included.
    fields: Box<[Arc<str>]>,
}

impl Stored {
    /// The `metadata` object's JSON.
    pub fn metadata_json(&self) -> &[u8] {
        self.json
            .get(self.meta.0 as usize..self.meta.1 as usize)
            .unwrap_or(b"{}")
    }

    /// The value of a selectable field.
    pub fn field(&self, kind: Kind, field: &str) -> Option<&str> {
        kind.fields()
            .iter()
            .position(|f| *f == field)
            .and_then(|i| self.fields.get(i))
            .map(|v| &**v)
    }

    /// Whether the object passes both selectors.
    pub fn matches(&self, kind: Kind, labels: &LabelSelector, fields: &FieldSelector) -> bool {
        labels.matches(&self.labels) && fields.matches(|f| self.field(kind, f))
    }

    /// The same object with another resourceVersion, as the watch cache sends the previous
    /// state of an object that left a selector ("DELETED with the event's revision").
    pub fn restamp(&self, rv: u64) -> Stored {
        let digits = rv.to_string();
        let (s, e) = (self.rv_digits.0 as usize, self.rv_digits.1 as usize);
        let head = self.json.get(..s).unwrap_or_default();
        let tail = self.json.get(e..).unwrap_or_default();
        let mut json = Vec::with_capacity(head.len() + digits.len() + tail.len());
        json.extend_from_slice(head);
        json.extend_from_slice(digits.as_bytes());
        json.extend_from_slice(tail);
        let delta = digits.len() as i64 - (e - s) as i64;
        let shift = |p: u32| (i64::from(p) + delta) as u32;
        Stored {
            namespace: Arc::clone(&self.namespace),
            name: Arc::clone(&self.name),
            rv,
            json: Bytes::from(json),
            meta: (self.meta.0, shift(self.meta.1)),
            rv_digits: (self.rv_digits.0, s as u32 + digits.len() as u32),
            labels: self.labels.clone(),
            fields: self.fields.clone(),
        }
    }

    pub fn key(&self) -> Key {
        (Arc::clone(&self.namespace), Arc::clone(&self.name))
    }
}

/// A watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change to one object.
#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    pub kind: EventType,
    /// The object after the change; for a deletion, its last state stamped with the deletion's
    /// revision, as kube-apiserver sends it.
    pub object: Arc<Stored>,
    /// The object before the change (`None` for a creation).
    pub prev: Option<Arc<Stored>>,
}

struct KindState {
    objects: BTreeMap<Key, Arc<Stored>>,
    log: VecDeque<Arc<Event>>,
    /// Every event with a revision above this one is in `log`.
    oldest: u64,
}

struct KindStore {
    state: RwLock<KindState>,
    /// The revision of the last event, to wake watchers.
    notify: tokio::sync::watch::Sender<u64>,
}

/// What a [`Store::modify`] decision does.
// Short-lived, like `Object`.
#[allow(clippy::large_enum_variant)]
pub enum Mutation {
    /// Store this object, creating or replacing it.
    Put(Object),
    /// Delete the object (nothing if there is none).
    Delete,
    /// Change nothing.
    Keep,
}

/// What a [`Store::modify`] did.
pub struct Outcome {
    /// The object as stored now (for a deletion: its last state before it; for a dry run:
    /// what would have been stored).
    pub object: Option<Arc<Stored>>,
    /// The event recorded, if anything changed.
    pub event: Option<Arc<Event>>,
}

/// A read of a kind at one revision.
pub struct Snapshot {
    pub rv: u64,
    pub items: Vec<Arc<Stored>>,
    /// The key to continue after, when `limit` cut the list.
    pub continue_after: Option<Key>,
    /// How many matching objects were left out by `limit` (only computed without selectors,
    /// as kube-apiserver).
    pub remaining: Option<u64>,
}

/// Why a read at a resourceVersion failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// The revision is older than the log: 410.
    Expired { requested: u64, oldest: u64 },
    /// The revision is newer than the store: 504 after a wait, as kube-apiserver.
    TooLarge { requested: u64, current: u64 },
}

/// What to list.
pub struct ListRequest<'a> {
    pub namespace: Option<&'a str>,
    pub labels: &'a LabelSelector,
    pub fields: &'a FieldSelector,
    /// 0 = no limit.
    pub limit: usize,
    /// List after this key (from a continue token).
    pub after: Option<Key>,
    /// `None`: the current revision; `Some(rv)`: exactly that revision.
    pub at: Option<u64>,
}

/// The object store.
pub struct Store {
    revision: AtomicU64,
    kinds: [KindStore; 5],
    history: usize,
    interned: Mutex<HashMap<Box<str>, Arc<str>>>,
}

fn read(lock: &RwLock<KindState>) -> RwLockReadGuard<'_, KindState> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write(lock: &RwLock<KindState>) -> RwLockWriteGuard<'_, KindState> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Finds the byte range of the value of the top-level `"metadata"` key of an encoded
/// k8s-openapi object, whose first keys are `apiVersion` and `kind` with plain values.
fn metadata_range(json: &[u8]) -> Option<(usize, usize)> {
    const KEY: &[u8] = b"\"metadata\":";
    let start = json.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    if json.get(start) != Some(&b'{') {
        return None;
    }
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in json.iter().enumerate().skip(start) {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some((start, i + 1));
                }
            }
            _ => {}
        }
    }
    None
}

/// The digits of `"resourceVersion":"N"` in the metadata object. The last occurrence is the
/// object's own: in k8s-openapi's (alphabetical) order only `selfLink` and `uid`, plain
/// strings, follow it, and an unescaped `"resourceVersion":"` cannot occur inside a string.
fn rv_range(json: &[u8], meta: (usize, usize)) -> Option<(usize, usize)> {
    const KEY: &[u8] = b"\"resourceVersion\":\"";
    let region = json.get(meta.0..meta.1)?;
    let at = region.windows(KEY.len()).rposition(|w| w == KEY)? + meta.0 + KEY.len();
    let len = json.get(at..)?.iter().position(|b| *b == b'"')?;
    Some((at, at + len))
}

/// An object of one of the stored kinds, as the model or the API server produces it.
// Short-lived (built, encoded, dropped): boxing the large variants would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Object {
    Namespace(Namespace),
    Node(Node),
    Pod(Pod),
    ConfigMap(ConfigMap),
    Lease(Lease),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::Node(_) => Kind::Node,
            Object::Pod(_) => Kind::Pod,
            Object::ConfigMap(_) => Kind::ConfigMap,
            Object::Lease(_) => Kind::Lease,
        }
    }

    /// Decodes an object of `kind` from a parsed document (a request body, a patched object).
    pub fn from_value(kind: Kind, value: serde_json::Value) -> Result<Object, serde_json::Error> {
        Ok(match kind {
            Kind::Namespace => Object::Namespace(serde_json::from_value(value)?),
            Kind::Node => Object::Node(serde_json::from_value(value)?),
            Kind::Pod => Object::Pod(serde_json::from_value(value)?),
            Kind::ConfigMap => Object::ConfigMap(serde_json::from_value(value)?),
            Kind::Lease => Object::Lease(serde_json::from_value(value)?),
        })
    }

    pub fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            Object::Namespace(o) => &mut o.metadata,
            Object::Node(o) => &mut o.metadata,
            Object::Pod(o) => &mut o.metadata,
            Object::ConfigMap(o) => &mut o.metadata,
            Object::Lease(o) => &mut o.metadata,
        }
    }

    fn field_values(&self) -> Vec<String> {
        let s = |v: &Option<String>| v.clone().unwrap_or_default();
        match self {
            Object::Namespace(o) => vec![
                s(&o.metadata.name),
                o.status
                    .as_ref()
                    .and_then(|st| st.phase.clone())
                    .unwrap_or_default(),
            ],
            Object::Node(o) => vec![
                s(&o.metadata.name),
                o.spec
                    .as_ref()
                    .and_then(|sp| sp.unschedulable)
                    .unwrap_or(false)
                    .to_string(),
            ],
            Object::Pod(o) => {
                let spec = o.spec.as_ref();
                let status = o.status.as_ref();
                vec![
                    s(&o.metadata.name),
                    s(&o.metadata.namespace),
                    spec.and_then(|p| p.node_name.clone()).unwrap_or_default(),
                    spec.and_then(|p| p.restart_policy.clone())
                        .unwrap_or_default(),
                    spec.and_then(|p| p.scheduler_name.clone())
                        .unwrap_or_default(),
                    spec.and_then(|p| p.service_account_name.clone())
                        .unwrap_or_default(),
                    spec.and_then(|p| p.host_network)
                        .unwrap_or(false)
                        .to_string(),
                    status.and_then(|p| p.phase.clone()).unwrap_or_default(),
                    status.and_then(|p| p.pod_ip.clone()).unwrap_or_default(),
                    // As kube-apiserver's PodToSelectableFields: the IPs joined by commas.
                    status
                        .and_then(|p| p.pod_ips.as_ref())
                        .map(|ips| {
                            ips.iter()
                                .map(|ip| ip.ip.as_str())
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default(),
                    status
                        .and_then(|p| p.nominated_node_name.clone())
                        .unwrap_or_default(),
                ]
            }
            Object::ConfigMap(o) => vec![s(&o.metadata.name), s(&o.metadata.namespace)],
            Object::Lease(o) => vec![s(&o.metadata.name), s(&o.metadata.namespace)],
        }
    }

    fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        match self {
            Object::Namespace(o) => serde_json::to_vec(o),
            Object::Node(o) => serde_json::to_vec(o),
            Object::Pod(o) => serde_json::to_vec(o),
            Object::ConfigMap(o) => serde_json::to_vec(o),
            Object::Lease(o) => serde_json::to_vec(o),
        }
    }
}

impl Store {
    /// An empty store that keeps the last `history` events of each kind.
    pub fn new(history: usize) -> Store {
        let kind = || KindStore {
            state: RwLock::new(KindState {
                objects: BTreeMap::new(),
                log: VecDeque::new(),
                oldest: 0,
            }),
            notify: tokio::sync::watch::channel(0).0,
        };
        Store {
            revision: AtomicU64::new(0),
            kinds: [kind(), kind(), kind(), kind(), kind()],
            history: history.max(1),
            interned: Mutex::new(HashMap::new()),
        }
    }

    fn kind(&self, kind: Kind) -> &KindStore {
        &self.kinds[kind.index()]
    }

    /// The store's current revision.
    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }

    fn intern(&self, s: &str) -> Arc<str> {
        let mut map = self
            .interned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(v) = map.get(s) {
            return Arc::clone(v);
        }
        let v: Arc<str> = Arc::from(s);
        // Interning pays for values shared by many objects (namespaces, node names, phases);
        // one-off values (pod IPs, names) would only grow the table.
        if map.len() < 100_000 {
            map.insert(Box::from(s), Arc::clone(&v));
        }
        v
    }

    /// Encodes `obj` at revision `rv`.
    fn encode(&self, mut obj: Object, rv: u64) -> Result<Stored, ObjectsError> {
        let kind = obj.kind();
        let meta = obj.meta_mut();
        meta.resource_version = Some(rv.to_string());
        let name = meta.name.clone().unwrap_or_default();
        let namespace = meta.namespace.clone().unwrap_or_default();
        let labels = LabelSet::from_pairs(
            meta.labels
                .iter()
                .flatten()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let mut json = obj.to_json().map_err(|source| ObjectsError::Encode {
            kind: kind.kind(),
            name: name.clone(),
            source,
        })?;
        // The encoder grows its buffer by doubling: without this, a third of the memory
        // holding 150,000 pods would be spare capacity kept for the life of the object.
        json.shrink_to_fit();
        let no_meta = || ObjectsError::NoMetadata {
            kind: kind.kind(),
            name: name.clone(),
        };
        let meta_range = metadata_range(&json).ok_or_else(no_meta)?;
        let rv_digits = rv_range(&json, meta_range).ok_or_else(no_meta)?;
        let fields = obj
            .field_values()
            .iter()
            .enumerate()
            .map(|(i, v)| {
                // metadata.name and the pod IPs are unique per object: not worth interning.
                if i == 0 || (kind == Kind::Pod && (i == 8 || i == 9)) {
                    Arc::from(v.as_str())
                } else {
                    self.intern(v)
                }
            })
            .collect();
        Ok(Stored {
            namespace: self.intern(&namespace),
            name: Arc::from(name.as_str()),
            rv,
            json: Bytes::from(json),
            meta: (meta_range.0 as u32, meta_range.1 as u32),
            rv_digits: (rv_digits.0 as u32, rv_digits.1 as u32),
            labels,
            fields,
        })
    }

    /// Loads objects without recording events, as the state the API server starts with. Each
    /// gets its own revision; the log starts after the last. Safe to call from several
    /// threads at once (objects are encoded outside the kind's lock), but only before the
    /// store is read: a reader could see a revision whose object is still being encoded.
    pub fn load(&self, objects: impl IntoIterator<Item = Object>) -> Result<(), ObjectsError> {
        for obj in objects {
            let kind = obj.kind();
            let rv = self.revision.fetch_add(1, Ordering::AcqRel) + 1;
            let stored = Arc::new(self.encode(obj, rv)?);
            write(&self.kind(kind).state)
                .objects
                .insert(stored.key(), stored);
        }
        let rv = self.revision();
        for ks in &self.kinds {
            let mut st = write(&ks.state);
            st.oldest = st.oldest.max(rv);
            st.log.clear();
        }
        Ok(())
    }

    /// Creates or replaces an object, recording an ADDED or MODIFIED event.
    pub fn upsert(&self, obj: Object) -> Result<Arc<Event>, ObjectsError> {
        let kind = obj.kind();
        let ks = self.kind(kind);
        let mut st = write(&ks.state);
        let rv = self.revision.fetch_add(1, Ordering::AcqRel) + 1;
        let stored = Arc::new(self.encode(obj, rv)?);
        let prev = st.objects.insert(stored.key(), Arc::clone(&stored));
        let event = Arc::new(Event {
            rv,
            kind: if prev.is_some() {
                EventType::Modified
            } else {
                EventType::Added
            },
            object: stored,
            prev,
        });
        self.append(ks, &mut st, &event);
        Ok(event)
    }

    /// Reads, decides and writes one object atomically, as etcd's `GuaranteedUpdate`: `decide`
    /// sees the current object (or `None`) under the kind's write lock and says what to do.
    /// A `Put` whose encoding equals the current object's is a no-op (no new revision, no
    /// event), as kube-apiserver skips writes that change nothing. With `dry_run`, nothing is
    /// stored and the outcome shows what would have been.
    pub fn modify<E: From<ObjectsError>>(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        dry_run: bool,
        decide: impl FnOnce(Option<&Arc<Stored>>) -> Result<Mutation, E>,
    ) -> Result<Outcome, E> {
        let ks = self.kind(kind);
        let mut st = write(&ks.state);
        let key: Key = (Arc::from(namespace), Arc::from(name));
        let current = st.objects.get(&key).cloned();
        match decide(current.as_ref())? {
            Mutation::Keep => Ok(Outcome {
                object: current,
                event: None,
            }),
            Mutation::Put(obj) => {
                let at = current.as_ref().map_or(0, |c| c.rv);
                let encoded = self.encode(obj, at)?;
                if let Some(cur) = &current
                    && cur.json == encoded.json
                {
                    return Ok(Outcome {
                        object: current,
                        event: None,
                    });
                }
                if dry_run {
                    return Ok(Outcome {
                        object: Some(Arc::new(encoded)),
                        event: None,
                    });
                }
                let rv = self.revision.fetch_add(1, Ordering::AcqRel) + 1;
                let stored = Arc::new(encoded.restamp(rv));
                let prev = st.objects.insert(stored.key(), Arc::clone(&stored));
                let event = Arc::new(Event {
                    rv,
                    kind: if prev.is_some() {
                        EventType::Modified
                    } else {
                        EventType::Added
                    },
                    object: Arc::clone(&stored),
                    prev,
                });
                self.append(ks, &mut st, &event);
                Ok(Outcome {
                    object: Some(stored),
                    event: Some(event),
                })
            }
            Mutation::Delete => {
                let Some(prev) = current else {
                    return Ok(Outcome {
                        object: None,
                        event: None,
                    });
                };
                if dry_run {
                    return Ok(Outcome {
                        object: Some(prev),
                        event: None,
                    });
                }
                st.objects.remove(&key);
                let rv = self.revision.fetch_add(1, Ordering::AcqRel) + 1;
                let event = Arc::new(Event {
                    rv,
                    kind: EventType::Deleted,
                    object: Arc::new(prev.restamp(rv)),
                    prev: Some(Arc::clone(&prev)),
                });
                self.append(ks, &mut st, &event);
                Ok(Outcome {
                    object: Some(prev),
                    event: Some(event),
                })
            }
        }
    }

    /// Deletes an object, recording a DELETED event; `None` if it did not exist.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Option<Arc<Event>> {
        let ks = self.kind(kind);
        let mut st = write(&ks.state);
        let key: Key = (Arc::from(namespace), Arc::from(name));
        let prev = st.objects.remove(&key)?;
        let rv = self.revision.fetch_add(1, Ordering::AcqRel) + 1;
        let event = Arc::new(Event {
            rv,
            kind: EventType::Deleted,
            object: Arc::new(prev.restamp(rv)),
            prev: Some(prev),
        });
        self.append(ks, &mut st, &event);
        Some(event)
    }

    fn append(&self, ks: &KindStore, st: &mut KindState, event: &Arc<Event>) {
        st.log.push_back(Arc::clone(event));
        while st.log.len() > self.history {
            if let Some(old) = st.log.pop_front() {
                st.oldest = old.rv;
            }
        }
        ks.notify.send_replace(event.rv);
    }

    /// Drops every kind's history, as an etcd compaction at the current revision: reads and
    /// watches at older revisions get 410 from now on.
    pub fn compact(&self) {
        for ks in &self.kinds {
            let mut st = write(&ks.state);
            st.log.clear();
            st.oldest = self.revision();
        }
    }

    /// One object at the current revision.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Arc<Stored>> {
        let st = read(&self.kind(kind).state);
        let key: Key = (Arc::from(namespace), Arc::from(name));
        st.objects.get(&key).cloned()
    }

    /// Lists `kind` as [`ListRequest`] says, at the current revision or exactly at an older
    /// one still covered by the log.
    pub fn list(&self, kind: Kind, req: &ListRequest<'_>) -> Result<Snapshot, ReadError> {
        let st = read(&self.kind(kind).state);
        // Read under the kind's lock: writers of this kind bump the revision only while holding
        // it for writing, so everything up to `current` is in the map.
        let current = self.revision();
        let rv = req.at.unwrap_or(current);
        if rv > current {
            return Err(ReadError::TooLarge {
                requested: rv,
                current,
            });
        }
        // The state at `rv` differs from the map for keys changed after `rv`: for each, the
        // object before its first later change (None if it was created later).
        let mut overlay: BTreeMap<Key, Option<Arc<Stored>>> = BTreeMap::new();
        if rv < current {
            if rv < st.oldest {
                return Err(ReadError::Expired {
                    requested: rv,
                    oldest: st.oldest,
                });
            }
            let from = st.log.partition_point(|e| e.rv <= rv);
            for e in st.log.iter().skip(from) {
                overlay
                    .entry(e.object.key())
                    .or_insert_with(|| e.prev.clone());
            }
        }
        let lower = match &req.after {
            Some(k) => Bound::Excluded(k.clone()),
            None => match req.namespace {
                Some(ns) => Bound::Included((Arc::from(ns), Arc::from(""))),
                None => Bound::Unbounded,
            },
        };
        let in_ns = |k: &Key| req.namespace.is_none_or(|ns| &*k.0 == ns);
        let current_items = st
            .objects
            .range((lower.clone(), Bound::Unbounded))
            .filter(|(k, _)| !overlay.contains_key(*k))
            .map(|(k, v)| (k, Some(v)));
        let past_items = overlay
            .range((lower, Bound::Unbounded))
            .map(|(k, v)| (k, v.as_ref()));
        let mut merged = merge_sorted(current_items, past_items)
            .take_while(|(k, _)| req.namespace.is_none() || in_ns(k))
            .filter_map(|(_, v)| v)
            .filter(|o| o.matches(kind, req.labels, req.fields));
        let mut items = Vec::new();
        let limit = if req.limit == 0 {
            usize::MAX
        } else {
            req.limit
        };
        for o in merged.by_ref() {
            items.push(Arc::clone(o));
            if items.len() == limit {
                break;
            }
        }
        let mut continue_after = None;
        let mut remaining = None;
        if items.len() == limit {
            // kube-apiserver gives remainingItemCount only without selectors (it is etcd's
            // count of the keys left). With a selector, counting the rest would match every
            // remaining object once per page, which made paging through one kube-sim's share
            // of a 600,000-pod cluster quadratic; whether one more matches is all a continue
            // token needs.
            let unselected = req.labels.is_empty() && req.fields.is_empty();
            let rest = if unselected {
                merged.count() as u64
            } else {
                u64::from(merged.next().is_some())
            };
            if rest > 0 {
                continue_after = items.last().map(|o| o.key());
                if unselected {
                    remaining = Some(rest);
                }
            }
        }
        Ok(Snapshot {
            rv,
            items,
            continue_after,
            remaining,
        })
    }

    /// The events of `kind` after revision `after`, at most `max`.
    pub fn events_after(
        &self,
        kind: Kind,
        after: u64,
        max: usize,
    ) -> Result<Vec<Arc<Event>>, ReadError> {
        let st = read(&self.kind(kind).state);
        if after < st.oldest {
            return Err(ReadError::Expired {
                requested: after,
                oldest: st.oldest,
            });
        }
        let from = st.log.partition_point(|e| e.rv <= after);
        Ok(st.log.iter().skip(from).take(max).cloned().collect())
    }

    /// A receiver that changes whenever `kind` gets an event.
    pub fn subscribe(&self, kind: Kind) -> tokio::sync::watch::Receiver<u64> {
        self.kind(kind).notify.subscribe()
    }

    /// How many objects of `kind` are stored.
    pub fn len(&self, kind: Kind) -> usize {
        read(&self.kind(kind).state).objects.len()
    }
}

/// Merges two iterators sorted by key into one sorted iterator (keys are disjoint).
fn merge_sorted<'a, A, B, V>(a: A, b: B) -> impl Iterator<Item = (&'a Key, V)>
where
    A: Iterator<Item = (&'a Key, V)>,
    B: Iterator<Item = (&'a Key, V)>,
{
    let mut a = a.peekable();
    let mut b = b.peekable();
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some((ka, _)), Some((kb, _))) => {
            if ka <= kb {
                a.next()
            } else {
                b.next()
            }
        }
        (Some(_), None) => a.next(),
        (None, Some(_)) => b.next(),
        (None, None) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(ns: &str, name: &str, node: &str, phase: &str, app: &str) -> Object {
        Object::Pod(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                labels: Some([("app".to_string(), app.to_string())].into()),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                node_name: Some(node.into()),
                ..Default::default()
            }),
            status: Some(k8s_openapi::api::core::v1::PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        })
    }

    fn names(s: &Snapshot) -> Vec<String> {
        s.items
            .iter()
            .map(|o| format!("{}/{}", o.namespace, o.name))
            .collect()
    }

    fn all<'a>(l: &'a LabelSelector, f: &'a FieldSelector) -> ListRequest<'a> {
        ListRequest {
            namespace: None,
            labels: l,
            fields: f,
            limit: 0,
            after: None,
            at: None,
        }
    }

    #[test]
    fn metadata_and_rv_ranges() {
        let store = Store::new(10);
        let ev = store
            .upsert(pod("a", "p\"resourceVersion\":\"", "n1", "Running", "web"))
            .unwrap();
        let meta: serde_json::Value = serde_json::from_slice(ev.object.metadata_json()).unwrap();
        assert_eq!(meta["name"], "p\"resourceVersion\":\"");
        assert_eq!(meta["resourceVersion"], "1");
        let re = ev.object.restamp(123456);
        let v: serde_json::Value = serde_json::from_slice(&re.json).unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "123456");
        assert_eq!(v["kind"], "Pod");
        let meta: serde_json::Value = serde_json::from_slice(re.metadata_json()).unwrap();
        assert_eq!(meta["resourceVersion"], "123456");
        assert_eq!(
            re.restamp(7).metadata_json().len() + 5,
            re.metadata_json().len()
        );
    }

    #[test]
    fn lists_page_consistently_across_changes() {
        let store = Store::new(100);
        store
            .load((0..10).map(|i| pod("ns", &format!("p{i}"), "n1", "Running", "web")))
            .unwrap();
        let (l, f) = (LabelSelector::default(), FieldSelector::default());
        let mut req = all(&l, &f);
        req.limit = 4;
        let first = store.list(Kind::Pod, &req).unwrap();
        assert_eq!(names(&first), ["ns/p0", "ns/p1", "ns/p2", "ns/p3"]);
        assert_eq!(first.remaining, Some(6));
        assert_eq!(first.rv, 10);
        // Changes after the first page must not show in the next pages.
        store.delete(Kind::Pod, "ns", "p5").unwrap();
        store
            .upsert(pod("ns", "p45", "n1", "Running", "web"))
            .unwrap();
        store
            .upsert(pod("ns", "p6", "n2", "Running", "web"))
            .unwrap();
        req.after = first.continue_after.clone();
        req.at = Some(first.rv);
        let second = store.list(Kind::Pod, &req).unwrap();
        assert_eq!(names(&second), ["ns/p4", "ns/p5", "ns/p6", "ns/p7"]);
        assert_eq!(second.items[2].rv, 7, "p6 as it was at revision 10");
        req.after = second.continue_after.clone();
        let third = store.list(Kind::Pod, &req).unwrap();
        assert_eq!(names(&third), ["ns/p8", "ns/p9"]);
        assert!(third.continue_after.is_none());
        // The current state has the changes.
        let now = store.list(Kind::Pod, &all(&l, &f)).unwrap();
        assert_eq!(now.items.len(), 10);
        assert!(names(&now).contains(&"ns/p45".to_string()));
        assert_eq!(now.rv, 13);
    }

    /// With a selector, pages carry no remainingItemCount (as kube-apiserver) and a continue
    /// token exactly when another object matches after the page.
    #[test]
    fn selected_pages_continue_only_while_more_match() {
        let store = Store::new(100);
        store
            .load((0..9).map(|i| {
                let app = if i % 3 == 0 { "web" } else { "db" };
                pod("ns", &format!("p{i}"), "n1", "Running", app)
            }))
            .unwrap();
        let (l, f) = (
            LabelSelector::parse("app=web").unwrap(),
            FieldSelector::default(),
        );
        let mut req = all(&l, &f);
        req.limit = 2;
        let first = store.list(Kind::Pod, &req).unwrap();
        assert_eq!(names(&first), ["ns/p0", "ns/p3"]);
        assert_eq!(first.remaining, None);
        assert_eq!(first.continue_after, Some(first.items[1].key()));
        req.after = first.continue_after.clone();
        req.at = Some(first.rv);
        let second = store.list(Kind::Pod, &req).unwrap();
        assert_eq!(names(&second), ["ns/p6"]);
        assert!(second.continue_after.is_none());
        // A page that ends on the last match: nothing follows, so no token.
        req.after = None;
        req.limit = 3;
        let whole = store.list(Kind::Pod, &req).unwrap();
        assert_eq!(names(&whole), ["ns/p0", "ns/p3", "ns/p6"]);
        assert!(whole.continue_after.is_none());
        assert_eq!(whole.remaining, None);
    }

    #[test]
    fn selectors_namespaces_and_expiry() {
        let store = Store::new(2);
        store
            .load([
                pod("a", "x", "n1", "Running", "web"),
                pod("b", "y", "n2", "Pending", "web"),
                pod("b", "z", "n1", "Running", "db"),
                pod("c", "w", "n1", "Running", "web"),
            ])
            .unwrap();
        let l = LabelSelector::parse("app=web").unwrap();
        let mut f = FieldSelector::parse("spec.host=n1,status.phase=Running").unwrap();
        Kind::Pod.check_field_selector(&mut f).unwrap();
        let s = store.list(Kind::Pod, &all(&l, &f)).unwrap();
        assert_eq!(names(&s), ["a/x", "c/w"]);
        let none = LabelSelector::default();
        let nof = FieldSelector::default();
        let mut req = all(&none, &nof);
        req.namespace = Some("b");
        assert_eq!(names(&store.list(Kind::Pod, &req).unwrap()), ["b/y", "b/z"]);
        let mut bad = FieldSelector::parse("spec.foo=1").unwrap();
        assert_eq!(
            Kind::Pod.check_field_selector(&mut bad).unwrap_err(),
            "field label not supported: spec.foo"
        );
        let mut bad = FieldSelector::parse("data.x=1").unwrap();
        assert_eq!(
            Kind::ConfigMap.check_field_selector(&mut bad).unwrap_err(),
            r#""data.x" is not a known field selector: only "metadata.name", "metadata.namespace""#
        );
        // History of 2: after three changes, revision 4 is gone.
        for i in 0..3 {
            store
                .upsert(pod("a", &format!("n{i}"), "n1", "Running", "web"))
                .unwrap();
        }
        assert_eq!(
            store.events_after(Kind::Pod, 4, 10).unwrap_err(),
            ReadError::Expired {
                requested: 4,
                oldest: 5
            }
        );
        assert_eq!(store.events_after(Kind::Pod, 5, 10).unwrap().len(), 2);
        store.compact();
        assert!(store.events_after(Kind::Pod, 6, 10).is_err());
        assert!(store.events_after(Kind::Pod, 7, 10).unwrap().is_empty());
        let mut req = all(&none, &nof);
        req.at = Some(99);
        assert!(matches!(
            store.list(Kind::Pod, &req),
            Err(ReadError::TooLarge { .. })
        ));
    }
}
