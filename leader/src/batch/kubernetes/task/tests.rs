//! The verdicts of pod tracking on hand-built pods: each test feeds a
//! [`Tracked`] record the pod events a cluster sends in that situation and
//! checks what the batch task is told to do, down to the cause's words.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, Pod, PodCondition, PodSpec, PodStatus,
    ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use toil_proto::v1::{Cause, CauseKind};
use tokio::time::Instant;

use super::pods::{DeadlineCheck, Next, Tracked};

const POD: &str = "toil-a-1-x7k2p";

/// A pod of the agent's Job in `phase`, with a 64Mi memory limit, not yet
/// on a node.
fn pod(phase: &str) -> Pod {
    let limits = BTreeMap::from([("memory".to_string(), Quantity("64Mi".into()))]);
    Pod {
        metadata: ObjectMeta {
            name: Some(POD.into()),
            namespace: Some("toil".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "agent".into(),
                image: Some("toil-appliance:dev".into()),
                resources: Some(ResourceRequirements {
                    limits: Some(limits.clone()),
                    requests: Some(limits),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some(phase.into()),
            ..Default::default()
        }),
    }
}

fn status(p: &mut Pod) -> &mut PodStatus {
    p.status.get_or_insert_with(Default::default)
}

fn on_node(mut p: Pod, node: &str) -> Pod {
    if let Some(s) = p.spec.as_mut() {
        s.node_name = Some(node.into());
    }
    p
}

/// The agent container in `state`.
fn container(mut p: Pod, state: ContainerState) -> Pod {
    status(&mut p).container_statuses = Some(vec![ContainerStatus {
        name: "agent".into(),
        image: "toil-appliance:dev".into(),
        state: Some(state),
        ..Default::default()
    }]);
    p
}

fn running() -> ContainerState {
    ContainerState {
        running: Some(ContainerStateRunning::default()),
        ..Default::default()
    }
}

fn waiting(reason: &str, message: &str) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message: Some(message.into()),
        }),
        ..Default::default()
    }
}

