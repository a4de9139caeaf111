//! CWL File and Directory objects between the leader's disk and the job
//! store.
//!
//! - [`import`]: every `file://` File of a value is stored (under its
//!   content's SHA-256, like the YAML workflow's inputs) and becomes
//!   `toilfile:FILE_ID` with `basename`, `size` and `checksum` (`sha1$...`);
//!   every `file://` Directory becomes `toildir:KEY` with its whole listing
//!   read from the disk, whose files are imported in turn.
//! - [`export`]: the final output object's files are copied to the output
//!   directory (`--outdir`), each top-level object under its basename
//!   (`_2`, `_3`, ... appended on a clash), secondary files beside their
//!   primary, and locations become `file://` with `path`.
//! - [`read`]: the first bytes of a stored or local file.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use toil_agent::cwl::{TOILDIR, TOILFILE, file_uri, listing, uri_path};
use toil_cwl::CwlError;
use toil_jobstore::{JobStore, layout};
use toil_proto::v1::FileRef;

/// A file imported into the job store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imported {
    /// Its job-store reference (`file_id`, `size_bytes`, `sha256`).
    pub file: FileRef,
    /// `sha1$HEX`, CWL's checksum.
    pub sha1: String,
}

/// Imports already done, by local path, so a file named twice is stored
/// once per run.
pub type ImportCache = HashMap<PathBuf, Imported>;

fn class(m: &Map<String, Value>) -> Option<&str> {
    m.get("class").and_then(Value::as_str)
}

/// SHA-256 (hex), SHA-1 (`sha1$HEX`) and size of a file, in one read.
fn hashes(p: &Path) -> std::io::Result<(String, String, u64)> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(p)?;
    let mut h256 = sha2::Sha256::new();
    let mut h1 = sha1_smol::Sha1::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h256.update(&buf[..n]);
        h1.update(&buf[..n]);
    }
    Ok((
        hex::encode(h256.finalize()),
        format!("sha1${}", h1.digest()),
        size,
    ))
}

/// Stores every local (`file://`) File and Directory of `v` in the job
/// store and rewrites them to job-store locations (see the module's
/// documentation). A missing file is [`CwlError::Invalid`].
pub async fn import(
    store: &JobStore,
    v: &mut Value,
    cache: &tokio::sync::Mutex<ImportCache>,
) -> Result<usize, CwlError> {
    // 1. Directories get their listing from the disk (blocking reads), and
    //    the local files to store are gathered.
    let owned = std::mem::take(v);
    let (listed, paths) = tokio::task::spawn_blocking(move || {
        let mut owned = owned;
        let r = list_local(&mut owned);
        r.map(|p| (owned, p))
    })
    .await
    .map_err(|e| CwlError::Failed(format!("importing inputs: {e}")))??;
    *v = listed;
    // 2. Each file stored once.
    let mut done = cache.lock().await;
    let mut n = 0;
    for p in paths {
        if done.contains_key(&p) {
            continue;
        }
        let q = p.clone();
        let (sha256, sha1, _) = tokio::task::spawn_blocking(move || hashes(&q))
            .await
            .map_err(|e| CwlError::Failed(format!("importing {}: {e}", p.display())))?
            .map_err(|e| {
                CwlError::Invalid(format!("input file {} cannot be read: {e}", p.display()))
            })?;
        let key = layout::input_key(&sha256);
        let t = store
            .put_file(&key, &p)
            .await
            .map_err(|e| CwlError::Failed(format!("importing {}: {e}", p.display())))?;
        if t.sha256 != sha256 {
            return Err(CwlError::Failed(format!(
                "{} changed while it was being imported; try again",
                p.display()
            )));
        }
        done.insert(
            p.clone(),
            Imported {
                file: FileRef {
                    file_id: key,
                    path: p
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    size_bytes: t.size,
                    sha256: t.sha256,
                },
                sha1,
            },
        );
        n += 1;
    }
    // 3. Locations rewritten.
    toil_cwl::files::walk_mut(v, &mut |m| {
        if class(m) != Some("File") {
            return;
        }
        let Some(p) = m.get("location").and_then(Value::as_str).and_then(uri_path) else {
            return;
        };
        let Some(i) = done.get(&p) else {
            return;
        };
        if !m.contains_key("basename") {
            m.insert("basename".into(), Value::String(i.file.path.clone()));
        }
        m.insert(
            "location".into(),
            Value::String(format!("{TOILFILE}{}", i.file.file_id)),
        );
        m.insert("size".into(), json!(i.file.size_bytes));
        m.insert("checksum".into(), Value::String(i.sha1.clone()));
        m.remove("path");
    });
    Ok(n)
}

