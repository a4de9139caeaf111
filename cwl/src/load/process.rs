//! Normalization and validation of process objects (CommandLineTool,
//! ExpressionTool, Workflow, Operation) and of the records they hold.
//!
//! The field sets below follow the salad schema of the v1.2 specification
//! (`Process.yml`, `CommandLineTool.yml`, `Workflow.yml`, `Operation.yml`);
//! fields added after v1.0 are checked against the document's version.

use std::path::Path;

use super::node::{Entry, Node, Pos, V};
use super::uri;
use super::{Loader, Version};

/// The primitive type names, as written in documents.
pub(crate) const PRIMITIVES: &[&str] = &[
    "null",
    "boolean",
    "int",
    "long",
    "float",
    "double",
    "string",
    "File",
    "Directory",
    "Any",
];

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
const FIELD_FIELDS: &[&str] = &[
    "name",
    "type",
    "doc",
    "label",
    "secondaryFiles",
    "streamable",
    "format",
    "loadContents",
    "loadListing",
    "inputBinding",
    "outputBinding",
];
const LOAD_LISTING: &[&str] = &["no_listing", "shallow_listing", "deep_listing"];

/// A requirement class the loader knows: its fields, the first version
/// that has it, and which fields are required.
struct ReqSpec {
    class: &'static str,
    fields: &'static [&'static str],
    required: &'static [&'static str],
    since: Version,
}

const REQUIREMENTS: &[ReqSpec] = &[
    ReqSpec {
        class: "InlineJavascriptRequirement",
        fields: &["expressionLib"],
        required: &[],
        since: Version::V1_0,
    },
    ReqSpec {
        class: "SchemaDefRequirement",
        fields: &["types"],
        required: &["types"],
        since: Version::V1_0,
    },
    ReqSpec {
        class: "DockerRequirement",
        fields: &[
            "dockerPull",
            "dockerLoad",
            "dockerFile",
            "dockerImport",
            "dockerImageId",
            "dockerOutputDirectory",
        ],
        required: &[],
        since: Version::V1_0,
    },
    ReqSpec {
        class: "SoftwareRequirement",
        fields: &["packages"],
        required: &["packages"],
        since: Version::V1_0,
    },
    ReqSpec {
        class: "InitialWorkDirRequirement",
        fields: &["listing"],
        required: &["listing"],
        since: Version::V1_0,
    },
    ReqSpec {
        class: "EnvVarRequirement",
        fields: &["envDef"],
        required: &["envDef"],
        since: Version::V1_0,
    },
    ReqSpec {
        class: "ShellCommandRequirement",
        fields: &[],
        required: &[],
        since: Version::V1_0,
    },
    ReqSpec {
        class: "ResourceRequirement",
        fields: &[
            "coresMin",
            "coresMax",
            "ramMin",
            "ramMax",
            "tmpdirMin",
            "tmpdirMax",
            "outdirMin",
            "outdirMax",
        ],
        required: &[],
        since: Version::V1_0,
    },
    ReqSpec {
        class: "SubworkflowFeatureRequirement",
        fields: &[],
        required: &[],
        since: Version::V1_0,
    },
    ReqSpec {
        class: "ScatterFeatureRequirement",
        fields: &[],
        required: &[],
        since: Version::V1_0,
    },
    ReqSpec {
        class: "MultipleInputFeatureRequirement",
        fields: &[],
        required: &[],
        since: Version::V1_0,
    },
    ReqSpec {
        class: "StepInputExpressionRequirement",
        fields: &[],
        required: &[],
        since: Version::V1_0,
    },
    ReqSpec {
        class: "LoadListingRequirement",
        fields: &["loadListing"],
        required: &[],
        since: Version::V1_1,
    },
    ReqSpec {
        class: "WorkReuse",
        fields: &["enableReuse"],
        required: &[],
        since: Version::V1_1,
    },
    ReqSpec {
        class: "NetworkAccess",
        fields: &["networkAccess"],
        required: &["networkAccess"],
        since: Version::V1_1,
    },
    ReqSpec {
        class: "InplaceUpdateRequirement",
        fields: &["inplaceUpdate"],
        required: &["inplaceUpdate"],
        since: Version::V1_1,
    },
    ReqSpec {
        class: "ToolTimeLimit",
        fields: &["timelimit"],
        required: &["timelimit"],
        since: Version::V1_1,
    },
];

