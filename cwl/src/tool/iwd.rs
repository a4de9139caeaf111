//! `InitialWorkDirRequirement`: files and directories created in the output
//! directory before the tool runs.
//!
//! Entries are evaluated (Dirents, expressions giving Files, Directories,
//! arrays of them or null), then staged: a File literal or a string entry
//! is written; a file or directory is linked, or copied when `writable`
//! (linked anyway under `InplaceUpdateRequirement`). Inputs staged this way
//! get their new `path` (and names), as in cwltool.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::inputs::{Stager, is_file_or_dir, localize, symlink};
use super::{Ctx, Prepared, find_requirement, stage_dir};
use crate::files::{self, is_directory, is_file};
use crate::{CwlError, Runtime};

fn fail(msg: String) -> CwlError {
    CwlError::Failed(format!("InitialWorkDirRequirement: {msg}"))
}

/// Evaluates and stages the tool's `InitialWorkDirRequirement` into
/// `rt.outdir`, then points inputs that were staged at their new paths.
pub(crate) fn stage(
    ctx: &mut Ctx<'_>,
    rt: &Runtime,
    container: bool,
    inplace: bool,
    prepared: &mut Prepared,
) -> Result<(), CwlError> {
    let Some((req, _)) = find_requirement(ctx.inv, "InitialWorkDirRequirement") else {
        return Ok(());
    };
    let req = req.clone();
    let items = evaluate(ctx, &req)?;
    let mut stager = Stager::new(stage_dir(rt));
    let mut moved: HashMap<String, PathBuf> = HashMap::new();
    let doc_dir = ctx
        .inv
        .tool
        .get("id")
        .and_then(Value::as_str)
        .and_then(|id| id.split('#').next())
        .and_then(|u| u.rsplit_once('/'))
        .map(|(dir, _)| dir.to_string());
    for (i, mut item) in items.into_iter().enumerate() {
        // A literal with a relative location (from an expression) is
        // relative to the tool's document.
        if let Some(dir) = &doc_dir {
            files::walk_mut(&mut item, &mut |m| {
                if let Some(loc) = m.get("location").and_then(Value::as_str)
                    && !loc.contains(':')
                    && !loc.starts_with('/')
                {
                    let joined = files::join_location(dir, &files::percent_encode(loc));
                    let normalized = files::uri_to_path(&joined)
                        .map(|p| files::path_to_uri(&super::glob::lexical_normalize(&p)))
                        .unwrap_or(joined);
                    m.insert("location".into(), json!(normalized));
                    m.remove("path");
                }
            });
        }
        let needs_local = item
            .get("location")
            .and_then(Value::as_str)
            .is_some_and(|l| !l.starts_with("_:"))
            && item.get("path").is_none();
        if needs_local {
            // The entry's own name (entryname) is where it goes in the
            // output directory, not a name to give its source.
            let mut source = item.clone();
            if let Value::Object(m) = &mut source {
                m.remove("basename");
                m.remove("secondaryFiles");
            }
            localize(&mut source, &mut stager)?;
            if let (Value::Object(m), Some(p)) = (&mut item, source.get("path")) {
                m.insert("path".into(), p.clone());
                if !m.contains_key("basename") {
                    m.insert("basename".into(), source["basename"].clone());
                }
            }
        }
        let Some(base) = item.get("basename").and_then(Value::as_str) else {
            return Err(fail(format!(
                "entry {i} has no name; give it an entryname: {item}"
            )));
        };
        let base = normpath(base);
        if base == ".." || base.starts_with("../") {
            return Err(fail(format!(
                "entry {i} is named {base:?}, which is outside the output directory"
            )));
        }
        let writable = item.get("writable").and_then(Value::as_bool) == Some(true);
        if base.starts_with('/') {
            if !container {
                return Err(fail(format!(
                    "entry {i} has the absolute name {base:?}; absolute names are allowed only \
                     when the tool runs in a container (DockerRequirement in requirements)"
                )));
            }
            let host = stager.new_dir()?.join(
                Path::new(&base)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "entry".into()),
            );
            stage_entry(
                &item,
                &host,
                writable,
                inplace,
                &mut moved,
                &mut prepared.initial_workdir_sources,
            )?;
            prepared
                .container_mounts
                .push((host, base.clone(), writable));
            continue;
        }
        let target = rt.outdir.join(&base);
        stage_entry(
            &item,
            &target,
            writable,
            inplace,
            &mut moved,
            &mut prepared.initial_workdir_sources,
        )?;
    }
    if !moved.is_empty() {
        files::walk_mut(&mut ctx.inputs, &mut |m| {
            if let Some(loc) = m.get("location").and_then(Value::as_str)
                && let Some(target) = moved.get(loc)
            {
                let target = target.clone();
                files::set_path(m, &target);
            }
        });
    }
    Ok(())
}

