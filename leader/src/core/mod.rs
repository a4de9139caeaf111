//! The scheduler core: the job graph and every state transition, with no I/O.
//!
//! Nothing here touches the network, the job store or the clock: callers
//! pass the time in, apply the decisions (launch, kill) and persist the
//! journal entries the core emits. That keeps the rules of the workflow —
//! dependencies, retries, blocking, dynamic jobs — in one place that unit
//! tests can drive step by step.
//!
//! Dependencies are tracked per *template* (one job as written in the file,
//! standing for all its scatter instances), not per edge: a gather job after
//! a 100,000-way scatter costs one counter, not 100,000 edges. Each template
//! counts how many of its jobs (and their dynamic descendants) have not yet
//! succeeded; when that reaches zero, every job waiting on the template is
//! released.
//!
//! Jobs that a running attempt adds (Toil's children and follow-ons) are
//! held on the attempt and join the graph only if it succeeds, so a failed
//! and retried parent never leaves duplicate children behind.

mod graph;
mod launch;
pub mod resume;
pub mod retry;
#[cfg(test)]
mod tests;
mod transitions;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use toil_proto::StateCounts;
use toil_proto::v1::{AddJobsRequest, Cause, FileRef, JobState, OutputFiles, ResourceUsage};

use crate::workflow::spec::{JobTemplate, Workflow};
pub use launch::{CWL_OUTPUT, LaunchSpec};
pub use resume::{ResumePlan, StoredVersion};
pub use retry::RetryPolicy;
pub use transitions::{Ended, now_timestamp};

/// Index of a job in the core's job table.
pub type JobIdx = u32;
/// Index of a template in the core's template table.
pub type TmplIdx = u32;

pub use crate::workflow::ResolvedDefaults as JobDefaults;

/// What a job asks of the machine it runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// CPU in millicores.
    pub millicores: u32,
    /// Memory in bytes (raised after an out-of-memory kill).
    pub memory: u64,
    /// Disk in bytes.
    pub disk: u64,
    /// GPUs.
    pub gpus: u32,
    /// May use preemptible capacity.
    pub preemptible: bool,
}

/// A template's settings after defaults.
#[derive(Clone, Debug)]
pub(crate) struct Resolved {
    pub(crate) request: Request,
    pub(crate) retries: u32,
    pub(crate) time_limit: Option<Duration>,
    pub(crate) image: Option<String>,
}

/// Something that happened, for watchers and the progress display.
#[derive(Clone, Debug, PartialEq)]
pub enum CoreEvent {
    /// A job changed state.
    StateChanged {
        /// The job.
        job: JobIdx,
        /// Previous state.
        from: JobState,
        /// New state.
        to: JobState,
    },
    /// An attempt is running somewhere known: at launch on a reused agent,
    /// or when a new agent's process or pod is placed. An attempt that ends
    /// before it is placed has no such event.
    AttemptStarted {
        /// The job.
        job: JobIdx,
        /// Attempt number.
        attempt: u32,
    },
    /// An attempt ended.
    AttemptEnded {
        /// The job.
        job: JobIdx,
        /// Attempt number.
        attempt: u32,
        /// Why.
        cause: Cause,
        /// The job will be tried again.
        will_retry: bool,
    },
    /// Jobs joined the workflow.
    JobsAdded {
        /// The new jobs.
        jobs: Vec<JobIdx>,
    },
    /// Every job has reached a final state.
    WorkflowEnded,
}

/// Errors from requests the core refuses.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CoreError {
    /// No job has this id.
    #[error("no job {0:?} in this workflow")]
    UnknownJob(String),
    /// The report is about an attempt that is not the job's current one, or
    /// that has already ended.
    #[error("attempt {attempt} of job {job} is not running (it ended or was superseded)")]
    StaleAttempt {
        /// The job's id.
        job: String,
        /// The attempt number reported.
        attempt: u32,
    },
    /// Added jobs were rejected.
    #[error("{0}")]
    InvalidJobs(String),
    /// The operation does not apply in the job's current state.
    #[error("{0}")]
    WrongState(String),
}

/// One attempt at running a job.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// Memory given to the attempt.
    pub memory: u64,
    /// Launch time, ms since the Unix epoch.
    pub launched_ms: i64,
    /// End time, ms since the Unix epoch (0 while running).
    pub ended_ms: i64,
    /// When the command started, by the agent's clock (0 if unknown).
    pub started_ms: i64,
    /// Where it runs.
    pub placement: Box<str>,
    /// Why it ended (`None` while running).
    pub cause: Option<Cause>,
    /// What the agent measured (all zero when it never reported).
    pub usage: Usage,
    /// Jobs the attempt asked to add; committed if it succeeds.
    pub staged: Vec<AddJobsRequest>,
}

