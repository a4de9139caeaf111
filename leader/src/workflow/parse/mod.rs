//! From the YAML tree to workflow types, one file section at a time.
//!
//! Everything that can be checked by looking at one job is checked here
//! (types, units, names, placeholders); what needs the whole workflow
//! (references, cycles, input files) is left to `validate`. Problems are
//! collected, never returned early, so one run shows every mistake.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use super::diag::{Sink, did_you_mean, quoted_list};
use super::spec::{
    Command, Defaults, InputSpec, JobTemplate, OutputDecl, Pos, Scatter, ScatterValues,
};
use super::template::{INDEX, placeholders};
use super::units;
use super::yaml::{Entry, Kind, Node};

mod fields;
mod values;

pub(crate) use values::{check_job_name, clean_relative};
use values::{default_name, suggest_job_name, valid_export_name, valid_workflow_name};

const TOP_KEYS: &[&str] = &["name", "defaults", "jobs", "outputs"];
const DEFAULT_KEYS: &[&str] = &["cores", "memory", "disk", "retries", "image", "env"];
const JOB_KEYS: &[&str] = &[
    "command",
    "inputs",
    "outputs",
    "scatter",
    "after",
    "cores",
    "memory",
    "disk",
    "gpus",
    "preemptible",
    "time_limit",
    "retries",
    "env",
    "image",
];
const LOCAL_INPUT_KEYS: &[&str] = &["path", "as", "writable"];
const FROM_INPUT_KEYS: &[&str] = &["from", "as", "writable"];
const OUTPUT_KEYS: &[&str] = &["patterns", "optional"];
const RANGE_KEYS: &[&str] = &["range"];

/// Names other tools use for our keys, so a newcomer is pointed to ours.
const SYNONYMS: &[(&str, &str)] = &[
    ("cpu", "cores"),
    ("cpus", "cores"),
    ("threads", "cores"),
    ("mem", "memory"),
    ("ram", "memory"),
    ("storage", "disk"),
    ("scratch", "disk"),
    ("depends_on", "after"),
    ("depends", "after"),
    ("dependencies", "after"),
    ("needs", "after"),
    ("requires", "after"),
    ("deps", "after"),
    ("container", "image"),
    ("docker", "image"),
    ("singularity", "image"),
    ("cmd", "command"),
    ("run", "command"),
    ("script", "command"),
    ("shell", "command"),
    ("timeout", "time_limit"),
    ("walltime", "time_limit"),
    ("runtime", "time_limit"),
    ("time", "time_limit"),
    ("environment", "env"),
    ("retry", "retries"),
    ("max_retries", "retries"),
    ("attempts", "retries"),
    ("gpu", "gpus"),
    ("spot", "preemptible"),
    ("preemptable", "preemptible"),
    ("input", "inputs"),
    ("output", "outputs"),
    ("foreach", "scatter"),
    ("for_each", "scatter"),
    ("matrix", "scatter"),
    ("steps", "jobs"),
    ("tasks", "jobs"),
    ("job", "jobs"),
    ("default", "defaults"),
    ("pattern", "patterns"),
    ("glob", "patterns"),
    ("dest", "as"),
    ("to", "as"),
    ("file", "path"),
];

/// Where placeholders are allowed: the fields of a scattered job that are
/// rendered per instance.
const PLACEHOLDER_FIELDS: &str = "command, env values, output patterns and inputs' as:";

/// The file's content, checked one section at a time.
pub(crate) struct Parsed {
    pub name: String,
    pub defaults: Defaults,
    pub jobs: Vec<RawJob>,
    pub outputs: Vec<RawWorkflowOutput>,
}

/// A job before references between jobs are resolved.
pub(crate) struct RawJob {
    /// Everything except `after` and `inputs`, which `validate` fills.
    pub template: JobTemplate,
    /// `after:` entries as written.
    pub after: Vec<Ref>,
    /// `inputs:` entries as written.
    pub inputs: Vec<RawInput>,
    /// For each output (same order as `template.outputs`): where each
    /// pattern is written.
    pub pattern_pos: Vec<Vec<Pos>>,
}

/// A job name where it is mentioned.
pub(crate) struct Ref {
    pub name: String,
    pub pos: Pos,
}

/// An input before its source is resolved.
pub(crate) enum RawInput {
    /// A local file, not yet checked for existence.
    Local {
        spec: InputSpec,
        /// The path as written, and where.
        path: String,
        path_pos: Pos,
    },
    /// `from: JOB.OUTPUT` (or `from: JOB`, every output of JOB).
    From {
        job: String,
        output: Option<String>,
        dest: String,
        writable: bool,
        pos: Pos,
        /// Where the `from:` value is written.
        ref_pos: Pos,
    },
}

