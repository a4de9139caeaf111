//! Edit the workflow, resume, and only what changed runs again: the real
//! leader and agents on a 20-job workflow whose jobs log every run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use toil_tests::local::{Sandbox, count_lines, log_lines};
use toil_tests::procfs;
use toil_tests::wait::wait_for;

const T: Duration = Duration::from_secs(120);

/// A 20-job workflow: `prep` reads `in.txt`; 12 `part` instances and a
/// `check` take its output; `report` gathers them; 5 `other` instances stand
/// apart. Every job appends its id to the run log. `check` greps for
/// `pattern`; `gate`, if given, makes `report` wait for that file.
fn workflow(sb: &Sandbox, pattern: &str, part_cmd: &str, gate: Option<&Path>) -> PathBuf {
    let log = sb.path().join("runlog");
    let wait = gate
        .map(|g| {
            format!(
                "echo $$ > {}\n      while [ ! -e {} ]; do sleep 0.05; done\n      ",
                sb.path().join("report.pid").display(),
                g.display()
            )
        })
        .unwrap_or_default();
    sb.write(
        "wf.yaml",
        &format!(
            r#"
defaults: {{cores: 0.1, memory: 32Mi}}
jobs:
  prep:
    inputs: [in.txt]
    command: "echo prep >> {log} && cp in.txt d.txt"
    outputs: {{d: d.txt}}
  part:
    scatter: {{i: {{range: 12}}}}
    inputs: [{{from: prep.d}}]
    command: "echo part{{{{i}}}} >> {log} && {part_cmd} < d.txt > p{{{{i}}}}.txt"
    outputs: {{p: "p{{{{i}}}}.txt"}}
  check:
    inputs: [{{from: prep.d}}]
    command: "echo check >> {log} && grep {pattern} d.txt > c.txt"
    outputs: {{c: c.txt}}
  report:
    inputs: [{{from: part.p}}, {{from: check.c}}]
    command: |
      {wait}echo report >> {log}
      cat p*.txt c.txt > r.txt
    outputs: {{r: r.txt}}
  other:
    scatter: {{i: {{range: 5}}}}
    command: "echo other{{{{i}}}} >> {log}"
outputs:
  final: report.r
"#,
            log = log.display(),
        ),
    );
    log
}

fn run(sb: &Sandbox, extra: &[&str]) -> toil_tests::local::Finished {
    let mut args = vec!["run", "wf.yaml", "--clean", "never", "--retryCount", "0"];
    args.extend_from_slice(extra);
    sb.run(&args, T)
}

/// Runs of each job id in the run log.
fn runs(log: &Path, id: &str) -> usize {
    count_lines(&log_lines(log), id)
}

fn parts(log: &Path) -> Vec<usize> {
    (0..12).map(|i| runs(log, &format!("part{i}"))).collect()
}

fn others(log: &Path) -> Vec<usize> {
    (0..5).map(|i| runs(log, &format!("other{i}"))).collect()
}

fn exported(sb: &Sandbox) -> String {
    std::fs::read_to_string(sb.output_dir().join("final/r.txt")).expect("exported report")
}

#[test]
fn fixing_a_failed_command_and_resuming_runs_only_it_and_its_dependents() {
    let sb = Sandbox::new("resume-fix");
    sb.write("in.txt", "data\n");
    let log = workflow(&sb, "dta", "cat", None);
    let r = run(&sb, &[]);
    r.expect_code(1);
    assert_eq!(runs(&log, "check"), 1);
    assert_eq!(runs(&log, "report"), 0, "report is blocked by check");

    // The user fixes the typo in the file and resumes, as told.
    workflow(&sb, "data", "cat", None);
    let r = run(&sb, &["--restart"]);
    r.expect_code(0);
    assert!(
        r.stderr
            .contains("wf.yaml changed since the last run; resuming as version 1 of the workflow: kept 18, rerun 0; 2 unfinished job(s) run"),
        "{}",
        r.stderr
    );
    assert_eq!(runs(&log, "prep"), 1, "prep kept");
    assert_eq!(parts(&log), vec![1; 12], "every part kept");
    assert_eq!(others(&log), vec![1; 5], "every other kept");
    assert_eq!(runs(&log, "check"), 2, "the fixed job ran again");
    assert_eq!(runs(&log, "report"), 1, "its dependent ran");
    assert_eq!(exported(&sb), format!("{}data\n", "data\n".repeat(12)));
}

