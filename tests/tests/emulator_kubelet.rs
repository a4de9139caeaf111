//! The emulator's scheduler and kubelets: OOM kills, unschedulable pods,
//! image pull failures, hostPath sharing per node, eviction, graceful
//! deletion, and in-cluster access from a pod over HTTPS.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use serde_json::json;
use toil_tests::emulator::testkit::{
    phase, pod, pod_condition, terminated, wait_for, wait_gone, waiting_reason,
};
use toil_tests::emulator::{Emulator, EmulatorConfig, Identity, NodeConfig};

const IMAGE: &str = "toil-test:1";
const T: Duration = Duration::from_secs(20);

fn start(nodes: Vec<NodeConfig>) -> Emulator {
    let mut cfg = EmulatorConfig::default()
        .with_nodes(nodes)
        .with_image(IMAGE, None);
    cfg.timing.image_pull_backoff = Duration::from_millis(300);
    Emulator::start(cfg).unwrap_or_else(|e| panic!("emulator: {e}"))
}

fn from_json(v: serde_json::Value) -> Pod {
    serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
}

async fn events_for(client: &kube::Client, pod: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let lp = ListParams::default().fields(&format!("involvedObject.name={pod}"));
    events
        .list(&lp)
        .await
        .unwrap_or_else(|e| panic!("listing: {e}"))
        .items
}

#[tokio::test]
async fn memory_hog_is_oom_killed() {
    let emu = start(vec![NodeConfig::new("node-1")]);
    let client = emu
        .client(&Identity::Admin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let p = from_json(json!({
        "metadata": {"name": "hog"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "main", "image": IMAGE,
            "command": ["python3", "-c", "x = bytearray(300 * 1024 * 1024); import time; time.sleep(5)"],
            "resources": {"limits": {"memory": "100Mi", "cpu": "500m"}},
        }]},
    }));
    pods.create(&PostParams::default(), &p)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let done = wait_for(&pods, "hog", T, |p| phase(p) == "Failed")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let t = terminated(&done).unwrap_or_else(|| panic!("{done:?}"));
    assert_eq!((t.exit_code, t.reason.as_deref()), (137, Some("OOMKilled")));
    // requests defaulted from limits: Guaranteed QoS.
    assert_eq!(
        done.status.as_ref().and_then(|s| s.qos_class.as_deref()),
        Some("Guaranteed")
    );
    emu.shutdown();
}

