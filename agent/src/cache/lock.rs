//! `flock` locks on named lock files that may be deleted.
//!
//! A lock file can only be deleted safely by a process that holds it
//! exclusively, and every locker must check, once it holds the lock, that the
//! path still names the file it locked (same device and inode). Otherwise a
//! process that opened the file just before another deleted it would hold a
//! lock on an orphaned inode while a third process locks a fresh file under
//! the same name. With the check, the late locker notices and starts over.
//!
//! Lock files are created 0600 (and tightened to 0600 when an older agent
//! left them laxer) in directories the cache makes 0700, so another user
//! cannot even open them. A job running as the agent's own user can: `flock`
//! needs only an open descriptor. So the cache never waits without bound:
//! [`FileLock::acquire_within`] polls with `LOCK_NB` and a growing pause,
//! and past its deadline fails with a [`Timeout`] that names the lock file
//! and, when `/proc/locks` shows it, the process holding it.
//!
//! These calls sleep (when asked to) on the calling thread; async callers run
//! them in `spawn_blocking`. Locks are released when the holder drops them or
//! dies, so a killed agent never leaves a lock behind.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Whether a lock is shared or exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Shared,
    Exclusive,
}

/// The first pause between two tries of a lock that is held...
const FIRST_PAUSE: Duration = Duration::from_millis(1);
/// ...doubling up to this, which bounds how late a waiter notices that the
/// lock was freed (a waiter for a download notices the finished entry at
/// most this late).
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// A lock that stayed held past the deadline. Carried inside an
/// `io::Error` of kind `TimedOut`, so that every caller's error mapping sees
/// it; `CacheError::io` turns it into `CacheError::LockTimeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeout {
    /// The lock file.
    pub path: PathBuf,
    /// The deadline that passed: how long the caller waited (for a download
    /// lock, how long the holder went without writing a byte).
    pub waited: Duration,
    /// Who holds it, as `/proc/locks` and `/proc/PID/cmdline` show it
    /// (`process 4242 (sleep 9999)`); `None` when it is not visible from
    /// here (another pod's process in another PID namespace).
    pub holder: Option<String>,
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "node cache lock {} held for more than {} by {}; another job on this node may be holding it",
            self.path.display(),
            seconds(self.waited),
            self.holder.as_deref().unwrap_or("another process")
        )
    }
}

impl std::error::Error for Timeout {}

/// `120 s`, `0.3 s`.
pub(crate) fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

impl Timeout {
    /// The `Timeout` inside `e`, if it is one.
    pub fn of(e: &io::Error) -> Option<&Timeout> {
        if e.kind() != io::ErrorKind::TimedOut {
            return None;
        }
        e.get_ref()?.downcast_ref::<Timeout>()
    }
}

/// A held lock on a lock file. Dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct FileLock {
    /// The locked open file; the kernel releases the lock when it closes.
    _flock: Flock<File>,
    /// The lock file's path, for [`FileLock::remove`].
    path: PathBuf,
    /// How it is held; only exclusive holders may remove the file.
    mode: Mode,
}

impl FileLock {
    /// Waits for the lock on `path` (creating the file if needed), at most
    /// `timeout`; past it, an error of kind `TimedOut` carrying a
    /// [`Timeout`].
    pub fn acquire_within(path: &Path, mode: Mode, timeout: Duration) -> io::Result<FileLock> {
        FileLock::acquire_while_progressing(path, mode, timeout, || 0)
    }

    /// [`FileLock::acquire_within`] for a lock whose holder does long work
    /// that shows: the deadline starts again whenever `progress` returns a
    /// new value (for a download lock, the bytes written so far), so a
    /// holder that downloads a large file slowly is waited for, and one that
    /// holds the lock and does nothing is not.
    pub fn acquire_while_progressing(
        path: &Path,
        mode: Mode,
        timeout: Duration,
        mut progress: impl FnMut() -> u64,
    ) -> io::Result<FileLock> {
        let arg = match mode {
            Mode::Shared => FlockArg::LockSharedNonblock,
            Mode::Exclusive => FlockArg::LockExclusiveNonblock,
        };
        let mut since = Instant::now();
        let mut seen = progress();
        let mut pause = FIRST_PAUSE;
        // The file stays open between tries, so a waiter is visible in
        // `/proc/PID/fd` and each try is one `flock` call.
        let mut file = open(path)?;
        loop {
            file = match Flock::lock(file, arg) {
                Ok(flock) => match held_at(path, flock, mode)? {
                    Ok(l) => return Ok(l),
                    // Deleted (or replaced) meanwhile: lock the current file.
                    Err(()) => open(path)?,
                },
                Err((f, Errno::EWOULDBLOCK)) => f,
                Err((f, Errno::EINTR)) => {
                    file = f;
                    continue;
                }
                Err((_, errno)) => return Err(io::Error::from(errno)),
            };
            if since.elapsed() >= timeout {
                let now = progress();
                if now == seen {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        Timeout {
                            path: path.to_path_buf(),
                            waited: timeout,
                            holder: holder_of(path),
                        },
                    ));
                }
                seen = now;
                since = Instant::now();
            }
            std::thread::sleep(pause.min(timeout.saturating_sub(since.elapsed())));
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    /// Waits for the lock on `path` (creating the file if needed), without
    /// a deadline. For the image pulls, whose waiters keep a deadline of
    /// their own while a pool thread blocks here; the node cache uses
    /// [`FileLock::acquire_within`].
    pub fn acquire(path: &Path, mode: Mode) -> io::Result<FileLock> {
        match lock(path, mode, true)? {
            Some(l) => Ok(l),
            // A blocking flock never reports EWOULDBLOCK.
            None => Err(io::Error::from(io::ErrorKind::WouldBlock)),
        }
    }

