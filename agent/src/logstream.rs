//! Streaming a job's output to the leader, in numbered chunks, without
//! losing any.
//!
//! Every chunk is kept until the leader acknowledges it. When the stream
//! breaks (network trouble, a leader that restarts its server) the streamer
//! reconnects and resends everything not yet acknowledged. Unacknowledged
//! output beyond 1 MiB spills to a spool file on local disk and is read back
//! from there when resent, so memory stays bounded however slow the leader
//! is and however much the job prints: in a pod the agent's memory counts
//! against the job's limit. (The spool is created only when needed: most jobs' output is
//! acknowledged within milliseconds, and a file per attempt costs an inode
//! allocation and a deletion that are measurable at hundreds of jobs per
//! second.) The same
//! bytes are also written, line by line and prefixed with the job id, to the
//! agent's stdout, so `kubectl logs POD` shows what ran in the pod.

use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use toil_proto::v1::{LogChunk, LogStream, StreamLogsRequest};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use crate::client::{LEADER_CONTACT, Leader};

/// Unacknowledged chunks kept in memory beyond this are re-read from the
/// spool when they must be resent. One MiB in flight is several round trips
/// of a local leader's acknowledgements, so a larger window buys no speed.
const MEMORY_LIMIT: usize = 1 << 20;

/// Chunks queued between the pipes and the streamer, and between the
/// streamer and the gRPC stream. Each is at most one pipe read (see
/// `exec::READ_SIZE`), so each queue holds at most about 512 KiB.
const QUEUE: usize = 16;

/// The longest partial line echoed to stdout as it is: output without
/// newlines is echoed in pieces of this size rather than kept whole.
const ECHO_LINE_MAX: usize = 16 << 10;

/// Where job output goes: cheap to clone, one per output pipe.
#[derive(Clone)]
pub struct LogSink {
    tx: mpsc::Sender<(LogStream, Bytes)>,
}

impl LogSink {
    /// Queues bytes from `stream`. Waits when the streamer is far behind,
    /// which slows the job's writes rather than growing memory.
    pub async fn write(&self, stream: LogStream, data: Bytes) {
        let _ = self.tx.send((stream, data)).await;
    }

    /// Queues a note from the agent itself (a line).
    pub async fn note(&self, line: &str) {
        let mut s = format!("[toil-agent] {line}");
        if !s.ends_with('\n') {
            s.push('\n');
        }
        self.write(LogStream::Agent, Bytes::from(s)).await;
    }
}

/// The streamer task's handle.
pub struct LogStreamer {
    sink: LogSink,
    done: oneshot::Receiver<Finished>,
}

/// How streaming ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finished {
    /// Chunks produced.
    pub chunks: u64,
    /// True if the leader acknowledged all of them.
    pub all_acked: bool,
}

struct Entry {
    seq: u64,
    /// The chunk, while it is kept in memory.
    chunk: Option<LogChunk>,
    /// Where it is in the spool file, once spilled.
    spilled: Option<(u64, u32)>,
}

struct State {
    attempt_id: String,
    token: String,
    spool_path: PathBuf,
    spool: Option<std::fs::File>,
    spool_len: u64,
    unacked: VecDeque<Entry>,
    in_memory: usize,
    next_seq: u64,
    acked: u64,
    echo: Option<Echo>,
}

struct Echo {
    prefix: String,
    partial: [Vec<u8>; 4],
}

