//! State transitions: launching, ending, retrying, cancelling, blocking,
//! and replaying the journal.

use std::time::Instant;

use toil_proto::v1::journal_entry::Kind;
use toil_proto::v1::{
    AttemptEndEntry, AttemptLaunchEntry, AttemptResult, CancelEntry, Cause, CauseKind, JobState,
    JournalEntry, LeaderClaim, RetryFailedEntry, SettingsEntry,
};

use super::retry::{Class, classify};
use super::{Attempt, Core, CoreError, CoreEvent, Job, JobDefaults, JobIdx, TmplIdx, Usage};

/// What ending an attempt led to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ended {
    /// The job will be tried again.
    pub will_retry: bool,
    /// The job's state afterwards.
    pub state: JobState,
}

impl Core {
    pub(crate) fn set_state(&mut self, j: JobIdx, to: JobState) {
        let job = &mut self.jobs[j as usize];
        let from = job.state;
        if from == to {
            return;
        }
        job.state = to;
        self.counts[from] -= 1;
        self.counts[to] += 1;
        if !self.replaying {
            self.events
                .push(CoreEvent::StateChanged { job: j, from, to });
        }
    }

    pub(crate) fn record(&mut self, kind: Kind) {
        if self.replaying {
            return;
        }
        self.journal.push(JournalEntry {
            time: Some(now_timestamp()),
            kind: Some(kind),
        });
    }

    /// Records that this leader took over the store.
    pub fn claim(&mut self, epoch: u64, host: &str, pid: u32) {
        self.epoch = epoch;
        self.record(Kind::Claim(LeaderClaim {
            epoch,
            host: host.to_string(),
            pid,
        }));
    }

    /// Starts a new attempt of a queued job. `memory` overrides the memory
    /// the core would give it (only when replaying).
    pub fn launch(
        &mut self,
        j: JobIdx,
        placement: &str,
        now_ms: i64,
        memory: Option<u64>,
    ) -> Result<u32, CoreError> {
        if self.jobs[j as usize].state != JobState::Queued {
            return Err(CoreError::WrongState(format!(
                "job {} is {:?}, not queued",
                self.job_id(j),
                self.jobs[j as usize].state
            )));
        }
        let memory = memory.unwrap_or_else(|| self.request(j).memory);
        let job = &mut self.jobs[j as usize];
        // Exactly one more: a Vec's first push would reserve four, and most
        // jobs have one attempt.
        job.attempts.reserve_exact(1);
        job.attempts.push(Attempt {
            memory,
            launched_ms: now_ms,
            ended_ms: 0,
            started_ms: 0,
            placement: placement.into(),
            cause: None,
            usage: Usage::default(),
            staged: Vec::new(),
        });
        let n = job.attempts.len() as u32;
        self.set_state(j, JobState::Running);
        let job_id = self.job_id(j);
        self.record(Kind::Launch(AttemptLaunchEntry {
            job_id,
            attempt: n,
            memory_bytes: memory,
            placement: placement.to_string(),
        }));
        // A new agent's placement is known only once its process or pod
        // exists; the event waits for it (see `place`).
        if !self.replaying && !placement.is_empty() {
            self.events
                .push(CoreEvent::AttemptStarted { job: j, attempt: n });
        }
        Ok(n)
    }

    /// Records where a running attempt landed.
    pub fn place(&mut self, j: JobIdx, n: u32, placement: &str) {
        let Some(a) = self.jobs[j as usize].attempts.get_mut(n as usize - 1) else {
            return;
        };
        if &*a.placement == placement {
            return;
        }
        // Not journaled on its own: it travels in the attempt's end entry,
        // which saves an entry per job.
        let first = a.placement.is_empty() && a.cause.is_none();
        a.placement = placement.into();
        if first && !self.replaying && !placement.is_empty() {
            self.events
                .push(CoreEvent::AttemptStarted { job: j, attempt: n });
        }
    }

    /// True if `n` is the job's current, still running attempt.
    pub fn is_current(&self, j: JobIdx, n: u32) -> bool {
        let job = &self.jobs[j as usize];
        job.state == JobState::Running
            && job.attempts.len() == n as usize
            && job.attempts.last().is_some_and(|a| a.cause.is_none())
    }

