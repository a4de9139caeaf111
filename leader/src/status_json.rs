//! `toil-leader status --json`: the workflow's state as one JSON object,
//! for scripts. The same figures as the text `status` (and as `/metrics`),
//! from the running leader or, when none runs, from the job store.
//!
//! The fields are documented in docs/metrics.md ("status --json"); the
//! object carries `format` so that a script can tell if a later version
//! changed the meaning of one (fields are only ever added within a
//! format).

use std::collections::BTreeMap;

use serde::Serialize;
use toil_proto::JOB_STATES;
use toil_proto::v1::{
    AttemptSummary, Cause, CauseKind, Job, JobState, ResourceUsage, WorkflowState,
};

use crate::metrics::{cause_label, state_label};

/// The format of the object; raised only if a field changes meaning.
pub const FORMAT: u32 = 1;

/// The whole status.
#[derive(Debug, Serialize)]
pub struct Status {
    /// [`FORMAT`].
    pub format: u32,
    /// The workflow's name from its file.
    pub workflow: String,
    /// Its unique id (chosen when the job store was created).
    pub workflow_id: String,
    /// `running`, `succeeded`, `failed` or `cancelled` (`running` also for
    /// a workflow whose leader stopped before it ended).
    pub state: &'static str,
    /// When it first started (RFC 3339, UTC).
    pub started_at: Option<String>,
    /// Where the figures come from: `leader` (the running leader, over its
    /// API) or `job_store` (replayed from the journal: no leader runs).
    pub source: &'static str,
    /// The running leader, if one runs.
    pub leader: Option<Leader>,
    /// With no leader and unfinished jobs: the command that resumes it.
    pub resume: Option<String>,
    /// Jobs per state, every state present (zeros included).
    pub counts: BTreeMap<&'static str, u64>,
    /// All jobs.
    pub jobs_total: usize,
    /// All attempts, ended or running.
    pub attempts_total: usize,
    /// Totals over every ended attempt.
    pub usage: Usage,
    /// Every job, in workflow order.
    pub jobs: Vec<JobRow>,
}

/// The running leader.
#[derive(Debug, Serialize)]
pub struct Leader {
    /// Its process id, on `host`.
    pub pid: u32,
    /// The machine it runs on.
    pub host: String,
    /// Its epoch: how many leaders have owned the job store.
    pub epoch: u64,
    /// Its gRPC address (`HOST:PORT`, TLS).
    pub address: String,
    /// The web view's URL with its token (`?token=`), when the leader
    /// serves one and this user can read its private directory (the user
    /// who started it, on its machine); else `None`.
    pub web_url: Option<String>,
}

/// Usage figures, summed over attempts (the largest for peak memory).
#[derive(Debug, Default, Serialize)]
pub struct Usage {
    /// CPU time, in seconds.
    pub cpu_seconds: f64,
    /// The largest peak resident memory of any one attempt, in bytes.
    pub peak_rss_bytes: u64,
    /// Inputs served from a node's shared cache.
    pub cache_hits: u64,
    /// Inputs not in the cache (downloaded).
    pub cache_misses: u64,
    /// Bytes downloaded from the job store.
    pub bytes_downloaded: u64,
    /// Bytes uploaded to the job store.
    pub bytes_uploaded: u64,
}

/// One job.
#[derive(Debug, Serialize)]
pub struct JobRow {
    /// Its id: `name`, `name[i]` for a scatter instance, `parent/name` for
    /// a job added while the workflow ran.
    pub id: String,
    /// Its state (as in `counts`).
    pub state: &'static str,
    /// Ids of the jobs it waits for.
    pub depends_on: Vec<String>,
    /// What it asks for (as it would be launched now: raised after an
    /// out-of-memory kill).
    pub requested: Requested,
    /// Its container image, if any.
    pub image: Option<String>,
    /// User retries spent and allowed.
    pub retries_used: u32,
    /// User retries allowed.
    pub retries_allowed: u32,
    /// For a blocked job, the failed job it waited for.
    pub blocked_by: Option<String>,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptRow>,
}

/// What a job asks for.
#[derive(Debug, Serialize)]
pub struct Requested {
    /// CPU in cores (`0.5` is half a core).
    pub cores: f64,
    /// Memory, in bytes.
    pub memory_bytes: u64,
    /// Scratch disk, in bytes.
    pub disk_bytes: u64,
    /// Whole GPUs.
    pub gpus: u32,
    /// May run on preemptible capacity.
    pub preemptible: bool,
}

