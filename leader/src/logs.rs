//! Job logs: received from agents in numbered chunks, shown live, kept in
//! the job store, and served to followers.
//!
//! Each attempt's log is one byte sequence (stdout, stderr and agent notes
//! interleaved as they arrived). It is persisted in segments named by their
//! starting byte offset (`logs/JOB/N/OFFSET`), written when an attempt ends,
//! when the unpersisted part passes 1 MiB, or every few seconds for a long
//! job, so a leader crash loses at most a few seconds of a running job's
//! output and nothing of a finished one (the agent keeps its own spool until
//! the result is recorded). An attempt with no output costs no write.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use toil_jobstore::{Condition, JobStore, layout};
use toil_proto::v1::{LogChunk, LogStream};
use tokio::sync::{Notify, broadcast, mpsc};

/// Flush a running attempt's log after this long.
const FLUSH_AGE: Duration = Duration::from_secs(5);
/// Flush when this many bytes are waiting.
const FLUSH_BYTES: usize = 1 << 20;
/// After an attempt ends, wait this long for straggling chunks.
const STRAGGLER_WAIT: Duration = Duration::from_secs(10);

/// A piece of live output for followers.
#[derive(Clone, Debug)]
pub struct LiveChunk {
    /// Byte offset of `data` in the attempt's log.
    pub offset: u64,
    /// Which stream it came from.
    pub stream: LogStream,
    /// The bytes.
    pub data: Bytes,
}

/// A line of job output for the terminal.
#[derive(Clone, Debug)]
pub struct EchoLine {
    /// The job that printed it.
    pub job_id: String,
    /// The line, without its newline.
    pub line: String,
    /// True for standard error and agent notes.
    pub stderr: bool,
}

struct AttemptLog {
    job_id: String,
    attempt: u32,
    next_seq: u64,
    /// Chunks that arrived ahead of a missing one.
    ahead: BTreeMap<u64, LogChunk>,
    /// Bytes from `persisted` to `total`.
    buf: Vec<u8>,
    persisted: u64,
    total: u64,
    first_unflushed: Option<Instant>,
    /// Set when the attempt ended: how many chunks the agent sent (if it
    /// said), and when.
    ended: Option<(Option<u64>, Instant)>,
    flushing: bool,
    live: broadcast::Sender<LiveChunk>,
    /// Partial lines per stream, for the terminal echo.
    partial: [Vec<u8>; 4],
}

/// All attempts' logs.
pub struct LogHub {
    store: JobStore,
    attempts: Mutex<HashMap<String, AttemptLog>>,
    echo: Option<mpsc::Sender<EchoLine>>,
    wake: Notify,
}

/// Where a follower starts: what is already persisted and what is buffered.
pub struct FollowStart {
    /// Bytes below this offset are in the job store.
    pub persisted: u64,
    /// Bytes from `persisted` on, not yet in the job store.
    pub buffered: Bytes,
    /// Live output after the buffered bytes; `None` if the attempt is over.
    pub live: Option<broadcast::Receiver<LiveChunk>>,
}

