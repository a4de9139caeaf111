//! Services as the apiserver treats them: defaults, a clusterIP allocated
//! from `127.96.0.0/16` on create (a requested one is honoured if free,
//! `None` makes a headless Service), and the clusterIP immutable on update.
//! The built-in `kubernetes` Service in `default` holds `127.96.0.1`, where
//! pods of an isolated pod network reach the API server
//! ([`super::netns::IN_CLUSTER_API`]). Traffic to clusterIPs is carried by
//! [`super::proxy`].

use std::collections::HashSet;
use std::net::Ipv4Addr;

use rand::Rng;
use serde_json::{Value, json};

use super::cluster::Cluster;
use super::error::FieldError;
use super::netns::IN_CLUSTER_API;
use super::resources;

/// The Service range, `127.96.0.0/16`, as its first two octets.
const RANGE: [u8; 2] = [127, 96];

/// The Service range as text, for messages.
pub const SERVICE_CIDR: &str = "127.96.0.0/16";

fn in_range(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    o[0] == RANGE[0] && o[1] == RANGE[1] && ip != network_address() && ip != broadcast_address()
}

fn network_address() -> Ipv4Addr {
    Ipv4Addr::new(RANGE[0], RANGE[1], 0, 0)
}

fn broadcast_address() -> Ipv4Addr {
    Ipv4Addr::new(RANGE[0], RANGE[1], 255, 255)
}

