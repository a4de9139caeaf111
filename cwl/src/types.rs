//! Checking values against CWL types.

use serde_json::Value;

use crate::CwlError;

/// True when `v` is a valid value of the (normalized) type `ty`.
pub fn conforms(ty: &Value, v: &Value) -> bool {
    // STUB: replaced by the types module (branch i11-expr).
    let _ = ty;
    !v.is_null()
}

/// Checks an input object against a process's `inputs` (normalized) and
/// returns it keyed by short names, with defaults filled in and `null` for
/// absent optional inputs. Keys the process does not declare are dropped.
pub fn validate_inputs(inputs: &[Value], job: &Value) -> Result<Value, CwlError> {
    // STUB: replaced by the types module (branch i11-expr).
    let mut out = serde_json::Map::new();
    for input in inputs {
        let Some(id) = input.get("id").and_then(Value::as_str) else {
            continue;
        };
        let name = crate::load::shortname(id);
        let value = job
            .get(name)
            .cloned()
            .or_else(|| input.get("default").cloned())
            .unwrap_or(Value::Null);
        out.insert(name.to_string(), value);
    }
    Ok(Value::Object(out))
}
