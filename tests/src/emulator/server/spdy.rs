//! A minimal SPDY/3.1 server for `pods/portforward`, as kubectl speaks it:
//! over a plain `Upgrade: SPDY/3.1` connection or tunneled in WebSocket
//! binary messages (`SPDY/3.1+portforward.k8s.io`, kubectl 1.31+).
//!
//! Frames handled: SYN_STREAM (answered with SYN_REPLY), DATA, RST_STREAM,
//! PING (echoed), GOAWAY; SETTINGS, HEADERS and WINDOW_UPDATE are read and
//! ignored (the Go client does no flow control on its receive side). Header
//! blocks are one zlib stream per direction, primed with the SPDY/3
//! dictionary.
//!
//! Each forwarded connection is a pair of client-opened streams with the
//! headers `streamtype` (`error` or `data`), `port` and `requestid`. Once
//! both exist the pod's port is dialed; bytes are copied both ways; when
//! the pod closes, both streams are finished (a dial failure is written to
//! the error stream first, which kubectl prints).

use std::collections::HashMap;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::stream::PodTarget;

/// The WebSocket subprotocol of SPDY tunneled in WebSocket.
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const FLAG_FIN: u8 = 1;
/// RST_STREAM status `CANCEL`.
const CANCEL: u32 = 5;
/// Largest DATA payload written.
const MAX_DATA: usize = 32 << 10;
/// Largest frame accepted (the 24-bit length field allows 16 MiB).
const MAX_FRAME: usize = 1 << 24;

/// Header names of the SPDY/3 compression dictionary, each written as a
/// 4-byte big-endian length and the name (spdy-protocol-draft3 2.6.10.1).
const DICT_NAMES: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The dictionary's tail: status codes and phrases, dates, common values.
const DICT_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
    "503 Service Unavailable",
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,",
    "text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdch",
    "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// The SPDY/3 header compression dictionary.
pub fn dictionary() -> Vec<u8> {
    let mut d = Vec::with_capacity(1424);
    for n in DICT_NAMES {
        d.extend_from_slice(&(n.len() as u32).to_be_bytes());
        d.extend_from_slice(n.as_bytes());
    }
    d.extend_from_slice(DICT_TAIL.as_bytes());
    d
}

/// Inflates the peer's header blocks (one zlib stream per connection).
pub struct HeaderReader {
    z: Decompress,
    dict: Vec<u8>,
}

impl Default for HeaderReader {
    fn default() -> Self {
        Self {
            z: Decompress::new(true),
            dict: dictionary(),
        }
    }
}

impl HeaderReader {
    /// Inflates and parses one header block.
    pub fn read(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, String> {
        let mut out: Vec<u8> = Vec::with_capacity(block.len() * 4 + 256);
        let mut input = block;
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(out.capacity().max(4096));
            }
            let (in0, out0) = (self.z.total_in(), out.len());
            let res = self
                .z
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            input = &input[(self.z.total_in() - in0) as usize..];
            match res {
                Ok(_) => {
                    let full = out.len() == out.capacity();
                    if input.is_empty() && !full {
                        break;
                    }
                    if !full && out.len() == out0 && self.z.total_in() == in0 {
                        return Err("the header block does not inflate (no progress)".into());
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z
                        .set_dictionary(&self.dict)
                        .map_err(|e| format!("the SPDY/3 header dictionary was refused: {e}"))?;
                }
                Err(e) => return Err(format!("cannot inflate a header block: {e}")),
            }
        }
        parse_header_block(&out)
    }
}

/// Deflates our header blocks (one zlib stream per connection).
pub struct HeaderWriter {
    z: Compress,
    primed: bool,
}

impl Default for HeaderWriter {
    fn default() -> Self {
        Self {
            z: Compress::new(Compression::default(), true),
            primed: false,
        }
    }
}

impl HeaderWriter {
    /// Serializes and deflates one header block.
    pub fn write(&mut self, headers: &[(&str, &str)]) -> Result<Vec<u8>, String> {
        if !self.primed {
            self.z
                .set_dictionary(&dictionary())
                .map_err(|e| format!("cannot prime the header compressor: {e}"))?;
            self.primed = true;
        }
        let block = header_block(headers);
        let mut out = Vec::with_capacity(block.len() + 64);
        let mut input = &block[..];
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let in0 = self.z.total_in();
            self.z
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| format!("cannot deflate a header block: {e}"))?;
            input = &input[(self.z.total_in() - in0) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// An uncompressed header block: a count, then length-prefixed names and
/// values.
pub fn header_block(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    for (k, v) in headers {
        for s in [k, v] {
            b.extend_from_slice(&(s.len() as u32).to_be_bytes());
            b.extend_from_slice(s.as_bytes());
        }
    }
    b
}

/// Parses an uncompressed header block (names lowercased by the sender;
/// several values of one name are NUL-separated and kept as one).
pub fn parse_header_block(b: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut pos = 0usize;
    let mut take = |n: usize| -> Result<&[u8], String> {
        let s = b
            .get(pos..pos + n)
            .ok_or_else(|| "truncated SPDY header block".to_string())?;
        pos += n;
        Ok(s)
    };
    let u32_at = |s: &[u8]| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize;
    let count = u32_at(take(4)?);
    let mut out = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let n = u32_at(take(4)?);
        let name = String::from_utf8_lossy(take(n)?).into_owned();
        let n = u32_at(take(4)?);
        let value = String::from_utf8_lossy(take(n)?).into_owned();
        out.push((name, value));
    }
    Ok(out)
}

/// A frame read from the client.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    Control {
        kind: u16,
        flags: u8,
        payload: Vec<u8>,
    },
    Data {
        id: u32,
        flags: u8,
        payload: Vec<u8>,
    },
}

