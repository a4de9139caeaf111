//! The static type check of workflow connections, after cwltool's
//! `checker.py`: each source's parameter (type and secondaryFiles) against
//! its sink's. A source that can never fit is an error, one that may not fit
//! a warning.

use serde_json::{Value, json};

/// What a check concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Pass,
    Warning,
    Exception,
}

/// `_get_type`: the type of a parameter object, or the type itself.
fn get_type(t: &Value) -> Value {
    if let Value::Object(o) = t
        && let Some(inner) = o.get("type")
        && !matches!(inner.as_str(), Some("array" | "record" | "enum"))
    {
        return inner.clone();
    }
    t.clone()
}

/// cwltool's `check_types`.
pub(crate) fn check_types(
    src: &Value,
    sink: &Value,
    link_merge: Option<&str>,
    pick_value: Option<&str>,
) -> Verdict {
    let (src_t, sink_t) = match pick_value {
        Some(pick) => {
            let mut st = get_type(src);
            if st.get("type").and_then(Value::as_str) == Some("array") {
                let items = st.get("items").cloned().unwrap_or(Value::Null);
                match pick {
                    "all_non_null" => {
                        let items = match items {
                            Value::Array(v) => {
                                Value::Array(v.into_iter().filter(|x| x != "null").collect())
                            }
                            other => other,
                        };
                        st = json!({"type": "array", "items": items});
                    }
                    _ => {
                        if let Value::Array(v) = items
                            && v.iter().any(|x| x == "null")
                        {
                            st = Value::Array(v.into_iter().filter(|x| x != "null").collect());
                        }
                    }
                }
            }
            (st, get_type(sink))
        }
        None => (src.clone(), sink.clone()),
    };
    match link_merge {
        Some("merge_nested") => check_types(
            &json!({"type": "array", "items": get_type(&src_t)}),
            &get_type(sink),
            None,
            None,
        ),
        Some("merge_flattened") => check_types(
            &merge_flatten_type(&get_type(&src_t)),
            &get_type(sink),
            None,
            None,
        ),
        _ => {
            if can_assign(&src_t, &sink_t, true) {
                Verdict::Pass
            } else if can_assign(&src_t, &sink_t, false) {
                Verdict::Warning
            } else {
                Verdict::Exception
            }
        }
    }
}

/// cwltool's `merge_flatten_type`: arrays stay, anything else is wrapped.
fn merge_flatten_type(t: &Value) -> Value {
    match t {
        Value::Array(members) => Value::Array(members.iter().map(merge_flatten_type).collect()),
        _ if t.get("type").and_then(Value::as_str) == Some("array") => t.clone(),
        _ => json!({"type": "array", "items": t}),
    }
}

/// cwltool's `can_assign_src_to_sink`. Strict: every source type must fit;
/// lax: one non-null source type fitting is enough.
pub(crate) fn can_assign(src: &Value, sink: &Value, strict: bool) -> bool {
    if src == "Any" || sink == "Any" {
        return true;
    }
    match (src, sink) {
        (Value::Object(s), Value::Object(k)) => {
            let st = s.get("type").unwrap_or(&Value::Null);
            let kt = k.get("type").unwrap_or(&Value::Null);
            if st == "array" && kt == "array" {
                return can_assign(
                    s.get("items").unwrap_or(&Value::Null),
                    k.get("items").unwrap_or(&Value::Null),
                    strict,
                );
            }
            if st == "record" && kt == "record" {
                return compare_records(s, k, strict);
            }
            if st == "File" && kt == "File" {
                let none = Vec::new();
                let src_sf = s
                    .get("secondaryFiles")
                    .and_then(Value::as_array)
                    .unwrap_or(&none);
                let sink_sf = k
                    .get("secondaryFiles")
                    .and_then(Value::as_array)
                    .unwrap_or(&none);
                if strict && sink_sf.iter().any(|x| !src_sf.contains(x)) {
                    return false;
                }
                return true;
            }
            can_assign(st, kt, strict)
        }
        (Value::Array(members), _) => {
            if strict {
                members.iter().all(|m| can_assign(m, sink, false))
            } else {
                members
                    .iter()
                    .any(|m| m != "null" && can_assign(m, sink, false))
            }
        }
        (_, Value::Array(members)) => members.iter().any(|m| can_assign(src, m, false)),
        _ => src == sink,
    }
}

