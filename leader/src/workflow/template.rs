//! `{{VAR}}` placeholders in the fields of scattered jobs.
//!
//! A placeholder is `{{NAME}}`, NAME being a letter or `_` followed by
//! letters, digits, `_` or `-`. Anything else that contains braces is
//! ordinary text, so shell and awk code such as `${x}` or `{ print $1 }`
//! passes through untouched. [`placeholders`] also finds `{{ NAME }}` with
//! spaces, so validation can reject that spelling rather than let it pass
//! through unrendered; [`render`] replaces both.

use std::ops::Range;

/// The name of the placeholder holding the instance's index (from 0).
pub const INDEX: &str = "index";

/// Replaces `{{var}}` with `value` and `{{index}}` with `index`; other
/// placeholders are left as written (validation has already rejected them).
///
/// Called for every instance at launch time: one pass, no allocation beyond
/// the result, and a plain copy when there is no `{{`.
pub fn render(template: &str, var: &str, value: &str, index: u64) -> String {
    if !template.contains("{{") {
        return template.to_owned();
    }
    let mut out = String::with_capacity(template.len() + value.len());
    let mut rest = 0;
    for (name, range) in placeholders(template) {
        let replacement_is_index = name == INDEX && var != INDEX;
        if name != var && !replacement_is_index {
            continue;
        }
        out.push_str(&template[rest..range.start]);
        if replacement_is_index {
            // `u64` formatting into the string without a temporary.
            use std::fmt::Write;
            let _ = write!(out, "{index}");
        } else {
            out.push_str(value);
        }
        rest = range.end;
    }
    out.push_str(&template[rest..]);
    out
}

/// True when `text` holds at least one placeholder.
pub fn has_placeholder(text: &str) -> bool {
    placeholders(text).next().is_some()
}

/// The placeholders in `text`: each name with the byte range of the whole
/// `{{ name }}`, in order.
pub fn placeholders(text: &str) -> impl Iterator<Item = (&str, Range<usize>)> {
    let bytes = text.as_bytes();
    let mut at = 0;
    std::iter::from_fn(move || {
        while let Some(off) = text.get(at..).and_then(|t| t.find("{{")) {
            let start = at + off;
            // Step one brace only: in `{{{x}}` the placeholder starts at the second.
            at = start + 1;
            if let Some((name, end)) = read_placeholder(bytes, start + 2) {
                at = end;
                return Some((&text[name], start..end));
            }
        }
        None
    })
}

/// Reads ` name }}` from `i`; returns the name's range and the end of `}}`.
fn read_placeholder(b: &[u8], mut i: usize) -> Option<(Range<usize>, usize)> {
    while b.get(i) == Some(&b' ') {
        i += 1;
    }
    let start = i;
    match b.get(i) {
        Some(c) if c.is_ascii_alphabetic() || *c == b'_' => i += 1,
        _ => return None,
    }
    while matches!(b.get(i), Some(c) if c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-') {
        i += 1;
    }
    let end = i;
    while b.get(i) == Some(&b' ') {
        i += 1;
    }
    (b.get(i..i + 2) == Some(b"}}")).then_some((start..end, i + 2))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn renders() {
        let cases = [
            ("plain text", "plain text"),
            ("count_{{sample}}.txt", "count_b.txt"),
            ("{{sample}}", "b"),
            ("{{ sample }}-{{index}}", "b-7"),
            ("{{index}}{{index}}", "77"),
            ("{{other}} {{sample}}", "{{other}} b"),
            ("awk '{ print $1 }' ${x} {{", "awk '{ print $1 }' ${x} {{"),
            ("{{{sample}}}", "{b}"),
            ("{{sample}", "{{sample}"),
            ("{{1x}} {{sample}}", "{{1x}} b"),
            ("é{{sample}}é", "ébé"),
        ];
        for (template, want) in cases {
            assert_eq!(render(template, "sample", "b", 7), want, "{template}");
        }
    }

    #[test]
    fn finds_placeholders() {
        let found: Vec<(&str, Range<usize>)> =
            placeholders("a {{x}} b {{ index }} {{ }} {{y-2}}").collect();
        assert_eq!(found, [("x", 2..7), ("index", 10..21), ("y-2", 28..35)]);
        assert!(has_placeholder("x{{i}}"));
        assert!(!has_placeholder("x{{ }}"));
        assert!(!has_placeholder("${HOME}"));
    }
}
