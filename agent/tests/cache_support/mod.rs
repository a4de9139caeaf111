//! Shared helpers for the multi-process cache tests: a `file:` job store
//! with random files, `toil-agent stage` processes, and checks on the cache
//! directory.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use rand::RngCore;
use toil_jobstore::{JobStore, Locator};

// The helpers shared with the end-to-end tests live once, in the
// `toil-tests` library, and are included here by path: a dev-dependency on
// `toil-tests` would build kube, the AWS SDK and the Kubernetes emulator
// for the agent's tests, and tie the agent's tests to the whole workspace.
// These three files use only crates the agent already depends on.
#[path = "../../../tests/src/data.rs"]
pub mod data;
#[path = "../../../tests/src/procfs.rs"]
pub mod procfs;
#[path = "../../../tests/src/wait.rs"]
pub mod wait;

// Not every test file uses them.
#[allow(unused_imports)]
pub use wait::{wait_for, when};

/// The agent binary under test.
pub fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_toil-agent"))
}

/// A scratch area: a job store, a node cache and work directories.
pub struct Node {
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
    pub cache: PathBuf,
}

/// A file put in the job store.
#[derive(Clone, Debug)]
pub struct StoredFile {
    pub id: String,
    pub sha256: String,
    pub size: u64,
}

impl StoredFile {
    /// `--input` value placing it at `dest`.
    pub fn input(&self, dest: &str) -> String {
        format!("{}:{}:{dest}", self.id, self.sha256)
    }
}

impl Node {
    pub fn new() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("jobstore");
        let cache = dir.path().join("cache");
        let rt = runtime();
        rt.block_on(async {
            let js = JobStore::open(&Locator::File(store.clone())).await.unwrap();
            js.initialize().await.unwrap();
        });
        Node { dir, store, cache }
    }

    pub fn locator(&self) -> String {
        format!("file:{}", self.store.display())
    }

    pub fn work(&self, name: &str) -> PathBuf {
        self.dir.path().join("work").join(name)
    }

    /// Puts `size` random bytes in the job store under `id`.
    pub fn put_random(&self, id: &str, size: u64) -> StoredFile {
        let src = self.dir.path().join("src.tmp");
        let mut f = fs::File::create(&src).unwrap();
        let mut rng = rand::rng();
        let mut buf = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            rng.fill_bytes(&mut buf[..n]);
            f.write_all(&buf[..n]).unwrap();
            left -= n as u64;
        }
        drop(f);
        let locator = Locator::File(self.store.clone());
        let t = runtime().block_on(async {
            let js = JobStore::open(&locator).await.unwrap();
            js.put_file(id, &src).await.unwrap()
        });
        fs::remove_file(&src).unwrap();
        assert_eq!(t.size, size);
        StoredFile {
            id: id.to_string(),
            sha256: t.sha256,
            size,
        }
    }

    /// A `toil-agent stage` command on this node's store and cache.
    pub fn stage(&self, work: &str, inputs: &[String], extra: &[&str]) -> Command {
        let mut c = Command::new(agent_bin());
        c.arg("stage")
            .arg("--job-store")
            .arg(self.locator())
            .arg("--cache-dir")
            .arg(&self.cache)
            .arg("--work-dir")
            .arg(self.work(work));
        for i in inputs {
            c.arg("--input").arg(i);
        }
        c.args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Runs a stage command to completion; returns its summary.
    pub fn stage_ok(&self, work: &str, inputs: &[String], extra: &[&str]) -> serde_json::Value {
        let out = self.stage(work, inputs, extra).output().unwrap();
        assert!(
            out.status.success(),
            "stage failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        summary(&out.stdout)
    }

    /// Sizes of the finished entries in the cache, by entry file name.
    pub fn entries(&self) -> Vec<(String, u64)> {
        let mut v: Vec<_> = match fs::read_dir(self.cache.join("entries")) {
            Ok(rd) => rd
                .map(|e| {
                    let e = e.unwrap();
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        e.metadata().unwrap().len(),
                    )
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        v.sort();
        v
    }

    /// Names in the cache's tmp directory.
    pub fn tmp_files(&self) -> Vec<(String, u64)> {
        match fs::read_dir(self.cache.join("tmp")) {
            Ok(rd) => rd
                .map(|e| {
                    let e = e.unwrap();
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        e.metadata().map(|m| m.len()).unwrap_or(0),
                    )
                })
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The entry path for a stored file, as the cache names it.
    pub fn entry_path(&self, f: &StoredFile) -> PathBuf {
        toil_agent::cache::NodeCache::entry_path_in(&self.cache, &f.id, &f.sha256)
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Parses the first line of a stage command's stdout.
pub fn summary(stdout: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(stdout);
    let line = text.lines().next().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad summary {text:?}: {e}"))
}

/// Reads the summary line of a running child without waiting for it to exit.
pub fn read_summary_line(child: &mut Child) -> serde_json::Value {
    let stdout = child.stdout.as_mut().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad summary {line:?}: {e}"))
}

pub fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

/// The SHA-256 of a file, panicking (with the path) if it cannot be read.
pub fn sha256_file(p: &Path) -> String {
    data::sha256_file(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// Bytes a live process has read through read(2)-like calls, from the
/// kernel's own accounting (`/proc/PID/io`, `rchar`).
pub fn rchar(pid: u32) -> u64 {
    let io = fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

pub fn u(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}"))
}