fn compare_records(
    src: &serde_json::Map<String, Value>,
    sink: &serde_json::Map<String, Value>,
    strict: bool,
) -> bool {
    let fields = |r: &serde_json::Map<String, Value>| -> Vec<(String, Value)> {
        r.get("fields")
            .and_then(Value::as_array)
            .map(|fs| {
                fs.iter()
                    .map(|f| {
                        let name = f.get("name").and_then(Value::as_str).unwrap_or("");
                        (
                            super::shortname(name).to_string(),
                            f.get("type").cloned().unwrap_or(Value::Null),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let src_fields = fields(src);
    for (name, sink_t) in fields(sink) {
        let src_t = src_fields
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(Value::String("null".into()), |(_, t)| t.clone());
        if !can_assign(&src_t, &sink_t, strict) {
            return false;
        }
    }
    true
}

/// A type in the notation of documents, for messages: `int[]`, `(null | File)`.
pub(crate) fn type_name(t: &Value) -> String {
    match t {
        Value::String(s) => s.clone(),
        Value::Array(a) => {
            let parts: Vec<String> = a.iter().map(type_name).collect();
            format!("({})", parts.join(" | "))
        }
        Value::Object(o) => match o.get("type") {
            Some(Value::String(k)) if k == "array" => {
                format!("{}[]", o.get("items").map_or("?".into(), type_name))
            }
            Some(Value::String(k)) if k == "record" || k == "enum" => {
                let name = o.get("name").and_then(Value::as_str).unwrap_or("");
                format!("{k} {}", super::shortname(name))
            }
            Some(other) => type_name(other),
            None => "?".into(),
        },
        _ => "?".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(t: Value) -> Value {
        json!({ "type": t })
    }

    #[test]
    fn like_cwltool() {
        use Verdict::*;
        assert_eq!(
            check_types(&p(json!("int")), &p(json!("int")), None, None),
            Pass
        );
        assert_eq!(
            check_types(&p(json!("int")), &p(json!("long")), None, None),
            Exception
        );
        assert_eq!(
            check_types(&p(json!(["null", "File"])), &p(json!("File")), None, None),
            Warning
        );
        assert_eq!(
            check_types(&p(json!("File")), &p(json!(["null", "File"])), None, None),
            Pass
        );
        assert_eq!(
            check_types(&p(json!(["null", "int"])), &p(json!("string")), None, None),
            Exception
        );
        assert_eq!(
            check_types(&p(json!("Any")), &p(json!("string")), None, None),
            Pass
        );
        let arr = json!({"type": "array", "items": "File"});
        assert_eq!(
            check_types(
                &p(json!("File")),
                &p(arr.clone()),
                Some("merge_nested"),
                None
            ),
            Pass
        );
        assert_eq!(
            check_types(
                &p(arr.clone()),
                &p(arr.clone()),
                Some("merge_flattened"),
                None
            ),
            Pass
        );
        assert_eq!(
            check_types(&p(arr.clone()), &p(json!("File")), None, None),
            Exception
        );
        // all_non_null gives an array: a single string sink can never take it.
        assert_eq!(
            check_types(
                &p(json!("string")),
                &p(json!("string")),
                Some("merge_nested"),
                Some("all_non_null")
            ),
            Exception
        );
        // Secondary files the sink needs and the source lacks: a warning.
        let sf = json!([{"pattern": ".bai", "required": null}]);
        assert_eq!(
            check_types(
                &json!({"type": "File"}),
                &json!({"type": "File", "secondaryFiles": sf}),
                None,
                None
            ),
            Warning
        );
        let rec =
            |t: &str| json!({"type": "record", "name": "r", "fields": [{"name": "a", "type": t}]});
        assert_eq!(
            check_types(&p(rec("int")), &p(rec("int")), None, None),
            Pass
        );
        assert_eq!(
            check_types(&p(rec("int")), &p(rec("string")), None, None),
            Exception
        );
    }
}
