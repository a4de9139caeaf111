//! Starting container processes without copying the emulator's page tables.
//!
//! `fork` copies the page tables of the whole process, and the emulator
//! runs inside large test and benchmark processes: at a thousand pods that
//! copying was about a quarter of the machine's CPU and 18 ms of wall time
//! per pod. Here a container starts the way `posix_spawn` starts a program:
//! `clone(CLONE_VM | CLONE_VFORK)` runs the child on the parent's memory
//! until it execs, so nothing is copied. What the child does before exec is
//! the sandbox's [`PreExec::run`], which makes only async-signal-safe calls
//! on data prepared beforehand and allocates nothing, as a child sharing the
//! parent's heap must.
//!
//! Every container starts on one long-lived thread ([`Spawner`]): a child's
//! parent-death signal fires when the *thread* that created it ends, and the
//! runtime's blocking threads end after ten idle seconds, which would kill
//! long-running pods.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc;

use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

use super::sandbox::PreExec;

/// The child's stack: the sandbox steps need little; debug builds' frames
/// are large, so be generous. It is mapped once, on the spawner thread.
const STACK: usize = 1 << 20;

/// `$PATH` when the container's environment has none (glibc's default).
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// What to run: argv, environment and the sandbox steps.
pub struct Program {
    argv: Vec<CString>,
    envp: Vec<CString>,
    /// Where to look for `argv[0]`, in `$PATH` order (execvp's search, done
    /// with the container's `$PATH`, inside its root filesystem).
    candidates: Vec<CString>,
    pre: PreExec,
}

impl Program {
    /// Prepares `argv` with the full environment `env`.
    pub fn new(argv: &[String], env: &[(String, String)], pre: PreExec) -> io::Result<Program> {
        let cstring = |s: String| {
            CString::new(s).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in argv or env")
            })
        };
        let Some(prog) = argv.first() else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty argv"));
        };
        let candidates = if prog.contains('/') {
            vec![cstring(prog.clone())?]
        } else {
            let path = env
                .iter()
                .rev()
                .find(|(k, _)| k == "PATH")
                .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
            path.split(':')
                .map(|d| if d.is_empty() { "." } else { d })
                .map(|d| cstring(format!("{}/{prog}", d.trim_end_matches('/'))))
                .collect::<io::Result<_>>()?
        };
        Ok(Program {
            argv: argv
                .iter()
                .cloned()
                .map(cstring)
                .collect::<io::Result<_>>()?,
            envp: env
                .iter()
                .map(|(k, v)| cstring(format!("{k}={v}")))
                .collect::<io::Result<_>>()?,
            candidates,
            pre,
        })
    }
}

/// A started process, with the read ends of its stdout and stderr.
pub struct Spawned {
    /// The process.
    pub child: Child,
    /// Its standard output.
    pub stdout: pipe::Receiver,
    /// Its standard error.
    pub stderr: pipe::Receiver,
}

/// A child process, killed and reaped if dropped before [`Child::wait`]
/// returned.
pub struct Child {
    pid: i32,
    pidfd: AsyncFd<OwnedFd>,
    reaped: bool,
}

impl Child {
    /// Its process id.
    pub fn id(&self) -> i32 {
        self.pid
    }

    /// Waits for it to end and reaps it.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            let mut ready = self.pidfd.readable().await?;
            let mut status = 0;
            // SAFETY: our own child, not yet reaped (the pid stays ours).
            let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if r == self.pid {
                self.reaped = true;
                return Ok(ExitStatus::from_raw(status));
            }
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            ready.clear_ready();
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        let pid = self.pid;
        // SAFETY: the pid is ours until reaped, so this cannot hit another
        // process.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let reap = move || {
            let mut status = 0;
            // SAFETY: as above.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn_blocking(reap)),
            Err(_) => drop(std::thread::spawn(reap)),
        }
    }
}

/// Starts `program`. Runs on the spawner thread; a few milliseconds at most.
pub async fn spawn(program: Program) -> io::Result<Spawned> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    Spawner::get()
        .send(Box::new(move |stack: &mut Stack| {
            let _ = tx.send(start(stack, &program));
        }))
        .map_err(|_| io::Error::other("the container spawner thread is gone"))?;
    let raw = rx
        .await
        .map_err(|_| io::Error::other("the container spawner thread is gone"))??;
    // SAFETY: an OwnedFd keeps its descriptor open and the same for as
    // long as the AsyncFd owns it.
    let pidfd = unsafe { AsyncFd::register(raw.pidfd) }.map_err(io::Error::from);
    let child = Child {
        pid: raw.pid,
        pidfd: match pidfd {
            Ok(fd) => fd,
            Err(e) => {
                // Not registered: kill and reap it now rather than leak it.
                // SAFETY: our child, not yet reaped.
                unsafe {
                    libc::kill(raw.pid, libc::SIGKILL);
                    libc::waitpid(raw.pid, std::ptr::null_mut(), 0);
                }
                return Err(e);
            }
        },
        reaped: false,
    };
    Ok(Spawned {
        child,
        stdout: pipe::Receiver::from_owned_fd(raw.stdout)?,
        stderr: pipe::Receiver::from_owned_fd(raw.stderr)?,
    })
}

