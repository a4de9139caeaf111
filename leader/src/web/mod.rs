//! The live web view (`--webUI`): a small HTTP server inside the leader
//! that serves the workflow's pages, their JSON APIs, server-sent events
//! and `/metrics`.
//!
//! Security model, in the order a request meets it:
//! - **Where it listens.** Loopback by default (`127.0.0.1:0`, any free
//!   port), plain HTTP. Any other address is served over TLS only, with the
//!   leader's own certificate ([`crate::server::LeaderCert`]); a plain HTTP
//!   request there gets a short refusal naming the `https://` URL.
//! - **Host header.** On loopback only `127.0.0.1`, `localhost` and `[::1]`
//!   (with the port) are answered, so a web page whose name was rebound to
//!   127.0.0.1 (DNS rebinding) cannot read the view.
//! - **Token.** Every route, pages and assets included, needs the web token
//!   (new at every start, or the one in `--webTokenFile`) or the workflow's
//!   client token: `Authorization: Bearer TOKEN`, or
//!   `?token=TOKEN` once, which sets an `HttpOnly`, `SameSite=Strict` cookie
//!   and redirects to the URL without it. Compared in constant time.
//!   Without it: `401` and a text saying where the URL is.
//! - **Routes.** An exact table ([`routes`]): nothing else is served (`404`),
//!   nothing is read from the file system, GET and HEAD only.
//! - **Headers.** `Content-Security-Policy: default-src 'self';
//!   frame-ancestors 'none'`, `X-Content-Type-Options: nosniff`,
//!   `Referrer-Policy: no-referrer` on every answer.

mod api;
pub mod metrics;
mod routes;
mod sse;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::driver::{Grant, Msg, TokenTable, same_secret};
use crate::events::EventHub;
use crate::logs::LogHub;

/// A response body: whole, or streamed (server-sent events).
pub type Body = BoxBody<Bytes, Infallible>;

/// A client has this long to finish its TLS handshake.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// Shortest web token accepted from `--webTokenFile`: 32 characters, as
/// many as 128 random bits in hex.
const MIN_TOKEN_FILE_CHARS: usize = 32;

/// Reads the web token from `--webTokenFile`: a file only its owner may
/// read or write (as ssh asks of a private key), holding one line of at
/// least 32 visible ASCII characters. Every error says what to fix.
pub fn read_token_file(path: &std::path::Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let hint = format!(
        "make one with: (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > {})",
        path.display()
    );
    let meta = std::fs::metadata(path).map_err(|e| {
        format!(
            "--webTokenFile / TOIL_WEB_TOKEN_FILE {}: {e}; {hint}",
            path.display()
        )
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "--webTokenFile / TOIL_WEB_TOKEN_FILE {}: other users may read or change it (mode {mode:o}); run chmod 600 {}",
            path.display(),
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "--webTokenFile / TOIL_WEB_TOKEN_FILE {}: {e}",
            path.display()
        )
    })?;
    let token = text.trim();
    if token.len() < MIN_TOKEN_FILE_CHARS
        || token.contains('\n')
        || !token
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'&' && b != b'#' && b != b'%')
    {
        return Err(format!(
            "--webTokenFile / TOIL_WEB_TOKEN_FILE {}: the token must be one line of at least {MIN_TOKEN_FILE_CHARS} visible ASCII characters, without & # or %; {hint}",
            path.display()
        ));
    }
    Ok(token.to_string())
}

/// Where the web view listens, from `--webUI`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebBind {
    /// The address to bind.
    pub addr: SocketAddr,
    /// Serve HTTPS (always for a non-loopback address).
    pub tls: bool,
}

