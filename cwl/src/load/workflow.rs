//! Workflow steps: `in`/`out`/`run`/`scatter`/`when`, the resolution of
//! `source`, `outputSource` and `scatter` references, and the static check
//! of the types along each connection.

use std::collections::{HashMap, HashSet};

use super::node::{Entry, Node, Pos, V};
use super::process::{Ctx, K, file_uri, into_entries, take};
use super::{Loader, Version, shortname, uri};

const STEP_FIELDS: &[&str] = &[
    "id",
    "label",
    "doc",
    "in",
    "out",
    "requirements",
    "hints",
    "run",
    "when",
    "scatter",
    "scatterMethod",
];
const STEP_INPUT_FIELDS: &[&str] = &[
    "id",
    "source",
    "linkMerge",
    "pickValue",
    "loadContents",
    "loadListing",
    "label",
    "default",
    "valueFrom",
];

impl Loader {
    /// Normalizes a workflow's `steps` (rule 7 of DESIGN.md), loading each
    /// step's `run`.
    pub(crate) fn norm_steps(&mut self, node: Node, ctx: &Ctx) -> Vec<Node> {
        let items = self.list_form(node, "id", None, "steps");
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if let Some(s) = self.norm_step(item, ctx) {
                out.push(s);
            }
        }
        out
    }

    fn norm_step(&mut self, raw: Node, ctx: &Ctx) -> Option<Node> {
        let pos = raw.pos.clone();
        if !self.expect(&raw, &[K::Map], "steps") {
            return None;
        }
        let mut entries = into_entries(raw);
        self.check_fields(
            &mut entries,
            &pos,
            "a workflow step",
            STEP_FIELDS,
            &["id", "in", "out", "run"],
        );
        let id_node = take(&mut entries, "id")?.value;
        let Some(id) = id_node.as_str().map(|s| uri::resolve_id(&ctx.id, s)) else {
            self.expect(&id_node, &[K::Str], "id");
            return None;
        };
        let mut out = Node::map(&pos);
        out.set("id", Node::str(&pos, id.clone()));
        let step_ctx = Ctx {
            id: id.clone(),
            version: ctx.version,
            class: ctx.class,
        };
        let mut ins = Vec::new();
        if let Some(e) = take(&mut entries, "in") {
            let items = self.list_form(e.value, "id", Some("source"), "in");
            for i in items {
                if let Some(n) = self.norm_step_input(i, &step_ctx) {
                    ins.push(n);
                }
            }
        }
        self.check_dup_ids(&ins, "the step's `in`");
        out.set("in", Node::new(pos.clone(), V::Seq(ins)));
        let mut outs = Vec::new();
        if let Some(e) = take(&mut entries, "out") {
            let items = match e.value.v {
                V::Seq(items) => items,
                V::Str(_) => vec![e.value],
                V::Null => Vec::new(),
                _ => {
                    self.expect(&e.value, &[K::Seq], "out");
                    Vec::new()
                }
            };
            for o in items {
                let name = match &o.v {
                    V::Str(s) => Some(s.clone()),
                    V::Map(_) => {
                        let mut es = into_entries(o.clone());
                        self.check_fields(&mut es, &o.pos, "a step output", &["id"], &["id"]);
                        o.get_str("id").map(str::to_string)
                    }
                    _ => {
                        self.expect(&o, &[K::Str, K::Map], "out");
                        None
                    }
                };
                if let Some(n) = name {
                    outs.push(Node::str(&o.pos, uri::resolve_id(&id, &n)));
                }
            }
        }
        let mut requirements = Vec::new();
        let mut hints = Vec::new();
        let mut run = None;
        let mut when = None;
        let mut scatter = None;
        let mut scatter_method = None;
        let mut extensions = Vec::new();
        for e in entries {
            let Entry {
                key,
                key_pos,
                value,
            } = e;
            match key.as_str() {
                "requirements" | "hints" => {
                    let normalized = self.norm_requirements(value, &step_ctx, key == "hints");
                    if key == "hints" {
                        hints = normalized;
                    } else {
                        requirements = normalized;
                    }
                }
                "run" => run = Some(value),
                "when" => {
                    if ctx.version < Version::V1_2 {
                        self.error(
                            &key_pos,
                            "`when` needs cwlVersion v1.2",
                            Some("write `cwlVersion: v1.2` to run steps conditionally".into()),
                        );
                    }
                    self.expect(&value, &[K::Str], "when");
                    when = Some(value);
                }
                "scatter" => {
                    let p = value.pos.clone();
                    let items = match value.v {
                        V::Str(_) => vec![value],
                        V::Seq(items) => items,
                        V::Null => Vec::new(),
                        _ => {
                            self.expect(&value, &[K::Str, K::Seq], "scatter");
                            Vec::new()
                        }
                    };
                    let mut ids = Vec::new();
                    for i in items {
                        match i.as_str() {
                            Some(s) => ids.push(Node::str(&i.pos, uri::resolve_id(&id, s))),
                            None => {
                                self.expect(&i, &[K::Str], "scatter");
                            }
                        }
                    }
                    scatter = Some(Node::new(p, V::Seq(ids)));
                }
                "scatterMethod" => {
                    self.expect_enum(
                        &value,
                        &["dotproduct", "nested_crossproduct", "flat_crossproduct"],
                        "scatterMethod",
                    );
                    scatter_method = Some(value);
                }
                "label" | "doc" => out.set(&key, value),
                k if uri::has_scheme(k) => extensions.push((key, value)),
                _ => {}
            }
        }
        let run = match run {
            Some(r) => self.load_run(r, &id, ctx),
            None => None,
        };
        if let Some(run) = &run {
            self.check_step_outs(&outs, run, &id);
        }
        out.set("out", Node::new(pos.clone(), V::Seq(outs)));
        out.set(
            "run",
            run.unwrap_or_else(|| Node::new(pos.clone(), V::Null)),
        );
        if let Some(s) = scatter {
            self.check_scatter(&s, &out);
            out.set("scatter", s);
        } else {
            out.set("scatter", Node::new(pos.clone(), V::Seq(Vec::new())));
        }
        if let Some(m) = scatter_method {
            out.set("scatterMethod", m);
        }
        if let Some(w) = when {
            out.set("when", w);
        }
        out.set("requirements", Node::new(pos.clone(), V::Seq(requirements)));
        out.set("hints", Node::new(pos.clone(), V::Seq(hints)));
        for (k, v) in extensions {
            out.set(&k, v);
        }
        Some(out)
    }

    fn check_dup_ids(&mut self, items: &[Node], what: &str) {
        let mut seen = HashSet::new();
        for i in items {
            if let Some(id) = i.get_str("id")
                && !seen.insert(id.to_string())
            {
                self.error(
                    &i.pos,
                    format!("duplicate id `{}` in {what}", shortname(id)),
                    None,
                );
            }
        }
    }

    fn norm_step_input(&mut self, raw: Node, step: &Ctx) -> Option<Node> {
        let pos = raw.pos.clone();
        if !self.expect(&raw, &[K::Map], "in") {
            return None;
        }
        let mut entries = into_entries(raw);
        self.check_fields(
            &mut entries,
            &pos,
            "a step input",
            STEP_INPUT_FIELDS,
            &["id"],
        );
        let id_node = take(&mut entries, "id")?.value;
        let Some(id) = id_node.as_str().map(|s| uri::resolve_id(&step.id, s)) else {
            self.expect(&id_node, &[K::Str], "id");
            return None;
        };
        let mut out = Node::map(&pos);
        out.set("id", Node::str(&pos, id));
        for e in entries {
            let Entry {
                key,
                key_pos,
                value,
            } = e;
            let v = match key.as_str() {
                "source" => match &value.v {
                    V::Null => None,
                    V::Str(_) => Some(value),
                    V::Seq(items) => {
                        for i in items.clone() {
                            self.expect(&i, &[K::Str], "source");
                        }
                        Some(value)
                    }
                    _ => {
                        self.expect(&value, &[K::Str, K::Seq], "source");
                        None
                    }
                },
                "linkMerge" => {
                    self.expect_enum(&value, &["merge_nested", "merge_flattened"], "linkMerge");
                    Some(value)
                }
                "pickValue" => {
                    if step.version < Version::V1_2 {
                        self.error(&key_pos, "`pickValue` needs cwlVersion v1.2", None);
                    }
                    self.expect_enum(
                        &value,
                        &["first_non_null", "the_only_non_null", "all_non_null"],
                        "pickValue",
                    );
                    Some(value)
                }
                "loadContents" => {
                    self.expect(&value, &[K::Bool], "loadContents");
                    Some(value)
                }
                "loadListing" => {
                    self.expect_enum(
                        &value,
                        &["no_listing", "shallow_listing", "deep_listing"],
                        "loadListing",
                    );
                    Some(value)
                }
                "default" => Some(self.resolve_files(value)),
                "valueFrom" => {
                    self.expect(&value, &[K::Str], "valueFrom");
                    Some(value)
                }
                "label" => Some(value),
                k if uri::has_scheme(k) => Some(value),
                _ => None,
            };
            if let Some(v) = v {
                out.set(&key, v);
            }
        }
        Some(out)
    }

    /// Loads a step's `run`: a path, `file#id`, `#id` in a packed file, or
    /// an inline process.
    fn load_run(&mut self, raw: Node, step_id: &str, ctx: &Ctx) -> Option<Node> {
        match &raw.v {
            V::Str(s) => {
                let target = uri::resolve_uri(&file_uri(&raw.pos), s);
                self.load_process(&target, &raw.pos)
            }
            V::Map(_) => {
                let default_id = format!("{step_id}/run");
                let key = raw.get_str("id").map_or_else(
                    || default_id.clone(),
                    |i| uri::resolve_id(&file_uri(&raw.pos), i),
                );
                if self.running.contains(&key) {
                    self.error(&raw.pos, format!("{key} runs itself"), None);
                    return None;
                }
                self.running.push(key);
                let out = self.normalize_process(raw, &default_id, ctx.version, false);
                self.running.pop();
                out
            }
            _ => {
                self.expect(&raw, &[K::Str, K::Map], "run");
                None
            }
        }
    }

    fn check_step_outs(&mut self, outs: &[Node], run: &Node, step_id: &str) {
        let declared: Vec<&str> = run
            .get("outputs")
            .and_then(Node::items)
            .unwrap_or(&[])
            .iter()
            .filter_map(|o| o.get_str("id"))
            .map(shortname)
            .collect();
        for o in outs {
            let name = o.as_str().map(shortname).unwrap_or("");
            if !declared.contains(&name) {
                let hint = match uri::did_you_mean(name, declared.iter().copied()) {
                    Some(m) => format!("did you mean `{m}`?"),
                    None => format!("the process declares the outputs: {}", declared.join(", ")),
                };
                self.error(
                    &o.pos,
                    format!(
                        "step `{}` lists output `{name}`, which its `run` process does not have",
                        shortname(step_id)
                    ),
                    Some(hint),
                );
            }
        }
    }

    fn check_scatter(&mut self, scatter: &Node, step: &Node) {
        let ins: Vec<&str> = step
            .get("in")
            .and_then(Node::items)
            .unwrap_or(&[])
            .iter()
            .filter_map(|i| i.get_str("id"))
            .collect();
        for s in scatter.items().unwrap_or(&[]) {
            let id = s.as_str().unwrap_or("");
            if !ins.contains(&id) {
                let short: Vec<&str> = ins.iter().map(|i| shortname(i)).collect();
                let hint = match uri::did_you_mean(shortname(id), short.iter().copied()) {
                    Some(m) => format!("did you mean `{m}`?"),
                    None => format!(
                        "scatter over one of the step's inputs: {}",
                        short.join(", ")
                    ),
                };
                self.error(
                    &s.pos,
                    format!(
                        "`scatter` names `{}`, which is not an input of the step",
                        shortname(id)
                    ),
                    Some(hint),
                );
            }
        }
    }

    /// Resolves `source`/`outputSource` references to absolute ids and
    /// checks they name workflow inputs or step outputs, then checks the
    /// types along every connection.
    pub(crate) fn check_workflow(&mut self, wf: &mut Node) {
        // Every id a source may name, with its type (None for a step output
        // whose process type is unknown).
        let mut known: HashMap<String, Option<Node>> = HashMap::new();
        for i in wf.get("inputs").and_then(Node::items).unwrap_or(&[]) {
            if let Some(id) = i.get_str("id") {
                known.insert(id.to_string(), i.get("type").cloned());
            }
        }
        let mut step_ids: Vec<(String, Pos)> = Vec::new();
        for s in wf.get("steps").and_then(Node::items).unwrap_or(&[]) {
            let Some(sid) = s.get_str("id") else { continue };
            step_ids.push((sid.to_string(), s.pos.clone()));
            let run_outputs = s
                .get("run")
                .and_then(|r| r.get("outputs"))
                .and_then(Node::items);
            let scattered = s
                .get("scatter")
                .and_then(Node::items)
                .is_some_and(|x| !x.is_empty());
            let nested =
                s.get("scatterMethod").and_then(Node::as_str) == Some("nested_crossproduct");
            let n_scatter = s
                .get("scatter")
                .and_then(Node::items)
                .map_or(0, <[Node]>::len);
            let conditional = s.get("when").is_some();
            for o in s.get("out").and_then(Node::items).unwrap_or(&[]) {
                let Some(oid) = o.as_str() else { continue };
                let t = run_outputs
                    .and_then(|outs| {
                        outs.iter()
                            .find(|x| x.get_str("id").map(shortname) == Some(shortname(oid)))
                    })
                    .and_then(|x| x.get("type"))
                    .map(|t| {
                        let mut t = t.clone();
                        if scattered {
                            let depth = if nested { n_scatter } else { 1 };
                            for _ in 0..depth {
                                let mut m = Node::map(&t.pos);
                                m.set("type", Node::str(&t.pos, "array"));
                                m.set("items", t);
                                t = m;
                            }
                        }
                        if conditional {
                            let p = t.pos.clone();
                            t = Node::new(p.clone(), V::Seq(vec![Node::str(&p, "null"), t]));
                        }
                        t
                    });
                known.insert(oid.to_string(), t);
            }
        }
        {
            let mut seen: HashMap<String, Pos> = HashMap::new();
            for i in wf.get("inputs").and_then(Node::items).unwrap_or(&[]) {
                if let Some(id) = i.get_str("id") {
                    seen.insert(id.to_string(), i.pos.clone());
                }
            }
            for (sid, p) in &step_ids {
                if let Some(first) = seen.get(sid) {
                    let line = first.line;
                    self.error(
                        p,
                        format!("step id `{}` is already used (line {line})", shortname(sid)),
                        Some("give each step and input its own name".into()),
                    );
                } else {
                    seen.insert(sid.clone(), p.clone());
                }
            }
        }
        // Step inputs.
        let mut checks: Vec<Connection> = Vec::new();
        if let Some(V::Seq(steps)) = wf.get_mut("steps").map(|s| &mut s.v) {
            for s in steps.iter_mut() {
                let run_inputs: Vec<Node> = s
                    .get("run")
                    .and_then(|r| r.get("inputs"))
                    .and_then(Node::items)
                    .map(<[Node]>::to_vec)
                    .unwrap_or_default();
                let scatter: Vec<String> = s
                    .get("scatter")
                    .and_then(Node::items)
                    .unwrap_or(&[])
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect();
                let Some(V::Seq(ins)) = s.get_mut("in").map(|x| &mut x.v) else {
                    continue;
                };
                for i in ins.iter_mut() {
                    let iid = i.get_str("id").unwrap_or("").to_string();
                    let Some(src) = i.get_mut("source") else {
                        continue;
                    };
                    let sources = self.resolve_refs(src, &iid, 2, &known);
                    let has_value_from = i.get("valueFrom").is_some();
                    let sink = run_inputs
                        .iter()
                        .find(|x| x.get_str("id").map(shortname) == Some(shortname(&iid)))
                        .and_then(|x| x.get("type").cloned());
                    if let Some(sink) = sink
                        && !has_value_from
                    {
                        checks.push(Connection {
                            sources,
                            sink,
                            pos: i.pos.clone(),
                            link_merge: i.get_str("linkMerge").map(str::to_string),
                            pick_value: i.get_str("pickValue").is_some(),
                            scattered: scatter.contains(&iid),
                            what: format!("step input `{}`", shortname(&iid)),
                        });
                    }
                }
            }
        }
        // Workflow outputs.
        if let Some(V::Seq(outs)) = wf.get_mut("outputs").map(|s| &mut s.v) {
            for o in outs.iter_mut() {
                let oid = o.get_str("id").unwrap_or("").to_string();
                let Some(src) = o.get_mut("outputSource") else {
                    continue;
                };
                let sources = self.resolve_refs(src, &oid, 1, &known);
                if let Some(sink) = o.get("type").cloned() {
                    checks.push(Connection {
                        sources,
                        sink,
                        pos: o.pos.clone(),
                        link_merge: o.get_str("linkMerge").map(str::to_string),
                        pick_value: o.get_str("pickValue").is_some(),
                        scattered: false,
                        what: format!("workflow output `{}`", shortname(&oid)),
                    });
                }
            }
        }
        for c in checks {
            self.check_connection(&c, &known);
        }
    }

    /// Resolves the references in `src` (one id or a list) in place.
    fn resolve_refs(
        &mut self,
        src: &mut Node,
        from: &str,
        strip: usize,
        known: &HashMap<String, Option<Node>>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        let mut fix = |n: &mut Node, this: &mut Loader| {
            if let V::Str(r) = &n.v {
                let resolved = resolve_ref(r, from, strip, known, &file_uri(&n.pos));
                match resolved {
                    Ok(id) => {
                        out.push(id.clone());
                        n.v = V::Str(id);
                    }
                    Err(candidate) => {
                        let names: Vec<String> = known.keys().map(|k| relative_name(k)).collect();
                        let hint = match uri::did_you_mean(r, names.iter().map(String::as_str)) {
                            Some(m) => format!("did you mean `{m}`?"),
                            None => {
                                "name a workflow input (`name`) or a step output (`step/output`)"
                                    .to_string()
                            }
                        };
                        this.error(
                            &n.pos,
                            format!("`{r}` is not a workflow input or a step output"),
                            Some(hint),
                        );
                        n.v = V::Str(candidate);
                    }
                }
            }
        };
        match &mut src.v {
            V::Seq(items) => {
                for i in items.iter_mut() {
                    fix(i, self);
                }
            }
            _ => fix(src, self),
        }
        out
    }
}

