//! What a pod's status says, in the cluster's own words.
//!
//! [`observe`] is a pure function of one pod object, so every shape a real
//! cluster produces (see `shared/testing.md`, "Kubernetes behaviour") is a
//! table-driven unit test here. The batch task adds what needs time or a
//! lookup: how long a pod has been pending or starting, whether a Job hit
//! its deadline.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodCondition};
use toil_proto::v1::CauseKind;

use crate::workflow::units::format_size;

/// A cause the platform gives for an agent's end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnosis {
    /// The typed cause.
    pub kind: CauseKind,
    /// A code that goes with it (137 for an OOM kill).
    pub code: i32,
    /// The cluster's own message, with what we know around it.
    pub message: String,
    /// The pod will not end by itself (it waits for an image or a
    /// volume, or for a node): its Job must be deleted.
    pub stuck: bool,
}

impl Diagnosis {
    fn new(kind: CauseKind, message: impl Into<String>) -> Self {
        Diagnosis {
            kind,
            code: 0,
            message: message.into(),
            stuck: false,
        }
    }

    fn stuck(mut self) -> Self {
        self.stuck = true;
        self
    }
}

/// One observation of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodState {
    /// Not on a node yet; `unschedulable` is the scheduler's message when it
    /// has tried and failed.
    Pending {
        /// The `PodScheduled` condition's message, if Unschedulable.
        unschedulable: Option<String>,
    },
    /// On a node, container not started; `waiting` is the container's
    /// waiting reason and message (`ErrImagePull`, `ContainerCreating`).
    Starting {
        /// The node.
        node: String,
        /// Reason and message.
        waiting: Option<(String, String)>,
    },
    /// The agent runs.
    Running {
        /// The node.
        node: String,
    },
    /// The platform decided the pod's fate.
    Doomed(Diagnosis),
    /// Being deleted, with no disruption condition (yet) saying why.
    Terminating,
    /// The container ended without a platform cause.
    Ended {
        /// Phase `Succeeded`.
        succeeded: bool,
        /// The container's exit code.
        exit_code: Option<i32>,
        /// The terminated state's reason and message.
        detail: String,
    },
}

fn condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn agent_status(pod: &Pod) -> Option<&ContainerStatus> {
    pod.status.as_ref()?.container_statuses.as_ref()?.first()
}

fn memory_limit(pod: &Pod) -> Option<String> {
    let c = pod.spec.as_ref()?.containers.first()?;
    c.resources
        .as_ref()?
        .limits
        .as_ref()?
        .get("memory")
        .map(|q| q.0.clone())
}

fn node_of(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
}

