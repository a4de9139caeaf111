//! Label and field selectors, parsed from the query string as the apiserver
//! does (`a=b,c!=d,e in (x,y),!f`, `status.phase=Running`).
//!
//! Field selectors only accept the fields each resource indexes on a real
//! cluster: code that filters on anything else gets the same 400 it would get
//! in production.

use std::collections::BTreeMap;

use serde_json::Value;

use super::error::ApiError;

/// One label requirement.
#[derive(Clone, Debug, PartialEq)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; empty matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelSelector {
    reqs: Vec<LabelReq>,
}

fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 317
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn parse_set(rest: &str, whole: &str) -> Result<Vec<String>, ApiError> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| bad_label(whole))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

fn bad_label(s: &str) -> ApiError {
    ApiError::bad_request(format!("unable to parse requirement: {s}"))
}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter.
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self { reqs });
        }
        for part in split_top_level(s) {
            let p = part.trim();
            if p.is_empty() {
                return Err(bad_label(s));
            }
            let req = if let Some(k) = p.strip_prefix('!') {
                LabelReq::NotExists(k.trim().to_string())
            } else if let Some((k, v)) = p.split_once("!=") {
                LabelReq::NotEq(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = p.split_once("==") {
                LabelReq::Eq(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = p.split_once('=') {
                LabelReq::Eq(k.trim().to_string(), v.trim().to_string())
            } else if let Some(idx) = p.find(" notin ") {
                LabelReq::NotIn(p[..idx].trim().to_string(), parse_set(&p[idx + 7..], p)?)
            } else if let Some(idx) = p.find(" in ") {
                LabelReq::In(p[..idx].trim().to_string(), parse_set(&p[idx + 4..], p)?)
            } else {
                LabelReq::Exists(p.to_string())
            };
            let key = match &req {
                LabelReq::Eq(k, _)
                | LabelReq::NotEq(k, _)
                | LabelReq::In(k, _)
                | LabelReq::NotIn(k, _)
                | LabelReq::Exists(k)
                | LabelReq::NotExists(k) => k,
            };
            if !valid_key(key) {
                return Err(bad_label(s));
            }
            reqs.push(req);
        }
        Ok(Self { reqs })
    }

    /// Builds one from `matchLabels`-style equality pairs.
    pub fn from_map(m: &BTreeMap<String, String>) -> Self {
        Self {
            reqs: m
                .iter()
                .map(|(k, v)| LabelReq::Eq(k.clone(), v.clone()))
                .collect(),
        }
    }

    /// True when no requirement is given.
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Whether an object's labels satisfy every requirement.
    pub fn matches_object(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.reqs.iter().all(|r| match r {
            LabelReq::Eq(k, v) => get(k) == Some(v.as_str()),
            LabelReq::NotEq(k, v) => get(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelReq::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
        })
    }
}

/// One field requirement.
#[derive(Clone, Debug, PartialEq)]
struct FieldReq {
    field: String,
    value: String,
    negate: bool,
}

/// A parsed field selector; empty matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldSelector {
    reqs: Vec<FieldReq>,
}

/// The fields a resource can be selected on, beyond `metadata.name` and
/// `metadata.namespace`.
fn supported_fields(plural: &str) -> &'static [&'static str] {
    match plural {
        "pods" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "events" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        "jobs" => &["status.successful"],
        "nodes" => &["spec.unschedulable"],
        "secrets" => &["type"],
        "namespaces" => &["status.phase"],
        _ => &[],
    }
}

fn field_value(obj: &Value, field: &str) -> String {
    let v = match field {
        "source" => obj.pointer("/source/component"),
        "status.successful" => obj.pointer("/status/succeeded"),
        _ => {
            let ptr = format!("/{}", field.replace('.', "/"));
            obj.pointer(&ptr)
        }
    };
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => match field {
            "spec.unschedulable" | "spec.hostNetwork" => "false".into(),
            "status.successful" => "0".into(),
            _ => String::new(),
        },
    }
}

impl FieldSelector {
    /// Parses the `fieldSelector` query parameter for a resource.
    pub fn parse(s: &str, plural: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self { reqs });
        }
        for part in s.split(',') {
            let p = part.trim();
            let (field, value, negate) = if let Some((f, v)) = p.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = p.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = p.split_once('=') {
                (f, v, false)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{p}'"
                )));
            };
            let field = field.trim();
            if field != "metadata.name"
                && field != "metadata.namespace"
                && !supported_fields(plural).contains(&field)
            {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            reqs.push(FieldReq {
                field: field.to_string(),
                value: value.trim().to_string(),
                negate,
            });
        }
        Ok(Self { reqs })
    }

    /// Whether an object satisfies every requirement.
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.reqs
            .iter()
            .all(|r| (field_value(obj, &r.field) == r.value) != r.negate)
    }

    /// The name a selector pins (`metadata.name=x`), for watches on one object.
    pub fn pinned_name(&self) -> Option<&str> {
        self.reqs
            .iter()
            .find(|r| r.field == "metadata.name" && !r.negate)
            .map(|r| r.value.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Value, phase: &str, node: &str) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns", "labels": labels},
               "spec": {"nodeName": node}, "status": {"phase": phase}})
    }

    #[test]
    fn label_operators() {
        let p = pod(json!({"app": "toil", "tier": "a"}), "Running", "n1");
        let ok = |s: &str| LabelSelector::parse(s).map(|sel| sel.matches_object(&p));
        assert_eq!(ok("app=toil"), Ok(true));
        assert_eq!(ok("app==toil,tier=a"), Ok(true));
        assert_eq!(ok("app!=toil"), Ok(false));
        assert_eq!(ok("app in (x, toil)"), Ok(true));
        assert_eq!(ok("tier notin (a,b)"), Ok(false));
        assert_eq!(ok("tier notin (b),app"), Ok(true));
        assert_eq!(ok("missing"), Ok(false));
        assert_eq!(ok("!missing"), Ok(true));
        assert_eq!(ok("missing!=x"), Ok(true));
        assert!(LabelSelector::parse("a in x").is_err());
        assert!(LabelSelector::parse("a=b,").is_err());
    }

    #[test]
    fn field_selectors_are_restricted() {
        let p = pod(json!({}), "Pending", "");
        let sel = FieldSelector::parse("status.phase=Pending,spec.nodeName=", "pods");
        assert_eq!(sel.map(|s| s.matches_object(&p)), Ok(true));
        let sel = FieldSelector::parse("status.phase!=Pending", "pods");
        assert_eq!(sel.map(|s| s.matches_object(&p)), Ok(false));
        let err = FieldSelector::parse("spec.foo=bar", "pods").err();
        assert_eq!(err.map(|e| e.code), Some(400));
        assert!(FieldSelector::parse("involvedObject.name=x", "events").is_ok());
        assert!(FieldSelector::parse("status.phase=x", "jobs").is_err());
    }
}
