//! Writing the core's journal to the job store, and reading it back.
//!
//! The persister batches entries (group commit: a batch is written at once
//! when the last write is at least `interval` old, otherwise when it is),
//! appends each batch as one journal record, reports how many entries are
//! durable (the driver starts an agent only once its launch is durable, so
//! attempt numbers are never reused by a later leader), folds records into a snapshot now and
//! then, and renews the leader lease. An append that finds its sequence
//! number taken means another leader has claimed the store: this leader is
//! fenced and must stop.

use std::time::Duration;

use bytes::{Buf, Bytes};
use prost::Message;
use toil_jobstore::state::{Journal, Lease};
use toil_jobstore::{Error as StoreError, JobStore};
use toil_proto::v1::{JournalEntry, JournalRecord, journal_entry::Kind};
use tokio::sync::mpsc;

use crate::core::Core;

/// Fold records into a snapshot once the records since the last one add up
/// to the snapshot's own size (at least this much): snapshots then grow
/// geometrically, so their total size stays proportional to the state and a
/// restart reads at most about twice the state.
const SNAPSHOT_MIN_BYTES: u64 = 4 << 20;
/// ...or once there are this many records since the last one, so loading
/// never needs an unbounded number of reads.
const SNAPSHOT_MAX_RECORDS: u64 = 20_000;

/// Why the persister stopped.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// Another leader took over the job store.
    #[error(
        "another leader (epoch {epoch}, pid {pid} on {host}) has taken over this job store; this leader stops without touching it further"
    )]
    Fenced {
        /// The new leader's epoch.
        epoch: u64,
        /// Its host.
        host: String,
        /// Its process id.
        pid: u32,
    },
    /// The job store failed.
    #[error("cannot write workflow state to the job store: {0}")]
    Store(#[from] StoreError),
    /// A record could not be decoded.
    #[error("workflow state in the job store is corrupt: {0}")]
    Corrupt(String),
}

/// A message to the persister.
pub enum PersistMsg {
    /// Entries to write with the next batch.
    Entries(Vec<JournalEntry>),
}

/// The persister's state.
pub struct Persister {
    store: JobStore,
    journal: Journal,
    lease: Option<Lease>,
    /// The next snapshot's content: the last snapshot followed by every
    /// record written since, appended as they are written. Kept on local
    /// disk, not in memory.
    next_snapshot: tempfile::NamedTempFile,
    /// Bytes of the last snapshot.
    snapshot_bytes: u64,
    /// Records and bytes written since the last snapshot.
    since_records: u64,
    since_bytes: u64,
    /// Snapshot thresholds (see SNAPSHOT_MIN_BYTES, SNAPSHOT_MAX_RECORDS).
    snapshot_min_bytes: u64,
    snapshot_max_records: u64,
    interval: Duration,
    lease_every: Duration,
    /// Entries received through `run` and durably written, for the driver.
    durable: tokio::sync::watch::Sender<u64>,
}

impl Persister {
    /// A persister appending to `journal`.
    pub fn new(
        store: JobStore,
        journal: Journal,
        lease: Option<Lease>,
        base: SnapshotBase,
        interval: Duration,
        durable: tokio::sync::watch::Sender<u64>,
    ) -> Persister {
        let lease_every = lease.as_ref().map_or(Duration::from_secs(10), |l| {
            Duration::from_millis(l.record().ttl_ms / 3)
        });
        Persister {
            store,
            journal,
            lease,
            next_snapshot: base.file,
            snapshot_bytes: base.snapshot_bytes,
            since_records: base.since_records,
            since_bytes: base.since_bytes,
            snapshot_min_bytes: SNAPSHOT_MIN_BYTES,
            snapshot_max_records: SNAPSHOT_MAX_RECORDS,
            interval,
            lease_every,
            durable,
        }
    }

    /// Changes when snapshots are taken (tests use tiny values).
    pub fn snapshot_thresholds(mut self, min_bytes: u64, max_records: u64) -> Persister {
        self.snapshot_min_bytes = min_bytes;
        self.snapshot_max_records = max_records;
        self
    }

    /// Appends one batch right away (used for the claim at start-up, so a
    /// racing leader is detected before anything runs).
    pub async fn append_now(&mut self, entries: Vec<JournalEntry>) -> Result<(), PersistError> {
        self.write(entries).await
    }

