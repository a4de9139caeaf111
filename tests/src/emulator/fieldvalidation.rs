//! Server-side field validation (`?fieldValidation=Strict|Warn|Ignore`) on
//! create, update and patch, as the apiserver does it since v1.27.
//!
//! Unknown fields are found by decoding the object into its k8s-openapi type
//! (the resource's normalizer), encoding it back and comparing the key sets:
//! whatever the typed round trip drops is a field the schema does not know.
//! Duplicate fields are found by a scan of the JSON body itself, since a
//! parsed value keeps only the last of them.
//!
//! - `Strict`: 400 BadRequest, `Job in version "v1" cannot be handled as a
//!   Job: strict decoding error: unknown field "spec.foo"`.
//! - `Warn` (the default, as on a real apiserver): the request succeeds, the
//!   unknown fields are dropped, and each problem comes back in a `Warning:
//!   299 - "unknown field \"spec.foo\""` header, which kubectl prints.
//! - `Ignore`: dropped silently.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::error::ApiError;
use super::resources::ResourceType;

/// What to do with unknown and duplicate fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Refuse the request (400).
    Strict,
    /// Accept it and warn in `Warning` headers.
    Warn,
    /// Accept it silently.
    Ignore,
}

impl Mode {
    /// Reads `fieldValidation` from a query (Warn when absent).
    pub fn from_query(query: &HashMap<String, String>) -> Result<Self, ApiError> {
        match query.get("fieldValidation").map(String::as_str) {
            None | Some("") | Some("Warn") => Ok(Self::Warn),
            Some("Strict") => Ok(Self::Strict),
            Some("Ignore") => Ok(Self::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation: Unsupported value: \"{other}\": supported values: \"Ignore\", \"Strict\", \"Warn\""
            ))),
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The fields of `original` that are missing from `decoded` (its typed round
/// trip), as dotted paths with list indexes (`spec.containers[0].foo`).
fn unknown_fields(original: &Value, decoded: &Value, path: &str, out: &mut Vec<String>) {
    match (original, decoded) {
        (Value::Object(o), Value::Object(d)) => {
            for (k, v) in o {
                match d.get(k) {
                    Some(dv) => unknown_fields(v, dv, &join(path, k), out),
                    // A null is "not set", which the typed object omits.
                    None if v.is_null() => {}
                    None => out.push(join(path, k)),
                }
            }
        }
        (Value::Array(o), Value::Array(d)) => {
            for (i, (v, dv)) in o.iter().zip(d).enumerate() {
                unknown_fields(v, dv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Collects the paths of keys that appear twice in one JSON object.
struct Dups<'a> {
    path: String,
    found: &'a mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for Dups<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Dups<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        while seq
            .next_element_seed(Dups {
                path: format!("{}[{i}]", self.path),
                found: &mut *self.found,
            })?
            .is_some()
        {
            i += 1;
        }
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = join(&self.path, &key);
            if !seen.insert(key) {
                self.found.push(path.clone());
            }
            map.next_value_seed(Dups {
                path,
                found: &mut *self.found,
            })?;
        }
        Ok(())
    }
}

/// Paths of duplicated keys in a JSON document (none if it is not JSON).
pub fn duplicate_fields(body: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(body);
    let seed = Dups {
        path: String::new(),
        found: &mut found,
    };
    if seed.deserialize(&mut de).is_err() {
        return Vec::new();
    }
    found
}

/// The problems of an object about to be stored: `unknown field "a.b"` and
/// `duplicate field "a.b"`, in the apiserver's words. `body` is the raw
/// JSON the object came from, when there is one to scan for duplicates.
pub fn problems(r: &ResourceType, object: &Value, body: Option<&[u8]>) -> Vec<String> {
    let mut out: Vec<String> = body
        .map(duplicate_fields)
        .unwrap_or_default()
        .into_iter()
        .map(|p| format!("duplicate field \"{p}\""))
        .collect();
    // A body the type cannot decode is refused later with a decode error.
    if let Ok(decoded) = (r.normalize)(object.clone()) {
        let mut unknown = Vec::new();
        unknown_fields(object, &decoded, "", &mut unknown);
        out.extend(
            unknown
                .into_iter()
                .map(|p| format!("unknown field \"{p}\"")),
        );
    }
    out
}

/// Applies the mode to the problems: the error for Strict, else the
/// warnings to send (none for Ignore).
pub fn enforce(
    r: &ResourceType,
    mode: Mode,
    problems: Vec<String>,
) -> Result<Vec<String>, ApiError> {
    if problems.is_empty() {
        return Ok(problems);
    }
    match mode {
        Mode::Strict => Err(ApiError::bad_request(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {list}",
            kind = r.kind,
            version = r.version,
            list = problems.join(", "),
        ))),
        Mode::Warn => Ok(problems),
        Mode::Ignore => Ok(Vec::new()),
    }
}

/// Checks an object against the request's `fieldValidation`: the warnings
/// to attach to the answer, or the Strict error.
pub fn check(
    r: &ResourceType,
    query: &HashMap<String, String>,
    object: &Value,
    body: Option<&[u8]>,
) -> Result<Vec<String>, ApiError> {
    let mode = Mode::from_query(query)?;
    if mode == Mode::Ignore {
        return Ok(Vec::new());
    }
    enforce(r, mode, problems(r, object, body))
}

/// Adds one `Warning: 299 - "..."` header per warning (RFC 7234 warn-text,
/// quotes and backslashes escaped).
pub fn add_warnings<B>(resp: &mut http::Response<B>, warnings: &[String]) {
    for w in warnings {
        let text = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = http::HeaderValue::from_str(&format!("299 - \"{text}\"")) {
            resp.headers_mut().append("warning", v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::resources::find;
    use serde_json::json;

    fn jobs() -> &'static ResourceType {
        find("batch", "v1", "jobs").unwrap_or_else(|| panic!("jobs are served"))
    }

    #[test]
    fn finds_unknown_fields_with_their_paths() {
        let job = json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "j", "labels": {"a": "b"}, "annotations": null},
            "spec": {"foo": 1, "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "i", "bogus": true}]}}},
        });
        let p = problems(jobs(), &job, None);
        assert_eq!(
            p,
            vec![
                "unknown field \"spec.foo\"".to_string(),
                "unknown field \"spec.template.spec.containers[0].bogus\"".to_string(),
            ]
        );
        let err = enforce(jobs(), Mode::Strict, p.clone()).err();
        assert!(err.is_some_and(|e| e.code == 400 && e.message.contains(
            "Job in version \"v1\" cannot be handled as a Job: strict decoding error: unknown field \"spec.foo\""
        )));
        assert_eq!(enforce(jobs(), Mode::Warn, p.clone()).ok(), Some(p.clone()));
        assert_eq!(enforce(jobs(), Mode::Ignore, p).ok(), Some(vec![]));
    }

    #[test]
    fn finds_duplicate_fields() {
        let body =
            br#"{"metadata": {"name": "a", "name": "b"}, "spec": {"x": [{"k": 1, "k": 2}]}}"#;
        assert_eq!(
            duplicate_fields(body),
            vec!["metadata.name".to_string(), "spec.x[0].k".to_string()]
        );
        assert!(duplicate_fields(b"not json").is_empty());
    }

    #[test]
    fn reads_the_mode() {
        let q = |v: &str| HashMap::from([("fieldValidation".to_string(), v.to_string())]);
        assert_eq!(Mode::from_query(&HashMap::new()).ok(), Some(Mode::Warn));
        assert_eq!(Mode::from_query(&q("Strict")).ok(), Some(Mode::Strict));
        assert!(Mode::from_query(&q("strictest")).is_err());
    }
}
