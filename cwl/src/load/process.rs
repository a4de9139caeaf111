//! Normalization and validation of process objects (CommandLineTool,
//! ExpressionTool, Workflow, Operation) and of the records they hold.
//!
//! The field sets below follow the salad schema of the v1.2 specification
//! (`Process.yml`, `CommandLineTool.yml`, `Workflow.yml`, `Operation.yml`);
//! fields added after v1.0 are checked against the document's version.

use std::path::Path;

use super::fields::K;
use super::node::{Entry, Node, Pos, V};
use super::requirements::V10_RENAMES;
use super::uri;
use super::{Loader, Version};

const PROCESS_COMMON: &[&str] = &[
    "id",
    "class",
    "label",
    "doc",
    "inputs",
    "outputs",
    "requirements",
    "hints",
    "cwlVersion",
    "intent",
];
const CLT_FIELDS: &[&str] = &[
    "baseCommand",
    "arguments",
    "stdin",
    "stdout",
    "stderr",
    "successCodes",
    "temporaryFailCodes",
    "permanentFailCodes",
];
const INPUT_FIELDS: &[&str] = &[
    "id",
    "label",
    "doc",
    "secondaryFiles",
    "streamable",
    "format",
    "loadContents",
    "loadListing",
    "default",
    "type",
    "inputBinding",
];
const OUTPUT_FIELDS: &[&str] = &[
    "id",
    "label",
    "doc",
    "secondaryFiles",
    "streamable",
    "format",
    "type",
    "outputBinding",
    "outputSource",
    "linkMerge",
    "pickValue",
];
const BINDING_FIELDS: &[&str] = &[
    "loadContents",
    "position",
    "prefix",
    "separate",
    "itemSeparator",
    "valueFrom",
    "shellQuote",
];
const OUTPUT_BINDING_FIELDS: &[&str] = &["glob", "loadContents", "loadListing", "outputEval"];
/// The values of `loadListing`.
pub(crate) const LOAD_LISTING: &[&str] = &["no_listing", "shallow_listing", "deep_listing"];

/// The kinds of process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    CommandLineTool,
    ExpressionTool,
    Workflow,
    Operation,
}

impl Class {
    fn parse(s: &str) -> Option<Class> {
        match s {
            "CommandLineTool" => Some(Class::CommandLineTool),
            "ExpressionTool" => Some(Class::ExpressionTool),
            "Workflow" => Some(Class::Workflow),
            "Operation" => Some(Class::Operation),
            _ => None,
        }
    }
}

/// Where a parameter is declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Io {
    Input,
    Output,
}

/// What normalizing a process needs to know about it.
#[derive(Clone, Debug)]
pub(crate) struct Ctx {
    /// The process's absolute id, the scope of the ids inside it.
    pub id: String,
    pub version: Version,
    pub class: Class,
}

/// The `file://` URI of the file a node was read from.
pub(crate) fn file_uri(pos: &Pos) -> String {
    uri::path_to_uri(Path::new(&*pos.file))
}

/// Whether a string is a CWL expression or contains a parameter reference.
pub(crate) fn is_expression(s: &str) -> bool {
    s.contains("$(") || s.contains("${")
}

/// The entries of a mapping node (empty for anything else).
pub(crate) fn into_entries(n: Node) -> Vec<Entry> {
    match n.v {
        V::Map(e) => e,
        _ => Vec::new(),
    }
}

/// Removes and returns the entry `key`.
pub(crate) fn take(entries: &mut Vec<Entry>, key: &str) -> Option<Entry> {
    let i = entries.iter().position(|e| e.key == key)?;
    Some(entries.remove(i))
}

