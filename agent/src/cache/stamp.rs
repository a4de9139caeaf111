//! Proof that an entry is still what the cache stored: its stamp.
//!
//! Jobs get hard links to cache entries, so a job owns (as the same user)
//! the very inode later jobs will read; it can `chmod u+w` it and write. An
//! entry's size says little (same-size writes keep it), its mtime and mode
//! can be set back (`utimensat`, `chmod`), but its **ctime** cannot: the
//! kernel sets it to "now" on every write, truncate, chmod, link, unlink
//! and `utimensat`, and no unprivileged call sets it back. So the cache
//! records, under `locks/<H>.stamp`, the entry's device, inode, size, mode,
//! mtime and ctime whenever it vouches for the entry, and before every hand
//! out compares them with one `stat`. Any difference means something
//! touched the inode since: the entry is removed and downloaded again.
//!
//! The cache's own links and unlinks change the ctime too, so every one of
//! them happens under the stamp file's exclusive lock, between a check and
//! a new stamp: check, link, `stat`, stamp. That makes the record a chain:
//! each stamp is written only after the previous one was verified, and a
//! change by anyone else breaks the chain at the next check. At the end of
//! an attempt the job's link is taken back the same way (check, unlink,
//! stamp), which also notices a change made by the job that just ran.
//!
//! A hash would prove the content too, but costs reading the whole file on
//! every hit (about 0.5 s per GiB here); a stamp costs a `stat` and a small
//! `pread`/`pwrite`. What a stamp cannot see is described in
//! docs/security.md: a job running as the agent's user can rewrite the stamp
//! file itself, and a change made while another job reads the entry is seen
//! by that reader.
//!
//! The stamp file's mtime (it is rewritten at every use) is the entry's last
//! use for LRU eviction; touching the entry itself would change its ctime.

use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::Duration;

use super::layout::Layout;
use super::lock::{FileLock, Mode};

/// The record's fixed length: a shorter old record is fully overwritten.
const RECORD_LEN: usize = 160;
/// The record's first word, so that a future format is recognized.
const MAGIC: &str = "toil-cache-stamp-v1";

/// What an entry's inode looked like when the cache last vouched for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mode: u32,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    pub fn of(md: &Metadata) -> Stamp {
        Stamp {
            dev: md.dev(),
            ino: md.ino(),
            size: md.size(),
            mode: md.mode(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
        }
    }

    pub fn dev(&self) -> u64 {
        self.dev
    }

    pub fn ino(&self) -> u64 {
        self.ino
    }

    fn encode(&self) -> [u8; RECORD_LEN] {
        let text = format!(
            "{MAGIC} {} {} {} {:o} {}.{:09} {}.{:09}\n",
            self.dev,
            self.ino,
            self.size,
            self.mode,
            self.mtime.0,
            self.mtime.1,
            self.ctime.0,
            self.ctime.1
        );
        let mut rec = [b' '; RECORD_LEN];
        let n = text.len().min(RECORD_LEN);
        rec[..n].copy_from_slice(&text.as_bytes()[..n]);
        rec
    }

    fn decode(rec: &[u8]) -> Option<Stamp> {
        let text = std::str::from_utf8(rec).ok()?;
        let mut w = text.split_whitespace();
        if w.next()? != MAGIC {
            return None;
        }
        let time = |s: &str| -> Option<(i64, i64)> {
            let (a, b) = s.split_once('.')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        };
        Some(Stamp {
            dev: w.next()?.parse().ok()?,
            ino: w.next()?.parse().ok()?,
            size: w.next()?.parse().ok()?,
            mode: u32::from_str_radix(w.next()?, 8).ok()?,
            mtime: time(w.next()?)?,
            ctime: time(w.next()?)?,
        })
    }

    /// What differs between the recorded stamp `self` and the entry now, in
    /// words for the warning.
    pub fn differences(&self, now: &Stamp) -> String {
        let mut what = Vec::new();
        if (self.dev, self.ino) != (now.dev, now.ino) {
            what.push("it is another file (inode)".to_string());
        }
        if self.size != now.size {
            what.push(format!("size {} -> {}", self.size, now.size));
        }
        if self.mode != now.mode {
            what.push(format!(
                "mode {:o} -> {:o}",
                self.mode & 0o7777,
                now.mode & 0o7777
            ));
        }
        if self.mtime != now.mtime {
            what.push("its content was written (mtime)".into());
        }
        if self.ctime != now.ctime {
            what.push("its inode was changed (ctime)".into());
        }
        what.join(", ")
    }

    /// True when `now` is the same file with the same size, mode and mtime:
    /// what a link or unlink by the cache itself leaves (it changes only the
    /// ctime and link count).
    fn same_but_ctime(&self, now: &Stamp) -> bool {
        Stamp {
            ctime: now.ctime,
            ..*self
        } == *now
    }
}

