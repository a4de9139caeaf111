//! A real S3 protocol server for tests: moto's `moto_server`, from the test
//! virtualenv (`scripts/setup-test-env.sh`), on 127.0.0.1.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use toil_tests::moto::Moto;
//! let moto = Moto::start()?;            // owned: killed when dropped
//! let opts = moto.s3_options();         // for JobStore::open_with in this process
//! let env = moto.env();                 // for a child process using the AWS chain
//! moto.reset()?;                        // forget every bucket
//! # Ok(()) }
//! ```
//!
//! [`Moto::shared`] gives one server per test process; tests sharing it use
//! fresh bucket names ([`unique_name`]) instead of resetting it. Servers are
//! started from a helper thread that lives as long as the process and with
//! `PR_SET_PDEATHSIG`, so even a test process killed outright leaves no
//! `moto_server` behind. Nothing here touches the internet.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use toil_jobstore::s3::{S3Options, StaticCredentials};

use crate::harness;

/// Region the fixed test configuration uses.
pub const REGION: &str = "us-east-1";
/// Access key id moto accepts (any works while moto does not enforce IAM).
pub const ACCESS_KEY_ID: &str = "testing";
/// Secret access key to go with it.
pub const SECRET_ACCESS_KEY: &str = "testing";

/// A running `moto_server`.
#[derive(Debug)]
pub struct Moto {
    /// The server process, killed on drop.
    child: Mutex<Child>,
    /// Its port on 127.0.0.1.
    port: u16,
    /// `http://127.0.0.1:PORT`.
    endpoint: String,
    /// Where its stdout and stderr go (one line per request), for debugging.
    log: PathBuf,
}

impl Moto {
    /// Starts a server on a free port and waits until it answers.
    pub fn start() -> anyhow::Result<Moto> {
        Moto::start_with_env(&[])
    }

    /// Like [`Moto::start`], with extra environment for the server, such as
    /// `INITIAL_NO_AUTH_ACTION_COUNT` (moto enforces IAM after that many
    /// requests).
    pub fn start_with_env(env: &[(&str, &str)]) -> anyhow::Result<Moto> {
        let exe = harness::venv_bin("moto_server");
        let mut last_err = None;
        // A free port can be taken between probing and binding: try again.
        for _ in 0..3 {
            let port = free_port()?;
            match Moto::start_on(&exe, port, env) {
                Ok(m) => return Ok(m),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("moto_server did not start")))
    }

    fn start_on(exe: &Path, port: u16, env: &[(&str, &str)]) -> anyhow::Result<Moto> {
        let dir = harness::repo_root().join("target/test-scratch");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let log = dir.join(format!("moto-{port}.log"));
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(exe);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = spawn_tied(cmd).with_context(|| format!("starting {}", exe.display()))?;
        let moto = Moto {
            child: Mutex::new(child),
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            log,
        };
        moto.wait_ready(Duration::from_secs(60))?;
        Ok(moto)
    }

    /// One server for the whole test process, started on first use.
    ///
    /// # Panics
    /// If the server cannot be started (the venv is missing, say).
    pub fn shared() -> &'static Moto {
        static SHARED: OnceLock<Moto> = OnceLock::new();
        SHARED.get_or_init(|| {
            Moto::start().unwrap_or_else(|e| panic!("cannot start moto_server: {e:#}"))
        })
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The endpoint URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The server's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Settings for `JobStore::open_with` in this process: this endpoint and
    /// the fixed test credentials (the process environment is not used).
    pub fn s3_options(&self) -> S3Options {
        S3Options {
            endpoint_url: Some(self.endpoint.clone()),
            credentials: Some(StaticCredentials {
                access_key_id: ACCESS_KEY_ID.into(),
                secret_access_key: SECRET_ACCESS_KEY.into(),
            }),
            ..S3Options::default()
        }
    }

    /// Environment for a child process that opens `aws:` stores through the
    /// standard AWS chain: the endpoint, fixed credentials, the region, and
    /// instance metadata turned off so nothing leaves the machine.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
            ("AWS_REGION", REGION),
            ("AWS_DEFAULT_REGION", REGION),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// A plain `aws-sdk-s3` client for this server (path-style, fixed
    /// credentials, [`REGION`]), for tests that set S3 up by hand and for
    /// baselines in benchmarks.
    pub async fn s3_client(&self) -> aws_sdk_s3::Client {
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .endpoint_url(&self.endpoint)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                ACCESS_KEY_ID,
                SECRET_ACCESS_KEY,
                None,
                None,
                "moto",
            ))
            .load()
            .await;
        let conf = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// Forgets every bucket and object (`POST /moto-api/reset`).
    pub fn reset(&self) -> anyhow::Result<()> {
        let (status, body) = self.request("POST", "/moto-api/reset")?;
        if status != 200 {
            bail!("moto reset answered {status}: {body}");
        }
        Ok(())
    }

    /// True while the process runs.
    pub fn is_running(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        matches!(child.try_wait(), Ok(None))
    }

    fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.is_running() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                bail!(
                    "moto_server on port {} exited during start-up; its log ({}):\n{log}",
                    self.port,
                    self.log.display()
                );
            }
            if let Ok((200, _)) = self.request("GET", "/moto-api/data.json") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "moto_server on port {} did not answer within {timeout:?}; see {}",
                    self.port,
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A minimal HTTP/1.1 request with an empty body; returns the status and
    /// body.
    fn request(&self, method: &str, path: &str) -> anyhow::Result<(u16, String)> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)?;
        let text = String::from_utf8_lossy(&resp);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("malformed HTTP answer from moto_server")?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A job-store name no other test uses: `PREFIX-` and 12 random hex digits
/// (a valid `aws:REGION:NAME` name when `prefix` is short and lowercase).
pub fn unique_name(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..12])
}

fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `cmd` from a thread that lives as long as the process, with
/// `PR_SET_PDEATHSIG` set to `SIGKILL`: the kernel kills the child when that
/// thread (so the process) ends, even if no destructor runs.
fn spawn_tied(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        let spawned = std::thread::Builder::new()
            .name("moto-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    use std::os::unix::process::CommandExt;
                    // SAFETY: the closure runs between fork and exec and only
                    // calls prctl(2), which is async-signal-safe.
                    unsafe {
                        cmd.pre_exec(|| {
                            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                                return Err(std::io::Error::last_os_error());
                            }
                            Ok(())
                        });
                    }
                    let _ = reply.send(cmd.spawn());
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the moto spawner thread: {e}");
        }
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    tx.lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply_tx))
        .map_err(|_| std::io::Error::other("the moto spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("the moto spawner thread is gone"))?
}