/// One attempt.
#[derive(Debug, Serialize)]
pub struct AttemptRow {
    /// Its number, from 1.
    pub attempt: u32,
    /// Its id (`JOB.N`); `logs LOC JOB --attempt N` prints its log.
    pub id: String,
    /// Why it ended; `None` while it runs.
    pub cause: Option<CauseRow>,
    /// When the leader launched it (RFC 3339, UTC).
    pub launched_at: Option<String>,
    /// When its command started, by its agent's clock.
    pub started_at: Option<String>,
    /// When it ended.
    pub ended_at: Option<String>,
    /// From launch to end (or to now, for a running attempt: `None`), in
    /// seconds.
    pub seconds: Option<f64>,
    /// Where it ran: `local pid N`, `pod P on NODE`.
    pub placement: Option<String>,
    /// The memory it was given, in bytes (the request, raised after an
    /// out-of-memory kill).
    pub memory_bytes: u64,
    /// What its agent measured; `None` when it never reported.
    pub usage: Option<AttemptUsage>,
}

/// Why an attempt ended.
#[derive(Debug, Serialize)]
pub struct CauseRow {
    /// The kind, as `/metrics` labels it: `succeeded`, `exit_code`,
    /// `oom_killed`, `agent_lost`...
    pub kind: &'static str,
    /// The exit status for `exit_code`, the signal for `signaled`, else 0.
    pub code: i32,
    /// In words, as the text `status` shows it.
    pub text: String,
}

/// What an agent measured about an attempt.
#[derive(Debug, Serialize)]
pub struct AttemptUsage {
    /// CPU time, in seconds.
    pub cpu_seconds: f64,
    /// The command's wall time, in seconds.
    pub wall_seconds: f64,
    /// Peak resident memory of the job's processes, in bytes.
    pub peak_rss_bytes: u64,
    /// `peak_rss_bytes / memory_bytes`: above 1 the job used more than it
    /// was given; far below, it asks for too much. `None` with no memory
    /// given.
    pub peak_rss_of_memory: Option<f64>,
    /// Inputs served from the node cache.
    pub cache_hits: u32,
    /// Inputs downloaded.
    pub cache_misses: u32,
    /// Bytes downloaded from the job store.
    pub bytes_downloaded: u64,
    /// Bytes uploaded to the job store.
    pub bytes_uploaded: u64,
}

/// What the JSON is made of, wherever it came from.
pub struct Source<'a> {
    /// The workflow's name.
    pub name: &'a str,
    /// Its id.
    pub workflow_id: &'a str,
    /// Its state.
    pub state: WorkflowState,
    /// When it first started, ms since the Unix epoch (0: unknown).
    pub started_ms: i64,
    /// The running leader, if any.
    pub leader: Option<Leader>,
    /// The command that resumes it, if it needs one.
    pub resume: Option<String>,
    /// Its jobs.
    pub jobs: &'a [Job],
    /// Usage totals.
    pub usage: &'a ResourceUsage,
}

fn seconds(d: &Option<prost_types::Duration>) -> f64 {
    d.as_ref()
        .map_or(0.0, |d| d.seconds as f64 + f64::from(d.nanos) / 1e9)
}

