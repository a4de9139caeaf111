//! The node cache: job-store files shared by every agent on a node.
//!
//! The cache lives in one directory (`$TOIL_WORKDIR/cache`, on Kubernetes on
//! the host path) and is shared by every agent process on the node with no
//! daemon and no database: coordination is `flock` on per-entry lock files,
//! which the kernel releases when a process dies, so a killed agent never
//! leaves the cache locked.
//!
//! - Files are immutable by job-store id, so an entry, once complete, is
//!   valid as long as nobody changed it. Entries are named by a hash of the
//!   id.
//! - A download goes to a temporary file, is verified against the expected
//!   SHA-256, fsynced, made read-only and renamed into place (and the
//!   directory fsynced): no reader ever sees a partial entry.
//! - Every entry has a stamp (see `stamp`): its inode's identity, size,
//!   mode, mtime and ctime, checked before every hand-out and when the
//!   attempt that held it ends. Jobs get hard links, so a job can write to
//!   the shared inode; the ctime shows it, and a changed entry is removed and
//!   downloaded again.
//! - One download per entry per node at a time: the downloader holds the
//!   entry's exclusive download lock; others wait for it (polling on a
//!   blocking-pool thread), then find the finished entry.
//! - Every lock is taken with a deadline (`lock_timeout`): a job runs as the
//!   agent's user and can hold a lock file, so waiting forever would let one
//!   job stop every other pod's staging. Staging as a whole has a deadline
//!   too (`staging_timeout`).
//! - A job holds a shared "use" lock on each entry it staged until its
//!   [`Staged`] is finished; eviction takes that lock exclusively without
//!   waiting, so it never removes an entry a job holds.
//! - Jobs get read-only hard links into their work directory, or private
//!   copies for inputs they declare writable.
//! - Outputs a job uploaded go in too ([`NodeCache::insert_output`]), once
//!   their bytes are hashed again against the upload.
//! - Eviction is least recently used (by the stamp's mtime, rewritten on
//!   every use) against `max_bytes`, or else against the filesystem's free
//!   space minus a margin and the disk running jobs reserved.
//! - With `disabled`, every job downloads privately and nothing is shared.
//!
//! See `layout` for the directory structure, `space` for the budget,
//! `stamp` for the change detection and `lock` for the deadlines.

mod error;
mod layout;
pub(crate) mod lock;
mod space;
mod stamp;

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use toil_jobstore::{JobStore, Transfer};
use toil_proto::v1::{ResourceUsage, StagedInput};

pub use error::CacheError;

use layout::Layout;
use lock::{FileLock, Mode};
use space::{Policy, Reservation, Reserved, TempFile};
use stamp::{Check, Record, Stamp};

/// Inputs of one attempt staged at the same time.
const STAGE_CONCURRENCY: usize = 4;
/// The default longest wait for one node cache lock (`--cacheLockTimeout`).
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(120);
/// The default longest time to stage one attempt's inputs
/// (`--stagingTimeout`).
pub const DEFAULT_STAGING_TIMEOUT: Duration = Duration::from_secs(3600);

/// How the cache behaves.
#[derive(Clone, Debug)]
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
    /// The longest wait for any one cache lock. A job runs as the agent's
    /// user, so it can open and hold a lock file; past this, staging fails
    /// with [`CacheError::LockTimeout`] naming the lock and its holder. A
    /// download lock is waited for as long as its holder's download grows.
    pub lock_timeout: Duration,
    /// The longest time to stage one attempt's inputs, downloads included.
    pub staging_timeout: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_bytes: None,
            disabled: false,
            min_free_bytes: None,
            debug_publish_delay: None,
            sweep_interval: Duration::ZERO,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            staging_timeout: DEFAULT_STAGING_TIMEOUT,
        }
    }
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
/// give it to [`NodeCache::finish`] when the attempt ends (dropping it
/// releases the entries without checking them, and the links left behind
/// make their next use download again).
#[derive(Debug, Default)]
pub struct Staged {
    /// The attempt's work directory.
    work_dir: PathBuf,
    /// The entries placed as hard links, for [`NodeCache::finish`].
    linked: Vec<Linked>,
    /// Changed entries found (and replaced) while staging, for the job's
    /// log.
    warnings: Vec<String>,
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