impl LogStreamer {
    /// Starts streaming for one attempt, spooling to `spool`.
    pub fn start(
        leader: &Leader,
        attempt_id: &str,
        token: &str,
        spool: &Path,
        echo_prefix: Option<String>,
    ) -> std::io::Result<LogStreamer> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (done_tx, done) = oneshot::channel();
        let state = State {
            attempt_id: attempt_id.to_string(),
            token: token.to_string(),
            spool_path: spool.to_path_buf(),
            spool: None,
            spool_len: 0,
            unacked: VecDeque::new(),
            in_memory: 0,
            next_seq: 0,
            acked: 0,
            echo: echo_prefix.map(|prefix| Echo {
                prefix,
                partial: Default::default(),
            }),
        };
        let leader = leader.clone();
        let path = spool.to_path_buf();
        tokio::spawn(async move {
            let finished = run(leader, state, rx, path).await;
            let _ = done_tx.send(finished);
        });
        Ok(LogStreamer {
            sink: LogSink { tx },
            done,
        })
    }

    /// A handle for writing output.
    pub fn sink(&self) -> LogSink {
        self.sink.clone()
    }

    /// Stops taking output and waits (at most `wait`) until the leader has
    /// acknowledged everything.
    pub async fn finish(self, wait: Duration) -> Finished {
        let LogStreamer { sink, done } = self;
        drop(sink);
        match tokio::time::timeout(wait, done).await {
            Ok(Ok(f)) => f,
            _ => Finished {
                chunks: 0,
                all_acked: false,
            },
        }
    }
}

