//! How values become text when they are interpolated into a string.

use serde_json::{Number, Value};

/// Formats a number in plain decimal, as for a command line: integers as
/// written (big ones exactly), other numbers as the shortest text that
/// reads back to the same double, never with an exponent and without a
/// trailing `.0` (`0.00001`, `0.0000123`, `123000`, `2.3`).
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

/// Formats a number as the reference runner writes it inside interpolated
/// text and JSON (Python's `repr`): integers as written, other numbers as
/// the shortest text that reads back to the same double, in plain decimal
/// with at least one fractional digit from 1e-4 up to 1e16 (`2.0`, `0.5`,
/// `123000.0`) and in exponent form outside (`1e-05`, `1.5e+16`, `1e+42`).
pub fn format_number_json(n: &Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    match n.as_f64() {
        Some(f) if f.is_finite() => python_float_repr(f),
        _ => n.to_string(),
    }
}

fn python_float_repr(f: f64) -> String {
    // Rust's `{:e}` is the shortest round-trip text in exponent form, for
    // example `1.5e16` or `1e-5`.
    let sci = format!("{f:e}");
    let Some((mantissa, exp)) = sci.split_once('e') else {
        return sci;
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    if f == 0.0 || (-4..16).contains(&exp) {
        let plain = f.to_string();
        if plain.contains('.') {
            plain
        } else {
            format!("{plain}.0")
        }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
    }
}

/// The text of a value interpolated into a string: a string as itself
/// (no quotes); `null`, `true`/`false`, a number ([`format_number_json`]),
/// an array or an object as [`to_sorted_json`] writes them.
pub fn to_interpolated_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => to_sorted_json(other),
    }
}

/// Serializes `v` as the reference runner does for interpolation and
/// `InitialWorkDirRequirement` entries (Python's `json.dumps` with sorted
/// keys): `{"a": 1, "b": [1, 2.5]}`, with `", "` and `": "` separators,
/// non-ASCII characters escaped as `\uXXXX`, numbers by
/// [`format_number_json`]. Byte for byte the same text, so file sizes and
/// checksums agree.
pub fn to_sorted_json(v: &Value) -> String {
    let mut out = String::new();
    write_json(v, &mut out);
    out
}

fn write_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) >= 0x7f => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_json(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&format_number_json(n)),
        Value::String(s) => write_str(s, out),
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
                write_str(k, out);
                out.push_str(": ");
                if let Some(item) = map.get(k) {
                    write_json(item, out);
                }
            }
            out.push('}');
        }
    }
}
