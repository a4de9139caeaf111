//! One CWL tool invocation on the agent (`Assignment.cwl_invocation`).
//!
//! The leader sends the invocation (`toil_cwl::Invocation` as JSON) with
//! job-store locations (`toilfile:FILE_ID`, `toildir:KEY`) and lists every
//! file in it as a `StagedInput`. The existing staging path (the node cache)
//! places those files; this module then:
//!
//! 1. rewrites every location in the input object to the staged local
//!    `file://` path ([`localize`]), creating the directories of
//!    `toildir:` Directory objects (so empty directories exist) and writing
//!    File and Directory literals;
//! 2. builds the [`Runtime`] (`out/` of the work directory is the output
//!    directory and the working directory, `tmp/` the temporary one) and
//!    calls `toil_cwl::tool::prepare`;
//! 3. runs `Prepared.argv` through the agent's usual command path (logs,
//!    time limit, kill, usage, the container image), with the tool's
//!    standard streams and its whole environment;
//! 4. calls `toil_cwl::tool::collect`, uploads every file of the output
//!    object (and every file under each output Directory) under the
//!    attempt's output prefix, rewrites locations to `toilfile:`/`toildir:`
//!    ([`store_outputs`]) and reports the object in
//!    `AttemptResult.cwl_outputs`, the stored files also as the `OutputFiles`
//!    named `cwl`.
//!
//! Where files go in the work directory is decided by [`for_each_placed`],
//! which the leader also uses to list the `StagedInput`s, so both sides
//! agree: the `n`-th top-level File or Directory of the input object is
//! placed under `in/N/` with its basename, its `secondaryFiles` beside it,
//! and a Directory's listing inside it.
//!
//! Directories are not objects in the job store: a Directory in the output
//! object has `location` `toildir:PREFIX/REL` and carries its whole
//! `listing`, recursively (read from the disk here, whatever the tool's
//! `LoadListingRequirement`), so an empty directory is a Directory with an
//! empty listing, and a directory is recreated anywhere from the listing
//! alone.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use toil_cwl::{CwlError, Invocation, Runtime};
use toil_jobstore::JobStore;
use toil_proto::v1::{Cause, CauseKind, FileRef, OutputFiles, StagedInput};

use crate::attempt::{CommandSpec, Run};
use crate::exec;

/// Where the input files are staged, under the work directory.
pub const IN_DIR: &str = "in";
/// The tool's output (and working) directory, under the work directory.
pub const OUT_DIR: &str = "out";
/// The tool's temporary directory, under the work directory.
pub const TMP_DIR: &str = "tmp";
/// The name of the `OutputFiles` entry listing the files an invocation
/// stored (the leader's `crate::core::CWL_OUTPUT`).
pub const OUTPUT_NAME: &str = "cwl";
/// Location scheme of a file in the job store.
pub const TOILFILE: &str = "toilfile:";
/// Location scheme of a directory in the job store.
pub const TOILDIR: &str = "toildir:";

fn class(m: &Map<String, Value>) -> Option<&str> {
    m.get("class").and_then(Value::as_str)
}

fn is_file_or_dir(m: &Map<String, Value>) -> bool {
    matches!(class(m), Some("File") | Some("Directory"))
}

/// The name an object is placed under: its `basename`, else the last
/// segment of its location, made safe to use as one path component.
pub fn safe_basename(m: &Map<String, Value>) -> String {
    let from_location = || {
        m.get("location")
            .and_then(Value::as_str)
            .map(|l| {
                let l = l.trim_end_matches('/');
                l.rsplit(['/', ':']).next().unwrap_or("").to_string()
            })
            .map(|s| percent_decode(&s))
    };
    let name = m
        .get("basename")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(from_location)
        .unwrap_or_default();
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        if class(m) == Some("Directory") {
            "dir".into()
        } else {
            "file".into()
        }
    } else {
        name
    }
}

