//! Nothing left behind: SIGTERM deletes the workflow's Jobs (with their
//! pods), `toil-leader cleanup-jobs` removes what a killed leader left, and
//! `--restart` deletes the previous leader's Jobs before it resumes.

mod k8s_support;

use std::time::Duration;

use k8s_support::{Cluster, OWNER, SELECTOR, config, signal};
use nix::sys::signal::Signal;
use toil_tests::emulator::{NodeConfig, RequestFault};
use toil_tests::harness::bin;

const T: Duration = Duration::from_secs(60);

/// Three jobs whose first attempts run for minutes.
const LONG: &str = r#"
name: long
defaults:
  cores: 0.1
  memory: 256Mi
  disk: 100Mi
jobs:
  nap:
    scatter: {i: {range: 3}}
    command: |
      case "$TOIL_ATTEMPT_ID" in *.1) sleep 300;; esac
      echo "nap {{i}} done on attempt $TOIL_ATTEMPT_ID"
"#;

async fn all_running(c: &Cluster) {
    for i in 0..3 {
        c.running_pod(&format!("nap-{i}"), T).await;
    }
}

#[tokio::test]
async fn sigterm_deletes_the_workflows_jobs() {
    let c = Cluster::start(config(vec![NodeConfig::new("node-1")])).await;
    c.workflow("long", LONG);
    let mut leader = c.spawn("long", &[]);
    all_running(&c).await;
    assert_eq!(c.kube_jobs(SELECTOR).await.len(), 3);
    signal(&leader, Signal::SIGTERM);
    let status = tokio::time::timeout(T, leader.wait())
        .await
        .unwrap_or_else(|_| panic!("the leader did not stop"))
        .unwrap_or_else(|e| panic!("{e}"));
    let out = c.output_of("long");
    assert_eq!(status.code(), Some(130), "{out}");
    assert!(out.contains("terminated (SIGTERM)"), "{out}");
    // The Jobs are gone at once, and background propagation is deleting
    // their pods.
    assert!(c.kube_jobs(SELECTOR).await.is_empty(), "{out}");
    c.wait_jobs_gone(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn cleanup_jobs_and_restart_remove_what_a_killed_leader_left() {
    let c = Cluster::start(config(vec![NodeConfig::new("node-1")])).await;
    c.workflow("long", LONG);

    // A leader killed outright leaves its Jobs running.
    let mut leader = c.spawn("long", &[]);
    all_running(&c).await;
    signal(&leader, Signal::SIGKILL);
    let _ = leader.wait().await;
    let left = c.kube_jobs(SELECTOR).await;
    assert_eq!(left.len(), 3, "{left:?}");

    // cleanup-jobs, scoped to the owner and the workflow.
    let wf = c
        .pods(SELECTOR)
        .await
        .first()
        .and_then(|p| p.metadata.labels.as_ref()?.get("toil.io/workflow").cloned())
        .unwrap_or_else(|| panic!("no workflow label"));
    let other = tokio::process::Command::new(bin("toil-leader"))
        .args([
            "cleanup-jobs",
            "--owner",
            OWNER,
            "--workflow",
            "not-this-one",
        ])
        .env("KUBECONFIG", &c.kubeconfig)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&other.stdout);
    assert!(other.status.success(), "{text}");
    assert!(
        text.contains("no Jobs of owner tester, workflow not-this-one"),
        "{text}"
    );
    assert_eq!(
        c.kube_jobs(SELECTOR).await.len(),
        3,
        "another workflow's Jobs stay"
    );
    let out = tokio::process::Command::new(bin("toil-leader"))
        .args(["cleanup-jobs", "--owner", OWNER, "--workflow", &wf])
        .env("KUBECONFIG", &c.kubeconfig)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("deleted 3 Job(s) of owner tester"), "{text}");
    c.wait_jobs_gone(Duration::from_secs(10)).await;

    // Again, and this time --restart cleans up: the new leader deletes the
    // old epoch's Jobs, then runs the jobs to the end.
    std::fs::remove_dir_all(c.job_store("long")).unwrap_or_else(|e| panic!("{e}"));
    let mut leader = c.spawn("long", &[]);
    all_running(&c).await;
    signal(&leader, Signal::SIGKILL);
    let _ = leader.wait().await;
    let old = c.kube_jobs(SELECTOR).await;
    assert_eq!(old.len(), 3);
    let (code, out) = c.run("long", &["--restart"], T).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("deleted 3 Kubernetes Job(s) left by the previous leader"),
        "{out}"
    );
    for i in 0..3 {
        assert!(
            out.contains(&format!("nap {i} done on attempt nap[{i}].2")),
            "{out}"
        );
    }
    for name in old {
        assert!(
            !c.kube_jobs(SELECTOR).await.contains(&name),
            "{name} survived"
        );
    }
    c.wait_jobs_gone(Duration::from_secs(10)).await;
}

/// Shutdown has one bound that holds: with an API server that answers every
/// deletion of Jobs with 429 and `Retry-After: 60` (ten tries would take ten
/// minutes), SIGTERM still ends the leader once the batch system's 30 s are
/// spent, with a message naming what may remain and the command that
/// removes it; that command then does.
#[tokio::test]
async fn shutdown_is_bounded_when_the_api_server_will_not_delete() {
    let c = Cluster::start(config(vec![NodeConfig::new("node-1")])).await;
    c.workflow("long", LONG);
    let mut leader = c.spawn("long", &[]);
    all_running(&c).await;
    c.emu.fail_requests(RequestFault {
        retry_after_seconds: 60,
        ..RequestFault::too_many_requests(1000)
            .verb("deletecollection")
            .resource("jobs")
    });
    let t0 = std::time::Instant::now();
    signal(&leader, Signal::SIGTERM);
    let status = tokio::time::timeout(Duration::from_secs(120), leader.wait())
        .await
        .unwrap_or_else(|_| panic!("the leader did not stop within 120 s"))
        .unwrap_or_else(|e| panic!("{e}"));
    let took = t0.elapsed();
    let out = c.output_of("long");
    assert_eq!(status.code(), Some(130), "{out}");
    assert!(
        out.contains("the batch system did not stop within 30 s"),
        "{out}"
    );
    assert!(out.contains("toil-leader cleanup-jobs --owner"), "{out}");
    // The bound is 45 s for the whole shutdown; the margin is for a loaded
    // machine, not for the ten minutes the retries would take.
    assert!(took < Duration::from_secs(90), "{took:?}\n{out}");
    assert_eq!(c.kube_jobs(SELECTOR).await.len(), 3, "nothing was deleted");

    c.emu.clear_request_faults();
    let cleanup = tokio::process::Command::new(bin("toil-leader"))
        .args(["cleanup-jobs", "--owner", OWNER])
        .env("KUBECONFIG", &c.kubeconfig)
        .output()
        .await
        .unwrap();
    assert!(cleanup.status.success(), "{cleanup:?}");
    c.wait_jobs_gone(Duration::from_secs(30)).await;
}
