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
use crate::procfs;
use crate::wait::wait_for;

/// A scratch directory for one test.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

/// What `state/leader.json` says about a running leader, plus the client
/// token, read from the file `token_file` names (the token is not in the
/// job store).
#[derive(Clone, Debug, serde::Deserialize)]
pub struct LeaderInfo {
    /// gRPC target, `HOST:PORT`, served with TLS.
    pub address: String,
    /// The same as a URL, `https://HOST:PORT`.
    pub url: String,
    /// The leader's certificate, PEM.
    pub cert_pem: String,
    /// Its SHA-256 fingerprint, hex.
    pub cert_sha256: String,
    /// The leader's Unix socket, `unix:PATH`.
    pub socket: String,
    /// Where the client token is, on the leader's machine.
    pub token_file: String,
    /// SHA-256 of the client token, hex.
    pub client_token_sha256: String,
    /// Bearer token for WorkflowService, read from `token_file` (never in
    /// `leader.json`).
    #[serde(skip)]
    pub client_token: String,
    /// The leader's pid.
    pub pid: u32,
    /// Its epoch.
    pub epoch: u64,
}

impl LeaderInfo {
    /// Parses `leader.json` and reads the client token from the file it
    /// names, checking it against the stored verifier.
    pub fn parse(data: &[u8]) -> Result<LeaderInfo, String> {
        let mut info: LeaderInfo = serde_json::from_slice(data).map_err(|e| e.to_string())?;
        let token = std::fs::read_to_string(&info.token_file)
            .map_err(|e| format!("{}: {e}", info.token_file))?;
        info.client_token = token.trim().to_string();
        let verifier = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            info.client_token.as_bytes(),
        ));
        if verifier != info.client_token_sha256 {
            return Err("the token file does not match client_token_sha256 (yet)".into());
        }
        Ok(info)
    }

    /// A channel to the leader over TLS, trusting its certificate as a
    /// root and checking the address's name in it, as `grpcurl -cacert`
    /// does.
    pub async fn channel(&self) -> Channel {
        tls_channel(&self.url, &self.cert_pem)
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.url))
    }
}

