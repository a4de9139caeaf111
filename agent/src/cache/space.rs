//! Disk space: reserving room for a download, evicting least recently used
//! entries that no job holds, node-wide disk reservations, and sweeping what
//! dead processes left behind.
//!
//! Every decision about space is made while holding `locks/space.lock`
//! exclusively, and a download's reservation is visible to the next decision
//! as soon as the lock is released: the temporary file carries the size it
//! reserves in its name, so a half-written download counts at its full size.
//! This keeps the cache under a budget even when many processes start
//! downloads at once.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::layout::{self, Layout};
use super::lock::{FileLock, Mode};
use super::stamp::Record;

/// Default free-space margin as a fraction of the filesystem (5%)...
const DEFAULT_MARGIN_PERCENT: u64 = 5;
/// ...but never more than this.
const DEFAULT_MARGIN_CAP: u64 = 10 << 30;
/// A reservation still being created (`.tmp-` name) older than this is
/// debris from a process killed mid-way.
const STALE_RESERVATION_AGE: Duration = Duration::from_secs(600);

/// What the budget is.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Policy {
    /// Total bytes of entries plus in-flight downloads, if set.
    pub max_bytes: Option<u64>,
    /// Without `max_bytes`: free space to leave on the filesystem (on top of
    /// other attempts' reservations). `None` for the default.
    pub min_free_bytes: Option<u64>,
    /// The longest wait for `space.lock`; a job on the node can hold it.
    pub lock_timeout: Duration,
}

/// The outcome of asking for room.
#[derive(Debug)]
pub(crate) enum Reserved {
    /// Room was made; download into this file.
    Tmp(TempFile),
    /// The file cannot fit in the cache budget (it is larger than the
    /// budget, or jobs hold too much of it). The caller stages it privately.
    OverBudget,
}

/// A temporary file that is removed when dropped, unless published.
#[derive(Debug)]
pub(crate) struct TempFile {
    path: PathBuf,
    published: bool,
}