/// One connection to type-check: sources flowing into a sink.
struct Connection {
    sources: Vec<String>,
    sink: Node,
    pos: Pos,
    link_merge: Option<String>,
    pick_value: bool,
    scattered: bool,
    what: String,
}

impl Loader {
    /// cwltool's `check_types`, per source: merge_nested (the default for
    /// several sources) wraps each source in an array, merge_flattened
    /// wraps only non-arrays.
    fn check_connection(&mut self, c: &Connection, known: &HashMap<String, Option<Node>>) {
        if c.pick_value {
            return;
        }
        let mut sink = c.sink.to_json();
        if c.scattered {
            // The sink receives one element at a time.
            sink = serde_json::json!({"type": "array", "items": sink});
        }
        let link_merge = c
            .link_merge
            .clone()
            .or_else(|| (c.sources.len() > 1).then(|| "merge_nested".to_string()));
        for s in &c.sources {
            let Some(Some(t)) = known.get(s) else {
                continue;
            };
            let t = t.to_json();
            let src = match link_merge.as_deref() {
                Some("merge_nested") => serde_json::json!({"type": "array", "items": t}),
                Some("merge_flattened") => merge_flatten_type(&t),
                _ => t,
            };
            let verdict = can_assign(&src, &sink);
            if verdict == Compat::Maybe {
                tracing::warn!(
                    "{}: {}: source `{}` of type {} may not match {}",
                    c.pos,
                    c.what,
                    relative_name(s),
                    type_name(&src),
                    type_name(&sink)
                );
            }
            if verdict == Compat::No {
                self.error(
                    &c.pos,
                    format!(
                        "{}: source `{}` of type {} can never be {}",
                        c.what,
                        relative_name(s),
                        type_name(&src),
                        type_name(&sink)
                    ),
                    Some(
                        "connect a source of a matching type, or convert it with `valueFrom`"
                            .into(),
                    ),
                );
            }
        }
    }
}

