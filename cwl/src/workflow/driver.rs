//! The workflow driver: readiness of steps, step inputs, scatter, `when`.

use std::collections::{HashMap, HashSet};

use futures::FutureExt;
use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::{Map, Value};

use super::links::{sink_value, source_ids};
use super::reqs::Effective;
use super::{Engine, array_of, brief, id_of, in_context, key_segment};
use crate::CwlError;
use crate::expr::Evaluator;
use crate::load::shortname;

/// How the jobs of a scatter are laid out.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Method {
    Dot,
    Nested,
    Flat,
}

/// The ids of a step's `out` entries (strings, or objects with an `id`).
fn out_ids(step: &Value) -> Vec<&str> {
    array_of(step, "out")
        .iter()
        .filter_map(|o| o.as_str().or_else(|| o.get("id").and_then(Value::as_str)))
        .collect()
}

/// The display name of a step (its short id).
fn step_name(step: &Value) -> &str {
    shortname(id_of(step))
}

/// True when a type admits `null` (the type `null` or a union with it).
fn allows_null(ty: &Value) -> bool {
    match ty {
        Value::String(s) => s == "null",
        Value::Array(items) => items.iter().any(allows_null),
        _ => false,
    }
}

impl Engine {
    /// Runs a Workflow (see the module documentation of `workflow`).
    pub(super) async fn run_workflow(
        &self,
        wf: &Value,
        job: Value,
        key: String,
        eff: Effective,
    ) -> Result<Value, CwlError> {
        let wf_inputs = array_of(wf, "inputs");
        let job = crate::types::validate_inputs(wf_inputs, &job)?;
        let mut state: HashMap<String, Value> = HashMap::new();
        for input in wf_inputs {
            let id = id_of(input);
            let short = shortname(id);
            let mut v = job.get(short).cloned().unwrap_or(Value::Null);
            // `inputBinding.loadContents` is the v1.0 spelling.
            let load = input.get("loadContents").and_then(Value::as_bool) == Some(true)
                || input
                    .pointer("/inputBinding/loadContents")
                    .and_then(Value::as_bool)
                    == Some(true);
            if load {
                self.load_contents(&mut v, &format!("workflow input '{short}'"))
                    .await?;
            }
            state.insert(id.to_string(), v);
        }

        let steps = array_of(wf, "steps");
        check_links(wf, steps, &state)?;

        let mut pending: Vec<usize> = (0..steps.len()).collect();
        let mut running = FuturesUnordered::new();
        loop {
            let mut waiting = Vec::with_capacity(pending.len());
            for i in pending.drain(..) {
                let step = &steps[i];
                if !step_ready(step, &state) {
                    waiting.push(i);
                    continue;
                }
                let name = step_name(step);
                let sourced = step_sources(step, &state)
                    .map_err(|e| in_context(e, &format!("step '{name}'")))?;
                tracing::info!(workflow = %key, "starting step {name}");
                running.push(
                    self.run_step(step, &key, sourced, &eff)
                        .map(move |r| (i, r)),
                );
            }
            pending = waiting;
            let Some((i, result)) = running.next().await else {
                break;
            };
            let mut outputs = result?;
            tracing::info!(workflow = %key, "step {} finished", step_name(&steps[i]));
            for out_id in out_ids(&steps[i]) {
                let v = outputs.remove(shortname(out_id)).unwrap_or(Value::Null);
                state.insert(out_id.to_string(), v);
            }
        }
        if !pending.is_empty() {
            let names: Vec<&str> = pending.iter().map(|&i| step_name(&steps[i])).collect();
            return Err(CwlError::Invalid(format!(
                "{}: steps {} never got all their inputs because their sources depend on each other (a cycle); break the cycle",
                id_of(wf),
                names.join(", ")
            )));
        }

        let mut result = Map::new();
        for out in array_of(wf, "outputs") {
            let short = shortname(id_of(out));
            let what = format!("workflow output '{short}'");
            let v = sink_value(out, "outputSource", &state, &what)?.unwrap_or(Value::Null);
            if let Some(ty) = out.get("type")
                && !(v.is_null() && allows_null(ty))
                && !crate::types::conforms(ty, &v)
            {
                return Err(CwlError::Failed(format!(
                    "{what}: the value {} is not of the declared type {}",
                    brief(&v),
                    brief(ty)
                )));
            }
            result.insert(short.to_string(), v);
        }
        Ok(Value::Object(result))
    }

