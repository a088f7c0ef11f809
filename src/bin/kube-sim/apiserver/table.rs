//! Server-side printing (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`), with the
//! columns, cells and wording of kube-apiserver's printers (`pkg/printers/internalversion`),
//! so that `kubectl get nodes` and `kubectl get pods -A` print what they print on a real
//! cluster. The server always fills the wide columns; kubectl hides priority-1 columns unless
//! `-o wide`.
//!
//! Rows are computed on demand from the stored JSON: tables are for humans, a page of 500
//! rows costs milliseconds, and the store stays lean.

use std::time::SystemTime;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod};
use serde_json::{Value, json};

use crate::objects::{Kind, Stored};

const NAME_DOC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DOC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const ADDRESSES_DOC: &str = "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP).";

/// One column definition: name, type, format, priority, description.
type Column = (&'static str, &'static str, &'static str, u8, &'static str);

fn columns(kind: Kind) -> &'static [Column] {
    match kind {
        Kind::Pod => &[
            ("Name", "string", "name", 0, NAME_DOC),
            (
                "Ready",
                "string",
                "",
                0,
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            (
                "Status",
                "string",
                "",
                0,
                "The aggregate status of the containers in this pod.",
            ),
            (
                "Restarts",
                "string",
                "",
                0,
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            ("Age", "string", "", 0, AGE_DOC),
            (
                "IP",
                "string",
                "",
                1,
                "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
            ),
            (
                "Node",
                "string",
                "",
                1,
                "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this node becomes responsible for the lifecycle of this pod. This field should not be used to express a desire for the pod to be scheduled on a specific node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename",
            ),
            (
                "Nominated Node",
                "string",
                "",
                1,
                "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled.",
            ),
            (
                "Readiness Gates",
                "string",
                "",
                1,
                "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates",
            ),
        ],
        Kind::Node => &[
            ("Name", "string", "name", 0, NAME_DOC),
            ("Status", "string", "", 0, "The status of the node"),
            ("Roles", "string", "", 0, "The roles of the node"),
            ("Age", "string", "", 0, AGE_DOC),
            (
                "Version",
                "string",
                "",
                0,
                "Kubelet Version reported by the node.",
            ),
            ("Internal-IP", "string", "", 1, ADDRESSES_DOC),
            ("External-IP", "string", "", 1, ADDRESSES_DOC),
            (
                "OS-Image",
                "string",
                "",
                1,
                "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
            ),
            (
                "Kernel-Version",
                "string",
                "",
                1,
                "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
            ),
            (
                "Container-Runtime",
                "string",
                "",
                1,
                "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
            ),
        ],
        Kind::Namespace => &[
            ("Name", "string", "name", 0, NAME_DOC),
            ("Status", "string", "", 0, "The status of the namespace"),
            ("Age", "string", "", 0, AGE_DOC),
        ],
        Kind::ConfigMap => &[
            ("Name", "string", "name", 0, NAME_DOC),
            (
                "Data",
                "string",
                "",
                0,
                "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process.",
            ),
            ("Age", "string", "", 0, AGE_DOC),
        ],
        Kind::Lease => &[
            ("Name", "string", "name", 0, NAME_DOC),
            (
                "Holder",
                "string",
                "",
                0,
                "holderIdentity contains the identity of the holder of a current lease. If Coordinated Leader Election is used, the holder identity must be equal to the elected LeaseCandidate.metadata.name field.",
            ),
            ("Age", "string", "", 0, AGE_DOC),
        ],
    }
}

/// The `columnDefinitions` of `kind`'s table.
pub fn column_definitions(kind: Kind) -> Value {
    Value::Array(
        columns(kind)
            .iter()
            .map(|(name, ty, format, priority, description)| {
                json!({
                    "name": name,
                    "type": ty,
                    "format": format,
                    "description": description,
                    "priority": priority,
                })
            })
            .collect(),
    )
}

/// apimachinery's `duration.HumanDuration`, as `kubectl get` prints ages.
pub fn human_duration(d: std::time::Duration, negative: bool) -> String {
    let secs = d.as_secs() as i64;
    if negative {
        return if secs > 1 {
            "<invalid>".into()
        } else {
            "0s".into()
        };
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn since(
    t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    now: SystemTime,
) -> String {
    let Some(t) = t else {
        return "<unknown>".into();
    };
    let then = SystemTime::from(t.0);
    match now.duration_since(then) {
        Ok(d) => human_duration(d, false),
        Err(e) => human_duration(e.duration(), true),
    }
}

fn or_none(s: &str) -> &str {
    if s.is_empty() { "<none>" } else { s }
}

fn pod_row(pod: &Pod, now: SystemTime) -> (Vec<Value>, Option<Value>) {
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let phase = status.phase.clone().unwrap_or_default();
    let mut reason = status
        .reason
        .clone()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| phase.clone());
    let conditions = status.conditions.clone().unwrap_or_default();
    if conditions
        .iter()
        .any(|c| c.type_ == "PodScheduled" && c.reason.as_deref() == Some("SchedulingGated"))
    {
        reason = "SchedulingGated".into();
    }
    let row_conditions = match phase.as_str() {
        "Succeeded" => Some(
            json!([{"type":"Completed","status":"True","reason":"Succeeded","message":"The pod has completed successfully."}]),
        ),
        "Failed" => Some(
            json!([{"type":"Completed","status":"True","reason":"Failed","message":"The pod failed."}]),
        ),
        _ => None,
    };
    let total = spec.containers.len();
    let mut ready = 0;
    let mut restarts: i64 = 0;
    let mut last_restart: Option<SystemTime> = None;
    let mut has_running = false;
    for cs in status.container_statuses.iter().flatten().rev() {
        restarts += i64::from(cs.restart_count);
        if let Some(t) = cs
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .and_then(|t| t.finished_at.as_ref())
        {
            let t = SystemTime::from(t.0);
            if last_restart.is_none_or(|l| l < t) {
                last_restart = Some(t);
            }
        }
        let state = cs.state.clone().unwrap_or_default();
        if let Some(r) = state
            .waiting
            .as_ref()
            .and_then(|w| w.reason.clone())
            .filter(|r| !r.is_empty())
        {
            reason = r;
        } else if let Some(t) = state.terminated.as_ref() {
            reason = match t.reason.clone().filter(|r| !r.is_empty()) {
                Some(r) => r,
                None => match t.signal {
                    Some(sig) if sig != 0 => format!("Signal:{sig}"),
                    _ => format!("ExitCode:{}", t.exit_code),
                },
            };
        } else if cs.ready && state.running.is_some() {
            has_running = true;
            ready += 1;
        }
    }
    if reason == "Completed" && has_running {
        reason = if conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
        {
            "Running".into()
        } else {
            "NotReady".into()
        };
    }
    if pod.metadata.deletion_timestamp.is_some() {
        if status.reason.as_deref() == Some("NodeLost") {
            reason = "Unknown".into();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".into();
        }
    }
    let restarts_str = match last_restart {
        Some(t) if restarts != 0 => {
            let ago = match now.duration_since(t) {
                Ok(d) => human_duration(d, false),
                Err(e) => human_duration(e.duration(), true),
            };
            format!("{restarts} ({ago} ago)")
        }
        _ => restarts.to_string(),
    };
    let ip = status
        .pod_ips
        .as_ref()
        .and_then(|ips| ips.first())
        .map(|ip| ip.ip.clone())
        .unwrap_or_default();
    let gates = match spec.readiness_gates.as_deref() {
        Some(gates) if !gates.is_empty() => {
            let true_count = gates
                .iter()
                .filter(|g| {
                    conditions
                        .iter()
                        .find(|c| c.type_ == g.condition_type)
                        .is_some_and(|c| c.status == "True")
                })
                .count();
            format!("{true_count}/{}", gates.len())
        }
        _ => "<none>".into(),
    };
    let cells = vec![
        json!(pod.metadata.name.clone().unwrap_or_default()),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_str),
        json!(since(pod.metadata.creation_timestamp.as_ref(), now)),
        json!(or_none(&ip)),
        json!(or_none(spec.node_name.as_deref().unwrap_or(""))),
        json!(or_none(status.nominated_node_name.as_deref().unwrap_or(""))),
        json!(gates),
    ];
    (cells, row_conditions)
}

fn node_row(node: &Node, now: SystemTime) -> Vec<Value> {
    let status = node.status.clone().unwrap_or_default();
    let mut states: Vec<String> = Vec::new();
    if let Some(c) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
    {
        states.push(if c.status == "True" {
            "Ready".into()
        } else {
            "NotReady".into()
        });
    }
    if states.is_empty() {
        states.push("Unknown".into());
    }
    if node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
    {
        states.push("SchedulingDisabled".into());
    }
    let mut roles: Vec<String> = Vec::new();
    for (k, v) in node.metadata.labels.iter().flatten() {
        if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
            if !role.is_empty() {
                roles.push(role.to_string());
            }
        } else if k == "kubernetes.io/role" && !v.is_empty() {
            roles.push(v.clone());
        }
    }
    roles.sort();
    roles.dedup();
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.join(",")
    };
    let address = |ty: &str| {
        status
            .addresses
            .iter()
            .flatten()
            .find(|a| a.type_ == ty)
            .map(|a| a.address.clone())
            .unwrap_or_else(|| "<none>".into())
    };
    let info = status.node_info.clone().unwrap_or_default();
    let unknown = |s: String| if s.is_empty() { "<unknown>".into() } else { s };
    vec![
        json!(node.metadata.name.clone().unwrap_or_default()),
        json!(states.join(",")),
        json!(roles),
        json!(since(node.metadata.creation_timestamp.as_ref(), now)),
        json!(info.kubelet_version),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(unknown(info.os_image)),
        json!(unknown(info.kernel_version)),
        json!(unknown(info.container_runtime_version)),
    ]
}

