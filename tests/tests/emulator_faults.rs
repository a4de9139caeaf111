//! Fault injection at the pod and node level: container kills, preemption,
//! node loss, the Eviction API, pods stuck in ContainerCreating, and
//! preemptible placement with taints and tolerations.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use kube::api::{EvictParams, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use toil_tests::emulator::testkit::{
    phase, pod, pod_condition, terminated, wait_for, wait_gone, waiting_reason,
};
use toil_tests::emulator::{
    Emulator, EmulatorConfig, Identity, NodeConfig, StallRule, TaintConfig,
};

const IMAGE: &str = "toil-test:1";
const T: Duration = Duration::from_secs(20);

fn start(nodes: Vec<NodeConfig>) -> Emulator {
    let mut cfg = EmulatorConfig::default()
        .with_nodes(nodes)
        .with_image(IMAGE, None);
    cfg.timing.mount_retry = Duration::from_millis(200);
    cfg.preemptible_taints = vec![TaintConfig {
        key: "cloud.google.com/gke-spot".into(),
        value: "true".into(),
        effect: "NoSchedule".into(),
    }];
    Emulator::start(cfg).unwrap_or_else(|e| panic!("emulator: {e}"))
}

fn node_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn kill_preempt_and_evict_via_api() {
    let emu = start(vec![NodeConfig::new("node-1")]);
    let client = emu
        .client(&Identity::Admin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pods: Api<Pod> = Api::namespaced(client, "default");
    for n in ["killed", "preempted", "evicted"] {
        pods.create(&PostParams::default(), &pod(n, IMAGE, &["sleep", "60"]))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    for n in ["killed", "preempted", "evicted"] {
        wait_for(&pods, n, T, |p| phase(p) == "Running")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    emu.kill_container("default", "killed", None, 42)
        .unwrap_or_else(|e| panic!("{e}"));
    let p = wait_for(&pods, "killed", T, |p| phase(p) == "Failed")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        terminated(&p).map(|t| (t.exit_code, t.reason)),
        Some((42, Some("Error".into())))
    );
    assert!(emu.kill_container("default", "nope", None, 1).is_err());

    // Preemption: DisruptionTarget, then graceful deletion. A watch sees
    // every change of the pod, however short the grace period.
    let rv = pods
        .get("preempted")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .metadata
        .resource_version
        .unwrap_or_default();
    let mut changes = pods
        .watch(
            &WatchParams::default().fields("metadata.name=preempted"),
            &rv,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .boxed();
    emu.preempt_pod("default", "preempted")
        .unwrap_or_else(|e| panic!("{e}"));
    let seen = tokio::time::timeout(T, async {
        let mut seen = None;
        while let Some(Ok(ev)) = changes.next().await {
            match ev {
                WatchEvent::Modified(p) => {
                    if let Some(c) = pod_condition(&p, "DisruptionTarget") {
                        seen = Some(c);
                    }
                }
                WatchEvent::Deleted(_) => break,
                _ => {}
            }
        }
        seen
    })
    .await
    .ok()
    .flatten();
    assert_eq!(
        seen.map(|c| (c.0, c.1)),
        Some(("True".into(), Some("PreemptionByScheduler".into())))
    );

    // The Eviction API.
    pods.evict("evicted", &EvictParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_gone(&pods, "evicted", T)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = tokio::time::Instant::now() + T;
    while emu.running_containers() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "processes left behind"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    emu.shutdown();
}

#[tokio::test]
async fn lost_node_fails_its_pods_and_stops_scheduling_there() {
    let emu = start(vec![NodeConfig::new("a"), NodeConfig::new("b")]);
    let client = emu
        .client(&Identity::Admin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut p = pod("on-a", IMAGE, &["sleep", "60"]);
    if let Some(s) = p.spec.as_mut() {
        s.node_selector = Some([("kubernetes.io/hostname".to_string(), "a".to_string())].into());
    }
    pods.create(&PostParams::default(), &p)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_for(&pods, "on-a", T, |p| phase(p) == "Running")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Watch the pod: the taint manager's last update, then its deletion.
    let rv = pods
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("listing pods: {e}"))
        .metadata
        .resource_version
        .unwrap_or_else(|| panic!("a list without a resourceVersion"));
    let mut stream = pods
        .watch(
            &WatchParams::default()
                .fields("metadata.name=on-a")
                .timeout(20),
            &rv,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .boxed();
    emu.lose_node("a").unwrap_or_else(|e| panic!("{e}"));
    let mut marked = None;
    loop {
        let ev = tokio::time::timeout(T, stream.try_next())
            .await
            .ok()
            .and_then(|r| r.ok())
            .flatten();
        match ev {
            Some(WatchEvent::Modified(p)) => marked = Some(p),
            Some(WatchEvent::Deleted(_)) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    let last = marked.unwrap_or_else(|| panic!("no update before deletion"));
    assert_eq!(phase(&last), "Failed");
    assert_eq!(
        pod_condition(&last, "DisruptionTarget").map(|c| (c.0, c.1)),
        Some(("True".into(), Some("DeletionByTaintManager".into())))
    );
    let deadline = tokio::time::Instant::now() + T;
    while emu.running_containers() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node's processes did not die with it"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // New pods that must go to `a` are unschedulable (unreachable taint).
    pods.create(&PostParams::default(), &p)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pending = wait_for(&pods, "on-a", T, |p| {
        pod_condition(p, "PodScheduled").is_some()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let msg = pod_condition(&pending, "PodScheduled")
        .and_then(|c| c.2)
        .unwrap_or_default();
    assert_eq!(
        msg,
        "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
    );
    emu.restore_node("a").unwrap_or_else(|e| panic!("{e}"));
    let p = wait_for(&pods, "on-a", T, |p| phase(p) == "Running")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(node_of(&p), "a");
    emu.shutdown();
}

#[tokio::test]
async fn stalled_volume_keeps_pod_in_container_creating() {
    let emu = start(vec![NodeConfig::new("node-1")]);
    let client = emu
        .client(&Identity::Admin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    emu.stall_pods(StallRule {
        namespace: Some("default".into()),
        name_prefix: Some("stuck".into()),
        label_selector: None,
    });
    pods.create(&PostParams::default(), &pod("stuck-1", IMAGE, &["true"]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // A secret volume whose secret does not exist never mounts either.
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": "nosecret"},
        "spec": {"restartPolicy": "Never",
            "volumes": [{"name": "aws", "secret": {"secretName": "aws-credentials"}}],
            "containers": [{"name": "main", "image": IMAGE, "command": ["cat", "/root/.aws/key"],
                "volumeMounts": [{"name": "aws", "mountPath": "/root/.aws"}]}]},
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    pods.create(&PostParams::default(), &p)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let evs = events
            .list(&ListParams::default().fields("reason=FailedMount"))
            .await
            .unwrap_or_else(|e| panic!("listing: {e}"))
            .items;
        let for_pod = |n: &str| {
            evs.iter()
                .find(|e| e.involved_object.name.as_deref() == Some(n))
                .and_then(|e| e.message.clone())
        };
        if let (Some(a), Some(b)) = (for_pod("stuck-1"), for_pod("nosecret")) {
            assert!(
                a.starts_with(
                    "Unable to attach or mount volumes: unmounted volumes=[kube-api-access-"
                ),
                "{a}"
            );
            assert_eq!(
                b,
                "MountVolume.SetUp failed for volume \"aws\" : secret \"aws-credentials\" not found"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no FailedMount events: {evs:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in ["stuck-1", "nosecret"] {
        let p = pods.get(n).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(phase(&p), "Pending");
        assert_eq!(waiting_reason(&p).as_deref(), Some("ContainerCreating"));
    }
    // Creating the secret lets the second pod proceed and read it.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client, "default");
    let s = serde_json::from_value(
        json!({"metadata": {"name": "aws-credentials"}, "stringData": {"key": "s3cr3t"}}),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    secrets
        .create(&PostParams::default(), &s)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_for(&pods, "nosecret", T, |p| phase(p) == "Succeeded")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        pods.logs("nosecret", &Default::default())
            .await
            .unwrap_or_default(),
        "s3cr3t"
    );
    emu.shutdown();
}

#[tokio::test]
async fn preemptible_nodes_take_only_tolerating_pods() {
    let emu = start(vec![
        NodeConfig::new("ondemand").cpu("1"),
        NodeConfig::new("spot").cpu("8").preemptible(),
    ]);
    let client = emu
        .client(&Identity::Admin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let spot_pod = |name: &str, cpu: &str| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"restartPolicy": "Never",
                "tolerations": [{"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "cloud.google.com/gke-spot", "operator": "In", "values": ["true"]}]}]}}},
                "containers": [{"name": "main", "image": IMAGE, "command": ["true"], "resources": {"requests": {"cpu": cpu}}}]},
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    };
    pods.create(&PostParams::default(), &spot_pod("cheap", "2"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let p = wait_for(&pods, "cheap", T, |p| !node_of(p).is_empty())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(node_of(&p), "spot");
    // Without the toleration, 2 CPUs fit nowhere: the spot node is tainted.
    let mut plain = pod("plain", IMAGE, &["true"]);
    if let Some(c) = plain.spec.as_mut().map(|s| &mut s.containers[0]) {
        c.resources = serde_json::from_value(json!({"requests": {"cpu": "2"}})).ok();
    }
    pods.create(&PostParams::default(), &plain)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let p = wait_for(&pods, "plain", T, |p| {
        pod_condition(p, "PodScheduled").is_some()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        pod_condition(&p, "PodScheduled")
            .and_then(|c| c.2)
            .unwrap_or_default(),
        "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {cloud.google.com/gke-spot: true}. preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, 1 Preemption is not helpful for scheduling."
    );
    emu.shutdown();
}