    /// Runs one step (every job of its scatter) whose inputs, after data
    /// links and defaults, are `sourced` (by short name). Returns the step's
    /// outputs by short name.
    async fn run_step(
        &self,
        step: &Value,
        wf_key: &str,
        mut sourced: Map<String, Value>,
        wf_eff: &Effective,
    ) -> Result<Map<String, Value>, CwlError> {
        let name = step_name(step);
        let context = format!("step '{name}'");
        let key = format!("{wf_key}/{}", key_segment(name));
        let Some(run) = step.get("run").filter(|r| r.is_object()) else {
            return Err(CwlError::Invalid(format!(
                "{context}: `run` is not a loaded process object"
            )));
        };
        let step_eff = Effective::for_step(step, wf_eff);
        let proc_eff = Effective::for_process(run, &step_eff);

        for input in array_of(step, "in") {
            if input.get("loadContents").and_then(Value::as_bool) == Some(true) {
                let short = shortname(id_of(input));
                if let Some(v) = sourced.get_mut(short) {
                    self.load_contents(v, &format!("{context} input '{short}'"))
                        .await?;
                }
            }
        }
        for v in sourced.values_mut() {
            super::fill_names(v);
        }
        let uses_value_from = array_of(step, "in")
            .iter()
            .any(|i| i.get("valueFrom").is_some_and(|v| !v.is_null()));
        if uses_value_from && !step_eff.has("StepInputExpressionRequirement") {
            return Err(CwlError::Invalid(format!(
                "{context} uses valueFrom but StepInputExpressionRequirement is not in the requirements of the step or workflow; add it"
            )));
        }

        let element = Element {
            engine: self,
            step,
            run,
            step_eff: &step_eff,
            proc_eff: &proc_eff,
        };

        let scatter: Vec<&str> = match step.get("scatter") {
            Some(Value::String(s)) => vec![shortname(s)],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(shortname)
                .collect(),
            _ => Vec::new(),
        };
        if scatter.is_empty() {
            return element
                .run(sourced, key)
                .await
                .map_err(|e| in_context(e, &context));
        }

        let method = match step.get("scatterMethod").and_then(Value::as_str) {
            None if scatter.len() == 1 => Method::Dot,
            None => {
                return Err(CwlError::Invalid(format!(
                    "{context} scatters over several inputs but has no scatterMethod; add dotproduct, nested_crossproduct or flat_crossproduct"
                )));
            }
            Some("dotproduct") => Method::Dot,
            Some("nested_crossproduct") => Method::Nested,
            Some("flat_crossproduct") => Method::Flat,
            Some(other) => {
                return Err(CwlError::Invalid(format!(
                    "{context}: unknown scatterMethod '{other}'; use dotproduct, nested_crossproduct or flat_crossproduct"
                )));
            }
        };
        let mut dims = Vec::with_capacity(scatter.len());
        for s in &scatter {
            match sourced.get(*s) {
                Some(Value::Array(items)) => dims.push(items.len()),
                other => {
                    return Err(CwlError::Failed(format!(
                        "{context}: scattered input '{s}' must be an array, got {}",
                        brief(other.unwrap_or(&Value::Null))
                    )));
                }
            }
        }
        let total = match method {
            Method::Dot => {
                if dims.iter().any(|d| *d != dims[0]) {
                    let lens: Vec<String> = scatter
                        .iter()
                        .zip(&dims)
                        .map(|(s, d)| format!("{s}: {d}"))
                        .collect();
                    return Err(CwlError::Failed(format!(
                        "{context}: dotproduct scatter needs arrays of the same length, got {}",
                        lens.join(", ")
                    )));
                }
                dims[0]
            }
            Method::Nested | Method::Flat => dims.iter().product(),
        };
        if total == 0 {
            tracing::info!("{context}: scattering over an empty array; every output is empty");
        }

        // The index of job `k` in each scattered array.
        let indices = |k: usize| -> Vec<usize> {
            match method {
                Method::Dot => vec![k; dims.len()],
                Method::Nested | Method::Flat => {
                    let mut idx = vec![0; dims.len()];
                    let mut rest = k;
                    for (slot, d) in idx.iter_mut().zip(&dims).rev() {
                        *slot = rest % d;
                        rest /= d;
                    }
                    idx
                }
            }
        };
        let label = |idx: &[usize]| -> String {
            match method {
                Method::Dot => idx.first().map_or(String::new(), usize::to_string),
                _ => idx
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join("/"),
            }
        };
        let sourced = &sourced;
        let start = |k: usize| {
            let idx = indices(k);
            let mut job = Map::with_capacity(sourced.len());
            for (name, v) in sourced {
                if !scatter.contains(&name.as_str()) {
                    job.insert(name.clone(), v.clone());
                }
            }
            for (s, i) in scatter.iter().zip(&idx) {
                let v = sourced
                    .get(*s)
                    .and_then(|a| a.get(*i))
                    .cloned()
                    .unwrap_or(Value::Null);
                job.insert((*s).to_string(), v);
            }
            let lbl = label(&idx);
            let job_key = format!("{key}/{lbl}");
            let element = &element;
            let context = &context;
            async move {
                let r = element
                    .run(job, job_key)
                    .await
                    .map_err(|e| in_context(e, &format!("{context} (scatter job {lbl})")));
                (k, r)
            }
        };

        let mut results: Vec<Option<Map<String, Value>>> = (0..total).map(|_| None).collect();
        let mut next = 0;
        let mut running = FuturesUnordered::new();
        loop {
            while next < total && (self.scatter_window == 0 || running.len() < self.scatter_window)
            {
                running.push(start(next));
                next += 1;
            }
            let Some((k, r)) = running.next().await else {
                break;
            };
            results[k] = Some(r?);
        }
        drop(running);

        let outs = out_ids(step);
        let mut columns: Vec<Vec<Value>> = outs.iter().map(|_| Vec::with_capacity(total)).collect();
        for mut r in results.into_iter().flatten() {
            for (col, out) in columns.iter_mut().zip(&outs) {
                col.push(r.remove(shortname(out)).unwrap_or(Value::Null));
            }
        }
        let mut gathered = Map::new();
        for (col, out) in columns.into_iter().zip(&outs) {
            let v = match method {
                Method::Nested => reshape(&dims, &mut col.into_iter()),
                Method::Dot | Method::Flat => Value::Array(col),
            };
            gathered.insert(shortname(out).to_string(), v);
        }
        Ok(gathered)
    }
}

