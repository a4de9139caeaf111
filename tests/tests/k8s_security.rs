//! Pods and credentials on Kubernetes, tried for real against the emulator
//! with the real binaries: a workflow in a namespace that enforces the Pod
//! Security Standard "restricted", whose job looks for its agent's token
//! (in its own environment and in its agent's `/proc`) while a namespace
//! reader looks for it in the Job; options the namespace refuses, as a
//! typed error naming the policy and the fix; owners that share no
//! directory of a node's host path.

mod k8s_support;

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job as KubeJob;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use toil_tests::emulator::{Identity, NodeConfig};

use k8s_support::{Cluster, NS, SELECTOR, config, status_line};

const LIMIT: Duration = Duration::from_secs(120);

/// Sets the namespace's `pod-security.kubernetes.io/enforce` label.
async fn enforce(c: &Cluster, level: &str) {
    let api: Api<Namespace> = Api::all(c.admin().await);
    let patch = json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": level}}});
    api.patch(NS, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("labelling the namespace: {e}"));
}

/// A user who may read Jobs and pods in the namespace, and nothing else.
async fn namespace_reader(c: &Cluster) -> kube::Client {
    let admin = c.admin().await;
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "reader"},
        "rules": [
            {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        ]
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    Api::<Role>::namespaced(admin.clone(), NS)
        .create(&PostParams::default(), &role)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "reader"}]
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    Api::<RoleBinding>::namespaced(admin, NS)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    c.emu
        .client(&Identity::User("reader".into()))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The job looks for its agent's token where a job could find it, reports
/// what it saw, and waits for the test to have read the Job.
fn probe_workflow(go: &std::path::Path) -> String {
    format!(
        r#"
name: probe
defaults:
  retries: 0
  cores: 0.1
  memory: 256Mi
  disk: 100Mi
jobs:
  probe:
    command: |
{probe}      until [ -e {go} ]; do sleep 0.1; done
"#,
        go = go.display(),
        probe = toil_tests::token_probe::command(6),
    )
}