/// What a check of an entry found.
#[derive(Debug)]
pub(crate) enum Check {
    /// There, and as stamped.
    Good(Stamp),
    /// Not there.
    Absent,
    /// There, but not as stamped (or never stamped: stored by an agent that
    /// predates stamps, or interrupted between its rename and its stamp).
    Changed(String),
}

/// An entry's stamp file, locked exclusively. Every change to the entry's
/// inode made by the cache happens while one is held.
#[derive(Debug)]
pub(crate) struct Record {
    lock: FileLock,
}

impl Record {
    /// Locks the stamp of entry `name`, waiting at most `timeout`.
    pub fn lock(layout: &Layout, name: &str, timeout: Duration) -> io::Result<Record> {
        let lock = FileLock::acquire_within(&layout.stamp(name), Mode::Exclusive, timeout)?;
        Ok(Record { lock })
    }

    /// Locks the stamp of entry `name` if nobody holds it (for eviction).
    pub fn try_lock(layout: &Layout, name: &str) -> io::Result<Option<Record>> {
        Ok(
            FileLock::try_acquire(&layout.stamp(name), Mode::Exclusive)?
                .map(|lock| Record { lock }),
        )
    }

    fn read(&self) -> io::Result<Option<Stamp>> {
        let mut buf = [0u8; RECORD_LEN];
        let mut n = 0;
        while n < RECORD_LEN {
            match self.lock.file().read_at(&mut buf[n..], n as u64) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Stamp::decode(&buf[..n]))
    }

    /// Records `s`. A torn write (a crash mid-way) reads back as a stamp
    /// that matches nothing, which costs one download, never a bad hit.
    pub fn write(&self, s: &Stamp) -> io::Result<()> {
        self.lock.file().write_all_at(&s.encode(), 0)
    }

    /// Forgets the stamp (the entry is gone).
    fn clear(&self) -> io::Result<()> {
        self.lock.file().set_len(0)
    }

