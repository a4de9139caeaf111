//! The leader as a pod, from the shipped `deploy/leader-job.yaml` under the
//! shipped `deploy/rbac.yaml`: it finds the API through its service account,
//! advertises its pod IP to the agents, keeps the job store on the claim
//! every agent pod mounts, and completes a workflow.
//!
//! The test adapts the manifest only where the emulator differs from a
//! cluster: the image name maps to target/debug, and the leader's port is
//! picked at random (emulated pods share this machine's network).

mod k8s_support;

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret};
use k8s_support::{Cluster, NS, config};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use toil_tests::emulator::{NodeConfig, PodNetworkMode};
use toil_tests::harness::{bin_dir, repo_root};

const WORKFLOW: &str = r#"
name: in-cluster
defaults:
  cores: 0.1
  memory: 256Mi
  disk: 100Mi
jobs:
  greet:
    command: |
      test -s "$AWS_SHARED_CREDENTIALS_FILE" && echo "the AWS secret is mounted"
      echo "hello from $TOIL_POD_NAME" > greeting.txt
    outputs:
      greeting: greeting.txt
  shout:
    inputs: [{from: greet.greeting}]
    command: tr a-z A-Z < greeting.txt > loud.txt
    outputs:
      loud: loud.txt
outputs:
  loud: shout.loud
"#;

#[tokio::test]
async fn the_leader_runs_as_a_pod_under_the_shipped_role() {
    leader_pod_completes_a_workflow(PodNetworkMode::Host).await;
}

/// The same in a pod network of its own: the leader finds the API at the
/// in-cluster address and agents dial its own pod IP.
#[tokio::test]
async fn the_leader_runs_as_a_pod_in_an_isolated_pod_network() {
    leader_pod_completes_a_workflow(PodNetworkMode::Isolated).await;
}

async fn leader_pod_completes_a_workflow(network: PodNetworkMode) {
    let manifest = std::fs::read_to_string(repo_root().join("deploy/leader-job.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let image = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("image: "))
        .unwrap_or_else(|| panic!("no image in deploy/leader-job.yaml"))
        .to_string();
    let c = Cluster::start(
        config(vec![NodeConfig::new("node-1"), NodeConfig::new("node-2")])
            .with_image(&image, Some(bin_dir()))
            .with_pod_network(network),
    )
    .await;
    let admin = c.admin().await;

    // What the user creates first (steps 2 and 3 of the manifest's header).
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "toil-workflow"},
        "data": {"workflow.yaml": WORKFLOW}
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    Api::<ConfigMap>::namespaced(admin.clone(), NS)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "aws-credentials"},
        "stringData": {"credentials": "[default]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = example\n"}
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    Api::<Secret>::namespaced(admin.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // `kubectl apply -f deploy/leader-job.yaml`, with a random port.
    let adapted = manifest.replace("0.0.0.0:7070", "0.0.0.0:0");
    let mut job_name = String::new();
    for v in toil_tests::emulator::yaml::documents(&adapted).unwrap_or_else(|e| panic!("{e}")) {
        match v["kind"].as_str() {
            Some("PersistentVolumeClaim") => {
                let pvc: PersistentVolumeClaim =
                    serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"));
                Api::<PersistentVolumeClaim>::namespaced(admin.clone(), NS)
                    .create(&PostParams::default(), &pvc)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            Some("Job") => {
                let job: Job = serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"));
                job_name = job.metadata.name.clone().unwrap_or_default();
                Api::<Job>::namespaced(admin.clone(), NS)
                    .create(&PostParams::default(), &job)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            None => {}
            Some(other) => panic!("unexpected kind {other} in deploy/leader-job.yaml"),
        }
    }
    assert!(!job_name.is_empty(), "no Job in deploy/leader-job.yaml");

    // The leader Job completes.
    let jobs: Api<Job> = Api::namespaced(admin.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NS);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let leader_log = |pods: Api<Pod>, job: String| async move {
        let lp = ListParams::default().labels(&format!("job-name={job}"));
        let mut text = String::new();
        // Diagnostics: a failed call is shown in the text, not hidden.
        let items = match pods.list(&lp).await {
            Ok(l) => l.items,
            Err(e) => return format!("(listing the leader's pods failed: {e})"),
        };
        for p in items {
            let name = p.metadata.name.unwrap_or_default();
            match pods.logs(&name, &Default::default()).await {
                Ok(log) => text.push_str(&log),
                Err(e) => text.push_str(&format!("(logs of {name} failed: {e})\n")),
            }
        }
        text
    };
    loop {
        let j = jobs.get(&job_name).await.unwrap_or_else(|e| panic!("{e}"));
        let st = j.status.unwrap_or_default();
        if st.succeeded == Some(1) {
            break;
        }
        if st.failed.unwrap_or(0) > 0 || tokio::time::Instant::now() > deadline {
            panic!(
                "the leader Job did not succeed: {st:?}\n{}",
                leader_log(pods.clone(), job_name.clone()).await
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = leader_log(pods.clone(), job_name.clone()).await;
    assert!(log.contains("workflow in-cluster succeeded"), "{log}");
    assert!(log.contains("[greet] the AWS secret is mounted"), "{log}");
    // Agents dialled the pod IP (127.0.0.1 on the host network, 127.10.x.y
    // in an isolated one) on a real port.
    let pod_ip = match network {
        PodNetworkMode::Host => "127.0.0.1:",
        PodNetworkMode::Isolated => "127.10.",
    };
    assert!(log.contains(&format!("leader https://{pod_ip}")), "{log}");
    assert!(log.contains("(in-cluster service account"), "{log}");

    // The output is on the claim, written by an agent in another pod.
    let claim_dir = c
        .emu
        .state_dir()
        .join("pvcs")
        .join(NS)
        .join("toil-jobstore");
    let loud = std::fs::read_to_string(claim_dir.join("demo-user-workflow-output/loud/loud.txt"))
        .unwrap_or_else(|e| panic!("{e}\n{log}"));
    assert!(loud.starts_with("HELLO FROM TOIL-DEMO-USER-"), "{loud}");

    // The leader deleted its agents' Jobs when it finished.
    let sel = "app.kubernetes.io/managed-by=toil-leader,toil.io/owner=demo-user";
    let left = jobs
        .list(&ListParams::default().labels(sel))
        .await
        .map(|l| l.items.len())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(left, 0);
}
