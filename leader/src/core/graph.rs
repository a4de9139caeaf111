//! Building the job graph: static templates from the workflow file, and jobs
//! added while the workflow runs.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use toil_proto::v1::{AddJobsRequest, JobSpec, JobState, Relation};

use super::{Core, CoreError, CoreEvent, Job, JobIdx, Request, Resolved, Template, TmplIdx};
use crate::workflow::spec::{
    Command, CwlStep, InputSource, InputSpec, JobTemplate, OutputDecl, Pos, Workflow,
};

/// A job ready to be inserted: its template and the templates it waits for.
pub(crate) struct Planned {
    spec: JobTemplate,
    deps: Vec<TmplIdx>,
    /// Positions (in the same insert batch) of sibling jobs it waits for.
    sibling_deps: Vec<usize>,
}

impl Core {
    pub(crate) fn build_static(&mut self, wf: &Workflow) {
        for spec in &wf.jobs {
            let count = spec.scatter.as_ref().map_or(1, |s| s.values.len()) as u32;
            let scattered = spec.scatter.is_some();
            self.new_template(spec.clone(), count, scattered, None);
        }
        self.static_templates = self.templates.len();
        // Wire dependencies by name; the parser guarantees they resolve.
        for t in 0..self.templates.len() {
            let after = self.templates[t].spec.after.clone();
            let mut seen = HashSet::new();
            for name in after {
                let Some(&d) = self.by_name.get(name.as_str()) else {
                    continue;
                };
                if seen.insert(d) {
                    self.add_edge(d, t as TmplIdx);
                }
            }
        }
        self.settle_new(0);
    }

    /// Creates a template with `count` jobs, all WAITING with no deps yet.
    fn new_template(
        &mut self,
        spec: JobTemplate,
        count: u32,
        scattered: bool,
        parent: Option<JobIdx>,
    ) -> TmplIdx {
        let t = self.templates.len() as TmplIdx;
        let res = self.resolve(&spec);
        let first = self.jobs.len() as JobIdx;
        self.by_name.insert(spec.name.clone().into_boxed_str(), t);
        self.templates.push(Template {
            spec: Arc::new(spec),
            res,
            first,
            count,
            scattered,
            remaining: count,
            dependents: Vec::new(),
            doomed: false,
        });
        self.jobs.reserve(count as usize);
        for _ in 0..count {
            self.jobs.push(Job {
                tmpl: t,
                parent,
                state: JobState::Waiting,
                deps_left: 0,
                retries_used: 0,
                infra_used: 0,
                in_ready: false,
                attempts: Vec::new(),
                outputs: None,
                blocked_by: None,
                cancel_requested: false,
                cwl_outputs: None,
            });
        }
        self.counts[JobState::Waiting] += count as u64;
        t
    }

    /// Makes every job of `t` wait for template `d` (unless `d` is already
    /// complete).
    fn add_edge(&mut self, d: TmplIdx, t: TmplIdx) {
        if self.templates[d as usize].remaining == 0 && !self.templates[d as usize].doomed {
            return;
        }
        self.templates[d as usize].dependents.push(t);
        let tt = &self.templates[t as usize];
        for j in tt.first..tt.first + tt.count {
            self.jobs[j as usize].deps_left += 1;
        }
    }

    /// After inserting jobs from index `from`: queue those with nothing to
    /// wait for, block those waiting on a doomed template, and release
    /// dependents of templates that are already complete (empty scatters).
    pub(crate) fn settle_new(&mut self, from: usize) {
        let first_tmpl = self
            .jobs
            .get(from)
            .map_or(self.templates.len(), |j| j.tmpl as usize);
        for t in first_tmpl..self.templates.len() {
            if self.templates[t].count == 0 {
                self.release(t as TmplIdx);
            }
        }
        for j in from..self.jobs.len() {
            let j = j as JobIdx;
            if self.jobs[j as usize].state != JobState::Waiting {
                continue;
            }
            let blocker = self.doomed_dependency(j);
            if let Some(by) = blocker {
                self.jobs[j as usize].blocked_by = Some(by);
                self.set_state(j, JobState::Blocked);
                self.doom(j, by);
            } else if self.jobs[j as usize].deps_left == 0 {
                self.set_state(j, JobState::Queued);
                self.push_ready(j);
            }
        }
    }

