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
//!
//! A job controls what its agent sends (it can read the agent's token), so
//! every amount the leader holds for an attempt is bounded:
//! - chunks are taken only up to [`AHEAD_WINDOW`] past the next one
//!   expected, and at most [`AHEAD_BYTES`] of them out of order;
//! - the unpersisted part waits for the job store once it passes
//!   [`BACKLOG_HIGH`]: the log stream is not read until the flusher catches
//!   up, and the agent keeps the rest in its spool;
//! - the log kept per attempt stops at `--maxLogBytesPerAttempt`, with a
//!   line saying so;
//! - the terminal echo splits lines in one pass over each chunk, in pieces
//!   of at most [`LINE_PIECE_MAX`], and queues at most
//!   [`lines::ECHO_IN_FLIGHT_MAX`] for the terminal.
//!
//! The hub's map is locked only to find an attempt; each attempt's work is
//! done under that attempt's own lock, so one job's flood never holds up
//! another's output.

pub mod lines;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use toil_jobstore::{Condition, JobStore, layout};
use toil_proto::v1::{LogChunk, LogStream};
use tokio::sync::{Notify, broadcast, mpsc};

pub use lines::LINE_PIECE_MAX;
use lines::{Charge, EchoBudget, LineSplitter};

use crate::metrics::LogBytes;

/// Flush a running attempt's log after this long.
const FLUSH_AGE: Duration = Duration::from_secs(5);
/// Flush when this many bytes are waiting.
const FLUSH_BYTES: usize = 1 << 20;
/// After an attempt ends, wait this long for straggling chunks.
const STRAGGLER_WAIT: Duration = Duration::from_secs(10);

/// How far past the next expected chunk a chunk may be numbered. An agent
/// sends its chunks in order on one stream and, after reconnecting, resends
/// from the first one not acknowledged, so it never leaves a gap: the window
/// only absorbs a reordering between an old stream and its replacement.
pub const AHEAD_WINDOW: u64 = 256;
/// Bytes of chunks held out of order for one attempt, at most.
pub const AHEAD_BYTES: usize = 8 << 20;
/// Unpersisted bytes of one attempt past which its log stream waits for the
/// job store before reading more.
pub const BACKLOG_HIGH: usize = 16 << 20;
/// The default `--maxLogBytesPerAttempt`: far more than any tool's
/// diagnostics, small enough that one runaway job cannot fill the job
/// store's disk for everyone.
pub const DEFAULT_MAX_BYTES_PER_ATTEMPT: u64 = 4 << 30;
/// Largest piece of log sent to a live follower at once.
const LIVE_PIECE: usize = LINE_PIECE_MAX;

/// A piece of live output for followers.
#[derive(Clone, Debug)]
pub struct LiveChunk {
    /// Byte offset of `data` in the attempt's log.
    pub offset: u64,
    /// Which stream it came from.
    pub stream: LogStream,
    /// The bytes, at most 64 KiB.
    pub data: Bytes,
}

/// Lines of job output for the terminal.
#[derive(Clone, Debug)]
pub struct EchoLine {
    /// The job that printed them.
    pub job_id: String,
    /// One or more lines, each ending in a newline and none longer than
    /// [`LINE_PIECE_MAX`] bytes before it.
    pub text: String,
    /// True for standard error and agent notes.
    pub stderr: bool,
    /// This text's share of the echo budget, given back once it is printed.
    _charge: Option<Arc<Charge>>,
}

impl EchoLine {
    /// The lines, without their newlines.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.text
            .strip_suffix('\n')
            .unwrap_or(&self.text)
            .split('\n')
    }
}

/// Why a chunk was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// Numbered past the window.
    #[error(
        "log chunk {seq} is more than {window} chunks ahead of the next one expected ({next}): an agent sends its chunks in order and resends from the first one not acknowledged"
    )]
    TooFarAhead {
        /// The chunk's number.
        seq: u64,
        /// The next number expected.
        next: u64,
        /// [`AHEAD_WINDOW`].
        window: u64,
    },
    /// Too many bytes waiting for a missing chunk.
    #[error(
        "log chunk {seq} would make {held} bytes held out of order for this attempt, past the limit of {limit}: send chunk {next} first"
    )]
    AheadFull {
        /// The chunk's number.
        seq: u64,
        /// The next number expected.
        next: u64,
        /// What would be held with it.
        held: usize,
        /// [`AHEAD_BYTES`].
        limit: usize,
    },
}

