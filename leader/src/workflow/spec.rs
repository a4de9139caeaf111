//! The parsed, validated form of a workflow file: what the scheduler runs.
//!
//! Produced by [`crate::workflow::load`]; everything here has already been
//! checked (references resolve, no cycles, sizes parse, local inputs exist),
//! so the scheduler never has to report a configuration mistake mid-run.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A position in the workflow file, 1-based, for error messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// Line number, from 1.
    pub line: usize,
    /// Column number, from 1.
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// A whole workflow.
#[derive(Clone, Debug, PartialEq)]
pub struct Workflow {
    /// The workflow's name (`name:` in the file, else the file's stem).
    pub name: String,
    /// The workflow file, as given on the command line (for messages).
    pub source: PathBuf,
    /// Directory that relative input paths are resolved against: the
    /// directory holding the workflow file.
    pub base_dir: PathBuf,
    /// Values from the file's `defaults:` section; unset fields fall back to
    /// the leader's `--default*` flags.
    pub defaults: Defaults,
    /// Jobs in the order the file lists them.
    pub jobs: Vec<JobTemplate>,
    /// Files exported to the output directory when the workflow succeeds.
    pub outputs: Vec<WorkflowOutput>,
}

/// Per-workflow defaults for job fields.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Defaults {
    /// CPU in millicores.
    pub millicores: Option<u32>,
    /// Memory in bytes.
    pub memory: Option<u64>,
    /// Disk in bytes.
    pub disk: Option<u64>,
    /// User retries.
    pub retries: Option<u32>,
    /// Container image for jobs that name none.
    pub image: Option<String>,
    /// Environment variables every job gets (a job's own `env` wins).
    pub env: BTreeMap<String, String>,
}

/// How a job's command is given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// An argument vector, run directly.
    Argv(Vec<String>),
    /// A shell script, run with `/bin/sh -c`.
    Shell(String),
}

/// One job as written in the file. A job with `scatter` stands for one
/// instance per scatter value, named `NAME[INDEX]`.
#[derive(Clone, Debug, PartialEq)]
pub struct JobTemplate {
    /// The job's name: its key under `jobs:`. Letters, digits, `-` and `_`.
    pub name: String,
    /// Where the job's entry starts in the file.
    pub pos: Pos,
    /// What to run. May contain `{{VAR}}` placeholders for the scatter
    /// variable and `{{index}}`.
    pub command: Command,
    /// Extra environment variables (values may hold placeholders).
    pub env: BTreeMap<String, String>,
    /// Container image, if any.
    pub image: Option<String>,
    /// CPU in millicores (`cores: 2` is 2000, `cores: 0.5` or `500m` is 500).
    pub millicores: Option<u32>,
    /// Memory in bytes.
    pub memory: Option<u64>,
    /// Scratch disk in bytes.
    pub disk: Option<u64>,
    /// Whole GPUs.
    pub gpus: u32,
    /// May run on preemptible capacity.
    pub preemptible: bool,
    /// Kill the job after this long.
    pub time_limit: Option<Duration>,
    /// User retries for the job's own failures.
    pub retries: Option<u32>,
    /// Names of jobs this one runs after (explicit `after:` plus every job
    /// whose output it consumes), deduplicated, in first-mention order.
    pub after: Vec<String>,
    /// Files staged into the work directory before the command runs.
    pub inputs: Vec<InputSpec>,
    /// Files collected after the command succeeds.
    pub outputs: Vec<OutputDecl>,
    /// Fan-out: one instance of the job per value.
    pub scatter: Option<Scatter>,
    /// Position of the resource fields, for "too large" diagnostics.
    pub resources_pos: Pos,
    /// Set for a step of a CWL workflow added by `toil-cwl-runner` (never
    /// from a workflow file): the agent builds the command from it.
    pub cwl: Option<Box<CwlStep>>,
}

/// A CWL tool invocation run as a job (see `leader/src/cwl/`).
#[derive(Clone, Debug, PartialEq)]
pub struct CwlStep {
    /// The `toil_cwl::Invocation`, as JSON (`Assignment.cwl_invocation`).
    pub invocation: String,
    /// The job-store files to stage, each at its place in the work
    /// directory.
    pub staged: Vec<toil_proto::v1::StagedInput>,
}

/// Where an input file comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputSource {
    /// A local file, imported into the job store when the workflow starts.
    /// Absolute (resolved against the workflow file's directory).
    Local(PathBuf),
    /// Every file of output `output` of job `job` (of every instance, when
    /// `job` is scattered).
    JobOutput {
        /// The producing job's name.
        job: String,
        /// The output's name.
        output: String,
    },
}

/// One input of a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputSpec {
    /// Where the file(s) come from.
    pub source: InputSource,
    /// Where to put them, relative to the work directory. For a local file,
    /// the file's path (default: its base name). For a job output, a
    /// directory (default: the work directory itself, `""`) under which each
    /// file keeps its path relative to the producer's work directory.
    pub dest: String,
    /// The job modifies the file(s): give it private, writable copies.
    pub writable: bool,
    /// Where the input is written in the file.
    pub pos: Pos,
}

/// A declared output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputDecl {
    /// The output's name, unique within the job.
    pub name: String,
    /// Paths or glob patterns relative to the work directory (may contain
    /// scatter placeholders).
    pub patterns: Vec<String>,
    /// Matching nothing is not an error.
    pub optional: bool,
}

/// Fan-out of a job over values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scatter {
    /// The variable's name, used as `{{NAME}}` in the job's fields.
    pub var: String,
    /// The values.
    pub values: ScatterValues,
}

/// The values a scatter ranges over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScatterValues {
    /// An explicit list (numbers and booleans are kept as written).
    List(Vec<String>),
    /// `0, 1, ..., n-1` (`{range: n}` in the file).
    Range(u64),
}

impl ScatterValues {
    /// How many instances the scatter makes.
    pub fn len(&self) -> u64 {
        match self {
            ScatterValues::List(v) => v.len() as u64,
            ScatterValues::Range(n) => *n,
        }
    }

    /// True when the scatter makes no instance.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of instance `i`.
    pub fn get(&self, i: u64) -> Option<String> {
        match self {
            ScatterValues::List(v) => v.get(i as usize).cloned(),
            ScatterValues::Range(n) => (i < *n).then(|| i.to_string()),
        }
    }
}

/// A file set exported when the workflow succeeds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkflowOutput {
    /// Subdirectory of the output directory to export into.
    pub name: String,
    /// The producing job.
    pub job: String,
    /// The job's output.
    pub output: String,
}

/// A machine shape a job must fit on: the local machine's `--maxCores` /
/// `--maxMemory`, or a Kubernetes node's allocatable resources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    /// What to call it in messages (`this machine`, `node worker-1`).
    pub name: String,
    /// CPU in millicores.
    pub millicores: u64,
    /// Memory in bytes.
    pub memory: u64,
    /// Disk in bytes (`None` when unknown, which means unlimited).
    pub disk: Option<u64>,
    /// GPUs.
    pub gpus: u32,
}
