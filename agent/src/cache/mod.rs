//! The node cache: job-store files shared by every agent on a node.
//!
//! The cache lives in one directory (`$TOIL_WORKDIR/cache`, on Kubernetes on
//! the host path) and is shared by every agent process on the node with no
//! daemon and no database: coordination is `flock` on per-entry lock files,
//! which the kernel releases when a process dies, so a killed agent never
//! leaves the cache locked.
//!
//! - Files are immutable by job-store id, so an entry, once complete, is
//!   valid forever. Entries are named by a hash of the id.
//! - A download goes to a temporary file, is verified against the expected
//!   SHA-256, fsynced, made read-only and renamed into place (and the
//!   directory fsynced): no reader ever sees a partial entry.
//! - One download per entry per node at a time: the downloader holds the
//!   entry's exclusive download lock; others block on it (in the kernel, on a
//!   blocking-pool thread), then find the finished entry.
//! - A job holds a shared "use" lock on each entry it staged until its
//!   [`Staged`] is dropped; eviction takes that lock exclusively without
//!   waiting, so it never removes an entry a job holds.
//! - Jobs get read-only hard links into their work directory, or private
//!   copies for inputs they declare writable.
//! - Outputs a job uploaded go in too ([`NodeCache::insert_output`]).
//! - Eviction is least recently used (by the entry's access time, set on
//!   every use) against `max_bytes`, or else against the filesystem's free
//!   space minus a margin and the disk running jobs reserved.
//! - With `disabled`, every job downloads privately and nothing is shared.
//!
//! See `layout` for the directory structure and `space` for the budget.

mod error;
mod layout;
pub(crate) mod lock;
mod space;

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::{StreamExt, TryStreamExt};
use toil_jobstore::{JobStore, Transfer};
use toil_proto::v1::{ResourceUsage, StagedInput};

pub use error::CacheError;

use layout::Layout;
use lock::{FileLock, Mode};
use space::{Policy, Reservation, Reserved, TempFile};

/// Inputs of one attempt staged at the same time.
const STAGE_CONCURRENCY: usize = 4;

/// How the cache behaves.
#[derive(Clone, Debug, Default)]
pub struct CacheConfig {
    /// `--cacheMaxSize`: the most bytes the cache may hold (entries plus
    /// downloads in flight). `None`: bounded by free disk space instead, see
    /// `min_free_bytes`.
    pub max_bytes: Option<u64>,
    /// `--disableCaching`: every job downloads its own private copies and
    /// nothing is shared or kept.
    pub disabled: bool,
    /// Without `max_bytes`, the free space to leave on the cache's
    /// filesystem, on top of the disk other running jobs reserved. `None`:
    /// 5% of the filesystem, at most 10 GiB.
    pub min_free_bytes: Option<u64>,
    /// For crash tests only: how long a downloader waits, holding the
    /// entry's download lock with the complete temporary file on disk,
    /// before publishing it. `None` in production.
    pub debug_publish_delay: Option<Duration>,
    /// How often `open` sweeps debris left by dead processes. Sweeping
    /// lists the cache's `tmp/` and `locks/` directories, which grow with
    /// the cache, so an agent that starts per job should not do it every
    /// time; a marker file's age tells when the last sweep was. Zero: at
    /// every open.
    pub sweep_interval: Duration,
}

/// One input to stage: the parts of a `toil.v1.StagedInput` the cache uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheInput {
    /// The job-store key of the file.
    pub file_id: String,
    /// Expected lowercase hex SHA-256; empty to skip verification.
    pub sha256: String,
    /// The size, when known; `None` makes the downloader ask the job store
    /// (one extra request, only on a miss). It decides how much space a
    /// download reserves, so it must not understate the file.
    pub size_bytes: Option<u64>,
    /// Destination relative to the work directory (`/` separators, no `..`).
    pub dest_path: String,
    /// True: a private writable copy. False: a read-only hard link.
    pub writable: bool,
}

impl TryFrom<&StagedInput> for CacheInput {
    type Error = CacheError;

    fn try_from(s: &StagedInput) -> Result<Self, CacheError> {
        let file = s.file.as_ref().ok_or_else(|| CacheError::BadInput {
            dest_path: s.dest_path.clone(),
            reason: "the input has no file reference".into(),
        })?;
        Ok(CacheInput {
            file_id: file.file_id.clone(),
            sha256: file.sha256.clone(),
            // 0 may be an unset field: let the downloader ask the store
            // rather than reserve no space for what may be a large file.
            size_bytes: (file.size_bytes > 0).then_some(file.size_bytes),
            dest_path: s.dest_path.clone(),
            writable: s.writable,
        })
    }
}

