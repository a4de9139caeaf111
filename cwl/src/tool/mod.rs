//! One CommandLineTool or ExpressionTool invocation: building its command
//! line and collecting its outputs.
//!
//! The order of work follows the CWL v1.2 CommandLineTool specification
//! (and cwltool, the reference implementation, where the specification is
//! silent):
//!
//! 1. [`resources`]: `ResourceRequirement` (from requirements, else hints).
//! 2. [`prepare`]: the input object gets local paths and names
//!    (`inputs.rs`), `loadContents`, listings, secondaryFiles and formats
//!    are applied, `InitialWorkDirRequirement` is staged into the output
//!    directory (`iwd.rs`), then the command line is bound (`bind.rs`).
//! 3. The caller runs [`Prepared::argv`].
//! 4. [`collect`]: the exit code is classified, then `cwl.output.json` or
//!    each output's `outputBinding` gives the output object (`collect.rs`).
//!
//! What callers must know:
//!
//! - The runner calls [`discover_secondary_files`] on the top-level input
//!   object (after defaults are filled, before import): only the top-level
//!   process looks for secondary files beside their primary file, as in
//!   cwltool. [`prepare`] only checks that required ones are listed.
//! - [`prepare`] writes renamed inputs, literals and gathered secondary
//!   files under [`stage_dir`], a sibling of the output directory; the agent
//!   removes it with the output directory.
//! - Outputs that are inputs passed through keep the input's location (the
//!   local path the agent staged it at); everything else is under the
//!   output directory. Files there may be symbolic links to inputs
//!   (`InitialWorkDirRequirement` links read-only entries); read through
//!   them. A secondary file may carry a `basename` that differs from its
//!   location's name: export it under its `basename`.
//! - Without containers, a `DockerRequirement` under `requirements` is
//!   [`CwlError::Unsupported`] (as cwltool with `--no-container`); as a
//!   hint it is ignored.

mod bind;
mod collect;
#[cfg(test)]
mod conformance;
mod glob;
mod inputs;
mod iwd;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::expr::Evaluator;
use crate::load::shortname;
use crate::{CwlError, Invocation, Resources, Runtime};

pub use bind::{python_json_dumps, shell_quote};
pub use collect::{ExitClass, exit_class};
pub use glob::fnmatch;

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
    /// `InitialWorkDirRequirement` entries with an absolute `entryname`
    /// (allowed only in a container): host path, path in the container,
    /// writable. The container runner mounts them.
    pub container_mounts: Vec<(PathBuf, String, bool)>,
    /// What `InitialWorkDirRequirement` linked or copied into the output
    /// directory (local paths): outputs may lead there.
    pub initial_workdir_sources: Vec<PathBuf>,
    /// `InplaceUpdateRequirement.inplaceUpdate`: writable
    /// `InitialWorkDirRequirement` entries were linked, not copied, so the
    /// tool changes the original files.
    pub inplace_update: bool,
}

/// Where [`prepare`] puts files it has to create or rename outside the
/// output directory (File literals of the input object, inputs whose local
/// name differs from their `basename`, secondary files gathered next to
/// their primary file): a sibling of `rt.outdir` named `<outdir>.cwl-stage`.
/// The caller removes it with the output directory.
pub fn stage_dir(rt: &Runtime) -> PathBuf {
    let name = rt
        .outdir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    rt.outdir.with_file_name(format!("{name}.cwl-stage"))
}

