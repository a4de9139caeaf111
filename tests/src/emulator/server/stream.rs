//! `pods/exec` and `pods/portforward`: authorization, the pod and container
//! checks of the API server and kubelet, protocol negotiation, and the
//! sessions themselves.
//!
//! - exec over WebSocket, `v5.channel.k8s.io` or `v4.channel.k8s.io`:
//!   channels 0 stdin, 1 stdout, 2 stderr, 3 the final `Status` (JSON),
//!   4 terminal resize (`{"Width":W,"Height":H}`), and in v5 255 to close a
//!   channel (`[255, 0]` ends stdin). Exec over SPDY is not served: kubectl
//!   1.30+ and kube-rs use WebSocket.
//! - portforward over WebSocket, `v4.channel.k8s.io` or
//!   `portforward.k8s.io`: one connection per port of the `ports` query,
//!   data on channel 2i and errors on 2i+1, each channel's first frame the
//!   port (2 bytes, little-endian).
//! - portforward over SPDY/3.1 ([`super::spdy`]): tunneled in WebSocket
//!   (`SPDY/3.1+portforward.k8s.io`, kubectl 1.31+'s default) or after a
//!   plain `Upgrade: SPDY/3.1` (`portforward.k8s.io`, its fallback).
//!
//! Authorization follows an API server with
//! `AuthorizePodWebsocketUpgradeCreatePermission` on (the default from
//! 1.35; alpha and off in 1.31 to 1.34): a POST (SPDY) needs `create` on the
//! subresource, a WebSocket GET needs `get` (the request's own verb) and
//! `create`. Code that passes here passes on every version.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::{Request, Response};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::Body;
use super::request::{ResourceRequest, decode};
use super::websocket::{self, UpgradeRequest, Ws, channel_message};
use crate::emulator::cluster::Cluster;
use crate::emulator::config::Identity;
use crate::emulator::error::ApiError;
use crate::emulator::kubelet::dial;
use crate::emulator::kubelet::exec::{self, ExecProcess, ExecRequest};

/// Exec subprotocols, newest first.
const EXEC_PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];
/// Port-forward subprotocols over WebSocket.
const PORTFORWARD_WS_PROTOCOLS: &[&str] = &[
    super::spdy::TUNNEL_PROTOCOL,
    "v4.channel.k8s.io",
    "portforward.k8s.io",
];
/// Port-forward stream protocols over plain SPDY.
const PORTFORWARD_SPDY_PROTOCOLS: &[&str] = &["portforward.k8s.io"];

/// How long to wait for a process's output to drain after it exits (a
/// background child may hold the pipe open).
const DRAIN: Duration = Duration::from_secs(2);

/// Whether a request is for a streaming subresource served here.
pub fn is_stream(rr: &ResourceRequest) -> bool {
    rr.resource.group.is_empty()
        && rr.resource.plural == "pods"
        && matches!(rr.subresource.as_str(), "exec" | "portforward")
}

/// All values of a query parameter, in order (`command` repeats).
fn query_all(query: Option<&str>, key: &str) -> Vec<String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k) == key).then(|| decode(v))
        })
        .collect()
}

fn query_flag(query: Option<&str>, key: &str) -> bool {
    query_all(query, key)
        .last()
        .is_some_and(|v| v == "1" || v == "true" || v == "True")
}

fn authorize(cluster: &Cluster, identity: &Identity, rr: &ResourceRequest) -> Result<(), ApiError> {
    let verbs: &[&str] = if rr.verb == "create" {
        &["create"]
    } else {
        &["get", "create"]
    };
    for verb in verbs {
        super::handlers::authorize_verb(cluster, identity, rr, verb)?;
    }
    Ok(())
}

fn names(pod: &Value, list: &str) -> Vec<String> {
    pod.pointer(list)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The container an exec addresses, with the API server's errors.
fn pick_container(pod: &Value, name: &str, asked: Option<&str>) -> Result<String, ApiError> {
    let containers = names(pod, "/spec/containers");
    let inits = names(pod, "/spec/initContainers");
    if let Some(c) = asked.filter(|c| !c.is_empty()) {
        if containers.iter().chain(&inits).any(|n| n == c) {
            return Ok(c.to_string());
        }
        return Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        )));
    }
    match containers.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}"
        ))),
        many => {
            let mut msg = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                many.join(" ")
            );
            if !inits.is_empty() {
                msg.push_str(&format!(
                    " or one of the init containers: [{}]",
                    inits.join(" ")
                ));
            }
            Err(ApiError::bad_request(msg))
        }
    }
}

/// The kubelet's answer when it has nothing running for the request.
fn kubelet_error(message: String) -> ApiError {
    let mut e = ApiError::bad_request(message);
    e.code = 500;
    e.reason = "InternalError";
    e
}