fn millis(t: &Option<prost_types::Timestamp>) -> Option<i64> {
    t.as_ref()
        .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

fn rfc3339(ms: Option<i64>) -> Option<String> {
    let ms = ms.filter(|&m| m > 0)?;
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// The name of a workflow state.
pub fn workflow_state_label(s: WorkflowState) -> &'static str {
    match s {
        WorkflowState::Running => "running",
        WorkflowState::Succeeded => "succeeded",
        WorkflowState::Failed => "failed",
        WorkflowState::Cancelled => "cancelled",
        WorkflowState::Unspecified => "unknown",
    }
}

fn cause_row(c: &Cause) -> CauseRow {
    CauseRow {
        kind: cause_label(CauseKind::try_from(c.kind).unwrap_or(CauseKind::Unspecified)),
        code: c.code,
        text: c.to_string(),
    }
}

fn attempt_row(n: usize, a: &AttemptSummary) -> AttemptRow {
    let launched = millis(&a.launched_at);
    let ended = millis(&a.ended_at);
    AttemptRow {
        attempt: n as u32 + 1,
        id: a.attempt_id.clone(),
        cause: a.cause.as_ref().map(cause_row),
        launched_at: rfc3339(launched),
        started_at: rfc3339(millis(&a.started_at)),
        ended_at: rfc3339(ended),
        seconds: match (launched, ended) {
            (Some(l), Some(e)) if e >= l => Some((e - l) as f64 / 1e3),
            _ => None,
        },
        placement: (!a.placement.is_empty()).then(|| a.placement.clone()),
        memory_bytes: a.memory_bytes,
        usage: a.usage.as_ref().map(|u| AttemptUsage {
            cpu_seconds: seconds(&u.cpu_time),
            wall_seconds: seconds(&u.wall_time),
            peak_rss_bytes: u.peak_rss_bytes,
            peak_rss_of_memory: (a.memory_bytes > 0)
                .then(|| u.peak_rss_bytes as f64 / a.memory_bytes as f64),
            cache_hits: u.cache_hits,
            cache_misses: u.cache_misses,
            bytes_downloaded: u.bytes_downloaded,
            bytes_uploaded: u.bytes_uploaded,
        }),
    }
}

fn job_row(j: &Job) -> JobRow {
    let r = j.resources.unwrap_or_default();
    JobRow {
        id: j.job_id.clone(),
        state: state_label(JobState::try_from(j.state).unwrap_or(JobState::Unspecified)),
        depends_on: j.depends_on.clone(),
        requested: Requested {
            cores: f64::from(r.millicores) / 1000.0,
            memory_bytes: r.memory_bytes,
            disk_bytes: r.disk_bytes,
            gpus: r.gpus,
            preemptible: r.preemptible,
        },
        image: (!j.image.is_empty()).then(|| j.image.clone()),
        retries_used: j.retries_used,
        retries_allowed: j.retries_allowed,
        blocked_by: (!j.blocked_by.is_empty()).then(|| j.blocked_by.clone()),
        attempts: j
            .attempts
            .iter()
            .enumerate()
            .map(|(i, a)| attempt_row(i, a))
            .collect(),
    }
}

/// Builds the object.
pub fn build(src: Source<'_>) -> Status {
    let mut counts: BTreeMap<&'static str, u64> =
        JOB_STATES.iter().map(|&s| (state_label(s), 0)).collect();
    for j in src.jobs {
        let s = JobState::try_from(j.state).unwrap_or(JobState::Unspecified);
        *counts.entry(state_label(s)).or_default() += 1;
    }
    let u = src.usage;
    Status {
        format: FORMAT,
        workflow: src.name.to_string(),
        workflow_id: src.workflow_id.to_string(),
        state: workflow_state_label(src.state),
        started_at: rfc3339(Some(src.started_ms)),
        source: if src.leader.is_some() {
            "leader"
        } else {
            "job_store"
        },
        leader: src.leader,
        resume: src.resume,
        counts,
        jobs_total: src.jobs.len(),
        attempts_total: src.jobs.iter().map(|j| j.attempts.len()).sum(),
        usage: Usage {
            cpu_seconds: seconds(&u.cpu_time),
            peak_rss_bytes: u.peak_rss_bytes,
            cache_hits: u64::from(u.cache_hits),
            cache_misses: u64::from(u.cache_misses),
            bytes_downloaded: u.bytes_downloaded,
            bytes_uploaded: u.bytes_uploaded,
        },
        jobs: src.jobs.iter().map(job_row).collect(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use toil_proto::v1::Resources;

    #[test]
    fn a_job_with_a_retried_attempt_reads_as_scripts_need_it() {
        let ts = |ms: i64| {
            Some(prost_types::Timestamp {
                seconds: ms / 1000,
                nanos: ((ms % 1000) * 1_000_000) as i32,
            })
        };
        let job = Job {
            job_id: "flaky".into(),
            state: JobState::Succeeded as i32,
            resources: Some(Resources {
                millicores: 500,
                memory_bytes: 1000,
                ..Default::default()
            }),
            attempts: vec![
                AttemptSummary {
                    attempt_id: "flaky.1".into(),
                    cause: Some(Cause::exit_code(3)),
                    launched_at: ts(1_700_000_000_000),
                    ended_at: ts(1_700_000_001_500),
                    placement: "local pid 7".into(),
                    memory_bytes: 1000,
                    usage: Some(ResourceUsage {
                        peak_rss_bytes: 250,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                AttemptSummary {
                    attempt_id: "flaky.2".into(),
                    launched_at: ts(1_700_000_002_000),
                    ..Default::default()
                },
            ],
            retries_used: 1,
            retries_allowed: 1,
            ..Default::default()
        };
        let usage = ResourceUsage::default();
        let s = build(Source {
            name: "w",
            workflow_id: "id",
            state: WorkflowState::Running,
            started_ms: 0,
            leader: None,
            resume: Some("toil-leader run w.yaml --restart".into()),
            jobs: std::slice::from_ref(&job),
            usage: &usage,
        });
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["source"], "job_store");
        assert_eq!(v["counts"]["succeeded"], 1);
        assert_eq!(v["counts"]["failed"], 0);
        assert_eq!(v["attempts_total"], 2);
        assert_eq!(v["started_at"], serde_json::Value::Null);
        let j = &v["jobs"][0];
        assert_eq!(j["requested"]["cores"], 0.5);
        let a = &j["attempts"][0];
        assert_eq!(a["cause"]["kind"], "exit_code");
        assert_eq!(a["cause"]["code"], 3);
        assert_eq!(a["cause"]["text"], "exit code 3");
        assert_eq!(a["launched_at"], "2023-11-14T22:13:20.000Z");
        assert_eq!(a["seconds"], 1.5);
        assert_eq!(a["usage"]["peak_rss_of_memory"], 0.25);
        let running = &j["attempts"][1];
        assert_eq!(running["cause"], serde_json::Value::Null);
        assert_eq!(running["seconds"], serde_json::Value::Null);
        assert_eq!(running["placement"], serde_json::Value::Null);
    }
}
