//! Validation the apiserver performs before storing an object: names, labels,
//! and the parts of pod and job specs that the project's code generates.
//!
//! Messages are the apiserver's own, because a 422 is what tells a developer
//! that a generated Job name is too long before it ever reaches a cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, PodSpec};

use super::error::FieldError;
use super::quantity::Quantity;

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

fn is_label_chars(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && is_label_chars(s)
}

/// Dot-separated DNS-1123 labels, at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label_chars)
}

/// Checks `metadata.name` for a resource whose names are DNS-1123
/// subdomains (`label_only` for namespaces and services, which are labels).
pub fn validate_name(name: &str, label_only: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
        return errs;
    }
    let (max, ok, msg) = if label_only {
        (63, is_label_chars(name), LABEL_MSG)
    } else {
        (253, name.split('.').all(is_label_chars), SUBDOMAIN_MSG)
    };
    if !ok {
        errs.push(FieldError::invalid("metadata.name", name, msg));
    }
    if name.len() > max {
        errs.push(FieldError::invalid(
            "metadata.name",
            name,
            format!("must be no more than {max} characters"),
        ));
    }
    errs
}

fn is_label_value(v: &str) -> bool {
    if v.is_empty() {
        return true;
    }
    let b = v.as_bytes();
    b.iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Checks a label map (keys are qualified names, values at most 63 chars).
pub fn validate_labels(labels: &BTreeMap<String, String>, field: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (k, v) in labels {
        let (prefix, name) = match k.split_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, k.as_str()),
        };
        if prefix.is_some_and(|p| !is_dns1123_subdomain(p)) {
            errs.push(FieldError::invalid(
                field,
                k,
                format!("prefix part {SUBDOMAIN_MSG}"),
            ));
        }
        if name.len() > 63 {
            errs.push(FieldError::invalid(
                field,
                k,
                "name part must be no more than 63 characters",
            ));
        } else if name.is_empty() || !is_label_value(name) {
            errs.push(FieldError::invalid(field, k, QUALIFIED_NAME_MSG));
        }
        if v.len() > 63 {
            errs.push(FieldError::invalid(
                field,
                v,
                "must be no more than 63 characters",
            ));
        } else if !is_label_value(v) {
            errs.push(FieldError::invalid(field, v, LABEL_VALUE_MSG));
        }
    }
    errs
}

/// Malformed quantities fail decoding on a real apiserver (400), before
/// validation; this finds the first one.
pub fn first_bad_quantity(spec: &PodSpec) -> Option<String> {
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for c in containers {
        let Some(res) = &c.resources else { continue };
        for map in [&res.requests, &res.limits].into_iter().flatten() {
            for q in map.values() {
                if q.0.parse::<Quantity>().is_err() {
                    return Some(q.0.clone());
                }
            }
        }
    }
    None
}

fn validate_container(c: &Container, path: &str, errs: &mut Vec<FieldError>) {
    if c.name.is_empty() {
        errs.push(FieldError::required(format!("{path}.name"), ""));
    } else if !is_dns1123_label(&c.name) {
        errs.push(FieldError::invalid(
            format!("{path}.name"),
            &c.name,
            LABEL_MSG,
        ));
    }
    if c.image.as_deref().unwrap_or_default().trim().is_empty() {
        errs.push(FieldError::required(format!("{path}.image"), ""));
    }
    let Some(res) = &c.resources else { return };
    let (Some(req), Some(lim)) = (&res.requests, &res.limits) else {
        return;
    };
    for (name, r) in req {
        let Some(l) = lim.get(name) else { continue };
        let (Ok(rq), Ok(lq)) = (r.0.parse::<Quantity>(), l.0.parse::<Quantity>()) else {
            continue;
        };
        if rq > lq {
            errs.push(FieldError::invalid(
                format!("{path}.resources.requests"),
                &r.0,
                format!("must be less than or equal to {name} limit of {}", l.0),
            ));
        }
    }
}

