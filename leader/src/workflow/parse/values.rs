//! Single values (sizes, cores, booleans, names, paths) and key checks.

use super::*;

impl Conv<'_> {
    // === values ===

    /// A mapping's entries, or an error naming what was expected.
    pub(super) fn map<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        expected: &str,
    ) -> Option<&'n [Entry]> {
        match &node.kind {
            Kind::Map(e) => Some(e),
            Kind::Null | Kind::Invalid => None,
            _ => {
                self.sink.error(
                    node.pos,
                    format!("{what} must be a mapping, not {}", node.describe()),
                    format!("write {expected}"),
                );
                None
            }
        }
    }

    /// A single value as text.
    pub(super) fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        match &node.kind {
            Kind::Scalar { text, .. } => Some(text.clone()),
            Kind::Invalid => None,
            Kind::Null => {
                self.sink.error(
                    node.pos,
                    format!("{what} has no value"),
                    "write a value, or \"\" for an empty string",
                );
                None
            }
            _ => {
                self.sink.error(
                    node.pos,
                    format!("{what} must be a single value, not {}", node.describe()),
                    "quote values that contain \": \" or start with [ or {",
                );
                None
            }
        }
    }

    pub(super) fn cores(&mut self, node: &Node, what: &str) -> Option<u32> {
        let text = self.typed(
            node,
            what,
            "a number of cores (2, 0.5) or millicores (500m)",
        )?;
        units::parse_cores(&text)
            .map_err(|e| self.unit_error(node.pos, what, &e))
            .ok()
    }

    pub(super) fn size(&mut self, node: &Node, what: &str) -> Option<u64> {
        let text = self.typed(node, what, "a size (512Mi, 2G)")?;
        units::parse_size(&text)
            .map_err(|e| self.unit_error(node.pos, what, &e))
            .ok()
    }

    /// `units` errors read "PROBLEM; HOW TO FIX": split into message and hint.
    pub(super) fn unit_error(&mut self, pos: Pos, what: &str, e: &str) {
        match e.split_once("; ") {
            Some((problem, fix)) => self.sink.error(pos, format!("{what}: {problem}"), fix),
            None => self.sink.error_only(pos, format!("{what}: {e}")),
        }
    }

    pub(super) fn memory(&mut self, node: &Node, what: &str) -> Option<u64> {
        let m = self.size(node, what)?;
        if m == 0 {
            self.sink.error(
                node.pos,
                format!("{what} is 0; a job needs some memory"),
                "ask for what the job needs, e.g. memory: 512Mi",
            );
            return None;
        }
        Some(m)
    }

    pub(super) fn uint(&mut self, node: &Node, what: &str) -> Option<u32> {
        let text = self.typed(node, what, "a whole number")?;
        match parse_u64(&text).and_then(|n| u32::try_from(n).map_err(|_| "too large".to_string())) {
            Ok(n) => Some(n),
            Err(why) => {
                self.sink.error(
                    node.pos,
                    format!("{what} must be a whole number, 0 or more: {why}"),
                    "write a whole number such as 0, 1 or 2",
                );
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, node: &Node, what: &str) -> Option<bool> {
        let text = self.typed(node, what, "true or false")?;
        match text.as_str() {
            "true" | "True" | "TRUE" => Some(true),
            "false" | "False" | "FALSE" => Some(false),
            _ => {
                self.sink.error(
                    node.pos,
                    format!("{what} must be true or false, not \"{text}\""),
                    "write true or false (yes/no and on/off are not booleans here)",
                );
                None
            }
        }
    }

    pub(super) fn time_limit(&mut self, node: &Node, what: &str) -> Option<Duration> {
        let text = self.typed(node, what, "a duration (30s, 10m, 1h30m)")?;
        match units::parse_duration(&text) {
            Ok(d) if d.is_zero() => {
                self.sink.error(
                    node.pos,
                    format!("{what} is zero, so the job could never finish"),
                    "give the job time to run (time_limit: 10m), or remove time_limit",
                );
                None
            }
            Ok(d) => match super::super::limits::check_time_limit(d) {
                Ok(d) => Some(d),
                Err(why) => {
                    self.sink.error(
                        node.pos,
                        format!("{what}: {why}"),
                        "give a realistic limit (time_limit: 48h), or remove time_limit",
                    );
                    None
                }
            },
            Err(e) => {
                self.unit_error(node.pos, what, &e);
                None
            }
        }
    }

    pub(super) fn image(&mut self, node: &Node, what: &str) -> Option<String> {
        let image = self.string(node, what)?;
        if image.trim().is_empty() || image.chars().any(char::is_whitespace) {
            self.sink.error(
                node.pos,
                format!("{what} \"{image}\" is not an image name"),
                "write an image such as docker://ubuntu:24.04 (no spaces)",
            );
            return None;
        }
        Some(image)
    }

    /// Environment variables, each value with its position.
    pub(super) fn env(&mut self, node: &Node, context: &str) -> BTreeMap<String, (String, Pos)> {
        let mut env = BTreeMap::new();
        // `env: [NAME=value]` (Docker Compose style) is a common first try.
        let example = match &node.kind {
            Kind::Seq(items) => items.iter().find_map(|i| match &i.kind {
                Kind::Scalar { text, .. } => text
                    .split_once('=')
                    .map(|(k, v)| format!("env: {{{k}: {v}}}")),
                _ => None,
            }),
            _ => None,
        };
        let example = example.unwrap_or_else(|| "env: {LANG: C, THREADS: \"4\"}".into());
        let Some(entries) = self.map(
            node,
            &format!("\"env\" in {context}"),
            &format!("NAME: value pairs, e.g. {example}"),
        ) else {
            return env;
        };
        self.duplicates(entries, |k| {
            format!("duplicate variable \"{k}\" in the env of {context}")
        });
        for e in entries {
            if !valid_env_name(&e.key) {
                self.sink.error(
                    e.key_pos,
                    format!(
                        "invalid environment variable name \"{}\" in {context}",
                        e.key
                    ),
                    "use letters, digits and _, not starting with a digit",
                );
                continue;
            }
            let what = format!("environment variable \"{}\" in {context}", e.key);
            if let Some(v) = self.string(&e.value, &what) {
                env.insert(e.key.clone(), (v, e.value.pos));
            }
        }
        env
    }

    /// A single value meant to be read as `expected`.
    pub(super) fn typed(&mut self, node: &Node, what: &str, expected: &str) -> Option<String> {
        match &node.kind {
            Kind::Scalar { text, .. } => Some(text.clone()),
            Kind::Invalid | Kind::Null => None,
            _ => {
                self.sink.error(
                    node.pos,
                    format!("{what} must be {expected}, not {}", node.describe()),
                    format!("write a single value: {expected}"),
                );
                None
            }
        }
    }

    // === keys ===

    pub(super) fn unknown_key(
        &mut self,
        e: &Entry,
        allowed: &[&str],
        context: &str,
        hint: Option<String>,
    ) {
        let synonym = SYNONYMS
            .iter()
            .find(|(from, to)| from.eq_ignore_ascii_case(&e.key) && allowed.contains(to))
            .map(|(_, to)| format!("did you mean \"{to}\"?"));
        let hint = hint
            .or(synonym)
            .or_else(|| did_you_mean(&e.key, allowed.iter().copied()))
            .unwrap_or_else(|| format!("the keys allowed here are {}", quoted_list(allowed)));
        self.sink.error(
            e.key_pos,
            format!("unknown key \"{}\" {context}", e.key),
            hint,
        );
    }

    /// Reports keys given twice (YAML forbids it; most parsers keep the last).
    pub(super) fn duplicates(&mut self, entries: &[Entry], message: impl Fn(&str) -> String) {
        if entries.len() < 2 {
            return;
        }
        let mut seen: HashMap<&str, Pos> = HashMap::with_capacity(entries.len());
        for e in entries {
            if let Some(first) = seen.get(e.key.as_str()) {
                self.sink.error(
                    e.key_pos,
                    message(&e.key),
                    format!("it is already defined at {first}; remove or rename one of them"),
                );
            } else {
                seen.insert(&e.key, e.key_pos);
            }
        }
    }
}

// === names and paths ===

pub(super) fn default_name(source: &Path) -> String {
    let stem = source
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let name = name.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if name.is_empty() {
        "workflow".into()
    } else {
        name.into()
    }
}

pub(super) fn valid_workflow_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

pub(super) fn valid_export_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
}

