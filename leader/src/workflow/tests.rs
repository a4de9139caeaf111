//! Whole-file tests: text in, workflow or diagnostics out.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// A directory with the local files the test workflows mention.
fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("reads.txt"), "a\nb\nc\n").expect("write");
    std::fs::create_dir(dir.path().join("data")).expect("mkdir");
    std::fs::write(dir.path().join("data/ref.fa"), ">x\nACGT\n").expect("write");
    dir
}

fn parse(text: &str, dir: &Path) -> Result<Workflow, Diagnostics> {
    parse_str(text, Path::new("wf.yaml"), dir)
}

fn job<'w>(wf: &'w Workflow, name: &str) -> &'w JobTemplate {
    wf.jobs.iter().find(|j| j.name == name).expect("job exists")
}

const FULL: &str = r#"
name: hello
defaults:
  cores: 1
  memory: 512Mi
  disk: 1Gi
  retries: 2
  image: docker://ubuntu:24.04
  env: {LANG: C}
jobs:
  split:
    command: "split -l 2 reads.txt part_"
    inputs:
      - reads.txt
      - {path: data/ref.fa, as: ref.fa, writable: true}
    outputs:
      parts: "part_*"
  count:
    scatter: {sample: [a, b, c]}
    command: ["sh", "-c", "wc -l part_* > count_{{sample}}.txt"]
    inputs:
      - {from: split.parts}
      - {from: split.parts, as: chunks/}
    outputs:
      counts: "count_{{sample}}.txt"
    cores: 0.5
    memory: 256Mi
    disk: 1G
    gpus: 0
    preemptible: true
    time_limit: 10m
    retries: 3
    env: {SAMPLE: "{{sample}}"}
    image: docker://python:3.12
  merge:
    after: [count]
    command: "cat count_*.txt > total.txt"
    inputs: [{from: count.counts}]
    outputs: {total: total.txt}
outputs:
  total: merge.total
"#;

#[test]
fn the_documented_format_parses() {
    let dir = data_dir();
    let wf = parse(FULL, dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(wf.name, "hello");
    assert_eq!(wf.source, PathBuf::from("wf.yaml"));
    assert_eq!(wf.base_dir, dir.path());
    assert_eq!(wf.defaults.millicores, Some(1000));
    assert_eq!(wf.defaults.memory, Some(512 << 20));
    assert_eq!(wf.defaults.disk, Some(1 << 30));
    assert_eq!(wf.defaults.retries, Some(2));
    assert_eq!(wf.defaults.image.as_deref(), Some("docker://ubuntu:24.04"));
    assert_eq!(wf.defaults.env.get("LANG").map(String::as_str), Some("C"));
    let names: Vec<&str> = wf.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["split", "count", "merge"]);

    let split = job(&wf, "split");
    assert_eq!(split.pos, Pos { line: 11, col: 3 });
    assert_eq!(
        split.command,
        Command::Shell("split -l 2 reads.txt part_".into())
    );
    assert_eq!(split.millicores, None);
    assert_eq!(split.inputs.len(), 2);
    assert_eq!(
        split.inputs[0].source,
        InputSource::Local(dir.path().join("reads.txt"))
    );
    assert_eq!(split.inputs[0].dest, "reads.txt");
    assert!(!split.inputs[0].writable);
    assert_eq!(split.inputs[0].pos, Pos { line: 14, col: 9 });
    assert_eq!(
        split.inputs[1].source,
        InputSource::Local(dir.path().join("data/ref.fa"))
    );
    assert_eq!(split.inputs[1].dest, "ref.fa");
    assert!(split.inputs[1].writable);
    assert_eq!(
        split.outputs,
        [OutputDecl {
            name: "parts".into(),
            patterns: vec!["part_*".into()],
            optional: false
        }]
    );
    assert!(split.after.is_empty());
    assert_eq!(split.resources_pos, split.pos);

    let count = job(&wf, "count");
    let scatter = count.scatter.as_ref().expect("scatter");
    assert_eq!(scatter.var, "sample");
    assert_eq!(
        scatter.values,
        ScatterValues::List(vec!["a".into(), "b".into(), "c".into()])
    );
    assert_eq!(
        count.command,
        Command::Argv(vec![
            "sh".into(),
            "-c".into(),
            "wc -l part_* > count_{{sample}}.txt".into()
        ])
    );
    assert_eq!(count.after, ["split"]);
    let from = InputSource::JobOutput {
        job: "split".into(),
        output: "parts".into(),
    };
    assert_eq!(count.inputs[0].source, from);
    assert_eq!(count.inputs[0].dest, "");
    assert_eq!(count.inputs[1].source, from);
    assert_eq!(count.inputs[1].dest, "chunks");
    assert_eq!(count.millicores, Some(500));
    assert_eq!(count.memory, Some(256 << 20));
    assert_eq!(count.disk, Some(1_000_000_000));
    assert_eq!(count.gpus, 0);
    assert!(count.preemptible);
    assert_eq!(count.time_limit, Some(Duration::from_secs(600)));
    assert_eq!(count.retries, Some(3));
    assert_eq!(
        count.env.get("SAMPLE").map(String::as_str),
        Some("{{sample}}")
    );
    assert_eq!(count.image.as_deref(), Some("docker://python:3.12"));
    assert_eq!(count.resources_pos, Pos { line: 26, col: 5 });

    let merge = job(&wf, "merge");
    assert_eq!(merge.after, ["count"], "after and from deduplicated");
    assert_eq!(
        wf.outputs,
        [WorkflowOutput {
            name: "total".into(),
            job: "merge".into(),
            output: "total".into()
        }]
    );
}

