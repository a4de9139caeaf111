//! The leader's doors: TLS over TCP for anything off the machine, a plain
//! Unix socket in a user-only directory for local agents and clients, and
//! TLS over the streams of the API-server tunnel (agents that cannot route
//! to the leader, see `batch::kubernetes::tunnel`). All feed one gRPC
//! server.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::DuplexStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

/// A client has this long to finish its TLS handshake.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// Where the leader listens.
pub struct Listeners {
    /// TCP, served with TLS only.
    pub tcp: TcpListener,
    /// The Unix socket (none when it could not be made: then local agents
    /// use TLS too).
    pub unix: Option<UnixListener>,
    /// Agent connections arriving through the tunnel, with the agent's
    /// address as the relay saw it; served with TLS like TCP.
    pub tunnel: Option<mpsc::Receiver<TunnelConn>>,
}

/// One agent connection carried by the tunnel.
pub struct TunnelConn {
    /// The stream (the agent's TLS bytes, unread by the relay).
    pub io: DuplexStream,
    /// The agent's address on the pod network (`IP:PORT`), as the relay saw it.
    pub peer: String,
}

/// One accepted connection.
pub enum Conn {
    /// TLS over TCP, handshake done.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// The Unix socket.
    Unix(UnixStream),
    /// TLS over a tunnel stream, handshake done, with the agent's address.
    Tunnel(
        Box<tokio_rustls::server::TlsStream<DuplexStream>>,
        Option<SocketAddr>,
    ),
}

/// Who is connected, for request extensions.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The peer's TCP address (none on the Unix socket).
    pub remote: Option<SocketAddr>,
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo {
            remote: match self {
                Conn::Tls(s) => s.get_ref().0.peer_addr().ok(),
                Conn::Unix(_) => None,
                Conn::Tunnel(_, peer) => *peer,
            },
        }
    }
}

/// Accepts on every listener until `stop`, running TLS handshakes
/// concurrently (a slow or hostile client holds up nobody else), and yields
/// the ready connections.
pub fn incoming(
    listeners: Listeners,
    tls: Arc<rustls::ServerConfig>,
    stop: CancellationToken,
) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    {
        let tx = tx.clone();
        let stop = stop.clone();
        let acceptor = acceptor.clone();
        let tcp = listeners.tcp;
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    r = tcp.accept() => match r {
                        Ok(x) => x,
                        Err(e) => {
                            // Out of descriptors, for instance: wait, do not spin.
                            tracing::warn!(error = %e, "accepting a TCP connection failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    _ = stop.cancelled() => return,
                };
                // Small request/response messages would otherwise meet
                // Nagle's algorithm and delayed ACKs (40 ms stalls).
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_LIMIT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => {
                            let _ = tx.send(Ok(Conn::Tls(Box::new(s)))).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                        }
                    }
                });
            }
        });
    }
    if let Some(mut tunnel) = listeners.tunnel {
        let tx = tx.clone();
        let stop = stop.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            loop {
                let conn = tokio::select! {
                    c = tunnel.recv() => match c {
                        Some(c) => c,
                        None => return,
                    },
                    _ = stop.cancelled() => return,
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let peer = conn.peer.parse::<SocketAddr>().ok();
                    match tokio::time::timeout(HANDSHAKE_LIMIT, acceptor.accept(conn.io)).await {
                        Ok(Ok(s)) => {
                            let _ = tx.send(Ok(Conn::Tunnel(Box::new(s), peer))).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %conn.peer, error = %e, "TLS handshake over the tunnel failed");
                        }
                        Err(_) => {
                            tracing::debug!(peer = %conn.peer, "TLS handshake over the tunnel timed out");
                        }
                    }
                });
            }
        });
    }
    if let Some(unix) = listeners.unix {
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    r = unix.accept() => match r {
                        Ok((s, _)) => s,
                        Err(e) => {
                            tracing::warn!(error = %e, "accepting on the Unix socket failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    _ = stop.cancelled() => return,
                };
                if tx.send(Ok(Conn::Unix(stream))).await.is_err() {
                    return;
                }
            }
        });
    }
    ReceiverStream::new(rx)
}

// === impl Conn ===

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Conn::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tunnel(s, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Conn::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tunnel(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Conn::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tunnel(s, _) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Tls(s) => s.is_write_vectored(),
            Conn::Unix(s) => s.is_write_vectored(),
            Conn::Tunnel(s, _) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Conn::Unix(s) => Pin::new(s).poll_flush(cx),
            Conn::Tunnel(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Conn::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tunnel(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
