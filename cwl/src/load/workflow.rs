//! Workflow steps: `in`/`out`/`run`/`scatter`/`when`, the resolution of
//! `source`, `outputSource` and `scatter` references, and the static check
//! of the types along each connection.

use std::collections::{HashMap, HashSet};

use super::fields::K;
use super::node::{Entry, Node, Pos, V};
use super::process::{Ctx, file_uri, into_entries, take};
use super::{Loader, Version, checker, shortname, uri};

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
        let mut in_pos = pos.clone();
        if let Some(e) = take(&mut entries, "in") {
            in_pos = e.key_pos.clone();
            let items = self.list_form(e.value, "id", Some("source"), "in");
            for i in items {
                if let Some(n) = self.norm_step_input(i, &step_ctx) {
                    ins.push(n);
                }
            }
        }
        self.check_dup_ids(&ins, "the step's `in`");
        out.set("in", Node::new(in_pos, V::Seq(ins)));
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
                    self.expect(&value, &[K::Expr], "when");
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
                "label" | "doc" => {
                    self.check_label_doc(&key, &value);
                    out.set(&key, value);
                }
                k if uri::has_scheme(k) => extensions.push((key, value)),
                _ => {}
            }
        }
        let classes: Vec<String> = requirements
            .iter()
            .chain(hints.iter())
            .filter_map(|r| r.get_str("class").map(str::to_string))
            .collect();
        self.req_stack.push(classes);
        let run = match run {
            Some(r) => self.load_run(r, &id, ctx),
            None => None,
        };
        if let Some(run) = &run {
            self.check_step_outs(&outs, run, &id);
            self.check_step_binds_required(&out, run, &id);
            if run.get_str("class") == Some("Workflow")
                && !self.has_feature("SubworkflowFeatureRequirement")
            {
                self.error(
                    &pos,
                    format!(
                        "step `{}` runs a workflow, but SubworkflowFeatureRequirement is not in the requirements",
                        shortname(&id)
                    ),
                    Some("add `SubworkflowFeatureRequirement: {}` to the workflow's requirements".into()),
                );
            }
        }
        if scatter
            .as_ref()
            .is_some_and(|s| s.items().is_some_and(|x| !x.is_empty()))
        {
            if !self.has_feature("ScatterFeatureRequirement") {
                self.error(
                    &pos,
                    format!(
                        "step `{}` scatters, but ScatterFeatureRequirement is not in the requirements",
                        shortname(&id)
                    ),
                    Some("add `ScatterFeatureRequirement: {}` to the workflow's requirements".into()),
                );
            }
            if scatter
                .as_ref()
                .and_then(Node::items)
                .is_some_and(|x| x.len() > 1)
                && scatter_method.is_none()
            {
                self.error(
                    &pos,
                    format!("step `{}` scatters over several inputs without a `scatterMethod`", shortname(&id)),
                    Some("add `scatterMethod: dotproduct` (or nested_crossproduct, flat_crossproduct)".into()),
                );
            }
        }
        self.req_stack.pop();
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

    /// Whether a feature requirement (or hint) is in force for the step
    /// being normalized: its own or an enclosing workflow's or step's.
    fn has_feature(&self, class: &str) -> bool {
        self.req_stack.iter().flatten().any(|c| c == class)
    }

    /// cwltool rejects a step that leaves a required input of its process
    /// (no `null` in its type, no default) unconnected.
    fn check_step_binds_required(&mut self, step: &Node, run: &Node, step_id: &str) {
        let bound: Vec<&str> = step
            .get("in")
            .and_then(Node::items)
            .unwrap_or(&[])
            .iter()
            .filter_map(|i| i.get_str("id"))
            .map(shortname)
            .collect();
        let mut missing = Vec::new();
        for i in run.get("inputs").and_then(Node::items).unwrap_or(&[]) {
            let Some(id) = i.get_str("id") else { continue };
            if bound.contains(&shortname(id)) || i.get("default").is_some() {
                continue;
            }
            let optional = match i.get("type").map(|t| &t.v) {
                Some(V::Str(s)) => s.contains("null"),
                Some(V::Seq(items)) => items.iter().any(|x| x.as_str() == Some("null")),
                _ => false,
            };
            if !optional {
                missing.push(shortname(id).to_string());
            }
        }
        if !missing.is_empty() {
            let pos = step
                .get("in")
                .map_or_else(|| step.pos.clone(), |n| n.pos.clone());
            self.error(
                &pos,
                format!(
                    "step `{}` does not connect the required input{} `{}` of its process",
                    shortname(step_id),
                    if missing.len() > 1 { "s" } else { "" },
                    missing.join("`, `")
                ),
                Some("add it to the step's `in` (with a `source` or a `default`)".into()),
            );
        }
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
                // Like schema-salad, an inline process's own id is scoped
                // under `step/run`.
                let mut raw = raw;
                let key = match raw.get("id") {
                    Some(n) if n.as_str().is_some() => {
                        let abs = uri::resolve_id(&default_id, n.as_str().unwrap_or(""));
                        let p = n.pos.clone();
                        raw.set("id", Node::str(&p, abs.clone()));
                        abs
                    }
                    _ => default_id.clone(),
                };
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
    /// types along every connection (cwltool's static checker) and that the
    /// steps do not depend on each other in a cycle.
    pub(crate) fn check_workflow(&mut self, wf: &mut Node) {
        // Every id a source may name: its parameter (type, secondaryFiles)
        // and whether it comes from a conditional step.
        let mut known: HashMap<String, Option<Src>> = HashMap::new();
        for i in wf.get("inputs").and_then(Node::items).unwrap_or(&[]) {
            if let Some(id) = i.get_str("id") {
                known.insert(id.to_string(), Some(Src::of(i, false)));
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
            let n_scatter = s
                .get("scatter")
                .and_then(Node::items)
                .map_or(0, <[Node]>::len);
            let nested = s.get_str("scatterMethod") == Some("nested_crossproduct");
            let depth = match n_scatter {
                0 => 0,
                n if nested => n,
                _ => 1,
            };
            let conditional = s.get("when").is_some();
            for o in s.get("out").and_then(Node::items).unwrap_or(&[]) {
                let Some(oid) = o.as_str() else { continue };
                let src = run_outputs
                    .and_then(|outs| {
                        outs.iter()
                            .find(|x| x.get_str("id").map(shortname) == Some(shortname(oid)))
                    })
                    .map(|x| {
                        let mut src = Src::of(x, conditional);
                        for _ in 0..depth {
                            src.param["type"] =
                                serde_json::json!({"type": "array", "items": src.param["type"].take()});
                        }
                        src
                    });
                known.insert(oid.to_string(), src);
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
        let mut checks: Vec<Connection> = Vec::new();
        // Step -> the steps it takes inputs from, for the cycle check.
        let mut deps: Vec<(String, Pos, Vec<String>)> = Vec::new();
        let step_of = |id: &str| -> Option<String> {
            step_ids
                .iter()
                .find(|(s, _)| id.starts_with(s.as_str()) && id[s.len()..].starts_with('/'))
                .map(|(s, _)| s.clone())
        };
        if let Some(V::Seq(steps)) = wf.get_mut("steps").map(|s| &mut s.v) {
            for s in steps.iter_mut() {
                let sid = s.get_str("id").unwrap_or("").to_string();
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
                let mut step_deps = Vec::new();
                let Some(V::Seq(ins)) = s.get_mut("in").map(|x| &mut x.v) else {
                    continue;
                };
                for i in ins.iter_mut() {
                    let iid = i.get_str("id").unwrap_or("").to_string();
                    let Some(src) = i.get_mut("source") else {
                        continue;
                    };
                    let sources = self.resolve_refs(src, &iid, 2, &known);
                    step_deps.extend(sources.iter().filter_map(|x| step_of(x)));
                    let sink = run_inputs
                        .iter()
                        .find(|x| x.get_str("id").map(shortname) == Some(shortname(&iid)));
                    if let Some(sink) = sink {
                        let mut param = Src::of(sink, false).param;
                        if scatter.contains(&iid) {
                            param["type"] =
                                serde_json::json!({"type": "array", "items": param["type"].take()});
                        }
                        checks.push(Connection {
                            sources,
                            is_list: i.get("source").and_then(Node::items).is_some(),
                            sink: param,
                            pos: i.pos.clone(),
                            link_merge: i.get_str("linkMerge").map(str::to_string),
                            pick_value: i.get_str("pickValue").map(str::to_string),
                            value_from: i.get("valueFrom").is_some(),
                            what: format!("step input `{}`", relative_name(&iid)),
                        });
                    }
                }
                deps.push((sid, s.pos.clone(), step_deps));
            }
        }
        if let Some(V::Seq(outs)) = wf.get_mut("outputs").map(|s| &mut s.v) {
            for o in outs.iter_mut() {
                let oid = o.get_str("id").unwrap_or("").to_string();
                let Some(src) = o.get_mut("outputSource") else {
                    continue;
                };
                let sources = self.resolve_refs(src, &oid, 1, &known);
                checks.push(Connection {
                    sources,
                    is_list: o.get("outputSource").and_then(Node::items).is_some(),
                    sink: Src::of(o, false).param,
                    pos: o.pos.clone(),
                    link_merge: o.get_str("linkMerge").map(str::to_string),
                    pick_value: o.get_str("pickValue").map(str::to_string),
                    value_from: false,
                    what: format!("workflow output `{}`", shortname(&oid)),
                });
            }
        }
        for c in checks {
            self.check_connection(&c, &known);
        }
        self.check_cycles(&deps);
    }

    /// Reports steps that depend on each other in a cycle.
    fn check_cycles(&mut self, deps: &[(String, Pos, Vec<String>)]) {
        // Kahn's algorithm: whatever cannot be ordered is on or behind a cycle.
        let mut done: HashSet<&str> = HashSet::new();
        loop {
            let before = done.len();
            for (s, _, d) in deps {
                if !done.contains(s.as_str()) && d.iter().all(|x| done.contains(x.as_str())) {
                    done.insert(s);
                }
            }
            if done.len() == before {
                break;
            }
        }
        let stuck: Vec<&(String, Pos, Vec<String>)> = deps
            .iter()
            .filter(|(s, _, _)| !done.contains(s.as_str()))
            .collect();
        if let Some((_, pos, _)) = stuck.first() {
            let names: Vec<&str> = stuck.iter().map(|(s, _, _)| shortname(s)).collect();
            self.error(
                pos,
                format!(
                    "these steps depend on each other in a cycle: {}",
                    names.join(", ")
                ),
                Some("a step cannot take its inputs, directly or not, from its own outputs".into()),
            );
        }
    }

    /// Resolves the references in `src` (one id or a list) in place.
    fn resolve_refs(
        &mut self,
        src: &mut Node,
        from: &str,
        strip: usize,
        known: &HashMap<String, Option<Src>>,
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

/// A source's parameter object (`type`, `secondaryFiles`) for the checker.
struct Src {
    param: serde_json::Value,
    conditional: bool,
}

impl Src {
    fn of(p: &Node, conditional: bool) -> Src {
        let mut param = serde_json::Map::new();
        for k in ["type", "secondaryFiles"] {
            if let Some(v) = p.get(k) {
                param.insert(k.to_string(), v.to_json());
            }
        }
        Src {
            param: serde_json::Value::Object(param),
            conditional,
        }
    }
}

/// One connection to type-check: sources flowing into a sink.
struct Connection {
    sources: Vec<String>,
    is_list: bool,
    sink: serde_json::Value,
    pos: Pos,
    link_merge: Option<String>,
    pick_value: Option<String>,
    value_from: bool,
    what: String,
}

impl Loader {
    /// cwltool's `_check_all_types` for one sink.
    fn check_connection(&mut self, c: &Connection, known: &HashMap<String, Option<Src>>) {
        if c.value_from {
            return;
        }
        let mut link_merge = c.link_merge.clone();
        let mut params = Vec::new();
        for s in &c.sources {
            let Some(Some(src)) = known.get(s) else {
                continue;
            };
            let mut param = src.param.clone();
            if !c.is_list && src.conditional {
                let t = param["type"].take();
                let mut members = match t {
                    serde_json::Value::Array(m) => m,
                    other => vec![other],
                };
                if !members.iter().any(|m| m == "null") {
                    members.insert(0, serde_json::Value::from("null"));
                }
                param["type"] = serde_json::Value::Array(members);
            }
            params.push((s, param));
        }
        if c.is_list {
            if link_merge.is_none() && c.sources.len() > 1 {
                link_merge = Some("merge_nested".into());
            }
            match c.pick_value.as_deref() {
                Some("first_non_null" | "the_only_non_null") => link_merge = None,
                Some("all_non_null") if link_merge.is_none() => {
                    link_merge = Some("merge_nested".into());
                }
                _ => {}
            }
        } else {
            link_merge = None;
        }
        for (s, param) in params {
            let verdict = checker::check_types(
                &param,
                &c.sink,
                link_merge.as_deref(),
                c.pick_value.as_deref(),
            );
            let src_t = param.get("type").cloned().unwrap_or_default();
            let sink_t = c.sink.get("type").cloned().unwrap_or_default();
            match verdict {
                checker::Verdict::Pass => {}
                checker::Verdict::Warning => tracing::warn!(
                    "{}: {}: source `{}` of type {} may not match {}",
                    c.pos,
                    c.what,
                    relative_name(s),
                    checker::type_name(&src_t),
                    checker::type_name(&sink_t)
                ),
                checker::Verdict::Exception => {
                    let (shown, how) = match link_merge.as_deref() {
                        Some("merge_nested") => (
                            serde_json::json!({"type": "array", "items": src_t}),
                            " (merged into a list by linkMerge merge_nested",
                        ),
                        Some("merge_flattened") if src_t.get("type") != Some(&"array".into()) => (
                            serde_json::json!({"type": "array", "items": src_t}),
                            " (merged into a list by linkMerge merge_flattened",
                        ),
                        _ => (src_t.clone(), ""),
                    };
                    let how = match (how, c.pick_value.as_deref()) {
                        ("", _) => String::new(),
                        (h, Some(p)) => format!("{h}, pickValue {p})"),
                        (h, None) => format!("{h})"),
                    };
                    self.error(
                        &c.pos,
                        format!(
                            "{}: source `{}` gives {}{how}, which can never be {}",
                            c.what,
                            relative_name(s),
                            checker::type_name(&shown),
                            checker::type_name(&sink_t)
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
    known: &HashMap<String, Option<Src>>,
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
