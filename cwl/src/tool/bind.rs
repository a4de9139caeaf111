//! Command-line binding (CommandLineTool.yml, "Input binding"): the
//! `baseCommand`, `arguments` and every `inputBinding` become sorted
//! bindings, each of which gives zero or more words.
//!
//! Sort keys follow the specification and cwltool: a `baseCommand` word
//! sorts first; an argument's key is `[position, index]`; an input's is
//! `[position, name]`; a nested binding (array item, record field) appends
//! its own key to its parent's. Keys compare element by element, integers
//! as numbers, an integer and a string as strings, a shorter key first.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::{Ctx, param_name};
use crate::CwlError;
use crate::files::{is_directory, is_file};

#[derive(Clone, Debug, PartialEq)]
enum Key {
    Int(i64),
    Str(String),
}

impl Key {
    fn from_json(v: &Value) -> Option<Key> {
        match v {
            Value::Number(n) => n.as_i64().map(Key::Int),
            Value::String(s) => Some(Key::Str(s.clone())),
            _ => None,
        }
    }
    fn to_json(&self) -> Value {
        match self {
            Key::Int(i) => Value::from(*i),
            Key::Str(s) => Value::from(s.clone()),
        }
    }
    fn text(&self) -> String {
        match self {
            Key::Int(i) => i.to_string(),
            Key::Str(s) => s.clone(),
        }
    }
}

fn cmp_keys(a: &[Key], b: &[Key]) -> Ordering {
    for i in 0..a.len().max(b.len()) {
        match (a.get(i), b.get(i)) {
            (Some(x), Some(y)) if x == y => continue,
            (None, _) => return Ordering::Less,
            (_, None) => return Ordering::Greater,
            (Some(Key::Int(x)), Some(Key::Int(y))) => return x.cmp(y),
            (Some(x), Some(y)) => {
                return if x.text() > y.text() {
                    Ordering::Greater
                } else {
                    Ordering::Less
                };
            }
        }
    }
    Ordering::Equal
}

/// One binding: its sort key, its options (`prefix`, `separate`,
/// `itemSeparator`, `valueFrom`, `shellQuote`) and the value it binds.
#[derive(Clone, Debug)]
struct Binding {
    key: Vec<Key>,
    opts: Map<String, Value>,
    datum: Value,
}

/// The words of the command line in order, each group with whether it is
/// shell-quoted under `ShellCommandRequirement`.
pub(crate) fn command_line(ctx: &mut Ctx<'_>) -> Result<Vec<(Vec<String>, bool)>, CwlError> {
    let tool = ctx.inv.tool.clone();
    let mut bindings = Vec::new();

    let inputs = ctx.inputs.clone();
    for p in tool
        .get("inputs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(name) = param_name(p) else { continue };
        let datum = inputs.get(name).cloned().unwrap_or(Value::Null);
        if datum.is_null() {
            continue;
        }
        bindings.extend(bind_input(ctx, p, &datum, &[], &[Key::Str(name.into())])?);
    }

    if let Some(Value::Array(words)) = tool.get("baseCommand") {
        for (i, w) in words.iter().enumerate() {
            bindings.push(Binding {
                key: vec![Key::Int(-1_000_000), Key::Int(i as i64)],
                opts: Map::new(),
                datum: w.clone(),
            });
        }
    } else if let Some(Value::String(w)) = tool.get("baseCommand") {
        bindings.push(Binding {
            key: vec![Key::Int(-1_000_000), Key::Int(0)],
            opts: Map::new(),
            datum: Value::String(w.clone()),
        });
    }

    for (i, arg) in tool
        .get("arguments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let index = Key::Int(i as i64);
        match arg {
            Value::Object(opts) => {
                let pos = match opts.get("position") {
                    Some(Value::String(s)) => {
                        let v = ctx.eval(&Value::String(s.clone()), &Value::Null)?;
                        position_of(&v, "arguments", i)?
                    }
                    Some(Value::Null) | None => 0,
                    Some(v) => position_of(v, "arguments", i)?,
                };
                bindings.push(Binding {
                    key: vec![Key::Int(pos), index],
                    opts: opts.clone(),
                    datum: Value::Null,
                });
            }
            Value::String(s) => {
                let mut opts = Map::new();
                opts.insert("valueFrom".into(), Value::String(s.clone()));
                bindings.push(Binding {
                    key: vec![Key::Int(0), index],
                    opts,
                    datum: Value::Null,
                });
            }
            other => {
                return Err(CwlError::Invalid(format!(
                    "arguments[{i}] must be a string or a binding object, got {other}"
                )));
            }
        }
    }

    // A stable sort, as Python's `sorted`.
    bindings.sort_by(|a, b| cmp_keys(&a.key, &b.key));

    let mut out = Vec::with_capacity(bindings.len());
    for b in &bindings {
        let words = generate(ctx, b)?;
        let quote = b
            .opts
            .get("shellQuote")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        out.push((words, quote));
    }
    Ok(out)
}