/// The clusterIP of a Service object, if it has a real one (not headless).
pub fn cluster_ip(svc: &Value) -> Option<Ipv4Addr> {
    svc.pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

fn allocated(cluster: &Cluster) -> HashSet<Ipv4Addr> {
    cluster
        .store()
        .list(resources::core("services"), None)
        .iter()
        .filter_map(|s| cluster_ip(s))
        .collect()
}

/// A free address of the range, at random as the real allocator picks.
fn allocate(taken: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let mut rng = rand::rng();
    let pick = |off: u32| Ipv4Addr::new(RANGE[0], RANGE[1], (off >> 8) as u8, off as u8);
    for _ in 0..64 {
        let ip = pick(rng.random_range(2..65535));
        if !taken.contains(&ip) {
            return Some(ip);
        }
    }
    (2..65535).map(pick).find(|ip| !taken.contains(ip))
}

/// Defaults a new Service and gives it its clusterIP. The caller holds
/// the cluster's clusterIP lock until the Service is stored.
pub fn admit(cluster: &Cluster, mut obj: Value) -> Result<Value, Vec<FieldError>> {
    if !obj["spec"].is_object() {
        obj["spec"] = json!({});
    }
    let spec = &mut obj["spec"];
    let type_ = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
    let supported = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
    if !supported.contains(&type_.as_str()) {
        return Err(vec![FieldError::not_supported(
            "spec.type",
            type_,
            &supported,
        )]);
    }
    spec["type"] = json!(type_);
    spec["sessionAffinity"] = json!(spec["sessionAffinity"].as_str().unwrap_or("None"));
    let requested = spec["clusterIP"].as_str().unwrap_or_default().to_string();
    let headless = requested == "None";
    let mut errs = Vec::new();
    let ports = spec["ports"].as_array_mut();
    let no_ports = ports.as_ref().is_none_or(|p| p.is_empty());
    for (i, p) in ports.into_iter().flatten().enumerate() {
        let port = p["port"].as_i64().unwrap_or(0);
        if !(1..=65535).contains(&port) {
            errs.push(FieldError::invalid(
                format!("spec.ports[{i}].port"),
                port.to_string(),
                "must be between 1 and 65535, inclusive",
            ));
        }
        if p["protocol"].as_str().is_none() {
            p["protocol"] = json!("TCP");
        }
        if p.get("targetPort").is_none_or(Value::is_null) {
            p["targetPort"] = json!(port);
        }
    }
    if type_ == "ExternalName" {
        if let Some(m) = spec.as_object_mut() {
            m.remove("clusterIP");
            m.remove("clusterIPs");
        }
        return if errs.is_empty() { Ok(obj) } else { Err(errs) };
    }
    if no_ports && !headless {
        errs.push(FieldError::required("spec.ports", ""));
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    let ip = if headless {
        "None".to_string()
    } else if requested.is_empty() {
        allocate(&allocated(cluster))
            .ok_or_else(|| {
                vec![FieldError::invalid(
                    "spec.clusterIPs",
                    "",
                    format!("failed to allocate a serviceIP: range is full ({SERVICE_CIDR})"),
                )]
            })?
            .to_string()
    } else {
        let ip: Ipv4Addr = requested.parse().map_err(|_| {
            vec![FieldError::invalid(
                "spec.clusterIP",
                requested.clone(),
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            )]
        })?;
        if !in_range(ip) {
            return Err(vec![FieldError::invalid(
                "spec.clusterIP",
                requested.clone(),
                format!(
                    "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {SERVICE_CIDR}"
                ),
            )]);
        }
        if allocated(cluster).contains(&ip) {
            return Err(vec![FieldError::invalid(
                "spec.clusterIP",
                requested.clone(),
                "provided IP is already allocated",
            )]);
        }
        ip.to_string()
    };
    spec["clusterIP"] = json!(ip);
    spec["clusterIPs"] = json!([ip]);
    spec["ipFamilies"] = json!(["IPv4"]);
    spec["ipFamilyPolicy"] = json!("SingleStack");
    spec["internalTrafficPolicy"] =
        json!(spec["internalTrafficPolicy"].as_str().unwrap_or("Cluster"));
    obj["status"] = json!({"loadBalancer": {}});
    Ok(obj)
}

/// On update: an omitted clusterIP keeps the old one; a different one is
/// refused (`field is immutable`), as the apiserver does.
pub fn keep_cluster_ip(old: &Value, next: &mut Value) -> Result<(), FieldError> {
    let Some(old_ip) = old.pointer("/spec/clusterIP").and_then(Value::as_str) else {
        return Ok(());
    };
    if !next["spec"].is_object() {
        next["spec"] = json!({});
    }
    match next["spec"]["clusterIP"].as_str() {
        None | Some("") => {
            next["spec"]["clusterIP"] = json!(old_ip);
            next["spec"]["clusterIPs"] = old
                .pointer("/spec/clusterIPs")
                .cloned()
                .unwrap_or_else(|| json!([old_ip]));
            Ok(())
        }
        Some(ip) if ip == old_ip => Ok(()),
        Some(ip) => Err(FieldError::invalid(
            "spec.clusterIP",
            ip,
            "field is immutable",
        )),
    }
}

/// Creates the `kubernetes` Service in `default` (clusterIP
/// `127.96.0.1`, port 443), as every cluster has; its endpoint is the API
/// server (in an isolated pod network, served at that very address).
pub fn create_kubernetes_service(cluster: &Cluster, https_port: u16) {
    if cluster
        .get(resources::core("services"), "default", "kubernetes")
        .is_some()
    {
        return;
    }
    let svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kubernetes",
            "labels": {"component": "apiserver", "provider": "kubernetes"},
        },
        "spec": {
            "clusterIP": IN_CLUSTER_API.ip().to_string(),
            "ports": [{"name": "https", "port": IN_CLUSTER_API.port(), "protocol": "TCP", "targetPort": https_port}],
        },
    });
    if let Err(e) = cluster.create(resources::core("services"), "default", svc) {
        tracing::warn!(error = %e.message, "cannot create the kubernetes Service");
    }
}

