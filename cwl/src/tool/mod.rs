//! One CommandLineTool or ExpressionTool invocation: building its command
//! line and collecting its outputs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::{CwlError, Invocation, Resources, Runtime};

/// A CommandLineTool invocation, ready to run (see `cwl/DESIGN.md`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Prepared {
    /// The command's argument vector (`/bin/sh -c SCRIPT` under
    /// `ShellCommandRequirement`).
    pub argv: Vec<String>,
    /// The command's whole environment (CWL gives tools a clean one: `HOME`
    /// and `TMPDIR` set to the runtime directories, `PATH` kept, plus
    /// `EnvVarRequirement`).
    pub env: BTreeMap<String, String>,
    /// File to connect to standard input.
    pub stdin: Option<PathBuf>,
    /// File to write standard output to (in the output directory).
    pub stdout: Option<PathBuf>,
    /// File to write standard error to (in the output directory).
    pub stderr: Option<PathBuf>,
    /// Container image to run in (`DockerRequirement.dockerPull` or
    /// `dockerImageId`), when containers are in use.
    pub image: Option<String>,
    /// `DockerRequirement.dockerOutputDirectory`: where the output directory
    /// is mounted inside the container.
    pub docker_output_dir: Option<String>,
    /// Exit codes that mean success (default `[0]`).
    pub success_codes: Vec<i32>,
    /// Exit codes that mean a temporary failure (retry).
    pub temporary_fail_codes: Vec<i32>,
    /// Exit codes that mean a permanent failure.
    pub permanent_fail_codes: Vec<i32>,
    /// `ToolTimeLimit`, if any and not zero.
    pub time_limit: Option<Duration>,
    /// `NetworkAccess`: the tool may use the network.
    pub network: bool,
    /// The input object as the tool saw it (paths filled in, listings
    /// trimmed to its `LoadListingRequirement`), for output collection.
    pub job: Value,
}

/// Evaluates the tool's `ResourceRequirement` (CWL's defaults when absent).
pub fn resources(inv: &Invocation) -> Result<Resources, CwlError> {
    // STUB: replaced by the tool module (branch i11-tool).
    let _ = inv;
    Err(CwlError::Unsupported(
        "tool::resources is not built yet".into(),
    ))
}

/// Builds the command line and everything else needed to run a
/// CommandLineTool; creates the `InitialWorkDirRequirement` entries in
/// `rt.outdir`. Every File and Directory location in `inv.job` must be a
/// local `file://` URI (or a literal).
pub fn prepare(inv: &Invocation, rt: &Runtime, use_container: bool) -> Result<Prepared, CwlError> {
    // STUB: replaced by the tool module (branch i11-tool).
    let _ = (inv, rt, use_container);
    Err(CwlError::Unsupported(
        "tool::prepare is not built yet".into(),
    ))
}

/// Collects a finished CommandLineTool's outputs (`cwl.output.json`, globs,
/// `outputEval`, secondaryFiles, checksums) from `rt.outdir`. Locations in the
/// result are `file://` URIs under `rt.outdir`.
pub fn collect(
    inv: &Invocation,
    prepared: &Prepared,
    rt: &Runtime,
    exit_code: i32,
) -> Result<Value, CwlError> {
    // STUB: replaced by the tool module (branch i11-tool).
    let _ = (inv, prepared, rt, exit_code);
    Err(CwlError::Unsupported(
        "tool::collect is not built yet".into(),
    ))
}

/// Reads a file's first bytes (`location`, at most `limit` bytes), for
/// `loadContents` outside the agent.
pub type ReadFile<'a> = dyn FnMut(&str, usize) -> Result<Vec<u8>, CwlError> + 'a;

/// Evaluates an ExpressionTool. `read(location, limit)` returns a file's
/// first bytes for `loadContents`.
pub fn run_expression_tool(inv: &Invocation, read: &mut ReadFile<'_>) -> Result<Value, CwlError> {
    // STUB: replaced by the tool module (branch i11-tool).
    let _ = (inv, read);
    Err(CwlError::Unsupported(
        "ExpressionTool is not built yet".into(),
    ))
}