/// The cells (and row conditions) of one object's row.
pub fn row(
    kind: Kind,
    obj: &Stored,
    now: SystemTime,
) -> Result<(Vec<Value>, Option<Value>), serde_json::Error> {
    Ok(match kind {
        Kind::Pod => pod_row(&serde_json::from_slice::<Pod>(&obj.json)?, now),
        Kind::Node => (
            node_row(&serde_json::from_slice::<Node>(&obj.json)?, now),
            None,
        ),
        Kind::Namespace => {
            let ns: Namespace = serde_json::from_slice(&obj.json)?;
            (
                vec![
                    json!(ns.metadata.name.clone().unwrap_or_default()),
                    json!(ns.status.and_then(|s| s.phase).unwrap_or_default()),
                    json!(since(ns.metadata.creation_timestamp.as_ref(), now)),
                ],
                None,
            )
        }
        Kind::ConfigMap => {
            let cm: ConfigMap = serde_json::from_slice(&obj.json)?;
            let n = cm.data.as_ref().map_or(0, |d| d.len())
                + cm.binary_data.as_ref().map_or(0, |d| d.len());
            (
                vec![
                    json!(cm.metadata.name.clone().unwrap_or_default()),
                    json!(n),
                    json!(since(cm.metadata.creation_timestamp.as_ref(), now)),
                ],
                None,
            )
        }
        Kind::Lease => {
            let lease: Lease = serde_json::from_slice(&obj.json)?;
            let holder = lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.clone())
                .unwrap_or_default();
            (
                vec![
                    json!(lease.metadata.name.clone().unwrap_or_default()),
                    json!(holder),
                    json!(since(lease.metadata.creation_timestamp.as_ref(), now)),
                ],
                None,
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn human_durations_match_apimachinery() {
        let d = |s: u64| human_duration(Duration::from_secs(s), false);
        assert_eq!(d(0), "0s");
        assert_eq!(d(119), "119s");
        assert_eq!(d(120), "2m");
        assert_eq!(d(121), "2m1s");
        assert_eq!(d(599), "9m59s");
        assert_eq!(d(600), "10m");
        assert_eq!(d(179 * 60), "179m");
        assert_eq!(d(3 * 3600), "3h");
        assert_eq!(d(3 * 3600 + 60), "3h1m");
        assert_eq!(d(8 * 3600), "8h");
        assert_eq!(d(47 * 3600), "47h");
        assert_eq!(d(48 * 3600), "2d");
        assert_eq!(d(49 * 3600), "2d1h");
        assert_eq!(d(8 * 86400), "8d");
        assert_eq!(d(730 * 86400), "2y");
        assert_eq!(d(731 * 86400), "2y1d");
        assert_eq!(d(9 * 365 * 86400), "9y");
        assert_eq!(human_duration(Duration::from_secs(1), true), "0s");
        assert_eq!(human_duration(Duration::from_secs(5), true), "<invalid>");
    }

    #[test]
    fn pod_rows_follow_the_printer() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "default", "creationTimestamp": "1970-01-12T13:40:00Z"},
            "spec": {"nodeName": "node-1", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {
                "phase": "Running",
                "podIPs": [{"ip": "10.0.0.5"}],
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [
                    {"name": "a", "ready": true, "restartCount": 2, "image": "", "imageID": "",
                     "state": {"running": {"startedAt": "1970-01-12T13:45:00Z"}},
                     "lastState": {"terminated": {"exitCode": 1, "finishedAt": "1970-01-12T13:45:00Z"}}},
                    {"name": "b", "ready": false, "restartCount": 0, "image": "", "imageID": "",
                     "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
                ]
            }
        }))
        .unwrap();
        let (cells, conditions) = pod_row(&pod, now);
        assert_eq!(
            cells,
            vec![
                json!("web-1"),
                json!("1/2"),
                json!("CrashLoopBackOff"),
                json!("2 (100s ago)"),
                json!("6m40s"),
                json!("10.0.0.5"),
                json!("node-1"),
                json!("<none>"),
                json!("<none>"),
            ]
        );
        assert!(conditions.is_none());
    }
}