/// Decodes `%XX` escapes of a URI path segment.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Calls `f(object, dest)` for every File and Directory object in `job`,
/// with `dest` the `/`-separated place (relative to the work directory)
/// where it is staged: the `n`-th top-level object under `in/N/BASENAME`,
/// its `secondaryFiles` beside it, a Directory's `listing` inside it. An
/// object is visited before what it contains.
pub fn for_each_placed(job: &mut Value, f: &mut dyn FnMut(&mut Map<String, Value>, &str)) {
    let mut n = 0usize;
    visit_top(job, &mut n, f);
}

fn visit_top(v: &mut Value, n: &mut usize, f: &mut dyn FnMut(&mut Map<String, Value>, &str)) {
    match v {
        Value::Object(m) if is_file_or_dir(m) => {
            let base = format!("{IN_DIR}/{n}");
            *n += 1;
            place(m, &base, f);
        }
        Value::Object(m) => {
            for (_, item) in m.iter_mut() {
                visit_top(item, n, f);
            }
        }
        Value::Array(items) => {
            for item in items {
                visit_top(item, n, f);
            }
        }
        _ => {}
    }
}

fn place(
    m: &mut Map<String, Value>,
    parent: &str,
    f: &mut dyn FnMut(&mut Map<String, Value>, &str),
) {
    let dest = format!("{parent}/{}", safe_basename(m));
    f(m, &dest);
    if let Some(Value::Array(sfs)) = m.get_mut("secondaryFiles") {
        for sf in sfs {
            if let Value::Object(s) = sf
                && is_file_or_dir(s)
            {
                place(s, parent, f);
            }
        }
    }
    if class(m) == Some("Directory")
        && let Some(Value::Array(items)) = m.get_mut("listing")
    {
        for item in items {
            if let Value::Object(o) = item
                && is_file_or_dir(o)
            {
                place(o, &dest, f);
            }
        }
    }
}

/// The job-store files of an input object, each with the place the agent
/// stages it (see [`for_each_placed`]): what the leader lists as the
/// attempt's `StagedInput`s. A file placed twice at the same spot is
/// listed once.
pub fn staged_inputs(job: &Value) -> Vec<StagedInput> {
    let mut job = job.clone();
    let mut out: Vec<StagedInput> = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for_each_placed(&mut job, &mut |m, dest| {
        if class(m) != Some("File") {
            return;
        }
        let Some(id) = m
            .get("location")
            .and_then(Value::as_str)
            .and_then(|l| l.strip_prefix(TOILFILE))
        else {
            return;
        };
        if seen.insert(dest.to_string(), id.to_string()).is_some() {
            return;
        }
        out.push(StagedInput {
            file: Some(FileRef {
                file_id: id.to_string(),
                path: safe_basename(m),
                size_bytes: m.get("size").and_then(Value::as_u64).unwrap_or(0),
                sha256: String::new(),
            }),
            dest_path: dest.to_string(),
            writable: false,
        });
    });
    out
}