impl From<PushError> for tonic::Status {
    fn from(e: PushError) -> tonic::Status {
        match e {
            PushError::TooFarAhead { .. } => tonic::Status::out_of_range(e.to_string()),
            PushError::AheadFull { .. } => tonic::Status::resource_exhausted(e.to_string()),
        }
    }
}

/// What a taken chunk left behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pushed {
    /// Every chunk below this number has been received.
    pub through: u64,
    /// Bytes of the attempt's log not yet in the job store.
    pub backlog: usize,
}

struct AttemptLog {
    job_id: String,
    attempt: u32,
    next_seq: u64,
    /// Chunks that arrived ahead of a missing one.
    ahead: BTreeMap<u64, LogChunk>,
    /// Bytes of data in `ahead`.
    ahead_bytes: usize,
    /// The bytes being written to the job store now, from `persisted` on.
    in_flight: Option<Bytes>,
    /// Bytes after `in_flight` (or from `persisted`), not yet being written.
    buf: Vec<u8>,
    persisted: u64,
    /// Bytes of the log kept (output and the leader's notes).
    total: u64,
    /// True when the last byte kept was a newline (or nothing is kept).
    at_line_start: bool,
    /// Output dropped past the per-attempt limit, in bytes.
    dropped: u64,
    /// Set once the limit is reached.
    truncated: bool,
    /// Set once the closing note about dropped output is written.
    dropped_noted: bool,
    first_unflushed: Option<Instant>,
    /// Set when the attempt ended: how many chunks the agent sent (if it
    /// said), and when.
    ended: Option<(Option<u64>, Instant)>,
    /// Everything is persisted and the log is being forgotten: chunks that
    /// still arrive are ignored, as for an unknown attempt.
    closed: bool,
    live: broadcast::Sender<LiveChunk>,
    /// Partial lines per stream, for the terminal echo.
    splitters: [LineSplitter; 4],
    /// Lines not echoed because the terminal was behind, not yet reported.
    echo_skipped: u64,
}

impl AttemptLog {
    fn backlog(&self) -> usize {
        self.in_flight.as_ref().map_or(0, |b| b.len()) + self.buf.len()
    }

    fn pushed(&self) -> Pushed {
        Pushed {
            through: self.next_seq,
            backlog: self.backlog(),
        }
    }
}

/// One attempt in the hub's map.
struct Entry {
    log: Mutex<AttemptLog>,
    /// Fired whenever a segment is persisted, for streams waiting for room.
    drained: Notify,
}

/// All attempts' logs.
pub struct LogHub {
    store: JobStore,
    attempts: Mutex<HashMap<String, Arc<Entry>>>,
    echo: Option<mpsc::Sender<EchoLine>>,
    echo_budget: EchoBudget,
    max_bytes: u64,
    wake: Notify,
    /// Bytes received, stored and dropped, for `/metrics`.
    bytes: LogBytes,
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

/// One persisted piece of a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Its first byte's offset in the log.
    pub start: u64,
    /// Where the next segment starts, if there is one (this one ends there).
    pub next: Option<u64>,
    /// Its key in the job store.
    pub key: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn stream_index(stream: LogStream) -> usize {
    stream as usize % 4
}

impl LogHub {
    /// A hub persisting to `store`, echoing complete lines to `echo`, with
    /// the default per-attempt limit.
    pub fn new(store: JobStore, echo: Option<mpsc::Sender<EchoLine>>) -> Arc<LogHub> {
        LogHub::with_max_bytes_per_attempt(store, echo, DEFAULT_MAX_BYTES_PER_ATTEMPT)
    }

