//! A container's environment and command line, built as the kubelet builds
//! them: service variables, `envFrom`, `env` with the downward API and
//! secret/configmap references, and `$(VAR)` expansion.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::Value;

use crate::emulator::cluster::Cluster;
use crate::emulator::quantity::Quantity;
use crate::emulator::resources;

/// Kubernetes' `$(VAR)` expansion: `$$` escapes, unknown references stay
/// as written.
pub fn expand(input: &str, vars: &dyn Fn(&str) -> Option<String>) -> String {
    let b = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut i = 0;
    let mut last = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            match b[i + 1] {
                b'$' => {
                    out.push_str(&input[last..i]);
                    out.push('$');
                    i += 2;
                    last = i;
                    continue;
                }
                b'(' => {
                    if let Some(close) = input[i + 2..].find(')') {
                        let name = &input[i + 2..i + 2 + close];
                        out.push_str(&input[last..i]);
                        match vars(name) {
                            Some(v) => out.push_str(&v),
                            None => out.push_str(&input[i..i + 3 + close]),
                        }
                        i += 3 + close;
                        last = i;
                        continue;
                    }
                }
                _ => {}
            }
        }
        i += 1;
    }
    out.push_str(&input[last..]);
    out
}

/// Why a container's configuration cannot be built
/// (`CreateContainerConfigError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

fn field_ref(pod: &Pod, path: &str, host_ip: &str) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let annotation = |m: &Option<BTreeMap<String, String>>, key: &str| {
        m.as_ref().and_then(|m| m.get(key)).cloned()
    };
    let parse_key = |p: &str, prefix: &str| {
        p.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix("']"))
            .map(str::to_string)
    };
    match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.podIP" | "status.podIPs" => pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .or_else(|| Some(host_ip.to_string())),
        "status.hostIP" | "status.hostIPs" => Some(host_ip.to_string()),
        p if p.starts_with("metadata.labels['") => {
            parse_key(p, "metadata.labels['").and_then(|k| annotation(&meta.labels, &k))
        }
        p if p.starts_with("metadata.annotations['") => {
            parse_key(p, "metadata.annotations['").and_then(|k| annotation(&meta.annotations, &k))
        }
        _ => None,
    }
}

fn resource_ref(c: &Container, resource: &str, divisor: Option<&str>) -> String {
    let res = c.resources.clone().unwrap_or_default();
    let (map, name) = match resource.split_once('.') {
        Some(("limits", n)) => (res.limits, n),
        Some(("requests", n)) => (res.requests, n),
        _ => (None, resource),
    };
    let q = map
        .and_then(|m| m.get(name).map(|q| q.0.clone()))
        .and_then(|s| s.parse::<Quantity>().ok())
        .unwrap_or_default();
    let div = divisor
        .and_then(|d| d.parse::<Quantity>().ok())
        .filter(|d| !d.is_zero());
    match (name, div) {
        (_, Some(d)) => {
            let v = q.ceil_millis();
            let dv = d.ceil_millis().max(1);
            ((v + dv - 1) / dv).to_string()
        }
        ("cpu", None) => ((q.ceil_millis() + 999) / 1000).to_string(),
        _ => q.ceil_units().to_string(),
    }
}