/// Per-attempt cache figures, as `ResourceUsage` reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    /// Inputs served from the cache without a download.
    pub hits: u32,
    /// Inputs downloaded from the job store.
    pub misses: u32,
    /// Bytes downloaded from the job store.
    pub bytes_downloaded: u64,
}

impl CacheStats {
    /// Adds these figures to an attempt's usage.
    pub fn add_to(&self, usage: &mut ResourceUsage) {
        usage.cache_hits += self.hits;
        usage.cache_misses += self.misses;
        usage.bytes_downloaded += self.bytes_downloaded;
    }
}

/// One staged input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagedFile {
    /// The job-store key.
    pub file_id: String,
    /// Where it was placed (absolute, inside the work directory).
    pub path: PathBuf,
    /// True when served from the cache without a download.
    pub hit: bool,
}

/// The inputs of one attempt, staged. Holds the shared locks that keep the
/// cache entries from being evicted and the attempt's disk reservation;
/// drop it when the attempt ends.
#[derive(Debug, Default)]
pub struct Staged {
    /// Shared use locks on the entries this attempt linked.
    holds: Vec<FileLock>,
    /// This attempt's disk reservation, counted by other agents' eviction.
    reservation: Option<Reservation>,
    /// Figures for the attempt's `ResourceUsage`.
    stats: CacheStats,
    /// What was placed where, in input order.
    files: Vec<StagedFile>,
}

impl Staged {
    /// Hits, misses and bytes downloaded.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// The staged files, in input order.
    pub fn files(&self) -> &[StagedFile] {
        &self.files
    }

    /// How many cache entries this attempt holds.
    pub fn held_entries(&self) -> usize {
        self.holds.len()
    }

    /// The disk reservation registered for the attempt, if any.
    pub fn has_reservation(&self) -> bool {
        self.reservation.is_some()
    }
}

/// A handle on the node cache. Cheap to clone.
#[derive(Clone, Debug)]
pub struct NodeCache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    layout: Layout,
    cfg: CacheConfig,
    /// The last attempt's reservation file, kept for the next one.
    spare: space::Spare,
}

/// How one input was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Found in the cache.
    Hit,
    /// Downloaded into the cache.
    Miss(u64),
    /// Downloaded straight into the work directory (too big for the budget).
    Private(u64),
}

/// True when the last sweep (the age of `root/.swept`) is older than
/// `interval`; marks the sweep as done now.
fn sweep_due(root: &Path, interval: Duration) -> bool {
    let marker = root.join(".swept");
    if !interval.is_zero() {
        let recent = fs::metadata(&marker)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < interval);
        if recent {
            return false;
        }
    }
    let _ = fs::write(&marker, b"");
    true
}

// === impl NodeCache ===

impl NodeCache {
    /// Opens (creating if needed) the cache in `dir`. Removes debris left by
    /// dead processes: temporary files of downloads that are no longer in
    /// progress and lock files of entries that no longer exist. Does only
    /// non-blocking locking; the directory work is small. With
    /// `cfg.disabled` nothing is created.
    pub fn open(dir: &Path, cfg: CacheConfig) -> Result<NodeCache, CacheError> {
        let layout = Layout::new(dir);
        if !cfg.disabled {
            for d in layout.dirs() {
                fs::create_dir_all(d).map_err(|e| {
                    CacheError::io("", format!("creating cache directory {}", d.display()), e)
                })?;
            }
            if sweep_due(&layout.root, cfg.sweep_interval) {
                space::sweep_tmp(&layout).map_err(|e| {
                    CacheError::io("", format!("sweeping {}", layout.tmp.display()), e)
                })?;
                space::sweep_locks(&layout).map_err(|e| {
                    CacheError::io("", format!("sweeping {}", layout.locks.display()), e)
                })?;
            }
        }
        Ok(NodeCache {
            inner: Arc::new(Inner {
                layout,
                cfg,
                spare: Default::default(),
            }),
        })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.inner.layout.root
    }

    /// True with `--disableCaching`.
    pub fn is_disabled(&self) -> bool {
        self.inner.cfg.disabled
    }

    /// Where the entry for `file_id` with content `sha256` lives (whether
    /// or not it is there).
    pub fn entry_path(&self, file_id: &str, sha256: &str) -> PathBuf {
        NodeCache::entry_path_in(&self.inner.layout.root, file_id, sha256)
    }

