//! Server-side printing (`meta.k8s.io/v1` `Table`), which `kubectl get`
//! asks for: the columns a person expects (`READY`, `STATUS`, `RESTARTS`...)
//! come from the server, not from kubectl.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::emulator::cluster::parse_time;
use crate::emulator::resources::ResourceType;

/// kubectl's short human duration (`5s`, `3m2s`, `4h`, `2d`).
pub fn human_age(created: Option<&str>) -> String {
    let Some(t) = created.and_then(parse_time) else {
        return "<unknown>".into();
    };
    human_duration((chrono::Utc::now() - t).num_seconds().max(0))
}

/// Formats seconds like kubectl's `duration.HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        let s = secs % 60;
        if s == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{s}s")
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        let mm = m % 60;
        if mm == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{mm}m")
        }
    } else if h < 48 {
        format!("{h}h")
    } else {
        format!("{d}d")
    }
}

fn col(name: &str, ty: &str, priority: i32) -> Value {
    json!({"name": name, "type": ty, "format": if name == "Name" { "name" } else { "" }, "description": name, "priority": priority})
}

fn s(v: &Value, ptr: &str) -> String {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The STATUS column of `kubectl get pods`, computed like kubectl's printer.
pub fn pod_status(p: &Value) -> String {
    let mut reason = s(p, "/status/reason");
    if reason.is_empty() {
        reason = s(p, "/status/phase");
    }
    let statuses = p
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let init = p
        .pointer("/status/initContainerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let total_init = p
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let mut initializing = false;
    for (i, c) in init.iter().enumerate() {
        let term = &c["state"]["terminated"];
        if term.is_object() && term["exitCode"] == json!(0) {
            continue;
        }
        initializing = true;
        reason = if term.is_object() {
            let r = term["reason"].as_str().unwrap_or_default();
            if r.is_empty() {
                format!("Init:ExitCode:{}", term["exitCode"])
            } else {
                format!("Init:{r}")
            }
        } else if let Some(w) = c["state"]["waiting"]["reason"]
            .as_str()
            .filter(|r| *r != "PodInitializing")
        {
            format!("Init:{w}")
        } else {
            format!("Init:{i}/{total_init}")
        };
        break;
    }
    if !initializing {
        let mut has_running = false;
        for c in statuses.iter().rev() {
            if let Some(w) = c["state"]["waiting"]["reason"]
                .as_str()
                .filter(|w| !w.is_empty())
            {
                reason = w.to_string();
            } else if c["state"]["terminated"].is_object() {
                let t = &c["state"]["terminated"];
                reason = match t["reason"].as_str().filter(|r| !r.is_empty()) {
                    Some(r) => r.to_string(),
                    None => match t["signal"].as_i64().filter(|s| *s != 0) {
                        Some(sig) => format!("Signal:{sig}"),
                        None => format!("ExitCode:{}", t["exitCode"]),
                    },
                };
            } else if c["ready"] == json!(true) && c["state"]["running"].is_object() {
                has_running = true;
            }
        }
        if reason == "Completed" && has_running {
            reason = "Running".into();
        }
    }
    if p.pointer("/metadata/deletionTimestamp").is_some() {
        reason = if s(p, "/status/reason") == "NodeLost" {
            "Unknown".into()
        } else {
            "Terminating".into()
        };
    }
    reason
}

fn pod_cells(p: &Value) -> Vec<Value> {
    let statuses = p
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let total = p
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let ready = statuses
        .iter()
        .filter(|c| c["ready"] == json!(true))
        .count();
    let restarts: i64 = statuses
        .iter()
        .filter_map(|c| c["restartCount"].as_i64())
        .sum();
    let ip = s(p, "/status/podIP");
    let node = s(p, "/spec/nodeName");
    vec![
        json!(s(p, "/metadata/name")),
        json!(format!("{ready}/{total}")),
        json!(pod_status(p)),
        json!(restarts),
        json!(human_age(
            p.pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str)
        )),
        json!(if ip.is_empty() {
            "<none>".to_string()
        } else {
            ip
        }),
        json!(if node.is_empty() {
            "<none>".to_string()
        } else {
            node
        }),
        json!("<none>"),
        json!("<none>"),
    ]
}

fn job_status(j: &Value) -> String {
    let conds = j
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let has = |t: &str| {
        conds
            .iter()
            .any(|c| c["type"] == json!(t) && c["status"] == json!("True"))
    };
    if has("Complete") {
        "Complete".into()
    } else if has("Failed") {
        "Failed".into()
    } else if j.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating".into()
    } else if has("FailureTarget") {
        "FailureTarget".into()
    } else if j.pointer("/spec/suspend") == Some(&json!(true)) {
        "Suspended".into()
    } else {
        "Running".into()
    }
}

