//! Where things live inside the cache directory, and how names are formed.
//!
//! ```text
//! CACHE/
//!   entries/<H>                      finished, read-only files (H = sha256 of the file id)
//!   locks/<H>.use                    shared while a job uses entry H; eviction needs it exclusive
//!   locks/<H>.stamp                  entry H's stamp (see `stamp`); exclusive while H is checked,
//!                                    linked, unlinked, published or removed; its mtime is H's last use
//!   locks/<H>.dl                     exclusive while entry H is being downloaded or inserted
//!   locks/space.lock                 exclusive while one process decides what to evict
//!   tmp/<H>.<pid>.<rand>.<size>.part downloads in flight; <size> is the space they reserve
//!   reservations/<pid>-<rand>-<bytes> disk that running attempts asked for, flocked by the owner
//! ```
//!
//! Every directory is 0700 and every lock file 0600: other users cannot open
//! a lock (to hold it) nor reach an entry except through a job's link.
//!
//! Names never contain the file id itself: ids are job-store keys (with `/`
//! and arbitrary length), and hashing them gives fixed, safe file names.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Paths inside one cache directory.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    /// The cache directory itself (`$TOIL_WORKDIR/cache`).
    pub root: PathBuf,
    /// Finished entries.
    pub entries: PathBuf,
    /// Lock files.
    pub locks: PathBuf,
    /// In-flight downloads.
    pub tmp: PathBuf,
    /// Live disk reservations.
    pub reservations: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Self {
        Layout {
            root: root.to_path_buf(),
            entries: root.join("entries"),
            locks: root.join("locks"),
            tmp: root.join("tmp"),
            reservations: root.join("reservations"),
        }
    }

    /// Every directory the cache needs, for creation at open.
    pub fn dirs(&self) -> [&Path; 5] {
        [
            &self.root,
            &self.entries,
            &self.locks,
            &self.tmp,
            &self.reservations,
        ]
    }

    pub fn entry(&self, name: &str) -> PathBuf {
        self.entries.join(name)
    }

    pub fn use_lock(&self, name: &str) -> PathBuf {
        self.locks.join(format!("{name}.use"))
    }

    pub fn stamp(&self, name: &str) -> PathBuf {
        self.locks.join(format!("{name}.stamp"))
    }

    pub fn download_lock(&self, name: &str) -> PathBuf {
        self.locks.join(format!("{name}.dl"))
    }

    pub fn space_lock(&self) -> PathBuf {
        self.locks.join("space.lock")
    }

    /// A fresh temporary name for a download of entry `name` that reserves
    /// `size` bytes.
    pub fn new_tmp(&self, name: &str, size: u64) -> PathBuf {
        let rand: u32 = rand::random();
        self.tmp.join(format!(
            "{name}.{}.{rand:08x}.{size}.part",
            std::process::id()
        ))
    }
}

/// The entry name for a job-store file id and its expected content: the
/// lowercase hex SHA-256 of `file_id NUL sha256`. Content under an id never
/// changes, so the checksum is normally redundant; keying by it too means a
/// request that expects different content never gets the cached file
/// silently (it misses, downloads and fails verification instead).
pub(crate) fn entry_name(file_id: &str, sha256: &str) -> String {
    let mut h = Sha256::new();
    h.update(file_id.as_bytes());
    h.update([0]);
    h.update(sha256.to_ascii_lowercase().as_bytes());
    hex::encode(h.finalize())
}

/// True if `s` looks like an entry name (64 lowercase hex digits).
pub(crate) fn is_entry_name(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A parsed temporary file name.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TmpName<'a> {
    /// The entry it will become.
    pub entry: &'a str,
    /// The bytes it reserves.
    pub size: u64,
}

/// Parses `<H>.<pid>.<rand>.<size>.part`; `None` for anything else.
pub(crate) fn parse_tmp(file_name: &str) -> Option<TmpName<'_>> {
    let stem = file_name.strip_suffix(".part")?;
    let mut parts = stem.split('.');
    let entry = parts.next()?;
    let _pid = parts.next()?;
    let _rand = parts.next()?;
    let size = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !is_entry_name(entry) {
        return None;
    }
    Some(TmpName { entry, size })
}

/// Parses a reservation name `<pid>-<rand>-<bytes>` into its bytes.
pub(crate) fn parse_reservation(file_name: &str) -> Option<u64> {
    let mut parts = file_name.split('-');
    let _pid = parts.next()?;
    let _rand = parts.next()?;
    let bytes = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_fixed_length_hex_and_round_trip() {
        let a = entry_name("files/job-1/out/x.txt", "ab");
        let b = entry_name("files/job-1/out/y.txt", "ab");
        assert!(is_entry_name(&a) && is_entry_name(&b));
        assert_ne!(a, b);
        assert_eq!(a, entry_name("files/job-1/out/x.txt", "AB"));
        assert_ne!(a, entry_name("files/job-1/out/x.txt", "cd"));

        let layout = Layout::new(Path::new("/c"));
        let tmp = layout.new_tmp(&a, 12345);
        let file = tmp.file_name().and_then(|f| f.to_str()).unwrap_or("");
        assert_eq!(
            parse_tmp(file),
            Some(TmpName {
                entry: &a,
                size: 12345
            })
        );
        assert_eq!(parse_tmp("junk.part"), None);
        assert_eq!(parse_tmp(&format!("{a}.1.2.x.part")), None);
        assert_eq!(parse_reservation("12-ab-4096"), Some(4096));
        assert_eq!(parse_reservation(".tmp-12-ab"), None);
    }
}
