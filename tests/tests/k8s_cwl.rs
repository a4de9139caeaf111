//! `toil-cwl-runner --batchSystem kubernetes` against the emulator, with the
//! real binaries: a CWL workflow with a scattered step, a subworkflow step
//! and a step whose tool has a `DockerRequirement`
//! (tests/fixtures/cwl/k8s/) runs each tool invocation as a Job of its own
//! (its own pod), the image step through the agent's Singularity path (the
//! tests' stand-in, inside the appliance image), every tool reading the one
//! File input through the node cache on the host path, and nothing is left
//! behind.

mod k8s_support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_support::{Cluster, appliance_with_singularity, config_with_image_dir};
use serde_json::{Value, json};
use toil_tests::emulator::NodeConfig;
use toil_tests::harness::{repo_root, scratch};

const LIMIT: Duration = Duration::from_secs(180);

fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures/cwl/k8s").join(name)
}

/// `sha1$HEX` of a file, by `sha1sum`.
fn sha1(path: &Path) -> String {
    let out = std::process::Command::new("sha1sum")
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("sha1sum: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.split_whitespace().next().unwrap_or_default();
    format!("sha1${hex}")
}

/// The output object's entry for a File that must hold `contents` and lie
/// in `outdir` (canonical) under its basename.
fn expected_file(outdir: &Path, basename: &str, contents: &str) -> Value {
    let path = outdir.join(basename);
    json!({
        "class": "File",
        "location": format!("file://{}", path.display()),
        "path": path.display().to_string(),
        "basename": basename,
        "size": contents.len(),
        "checksum": sha1(&path),
    })
}

#[tokio::test]
async fn a_cwl_workflow_runs_each_tool_in_its_pod_with_images_and_the_node_cache() {
    let image = scratch("k8s-cwl-image-");
    appliance_with_singularity(image.path());
    let c = Cluster::start(config_with_image_dir(
        vec![NodeConfig::new("node-1")],
        image.path(),
    ))
    .await;
    let mut cmd = c.cwl_runner("wf", &fixture("main.cwl"), &fixture("job.yml"), &[]);
    cmd.env("TOIL_KUBERNETES_HOST_PATH", "/toil-cache")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = std::time::Instant::now();
    let out = tokio::time::timeout(LIMIT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("toil-cwl-runner took longer than {LIMIT:?}"))
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!(
        "toil-cwl-runner ran {:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");

    // Standard output is the output object and nothing else; the files are
    // in --outdir with the expected contents.
    let object: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}):\n{stdout}"));
    let outdir = std::fs::canonicalize(c.dir.path().join("wf-output"))
        .unwrap_or_else(|e| panic!("--outdir: {e}"));
    let summary = "apple 3\nfig 3\npear 3\nchr1\t248956422\n";
    let want = [
        ("pear.txt", "pear 3\n"),
        ("apple.txt", "apple 3\n"),
        ("fig.txt", "fig 3\n"),
        ("summary.txt", summary),
        ("boxed.txt", "APPLE 3\nFIG 3\nPEAR 3\nCHR1\t248956422\n45\n"),
    ];
    for (name, contents) in want {
        let got = std::fs::read_to_string(outdir.join(name))
            .unwrap_or_else(|e| panic!("{name} in --outdir: {e}\n{stdout}"));
        assert_eq!(got, contents, "{name}");
    }
    let f = |name: &str, contents: &str| expected_file(&outdir, name, contents);
    let expected = json!({
        "tagged": [f("pear.txt", "pear 3\n"), f("apple.txt", "apple 3\n"), f("fig.txt", "fig 3\n")],
        "summary": f("summary.txt", summary),
        "boxed": f("boxed.txt", want[4].1),
    });
    assert_eq!(object, expected, "{stdout}");

    // Each of the six tool invocations (three scattered, two in the
    // subworkflow, one in an image) was a Job of its own, so a pod of its
    // own; the Jobs are named after the invocations.
    // (One more Job: the relay whose probe found the leader reachable.)
    let counts = c.emu.request_counts();
    assert_eq!(counts.get("create", "jobs"), 6 + 1, "{counts:?}");
    let status = c.status("wf").await;
    assert!(status.contains("jobs: 6 (6 succeeded)"), "{status}");

    // The image step went through the agent's Singularity path: one pull
    // of its image for the node, and one `exec` in it, of that tool only.
    let pulls = std::fs::read_to_string(image.path().join("pulls.jsonl"))
        .unwrap_or_else(|e| panic!("no pull was recorded: {e}\n{stderr}"));
    let started_pulls: Vec<&str> = pulls.lines().filter(|l| l.contains("\"start\"")).collect();
    assert_eq!(started_pulls.len(), 1, "{pulls}");
    assert!(
        started_pulls[0].contains("docker://docker.io/library/ubuntu:24.04"),
        "{pulls}"
    );
    assert!(pulls.contains("\"end\""), "{pulls}");
    let engine =
        std::fs::read_to_string(image.path().join("engine.log")).unwrap_or_else(|e| panic!("{e}"));
    let execs: Vec<&str> = engine.lines().filter(|l| l.starts_with("exec ")).collect();
    assert_eq!(execs.len(), 1, "{engine}");
    assert!(execs[0].contains("--bind "), "{engine}");
    assert!(execs[0].contains("tr a-z A-Z"), "{engine}");
    // The tool's paths (its inputs, staged as hard links into the work
    // directory, and its working directory) lie in the directory bound at
    // the same path in the container, so they are valid inside it.
    let words: Vec<&str> = execs[0].split_whitespace().collect();
    let after = |flag: &str| {
        words
            .iter()
            .position(|w| *w == flag)
            .and_then(|i| words.get(i + 1))
            .copied()
            .unwrap_or_else(|| panic!("no {flag} in {engine}"))
    };
    let bound = after("--bind")
        .split_once(':')
        .map(|(host, inside)| {
            assert_eq!(host, inside, "{engine}");
            host
        })
        .unwrap_or_else(|| panic!("{engine}"));
    let pwd = after("--pwd");
    assert!(pwd.starts_with(bound), "{engine}");
    let sif = words
        .iter()
        .position(|w| *w == pwd)
        .and_then(|i| words.get(i + 1))
        .copied()
        .unwrap_or_default();
    let tool_paths: Vec<&&str> = words
        .iter()
        .skip_while(|w| **w != sif)
        .skip(1)
        .filter(|w| w.starts_with('/'))
        .collect();
    assert_eq!(tool_paths.len(), 2, "summary.txt and ref.tsv: {engine}");
    assert!(tool_paths.iter().all(|p| p.starts_with(bound)), "{engine}");

    // The shared input went through the node cache on the host path: it
    // is an entry there, and the later tools found it (hits), while only
    // the first reads downloaded it.
    let cache = c
        .emu
        .host_path("node-1", "/toil-cache")
        .join("owner-tester")
        .join("cache");
    let reference = std::fs::read(fixture("ref.tsv")).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        holds(&cache, &reference),
        "no entry with ref.tsv's bytes under {}",
        cache.display()
    );
    let usage = status
        .lines()
        .find(|l| l.starts_with("attempts:"))
        .unwrap_or_else(|| panic!("no usage line in:\n{status}"));
    let hits: u64 = usage
        .split("cache ")
        .nth(1)
        .and_then(|r| r.split(" hits").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no cache hits in {usage:?}"));
    assert!(hits >= 2, "{usage}");

    // Nothing left behind.
    c.wait_all_gone(Duration::from_secs(30)).await;
    eprintln!("the test took {:?}", started.elapsed());
}

/// True when a file under `dir` holds exactly `bytes`.
fn holds(dir: &Path, bytes: &[u8]) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            holds(&p, bytes)
        } else {
            std::fs::read(&p).is_ok_and(|b| b == bytes)
        }
    })
}