impl Loader {
    /// Normalizes and checks one process object. `default_id` is its id if
    /// it has none; `top` is set for the processes of a file (not inline).
    pub(crate) fn normalize_process(
        &mut self,
        raw: Node,
        default_id: &str,
        inherited: Version,
        top: bool,
    ) -> Option<Node> {
        let pos = raw.pos.clone();
        if !raw.is_map() {
            self.error(
                &pos,
                format!("a process must be a mapping, not {}", raw.describe()),
                Some("a CWL document starts with `cwlVersion: v1.2` and `class: CommandLineTool` or `class: Workflow`".into()),
            );
            return None;
        }
        let version = match raw.get("cwlVersion") {
            Some(v) => match v.as_str().and_then(Version::parse) {
                Some(ver) => ver,
                None => {
                    self.error(
                        &v.pos,
                        format!("unknown cwlVersion `{}`", v.as_str().unwrap_or("?")),
                        Some("write `cwlVersion: v1.2`".into()),
                    );
                    inherited
                }
            },
            None => inherited,
        };
        let class = match raw.get("class") {
            None => {
                self.error(
                    &pos,
                    "the process has no `class`",
                    Some(
                        "add `class: CommandLineTool`, `ExpressionTool`, `Workflow` or `Operation`"
                            .into(),
                    ),
                );
                return None;
            }
            Some(c) => match c.as_str().and_then(Class::parse) {
                Some(Class::Operation) if version < Version::V1_2 => {
                    self.error(
                        &c.pos,
                        "`class: Operation` needs cwlVersion v1.2",
                        Some("write `cwlVersion: v1.2`".into()),
                    );
                    return None;
                }
                Some(cl) => cl,
                None => {
                    let s = c.as_str().unwrap_or("");
                    let all = ["CommandLineTool", "ExpressionTool", "Workflow", "Operation"];
                    let hint = uri::did_you_mean(s, all).map_or_else(
                        || "use CommandLineTool, ExpressionTool, Workflow or Operation".to_string(),
                        |m| format!("did you mean `{m}`?"),
                    );
                    self.error(&c.pos, format!("unknown process class `{s}`"), Some(hint));
                    return None;
                }
            },
        };
        let id = match raw.get("id") {
            Some(n) => match n.as_str() {
                Some(s) => uri::resolve_id(&file_uri(&n.pos), s),
                None => {
                    self.expect(n, &[K::Str], "id");
                    default_id.to_string()
                }
            },
            None => default_id.to_string(),
        };
        let ctx = Ctx {
            id: id.clone(),
            version,
            class,
        };
        self.register_types(&raw, &id);

        let mut allowed: Vec<&str> = PROCESS_COMMON.to_vec();
        let mut required = vec!["inputs", "outputs"];
        match class {
            Class::CommandLineTool => allowed.extend_from_slice(CLT_FIELDS),
            Class::ExpressionTool => {
                allowed.push("expression");
                required.push("expression");
            }
            Class::Workflow => {
                allowed.push("steps");
                required.push("steps");
            }
            Class::Operation => {}
        }
        let class_name = format!("{class:?}");
        let mut entries = into_entries(raw);
        self.check_fields(&mut entries, &pos, &class_name, &allowed, &required);
        if version < Version::V1_2
            && let Some(e) = entries.iter().find(|e| e.key == "intent")
        {
            let p = e.key_pos.clone();
            self.error(
                &p,
                "`intent` needs cwlVersion v1.2",
                Some("write `cwlVersion: v1.2`".into()),
            );
        }

        let mut out = Node::map(&pos);
        out.set("class", Node::str(&pos, class_name.clone()));
        out.set("id", Node::str(&pos, id.clone()));
        out.set("cwlVersion", Node::str(&pos, "v1.2"));
        take(&mut entries, "cwlVersion");
        take(&mut entries, "class");
        take(&mut entries, "id");
        for k in ["label", "doc", "intent"] {
            if let Some(e) = take(&mut entries, k) {
                self.check_label_doc(k, &e.value);
                out.set(k, e.value);
            }
        }
        let mut requirements = match take(&mut entries, "requirements") {
            Some(e) => self.norm_requirements(e.value, &ctx, false),
            None => Vec::new(),
        };
        let mut hints = match take(&mut entries, "hints") {
            Some(e) => self.norm_requirements(e.value, &ctx, true),
            None => Vec::new(),
        };
        if version == Version::V1_0 && top {
            let mut ll = Node::map(&pos);
            ll.set("class", Node::str(&pos, "LoadListingRequirement"));
            ll.set("loadListing", Node::str(&pos, "deep_listing"));
            let mut na = Node::map(&pos);
            na.set("class", Node::str(&pos, "NetworkAccess"));
            na.set("networkAccess", Node::new(pos.clone(), V::Bool(true)));
            // cwltool's updater order: LoadListingRequirement, then NetworkAccess.
            hints.insert(0, na);
            hints.insert(0, ll);
        }
        let mut inputs = match take(&mut entries, "inputs") {
            Some(e) => self.norm_params(e.value, &ctx, Io::Input),
            None => Vec::new(),
        };
        let mut outputs = match take(&mut entries, "outputs") {
            Some(e) => self.norm_params(e.value, &ctx, Io::Output),
            None => Vec::new(),
        };
        self.check_unique(inputs.iter(), "id", "the inputs", Io::Input);
        self.check_unique(outputs.iter(), "id", "the outputs", Io::Output);

        let mut extra: Vec<(String, Node)> = Vec::new();
        match class {
            Class::CommandLineTool => {
                if let Some(e) = take(&mut entries, "baseCommand") {
                    let v = match e.value.v {
                        V::Str(_) => Some(Node::new(e.value.pos.clone(), V::Seq(vec![e.value]))),
                        V::Seq(ref items) => {
                            for i in items.clone() {
                                self.expect(&i, &[K::Str], "baseCommand");
                            }
                            Some(e.value)
                        }
                        V::Null => None,
                        _ => {
                            self.expect(&e.value, &[K::Str, K::Seq], "baseCommand");
                            None
                        }
                    };
                    if let Some(v) = v {
                        extra.push(("baseCommand".into(), v));
                    }
                }
                if let Some(e) = take(&mut entries, "arguments") {
                    let p = e.value.pos.clone();
                    if self.expect(&e.value, &[K::Seq, K::Null], "arguments")
                        && let V::Seq(items) = e.value.v
                    {
                        let mut args = Vec::new();
                        for a in items {
                            match a.v {
                                V::Str(_) => {
                                    let mut m = Node::map(&a.pos);
                                    m.set("valueFrom", a);
                                    args.push(m);
                                }
                                V::Map(_) => args.push(self.norm_binding(a, &ctx, "argument")),
                                _ => {
                                    self.error(
                                        &a.pos,
                                        format!(
                                            "an entry of `arguments` must be a string or a binding, not {}",
                                            a.describe()
                                        ),
                                        Some("quote it: `\"1\"`".into()),
                                    );
                                }
                            }
                        }
                        extra.push(("arguments".into(), Node::new(p, V::Seq(args))));
                    }
                }
                for k in ["stdin", "stdout", "stderr"] {
                    if let Some(e) = take(&mut entries, k)
                        && self.expect(&e.value, &[K::Str, K::Null], k)
                        && !e.value.is_null()
                    {
                        extra.push((k.into(), e.value));
                    }
                }
                for k in ["successCodes", "temporaryFailCodes", "permanentFailCodes"] {
                    if let Some(e) = take(&mut entries, k)
                        && self.expect(&e.value, &[K::Seq], k)
                    {
                        for i in e.value.items().unwrap_or(&[]).to_vec() {
                            self.expect(&i, &[K::Int], k);
                        }
                        extra.push((k.into(), e.value));
                    }
                }
                self.std_streams(&mut outputs, &mut inputs, &mut extra, &pos, &id);
            }
            Class::ExpressionTool => {
                if let Some(e) = take(&mut entries, "expression") {
                    self.expect(&e.value, &[K::Expr], "expression");
                    extra.push(("expression".into(), e.value));
                }
            }
            Class::Workflow => {
                if let Some(e) = take(&mut entries, "steps") {
                    let p = e.value.pos.clone();
                    let classes: Vec<String> = requirements
                        .iter()
                        .chain(hints.iter())
                        .filter_map(|r| r.get_str("class").map(str::to_string))
                        .collect();
                    self.req_stack.push(classes);
                    let steps = self.norm_steps(e.value, &ctx);
                    self.req_stack.pop();
                    extra.push(("steps".into(), Node::new(p, V::Seq(steps))));
                }
            }
            Class::Operation => {}
        }
        if version == Version::V1_0 {
            for r in requirements.iter_mut().chain(hints.iter_mut()) {
                if let Some(c) = r.get_str("class")
                    && let Some((_, to)) = V10_RENAMES.iter().find(|(from, _)| *from == c)
                {
                    let p = r.pos.clone();
                    r.set("class", Node::str(&p, *to));
                }
            }
        }
        out.set("requirements", Node::new(pos.clone(), V::Seq(requirements)));
        out.set("hints", Node::new(pos.clone(), V::Seq(hints)));
        out.set("inputs", Node::new(pos.clone(), V::Seq(inputs)));
        out.set("outputs", Node::new(pos.clone(), V::Seq(outputs)));
        for (k, v) in extra {
            out.set(&k, v);
        }
        for e in Self::extensions(entries) {
            out.set(&e.key, e.value);
        }
        if class == Class::Workflow {
            self.check_workflow(&mut out);
        }
        Some(out)
    }

