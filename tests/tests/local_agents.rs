//! Agents under the local batch system: resource limits are never
//! oversubscribed, SIGTERM kills the job and is reported (and retried
//! without spending the user's retries), and agents that lose their leader
//! kill their job and exit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use nix::sys::signal::Signal;
use toil_proto::v1::GetJobRequest;
use toil_tests::local::{Sandbox, client};
use toil_tests::procfs;
use toil_tests::wait::{wait_for, when};

const T: Duration = Duration::from_secs(120);

#[test]
fn the_local_batch_system_never_runs_more_than_max_cores_at_once() {
    let sb = Sandbox::new("limits");
    let spans = sb.path().join("spans");
    let started = sb.path().join("started");
    std::fs::create_dir_all(&started).expect("mkdir");
    sb.write(
        "wide.yaml",
        &format!(
            r#"
jobs:
  w:
    scatter: {{i: {{range: 8}}}}
    cores: 1
    memory: 32Mi
    command: |
      start=$(date +%s%N); touch {started}/{{{{i}}}}
      # Stay until a second job has started (at most 30 s), so that two
      # running side by side is certain however slow the machine.
      n=0; while [ $(ls {started} | wc -l) -lt 2 ] && [ $n -lt 600 ]; do sleep 0.05; n=$((n+1)); done
      sleep 0.1; end=$(date +%s%N)
      echo "$start $end" >> {spans}
"#,
            spans = spans.display(),
            started = started.display()
        ),
    );
    let r = sb.run(&["run", "wide.yaml", "--maxCores", "2"], T);
    r.expect_code(0);
    let text = std::fs::read_to_string(&spans).expect("spans");
    let spans: Vec<(u128, u128)> = text
        .lines()
        .map(|l| {
            let mut it = l.split_whitespace().map(|n| n.parse::<u128>().expect("ns"));
            (it.next().expect("start"), it.next().expect("end"))
        })
        .collect();
    assert_eq!(spans.len(), 8);
    // The most commands running at any one moment.
    let most = spans
        .iter()
        .map(|(s, _)| spans.iter().filter(|(a, b)| a <= s && s < b).count())
        .max()
        .unwrap_or(0);
    assert!(most <= 2, "{most} jobs ran at once with --maxCores 2");
    assert_eq!(most, 2, "two should run side by side");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_to_an_agent_kills_its_job_and_the_job_is_retried_without_spending_retries() {
    let sb = Sandbox::new("sigterm");
    let mark = sb.path().join("first-attempt-started");
    let done = sb.path().join("job-finished");
    sb.write(
        "term.yaml",
        &format!(
            r#"
defaults: {{cores: 0.1, memory: 32Mi}}
jobs:
  long:
    command: |
      if [ ! -e {mark} ]; then touch {mark}; sleep 60; fi
      echo finished > {done}
"#,
            mark = mark.display(),
            done = done.display()
        ),
    );
    let leader = sb.spawn(
        sb.leader(&["run", "term.yaml", "--retryCount", "0", "--clean", "never"]),
        "leader",
    );
    let info = tokio::task::block_in_place(|| sb.leader_info(T));
    tokio::task::block_in_place(|| {
        wait_for("the first attempt to start", T, || when(mark.exists(), ()))
    });
    let mut c = client(&info, &info.client_token).await;
    let job = c
        .get_job(GetJobRequest {
            job_id: "long".into(),
        })
        .await
        .expect("get job")
        .into_inner()
        .job
        .expect("job");
    let placement = &job.attempts[0].placement;
    let pid: i32 = placement
        .strip_prefix("local pid ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("placement {placement:?}"));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM).expect("SIGTERM");
    let r = tokio::task::spawn_blocking(move || leader.wait(T))
        .await
        .expect("join");
    r.expect_code(0);
    assert!(done.exists(), "the retry ran to the end");
    let status = sb.run(&["status", &sb.job_store().to_string_lossy(), "--jobs"], T);
    let line = status
        .stdout
        .lines()
        .find(|l| l.starts_with("long"))
        .unwrap_or_else(|| panic!("{}", status.stdout))
        .to_string();
    assert!(line.contains("succeeded"), "{line}");
    assert_eq!(
        line.split_whitespace().nth(2),
        Some("2"),
        "two attempts: {line}"
    );
    // The first attempt's log says why it ended; --retryCount 0 was not spent.
    let log = sb.run(
        &[
            "logs",
            &sb.job_store().to_string_lossy(),
            "long",
            "--attempt",
            "1",
        ],
        T,
    );
    assert!(log.stdout.contains("stopped by SIGTERM"), "{}", log.stdout);
    assert!(!procfs::alive(pid as u32), "the agent exited");
}

#[test]
fn agents_that_lose_their_leader_kill_their_job_and_exit() {
    let sb = Sandbox::new("orphans");
    let pids = sb.path().join("pids");
    sb.write(
        "orphan.yaml",
        &format!(
            r#"
defaults: {{cores: 0.1, memory: 32Mi}}
jobs:
  hang:
    scatter: {{i: [1, 2, 3]}}
    command: "echo $$ >> {pids}; exec sleep 600"
"#,
            pids = pids.display()
        ),
    );
    let leader = sb.spawn(
        sb.leader(&["run", "orphan.yaml", "--agentLease", "2s"]),
        "leader",
    );
    let jobs: Vec<u32> = wait_for("three jobs to start", T, || {
        let text = std::fs::read_to_string(&pids).unwrap_or_default();
        let v: Vec<u32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if v.len() == 3 { Ok(v) } else { Err(text) }
    });
    let agents = sb.live_agents();
    assert_eq!(agents.len(), 3, "one agent per job: {agents:?}");
    leader.signal(Signal::SIGKILL);
    assert_eq!(leader.wait(T).status.code(), None, "killed by a signal");
    // Once their lease has run out, every job process and every agent is
    // gone: no orphan keeps running after its leader.
    wait_for("orphaned jobs to be killed", T, || {
        let live: Vec<u32> = jobs.iter().copied().filter(|&p| procfs::alive(p)).collect();
        when(live.is_empty(), live)
    });
    sb.wait_agents_gone(T);
}
