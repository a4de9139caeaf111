//! The input object as a tool sees it: local paths and names for every File
//! and Directory, then what each input's schema asks for (`loadContents`,
//! `loadListing`, `secondaryFiles`, `format`).

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::{Ctx, find_requirement, param_name};
use crate::files::{self, is_directory, is_file};
use crate::{CwlError, Invocation};

/// The input object keyed by short names: the value from the job, else the
/// input's `default`, else `null`. Undeclared keys are dropped.
pub(crate) fn build_inputs(inv: &Invocation) -> Value {
    let mut out = Map::new();
    let declared = inv.tool.get("inputs").and_then(Value::as_array);
    for p in declared.into_iter().flatten() {
        let Some(name) = param_name(p) else { continue };
        let id = p.get("id").and_then(Value::as_str).unwrap_or(name);
        let given = inv
            .job
            .get(name)
            .or_else(|| inv.job.get(id))
            .filter(|v| !v.is_null());
        let value = given
            .or_else(|| p.get("default"))
            .cloned()
            .unwrap_or(Value::Null);
        out.insert(name.to_string(), value);
    }
    Value::Object(out)
}

/// Creates the directories files are renamed or materialized in.
pub(crate) struct Stager {
    root: PathBuf,
    next: usize,
    /// Locations given to Directory literals: their listing is what the
    /// job wrote, kept whatever `loadListing` says.
    pub(crate) literal_dirs: std::collections::HashSet<String>,
}

impl Stager {
    pub(crate) fn new(root: PathBuf) -> Stager {
        Stager {
            root,
            next: 0,
            literal_dirs: Default::default(),
        }
    }

