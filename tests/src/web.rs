//! The leader's web view from a test's side: where it is (the URL the
//! leader writes to its private directory), and a plain HTTP/1.1 client
//! over real sockets (with TLS for a view served off loopback) that shows
//! exactly what a server answered, bytes and all.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::wait::wait_for;

/// The web view's URL as the leader printed it.
#[derive(Clone, Debug)]
pub struct WebUrl {
    /// The whole URL, token included (`http://127.0.0.1:PORT/?token=T`).
    pub url: String,
    /// Without the token (`http://127.0.0.1:PORT`).
    pub base: String,
    /// The port.
    pub port: u16,
    /// The token.
    pub token: String,
}

/// Waits for a leader using `state_dir` (`TOIL_STATE_DIR`) to write its
/// web view's URL, and parses it.
pub fn web_url(state_dir: &Path, timeout: Duration) -> WebUrl {
    wait_for("the leader to write its web view's URL", timeout, || {
        let dirs = std::fs::read_dir(state_dir).map_err(|e| e.to_string())?;
        for d in dirs.flatten() {
            if let Ok(url) = std::fs::read_to_string(d.path().join("web-url")) {
                return parse(url.trim()).ok_or(format!("unparsable URL {url:?}"));
            }
        }
        Err("no web-url file yet".into())
    })
}

fn parse(url: &str) -> Option<WebUrl> {
    let (base, token) = url.split_once("/?token=")?;
    let port = base.rsplit_once(':')?.1.parse().ok()?;
    Some(WebUrl {
        url: url.to_string(),
        base: base.to_string(),
        port,
        token: token.to_string(),
    })
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// Headers, names lowercased (the last of repeated ones).
    pub headers: HashMap<String, String>,
    /// The body (as sent; chunked bodies are not decoded).
    pub body: String,
}

impl Reply {
    /// A header's value, or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

/// Sends `GET path` (or `method`) to 127.0.0.1:`port` over plain HTTP,
/// with `Host: 127.0.0.1:PORT` unless `headers` has one, and reads the
/// whole answer (`Connection: close`).
pub fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connecting to 127.0.0.1:{port}: {e}"));
    exchange(&mut s, port, method, path, headers)
}

/// Like [`request`] over TLS, trusting only `cert_pem` and checking the
/// name `localhost` in it.
pub fn request_tls(
    port: u16,
    cert_pem: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    use rustls::pki_types::pem::PemObject;
    let cert = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .unwrap_or_else(|e| panic!("the leader's certificate: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(cert)
        .unwrap_or_else(|e| panic!("the leader's certificate: {e}"));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("{e}"))
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name =
        rustls::pki_types::ServerName::try_from("localhost").unwrap_or_else(|e| panic!("{e}"));
    let conn = rustls::ClientConnection::new(Arc::new(config), name)
        .unwrap_or_else(|e| panic!("TLS: {e}"));
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connecting to 127.0.0.1:{port}: {e}"));
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    exchange(&mut tls, port, method, path, headers)
}

fn exchange<S: Read + Write>(
    s: &mut S,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())
        .unwrap_or_else(|e| panic!("sending {method} {path}: {e}"));
    let mut raw = Vec::new();
    // A server that closes after its answer ends the read with an error
    // on some TLS stacks (no close_notify); what arrived is the answer.
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {path}: no HTTP answer: {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: bad status line in {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Opens `/api/events` as a browser reconnecting after event `last_id`
/// would (`Last-Event-ID`), and returns the ids of the first `n` events
/// it is sent.
pub fn event_ids_after(port: u16, token: &str, last_id: u64, n: usize) -> Vec<u64> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connecting to 127.0.0.1:{port}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap_or_else(|e| panic!("{e}"));
    let req = format!(
        "GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\nLast-Event-ID: {last_id}\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut r = BufReader::new(s);
    let mut ids = Vec::new();
    let mut line = String::new();
    while ids.len() < n {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if let Some(id) = line.trim_end().strip_prefix("id: ") {
            ids.push(id.parse().unwrap_or(0));
        }
    }
    ids
}

/// A server-sent-events client that counts the events of `/api/events`
/// as they arrive (what a browser with the page open costs the leader,
/// without the browser), on a thread of its own.
pub struct EventFollower {
    count: Arc<std::sync::atomic::AtomicU64>,
    stream: TcpStream,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EventFollower {
    /// Connects to the web view on `port` with `token` and starts reading.
    pub fn start(port: u16, token: &str) -> EventFollower {
        let mut s = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connecting to 127.0.0.1:{port}: {e}"));
        let req = format!(
            "GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
        );
        s.write_all(req.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let reader = s.try_clone().unwrap_or_else(|e| panic!("{e}"));
        let c = count.clone();
        let thread = std::thread::spawn(move || {
            let mut r = BufReader::new(reader);
            let mut line = String::new();
            while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                if line.starts_with("data: ") {
                    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                line.clear();
            }
        });
        EventFollower {
            count,
            stream: s,
            thread: Some(thread),
        }
    }

    /// Events received so far.
    pub fn events(&self) -> u64 {
        self.count.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for EventFollower {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
