//! The `file:` backend: a job store in a directory.
//!
//! Each key is a file under the root. Writes go to a temporary name in the
//! same directory and are renamed (or linked, for create-if-absent) into
//! place, so a reader never sees a partial object and a crash leaves at most
//! a stray temporary file. Works on any POSIX filesystem with atomic rename
//! and link, including NFS-backed ReadWriteMany volumes.
//!
//! Everything the store creates is private to its owner: directories 0700
//! and files 0600 (whatever the umask), and the root is tightened to 0700
//! when a store is opened, so another user of the machine can neither list
//! nor read a workflow's files.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::types::{Condition, Object, Transfer, Version};

/// Name of the marker file that identifies a directory as a job store; also
/// what `destroy` checks before deleting anything.
pub const MARKER: &str = ".toil-jobstore";
/// Lock file serializing compare-and-swap writes within one store.
const CAS_LOCK: &str = ".cas.lock";
/// Prefix of in-flight temporary files.
const TMP_PREFIX: &str = ".tmp-";
/// Copy buffer size for streaming transfers.
const CHUNK: usize = 1 << 20;
/// Mode of every directory the store creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file the store creates.
pub const FILE_MODE: u32 = 0o600;

/// A job store rooted at a directory.
#[derive(Debug)]
pub struct FileBackend {
    /// The directory holding the store.
    root: PathBuf,
}

