//! Whole-workflow checks: references between jobs, dependency cycles, input
//! files on disk, staging destinations, and files that scattered instances
//! would overwrite.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};

use super::diag::{Sink, closest, did_you_mean, quoted_list};
use super::parse::{Parsed, RawInput, RawJob, clean_relative};
use super::spec::{InputSource, InputSpec, JobTemplate, OutputDecl, Pos, Workflow, WorkflowOutput};
use super::template::has_placeholder;

/// A dependency between two jobs, in the direction work flows.
struct Edge {
    /// The job that runs first.
    from: usize,
    /// The job that waits for it.
    to: usize,
    /// Where the dependency is written (in `to`'s entry).
    pos: Pos,
    /// How it is written, for cycle messages.
    how: String,
}

/// Resolves references and checks what needs the whole workflow.
pub(crate) fn resolve(
    parsed: Parsed,
    source: &Path,
    base_dir: &Path,
    sink: &mut Sink,
    check_files: bool,
) -> Workflow {
    let Parsed {
        name,
        defaults,
        jobs,
        outputs: raw_outputs,
    } = parsed;
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(jobs.len());
    for (i, j) in jobs.iter().enumerate() {
        index.entry(j.template.name.as_str()).or_insert(i);
    }
    let mut v = Validator {
        check_files,
        sink,
        jobs: &jobs,
        index,
        base_dir,
        edges: Vec::new(),
        reported_collisions: HashSet::new(),
        file_checks: HashMap::new(),
    };

    let mut resolved: Vec<(Vec<String>, Vec<InputSpec>)> = Vec::with_capacity(jobs.len());
    for (ci, job) in jobs.iter().enumerate() {
        resolved.push(v.job(ci, job));
    }
    v.cycles();
    let mut outputs = Vec::with_capacity(raw_outputs.len());
    for o in &raw_outputs {
        let context = format!("workflow output \"{}\"", o.name);
        let Some(pi) = v.job_ref(&o.job, o.pos, &format!("{context} comes from")) else {
            continue;
        };
        for out in v.outputs_of(pi, o.output.as_deref(), o.pos, &context) {
            v.check_collision(pi, out, &format!("exporting it as {context}"));
            outputs.push(WorkflowOutput {
                name: o.name.clone(),
                job: o.job.clone(),
                output: jobs[pi].template.outputs[out].name.clone(),
            });
        }
    }
    drop(v);

    let jobs = jobs
        .into_iter()
        .zip(resolved)
        .map(|(raw, (after, inputs))| JobTemplate {
            after,
            inputs,
            ..raw.template
        })
        .collect();
    Workflow {
        name,
        source: source.to_path_buf(),
        base_dir: base_dir.to_path_buf(),
        defaults,
        jobs,
        outputs,
    }
}

struct Validator<'a, 's> {
    /// Check that local input files exist (not for a stored workflow,
    /// whose inputs were imported when it first ran).
    check_files: bool,
    sink: &'s mut Sink,
    jobs: &'a [RawJob],
    /// Job index by name (the first, when a name is duplicated).
    index: HashMap<&'a str, usize>,
    base_dir: &'a Path,
    edges: Vec<Edge>,
    /// (job, output, pattern) already reported as colliding.
    reported_collisions: HashSet<(usize, usize, usize)>,
    /// Local files already looked at, with the problem found (if any).
    file_checks: HashMap<PathBuf, Option<(String, String)>>,
}

