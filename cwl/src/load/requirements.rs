//! `requirements` and `hints`: the known classes with their fields (per
//! the spec's salad schema), their values checked; unknown classes are
//! unsupported as requirements and ignored (with a warning) as hints.

use super::node::{Entry, Node, V};
use super::process::{Ctx, Io, LOAD_LISTING, into_entries, take};
use super::{Loader, Version, fields::K, uri};

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
pub(crate) const V10_RENAMES: &[(&str, &str)] = &[
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

impl Loader {
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
                        self.expect(&value, &[K::Int, K::Expr, K::Null], &key);
                    } else if self.expect(&value, &[K::Num, K::Expr, K::Null], &key) {
                        self.check_non_negative(&value, &key);
                    }
                    value
                }
                ("ToolTimeLimit", "timelimit") => {
                    if self.expect(&value, &[K::Int, K::Expr], "timelimit") {
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
            V::Str(_) => {
                self.expect(&value, &[K::Expr, K::Seq], "listing");
                value
            }
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
                        V::Str(_) => {
                            self.expect(&i, &[K::Expr, K::Map], "listing");
                            out.push(i);
                        }
                        V::Null => out.push(i),
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
}
