//! Everything an agent needs to run one attempt, worked out from the
//! template, the scatter value and the outputs of the jobs it depends on.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use toil_proto::v1::{FileRef, OutputSpec, StagedInput};

use super::{Core, JobIdx, Request};
use crate::workflow::spec::{Command, InputSource};
use toil_jobstore::layout::attempt_id;

/// One attempt, ready to hand to an agent.
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchSpec {
    /// The job's id.
    pub job_id: String,
    /// The attempt number, from 1.
    pub attempt: u32,
    /// `JOB_ID.N`.
    pub attempt_id: String,
    /// The command's argument vector.
    pub argv: Vec<String>,
    /// Environment variables from the workflow (defaults, then the job's).
    pub env: BTreeMap<String, String>,
    /// Container image, if any.
    pub image: Option<String>,
    /// What the attempt gets.
    pub request: Request,
    /// Kill after this long.
    pub time_limit: Option<Duration>,
    /// Files to stage.
    pub inputs: Vec<StagedInput>,
    /// Outputs to collect.
    pub outputs: Vec<OutputSpec>,
    /// For a CWL job: the invocation, as JSON (`Assignment.cwl_invocation`).
    pub cwl_invocation: Option<String>,
}

/// The one output a CWL job declares: the agent reports every file it
/// stored under this name (`AttemptResult.cwl_outputs` says what each is).
pub const CWL_OUTPUT: &str = "cwl";

/// Replaces the scatter placeholders in `s`, if the job is scattered.
pub(super) fn render(s: &str, scatter: Option<(&str, &str, u64)>) -> String {
    match scatter {
        Some((var, value, index)) => crate::workflow::render(s, var, value, index),
        None => s.to_string(),
    }
}

/// A scatter instance: the variable's name, this instance's value and its
/// index.
pub(super) type Instance<'a> = Option<(&'a str, String, u64)>;

/// The borrowed form [`render`] takes.
pub(super) fn as_scatter<'a>(i: &'a Instance<'_>) -> Option<(&'a str, &'a str, u64)> {
    i.as_ref()
        .map(|(var, value, index)| (*var, value.as_str(), *index))
}

impl Core {
    /// Which scatter instance job `j` is (`None` for a job that is not
    /// scattered).
    pub(super) fn instance(&self, j: JobIdx) -> Instance<'_> {
        let t = &self.templates[self.jobs[j as usize].tmpl as usize];
        let index = u64::from(j - t.first);
        let s = t.spec.scatter.as_ref()?;
        Some((s.var.as_str(), s.values.get(index)?, index))
    }

    /// The launch description of attempt `n` of job `j`. Fails (with a
    /// message for a CONFIG_ERROR) when inputs cannot be resolved or collide.
    pub fn launch_spec(&self, j: JobIdx, n: u32) -> Result<LaunchSpec, String> {
        let job = &self.jobs[j as usize];
        let t = &self.templates[job.tmpl as usize];
        let spec = &t.spec;
        let instance = self.instance(j);
        let scatter = as_scatter(&instance);
        let argv = match &spec.command {
            Command::Argv(a) => a.iter().map(|s| render(s, scatter)).collect(),
            Command::Shell(s) => vec!["/bin/sh".into(), "-c".into(), render(s, scatter)],
        };
        let mut env = self.wf_defaults.env.clone();
        for (k, v) in &spec.env {
            env.insert(k.clone(), render(v, scatter));
        }
        if let Some((_, v, i)) = scatter {
            env.insert("TOIL_SCATTER_INDEX".into(), i.to_string());
            env.insert("TOIL_SCATTER_VALUE".into(), v.to_string());
        }

        let mut inputs = Vec::new();
        let mut dests = HashSet::new();
        let mut push = |file: FileRef, dest: String, writable: bool| -> Result<(), String> {
            if !dests.insert(dest.clone()) {
                return Err(format!(
                    "two inputs would both be staged at {dest:?}; give them different names (outputs gathered from a scatter need the scatter variable in their file names)"
                ));
            }
            inputs.push(StagedInput {
                file: Some(file),
                dest_path: dest,
                writable,
            });
            Ok(())
        };
        for input in &spec.inputs {
            let dest = render(&input.dest, scatter);
            match &input.source {
                InputSource::Local(path) => {
                    let file = self.imports.get(path).cloned().ok_or_else(|| {
                        format!(
                            "input {} was not imported into the job store",
                            path.display()
                        )
                    })?;
                    push(file, dest, input.writable)?;
                }
                InputSource::JobOutput { job: from, output } => {
                    for p in self.producers(from) {
                        let Some(files) = self.outputs(p).iter().find(|o| &o.name == output) else {
                            continue;
                        };
                        for f in &files.files {
                            let path = if dest.is_empty() {
                                f.path.clone()
                            } else {
                                format!("{}/{}", dest.trim_end_matches('/'), f.path)
                            };
                            push(f.clone(), path, input.writable)?;
                        }
                    }
                }
            }
        }
        if let Some(cwl) = &spec.cwl {
            let job_id = self.job_id(j);
            let mut request = t.res.request.clone();
            if let Some(a) = job.attempts.get(n as usize - 1) {
                request.memory = a.memory;
            }
            return Ok(LaunchSpec {
                attempt_id: attempt_id(&job_id, n),
                job_id,
                attempt: n,
                argv: Vec::new(),
                env: BTreeMap::new(),
                image: t.res.image.clone(),
                request,
                time_limit: t.res.time_limit,
                inputs: cwl.staged.clone(),
                outputs: vec![OutputSpec {
                    name: CWL_OUTPUT.into(),
                    patterns: vec!["**".into()],
                    optional: true,
                }],
                cwl_invocation: Some(cwl.invocation.clone()),
            });
        }
        let outputs = spec
            .outputs
            .iter()
            .map(|o| OutputSpec {
                name: o.name.clone(),
                patterns: o.patterns.iter().map(|p| render(p, scatter)).collect(),
                optional: o.optional,
            })
            .collect();
        let mut request = t.res.request.clone();
        if let Some(a) = job.attempts.get(n as usize - 1) {
            request.memory = a.memory;
        }
        let job_id = self.job_id(j);
        Ok(LaunchSpec {
            attempt_id: attempt_id(&job_id, n),
            job_id,
            attempt: n,
            argv,
            env,
            image: t.res.image.clone(),
            request,
            time_limit: t.res.time_limit,
            inputs,
            outputs,
            cwl_invocation: None,
        })
    }

    /// The jobs whose outputs an input `from: NAME.output` gathers: every
    /// job of a template, or one job by id.
    fn producers(&self, name: &str) -> Vec<JobIdx> {
        if let Some(&t) = self.by_name.get(name) {
            let t = &self.templates[t as usize];
            return (t.first..t.first + t.count).collect();
        }
        self.lookup(name).into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_render() {
        assert_eq!(
            render("wc {{s}}.txt > {{index}}.out", Some(("s", "a", 7))),
            "wc a.txt > 7.out"
        );
        assert_eq!(render("no {{s}}", None), "no {{s}}");
    }
}