fn position_of(v: &Value, what: &str, i: usize) -> Result<i64, CwlError> {
    match v {
        Value::Null => Ok(0),
        Value::Number(n) if n.as_i64().is_some() => Ok(n.as_i64().unwrap_or(0)),
        other => Err(CwlError::Failed(format!(
            "{what}[{i}]: `position` must evaluate to an integer, got {other}"
        ))),
    }
}

/// True when `v` is a value of type `ty` (a union member): File and
/// Directory by `class`, `null` only for null, the rest through
/// [`crate::types::conforms`].
pub(crate) fn matches_type(ty: &Value, v: &Value) -> bool {
    match ty {
        Value::String(t) => match t.as_str() {
            "null" => v.is_null(),
            "Any" => !v.is_null(),
            "File" => is_file(v),
            "Directory" => is_directory(v),
            "boolean" => v.is_boolean(),
            "string" => v.is_string(),
            "int" | "long" => v.as_f64().is_some_and(|f| f.fract() == 0.0),
            "float" | "double" => v.is_number(),
            _ => !v.is_null() && crate::types::conforms(ty, v),
        },
        Value::Object(t) => match t.get("type").and_then(Value::as_str) {
            Some("array") => {
                let items = t.get("items").cloned().unwrap_or(Value::Null);
                v.as_array()
                    .is_some_and(|a| a.iter().all(|x| matches_type(&items, x)))
            }
            Some("record") => {
                let Some(obj) = v.as_object().filter(|_| !is_file(v) && !is_directory(v)) else {
                    return false;
                };
                t.get("fields")
                    .and_then(Value::as_array)
                    .is_none_or(|fields| {
                        fields.iter().all(|f| {
                            let fty = f.get("type").cloned().unwrap_or(Value::Null);
                            let fv = param_name(f)
                                .and_then(|n| obj.get(n))
                                .unwrap_or(&Value::Null);
                            matches_type(&fty, fv)
                        })
                    })
            }
            Some("enum") => {
                let Some(s) = v.as_str() else { return false };
                t.get("symbols")
                    .and_then(Value::as_array)
                    .is_some_and(|syms| {
                        syms.iter()
                            .filter_map(Value::as_str)
                            .any(|x| x == s || crate::load::shortname(x) == s)
                    })
            }
            _ => !v.is_null() && crate::types::conforms(ty, v),
        },
        Value::Array(options) => options.iter().any(|o| matches_type(o, v)),
        _ => false,
    }
}

