//! `file://` URIs, id resolution and "did you mean" suggestions.

use std::path::{Path, PathBuf};

/// Characters percent-encoded in a path turned into a URI.
fn needs_escape(b: u8) -> bool {
    !(b.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@".contains(&b))
}

/// The `file://` URI of an absolute path.
pub fn path_to_uri(path: &Path) -> String {
    format!("file://{}", escape_path(&path.to_string_lossy()))
}

/// A file system path percent-encoded for use in a URI (`a b` -> `a%20b`).
pub fn escape_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        if needs_escape(b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// The local path of a `file://` URI (fragment dropped), or `None` for
/// another scheme.
pub fn uri_to_path(uri: &str) -> Option<PathBuf> {
    let rest = uri.strip_prefix("file://")?;
    let rest = rest.split_once('#').map_or(rest, |(p, _)| p);
    let bytes = rest.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(hex) = std::str::from_utf8(&bytes[i + 1..i + 3])
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    Some(PathBuf::from(String::from_utf8_lossy(&out).into_owned()))
}

/// Splits `uri#frag` into the document part and the fragment (without `#`).
pub fn split_frag(uri: &str) -> (&str, Option<&str>) {
    match uri.split_once('#') {
        Some((d, f)) => (d, Some(f)),
        None => (uri, None),
    }
}

/// Whether `s` starts with a URI scheme (`http:`, `file:`, `_:` ...).
pub fn has_scheme(s: &str) -> bool {
    if ["_:", "toilfile:", "toildir:"]
        .iter()
        .any(|p| s.starts_with(p))
    {
        return true;
    }
    match s.find(':') {
        Some(i) if i > 0 => {
            let scheme = &s[..i];
            scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                && s[i + 1..].starts_with("//")
        }
        _ => false,
    }
}

/// Resolves a relative reference (a path, `#frag`, `path#frag`) against
/// `base` (a `file://` URI, possibly with a fragment).
pub fn resolve_uri(base: &str, reference: &str) -> String {
    if has_scheme(reference) || reference.starts_with("file:") {
        return reference.to_string();
    }
    let (doc, _) = split_frag(base);
    if reference.starts_with('#') {
        return format!("{doc}{reference}");
    }
    if reference.is_empty() {
        return doc.to_string();
    }
    let (rpath, rfrag) = split_frag(reference);
    let (scheme_host, path) = match doc.strip_prefix("file://") {
        Some(p) => ("file://", p),
        None => match doc.find("://") {
            Some(i) => {
                let after = &doc[i + 3..];
                let slash = after.find('/').map_or(after.len(), |j| j);
                (&doc[..i + 3 + slash], &after[slash..])
            }
            None => ("", doc),
        },
    };
    let mut segs: Vec<&str> = if rpath.starts_with('/') {
        Vec::new()
    } else {
        let mut s: Vec<&str> = path.split('/').collect();
        s.pop();
        s
    };
    for seg in rpath.split('/') {
        match seg {
            "." => {}
            ".." => {
                if segs.len() > 1 {
                    segs.pop();
                }
            }
            "" if !segs.is_empty() => {}
            s => segs.push(s),
        }
    }
    let mut out = String::from(scheme_host);
    let joined = segs.join("/");
    if !joined.starts_with('/') {
        out.push('/');
    }
    out.push_str(&joined);
    if let Some(f) = rfrag {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// Resolves an identifier (`id`, `name`) written inside the object whose
/// own id is `scope` (a URI, with or without fragment).
pub fn resolve_id(scope: &str, id: &str) -> String {
    if has_scheme(id) {
        return id.to_string();
    }
    if id.starts_with('#') || id.contains('#') {
        return resolve_uri(scope, id);
    }
    match split_frag(scope) {
        (_, Some(f)) if !f.is_empty() => format!("{scope}/{id}"),
        (d, _) => format!("{d}#{id}"),
    }
}

/// Levenshtein distance (small strings only).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(!a[i - 1].eq_ignore_ascii_case(&b[j - 1]));
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The closest of `candidates` to `word`, if close enough to be a typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_resolve_like_rfc3986() {
        let base = "file:///a/b/c.cwl";
        assert_eq!(resolve_uri(base, "d.cwl"), "file:///a/b/d.cwl");
        assert_eq!(resolve_uri(base, "../d.cwl#x"), "file:///a/d.cwl#x");
        assert_eq!(resolve_uri(base, "#x"), "file:///a/b/c.cwl#x");
        assert_eq!(resolve_uri(base, "/e/f"), "file:///e/f");
        assert_eq!(resolve_uri(base, "./sub/g.txt"), "file:///a/b/sub/g.txt");
        assert_eq!(resolve_uri(base, "http://x.org/y"), "http://x.org/y");
        assert_eq!(
            resolve_uri("http://h.org/p/q.cwl", "r.cwl"),
            "http://h.org/p/r.cwl"
        );
    }

    #[test]
    fn ids_are_scoped() {
        assert_eq!(resolve_id("file:///t.cwl", "x"), "file:///t.cwl#x");
        assert_eq!(
            resolve_id("file:///t.cwl#main", "x"),
            "file:///t.cwl#main/x"
        );
        assert_eq!(resolve_id("file:///t.cwl#main", "#y"), "file:///t.cwl#y");
    }

    #[test]
    fn paths_round_trip_with_escapes() {
        let p = Path::new("/tmp/a b/c#d.cwl");
        let u = path_to_uri(p);
        assert_eq!(u, "file:///tmp/a%20b/c%23d.cwl");
        assert_eq!(uri_to_path(&u).unwrap(), p);
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            did_you_mean("basecommand", ["baseCommand", "arguments"]),
            Some("baseCommand")
        );
        assert_eq!(did_you_mean("zzzzzz", ["baseCommand"]), None);
    }
}