/// The listing as File and Directory objects, each with its `basename`
/// (entryname) and `writable`.
fn evaluate(ctx: &mut Ctx<'_>, req: &Value) -> Result<Vec<Value>, CwlError> {
    let mut ls: Vec<Value> = Vec::new();
    match req.get("listing") {
        Some(Value::String(expr)) => {
            let v = ctx.eval(&Value::String(expr.clone()), &Value::Null)?;
            let Value::Array(entries) = v else {
                return Err(fail(format!(
                    "the listing expression must give a list of Files, Directories and Dirents, \
                     got {v}"
                )));
            };
            for e in entries {
                match e {
                    Value::Null => {}
                    Value::Array(inner) => {
                        for x in inner {
                            if !is_file_or_dir(&x) {
                                return Err(fail(format!(
                                    "the listing expression gave an array with {x}, which is \
                                     not a File or Directory"
                                )));
                            }
                            ls.push(x);
                        }
                    }
                    Value::Object(ref m) if is_file_or_dir(&e) || m.contains_key("entry") => {
                        ls.push(e)
                    }
                    other => {
                        return Err(fail(format!(
                            "the listing expression gave {other}, which is not a File, \
                             Directory or Dirent"
                        )));
                    }
                }
            }
        }
        Some(Value::Array(items)) => {
            for t in items {
                if t.get("entry").is_some() {
                    dirent(ctx, t, &mut ls)?;
                    continue;
                }
                match ctx.eval(t, &Value::Null)? {
                    Value::Null | Value::Bool(false) => {}
                    Value::String(s) if s.is_empty() => {}
                    Value::Array(a) => ls.extend(a.into_iter().filter(|x| !x.is_null())),
                    other => ls.push(other),
                }
            }
        }
        None | Some(Value::Null) => {}
        Some(other) => {
            return Err(fail(format!(
                "listing must be a list or an expression, got {other}"
            )));
        }
    }

    // Dirents become File and Directory objects.
    let mut out = Vec::with_capacity(ls.len());
    for (i, t) in ls.into_iter().enumerate() {
        let Value::Object(m) = &t else {
            return Err(fail(format!("entry {i} is not an object: {t}")));
        };
        let Some(entry) = m.get("entry") else {
            if !is_file_or_dir(&t) {
                return Err(fail(format!(
                    "entry {i} is not a File, Directory or Dirent: {t}"
                )));
            }
            out.push(t);
            continue;
        };
        let entryname = m.get("entryname").and_then(Value::as_str);
        let writable = m.get("writable").cloned().unwrap_or(Value::Bool(false));
        match entry {
            Value::String(s) => {
                let Some(name) = entryname.filter(|n| !n.is_empty()) else {
                    return Err(fail(format!("entry {i} has contents but no entryname")));
                };
                out.push(json!({
                    "class": "File",
                    "basename": name,
                    "contents": s,
                    "writable": writable,
                }));
            }
            Value::Object(_) if is_file_or_dir(entry) => {
                let mut obj = entry.clone();
                if let Value::Object(om) = &mut obj {
                    if let Some(name) = entryname.filter(|n| !n.is_empty()) {
                        om.insert("basename".into(), json!(name));
                    }
                    om.insert("writable".into(), writable);
                }
                out.push(obj);
            }
            other => {
                return Err(fail(format!(
                    "entry {i}: `entry` must be a string, a File or a Directory, got {other}"
                )));
            }
        }
    }
    Ok(out)
}

/// One Dirent of a listing array: its entry evaluated (a string, a File or
/// Directory, a list of them, or any other value serialized as JSON).
fn dirent(ctx: &mut Ctx<'_>, t: &Value, ls: &mut Vec<Value>) -> Result<(), CwlError> {
    let entry = t.get("entry").cloned().unwrap_or(Value::Null);
    let v = ctx.eval(&entry, &Value::Null)?;
    let writable = t.get("writable").and_then(Value::as_bool).unwrap_or(false);
    if v.is_null() {
        return Ok(());
    }
    if let Value::Array(items) = &v
        && items.iter().all(is_file_or_dir)
    {
        if t.get("entryname").is_some_and(|n| !n.is_null()) {
            return Err(fail(
                "`entryname` cannot be used when `entry` gives a list of Files or Directories"
                    .into(),
            ));
        }
        for x in items {
            let mut x = x.clone();
            if let Value::Object(m) = &mut x {
                m.insert("writable".into(), json!(writable));
            }
            ls.push(x);
        }
        return Ok(());
    }
    let entry_value = if is_file_or_dir(&v) {
        let mut v = v;
        if writable && let Some(Value::Array(sfs)) = v.get_mut("secondaryFiles") {
            for sf in sfs {
                if let Value::Object(m) = sf {
                    m.insert("writable".into(), json!(true));
                }
            }
        }
        v
    } else if let Value::String(s) = v {
        Value::String(s)
    } else {
        Value::String(super::python_json_dumps(&v))
    };
    let mut d = Map::new();
    d.insert("entry".into(), entry_value);
    d.insert("writable".into(), json!(writable));
    if let Some(name) = t.get("entryname").filter(|n| !n.is_null()) {
        match ctx.eval(name, &Value::Null)? {
            Value::String(s) => {
                d.insert("entryname".into(), json!(s));
            }
            other => {
                return Err(fail(format!(
                    "`entryname` must evaluate to a string, got {other}"
                )));
            }
        }
    }
    ls.push(Value::Object(d));
    Ok(())
}

