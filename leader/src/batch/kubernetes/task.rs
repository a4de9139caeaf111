//! The batch task: creates Jobs at a bounded rate, follows every pod of
//! this leader through one watch, turns what it sees into placements and
//! diagnoses, times out pods that wait forever, and kills on request.
//!
//! Nothing here polls: state comes from the watch (kube-runtime's watcher,
//! which relists after a `410 Gone` and backs off on errors), timeouts are
//! local clocks, and a call is made per job only to create its Job, to
//! delete it when it cannot end by itself, or to explain a failure.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as KubeEvent, Pod};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use toil_proto::v1::{Cause, CauseKind};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::api::{self, ApiError, RetryPolicy, Target, TokenBucket};
use super::diagnose::{Diagnosis, PodState, observe};
use super::names::{self, Naming};
use super::podspec::{self, CONTAINER};
use super::{Cluster, Identity, KubernetesConfig};
use crate::batch::{AgentLaunch, BatchCmd, BatchEvent};

/// Most Job creations in flight at once.
const MAX_IN_FLIGHT: usize = 32;
/// How often timeouts are checked.
const TICK: Duration = Duration::from_secs(1);
/// Lines of an agent's log kept to explain its failure.
const LOG_TAIL: i64 = 10;
/// How long shutdown waits for creations in flight before deleting.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(15);
/// How long a verdict waits for its pod to stop: the pod's grace period
/// and some.
const VERDICT_WAIT: Duration = Duration::from_secs(45);
/// Watch errors are shown at most this often.
const WATCH_WARN_EVERY: Duration = Duration::from_secs(10);

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
}

/// Where a Job is in its creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Creation {
    Queued,
    InFlight,
    Created,
}

/// One agent the batch system is responsible for.
struct Tracked {
    /// Its first job (for messages).
    job_id: String,
    /// Its Job's name.
    job_name: String,
    /// Memory asked (for the out-of-memory message).
    memory: u64,
    /// The job's time limit, when its Job has a deadline.
    deadline: Option<Duration>,
    creation: Creation,
    /// When the Job was created (or queued).
    created_at: Instant,
    /// Its pod, once seen.
    pod: Option<String>,
    /// Its node, once placed (the Placed event was sent).
    node: Option<String>,
    /// Since when the scheduler has said Unschedulable, and its message.
    unschedulable: Option<(Instant, String)>,
    /// Since when the pod has been on a node without its container running.
    starting_since: Option<Instant>,
    /// The first image pull error, kept for the final message.
    pull_error: Option<String>,
    /// A lookup is under way that will report this agent's end.
    explaining: bool,
    /// The Job was looked at for its deadline; pod events that came
    /// meanwhile wait here.
    deadline_check: DeadlineCheck,
    /// A diagnosis made while the agent still ran (preempted, evicted,
    /// past its deadline), delivered when the pod stops, and since when.
    verdict: Option<(Instant, Cause)>,
}

#[derive(Default)]
enum DeadlineCheck {
    #[default]
    NotYet,
    Running {
        stashed: Option<(Box<Pod>, bool)>,
    },
    Done,
}

impl Tracked {
    fn whereabouts(&self) -> String {
        match (&self.pod, &self.node) {
            (Some(p), Some(n)) => format!("pod {p} on node {n}"),
            (Some(p), None) => format!("pod {p}"),
            _ => format!("Job {}", self.job_name),
        }
    }
}

/// What a pod event calls for.
enum Next {
    Nothing,
    Place(String),
    Diagnose(Diagnosis),
    CheckDeadline(Option<(Box<Pod>, bool)>),
    Gone(String),
    ExplainLog(String),
    Verdict(Cause),
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
}

/// The batch task's state.
struct Batch {
    shared: Arc<Shared>,
    leader_address: String,
    events: mpsc::Sender<BatchEvent>,
    tracked: HashMap<String, Tracked>,
    queue: VecDeque<(String, Job)>,
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
}

