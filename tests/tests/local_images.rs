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
    let path = format!(
        "{}:{}",
        harness::repo_root().join("tests/fixtures/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
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