impl LogHub {
    /// A hub persisting to `store`, echoing complete lines to `echo`.
    pub fn new(store: JobStore, echo: Option<mpsc::Sender<EchoLine>>) -> Arc<LogHub> {
        Arc::new(LogHub {
            store,
            attempts: Mutex::new(HashMap::new()),
            echo,
            wake: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, AttemptLog>> {
        self.attempts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts collecting an attempt's log.
    pub fn open(&self, attempt_id: &str, job_id: &str, attempt: u32) {
        let (live, _) = broadcast::channel(256);
        self.lock().insert(
            attempt_id.to_string(),
            AttemptLog {
                job_id: job_id.to_string(),
                attempt,
                next_seq: 0,
                ahead: BTreeMap::new(),
                buf: Vec::new(),
                persisted: 0,
                total: 0,
                first_unflushed: None,
                ended: None,
                flushing: false,
                live,
                partial: Default::default(),
            },
        );
    }

    /// Takes a chunk; returns the sequence number below which every chunk
    /// has been received. Chunks for unknown attempts are ignored.
    pub fn push(&self, attempt_id: &str, chunk: LogChunk) -> u64 {
        let mut map = self.lock();
        let Some(log) = map.get_mut(attempt_id) else {
            return chunk.seq + 1;
        };
        if chunk.seq < log.next_seq {
            return log.next_seq;
        }
        log.ahead.insert(chunk.seq, chunk);
        while let Some(c) = log.ahead.remove(&log.next_seq) {
            log.next_seq += 1;
            self.append(log, c);
        }
        let through = log.next_seq;
        let complete = matches!(log.ended, Some((Some(n), _)) if through >= n);
        let big = log.buf.len() >= FLUSH_BYTES;
        drop(map);
        if complete || big {
            self.wake.notify_one();
        }
        through
    }

    fn append(&self, log: &mut AttemptLog, c: LogChunk) {
        if c.data.is_empty() {
            return;
        }
        let stream = LogStream::try_from(c.stream).unwrap_or(LogStream::Stdout);
        let offset = log.total;
        log.total += c.data.len() as u64;
        log.buf.extend_from_slice(&c.data);
        log.first_unflushed.get_or_insert_with(Instant::now);
        let _ = log.live.send(LiveChunk {
            offset,
            stream,
            data: Bytes::from(c.data.clone()),
        });
        if let Some(echo) = &self.echo {
            let partial = &mut log.partial[stream as usize % 4];
            partial.extend_from_slice(&c.data);
            while let Some(pos) = partial.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = partial.drain(..=pos).collect();
                let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                let _ = echo.try_send(EchoLine {
                    job_id: log.job_id.clone(),
                    line: text,
                    stderr: stream != LogStream::Stdout,
                });
            }
        }
    }

    /// Marks an attempt's log as ending: `chunks` is how many the agent
    /// sent, when known. The log is persisted once all have arrived (or
    /// after a short wait for stragglers) and then forgotten.
    pub fn end(&self, attempt_id: &str, chunks: Option<u64>) {
        let mut map = self.lock();
        if let Some(log) = map.get_mut(attempt_id) {
            log.ended = Some((chunks, Instant::now()));
            // Echo a last line that had no newline.
            if let Some(echo) = &self.echo {
                for (i, partial) in log.partial.iter_mut().enumerate() {
                    if !partial.is_empty() {
                        let text = String::from_utf8_lossy(partial).into_owned();
                        partial.clear();
                        let _ = echo.try_send(EchoLine {
                            job_id: log.job_id.clone(),
                            line: text,
                            stderr: i != LogStream::Stdout as usize,
                        });
                    }
                }
            }
        }
        drop(map);
        self.wake.notify_one();
    }

    /// Persists what is due, forever. Run as a task.
    pub async fn run_flusher(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.cancelled() => {
                    self.flush(true).await;
                    return;
                }
            }
            self.flush(false).await;
        }
    }

    /// Persists due segments; with `all`, everything buffered.
    pub async fn flush(&self, all: bool) {
        let now = Instant::now();
        // (attempt id, key, bytes, final?)
        let mut work = Vec::new();
        {
            let mut map = self.lock();
            for (id, log) in map.iter_mut() {
                if log.flushing {
                    continue;
                }
                let done = match log.ended {
                    Some((Some(n), _)) if log.next_seq >= n => true,
                    Some((_, at)) => now.duration_since(at) >= STRAGGLER_WAIT,
                    None => false,
                };
                let due = all
                    || done
                    || log.buf.len() >= FLUSH_BYTES
                    || log
                        .first_unflushed
                        .is_some_and(|t| now.duration_since(t) >= FLUSH_AGE);
                if !due {
                    continue;
                }
                log.flushing = true;
                let key = layout::log_segment_key(&log.job_id, log.attempt, log.persisted);
                work.push((id.clone(), key, Bytes::from(log.buf.clone()), done));
            }
        }
        for (id, key, data, done) in work {
            let len = data.len();
            let ok = if len == 0 {
                true
            } else {
                match self.store.put_bytes(&key, data, Condition::Always).await {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::warn!(attempt = %id, error = %e, "could not persist log segment; will retry");
                        false
                    }
                }
            };
            let mut map = self.lock();
            let Some(log) = map.get_mut(&id) else {
                continue;
            };
            log.flushing = false;
            if ok {
                log.buf.drain(..len);
                log.persisted += len as u64;
                log.first_unflushed = (!log.buf.is_empty()).then(Instant::now);
                if done && log.buf.is_empty() {
                    map.remove(&id);
                }
            }
        }
    }