/// What an agent measured about an attempt, stored compactly: a workflow
/// keeps one per attempt, so at 100,000 jobs every byte here is 100 kB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// The agent reported usage.
    pub known: bool,
    /// Peak RSS in bytes.
    pub peak_rss: u64,
    /// CPU time in nanoseconds.
    pub cpu_ns: u64,
    /// Wall time in nanoseconds.
    pub wall_ns: u64,
    /// Bytes downloaded from the job store.
    pub bytes_downloaded: u64,
    /// Bytes uploaded to the job store.
    pub bytes_uploaded: u64,
    /// Node-cache hits.
    pub cache_hits: u32,
    /// Node-cache misses.
    pub cache_misses: u32,
}

fn nanos(d: &Option<prost_types::Duration>) -> u64 {
    d.as_ref().map_or(0, |d| {
        d.seconds.max(0) as u64 * 1_000_000_000 + d.nanos.max(0) as u64
    })
}

fn duration(ns: u64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: (ns / 1_000_000_000) as i64,
        nanos: (ns % 1_000_000_000) as i32,
    })
}

impl From<&ResourceUsage> for Usage {
    fn from(u: &ResourceUsage) -> Self {
        Usage {
            known: true,
            peak_rss: u.peak_rss_bytes,
            cpu_ns: nanos(&u.cpu_time),
            wall_ns: nanos(&u.wall_time),
            bytes_downloaded: u.bytes_downloaded,
            bytes_uploaded: u.bytes_uploaded,
            cache_hits: u.cache_hits,
            cache_misses: u.cache_misses,
        }
    }
}

impl Usage {
    /// The API form, or `None` when the agent never reported.
    pub fn to_proto(&self) -> Option<ResourceUsage> {
        self.known.then(|| ResourceUsage {
            peak_rss_bytes: self.peak_rss,
            cpu_time: duration(self.cpu_ns),
            wall_time: duration(self.wall_ns),
            cache_hits: self.cache_hits,
            cache_misses: self.cache_misses,
            bytes_downloaded: self.bytes_downloaded,
            bytes_uploaded: self.bytes_uploaded,
        })
    }
}

#[derive(Debug)]
pub(crate) struct Template {
    pub(crate) spec: Arc<JobTemplate>,
    pub(crate) res: Resolved,
    /// First job of this template; its jobs are `first..first+count`.
    pub(crate) first: JobIdx,
    pub(crate) count: u32,
    /// True when the template is scattered (ids are `name[i]`).
    pub(crate) scattered: bool,
    /// Jobs of this template, and their dynamic descendants, that have not
    /// succeeded yet. Zero means complete.
    pub(crate) remaining: u32,
    /// Templates whose jobs wait for this template to complete.
    pub(crate) dependents: Vec<TmplIdx>,
    /// True once a job it counts can no longer succeed.
    pub(crate) doomed: bool,
}

#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) tmpl: TmplIdx,
    /// The job that added this one (dynamic children and follow-ons).
    pub(crate) parent: Option<JobIdx>,
    pub(crate) state: JobState,
    /// Templates this job still waits for.
    pub(crate) deps_left: u32,
    pub(crate) retries_used: u16,
    pub(crate) infra_used: u16,
    pub(crate) in_ready: bool,
    pub(crate) attempts: Vec<Attempt>,
    pub(crate) outputs: Option<Box<[OutputFiles]>>,
    pub(crate) blocked_by: Option<JobIdx>,
    /// A cancel arrived while an attempt ran: end as CANCELLED, never retry.
    pub(crate) cancel_requested: bool,
    /// For a succeeded CWL job: its output object (`AttemptResult.cwl_outputs`).
    pub(crate) cwl_outputs: Option<Box<str>>,
}

