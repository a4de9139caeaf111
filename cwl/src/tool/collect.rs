//! Output collection: exit code classes, `cwl.output.json`, output
//! bindings (`glob`, `loadContents`, `loadListing`, `outputEval`,
//! `secondaryFiles`, `format`), checksums, and type checks.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::bind::matches_type;
use super::glob::glob;
use super::{Ctx, Prepared, find_requirement, param_name, runtime_json, tool_id};
use crate::expr::Evaluator;
use crate::files::{self, is_file};
use crate::{CwlError, Invocation, Runtime};

/// What a tool's exit code means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitClass {
    /// The tool succeeded.
    Success,
    /// A temporary failure: the invocation may be retried.
    TemporaryFailure,
    /// A permanent failure.
    PermanentFailure,
}

/// Classifies an exit code by the tool's `successCodes`,
/// `temporaryFailCodes` and `permanentFailCodes` (checked in that order);
/// otherwise 0 is success and anything else a permanent failure.
pub fn exit_class(tool: &Value, code: i32) -> ExitClass {
    let has = |key: &str| {
        tool.get(key)
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|c| c.as_i64() == Some(i64::from(code))))
    };
    if has("successCodes") {
        ExitClass::Success
    } else if has("temporaryFailCodes") {
        ExitClass::TemporaryFailure
    } else if has("permanentFailCodes") {
        ExitClass::PermanentFailure
    } else if code == 0 {
        ExitClass::Success
    } else {
        ExitClass::PermanentFailure
    }
}

pub(crate) fn collect(
    inv: &Invocation,
    prepared: &Prepared,
    rt: &Runtime,
    exit_code: i32,
) -> Result<Value, CwlError> {
    match exit_class(&inv.tool, exit_code) {
        ExitClass::Success => {}
        ExitClass::TemporaryFailure => {
            return Err(CwlError::TemporaryFailure(format!(
                "{} exited with code {exit_code}, one of its temporaryFailCodes",
                tool_id(inv)
            )));
        }
        ExitClass::PermanentFailure => {
            return Err(CwlError::Failed(format!(
                "{} failed with exit code {exit_code}",
                tool_id(inv)
            )));
        }
    }
    let mut runtime = runtime_json(rt);
    runtime["exitCode"] = json!(exit_code);
    let mut ctx = Ctx::new(inv, runtime)?;
    ctx.inputs = prepared.job.clone();

    let custom = rt.outdir.join("cwl.output.json");
    let mut result = if custom.is_file() {
        let text = fs::read_to_string(&custom)
            .map_err(|e| CwlError::Failed(format!("cannot read {}: {e}", custom.display())))?;
        let mut v: Value = serde_json::from_str(&text).map_err(|e| {
            CwlError::Failed(format!(
                "{} is not valid JSON ({e}); the tool must write an object of outputs",
                custom.display()
            ))
        })?;
        if !v.is_object() {
            return Err(CwlError::Failed(format!(
                "{} must hold a JSON object of outputs, got {v}",
                custom.display()
            )));
        }
        resolve_relative(&mut v, &rt.outdir);
        v
    } else {
        let mut out = Map::new();
        let outputs = inv
            .tool
            .get("outputs")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for port in &outputs {
            let Some(name) = param_name(port) else {
                continue;
            };
            let v = collect_output(&mut ctx, port, rt).map_err(|e| match e {
                CwlError::Failed(m) => CwlError::Failed(format!("output {name}: {m}")),
                other => other,
            })?;
            out.insert(name.to_string(), v);
        }
        Value::Object(out)
    };
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(o) = rt.outdir.canonicalize() {
        roots.push(o);
    }
    roots.extend(
        prepared
            .initial_workdir_sources
            .iter()
            .filter_map(|p| p.canonicalize().ok()),
    );
    let mut job = prepared.job.clone();
    files::walk_mut(&mut job, &mut |m| {
        if let Some(p) = local_path(m)
            && let Ok(c) = p.canonicalize()
        {
            roots.push(c);
        }
    });
    finalize(&mut result, &roots)?;
    check_outputs(inv, result, false)
}

