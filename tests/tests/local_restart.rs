//! Crashes and concurrency: kill -9 of the leader then `--restart`, a second
//! leader on a live job store, and a leader fenced by a newer one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use nix::sys::signal::Signal;
use toil_tests::local::{Sandbox, chain_workflow, count_lines, log_lines};
use toil_tests::restart::{self, Store};
use toil_tests::wait::{wait_for, when};

const T: Duration = Duration::from_secs(120);

#[test]
fn kill_9_mid_job_then_restart_reruns_only_the_unfinished_job() {
    let sb = Sandbox::new("kill9a");
    restart::kill_9_mid_job_then_restart_reruns_only_the_unfinished_job(&sb, &Store::File);
}

#[test]
fn kill_9_then_a_job_finishing_while_no_leader_runs_is_recovered_not_rerun() {
    let sb = Sandbox::new("kill9b");
    restart::kill_9_then_a_job_finishing_while_no_leader_runs_is_recovered(&sb, &Store::File);
}

/// Waits until job b of chain.yaml has started (its `b-start` line).
fn wait_b_started(runlog: &std::path::Path) {
    wait_for("job b to start", T, || {
        let log = log_lines(runlog);
        when(count_lines(&log, "b-start") == 1, log)
    });
}

#[test]
fn kill_9_at_many_points_never_loses_or_repeats_finished_work() {
    // A fan-out of quick jobs; the leader is killed at several moments and
    // restarted until the workflow finishes. Every instance must complete
    // exactly once in total, and the gathered output must be whole.
    let sb = Sandbox::new("kill9many");
    let runlog = sb.path().join("runlog");
    sb.write(
        "fan.yaml",
        &format!(
            r#"
defaults: {{cores: 0.2, memory: 32Mi}}
jobs:
  part:
    scatter: {{i: {{range: 30}}}}
    command: "sleep 0.4; echo {{{{i}}}} > p{{{{i}}}}.txt; echo part{{{{i}}}} >> {log}"
    outputs: {{p: "p{{{{i}}}}.txt"}}
  sum:
    inputs: [{{from: part.p}}]
    command: "cat p*.txt | sort -n | tr '\n' ' ' > sum.txt"
    outputs: {{s: sum.txt}}
outputs:
  sum: sum.s
"#,
            log = runlog.display()
        ),
    );
    // Killed once 3, 10 and 18 of the 30 parts have completed: a moment
    // defined by progress, not by how fast this machine happens to be.
    for (i, parts_done) in [3usize, 10, 18].into_iter().enumerate() {
        let mut args = vec![
            "run",
            "fan.yaml",
            "--clean",
            "never",
            "--maxCores",
            "1",
            "--agentLease",
            "5s",
        ];
        if i > 0 {
            args.push("--restart");
        }
        let leader = sb.spawn(sb.leader(&args), "leader");
        wait_for(&format!("{parts_done} parts to complete"), T, || {
            let done = log_lines(&runlog).len();
            when(done >= parts_done, done)
        });
        leader.signal(Signal::SIGKILL);
        let r = leader.wait(T);
        assert_eq!(
            r.status.code(),
            None,
            "the leader was killed mid-run\n{}",
            r.stderr
        );
        // An orphaned agent may still finish its part and store the result;
        // the next leader must find it stored, not start the part again.
        sb.wait_agents_gone(T);
    }
    let r = sb.run(&["run", "fan.yaml", "--restart"], T);
    r.expect_code(0);
    let log = log_lines(&runlog);
    for i in 0..30 {
        // An agent that outlives its leader still records the part it ran,
        // and the next leader recovers it: every part completes exactly once.
        let n = count_lines(&log, &format!("part{i}"));
        assert_eq!(n, 1, "part{i} completed {n} times: {log:?}");
    }
    let sum = std::fs::read_to_string(sb.output_dir().join("sum/sum.txt")).expect("export");
    let expected: Vec<String> = (0..30).map(|i| i.to_string()).collect();
    assert_eq!(sum.split_whitespace().collect::<Vec<_>>(), expected);
}