    /// Takes the lock on `path` if nobody holds it in a conflicting mode;
    /// `None` if someone does.
    pub fn try_acquire(path: &Path, mode: Mode) -> io::Result<Option<FileLock>> {
        lock(path, mode, false)
    }

    /// The locked file, for the records kept in some lock files (see
    /// `stamp`).
    pub fn file(&self) -> &File {
        &self._flock
    }

    /// Deletes the lock file, then releases the lock. Only for exclusive
    /// holders: waiters on the old file notice the deletion and retry.
    pub fn remove(self) -> io::Result<()> {
        debug_assert_eq!(self.mode, Mode::Exclusive);
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl std::os::fd::AsRawFd for FileLock {
    /// The locked file's descriptor, for a child process that must keep the
    /// lock held while it runs (see `images`).
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self._flock.as_raw_fd()
    }
}

fn lock(path: &Path, mode: Mode, blocking: bool) -> io::Result<Option<FileLock>> {
    let arg = match (mode, blocking) {
        (Mode::Shared, true) => FlockArg::LockShared,
        (Mode::Exclusive, true) => FlockArg::LockExclusive,
        (Mode::Shared, false) => FlockArg::LockSharedNonblock,
        (Mode::Exclusive, false) => FlockArg::LockExclusiveNonblock,
    };
    loop {
        let flock = match Flock::lock(open(path)?, arg) {
            Ok(l) => l,
            Err((_, Errno::EWOULDBLOCK)) if !blocking => return Ok(None),
            Err((_, Errno::EINTR)) => continue,
            Err((_, errno)) => return Err(io::Error::from(errno)),
        };
        if let Ok(l) = held_at(path, flock, mode)? {
            return Ok(Some(l));
        }
    }
}

/// Opens (creating 0600) a lock file.
fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

/// With `flock` held: the lock, if `path` still names the locked file;
/// `Err(())` if it was deleted or replaced meanwhile (the caller locks the
/// current file instead).
fn held_at(path: &Path, flock: Flock<File>, mode: Mode) -> io::Result<Result<FileLock, ()>> {
    let held = flock.metadata()?;
    match fs::metadata(path) {
        Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
            // Left 0666 by an older agent: only the owner should open it.
            if held.mode() & 0o077 != 0 {
                let _ = flock.set_permissions(fs::Permissions::from_mode(0o600));
            }
            Ok(Ok(FileLock {
                _flock: flock,
                path: path.to_path_buf(),
                mode,
            }))
        }
        Ok(_) => Ok(Err(())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Err(())),
        Err(e) => Err(e),
    }
}

/// Who holds a lock on `path`, from `/proc/locks` (which lists flock locks
/// with the holder's pid and the file's device and inode) and the holder's
/// command line. Best effort: `None` when nothing matches, e.g. the holder
/// is in another PID namespace (`/proc/locks` then shows no pid).
pub(crate) fn holder_of(path: &Path) -> Option<String> {
    let md = fs::metadata(path).ok()?;
    let locks = fs::read_to_string("/proc/locks").ok()?;
    let want = (
        nix::sys::stat::major(md.dev()),
        nix::sys::stat::minor(md.dev()),
        md.ino(),
    );
    let pid = holders_in(&locks, want).into_iter().find(|&p| p > 0)?;
    let cmd = fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|raw| {
            let words: Vec<String> = raw
                .split(|&b| b == 0)
                .filter(|w| !w.is_empty())
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect();
            let mut s = words.join(" ");
            if s.len() > 120 {
                let mut cut = 117;
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                s.truncate(cut);
                s.push_str("...");
            }
            s
        })
        .filter(|s| !s.is_empty());
    Some(match cmd {
        Some(c) => format!("process {pid} ({c})"),
        None => format!("process {pid}"),
    })
}

