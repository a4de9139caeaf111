//! Pod status bookkeeping: conditions with transition times, container
//! statuses, and the kubelet's phase rules.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Pod, PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::container::Exit;
use crate::emulator::cluster::{Cluster, parse_time};
use crate::emulator::resources;

/// Converts our time strings to `metav1.Time`.
pub fn time(s: &str) -> Option<Time> {
    let t = parse_time(s)?;
    k8s_openapi::jiff::Timestamp::from_second(t.timestamp())
        .ok()
        .map(Time)
}

/// Now as `metav1.Time`.
pub fn now() -> Option<Time> {
    time(&crate::emulator::cluster::now_str())
}

/// Sets a condition, moving `lastTransitionTime` only when the status flips.
pub fn set_condition(
    status: &mut PodStatus,
    type_: &str,
    value: bool,
    reason: Option<&str>,
    message: Option<&str>,
) {
    let conds = status.conditions.get_or_insert_with(Vec::new);
    let v = if value { "True" } else { "False" };
    match conds.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != v {
                c.last_transition_time = now();
            }
            c.status = v.into();
            c.reason = reason.map(String::from);
            c.message = message.map(String::from);
        }
        None => conds.push(PodCondition {
            type_: type_.into(),
            status: v.into(),
            reason: reason.map(String::from),
            message: message.map(String::from),
            last_transition_time: now(),
            last_probe_time: None,
            observed_generation: None,
        }),
    }
}

/// Mutates a pod's status if the pod (same uid) still exists.
pub fn update_pod(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    uid: &str,
    f: impl FnOnce(&mut Pod),
) -> bool {
    let mut applied = false;
    cluster.mutate_typed::<Pod>(resources::core("pods"), ns, name, |p| {
        if p.metadata.uid.as_deref() == Some(uid) {
            f(p);
            applied = true;
        }
    });
    applied
}

/// The status entry of one container, created on first use.
pub fn container_status<'a>(
    status: &'a mut PodStatus,
    name: &str,
    image: &str,
    init: bool,
) -> &'a mut ContainerStatus {
    let list = if init {
        status.init_container_statuses.get_or_insert_with(Vec::new)
    } else {
        status.container_statuses.get_or_insert_with(Vec::new)
    };
    let idx = match list.iter().position(|c| c.name == name) {
        Some(i) => i,
        None => {
            list.push(ContainerStatus {
                name: name.into(),
                image: image.into(),
                image_id: String::new(),
                ready: false,
                restart_count: 0,
                started: Some(false),
                state: Some(waiting("ContainerCreating", None)),
                ..Default::default()
            });
            list.len() - 1
        }
    };
    &mut list[idx]
}

/// A waiting state.
pub fn waiting(reason: &str, message: Option<&str>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message: message.map(String::from),
        }),
        ..Default::default()
    }
}

/// A running state.
pub fn running(started_at: &str) -> ContainerState {
    ContainerState {
        running: Some(ContainerStateRunning {
            started_at: time(started_at),
        }),
        ..Default::default()
    }
}

/// A terminated state from an exit.
pub fn terminated(exit: &Exit, container_id: &str) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: exit.code,
            reason: Some(exit.reason().into()),
            started_at: time(&exit.started_at),
            finished_at: time(&exit.finished_at),
            container_id: Some(container_id.into()),
            message: None,
            signal: None,
        }),
        ..Default::default()
    }
}

/// The kubelet's phase rule for a pod whose containers have all stopped.
pub fn final_phase(restart_policy: &str, exits: &[i32]) -> &'static str {
    let all_ok = exits.iter().all(|c| *c == 0);
    match restart_policy {
        "Never" | "OnFailure" | "Always" if all_ok => "Succeeded",
        _ => "Failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_rules_and_conditions() {
        assert_eq!(final_phase("Never", &[0, 0]), "Succeeded");
        assert_eq!(final_phase("Never", &[0, 3]), "Failed");
        let mut s = PodStatus::default();
        set_condition(&mut s, "Ready", false, Some("ContainersNotReady"), None);
        set_condition(&mut s, "Ready", true, None, None);
        let c = s.conditions.unwrap_or_default();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].status, "True");
    }
}
