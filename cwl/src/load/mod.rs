//! Loading CWL documents into the normalized form of `cwl/DESIGN.md`.
//!
//! The loader implements the part of schema-salad that CWL v1.2 needs:
//!
//! - [`node`]: YAML/JSON parsed into a tree whose every value knows its file,
//!   line and column, so every error reads `FILE:LINE:COL: problem`.
//! - this module: fetching files, `$import`/`$include`/`$mixin`,
//!   `$namespaces`/`$schemas`, packed `$graph` documents, error collection.
//! - `fields`: checking a mapping's fields (unknown ones with a "did you
//!   mean", required ones, value kinds) and map/list forms.
//! - `process`: per-class normalization and validation (field tables that
//!   follow the spec's salad schema, ids, parameters, bindings, the
//!   secondaryFiles DSL, File literals), v1.0/v1.1 upgrades.
//! - `requirements`: requirements and hints.
//! - `types`: the type DSL, records/enums/arrays, SchemaDefRequirement.
//! - `workflow`: steps, `source`/`outputSource`/`scatter` references, the
//!   step checks cwltool makes; `checker`: the static type check of
//!   workflow connections.
//! - `job`: input objects.

mod checker;
mod fields;
mod job;
pub mod node;
mod process;
mod requirements;
#[cfg(test)]
mod tests;
mod types;
pub mod uri;
mod workflow;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::{CwlError, Document};
use node::{Node, Pos, V};

pub use job::load_job_order_from_str;

/// The last segment of an id: `file:///a/b.cwl#step/x` gives `x`.
pub fn shortname(id: &str) -> &str {
    let tail = id.rsplit_once('#').map_or(id, |(_, f)| f);
    tail.rsplit_once('/').map_or(tail, |(_, s)| s)
}

/// Loads, normalizes and checks a CWL document. `path` may end in
/// `#fragment` to pick one process of a packed `$graph` (default `#main`).
///
/// Errors are [`CwlError::Invalid`] (with file, line, column and a hint) or
/// [`CwlError::Unsupported`].
pub fn load_document(path: &Path) -> Result<Document, CwlError> {
    let text = path.to_string_lossy();
    let (file, frag) = match text.rsplit_once('#') {
        Some((f, fr)) if !f.is_empty() => (f.to_string(), Some(fr.to_string())),
        _ => (text.to_string(), None),
    };
    let abs = absolute(Path::new(&file));
    let mut loader = Loader::default();
    loader.load_top(&abs, None, frag.as_deref())
}

/// Like [`load_document`], with the document's text given: `path` names the
/// file (for ids, relative references and messages) and need not exist.
pub fn load_document_from_str(
    text: &str,
    path: &Path,
    fragment: Option<&str>,
) -> Result<Document, CwlError> {
    let abs = absolute(path);
    let mut loader = Loader::default();
    loader.load_top(&abs, Some(text), fragment)
}

/// Loads an input object (YAML or JSON) for `doc`: `location`/`path`
/// resolved to absolute `file://` URIs against the file's directory,
/// `format` expanded.
pub fn load_job_order(path: &Path, doc: &Document) -> Result<Value, CwlError> {
    let abs = absolute(path);
    let text = std::fs::read_to_string(&abs).map_err(|e| {
        CwlError::Invalid(format!(
            "{}: cannot read the input object: {e}\n  hint: check the path of the job file",
            abs.display()
        ))
    })?;
    load_job_order_from_str(&text, &abs, doc)
}

/// An absolute, lexically normalized version of `p` (relative to the current
/// directory), without touching the file system otherwise.
pub(crate) fn absolute(p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().map_or_else(|_| p.to_path_buf(), |d| d.join(p))
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// One problem: where, what and how to fix it.
#[derive(Clone, Debug)]
pub(crate) struct Diag {
    pub pos: Pos,
    pub msg: String,
    pub hint: Option<String>,
}

impl std::fmt::Display for Diag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.pos, self.msg)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// A CWL version the loader understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Version {
    V1_0,
    V1_1,
    V1_2,
}

