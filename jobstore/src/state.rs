//! Durable workflow state, built only from the backend's conditional writes
//! so it works the same on a directory and on S3.
//!
//! - **Journal**: records at `state/journal/{seq}`, each created with
//!   create-if-absent. The sequence is one linearizable log: two writers can
//!   never both own the same number. A leader that takes over a store appends
//!   a claim record; the previous leader's next append hits a number that is
//!   taken and fails with [`Error::PreconditionFailed`]. That is the fence.
//! - **Snapshots** at `state/snapshot/{seq}` hold the state as of record
//!   `seq`, so loading reads one snapshot plus the records after it.
//! - **Lease** at `state/lease.json`: who leads now and until when. It only
//!   tells a second leader that the store is in use; correctness comes from
//!   the journal fence, not from clocks.
//!
//! What a record or snapshot contains is the leader's business; here they
//! are opaque bytes.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::{Condition, JobStore, Version};

/// Prefix of journal records.
pub const JOURNAL_PREFIX: &str = "state/journal/";
/// Prefix of snapshots.
pub const SNAPSHOT_PREFIX: &str = "state/snapshot/";
/// Key of the leader lease.
pub const LEASE_KEY: &str = "state/lease.json";

/// The key of journal record `seq`.
pub fn journal_key(seq: u64) -> String {
    format!("{JOURNAL_PREFIX}{seq:020}")
}

/// The key of the snapshot taken at record `seq`.
pub fn snapshot_key(seq: u64) -> String {
    format!("{SNAPSHOT_PREFIX}{seq:020}")
}

fn parse_seq(key: &str, prefix: &str) -> Option<u64> {
    key.strip_prefix(prefix)?.parse().ok()
}

/// Everything needed to rebuild the state: the latest snapshot and the
/// records written after it.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The latest readable snapshot and the record number it covers.
    pub snapshot: Option<(u64, Bytes)>,
    /// Records after the snapshot, in order, without gaps.
    pub records: Vec<(u64, Bytes)>,
    /// The number the next record must take.
    pub next_seq: u64,
}

/// Appends records to a store's journal at consecutive numbers.
#[derive(Debug)]
pub struct Journal {
    store: JobStore,
    next_seq: u64,
}

impl Journal {
    /// Reads the latest snapshot and the records after it, and returns a
    /// journal positioned to append after the last record.
    pub async fn load(store: &JobStore) -> Result<(Journal, Loaded)> {
        let snaps = store.list(SNAPSHOT_PREFIX).await?;
        let mut snapshot = None;
        for key in snaps.iter().rev() {
            let Some(seq) = parse_seq(key, SNAPSHOT_PREFIX) else {
                continue;
            };
            if let Some(obj) = store.get_bytes(key).await? {
                snapshot = Some((seq, obj.data));
                break;
            }
        }
        let base = snapshot.as_ref().map_or(0, |(s, _)| *s);
        let mut seqs: Vec<u64> = store
            .list(JOURNAL_PREFIX)
            .await?
            .iter()
            .filter_map(|k| parse_seq(k, JOURNAL_PREFIX))
            .filter(|s| *s > base)
            .collect();
        seqs.sort_unstable();
        let mut records = Vec::with_capacity(seqs.len());
        let mut expect = base + 1;
        for seq in seqs {
            if seq != expect {
                return Err(Error::Permanent {
                    message: format!(
                        "job store {}: journal record {expect} is missing (found {seq} next); the state cannot be rebuilt safely",
                        store.locator()
                    ),
                });
            }
            let obj = store
                .get_bytes(&journal_key(seq))
                .await?
                .ok_or_else(|| Error::NotFound {
                    store: store.locator().to_string(),
                    key: journal_key(seq),
                })?;
            records.push((seq, obj.data));
            expect += 1;
        }
        let journal = Journal {
            store: store.clone(),
            next_seq: expect,
        };
        Ok((
            journal,
            Loaded {
                snapshot,
                records,
                next_seq: expect,
            },
        ))
    }

    /// The number the next record will take.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Appends one record. Returns its number. Fails with
    /// [`Error::PreconditionFailed`] if another writer took the number: the
    /// caller has been fenced (or raced) and must re-read before writing.
    pub async fn append(&mut self, data: Bytes) -> Result<u64> {
        let seq = self.next_seq;
        self.store
            .put_bytes(&journal_key(seq), data, Condition::IfAbsent)
            .await?;
        self.next_seq += 1;
        Ok(seq)
    }

    /// Reads the record at `seq`, if any (for example, to see who fenced us).
    pub async fn read(&self, seq: u64) -> Result<Option<Bytes>> {
        Ok(self
            .store
            .get_bytes(&journal_key(seq))
            .await?
            .map(|o| o.data))
    }

    /// Stores a snapshot covering records up to `seq` and deletes what it
    /// makes unnecessary: records and snapshots older than the *previous*
    /// snapshot (one generation is kept, so a reader that listed before this
    /// call can still load).
    pub async fn snapshot(&self, seq: u64, data: Bytes) -> Result<()> {
        self.store
            .put_bytes(&snapshot_key(seq), data, Condition::Always)
            .await?;
        self.prune_before(seq).await
    }

    /// Like [`Journal::snapshot`], streaming the snapshot from a local file
    /// (a large workflow's snapshot is never held in memory).
    pub async fn snapshot_file(&self, seq: u64, path: &std::path::Path) -> Result<()> {
        self.store.put_file(&snapshot_key(seq), path).await?;
        self.prune_before(seq).await
    }