/// Reads one pod. `asked_memory` is what the job asked for (bytes), for
/// the out-of-memory message.
pub fn observe(pod: &Pod, asked_memory: u64) -> PodState {
    let status = pod.status.clone().unwrap_or_default();
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let status_message = status.message.clone().unwrap_or_default();

    // Disruptions first: they explain everything that follows (the
    // container's SIGTERM exit, the deletion).
    if let Some(c) = condition(pod, "DisruptionTarget").filter(|c| c.status == "True") {
        let msg = c.message.clone().unwrap_or_default();
        let prefer_status = |fallback: &str| {
            if status_message.is_empty() {
                fallback.to_string()
            } else {
                status_message.clone()
            }
        };
        return PodState::Doomed(match c.reason.as_deref().unwrap_or("") {
            "PreemptionByScheduler" => Diagnosis::new(CauseKind::Preempted, msg),
            "DeletionByTaintManager" => Diagnosis::new(CauseKind::NodeLost, prefer_status(&msg)),
            "EvictionByEvictionAPI" => Diagnosis::new(
                CauseKind::Evicted,
                format!("evicted through the Eviction API (a node drain or an operator): {msg}"),
            ),
            "TerminationByKubelet" => Diagnosis::new(CauseKind::Evicted, prefer_status(&msg)),
            other => Diagnosis::new(
                CauseKind::Evicted,
                format!("{other}: {}", prefer_status(&msg)),
            ),
        });
    }
    match status.reason.as_deref() {
        Some("Evicted") | Some("Shutdown") | Some("Terminated") | Some("Preempting") => {
            let kind = if status.reason.as_deref() == Some("Preempting") {
                CauseKind::Preempted
            } else {
                CauseKind::Evicted
            };
            return PodState::Doomed(Diagnosis::new(kind, status_message));
        }
        Some("NodeLost") | Some("UnexpectedAdmissionError") if phase == "Failed" => {
            return PodState::Doomed(Diagnosis::new(CauseKind::NodeLost, status_message));
        }
        Some("DeadlineExceeded") => {
            return PodState::Doomed(Diagnosis::new(CauseKind::DeadlineExceeded, status_message));
        }
        _ => {}
    }

    let cs = agent_status(pod);
    let state = cs.and_then(|c| c.state.clone()).unwrap_or_default();
    if let Some(t) = &state.terminated
        && t.reason.as_deref() == Some("OOMKilled")
    {
        let limit = memory_limit(pod).unwrap_or_else(|| "(none)".into());
        return PodState::Doomed(Diagnosis {
            kind: CauseKind::OomKilled,
            code: 137,
            message: format!(
                "the pod's container was OOMKilled (exit code {}) at its memory limit of {limit}; the job asked for {} of memory",
                t.exit_code,
                format_size(asked_memory)
            ),
            stuck: false,
        });
    }
    if let Some(w) = &state.waiting {
        let reason = w.reason.clone().unwrap_or_default();
        let message = w.message.clone().unwrap_or_default();
        match reason.as_str() {
            "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull" => {
                let image = cs.map(|c| c.image.clone()).unwrap_or_default();
                return PodState::Doomed(
                    Diagnosis::new(
                        CauseKind::ImagePull,
                        format!("{reason}: {message} (image {image:?}; check TOIL_APPLIANCE_SELF)"),
                    )
                    .stuck(),
                );
            }
            // The token Secret is created right after its Job: a kubelet
            // that got there first retries, so this is not final.
            "CreateContainerConfigError" if own_secret_missing(pod, &message) => {}
            "CreateContainerConfigError" | "CreateContainerError" | "RunContainerError" => {
                return PodState::Doomed(
                    Diagnosis::new(CauseKind::ConfigError, format!("{reason}: {message}")).stuck(),
                );
            }
            _ => {}
        }
    }

    match phase {
        "Succeeded" | "Failed" => {
            let t = state.terminated.unwrap_or_default();
            let mut detail = match (t.reason.as_deref(), t.message.as_deref()) {
                (Some(r), Some(m)) if !m.is_empty() => format!("{r}: {m}"),
                (Some(r), _) => r.to_string(),
                (None, _) => String::new(),
            };
            if detail.is_empty() {
                detail = status_message;
            }
            PodState::Ended {
                succeeded: phase == "Succeeded",
                exit_code: cs
                    .and_then(|c| c.state.as_ref())
                    .and_then(|s| s.terminated.as_ref())
                    .map(|t| t.exit_code),
                detail,
            }
        }
        _ if pod.metadata.deletion_timestamp.is_some() => PodState::Terminating,
        "Running" if state.running.is_some() || state.waiting.is_none() => PodState::Running {
            node: node_of(pod).unwrap_or_default(),
        },
        _ => match node_of(pod) {
            Some(node) => PodState::Starting {
                node,
                waiting: state
                    .waiting
                    .map(|w| (w.reason.unwrap_or_default(), w.message.unwrap_or_default())),
            },
            None => PodState::Pending {
                unschedulable: condition(pod, "PodScheduled")
                    .filter(|c| c.status == "False" && c.reason.as_deref() == Some("Unschedulable"))
                    .map(|c| c.message.clone().unwrap_or_default()),
            },
        },
    }
}

/// Whether `message` says that the pod's own token Secret (named like its
/// Job) is missing: the kubelet's `secret "NAME" not found`.
pub fn own_secret_missing(pod: &Pod, message: &str) -> bool {
    let labels = pod.metadata.labels.as_ref();
    let job = labels.and_then(|l| {
        l.get("batch.kubernetes.io/job-name")
            .or_else(|| l.get("job-name"))
    });
    job.is_some_and(|j| {
        message == format!("secret {j:?} not found")
            || message == format!("secrets {j:?} not found")
    })
}