/// Builds the full environment of a container, in order.
pub fn build_env(
    cluster: &Cluster,
    pod: &Pod,
    c: &Container,
    base: &[(String, String)],
) -> Result<Vec<(String, String)>, ConfigError> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut env: Vec<(String, String)> = base.to_vec();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        env.retain(|(ek, _)| *ek != k);
        env.push((k, v));
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(sr) = &from.secret_ref {
            match cluster.secret_data(&ns, &sr.name) {
                Some(data) => {
                    for (k, v) in data {
                        set(
                            &mut env,
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v).into_owned(),
                        );
                    }
                }
                None if sr.optional == Some(true) => {}
                None => return Err(ConfigError(format!("secret \"{}\" not found", sr.name))),
            }
        }
        if let Some(cr) = &from.config_map_ref {
            match cluster.get(resources::core("configmaps"), &ns, &cr.name) {
                Some(cm) => {
                    for (k, v) in cm
                        .get("data")
                        .and_then(Value::as_object)
                        .into_iter()
                        .flatten()
                    {
                        set(
                            &mut env,
                            format!("{prefix}{k}"),
                            v.as_str().unwrap_or_default().to_string(),
                        );
                    }
                }
                None if cr.optional == Some(true) => {}
                None => return Err(ConfigError(format!("configmap \"{}\" not found", cr.name))),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(vf) = &e.value_from {
            if let Some(fr) = &vf.field_ref {
                field_ref(pod, &fr.field_path, "127.0.0.1").unwrap_or_default()
            } else if let Some(rr) = &vf.resource_field_ref {
                resource_ref(c, &rr.resource, rr.divisor.as_ref().map(|d| d.0.as_str()))
            } else if let Some(sk) = &vf.secret_key_ref {
                match cluster.secret_data(&ns, &sk.name) {
                    Some(data) => match data.get(&sk.key) {
                        Some(v) => String::from_utf8_lossy(v).into_owned(),
                        None if sk.optional == Some(true) => continue,
                        None => {
                            return Err(ConfigError(format!(
                                "couldn't find key {} in Secret {ns}/{}",
                                sk.key, sk.name
                            )));
                        }
                    },
                    None if sk.optional == Some(true) => continue,
                    None => return Err(ConfigError(format!("secret \"{}\" not found", sk.name))),
                }
            } else if let Some(ck) = &vf.config_map_key_ref {
                let cm = cluster.get(resources::core("configmaps"), &ns, &ck.name);
                match cm.as_ref().and_then(|cm| {
                    cm.pointer(&format!("/data/{}", ck.key))
                        .and_then(Value::as_str)
                }) {
                    Some(v) => v.to_string(),
                    None if ck.optional == Some(true) => continue,
                    None if cm.is_none() => {
                        return Err(ConfigError(format!("configmap \"{}\" not found", ck.name)));
                    }
                    None => {
                        return Err(ConfigError(format!(
                            "couldn't find key {} in ConfigMap {ns}/{}",
                            ck.key, ck.name
                        )));
                    }
                }
            } else {
                String::new()
            }
        } else {
            let current = env.clone();
            let lookup = |k: &str| {
                current
                    .iter()
                    .rev()
                    .find(|(ek, _)| ek == k)
                    .map(|(_, v)| v.clone())
            };
            expand(e.value.as_deref().unwrap_or_default(), &lookup)
        };
        set(&mut env, e.name.clone(), value);
    }
    Ok(env)
}

/// The command line: `command` (or the image's empty entrypoint) followed
/// by `args`, each expanded against the environment.
pub fn build_argv(c: &Container, env: &[(String, String)]) -> Result<Vec<String>, ConfigError> {
    let lookup = |k: &str| {
        env.iter()
            .rev()
            .find(|(ek, _)| ek == k)
            .map(|(_, v)| v.clone())
    };
    let mut argv: Vec<String> = c
        .command
        .iter()
        .flatten()
        .map(|a| expand(a, &lookup))
        .collect();
    argv.extend(c.args.iter().flatten().map(|a| expand(a, &lookup)));
    if argv.is_empty() {
        return Err(ConfigError(
            "no command specified: the emulator's images have no entrypoint, so set `command`"
                .into(),
        ));
    }
    Ok(argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_follows_kubernetes_rules() {
        let vars = |k: &str| match k {
            "A" => Some("1".to_string()),
            "B" => Some("two".to_string()),
            _ => None,
        };
        assert_eq!(expand("x$(A)y", &vars), "x1y");
        assert_eq!(expand("$(A)$(B)", &vars), "1two");
        assert_eq!(expand("$$(A)", &vars), "$(A)");
        assert_eq!(expand("$(C)", &vars), "$(C)");
        assert_eq!(expand("$(A", &vars), "$(A");
        assert_eq!(expand("cost $5", &vars), "cost $5");
        assert_eq!(expand("$", &vars), "$");
    }
}