/// cwltool's `bind_input`: the bindings of one value of schema `schema`
/// (an object with `type` and maybe `inputBinding`).
fn bind_input(
    ctx: &mut Ctx<'_>,
    schema: &Value,
    datum: &Value,
    lead: &[Key],
    tail: &[Key],
) -> Result<Vec<Binding>, CwlError> {
    let mut bindings = Vec::new();
    let mut binding: Option<Binding> = None;
    if let Some(Value::Object(ib)) = schema.get("inputBinding") {
        let mut key = lead.to_vec();
        match ib.get("position") {
            Some(Value::String(s)) => {
                let v = ctx.eval(&Value::String(s.clone()), datum)?;
                key.push(Key::Int(position_of(&v, "inputBinding", 0)?));
            }
            Some(Value::Array(parts)) => key.extend(parts.iter().filter_map(Key::from_json)),
            Some(Value::Null) | None => key.push(Key::Int(0)),
            Some(v) => key.push(Key::Int(position_of(v, "inputBinding", 0)?)),
        }
        key.extend(tail.iter().cloned());
        binding = Some(Binding {
            key,
            opts: ib.clone(),
            datum: datum.clone(),
        });
    }
    let value_from = binding
        .as_ref()
        .is_some_and(|b| b.opts.get("valueFrom").is_some_and(|v| !v.is_null()));

    let ty = schema.get("type").cloned().unwrap_or(Value::Null);
    match &ty {
        Value::Array(options) => {
            let Some(t) = options.iter().find(|t| matches_type(t, datum)) else {
                return Err(CwlError::Failed(format!(
                    "{datum} is not a valid value of the union type {ty}"
                )));
            };
            if !value_from {
                let mut s = schema.clone();
                if let Value::Object(m) = &mut s {
                    m.insert("type".into(), t.clone());
                }
                return bind_input(ctx, &s, datum, lead, tail);
            }
        }
        Value::Object(t) => {
            let mut st = t.clone();
            if binding.is_some()
                && !st.contains_key("inputBinding")
                && st.get("type").and_then(Value::as_str) == Some("array")
                && binding
                    .as_ref()
                    .is_some_and(|b| !b.opts.contains_key("itemSeparator"))
            {
                st.insert("inputBinding".into(), Value::Object(Map::new()));
            }
            if !value_from {
                bindings.extend(bind_input(ctx, &Value::Object(st), datum, lead, tail)?);
            }
        }
        Value::String(t) => {
            let t = match t.as_str() {
                "Any" if datum.is_array() => "array",
                "Any" if datum.is_object() && !is_file(datum) && !is_directory(datum) => "record",
                other => other,
            };
            if t == "record" && !value_from {
                let fields: Vec<Value> = match schema.get("fields") {
                    Some(Value::Array(f)) => f.clone(),
                    // `Any` holding an object: every key is a field of type Any.
                    _ => datum
                        .as_object()
                        .map(|m| {
                            m.keys()
                                .map(|k| serde_json::json!({"name": k, "type": "Any"}))
                                .collect()
                        })
                        .unwrap_or_default(),
                };
                for f in &fields {
                    let Some(name) = param_name(f) else { continue };
                    let Some(fv) = datum.get(name).filter(|v| !v.is_null()) else {
                        continue;
                    };
                    bindings.extend(bind_input(ctx, f, fv, lead, &[Key::Str(name.into())])?);
                }
            }
            if t == "array" {
                let items = schema.get("items").cloned().unwrap_or(Value::from("Any"));
                if let Value::Array(values) = datum {
                    for (n, item) in values.iter().enumerate() {
                        let mut item_schema = Map::new();
                        item_schema.insert("type".into(), items.clone());
                        if let Some(b) = &binding {
                            let mut opts = b.opts.clone();
                            opts.insert(
                                "position".into(),
                                Value::Array(b.key.iter().map(Key::to_json).collect()),
                            );
                            item_schema.insert("inputBinding".into(), Value::Object(opts));
                        }
                        bindings.extend(bind_input(
                            ctx,
                            &Value::Object(item_schema),
                            item,
                            &[Key::Int(n as i64)],
                            tail,
                        )?);
                    }
                }
                binding = None;
            }
        }
        _ => {}
    }

    if let Some(b) = binding {
        for bi in &mut bindings {
            let mut key = b.key.clone();
            key.append(&mut bi.key);
            bi.key = key;
        }
        bindings.push(b);
    }
    Ok(bindings)
}

