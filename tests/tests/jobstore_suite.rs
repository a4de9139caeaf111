//! The job-store suite: one set of cases, each an async function over a
//! [`Fixture`] (a fresh, initialized [`JobStore`] plus the few
//! backend-specific helpers a case needs), run on every backend:
//!
//! - `file::*`: a fresh directory;
//! - `s3::*`: a fresh bucket on moto (5 MiB parts, so modest files already
//!   take the multipart paths);
//! - `s3_faults::*`: the same with fault injection: every S3 request fails
//!   its first 3 attempts (503 SlowDown; carried out but answered with a
//!   reset; body cut half-way), which proves every path retries correctly,
//!   including conditional writes whose first attempt landed.
//!
//! The file backend's behaviour is the reference; S3 must match it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use toil_jobstore::s3::{FaultConfig, RequestStats, RetryOptions, S3Options, TransferOptions};
use toil_jobstore::state::{
    AcquireError, JOURNAL_PREFIX, Journal, Lease, LeaseHolder, SNAPSHOT_PREFIX, journal_key,
    snapshot_key,
};
use toil_jobstore::{Condition, Error, JobStore, Locator, Version};
use toil_tests::harness;
use toil_tests::moto::{Moto, unique_name};

// === Fixture ===

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    File,
    S3,
    S3Faults,
}

/// A fresh job store on one backend.
struct Fixture {
    /// The store under test, initialized.
    store: JobStore,
    kind: Kind,
    /// Scratch space for local files (and the file store itself).
    dir: tempfile::TempDir,
    /// S3 settings, to open more stores like this one.
    s3: Option<S3Options>,
    /// Request counts of every S3 store opened by this fixture.
    stats: RequestStats,
}

impl Fixture {
    async fn new(kind: Kind) -> Fixture {
        // RUST_LOG=toil_jobstore=debug shows retries and injected faults.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let dir = harness::scratch("jobstore-suite-");
        let stats = RequestStats::default();
        let s3 = match kind {
            Kind::File => None,
            Kind::S3 | Kind::S3Faults => Some(S3Options {
                transfer: TransferOptions {
                    part_size: 5 << 20,
                    concurrency: 3,
                    download_concurrency: 1,
                },
                retry: RetryOptions {
                    max_attempts: 6,
                    initial_backoff: Duration::from_millis(2),
                    max_backoff: Duration::from_millis(50),
                },
                faults: (kind == Kind::S3Faults).then_some(FaultConfig::fail_first(3)),
                stats: stats.clone(),
                ..Moto::shared().s3_options()
            }),
        };
        let mut fx = Fixture {
            store: JobStore::open(&Locator::File(dir.path().join("unused")))
                .await
                .unwrap(),
            kind,
            dir,
            s3,
            stats,
        };
        fx.store = fx.fresh_uninitialized().await;
        assert!(
            fx.store.initialize().await.unwrap(),
            "a fresh store is created"
        );
        fx
    }

    /// A handle on a new location where no store exists yet.
    async fn fresh_uninitialized(&self) -> JobStore {
        let locator = match self.kind {
            Kind::File => Locator::File(self.dir.path().join(unique_name("store"))),
            Kind::S3 | Kind::S3Faults => Locator::Aws {
                region: toil_tests::moto::REGION.into(),
                name: unique_name("suite"),
            },
        };
        self.open(&locator).await
    }

    async fn open(&self, locator: &Locator) -> JobStore {
        match &self.s3 {
            Some(o) => JobStore::open_with(locator, o.clone()).await.unwrap(),
            None => JobStore::open(locator).await.unwrap(),
        }
    }

    /// Another handle on the same store, as a second process would have.
    async fn reopen(&self) -> JobStore {
        self.open(self.store.locator()).await
    }

    /// For S3: another handle on the store that downloads in ranges, three
    /// at a time, instead of one stream.
    async fn ranged_reader(&self) -> Option<JobStore> {
        let mut o = self.s3.clone()?;
        o.transfer.download_concurrency = 3;
        Some(JobStore::open_with(self.store.locator(), o).await.unwrap())
    }