    /// Runs until the channel closes, then writes what is left and releases
    /// the lease.
    pub async fn run(mut self, mut rx: mpsc::Receiver<PersistMsg>) -> Result<(), PersistError> {
        let mut pending: Vec<JournalEntry> = Vec::new();
        let mut lease_tick = tokio::time::interval(self.lease_every);
        lease_tick.tick().await;
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut last_write = tokio::time::Instant::now() - self.interval;
        loop {
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(PersistMsg::Entries(e)) => {
                        pending.extend(e);
                        let due = last_write + self.interval;
                        if tokio::time::Instant::now() >= due {
                            deadline = None;
                            last_write = tokio::time::Instant::now();
                            self.write_counted(std::mem::take(&mut pending)).await?;
                        } else if deadline.is_none() {
                            deadline = Some(due);
                        }
                    }
                    None => {
                        self.write_counted(std::mem::take(&mut pending)).await?;
                        if let Some(lease) = self.lease.take()
                            && let Err(e) = lease.release().await
                        {
                            tracing::warn!(error = %e, "could not release the leader lease");
                        }
                        return Ok(());
                    }
                },
                _ = sleep => {
                    deadline = None;
                    last_write = tokio::time::Instant::now();
                    self.write_counted(std::mem::take(&mut pending)).await?;
                }
                _ = lease_tick.tick() => self.renew().await?,
            }
        }
    }

    async fn renew(&mut self) -> Result<(), PersistError> {
        let Some(lease) = self.lease.as_mut() else {
            return Ok(());
        };
        match lease.renew().await {
            Ok(()) => Ok(()),
            Err(e) if e.is_precondition_failed() => {
                let holder = Lease::read(&self.store).await?.map(|(r, _)| r.holder);
                Err(match holder {
                    Some(h) => PersistError::Fenced {
                        epoch: h.epoch,
                        host: h.host,
                        pid: h.pid,
                    },
                    None => PersistError::Corrupt("the leader lease disappeared".into()),
                })
            }
            Err(e) => {
                // A missed renewal is not fatal by itself; the journal fence
                // is what protects the state.
                tracing::warn!(error = %e, "could not renew the leader lease");
                Ok(())
            }
        }
    }

    /// Writes a batch received through `run` and reports it durable.
    async fn write_counted(&mut self, entries: Vec<JournalEntry>) -> Result<(), PersistError> {
        let n = entries.len() as u64;
        self.write(entries).await?;
        if n > 0 {
            self.durable.send_modify(|d| *d += n);
        }
        Ok(())
    }

    async fn write(&mut self, entries: Vec<JournalEntry>) -> Result<(), PersistError> {
        if entries.is_empty() {
            return Ok(());
        }
        let data = Bytes::from(JournalRecord { entries }.encode_to_vec());
        let seq = self.journal.next_seq();
        match self.journal.append(data.clone()).await {
            Ok(_) => {}
            Err(e) if e.is_precondition_failed() => return Err(self.who_fenced(seq).await),
            Err(e) => return Err(e.into()),
        }
        {
            use std::io::Write;
            let f = self.next_snapshot.as_file_mut();
            f.write_all(&data).map_err(|e| {
                PersistError::Store(StoreError::io("writing the local snapshot file", e))
            })?;
        }
        self.since_records += 1;
        self.since_bytes += data.len() as u64;
        if self.since_bytes >= self.snapshot_bytes.max(self.snapshot_min_bytes)
            || self.since_records >= self.snapshot_max_records
        {
            self.snapshot(seq).await?;
        }
        Ok(())
    }

    async fn who_fenced(&self, seq: u64) -> PersistError {
        let record = match self.journal.read(seq).await {
            Ok(Some(r)) => r,
            Ok(None) => return PersistError::Corrupt(format!("journal record {seq} vanished")),
            Err(e) => return PersistError::Store(e),
        };
        let mut claim = None;
        let _ = for_each_entry(&record, |e| {
            if let Some(Kind::Claim(c)) = e.kind {
                claim = Some(c);
            }
            Ok(())
        });
        match claim {
            Some(c) => PersistError::Fenced {
                epoch: c.epoch,
                host: c.host,
                pid: c.pid,
            },
            None => PersistError::Fenced {
                epoch: 0,
                host: "unknown".into(),
                pid: 0,
            },
        }
    }

    /// Stores the local snapshot file (the previous snapshot plus the
    /// records since) as the snapshot at `seq`. Byte concatenation is a
    /// valid record because repeated protobuf fields concatenate.
    async fn snapshot(&mut self, seq: u64) -> Result<(), PersistError> {
        {
            use std::io::Write;
            self.next_snapshot.as_file_mut().flush().map_err(|e| {
                PersistError::Store(StoreError::io("flushing the local snapshot file", e))
            })?;
        }
        self.journal
            .snapshot_file(seq, self.next_snapshot.path())
            .await?;
        self.snapshot_bytes += self.since_bytes;
        self.since_bytes = 0;
        self.since_records = 0;
        Ok(())
    }
}