    /// [`NodeCache::entry_path`] for the cache in `dir`, without opening it.
    pub fn entry_path_in(dir: &Path, file_id: &str, sha256: &str) -> PathBuf {
        Layout::new(dir).entry(&layout::entry_name(file_id, sha256))
    }

    /// Places every input in `work_dir`: from the cache when it holds the
    /// file, otherwise downloading it once for the whole node.
    ///
    /// `disk_reservation` is the scratch disk the attempt asked for; it is
    /// registered node-wide for the life of the returned [`Staged`] so that
    /// other agents' eviction leaves that much free (it is not counted
    /// against this attempt's own downloads, which are part of it).
    ///
    /// On error, nothing stays locked; files already placed remain in the
    /// work directory.
    pub async fn stage(
        &self,
        store: &JobStore,
        inputs: &[CacheInput],
        work_dir: &Path,
        disk_reservation: u64,
    ) -> Result<Staged, CacheError> {
        let dests = destinations(inputs, work_dir)?;
        let mut staged = Staged::default();
        if !self.inner.cfg.disabled && disk_reservation > 0 {
            let layout = self.inner.layout.clone();
            let spare = self.inner.spare.clone();
            let r =
                blocking(move || Reservation::register(&layout, disk_reservation, Some(&spare)))
                    .await?
                    .map_err(|e| {
                        CacheError::io("", "registering the attempt's disk reservation", e)
                    })?;
            staged.reservation = Some(r);
        }
        let own = staged.reservation.as_ref().map(|r| r.path().to_path_buf());
        let results: Vec<(Option<FileLock>, Outcome)> =
            futures::stream::iter(inputs.iter().zip(dests.iter()))
                .map(|(input, dest)| self.stage_one(store, input, dest, own.as_deref()))
                .buffered(STAGE_CONCURRENCY)
                .try_collect()
                .await?;
        for ((hold, outcome), (input, dest)) in results.into_iter().zip(inputs.iter().zip(dests)) {
            match outcome {
                Outcome::Hit => staged.stats.hits += 1,
                Outcome::Miss(n) | Outcome::Private(n) => {
                    staged.stats.misses += 1;
                    staged.stats.bytes_downloaded += n;
                }
            }
            staged.holds.extend(hold);
            staged.files.push(StagedFile {
                file_id: input.file_id.clone(),
                path: dest,
                hit: outcome == Outcome::Hit,
            });
        }
        Ok(staged)
    }

    /// Puts a file a job produced (and that was just uploaded as `file_id`)
    /// into the cache, so that a later job on this node needing it does not
    /// download it. Hard-links `local_path` when it is on the cache's
    /// filesystem (the file becomes read-only), copies it otherwise.
    ///
    /// `uploaded` is what the upload reported; its size is checked against
    /// the file (its checksum was computed from these same bytes). Call it
    /// after the job's processes have exited. Returns true if the file was
    /// added; false if it was already cached, caching is disabled, or it
    /// does not fit the budget.
    pub async fn insert_output(
        &self,
        file_id: &str,
        local_path: &Path,
        uploaded: &Transfer,
    ) -> Result<bool, CacheError> {
        if self.inner.cfg.disabled {
            return Ok(false);
        }
        let inner = self.inner.clone();
        let file_id = file_id.to_string();
        let local = local_path.to_path_buf();
        let (expected, sha256) = (uploaded.size, uploaded.sha256.clone());
        blocking(move || inner.insert_blocking(&file_id, &sha256, &local, expected)).await?
    }