async fn read_frame(r: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Option<Frame>> {
    let mut h = [0u8; 8];
    match r.read_exact(&mut h).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let flags = h[4];
    let len = u32::from_be_bytes([0, h[5], h[6], h[7]]) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other("SPDY frame too large"));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    if h[0] & 0x80 != 0 {
        let version = u16::from_be_bytes([h[0] & 0x7f, h[1]]);
        if version != VERSION {
            return Err(std::io::Error::other(format!(
                "SPDY version {version} is not supported (only 3)"
            )));
        }
        Ok(Some(Frame::Control {
            kind: u16::from_be_bytes([h[2], h[3]]),
            flags,
            payload,
        }))
    } else {
        Ok(Some(Frame::Data {
            id: u32::from_be_bytes([h[0], h[1], h[2], h[3]]) & 0x7fff_ffff,
            flags,
            payload,
        }))
    }
}

fn control_frame(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    f.extend_from_slice(&kind.to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(payload);
    f
}

fn data_frame(id: u32, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
    f.push(if fin { FLAG_FIN } else { 0 });
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(payload);
    f
}

fn be32(p: &[u8], at: usize) -> u32 {
    p.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .unwrap_or(0)
}

/// What the connection's writer sends.
#[derive(Debug)]
enum Out {
    Reply(u32),
    Data { id: u32, data: Bytes, fin: bool },
    Rst(u32),
    Ping(u32),
}

async fn writer(
    mut w: impl AsyncWrite + Unpin,
    mut rx: mpsc::Receiver<Out>,
) -> std::io::Result<()> {
    let mut headers = HeaderWriter::default();
    while let Some(o) = rx.recv().await {
        let frame = match o {
            Out::Reply(id) => {
                let block = headers.write(&[]).map_err(std::io::Error::other)?;
                let mut p = (id & 0x7fff_ffff).to_be_bytes().to_vec();
                p.extend_from_slice(&block);
                control_frame(SYN_REPLY, 0, &p)
            }
            Out::Data { id, data, fin } => data_frame(id, fin, &data),
            Out::Rst(id) => {
                let mut p = (id & 0x7fff_ffff).to_be_bytes().to_vec();
                p.extend_from_slice(&CANCEL.to_be_bytes());
                control_frame(RST_STREAM, 0, &p)
            }
            Out::Ping(id) => control_frame(PING, 0, &id.to_be_bytes()),
        };
        w.write_all(&frame).await?;
        if rx.is_empty() {
            w.flush().await?;
        }
    }
    w.flush().await?;
    let _ = w.shutdown().await;
    Ok(())
}

/// One forwarded connection's streams, as they are opened.
#[derive(Default)]
struct Pair {
    port: u16,
    data: Option<u32>,
    error: Option<u32>,
}

/// The data stream of a live forward.
struct Live {
    to_pod: Option<mpsc::Sender<Bytes>>,
    task: tokio::task::AbortHandle,
}

/// Serves port-forward streams on a SPDY/3.1 connection until the client
/// goes away.
pub async fn serve_portforward<IO>(io: IO, target: PodTarget)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, wr) = tokio::io::split(io);
    let (out, rx) = mpsc::channel::<Out>(256);
    let writer = tokio::spawn(writer(wr, rx));
    let mut headers = HeaderReader::default();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut live: HashMap<u32, Live> = HashMap::new();
    loop {
        let frame = match read_frame(&mut rd).await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "SPDY connection ended");
                break;
            }
        };
        match frame {
            Frame::Control { kind, payload, .. } => match kind {
                SYN_STREAM => {
                    let id = be32(&payload, 0) & 0x7fff_ffff;
                    let hs = match payload.get(10..).map(|b| headers.read(b)) {
                        Some(Ok(h)) => h,
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "bad SPDY headers; closing the connection");
                            break;
                        }
                        None => break,
                    };
                    if out.send(Out::Reply(id)).await.is_err() {
                        break;
                    }
                    let get = |k: &str| {
                        hs.iter()
                            .find(|(n, _)| n.eq_ignore_ascii_case(k))
                            .map(|(_, v)| v.clone())
                            .unwrap_or_default()
                    };
                    let Ok(port) = get("port").parse::<u16>() else {
                        let _ = out.send(Out::Rst(id)).await;
                        continue;
                    };
                    let pair = pairs.entry(get("requestid")).or_default();
                    pair.port = port;
                    match get("streamtype").as_str() {
                        "data" => pair.data = Some(id),
                        "error" => pair.error = Some(id),
                        _ => {
                            let _ = out.send(Out::Rst(id)).await;
                            continue;
                        }
                    }
                    if let (Some(data), Some(error)) = (pair.data, pair.error) {
                        let port = pair.port;
                        pairs.retain(|_, p| p.data != Some(data));
                        let (tx, rx) = mpsc::channel::<Bytes>(16);
                        let task = tokio::spawn(forward(
                            target.clone(),
                            port,
                            data,
                            error,
                            rx,
                            out.clone(),
                        ));
                        live.insert(
                            data,
                            Live {
                                to_pod: Some(tx),
                                task: task.abort_handle(),
                            },
                        );
                    }
                }
                RST_STREAM => {
                    let id = be32(&payload, 0) & 0x7fff_ffff;
                    if let Some(l) = live.remove(&id) {
                        l.task.abort();
                    }
                }
                PING if out.send(Out::Ping(be32(&payload, 0))).await.is_err() => break,
                GOAWAY => break,
                // SETTINGS, HEADERS, WINDOW_UPDATE, CREDENTIAL: nothing to do.
                _ => {}
            },
            Frame::Data { id, flags, payload } => {
                let fin = flags & FLAG_FIN != 0;
                if let Some(l) = live.get_mut(&id) {
                    if !payload.is_empty()
                        && let Some(tx) = &l.to_pod
                        && tx.send(Bytes::from(payload)).await.is_err()
                    {
                        l.to_pod = None;
                    }
                    if fin {
                        // The client sends no more: the pod sees end of input.
                        l.to_pod = None;
                    }
                }
                live.retain(|_, l| !l.task.is_finished());
            }
        }
    }
    for l in live.values() {
        l.task.abort();
    }
    drop(out);
    let _ = writer.await;
}