/// Runs the Kubernetes batch system until shut down.
pub async fn run(
    cluster: Cluster,
    id: Identity,
    mut cmds: mpsc::Receiver<BatchCmd>,
    events: mpsc::Sender<BatchEvent>,
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

/// The cause a diagnosis gives, with where it happened.
fn verdict(t: &Tracked, d: Diagnosis) -> Cause {
    let mut message = d.message;
    if d.kind == CauseKind::ImagePull
        && let Some(first) = &t.pull_error
    {
        message = format!("ErrImagePull: {first}; then {message}");
    }
    Cause::with_code(d.kind, d.code, format!("{message} ({})", t.whereabouts()))
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

impl Batch {
    // === launching ===

    async fn launch(&mut self, l: AgentLaunch) {
        if let Some(why) = self.refused.clone() {
            let _ = self
                .events
                .send(BatchEvent::AgentGone {
                    agent_id: l.agent_id,
                    cause: Some(Cause::config_error(why)),
                    detail: String::new(),
                })
                .await;
            return;
        }
        let s = &self.shared;
        let job = podspec::build_job(&s.cfg, &s.naming, &self.leader_address, &l);
        let deadline = (!s.cfg.reuse_agents).then_some(l.time_limit).flatten();
        self.tracked.insert(
            l.agent_id.clone(),
            Tracked {
                job_id: l.job_id.clone(),
                job_name: job.name_any(),
                memory: l.request.memory,
                deadline,
                creation: Creation::Queued,
                created_at: Instant::now(),
                pod: None,
                node: None,
                unschedulable: None,
                starting_since: None,
                pull_error: None,
                explaining: false,
                deadline_check: DeadlineCheck::NotYet,
                verdict: None,
            },
        );
        self.queue.push_back((l.agent_id, job));
    }

    /// How long until the next creation may start, if one waits.
    fn pump_wait(&mut self) -> Option<Duration> {
        if self.queue.is_empty() || self.in_flight >= MAX_IN_FLIGHT {
            return None;
        }
        Some(self.bucket.wait(Instant::now()))
    }

    /// Starts creations while the rate limit and the in-flight bound allow.
    fn pump(&mut self) {
        while !self.queue.is_empty()
            && self.in_flight < MAX_IN_FLIGHT
            && self.bucket.try_take(Instant::now())
        {
            let Some((agent_id, job)) = self.queue.pop_front() else {
                break;
            };
            let Some(t) = self.tracked.get_mut(&agent_id) else {
                continue;
            };
            t.creation = Creation::InFlight;
            self.in_flight += 1;
            let s = self.shared.clone();
            self.tasks.spawn(async move {
                let result = create(&s, &agent_id, &job).await;
                Done::Created { agent_id, result }
            });
        }
    }

    async fn kill(&mut self, agent_id: &str) {
        let Some(t) = self.tracked.remove(agent_id) else {
            return;
        };
        match t.creation {
            Creation::Queued => self.queue.retain(|(a, _)| a != agent_id),
            Creation::InFlight => {
                self.kill_after_create
                    .insert(agent_id.to_string(), t.job_name.clone());
            }
            Creation::Created => self.delete_job(&t.job_name),
        }
        let _ = self
            .events
            .send(BatchEvent::AgentGone {
                agent_id: agent_id.to_string(),
                cause: None,
                detail: format!("the leader stopped it ({})", t.whereabouts()),
            })
            .await;
    }

    fn delete_job(&mut self, name: &str) {
        let s = self.shared.clone();
        let job = name.to_string();
        self.tasks.spawn(async move {
            let jobs = s.jobs();
            let target = Target::new("delete", "jobs", "batch", &s.ns);
            let dp = DeleteParams::background();
            let r = api::call(&s.policy, &target, &format!("deleting Job {job}"), || {
                jobs.delete(&job, &dp)
            })
            .await;
            let result = match r {
                Ok(_) => Ok(()),
                Err(e) if e.code() == Some(404) => Ok(()),
                Err(e) => Err(e),
            };
            Done::Deleted { job, result }
        });
    }

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
        let selector = self.shared.naming.epoch_selector();
        match super::cleanup::delete_jobs(&self.shared.client, &self.shared.ns, &selector).await {
            Ok(gone) => tracing::info!(jobs = gone.len(), "deleted this leader's Jobs"),
            Err(e) => eprintln!(
                "toil-leader: could not delete this workflow's Jobs ({e}); they expire by themselves after --kubernetesJobTtl, or remove them with `toil-leader cleanup-jobs --owner {} --workflow {}`",
                self.shared.naming.owner, self.shared.naming.workflow_id
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

    async fn diagnosed(&mut self, agent_id: &str, d: Diagnosis) {
        let Some(t) = self.tracked.get(agent_id) else {
            return;
        };
        let stuck = d.stuck;
        let c = verdict(t, d);
        self.report(agent_id, Some(c), String::new(), stuck).await;
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

    // === the watch ===

    async fn on_watch(&mut self, ev: Event<Pod>) {
        match ev {
            Event::Init => self.relist = Some(HashSet::new()),
            Event::InitApply(p) => {
                if let (Some(seen), Some(a)) = (self.relist.as_mut(), p.labels().get(names::AGENT))
                {
                    seen.insert(a.clone());
                }
                self.on_pod(p, false).await;
            }
            Event::InitDone => {
                let Some(seen) = self.relist.take() else {
                    return;
                };
                let vanished: Vec<(String, String)> = self
                    .tracked
                    .iter()
                    .filter(|(id, t)| {
                        t.pod.is_some() && !t.explaining && !seen.contains(&names::label_value(id))
                    })
                    .map(|(id, t)| (id.clone(), t.whereabouts()))
                    .collect();
                for (id, w) in vanished {
                    self.report(
                        &id,
                        None,
                        format!(
                            "its {w} disappeared while the leader's pod watch was reconnecting"
                        ),
                        false,
                    )
                    .await;
                }
            }
            Event::Apply(p) => self.on_pod(p, false).await,
            Event::Delete(p) => self.on_pod(p, true).await,
        }
    }

    fn on_watch_error(&mut self, e: &watcher::Error) {
        if let watcher::Error::WatchError(s) = e
            && s.code == 410
        {
            // The history the watch could resume from is gone: the watcher
            // relists, and pods that vanished meanwhile show at InitDone.
            tracing::debug!("the pod watch expired (410 Gone); relisting");
            return;
        }
        let now = Instant::now();
        if self
            .last_watch_warning
            .is_some_and(|t| now.duration_since(t) < WATCH_WARN_EVERY)
        {
            return;
        }
        self.last_watch_warning = Some(now);
        let inner = match e {
            watcher::Error::InitialListFailed(k)
            | watcher::Error::WatchStartFailed(k)
            | watcher::Error::WatchFailed(k) => Some(k),
            _ => None,
        };
        let forbidden = matches!(inner, Some(kube::Error::Api(s)) if s.code == 403);
        let what = match inner {
            Some(k) => api::short(k),
            None => e.to_string(),
        };
        if forbidden {
            tracing::error!(
                "the pod watch is refused: {what}; the leader's identity needs `list` and `watch` on `pods` in namespace {:?} (apply deploy/rbac.yaml); retrying",
                self.shared.ns
            );
        } else {
            tracing::warn!("the pod watch failed, retrying with back-off: {what}");
        }
    }

    /// Applies one pod event (`deleted`: the pod object is gone).
    async fn on_pod(&mut self, pod: Pod, deleted: bool) {
        let Some(agent_id) = self.agent_of(&pod) else {
            return;
        };
        match self.read_pod(&agent_id, pod, deleted) {
            Next::Nothing => {}
            Next::Place(node) => self.place(&agent_id, &node).await,
            Next::Diagnose(d) => self.diagnosed(&agent_id, d).await,
            Next::CheckDeadline(stashed) => self.check_deadline(&agent_id, stashed),
            Next::Gone(detail) => self.report(&agent_id, None, detail, false).await,
            Next::ExplainLog(what) => self.explain_with_log(&agent_id, what),
            Next::Verdict(c) => self.report(&agent_id, Some(c), String::new(), false).await,
        }
    }

    /// Updates an agent's record from its pod and says what to do next.
    fn read_pod(&mut self, agent_id: &str, pod: Pod, deleted: bool) -> Next {
        let now = Instant::now();
        let Some(t) = self.tracked.get_mut(agent_id) else {
            return Next::Nothing;
        };
        if t.explaining {
            return Next::Nothing;
        }
        if let DeadlineCheck::Running { stashed } = &mut t.deadline_check {
            *stashed = Some((Box::new(pod), deleted));
            return Next::Nothing;
        }
        if t.pod.is_none() {
            t.pod = Some(pod.name_any());
        }
        // A verdict reached while the agent still ran is delivered once it
        // has stopped, so its own last report and log arrive first.
        let agent_running = !deleted && container_running(&pod);
        if let Some((_, c)) = &t.verdict {
            if agent_running {
                return Next::Nothing;
            }
            return Next::Verdict(c.clone());
        }
        let deadline_unchecked =
            t.deadline.is_some() && matches!(t.deadline_check, DeadlineCheck::NotYet);
        let next = match observe(&pod, t.memory) {
            PodState::Pending { unschedulable } => {
                if let Some(m) = unschedulable {
                    match &mut t.unschedulable {
                        Some((_, old)) => *old = m,
                        None => t.unschedulable = Some((now, m)),
                    }
                }
                Next::Nothing
            }
            PodState::Starting { node, waiting } => {
                t.unschedulable = None;
                t.starting_since.get_or_insert(now);
                if let Some((reason, message)) = waiting
                    && reason == "ErrImagePull"
                {
                    t.pull_error.get_or_insert(message);
                }
                Next::Place(node)
            }
            PodState::Running { node } => {
                t.unschedulable = None;
                t.starting_since = None;
                Next::Place(node)
            }
            PodState::Doomed(d)
                if agent_running
                    && matches!(
                        d.kind,
                        CauseKind::Preempted | CauseKind::Evicted | CauseKind::DeadlineExceeded
                    ) =>
            {
                t.verdict = Some((now, verdict(t, d)));
                Next::Nothing
            }
            PodState::Doomed(d) => return Next::Diagnose(d),
            PodState::Terminating if deadline_unchecked => return Next::CheckDeadline(None),
            PodState::Terminating => Next::Nothing,
            PodState::Ended {
                succeeded: true, ..
            } => {
                return Next::Gone(format!("its {} ended", t.whereabouts()));
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
                    t.whereabouts()
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
            t.whereabouts()
        ))
    }

    fn agent_of(&self, pod: &Pod) -> Option<String> {
        let label = pod.labels().get(names::AGENT)?;
        if self.tracked.contains_key(label) {
            return Some(label.clone());
        }
        // Label values are sanitized agent ids; agent ids are label-safe
        // already, so this only matters for unusual ids.
        self.tracked
            .keys()
            .find(|k| &names::label_value(k) == label)
            .cloned()
    }

    // === lookups that explain a failure ===

    /// Reads the Job's conditions: did it pass its activeDeadlineSeconds?
    /// Pod events that arrive meanwhile are kept and applied afterwards.
    fn check_deadline(&mut self, agent_id: &str, stashed: Option<(Box<Pod>, bool)>) {
        let Some(t) = self.tracked.get_mut(agent_id) else {
            return;
        };
        t.deadline_check = DeadlineCheck::Running { stashed };
        let s = self.shared.clone();
        let name = t.job_name.clone();
        let agent_id = agent_id.to_string();
        self.tasks.spawn(async move {
            let jobs = s.jobs();
            let target = Target::new("get", "jobs", "batch", &s.ns);
            let got = api::call(&s.policy, &target, &format!("reading Job {name}"), || {
                jobs.get_opt(&name)
            })
            .await;
            let message = got.ok().flatten().and_then(|j| {
                j.status?.conditions?.into_iter().find_map(|c| {
                    ((c.type_ == "Failed" || c.type_ == "FailureTarget")
                        && c.reason.as_deref() == Some("DeadlineExceeded"))
                    .then(|| c.message.unwrap_or_else(|| "DeadlineExceeded".into()))
                })
            });
            Done::Deadline { agent_id, message }
        });
    }

    /// Reports an agent that failed on its own, with the end of its log.
    fn explain_with_log(&mut self, agent_id: &str, what: String) {
        let Some(t) = self.tracked.get_mut(agent_id) else {
            return;
        };
        t.explaining = true;
        let s = self.shared.clone();
        let pod = t.pod.clone().unwrap_or_default();
        let agent_id = agent_id.to_string();
        self.tasks.spawn(async move {
            let pods: Api<Pod> = Api::namespaced(s.client.clone(), &s.ns);
            let lp = LogParams {
                container: Some(CONTAINER.into()),
                tail_lines: Some(LOG_TAIL),
                ..Default::default()
            };
            let target = Target::new("get", "pods/log", "", &s.ns);
            let log = api::call(
                &s.policy,
                &target,
                &format!("reading the log of {pod}"),
                || pods.logs(&pod, &lp),
            )
            .await;
            let detail = match log {
                Ok(text) if !text.trim().is_empty() => {
                    let lines: Vec<&str> = text.trim_end().lines().collect();
                    format!("{what}; its last output: {}", lines.join(" | "))
                }
                Ok(_) => what,
                Err(e) => format!("{what} (its log could not be read: {e})"),
            };
            Done::Report {
                agent_id,
                cause: None,
                detail,
                delete: false,
            }
        });
    }

    /// Fails an agent whose pod did not start, with the latest warning
    /// event of `object` (the pod, or the Job when no pod appeared).
    fn explain_start_timeout(&mut self, agent_id: &str, object: String, what: String) {
        let Some(t) = self.tracked.get_mut(agent_id) else {
            return;
        };
        t.explaining = true;
        let s = self.shared.clone();
        let agent_id = agent_id.to_string();
        self.tasks.spawn(async move {
            let evs: Api<KubeEvent> = Api::namespaced(s.client.clone(), &s.ns);
            let lp = ListParams::default().fields(&format!("involvedObject.name={object}"));
            let target = Target::new("list", "events", "", &s.ns);
            let got = api::call(
                &s.policy,
                &target,
                &format!("reading the events of {object}"),
                || evs.list(&lp),
            )
            .await;
            let last = got.ok().and_then(|l| {
                l.items
                    .into_iter()
                    .filter(|e| e.type_.as_deref() == Some("Warning"))
                    .max_by_key(|e| {
                        e.last_timestamp
                            .as_ref()
                            .map(|t| t.0.to_string())
                            .or_else(|| e.event_time.as_ref().map(|t| t.0.to_string()))
                            .unwrap_or_default()
                    })
            });
            let message = match last {
                Some(e) => format!(
                    "{what}; the last warning: {}: {}",
                    e.reason.unwrap_or_default(),
                    e.message.unwrap_or_default()
                ),
                None => format!("{what}; the cluster gave no warning event"),
            };
            Done::Report {
                agent_id,
                cause: Some(Cause::new(CauseKind::PodStartTimeout, message)),
                detail: String::new(),
                delete: true,
            }
        });
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
    }
}

/// Creates a Job; a 409 for a Job this agent already owns (a create that
/// succeeded but whose answer was lost, then retried) counts as created.
async fn create(s: &Shared, agent_id: &str, job: &Job) -> Result<(), ApiError> {
    let jobs = s.jobs();
    let name = job.name_any();
    let target = Target::new("create", "jobs", "batch", &s.ns);
    let pp = PostParams::default();
    let r = api::call(&s.policy, &target, &format!("creating Job {name}"), || {
        jobs.create(&pp, job)
    })
    .await;
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(409) => {
            let get = Target::new("get", "jobs", "batch", &s.ns);
            let existing = api::call(&s.policy, &get, &format!("reading Job {name}"), || {
                jobs.get_opt(&name)
            })
            .await
            .ok()
            .flatten();
            let ours = existing.is_some_and(|j| {
                j.labels().get(names::AGENT) == Some(&names::label_value(agent_id))
                    && j.labels().get(names::WORKFLOW) == Some(&s.naming.workflow_id)
                    && j.labels().get(names::EPOCH) == Some(&s.naming.epoch.to_string())
            });
            if ours { Ok(()) } else { Err(e) }
        }
        Err(e) => Err(e),
    }
}
