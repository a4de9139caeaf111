//! File and Directory objects.
//!
//! Helpers shared by the tool module, the agent and the leader: the names
//! CWL derives from a location (`basename`, `nameroot`, `nameext`,
//! `dirname`), `file://` URIs and local paths, SHA-1 checksums, listing a
//! local directory, and the `secondaryFiles` pattern rules.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::CwlError;

/// Calls `f` on every File and Directory object in `v`, outermost first,
/// including those in `secondaryFiles` and `listing`.
pub fn walk_mut(v: &mut Value, f: &mut dyn FnMut(&mut Map<String, Value>)) {
    match v {
        Value::Object(m) => {
            let class = m.get("class").and_then(Value::as_str);
            if matches!(class, Some("File") | Some("Directory")) {
                f(m);
                for key in ["secondaryFiles", "listing"] {
                    if let Some(Value::Array(items)) = m.get_mut(key) {
                        for item in items {
                            walk_mut(item, f);
                        }
                    }
                }
            } else {
                for (_, item) in m.iter_mut() {
                    walk_mut(item, f);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                walk_mut(item, f);
            }
        }
        _ => {}
    }
}

/// A fallible visitor of File and Directory objects, for [`try_walk_mut`].
pub type TryVisit<'a> = dyn FnMut(&mut Map<String, Value>) -> Result<(), CwlError> + 'a;

/// Like [`walk_mut`], but `f` may fail; the first error stops the walk.
pub fn try_walk_mut(v: &mut Value, f: &mut TryVisit<'_>) -> Result<(), CwlError> {
    match v {
        Value::Object(m) => {
            let class = m.get("class").and_then(Value::as_str);
            if matches!(class, Some("File") | Some("Directory")) {
                f(m)?;
                for key in ["secondaryFiles", "listing"] {
                    if let Some(Value::Array(items)) = m.get_mut(key) {
                        for item in items {
                            try_walk_mut(item, f)?;
                        }
                    }
                }
            } else {
                for (_, item) in m.iter_mut() {
                    try_walk_mut(item, f)?;
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                try_walk_mut(item, f)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// True when `v` is a File object (`class: File`).
pub fn is_file(v: &Value) -> bool {
    v.get("class").and_then(Value::as_str) == Some("File")
}

/// True when `v` is a Directory object (`class: Directory`).
pub fn is_directory(v: &Value) -> bool {
    v.get("class").and_then(Value::as_str) == Some("Directory")
}

/// The local path of a `file://` URI, percent-decoded; `None` for any other
/// scheme (`toilfile:`, `http:`, a relative reference).
pub fn uri_to_path(location: &str) -> Option<PathBuf> {
    let rest = location.strip_prefix("file://")?;
    // `file://host/path` is not supported; `file:///path` has an empty host.
    let rest = rest.strip_prefix("localhost").unwrap_or(rest);
    if !rest.starts_with('/') {
        return None;
    }
    let rest = rest.split(['?', '#']).next().unwrap_or(rest);
    Some(PathBuf::from(percent_decode(rest)))
}

/// The `file://` URI of an absolute local path, percent-encoding every byte
/// but the unreserved characters and `/` (as Python's `urllib.parse.quote`).
pub fn path_to_uri(path: &Path) -> String {
    format!("file://{}", percent_encode(&path.to_string_lossy()))
}

/// Percent-encodes `s`, keeping ASCII letters, digits, `-._~` and `/`.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes (invalid escapes are kept as written).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The last path segment of a location or path, percent-decoded for URIs
/// (`file:///a/b%20c.txt` gives `b c.txt`; a trailing `/` is ignored).
pub fn basename_of(location: &str) -> String {
    let has_scheme = location
        .split_once(':')
        .is_some_and(|(scheme, _)| !scheme.is_empty() && !scheme.contains('/'));
    let trimmed = location.trim_end_matches('/');
    let last = match trimmed.rsplit_once('/') {
        Some((_, last)) => last,
        // `toilfile:ID`: what follows the scheme.
        None if has_scheme => trimmed.split_once(':').map_or(trimmed, |(_, t)| t),
        None => trimmed,
    };
    if has_scheme {
        percent_decode(last)
    } else {
        last.to_string()
    }
}

/// Splits a basename into `nameroot` and `nameext` as CWL (and Python's
/// `os.path.splitext`) do: the extension starts at the last `.`, leading
/// dots do not count (`.bashrc` has no extension).
pub fn split_ext(basename: &str) -> (String, String) {
    let leading = basename.len() - basename.trim_start_matches('.').len();
    match basename[leading..].rfind('.') {
        Some(i) => {
            let i = i + leading;
            (basename[..i].to_string(), basename[i..].to_string())
        }
        None => (basename.to_string(), String::new()),
    }
}

/// Fills `basename` (from `location` or `path` when absent), `nameroot`,
/// `nameext`, and for local files `path` and `dirname`. Does not touch the
/// file system.
pub fn fill_names(m: &mut Map<String, Value>) {
    let location = m
        .get("location")
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(loc) = &location
        && let Some(path) = uri_to_path(loc)
        && !m.contains_key("path")
    {
        m.insert("path".into(), json!(path.to_string_lossy()));
    }
    if !m.get("basename").is_some_and(Value::is_string) {
        let from = location.or_else(|| m.get("path").and_then(Value::as_str).map(str::to_string));
        if let Some(from) = from {
            m.insert("basename".into(), json!(basename_of(&from)));
        }
    }
    if let Some(path) = m.get("path").and_then(Value::as_str).map(str::to_string) {
        let dirname = Path::new(&path)
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        m.insert("dirname".into(), json!(dirname));
    }
    if m.get("class").and_then(Value::as_str) == Some("File")
        && let Some(base) = m
            .get("basename")
            .and_then(Value::as_str)
            .map(str::to_string)
    {
        let (root, ext) = split_ext(&base);
        m.insert("nameroot".into(), json!(root));
        m.insert("nameext".into(), json!(ext));
    }
}

/// Sets `path`, `dirname`, `basename`, `nameroot` and `nameext` of a File
/// or Directory object from a local path (after staging it elsewhere).
pub fn set_path(m: &mut Map<String, Value>, path: &Path) {
    m.insert("path".into(), json!(path.to_string_lossy()));
    let base = path
        .file_name()
        .map(|b| b.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dirname = path
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    m.insert("dirname".into(), json!(dirname));
    if m.get("class").and_then(Value::as_str) == Some("File") {
        let (root, ext) = split_ext(&base);
        m.insert("nameroot".into(), json!(root));
        m.insert("nameext".into(), json!(ext));
    }
    m.insert("basename".into(), json!(base));
}

/// The SHA-1 checksum of a file as CWL writes it (`sha1$<hex>`) and its size.
pub fn sha1_file(path: &Path) -> io::Result<(String, u64)> {
    let mut f = fs::File::open(path)?;
    let mut h = sha1_smol::Sha1::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((format!("sha1${}", h.digest()), size))
}

/// Reads at most `limit` bytes of a file.
pub fn read_prefix(path: &Path, limit: usize) -> io::Result<Vec<u8>> {
    let f = fs::File::open(path)?;
    let mut out = Vec::new();
    f.take(limit as u64).read_to_end(&mut out)?;
    Ok(out)
}

/// The most `loadContents` reads: 64 KiB.
pub const CONTENTS_LIMIT: usize = 64 * 1024;

/// Reads a file for `loadContents`: its whole text, or an error naming the
/// file when it is larger than 64 KiB (CWL v1.2).
pub fn load_contents(path: &Path) -> Result<String, CwlError> {
    let bytes = read_prefix(path, CONTENTS_LIMIT + 1).map_err(|e| {
        CwlError::Failed(format!("loadContents: cannot read {}: {e}", path.display()))
    })?;
    if bytes.len() > CONTENTS_LIMIT {
        return Err(CwlError::Failed(format!(
            "loadContents: {} is larger than 64 KiB; CWL reads at most 64 KiB into `contents` \
             (read the file in the tool instead)",
            path.display()
        )));
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// A File or Directory object for a local path (`location`, `path`,
/// `basename`, ...; files get `size`). Symbolic links are followed.
pub fn object_for_path(path: &Path) -> io::Result<Value> {
    let meta = fs::metadata(path)?;
    let class = if meta.is_dir() { "Directory" } else { "File" };
    let mut m = Map::new();
    m.insert("class".into(), json!(class));
    m.insert("location".into(), json!(path_to_uri(path)));
    set_path(&mut m, path);
    if !meta.is_dir() {
        m.insert("size".into(), json!(meta.len()));
    }
    Ok(Value::Object(m))
}

/// Lists a local directory as CWL File and Directory objects, sorted by
/// name; with `deep`, sub-directories carry their own `listing`.
pub fn list_dir(path: &Path, deep: bool) -> io::Result<Vec<Value>> {
    let mut names: Vec<_> = fs::read_dir(path)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let child = path.join(&name);
        let mut obj = match object_for_path(&child) {
            Ok(o) => o,
            // A dangling symbolic link: not part of the listing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if deep && is_directory(&obj) {
            let listing = list_dir(&child, true)?;
            if let Value::Object(m) = &mut obj {
                m.insert("listing".into(), Value::Array(listing));
            }
        }
        out.push(obj);
    }
    Ok(out)
}

/// A Directory object for a local directory with its whole listing,
/// recursively (as a job-store Directory always carries it).
pub fn directory_object(path: &Path) -> io::Result<Value> {
    let mut obj = object_for_path(path)?;
    if !is_directory(&obj) {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{} is not a directory", path.display()),
        ));
    }
    let listing = list_dir(path, true)?;
    if let Value::Object(m) = &mut obj {
        m.insert("listing".into(), Value::Array(listing));
    }
    Ok(obj)
}

/// Applies a `secondaryFiles` pattern to a primary file's basename: each
/// leading `^` strips one extension, the rest is appended
/// (`^.bai` on `x.bam` gives `x.bai`; `.bai` gives `x.bam.bai`).
pub fn secondary_name(basename: &str, pattern: &str) -> String {
    let mut base = basename.to_string();
    let mut pat = pattern;
    while let Some(rest) = pat.strip_prefix('^') {
        if let Some(i) = base.rfind('.') {
            base.truncate(i);
        }
        pat = rest;
    }
    base.push_str(pat);
    base
}

/// Joins a relative location to a directory URI or path (`dir` without a
/// trailing slash). Absolute URIs and paths are returned unchanged.
pub fn join_location(dir_uri: &str, rel: &str) -> String {
    if rel.contains("://") || rel.starts_with('/') || rel.starts_with("file:") {
        if rel.starts_with('/') {
            return path_to_uri(Path::new(rel));
        }
        return rel.to_string();
    }
    format!("{}/{}", dir_uri.trim_end_matches('/'), rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_a_location() {
        let mut m = Map::new();
        m.insert("class".into(), json!("File"));
        m.insert("location".into(), json!("file:///data/my%20reads.fastq.gz"));
        fill_names(&mut m);
        assert_eq!(m["basename"], "my reads.fastq.gz");
        assert_eq!(m["nameroot"], "my reads.fastq");
        assert_eq!(m["nameext"], ".gz");
        assert_eq!(m["path"], "/data/my reads.fastq.gz");
        assert_eq!(m["dirname"], "/data");
    }

    #[test]
    fn split_ext_follows_python() {
        assert_eq!(split_ext(".bashrc"), (".bashrc".into(), "".into()));
        assert_eq!(split_ext("a.tar.gz"), ("a.tar".into(), ".gz".into()));
        assert_eq!(split_ext("noext"), ("noext".into(), "".into()));
        assert_eq!(split_ext("..x.y"), ("..x".into(), ".y".into()));
    }

    #[test]
    fn uri_round_trip_with_odd_characters() {
        let p = Path::new("/tmp/a b/c#d%e.txt");
        let uri = path_to_uri(p);
        assert_eq!(uri, "file:///tmp/a%20b/c%23d%25e.txt");
        assert_eq!(uri_to_path(&uri).as_deref(), Some(p));
        assert_eq!(uri_to_path("toilfile:abc"), None);
        assert_eq!(basename_of("toilfile:abc"), "abc");
        assert_eq!(basename_of("file:///x/y/"), "y");
    }

    #[test]
    fn secondary_patterns() {
        assert_eq!(secondary_name("x.bam", ".bai"), "x.bam.bai");
        assert_eq!(secondary_name("x.bam", "^.bai"), "x.bai");
        assert_eq!(secondary_name("x.tar.gz", "^^.idx"), "x.idx");
        assert_eq!(secondary_name("x", "^.idx"), "x.idx");
    }

    #[test]
    fn checksum_listing_and_contents_limit() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("b.txt"), "hello\n").unwrap();
        fs::create_dir(dir.path().join("a")).unwrap();
        fs::write(dir.path().join("a/inner"), "").unwrap();
        let (sum, size) = sha1_file(&dir.path().join("b.txt")).unwrap();
        assert_eq!(sum, "sha1$f572d396fae9206628714fb2ce00f72e94f2258f");
        assert_eq!(size, 6);

        let deep = list_dir(dir.path(), true).unwrap();
        assert_eq!(deep.len(), 2);
        assert_eq!(deep[0]["class"], "Directory");
        assert_eq!(deep[0]["basename"], "a");
        assert_eq!(deep[0]["listing"][0]["basename"], "inner");
        assert_eq!(deep[1]["size"], 6);
        let shallow = list_dir(dir.path(), false).unwrap();
        assert!(shallow[0].get("listing").is_none());
        let whole = directory_object(dir.path()).unwrap();
        assert_eq!(whole["listing"], Value::Array(deep.clone()));
        assert!(directory_object(&dir.path().join("b.txt")).is_err());

        fs::write(dir.path().join("big"), vec![b'x'; CONTENTS_LIMIT + 1]).unwrap();
        let err = load_contents(&dir.path().join("big")).unwrap_err();
        assert!(err.to_string().contains("64 KiB"), "{err}");
        fs::write(dir.path().join("fits"), vec![b'y'; CONTENTS_LIMIT]).unwrap();
        assert_eq!(
            load_contents(&dir.path().join("fits")).unwrap().len(),
            CONTENTS_LIMIT
        );
    }
}