impl FileBackend {
    /// A backend for the store at `root` (which need not exist yet).
    pub fn new(root: PathBuf) -> Self {
        FileBackend { root }
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    pub(crate) async fn initialize(&self) -> Result<bool> {
        let root = self.root.clone();
        blocking(move || {
            create_dirs(&root)
                .map_err(|e| Error::io(format!("creating job store {}", root.display()), e))?;
            let marker = root.join(MARKER);
            if marker.exists() {
                private_root(&root)?;
                return Ok(false);
            }
            let has_entries = fs::read_dir(&root)
                .map_err(|e| Error::io(format!("reading {}", root.display()), e))?
                .next()
                .is_some();
            if has_entries {
                // Another process may have made it a job store since the
                // check above (two leaders starting at once): then it is one.
                if marker.exists() {
                    return Ok(false);
                }
                return Err(Error::Permanent {
                    message: format!(
                        "{} exists and is not a job store (it has files but no {MARKER}); choose an empty or new directory for --jobStore",
                        root.display()
                    ),
                });
            }
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(&marker)
            {
                Ok(f) => {
                    private_root(&root)?;
                    f.sync_all()
                        .map_err(|e| Error::io(format!("syncing {}", marker.display()), e))?;
                    sync_dir(&root)?;
                    Ok(true)
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(Error::io(format!("creating {}", marker.display()), e)),
            }
        })
        .await
    }

    pub(crate) async fn exists(&self) -> Result<bool> {
        Ok(self.root.join(MARKER).exists())
    }

    pub(crate) async fn destroy(&self) -> Result<()> {
        let root = self.root.clone();
        blocking(move || {
            if !root.exists() {
                return Ok(());
            }
            if !root.join(MARKER).exists() {
                return Err(Error::Permanent {
                    message: format!(
                        "refusing to delete {}: it is not a job store (no {MARKER} file in it)",
                        root.display()
                    ),
                });
            }
            // Remove the marker last, so an interrupted delete can be retried.
            for entry in fs::read_dir(&root)
                .map_err(|e| Error::io(format!("reading {}", root.display()), e))?
            {
                let entry =
                    entry.map_err(|e| Error::io(format!("reading {}", root.display()), e))?;
                if entry.file_name() == MARKER {
                    continue;
                }
                let p = entry.path();
                let r = if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
                r.map_err(|e| Error::io(format!("deleting {}", p.display()), e))?;
            }
            fs::remove_file(root.join(MARKER))
                .map_err(|e| Error::io(format!("deleting {}", root.display()), e))?;
            fs::remove_dir(&root)
                .map_err(|e| Error::io(format!("deleting {}", root.display()), e))?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn put_bytes(
        &self,
        key: &str,
        data: Bytes,
        cond: Condition,
    ) -> Result<Version> {
        let dest = self.path(key);
        let root = self.root.clone();
        let key = key.to_string();
        blocking(move || {
            let dir = parent_dir(&dest)?;
            let version = content_version(&data);
            match cond {
                Condition::Always => {
                    let tmp = write_temp(&dir, &data)?;
                    rename(&tmp, &dest)?;
                }
                Condition::IfAbsent => {
                    let tmp = write_temp(&dir, &data)?;
                    let linked = publish_new(&tmp, &dest);
                    match linked {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                            return Err(Error::PreconditionFailed {
                                store: format!("file:{}", root.display()),
                                key,
                            });
                        }
                        Err(e) => {
                            return Err(Error::io(format!("creating {}", dest.display()), e));
                        }
                    }
                }
                Condition::IfMatch(expected) => {
                    let _guard = CasLock::acquire(&root)?;
                    let current = match fs::read(&dest) {
                        Ok(d) => Some(content_version(&d)),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                        Err(e) => return Err(Error::io(format!("reading {}", dest.display()), e)),
                    };
                    if current.as_ref() != Some(&expected) {
                        return Err(Error::PreconditionFailed {
                            store: format!("file:{}", root.display()),
                            key,
                        });
                    }
                    let tmp = write_temp(&dir, &data)?;
                    rename(&tmp, &dest)?;
                }
            }
            sync_dir(&dir)?;
            Ok(version)
        })
        .await
    }

    pub(crate) async fn get_bytes(&self, key: &str) -> Result<Option<Object>> {
        let p = self.path(key);
        blocking(move || match fs::read(&p) {
            Ok(d) => Ok(Some(Object {
                version: content_version(&d),
                data: Bytes::from(d),
            })),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(Error::io(format!("reading {}", p.display()), e)),
        })
        .await
    }

    pub(crate) async fn put_file(&self, key: &str, src: &Path) -> Result<Transfer> {
        let dest = self.path(key);
        let src = src.to_path_buf();
        blocking(move || {
            let dir = parent_dir(&dest)?;
            let mut input =
                File::open(&src).map_err(|e| Error::io(format!("opening {}", src.display()), e))?;
            let (tmp, mut out) = create_temp(&dir)?;
            let t = match copy_hashing(&mut input, &mut out, &src, &tmp) {
                Ok(t) => t,
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    return Err(e);
                }
            };
            out.sync_all()
                .map_err(|e| Error::io(format!("syncing {}", tmp.display()), e))?;
            drop(out);
            rename(&tmp, &dest)?;
            sync_dir(&dir)?;
            Ok(t)
        })
        .await
    }

    pub(crate) async fn get_file(&self, key: &str, dest: &Path) -> Result<Transfer> {
        let src = self.path(key);
        let dest = dest.to_path_buf();
        let store = format!("file:{}", self.root.display());
        let key = key.to_string();
        blocking(move || {
            let mut input = match File::open(&src) {
                Ok(f) => f,
                Err(e) if is_missing(&e) => return Err(Error::NotFound { store, key }),
                Err(e) => return Err(Error::io(format!("opening {}", src.display()), e)),
            };
            let mut out = File::create(&dest)
                .map_err(|e| Error::io(format!("creating {}", dest.display()), e))?;
            copy_hashing(&mut input, &mut out, &src, &dest)
        })
        .await
    }

    pub(crate) async fn size(&self, key: &str) -> Result<Option<u64>> {
        let p = self.path(key);
        blocking(move || match fs::metadata(&p) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(Error::io(format!("reading {}", p.display()), e)),
        })
        .await
    }

    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        blocking(move || {
            // Walk only the deepest directory the prefix names.
            let dir_part = match prefix.rfind('/') {
                Some(i) => &prefix[..i],
                None => "",
            };
            let start = if dir_part.is_empty() {
                root.clone()
            } else {
                root.join(dir_part)
            };
            let mut keys = Vec::new();
            walk(&root, &start, &mut |key| {
                if key.starts_with(&prefix) {
                    keys.push(key);
                }
            })?;
            keys.sort();
            Ok(keys)
        })
        .await
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<()> {
        let p = self.path(key);
        blocking(move || match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(Error::io(format!("deleting {}", p.display()), e)),
        })
        .await
    }

    pub(crate) async fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        let keys = self.list(prefix).await?;
        let root = self.root.clone();
        blocking(move || {
            let mut n = 0;
            for k in &keys {
                let p = root.join(k);
                match fs::remove_file(&p) {
                    Ok(()) => n += 1,
                    Err(e) if is_missing(&e) => {}
                    Err(e) => return Err(Error::io(format!("deleting {}", p.display()), e)),
                }
                // Prune directories the delete emptied, up to the root.
                let mut dir = p.parent();
                while let Some(d) = dir {
                    if d == root || fs::remove_dir(d).is_err() {
                        break;
                    }
                    dir = d.parent();
                }
            }
            Ok(n)
        })
        .await
    }
}

