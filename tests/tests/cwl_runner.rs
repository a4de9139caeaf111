//! `toil-cwl-runner` end to end: real CWL documents (tests/fixtures/cwl/)
//! run through the real leader and agents, checking the exit code, that
//! standard output is exactly the output object, and the files in
//! `--outdir`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;
use toil_tests::harness;
use toil_tests::local::{Finished, Sandbox, count_lines, log_lines};
use toil_tests::wait::{wait_for, when};

const TIMEOUT: Duration = Duration::from_secs(120);

fn fixture(name: &str) -> PathBuf {
    harness::repo_root().join("tests/fixtures/cwl").join(name)
}

/// `toil-cwl-runner ARGS` in the sandbox, with its own job store and work
/// directory, outputs to `SANDBOX/out`.
fn runner(sb: &Sandbox, args: &[&str]) -> Command {
    let mut cmd = Command::new(harness::bin("toil-cwl-runner"));
    cmd.current_dir(sb.path())
        .env("TOIL_WORKDIR", sb.work_dir())
        .env("TOIL_STATE_DIR", sb.state_dir())
        .env("TOIL_AGENT_BINARY", harness::bin("toil-agent"))
        .env_remove("TOIL_JOBSTORE")
        .env_remove("RUST_LOG")
        .arg("--outdir")
        .arg(sb.output_dir())
        .args(args);
    cmd
}

fn run(sb: &Sandbox, args: &[&str]) -> Finished {
    sb.spawn(runner(sb, args), "cwl").wait(TIMEOUT)
}

/// Standard output parsed: it must be the output object and nothing else.
fn output_object(f: &Finished) -> Value {
    serde_json::from_str(&f.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            f.stdout, f.stderr
        )
    })
}

/// The local path of an output File, checked to be in `outdir`.
fn local_file(v: &Value, outdir: &Path) -> PathBuf {
    let path = PathBuf::from(
        v["path"]
            .as_str()
            .unwrap_or_else(|| panic!("no path in {v}")),
    );
    let outdir = std::fs::canonicalize(outdir).expect("outdir");
    assert!(
        path.starts_with(&outdir),
        "{} is not in {}",
        path.display(),
        outdir.display()
    );
    assert_eq!(
        v["location"].as_str(),
        Some(format!("file://{}", path.display()).as_str())
    );
    path
}

#[test]
fn a_tool_runs_and_its_output_is_exported() {
    let sb = Sandbox::new("cwl-tool");
    let f = run(
        &sb,
        &[
            "--jobStore",
            sb.job_store().to_str().expect("utf-8"),
            fixture("cat-tool.cwl").to_str().expect("utf-8"),
            fixture("cat-job.yml").to_str().expect("utf-8"),
        ],
    );
    f.expect_code(0);
    let out = output_object(&f);
    let upper = &out["upper"];
    assert_eq!(upper["class"], "File");
    assert_eq!(upper["basename"], "out.txt");
    assert_eq!(upper["size"], 17);
    let p = local_file(upper, &sb.output_dir());
    assert_eq!(
        std::fs::read_to_string(p).expect("read"),
        "ALPHA\nBETA\nGAMMA\n"
    );
    // The job store given is removed on success (the default --clean).
    assert!(!sb.job_store().exists(), "the job store was not cleaned up");
}

#[test]
fn a_scattered_three_step_workflow_runs() {
    let sb = Sandbox::new("cwl-scatter");
    let f = run(
        &sb,
        &[
            "--clean",
            "never",
            "--jobStore",
            sb.job_store().to_str().expect("utf-8"),
            fixture("scatter-wf.cwl").to_str().expect("utf-8"),
            fixture("scatter-job.json").to_str().expect("utf-8"),
        ],
    );
    f.expect_code(0);
    let out = output_object(&f);
    let p = local_file(&out["joined"], &sb.output_dir());
    assert_eq!(
        std::fs::read_to_string(p).expect("read"),
        "apple\nfig\npear\n"
    );
    // Five jobs ran (three scattered, then two), and `status` reads the
    // runner's job store like any other.
    let st = sb.run(
        &["status", sb.job_store().to_str().expect("utf-8")],
        Duration::from_secs(30),
    );
    st.expect_code(0);
    assert!(st.stdout.contains("jobs: 5 (5 succeeded)"), "{}", st.stdout);
}

