//! The emulator's Job controller and kubelet, driven through kube-rs over
//! HTTPS: exit codes, logs, deadlines, TTLs, propagation policies.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, ListParams, LogParams, PostParams, PropagationPolicy};
use toil_tests::emulator::testkit::{
    job, job_condition, phase, terminated, wait_for, wait_gone, wait_list,
};
use toil_tests::emulator::{Emulator, EmulatorConfig, Identity};

const IMAGE: &str = "toil-test:1";
const T: Duration = Duration::from_secs(15);

fn start() -> Emulator {
    let cfg = EmulatorConfig::default()
        .with_image(IMAGE, None)
        .with_namespace("toil");
    Emulator::start(cfg).unwrap_or_else(|e| panic!("emulator: {e}"))
}

async fn job_pods(pods: &Api<Pod>, job: &str, n: usize) -> Vec<Pod> {
    let lp = ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"));
    wait_list(pods, &lp, T, |p| p.len() == n)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn failing_job_reports_exit_code_logs_and_backoff_limit() {
    let emu = start();
    let client = emu
        .client(&Identity::Admin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let jobs: Api<Job> = Api::namespaced(client.clone(), "toil");
    let pods: Api<Pod> = Api::namespaced(client, "toil");
    let created = jobs
        .create(
            &PostParams::default(),
            &job("fails", IMAGE, &["sh", "-c", "echo hi; exit 3"]),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let uid = created.metadata.uid.clone().unwrap_or_default();
    // Defaulting: generated selector and controller labels.
    let sel = created
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .and_then(|s| s.match_labels)
        .unwrap_or_default();
    assert_eq!(sel.get("batch.kubernetes.io/controller-uid"), Some(&uid));

    let failed = wait_for(&jobs, "fails", T, |j| job_condition(j, "Failed").is_some())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        job_condition(&failed, "Failed"),
        Some(("True".into(), Some("BackoffLimitExceeded".into())))
    );
    assert_eq!(
        job_condition(&failed, "FailureTarget").map(|c| c.0),
        Some("True".into())
    );
    let st = failed.status.clone().unwrap_or_default();
    assert_eq!(st.failed, Some(1));
    assert_eq!(st.succeeded, None);
    assert!(st.start_time.is_some());
    assert!(
        st.completion_time.is_none(),
        "completionTime is only set on success"
    );

    let p = job_pods(&pods, "fails", 1).await.remove(0);
    let name = p.metadata.name.clone().unwrap_or_default();
    let suffix = name.strip_prefix("fails-").unwrap_or_default();
    assert_eq!(suffix.len(), 5, "pod name {name} is <job>-<5 random>");
    assert!(
        suffix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    );
    let labels = p.metadata.labels.clone().unwrap_or_default();
    for (k, v) in [
        ("batch.kubernetes.io/job-name", "fails"),
        ("job-name", "fails"),
        ("batch.kubernetes.io/controller-uid", uid.as_str()),
        ("controller-uid", uid.as_str()),
    ] {
        assert_eq!(labels.get(k).map(String::as_str), Some(v), "label {k}");
    }
    let owner = p.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owner.len(), 1);
    assert_eq!(
        (
            owner[0].kind.as_str(),
            owner[0].uid.as_str(),
            owner[0].controller
        ),
        ("Job", uid.as_str(), Some(true))
    );
    assert_eq!(phase(&p), "Failed");
    let t = terminated(&p).unwrap_or_else(|| panic!("not terminated: {p:?}"));
    assert_eq!((t.exit_code, t.reason.as_deref()), (3, Some("Error")));
    assert!(t.started_at.is_some() && t.finished_at.is_some());
    let logs = pods
        .logs(&name, &LogParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(logs, "hi\n");
    emu.shutdown();
}

#[tokio::test]
async fn successful_job_completes_and_ttl_removes_it_with_its_pods() {
    let emu = start();
    let client = emu
        .client(&Identity::Admin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let jobs: Api<Job> = Api::namespaced(client.clone(), "toil");
    let pods: Api<Pod> = Api::namespaced(client, "toil");
    let mut j = job(
        "works",
        IMAGE,
        &["sh", "-c", "echo \"$(GREETING) from $POD\""],
    );
    if let Some(spec) = j.spec.as_mut() {
        spec.ttl_seconds_after_finished = Some(1);
        if let Some(c) = spec.template.spec.as_mut().map(|s| &mut s.containers[0]) {
            c.env = serde_json::from_value(serde_json::json!([
                {"name": "GREETING", "value": "hello"},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            ]))
            .ok();
        }
    }
    jobs.create(&PostParams::default(), &j)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let done = wait_for(&jobs, "works", T, |j| {
        job_condition(j, "Complete").is_some()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let st = done.status.clone().unwrap_or_default();
    assert_eq!(st.succeeded, Some(1));
    assert!(st.completion_time.is_some());
    assert_eq!(
        job_condition(&done, "SuccessCriteriaMet").map(|c| c.0),
        Some("True".into())
    );
    let p = job_pods(&pods, "works", 1).await.remove(0);
    let name = p.metadata.name.clone().unwrap_or_default();
    assert_eq!(phase(&p), "Succeeded");
    assert_eq!(
        terminated(&p).map(|t| (t.exit_code, t.reason)),
        Some((0, Some("Completed".into())))
    );
    // $(GREETING) is expanded by Kubernetes; $POD by the shell from the env.
    let logs = pods
        .logs(&name, &LogParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(logs, format!("hello from {name}\n"));
    wait_gone(&jobs, "works", T)
        .await
        .unwrap_or_else(|e| panic!("ttl: {e}"));
    wait_gone(&pods, &name, T)
        .await
        .unwrap_or_else(|e| panic!("ttl pods: {e}"));
    emu.shutdown();
}

#[tokio::test]
async fn active_deadline_kills_the_pod_and_fails_the_job() {
    let emu = start();
    let client = emu
        .client(&Identity::Admin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let jobs: Api<Job> = Api::namespaced(client.clone(), "toil");
    let pods: Api<Pod> = Api::namespaced(client, "toil");
    let mut j = job("slow", IMAGE, &["sleep", "60"]);
    if let Some(spec) = j.spec.as_mut() {
        spec.active_deadline_seconds = Some(1);
    }
    jobs.create(&PostParams::default(), &j)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let p = job_pods(&pods, "slow", 1).await.remove(0);
    let name = p.metadata.name.clone().unwrap_or_default();
    let failed = wait_for(&jobs, "slow", T, |j| job_condition(j, "Failed").is_some())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        job_condition(&failed, "Failed"),
        Some(("True".into(), Some("DeadlineExceeded".into())))
    );
    // The pod was deleted gracefully (SIGTERM ends `sleep`).
    wait_gone(&pods, &name, T)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(emu.running_containers(), 0);
    emu.shutdown();
}

#[tokio::test]
async fn deleting_a_job_orphans_its_pods_unless_propagation_is_set() {
    let emu = start();
    let client = emu
        .client(&Identity::Admin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let jobs: Api<Job> = Api::namespaced(client.clone(), "toil");
    let pods: Api<Pod> = Api::namespaced(client, "toil");
    for name in ["orphaned", "background"] {
        jobs.create(&PostParams::default(), &job(name, IMAGE, &["sleep", "60"]))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let orphan = job_pods(&pods, "orphaned", 1).await.remove(0);
    let bg = job_pods(&pods, "background", 1).await.remove(0);
    for p in [&orphan, &bg] {
        wait_for(
            &pods,
            p.metadata.name.as_deref().unwrap_or_default(),
            T,
            |p| phase(p) == "Running",
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }
    // Plain API delete: Jobs default to orphaning (Toil's #3521).
    jobs.delete("orphaned", &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_gone(&jobs, "orphaned", T)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let orphan_name = orphan.metadata.name.clone().unwrap_or_default();
    let lingering = wait_for(&pods, &orphan_name, T, |p| {
        p.metadata.owner_references.is_none()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        phase(&lingering),
        "Running",
        "the orphaned pod keeps running"
    );

    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    jobs.delete("background", &dp)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_gone(&pods, bg.metadata.name.as_deref().unwrap_or_default(), T)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Cleaning up the orphan by label selector, as `cleanup-jobs` would.
    let lp = ListParams::default().labels("job-name=orphaned");
    pods.delete_collection(&DeleteParams::default(), &lp)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_gone(&pods, &orphan_name, T)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    emu.shutdown();
}
