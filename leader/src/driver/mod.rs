//! The driver: one task that owns the scheduler core and everything that
//! changes with it (agents, attempts, resource use), fed by a channel.
//!
//! gRPC handlers and the batch system send it messages; it applies them to
//! the core, launches what became ready, hands journal entries to the
//! persister and events to watchers. Because only this task touches the
//! state, there are no locks around scheduling decisions and their order is
//! the order of the journal.

mod agents;
pub mod checks;
mod messages;
mod queries;
#[cfg(test)]
mod tests;
pub use queries::{job_proto, total_usage};

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use toil_jobstore::layout;
use toil_proto::StateCounts;
use toil_proto::v1::{AttemptResult, Cause, WorkflowState, workflow_event::Kind as EventKind};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::batch::{AgentLaunch, BatchCmd, BatchEvent, Capacity, Usage};
use crate::core::{Core, CoreEvent, JobIdx, LaunchSpec, Request};
use crate::events::EventHub;
use crate::logs::LogHub;
use crate::metrics::Metrics;
use crate::persist::PersistMsg;
pub use agents::{Grant, TokenTable, new_token, same_secret};
pub use messages::{Caller, Msg, exit as exit_response};

/// The driver's clock: tokio's, which is the system's except in tests that
/// pause it to step through leases and back-offs.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Settings of the driver.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// An agent that stops reporting for this long is lost.
    pub lease: Duration,
    /// How long the leader holds a running agent's report before answering
    /// (long poll), so kills reach it at once without busy polling.
    pub hold: Duration,
    /// Hand a finished agent another job that fits its slot (pod reuse).
    pub reuse_agents: bool,
    /// Job store locator given to agents.
    pub job_store: String,
    /// Address of WorkflowService given to jobs (`unix:PATH` or
    /// `https://HOST:PORT`).
    pub workflow_address: String,
    /// The leader's certificate, PEM, given to jobs (`TOIL_LEADER_CERT`)
    /// so their TLS clients can trust it.
    pub leader_cert_pem: String,
    /// Its SHA-256 fingerprint (`TOIL_LEADER_CERT_SHA256`).
    pub leader_cert_sha256: String,
    /// What the batch system offers at once.
    pub capacity: Capacity,
    /// How deep into the ready queue to look for a job that fits.
    pub window: usize,
}

/// Progress figures for the display.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Jobs per state.
    pub counts: StateCounts,
    /// Total jobs.
    pub total: u64,
}

/// How the driver ended.
pub struct Outcome {
    /// The final workflow state (`Running` when interrupted).
    pub state: WorkflowState,
    /// The core, for the summary and exports.
    pub core: Core,
    /// Why it stopped early, if it did.
    pub stopped: Option<String>,
}

pub(crate) struct AgentEntry {
    token: String,
    /// The attempt it is bound to.
    attempt: Option<String>,
    /// The assignment was delivered.
    assigned: bool,
    /// It has called at least once.
    connected: bool,
    last_report: Instant,
    /// What its slot offers.
    capacity: Request,
    placement: String,
    /// A running report held open (long poll).
    held: Option<oneshot::Sender<messages::SyncReply>>,
    held_until: Instant,
    /// A kill to deliver at the next report.
    kill: Option<String>,
    /// The agent reported its attempt AGENT_LOST (it was stopped from
    /// outside): the result waits here until the batch system says why the
    /// agent went (preempted, evicted, deadline...), or until the time.
    deferred: Option<(AttemptResult, Instant)>,
}

/// Something that waits until the journal entry launching its attempt is
/// durable: an agent is never started (or handed an attempt) before then, so
/// a later leader replaying the journal always knows every attempt number
/// that was used.
pub(crate) enum Pending {
    /// Start a new agent.
    Launch(AgentLaunch),
    /// Hand a waiting (reused) agent its next attempt.
    Assign {
        agent_id: String,
        attempt_id: String,
        /// The report being answered was a DONE that is now recorded.
        recorded: bool,
        reply: oneshot::Sender<messages::SyncReply>,
    },
    /// Answer a report once what it depends on is durable.
    Reply {
        answer: Box<toil_proto::v1::SynchronizeResponse>,
        reply: oneshot::Sender<messages::SyncReply>,
    },
}

