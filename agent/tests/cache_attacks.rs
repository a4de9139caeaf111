//! Attacks on the node cache by a job on the same node, tried with real
//! `toil-agent stage` processes: a job writes to the inode its read-only
//! input link shares with the cache, or holds one of the cache's lock files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cache_support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cache_support::*;

/// A byte budget for the cache, so that these tests do not depend on the
/// machine's free disk (by default the cache keeps up to 10 GiB free).
const BUDGET: [&str; 2] = ["--cache-max-size", "100M"];

/// `extra` plus the budget.
fn with_budget<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = extra.to_vec();
    v.extend(BUDGET);
    v
}

/// What the attacking job does to its input: make it writable (it owns the
/// inode), write the same number of bytes, and put the mode and the mtime
/// back, so that size, mode and mtime all look untouched.
fn poison_in_place(link: &Path) {
    let before = fs::metadata(link).unwrap();
    fs::set_permissions(link, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(link, vec![b'X'; before.len() as usize]).unwrap();
    fs::File::open(link)
        .unwrap()
        .set_modified(before.modified().unwrap())
        .unwrap();
    fs::set_permissions(link, fs::Permissions::from_mode(0o444)).unwrap();
    let after = fs::metadata(link).unwrap();
    assert_eq!(
        (after.len(), after.mode(), after.modified().unwrap()),
        (before.len(), before.mode(), before.modified().unwrap()),
        "the poisoning keeps size, mode and mtime"
    );
}

/// The first job's link is poisoned after its agent is done with it; the
/// next stage on the node finds the entry's stamp broken, removes it,
/// downloads the file again and says so; the second job gets the original
/// bytes and the cache holds them again.
#[test]
fn a_same_size_write_through_a_link_is_noticed_and_refetched() {
    let node = Node::new();
    let f = node.put_random("files/in/ref.fa", 200_000);
    let first = node.stage_ok("first", &[f.input("ref.fa")], &BUDGET);
    assert_eq!(u(&first, "misses"), 1, "{first}");
    let link = node.work("first").join("ref.fa");
    assert_eq!(
        fs::metadata(&link).unwrap().ino(),
        fs::metadata(node.entry_path(&f)).unwrap().ino(),
        "the job's input is the cache's inode"
    );
    poison_in_place(&link);
    assert_ne!(sha256_file(&node.entry_path(&f)), f.sha256, "poisoned");

    let second = node.stage_ok("second", &[f.input("ref.fa")], &BUDGET);
    assert_eq!(
        (u(&second, "misses"), u(&second, "hits")),
        (1, 0),
        "{second}"
    );
    let warnings = second["warnings"].to_string();
    assert!(
        warnings.contains("the cached copy of files/in/ref.fa had changed since it was stored")
            && warnings.contains("its inode was changed (ctime)")
            && warnings.contains("downloaded again"),
        "{warnings}"
    );
    assert_eq!(sha256_file(&node.work("second").join("ref.fa")), f.sha256);
    assert_eq!(sha256_file(&node.entry_path(&f)), f.sha256);

    // And the refetched entry is trusted again: the third stage is a hit.
    let third = node.stage_ok("third", &[f.input("ref.fa")], &BUDGET);
    assert_eq!((u(&third, "misses"), u(&third, "hits")), (0, 1), "{third}");
    assert_eq!(third["warnings"], serde_json::json!([]));
    assert_eq!(sha256_file(&node.work("third").join("ref.fa")), f.sha256);
}

/// A change made while the job holds its input is found when the attempt
/// ends: the entry is removed at once (no later job gets it, even before
/// anyone stages it again), and the agent says what happened.
#[test]
fn a_change_during_the_job_is_found_when_the_attempt_ends() {
    let node = Node::new();
    let f = node.put_random("files/in/reads.fq", 100_000);
    // The hold stands for the job's run time; the poisoning takes
    // milliseconds of it.
    let mut job = node
        .stage(
            "job",
            &[f.input("reads.fq")],
            &with_budget(&["--hold", "3"]),
        )
        .spawn()
        .unwrap();
    let s = read_summary_line(&mut job);
    assert_eq!(u(&s, "misses"), 1, "{s}");
    poison_in_place(&node.work("job").join("reads.fq"));
    let out = job.wait_with_output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("input reads.fq (files/in/reads.fq) was changed while this job ran")
            && stderr.contains("the entry was removed"),
        "{stderr}"
    );
    assert!(
        !node.entry_path(&f).exists(),
        "removed when the attempt ended"
    );
    assert!(node.entries().is_empty(), "{:?}", node.entries());
}

/// `flock` (util-linux) holding a lock file, as a job on the node could:
/// it opens the file as the agent's user, takes the lock and becomes
/// `sleep 600` (no fork, so killing it frees the lock).
struct Holder(Child);

