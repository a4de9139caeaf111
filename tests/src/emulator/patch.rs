//! PATCH bodies: JSON merge patch (RFC 7386), an approximation of strategic
//! merge patch, JSON patch (RFC 6902), and server-side apply treated as a
//! merge.
//!
//! Strategic merge differs from a merge patch for lists with a merge key
//! (containers and env by `name`, volumeMounts by `mountPath`, ports by
//! `containerPort`...) and in its `$`-directives, which kubectl's
//! client-side apply sends.

use serde_json::{Map, Value};

use super::error::ApiError;

/// The kinds of PATCH the apiserver accepts, by Content-Type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/json-patch+json`.
    Json,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchKind {
    /// Parses a Content-Type header.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or_default().trim();
        match base {
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/json-patch+json" => Some(Self::Json),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// RFC 7386: objects merge recursively, `null` deletes, anything else
/// replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// The merge key of a list field under strategic merge, as the Kubernetes
/// types declare it (`patchMergeKey`); `Some("")` for a list of scalars
/// merged as a set (`finalizers`); `None` for a list that is replaced whole
/// (`command`, `args`, `rules`, `subjects`...). `ports` is keyed by
/// `containerPort` in a container and by `port` in a Service.
fn merge_key(field: &str, current: &[Value], patch: &[Value]) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => "name",
        "hostAliases" | "podIPs" | "hostIPs" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "ownerReferences" => "uid",
        "conditions" | "addresses" => "type",
        "finalizers" => "",
        "ports" => {
            if current
                .iter()
                .chain(patch)
                .any(|e| e.get("containerPort").is_some())
            {
                "containerPort"
            } else {
                "port"
            }
        }
        _ => return None,
    })
}

fn directive(v: &Value) -> Option<&str> {
    v.get("$patch").and_then(Value::as_str)
}

/// Merges a patch list into a list keyed by `key` (or a set of scalars when
/// `key` is empty), honouring `$patch: delete` and `$patch: replace`.
fn merge_list(list: &mut Vec<Value>, items: &[Value], key: &str) {
    if items.iter().any(|i| directive(i) == Some("replace")) {
        *list = items
            .iter()
            .filter(|i| directive(i).is_none())
            .cloned()
            .collect();
        return;
    }
    if key.is_empty() {
        for item in items {
            if !list.contains(item) {
                list.push(item.clone());
            }
        }
        return;
    }
    for item in items {
        let id = item.get(key);
        let pos = list.iter().position(|e| id.is_some() && e.get(key) == id);
        match (pos, directive(item) == Some("delete")) {
            (Some(i), true) => {
                list.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge(&mut list[i], item),
            (None, false) => {
                let mut fresh = Value::Null;
                strategic_merge(&mut fresh, item);
                list.push(fresh);
            }
        }
    }
}

/// `$setElementOrder/FIELD`: puts the listed elements first, in that order.
fn set_order(list: &mut Vec<Value>, order: &[Value], key: Option<&str>) {
    let id = |e: &Value| -> Value {
        match key {
            Some(k) if !k.is_empty() => e.get(k).cloned().unwrap_or(Value::Null),
            _ => e.clone(),
        }
    };
    let wanted: Vec<Value> = order.iter().map(&id).collect();
    let mut ordered = Vec::with_capacity(list.len());
    for w in &wanted {
        if let Some(i) = list.iter().position(|e| id(e) == *w) {
            ordered.push(list.remove(i));
        }
    }
    ordered.append(list);
    *list = ordered;
}

/// Strategic merge patch, as kubectl's client-side apply sends it: maps
/// merge, `null` deletes, lists with a merge key (see `merge_key`) merge
/// element by element, other lists are replaced; the directives `$patch:
/// delete|replace|merge`, `$retainKeys`, `$setElementOrder/FIELD` and
/// `$deleteFromPrimitiveList/FIELD` are honoured.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    match directive(patch) {
        Some("replace") => {
            let mut fresh = Value::Null;
            let mut rest = p.clone();
            rest.remove("$patch");
            strategic_merge(&mut fresh, &Value::Object(rest));
            *target = fresh;
            return;
        }
        Some("delete") => {
            *target = Value::Null;
            return;
        }
        _ => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        match v {
            Value::Null => {
                t.remove(k);
            }
            v if directive(v) == Some("delete") => {
                t.remove(k);
            }
            Value::Array(items) => {
                let current = t
                    .get(k)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                match merge_key(k, &current, items) {
                    Some(key) => {
                        let mut list = current;
                        merge_list(&mut list, items, key);
                        t.insert(k.clone(), Value::Array(list));
                    }
                    None => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
            _ => strategic_merge(t.entry(k.clone()).or_insert(Value::Null), v),
        }
    }
    for (k, v) in p {
        let Some(values) = v.as_array() else { continue };
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/")
            && let Some(Value::Array(list)) = t.get_mut(field)
        {
            list.retain(|e| !values.contains(e));
        }
        if let Some(field) = k.strip_prefix("$setElementOrder/")
            && let Some(Value::Array(list)) = t.get_mut(field)
        {
            let snapshot = list.clone();
            set_order(list, values, merge_key(field, &snapshot, values));
        }
    }
    if let Some(Value::Array(keep)) = p.get("$retainKeys") {
        t.retain(|k, _| keep.iter().any(|x| x.as_str() == Some(k)));
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn pointer_parent<'a>(doc: &'a mut Value, path: &str) -> Result<(&'a mut Value, String), ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "the server rejected our request due to an error in our request: invalid JSON patch path {path:?}"
        ))
    };
    let (parent, last) = path.rsplit_once('/').ok_or_else(bad)?;
    let parent_val = if parent.is_empty() {
        doc
    } else {
        doc.pointer_mut(parent).ok_or_else(bad)?
    };
    Ok((parent_val, unescape(last)))
}