/// cwltool's `merge_flatten_type`: arrays stay, anything else is wrapped.
fn merge_flatten_type(t: &serde_json::Value) -> serde_json::Value {
    match t {
        serde_json::Value::Array(members) => {
            serde_json::Value::Array(members.iter().map(merge_flatten_type).collect())
        }
        _ if t.get("type").and_then(|x| x.as_str()) == Some("array") => t.clone(),
        _ => serde_json::json!({"type": "array", "items": t}),
    }
}

/// Whether a source type fits a sink type.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Compat {
    Yes,
    Maybe,
    No,
}

fn type_name(t: &serde_json::Value) -> String {
    match t {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) => {
            let parts: Vec<String> = a.iter().map(type_name).collect();
            format!("({})", parts.join(" | "))
        }
        serde_json::Value::Object(o) => match o.get("type").and_then(|x| x.as_str()) {
            Some("array") => format!("{}[]", o.get("items").map_or("?".into(), type_name)),
            Some(k) => k.to_string(),
            None => "?".into(),
        },
        _ => "?".into(),
    }
}

/// cwltool's `can_assign_src_to_sink`, three-valued: a union source fits if
/// any member may fit (a warning in cwltool when not all do).
pub(crate) fn can_assign(src: &serde_json::Value, sink: &serde_json::Value) -> Compat {
    use serde_json::Value as J;
    if sink == "Any" || src == "Any" {
        return Compat::Yes;
    }
    match (src, sink) {
        (J::Array(members), _) => {
            let results: Vec<Compat> = members
                .iter()
                .filter(|m| !(m.as_str() == Some("null") && sink_accepts_null(sink)))
                .map(|m| can_assign(m, sink))
                .collect();
            if results.is_empty() || results.iter().all(|r| *r == Compat::Yes) {
                Compat::Yes
            } else if results.iter().any(|r| *r != Compat::No) {
                Compat::Maybe
            } else if members.iter().any(|m| m.as_str() == Some("null")) {
                // Only the null branch could pass.
                Compat::Maybe
            } else {
                Compat::No
            }
        }
        (_, J::Array(members)) => {
            let best = members.iter().map(|m| can_assign(src, m));
            let mut out = Compat::No;
            for r in best {
                if r == Compat::Yes {
                    return Compat::Yes;
                }
                if r == Compat::Maybe {
                    out = Compat::Maybe;
                }
            }
            out
        }
        (J::Object(a), J::Object(b)) => {
            let ka = a.get("type").and_then(|x| x.as_str());
            let kb = b.get("type").and_then(|x| x.as_str());
            match (ka, kb) {
                (Some("array"), Some("array")) => match (a.get("items"), b.get("items")) {
                    (Some(x), Some(y)) => can_assign(x, y),
                    _ => Compat::Maybe,
                },
                (Some("record"), Some("record")) => Compat::Maybe,
                (Some("enum"), Some("enum")) => Compat::Maybe,
                _ => Compat::No,
            }
        }
        (J::Object(a), J::String(s)) => {
            let k = a.get("type").and_then(|x| x.as_str());
            match (k, s.as_str()) {
                (Some("enum"), "string") => Compat::Yes,
                _ => Compat::No,
            }
        }
        (J::String(s), J::Object(b)) => {
            let k = b.get("type").and_then(|x| x.as_str());
            match (s.as_str(), k) {
                ("string", Some("enum")) => Compat::Maybe,
                _ => Compat::No,
            }
        }
        (J::String(a), J::String(b)) => {
            if a == b {
                return Compat::Yes;
            }
            let numeric = ["int", "long", "float", "double"];
            if numeric.contains(&a.as_str()) && numeric.contains(&b.as_str()) {
                return Compat::Yes;
            }
            Compat::No
        }
        _ => Compat::Maybe,
    }
}