    /// Ends attempt `n` of job `j` with `result`, and decides what next.
    pub fn finish(
        &mut self,
        j: JobIdx,
        n: u32,
        mut result: AttemptResult,
        now_ms: i64,
        now: Instant,
    ) -> Result<Ended, CoreError> {
        if !self.is_current(j, n) {
            return Err(CoreError::StaleAttempt {
                job: self.job_id(j),
                attempt: n,
            });
        }
        let mut cause = result
            .cause
            .clone()
            .unwrap_or_else(|| Cause::config_error("the agent reported no cause"));
        let mut kind = CauseKind::try_from(cause.kind).unwrap_or(CauseKind::Unspecified);
        if kind == CauseKind::Unspecified {
            kind = CauseKind::ConfigError;
            cause.kind = kind as i32;
            cause.message = format!("the agent reported an unknown cause: {}", cause.message);
        }
        let job_id = self.job_id(j);
        let staged = {
            let a = self.jobs[j as usize]
                .attempts
                .last_mut()
                .ok_or_else(|| CoreError::WrongState("no attempt".into()))?;
            a.cause = Some(cause.clone());
            a.ended_ms = now_ms;
            a.started_ms = result
                .started_at
                .as_ref()
                .map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000);
            if let Some(u) = result.usage.as_ref() {
                a.usage = Usage::from(u);
            }
            if kind == CauseKind::Succeeded {
                a.staged.clone()
            } else {
                Vec::new()
            }
        };
        let outputs = std::mem::take(&mut result.outputs);
        let cwl_outputs = (kind == CauseKind::Succeeded && !result.cwl_outputs.is_empty())
            .then(|| result.cwl_outputs.clone().into_boxed_str());
        result.cause = Some(cause.clone());
        result.outputs = outputs.clone();
        let placement = self.jobs[j as usize]
            .attempts
            .last()
            .map(|a| a.placement.to_string())
            .unwrap_or_default();
        self.record(Kind::End(AttemptEndEntry {
            job_id,
            attempt: n,
            result: Some(result),
            added: staged.clone(),
            placement,
        }));
        // Staged jobs are kept only in the journal from here on.
        if let Some(a) = self.jobs[j as usize].attempts.last_mut() {
            a.staged = Vec::new();
        }