/// A workflow output before its reference is resolved.
pub(crate) struct RawWorkflowOutput {
    pub name: String,
    pub job: String,
    pub output: Option<String>,
    pub pos: Pos,
}

/// Converts the document's root node.
pub(crate) fn workflow(root: &Node, source: &Path, sink: &mut Sink) -> Parsed {
    let mut c = Conv { sink };
    c.workflow(root, source)
}

struct Conv<'s> {
    sink: &'s mut Sink,
}

impl Conv<'_> {
    fn workflow(&mut self, root: &Node, source: &Path) -> Parsed {
        let mut parsed = Parsed {
            name: default_name(source),
            defaults: Defaults::default(),
            jobs: Vec::new(),
            outputs: Vec::new(),
        };
        let entries = match &root.kind {
            Kind::Map(e) => e.as_slice(),
            Kind::Null => {
                self.sink.error(
                    root.pos,
                    "the workflow file is empty",
                    "a workflow needs at least a jobs: section; see examples/hello.yaml",
                );
                return parsed;
            }
            Kind::Invalid => return parsed,
            _ => {
                self.sink.error(
                    root.pos,
                    format!(
                        "a workflow file must be a mapping of sections, not {}",
                        root.describe()
                    ),
                    "start with `jobs:` (and optionally name:, defaults:, outputs:)",
                );
                return parsed;
            }
        };
        self.duplicates(entries, |k| format!("duplicate section \"{k}\""));
        let mut saw_jobs = false;
        for e in entries {
            match e.key.as_str() {
                "name" => {
                    if let Some(name) = self.string(&e.value, "\"name\"") {
                        if valid_workflow_name(&name) {
                            parsed.name = name;
                        } else {
                            self.sink.error(
                                e.value.pos,
                                format!("invalid workflow name \"{name}\""),
                                "use at most 63 letters, digits, -, _ and ., starting and ending \
                                 with a letter or digit",
                            );
                        }
                    }
                }
                "defaults" => parsed.defaults = self.defaults(&e.value),
                "jobs" => {
                    saw_jobs = true;
                    parsed.jobs = self.jobs(e);
                }
                "outputs" => parsed.outputs = self.workflow_outputs(&e.value),
                _ => {
                    let mut hint = None;
                    if let Kind::Map(inner) = &e.value.kind
                        && inner.iter().any(|i| i.key == "command")
                    {
                        hint = Some(format!(
                            "\"{}\" looks like a job: jobs go under `jobs:`, indented",
                            e.key
                        ));
                    }
                    self.unknown_key(e, TOP_KEYS, "at the top level", hint);
                }
            }
        }
        if !saw_jobs {
            self.sink.error(
                root.pos,
                "the workflow has no jobs: section",
                "add `jobs:` with at least one job, e.g.\njobs:\n  hello:\n    command: echo hello",
            );
        }
        parsed
    }

    // === sections ===

    fn defaults(&mut self, node: &Node) -> Defaults {
        let mut d = Defaults::default();
        let Some(entries) = self.map(
            node,
            "\"defaults\"",
            "cores:, memory:, disk:, retries:, image:, env:",
        ) else {
            return d;
        };
        self.duplicates(entries, |k| format!("duplicate key \"{k}\" in defaults"));
        for e in entries {
            let what = format!("\"{}\" in defaults", e.key);
            if matches!(e.value.kind, Kind::Null | Kind::Invalid) {
                continue;
            }
            match e.key.as_str() {
                "cores" => d.millicores = self.cores(&e.value, &what),
                "memory" => d.memory = self.memory(&e.value, &what),
                "disk" => d.disk = self.size(&e.value, &what),
                "retries" => d.retries = self.uint(&e.value, &what),
                "image" => {
                    d.image = self.image(&e.value, &what);
                    if let Some(image) = &d.image {
                        self.no_placeholders(image, e.value.pos, "defaults");
                    }
                }
                "env" => {
                    let env = self.env(&e.value, "defaults");
                    for (value, pos) in env.values() {
                        self.no_placeholders(value, *pos, "defaults");
                    }
                    d.env = env.into_iter().map(|(k, (v, _))| (k, v)).collect();
                }
                k if JOB_KEYS.contains(&k) => self.sink.error(
                    e.key_pos,
                    format!("\"{k}\" can't be set in defaults"),
                    format!(
                        "set it on each job that needs it; defaults takes {}",
                        quoted_list(DEFAULT_KEYS)
                    ),
                ),
                _ => self.unknown_key(e, DEFAULT_KEYS, "in defaults", None),
            }
        }
        d
    }

    fn jobs(&mut self, section: &Entry) -> Vec<RawJob> {
        let node = &section.value;
        let entries = match &node.kind {
            Kind::Map(e) if !e.is_empty() => e.as_slice(),
            Kind::Map(_) | Kind::Null => {
                self.sink.error(
                    section.key_pos,
                    "the workflow has no jobs",
                    "add at least one job under jobs:, e.g.\njobs:\n  hello:\n    command: echo hello",
                );
                return Vec::new();
            }
            Kind::Invalid => return Vec::new(),
            Kind::Seq(_) => {
                self.sink.error(
                    node.pos,
                    "\"jobs\" must be a mapping from job names to jobs, not a list",
                    "write each job as `NAME:` followed by its settings, e.g.\njobs:\n  hello:\n    \
                     command: echo hello",
                );
                return Vec::new();
            }
            Kind::Scalar { .. } => {
                self.sink.error(
                    node.pos,
                    "\"jobs\" must be a mapping from job names to jobs",
                    "write each job as `NAME:` followed by its settings, e.g.\njobs:\n  hello:\n    \
                     command: echo hello",
                );
                return Vec::new();
            }
        };
        self.duplicates(entries, |k| format!("duplicate job \"{k}\""));
        // Jobs whose names are the same to Kubernetes (case, `_` vs `-`).
        let mut k8s_names: HashMap<String, (&str, Pos)> = HashMap::with_capacity(entries.len());
        let mut jobs = Vec::with_capacity(entries.len());
        for e in entries {
            if let Err(why) = check_job_name(&e.key) {
                self.sink.error(
                    e.key_pos,
                    format!("invalid job name \"{}\": {why}", e.key),
                    format!(
                        "job names use letters, digits, - and _, start and end with a letter or \
                         digit, and have at most 63 characters (they become part of Kubernetes \
                         names), e.g. \"{}\"",
                        suggest_job_name(&e.key)
                    ),
                );
            } else {
                let k8s = e.key.to_ascii_lowercase().replace('_', "-");
                if let Some((other, at)) = k8s_names.get(&k8s) {
                    if *other != e.key {
                        self.sink.error(
                            e.key_pos,
                            format!(
                                "job names \"{other}\" (at {at}) and \"{}\" are the same name to \
                                 Kubernetes",
                                e.key
                            ),
                            "Kubernetes names are lowercase and write _ as -; rename one of the \
                             jobs",
                        );
                    }
                } else {
                    k8s_names.insert(k8s, (e.key.as_str(), e.key_pos));
                }
            }
            jobs.push(self.job(e));
        }
        jobs
    }

    fn job(&mut self, e: &Entry) -> RawJob {
        let name = e.key.as_str();
        let mut t = JobTemplate {
            name: name.to_string(),
            pos: e.key_pos,
            command: Command::Argv(Vec::new()),
            env: BTreeMap::new(),
            image: None,
            millicores: None,
            memory: None,
            disk: None,
            gpus: 0,
            preemptible: false,
            time_limit: None,
            retries: None,
            after: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            scatter: None,
            resources_pos: e.key_pos,
            cwl: None,
        };
        let mut raw = RawJob {
            template: t.clone(),
            after: Vec::new(),
            inputs: Vec::new(),
            pattern_pos: Vec::new(),
        };
        let entries: &[Entry] = match &e.value.kind {
            Kind::Map(m) => m,
            Kind::Null => &[],
            Kind::Invalid => return raw,
            _ => {
                self.sink.error(
                    e.value.pos,
                    format!(
                        "job \"{name}\" must be a mapping of settings, not {}",
                        e.value.describe()
                    ),
                    format!("put the command under command:, e.g.\n{name}:\n  command: echo hello"),
                );
                return raw;
            }
        };
        self.duplicates(entries, |k| {
            format!("duplicate key \"{k}\" in job \"{name}\"")
        });
        // Strings that may hold placeholders, checked once the scatter is known.
        let mut templated: Vec<(String, Pos)> = Vec::new();
        let mut command_seen = false;
        // A scatter that failed to parse: its placeholders can't be checked.
        let mut scatter_failed = false;
        let mut resources_pos: Option<Pos> = None;
        for f in entries {
            let key = f.key.as_str();
            let what = format!("\"{key}\" in job \"{name}\"");
            if matches!(key, "cores" | "memory" | "disk" | "gpus") && resources_pos.is_none() {
                resources_pos = Some(f.key_pos);
            }
            if matches!(f.value.kind, Kind::Invalid) {
                if key == "command" {
                    command_seen = true;
                }
                continue;
            }
            if matches!(f.value.kind, Kind::Null) && key != "command" {
                // `key:` with nothing after it: the same as leaving it out.
                continue;
            }
            match key {
                "command" => {
                    command_seen = true;
                    if let Some(cmd) = self.command(&f.value, name) {
                        match &cmd {
                            Command::Shell(s) => templated.push((s.clone(), f.value.pos)),
                            Command::Argv(args) => {
                                templated.extend(args.iter().map(|a| (a.clone(), f.value.pos)))
                            }
                        }
                        t.command = cmd;
                    }
                }
                "inputs" => raw.inputs = self.inputs(&f.value, name, &mut templated),
                "outputs" => {
                    let (outputs, pos) = self.outputs(&f.value, name);
                    for (o, ps) in outputs.iter().zip(&pos) {
                        templated.extend(o.patterns.iter().cloned().zip(ps.iter().copied()));
                    }
                    t.outputs = outputs;
                    raw.pattern_pos = pos;
                }
                "scatter" => {
                    t.scatter = self.scatter(&f.value, name);
                    scatter_failed = t.scatter.is_none();
                }
                "after" => raw.after = self.after(&f.value, name),
                "cores" => t.millicores = self.cores(&f.value, &what),
                "memory" => t.memory = self.memory(&f.value, &what),
                "disk" => t.disk = self.size(&f.value, &what),
                "gpus" => t.gpus = self.uint(&f.value, &what).unwrap_or(0),
                "preemptible" => t.preemptible = self.boolean(&f.value, &what).unwrap_or(false),
                "time_limit" => t.time_limit = self.time_limit(&f.value, &what),
                "retries" => t.retries = self.uint(&f.value, &what),
                "env" => {
                    let env = self.env(&f.value, &format!("job \"{name}\""));
                    for (v, pos) in env.values() {
                        templated.push((v.clone(), *pos));
                    }
                    t.env = env.into_iter().map(|(k, (v, _))| (k, v)).collect();
                }
                "image" => {
                    t.image = self.image(&f.value, &what);
                    if let Some(image) = &t.image {
                        self.no_placeholders(image, f.value.pos, &format!("job \"{name}\""));
                    }
                }
                _ => {
                    let mut hint = None;
                    if let Kind::Map(inner) = &f.value.kind
                        && inner.iter().any(|i| i.key == "command")
                    {
                        hint = Some(format!(
                            "\"{key}\" looks like a job indented under job \"{name}\"; jobs must \
                             line up under jobs:"
                        ));
                    }
                    self.unknown_key(f, JOB_KEYS, &format!("in job \"{name}\""), hint);
                }
            }
        }
        if !command_seen {
            self.sink.error(
                e.key_pos,
                format!("job \"{name}\" has no command"),
                "add command: with a shell script (command: echo hello) or an argument list \
                 (command: [echo, hello])",
            );
        }
        t.resources_pos = resources_pos.unwrap_or(e.key_pos);
        if !scatter_failed {
            self.check_placeholders(&t, &templated);
        }
        raw.template = t;
        raw
    }

    fn workflow_outputs(&mut self, node: &Node) -> Vec<RawWorkflowOutput> {
        let Some(entries) = self.map(
            node,
            "\"outputs\" of the workflow",
            "NAME: JOB.OUTPUT, e.g. outputs: {total: merge.total}",
        ) else {
            return Vec::new();
        };
        self.duplicates(entries, |k| format!("duplicate workflow output \"{k}\""));
        let mut out = Vec::new();
        for e in entries {
            if !valid_export_name(&e.key) {
                self.sink.error(
                    e.key_pos,
                    format!("invalid workflow output name \"{}\"", e.key),
                    "the name becomes a directory in the output directory: use letters, digits, \
                     -, _ and ., starting with a letter or digit",
                );
            }
            let what = format!("workflow output \"{}\"", e.key);
            let Some(text) = self.string(&e.value, &what) else {
                continue;
            };
            if let Some((job, output)) = self.reference(&text, e.value.pos, &what) {
                out.push(RawWorkflowOutput {
                    name: e.key.clone(),
                    job,
                    output,
                    pos: e.value.pos,
                });
            }
        }
        out
    }
}
