//! One attempt, start to finish: stage inputs, pull the image, run the
//! command, store the outputs, write the result to the job store.
//!
//! While it runs, a heartbeat task keeps reporting the phase to the leader
//! (a long poll, so a cancel arrives at once) and turns a kill order, a lost
//! leader or SIGTERM into a kill of the job.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use toil_jobstore::backoff::{Backoff, Budget, Verdict};
use toil_jobstore::{Condition, JobStore, Locator, layout};
use toil_proto::v1::synchronize_response::Action;
use toil_proto::v1::{
    AgentPhase, Assignment, AttemptResult, Cause, CauseKind, ResourceUsage, SynchronizeRequest,
};
use tokio::sync::{Mutex, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::cache::{CacheInput, NodeCache, Staged};
use crate::client::{ClientError, Leader};
use crate::config::RunArgs;
use crate::exec::{self, KillReason};
use crate::images::{Engine, ImageCache};
use crate::logstream::LogStreamer;
use crate::outputs;

/// What attempts share within one agent process.
pub struct AgentCtx {
    /// Settings.
    pub args: RunArgs,
    /// The leader.
    pub leader: Leader,
    /// The node cache.
    pub cache: NodeCache,
    /// Job stores by locator, opened once.
    pub stores: Mutex<HashMap<String, JobStore>>,
    /// The image cache, made when the first image is needed.
    pub images: Mutex<Option<ImageCache>>,
    /// Fires on SIGTERM.
    pub terminate: CancellationToken,
    /// Attempts' work directories.
    pub work_dirs: crate::workdir::WorkDirs,
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

impl AgentCtx {
    pub(crate) async fn store(&self, locator: &str) -> Result<JobStore, String> {
        let mut stores = self.stores.lock().await;
        if let Some(s) = stores.get(locator) {
            return Ok(s.clone());
        }
        let l = Locator::parse(locator).map_err(|e| e.to_string())?;
        let s = JobStore::open(&l).await.map_err(|e| e.to_string())?;
        stores.insert(locator.to_string(), s.clone());
        Ok(s)
    }

    async fn image_cache(&self) -> Result<ImageCache, crate::images::ImageError> {
        let mut slot = self.images.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let engine = Engine::from_env(self.args.container_engine.as_deref())?;
        let dir = engine.cache_dir(&self.args.work_dir, |k| std::env::var_os(k));
        let cache = ImageCache::new(engine, &dir)?.with_pull_timeout(self.args.image_pull_timeout);
        *slot = Some(cache.clone());
        Ok(cache)
    }

    /// Runs one attempt and returns its result (already written to the job
    /// store when possible).
    pub async fn run_attempt(self: &Arc<Self>, a: &Assignment) -> AttemptResult {
        let n = layout::split_attempt_id(&a.attempt_id).map_or(0, |(_, n)| n);
        let jobs_dir = self.args.work_dir.join("jobs");
        let name = format!(
            "{}.{n}-{}",
            layout::job_key(&a.job_id),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let spool = jobs_dir.join(format!("{name}.log"));
        let work_dir = match self.work_dirs.make(&name) {
            Ok(d) => d,
            Err(e) => {
                return concluded(
                    Cause::new(
                        CauseKind::StagingFailed,
                        format!(
                            "cannot create the work directory {}: {e}",
                            jobs_dir.join(&name).display()
                        ),
                    ),
                    Default::default(),
                    None,
                );
            }
        };
        let echo = self.args.echo.then(|| format!("[{}] ", a.job_id));
        let streamer =
            match LogStreamer::start(&self.leader, &a.attempt_id, &a.attempt_token, &spool, echo) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "no log spool; logs go straight to the leader");
                    self.work_dirs.release(&work_dir);
                    return concluded(
                        Cause::new(
                            CauseKind::StagingFailed,
                            format!("cannot create the log spool: {e}"),
                        ),
                        Default::default(),
                        None,
                    );
                }
            };
        let (phase_tx, phase_rx) = watch::channel(AgentPhase::Staging);
        let (kill_tx, kill_rx) = watch::channel(None::<KillReason>);
        let heartbeat = tokio::spawn(
            heartbeat(
                self.clone(),
                a.attempt_id.clone(),
                a.attempt_token.clone(),
                phase_rx,
                kill_tx,
            )
            .in_current_span(),
        );
        let mut run = Run {
            ctx: self,
            a,
            work_dir: &work_dir,
            streamer: Some(streamer),
            phase: phase_tx,
            kill: kill_rx,
            usage: ResourceUsage::default(),
            started: None,
            staged: None,
            cwl_outputs: String::new(),
        };
        let (c, exit_code, outs) = run.body().await;
        // Check the cache entries the job had links to (a job can write to
        // them) and take the links back, before the log is closed so that
        // a change found is in the job's log.
        if let Some(staged) = run.staged.take() {
            for w in self.cache.finish(staged, !self.args.keep_work_dir).await {
                run.note(&w).await;
            }
        }
        let started = run.started;
        // Deliver the rest of the log; when the agent is being stopped
        // (SIGTERM: the pod is going away) wait only briefly.
        let wait = if self.terminate.is_cancelled() {
            Duration::from_secs(3)
        } else {
            Duration::from_secs(30)
        };
        let chunks = match run.streamer.take() {
            Some(s) => s.finish(wait).await.chunks,
            None => 0,
        };
        heartbeat.abort();
        let usage = run.usage;
        let cwl_outputs = std::mem::take(&mut run.cwl_outputs);
        if !self.args.keep_work_dir {
            self.work_dirs.release(&work_dir);
        }
        AttemptResult {
            cause: Some(c),
            exit_code,
            usage: Some(usage),
            outputs: outs,
            log_chunks: chunks,
            started_at: started.map(timestamp),
            ended_at: Some(timestamp(chrono::Utc::now())),
            cwl_outputs,
        }
    }

    /// Writes the result to the job store, where a leader that restarts
    /// finds it. Done only when the leader has not confirmed the result
    /// (it was unreachable, slow, or refused the report): a confirmed
    /// result is in the leader's journal already, and skipping the write
    /// saves a job-store object per attempt.
    pub async fn store_result(&self, a: &Assignment, result: &AttemptResult) {
        let n = layout::split_attempt_id(&a.attempt_id).map_or(0, |(_, n)| n);
        let Ok(store) = self.store(&a.job_store).await else {
            return;
        };
        let key = layout::result_key(&a.job_id, n);
        let data = Bytes::from(result.encode_to_vec());
        // The heartbeat has stopped, so the leader's lease on this agent runs
        // down meanwhile: a few seconds of waiting, no more.
        const RESULT_WRITE: Backoff = Backoff::new(
            Duration::from_millis(200),
            Duration::from_secs(1),
            Budget::TotalDelay(Duration::from_secs(3)),
        );
        let written = RESULT_WRITE
            .retry(
                || store.put_bytes(&key, data.clone(), Condition::Always),
                |e| match e.is_retryable() {
                    true => Verdict::Retry,
                    false => Verdict::Fail,
                },
                |e, n, wait| tracing::warn!(error = %e, try_ = n, ?wait, "could not write the attempt result; retrying"),
            )
            .await;
        if let Err(g) = written {
            tracing::warn!(error = %g.error, tries = g.attempts, "could not write the attempt result to the job store; only the report to the leader carries it");
        }
    }
}