/// Python's `os.path.normpath` for a relative or absolute name.
fn normpath(p: &str) -> String {
    let abs = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !abs {
                    parts.push("..");
                }
            }
            x => parts.push(x),
        }
    }
    let s = parts.join("/");
    if abs {
        format!("/{s}")
    } else if s.is_empty() {
        ".".into()
    } else {
        s
    }
}

fn io(what: &str, p: &Path, e: std::io::Error) -> CwlError {
    fail(format!("cannot {what} {}: {e}", p.display()))
}

/// Removes what is at `p` (a link, file or directory) so an entry can take
/// its place.
fn clear(p: &Path) -> Result<(), CwlError> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p).map_err(|e| io("replace", p, e)),
        Ok(_) => fs::remove_file(p).map_err(|e| io("replace", p, e)),
        Err(_) => Ok(()),
    }
}

/// Copies a file or directory tree (following links), leaving every copy
/// writable by its owner.
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> Result<(), CwlError> {
    let meta = fs::metadata(src).map_err(|e| io("read", src, e))?;
    if meta.is_dir() {
        fs::create_dir_all(dst).map_err(|e| io("create", dst, e))?;
        for e in fs::read_dir(src).map_err(|e| io("list", src, e))? {
            let e = e.map_err(|e| io("list", src, e))?;
            copy_tree(&e.path(), &dst.join(e.file_name()))?;
        }
        let mut perm = meta.permissions();
        perm.set_mode(perm.mode() | 0o700);
        fs::set_permissions(dst, perm).map_err(|e| io("chmod", dst, e))?;
    } else {
        fs::copy(src, dst).map_err(|e| io("copy", src, e))?;
        let mut perm = meta.permissions();
        perm.set_mode(perm.mode() | 0o600);
        fs::set_permissions(dst, perm).map_err(|e| io("chmod", dst, e))?;
    }
    Ok(())
}

fn stage_entry(
    item: &Value,
    target: &Path,
    writable: bool,
    inplace: bool,
    moved: &mut HashMap<String, PathBuf>,
    sources: &mut Vec<PathBuf>,
) -> Result<(), CwlError> {
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(|e| io("create", parent, e))?;
    }
    let src = item
        .get("path")
        .and_then(Value::as_str)
        .map(PathBuf::from)
        .or_else(|| {
            item.get("location")
                .and_then(Value::as_str)
                .and_then(files::uri_to_path)
        });
    // The same file staged onto itself (an input already in the outdir).
    if let Some(s) = &src
        && s == target
    {
        return Ok(());
    }
    if let Some(s) = &src {
        sources.push(s.clone());
    }
    clear(target)?;
    if is_file(item) {
        match &src {
            None => {
                let contents = item.get("contents").and_then(Value::as_str).unwrap_or("");
                fs::write(target, contents).map_err(|e| io("write", target, e))?;
            }
            Some(s) if writable && !inplace => copy_tree(s, target)?,
            Some(s) => symlink(s, target)?,
        }
        if let Some(Value::Array(sfs)) = item.get("secondaryFiles") {
            let dir = target.parent().unwrap_or(target);
            for sf in sfs {
                let Some(b) = sf.get("basename").and_then(Value::as_str) else {
                    continue;
                };
                stage_entry(sf, &dir.join(b), writable, inplace, moved, sources)?;
            }
        }
    } else if is_directory(item) {
        match &src {
            None => {
                fs::create_dir_all(target).map_err(|e| io("create", target, e))?;
                if let Some(Value::Array(entries)) = item.get("listing") {
                    for e in entries {
                        let Some(b) = e.get("basename").and_then(Value::as_str) else {
                            continue;
                        };
                        let w =
                            writable || e.get("writable").and_then(Value::as_bool) == Some(true);
                        stage_entry(e, &target.join(b), w, inplace, moved, sources)?;
                    }
                }
            }
            Some(s) if writable && !inplace => copy_tree(s, target)?,
            Some(s) => symlink(s, target)?,
        }
        if src.is_some() {
            map_listing(item, target, moved);
        }
    }
    if let Some(loc) = item.get("location").and_then(Value::as_str) {
        moved.insert(loc.to_string(), target.to_path_buf());
    }
    Ok(())
}

/// Records the new paths of a staged directory's listing.
fn map_listing(dir: &Value, target: &Path, moved: &mut HashMap<String, PathBuf>) {
    let Some(Value::Array(entries)) = dir.get("listing") else {
        return;
    };
    for e in entries {
        let (Some(loc), Some(b)) = (
            e.get("location").and_then(Value::as_str),
            e.get("basename").and_then(Value::as_str),
        ) else {
            continue;
        };
        let t = target.join(b);
        map_listing(e, &t, moved);
        moved.insert(loc.to_string(), t);
    }
}
