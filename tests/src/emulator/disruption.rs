//! Pod disruptions, as the cluster itself causes them: container kills,
//! kubelet eviction, scheduler preemption, the Eviction API, and node loss.
//!
//! Each leaves the same traces as on a real cluster (phase, `status.reason`,
//! the `DisruptionTarget` condition with the right reason, events), because
//! the leader must tell these apart from the user's own failures.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint};
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::emulator::cluster::{Cluster, lock};
use crate::emulator::error::{ApiError, EmulatorError};
use crate::emulator::kubelet::container::StopRequest;
use crate::emulator::kubelet::status::{now, set_condition, update_pod};
use crate::emulator::resources;
use crate::emulator::store::key_of;

fn uid_of(p: &Value) -> String {
    p.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn grace_of(p: &Value) -> u64 {
    p.pointer("/spec/terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(30)
        .max(0) as u64
}

impl Cluster {
    fn pod_or_err(&self, ns: &str, name: &str) -> Result<std::sync::Arc<Value>, EmulatorError> {
        self.get(resources::core("pods"), ns, name)
            .ok_or_else(|| EmulatorError::NotFound(format!("pod {ns}/{name}")))
    }

    /// Kills a pod's container as if it died on its own, exiting with
    /// `exit_code` (137 looks like an external SIGKILL). `container` may be
    /// omitted for single-container pods.
    pub fn kill_container(
        &self,
        ns: &str,
        name: &str,
        container: Option<&str>,
        exit_code: i32,
    ) -> Result<(), EmulatorError> {
        let pod = self.pod_or_err(ns, name)?;
        let procs = self.kubelet.procs_of(&uid_of(&pod));
        let target = procs
            .iter()
            .find(|(c, _)| container.is_none_or(|want| want == c))
            .ok_or_else(|| {
                EmulatorError::NotFound(format!(
                    "running container {} in pod {ns}/{name}",
                    container.unwrap_or("(any)")
                ))
            })?;
        *lock(&target.1.forced_exit) = Some(exit_code);
        target.1.kill(Signal::SIGKILL);
        Ok(())
    }

    /// Kubelet node-pressure eviction: phase Failed, reason Evicted, a
    /// message naming the resource, DisruptionTarget/TerminationByKubelet,
    /// and the containers killed. The pod object stays.
    pub fn evict_pod(&self, ns: &str, name: &str, resource: &str) -> Result<(), EmulatorError> {
        let pod = self.pod_or_err(ns, name)?;
        let uid = uid_of(&pod);
        let node = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let containers: Vec<String> = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let first = containers.first().cloned().unwrap_or_default();
        let message = format!(
            "The node was low on resource: {resource}. Threshold quantity: 100Mi, available: 41Mi. Container {first} was using 1Gi, request is 0, has larger consumption of {resource}. "
        );
        update_pod(self, ns, name, &uid, |p| {
            let st = p.status.get_or_insert_with(Default::default);
            st.phase = Some("Failed".into());
            st.reason = Some("Evicted".into());
            st.message = Some(message.clone());
            set_condition(
                st,
                "DisruptionTarget",
                true,
                Some("TerminationByKubelet"),
                Some(&message),
            );
        });
        if let Some(p) = self.get(resources::core("pods"), ns, name) {
            self.record_event(&p, "Warning", "Evicted", &message, "kubelet", Some(&node));
            for c in &containers {
                self.record_event(
                    &p,
                    "Normal",
                    "Killing",
                    &format!("Stopping container {c}"),
                    "kubelet",
                    Some(&node),
                );
            }
        }
        self.kubelet.request_stop(
            &uid,
            StopRequest {
                grace: Duration::from_secs(grace_of(&pod).min(2)),
                node_lost: false,
            },
        );
        Ok(())
    }

    /// Scheduler preemption: DisruptionTarget/PreemptionByScheduler, a
    /// Preempted event, then graceful deletion.
    pub fn preempt_pod(&self, ns: &str, name: &str) -> Result<(), EmulatorError> {
        let pod = self.pod_or_err(ns, name)?;
        let uid = uid_of(&pod);
        let msg = "default-scheduler: preempting to accommodate a higher priority pod";
        update_pod(self, ns, name, &uid, |p| {
            let st = p.status.get_or_insert_with(Default::default);
            set_condition(
                st,
                "DisruptionTarget",
                true,
                Some("PreemptionByScheduler"),
                Some(msg),
            );
        });
        if let Some(p) = self.get(resources::core("pods"), ns, name) {
            let node = pod
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or_default();
            self.record_event(
                &p,
                "Normal",
                "Preempted",
                &format!("Preempted by pod {} on node {node}", uuid::Uuid::new_v4()),
                "default-scheduler",
                None,
            );
            self.delete_pod(ns, name, &p, None);
        }
        Ok(())
    }

    /// The Eviction API (`pods/eviction`): DisruptionTarget /
    /// EvictionByEvictionAPI, then graceful deletion.
    pub fn evict_via_api(&self, ns: &str, name: &str, grace: Option<i64>) -> Result<(), ApiError> {
        let pods = resources::core("pods");
        let pod = self
            .get(pods, ns, name)
            .ok_or_else(|| ApiError::not_found(&pods.qualified(), name))?;
        let uid = uid_of(&pod);
        update_pod(self, ns, name, &uid, |p| {
            let st = p.status.get_or_insert_with(Default::default);
            set_condition(
                st,
                "DisruptionTarget",
                true,
                Some("EvictionByEvictionAPI"),
                Some("Eviction API: evicting"),
            );
        });
        if let Some(p) = self.get(pods, ns, name) {
            self.delete_pod(ns, name, &p, grace);
        }
        Ok(())
    }

    /// Loses a node: its kubelet stops reporting (Ready Unknown, unreachable
    /// taints), its processes die at once, and the taint manager fails and
    /// deletes its pods (DisruptionTarget / DeletionByTaintManager).
    pub fn lose_node(&self, node: &str) -> Result<(), EmulatorError> {
        let nodes = resources::core("nodes");
        if self.get(nodes, "", node).is_none() {
            return Err(EmulatorError::NotFound(format!("node {node}")));
        }
        self.kubelet.set_node_lost(node, true);
        self.mutate_typed::<Node>(nodes, "", node, |n| {
            let st = n.status.get_or_insert_with(Default::default);
            for c in st.conditions.iter_mut().flatten() {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = now();
            }
            let taints = n
                .spec
                .get_or_insert_with(Default::default)
                .taints
                .get_or_insert_with(Vec::new);
            for effect in ["NoSchedule", "NoExecute"] {
                if !taints
                    .iter()
                    .any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == effect)
                {
                    taints.push(Taint {
                        key: "node.kubernetes.io/unreachable".into(),
                        value: None,
                        effect: effect.into(),
                        time_added: now(),
                    });
                }
            }
        });
        if let Some(n) = self.get(nodes, "", node) {
            self.record_event(
                &n,
                "Normal",
                "NodeNotReady",
                &format!("Node {node} status is now: NodeNotReady"),
                "node-controller",
                None,
            );
        }
        let on_node: Vec<std::sync::Arc<Value>> = self
            .store()
            .list(resources::core("pods"), None)
            .into_iter()
            .filter(|p| p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node))
            .collect();
        let msg = "Taint manager: deleting due to NoExecute taint";
        for p in on_node {
            let uid = uid_of(&p);
            let (ns, name) = key_of(&p);
            self.kubelet.request_stop(
                &uid,
                StopRequest {
                    grace: Duration::ZERO,
                    node_lost: true,
                },
            );
            let finished = matches!(
                p.pointer("/status/phase").and_then(Value::as_str),
                Some("Succeeded") | Some("Failed")
            );
            update_pod(self, &ns, &name, &uid, |pod: &mut Pod| {
                let st = pod.status.get_or_insert_with(Default::default);
                if !finished {
                    st.phase = Some("Failed".into());
                    st.reason = Some("NodeLost".into());
                    st.message = Some(format!(
                        "Node {node} which was running pod {name} is unresponsive"
                    ));
                }
                set_condition(
                    st,
                    "DisruptionTarget",
                    true,
                    Some("DeletionByTaintManager"),
                    Some(msg),
                );
                set_condition(st, "Ready", false, Some("NodeLost"), None);
            });
            if let Some(cur) = self.get(resources::core("pods"), &ns, &name) {
                self.record_event(
                    &cur,
                    "Normal",
                    "TaintManagerEviction",
                    &format!("Marking for deletion Pod {ns}/{name}"),
                    "taint-eviction-controller",
                    None,
                );
            }
            // The pod GC force-deletes pods of a node that is gone.
            self.remove(resources::core("pods"), &ns, &name);
        }
        Ok(())
    }

    /// Brings a lost node back (Ready, no unreachable taints).
    pub fn restore_node(&self, node: &str) -> Result<(), EmulatorError> {
        let nodes = resources::core("nodes");
        self.kubelet.set_node_lost(node, false);
        self.mutate_typed::<Node>(nodes, "", node, |n| {
            let st = n.status.get_or_insert_with(Default::default);
            st.conditions = Some(super::bootstrap::node_conditions(true));
            if let Some(t) = n.spec.as_mut().and_then(|s| s.taints.as_mut()) {
                t.retain(|t| t.key != "node.kubernetes.io/unreachable");
            }
        })
        .ok_or_else(|| EmulatorError::NotFound(format!("node {node}")))?;
        Ok(())
    }
}

/// Helper for node conditions shared with bootstrap.
pub fn condition(type_: &str, status: &str, reason: &str, message: &str) -> NodeCondition {
    NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: now(),
        last_transition_time: now(),
    }
}