fn job_cells(j: &Value) -> Vec<Value> {
    let completions = j.pointer("/spec/completions").and_then(Value::as_i64);
    let succeeded = j
        .pointer("/status/succeeded")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let comp = match completions {
        Some(c) => format!("{succeeded}/{c}"),
        None => format!(
            "{succeeded}/1 of {}",
            j.pointer("/spec/parallelism")
                .and_then(Value::as_i64)
                .unwrap_or(1)
        ),
    };
    let start = j
        .pointer("/status/startTime")
        .and_then(Value::as_str)
        .and_then(parse_time);
    let end = j
        .pointer("/status/completionTime")
        .and_then(Value::as_str)
        .and_then(parse_time)
        .unwrap_or_else(chrono::Utc::now);
    let duration = start
        .map(|s| human_duration((end - s).num_seconds().max(0)))
        .unwrap_or_default();
    let containers = j
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<String> = containers.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<String> = containers.iter().map(|c| s(c, "/image")).collect();
    vec![
        json!(s(j, "/metadata/name")),
        json!(job_status(j)),
        json!(comp),
        json!(duration),
        json!(human_age(
            j.pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str)
        )),
        json!(names.join(",")),
        json!(images.join(",")),
        json!(format!(
            "batch.kubernetes.io/controller-uid={}",
            s(j, "/metadata/uid")
        )),
    ]
}

fn node_cells(n: &Value) -> Vec<Value> {
    let conds = n
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ready = conds.iter().find(|c| c["type"] == json!("Ready"));
    let mut status = match ready.and_then(|c| c["status"].as_str()) {
        Some("True") => "Ready".to_string(),
        _ => "NotReady".to_string(),
    };
    if n.pointer("/spec/unschedulable") == Some(&json!(true)) {
        status.push_str(",SchedulingDisabled");
    }
    vec![
        json!(s(n, "/metadata/name")),
        json!(status),
        json!("<none>"),
        json!(human_age(
            n.pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str)
        )),
        json!(s(n, "/status/nodeInfo/kubeletVersion")),
    ]
}

fn event_cells(e: &Value) -> Vec<Value> {
    let last = e.pointer("/lastTimestamp").and_then(Value::as_str);
    let obj = format!(
        "{}/{}",
        s(e, "/involvedObject/kind").to_lowercase(),
        s(e, "/involvedObject/name")
    );
    vec![
        json!(human_age(last)),
        json!(s(e, "/type")),
        json!(s(e, "/reason")),
        json!(obj),
        json!(s(e, "/message")),
    ]
}

/// Computes one row's cells from an object.
type CellFn = fn(&Value) -> Vec<Value>;

/// Renders objects as a Table. `include` is the `includeObject` parameter:
/// `None`, `Object` or `PartialObjectMetadata`.
pub fn table(r: &ResourceType, objs: &[Arc<Value>], include: &str) -> Value {
    let (columns, cells): (Vec<Value>, CellFn) = match r.plural {
        "pods" => (
            vec![
                col("Name", "string", 0),
                col("Ready", "string", 0),
                col("Status", "string", 0),
                col("Restarts", "integer", 0),
                col("Age", "string", 0),
                col("IP", "string", 1),
                col("Node", "string", 1),
                col("Nominated Node", "string", 1),
                col("Readiness Gates", "string", 1),
            ],
            pod_cells,
        ),
        "jobs" => (
            vec![
                col("Name", "string", 0),
                col("Status", "string", 0),
                col("Completions", "string", 0),
                col("Duration", "string", 0),
                col("Age", "string", 0),
                col("Containers", "string", 1),
                col("Images", "string", 1),
                col("Selector", "string", 1),
            ],
            job_cells,
        ),
        "nodes" => (
            vec![
                col("Name", "string", 0),
                col("Status", "string", 0),
                col("Roles", "string", 0),
                col("Age", "string", 0),
                col("Version", "string", 0),
            ],
            node_cells,
        ),
        "events" => (
            vec![
                col("Last Seen", "string", 0),
                col("Type", "string", 0),
                col("Reason", "string", 0),
                col("Object", "string", 0),
                col("Message", "string", 0),
            ],
            event_cells,
        ),
        "services" => (
            vec![
                col("Name", "string", 0),
                col("Type", "string", 0),
                col("Cluster-IP", "string", 0),
                col("External-IP", "string", 0),
                col("Port(s)", "string", 0),
                col("Age", "string", 0),
                col("Selector", "string", 1),
            ],
            crate::emulator::services::table_cells,
        ),
        "namespaces" => (
            vec![
                col("Name", "string", 0),
                col("Status", "string", 0),
                col("Age", "string", 0),
            ],
            |n| {
                vec![
                    json!(s(n, "/metadata/name")),
                    json!(s(n, "/status/phase")),
                    json!(human_age(
                        n.pointer("/metadata/creationTimestamp")
                            .and_then(Value::as_str)
                    )),
                ]
            },
        ),
        _ => (
            vec![col("Name", "string", 0), col("Age", "string", 0)],
            |o| {
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(human_age(
                        o.pointer("/metadata/creationTimestamp")
                            .and_then(Value::as_str)
                    )),
                ]
            },
        ),
    };
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let mut row = json!({"cells": cells(o)});
            match include {
                "None" => {}
                "Object" => row["object"] = (**o).clone(),
                _ => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": o["metadata"],
                    })
                }
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_statuses() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(185), "3m5s");
        assert_eq!(human_duration(3600 * 50), "2d");
        let p = json!({"status": {"phase": "Pending", "containerStatuses": [
            {"ready": false, "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}});
        assert_eq!(pod_status(&p), "ImagePullBackOff");
        let p = json!({"status": {"phase": "Failed", "containerStatuses": [
            {"ready": false, "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}});
        assert_eq!(pod_status(&p), "OOMKilled");
    }
}
