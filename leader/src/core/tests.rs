//! Step-by-step tests of the scheduler core.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use toil_proto::v1::{
    AddJobsRequest, AttemptResult, Cause, CauseKind, FileRef, JobSpec, JobState, OutputFiles,
    Relation, WorkflowState,
};

use super::*;
use crate::workflow::spec::{
    Command, Defaults, InputSource, InputSpec, JobTemplate, OutputDecl, Pos, Scatter,
    ScatterValues, Workflow,
};

fn job(name: &str, after: &[&str]) -> JobTemplate {
    JobTemplate {
        name: name.into(),
        pos: Pos::default(),
        command: Command::Shell(format!("echo {name}")),
        env: Default::default(),
        image: None,
        millicores: None,
        memory: None,
        disk: None,
        gpus: 0,
        preemptible: false,
        time_limit: None,
        retries: None,
        after: after.iter().map(|s| s.to_string()).collect(),
        inputs: vec![],
        outputs: vec![],
        scatter: None,
        resources_pos: Pos::default(),
        cwl: None,
    }
}

fn wf(jobs: Vec<JobTemplate>) -> Workflow {
    Workflow {
        name: "t".into(),
        source: PathBuf::from("t.yaml"),
        base_dir: PathBuf::from("/"),
        defaults: Defaults::default(),
        jobs,
        outputs: vec![],
    }
}

fn defaults() -> JobDefaults {
    JobDefaults {
        millicores: 1000,
        memory: 2 << 30,
        disk: 2 << 30,
        retries: 0,
    }
}

fn core(jobs: Vec<JobTemplate>) -> Core {
    Core::new(&wf(jobs), defaults(), RetryPolicy::default())
}

fn cause(kind: CauseKind) -> Cause {
    let code = if kind == CauseKind::ExitCode { 1 } else { 0 };
    Cause::with_code(kind, code, "")
}

fn result(kind: CauseKind) -> AttemptResult {
    AttemptResult {
        cause: Some(cause(kind)),
        ..Default::default()
    }
}

fn with_outputs(name: &str, files: &[&str]) -> AttemptResult {
    AttemptResult {
        cause: Some(cause(CauseKind::Succeeded)),
        outputs: vec![OutputFiles {
            name: name.into(),
            files: files
                .iter()
                .map(|f| FileRef {
                    file_id: format!("id-{f}"),
                    path: f.to_string(),
                    size_bytes: 1,
                    sha256: String::new(),
                })
                .collect(),
        }],
        ..Default::default()
    }
}

/// Launches the next ready job and returns it with its attempt number.
fn launch_next(c: &mut Core) -> Option<(JobIdx, u32)> {
    let j = c.take_ready(64, |_, _| true)?;
    let n = c.launch(j, "test", 0, None).ok()?;
    Some((j, n))
}

fn id(c: &Core, j: JobIdx) -> String {
    c.job_id(j)
}

fn run_all(c: &mut Core) -> Vec<String> {
    let mut order = Vec::new();
    while let Some((j, n)) = launch_next(c) {
        order.push(id(c, j));
        c.finish(j, n, result(CauseKind::Succeeded), 0, Instant::now())
            .expect("finish");
    }
    order
}

#[test]
fn a_chain_runs_in_order_and_succeeds() {
    let mut c = core(vec![job("a", &[]), job("b", &["a"]), job("c", &["b"])]);
    assert_eq!(c.counts()[JobState::Queued], 1);
    assert_eq!(c.counts()[JobState::Waiting], 2);
    assert_eq!(run_all(&mut c), ["a", "b", "c"]);
    assert!(c.is_finished());
    assert_eq!(c.workflow_state(), WorkflowState::Succeeded);
    let events = c.drain_events();
    assert_eq!(events.last(), Some(&CoreEvent::WorkflowEnded));
}

