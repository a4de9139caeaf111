//! The cache API as the agent loop calls it, in one process: links and
//! copies, write-through of outputs, verification, bad input, no space, and
//! the attempt's disk reservation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cache_support;

use std::fs;
use std::os::unix::fs::MetadataExt;

use cache_support::*;
use toil_agent::cache::{CacheConfig, CacheError, CacheInput, NodeCache};
use toil_jobstore::{JobStore, Locator};
use toil_proto::v1::{CauseKind, FileRef, ResourceUsage, StagedInput};

fn input(f: &StoredFile, dest: &str, writable: bool) -> CacheInput {
    // Built from the proto message, as the agent loop will.
    let proto = StagedInput {
        file: Some(FileRef {
            file_id: f.id.clone(),
            path: dest.into(),
            size_bytes: f.size,
            sha256: f.sha256.clone(),
        }),
        dest_path: dest.into(),
        writable,
    };
    CacheInput::try_from(&proto).unwrap()
}

#[test]
fn links_copies_and_write_through() {
    let node = Node::new();
    let f = node.put_random("files/in.txt", 300_000);
    runtime().block_on(links_copies_and_write_through_in(node, f));
}

async fn links_copies_and_write_through_in(node: Node, f: StoredFile) {
    let store = JobStore::open(&Locator::File(node.store.clone()))
        .await
        .unwrap();
    let cache = NodeCache::open(&node.cache, CacheConfig::default()).unwrap();
    let wd = node.work("job1");

    let staged = cache
        .stage(
            &store,
            &[input(&f, "ro/in.txt", false), input(&f, "rw/in.txt", true)],
            &wd,
            0,
        )
        .await
        .unwrap();
    // One download serves both inputs; the second is a hit.
    let st = staged.stats();
    assert_eq!((st.misses, st.hits, st.bytes_downloaded), (1, 1, f.size));
    let mut usage = ResourceUsage::default();
    st.add_to(&mut usage);
    assert_eq!((usage.cache_hits, usage.cache_misses), (1, 1));
    assert_eq!(usage.bytes_downloaded, f.size);
    assert_eq!(staged.held_entries(), 2);

    let entry = cache.entry_path(&f.id, &f.sha256);
    let ro = fs::metadata(wd.join("ro/in.txt")).unwrap();
    let rw = fs::metadata(wd.join("rw/in.txt")).unwrap();
    assert_eq!(ro.ino(), fs::metadata(&entry).unwrap().ino());
    assert_eq!(ro.mode() & 0o222, 0);
    assert_ne!(rw.ino(), ro.ino());
    assert_ne!(rw.mode() & 0o200, 0);
    // The job modifies its writable copy; the cache is unaffected.
    fs::write(wd.join("rw/in.txt"), b"changed").unwrap();
    assert_eq!(sha256_file(&entry), f.sha256);
    drop(staged);

    // Write-through: the job's output goes to the job store and the cache;
    // a downstream job on this node gets it without reading the store.
    let out = wd.join("result.txt");
    fs::write(&out, vec![7u8; 123_456]).unwrap();
    let t = store.put_file("files/job1/result.txt", &out).await.unwrap();
    assert!(
        cache
            .insert_output("files/job1/result.txt", &out, &t)
            .await
            .unwrap()
    );
    assert!(
        !cache
            .insert_output("files/job1/result.txt", &out, &t)
            .await
            .unwrap(),
        "inserted twice"
    );
    let reads_before = store.op_counts().reads;
    let produced = StoredFile {
        id: "files/job1/result.txt".into(),
        sha256: t.sha256.clone(),
        size: t.size,
    };
    let staged = cache
        .stage(
            &store,
            &[input(&produced, "result.txt", false)],
            &node.work("job2"),
            0,
        )
        .await
        .unwrap();
    assert_eq!(staged.stats().hits, 1);
    assert_eq!(store.op_counts().reads, reads_before, "the store was read");
    assert_eq!(sha256_file(&node.work("job2").join("result.txt")), t.sha256);
}

#[test]
fn checksum_mismatch_bad_input_and_missing_files() {
    let node = Node::new();
    let f = node.put_random("files/in.txt", 100_000);
    runtime().block_on(checksum_mismatch_bad_input_and_missing_files_in(node, f));
}