impl WebBind {
    /// Parses `--webUI`: `off`, `HOST:PORT`, `http://HOST:PORT` or
    /// `https://HOST:PORT`. `None` means off. A non-loopback address is
    /// served over TLS; asking for plain HTTP there is refused.
    pub fn parse(value: &str) -> Result<Option<WebBind>, String> {
        let v = value.trim();
        if v.is_empty() || v.eq_ignore_ascii_case("off") || v.eq_ignore_ascii_case("false") {
            return Ok(None);
        }
        let (scheme, rest) = match v.split_once("://") {
            Some((s, r)) => (Some(s.to_ascii_lowercase()), r.trim_end_matches('/')),
            None => (None, v),
        };
        let addr: SocketAddr = rest.parse().map_err(|_| {
            format!(
                "--webUI / TOIL_WEB_UI {value:?}: give an address as IP:PORT (for example 127.0.0.1:8080, or 127.0.0.1:0 for any free port; 0.0.0.0:8443 to serve other machines over TLS), or off"
            )
        })?;
        let loopback = addr.ip().is_loopback();
        let tls = match scheme.as_deref() {
            None => !loopback,
            Some("https") => true,
            Some("http") if loopback => false,
            Some("http") => {
                return Err(format!(
                    "--webUI / TOIL_WEB_UI {value:?}: the web view serves other machines over TLS only (the token would cross the network in clear); use https://{rest} (or just {rest}), or a loopback address such as 127.0.0.1:{}",
                    addr.port()
                ));
            }
            Some(other) => {
                return Err(format!(
                    "--webUI / TOIL_WEB_UI {value:?}: unknown scheme {other:?}; give IP:PORT, https://IP:PORT or off"
                ));
            }
        };
        Ok(Some(WebBind { addr, tls }))
    }
}

/// What the handlers read: the run's hubs, a way to query the driver, and
/// who may look.
pub struct WebState {
    /// Queries go to the driver, which owns the scheduler core.
    pub driver: mpsc::Sender<Msg>,
    /// Workflow events, the source of the live updates.
    pub events: Arc<EventHub>,
    /// Job logs, for the log view.
    pub logs: Arc<LogHub>,
    /// WorkflowService itself, whose FollowLogs the log view reads
    /// through (called in process with the client token).
    pub workflow: crate::server::WorkflowSvc,
    /// The run's metrics, for `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The client token is accepted as well as the web token.
    pub tokens: Arc<TokenTable>,
    /// The web token: read-only access to this view.
    pub web_token: String,
    /// The workflow's id and name, for the page title and error texts.
    pub workflow_id: String,
    /// The workflow's name.
    pub name: String,
    /// When the workflow first started, ms since the Unix epoch.
    pub started_ms: i64,
    /// The address bound (its port names the cookie and the Host check).
    pub bound: SocketAddr,
    /// Served over TLS.
    pub tls: bool,
    /// Where the tokenized URL was written (`PATH on HOST`), for the 401
    /// text.
    pub url_file: String,
}

impl WebState {
    /// The cookie that carries the token, one per port so that two leaders
    /// on one machine do not overwrite each other's.
    fn cookie_name(&self) -> String {
        format!("toil_web_{}", self.bound.port())
    }

    /// True if `token` opens this view.
    fn accepts(&self, token: &str) -> bool {
        same_secret(&self.web_token, token) || self.tokens.grant(token) == Some(Grant::Client)
    }

    /// True if the Host header names this listener (loopback only; a TLS
    /// listener's certificate already ties it to its names).
    fn host_ok(&self, host: Option<&str>) -> bool {
        host_matches(self.bound, host)
    }

    /// The URL to open, token included (what the leader prints at start).
    pub fn url(&self, host: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        let ip = self.bound.ip();
        let h = if ip.is_unspecified() {
            host.to_string()
        } else if ip.is_ipv6() {
            format!("[{ip}]")
        } else {
            ip.to_string()
        };
        format!(
            "{scheme}://{h}:{}/?token={}",
            self.bound.port(),
            self.web_token
        )
    }

    /// Runs `f` on the driver's state and returns its answer; `None` once
    /// the driver is gone.
    pub async fn query<T: Send + 'static>(
        &self,
        f: impl FnOnce(&crate::driver::Driver) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.driver
            .send(Msg::Query(Box::new(move |d| {
                let _ = tx.send(f(d));
            })))
            .await
            .ok()?;
        rx.await.ok()
    }
}

/// The web view's URL, read from beside the client token (the leader's
/// private directory) when this user on this machine can read it.
pub fn url_beside(token_file: &str) -> Option<String> {
    let dir = std::path::Path::new(token_file).parent()?;
    let url = std::fs::read_to_string(dir.join("web-url")).ok()?;
    let url = url.trim();
    url.starts_with("http").then(|| url.to_string())
}

/// True if `host` (a Host header) names the listener bound to `bound`:
/// any name off loopback (TLS and the token guard that one), else only
/// the loopback names with the right port.
fn host_matches(bound: SocketAddr, host: Option<&str>) -> bool {
    if !bound.ip().is_loopback() {
        return true;
    }
    let Some(host) = host else {
        return false;
    };
    let port = bound.port();
    let (name, p) = match host.rsplit_once(':') {
        Some((n, p)) if !n.ends_with(']') || host.starts_with('[') => (n, p),
        _ => return false,
    };
    p.parse::<u16>() == Ok(port)
        && matches!(
            name.to_ascii_lowercase().as_str(),
            "127.0.0.1" | "localhost" | "[::1]"
        )
}