    /// Rule 3 of DESIGN.md: `stdout`/`stderr` outputs become Files globbing
    /// the stream's file; a `stdin` input sets the tool's `stdin`.
    fn std_streams(
        &mut self,
        outputs: &mut [Node],
        inputs: &mut [Node],
        extra: &mut Vec<(String, Node)>,
        pos: &Pos,
        tool_id: &str,
    ) {
        for o in outputs.iter_mut() {
            let Some(t) = o.get_str("type").map(str::to_string) else {
                continue;
            };
            if t != "stdout" && t != "stderr" {
                continue;
            }
            let p = o.pos.clone();
            if o.get("outputBinding").is_some() {
                self.error(
                    &p,
                    format!("an output of type `{t}` cannot have an `outputBinding`"),
                    Some(
                        "remove the outputBinding; the file captured from the stream is the output"
                            .into(),
                    ),
                );
            }
            let name = match extra.iter().find(|(k, _)| *k == t) {
                Some((_, v)) => v.as_str().unwrap_or("").to_string(),
                None => {
                    let name = format!("{t}-{}", random_name(tool_id, &t));
                    extra.push((t.clone(), Node::str(pos, name.clone())));
                    name
                }
            };
            o.set("type", Node::str(&p, "File"));
            let mut ob = Node::map(&p);
            ob.set("glob", Node::str(&p, name));
            o.set("outputBinding", ob);
        }
        for i in inputs.iter_mut() {
            if i.get_str("type") == Some("stdin") {
                let p = i.pos.clone();
                i.set("type", Node::str(&p, "File"));
                let id = i.get_str("id").unwrap_or("");
                if extra.iter().any(|(k, _)| k == "stdin") {
                    self.error(
                        &p,
                        "a tool with a `stdin` input cannot also set `stdin`",
                        None,
                    );
                }
                extra.push((
                    "stdin".into(),
                    Node::str(&p, format!("$(inputs.{}.path)", super::shortname(id))),
                ));
            }
        }
        // Keep the inputs' `stdin` type readable for later parts as a File.
    }

