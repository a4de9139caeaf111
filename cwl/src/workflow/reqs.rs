//! Effective requirements and hints of one process invocation.
//!
//! CWL (Process.yml, "Requirements and hints") says the most specific entry
//! of a class wins: a process's own `requirements` beat its step's, which
//! beat the enclosing workflow's (and so on outwards). Hints are resolved
//! the same way, and any requirement beats any hint of the same class, even
//! a hint that is more specific. Requirements given in the input object
//! (`cwl:requirements`) count as the top-level process's own and win over
//! the ones written in it.
//!
//! Only requirements that make sense for a CommandLineTool or an
//! ExpressionTool are handed down to one from enclosing workflows (the spec
//! lists them), so a tool never sees, say, `ScatterFeatureRequirement` it
//! did not ask for.

use serde_json::Value;

/// The requirement classes a CommandLineTool (or ExpressionTool) inherits
/// from enclosing steps and workflows (Process.yml lists them).
pub const TOOL_INHERITABLE: &[&str] = &[
    "InlineJavascriptRequirement",
    "SchemaDefRequirement",
    "DockerRequirement",
    "SoftwareRequirement",
    "InitialWorkDirRequirement",
    "EnvVarRequirement",
    "ShellCommandRequirement",
    "ResourceRequirement",
    "LoadListingRequirement",
    "WorkReuse",
    "NetworkAccess",
    "InplaceUpdateRequirement",
    "ToolTimeLimit",
];

/// Requirements and hints in effect at one level (a workflow, a step or a
/// process), each class at most once, most specific first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Effective {
    /// Effective requirements.
    pub requirements: Vec<Value>,
    /// Effective hints; no class here also appears in `requirements`.
    pub hints: Vec<Value>,
}

/// The `class` of a requirement or hint object.
pub fn class_of(v: &Value) -> Option<&str> {
    v.get("class").and_then(Value::as_str)
}

/// The objects of a `requirements` or `hints` array of `obj` (empty when
/// absent or not an array).
pub fn list_of<'a>(obj: &'a Value, field: &str) -> &'a [Value] {
    obj.get(field)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Appends to `out` every entry of `items` whose class is not yet in `out`
/// (entries without a class are kept as they are).
fn add_missing(out: &mut Vec<Value>, items: &[Value], keep: &dyn Fn(&str) -> bool) {
    for item in items {
        match class_of(item) {
            Some(c) if !keep(c) => {}
            Some(c) if out.iter().any(|o| class_of(o) == Some(c)) => {}
            _ => out.push(item.clone()),
        }
    }
}

impl Effective {
    /// The effective lists of a level whose own entries are `own_reqs` and
    /// `own_hints`, enclosed by a level whose effective lists are `outer`.
    /// `inherit(class)` says whether an outer entry of that class is handed
    /// down at all.
    pub fn nest(
        own_reqs: &[Value],
        own_hints: &[Value],
        outer: &Effective,
        inherit: &dyn Fn(&str) -> bool,
    ) -> Effective {
        let all = |_: &str| true;
        let mut requirements = Vec::new();
        add_missing(&mut requirements, own_reqs, &all);
        add_missing(&mut requirements, &outer.requirements, inherit);
        let mut hints = Vec::new();
        add_missing(&mut hints, own_hints, &all);
        add_missing(&mut hints, &outer.hints, inherit);
        hints.retain(|h| match class_of(h) {
            Some(c) => !requirements.iter().any(|r| class_of(r) == Some(c)),
            None => true,
        });
        Effective {
            requirements,
            hints,
        }
    }

    /// The effective lists of the workflow step object `step` (its own
    /// `requirements`/`hints` over the enclosing workflow's `outer`).
    pub fn for_step(step: &Value, outer: &Effective) -> Effective {
        Effective::nest(
            list_of(step, "requirements"),
            list_of(step, "hints"),
            outer,
            &|_| true,
        )
    }

    /// The effective lists of `process` run by a step whose effective lists
    /// are `outer`. A CommandLineTool or ExpressionTool only inherits the
    /// classes of [`TOOL_INHERITABLE`].
    pub fn for_process(process: &Value, outer: &Effective) -> Effective {
        let is_tool = matches!(
            process.get("class").and_then(Value::as_str),
            Some("CommandLineTool") | Some("ExpressionTool")
        );
        let inherit = move |c: &str| !is_tool || TOOL_INHERITABLE.contains(&c);
        Effective::nest(
            list_of(process, "requirements"),
            list_of(process, "hints"),
            outer,
            &inherit,
        )
    }

    /// The effective lists of the top-level process, with the input
    /// object's `cwl:requirements` (`job_reqs`) winning over its own.
    pub fn top_level(process: &Value, job_reqs: &[Value]) -> Effective {
        let own = Effective::nest(
            list_of(process, "requirements"),
            list_of(process, "hints"),
            &Effective::default(),
            &|_| true,
        );
        Effective::nest(job_reqs, &[], &own, &|_| true)
    }

    /// True when a requirement or hint of `class` is in effect.
    pub fn has(&self, class: &str) -> bool {
        self.requirements
            .iter()
            .chain(&self.hints)
            .any(|r| class_of(r) == Some(class))
    }

    /// Requirements followed by hints, for an expression evaluator (which
    /// looks for `InlineJavascriptRequirement` in either).
    pub fn for_expressions(&self) -> Vec<Value> {
        self.requirements
            .iter()
            .chain(&self.hints)
            .cloned()
            .collect()
    }
}
