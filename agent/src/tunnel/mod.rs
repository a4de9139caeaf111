//! Many byte streams over one connection: the leader's tunnel to its relay
//! pod carries every agent connection over a few port-forwards.
//!
//! The protocol is small on purpose (`yamux` was the alternative; this is
//! all the relay and the leader need, and it is tested here):
//! - After [`handshake`] (the leader proves it holds the relay's token),
//!   both sides exchange frames: a 9-byte header, stream id (u32), kind
//!   (u8) and payload length (u32), all big-endian, then the payload.
//! - Only the relay opens streams (`OPEN`, payload: the agent's address).
//!   `DATA` carries bytes, `CLOSE` ends one direction (EOF), `RESET` drops
//!   the stream, and `CREDIT` returns flow-control credit.
//! - Flow control per stream: a sender may have at most [`WINDOW`] bytes
//!   that the receiver has not yet handed to its reader; the receiver
//!   returns credit as its reader takes bytes. So one slow agent stream
//!   never stalls the others sharing the connection, and memory stays
//!   bounded by streams × window.
//! - Stream 0 carries `REPORT` frames: one text line from relay to leader.
//!
//! Each stream is handed out as one end of a [`tokio::io::duplex`] pipe; a
//! task per stream pumps bytes between the pipe and the frames.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

/// Bytes a sender may have in flight per stream before it waits for credit.
pub const WINDOW: u32 = 256 * 1024;
/// Largest payload of one frame.
pub const MAX_FRAME: usize = 32 * 1024;
/// The first line the leader sends on a new tunnel connection.
pub const MAGIC: &[u8; 8] = b"TOILTUN1";
/// Longest token accepted in a handshake.
const MAX_TOKEN: usize = 256;

const OPEN: u8 = 1;
const DATA: u8 = 2;
const CLOSE: u8 = 3;
const RESET: u8 = 4;
const CREDIT: u8 = 5;
const REPORT: u8 = 6;

/// One frame, as sent or received.
#[derive(Debug)]
struct Frame {
    stream: u32,
    kind: u8,
    payload: Bytes,
}

impl Frame {
    fn encode(&self, out: &mut BytesMut) {
        out.reserve(9 + self.payload.len());
        out.put_u32(self.stream);
        out.put_u8(self.kind);
        out.put_u32(self.payload.len() as u32);
        out.put_slice(&self.payload);
    }
}

/// What arrives from the other side, besides stream bytes.
#[derive(Debug)]
pub enum Inbound {
    /// The relay opened a stream for an agent connection from `peer`.
    Stream {
        /// The stream, as a pipe end.
        io: DuplexStream,
        /// The agent's address as the relay saw it.
        peer: String,
    },
    /// A report line from the relay.
    Report(String),
}

/// The state the reader shares with the per-stream tasks.
struct Streams {
    /// Where each stream's inbound bytes go (`None` payload = EOF).
    inbound: HashMap<u32, (mpsc::UnboundedSender<Option<Bytes>>, Arc<Semaphore>)>,
}

/// One end of a multiplexed connection.
#[derive(Clone)]
pub struct Mux {
    /// Frames to the writer task.
    out: mpsc::Sender<Frame>,
    /// Open streams.
    streams: Arc<Mutex<Streams>>,
    /// The next stream id this side opens (odd on the relay).
    next_id: Arc<AtomicU32>,
    /// Cancelled when the connection ends, from either side or by [`Mux::close`].
    closed: CancellationToken,
}

