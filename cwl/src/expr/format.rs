//! How values become text when they are interpolated into a string.

use serde_json::{Number, Value};

/// Formats a JSON number the way CWL runners print numbers: integers as
/// written (big ones exactly), other numbers in plain decimal without an
/// exponent (`0.00001`, `123000`, `2.3`) and without a trailing `.0`.
pub fn format_number(n: &Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    match n.as_f64() {
        // Rust's `Display` for f64 is the shortest text that reads back to
        // the same double, in plain decimal notation.
        Some(f) if f.is_finite() => {
            let s = f.to_string();
            if s == "-0" { "0".to_string() } else { s }
        }
        _ => n.to_string(),
    }
}

/// The text of a value interpolated into a string: a string as itself
/// (no quotes), `null`, `true`/`false`, a number by [`format_number`], and
/// an array or object as JSON with its object keys sorted.
pub fn to_interpolated_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => to_sorted_json(other),
    }
}

/// Serializes `v` as JSON with object keys sorted and numbers printed by
/// [`format_number`], separated as `{"a": 1, "b": [1, 2]}` (the layout the
/// reference runner uses for interpolated values).
pub fn to_sorted_json(v: &Value) -> String {
    let mut out = String::new();
    write_json(v, &mut out);
    out
}

fn write_json(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&format_number(n)),
        Value::String(s) => out.push_str(&Value::String(s.clone()).to_string()),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push_str(": ");
                if let Some(item) = map.get(k) {
                    write_json(item, out);
                }
            }
            out.push('}');
        }
    }
}
