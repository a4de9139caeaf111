//! The batch task: creates Jobs at a bounded rate, follows every pod of
//! this leader through one watch, turns what it sees into placements and
//! diagnoses, times out pods that wait forever, and kills on request.
//!
//! Nothing here polls: state comes from the watch (kube-runtime's watcher,
//! which relists after a `410 Gone` and backs off on errors), timeouts are
//! local clocks, and a call is made per job only to create its Job, to
//! delete it when it cannot end by itself, or to explain a failure.

mod launch;
mod pods;
#[cfg(test)]
mod tests;
mod watch;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use kube::{Api, Client};
use toil_proto::v1::{Cause, CauseKind};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::pods::{Creation, DeadlineCheck, Tracked};
use super::api::{ApiError, RetryPolicy, TokenBucket};
use super::names::Naming;
use super::{Cluster, Identity, KubernetesConfig};
use crate::batch::{BatchCmd, BatchEvent};

/// How often timeouts are checked.
const TICK: Duration = Duration::from_secs(1);
/// How long shutdown waits for creations in flight before deleting.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(15);
/// A Job that has made no pod after this long has its events read once:
/// a pod refused by Pod Security admission never comes, and the refusal is
/// a configuration error to report now, not after --kubernetesPodTimeout.
const NO_POD_LOOK: Duration = Duration::from_secs(3);
/// How long a verdict waits for its pod to stop: the pod's grace period
/// and some.
const VERDICT_WAIT: Duration = Duration::from_secs(45);

/// What the spawned calls share.
struct Shared {
    client: Client,
    ns: String,
    cfg: KubernetesConfig,
    naming: Naming,
    policy: RetryPolicy,
}

impl Shared {
    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.ns)
    }
}

/// What a spawned call came back with.
enum Done {
    Created {
        agent_id: String,
        result: Result<(), ApiError>,
    },
    /// A final report, after a lookup.
    Report {
        agent_id: String,
        cause: Option<Cause>,
        detail: String,
        delete: bool,
    },
    Deadline {
        agent_id: String,
        message: Option<String>,
    },
    Deleted {
        job: String,
        result: Result<(), ApiError>,
    },
    /// The Job's events were read for an admission refusal of its pod:
    /// `Some` explains it (the agent fails, later launches too).
    Admission {
        /// Each agent checked, with its refusal if one was found.
        checked: Vec<(String, Option<String>)>,
    },
}

/// The batch task's state.
struct Batch {
    shared: Arc<Shared>,
    leader_address: String,
    events: mpsc::Sender<BatchEvent>,
    tracked: HashMap<String, Tracked>,
    /// Jobs waiting for the rate limit, with their token Secrets.
    queue: VecDeque<(String, Job, Box<Secret>)>,
    in_flight: usize,
    bucket: TokenBucket,
    /// Agents killed while their creation was in flight: delete on landing.
    kill_after_create: HashMap<String, String>,
    /// A 403 on create: later launches fail with it at once.
    refused: Option<String>,
    /// The last time one of our pods was placed on a node: a pending pod
    /// counts as unschedulable only while nothing else gets placed either.
    last_progress: Instant,
    /// Agents seen during a relist, until InitDone.
    relist: Option<HashSet<String>>,
    last_watch_warning: Option<Instant>,
    tasks: JoinSet<Done>,
    /// Cancelled at shutdown, before the Jobs are deleted (see [`run`]).
    before_cleanup: CancellationToken,
}

/// Runs the Kubernetes batch system until shut down. `before_cleanup` is
/// cancelled when shutting down, before this leader's Jobs (the relay's
/// among them) are deleted, so the tunnels stop first instead of reporting
/// a relay pod that went away.
pub async fn run(
    cluster: Cluster,
    id: Identity,
    mut cmds: mpsc::Receiver<BatchCmd>,
    events: mpsc::Sender<BatchEvent>,
    before_cleanup: CancellationToken,
) {
    let naming = Naming::new(&cluster.cfg.owner, &id.workflow_id, id.epoch);
    let selector = naming.epoch_selector();
    let shared = Arc::new(Shared {
        client: cluster.conn.client.clone(),
        ns: cluster.conn.namespace.clone(),
        cfg: cluster.cfg.clone(),
        naming,
        policy: RetryPolicy::default(),
    });
    let pods: Api<Pod> = Api::namespaced(shared.client.clone(), &shared.ns);
    let mut watch = Box::pin(
        watcher::watcher(pods, watcher::Config::default().labels(&selector)).default_backoff(),
    );
    let now = Instant::now();
    let mut b = Batch {
        bucket: TokenBucket::new(shared.cfg.max_creates_per_second, now),
        shared,
        leader_address: id.leader_address,
        events,
        tracked: HashMap::new(),
        queue: VecDeque::new(),
        in_flight: 0,
        kill_after_create: HashMap::new(),
        refused: None,
        last_progress: now,
        relist: None,
        last_watch_warning: None,
        tasks: JoinSet::new(),
        before_cleanup,
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let pump_in = b.pump_wait();
        tokio::select! {
            cmd = cmds.recv() => match cmd {
                Some(BatchCmd::Launch(l)) => b.launch(l).await,
                Some(BatchCmd::Kill { agent_id }) => b.kill(&agent_id).await,
                Some(BatchCmd::Shutdown(done)) => {
                    b.shutdown().await;
                    let _ = done.send(());
                    return;
                }
                None => {
                    b.shutdown().await;
                    return;
                }
            },
            Some(ev) = watch.next() => match ev {
                Ok(ev) => b.on_watch(ev).await,
                Err(e) => b.on_watch_error(&e),
            },
            Some(done) = b.tasks.join_next() => {
                if let Ok(done) = done {
                    b.on_done(done).await;
                }
            }
            _ = tick.tick() => b.on_tick().await,
            _ = tokio::time::sleep(pump_in.unwrap_or(TICK)), if pump_in.is_some() => {}
        }
        b.pump();
    }
}

