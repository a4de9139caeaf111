//! Pod tracking: what the batch task knows about each agent, and what one
//! pod event means for it.
//!
//! [`Tracked::read`] is pure (the time is passed in), so the verdicts it
//! reaches on every pod shape a cluster produces are unit tests below:
//! [`observe`] says what the pod's status means on its own, and this adds
//! what needs the agent's history (an image pull error seen earlier, a
//! disruption seen while the agent still ran, a deadline to look up).

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use toil_proto::v1::{Cause, CauseKind};
use tokio::time::Instant;

use super::super::diagnose::{Diagnosis, PodState, observe};

/// Where a Job is in its creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Creation {
    /// Waiting for the rate limit or the in-flight bound.
    Queued,
    /// The create call is under way.
    InFlight,
    /// The cluster has the Job.
    Created,
}

/// One agent the batch system is responsible for.
pub(super) struct Tracked {
    /// Its first job (for messages).
    pub(super) job_id: String,
    /// Its Job's name.
    pub(super) job_name: String,
    /// Memory asked (for the out-of-memory message).
    pub(super) memory: u64,
    /// The job's time limit, when its Job has a deadline.
    pub(super) deadline: Option<Duration>,
    pub(super) creation: Creation,
    /// When the Job was created (or queued).
    pub(super) created_at: Instant,
    /// Its pod, once seen.
    pub(super) pod: Option<String>,
    /// Its node, once placed (the Placed event was sent).
    pub(super) node: Option<String>,
    /// Since when the scheduler has said Unschedulable, and its message.
    pub(super) unschedulable: Option<(Instant, String)>,
    /// Since when the pod has been on a node without its container running.
    pub(super) starting_since: Option<Instant>,
    /// The first image pull error, kept for the final message.
    pub(super) pull_error: Option<String>,
    /// A lookup is under way that will report this agent's end.
    pub(super) explaining: bool,
    /// The Job's events were read once for a refusal of its pod by
    /// admission (it had made no pod after [`super::NO_POD_LOOK`]).
    pub(super) admission_checked: bool,
    /// The Job was looked at for its deadline; pod events that came
    /// meanwhile wait here.
    pub(super) deadline_check: DeadlineCheck,
    /// A diagnosis made while the agent still ran (preempted, evicted,
    /// past its deadline), delivered when the pod stops, and since when.
    pub(super) verdict: Option<(Instant, Cause)>,
}

/// Whether the Job's deadline has been looked up.
#[derive(Default)]
pub(super) enum DeadlineCheck {
    /// Not yet.
    #[default]
    NotYet,
    /// Under way; the latest pod event waits here until it is done.
    Running {
        /// The pod, and whether it was deleted.
        stashed: Option<(Box<Pod>, bool)>,
    },
    /// Done (a verdict was set if the deadline passed).
    Done,
}

/// What a pod event calls for.
#[derive(Debug)]
pub(super) enum Next {
    /// Nothing yet.
    Nothing,
    /// The pod is on this node: tell the driver where the agent runs.
    Place(String),
    /// The platform decided the agent's end; `stuck`: the pod will not end
    /// by itself, so its Job must be deleted.
    Doomed {
        /// The cause, with where it happened.
        cause: Cause,
        /// Delete the Job.
        stuck: bool,
    },
    /// Look up whether the Job passed its deadline before deciding.
    CheckDeadline(Option<(Box<Pod>, bool)>),
    /// The agent is gone for no platform reason (the driver has its report).
    Gone(String),
    /// The agent's pod failed by itself: report it with the end of its log.
    ExplainLog(String),
    /// Deliver the verdict reached while the agent ran, now that it stopped.
    Verdict(Cause),
}

impl Tracked {
    /// A record for an agent whose Job is queued for creation.
    pub(super) fn new(
        job_id: String,
        job_name: String,
        memory: u64,
        deadline: Option<Duration>,
        now: Instant,
    ) -> Tracked {
        Tracked {
            job_id,
            job_name,
            memory,
            deadline,
            creation: Creation::Queued,
            created_at: now,
            pod: None,
            node: None,
            unschedulable: None,
            starting_since: None,
            pull_error: None,
            explaining: false,
            admission_checked: false,
            deadline_check: DeadlineCheck::NotYet,
            verdict: None,
        }
    }