fn json_add(doc: &mut Value, path: &str, value: Value) -> Result<(), ApiError> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, key) = pointer_parent(doc, path)?;
    match parent {
        Value::Object(m) => {
            m.insert(key, value);
            Ok(())
        }
        Value::Array(a) => {
            let idx = if key == "-" {
                a.len()
            } else {
                key.parse().unwrap_or(usize::MAX)
            };
            if idx > a.len() {
                return Err(ApiError::bad_request(format!(
                    "invalid JSON patch index in {path:?}"
                )));
            }
            a.insert(idx, value);
            Ok(())
        }
        _ => Err(ApiError::bad_request(format!(
            "invalid JSON patch path {path:?}"
        ))),
    }
}

fn json_remove(doc: &mut Value, path: &str) -> Result<Value, ApiError> {
    let missing = || {
        ApiError::internal(&format!(
            "unable to remove nonexistent key: {path}: missing value"
        ))
    };
    let (parent, key) = pointer_parent(doc, path)?;
    match parent {
        Value::Object(m) => m.remove(&key).ok_or_else(missing),
        Value::Array(a) => {
            let idx: usize = key.parse().map_err(|_| missing())?;
            if idx < a.len() {
                Ok(a.remove(idx))
            } else {
                Err(missing())
            }
        }
        _ => Err(missing()),
    }
}

/// RFC 6902.
pub fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), ApiError> {
    let ops = ops
        .as_array()
        .ok_or_else(|| ApiError::bad_request("json patch must be an array of operations"))?;
    for op in ops {
        let kind = op["op"].as_str().unwrap_or_default();
        let path = op["path"].as_str().unwrap_or_default();
        match kind {
            "add" => json_add(doc, path, op["value"].clone())?,
            "remove" => {
                json_remove(doc, path)?;
            }
            "replace" => {
                json_remove(doc, path)?;
                json_add(doc, path, op["value"].clone())?;
            }
            "test" => {
                if doc.pointer(path) != Some(&op["value"]) {
                    return Err(ApiError::internal(&format!(
                        "testing value {path} failed: test failed"
                    )));
                }
            }
            "move" | "copy" => {
                let from = op["from"].as_str().unwrap_or_default();
                let v = if kind == "move" {
                    json_remove(doc, from)?
                } else {
                    doc.pointer(from).cloned().ok_or_else(|| {
                        ApiError::internal(&format!("copy from {from}: missing value"))
                    })?
                };
                json_add(doc, path, v)?;
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unexpected JSON patch operation {other:?}"
                )));
            }
        }
    }
    Ok(())
}

/// Parses a PATCH body (YAML is accepted for apply).
pub fn parse_body(kind: PatchKind, body: &[u8]) -> Result<Value, ApiError> {
    match kind {
        PatchKind::Apply => super::yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}"))),
        _ => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}"))),
    }
}