/// A `file://` URI for an absolute path, with the characters URIs reserve
/// escaped.
pub fn file_uri(p: &Path) -> String {
    let s = p.to_string_lossy();
    let mut out = String::with_capacity(s.len() + 7);
    out.push_str("file://");
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The local path of a `file://` URI (or a plain absolute path).
pub fn uri_path(location: &str) -> Option<PathBuf> {
    if let Some(rest) = location.strip_prefix("file://") {
        // file:///p or file://localhost/p
        let rest = rest.strip_prefix("localhost").unwrap_or(rest);
        let rest = rest.split(['?', '#']).next().unwrap_or(rest);
        return Some(PathBuf::from(percent_decode(rest)));
    }
    location.starts_with('/').then(|| PathBuf::from(location))
}

/// What [`localize`] staged where: local path -> the object as the leader
/// sent it (its job-store location), to recognise an input passed through
/// as an output.
pub type Staged = HashMap<PathBuf, Map<String, Value>>;

/// Rewrites every File and Directory of `job` to where it is staged under
/// `work_dir` (which must be canonical): `location` a `file://` URI and
/// `path` the local path. Directories are created (so empty ones exist),
/// literals written. Fails when a job-store file was not staged.
pub fn localize(job: &mut Value, work_dir: &Path) -> Result<Staged, String> {
    let mut staged = Staged::new();
    let mut err = None;
    for_each_placed(job, &mut |m, dest| {
        if err.is_some() {
            return;
        }
        let abs = work_dir.join(dest);
        let location = m
            .get("location")
            .and_then(Value::as_str)
            .map(str::to_string);
        let is_dir = class(m) == Some("Directory");
        let r = (|| -> Result<(), String> {
            match location.as_deref() {
                Some(l) if l.starts_with(TOILFILE) => {
                    if !abs.is_file() {
                        return Err(format!(
                            "input {l} was not staged at {dest} (the leader did not list it)"
                        ));
                    }
                    staged.insert(abs.clone(), m.clone());
                }
                Some(l) if l.starts_with(TOILDIR) => {
                    std::fs::create_dir_all(&abs)
                        .map_err(|e| format!("creating {}: {e}", abs.display()))?;
                    staged.insert(abs.clone(), m.clone());
                }
                Some(l) if l.starts_with("file://") || l.starts_with('/') => {
                    // Already local (a leader on this machine); kept.
                    return Ok(());
                }
                // A Directory literal stays one: the tool makes it from its
                // listing (whose entries are placed under `dest` here) and
                // keeps that listing whatever its LoadListingRequirement.
                _ if is_dir => return Ok(()),
                _ => {
                    let contents = m.get("contents").and_then(Value::as_str).unwrap_or("");
                    if let Some(parent) = abs.parent() {
                        std::fs::create_dir_all(parent)
                            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
                    }
                    std::fs::write(&abs, contents)
                        .map_err(|e| format!("writing {}: {e}", abs.display()))?;
                }
            }
            m.insert("location".into(), Value::String(file_uri(&abs)));
            m.insert(
                "path".into(),
                Value::String(abs.to_string_lossy().into_owned()),
            );
            if !m.contains_key("basename") {
                m.insert("basename".into(), Value::String(safe_basename(m)));
            }
            Ok(())
        })();
        if let Err(e) = r {
            err = Some(e);
        }
    });
    match err {
        Some(e) => Err(e),
        None => Ok(staged),
    }
}

/// SHA-1 (`sha1$HEX`) and size of a file (the CWL crate's, used by the
/// leader's import too).
pub use toil_cwl::files::sha1_file;

/// A file to store: its job-store key and where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    /// The key (`PREFIX` + its path relative to the output directory).
    pub key: String,
    /// The path relative to the output directory (`FileRef.path`).
    pub rel: String,
    /// The file on disk.
    pub path: PathBuf,
    /// True when it lies in the output directory (opened beneath it, never
    /// through a symbolic link out of it).
    pub in_outdir: bool,
}