    /// What the job's log should say about staging: cache entries found
    /// changed since they were stored, and downloaded again.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// A hard link from a work directory to a cache entry, taken back by
/// [`NodeCache::finish`].
#[derive(Debug)]
struct Linked {
    /// The entry's name.
    name: String,
    /// `input DEST (FILE_ID)`, for messages.
    what: String,
    /// The link in the work directory.
    dest: PathBuf,
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
    /// Outputs written through as links from a work directory, until the
    /// attempt's [`NodeCache::finish`] takes them back.
    written: Mutex<Vec<Linked>>,
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

/// Creates `dir` 0700, or makes an existing one 0700 if others could write
/// to it (a cache made by an older agent): other users must not reach the
/// lock files.
fn private_dir(dir: &Path) -> io::Result<()> {
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let md = fs::metadata(dir)?;
    if md.mode() & 0o077 != 0
        && let Err(e) = fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
    {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot make the cache directory private (0700); other users on this node may hold its locks");
    }
    Ok(())
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
                private_dir(d).map_err(|e| {
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
                written: Mutex::new(Vec::new()),
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
    /// file (and its stamp shows it unchanged), otherwise downloading it
    /// once for the whole node.
    ///
    /// `disk_reservation` is the scratch disk the attempt asked for; it is
    /// registered node-wide for the life of the returned [`Staged`] so that
    /// other agents' eviction leaves that much free (it is not counted
    /// against this attempt's own downloads, which are part of it).
    ///
    /// Hand the result to [`NodeCache::finish`] when the attempt ends. On
    /// error, the links already placed are taken back and nothing stays
    /// locked. Gives up with [`CacheError::StagingTimeout`] after
    /// `staging_timeout`.
    pub async fn stage(
        &self,
        store: &JobStore,
        inputs: &[CacheInput],
        work_dir: &Path,
        disk_reservation: u64,
    ) -> Result<Staged, CacheError> {
        let limit = self.inner.cfg.staging_timeout;
        match tokio::time::timeout(
            limit,
            self.stage_all(store, inputs, work_dir, disk_reservation),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(CacheError::StagingTimeout { limit }),
        }
    }

    async fn stage_all(
        &self,
        store: &JobStore,
        inputs: &[CacheInput],
        work_dir: &Path,
        disk_reservation: u64,
    ) -> Result<Staged, CacheError> {
        let dests = destinations(inputs, work_dir)?;
        let mut staged = Staged {
            work_dir: work_dir.to_path_buf(),
            ..Staged::default()
        };
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
        // Every input runs to its end (no short cut on the first error), so
        // that every link placed is known and taken back on failure.
        let results: Vec<Result<One, CacheError>> =
            futures::stream::iter(inputs.iter().zip(dests.iter()))
                .map(|(input, dest)| self.stage_one(store, input, dest, own.as_deref()))
                .buffered(STAGE_CONCURRENCY)
                .collect()
                .await;
        let mut failed = None;
        for (r, (input, dest)) in results.into_iter().zip(inputs.iter().zip(dests)) {
            let one = match r {
                Ok(one) => one,
                Err(e) => {
                    failed.get_or_insert(e);
                    continue;
                }
            };
            match one.outcome {
                Outcome::Hit => staged.stats.hits += 1,
                Outcome::Miss(n) | Outcome::Private(n) => {
                    staged.stats.misses += 1;
                    staged.stats.bytes_downloaded += n;
                }
            }
            staged.holds.extend(one.hold);
            staged.warnings.extend(one.warning);
            if one.linked {
                staged.linked.push(Linked {
                    name: layout::entry_name(&input.file_id, &input.sha256),
                    what: format!("input {} ({})", input.dest_path, input.file_id),
                    dest: dest.clone(),
                });
            }
            staged.files.push(StagedFile {
                file_id: input.file_id.clone(),
                path: dest,
                hit: one.outcome == Outcome::Hit,
            });
        }
        if let Some(e) = failed {
            self.finish(staged, true).await;
            return Err(e);
        }
        Ok(staged)
    }

    /// Ends an attempt's use of the cache. For every entry the attempt
    /// linked (its inputs, and outputs written through), checks the entry
    /// against its stamp: a change made while the job ran (by this job or
    /// another holding the same entry) is found here, and the entry is
    /// removed so that no later job gets it. With `unlink`, the job's link
    /// is removed and the entry stamped again (a later unlink by someone
    /// else would look like a change and cost a download); without it
    /// (`--keep-work-dir`), links stay. Then releases the entries and the
    /// disk reservation.
    ///
    /// Returns what the job's log should say (changes found, stamps that
    /// could not be checked). Never fails: the attempt's result is decided.
    pub async fn finish(&self, mut staged: Staged, unlink: bool) -> Vec<String> {
        if self.inner.cfg.disabled {
            return Vec::new();
        }
        let mut linked = std::mem::take(&mut staged.linked);
        if let Ok(mut p) = self.inner.written.lock() {
            let (mine, others): (Vec<Linked>, Vec<Linked>) = p
                .drain(..)
                .partition(|l| l.dest.starts_with(&staged.work_dir));
            *p = others;
            linked.extend(mine);
        }
        if linked.is_empty() {
            return Vec::new();
        }
        let inner = self.inner.clone();
        let warnings = blocking(move || {
            let warnings: Vec<String> = linked
                .iter()
                .filter_map(|l| inner.take_back(l, unlink))
                .collect();
            // Only now: the entries stayed held until checked.
            drop(staged);
            warnings
        })
        .await;
        warnings.unwrap_or_else(|e| vec![e.to_string()])
    }

    /// Puts a file a job produced (and that was just uploaded as `file_id`)
    /// into the cache, so that a later job on this node needing it does not
    /// download it. Hard-links `local_path` when it is on the cache's
    /// filesystem (the file becomes read-only), copies it otherwise.
    ///
    /// `uploaded` is what the upload reported: the bytes are hashed again
    /// and must match it (a process of the job could still write to the
    /// file), then stamped. Call it after the job's processes have exited.
    /// Returns true if the file was added; false if it was already cached,
    /// caching is disabled, it does not fit the budget, or it changed.
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

    /// Stages one input: the use lock to keep (none for a private
    /// download), how the file was obtained, and whether it is a link.
    async fn stage_one(
        &self,
        store: &JobStore,
        input: &CacheInput,
        dest: &Path,
        own_reservation: Option<&Path>,
    ) -> Result<One, CacheError> {
        if self.inner.cfg.disabled {
            let n = private_download(store, input, dest).await?;
            return Ok(One::private(n));
        }
        let name = layout::entry_name(&input.file_id, &input.sha256);
        let timeout = self.inner.cfg.lock_timeout;

        // 1. Hold the entry: from here until the attempt ends, eviction
        //    cannot remove it. On a hit, check and link it in the same trip
        //    to the blocking pool (a hit is then one thread hand-off).
        let (hold, found) = {
            let (layout, name, fid) = (
                self.inner.layout.clone(),
                name.clone(),
                input.file_id.clone(),
            );
            let (dest, writable) = (dest.to_path_buf(), input.writable);
            blocking(move || {
                let path = layout.use_lock(&name);
                let hold = FileLock::acquire_within(&path, Mode::Shared, timeout)
                    .map_err(|e| CacheError::io(&fid, format!("locking {}", path.display()), e))?;
                let found = hand_out(&layout, &name, &fid, &dest, writable, timeout)?;
                Ok::<_, CacheError>((hold, found))
            })
            .await??
        };
        let warning = match found {
            Found::Placed { linked } => {
                return Ok(One {
                    hold: Some(hold),
                    outcome: Outcome::Hit,
                    linked,
                    warning: None,
                });
            }
            Found::Changed(w) => Some(w),
            Found::Absent => None,
        };

        // 2. Download it (or wait for whoever is downloading it), and place
        //    it.
        let (outcome, linked, later) = self
            .fill(store, input, &name, dest, own_reservation)
            .await?;
        Ok(One {
            hold: (!matches!(outcome, Outcome::Private(_))).then_some(hold),
            outcome,
            linked,
            warning: warning.or(later),
        })
    }

    /// With the entry held but absent: takes its download lock and, unless
    /// someone completed it meanwhile, downloads it; places it at `dest`.
    /// Returns how, whether `dest` is a link, and a warning if an entry had
    /// to be removed on the way.
    async fn fill(
        &self,
        store: &JobStore,
        input: &CacheInput,
        name: &str,
        dest: &Path,
        own_reservation: Option<&Path>,
    ) -> Result<(Outcome, bool, Option<String>), CacheError> {
        let layout = self.inner.layout.clone();
        let timeout = self.inner.cfg.lock_timeout;
        let fid = &input.file_id;
        let (dest_buf, writable) = (dest.to_path_buf(), input.writable);
        let (dl, found) = {
            let (layout, name, fid, dest) = (
                layout.clone(),
                name.to_string(),
                fid.clone(),
                dest_buf.clone(),
            );
            blocking(move || {
                let path = layout.download_lock(&name);
                // Waits while another process downloads this entry, as long
                // as its download grows.
                let dl =
                    FileLock::acquire_while_progressing(&path, Mode::Exclusive, timeout, || {
                        space::tmp_bytes_of(&layout, &name)
                    })
                    .map_err(|e| CacheError::io(&fid, format!("locking {}", path.display()), e))?;
                let found = hand_out(&layout, &name, &fid, &dest, writable, timeout)?;
                if !matches!(found, Found::Placed { .. }) {
                    // Whatever is in tmp for this entry was left by a
                    // downloader that died (we hold its lock now).
                    space::remove_tmp_of(&layout, &name).map_err(|e| {
                        CacheError::io(&fid, format!("cleaning {}", layout.tmp.display()), e)
                    })?;
                }
                Ok::<_, CacheError>((dl, found))
            })
            .await??
        };
        let warning = match found {
            Found::Placed { linked } => {
                release(dl);
                return Ok((Outcome::Hit, linked, None));
            }
            Found::Changed(w) => Some(w),
            Found::Absent => None,
        };

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
        let policy = self.inner.policy();
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
                return Ok((Outcome::Private(n), false, warning));
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
        let linked = {
            let (name, fid) = (name.to_string(), fid.clone());
            blocking(move || {
                let entry = layout.entry(&name);
                let rec = Record::lock(&layout, &name, timeout).map_err(|e| {
                    CacheError::io(
                        &fid,
                        format!("locking {}", layout.stamp(&name).display()),
                        e,
                    )
                })?;
                let io_err = |e| CacheError::io(&fid, format!("publishing {}", entry.display()), e);
                tmp.publish(&entry).map_err(io_err)?;
                let stamp = rec.stamp_now(&entry).map_err(io_err)?;
                let placed = place_checked(&rec, &entry, &stamp, &fid, &dest_buf, writable)?;
                drop(rec);
                release(dl);
                match placed {
                    Found::Placed { linked } => Ok(linked),
                    // Changed between our publish and our link: only a
                    // process writing into the cache directory does that.
                    Found::Changed(w) => Err(CacheError::Io {
                        context: format!("placing {}", dest_buf.display()),
                        error: io::Error::other(w),
                    }),
                    Found::Absent => Err(CacheError::Io {
                        context: format!("placing {}", dest_buf.display()),
                        error: io::Error::other("the entry vanished as it was published"),
                    }),
                }
            })
            .await??
        };
        tracing::info!(file_id = %fid, bytes = t.size, secs = t0.elapsed().as_secs_f64(), "downloaded into the node cache");
        Ok((Outcome::Miss(t.size), linked, warning))
    }
}

// === impl Inner ===

impl Inner {
    fn policy(&self) -> Policy {
        Policy {
            max_bytes: self.cfg.max_bytes,
            min_free_bytes: self.cfg.min_free_bytes,
            lock_timeout: self.cfg.lock_timeout,
        }
    }

    /// At the end of an attempt: checks the entry behind one of its links
    /// and takes the link back (see [`NodeCache::finish`]). Returns a
    /// warning for the job's log, if any.
    fn take_back(&self, l: &Linked, unlink: bool) -> Option<String> {
        let layout = &self.layout;
        let entry = layout.entry(&l.name);
        let r = (|| -> Result<Option<String>, CacheError> {
            let io_err = |what: String| move |e| CacheError::io("", what, e);
            let rec = Record::lock(layout, &l.name, self.cfg.lock_timeout).map_err(io_err(
                format!("locking {}", layout.stamp(&l.name).display()),
            ))?;
            let checked = rec
                .check(&entry)
                .map_err(io_err(format!("checking {}", entry.display())))?;
            let s = match checked {
                // Removed meanwhile (changed, and noticed by another agent).
                Check::Absent => return Ok(None),
                Check::Changed(what) => {
                    rec.remove(&entry)
                        .map_err(io_err(format!("removing {}", entry.display())))?;
                    let w = format!(
                        "node cache: {} was changed while this job ran ({what}); the entry was removed, so no later job gets the changed file (this job, or another job on this node holding the same file, wrote to it)",
                        l.what
                    );
                    tracing::warn!(entry = %entry.display(), "{w}");
                    return Ok(Some(w));
                }
                Check::Good(s) => s,
            };
            if !unlink {
                return Ok(None);
            }
            let ours = fs::symlink_metadata(&l.dest)
                .is_ok_and(|m| (m.dev(), m.ino()) == (s.dev(), s.ino()));
            if !ours {
                return Ok(None);
            }
            fs::remove_file(&l.dest).map_err(io_err(format!("removing {}", l.dest.display())))?;
            match rec
                .restamp(&entry, &s)
                .map_err(io_err(format!("checking {}", entry.display())))?
            {
                Ok(_) => Ok(None),
                Err(what) => {
                    rec.remove(&entry)
                        .map_err(io_err(format!("removing {}", entry.display())))?;
                    Ok(Some(format!(
                        "node cache: {} changed as this job's link was removed ({what}); the entry was removed",
                        l.what
                    )))
                }
            }
        })();
        match r {
            Ok(w) => w,
            Err(e) => {
                // Unchecked: a later hit finds the stamp stale (the link
                // is removed with the work directory) and downloads again.
                let w = format!("node cache: could not check {} after the job: {e}", l.what);
                tracing::warn!("{w}");
                Some(w)
            }
        }
    }

    fn insert_blocking(
        &self,
        file_id: &str,
        sha256: &str,
        local: &Path,
        expected: u64,
    ) -> Result<bool, CacheError> {
        let layout = &self.layout;
        let timeout = self.cfg.lock_timeout;
        let name = layout::entry_name(file_id, sha256);
        let entry = layout.entry(&name);
        let io_err = |what: String| move |e| CacheError::io(file_id, what, e);

        let use_path = layout.use_lock(&name);
        let _hold = FileLock::acquire_within(&use_path, Mode::Shared, timeout)
            .map_err(io_err(format!("locking {}", use_path.display())))?;
        let dl_path = layout.download_lock(&name);
        let dl = FileLock::acquire_within(&dl_path, Mode::Exclusive, timeout)
            .map_err(io_err(format!("locking {}", dl_path.display())))?;
        {
            let rec = Record::lock(layout, &name, timeout)
                .map_err(io_err(format!("locking {}", layout.stamp(&name).display())))?;
            match rec
                .check(&entry)
                .map_err(io_err(format!("checking {}", entry.display())))?
            {
                Check::Good(_) => {
                    drop(rec);
                    release(dl);
                    return Ok(false);
                }
                Check::Changed(what) => {
                    tracing::warn!(file_id, entry = %entry.display(), "cache entry changed since it was stored ({what}); replacing it with the uploaded output");
                    rec.remove(&entry)
                        .map_err(io_err(format!("removing {}", entry.display())))?;
                }
                Check::Absent => {}
            }
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
        let placeholder = match space::reserve(layout, self.policy(), &name, size, None) {
            Ok(Reserved::Tmp(t)) => t,
            Ok(Reserved::OverBudget) => return Ok(false),
            // Write-through is an optimization: no room is not an error.
            Err(e) if e.kind() == io::ErrorKind::StorageFull => return Ok(false),
            Err(e) => return Err(CacheError::io(file_id, "reserving space", e)),
        };
        // A hard link costs nothing; the placeholder keeps the space
        // reserved until the link exists.
        let linked = layout.new_tmp(&name, size);
        let (tmp, is_link) = match fs::hard_link(local, &linked) {
            Ok(()) => (TempFile::adopt(linked), true),
            Err(_) => {
                fs::copy(local, placeholder.path()).map_err(io_err(format!(
                    "copying {} into the cache",
                    local.display()
                )))?;
                (placeholder, false)
            }
        };
        // The bytes come from the job's directory, where a process of the
        // job could still write: vouch for them only after hashing them
        // again, read-only, against what was uploaded.
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o444))
            .map_err(io_err(format!("protecting {}", tmp.path().display())))?;
        let before = Stamp::of(
            &fs::symlink_metadata(tmp.path())
                .map_err(io_err(format!("reading {}", tmp.path().display())))?,
        );
        let actual =
            sha256_of(tmp.path()).map_err(io_err(format!("hashing {}", tmp.path().display())))?;
        if !sha256.is_empty() && !actual.eq_ignore_ascii_case(sha256) {
            tracing::warn!(file_id, "output changed after its upload; not cached");
            return Ok(false);
        }
        let rec = Record::lock(layout, &name, timeout)
            .map_err(io_err(format!("locking {}", layout.stamp(&name).display())))?;
        tmp.publish(&entry)
            .map_err(io_err(format!("publishing {}", entry.display())))?;
        match rec
            .restamp(&entry, &before)
            .map_err(io_err(format!("checking {}", entry.display())))?
        {
            Ok(_) => {}
            Err(what) => {
                tracing::warn!(
                    file_id,
                    "output changed while it was cached ({what}); not cached"
                );
                rec.remove(&entry)
                    .map_err(io_err(format!("removing {}", entry.display())))?;
                return Ok(false);
            }
        }
        drop(rec);
        release(dl);
        if is_link && let Ok(mut w) = self.written.lock() {
            // Its name in the work directory is a link to the entry, taken
            // back by `finish` like an input's.
            w.push(Linked {
                name,
                what: format!("output {}", local.display()),
                dest: local.to_path_buf(),
            });
        }
        tracing::debug!(
            file_id,
            bytes = size,
            "output written through to the node cache"
        );
        Ok(true)
    }
}

// === helpers ===

/// What looking for an entry (under its stamp lock) found.
#[derive(Debug)]
enum Found {
    /// Good, and placed at the destination; `linked` when as a hard link.
    Placed { linked: bool },
    /// Not there.
    Absent,
    /// There but changed since stamped: removed, with the warning to give.
    Changed(String),
}

/// One staged input.
struct One {
    hold: Option<FileLock>,
    outcome: Outcome,
    linked: bool,
    warning: Option<String>,
}

impl One {
    fn private(n: u64) -> One {
        One {
            hold: None,
            outcome: Outcome::Private(n),
            linked: false,
            warning: None,
        }
    }
}

/// Locks the stamp of entry `name` and, if the entry is there as stamped,
/// places it at `dest`; if it changed, removes it and says so.
fn hand_out(
    layout: &Layout,
    name: &str,
    fid: &str,
    dest: &Path,
    writable: bool,
    timeout: Duration,
) -> Result<Found, CacheError> {
    let entry = layout.entry(name);
    let rec = Record::lock(layout, name, timeout)
        .map_err(|e| CacheError::io(fid, format!("locking {}", layout.stamp(name).display()), e))?;
    let checked = rec
        .check(&entry)
        .map_err(|e| CacheError::io(fid, format!("checking {}", entry.display()), e))?;
    match checked {
        Check::Absent => Ok(Found::Absent),
        Check::Changed(what) => Ok(changed(&rec, &entry, fid, &what)?),
        Check::Good(s) => place_checked(&rec, &entry, &s, fid, dest, writable),
    }
}

/// Removes a changed entry (under its stamp lock) and words the warning.
fn changed(rec: &Record, entry: &Path, fid: &str, what: &str) -> Result<Found, CacheError> {
    rec.remove(entry)
        .map_err(|e| CacheError::io(fid, format!("removing {}", entry.display()), e))?;
    let w = format!(
        "node cache: the cached copy of {fid} had changed since it was stored ({what}); it was removed and the file downloaded again"
    );
    tracing::warn!(entry = %entry.display(), "{w}");
    Ok(Found::Changed(w))
}

/// Places the entry, checked as `s` under `rec`, at `dest`, and stamps it
/// again: a link changes its ctime, and anything else that changed between
/// the check and now is someone else's doing (the entry is then removed,
/// and so is what was placed).
fn place_checked(
    rec: &Record,
    entry: &Path,
    s: &Stamp,
    fid: &str,
    dest: &Path,
    writable: bool,
) -> Result<Found, CacheError> {
    let linked = place(entry, dest, writable).map_err(|e| {
        CacheError::io(
            fid,
            format!("placing {} at {}", entry.display(), dest.display()),
            e,
        )
    })?;
    let checking = |e| CacheError::io(fid, format!("checking {}", entry.display()), e);
    let after = if linked {
        let same_inode =
            fs::symlink_metadata(dest).is_ok_and(|m| (m.dev(), m.ino()) == (s.dev(), s.ino()));
        if same_inode {
            rec.restamp(entry, s).map_err(checking)?
        } else {
            Err("it was replaced while being linked".into())
        }
    } else {
        // A copy changes nothing of the entry: it must be exactly as
        // checked (the stamp is written again to record the use).
        match rec.check(entry).map_err(checking)? {
            Check::Good(now) if now == *s => rec.write(s).map(|()| Ok(*s)).map_err(checking)?,
            Check::Good(_) | Check::Absent => Err("it changed while being copied".into()),
            Check::Changed(what) => Err(what),
        }
    };
    match after {
        Ok(_) => Ok(Found::Placed { linked }),
        Err(what) => {
            let _ = fs::remove_file(dest);
            changed(rec, entry, fid, &what)
        }
    }
}

/// The lowercase hex SHA-256 of a file.
fn sha256_of(path: &Path) -> io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

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

/// Puts `entry` at `dest`: a hard link (read-only, shared with the cache),
/// or a private writable copy. Falls back to a read-only copy when the work
/// directory is on another filesystem or links are not permitted. True when
/// `dest` is a link.
fn place(entry: &Path, dest: &Path, writable: bool) -> io::Result<bool> {
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
            Ok(()) => return Ok(true),
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
    fs::set_permissions(dest, fs::Permissions::from_mode(mode))?;
    Ok(false)
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