    /// A hub that keeps at most `max_bytes` of each attempt's log.
    pub fn with_max_bytes_per_attempt(
        store: JobStore,
        echo: Option<mpsc::Sender<EchoLine>>,
        max_bytes: u64,
    ) -> Arc<LogHub> {
        Arc::new(LogHub {
            store,
            attempts: Mutex::new(HashMap::new()),
            echo,
            echo_budget: EchoBudget::default(),
            max_bytes,
            wake: Notify::new(),
            bytes: LogBytes::default(),
        })
    }

    /// The hub's byte counters (shared: the registry reads these).
    pub fn bytes(&self) -> &LogBytes {
        &self.bytes
    }

    fn entry(&self, attempt_id: &str) -> Option<Arc<Entry>> {
        lock(&self.attempts).get(attempt_id).cloned()
    }

    /// Starts collecting an attempt's log.
    pub fn open(&self, attempt_id: &str, job_id: &str, attempt: u32) {
        let (live, _) = broadcast::channel(256);
        let log = AttemptLog {
            job_id: job_id.to_string(),
            attempt,
            next_seq: 0,
            ahead: BTreeMap::new(),
            ahead_bytes: 0,
            in_flight: None,
            buf: Vec::new(),
            persisted: 0,
            total: 0,
            at_line_start: true,
            dropped: 0,
            truncated: false,
            dropped_noted: false,
            first_unflushed: None,
            ended: None,
            closed: false,
            live,
            splitters: Default::default(),
            echo_skipped: 0,
        };
        lock(&self.attempts).insert(
            attempt_id.to_string(),
            Arc::new(Entry {
                log: Mutex::new(log),
                drained: Notify::new(),
            }),
        );
    }

    /// Takes a chunk. Chunks for unknown (or finished and forgotten)
    /// attempts are acknowledged and ignored; a chunk numbered past the
    /// window, or one that would hold too much out of order, is refused.
    pub fn push(&self, attempt_id: &str, chunk: LogChunk) -> Result<Pushed, PushError> {
        let ignored = Pushed {
            through: chunk.seq.saturating_add(1),
            backlog: 0,
        };
        let Some(entry) = self.entry(attempt_id) else {
            return Ok(ignored);
        };
        let mut log = lock(&entry.log);
        if log.closed {
            return Ok(ignored);
        }
        let next = log.next_seq;
        if chunk.seq < next {
            return Ok(log.pushed());
        }
        if chunk.seq - next > AHEAD_WINDOW {
            return Err(PushError::TooFarAhead {
                seq: chunk.seq,
                next,
                window: AHEAD_WINDOW,
            });
        }
        if chunk.seq > next {
            if !log.ahead.contains_key(&chunk.seq) {
                let held = log.ahead_bytes.saturating_add(chunk.data.len());
                if held > AHEAD_BYTES {
                    return Err(PushError::AheadFull {
                        seq: chunk.seq,
                        next,
                        held,
                        limit: AHEAD_BYTES,
                    });
                }
                log.ahead_bytes = held;
                log.ahead.insert(chunk.seq, chunk);
            }
            return Ok(log.pushed());
        }
        self.take(&mut log, chunk);
        loop {
            let next = log.next_seq;
            let Some(c) = log.ahead.remove(&next) else {
                break;
            };
            log.ahead_bytes -= c.data.len();
            self.take(&mut log, c);
        }
        let pushed = log.pushed();
        let complete = matches!(log.ended, Some((Some(n), _)) if pushed.through >= n);
        drop(log);
        if complete || pushed.backlog >= FLUSH_BYTES {
            self.wake.notify_one();
        }
        Ok(pushed)
    }

    /// Waits while `attempt_id` has more than [`BACKLOG_HIGH`] bytes not
    /// yet in the job store, so a job printing faster than the store takes
    /// it waits in its agent's spool rather than in the leader's memory.
    pub async fn wait_for_room(&self, attempt_id: &str) {
        let Some(entry) = self.entry(attempt_id) else {
            return;
        };
        loop {
            let drained = entry.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            {
                let log = lock(&entry.log);
                if log.closed || log.backlog() < BACKLOG_HIGH {
                    return;
                }
            }
            self.wake.notify_one();
            let _ = tokio::time::timeout(Duration::from_millis(500), drained).await;
        }
    }