pub(crate) struct AttemptEntry {
    job: JobIdx,
    n: u32,
    token: String,
    agent_id: String,
    spec: LaunchSpec,
}

/// The driver's state.
pub struct Driver {
    core: Core,
    cfg: DriverConfig,
    agents: HashMap<String, AgentEntry>,
    attempts: HashMap<String, AttemptEntry>,
    tokens: Arc<TokenTable>,
    usage: Usage,
    batch: mpsc::Sender<BatchCmd>,
    persist: mpsc::Sender<PersistMsg>,
    logs: Arc<LogHub>,
    events: Arc<EventHub>,
    progress: watch::Sender<Progress>,
    next_agent: u64,
    draining: bool,
    /// Journal entries handed to the persister so far.
    journal_total: u64,
    /// Journal entries the persister has made durable.
    durable: watch::Receiver<u64>,
    /// Launches and assignments waiting for their journal entry.
    pending: VecDeque<(u64, Pending)>,
    /// The run's metrics: job states, attempt endings, latencies.
    metrics: Arc<Metrics>,
}

impl Driver {
    /// A driver for `core`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        core: Core,
        cfg: DriverConfig,
        tokens: Arc<TokenTable>,
        batch: mpsc::Sender<BatchCmd>,
        persist: mpsc::Sender<PersistMsg>,
        logs: Arc<LogHub>,
        events: Arc<EventHub>,
        progress: watch::Sender<Progress>,
        durable: watch::Receiver<u64>,
    ) -> Driver {
        Driver {
            core,
            cfg,
            agents: HashMap::new(),
            attempts: HashMap::new(),
            tokens,
            usage: Usage::default(),
            batch,
            persist,
            logs,
            events,
            progress,
            next_agent: 0,
            draining: false,
            journal_total: 0,
            durable,
            pending: VecDeque::new(),
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// Counts into the run's `metrics` (else into a registry of its own).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Driver {
        self.metrics = metrics;
        self
    }

    /// Runs until the workflow ends, `stop` fires, or the persister fails.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Msg>,
        mut batch_rx: mpsc::Receiver<BatchEvent>,
        stop: CancellationToken,
    ) -> Outcome {
        let mut sweep = tokio::time::interval(Duration::from_millis(250));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopped = None;
        self.after_change().await;
        loop {
            // The last results are confirmed to their agents only once
            // durable, so wait for those confirmations too.
            let confirming = self
                .pending
                .iter()
                .any(|(_, p)| matches!(p, Pending::Reply { .. }));
            if self.core.is_finished() && self.attempts.is_empty() && !confirming {
                break;
            }
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(m) => self.handle(m),
                    None => {
                        stopped = Some("the leader's services stopped".into());
                        break;
                    }
                },
                Some(ev) = batch_rx.recv() => self.on_batch(ev),
                Ok(()) = self.durable.changed() => self.release_durable(),
                _ = sweep.tick() => self.sweep(),
                _ = stop.cancelled() => {
                    stopped = Some("interrupted".into());
                    break;
                }
            }
            self.after_change().await;
        }
        if stopped.as_deref() == Some("interrupted") {
            self.record_interruption();
        }
        // Answer any held reports so agents move on.
        for agent in self.agents.values_mut() {
            if let Some(h) = agent.held.take() {
                let _ = h.send(Ok(messages::exit("the workflow is over")));
            }
        }
        self.after_change().await;
        Outcome {
            state: if stopped.is_some() {
                WorkflowState::Running
            } else {
                self.core.workflow_state()
            },
            core: self.core,
            stopped,
        }
    }

    /// On SIGINT/SIGTERM the running attempts are about to be stopped with
    /// the leader: journal each as ended by the interruption (a platform
    /// cause, which spends no `--retryCount`), so that `status` does not show
    /// them running and a restart starts them again without claiming to
    /// have recovered their results.
    fn record_interruption(&mut self) {
        self.draining = true;
        let now = now();
        let now_ms = toil_jobstore::state::now_ms();
        let running: Vec<(JobIdx, u32)> = (0..self.core.job_count() as JobIdx)
            .filter(|&j| self.core.state(j) == toil_proto::v1::JobState::Running)
            .map(|j| (j, self.core.attempts(j).len() as u32))
            .collect();
        for (j, n) in running {
            let result = AttemptResult::ended(Cause::agent_lost(
                "interrupted: the leader was stopped (SIGINT or SIGTERM) and stopped this attempt",
            ));
            let _ = self.core.finish(j, n, result, now_ms, now);
        }
    }

    /// After each message: launch what can run, then pass on journal
    /// entries, events and progress.
    async fn after_change(&mut self) {
        self.schedule();
        let entries = self.core.drain_journal();
        self.journal_total += entries.len() as u64;
        if !entries.is_empty()
            && self
                .persist
                .send(PersistMsg::Entries(entries))
                .await
                .is_err()
        {
            tracing::error!("the persister has stopped; state changes are no longer saved");
        }
        for ev in self.core.drain_events() {
            self.publish(ev);
        }
        let counts = self.core.counts();
        let changed = self.progress.send_if_modified(|p| {
            if p.counts == counts {
                return false;
            }
            p.counts = counts;
            p.total = counts.total();
            true
        });
        if changed {
            self.metrics.set_job_counts(&counts);
        }
    }

    fn publish(&self, ev: CoreEvent) {
        use toil_proto::v1::{
            AttemptEnded, AttemptStarted, JobStateChanged, JobsAdded, WorkflowEnded,
        };
        let kind = match ev {
            CoreEvent::StateChanged { job, from, to } => {
                EventKind::JobStateChanged(JobStateChanged {
                    job_id: self.core.job_id(job),
                    from: from as i32,
                    to: to as i32,
                })
            }
            CoreEvent::AttemptStarted { job, attempt } => {
                EventKind::AttemptStarted(AttemptStarted {
                    job_id: self.core.job_id(job),
                    attempt_id: layout::attempt_id(&self.core.job_id(job), attempt),
                    placement: self.core.attempts(job)[attempt as usize - 1]
                        .placement
                        .to_string(),
                })
            }
            CoreEvent::AttemptEnded {
                job,
                attempt,
                cause,
                will_retry,
            } => {
                if let Some(a) = self.core.attempts(job).get(attempt as usize - 1) {
                    self.metrics
                        .attempt_ended(self.core.job_name(job), a, will_retry);
                }
                if will_retry {
                    // A retried failure is otherwise silent until the end.
                    crate::say!(
                        "job {} attempt {attempt} failed: {cause}; {}",
                        self.core.job_id(job),
                        self.core.retry_note(job, &cause)
                    );
                }
                EventKind::AttemptEnded(AttemptEnded {
                    job_id: self.core.job_id(job),
                    attempt_id: layout::attempt_id(&self.core.job_id(job), attempt),
                    cause: Some(cause),
                    will_retry,
                })
            }
            CoreEvent::JobsAdded { jobs } => EventKind::JobsAdded(JobsAdded {
                job_ids: jobs.iter().map(|&j| self.core.job_id(j)).collect(),
            }),
            CoreEvent::WorkflowEnded => EventKind::WorkflowEnded(WorkflowEnded {
                state: self.core.workflow_state() as i32,
            }),
        };
        self.events.publish(kind);
    }

    /// Launches ready jobs while the batch system has room.
    fn schedule(&mut self) {
        if self.draining {
            return;
        }
        loop {
            let usage = &self.usage;
            let cap = &self.cfg.capacity;
            let Some(j) = self
                .core
                .take_ready(self.cfg.window, |_, req| usage.fits(req, cap))
            else {
                break;
            };
            self.start_attempt(j, None);
        }
    }

    /// Starts an attempt of ready job `j`, on `agent` (reuse) or on a new
    /// agent. Returns the attempt id.
    fn start_attempt(&mut self, j: JobIdx, agent: Option<&str>) -> Option<String> {
        let now_ms = toil_jobstore::state::now_ms();
        let n = match self.core.launch(j, "", now_ms, None) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(job = %self.core.job_id(j), error = %e, "cannot launch");
                return None;
            }
        };
        let spec = match self.core.launch_spec(j, n) {
            Ok(s) => s,
            Err(message) => {
                let result = AttemptResult::ended(Cause::config_error(message));
                let _ = self.core.finish(j, n, result, now_ms, now());
                return None;
            }
        };
        let attempt_id = spec.attempt_id.clone();
        let token = agents::new_token();
        let agent_id = match agent {
            Some(a) => a.to_string(),
            None => {
                self.next_agent += 1;
                format!("agent-{}-{}", self.core.epoch(), self.next_agent)
            }
        };
        self.usage.add(&spec.request);
        self.logs.open(&attempt_id, &spec.job_id, n);
        self.tokens
            .insert_attempt(&attempt_id, &token, &spec.job_id);
        let request = spec.request.clone();
        let job_id = spec.job_id.clone();
        self.attempts.insert(
            attempt_id.clone(),
            AttemptEntry {
                job: j,
                n,
                token,
                agent_id: agent_id.clone(),
                spec,
            },
        );
        if agent.is_none() {
            let agent_token = agents::new_token();
            self.agents.insert(
                agent_id.clone(),
                AgentEntry {
                    token: agent_token.clone(),
                    attempt: Some(attempt_id.clone()),
                    assigned: false,
                    connected: false,
                    last_report: now(),
                    capacity: request.clone(),
                    placement: String::new(),
                    held: None,
                    held_until: now(),
                    kill: None,
                    deferred: None,
                },
            );
            let time_limit = self
                .attempts
                .get(&attempt_id)
                .and_then(|a| a.spec.time_limit);
            let launch = AgentLaunch {
                agent_id,
                agent_token,
                attempt_id: attempt_id.clone(),
                job_id,
                request,
                time_limit,
            };
            let pos = self.launch_position();
            self.pending.push_back((pos, Pending::Launch(launch)));
        }
        Some(attempt_id)
    }

    /// The journal position the latest launch entry will have once sent.
    pub(crate) fn launch_position(&self) -> u64 {
        self.journal_total + self.core.journal_len() as u64
    }

    /// Starts agents and answers reused agents whose launch entries are now
    /// durable.
    fn release_durable(&mut self) {
        let durable = *self.durable.borrow_and_update();
        while self.pending.front().is_some_and(|(pos, _)| *pos <= durable) {
            let Some((_, p)) = self.pending.pop_front() else {
                break;
            };
            match p {
                Pending::Launch(l) => {
                    if !self.attempts.contains_key(&l.attempt_id) {
                        continue;
                    }
                    if let Err(e) = self.batch.try_send(BatchCmd::Launch(l)) {
                        tracing::warn!(error = %e, "the batch system cannot take a launch");
                        if let tokio::sync::mpsc::error::TrySendError::Full(BatchCmd::Launch(l))
                        | tokio::sync::mpsc::error::TrySendError::Closed(BatchCmd::Launch(l)) = e
                        {
                            self.agent_gone(
                                &l.agent_id,
                                None,
                                "the batch system could not take the launch".into(),
                            );
                        }
                    }
                }
                Pending::Reply { answer, reply } => {
                    let _ = reply.send(Ok(*answer));
                }
                Pending::Assign {
                    agent_id,
                    attempt_id,
                    recorded,
                    reply,
                } => {
                    let mut answer = if self.attempts.contains_key(&attempt_id) {
                        self.assign(&agent_id, &attempt_id)
                    } else {
                        Ok(messages::exit("the attempt was cancelled"))
                    };
                    if let Ok(r) = answer.as_mut() {
                        r.result_recorded = recorded;
                    }
                    let _ = reply.send(answer);
                }
            }
        }
    }

    /// Ends an attempt with `result` and frees what it held.
    fn end_attempt(&mut self, attempt_id: &str, result: AttemptResult, log_chunks: Option<u64>) {
        let Some(entry) = self.attempts.remove(attempt_id) else {
            return;
        };
        self.usage.sub(&entry.spec.request);
        self.tokens.remove_attempt(attempt_id);
        self.logs.end(attempt_id, log_chunks);
        if let Some(agent) = self.agents.get_mut(&entry.agent_id)
            && agent.attempt.as_deref() == Some(attempt_id)
        {
            agent.attempt = None;
            agent.assigned = false;
            agent.kill = None;
        }
        let now_ms = toil_jobstore::state::now_ms();
        if let Err(e) = self.core.finish(entry.job, entry.n, result, now_ms, now()) {
            tracing::warn!(attempt = %attempt_id, error = %e, "attempt result not applied");
        }
    }

    fn on_batch(&mut self, ev: BatchEvent) {
        match ev {
            BatchEvent::Placed {
                agent_id,
                placement,
            } => {
                if let Some(agent) = self.agents.get_mut(&agent_id) {
                    agent.placement = placement.clone();
                    if let Some(aid) = agent.attempt.clone()
                        && let Some(a) = self.attempts.get(&aid)
                    {
                        self.core.place(a.job, a.n, &placement);
                    }
                }
            }
            BatchEvent::AgentGone {
                agent_id,
                cause,
                detail,
            } => self.agent_gone(&agent_id, cause, detail),
        }
    }

    /// An agent is gone; its attempt, if still running, ends with the
    /// platform's diagnosis or as AGENT_LOST.
    fn agent_gone(&mut self, agent_id: &str, cause: Option<Cause>, detail: String) {
        let Some(mut agent) = self.agents.remove(agent_id) else {
            return;
        };
        if let Some(h) = agent.held.take() {
            let _ = h.send(Ok(messages::exit("the agent is gone")));
        }
        if let Some(aid) = agent.attempt {
            // The agent's own report (usage, log chunks) with the
            // platform's diagnosis as the cause, when both are known.
            let (mut result, chunks) = match agent.deferred.take() {
                Some((r, _)) => {
                    let chunks = r.log_chunks;
                    (r, Some(chunks))
                }
                None => (AttemptResult::ended(Cause::agent_lost(detail)), None),
            };
            if let Some(c) = cause {
                result.cause = Some(c);
            }
            self.end_attempt(&aid, result, chunks);
        }
    }

    /// Periodic work: answer expired held reports, declare silent agents
    /// lost, release jobs whose back-off has passed.
    fn sweep(&mut self) {
        let now = now();
        self.core.tick(now);
        let mut lost = Vec::new();
        let mut waited = Vec::new();
        for (id, agent) in self.agents.iter_mut() {
            if agent.held.is_some() && now >= agent.held_until {
                if let Some(h) = agent.held.take() {
                    let _ = h.send(Ok(messages::keep_going(self.cfg.lease)));
                }
                agent.last_report = now;
            }
            if let Some((_, until)) = &agent.deferred {
                if now >= *until {
                    waited.push(id.clone());
                }
                continue;
            }
            if agent.connected
                && agent.held.is_none()
                && agent.attempt.is_some()
                && now.duration_since(agent.last_report) > self.cfg.lease
            {
                lost.push(id.clone());
            }
        }
        for id in waited {
            self.agent_gone(&id, None, String::new());
        }
        for id in lost {
            let secs = self.cfg.lease.as_secs();
            let _ = self.batch.try_send(BatchCmd::Kill {
                agent_id: id.clone(),
            });
            self.agent_gone(&id, None, format!("the agent sent no report for {secs} s"));
        }
    }
}