#[test]
fn editing_a_finished_job_reruns_it_and_downstream_and_keeps_the_rest() {
    let sb = Sandbox::new("resume-edit");
    sb.write("in.txt", "data\n");
    let log = workflow(&sb, "data", "cat", None);
    let r = run(&sb, &[]);
    r.expect_code(0);
    assert!(
        r.stderr.contains("the job store is kept at ")
            && r.stderr.contains(&format!("{}", sb.job_store().display())),
        "a kept store's path is printed: {}",
        r.stderr
    );

    // A changed command in a scattered job; a plain `run` on the existing
    // store resumes it and says so.
    workflow(&sb, "data", "sed s/data/DATA/", None);
    let r = run(&sb, &[]);
    r.expect_code(0);
    assert!(
        r.stderr.contains("already holds workflow") && r.stderr.contains("resuming it"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("kept 7, rerun 13: part[0..11] (command changed), report (after part)"),
        "{}",
        r.stderr
    );
    assert_eq!(parts(&log), vec![2; 12]);
    assert_eq!(runs(&log, "report"), 2);
    assert_eq!((runs(&log, "prep"), runs(&log, "check")), (1, 1));
    assert_eq!(others(&log), vec![1; 5]);
    assert_eq!(exported(&sb), format!("{}data\n", "DATA\n".repeat(12)));

    // Resuming again with no change runs nothing and stores no new version.
    let r = run(&sb, &["--restart"]);
    r.expect_code(0);
    assert!(!r.stderr.contains("changed since"), "{}", r.stderr);
    assert_eq!(parts(&log), vec![2; 12], "nothing ran again");
    assert_eq!(runs(&log, "report"), 2);
    assert!(!sb.job_store().join("workflow/versions/2").exists());
}

#[test]
fn a_changed_input_file_an_added_job_and_a_removed_job() {
    let sb = Sandbox::new("resume-input");
    sb.write("in.txt", "data\n");
    let log = workflow(&sb, "data", "cat", None);
    run(&sb, &[]).expect_code(0);

    // New content in the input file: prep and everything after it reruns,
    // `other` does not.
    sb.write("in.txt", "data again\n");
    let r = run(&sb, &["--restart"]);
    r.expect_code(0);
    assert!(
        r.stderr.contains("rerun 15: prep (input file "),
        "{}",
        r.stderr
    );
    assert_eq!(runs(&log, "prep"), 2);
    assert_eq!(parts(&log), vec![2; 12]);
    assert_eq!((runs(&log, "check"), runs(&log, "report")), (2, 2));
    assert_eq!(others(&log), vec![1; 5]);
    assert_eq!(
        exported(&sb),
        format!("{}data again\n", "data again\n".repeat(12))
    );

    // Remove `other`, add `extra` after report.
    let text = std::fs::read_to_string(sb.path().join("wf.yaml")).expect("read");
    let start = text.find("  other:").expect("other");
    let end = text.find("outputs:\n  final").expect("outputs");
    let text = format!(
        "{}  extra:\n    after: [report]\n    command: \"echo extra >> {}\"\n{}",
        &text[..start],
        log.display(),
        &text[end..]
    );
    sb.write("wf.yaml", &text);
    let r = run(&sb, &["--restart"]);
    r.expect_code(0);
    assert!(
        r.stderr
            .contains("kept 15, rerun 0; new: extra; removed: other[0..4]"),
        "{}",
        r.stderr
    );
    assert_eq!(runs(&log, "extra"), 1);
    assert_eq!(runs(&log, "report"), 2, "report kept");
    assert_eq!(others(&log), vec![1; 5]);
    let status = sb.run(
        &["status", sb.job_store().to_str().expect("utf-8"), "--jobs"],
        T,
    );
    status.expect_code(0);
    assert!(status.stdout.contains("extra"), "{}", status.stdout);
    assert!(!status.stdout.contains("other[0]"), "{}", status.stdout);
}

#[test]
fn kill_9_in_the_middle_of_a_resume_then_resume_again() {
    let sb = Sandbox::new("resume-kill");
    sb.write("in.txt", "data\n");
    let log = workflow(&sb, "data", "cat", None);
    run(&sb, &[]).expect_code(0);

    // Edit `part`; report waits for a gate, so the resume is caught with
    // parts rerun and report running.
    let gate = sb.path().join("gate");
    workflow(&sb, "data", "sed s/data/DATA/", Some(&gate));
    let leader = sb.spawn(
        sb.leader(&[
            "run",
            "wf.yaml",
            "--restart",
            "--clean",
            "never",
            "--agentLease",
            "2s",
        ]),
        "leader",
    );
    // report starts once every part has run again and been recorded.
    let pid_file = sb.path().join("report.pid");
    let pid: u32 = wait_for("report to start after the rerun parts", T, || {
        std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| log_lines(&log))
    });
    assert_eq!(parts(&log), vec![2; 12]);
    leader.signal(Signal::SIGKILL);
    assert_eq!(leader.wait(T).status.code(), None, "killed by a signal");
    // report's agent, cut off from its leader, kills it after its lease;
    // open the gate only then, so that the killed attempt never logs.
    wait_for("the orphaned report job to be killed", T, || {
        if procfs::alive(pid) { Err(pid) } else { Ok(()) }
    });

    // The resume was journaled: the second one continues version 1 rather
    // than planning it again, and keeps the rerun parts.
    std::fs::write(&gate, "").expect("gate");
    let r = run(&sb, &["--restart", "--agentLease", "2s"]);
    r.expect_code(0);
    assert!(!r.stderr.contains("changed since"), "{}", r.stderr);
    assert_eq!(parts(&log), vec![2; 12], "parts are not run a third time");
    assert_eq!((runs(&log, "prep"), runs(&log, "check")), (1, 1));
    assert_eq!(others(&log), vec![1; 5]);
    assert_eq!(
        runs(&log, "report"),
        2,
        "{}\n{:?}",
        r.stderr,
        log_lines(&log)
    );
    assert_eq!(exported(&sb), format!("{}data\n", "DATA\n".repeat(12)));
}