    /// Reports duplicate ids among `items`.
    pub(crate) fn check_unique<'a>(
        &mut self,
        items: impl Iterator<Item = &'a Node>,
        key: &str,
        what: &str,
        _io: Io,
    ) {
        let mut seen: Vec<(&str, &Pos)> = Vec::new();
        for n in items {
            if let Some(id) = n.get_str(key) {
                if let Some((_, first)) = seen.iter().find(|(s, _)| *s == id) {
                    let line = first.line;
                    self.error(
                        &n.pos,
                        format!(
                            "duplicate id `{}` in {what} (first at line {line})",
                            super::shortname(id)
                        ),
                        Some("give each input, output and step its own name".into()),
                    );
                } else {
                    seen.push((id, &n.pos));
                }
            }
        }
    }

    /// Normalizes `inputs` or `outputs`.
    fn norm_params(&mut self, node: Node, ctx: &Ctx, io: Io) -> Vec<Node> {
        let what = if io == Io::Input { "inputs" } else { "outputs" };
        let items = self.list_form(node, "id", Some("type"), what);
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if let Some(p) = self.norm_param(item, ctx, io) {
                out.push(p);
            }
        }
        out
    }

    fn norm_param(&mut self, raw: Node, ctx: &Ctx, io: Io) -> Option<Node> {
        let pos = raw.pos.clone();
        if !raw.is_map() {
            self.error(
                &pos,
                format!("a parameter must be a mapping, not {}", raw.describe()),
                Some("write `name: type` or `- id: name\n    type: type`".into()),
            );
            return None;
        }
        let mut allowed: Vec<&str> = Vec::new();
        let what;
        match io {
            Io::Input => {
                what = "an input parameter";
                allowed.extend(
                    INPUT_FIELDS
                        .iter()
                        .filter(|f| **f != "inputBinding" || ctx.class != Class::Operation),
                );
            }
            Io::Output => {
                what = "an output parameter";
                allowed.extend_from_slice(&OUTPUT_FIELDS[..7]);
                match ctx.class {
                    Class::CommandLineTool => allowed.push("outputBinding"),
                    Class::Workflow => {
                        allowed.extend_from_slice(&["outputSource", "linkMerge", "pickValue"]);
                        if ctx.version == Version::V1_0 {
                            allowed.push("outputBinding");
                        }
                    }
                    _ => {}
                }
            }
        }
        let mut entries = into_entries(raw);
        self.check_fields(&mut entries, &pos, what, &allowed, &["id", "type"]);
        let id = match take(&mut entries, "id") {
            Some(e) => match e.value.as_str() {
                Some(s) => uri::resolve_id(&ctx.id, s),
                None => {
                    self.expect(&e.value, &[K::Str], "id");
                    return None;
                }
            },
            None => return None,
        };
        let mut out = Node::map(&pos);
        out.set("id", Node::str(&pos, id.clone()));
        for e in std::mem::take(&mut entries) {
            let Entry {
                key,
                key_pos,
                value,
            } = e;
            let v = match key.as_str() {
                "type" => Some(self.norm_type(value, &id, ctx, io)),
                "label" | "doc" => {
                    self.check_label_doc(&key, &value);
                    Some(value)
                }
                "secondaryFiles" => self.norm_secondary(value, ctx),
                "streamable" | "loadContents" => {
                    self.expect(&value, &[K::Bool, K::Null], &key);
                    Some(value)
                }
                "loadListing" => {
                    if ctx.version < Version::V1_1 {
                        self.error(
                            &key_pos,
                            "`loadListing` needs cwlVersion v1.1 or later",
                            Some("write `cwlVersion: v1.2`".into()),
                        );
                    }
                    self.expect_enum(&value, LOAD_LISTING, "loadListing");
                    Some(value)
                }
                "format" => Some(self.norm_format(value)),
                "default" => Some(self.resolve_files(value)),
                "inputBinding" => {
                    if ctx.class == Class::CommandLineTool {
                        Some(self.norm_binding(value, ctx, "inputBinding"))
                    } else {
                        Some(self.norm_input_binding(value, ctx))
                    }
                }
                "outputBinding" => {
                    if ctx.class == Class::Workflow {
                        // v1.0 allowed it on workflow outputs; it means nothing.
                        None
                    } else {
                        Some(self.norm_output_binding(value, ctx))
                    }
                }
                "outputSource" => {
                    self.expect(&value, &[K::Str, K::Seq], "outputSource");
                    Some(value)
                }
                "linkMerge" => {
                    self.expect_enum(&value, &["merge_nested", "merge_flattened"], "linkMerge");
                    Some(value)
                }
                "pickValue" => {
                    if ctx.version < Version::V1_2 {
                        self.error(
                            &key_pos,
                            "`pickValue` needs cwlVersion v1.2",
                            Some("write `cwlVersion: v1.2`".into()),
                        );
                    }
                    self.expect_enum(
                        &value,
                        &["first_non_null", "the_only_non_null", "all_non_null"],
                        "pickValue",
                    );
                    Some(value)
                }
                k if uri::has_scheme(k) => Some(value),
                _ => None,
            };
            if let Some(v) = v {
                out.set(&key, v);
            }
        }
        Some(out)
    }

    /// CommandLineBinding (an `inputBinding` of a tool, or an argument).
    pub(crate) fn norm_binding(&mut self, raw: Node, ctx: &Ctx, what: &str) -> Node {
        let pos = raw.pos.clone();
        if raw.is_null() {
            return Node::map(&pos);
        }
        if !self.expect(&raw, &[K::Map], what) {
            return Node::map(&pos);
        }
        let mut entries = into_entries(raw);
        self.check_fields(&mut entries, &pos, what, BINDING_FIELDS, &[]);
        for e in &entries {
            match e.key.as_str() {
                "loadContents" | "separate" | "shellQuote" => {
                    self.expect(&e.value, &[K::Bool], &e.key);
                }
                "position" => {
                    if ctx.version < Version::V1_1 {
                        self.expect(&e.value, &[K::Int], "position");
                    } else {
                        self.expect(&e.value, &[K::Int, K::Expr], "position");
                    }
                }
                "prefix" | "itemSeparator" | "valueFrom" => {
                    self.expect(&e.value, &[K::Str, K::Null], &e.key);
                }
                _ => {}
            }
        }
        Node::new(pos, V::Map(entries))
    }

    /// InputBinding of a workflow or expression tool input (only
    /// `loadContents`; v1.0 documents may carry others, which are dropped).
    fn norm_input_binding(&mut self, raw: Node, ctx: &Ctx) -> Node {
        let pos = raw.pos.clone();
        if raw.is_null() || !self.expect(&raw, &[K::Map], "inputBinding") {
            return Node::map(&pos);
        }
        let mut entries = into_entries(raw);
        if ctx.version == Version::V1_0 {
            entries.retain(|e| {
                if e.key != "loadContents" {
                    tracing::warn!(
                        "{}: ignoring `{}`, which is not valid in a {:?} inputBinding",
                        e.key_pos,
                        e.key,
                        ctx.class
                    );
                }
                e.key == "loadContents"
            });
        }
        self.check_fields(&mut entries, &pos, "inputBinding", &["loadContents"], &[]);
        Node::new(pos, V::Map(entries))
    }

    pub(crate) fn norm_output_binding(&mut self, raw: Node, ctx: &Ctx) -> Node {
        let pos = raw.pos.clone();
        if raw.is_null() || !self.expect(&raw, &[K::Map], "outputBinding") {
            return Node::map(&pos);
        }
        let mut entries = into_entries(raw);
        self.check_fields(
            &mut entries,
            &pos,
            "outputBinding",
            OUTPUT_BINDING_FIELDS,
            &[],
        );
        for e in &entries {
            match e.key.as_str() {
                "glob" => {
                    self.expect(&e.value, &[K::Str, K::Seq], "glob");
                }
                "loadContents" => {
                    self.expect(&e.value, &[K::Bool], "loadContents");
                }
                "outputEval" => {
                    self.expect(&e.value, &[K::Expr], "outputEval");
                }
                "loadListing" => {
                    if ctx.version < Version::V1_1 {
                        self.error(
                            &e.key_pos,
                            "`loadListing` needs cwlVersion v1.1 or later",
                            None,
                        );
                    }
                    self.expect_enum(&e.value, LOAD_LISTING, "loadListing");
                }
                _ => {}
            }
        }
        Node::new(pos, V::Map(entries))
    }

    /// The secondaryFiles DSL: a list of `{pattern, required}`.
    pub(crate) fn norm_secondary(&mut self, raw: Node, ctx: &Ctx) -> Option<Node> {
        let pos = raw.pos.clone();
        let items = match raw.v {
            V::Null => return None,
            V::Seq(items) => items,
            _ => vec![raw],
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let p = item.pos.clone();
            match item.v {
                V::Str(s) => {
                    let mut m = Node::map(&p);
                    match s.strip_suffix('?') {
                        Some(pat) => {
                            m.set("pattern", Node::str(&p, pat));
                            m.set("required", Node::new(p.clone(), V::Bool(false)));
                        }
                        None => {
                            m.set("pattern", Node::str(&p, s));
                            m.set("required", Node::new(p.clone(), V::Null));
                        }
                    }
                    out.push(m);
                }
                V::Map(mut entries) => {
                    if ctx.version < Version::V1_1 {
                        self.error(
                            &p,
                            "secondaryFiles entries with `pattern` need cwlVersion v1.1 or later",
                            Some("write the pattern as a string (\".bai\"), or declare `cwlVersion: v1.2`".into()),
                        );
                    }
                    self.check_fields(
                        &mut entries,
                        &p,
                        "a secondaryFiles entry",
                        &["pattern", "required"],
                        &["pattern"],
                    );
                    if let Some(e) = entries.iter().find(|e| e.key == "pattern") {
                        let v = e.value.clone();
                        self.expect(&v, &[K::Str], "pattern");
                    }
                    if let Some(e) = entries.iter().find(|e| e.key == "required") {
                        let v = e.value.clone();
                        self.expect(&v, &[K::Bool, K::Expr, K::Null], "required");
                    } else {
                        entries.push(Entry {
                            key: "required".into(),
                            key_pos: p.clone(),
                            value: Node::new(p.clone(), V::Null),
                        });
                    }
                    out.push(Node::new(p, V::Map(entries)));
                }
                _ => {
                    let n = Node::new(p, item.v);
                    self.expect(&n, &[K::Str, K::Map], "secondaryFiles");
                }
            }
        }
        Some(Node::new(pos, V::Seq(out)))
    }

    /// `format`: prefixes expanded through `$namespaces`.
    pub(crate) fn norm_format(&mut self, raw: Node) -> Node {
        match raw.v {
            V::Str(s) => {
                let p = raw.pos;
                if is_expression(&s) {
                    return Node::new(p, V::Str(s));
                }
                let full = self.expand_prefix(&s).unwrap_or(s);
                Node::new(p, V::Str(full))
            }
            V::Seq(items) => Node::new(
                raw.pos,
                V::Seq(items.into_iter().map(|i| self.norm_format(i)).collect()),
            ),
            v => {
                let n = Node::new(raw.pos, v);
                self.expect(&n, &[K::Str, K::Seq, K::Null], "format");
                n
            }
        }
    }

    /// Rule 8: `location`/`path` of File and Directory literals made
    /// absolute URIs against the file they are written in.
    pub(crate) fn resolve_files(&mut self, mut node: Node) -> Node {
        resolve_files_in(&mut node, None);
        node
    }
}