async fn checksum_mismatch_bad_input_and_missing_files_in(node: Node, f: StoredFile) {
    let store = JobStore::open(&Locator::File(node.store.clone()))
        .await
        .unwrap();
    let cache = NodeCache::open(&node.cache, CacheConfig::default()).unwrap();

    let mut wrong = f.clone();
    wrong.sha256 = "0".repeat(64);
    let err = cache
        .stage(&store, &[input(&wrong, "x", false)], &node.work("j"), 0)
        .await
        .unwrap_err();
    assert!(matches!(err, CacheError::Checksum { .. }), "{err}");
    assert!(err.is_retryable());
    assert_eq!(err.cause_kind(), CauseKind::StagingFailed);
    assert!(
        node.entries().is_empty(),
        "a bad download entered the cache"
    );
    assert!(node.tmp_files().is_empty());
    assert!(!node.work("j").join("x").exists());

    for dest in ["../escape", "/abs", "a/../b", ""] {
        let err = cache
            .stage(&store, &[input(&f, dest, false)], &node.work("j"), 0)
            .await
            .unwrap_err();
        assert!(matches!(err, CacheError::BadInput { .. }), "{dest}: {err}");
        assert_eq!(err.cause_kind(), CauseKind::ConfigError);
        assert!(!err.is_retryable());
    }
    let err = cache
        .stage(
            &store,
            &[input(&f, "same", false), input(&f, "same", true)],
            &node.work("j"),
            0,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("two inputs"), "{err}");

    let mut missing = f.clone();
    missing.id = "files/not-there".into();
    let err = cache
        .stage(&store, &[input(&missing, "m", false)], &node.work("j"), 0)
        .await
        .unwrap_err();
    assert!(matches!(err, CacheError::JobStore { .. }), "{err}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("files/not-there"), "{err}");
}

#[test]
fn free_space_mode_reservations_and_no_space() {
    let node = Node::new();
    let f = node.put_random("files/in.txt", 100_000);
    let g = node.put_random("files/other.txt", 1000);
    runtime().block_on(free_space_mode_reservations_and_no_space_in(node, f, g));
}

async fn free_space_mode_reservations_and_no_space_in(node: Node, f: StoredFile, g: StoredFile) {
    let store = JobStore::open(&Locator::File(node.store.clone()))
        .await
        .unwrap();

    // The attempt's disk reservation is visible node-wide while staged.
    let cache = NodeCache::open(&node.cache, CacheConfig::default()).unwrap();
    let staged = cache
        .stage(&store, &[input(&f, "x", false)], &node.work("a"), 5 << 30)
        .await
        .unwrap();
    assert!(staged.has_reservation());
    let names: Vec<String> = fs::read_dir(node.cache.join("reservations"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1);
    assert!(names[0].ends_with(&format!("-{}", 5u64 << 30)), "{names:?}");

    // Another agent needing space must leave that reservation free: with a
    // margin that leaves less than it, it cannot download.
    let free = nix::sys::statvfs::statvfs(node.cache.as_path()).unwrap();
    let avail = free.blocks_available() * free.fragment_size();
    let other = NodeCache::open(
        &node.cache,
        CacheConfig {
            min_free_bytes: Some(avail.saturating_sub(1 << 30)),
            ..CacheConfig::default()
        },
    )
    .unwrap();
    let err = other
        .stage(&store, &[input(&g, "y", false)], &node.work("b"), 0)
        .await
        .unwrap_err();
    assert!(matches!(err, CacheError::NoSpace { .. }), "{err}");
    assert!(err.is_retryable());
    assert!(
        err.to_string().contains("reserved by running jobs"),
        "{err}"
    );
    assert!(node.tmp_files().is_empty());

    // Once the first attempt ends its reservation no longer counts (the
    // file is parked under an uncounted `.tmp-` name for the agent's next
    // attempt) and the same request fits.
    drop(staged);
    let counted: Vec<String> = fs::read_dir(node.cache.join("reservations"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(".tmp-"))
        .collect();
    assert!(counted.is_empty(), "{counted:?}");
    let staged = other
        .stage(&store, &[input(&g, "y", false)], &node.work("b"), 0)
        .await
        .unwrap();
    assert_eq!(staged.stats().misses, 1);
}

/// A job that makes its read-only link writable and changes the size of
/// the shared inode does not poison the cache: the next stage notices the
/// size and downloads again.
#[test]
fn an_entry_changed_through_a_link_is_downloaded_again() {
    let node = Node::new();
    let f = node.put_random("files/in.txt", 50_000);
    runtime().block_on(async move {
        let store = JobStore::open(&Locator::File(node.store.clone()))
            .await
            .unwrap();
        let cache = NodeCache::open(&node.cache, CacheConfig::default()).unwrap();
        let staged = cache
            .stage(&store, &[input(&f, "in.txt", false)], &node.work("bad"), 0)
            .await
            .unwrap();
        drop(staged);
        let link = node.work("bad").join("in.txt");
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&link, fs::Permissions::from_mode(0o644)).unwrap();
        fs::OpenOptions::new()
            .append(true)
            .open(&link)
            .and_then(|mut h| std::io::Write::write_all(&mut h, b"junk"))
            .unwrap();

        let staged = cache
            .stage(&store, &[input(&f, "in.txt", false)], &node.work("next"), 0)
            .await
            .unwrap();
        assert_eq!(staged.stats().misses, 1);
        assert_eq!(sha256_file(&node.work("next").join("in.txt")), f.sha256);
        assert_eq!(sha256_file(&cache.entry_path(&f.id, &f.sha256)), f.sha256);
    });
}
