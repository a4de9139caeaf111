//! Checking values against CWL types.
//!
//! Types are in the normalized form of `cwl/DESIGN.md`: a primitive name
//! (`null`, `boolean`, `int`, `long`, `float`, `double`, `string`, `File`,
//! `Directory`, `Any`), `{"type":"array","items":T}`,
//! `{"type":"record","fields":[{"name","type"}]}`,
//! `{"type":"enum","symbols":[...]}`, or a union as a JSON array of types.
//! The shorthands `T?` and `T[]` are understood too, in case one slips
//! through.

use serde_json::{Map, Value};

use crate::CwlError;

/// Longest value text quoted in an error message.
const SHOWN_MAX_CHARS: usize = 200;

/// The last segment of a URI-like name (`file:///a.cwl#rec/field` gives
/// `field`), for record field names and enum symbols.
fn short(name: &str) -> &str {
    name.rsplit(['#', '/']).next().unwrap_or(name)
}

/// True when `v` is a valid value of the (normalized) type `ty`.
///
/// `int` accepts a 32-bit integer, `long` any integer, `float` and
/// `double` any number, `Any` anything but `null`; File and Directory objects are recognized by
/// their `class`; a record needs each of its fields to conform (a missing
/// field counts as `null`, extra fields are allowed); an enum value is one of
/// its symbols; a union accepts what any of its members accepts.
pub fn conforms(ty: &Value, v: &Value) -> bool {
    match ty {
        Value::String(name) => conforms_named(name, v),
        Value::Array(members) => members.iter().any(|m| conforms(m, v)),
        Value::Object(obj) => match obj.get("type") {
            Some(Value::String(kind)) if kind == "array" => match v {
                Value::Array(items) => {
                    let item_ty = obj.get("items").unwrap_or(&Value::Null);
                    items.iter().all(|i| conforms(item_ty, i))
                }
                _ => false,
            },
            Some(Value::String(kind)) if kind == "record" => match v {
                Value::Object(fields) => record_fields(obj)
                    .all(|(name, fty)| conforms(fty, fields.get(name).unwrap_or(&Value::Null))),
                _ => false,
            },
            Some(Value::String(kind)) if kind == "enum" => match v {
                Value::String(s) => enum_symbols(obj).any(|sym| sym == s || short(sym) == s),
                _ => false,
            },
            // `{"type": "int"}` or `{"type": [...]}`: the inner type.
            Some(inner) => conforms(inner, v),
            None => false,
        },
        _ => false,
    }
}

fn conforms_named(name: &str, v: &Value) -> bool {
    if let Some(inner) = name.strip_suffix('?') {
        return v.is_null() || conforms_named(inner, v);
    }
    if let Some(inner) = name.strip_suffix("[]") {
        return match v {
            Value::Array(items) => items.iter().all(|i| conforms_named(inner, i)),
            _ => false,
        };
    }
    match name {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        // `int` is 32-bit, as the reference runner checks it.
        "int" => v.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
        "long" => v.is_i64() || v.is_u64(),
        "float" | "double" => v.is_number(),
        "string" => v.is_string(),
        // `stdin`, `stdout` and `stderr` are File types with a shorthand
        // meaning; the loader rewrites them, but they are Files either way.
        "File" | "stdin" | "stdout" | "stderr" => class_of(v) == Some("File"),
        "Directory" => class_of(v) == Some("Directory"),
        "Any" => !v.is_null(),
        _ => false,
    }
}

fn class_of(v: &Value) -> Option<&str> {
    v.get("class").and_then(Value::as_str)
}

/// A record type's fields as (short name, type).
fn record_fields(obj: &Map<String, Value>) -> impl Iterator<Item = (&str, &Value)> {
    obj.get("fields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| {
            let name = f.get("name").and_then(Value::as_str)?;
            Some((short(name), f.get("type").unwrap_or(&Value::Null)))
        })
}

/// An enum type's symbols as written.
fn enum_symbols(obj: &Map<String, Value>) -> impl Iterator<Item = &str> {
    obj.get("symbols")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// Which member of a union `v` matches: the first member (in the order
/// written, nested unions searched in place) that `v` conforms to. For a
/// type that is not a union, the type itself when `v` conforms to it.
/// Command-line binding uses it to find the `inputBinding` of the member.
pub fn first_match<'a>(ty: &'a Value, v: &Value) -> Option<&'a Value> {
    match ty {
        Value::Array(members) => members.iter().find_map(|m| first_match(m, v)),
        // `{"type": [...]}` wrapping a union.
        Value::Object(obj) if obj.get("type").is_some_and(Value::is_array) => {
            obj.get("type").and_then(|inner| first_match(inner, v))
        }
        _ => conforms(ty, v).then_some(ty),
    }
}

