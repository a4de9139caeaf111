//! The scheduler: binds pending pods to emulated nodes by the default
//! profile's filters (unschedulable, taints, node affinity/selector,
//! resources) and scores, and reports unschedulable pods with the real
//! scheduler's condition, message and FailedScheduling event.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec, Taint, Toleration,
};
use serde_json::Value;

use crate::emulator::cluster::{Cluster, typed};
use crate::emulator::kubelet::status::{set_condition, update_pod};
use crate::emulator::quantity::Quantity;
use crate::emulator::resources;
use crate::emulator::store::key_of;

/// Resource amounts by resource name.
pub type Amounts = BTreeMap<String, Quantity>;

fn add(into: &mut Amounts, from: &Amounts) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += *v;
    }
}

/// A pod's effective requests: the containers' sum, or the largest init
/// container if that is bigger, plus one pod slot.
pub fn pod_requests(spec: &PodSpec) -> Amounts {
    let reqs = |c: &k8s_openapi::api::core::v1::Container| -> Amounts {
        let mut a = Amounts::new();
        let res = c.resources.clone().unwrap_or_default();
        let map = res.requests.or(res.limits).unwrap_or_default();
        for (k, q) in map {
            if let Ok(v) = q.0.parse::<Quantity>() {
                a.insert(k, v);
            }
        }
        a
    };
    let mut total = Amounts::new();
    for c in &spec.containers {
        add(&mut total, &reqs(c));
    }
    for c in spec.init_containers.iter().flatten() {
        for (k, v) in reqs(c) {
            let e = total.entry(k).or_default();
            if v > *e {
                *e = v;
            }
        }
    }
    total.insert("pods".into(), Quantity::from_units(1));
    total
}

fn allocatable(node: &Node) -> Amounts {
    let mut a = Amounts::new();
    for (k, q) in node
        .status
        .as_ref()
        .and_then(|s| s.allocatable.clone())
        .unwrap_or_default()
    {
        if let Ok(v) = q.0.parse::<Quantity>() {
            a.insert(k, v);
        }
    }
    a
}

fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => t
            .key
            .as_deref()
            .is_none_or(|k| k.is_empty() || k == taint.key),
        _ => {
            t.key.as_deref() == Some(taint.key.as_str())
                && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
    }
}

fn requirement_matches(r: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let v = labels.get(&r.key);
    let vals = r.values.clone().unwrap_or_default();
    match r.operator.as_str() {
        "In" => v.is_some_and(|v| vals.contains(v)),
        "NotIn" => !v.is_some_and(|v| vals.contains(v)),
        "Exists" => v.is_some(),
        "DoesNotExist" => v.is_none(),
        "Gt" | "Lt" => {
            let (Some(a), Some(b)) = (
                v.and_then(|v| v.parse::<i64>().ok()),
                vals.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if r.operator == "Gt" { a > b } else { a < b }
        }
        _ => false,
    }
}

fn term_matches(t: &NodeSelectorTerm, node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let exprs_ok = t
        .match_expressions
        .iter()
        .flatten()
        .all(|r| requirement_matches(r, &labels));
    let name = node.metadata.name.clone().unwrap_or_default();
    let fields_ok = t.match_fields.iter().flatten().all(|r| {
        let m = BTreeMap::from([(r.key.clone(), name.clone())]);
        r.key == "metadata.name" && requirement_matches(r, &m)
    });
    let empty = t.match_expressions.as_ref().is_none_or(Vec::is_empty)
        && t.match_fields.as_ref().is_none_or(Vec::is_empty);
    !empty && exprs_ok && fields_ok
}

fn affinity_ok(spec: &PodSpec, node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    let affinity_ok =
        required.is_none_or(|r| r.node_selector_terms.iter().any(|t| term_matches(t, node)));
    selector_ok && affinity_ok
}

fn preference_score(spec: &PodSpec, node: &Node) -> i64 {
    let mut score = 0;
    let prefs = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.preferred_during_scheduling_ignored_during_execution
                .clone()
        })
        .unwrap_or_default();
    for p in prefs {
        if term_matches(&p.preference, node) {
            score += i64::from(p.weight);
        }
    }
    let tols = spec.tolerations.clone().unwrap_or_default();
    for t in node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
    {
        if t.effect == "PreferNoSchedule" && !tols.iter().any(|x| tolerates(x, &t)) {
            score -= 100;
        }
    }
    score
}