/// cwltool's `generate_arg`: the words of one binding.
fn generate(ctx: &mut Ctx<'_>, b: &Binding) -> Result<Vec<String>, CwlError> {
    let mut value = b.datum.clone();
    if let Some(vf) = b.opts.get("valueFrom").filter(|v| !v.is_null()) {
        value = ctx.eval(vf, &b.datum)?;
    }
    let prefix = b.opts.get("prefix").and_then(Value::as_str);
    let separate = b
        .opts
        .get("separate")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let words: Vec<Value> = match &value {
        Value::Array(items) => {
            if let Some(sep) = b.opts.get("itemSeparator").and_then(Value::as_str)
                && !items.is_empty()
            {
                let parts = items.iter().map(tostr).collect::<Result<Vec<_>, _>>()?;
                vec![Value::String(parts.join(sep))]
            } else if b.opts.get("valueFrom").is_some_and(|v| !v.is_null()) {
                let mut out: Vec<String> = prefix.map(str::to_string).into_iter().collect();
                for v in items {
                    out.push(tostr(v)?);
                }
                return Ok(out);
            } else if let Some(p) = prefix
                && !items.is_empty()
            {
                return Ok(vec![p.to_string()]);
            } else {
                return Ok(vec![]);
            }
        }
        Value::Object(_) if is_file(&value) || is_directory(&value) => vec![value.clone()],
        Value::Object(_) => return Ok(prefix.map(str::to_string).into_iter().collect()),
        Value::Bool(true) => return Ok(prefix.map(str::to_string).into_iter().collect()),
        Value::Bool(false) | Value::Null => return Ok(vec![]),
        other => vec![other.clone()],
    };
    let mut out = Vec::new();
    for w in &words {
        let s = tostr(w)?;
        match prefix {
            Some(p) if separate => {
                out.push(p.to_string());
                out.push(s);
            }
            Some(p) => out.push(format!("{p}{s}")),
            None => out.push(s),
        }
    }
    Ok(out)
}

/// A value as one command-line word: a File or Directory gives its path;
/// numbers, booleans and strings are written as cwltool (Python) writes them.
fn tostr(v: &Value) -> Result<String, CwlError> {
    Ok(match v {
        Value::String(s) => s.clone(),
        Value::Object(m) if is_file(v) || is_directory(v) => match m.get("path") {
            Some(Value::String(p)) => p.clone(),
            _ => {
                return Err(CwlError::Failed(format!(
                    "a {} on the command line has no path: {v}",
                    m.get("class").and_then(Value::as_str).unwrap_or("File")
                )));
            }
        },
        Value::Number(n) => word_number(n),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        other => python_json_dumps(other),
    })
}

/// A number on the command line as cwltool writes numbers read from YAML
/// or JSON: integers as they are, other numbers in plain decimal notation
/// (`1.0`, `0.00001`, never an exponent). cwltool keeps the written form
/// (`1.23e5` gives `123000`, `1.0` gives `1.0`); from a double alone, whole
/// numbers from 100000 on are taken as written with an exponent.
fn word_number(n: &serde_json::Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    let f = n.as_f64().unwrap_or(0.0);
    if !f.is_finite() {
        return python_float(f);
    }
    let s = format!("{f}");
    if s.contains('.') || f.abs() >= 1e5 {
        s
    } else {
        format!("{s}.0")
    }
}

/// A non-finite number as Python writes it (`nan`, `inf`, `-inf`), and a
/// finite one as Python's `str` does (`1.0`, `1e-05`, `1e+16`).
fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let a = f.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        // Rust: `1e-5`; Python: `1e-05`.
        let s = format!("{f:e}");
        if let Some((mant, exp)) = s.split_once('e') {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            return format!("{mant}e{sign}{digits:0>2}");
        }
        return s;
    }
    let s = format!("{f}");
    if s.contains('.') { s } else { format!("{s}.0") }
}

/// Quotes a word for `/bin/sh` as Python's `shlex.quote` does: words made
/// only of letters, digits and `@%+=:,./-_` are kept, others are put in
/// single quotes.
pub fn shell_quote(s: &str) -> String {
    if s.is_empty() {
        return "''".into();
    }
    let safe = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./-_".contains(&b));
    if safe {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\"'\"'"))
}

/// JSON as Python's `json.dumps(v, sort_keys=True)` writes it (", " and
/// ": " separators, non-ASCII escaped), which CWL v1.2 uses for
/// `InitialWorkDirRequirement` entries that are not strings.
pub fn python_json_dumps(v: &Value) -> String {
    // The expression module writes interpolated JSON the same way.
    crate::expr::to_sorted_json(v)
}