/// Where the persister's next snapshot starts from.
pub struct SnapshotBase {
    /// A local file holding the last snapshot and the records since.
    pub file: tempfile::NamedTempFile,
    /// Bytes of the last snapshot.
    pub snapshot_bytes: u64,
    /// Records since it.
    pub since_records: u64,
    /// Bytes of those records.
    pub since_bytes: u64,
}

impl SnapshotBase {
    /// An empty base (a new workflow).
    pub fn empty() -> Result<SnapshotBase, PersistError> {
        Ok(SnapshotBase {
            file: tempfile::NamedTempFile::new().map_err(|e| {
                PersistError::Store(StoreError::io("creating a local snapshot file", e))
            })?,
            snapshot_bytes: 0,
            since_records: 0,
            since_bytes: 0,
        })
    }
}

/// Calls `f` with each entry of an encoded `JournalRecord`, decoding one at
/// a time so a large snapshot is never held decoded in memory.
pub fn for_each_entry(
    data: &[u8],
    mut f: impl FnMut(JournalEntry) -> Result<(), String>,
) -> Result<(), PersistError> {
    use prost::encoding::{WireType, decode_key, decode_varint};
    let mut buf = data;
    while buf.has_remaining() {
        let (tag, wire) = decode_key(&mut buf).map_err(|e| PersistError::Corrupt(e.to_string()))?;
        if tag != 1 || wire != WireType::LengthDelimited {
            return Err(PersistError::Corrupt(format!(
                "unexpected field {tag} in a journal record"
            )));
        }
        let len =
            decode_varint(&mut buf).map_err(|e| PersistError::Corrupt(e.to_string()))? as usize;
        if len > buf.remaining() {
            return Err(PersistError::Corrupt("truncated journal record".into()));
        }
        let entry =
            JournalEntry::decode(&buf[..len]).map_err(|e| PersistError::Corrupt(e.to_string()))?;
        buf.advance(len);
        f(entry).map_err(PersistError::Corrupt)?;
    }
    Ok(())
}

/// What loading the journal produced, for the persister to continue from.
pub struct LoadedState {
    /// The journal, positioned after its last record.
    pub journal: Journal,
    /// The snapshot and records, for the next snapshot.
    pub base: SnapshotBase,
    /// Number of entries applied.
    pub entries: u64,
}