    /// Appends the next chunk in order.
    fn take(&self, log: &mut AttemptLog, c: LogChunk) {
        log.next_seq += 1;
        let stream = LogStream::try_from(c.stream).unwrap_or(LogStream::Stdout);
        self.bytes.received.inc_by(c.data.len() as u64);
        self.append(log, stream, Bytes::from(c.data));
    }

    /// Keeps output up to the per-attempt limit; at the limit, writes a line
    /// saying so and counts the rest.
    fn append(&self, log: &mut AttemptLog, stream: LogStream, data: Bytes) {
        if data.is_empty() {
            return;
        }
        if log.truncated {
            log.dropped = log.dropped.saturating_add(data.len() as u64);
            self.bytes.dropped.inc_by(data.len() as u64);
            return;
        }
        let room = self.max_bytes.saturating_sub(log.total);
        if data.len() as u64 <= room {
            self.keep(log, stream, data);
            return;
        }
        let kept = room as usize;
        log.dropped = (data.len() - kept) as u64;
        self.bytes.dropped.inc_by(log.dropped);
        log.truncated = true;
        self.keep(log, stream, data.slice(..kept));
        let note = format!(
            "[toil-leader] this attempt's log reached the limit of {} (--maxLogBytesPerAttempt); the rest of its output is not kept",
            crate::workflow::units::format_size(self.max_bytes)
        );
        self.note(log, &note);
    }

    /// Adds a line from the leader itself to the log, on a line of its own.
    fn note(&self, log: &mut AttemptLog, text: &str) {
        // Lines the job left unfinished go to the terminal first, so that
        // it shows the note where the log has it.
        self.echo_unfinished(log);
        if !log.at_line_start {
            // In the log only: the terminal has just shown that line whole.
            self.keep_echoed(log, LogStream::Agent, Bytes::from_static(b"\n"), false);
        }
        self.keep(log, LogStream::Agent, Bytes::from(format!("{text}\n")));
    }

    /// Echoes every stream's unfinished line as it is.
    fn echo_unfinished(&self, log: &mut AttemptLog) {
        if self.echo.is_none() {
            return;
        }
        for i in 0..log.splitters.len() {
            let mut text = Vec::new();
            let lines = log.splitters[i].finish(&mut text);
            self.echo(log, i != LogStream::Stdout as usize, text, lines);
        }
    }

    /// Adds bytes to the log: the buffer, live followers, the terminal.
    fn keep(&self, log: &mut AttemptLog, stream: LogStream, data: Bytes) {
        self.keep_echoed(log, stream, data, true);
    }

    /// [`LogHub::keep`], with the terminal echo only when `echo` is set.
    fn keep_echoed(&self, log: &mut AttemptLog, stream: LogStream, data: Bytes, echo: bool) {
        if data.is_empty() {
            return;
        }
        let offset = log.total;
        log.total += data.len() as u64;
        log.at_line_start = data.last() == Some(&b'\n');
        log.buf.extend_from_slice(&data);
        log.first_unflushed.get_or_insert_with(Instant::now);
        if log.live.receiver_count() > 0 {
            let mut at = 0;
            while at < data.len() {
                let end = (at + LIVE_PIECE).min(data.len());
                let _ = log.live.send(LiveChunk {
                    offset: offset + at as u64,
                    stream,
                    data: data.slice(at..end),
                });
                at = end;
            }
        }
        if echo && self.echo.is_some() {
            let mut text = Vec::new();
            let lines = log.splitters[stream_index(stream)].feed(&data, &mut text);
            self.echo(log, stream != LogStream::Stdout, text, lines);
        }
    }

