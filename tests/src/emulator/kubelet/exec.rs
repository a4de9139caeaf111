//! `pods/exec` on the kubelet side: a new process in a running container's
//! context, as the container runtime starts one.
//!
//! The context is taken from the container's main process through `/proc`:
//! its environment (`/proc/PID/environ`), its mount and network namespaces
//! (`/proc/PID/ns/{mnt,net}`, joined with `setns` where they differ from
//! the emulator's), its root (`/proc/PID/root`, entered with `chroot` where
//! it differs) and its working directory (`/proc/PID/cwd`). With `tty` the
//! process gets a pseudo-terminal as its controlling terminal (resizable);
//! otherwise pipes. The process joins the container's memory cgroup (its
//! memory counts against the container's limit, and it dies with the
//! container). Not carried over: the container's capability limits.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncRead, AsyncWrite};

use super::sandbox::MemoryMode;

/// What to run and which streams to connect.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecRequest {
    /// The command (`command=` query parameters, in order).
    pub argv: Vec<String>,
    /// Give the process a terminal.
    pub tty: bool,
    /// Connect standard input.
    pub stdin: bool,
    /// Connect standard output.
    pub stdout: bool,
    /// Connect standard error (never with `tty`: the terminal carries it).
    pub stderr: bool,
}

/// A boxed reader of the process's output.
pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
/// A boxed writer to the process's input.
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// A started exec process and its streams.
pub struct ExecProcess {
    /// Standard input (the terminal with `tty`), if requested.
    pub stdin: Option<Writer>,
    /// Standard output (the terminal with `tty`), if requested.
    pub stdout: Option<Reader>,
    /// Standard error, if requested and no `tty`.
    pub stderr: Option<Reader>,
    /// Resizes the terminal (with `tty`).
    pub resizer: Option<Resizer>,
    child: tokio::process::Child,
}

/// How an exec process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecExit {
    /// Exit code as the runtime reports it (128+signal when killed).
    pub code: i32,
}

/// The master side of an exec's terminal, to change its size.
pub struct Resizer(OwnedFd);