/// Rewrites the output object `out` (locations `file://` under `outdir`,
/// both canonical) to job-store locations under `prefix`, and lists the
/// files to store. Inputs passed through get back their job-store
/// location; every output Directory gets its whole listing from the disk;
/// Files get `basename`, `size` and `checksum`. Blocking (reads files).
pub fn plan_outputs(
    out: &mut Value,
    outdir: &Path,
    prefix: &str,
    staged: &Staged,
) -> Result<Vec<Upload>, String> {
    let mut uploads: Vec<Upload> = Vec::new();
    let mut by_rel: HashMap<String, usize> = HashMap::new();
    let mut external = 0usize;
    let mut err: Option<String> = None;
    toil_cwl::files::walk_mut(out, &mut |m| {
        if err.is_some() {
            return;
        }
        let Some(loc) = m
            .get("location")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return; // a literal: kept as it is
        };
        if loc.starts_with(TOILFILE) || loc.starts_with(TOILDIR) {
            return;
        }
        let Some(p) = uri_path(&loc) else {
            return;
        };
        let canon = match std::fs::canonicalize(&p) {
            Ok(c) => c,
            Err(e) => {
                err = Some(format!("output {} does not exist: {e}", p.display()));
                return;
            }
        };
        if let Some(orig) = staged.get(&canon) {
            // An input passed through (or linked into the output
            // directory): its stored location, size and checksum; what the
            // tool says of it otherwise (basename, format, secondaryFiles,
            // which the walk goes on to) is kept.
            for key in ["location", "size", "checksum"] {
                if let Some(v) = orig.get(key) {
                    m.insert(key.into(), v.clone());
                }
            }
            if class(m) == Some("Directory")
                && let Some(l) = orig.get("listing")
            {
                m.insert("listing".into(), l.clone());
            }
            if !m.contains_key("basename")
                && let Some(b) = orig.get("basename")
            {
                m.insert("basename".into(), b.clone());
            }
            m.remove("path");
            return;
        }
        let is_dir = class(m) == Some("Directory");
        let rel = match canon.strip_prefix(outdir) {
            Ok(r) => Some(r.to_string_lossy().into_owned()),
            Err(_) => None,
        };
        let basename = m
            .get("basename")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| {
                canon
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "out".into())
            });
        let rel = match rel {
            Some(r) => r,
            None => {
                external += 1;
                format!("_ext/{external}/{basename}")
            }
        };
        m.remove("path");
        m.insert("basename".into(), Value::String(basename));
        if is_dir {
            let key = format!("{prefix}{rel}");
            m.insert(
                "location".into(),
                Value::String(format!("{TOILDIR}{}", key.trim_end_matches('/'))),
            );
            match listing(&canon) {
                Ok(l) => {
                    m.insert("listing".into(), Value::Array(l));
                }
                Err(e) => err = Some(format!("listing output directory {}: {e}", canon.display())),
            }
            // The entries (file:// under canon) are rewritten as the walk
            // goes on into the listing.
            return;
        }
        if !canon.is_file() {
            err = Some(format!("output {} is not a regular file", canon.display()));
            return;
        }
        let key = format!("{prefix}{rel}");
        if !by_rel.contains_key(&rel) {
            by_rel.insert(rel.clone(), uploads.len());
            uploads.push(Upload {
                key: key.clone(),
                rel: rel.clone(),
                path: canon.clone(),
                in_outdir: canon.starts_with(outdir),
            });
        }
        match sha1_file(&canon) {
            Ok((sum, size)) => {
                m.insert("checksum".into(), Value::String(sum));
                m.insert("size".into(), json!(size));
            }
            Err(e) => err = Some(format!("reading output {}: {e}", canon.display())),
        }
        m.insert("location".into(), Value::String(format!("{TOILFILE}{key}")));
    });
    match err {
        Some(e) => Err(e),
        None => Ok(uploads),
    }
}

/// The listing of a directory from the disk, recursively, as File and
/// Directory objects with `file://` locations, in name order.
pub fn listing(dir: &Path) -> std::io::Result<Vec<Value>> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        // Symbolic links are followed (a tool may link an input in).
        let meta = std::fs::metadata(&p)?;
        let class = if meta.is_dir() { "Directory" } else { "File" };
        let mut o = Map::new();
        o.insert("class".into(), Value::String(class.into()));
        o.insert("location".into(), Value::String(file_uri(&p)));
        o.insert("basename".into(), Value::String(name));
        if meta.is_dir() {
            o.insert("listing".into(), Value::Array(listing(&p)?));
        }
        out.push(Value::Object(o));
    }
    Ok(out)
}

/// Stores the planned files (see [`plan_outputs`]) and returns them as
/// `FileRef`s with the bytes stored.
pub async fn store_outputs(
    store: &JobStore,
    cache: &crate::cache::NodeCache,
    outdir: &Path,
    uploads: &[Upload],
) -> Result<(Vec<FileRef>, u64), String> {
    let mut refs = Vec::with_capacity(uploads.len());
    let mut bytes = 0u64;
    for u in uploads {
        let t = if u.in_outdir {
            let rel = u.path.strip_prefix(outdir).unwrap_or(&u.path);
            // Opened beneath the output directory: a symbolic link the tool
            // left cannot send another file in its place.
            let file = toil_jobstore::beneath::open_file(outdir, rel).ok();
            match file {
                Some(f) => {
                    store
                        .put_file(&u.key, &toil_jobstore::beneath::fd_path(&f))
                        .await
                }
                // A link inside the output directory to a file inside it.
                None => store.put_file(&u.key, &u.path).await,
            }
        } else {
            store.put_file(&u.key, &u.path).await
        }
        .map_err(|e| format!("storing output {}: {e}", u.rel))?;
        bytes += t.size;
        if let Err(e) = cache.insert_output(&u.key, &u.path, &t).await {
            tracing::debug!(error = %e, "output not added to the node cache");
        }
        refs.push(FileRef {
            file_id: u.key.clone(),
            path: u.rel.clone(),
            size_bytes: t.size,
            sha256: t.sha256,
        });
    }
    Ok((refs, bytes))
}