fn sink_accepts_null(sink: &serde_json::Value) -> bool {
    match sink {
        serde_json::Value::String(s) => s == "null" || s == "Any",
        serde_json::Value::Array(a) => a.iter().any(sink_accepts_null),
        _ => false,
    }
}

/// `file:///wf.cwl#main/step/out` -> `step/out` (what a user writes).
fn relative_name(id: &str) -> String {
    let frag = id.rsplit_once('#').map_or(id, |(_, f)| f);
    let segs: Vec<&str> = frag.split('/').collect();
    if segs.len() >= 2 {
        segs[segs.len() - 2..].join("/")
    } else {
        frag.to_string()
    }
}

/// Salad's reference resolution with `refScope`: strip `strip` segments of
/// the referring object's id, then try each enclosing scope.
fn resolve_ref(
    r: &str,
    from: &str,
    strip: usize,
    known: &HashMap<String, Option<Node>>,
    file: &str,
) -> Result<String, String> {
    if uri::has_scheme(r) {
        return if known.contains_key(r) {
            Ok(r.to_string())
        } else {
            Err(r.to_string())
        };
    }
    if r.starts_with('#') {
        let abs = uri::resolve_uri(file, r);
        if known.contains_key(&abs) {
            return Ok(abs);
        }
        let abs2 = uri::resolve_uri(from, r);
        return if known.contains_key(&abs2) {
            Ok(abs2)
        } else {
            Err(abs)
        };
    }
    let (doc, frag) = uri::split_frag(from);
    let segs: Vec<&str> = frag.map(|f| f.split('/').collect()).unwrap_or_default();
    let keep = segs.len().saturating_sub(strip);
    let mut first = None;
    for n in (0..=keep).rev() {
        let cand = if n == 0 {
            format!("{doc}#{r}")
        } else {
            format!("{doc}#{}/{r}", segs[..n].join("/"))
        };
        if known.contains_key(&cand) {
            return Ok(cand);
        }
        first.get_or_insert(cand);
    }
    Err(first.unwrap_or_else(|| format!("{doc}#{r}")))
}
