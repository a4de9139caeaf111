//! The HTTP(S) front end: listeners, connections, and the request pipeline
//! (authenticate, count, inject faults, authorize, dispatch).
//!
//! - [`request`]: URL and query parsing into Kubernetes request attributes.
//! - [`handlers`]: get, list, create, update, patch, delete.
//! - [`watch`]: watch streams with bookmarks and 410s.
//! - [`logs`]: `pods/log`, including `follow`.
//! - [`openapi`]: the OpenAPI v3 documents kubectl downloads.
//! - [`table`]: the server-side `Table` rendering kubectl asks for.
//! - [`admin`]: `/emulator/...` fault injection and counters.
//! - [`tls`]: the CA and serving certificate.
//! - [`stream`], [`websocket`], [`spdy`]: `pods/exec` and `pods/portforward`.

pub mod admin;
pub mod handlers;
pub mod logs;
pub mod openapi;
pub mod request;
pub mod spdy;
pub mod stream;
pub mod table;
pub mod tls;
pub mod watch;
pub mod websocket;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::cluster::Cluster;
use super::error::ApiError;

/// The body type of every response: whole or streamed.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// A complete body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// A JSON response.
pub fn json_response(code: u16, v: &serde_json::Value) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(full(body))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

/// A `Status` error response, with `Retry-After` where the error has one.
pub fn error_response(e: &ApiError) -> Response<Body> {
    let mut resp = json_response(e.code, &e.to_status());
    if let Some(secs) = e.retry_after
        && let Ok(v) = http::HeaderValue::from_str(&secs.to_string())
    {
        resp.headers_mut().insert("retry-after", v);
    }
    resp
}

async fn serve_conn<I>(cluster: Arc<Cluster>, io: I)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req: Request<Incoming>| {
        let cluster = cluster.clone();
        async move { Ok::<_, Infallible>(handlers::handle(cluster, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Serves the API over HTTPS on a bound listener until the cluster shuts
/// down (the host's HTTPS port, or the in-cluster address inside an
/// isolated pod network).
pub fn serve_https(cluster: Arc<Cluster>, https: TcpListener, tls: Arc<rustls::ServerConfig>) {
    let acceptor = TlsAcceptor::from(tls);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = cluster.shutdown.cancelled() => break,
                a = https.accept() => a,
            };
            match accepted {
                Ok((sock, _)) => {
                    let _ = sock.set_nodelay(true);
                    let acceptor = acceptor.clone();
                    let c = cluster.clone();
                    tokio::spawn(async move {
                        match acceptor.accept(sock).await {
                            Ok(tls) => serve_conn(c, tls).await,
                            Err(e) => tracing::debug!(error = %e, "tls handshake failed"),
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "https accept failed"),
            }
        }
    });
}

/// Binds both listeners and returns their addresses; the accept loops run
/// until the cluster shuts down.
pub async fn start(
    cluster: Arc<Cluster>,
    http_addr: SocketAddr,
    https_addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
) -> std::io::Result<(SocketAddr, SocketAddr)> {
    let http = TcpListener::bind(http_addr).await?;
    let https = TcpListener::bind(https_addr).await?;
    let http_local = http.local_addr()?;
    let https_local = https.local_addr()?;

    let c = cluster.clone();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = c.shutdown.cancelled() => break,
                a = http.accept() => a,
            };
            match accepted {
                Ok((sock, _)) => {
                    let _ = sock.set_nodelay(true);
                    tokio::spawn(serve_conn(c.clone(), sock));
                }
                Err(e) => tracing::warn!(error = %e, "http accept failed"),
            }
        }
    });

    serve_https(cluster, https, tls);
    Ok((http_local, https_local))
}