/// Gives File and Directory objects of `cwl.output.json` absolute
/// `file://` locations (their `location` or `path` may be relative to the
/// output directory).
fn resolve_relative(v: &mut Value, outdir: &Path) {
    files::walk_mut(v, &mut |m| {
        let loc = m
            .get("location")
            .and_then(Value::as_str)
            .map(str::to_string);
        let path = m.get("path").and_then(Value::as_str).map(str::to_string);
        let abs = |p: &str| -> String {
            let pb = Path::new(p);
            let full = if pb.is_absolute() {
                pb.to_path_buf()
            } else {
                outdir.join(pb)
            };
            files::path_to_uri(&super::glob::lexical_normalize(&full))
        };
        match (loc, path) {
            (Some(l), _) if l.contains(':') && !l.starts_with('/') => {}
            (Some(l), _) => {
                let decoded = files::percent_decode(&l);
                m.insert("location".into(), json!(abs(&decoded)));
                m.remove("path");
            }
            (None, Some(p)) => {
                m.insert("location".into(), json!(abs(&p)));
                m.remove("path");
            }
            (None, None) => {}
        }
        files::fill_names(m);
    });
}

/// The local path of a File or Directory object (from `path`, else a
/// `file://` location).
fn local_path(m: &Map<String, Value>) -> Option<PathBuf> {
    m.get("path")
        .and_then(Value::as_str)
        .map(PathBuf::from)
        .or_else(|| {
            m.get("location")
                .and_then(Value::as_str)
                .and_then(files::uri_to_path)
        })
}

/// Fills checksums and sizes of local files and whole listings of local
/// directories; drops the local-only `path` and `dirname`. Every output
/// must be, after following links, under one of `roots` (the output
/// directory and the inputs): a link the tool made to a file elsewhere is
/// an error.
fn finalize(v: &mut Value, roots: &[PathBuf]) -> Result<(), CwlError> {
    files::try_walk_mut(v, &mut |m| {
        if let Some(p) = local_path(m) {
            if let Ok(real) = p.canonicalize()
                && !roots.iter().any(|r| real.starts_with(r))
            {
                return Err(CwlError::Failed(format!(
                    "the output {} leads to {}, outside the output directory and not an input;                      outputs must be written in the output directory",
                    p.display(),
                    real.display()
                )));
            }
            if !m.contains_key("location") {
                m.insert("location".into(), json!(files::path_to_uri(&p)));
            }
            if m.get("class").and_then(Value::as_str) == Some("File") {
                let known = m.get("checksum").is_some_and(Value::is_string)
                    && m.get("size").is_some_and(Value::is_u64);
                if known && p.is_file() {
                    // Hashed already (a glob result, or an input passed
                    // through with the checksum the job store gave it).
                } else if p.is_file() {
                    let (sum, size) = files::sha1_file(&p).map_err(|e| {
                        CwlError::Failed(format!("cannot read output {}: {e}", p.display()))
                    })?;
                    m.insert("checksum".into(), json!(sum));
                    m.insert("size".into(), json!(size));
                } else if !m.contains_key("contents") {
                    return Err(CwlError::Failed(format!(
                        "the output file {} does not exist",
                        p.display()
                    )));
                }
            } else if p.is_dir() {
                if !m.contains_key("listing") {
                    let listing = files::list_dir(&p, true).map_err(|e| {
                        CwlError::Failed(format!("cannot list output {}: {e}", p.display()))
                    })?;
                    m.insert("listing".into(), Value::Array(listing));
                }
            } else {
                return Err(CwlError::Failed(format!(
                    "the output directory {} does not exist",
                    p.display()
                )));
            }
        }
        files::fill_names(m);
        m.remove("path");
        m.remove("dirname");
        Ok(())
    })
}

