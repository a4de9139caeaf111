//! Workflow files on disk: every example loads, every documented example
//! parses, and every deliberately broken fixture is rejected with the right
//! file, line, column and explanation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use toil_leader::workflow::{
    Command, InputSource, Machine, ResolvedDefaults, ScatterValues, check_fits, load, load_checked,
    parse_str,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
}

/// What `toil-leader run` would use on a small laptop.
fn laptop() -> (ResolvedDefaults, Machine) {
    let defaults = ResolvedDefaults {
        millicores: 1000,
        memory: 2 << 30,
        disk: 2 << 30,
        retries: 1,
    };
    let machine = Machine {
        name: "this machine".into(),
        millicores: 4000,
        memory: 16 << 30,
        disk: None,
        gpus: 0,
    };
    (defaults, machine)
}

#[test]
fn every_example_loads_and_fits_on_a_laptop() {
    let files = yaml_files(&repo().join("examples"));
    assert!(!files.is_empty(), "no examples found");
    let (defaults, machine) = laptop();
    for file in &files {
        let wf = load(file).unwrap_or_else(|e| panic!("{}:\n{e}", file.display()));
        assert!(!wf.jobs.is_empty(), "{}", file.display());
        if let Err(e) = check_fits(&wf, &defaults, std::slice::from_ref(&machine)) {
            panic!("{} does not fit on a laptop:\n{e}", file.display());
        }
    }
}

