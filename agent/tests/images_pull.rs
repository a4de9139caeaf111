//! Image pulls across processes, proven from the stand-in engine's own log
//! (`tests/fixtures/bin/singularity`, first on PATH): one image is never
//! pulled twice at once, different images pull in parallel, a crashed pull
//! leaves no half image, a failed pull reports the engine's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

// Shared with the end-to-end tests, included by path (see
// cache_support/mod.rs for why not a dev-dependency).
#[allow(dead_code)]
#[path = "../../tests/src/procfs.rs"]
mod procfs;
#[allow(dead_code)]
#[path = "../../tests/src/wait.rs"]
mod wait;

use wait::{wait_for, when};

const T: Duration = Duration::from_secs(30);

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/bin")
}

struct Node {
    dir: tempfile::TempDir,
}

/// One engine process's pull, from the log.
#[derive(Debug, Default)]
struct Pull {
    image: String,
    start: f64,
    end: Option<f64>,
    failed: bool,
}

impl Node {
    fn new() -> Node {
        Node {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("sing-cache")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("engine.log")
    }

    fn pull(&self, image: &str, seconds: f64, extra: &[&str]) -> Command {
        let path = std::env::join_paths(std::iter::once(fixtures()).chain(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        )))
        .unwrap();
        let mut c = Command::new(env!("CARGO_BIN_EXE_toil-agent"));
        c.arg("pull-image")
            .arg(image)
            .arg("--cache-dir")
            .arg(self.cache())
            .args(extra)
            .env("PATH", path)
            .env("FAKE_SINGULARITY_LOG", self.log())
            .env("FAKE_SINGULARITY_PULL_SECONDS", seconds.to_string())
            .env_remove("TOIL_CONTAINER_ENGINE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Engine pulls by engine pid, from the log.
    fn pulls(&self) -> BTreeMap<u64, Pull> {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        let mut m: BTreeMap<u64, Pull> = BTreeMap::new();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let pid = v["pid"].as_u64().unwrap();
            let t = v["t"].as_f64().unwrap();
            let p = m.entry(pid).or_default();
            p.image = v["image"].as_str().unwrap().to_string();
            match v["event"].as_str().unwrap() {
                "start" => p.start = t,
                "end" => p.end = Some(t),
                "fail" => {
                    p.end = Some(t);
                    p.failed = true;
                }
                e => panic!("unknown event {e}"),
            }
        }
        m
    }

    fn tmp_files(&self) -> Vec<String> {
        std::fs::read_dir(self.cache().join("toil-images/tmp"))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {text:?} {}", String::from_utf8_lossy(&out.stderr)))
}

/// No two pulls of one image overlap in time; `open_end` closes pulls that
/// never logged an end (a killed engine).
fn assert_no_overlap_per_image(pulls: &BTreeMap<u64, Pull>, open_end: f64) {
    let mut by_image: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for p in pulls.values() {
        by_image
            .entry(&p.image)
            .or_default()
            .push((p.start, p.end.unwrap_or(open_end)));
    }
    for (image, mut spans) in by_image {
        spans.sort_by(|a, b| a.0.total_cmp(&b.0));
        for w in spans.windows(2) {
            assert!(
                w[0].1 <= w[1].0,
                "two pulls of {image} overlapped: {:?} and {:?}",
                w[0],
                w[1]
            );
        }
    }
}

#[test]
fn one_pull_per_image_and_different_images_in_parallel() {
    let node = Node::new();
    let images = [
        "docker://alpine:3.20",
        "docker://alpine:3.20",
        "docker://alpine:3.20",
        "docker://busybox:1.36",
        "docker://busybox:1.36",
    ];
    let children: Vec<Child> = images
        .iter()
        .map(|i| node.pull(i, 1.0, &[]).spawn().unwrap())
        .collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let mut paths: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut pulled: BTreeMap<&str, usize> = BTreeMap::new();
    for (o, image) in outs.iter().zip(images) {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v = json_of(o);
        assert_eq!(v["engine"], "apptainer", "apptainer comes first on PATH");
        paths
            .entry(image)
            .or_default()
            .push(v["path"].as_str().unwrap().to_string());
        if v["pulled"].as_bool().unwrap() {
            *pulled.entry(image).or_default() += 1;
        }
    }
    for (image, ps) in &paths {
        assert!(ps.iter().all(|p| p == &ps[0]), "{image}: {ps:?}");
        assert!(Path::new(&ps[0]).is_file());
    }
    assert_ne!(
        paths["docker://alpine:3.20"][0],
        paths["docker://busybox:1.36"][0]
    );
    assert_eq!(pulled["docker://alpine:3.20"], 1);
    assert_eq!(pulled["docker://busybox:1.36"], 1);

    // From the engine's log, across processes.
    let pulls = node.pulls();
    assert_eq!(pulls.len(), 2, "{pulls:?}");
    assert_no_overlap_per_image(&pulls, f64::MAX);
    let alpine = pulls.values().find(|p| p.image.contains("alpine")).unwrap();
    let busybox = pulls
        .values()
        .find(|p| p.image.contains("busybox"))
        .unwrap();
    let (a_end, b_end) = (alpine.end.unwrap(), busybox.end.unwrap());
    assert!(
        alpine.start < b_end && busybox.start < a_end,
        "different images did not pull in parallel: {alpine:?} {busybox:?}"
    );
    assert!(node.tmp_files().is_empty());
}

#[test]
fn killed_pull_leaves_no_half_image_and_never_overlaps() {
    let node = Node::new();
    let image = "docker://ubuntu:24.04";
    // The first pull would take a minute: it is killed long before, so
    // nothing depends on how fast this machine is.
    let mut a = node.pull(image, 60.0, &[]).spawn().unwrap();
    wait_for("the first pull to start", T, || {
        let pulls = node.pulls();
        when(pulls.values().any(|p| p.image == image), pulls)
    });
    wait_for("the pull to write to a temporary name", T, || {
        let tmp = node.tmp_files();
        when(!tmp.is_empty(), tmp)
    });
    let b = node.pull(image, 0.5, &[]).spawn().unwrap();
    // The second agent queues behind the image's lock before the first is
    // killed.
    wait_for("the second agent to wait on the image lock", T, || {
        when(procfs::waits_on_flock(b.id()), node.pulls())
    });
    let killed_at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    a.kill().unwrap(); // SIGKILL, mid-pull
    a.wait().unwrap();

    let out = b.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json_of(&out);
    assert_eq!(v["pulled"], true, "the next agent pulls again");
    let sif = PathBuf::from(v["path"].as_str().unwrap());
    // Header line, image line, 10 chunks of 64 KiB: a whole image.
    let want = 9 + format!("image: {image}\n").len() as u64 + 10 * 65536;
    assert_eq!(std::fs::metadata(&sif).unwrap().len(), want);
    assert!(node.tmp_files().is_empty(), "{:?}", node.tmp_files());

    let pulls = node.pulls();
    assert_eq!(pulls.len(), 2, "{pulls:?}");
    let (orphan_pid, orphan) = pulls.iter().find(|(_, p)| p.end.is_none()).unwrap();
    let (_, second) = pulls.iter().find(|(_, p)| p.end.is_some()).unwrap();
    // The waiting agent could not start its pull before the first one
    // (and its engine) were gone.
    assert!(
        second.start > killed_at,
        "the second pull started before the first agent was killed"
    );
    assert!(orphan.start < second.start);
    assert_no_overlap_per_image(&pulls, killed_at);
    // The killed agent's engine died with it (no orphan still writing).
    assert!(
        !procfs::alive(*orphan_pid as u32),
        "the orphaned engine still runs: {:?}",
        procfs::stat(*orphan_pid as u32)
    );
}

#[test]
fn failed_pull_reports_the_engine_message() {
    let node = Node::new();
    let out = node
        .pull("docker://missing/tool:1.0", 0.5, &[])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let v = json_of(&out);
    assert_eq!(v["cause"], "CAUSE_KIND_IMAGE_PULL");
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("FATAL") && msg.contains("requested access to the resource is denied"),
        "{msg}"
    );
    assert!(node.tmp_files().is_empty(), "{:?}", node.tmp_files());
    let sifs = std::fs::read_dir(node.cache().join("toil-images"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".sif")
        })
        .count();
    assert_eq!(sifs, 0, "a failed pull left an image");
    let pulls = node.pulls();
    assert!(pulls.values().all(|p| p.failed), "{pulls:?}");
}

#[test]
fn runs_a_command_in_the_image_with_the_work_dir_bound() {
    let node = Node::new();
    let wd = node.dir.path().join("work");
    std::fs::create_dir_all(&wd).unwrap();
    let wd_str = wd.to_str().unwrap();
    let out = node
        .pull(
            "alpine:3.20",
            0.2,
            &[
                "--container-engine",
                "singularity",
                "--work-dir",
                wd_str,
                "--",
                "sh",
                "-c",
                "pwd; echo hi > out.txt",
            ],
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json_of(&out);
    assert_eq!(v["engine"], "singularity");
    assert_eq!(v["exit_code"], 0, "{v}");
    assert_eq!(v["stdout"].as_str().unwrap().trim(), wd_str);
    assert_eq!(std::fs::read_to_string(wd.join("out.txt")).unwrap(), "hi\n");
    // A reference without a transport is pulled as docker://.
    let pulls = node.pulls();
    assert_eq!(
        pulls.values().map(|p| p.image.as_str()).collect::<Vec<_>>(),
        ["docker://alpine:3.20"]
    );
}
