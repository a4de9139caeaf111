//! The closing report of a run: counts, and for each failed job its cause
//! and the end of its log.

use std::time::Duration;

use toil_proto::v1::{JobState, WorkflowState};

use crate::core::{Core, JobIdx};
use crate::logs::LogHub;

/// How many failed jobs are shown in full.
const SHOWN: usize = 5;
/// Bytes of log shown per failed job.
const TAIL: usize = 2000;

fn seconds(d: Duration) -> String {
    if d.as_secs() >= 120 {
        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Prints the report to stderr.
pub async fn print(
    core: &Core,
    logs: &LogHub,
    name: &str,
    state: WorkflowState,
    elapsed: Duration,
) {
    let c = core.counts();
    let total = core.job_count();
    let word = match state {
        WorkflowState::Succeeded => "succeeded",
        WorkflowState::Failed => "FAILED",
        WorkflowState::Cancelled => "was CANCELLED",
        _ => "stopped",
    };
    let attempts: usize = (0..total as JobIdx).map(|j| core.attempts(j).len()).sum();
    let mut parts = vec![format!("{} succeeded", c[JobState::Succeeded])];
    for (s, label) in [
        (JobState::Failed, "failed"),
        (JobState::Blocked, "blocked by a failure"),
        (JobState::Cancelled, "cancelled"),
    ] {
        if c[s] > 0 {
            parts.push(format!("{} {label}", c[s]));
        }
    }
    crate::say!(
        "workflow {name} {word} in {}: {total} jobs ({}), {attempts} attempts",
        seconds(elapsed),
        parts.join(", ")
    );
    let failed: Vec<JobIdx> = (0..total as JobIdx)
        .filter(|&j| core.state(j) == JobState::Failed)
        .collect();
    for &j in failed.iter().take(SHOWN) {
        let id = core.job_id(j);
        let attempts = core.attempts(j);
        let Some(last) = attempts.last() else {
            continue;
        };
        let cause = last
            .cause
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let (used, allowed) = core.retries(j);
        crate::say!(
            "\njob {id} failed: {cause}\n  attempt {} ({} of {} retries used){}",
            attempts.len(),
            used,
            allowed,
            if last.placement.is_empty() {
                String::new()
            } else {
                format!(", ran on {}", last.placement)
            }
        );
        let tail = logs.tail(&id, attempts.len() as u32, TAIL).await;
        let tail = tail.trim_end();
        if !tail.is_empty() {
            crate::say!("  end of its log:");
            let lines: Vec<&str> = tail.lines().collect();
            for l in &lines[lines.len().saturating_sub(20)..] {
                crate::say!("  | {}", crate::terminal::escape_controls(l));
            }
        }
    }
    if failed.len() > SHOWN {
        crate::say!(
            "\n... and {} more failed jobs; see `toil-leader status` for all of them",
            failed.len() - SHOWN
        );
    }
}