impl Validator<'_, '_> {
    /// Resolves one job's `after:` and inputs: its dependencies in order of
    /// mention, and its inputs with their sources resolved.
    fn job(&mut self, ci: usize, job: &RawJob) -> (Vec<String>, Vec<InputSpec>) {
        let name = job.template.name.as_str();
        let mut mentions: Vec<(Pos, usize)> = Vec::new();
        for r in &job.after {
            if let Some(pi) = self.job_ref(&r.name, r.pos, &format!("job \"{name}\" runs after")) {
                mentions.push((r.pos, pi));
                self.edges.push(Edge {
                    from: pi,
                    to: ci,
                    pos: r.pos,
                    how: format!("job \"{name}\" has after: {} at {}", r.name, r.pos),
                });
            }
        }
        let mut inputs = Vec::with_capacity(job.inputs.len());
        // (producer, output, dest) already taken, to catch the same input twice.
        let mut taken: HashMap<(usize, usize, &str), Pos> = HashMap::new();
        for input in &job.inputs {
            match input {
                RawInput::Local {
                    spec,
                    path,
                    path_pos,
                } => {
                    let abs = self.local_file(path, *path_pos, name);
                    inputs.push(InputSpec {
                        source: InputSource::Local(abs),
                        ..spec.clone()
                    });
                }
                RawInput::From {
                    job: producer,
                    output,
                    dest,
                    writable,
                    pos,
                    ref_pos,
                } => {
                    let context = format!("job \"{name}\" takes input from");
                    let Some(pi) = self.job_ref(producer, *ref_pos, &context) else {
                        continue;
                    };
                    let what = format!("an input of job \"{name}\"");
                    let outs = self.outputs_of(pi, output.as_deref(), *ref_pos, &what);
                    for out in outs {
                        let out_name = &self.jobs[pi].template.outputs[out].name;
                        if let Some(first) = taken.insert((pi, out, dest.as_str()), *ref_pos) {
                            self.sink.error(
                                *ref_pos,
                                format!(
                                    "job \"{name}\" takes {producer}.{out_name} twice into the \
                                     same place"
                                ),
                                format!("it is already an input at {first}; remove one of them"),
                            );
                            continue;
                        }
                        self.check_collision(pi, out, &format!("gathering it in job \"{name}\""));
                        inputs.push(InputSpec {
                            source: InputSource::JobOutput {
                                job: producer.clone(),
                                output: out_name.clone(),
                            },
                            dest: dest.clone(),
                            writable: *writable,
                            pos: *pos,
                        });
                    }
                    mentions.push((*ref_pos, pi));
                    self.edges.push(Edge {
                        from: pi,
                        to: ci,
                        pos: *ref_pos,
                        how: format!(
                            "job \"{name}\" takes input from {producer}{} at {ref_pos}",
                            output
                                .as_deref()
                                .map(|o| format!(".{o}"))
                                .unwrap_or_default()
                        ),
                    });
                }
            }
        }
        self.destinations(name, &inputs);
        mentions.sort_by_key(|(pos, _)| *pos);
        let mut after: Vec<String> = Vec::with_capacity(mentions.len());
        let mut seen = HashSet::with_capacity(mentions.len());
        for (_, pi) in mentions {
            if seen.insert(pi) {
                after.push(self.jobs[pi].template.name.clone());
            }
        }
        (after, inputs)
    }

    /// Looks a job up by name; reports it when missing.
    fn job_ref(&mut self, name: &str, pos: Pos, context: &str) -> Option<usize> {
        if let Some(&i) = self.index.get(name) {
            return Some(i);
        }
        let names = self.jobs.iter().map(|j| j.template.name.as_str());
        let hint = did_you_mean(name, names).unwrap_or_else(|| {
            if self.jobs.len() <= 12 {
                let all: Vec<&str> = self.jobs.iter().map(|j| j.template.name.as_str()).collect();
                format!("the jobs in this workflow are {}", quoted_list(&all))
            } else {
                "check the spelling against the job names under jobs:".to_string()
            }
        });
        self.sink
            .error(pos, format!("{context} unknown job \"{name}\""), hint);
        None
    }