impl Mux {
    /// Runs the multiplexer over `io` until it fails or the other side
    /// closes. Streams the other side opens, and its reports, arrive on the
    /// returned receiver; it ends when the connection does.
    pub fn start<T>(io: T) -> (Mux, mpsc::Receiver<Inbound>)
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::channel(256);
        let (in_tx, in_rx) = mpsc::channel(64);
        let mux = Mux {
            out: out_tx,
            streams: Arc::new(Mutex::new(Streams {
                inbound: HashMap::new(),
            })),
            next_id: Arc::new(AtomicU32::new(1)),
            closed: CancellationToken::new(),
        };
        tokio::spawn(write_loop(wr, out_rx, mux.closed.clone()));
        let reader = mux.clone();
        tokio::spawn(async move {
            let r = tokio::select! {
                r = reader.read_loop(rd, in_tx) => r,
                _ = reader.closed.cancelled() => Ok(()),
            };
            if let Err(e) = r {
                tracing::debug!(error = %e, "tunnel connection ended");
            }
            reader.closed.cancel();
            // Every stream ends with the connection.
            let gone: Vec<_> = {
                let mut s = reader.lock();
                s.inbound.drain().collect()
            };
            for (_, (tx, credit)) in gone {
                credit.close();
                let _ = tx.send(None);
            }
        });
        (mux, in_rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Streams> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True once the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Waits until the connection has ended.
    pub async fn closed(&self) {
        self.closed.cancelled().await
    }

    /// Ends the connection and every stream on it.
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// The number of streams open now.
    pub fn open_streams(&self) -> usize {
        self.lock().inbound.len()
    }

    /// Opens a stream (the relay does, one per agent connection); `peer`
    /// tells the other side who is on this end.
    pub async fn open(&self, peer: &str) -> io::Result<DuplexStream> {
        let id = self.next_id.fetch_add(2, Ordering::Relaxed);
        let io = self.attach(id);
        self.send(id, OPEN, Bytes::copy_from_slice(peer.as_bytes()))
            .await?;
        Ok(io)
    }

    /// Sends one report line (relay to leader).
    pub async fn report(&self, line: &str) -> io::Result<()> {
        self.send(0, REPORT, Bytes::copy_from_slice(line.as_bytes()))
            .await
    }

    async fn send(&self, stream: u32, kind: u8, payload: Bytes) -> io::Result<()> {
        if self.closed.is_cancelled() {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the tunnel is closed",
            ));
        }
        self.out
            .send(Frame {
                stream,
                kind,
                payload,
            })
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the tunnel is closed"))
    }

    /// Registers stream `id` and starts its pump; returns the user's end.
    fn attach(&self, id: u32) -> DuplexStream {
        let (user, ours) = tokio::io::duplex(64 * 1024);
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let credit = Arc::new(Semaphore::new(WINDOW as usize));
        self.lock().inbound.insert(id, (in_tx, credit.clone()));
        tokio::spawn(self.clone().pump(id, ours, in_rx, credit));
        user
    }

    /// Moves one stream's bytes between its pipe and the connection.
    async fn pump(
        self,
        id: u32,
        pipe: DuplexStream,
        mut inbound: mpsc::UnboundedReceiver<Option<Bytes>>,
        credit: Arc<Semaphore>,
    ) {
        let (mut rd, mut wr) = tokio::io::split(pipe);
        let outbound = async {
            let mut buf = vec![0u8; MAX_FRAME];
            loop {
                let n = match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = self.send(id, CLOSE, Bytes::new()).await;
                        return;
                    }
                    Ok(n) => n,
                };
                match credit.acquire_many(n as u32).await {
                    Ok(p) => p.forget(),
                    Err(_) => return,
                }
                if self
                    .send(id, DATA, Bytes::copy_from_slice(&buf[..n]))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        };
        let inbound = async {
            while let Some(Some(bytes)) = inbound.recv().await {
                let n = bytes.len() as u32;
                if wr.write_all(&bytes).await.is_err() {
                    let _ = self.send(id, RESET, Bytes::new()).await;
                    return;
                }
                let mut c = BytesMut::with_capacity(4);
                c.put_u32(n);
                if self.send(id, CREDIT, c.freeze()).await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        };
        tokio::join!(outbound, inbound);
        self.lock().inbound.remove(&id);
    }

    async fn read_loop<R: AsyncRead + Unpin>(
        &self,
        mut rd: R,
        opened: mpsc::Sender<Inbound>,
    ) -> io::Result<()> {
        let mut header = [0u8; 9];
        loop {
            rd.read_exact(&mut header).await?;
            let mut h = &header[..];
            let stream = h.get_u32();
            let kind = h.get_u8();
            let len = h.get_u32() as usize;
            if len > MAX_FRAME {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a tunnel frame of {len} bytes is over the {MAX_FRAME}-byte limit"),
                ));
            }
            let mut payload = vec![0u8; len];
            rd.read_exact(&mut payload).await?;
            let payload = Bytes::from(payload);
            match kind {
                OPEN => {
                    let io = self.attach(stream);
                    let peer = String::from_utf8_lossy(&payload).into_owned();
                    if opened.send(Inbound::Stream { io, peer }).await.is_err() {
                        return Ok(());
                    }
                }
                REPORT => {
                    let line = String::from_utf8_lossy(&payload).into_owned();
                    let _ = opened.send(Inbound::Report(line)).await;
                }
                DATA | CLOSE | RESET | CREDIT => {
                    let s = self.lock();
                    let Some((tx, credit)) = s.inbound.get(&stream) else {
                        continue;
                    };
                    match kind {
                        DATA => {
                            let _ = tx.send(Some(payload));
                        }
                        CLOSE => {
                            let _ = tx.send(None);
                        }
                        RESET => {
                            let _ = tx.send(None);
                            credit.close();
                        }
                        _ => {
                            if payload.len() == 4 {
                                let n = (&payload[..]).get_u32() as usize;
                                credit.add_permits(n.min(WINDOW as usize));
                            }
                        }
                    }
                }
                other => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("unknown tunnel frame kind {other}"),
                    ));
                }
            }
        }
    }
}