impl Version {
    fn parse(s: &str) -> Option<Version> {
        match s {
            "v1.0" | "v1.0.dev4" => Some(Version::V1_0),
            "v1.1" | "v1.1.0-dev1" => Some(Version::V1_1),
            "v1.2" | "v1.2.1" => Some(Version::V1_2),
            s if s.starts_with("v1.2.0-dev") => Some(Version::V1_2),
            _ => None,
        }
    }
}

/// What the loader knows about one file it read.
pub(crate) struct FileInfo {
    /// The preprocessed tree (`$import`... resolved; `$namespaces`,
    /// `$schemas`, `$base` removed from the root).
    root: Arc<Node>,
    /// `cwlVersion` written at the root (a `$graph` document's version).
    version: Option<(String, Pos)>,
}

/// The state of one load: files read, errors found, named types.
#[derive(Default)]
pub(crate) struct Loader {
    files: HashMap<String, Arc<FileInfo>>,
    /// Files being preprocessed (cycle guard for `$import`).
    importing: Vec<String>,
    /// Processes being normalized (cycle guard for `run`).
    running: Vec<String>,
    /// Normalized processes by id, so a tool run by several steps is
    /// normalized once.
    processes: HashMap<String, Node>,
    pub(crate) namespaces: Map<String, Value>,
    pub(crate) schemas: Vec<String>,
    pub(crate) diags: Vec<Diag>,
    pub(crate) unsupported: Vec<Diag>,
    /// Named types from SchemaDefRequirement: absolute name -> definition
    /// and the scope it was written in; normalized lazily.
    pub(crate) raw_types: HashMap<String, (Node, String)>,
    pub(crate) types: HashMap<String, Node>,
    pub(crate) types_in_progress: HashSet<String>,
    /// Requirement and hint classes of the enclosing workflows and steps,
    /// innermost last (for the feature requirement checks).
    pub(crate) req_stack: Vec<Vec<String>>,
    /// Texts given directly (path -> text) instead of read from disk.
    given: HashMap<String, String>,
}

impl Loader {
    pub(crate) fn error(&mut self, pos: &Pos, msg: impl Into<String>, hint: Option<String>) {
        self.diags.push(Diag {
            pos: pos.clone(),
            msg: msg.into(),
            hint,
        });
    }

    pub(crate) fn unsupported(&mut self, pos: &Pos, msg: impl Into<String>, hint: Option<String>) {
        self.unsupported.push(Diag {
            pos: pos.clone(),
            msg: msg.into(),
            hint,
        });
    }

    /// The error collected so far, if any.
    pub(crate) fn outcome(&self) -> Result<(), CwlError> {
        if !self.diags.is_empty() {
            let mut msgs: Vec<String> = self.diags.iter().map(Diag::to_string).collect();
            msgs.dedup();
            return Err(CwlError::Invalid(msgs.join("\n")));
        }
        if !self.unsupported.is_empty() {
            let msgs: Vec<String> = self.unsupported.iter().map(Diag::to_string).collect();
            return Err(CwlError::Unsupported(msgs.join("\n")));
        }
        Ok(())
    }

    fn load_top(
        &mut self,
        path: &Path,
        text: Option<&str>,
        fragment: Option<&str>,
    ) -> Result<Document, CwlError> {
        let file_uri = uri::path_to_uri(path);
        if let Some(t) = text {
            self.given
                .insert(path.to_string_lossy().into_owned(), t.to_string());
        }
        let target = match fragment {
            Some(f) => format!("{file_uri}#{f}"),
            None => file_uri.clone(),
        };
        let pos = Pos {
            line: 0,
            col: 0,
            ..Pos::start(&Arc::from(path.to_string_lossy().as_ref()))
        };
        let process = self.load_process(&target, &pos);
        self.outcome()?;
        let process = process.ok_or_else(|| {
            CwlError::Invalid(format!("{}: no process was loaded", path.display()))
        })?;
        Ok(Document {
            process: Arc::new(process.to_json()),
            namespaces: self.namespaces.clone(),
            schemas: self.schemas.clone(),
            uri: file_uri,
        })
    }