    /// The outputs `output` names in job `pi` (all of them when `None`),
    /// as indexes; reports a missing one.
    fn outputs_of(
        &mut self,
        pi: usize,
        output: Option<&str>,
        pos: Pos,
        context: &str,
    ) -> Vec<usize> {
        let t = &self.jobs[pi].template;
        let names: Vec<&str> = t.outputs.iter().map(|o| o.name.as_str()).collect();
        match output {
            Some(o) => {
                if let Some(i) = names.iter().position(|n| *n == o) {
                    return vec![i];
                }
                let hint = match (closest(o, names.iter().copied()), names.is_empty()) {
                    (Some(c), _) => format!("did you mean \"{c}\"?"),
                    (None, true) => format!(
                        "job \"{}\" declares no outputs; add outputs: {{NAME: PATTERN}} to it",
                        t.name
                    ),
                    (None, false) => format!(
                        "the outputs of job \"{}\" are {}",
                        t.name,
                        quoted_list(&names)
                    ),
                };
                self.sink.error(
                    pos,
                    format!(
                        "job \"{}\" has no output \"{o}\" (wanted by {context})",
                        t.name
                    ),
                    hint,
                );
                Vec::new()
            }
            None if names.is_empty() => {
                self.sink.error(
                    pos,
                    format!(
                        "job \"{}\" declares no outputs, so {context} gets nothing from it",
                        t.name
                    ),
                    format!(
                        "add outputs: {{NAME: PATTERN}} to job \"{}\", or use after: [{}] to only \
                         wait for it",
                        t.name, t.name
                    ),
                );
                Vec::new()
            }
            None => (0..names.len()).collect(),
        }
    }

    /// Every instance of a scattered job writes its outputs under the same
    /// names unless the pattern holds a placeholder, so gathering them all
    /// in one place would overwrite files.
    fn check_collision(&mut self, pi: usize, out: usize, context: &str) {
        let job = &self.jobs[pi];
        let Some(scatter) = &job.template.scatter else {
            return;
        };
        let decl: &OutputDecl = &job.template.outputs[out];
        for (k, pattern) in decl.patterns.iter().enumerate() {
            if has_placeholder(pattern) || !self.reported_collisions.insert((pi, out, k)) {
                continue;
            }
            let pos = job
                .pattern_pos
                .get(out)
                .and_then(|p| p.get(k))
                .copied()
                .unwrap_or(job.template.pos);
            self.sink.error(
                pos,
                format!(
                    "output \"{}\" of scattered job \"{}\" has the same file name (\"{pattern}\") \
                     in every instance, so {context} would make the files collide",
                    decl.name, job.template.name
                ),
                format!(
                    "put the scatter variable in the pattern, and in the file the command \
                     writes, e.g. \"{}\"",
                    with_placeholder(pattern, &scatter.var)
                ),
            );
        }
    }

    /// Resolves a local input against the workflow's directory and checks
    /// the file is there.
    fn local_file(&mut self, path: &str, pos: Pos, job: &str) -> PathBuf {
        let abs = self.base_dir.join(path);
        if !self.check_files {
            return abs;
        }
        let problem = self
            .file_checks
            .entry(abs.clone())
            .or_insert_with(|| check_file(&abs))
            .clone();
        if let Some((message, mut hint)) = problem {
            if let Some((j, o)) = path.split_once('.')
                && let Some(&pi) = self.index.get(j)
                && self.jobs[pi].template.outputs.iter().any(|d| d.name == o)
            {
                hint = format!("to use output \"{o}\" of job \"{j}\", write {{from: {j}.{o}}}");
            }
            self.sink.error(
                pos,
                format!("input \"{path}\" of job \"{job}\" {message}"),
                hint,
            );
        }
        abs
    }

