//! Data links: the value a sink (a step input or a workflow output) gets
//! from its `source` / `outputSource`, through `linkMerge` and `pickValue`.
//!
//! The rules follow Workflow.yml ("Merging multiple inbound data links" and
//! "Picking non-null values among inbound data links"), as cwltool applies
//! them:
//!
//! * one source (a string, or a one-item list) and no `linkMerge`: the
//!   value itself;
//! * several sources, or an explicit `linkMerge`: `merge_nested` (the
//!   default) makes an array of one entry per source, `merge_flattened`
//!   concatenates sources that are arrays and appends the others;
//! * then, if the value is an array, `pickValue` picks among its entries.

use std::collections::HashMap;

use serde_json::Value;

use crate::CwlError;

/// The source ids of a sink's `source` field (a string or a list).
pub fn source_ids(source: Option<&Value>) -> Vec<&str> {
    match source {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// The value of the sink `sink` (an object with `source`-like field
/// `field`, optional `linkMerge` and `pickValue`), read from `state` (every
/// source must be present). `what` names the sink in error messages.
/// Returns `None` when the sink has no source at all.
pub fn sink_value(
    sink: &Value,
    field: &str,
    state: &HashMap<String, Value>,
    what: &str,
) -> Result<Option<Value>, CwlError> {
    let source = sink.get(field);
    let ids = source_ids(source);
    if ids.is_empty() {
        return Ok(None);
    }
    let get = |id: &str| -> Result<Value, CwlError> {
        state.get(id).cloned().ok_or_else(|| {
            CwlError::Invalid(format!(
                "{what}: source '{id}' is neither an input of the workflow nor an output of one of its steps; fix the `{field}` field"
            ))
        })
    };
    let link_merge = sink.get("linkMerge").and_then(Value::as_str);
    let merged = if ids.len() == 1 && link_merge.is_none() {
        get(ids[0])?
    } else {
        let method = link_merge.unwrap_or("merge_nested");
        let mut out = Vec::with_capacity(ids.len());
        for id in &ids {
            let v = get(id)?;
            match method {
                "merge_nested" => out.push(v),
                "merge_flattened" => match v {
                    Value::Array(items) => out.extend(items),
                    other => out.push(other),
                },
                other => {
                    return Err(CwlError::Invalid(format!(
                        "{what}: unknown linkMerge method '{other}'; use merge_nested or merge_flattened"
                    )));
                }
            }
        }
        Value::Array(out)
    };
    let pick = sink.get("pickValue").and_then(Value::as_str);
    match pick {
        None => Ok(Some(merged)),
        Some(method) => pick_value(method, merged, what).map(Some),
    }
}

/// Applies the `pickValue` method `method` to `v` (only arrays are
/// affected; any other value is returned unchanged).
pub fn pick_value(method: &str, v: Value, what: &str) -> Result<Value, CwlError> {
    let Value::Array(items) = v else {
        return Ok(v);
    };
    match method {
        "first_non_null" => items.into_iter().find(|x| !x.is_null()).ok_or_else(|| {
            CwlError::Failed(format!(
                "{what}: pickValue first_non_null found no non-null value among its sources (all are null)"
            ))
        }),
        "the_only_non_null" => {
            let total = items.len();
            let mut non_null = items.into_iter().filter(|x| !x.is_null());
            let first = non_null.next();
            let extra = non_null.count();
            match first {
                None => Err(CwlError::Failed(format!(
                    "{what}: pickValue the_only_non_null found no non-null value among its {total} sources (all are null)"
                ))),
                Some(_) if extra > 0 => Err(CwlError::Failed(format!(
                    "{what}: pickValue the_only_non_null found {} non-null values among its {total} sources; exactly one must be non-null",
                    extra + 1
                ))),
                Some(v) => Ok(v),
            }
        }
        "all_non_null" => Ok(Value::Array(
            items.into_iter().filter(|x| !x.is_null()).collect(),
        )),
        other => Err(CwlError::Invalid(format!(
            "{what}: unknown pickValue method '{other}'; use first_non_null, the_only_non_null or all_non_null"
        ))),
    }
}
