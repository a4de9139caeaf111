//! PATCH bodies: JSON merge patch (RFC 7386), an approximation of strategic
//! merge patch, JSON patch (RFC 6902), and server-side apply treated as a
//! merge.
//!
//! Strategic merge differs from a merge patch only for lists with a merge
//! key; the lists clients patch in practice (containers, volumes, env, ports)
//! are keyed by `name`, which is what this implementation merges on.

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

fn keyed_by_name(list: &[Value]) -> bool {
    !list.is_empty()
        && list
            .iter()
            .all(|e| e.get("name").is_some_and(Value::is_string))
}

/// Strategic merge: like a merge patch, but lists whose elements all carry
/// a `name` are merged element by element (`$patch: delete` removes one).
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in p {
        if k.starts_with("$setElementOrder") || k == "$retainKeys" {
            continue;
        }
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Array(items) if keyed_by_name(items) => {
                let existing = t.entry(k.clone()).or_insert_with(|| Value::Array(vec![]));
                let Value::Array(list) = existing else {
                    *existing = v.clone();
                    continue;
                };
                for item in items {
                    let name = item.get("name").cloned();
                    let pos = list.iter().position(|e| e.get("name") == name.as_ref());
                    let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                    match (pos, delete) {
                        (Some(i), true) => {
                            list.remove(i);
                        }
                        (None, true) => {}
                        (Some(i), false) => strategic_merge(&mut list[i], item),
                        (None, false) => list.push(item.clone()),
                    }
                }
            }
            _ => strategic_merge(t.entry(k.clone()).or_insert(Value::Null), v),
        }
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