/// Serves `pods/exec` and `pods/portforward` (after the fault check; the
/// authorization is done here).
pub async fn serve(
    cluster: Arc<Cluster>,
    mut req: Request<Incoming>,
    rr: ResourceRequest,
    identity: &Identity,
) -> Result<Response<Body>, ApiError> {
    authorize(&cluster, identity, &rr)?;
    let pods = rr.resource;
    let pod = cluster
        .get(pods, &rr.namespace, &rr.name)
        .ok_or_else(|| ApiError::not_found(&pods.qualified(), &rr.name))?;
    let query = req.uri().query().map(String::from);
    let q = query.as_deref();
    let upgrade = websocket::upgrade_request(req.headers());
    if upgrade == UpgradeRequest::None {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    if pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .is_empty()
    {
        return Err(ApiError::bad_request(format!(
            "pod {} does not have a host assigned",
            rr.name
        )));
    }
    let uid = pod
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let on_upgrade = hyper::upgrade::on(&mut req);
    if rr.subresource == "exec" {
        let container = pick_container(
            &pod,
            &rr.name,
            query_all(q, "container").last().map(String::as_str),
        )?;
        let ereq = ExecRequest {
            argv: query_all(q, "command"),
            tty: query_flag(q, "tty"),
            stdin: query_flag(q, "stdin"),
            stdout: query_flag(q, "stdout"),
            stderr: query_flag(q, "stderr"),
        };
        if ereq.argv.is_empty() {
            return Err(ApiError::bad_request(
                "you must specify at least one command for the container",
            ));
        }
        if !(ereq.stdin || ereq.stdout || ereq.stderr) {
            return Err(ApiError::bad_request(
                "you must specify at least 1 of stdin, stdout, stderr",
            ));
        }
        let pid = cluster
            .kubelet
            .procs_of(&uid)
            .into_iter()
            .find(|(c, _)| *c == container)
            .map(|(_, h)| h.pgid)
            .filter(|p| *p > 0)
            .ok_or_else(|| kubelet_error(format!("container not found (\"{container}\")")))?;
        let (key, protocols) = match upgrade {
            UpgradeRequest::WebSocket { key, protocols } => (key, protocols),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "the emulator serves pods/exec over WebSocket only ({}); exec over SPDY/3.1 is not implemented",
                    EXEC_PROTOCOLS.join(", ")
                )));
            }
        };
        let protocol = websocket::negotiate(&protocols, EXEC_PROTOCOLS)
            .ok_or_else(|| unsupported(&protocols, EXEC_PROTOCOLS))?;
        let c = cluster.clone();
        tokio::spawn(async move {
            match websocket::accept(on_upgrade).await {
                Ok(ws) => exec_session(c, ws, protocol, pid, ereq).await,
                Err(e) => tracing::debug!(error = %e, "exec upgrade failed"),
            }
        });
        return Ok(websocket::switch_to_websocket(&key, protocol));
    }
    // portforward
    let running = !cluster.kubelet.procs_of(&uid).is_empty();
    let pod_ip = pod
        .pointer("/status/podIP")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if !running || pod_ip.is_empty() {
        return Err(kubelet_error(format!(
            "pod not found (\"{}_{}\")",
            rr.name, rr.namespace
        )));
    }
    let target = PodTarget {
        cluster: cluster.clone(),
        pod_ip,
        uid,
    };
    match upgrade {
        UpgradeRequest::WebSocket { key, protocols } => {
            let protocol = websocket::negotiate(&protocols, PORTFORWARD_WS_PROTOCOLS)
                .ok_or_else(|| unsupported(&protocols, PORTFORWARD_WS_PROTOCOLS))?;
            if protocol == super::spdy::TUNNEL_PROTOCOL {
                tokio::spawn(async move {
                    match websocket::accept(on_upgrade).await {
                        Ok(ws) => {
                            super::spdy::serve_portforward(websocket::into_byte_stream(ws), target)
                                .await
                        }
                        Err(e) => tracing::debug!(error = %e, "portforward upgrade failed"),
                    }
                });
            } else {
                let ports = parse_ports(q)?;
                tokio::spawn(async move {
                    match websocket::accept(on_upgrade).await {
                        Ok(ws) => portforward_ws(ws, target, ports).await,
                        Err(e) => tracing::debug!(error = %e, "portforward upgrade failed"),
                    }
                });
            }
            Ok(websocket::switch_to_websocket(&key, protocol))
        }
        UpgradeRequest::Spdy { protocols } => {
            let protocol = websocket::negotiate(&protocols, PORTFORWARD_SPDY_PROTOCOLS)
                .ok_or_else(|| unsupported(&protocols, PORTFORWARD_SPDY_PROTOCOLS))?;
            tokio::spawn(async move {
                match websocket::upgraded(on_upgrade).await {
                    Ok(io) => super::spdy::serve_portforward(io, target).await,
                    Err(e) => tracing::debug!(error = %e, "portforward upgrade failed"),
                }
            });
            Ok(websocket::switch_to_spdy(protocol))
        }
        UpgradeRequest::None => Err(ApiError::bad_request("Upgrade request required")),
    }
}

