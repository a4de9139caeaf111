//! Resuming against an edited workflow.
//!
//! Every static job has a *content key*: a hash of what decides its result
//! (the command as it will run, its image, environment, GPUs, the outputs it
//! collects, the checksums of its local input files, and the keys of the
//! jobs it runs after). When a workflow is resumed against a file that
//! differs from the stored one, a finished job whose key is unchanged keeps
//! its outputs; every other job runs (again). Because a key folds in the
//! keys upstream, a change reruns everything downstream of it, and nothing
//! else.
//!
//! Resources that change where and how long a job runs, not what it
//! computes (cores, memory, disk, time limit, retries, preemptible) are left
//! out of the key, so raising a job's memory after an out-of-memory kill
//! does not rerun the jobs that already succeeded.
//!
//! Moving to the new workflow is one journal entry
//! ([`toil_proto::v1::WorkflowVersionEntry`]) naming the version and the
//! kept jobs; replaying it performs the same [`Core::rebase`], so a crash in
//! the middle of a resume is itself resumable.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use toil_proto::v1::journal_entry::Kind;
use toil_proto::v1::{FileRef, JobState, WorkflowVersionEntry};

use super::{Core, CoreError, JobIdx};
use crate::workflow::spec::{Command, InputSource, Workflow};

/// A job's content key.
pub type JobKey = [u8; 32];

/// A stored version of the workflow, for replaying its version entry.
#[derive(Clone, Debug)]
pub struct StoredVersion {
    /// The workflow as parsed from the stored file.
    pub workflow: Arc<Workflow>,
    /// Its local inputs as imported into the job store.
    pub imports: HashMap<PathBuf, FileRef>,
    /// SHA-256 (hex) of the stored file, checked against the journal entry
    /// on replay: a file changed after it was journaled is refused.
    pub spec_sha256: String,
}

/// Why a job of the new workflow runs although it ran before.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// Its command changed.
    Command,
    /// Its container image changed.
    Image,
    /// Its environment changed.
    Env,
    /// Its GPU count changed.
    Gpus,
    /// The outputs it collects changed.
    Outputs,
    /// A local input file's content changed (the file's path).
    InputFile(String),
    /// Which files it takes, or where it puts them, changed.
    Inputs,
    /// It runs after a job that runs again (that job's name).
    Upstream(String),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Command => f.write_str("command changed"),
            Reason::Image => f.write_str("image changed"),
            Reason::Env => f.write_str("env changed"),
            Reason::Gpus => f.write_str("gpus changed"),
            Reason::Outputs => f.write_str("outputs changed"),
            Reason::InputFile(p) => write!(f, "input file {p} changed"),
            Reason::Inputs => f.write_str("inputs changed"),
            Reason::Upstream(name) => write!(f, "after {name}"),
        }
    }
}

/// What resuming against a new workflow does, job by job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResumePlan {
    /// Finished jobs that keep their outputs, by id.
    pub kept: Vec<String>,
    /// Finished jobs that run again, by id, with why.
    pub rerun: Vec<(String, Reason)>,
    /// Jobs that did not finish before and run now (unchanged or not).
    pub unfinished: usize,
    /// Jobs that are new in this version, by id.
    pub added: Vec<String>,
    /// Jobs of the old version that are gone, by id.
    pub removed: Vec<String>,
}

impl ResumePlan {
    /// True when the new version keeps every job as it was.
    pub fn changes_nothing(&self) -> bool {
        self.rerun.is_empty() && self.added.is_empty() && self.removed.is_empty()
    }
}

/// The parts of a key, kept apart so that a change can be explained.
struct Parts {
    command: JobKey,
    image: Option<String>,
    env: JobKey,
    gpus: u32,
    outputs: JobKey,
    /// (path as written, sha256) of each local input, in file order.
    files: Vec<(String, String)>,
    /// How inputs are wired (sources and destinations), without checksums.
    wiring: JobKey,
    /// Jobs this one runs after.
    upstream: Vec<JobIdx>,
}