#[tokio::test]
async fn a_workflow_runs_in_a_restricted_namespace_and_nobody_finds_the_agents_token() {
    let c = Cluster::start(config(vec![NodeConfig::new("node-1")])).await;
    enforce(&c, "restricted").await;
    let reader = namespace_reader(&c).await;
    let go = c.dir.path().join("go");
    c.workflow("probe", &probe_workflow(&go));
    let mut leader = c.spawn("probe", &[]);

    // While the job runs: what a namespace reader sees of it.
    let (pod_name, _) = c.running_pod("probe", LIMIT).await;
    let jobs: Api<KubeJob> = Api::namespaced(reader.clone(), NS);
    let listed = jobs
        .list(&ListParams::default().labels(SELECTOR))
        .await
        .unwrap_or_else(|e| panic!("the reader lists Jobs: {e}"));
    assert_eq!(listed.items.len(), 1, "{listed:?}");
    let job = &listed.items[0];
    let job_name = job.metadata.name.clone().unwrap_or_default();
    let pod = Api::<Pod>::namespaced(reader.clone(), NS)
        .get(&pod_name)
        .await
        .unwrap_or_else(|e| panic!("the reader gets the pod: {e}"));
    // The token, as the admin can read it from the Secret.
    let secret = Api::<Secret>::namespaced(c.admin().await, NS)
        .get(&job_name)
        .await
        .unwrap_or_else(|e| panic!("the token Secret {job_name}: {e}"));
    let token = secret
        .data
        .as_ref()
        .and_then(|d| d.get("token"))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default();
    assert!(token.len() >= 16, "a real token: {secret:?}");
    let job_json = serde_json::to_string(job).unwrap_or_default();
    let pod_json = serde_json::to_string(&pod).unwrap_or_default();
    assert!(
        !job_json.contains(&token),
        "the token is in the Job: {job_json}"
    );
    assert!(
        !pod_json.contains(&token),
        "the token is in the pod: {pod_json}"
    );
    assert!(
        job_json.contains(&format!(
            r#"{{"name":"TOIL_AGENT_TOKEN","valueFrom":{{"secretKeyRef":{{"key":"token","name":"{job_name}","optional":false}}}}}}"#
        )),
        "{job_json}"
    );
    // The Secret goes with its Job, and the reader cannot read it.
    let owner = &secret.metadata.owner_references.clone().unwrap_or_default()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Job", job_name.as_str())
    );
    assert_eq!(Some(&owner.uid), job.metadata.uid.as_ref());
    let denied = Api::<Secret>::namespaced(reader, NS).get(&job_name).await;
    assert!(
        denied
            .as_ref()
            .is_err_and(|e| e.to_string().contains("forbidden")),
        "{denied:?}"
    );
    // The pod passed "restricted": it runs hardened.
    let sc = serde_json::to_value(&pod.spec).unwrap_or_default();
    assert_eq!(sc["securityContext"]["runAsNonRoot"], true, "{sc}");
    assert_eq!(
        sc["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(
        sc["containers"][0]["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );

    std::fs::write(&go, "").unwrap_or_else(|e| panic!("{e}"));
    let status = tokio::time::timeout(LIMIT, leader.wait())
        .await
        .unwrap_or_else(|_| panic!("the leader did not end:\n{}", c.output_of("probe")))
        .unwrap_or_else(|e| panic!("{e}"));
    let out = c.output_of("probe");
    assert_eq!(status.code(), Some(0), "{out}");
    // What the job saw: no token in its environment, and its agent's
    // environment and memory closed to it (the agent is not dumpable),
    // while it reads its own.
    toil_tests::token_probe::assert_out_of_reach(&out);
    assert!(out.contains("probe: the parent is toil-agent run"), "{out}");

    // One Secret per Job (the agent's, and the relay's that probed the
    // leader's address), and none left once the leader is done.
    let counts = c.emu.request_counts();
    assert_eq!(counts.get("create", "secrets"), 1 + 1, "{counts:?}");
    c.wait_all_gone(Duration::from_secs(20)).await;
    let left = Api::<Secret>::namespaced(c.admin().await, NS)
        .list(&ListParams::default().labels(SELECTOR))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(left.items.is_empty(), "{:?}", left.items);
}

const TWO: &str = r#"
name: NAME
defaults:
  retries: 0
  cores: 0.1
  memory: 256Mi
  disk: 100Mi
jobs:
  a:
    command: echo a
  b:
    command: echo b
"#;

#[tokio::test]
async fn pods_the_namespace_refuses_fail_at_once_naming_the_policy_and_the_fix() {
    let c = Cluster::start(config(vec![NodeConfig::new("node-1")])).await;
    enforce(&c, "restricted").await;
    let host = c.dir.path().join("host");
    c.workflow("hostpath", &TWO.replace("NAME", "hostpath"));
    let started = std::time::Instant::now();
    let (code, out) = c
        .run(
            "hostpath",
            &["--kubernetesHostPath", &host.display().to_string()],
            LIMIT,
        )
        .await;
    assert_eq!(code, 1, "{out}");
    // Well before --kubernetesPodTimeout (5 minutes).
    assert!(started.elapsed() < Duration::from_secs(60), "{out}");
    let status = c.status("hostpath").await;
    for job in ["a", "b"] {
        let line = status_line(&status, job);
        assert!(line.contains("configuration error"), "{status}");
        assert!(
            line.contains(r#"namespace "toil" enforces the Pod Security Standard "restricted" (restricted:latest) and refused the agent's pod: restricted volume types (volume "workdir" uses restricted volume type "hostPath")"#),
            "{status}"
        );
        assert!(
            line.contains("because of --kubernetesHostPath (a hostPath volume): drop those options (then the pods pass \"restricted\"), or run in a namespace labelled pod-security.kubernetes.io/enforce=privileged"),
            "{status}"
        );
    }
    // The refused Jobs are gone; no pod was ever made.
    c.wait_all_gone(Duration::from_secs(20)).await;

    // A baseline namespace refuses a privileged container.
    enforce(&c, "baseline").await;
    c.workflow("privileged", &TWO.replace("NAME", "privileged"));
    let (code, out) = c
        .run("privileged", &["--kubernetesPrivileged"], LIMIT)
        .await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(r#"enforces the Pod Security Standard "baseline" (baseline:latest) and refused the agent's pod: privileged (container "agent" must not set securityContext.privileged=true)"#),
        "{out}"
    );
    assert!(out.contains("because of --kubernetesPrivileged"), "{out}");

    // And the same pods run where the namespace allows them.
    enforce(&c, "privileged").await;
    c.workflow("allowed", &TWO.replace("NAME", "allowed"));
    let (code, out) = c
        .run(
            "allowed",
            &["--kubernetesHostPath", &host.display().to_string()],
            LIMIT,
        )
        .await;
    assert_eq!(code, 0, "{out}");
}

/// Writes the owner's name into the work directory the first time, and
/// prints what the file holds.
fn owner_workflow(name: &str, owner: &str) -> String {
    format!(
        r#"
name: {name}
defaults:
  cores: 0.1
  memory: 256Mi
  disk: 100Mi
jobs:
  mark:
    command: |
      [ -e "$TOIL_WORKDIR/owner.txt" ] || echo {owner} > "$TOIL_WORKDIR/owner.txt"
      echo "the work directory belongs to $(cat "$TOIL_WORKDIR/owner.txt")"
"#
    )
}

#[tokio::test]
async fn owners_get_their_own_directory_of_the_host_path() {
    let c = Cluster::start(config(vec![NodeConfig::new("node-1")])).await;
    let host = c.dir.path().join("host").display().to_string();
    let mut seen = Vec::new();
    for (run, owner) in [("alice1", "alice"), ("bob1", "bob"), ("alice2", "alice")] {
        c.workflow(run, &owner_workflow(run, owner));
        let (code, out) = c
            .run(
                run,
                &["--kubernetesHostPath", &host, "--kubernetesOwner", owner],
                LIMIT,
            )
            .await;
        assert_eq!(code, 0, "{out}");
        let line = out
            .lines()
            .find_map(|l| l.split("the work directory belongs to ").nth(1))
            .map(str::trim)
            .unwrap_or_else(|| panic!("{out}"))
            .to_string();
        seen.push(line);
    }
    // Bob's pod did not see Alice's directory; Alice's second run found
    // her own again on the same node.
    assert_eq!(seen, ["alice", "bob", "alice"]);
    // On the node: one directory per owner under the host path.
    let root = c.emu.host_path("node-1", &host);
    for owner in ["alice", "bob"] {
        let mark = root.join(format!("owner-{owner}")).join("owner.txt");
        let text = std::fs::read_to_string(&mark).unwrap_or_else(|e| panic!("{mark:?}: {e}"));
        assert_eq!(text.trim(), owner);
    }
}