    /// If a template this job waits for can never complete, a job that
    /// caused that.
    fn doomed_dependency(&self, j: JobIdx) -> Option<JobIdx> {
        let t = self.jobs[j as usize].tmpl;
        for (d, tmpl) in self.templates.iter().enumerate() {
            if tmpl.doomed && tmpl.dependents.contains(&t) {
                let d = &self.templates[d];
                return Some(
                    (d.first..d.first + d.count)
                        .find(|&i| {
                            matches!(
                                self.jobs[i as usize].state,
                                JobState::Failed | JobState::Blocked | JobState::Cancelled
                            )
                        })
                        .unwrap_or(d.first),
                );
            }
        }
        None
    }

    pub(crate) fn resolve(&self, spec: &JobTemplate) -> Resolved {
        let d = &self.wf_defaults;
        Resolved {
            request: Request {
                millicores: spec
                    .millicores
                    .or(d.millicores)
                    .unwrap_or(self.defaults.millicores),
                memory: spec.memory.or(d.memory).unwrap_or(self.defaults.memory),
                disk: spec.disk.or(d.disk).unwrap_or(self.defaults.disk),
                gpus: spec.gpus,
                preemptible: spec.preemptible,
            },
            retries: spec.retries.or(d.retries).unwrap_or(self.defaults.retries),
            time_limit: spec.time_limit,
            image: spec.image.clone().or_else(|| d.image.clone()),
        }
    }

    /// Resolves a dependency name: a template name, a dynamic job's id, or
    /// a static scatter instance `name[i]` (which waits for the whole
    /// template: conservative, never early).
    fn resolve_dep(&self, name: &str) -> Option<TmplIdx> {
        if let Some(&t) = self.by_name.get(name) {
            return Some(t);
        }
        let j = self.lookup(name)?;
        Some(self.jobs[j as usize].tmpl)
    }