/// Evaluates the tool's `ResourceRequirement` (CWL's defaults when absent).
///
/// The requirement comes from the effective requirements, else the hints.
/// `*Min` defaults to `*Max` when only the maximum is given; the minimum is
/// what is reserved. Expressions see `inputs` (without local paths) and an
/// empty `runtime`.
pub fn resources(inv: &Invocation) -> Result<Resources, CwlError> {
    let mut ev = Evaluator::new(&effective_requirements(inv))?;
    let mut job = inputs::build_inputs(inv);
    // Names, and sizes of local files that do not carry one (files in the
    // job store always do), for expressions such as `$(inputs.f.size)`.
    crate::files::walk_mut(&mut job, &mut |m| {
        crate::files::fill_names(m);
        if m.get("class").and_then(Value::as_str) == Some("File")
            && !m.contains_key("size")
            && let Some(p) = m.get("path").and_then(Value::as_str)
            && let Ok(meta) = std::fs::metadata(p)
        {
            m.insert("size".into(), json!(meta.len()));
        }
    });
    let runtime = json!({});
    let mut out = Resources {
        cores: 1.0,
        ram_mib: 256,
        tmpdir_mib: 1024,
        outdir_mib: 1024,
    };
    let Some((req, _)) = find_requirement(inv, "ResourceRequirement") else {
        return Ok(out);
    };
    let mut eval_num = |key: &str| -> Result<Option<f64>, CwlError> {
        let Some(v) = req.get(key) else {
            return Ok(None);
        };
        let v = ev.eval(v, &job, &Value::Null, &runtime)?;
        match v {
            Value::Null => Ok(None),
            Value::Number(n) => n.as_f64().map(Some).ok_or_else(|| bad_resource(key, &n)),
            other => Err(bad_resource(key, &other)),
        }
    };
    let mut pick = |name: &str| -> Result<Option<f64>, CwlError> {
        let min = eval_num(&format!("{name}Min"))?;
        let max = eval_num(&format!("{name}Max"))?;
        if let (Some(mn), Some(mx)) = (min, max)
            && mn > mx
        {
            return Err(CwlError::Invalid(format!(
                "ResourceRequirement: {name}Min ({mn}) is larger than {name}Max ({mx}); \
                 lower {name}Min or raise {name}Max"
            )));
        }
        Ok(min.or(max))
    };
    if let Some(c) = pick("cores")? {
        out.cores = c;
    }
    if let Some(r) = pick("ram")? {
        out.ram_mib = r.ceil() as u64;
    }
    if let Some(t) = pick("tmpdir")? {
        out.tmpdir_mib = t.ceil() as u64;
    }
    if let Some(o) = pick("outdir")? {
        out.outdir_mib = o.ceil() as u64;
    }
    Ok(out)
}

fn bad_resource(key: &str, v: &dyn std::fmt::Display) -> CwlError {
    CwlError::Failed(format!(
        "ResourceRequirement.{key} must be a non-negative number, got {v}"
    ))
}

