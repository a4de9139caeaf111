//! Server-sent events: the workflow's events as they happen (from the
//! [`EventHub`](crate::events::EventHub), as WatchEvents streams them) and
//! a job's log as it is written (through WorkflowService's FollowLogs, so
//! the web view reads logs exactly as clients do).
//!
//! Both resume where a dropped connection left off: the browser's
//! `EventSource` sends `Last-Event-ID`, which is the event's sequence
//! number, or the log's byte offset.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use toil_proto::v1::workflow_service_server::WorkflowService;
use toil_proto::v1::{FollowLogsRequest, WorkflowEvent};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::StreamExt;

use super::api::event_json;
use super::{Body, WebState, query_param};

/// A comment line this often keeps proxies and browsers from timing the
/// stream out.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// Events are written in batches of about this many bytes ...
const BATCH: usize = 64 * 1024;
/// ... gathered for at most this long after the first: a busy workflow
/// costs one write (and one wake-up of this task) per window, not one
/// per event, and a page sees changes within a tenth of a second.
const COALESCE: Duration = Duration::from_millis(100);

/// An event stream fed by `rx`.
fn stream_response(rx: mpsc::Receiver<Bytes>) -> Response<Body> {
    let frames = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let mut r = Response::new(StreamBody::new(frames).boxed());
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    r
}