#[test]
fn a_gather_waits_for_every_scatter_instance_and_gets_their_files() {
    let mut count = job("count", &[]);
    count.scatter = Some(Scatter {
        var: "s".into(),
        values: ScatterValues::List(vec!["x".into(), "y".into(), "z".into()]),
    });
    count.command = Command::Shell("wc {{s}} > {{s}}.n".into());
    count.outputs = vec![OutputDecl {
        name: "n".into(),
        patterns: vec!["{{s}}.n".into()],
        optional: false,
    }];
    let mut merge = job("merge", &["count"]);
    merge.inputs = vec![InputSpec {
        source: InputSource::JobOutput {
            job: "count".into(),
            output: "n".into(),
        },
        dest: "parts".into(),
        writable: false,
        pos: Pos::default(),
    }];
    let mut c = core(vec![count, merge]);
    assert_eq!(c.job_count(), 4);
    assert_eq!(c.lookup("count[2]"), Some(2));
    assert_eq!(c.lookup("merge"), Some(3));
    assert_eq!(c.lookup("count"), None);

    let spec = c.launch_spec(1, 1).expect("spec");
    assert_eq!(spec.argv, ["/bin/sh", "-c", "wc y > y.n"]);
    assert_eq!(spec.outputs[0].patterns, ["y.n"]);
    assert_eq!(
        spec.env.get("TOIL_SCATTER_VALUE").map(String::as_str),
        Some("y")
    );

    let mut launched = Vec::new();
    while let Some(x) = launch_next(&mut c) {
        launched.push(x);
    }
    assert_eq!(launched.len(), 3, "merge must not start early");
    for (k, (j, n)) in launched.into_iter().enumerate() {
        assert_eq!(c.state(3), JobState::Waiting);
        let f = ["x.n", "y.n", "z.n"][k];
        c.finish(j, n, with_outputs("n", &[f]), 0, Instant::now())
            .expect("finish");
    }
    assert_eq!(c.state(3), JobState::Queued);
    let (j, n) = launch_next(&mut c).expect("merge");
    let spec = c.launch_spec(j, n).expect("spec");
    let dests: Vec<_> = spec.inputs.iter().map(|i| i.dest_path.as_str()).collect();
    assert_eq!(dests, ["parts/x.n", "parts/y.n", "parts/z.n"]);
}

#[test]
fn user_failures_retry_with_backoff_then_fail_and_block_dependents() {
    let mut a = job("a", &[]);
    a.retries = Some(1);
    let mut c = core(vec![a, job("b", &["a"]), job("other", &[])]);
    let t0 = Instant::now();
    let (a, n) = launch_next(&mut c).expect("a");
    assert_eq!(id(&c, a), "a");
    let ended = c
        .finish(a, n, result(CauseKind::ExitCode), 0, t0)
        .expect("finish");
    assert_eq!(
        ended,
        Ended {
            will_retry: true,
            state: JobState::Queued
        }
    );
    // The retry waits for its back-off; the independent job goes first.
    let (o, on) = launch_next(&mut c).expect("other");
    assert_eq!(id(&c, o), "other");
    assert!(launch_next(&mut c).is_none(), "a is backing off");
    assert_eq!(c.next_wakeup(), Some(t0 + Duration::from_secs(1)));
    c.tick(t0 + Duration::from_secs(1));
    let (a2, n2) = launch_next(&mut c).expect("retry");
    assert_eq!((a2, n2), (a, 2));
    let ended = c
        .finish(a, 2, result(CauseKind::ExitCode), 0, t0)
        .expect("finish");
    assert_eq!(ended.state, JobState::Failed);
    assert_eq!(c.state(1), JobState::Blocked);
    assert_eq!(c.blocked_by(1), Some(a));
    assert!(!c.is_finished(), "other is still running");
    c.finish(o, on, result(CauseKind::Succeeded), 0, t0)
        .expect("finish");
    assert!(c.is_finished());
    assert_eq!(c.workflow_state(), WorkflowState::Failed);
    assert_eq!(c.retries(a), (1, 1));
}

