//! Figures the benchmarks read from a run's own records: the leader's
//! journal in a `file:` job store (launch decisions, attempt results with
//! their start times), and percentiles.

use std::path::{Path, PathBuf};

use prost::Message;
use toil_proto::v1::{JournalRecord, journal_entry::Kind};

/// The `p` quantile (0..=1) of `v` (sorted in place); NaN when empty.
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

/// A protobuf timestamp in milliseconds since the epoch.
pub fn ts_ms(t: &Option<prost_types::Timestamp>) -> Option<f64> {
    t.as_ref()
        .map(|t| t.seconds as f64 * 1000.0 + f64::from(t.nanos) / 1e6)
}

/// Every journal entry of a run (`--clean never` keeps them), from its
/// latest snapshot and the records after it; also the highest record
/// sequence number and the number of snapshots.
pub fn journal(store: &Path) -> anyhow::Result<(Vec<toil_proto::v1::JournalEntry>, u64, u64)> {
    let mut entries = Vec::new();
    let mut max_seq = 0u64;
    let mut snapshots = 0u64;
    let mut files: Vec<(u64, PathBuf)> = Vec::new();
    let snap_dir = store.join("state/snapshot");
    let mut latest_snapshot: Option<(u64, PathBuf)> = None;
    if let Ok(rd) = std::fs::read_dir(&snap_dir) {
        for e in rd.flatten() {
            if let Ok(seq) = e.file_name().to_string_lossy().parse::<u64>() {
                snapshots += 1;
                if latest_snapshot.as_ref().is_none_or(|(s, _)| seq > *s) {
                    latest_snapshot = Some((seq, e.path()));
                }
            }
        }
    }
    let base = latest_snapshot.as_ref().map_or(0, |(s, _)| *s);
    for e in std::fs::read_dir(store.join("state/journal"))?.flatten() {
        if let Ok(seq) = e.file_name().to_string_lossy().parse::<u64>() {
            max_seq = max_seq.max(seq);
            if seq > base {
                files.push((seq, e.path()));
            }
        }
    }
    max_seq = max_seq.max(base);
    files.sort();
    let mut datas = Vec::new();
    if let Some((_, p)) = latest_snapshot {
        datas.push(std::fs::read(p)?);
    }
    for (_, p) in files {
        datas.push(std::fs::read(p)?);
    }
    for d in datas {
        entries.extend(JournalRecord::decode(&d[..])?.entries);
    }
    Ok((entries, max_seq, snapshots))
}

/// Dispatch latencies (launch entry → command start), in ms.
pub fn dispatch(entries: &[toil_proto::v1::JournalEntry]) -> Vec<f64> {
    let mut launched = std::collections::HashMap::new();
    let mut out = Vec::new();
    for e in entries {
        match &e.kind {
            Some(Kind::Launch(l)) => {
                if let Some(t) = ts_ms(&e.time) {
                    launched.insert((l.job_id.clone(), l.attempt), t);
                }
            }
            Some(Kind::End(end)) => {
                let started = end.result.as_ref().and_then(|r| ts_ms(&r.started_at));
                if let (Some(s), Some(l)) =
                    (started, launched.get(&(end.job_id.clone(), end.attempt)))
                {
                    out.push(s - l);
                }
            }
            _ => {}
        }
    }
    out
}