    /// Queues lines for the terminal, or counts them when the terminal is
    /// behind; the count is shown before the next lines that fit.
    fn echo(&self, log: &mut AttemptLog, stderr: bool, text: Vec<u8>, lines: usize) {
        if lines == 0 {
            return;
        }
        if log.echo_skipped > 0 {
            let note = format!(
                "[toil-leader] {} line(s) of this job's output not shown here: the terminal fell behind (the stored log has them all)\n",
                log.echo_skipped
            );
            if !self.send_echo(&log.job_id, note.into_bytes(), true) {
                log.echo_skipped += lines as u64;
                return;
            }
            log.echo_skipped = 0;
        }
        if !self.send_echo(&log.job_id, text, stderr) {
            log.echo_skipped += lines as u64;
        }
    }

    fn send_echo(&self, job_id: &str, text: Vec<u8>, stderr: bool) -> bool {
        let Some(echo) = &self.echo else {
            return true;
        };
        let text = String::from_utf8(text)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        let Some(charge) = self.echo_budget.reserve(text.len()) else {
            return false;
        };
        echo.try_send(EchoLine {
            job_id: job_id.to_string(),
            text,
            stderr,
            _charge: Some(Arc::new(charge)),
        })
        .is_ok()
    }

    /// Marks an attempt's log as ending: `chunks` is how many the agent
    /// sent, when known. The log is persisted once all have arrived (or
    /// after a short wait for stragglers) and then forgotten.
    pub fn end(&self, attempt_id: &str, chunks: Option<u64>) {
        if let Some(entry) = self.entry(attempt_id) {
            let mut log = lock(&entry.log);
            log.ended = Some((chunks, Instant::now()));
            // Echo a last line that had no newline.
            self.echo_unfinished(&mut log);
        }
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
        let entries: Vec<(String, Arc<Entry>)> = lock(&self.attempts)
            .iter()
            .map(|(id, e)| (id.clone(), e.clone()))
            .collect();
        // (attempt id, entry, key, bytes, final?)
        let mut work = Vec::new();
        let mut forget = Vec::new();
        for (id, entry) in entries {
            let mut log = lock(&entry.log);
            if log.in_flight.is_some() || log.closed {
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
            if done && log.dropped > 0 && !log.dropped_noted {
                log.dropped_noted = true;
                let note = format!(
                    "[toil-leader] {} byte(s) of output past the limit were dropped",
                    log.dropped
                );
                self.note(&mut log, &note);
            }
            if log.buf.is_empty() {
                if done {
                    log.closed = true;
                    forget.push((id, entry.clone()));
                }
                continue;
            }
            let data = Bytes::from(std::mem::take(&mut log.buf));
            log.in_flight = Some(data.clone());
            let key = layout::log_segment_key(&log.job_id, log.attempt, log.persisted);
            drop(log);
            work.push((id, entry, key, data, done));
        }
        for (id, entry, key, data, done) in work {
            let len = data.len();
            let ok = match self.store.put_bytes(&key, data, Condition::Always).await {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(attempt = %id, error = %e, "could not persist log segment; will retry");
                    false
                }
            };
            let mut log = lock(&entry.log);
            let data = log.in_flight.take().unwrap_or_default();
            if ok {
                self.bytes.stored.inc_by(len as u64);
                log.persisted += len as u64;
                log.first_unflushed = (!log.buf.is_empty()).then(Instant::now);
                if done && log.buf.is_empty() {
                    log.closed = true;
                    forget.push((id, entry.clone()));
                }
            } else {
                // Put it back in front of what came since.
                let mut all = data.to_vec();
                all.extend_from_slice(&log.buf);
                log.buf = all;
            }
            drop(log);
            entry.drained.notify_waiters();
        }
        if !forget.is_empty() {
            let mut map = lock(&self.attempts);
            for (id, entry) in forget {
                if map.get(&id).is_some_and(|e| Arc::ptr_eq(e, &entry)) {
                    map.remove(&id);
                }
            }
        }
    }

    /// Where a follower of `attempt_id` starts.
    pub fn follow_start(&self, attempt_id: &str, want_live: bool) -> Option<FollowStart> {
        let entry = self.entry(attempt_id)?;
        let log = lock(&entry.log);
        if log.closed {
            return None;
        }
        let live = (want_live && log.ended.is_none()).then(|| log.live.subscribe());
        let buffered = match &log.in_flight {
            None => Bytes::from(log.buf.clone()),
            Some(f) => {
                let mut all = Vec::with_capacity(f.len() + log.buf.len());
                all.extend_from_slice(f);
                all.extend_from_slice(&log.buf);
                Bytes::from(all)
            }
        };
        Some(FollowStart {
            persisted: log.persisted,
            buffered,
            live,
        })
    }