fn digest<I: IntoIterator<Item = S>, S: AsRef<[u8]>>(items: I) -> JobKey {
    let mut h = Sha256::new();
    for s in items {
        let s = s.as_ref();
        // Length-prefixed, so that ("ab", "c") and ("a", "bc") differ.
        h.update((s.len() as u64).to_le_bytes());
        h.update(s);
    }
    h.finalize().into()
}

impl Core {
    /// Marks the end of the workflow file's own jobs: jobs added later
    /// (through the API or by running jobs) are not part of any version.
    pub(crate) fn static_job_count(&self) -> usize {
        self.templates
            .iter()
            .take(self.static_templates)
            .map(|t| t.count as usize)
            .sum()
    }

    fn parts(&self, j: JobIdx) -> Parts {
        let job = &self.jobs[j as usize];
        let t = &self.templates[job.tmpl as usize];
        let spec = &t.spec;
        let instance = self.instance(j);
        let scatter = super::launch::as_scatter(&instance);
        let r = |s: &str| super::launch::render(s, scatter);
        let command = match &spec.command {
            Command::Argv(a) => {
                digest(std::iter::once("argv".to_string()).chain(a.iter().map(|s| r(s))))
            }
            Command::Shell(s) => digest(["shell".to_string(), r(s)]),
        };
        let mut env: BTreeMap<String, String> = self.wf_defaults.env.clone();
        for (k, v) in &spec.env {
            env.insert(k.clone(), r(v));
        }
        if let Some((_, v, i)) = scatter {
            env.insert("TOIL_SCATTER_INDEX".into(), i.to_string());
            env.insert("TOIL_SCATTER_VALUE".into(), v.to_string());
        }
        let env = digest(env.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()]));
        let outputs = digest(spec.outputs.iter().flat_map(|o| {
            let mut v = vec![o.name.clone(), o.optional.to_string()];
            v.extend(o.patterns.iter().map(|p| r(p)));
            v.push(String::new());
            v
        }));
        let mut files = Vec::new();
        let mut wiring = Vec::new();
        for input in &spec.inputs {
            wiring.push(r(&input.dest));
            wiring.push(input.writable.to_string());
            match &input.source {
                InputSource::Local(p) => {
                    let sha = self
                        .imports
                        .get(p)
                        .map(|f| f.sha256.clone())
                        .unwrap_or_default();
                    wiring.push(format!("file:{}", p.display()));
                    files.push((p.display().to_string(), sha));
                }
                InputSource::JobOutput { job, output } => {
                    wiring.push(format!("from:{job}.{output}"));
                }
            }
        }
        let mut upstream = Vec::new();
        for name in &spec.after {
            if let Some(&d) = self.by_name.get(name.as_str()) {
                let d = &self.templates[d as usize];
                upstream.extend(d.first..d.first + d.count);
            }
        }
        Parts {
            command,
            image: t.res.image.clone(),
            env,
            gpus: t.res.request.gpus,
            outputs,
            files,
            wiring: digest(wiring),
            upstream,
        }
    }

    /// The content key of every job of the workflow file, by job index.
    fn keys(&self) -> Vec<JobKey> {
        let n = self.static_job_count();
        let parts: Vec<Parts> = (0..n as JobIdx).map(|j| self.parts(j)).collect();
        let mut keys: Vec<Option<JobKey>> = vec![None; n];
        // Depth-first with an explicit stack: the graph is acyclic (the
        // parser refuses cycles), but it may be deep.
        for start in 0..n {
            let mut stack = vec![start];
            while let Some(&j) = stack.last() {
                if keys[j].is_some() {
                    stack.pop();
                    continue;
                }
                let missing: Vec<usize> = parts[j]
                    .upstream
                    .iter()
                    .map(|&u| u as usize)
                    .filter(|&u| u < n && keys[u].is_none())
                    .collect();
                if !missing.is_empty() {
                    stack.extend(missing);
                    continue;
                }
                let p = &parts[j];
                let mut h = Sha256::new();
                h.update(b"toil-job-key-v1");
                h.update(p.command);
                h.update(p.image.as_deref().unwrap_or("").as_bytes());
                h.update([p.image.is_some() as u8]);
                h.update(p.env);
                h.update(p.gpus.to_le_bytes());
                h.update(p.outputs);
                h.update(p.wiring);
                for (path, sha) in &p.files {
                    h.update(digest([path, sha]));
                }
                for &u in &p.upstream {
                    if let Some(k) = keys.get(u as usize).copied().flatten() {
                        h.update(k);
                    }
                }
                keys[j] = Some(h.finalize().into());
                stack.pop();
            }
        }
        keys.into_iter().map(|k| k.unwrap_or_default()).collect()
    }

    /// A core for `wf` with this core's defaults, retry policy and epoch,
    /// every job waiting or queued: the starting point of a rebase.
    pub fn successor(&self, wf: &Workflow, imports: HashMap<PathBuf, FileRef>) -> Core {
        let mut next = Core::new(wf, self.defaults, self.policy.clone());
        next.set_imports(imports);
        next.epoch = self.epoch;
        next
    }

    /// Compares this core (the stored workflow, as far as it ran) with
    /// `next` (the workflow as it is now, from [`Core::successor`]).
    pub fn plan_resume(&self, next: &Core) -> ResumePlan {
        let old_keys = self.keys();
        let new_keys = next.keys();
        let mut plan = ResumePlan::default();
        // Why each new job differs, filled in job order; upstream reasons
        // need the reasons of the jobs before them, so resolve lazily.
        let n = next.static_job_count();
        let mut runs_again = vec![false; n];
        let mut reasons: Vec<Option<Reason>> = vec![None; n];
        let mut old_of = vec![None; n];
        for (j, slot) in old_of.iter_mut().enumerate() {
            let id = next.job_id(j as JobIdx);
            if let Some(o) = self.lookup(&id).filter(|&o| (o as usize) < old_keys.len()) {
                *slot = Some(o);
            }
        }
        for j in 0..n {
            let Some(o) = old_of[j] else {
                runs_again[j] = true;
                continue;
            };
            let finished = self.jobs[o as usize].state == JobState::Succeeded;
            let same = old_keys[o as usize] == new_keys[j];
            if !same {
                runs_again[j] = true;
                reasons[j] = Some(self.explain(o, next, j as JobIdx));
            } else if !finished {
                runs_again[j] = true;
            }
        }
        // A job whose key differs only because an upstream job's does is
        // explained by that job; find the first upstream that runs again
        // with a changed key.
        for (j, reason) in reasons.iter_mut().enumerate() {
            if let Some(Reason::Upstream(_)) = reason {
                let p = next.parts(j as JobIdx);
                let culprit = p.upstream.iter().map(|&u| u as usize).find(|&u| {
                    u < n
                        && (old_of[u].is_none()
                            || old_keys[old_of[u].unwrap_or(0) as usize] != new_keys[u])
                });
                if let Some(u) = culprit {
                    let t = &next.templates[next.jobs[u].tmpl as usize];
                    *reason = Some(Reason::Upstream(t.spec.name.clone()));
                }
            }
        }
        for j in 0..n {
            let id = next.job_id(j as JobIdx);
            match (old_of[j], runs_again[j], reasons[j].take()) {
                (None, _, _) => plan.added.push(id),
                (Some(_), false, _) => plan.kept.push(id),
                (Some(o), true, Some(r)) if self.jobs[o as usize].state == JobState::Succeeded => {
                    plan.rerun.push((id, r))
                }
                (Some(_), true, _) => plan.unfinished += 1,
            }
        }
        for o in 0..self.static_job_count() {
            let id = self.job_id(o as JobIdx);
            if next.lookup(&id).is_none_or(|j| j as usize >= n) {
                plan.removed.push(id);
            }
        }
        plan
    }

    /// Why job `o` here and job `j` of `next` have different keys.
    fn explain(&self, o: JobIdx, next: &Core, j: JobIdx) -> Reason {
        let (a, b) = (self.parts(o), next.parts(j));
        if a.command != b.command {
            return Reason::Command;
        }
        if a.image != b.image {
            return Reason::Image;
        }
        if a.env != b.env {
            return Reason::Env;
        }
        if a.gpus != b.gpus {
            return Reason::Gpus;
        }
        if a.outputs != b.outputs {
            return Reason::Outputs;
        }
        if a.wiring != b.wiring {
            return Reason::Inputs;
        }
        if let Some((path, _)) = b.files.iter().find(|f| !a.files.contains(f)) {
            return Reason::InputFile(path.clone());
        }
        // Only upstream keys are left; the plan names which job.
        Reason::Upstream(String::new())
    }

    /// Moves to `next` (from [`Core::successor`]), keeping the finished
    /// jobs named in `kept` with their attempts and outputs, and journals
    /// the move as version `version`. Jobs added while the workflow ran
    /// (through the API) cannot be carried over; such a workflow is refused.
    pub fn apply_version(
        &mut self,
        version: u32,
        stored: StoredVersion,
        kept: Vec<String>,
    ) -> Result<(), CoreError> {
        self.check_rebasable()?;
        let next = self.successor(&stored.workflow, stored.imports.clone());
        let spec_sha256 = stored.spec_sha256.clone();
        self.versions.insert(version, stored);
        self.record(Kind::Version(WorkflowVersionEntry {
            version,
            spec_sha256,
            kept: kept.clone(),
        }));
        self.rebase(next, &kept)?;
        self.version = version;
        Ok(())
    }

    fn check_rebasable(&self) -> Result<(), CoreError> {
        if self.templates.len() > self.static_templates {
            return Err(CoreError::WrongState(
                "jobs were added to this workflow while it ran (through the API), and an edited workflow file cannot carry them over; resume it from the stored file (restore the file as it was), or start over with `toil-leader clean`".into(),
            ));
        }
        if self.jobs.iter().any(|j| j.state == JobState::Running) {
            return Err(CoreError::WrongState(
                "jobs of the old workflow are still running".into(),
            ));
        }
        Ok(())
    }

    /// Replaces the graph with `next`'s, carrying over the jobs in `kept`.
    fn rebase(&mut self, mut next: Core, kept: &[String]) -> Result<(), CoreError> {
        self.check_rebasable()?;
        let replaying = self.replaying;
        next.replaying = true;
        for id in kept {
            let o = self
                .lookup(id)
                .ok_or_else(|| CoreError::UnknownJob(id.clone()))?;
            if next.lookup(id).is_none() {
                return Err(CoreError::UnknownJob(id.clone()));
            }
            if self.jobs[o as usize].state != JobState::Succeeded {
                return Err(CoreError::WrongState(format!(
                    "job {id} is kept by a new workflow version but has not succeeded"
                )));
            }
        }
        // Every job keeps its attempt history, so attempt numbers (and the
        // job-store keys derived from them: results, outputs, logs) never
        // repeat across versions; a job removed by one version and brought
        // back by a later one continues from its retired attempts.
        let mut retired = std::mem::take(&mut self.retired);
        for o in 0..self.static_job_count() as JobIdx {
            let id = self.job_id(o);
            let attempts = std::mem::take(&mut self.jobs[o as usize].attempts);
            if !attempts.is_empty() {
                retired.insert(id, attempts);
            }
        }
        for n in 0..next.static_job_count() as JobIdx {
            if let Some(a) = retired.remove(&next.job_id(n)) {
                next.jobs[n as usize].attempts = a;
            }
        }
        for id in kept {
            let (Some(o), Some(n)) = (self.lookup(id), next.lookup(id)) else {
                continue;
            };
            let old = &mut self.jobs[o as usize];
            let new = &mut next.jobs[n as usize];
            new.outputs = old.outputs.take();
            new.retries_used = old.retries_used;
            new.infra_used = old.infra_used;
            next.set_state(n, JobState::Succeeded);
            next.complete(n);
        }
        next.retired = retired;
        next.replaying = replaying;
        next.journal = std::mem::take(&mut self.journal);
        next.versions = std::mem::take(&mut self.versions);
        next.version = self.version;
        next.epoch = self.epoch;
        next.ended_announced = false;
        *self = next;
        Ok(())
    }

    /// Where local input `path` was imported, if it was.
    pub fn imported(&self, path: &std::path::Path) -> Option<&FileRef> {
        self.imports.get(path)
    }

    /// The stored versions of the workflow, for replay.
    pub fn install_versions(&mut self, versions: HashMap<u32, StoredVersion>) {
        self.versions = versions;
    }

    /// The workflow this core runs, when it is an edited version (`None`
    /// for version 0, the file as first run).
    pub fn current_workflow(&self) -> Option<Arc<Workflow>> {
        self.versions
            .get(&self.version)
            .map(|v| v.workflow.clone())
            .filter(|_| self.version > 0)
    }

    /// The workflow version this core runs (0: the file as first run).
    pub fn version(&self) -> u32 {
        self.version
    }

    pub(crate) fn replay_version(&mut self, v: WorkflowVersionEntry) -> Result<(), CoreError> {
        let stored = self.versions.get(&v.version).cloned().ok_or_else(|| {
            CoreError::WrongState(format!(
                "the journal moves to workflow version {}, which is missing from the job store or unreadable there",
                v.version
            ))
        })?;
        if stored.spec_sha256 != v.spec_sha256 {
            return Err(CoreError::WrongState(format!(
                "workflow version {} in the job store was changed after it was journaled (its SHA-256 is {}, the journal says {}); restore it or start over with `toil-leader clean`",
                v.version, stored.spec_sha256, v.spec_sha256
            )));
        }
        let next = self.successor(&stored.workflow, stored.imports);
        self.rebase(next, &v.kept)?;
        self.version = v.version;
        Ok(())
    }
}

