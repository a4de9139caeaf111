//! The report to keep: `toil-leader report LOC -o report.html`, and
//! `toil-leader run --report FILE` at the end of a run.
//!
//! One self-contained HTML file (inline CSS and SVG, a few lines of inline
//! script for sorting tables, nothing fetched from anywhere) with the
//! workflow's timeline, the right-sizing view (used against requested CPU
//! and memory, per job name), the slowest jobs, the failures with their
//! causes and log tails, and the cache and job-store figures.
//!
//! Everything comes from the job store: the journal replayed into a
//! [`Core`] (as `status` does once the leader is gone) and the stored logs.
//! The work is split in three so each part can be tested alone:
//! - here: a [`Snapshot`] copied out of the core, and the log tails read
//!   from the store for the failures it shows;
//! - `svg`: the timeline and the box plots, drawn in Rust;
//! - `html`: the page around them, with every text from a job escaped.

mod html;
mod svg;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use toil_jobstore::JobStore;
use toil_proto::v1::{Cause, CauseKind, JobState, WorkflowState};

use crate::cli::ReportArgs;
use crate::core::{Core, JobIdx, Usage};

pub use html::escape;

/// How many failed jobs, and how many retried attempts, get a log tail.
const MAX_TAILS: usize = 25;
/// Lines of log shown for each failure.
const TAIL_LINES: usize = 20;
/// Bytes read from the end of a log to find those lines.
const TAIL_BYTES: u64 = 16 * 1024;

/// One attempt, as the report shows it.
#[derive(Clone, Debug)]
pub struct AttemptRow {
    /// Attempt number, from 1.
    pub n: u32,
    /// Memory given to the attempt, bytes.
    pub memory: u64,
    /// Launch time, ms since the Unix epoch.
    pub launched_ms: i64,
    /// End time (0 while running).
    pub ended_ms: i64,
    /// When the command started (0 if unknown).
    pub started_ms: i64,
    /// Node, pod or process it ran on.
    pub placement: String,
    /// Why it ended (`None` while running).
    pub cause: Option<Cause>,
    /// What the agent measured.
    pub usage: Usage,
}

/// How an attempt turned out, which decides its colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// It succeeded.
    Ok,
    /// It failed and the job was tried again.
    Retried,
    /// It failed and was the job's last attempt.
    Failed,
    /// It was cancelled.
    Cancelled,
    /// It is still running (or was when the leader stopped).
    Running,
}

impl Outcome {
    /// The CSS class (and the legend's word).
    pub fn class(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Retried => "retried",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
            Outcome::Running => "running",
        }
    }

    /// Every outcome, in legend order.
    pub const ALL: [Outcome; 5] = [
        Outcome::Ok,
        Outcome::Retried,
        Outcome::Failed,
        Outcome::Cancelled,
        Outcome::Running,
    ];
}

/// One job, as the report shows it.
#[derive(Clone, Debug)]
pub struct JobRow {
    /// Its id (`name`, `name[3]`, `parent/child`).
    pub id: String,
    /// The job name it is grouped under: the id without scatter indexes.
    pub group: String,
    /// Its state.
    pub state: JobState,
    /// Requested CPU, millicores.
    pub millicores: u32,
    /// Requested memory as it would be launched now, bytes.
    pub memory: u64,
    /// Its attempts, in order.
    pub attempts: Vec<AttemptRow>,
    /// The failed job that blocked this one.
    pub blocked_by: Option<String>,
}

impl JobRow {
    /// How attempt `i` (0-based) turned out.
    pub fn outcome(&self, i: usize) -> Outcome {
        let a = &self.attempts[i];
        let last = i + 1 == self.attempts.len();
        match a.cause.as_ref().map(Cause::kind) {
            None => {
                if last && !self.state.is_final() {
                    Outcome::Running
                } else {
                    // Ended with no recorded cause: counts as lost.
                    Outcome::Retried
                }
            }
            Some(CauseKind::Succeeded) => Outcome::Ok,
            Some(CauseKind::Cancelled) => Outcome::Cancelled,
            Some(_) if last && self.state == JobState::Failed => Outcome::Failed,
            Some(_) if last && self.state == JobState::Cancelled => Outcome::Cancelled,
            Some(_) => Outcome::Retried,
        }
    }
}