/// Gives every local Directory of `v` its listing from the disk and a
/// `toildir:` location, and returns the local files to store.
fn list_local(v: &mut Value) -> Result<Vec<PathBuf>, CwlError> {
    let mut files = Vec::new();
    let mut seen = HashSet::new();
    let mut err = None;
    toil_cwl::files::walk_mut(v, &mut |m| {
        if err.is_some() {
            return;
        }
        let Some(loc) = m.get("location").and_then(Value::as_str) else {
            return;
        };
        if loc.starts_with(TOILFILE) || loc.starts_with(TOILDIR) {
            return;
        }
        let Some(p) = uri_path(loc) else {
            return;
        };
        match class(m) {
            Some("Directory") => {
                if !p.is_dir() {
                    err = Some(CwlError::Invalid(format!(
                        "input directory {} does not exist",
                        p.display()
                    )));
                    return;
                }
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "dir".into());
                if !m.contains_key("basename") {
                    m.insert("basename".into(), Value::String(name.clone()));
                }
                match listing(&p) {
                    Ok(l) => {
                        m.insert("listing".into(), Value::Array(l));
                    }
                    Err(e) => {
                        err = Some(CwlError::Invalid(format!(
                            "input directory {} cannot be listed: {e}",
                            p.display()
                        )));
                        return;
                    }
                }
                let key = format!("imports/{}/{name}", uuid::Uuid::new_v4().simple());
                m.insert("location".into(), Value::String(format!("{TOILDIR}{key}")));
                m.remove("path");
            }
            Some("File") => {
                if !p.is_file() {
                    err = Some(CwlError::Invalid(format!(
                        "input file {} does not exist",
                        p.display()
                    )));
                    return;
                }
                if seen.insert(p.clone()) {
                    files.push(p);
                }
            }
            _ => {}
        }
    });
    match err {
        Some(e) => Err(e),
        None => Ok(files),
    }
}

/// The name a `secondaryFiles` pattern gives for a primary file's name:
/// each leading `^` drops one extension, the rest is appended. `None` for
/// an expression (evaluated by the tool, not here).
pub fn secondary_name(primary: &str, pattern: &str) -> Option<String> {
    if pattern.contains("$(") || pattern.contains("${") {
        return None;
    }
    let mut base = primary.to_string();
    let mut rest = pattern;
    while let Some(r) = rest.strip_prefix('^') {
        if let Some(i) = base.rfind('.') {
            base.truncate(i);
        }
        rest = r;
    }
    Some(format!("{base}{rest}"))
}

/// Adds to every local File of the input object the secondary files its
/// parameter's `secondaryFiles` patterns name that exist beside it (a
/// parameter's own patterns, and those of record fields at any depth),
/// before the files are imported: in the job store, where names are
/// content hashes, they could no longer be found.
pub fn add_secondary_files(job: &mut Value, process: &Value) {
    let Some(inputs) = process.get("inputs").and_then(Value::as_array) else {
        return;
    };
    for input in inputs {
        let Some(id) = input.get("id").and_then(Value::as_str) else {
            continue;
        };
        let name = toil_cwl::load::shortname(id);
        let Some(v) = job.get_mut(name) else {
            continue;
        };
        discover(input, v, 0);
    }
}