/// A name for a captured stream, stable for a given tool.
fn random_name(tool_id: &str, stream: &str) -> String {
    let mut h = sha1_smol::Sha1::new();
    h.update(tool_id.as_bytes());
    h.update(stream.as_bytes());
    h.digest().to_string()[..16].to_string()
}

/// Resolves File/Directory `location`/`path` under `node`.
pub(crate) fn resolve_files_in(node: &mut Node, base: Option<&str>) {
    match &mut node.v {
        V::Map(entries) => {
            let class = entries
                .iter()
                .find(|e| e.key == "class")
                .and_then(|e| e.value.as_str())
                .map(str::to_string);
            if matches!(class.as_deref(), Some("File" | "Directory")) {
                let base = base.map_or_else(|| file_uri(&node.pos), str::to_string);
                let Some(entries) = node.entries_mut() else {
                    return;
                };
                // `path` is a file system path, `location` a URI: a path is
                // percent-encoded as it becomes the location.
                let path = entries
                    .iter()
                    .position(|e| e.key == "path")
                    .map(|i| entries.remove(i));
                let has_location = entries.iter().any(|e| e.key == "location");
                if let Some(mut e) = path
                    && !has_location
                {
                    if let V::Str(s) = &e.value.v
                        && !is_expression(s)
                        && !uri::has_scheme(s)
                    {
                        e.value.v = V::Str(uri::escape_path(s));
                    }
                    e.key = "location".into();
                    entries.push(e);
                }
                for e in entries.iter_mut() {
                    if e.key == "location"
                        && let V::Str(s) = &e.value.v
                        && !is_expression(s)
                    {
                        let abs = if s.starts_with('/') {
                            format!("file://{s}")
                        } else {
                            uri::resolve_uri(&base, s)
                        };
                        e.value.v = V::Str(abs);
                    }
                }
                for e in entries.iter_mut() {
                    if e.key == "secondaryFiles" || e.key == "listing" {
                        resolve_files_in(&mut e.value, Some(&base));
                    }
                }
                return;
            }
            for e in entries.iter_mut() {
                resolve_files_in(&mut e.value, base);
            }
        }
        V::Seq(items) => {
            for i in items.iter_mut() {
                resolve_files_in(i, base);
            }
        }
        _ => {}
    }
}