/// True when `null` is a valid value of `ty` (an optional type).
pub fn is_optional(ty: &Value) -> bool {
    conforms(ty, &Value::Null)
}

/// A short, readable name of a type for messages: `int`, `File[]`,
/// `string?`, `int | string`, `enum (a, b)`, `record (x: int, y: File)`.
pub fn type_name(ty: &Value) -> String {
    match ty {
        Value::String(s) => s.clone(),
        Value::Array(members) => {
            let non_null: Vec<&Value> = members.iter().filter(|m| *m != "null").collect();
            if non_null.len() == 1 && members.len() == 2 {
                let inner = type_name(non_null[0]);
                if inner.contains(' ') {
                    format!("({inner})?")
                } else {
                    format!("{inner}?")
                }
            } else {
                members
                    .iter()
                    .map(type_name)
                    .collect::<Vec<_>>()
                    .join(" | ")
            }
        }
        Value::Object(obj) => match obj.get("type") {
            Some(Value::String(kind)) if kind == "array" => {
                let inner = type_name(obj.get("items").unwrap_or(&Value::Null));
                if inner.contains(' ') {
                    format!("({inner})[]")
                } else {
                    format!("{inner}[]")
                }
            }
            Some(Value::String(kind)) if kind == "record" => {
                let fields: Vec<String> = record_fields(obj)
                    .map(|(name, fty)| format!("{name}: {}", type_name(fty)))
                    .collect();
                format!("record ({})", fields.join(", "))
            }
            Some(Value::String(kind)) if kind == "enum" => {
                let symbols: Vec<&str> = enum_symbols(obj).map(short).collect();
                format!("enum ({})", symbols.join(", "))
            }
            Some(inner) => type_name(inner),
            None => Value::Object(obj.clone()).to_string(),
        },
        other => other.to_string(),
    }
}

/// A value as compact JSON, cut to a readable length, for messages.
pub fn shorten_value(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() <= SHOWN_MAX_CHARS {
        text
    } else {
        let head: String = text.chars().take(SHOWN_MAX_CHARS).collect();
        format!("{head}...")
    }
}

/// Checks `v` against `ty`; the error says what `what` (for example
/// `input "reads"` or `output "out"`) expected and what it got, and for a
/// record or an array which field or item is wrong.
pub fn check_value(what: &str, ty: &Value, v: &Value) -> Result<(), String> {
    if conforms(ty, v) {
        return Ok(());
    }
    let mut msg = format!(
        "{what} expects {}, but the value is {}",
        type_name(ty),
        shorten_value(v)
    );
    if let Some(detail) = mismatch_detail(ty, v) {
        msg.push_str(&format!(" ({detail})"));
    }
    Err(msg)
}

/// Where inside a non-conforming record or array the problem is, when the
/// type is not a union (for a union every member fails for its own reason).
fn mismatch_detail(ty: &Value, v: &Value) -> Option<String> {
    let obj = ty.as_object()?;
    match (obj.get("type").and_then(Value::as_str)?, v) {
        ("record", Value::Object(fields)) => record_fields(obj).find_map(|(name, fty)| {
            let fv = fields.get(name).unwrap_or(&Value::Null);
            (!conforms(fty, fv)).then(|| {
                if fv.is_null() && !fields.contains_key(name) {
                    format!("field `{name}` ({}) is missing", type_name(fty))
                } else {
                    format!(
                        "field `{name}` should be {}, not {}",
                        type_name(fty),
                        shorten_value(fv)
                    )
                }
            })
        }),
        ("array", Value::Array(items)) => {
            let ity = obj.get("items")?;
            items.iter().enumerate().find_map(|(i, item)| {
                (!conforms(ity, item)).then(|| {
                    format!(
                        "item {i} should be {}, not {}",
                        type_name(ity),
                        shorten_value(item)
                    )
                })
            })
        }
        _ => None,
    }
}