/// The attempt's cause for a CWL error before or after the command.
fn cause_of(e: &CwlError, what: &str) -> Cause {
    match e {
        CwlError::TemporaryFailure(m) => Cause::new(CauseKind::ExitCode, format!("{what}: {m}")),
        CwlError::Failed(m) => Cause::new(CauseKind::OutputMissing, format!("{what}: {m}")),
        CwlError::Invalid(m) | CwlError::Unsupported(m) => {
            Cause::config_error(format!("{what}: {m}"))
        }
    }
}

/// How a tool's exit code counts (`successCodes`, `temporaryFailCodes`,
/// `permanentFailCodes`): `None` for success, else the attempt's cause. A
/// temporary failure is retryable (EXIT_CODE); a permanent failure code is
/// not (CONFIG_ERROR); any other code is an ordinary EXIT_CODE failure.
pub fn exit_cause(p: &toil_cwl::tool::Prepared, code: i32) -> Option<Cause> {
    let success = if p.success_codes.is_empty() {
        code == 0
    } else {
        p.success_codes.contains(&code)
    };
    if success {
        return None;
    }
    if p.temporary_fail_codes.contains(&code) {
        return Some(Cause::with_code(
            CauseKind::ExitCode,
            code,
            format!("exit code {code}: a temporary failure (temporaryFailCodes); may be retried"),
        ));
    }
    if p.permanent_fail_codes.contains(&code) {
        return Some(Cause::with_code(
            CauseKind::ConfigError,
            code,
            format!("exit code {code}: a permanent failure (permanentFailCodes); not retried"),
        ));
    }
    Some(Cause::exit_code(code))
}

/// The tool's runtime: `out/` and `tmp/` of the (canonical) work directory,
/// cores and RAM from what the attempt was given.
pub fn runtime(
    work_dir: &Path,
    res: Option<&toil_proto::v1::Resources>,
    wanted: Option<toil_cwl::Resources>,
) -> Runtime {
    let millicores = res.map_or(1000, |r| r.millicores);
    let memory = res.map_or(256 << 20, |r| r.memory_bytes);
    Runtime {
        outdir: work_dir.join(OUT_DIR),
        tmpdir: work_dir.join(TMP_DIR),
        cores: millicores.div_ceil(1000).max(1),
        ram: (memory >> 20).max(1),
        outdir_size: wanted.map_or(1024, |w| w.outdir_mib),
        tmpdir_size: wanted.map_or(1024, |w| w.tmpdir_mib),
    }
}

