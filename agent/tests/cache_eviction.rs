//! Eviction under a byte budget, across processes: least recently used
//! first, never an entry a running job holds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cache_support;

use std::path::Path;
use std::time::{Duration, SystemTime};

use cache_support::*;

const MB10: u64 = 10 * 1000 * 1000;
const BUDGET: u64 = 30 * 1000 * 1000;

fn cached(node: &Node) -> u64 {
    node.entries().iter().map(|(_, n)| n).sum()
}

/// Sets an entry's last-use time, which the cache keeps as the file's
/// access time, to `secs` seconds after a fixed moment an hour ago: the
/// order of uses is then explicit, whatever the clock's or the
/// filesystem's timestamp granularity, and older than any real use now.
/// The modification time goes back too, so that a later read cannot move
/// the access time under `relatime` (which updates it when older than the
/// modification time).
fn used_at(entry: &Path, secs: u64) {
    let t = SystemTime::now() - Duration::from_secs(3600) + Duration::from_secs(secs);
    let times = std::fs::FileTimes::new().set_accessed(t).set_modified(t);
    std::fs::File::open(entry)
        .and_then(|f| f.set_times(times))
        .unwrap_or_else(|e| panic!("setting the access time of {}: {e}", entry.display()));
}

#[test]
fn lru_eviction_respects_budget_and_holders() {
    let node = Node::new();
    let budget = ["--cache-max-size", "30M"];
    let [a, b, c, d, e, g] =
        ["a", "b", "c", "d", "e", "g"].map(|n| node.put_random(&format!("files/{n}.bin"), MB10));
    let huge = node.put_random("files/huge.bin", 4 * MB10);

    // A running job holds A (the oldest entry) for the whole test.
    let mut holder = node
        .stage(
            "hold-a",
            &[a.input("a.bin")],
            &["--hold", "300", budget[0], budget[1]],
        )
        .spawn()
        .unwrap();
    assert_eq!(u(&read_summary_line(&mut holder), "misses"), 1);
    let s = node.stage_ok("bc", &[b.input("b.bin"), c.input("c.bin")], &budget);
    assert_eq!(u(&s, "misses"), 2);
    // Use B again so that C becomes the least recently used unheld entry.
    let s = node.stage_ok("b-again", &[b.input("b.bin")], &budget);
    assert_eq!(u(&s, "hits"), 1);
    assert_eq!(cached(&node), BUDGET);
    // The order of use so far, A, then C, then B, made explicit.
    used_at(&node.entry_path(&a), 1);
    used_at(&node.entry_path(&c), 2);
    used_at(&node.entry_path(&b), 3);

    // D needs room: C goes (A is older but held; B was used after C).
    let s = node.stage_ok("d", &[d.input("d.bin")], &budget);
    assert_eq!(u(&s, "misses"), 1);
    assert!(node.entry_path(&a).exists(), "evicted an entry a job holds");
    assert!(node.entry_path(&b).exists());
    assert!(!node.entry_path(&c).exists(), "C was the LRU unheld entry");
    assert!(node.entry_path(&d).exists());
    assert!(cached(&node) <= BUDGET);

    // E: B is now the oldest unheld.
    node.stage_ok("e", &[e.input("e.bin")], &budget);
    assert!(node.entry_path(&a).exists(), "evicted an entry a job holds");
    assert!(!node.entry_path(&b).exists());
    assert!(node.entry_path(&d).exists() && node.entry_path(&e).exists());
    assert!(cached(&node) <= BUDGET);

    // Larger than the whole budget: staged privately, the cache untouched.
    let before = node.entries();
    let s = node.stage_ok("huge", &[huge.input("huge.bin")], &budget);
    assert_eq!(u(&s, "misses"), 1);
    assert_eq!(
        sha256_file(&node.work("huge").join("huge.bin")),
        huge.sha256
    );
    assert_eq!(node.entries(), before);

    // The job holding A ends: A can go now.
    holder.kill().unwrap();
    holder.wait().unwrap();
    node.stage_ok("g", &[g.input("g.bin")], &budget);
    assert!(
        !node.entry_path(&a).exists(),
        "A is no longer held and is the oldest"
    );
    assert!(node.entry_path(&g).exists());
    assert!(cached(&node) <= BUDGET);
    // Files staged from evicted entries stay intact in their work dirs.
    assert_eq!(sha256_file(&node.work("bc").join("c.bin")), c.sha256);
    assert!(node.tmp_files().is_empty());
}

/// Two processes that both need room at the same time never push the
/// cache over its budget: space decisions are serialized and a download in
/// flight counts at its full size.
#[test]
fn concurrent_downloads_stay_within_budget() {
    let node = Node::new();
    let files: Vec<_> = (0..6)
        .map(|i| node.put_random(&format!("files/p{i}.bin"), MB10))
        .collect();
    let children: Vec<_> = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            node.stage(
                &format!("p{i}"),
                &[f.input("x.bin")],
                &["--cache-max-size", "30M", "--debug-publish-delay-ms", "300"],
            )
            .spawn()
            .unwrap()
        })
        .collect();
    let mut peak = 0;
    let mut outs = Vec::new();
    for c in children {
        // Sample the cache (entries plus in-flight downloads) while they run.
        // A download that finishes between reading the temporaries and the
        // entries is renamed from one to the other and would count twice:
        // such a sample (the temporaries' names changed meanwhile) is
        // dropped. A cold CI run once saw exactly one file too many.
        let t0 = std::time::Instant::now();
        while t0.elapsed() < Duration::from_millis(100) {
            let names = |t: &[(String, u64)]| {
                let mut n: Vec<String> = t.iter().map(|(n, _)| n.clone()).collect();
                n.sort();
                n
            };
            let before = node.tmp_files();
            let entries = cached(&node);
            let after = node.tmp_files();
            if names(&before) == names(&after) {
                let inflight: u64 = after.iter().map(|(_, n)| n).sum();
                peak = peak.max(entries + inflight);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        outs.push(c.wait_with_output().unwrap());
    }
    for (o, f) in outs.iter().zip(&files) {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(u(&summary(&o.stdout), "misses"), 1);
        let i = files.iter().position(|x| x.id == f.id).unwrap();
        assert_eq!(
            sha256_file(&node.work(&format!("p{i}")).join("x.bin")),
            f.sha256
        );
    }
    assert!(peak <= BUDGET, "the cache reached {peak} bytes");
    assert!(cached(&node) <= BUDGET);
}