fn is_single(ty: &Value) -> (bool, bool) {
    match ty {
        Value::Array(opts) => {
            let optional = opts.iter().any(|o| o == "null");
            let single = opts.iter().any(|o| o == "File" || o == "Directory");
            (optional, single)
        }
        Value::String(s) => (false, s == "File" || s == "Directory"),
        _ => (false, false),
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

fn as_list(v: &mut Value) -> Vec<&mut Value> {
    match v {
        Value::Array(a) => a.iter_mut().collect(),
        Value::Null => vec![],
        other => vec![other],
    }
}

/// cwltool's `collect_output` for one output parameter or record field.
fn collect_output(ctx: &mut Ctx<'_>, schema: &Value, rt: &Runtime) -> Result<Value, CwlError> {
    let ty = schema.get("type").cloned().unwrap_or(Value::Null);
    let mut result = Value::Null;
    if let Some(binding) = schema.get("outputBinding").filter(|b| b.is_object()) {
        let mut patterns: Vec<String> = Vec::new();
        if let Some(g) = binding.get("glob") {
            let globs = match g {
                Value::Array(a) => a.clone(),
                other => vec![other.clone()],
            };
            for gb in globs {
                match ctx.eval(&gb, &Value::Null)? {
                    Value::String(s) if s.is_empty() => {}
                    Value::String(s) => patterns.push(s),
                    Value::Array(a) => {
                        for x in a {
                            match x {
                                Value::String(s) => patterns.push(s),
                                other => {
                                    return Err(CwlError::Failed(format!(
                                        "glob patterns must be strings, got {other}"
                                    )));
                                }
                            }
                        }
                    }
                    Value::Null => {}
                    other => {
                        return Err(CwlError::Failed(format!(
                            "glob must give a string or a list of strings, got {other}"
                        )));
                    }
                }
            }
        }
        let outdir_s = rt.outdir.to_string_lossy().into_owned();
        let mut matched: Vec<Value> = Vec::new();
        for pat in &patterns {
            let rel = if let Some(rest) = pat.strip_prefix(&format!("{outdir_s}/")) {
                rest.to_string()
            } else if *pat == outdir_s {
                ".".to_string()
            } else if pat.starts_with('/') {
                return Err(CwlError::Failed(format!(
                    "the glob {pat:?} is an absolute path outside the output directory; globs \
                     are relative to it"
                )));
            } else {
                pat.clone()
            };
            for p in glob(&rt.outdir, &rel)? {
                let mut obj = files::object_for_path(&p)
                    .map_err(|e| CwlError::Failed(format!("cannot read {}: {e}", p.display())))?;
                if let Value::Object(m) = &mut obj {
                    m.remove("size");
                }
                matched.push(obj);
            }
        }
        let ll = binding
            .get("loadListing")
            .and_then(Value::as_str)
            .or_else(|| {
                find_requirement(ctx.inv, "LoadListingRequirement")
                    .and_then(|(r, _)| r.get("loadListing").and_then(Value::as_str))
            })
            .unwrap_or("no_listing")
            .to_string();
        let load_contents = binding.get("loadContents").and_then(Value::as_bool) == Some(true)
            || schema.get("loadContents").and_then(Value::as_bool) == Some(true);
        for obj in &mut matched {
            let Value::Object(m) = obj else { continue };
            let Some(p) = local_path(m) else { continue };
            if m.get("class").and_then(Value::as_str) == Some("Directory") {
                if ll != "no_listing" {
                    let listing = files::list_dir(&p, ll == "deep_listing").map_err(|e| {
                        CwlError::Failed(format!("cannot list {}: {e}", p.display()))
                    })?;
                    m.insert("listing".into(), Value::Array(listing));
                }
            } else {
                if load_contents {
                    m.insert("contents".into(), json!(files::load_contents(&p)?));
                }
                let (sum, size) = files::sha1_file(&p)
                    .map_err(|e| CwlError::Failed(format!("cannot read {}: {e}", p.display())))?;
                m.insert("checksum".into(), json!(sum));
                m.insert("size".into(), json!(size));
            }
        }

        let (optional, single) = is_single(&ty);
        result = match binding.get("outputEval").filter(|v| !v.is_null()) {
            Some(oe) => ctx.eval(oe, &Value::Array(matched))?,
            None => Value::Array(matched),
        };
        if single {
            if !truthy(&result) && !optional {
                return Err(CwlError::Failed(format!(
                    "no output file matched the glob {patterns:?}"
                )));
            }
            if let Value::Array(a) = &result {
                if a.len() > 1 {
                    return Err(CwlError::Failed(format!(
                        "the glob {patterns:?} matched {} files, but the output is a single {}",
                        a.len(),
                        if ty.to_string().contains("Directory") {
                            "Directory"
                        } else {
                            "File"
                        }
                    )));
                }
                result = a.first().cloned().unwrap_or(Value::Null);
            }
        }

        if let Some(sf) = schema.get("secondaryFiles").filter(|v| !v.is_null()) {
            let specs = match sf {
                Value::Array(a) => a.clone(),
                other => vec![other.clone()],
            };
            for primary in as_list(&mut result) {
                if primary.is_object() {
                    output_secondary_files(ctx, &specs, primary)?;
                }
            }
        }

        if let Some(fmt) = schema.get("format").filter(|v| !v.is_null()) {
            let is_expr = fmt.as_str().is_some_and(Evaluator::is_expression);
            for primary in as_list(&mut result) {
                if !is_file(primary) {
                    continue;
                }
                let f = if is_expr {
                    match ctx.eval(fmt, primary)? {
                        Value::String(s) => json!(s),
                        other => {
                            return Err(CwlError::Failed(format!(
                                "`format` must evaluate to a string, got {other}"
                            )));
                        }
                    }
                } else {
                    fmt.clone()
                };
                primary["format"] = f;
            }
        }

        if !truthy(&result) && optional {
            let zero = matches!(&result, Value::Number(n) if n.as_f64() == Some(0.0))
                || result == json!("")
                || result == json!(false);
            return Ok(if zero { result } else { Value::Null });
        }
    }

    if !truthy(&result)
        && let Value::Object(t) = &ty
        && t.get("type").and_then(Value::as_str) == Some("record")
    {
        let mut out = Map::new();
        for f in t
            .get("fields")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(name) = param_name(f) else { continue };
            out.insert(name.to_string(), collect_output(ctx, f, rt)?);
        }
        return Ok(Value::Object(out));
    }
    Ok(result)
}

/// Adds an output File's secondary files found next to it.
fn output_secondary_files(
    ctx: &mut Ctx<'_>,
    specs: &[Value],
    primary: &mut Value,
) -> Result<(), CwlError> {
    let Value::Object(pm) = primary else {
        return Ok(());
    };
    let Some(ppath) = local_path(pm) else {
        return Ok(());
    };
    let dir = ppath.parent().map(Path::to_path_buf).unwrap_or_default();
    if !pm.contains_key("secondaryFiles") {
        pm.insert("secondaryFiles".into(), json!([]));
    }
    for spec in specs {
        let (pattern, required) = match spec {
            Value::String(s) => (Value::String(s.clone()), Value::Null),
            other => (
                other.get("pattern").cloned().unwrap_or(Value::Null),
                other.get("required").cloned().unwrap_or(Value::Null),
            ),
        };
        let self_ = Value::Object(pm.clone());
        let required = match ctx.eval(&required, &self_)? {
            Value::Null => false,
            Value::Bool(b) => b,
            other => {
                return Err(CwlError::Failed(format!(
                    "secondaryFiles `required` must evaluate to true or false, got {other}"
                )));
            }
        };
        let found = match &pattern {
            Value::String(p) if Evaluator::is_expression(p) => ctx.eval(&pattern, &self_)?,
            Value::String(p) => {
                let base = pm
                    .get("basename")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                json!(files::secondary_name(base, p))
            }
            other => other.clone(),
        };
        let items = match found {
            Value::Array(a) => a,
            Value::Null => vec![],
            other => vec![other],
        };
        for item in items {
            let (path, mut obj) = match item {
                Value::String(s) if s.is_empty() => continue,
                Value::String(s) => {
                    let p = dir.join(&s);
                    (p, Map::new())
                }
                Value::Object(o) => {
                    let Some(p) = local_path(&o) else {
                        if let Some(Value::Array(sfs)) = pm.get_mut("secondaryFiles") {
                            sfs.push(Value::Object(o));
                        }
                        continue;
                    };
                    (p, o)
                }
                other => {
                    return Err(CwlError::Failed(format!(
                        "a secondaryFiles pattern must give a string, a File or a Directory, \
                         got {other}"
                    )));
                }
            };
            let class = match fs::metadata(&path) {
                Ok(m) if m.is_dir() => "Directory",
                Ok(_) => "File",
                Err(_) if required => {
                    return Err(CwlError::Failed(format!(
                        "missing required secondary file {}",
                        path.display()
                    )));
                }
                Err(_) => continue,
            };
            obj.insert("class".into(), json!(class));
            obj.insert("location".into(), json!(files::path_to_uri(&path)));
            // A basename the expression gave is the name the file is to
            // have (the export names it so).
            let given = obj
                .get("basename")
                .and_then(Value::as_str)
                .map(str::to_string);
            files::set_path(&mut obj, &path);
            if let Some(b) = given {
                let (root, ext) = files::split_ext(&b);
                obj.insert("basename".into(), json!(b));
                obj.insert("nameroot".into(), json!(root));
                obj.insert("nameext".into(), json!(ext));
            }
            if let Some(Value::Array(sfs)) = pm.get_mut("secondaryFiles") {
                sfs.push(Value::Object(obj));
            }
        }
    }
    Ok(())
}

/// Whether an output of type `ty` may be null (cwltool lets `Any` be null
/// in outputs too).
fn accepts_null(ty: &Value) -> bool {
    match ty {
        Value::String(s) => s == "null" || s == "Any",
        Value::Array(a) => a.iter().any(accepts_null),
        _ => false,
    }
}

/// Checks an output object against the process's outputs and keeps only
/// the declared ones (a missing optional output is `null`).
pub(crate) fn check_outputs(
    inv: &Invocation,
    result: Value,
    expression_tool: bool,
) -> Result<Value, CwlError> {
    let Value::Object(mut given) = result else {
        return Err(CwlError::Failed(format!(
            "{}: the outputs must be an object",
            tool_id(inv)
        )));
    };
    let mut out = Map::new();
    let outputs = inv.tool.get("outputs").and_then(Value::as_array);
    for port in outputs.into_iter().flatten() {
        let Some(name) = param_name(port) else {
            continue;
        };
        let ty = port.get("type").cloned().unwrap_or(Value::Null);
        let v = given.remove(name).unwrap_or(Value::Null);
        if v.is_null() {
            if !accepts_null(&ty) {
                return Err(CwlError::Failed(format!(
                    "{}: the required output {name} (type {ty}) is missing{}",
                    tool_id(inv),
                    if expression_tool {
                        "; the expression must give it"
                    } else {
                        ""
                    }
                )));
            }
        } else if !matches_type(&ty, &v) {
            return Err(CwlError::Failed(format!(
                "{}: the output {name} is {v}, which is not of its type {ty}",
                tool_id(inv)
            )));
        }
        out.insert(name.to_string(), v);
    }
    Ok(Value::Object(out))
}