    /// Two inputs staged at the same path, or a file where another input
    /// needs a directory.
    fn destinations(&mut self, job: &str, inputs: &[InputSpec]) {
        let mut files: HashMap<String, Pos> = HashMap::new();
        let mut dirs: HashMap<String, Pos> = HashMap::new();
        for input in inputs {
            let mut claimed_files: Vec<String> = Vec::new();
            match &input.source {
                InputSource::Local(_) => claimed_files.push(input.dest.clone()),
                InputSource::JobOutput { job: p, output } => {
                    if !input.dest.is_empty() {
                        self.claim_dir(job, &input.dest, input.pos, &files, &mut dirs);
                    }
                    // Files whose names are known before the run.
                    let decl = self.index.get(p.as_str()).and_then(|&pi| {
                        self.jobs[pi]
                            .template
                            .outputs
                            .iter()
                            .find(|d| &d.name == output)
                    });
                    for pattern in decl.map(|d| d.patterns.as_slice()).unwrap_or_default() {
                        if pattern.contains(['*', '?', '[', '{', '\\']) {
                            continue;
                        }
                        if let Ok(rel) = clean_relative(pattern, false) {
                            claimed_files.push(if input.dest.is_empty() {
                                rel
                            } else {
                                format!("{}/{rel}", input.dest)
                            });
                        }
                    }
                }
            }
            for f in claimed_files {
                if let Some(first) = files.get(&f) {
                    if *first != input.pos {
                        self.sink.error(
                            input.pos,
                            format!("two inputs of job \"{job}\" are both staged as \"{f}\""),
                            format!(
                                "the other one is at {first}; give one of them another name with \
                                 as:"
                            ),
                        );
                    }
                    continue;
                }
                if let Some(first) = dirs.get(&f) {
                    self.sink.error(
                        input.pos,
                        format!(
                            "an input of job \"{job}\" is staged as \"{f}\", which the input at \
                             {first} needs as a directory"
                        ),
                        "give one of them another name with as:",
                    );
                    continue;
                }
                if let Some((parent, _)) = f.rsplit_once('/') {
                    self.claim_dir(job, parent, input.pos, &files, &mut dirs);
                }
                files.insert(f, input.pos);
            }
        }
    }

    fn claim_dir(
        &mut self,
        job: &str,
        dir: &str,
        pos: Pos,
        files: &HashMap<String, Pos>,
        dirs: &mut HashMap<String, Pos>,
    ) {
        let mut prefix = String::new();
        for part in dir.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if let Some(first) = files.get(&prefix) {
                self.sink.error(
                    pos,
                    format!(
                        "an input of job \"{job}\" needs \"{prefix}\" as a directory, but the \
                         input at {first} is staged there as a file"
                    ),
                    "give one of them another name with as:",
                );
                return;
            }
            dirs.entry(prefix.clone()).or_insert(pos);
        }
    }

    /// Reports every dependency cycle (one per strongly connected set of
    /// jobs), naming the jobs around it.
    fn cycles(&mut self) {
        let n = self.jobs.len();
        let mut adj: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (k, e) in self.edges.iter().enumerate() {
            adj[e.from].push(k);
        }
        let targets: Vec<Vec<usize>> = adj
            .iter()
            .map(|ks| ks.iter().map(|&k| self.edges[k].to).collect())
            .collect();
        for component in strongly_connected(&targets) {
            let start = component.iter().copied().min().unwrap_or(0);
            let self_loop = targets[start].contains(&start);
            if component.len() < 2 && !self_loop {
                continue;
            }
            let members: HashSet<usize> = component.iter().copied().collect();
            let path = self.shortest_cycle(start, &members, &adj);
            let names: Vec<&str> = path
                .iter()
                .map(|&k| self.jobs[self.edges[k].from].template.name.as_str())
                .chain(std::iter::once(self.jobs[start].template.name.as_str()))
                .collect();
            let links: Vec<String> = path
                .iter()
                .map(|&k| {
                    let e = &self.edges[k];
                    format!(
                        "  {} -> {}: {}",
                        self.jobs[e.from].template.name, self.jobs[e.to].template.name, e.how
                    )
                })
                .collect();
            let pos = path.first().map(|&k| self.edges[k].pos).unwrap_or_default();
            self.sink.error(
                pos,
                format!("dependency cycle: {}", names.join(" -> ")),
                format!(
                    "each job waits for the one before it, so none of them can start; remove one \
                     of these links:\n{}",
                    links.join("\n")
                ),
            );
        }
    }

    /// The edges of a shortest cycle through `start` within `members`
    /// (breadth-first, edges in file order).
    fn shortest_cycle(
        &self,
        start: usize,
        members: &HashSet<usize>,
        adj: &[Vec<usize>],
    ) -> Vec<usize> {
        let mut via: HashMap<usize, usize> = HashMap::new();
        let mut queue = VecDeque::from([start]);
        while let Some(v) = queue.pop_front() {
            for &k in &adj[v] {
                let w = self.edges[k].to;
                if w == start {
                    let mut path = vec![k];
                    let mut at = v;
                    while at != start {
                        let Some(&back) = via.get(&at) else { break };
                        path.push(back);
                        at = self.edges[back].from;
                    }
                    path.reverse();
                    return path;
                }
                if members.contains(&w) && !via.contains_key(&w) {
                    via.insert(w, k);
                    queue.push_back(w);
                }
            }
        }
        Vec::new()
    }
}