    /// The persisted segments of a log that hold bytes from `offset` up to
    /// (not including) `until`, without reading them.
    pub async fn segments(
        &self,
        job_id: &str,
        attempt: u32,
        offset: u64,
        until: u64,
    ) -> toil_jobstore::Result<Vec<Segment>> {
        segments(&self.store, job_id, attempt, offset, until).await
    }

    /// Reads the bytes of `seg` from `offset` up to `until`; `None` if it
    /// holds none of them (or is gone).
    pub async fn read_segment(
        &self,
        seg: &Segment,
        offset: u64,
        until: u64,
    ) -> toil_jobstore::Result<Option<(u64, Bytes)>> {
        read_segment(&self.store, seg, offset, until).await
    }

    /// The last `max` bytes of an attempt's log (persisted and buffered),
    /// for failure summaries. Reads only the segments that hold them.
    pub async fn tail(&self, job_id: &str, attempt: u32, max: usize) -> String {
        let id = layout::attempt_id(job_id, attempt);
        let (persisted, buffered) = match self.follow_start(&id, false) {
            Some(s) => (s.persisted, s.buffered),
            None => (u64::MAX, Bytes::new()),
        };
        let mut parts = Vec::new();
        let mut have = buffered.len();
        if have < max
            && let Ok(segs) = segments(&self.store, job_id, attempt, 0, persisted).await
        {
            for seg in segs.iter().rev() {
                if have >= max {
                    break;
                }
                if let Ok(Some((_, data))) = read_segment(&self.store, seg, 0, persisted).await {
                    have += data.len();
                    parts.push(data);
                }
            }
        }
        let mut bytes = Vec::with_capacity(have.min(max) + max);
        for p in parts.iter().rev() {
            bytes.extend_from_slice(p);
        }
        bytes.extend_from_slice(&buffered);
        let start = bytes.len().saturating_sub(max);
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }
}

/// The persisted segments of a log holding bytes from `offset` to `until`,
/// in order, unread: a segment ends where the next begins, so only the
/// listing is needed to skip the ones before `offset`.
pub async fn segments(
    store: &JobStore,
    job_id: &str,
    attempt: u32,
    offset: u64,
    until: u64,
) -> toil_jobstore::Result<Vec<Segment>> {
    let mut all: Vec<(u64, String)> = store
        .list(&layout::log_prefix(job_id, attempt))
        .await?
        .into_iter()
        .filter_map(|key| Some((layout::log_segment_offset(&key)?, key)))
        .collect();
    all.sort();
    let mut out = Vec::new();
    for (i, (start, key)) in all.iter().enumerate() {
        let next = all.get(i + 1).map(|(s, _)| *s);
        if *start >= until {
            break;
        }
        if next.is_some_and(|n| n <= offset) {
            continue;
        }
        out.push(Segment {
            start: *start,
            next,
            key: key.clone(),
        });
    }
    Ok(out)
}

/// Reads the bytes of `seg` from `offset` up to `until`.
pub async fn read_segment(
    store: &JobStore,
    seg: &Segment,
    offset: u64,
    until: u64,
) -> toil_jobstore::Result<Option<(u64, Bytes)>> {
    let Some(obj) = store.get_bytes(&seg.key).await? else {
        return Ok(None);
    };
    let start = seg.start;
    let end = start + obj.data.len() as u64;
    if end <= offset || start >= until {
        return Ok(None);
    }
    let from = offset.saturating_sub(start) as usize;
    let to = (until.min(end) - start) as usize;
    Ok(Some((start + from as u64, obj.data.slice(from..to))))
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
    for seg in segments(store, job_id, attempt, offset, until).await? {
        if let Some(part) = read_segment(store, &seg, offset, until).await? {
            out.push(part);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
