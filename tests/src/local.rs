//! Running the real `toil-leader` (and through it real agents) in tests.
//!
//! A [`Sandbox`] is a scratch directory with its own job store, work
//! directory and output directory, so tests never share state. Leaders run
//! as child processes with their output captured to files, so a test can
//! watch output while the leader runs and still see everything on failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use toil_proto::v1::workflow_service_client::WorkflowServiceClient;
use tonic::transport::Channel;

use crate::harness;

/// A scratch directory for one test.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

/// What `state/leader.json` says about a running leader.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct LeaderInfo {
    /// gRPC address.
    pub address: String,
    /// Bearer token for WorkflowService.
    pub client_token: String,
    /// The leader's pid.
    pub pid: u32,
    /// Its epoch.
    pub epoch: u64,
}

impl Sandbox {
    /// A new, empty sandbox.
    pub fn new(prefix: &str) -> Sandbox {
        Sandbox {
            dir: harness::scratch(prefix),
        }
    }

    /// Its directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `contents` to `rel` (creating directories) and returns the path.
    pub fn write(&self, rel: &str, contents: &str) -> PathBuf {
        let p = self.path().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir {parent:?}: {e}"));
        }
        std::fs::write(&p, contents).unwrap_or_else(|e| panic!("write {p:?}: {e}"));
        p
    }

    /// The job store directory (`file:` store).
    pub fn job_store(&self) -> PathBuf {
        self.path().join("js")
    }

    /// The agents' work directory.
    pub fn work_dir(&self) -> PathBuf {
        self.path().join("work")
    }

    /// The output directory.
    pub fn output_dir(&self) -> PathBuf {
        self.path().join("out")
    }

    /// A `toil-leader` command running in the sandbox. `run` commands get
    /// the sandbox's job store, work and output directories unless `args`
    /// already name them.
    pub fn leader(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(harness::bin("toil-leader"));
        cmd.current_dir(self.path())
            .env("TOIL_WORKDIR", self.work_dir())
            .env("TOIL_AGENT_BINARY", harness::bin("toil-agent"))
            .env_remove("TOIL_JOBSTORE")
            .env_remove("RUST_LOG")
            .args(args);
        if args.first() == Some(&"run") {
            if !args.iter().any(|a| *a == "--jobStore") {
                cmd.arg("--jobStore").arg(self.job_store());
            }
            if !args.iter().any(|a| *a == "--outputDir") {
                cmd.arg("--outputDir").arg(self.output_dir());
            }
        }
        cmd
    }

    /// Runs a `toil-leader` command to the end (at most `timeout`).
    pub fn run(&self, args: &[&str], timeout: Duration) -> Finished {
        self.spawn(self.leader(args), "leader").wait(timeout)
    }

    /// Starts a command with its output captured under the sandbox.
    pub fn spawn(&self, mut cmd: Command, name: &str) -> Running {
        let n = std::fs::read_dir(self.path()).map_or(0, |d| d.count());
        let out = self.path().join(format!("{name}-{n}.stdout"));
        let err = self.path().join(format!("{name}-{n}.stderr"));
        let open = |p: &Path| std::fs::File::create(p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
        cmd.stdin(Stdio::null())
            .stdout(open(&out))
            .stderr(open(&err));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        Running {
            child: Some(child),
            stdout: out,
            stderr: err,
        }
    }

    /// Waits for the leader serving this sandbox's job store to publish its
    /// address, and returns it.
    pub fn leader_info(&self, timeout: Duration) -> LeaderInfo {
        let path = self.job_store().join("state/leader.json");
        wait_for(timeout, "the leader to publish state/leader.json", || {
            std::fs::read(&path)
                .ok()
                .and_then(|d| serde_json::from_slice(&d).ok())
        })
    }
}

/// A spawned process whose output goes to files.
pub struct Running {
    child: Option<Child>,
    /// Where its stdout goes.
    pub stdout: PathBuf,
    /// Where its stderr goes.
    pub stderr: PathBuf,
}

/// A finished process.
#[derive(Debug)]
pub struct Finished {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

impl Finished {
    /// The exit code (-1 when killed by a signal).
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    /// Panics with the output unless the exit code is `code`.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            code,
            "unexpected exit code\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

impl Running {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Its stdout so far.
    pub fn stdout_now(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Its stderr so far.
    pub fn stderr_now(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Sends a signal.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), sig);
    }

    /// Waits for it to exit (kills it and panics with its output after
    /// `timeout`).
    pub fn wait(mut self, timeout: Duration) -> Finished {
        let start = Instant::now();
        let Some(mut child) = self.child.take() else {
            panic!("process already waited for");
        };
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    return Finished {
                        status,
                        stdout: std::fs::read_to_string(&self.stdout).unwrap_or_default(),
                        stderr: std::fs::read_to_string(&self.stderr).unwrap_or_default(),
                    };
                }
                Ok(None) if start.elapsed() < timeout => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "process did not exit within {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                        std::fs::read_to_string(&self.stdout).unwrap_or_default(),
                        std::fs::read_to_string(&self.stderr).unwrap_or_default()
                    );
                }
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `f` until it returns `Some`, panicking after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Adds the bearer token to every call.
#[derive(Clone)]
pub struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// A WorkflowService client.
pub type Client =
    WorkflowServiceClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

/// A WorkflowService client authenticated with `token`.
pub async fn client(address: &str, token: &str) -> Client {
    let channel = Channel::from_shared(address.to_string())
        .unwrap_or_else(|e| panic!("bad address {address}: {e}"))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connecting to {address}: {e}"));
    let value = format!("Bearer {token}")
        .parse()
        .unwrap_or_else(|e| panic!("bad token: {e}"));
    WorkflowServiceClient::with_interceptor(channel, Bearer(value))
}