/// The job graph and its state.
#[derive(Debug)]
pub struct Core {
    pub(crate) templates: Vec<Template>,
    pub(crate) jobs: Vec<Job>,
    /// Template by name (static) or by full id (dynamic).
    pub(crate) by_name: HashMap<Box<str>, TmplIdx>,
    pub(crate) ready: VecDeque<JobIdx>,
    pub(crate) delayed: BinaryHeap<Reverse<(Instant, JobIdx)>>,
    pub(crate) counts: StateCounts,
    pub(crate) policy: RetryPolicy,
    pub(crate) defaults: JobDefaults,
    pub(crate) wf_defaults: crate::workflow::spec::Defaults,
    pub(crate) imports: HashMap<PathBuf, FileRef>,
    pub(crate) journal: Vec<toil_proto::v1::JournalEntry>,
    pub(crate) events: Vec<CoreEvent>,
    /// While replaying the journal: record nothing, announce nothing.
    pub(crate) replaying: bool,
    pub(crate) cancelled: bool,
    pub(crate) epoch: u64,
    pub(crate) ended_announced: bool,
    /// Templates from the workflow file; later ones were added while the
    /// workflow ran.
    pub(crate) static_templates: usize,
    /// The workflow version this graph was built from (0: as first run).
    pub(crate) version: u32,
    /// Stored versions of the workflow, for replaying version entries.
    pub(crate) versions: HashMap<u32, StoredVersion>,
    /// Attempts of jobs that an edited version removed, by job id, so that
    /// a later version bringing the job back never reuses an attempt number.
    pub(crate) retired: HashMap<String, Vec<Attempt>>,
    /// A front end (the CWL runner) may still add jobs: the workflow is not
    /// finished while this is set, even with every job in a final state.
    pub(crate) held_open: bool,
}

impl Core {
    /// Builds the graph of a parsed workflow. Every job starts WAITING or
    /// QUEUED.
    pub fn new(wf: &Workflow, defaults: JobDefaults, policy: RetryPolicy) -> Core {
        let mut core = Core {
            templates: Vec::new(),
            jobs: Vec::new(),
            by_name: HashMap::new(),
            ready: VecDeque::new(),
            delayed: BinaryHeap::new(),
            counts: StateCounts::default(),
            policy,
            defaults,
            wf_defaults: wf.defaults.clone(),
            imports: HashMap::new(),
            journal: Vec::new(),
            events: Vec::new(),
            replaying: false,
            cancelled: false,
            epoch: 0,
            ended_announced: false,
            static_templates: 0,
            version: 0,
            versions: HashMap::new(),
            retired: HashMap::new(),
            held_open: false,
        };
        core.build_static(wf);
        core
    }

    /// Records where the workflow's local input files were imported.
    pub fn set_imports(&mut self, imports: HashMap<PathBuf, FileRef>) {
        self.imports = imports;
    }

    /// Number of jobs, including dynamic ones.
    pub fn job_count(&self) -> usize {
        self.jobs.len()
    }

    /// Jobs in each state.
    pub fn counts(&self) -> StateCounts {
        self.counts
    }

    /// The state of a job.
    pub fn state(&self, j: JobIdx) -> JobState {
        self.jobs[j as usize].state
    }

    /// The leader epoch last claimed in the journal.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The job's attempts so far.
    pub fn attempts(&self, j: JobIdx) -> &[Attempt] {
        &self.jobs[j as usize].attempts
    }

    /// User retries spent and allowed.
    pub fn retries(&self, j: JobIdx) -> (u32, u32) {
        let job = &self.jobs[j as usize];
        (
            job.retries_used as u32,
            self.templates[job.tmpl as usize].res.retries,
        )
    }

    /// The job's outputs, once it has succeeded.
    pub fn outputs(&self, j: JobIdx) -> &[OutputFiles] {
        self.jobs[j as usize].outputs.as_deref().unwrap_or(&[])
    }

    /// The job whose failure blocked this one.
    pub fn blocked_by(&self, j: JobIdx) -> Option<JobIdx> {
        self.jobs[j as usize].blocked_by
    }

    /// The job's resources as it would be launched now.
    pub fn request(&self, j: JobIdx) -> Request {
        let job = &self.jobs[j as usize];
        let mut r = self.templates[job.tmpl as usize].res.request.clone();
        if let Some(last) = job.attempts.last() {
            r.memory = r.memory.max(self.next_memory(job, last));
        }
        r
    }

    /// The container image of a job, if any.
    pub fn image(&self, j: JobIdx) -> Option<&str> {
        let t = &self.templates[self.jobs[j as usize].tmpl as usize];
        t.res.image.as_deref()
    }

    /// Ids of the templates (and specific jobs) a job depends on, by name.
    pub fn depends_on(&self, j: JobIdx) -> Vec<String> {
        let job = &self.jobs[j as usize];
        let mut deps: Vec<String> = self.templates[job.tmpl as usize].spec.after.clone();
        if let Some(p) = job.parent {
            deps.insert(0, self.job_id(p));
        }
        deps
    }

    /// True if `j` is `root` or a job added under it (a child or follow-on,
    /// at any depth): what a job's own token may see the data of.
    pub fn is_within(&self, j: JobIdx, root: JobIdx) -> bool {
        let mut cur = Some(j);
        while let Some(c) = cur {
            if c == root {
                return true;
            }
            cur = self.jobs.get(c as usize).and_then(|job| job.parent);
        }
        false
    }