    /// Reads and preprocesses a file (cached). `pos` is where it is
    /// referenced from, for the error when it cannot be read.
    fn file(&mut self, path: &Path, pos: &Pos) -> Option<Arc<FileInfo>> {
        let key = path.to_string_lossy().into_owned();
        if let Some(f) = self.files.get(&key) {
            return Some(f.clone());
        }
        let node = self.parse_file(path, pos)?;
        let file_arc: Arc<str> = Arc::from(key.as_str());
        let mut root = self.preprocess(node, &file_arc);
        let mut version = None;
        if root.is_map() {
            if let Some(e) = root.remove("$namespaces") {
                match e.value.entries() {
                    Some(entries) => {
                        for ns in entries {
                            match ns.value.as_str() {
                                Some(u) => {
                                    self.namespaces
                                        .entry(ns.key.clone())
                                        .or_insert_with(|| Value::String(u.to_string()));
                                }
                                None => self.error(
                                    &ns.value.pos,
                                    format!("namespace `{}` must be a URI string", ns.key),
                                    None,
                                ),
                            }
                        }
                    }
                    None => self.error(
                        &e.value.pos,
                        "`$namespaces` must be a mapping of prefix to URI",
                        Some("write `$namespaces: {edam: http://edamontology.org/}`".into()),
                    ),
                }
            }
            if let Some(e) = root.remove("$schemas") {
                let base = uri::path_to_uri(path);
                let items: Vec<Node> = match e.value.v {
                    V::Seq(items) => items,
                    _ => vec![e.value],
                };
                for s in items {
                    match s.as_str() {
                        Some(s) => self.schemas.push(uri::resolve_uri(&base, s)),
                        None => self.error(&s.pos, "`$schemas` entries must be strings", None),
                    }
                }
            }
            root.remove("$base");
            if let Some(v) = root.get("cwlVersion") {
                version = Some((v.as_str().unwrap_or("").to_string(), v.pos.clone()));
            }
        }
        let info = Arc::new(FileInfo {
            root: Arc::new(root),
            version,
        });
        self.files.insert(key, info.clone());
        self.preregister_types(&info, path);
        Some(info)
    }

    fn read_text(&mut self, path: &Path, pos: &Pos) -> Option<String> {
        let key = path.to_string_lossy();
        if let Some(t) = self.given.get(key.as_ref()) {
            return Some(t.clone());
        }
        match std::fs::read_to_string(path) {
            Ok(t) => Some(t),
            Err(e) => {
                self.error(
                    pos,
                    format!("cannot read {}: {e}", path.display()),
                    Some(
                        "check the path; relative paths are relative to the file that names them"
                            .into(),
                    ),
                );
                None
            }
        }
    }

    fn parse_file(&mut self, path: &Path, pos: &Pos) -> Option<Node> {
        let text = self.read_text(path, pos)?;
        let file: Arc<str> = Arc::from(path.to_string_lossy().as_ref());
        match node::parse(&text, &file) {
            Ok(n) => Some(n),
            Err(e) => {
                self.error(&e.pos, e.msg, e.hint);
                None
            }
        }
    }

