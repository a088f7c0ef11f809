//! The three patch formats kube-apiserver applies to built-in kinds:
//!
//! - JSON merge patch (RFC 7386, `application/merge-patch+json`);
//! - JSON patch (RFC 6902, `application/json-patch+json`);
//! - strategic merge patch (`application/strategic-merge-patch+json`, what kubectl and the
//!   kubelet send): a merge patch in which lists declared `patchStrategy: merge` merge by
//!   their `patchMergeKey` instead of being replaced, with the `$patch`, `$retainKeys`,
//!   `$deleteFromPrimitiveList/` and `$setElementOrder/` directives. The merge keys are those
//!   of the Kubernetes Go types for the kinds kube-sim serves ([`merge_key`]).
//!
//! Server-side apply (`application/apply-patch+yaml`) is not implemented: it needs managed
//! fields, which kube-sim does not keep.

use serde_json::{Map, Value};

/// How a list field is patched by a strategic merge patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// Replaced whole (the default, and `+listType=atomic`).
    Replace,
    /// A list of objects merged by this key.
    MergeBy(&'static str),
    /// A list of scalars merged as a set (`patchStrategy: merge` without a key).
    MergeScalars,
}

/// The strategy of the list at `path` (field names from the object's root, list indices left
/// out) of `kind`, as the Go types' `patchStrategy`/`patchMergeKey` tags declare it.
pub fn merge_key(kind: &str, path: &[&str]) -> ListStrategy {
    use ListStrategy::*;
    match path {
        ["metadata", "finalizers"] => MergeScalars,
        ["metadata", "ownerReferences"] => MergeBy("uid"),
        _ => match (kind, path) {
            (
                "Pod",
                [
                    "spec",
                    "containers" | "initContainers" | "ephemeralContainers",
                ],
            ) => MergeBy("name"),
            (
                "Pod",
                [
                    "spec",
                    "containers" | "initContainers" | "ephemeralContainers",
                    field,
                ],
            ) => match *field {
                "ports" => MergeBy("containerPort"),
                "env" => MergeBy("name"),
                "volumeMounts" => MergeBy("mountPath"),
                "volumeDevices" => MergeBy("devicePath"),
                _ => Replace,
            },
            ("Pod", ["spec", "volumes" | "imagePullSecrets" | "schedulingGates"]) => {
                MergeBy("name")
            }
            ("Pod", ["spec", "resourceClaims"]) => MergeBy("name"),
            ("Pod", ["spec", "hostAliases"]) => MergeBy("ip"),
            ("Pod", ["spec", "topologySpreadConstraints"]) => MergeBy("topologyKey"),
            ("Pod", ["status", "conditions"]) => MergeBy("type"),
            ("Pod", ["status", "podIPs" | "hostIPs"]) => MergeBy("ip"),
            ("Pod", ["status", "resourceClaimStatuses"]) => MergeBy("name"),
            ("Node", ["spec", "podCIDRs"]) => MergeScalars,
            ("Node", ["status", "conditions" | "addresses"]) => MergeBy("type"),
            ("Namespace", ["status", "conditions"]) => MergeBy("type"),
            _ => Replace,
        },
    }
}

/// RFC 7386: `patch` merged into `target`; `null` deletes a key; non-objects replace.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// Why a JSON patch could not be applied; the message reads as evanphx/json-patch's, which
/// kube-apiserver returns with 422.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchError(pub String);

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(path: &str) -> Result<Vec<String>, PatchError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| PatchError(format!("JSON pointer must start with '/': {path:?}")))?;
    Ok(rest.split('/').map(unescape).collect())
}

/// The parent container of the pointer and its last token.
fn parent_mut<'a>(
    doc: &'a mut Value,
    tokens: &'a [String],
    op: &str,
    path: &str,
) -> Result<(&'a mut Value, &'a str), PatchError> {
    let missing = || {
        PatchError(format!(
            "{op} operation does not apply: doc is missing path: {path:?}: missing value"
        ))
    };
    let (last, parents) = tokens.split_last().ok_or_else(missing)?;
    let mut cur = doc;
    for t in parents {
        cur = match cur {
            Value::Object(m) => m.get_mut(t.as_str()).ok_or_else(missing)?,
            Value::Array(a) => {
                let i: usize = t.parse().map_err(|_| missing())?;
                a.get_mut(i).ok_or_else(missing)?
            }
            _ => return Err(missing()),
        };
    }
    Ok((cur, last.as_str()))
}