async fn run(
    leader: Leader,
    mut st: State,
    mut rx: mpsc::Receiver<(LogStream, Bytes)>,
    spool_path: PathBuf,
) -> Finished {
    let mut out: Option<mpsc::Sender<StreamLogsRequest>> = None;
    let mut acks: Option<tonic::Streaming<toil_proto::v1::StreamLogsResponse>> = None;
    let mut closing = false;
    let mut retry_at = Instant::now();
    let mut delays = LEADER_CONTACT.delays();
    // Once closing, how long to keep trying to deliver.
    let give_up = |since: Instant| since.elapsed() > Duration::from_secs(30);
    let mut closed_at = None;
    loop {
        if closing && st.acked >= st.next_seq {
            break;
        }
        if let Some(at) = closed_at
            && give_up(at)
        {
            tracing::warn!(
                unacked = st.next_seq - st.acked,
                "could not deliver the whole log to the leader; the rest stays in {}",
                spool_path.display()
            );
            break;
        }
        // (Re)connect when there is something to send.
        if out.is_none() && st.acked < st.next_seq && Instant::now() >= retry_at {
            match connect(&leader, &mut st).await {
                Ok((tx, stream)) => {
                    out = Some(tx);
                    acks = Some(stream);
                    delays = LEADER_CONTACT.delays();
                }
                Err(e) => {
                    tracing::debug!(error = %e, "log stream connect failed");
                    retry_at = Instant::now() + delays.next().unwrap_or(LEADER_CONTACT.max);
                }
            }
        }
        let wait_retry = async {
            if out.is_none() && st.acked < st.next_seq {
                tokio::time::sleep_until(retry_at.into()).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let next_ack = async {
            match acks.as_mut() {
                Some(s) => s.message().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            item = rx.recv(), if !closing => match item {
                Some((stream, data)) => {
                    let chunk = st.add(stream, data);
                    if let (Some(chunk), Some(tx)) = (chunk, out.as_ref())
                        && tx.send(st.request(chunk)).await.is_err()
                    {
                        out = None;
                        acks = None;
                    }
                }
                None => {
                    closing = true;
                    closed_at = Some(Instant::now());
                    st.flush_echo();
                }
            },
            ack = next_ack => match ack {
                Ok(Some(a)) => st.ack(a.received_through),
                Ok(None) | Err(_) => {
                    out = None;
                    acks = None;
                    retry_at = Instant::now() + delays.next().unwrap_or(LEADER_CONTACT.max);
                }
            },
            _ = wait_retry => {}
        }
    }
    if st.spool.is_some() && st.acked >= st.next_seq {
        let _ = std::fs::remove_file(&spool_path);
    }
    Finished {
        chunks: st.next_seq,
        all_acked: st.acked >= st.next_seq,
    }
}

type Connected = (
    mpsc::Sender<StreamLogsRequest>,
    tonic::Streaming<toil_proto::v1::StreamLogsResponse>,
);

/// Opens a stream and resends every unacknowledged chunk.
///
/// The chunks go out with the request rather than after the leader's
/// response headers: waiting for those would add a round trip to the first
/// line of every attempt, which through the tunnel over the API server is
/// most of that line's latency.
async fn connect(leader: &Leader, st: &mut State) -> Result<Connected, String> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let mut client = leader.client();
    let call = client.stream_logs(ReceiverStream::new(rx));
    let resend = async {
        for i in 0..st.unacked.len() {
            let chunk = st
                .load(i)
                .map_err(|e| format!("reading the log spool: {e}"))?;
            tx.send(st.request(chunk))
                .await
                .map_err(|_| "log stream closed".to_string())?;
        }
        Ok::<(), String>(())
    };
    let (resp, resent) = tokio::join!(call, resend);
    let stream = resp.map_err(|e| e.to_string())?.into_inner();
    resent?;
    Ok((tx, stream))
}

impl State {
    /// Numbers, spools and echoes new output; returns the chunk to send.
    fn add(&mut self, stream: LogStream, data: Bytes) -> Option<LogChunk> {
        if data.is_empty() {
            return None;
        }
        self.echo(stream, &data);
        let now = chrono::Utc::now();
        let chunk = LogChunk {
            seq: self.next_seq,
            stream: stream as i32,
            data: data.to_vec(),
            time: Some(prost_types::Timestamp {
                seconds: now.timestamp(),
                nanos: now.timestamp_subsec_nanos() as i32,
            }),
        };
        self.next_seq += 1;
        self.in_memory += chunk.data.len();
        self.unacked.push_back(Entry {
            seq: chunk.seq,
            chunk: Some(chunk.clone()),
            spilled: None,
        });
        // Past the memory limit, move older chunks to the spool file.
        let mut i = 0;
        while self.in_memory > MEMORY_LIMIT && i + 1 < self.unacked.len() {
            if self.unacked[i].chunk.is_some() {
                match self.spill(i) {
                    Ok(()) => {}
                    Err(e) => {
                        // Keep it in memory rather than lose it.
                        tracing::warn!(error = %e, "could not write the log spool");
                        break;
                    }
                }
            }
            i += 1;
        }
        Some(chunk)
    }

    /// Writes entry `i` to the spool and drops its memory copy.
    fn spill(&mut self, i: usize) -> std::io::Result<()> {
        if self.spool.is_none() {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(&self.spool_path)?;
            self.spool = Some(f);
        }
        let Some(chunk) = self.unacked[i].chunk.as_ref() else {
            return Ok(());
        };
        let encoded = prost::Message::encode_to_vec(chunk);
        let offset = self.spool_len;
        if let Some(f) = self.spool.as_mut() {
            f.seek(SeekFrom::End(0))?;
            f.write_all(&encoded)?;
        }
        self.spool_len += encoded.len() as u64;
        self.unacked[i].spilled = Some((offset, encoded.len() as u32));
        if let Some(c) = self.unacked[i].chunk.take() {
            self.in_memory -= c.data.len();
        }
        Ok(())
    }

    fn load(&mut self, i: usize) -> std::io::Result<LogChunk> {
        if let Some(c) = &self.unacked[i].chunk {
            return Ok(c.clone());
        }
        let (Some((offset, len)), Some(spool)) = (self.unacked[i].spilled, self.spool.as_mut())
        else {
            return Err(std::io::Error::other(
                "a spilled log chunk is missing from the spool",
            ));
        };
        let mut buf = vec![0u8; len as usize];
        spool.seek(SeekFrom::Start(offset))?;
        spool.read_exact(&mut buf)?;
        prost::Message::decode(&buf[..]).map_err(std::io::Error::other)
    }

    fn request(&self, chunk: LogChunk) -> StreamLogsRequest {
        StreamLogsRequest {
            attempt_id: self.attempt_id.clone(),
            attempt_token: self.token.clone(),
            chunk: Some(chunk),
        }
    }

    fn ack(&mut self, through: u64) {
        self.acked = self.acked.max(through);
        while self.unacked.front().is_some_and(|e| e.seq < through) {
            if let Some(e) = self.unacked.pop_front()
                && let Some(c) = e.chunk
            {
                self.in_memory -= c.data.len();
            }
        }
    }

    fn echo(&mut self, stream: LogStream, data: &[u8]) {
        let Some(echo) = self.echo.as_mut() else {
            return;
        };
        let partial = &mut echo.partial[stream as usize % 4];
        let mut out = std::io::stdout().lock();
        echo_lines(echo.prefix.as_bytes(), partial, data, &mut out);
        let _ = out.flush();
    }

    fn flush_echo(&mut self) {
        let Some(echo) = self.echo.as_mut() else {
            return;
        };
        let mut out = std::io::stdout().lock();
        for partial in echo.partial.iter_mut() {
            if !partial.is_empty() {
                let _ = out.write_all(echo.prefix.as_bytes());
                let _ = out.write_all(partial);
                let _ = out.write_all(b"\n");
                partial.clear();
            }
        }
        let _ = out.flush();
    }
}

/// Writes the whole lines of `partial` + `data` to `out`, each after
/// `prefix`, and keeps the unfinished rest in `partial`. A line longer than
/// `ECHO_LINE_MAX` goes out in pieces, each on a line of its own, so output
/// without newlines cannot grow memory. Lines are gathered into writes of
/// about 64 KiB: stdout is line buffered, and a write per line capped a
/// flood of short lines at a few MiB/s.
fn echo_lines(prefix: &[u8], partial: &mut Vec<u8>, data: &[u8], out: &mut impl Write) {
    const BATCH: usize = 64 << 10;
    partial.extend_from_slice(data);
    let mut buf = Vec::with_capacity(BATCH.min(partial.len() * 2) + prefix.len());
    let mut start = 0;
    while let Some(pos) = partial[start..].iter().position(|&b| b == b'\n') {
        buf.extend_from_slice(prefix);
        buf.extend_from_slice(&partial[start..=start + pos]);
        start += pos + 1;
        if buf.len() >= BATCH {
            let _ = out.write_all(&buf);
            buf.clear();
        }
    }
    while partial.len() - start >= ECHO_LINE_MAX {
        buf.extend_from_slice(prefix);
        buf.extend_from_slice(&partial[start..start + ECHO_LINE_MAX]);
        buf.push(b'\n');
        start += ECHO_LINE_MAX;
    }
    if !buf.is_empty() {
        let _ = out.write_all(&buf);
    }
    partial.drain(..start);
    if partial.capacity() > 2 * ECHO_LINE_MAX {
        partial.shrink_to(ECHO_LINE_MAX);
    }
}

#[cfg(test)]
mod echo_tests {
    use super::*;

    #[test]
    fn whole_lines_are_prefixed_and_the_rest_waits_for_its_newline() {
        let mut partial = Vec::new();
        let mut out = Vec::new();
        echo_lines(b"[a] ", &mut partial, b"one\ntw", &mut out);
        assert_eq!(out, b"[a] one\n");
        echo_lines(b"[a] ", &mut partial, b"o\nthree\nfo", &mut out);
        assert_eq!(out, b"[a] one\n[a] two\n[a] three\n");
        assert_eq!(partial, b"fo");
    }

    #[test]
    fn a_line_without_newlines_goes_out_in_pieces() {
        let mut partial = Vec::new();
        let mut out = Vec::new();
        let long = vec![b'x'; ECHO_LINE_MAX * 2 + 10];
        echo_lines(b"> ", &mut partial, &long, &mut out);
        let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
        assert_eq!(lines.len(), 3, "two full pieces and the end of the output");
        assert_eq!(lines[0].len(), ECHO_LINE_MAX + 2);
        assert_eq!(partial.len(), 10);
    }

    #[test]
    fn a_flood_of_short_lines_is_written_whole_and_in_order() {
        let mut partial = Vec::new();
        let mut out = Vec::new();
        let data: Vec<u8> = (0..50_000)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        echo_lines(b"[j] ", &mut partial, &data, &mut out);
        let text = String::from_utf8(out).expect("utf-8");
        let mut n = 0;
        for (i, line) in text.lines().enumerate() {
            assert_eq!(line, format!("[j] {i}"));
            n += 1;
        }
        assert_eq!(n, 50_000);
        assert!(partial.is_empty());
    }
}