impl Resizer {
    /// Sets the terminal's size (`TIOCSWINSZ`; the process gets SIGWINCH).
    pub fn resize(&self, width: u16, height: u16) {
        let ws = libc::winsize {
            ws_row: height,
            ws_col: width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer; the fd is
        // the open master side of the terminal.
        unsafe {
            libc::ioctl(self.0.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

impl ExecProcess {
    /// The process id (its process group: it runs in a session of its own).
    pub fn pid(&self) -> Option<i32> {
        self.child.id().map(|p| p as i32)
    }

    /// Resizes the terminal (no-op without `tty`).
    pub fn resize(&self, width: u16, height: u16) {
        if let Some(r) = &self.resizer {
            r.resize(width, height);
        }
    }

    /// Sends a signal to the process's whole session (process group).
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Some(pid) = self.pid() {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), sig);
        }
    }

    /// Waits for the process to end.
    pub async fn wait(&mut self) -> ExecExit {
        let code = match self.child.wait().await {
            Ok(s) => match (s.code(), s.signal()) {
                (Some(c), _) => c,
                (None, Some(sig)) => 128 + sig,
                _ => 255,
            },
            Err(_) => 255,
        };
        ExecExit { code }
    }
}

/// The container's environment, read from its main process.
pub fn container_env(pid: i32) -> std::io::Result<Vec<(String, String)>> {
    let raw = std::fs::read(format!("/proc/{pid}/environ"))?;
    Ok(parse_environ(&raw))
}

/// Parses a NUL-separated `KEY=value` block.
pub fn parse_environ(raw: &[u8]) -> Vec<(String, String)> {
    raw.split(|b| *b == 0)
        .filter(|e| !e.is_empty())
        .filter_map(|e| {
            let s = String::from_utf8_lossy(e);
            let (k, v) = s.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

fn same_file(a: &str, b: &str) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

fn open_dir(path: &str) -> std::io::Result<OwnedFd> {
    let c = CString::new(path).map_err(std::io::Error::other)?;
    // SAFETY: a valid C string; the returned fd is owned below.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn open_file(path: &str) -> std::io::Result<OwnedFd> {
    Ok(OwnedFd::from(File::open(path)?))
}

/// The `cgroup.procs` file of the memory cgroup the kubelet made for the
/// container whose main process is `pid`, if it has one.
pub fn container_cgroup(mode: &MemoryMode, pid: i32) -> Option<PathBuf> {
    let (MemoryMode::CgroupV1(base) | MemoryMode::CgroupV2(base)) = mode else {
        return None;
    };
    let want = pid.to_string();
    std::fs::read_dir(base)
        .ok()?
        .flatten()
        .map(|e| e.path().join("cgroup.procs"))
        .find(|procs| {
            std::fs::read_to_string(procs).is_ok_and(|t| t.lines().any(|l| l.trim() == want))
        })
}

/// The file descriptors the child uses to enter the container.
struct Enter {
    cgroup: Option<OwnedFd>,
    net: Option<OwnedFd>,
    mnt: Option<OwnedFd>,
    root: Option<OwnedFd>,
    cwd: OwnedFd,
    tty: bool,
}

impl Enter {
    fn of(pid: i32, tty: bool, cgroup: Option<&Path>) -> std::io::Result<Self> {
        let p = |s: &str| format!("/proc/{pid}/{s}");
        let differs = |s: &str| !same_file(&p(s), &format!("/proc/self/{s}"));
        let net = if differs("ns/net") {
            Some(open_file(&p("ns/net"))?)
        } else {
            None
        };
        let mnt = if differs("ns/mnt") {
            Some(open_file(&p("ns/mnt"))?)
        } else {
            None
        };
        let root = if differs("root") {
            Some(open_dir(&p("root"))?)
        } else {
            None
        };
        let cgroup = match cgroup {
            Some(p) => Some(OwnedFd::from(
                std::fs::OpenOptions::new().write(true).open(p)?,
            )),
            None => None,
        };
        Ok(Self {
            cgroup,
            net,
            mnt,
            root,
            cwd: open_dir(&p("cwd"))?,
            tty,
        })
    }

    /// Runs in the child between fork and exec: only async-signal-safe
    /// calls on descriptors opened before the fork.
    fn run(&self) -> std::io::Result<()> {
        let err = std::io::Error::last_os_error;
        // SAFETY: plain syscalls on descriptors owned by `self`, alive for
        // the whole call.
        unsafe {
            if let Some(fd) = &self.cgroup {
                let mut buf = [0u8; 24];
                let n = write_decimal(&mut buf, libc::getpid() as u64);
                if libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), n) < 0 {
                    return Err(err());
                }
            }
            if libc::setsid() < 0 {
                return Err(err());
            }
            if self.tty && libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(err());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if let Some(fd) = &self.net
                && libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) != 0
            {
                return Err(err());
            }
            if let Some(fd) = &self.mnt
                && libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNS) != 0
            {
                return Err(err());
            }
            if let Some(fd) = &self.root {
                if libc::fchdir(fd.as_raw_fd()) != 0 {
                    return Err(err());
                }
                if libc::chroot(c".".as_ptr()) != 0 {
                    return Err(err());
                }
            }
            if libc::fchdir(self.cwd.as_raw_fd()) != 0 {
                return Err(err());
            }
        }
        Ok(())
    }
}

fn openpty() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut master: RawFd = -1;
    let mut slave: RawFd = -1;
    let ws = libc::winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: out-pointers to two ints; no name buffer; a valid winsize.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both were just opened by openpty and are owned by no one else.
    let (m, s) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for fd in [m.as_raw_fd(), s.as_raw_fd()] {
        // SAFETY: F_SETFD on an fd we own.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    Ok((m, s))
}

/// Why an exec could not start, worded like the container runtime.
pub fn start_error(argv0: &str, e: &std::io::Error) -> String {
    let what = if e.kind() == std::io::ErrorKind::NotFound {
        "executable file not found in $PATH".to_string()
    } else {
        e.to_string()
    };
    format!(
        "OCI runtime exec failed: exec failed: unable to start container process: exec: \"{argv0}\": {what}: unknown"
    )
}

/// Writes `n` in decimal into `buf`, returning the length (no allocation:
/// it runs between fork and exec).
fn write_decimal(buf: &mut [u8; 24], mut n: u64) -> usize {
    let mut len = 0;
    loop {
        buf[len] = b'0' + (n % 10) as u8;
        n /= 10;
        len += 1;
        if n == 0 {
            break;
        }
    }
    buf[..len].reverse();
    len
}

/// Starts `req` inside the container whose main process is `pid`, in its
/// memory cgroup (`cgroup`: its `cgroup.procs`) if it has one.
pub fn start(pid: i32, req: &ExecRequest, cgroup: Option<&Path>) -> Result<ExecProcess, String> {
    let Some(argv0) = req.argv.first() else {
        return Err("you must specify at least one command for the container".into());
    };
    let env = container_env(pid).map_err(|e| {
        format!("cannot read the container's environment (/proc/{pid}/environ): {e}")
    })?;
    let enter = Enter::of(pid, req.tty, cgroup)
        .map_err(|e| format!("cannot open the container's namespaces (/proc/{pid}): {e}"))?;
    let mut cmd = tokio::process::Command::new(argv0);
    cmd.args(&req.argv[1..])
        .env_clear()
        .envs(env.iter().cloned());
    if req.tty && !env.iter().any(|(k, _)| k == "TERM") {
        // The runtime sets TERM for a terminal exec.
        cmd.env("TERM", "xterm");
    }
    let mut pty = None;
    if req.tty {
        let (master, slave) = openpty().map_err(|e| format!("cannot open a terminal: {e}"))?;
        let slave = File::from(slave);
        let clone = |f: &File| {
            f.try_clone()
                .map_err(|e| format!("cannot open a terminal: {e}"))
        };
        cmd.stdin(Stdio::from(clone(&slave)?))
            .stdout(Stdio::from(clone(&slave)?))
            .stderr(Stdio::from(slave));
        pty = Some(master);
    } else {
        let pipe = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
        cmd.stdin(pipe(req.stdin))
            .stdout(pipe(req.stdout))
            .stderr(pipe(req.stderr));
    }
    // SAFETY: `Enter::run` only makes async-signal-safe calls on
    // descriptors opened before the fork.
    unsafe {
        cmd.pre_exec(move || enter.run());
    }
    let mut child = cmd.spawn().map_err(|e| start_error(argv0, &e))?;
    // Drop our copies of the terminal's slave side, so reading the master
    // ends when the process does.
    drop(cmd);
    let (stdin, stdout, stderr): (Option<Writer>, Option<Reader>, Option<Reader>) =
        if let Some(master) = &pty {
            let dup = || {
                master
                    .try_clone()
                    .map(File::from)
                    .map_err(|e| format!("cannot use the terminal: {e}"))
            };
            let stdin: Option<Writer> = if req.stdin {
                Some(Box::new(tokio::fs::File::from_std(dup()?)))
            } else {
                None
            };
            let stdout: Reader = Box::new(PtyReader(tokio::fs::File::from_std(dup()?)));
            (stdin, Some(stdout), None)
        } else {
            (
                child.stdin.take().map(|s| Box::new(s) as Writer),
                child.stdout.take().map(|s| Box::new(s) as Reader),
                child.stderr.take().map(|s| Box::new(s) as Reader),
            )
        };
    Ok(ExecProcess {
        stdin,
        stdout,
        stderr,
        resizer: pty.map(Resizer),
        child,
    })
}

/// The terminal's master side as a reader: `EIO` (every slave closed, the
/// process is gone) is the end of the output.
struct PtyReader(tokio::fs::File);

impl AsyncRead for PtyReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match std::pin::Pin::new(&mut self.0).poll_read(cx, buf) {
            std::task::Poll::Ready(Err(e)) if e.raw_os_error() == Some(libc::EIO) => {
                std::task::Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_environ_blocks() {
        let env = parse_environ(b"PATH=/bin:/usr/bin\0A=b=c\0\0NOEQUALS\0");
        assert_eq!(
            env,
            vec![
                ("PATH".to_string(), "/bin:/usr/bin".to_string()),
                ("A".to_string(), "b=c".to_string()),
            ]
        );
    }

    #[test]
    fn decimals_are_written_without_allocating() {
        let mut b = [0u8; 24];
        let n = write_decimal(&mut b, 40213);
        assert_eq!(&b[..n], b"40213");
        let n = write_decimal(&mut b, 0);
        assert_eq!(&b[..n], b"0");
    }

    #[test]
    fn start_errors_read_like_the_runtime() {
        let e = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(
            start_error("nope", &e),
            "OCI runtime exec failed: exec failed: unable to start container process: exec: \"nope\": executable file not found in $PATH: unknown"
        );
    }
}
