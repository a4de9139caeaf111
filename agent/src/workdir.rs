//! Attempts' work directories, one per attempt under `WORKDIR/jobs/`.
//!
//! A reused agent runs many attempts one after another. Instead of creating
//! a directory for each and deleting it after, it empties the finished
//! attempt's directory and renames it for the next: on ext4, allocating and
//! freeing an inode per attempt cost more CPU than running a trivial job.
//! The next attempt still gets an empty directory under its own name, and
//! a directory whose permissions the job changed is deleted, not reused.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// Makes and releases work directories.
#[derive(Debug)]
pub struct WorkDirs {
    jobs: PathBuf,
    /// An emptied directory waiting for the next attempt.
    spare: Mutex<Option<PathBuf>>,
    /// The permission bits a new directory gets (the umask decides, so it is
    /// the same for all); one that differs at release was changed by its job.
    mode: Mutex<Option<u32>>,
}

impl WorkDirs {
    /// Work directories under `jobs`.
    pub fn new(jobs: PathBuf) -> WorkDirs {
        WorkDirs {
            jobs,
            spare: Mutex::new(None),
            mode: Mutex::new(None),
        }
    }

    /// An empty directory `jobs/NAME` for an attempt.
    pub fn make(&self, name: &str) -> io::Result<PathBuf> {
        let path = self.jobs.join(name);
        let spare = self.spare.lock().ok().and_then(|mut s| s.take());
        match spare {
            Some(s) if fs::rename(&s, &path).is_ok() => {
                // The sweep of old leftovers goes by modification time.
                let _ = fs::File::open(&path).and_then(|d| d.set_modified(SystemTime::now()));
            }
            other => {
                if let Some(s) = other {
                    let _ = fs::remove_dir_all(s);
                }
                fs::create_dir_all(&path)?;
                let mode = fs::metadata(&path)?.permissions().mode();
                if let Ok(mut m) = self.mode.lock() {
                    m.get_or_insert(mode);
                }
            }
        }
        Ok(path)
    }

    /// Done with `path` (from [`WorkDirs::make`]): emptied and kept for the
    /// next attempt, or deleted.
    pub fn release(&self, path: &Path) {
        let mode = self.mode.lock().ok().and_then(|m| *m);
        let unchanged = mode.is_some_and(|mode| {
            fs::symlink_metadata(path).is_ok_and(|m| m.is_dir() && m.permissions().mode() == mode)
        });
        if unchanged && empty(path).is_ok() {
            let rand: u32 = rand::random();
            let parked = self
                .jobs
                .join(format!(".spare-{}-{rand:08x}", std::process::id()));
            if fs::rename(path, &parked).is_ok() {
                let old = self.spare.lock().ok().and_then(|mut s| s.replace(parked));
                if let Some(old) = old {
                    let _ = fs::remove_dir_all(old);
                }
                return;
            }
        }
        let _ = fs::remove_dir_all(path);
    }
}

impl Drop for WorkDirs {
    fn drop(&mut self) {
        if let Some(s) = self.spare.get_mut().ok().and_then(|s| s.take()) {
            let _ = fs::remove_dir_all(s);
        }
    }
}

/// Deletes everything inside `dir`, not following symbolic links.
fn empty(dir: &Path) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            fs::remove_dir_all(e.path())?;
        } else {
            fs::remove_file(e.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_released_directory_comes_back_empty_under_the_next_name() -> io::Result<()> {
        let root = tempfile::tempdir()?;
        let dirs = WorkDirs::new(root.path().to_path_buf());
        let a = dirs.make("a.1")?;
        fs::write(a.join("out.txt"), b"x")?;
        fs::create_dir_all(a.join("sub/deeper"))?;
        std::os::unix::fs::symlink(root.path(), a.join("link"))?;
        dirs.release(&a);
        assert!(!a.exists());
        let b = dirs.make("b.1")?;
        assert!(b.is_dir());
        assert_eq!(fs::read_dir(&b)?.count(), 0, "empty for the next attempt");
        // The link was removed, not followed.
        assert!(root.path().is_dir());
        dirs.release(&b);
        drop(dirs);
        assert_eq!(fs::read_dir(root.path())?.count(), 0, "nothing left behind");
        Ok(())
    }

    #[test]
    fn a_directory_whose_mode_the_job_changed_is_deleted_not_reused() -> io::Result<()> {
        let root = tempfile::tempdir()?;
        let dirs = WorkDirs::new(root.path().to_path_buf());
        let a = dirs.make("a.1")?;
        fs::set_permissions(&a, fs::Permissions::from_mode(0o700))?;
        dirs.release(&a);
        assert_eq!(fs::read_dir(root.path())?.count(), 0);
        let b = dirs.make("b.1")?;
        assert_ne!(fs::metadata(&b)?.permissions().mode() & 0o777, 0o700);
        Ok(())
    }
}
