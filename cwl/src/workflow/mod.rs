//! Driving a Workflow: steps run as their inputs become available.

use std::sync::Arc;

use serde_json::Value;

use crate::{CwlError, Document, Executor};

/// Settings of a workflow run.
#[derive(Clone, Debug, Default)]
pub struct EngineOptions {
    /// `--no-container`: ignore `DockerRequirement` (run on the host).
    pub no_container: bool,
}

/// Runs `doc` (a Workflow, CommandLineTool, ExpressionTool or Operation)
/// with input object `job` and returns the output object. Every
/// CommandLineTool invocation goes through `exec`; ExpressionTools and
/// step-level expressions are evaluated here.
pub async fn run(
    doc: &Document,
    job: Value,
    exec: Arc<dyn Executor>,
    opts: &EngineOptions,
) -> Result<Value, CwlError> {
    // STUB: replaced by the workflow engine (branch i11-wf).
    let _ = (doc, job, exec, opts);
    Err(CwlError::Unsupported(
        "the workflow engine is not built yet".into(),
    ))
}
