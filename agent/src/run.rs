//! The agent's main loop: report idle, take an assignment, run it, report
//! the result until the leader has recorded it, and either take the next
//! job (pod reuse) or exit.

use std::collections::HashMap;
use std::sync::Arc;

use toil_proto::v1::synchronize_response::Action;
use toil_proto::v1::{
    AgentInfo, AgentPhase, Assignment, AttemptResult, Resources, SynchronizeRequest,
    SynchronizeResponse,
};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::attempt::{AgentCtx, sweep_old_jobs};
use crate::cache::{CacheConfig, NodeCache};
use crate::client::{ClientError, Leader};
use crate::config::RunArgs;

/// How the agent ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// The leader said so.
    Done(String),
    /// SIGTERM.
    Terminated,
    /// The leader was unreachable past the lease, or refused us.
    LeaderLost(String),
}

/// Runs the agent until the leader lets it go.
pub async fn run(args: RunArgs, terminate: CancellationToken) -> anyhow::Result<Exit> {
    args.validate().map_err(anyhow::Error::msg)?;
    let leader = Leader::new(&args.leader, args.leader_cert_sha256.as_deref(), args.lease)
        .map_err(anyhow::Error::msg)?;
    let cache = NodeCache::open(
        &args.work_dir.join("cache"),
        CacheConfig {
            max_bytes: args.cache_max_size,
            disabled: args.disable_caching,
            sweep_interval: std::time::Duration::from_secs(60),
            lock_timeout: args.cache_lock_timeout,
            staging_timeout: args.staging_timeout,
            ..CacheConfig::default()
        },
    )?;
    sweep_old_jobs(&args.work_dir);
    let work_dirs = crate::workdir::WorkDirs::new(args.work_dir.join("jobs"));
    let ctx = Arc::new(AgentCtx {
        work_dirs,
        args,
        leader,
        cache,
        stores: Mutex::new(HashMap::new()),
        images: Mutex::new(None),
        terminate: terminate.clone(),
    });
    let mut report = idle(&ctx.args, true);
    // The attempt whose DONE report the leader has not confirmed yet, while
    // its result is not in the job store.
    let mut unstored: Option<Assignment> = None;
    loop {
        if terminate.is_cancelled() && report.phase == AgentPhase::Idle as i32 {
            return Ok(Exit::Terminated);
        }
        let resp = tokio::select! {
            r = report_result(&ctx, &report, unstored.take()) => r,
            _ = terminate.cancelled(), if report.phase == AgentPhase::Idle as i32 => {
                return Ok(Exit::Terminated);
            }
        };
        let resp = match resp {
            Ok(r) => r,
            Err(ClientError::LeaseExpired { .. }) => {
                return Ok(Exit::LeaderLost(format!(
                    "the leader at {} is unreachable",
                    ctx.leader.address()
                )));
            }
            Err(ClientError::Refused(s)) => {
                if report.phase == AgentPhase::Done as i32 {
                    // The leader no longer knows the attempt (a new leader,
                    // or a duplicate report); the result is in the job store.
                    tracing::warn!(error = %s.message(), "the leader refused the result report");
                }
                return Ok(Exit::LeaderLost(s.message().to_string()));
            }
        };
        match next(&ctx, &mut report, &mut unstored, resp, &terminate).await {
            Some(exit) => return Ok(exit),
            None => continue,
        }
    }
}

/// Acts on a response; `report` becomes the next report to send.
async fn next(
    ctx: &Arc<AgentCtx>,
    report: &mut SynchronizeRequest,
    unstored: &mut Option<Assignment>,
    resp: SynchronizeResponse,
    terminate: &CancellationToken,
) -> Option<Exit> {
    let exiting = matches!(resp.action, Some(Action::Exit(_)));
    if report.phase == AgentPhase::Done as i32 && !resp.result_recorded && !exiting {
        // Keep resending the result until the leader has it. (An Exit is
        // obeyed anyway: the result is in the job store, where a leader
        // that restarts finds it.)
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        return None;
    }
    match resp.action {
        Some(Action::Assignment(a)) => {
            let result = run_assignment(ctx, &a).await;
            *report = done(&ctx.args, &a, result);
            *unstored = Some(a);
            None
        }
        Some(Action::Exit(e)) => Some(if terminate.is_cancelled() {
            Exit::Terminated
        } else {
            Exit::Done(e.reason)
        }),
        Some(Action::Continue(_)) | Some(Action::Kill(_)) | None => {
            if terminate.is_cancelled() {
                return Some(Exit::Terminated);
            }
            *report = idle(&ctx.args, false);
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            None
        }
    }
}