/// cwltool's v1.0 extensions that became standard in v1.1.
const V10_RENAMES: &[(&str, &str)] = &[
    ("http://commonwl.org/cwltool#WorkReuse", "WorkReuse"),
    ("http://arvados.org/cwl#ReuseRequirement", "WorkReuse"),
    ("http://commonwl.org/cwltool#TimeLimit", "ToolTimeLimit"),
    ("http://commonwl.org/cwltool#NetworkAccess", "NetworkAccess"),
    (
        "http://commonwl.org/cwltool#InplaceUpdateRequirement",
        "InplaceUpdateRequirement",
    ),
    (
        "http://commonwl.org/cwltool#LoadListingRequirement",
        "LoadListingRequirement",
    ),
];

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

/// Kinds of scalar or structure a field may hold.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum K {
    Str,
    Bool,
    Int,
    Num,
    Seq,
    Map,
    Null,
}

impl K {
    fn matches(self, n: &Node) -> bool {
        matches!(
            (self, &n.v),
            (K::Str, V::Str(_))
                | (K::Bool, V::Bool(_))
                | (K::Int, V::Int(_))
                | (K::Num, V::Int(_) | V::Float(_))
                | (K::Seq, V::Seq(_))
                | (K::Map, V::Map(_))
                | (K::Null, V::Null)
        )
    }
    fn name(self) -> &'static str {
        match self {
            K::Str => "a string",
            K::Bool => "true or false",
            K::Int => "an integer",
            K::Num => "a number",
            K::Seq => "a list",
            K::Map => "a mapping",
            K::Null => "null",
        }
    }
}

impl Loader {
    /// Reports an error unless `n` is one of `kinds`. Returns whether it is.
    pub(crate) fn expect(&mut self, n: &Node, kinds: &[K], what: &str) -> bool {
        if kinds.iter().any(|k| k.matches(n)) {
            return true;
        }
        let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
        self.error(
            &n.pos,
            format!(
                "`{what}` must be {}, not {}",
                names.join(" or "),
                n.describe()
            ),
            None,
        );
        false
    }

    /// Checks `value` is one of `symbols`.
    pub(crate) fn expect_enum(&mut self, n: &Node, symbols: &[&str], what: &str) {
        if n.is_null() {
            return;
        }
        match n.as_str() {
            Some(s) if symbols.contains(&s) => {}
            Some(s) => {
                let hint = uri::did_you_mean(s, symbols.iter().copied()).map_or_else(
                    || format!("use one of: {}", symbols.join(", ")),
                    |m| format!("did you mean `{m}`?"),
                );
                self.error(&n.pos, format!("`{what}` cannot be `{s}`"), Some(hint));
            }
            None => {
                self.expect(n, &[K::Str], what);
            }
        }
    }

    /// Expands `prefix:rest` through `$namespaces`, if the prefix is known.
    pub(crate) fn expand_prefix(&self, s: &str) -> Option<String> {
        if uri::has_scheme(s) {
            return Some(s.to_string());
        }
        let (prefix, rest) = s.split_once(':')?;
        let ns = self.namespaces.get(prefix)?.as_str()?;
        Some(format!("{ns}{rest}"))
    }

