//! YAML in the emulator: manifest files, `kubectl apply` bodies and YAML
//! request bodies become the JSON values the store keeps.
//!
//! Parsed with `yaml-rust2`, the parser the leader already uses for its
//! workflow files, so the workspace carries one YAML library and it is safe
//! Rust (the deprecated `serde_yaml` and its forks wrap a machine
//! translation of libyaml). The schema is YAML 1.2's core schema, as
//! `serde_yaml` 0.9 had it: `yes` and `on` are strings, not booleans.

use serde_json::{Map, Number, Value};
use yaml_rust2::{Yaml, YamlLoader};

/// Every document of a multi-document stream (`---` between them), in
/// order; an empty document is `Null`.
pub fn documents(text: &str) -> Result<Vec<Value>, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    docs.iter().map(to_json).collect()
}

/// The one document of a request body.
pub fn from_slice(body: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("the body is not UTF-8: {e}"))?;
    let mut docs = documents(text)?.into_iter();
    match (docs.next(), docs.next()) {
        (Some(one), None) => Ok(one),
        (None, _) => Err("the body holds no YAML document".to_string()),
        (Some(_), Some(_)) => Err(
            "the body holds more than one YAML document; send one object per request".to_string(),
        ),
    }
}

/// One parsed node as JSON.
fn to_json(y: &Yaml) -> Result<Value, String> {
    Ok(match y {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Real(s) => y
            .as_f64()
            .and_then(Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("{s} has no JSON form (JSON numbers are finite)"))?,
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?),
        Yaml::Hash(h) => {
            let mut m = Map::new();
            for (k, v) in h {
                m.insert(key(k)?, to_json(v)?);
            }
            Value::Object(m)
        }
        Yaml::Alias(_) => return Err("an alias to an anchor that is not defined".to_string()),
        Yaml::BadValue => return Err("a node that is not valid YAML".to_string()),
    })
}

/// A mapping key as a JSON object key: scalars in their written form.
fn key(k: &Yaml) -> Result<String, String> {
    match k {
        Yaml::String(s) | Yaml::Real(s) => Ok(s.clone()),
        Yaml::Integer(i) => Ok(i.to_string()),
        Yaml::Boolean(b) => Ok(b.to_string()),
        Yaml::Null => Ok("null".to_string()),
        other => Err(format!(
            "a mapping key that is not a scalar ({other:?}); JSON objects take string keys"
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn manifests_become_json_documents() {
        let text = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: toil
  labels: {app: toil, "on": "yes"}
data:
  replicas: 3
  ratio: 0.5
  enabled: true
  empty: ~
  list: [a, 1]
---
---
kind: Second
base: &base {name: toil}
meta: *base
"#;
        let docs = documents(text).unwrap();
        assert_eq!(docs.len(), 3, "{docs:?}");
        assert_eq!(
            docs[0],
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "toil", "labels": {"app": "toil", "on": "yes"}},
                "data": {"replicas": 3, "ratio": 0.5, "enabled": true, "empty": null, "list": ["a", 1]},
            })
        );
        assert_eq!(docs[1], Value::Null, "an empty document between two `---`");
        assert_eq!(docs[2]["meta"]["name"], "toil", "anchors are resolved");
        assert_eq!(
            from_slice(b"a: 1\n2: x\n").unwrap(),
            json!({"a": 1, "2": "x"})
        );
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for (body, says) in [
            (&b"a: [1, 2"[..], "while parsing"),
            (b"", "no YAML document"),
            (b"a: 1\n---\nb: 2\n", "one object per request"),
            (b"x: .inf", "finite"),
            (b"? [a, b]\n: 1\n", "not a scalar"),
            (b"\xff: 1", "not UTF-8"),
            (b"a: *nowhere", "unknown anchor"),
        ] {
            let e = from_slice(body).unwrap_err();
            assert!(e.contains(says), "{body:?}: {e}");
        }
    }
}