#[test]
fn a_second_leader_on_a_live_job_store_is_refused() {
    let sb = Sandbox::new("second");
    let (runlog, gate) = chain_workflow(&sb);
    let first = sb.spawn(sb.leader(&["run", "chain.yaml"]), "first");
    wait_b_started(&runlog);
    let again = sb.run(&["run", "chain.yaml"], T);
    again.expect_code(3);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    assert!(again.stderr.contains("--restart"), "{}", again.stderr);
    let restart = sb.run(&["run", "chain.yaml", "--restart"], T);
    restart.expect_code(3);
    let msg = &restart.stderr;
    assert!(msg.contains("in use by a running leader"), "{msg}");
    assert!(msg.contains(&format!("pid {}", first.pid())), "{msg}");
    let clean = sb.run(&["clean", &sb.job_store().to_string_lossy()], T);
    assert_ne!(clean.code(), 0, "clean must refuse while a leader runs");
    assert!(
        clean.stderr.contains("in use by a running leader"),
        "{}",
        clean.stderr
    );
    std::fs::write(&gate, "").expect("gate");
    first.wait(T).expect_code(0);
    assert_eq!(count_lines(&log_lines(&runlog), "b"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_fenced_by_a_newer_one_stops_without_writing() {
    use bytes::Bytes;
    use prost::Message;
    use toil_jobstore::state::Journal;
    use toil_jobstore::{JobStore, Locator};
    use toil_proto::v1::{JournalEntry, JournalRecord, LeaderClaim, journal_entry::Kind};

    let sb = Sandbox::new("fenced");
    let (runlog, gate) = chain_workflow(&sb);
    let leader = sb.spawn(sb.leader(&["run", "chain.yaml", "--clean", "never"]), "old");
    let runlog2 = runlog.clone();
    tokio::task::spawn_blocking(move || wait_b_started(&runlog2))
        .await
        .expect("wait");
    // Another leader claims the store (as one would after this leader's
    // lease had lapsed, say behind a network partition).
    let store = JobStore::open(&Locator::File(sb.job_store()))
        .await
        .expect("open");
    let claim = JournalRecord {
        entries: vec![JournalEntry {
            time: None,
            kind: Some(Kind::Claim(LeaderClaim {
                epoch: 99,
                host: "elsewhere".into(),
                pid: 4242,
            })),
        }],
    };
    loop {
        let (mut journal, _) = Journal::load(&store).await.expect("load");
        match journal.append(Bytes::from(claim.encode_to_vec())).await {
            Ok(_) => break,
            Err(e) if e.is_precondition_failed() => continue,
            Err(e) => panic!("{e}"),
        }
    }
    let records_before = store.list("state/journal/").await.expect("list").len();
    // When b ends, the old leader's next journal write hits the claim.
    std::fs::write(&gate, "").expect("gate");
    let r = tokio::task::spawn_blocking(move || leader.wait(T))
        .await
        .expect("wait");
    r.expect_code(3);
    assert!(
        r.stderr
            .contains("another leader (epoch 99, pid 4242 on elsewhere) has taken over"),
        "{}",
        r.stderr
    );
    let records_after = store.list("state/journal/").await.expect("list").len();
    assert_eq!(
        records_after, records_before,
        "a fenced leader writes no more state"
    );
    assert_eq!(
        count_lines(&log_lines(&runlog), "c"),
        0,
        "c must not be launched by a fenced leader"
    );
}

#[test]
fn after_fixing_a_failure_restart_runs_the_failed_job_again_and_finishes() {
    let sb = Sandbox::new("fixrestart");
    let fix = sb.path().join("fixed");
    sb.write(
        "fix.yaml",
        &format!(
            r#"
defaults: {{cores: 0.1, memory: 32Mi}}
jobs:
  a:
    command: "test -e {fix} || {{ echo not fixed yet; exit 5; }}; echo fixed"
  b:
    after: [a]
    command: "echo b runs"
"#,
            fix = fix.display()
        ),
    );
    let r = sb.run(&["run", "fix.yaml", "--retryCount", "0"], T);
    r.expect_code(1);
    // Offline status replays the journal with the run's own settings: the
    // failure stays a failure.
    let status = sb.run(&["status", &sb.job_store().to_string_lossy(), "--jobs"], T);
    assert!(
        status.stdout.contains("workflow fix: failed"),
        "{}",
        status.stdout
    );
    let a = status
        .stdout
        .lines()
        .find(|l| l.starts_with("a "))
        .unwrap_or_else(|| panic!("no line for job a in\n{}", status.stdout))
        .to_string();
    assert!(a.contains("failed") && a.contains("exit code 5"), "{a}");
    std::fs::write(&fix, "").expect("fix");
    let r = sb.run(&["run", "fix.yaml", "--restart"], T);
    r.expect_code(0);
    assert!(
        r.stderr.contains("retrying 1 failed job(s)"),
        "{}",
        r.stderr
    );
    assert!(
        r.stdout.contains("[a] fixed") && r.stdout.contains("[b] b runs"),
        "{}",
        r.stdout
    );
}