/// Nests the row-major values of `it` into arrays of dimensions `dims`.
fn reshape(dims: &[usize], it: &mut impl Iterator<Item = Value>) -> Value {
    match dims.split_first() {
        None => it.next().unwrap_or(Value::Null),
        Some((n, rest)) => Value::Array((0..*n).map(|_| reshape(rest, it)).collect()),
    }
}

/// One job of a step (the whole step, or one job of its scatter).
struct Element<'a> {
    engine: &'a Engine,
    step: &'a Value,
    run: &'a Value,
    step_eff: &'a Effective,
    proc_eff: &'a Effective,
}

impl Element<'_> {
    /// Applies `valueFrom` and `when` to the job's inputs `inputs` and runs
    /// the step's process under `key`; returns the step outputs by short
    /// name (all null when `when` is false).
    async fn run(
        &self,
        inputs: Map<String, Value>,
        key: String,
    ) -> Result<Map<String, Value>, CwlError> {
        let outs = out_ids(self.step);
        let Some(job) = step_expressions(self.step, inputs, self.step_eff)? else {
            tracing::info!(key = %key, "skipped: `when` is false");
            return Ok(outs
                .iter()
                .map(|o| (shortname(o).to_string(), Value::Null))
                .collect());
        };
        // A null input means "not given": the process's default applies.
        let job: Map<String, Value> = job.into_iter().filter(|(_, v)| !v.is_null()).collect();
        let result = self
            .engine
            .run_process(self.run, Value::Object(job), key, self.proc_eff.clone())
            .await?;
        let mut result = match result {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            other => {
                return Err(CwlError::Failed(format!(
                    "the process returned {} instead of an output object",
                    brief(&other)
                )));
            }
        };
        Ok(outs
            .iter()
            .map(|o| {
                let short = shortname(o);
                (
                    short.to_string(),
                    result.remove(short).unwrap_or(Value::Null),
                )
            })
            .collect())
    }
}