#[test]
fn hello_shows_a_chain_a_scatter_a_gather_and_an_output() {
    let wf = load(&repo().join("examples/hello.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = wf.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["hello", "words", "count", "report"]);
    let [hello, words, count, report] = &wf.jobs[..] else {
        panic!("four jobs")
    };
    assert!(hello.after.is_empty());
    assert_eq!(words.after, ["hello"]);
    assert_eq!(count.after, ["words"]);
    assert_eq!(report.after, ["count"]);

    // A local data file, resolved next to the workflow file.
    let InputSource::Local(poem) = &words.inputs[0].source else {
        panic!("words reads a local file")
    };
    assert!(poem.is_absolute() && poem.is_file(), "{}", poem.display());
    assert_eq!(words.inputs[0].dest, "poem.txt");

    let scatter = count.scatter.as_ref().expect("count is scattered");
    assert_eq!(scatter.values.len(), 5);
    assert!(matches!(&scatter.values, ScatterValues::List(v) if v[0] == "a"));
    assert!(matches!(&count.command, Command::Shell(s) if s.contains("{{vowel}}")));
    assert_eq!(report.inputs[0].dest, "counts");
    assert_eq!(wf.outputs.len(), 1);
    assert_eq!(
        (wf.outputs[0].job.as_str(), wf.outputs[0].output.as_str()),
        ("report", "report")
    );
}

#[test]
fn the_workflows_in_the_format_reference_parse() {
    let readme_path = repo().join("examples/README.md");
    let readme = std::fs::read_to_string(&readme_path).expect("examples/README.md");
    let mut checked = 0;
    let mut rest = readme.as_str();
    while let Some(start) = rest.find("```yaml\n") {
        let body = &rest[start + 8..];
        let end = body.find("```").expect("closed code block");
        let block = &body[..end];
        let line = readme.len() - rest.len() + start;
        let line = readme[..line].lines().count() + 1;
        rest = &body[end + 3..];
        // Fragments (one key or one job) are shown for illustration; whole
        // workflows must be valid.
        if !block.lines().any(|l| l == "jobs:") {
            continue;
        }
        let source = PathBuf::from(format!("examples/README.md (block at line {line})"));
        if let Err(e) = parse_str(block, &source, &repo().join("examples")) {
            panic!("{e}");
        }
        checked += 1;
    }
    assert!(
        checked >= 3,
        "only {checked} complete workflows in examples/README.md"
    );
}

/// Fixture name, expected position of the first diagnostic, words the
/// output must contain, and the number of diagnostics.
const BAD: &[(&str, &str, &[&str], usize)] = &[
    (
        "syntax-error",
        "4:23",
        &["invalid YAML", "quote a value that contains \": \""],
        1,
    ),
    ("tab-indent", "4:2", &["invalid YAML", "tabs"], 1),
    (
        "unknown-key",
        "5:5",
        &[
            "unknown key \"memroy\" in job \"align\"",
            "hint: did you mean \"memory\"?",
        ],
        1,
    ),
    (
        "wrong-type",
        "5:10",
        &[
            "\"env\" in job \"greet\" must be a mapping, not a list",
            "env: {GREETING: hello}",
        ],
        1,
    ),
    (
        "missing-command",
        "3:3",
        &["job \"greet\" has no command", "command: echo hello"],
        1,
    ),
    (
        "missing-jobs",
        "2:1",
        &["no jobs: section", "add `jobs:`"],
        1,
    ),
    (
        "empty-command",
        "4:14",
        &["job \"greet\" has an empty command"],
        1,
    ),
    (
        "bad-job-name",
        "3:3",
        &["invalid job name \"align reads\"", "e.g. \"align_reads\""],
        1,
    ),
    (
        "duplicate-output",
        "7:7",
        &[
            "duplicate output \"parts\" in job \"split\"",
            "already defined at 6:7",
        ],
        1,
    ),
    (
        "cycle",
        "11:13",
        &[
            "dependency cycle: align -> index -> sort -> align",
            "align -> index: job \"index\" has after: align at 11:13",
            "index -> sort: job \"sort\" has after: index at 8:13",
            "sort -> align: job \"align\" has after: sort at 5:13",
        ],
        1,
    ),
    (
        "missing-job",
        "7:13",
        &[
            "job \"count\" runs after unknown job \"splt\"",
            "did you mean \"split\"?",
        ],
        1,
    ),
    (
        "missing-output",
        "10:15",
        &[
            "job \"split\" has no output \"part\"",
            "did you mean \"parts\"?",
        ],
        1,
    ),
    (
        "missing-workflow-output",
        "8:10",
        &[
            "workflow output \"total\" comes from unknown job \"merg\"",
            "did you mean \"merge\"?",
        ],
        1,
    ),
    (
        "bad-size",
        "5:13",
        &[
            "unknown unit \"gigs\" in size \"2 gigs\"",
            "512Mi, 2G, 1.5Gi",
        ],
        1,
    ),
    (
        "bad-cores",
        "5:12",
        &["invalid cores \"two\"", "(2, 0.5)", "(500m)"],
        1,
    ),
    (
        "bad-duration",
        "5:17",
        &["duration \"600\" has no unit", "600s"],
        1,
    ),
    (
        "zero-and-negative",
        "5:12",
        &[
            "cores \"0\" is zero",
            "\"retries\" in job \"align\"",
            "\"-1\" is negative",
        ],
        2,
    ),
    (
        "missing-input",
        "6:9",
        &[
            "input \"data/reads.txt\" of job \"count\" does not exist",
            "fixtures/bad/data/reads.txt",
            "resolved from the workflow file's directory",
        ],
        1,
    ),
    (
        "duplicate-destination",
        "7:9",
        &[
            "two inputs of job \"count\" are both staged as \"input.txt\"",
            "6:9",
            "as:",
        ],
        1,
    ),
    (
        "gather-collision",
        "7:15",
        &[
            "output \"counts\" of scattered job \"count\" has the same file name (\"count.txt\")",
            "gathering it in job \"merge\"",
            "\"count_{{sample}}.txt\"",
        ],
        1,
    ),
    (
        "empty-scatter",
        "5:15",
        &["the scatter of job \"count\" has no values"],
        1,
    ),
    (
        "placeholder-without-scatter",
        "4:14",
        &[
            "placeholder {{sample}} in job \"count\", which has no scatter",
            "add scatter:",
        ],
        1,
    ),
    (
        "unknown-placeholder",
        "5:14",
        &[
            "unknown placeholder {{smaple}} in job \"count\"",
            "did you mean \"sample\"?",
        ],
        1,
    ),
    (
        "unquoted-placeholder",
        "7:15",
        &[
            "unquoted placeholder {{sample}}",
            "put the value in quotes: \"{{sample}}\"",
        ],
        1,
    ),
];

#[test]
fn every_bad_fixture_is_rejected_with_position_and_fix() {
    let dir = repo().join("leader/tests/fixtures/bad");
    let on_disk: BTreeSet<String> = yaml_files(&dir)
        .iter()
        .map(|p| p.file_stem().expect("stem").to_string_lossy().into_owned())
        .collect();
    let mut listed: BTreeSet<String> = BAD.iter().map(|(n, ..)| n.to_string()).collect();
    listed.insert("too-large".into());
    assert_eq!(
        on_disk, listed,
        "every fixture is checked, every check has a fixture"
    );

    // Check them all before failing, so one run shows every mismatch.
    let mut failures = Vec::new();
    for (name, at, words, count) in BAD {
        let path = dir.join(format!("{name}.yaml"));
        let err = match load(&path) {
            Ok(_) => {
                failures.push(format!("{name}: accepted"));
                continue;
            }
            Err(e) => e,
        };
        let shown = err.to_string();
        let mut problems = Vec::new();
        if err.len() != *count {
            problems.push(format!("{} diagnostics, want {count}", err.len()));
        }
        let first = &err.0[0];
        if first.pos.to_string() != *at {
            problems.push(format!("at {}, want {at}", first.pos));
        }
        if first.file != path {
            problems.push(format!("names {}", first.file.display()));
        }
        if !shown.starts_with(&format!("{}:{at}: error: ", path.display())) {
            problems.push("does not start with FILE:LINE:COL: error:".into());
        }
        if first.hint.is_none() {
            problems.push("no hint".into());
        }
        for w in *words {
            if !shown.contains(w) {
                problems.push(format!("{w:?} missing"));
            }
        }
        if !problems.is_empty() {
            failures.push(format!("{name}: {}\n{shown}\n", problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn a_job_larger_than_every_machine_is_rejected() {
    let path = repo().join("leader/tests/fixtures/bad/too-large.yaml");
    let wf = load(&path).unwrap_or_else(|e| panic!("parses: {e}"));
    let (defaults, machine) = laptop();
    let err = check_fits(&wf, &defaults, &[machine]).expect_err("too large");
    assert_eq!(err.len(), 1);
    let d = &err.0[0];
    assert_eq!(
        (d.file.as_path(), d.pos.to_string().as_str()),
        (path.as_path(), "5:5")
    );
    let shown = err.to_string();
    for w in [
        "job \"assemble\" is larger than any machine it could run on",
        "asks for 16 cores, 64 GiB of memory",
        "this machine has 4 cores, 16 GiB of memory",
        "--maxCores",
        "--maxMemory",
    ] {
        assert!(shown.contains(w), "{w:?} missing:\n{shown}");
    }
}

#[test]
fn a_too_large_job_is_reported_together_with_the_other_mistakes() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("wf.yaml");
    std::fs::write(
        &path,
        "jobs:\n  assemble:\n    command: echo assembling\n    memory: 64Gi\n  typo:\n    comand: echo\n",
    )
    .expect("write");
    let (defaults, machine) = laptop();
    let err =
        load_checked(&path, |wf| check_fits(wf, &defaults, &[machine])).expect_err("two mistakes");
    let shown = err.to_string();
    assert_eq!(err.len(), 3, "too large, no command, unknown key: {shown}");
    assert!(shown.contains("larger than any machine"), "{shown}");
    assert!(shown.contains("comand"), "{shown}");
    let lines: Vec<usize> = err.iter().map(|d| d.pos.line).collect();
    assert!(
        lines.windows(2).all(|w| w[0] <= w[1]),
        "file order: {lines:?}"
    );
}

#[test]
fn an_unreadable_file_is_reported_without_a_position() {
    let path = repo().join("examples/no-such-workflow.yaml");
    let err = load(&path).expect_err("missing file");
    assert_eq!(err.len(), 1);
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!(
            "{}: error: can't read the workflow file",
            path.display()
        )),
        "{shown}"
    );
    assert!(shown.contains("examples/hello.yaml"), "{shown}");
}