/// The pids holding (not waiting for) a `FLOCK` on the file `(major, minor,
/// inode)`, from the text of `/proc/locks`.
fn holders_in(locks: &str, (major, minor, ino): (u64, u64, u64)) -> Vec<i64> {
    locks
        .lines()
        .filter(|l| !l.contains("->"))
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            if words.get(1) != Some(&"FLOCK") {
                return None;
            }
            // `1: FLOCK ADVISORY WRITE PID MAJ:MIN:INO START END`
            let pid: i64 = words.get(4)?.parse().ok()?;
            let mut id = words.get(5)?.split(':');
            let maj = u64::from_str_radix(id.next()?, 16).ok()?;
            let min = u64::from_str_radix(id.next()?, 16).ok()?;
            let i: u64 = id.next()?.parse().ok()?;
            ((maj, min, i) == (major, minor, ino)).then_some(pid)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_excludes_exclusive_and_removal_is_noticed() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("x.lock");
        let a = FileLock::acquire(&p, Mode::Shared)?;
        let b = FileLock::try_acquire(&p, Mode::Shared)?;
        assert!(b.is_some(), "two shared holders coexist");
        assert!(FileLock::try_acquire(&p, Mode::Exclusive)?.is_none());
        drop((a, b));

        let ex = FileLock::try_acquire(&p, Mode::Exclusive)?;
        let Some(ex) = ex else {
            panic!("nobody holds it")
        };
        // A waiter blocked on the old inode gets a lock on a new file.
        let p2 = p.clone();
        let waiter = std::thread::spawn(move || FileLock::acquire(&p2, Mode::Shared));
        std::thread::sleep(std::time::Duration::from_millis(100));
        ex.remove()?;
        let got = waiter
            .join()
            .map_err(|_| io::Error::other("waiter panicked"))??;
        let new_ino = fs::metadata(&p)?.ino();
        // The waiter holds the file the path names now, not the deleted one.
        assert_eq!(got._flock.metadata()?.ino(), new_ino);
        Ok(())
    }

    #[test]
    fn a_held_lock_times_out_naming_the_file_and_its_holder() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("space.lock");
        // Another process holds it: `flock` locks of one process's two
        // descriptors conflict too, which stands in for it here.
        let held = FileLock::acquire_within(&p, Mode::Exclusive, Duration::from_secs(1))?;
        let mode = fs::metadata(&p)?.mode() & 0o777;
        assert_eq!(mode, 0o600, "only the owner may open a lock file");

        let t0 = Instant::now();
        let err = FileLock::acquire_within(&p, Mode::Shared, Duration::from_millis(300))
            .err()
            .ok_or_else(|| io::Error::other("a held lock was granted"))?;
        let waited = t0.elapsed();
        assert!(waited >= Duration::from_millis(300), "{waited:?}");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
        let t = Timeout::of(&err).ok_or_else(|| io::Error::other(format!("{err:?}")))?;
        assert_eq!(t.path, p);
        let me = format!("process {}", std::process::id());
        assert!(
            t.holder.as_deref().is_some_and(|h| h.starts_with(&me)),
            "{t:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("space.lock held for more than 0.3 s by process"),
            "{msg}"
        );
        assert!(msg.contains("another job on this node"), "{msg}");

        // Freed: granted at once.
        drop(held);
        FileLock::acquire_within(&p, Mode::Shared, Duration::from_millis(300))?;
        Ok(())
    }

    #[test]
    fn a_holder_that_makes_progress_is_waited_for() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("x.dl");
        let held = FileLock::acquire_within(&p, Mode::Exclusive, Duration::from_secs(1))?;
        let p2 = p.clone();
        // The holder "writes" for 600 ms, three times the deadline, then
        // lets go: the waiter gets the lock instead of timing out.
        let t0 = Instant::now();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(600));
            drop(held);
        });
        let got = FileLock::acquire_while_progressing(
            &p2,
            Mode::Exclusive,
            Duration::from_millis(200),
            || t0.elapsed().as_millis() as u64 / 50,
        );
        releaser
            .join()
            .map_err(|_| io::Error::other("releaser panicked"))?;
        assert!(got.is_ok(), "{got:?}");
        drop(got);
        // A holder that does nothing: timed out after one deadline.
        let _held = FileLock::acquire_within(&p, Mode::Exclusive, Duration::from_secs(1))?;
        let stalled = FileLock::acquire_while_progressing(
            &p,
            Mode::Exclusive,
            Duration::from_millis(200),
            || 7,
        );
        assert!(
            stalled.as_ref().err().and_then(Timeout::of).is_some(),
            "{stalled:?}"
        );
        Ok(())
    }

    #[test]
    fn proc_locks_lines_are_parsed() {
        let text = "1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234 0 EOF\n\
                    1: -> FLOCK  ADVISORY  READ 77 fd:01:1234 0 EOF\n\
                    2: POSIX  ADVISORY  WRITE 99 fd:01:1234 0 EOF\n\
                    3: FLOCK  ADVISORY  READ 5 fd:01:999 0 EOF\n";
        assert_eq!(holders_in(text, (0xfd, 1, 1234)), vec![4242]);
        assert_eq!(holders_in(text, (0xfd, 1, 999)), vec![5]);
        assert!(holders_in(text, (8, 1, 1234)).is_empty());
    }
}