/// Checks a pod spec; `path` is `spec` or `spec.template.spec`.
pub fn validate_pod_spec(spec: &PodSpec, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if spec.containers.is_empty() {
        errs.push(FieldError::required(format!("{path}.containers"), ""));
    }
    for (i, c) in spec.containers.iter().enumerate() {
        validate_container(c, &format!("{path}.containers[{i}]"), &mut errs);
    }
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        validate_container(c, &format!("{path}.initContainers[{i}]"), &mut errs);
    }
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    if !["Always", "OnFailure", "Never"].contains(&policy) {
        errs.push(FieldError::not_supported(
            format!("{path}.restartPolicy"),
            policy,
            &["Always", "OnFailure", "Never"],
        ));
    }
    let mut vol_names: Vec<&str> = Vec::new();
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        if vol_names.contains(&v.name.as_str()) {
            errs.push(FieldError {
                reason: "FieldValueDuplicate",
                field: format!("{path}.volumes[{i}].name"),
                value: Some(v.name.clone()),
                detail: "Duplicate value".into(),
            });
        }
        vol_names.push(&v.name);
    }
    for (i, c) in spec.containers.iter().enumerate() {
        for (j, m) in c.volume_mounts.iter().flatten().enumerate() {
            if !vol_names.contains(&m.name.as_str()) {
                errs.push(FieldError {
                    reason: "FieldValueNotFound",
                    field: format!("{path}.containers[{i}].volumeMounts[{j}].name"),
                    value: Some(m.name.clone()),
                    detail: "Not found".into(),
                });
            }
        }
    }
    errs
}

/// Checks a Job (after defaulting, so the template labels are present).
pub fn validate_job(job: &Job) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(spec) = &job.spec else {
        errs.push(FieldError::required("spec", ""));
        return errs;
    };
    let name = job.metadata.name.clone().unwrap_or_default();
    if name.len() > 63 {
        errs.push(FieldError::invalid(
            "spec.template.labels",
            name,
            "must be no more than 63 characters",
        ));
    }
    let Some(pod_spec) = &spec.template.spec else {
        errs.push(FieldError::required("spec.template.spec", ""));
        return errs;
    };
    match pod_spec.restart_policy.as_deref() {
        Some("OnFailure") | Some("Never") => {}
        _ => errs.push(FieldError::required(
            "spec.template.spec.restartPolicy",
            "valid values: \"OnFailure\", \"Never\"",
        )),
    }
    if spec.backoff_limit.is_some_and(|b| b < 0) {
        errs.push(FieldError::invalid(
            "spec.backoffLimit",
            spec.backoff_limit.unwrap_or_default().to_string(),
            "must be greater than or equal to 0",
        ));
    }
    if spec.active_deadline_seconds.is_some_and(|d| d <= 0) {
        errs.push(FieldError::invalid(
            "spec.activeDeadlineSeconds",
            spec.active_deadline_seconds.unwrap_or_default().to_string(),
            "must be greater than 0",
        ));
    }
    errs.extend(validate_pod_spec(pod_spec, "spec.template.spec"));
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("toil-job-1", false).is_empty());
        assert!(validate_name("a.b", false).is_empty());
        assert_eq!(validate_name("Bad_Name", false).len(), 1);
        assert_eq!(validate_name("a.b", true).len(), 1);
        let long = "a".repeat(64);
        assert!(validate_name(&long, false).is_empty());
        assert_eq!(validate_name(&long, true).len(), 1);
        assert!(is_dns1123_label("x1") && !is_dns1123_label("-x"));
    }

    #[test]
    fn labels() {
        let mut l = BTreeMap::new();
        l.insert("toil.io/workflow".to_string(), "wf_1.a".to_string());
        assert!(validate_labels(&l, "metadata.labels").is_empty());
        l.insert("x".to_string(), "v".repeat(64));
        l.insert("bad key!".to_string(), "-v".to_string());
        assert_eq!(validate_labels(&l, "metadata.labels").len(), 3);
    }
}