impl Holder {
    fn hold(path: &Path) -> Holder {
        let mut c = Command::new("flock")
            .args(["--exclusive", "--no-fork"])
            .arg(path)
            .args(["sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("flock (util-linux) is needed: apt-get install util-linux: {e}")
            });
        let pid = c.id();
        wait_for("flock to take the lock", Duration::from_secs(10), || {
            let locks = fs::read_to_string("/proc/locks").unwrap_or_default();
            let held = locks.lines().any(|l| {
                !l.contains("->") && l.split_whitespace().nth(4) == Some(&pid.to_string())
            });
            when(held, c.try_wait().ok().flatten())
        });
        Holder(c)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a stage that must fail; returns its error summary, its stderr and
/// how long it took.
fn stage_fails(
    node: &Node,
    work: &str,
    inputs: &[String],
) -> (serde_json::Value, String, Duration) {
    let t0 = Instant::now();
    let out = node
        .stage(work, inputs, &with_budget(&["--lock-timeout", "1s"]))
        .output()
        .unwrap();
    let took = t0.elapsed();
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    (
        summary(&out.stdout),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        took,
    )
}

/// A process holds `space.lock` forever. Staging a file the node already
/// has needs no space and goes on; staging a new one fails after the lock
/// deadline (1 s here) with a retryable STAGING_FAILED cause that names the
/// lock file and the holding process. Other users cannot open the lock
/// files at all (0600 in a 0700 directory).
#[test]
fn a_held_space_lock_fails_new_downloads_with_a_named_cause_and_hits_go_on() {
    let node = Node::new();
    let cached = node.put_random("files/cached.bin", 10_000);
    let fresh = node.put_random("files/fresh.bin", 10_000);
    node.stage_ok("warm", &[cached.input("cached.bin")], &BUDGET);

    let locks = node.cache.join("locks");
    assert_eq!(fs::metadata(&locks).unwrap().mode() & 0o777, 0o700);
    let space = locks.join("space.lock");
    assert_eq!(fs::metadata(&space).unwrap().mode() & 0o777, 0o600);
    let holder = Holder::hold(&space);

    let hit = node.stage_ok(
        "hit",
        &[cached.input("cached.bin")],
        &with_budget(&["--lock-timeout", "1s"]),
    );
    assert_eq!(u(&hit, "hits"), 1, "{hit}");

    let (err, stderr, took) = stage_fails(&node, "miss", &[fresh.input("fresh.bin")]);
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(
        took < Duration::from_secs(20),
        "gave up within the deadline: {took:?}"
    );
    assert_eq!(err["cause"], "CAUSE_KIND_STAGING_FAILED", "{err}");
    assert_eq!(err["retryable"], true, "{err}");
    let msg = err["error"].as_str().unwrap();
    assert!(
        msg.contains(&format!(
            "node cache lock {} held for more than 1 s by process {} (sleep 600)",
            space.display(),
            holder.0.id()
        )) && msg.contains("another job on this node may be holding it")
            && msg.contains("--cacheLockTimeout / TOIL_CACHE_LOCK_TIMEOUT"),
        "{msg}\n{stderr}"
    );

    // Once the holder is gone, the same stage succeeds.
    drop(holder);
    let ok = node.stage_ok(
        "miss2",
        &[fresh.input("fresh.bin")],
        &with_budget(&["--lock-timeout", "1s"]),
    );
    assert_eq!(u(&ok, "misses"), 1, "{ok}");
}

/// A process holds one entry's use lock exclusively (which blocks its
/// hits), or its download lock without downloading anything: staging that
/// entry fails after the deadline naming that lock; other entries go on.
#[test]
fn held_entry_locks_fail_that_entry_only_with_a_named_cause() {
    let node = Node::new();
    let a = node.put_random("files/a.bin", 10_000);
    let b = node.put_random("files/b.bin", 10_000);
    node.stage_ok("warm", &[a.input("a.bin")], &BUDGET);
    let name = |f: &StoredFile| {
        node.entry_path(f)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let locks = node.cache.join("locks");

    let use_lock = locks.join(format!("{}.use", name(&a)));
    let holder = Holder::hold(&use_lock);
    let (err, _, _) = stage_fails(&node, "x", &[a.input("a.bin")]);
    let msg = err["error"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!(
            "files/a.bin: node cache lock {} held for more than 1 s by process {}",
            use_lock.display(),
            holder.0.id()
        )),
        "{msg}"
    );
    let other = node.stage_ok(
        "y",
        &[b.input("b.bin")],
        &with_budget(&["--lock-timeout", "1s"]),
    );
    assert_eq!(u(&other, "misses"), 1, "{other}");
    drop(holder);

    // A download lock held by a process that downloads nothing.
    let c = node.put_random("files/c.bin", 10_000);
    let dl = locks.join(format!("{}.dl", name(&c)));
    let holder = Holder::hold(&dl);
    let (err, _, took) = stage_fails(&node, "z", &[c.input("c.bin")]);
    assert!(took < Duration::from_secs(20), "{took:?}");
    let msg = err["error"].as_str().unwrap();
    assert!(
        msg.contains(&format!(
            "node cache lock {} held for more than 1 s",
            dl.display()
        )),
        "{msg}"
    );
    drop(holder);
    let ok = node.stage_ok(
        "z2",
        &[c.input("c.bin")],
        &with_budget(&["--lock-timeout", "1s"]),
    );
    assert_eq!(u(&ok, "misses"), 1, "{ok}");
}