    /// Where a follower of `attempt_id` starts.
    pub fn follow_start(&self, attempt_id: &str, want_live: bool) -> Option<FollowStart> {
        let map = self.lock();
        let log = map.get(attempt_id)?;
        let live = (want_live && log.ended.is_none()).then(|| log.live.subscribe());
        Some(FollowStart {
            persisted: log.persisted,
            buffered: Bytes::from(log.buf.clone()),
            live,
        })
    }

    /// Reads the persisted part of a log from `offset` up to (not
    /// including) `until`.
    pub async fn read_persisted(
        &self,
        job_id: &str,
        attempt: u32,
        offset: u64,
        until: u64,
    ) -> toil_jobstore::Result<Vec<(u64, Bytes)>> {
        read_persisted(&self.store, job_id, attempt, offset, until).await
    }

    /// The last `max` bytes of an attempt's log (persisted and buffered),
    /// for failure summaries.
    pub async fn tail(&self, job_id: &str, attempt: u32, max: usize) -> String {
        let id = format!("{job_id}.{attempt}");
        let (persisted, buffered) = match self.follow_start(&id, false) {
            Some(s) => (s.persisted, s.buffered),
            None => (u64::MAX, Bytes::new()),
        };
        let mut bytes = Vec::new();
        if let Ok(parts) = read_persisted(&self.store, job_id, attempt, 0, persisted).await {
            for (_, p) in parts {
                bytes.extend_from_slice(&p);
            }
        }
        bytes.extend_from_slice(&buffered);
        let start = bytes.len().saturating_sub(max);
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }
}

/// Reads the persisted segments of a log from `offset` to `until`.
pub async fn read_persisted(
    store: &JobStore,
    job_id: &str,
    attempt: u32,
    offset: u64,
    until: u64,
) -> toil_jobstore::Result<Vec<(u64, Bytes)>> {
    let mut out = Vec::new();
    let keys = store.list(&layout::log_prefix(job_id, attempt)).await?;
    for key in keys {
        let Some(start) = layout::log_segment_offset(&key) else {
            continue;
        };
        if start >= until {
            break;
        }
        let Some(obj) = store.get_bytes(&key).await? else {
            continue;
        };
        let end = start + obj.data.len() as u64;
        if end <= offset {
            continue;
        }
        let from = offset.saturating_sub(start) as usize;
        let to = (until.min(end) - start) as usize;
        out.push((start + from as u64, obj.data.slice(from..to)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(seq: u64, s: &str) -> LogChunk {
        LogChunk {
            seq,
            stream: LogStream::Stdout as i32,
            data: s.as_bytes().to_vec(),
            time: None,
        }
    }

    #[tokio::test]
    async fn chunks_are_ordered_persisted_and_followed_without_gaps() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = JobStore::open(&toil_jobstore::Locator::File(dir.path().join("js")))
            .await
            .expect("open");
        store.initialize().await.expect("init");
        let (tx, mut rx) = mpsc::channel(16);
        let hub = LogHub::new(store.clone(), Some(tx));
        hub.open("a.1", "a", 1);
        assert_eq!(
            hub.push("a.1", chunk(1, "world\n")),
            0,
            "gap: nothing through"
        );
        assert_eq!(hub.push("a.1", chunk(0, "hello ")), 2);
        assert_eq!(hub.push("a.1", chunk(0, "hello ")), 2, "duplicate ignored");
        let line = rx.try_recv().expect("echoed");
        assert_eq!(
            (line.job_id.as_str(), line.line.as_str()),
            ("a", "hello world")
        );

        // A follower that joins now sees the buffered part, then live data.
        let start = hub.follow_start("a.1", true).expect("live");
        assert_eq!(
            (start.persisted, &start.buffered[..]),
            (0, &b"hello world\n"[..])
        );
        let mut live = start.live.expect("live");
        hub.push("a.1", chunk(2, "bye"));
        let c = live.recv().await.expect("live chunk");
        assert_eq!((c.offset, &c.data[..]), (12, &b"bye"[..]));

        hub.end("a.1", Some(3));
        hub.flush(false).await;
        assert!(
            hub.follow_start("a.1", false).is_none(),
            "forgotten once persisted"
        );
        let parts = read_persisted(&store, "a", 1, 6, u64::MAX)
            .await
            .expect("read");
        let text: Vec<u8> = parts.iter().flat_map(|(_, b)| b.to_vec()).collect();
        assert_eq!(text, b"world\nbye");
        assert_eq!(hub.tail("a", 1, 4).await, "\nbye");
        let last = rx.try_recv().expect("partial line echoed at end");
        assert_eq!(last.line, "bye");
    }
}
