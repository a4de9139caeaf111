//! Clients written from the .proto files alone, in Python: one outside the
//! workflow (adds a job, watches events, follows logs) and one inside a
//! running job (adds children and a follow-on).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use toil_tests::harness;
use toil_tests::local::Sandbox;
use toil_tests::python::{python, script};

const T: Duration = Duration::from_secs(120);

fn generate(sb: &Sandbox) -> PathBuf {
    toil_tests::python::generate(sb.path())
}

#[test]
fn a_python_client_adds_a_job_watches_events_and_follows_its_log() {
    let sb = Sandbox::new("pyclient");
    let generated = generate(&sb);
    let gate = sb.path().join("gate");
    sb.write(
        "wait.yaml",
        &format!(
            "name: waiting\njobs:\n  wait:\n    cores: 0.1\n    memory: 32Mi\n    command: 'while [ ! -e {} ]; do sleep 0.05; done'\n",
            gate.display()
        ),
    );
    let leader = sb.spawn(sb.leader(&["run", "wait.yaml"]), "leader");
    sb.leader_info(T);
    // Once on the leader's Unix socket, once over TLS trusting the
    // certificate from leader.json (what `grpcurl -cacert` does).
    for (mode, name) in [("unix", "from_python"), ("tls", "from_python_tls")] {
        let out = python(&generated)
            .arg(script("workflow_client.py"))
            .arg(sb.job_store())
            .args([mode, name])
            .output()
            .expect("python client");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "client ({mode}) failed\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("json");
        assert_eq!(v["workflow"], "waiting");
        assert_eq!(v["epoch"], 1);
        assert_eq!(v["added"], serde_json::json!([name]));
        let states: Vec<&str> = v["states"]
            .as_array()
            .expect("states")
            .iter()
            .filter_map(|s| s.as_str())
            .collect();
        assert_eq!(
            states,
            [
                "JOB_STATE_QUEUED",
                "JOB_STATE_RUNNING",
                "JOB_STATE_SUCCEEDED"
            ],
            "{mode}"
        );
        assert_eq!(v["ended"], "CAUSE_KIND_SUCCEEDED");
        // AttemptStarted names where the attempt runs, even on a new agent.
        let placement = v["placement"].as_str().expect("an AttemptStarted event");
        assert!(placement.starts_with("local pid "), "{placement:?}");
        let log = v["log"].as_str().expect("log");
        assert!(
            log.contains("hello from python\n") && log.contains("second line\n"),
            "{log}"
        );
        assert_eq!(v["job_state"], "JOB_STATE_SUCCEEDED");
        assert_eq!(v["attempts"], 1);
        assert_eq!(v["denied"], "UNAUTHENTICATED");
    }
    std::fs::write(&gate, "").expect("gate");
    let r = leader.wait(T);
    r.expect_code(0);
    assert!(
        r.stdout.contains("[from_python] hello from python"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("[from_python_tls] hello from python"),
        "{}",
        r.stdout
    );
    assert!(r.stderr.contains("3 jobs (3 succeeded)"), "{}", r.stderr);
}

#[test]
fn a_running_job_adds_children_and_a_follow_on_that_dependents_wait_for() {
    let sb = Sandbox::new("children");
    let generated = generate(&sb);
    let log = sb.path().join("order");
    sb.write(
        "dyn.yaml",
        &format!(
            r#"
defaults: {{cores: 0.1, memory: 32Mi}}
jobs:
  parent:
    env: {{PYTHONPATH: "{generated}"}}
    command: ["{py}", "{script}", "{log}"]
  after_parent:
    after: [parent]
    command: "echo after_parent >> {log}"
"#,
            generated = generated.display(),
            py = harness::venv_bin("python").display(),
            script = script("add_children.py").display(),
            log = log.display()
        ),
    );
    let r = sb.run(&["run", "dyn.yaml"], T);
    r.expect_code(0);
    assert!(
        r.stdout
            .contains("[parent] root refused: PERMISSION_DENIED"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("[parent] added parent/kid0 parent/kid1 parent/wrapup"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("[parent/kid1] I am kid 1"),
        "{}",
        r.stdout
    );
    assert!(r.stderr.contains("5 jobs (5 succeeded)"), "{}", r.stderr);
    let order = std::fs::read_to_string(&log).expect("order");
    let order: Vec<&str> = order.lines().collect();
    assert_eq!(order.len(), 5, "{order:?}");
    assert_eq!(order[0], "parent");
    let mut kids = order[1..3].to_vec();
    kids.sort_unstable();
    assert_eq!(
        kids,
        ["kid0", "kid1"],
        "children run after the parent: {order:?}"
    );
    assert_eq!(
        order[3], "wrapup",
        "the follow-on runs after the children: {order:?}"
    );
    assert_eq!(
        order[4], "after_parent",
        "dependents wait for all of them: {order:?}"
    );
}