/// A result for an attempt that ended before it really began.
fn concluded(c: Cause, usage: ResourceUsage, log_chunks: Option<u64>) -> AttemptResult {
    AttemptResult {
        cause: Some(c),
        exit_code: -1,
        usage: Some(usage),
        outputs: Vec::new(),
        log_chunks: log_chunks.unwrap_or(0),
        started_at: None,
        ended_at: Some(timestamp(chrono::Utc::now())),
        cwl_outputs: String::new(),
    }
}

/// The mutable state of one attempt in progress.
pub(crate) struct Run<'a> {
    pub(crate) ctx: &'a Arc<AgentCtx>,
    pub(crate) a: &'a Assignment,
    pub(crate) work_dir: &'a Path,
    pub(crate) streamer: Option<LogStreamer>,
    pub(crate) phase: watch::Sender<AgentPhase>,
    pub(crate) kill: watch::Receiver<Option<KillReason>>,
    pub(crate) usage: ResourceUsage,
    pub(crate) started: Option<chrono::DateTime<chrono::Utc>>,
    /// The staged inputs, held until the attempt ends.
    pub(crate) staged: Option<Staged>,
    /// A CWL tool's output object, as JSON (`AttemptResult.cwl_outputs`).
    pub(crate) cwl_outputs: String,
}