        let cancel_requested = self.jobs[j as usize].cancel_requested;
        let mut class = classify(kind);
        if cancel_requested && class != Class::Success {
            class = Class::Cancelled;
        }
        let mut will_retry = false;
        // The attempt's end is announced before the state changes it causes
        // (see WatchEvents in workflow.proto).
        let first_event = self.events.len();
        match class {
            Class::Success => {
                self.jobs[j as usize].outputs = Some(outputs.into_boxed_slice());
                self.jobs[j as usize].cwl_outputs = cwl_outputs;
                self.commit_staged(j, &staged);
                self.set_state(j, JobState::Succeeded);
                self.complete(j);
            }
            Class::User if self.can_retry_user(j) => {
                let job = &mut self.jobs[j as usize];
                job.retries_used += 1;
                let wait = self.policy.user_backoff(job.retries_used as u32);
                self.set_state(j, JobState::Queued);
                if self.replaying {
                    self.push_ready(j);
                } else {
                    self.delayed.push(std::cmp::Reverse((now + wait, j)));
                }
                will_retry = true;
            }
            Class::Infra if self.can_retry_infra(j) => {
                self.jobs[j as usize].infra_used += 1;
                self.set_state(j, JobState::Queued);
                self.push_ready(j);
                will_retry = true;
            }
            Class::Cancelled => {
                self.set_state(j, JobState::Cancelled);
                self.doom(j, j);
            }
            Class::User | Class::Infra | Class::Fatal => {
                self.set_state(j, JobState::Failed);
                self.doom(j, j);
            }
        }
        if !self.replaying {
            self.events.insert(
                first_event,
                CoreEvent::AttemptEnded {
                    job: j,
                    attempt: n,
                    cause,
                    will_retry,
                },
            );
        }
        self.announce_end();
        Ok(Ended {
            will_retry,
            state: self.jobs[j as usize].state,
        })
    }

    /// After an attempt of `j` ended with `cause` and the job will be
    /// retried: which budget the retry spends and when it starts, for the
    /// terminal (`will retry (1 of 2) in 2s`).
    pub fn retry_note(&self, j: JobIdx, cause: &Cause) -> String {
        let job = &self.jobs[j as usize];
        match classify(CauseKind::try_from(cause.kind).unwrap_or(CauseKind::Unspecified)) {
            Class::Infra => format!(
                "will retry now ({} of {} retries for platform failures, which do not spend --retryCount)",
                job.infra_used, self.policy.infra_retries
            ),
            _ => {
                let used = u32::from(job.retries_used);
                let allowed = self.templates[job.tmpl as usize].res.retries;
                let wait = self.policy.user_backoff(used);
                format!(
                    "will retry ({used} of {allowed}) in {}",
                    humantime::format_duration(wait)
                )
            }
        }
    }

    fn can_retry_user(&self, j: JobIdx) -> bool {
        let job = &self.jobs[j as usize];
        !self.cancelled && (job.retries_used as u32) < self.templates[job.tmpl as usize].res.retries
    }

    fn can_retry_infra(&self, j: JobIdx) -> bool {
        !self.cancelled && (self.jobs[j as usize].infra_used as u32) < self.policy.infra_retries
    }

    /// The memory an attempt after `last` gets.
    pub(crate) fn next_memory(&self, _job: &Job, last: &Attempt) -> u64 {
        let oom = last
            .cause
            .as_ref()
            .is_some_and(|c| c.kind == CauseKind::OomKilled as i32);
        if oom {
            self.policy.oom_memory(last.memory)
        } else {
            last.memory
        }
    }

    /// A job succeeded: count it off its template and its ancestors'.
    pub(crate) fn complete(&mut self, j: JobIdx) {
        let mut cur = Some(j);
        while let Some(c) = cur {
            let t = self.jobs[c as usize].tmpl;
            let tmpl = &mut self.templates[t as usize];
            tmpl.remaining = tmpl.remaining.saturating_sub(1);
            if tmpl.remaining == 0 && !tmpl.doomed {
                self.release(t);
            }
            cur = self.jobs[c as usize].parent;
        }
    }

    /// A template completed: its dependents stop waiting for it.
    pub(crate) fn release(&mut self, t: TmplIdx) {
        let dependents = std::mem::take(&mut self.templates[t as usize].dependents);
        for d in &dependents {
            let (first, count) = {
                let dt = &self.templates[*d as usize];
                (dt.first, dt.count)
            };
            for i in first..first + count {
                let job = &mut self.jobs[i as usize];
                job.deps_left = job.deps_left.saturating_sub(1);
                if job.deps_left == 0 && job.state == JobState::Waiting {
                    self.set_state(i, JobState::Queued);
                    self.push_ready(i);
                }
            }
        }
        self.templates[t as usize].dependents = dependents;
    }

    /// Job `j` can no longer succeed: every template counting it is doomed
    /// and every job waiting on those is BLOCKED, transitively.
    pub(crate) fn doom(&mut self, j: JobIdx, by: JobIdx) {
        let mut stack: Vec<TmplIdx> = Vec::new();
        self.doom_chain(j, &mut stack);
        while let Some(t) = stack.pop() {
            let dependents = self.templates[t as usize].dependents.clone();
            for d in dependents {
                let (first, count) = {
                    let dt = &self.templates[d as usize];
                    (dt.first, dt.count)
                };
                for i in first..first + count {
                    if matches!(
                        self.jobs[i as usize].state,
                        JobState::Waiting | JobState::Queued
                    ) {
                        self.jobs[i as usize].blocked_by = Some(by);
                        self.set_state(i, JobState::Blocked);
                        self.doom_chain(i, &mut stack);
                    }
                }
            }
        }
    }

    fn doom_chain(&mut self, j: JobIdx, stack: &mut Vec<TmplIdx>) {
        let mut cur = Some(j);
        while let Some(c) = cur {
            let t = self.jobs[c as usize].tmpl;
            if !self.templates[t as usize].doomed {
                self.templates[t as usize].doomed = true;
                stack.push(t);
            }
            cur = self.jobs[c as usize].parent;
        }
    }

    pub(crate) fn announce_end(&mut self) {
        if self.is_finished() && !self.ended_announced && !self.replaying {
            self.ended_announced = true;
            self.events.push(CoreEvent::WorkflowEnded);
        }
    }

    /// Cancels one job. A queued or waiting job ends now; for a running job
    /// the attempt to kill is returned and the job ends CANCELLED when the
    /// kill is reported.
    pub fn cancel_job(&mut self, j: JobIdx, reason: &str) -> Result<Option<u32>, CoreError> {
        let state = self.jobs[j as usize].state;
        let job_id = self.job_id(j);
        let out = match state {
            JobState::Waiting | JobState::Queued => {
                self.set_state(j, JobState::Cancelled);
                self.doom(j, j);
                None
            }
            JobState::Running => {
                self.jobs[j as usize].cancel_requested = true;
                Some(self.jobs[j as usize].attempts.len() as u32)
            }
            _ => {
                return Err(CoreError::WrongState(format!(
                    "job {job_id} has already ended ({state:?})"
                )));
            }
        };
        self.record(Kind::Cancel(CancelEntry {
            job_id,
            reason: reason.to_string(),
        }));
        self.announce_end();
        Ok(out)
    }

    /// Cancels every job that has not ended. Returns the running attempts
    /// to kill.
    pub fn cancel_workflow(&mut self, reason: &str) -> Vec<(JobIdx, u32)> {
        self.cancelled = true;
        let mut kill = Vec::new();
        for j in 0..self.jobs.len() as JobIdx {
            match self.jobs[j as usize].state {
                JobState::Waiting | JobState::Queued => self.set_state(j, JobState::Cancelled),
                JobState::Running => {
                    self.jobs[j as usize].cancel_requested = true;
                    kill.push((j, self.jobs[j as usize].attempts.len() as u32));
                }
                _ => {}
            }
        }
        self.delayed.clear();
        self.record(Kind::Cancel(CancelEntry {
            job_id: String::new(),
            reason: reason.to_string(),
        }));
        self.announce_end();
        kill
    }

    /// Gives every failed job a new set of retries: it is queued again, and
    /// the jobs its failure blocked wait for it again. Returns how many jobs
    /// were requeued. A restarted leader does this so that fixing the cause
    /// of a failure and running `--restart` finishes the workflow.
    pub fn retry_failed(&mut self) -> usize {
        let failed: Vec<JobIdx> = (0..self.jobs.len() as JobIdx)
            .filter(|&j| self.jobs[j as usize].state == JobState::Failed)
            .collect();
        if failed.is_empty() {
            return 0;
        }
        self.record(Kind::RetryFailed(RetryFailedEntry {}));
        for t in &mut self.templates {
            t.doomed = false;
        }
        for &j in &failed {
            let job = &mut self.jobs[j as usize];
            job.retries_used = 0;
            job.infra_used = 0;
            job.cancel_requested = false;
            self.set_state(j, JobState::Queued);
            self.push_ready(j);
        }
        for j in 0..self.jobs.len() as JobIdx {
            if self.jobs[j as usize].state == JobState::Blocked {
                self.jobs[j as usize].blocked_by = None;
                let next = if self.jobs[j as usize].deps_left == 0 {
                    JobState::Queued
                } else {
                    JobState::Waiting
                };
                self.set_state(j, next);
                if next == JobState::Queued {
                    self.push_ready(j);
                }
            }
        }
        // What a cancellation blocked stays blocked.
        let cancelled: Vec<JobIdx> = (0..self.jobs.len() as JobIdx)
            .filter(|&j| self.jobs[j as usize].state == JobState::Cancelled)
            .collect();
        for j in cancelled {
            self.doom(j, j);
        }
        self.ended_announced = false;
        failed.len()
    }

    /// The run settings in force: the job defaults and the platform-failure
    /// retry budget.
    pub fn settings(&self) -> (JobDefaults, u32) {
        (self.defaults, self.policy.infra_retries)
    }

    /// Changes the run settings from here on and journals the change. Every
    /// job that does not set its own resources or retry count takes the new
    /// defaults at its next launch; finished jobs are kept.
    pub fn change_settings(&mut self, settings: (JobDefaults, u32)) {
        let (d, infra_retries) = settings;
        self.record(Kind::Settings(SettingsEntry {
            millicores: d.millicores,
            memory_bytes: d.memory,
            disk_bytes: d.disk,
            retries: d.retries,
            infra_retries,
        }));
        self.set_settings(settings);
    }

    fn set_settings(&mut self, (defaults, infra_retries): (JobDefaults, u32)) {
        self.defaults = defaults;
        self.policy.infra_retries = infra_retries;
        for t in 0..self.templates.len() {
            let spec = self.templates[t].spec.clone();
            self.templates[t].res = self.resolve(&spec);
        }
    }

    /// Applies one journal entry while rebuilding state after a restart.
    pub fn replay(&mut self, entry: JournalEntry, now: Instant) -> Result<(), CoreError> {
        self.replaying = true;
        let r = self.replay_inner(entry, now);
        self.replaying = false;
        r
    }

    fn replay_inner(&mut self, entry: JournalEntry, now: Instant) -> Result<(), CoreError> {
        let at_ms = entry
            .time
            .as_ref()
            .map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000);
        let find = |core: &Core, id: &str| {
            core.lookup(id)
                .ok_or_else(|| CoreError::UnknownJob(id.to_string()))
        };
        match entry.kind {
            None => Ok(()),
            Some(Kind::Claim(c)) => {
                self.epoch = c.epoch;
                Ok(())
            }
            Some(Kind::Added(a)) => {
                let req = a.request.unwrap_or_default();
                self.add_root_jobs(req).map(|_| ())
            }
            Some(Kind::Launch(l)) => {
                let j = find(self, &l.job_id)?;
                // A job whose back-off was pending when the old leader died
                // is launched again without waiting.
                self.launch(j, &l.placement, at_ms, Some(l.memory_bytes))
                    .map(|_| ())
            }
            Some(Kind::Place(p)) => {
                let j = find(self, &p.job_id)?;
                self.place(j, p.attempt, &p.placement);
                Ok(())
            }
            Some(Kind::End(e)) => {
                let j = find(self, &e.job_id)?;
                if let Some(a) = self.jobs[j as usize].attempts.last_mut() {
                    a.staged = e.added;
                    if !e.placement.is_empty() {
                        a.placement = e.placement.into();
                    }
                }
                self.finish(j, e.attempt, e.result.unwrap_or_default(), at_ms, now)
                    .map(|_| ())
            }
            Some(Kind::RetryFailed(_)) => {
                self.retry_failed();
                Ok(())
            }
            Some(Kind::Version(v)) => self.replay_version(v),
            Some(Kind::Settings(st)) => {
                self.set_settings(settings_of(&st));
                Ok(())
            }
            Some(Kind::Cancel(c)) => {
                if c.job_id.is_empty() {
                    self.cancel_workflow(&c.reason);
                } else {
                    let j = find(self, &c.job_id)?;
                    self.cancel_job(j, &c.reason)?;
                }
                Ok(())
            }
        }
    }

    /// After a replay: the delayed queue's entries point at the old leader's
    /// clock; make them ready now.
    pub fn finish_replay(&mut self) {
        while let Some(std::cmp::Reverse((_, j))) = self.delayed.pop() {
            self.push_ready(j);
        }
        self.ended_announced = false;
        self.announce_end();
    }
}

/// The settings a journaled [`SettingsEntry`] names.
fn settings_of(st: &SettingsEntry) -> (JobDefaults, u32) {
    let d = JobDefaults {
        millicores: st.millicores,
        memory: st.memory_bytes,
        disk: st.disk_bytes,
        retries: st.retries,
    };
    (d, st.infra_retries)
}

/// The current time as a protobuf timestamp.
pub fn now_timestamp() -> prost_types::Timestamp {
    let now = chrono::Utc::now();
    prost_types::Timestamp {
        seconds: now.timestamp(),
        nanos: now.timestamp_subsec_nanos() as i32,
    }
}
