//! Pods taken away by the cluster: kubelet eviction, scheduler preemption
//! and node loss are diagnosed as EVICTED, PREEMPTED and NODE_LOST, and an
//! agent that dies without a word as AGENT_LOST with the end of its log;
//! all are retried from the infrastructure budget: with `--retryCount 0`
//! the jobs still succeed, and their user retries stay unspent.

mod k8s_support;

use std::time::Duration;

use k8s_support::{Cluster, NS, config};
use toil_proto::v1::{CauseKind, JobState};
use toil_tests::emulator::NodeConfig;

fn workflow(release: &std::path::Path) -> String {
    let sleeper = |name: &str| {
        format!(
            r#"
  {name}:
    command: |
      case "$TOIL_ATTEMPT_ID" in *.1) sleep 120;; esac
      echo "{name} finished attempt $TOIL_ATTEMPT_ID"
"#
        )
    };
    format!(
        r#"
name: disrupt
defaults:
  retries: 0
  cores: 1
  memory: 256Mi
  disk: 100Mi
jobs:{}{}{}{}
  gate:
    cores: 0.1
    after: [evicted, preempted, lost, crashed]
    command: |
      while [ ! -e {} ]; do sleep 0.1; done
      echo released
"#,
        sleeper("evicted"),
        sleeper("preempted"),
        sleeper("lost"),
        sleeper("crashed"),
        release.display()
    )
}

#[tokio::test]
async fn evicted_preempted_lost_and_crashed_pods_are_retried_without_spending_user_retries() {
    // One core per node and per job: each first attempt on its own node.
    let nodes = (1..=5)
        .map(|i| {
            format!("node-{i}:cpu=1,memory=4Gi")
                .parse::<NodeConfig>()
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    let c = Cluster::start(config(nodes)).await;
    let release = c.dir.path().join("release");
    c.workflow("disrupt", &workflow(&release));
    let mut leader = c.spawn("disrupt", &["--retryCount", "0"]);
    let t = Duration::from_secs(60);

    let (evicted, _) = c.running_pod("evicted", t).await;
    let (preempted, _) = c.running_pod("preempted", t).await;
    let (_, lost_node) = c.running_pod("lost", t).await;
    let (crashed, _) = c.running_pod("crashed", t).await;
    c.emu
        .evict_pod(NS, &evicted, "memory")
        .unwrap_or_else(|e| panic!("{e}"));
    c.emu
        .preempt_pod(NS, &preempted)
        .unwrap_or_else(|e| panic!("{e}"));
    c.emu
        .lose_node(&lost_node)
        .unwrap_or_else(|e| panic!("{e}"));
    // The agent's container dies on its own (exit 1), with its job.
    c.emu
        .kill_container(NS, &crashed, None, 1)
        .unwrap_or_else(|e| panic!("{e}"));

    // Every job but the gate succeeds on its second attempt; the gate then
    // holds the workflow open while its record is read.
    c.running_pod("gate", t).await;
    let jobs = c.jobs_of("disrupt").await;
    for (name, kind, words) in [
        (
            "evicted",
            CauseKind::Evicted,
            "The node was low on resource: memory.",
        ),
        (
            "preempted",
            CauseKind::Preempted,
            "preempting to accommodate a higher priority pod",
        ),
        ("lost", CauseKind::NodeLost, "is unresponsive"),
        (
            "crashed",
            CauseKind::AgentLost,
            "failed (exit code 1, Error)",
        ),
    ] {
        let job = jobs
            .iter()
            .find(|j| j.job_id == name)
            .unwrap_or_else(|| panic!("no job {name}: {jobs:?}"));
        assert_eq!(job.state, JobState::Succeeded as i32, "{job:?}");
        assert_eq!(job.attempts.len(), 2, "{job:?}");
        let first = job.attempts[0].cause.clone().unwrap_or_default();
        assert_eq!(first.kind, kind as i32, "{name}: {first:?}");
        assert!(first.message.contains(words), "{name}: {first:?}");
        assert_eq!(job.retries_used, 0, "{name} spent no user retry");
        let second = job.attempts[1].cause.clone().unwrap_or_default();
        assert_eq!(
            second.kind,
            CauseKind::Succeeded as i32,
            "{name}: {second:?}"
        );
    }
    std::fs::write(&release, b"").unwrap_or_else(|e| panic!("{e}"));
    let status = tokio::time::timeout(Duration::from_secs(60), leader.wait())
        .await
        .unwrap_or_else(|_| panic!("the leader did not finish"))
        .unwrap_or_else(|e| panic!("{e}"));
    let out = c.output_of("disrupt");
    assert_eq!(status.code(), Some(0), "{out}");
    // The diagnoses were shown on the terminal as they happened.
    for words in [
        "evicted: The node was low on resource",
        "preempted: ",
        "node lost: ",
    ] {
        assert!(out.contains(words), "{words:?} in:\n{out}");
    }
    c.wait_all_gone(Duration::from_secs(20)).await;
}
