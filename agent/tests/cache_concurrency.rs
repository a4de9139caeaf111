//! Many agent processes staging the same file at once: one download for the
//! node, and `--disableCaching` giving each its own download.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cache_support;

use std::os::unix::fs::MetadataExt;
use std::process::Child;

use cache_support::*;

const AGENTS: usize = 16;
const SIZE: u64 = 50 * 1000 * 1000;

/// 16 `toil-agent stage` processes start together on one uncached 50 MB
/// file. The downloader holds the download lock for an extra second after
/// the bytes are in (the test-only publish delay), so every other process
/// is sure to arrive while the download is in progress and has to wait on
/// the lock rather than find a finished entry.
///
/// The download is counted three independent ways:
/// 1. the cache's own figures (misses and hits in each summary);
/// 2. the job store's operation counters in each process;
/// 3. the kernel's I/O accounting of each live process (`/proc/PID/io`
///    `rchar`, read by this test while the processes hold their inputs):
///    reading the file from the job store costs 50 MB of read(2)s, while a
///    cache hit reads nothing (it is a hard link), so exactly one process
///    may have read 50 MB or more and the total must stay far below two
///    downloads.
#[test]
fn sixteen_agents_download_once() {
    let node = Node::new();
    let f = node.put_random("files/shared/reads.bam", SIZE);

    let mut children: Vec<Child> = (0..AGENTS)
        .map(|i| {
            node.stage(
                &format!("job{i}"),
                &[f.input("in/reads.bam")],
                &["--hold", "6", "--debug-publish-delay-ms", "1000"],
            )
            .spawn()
            .unwrap()
        })
        .collect();

    let mut summaries = Vec::new();
    let mut rchars = Vec::new();
    for c in &mut children {
        let s = read_summary_line(c);
        // Still holding (sleeping in --hold), so /proc/PID/io is there.
        rchars.push(rchar(c.id()));
        summaries.push(s);
    }
    for c in &mut children {
        let status = c.wait().unwrap();
        assert!(status.success(), "{}", stderr_of(c));
    }

    let misses: u64 = summaries.iter().map(|s| u(s, "misses")).sum();
    let hits: u64 = summaries.iter().map(|s| u(s, "hits")).sum();
    let bytes: u64 = summaries.iter().map(|s| u(s, "bytes_downloaded")).sum();
    assert_eq!((misses, hits, bytes), (1, AGENTS as u64 - 1, SIZE));

    // Job-store side: only the downloader touched the store (one size
    // lookup and one read).
    let readers: Vec<u64> = summaries
        .iter()
        .map(|s| u(s, "job_store_reads"))
        .filter(|&r| r > 0)
        .collect();
    assert_eq!(
        readers,
        vec![2],
        "job-store reads per process: {summaries:?}"
    );

    // Kernel side.
    eprintln!("rchar per process: {rchars:?}");
    let big = rchars.iter().filter(|&&r| r >= SIZE).count();
    let total: u64 = rchars.iter().sum();
    assert_eq!(big, 1, "rchar per process: {rchars:?}");
    assert!(
        total < SIZE + SIZE / 2,
        "the processes read {total} bytes in all: more than one download ({rchars:?})"
    );

    // The download was shared, not merely sequential: processes that
    // started before it could have been published (it is held back 1 s)
    // waited for it rather than reading a partial file, and there were
    // such processes. Ordered by the processes' own clocks, not by how fast
    // this machine started them.
    let i64_of = |s: &serde_json::Value, k: &str| s[k].as_i64().unwrap();
    let downloader = summaries.iter().find(|s| u(s, "misses") == 1).unwrap();
    let earliest_publish = i64_of(downloader, "started_ms") + 1000;
    let early: Vec<&serde_json::Value> = summaries
        .iter()
        .filter(|s| u(s, "hits") == 1 && i64_of(s, "started_ms") < earliest_publish)
        .collect();
    assert!(
        !early.is_empty(),
        "no process started while the download was in progress: {summaries:?}"
    );
    for s in &early {
        assert!(
            i64_of(s, "ended_ms") >= earliest_publish,
            "a process finished before the download it needed was published: {s:?}"
        );
    }

    // 16 correct copies, all the one cache inode, read-only.
    let entry = node.entry_path(&f);
    let entry_md = std::fs::metadata(&entry).unwrap();
    assert_eq!(sha256_file(&entry), f.sha256);
    for i in 0..AGENTS {
        let p = node.work(&format!("job{i}")).join("in/reads.bam");
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!(md.ino(), entry_md.ino(), "{} is not a link", p.display());
        assert_eq!(md.mode() & 0o222, 0, "{} is writable", p.display());
        assert_eq!(sha256_file(&p), f.sha256);
    }
    assert_eq!(entry_md.nlink(), AGENTS as u64 + 1);
    assert!(node.tmp_files().is_empty(), "{:?}", node.tmp_files());
}

/// With `--disable-caching`, every process downloads its own private copy
/// and the cache directory is not used.
#[test]
fn disabled_caching_downloads_per_process() {
    const N: usize = 4;
    const SMALL: u64 = 5 * 1000 * 1000;
    let node = Node::new();
    let f = node.put_random("files/shared/ref.fa", SMALL);

    let children: Vec<Child> = (0..N)
        .map(|i| {
            node.stage(
                &format!("job{i}"),
                &[f.input("ref.fa")],
                &["--disable-caching"],
            )
            .spawn()
            .unwrap()
        })
        .collect();
    let mut inodes = std::collections::HashSet::new();
    for (i, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s = summary(&out.stdout);
        assert_eq!((u(&s, "misses"), u(&s, "hits")), (1, 0), "{s}");
        assert_eq!(u(&s, "bytes_downloaded"), SMALL);
        assert!(u(&s, "job_store_reads") >= 1);
        let p = node.work(&format!("job{i}")).join("ref.fa");
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!(md.nlink(), 1, "a private copy has no other links");
        assert_eq!(md.mode() & 0o222, 0, "read-only unless declared writable");
        assert!(inodes.insert(md.ino()));
        assert_eq!(sha256_file(&p), f.sha256);
    }
    assert!(!node.cache.exists(), "disabled caching created the cache");

    // A writable input is writable in disabled mode too.
    let s = node.stage_ok(
        "w",
        &[],
        &["--disable-caching", "--writable-input", &f.input("rw.fa")],
    );
    assert_eq!(u(&s, "misses"), 1);
    let md = std::fs::metadata(node.work("w").join("rw.fa")).unwrap();
    assert_ne!(md.mode() & 0o200, 0);
}