/// The refusal of a pod by Pod Security admission, from the Job
/// controller's `FailedCreate` message, explained with what to change.
/// `None` when the message is not such a refusal.
///
/// `level` and `why` are what the leader's settings need
/// ([`super::podspec::security_level`]).
pub fn pod_security_refusal(
    message: &str,
    namespace: &str,
    level: &str,
    why: &[&str],
) -> Option<String> {
    let at = message.find("violates PodSecurity ")?;
    let rest = &message[at + "violates PodSecurity ".len()..];
    let policy = rest.split('"').nth(1).unwrap_or("?");
    let enforced = policy.split(':').next().unwrap_or(policy);
    let violations = rest.split_once(": ").map(|(_, v)| v).unwrap_or("");
    let fix = if why.is_empty() {
        format!(
            "the leader's pods are built to pass \"restricted\", so something else changed them (a mutating webhook, a LimitRange?): compare `kubectl get job -o yaml` with docs/kubernetes.md, or ask the cluster's administrator for a namespace labelled pod-security.kubernetes.io/enforce={level}"
        )
    } else {
        format!(
            "these pods need the \"{level}\" level because of {}: drop those options (then the pods pass \"restricted\"), or run in a namespace labelled pod-security.kubernetes.io/enforce={level}",
            why.join(" and ")
        )
    };
    Some(format!(
        "namespace {namespace:?} enforces the Pod Security Standard {enforced:?} ({policy}) and refused the agent's pod: {violations}; {fix}"
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        let mut base = json!({
            "metadata": {"name": "toil-a-1-x7k2p", "namespace": "toil"},
            "spec": {"containers": [{"name": "agent", "image": "toil-appliance:dev",
                "resources": {"limits": {"memory": "64Mi"}, "requests": {"memory": "64Mi"}}}]},
        });
        merge(&mut base, v);
        serde_json::from_value(base).unwrap_or_else(|e| panic!("{e}"))
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn doomed(p: &Pod) -> (CauseKind, String, bool) {
        match observe(p, 64 << 20) {
            PodState::Doomed(d) => (d.kind, d.message, d.stuck),
            other => panic!("not doomed: {other:?}"),
        }
    }

    #[test]
    fn disruptions_are_told_apart() {
        let cases = [
            (
                json!({"status": {"phase": "Failed", "reason": "Evicted",
                    "message": "The node was low on resource: memory. Threshold quantity: 100Mi, available: 41Mi.",
                    "conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet",
                        "message": "The node was low on resource: memory."}]}}),
                CauseKind::Evicted,
                "The node was low on resource: memory. Threshold quantity: 100Mi, available: 41Mi.",
            ),
            (
                json!({"metadata": {"deletionTimestamp": "2025-01-01T00:00:00Z"},
                    "status": {"phase": "Running",
                    "conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
                        "message": "default-scheduler: preempting to accommodate a higher priority pod"}]}}),
                CauseKind::Preempted,
                "default-scheduler: preempting to accommodate a higher priority pod",
            ),
            (
                json!({"status": {"phase": "Failed", "reason": "NodeLost",
                    "message": "Node node-2 which was running pod toil-a-1-x7k2p is unresponsive",
                    "conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
                        "message": "Taint manager: deleting due to NoExecute taint"}]}}),
                CauseKind::NodeLost,
                "Node node-2 which was running pod toil-a-1-x7k2p is unresponsive",
            ),
            (
                json!({"status": {"phase": "Running",
                    "conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
                        "message": "Eviction API: evicting"}]}}),
                CauseKind::Evicted,
                "evicted through the Eviction API (a node drain or an operator): Eviction API: evicting",
            ),
            // An older cluster: no DisruptionTarget, only the reason.
            (
                json!({"status": {"phase": "Failed", "reason": "Evicted",
                    "message": "The node was low on resource: ephemeral-storage."}}),
                CauseKind::Evicted,
                "The node was low on resource: ephemeral-storage.",
            ),
            (
                json!({"status": {"phase": "Running", "conditions": [{"type": "DisruptionTarget", "status": "False"}]},
                    "metadata": {"deletionTimestamp": "2025-01-01T00:00:00Z"}}),
                CauseKind::Unspecified,
                "",
            ),
        ];
        for (v, kind, message) in cases {
            let p = pod(v);
            if kind == CauseKind::Unspecified {
                assert_eq!(observe(&p, 0), PodState::Terminating);
                continue;
            }
            assert_eq!(doomed(&p), (kind, message.to_string(), false));
        }
    }

    #[test]
    fn out_of_memory_names_the_limit_and_the_request() {
        let p = pod(json!({"status": {"phase": "Failed", "containerStatuses": [{
            "name": "agent", "image": "toil-appliance:dev", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}}));
        let (kind, msg, stuck) = doomed(&p);
        assert_eq!(kind, CauseKind::OomKilled);
        assert!(!stuck);
        assert_eq!(
            msg,
            "the pod's container was OOMKilled (exit code 137) at its memory limit of 64Mi; the job asked for 64 MiB of memory"
        );
    }

    #[test]
    fn image_and_config_errors_are_stuck() {
        let waiting = |reason: &str, message: &str| {
            pod(
                json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Pending", "containerStatuses": [{
                "name": "agent", "image": "toil-appliance:nope", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": reason, "message": message}}}]}}),
            )
        };
        let (kind, msg, stuck) = doomed(&waiting(
            "ImagePullBackOff",
            "Back-off pulling image \"toil-appliance:nope\"",
        ));
        assert_eq!(kind, CauseKind::ImagePull);
        assert!(stuck);
        assert_eq!(
            msg,
            "ImagePullBackOff: Back-off pulling image \"toil-appliance:nope\" (image \"toil-appliance:nope\"; check TOIL_APPLIANCE_SELF)"
        );
        // The first failure is kept for the message, not final by itself.
        assert_eq!(
            observe(&waiting("ErrImagePull", "pull access denied"), 0),
            PodState::Starting {
                node: "n1".into(),
                waiting: Some(("ErrImagePull".into(), "pull access denied".into()))
            }
        );
        let (kind, msg, stuck) = doomed(&waiting(
            "CreateContainerConfigError",
            "secret \"aws\" not found",
        ));
        assert_eq!(
            (kind, msg.as_str(), stuck),
            (
                CauseKind::ConfigError,
                "CreateContainerConfigError: secret \"aws\" not found",
                true
            )
        );
    }

    #[test]
    fn a_pod_waiting_for_its_own_token_secret_is_still_starting() {
        let waiting = |message: &str| {
            pod(json!({"metadata": {"labels": {
                    "batch.kubernetes.io/job-name": "toil-a-1", "job-name": "toil-a-1"}},
                "spec": {"nodeName": "n1"}, "status": {"phase": "Pending", "containerStatuses": [{
                "name": "agent", "image": "toil-appliance:dev", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "CreateContainerConfigError", "message": message}}}]}}))
        };
        assert!(matches!(
            observe(&waiting("secret \"toil-a-1\" not found"), 0),
            PodState::Starting { .. }
        ));
        // Another secret missing is a configuration error, at once.
        assert_eq!(
            doomed(&waiting("secret \"aws\" not found")).0,
            CauseKind::ConfigError
        );
    }

    #[test]
    fn pod_security_refusals_name_the_policy_and_the_fix() {
        let m = "Error creating: pods \"toil-a-1-x7k2p\" is forbidden: violates PodSecurity \"restricted:latest\": restricted volume types (volume \"workdir\" uses restricted volume type \"hostPath\")";
        let why = ["--kubernetesHostPath (a hostPath volume)"];
        let got = pod_security_refusal(m, "toil", "privileged", &why).unwrap_or_default();
        assert_eq!(
            got,
            "namespace \"toil\" enforces the Pod Security Standard \"restricted\" (restricted:latest) and refused the agent's pod: restricted volume types (volume \"workdir\" uses restricted volume type \"hostPath\"); these pods need the \"privileged\" level because of --kubernetesHostPath (a hostPath volume): drop those options (then the pods pass \"restricted\"), or run in a namespace labelled pod-security.kubernetes.io/enforce=privileged"
        );
        assert!(
            pod_security_refusal(m, "toil", "restricted", &[])
                .is_some_and(|g| g.contains("something else changed them"))
        );
        assert_eq!(
            pod_security_refusal("exceeded quota: compute", "toil", "restricted", &[]),
            None
        );
    }

    #[test]
    fn waiting_states_and_endings() {
        let unsched = pod(json!({"status": {"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."}]}}));
        assert_eq!(
            observe(&unsched, 0),
            PodState::Pending {
                unschedulable: Some("0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.".into())
            }
        );
        assert_eq!(
            observe(&pod(json!({"status": {"phase": "Pending"}})), 0),
            PodState::Pending {
                unschedulable: None
            }
        );
        let creating = pod(
            json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Pending",
            "containerStatuses": [{"name": "agent", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}}}]}}),
        );
        assert_eq!(
            observe(&creating, 0),
            PodState::Starting {
                node: "n1".into(),
                waiting: Some(("ContainerCreating".into(), String::new()))
            }
        );
        let running = pod(
            json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Running",
            "containerStatuses": [{"name": "agent", "image": "i", "imageID": "", "ready": true, "restartCount": 0,
            "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}}}]}}),
        );
        assert_eq!(
            observe(&running, 0),
            PodState::Running { node: "n1".into() }
        );
        let crashed = pod(
            json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Failed",
            "containerStatuses": [{"name": "agent", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 2, "reason": "Error"}}}]}}),
        );
        assert_eq!(
            observe(&crashed, 0),
            PodState::Ended {
                succeeded: false,
                exit_code: Some(2),
                detail: "Error".into()
            }
        );
        let deadline = pod(
            json!({"status": {"phase": "Failed", "reason": "DeadlineExceeded",
            "message": "Pod was active on the node longer than the specified deadline"}}),
        );
        assert_eq!(doomed(&deadline).0, CauseKind::DeadlineExceeded);
    }
}