    /// A new empty directory under the stage root.
    pub(crate) fn new_dir(&mut self) -> Result<PathBuf, CwlError> {
        loop {
            let dir = self.root.join(format!("s{}", self.next));
            self.next += 1;
            if dir.exists() {
                continue;
            }
            fs::create_dir_all(&dir).map_err(|e| {
                CwlError::Failed(format!(
                    "cannot create staging directory {}: {e}",
                    dir.display()
                ))
            })?;
            return Ok(dir);
        }
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> CwlError {
    CwlError::Failed(format!("{what} {}: {e}", path.display()))
}

/// Creates a symbolic link `at` -> `target`.
pub(crate) fn symlink(target: &Path, at: &Path) -> Result<(), CwlError> {
    std::os::unix::fs::symlink(target, at).map_err(|e| io_err("cannot link", at, e))
}

/// Gives every File and Directory of `v` a local `path` and its names
/// (`basename`, `dirname`, `nameroot`, `nameext`, and a File's `size`).
///
/// Literals are written under the stage directory; a file whose local name
/// differs from its `basename`, or whose secondary files are not beside it
/// under their basenames, is linked into a fresh stage directory with them.
pub(crate) fn localize(v: &mut Value, st: &mut Stager) -> Result<(), CwlError> {
    match v {
        Value::Object(m) => match m.get("class").and_then(Value::as_str) {
            Some("File") => localize_file(m, st),
            Some("Directory") => localize_dir(m, st),
            _ => {
                for (_, item) in m.iter_mut() {
                    localize(item, st)?;
                }
                Ok(())
            }
        },
        Value::Array(items) => {
            for item in items {
                localize(item, st)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The local path of a File or Directory's `location`, or `None` for a
/// literal. Other schemes are an error: the caller stages files first.
fn local_path(m: &Map<String, Value>) -> Result<Option<PathBuf>, CwlError> {
    let Some(loc) = m.get("location").and_then(Value::as_str) else {
        return Ok(None);
    };
    if loc.starts_with("_:") {
        return Ok(None);
    }
    if let Some(p) = files::uri_to_path(loc) {
        return Ok(Some(p));
    }
    if loc.starts_with('/') {
        return Ok(Some(PathBuf::from(loc)));
    }
    Err(CwlError::Failed(format!(
        "{loc} is not a local file; stage it and give its file:// location before running the tool"
    )))
}

fn str_field<'m>(m: &'m Map<String, Value>, key: &str) -> Option<&'m str> {
    m.get(key).and_then(Value::as_str)
}

fn localize_file(m: &mut Map<String, Value>, st: &mut Stager) -> Result<(), CwlError> {
    if let Some(Value::Array(sfs)) = m.get_mut("secondaryFiles") {
        for sf in sfs.iter_mut() {
            localize(sf, st)?;
        }
    }
    let path = match local_path(m)? {
        Some(p) => p,
        None => {
            let Some(contents) = m.get("contents").and_then(Value::as_str) else {
                return Err(CwlError::Failed(format!(
                    "a File needs a location or contents: {}",
                    Value::Object(m.clone())
                )));
            };
            let base = str_field(m, "basename").unwrap_or("literal").to_string();
            let dir = st.new_dir()?;
            let p = dir.join(&base);
            fs::write(&p, contents).map_err(|e| io_err("cannot write", &p, e))?;
            m.insert("location".into(), json!(files::path_to_uri(&p)));
            p
        }
    };
    let meta = fs::metadata(&path).map_err(|e| {
        CwlError::Failed(format!(
            "input file {} is not readable: {e}",
            path.display()
        ))
    })?;
    if meta.is_dir() {
        return Err(CwlError::Failed(format!(
            "input {} is a directory but is given as a File",
            path.display()
        )));
    }
    if !m.get("basename").is_some_and(Value::is_string) {
        let loc = str_field(m, "location").unwrap_or_default().to_string();
        m.insert("basename".into(), json!(files::basename_of(&loc)));
    }
    let base = str_field(m, "basename").unwrap_or_default().to_string();
    m.insert("size".into(), json!(meta.len()));
    let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let name_ok = path
        .file_name()
        .is_some_and(|n| n.to_string_lossy() == base);
    let sfs_ok = match m.get("secondaryFiles") {
        Some(Value::Array(sfs)) => sfs.iter().all(|sf| {
            let p = sf.get("path").and_then(Value::as_str).map(Path::new);
            let b = sf.get("basename").and_then(Value::as_str);
            matches!((p, b), (Some(p), Some(b)) if p == parent.join(b))
        }),
        _ => true,
    };
    if name_ok && sfs_ok {
        files::set_path(m, &path);
        return Ok(());
    }
    let dir = st.new_dir()?;
    let staged = dir.join(&base);
    symlink(&path, &staged)?;
    if let Some(Value::Array(sfs)) = m.get_mut("secondaryFiles") {
        for sf in sfs.iter_mut() {
            let Value::Object(sm) = sf else { continue };
            let (Some(p), Some(b)) = (str_field(sm, "path"), str_field(sm, "basename")) else {
                continue;
            };
            let target = dir.join(b);
            if !target.exists() {
                symlink(Path::new(p), &target)?;
            }
            files::set_path(sm, &target);
        }
    }
    files::set_path(m, &staged);
    Ok(())
}

fn localize_dir(m: &mut Map<String, Value>, st: &mut Stager) -> Result<(), CwlError> {
    if let Some(Value::Array(items)) = m.get_mut("listing") {
        for item in items.iter_mut() {
            localize(item, st)?;
        }
    }
    let path = match local_path(m)? {
        Some(p) => {
            if !p.is_dir() {
                return Err(CwlError::Failed(format!(
                    "input directory {} does not exist or is not a directory",
                    p.display()
                )));
            }
            p
        }
        None => {
            // A Directory literal: made of its listing.
            let base = str_field(m, "basename").unwrap_or("dir").to_string();
            let dir = st.new_dir()?.join(&base);
            fs::create_dir_all(&dir).map_err(|e| io_err("cannot create", &dir, e))?;
            if let Some(Value::Array(items)) = m.get_mut("listing") {
                for item in items {
                    let Value::Object(im) = item else { continue };
                    let (Some(p), Some(b)) = (str_field(im, "path"), str_field(im, "basename"))
                    else {
                        continue;
                    };
                    let inside = dir.join(b);
                    symlink(Path::new(p), &inside)?;
                    files::set_path(im, &inside);
                }
            }
            let loc = files::path_to_uri(&dir);
            st.literal_dirs.insert(loc.clone());
            m.insert("location".into(), json!(loc));
            dir
        }
    };
    if !m.get("basename").is_some_and(Value::is_string) {
        let loc = str_field(m, "location").unwrap_or_default().to_string();
        m.insert("basename".into(), json!(files::basename_of(&loc)));
    }
    let base = str_field(m, "basename").unwrap_or_default().to_string();
    if path
        .file_name()
        .is_some_and(|n| n.to_string_lossy() == base)
    {
        files::set_path(m, &path);
    } else {
        let staged = st.new_dir()?.join(&base);
        symlink(&path, &staged)?;
        files::set_path(m, &staged);
    }
    Ok(())
}

/// How the schema pass reads files: from local paths on the agent, or
/// through a callback for ExpressionTools evaluated on the leader.
pub(crate) trait Access {
    /// The text of a file for `loadContents` (at most 64 KiB).
    fn contents(&mut self, file: &Map<String, Value>) -> Result<String, CwlError>;
    /// Whether a secondary file exists: `Some(class)` if it does, `None` if
    /// it does not, `Err` when this access cannot tell.
    fn probe(&mut self, location: &str) -> Result<Option<&'static str>, ()>;
    /// A directory's listing when the object has none (`None`: cannot list).
    fn list(
        &mut self,
        dir: &Map<String, Value>,
        deep: bool,
    ) -> Result<Option<Vec<Value>>, CwlError>;
}

/// Reads the local file system.
pub(crate) struct LocalAccess;

impl Access for LocalAccess {
    fn contents(&mut self, file: &Map<String, Value>) -> Result<String, CwlError> {
        let path = file
            .get("path")
            .and_then(Value::as_str)
            .map(PathBuf::from)
            .or_else(|| {
                file.get("location")
                    .and_then(Value::as_str)
                    .and_then(files::uri_to_path)
            })
            .ok_or_else(|| CwlError::Failed("loadContents: the file has no local path".into()))?;
        files::load_contents(&path)
    }

    fn probe(&mut self, location: &str) -> Result<Option<&'static str>, ()> {
        let Some(p) = files::uri_to_path(location) else {
            return Err(());
        };
        Ok(match fs::metadata(p) {
            Ok(m) if m.is_dir() => Some("Directory"),
            Ok(_) => Some("File"),
            Err(_) => None,
        })
    }

    fn list(
        &mut self,
        dir: &Map<String, Value>,
        deep: bool,
    ) -> Result<Option<Vec<Value>>, CwlError> {
        let Some(p) = dir.get("path").and_then(Value::as_str) else {
            return Ok(None);
        };
        files::list_dir(Path::new(p), deep)
            .map(Some)
            .map_err(|e| CwlError::Failed(format!("cannot list directory {p}: {e}")))
    }
}

/// Reads through the `read(location, limit)` callback of
/// [`super::run_expression_tool`].
pub(crate) struct CallbackAccess<'r, 'a>(pub(crate) &'r mut super::ReadFile<'a>);

impl Access for CallbackAccess<'_, '_> {
    fn contents(&mut self, file: &Map<String, Value>) -> Result<String, CwlError> {
        if let Some(c) = file.get("contents").and_then(Value::as_str) {
            return Ok(c.to_string());
        }
        let loc = file
            .get("location")
            .and_then(Value::as_str)
            .ok_or_else(|| CwlError::Failed("loadContents: the file has no location".into()))?;
        let bytes = (self.0)(loc, files::CONTENTS_LIMIT + 1)?;
        if bytes.len() > files::CONTENTS_LIMIT {
            return Err(CwlError::Failed(format!(
                "loadContents: {loc} is larger than 64 KiB; CWL reads at most 64 KiB into \
                 `contents`"
            )));
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn probe(&mut self, _location: &str) -> Result<Option<&'static str>, ()> {
        Err(())
    }

    fn list(
        &mut self,
        _dir: &Map<String, Value>,
        _deep: bool,
    ) -> Result<Option<Vec<Value>>, CwlError> {
        Ok(None)
    }
}

/// What an input parameter or record field asks of its File and Directory
/// values.
#[derive(Clone, Default)]
struct Extras {
    secondary: Option<Value>,
    format: Option<Value>,
    load_contents: bool,
    load_listing: Option<String>,
}

impl Extras {
    fn of(p: &Value) -> Extras {
        let binding_lc = p
            .get("inputBinding")
            .and_then(|b| b.get("loadContents"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Extras {
            secondary: p.get("secondaryFiles").filter(|v| !v.is_null()).cloned(),
            format: p.get("format").filter(|v| !v.is_null()).cloned(),
            load_contents: p
                .get("loadContents")
                .and_then(Value::as_bool)
                .unwrap_or(false)
                || binding_lc,
            load_listing: p
                .get("loadListing")
                .and_then(Value::as_str)
                .map(str::to_string),
        }
    }
}

/// What the schema pass does.
#[derive(Clone, Copy, Default)]
pub(crate) struct PassOptions {
    /// Look for secondary files beside their primary file (cwltool does
    /// for the top-level process only; inside a workflow the inputs are
    /// trusted).
    pub(crate) discover: bool,
    /// Only secondary files (no contents, listings or formats).
    pub(crate) secondary_only: bool,
}

/// Applies each input's `loadContents`, `loadListing`, `secondaryFiles`
/// and `format` to the input object (keyed by short names).
pub(crate) fn apply_schemas(
    ctx: &mut Ctx<'_>,
    job: &mut Value,
    acc: &mut dyn Access,
    literal_dirs: &std::collections::HashSet<String>,
    opts: PassOptions,
) -> Result<(), CwlError> {
    let default_listing = find_requirement(ctx.inv, "LoadListingRequirement")
        .and_then(|(r, _)| r.get("loadListing").and_then(Value::as_str))
        .unwrap_or("no_listing")
        .to_string();
    let params = ctx
        .inv
        .tool
        .get("inputs")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for p in &params {
        let Some(name) = param_name(p) else { continue };
        let Some(v) = job.get_mut(name) else { continue };
        let ty = p.get("type").cloned().unwrap_or(Value::Null);
        let mut pass = Pass {
            acc: &mut *acc,
            default_listing: &default_listing,
            literal_dirs,
            opts,
        };
        process(ctx, &mut pass, &ty, &Extras::of(p), v, name)?;
    }
    Ok(())
}

/// What the schema pass carries down the input object.
struct Pass<'p> {
    acc: &'p mut dyn Access,
    default_listing: &'p str,
    literal_dirs: &'p std::collections::HashSet<String>,
    opts: PassOptions,
}

fn process(
    ctx: &mut Ctx<'_>,
    pass: &mut Pass<'_>,
    ty: &Value,
    ex: &Extras,
    v: &mut Value,
    name: &str,
) -> Result<(), CwlError> {
    if v.is_null() {
        return Ok(());
    }
    match ty {
        Value::Array(options) => {
            if let Some(t) = options.iter().find(|t| super::bind::matches_type(t, v)) {
                let t = t.clone();
                process(ctx, pass, &t, ex, v, name)?;
            }
            Ok(())
        }
        Value::Object(t) => match t.get("type").and_then(Value::as_str) {
            Some("array") => {
                let items = t.get("items").cloned().unwrap_or(Value::Null);
                if let Value::Array(vs) = v {
                    for item in vs {
                        process(ctx, pass, &items, ex, item, name)?;
                    }
                }
                Ok(())
            }
            Some("record") => {
                let fields = t.get("fields").and_then(Value::as_array).cloned();
                for f in fields.into_iter().flatten() {
                    let Some(fname) = param_name(&f) else {
                        continue;
                    };
                    let Some(fv) = v.get_mut(fname) else { continue };
                    let fty = f.get("type").cloned().unwrap_or(Value::Null);
                    process(ctx, pass, &fty, &Extras::of(&f), fv, fname)?;
                }
                Ok(())
            }
            _ => Ok(()),
        },
        Value::String(s) if s == "File" => {
            let Value::Object(m) = v else { return Ok(()) };
            let only_sf = pass.opts.secondary_only;
            if ex.load_contents && !only_sf && !m.contains_key("contents") {
                let c = pass.acc.contents(m)?;
                m.insert("contents".into(), json!(c));
            }
            if let Some(sf) = &ex.secondary {
                let discover = pass.opts.discover;
                input_secondary_files(ctx, &mut *pass.acc, sf, m, name, discover)?;
            }
            if let Some(fmt) = &ex.format
                && !only_sf
            {
                check_format(ctx, fmt, m, name)?;
            }
            Ok(())
        }
        Value::String(s) if s == "Directory" => {
            let Value::Object(m) = v else { return Ok(()) };
            if pass.opts.secondary_only {
                return Ok(());
            }
            let literal = m
                .get("location")
                .and_then(Value::as_str)
                .is_some_and(|l| pass.literal_dirs.contains(l));
            if literal {
                return Ok(());
            }
            let ll = ex.load_listing.as_deref().unwrap_or(pass.default_listing);
            apply_listing(&mut *pass.acc, m, ll)
        }
        _ => Ok(()),
    }
}

/// Trims or fills a Directory's `listing` to `no_listing`,
/// `shallow_listing` or `deep_listing`.
fn apply_listing(
    acc: &mut dyn Access,
    m: &mut Map<String, Value>,
    ll: &str,
) -> Result<(), CwlError> {
    match ll {
        "shallow_listing" => {
            if !m.contains_key("listing")
                && let Some(l) = acc.list(m, false)?
            {
                m.insert("listing".into(), Value::Array(l));
            }
            if let Some(Value::Array(items)) = m.get_mut("listing") {
                for item in items {
                    if let Value::Object(im) = item
                        && im.get("class").and_then(Value::as_str) == Some("Directory")
                    {
                        im.remove("listing");
                    }
                }
            }
        }
        "deep_listing" => {
            if !m.contains_key("listing")
                && let Some(l) = acc.list(m, true)?
            {
                m.insert("listing".into(), Value::Array(l));
            }
        }
        _ => {
            m.remove("listing");
        }
    }
    Ok(())
}

/// Checks and completes an input File's secondary files, as cwltool: each
/// pattern's file must be among `secondaryFiles` (or, with `discover`,
/// beside the primary file: then it is added), unless `required` is false.
/// Without `discover`, a File that already lists secondary files is trusted.
fn input_secondary_files(
    ctx: &mut Ctx<'_>,
    acc: &mut dyn Access,
    specs: &Value,
    m: &mut Map<String, Value>,
    name: &str,
    discover: bool,
) -> Result<(), CwlError> {
    let specs: Vec<Value> = match specs {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    };
    if m.contains_key("secondaryFiles") {
        if !discover {
            return Ok(());
        }
    } else {
        m.insert("secondaryFiles".into(), json!([]));
    }
    for spec in specs {
        let (pattern, required) = match &spec {
            Value::String(s) => (Value::String(s.clone()), Value::Null),
            other => (
                other.get("pattern").cloned().unwrap_or(Value::Null),
                other.get("required").cloned().unwrap_or(Value::Null),
            ),
        };
        let self_ = Value::Object(m.clone());
        // Absent means required; an expression that gives null means not
        // required (as cwltool).
        let was_given = !required.is_null();
        let required = match ctx.eval(&required, &self_)? {
            Value::Null => !was_given,
            Value::Bool(b) => b,
            other => {
                return Err(CwlError::Failed(format!(
                    "input {name}: secondaryFiles `required` must evaluate to true or false, \
                     got {other}"
                )));
            }
        };
        let found = match &pattern {
            Value::String(p) if crate::expr::Evaluator::is_expression(p) => {
                ctx.eval(&pattern, &self_)?
            }
            Value::String(p) => {
                let base = m
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
            let (sf_base, sf_obj) = match item {
                Value::String(s) if s.is_empty() => continue,
                Value::String(s) => (s, None),
                Value::Object(o) => {
                    let b = o
                        .get("basename")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .or_else(|| {
                            o.get("location")
                                .and_then(Value::as_str)
                                .map(files::basename_of)
                        })
                        .unwrap_or_default();
                    (b, Some(Value::Object(o)))
                }
                other => {
                    return Err(CwlError::Failed(format!(
                        "input {name}: a secondaryFiles pattern must give a string, a File or a \
                         Directory, got {other}"
                    )));
                }
            };
            let have = m
                .get("secondaryFiles")
                .and_then(Value::as_array)
                .is_some_and(|sfs| {
                    sfs.iter().any(|sf| {
                        sf.get("basename").and_then(Value::as_str) == Some(sf_base.as_str())
                            || sf
                                .get("location")
                                .and_then(Value::as_str)
                                .is_some_and(|l| files::basename_of(l) == sf_base)
                    })
                });
            if have {
                continue;
            }
            if let Some(obj) = sf_obj {
                push_sf(m, obj);
                continue;
            }
            let loc = m
                .get("location")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let sf_loc = match loc.rfind('/') {
                Some(i) => format!("{}{}", &loc[..=i], files::percent_encode(&sf_base)),
                None => sf_base.clone(),
            };
            let probed = if discover {
                acc.probe(&sf_loc)
            } else {
                Ok(None)
            };
            match probed {
                Ok(Some(class)) => {
                    let mut o = Map::new();
                    o.insert("class".into(), json!(class));
                    o.insert("location".into(), json!(sf_loc));
                    files::fill_names(&mut o);
                    if class == "File"
                        && let Some(p) = o.get("path").and_then(Value::as_str)
                        && let Ok(meta) = fs::metadata(p)
                    {
                        o.insert("size".into(), json!(meta.len()));
                    }
                    push_sf(m, Value::Object(o));
                }
                Ok(None) if required => {
                    return Err(CwlError::Failed(format!(
                        "input {name}: missing required secondary file {sf_base:?} of {}; give \
                         it in the File's secondaryFiles (or, for the workflow's own inputs, \
                         place it next to the file)",
                        loc
                    )));
                }
                // Not required, or this access cannot look (the workflow
                // engine checked when the files were imported).
                Ok(None) | Err(()) => {}
            }
        }
    }
    Ok(())
}

fn push_sf(m: &mut Map<String, Value>, sf: Value) {
    if let Some(Value::Array(sfs)) = m.get_mut("secondaryFiles") {
        sfs.push(sf);
    }
}

/// Checks a File's `format` against an input's allowed formats.
///
/// Equal URIs match. The ontologies named by `$schemas` are not loaded: a
/// File format and an allowed format that are both under the document's
/// `$namespaces` (for example two EDAM formats, or a Galaxy format declared
/// equivalent to an EDAM one) are accepted, since the ontology may relate
/// them.
fn check_format(
    ctx: &mut Ctx<'_>,
    fmt: &Value,
    m: &Map<String, Value>,
    name: &str,
) -> Result<(), CwlError> {
    let allowed = match ctx.eval(fmt, &Value::Null)? {
        Value::String(s) => vec![s],
        Value::Array(a) => a
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                other => Err(CwlError::Failed(format!(
                    "input {name}: `format` must give strings, got {other}"
                ))),
            })
            .collect::<Result<_, _>>()?,
        Value::Null => return Ok(()),
        other => {
            return Err(CwlError::Failed(format!(
                "input {name}: `format` must give a string or a list of strings, got {other}"
            )));
        }
    };
    let allowed: Vec<String> = allowed.iter().map(|f| expand(ctx.inv, f)).collect();
    let Some(actual) = m.get("format").and_then(Value::as_str) else {
        return Err(CwlError::Failed(format!(
            "input {name}: the file {} has no `format`, but the input requires one of {}",
            m.get("location").and_then(Value::as_str).unwrap_or("?"),
            allowed.join(", ")
        )));
    };
    let actual = expand(ctx.inv, actual);
    if allowed.contains(&actual) {
        return Ok(());
    }
    let namespaces: Vec<&str> = ctx
        .inv
        .namespaces
        .values()
        .filter_map(Value::as_str)
        .collect();
    let in_ontology = |u: &str| namespaces.iter().any(|n| u.starts_with(*n));
    if in_ontology(&actual) && allowed.iter().any(|a| in_ontology(a)) {
        return Ok(());
    }
    Err(CwlError::Failed(format!(
        "input {name}: the file {} has format {actual}, which is not among the allowed {}",
        m.get("location").and_then(Value::as_str).unwrap_or("?"),
        allowed.join(", ")
    )))
}

/// Expands a `prefix:name` format through the document's `$namespaces`.
fn expand(inv: &Invocation, f: &str) -> String {
    if let Some((prefix, rest)) = f.split_once(':')
        && !rest.starts_with("//")
        && let Some(ns) = inv.namespaces.get(prefix).and_then(Value::as_str)
    {
        return format!("{ns}{rest}");
    }
    f.to_string()
}

/// True when `v` is a File or Directory object.
pub(crate) fn is_file_or_dir(v: &Value) -> bool {
    is_file(v) || is_directory(v)
}