type Job = Box<dyn FnOnce(&mut Stack) + Send>;

/// The one thread that starts containers (see the module's docs).
struct Spawner;

impl Spawner {
    fn get() -> &'static mpsc::Sender<Job> {
        static TX: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
        TX.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            let spawned = std::thread::Builder::new()
                .name("container-spawner".into())
                .spawn(move || {
                    let mut stack = Stack::default();
                    while let Ok(job) = rx.recv() {
                        job(&mut stack);
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the container spawner thread");
            }
            tx
        })
    }
}

/// The child's stack, mapped on first use and kept.
#[derive(Default)]
struct Stack {
    base: Option<std::ptr::NonNull<libc::c_void>>,
}

impl Stack {
    /// The top of the stack (stacks grow down), with a guard page below.
    fn top(&mut self) -> io::Result<*mut libc::c_void> {
        let base = match self.base {
            Some(b) => b,
            None => {
                // SAFETY: a fresh anonymous mapping, owned by this struct.
                let p = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        STACK,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                        -1,
                        0,
                    )
                };
                if p == libc::MAP_FAILED {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: the lowest page of the mapping made above.
                if unsafe { libc::mprotect(p, page_size(), libc::PROT_NONE) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                let b = std::ptr::NonNull::new(p).ok_or_else(|| io::Error::other("mmap"))?;
                self.base = Some(b);
                b
            }
        };
        // SAFETY: one past the end of the mapping, 16-byte aligned.
        Ok(unsafe { base.as_ptr().cast::<u8>().add(STACK) }.cast())
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096)
}

struct Raw {
    pid: i32,
    pidfd: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

/// What the child reads (prepared by the parent) and writes (why it did not
/// exec). The parent waits while the child runs (CLONE_VFORK), so the child
/// only writes `errno` and `failed`.
struct ChildArgs<'a> {
    program: &'a Program,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    errno: AtomicI32,
    failed: AtomicI32,
}

fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors, which we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors from pipe2.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn start(stack: &mut Stack, program: &Program) -> io::Result<Raw> {
    let top = stack.top()?;
    let (out_r, out_w) = pipe_pair()?;
    let (err_r, err_w) = pipe_pair()?;
    let null = std::fs::File::open("/dev/null")?;
    let nul_terminated = |v: &[CString]| {
        v.iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect::<Vec<_>>()
    };
    let args = ChildArgs {
        program,
        argv: nul_terminated(&program.argv),
        envp: nul_terminated(&program.envp),
        stdin: null.as_raw_fd(),
        stdout: out_w.as_raw_fd(),
        stderr: err_w.as_raw_fd(),
        errno: AtomicI32::new(0),
        failed: AtomicI32::new(0),
    };
    let mut pidfd: libc::c_int = -1;
    // SAFETY: signals stay blocked while the child runs on our memory, so
    // no handler of ours runs in it; `child_main` restores the defaults and
    // unblocks them just before exec. `args` and the stack outlive the
    // child's use of them: with CLONE_VFORK, clone returns only after the
    // child has exec'd or exited.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child_main,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
            std::ptr::from_ref(&args).cast_mut().cast(),
            &mut pidfd as *mut libc::c_int,
        );
        let e = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(e);
        }
        pid
    };
    // SAFETY: CLONE_PIDFD stored a new descriptor for the child.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    if args.failed.load(Ordering::SeqCst) != 0 {
        let mut status = 0;
        // SAFETY: our child, which has exited.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        return Err(io::Error::from_raw_os_error(
            args.errno.load(Ordering::SeqCst),
        ));
    }
    Ok(Raw {
        pid,
        pidfd,
        stdout: out_r,
        stderr: err_r,
    })
}

