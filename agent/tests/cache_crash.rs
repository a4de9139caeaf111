//! kill -9 of agents in the middle of a download and while holding locks:
//! the kernel releases the locks, no partial entry is ever visible, the next
//! agent downloads again, and stale temporary files are cleaned.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cache_support;

use std::time::Duration;

use cache_support::*;

const SIZE: u64 = 20 * 1000 * 1000;

/// A downloader is killed while it holds the download lock with the whole
/// temporary file on disk (the test-only publish delay keeps it there). A
/// second agent that was waiting on the lock takes over and downloads again.
#[test]
fn kill_during_download_then_next_agent_downloads() {
    let node = Node::new();
    let f = node.put_random("files/a/sample.bam", SIZE);
    let entry = node.entry_path(&f);

    let mut a = node
        .stage(
            "a",
            &[f.input("sample.bam")],
            &["--debug-publish-delay-ms", "60000"],
        )
        .spawn()
        .unwrap();
    wait_for(
        "the download to reach the temporary file",
        Duration::from_secs(30),
        || {
            let tmp = node.tmp_files();
            when(tmp.iter().any(|(_, len)| *len == SIZE), tmp)
        },
    );
    assert!(
        !entry.exists(),
        "the entry is visible before it is published"
    );

    let mut b = node
        .stage("b", &[f.input("sample.bam")], &[])
        .spawn()
        .unwrap();
    // The second agent queues behind the download lock: it keeps the lock
    // file open while it polls (not a guess at how long it takes to get
    // there).
    let dl_lock = node.cache.join("locks").join(format!(
        "{}.dl",
        entry.file_name().unwrap().to_string_lossy()
    ));
    wait_for(
        "the second agent to wait on the download lock",
        Duration::from_secs(30),
        || {
            when(
                procfs::has_open(b.id(), &dl_lock),
                b.try_wait().ok().flatten(),
            )
        },
    );
    assert!(
        b.try_wait().unwrap().is_none(),
        "the second agent did not wait for the download in progress"
    );
    assert!(!entry.exists());
    assert!(!node.work("b").join("sample.bam").exists());

    a.kill().unwrap(); // SIGKILL
    a.wait().unwrap();

    let out = b.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = summary(&out.stdout);
    assert_eq!((u(&s, "misses"), u(&s, "hits")), (1, 0), "{s}");
    assert_eq!(sha256_file(&entry), f.sha256);
    assert_eq!(sha256_file(&node.work("b").join("sample.bam")), f.sha256);
    // The killed agent's temporary file was removed by the next downloader.
    assert!(node.tmp_files().is_empty(), "{:?}", node.tmp_files());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("removed stale download"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An agent killed mid-download leaves a temporary file; an agent staging
/// something else sweeps it when it opens the cache (its download lock is
/// free, so its owner is gone), and the file is later downloaded whole.
#[test]
fn stale_temporaries_are_swept_and_nothing_partial_is_visible() {
    let node = Node::new();
    let big = node.put_random("files/big.bin", 5 * SIZE);
    let other = node.put_random("files/other.bin", 1000);
    let entry = node.entry_path(&big);

    // Kill as soon as the temporary file appears: usually mid-stream.
    let mut a = node
        .stage(
            "a",
            &[big.input("big.bin")],
            &["--debug-publish-delay-ms", "60000"],
        )
        .spawn()
        .unwrap();
    wait_for("the download to start", Duration::from_secs(30), || {
        let tmp = node.tmp_files();
        when(!tmp.is_empty(), tmp)
    });
    a.kill().unwrap();
    a.wait().unwrap();
    assert!(!entry.exists(), "a partial entry is visible");
    assert_eq!(node.tmp_files().len(), 1);

    let s = node.stage_ok("b", &[other.input("other.bin")], &[]);
    assert_eq!(u(&s, "misses"), 1);
    assert!(node.tmp_files().is_empty(), "{:?}", node.tmp_files());
    assert!(!entry.exists());

    let s = node.stage_ok("c", &[big.input("big.bin")], &[]);
    assert_eq!((u(&s, "misses"), u(&s, "bytes_downloaded")), (1, 5 * SIZE));
    assert_eq!(sha256_file(&entry), big.sha256);
}

/// A job killed while holding its inputs (shared use locks) does not pin
/// them: eviction can take them once the kernel has released the locks.
#[test]
fn kill_while_holding_an_entry_releases_it() {
    let node = Node::new();
    let held = node.put_random("files/held.bin", 1_000_000);
    let next = node.put_random("files/next.bin", 1_000_000);
    let budget = ["--cache-max-size", "1500000"];

    let mut h = node
        .stage(
            "h",
            &[held.input("held.bin")],
            &["--hold", "120", budget[0], budget[1]],
        )
        .spawn()
        .unwrap();
    let s = read_summary_line(&mut h);
    assert_eq!(u(&s, "misses"), 1);

    // While it is held, the budget cannot make room: the next file is
    // downloaded privately and the held entry stays.
    let s = node.stage_ok("x", &[next.input("next.bin")], &budget);
    assert_eq!(u(&s, "misses"), 1);
    assert!(node.entry_path(&held).exists());
    assert!(!node.entry_path(&next).exists());
    assert_eq!(sha256_file(&node.work("x").join("next.bin")), next.sha256);

    h.kill().unwrap();
    h.wait().unwrap();

    let s = node.stage_ok("y", &[next.input("next.bin")], &budget);
    assert_eq!(u(&s, "misses"), 1);
    assert!(
        !node.entry_path(&held).exists(),
        "the dead job's entry was not evicted"
    );
    assert!(node.entry_path(&next).exists());
    let total: u64 = node.entries().iter().map(|(_, n)| n).sum();
    assert!(total <= 1_500_000);
}
