//! Connection upgrades for the streaming subresources: the WebSocket
//! handshake (RFC 6455 over hyper's upgrade), SPDY/3.1's plain
//! `Upgrade: SPDY/3.1`, subprotocol negotiation, and the channel framing
//! of `*.channel.k8s.io` (one leading byte naming the channel).

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hyper::Response;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::{Body, full};

/// A server-side WebSocket over an upgraded HTTP/1.1 connection.
pub type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// The upgrade a request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpgradeRequest {
    /// `Upgrade: websocket`: the key and the offered subprotocols, in the
    /// client's order of preference.
    WebSocket {
        /// `Sec-WebSocket-Key`.
        key: String,
        /// `Sec-WebSocket-Protocol` values.
        protocols: Vec<String>,
    },
    /// `Upgrade: SPDY/3.1`, with the offered `X-Stream-Protocol-Version`s.
    Spdy {
        /// `X-Stream-Protocol-Version` values.
        protocols: Vec<String>,
    },
    /// No (known) upgrade.
    None,
}

fn header_list(headers: &http::HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Reads the upgrade a request asks for from its headers.
pub fn upgrade_request(headers: &http::HeaderMap) -> UpgradeRequest {
    let connection_upgrade = header_list(headers, "connection")
        .iter()
        .any(|c| c.eq_ignore_ascii_case("upgrade"));
    let upgrade = header_list(headers, "upgrade");
    if !connection_upgrade {
        return UpgradeRequest::None;
    }
    if upgrade.iter().any(|u| u.eq_ignore_ascii_case("websocket")) {
        let key = headers
            .get("sec-websocket-key")
            .and_then(|k| k.to_str().ok())
            .unwrap_or_default()
            .to_string();
        return UpgradeRequest::WebSocket {
            key,
            protocols: header_list(headers, "sec-websocket-protocol"),
        };
    }
    if upgrade.iter().any(|u| u.eq_ignore_ascii_case("SPDY/3.1")) {
        return UpgradeRequest::Spdy {
            protocols: header_list(headers, "x-stream-protocol-version"),
        };
    }
    UpgradeRequest::None
}

/// The first offered protocol the server supports (the client's order, as
/// the API server's handshake picks it).
pub fn negotiate<'a>(offered: &[String], supported: &[&'a str]) -> Option<&'a str> {
    offered
        .iter()
        .find_map(|o| supported.iter().find(|s| **s == o.as_str()).copied())
}

/// `101 Switching Protocols` for a WebSocket with the chosen subprotocol.
pub fn switch_to_websocket(key: &str, protocol: &str) -> Response<Body> {
    Response::builder()
        .status(101)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
        .header("sec-websocket-protocol", protocol)
        .body(full(Bytes::new()))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

/// `101 Switching Protocols` to SPDY/3.1 with the chosen stream protocol.
pub fn switch_to_spdy(protocol: &str) -> Response<Body> {
    Response::builder()
        .status(101)
        .header("connection", "Upgrade")
        .header("upgrade", "SPDY/3.1")
        .header("x-stream-protocol-version", protocol)
        .body(full(Bytes::new()))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

/// Waits for hyper to hand over the upgraded connection.
pub async fn upgraded(on: OnUpgrade) -> std::io::Result<TokioIo<Upgraded>> {
    on.await
        .map(TokioIo::new)
        .map_err(|e| std::io::Error::other(format!("the connection upgrade failed: {e}")))
}

/// The server side of a WebSocket on an upgraded connection.
pub async fn accept(on: OnUpgrade) -> std::io::Result<Ws> {
    let io = upgraded(on).await?;
    Ok(WebSocketStream::from_raw_socket(io, Role::Server, None).await)
}

/// A binary message on a channel: the channel byte, then the payload.
pub fn channel_message(channel: u8, payload: &[u8]) -> Message {
    let mut v = Vec::with_capacity(payload.len() + 1);
    v.push(channel);
    v.extend_from_slice(payload);
    Message::binary(v)
}

/// A normal-closure close frame (1000): Go clients read it as the end of
/// every channel, where a close without a status is an error.
pub fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

/// Turns a WebSocket into a plain byte stream: each binary message read is
/// appended to the stream; each write goes out as one binary message (the
/// framing of SPDY tunneled in WebSocket, `SPDY/3.1+portforward.k8s.io`).
pub fn into_byte_stream(ws: Ws) -> DuplexStream {
    let (ours, theirs) = tokio::io::duplex(256 << 10);
    let (mut rd, mut wr) = tokio::io::split(ours);
    let (mut sink, mut stream) = ws.split();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            match msg {
                Message::Binary(b) if wr.write_all(&b).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = wr.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink.send(Message::binary(buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = sink.send(normal_close()).await;
    });
    theirs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap_or(http::header::WARNING),
                http::HeaderValue::from_str(v).unwrap_or(http::HeaderValue::from_static("")),
            );
        }
        h
    }

    #[test]
    fn reads_upgrades_and_negotiates_in_client_order() {
        let h = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            (
                "sec-websocket-protocol",
                "v5.channel.k8s.io, v4.channel.k8s.io",
            ),
            ("sec-websocket-protocol", "channel.k8s.io"),
        ]);
        let UpgradeRequest::WebSocket { key, protocols } = upgrade_request(&h) else {
            panic!("not read as a WebSocket upgrade");
        };
        assert_eq!(key, "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(
            negotiate(&protocols, &["v4.channel.k8s.io", "v5.channel.k8s.io"]),
            Some("v5.channel.k8s.io")
        );
        assert_eq!(negotiate(&protocols, &["base64.channel.k8s.io"]), None);
        let h = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "portforward.k8s.io"),
        ]);
        assert_eq!(
            upgrade_request(&h),
            UpgradeRequest::Spdy {
                protocols: vec!["portforward.k8s.io".into()]
            }
        );
        assert_eq!(
            upgrade_request(&headers(&[("upgrade", "websocket")])),
            UpgradeRequest::None
        );
    }

    #[test]
    fn accept_key_matches_rfc_6455() {
        let r = switch_to_websocket("dGhlIHNhbXBsZSBub25jZQ==", "v4.channel.k8s.io");
        assert_eq!(
            r.headers()
                .get("sec-websocket-accept")
                .map(|v| v.as_bytes()),
            Some(&b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="[..])
        );
    }
}