/// Writes frames in order, flushing when none are waiting.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut frames: mpsc::Receiver<Frame>,
    closed: CancellationToken,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        let f = tokio::select! {
            f = frames.recv() => match f {
                Some(f) => f,
                None => break,
            },
            _ = closed.cancelled() => break,
        };
        f.encode(&mut buf);
        while buf.len() < 256 * 1024 {
            match frames.try_recv() {
                Ok(f) => f.encode(&mut buf),
                Err(_) => break,
            }
        }
        if wr.write_all(&buf).await.is_err() || wr.flush().await.is_err() {
            closed.cancel();
            return;
        }
        buf.clear();
    }
    closed.cancel();
    let _ = wr.shutdown().await;
}

/// The leader's side of the handshake: sends the magic and the relay token,
/// and waits for the relay's `OK`.
pub async fn handshake<T: AsyncRead + AsyncWrite + Unpin>(
    io: &mut T,
    token: &str,
) -> io::Result<()> {
    let mut hello = Vec::with_capacity(MAGIC.len() + 2 + token.len());
    hello.extend_from_slice(MAGIC);
    hello.extend_from_slice(&(token.len() as u16).to_be_bytes());
    hello.extend_from_slice(token.as_bytes());
    io.write_all(&hello).await?;
    io.flush().await?;
    let mut ok = [0u8; 3];
    io.read_exact(&mut ok).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("the relay closed the tunnel during the handshake (wrong relay token?): {e}"),
        )
    })?;
    if &ok != b"OK\n" {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the relay answered the tunnel handshake with something other than OK",
        ));
    }
    Ok(())
}

