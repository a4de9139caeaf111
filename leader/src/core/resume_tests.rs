//! Unit tests of content keys, resume plans and rebasing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use toil_proto::v1::journal_entry::Kind;
use toil_proto::v1::{AttemptResult, Cause, CauseKind, FileRef, JobState};

use super::*;
use crate::core::{JobDefaults, RetryPolicy};

fn parse(text: &str) -> Workflow {
    crate::workflow::parse_stored(text, Path::new("/w/wf.yaml"), Path::new("/w"))
        .expect("workflow parses")
}

fn file(sha: &str) -> FileRef {
    FileRef {
        file_id: format!("files/inputs/{sha}"),
        path: "in.txt".into(),
        size_bytes: 1,
        sha256: sha.into(),
    }
}

fn imports(sha: &str) -> HashMap<PathBuf, FileRef> {
    HashMap::from([(PathBuf::from("/w/in.txt"), file(sha))])
}

fn defaults() -> JobDefaults {
    JobDefaults {
        millicores: 100,
        memory: 1 << 20,
        disk: 1 << 20,
        retries: 0,
    }
}

const BASE: &str = r#"
jobs:
  a:
    inputs: [in.txt]
    command: cat in.txt > a.txt
    outputs: {out: a.txt}
  b:
    scatter: {i: [0, 1, 2, 3, 4]}
    inputs: [{from: a.out}]
    command: cp a.txt b{{i}}.txt
    outputs: {out: "b{{i}}.txt"}
  c:
    inputs: [{from: b.out}]
    command: cat b*.txt > c.txt
    outputs: {out: c.txt}
  side:
    command: echo side
"#;

fn core_of(text: &str, sha: &str) -> Core {
    let mut c = Core::new(&parse(text), defaults(), RetryPolicy::default());
    c.set_imports(imports(sha));
    c
}

/// Runs every job to success, with one output file per job.
fn run_all(c: &mut Core) {
    let t = Instant::now();
    while let Some(j) = c.take_ready(1024, |_, _| true) {
        let n = c.launch(j, "here", 1, None).expect("launch");
        let id = c.job_id(j);
        let result = AttemptResult {
            cause: Some(Cause {
                kind: CauseKind::Succeeded as i32,
                code: 0,
                message: String::new(),
            }),
            outputs: vec![toil_proto::v1::OutputFiles {
                name: "out".into(),
                files: vec![FileRef {
                    file_id: format!("files/{id}/1/x"),
                    path: format!("{}.txt", id.replace(['[', ']'], "")),
                    size_bytes: 1,
                    sha256: "00".into(),
                }],
            }],
            ..Default::default()
        };
        c.finish(j, n, result, 1, t).expect("finish");
    }
    assert!(c.is_finished());
}

fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} is in the workflow");
    text.replace(from, to)
}

#[test]
fn an_unchanged_workflow_keeps_every_finished_job() {
    let mut old = core_of(BASE, "s1");
    run_all(&mut old);
    let next = old.successor(&parse(BASE), imports("s1"));
    let plan = old.plan_resume(&next);
    assert_eq!(plan.kept.len(), 8);
    assert!(plan.changes_nothing(), "{plan:?}");
    assert_eq!(plan.describe(), "kept 8, rerun 0");
}

#[test]
fn a_changed_command_reruns_that_job_and_what_runs_after_it() {
    let mut old = core_of(BASE, "s1");
    run_all(&mut old);
    let text = edit(BASE, "cp a.txt b{{i}}.txt", "cp -v a.txt b{{i}}.txt");
    let next = old.successor(&parse(&text), imports("s1"));
    let plan = old.plan_resume(&next);
    assert_eq!(plan.kept, vec!["a".to_string(), "side".to_string()]);
    let rerun: Vec<&str> = plan.rerun.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(rerun, ["b[0]", "b[1]", "b[2]", "b[3]", "b[4]", "c"]);
    assert_eq!(
        plan.describe(),
        "kept 2, rerun 6: b[0..4] (command changed), c (after b)"
    );
}

#[test]
fn one_scatter_value_changed_reruns_one_instance_and_the_gather() {
    let mut old = core_of(BASE, "s1");
    run_all(&mut old);
    let text = edit(BASE, "[0, 1, 2, 3, 4]", "[0, 1, 9, 3, 4]");
    let next = old.successor(&parse(&text), imports("s1"));
    let plan = old.plan_resume(&next);
    assert_eq!(
        plan.describe(),
        "kept 6, rerun 2: b[2] (command changed), c (after b)"
    );
}

#[test]
fn a_changed_input_file_reruns_its_reader_and_everything_downstream() {
    let mut old = core_of(BASE, "s1");
    run_all(&mut old);
    let next = old.successor(&parse(BASE), imports("s2"));
    let plan = old.plan_resume(&next);
    assert_eq!(plan.kept, vec!["side".to_string()]);
    assert_eq!(
        plan.rerun[0],
        ("a".into(), Reason::InputFile("/w/in.txt".into()))
    );
    assert_eq!(plan.rerun.len(), 7);
    assert_eq!(plan.rerun[1].1, Reason::Upstream("a".into()));
}

