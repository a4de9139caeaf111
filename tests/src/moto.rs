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

/// One request from moto's log: `"METHOD /PATH?QUERY HTTP/1.1" STATUS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedRequest {
    /// `GET`, `HEAD`, `PUT`, `POST`, `DELETE`.
    pub method: String,
    /// The bucket (the first path segment; path-style addressing).
    pub bucket: String,
    /// The object key, percent-decoded; empty for bucket requests.
    pub key: String,
    /// The query string, without `?`.
    pub query: String,
    /// The HTTP status moto answered.
    pub status: u16,
    /// When moto logged it, just after answering (local time, whole
    /// seconds).
    pub logged_at: Option<chrono::NaiveDateTime>,
}

impl LoggedRequest {
    /// True for requests that change something (PUT, POST, DELETE).
    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "PUT" | "POST" | "DELETE")
    }
}

impl Moto {
    /// Every S3 request moto has logged so far, in order (its own
    /// `/moto-api/` calls left out). Moto logs each request once, after
    /// answering it, whichever process sent it: this is how tests and
    /// benchmarks count the requests of a leader and its agents together.
    ///
    /// Moto writes a line just after answering, so a request answered a
    /// moment ago may not be in the log yet: this first sends a request of
    /// its own and waits until moto has logged it.
    pub fn requests(&self) -> anyhow::Result<Vec<LoggedRequest>> {
        let fence = format!("moto-log-fence-{}", uuid::Uuid::new_v4().simple());
        self.request("HEAD", &format!("/{fence}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = std::fs::read_to_string(&self.log)
                .with_context(|| format!("reading {}", self.log.display()))?;
            if log.contains(&fence) {
                return Ok(log
                    .lines()
                    .filter_map(parse_log_line)
                    .filter(|r| !r.bucket.starts_with("moto-log-fence-"))
                    .collect());
            }
            if Instant::now() > deadline {
                bail!(
                    "moto did not log a request within 10 s ({})",
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Reads an object with the fixed test keys; `None` if there is no
    /// such key. Blocking (it runs its own small runtime): call it from
    /// synchronous tests, not from async code.
    pub fn get_object(&self, bucket: &str, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let client = self.s3_client().await;
            match client.get_object().bucket(bucket).key(key).send().await {
                Ok(out) => Ok(Some(out.body.collect().await?.into_bytes().to_vec())),
                Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => Ok(None),
                Err(e) => bail!(
                    "GET {bucket}/{key}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                ),
            }
        })
    }

    /// Creates an IAM user without any policy and returns its access key
    /// (with boto3 from the test venv). Only meaningful on a server started
    /// with `INITIAL_NO_AUTH_ACTION_COUNT`, which then refuses that user
    /// everything.
    pub fn iam_user_without_permissions(&self) -> anyhow::Result<StaticCredentials> {
        let script = r#"
import boto3, json, sys, uuid
iam = boto3.client("iam", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="testing", aws_secret_access_key="testing")
name = "nobody-" + uuid.uuid4().hex[:8]
iam.create_user(UserName=name)
k = iam.create_access_key(UserName=name)["AccessKey"]
print(json.dumps({"id": k["AccessKeyId"], "secret": k["SecretAccessKey"]}))
"#;
        let out = Command::new(harness::venv_bin("python"))
            .args(["-c", script, &self.endpoint])
            .output()
            .context("running python from the test venv")?;
        if !out.status.success() {
            bail!(
                "creating an IAM user failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("reading the IAM user's key")?;
        let field = |k: &str| {
            v[k].as_str()
                .map(str::to_string)
                .with_context(|| format!("no {k} in {v}"))
        };
        Ok(StaticCredentials {
            access_key_id: field("id")?,
            secret_access_key: field("secret")?,
        })
    }
}

/// Parses one line of moto's (werkzeug's) request log, which may carry
/// terminal colour codes.
fn parse_log_line(line: &str) -> Option<LoggedRequest> {
    let mut clean = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... m
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            clean.push(c);
        }
    }
    let start = clean.find('"')? + 1;
    let end = start + clean[start..].find('"')?;
    let mut parts = clean[start..end].split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?;
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let status = clean[end + 1..].split_whitespace().next()?.parse().ok()?;
    let logged_at = clean
        .split_once('[')
        .and_then(|(_, rest)| rest.split_once(']'))
        .and_then(|(t, _)| chrono::NaiveDateTime::parse_from_str(t, "%d/%b/%Y %H:%M:%S").ok());
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let path = path.strip_prefix('/')?;
    if path.starts_with("moto-api") {
        return None;
    }
    let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
    Some(LoggedRequest {
        method,
        bucket: bucket.to_string(),
        key: percent_decode(key),
        query: query.to_string(),
        status,
        logged_at,
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_parsed_with_or_without_colours() {
        let plain = r#"127.0.0.1 - - [28/Nov/2026 10:46:41] "PUT /a--toil/results/count%5B1%5D.1 HTTP/1.1" 200 -"#;
        let r = parse_log_line(plain).expect("parsed");
        assert_eq!(
            (
                r.method.as_str(),
                r.bucket.as_str(),
                r.key.as_str(),
                r.status
            ),
            ("PUT", "a--toil", "results/count[1].1", 200)
        );
        assert_eq!(
            r.logged_at.map(|t| t.to_string()).as_deref(),
            Some("2026-11-28 10:46:41")
        );
        let coloured = "127.0.0.1 - - [28/Nov/2026 10:46:41] \"\u{1b}[33mHEAD /a--toil/.toil-jobstore HTTP/1.1\u{1b}[0m\" 404 -";
        let r = parse_log_line(coloured).expect("parsed");
        assert_eq!(
            (r.method.as_str(), r.key.as_str(), r.status),
            ("HEAD", ".toil-jobstore", 404)
        );
        let list =
            r#"127.0.0.1 - - [x] "GET /a--toil/?list-type=2&prefix=state/journal/ HTTP/1.1" 200 -"#;
        let r = parse_log_line(list).expect("parsed");
        assert_eq!(
            (r.key.as_str(), r.query.as_str()),
            ("", "list-type=2&prefix=state/journal/")
        );
        assert!(parse_log_line(r#"x "GET /moto-api/data.json HTTP/1.1" 200 -"#).is_none());
        assert!(parse_log_line("Traceback (most recent call last):").is_none());
    }
}
