//! Jobs with container images, through the leader and agents, with the
//! stand-in `singularity` (tests/fixtures/bin) first on PATH: the image is
//! pulled once for the node and the job runs inside it; a pull that fails
//! ends the attempt as IMAGE_PULL with the engine's own words, and is not
//! retried.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use toil_tests::harness;
use toil_tests::local::Sandbox;

const T: Duration = Duration::from_secs(120);

/// `PATH` with the stand-in engine first.
fn stand_in_path() -> String {
    format!(
        "{}:{}",
        harness::repo_root().join("tests/fixtures/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn jobs_run_in_their_image_pulled_once_and_a_failed_pull_is_image_pull() {
    let sb = Sandbox::new("images");
    let pulls = sb.path().join("pulls.jsonl");
    sb.write(
        "img.yaml",
        r#"
defaults: {cores: 0.1, memory: 32Mi}
jobs:
  boxed:
    scatter: {n: [1, 2, 3]}
    image: docker://ubuntu:24.04
    command: "echo running {{n}} inside the image"
  broken:
    image: docker://example/missing-image:1.0
    retries: 3
    command: "echo never"
"#,
    );
    let path = stand_in_path();
    let mut cmd = sb.leader(&["run", "img.yaml", "--clean", "never"]);
    cmd.env("PATH", &path)
        .env("FAKE_SINGULARITY_LOG", &pulls)
        .env("FAKE_SINGULARITY_PULL_SECONDS", "0.3");
    let r = sb.spawn(cmd, "leader").wait(T);
    r.expect_code(1);
    for n in 1..=3 {
        assert!(
            r.stdout
                .contains(&format!("[boxed[{}]] running {n}", n - 1)),
            "{}",
            r.stdout
        );
    }
    // The agent notes the pull in the job's log.
    assert!(
        r.stdout.contains("pulling image docker://ubuntu:24.04"),
        "{}",
        r.stdout
    );
    let e = &r.stderr;
    assert!(e.contains("job broken failed: image pull failed"), "{e}");
    assert!(e.contains("FATAL"), "the engine's message is shown: {e}");
    assert!(
        e.contains("attempt 1 (0 of 3 retries used)"),
        "a failed pull is not retried: {e}"
    );
    // One pull of the good image for the node, however many jobs used it.
    let log = std::fs::read_to_string(&pulls).expect("pull log");
    let ubuntu_pulls = log
        .lines()
        .filter(|l| l.contains("\"start\"") && l.contains("ubuntu"))
        .count();
    assert_eq!(ubuntu_pulls, 1, "{log}");
}

/// A pull that hangs (the registry stopped answering) is stopped at
/// `--imagePullTimeout` with every process it started, since each holds
/// the node's pull lock for that image. The job waiting behind it then pulls
/// in turn (and here hangs and is stopped too), rather than waiting forever.
#[test]
fn a_hung_pull_is_stopped_at_the_limit_with_its_helpers() {
    let sb = Sandbox::new("images-hung");
    let pulls = sb.path().join("pulls.jsonl");
    sb.write(
        "hung.yaml",
        r#"
defaults: {cores: 0.1, memory: 32Mi}
jobs:
  first:
    image: docker://example/slow:1.0
    command: "echo never"
  second:
    image: docker://example/slow:1.0
    command: "echo never"
"#,
    );
    let path = stand_in_path();
    let mut cmd = sb.leader(&[
        "run",
        "hung.yaml",
        "--clean",
        "never",
        "--imagePullTimeout",
        "2s",
    ]);
    cmd.env("PATH", &path)
        .env("FAKE_SINGULARITY_LOG", &pulls)
        .env("FAKE_SINGULARITY_PULL_SECONDS", "3600")
        .env("FAKE_SINGULARITY_PULL_HELPER", "1");
    let t0 = std::time::Instant::now();
    let r = sb.spawn(cmd, "leader").wait(T);
    r.expect_code(1);
    assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());
    let e = &r.stderr;
    for job in ["first", "second"] {
        assert!(
            e.contains(&format!("job {job} failed: image pull failed")),
            "{e}"
        );
    }
    assert!(
        e.contains("took longer than 2 s and was stopped")
            && e.contains("raise --imagePullTimeout (TOIL_IMAGE_PULL_TIMEOUT)"),
        "{e}"
    );
    // The two pulls ran one after the other, and no helper outlived its
    // pull (each held the lock).
    let log = std::fs::read_to_string(&pulls).expect("pull log");
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let starts: Vec<f64> = events
        .iter()
        .filter(|v| v["event"] == "start")
        .map(|v| v["t"].as_f64().expect("t"))
        .collect();
    assert_eq!(starts.len(), 2, "{log}");
    assert!(
        (starts[1] - starts[0]).abs() >= 1.9,
        "serialized: {starts:?}"
    );
    let helpers: Vec<i32> = events
        .iter()
        .filter(|v| v["event"] == "helper")
        .map(|v| v["helper"].as_i64().expect("pid") as i32)
        .collect();
    assert_eq!(helpers.len(), 2, "{log}");
    for pid in helpers {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let alive = state
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|s| s != "Z");
        assert!(!alive, "helper {pid} of a stopped pull still runs: {state}");
    }
}