#[test]
fn resources_that_do_not_change_results_keep_the_job() {
    let mut old = core_of(BASE, "s1");
    run_all(&mut old);
    let text = edit(
        BASE,
        "    command: echo side",
        "    memory: 2Gi\n    cores: 2\n    command: echo side",
    );
    let next = old.successor(&parse(&text), imports("s1"));
    assert!(old.plan_resume(&next).changes_nothing());
    let text = edit(
        BASE,
        "    command: echo side",
        "    env: {X: '1'}\n    command: echo side",
    );
    let next = old.successor(&parse(&text), imports("s1"));
    assert_eq!(
        old.plan_resume(&next).rerun,
        vec![("side".to_string(), Reason::Env)]
    );
}

#[test]
fn added_and_removed_jobs_are_listed() {
    let mut old = core_of(BASE, "s1");
    run_all(&mut old);
    let text = edit(
        BASE,
        "  side:\n    command: echo side\n",
        "  extra:\n    after: [c]\n    command: echo extra\n",
    );
    let next = old.successor(&parse(&text), imports("s1"));
    let plan = old.plan_resume(&next);
    assert_eq!(plan.added, vec!["extra".to_string()]);
    assert_eq!(plan.removed, vec!["side".to_string()]);
    assert_eq!(plan.kept.len(), 7);
    assert_eq!(
        plan.describe(),
        "kept 7, rerun 0; new: extra; removed: side"
    );
}

#[test]
fn rebasing_keeps_attempts_and_outputs_and_replays_identically() {
    let mut old = core_of(BASE, "s1");
    run_all(&mut old);
    old.drain_journal();
    let text = edit(BASE, "cat b*.txt > c.txt", "cat b*.txt | sort > c.txt");
    let wf = Arc::new(parse(&text));
    let next = old.successor(&wf, imports("s1"));
    let plan = old.plan_resume(&next);
    let stored = StoredVersion {
        workflow: wf.clone(),
        imports: imports("s1"),
        spec_sha256: "sha".into(),
    };
    old.apply_version(1, stored.clone(), plan.kept.clone())
        .expect("apply");
    assert_eq!(old.version(), 1);
    let journal = old.drain_journal();
    assert!(
        matches!(&journal[..], [e] if matches!(&e.kind, Some(Kind::Version(v)) if v.version == 1 && v.kept.len() == 7))
    );
    let c = old.lookup("c").expect("c");
    assert_eq!(old.state(c), JobState::Queued, "c waits for nothing kept");
    assert_eq!(old.attempts(c).len(), 1, "a rerun job keeps its history");

    let b3 = old.lookup("b[3]").expect("b[3]");
    assert_eq!(old.state(b3), JobState::Succeeded);
    assert_eq!(old.attempts(b3).len(), 1, "attempts carried over");
    assert_eq!(old.outputs(b3).len(), 1, "outputs carried over");
    assert_eq!(old.counts()[JobState::Succeeded], 7);
    assert!(!old.is_finished());
    let spec = old.launch_spec(c, 1).expect("spec");
    assert_eq!(spec.inputs.len(), 5, "c is given the kept b outputs");

    // The same move from the journal, on a core built from version 0.
    let mut again = core_of(BASE, "s1");
    run_all(&mut again);
    again.install_versions(HashMap::from([(1, stored)]));
    for e in journal {
        again.replay(e, Instant::now()).expect("replay");
    }
    again.finish_replay();
    assert_eq!(again.version(), 1);
    assert_eq!(again.counts(), old.counts());
    assert_eq!(again.state(again.lookup("c").expect("c")), JobState::Queued);
    let n = old.launch(c, "here", 2, None).expect("launch");
    assert_eq!(n, 2, "attempt numbers continue across versions");
}

#[test]
fn a_version_missing_from_the_store_is_an_error_not_a_silent_rerun() {
    let mut c = core_of(BASE, "s1");
    let e = toil_proto::v1::JournalEntry {
        time: None,
        kind: Some(Kind::Version(toil_proto::v1::WorkflowVersionEntry {
            version: 3,
            spec_sha256: String::new(),
            kept: vec![],
        })),
    };
    let err = c.replay(e, Instant::now()).expect_err("missing version");
    assert!(err.to_string().contains("version 3"), "{err}");
}

#[test]
fn ids_compact_into_ranges() {
    let ids = ["a", "b[0]", "b[1]", "b[2]", "b[4]", "c[0]", "d"];
    assert_eq!(compact_ids(ids), ["a", "b[0..2]", "b[4]", "c[0]", "d"]);
}

#[test]
fn a_stored_version_changed_after_it_was_journaled_is_refused() {
    // Someone with write access to the job store rewrites version 1's file
    // after the move to it was journaled: replay must not run the new text.
    let mut c = core_of(BASE, "s1");
    run_all(&mut c);
    c.install_versions(HashMap::from([(
        1,
        StoredVersion {
            workflow: Arc::new(parse(BASE)),
            imports: imports("s1"),
            spec_sha256: "rewritten".into(),
        },
    )]));
    let e = toil_proto::v1::JournalEntry {
        time: None,
        kind: Some(Kind::Version(toil_proto::v1::WorkflowVersionEntry {
            version: 1,
            spec_sha256: "journaled".into(),
            kept: vec![],
        })),
    };
    let err = c.replay(e, Instant::now()).expect_err("changed version");
    assert!(
        err.to_string().contains("changed after it was journaled"),
        "{err}"
    );
    assert_eq!(c.version(), 0, "the workflow stays where it was");
}