/// Copies one connection between its data stream and the pod's port.
async fn forward(
    target: PodTarget,
    port: u16,
    data: u32,
    error: u32,
    mut from_client: mpsc::Receiver<Bytes>,
    out: mpsc::Sender<Out>,
) {
    match target.dial(port).await {
        Err(msg) => {
            let _ = out
                .send(Out::Data {
                    id: error,
                    data: Bytes::from(msg),
                    fin: false,
                })
                .await;
        }
        Ok(conn) => {
            let (mut rd, mut wr) = conn.into_split();
            let up = tokio::spawn(async move {
                while let Some(b) = from_client.recv().await {
                    if wr.write_all(&b).await.is_err() {
                        return;
                    }
                }
                let _ = wr.shutdown().await;
            });
            let mut buf = vec![0u8; MAX_DATA];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let chunk = Bytes::copy_from_slice(&buf[..n]);
                        if out
                            .send(Out::Data {
                                id: data,
                                data: chunk,
                                fin: false,
                            })
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
            up.abort();
        }
    }
    for id in [data, error] {
        let _ = out
            .send(Out::Data {
                id,
                data: Bytes::new(),
                fin: true,
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_the_one_go_clients_name() {
        assert_eq!(dictionary().len(), 1423);
        // The DICTID in the zlib header of kubectl's first header block.
        let adler = Compress::new(Compression::default(), true)
            .set_dictionary(&dictionary())
            .ok();
        assert_eq!(adler, Some(0xE3C6_A7C2));
    }

    #[test]
    fn header_blocks_round_trip_through_the_compressors() {
        let mut w = HeaderWriter::default();
        let mut r = HeaderReader::default();
        for round in 0..3 {
            let rid = round.to_string();
            let hs = [
                ("streamtype", "data"),
                ("port", "8080"),
                ("requestid", rid.as_str()),
            ];
            let block = w.write(&hs);
            let block = block.unwrap_or_default();
            let back = r.read(&block);
            assert_eq!(
                back,
                Ok(hs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<Vec<_>>())
            );
        }
    }

    #[tokio::test]
    async fn frames_are_read_back() {
        let mut bytes = control_frame(PING, 0, &7u32.to_be_bytes());
        bytes.extend(data_frame(3, true, b"hi"));
        let mut r = &bytes[..];
        assert_eq!(
            read_frame(&mut r).await.ok().flatten(),
            Some(Frame::Control {
                kind: PING,
                flags: 0,
                payload: 7u32.to_be_bytes().to_vec()
            })
        );
        assert_eq!(
            read_frame(&mut r).await.ok().flatten(),
            Some(Frame::Data {
                id: 3,
                flags: FLAG_FIN,
                payload: b"hi".to_vec()
            })
        );
        assert_eq!(read_frame(&mut r).await.ok().flatten(), None);
    }

    #[test]
    fn bad_blocks_are_errors_not_panics() {
        assert!(parse_header_block(&[0, 0, 0, 2, 0, 0, 0, 9, b'a']).is_err());
        let mut r = HeaderReader::default();
        assert!(r.read(b"not zlib at all").is_err());
    }
}