    /// Checks a batch of added jobs and works out their templates and
    /// dependencies, without changing anything.
    ///
    /// `prefix` is the parent's id plus `/` for children and follow-ons, or
    /// empty for top-level jobs; `pending` holds ids staged earlier by the
    /// same attempt, which the batch may refer to.
    pub(crate) fn plan_dynamic(
        &self,
        req: &AddJobsRequest,
        prefix: &str,
        pending: &HashSet<String>,
    ) -> Result<Vec<Planned>, CoreError> {
        let bad = |m: String| Err(CoreError::InvalidJobs(m));
        if req.jobs.is_empty() {
            return bad("no jobs given".into());
        }
        let max = crate::workflow::limits::MAX_ADDED_JOBS;
        if req.jobs.len() + pending.len() > max {
            return bad(format!(
                "{} jobs given{}; one call, or one running job in all, may add at most {max}",
                req.jobs.len(),
                if pending.is_empty() {
                    String::new()
                } else {
                    format!(" after {} added by this job before", pending.len())
                }
            ));
        }
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, spec) in req.jobs.iter().enumerate() {
            if let Err(m) = check_name(&spec.name) {
                return bad(format!("job #{}: {m}", i + 1));
            }
            if names.insert(spec.name.as_str(), i).is_some() {
                return bad(format!(
                    "job name {:?} is used twice in one request",
                    spec.name
                ));
            }
            let id = format!("{prefix}{}", spec.name);
            if self.by_name.contains_key(id.as_str()) || pending.contains(&id) {
                return bad(format!(
                    "a job with id {id:?} already exists; choose another name"
                ));
            }
        }
        let mut planned = Vec::with_capacity(req.jobs.len());
        for spec in &req.jobs {
            let id = format!("{prefix}{}", spec.name);
            let mut deps = Vec::new();
            let mut sibling_deps = Vec::new();
            let mut after = Vec::new();
            let mut want = |dep: &str, what: &str| -> Result<(), CoreError> {
                if let Some(&i) = names.get(dep) {
                    sibling_deps.push(i);
                    after.push(format!("{prefix}{dep}"));
                    return Ok(());
                }
                let full = format!("{prefix}{dep}");
                if pending.contains(&full) {
                    // Staged by an earlier request of the same attempt: it
                    // will exist (and be complete or pending) when this one
                    // is committed right after it.
                    after.push(full);
                    return Ok(());
                }
                match self.resolve_dep(dep) {
                    Some(t) => {
                        deps.push(t);
                        after.push(dep.to_string());
                        Ok(())
                    }
                    None => Err(CoreError::InvalidJobs(format!(
                        "job {id:?}: {what} {dep:?} is not a job in this workflow"
                    ))),
                }
            };
            for dep in &spec.depends_on {
                want(dep, "depends_on")?;
            }
            for input in &spec.inputs {
                want(&input.job_id, "input from job")?;
                // The producer must declare the output, as in a workflow
                // file; else the job would run without the files it wants.
                let declared: Option<Vec<&str>> = match names.get(input.job_id.as_str()) {
                    Some(&i) => Some(
                        req.jobs[i]
                            .outputs
                            .iter()
                            .map(|o| o.name.as_str())
                            .collect(),
                    ),
                    None => self.resolve_dep(&input.job_id).map(|t| {
                        self.templates[t as usize]
                            .spec
                            .outputs
                            .iter()
                            .map(|o| o.name.as_str())
                            .collect()
                    }),
                };
                if let Some(declared) = declared
                    && !declared.contains(&input.output.as_str())
                {
                    return bad(format!(
                        "job {id:?}: input from job {:?} names output {:?}, which that job does not declare (it declares: {})",
                        input.job_id,
                        input.output,
                        if declared.is_empty() {
                            "none".to_string()
                        } else {
                            declared.join(", ")
                        }
                    ));
                }
            }
            let template = template_from_spec(spec, id.clone(), after)
                .map_err(|m| CoreError::InvalidJobs(format!("job {id:?}: {m}")))?;
            planned.push(Planned {
                spec: template,
                deps,
                sibling_deps,
            });
        }
        Ok(planned)
    }

    /// Inserts planned jobs. `parent` is the job that added them (children
    /// and follow-ons), `extra_deps` templates every new job also waits for
    /// (a follow-on's siblings). Returns the new jobs.
    pub(crate) fn insert_planned(
        &mut self,
        planned: Vec<Planned>,
        parent: Option<JobIdx>,
        extra_deps: &[TmplIdx],
    ) -> Vec<JobIdx> {
        let from = self.jobs.len();
        let base_tmpl = self.templates.len() as TmplIdx;
        let mut deps_of = Vec::with_capacity(planned.len());
        for p in planned {
            let mut deps: Vec<TmplIdx> = p.deps;
            deps.extend(p.sibling_deps.iter().map(|&i| base_tmpl + i as TmplIdx));
            // Dependencies on jobs staged by the same attempt resolve now
            // that they have been committed.
            for name in &p.spec.after {
                if let Some(&t) = self.by_name.get(name.as_str())
                    && !deps.contains(&t)
                {
                    deps.push(t);
                }
            }
            deps.extend_from_slice(extra_deps);
            deps.sort_unstable();
            deps.dedup();
            deps_of.push(deps);
            self.new_template(p.spec, 1, false, parent);
        }
        // A parent's template (and its ancestors') cannot complete until the
        // new jobs have succeeded.
        let n = deps_of.len() as u32;
        let mut cur = parent;
        while let Some(p) = cur {
            let t = self.jobs[p as usize].tmpl as usize;
            self.templates[t].remaining += n;
            cur = self.jobs[p as usize].parent;
        }
        for (i, deps) in deps_of.into_iter().enumerate() {
            let t = base_tmpl + i as TmplIdx;
            for d in deps {
                if d != t {
                    self.add_edge(d, t);
                }
            }
        }
        let new: Vec<JobIdx> = (from as JobIdx..self.jobs.len() as JobIdx).collect();
        if !self.replaying {
            self.events.push(CoreEvent::JobsAdded { jobs: new.clone() });
        }
        self.settle_new(from);
        new
    }

    /// Adds top-level jobs from a client.
    pub fn add_root_jobs(&mut self, req: AddJobsRequest) -> Result<Vec<String>, CoreError> {
        let planned = self.plan_dynamic(&req, "", &HashSet::new())?;
        if self.cancelled {
            return Err(CoreError::WrongState(
                "the workflow has been cancelled; no jobs can be added".into(),
            ));
        }
        self.record(toil_proto::v1::journal_entry::Kind::Added(
            toil_proto::v1::JobsAddedEntry { request: Some(req) },
        ));
        let new = self.insert_planned(planned, None, &[]);
        Ok(new.iter().map(|&j| self.job_id(j)).collect())
    }

    /// Holds jobs added by a running job's current attempt until it ends;
    /// they join the workflow only if it succeeds. Returns their ids.
    pub fn stage_jobs(
        &mut self,
        parent: JobIdx,
        mut req: AddJobsRequest,
    ) -> Result<Vec<String>, CoreError> {
        let pid = self.job_id(parent);
        let job = &self.jobs[parent as usize];
        if job.state != JobState::Running {
            return Err(CoreError::WrongState(format!(
                "job {pid} is not running; children can only be added by a running job (add top-level jobs with relation ROOT instead)"
            )));
        }
        if !matches!(
            Relation::try_from(req.relation),
            Ok(Relation::Child | Relation::FollowOn)
        ) {
            return Err(CoreError::InvalidJobs(
                "relation must be CHILD or FOLLOW_ON when adding jobs to a running job".into(),
            ));
        }
        let prefix = format!("{pid}/");
        let pending = self.staged_ids(parent);
        let planned = self.plan_dynamic(&req, &prefix, &pending)?;
        let ids = planned.iter().map(|p| p.spec.name.clone()).collect();
        req.parent_job_id = pid;
        let Some(attempt) = self.jobs[parent as usize].attempts.last_mut() else {
            return Err(CoreError::WrongState("job has no attempt".into()));
        };
        attempt.staged.push(req);
        Ok(ids)
    }

    fn staged_ids(&self, parent: JobIdx) -> HashSet<String> {
        let pid = self.job_id(parent);
        let mut ids = HashSet::new();
        if let Some(a) = self.jobs[parent as usize].attempts.last() {
            for r in &a.staged {
                for s in &r.jobs {
                    ids.insert(format!("{pid}/{}", s.name));
                }
            }
        }
        ids
    }

    /// Commits the jobs a succeeded attempt staged: children first, then
    /// follow-ons, which wait for those children.
    pub(crate) fn commit_staged(&mut self, parent: JobIdx, staged: &[AddJobsRequest]) {
        let prefix = format!("{}/", self.job_id(parent));
        let mut children: Vec<TmplIdx> = Vec::new();
        for relation in [Relation::Child, Relation::FollowOn] {
            for req in staged.iter().filter(|r| r.relation == relation as i32) {
                let planned = match self.plan_dynamic(req, &prefix, &HashSet::new()) {
                    Ok(p) => p,
                    Err(e) => {
                        // Checked when staged; can only fail if the graph
                        // changed incompatibly since. Skip rather than abort.
                        tracing::warn!(parent = %prefix, error = %e, "dropping staged jobs");
                        continue;
                    }
                };
                let extra = if relation == Relation::FollowOn {
                    children.clone()
                } else {
                    Vec::new()
                };
                let new = self.insert_planned(planned, Some(parent), &extra);
                if relation == Relation::Child {
                    children.extend(new.iter().map(|&j| self.jobs[j as usize].tmpl));
                }
            }
        }
    }
}