/// Formats a list of job ids compactly: scatter instances with the same
/// reason become `name[0..4]`.
pub fn compact_ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    // (name, first, last) of the run being built.
    let mut run: Option<(String, u64, u64)> = None;
    let flush = |run: &mut Option<(String, u64, u64)>, out: &mut Vec<String>| {
        if let Some((name, a, b)) = run.take() {
            out.push(if a == b {
                format!("{name}[{a}]")
            } else {
                format!("{name}[{a}..{b}]")
            });
        }
    };
    for id in ids {
        let inst = id
            .strip_suffix(']')
            .and_then(|s| s.rsplit_once('['))
            .and_then(|(n, i)| Some((n, i.parse::<u64>().ok()?)));
        match inst {
            Some((name, i)) => match &mut run {
                Some((rn, _, b)) if rn == name && *b + 1 == i => *b = i,
                _ => {
                    flush(&mut run, &mut out);
                    run = Some((name.to_string(), i, i));
                }
            },
            None => {
                flush(&mut run, &mut out);
                out.push(id.to_string());
            }
        }
    }
    flush(&mut run, &mut out);
    out
}

impl ResumePlan {
    /// One line for the terminal: `kept 12, rerun 3: a (command changed),
    /// b[0..4] (after a); new: d; removed: e`.
    pub fn describe(&self) -> String {
        let mut s = format!("kept {}, rerun {}", self.kept.len(), self.rerun.len());
        if !self.rerun.is_empty() {
            // Group consecutive ids with the same reason.
            let mut groups: Vec<(Vec<&str>, &Reason)> = Vec::new();
            for (id, r) in &self.rerun {
                match groups.last_mut() {
                    Some((ids, gr)) if *gr == r => ids.push(id),
                    _ => groups.push((vec![id], r)),
                }
            }
            let parts: Vec<String> = groups
                .into_iter()
                .map(|(ids, r)| format!("{} ({r})", compact_ids(ids).join(", ")))
                .collect();
            s.push_str(": ");
            s.push_str(&parts.join(", "));
        }
        if self.unfinished > 0 {
            s.push_str(&format!("; {} unfinished job(s) run", self.unfinished));
        }
        if !self.added.is_empty() {
            s.push_str(&format!(
                "; new: {}",
                compact_ids(self.added.iter().map(String::as_str)).join(", ")
            ));
        }
        if !self.removed.is_empty() {
            s.push_str(&format!(
                "; removed: {}",
                compact_ids(self.removed.iter().map(String::as_str)).join(", ")
            ));
        }
        s
    }
}

#[cfg(test)]
#[path = "resume_tests.rs"]
mod tests;