/// Holds the store-wide lock that serializes compare-and-swap writes.
struct CasLock {
    _file: nix::fcntl::Flock<File>,
}

impl CasLock {
    fn acquire(root: &Path) -> Result<Self> {
        let p = root.join(CAS_LOCK);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(FILE_MODE)
            .open(&p)
            .map_err(|e| Error::io(format!("opening {}", p.display()), e))?;
        let file = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).map_err(
            |(_, errno)| Error::io(format!("locking {}", p.display()), io::Error::from(errno)),
        )?;
        Ok(CasLock { _file: file })
    }
}

/// Runs blocking filesystem work off the async threads.
async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Permanent {
            message: format!("job-store worker thread failed: {e}"),
        })?
}

fn is_missing(e: &io::Error) -> bool {
    // A path component that is a file, not a directory, also means "absent".
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

/// The version of a small object on a file store: a prefix of its SHA-256.
fn content_version(data: &[u8]) -> Version {
    let digest = Sha256::digest(data);
    Version(hex::encode(&digest[..16]))
}

fn parent_dir(dest: &Path) -> Result<PathBuf> {
    let dir = dest
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| Error::Permanent {
            message: format!("{} has no parent directory", dest.display()),
        })?;
    create_dirs(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    Ok(dir)
}

/// `mkdir -p` with every created directory private to the owner.
fn create_dirs(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Makes the store's root private to its owner: a store made before files
/// were private (or with `mkdir` by the user) is closed to others this way,
/// since nobody else can then reach anything beneath it.
fn private_root(root: &Path) -> Result<()> {
    let meta =
        fs::metadata(root).map_err(|e| Error::io(format!("reading {}", root.display()), e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(root, fs::Permissions::from_mode(DIR_MODE)).map_err(|e| {
            Error::io(
                format!(
                    "making job store {} private to its owner (chmod 700)",
                    root.display()
                ),
                e,
            )
        })?;
    }
    Ok(())
}

fn create_temp(dir: &Path) -> Result<(PathBuf, File)> {
    let tmp = dir.join(format!("{TMP_PREFIX}{}", uuid::Uuid::new_v4().simple()));
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(&tmp)
        .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
    Ok((tmp, f))
}

fn write_temp(dir: &Path, data: &[u8]) -> Result<PathBuf> {
    let (tmp, mut f) = create_temp(dir)?;
    let r = f.write_all(data).and_then(|()| f.sync_data());
    if let Err(e) = r {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(format!("writing {}", tmp.display()), e));
    }
    Ok(tmp)
}

/// Moves `tmp` to `dest` unless `dest` exists (then `AlreadyExists`), and
/// never leaves `tmp` behind. A rename that refuses to replace frees no
/// inode, unlike a hard link followed by an unlink: on ext4 without a
/// journal every recently freed inode slows the next file creation, and the
/// journal writes one such file per group commit.
fn publish_new(tmp: &Path, dest: &Path) -> io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
        match renameat2(AT_FDCWD, tmp, AT_FDCWD, dest, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => return Ok(()),
            // Filesystems without RENAME_NOREPLACE: link and unlink below.
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => {}
            Err(e) => {
                let _ = fs::remove_file(tmp);
                return Err(io::Error::from(e));
            }
        }
    }
    let linked = fs::hard_link(tmp, dest);
    let _ = fs::remove_file(tmp);
    linked
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|e| {
        let _ = fs::remove_file(from);
        Error::io(format!("renaming into {}", to.display()), e)
    })
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing directory {}", dir.display()), e))
}

/// Copies `input` to `out` in chunks, hashing as it goes.
fn copy_hashing(input: &mut File, out: &mut File, from: &Path, to: &Path) -> Result<Transfer> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(format!("reading {}", from.display()), e)),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| Error::io(format!("writing {}", to.display()), e))?;
        size += n as u64;
    }
    Ok(Transfer {
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// Calls `f` with the key of every regular file under `dir`, skipping the
/// store's own bookkeeping files and in-flight temporaries.
fn walk(root: &Path, dir: &Path, f: &mut dyn FnMut(String)) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if is_missing(&e) => return Ok(()),
        Err(e) => return Err(Error::io(format!("listing {}", dir.display()), e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(TMP_PREFIX) || name == MARKER || name == CAS_LOCK {
            continue;
        }
        let path = entry.path();
        let ft = entry
            .file_type()
            .map_err(|e| Error::io(format!("listing {}", path.display()), e))?;
        if ft.is_dir() {
            walk(root, &path, f)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            f(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}