impl Run<'_> {
    pub(crate) async fn note(&self, line: &str) {
        if let Some(s) = &self.streamer {
            s.sink().note(line).await;
        }
    }

    /// Stages, runs and uploads. Returns the cause, the exit code and the
    /// outputs.
    async fn body(&mut self) -> (Cause, i32, Vec<toil_proto::v1::OutputFiles>) {
        let a = self.a;
        let store = match self.ctx.store(&a.job_store).await {
            Ok(s) => s,
            Err(e) => {
                return (
                    Cause::config_error(format!("cannot open the job store {}: {e}", a.job_store)),
                    -1,
                    vec![],
                );
            }
        };
        // --- staging -------------------------------------------------------
        let inputs: Result<Vec<CacheInput>, _> =
            a.inputs.iter().map(CacheInput::try_from).collect();
        let inputs = match inputs {
            Ok(i) => i,
            Err(e) => return (Cause::config_error(e.to_string()), -1, vec![]),
        };
        let disk = a.resources.as_ref().map_or(0, |r| r.disk_bytes);
        let staged = match self
            .ctx
            .cache
            .stage(&store, &inputs, self.work_dir, disk)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                self.note(&format!("staging inputs failed: {e}")).await;
                return (Cause::new(e.cause_kind(), e.to_string()), -1, vec![]);
            }
        };
        staged.stats().add_to(&mut self.usage);
        for w in staged.warnings() {
            self.note(w).await;
        }
        self.staged = Some(staged);
        let input_paths: HashSet<String> = inputs.iter().map(|i| i.dest_path.clone()).collect();
        if !a.cwl_invocation.is_empty() {
            return self.body_cwl(&store).await;
        }

        let time_limit = a.time_limit.and_then(|d| Duration::try_from(d).ok());
        let ex = match self
            .run_command(CommandSpec {
                argv: &a.argv,
                image: &a.image,
                clean_env: None,
                extra_env: &a.env,
                cwd: self.work_dir,
                redirects: exec::Redirects::default(),
                time_limit,
            })
            .await
        {
            Ok(ex) => ex,
            Err(c) => return (c, -1, vec![]),
        };
        let exit_code = ex.status.code().unwrap_or(-1);
        let ended = match (self.kill_cause(&ex), ex.status.code()) {
            (Some(c), _) => Some(c),
            (None, Some(0)) => None,
            (None, code) => Some(Cause::exit_code(code.unwrap_or(-1))),
        };
        if let Some(c) = ended {
            self.note(&format!("job ended: {}", c.message)).await;
            return (c, exit_code, vec![]);
        }

        // --- uploading -----------------------------------------------------
        let _ = self.phase.send(AgentPhase::Uploading);
        match outputs::collect(
            &store,
            &self.ctx.cache,
            self.work_dir,
            &a.output_prefix,
            &a.outputs,
            &input_paths,
        )
        .await
        {
            Ok((outs, bytes)) => {
                self.usage.bytes_uploaded = bytes;
                (Cause::succeeded(), 0, outs)
            }
            Err(e @ outputs::OutputError::Missing { .. })
            | Err(e @ outputs::OutputError::BadPattern { .. }) => {
                self.note(&e.to_string()).await;
                (
                    Cause::new(CauseKind::OutputMissing, e.to_string()),
                    0,
                    vec![],
                )
            }
            Err(e) => {
                self.note(&e.to_string()).await;
                (
                    Cause::new(CauseKind::StagingFailed, e.to_string()),
                    0,
                    vec![],
                )
            }
        }
    }
}