/// Builds the command line and everything else needed to run a
/// CommandLineTool; creates the `InitialWorkDirRequirement` entries in
/// `rt.outdir`. Every File and Directory location in `inv.job` must be a
/// local `file://` URI (or a literal).
///
/// Files that must be renamed (their local name differs from `basename`),
/// literals and secondary files that are not next to their primary are
/// placed under [`stage_dir`].
pub fn prepare(inv: &Invocation, rt: &Runtime, use_container: bool) -> Result<Prepared, CwlError> {
    let tool = &inv.tool;
    let mut ctx = Ctx::new(inv, runtime_json(rt))?;

    // Inputs: local paths, names, contents, listings, secondary files.
    let mut stager = inputs::Stager::new(stage_dir(rt));
    let mut job = inputs::build_inputs(inv);
    inputs::localize(&mut job, &mut stager)?;
    ctx.inputs = job.clone();
    inputs::apply_schemas(
        &mut ctx,
        &mut job,
        &mut inputs::LocalAccess,
        &stager.literal_dirs,
        inputs::PassOptions::default(),
    )?;
    ctx.inputs = job;

    let mut prepared = Prepared {
        inplace_update: find_requirement(inv, "InplaceUpdateRequirement")
            .is_some_and(|(r, _)| r.get("inplaceUpdate").and_then(Value::as_bool) == Some(true)),
        ..Prepared::default()
    };

    // DockerRequirement.
    let docker = find_requirement(inv, "DockerRequirement");
    if use_container && let Some((req, _)) = docker {
        let image = req
            .get("dockerImageId")
            .or_else(|| req.get("dockerPull"))
            .and_then(Value::as_str);
        match image {
            Some(i) => prepared.image = Some(i.to_string()),
            None => {
                let what = ["dockerFile", "dockerLoad", "dockerImport"]
                    .into_iter()
                    .find(|k| req.get(*k).is_some())
                    .unwrap_or("an image");
                return Err(CwlError::Unsupported(format!(
                    "DockerRequirement.{what} is not supported; give the image with \
                     dockerPull (a registry name) instead"
                )));
            }
        }
        prepared.docker_output_dir = req
            .get("dockerOutputDirectory")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    let docker_required = docker.is_some_and(|(_, is_req)| is_req);
    if docker_required && !use_container {
        // As cwltool with --no-container.
        return Err(CwlError::Unsupported(format!(
            "{} has DockerRequirement under `requirements`, but containers are disabled \
             (--no-container); run with a container engine, or make it a hint",
            tool_id(inv)
        )));
    }

    // InitialWorkDirRequirement: staged before the command line is built, so
    // inputs staged into the output directory have their new paths there.
    iwd::stage(
        &mut ctx,
        rt,
        use_container && docker_required,
        prepared.inplace_update,
        &mut prepared,
    )?;

    // The command line.
    let shell = find_requirement(inv, "ShellCommandRequirement").is_some();
    let words = bind::command_line(&mut ctx)?;
    prepared.argv = if shell {
        let script: Vec<String> = words
            .into_iter()
            .flat_map(|(args, quote)| {
                args.into_iter()
                    .map(move |a| if quote { shell_quote(&a) } else { a })
            })
            .collect();
        vec!["/bin/sh".into(), "-c".into(), script.join(" ")]
    } else {
        words.into_iter().flat_map(|(args, _)| args).collect()
    };
    if prepared.argv.is_empty() {
        return Err(CwlError::Invalid(format!(
            "{}: the command line is empty; give baseCommand or arguments",
            tool_id(inv)
        )));
    }

    // Standard streams.
    if let Some(v) = tool.get("stdin") {
        match ctx.eval(v, &Value::Null)? {
            Value::Null => {}
            Value::String(s) if s.is_empty() => {}
            Value::String(s) => prepared.stdin = Some(PathBuf::from(s)),
            other => {
                return Err(CwlError::Failed(format!(
                    "stdin must evaluate to a path string or null, got {other}"
                )));
            }
        }
    }
    for key in ["stdout", "stderr"] {
        let Some(v) = tool.get(key) else { continue };
        let name = match ctx.eval(v, &Value::Null)? {
            Value::String(s) => s,
            other => {
                return Err(CwlError::Failed(format!(
                    "{key} must evaluate to a file name, got {other}"
                )));
            }
        };
        if name.is_empty() {
            continue;
        }
        if name.starts_with('/') || Path::new(&name).components().any(|c| c.as_os_str() == "..") {
            return Err(CwlError::Failed(format!(
                "{key} must be a relative path inside the output directory, got {name:?}"
            )));
        }
        let path = rt.outdir.join(&name);
        if let Some(parent) = path.parent()
            && !parent.exists()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                CwlError::Failed(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        if key == "stdout" {
            prepared.stdout = Some(path);
        } else {
            prepared.stderr = Some(path);
        }
    }

    // Environment: a clean one, as cwltool gives.
    prepared
        .env
        .insert("HOME".into(), rt.outdir.to_string_lossy().into_owned());
    prepared
        .env
        .insert("TMPDIR".into(), rt.tmpdir.to_string_lossy().into_owned());
    prepared.env.insert(
        "PATH".into(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
    );
    if let Some((req, _)) = find_requirement(inv, "EnvVarRequirement") {
        for (name, value) in env_defs(req)? {
            let v = ctx.eval(&value, &Value::Null)?;
            let v = match v {
                Value::String(s) => s,
                other => {
                    return Err(CwlError::Failed(format!(
                        "EnvVarRequirement: the value of {name} must evaluate to a string, \
                         got {other}"
                    )));
                }
            };
            prepared.env.insert(name, v);
        }
    }

    // Exit codes.
    prepared.success_codes = codes(tool, "successCodes");
    if prepared.success_codes.is_empty() {
        prepared.success_codes = vec![0];
    }
    prepared.temporary_fail_codes = codes(tool, "temporaryFailCodes");
    prepared.permanent_fail_codes = codes(tool, "permanentFailCodes");

    // ToolTimeLimit.
    if let Some((req, _)) = find_requirement(inv, "ToolTimeLimit") {
        let v = req.get("timelimit").cloned().unwrap_or(Value::Null);
        let v = ctx.eval(&v, &Value::Null)?;
        match v.as_i64() {
            Some(0) => {}
            Some(n) if n > 0 => prepared.time_limit = Some(Duration::from_secs(n as u64)),
            _ => {
                return Err(CwlError::Failed(format!(
                    "ToolTimeLimit.timelimit must be a whole number of seconds >= 0, got {v}"
                )));
            }
        }
    }

    // NetworkAccess.
    if let Some((req, _)) = find_requirement(inv, "NetworkAccess") {
        let v = req
            .get("networkAccess")
            .cloned()
            .unwrap_or(Value::Bool(false));
        match ctx.eval(&v, &Value::Null)? {
            Value::Bool(b) => prepared.network = b,
            other => {
                return Err(CwlError::Failed(format!(
                    "NetworkAccess.networkAccess must evaluate to true or false, got {other}"
                )));
            }
        }
    }

    prepared.job = ctx.inputs;
    Ok(prepared)
}

/// Collects a finished CommandLineTool's outputs (`cwl.output.json`, globs,
/// `outputEval`, secondaryFiles, checksums) from `rt.outdir`. Locations in the
/// result are `file://` URIs under `rt.outdir` (or, for outputs that are
/// input files passed through, the input's local location).
pub fn collect(
    inv: &Invocation,
    prepared: &Prepared,
    rt: &Runtime,
    exit_code: i32,
) -> Result<Value, CwlError> {
    collect::collect(inv, prepared, rt, exit_code)
}

/// Completes the secondary files of the top-level process's input object
/// (`job`, keyed by short input names, `file://` locations), as cwltool
/// does before a run: for each input with `secondaryFiles`, a file named by
/// a pattern that lies beside its primary file is added to the primary's
/// `secondaryFiles`; a required one that is neither listed nor found is an
/// error. `process` is the normalized Workflow, CommandLineTool or
/// ExpressionTool; `requirements` its effective requirements (for
/// `InlineJavascriptRequirement` in patterns).
///
/// The runner calls this before importing the inputs. Steps inside a
/// workflow do not look for secondary files: [`prepare`] only checks that
/// required ones were given.
pub fn discover_secondary_files(
    process: &Value,
    requirements: &[Value],
    job: &Value,
) -> Result<Value, CwlError> {
    let inv = Invocation {
        tool: process.clone(),
        job: job.clone(),
        requirements: requirements.to_vec(),
        hints: Vec::new(),
        namespaces: Map::new(),
    };
    let mut ctx = Ctx::new(&inv, json!({}))?;
    let mut out = job.clone();
    crate::files::walk_mut(&mut out, &mut |m| {
        if !m.get("basename").is_some_and(Value::is_string)
            && let Some(loc) = m.get("location").and_then(Value::as_str)
        {
            let base = crate::files::basename_of(loc);
            m.insert("basename".into(), json!(base));
        }
    });
    let mut view = out.clone();
    crate::files::walk_mut(&mut view, &mut crate::files::fill_names);
    ctx.inputs = view;
    inputs::apply_schemas(
        &mut ctx,
        &mut out,
        &mut inputs::LocalAccess,
        &Default::default(),
        inputs::PassOptions {
            discover: true,
            secondary_only: true,
        },
    )?;
    Ok(out)
}

/// Reads a file's first bytes (`location`, at most `limit` bytes), for
/// `loadContents` outside the agent.
pub type ReadFile<'a> = dyn FnMut(&str, usize) -> Result<Vec<u8>, CwlError> + 'a;

/// Evaluates an ExpressionTool. `read(location, limit)` returns a file's
/// first bytes for `loadContents`.
///
/// The input object gets names (`basename`, `nameroot`, ...), contents and
/// trimmed listings as for a CommandLineTool; the `expression` must give an
/// object, whose declared outputs are checked against their types.
pub fn run_expression_tool(inv: &Invocation, read: &mut ReadFile<'_>) -> Result<Value, CwlError> {
    let res = resources(inv)?;
    let runtime = json!({
        "cores": res.cores.ceil() as u64,
        "ram": res.ram_mib,
        "outdirSize": res.outdir_mib,
        "tmpdirSize": res.tmpdir_mib,
    });
    let mut ctx = Ctx::new(inv, runtime)?;
    let mut job = inputs::build_inputs(inv);
    crate::files::walk_mut(&mut job, &mut crate::files::fill_names);
    ctx.inputs = job.clone();
    inputs::apply_schemas(
        &mut ctx,
        &mut job,
        &mut inputs::CallbackAccess(read),
        &Default::default(),
        inputs::PassOptions::default(),
    )?;
    ctx.inputs = job;
    let expression = inv.tool.get("expression").cloned().ok_or_else(|| {
        CwlError::Invalid(format!(
            "{}: an ExpressionTool needs an `expression`",
            tool_id(inv)
        ))
    })?;
    let result = ctx.eval(&expression, &Value::Null)?;
    let Value::Object(result) = result else {
        return Err(CwlError::Failed(format!(
            "{}: the expression must give an object of outputs, got {result}",
            tool_id(inv)
        )));
    };
    let mut result = Value::Object(result);
    restore_listings(&inputs::build_inputs(inv), &mut result);
    collect::check_outputs(inv, result, true)
}

/// Gives Directories of `out` that lost their `listing` to the tool's
/// `loadListing` back the listing the input carried (a directory in the
/// job store always carries its whole listing).
fn restore_listings(original: &Value, out: &mut Value) {
    let mut listings: std::collections::HashMap<String, Value> = Default::default();
    let mut orig = original.clone();
    crate::files::walk_mut(&mut orig, &mut |m| {
        if m.get("class").and_then(Value::as_str) == Some("Directory")
            && let (Some(loc), Some(l)) =
                (m.get("location").and_then(Value::as_str), m.get("listing"))
        {
            listings.insert(loc.to_string(), l.clone());
        }
    });
    if listings.is_empty() {
        return;
    }
    crate::files::walk_mut(out, &mut |m| {
        if m.get("class").and_then(Value::as_str) == Some("Directory")
            && !m.contains_key("listing")
            && let Some(l) = m
                .get("location")
                .and_then(Value::as_str)
                .and_then(|loc| listings.get(loc))
        {
            m.insert("listing".into(), l.clone());
        }
    });
}

/// The state shared while one invocation is prepared or collected: its
/// evaluator, the input object as expressions see it, and `runtime`.
pub(crate) struct Ctx<'a> {
    pub(crate) inv: &'a Invocation,
    pub(crate) ev: Evaluator,
    pub(crate) inputs: Value,
    pub(crate) runtime: Value,
}

impl<'a> Ctx<'a> {
    fn new(inv: &'a Invocation, runtime: Value) -> Result<Ctx<'a>, CwlError> {
        Ok(Ctx {
            inv,
            ev: Evaluator::new(&effective_requirements(inv))?,
            inputs: Value::Object(Map::new()),
            runtime,
        })
    }

    /// Evaluates `v` (interpolating expressions) with `self` = `self_`.
    pub(crate) fn eval(&mut self, v: &Value, self_: &Value) -> Result<Value, CwlError> {
        self.ev.eval(v, &self.inputs, self_, &self.runtime)
    }
}

/// The `runtime` object expressions see.
pub fn runtime_json(rt: &Runtime) -> Value {
    json!({
        "outdir": rt.outdir.to_string_lossy(),
        "tmpdir": rt.tmpdir.to_string_lossy(),
        "cores": rt.cores,
        "ram": rt.ram,
        "outdirSize": rt.outdir_size,
        "tmpdirSize": rt.tmpdir_size,
    })
}

/// The invocation's requirements, then the tool's own of classes not
/// already listed (for invocations built without merging them).
fn effective_requirements(inv: &Invocation) -> Vec<Value> {
    let mut out = inv.requirements.clone();
    if let Some(Value::Array(own)) = inv.tool.get("requirements") {
        for r in own {
            let class = r.get("class");
            if !out.iter().any(|o| o.get("class") == class) {
                out.push(r.clone());
            }
        }
    }
    out
}

/// The requirement of `class`: from the effective requirements (then the
/// tool's own), else from the hints. The flag is true for a requirement.
pub(crate) fn find_requirement<'v>(inv: &'v Invocation, class: &str) -> Option<(&'v Value, bool)> {
    let is = |r: &&Value| r.get("class").and_then(Value::as_str) == Some(class);
    let own = |key: &str| -> Option<&'v Value> {
        inv.tool
            .get(key)
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(is))
    };
    if let Some(r) = inv
        .requirements
        .iter()
        .find(is)
        .or_else(|| own("requirements"))
    {
        return Some((r, true));
    }
    inv.hints
        .iter()
        .find(is)
        .or_else(|| own("hints"))
        .map(|r| (r, false))
}