    /// Checks the fields of a mapping: unknown ones are errors (with a
    /// suggestion) unless they are namespaced extensions; required ones must
    /// be present. Namespaced keys are expanded to full URIs in place.
    pub(crate) fn check_fields(
        &mut self,
        entries: &mut [Entry],
        pos: &Pos,
        what: &str,
        allowed: &[&str],
        required: &[&str],
    ) {
        for e in entries.iter_mut() {
            if allowed.contains(&e.key.as_str())
                || matches!(e.key.as_str(), "$namespaces" | "$schemas" | "$base")
            {
                continue;
            }
            if e.key.contains(':') {
                match self.expand_prefix(&e.key) {
                    Some(full) => e.key = full,
                    None => {
                        let prefix = e.key.split(':').next().unwrap_or("");
                        self.error(
                            &e.key_pos,
                            format!("unknown namespace prefix `{prefix}` in field `{}`", e.key),
                            Some(format!(
                                "declare it at the top of the document: `$namespaces: {{{prefix}: http://...}}`"
                            )),
                        );
                    }
                }
                continue;
            }
            let misplaced = match e.key.as_str() {
                "glob" | "outputEval" if allowed.contains(&"outputBinding") => {
                    Some("outputBinding")
                }
                "position" | "prefix" | "separate" | "itemSeparator" | "shellQuote"
                    if allowed.contains(&"inputBinding") =>
                {
                    Some("inputBinding")
                }
                _ => None,
            };
            let hint = match uri::did_you_mean(&e.key, allowed.iter().copied()) {
                _ if matches!(e.key.as_str(), "items" | "fields" | "symbols")
                    && allowed.contains(&"type")
                    && !allowed.contains(&"items") =>
                {
                    format!(
                        "`{}` belongs to a type: write `type: {{type: array, items: string}}` (or \
                         `type: string[]`), with the type mapping under `type`",
                        e.key
                    )
                }
                _ if misplaced.is_some() => {
                    format!("move `{}` under `{}`", e.key, misplaced.unwrap_or_default())
                }
                Some(m) => format!("did you mean `{m}`?"),
                None if allowed.is_empty() => format!("{what} takes no fields"),
                None => format!(
                    "{what} takes: {}; extensions must be namespaced (`prefix:{}`)",
                    allowed.join(", "),
                    e.key
                ),
            };
            self.error(
                &e.key_pos,
                format!("unknown field `{}` in {what}", e.key),
                Some(hint),
            );
        }
        for r in required {
            if !entries.iter().any(|e| e.key == *r) {
                self.error(pos, format!("{what} is missing required field `{r}`"), None);
            }
        }
    }

    /// The remaining extension entries (those with full-URI keys), to keep.
    fn extensions(entries: Vec<Entry>) -> impl Iterator<Item = Entry> {
        entries.into_iter().filter(|e| uri::has_scheme(&e.key))
    }

    /// Turns the map form `{key: value}` of a list field into the list form,
    /// per the field's `mapSubject` and `mapPredicate`.
    pub(crate) fn list_form(
        &mut self,
        node: Node,
        subject: &str,
        predicate: Option<&str>,
        what: &str,
    ) -> Vec<Node> {
        match node.v {
            V::Null => Vec::new(),
            V::Seq(items) => items,
            V::Map(mut entries) => {
                // Like schema-salad, the map form is read in key order.
                entries.sort_by(|a, b| a.key.cmp(&b.key));
                entries
                    .into_iter()
                    .map(|e| {
                        let key = Node::str(&e.key_pos, e.key);
                        match e.value.v {
                            V::Map(mut inner) => {
                                inner.retain(|x| x.key != subject);
                                inner.insert(
                                    0,
                                    Entry {
                                        key: subject.to_string(),
                                        key_pos: key.pos.clone(),
                                        value: key,
                                    },
                                );
                                Node::new(e.key_pos, V::Map(inner))
                            }
                            V::Null => {
                                let mut m = Node::map(&e.key_pos);
                                m.set(subject, key);
                                m
                            }
                            _ => {
                                let mut m = Node::map(&e.key_pos);
                                m.set(subject, key);
                                match predicate {
                                    Some(p) => m.set(p, e.value),
                                    None => self.error(
                                        &e.value.pos,
                                        format!("each entry of `{what}` must be a mapping"),
                                        None,
                                    ),
                                }
                                m
                            }
                        }
                    })
                    .collect()
            }
            _ => {
                self.error(
                    &node.pos,
                    format!(
                        "`{what}` must be a list or a mapping, not {}",
                        node.describe()
                    ),
                    None,
                );
                Vec::new()
            }
        }
    }

    /// Registers the named types of the SchemaDefRequirements of every
    /// top-level process of a file before any of them is normalized.
    pub(crate) fn preregister_types(&mut self, info: &super::FileInfo, path: &Path) {
        let doc = uri::path_to_uri(path);
        let root = info.root.clone();
        let procs: Vec<&Node> = match root.get("$graph").and_then(Node::items) {
            Some(items) => items.iter().collect(),
            None => vec![&root],
        };
        for p in procs {
            let scope = p
                .get_str("id")
                .map_or_else(|| doc.clone(), |id| uri::resolve_id(&doc, id));
            self.register_types(p, &scope);
        }
    }

