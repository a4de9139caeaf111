//! Types shared by every part of the CWL front end, the leader and the agent.
//!
//! The contract between the modules is written down in `cwl/DESIGN.md`;
//! read it before changing anything here.

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Exit code for a workflow that failed (a tool failed, an output is missing).
pub const EXIT_FAILED: i32 = 1;
/// Exit code for a document or input object that is not valid.
pub const EXIT_INVALID: i32 = 2;
/// Exit code for a feature this runner does not support.
pub const EXIT_UNSUPPORTED: i32 = 33;

/// A loaded, normalized CWL document (see `cwl/DESIGN.md`).
#[derive(Clone, Debug)]
pub struct Document {
    /// The process to run: `#main` of a packed `$graph`, or the only process.
    pub process: Arc<Value>,
    /// `$namespaces` of the top-level file: prefix -> URI.
    pub namespaces: serde_json::Map<String, Value>,
    /// `$schemas` of the top-level file, as absolute URIs.
    pub schemas: Vec<String>,
    /// The absolute `file://` URI of the file the document was loaded from.
    pub uri: String,
}

/// Everything one process invocation needs: a CommandLineTool, an
/// ExpressionTool or an Operation with its input object.
///
/// Serialized to JSON and handed to the agent inside its assignment, so the
/// agent builds the command line where the files are.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Invocation {
    /// The normalized process object (`class` is `CommandLineTool`,
    /// `ExpressionTool` or `Operation`).
    pub tool: Value,
    /// The input object, already validated against the tool's inputs and
    /// with defaults filled. Files and directories carry `location`s that
    /// the executor understands (`file://` on the leader's machine,
    /// `toilfile:` / `toildir:` in the job store; see DESIGN.md).
    pub job: Value,
    /// Effective requirements: the tool's own, then those inherited from
    /// enclosing steps and workflows that the tool does not override, each
    /// class at most once.
    pub requirements: Vec<Value>,
    /// Effective hints, likewise.
    pub hints: Vec<Value>,
    /// `$namespaces` of the document, for `format` checks.
    pub namespaces: serde_json::Map<String, Value>,
}

/// Where and with what a tool runs: the values of CWL's `runtime` object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Runtime {
    /// The designated output directory; also the working directory.
    pub outdir: PathBuf,
    /// The designated temporary directory.
    pub tmpdir: PathBuf,
    /// Cores reserved for the tool (whole cores, rounded up).
    pub cores: u32,
    /// RAM reserved, in mebibytes.
    pub ram: u64,
    /// Output directory space reserved, in mebibytes.
    pub outdir_size: u64,
    /// Temporary directory space reserved, in mebibytes.
    pub tmpdir_size: u64,
}

/// What a tool asks for (`ResourceRequirement` after evaluation, with CWL's
/// defaults of 1 core, 256 MiB RAM and 1024 MiB of each directory).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// Minimum cores, fractional values kept (the scheduler rounds up).
    pub cores: f64,
    /// Minimum RAM, mebibytes.
    pub ram_mib: u64,
    /// Minimum temporary space, mebibytes.
    pub tmpdir_mib: u64,
    /// Minimum output space, mebibytes.
    pub outdir_mib: u64,
}

/// Why a process invocation or a workflow did not produce its outputs.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CwlError {
    /// The document or the input object is invalid (exit code 2).
    #[error("{0}")]
    Invalid(String),
    /// The document uses something this runner does not support (exit 33).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A tool failed, an expression threw, an output is missing (exit 1).
    #[error("{0}")]
    Failed(String),
    /// The tool exited with one of its `temporaryFailCodes`.
    #[error("{0}")]
    TemporaryFailure(String),
}

impl CwlError {
    /// The process exit code `toil-cwl-runner` uses for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CwlError::Invalid(_) => EXIT_INVALID,
            CwlError::Unsupported(_) => EXIT_UNSUPPORTED,
            CwlError::Failed(_) | CwlError::TemporaryFailure(_) => EXIT_FAILED,
        }
    }
}

/// Runs process invocations for the workflow engine ([`crate::workflow`]).
///
/// The leader implements it with the scheduler: each call becomes a job
/// run by an agent. `key` is a stable name for the invocation (for example
/// `main/align/3/sort`): the same workflow and inputs always give the same
/// keys, so a restarted leader finds the invocations that already finished
/// under their keys and does not run them again.
pub trait Executor: Send + Sync {
    /// Runs a CommandLineTool invocation and resolves to its output object
    /// (files as `toilfile:`/`toildir:` or `file://` locations).
    fn run_tool(&self, key: String, inv: Invocation)
    -> BoxFuture<'static, Result<Value, CwlError>>;

    /// Reads up to `limit` bytes of a file the workflow holds, for
    /// `loadContents` and expressions evaluated on the leader.
    fn read_file(
        &self,
        location: String,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<u8>, CwlError>>;
}
