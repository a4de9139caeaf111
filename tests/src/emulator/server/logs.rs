//! `GET pods/NAME/log`: container logs with `container`, `previous`,
//! `tailLines`, `sinceSeconds`, `sinceTime`, `timestamps`, `limitBytes` and
//! `follow`, with the apiserver's errors for containers that never ran.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::Response;
use hyper::body::Frame;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::request::{ResourceRequest, flag};
use super::{Body, full};
use crate::emulator::cluster::{Cluster, parse_time};
use crate::emulator::error::ApiError;
use crate::emulator::kubelet::logs::{self, Record};
use crate::emulator::resources;

/// Filters parsed from the query.
struct Options {
    timestamps: bool,
    since: Option<chrono::DateTime<chrono::Utc>>,
    tail: Option<usize>,
    limit: Option<usize>,
}

impl Options {
    fn keep(&self, r: &Record) -> bool {
        match (self.since, r.time()) {
            (Some(s), Some(t)) => t >= s,
            _ => true,
        }
    }
}

fn names(list: Option<&Value>) -> Vec<String> {
    list.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn waiting_description(reason: &str) -> String {
    match reason {
        "ErrImagePull" => "image can't be pulled".into(),
        "ImagePullBackOff" => "trying and failing to pull image".into(),
        "" => "ContainerCreating".into(),
        r => r.into(),
    }
}

fn status_of<'a>(pod: &'a Value, container: &str) -> Option<&'a Value> {
    ["/status/containerStatuses", "/status/initContainerStatuses"]
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten()
        .find(|s| s["name"] == container)
}

/// Serves a log request.
pub async fn serve(
    cluster: Arc<Cluster>,
    rr: &ResourceRequest,
    q: &HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let pods = resources::core("pods");
    let pod = cluster
        .get(pods, &rr.namespace, &rr.name)
        .ok_or_else(|| ApiError::not_found(&pods.qualified(), &rr.name))?;
    let containers = names(pod.pointer("/spec/containers"));
    let inits = names(pod.pointer("/spec/initContainers"));
    let container = match q.get("container").filter(|c| !c.is_empty()) {
        Some(c) => {
            if !containers.contains(c) && !inits.contains(c) {
                return Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {}",
                    rr.name
                )));
            }
            c.clone()
        }
        None => {
            let default = pod
                .pointer("/metadata/annotations/kubectl.kubernetes.io~1default-container")
                .and_then(Value::as_str)
                .map(String::from);
            match (default, containers.len()) {
                (Some(d), _) => d,
                (None, 1) => containers[0].clone(),
                _ => {
                    let mut msg = format!(
                        "a container name must be specified for pod {}, choose one of: [{}]",
                        rr.name,
                        containers.join(" ")
                    );
                    if !inits.is_empty() {
                        msg.push_str(&format!(
                            " or one of the init containers: [{}]",
                            inits.join(" ")
                        ));
                    }
                    return Err(ApiError::bad_request(msg));
                }
            }
        }
    };
    let status = status_of(&pod, &container).cloned().unwrap_or(Value::Null);
    let restarts = status["restartCount"].as_i64().unwrap_or(0) as i32;
    let previous = flag(q, "previous");
    let run = if previous { restarts - 1 } else { restarts };
    let never_ran = status["state"]["waiting"].is_object()
        && status["lastState"]["terminated"].is_null()
        && restarts == 0;
    if previous && run < 0 {
        return Err(ApiError::bad_request(format!(
            "previous terminated container \"{container}\" in pod \"{}\" not found",
            rr.name
        )));
    }
    if !previous && (status.is_null() || never_ran) {
        let reason = status["state"]["waiting"]["reason"]
            .as_str()
            .unwrap_or_default();
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{}\" is waiting to start: {}",
            rr.name,
            waiting_description(reason)
        )));
    }
    let uid = pod
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let path = logs::log_path(
        &cluster.state_dir.join("pods").join(&uid),
        &container,
        run.max(0),
    );
    let since = q.get("sinceTime").and_then(|s| parse_time(s)).or_else(|| {
        q.get("sinceSeconds")
            .and_then(|s| s.parse::<i64>().ok())
            .map(|s| chrono::Utc::now() - chrono::Duration::seconds(s))
    });
    let opts = Options {
        timestamps: flag(q, "timestamps"),
        since,
        tail: q.get("tailLines").and_then(|t| t.parse().ok()),
        limit: q.get("limitBytes").and_then(|t| t.parse().ok()),
    };
    let data = tokio::fs::read(&path).await.unwrap_or_default();
    let (records, consumed) = logs::parse(&data);
    let mut kept: Vec<&Record> = records.iter().filter(|r| opts.keep(r)).collect();
    if let Some(t) = opts.tail {
        let skip = kept.len().saturating_sub(t);
        kept.drain(..skip);
    }
    let mut out: Vec<u8> = kept
        .iter()
        .flat_map(|r| r.render(opts.timestamps))
        .collect();
    if let Some(l) = opts.limit {
        out.truncate(l);
    }
    let running = status["state"]["running"].is_object() && !previous;
    if !flag(q, "follow") || !running || opts.limit.is_some_and(|l| out.len() >= l) {
        return Ok(Response::builder()
            .status(200)
            .header("content-type", "text/plain")
            .body(full(out))
            .unwrap_or_else(|_| Response::new(full(""))));
    }
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(64);
    let body = StreamBody::new(ReceiverStream::new(rx)).boxed();
    let ns = rr.namespace.clone();
    let name = rr.name.clone();
    tokio::spawn(async move {
        if !out.is_empty() && tx.send(Ok(Frame::data(Bytes::from(out)))).await.is_err() {
            return;
        }
        follow(
            cluster,
            tx,
            path,
            consumed as u64,
            ns,
            name,
            uid,
            container,
            run,
            opts,
        )
        .await;
    });
    Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .header("transfer-encoding", "chunked")
        .body(body)
        .map_err(|e| ApiError::internal(&e.to_string()))
}

#[allow(clippy::too_many_arguments)]
async fn follow(
    cluster: Arc<Cluster>,
    tx: mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
    path: PathBuf,
    mut offset: u64,
    ns: String,
    name: String,
    uid: String,
    container: String,
    run: i32,
    opts: Options,
) {
    let mut pending: Vec<u8> = Vec::new();
    loop {
        // Whether this run of the container is still going, checked before
        // reading so the final lines are never missed.
        let pod = cluster.get(resources::core("pods"), &ns, &name);
        let alive = pod.as_ref().is_some_and(|p| {
            p.pointer("/metadata/uid").and_then(Value::as_str) == Some(uid.as_str())
                && status_of(p, &container).is_some_and(|s| {
                    s["state"]["running"].is_object()
                        && s["restartCount"].as_i64().unwrap_or(0) as i32 == run
                })
        });
        if let Ok(mut f) = tokio::fs::File::open(&path).await
            && f.seek(std::io::SeekFrom::Start(offset)).await.is_ok()
        {
            let mut buf = Vec::new();
            if f.read_to_end(&mut buf).await.is_ok() {
                offset += buf.len() as u64;
                pending.extend_from_slice(&buf);
            }
        }
        let (records, consumed) = logs::parse(&pending);
        pending.drain(..consumed);
        let out: Vec<u8> = records
            .iter()
            .filter(|r| opts.keep(r))
            .flat_map(|r| r.render(opts.timestamps))
            .collect();
        if !out.is_empty() && tx.send(Ok(Frame::data(Bytes::from(out)))).await.is_err() {
            return;
        }
        if !alive || cluster.shutdown.is_cancelled() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = tx.closed() => return,
        }
    }
}