/// The cells of `kubectl get services`: name, type, cluster IP, external
/// IP, ports, age, selector.
pub fn table_cells(svc: &Value) -> Vec<Value> {
    let str_at = |p: &str| svc.pointer(p).and_then(Value::as_str).unwrap_or_default();
    let ports: Vec<String> = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64() {
                Some(np) => format!("{}:{np}/{proto}", p["port"]),
                None => format!("{}/{proto}", p["port"]),
            }
        })
        .collect();
    let selector: Vec<String> = svc
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    let or_none = |s: String| {
        if s.is_empty() {
            "<none>".to_string()
        } else {
            s
        }
    };
    let external = match str_at("/spec/type") {
        "ExternalName" => str_at("/spec/externalName").to_string(),
        "LoadBalancer" => "<pending>".to_string(),
        _ => String::new(),
    };
    vec![
        json!(str_at("/metadata/name")),
        json!(str_at("/spec/type")),
        json!(or_none(str_at("/spec/clusterIP").to_string())),
        json!(or_none(external)),
        json!(or_none(ports.join(","))),
        json!(super::server::table::human_age(
            svc.pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str)
        )),
        json!(or_none(selector.join(","))),
    ]
}

/// The Docker-link style variables the kubelet gives containers for every
/// Service of their namespace with a clusterIP (`enableServiceLinks`):
/// `WEB_SERVICE_HOST`, `WEB_SERVICE_PORT`, `WEB_PORT_80_TCP_ADDR`... The
/// `kubernetes` Service's own variables are set by the kubelet separately.
pub fn link_env(cluster: &Cluster, ns: &str) -> Vec<(String, String)> {
    let mut env = Vec::new();
    let all = cluster.store().list(resources::core("services"), Some(ns));
    for svc in all.iter() {
        let Some(ip) = cluster_ip(svc) else { continue };
        let (svc_ns, name) = super::store::key_of(svc);
        if svc_ns == "default" && name == "kubernetes" {
            continue;
        }
        let prefix = name.to_uppercase().replace('-', "_");
        let ports: Vec<&Value> = svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .collect();
        let Some(first) = ports.first() else { continue };
        env.push((format!("{prefix}_SERVICE_HOST"), ip.to_string()));
        env.push((format!("{prefix}_SERVICE_PORT"), first["port"].to_string()));
        for p in &ports {
            if let Some(pn) = p["name"].as_str().filter(|s| !s.is_empty()) {
                env.push((
                    format!(
                        "{prefix}_SERVICE_PORT_{}",
                        pn.to_uppercase().replace('-', "_")
                    ),
                    p["port"].to_string(),
                ));
            }
        }
        let proto = |p: &Value| p["protocol"].as_str().unwrap_or("TCP").to_string();
        env.push((
            format!("{prefix}_PORT"),
            format!("{}://{ip}:{}", proto(first).to_lowercase(), first["port"]),
        ));
        for p in &ports {
            let (port, pr) = (p["port"].to_string(), proto(p));
            let base = format!("{prefix}_PORT_{port}_{pr}");
            env.push((base.clone(), format!("{}://{ip}:{port}", pr.to_lowercase())));
            env.push((format!("{base}_PROTO"), pr.to_lowercase()));
            env.push((format!("{base}_PORT"), port));
            env.push((format!("{base}_ADDR"), ip.to_string()));
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_and_allocation() {
        assert!(in_range(Ipv4Addr::new(127, 96, 3, 4)));
        assert!(!in_range(Ipv4Addr::new(127, 96, 0, 0)));
        assert!(!in_range(Ipv4Addr::new(127, 97, 0, 4)));
        let mut taken = HashSet::new();
        for _ in 0..100 {
            let ip = allocate(&taken);
            assert!(ip.is_some_and(in_range) && ip.is_some_and(|i| taken.insert(i)));
        }
    }

    #[test]
    fn cluster_ip_is_kept_and_immutable() {
        let old = json!({"spec": {"clusterIP": "127.96.0.9", "clusterIPs": ["127.96.0.9"]}});
        let mut next = json!({"spec": {"ports": []}});
        assert!(keep_cluster_ip(&old, &mut next).is_ok());
        assert_eq!(next["spec"]["clusterIP"], "127.96.0.9");
        let mut changed = json!({"spec": {"clusterIP": "127.96.0.10"}});
        let err = keep_cluster_ip(&old, &mut changed).err();
        assert_eq!(
            err.map(|e| e.detail),
            Some("field is immutable".to_string())
        );
    }
}