/// A command an attempt runs: the workflow's, or a CWL tool's.
pub(crate) struct CommandSpec<'c> {
    /// The argument vector.
    pub(crate) argv: &'c [String],
    /// Container image; empty to run on the host.
    pub(crate) image: &'c str,
    /// The command's whole environment (a CWL tool's); `None` for the
    /// agent's own minus its secrets, plus `extra_env`.
    pub(crate) clean_env: Option<&'c std::collections::BTreeMap<String, String>>,
    /// Variables added to the agent's environment (when `clean_env` is
    /// `None`).
    pub(crate) extra_env: &'c HashMap<String, String>,
    /// The working directory (inside the work directory).
    pub(crate) cwd: &'c Path,
    /// Standard streams to files.
    pub(crate) redirects: exec::Redirects,
    /// Kill after this long.
    pub(crate) time_limit: Option<Duration>,
}

impl Run<'_> {
    /// Pulls the image (if any), then runs the command with the attempt's
    /// log, kill and limits. An error is the attempt's cause (the command
    /// did not start).
    pub(crate) async fn run_command(
        &mut self,
        c: CommandSpec<'_>,
    ) -> Result<exec::Execution, Cause> {
        let mut cmd = if c.image.is_empty() {
            let Some((program, args)) = c.argv.split_first() else {
                return Err(Cause::config_error("the job has an empty command"));
            };
            let mut cmd = Command::new(program);
            cmd.args(args);
            if let Some(env) = c.clean_env {
                cmd.env_clear().envs(env);
            }
            cmd
        } else {
            let images = match self.ctx.image_cache().await {
                Ok(i) => i,
                Err(e) => return Err(Cause::new(e.cause_kind(), e.cause_message())),
            };
            self.note(&format!("pulling image {}", c.image)).await;
            // Lines while waiting for another job's pull of the same image.
            let sink = self.streamer.as_ref().map(|s| s.sink());
            let waiting = move |line: String| {
                if let Some(sink) = sink.clone() {
                    tokio::spawn(async move { sink.note(&line).await });
                }
            };
            let pulled = match images.pull(c.image, &waiting).await {
                Ok(p) => p,
                Err(e) => {
                    self.note(&format!("image pull failed: {}", e.cause_message()))
                        .await;
                    return Err(Cause::new(e.cause_kind(), e.cause_message()));
                }
            };
            let mut cc = images.exec_command(&pulled.path, self.work_dir, c.argv);
            // The whole work directory is bound; the command starts in
            // `cwd` within it.
            if let Some(i) = cc.args.iter().position(|a| a == "--pwd")
                && let Some(slot) = cc.args.get_mut(i + 1)
            {
                *slot = c.cwd.as_os_str().to_os_string();
            }
            let mut cmd = Command::new(&cc.program);
            cmd.args(&cc.args);
            if let Some(env) = c.clean_env {
                cmd.env_clear();
                if let Some(path) = std::env::var_os("PATH") {
                    cmd.env("PATH", path);
                }
                cmd.envs(env);
            }
            cmd.envs(cc.env.iter().map(|(k, v)| (k, v)));
            cmd
        };
        if c.clean_env.is_none() {
            // The job gets the agent's environment minus the agent's secrets.
            cmd.env_remove("TOIL_AGENT_TOKEN")
                .env_remove("TOIL_AGENT_ID")
                .envs(c.extra_env)
                .env("TOIL_WORKDIR", &self.ctx.args.work_dir);
        }
        cmd.current_dir(c.cwd);

        let _ = self.phase.send(AgentPhase::Running);
        self.started = Some(chrono::Utc::now());
        let Some(sink) = self.streamer.as_ref().map(|s| s.sink()) else {
            return Err(Cause::config_error("no log stream"));
        };
        let ex =
            match exec::run_redirected(cmd, sink, c.time_limit, self.kill.clone(), &c.redirects)
                .await
            {
                Ok(ex) => ex,
                Err(e) => {
                    let msg = format!(
                        "cannot run {:?}: {e}",
                        c.argv.first().map(String::as_str).unwrap_or("")
                    );
                    self.note(&msg).await;
                    return Err(Cause::config_error(msg));
                }
            };
        self.usage.peak_rss_bytes = ex.peak_rss;
        self.usage.cpu_time = prost_types::Duration::try_from(ex.cpu_time).ok();
        self.usage.wall_time = prost_types::Duration::try_from(ex.wall).ok();
        Ok(ex)
    }

    /// Why a command that did not simply exit ended: killed by the agent
    /// (time limit, leader, agent stopping), by the kernel (out of memory)
    /// or by another signal. `None` when it exited with a status.
    pub(crate) fn kill_cause(&self, ex: &exec::Execution) -> Option<Cause> {
        use std::os::unix::process::ExitStatusExt;
        match (&ex.killed, ex.status.code(), ex.status.signal()) {
            (Some(KillReason::Deadline(t)), _, _) => Some(Cause::new(
                CauseKind::DeadlineExceeded,
                format!(
                    "ran longer than its time limit of {}",
                    humantime::format_duration(*t)
                ),
            )),
            (Some(KillReason::Leader(r)), _, _) => Some(Cause::cancelled(r.clone())),
            (Some(KillReason::Agent(r)), _, _) => Some(Cause::agent_lost(r.clone())),
            (None, Some(_), _) => None,
            (None, None, Some(9)) => {
                let asked = self.a.resources.as_ref().map_or(0, |r| r.memory_bytes);
                Some(Cause::with_code(
                    CauseKind::OomKilled,
                    137,
                    format!(
                        "killed by SIGKILL, most likely by the out-of-memory killer (the job asked for {} MiB and peaked at {} MiB)",
                        asked >> 20,
                        ex.peak_rss >> 20
                    ),
                ))
            }
            (None, None, sig) => Some(Cause::signaled(sig.unwrap_or(0))),
        }
    }
}