impl TempFile {
    /// Creates `path` exclusively.
    pub fn create(path: PathBuf) -> io::Result<TempFile> {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)?;
        Ok(TempFile {
            path,
            published: false,
        })
    }

    /// Wraps an existing file the caller created.
    pub fn adopt(path: PathBuf) -> TempFile {
        TempFile {
            path,
            published: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the file read-only, syncs it, renames it to `dest` and syncs
    /// the destination directory: after this returns, `dest` is complete
    /// and durable, and nobody ever saw it partial.
    pub fn publish(mut self, dest: &Path) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&self.path, fs::Permissions::from_mode(0o444))?;
        File::open(&self.path)?.sync_all()?;
        fs::rename(&self.path, dest)?;
        self.published = true;
        if let Some(dir) = dest.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A disk reservation registered node-wide for the life of an attempt.
/// The owner holds an exclusive lock on the file, so a reservation whose
/// owner died is recognized (its lock is free) and ignored.
#[derive(Debug)]
pub(crate) struct Reservation {
    path: PathBuf,
    /// Held for the reservation's life (`None` only while being dropped).
    lock: Option<FileLock>,
    /// Where the file waits for the agent's next attempt when this one ends.
    spare: Option<Spare>,
}

/// An agent's reservation file between attempts: renamed to an uncounted
/// `.tmp-` name and still locked, so that the next attempt registers with a
/// rename rather than a new file. (On ext4, creating and deleting a file per
/// attempt cost more CPU than running a trivial job.)
pub(crate) type Spare = std::sync::Arc<std::sync::Mutex<Option<Reservation>>>;

impl Reservation {
    /// Registers `bytes` of reserved disk, reusing the file parked in
    /// `spare` when there is one; when this reservation ends its file is
    /// parked there again.
    pub fn register(layout: &Layout, bytes: u64, spare: Option<&Spare>) -> io::Result<Reservation> {
        let pid = std::process::id();
        let rand: u32 = rand::random();
        let path = layout
            .reservations
            .join(format!("{pid}-{rand:08x}-{bytes}"));
        let parked = spare.and_then(|s| s.lock().ok()?.take());
        if let Some(mut r) = parked {
            // Still locked: the rename makes it count under its new size.
            fs::rename(&r.path, &path)?;
            r.path = path;
            r.spare = spare.cloned();
            return Ok(r);
        }
        // Lock under a name nobody counts yet, then rename: the lock follows
        // the inode, so the reservation is never visible unlocked.
        let tmp = layout
            .reservations
            .join(format!(".tmp-{pid}-{rand:08x}-{bytes}"));
        // A fresh random name: nobody else holds it, unless on purpose.
        let lock = FileLock::try_acquire(&tmp, Mode::Exclusive)?.ok_or_else(|| {
            io::Error::other(format!(
                "{} is locked by another process before this agent created it",
                tmp.display()
            ))
        })?;
        fs::rename(&tmp, &path)?;
        Ok(Reservation {
            path,
            lock: Some(lock),
            spare: spare.cloned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(spare) = self.spare.take() {
            let rand: u32 = rand::random();
            let parked = self
                .path
                .with_file_name(format!(".tmp-{}-{rand:08x}-spare", std::process::id()));
            if fs::rename(&self.path, &parked).is_ok()
                && let Ok(mut slot) = spare.lock()
            {
                // A file already parked there (none is expected) is dropped,
                // which deletes it.
                *slot = Some(Reservation {
                    path: parked,
                    lock: self.lock.take(),
                    spare: None,
                });
                return;
            }
        }
        // Still holding the lock, so nobody can mistake it for stale.
        let _ = fs::remove_file(&self.path);
    }
}

/// One finished entry, as found on disk.
#[derive(Debug)]
struct EntryInfo {
    name: String,
    len: u64,
    nlink: u64,
    accessed: SystemTime,
}

/// What the cache directory holds right now.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    entries: Vec<EntryInfo>,
    /// Bytes of finished entries.
    pub entry_bytes: u64,
    /// Bytes in-flight downloads reserve (their declared size, or more if
    /// they grew past it).
    pub tmp_reserved: u64,
    /// Bytes in-flight downloads have yet to write.
    pub tmp_pending: u64,
}

/// Lists entries and in-flight downloads.
pub(crate) fn scan(layout: &Layout) -> io::Result<Scan> {
    let mut s = Scan::default();
    for e in fs::read_dir(&layout.entries)? {
        let e = e?;
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !layout::is_entry_name(&name) {
            continue;
        }
        let md = match e.metadata() {
            Ok(m) => m,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        s.entry_bytes += md.len();
        // The last use is when the stamp was last written (touching the
        // entry would change its ctime); no stamp: oldest.
        let accessed = fs::metadata(layout.stamp(&name))
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        s.entries.push(EntryInfo {
            name,
            len: md.len(),
            nlink: md.nlink(),
            accessed,
        });
    }
    for e in fs::read_dir(&layout.tmp)? {
        let e = e?;
        let file_name = e.file_name();
        let Some(t) = file_name.to_str().and_then(layout::parse_tmp) else {
            continue;
        };
        let len = match e.metadata() {
            Ok(m) => m.len(),
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        s.tmp_reserved += t.size.max(len);
        s.tmp_pending += t.size.saturating_sub(len);
    }
    Ok(s)
}

/// Makes room for `size` more bytes and creates the temporary file for
/// entry `name`. The caller holds the entry's download lock.
///
/// With a byte budget, evicts until entries plus in-flight downloads plus
/// `size` fit; if they cannot, [`Reserved::OverBudget`]. Without one,
/// evicts until free space minus pending downloads covers `size` plus the
/// margin plus every other live reservation on the node; if it cannot, an
/// error of kind `StorageFull` whose message gives the figures.
pub(crate) fn reserve(
    layout: &Layout,
    policy: Policy,
    name: &str,
    size: u64,
    own_reservation: Option<&Path>,
) -> io::Result<Reserved> {
    let _space =
        FileLock::acquire_within(&layout.space_lock(), Mode::Exclusive, policy.lock_timeout)?;
    sweep_tmp(layout)?;
    let mut scan = scan(layout)?;
    match policy.max_bytes {
        Some(max) => {
            if size > max {
                return Ok(Reserved::OverBudget);
            }
            let used = scan.entry_bytes + scan.tmp_reserved;
            let over = (used + size).saturating_sub(max);
            if over > 0 && evict(layout, &mut scan.entries, over, |e| e.len)? < over {
                return Ok(Reserved::OverBudget);
            }
        }
        None => {
            let fs = nix::sys::statvfs::statvfs(&layout.root).map_err(io::Error::from)?;
            let frsize = fs.fragment_size() as u64;
            let avail = fs.blocks_available() as u64 * frsize;
            let total = fs.blocks() as u64 * frsize;
            let margin = policy
                .min_free_bytes
                .unwrap_or_else(|| default_margin(total));
            let others = live_reservations(layout, own_reservation)?;
            let need = margin + others + scan.tmp_pending + size;
            if need > avail {
                let short = need - avail;
                // Only entries no job has linked free space when removed.
                let freed = evict(layout, &mut scan.entries, short, |e| {
                    if e.nlink == 1 { e.len } else { 0 }
                })?;
                if freed < short {
                    return Err(io::Error::new(
                        io::ErrorKind::StorageFull,
                        format!(
                            "{avail} bytes free on {}, {} still to be written by downloads in flight, \
                             {others} reserved by running jobs, {margin} kept free as a margin; \
                             evicting every unused cache entry freed only {freed}",
                            layout.root.display(),
                            scan.tmp_pending
                        ),
                    ));
                }
            }
        }
    }
    Ok(Reserved::Tmp(TempFile::create(layout.new_tmp(name, size))?))
}

/// The default free-space margin for a filesystem of `total` bytes.
fn default_margin(total: u64) -> u64 {
    (total / 100 * DEFAULT_MARGIN_PERCENT).min(DEFAULT_MARGIN_CAP)
}

/// Removes least recently used entries that no job holds until `frees` of
/// the removed ones add up to `target`. Returns what was freed.
fn evict(
    layout: &Layout,
    entries: &mut [EntryInfo],
    target: u64,
    frees: impl Fn(&EntryInfo) -> u64,
) -> io::Result<u64> {
    entries.sort_by(|a, b| a.accessed.cmp(&b.accessed).then(a.name.cmp(&b.name)));
    let mut freed = 0;
    for e in entries.iter() {
        if freed >= target {
            break;
        }
        let gain = frees(e);
        if gain == 0 {
            continue;
        }
        // Holders (running jobs, and stagers between their check and their
        // link) keep a shared lock; if any exists, skip the entry.
        let Some(lock) = FileLock::try_acquire(&layout.use_lock(&e.name), Mode::Exclusive)? else {
            continue;
        };
        // Whoever holds the stamp is checking or stamping it: skip it too.
        let Some(rec) = Record::try_lock(layout, &e.name)? else {
            continue;
        };
        match fs::remove_file(layout.entry(&e.name)) {
            Ok(()) => {
                freed += gain;
                tracing::info!(entry = %e.name, bytes = e.len, "evicted cache entry");
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        rec.delete()?;
        lock.remove()?;
    }
    Ok(freed)
}

/// Sums the live reservations of other attempts on the node, deleting those
/// whose owner died.
fn live_reservations(layout: &Layout, own: Option<&Path>) -> io::Result<u64> {
    let mut sum = 0;
    for e in fs::read_dir(&layout.reservations)? {
        let e = e?;
        let path = e.path();
        let file_name = e.file_name();
        let Some(name) = file_name.to_str() else {
            continue;
        };
        if name.starts_with(".tmp-") {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_RESERVATION_AGE);
            if old && let Some(l) = FileLock::try_acquire(&path, Mode::Exclusive)? {
                l.remove()?;
            }
            continue;
        }
        let Some(bytes) = layout::parse_reservation(name) else {
            continue;
        };
        if Some(path.as_path()) == own {
            continue;
        }
        match FileLock::try_acquire(&path, Mode::Exclusive)? {
            // Nobody holds it: the attempt's process is gone.
            Some(l) => l.remove()?,
            None => sum += bytes,
        }
    }
    Ok(sum)
}

/// Removes temporary files whose download is no longer in progress (their
/// entry's download lock is free: the downloader died).
pub(crate) fn sweep_tmp(layout: &Layout) -> io::Result<()> {
    for e in fs::read_dir(&layout.tmp)? {
        let e = e?;
        let file_name = e.file_name();
        let Some(t) = file_name.to_str().and_then(layout::parse_tmp) else {
            continue;
        };
        if let Some(dl) = FileLock::try_acquire(&layout.download_lock(t.entry), Mode::Exclusive)? {
            match fs::remove_file(e.path()) {
                Ok(()) => tracing::info!(file = %e.path().display(), "removed stale download"),
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
            dl.remove()?;
        }
    }
    Ok(())
}

/// The bytes written so far by downloads of entry `name` (the progress a
/// waiter for its download lock watches).
pub(crate) fn tmp_bytes_of(layout: &Layout, name: &str) -> u64 {
    let Ok(rd) = fs::read_dir(&layout.tmp) else {
        return 0;
    };
    rd.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(layout::parse_tmp)
                .is_some_and(|t| t.entry == name)
        })
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Removes the temporary files of entry `name`. Only for the holder of its
/// download lock, for whom every such file is debris.
pub(crate) fn remove_tmp_of(layout: &Layout, name: &str) -> io::Result<()> {
    for e in fs::read_dir(&layout.tmp)? {
        let e = e?;
        let file_name = e.file_name();
        if file_name
            .to_str()
            .and_then(layout::parse_tmp)
            .is_some_and(|t| t.entry == name)
        {
            match fs::remove_file(e.path()) {
                Ok(()) => tracing::info!(file = %e.path().display(), "removed stale download"),
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        }
    }
    Ok(())
}

/// Removes lock files left for entries that no longer exist and that nobody
/// holds. Run when a cache is opened.
pub(crate) fn sweep_locks(layout: &Layout) -> io::Result<()> {
    for e in fs::read_dir(&layout.locks)? {
        let e = e?;
        let file_name = e.file_name();
        let Some(name) = file_name.to_str() else {
            continue;
        };
        let of_entry = name
            .strip_suffix(".use")
            .or_else(|| name.strip_suffix(".stamp"));
        let orphan = if let Some(entry) = of_entry {
            !layout.entry(entry).exists()
        } else {
            name.ends_with(".dl")
        };
        if !orphan {
            continue;
        }
        if let Some(l) = FileLock::try_acquire(&e.path(), Mode::Exclusive)? {
            // Holding the use (or stamp) lock exclusively, nobody can
            // create the entry.
            let still_orphan = match of_entry {
                Some(entry) => !layout.entry(entry).exists(),
                None => true,
            };
            if still_orphan {
                l.remove()?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_margin_is_five_percent_capped() {
        assert_eq!(default_margin(100 << 30), 5 << 30);
        assert_eq!(default_margin(1 << 40), 10 << 30);
    }

    #[test]
    fn reservations_of_dead_owners_do_not_count() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let layout = Layout::new(dir.path());
        for d in layout.dirs() {
            fs::create_dir_all(d)?;
        }
        let mine = Reservation::register(&layout, 100, None)?;
        let other = Reservation::register(&layout, 1000, None)?;
        // A reservation file nobody holds, as a killed process leaves it.
        fs::write(layout.reservations.join("999-dead-5000"), b"")?;
        assert_eq!(live_reservations(&layout, Some(mine.path()))?, 1000);
        assert!(!layout.reservations.join("999-dead-5000").exists());
        drop(other);
        assert_eq!(live_reservations(&layout, Some(mine.path()))?, 0);
        assert_eq!(live_reservations(&layout, None)?, 100);
        Ok(())
    }

    #[test]
    fn a_spare_reservation_is_reused_and_not_counted_while_parked() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let layout = Layout::new(dir.path());
        for d in layout.dirs() {
            fs::create_dir_all(d)?;
        }
        let spare = Spare::default();
        let first = Reservation::register(&layout, 100, Some(&spare))?;
        let inode = fs::metadata(first.path())?.ino();
        assert_eq!(live_reservations(&layout, None)?, 100);
        drop(first);
        assert_eq!(live_reservations(&layout, None)?, 0, "parked: not counted");
        assert_eq!(fs::read_dir(&layout.reservations)?.count(), 1);
        let second = Reservation::register(&layout, 700, Some(&spare))?;
        assert_eq!(fs::metadata(second.path())?.ino(), inode, "the same file");
        assert_eq!(live_reservations(&layout, None)?, 700);
        drop(second);
        drop(spare);
        assert_eq!(
            fs::read_dir(&layout.reservations)?.count(),
            0,
            "removed with the agent"
        );
        Ok(())
    }
}