    /// Registers the named types of a process's SchemaDefRequirement.
    fn register_types(&mut self, process: &Node, scope: &str) {
        for field in ["requirements", "hints"] {
            let Some(reqs) = process.get(field) else {
                continue;
            };
            let list: Vec<&Node> = match &reqs.v {
                V::Seq(items) => items.iter().collect(),
                V::Map(entries) => entries
                    .iter()
                    .filter(|e| e.key == "SchemaDefRequirement")
                    .map(|e| &e.value)
                    .collect(),
                _ => Vec::new(),
            };
            for r in list {
                let is_schema_def = r
                    .get_str("class")
                    .is_none_or(|c| c == "SchemaDefRequirement");
                if !is_schema_def {
                    continue;
                }
                let Some(types) = r.get("types").and_then(Node::items) else {
                    continue;
                };
                for t in types {
                    if let Some(name) = t.get_str("name") {
                        let abs = uri::resolve_id(&def_base(&t.pos, name, scope), name);
                        self.raw_types
                            .entry(abs)
                            .or_insert_with(|| (t.clone(), scope.to_string()));
                    }
                }
            }
        }
    }

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
                    self.expect(&e.value, &[K::Str], "expression");
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
    fn check_unique<'a>(
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
                "label" | "doc" => Some(value),
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
                        self.expect(&e.value, &[K::Int, K::Str], "position");
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

    fn norm_output_binding(&mut self, raw: Node, ctx: &Ctx) -> Node {
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
                    self.expect(&e.value, &[K::Str], "outputEval");
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
                        self.expect(&v, &[K::Bool, K::Str, K::Null], "required");
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

    /// Normalizes `requirements` or `hints`.
    pub(crate) fn norm_requirements(&mut self, node: Node, ctx: &Ctx, hints: bool) -> Vec<Node> {
        let what = if hints { "hints" } else { "requirements" };
        let items = self.list_form(node, "class", None, what);
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if let Some(r) = self.norm_requirement(item, ctx, hints) {
                out.push(r);
            }
        }
        out
    }

