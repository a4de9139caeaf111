//! Workflows on the Kubernetes batch system, against the emulator with the
//! real binaries: files passed between jobs through a `file:` job store on
//! a ReadWriteMany claim, the API cost per job, nothing left behind, and
//! pod reuse running a chain of jobs in one pod.

mod k8s_support;

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_support::{Cluster, SELECTOR, config, status_line};
use toil_tests::emulator::NodeConfig;

const FILES: &str = r#"
name: files
defaults:
  cores: 0.1
  memory: 256Mi
  disk: 100Mi
jobs:
  make:
    command: |
      seq 1 100 > numbers.txt
      echo "made on $TOIL_NODE_NAME in $TOIL_POD_NAME"
    outputs:
      numbers: numbers.txt
  sum:
    scatter: {part: [1, 0]}
    inputs: [{from: make.numbers}]
    command: awk 'NR % 2 == {{part}} { s += $1 } END { print s }' numbers.txt > sum_{{part}}.txt
    outputs:
      sums: "sum_{{part}}.txt"
  total:
    inputs: [{from: sum.sums, as: sums/}]
    command: |
      cat sums/* | awk '{ s += $1 } END { print s }' > total.txt
      echo "total $(cat total.txt)"
    outputs:
      total: total.txt
outputs:
  total: total.total
"#;

#[tokio::test]
async fn a_workflow_passes_files_through_a_claimed_job_store() {
    let c = Cluster::start(config(vec![
        NodeConfig::new("node-1"),
        NodeConfig::new("node-2"),
    ]))
    .await;
    c.workflow("files", FILES);
    let (code, out) = c.run("files", &[], Duration::from_secs(120)).await;
    eprintln!("{out}");
    assert_eq!(code, 0, "{out}");
    let total = std::fs::read_to_string(c.dir.path().join("files-output/total/total.txt"))
        .unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(total.trim(), "5050");
    // Job output reached the terminal live, with the pod's identity.
    assert!(out.contains("made on node-"), "{out}");
    assert!(out.contains("total 5050"), "{out}");
    assert!(
        out.contains("kubernetes: namespace toil on https://127.0.0.1:"),
        "{out}"
    );

    let status = c.status("files").await;
    assert!(status.contains("workflow files: succeeded"), "{status}");
    assert!(status.contains("jobs: 4 (4 succeeded)"), "{status}");
    assert!(
        status_line(&status, "total").contains("succeeded"),
        "{status}"
    );

    // Two creates per job (the Job, then its token Secret); nothing else
    // per job (the watch is shared). One more of each, and a Service, for
    // the relay whose probe found the leader reachable (then deleted).
    let counts = c.emu.request_counts();
    assert_eq!(counts.get("create", "jobs"), 4 + 1, "{counts:?}");
    assert_eq!(counts.get("create", "secrets"), 4 + 1, "{counts:?}");
    assert_eq!(counts.get("create", "services"), 1, "{counts:?}");
    assert!(
        out.contains("agents reach the leader directly at https://127.0.0.1:"),
        "{out}"
    );
    let per_job: u64 = counts
        .by_verb
        .iter()
        .filter(|(verb, _)| verb.as_str() != "watch")
        .flat_map(|(_, m)| m.values())
        .sum();
    // The relay's probe costs a fixed dozen calls, whatever the job count.
    assert!(
        per_job <= 4 * 4 + 12,
        "{per_job} requests besides the watch for 4 jobs: {counts:?}"
    );
    // The leader deleted its Jobs (with their pods) when it stopped.
    c.wait_all_gone(Duration::from_secs(20)).await;
}

const CHAIN: &str = r#"
name: chain
defaults:
  cores: 0.1
  memory: 256Mi
  disk: 100Mi
jobs:
  one:
    command: echo "ran in pod $TOIL_POD_NAME"
  two:
    after: [one]
    command: echo "ran in pod $TOIL_POD_NAME"
  three:
    after: [two]
    command: echo "ran in pod $TOIL_POD_NAME"
  four:
    after: [three]
    command: echo "ran in pod $TOIL_POD_NAME"
"#;

fn pods_named(out: &str) -> BTreeSet<String> {
    out.lines()
        .filter_map(|l| l.split("ran in pod ").nth(1))
        .map(|p| p.trim().to_string())
        .collect()
}

#[tokio::test]
async fn pod_reuse_runs_a_chain_of_jobs_in_one_pod() {
    let c = Cluster::start(config(vec![NodeConfig::new("node-1")])).await;
    c.workflow("chain", CHAIN);
    let (code, out) = c
        .run("chain", &["--reuseAgents"], Duration::from_secs(120))
        .await;
    assert_eq!(code, 0, "{out}");
    let pods = pods_named(&out);
    assert_eq!(pods.len(), 1, "one pod ran every job: {pods:?}\n{out}");
    // The agent's Job, and the relay's that probed the leader.
    assert_eq!(c.emu.request_counts().get("create", "jobs"), 1 + 1);
    c.wait_all_gone(Duration::from_secs(20)).await;

    // Without reuse: one pod per job.
    c.emu.reset_request_counts();
    std::fs::remove_dir_all(c.job_store("chain")).unwrap_or_else(|e| panic!("{e}"));
    let (code, out) = c.run("chain", &[], Duration::from_secs(120)).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(pods_named(&out).len(), 4, "{out}");
    assert_eq!(c.emu.request_counts().get("create", "jobs"), 4 + 1);
    c.wait_all_gone(Duration::from_secs(20)).await;
    let _ = SELECTOR;
}