fn unsupported(offered: &[String], supported: &[&str]) -> ApiError {
    ApiError::bad_request(format!(
        "requested protocol(s) are not supported: [{}]; supports [{}]",
        offered.join(" "),
        supported.join(" ")
    ))
}

/// The ports of a WebSocket port-forward (`ports=80,8080` or repeated).
fn parse_ports(q: Option<&str>) -> Result<Vec<u16>, ApiError> {
    let mut ports = Vec::new();
    for v in query_all(q, "ports") {
        for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => ports.push(n),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "invalid port {p:?}: ports must be numbers from 1 to 65535"
                    )));
                }
            }
        }
    }
    if ports.is_empty() {
        return Err(ApiError::bad_request(
            "query parameter \"ports\" is required: the ports to forward, e.g. ports=8080",
        ));
    }
    Ok(ports)
}

/// Where a port-forward connects: the pod, through [`dial::dial_pod`].
#[derive(Clone)]
pub struct PodTarget {
    /// The cluster (the dialer may need its network namespaces).
    pub cluster: Arc<Cluster>,
    /// The pod's IP (`status.podIP`).
    pub pod_ip: String,
    /// The pod's uid (error messages).
    pub uid: String,
}

impl PodTarget {
    /// Connects to one of the pod's ports; the error is the message the
    /// client is sent.
    pub async fn dial(&self, port: u16) -> Result<tokio::net::TcpStream, String> {
        dial::dial_pod_async(self.cluster.clone(), self.pod_ip.clone(), port)
            .await
            .map_err(|e| dial::forward_error(&self.uid, port, &e))
    }
}

/// The v4 `Status` an exec ends with.
pub fn exit_status(argv: &[String], code: i32) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
            argv.join(" ")
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// The `Status` of an exec that could not start.
fn start_failure(message: &str) -> Value {
    let inner = format!(
        "error executing command in container: failed to exec in container: failed to start exec: {message}"
    );
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("Internal error occurred: {inner}"),
        "reason": "InternalError",
        "details": {"causes": [{"message": inner}]},
        "code": 500,
    })
}

