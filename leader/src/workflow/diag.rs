//! Diagnostics: what is wrong with a workflow file, where, and how to fix it.

use std::fmt;
use std::path::{Path, PathBuf};

use super::spec::Pos;

/// One problem in a workflow file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The workflow file, as given (for messages).
    pub file: PathBuf,
    /// Where the problem is; line 0 when it concerns the whole file (for
    /// example, the file cannot be read).
    pub pos: Pos,
    /// What is wrong, lowercase, without a trailing period.
    pub message: String,
    /// How to fix it, when there is something better to say than the message.
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pos.line == 0 {
            write!(f, "{}: error: {}", self.file.display(), self.message)?;
        } else {
            write!(
                f,
                "{}:{}: error: {}",
                self.file.display(),
                self.pos,
                self.message
            )?;
        }
        if let Some(hint) = &self.hint {
            // Continuation lines line up under the hint's text.
            write!(f, "\n  hint: {}", hint.replace('\n', "\n        "))?;
        }
        Ok(())
    }
}

/// Every problem found in a workflow file, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// True when there is no problem.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many problems.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The problems, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    /// Sorts by position (stable, so problems at one place keep their order).
    pub(crate) fn sort(&mut self) {
        self.0.sort_by_key(|d| d.pos);
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

// === impl Sink ===

/// Collects diagnostics for one file while it is parsed and checked.
pub(crate) struct Sink {
    /// The file every diagnostic names.
    file: PathBuf,
    /// What has been found so far.
    pub(crate) diags: Vec<Diagnostic>,
}

impl Sink {
    pub(crate) fn new(file: &Path) -> Sink {
        Sink {
            file: file.to_path_buf(),
            diags: Vec::new(),
        }
    }

    /// Records a problem with a hint.
    pub(crate) fn error(&mut self, pos: Pos, message: impl Into<String>, hint: impl Into<String>) {
        self.push(pos, message.into(), Some(hint.into()));
    }

    /// Records a problem whose message says it all.
    pub(crate) fn error_only(&mut self, pos: Pos, message: impl Into<String>) {
        self.push(pos, message.into(), None);
    }

    pub(crate) fn push(&mut self, pos: Pos, message: String, hint: Option<String>) {
        self.diags.push(Diagnostic {
            file: self.file.clone(),
            pos,
            message,
            hint,
        });
    }

    pub(crate) fn has_errors(&self) -> bool {
        !self.diags.is_empty()
    }

    pub(crate) fn into_diagnostics(self) -> Diagnostics {
        let mut d = Diagnostics(self.diags);
        d.sort();
        d
    }
}

// === suggestions ===

/// The candidate closest to `word` by edit distance (with transpositions,
/// so `memroy` finds `memory`), if it is close enough to be a likely typo.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    let max = (word.chars().count() / 3).max(1);
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = if c.eq_ignore_ascii_case(word) {
            0
        } else {
            edit_distance(&lower, &c.to_ascii_lowercase())
        };
        if d <= max && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// `hint: did you mean "x"?` text for a misspelt name, if any is close.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    closest(word, candidates).map(|c| format!("did you mean \"{c}\"?"))
}

/// Optimal string alignment distance: insertions, deletions, substitutions
/// and swaps of two neighbours each cost one.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(w) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

/// Quotes and joins names for a message: `"a", "b" and "c"`.
pub(crate) fn quoted_list<S: AsRef<str>>(names: &[S]) -> String {
    let q: Vec<String> = names
        .iter()
        .map(|n| format!("\"{}\"", n.as_ref()))
        .collect();
    match q.len() {
        0 => "none".to_string(),
        1 => q[0].clone(),
        n => format!("{} and {}", q[..n - 1].join(", "), q[n - 1]),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn edit_distances() {
        let cases = [
            ("", "", 0),
            ("memory", "memory", 0),
            ("memroy", "memory", 1),
            ("mem", "memory", 3),
            ("cors", "cores", 1),
            ("retry", "retries", 3),
            ("abc", "", 3),
            ("kitten", "sitting", 3),
        ];
        for (a, b, want) in cases {
            assert_eq!(edit_distance(a, b), want, "{a} vs {b}");
            assert_eq!(edit_distance(b, a), want, "{b} vs {a}");
        }
    }

    #[test]
    fn suggestions() {
        let keys = ["command", "cores", "memory", "disk", "inputs", "outputs"];
        assert_eq!(closest("memroy", keys), Some("memory"));
        assert_eq!(closest("Memory", keys), Some("memory"));
        assert_eq!(closest("core", keys), Some("cores"));
        assert_eq!(closest("outputz", keys), Some("outputs"));
        assert_eq!(closest("commnad", keys), Some("command"));
        assert_eq!(closest("zzz", keys), None);
        assert_eq!(closest("image", keys), None);
        assert_eq!(
            did_you_mean("dsik", keys).as_deref(),
            Some("did you mean \"disk\"?")
        );
    }

    #[test]
    fn display_blocks() {
        let d = Diagnostics(vec![
            Diagnostic {
                file: "hello.yaml".into(),
                pos: Pos { line: 12, col: 5 },
                message: "unknown key \"memroy\" in job \"align\"".into(),
                hint: Some("did you mean \"memory\"?".into()),
            },
            Diagnostic {
                file: "hello.yaml".into(),
                pos: Pos { line: 0, col: 0 },
                message: "cannot read the file".into(),
                hint: None,
            },
        ]);
        assert_eq!(
            d.to_string(),
            "hello.yaml:12:5: error: unknown key \"memroy\" in job \"align\"\n  \
             hint: did you mean \"memory\"?\nhello.yaml: error: cannot read the file"
        );
        assert_eq!(quoted_list(&["a", "b", "c"]), "\"a\", \"b\" and \"c\"");
        assert_eq!(quoted_list::<&str>(&[]), "none");
    }
}