/// Why one node cannot take a pod (the first failing filter's reasons).
fn filter(spec: &PodSpec, node: &Node, used: &Amounts, want: &Amounts) -> Vec<String> {
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        return vec!["node(s) were unschedulable".into()];
    }
    let tols = spec.tolerations.clone().unwrap_or_default();
    for t in node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
    {
        if (t.effect == "NoSchedule" || t.effect == "NoExecute")
            && !tols.iter().any(|x| tolerates(x, &t))
        {
            return vec![format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key,
                t.value.clone().unwrap_or_default()
            )];
        }
    }
    if !affinity_ok(spec, node) {
        return vec!["node(s) didn't match Pod's node affinity/selector".into()];
    }
    let alloc = allocatable(node);
    let mut out = Vec::new();
    for (res, amount) in want {
        if amount.is_zero() {
            continue;
        }
        let have = alloc.get(res).copied().unwrap_or_default();
        let in_use = used.get(res).copied().unwrap_or_default();
        if in_use + *amount > have {
            out.push(if res == "pods" {
                "Too many pods".to_string()
            } else {
                format!("Insufficient {res}")
            });
        }
    }
    out
}

/// The real scheduler's message for a pod that fits nowhere.
pub fn unschedulable_message(total: usize, reasons: &[Vec<String>]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let (mut resource_nodes, mut other_nodes) = (0, 0);
    for r in reasons {
        for x in r {
            *counts.entry(x.as_str()).or_default() += 1;
        }
        if r.iter()
            .any(|x| x.starts_with("Insufficient") || x == "Too many pods")
        {
            resource_nodes += 1;
        } else {
            other_nodes += 1;
        }
    }
    let mut parts: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    let mut pre = Vec::new();
    if other_nodes > 0 {
        pre.push(format!(
            "{other_nodes} Preemption is not helpful for scheduling"
        ));
    }
    if resource_nodes > 0 {
        pre.push(format!(
            "{resource_nodes} No preemption victims found for incoming pod"
        ));
    }
    pre.sort();
    format!(
        "0/{total} nodes are available: {}. preemption: 0/{total} nodes are available: {}.",
        parts.join(", "),
        pre.join(", ")
    )
}

/// Requests in use on each node by pods that still hold resources.
fn usage(cluster: &Cluster) -> HashMap<String, Amounts> {
    let mut m: HashMap<String, Amounts> = HashMap::new();
    for p in cluster.store().list(resources::core("pods"), None) {
        let node = p
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let phase = p
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if node.is_empty() || phase == "Succeeded" || phase == "Failed" {
            continue;
        }
        let Some(pod) = typed::<Pod>(&p) else {
            continue;
        };
        add(
            m.entry(node.to_string()).or_default(),
            &pod_requests(&pod.spec.unwrap_or_default()),
        );
    }
    m
}

/// Kubelet admission for a pod bound without the scheduler: the name of
/// the first resource that does not fit.
pub fn kubelet_admit(cluster: &Cluster, pod: &Pod, node: &str) -> Result<(), String> {
    let Some(n) = cluster.get_typed::<Node>(resources::core("nodes"), "", node) else {
        return Ok(());
    };
    let mut used = usage(cluster).remove(node).unwrap_or_default();
    let want = pod_requests(&pod.spec.clone().unwrap_or_default());
    // The pod itself is already counted as bound.
    for (k, v) in &want {
        if let Some(u) = used.get_mut(k) {
            *u = u.saturating_sub(*v);
        }
    }
    let alloc = allocatable(&n);
    for (res, amount) in &want {
        if used.get(res).copied().unwrap_or_default() + *amount
            > alloc.get(res).copied().unwrap_or_default()
            && !amount.is_zero()
        {
            return Err(res.clone());
        }
    }
    Ok(())
}