fn get<'a>(doc: &'a Value, tokens: &[String]) -> Option<&'a Value> {
    let mut cur = doc;
    for t in tokens {
        cur = match cur {
            Value::Object(m) => m.get(t.as_str())?,
            Value::Array(a) => a.get(t.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn add(doc: &mut Value, path: &str, value: Value, op: &str) -> Result<(), PatchError> {
    let tokens = split_pointer(path)?;
    if tokens.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = parent_mut(doc, &tokens, op, path)?;
    match parent {
        Value::Object(m) => {
            m.insert(last.to_string(), value);
            Ok(())
        }
        Value::Array(a) => {
            let i = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= a.len())
                    .ok_or_else(|| {
                        PatchError(format!(
                            "{op} operation does not apply: doc is missing path: {path:?}: invalid index referenced: {last}"
                        ))
                    })?
            };
            a.insert(i, value);
            Ok(())
        }
        _ => Err(PatchError(format!(
            "{op} operation does not apply: doc is missing path: {path:?}: missing value"
        ))),
    }
}

fn remove(doc: &mut Value, path: &str, op: &str) -> Result<Value, PatchError> {
    let tokens = split_pointer(path)?;
    let missing = || {
        PatchError(format!(
            "{op} operation does not apply: doc is missing path: {path:?}: missing value"
        ))
    };
    let (parent, last) = parent_mut(doc, &tokens, op, path)?;
    match parent {
        Value::Object(m) => m.remove(last).ok_or_else(missing),
        Value::Array(a) => {
            let i: usize = last.parse().map_err(|_| missing())?;
            if i < a.len() {
                Ok(a.remove(i))
            } else {
                Err(missing())
            }
        }
        _ => Err(missing()),
    }
}

/// RFC 6902: applies the operations in order; any failure leaves the result unused.
pub fn json_patch(mut doc: Value, ops: &Value) -> Result<Value, PatchError> {
    let ops = ops.as_array().ok_or_else(|| {
        PatchError("json: cannot unmarshal object into Go value of type jsonpatch.Patch".into())
    })?;
    for op in ops {
        let name = op["op"].as_str().unwrap_or("");
        let path = op["path"]
            .as_str()
            .ok_or_else(|| PatchError(format!("{name} operation missing path")))?;
        match name {
            "add" => add(&mut doc, path, op["value"].clone(), "add")?,
            "remove" => {
                remove(&mut doc, path, "remove")?;
            }
            "replace" => {
                let tokens = split_pointer(path)?;
                if get(&doc, &tokens).is_none() {
                    return Err(PatchError(format!(
                        "replace operation does not apply: doc is missing key: {path}: missing value"
                    )));
                }
                remove(&mut doc, path, "replace")?;
                add(&mut doc, path, op["value"].clone(), "replace")?;
            }
            "move" | "copy" => {
                let from = op["from"]
                    .as_str()
                    .ok_or_else(|| PatchError(format!("{name} operation missing from")))?;
                let value = if name == "move" {
                    remove(&mut doc, from, name)?
                } else {
                    get(&doc, &split_pointer(from)?).cloned().ok_or_else(|| {
                        PatchError(format!(
                            "copy operation does not apply: doc is missing from path: {from:?}: missing value"
                        ))
                    })?
                };
                add(&mut doc, path, value, name)?;
            }
            "test" => {
                let tokens = split_pointer(path)?;
                if get(&doc, &tokens) != Some(&op["value"]) {
                    return Err(PatchError(format!(
                        "testing value {path} failed: test failed"
                    )));
                }
            }
            other => {
                return Err(PatchError(format!("Unexpected kind: {other}")));
            }
        }
    }
    Ok(doc)
}

/// Applies a strategic merge patch for an object of `kind` (its `kind` field, e.g. `Pod`).
pub fn strategic_merge_patch(
    target: &mut Value,
    patch: &Value,
    kind: &str,
) -> Result<(), PatchError> {
    let mut path = Vec::new();
    merge_map(target, patch, kind, &mut path)
}

fn merge_map<'p>(
    target: &mut Value,
    patch: &'p Value,
    kind: &str,
    path: &mut Vec<&'p str>,
) -> Result<(), PatchError> {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return Ok(());
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut replaced = p.clone();
            replaced.remove("$patch");
            *target = Value::Object(replaced);
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Null;
            return Ok(());
        }
        Some("merge") | None => {}
        Some(other) => {
            return Err(PatchError(format!(
                "Unknown patch type: {other} in map: {patch}"
            )));
        }
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else {
        return Ok(());
    };
    let mut orders: Vec<(&str, &Value)> = Vec::new();
    for (k, v) in p {
        if k == "$patch" || k == "$retainKeys" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(remove)) = (t.get_mut(field), v.as_array()) {
                list.retain(|x| !remove.contains(x));
            }
            continue;
        }
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            orders.push((field, v));
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        path.push(k.as_str());
        let slot = t.entry(k.clone()).or_insert(Value::Null);
        let result = match v {
            Value::Array(items) => merge_list(slot, items, kind, path),
            Value::Object(_) => {
                let r = merge_map(slot, v, kind, path);
                if slot.is_null() {
                    t.remove(k);
                }
                r
            }
            _ => {
                *slot = v.clone();
                Ok(())
            }
        };
        path.pop();
        result?;
    }
    if let Some(Value::Array(keep)) = p.get("$retainKeys") {
        t.retain(|k, _| keep.iter().any(|x| x.as_str() == Some(k)));
    }
    for (field, order) in orders {
        path.push(field);
        let strategy = merge_key(kind, path);
        path.pop();
        if let (Some(Value::Array(list)), Some(order)) = (t.get_mut(field), order.as_array()) {
            let rank = |item: &Value| {
                order.iter().position(|o| match strategy {
                    ListStrategy::MergeBy(key) => {
                        o.get(key).is_some() && o.get(key) == item.get(key)
                    }
                    _ => o == item,
                })
            };
            // Items the order does not name keep their place after those it does, as in
            // apimachinery's `normalizeElementOrder`.
            list.sort_by_key(|item| rank(item).unwrap_or(usize::MAX));
        }
    }
    Ok(())
}