fn terminated(code: i32, reason: &str) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: code,
            reason: Some(reason.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn condition(mut p: Pod, type_: &str, reason: &str, message: &str) -> Pod {
    let status_value = if type_ == "PodScheduled" {
        "False"
    } else {
        "True"
    };
    status(&mut p)
        .conditions
        .get_or_insert_with(Vec::new)
        .push(PodCondition {
            type_: type_.into(),
            status: status_value.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            ..Default::default()
        });
    p
}

fn tracked(deadline: Option<Duration>) -> Tracked {
    Tracked::new(
        "align[3]".into(),
        "toil-a-1".into(),
        64 << 20,
        deadline,
        Instant::now(),
    )
}

/// The cause of a `Doomed`, `Verdict` or stored verdict, with its kind and
/// code unpacked for comparison.
fn parts(c: &Cause) -> (CauseKind, i32, &str) {
    (c.kind(), c.code, c.message.as_str())
}

#[test]
fn an_unschedulable_pod_waits_with_the_schedulers_words() {
    let mut t = tracked(None);
    let t0 = Instant::now();
    let first = condition(
        pod("Pending"),
        "PodScheduled",
        "Unschedulable",
        "0/3 nodes are available: 3 Insufficient memory.",
    );
    assert!(matches!(t.read(first, false, t0), Next::Nothing));
    assert_eq!(t.pod.as_deref(), Some(POD));
    let later = t0 + Duration::from_secs(30);
    let second = condition(
        pod("Pending"),
        "PodScheduled",
        "Unschedulable",
        "0/4 nodes are available: 4 Insufficient memory.",
    );
    assert!(matches!(t.read(second, false, later), Next::Nothing));
    // The clock keeps its first start; the message is the latest.
    let (since, message) = t.unschedulable.clone().expect("marked unschedulable");
    assert_eq!(since, t0);
    assert_eq!(message, "0/4 nodes are available: 4 Insufficient memory.");
    // Placed at last: no longer unschedulable.
    let placed = container(
        on_node(pod("Pending"), "n1"),
        waiting("ContainerCreating", ""),
    );
    assert!(matches!(t.read(placed, false, later), Next::Place(n) if n == "n1"));
    assert!(t.unschedulable.is_none());
    assert_eq!(t.starting_since, Some(later));
}

#[test]
fn an_image_pull_back_off_is_stuck_and_keeps_the_first_error() {
    let mut t = tracked(None);
    let now = Instant::now();
    let first = container(
        on_node(pod("Pending"), "n1"),
        waiting(
            "ErrImagePull",
            "pull access denied for toil-appliance, repository does not exist",
        ),
    );
    assert!(matches!(t.read(first, false, now), Next::Place(n) if n == "n1"));
    t.node = Some("n1".into()); // what the task does on Place
    let backoff = container(
        on_node(pod("Pending"), "n1"),
        waiting(
            "ImagePullBackOff",
            "Back-off pulling image \"toil-appliance:dev\"",
        ),
    );
    let Next::Doomed { cause, stuck } = t.read(backoff, false, now) else {
        panic!("an image pull back-off is final");
    };
    assert!(stuck, "the pod would wait forever: its Job is deleted");
    assert_eq!(
        parts(&cause),
        (
            CauseKind::ImagePull,
            0,
            "ErrImagePull: pull access denied for toil-appliance, repository does not exist; then \
             ImagePullBackOff: Back-off pulling image \"toil-appliance:dev\" (image \
             \"toil-appliance:dev\"; check TOIL_APPLIANCE_SELF) (pod toil-a-1-x7k2p on node n1)"
        )
    );
}

#[test]
fn an_oom_kill_names_the_limit_the_request_and_code_137() {
    let mut t = tracked(None);
    let p = container(on_node(pod("Failed"), "n2"), terminated(137, "OOMKilled"));
    let Next::Doomed { cause, stuck } = t.read(p, false, Instant::now()) else {
        panic!("an OOM kill is final");
    };
    assert!(!stuck);
    assert_eq!(
        parts(&cause),
        (
            CauseKind::OomKilled,
            137,
            "the pod's container was OOMKilled (exit code 137) at its memory limit of 64Mi; the \
             job asked for 64 MiB of memory (pod toil-a-1-x7k2p)"
        )
    );
}

#[test]
fn an_eviction_seen_while_the_agent_runs_waits_for_it_to_stop() {
    let mut t = tracked(None);
    t.node = Some("n1".into());
    let t0 = Instant::now();
    let evicting = condition(
        container(on_node(pod("Running"), "n1"), running()),
        "DisruptionTarget",
        "TerminationByKubelet",
        "The node was low on resource: memory.",
    );
    // The agent still runs: its own report and log come first.
    assert!(matches!(t.read(evicting.clone(), false, t0), Next::Nothing));
    let (since, held) = t.verdict.clone().expect("a verdict is held");
    assert_eq!(since, t0);
    assert_eq!(
        parts(&held),
        (
            CauseKind::Evicted,
            0,
            "The node was low on resource: memory. (pod toil-a-1-x7k2p on node n1)"
        )
    );
    // Another event while it runs changes nothing.
    assert!(matches!(t.read(evicting, false, t0), Next::Nothing));
    let mut stopped = container(on_node(pod("Failed"), "n1"), terminated(143, "Error"));
    status(&mut stopped).reason = Some("Evicted".into());
    let Next::Verdict(c) = t.read(stopped, false, t0 + Duration::from_secs(5)) else {
        panic!("the held verdict is delivered once the agent stops");
    };
    assert_eq!(c, held);
}

#[test]
fn a_preemption_is_told_apart_from_an_eviction() {
    let mut t = tracked(None);
    // The pod object is gone and its DisruptionTarget says why.
    let preempted = condition(
        container(on_node(pod("Running"), "spot-1"), running()),
        "DisruptionTarget",
        "PreemptionByScheduler",
        "default-scheduler: preempting to accommodate a higher priority pod",
    );
    let Next::Doomed { cause, stuck } = t.read(preempted, true, Instant::now()) else {
        panic!("a deleted, preempted pod is final");
    };
    assert!(!stuck);
    assert_eq!(
        parts(&cause),
        (
            CauseKind::Preempted,
            0,
            "default-scheduler: preempting to accommodate a higher priority pod (pod toil-a-1-x7k2p)"
        )
    );
}

#[test]
fn a_job_with_a_deadline_is_looked_up_before_its_failure_is_explained() {
    let mut t = tracked(Some(Duration::from_secs(60)));
    t.node = Some("n1".into());
    let killed = container(on_node(pod("Failed"), "n1"), terminated(143, "Error"));
    let Next::CheckDeadline(Some((stashed, deleted))) = t.read(killed, false, Instant::now())
    else {
        panic!("a failed pod of a Job with a deadline is checked first");
    };
    assert!(!deleted);
    assert_eq!(stashed.metadata.name.as_deref(), Some(POD));
    // While the lookup runs, later events wait for it.
    t.deadline_check = DeadlineCheck::Running { stashed: None };
    let gone = container(on_node(pod("Failed"), "n1"), terminated(143, "Error"));
    assert!(matches!(t.read(gone, true, Instant::now()), Next::Nothing));
    assert!(matches!(
        &t.deadline_check,
        DeadlineCheck::Running {
            stashed: Some((_, true))
        }
    ));
    // The pod's own activeDeadlineSeconds says so in its status.
    let mut t = tracked(None);
    let mut past = pod("Failed");
    status(&mut past).reason = Some("DeadlineExceeded".into());
    status(&mut past).message =
        Some("Pod was active on the node longer than the specified deadline".into());
    let Next::Doomed { cause, .. } = t.read(past, false, Instant::now()) else {
        panic!("a pod past its deadline is final");
    };
    assert_eq!(cause.kind(), CauseKind::DeadlineExceeded);
    assert_eq!(
        cause.message,
        "Pod was active on the node longer than the specified deadline (pod toil-a-1-x7k2p)"
    );
}

#[test]
fn endings_without_a_platform_cause() {
    // Success: the driver already has the agent's report.
    let mut t = tracked(None);
    t.node = Some("n1".into());
    let ok = container(on_node(pod("Succeeded"), "n1"), terminated(0, "Completed"));
    assert!(matches!(
        t.read(ok, false, Instant::now()),
        Next::Gone(d) if d == "its pod toil-a-1-x7k2p on node n1 ended"
    ));
    // A plain exit code: explained with the end of the agent's log.
    let mut t = tracked(None);
    t.node = Some("n1".into());
    let crashed = container(on_node(pod("Failed"), "n1"), terminated(2, "Error"));
    assert!(matches!(
        t.read(crashed, false, Instant::now()),
        Next::ExplainLog(w) if w == "the agent's pod toil-a-1-x7k2p on node n1 failed (exit code 2, Error)"
    ));
    // Deleted by someone else while it ran.
    let mut t = tracked(None);
    let live = container(on_node(pod("Running"), "n1"), running());
    assert!(matches!(
        t.read(live, true, Instant::now()),
        Next::Gone(d) if d == "its pod toil-a-1-x7k2p was deleted by someone other than the leader"
    ));
    // While a lookup explains the agent's end, events are ignored.
    let mut t = tracked(None);
    t.explaining = true;
    let ok = container(on_node(pod("Succeeded"), "n1"), terminated(0, "Completed"));
    assert!(matches!(t.read(ok, false, Instant::now()), Next::Nothing));
    assert!(t.pod.is_none());
}
