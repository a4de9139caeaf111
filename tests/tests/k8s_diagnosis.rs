//! Every diagnosis the Kubernetes batch system makes, each produced by the
//! matching emulator fault and reported with its typed cause and the
//! cluster's own words, in `toil-leader status` and in the leader's summary.

mod k8s_support;

use std::time::Duration;

use k8s_support::{Cluster, IMAGE, NS, SELECTOR, config, status_line};
use toil_tests::emulator::{NodeConfig, StallRule};

const LIMIT: Duration = Duration::from_secs(120);

/// One run, four fates: an out-of-memory kill, a pod stuck in
/// ContainerCreating, a Job past its deadline, and a job that works.
const FATES: &str = r#"
name: fates
defaults:
  retries: 0
  cores: 0.1
  memory: 256Mi
  disk: 100Mi
jobs:
  fine:
    command: echo fine
  oom:
    memory: 64Mi
    command: head -c 400000000 /dev/zero | tail > /dev/null
  stuck:
    command: echo never runs
  slow:
    time_limit: 1s
    command: echo never runs either
"#;

#[tokio::test]
async fn oom_start_timeout_and_deadline_are_diagnosed() {
    let c = Cluster::start(config(vec![NodeConfig::new("node-1")])).await;
    for job in ["stuck", "slow"] {
        c.emu.stall_pods(StallRule {
            namespace: Some(NS.into()),
            name_prefix: None,
            label_selector: Some(format!("toil.io/job={job}")),
        });
    }
    c.workflow("fates", FATES);
    let (code, out) = c
        .run(
            "fates",
            &[
                "--retryCount",
                "0",
                "--kubernetesPodTimeout",
                "6s",
                "--kubernetesDeadlineSlack",
                "1s",
            ],
            LIMIT,
        )
        .await;
    assert_eq!(code, 1, "{out}");
    let status = c.status("fates").await;
    assert!(
        status_line(&status, "fine").contains("succeeded"),
        "{status}"
    );

    let oom = status_line(&status, "oom");
    assert!(oom.contains("failed"), "{status}");
    assert!(oom.contains("out of memory (OOM_KILLED)"), "{status}");
    assert!(oom.contains("64 MiB"), "the memory asked: {status}");

    let stuck = status_line(&status, "stuck");
    assert!(stuck.contains("pod never started"), "{status}");
    assert!(
        stuck.contains("did not start its container within --kubernetesPodTimeout 6s"),
        "{status}"
    );
    assert!(
        stuck.contains("FailedMount: Unable to attach or mount volumes"),
        "the kubelet's own message: {status}"
    );

    let slow = status_line(&status, "slow");
    assert!(slow.contains("time limit exceeded"), "{status}");
    assert!(
        slow.contains("Job was active longer than specified deadline"),
        "the Job controller's message: {status}"
    );
    assert!(slow.contains("activeDeadlineSeconds (2 s"), "{status}");

    // The summary on the terminal says the same.
    assert!(
        out.contains("job oom failed: out of memory (OOM_KILLED)"),
        "{out}"
    );
    assert!(out.contains("job stuck failed: pod never started"), "{out}");
    assert!(
        out.contains("job slow failed: time limit exceeded"),
        "{out}"
    );
    // Stuck pods do not stay behind.
    c.wait_all_gone(Duration::from_secs(20)).await;
}

const SPOT: &str = r#"
name: spot
defaults:
  retries: 0
  cores: 0.1
  memory: 256Mi
  disk: 100Mi
jobs:
  cheap:
    preemptible: true
    command: echo "cheap ran on $TOIL_NODE_NAME"
  regular:
    command: echo never runs
"#;

#[tokio::test]
async fn a_job_no_node_will_take_fails_unschedulable_with_the_schedulers_message() {
    // Only spot capacity: preemptible jobs go there, the others may not.
    let c = Cluster::start(config(vec![
        "spot-1:cpu=4,memory=8Gi,preemptible"
            .parse()
            .unwrap_or_else(|e: String| panic!("{e}")),
    ]))
    .await;
    c.workflow("spot", SPOT);
    let (code, out) = c
        .run(
            "spot",
            &["--retryCount", "0", "--kubernetesPendingTimeout", "2s"],
            LIMIT,
        )
        .await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cheap ran on spot-1"), "{out}");
    let status = c.status("spot").await;
    assert!(
        status_line(&status, "cheap").contains("succeeded"),
        "{status}"
    );
    let regular = status_line(&status, "regular");
    assert!(regular.contains("unschedulable: 0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector"), "{status}");
    assert!(
        regular.contains("--kubernetesPendingTimeout 2s"),
        "{status}"
    );
    assert!(
        out.contains("job regular failed: unschedulable: 0/1 nodes are available"),
        "{out}"
    );
    c.wait_all_gone(Duration::from_secs(20)).await;
}

const ONE: &str = r#"
name: one
jobs:
  hello:
    cores: 0.1
    memory: 256Mi
    command: echo hello
"#;

#[tokio::test]
async fn an_image_that_cannot_be_pulled_fails_fast() {
    let c = Cluster::start(config(vec![NodeConfig::new("node-1")])).await;
    c.workflow("one", ONE);
    let mut cmd = c.leader("one", &["--retryCount", "3"]);
    cmd.env("TOIL_APPLIANCE_SELF", "toil-appliance:missing")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = tokio::time::timeout(LIMIT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("too slow"))
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    let status = c.status("one").await;
    let line = status_line(&status, "hello");
    assert!(line.contains("image pull failed"), "{status}");
    assert!(
        line.contains("Back-off pulling image \"toil-appliance:missing\""),
        "the kubelet's message: {status}"
    );
    assert!(line.contains("check TOIL_APPLIANCE_SELF"), "{status}");
    // IMAGE_PULL is not retried: one attempt despite --retryCount 3.
    assert!(line.split_whitespace().nth(2) == Some("1"), "{status}");
    c.wait_all_gone(Duration::from_secs(20)).await;
    let _ = IMAGE;
}

const HUGE: &str = r#"
name: huge
jobs:
  small:
    cores: 0.1
    memory: 256Mi
    command: echo small
  huge:
    cores: 2
    memory: 64Gi
    command: echo never
"#;

#[tokio::test]
async fn a_job_larger_than_every_node_is_refused_before_anything_runs() {
    let c = Cluster::start(config(vec![
        NodeConfig::new("node-1"),
        "node-2:cpu=8,memory=16Gi"
            .parse()
            .unwrap_or_else(|e: String| panic!("{e}")),
    ]))
    .await;
    c.workflow("huge", HUGE);
    let (code, out) = c.run("huge", &[], LIMIT).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("huge"), "{out}");
    assert!(
        out.contains("node node-2 (cpu 8, memory 16 GiB"),
        "names the largest node: {out}"
    );
    assert_eq!(c.emu.request_counts().get("create", "jobs"), 0);
    assert!(c.kube_jobs(SELECTOR).await.is_empty());
    assert!(!c.job_store("huge").exists(), "nothing was created");
}