/// Checks an input object against a process's `inputs` (normalized) and
/// returns it keyed by short names, with defaults filled in and `null` for
/// absent optional inputs. Keys the process does not declare are dropped.
///
/// A value that is absent or `null` takes the input's `default` when it has
/// one (a File default keeps its `location` as the loader resolved it). A
/// required input without a value, or a value that does not conform to the
/// input's type, is `CwlError::Invalid` naming the input, the type and the
/// value.
pub fn validate_inputs(inputs: &[Value], job: &Value) -> Result<Value, CwlError> {
    let empty = Map::new();
    let job_map = match job {
        Value::Object(m) => m,
        Value::Null => &empty,
        other => {
            return Err(CwlError::Invalid(format!(
                "the input object must be a mapping of input names to values, not {}",
                shorten_value(other)
            )));
        }
    };
    let mut out = Map::new();
    for input in inputs {
        let Some(id) = input.get("id").and_then(Value::as_str) else {
            return Err(CwlError::Invalid(format!(
                "a process input has no id: {}",
                shorten_value(input)
            )));
        };
        let name = crate::load::shortname(id);
        let ty = input.get("type").unwrap_or(&Value::Null);
        let given = job_map.get(name).filter(|v| !v.is_null());
        let value = match (given, input.get("default")) {
            (Some(v), _) => v.clone(),
            (None, Some(default)) => default.clone(),
            (None, None) => Value::Null,
        };
        if value.is_null() && !is_optional(ty) {
            return Err(CwlError::Invalid(format!(
                "missing required input \"{name}\" (of type {}): give it a value in the input \
                 object, or make its type optional",
                type_name(ty)
            )));
        }
        check_value(&format!("input \"{name}\""), ty, &value).map_err(CwlError::Invalid)?;
        out.insert(name.to_string(), value);
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec() -> Value {
        json!({"type": "record", "name": "r", "fields": [
            {"name": "a", "type": "int"},
            {"name": "file:///x.cwl#r/b", "type": ["null", "string"]},
        ]})
    }

    #[test]
    fn primitives() {
        assert!(conforms(&json!("null"), &Value::Null));
        assert!(!conforms(&json!("null"), &json!(0)));
        assert!(conforms(&json!("boolean"), &json!(false)));
        assert!(!conforms(&json!("boolean"), &json!("true")));
        assert!(conforms(&json!("int"), &json!(-3)));
        assert!(conforms(&json!("long"), &json!(12345678901234567890u64)));
        assert!(!conforms(&json!("int"), &json!(1.5)));
        assert!(!conforms(&json!("int"), &json!(2.0)));
        assert!(conforms(&json!("int"), &json!(-2147483648i64)));
        assert!(!conforms(&json!("int"), &json!(3000000000u64)));
        assert!(conforms(&json!("long"), &json!(3000000000u64)));
        assert!(!conforms(&json!("long"), &json!("1")));
        assert!(conforms(&json!("float"), &json!(1)));
        assert!(conforms(&json!("double"), &json!(1.5)));
        assert!(!conforms(&json!("double"), &Value::Null));
        assert!(conforms(&json!("string"), &json!("")));
        assert!(!conforms(&json!("string"), &json!(1)));
        assert!(!conforms(&json!("NoSuchType"), &json!(1)));
    }

    #[test]
    fn any_accepts_everything_but_null() {
        for v in [json!(0), json!(""), json!([]), json!({}), json!(false)] {
            assert!(conforms(&json!("Any"), &v), "{v}");
        }
        assert!(!conforms(&json!("Any"), &Value::Null));
        assert!(conforms(&json!(["null", "Any"]), &Value::Null));
    }

    #[test]
    fn files_and_directories_by_class() {
        let f = json!({"class": "File", "location": "file:///a"});
        let d = json!({"class": "Directory", "location": "file:///d"});
        assert!(conforms(&json!("File"), &f));
        assert!(!conforms(&json!("File"), &d));
        assert!(conforms(&json!("Directory"), &d));
        assert!(!conforms(&json!("File"), &json!({"location": "file:///a"})));
        assert!(!conforms(&json!("File"), &json!("file:///a")));
        assert!(conforms(&json!("stdout"), &f));
    }

    #[test]
    fn arrays_records_enums_unions() {
        let arr = json!({"type": "array", "items": "int"});
        assert!(conforms(&arr, &json!([])));
        assert!(conforms(&arr, &json!([1, 2])));
        assert!(!conforms(&arr, &json!([1, "2"])));
        assert!(!conforms(&arr, &json!(1)));
        let nested = json!({"type": "array", "items": {"type": "array", "items": "string"}});
        assert!(conforms(&nested, &json!([["a"], []])));
        assert!(!conforms(&nested, &json!(["a"])));

        assert!(conforms(&rec(), &json!({"a": 1})));
        assert!(conforms(&rec(), &json!({"a": 1, "b": "x", "extra": true})));
        assert!(!conforms(&rec(), &json!({"b": "x"})));
        assert!(!conforms(&rec(), &json!({"a": 1, "b": 2})));
        assert!(!conforms(&rec(), &json!([1])));

        let en = json!({"type": "enum", "name": "e", "symbols": ["a", "file:///x.cwl#e/b"]});
        assert!(conforms(&en, &json!("a")));
        assert!(conforms(&en, &json!("b")));
        assert!(!conforms(&en, &json!("c")));
        assert!(!conforms(&en, &json!(1)));

        let un = json!(["null", "int", {"type": "array", "items": "string"}]);
        assert!(conforms(&un, &Value::Null));
        assert!(conforms(&un, &json!(3)));
        assert!(conforms(&un, &json!(["x"])));
        assert!(!conforms(&un, &json!("x")));
        // Wrapped and shorthand forms.
        assert!(conforms(&json!({"type": "string"}), &json!("s")));
        assert!(conforms(&json!("int?"), &Value::Null));
        assert!(conforms(&json!("File[]"), &json!([{"class": "File"}])));
        assert!(!conforms(&json!("int[]"), &json!([null])));
    }

    #[test]
    fn first_match_picks_the_union_member() {
        let arr = json!({"type": "array", "items": "string"});
        let un = json!(["null", "int", "float", arr.clone(), ["boolean", "string"]]);
        assert_eq!(first_match(&un, &Value::Null), Some(&json!("null")));
        assert_eq!(first_match(&un, &json!(3)), Some(&json!("int")));
        assert_eq!(first_match(&un, &json!(3.5)), Some(&json!("float")));
        assert_eq!(first_match(&un, &json!(["a"])), Some(&arr));
        assert_eq!(first_match(&un, &json!("s")), Some(&json!("string")));
        assert_eq!(first_match(&un, &json!({})), None);
        assert_eq!(first_match(&json!("int"), &json!(1)), Some(&json!("int")));
        assert_eq!(first_match(&json!("int"), &json!("1")), None);
    }

    #[test]
    fn type_names_are_short() {
        assert_eq!(type_name(&json!("int")), "int");
        assert_eq!(type_name(&json!(["null", "File"])), "File?");
        assert_eq!(
            type_name(&json!({"type": "array", "items": ["int", "string"]})),
            "(int | string)[]"
        );
        assert_eq!(
            type_name(&json!(["null", {"type": "array", "items": "File"}])),
            "File[]?"
        );
        assert_eq!(type_name(&rec()), "record (a: int, b: string?)");
        assert_eq!(
            type_name(&json!({"type": "enum", "symbols": ["file:///x#e/a", "b"]})),
            "enum (a, b)"
        );
    }

    fn input(id: &str, ty: Value) -> Value {
        json!({"id": format!("file:///t.cwl#{id}"), "type": ty})
    }

    #[test]
    fn validate_fills_defaults_and_nulls() {
        let mut with_default = input("d", json!("File"));
        with_default["default"] = json!({"class": "File", "location": "file:///dir/whale.txt"});
        let inputs = vec![
            input("req", json!("int")),
            input("opt", json!(["null", "string"])),
            with_default,
            {
                let mut i = input("n", json!("int"));
                i["default"] = json!(5);
                i
            },
        ];
        let out = validate_inputs(&inputs, &json!({"req": 1, "n": null, "undeclared": 3})).unwrap();
        assert_eq!(
            out,
            json!({"req": 1, "opt": null,
                   "d": {"class": "File", "location": "file:///dir/whale.txt"}, "n": 5})
        );
        // A given value wins over the default.
        let out = validate_inputs(&inputs, &json!({"req": 1, "n": 7})).unwrap();
        assert_eq!(out["n"], json!(7));
        // A null job is an empty job.
        let only_opt = vec![input("opt", json!(["null", "string"]))];
        assert_eq!(
            validate_inputs(&only_opt, &Value::Null).unwrap(),
            json!({"opt": null})
        );
    }

    #[test]
    fn validate_reports_missing_and_wrong_values() {
        let inputs = vec![input("count", json!("int")), input("r", rec())];
        match validate_inputs(&inputs, &json!({"r": {"a": 1}})) {
            Err(CwlError::Invalid(m)) => {
                assert!(
                    m.contains("missing required input \"count\"") && m.contains("int"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        match validate_inputs(&inputs, &json!({"count": "three", "r": {"a": 1}})) {
            Err(CwlError::Invalid(m)) => {
                assert!(
                    m.contains("\"count\"") && m.contains("int") && m.contains("\"three\""),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        match validate_inputs(&inputs, &json!({"count": 1, "r": {"a": 1, "b": 2}})) {
            Err(CwlError::Invalid(m)) => assert!(m.contains("field `b`"), "{m}"),
            other => panic!("{other:?}"),
        }
        let long = "x".repeat(5000);
        match validate_inputs(&inputs, &json!({"count": [long], "r": {"a": 1}})) {
            Err(CwlError::Invalid(m)) => assert!(m.len() < 600 && m.contains("..."), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            validate_inputs(&inputs, &json!([1])),
            Err(CwlError::Invalid(_))
        ));
        // Any does not accept a missing value.
        let any = vec![input("a", json!("Any"))];
        assert!(matches!(
            validate_inputs(&any, &json!({})),
            Err(CwlError::Invalid(_))
        ));
    }

    #[test]
    fn check_value_points_at_the_bad_item() {
        let arr = json!({"type": "array", "items": "File"});
        let err = check_value("output \"o\"", &arr, &json!([{"class": "File"}, 3])).unwrap_err();
        assert!(
            err.contains("item 1") && err.contains("output \"o\""),
            "{err}"
        );
        assert!(check_value("x", &arr, &json!([])).is_ok());
    }
}