/// Everything the report shows, copied out of the core.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The workflow's name.
    pub name: String,
    /// Its state.
    pub state: WorkflowState,
    /// A note for the header (a live leader, an interrupted run).
    pub note: Option<String>,
    /// When the report was made, ms since the Unix epoch.
    pub generated_ms: i64,
    /// When the workflow first started, ms (0 if unknown).
    pub created_ms: i64,
    /// Every job.
    pub jobs: Vec<JobRow>,
    /// Log tails by (job index in `jobs`, attempt number).
    pub tails: HashMap<(usize, u32), String>,
}

/// The id of a job without its scatter indexes: `part[3]` and
/// `part[3]/child` are `part` and `part/child`.
pub fn group_of(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    let mut rest = id;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        match rest[open + 1..].find(']') {
            Some(close)
                if rest[open + 1..open + 1 + close]
                    .bytes()
                    .all(|b| b.is_ascii_digit()) =>
            {
                rest = &rest[open + 2 + close..];
            }
            _ => {
                out.push('[');
                rest = &rest[open + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

impl Snapshot {
    /// Copies what the report needs out of `core`.
    pub fn from_core(core: &Core, name: &str, created_ms: i64) -> Snapshot {
        let jobs = (0..core.job_count() as JobIdx)
            .map(|j| {
                let id = core.job_id(j);
                let req = core.request(j);
                JobRow {
                    group: group_of(&id),
                    state: core.state(j),
                    millicores: req.millicores,
                    memory: req.memory,
                    attempts: core
                        .attempts(j)
                        .iter()
                        .enumerate()
                        .map(|(i, a)| AttemptRow {
                            n: i as u32 + 1,
                            memory: a.memory,
                            launched_ms: a.launched_ms,
                            ended_ms: a.ended_ms,
                            started_ms: a.started_ms,
                            placement: a.placement.to_string(),
                            cause: a.cause.clone(),
                            usage: a.usage,
                        })
                        .collect(),
                    blocked_by: core.blocked_by(j).map(|b| core.job_id(b)),
                    id,
                }
            })
            .collect();
        Snapshot {
            name: name.to_string(),
            state: core.workflow_state(),
            note: None,
            generated_ms: toil_jobstore::state::now_ms(),
            created_ms,
            jobs,
            tails: HashMap::new(),
        }
    }

    /// The attempts whose log tails the report shows: the last attempt of
    /// each failed job, then attempts that failed and were retried, at
    /// most [`MAX_TAILS`] of each, earliest end first.
    pub fn tail_wanted(&self) -> Vec<(usize, u32)> {
        let mut failed = Vec::new();
        let mut retried = Vec::new();
        for (ji, job) in self.jobs.iter().enumerate() {
            for (i, a) in job.attempts.iter().enumerate() {
                match job.outcome(i) {
                    Outcome::Failed => failed.push((a.ended_ms, ji, a.n)),
                    Outcome::Retried => retried.push((a.ended_ms, ji, a.n)),
                    _ => {}
                }
            }
        }
        failed.sort();
        retried.sort();
        failed
            .into_iter()
            .take(MAX_TAILS)
            .chain(retried.into_iter().take(MAX_TAILS))
            .map(|(_, j, n)| (j, n))
            .collect()
    }

    /// Reads the log tails of [`Snapshot::tail_wanted`] from the store.
    /// A log that cannot be read is shown as such, not as an error: the
    /// rest of the report is still worth having.
    pub async fn read_tails(&mut self, store: &JobStore) {
        for (j, n) in self.tail_wanted() {
            let tail = match log_tail(store, &self.jobs[j].id, n).await {
                Ok(t) => t,
                Err(e) => format!("(the log could not be read: {e})"),
            };
            self.tails.insert((j, n), tail);
        }
    }

    /// The page.
    pub fn render(&self) -> String {
        html::page(self)
    }
}

/// The last [`TAIL_LINES`] lines of an attempt's stored log (read from
/// its last segments only), or a note that it wrote nothing.
async fn log_tail(store: &JobStore, job: &str, attempt: u32) -> anyhow::Result<String> {
    let segs = crate::logs::segments(store, job, attempt, 0, u64::MAX).await?;
    let mut parts = Vec::new();
    let mut have = 0u64;
    for seg in segs.iter().rev() {
        if have >= TAIL_BYTES {
            break;
        }
        if let Some((_, data)) = crate::logs::read_segment(store, seg, 0, u64::MAX).await? {
            have += data.len() as u64;
            parts.push(data);
        }
    }
    let mut bytes = Vec::with_capacity(have as usize);
    for p in parts.iter().rev() {
        bytes.extend_from_slice(p);
    }
    if bytes.is_empty() {
        return Ok("(no output was stored for this attempt)".to_string());
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.trim_end_matches('\n').lines().collect();
    let from = lines.len().saturating_sub(TAIL_LINES);
    Ok(lines[from..].join("\n"))
}

/// Makes the report of `core` (read log tails from `store`) and writes it
/// to `path`. Returns the page's size in bytes.
pub async fn write(
    core: &Core,
    name: &str,
    created_ms: i64,
    store: &JobStore,
    note: Option<String>,
    path: &Path,
) -> anyhow::Result<usize> {
    let out = Output::prepare(path)?;
    let mut snap = Snapshot::from_core(core, name, created_ms);
    snap.note = note;
    snap.read_tails(store).await;
    let page = snap.render();
    out.finish(page.as_bytes())?;
    Ok(page.len())
}

/// Where the report goes: a temporary file beside the target, made before
/// any work so an unwritable path fails at once, renamed into place at
/// the end so a reader never sees half a page.
struct Output {
    path: PathBuf,
    tmp: tempfile::NamedTempFile,
}

impl Output {
    fn prepare(path: &Path) -> anyhow::Result<Output> {
        check_path(path)?;
        let dir = dir_of(path);
        let tmp = tempfile::Builder::new()
            .prefix(".report-")
            .suffix(".tmp")
            .tempfile_in(&dir)
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot write the report to {}: {e} (in {}); choose a writable place with -o",
                    path.display(),
                    dir.display()
                )
            })?;
        Ok(Output {
            path: path.to_path_buf(),
            tmp,
        })
    }

    fn finish(mut self, data: &[u8]) -> anyhow::Result<()> {
        let path = self.path.clone();
        let fail = |e: std::io::Error| {
            anyhow::anyhow!(
                "cannot write the report to {}: {e}; choose a writable place with -o",
                path.display()
            )
        };
        self.tmp.write_all(data).map_err(fail)?;
        self.tmp.as_file().sync_all().map_err(fail)?;
        self.tmp.persist(&self.path).map_err(|e| fail(e.error))?;
        Ok(())
    }
}

fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Checks that a report could be written at `path`: its directory exists
/// and it is not a directory itself. `run --report` checks this before the
/// workflow starts.
pub fn check_path(path: &Path) -> anyhow::Result<()> {
    if path.is_dir() {
        anyhow::bail!(
            "the report path {} is a directory; give a file name such as {}",
            path.display(),
            path.join("report.html").display()
        );
    }
    let dir = dir_of(path);
    if dir.exists() && !dir.is_dir() {
        anyhow::bail!(
            "cannot write the report to {}: {} is not a directory; choose another path",
            path.display(),
            dir.display()
        );
    }
    if !dir.is_dir() {
        anyhow::bail!(
            "cannot write the report to {}: the directory {} does not exist; create it or choose another path",
            path.display(),
            dir.display()
        );
    }
    Ok(())
}

/// `toil-leader report`.
pub async fn command(args: ReportArgs) -> anyhow::Result<u8> {
    let t0 = Instant::now();
    // Fail on an unwritable output before reading a large job store.
    let out = Output::prepare(&args.output)?;
    let store = crate::commands::open(&args.job_store).await?;
    let live = crate::commands::live_leader(&store).await?;
    let (core, meta) = crate::commands::offline_core(&store)
        .await
        .with_context(|| format!("reading the workflow in {}", store.locator()))?;
    let mut snap = Snapshot::from_core(&core, &meta.name, meta.created_ms);
    snap.note = live.map(|info| {
        format!(
            "snapshot while running: leader pid {} on {} (epoch {}) was live when this report was made",
            info.pid, info.host, info.epoch
        )
    });
    snap.read_tails(&store).await;
    let page = snap.render();
    out.finish(page.as_bytes())?;
    let attempts: usize = snap.jobs.iter().map(|j| j.attempts.len()).sum();
    crate::say!(
        "wrote {} ({}, {} jobs, {} attempts) in {:.2} s",
        args.output.display(),
        crate::workflow::units::format_size(page.len() as u64),
        snap.jobs.len(),
        attempts,
        t0.elapsed().as_secs_f64()
    );
    Ok(0)
}