    /// A handle on a location that holds someone else's data (key
    /// `precious.txt`) and is not a job store.
    async fn foreign(&self) -> JobStore {
        let store = self.fresh_uninitialized().await;
        match store.locator() {
            Locator::File(p) => {
                std::fs::create_dir_all(p).unwrap();
                std::fs::write(p.join("precious.txt"), b"not yours").unwrap();
            }
            Locator::Aws { .. } => {
                let bucket = store.locator().bucket().unwrap();
                let client = Moto::shared().s3_client().await;
                client.create_bucket().bucket(&bucket).send().await.unwrap();
                client
                    .put_object()
                    .bucket(&bucket)
                    .key("precious.txt")
                    .body(Bytes::from_static(b"not yours").into())
                    .send()
                    .await
                    .unwrap();
            }
        }
        store
    }

    /// A local path for test files.
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Checks after a case: with fault injection on, faults really happened.
    fn finish(self) {
        if self.kind == Kind::S3Faults {
            let c = self.stats.snapshot();
            assert!(
                c.faults_injected > 0 && c.total() > c.faults_injected,
                "fault injection did not run: {c:?}"
            );
        }
    }
}

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod file {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let fx = super::Fixture::new(super::Kind::File).await;
                    super::$case(&fx).await;
                    fx.finish();
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let fx = super::Fixture::new(super::Kind::S3).await;
                    super::$case(&fx).await;
                    fx.finish();
                }
            )*
        }
        mod s3_faults {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let fx = super::Fixture::new(super::Kind::S3Faults).await;
                    super::$case(&fx).await;
                    fx.finish();
                }
            )*
        }
    };
}

suite!(
    lifecycle,
    refuses_what_is_not_a_job_store,
    bytes_round_trip,
    conditions,
    if_absent_race_has_one_winner,
    if_match_race_has_one_winner,
    listing_is_sorted_and_prefixed,
    listing_and_deleting_many_keys,
    deleting,
    files_round_trip_with_checksums,
    missing_keys,
    journal_appends_and_fences,
    journal_snapshots_and_prunes,
    lease_lifecycle,
);

// === Helpers ===

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn is_permanent_with(e: &Error, needle: &str) -> bool {
    matches!(e, Error::Permanent { message } if message.contains(needle))
}

/// Writes `len` pseudo-random bytes (a fixed seed per length) to `path` and
/// returns their SHA-256.
fn make_file(path: &Path, len: usize) -> String {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(len as u64);
    let mut data = vec![0u8; len];
    rng.fill_bytes(&mut data);
    std::fs::write(path, &data).unwrap();
    hex::encode(Sha256::digest(&data))
}

// === Cases ===

async fn lifecycle(fx: &Fixture) {
    let s = fx.fresh_uninitialized().await;
    assert!(!s.exists().await.unwrap());
    s.destroy()
        .await
        .expect("destroying a store that does not exist is a no-op");
    assert!(s.initialize().await.unwrap(), "first initialize creates");
    assert!(s.exists().await.unwrap());
    assert!(!s.initialize().await.unwrap(), "second initialize finds it");
    // A second handle (another process) sees the same store.
    let other = fx.open(s.locator()).await;
    assert!(other.exists().await.unwrap());
    assert!(!other.initialize().await.unwrap());

    s.put_bytes("state/x", b("1"), Condition::Always)
        .await
        .unwrap();
    let src = fx.path("lifecycle.bin");
    make_file(&src, 1000);
    s.put_file("files/a/b", &src).await.unwrap();
    s.destroy().await.unwrap();
    assert!(!s.exists().await.unwrap());
    assert!(!other.exists().await.unwrap());
    s.destroy().await.expect("destroying twice is fine");
    // The name can be used again.
    assert!(s.initialize().await.unwrap());
    assert_eq!(s.list("").await.unwrap(), Vec::<String>::new());
    s.destroy().await.unwrap();
}

async fn refuses_what_is_not_a_job_store(fx: &Fixture) {
    let f = fx.foreign().await;
    assert!(!f.exists().await.unwrap());
    let e = f.initialize().await.unwrap_err();
    assert!(is_permanent_with(&e, "not a job store"), "{e}");
    let e = f.destroy().await.unwrap_err();
    assert!(is_permanent_with(&e, "not a job store"), "{e}");
    let kept = f
        .get_bytes("precious.txt")
        .await
        .unwrap()
        .expect("data kept");
    assert_eq!(kept.data, b("not yours"));
}