/// The child, on the parent's memory until exec: only async-signal-safe
/// calls, no allocation, no return.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `ChildArgs`, alive until we exec or
    // exit; everything below is a plain syscall wrapper.
    unsafe {
        let a = &*arg.cast::<ChildArgs>();
        fn fail(a: &ChildArgs, errno: i32) -> ! {
            a.errno.store(errno, Ordering::SeqCst);
            a.failed.store(1, Ordering::SeqCst);
            // SAFETY: ends the child without running anything of the parent's.
            unsafe { libc::_exit(127) }
        }
        // Handlers are the parent's code: back to the defaults (exec would
        // do it, but a signal may arrive before). SIGPIPE too, which the
        // Rust runtime ignores and children should not inherit.
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        for sig in 1..=libc::SIGRTMAX() {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut cur: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut cur) == 0
                && (sig == libc::SIGPIPE
                    || (cur.sa_sigaction != libc::SIG_DFL && cur.sa_sigaction != libc::SIG_IGN))
            {
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        for (from, to) in [(a.stdin, 0), (a.stdout, 1), (a.stderr, 2)] {
            if libc::dup2(from, to) < 0 {
                fail(a, *libc::__errno_location());
            }
        }
        if let Err(e) = a.program.pre.run() {
            fail(a, e.raw_os_error().unwrap_or(libc::EINVAL));
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        // execvp's search: the first candidate that exists; a permission
        // error is kept in case nothing else is found.
        let mut errno = libc::ENOENT;
        for path in &a.program.candidates {
            libc::execve(path.as_ptr(), a.argv.as_ptr(), a.envp.as_ptr());
            let e = *libc::__errno_location();
            match e {
                libc::ENOENT | libc::ENOTDIR => {}
                libc::EACCES => errno = e,
                _ => {
                    errno = e;
                    break;
                }
            }
        }
        fail(a, errno)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::emulator::kubelet::sandbox::Privileges;

    fn program(argv: &[&str], env: &[(&str, &str)]) -> io::Result<Program> {
        let pre = PreExec::new(
            &[],
            std::path::Path::new("/tmp"),
            None,
            Privileges::default(),
            None,
        )?;
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Program::new(&argv, &env, pre)
    }

    #[tokio::test]
    async fn runs_through_path_with_its_env_cwd_output_and_exit_code() {
        let p = program(
            &[
                "sh",
                "-c",
                "echo \"$GREETING $(pwd)\"; echo oops >&2; exit 3",
            ],
            &[("PATH", "/nonexistent:/usr/bin:/bin"), ("GREETING", "hi")],
        )
        .unwrap();
        let mut s = spawn(p).await.unwrap();
        let mut out = String::new();
        s.stdout.read_to_string(&mut out).await.unwrap();
        let mut err = String::new();
        s.stderr.read_to_string(&mut err).await.unwrap();
        let status = s.child.wait().await.unwrap();
        assert_eq!(out, "hi /tmp\n");
        assert_eq!(err, "oops\n");
        assert_eq!(status.code(), Some(3));
    }

    #[tokio::test]
    async fn a_missing_program_is_an_error_not_a_process() {
        let p = program(&["no-such-program-here"], &[("PATH", "/usr/bin:/bin")]).unwrap();
        let err = spawn(p).await.err().unwrap();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("not-executable");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        let p = program(&[plain.to_str().unwrap()], &[]).unwrap();
        let err = spawn(p).await.err().unwrap();
        assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
        // A sandbox step that fails is reported the same way.
        let pre = PreExec::new(
            &[],
            std::path::Path::new("/etc/hostname/below-a-file"),
            None,
            Privileges::default(),
            None,
        )
        .unwrap();
        let p = Program::new(&["true".into()], &[], pre).unwrap();
        let err = spawn(p).await.err().unwrap();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTDIR), "{err}");
    }

    #[tokio::test]
    async fn a_child_gets_default_signal_handling_and_is_killed_when_dropped() {
        // SIGPIPE is ignored in Rust programs; a container must not inherit
        // that (a `yes | head` in it would see EPIPE instead of ending), nor
        // any blocked signal.
        let p = program(
            &["/bin/grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"],
            &[],
        )
        .unwrap();
        let mut s = spawn(p).await.unwrap();
        let mut out = String::new();
        s.stdout.read_to_string(&mut out).await.unwrap();
        assert_eq!(s.child.wait().await.unwrap().code(), Some(0));
        let mask = |name: &str| {
            let line = out.lines().find(|l| l.starts_with(name)).unwrap();
            u64::from_str_radix(line.rsplit('\t').next().unwrap(), 16).unwrap()
        };
        assert_eq!(mask("SigBlk:"), 0, "{out}");
        assert_eq!(mask("SigIgn:") & (1 << (libc::SIGPIPE - 1)), 0, "{out}");
        let p = program(&["/bin/sleep", "600"], &[]).unwrap();
        let s = spawn(p).await.unwrap();
        let pid = s.child.id();
        drop(s);
        let gone = (0..200).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            // SAFETY: signal 0 only checks that the process exists.
            unsafe { libc::kill(pid, 0) != 0 }
        });
        assert!(gone, "the dropped child {pid} is still there");
    }
}