/// Secondary files for value `v` of the parameter or record field `param`
/// (with `type` and maybe `secondaryFiles`).
fn discover(param: &Value, v: &mut Value, depth: usize) {
    if depth > 32 {
        return;
    }
    if let Some(patterns) = param.get("secondaryFiles") {
        let patterns: Vec<Value> = match patterns {
            Value::Array(a) => a.clone(),
            other => vec![other.clone()],
        };
        match v {
            Value::Object(m) if class(m) == Some("File") => add_beside(m, &patterns),
            Value::Array(a) => {
                for x in a.iter_mut() {
                    if let Value::Object(m) = x
                        && class(m) == Some("File")
                    {
                        add_beside(m, &patterns);
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(ty) = param.get("type") {
        discover_type(ty, v, depth + 1);
    }
}

/// Record fields (and arrays of records) inside a value of type `ty`.
fn discover_type(ty: &Value, v: &mut Value, depth: usize) {
    if depth > 32 {
        return;
    }
    match ty {
        Value::Array(alts) => {
            for t in alts {
                discover_type(t, v, depth + 1);
            }
        }
        Value::Object(t) => match t.get("type").and_then(Value::as_str) {
            Some("record") => {
                let (Some(fields), Value::Object(m)) = (t.get("fields"), &mut *v) else {
                    return;
                };
                let fields: Vec<Value> = match fields {
                    Value::Array(a) => a.clone(),
                    Value::Object(o) => o
                        .iter()
                        .map(|(k, f)| {
                            let mut f = f.clone();
                            if let Value::Object(fm) = &mut f {
                                fm.insert("name".into(), Value::String(k.clone()));
                            }
                            f
                        })
                        .collect(),
                    _ => return,
                };
                for f in &fields {
                    let Some(n) = f.get("name").and_then(Value::as_str) else {
                        continue;
                    };
                    if let Some(fv) = m.get_mut(toil_cwl::load::shortname(n)) {
                        discover(f, fv, depth + 1);
                    }
                }
            }
            Some("array") => {
                if let (Some(items), Value::Array(a)) = (t.get("items"), &mut *v) {
                    for x in a.iter_mut() {
                        discover_type(items, x, depth + 1);
                    }
                }
            }
            _ => {}
        },
        _ => {}
    }
}

/// Adds the files `patterns` name beside File `m`, when they exist.
fn add_beside(m: &mut Map<String, Value>, patterns: &[Value]) {
    let Some(p) = m.get("location").and_then(Value::as_str).and_then(uri_path) else {
        return;
    };
    let (Some(dir), Some(fname)) = (p.parent(), p.file_name()) else {
        return;
    };
    let fname = fname.to_string_lossy().into_owned();
    for pat in patterns {
        let pattern = match pat {
            Value::String(s) => s.as_str(),
            Value::Object(o) => o.get("pattern").and_then(Value::as_str).unwrap_or(""),
            _ => continue,
        };
        let Some(sname) = secondary_name(&fname, pattern) else {
            continue;
        };
        let sp = dir.join(&sname);
        if !sp.exists() {
            continue;
        }
        let loc = file_uri(&sp);
        let list = m
            .entry("secondaryFiles")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = list {
            let present = list.iter().any(|s| {
                s.get("location")
                    .and_then(Value::as_str)
                    .and_then(uri_path)
                    .as_deref()
                    == Some(sp.as_path())
            });
            if !present {
                let class = if sp.is_dir() { "Directory" } else { "File" };
                list.push(json!({"class": class, "location": loc}));
            }
        }
    }
}

/// Fills in the defaults of the inputs `job` lacks (as the engine would),
/// so that their local files are imported with the rest.
pub fn fill_defaults(job: &mut Value, process: &Value) {
    let (Some(inputs), Value::Object(m)) = (process.get("inputs").and_then(Value::as_array), job)
    else {
        return;
    };
    for input in inputs {
        let (Some(id), Some(d)) = (
            input.get("id").and_then(Value::as_str),
            input.get("default"),
        ) else {
            continue;
        };
        let name = toil_cwl::load::shortname(id);
        if !m.contains_key(name) && !d.is_null() {
            m.insert(name.to_string(), d.clone());
        }
    }
}

/// A name in `dir` not yet used by this export: `name`, then `name_2`, ...
fn free_name(dir: &Path, name: &str, used: &mut HashSet<PathBuf>) -> PathBuf {
    let mut cand = dir.join(name);
    let mut k = 2;
    while used.contains(&cand) {
        cand = dir.join(format!("{name}_{k}"));
        k += 1;
    }
    used.insert(cand.clone());
    cand
}

/// One download or write the export makes.
enum Step {
    /// Copy a stored file to a local path.
    Fetch { file_id: String, dest: PathBuf },
    /// Write a literal's contents.
    Write { contents: String, dest: PathBuf },
    /// Copy a local file.
    Copy { src: PathBuf, dest: PathBuf },
    /// Make a directory.
    Mkdir(PathBuf),
}

/// Plans the export of one object to `dest` (rewriting it).
fn plan_export(m: &mut Map<String, Value>, dest: &Path, steps: &mut Vec<Step>) {
    let loc = m
        .get("location")
        .and_then(Value::as_str)
        .map(str::to_string);
    if class(m) == Some("Directory") {
        steps.push(Step::Mkdir(dest.to_path_buf()));
        if let Some(Value::Array(items)) = m.get_mut("listing") {
            let mut used = HashSet::new();
            for item in items {
                if let Value::Object(o) = item {
                    let name = toil_agent::cwl::safe_basename(o);
                    let d = free_name(dest, &name, &mut used);
                    plan_export(o, &d, steps);
                }
            }
        }
    } else {
        match loc.as_deref().and_then(|l| l.strip_prefix(TOILFILE)) {
            Some(id) => steps.push(Step::Fetch {
                file_id: id.to_string(),
                dest: dest.to_path_buf(),
            }),
            None if loc.is_none() => {
                let contents = m
                    .get("contents")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let (sum, size) = {
                    let mut h = sha1_smol::Sha1::new();
                    h.update(contents.as_bytes());
                    (format!("sha1${}", h.digest()), contents.len())
                };
                m.insert("checksum".into(), Value::String(sum));
                m.insert("size".into(), json!(size));
                steps.push(Step::Write {
                    contents,
                    dest: dest.to_path_buf(),
                });
            }
            // Already local (file://): copied.
            None => {
                if let Some(src) = loc.as_deref().and_then(uri_path) {
                    steps.push(Step::Copy {
                        src,
                        dest: dest.to_path_buf(),
                    });
                }
            }
        }
    }
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    m.insert("location".into(), Value::String(file_uri(dest)));
    m.insert(
        "path".into(),
        Value::String(dest.to_string_lossy().into_owned()),
    );
    m.insert("basename".into(), Value::String(name));
    m.remove("contents");
    // Derived fields a reader computes from `path` (cwltool prints none).
    for derived in ["dirname", "nameroot", "nameext"] {
        m.remove(derived);
    }
    if let Some(Value::Array(sfs)) = m.get_mut("secondaryFiles")
        && let Some(parent) = dest.parent()
    {
        let mut used = HashSet::new();
        used.insert(dest.to_path_buf());
        for sf in sfs {
            if let Value::Object(o) = sf {
                let n = toil_agent::cwl::safe_basename(o);
                let d = free_name(parent, &n, &mut used);
                plan_export(o, &d, steps);
            }
        }
    }
}

/// Copies every File and Directory of the output object `out` to `outdir`
/// and rewrites them there (see the module's documentation). Returns how
/// many files were copied.
pub async fn export(store: &JobStore, out: &mut Value, outdir: &Path) -> Result<usize, CwlError> {
    let fail = |what: String| CwlError::Failed(format!("exporting the outputs: {what}"));
    std::fs::create_dir_all(outdir).map_err(|e| fail(format!("{}: {e}", outdir.display())))?;
    let outdir = std::fs::canonicalize(outdir).map_err(|e| fail(e.to_string()))?;
    let mut steps = Vec::new();
    let mut used = HashSet::new();
    top_level(out, &mut |m| {
        let name = toil_agent::cwl::safe_basename(m);
        let dest = free_name(&outdir, &name, &mut used);
        plan_export(m, &dest, &mut steps);
    });
    let mut n = 0;
    for s in steps {
        match s {
            Step::Mkdir(d) => {
                std::fs::create_dir_all(&d).map_err(|e| fail(format!("{}: {e}", d.display())))?
            }
            Step::Write { contents, dest } => {
                if let Some(p) = dest.parent() {
                    std::fs::create_dir_all(p)
                        .map_err(|e| fail(format!("{}: {e}", p.display())))?;
                }
                std::fs::write(&dest, contents)
                    .map_err(|e| fail(format!("{}: {e}", dest.display())))?;
                n += 1;
            }
            Step::Copy { src, dest } => {
                if src != dest {
                    if let Some(p) = dest.parent() {
                        std::fs::create_dir_all(p)
                            .map_err(|e| fail(format!("{}: {e}", p.display())))?;
                    }
                    std::fs::copy(&src, &dest)
                        .map_err(|e| fail(format!("{}: {e}", src.display())))?;
                }
                n += 1;
            }
            Step::Fetch { file_id, dest } => {
                if let Some(p) = dest.parent() {
                    std::fs::create_dir_all(p)
                        .map_err(|e| fail(format!("{}: {e}", p.display())))?;
                }
                store
                    .get_file(&file_id, &dest)
                    .await
                    .map_err(|e| fail(format!("{file_id} to {}: {e}", dest.display())))?;
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Calls `f` on every File and Directory of `v` that is not inside another.
fn top_level(v: &mut Value, f: &mut dyn FnMut(&mut Map<String, Value>)) {
    match v {
        Value::Object(m) if matches!(class(m), Some("File") | Some("Directory")) => f(m),
        Value::Object(m) => {
            for (_, x) in m.iter_mut() {
                top_level(x, f);
            }
        }
        Value::Array(a) => {
            for x in a {
                top_level(x, f);
            }
        }
        _ => {}
    }
}

/// The first `limit` bytes of a file: `toilfile:` from the job store,
/// `file://` from the disk.
pub async fn read(store: &JobStore, location: &str, limit: usize) -> Result<Vec<u8>, CwlError> {
    let mut data = if let Some(id) = location.strip_prefix(TOILFILE) {
        match store.get_bytes(id).await {
            Ok(Some(o)) => o.data.to_vec(),
            Ok(None) => {
                return Err(CwlError::Failed(format!(
                    "{location} is not in the job store"
                )));
            }
            Err(e) => return Err(CwlError::Failed(format!("reading {location}: {e}"))),
        }
    } else if let Some(p) = uri_path(location) {
        tokio::fs::read(&p)
            .await
            .map_err(|e| CwlError::Failed(format!("reading {}: {e}", p.display())))?
    } else {
        return Err(CwlError::Failed(format!(
            "cannot read {location}: not a file this runner knows"
        )));
    };
    data.truncate(limit);
    Ok(data)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    async fn store(dir: &Path) -> JobStore {
        let s = JobStore::open(&toil_jobstore::Locator::File(dir.join("js")))
            .await
            .unwrap();
        s.initialize().await.unwrap();
        s
    }

    #[tokio::test]
    async fn import_then_export_round_trips_files_and_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("d/empty")).unwrap();
        std::fs::write(src.join("a.txt"), "abc").unwrap();
        std::fs::write(src.join("a.txt.idx"), "i").unwrap();
        std::fs::write(src.join("d/b.txt"), "b").unwrap();
        let js = store(tmp.path()).await;
        let mut v = json!({
            "f": {"class": "File", "location": file_uri(&src.join("a.txt")),
                  "secondaryFiles": [{"class": "File", "location": file_uri(&src.join("a.txt.idx"))}]},
            "again": {"class": "File", "location": file_uri(&src.join("a.txt"))},
            "d": {"class": "Directory", "location": file_uri(&src.join("d"))},
            "lit": {"class": "File", "basename": "l.txt", "contents": "hi"},
            "n": 5
        });
        let cache = tokio::sync::Mutex::new(ImportCache::new());
        let n = import(&js, &mut v, &cache).await.unwrap();
        assert_eq!(n, 3, "a.txt once, its index, d/b.txt");
        assert_eq!(v["f"]["location"], v["again"]["location"]);
        assert!(
            v["f"]["location"]
                .as_str()
                .unwrap()
                .starts_with("toilfile:files/inputs/")
        );
        assert_eq!(v["f"]["size"], json!(3));
        assert_eq!(v["f"]["basename"], json!("a.txt"));
        assert_eq!(
            v["f"]["checksum"],
            json!("sha1$a9993e364706816aba3e25717850c26c9cd0d89d")
        );
        assert!(
            v["d"]["location"]
                .as_str()
                .unwrap()
                .starts_with("toildir:imports/")
        );
        let names: Vec<&str> = v["d"]["listing"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["basename"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["b.txt", "empty"]);
        assert!(
            v["d"]["listing"][0]["location"]
                .as_str()
                .unwrap()
                .starts_with("toilfile:")
        );
        assert_eq!(v["d"]["listing"][1]["listing"], json!([]));

        // Reading goes to the store.
        let loc = v["f"]["location"].as_str().unwrap().to_string();
        assert_eq!(read(&js, &loc, 2).await.unwrap(), b"ab");

        let out = tmp.path().join("out");
        let copied = export(&js, &mut v, &out).await.unwrap();
        assert_eq!(copied, 5);
        let out = std::fs::canonicalize(&out).unwrap();
        assert_eq!(std::fs::read_to_string(out.join("a.txt")).unwrap(), "abc");
        assert_eq!(std::fs::read_to_string(out.join("a.txt.idx")).unwrap(), "i");
        assert_eq!(std::fs::read_to_string(out.join("a.txt_2")).unwrap(), "abc");
        assert_eq!(std::fs::read_to_string(out.join("d/b.txt")).unwrap(), "b");
        assert!(out.join("d/empty").is_dir());
        assert_eq!(std::fs::read_to_string(out.join("l.txt")).unwrap(), "hi");
        // Keys in order: "again" takes the name first.
        assert_eq!(
            v["again"]["path"],
            json!(out.join("a.txt").to_string_lossy())
        );
        assert_eq!(v["again"]["location"], json!(file_uri(&out.join("a.txt"))));
        assert_eq!(v["f"]["basename"], json!("a.txt_2"));
        assert_eq!(
            v["f"]["secondaryFiles"][0]["path"],
            json!(out.join("a.txt.idx").to_string_lossy())
        );
        assert_eq!(v["lit"]["size"], json!(2));
        assert_eq!(v["n"], json!(5));
    }

    #[test]
    fn secondary_files_are_found_beside_their_primary() {
        assert_eq!(
            secondary_name("a.bam", ".bai").as_deref(),
            Some("a.bam.bai")
        );
        assert_eq!(secondary_name("a.bam", "^.bai").as_deref(), Some("a.bai"));
        assert_eq!(secondary_name("a.b.c", "^^.d").as_deref(), Some("a.d"));
        assert_eq!(secondary_name("a", "$(self.basename).x"), None);
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("r.bam"), "x").unwrap();
        std::fs::write(tmp.path().join("r.bai"), "y").unwrap();
        let mut job =
            json!({"bam": {"class": "File", "location": file_uri(&tmp.path().join("r.bam"))}});
        let tool = json!({"inputs": [{"id": "file:///t.cwl#bam", "type": "File",
            "secondaryFiles": [{"pattern": "^.bai", "required": true}, {"pattern": ".crai", "required": false}]}]});
        add_secondary_files(&mut job, &tool);
        add_secondary_files(&mut job, &tool);
        assert_eq!(
            job["bam"]["secondaryFiles"],
            json!([{"class": "File", "location": file_uri(&tmp.path().join("r.bai"))}])
        );
        // In a record field, and with the primary given as a default.
        std::fs::write(tmp.path().join("r.bam.s2"), "z").unwrap();
        let tool = json!({"inputs": [{"id": "file:///t.cwl#rec", "type": {"type": "record", "fields": [
            {"name": "file:///t.cwl#rec/f1", "type": "File", "secondaryFiles": [{"pattern": ".s2"}]}]},
            "default": {"f1": {"class": "File", "location": file_uri(&tmp.path().join("r.bam"))}}}]});
        let mut job = json!({});
        fill_defaults(&mut job, &tool);
        add_secondary_files(&mut job, &tool);
        assert_eq!(
            job["rec"]["f1"]["secondaryFiles"],
            json!([{"class": "File", "location": file_uri(&tmp.path().join("r.bam.s2"))}])
        );
    }

    #[tokio::test]
    async fn a_missing_input_is_invalid_input() {
        let tmp = tempfile::tempdir().unwrap();
        let js = store(tmp.path()).await;
        let mut v = json!({"f": {"class": "File", "location": "file:///no/such/file"}});
        let cache = tokio::sync::Mutex::new(ImportCache::new());
        let e = import(&js, &mut v, &cache).await.unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("/no/such/file"), "{e}");
    }
}