async fn bytes_round_trip(fx: &Fixture) {
    let s = &fx.store;
    let v1 = s
        .put_bytes("dir/sub/k", b("first"), Condition::Always)
        .await
        .unwrap();
    let got = s.get_bytes("dir/sub/k").await.unwrap().unwrap();
    assert_eq!(got.data, b("first"));
    assert_eq!(got.version, v1);
    let v2 = s
        .put_bytes("dir/sub/k", b("second!"), Condition::Always)
        .await
        .unwrap();
    assert_ne!(v1, v2, "new content, new version");
    let got = s.get_bytes("dir/sub/k").await.unwrap().unwrap();
    assert_eq!((got.data, got.version), (b("second!"), v2));
    assert_eq!(s.size("dir/sub/k").await.unwrap(), Some(7));
    // Empty objects are objects.
    s.put_bytes("empty", Bytes::new(), Condition::Always)
        .await
        .unwrap();
    let got = s.get_bytes("empty").await.unwrap().unwrap();
    assert!(got.data.is_empty());
    assert_eq!(s.size("empty").await.unwrap(), Some(0));
    // A second handle reads the same.
    let other = fx.reopen().await;
    assert_eq!(
        other.get_bytes("dir/sub/k").await.unwrap().unwrap().data,
        b("second!")
    );
}

async fn conditions(fx: &Fixture) {
    let s = &fx.store;
    let v1 = s
        .put_bytes("c", b("one"), Condition::IfAbsent)
        .await
        .unwrap();
    let e = s
        .put_bytes("c", b("two"), Condition::IfAbsent)
        .await
        .unwrap_err();
    assert!(e.is_precondition_failed(), "{e}");
    assert_eq!(s.get_bytes("c").await.unwrap().unwrap().data, b("one"));

    let v2 = s
        .put_bytes("c", b("three"), Condition::IfMatch(v1.clone()))
        .await
        .unwrap();
    assert_ne!(v1, v2);
    let e = s
        .put_bytes("c", b("stale"), Condition::IfMatch(v1.clone()))
        .await
        .unwrap_err();
    assert!(e.is_precondition_failed(), "{e}");
    let e = s
        .put_bytes("missing", b("x"), Condition::IfMatch(v2.clone()))
        .await
        .unwrap_err();
    assert!(e.is_precondition_failed(), "IfMatch on a missing key: {e}");
    assert!(s.get_bytes("missing").await.unwrap().is_none());
    let e = s
        .put_bytes(
            "c",
            b("bogus"),
            Condition::IfMatch(Version("\"nope\"".into())),
        )
        .await
        .unwrap_err();
    assert!(e.is_precondition_failed(), "{e}");
    let got = s.get_bytes("c").await.unwrap().unwrap();
    assert_eq!((got.data, got.version), (b("three"), v2));
    // Unconditional writes always go through.
    s.put_bytes("c", b("four"), Condition::Always)
        .await
        .unwrap();
    assert_eq!(s.get_bytes("c").await.unwrap().unwrap().data, b("four"));
}