async fn pump(mut from: impl AsyncRead + Unpin, channel: u8, tx: mpsc::Sender<Message>) {
    let mut buf = vec![0u8; 32 << 10];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send(channel_message(channel, &buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Whether process `pid` is gone (the container it is the main process of
/// has ended).
fn process_gone(pid: i32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

async fn exec_session(
    cluster: Arc<Cluster>,
    ws: Ws,
    protocol: &'static str,
    container_pid: i32,
    req: ExecRequest,
) {
    let v5 = protocol == "v5.channel.k8s.io";
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
        let _ = sink.send(websocket::normal_close()).await;
    });
    let cgroup = exec::container_cgroup(&cluster.kubelet.memory, container_pid);
    let mut proc: ExecProcess = match exec::start(container_pid, &req, cgroup.as_deref()) {
        Ok(p) => p,
        Err(msg) => {
            let status = serde_json::to_vec(&start_failure(&msg)).unwrap_or_default();
            let _ = tx.send(channel_message(3, &status)).await;
            drop(tx);
            let _ = writer.await;
            let _ =
                tokio::time::timeout(DRAIN, async { while stream.next().await.is_some() {} }).await;
            return;
        }
    };
    let mut pumps = Vec::new();
    if let Some(out) = proc.stdout.take() {
        pumps.push(tokio::spawn(pump(out, 1, tx.clone())));
    }
    if let Some(err) = proc.stderr.take() {
        pumps.push(tokio::spawn(pump(err, 2, tx.clone())));
    }
    let mut stdin = proc.stdin.take();
    let resizer = proc.resizer.take();
    let mut reader = tokio::spawn(async move {
        while let Some(msg) = stream.next().await {
            let b = match msg {
                Ok(Message::Binary(b)) => b,
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            match b.first() {
                Some(0) => {
                    if let Some(w) = stdin.as_mut()
                        && (w.write_all(&b[1..]).await.is_err() || w.flush().await.is_err())
                    {
                        stdin = None;
                    }
                }
                Some(4) => {
                    if let (Some(r), Ok(size)) =
                        (&resizer, serde_json::from_slice::<Value>(&b[1..]))
                    {
                        let dim =
                            |k: &str| size[k].as_u64().unwrap_or(0).min(u16::MAX as u64) as u16;
                        r.resize(dim("Width"), dim("Height"));
                    }
                }
                Some(255) if v5 && b.get(1) == Some(&0) => {
                    if let Some(mut w) = stdin.take() {
                        let _ = w.shutdown().await;
                    }
                }
                _ => {}
            }
        }
        drop(stdin);
        stream
    });
    let mut client_gone = false;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let exit = loop {
        tokio::select! {
            e = proc.wait() => break e,
            _ = &mut reader, if !client_gone => {
                client_gone = true;
                if req.tty {
                    // The terminal hangs up.
                    proc.signal(Signal::SIGHUP);
                }
            }
            _ = tick.tick() => {
                if process_gone(container_pid) || cluster.shutdown.is_cancelled() {
                    // The container ended: so do the processes in it.
                    proc.signal(Signal::SIGKILL);
                }
            }
        }
    };
    for p in pumps {
        let _ = tokio::time::timeout(DRAIN, p).await;
    }
    let status = serde_json::to_vec(&exit_status(&req.argv, exit.code)).unwrap_or_default();
    let _ = tx.send(channel_message(3, &status)).await;
    drop(tx);
    let _ = writer.await;
    if !client_gone {
        // Let the client answer the close before the connection goes.
        let _ = tokio::time::timeout(DRAIN, reader).await;
    }
}

/// One port of a WebSocket port-forward.
async fn portforward_ws(ws: Ws, target: PodTarget, ports: Vec<u16>) {
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
        let _ = sink.send(websocket::normal_close()).await;
    });
    let mut to_pod: Vec<Option<mpsc::Sender<Bytes>>> = Vec::new();
    let mut from_pod = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let data = (2 * i) as u8;
        let err = data + 1;
        let le = port.to_le_bytes();
        let _ = tx.send(channel_message(data, &le)).await;
        let _ = tx.send(channel_message(err, &le)).await;
        match target.dial(*port).await {
            Ok(conn) => {
                let (rd, mut wr) = conn.into_split();
                let (ptx, mut prx) = mpsc::channel::<Bytes>(16);
                tokio::spawn(async move {
                    while let Some(b) = prx.recv().await {
                        if wr.write_all(&b).await.is_err() {
                            return;
                        }
                    }
                    let _ = wr.shutdown().await;
                });
                to_pod.push(Some(ptx));
                from_pod.push(tokio::spawn(pump(rd, data, tx.clone())));
            }
            Err(msg) => {
                let _ = tx.send(channel_message(err, msg.as_bytes())).await;
                to_pod.push(None);
            }
        }
    }
    let reader = async {
        while let Some(msg) = stream.next().await {
            let b = match msg {
                Ok(Message::Binary(b)) => b,
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            let Some((&ch, payload)) = b.split_first() else {
                continue;
            };
            if ch % 2 == 0
                && let Some(Some(ptx)) = to_pod.get((ch / 2) as usize)
                && !payload.is_empty()
                && ptx.send(Bytes::copy_from_slice(payload)).await.is_err()
            {
                to_pod[(ch / 2) as usize] = None;
            }
        }
    };
    let all_done = futures::future::join_all(from_pod.iter_mut());
    tokio::select! {
        _ = reader => {}
        _ = all_done => {}
    }
    for p in &from_pod {
        p.abort();
    }
    drop(tx);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_carries_the_code() {
        let s = exit_status(&["sh".into(), "-c".into(), "exit 3".into()], 3);
        assert_eq!(s["status"], "Failure");
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        assert_eq!(exit_status(&[], 0)["status"], "Success");
    }

    #[test]
    fn reads_repeated_query_values() {
        let q = Some(
            "command=sh&command=-c&command=echo+%24HOME&stdin=true&tty=1&ports=80,81&ports=82",
        );
        assert_eq!(query_all(q, "command"), vec!["sh", "-c", "echo $HOME"]);
        assert!(query_flag(q, "stdin") && query_flag(q, "tty") && !query_flag(q, "stdout"));
        assert_eq!(parse_ports(q).ok(), Some(vec![80, 81, 82]));
        assert!(parse_ports(Some("ports=0")).is_err());
        assert!(parse_ports(None).is_err());
    }

    #[test]
    fn containers_are_picked_like_the_api_server() {
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}],
                                  "initContainers": [{"name": "i"}]}});
        assert_eq!(pick_container(&pod, "p", Some("b")).ok(), Some("b".into()));
        let e = pick_container(&pod, "p", None).err().map(|e| e.message);
        assert_eq!(
            e.as_deref(),
            Some(
                "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]"
            )
        );
        let e = pick_container(&pod, "p", Some("z"))
            .err()
            .map(|e| e.message);
        assert_eq!(e.as_deref(), Some("container z is not valid for pod p"));
    }
}