/// Tries to place one pod; returns whether it was bound.
fn schedule_one(
    cluster: &Cluster,
    pod_v: &Value,
    nodes: &[Node],
    used: &mut HashMap<String, Amounts>,
    report: bool,
) -> bool {
    let Some(pod) = typed::<Pod>(pod_v) else {
        return false;
    };
    let spec = pod.spec.clone().unwrap_or_default();
    let want = pod_requests(&spec);
    let mut reasons = Vec::new();
    let mut best: Option<(i64, i128, &Node)> = None;
    for n in nodes {
        let name = n.metadata.name.clone().unwrap_or_default();
        let u = used.get(&name).cloned().unwrap_or_default();
        let why = filter(&spec, n, &u, &want);
        if !why.is_empty() {
            reasons.push(why);
            continue;
        }
        // Least allocated: lower use fraction of cpu and memory after placing.
        let alloc = allocatable(n);
        let frac = |r: &str| {
            let a = alloc
                .get(r)
                .copied()
                .unwrap_or_default()
                .ceil_millis()
                .max(1);
            let x = (u.get(r).copied().unwrap_or_default()
                + want.get(r).copied().unwrap_or_default())
            .ceil_millis();
            x * 1000 / a
        };
        let load = frac("cpu") + frac("memory");
        let score = preference_score(&spec, n);
        let better = match best {
            None => true,
            Some((bs, bl, _)) => score > bs || (score == bs && load < bl),
        };
        if better {
            best = Some((score, load, n));
        }
    }
    let (ns, name) = key_of(pod_v);
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    match best {
        Some((_, _, node)) => {
            let node_name = node.metadata.name.clone().unwrap_or_default();
            let bound = update_pod(cluster, &ns, &name, &uid, |p| {
                if let Some(s) = p.spec.as_mut() {
                    s.node_name = Some(node_name.clone());
                }
                let st = p.status.get_or_insert_with(Default::default);
                set_condition(st, "PodScheduled", true, None, None);
            });
            if bound {
                add(used.entry(node_name.clone()).or_default(), &want);
                if let Some(p) = cluster.get(resources::core("pods"), &ns, &name) {
                    cluster.record_event(
                        &p,
                        "Normal",
                        "Scheduled",
                        &format!("Successfully assigned {ns}/{name} to {node_name}"),
                        "default-scheduler",
                        None,
                    );
                }
            }
            bound
        }
        None => {
            let msg = unschedulable_message(nodes.len(), &reasons);
            update_pod(cluster, &ns, &name, &uid, |p| {
                let st = p.status.get_or_insert_with(Default::default);
                set_condition(st, "PodScheduled", false, Some("Unschedulable"), Some(&msg));
            });
            if report && let Some(p) = cluster.get(resources::core("pods"), &ns, &name) {
                cluster.record_event(
                    &p,
                    "Warning",
                    "FailedScheduling",
                    &msg,
                    "default-scheduler",
                    None,
                );
            }
            false
        }
    }
}

fn pending(p: &Value) -> bool {
    p.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
        && p.pointer("/metadata/deletionTimestamp").is_none()
        && p.pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("Pending")
            == "Pending"
        && p.pointer("/spec/schedulerName")
            .and_then(Value::as_str)
            .unwrap_or("default-scheduler")
            == "default-scheduler"
}

/// The scheduler loop.
pub async fn run(cluster: Arc<Cluster>) {
    let mut changed = cluster.subscribe();
    let mut last_report: HashMap<String, Instant> = HashMap::new();
    let retry = cluster.config.timing.scheduler_retry;
    let mut tick = tokio::time::interval(retry);
    let mut seen_rv = 0u64;
    loop {
        let rv = cluster.store().current_rv();
        if rv != seen_rv {
            seen_rv = rv;
            let candidates: Vec<Arc<Value>> = cluster
                .store()
                .list(resources::core("pods"), None)
                .into_iter()
                .filter(|p| pending(p))
                .collect();
            if !candidates.is_empty() {
                let nodes: Vec<Node> = cluster
                    .store()
                    .list(resources::core("nodes"), None)
                    .iter()
                    .filter_map(|n| typed::<Node>(n))
                    .collect();
                let mut used = usage(&cluster);
                for p in candidates {
                    let uid = p
                        .pointer("/metadata/uid")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    let report = last_report.get(&uid).is_none_or(|t| t.elapsed() >= retry);
                    if !schedule_one(&cluster, &p, &nodes, &mut used, report) && report {
                        last_report.insert(uid, Instant::now());
                    }
                }
                last_report.retain(|_, t| t.elapsed() < retry * 20);
            }
        }
        tokio::select! {
            _ = cluster.shutdown.cancelled() => return,
            _ = changed.changed() => {
                // Let bursts of changes settle into one pass.
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            _ = tick.tick() => seen_rv = 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_matches_the_real_scheduler() {
        let r = vec![vec!["Insufficient memory".to_string()]; 3];
        assert_eq!(
            unschedulable_message(3, &r),
            "0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
        );
        let r = vec![
            vec!["node(s) had untolerated taint {cloud.google.com/gke-spot: true}".to_string()],
            vec![
                "Insufficient cpu".to_string(),
                "Insufficient memory".to_string(),
            ],
        ];
        assert_eq!(
            unschedulable_message(2, &r),
            "0/2 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, 1 node(s) had untolerated taint {cloud.google.com/gke-spot: true}. preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, 1 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn tolerations() {
        let taint = Taint {
            key: "spot".into(),
            value: Some("true".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        };
        let exists = Toleration {
            key: Some("spot".into()),
            operator: Some("Exists".into()),
            ..Default::default()
        };
        let wrong = Toleration {
            key: Some("spot".into()),
            value: Some("false".into()),
            ..Default::default()
        };
        let all = Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        };
        assert!(tolerates(&exists, &taint));
        assert!(!tolerates(&wrong, &taint));
        assert!(tolerates(&all, &taint));
    }
}