/// Binds the web view's listener (before anything is announced, so a bad
/// address stops the run at once with a clear error).
pub async fn bind(b: &WebBind) -> Result<TcpListener, String> {
    TcpListener::bind(b.addr).await.map_err(|e| {
        format!(
            "the web view cannot listen on {}: {e}; choose another address with --webUI IP:PORT (127.0.0.1:0 takes any free port) or turn it off with --webUI off",
            b.addr
        )
    })
}

/// Serves until `stop` fires. `tls` is the leader's TLS configuration, used
/// when the state says so.
pub async fn serve(
    listener: TcpListener,
    state: Arc<WebState>,
    tls: Arc<rustls::ServerConfig>,
    stop: CancellationToken,
) -> Result<(), String> {
    // The gRPC configuration offers h2 only; browsers also speak HTTP/1.1.
    let acceptor = state.tls.then(|| {
        let mut cfg = (*tls).clone();
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
    });
    let mut conns = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "the web view could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        // Reap finished connections so the set stays small.
        while conns.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let acceptor = acceptor.clone();
        conns.spawn(async move {
            match acceptor {
                None => serve_conn(TokioIo::new(stream), state).await,
                Some(acc) => {
                    if !looks_like_tls(&stream).await {
                        refuse_plain(stream, &state).await;
                        return;
                    }
                    match tokio::time::timeout(HANDSHAKE_LIMIT, acc.accept(stream)).await {
                        Ok(Ok(s)) => serve_conn(TokioIo::new(s), state).await,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "web view: TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "web view: TLS handshake timed out"),
                    }
                }
            }
        });
    }
    // Open event streams would otherwise keep the leader waiting.
    conns.abort_all();
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// Serves one connection, HTTP/1.1 or HTTP/2.
async fn serve_conn<I>(io: TokioIo<I>, state: Arc<WebState>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(&state, req).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder.serve_connection(io, svc).await {
        tracing::debug!(error = %e, "web view connection ended");
    }
}

/// True if the client's first byte opens a TLS handshake.
async fn looks_like_tls(stream: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(HANDSHAKE_LIMIT, stream.peek(&mut b)).await,
        Ok(Ok(1)) if b[0] == 0x16
    )
}