/// Rebuilds `core` from the store's snapshot and journal.
pub async fn load(store: &JobStore, core: &mut Core) -> Result<LoadedState, PersistError> {
    use std::io::Write;
    let (journal, loaded) = Journal::load(store).await?;
    // Edited versions of the workflow, which version entries move to.
    let versions = crate::versions::load_versions(store)
        .await
        .map_err(|e| PersistError::Corrupt(format!("{e:#}")))?;
    core.install_versions(versions);
    let now = std::time::Instant::now();
    let mut entries = 0u64;
    let mut apply = |e: JournalEntry| {
        entries += 1;
        core.replay(e, now).map_err(|e| e.to_string())
    };
    let mut base = SnapshotBase::empty()?;
    let io = |e| PersistError::Store(StoreError::io("writing the local snapshot file", e));
    if let Some((_, data)) = &loaded.snapshot {
        for_each_entry(data, &mut apply)?;
        base.file.as_file_mut().write_all(data).map_err(io)?;
        base.snapshot_bytes = data.len() as u64;
    }
    for (_, data) in loaded.records {
        for_each_entry(&data, &mut apply)?;
        base.file.as_file_mut().write_all(&data).map_err(io)?;
        base.since_records += 1;
        base.since_bytes += data.len() as u64;
    }
    core.finish_replay();
    Ok(LoadedState {
        journal,
        base,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use toil_proto::v1::{AttemptResult, CancelEntry, Cause, CauseKind, JobState, LeaderClaim};

    use crate::core::{JobDefaults, RetryPolicy};
    use crate::workflow::spec::{
        Command, Defaults, JobTemplate, Pos, Scatter, ScatterValues, Workflow,
    };

    fn scatter_workflow(n: u64) -> Workflow {
        Workflow {
            name: "s".into(),
            source: "s.yaml".into(),
            base_dir: "/".into(),
            defaults: Defaults::default(),
            jobs: vec![JobTemplate {
                name: "t".into(),
                pos: Pos::default(),
                command: Command::Shell("true".into()),
                env: Default::default(),
                image: None,
                millicores: None,
                memory: None,
                disk: None,
                gpus: 0,
                preemptible: false,
                time_limit: None,
                retries: Some(1),
                after: vec![],
                inputs: vec![],
                outputs: vec![],
                scatter: Some(Scatter {
                    var: "i".into(),
                    values: ScatterValues::Range(n),
                }),
                resources_pos: Pos::default(),
                cwl: None,
            }],
            outputs: vec![],
        }
    }

    fn defaults() -> JobDefaults {
        JobDefaults {
            millicores: 100,
            memory: 1 << 20,
            disk: 1 << 20,
            retries: 0,
        }
    }

    #[tokio::test]
    async fn state_survives_snapshots_and_pruning() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = JobStore::open(&toil_jobstore::Locator::File(dir.path().join("js")))
            .await
            .expect("open");
        store.initialize().await.expect("init");
        let wf = scatter_workflow(300);
        let mut core = Core::new(&wf, defaults(), RetryPolicy::default());
        let (journal, _) = Journal::load(&store).await.expect("load");
        let (tx, _rx) = tokio::sync::watch::channel(0);
        let mut p = Persister::new(
            store.clone(),
            journal,
            None,
            SnapshotBase::empty().expect("base"),
            Duration::ZERO,
            tx,
        )
        .snapshot_thresholds(2_000, 25);
        core.claim(1, "h", 1);
        p.write_counted(core.drain_journal()).await.expect("claim");
        // Launch and end every job, one record per job; every third fails
        // once (so it has two attempts).
        let t = std::time::Instant::now();
        for round in 0..2 {
            while let Some(j) = core.take_ready(64, |_, _| true) {
                let n = core.launch(j, "here", 1, None).expect("launch");
                let kind = if round == 0 && j % 3 == 0 {
                    CauseKind::ExitCode
                } else {
                    CauseKind::Succeeded
                };
                let result = AttemptResult {
                    cause: Some(Cause::new(kind, "")),
                    ..Default::default()
                };
                core.finish(j, n, result, 2, t).expect("finish");
                p.write_counted(core.drain_journal()).await.expect("write");
            }
            core.tick(t + Duration::from_secs(10));
        }
        assert!(core.is_finished());
        let snapshots = store.list("state/snapshot/").await.expect("list");
        assert!(!snapshots.is_empty(), "snapshots were taken");
        assert!(
            snapshots.len() <= 2,
            "old snapshots are pruned: {snapshots:?}"
        );
        let records = store.list("state/journal/").await.expect("list").len();
        assert!(
            records < 300,
            "records folded into snapshots are pruned: {records}"
        );

        let mut again = Core::new(&wf, defaults(), RetryPolicy::default());
        let loaded = load(&store, &mut again).await.expect("reload");
        assert!(loaded.entries > 600, "{}", loaded.entries);
        assert_eq!(again.counts(), core.counts());
        assert_eq!(again.counts()[JobState::Succeeded], 300);
        for j in 0..300 {
            assert_eq!(again.attempts(j).len(), core.attempts(j).len(), "job {j}");
            assert_eq!(&*again.attempts(j)[0].placement, "here");
        }
        assert_eq!(again.epoch(), 1);
    }

    fn entry(kind: Kind) -> JournalEntry {
        JournalEntry {
            time: None,
            kind: Some(kind),
        }
    }

    #[test]
    fn concatenated_records_decode_as_one() {
        let a = JournalRecord {
            entries: vec![entry(Kind::Claim(LeaderClaim {
                epoch: 1,
                host: "h".into(),
                pid: 1,
            }))],
        }
        .encode_to_vec();
        let b = JournalRecord {
            entries: vec![
                entry(Kind::Cancel(CancelEntry {
                    job_id: "x".into(),
                    reason: "r".into(),
                })),
                entry(Kind::Claim(LeaderClaim {
                    epoch: 2,
                    host: "h".into(),
                    pid: 2,
                })),
            ],
        }
        .encode_to_vec();
        let both = [a, b].concat();
        let mut seen = Vec::new();
        for_each_entry(&both, |e| {
            seen.push(e);
            Ok(())
        })
        .expect("decode");
        assert_eq!(seen.len(), 3);
        assert!(matches!(&seen[2].kind, Some(Kind::Claim(c)) if c.epoch == 2));
        assert!(for_each_entry(&both[..both.len() - 2], |_| Ok(())).is_err());
    }
}