/// The relay's side of the handshake: reads the magic and token, compares
/// the token with `expected` (by digest, so the time taken does not tell
/// how much matched) and answers `OK`. A wrong token is an error and the
/// caller drops the connection.
pub async fn accept_handshake<T: AsyncRead + AsyncWrite + Unpin>(
    io: &mut T,
    expected: &str,
) -> io::Result<()> {
    use sha2::{Digest, Sha256};
    let mut head = [0u8; 10];
    io.read_exact(&mut head).await?;
    if &head[..8] != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a toil tunnel handshake",
        ));
    }
    let len = u16::from_be_bytes([head[8], head[9]]) as usize;
    if len > MAX_TOKEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the tunnel token is too long",
        ));
    }
    let mut token = vec![0u8; len];
    io.read_exact(&mut token).await?;
    if Sha256::digest(&token) != Sha256::digest(expected.as_bytes()) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "wrong relay token",
        ));
    }
    io.write_all(b"OK\n").await?;
    io.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two muxes joined by an in-memory pipe.
    fn pair() -> (Mux, mpsc::Receiver<Inbound>, Mux, mpsc::Receiver<Inbound>) {
        let (a, b) = tokio::io::duplex(16 * 1024);
        let (ma, ra) = Mux::start(a);
        let (mb, rb) = Mux::start(b);
        (ma, ra, mb, rb)
    }

    async fn next_stream(rx: &mut mpsc::Receiver<Inbound>) -> (DuplexStream, String) {
        loop {
            match rx.recv().await {
                Some(Inbound::Stream { io, peer }) => return (io, peer),
                Some(Inbound::Report(_)) => continue,
                None => panic!("the mux ended without a stream"),
            }
        }
    }

    #[tokio::test]
    async fn streams_carry_bytes_both_ways_with_eof_and_reports() {
        let (relay, _rr, _leader, mut lr) = pair();
        relay.report("direct unreachable").await.unwrap();
        let mut a = relay.open("10.0.0.7:4000").await.unwrap();
        match lr.recv().await {
            Some(Inbound::Report(l)) => assert_eq!(l, "direct unreachable"),
            other => panic!("expected the report first, got {other:?}"),
        }
        let (mut b, peer) = next_stream(&mut lr).await;
        assert_eq!(peer, "10.0.0.7:4000");
        a.write_all(b"hello").await.unwrap();
        a.shutdown().await.unwrap();
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");
        b.write_all(b"back").await.unwrap();
        b.shutdown().await.unwrap();
        let mut got = Vec::new();
        a.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"back");
    }

    #[tokio::test]
    async fn a_stream_whose_reader_stalls_does_not_hold_up_the_others() {
        let (relay, _rr, _leader, mut lr) = pair();
        // Stream 1: 4 MiB that nobody reads on the leader side for now.
        let mut slow = relay.open("slow").await.unwrap();
        let (mut slow_far, _) = next_stream(&mut lr).await;
        let writer = tokio::spawn(async move {
            let chunk = vec![7u8; 64 * 1024];
            for _ in 0..64 {
                slow.write_all(&chunk).await.unwrap();
            }
            slow.shutdown().await.unwrap();
            slow
        });
        // Stream 2 still works, both ways, while stream 1 is blocked on credit.
        let mut fast = relay.open("fast").await.unwrap();
        let (mut fast_far, _) = next_stream(&mut lr).await;
        for i in 0..100u32 {
            fast.write_all(&i.to_be_bytes()).await.unwrap();
            let mut b = [0u8; 4];
            fast_far.read_exact(&mut b).await.unwrap();
            assert_eq!(u32::from_be_bytes(b), i);
            fast_far.write_all(&b).await.unwrap();
            fast.read_exact(&mut b).await.unwrap();
        }
        assert!(!writer.is_finished(), "4 MiB went out without credit");
        let mut total = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = slow_far.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            assert!(buf[..n].iter().all(|b| *b == 7));
            total += n;
        }
        assert_eq!(total, 4 * 1024 * 1024);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn streams_end_with_the_connection() {
        let (a, b) = tokio::io::duplex(1024);
        let (relay, _rr) = Mux::start(a);
        let (_leader, mut lr) = Mux::start(b);
        assert!(!relay.is_closed());
        let mut s = relay.open("x").await.unwrap();
        let (_far, _) = next_stream(&mut lr).await;
        _leader.close();
        // The leader's side is gone: the relay's stream reaches EOF or an
        // error instead of hanging.
        let mut buf = [0u8; 1];
        let r = s.read(&mut buf).await;
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
        relay.closed().await;
        assert!(relay.open("y").await.is_err());
    }

    #[tokio::test]
    async fn the_handshake_checks_the_token() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let relay = tokio::spawn(async move { accept_handshake(&mut b, "s3cret").await });
        handshake(&mut a, "s3cret").await.unwrap();
        relay.await.unwrap().unwrap();

        let (mut a, mut b) = tokio::io::duplex(1024);
        let relay = tokio::spawn(async move {
            let r = accept_handshake(&mut b, "s3cret").await;
            drop(b);
            r
        });
        let err = handshake(&mut a, "guess").await.unwrap_err();
        assert!(err.to_string().contains("wrong relay token?"), "{err}");
        let r = relay.await.unwrap().unwrap_err();
        assert_eq!(r.kind(), io::ErrorKind::PermissionDenied);
    }
}
