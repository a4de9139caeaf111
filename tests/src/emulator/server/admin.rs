//! `/emulator/...`: fault injection and counters over HTTP (admin token
//! only), for people and benchmarks driving the standalone binary. Each
//! route calls the same code as the Rust API.
//!
//! | method | path | body |
//! | --- | --- | --- |
//! | GET | `/emulator/counters` | |
//! | POST | `/emulator/counters/reset` | |
//! | POST | `/emulator/faults/requests` | `{"count":3,"code":429,"verb":"create","resource":"jobs","retryAfterSeconds":1}` |
//! | POST | `/emulator/faults/clear` | |
//! | POST | `/emulator/faults/drop-watches` | |
//! | POST | `/emulator/faults/expire-history` | |
//! | POST | `/emulator/faults/stall-pods` | `{"namespace":"toil","namePrefix":"x","labelSelector":"a=b"}` |
//! | POST | `/emulator/pods/NS/NAME/kill` | `{"container":"main","exitCode":137}` |
//! | POST | `/emulator/pods/NS/NAME/evict` | `{"resource":"memory"}` |
//! | POST | `/emulator/pods/NS/NAME/preempt` | |
//! | POST | `/emulator/nodes/NAME/lose` / `restore` | |
//! | POST | `/emulator/tokens` | `{"identity":"serviceaccount:NS:NAME"}` → token and kubeconfig |

use std::collections::HashMap;

use serde_json::{Value, json};

use super::{Body, json_response};
use crate::emulator::cluster::{Cluster, StallRule, lock};
use crate::emulator::config::Identity;
use crate::emulator::error::{ApiError, EmulatorError};
use crate::emulator::faults::RequestFault;
use crate::emulator::kubeconfig;

fn emu_err(e: EmulatorError) -> ApiError {
    match e {
        EmulatorError::NotFound(what) => {
            let mut err = ApiError::path_not_found();
            err.message = format!("{what} not found");
            err
        }
        EmulatorError::Api(a) => a,
        other => ApiError::bad_request(other.to_string()),
    }
}

fn body_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

fn ok() -> hyper::Response<Body> {
    json_response(200, &json!({"status": "ok"}))
}

/// Handles one admin request.
pub async fn handle(
    cluster: &Cluster,
    method: &http::Method,
    path: &str,
    _query: &HashMap<String, String>,
    body: &[u8],
) -> Result<hyper::Response<Body>, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let b = body_json(body)?;
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["emulator", "counters"]) => {
            let c = lock(&cluster.faults).counts();
            Ok(json_response(
                200,
                &json!({"total": c.total(), "byVerb": c.by_verb}),
            ))
        }
        ("POST", ["emulator", "counters", "reset"]) => {
            lock(&cluster.faults).reset_counts();
            Ok(ok())
        }
        ("POST", ["emulator", "faults", "requests"]) => {
            let f: RequestFault = serde_json::from_value(b)
                .map_err(|e| ApiError::bad_request(format!("invalid fault: {e}")))?;
            lock(&cluster.faults).add(f);
            Ok(ok())
        }
        ("POST", ["emulator", "faults", "clear"]) => {
            lock(&cluster.faults).clear();
            lock(&cluster.stall_rules).clear();
            Ok(ok())
        }
        ("POST", ["emulator", "faults", "drop-watches"]) => {
            cluster.watch_generation.send_modify(|g| *g += 1);
            Ok(ok())
        }
        ("POST", ["emulator", "faults", "expire-history"]) => {
            let mut store = cluster.store();
            store.compact();
            let rv = store.current_rv();
            drop(store);
            cluster.notify(rv);
            Ok(ok())
        }
        ("POST", ["emulator", "faults", "stall-pods"]) => {
            let s = |k: &str| b.get(k).and_then(Value::as_str).map(String::from);
            cluster.add_stall_rule(StallRule {
                namespace: s("namespace"),
                name_prefix: s("namePrefix"),
                label_selector: s("labelSelector"),
            });
            Ok(ok())
        }
        ("POST", ["emulator", "pods", ns, name, "kill"]) => {
            let code = b.get("exitCode").and_then(Value::as_i64).unwrap_or(137) as i32;
            let container = b.get("container").and_then(Value::as_str);
            cluster
                .kill_container(ns, name, container, code)
                .map_err(emu_err)?;
            Ok(ok())
        }
        ("POST", ["emulator", "pods", ns, name, "evict"]) => {
            let res = b
                .get("resource")
                .and_then(Value::as_str)
                .unwrap_or("memory");
            cluster.evict_pod(ns, name, res).map_err(emu_err)?;
            Ok(ok())
        }
        ("POST", ["emulator", "pods", ns, name, "preempt"]) => {
            cluster.preempt_pod(ns, name).map_err(emu_err)?;
            Ok(ok())
        }
        ("POST", ["emulator", "nodes", node, "lose"]) => {
            cluster.lose_node(node).map_err(emu_err)?;
            Ok(ok())
        }
        ("POST", ["emulator", "nodes", node, "restore"]) => {
            cluster.restore_node(node).map_err(emu_err)?;
            Ok(ok())
        }
        ("POST", ["emulator", "tokens"]) => {
            let id: Identity = b
                .get("identity")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .parse()
                .map_err(ApiError::bad_request)?;
            let token = cluster.token_for(&id);
            let port = cluster.https_port.get().copied().unwrap_or(0);
            let kc = kubeconfig::render(
                &format!("https://127.0.0.1:{port}"),
                &cluster.ca_pem,
                &id,
                &token,
                &kubeconfig::default_namespace(&id),
            );
            Ok(json_response(
                200,
                &json!({"token": token, "kubeconfig": kc}),
            ))
        }
        _ => Err(ApiError::path_not_found()),
    }
}
