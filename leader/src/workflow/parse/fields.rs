//! The fields of a job: command, inputs, outputs, scatter, after, and the
//! placeholders they may hold.

use super::values::{check_pattern, parse_u64, valid_var};
use super::*;

impl Conv<'_> {
    // === job fields ===

    pub(super) fn command(&mut self, node: &Node, job: &str) -> Option<Command> {
        let empty_hint = "give it a shell script (command: echo hello) or an argument list \
                          (command: [echo, hello])";
        match &node.kind {
            Kind::Scalar { text, .. } => {
                if text.trim().is_empty() {
                    self.sink.error(
                        node.pos,
                        format!("job \"{job}\" has an empty command"),
                        empty_hint,
                    );
                    return None;
                }
                Some(Command::Shell(text.clone()))
            }
            Kind::Null => {
                self.sink.error(
                    node.pos,
                    format!("job \"{job}\" has an empty command"),
                    empty_hint,
                );
                None
            }
            Kind::Seq(items) => {
                if items.is_empty() {
                    self.sink.error(
                        node.pos,
                        format!("job \"{job}\" has an empty command"),
                        empty_hint,
                    );
                    return None;
                }
                let mut argv = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match &item.kind {
                        Kind::Scalar { text, .. } => argv.push(text.clone()),
                        Kind::Invalid => return None,
                        _ => {
                            self.sink.error(
                                item.pos,
                                format!(
                                    "argument {} of the command of job \"{job}\" is {}, not a \
                                     single value",
                                    i + 1,
                                    item.describe()
                                ),
                                "quote arguments that contain \", \" or start with [ or {, and \
                                 write an empty argument as \"\"",
                            );
                            return None;
                        }
                    }
                }
                if argv[0].trim().is_empty() {
                    self.sink.error(
                        items[0].pos,
                        format!("the command of job \"{job}\" starts with an empty program name"),
                        "the first item of an argument list is the program to run",
                    );
                    return None;
                }
                Some(Command::Argv(argv))
            }
            Kind::Map(_) => {
                self.sink.error(
                    node.pos,
                    format!(
                        "the command of job \"{job}\" must be a string or a list, not a mapping"
                    ),
                    "a command containing \": \" or starting with { must be quoted, or written \
                     as a block:\ncommand: |\n  echo a: b",
                );
                None
            }
            Kind::Invalid => None,
        }
    }

    pub(super) fn inputs(
        &mut self,
        node: &Node,
        job: &str,
        templated: &mut Vec<(String, Pos)>,
    ) -> Vec<RawInput> {
        let items: &[Node] = match &node.kind {
            Kind::Seq(items) => items,
            // One input needs no list around it.
            Kind::Scalar { .. } | Kind::Map(_) => std::slice::from_ref(node),
            _ => return Vec::new(),
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match &item.kind {
                Kind::Scalar { text, .. } => {
                    if let Some(spec) = self.local_input(text, None, false, item.pos, job) {
                        out.push(RawInput::Local {
                            spec,
                            path: text.clone(),
                            path_pos: item.pos,
                        });
                    }
                }
                Kind::Map(entries) => {
                    if let Some(input) = self.input_map(entries, item.pos, job, templated) {
                        out.push(input);
                    }
                }
                Kind::Invalid => {}
                _ => self.sink.error(
                    item.pos,
                    format!("an input of job \"{job}\" is {}", item.describe()),
                    "write a local file path (reads.txt), {path: FILE, as: NAME} or {from: \
                     JOB.OUTPUT}",
                ),
            }
        }
        out
    }

    pub(super) fn input_map(
        &mut self,
        entries: &[Entry],
        pos: Pos,
        job: &str,
        templated: &mut Vec<(String, Pos)>,
    ) -> Option<RawInput> {
        let context = format!("in an input of job \"{job}\"");
        self.duplicates(entries, |k| format!("duplicate key \"{k}\" {context}"));
        let has = |k: &str| entries.iter().find(|e| e.key == k);
        let (path, from) = (has("path"), has("from"));
        let allowed = match (path, from) {
            (Some(p), Some(_)) => {
                self.sink.error(
                    p.key_pos,
                    format!("an input of job \"{job}\" has both path: and from:"),
                    "path: names a local file, from: an output of another job; split it into two \
                     inputs",
                );
                return None;
            }
            (Some(_), None) => LOCAL_INPUT_KEYS,
            (None, Some(_)) => FROM_INPUT_KEYS,
            (None, None) => {
                self.sink.error(
                    pos,
                    format!("an input of job \"{job}\" has neither path: nor from:"),
                    "write {path: FILE} for a local file or {from: JOB.OUTPUT} for another job's \
                     output",
                );
                return None;
            }
        };
        let mut dest: Option<(String, Pos)> = None;
        let mut writable = false;
        for e in entries {
            match e.key.as_str() {
                "path" | "from" => {}
                "as" => {
                    dest = self
                        .string(&e.value, &format!("\"as\" {context}"))
                        .map(|s| (s, e.value.pos));
                }
                "writable" => {
                    writable = self
                        .boolean(&e.value, &format!("\"writable\" {context}"))
                        .unwrap_or(false);
                }
                _ => self.unknown_key(e, allowed, &context, None),
            }
        }
        if let Some((d, p)) = &dest {
            templated.push((d.clone(), *p));
        }
        if let Some(p) = path {
            let text = self.string(&p.value, &format!("\"path\" {context}"))?;
            let mut spec = self.local_input(&text, dest.as_ref(), writable, p.value.pos, job)?;
            spec.pos = pos;
            return Some(RawInput::Local {
                spec,
                path: text,
                path_pos: p.value.pos,
            });
        }
        let f = from?;
        let text = self.string(&f.value, &format!("\"from\" {context}"))?;
        self.no_placeholders(&text, f.value.pos, &format!("job \"{job}\""));
        let (src_job, output) =
            self.reference(&text, f.value.pos, &format!("\"from\" {context}"))?;
        let dest = match &dest {
            None => String::new(),
            Some((d, dpos)) => match clean_relative(d, true) {
                Ok(d) => d,
                Err(why) => {
                    self.sink.error(
                        *dpos,
                        format!("invalid as: \"{d}\" {context}: {why}"),
                        "as: is a directory inside the job's work directory, e.g. as: chunks/",
                    );
                    return None;
                }
            },
        };
        Some(RawInput::From {
            job: src_job,
            output,
            dest,
            writable,
            pos,
            ref_pos: f.value.pos,
        })
    }

    /// A local input: where it is staged (its `as:`, else its base name).
    pub(super) fn local_input(
        &mut self,
        path: &str,
        dest: Option<&(String, Pos)>,
        writable: bool,
        pos: Pos,
        job: &str,
    ) -> Option<InputSpec> {
        let context = format!("job \"{job}\"");
        if path.trim().is_empty() {
            self.sink.error(
                pos,
                format!("an input of {context} has an empty path"),
                "write the file's path, relative to the workflow file",
            );
            return None;
        }
        self.no_placeholders(path, pos, &context);
        let base = Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (dest, dest_pos) = match dest {
            None => (base.clone(), pos),
            // `as: dir/` keeps the file's name inside `dir`.
            Some((d, p)) if d.ends_with('/') => (format!("{d}{base}"), *p),
            Some((d, p)) => (d.clone(), *p),
        };
        if base.is_empty() && dest.is_empty() {
            self.sink.error(
                pos,
                format!("input \"{path}\" of {context} has no file name"),
                "name a file, not a directory; or say where to put it with as:",
            );
            return None;
        }
        let dest = match clean_relative(&dest, false) {
            Ok(d) => d,
            Err(why) => {
                self.sink.error(
                    dest_pos,
                    format!("invalid as: \"{dest}\" for input \"{path}\" of {context}: {why}"),
                    "as: is a path inside the job's work directory, e.g. as: ref.fa or as: data/",
                );
                return None;
            }
        };
        Some(InputSpec {
            // Resolved against the workflow's directory by `validate`.
            source: crate::workflow::spec::InputSource::Local(path.into()),
            dest,
            writable,
            pos,
        })
    }

    pub(super) fn outputs(&mut self, node: &Node, job: &str) -> (Vec<OutputDecl>, Vec<Vec<Pos>>) {
        let mut decls = Vec::new();
        let mut positions = Vec::new();
        let entries = match &node.kind {
            Kind::Map(e) => e,
            Kind::Seq(_) | Kind::Scalar { .. } => {
                self.sink.error(
                    node.pos,
                    format!(
                        "the outputs of job \"{job}\" must be a mapping from names to patterns"
                    ),
                    "give each output a name that other jobs can refer to, e.g. outputs: {counts: \
                     \"count_*.txt\"}",
                );
                return (decls, positions);
            }
            _ => return (decls, positions),
        };
        self.duplicates(entries, |k| {
            format!("duplicate output \"{k}\" in job \"{job}\"")
        });
        for e in entries {
            if check_job_name(&e.key).is_err() {
                self.sink.error(
                    e.key_pos,
                    format!("invalid output name \"{}\" in job \"{job}\"", e.key),
                    format!(
                        "output names use letters, digits, - and _ (other jobs write {job}.NAME), \
                         e.g. \"{}\"",
                        suggest_job_name(&e.key)
                    ),
                );
            }
            let what = format!("output \"{}\" of job \"{job}\"", e.key);
            let mut optional = false;
            let mut patterns: Vec<(String, Pos)> = Vec::new();
            match &e.value.kind {
                Kind::Scalar { .. } | Kind::Seq(_) => {
                    patterns = self.patterns(&e.value, &what);
                }
                Kind::Map(fields) => {
                    self.duplicates(fields, |k| format!("duplicate key \"{k}\" in {what}"));
                    let mut saw_patterns = false;
                    for f in fields {
                        match f.key.as_str() {
                            "patterns" => {
                                saw_patterns = true;
                                patterns = self.patterns(&f.value, &what);
                            }
                            "optional" => {
                                optional = self
                                    .boolean(&f.value, &format!("\"optional\" in {what}"))
                                    .unwrap_or(false);
                            }
                            _ => self.unknown_key(f, OUTPUT_KEYS, &format!("in {what}"), None),
                        }
                    }
                    if !saw_patterns {
                        self.sink.error(
                            e.value.pos,
                            format!("{what} has no patterns"),
                            "write {patterns: [\"*.txt\"], optional: true}",
                        );
                    }
                }
                Kind::Null => self.sink.error(
                    e.key_pos,
                    format!("{what} has no pattern"),
                    format!("write the file it collects, e.g. {}: result.txt", e.key),
                ),
                Kind::Invalid => {}
            }
            let (patterns, pos): (Vec<String>, Vec<Pos>) = patterns.into_iter().unzip();
            decls.push(OutputDecl {
                name: e.key.clone(),
                patterns,
                optional,
            });
            positions.push(pos);
        }
        (decls, positions)
    }

    /// One pattern or a list of them, each checked.
    pub(super) fn patterns(&mut self, node: &Node, what: &str) -> Vec<(String, Pos)> {
        let items: &[Node] = match &node.kind {
            Kind::Seq(items) => items,
            _ => std::slice::from_ref(node),
        };
        if items.is_empty() {
            self.sink.error(
                node.pos,
                format!("{what} has no patterns"),
                "list at least one file name or glob",
            );
        }
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let Some(p) = self.string(item, &format!("a pattern of {what}")) else {
                continue;
            };
            if let Err(why) = check_pattern(&p) {
                self.sink.error(
                    item.pos,
                    format!("invalid pattern \"{p}\" in {what}: {why}"),
                    "patterns are paths or globs relative to the job's work directory: \
                     result.txt, out/*.bam, part_*",
                );
                continue;
            }
            out.push((p, item.pos));
        }
        out
    }

    pub(super) fn scatter(&mut self, node: &Node, job: &str) -> Option<Scatter> {
        let example = "scatter: {sample: [a, b, c]} or scatter: {i: {range: 100}}";
        let entries = self.map(node, &format!("\"scatter\" in job \"{job}\""), example)?;
        let [e] = entries else {
            if entries.is_empty() {
                self.sink.error(
                    node.pos,
                    format!("the scatter of job \"{job}\" has no variable"),
                    format!("write {example}"),
                );
            } else {
                let names: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
                self.sink.error(
                    entries[1].key_pos,
                    format!(
                        "the scatter of job \"{job}\" has {} variables ({}); it takes exactly one",
                        names.len(),
                        quoted_list(&names)
                    ),
                    "to combine several, scatter over one list of combined values \
                     ([a-1, a-2, b-1]) and split them in the command",
                );
            }
            return None;
        };
        let var = e.key.as_str();
        if var == INDEX {
            self.sink.error(
                e.key_pos,
                format!("the scatter variable of job \"{job}\" can't be called \"index\""),
                "{{index}} is always the instance's number; choose another name",
            );
            return None;
        }
        if !valid_var(var) {
            self.sink.error(
                e.key_pos,
                format!("invalid scatter variable \"{var}\" in job \"{job}\""),
                "use a letter or _ followed by letters, digits, _ or -, e.g. sample",
            );
            return None;
        }
        let values = match &e.value.kind {
            Kind::Seq(items) => {
                let mut values = Vec::with_capacity(items.len());
                for item in items {
                    match &item.kind {
                        Kind::Scalar { text, .. } => values.push(text.clone()),
                        Kind::Invalid => return None,
                        _ => {
                            self.sink.error(
                                item.pos,
                                format!(
                                    "a value of the scatter of job \"{job}\" is {}, not a single \
                                     value",
                                    item.describe()
                                ),
                                "scatter values are strings or numbers; quote values that \
                                 contain \", \" or start with [ or {",
                            );
                            return None;
                        }
                    }
                }
                if values.is_empty() {
                    self.sink.error(
                        e.value.pos,
                        format!(
                            "the scatter of job \"{job}\" has no values, so the job would never run"
                        ),
                        format!("list at least one value: {var}: [a, b]; or remove the job"),
                    );
                    return None;
                }
                ScatterValues::List(values)
            }
            Kind::Map(fields) => {
                let mut n = None;
                for f in fields {
                    if f.key == "range" {
                        n = self.range(&f.value, job);
                    } else {
                        self.unknown_key(
                            f,
                            RANGE_KEYS,
                            &format!("in the scatter of job \"{job}\""),
                            None,
                        );
                    }
                }
                if fields.iter().all(|f| f.key != "range") {
                    self.sink.error(
                        e.value.pos,
                        format!(
                            "the scatter of job \"{job}\" needs a list of values or {{range: N}}"
                        ),
                        format!("write {example}"),
                    );
                }
                ScatterValues::Range(n?)
            }
            Kind::Invalid => return None,
            _ => {
                self.sink.error(
                    e.value.pos,
                    format!(
                        "the values of the scatter of job \"{job}\" must be a list or {{range: N}}, \
                         not {}",
                        e.value.describe()
                    ),
                    format!("write {example}"),
                );
                return None;
            }
        };
        Some(Scatter {
            var: var.to_string(),
            values,
        })
    }

    pub(super) fn range(&mut self, node: &Node, job: &str) -> Option<u64> {
        let what = format!("the scatter range of job \"{job}\"");
        let text = self.string(node, &what)?;
        match parse_u64(&text) {
            Ok(0) => {
                self.sink.error(
                    node.pos,
                    format!("{what} is 0, so the job would never run"),
                    "a range makes instances 0 to N-1; use a positive N, or remove the job",
                );
                None
            }
            Ok(n) if n > super::super::limits::MAX_SCATTER => {
                self.sink.error(
                    node.pos,
                    format!(
                        "{what} is {n}, more than the {} instances one job may have",
                        super::super::limits::MAX_SCATTER
                    ),
                    "give each instance a bigger share of the work, or split the job in several",
                );
                None
            }
            Ok(n) => Some(n),
            Err(why) => {
                self.sink.error(
                    node.pos,
                    format!("{what} must be a positive whole number: {why}"),
                    "write {range: 100} for instances 0 to 99",
                );
                None
            }
        }
    }

    pub(super) fn after(&mut self, node: &Node, job: &str) -> Vec<Ref> {
        let items: &[Node] = match &node.kind {
            Kind::Seq(items) => items,
            _ => std::slice::from_ref(node),
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if let Some(name) =
                self.string(item, &format!("an entry of \"after\" in job \"{job}\""))
            {
                if let Some((j, o)) = name.split_once('.') {
                    self.sink.error(
                        item.pos,
                        format!(
                            "after: takes job names, not outputs (\"{name}\") in job \"{job}\""
                        ),
                        format!(
                            "write after: [{j}], or take the output as an input: inputs: [{{from: \
                             {j}.{o}}}]"
                        ),
                    );
                    continue;
                }
                self.no_placeholders(&name, item.pos, &format!("job \"{job}\""));
                out.push(Ref {
                    name,
                    pos: item.pos,
                });
            }
        }
        out
    }

    /// `JOB.OUTPUT` or `JOB` (every output).
    pub(super) fn reference(
        &mut self,
        text: &str,
        pos: Pos,
        what: &str,
    ) -> Option<(String, Option<String>)> {
        let (job, output) = match text.split_once('.') {
            Some((j, o)) => (j, Some(o)),
            None => (text, None),
        };
        if job.is_empty() || output == Some("") {
            self.sink.error(
                pos,
                format!("{what} must name a job's output, not \"{text}\""),
                "write JOB.OUTPUT, e.g. split.parts (or just JOB for all its outputs)",
            );
            return None;
        }
        Some((job.to_string(), output.map(str::to_string)))
    }

    // === placeholders ===

    /// Checks the placeholders of a job's rendered fields against its scatter.
    pub(super) fn check_placeholders(&mut self, t: &JobTemplate, templated: &[(String, Pos)]) {
        let mut reported: Vec<&str> = Vec::new();
        for (text, pos) in templated {
            for (name, range) in placeholders(text) {
                if reported.contains(&name) {
                    continue;
                }
                if range.len() != name.len() + 4 {
                    // Renderers replace the exact text `{{name}}` only.
                    reported.push(name);
                    self.sink.error(
                        *pos,
                        format!(
                            "placeholder \"{}\" in job \"{}\" has spaces inside the braces",
                            &text[range], t.name
                        ),
                        format!("write it without spaces: {{{{{name}}}}}"),
                    );
                    continue;
                }
                match &t.scatter {
                    None => {
                        reported.push(name);
                        self.sink.error(
                            *pos,
                            format!(
                                "placeholder {{{{{name}}}}} in job \"{}\", which has no scatter",
                                t.name
                            ),
                            format!(
                                "placeholders stand for the values of a scatter; add scatter: \
                                 {{{name}: [a, b]}} to the job, or remove {{{{{name}}}}}"
                            ),
                        );
                    }
                    Some(s) if name != s.var && name != INDEX => {
                        reported.push(name);
                        let hint = did_you_mean(name, [s.var.as_str(), INDEX])
                            .map(|d| format!("{d} "))
                            .unwrap_or_default();
                        self.sink.error(
                            *pos,
                            format!("unknown placeholder {{{{{name}}}}} in job \"{}\"", t.name),
                            format!(
                                "{hint}this job's placeholders are {{{{{}}}}} (its scatter \
                                 variable) and {{{{index}}}}",
                                s.var
                            ),
                        );
                    }
                    Some(_) => {}
                }
            }
        }
    }

    /// Reports placeholders in a field that is never rendered.
    pub(super) fn no_placeholders(&mut self, text: &str, pos: Pos, context: &str) {
        if let Some((name, _)) = placeholders(text).next() {
            self.sink.error(
                pos,
                format!("placeholder {{{{{name}}}}} is not allowed here (in {context})"),
                format!("placeholders work only in the {PLACEHOLDER_FIELDS} of a scattered job"),
            );
        }
    }
}