fn merge_list<'p>(
    target: &mut Value,
    items: &'p [Value],
    kind: &str,
    path: &mut Vec<&'p str>,
) -> Result<(), PatchError> {
    let strategy = merge_key(kind, path);
    let replace_all = items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"));
    let patch_items: Vec<&'p Value> = items
        .iter()
        .filter(|i| i.get("$patch").and_then(Value::as_str) != Some("replace"))
        .collect();
    if strategy == ListStrategy::Replace || replace_all || !target.is_array() {
        let mut cleaned = Vec::with_capacity(patch_items.len());
        for item in patch_items {
            if item.get("$patch").and_then(Value::as_str) == Some("delete") {
                continue;
            }
            let mut fresh = Value::Null;
            merge_map(&mut fresh, item, kind, path)?;
            cleaned.push(if item.is_object() {
                fresh
            } else {
                item.clone()
            });
        }
        *target = Value::Array(cleaned);
        return Ok(());
    }
    let Value::Array(list) = target else {
        return Ok(());
    };
    match strategy {
        ListStrategy::MergeScalars => {
            for item in patch_items {
                if !list.contains(item) {
                    list.push(item.clone());
                }
            }
        }
        ListStrategy::MergeBy(key) => {
            for item in patch_items {
                let Some(id) = item.get(key) else {
                    return Err(PatchError(format!(
                        "map: {item} does not contain declared merge key: {key}"
                    )));
                };
                let pos = list.iter().position(|x| x.get(key) == Some(id));
                if item.get("$patch").and_then(Value::as_str) == Some("delete") {
                    if let Some(i) = pos {
                        list.remove(i);
                    }
                    continue;
                }
                match pos {
                    Some(i) => {
                        if let Some(existing) = list.get_mut(i) {
                            merge_map(existing, item, kind, path)?;
                        }
                    }
                    None => {
                        let mut fresh = Value::Null;
                        merge_map(&mut fresh, item, kind, path)?;
                        list.push(fresh);
                    }
                }
            }
        }
        ListStrategy::Replace => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_rfc7386_examples() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
        let mut doc = json!({"a": [1, 2]});
        merge_patch(&mut doc, &json!({"a": [3]}));
        assert_eq!(doc, json!({"a": [3]}));
        let mut doc = json!(["a"]);
        merge_patch(&mut doc, &json!({"a": {"b": "c"}}));
        assert_eq!(doc, json!({"a": {"b": "c"}}));
    }

    #[test]
    fn json_patch_operations_and_errors() {
        let doc = json!({"metadata": {"labels": {"a": "1"}}, "list": [1, 2]});
        let out = json_patch(
            doc.clone(),
            &json!([
                {"op": "add", "path": "/metadata/labels/b~1c", "value": "2"},
                {"op": "replace", "path": "/metadata/labels/a", "value": "9"},
                {"op": "add", "path": "/list/-", "value": 3},
                {"op": "remove", "path": "/list/0"},
                {"op": "copy", "from": "/list/0", "path": "/first"},
                {"op": "move", "from": "/first", "path": "/moved"},
                {"op": "test", "path": "/moved", "value": 2},
            ]),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"labels": {"a": "9", "b/c": "2"}}, "list": [2, 3], "moved": 2})
        );
        assert_eq!(
            json_patch(
                doc.clone(),
                &json!([{"op": "test", "path": "/list/0", "value": 5}])
            )
            .unwrap_err()
            .0,
            "testing value /list/0 failed: test failed"
        );
        assert_eq!(
            json_patch(
                doc.clone(),
                &json!([{"op": "replace", "path": "/nope", "value": 1}])
            )
            .unwrap_err()
            .0,
            "replace operation does not apply: doc is missing key: /nope: missing value"
        );
        assert!(json_patch(doc, &json!([{"op": "remove", "path": "/a/b"}])).is_err());
    }

    #[test]
    fn strategic_merge_by_keys_and_directives() {
        let mut pod = json!({
            "kind": "Pod",
            "metadata": {"labels": {"app": "web", "tier": "x"}, "finalizers": ["a"]},
            "spec": {"containers": [
                {"name": "app", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
                {"name": "side", "image": "s:1"}
            ], "tolerations": [{"key": "k"}]},
            "status": {"conditions": [
                {"type": "Ready", "status": "False"},
                {"type": "PodScheduled", "status": "True"}
            ]}
        });
        strategic_merge_patch(
            &mut pod,
            &json!({
                "metadata": {"labels": {"tier": null, "new": "1"}, "finalizers": ["b", "a"]},
                "spec": {
                    "containers": [
                        {"name": "app", "image": "a:2", "env": [{"name": "Y", "value": "2"}]},
                        {"name": "side", "$patch": "delete"}
                    ],
                    "tolerations": [{"key": "other"}]
                },
                "status": {"conditions": [{"type": "Ready", "status": "True"}]}
            }),
            "Pod",
        )
        .unwrap();
        assert_eq!(pod["metadata"]["labels"], json!({"app": "web", "new": "1"}));
        assert_eq!(pod["metadata"]["finalizers"], json!(["a", "b"]));
        assert_eq!(
            pod["spec"]["containers"],
            json!([{"name": "app", "image": "a:2", "env": [
                {"name": "X", "value": "1"}, {"name": "Y", "value": "2"}
            ]}])
        );
        // Tolerations have no merge key: replaced.
        assert_eq!(pod["spec"]["tolerations"], json!([{"key": "other"}]));
        assert_eq!(
            pod["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}])
        );

        let mut node = json!({"kind": "Node", "status": {"addresses": [
            {"type": "InternalIP", "address": "1"}, {"type": "Hostname", "address": "h"}
        ], "capacity": {"cpu": "4"}}});
        strategic_merge_patch(
            &mut node,
            &json!({"status": {
                "$setElementOrder/addresses": [{"type": "Hostname"}, {"type": "InternalIP"}],
                "addresses": [{"type": "InternalIP", "address": "2"}],
                "capacity": {"$patch": "replace", "memory": "1Gi"}
            }}),
            "Node",
        )
        .unwrap();
        assert_eq!(
            node["status"]["addresses"],
            json!([{"type": "Hostname", "address": "h"}, {"type": "InternalIP", "address": "2"}])
        );
        assert_eq!(node["status"]["capacity"], json!({"memory": "1Gi"}));

        let mut spec =
            json!({"kind": "Pod", "spec": {"volumes": [{"name": "a"}], "x": {"a": 1, "b": 2}}});
        strategic_merge_patch(
            &mut spec,
            &json!({"spec": {
                "volumes": [{"$patch": "replace"}, {"name": "b"}],
                "x": {"$retainKeys": ["b"], "b": 3},
                "$deleteFromPrimitiveList/none": ["q"]
            }}),
            "Pod",
        )
        .unwrap();
        assert_eq!(spec["spec"]["volumes"], json!([{"name": "b"}]));
        assert_eq!(spec["spec"]["x"], json!({"b": 3}));
        let err = strategic_merge_patch(
            &mut json!({"kind": "Pod", "spec": {"containers": []}}),
            &json!({"spec": {"containers": [{"image": "x"}]}}),
            "Pod",
        )
        .unwrap_err();
        assert!(
            err.0.contains("does not contain declared merge key: name"),
            "{err:?}"
        );
    }
}
