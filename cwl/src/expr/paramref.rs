//! Parameter references (`$(inputs.x.y[0])`) evaluated natively, without a
//! JavaScript engine (CWL v1.2 concepts, "Parameter references").
//!
//! Grammar: a leading symbol (`inputs`, `self`, `runtime` or `null`) followed
//! by segments: `.symbol`, `['key']`, `["key"]` or `[index]`. `length` as the
//! last segment of an array (or a string) gives its length.

use serde_json::Value;

/// One step of a parameter reference after the leading symbol.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Segment {
    /// `.name`, `['name']` or `["name"]`.
    Key(String),
    /// `[3]`.
    Index(u64),
}

/// A parsed parameter reference.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ParamRef {
    /// The leading symbol (`inputs`, `self`, `runtime`, `null` or anything
    /// else, which is an error at evaluation).
    pub root: String,
    /// The segments after it.
    pub segments: Vec<Segment>,
}

fn is_symbol_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Parses the text between `$(` and `)` as a parameter reference; `None`
/// when it is not one (it is then JavaScript).
pub(crate) fn parse(inner: &str) -> Option<ParamRef> {
    let chars: Vec<char> = inner.chars().collect();
    let mut i = 0;
    let symbol = |i: &mut usize| -> Option<String> {
        let start = *i;
        while *i < chars.len() && is_symbol_char(chars[*i]) {
            *i += 1;
        }
        (*i > start).then(|| chars[start..*i].iter().collect())
    };
    let root = symbol(&mut i)?;
    let mut segments = Vec::new();
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                segments.push(Segment::Key(symbol(&mut i)?));
            }
            '[' => {
                i += 1;
                let c = *chars.get(i)?;
                if c == '\'' || c == '"' {
                    let quote = c;
                    i += 1;
                    let mut key = String::new();
                    loop {
                        let c = *chars.get(i)?;
                        if c == quote {
                            break;
                        }
                        if c == '\\' {
                            // `\'` and `\"` stand for the quote; any other
                            // backslash is kept as written.
                            if let Some(&q @ ('\'' | '"')) = chars.get(i + 1) {
                                key.push(q);
                                i += 2;
                                continue;
                            }
                        }
                        key.push(c);
                        i += 1;
                    }
                    i += 1;
                    if chars.get(i) != Some(&']') {
                        return None;
                    }
                    i += 1;
                    segments.push(Segment::Key(key));
                } else if c.is_ascii_digit() {
                    let start = i;
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1;
                    }
                    if chars.get(i) != Some(&']') {
                        return None;
                    }
                    let digits: String = chars[start..i].iter().collect();
                    i += 1;
                    segments.push(Segment::Index(digits.parse().ok()?));
                } else {
                    return None;
                }
            }
            _ => return None,
        }
    }
    Some(ParamRef { root, segments })
}

/// A JSON value's kind, for error messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Resolves a parsed reference against the parameter context. The error is
/// a sentence naming the part of the reference that failed.
pub(crate) fn resolve(
    r: &ParamRef,
    inputs: &Value,
    self_: &Value,
    runtime: &Value,
) -> Result<Value, String> {
    let mut current: &Value = match r.root.as_str() {
        "inputs" => inputs,
        "self" => self_,
        "runtime" => runtime,
        "null" if r.segments.is_empty() => return Ok(Value::Null),
        "null" => return Err("`null` has no fields".to_string()),
        other => {
            return Err(format!(
                "unknown name `{other}` (a parameter reference starts with `inputs`, `self` or `runtime`)"
            ));
        }
    };
    let mut path = r.root.clone();
    let last = r.segments.len().saturating_sub(1);
    for (n, seg) in r.segments.iter().enumerate() {
        match seg {
            Segment::Key(key) => {
                if key == "length" && n == last {
                    match current {
                        Value::Array(a) => return Ok(Value::from(a.len())),
                        Value::String(s) => return Ok(Value::from(s.encode_utf16().count())),
                        _ => {}
                    }
                }
                let Value::Object(map) = current else {
                    return Err(format!(
                        "{path} is {}, so it has no field `{key}`",
                        kind(current)
                    ));
                };
                let Some(next) = map.get(key) else {
                    return Err(format!("{path} has no field `{key}`"));
                };
                current = next;
                if key.chars().all(is_symbol_char) && !key.is_empty() {
                    path.push('.');
                    path.push_str(key);
                } else {
                    path.push_str(&format!("[{}]", Value::String(key.clone())));
                }
            }
            Segment::Index(idx) => {
                match current {
                    Value::Array(a) => {
                        let Some(next) = usize::try_from(*idx).ok().and_then(|i| a.get(i)) else {
                            return Err(format!(
                                "index {idx} is out of range: {path} has {} item(s)",
                                a.len()
                            ));
                        };
                        current = next;
                    }
                    Value::String(s) => {
                        // As JavaScript does: one UTF-16 code unit.
                        let units: Vec<u16> = s.encode_utf16().collect();
                        let Some(unit) = usize::try_from(*idx).ok().and_then(|i| units.get(i))
                        else {
                            return Err(format!(
                                "index {idx} is out of range: {path} has {} character(s)",
                                units.len()
                            ));
                        };
                        return if n == last {
                            Ok(Value::String(String::from_utf16_lossy(&[*unit])))
                        } else {
                            Err(format!("{path}[{idx}] is a string, so it has no fields"))
                        };
                    }
                    _ => {
                        return Err(format!(
                            "{path} is {}, so it cannot be indexed with [{idx}]",
                            kind(current)
                        ));
                    }
                }
                path.push_str(&format!("[{idx}]"));
            }
        }
    }
    Ok(current.clone())
}