#[test]
fn conveniences() {
    let dir = data_dir();
    let text = r#"
common: &common
  cores: 2
jobs:
  a:
    command: |
      echo one
      echo two
    inputs: {path: reads.txt, as: in/}
    outputs:
      x: {patterns: [x.txt, "y/*.txt"], optional: true}
      z: [z1, z2]
  b:
    <<: *common
    command: [cat, x.txt]
    inputs: {from: a}
    after: a
"#;
    // `common` is not a workflow key; with it removed the rest must parse.
    let err = parse(text, dir.path()).expect_err("unknown top-level key");
    assert_eq!(err.len(), 1, "{err}");
    assert!(err.0[0].message.contains("unknown key \"common\""), "{err}");

    let text = text.replacen(
        "common: &common\n  cores: 2\n",
        "defaults: &common\n  cores: 2\n",
        1,
    );
    let wf = parse(&text, dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let a = job(&wf, "a");
    assert_eq!(a.command, Command::Shell("echo one\necho two\n".into()));
    assert_eq!(a.inputs[0].dest, "in/reads.txt");
    assert_eq!(a.outputs[0].patterns, ["x.txt", "y/*.txt"]);
    assert!(a.outputs[0].optional);
    assert_eq!(a.outputs[1].patterns, ["z1", "z2"]);
    let b = job(&wf, "b");
    assert_eq!(b.millicores, Some(2000), "merge key applied");
    assert_eq!(b.after, ["a"]);
    // `from: a` takes every output of a.
    let outs: Vec<&InputSource> = b.inputs.iter().map(|i| &i.source).collect();
    assert_eq!(
        outs,
        [
            &InputSource::JobOutput {
                job: "a".into(),
                output: "x".into()
            },
            &InputSource::JobOutput {
                job: "a".into(),
                output: "z".into()
            }
        ]
    );
    assert_eq!(wf.name, "wf", "default name is the file stem");
}

/// (file text, expected "line:col" of the first diagnostic, words its
/// message or hint must contain, expected number of diagnostics).
const BAD: &[(&str, &str, &[&str], usize)] = &[
    ("", "1:1", &["empty"], 1),
    ("# only a comment\n", "1:1", &["empty"], 1),
    ("- a\n- b\n", "1:1", &["mapping of sections", "jobs:"], 1),
    ("name: x\n", "1:1", &["no jobs: section"], 1),
    ("jobs:\n", "1:1", &["no jobs"], 1),
    ("jobs: [a, b]\n", "1:7", &["not a list"], 1),
    (
        "jobs:\n  a:\n    command: echo\n    memroy: 1G\n",
        "4:5",
        &[
            "unknown key \"memroy\" in job \"a\"",
            "did you mean \"memory\"",
        ],
        1,
    ),
    (
        "jobs:\n  a:\n    command: echo\n    depends_on: [b]\n  b: {command: echo}\n",
        "4:5",
        &["unknown key \"depends_on\"", "did you mean \"after\""],
        1,
    ),
    (
        "jobs:\n  a:\n    command: echo\n    bogus: 1\n",
        "4:5",
        &["unknown key \"bogus\"", "allowed here are"],
        1,
    ),
    (
        "jobz:\n  a: {command: echo}\n",
        "1:1",
        &["unknown key \"jobz\"", "did you mean \"jobs\""],
        2,
    ),
    (
        "jobs:\n  a:\n    cores: 1\n",
        "2:3",
        &["job \"a\" has no command"],
        1,
    ),
    ("jobs:\n  a:\n", "2:3", &["job \"a\" has no command"], 1),
    (
        "jobs:\n  a:\n    command: \"  \"\n",
        "3:14",
        &["empty command"],
        1,
    ),
    (
        "jobs:\n  a:\n    command: []\n",
        "3:14",
        &["empty command"],
        1,
    ),
    (
        "jobs:\n  a:\n    command: {x: 1}\n",
        "3:14",
        &["string or a list"],
        1,
    ),
    (
        "jobs:\n  a b:\n    command: echo\n",
        "2:3",
        &["invalid job name \"a b\"", "\"a_b\""],
        1,
    ),
    (
        "jobs:\n  a_b: {command: echo}\n  A-b: {command: echo}\n",
        "3:3",
        &["same name to Kubernetes"],
        1,
    ),
    (
        "jobs:\n  a: {command: echo}\n  a: {command: echo}\n",
        "3:3",
        &["duplicate job \"a\"", "2:3"],
        1,
    ),
    (
        "jobs:\n  a:\n    command: echo\n    outputs:\n      x: x.txt\n      x: y.txt\n",
        "6:7",
        &["duplicate output \"x\" in job \"a\""],
        1,
    ),
    (
        "jobs:\n  a:\n    command: echo\n    cores: lots\n",
        "4:12",
        &["invalid cores \"lots\"", "500m"],
        1,
    ),
    (
        "jobs:\n  a:\n    command: echo\n    cores: 0\n",
        "4:12",
        &["zero"],
        1,
    ),
    (
        "jobs:\n  a:\n    command: echo\n    memory: 2X\n",
        "4:13",
        &["unknown unit \"X\"", "512Mi"],
        1,
    ),
    (
        "jobs:\n  a:\n    command: echo\n    memory: 0\n",
        "4:13",
        &["needs some memory"],
        1,
    ),
    (
        "jobs:\n  a:\n    command: echo\n    disk: [1G]\n",
        "4:11",
        &["must be a size", "not a list"],
        1,
    ),
    (
        "jobs:\n  a:\n    command: echo\n    time_limit: 600\n",
        "4:17",
        &["no unit", "600s"],
        1,
    ),
    (
        "jobs:\n  a:\n    command: echo\n    time_limit: 0s\n",
        "4:17",
        &["zero"],
        1,
    ),
    (
        "jobs:\n  a:\n    command: echo\n    retries: -1\n",
        "4:14",
        &["negative"],
        1,
    ),
    (
        "jobs:\n  a:\n    command: echo\n    gpus: 1.5\n",
        "4:11",
        &["whole number"],
        1,
    ),
    (
        "jobs:\n  a:\n    command: echo\n    preemptible: yes\n",
        "4:18",
        &["true or false"],
        1,
    ),
    (
        "jobs:\n  a:\n    command: echo\n    after: [b]\n  b:\n    command: echo\n    after: [c]\n  c:\n    command: echo\n    after: [a]\n",
        "10:13",
        &[
            "dependency cycle: a -> c -> b -> a",
            "a -> c: job \"c\" has after: a at 10:13",
            "c -> b: job \"b\" has after: c at 7:13",
            "b -> a: job \"a\" has after: b at 4:13",
        ],
        1,
    ),
    (
        "jobs:\n  a:\n    command: echo\n    after: a\n",
        "4:12",
        &["dependency cycle: a -> a"],
        1,
    ),
    (
        "jobs:\n  count: {command: echo}\n  b:\n    command: echo\n    after: [cout]\n",
        "5:13",
        &["unknown job \"cout\"", "did you mean \"count\""],
        1,
    ),
    (
        "jobs:\n  a:\n    command: echo\n    outputs: {parts: p}\n  b:\n    command: echo\n    inputs: [{from: a.prts}]\n",
        "7:21",
        &["job \"a\" has no output \"prts\"", "did you mean \"parts\""],
        1,
    ),
    (
        "jobs:\n  a:\n    command: echo\n  b:\n    command: echo\n    inputs: [{from: a}]\n",
        "6:21",
        &["declares no outputs", "after: [a]"],
        1,
    ),
    (
        "jobs:\n  a:\n    command: echo\n    outputs: {total: t.txt}\noutputs:\n  total: a.totl\n",
        "6:10",
        &["no output \"totl\"", "did you mean \"total\""],
        1,
    ),
    (
        "jobs:\n  a:\n    command: echo\noutputs:\n  total: b.t\n",
        "5:10",
        &["workflow output \"total\" comes from unknown job \"b\""],
        1,
    ),
    (
        "jobs:\n  a:\n    command: echo\n    inputs: [missing.txt]\n",
        "4:14",
        &[
            "input \"missing.txt\" of job \"a\" does not exist",
            "workflow file's directory",
        ],
        1,
    ),
    (
        "jobs:\n  a:\n    command: echo\n    inputs: [data]\n",
        "4:14",
        &["is a directory"],
        1,
    ),
    (
        "jobs:\n  a:\n    command: echo\n    inputs:\n      - reads.txt\n      - {path: data/ref.fa, as: reads.txt}\n",
        "6:9",
        &["both staged as \"reads.txt\"", "5:9"],
        1,
    ),
    (
        "jobs:\n  a:\n    command: echo\n    inputs:\n      - {path: reads.txt, as: d}\n      - {path: data/ref.fa, as: d/ref.fa}\n",
        "6:9",
        &["\"d\" as a directory"],
        1,
    ),
    (
        "jobs:\n  a:\n    command: echo\n    inputs: [{path: reads.txt, as: ../x}]\n",
        "4:36",
        &["leaves the work directory"],
        1,
    ),
    (
        "jobs:\n  a:\n    scatter: {s: [x, y]}\n    command: echo\n    outputs: {o: out.txt}\n  b:\n    command: cat out.txt\n    inputs: [{from: a.o}]\n",
        "5:18",
        &[
            "same file name",
            "\"out_{{s}}.txt\"",
            "gathering it in job \"b\"",
        ],
        1,
    ),
    (
        "jobs:\n  a:\n    scatter: {s: []}\n    command: echo\n",
        "3:18",
        &["no values"],
        1,
    ),
    (
        "jobs:\n  a:\n    scatter: {s: {range: 0}}\n    command: echo\n",
        "3:26",
        &["0, so the job would never run"],
        1,
    ),
    (
        "jobs:\n  a:\n    scatter: {s: [1], t: [2]}\n    command: echo\n",
        "3:23",
        &["exactly one"],
        1,
    ),
    (
        "jobs:\n  a:\n    command: echo {{sample}}\n",
        "3:14",
        &["placeholder {{sample}} in job \"a\", which has no scatter"],
        1,
    ),
    (
        "jobs:\n  a:\n    scatter: {sample: [x]}\n    command: echo {{smaple}}\n",
        "4:14",
        &["unknown placeholder {{smaple}}", "did you mean \"sample\""],
        1,
    ),
    (
        "jobs:\n  a:\n    scatter: {sample: [x]}\n    command: echo\n    image: \"img:{{sample}}\"\n",
        "5:12",
        &["not allowed here", "command, env values"],
        1,
    ),
    (
        "jobs:\n  a:\n    scatter: {sample: [x]}\n    command: echo\n    env: {S: {{sample}}}\n",
        "5:14",
        &["unquoted placeholder {{sample}}", "\"{{sample}}\""],
        1,
    ),
    (
        "jobs:\n  a:\n    command: echo a: b\n",
        "3:20",
        &["invalid YAML", "quote a value that contains"],
        1,
    ),
    (
        "defaults:\n  gpus: 1\njobs:\n  a: {command: echo}\n",
        "2:3",
        &["can't be set in defaults"],
        1,
    ),
    (
        "jobs:\n  a:\n    command: echo\n  b:\n    command: echo\n    inputs: [a.out]\n",
        "6:14",
        &["does not exist"],
        1,
    ),
    // Past the bounds: refused, not truncated, wrapped or allocated.
    (
        "jobs:\n  a:\n    scatter: {i: {range: 4294967297}}\n    command: echo\n",
        "3:26",
        &["4294967297, more than the 1000000 instances"],
        1,
    ),
    (
        "jobs:\n  a:\n    scatter: {i: {range: 400000000}}\n    command: echo\n",
        "3:26",
        &["more than the 1000000 instances"],
        1,
    ),
    (
        "jobs:\n  a:\n    time_limit: 18446744073709551615s\n    command: echo\n",
        "3:17",
        &["longer than the longest allowed, 366 days"],
        1,
    ),
];

#[test]
fn bad_workflows_are_explained() {
    let dir = data_dir();
    // Every case is checked before failing, so one run shows all mismatches.
    let mut failures = Vec::new();
    for (text, at, words, count) in BAD {
        let err = match parse(text, dir.path()) {
            Ok(_) => {
                failures.push(format!("accepted:\n{text}"));
                continue;
            }
            Err(e) => e,
        };
        let shown = err.to_string();
        let first = &err.0[0];
        let mut problems = Vec::new();
        if err.len() != *count {
            problems.push(format!("{} diagnostics, want {count}", err.len()));
        }
        if first.pos.to_string() != *at {
            problems.push(format!("at {}, want {at}", first.pos));
        }
        if first.file != Path::new("wf.yaml")
            || !shown.starts_with(&format!("wf.yaml:{at}: error: "))
        {
            problems.push("does not start with wf.yaml:LINE:COL: error:".to_string());
        }
        for w in *words {
            if !shown.contains(w) {
                problems.push(format!("{w:?} missing"));
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}\nfor:\n{text}got:\n{shown}\n",
                problems.join("; ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_problem_is_reported_at_once() {
    let dir = data_dir();
    let text =
        "jobs:\n  a:\n    command: echo\n    memroy: 1G\n    cores: x\n  b:\n    after: [zz]\n";
    let err = parse(text, dir.path()).expect_err("three problems");
    let lines: Vec<String> = err
        .iter()
        .map(|d| format!("{} {}", d.pos, d.message))
        .collect();
    assert_eq!(
        lines,
        [
            "4:5 unknown key \"memroy\" in job \"a\"",
            "5:12 \"cores\" in job \"a\": invalid cores \"x\"",
            "6:3 job \"b\" has no command",
            "7:13 job \"b\" runs after unknown job \"zz\"",
        ]
    );
}

#[test]
fn aliases_are_budgeted_by_the_bytes_they_add() {
    let dir = data_dir();
    // 400 aliases to one 50 KB string would add 20 MB of text.
    let big = "x".repeat(50_000);
    let mut text = format!("defaults:\n  env: {{A: &s \"{big}\"}}\njobs:\n");
    for i in 0..400 {
        text.push_str(&format!("  j{i}:\n    command: echo\n    env: {{A: *s}}\n"));
    }
    let err = parse(&text, dir.path()).expect_err("over budget");
    assert!(
        err.to_string()
            .contains("aliases expand this document to too many values"),
        "{err}"
    );
    // A few are fine.
    let few: String = text.lines().take(3 + 3 * 10).collect::<Vec<_>>().join("\n") + "\n";
    parse(&few, dir.path()).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_workflow_file_past_the_size_limit_is_refused_unread() {
    let dir = data_dir();
    let path = dir.path().join("huge.yaml");
    let f = std::fs::File::create(&path).expect("create");
    f.set_len(crate::workflow::limits::MAX_FILE_BYTES + 1)
        .expect("size");
    let err = crate::workflow::load(&path).expect_err("too big");
    assert!(
        err.to_string()
            .contains("more than the 16777216 a workflow file may have"),
        "{err}"
    );
}

#[test]
fn a_large_range_is_not_expanded() {
    let dir = data_dir();
    let text = "jobs:\n  many:\n    scatter: {i: {range: 100000}}\n    command: echo {{i}}\n    \
                outputs: {o: \"out_{{i}}.txt\"}\n  all:\n    command: cat out_*\n    inputs: [{from: \
                many.o}]\n";
    let wf = parse(text, dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(wf.jobs.len(), 2);
    let s = wf.jobs[0].scatter.as_ref().expect("scatter");
    assert_eq!(s.values, ScatterValues::Range(100_000));
    assert_eq!(s.values.len(), 100_000);
    assert_eq!(s.values.get(99_999).as_deref(), Some("99999"));
    let Command::Shell(cmd) = &wf.jobs[0].command else {
        panic!("shell command")
    };
    assert_eq!(render(cmd, &s.var, "42", 42), "echo 42");
}

#[test]
fn ten_thousand_jobs_parse() {
    let dir = data_dir();
    let n = 10_000;
    let mut text = String::from("jobs:\n");
    for i in 0..n {
        text.push_str(&format!(
            "  job{i}:\n    command: [echo, \"{i}\"]\n    memory: 64Mi\n"
        ));
        if i > 0 {
            text.push_str(&format!("    after: [job{}]\n", i - 1));
            text.push_str(&format!("    inputs: [{{from: job{}.out}}]\n", i - 1));
        }
        text.push_str("    outputs: {out: out.txt}\n");
    }
    let wf = parse(&text, dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(wf.jobs.len(), n);
    assert_eq!(wf.jobs[n - 1].after, [format!("job{}", n - 2)]);

    // A cycle through all of them is found and named.
    text.push_str("  job0_:\n    command: echo\n");
    let text = text.replacen(
        "  job0:\n    command: [echo, \"0\"]\n",
        &format!(
            "  job0:\n    command: [echo, \"0\"]\n    after: [job{}]\n",
            n - 1
        ),
        1,
    );
    let err = parse(&text, dir.path()).expect_err("cycle");
    let msg = &err
        .0
        .iter()
        .find(|d| d.message.contains("cycle"))
        .expect("cycle")
        .message;
    assert!(
        msg.starts_with("dependency cycle: job0 -> job1 -> job2"),
        "{msg}"
    );
    assert!(
        msg.ends_with(&format!("job{} -> job0", n - 1)),
        "{}",
        &msg[msg.len() - 40..]
    );
}

#[test]
fn machines_that_fit() {
    let dir = data_dir();
    let text = "defaults:\n  memory: 1G\njobs:\n  small:\n    command: echo\n  big:\n    \
                command: echo\n    cores: 8\n    memory: 64Gi\n  gpu:\n    command: echo\n    \
                gpus: 1\n";
    let wf = parse(text, dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let defaults = ResolvedDefaults {
        millicores: 1000,
        memory: 2 << 30,
        disk: 2 << 30,
        retries: 1,
    };
    let laptop = Machine {
        name: "this machine".into(),
        millicores: 4000,
        memory: 16 << 30,
        disk: None,
        gpus: 0,
    };
    let gpu_node = Machine {
        name: "node gpu-1".into(),
        millicores: 64_000,
        memory: 256 << 30,
        disk: Some(100 << 30),
        gpus: 4,
    };
    assert_eq!(check_fits(&wf, &defaults, &[]), Ok(()));
    assert_eq!(
        check_fits(&wf, &defaults, &[laptop.clone(), gpu_node.clone()]),
        Ok(())
    );

    let err = check_fits(&wf, &defaults, std::slice::from_ref(&laptop)).expect_err("too big");
    assert_eq!(err.len(), 2, "{err}");
    let big = &err.0[0];
    assert_eq!(big.pos, Pos { line: 8, col: 5 }, "at the job's resources");
    assert_eq!(
        big.message,
        "job \"big\" is larger than any machine it could run on: it asks for 8 cores, 64 GiB of \
         memory, but this machine has 4 cores, 16 GiB of memory"
    );
    let hint = big.hint.as_deref().unwrap_or("");
    assert!(
        hint.contains("--maxCores") && hint.contains("--maxMemory"),
        "{hint}"
    );
    let gpu = &err.0[1];
    assert_eq!(gpu.pos, Pos { line: 12, col: 5 });
    assert_eq!(
        gpu.message,
        "job \"gpu\" is larger than any machine it could run on: it asks for 1 core (the \
         default), 953.67 MiB of memory (the default), 1 GPU, but this machine has 4 cores, 16 \
         GiB of memory, 0 GPUs"
    );
    assert!(
        gpu.hint.as_deref().unwrap_or("").contains("GPUs"),
        "{:?}",
        gpu.hint
    );

    // Defaults alone can make every job too big.
    let tiny = Machine {
        memory: 512 << 20,
        ..laptop
    };
    let err = check_fits(&wf, &defaults, &[tiny]).expect_err("defaults too big");
    assert_eq!(err.len(), 3);
    assert!(
        err.0[0].message.contains("(the default)"),
        "{}",
        err.0[0].message
    );
    assert_eq!(
        err.0[0].pos,
        Pos { line: 4, col: 3 },
        "job without resources: its name"
    );
    assert_eq!(
        defaults.overridden_by(&wf.defaults),
        ResolvedDefaults {
            memory: 1_000_000_000,
            ..defaults
        }
    );
}
