//! `flock` locks on named lock files that may be deleted.
//!
//! A lock file can only be deleted safely by a process that holds it
//! exclusively, and every locker must check, once it holds the lock, that the
//! path still names the file it locked (same device and inode). Otherwise a
//! process that opened the file just before another deleted it would hold a
//! lock on an orphaned inode while a third process locks a fresh file under
//! the same name. With the check, the late locker notices and starts over.
//!
//! These calls block (when asked to) in the kernel; async callers run them in
//! `spawn_blocking`. Locks are released when the holder drops them or dies,
//! so a killed agent never leaves a lock behind.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Whether a lock is shared or exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Shared,
    Exclusive,
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
    /// Waits for the lock on `path` (creating the file if needed).
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
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o666)
            .open(path)?;
        let flock = match Flock::lock(file, arg) {
            Ok(l) => l,
            Err((_, Errno::EWOULDBLOCK)) if !blocking => return Ok(None),
            Err((_, Errno::EINTR)) => continue,
            Err((_, errno)) => return Err(io::Error::from(errno)),
        };
        let held = flock.metadata()?;
        match fs::metadata(path) {
            Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                return Ok(Some(FileLock {
                    _flock: flock,
                    path: path.to_path_buf(),
                    mode,
                }));
            }
            // Deleted (or replaced) while we waited: lock the current file.
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
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
}
