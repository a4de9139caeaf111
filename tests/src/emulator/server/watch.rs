//! Watch streams: one JSON event per line, replayed from the store's
//! history after the client's resourceVersion.
//!
//! Semantics follow the apiserver: no resourceVersion (or `0`) starts with
//! synthetic ADDED events for the current state; a version that fell out of
//! the history window yields an `ERROR` event carrying a 410 `Expired`
//! Status; objects moving in or out of a selector appear as ADDED / DELETED;
//! BOOKMARKs are sent when asked for; the stream ends after
//! `timeoutSeconds`, or abruptly when a test drops all watches.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::Response;
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::request::{ResourceRequest, flag};
use super::{Body, table};
use crate::emulator::cluster::Cluster;
use crate::emulator::error::ApiError;
use crate::emulator::resources::ResourceType;
use crate::emulator::selector::{FieldSelector, LabelSelector};
use crate::emulator::store::{ChangeKind, key_of};

type Tx = mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>;

/// What a watch filters on.
struct Filter {
    resource: &'static ResourceType,
    namespace: String,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        (self.namespace.is_empty() || key_of(obj).0 == self.namespace)
            && self.labels.matches_object(obj)
            && self.fields.matches_object(obj)
    }
}

/// How events are rendered.
struct Render {
    resource: &'static ResourceType,
    as_table: bool,
    include: String,
}

impl Render {
    fn event(&self, kind: &str, obj: &Value) -> Bytes {
        let object = if self.as_table && kind != "BOOKMARK" && kind != "ERROR" {
            table::table(self.resource, &[Arc::new(obj.clone())], &self.include)
        } else {
            obj.clone()
        };
        let mut line =
            serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = json!({"kind": self.resource.kind, "apiVersion": self.resource.api_version(), "metadata": meta});
        self.event("BOOKMARK", &obj)
    }
}

async fn send(tx: &Tx, b: Bytes) -> bool {
    tx.send(Ok(Frame::data(b))).await.is_ok()
}

/// Starts a watch and returns the streaming response.
pub fn serve(
    cluster: Arc<Cluster>,
    rr: &ResourceRequest,
    query: &HashMap<String, String>,
    as_table: bool,
) -> Result<Response<Body>, ApiError> {
    let mut fields = FieldSelector::parse(
        query
            .get("fieldSelector")
            .map(String::as_str)
            .unwrap_or_default(),
        rr.resource.plural,
    )?;
    if !rr.name.is_empty() {
        fields = FieldSelector::parse(&format!("metadata.name={}", rr.name), rr.resource.plural)?;
    }
    let filter = Filter {
        resource: rr.resource,
        namespace: rr.namespace.clone(),
        labels: LabelSelector::parse(
            query
                .get("labelSelector")
                .map(String::as_str)
                .unwrap_or_default(),
        )?,
        fields,
    };
    let render = Render {
        resource: rr.resource,
        as_table,
        include: query
            .get("includeObject")
            .cloned()
            .unwrap_or_else(|| "PartialObjectMetadata".into()),
    };
    let bookmarks = flag(query, "allowWatchBookmarks");
    let send_initial = flag(query, "sendInitialEvents");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let requested = query.get("resourceVersion").cloned().unwrap_or_default();

    // Decide the starting point under the store lock, so no change is lost
    // between the initial state and the first replayed change.
    let (initial, cursor, expired) = {
        let store = cluster.store();
        let current = store.current_rv();
        if requested.is_empty() || requested == "0" || send_initial {
            let ns = (!filter.namespace.is_empty()).then_some(filter.namespace.as_str());
            let objs: Vec<Arc<Value>> = store
                .list(filter.resource, ns)
                .into_iter()
                .filter(|o| filter.matches(o))
                .collect();
            (objs, current, None)
        } else {
            let rv: u64 = requested.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid resource version {requested:?}"))
            })?;
            match store.changes_since(rv) {
                Err(e) => (Vec::new(), rv, Some(e)),
                Ok(_) => (Vec::new(), rv, None),
            }
        }
    };

    let (tx, rx) = mpsc::channel(256);
    let body = StreamBody::new(ReceiverStream::new(rx)).boxed();
    let resp = Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("transfer-encoding", "chunked")
        .body(body)
        .map_err(|e| ApiError::internal(&e.to_string()))?;

    tokio::spawn(async move {
        if let Some(e) = expired {
            let _ = send(&tx, render.event("ERROR", &e.to_status())).await;
            return;
        }
        for o in &initial {
            if !send(&tx, render.event("ADDED", o)).await {
                return;
            }
        }
        if send_initial && !send(&tx, render.bookmark(cursor, true)).await {
            return;
        }
        stream_changes(cluster, tx, filter, render, cursor, bookmarks, timeout).await;
    });
    Ok(resp)
}

async fn stream_changes(
    cluster: Arc<Cluster>,
    tx: Tx,
    filter: Filter,
    render: Render,
    mut cursor: u64,
    bookmarks: bool,
    timeout: Duration,
) {
    let mut changed = cluster.subscribe();
    let mut dropped = cluster.watch_generation.subscribe();
    dropped.borrow_and_update();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut bookmark_tick = tokio::time::interval(cluster.config.timing.bookmark_interval);
    bookmark_tick.tick().await;
    loop {
        // Replay everything after the cursor before waiting again.
        let batch = {
            let store = cluster.store();
            store.changes_since(cursor).map(|c| (c, store.current_rv()))
        };
        let (changes, current) = match batch {
            Ok(b) => b,
            Err(e) => {
                let _ = send(&tx, render.event("ERROR", &e.to_status())).await;
                return;
            }
        };
        for c in changes {
            if c.resource.plural != filter.resource.plural {
                continue;
            }
            let now = filter.matches(&c.object);
            let before = c.previous.as_ref().is_some_and(|p| filter.matches(p));
            let kind = match (c.kind, before, now) {
                (ChangeKind::Added, _, true) => "ADDED",
                (ChangeKind::Modified, true, true) => "MODIFIED",
                (ChangeKind::Modified, false, true) => "ADDED",
                (ChangeKind::Modified, true, false) => "DELETED",
                (ChangeKind::Deleted, true, _) => "DELETED",
                _ => continue,
            };
            if !send(&tx, render.event(kind, &c.object)).await {
                return;
            }
        }
        cursor = current;
        tokio::select! {
            _ = changed.changed() => {}
            _ = &mut deadline => return,
            _ = dropped.changed() => {
                let _ = tx.send(Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "watch dropped by fault injection"))).await;
                return;
            }
            _ = cluster.shutdown.cancelled() => return,
            _ = tx.closed() => return,
            _ = bookmark_tick.tick() => {
                if bookmarks && !send(&tx, render.bookmark(cursor, false)).await {
                    return;
                }
            }
        }
    }
}