/// `None` when `path` is a readable file; else what is wrong and a hint.
fn check_file(path: &Path) -> Option<(String, String)> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Some((
            "is a directory, not a file".into(),
            "list the files the job needs one by one, or archive the directory (tar) and \
             unpack it in the command"
                .into(),
        )),
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some((
            "does not exist".into(),
            format!(
                "looked for {}; relative paths are resolved from the workflow file's directory",
                path.display()
            ),
        )),
        Err(e) => Some((
            format!("can't be read: {e}"),
            format!("check the permissions of {}", path.display()),
        )),
    }
}

/// `count.txt` -> `count_{{var}}.txt`, `part_*` -> `part_*_{{var}}`.
fn with_placeholder(pattern: &str, var: &str) -> String {
    let (dir, file) = match pattern.rsplit_once('/') {
        Some((d, f)) => (format!("{d}/"), f),
        None => (String::new(), pattern),
    };
    match file.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{dir}{stem}_{{{{{var}}}}}.{ext}"),
        _ => format!("{dir}{file}_{{{{{var}}}}}"),
    }
}

/// Tarjan's strongly connected components, iteratively (a chain of 10,000
/// jobs must not overflow the stack). Components come out in reverse
/// topological order; only their membership matters here.
fn strongly_connected(adj: &[Vec<usize>]) -> Vec<Vec<usize>> {
    const UNSEEN: usize = usize::MAX;
    let n = adj.len();
    let mut index = vec![UNSEEN; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut next = 0;
    let mut out = Vec::new();
    for root in 0..n {
        if index[root] != UNSEEN {
            continue;
        }
        let mut calls: Vec<(usize, usize)> = vec![(root, 0)];
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut i)) = calls.last_mut() {
            if let Some(&w) = adj[v].get(*i) {
                *i += 1;
                if index[w] == UNSEEN {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    calls.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            calls.pop();
            if let Some(&(parent, _)) = calls.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut component = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                out.push(component);
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn sorted(mut c: Vec<Vec<usize>>) -> Vec<Vec<usize>> {
        for x in &mut c {
            x.sort_unstable();
        }
        c.sort();
        c
    }

    #[test]
    fn components() {
        type Graph = Vec<Vec<usize>>;
        let cases: Vec<(Graph, Graph)> = vec![
            (vec![], vec![]),
            (
                vec![vec![1], vec![2], vec![]],
                vec![vec![0], vec![1], vec![2]],
            ),
            (vec![vec![1], vec![2], vec![0]], vec![vec![0, 1, 2]]),
            (vec![vec![0]], vec![vec![0]]),
            (
                vec![vec![1], vec![0, 2], vec![3], vec![2]],
                vec![vec![0, 1], vec![2, 3]],
            ),
        ];
        for (adj, want) in cases {
            assert_eq!(sorted(strongly_connected(&adj)), want, "{adj:?}");
        }
        // A long chain does not overflow the stack.
        let chain: Vec<Vec<usize>> = (0..200_000)
            .map(|i| if i + 1 < 200_000 { vec![i + 1] } else { vec![] })
            .collect();
        assert_eq!(strongly_connected(&chain).len(), 200_000);
    }

    #[test]
    fn placeholder_suggestions() {
        let cases = [
            ("count.txt", "count_{{s}}.txt"),
            ("out/count.txt", "out/count_{{s}}.txt"),
            ("part_*", "part_*_{{s}}"),
            (".hidden", ".hidden_{{s}}"),
        ];
        for (p, want) in cases {
            assert_eq!(with_placeholder(p, "s"), want);
        }
    }
}