impl Batch {
    async fn shutdown(&mut self) {
        self.queue.clear();
        // Let creations in flight land, so the deletion below sees them.
        let until = Instant::now() + SHUTDOWN_WAIT;
        while self.in_flight > 0 {
            match tokio::time::timeout_at(until, self.tasks.join_next()).await {
                Ok(Some(Ok(Done::Created { .. }))) => self.in_flight -= 1,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        self.tasks.abort_all();
        self.before_cleanup.cancel();
        let selector = self.shared.naming.epoch_selector();
        match super::cleanup::delete_jobs(&self.shared.client, &self.shared.ns, &selector).await {
            Ok(gone) => {
                tracing::info!(jobs = gone.len(), "deleted this leader's Jobs");
                // The collector deletes them with their Jobs; this makes sure
                // no token outlives the leader.
                if let Err(e) =
                    super::cleanup::delete_secrets(&self.shared.client, &self.shared.ns, &selector)
                        .await
                {
                    tracing::warn!(
                        "could not delete the agents' token Secrets (the garbage collector removes them with their Jobs): {e}"
                    );
                }
                if let Err(e) =
                    super::cleanup::delete_services(&self.shared.client, &self.shared.ns, &selector)
                        .await
                    && e.code() != Some(403)
                {
                    tracing::warn!(
                        "could not delete the relay Service (the garbage collector removes it with the relay Job): {e}"
                    );
                }
            }
            Err(e) => crate::say!(
                "toil-leader: could not delete this workflow's Jobs ({e}); they expire by themselves after --kubernetesJobTtl, or remove them with `toil-leader cleanup-jobs --owner {} --workflow {}`",
                self.shared.naming.owner,
                self.shared.naming.workflow_id
            ),
        }
    }

    // === reports ===

    /// The agent is gone: tell the driver once, and delete its Job when the
    /// pod would otherwise wait forever.
    async fn report(&mut self, agent_id: &str, c: Option<Cause>, detail: String, delete: bool) {
        let Some(t) = self.tracked.remove(agent_id) else {
            return;
        };
        if let Some(c) = &c {
            tracing::warn!(job = %t.job_id, agent = %agent_id, "{c}");
        } else {
            tracing::debug!(job = %t.job_id, agent = %agent_id, %detail, "agent gone");
        }
        if delete {
            self.delete_job(&t.job_name);
        }
        let _ = self
            .events
            .send(BatchEvent::AgentGone {
                agent_id: agent_id.to_string(),
                cause: c,
                detail,
            })
            .await;
    }

    async fn place(&mut self, agent_id: &str, node: &str) {
        let Some(t) = self.tracked.get_mut(agent_id) else {
            return;
        };
        if t.node.is_some() || node.is_empty() {
            return;
        }
        t.node = Some(node.to_string());
        self.last_progress = Instant::now();
        let placement = format!("pod {} on {node}", t.pod.clone().unwrap_or_default());
        let _ = self
            .events
            .send(BatchEvent::Placed {
                agent_id: agent_id.to_string(),
                placement,
            })
            .await;
    }

    async fn on_done(&mut self, done: Done) {
        match done {
            Done::Created { agent_id, result } => {
                self.in_flight = self.in_flight.saturating_sub(1);
                if let Some(job) = self.kill_after_create.remove(&agent_id) {
                    if result.is_ok() {
                        self.delete_job(&job);
                    }
                    return;
                }
                match result {
                    Ok(()) => {
                        if let Some(t) = self.tracked.get_mut(&agent_id) {
                            t.creation = Creation::Created;
                            t.created_at = Instant::now();
                        }
                    }
                    Err(e) => {
                        let message = e.to_string();
                        let c = match &e {
                            ApiError::Refused { code, .. } => {
                                if *code == 403 && self.refused.is_none() {
                                    self.refused = Some(message.clone());
                                }
                                Some(Cause::config_error(message.clone()))
                            }
                            ApiError::Unavailable { .. } => None,
                        };
                        self.report(&agent_id, c, message, false).await;
                    }
                }
            }
            Done::Report {
                agent_id,
                cause,
                detail,
                delete,
            } => self.report(&agent_id, cause, detail, delete).await,
            Done::Deadline { agent_id, message } => {
                let Some(t) = self.tracked.get_mut(&agent_id) else {
                    return;
                };
                let stashed = match std::mem::replace(&mut t.deadline_check, DeadlineCheck::Done) {
                    DeadlineCheck::Running { stashed } => stashed,
                    _ => None,
                };
                if let Some(m) = message {
                    let limit = t.deadline.unwrap_or_default();
                    let slack = self.shared.cfg.deadline_slack;
                    let m = format!(
                        "{m}: the pod ran past its Job's activeDeadlineSeconds ({} s: the job's time limit of {} plus {} for start-up, staging and upload) ({})",
                        (limit + slack).as_secs_f64().ceil(),
                        humantime::format_duration(limit),
                        humantime::format_duration(slack),
                        t.whereabouts()
                    );
                    // Delivered when the pod stops (the stashed event may
                    // say it already has).
                    t.verdict = Some((Instant::now(), Cause::new(CauseKind::DeadlineExceeded, m)));
                }
                if let Some((pod, deleted)) = stashed {
                    Box::pin(self.on_pod(*pod, deleted)).await;
                }
            }
            Done::Admission { checked } => {
                for (agent_id, refusal) in checked {
                    let Some(t) = self.tracked.get(&agent_id) else {
                        continue;
                    };
                    if t.pod.is_some() || t.explaining {
                        continue;
                    }
                    if let Some(why) = refusal {
                        let message = format!("{why} (Job {})", t.job_name);
                        // Every pod of this workflow is built alike: the next
                        // launches fail at once with the same message.
                        if self.refused.is_none() {
                            self.refused = Some(message.clone());
                        }
                        self.report(
                            &agent_id,
                            Some(Cause::config_error(message)),
                            String::new(),
                            true,
                        )
                        .await;
                    }
                }
            }
            Done::Deleted { job, result } => {
                if let Err(e) = result {
                    tracing::warn!(%job, "could not delete the Job (it expires by itself after --kubernetesJobTtl): {e}");
                }
            }
        }
    }

    // === timeouts ===

    async fn on_tick(&mut self) {
        let now = Instant::now();
        let cfg = &self.shared.cfg;
        let mut unschedulable = Vec::new();
        let mut not_started = Vec::new();
        let mut overdue = Vec::new();
        let mut admission = Vec::new();
        for (id, t) in &self.tracked {
            if let Some((since, c)) = &t.verdict {
                if now.duration_since(*since) >= VERDICT_WAIT {
                    overdue.push((id.clone(), c.clone()));
                }
                continue;
            }
            if t.explaining || t.creation != Creation::Created {
                continue;
            }
            if let Some((since, msg)) = &t.unschedulable {
                let from = (*since).max(self.last_progress);
                if now.duration_since(from) >= cfg.pending_timeout {
                    unschedulable.push((id.clone(), msg.clone(), now.duration_since(*since)));
                }
            } else if let Some(since) = t.starting_since {
                if t.node.is_some() && now.duration_since(since) >= cfg.pod_timeout {
                    let pod = t.pod.clone().unwrap_or_default();
                    let what = format!(
                        "{} did not start its container within --kubernetesPodTimeout {}",
                        t.whereabouts(),
                        humantime::format_duration(cfg.pod_timeout)
                    );
                    not_started.push((id.clone(), pod, what));
                }
            } else if t.pod.is_none()
                && !t.admission_checked
                && now.duration_since(t.created_at) >= NO_POD_LOOK.min(cfg.pod_timeout)
            {
                admission.push(id.clone());
            } else if t.pod.is_none() && now.duration_since(t.created_at) >= cfg.pod_timeout {
                let what = format!(
                    "Job {} created no pod within --kubernetesPodTimeout {} (a ResourceQuota, LimitRange or admission webhook may refuse it; see `kubectl describe job {}`)",
                    t.job_name,
                    humantime::format_duration(cfg.pod_timeout),
                    t.job_name
                );
                not_started.push((id.clone(), t.job_name.clone(), what));
            }
        }
        let pending_timeout = cfg.pending_timeout;
        for (id, msg, waited) in unschedulable {
            let w = self
                .tracked
                .get(&id)
                .map(Tracked::whereabouts)
                .unwrap_or_default();
            let message = format!(
                "{msg} (the scheduler could not place {w} for {}, and no other pod of this workflow was placed for --kubernetesPendingTimeout {})",
                humantime::format_duration(Duration::from_secs(waited.as_secs())),
                humantime::format_duration(pending_timeout)
            );
            self.report(
                &id,
                Some(Cause::new(CauseKind::Unschedulable, message)),
                String::new(),
                true,
            )
            .await;
        }
        for (id, c) in overdue {
            self.report(&id, Some(c), String::new(), false).await;
        }
        for (id, object, what) in not_started {
            self.explain_start_timeout(&id, object, what);
        }
        if !admission.is_empty() {
            self.check_admission(admission);
        }
    }
}