#[test]
fn inputs_can_be_given_as_flags_after_the_document() {
    let sb = Sandbox::new("cwl-flags");
    let f = run(
        &sb,
        &[
            fixture("scatter-wf.cwl").to_str().expect("utf-8"),
            "--words",
            "b",
            "--words",
            "a",
        ],
    );
    f.expect_code(0);
    let out = output_object(&f);
    let p = local_file(&out["joined"], &sb.output_dir());
    assert_eq!(std::fs::read_to_string(p).expect("read"), "a\nb\n");
}

#[test]
fn a_failing_tool_exits_1_with_its_reason() {
    let sb = Sandbox::new("cwl-fail");
    let f = run(&sb, &[fixture("fail.cwl").to_str().expect("utf-8")]);
    f.expect_code(1);
    assert_eq!(f.stdout, "", "nothing on stdout for a failed run");
    assert!(f.stderr.contains("going down"), "{}", f.stderr);
}

#[test]
fn an_invalid_document_exits_2_with_its_position() {
    let sb = Sandbox::new("cwl-invalid");
    let doc = fixture("invalid.cwl");
    let f = run(&sb, &[doc.to_str().expect("utf-8")]);
    f.expect_code(2);
    assert_eq!(f.stdout, "");
    assert!(
        f.stderr.contains("invalid.cwl:6:"),
        "no file:line:col in\n{}",
        f.stderr
    );
    // --validate says the same without running anything.
    let v = run(&sb, &["--validate", doc.to_str().expect("utf-8")]);
    v.expect_code(2);
    let ok = run(
        &sb,
        &["--validate", fixture("fail.cwl").to_str().expect("utf-8")],
    );
    ok.expect_code(0);
}

#[test]
fn an_unsupported_requirement_exits_33() {
    let sb = Sandbox::new("cwl-unsupported");
    let f = run(&sb, &[fixture("unsupported.cwl").to_str().expect("utf-8")]);
    f.expect_code(33);
    assert_eq!(f.stdout, "");
    assert!(
        f.stderr.contains("NoSuchRequirementAnywhere"),
        "{}",
        f.stderr
    );
}

#[test]
fn version_prints_and_exits_0() {
    let sb = Sandbox::new("cwl-version");
    let f = sb
        .spawn(
            {
                let mut c = Command::new(harness::bin("toil-cwl-runner"));
                c.arg("--version");
                c
            },
            "version",
        )
        .wait(TIMEOUT);
    f.expect_code(0);
    assert!(f.stdout.starts_with("toil-cwl-runner "), "{}", f.stdout);
}

#[test]
fn restart_reruns_only_what_did_not_succeed() {
    let sb = Sandbox::new("cwl-restart");
    let log = sb.path().join("runs.log");
    let marker = sb.path().join("marker");
    let job = sb.write(
        "job.json",
        &serde_json::json!({"log": log, "marker": marker}).to_string(),
    );
    let store = sb.job_store();
    let doc = fixture("restart-wf.cwl");
    let args = [
        "--jobStore",
        store.to_str().unwrap(),
        doc.to_str().unwrap(),
        job.to_str().unwrap(),
    ];
    let first = run(&sb, &args);
    first.expect_code(1);
    assert!(store.exists(), "a named job store is kept after a failure");
    std::fs::write(&marker, "").unwrap();
    let mut again = vec!["--restart"];
    again.extend(args);
    let second = run(&sb, &again);
    second.expect_code(0);
    let out = output_object(&second);
    let p = local_file(&out["done"], &sb.output_dir());
    assert_eq!(std::fs::read_to_string(p).unwrap(), "one\n");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "ran\n",
        "the first step, which had succeeded, ran again"
    );
}

/// `v` with the output directory (as the runner names it) replaced by
/// `OUTDIR` in every string, so runs in different sandboxes compare equal.
fn normalized(v: &Value, outdir: &Path) -> Value {
    fn walk(v: &Value, dir: &str) -> Value {
        match v {
            Value::String(s) => Value::String(s.replace(dir, "OUTDIR")),
            Value::Array(a) => Value::Array(a.iter().map(|x| walk(x, dir)).collect()),
            Value::Object(m) => {
                Value::Object(m.iter().map(|(k, x)| (k.clone(), walk(x, dir))).collect())
            }
            _ => v.clone(),
        }
    }
    let dir = std::fs::canonicalize(outdir).expect("outdir");
    walk(v, &dir.display().to_string())
}