    /// Stages one input; returns the use lock to keep (none for a private
    /// download) and how the file was obtained.
    async fn stage_one(
        &self,
        store: &JobStore,
        input: &CacheInput,
        dest: &Path,
        own_reservation: Option<&Path>,
    ) -> Result<(Option<FileLock>, Outcome), CacheError> {
        if self.inner.cfg.disabled {
            let n = private_download(store, input, dest).await?;
            return Ok((None, Outcome::Private(n)));
        }
        let name = layout::entry_name(&input.file_id, &input.sha256);
        let layout = self.inner.layout.clone();
        let entry = layout.entry(&name);

        // 1. Hold the entry: from here until the attempt ends, eviction
        //    cannot remove it. On a hit, link it in the same trip to the
        //    blocking pool (a hit is then one thread hand-off).
        let (hold, present) = {
            let (layout, name, entry, fid) = (
                layout.clone(),
                name.clone(),
                entry.clone(),
                input.file_id.clone(),
            );
            let (size, dest, writable) = (input.size_bytes, dest.to_path_buf(), input.writable);
            blocking(move || {
                let path = layout.use_lock(&name);
                let hold = FileLock::acquire(&path, Mode::Shared)
                    .map_err(|e| CacheError::io(&fid, format!("locking {}", path.display()), e))?;
                let state = check_entry(&entry, size).map_err(|e| {
                    CacheError::io(&fid, format!("checking {}", entry.display()), e)
                })?;
                if state == EntryState::Good {
                    link_in(&fid, &entry, &dest, writable)?;
                }
                Ok::<_, CacheError>((hold, state == EntryState::Good))
            })
            .await??
        };
        if present {
            return Ok((Some(hold), Outcome::Hit));
        }

        // 2. Download it (or wait for whoever is downloading it).
        let outcome = self
            .fill(store, input, &name, dest, own_reservation)
            .await?;

        // 3. Link (or copy) it into the work directory.
        if let Outcome::Private(_) = outcome {
            return Ok((None, outcome));
        }
        let (fid, dest, writable) = (input.file_id.clone(), dest.to_path_buf(), input.writable);
        blocking(move || link_in(&fid, &entry, &dest, writable)).await??;
        Ok((Some(hold), outcome))
    }

    /// With the entry held but absent: takes its download lock and, unless
    /// someone completed it meanwhile, downloads it.
    async fn fill(
        &self,
        store: &JobStore,
        input: &CacheInput,
        name: &str,
        dest: &Path,
        own_reservation: Option<&Path>,
    ) -> Result<Outcome, CacheError> {
        let layout = self.inner.layout.clone();
        let fid = &input.file_id;
        let (dl, present) = {
            let (layout, name, fid) = (layout.clone(), name.to_string(), fid.clone());
            let size = input.size_bytes;
            blocking(move || {
                let path = layout.download_lock(&name);
                // Blocks while another process downloads this entry.
                let dl = FileLock::acquire(&path, Mode::Exclusive)
                    .map_err(|e| CacheError::io(&fid, format!("locking {}", path.display()), e))?;
                let entry = layout.entry(&name);
                let state = check_entry(&entry, size).map_err(|e| {
                    CacheError::io(&fid, format!("checking {}", entry.display()), e)
                })?;
                if state == EntryState::Corrupt {
                    // Only download-lock holders replace entries, so this
                    // removes the bad file and nothing newer.
                    tracing::warn!(file_id = %fid, entry = %entry.display(), "cache entry has the wrong size (modified by a job?); downloading again");
                    fs::remove_file(&entry).map_err(|e| {
                        CacheError::io(&fid, format!("removing {}", entry.display()), e)
                    })?;
                }
                let present = state == EntryState::Good;
                if !present {
                    // Whatever is in tmp for this entry was left by a
                    // downloader that died (we hold its lock now).
                    space::remove_tmp_of(&layout, &name).map_err(|e| {
                        CacheError::io(&fid, format!("cleaning {}", layout.tmp.display()), e)
                    })?;
                }
                Ok::<_, CacheError>((dl, present))
            })
            .await??
        };
        if present {
            release(dl);
            return Ok(Outcome::Hit);
        }

        let size = match input.size_bytes {
            Some(s) => s,
            None => store
                .size(fid)
                .await
                .map_err(|e| CacheError::from_store(fid, e))?
                .ok_or_else(|| {
                    CacheError::from_store(
                        fid,
                        toil_jobstore::Error::NotFound {
                            store: store.locator().to_string(),
                            key: fid.clone(),
                        },
                    )
                })?,
        };
        let policy = Policy {
            max_bytes: self.inner.cfg.max_bytes,
            min_free_bytes: self.inner.cfg.min_free_bytes,
        };
        let reserved = {
            let (layout, name, fid) = (layout.clone(), name.to_string(), fid.clone());
            let own = own_reservation.map(Path::to_path_buf);
            blocking(move || {
                space::reserve(&layout, policy, &name, size, own.as_deref()).map_err(|e| {
                    if e.kind() == io::ErrorKind::StorageFull {
                        CacheError::NoSpace {
                            file_id: fid.clone(),
                            needed: size,
                            detail: e.to_string(),
                        }
                    } else {
                        CacheError::io(
                            &fid,
                            format!("reserving space in {}", layout.root.display()),
                            e,
                        )
                    }
                })
            })
            .await??
        };
        let tmp = match reserved {
            Reserved::Tmp(t) => t,
            Reserved::OverBudget => {
                // Let other waiters go: they will decide the same.
                release(dl);
                tracing::info!(file_id = %fid, size, "input does not fit the cache budget; downloading privately");
                let n = private_download(store, input, dest).await?;
                return Ok(Outcome::Private(n));
            }
        };

        let t0 = std::time::Instant::now();
        let t = store
            .get_file_verified(fid, tmp.path(), &input.sha256)
            .await
            .map_err(|e| CacheError::from_store(fid, e))?;
        if let Some(d) = self.inner.cfg.debug_publish_delay {
            tokio::time::sleep(d).await;
        }
        let entry = layout.entry(name);
        let fid2 = fid.clone();
        blocking(move || {
            tmp.publish(&entry)
                .map_err(|e| CacheError::io(&fid2, format!("publishing {}", entry.display()), e))?;
            release(dl);
            Ok::<_, CacheError>(())
        })
        .await??;
        tracing::info!(file_id = %fid, bytes = t.size, secs = t0.elapsed().as_secs_f64(), "downloaded into the node cache");
        Ok(Outcome::Miss(t.size))
    }
}