    /// True once every job has reached a final state (and no front end
    /// holds the workflow open, see [`Core::hold_open`]).
    pub fn is_finished(&self) -> bool {
        self.counts.unfinished() == 0 && !self.held_open
    }

    /// Keeps the workflow running while a front end (the CWL runner) may
    /// still add jobs, or lets it end (`false`) once every job has.
    pub fn hold_open(&mut self, held: bool) {
        self.held_open = held;
        if held {
            // A replayed workflow whose jobs had all ended announced its
            // end; it is not over while held.
            self.events.retain(|e| *e != CoreEvent::WorkflowEnded);
            self.ended_announced = false;
        } else {
            self.announce_end();
        }
    }

    /// The output object a succeeded CWL job reported.
    pub fn cwl_outputs(&self, j: JobIdx) -> Option<&str> {
        self.jobs[j as usize].cwl_outputs.as_deref()
    }

    /// The workflow's state as a whole.
    pub fn workflow_state(&self) -> toil_proto::v1::WorkflowState {
        use toil_proto::v1::WorkflowState as W;
        if !self.is_finished() {
            return W::Running;
        }
        if self.cancelled {
            return W::Cancelled;
        }
        if self.counts.unsuccessful() > 0 {
            W::Failed
        } else {
            W::Succeeded
        }
    }

    /// How many journal entries are waiting to be drained.
    pub fn journal_len(&self) -> usize {
        self.journal.len()
    }

    /// Takes the journal entries recorded since the last call.
    pub fn drain_journal(&mut self) -> Vec<toil_proto::v1::JournalEntry> {
        std::mem::take(&mut self.journal)
    }

    /// Takes the events recorded since the last call.
    pub fn drain_events(&mut self) -> Vec<CoreEvent> {
        std::mem::take(&mut self.events)
    }

    /// The id of a job: `name`, `name[i]` for a scatter instance, or
    /// `parent/name` for a job added while the workflow ran.
    pub fn job_id(&self, j: JobIdx) -> String {
        let job = &self.jobs[j as usize];
        let t = &self.templates[job.tmpl as usize];
        if t.scattered {
            format!("{}[{}]", t.spec.name, j - t.first)
        } else {
            t.spec.name.clone()
        }
    }

    /// The name of a job's template, without scatter index or parent:
    /// `count` for `count[3]`, `child` for `parent/child`. Bounded by the
    /// workflow file for its own jobs (what `/metrics` labels by).
    pub fn job_name(&self, j: JobIdx) -> &str {
        let name = &self.templates[self.jobs[j as usize].tmpl as usize]
            .spec
            .name;
        name.rsplit('/').next().unwrap_or(name)
    }

    /// Finds a job by id.
    pub fn lookup(&self, id: &str) -> Option<JobIdx> {
        if let Some(&t) = self.by_name.get(id) {
            let t = &self.templates[t as usize];
            return (!t.scattered && t.count == 1).then_some(t.first);
        }
        let (name, rest) = id.split_once('[')?;
        let i: u32 = rest.strip_suffix(']')?.parse().ok()?;
        let &t = self.by_name.get(name)?;
        let t = &self.templates[t as usize];
        (t.scattered && i < t.count).then_some(t.first + i)
    }

    /// Moves jobs whose back-off has passed into the ready queue.
    pub fn tick(&mut self, now: Instant) {
        while let Some(Reverse((due, j))) = self.delayed.peek().copied() {
            if due > now {
                break;
            }
            self.delayed.pop();
            self.push_ready(j);
        }
    }

    /// When the next delayed job becomes ready.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.delayed.peek().map(|Reverse((t, _))| *t)
    }

    /// Removes and returns the first ready job (looking at most `window`
    /// jobs deep) for which `fits` says yes.
    pub fn take_ready(
        &mut self,
        window: usize,
        mut fits: impl FnMut(JobIdx, &Request) -> bool,
    ) -> Option<JobIdx> {
        let mut i = 0;
        let mut looked = 0;
        while i < self.ready.len() && looked < window {
            let j = self.ready[i];
            if self.jobs[j as usize].state != JobState::Queued {
                // Stale entry: the job was launched or cancelled meanwhile.
                self.jobs[j as usize].in_ready = false;
                self.ready.remove(i);
                continue;
            }
            looked += 1;
            let req = self.request(j);
            if fits(j, &req) {
                self.ready.remove(i);
                self.jobs[j as usize].in_ready = false;
                return Some(j);
            }
            i += 1;
        }
        None
    }

    pub(crate) fn push_ready(&mut self, j: JobIdx) {
        let job = &mut self.jobs[j as usize];
        if !job.in_ready {
            job.in_ready = true;
            self.ready.push_back(j);
        }
    }
}