    /// Where the agent is, as precisely as known: `pod P on node N`.
    pub(super) fn whereabouts(&self) -> String {
        match (&self.pod, &self.node) {
            (Some(p), Some(n)) => format!("pod {p} on node {n}"),
            (Some(p), None) => format!("pod {p}"),
            _ => format!("Job {}", self.job_name),
        }
    }

    /// The cause a diagnosis gives, with where it happened.
    pub(super) fn verdict(&self, d: Diagnosis) -> Cause {
        let mut message = d.message;
        if d.kind == CauseKind::ImagePull
            && let Some(first) = &self.pull_error
        {
            message = format!("ErrImagePull: {first}; then {message}");
        }
        Cause::with_code(
            d.kind,
            d.code,
            format!("{message} ({})", self.whereabouts()),
        )
    }

    /// Updates the record from one event about its pod (`deleted`: the pod
    /// object is gone) seen at `now`, and says what to do next.
    pub(super) fn read(&mut self, pod: Pod, deleted: bool, now: Instant) -> Next {
        if self.explaining {
            return Next::Nothing;
        }
        if let DeadlineCheck::Running { stashed } = &mut self.deadline_check {
            *stashed = Some((Box::new(pod), deleted));
            return Next::Nothing;
        }
        if self.pod.is_none() {
            self.pod = Some(pod.name_any());
        }
        // A verdict reached while the agent still ran is delivered once it
        // has stopped, so its own last report and log arrive first.
        let agent_running = !deleted && container_running(&pod);
        if let Some((_, c)) = &self.verdict {
            if agent_running {
                return Next::Nothing;
            }
            return Next::Verdict(c.clone());
        }
        let deadline_unchecked =
            self.deadline.is_some() && matches!(self.deadline_check, DeadlineCheck::NotYet);
        let next = match observe(&pod, self.memory) {
            PodState::Pending { unschedulable } => {
                if let Some(m) = unschedulable {
                    match &mut self.unschedulable {
                        Some((_, old)) => *old = m,
                        None => self.unschedulable = Some((now, m)),
                    }
                }
                Next::Nothing
            }
            PodState::Starting { node, waiting } => {
                self.unschedulable = None;
                self.starting_since.get_or_insert(now);
                if let Some((reason, message)) = waiting
                    && reason == "ErrImagePull"
                {
                    self.pull_error.get_or_insert(message);
                }
                Next::Place(node)
            }
            PodState::Running { node } => {
                self.unschedulable = None;
                self.starting_since = None;
                Next::Place(node)
            }
            PodState::Doomed(d)
                if agent_running
                    && matches!(
                        d.kind,
                        CauseKind::Preempted | CauseKind::Evicted | CauseKind::DeadlineExceeded
                    ) =>
            {
                self.verdict = Some((now, self.verdict(d)));
                Next::Nothing
            }
            PodState::Doomed(d) => {
                let stuck = d.stuck;
                return Next::Doomed {
                    cause: self.verdict(d),
                    stuck,
                };
            }
            PodState::Terminating if deadline_unchecked => return Next::CheckDeadline(None),
            PodState::Terminating => Next::Nothing,
            PodState::Ended {
                succeeded: true, ..
            } => {
                return Next::Gone(format!("its {} ended", self.whereabouts()));
            }
            PodState::Ended { .. } if deadline_unchecked => {
                return Next::CheckDeadline(Some((Box::new(pod), deleted)));
            }
            PodState::Ended {
                exit_code, detail, ..
            } => {
                let code =
                    exit_code.map_or("no exit code".to_string(), |c| format!("exit code {c}"));
                return Next::ExplainLog(format!(
                    "the agent's {} failed ({code}, {detail})",
                    self.whereabouts()
                ));
            }
        };
        if !deleted {
            return next;
        }
        if deadline_unchecked {
            return Next::CheckDeadline(Some((Box::new(pod), true)));
        }
        Next::Gone(format!(
            "its {} was deleted by someone other than the leader",
            self.whereabouts()
        ))
    }
}

/// True while the agent's container runs.
fn container_running(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .and_then(|c| c.state.as_ref())
        .is_some_and(|s| s.running.is_some())
}