// === impl Inner ===

impl Inner {
    fn insert_blocking(
        &self,
        file_id: &str,
        sha256: &str,
        local: &Path,
        expected: u64,
    ) -> Result<bool, CacheError> {
        let layout = &self.layout;
        let name = layout::entry_name(file_id, sha256);
        let entry = layout.entry(&name);
        let io_err = |what: String| move |e| CacheError::io(file_id, what, e);

        let use_path = layout.use_lock(&name);
        let _hold = FileLock::acquire(&use_path, Mode::Shared)
            .map_err(io_err(format!("locking {}", use_path.display())))?;
        if exists(&entry).map_err(io_err(format!("checking {}", entry.display())))? {
            return Ok(false);
        }
        let dl_path = layout.download_lock(&name);
        let dl = FileLock::acquire(&dl_path, Mode::Exclusive)
            .map_err(io_err(format!("locking {}", dl_path.display())))?;
        if exists(&entry).map_err(io_err(format!("checking {}", entry.display())))? {
            release(dl);
            return Ok(false);
        }
        space::remove_tmp_of(layout, &name)
            .map_err(io_err(format!("cleaning {}", layout.tmp.display())))?;
        let size = fs::metadata(local)
            .map_err(io_err(format!("reading {}", local.display())))?
            .len();
        if size != expected {
            return Err(CacheError::BadInput {
                dest_path: local.display().to_string(),
                reason: format!(
                    "the file has {size} bytes but {expected} were uploaded; it changed after the upload"
                ),
            });
        }
        let policy = Policy {
            max_bytes: self.cfg.max_bytes,
            min_free_bytes: self.cfg.min_free_bytes,
        };
        let placeholder = match space::reserve(layout, policy, &name, size, None) {
            Ok(Reserved::Tmp(t)) => t,
            Ok(Reserved::OverBudget) => return Ok(false),
            // Write-through is an optimization: no room is not an error.
            Err(e) if e.kind() == io::ErrorKind::StorageFull => return Ok(false),
            Err(e) => return Err(CacheError::io(file_id, "reserving space", e)),
        };
        // A hard link costs nothing; the placeholder keeps the space
        // reserved until the link exists.
        let linked = layout.new_tmp(&name, size);
        let tmp = match fs::hard_link(local, &linked) {
            Ok(()) => TempFile::adopt(linked),
            Err(_) => {
                fs::copy(local, placeholder.path()).map_err(io_err(format!(
                    "copying {} into the cache",
                    local.display()
                )))?;
                placeholder
            }
        };
        tmp.publish(&entry)
            .map_err(io_err(format!("publishing {}", entry.display())))?;
        release(dl);
        tracing::debug!(
            file_id,
            bytes = size,
            "output written through to the node cache"
        );
        Ok(true)
    }
}

// === helpers ===