    /// Deletes records and snapshots older than the snapshot before `seq`.
    async fn prune_before(&self, seq: u64) -> Result<()> {
        let snaps: Vec<u64> = self
            .store
            .list(SNAPSHOT_PREFIX)
            .await?
            .iter()
            .filter_map(|k| parse_seq(k, SNAPSHOT_PREFIX))
            .filter(|s| *s < seq)
            .collect();
        let Some(&keep) = snaps.iter().max() else {
            return Ok(());
        };
        for s in snaps.iter().filter(|s| **s < keep) {
            self.store.delete(&snapshot_key(*s)).await?;
        }
        for key in self.store.list(JOURNAL_PREFIX).await? {
            if parse_seq(&key, JOURNAL_PREFIX).is_some_and(|s| s <= keep) {
                self.store.delete(&key).await?;
            }
        }
        Ok(())
    }
}

/// Who holds (or held) the lease.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseHolder {
    /// Host name of the leader's machine or pod.
    pub host: String,
    /// The leader's process id on that host.
    pub pid: u32,
    /// The leader's epoch (how many leaders have owned the store).
    pub epoch: u64,
    /// Where the leader serves gRPC, for `status` and `logs --follow`.
    pub address: String,
}

/// The lease object as stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The holder.
    pub holder: LeaseHolder,
    /// When the holder last renewed, in milliseconds since the Unix epoch.
    pub renewed_at_ms: i64,
    /// How long after a renewal the lease stays valid, in milliseconds. Zero
    /// means released.
    pub ttl_ms: u64,
}

impl LeaseRecord {
    /// True if the holder may still be alive: the lease has not expired and,
    /// when the holder is on this host, its process still exists.
    pub fn is_live(&self, now_ms: i64, this_host: &str) -> bool {
        if self.ttl_ms == 0 {
            return false;
        }
        if self.holder.host == this_host && !process_exists(self.holder.pid) {
            return false;
        }
        now_ms < self.renewed_at_ms + self.ttl_ms as i64
    }

    /// Milliseconds until the lease expires (zero if it has).
    pub fn remaining_ms(&self, now_ms: i64) -> u64 {
        (self.renewed_at_ms + self.ttl_ms as i64 - now_ms).max(0) as u64
    }
}

fn process_exists(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// Milliseconds since the Unix epoch, by this machine's clock.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A lease this process holds.
#[derive(Debug)]
pub struct Lease {
    store: JobStore,
    record: LeaseRecord,
    version: Version,
}

/// Why a lease could not be taken.
#[derive(Debug)]
pub enum AcquireError {
    /// Someone else holds it and may be alive.
    Held(LeaseRecord),
    /// The store failed.
    Store(Error),
}

impl From<Error> for AcquireError {
    fn from(e: Error) -> Self {
        AcquireError::Store(e)
    }
}

impl Lease {
    /// Reads the current lease record, if any.
    pub async fn read(store: &JobStore) -> Result<Option<(LeaseRecord, Version)>> {
        let Some(obj) = store.get_bytes(LEASE_KEY).await? else {
            return Ok(None);
        };
        let rec = serde_json::from_slice(&obj.data).map_err(|e| Error::Permanent {
            message: format!(
                "job store {}: {LEASE_KEY} is not readable ({e}); delete it if no leader is running",
                store.locator()
            ),
        })?;
        Ok(Some((rec, obj.version)))
    }

    /// Takes the lease unless a live holder has it. A holder on this host
    /// whose process is gone, or whose lease has expired, is replaced.
    pub async fn acquire(
        store: &JobStore,
        holder: LeaseHolder,
        ttl: Duration,
        this_host: &str,
    ) -> Result<Lease, AcquireError> {
        let record = LeaseRecord {
            holder,
            renewed_at_ms: now_ms(),
            ttl_ms: ttl.as_millis() as u64,
        };
        let cond = match Lease::read(store).await? {
            None => Condition::IfAbsent,
            Some((current, version)) => {
                if current.is_live(now_ms(), this_host) {
                    return Err(AcquireError::Held(current));
                }
                Condition::IfMatch(version)
            }
        };
        let data = encode(&record)?;
        match store.put_bytes(LEASE_KEY, data, cond).await {
            Ok(version) => Ok(Lease {
                store: store.clone(),
                record,
                version,
            }),
            Err(e) if e.is_precondition_failed() => {
                // Someone else took it between our read and write.
                match Lease::read(store).await? {
                    Some((rec, _)) => Err(AcquireError::Held(rec)),
                    None => Err(AcquireError::Store(e)),
                }
            }
            Err(e) => Err(AcquireError::Store(e)),
        }
    }

    /// The record as last written.
    pub fn record(&self) -> &LeaseRecord {
        &self.record
    }

    /// Extends the lease. Fails with [`Error::PreconditionFailed`] if another
    /// leader has taken it.
    pub async fn renew(&mut self) -> Result<()> {
        let mut rec = self.record.clone();
        rec.renewed_at_ms = now_ms();
        let v = self
            .store
            .put_bytes(
                LEASE_KEY,
                encode(&rec)?,
                Condition::IfMatch(self.version.clone()),
            )
            .await?;
        self.record = rec;
        self.version = v;
        Ok(())
    }

    /// Marks the lease released so the next leader need not wait for it.
    pub async fn release(self) -> Result<()> {
        let mut rec = self.record;
        rec.ttl_ms = 0;
        rec.renewed_at_ms = now_ms();
        self.store
            .put_bytes(LEASE_KEY, encode(&rec)?, Condition::IfMatch(self.version))
            .await?;
        Ok(())
    }
}

fn encode<T: Serialize>(v: &T) -> Result<Bytes> {
    serde_json::to_vec(v)
        .map(Bytes::from)
        .map_err(|e| Error::Permanent {
            message: format!("encoding lease: {e}"),
        })
}