impl Run<'_> {
    /// Runs a CWL invocation after its files are staged (see the module's
    /// documentation). Returns the cause, the exit code and the stored
    /// files; the output object goes to `self.cwl_outputs`.
    pub(crate) async fn body_cwl(&mut self, store: &JobStore) -> (Cause, i32, Vec<OutputFiles>) {
        let a = self.a;
        let mut inv: Invocation = match serde_json::from_str(&a.cwl_invocation) {
            Ok(i) => i,
            Err(e) => {
                return (
                    Cause::config_error(format!("the CWL invocation is not valid JSON: {e}")),
                    -1,
                    vec![],
                );
            }
        };
        let work_dir = match std::fs::canonicalize(self.work_dir) {
            Ok(d) => d,
            Err(e) => {
                return (
                    Cause::new(CauseKind::StagingFailed, format!("work directory: {e}")),
                    -1,
                    vec![],
                );
            }
        };
        let mut staged = match localize(&mut inv.job, &work_dir) {
            Ok(s) => s,
            Err(e) => {
                self.note(&e).await;
                return (Cause::new(CauseKind::StagingFailed, e), -1, vec![]);
            }
        };
        // A private (writable) copy may be changed by the tool (an in-place
        // update): an output that is one is stored anew, not passed through.
        for i in a.inputs.iter().filter(|i| i.writable) {
            staged.remove(&work_dir.join(&i.dest_path));
        }
        let rt = runtime(
            &work_dir,
            a.resources.as_ref(),
            toil_cwl::tool::resources(&inv).ok(),
        );
        for d in [&rt.outdir, &rt.tmpdir] {
            if let Err(e) = std::fs::create_dir_all(d) {
                let msg = format!("creating {}: {e}", d.display());
                return (Cause::new(CauseKind::StagingFailed, msg), -1, vec![]);
            }
        }
        let use_container = !a.image.is_empty();
        let prepared = match toil_cwl::tool::prepare(&inv, &rt, use_container) {
            Ok(p) => p,
            Err(e) => {
                let c = cause_of(&e, "preparing the command");
                self.note(&c.message).await;
                return (c, -1, vec![]);
            }
        };
        let in_outdir = |p: &Option<PathBuf>| {
            p.as_ref().map(|p| {
                if p.is_absolute() {
                    p.clone()
                } else {
                    rt.outdir.join(p)
                }
            })
        };
        let redirects = exec::Redirects {
            stdin: in_outdir(&prepared.stdin),
            stdout: in_outdir(&prepared.stdout),
            stderr: in_outdir(&prepared.stderr),
        };
        let image = if use_container {
            prepared.image.clone().unwrap_or_else(|| a.image.clone())
        } else {
            String::new()
        };
        let time_limit = prepared.time_limit.or_else(|| {
            a.time_limit
                .and_then(|d| std::time::Duration::try_from(d).ok())
        });
        let env: BTreeMap<String, String> = prepared.env.clone();
        let no_extra = HashMap::new();
        let ex = match self
            .run_command(CommandSpec {
                argv: &prepared.argv,
                image: &image,
                clean_env: Some(&env),
                extra_env: &no_extra,
                cwd: &rt.outdir,
                redirects,
                time_limit,
            })
            .await
        {
            Ok(ex) => ex,
            Err(c) => return (c, -1, vec![]),
        };
        if let Some(c) = self.kill_cause(&ex) {
            self.note(&format!("job ended: {}", c.message)).await;
            return (c, ex.status.code().unwrap_or(-1), vec![]);
        }
        let code = ex.status.code().unwrap_or(-1);
        if let Some(c) = exit_cause(&prepared, code) {
            self.note(&format!("job ended: {}", c.message)).await;
            return (c, code, vec![]);
        }

        let _ = self.phase.send(toil_proto::v1::AgentPhase::Uploading);
        let out = match toil_cwl::tool::collect(&inv, &prepared, &rt, code) {
            Ok(v) => v,
            Err(e) => {
                let c = cause_of(&e, "collecting the outputs");
                self.note(&c.message).await;
                return (c, code, vec![]);
            }
        };
        let outdir = match std::fs::canonicalize(&rt.outdir) {
            Ok(d) => d,
            Err(e) => {
                let msg = format!("the output directory is gone: {e}");
                return (Cause::new(CauseKind::OutputMissing, msg), code, vec![]);
            }
        };
        let prefix = a.output_prefix.clone();
        let planned = tokio::task::spawn_blocking(move || {
            let mut out = out;
            plan_outputs(&mut out, &outdir, &prefix, &staged).map(|u| (out, u, outdir))
        })
        .await;
        let (out, uploads, outdir) = match planned {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                self.note(&e).await;
                return (Cause::new(CauseKind::OutputMissing, e), code, vec![]);
            }
            Err(e) => {
                let msg = format!("collecting the outputs failed: {e}");
                return (Cause::new(CauseKind::StagingFailed, msg), code, vec![]);
            }
        };
        match store_outputs(store, &self.ctx.cache, &outdir, &uploads).await {
            Ok((refs, bytes)) => {
                self.usage.bytes_uploaded = bytes;
                self.cwl_outputs = out.to_string();
                (
                    Cause::succeeded(),
                    code,
                    vec![OutputFiles {
                        name: OUTPUT_NAME.into(),
                        files: refs,
                    }],
                )
            }
            Err(e) => {
                self.note(&e).await;
                (Cause::new(CauseKind::StagingFailed, e), code, vec![])
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn job() -> Value {
        json!({
            "reads": {"class": "File", "location": "toilfile:files/inputs/aa", "basename": "r.fq", "size": 3,
                      "secondaryFiles": [{"class": "File", "location": "toilfile:files/inputs/bb", "basename": "r.fq.idx"}]},
            "n": 3,
            "refs": [
                {"class": "Directory", "location": "toildir:imports/x/ref", "basename": "ref", "listing": [
                    {"class": "File", "location": "toilfile:files/inputs/cc", "basename": "g.fa"},
                    {"class": "Directory", "location": "toildir:imports/x/ref/empty", "basename": "empty", "listing": []}
                ]},
                {"class": "File", "basename": "lit.txt", "contents": "hello"}
            ]
        })
    }

    #[test]
    fn placement_puts_secondary_files_beside_and_listings_inside() {
        let inputs = staged_inputs(&job());
        let got: Vec<(&str, &str)> = inputs
            .iter()
            .map(|s| {
                (
                    s.file.as_ref().unwrap().file_id.as_str(),
                    s.dest_path.as_str(),
                )
            })
            .collect();
        // serde_json keeps keys sorted: "n", "reads", "refs".
        assert_eq!(
            got,
            [
                ("files/inputs/aa", "in/0/r.fq"),
                ("files/inputs/bb", "in/0/r.fq.idx"),
                ("files/inputs/cc", "in/1/ref/g.fa"),
            ]
        );
        assert_eq!(inputs[0].file.as_ref().unwrap().size_bytes, 3);
    }

    #[test]
    fn localize_rewrites_locations_makes_directories_and_writes_literals() {
        let tmp = tempfile::tempdir().unwrap();
        let wd = std::fs::canonicalize(tmp.path()).unwrap();
        // What the node cache would have staged.
        for s in staged_inputs(&job()) {
            let p = wd.join(&s.dest_path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, s.dest_path.as_bytes()).unwrap();
        }
        let mut j = job();
        j["zdir"] = json!({"class": "Directory", "basename": "ld",
                           "listing": [{"class": "File", "basename": "k.txt", "contents": "k"}]});
        let staged = localize(&mut j, &wd).unwrap();
        // A Directory literal stays one (the tool makes it); its entries
        // are placed.
        assert!(j["zdir"].get("location").is_none());
        assert_eq!(
            std::fs::read_to_string(wd.join("in/3/ld/k.txt")).unwrap(),
            "k"
        );
        assert_eq!(
            j["zdir"]["listing"][0]["path"],
            json!(wd.join("in/3/ld/k.txt").to_string_lossy())
        );
        assert_eq!(
            j["reads"]["path"],
            json!(wd.join("in/0/r.fq").to_string_lossy())
        );
        assert_eq!(
            j["reads"]["location"],
            json!(file_uri(&wd.join("in/0/r.fq")))
        );
        assert_eq!(
            j["reads"]["secondaryFiles"][0]["path"],
            json!(wd.join("in/0/r.fq.idx").to_string_lossy())
        );
        assert!(
            wd.join("in/1/ref/empty").is_dir(),
            "empty directories exist"
        );
        assert_eq!(
            std::fs::read_to_string(wd.join("in/2/lit.txt")).unwrap(),
            "hello"
        );
        assert_eq!(
            staged[&wd.join("in/1/ref/g.fa")]["location"],
            json!("toilfile:files/inputs/cc")
        );
        // A file the leader did not list is an error, not a silent gap.
        let mut missing =
            json!({"x": {"class": "File", "location": "toilfile:files/zz", "basename": "z"}});
        let e = localize(&mut missing, &wd).unwrap_err();
        assert!(e.contains("was not staged"), "{e}");
    }

    #[test]
    fn outputs_are_planned_under_the_prefix_with_listings_and_passthrough() {
        let tmp = tempfile::tempdir().unwrap();
        let wd = std::fs::canonicalize(tmp.path()).unwrap();
        let out = wd.join("out");
        std::fs::create_dir_all(out.join("d/sub/empty")).unwrap();
        std::fs::write(out.join("a.txt"), "abc").unwrap();
        std::fs::write(out.join("d/sub/b.txt"), "b").unwrap();
        std::fs::create_dir_all(wd.join("in/0")).unwrap();
        std::fs::write(wd.join("in/0/r.fq"), "r").unwrap();
        let mut staged = Staged::new();
        staged.insert(
            wd.join("in/0/r.fq"),
            json!({"class": "File", "location": "toilfile:files/inputs/aa", "basename": "r.fq", "size": 1})
                .as_object()
                .unwrap()
                .clone(),
        );
        let mut v = json!({
            "a": {"class": "File", "location": file_uri(&out.join("a.txt"))},
            "d": {"class": "Directory", "location": file_uri(&out.join("d"))},
            "same": {"class": "File", "location": file_uri(&wd.join("in/0/r.fq"))},
            "n": 1
        });
        let uploads = plan_outputs(&mut v, &out, "files/j/1/", &staged).unwrap();
        let keys: Vec<&str> = uploads.iter().map(|u| u.key.as_str()).collect();
        assert_eq!(keys, ["files/j/1/a.txt", "files/j/1/d/sub/b.txt"]);
        assert_eq!(v["a"]["location"], json!("toilfile:files/j/1/a.txt"));
        assert_eq!(v["a"]["basename"], json!("a.txt"));
        assert_eq!(v["a"]["size"], json!(3));
        assert_eq!(
            v["a"]["checksum"],
            json!("sha1$a9993e364706816aba3e25717850c26c9cd0d89d")
        );
        assert_eq!(v["d"]["location"], json!("toildir:files/j/1/d"));
        let sub = &v["d"]["listing"][0];
        assert_eq!(sub["basename"], json!("sub"));
        assert_eq!(sub["location"], json!("toildir:files/j/1/d/sub"));
        assert_eq!(
            sub["listing"][0]["location"],
            json!("toilfile:files/j/1/d/sub/b.txt")
        );
        assert_eq!(sub["listing"][1]["class"], json!("Directory"));
        assert_eq!(
            sub["listing"][1]["listing"],
            json!([]),
            "an empty directory stays representable"
        );
        assert_eq!(v["same"]["location"], json!("toilfile:files/inputs/aa"));
        assert!(v["same"].get("path").is_none());
    }

    #[test]
    fn exit_codes_map_to_causes() {
        let p = toil_cwl::tool::Prepared {
            success_codes: vec![0, 3],
            temporary_fail_codes: vec![75],
            permanent_fail_codes: vec![9],
            ..Default::default()
        };
        assert_eq!(exit_cause(&p, 3), None);
        assert_eq!(exit_cause(&p, 75).unwrap().kind, CauseKind::ExitCode as i32);
        assert_eq!(
            exit_cause(&p, 9).unwrap().kind,
            CauseKind::ConfigError as i32
        );
        assert_eq!(exit_cause(&p, 1).unwrap().kind, CauseKind::ExitCode as i32);
        let d = toil_cwl::tool::Prepared::default();
        assert_eq!(exit_cause(&d, 0), None);
    }

    #[test]
    fn uris_round_trip() {
        let p = Path::new("/tmp/a b/c#d.txt");
        let u = file_uri(p);
        assert_eq!(u, "file:///tmp/a%20b/c%23d.txt");
        assert_eq!(uri_path(&u).unwrap(), p);
        assert_eq!(
            safe_basename(
                json!({"class": "File", "location": "toilfile:files/inputs/x%20y"})
                    .as_object()
                    .unwrap()
            ),
            "x y"
        );
    }
}