/// Checks every destination and resolves it inside `work_dir`.
fn destinations(inputs: &[CacheInput], work_dir: &Path) -> Result<Vec<PathBuf>, CacheError> {
    let mut seen = std::collections::HashSet::new();
    inputs
        .iter()
        .map(|i| {
            let bad = |reason: &str| CacheError::BadInput {
                dest_path: i.dest_path.clone(),
                reason: reason.to_string(),
            };
            let rel = Path::new(&i.dest_path);
            if i.dest_path.is_empty() || rel.is_absolute() {
                return Err(bad("the destination must be a non-empty relative path"));
            }
            if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
                return Err(bad(
                    "the destination may not contain `.` or `..` components",
                ));
            }
            let dest = work_dir.join(rel);
            if !seen.insert(dest.clone()) {
                return Err(bad("two inputs have this destination"));
            }
            Ok(dest)
        })
        .collect()
}

/// Downloads an input straight to its destination, without the cache.
async fn private_download(
    store: &JobStore,
    input: &CacheInput,
    dest: &Path,
) -> Result<u64, CacheError> {
    let fid = &input.file_id;
    let dir = dest.parent().unwrap_or(Path::new("."));
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| CacheError::io(fid, format!("creating {}", dir.display()), e))?;
    let base = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = TempFile::adopt(dir.join(format!(".{base}.toil-part-{:08x}", rand::random::<u32>())));
    let t = store
        .get_file_verified(fid, tmp.path(), &input.sha256)
        .await
        .map_err(|e| CacheError::from_store(fid, e))?;
    let mode = if input.writable { 0o644 } else { 0o444 };
    let (dest, fid2) = (dest.to_path_buf(), fid.clone());
    blocking(move || {
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(mode))
            .and_then(|()| fs::rename(tmp.path(), &dest))
            .map_err(|e| CacheError::io(&fid2, format!("placing {}", dest.display()), e))
    })
    .await??;
    Ok(t.size)
}

/// Records the use of `entry` and places it at `dest`.
fn link_in(file_id: &str, entry: &Path, dest: &Path, writable: bool) -> Result<(), CacheError> {
    touch(entry);
    place(entry, dest, writable).map_err(|e| {
        CacheError::io(
            file_id,
            format!("placing {} at {}", entry.display(), dest.display()),
            e,
        )
    })
}

/// Puts `entry` at `dest`: a hard link (read-only, shared with the cache),
/// or a private writable copy. Falls back to a read-only copy when the work
/// directory is on another filesystem or links are not permitted.
fn place(entry: &Path, dest: &Path, writable: bool) -> io::Result<()> {
    if let Some(dir) = dest.parent() {
        fs::create_dir_all(dir)?;
    }
    match fs::remove_file(dest) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if !writable {
        match fs::hard_link(entry, dest) {
            Ok(()) => return Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EXDEV | libc::EPERM | libc::EMLINK)
                ) => {}
            Err(e) => return Err(e),
        }
    }
    fs::copy(entry, dest)?;
    let mode = if writable { 0o644 } else { 0o444 };
    fs::set_permissions(dest, fs::Permissions::from_mode(mode))
}

/// Records a use of `entry` for LRU eviction (its access time). Best effort:
/// a failure only makes the entry look older.
fn touch(entry: &Path) {
    let r = fs::File::open(entry)
        .and_then(|f| f.set_times(fs::FileTimes::new().set_accessed(SystemTime::now())));
    if let Err(e) = r {
        tracing::debug!(entry = %entry.display(), error = %e, "could not record cache entry use");
    }
}

/// What a lookup of an entry found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EntryState {
    /// There, with the expected size (when known).
    Good,
    /// Not there.
    Absent,
    /// There with the wrong size: a job changed it through its link (a job
    /// running as the cache's owner can chmod the read-only inode).
    Corrupt,
}

fn check_entry(entry: &Path, size: Option<u64>) -> io::Result<EntryState> {
    match fs::metadata(entry) {
        Ok(m) if size.is_some_and(|s| s != m.len()) => Ok(EntryState::Corrupt),
        Ok(_) => Ok(EntryState::Good),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(EntryState::Absent),
        Err(e) => Err(e),
    }
}

fn exists(p: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(p) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Releases a download lock, deleting its file so lock files do not pile up
/// (waiters notice and relock the new file).
fn release(dl: FileLock) {
    if let Err(e) = dl.remove() {
        tracing::debug!(error = %e, "could not remove a download lock file");
    }
}

/// Runs blocking work (flock waits, fsync, directory scans) on the blocking
/// pool so async worker threads never stall.
async fn blocking<T, F>(f: F) -> Result<T, CacheError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CacheError::Io {
            context: "cache worker thread".into(),
            error: io::Error::other(e.to_string()),
        })
}
