//! API hygiene against the emulator: a storm of 429s (with Retry-After),
//! 500s, dropped watches and an expired watch history is survived with
//! exactly one retry per failed call; a Role without a rule the leader
//! needs gets a refusal that names the rule, without retries.

mod k8s_support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_support::{Cluster, NS, config, status_line};
use kube::api::{Api, ListParams};
use toil_tests::emulator::{Identity, NodeConfig, RequestFault};
use toil_tests::harness::{repo_root, scratch};

const LIMIT: Duration = Duration::from_secs(120);

const FAN: &str = r#"
name: fan
defaults:
  cores: 0.1
  memory: 256Mi
  disk: 100Mi
jobs:
  part:
    scatter: {i: {range: 8}}
    command: sleep 0.5; echo {{i}} > part_{{i}}.txt
    outputs:
      parts: "part_{{i}}.txt"
  join:
    inputs: [{from: part.parts, as: parts/}]
    command: echo "joined $(cat parts/* | sort -n | tr '\n' ' ')"
"#;

#[tokio::test]
async fn a_storm_of_429s_500s_and_broken_watches_is_survived() {
    let c = Cluster::start(config(vec![NodeConfig::new("node-1")])).await;
    c.workflow("fan", FAN);
    let create = |f: RequestFault| f.verb("create").resource("jobs");
    c.emu
        .fail_requests(create(RequestFault::too_many_requests(6)));
    c.emu.fail_requests(create(RequestFault::internal_error(6)));
    c.emu.fail_requests(
        RequestFault::internal_error(3)
            .verb("list")
            .resource("pods"),
    );
    c.emu.fail_requests(RequestFault {
        code: 503,
        ..RequestFault::internal_error(2)
            .verb("list")
            .resource("nodes")
    });
    c.emu.fail_requests(
        RequestFault::too_many_requests(2)
            .verb("watch")
            .resource("pods"),
    );
    let mut leader = c.spawn("fan", &[]);

    // While pods run, every watch connection drops and the history the
    // watch could resume from is gone: the leader must relist.
    c.running_pod("part-3", LIMIT).await;
    c.emu.drop_watches();
    c.emu.expire_watch_history();

    let status = tokio::time::timeout(LIMIT, leader.wait())
        .await
        .unwrap_or_else(|_| panic!("the leader did not finish:\n{}", c.output_of("fan")))
        .unwrap_or_else(|e| panic!("{e}"));
    let out = c.output_of("fan");
    assert_eq!(status.code(), Some(0), "{out}");
    assert!(out.contains("[join] joined 0 1 2 3 4 5 6 7"), "{out}");
    let counts = c.emu.request_counts();
    // Nine Jobs, each created once, plus one retry per injected failure:
    // no duplicates, and no retry storm of our own.
    assert_eq!(counts.get("create", "jobs"), 9 + 12, "{counts:?}");
    let st = c.status("fan").await;
    assert!(st.contains("jobs: 9 (9 succeeded)"), "{st}");
    c.wait_all_gone(Duration::from_secs(20)).await;
}

#[tokio::test]
async fn a_missing_rbac_rule_is_named_and_not_retried() {
    // The shipped Role without `create` on jobs.
    let shipped = std::fs::read_to_string(repo_root().join("deploy/rbac.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let full = r#"verbs: ["create", "get", "delete", "deletecollection"]"#;
    assert!(
        shipped.contains(full),
        "deploy/rbac.yaml changed; update this test"
    );
    // ... and without `list` on nodes: the leader says so and carries on.
    let nodes = "resources: [\"nodes\"]\n    verbs: [\"list\"]";
    assert!(
        shipped.contains(nodes),
        "deploy/rbac.yaml changed; update this test"
    );
    let reduced = shipped
        .replace(full, r#"verbs: ["get", "delete", "deletecollection"]"#)
        .replace(nodes, "resources: [\"nodes\"]\n    verbs: [\"get\"]");
    let tmp = scratch("k8s-rbac-");
    let rbac = tmp.path().join("rbac.yaml");
    std::fs::write(&rbac, reduced).unwrap_or_else(|e| panic!("{e}"));
    let mut cfg = config(vec![NodeConfig::new("node-1")]);
    cfg.rbac_files = vec![rbac];
    let c = Cluster::start(cfg).await;
    c.workflow("fan", FAN);

    let (code, out) = c.run("fan", &[], LIMIT).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "warning: cannot list the cluster's nodes, so jobs are not checked against node sizes"
        ),
        "{out}"
    );
    assert!(
        out.contains("may not `list` `nodes` (apiGroup \"\" (core)): apply deploy/rbac.yaml, or add this verb to the ClusterRole"),
        "{out}"
    );
    let status = c.status("fan").await;
    let line = status_line(&status, "part[0]");
    assert!(
        line.contains("configuration error: creating Job toil-tester-"),
        "{status}"
    );
    assert!(
        line.contains("cannot create resource \"jobs\" in API group \"batch\" in the namespace \"toil\" (403 Forbidden)"),
        "the API server's own words: {status}"
    );
    assert!(
        line.contains("may not `create` `jobs` (apiGroup \"batch\") in namespace \"toil\": apply deploy/rbac.yaml"),
        "the fix: {status}"
    );
    // Refused once per Job in flight at most, never retried (and once for
    // the relay that would have probed the leader's address: the leader
    // then says its path is unchecked).
    let creates = c.emu.request_counts().get("create", "jobs");
    assert!((1..=8 + 1).contains(&creates), "{creates} creates");
    assert!(
        out.contains("agents reach the leader directly at https://127.0.0.1:"),
        "{out}"
    );
    assert!(out.contains(", unchecked: "), "{out}");

    // The leader's identity is refused what the Role does not grant.
    let sa = c
        .emu
        .client(&Identity::service_account(NS, "toil-leader"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let err = Api::<Secret>::namespaced(sa, NS)
        .list(&ListParams::default())
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("403") && err.contains("secrets"), "{err}");

    // An identity with no rights at all is stopped before anything runs.
    let nobody = c
        .emu
        .kubeconfig_for(&Identity::service_account(NS, "default"))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_dir_all(c.job_store("fan")).unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = c.leader("fan", &[]);
    cmd.env("KUBECONFIG", &nobody);
    let out = cmd.output().await.unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("may not `list` `pods` (apiGroup \"\" (core)) in namespace \"toil\""),
        "{text}"
    );
    assert!(!c.job_store("fan").exists(), "nothing was created");
}