/// Job (and output) names: letters, digits, `-`, `_`; starting and ending
/// with a letter or digit; at most 63 characters: usable in a Kubernetes
/// name once lowercased with `_` written as `-`.
pub(crate) fn check_job_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("it is empty".into());
    }
    if s.len() > 63 {
        return Err(format!("it has {} characters, more than 63", s.len()));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!("it contains {c:?}"));
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge_ok(s.chars().next()) || !edge_ok(s.chars().last()) {
        return Err("it must start and end with a letter or digit".into());
    }
    Ok(())
}

pub(super) fn suggest_job_name(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    out = out
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string();
    out.truncate(63);
    if out.is_empty() { "job1".into() } else { out }
}

pub(super) fn valid_var(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

pub(super) fn valid_env_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

pub(super) fn parse_u64(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if t.starts_with('-') {
        return Err(format!("\"{t}\" is negative"));
    }
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("\"{t}\" is not a whole number"));
    }
    t.parse::<u64>()
        .map_err(|_| format!("\"{t}\" is too large"))
}

/// Normalises a path relative to the work directory: no leading `/`, no
/// `..`, `.` and empty components dropped. An empty result is allowed only
/// for directories (the work directory itself).
pub(crate) fn clean_relative(path: &str, directory: bool) -> Result<String, String> {
    if path.starts_with('/') {
        return Err("it is absolute; give a path inside the work directory".into());
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("it leaves the work directory (..)".into()),
            p => parts.push(p),
        }
    }
    if parts.is_empty() && !directory {
        return Err("it names no file".into());
    }
    Ok(parts.join("/"))
}

