//! Running a job's command: in its own process group, output streamed as it
//! is written, held to its time limit, killable, and measured (CPU time and
//! peak memory from the kernel's accounting via `wait4`).

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use toil_proto::v1::LogStream;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use crate::logstream::LogSink;

/// The most bytes read from a job's pipe at once: one log chunk. Small
/// enough that the bounded queues behind it stay small, large enough that
/// a flood costs few chunks.
pub const READ_SIZE: usize = 32 << 10;

/// How long a killed job gets between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(10);

/// Why the agent stopped a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KillReason {
    /// It ran past its time limit.
    Deadline(Duration),
    /// The leader asked (a cancel).
    Leader(String),
    /// The agent itself is stopping (SIGTERM, lost leader).
    Agent(String),
}

/// How a command ended.
#[derive(Debug)]
pub struct Execution {
    /// The wait status.
    pub status: ExitStatus,
    /// User plus system CPU time of the job's processes.
    pub cpu_time: Duration,
    /// Peak resident set size, in bytes.
    pub peak_rss: u64,
    /// When it started and ended.
    pub started: Instant,
    /// Wall-clock run time.
    pub wall: Duration,
    /// Set when the agent killed it.
    pub killed: Option<KillReason>,
}

/// Where a command's standard streams go instead of the defaults (no
/// input; output and errors to the job's log).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Redirects {
    /// Read standard input from this file.
    pub stdin: Option<std::path::PathBuf>,
    /// Write standard output to this file (created or truncated).
    pub stdout: Option<std::path::PathBuf>,
    /// Write standard error to this file (created or truncated).
    pub stderr: Option<std::path::PathBuf>,
}

/// Runs `cmd` to completion. `kill` delivers a reason to stop it early.
pub async fn run(
    cmd: Command,
    sink: LogSink,
    time_limit: Option<Duration>,
    kill: watch::Receiver<Option<KillReason>>,
) -> std::io::Result<Execution> {
    run_redirected(cmd, sink, time_limit, kill, &Redirects::default()).await
}

/// Like [`run`], with the standard streams sent where `redirects` says; a
/// stream redirected to a file does not reach the log.
pub async fn run_redirected(
    mut cmd: Command,
    sink: LogSink,
    time_limit: Option<Duration>,
    mut kill: watch::Receiver<Option<KillReason>>,
    redirects: &Redirects,
) -> std::io::Result<Execution> {
    let open_in = |p: &std::path::Path| {
        std::fs::File::open(p).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("opening {} for standard input: {e}", p.display()),
            )
        })
    };
    let create = |p: &std::path::Path| {
        std::fs::File::create(p).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("creating {} for output: {e}", p.display()),
            )
        })
    };
    let stdin = match &redirects.stdin {
        Some(p) => Stdio::from(open_in(p)?),
        None => Stdio::null(),
    };
    let stdout = match &redirects.stdout {
        Some(p) => Stdio::from(create(p)?),
        None => Stdio::piped(),
    };
    let stderr = match &redirects.stderr {
        Some(p) => Stdio::from(create(p)?),
        None => Stdio::piped(),
    };
    cmd.stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    let started = Instant::now();
    let mut child = cmd.spawn()?;
    let pid = child.id() as i32;
    let mut readers = Vec::new();
    if let Some(s) = child.stdout.take() {
        let pipe = tokio::process::ChildStdout::from_std(s);
        readers.push(tokio::spawn(pump(pipe, LogStream::Stdout, sink.clone())));
    }
    if let Some(s) = child.stderr.take() {
        let pipe = tokio::process::ChildStderr::from_std(s);
        readers.push(tokio::spawn(pump(pipe, LogStream::Stderr, sink.clone())));
    }
    // Reap with wait4 on a blocking thread: it returns the rusage of the
    // job and its waited-for descendants, which tokio's wait does not.
    let mut waiter = tokio::task::spawn_blocking(move || wait4(pid));
    // A limit too far away to represent is no limit (the leader bounds
    // time limits; this only keeps the agent from panicking on one).
    let deadline = time_limit.and_then(|t| tokio::time::Instant::now().checked_add(t));
    let mut killed: Option<KillReason> = kill.borrow().clone();
    let mut sigkill_at: Option<tokio::time::Instant> = None;
    if killed.is_some() {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
        sigkill_at = Some(tokio::time::Instant::now() + KILL_GRACE);
    }
    let waited = loop {
        let deadline_hit = async {
            match (killed.is_none(), deadline) {
                (true, Some(d)) => tokio::time::sleep_until(d).await,
                _ => std::future::pending().await,
            }
        };
        let force = async {
            match sigkill_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = &mut waiter => break r,
            _ = deadline_hit => {
                killed = time_limit.map(KillReason::Deadline);
                let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
                sigkill_at = Some(tokio::time::Instant::now() + KILL_GRACE);
            }
            changed = kill.changed(), if killed.is_none() => {
                if changed.is_ok()
                    && let Some(reason) = kill.borrow().clone()
                {
                    killed = Some(reason);
                    let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
                    sigkill_at = Some(tokio::time::Instant::now() + KILL_GRACE);
                }
            }
            _ = force => {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                sigkill_at = None;
            }
        }
    };
    let (status, usage) = waited.map_err(std::io::Error::other)??;
    // Background processes the job left in its group would keep writing
    // and hold its output pipes open: stop them.
    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    for r in readers {
        let _ = r.await;
    }
    Ok(Execution {
        status,
        cpu_time: usage.0,
        peak_rss: usage.1,
        started,
        wall: started.elapsed(),
        killed,
    })
}

/// Copies a pipe into the sink until it closes.
async fn pump<R: tokio::io::AsyncRead + Unpin>(
    pipe: std::io::Result<R>,
    stream: LogStream,
    sink: LogSink,
) {
    let Ok(mut pipe) = pipe else {
        return;
    };
    let mut buf = vec![0u8; READ_SIZE];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => sink.write(stream, Bytes::copy_from_slice(&buf[..n])).await,
        }
    }
}

/// Waits for `pid` and returns its status, CPU time and peak RSS.
fn wait4(pid: i32) -> std::io::Result<(ExitStatus, (Duration, u64))> {
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value to pass for filling in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `status` and `usage` are valid, writable, and live for the
        // call; `pid` is our own child, reaped only here.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    let cpu = tv(usage.ru_utime) + tv(usage.ru_stime);
    // Linux reports ru_maxrss in kilobytes.
    let rss = (usage.ru_maxrss.max(0) as u64) * 1024;
    Ok((ExitStatus::from_raw(status), (cpu, rss)))
}