    /// Resolves `$import`, `$include` and `$mixin` everywhere in `node`.
    fn preprocess(&mut self, node: Node, file: &Arc<str>) -> Node {
        let Node { pos, v } = node;
        match v {
            V::Map(entries) => {
                if let Some(e) = entries
                    .iter()
                    .find(|e| e.key == "$import" || e.key == "$include")
                {
                    let key = e.key.clone();
                    let Some(target) = e.value.as_str().map(str::to_string) else {
                        self.error(
                            &e.value.pos,
                            format!("`{key}` needs a path (a string)"),
                            None,
                        );
                        return Node::new(pos, V::Null);
                    };
                    if entries.len() > 1 {
                        self.error(
                            &pos,
                            format!("`{key}` must be the only field of its mapping"),
                            Some(
                                "move the other fields into the imported file, or use `$mixin`"
                                    .into(),
                            ),
                        );
                    }
                    let base = uri::path_to_uri(Path::new(&**file));
                    let target_uri = uri::resolve_uri(&base, &target);
                    let Some(path) = uri::uri_to_path(&target_uri) else {
                        self.unsupported(
                            &e.value.pos,
                            format!("`{key}` of {target_uri}: only local files can be read"),
                            None,
                        );
                        return Node::new(pos, V::Null);
                    };
                    if key == "$include" {
                        return match self.read_text(&path, &e.value.pos) {
                            Some(t) => Node::new(pos, V::Str(t)),
                            None => Node::new(pos, V::Null),
                        };
                    }
                    return self.import(&path, uri::split_frag(&target_uri).1, &e.value.pos);
                }
                let mut out = Vec::with_capacity(entries.len());
                let mut mixin = None;
                for e in entries {
                    if e.key == "$mixin" {
                        mixin = Some(e.value);
                        continue;
                    }
                    let value = self.preprocess(e.value, file);
                    out.push(node::Entry { value, ..e });
                }
                if let Some(m) = mixin {
                    let base = uri::path_to_uri(Path::new(&**file));
                    let target = m.as_str().map(|t| uri::resolve_uri(&base, t));
                    let mixed = target
                        .as_deref()
                        .and_then(uri::uri_to_path)
                        .map(|p| self.import(&p, None, &m.pos));
                    match mixed {
                        Some(Node {
                            v: V::Map(base_entries),
                            ..
                        }) => {
                            let mut merged = base_entries;
                            for e in out {
                                if let Some(x) = merged.iter_mut().find(|b| b.key == e.key) {
                                    *x = e;
                                } else {
                                    merged.push(e);
                                }
                            }
                            out = merged;
                        }
                        _ => self.error(
                            &m.pos,
                            "`$mixin` needs the path of a file holding a mapping",
                            None,
                        ),
                    }
                }
                Node::new(pos, V::Map(out))
            }
            V::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    let was_import = item.get("$import").is_some();
                    let n = self.preprocess(item, file);
                    match n.v {
                        V::Seq(inner) if was_import => out.extend(inner),
                        _ => out.push(n),
                    }
                }
                Node::new(pos, V::Seq(out))
            }
            v => Node::new(pos, v),
        }
    }

    /// The preprocessed content of another file, for `$import`/`$mixin`.
    fn import(&mut self, path: &Path, fragment: Option<&str>, pos: &Pos) -> Node {
        let key = path.to_string_lossy().into_owned();
        if self.importing.contains(&key) {
            self.error(pos, format!("{key} imports itself"), None);
            return Node::new(pos.clone(), V::Null);
        }
        self.importing.push(key);
        let info = self.file(path, pos);
        self.importing.pop();
        let Some(info) = info else {
            return Node::new(pos.clone(), V::Null);
        };
        let root = (*info.root).clone();
        match fragment {
            None => root,
            Some(f) => {
                let want = format!("{}#{f}", uri::path_to_uri(path));
                match find_by_id(&root, &uri::path_to_uri(path), &want) {
                    Some(n) => n.clone(),
                    None => {
                        self.error(pos, format!("{want} is not defined"), None);
                        Node::new(pos.clone(), V::Null)
                    }
                }
            }
        }
    }

    /// Loads the process named by `target` (a `file://` URI, with or
    /// without a fragment) and normalizes it.
    pub(crate) fn load_process(&mut self, target: &str, pos: &Pos) -> Option<Node> {
        if let Some(p) = self.processes.get(target) {
            return Some(p.clone());
        }
        let (doc_uri, frag) = uri::split_frag(target);
        let Some(path) = uri::uri_to_path(doc_uri) else {
            self.unsupported(
                pos,
                format!("cannot load {target}: only local files are supported"),
                None,
            );
            return None;
        };
        let info = self.file(&path, pos)?;
        let root = info.root.clone();
        let file_pos = Pos::start(&Arc::from(path.to_string_lossy().as_ref()));
        let (raw, in_graph) = if let Some(graph) = root.get("$graph") {
            let Some(items) = graph.items() else {
                self.error(&graph.pos, "`$graph` must be a list of processes", None);
                return None;
            };
            let want = frag.unwrap_or("main");
            let want_uri = format!("{doc_uri}#{want}");
            let found = items.iter().find(|p| {
                p.get_str("id")
                    .is_some_and(|id| uri::resolve_id(doc_uri, id) == want_uri)
            });
            let found = match (found, frag) {
                (Some(p), _) => p,
                (None, None) if items.len() == 1 => &items[0],
                _ => {
                    let ids: Vec<String> = items
                        .iter()
                        .filter_map(|p| p.get_str("id"))
                        .map(|id| {
                            format!(
                                "#{}",
                                crate::load::uri::resolve_id(doc_uri, id)
                                    .rsplit_once('#')
                                    .map_or("", |x| x.1)
                            )
                        })
                        .collect();
                    self.error(
                        pos,
                        format!(
                            "{} has no process `#{want}` in its `$graph`",
                            path.display()
                        ),
                        Some(format!("name one of: {}", ids.join(", "))),
                    );
                    return None;
                }
            };
            (found.clone(), true)
        } else {
            if let Some(f) = frag {
                let own = root.get_str("id").map(|id| uri::resolve_id(doc_uri, id));
                if own.as_deref() != Some(target) {
                    match find_by_id(&root, doc_uri, target) {
                        Some(n) if n.get("class").is_some() => {
                            let n = n.clone();
                            return self.normalize_top(n, doc_uri, &info, false, &file_pos);
                        }
                        _ => {
                            self.error(
                                pos,
                                format!("{} defines no process `#{f}`", path.display()),
                                Some("check the fragment after `#`".into()),
                            );
                            return None;
                        }
                    }
                }
            }
            ((*root).clone(), false)
        };
        let out = self.normalize_top(raw, doc_uri, &info, in_graph, &file_pos)?;
        if let Some(id) = out.get_str("id") {
            self.processes.insert(id.to_string(), out.clone());
        }
        self.processes.insert(target.to_string(), out.clone());
        Some(out)
    }

    fn normalize_top(
        &mut self,
        raw: Node,
        doc_uri: &str,
        info: &FileInfo,
        in_graph: bool,
        file_pos: &Pos,
    ) -> Option<Node> {
        let version = match (&info.version, raw.get("cwlVersion")) {
            (_, Some(v)) if !in_graph => {
                Some((v.as_str().unwrap_or("").to_string(), v.pos.clone()))
            }
            (Some(v), _) => Some(v.clone()),
            (None, Some(v)) => Some((v.as_str().unwrap_or("").to_string(), v.pos.clone())),
            (None, None) => None,
        };
        let version = match version {
            None => {
                self.error(
                    file_pos,
                    "the document has no `cwlVersion`",
                    Some("add `cwlVersion: v1.2` at the top of the file".into()),
                );
                return None;
            }
            Some((v, pos)) => match Version::parse(&v) {
                Some(v) => v,
                None => {
                    self.error(
                        &pos,
                        format!("unknown cwlVersion `{v}`"),
                        Some("this runner reads v1.0, v1.1 and v1.2 documents: write `cwlVersion: v1.2`".into()),
                    );
                    return None;
                }
            },
        };
        let key = raw
            .get_str("id")
            .map_or_else(|| doc_uri.to_string(), |id| uri::resolve_id(doc_uri, id));
        if self.running.contains(&key) {
            self.error(
                &raw.pos,
                format!("{key} runs itself"),
                Some("a workflow cannot run itself, directly or through a subworkflow".into()),
            );
            return None;
        }
        self.running.push(key);
        let out = self.normalize_process(raw, doc_uri, version, true);
        self.running.pop();
        out
    }
}

/// Finds the mapping whose `id` resolves to `want` anywhere under `node`.
fn find_by_id<'a>(node: &'a Node, doc_uri: &str, want: &str) -> Option<&'a Node> {
    match &node.v {
        V::Map(entries) => {
            if let Some(id) = node.get_str("id")
                && (uri::resolve_id(doc_uri, id) == want || want.ends_with(&format!("#{id}")))
            {
                return Some(node);
            }
            entries
                .iter()
                .find_map(|e| find_by_id(&e.value, doc_uri, want))
        }
        V::Seq(items) => items.iter().find_map(|i| find_by_id(i, doc_uri, want)),
        _ => None,
    }
}