#[test]
fn infrastructure_causes_do_not_spend_user_retries() {
    let mut c = Core::new(
        &wf(vec![job("a", &[])]),
        defaults(),
        RetryPolicy {
            infra_retries: 2,
            ..RetryPolicy::default()
        },
    );
    for kind in [CauseKind::AgentLost, CauseKind::Preempted] {
        let (j, n) = launch_next(&mut c).expect("launch");
        let e = c
            .finish(j, n, result(kind), 0, Instant::now())
            .expect("finish");
        assert!(e.will_retry, "{kind:?} must be retried");
    }
    assert_eq!(c.retries(0), (0, 0));
    let (j, n) = launch_next(&mut c).expect("launch");
    let e = c
        .finish(j, n, result(CauseKind::Evicted), 0, Instant::now())
        .expect("finish");
    assert_eq!(e.state, JobState::Failed, "infra budget is spent");
}

#[test]
fn fatal_causes_fail_at_once_and_oom_doubles_memory() {
    let mut a = job("img", &[]);
    a.retries = Some(5);
    let mut b = job("oom", &[]);
    b.retries = Some(1);
    b.memory = Some(1 << 30);
    let mut c = core(vec![a, b]);
    let (j, n) = launch_next(&mut c).expect("img");
    let e = c
        .finish(j, n, result(CauseKind::ImagePull), 0, Instant::now())
        .expect("finish");
    assert_eq!(e.state, JobState::Failed);
    let t0 = Instant::now();
    let (j, n) = launch_next(&mut c).expect("oom");
    assert_eq!(c.attempts(j)[0].memory, 1 << 30);
    c.finish(j, n, result(CauseKind::OomKilled), 0, t0)
        .expect("finish");
    assert_eq!(c.request(j).memory, 2 << 30);
    c.tick(t0 + Duration::from_secs(5));
    let (j, n) = launch_next(&mut c).expect("oom retry");
    assert_eq!(c.attempts(j)[(n - 1) as usize].memory, 2 << 30);
}