/// How long the first DONE report may wait for the leader's confirmation
/// before the agent stores the result in the job store itself.
const CONFIRM_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Sends `report`. For a DONE report about `unstored`, the first try waits
/// briefly for the leader to confirm the result (which it does once the
/// result is in its journal); if it does not (unreachable, slow, or a
/// refusal), the result goes to the job store before anything else, where a
/// restarted leader finds it, and reporting goes on as usual.
async fn report_result(
    ctx: &Arc<AgentCtx>,
    report: &SynchronizeRequest,
    unstored: Option<Assignment>,
) -> Result<SynchronizeResponse, ClientError> {
    let Some(a) = unstored else {
        return ctx.leader.sync(report.clone()).await;
    };
    let first = ctx.leader.sync_once(report.clone(), CONFIRM_WAIT).await;
    if let Ok(resp) = &first
        && resp.result_recorded
    {
        return first.map_err(ClientError::Refused);
    }
    if let Some(result) = &report.result {
        ctx.store_result(&a, result).await;
    }
    match first {
        Ok(resp) => Ok(resp),
        Err(s) if !crate::client::retryable(&s) => Err(crate::client::refused(s)),
        Err(_) => ctx.leader.sync(report.clone()).await,
    }
}

/// Runs one attempt inside its span, so every event of the attempt (and of
/// the tasks it spawns) carries the attempt's id.
async fn run_assignment(ctx: &Arc<AgentCtx>, a: &Assignment) -> AttemptResult {
    let span = tracing::info_span!("attempt", attempt = %a.attempt_id, job = %a.job_id);
    async {
        tracing::info!("starting");
        let r = ctx.run_attempt(a).await;
        tracing::info!(cause = ?r.cause.as_ref().map(|c| c.kind()), "finished");
        r
    }
    .instrument(span)
    .await
}

fn idle(args: &RunArgs, first: bool) -> SynchronizeRequest {
    SynchronizeRequest {
        agent_id: args.agent_id.clone(),
        agent_token: args.agent_token.clone(),
        phase: AgentPhase::Idle as i32,
        attempt_id: String::new(),
        attempt_token: String::new(),
        result: None,
        capacity: Some(Resources {
            millicores: args.millicores,
            memory_bytes: args.memory,
            disk_bytes: args.disk,
            gpus: args.gpus,
            preemptible: args.preemptible,
        }),
        info: first.then(|| AgentInfo {
            hostname: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            pid: std::process::id(),
            pod_name: args.pod_name.clone(),
            node_name: args.node_name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }),
    }
}

fn done(args: &RunArgs, a: &Assignment, result: AttemptResult) -> SynchronizeRequest {
    SynchronizeRequest {
        agent_id: args.agent_id.clone(),
        agent_token: args.agent_token.clone(),
        phase: AgentPhase::Done as i32,
        attempt_id: a.attempt_id.clone(),
        attempt_token: a.attempt_token.clone(),
        result: Some(result),
        capacity: None,
        info: None,
    }
}

/// Runs the agent as a command: installs SIGTERM/SIGINT handling and maps
/// the outcome to an exit code: 0 when the leader lets it go, 143 after
/// SIGTERM, 2 when the leader is lost, 64 on bad configuration, 1 on other
/// errors.
pub async fn main(args: RunArgs) -> u8 {
    if let Err(e) = args.validate() {
        eprintln!("toil-agent: {e}");
        return 64;
    }
    let terminate = CancellationToken::new();
    let t = terminate.clone();
    tokio::spawn(async move {
        if crate::signals::stop_signal().await.is_ok() {
            t.cancel();
        }
    });
    match run(args, terminate).await {
        Ok(Exit::Done(reason)) => {
            tracing::debug!(%reason, "exiting");
            0
        }
        Ok(Exit::Terminated) => 143,
        Ok(Exit::LeaderLost(why)) => {
            eprintln!("toil-agent: {why}; exiting");
            2
        }
        Err(e) => {
            eprintln!("toil-agent: {e:#}");
            1
        }
    }
}