/// Job names: letters, digits, `-` and `_`, at most 63 characters.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a job needs a name".into());
    }
    if name.len() > 63 {
        return Err(format!("job name {name:?} is longer than 63 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "job name {name:?} may only hold letters, digits, '-' and '_'"
        ));
    }
    Ok(())
}

/// Turns a client's job description into a template.
fn template_from_spec(
    spec: &JobSpec,
    id: String,
    after: Vec<String>,
) -> Result<JobTemplate, String> {
    let cwl = if spec.cwl_invocation.is_empty() {
        if !spec.staged_files.is_empty() {
            return Err("staged_files is only for CWL jobs (with cwl_invocation)".into());
        }
        None
    } else {
        if !spec.argv.is_empty() || !spec.shell.is_empty() || !spec.outputs.is_empty() {
            return Err(
                "a CWL job (cwl_invocation) has no argv, shell or outputs: the agent builds them from the invocation".into(),
            );
        }
        for s in &spec.staged_files {
            if s.file.is_none() || !crate::driver::checks::plain_relative(&s.dest_path) {
                return Err(format!(
                    "staged file {:?} needs a file and a plain relative dest_path",
                    s.dest_path
                ));
            }
        }
        Some(Box::new(CwlStep {
            invocation: spec.cwl_invocation.clone(),
            staged: spec.staged_files.clone(),
        }))
    };
    let command = match (spec.argv.is_empty(), spec.shell.is_empty()) {
        _ if cwl.is_some() => Command::Argv(Vec::new()),
        (false, true) => Command::Argv(spec.argv.clone()),
        (true, false) => Command::Shell(spec.shell.clone()),
        (true, true) => return Err("give either argv or shell".into()),
        (false, false) => return Err("give argv or shell, not both".into()),
    };
    let r = spec.resources.unwrap_or_default();
    let time_limit = match &spec.time_limit {
        Some(d) if d.seconds < 0 || d.nanos < 0 => return Err("time_limit is negative".into()),
        Some(d) => Some(crate::workflow::limits::check_time_limit(Duration::new(
            d.seconds as u64,
            d.nanos.clamp(0, 999_999_999) as u32,
        ))?),
        None => None,
    };
    {
        use crate::workflow::limits::{MAX_BYTES, MAX_GPUS, MAX_MILLICORES};
        if r.memory_bytes > MAX_BYTES || r.disk_bytes > MAX_BYTES {
            return Err(format!(
                "memory and disk may be at most {MAX_BYTES} bytes (1 PiB) each"
            ));
        }
        if r.millicores > MAX_MILLICORES {
            return Err(format!(
                "millicores may be at most {MAX_MILLICORES} (100,000 cores)"
            ));
        }
        if r.gpus > MAX_GPUS {
            return Err(format!("gpus may be at most {MAX_GPUS}"));
        }
    }
    let mut seen_outputs = HashSet::new();
    let mut outputs = Vec::new();
    for o in &spec.outputs {
        if !seen_outputs.insert(o.name.clone()) {
            return Err(format!("output {:?} is declared twice", o.name));
        }
        if o.patterns.is_empty() {
            return Err(format!("output {:?} has no patterns", o.name));
        }
        outputs.push(OutputDecl {
            name: o.name.clone(),
            patterns: o.patterns.clone(),
            optional: o.optional,
        });
    }
    let inputs = spec
        .inputs
        .iter()
        .map(|i| {
            if i.dest_dir.split('/').any(|c| c == "..") || i.dest_dir.starts_with('/') {
                return Err(format!(
                    "input dest_dir {:?} must be a relative path without '..'",
                    i.dest_dir
                ));
            }
            Ok(InputSpec {
                source: InputSource::JobOutput {
                    job: i.job_id.clone(),
                    output: i.output.clone(),
                },
                dest: i.dest_dir.clone(),
                writable: i.writable,
                pos: Pos::default(),
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(JobTemplate {
        name: id,
        pos: Pos::default(),
        command,
        env: spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        image: (!spec.image.is_empty()).then(|| spec.image.clone()),
        millicores: (r.millicores > 0).then_some(r.millicores),
        memory: (r.memory_bytes > 0).then_some(r.memory_bytes),
        disk: (r.disk_bytes > 0).then_some(r.disk_bytes),
        gpus: r.gpus,
        preemptible: r.preemptible,
        time_limit,
        retries: spec.retries,
        after,
        inputs,
        outputs,
        scatter: None,
        resources_pos: Pos::default(),
        cwl,
    })
}