/// Applies a parsed patch to a copy of `current`.
pub fn apply(kind: PatchKind, current: &Value, patch: &Value) -> Result<Value, ApiError> {
    let mut out = current.clone();
    match kind {
        PatchKind::Merge | PatchKind::Apply => merge_patch(&mut out, patch),
        PatchKind::Strategic => strategic_merge(&mut out, patch),
        PatchKind::Json => json_patch(&mut out, patch)?,
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_and_strategic() {
        let cur = json!({"metadata": {"labels": {"a": "1", "b": "2"}},
            "spec": {"containers": [{"name": "c", "image": "x"}, {"name": "d", "image": "y"}]}});
        let out = apply(
            PatchKind::Merge,
            &cur,
            &json!({"metadata": {"labels": {"a": null, "c": "3"}}}),
        );
        let out = out.unwrap_or_default();
        assert_eq!(out["metadata"]["labels"], json!({"b": "2", "c": "3"}));
        let p = json!({"spec": {"containers": [{"name": "d", "image": "z"}]}});
        let merged = apply(PatchKind::Merge, &cur, &p).unwrap_or_default();
        assert_eq!(
            merged["spec"]["containers"].as_array().map(Vec::len),
            Some(1)
        );
        let strategic = apply(PatchKind::Strategic, &cur, &p).unwrap_or_default();
        assert_eq!(strategic["spec"]["containers"][1]["image"], "z");
        assert_eq!(strategic["spec"]["containers"][0]["image"], "x");
    }

    #[test]
    fn strategic_merge_as_kubectl_apply_sends_it() {
        let cur = json!({
            "metadata": {"labels": {"a": "1"}, "finalizers": ["x"]},
            "spec": {"template": {"spec": {
                "containers": [{"name": "leader", "image": "i1", "command": ["a", "b"],
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "C", "value": "3"}],
                    "volumeMounts": [{"name": "w", "mountPath": "/w"}, {"name": "w", "mountPath": "/v"}]}],
                "volumes": [{"name": "w", "configMap": {"name": "cm"}}]}}},
            "subjects": [{"kind": "ServiceAccount", "name": "a"}, {"kind": "User", "name": "b"}],
        });
        let p = json!({
            "metadata": {"labels": {"a": "2"}, "$deleteFromPrimitiveList/finalizers": ["x"]},
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "leader"}],
                "containers": [{"name": "leader", "command": ["c"],
                    "$setElementOrder/env": [{"name": "B"}, {"name": "A"}],
                    "env": [{"name": "A", "value": "9"}, {"$patch": "delete", "name": "C"}],
                    "volumeMounts": [{"mountPath": "/v", "$patch": "delete"}]}],
                "volumes": [{"name": "w", "$retainKeys": ["name", "emptyDir"], "emptyDir": {}}]}}},
            "subjects": [{"kind": "ServiceAccount", "name": "a"}],
        });
        let out = apply(PatchKind::Strategic, &cur, &p).unwrap_or_default();
        assert_eq!(out["metadata"]["labels"]["a"], "2");
        assert_eq!(out["metadata"]["finalizers"], json!([]));
        let c = &out["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "i1");
        assert_eq!(c["command"], json!(["c"]));
        assert_eq!(
            c["env"],
            json!([{"name": "B", "value": "2"}, {"name": "A", "value": "9"}])
        );
        assert_eq!(c["volumeMounts"], json!([{"name": "w", "mountPath": "/w"}]));
        assert_eq!(
            out["spec"]["template"]["spec"]["volumes"],
            json!([{"name": "w", "emptyDir": {}}])
        );
        // A list without a merge key (RoleBinding subjects) is replaced.
        assert_eq!(
            out["subjects"],
            json!([{"kind": "ServiceAccount", "name": "a"}])
        );
        let replaced = apply(
            PatchKind::Strategic,
            &cur,
            &json!({"metadata": {"$patch": "replace", "labels": {"z": "1"}}}),
        )
        .unwrap_or_default();
        assert_eq!(replaced["metadata"], json!({"labels": {"z": "1"}}));
    }

    #[test]
    fn json_patch_ops() {
        let cur = json!({"a": [1, 2], "b": {"c": 1}});
        let ops = json!([
            {"op": "add", "path": "/a/-", "value": 3},
            {"op": "replace", "path": "/b/c", "value": 2},
            {"op": "test", "path": "/b/c", "value": 2},
            {"op": "remove", "path": "/a/0"},
        ]);
        let out = apply(PatchKind::Json, &cur, &ops).unwrap_or_default();
        assert_eq!(out, json!({"a": [2, 3], "b": {"c": 2}}));
        let bad = json!([{"op": "test", "path": "/b/c", "value": 9}]);
        assert!(apply(PatchKind::Json, &cur, &bad).is_err());
    }
}