fn child(name: &str, deps: &[&str]) -> JobSpec {
    JobSpec {
        name: name.into(),
        shell: format!("echo {name}"),
        depends_on: deps.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn add(relation: Relation, jobs: Vec<JobSpec>) -> AddJobsRequest {
    AddJobsRequest {
        jobs,
        relation: relation as i32,
        parent_job_id: String::new(),
    }
}

#[test]
fn children_and_follow_ons_join_on_success_and_hold_up_dependents() {
    let mut c = core(vec![job("a", &[]), job("b", &["a"])]);
    let (a, n) = launch_next(&mut c).expect("a");
    let ids = c
        .stage_jobs(
            a,
            add(
                Relation::Child,
                vec![child("c1", &[]), child("c2", &["c1"])],
            ),
        )
        .expect("stage children");
    assert_eq!(ids, ["a/c1", "a/c2"]);
    c.stage_jobs(a, add(Relation::FollowOn, vec![child("f", &[])]))
        .expect("stage follow-on");
    // Nothing joins before the parent succeeds.
    assert_eq!(c.job_count(), 2);
    c.finish(a, n, result(CauseKind::Succeeded), 0, Instant::now())
        .expect("finish");
    assert_eq!(c.job_count(), 5);
    let c1 = c.lookup("a/c1").expect("c1");
    let c2 = c.lookup("a/c2").expect("c2");
    let f = c.lookup("a/f").expect("f");
    // What a job's token may see the data of: itself and what it added.
    assert!(c.is_within(a, a) && c.is_within(c1, a) && c.is_within(f, a));
    assert!(!c.is_within(1, a), "b is a's dependent, not its child");
    assert!(!c.is_within(a, c1), "a child does not see its parent");
    assert_eq!(c.state(c1), JobState::Queued);
    assert_eq!(c.state(c2), JobState::Waiting);
    assert_eq!(c.state(f), JobState::Waiting);
    assert_eq!(c.state(1), JobState::Waiting, "b waits for a's children");
    assert_eq!(run_all(&mut c), ["a/c1", "a/c2", "a/f", "b"]);
    assert_eq!(c.workflow_state(), WorkflowState::Succeeded);
}

#[test]
fn a_failed_attempt_discards_its_children() {
    let mut a = job("a", &[]);
    a.retries = Some(1);
    let mut c = core(vec![a]);
    let t0 = Instant::now();
    let (a, n) = launch_next(&mut c).expect("a");
    c.stage_jobs(a, add(Relation::Child, vec![child("c", &[])]))
        .expect("stage");
    c.finish(a, n, result(CauseKind::ExitCode), 0, t0)
        .expect("finish");
    c.tick(t0 + Duration::from_secs(2));
    let (a, n) = launch_next(&mut c).expect("retry");
    // The same child name can be staged again by the new attempt.
    c.stage_jobs(a, add(Relation::Child, vec![child("c", &[])]))
        .expect("stage again");
    c.finish(a, n, result(CauseKind::Succeeded), 0, t0)
        .expect("finish");
    assert_eq!(c.job_count(), 2);
    assert_eq!(run_all(&mut c), ["a/c"]);
}

#[test]
fn bad_added_jobs_are_refused_whole() {
    let mut c = core(vec![job("a", &[])]);
    for (req, needle) in [
        (add(Relation::Root, vec![child("a", &[])]), "already exists"),
        (
            add(Relation::Root, vec![child("x", &["nope"])]),
            "not a job",
        ),
        (add(Relation::Root, vec![child("bad name", &[])]), "letters"),
        (
            add(Relation::Root, vec![child("x", &[]), child("x", &[])]),
            "used twice",
        ),
        (
            add(
                Relation::Root,
                vec![JobSpec {
                    name: "e".into(),
                    ..Default::default()
                }],
            ),
            "argv or shell",
        ),
        (
            // `a` declares no output called `out`.
            add(
                Relation::Root,
                vec![JobSpec {
                    name: "reader".into(),
                    shell: "cat x".into(),
                    inputs: vec![toil_proto::v1::JobInput {
                        job_id: "a".into(),
                        output: "out".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            ),
            "names output \"out\", which that job does not declare (it declares: none)",
        ),
    ] {
        let err = c.add_root_jobs(req).expect_err(needle).to_string();
        assert!(err.contains(needle), "{err}");
    }
    assert_eq!(c.job_count(), 1);
    let ids = c
        .add_root_jobs(add(Relation::Root, vec![child("late", &["a"])]))
        .expect("add");
    assert_eq!(ids, ["late"]);
    assert_eq!(run_all(&mut c), ["a", "late"]);
}

#[test]
fn stale_and_duplicate_reports_are_refused() {
    let mut c = core(vec![job("a", &[])]);
    let (a, n) = launch_next(&mut c).expect("a");
    assert!(matches!(
        c.finish(a, n + 1, result(CauseKind::Succeeded), 0, Instant::now()),
        Err(CoreError::StaleAttempt { .. })
    ));
    c.finish(a, n, result(CauseKind::Succeeded), 0, Instant::now())
        .expect("first report");
    assert!(matches!(
        c.finish(a, n, result(CauseKind::Succeeded), 0, Instant::now()),
        Err(CoreError::StaleAttempt { .. })
    ));
}

#[test]
fn cancelling_blocks_dependents_and_kills_running_attempts() {
    let mut c = core(vec![job("a", &[]), job("b", &["a"]), job("c", &[])]);
    let (a, n) = launch_next(&mut c).expect("a");
    assert_eq!(c.cancel_job(a, "user").expect("cancel"), Some(n));
    // The kill is reported as whatever the agent saw; it counts as cancelled.
    let e = c
        .finish(a, n, result(CauseKind::Signaled), 0, Instant::now())
        .expect("finish");
    assert_eq!(e.state, JobState::Cancelled);
    assert_eq!(c.state(1), JobState::Blocked);
    let kill = c.cancel_workflow("stop");
    assert!(kill.is_empty());
    assert_eq!(c.state(2), JobState::Cancelled);
    assert_eq!(c.workflow_state(), WorkflowState::Cancelled);
}

#[test]
fn replaying_the_journal_rebuilds_the_same_state() {
    let mut a = job("a", &[]);
    a.retries = Some(2);
    let mut s = job("s", &[]);
    s.scatter = Some(Scatter {
        var: "i".into(),
        values: ScatterValues::Range(3),
    });
    let jobs = vec![a, s, job("g", &["s", "a"])];
    let mut c = core(jobs.clone());
    c.claim(1, "host", 42);
    let t0 = Instant::now();
    let (a, n) = launch_next(&mut c).expect("a");
    c.stage_jobs(a, add(Relation::Child, vec![child("kid", &[])]))
        .expect("stage");
    c.finish(a, n, result(CauseKind::ExitCode), 0, t0)
        .expect("finish");
    c.tick(t0 + Duration::from_secs(1));
    let (s0, sn) = launch_next(&mut c).expect("s0");
    c.finish(s0, sn, result(CauseKind::Succeeded), 0, t0)
        .expect("finish");
    let (x, xn) = launch_next(&mut c).expect("next");
    c.stage_jobs(x, add(Relation::Child, vec![child("k2", &[])]))
        .ok();
    c.finish(x, xn, result(CauseKind::Succeeded), 0, t0)
        .expect("finish");
    c.add_root_jobs(add(Relation::Root, vec![child("r", &["g"])]))
        .expect("add");
    let (running, _) = launch_next(&mut c).expect("one left running");
    let journal = c.drain_journal();

    let mut r = core(jobs);
    r.drain_events();
    for e in journal {
        r.replay(e, t0).expect("replay");
    }
    r.finish_replay();
    assert_eq!(r.epoch(), 1);
    assert_eq!(r.job_count(), c.job_count());
    assert_eq!(r.counts(), c.counts());
    for j in 0..c.job_count() as JobIdx {
        assert_eq!(r.job_id(j), c.job_id(j));
        assert_eq!(r.state(j), c.state(j), "{}", c.job_id(j));
        assert_eq!(r.attempts(j).len(), c.attempts(j).len(), "{}", c.job_id(j));
        assert_eq!(r.retries(j), c.retries(j));
    }
    assert_eq!(r.state(running), JobState::Running);
    assert!(r.drain_journal().is_empty(), "replay records nothing");
    assert!(r.drain_events().is_empty(), "replay announces nothing");
}

#[test]
fn a_large_scatter_is_cheap_to_build() {
    let mut s = job("s", &[]);
    s.scatter = Some(Scatter {
        var: "i".into(),
        values: ScatterValues::Range(100_000),
    });
    let c = core(vec![s, job("g", &["s"])]);
    assert_eq!(c.job_count(), 100_001);
    assert_eq!(c.counts()[JobState::Queued], 100_000);
    assert_eq!(c.templates[0].dependents, vec![1]);
    assert_eq!(c.lookup("s[99999]"), Some(99_999));
}

#[test]
fn retry_failed_requeues_failures_and_unblocks_their_dependents_but_not_cancellations() {
    let mut c = core(vec![
        job("a", &[]),
        job("b", &["a"]),
        job("x", &[]),
        job("y", &["x"]),
    ]);
    let t0 = Instant::now();
    let (a, n) = launch_next(&mut c).expect("a");
    c.finish(a, n, result(CauseKind::ExitCode), 0, t0)
        .expect("finish");
    let x = c.lookup("x").expect("x");
    c.cancel_job(x, "user").expect("cancel");
    assert_eq!(c.state(1), JobState::Blocked);
    assert_eq!(c.state(3), JobState::Blocked);
    assert!(c.is_finished());
    c.drain_journal();

    assert_eq!(c.retry_failed(), 1);
    assert_eq!(c.state(a), JobState::Queued);
    assert_eq!(c.retries(a).0, 0, "a fresh budget");
    assert_eq!(c.state(1), JobState::Waiting, "b waits for a again");
    assert_eq!(
        c.state(3),
        JobState::Blocked,
        "y stays blocked by the cancellation"
    );
    let journal = c.drain_journal();
    assert_eq!(journal.len(), 1);
    assert_eq!(run_all(&mut c), ["a", "b"]);
    assert_eq!(c.attempts(a).len(), 2);
    assert!(c.is_finished());
    assert_eq!(c.retry_failed(), 0, "nothing failed any more");
}

#[test]
fn an_attempts_end_is_announced_before_the_state_it_leads_to() {
    let mut c = core(vec![job("a", &[]), job("b", &["a"])]);
    let (a, n) = launch_next(&mut c).expect("a");
    c.drain_events();
    c.finish(a, n, result(CauseKind::Succeeded), 0, Instant::now())
        .expect("finish");
    let events = c.drain_events();
    assert!(
        matches!(events.first(), Some(CoreEvent::AttemptEnded { job, .. }) if *job == a),
        "{events:?}"
    );
    assert!(
        matches!(
            events.get(1),
            Some(CoreEvent::StateChanged { job, to: JobState::Succeeded, .. }) if *job == a
        ),
        "{events:?}"
    );
}

#[test]
fn changed_settings_apply_to_jobs_without_their_own_and_replay_the_same() {
    let mut own = job("own", &[]);
    own.retries = Some(0);
    own.memory = Some(1 << 20);
    let jobs = vec![job("a", &[]), own];
    let mut c = core(jobs.clone());
    c.claim(1, "host", 42);
    let t0 = Instant::now();
    // Version 0 of the settings: no retries, so `a` fails at once.
    let (a, n) = launch_next(&mut c).expect("a");
    c.finish(a, n, result(CauseKind::ExitCode), 0, t0)
        .expect("finish");
    assert_eq!(c.state(a), JobState::Failed);

    let new = JobDefaults {
        memory: 8 << 30,
        retries: 3,
        ..defaults()
    };
    c.change_settings((new, 9));
    assert_eq!(c.settings(), (new, 9));
    let own_j = c.lookup("own").expect("own");
    assert_eq!(c.request(a).memory, 8 << 30, "the new default applies");
    assert_eq!(c.request(own_j).memory, 1 << 20, "a job's own value stays");
    assert_eq!(c.retries(a).1, 3);
    assert_eq!(c.retries(own_j).1, 0);
    c.retry_failed();
    let journal = c.drain_journal();

    let mut r = core(jobs);
    for e in journal {
        r.replay(e, t0).expect("replay");
    }
    r.finish_replay();
    assert_eq!(r.settings(), (new, 9));
    assert_eq!(r.request(a).memory, 8 << 30);
    assert_eq!(r.retries(a), c.retries(a));
    assert_eq!(r.state(a), JobState::Queued);
}

#[test]
fn added_jobs_past_the_bounds_are_refused_with_the_bound() {
    let mut c = core(vec![job("a", &[])]);
    let (a, _) = launch_next(&mut c).expect("a");
    let mut huge = child("huge", &[]);
    huge.resources = Some(toil_proto::v1::Resources {
        memory_bytes: u64::MAX,
        ..Default::default()
    });
    let e = c
        .stage_jobs(a, add(Relation::Child, vec![huge]))
        .expect_err("refused");
    assert!(e.to_string().contains("at most"), "{e}");
    let mut forever = child("forever", &[]);
    forever.time_limit = Some(prost_types::Duration {
        seconds: i64::MAX,
        nanos: 0,
    });
    let e = c
        .stage_jobs(a, add(Relation::Child, vec![forever]))
        .expect_err("refused");
    assert!(e.to_string().contains("366 days"), "{e}");
    // Children in count: the bound holds across calls of one attempt.
    let batch = |from: usize, n: usize| {
        (from..from + n)
            .map(|i| child(&format!("k{i}"), &[]))
            .collect::<Vec<_>>()
    };
    c.stage_jobs(a, add(Relation::Child, batch(0, 9_000)))
        .expect("within the bound");
    let e = c
        .stage_jobs(a, add(Relation::Child, batch(9_000, 1_001)))
        .expect_err("past the bound");
    assert!(e.to_string().contains("may add at most 10000"), "{e}");
}