    fn norm_requirement(&mut self, raw: Node, ctx: &Ctx, hint: bool) -> Option<Node> {
        let pos = raw.pos.clone();
        let what = if hint { "hints" } else { "requirements" };
        if raw.is_null() {
            return None;
        }
        if !raw.is_map() {
            self.error(
                &pos,
                format!(
                    "each entry of `{what}` must be a mapping with a `class`, not {}",
                    raw.describe()
                ),
                None,
            );
            return None;
        }
        let Some(class_node) = raw.get("class").cloned() else {
            self.error(
                &pos,
                format!("an entry of `{what}` has no `class`"),
                Some("add `class: NameOfTheRequirement`".into()),
            );
            return None;
        };
        let Some(class) = class_node.as_str().map(str::to_string) else {
            self.expect(&class_node, &[K::Str], "class");
            return None;
        };
        let spec = REQUIREMENTS.iter().find(|r| r.class == class);
        let Some(spec) = spec else {
            let mut raw = raw;
            if class.contains(':') {
                let full = self.expand_prefix(&class);
                match full {
                    Some(full) => {
                        if ctx.version == Version::V1_0
                            && V10_RENAMES.iter().any(|(f, _)| *f == full)
                        {
                            // Renamed by normalize_process; keep its fields.
                            raw.set("class", Node::str(&class_node.pos, full.clone()));
                            return Some(raw);
                        }
                        raw.set("class", Node::str(&class_node.pos, full.clone()));
                        tracing::warn!(
                            "{}: ignoring unknown {} class `{full}`",
                            class_node.pos,
                            if hint { "hint" } else { "requirement" }
                        );
                        return Some(raw);
                    }
                    None => {
                        let prefix = class.split(':').next().unwrap_or("");
                        self.error(
                            &class_node.pos,
                            format!("unknown namespace prefix `{prefix}` in class `{class}`"),
                            Some(format!(
                                "declare it: `$namespaces: {{{prefix}: http://...}}`"
                            )),
                        );
                        return None;
                    }
                }
            }
            let suggestion = uri::did_you_mean(&class, REQUIREMENTS.iter().map(|r| r.class));
            if hint {
                tracing::warn!("{}: ignoring unknown hint `{class}`", class_node.pos);
                return Some(raw);
            }
            match suggestion {
                Some(m) => self.error(
                    &class_node.pos,
                    format!("unknown requirement `{class}`"),
                    Some(format!("did you mean `{m}`?")),
                ),
                None => self.unsupported(
                    &class_node.pos,
                    format!("requirement `{class}` is not supported"),
                    Some("move it to `hints` if the tool can run without it".into()),
                ),
            }
            return None;
        };
        if ctx.version < spec.since {
            self.error(
                &class_node.pos,
                format!("`{class}` needs cwlVersion v1.1 or later"),
                Some("write `cwlVersion: v1.2`".into()),
            );
        }
        let mut entries = into_entries(raw);
        let mut allowed = spec.fields.to_vec();
        allowed.push("class");
        self.check_fields(&mut entries, &pos, &class, &allowed, spec.required);
        let mut out = Node::map(&pos);
        out.set("class", Node::str(&class_node.pos, class.clone()));
        take(&mut entries, "class");
        for e in entries {
            let Entry {
                key,
                key_pos: _,
                value,
            } = e;
            let v = match (class.as_str(), key.as_str()) {
                ("InlineJavascriptRequirement", "expressionLib") => match value.v {
                    V::Str(_) => Node::new(value.pos.clone(), V::Seq(vec![value])),
                    _ => {
                        if self.expect(&value, &[K::Seq], "expressionLib") {
                            for i in value.items().unwrap_or(&[]).to_vec() {
                                self.expect(&i, &[K::Str], "expressionLib");
                            }
                        }
                        value
                    }
                },
                ("SchemaDefRequirement", "types") => {
                    let p = value.pos.clone();
                    let items = match value.v {
                        V::Seq(items) => items,
                        _ => {
                            self.expect(&value, &[K::Seq], "types");
                            Vec::new()
                        }
                    };
                    let mut types = Vec::new();
                    for t in items {
                        if t.get("name").is_none() {
                            self.error(
                                &t.pos,
                                "a type in SchemaDefRequirement needs a `name`",
                                Some("add `name: MyType`".into()),
                            );
                            continue;
                        }
                        types.push(self.norm_type(t, &ctx.id, ctx, Io::Input));
                    }
                    Node::new(p, V::Seq(types))
                }
                ("SoftwareRequirement", "packages") => {
                    let p = value.pos.clone();
                    let items = self.list_form(value, "package", Some("specs"), "packages");
                    let mut pk = Vec::new();
                    for i in items {
                        let ip = i.pos.clone();
                        if !self.expect(&i, &[K::Map], "packages") {
                            continue;
                        }
                        let mut es = into_entries(i);
                        self.check_fields(
                            &mut es,
                            &ip,
                            "a software package",
                            &["package", "version", "specs"],
                            &["package"],
                        );
                        pk.push(Node::new(ip, V::Map(es)));
                    }
                    Node::new(p, V::Seq(pk))
                }
                ("EnvVarRequirement", "envDef") => {
                    let p = value.pos.clone();
                    let items = self.list_form(value, "envName", Some("envValue"), "envDef");
                    let mut defs = Vec::new();
                    for i in items {
                        let ip = i.pos.clone();
                        if !self.expect(&i, &[K::Map], "envDef") {
                            continue;
                        }
                        let mut es = into_entries(i);
                        self.check_fields(
                            &mut es,
                            &ip,
                            "an envDef entry",
                            &["envName", "envValue"],
                            &["envName", "envValue"],
                        );
                        for e in &es {
                            let v = e.value.clone();
                            self.expect(&v, &[K::Str], &e.key);
                        }
                        defs.push(Node::new(ip, V::Map(es)));
                    }
                    Node::new(p, V::Seq(defs))
                }
                ("InitialWorkDirRequirement", "listing") => self.norm_listing(value),
                ("ResourceRequirement", _) => {
                    if ctx.version < Version::V1_2 {
                        self.expect(&value, &[K::Int, K::Str, K::Null], &key);
                    } else if self.expect(&value, &[K::Num, K::Str, K::Null], &key) {
                        self.check_non_negative(&value, &key);
                    }
                    value
                }
                ("ToolTimeLimit", "timelimit") => {
                    if self.expect(&value, &[K::Int, K::Str], "timelimit") {
                        self.check_non_negative(&value, "timelimit");
                    }
                    value
                }
                ("WorkReuse", "enableReuse") | ("NetworkAccess", "networkAccess") => {
                    self.expect(&value, &[K::Bool, K::Str], &key);
                    value
                }
                ("InplaceUpdateRequirement", "inplaceUpdate") => {
                    self.expect(&value, &[K::Bool], &key);
                    value
                }
                ("LoadListingRequirement", "loadListing") => {
                    self.expect_enum(&value, LOAD_LISTING, "loadListing");
                    value
                }
                ("DockerRequirement", _) => {
                    self.expect(&value, &[K::Str], &key);
                    value
                }
                _ => value,
            };
            out.set(&key, v);
        }
        Some(out)
    }

