//! Driving a Workflow: steps run as their inputs become available.
//!
//! [`run`] executes any top-level process. A CommandLineTool becomes one
//! [`Executor::run_tool`] call; an ExpressionTool is evaluated here; a
//! Workflow is driven step by step:
//!
//! * A step starts as soon as every `source` of its inputs has a value (a
//!   workflow input, or an output of a finished step). Steps, and the jobs
//!   of a scatter, run concurrently as futures of the one task that awaits
//!   [`run`] (no thread per step, no polling): the engine waits for the next
//!   invocation to finish, records its outputs and starts whatever became
//!   ready.
//! * Step inputs get their values from data links ([`links`]): `linkMerge`,
//!   `pickValue`, then `default` when the value is null, then `loadContents`,
//!   then the scatter, then `valueFrom` (per scatter job), then `when`.
//! * Every invocation is given a stable key built from step names and scatter
//!   indices (`main/step1/3/inner/step2`), so a restarted leader finds the
//!   invocations that already finished ([`key_segment`]).
//! * Requirements and hints are resolved per invocation ([`reqs`]).
//!
//! Failure: the first failing step (or scatter job) fails the whole run with
//! a message naming it (`step 'align' (scatter job 3): ...`). The engine
//! then stops starting invocations and *drops* the futures of those still
//! running; whether dropping a [`Executor::run_tool`] future cancels the job
//! is up to the executor.
//!
//! For the executor: defaults written in the document (of workflow inputs,
//! step inputs and tool inputs) are filled in by the engine, after the
//! runner imported the input object, so their Files and Directories still
//! carry `file://` locations; [`Executor::run_tool`] and
//! [`Executor::read_file`] must accept those as well as job-store ones.

mod driver;
pub mod links;
pub mod reqs;

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::{Map, Value};

use crate::{CwlError, Document, Executor, Invocation};
use reqs::Effective;

/// The key of the top-level process; every other key starts with it.
pub const ROOT_KEY: &str = "main";

/// The largest file `loadContents` reads (CWL: 64 KiB; a larger file is an
/// error, not silently truncated).
pub const LOAD_CONTENTS_LIMIT: usize = 64 * 1024;

/// Settings of a workflow run.
#[derive(Clone, Debug, Default)]
pub struct EngineOptions {
    /// `--no-container`: ignore `DockerRequirement` (run on the host).
    pub no_container: bool,
}

/// At most this many jobs of one scatter are in flight at once under
/// [`run`]: the jobs past it are only built when earlier ones finish, which
/// keeps the memory of a huge scatter small. It is more than a cluster runs
/// at once. (Not a field of [`EngineOptions`], which callers build with a
/// struct literal; see [`run_with_window`].)
pub const DEFAULT_SCATTER_WINDOW: usize = 10_000;

/// Runs `doc` (a Workflow, CommandLineTool, ExpressionTool or Operation)
/// with input object `job` and returns the output object. Every
/// CommandLineTool invocation goes through `exec`; ExpressionTools and
/// step-level expressions are evaluated here.
///
/// Requirements given in the input object under `cwl:requirements` take
/// precedence over the top-level process's own (Process.yml).
pub async fn run(
    doc: &Document,
    job: Value,
    exec: Arc<dyn Executor>,
    opts: &EngineOptions,
) -> Result<Value, CwlError> {
    run_with_window(doc, job, exec, opts, DEFAULT_SCATTER_WINDOW).await
}

/// [`run`] with at most `scatter_window` jobs of any one scatter in flight
/// at once (0: no limit).
pub async fn run_with_window(
    doc: &Document,
    job: Value,
    exec: Arc<dyn Executor>,
    opts: &EngineOptions,
    scatter_window: usize,
) -> Result<Value, CwlError> {
    let _ = opts.no_container; // containers are the executor's business
    let (job, job_reqs) = split_job_requirements(job)?;
    let eff = Effective::top_level(&doc.process, &job_reqs);
    let engine = Engine {
        exec,
        namespaces: doc.namespaces.clone(),
        scatter_window,
    };
    engine
        .run_process(&doc.process, job, ROOT_KEY.to_string(), eff)
        .await
}