/// Reports the attempt's phase until aborted; turns kill orders, a lost
/// leader and SIGTERM into kills.
async fn heartbeat(
    ctx: Arc<AgentCtx>,
    attempt_id: String,
    token: String,
    phase: watch::Receiver<AgentPhase>,
    kill: watch::Sender<Option<KillReason>>,
) {
    let args = &ctx.args;
    loop {
        let req = SynchronizeRequest {
            agent_id: args.agent_id.clone(),
            agent_token: args.agent_token.clone(),
            phase: *phase.borrow() as i32,
            attempt_id: attempt_id.clone(),
            attempt_token: token.clone(),
            result: None,
            capacity: None,
            info: None,
        };
        let r = tokio::select! {
            r = ctx.leader.sync(req) => r,
            _ = ctx.terminate.cancelled() => {
                let _ = kill.send(Some(KillReason::Agent(
                    "the agent was stopped by SIGTERM (pod deleted, node drained, or leader shutting down)".into(),
                )));
                return;
            }
        };
        match r {
            Ok(resp) => {
                if let Some(Action::Kill(k)) = resp.action {
                    let _ = kill.send(Some(KillReason::Leader(if k.reason.is_empty() {
                        "cancelled by the leader".into()
                    } else {
                        k.reason
                    })));
                    return;
                }
            }
            Err(ClientError::LeaseExpired { .. }) => {
                let _ = kill.send(Some(KillReason::Agent(format!(
                    "lost contact with the leader at {}",
                    ctx.leader.address()
                ))));
                ctx.terminate.cancel();
                return;
            }
            Err(ClientError::Refused(s)) => {
                let _ = kill.send(Some(KillReason::Leader(format!(
                    "the leader no longer knows this attempt: {}",
                    s.message()
                ))));
                return;
            }
        }
    }
}

/// Removes leftovers of attempts whose agents died (work directories and
/// spools older than a day), so a node's disk does not fill up over time.
/// Runs at most once an hour per node: a marker file's age says when the
/// last sweep was, so the common case costs one `stat`.
pub fn sweep_old_jobs(work_dir: &Path) {
    let jobs = work_dir.join("jobs");
    let marker = work_dir.join(".jobs-swept");
    let recent = std::fs::metadata(&marker)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < Duration::from_secs(3600));
    if recent {
        return;
    }
    let _ = std::fs::write(&marker, b"");
    let Ok(entries) = std::fs::read_dir(&jobs) else {
        return;
    };
    let day = Duration::from_secs(24 * 3600);
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > day);
        if old {
            let p: PathBuf = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}