    fn check_non_negative(&mut self, n: &Node, what: &str) {
        let negative = match n.v {
            V::Int(i) => i < 0,
            V::Float(f) => f < 0.0,
            _ => false,
        };
        if negative {
            self.error(
                &n.pos,
                format!("`{what}` cannot be negative"),
                Some("use zero or a positive number".into()),
            );
        }
    }

    /// InitialWorkDirRequirement's `listing`.
    fn norm_listing(&mut self, value: Node) -> Node {
        let p = value.pos.clone();
        match value.v {
            V::Str(_) => value,
            V::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                for i in items {
                    let ip = i.pos.clone();
                    match &i.v {
                        V::Map(_) if i.get("class").is_some() => out.push(self.resolve_files(i)),
                        V::Map(_) => {
                            let mut es = into_entries(i);
                            self.check_fields(
                                &mut es,
                                &ip,
                                "a Dirent",
                                &["entryname", "entry", "writable"],
                                &["entry"],
                            );
                            for e in &es {
                                let v = e.value.clone();
                                match e.key.as_str() {
                                    "entryname" => {
                                        self.expect(&v, &[K::Str], "entryname");
                                    }
                                    "writable" => {
                                        self.expect(&v, &[K::Bool], "writable");
                                    }
                                    _ => {}
                                }
                            }
                            out.push(Node::new(ip, V::Map(es)));
                        }
                        V::Seq(_) => out.push(self.resolve_files(i)),
                        V::Str(_) | V::Null => out.push(i),
                        _ => {
                            self.expect(&i, &[K::Str, K::Map], "listing");
                        }
                    }
                }
                Node::new(p, V::Seq(out))
            }
            _ => {
                self.expect(&value, &[K::Str, K::Seq], "listing");
                value
            }
        }
    }

    /// Expands a type (rule 3 of DESIGN.md). `hint` names an anonymous
    /// record or enum.
    pub(crate) fn norm_type(&mut self, raw: Node, hint: &str, ctx: &Ctx, io: Io) -> Node {
        let pos = raw.pos.clone();
        match raw.v {
            V::Str(s) => self.norm_type_str(&s, &pos, ctx),
            V::Seq(items) => {
                let mut out: Vec<Node> = Vec::with_capacity(items.len());
                for i in items {
                    let t = self.norm_type(i, hint, ctx, io);
                    // A union inside a union is flattened.
                    match t.v {
                        V::Seq(inner) => out.extend(inner),
                        _ => out.push(t),
                    }
                }
                Node::new(pos, V::Seq(out))
            }
            V::Map(_) => self.norm_type_map(Node::new(pos, raw.v), hint, ctx, io),
            v => {
                let n = Node::new(pos.clone(), v);
                self.error(&pos, format!("a type must be a name, a list or a mapping, not {}", n.describe()), Some("for example `type: string`, `type: File[]`, `type: {type: array, items: int}`".into()));
                Node::str(&pos, "Any")
            }
        }
    }

    fn norm_type_str(&mut self, s: &str, pos: &Pos, ctx: &Ctx) -> Node {
        if let Some(inner) = s.strip_suffix('?') {
            let t = self.norm_type_str(inner, pos, ctx);
            let mut items = vec![Node::str(pos, "null")];
            match t.v {
                V::Seq(inner) => {
                    items.extend(inner.into_iter().filter(|x| x.as_str() != Some("null")))
                }
                _ => items.push(t),
            }
            return Node::new(pos.clone(), V::Seq(items));
        }
        if let Some(inner) = s.strip_suffix("[]") {
            let t = self.norm_type_str(inner, pos, ctx);
            let mut m = Node::map(pos);
            m.set("type", Node::str(pos, "array"));
            m.set("items", t);
            return m;
        }
        if PRIMITIVES.contains(&s) || matches!(s, "stdout" | "stderr" | "stdin") {
            return Node::str(pos, s);
        }
        // Full URIs of primitives (cwltool --print-pre style input).
        if let Some(short) = s
            .strip_prefix("http://www.w3.org/2001/XMLSchema#")
            .or_else(|| s.strip_prefix("https://w3id.org/cwl/salad#"))
            .or_else(|| s.strip_prefix("https://w3id.org/cwl/cwl#"))
            && PRIMITIVES.contains(&short)
        {
            return Node::str(pos, short);
        }
        match self.lookup_type(s, pos, &ctx.id) {
            Some(t) => t,
            None => {
                let hint = match uri::did_you_mean(s, PRIMITIVES.iter().copied()) {
                    Some(m) => format!("did you mean `{m}`?"),
                    None => "use a CWL type (string, int, File, ...) or a type named in SchemaDefRequirement".to_string(),
                };
                self.error(pos, format!("unknown type `{s}`"), Some(hint));
                Node::str(pos, "Any")
            }
        }
    }

    /// Finds a named type: absolute names, then the enclosing scopes.
    fn lookup_type(&mut self, name: &str, pos: &Pos, scope: &str) -> Option<Node> {
        let mut candidates: Vec<String> = Vec::new();
        if uri::has_scheme(name) || name.contains('#') {
            candidates.push(uri::resolve_uri(&file_uri(pos), name));
            candidates.push(uri::resolve_uri(scope, name));
        } else {
            let (doc, frag) = uri::split_frag(scope);
            if let Some(frag) = frag {
                let segs: Vec<&str> = frag.split('/').collect();
                for n in (1..=segs.len()).rev() {
                    candidates.push(format!("{doc}#{}/{name}", segs[..n].join("/")));
                }
            }
            candidates.push(format!("{doc}#{name}"));
            candidates.push(format!("{}#{name}", file_uri(pos)));
        }
        let found = candidates
            .iter()
            .find(|c| self.types.contains_key(*c) || self.raw_types.contains_key(*c))
            .cloned()
            .or_else(|| {
                // Last resort: a unique type with that short name.
                let short = super::shortname(name);
                let mut hits = self
                    .raw_types
                    .keys()
                    .filter(|k| super::shortname(k) == short);
                match (hits.next(), hits.next()) {
                    (Some(h), None) => Some(h.clone()),
                    _ => None,
                }
            })?;
        if let Some(t) = self.types.get(&found) {
            return Some(t.clone());
        }
        if self.types_in_progress.contains(&found) {
            self.error(
                pos,
                format!("type `{name}` refers to itself"),
                Some("CWL types cannot be recursive".into()),
            );
            return Some(Node::str(pos, "Any"));
        }
        let (raw, def_scope) = self.raw_types.get(&found)?.clone();
        self.types_in_progress.insert(found.clone());
        let ctx = Ctx {
            id: def_scope,
            version: Version::V1_2,
            class: Class::Workflow,
        };
        let t = self.norm_type(raw, &found, &ctx, Io::Input);
        self.types_in_progress.remove(&found);
        self.types.insert(found, t.clone());
        Some(t)
    }

    fn norm_type_map(&mut self, raw: Node, hint: &str, ctx: &Ctx, io: Io) -> Node {
        let pos = raw.pos.clone();
        let Some(kind_node) = raw.get("type").cloned() else {
            self.error(
                &pos,
                "a type written as a mapping needs `type: record`, `enum` or `array`",
                None,
            );
            return Node::str(&pos, "Any");
        };
        let kind = match kind_node.as_str() {
            Some(k @ ("record" | "enum" | "array")) => k.to_string(),
            _ => {
                // `type: {type: X}` where X is itself a type: unwrap.
                if raw.entries().is_some_and(|e| e.len() == 1) {
                    return self.norm_type(kind_node, hint, ctx, io);
                }
                self.error(
                    &kind_node.pos,
                    "`type` of a type mapping must be `record`, `enum` or `array`",
                    None,
                );
                return Node::str(&pos, "Any");
            }
        };
        let mut entries = into_entries(raw);
        let (allowed, required): (&[&str], &[&str]) = match kind.as_str() {
            "record" => (
                &[
                    "type",
                    "fields",
                    "name",
                    "label",
                    "doc",
                    "inputBinding",
                    "id",
                ],
                &[],
            ),
            "enum" => (
                &[
                    "type",
                    "symbols",
                    "name",
                    "label",
                    "doc",
                    "inputBinding",
                    "id",
                ],
                &["symbols"],
            ),
            _ => (
                &[
                    "type",
                    "items",
                    "name",
                    "label",
                    "doc",
                    "inputBinding",
                    "id",
                ],
                &["items"],
            ),
        };
        let what = format!("an {kind} type");
        self.check_fields(&mut entries, &pos, &what, allowed, required);
        let name = match take(&mut entries, "name") {
            Some(e) => match e.value.as_str() {
                Some(n) => uri::resolve_id(&def_base(&e.value.pos, n, &ctx.id), n),
                None => hint.to_string(),
            },
            None => hint.to_string(),
        };
        take(&mut entries, "id");
        let mut out = Node::map(&pos);
        out.set("type", Node::str(&pos, kind.clone()));
        if kind != "array" {
            out.set("name", Node::str(&pos, name.clone()));
        }
        for e in entries {
            let Entry { key, value, .. } = e;
            match key.as_str() {
                "type" => {}
                "items" => {
                    let t = self.norm_type(value, &name, ctx, io);
                    out.set("items", t);
                }
                "symbols" => {
                    let p = value.pos.clone();
                    if self.expect(&value, &[K::Seq], "symbols") {
                        let mut syms = Vec::new();
                        for s in value.items().unwrap_or(&[]) {
                            match s.as_str() {
                                Some(t) => {
                                    let short = if t.contains('#') {
                                        super::shortname(t)
                                    } else {
                                        t
                                    };
                                    syms.push(Node::str(&s.pos, short));
                                }
                                None => {
                                    let s = s.clone();
                                    self.expect(&s, &[K::Str], "symbols");
                                }
                            }
                        }
                        out.set("symbols", Node::new(p, V::Seq(syms)));
                    }
                }
                "fields" => {
                    let p = value.pos.clone();
                    let items = self.list_form(value, "name", Some("type"), "fields");
                    let mut fields = Vec::new();
                    for f in items {
                        if let Some(f) = self.norm_field(f, &name, ctx, io) {
                            fields.push(f);
                        }
                    }
                    self.check_unique(fields.iter(), "name", "record", io);
                    out.set("fields", Node::new(p, V::Seq(fields)));
                }
                "inputBinding" => {
                    let b = self.norm_binding(value, ctx, "inputBinding");
                    out.set("inputBinding", b);
                }
                _ => out.set(&key, value),
            }
        }
        if kind == "record" && out.get("fields").is_none() {
            out.set("fields", Node::new(pos.clone(), V::Seq(Vec::new())));
        }
        out
    }

    fn norm_field(&mut self, raw: Node, record: &str, ctx: &Ctx, io: Io) -> Option<Node> {
        let pos = raw.pos.clone();
        if !self.expect(&raw, &[K::Map], "fields") {
            return None;
        }
        let mut entries = into_entries(raw);
        self.check_fields(
            &mut entries,
            &pos,
            "a record field",
            FIELD_FIELDS,
            &["name", "type"],
        );
        let name = take(&mut entries, "name")?.value;
        let Some(name) = name.as_str().map(|n| {
            if n.contains('#') {
                super::shortname(n).to_string()
            } else {
                n.to_string()
            }
        }) else {
            self.expect(&name, &[K::Str], "name");
            return None;
        };
        let mut out = Node::map(&pos);
        out.set("name", Node::str(&pos, name.clone()));
        for e in entries {
            let Entry { key, value, .. } = e;
            let v = match key.as_str() {
                "type" => Some(self.norm_type(value, &format!("{record}/{name}"), ctx, io)),
                "secondaryFiles" => self.norm_secondary(value, ctx),
                "format" => Some(self.norm_format(value)),
                "inputBinding" => Some(self.norm_binding(value, ctx, "inputBinding")),
                "outputBinding" => Some(self.norm_output_binding(value, ctx)),
                "loadListing" => {
                    self.expect_enum(&value, LOAD_LISTING, "loadListing");
                    Some(value)
                }
                _ => Some(value),
            };
            if let Some(v) = v {
                out.set(&key, v);
            }
        }
        Some(out)
    }
}

/// The scope a type's `name` is resolved in: its own file when it is
/// absolute or was imported from another file, else the process's scope.
fn def_base(pos: &Pos, name: &str, scope: &str) -> String {
    let file = file_uri(pos);
    if name.starts_with('#') || uri::has_scheme(name) || uri::split_frag(scope).0 != file {
        file
    } else {
        scope.to_string()
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