/// `EnvVarRequirement.envDef` as (name, value) pairs; accepts the list form
/// (`[{envName, envValue}]`) and the map form (`{NAME: value}`).
fn env_defs(req: &Value) -> Result<Vec<(String, Value)>, CwlError> {
    let mut out = Vec::new();
    match req.get("envDef") {
        Some(Value::Array(items)) => {
            for d in items {
                let name = d.get("envName").and_then(Value::as_str).ok_or_else(|| {
                    CwlError::Invalid(format!(
                        "EnvVarRequirement: envDef entry without envName: {d}"
                    ))
                })?;
                let value = d
                    .get("envValue")
                    .cloned()
                    .unwrap_or(Value::String(String::new()));
                out.push((name.to_string(), value));
            }
        }
        Some(Value::Object(m)) => {
            for (name, v) in m {
                let value = match v {
                    Value::Object(o) => o.get("envValue").cloned().unwrap_or(Value::Null),
                    other => other.clone(),
                };
                out.push((name.clone(), value));
            }
        }
        None | Some(Value::Null) => {}
        Some(other) => {
            return Err(CwlError::Invalid(format!(
                "EnvVarRequirement.envDef must be a list of {{envName, envValue}}, got {other}"
            )));
        }
    }
    Ok(out)
}

fn codes(tool: &Value, key: &str) -> Vec<i32> {
    tool.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_i64)
                .filter_map(|c| i32::try_from(c).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The tool's id, for messages.
pub(crate) fn tool_id(inv: &Invocation) -> String {
    inv.tool
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("the tool")
        .to_string()
}

/// The short name of a parameter object (its `id`, or `name` for a record
/// field).
pub(crate) fn param_name(p: &Value) -> Option<&str> {
    p.get("id")
        .or_else(|| p.get("name"))
        .and_then(Value::as_str)
        .map(shortname)
}