/// Checks an output pattern: relative, inside the work directory, a valid
/// glob once placeholders are filled in.
pub(super) fn check_pattern(p: &str) -> Result<(), String> {
    if p.trim().is_empty() {
        return Err("it is empty".into());
    }
    if p.starts_with('/') {
        return Err("it is absolute".into());
    }
    if p.split('/').any(|c| c == "..") {
        return Err("it leaves the work directory (..)".into());
    }
    // Any value will do for the syntax check.
    let mut filled = String::with_capacity(p.len());
    let mut rest = 0;
    for (_, range) in placeholders(p) {
        filled.push_str(&p[rest..range.start]);
        filled.push('x');
        rest = range.end;
    }
    filled.push_str(&p[rest..]);
    globset::Glob::new(&filled)
        .map(|_| ())
        .map_err(|e| e.kind().to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn job_names() {
        let ok = [
            "a",
            "align",
            "align_reads",
            "align-2",
            "A1",
            "x".repeat(63).leak(),
        ];
        for n in ok {
            assert_eq!(check_job_name(n), Ok(()), "{n}");
        }
        let bad = [
            ("", "empty"),
            ("a b", "' '"),
            ("a.b", "'.'"),
            ("-a", "start and end"),
            ("a_", "start and end"),
            ("é", "'é'"),
            (&*"x".repeat(64).leak(), "more than 63"),
        ];
        for (n, why) in bad {
            let err = check_job_name(n).expect_err(n);
            assert!(err.contains(why), "{n}: {err}");
        }
        assert_eq!(suggest_job_name("align reads!"), "align_reads");
    }

    #[test]
    fn relative_paths() {
        let cases = [
            ("ref.fa", false, Ok("ref.fa")),
            ("./data//ref.fa", false, Ok("data/ref.fa")),
            ("chunks/", true, Ok("chunks")),
            ("", true, Ok("")),
            (".", true, Ok("")),
            ("", false, Err("names no file")),
            ("/etc/passwd", false, Err("absolute")),
            ("a/../../b", false, Err("..")),
        ];
        for (path, dir, want) in cases {
            match (clean_relative(path, dir), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, w, "{path}"),
                (Err(got), Err(w)) => assert!(got.contains(w), "{path}: {got}"),
                (got, want) => panic!("{path}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn patterns_and_names() {
        assert_eq!(check_pattern("part_*"), Ok(()));
        assert_eq!(check_pattern("count_{{sample}}.txt"), Ok(()));
        assert_eq!(check_pattern("out/{a,b}.txt"), Ok(()));
        assert!(check_pattern("[").is_err());
        assert!(check_pattern("/abs").is_err());
        assert!(check_pattern("../x").is_err());
        assert_eq!(default_name(Path::new("dir/my flow.yaml")), "my-flow");
        assert_eq!(default_name(Path::new("-.yaml")), "workflow");
        assert!(valid_workflow_name("hello-1.2"));
        assert!(!valid_workflow_name("hello world"));
        assert!(valid_var("sample_1") && valid_var("_x") && !valid_var("1x"));
        assert!(valid_env_name("LANG") && !valid_env_name("A-B"));
        assert_eq!(parse_u64("12"), Ok(12));
        assert!(parse_u64("-1").unwrap_err().contains("negative"));
        assert!(parse_u64("1.5").unwrap_err().contains("whole"));
    }
}
