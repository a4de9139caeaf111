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
use toil_jobstore::state::{Journal, Lease, snapshot_key};
use toil_jobstore::{Error as StoreError, JobStore};
use toil_proto::v1::{JournalEntry, JournalRecord, journal_entry::Kind};
use tokio::sync::{mpsc, oneshot};

use crate::core::Core;

/// Fold records into a snapshot after this many.
const SNAPSHOT_RECORDS: usize = 1000;

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
    /// Write everything pending now and report.
    Flush(oneshot::Sender<Result<(), String>>),
}

/// The persister's state.
pub struct Persister {
    store: JobStore,
    journal: Journal,
    lease: Option<Lease>,
    /// Records written since the last snapshot, for folding.
    since_snapshot: Vec<Bytes>,
    last_snapshot: Option<u64>,
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
        since_snapshot: Vec<Bytes>,
        last_snapshot: Option<u64>,
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
            since_snapshot,
            last_snapshot,
            interval,
            lease_every,
            durable,
        }
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
                    Some(PersistMsg::Flush(reply)) => {
                        let r = self.write_counted(std::mem::take(&mut pending)).await;
                        deadline = None;
                        let failed = r.as_ref().err().map(|e| e.to_string());
                        let _ = reply.send(match &failed { Some(m) => Err(m.clone()), None => Ok(()) });
                        r?;
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
        self.since_snapshot.push(data);
        if self.since_snapshot.len() >= SNAPSHOT_RECORDS {
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

    /// Folds the previous snapshot and the records since into a snapshot at
    /// `seq`. Byte concatenation works because repeated protobuf fields
    /// concatenate.
    async fn snapshot(&mut self, seq: u64) -> Result<(), PersistError> {
        let mut data = Vec::new();
        if let Some(prev) = self.last_snapshot {
            match self.store.get_bytes(&snapshot_key(prev)).await? {
                Some(obj) => data.extend_from_slice(&obj.data),
                None => {
                    return Err(PersistError::Corrupt(format!(
                        "snapshot {prev} disappeared"
                    )));
                }
            }
        }
        for r in self.since_snapshot.drain(..) {
            data.extend_from_slice(&r);
        }
        self.journal.snapshot(seq, Bytes::from(data)).await?;
        self.last_snapshot = Some(seq);
        Ok(())
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
    /// Records after the latest snapshot.
    pub since_snapshot: Vec<Bytes>,
    /// The latest snapshot's sequence number.
    pub last_snapshot: Option<u64>,
    /// Number of entries applied.
    pub entries: u64,
}

/// Rebuilds `core` from the store's snapshot and journal.
pub async fn load(store: &JobStore, core: &mut Core) -> Result<LoadedState, PersistError> {
    let (journal, loaded) = Journal::load(store).await?;
    let now = std::time::Instant::now();
    let mut entries = 0u64;
    let mut apply = |e: JournalEntry| {
        entries += 1;
        core.replay(e, now).map_err(|e| e.to_string())
    };
    let last_snapshot = match &loaded.snapshot {
        Some((seq, data)) => {
            for_each_entry(data, &mut apply)?;
            Some(*seq)
        }
        None => None,
    };
    let mut since_snapshot = Vec::with_capacity(loaded.records.len());
    for (_, data) in loaded.records {
        for_each_entry(&data, &mut apply)?;
        since_snapshot.push(data);
    }
    core.finish_replay();
    Ok(LoadedState {
        journal,
        since_snapshot,
        last_snapshot,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use toil_proto::v1::{CancelEntry, LeaderClaim};

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