/// Where to resume: `Last-Event-ID`, else `?after=`.
fn resume_from<B>(req: &Request<B>, param: &str) -> u64 {
    req.headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .or_else(|| {
            query_param(req.uri().query().unwrap_or(""), param)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn push_event(out: &mut String, e: &WorkflowEvent) {
    let _ = write!(out, "id: {}\ndata: {}\n\n", e.seq, event_json(e));
}

/// `/api/events`: every workflow event after the one the client last saw,
/// then live ones. A client that fell too far behind the hub's window gets
/// a `reset` event first (reload everything). When this stream itself
/// lags behind a burst of events (more than the live channel holds), it
/// catches up from the window in place, so the client sees no gap.
pub async fn events<B>(state: &WebState, req: &Request<B>) -> Response<Body> {
    let mut last = resume_from(req, "after");
    let hub = state.events.clone();
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let mut out = String::from("retry: 1000\n\n");
        loop {
            let sub = hub.subscribe(last);
            if last > 0 && last + 1 < sub.oldest {
                out.push_str("event: reset\ndata: {}\n\n");
            }
            for e in &sub.backlog {
                last = e.seq;
                push_event(&mut out, e);
                if out.len() >= BATCH
                    && tx
                        .send(Bytes::from(std::mem::take(&mut out)))
                        .await
                        .is_err()
                {
                    return;
                }
            }
            if !out.is_empty()
                && tx
                    .send(Bytes::from(std::mem::take(&mut out)))
                    .await
                    .is_err()
            {
                return;
            }
            let Some(mut live) = sub.live else {
                // The workflow has ended: stay open (so the browser does
                // not reconnect in a loop) until the client leaves.
                return keep_alive(tx).await;
            };
            match follow(&mut live, &mut last, &tx).await {
                Followed::Lagged => continue,
                Followed::Ended => return keep_alive(tx).await,
                Followed::Gone => return,
            }
        }
    });
    stream_response(rx)
}

/// How following the live events stopped.
enum Followed {
    /// Events were dropped: catch up from the window.
    Lagged,
    /// The hub is closed: no more events.
    Ended,
    /// The client left.
    Gone,
}

/// Writes live events to `tx` in coalesced batches, with heartbeats: after
/// the first event of a quiet spell it waits one window, then writes
/// everything that came meanwhile (one timer and one write per window,
/// however many events). A full batch is followed at once by the next.
async fn follow(
    live: &mut broadcast::Receiver<WorkflowEvent>,
    last: &mut u64,
    tx: &mpsc::Sender<Bytes>,
) -> Followed {
    let mut ping = tokio::time::interval(HEARTBEAT);
    ping.tick().await;
    let mut backlogged = false;
    loop {
        let mut out = String::new();
        let mut lagged = false;
        let mut event = false;
        tokio::select! {
            r = live.recv() => match r {
                Ok(e) => {
                    event = true;
                    if e.seq > *last {
                        *last = e.seq;
                        push_event(&mut out, &e);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => lagged = true,
                Err(broadcast::error::RecvError::Closed) => return Followed::Ended,
            },
            _ = ping.tick() => out.push_str(": ping\n\n"),
            _ = tx.closed() => return Followed::Gone,
        }
        if event {
            if !backlogged {
                tokio::select! {
                    _ = tokio::time::sleep(COALESCE) => {}
                    _ = tx.closed() => return Followed::Gone,
                }
            }
            while out.len() < BATCH {
                match live.try_recv() {
                    Ok(e) if e.seq > *last => {
                        *last = e.seq;
                        push_event(&mut out, &e);
                    }
                    Ok(_) => {}
                    Err(broadcast::error::TryRecvError::Lagged(_)) => {
                        lagged = true;
                        break;
                    }
                    // Empty, or closed (the next recv says so).
                    Err(_) => break,
                }
            }
            backlogged = out.len() >= BATCH;
        }
        if !out.is_empty() && tx.send(Bytes::from(out)).await.is_err() {
            return Followed::Gone;
        }
        if lagged {
            return Followed::Lagged;
        }
    }
}

/// Holds a finished stream open with heartbeats until the client leaves.
async fn keep_alive(tx: mpsc::Sender<Bytes>) {
    let mut ping = tokio::time::interval(HEARTBEAT);
    ping.tick().await;
    loop {
        tokio::select! {
            _ = ping.tick() => {
                if tx.send(Bytes::from_static(b": ping\n\n")).await.is_err() {
                    return;
                }
            }
            _ = tx.closed() => return,
        }
    }
}

/// `/api/log?job=ID&attempt=N`: the attempt's log (the latest attempt when
/// N is 0 or absent) from the byte after `Last-Event-ID`, following it
/// while it runs. Data events carry `{"offset", "text"}` and have the next
/// offset as their id; `end` says the log is complete; `problem` carries a
/// message (no such job, never ran).
pub async fn log<B>(state: &WebState, req: &Request<B>) -> Response<Body> {
    let query = req.uri().query().unwrap_or("");
    let job_id = query_param(query, "job").unwrap_or_default();
    let attempt: u32 = query_param(query, "attempt")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let offset = resume_from(req, "offset");
    let mut grpc = tonic::Request::new(FollowLogsRequest {
        job_id,
        attempt,
        offset,
        follow: true,
    });
    if let Ok(v) = format!("Bearer {}", state.tokens.client_token()).parse() {
        grpc.metadata_mut().insert("authorization", v);
    }
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let started = state.workflow.follow_logs(grpc).await;
    tokio::spawn(async move {
        let mut stream = match started {
            Ok(s) => s.into_inner(),
            Err(status) => {
                let msg = serde_json::json!({"message": status.message()});
                let _ = tx
                    .send(Bytes::from(format!("event: problem\ndata: {msg}\n\n")))
                    .await;
                return keep_alive(tx).await;
            }
        };
        // Bytes of a character cut at a piece's end, kept for the next.
        let mut carry: Vec<u8> = Vec::new();
        let mut pos = offset;
        loop {
            let item = tokio::select! {
                i = stream.next() => i,
                _ = tx.closed() => return,
            };
            match item {
                Some(Ok(piece)) => {
                    let start = piece.offset.saturating_sub(carry.len() as u64);
                    pos = piece.offset + piece.data.len() as u64;
                    carry.extend_from_slice(&piece.data);
                    let cut = match std::str::from_utf8(&carry) {
                        Ok(_) => carry.len(),
                        Err(e) if e.error_len().is_none() => e.valid_up_to(),
                        Err(_) => carry.len(),
                    };
                    let rest = carry.split_off(cut);
                    let text = String::from_utf8_lossy(&carry).into_owned();
                    carry = rest;
                    let data = serde_json::json!({"offset": start, "text": text});
                    let next = pos - carry.len() as u64;
                    if tx
                        .send(Bytes::from(format!("id: {next}\ndata: {data}\n\n")))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Some(Err(status)) => {
                    let msg = serde_json::json!({"message": status.message()});
                    let _ = tx
                        .send(Bytes::from(format!("event: problem\ndata: {msg}\n\n")))
                        .await;
                    return keep_alive(tx).await;
                }
                None => {
                    let end = serde_json::json!({"offset": pos});
                    let _ = tx
                        .send(Bytes::from(format!("event: end\ndata: {end}\n\n")))
                        .await;
                    return keep_alive(tx).await;
                }
            }
        }
    });
    stream_response(rx)
}