/// Answers a plain HTTP request on the TLS port with a short text naming
/// the right URL, then closes.
async fn refuse_plain(mut stream: TcpStream, state: &WebState) {
    use tokio::io::AsyncWriteExt;
    let text = format!(
        "this toil-leader web view serves HTTPS only (it is reachable from other machines, and its token must not cross the network in clear): open https://HOST:{}/ with the token the leader printed at start (also in {})\n",
        state.bound.port(),
        state.url_file
    );
    let reply = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Every request: Host, method and token checks, then the route table.
async fn handle(state: &Arc<WebState>, req: Request<Incoming>) -> Response<Body> {
    let mut resp = check_and_route(state, req).await;
    secure(resp.headers_mut());
    resp
}

async fn check_and_route(state: &Arc<WebState>, req: Request<Incoming>) -> Response<Body> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    if !state.host_ok(host) {
        return text(
            StatusCode::FORBIDDEN,
            format!(
                "this web view answers only to 127.0.0.1:{port}, localhost:{port} or [::1]:{port} (the Host header was {:?}); open the URL the leader printed",
                host.unwrap_or(""),
                port = state.bound.port()
            ),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "the web view is read-only: GET and HEAD only".into(),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let query = req.uri().query().unwrap_or("");
    // `?token=` on a page load: set the cookie and send the browser to the
    // same URL without the token (out of its history and address bar).
    if let Some(t) = query_param(query, "token") {
        if !state.accepts(&t) {
            return unauthorized(state, "the token in the URL is not this leader's");
        }
        let rest: Vec<&str> = query
            .split('&')
            .filter(|p| !p.starts_with("token=") && !p.is_empty())
            .collect();
        let mut location = req.uri().path().to_string();
        if !rest.is_empty() {
            location.push('?');
            location.push_str(&rest.join("&"));
        }
        let secure = if state.tls { "; Secure" } else { "" };
        let cookie = format!(
            "{}={t}; Path=/; HttpOnly; SameSite=Strict{secure}",
            state.cookie_name()
        );
        let mut r = empty(StatusCode::SEE_OTHER);
        if let (Ok(l), Ok(c)) = (
            HeaderValue::from_str(&location),
            HeaderValue::from_str(&cookie),
        ) {
            r.headers_mut().insert(header::LOCATION, l);
            r.headers_mut().insert(header::SET_COOKIE, c);
        }
        return r;
    }
    match presented_token(&state.cookie_name(), &req) {
        Some(t) if state.accepts(&t) => {}
        Some(_) => return unauthorized(state, "the token is not this leader's"),
        None => return unauthorized(state, "no token"),
    }
    routes::route(state, req).await
}

/// The token a request carries: bearer header, else cookie.
fn presented_token<B>(cookie_name: &str, req: &Request<B>) -> Option<String> {
    if let Some(h) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let t = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
            .unwrap_or(h);
        return Some(t.trim().to_string());
    }
    let name = cookie_name;
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The value of `name` in a query string (percent-decoded).
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|p| p.split_once('=').or(Some((p, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_decode(v))
}

/// Decodes `%XX` and `+` in a query value; invalid escapes are kept as is.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn unauthorized(state: &WebState, why: &str) -> Response<Body> {
    text(
        StatusCode::UNAUTHORIZED,
        format!(
            "{why}: this is the toil-leader web view of workflow {}; open the URL the leader printed at start (`web view: ...?token=...`), also written to {} (readable by the leader's user alone), or send `Authorization: Bearer TOKEN` with that token or the workflow's client token\n",
            state.name, state.url_file
        ),
    )
}

/// Adds the security headers every answer carries.
fn secure(h: &mut http::HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}

/// A whole body.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

/// A response with `body` of `content_type`.
pub fn response(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A plain-text answer.
pub fn text(status: StatusCode, body: String) -> Response<Body> {
    response(status, "text/plain; charset=utf-8", full(body))
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_flag_keeps_tokens_off_plain_http_beyond_loopback() {
        assert_eq!(WebBind::parse("off"), Ok(None));
        let b = WebBind::parse("127.0.0.1:0").ok().flatten();
        assert_eq!(b.map(|b| b.tls), Some(false));
        let b = WebBind::parse("0.0.0.0:8443").ok().flatten();
        assert_eq!(b.map(|b| b.tls), Some(true));
        let b = WebBind::parse("https://127.0.0.1:1").ok().flatten();
        assert_eq!(b.map(|b| b.tls), Some(true));
        let e = WebBind::parse("http://0.0.0.0:8080")
            .err()
            .unwrap_or_default();
        assert!(e.contains("TLS only"), "{e}");
        let e = WebBind::parse("localhost").err().unwrap_or_default();
        assert!(e.contains("IP:PORT"), "{e}");
    }

    #[test]
    fn only_this_listeners_names_and_cookie_are_accepted() {
        let bound: SocketAddr = "127.0.0.1:8080".parse().unwrap_or_else(|e| panic!("{e}"));
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST:8080",
            "[::1]:8080",
        ] {
            assert!(host_matches(bound, Some(ok)), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "127.0.0.1:8081",
            "127.0.0.1",
            "localhost.evil:8080",
            "[::1]",
            "",
        ] {
            assert!(!host_matches(bound, Some(bad)), "{bad}");
        }
        assert!(!host_matches(bound, None));
        // Off loopback, TLS and the token guard the view instead.
        let any: SocketAddr = "0.0.0.0:8443".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(host_matches(any, Some("anything:1")));
        let req = Request::builder()
            .header(
                header::COOKIE,
                "a=b; toil_web_9=x; toil_web_8080=web-secret",
            )
            .body(())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            presented_token("toil_web_8080", &req).as_deref(),
            Some("web-secret")
        );
        let req = Request::builder()
            .header(header::AUTHORIZATION, "Bearer  tok ")
            .body(())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            presented_token("toil_web_8080", &req).as_deref(),
            Some("tok")
        );
    }

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(
            query_param("a=1&q=x%5B2%5D+y", "q").as_deref(),
            Some("x[2] y")
        );
        assert_eq!(query_param("a=1", "q"), None);
        assert_eq!(query_param("q=%zz%", "q").as_deref(), Some("%zz%"));
    }
}
