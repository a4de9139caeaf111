//! Types: the `T?`/`T[]` DSL, records, enums and arrays, and named types
//! from SchemaDefRequirement (registered per file, inlined where used).

use std::path::Path;

use super::node::{Entry, Node, Pos, V};
use super::process::{Class, Ctx, Io, LOAD_LISTING, file_uri, into_entries, take};
use super::{Loader, Version, fields::K, uri};

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

impl Loader {
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
    pub(crate) fn register_types(&mut self, process: &Node, scope: &str) {
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
        if s.len() > 1024 {
            self.error(
                pos,
                "this type name is too long",
                Some("name a type in SchemaDefRequirement".into()),
            );
            return Node::str(pos, "Any");
        }
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
        let given = take(&mut entries, "name");
        let named = given.as_ref().is_some_and(|e| e.value.as_str().is_some());
        let name = match given {
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
        if named && kind != "array" {
            // A type named where it is used may be referred to later by name.
            self.types.entry(name).or_insert_with(|| out.clone());
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