    /// Compares `entry` with its stamp.
    pub fn check(&self, entry: &Path) -> io::Result<Check> {
        let md = match fs::symlink_metadata(entry) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Check::Absent),
            Err(e) => return Err(e),
        };
        let now = Stamp::of(&md);
        if !md.file_type().is_file() {
            return Ok(Check::Changed("it is not a regular file".into()));
        }
        Ok(match self.read()? {
            Some(s) if s == now => Check::Good(now),
            Some(s) => Check::Changed(s.differences(&now)),
            None => Check::Changed("it has no stamp".into()),
        })
    }

    /// Stamps `entry` as it is now: right after the cache published it,
    /// with the bytes verified.
    pub fn stamp_now(&self, entry: &Path) -> io::Result<Stamp> {
        let s = Stamp::of(&fs::symlink_metadata(entry)?);
        self.write(&s)?;
        Ok(s)
    }

    /// After the cache linked or unlinked `entry` (checked as `before`):
    /// stamps it again if only its ctime changed. Anything else changed in
    /// between is a change by someone else: `Err` with what it was.
    pub fn restamp(&self, entry: &Path, before: &Stamp) -> io::Result<Result<Stamp, String>> {
        let now = Stamp::of(&fs::symlink_metadata(entry)?);
        if !before.same_but_ctime(&now) {
            return Ok(Err(before.differences(&now)));
        }
        self.write(&now)?;
        Ok(Ok(now))
    }

    /// Removes `entry` (which was checked under this lock and found
    /// changed) and forgets its stamp. Jobs that hold links keep their
    /// (changed) inode; nobody gets it from the cache again.
    pub fn remove(&self, entry: &Path) -> io::Result<()> {
        match fs::remove_file(entry) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.clear()
    }

    /// Deletes the stamp file itself, with the entry already gone (eviction).
    pub fn delete(self) -> io::Result<()> {
        self.lock.remove()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn setup() -> io::Result<(tempfile::TempDir, Layout, std::path::PathBuf)> {
        let dir = tempfile::tempdir()?;
        let layout = Layout::new(dir.path());
        for d in layout.dirs() {
            fs::create_dir_all(d)?;
        }
        let entry = layout.entry("e");
        fs::write(&entry, b"original")?;
        fs::set_permissions(&entry, fs::Permissions::from_mode(0o444))?;
        Ok((dir, layout, entry))
    }

    #[test]
    fn records_round_trip() {
        let s = Stamp {
            dev: 64769,
            ino: 1 << 40,
            size: 12345,
            mode: 0o100444,
            mtime: (1_700_000_000, 5),
            ctime: (-1, 999_999_999),
        };
        assert_eq!(Stamp::decode(&s.encode()), Some(s));
        assert_eq!(Stamp::decode(b""), None);
        assert_eq!(Stamp::decode(b"something else 1 2 3"), None);
    }

    #[test]
    fn a_same_size_write_and_a_chmod_set_back_are_noticed() -> io::Result<()> {
        let (_dir, layout, entry) = setup()?;
        let rec = Record::lock(&layout, "e", Duration::from_secs(1))?;
        assert!(matches!(rec.check(&entry)?, Check::Changed(w) if w == "it has no stamp"));
        let first = rec.stamp_now(&entry)?;
        assert!(matches!(rec.check(&entry)?, Check::Good(s) if s == first));

        // What the attacking job did: make it writable, write the same
        // number of bytes, put the mode and mtime back.
        let before = fs::metadata(&entry)?;
        fs::set_permissions(&entry, fs::Permissions::from_mode(0o644))?;
        fs::write(&entry, b"poisoned")?;
        fs::File::open(&entry)?.set_modified(before.modified()?)?;
        fs::set_permissions(&entry, fs::Permissions::from_mode(0o444))?;
        let now = fs::metadata(&entry)?;
        assert_eq!((now.len(), now.mode()), (before.len(), before.mode()));
        assert_eq!(now.modified()?, before.modified()?);
        match rec.check(&entry)? {
            Check::Changed(w) => assert_eq!(w, "its inode was changed (ctime)"),
            other => panic!("not noticed: {other:?}"),
        }

        // Removal forgets the stamp with the file.
        rec.remove(&entry)?;
        assert!(matches!(rec.check(&entry)?, Check::Absent));
        assert_eq!(rec.read()?, None);
        Ok(())
    }

    #[test]
    fn the_caches_own_links_keep_the_chain_and_others_break_it() -> io::Result<()> {
        let (dir, layout, entry) = setup()?;
        let rec = Record::lock(&layout, "e", Duration::from_secs(1))?;
        let s0 = rec.stamp_now(&entry)?;
        let link = dir.path().join("job-link");
        fs::hard_link(&entry, &link)?;
        let s1 = rec.restamp(&entry, &s0)?.map_err(io::Error::other)?;
        assert_ne!(s1.ctime, s0.ctime, "a link changes the ctime");
        assert!(matches!(rec.check(&entry)?, Check::Good(_)));
        fs::remove_file(&link)?;
        let s2 = rec.restamp(&entry, &s1)?.map_err(io::Error::other)?;
        assert!(matches!(rec.check(&entry)?, Check::Good(s) if s == s2));

        // A write between the check and the restamp is not laundered.
        fs::hard_link(&entry, &link)?;
        fs::set_permissions(&link, fs::Permissions::from_mode(0o644))?;
        fs::write(&link, b"poisoned")?;
        let r = rec.restamp(&entry, &s2)?;
        assert!(
            matches!(&r, Err(w) if w.contains("mode 444 -> 644")),
            "{r:?}"
        );
        Ok(())
    }

    #[test]
    fn the_stamp_lock_is_taken_with_a_deadline() -> io::Result<()> {
        let (_dir, layout, _entry) = setup()?;
        let _held = Record::lock(&layout, "e", Duration::from_secs(1))?;
        let err = Record::lock(&layout, "e", Duration::from_millis(100))
            .err()
            .ok_or_else(|| io::Error::other("granted twice"))?;
        assert!(super::super::lock::Timeout::of(&err).is_some(), "{err}");
        assert!(Record::try_lock(&layout, "e")?.is_none());
        Ok(())
    }
}
