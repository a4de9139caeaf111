//! Output globs, as Python's `glob.glob` (which cwltool uses): `*`, `?`
//! and `[...]` within one path segment, hidden names matched only by a
//! segment that starts with `.`, results in byte order per pattern.

use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::CwlError;

/// True when `name` matches the shell pattern `pat` (`*`, `?`, `[abc]`,
/// `[a-z]`, `[!x]`); the whole name must match.
pub fn fnmatch(pat: &str, name: &str) -> bool {
    let p: Vec<char> = pat.chars().collect();
    let n: Vec<char> = name.chars().collect();
    match_from(&p, &n)
}

fn match_from(p: &[char], n: &[char]) -> bool {
    let Some((&c, rest)) = p.split_first() else {
        return n.is_empty();
    };
    match c {
        '*' => (0..=n.len()).any(|i| match_from(rest, &n[i..])),
        '?' => !n.is_empty() && match_from(rest, &n[1..]),
        '[' => match class(rest) {
            Some((set, after)) => !n.is_empty() && set.matches(n[0]) && match_from(after, &n[1..]),
            // An unclosed `[` is a literal.
            None => n.first() == Some(&'[') && match_from(rest, &n[1..]),
        },
        c => n.first() == Some(&c) && match_from(rest, &n[1..]),
    }
}

struct Class {
    negate: bool,
    ranges: Vec<(char, char)>,
}

impl Class {
    fn matches(&self, c: char) -> bool {
        self.ranges.iter().any(|(a, b)| *a <= c && c <= *b) != self.negate
    }
}

/// Parses a `[...]` class (after the `[`); returns it and what follows `]`.
fn class(p: &[char]) -> Option<(Class, &[char])> {
    let mut i = 0;
    let negate = matches!(p.first(), Some('!'));
    if negate {
        i += 1;
    }
    let mut ranges = Vec::new();
    let start = i;
    while i < p.len() {
        if p[i] == ']' && i > start {
            return Some((Class { negate, ranges }, &p[i + 1..]));
        }
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            ranges.push((p[i], p[i + 2]));
            i += 3;
        } else {
            ranges.push((p[i], p[i]));
            i += 1;
        }
    }
    None
}

fn has_magic(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The paths under `root` that `pattern` (relative to `root`) matches,
/// sorted by bytes. A pattern that leads outside `root` (through `..`) is an
/// error.
pub(crate) fn glob(root: &Path, pattern: &str) -> Result<Vec<PathBuf>, CwlError> {
    let normalized = lexical_normalize(&root.join(pattern));
    if !normalized.starts_with(lexical_normalize(root)) {
        return Err(CwlError::Failed(format!(
            "the glob {pattern:?} leads outside the output directory; globs must name files \
             inside it"
        )));
    }
    let mut found = vec![root.to_path_buf()];
    for seg in pattern.split('/') {
        if seg.is_empty() || seg == "." {
            continue;
        }
        let mut next = Vec::new();
        for base in &found {
            if has_magic(seg) {
                let Ok(entries) = fs::read_dir(base) else {
                    continue;
                };
                let hidden_ok = seg.starts_with('.');
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.starts_with('.') && !hidden_ok {
                        continue;
                    }
                    if fnmatch(seg, &name) {
                        next.push(base.join(&name));
                    }
                }
            } else {
                let p = base.join(seg);
                if fs::symlink_metadata(&p).is_ok() {
                    next.push(p);
                }
            }
        }
        found = next;
    }
    // Dangling links are not results.
    found.retain(|p| p.exists());
    found.sort_by(|a, b| {
        a.as_os_str()
            .as_encoded_bytes()
            .cmp(b.as_os_str().as_encoded_bytes())
    });
    Ok(found)
}

/// Removes `.` and resolves `..` without touching the file system.
pub(crate) fn lexical_normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(fnmatch("*.txt", "a.txt"));
        assert!(!fnmatch("*.txt", "a.txt.gz"));
        assert!(fnmatch("a?c", "abc"));
        assert!(fnmatch("[ab]x", "bx"));
        assert!(!fnmatch("[!ab]x", "bx"));
        assert!(fnmatch("[a-c]*", "cat"));
        assert!(fnmatch("x[", "x["));
    }

    #[test]
    fn globs_in_a_tree() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("b.txt"), "").unwrap();
        fs::write(d.path().join("a.txt"), "").unwrap();
        fs::write(d.path().join(".hidden.txt"), "").unwrap();
        fs::create_dir(d.path().join("sub")).unwrap();
        fs::write(d.path().join("sub/c.txt"), "").unwrap();
        let names = |v: Vec<PathBuf>| -> Vec<String> {
            v.iter()
                .map(|p| {
                    p.strip_prefix(d.path())
                        .unwrap()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect()
        };
        assert_eq!(names(glob(d.path(), "*.txt").unwrap()), ["a.txt", "b.txt"]);
        assert_eq!(names(glob(d.path(), ".*.txt").unwrap()), [".hidden.txt"]);
        assert_eq!(names(glob(d.path(), "*/c.txt").unwrap()), ["sub/c.txt"]);
        assert_eq!(names(glob(d.path(), "sub").unwrap()), ["sub"]);
        assert!(glob(d.path(), "missing").unwrap().is_empty());
        assert!(glob(d.path(), "../*").is_err());
        assert!(glob(d.path(), "sub/../a.txt").is_ok());
    }
}