/// Evaluates the step's `valueFrom`s (each with `self` its input's value
/// and `inputs` the job before any `valueFrom`) and then `when` (with the
/// job after them). Returns the job, or `None` when `when` is false.
fn step_expressions(
    step: &Value,
    inputs: Map<String, Value>,
    eff: &Effective,
) -> Result<Option<Map<String, Value>>, CwlError> {
    let value_froms: Vec<(&str, &Value)> = array_of(step, "in")
        .iter()
        .filter_map(|i| match i.get("valueFrom") {
            Some(v) if !v.is_null() => Some((shortname(id_of(i)), v)),
            _ => None,
        })
        .collect();
    let when = step.get("when").filter(|w| !w.is_null());
    if value_froms.is_empty() && when.is_none() {
        return Ok(Some(inputs));
    }
    let mut ev = Evaluator::new(&eff.for_expressions())?;
    let runtime = Value::Object(Map::new());
    let mut job = inputs;
    if !value_froms.is_empty() {
        let before = Value::Object(job.clone());
        for (name, expr) in value_froms {
            let self_ = before.get(name).unwrap_or(&Value::Null);
            let v = ev
                .eval(expr, &before, self_, &runtime)
                .map_err(|e| in_context(e, &format!("input '{name}' valueFrom")))?;
            job.insert(name.to_string(), v);
        }
    }
    let Some(when) = when else {
        return Ok(Some(job));
    };
    let inputs = Value::Object(job);
    let decision = ev
        .eval(when, &inputs, &Value::Null, &runtime)
        .map_err(|e| in_context(e, "when"))?;
    match decision {
        Value::Bool(true) => match inputs {
            Value::Object(m) => Ok(Some(m)),
            _ => Ok(Some(Map::new())),
        },
        Value::Bool(false) => Ok(None),
        other => Err(CwlError::Failed(format!(
            "`when` must evaluate to true or false, got {}",
            brief(&other)
        ))),
    }
}

/// True when every source of every input of `step` has a value.
fn step_ready(step: &Value, state: &HashMap<String, Value>) -> bool {
    array_of(step, "in")
        .iter()
        .flat_map(|i| source_ids(i.get("source")))
        .all(|s| state.contains_key(s))
}

/// The step's inputs after data links (`linkMerge`, `pickValue`) and
/// `default`, by short name; inputs with neither get null.
fn step_sources(
    step: &Value,
    state: &HashMap<String, Value>,
) -> Result<Map<String, Value>, CwlError> {
    let mut out = Map::new();
    for input in array_of(step, "in") {
        let short = shortname(id_of(input));
        let what = format!("input '{short}'");
        let v = sink_value(input, "source", state, &what)?.unwrap_or(Value::Null);
        let v = match (v, input.get("default")) {
            (Value::Null, Some(d)) => d.clone(),
            (v, _) => v,
        };
        out.insert(short.to_string(), v);
    }
    Ok(out)
}

/// Checks that every data link of `wf` starts at a workflow input or a step
/// output, before anything runs.
fn check_links(
    wf: &Value,
    steps: &[Value],
    state: &HashMap<String, Value>,
) -> Result<(), CwlError> {
    let produced: HashSet<&str> = steps.iter().flat_map(out_ids).collect();
    let known = |s: &str| state.contains_key(s) || produced.contains(s);
    for step in steps {
        for input in array_of(step, "in") {
            for s in source_ids(input.get("source")) {
                if !known(s) {
                    return Err(CwlError::Invalid(format!(
                        "{}: step '{}' input '{}' has source '{s}', which is neither a workflow input nor a step output",
                        id_of(wf),
                        step_name(step),
                        shortname(id_of(input))
                    )));
                }
            }
        }
    }
    for out in array_of(wf, "outputs") {
        for s in source_ids(out.get("outputSource")) {
            if !known(s) {
                return Err(CwlError::Invalid(format!(
                    "{}: workflow output '{}' has outputSource '{s}', which is neither a workflow input nor a step output",
                    id_of(wf),
                    shortname(id_of(out))
                )));
            }
        }
    }
    Ok(())
}