#[tokio::test]
async fn pod_that_fits_nowhere_is_unschedulable_with_the_real_message() {
    let emu = start(vec![
        NodeConfig::new("n1").memory("1Gi"),
        NodeConfig::new("n2").memory("2Gi"),
        NodeConfig::new("n3").memory("2Gi"),
    ]);
    let client = emu
        .client(&Identity::Admin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let p = from_json(json!({
        "metadata": {"name": "big"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "main", "image": IMAGE, "command": ["true"],
            "resources": {"requests": {"memory": "3Gi"}},
        }]},
    }));
    pods.create(&PostParams::default(), &p)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let msg = "0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.";
    let pending = wait_for(&pods, "big", T, |p| {
        pod_condition(p, "PodScheduled").is_some()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(phase(&pending), "Pending");
    assert_eq!(
        pod_condition(&pending, "PodScheduled"),
        Some((
            "False".into(),
            Some("Unschedulable".into()),
            Some(msg.into())
        ))
    );
    // Retried periodically: the FailedScheduling event's count grows.
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let evs = events_for(&client, "big").await;
        let fs: Vec<&Event> = evs
            .iter()
            .filter(|e| e.reason.as_deref() == Some("FailedScheduling"))
            .collect();
        if let Some(e) = fs.first() {
            assert_eq!(fs.len(), 1, "repeats are aggregated into count");
            assert_eq!(e.type_.as_deref(), Some("Warning"));
            assert_eq!(e.message.as_deref(), Some(msg));
            assert_eq!(
                e.source.as_ref().and_then(|s| s.component.as_deref()),
                Some("default-scheduler")
            );
            assert_eq!(e.involved_object.kind.as_deref(), Some("Pod"));
            assert_eq!(e.involved_object.uid, pending.metadata.uid);
            if e.count.unwrap_or(0) >= 2 {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "FailedScheduling never repeated: {evs:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A taint the pod does not tolerate is reported as such.
    let spot = from_json(json!({
        "metadata": {"name": "gpu"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "main", "image": IMAGE, "command": ["true"],
            "resources": {"limits": {"nvidia.com/gpu": "1"}},
        }]},
    }));
    pods.create(&PostParams::default(), &spot)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let p = wait_for(&pods, "gpu", T, |p| {
        pod_condition(p, "PodScheduled").is_some()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let m = pod_condition(&p, "PodScheduled")
        .and_then(|c| c.2)
        .unwrap_or_default();
    assert!(
        m.starts_with("0/3 nodes are available: 3 Insufficient nvidia.com/gpu."),
        "{m}"
    );
    emu.shutdown();
}

#[tokio::test]
async fn unknown_image_goes_to_image_pull_back_off() {
    let emu = start(vec![NodeConfig::new("node-1")]);
    let client = emu
        .client(&Identity::Admin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &pod("pull", "ghcr.io/nobody/missing:v1", &["true"]),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let p = wait_for(&pods, "pull", T, |p| {
        waiting_reason(p).as_deref() == Some("ImagePullBackOff")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(phase(&p), "Pending");
    let w = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c[0].state.clone())
        .and_then(|s| s.waiting);
    assert_eq!(
        w.and_then(|w| w.message).as_deref(),
        Some("Back-off pulling image \"ghcr.io/nobody/missing:v1\"")
    );
    let evs = events_for(&client, "pull").await;
    let has = |reason: &str, msg: &str| {
        evs.iter().any(|e| {
            e.reason.as_deref() == Some(reason)
                && e.message.as_deref().is_some_and(|m| m.contains(msg))
        })
    };
    assert!(has("Failed", "Error: ErrImagePull"), "{evs:?}");
    assert!(has(
        "Failed",
        "Failed to pull image \"ghcr.io/nobody/missing:v1\""
    ));
    assert!(has(
        "BackOff",
        "Back-off pulling image \"ghcr.io/nobody/missing:v1\""
    ));
    // Logs of a container that never started: the apiserver's 400.
    let err = pods
        .logs("pull", &LogParams::default())
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("container \"main\" in pod \"pull\" is waiting to start: trying and failing to pull image"), "{err}");
    emu.shutdown();
}

fn host_path_pod(name: &str, node: &str, script: &str) -> Pod {
    from_json(json!({
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {"kubernetes.io/hostname": node},
            "volumes": [{"name": "cache", "hostPath": {"path": "/tmp/toil-emu-hostpath-test"}},
                        {"name": "scratch", "emptyDir": {}}],
            "containers": [{
                "name": "main", "image": IMAGE, "command": ["sh", "-c", script],
                "workingDir": "/scratch-here",
                "volumeMounts": [{"name": "cache", "mountPath": "/tmp/toil-emu-hostpath-test"},
                                 {"name": "scratch", "mountPath": "/scratch-here"}],
            }],
        },
    }))
}

#[tokio::test]
async fn host_path_is_shared_on_a_node_and_not_across_nodes() {
    let emu = start(vec![NodeConfig::new("a"), NodeConfig::new("b")]);
    let client = emu
        .client(&Identity::Admin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let writer = "echo cached > /tmp/toil-emu-hostpath-test/entry; pwd; echo private > ./mine";
    pods.create(&PostParams::default(), &host_path_pod("w", "a", writer))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_for(&pods, "w", T, |p| phase(p) == "Succeeded")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        pods.logs("w", &LogParams::default())
            .await
            .unwrap_or_default(),
        "/scratch-here\n"
    );
    let reader = "cat /tmp/toil-emu-hostpath-test/entry 2>&1 || echo missing; cat ./mine 2>/dev/null || echo fresh";
    pods.create(&PostParams::default(), &host_path_pod("same", "a", reader))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    pods.create(&PostParams::default(), &host_path_pod("other", "b", reader))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for n in ["same", "other"] {
        wait_for(&pods, n, T, |p| phase(p) == "Succeeded")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(
        pods.logs("same", &LogParams::default())
            .await
            .unwrap_or_default(),
        "cached\nfresh\n"
    );
    let other = pods
        .logs("other", &LogParams::default())
        .await
        .unwrap_or_default();
    assert!(
        other.starts_with("missing") || other.contains("No such file"),
        "{other}"
    );
    assert!(other.ends_with("fresh\n"), "emptyDir is per pod: {other}");
    assert!(
        emu.host_path("a", "/tmp/toil-emu-hostpath-test")
            .join("entry")
            .exists()
    );
    assert!(
        !emu.host_path("b", "/tmp/toil-emu-hostpath-test")
            .join("entry")
            .exists()
    );
    // The host itself was not touched (the mount lived in the pod's namespace).
    assert!(!std::path::Path::new("/tmp/toil-emu-hostpath-test/entry").exists());
    emu.shutdown();
}

#[tokio::test]
async fn eviction_and_graceful_deletion() {
    let emu = start(vec![NodeConfig::new("node-1")]);
    let client = emu
        .client(&Identity::Admin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pods: Api<Pod> = Api::namespaced(client, "default");
    pods.create(
        &PostParams::default(),
        &pod("victim", IMAGE, &["sleep", "60"]),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    wait_for(&pods, "victim", T, |p| phase(p) == "Running")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    emu.evict_pod("default", "victim", "memory")
        .unwrap_or_else(|e| panic!("{e}"));
    let p = wait_for(&pods, "victim", T, |p| terminated(p).is_some())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let st = p.status.clone().unwrap_or_default();
    assert_eq!(
        (st.phase.as_deref(), st.reason.as_deref()),
        (Some("Failed"), Some("Evicted"))
    );
    assert!(
        st.message
            .as_deref()
            .is_some_and(|m| m.starts_with("The node was low on resource: memory."))
    );
    let dt = pod_condition(&p, "DisruptionTarget");
    assert_eq!(
        dt.map(|c| (c.0, c.1)),
        Some(("True".into(), Some("TerminationByKubelet".into())))
    );

    // Graceful deletion: SIGTERM is trapped, so the pod lives until the
    // grace period ends, then SIGKILL.
    let trap = "trap 'echo got TERM' TERM; echo started; while true; do sleep 0.1; done";
    let mut p = pod("graceful", IMAGE, &["sh", "-c", trap]);
    if let Some(s) = p.spec.as_mut() {
        s.termination_grace_period_seconds = Some(1);
    }
    pods.create(&PostParams::default(), &p)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_for(&pods, "graceful", T, |p| phase(p) == "Running")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let started = std::time::Instant::now();
    let deleted = pods
        .delete("graceful", &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let obj = deleted
        .left()
        .unwrap_or_else(|| panic!("graceful delete returns the pod"));
    assert!(obj.metadata.deletion_timestamp.is_some());
    assert_eq!(obj.metadata.deletion_grace_period_seconds, Some(1));
    // While terminating, the pod is still there and its logs show SIGTERM.
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let logs = pods
            .logs("graceful", &LogParams::default())
            .await
            .unwrap_or_default();
        if logs.contains("got TERM") {
            assert!(logs.starts_with("started\n"));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no SIGTERM seen: {logs:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_gone(&pods, "graceful", T)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "SIGKILL came after the grace period: {took:?}"
    );
    assert_eq!(emu.running_containers(), 0);
    emu.shutdown();
}

#[tokio::test]
async fn pod_reaches_the_api_in_cluster_over_https() {
    let emu = start(vec![NodeConfig::new("node-1")]);
    let client = emu
        .client(&Identity::Admin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pods: Api<Pod> = Api::namespaced(client, "default");
    // What an in-cluster client does: token and CA from the service-account
    // mount, address from KUBERNETES_SERVICE_HOST/PORT. python3's ssl
    // verifies the certificate against the mounted CA.
    let script = r#"
import json, os, ssl, urllib.request
d = "/var/run/secrets/kubernetes.io/serviceaccount"
tok = open(d + "/token").read()
ns = open(d + "/namespace").read()
ctx = ssl.create_default_context(cafile=d + "/ca.crt")
url = "https://%s:%s/api/v1/namespaces/%s/pods/%s" % (os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"], ns, os.environ["POD_NAME"])
req = urllib.request.Request(url, headers={"Authorization": "Bearer " + tok})
try:
    urllib.request.urlopen(req, context=ctx)
except urllib.error.HTTPError as e:
    print(e.code, json.load(e)["message"])
print(os.environ["POD_IP"], os.environ["NODE"])
"#;
    let p = from_json(json!({
        "metadata": {"name": "incluster"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "main", "image": IMAGE, "command": ["python3", "-c", script],
            "env": [
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            ],
        }]},
    }));
    pods.create(&PostParams::default(), &p)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let done = wait_for(&pods, "incluster", T, |p| {
        matches!(phase(p).as_str(), "Succeeded" | "Failed")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let logs = pods
        .logs("incluster", &LogParams::default())
        .await
        .unwrap_or_default();
    assert_eq!(phase(&done), "Succeeded", "{logs}");
    // The default service account has no RBAC grants: a real 403, over TLS.
    assert_eq!(
        logs,
        "403 pods \"incluster\" is forbidden: User \"system:serviceaccount:default:default\" cannot get resource \"pods\" in API group \"\" in the namespace \"default\"\n127.0.0.1 node-1\n"
    );
    emu.shutdown();
}