/// The indices `I` of the lines `WHAT I` of a run log.
fn indices(log: &[String], what: &str) -> Vec<usize> {
    let mut v: Vec<usize> = log
        .iter()
        .filter_map(|l| l.strip_prefix(what)?.strip_prefix(' ')?.parse().ok())
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn kill_9_mid_scatter_then_restart_runs_no_finished_invocation_again() {
    const N: usize = 12;
    let doc = fixture("restart-scatter-wf.cwl");
    let doc = doc.to_str().unwrap();
    let job = |sb: &Sandbox| {
        let log = sb.path().join("runs.log");
        let job = serde_json::json!({"log": log, "indices": (0..N).collect::<Vec<_>>()});
        (log, sb.write("job.json", &job.to_string()))
    };
    // Four invocations at a time (0.5 of 2 cores each), 1.5 s each.
    let common = ["--maxCores", "2", "--agentLease", "5s"];

    // The same workflow, uninterrupted: the output object to get.
    let reference = {
        let sb = Sandbox::new("cwl-kill9-ref");
        let (_, job) = job(&sb);
        let mut args = common.to_vec();
        args.extend([doc, job.to_str().unwrap()]);
        let f = run(&sb, &args);
        f.expect_code(0);
        normalized(&output_object(&f), &sb.output_dir())
    };
    assert_eq!(reference["parts"].as_array().map(Vec::len), Some(N));

    let sb = Sandbox::new("cwl-kill9");
    let (log, job) = job(&sb);
    let store = sb.job_store();
    let mut args = common.to_vec();
    args.extend([
        "--jobStore",
        store.to_str().unwrap(),
        doc,
        job.to_str().unwrap(),
    ]);
    let first = sb.spawn(runner(&sb, &args), "cwl");
    // Killed once half the invocations have finished: a moment defined by
    // progress, not by how fast this machine is.
    wait_for("half the invocations to finish", TIMEOUT, || {
        let log = log_lines(&log);
        when(indices(&log, "end").len() >= N / 2, log)
    });
    first.signal(Signal::SIGKILL);
    let killed = first.wait(TIMEOUT);
    assert_eq!(
        killed.status.code(),
        None,
        "the runner was killed mid-run\n{}",
        killed.stderr
    );
    let at_kill = log_lines(&log);
    let finished = indices(&at_kill, "end");
    let running: Vec<usize> = indices(&at_kill, "start")
        .into_iter()
        .filter(|i| !finished.contains(i))
        .collect();
    assert!(
        finished.len() < N,
        "all had finished before the kill: {at_kill:?}"
    );
    // An orphaned agent may still finish its invocation and store the
    // result; the restart must find it, not run it again.
    sb.wait_agents_gone(TIMEOUT);

    let mut again = vec!["--restart"];
    again.extend(&args);
    let second = run(&sb, &again);
    second.expect_code(0);
    let log = log_lines(&log);
    for i in 0..N {
        let (starts, ends) = (
            count_lines(&log, &format!("start {i}")),
            count_lines(&log, &format!("end {i}")),
        );
        if finished.contains(&i) {
            assert_eq!(
                (starts, ends),
                (1, 1),
                "index {i} had finished before the kill and ran again: {log:?}"
            );
        } else if running.contains(&i) {
            // Running at the kill: its agent either finished it (and the
            // restart recovered the result) or gave up, and then the
            // restart ran it again.
            assert!((1..=2).contains(&starts) && ends >= 1, "index {i}: {log:?}");
        } else {
            assert_eq!((starts, ends), (1, 1), "index {i}: {log:?}");
        }
    }
    assert_eq!(
        normalized(&output_object(&second), &sb.output_dir()),
        reference,
        "the restarted run's output object differs from an uninterrupted run's"
    );
    for (n, part) in output_object(&second)["parts"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let p = local_file(part, &sb.output_dir());
        assert_eq!(std::fs::read_to_string(p).unwrap(), format!("{n}\n"));
    }
    eprintln!(
        "finished at the kill: {finished:?}; running at the kill: {running:?}; log after the restart: {log:?}"
    );
}
