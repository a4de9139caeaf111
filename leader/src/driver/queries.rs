//! Read-only views of the state, for WorkflowService and `status`.

use toil_proto::v1::{AttemptSummary, Job, ResourceUsage, Resources};

use super::Driver;
use crate::core::{Core, JobIdx};

impl Driver {
    /// The scheduler core, for read-only queries.
    pub fn core(&self) -> &Core {
        &self.core
    }
}

fn timestamp(ms: i64) -> Option<prost_types::Timestamp> {
    (ms > 0).then(|| prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    })
}

/// A job as the API shows it.
pub fn job_proto(core: &Core, j: JobIdx) -> Job {
    let id = core.job_id(j);
    let req = core.request(j);
    let (used, allowed) = core.retries(j);
    Job {
        job_id: id.clone(),
        state: core.state(j) as i32,
        depends_on: core.depends_on(j),
        resources: Some(Resources {
            millicores: req.millicores,
            memory_bytes: req.memory,
            disk_bytes: req.disk,
            gpus: req.gpus,
            preemptible: req.preemptible,
        }),
        image: core.image(j).unwrap_or_default().to_string(),
        attempts: core
            .attempts(j)
            .iter()
            .enumerate()
            .map(|(i, a)| AttemptSummary {
                attempt_id: toil_jobstore::layout::attempt_id(&id, i as u32 + 1),
                cause: a.cause.clone(),
                launched_at: timestamp(a.launched_ms),
                ended_at: timestamp(a.ended_ms),
                placement: a.placement.to_string(),
                usage: a.usage.to_proto(),
                memory_bytes: a.memory,
                started_at: timestamp(a.started_ms),
            })
            .collect(),
        retries_used: used,
        retries_allowed: allowed,
        outputs: core.outputs(j).to_vec(),
        blocked_by: core
            .blocked_by(j)
            .map(|b| core.job_id(b))
            .unwrap_or_default(),
    }
}

/// Usage summed over every ended attempt (the largest peak RSS, summed CPU
/// time and cache figures).
pub fn total_usage(core: &Core) -> ResourceUsage {
    let mut t = ResourceUsage::default();
    let mut cpu_ns: u128 = 0;
    for j in 0..core.job_count() as JobIdx {
        for a in core.attempts(j) {
            let u = &a.usage;
            t.peak_rss_bytes = t.peak_rss_bytes.max(u.peak_rss);
            cpu_ns += u128::from(u.cpu_ns);
            t.cache_hits += u.cache_hits;
            t.cache_misses += u.cache_misses;
            t.bytes_downloaded += u.bytes_downloaded;
            t.bytes_uploaded += u.bytes_uploaded;
        }
    }
    t.cpu_time = Some(prost_types::Duration {
        seconds: (cpu_ns / 1_000_000_000) as i64,
        nanos: (cpu_ns % 1_000_000_000) as i32,
    });
    t
}