/// Connects to `url` (`https://HOST:PORT`) trusting only `cert_pem`, with
/// the ordinary name check against the URL's host.
pub async fn tls_channel(url: &str, cert_pem: &str) -> Result<Channel, String> {
    use rustls::pki_types::pem::PemObject;
    let cert = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| format!("certificate: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).map_err(|e| format!("root: {e}"))?;
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let config = std::sync::Arc::new(config);
    let authority = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("{url} is not https://"))?
        .trim_end_matches('/')
        .to_string();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or("").to_string(),
        None => authority
            .rsplit_once(':')
            .map_or(authority.as_str(), |(h, _)| h)
            .to_string(),
    };
    let name = rustls::pki_types::ServerName::try_from(host).map_err(|e| e.to_string())?;
    let connector = tower::service_fn(move |_: tonic::transport::Uri| {
        let config = config.clone();
        let authority = authority.clone();
        let name = name.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(&authority).await?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| e.to_string())?
        .connect_with_connector(connector)
        .await
        .map_err(|e| {
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            msg
        })
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
            .env("TOIL_STATE_DIR", self.state_dir())
            .env_remove("TOIL_CLIENT_TOKEN")
            .env("TOIL_AGENT_BINARY", harness::bin("toil-agent"))
            .env_remove("TOIL_JOBSTORE")
            .env_remove("RUST_LOG")
            .args(args);
        if args.first() == Some(&"run") {
            if !args.contains(&"--jobStore") {
                cmd.arg("--jobStore").arg(self.job_store());
            }
            if !args.contains(&"--outputDir") {
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

    /// Where leaders of this sandbox keep their client token and socket
    /// (`TOIL_STATE_DIR`).
    pub fn state_dir(&self) -> PathBuf {
        self.path().join("state")
    }

    /// Waits for the leader serving this sandbox's job store to publish its
    /// address, and returns it with the client token from its token file.
    pub fn leader_info(&self, timeout: Duration) -> LeaderInfo {
        let path = self.job_store().join("state/leader.json");
        wait_for("the leader to publish state/leader.json", timeout, || {
            let data = std::fs::read(&path).map_err(|e| e.to_string())?;
            LeaderInfo::parse(&data)
        })
    }

    /// Pids of the live agents working for this sandbox, whoever their
    /// parent is now: an agent whose leader was killed is re-parented, but
    /// keeps the sandbox's work directory in its environment.
    pub fn live_agents(&self) -> Vec<u32> {
        let entry = format!("TOIL_WORKDIR={}", self.work_dir().display());
        procfs::processes()
            .into_iter()
            .filter(|(pid, comm, _)| comm == "toil-agent" && procfs::has_env(*pid, &entry))
            .map(|(pid, _, _)| pid)
            .collect()
    }

    /// Waits until no agent works for this sandbox any more: after a leader
    /// is killed, its agents give up once their lease runs out, and until
    /// then one may still finish (and record) its job.
    pub fn wait_agents_gone(&self, timeout: Duration) {
        wait_for("the sandbox's agents to exit", timeout, || {
            let live = self.live_agents();
            if live.is_empty() { Ok(()) } else { Err(live) }
        });
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

/// A WorkflowService client of `info`'s leader (over TLS), authenticated
/// with `token`.
pub async fn client(info: &LeaderInfo, token: &str) -> Client {
    let channel = info.channel().await;
    let value = format!("Bearer {token}")
        .parse()
        .unwrap_or_else(|e| panic!("bad token: {e}"));
    WorkflowServiceClient::with_interceptor(channel, Bearer(value))
}

// === S3 job stores and memory measurement ===

impl Sandbox {
    /// Like [`Sandbox::leader_info`] for an `aws:REGION:NAME` job store on
    /// `moto`: waits for the leader to publish `state/leader.json` in the
    /// bucket `NAME--toil`.
    pub fn leader_info_aws(
        &self,
        moto: &crate::moto::Moto,
        name: &str,
        timeout: Duration,
    ) -> LeaderInfo {
        let bucket = format!("{name}{}", toil_jobstore::locator::BUCKET_SUFFIX);
        wait_for("the leader to publish state/leader.json", timeout, || {
            let data = moto
                .get_object(&bucket, "state/leader.json")
                .map_err(|e| format!("{e:#}"))?
                .ok_or("no state/leader.json in the bucket yet")?;
            LeaderInfo::parse(&data)
        })
    }
}

impl Running {
    /// Like [`Running::wait`], also returning the largest peak resident set
    /// size, in KiB, of this process and of every process it waited for
    /// (for a leader: its agents and, through them, their jobs), as the
    /// kernel reports it to `wait4(2)` at exit. See [`wait_with_max_rss`].
    pub fn wait_with_max_rss(mut self, timeout: Duration) -> (Finished, u64) {
        let Some(child) = self.child.take() else {
            panic!("process already waited for");
        };
        match wait_with_max_rss(child, timeout) {
            Ok((status, max_rss_kb)) => (
                Finished {
                    status,
                    stdout: self.stdout_now(),
                    stderr: self.stderr_now(),
                },
                max_rss_kb,
            ),
            Err(child) => {
                // Dropping `self` kills it.
                self.child = Some(child);
                panic!(
                    "process did not exit within {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    self.stdout_now(),
                    self.stderr_now()
                );
            }
        }
    }
}

/// Waits up to `timeout` for `child` to exit, reaping it with `wait4(2)`,
/// and returns its exit status and `ru_maxrss` in KiB: the largest peak RSS
/// of the child and of every descendant it reaped, as the kernel records
/// them at exit. Gives the child back if it is still running at `timeout`.
pub fn wait_with_max_rss(child: Child, timeout: Duration) -> Result<(ExitStatus, u64), Child> {
    use std::os::unix::process::ExitStatusExt;
    let start = Instant::now();
    let pid = child.id() as libc::pid_t;
    loop {
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value to be overwritten.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers to locals; `pid` is our own child, never
        // reaped through std (we own `child` and do not wait on it).
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            return Ok((ExitStatus::from_raw(status), usage.ru_maxrss.max(0) as u64));
        }
        if r < 0 || start.elapsed() > timeout {
            return Err(child);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Peak resident set sizes (`VmHWM`) of a process and of its direct
/// children (a leader and its local agents), sampled from `/proc` by a
/// thread until [`PeakSampler::stop`].
///
/// `VmHWM` is the kernel's own high-water mark, so a sample taken any time
/// after a peak sees it; only growth in a process's last sampling interval
/// before it exits can be missed. [`Running::wait_with_max_rss`] gives the
/// kernel's own record at exit of the largest of them, to check against.
pub struct PeakSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Peaks>,
}

/// What a [`PeakSampler`] saw.
#[derive(Clone, Debug, Default)]
pub struct Peaks {
    /// The root process's `VmHWM`, in KiB.
    pub root_kb: u64,
    /// Each child's last `VmHWM`, in KiB, by pid, with its command name.
    pub children: std::collections::BTreeMap<u32, (String, u64)>,
    /// Sampling rounds done.
    pub rounds: u64,
}

impl Peaks {
    /// The largest `VmHWM` among children named `comm` (0 if none seen).
    pub fn max_child_kb(&self, comm: &str) -> u64 {
        self.children
            .values()
            .filter(|(c, _)| c == comm)
            .map(|(_, kb)| *kb)
            .max()
            .unwrap_or(0)
    }

    /// How many children named `comm` were seen.
    pub fn count(&self, comm: &str) -> usize {
        self.children.values().filter(|(c, _)| c == comm).count()
    }
}

impl PeakSampler {
    /// Starts sampling `root` and its children every `every`.
    pub fn start(root: u32, every: Duration) -> PeakSampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peaks = Peaks::default();
            loop {
                // Read the flag first so one last round follows a stop.
                let last = flag.load(std::sync::atomic::Ordering::Relaxed);
                if let Some(kb) = procfs::vm_hwm_kb(root) {
                    peaks.root_kb = peaks.root_kb.max(kb);
                }
                for (pid, comm) in procfs::children_of(root) {
                    if let Some(kb) = procfs::vm_hwm_kb(pid) {
                        let e = peaks.children.entry(pid).or_insert((comm, 0));
                        e.1 = e.1.max(kb);
                    }
                }
                peaks.rounds += 1;
                if last {
                    return peaks;
                }
                std::thread::sleep(every);
            }
        });
        PeakSampler { stop, thread }
    }

    /// Stops sampling and returns what was seen.
    pub fn stop(self) -> Peaks {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// The crash-test workflow `chain.yaml`: a -> b -> c passing files along,
/// where b waits for a gate file. Each job appends its name to a run log
/// when it completes (b also logs `b-start`), so the log shows what ran to
/// completion, and how often. Returns the run log's and the gate's paths.
pub fn chain_workflow(sb: &Sandbox) -> (PathBuf, PathBuf) {
    let runlog = sb.path().join("runlog");
    let gate = sb.path().join("gate");
    sb.write(
        "chain.yaml",
        &format!(
            r#"
defaults: {{cores: 0.1, memory: 32Mi}}
jobs:
  a:
    command: "echo A > a.txt && echo a >> {log}"
    outputs: {{a: a.txt}}
  b:
    inputs: [{{from: a.a}}]
    command: |
      echo b-start >> {log}
      while [ ! -e {gate} ]; do sleep 0.05; done
      cat a.txt > b.txt && echo B >> b.txt && echo b >> {log}
    outputs: {{b: b.txt}}
  c:
    inputs: [{{from: b.b}}]
    command: "cat b.txt > c.txt && echo C >> c.txt && echo c >> {log}"
    outputs: {{c: c.txt}}
outputs:
  final: c.c
"#,
            log = runlog.display(),
            gate = gate.display()
        ),
    );
    (runlog, gate)
}

/// The lines of a run log (empty if it does not exist yet).
pub fn log_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// How many lines of `log` are exactly `what`.
pub fn count_lines(log: &[String], what: &str) -> usize {
    log.iter().filter(|l| *l == what).count()
}