async fn if_absent_race_has_one_winner(fx: &Fixture) {
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = fx.reopen().await;
        tasks.push(tokio::spawn(async move {
            let data = Bytes::from(format!("writer {i}"));
            (i, s.put_bytes("race/one", data, Condition::IfAbsent).await)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (i, r) = t.await.unwrap();
        match r {
            Ok(v) => winners.push((i, v)),
            Err(e) => assert!(e.is_precondition_failed(), "writer {i}: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one writer wins: {winners:?}");
    let (i, v) = &winners[0];
    let got = fx.store.get_bytes("race/one").await.unwrap().unwrap();
    assert_eq!(got.data, Bytes::from(format!("writer {i}")));
    assert_eq!(&got.version, v);
}

async fn if_match_race_has_one_winner(fx: &Fixture) {
    let v0 = fx
        .store
        .put_bytes("race/cas", b("start"), Condition::Always)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = fx.reopen().await;
        let v0 = v0.clone();
        tasks.push(tokio::spawn(async move {
            let data = Bytes::from(format!("swap {i}"));
            (
                i,
                s.put_bytes("race/cas", data, Condition::IfMatch(v0)).await,
            )
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (i, r) = t.await.unwrap();
        match r {
            Ok(_) => winners.push(i),
            Err(e) => assert!(e.is_precondition_failed(), "writer {i}: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one swap wins: {winners:?}");
    let got = fx.store.get_bytes("race/cas").await.unwrap().unwrap();
    assert_eq!(got.data, Bytes::from(format!("swap {}", winners[0])));
}

async fn listing_is_sorted_and_prefixed(fx: &Fixture) {
    let s = &fx.store;
    let keys = [
        "b",
        "a/2",
        "files/y",
        "a/1",
        "a/10",
        "ab",
        "a/b/c",
        "files/x1/f",
        "files/xyz",
    ];
    for k in keys {
        s.put_bytes(k, b(k), Condition::Always).await.unwrap();
    }
    let mut all: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    all.sort();
    assert_eq!(
        s.list("").await.unwrap(),
        all,
        "everything, sorted, no marker"
    );
    assert_eq!(s.list("a/").await.unwrap(), ["a/1", "a/10", "a/2", "a/b/c"]);
    assert_eq!(
        s.list("a").await.unwrap(),
        ["a/1", "a/10", "a/2", "a/b/c", "ab"]
    );
    assert_eq!(
        s.list("files/x").await.unwrap(),
        ["files/x1/f", "files/xyz"]
    );
    assert_eq!(s.list("a/b/").await.unwrap(), ["a/b/c"]);
    assert!(s.list("nothing/").await.unwrap().is_empty());
    assert!(s.list("c").await.unwrap().is_empty());
}

async fn listing_and_deleting_many_keys(fx: &Fixture) {
    // More than one S3 listing page and one DeleteObjects batch (1000 each).
    use futures::StreamExt;
    let n = 1050usize;
    let keys: Vec<String> = (0..n).map(|i| format!("many/{i:05}")).collect();
    let writes = futures::stream::iter(keys.clone())
        .map(|k| async move {
            let data = Bytes::from(k.clone());
            fx.store.put_bytes(&k, data, Condition::Always).await
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    assert!(writes.iter().all(Result::is_ok));
    fx.store
        .put_bytes("other", b("x"), Condition::Always)
        .await
        .unwrap();
    assert_eq!(fx.store.list("many/").await.unwrap(), keys);
    assert_eq!(fx.store.list("").await.unwrap().len(), n + 1);
    assert_eq!(fx.store.delete_prefix("many/").await.unwrap(), n as u64);
    assert_eq!(fx.store.list("").await.unwrap(), ["other"]);
    // Destroying a store that holds objects deletes them first.
    for k in &keys[..20] {
        fx.store
            .put_bytes(k, b("again"), Condition::Always)
            .await
            .unwrap();
    }
    fx.store.destroy().await.unwrap();
    assert!(!fx.store.exists().await.unwrap());
}

async fn deleting(fx: &Fixture) {
    let s = &fx.store;
    for k in ["d/1", "d/2", "d/e/3", "d/e/f/4", "d/5", "dx", "keep"] {
        s.put_bytes(k, b(k), Condition::Always).await.unwrap();
    }
    s.delete("keep").await.unwrap();
    assert!(s.get_bytes("keep").await.unwrap().is_none());
    s.delete("keep")
        .await
        .expect("deleting a missing key is fine");
    s.delete("never/was").await.unwrap();
    assert_eq!(s.delete_prefix("d/").await.unwrap(), 5);
    assert_eq!(s.list("").await.unwrap(), ["dx"]);
    assert_eq!(s.delete_prefix("d/").await.unwrap(), 0);
    assert_eq!(s.delete_prefix("none/").await.unwrap(), 0);
    // The store itself survives emptying.
    assert_eq!(s.delete_prefix("").await.unwrap(), 1);
    assert!(s.exists().await.unwrap());
    assert!(!s.initialize().await.unwrap());
}

async fn files_round_trip_with_checksums(fx: &Fixture) {
    let s = &fx.store;
    // Empty, small, exactly one S3 part, and several parts plus a tail.
    for (name, len) in [
        ("empty", 0usize),
        ("small", 1000),
        ("one-part", 5 << 20),
        ("parts", (12 << 20) + 123),
    ] {
        let src = fx.path(&format!("{name}.src"));
        let sha = make_file(&src, len);
        let key = format!("files/{name}/data.bin");
        let up = s.put_file(&key, &src).await.unwrap();
        assert_eq!(
            (up.size, up.sha256.as_str()),
            (len as u64, sha.as_str()),
            "{name} put"
        );
        assert_eq!(s.size(&key).await.unwrap(), Some(len as u64), "{name} size");

        let dest = fx.path(&format!("{name}.dest"));
        // get_file truncates what was there.
        std::fs::write(&dest, vec![7u8; len + 4096]).unwrap();
        let down = s.get_file(&key, &dest).await.unwrap();
        assert_eq!(down, up, "{name} get");
        assert_eq!(
            std::fs::read(&dest).unwrap(),
            std::fs::read(&src).unwrap(),
            "{name} bytes"
        );

        if let Some(r) = fx.ranged_reader().await {
            let ranged = fx.path(&format!("{name}.ranged"));
            assert_eq!(
                r.get_file(&key, &ranged).await.unwrap(),
                up,
                "{name} ranged get"
            );
            assert_eq!(
                std::fs::read(&ranged).unwrap(),
                std::fs::read(&src).unwrap()
            );
        }
        let ok = s.get_file_verified(&key, &dest, &sha).await.unwrap();
        assert_eq!(ok.sha256, sha);
        let wrong = "0".repeat(64);
        let e = s.get_file_verified(&key, &dest, &wrong).await.unwrap_err();
        assert!(matches!(e, Error::Checksum { .. }), "{name}: {e}");
        assert!(
            !dest.exists(),
            "{name}: a copy that fails its checksum is removed"
        );
    }
    // Files are replaced whole.
    let src = fx.path("replace.src");
    let sha = make_file(&src, 3333);
    s.put_file("files/small/data.bin", &src).await.unwrap();
    let dest = fx.path("replace.dest");
    assert_eq!(
        s.get_file("files/small/data.bin", &dest)
            .await
            .unwrap()
            .sha256,
        sha
    );
}

async fn missing_keys(fx: &Fixture) {
    let s = &fx.store;
    let dest = fx.path("missing.dest");
    let e = s.get_file("no/such/file", &dest).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(matches!(&e, Error::NotFound { key, .. } if key == "no/such/file"));
    assert!(!dest.exists(), "nothing is created for a missing key");
    assert!(s.get_bytes("no/such/key").await.unwrap().is_none());
    assert_eq!(s.size("no/such/key").await.unwrap(), None);
    let e = s
        .put_file("k", &fx.path("no-such-local-file"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
}

async fn journal_appends_and_fences(fx: &Fixture) {
    let (mut j1, loaded) = Journal::load(&fx.store).await.unwrap();
    assert!(loaded.snapshot.is_none() && loaded.records.is_empty());
    assert_eq!(loaded.next_seq, 1);
    for i in 1..=3u64 {
        assert_eq!(j1.append(Bytes::from(format!("r{i}"))).await.unwrap(), i);
    }

    // A second leader loads the same state and both append at number 4.
    let other = fx.reopen().await;
    let (mut j2, loaded) = Journal::load(&other).await.unwrap();
    let got: Vec<(u64, Bytes)> = loaded.records;
    assert_eq!(
        got,
        vec![(1, b("r1")), (2, b("r2")), (3, b("r3"))],
        "records in order"
    );
    assert_eq!(j2.next_seq(), 4);
    let (r1, r2) = tokio::join!(j1.append(b("leader one")), j2.append(b("leader two")));
    let (winner, mut loser, loser_data) = match (r1, r2) {
        (Ok(4), Err(e)) => {
            assert!(e.is_precondition_failed(), "{e}");
            ("leader one", j2, "leader two")
        }
        (Err(e), Ok(4)) => {
            assert!(e.is_precondition_failed(), "{e}");
            ("leader two", j1, "leader one")
        }
        other => panic!("exactly one append at 4 must win: {other:?}"),
    };
    assert_eq!(loser.read(4).await.unwrap(), Some(b(winner)));
    // The fenced writer stays fenced until it reloads.
    let e = loser.append(b(loser_data)).await.unwrap_err();
    assert!(e.is_precondition_failed(), "{e}");
    let (_, reloaded) = Journal::load(&fx.store).await.unwrap();
    assert_eq!(reloaded.next_seq, 5);
    assert_eq!(reloaded.records.last(), Some(&(4, b(winner))));
}

async fn journal_snapshots_and_prunes(fx: &Fixture) {
    let s = &fx.store;
    let (mut j, _) = Journal::load(s).await.unwrap();
    for i in 1..=5u64 {
        j.append(Bytes::from(format!("r{i}"))).await.unwrap();
    }
    j.snapshot(3, b("state@3")).await.unwrap();
    let (_, l) = Journal::load(s).await.unwrap();
    assert_eq!(l.snapshot, Some((3, b("state@3"))));
    assert_eq!(l.records, vec![(4, b("r4")), (5, b("r5"))]);
    for i in 6..=8u64 {
        j.append(Bytes::from(format!("r{i}"))).await.unwrap();
    }
    // The second snapshot prunes records up to the first one.
    j.snapshot(6, b("state@6")).await.unwrap();
    let journal: Vec<String> = (4..=8).map(journal_key).collect();
    assert_eq!(s.list(JOURNAL_PREFIX).await.unwrap(), journal);
    assert_eq!(
        s.list(SNAPSHOT_PREFIX).await.unwrap(),
        [snapshot_key(3), snapshot_key(6)]
    );
    let (j2, l) = Journal::load(s).await.unwrap();
    assert_eq!(l.snapshot, Some((6, b("state@6"))));
    assert_eq!(l.records, vec![(7, b("r7")), (8, b("r8"))]);
    assert_eq!((l.next_seq, j2.next_seq()), (9, 9));
    // The third keeps one generation: snapshot 6 and the records after it.
    j.snapshot(8, b("state@8")).await.unwrap();
    assert_eq!(
        s.list(SNAPSHOT_PREFIX).await.unwrap(),
        [snapshot_key(6), snapshot_key(8)]
    );
    assert_eq!(
        s.list(JOURNAL_PREFIX).await.unwrap(),
        [journal_key(7), journal_key(8)]
    );
    let (_, l) = Journal::load(s).await.unwrap();
    assert_eq!(l.snapshot, Some((8, b("state@8"))));
    assert!(l.records.is_empty());
    assert_eq!(l.next_seq, 9);
}

fn holder(host: &str, pid: u32, epoch: u64) -> LeaseHolder {
    LeaseHolder {
        host: host.into(),
        pid,
        epoch,
        address: format!("{host}:50051"),
    }
}

/// The pid of a process that has exited.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

async fn lease_lifecycle(fx: &Fixture) {
    let s = &fx.store;
    let here = "test-host";
    let minute = Duration::from_secs(60);
    assert!(Lease::read(s).await.unwrap().is_none());

    // Acquire, held by others, renew, release.
    let mut a = Lease::acquire(s, holder("host-a", 1, 1), minute, here)
        .await
        .unwrap();
    match Lease::acquire(&fx.reopen().await, holder("host-b", 2, 2), minute, here).await {
        Err(AcquireError::Held(rec)) => assert_eq!(rec.holder, holder("host-a", 1, 1)),
        other => panic!("the lease is held by a: {other:?}"),
    }
    let before = a.record().renewed_at_ms;
    // A renewal records the wall clock in milliseconds: wait until that has
    // moved on, rather than for a guessed time.
    toil_tests::wait::wait_for_async("the clock to pass the last renewal", minute, || async {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        toil_tests::wait::when(now > before, now)
    })
    .await;
    a.renew().await.unwrap();
    assert!(a.record().renewed_at_ms > before);
    let (rec, _) = Lease::read(s).await.unwrap().unwrap();
    assert_eq!(&rec, a.record());
    a.release().await.unwrap();
    let (rec, _) = Lease::read(s).await.unwrap().unwrap();
    assert_eq!(rec.ttl_ms, 0, "released");

    // A released lease is free at once.
    let mut b = Lease::acquire(s, holder("host-b", 2, 2), Duration::from_millis(300), here)
        .await
        .unwrap();
    // An expired lease is taken over; its old holder then loses its renewal.
    // (A sleep that is part of the scenario: the lease is a duration, and
    // sleeping longer than it makes it lapse however slow the machine.)
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut c = Lease::acquire(&fx.reopen().await, holder("host-c", 3, 3), minute, here)
        .await
        .unwrap();
    let e = b.renew().await.unwrap_err();
    assert!(e.is_precondition_failed(), "the old holder lost it: {e}");
    c.renew().await.unwrap();
    assert_eq!(
        Lease::read(s).await.unwrap().unwrap().0.holder.host,
        "host-c"
    );
    c.release().await.unwrap();

    // A holder on this host whose process is gone is replaced even before
    // its lease expires.
    let gone = dead_pid();
    let _d = Lease::acquire(s, holder(here, gone, 4), minute, here)
        .await
        .unwrap();
    // Seen from another host, where the pid cannot be checked, it is held.
    let e = Lease::acquire(s, holder("host-e", 5, 5), minute, "elsewhere").await;
    assert!(matches!(e, Err(AcquireError::Held(_))), "{e:?}");
    let f = Lease::acquire(s, holder(here, std::process::id(), 6), minute, here)
        .await
        .unwrap();
    assert_eq!(f.record().holder.epoch, 6);
}