/// Removes `cwl:requirements` from an input object and returns it apart.
fn split_job_requirements(job: Value) -> Result<(Value, Vec<Value>), CwlError> {
    let mut map = match job {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        other => {
            return Err(CwlError::Invalid(format!(
                "the input object must be a mapping of input names to values, not {}",
                brief(&other)
            )));
        }
    };
    let mut reqs = Vec::new();
    for field in ["cwl:requirements", "https://w3id.org/cwl/cwl#requirements"] {
        match map.remove(field) {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) if items.iter().all(|r| reqs::class_of(r).is_some()) => {
                reqs.extend(items)
            }
            Some(other) => {
                return Err(CwlError::Invalid(format!(
                    "the input object's `cwl:requirements` must be a list of requirement objects, each with a `class`; got {}",
                    brief(&other)
                )));
            }
        }
    }
    Ok((Value::Object(map), reqs))
}

/// Makes one segment of an invocation key from a step name: letters,
/// digits, `-`, `_` and `.` are kept, every other byte is percent-encoded
/// (`%2F`), and so are the segments `.` and `..`. Keys are safe as job
/// names and file names, and two different names never give the same
/// segment.
pub fn key_segment(name: &str) -> String {
    if name.is_empty() {
        return "%".to_string();
    }
    let encode_all = name == "." || name == "..";
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if !encode_all && (b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Fills the `basename` (from the `location`) of every File and Directory
/// in `v` that has none, and the `nameroot` and `nameext` of every File, as
/// expressions expect them (`$(inputs.f.nameext)`).
pub fn fill_names(v: &mut Value) {
    crate::files::walk_mut(v, &mut |m| {
        if !m.get("basename").is_some_and(Value::is_string)
            && let Some(loc) = m.get("location").and_then(Value::as_str)
        {
            let base = location_basename(loc);
            m.insert("basename".to_string(), Value::String(base));
        }
        if m.get("class").and_then(Value::as_str) == Some("File")
            && let Some(base) = m.get("basename").and_then(Value::as_str)
            && !(m.contains_key("nameroot") && m.contains_key("nameext"))
        {
            let (root, ext) = split_ext(base);
            m.insert("nameroot".to_string(), Value::String(root));
            m.insert("nameext".to_string(), Value::String(ext));
        }
    });
}

/// The last segment of a location, percent-decoded (`file:///a/b%20c.txt`
/// gives `b c.txt`; `toilfile:ID` gives `ID`).
fn location_basename(location: &str) -> String {
    let trimmed = location.trim_end_matches('/');
    let last = match trimmed.rsplit_once('/') {
        Some((_, last)) => last,
        None => trimmed.split_once(':').map_or(trimmed, |(_, t)| t),
    };
    let bytes = last.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = last.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `nameroot` and `nameext` of a basename, as Python's `os.path.splitext`
/// (leading dots do not start an extension: `.bashrc` has none).
fn split_ext(basename: &str) -> (String, String) {
    let leading = basename.len() - basename.trim_start_matches('.').len();
    match basename[leading..].rfind('.') {
        Some(i) => (
            basename[..leading + i].to_string(),
            basename[leading + i..].to_string(),
        ),
        None => (basename.to_string(), String::new()),
    }
}

/// A short rendering of a value for error messages.
pub(crate) fn brief(v: &Value) -> String {
    let s = v.to_string();
    if s.len() <= 200 {
        return s;
    }
    let mut end = 200;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// The `id` of a document object ("" when absent).
pub(crate) fn id_of(v: &Value) -> &str {
    v.get("id").and_then(Value::as_str).unwrap_or("")
}

/// The array `field` of `obj` (empty when absent).
pub(crate) fn array_of<'a>(obj: &'a Value, field: &str) -> &'a [Value] {
    obj.get(field)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// `err` with `context` put in front of its message, its kind kept.
pub(crate) fn in_context(err: CwlError, context: &str) -> CwlError {
    match err {
        CwlError::Invalid(m) => CwlError::Invalid(format!("{context}: {m}")),
        CwlError::Unsupported(m) => CwlError::Unsupported(format!("{context}: {m}")),
        CwlError::Failed(m) => CwlError::Failed(format!("{context}: {m}")),
        CwlError::TemporaryFailure(m) => CwlError::TemporaryFailure(format!("{context}: {m}")),
    }
}

/// What one run shares: the executor and the document's namespaces.
pub(crate) struct Engine {
    exec: Arc<dyn Executor>,
    namespaces: Map<String, Value>,
    scatter_window: usize,
}

impl Engine {
    /// Runs one process with input object `job` under invocation key `key`,
    /// with effective requirements and hints `eff`.
    pub(crate) fn run_process<'a>(
        &'a self,
        process: &'a Value,
        job: Value,
        key: String,
        eff: Effective,
    ) -> BoxFuture<'a, Result<Value, CwlError>> {
        Box::pin(async move {
            let class = process.get("class").and_then(Value::as_str).unwrap_or("");
            match class {
                "CommandLineTool" => {
                    let inv = self.invocation(process, &job, eff)?;
                    tracing::debug!(key = %key, "running tool {}", id_of(process));
                    self.exec.run_tool(key, inv).await
                }
                "ExpressionTool" => {
                    let inv = self.invocation(process, &job, eff)?;
                    self.run_expression_tool(&inv).await
                }
                "Workflow" => self.run_workflow(process, job, key, eff).await,
                "Operation" => Err(CwlError::Unsupported(format!(
                    "{} is an Operation, an abstract description with no implementation; replace it with a CommandLineTool, ExpressionTool or Workflow to run it",
                    id_of(process)
                ))),
                other => Err(CwlError::Invalid(format!(
                    "{}: cannot run a process of class '{other}'; expected CommandLineTool, ExpressionTool, Workflow or Operation",
                    id_of(process)
                ))),
            }
        })
    }

    /// The invocation of a tool with input object `job` (checked against
    /// the tool's inputs, defaults filled).
    fn invocation(
        &self,
        tool: &Value,
        job: &Value,
        eff: Effective,
    ) -> Result<Invocation, CwlError> {
        let job = crate::types::validate_inputs(array_of(tool, "inputs"), job)?;
        Ok(Invocation {
            tool: tool.clone(),
            job,
            requirements: eff.requirements,
            hints: eff.hints,
            namespaces: self.namespaces.clone(),
        })
    }

    /// Evaluates an ExpressionTool here. `tool::run_expression_tool` reads
    /// files synchronously while the executor reads them asynchronously, so
    /// the files it asks for are fetched between attempts: an attempt that
    /// needed a file not yet fetched is discarded, the file is read, and the
    /// tool is evaluated again (expressions have no side effects).
    async fn run_expression_tool(&self, inv: &Invocation) -> Result<Value, CwlError> {
        // location -> (bytes read, limit they were read with)
        let mut cache: HashMap<String, (Vec<u8>, usize)> = HashMap::new();
        loop {
            let mut missing: Vec<(String, usize)> = Vec::new();
            let result = {
                let mut read = |location: &str, limit: usize| -> Result<Vec<u8>, CwlError> {
                    match cache.get(location) {
                        Some((bytes, read_limit))
                            if *read_limit >= limit || bytes.len() < *read_limit =>
                        {
                            Ok(bytes[..bytes.len().min(limit)].to_vec())
                        }
                        _ => {
                            missing.push((location.to_string(), limit));
                            Err(CwlError::Failed(format!(
                                "{location} has not been read yet"
                            )))
                        }
                    }
                };
                crate::tool::run_expression_tool(inv, &mut read)
            };
            if missing.is_empty() {
                return result;
            }
            for (location, limit) in missing {
                let bytes = self.exec.read_file(location.clone(), limit).await?;
                cache.insert(location, (bytes, limit));
            }
        }
    }

    /// `loadContents`: reads the File `v` (or each File of the array `v`)
    /// into its `contents`. `what` names the parameter in errors.
    async fn load_contents(&self, v: &mut Value, what: &str) -> Result<(), CwlError> {
        let files: Vec<&mut Map<String, Value>> = match v {
            Value::Object(m) => vec![m],
            Value::Array(items) => items.iter_mut().filter_map(Value::as_object_mut).collect(),
            _ => Vec::new(),
        };
        for file in files {
            if file.get("class").and_then(Value::as_str) != Some("File")
                || file.get("contents").is_some_and(|c| !c.is_null())
            {
                continue;
            }
            let Some(location) = file.get("location").and_then(Value::as_str) else {
                continue;
            };
            let bytes = self
                .exec
                .read_file(location.to_string(), LOAD_CONTENTS_LIMIT + 1)
                .await
                .map_err(|e| in_context(e, what))?;
            if bytes.len() > LOAD_CONTENTS_LIMIT {
                return Err(CwlError::Failed(format!(
                    "{what}: loadContents of {location}: the file is larger than 64 KiB, the most CWL allows; pass the file itself and read it in the tool"
                )));
            }
            let text = String::from_utf8_lossy(&bytes).into_owned();
            file.insert("contents".to_string(), Value::String(text));
        }
        Ok(())
    }
}
