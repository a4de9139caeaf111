//! kube-proxy: for every Service with a selector and a clusterIP, a TCP
//! listener on `clusterIP:port` inside the pod network
//! ([`super::netns::PodNetwork::bind`]) that forwards each connection to one
//! ready pod matching the selector (`podIP:targetPort`, round-robin).
//!
//! A Service port is listened on only while the Service has a ready
//! endpoint, so with none a connection is refused, as the real kube-proxy's
//! REJECT rule makes it; deleting the Service closes its listeners. The
//! listeners and their endpoints follow the store (Services and pods),
//! synced at most every [`MIN_SYNC`] as the real kube-proxy's minimum sync
//! period does; a connection picks from the endpoints of the last sync, as
//! a kernel rule would, rather than looking through every pod.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinHandle;

use super::cluster::{Cluster, lock};
use super::resources;
use super::services::cluster_ip;

/// The shortest time between two syncs of the listeners with the store.
const MIN_SYNC: Duration = Duration::from_millis(50);

/// Where one Service port sends its connections.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Route {
    ns: String,
    service: String,
    selector: BTreeMap<String, String>,
    /// `targetPort`: a number or a container port name.
    target: Value,
    /// The ready endpoints at the last sync, `podIP:targetPort`.
    endpoints: Vec<SocketAddrV4>,
}

/// A bound Service port.
struct Active {
    route: Arc<Mutex<Route>>,
    task: JoinHandle<()>,
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_none()
        && pod.pointer("/status/phase").and_then(Value::as_str) == Some("Running")
        && pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
}

fn matches(selector: &BTreeMap<String, String>, pod: &Value) -> bool {
    let labels = pod.pointer("/metadata/labels");
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)).and_then(Value::as_str) == Some(v.as_str()))
}

/// The port a ready pod serves `target` on.
fn target_port(pod: &Value, target: &Value) -> Option<u16> {
    if let Some(n) = target.as_u64() {
        return u16::try_from(n).ok();
    }
    if let Some(s) = target.as_str() {
        if let Ok(n) = s.parse::<u16>() {
            return Some(n);
        }
        return pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)?
            .iter()
            .flat_map(|c| c["ports"].as_array().into_iter().flatten())
            .find(|p| p["name"] == s)
            .and_then(|p| p["containerPort"].as_u64())
            .and_then(|n| u16::try_from(n).ok());
    }
    None
}

/// The ready endpoints of a route, `podIP:targetPort`.
fn endpoints(cluster: &Cluster, route: &Route) -> Vec<SocketAddrV4> {
    cluster
        .store()
        .list(resources::core("pods"), Some(&route.ns))
        .iter()
        .filter(|p| matches(&route.selector, p) && is_ready(p))
        .filter_map(|p| {
            let ip: Ipv4Addr = p.pointer("/status/podIP")?.as_str()?.parse().ok()?;
            Some(SocketAddrV4::new(ip, target_port(p, &route.target)?))
        })
        .collect()
}

/// Every Service port that should be listened on now.
fn desired(cluster: &Cluster) -> HashMap<SocketAddrV4, Route> {
    let services = cluster.store().list(resources::core("services"), None);
    let mut out = HashMap::new();
    for svc in services.iter() {
        let Some(ip) = cluster_ip(svc) else { continue };
        let selector: BTreeMap<String, String> = svc
            .pointer("/spec/selector")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .unwrap_or_default();
        if selector.is_empty() {
            continue;
        }
        let (ns, name) = super::store::key_of(svc);
        for p in svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if p["protocol"].as_str().unwrap_or("TCP") != "TCP" {
                continue;
            }
            let Some(port) = p["port"].as_u64().and_then(|n| u16::try_from(n).ok()) else {
                continue;
            };
            let mut route = Route {
                ns: ns.clone(),
                service: name.clone(),
                selector: selector.clone(),
                target: p.get("targetPort").cloned().unwrap_or(Value::from(port)),
                endpoints: Vec::new(),
            };
            route.endpoints = endpoints(cluster, &route);
            if !route.endpoints.is_empty() {
                out.insert(SocketAddrV4::new(ip, port), route);
            }
        }
    }
    out
}

/// Forwards one connection to an endpoint, or resets it if there is none.
async fn forward(
    cluster: Arc<Cluster>,
    route: Route,
    rr: Arc<AtomicUsize>,
    mut client: tokio::net::TcpStream,
) {
    let eps = &route.endpoints;
    if eps.is_empty() {
        // No endpoint left at the last sync: reset, as REJECT does.
        let _ = client.set_zero_linger();
        return;
    }
    let ep = eps[rr.fetch_add(1, Ordering::Relaxed) % eps.len()];
    let upstream = cluster
        .pod_network()
        .connect_async(SocketAddr::V4(ep))
        .await;
    let mut upstream = match upstream {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(service = %route.service, endpoint = %ep, error = %e, "kube-proxy cannot reach the endpoint");
            let _ = client.set_zero_linger();
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// Binds one Service port and serves it until aborted.
fn listen(cluster: &Arc<Cluster>, addr: SocketAddrV4, route: Route) -> std::io::Result<Active> {
    let std_listener = cluster.pod_network().bind(SocketAddr::V4(addr))?;
    std_listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(std_listener)?;
    let route = Arc::new(Mutex::new(route));
    let r = route.clone();
    let c = cluster.clone();
    let task = tokio::spawn(async move {
        let rr = Arc::new(AtomicUsize::new(0));
        loop {
            match listener.accept().await {
                Ok((sock, _)) => {
                    let route = lock(&r).clone();
                    tokio::spawn(forward(c.clone(), route, rr.clone(), sock));
                }
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "kube-proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    Ok(Active { route, task })
}

/// The kube-proxy loop: keeps the listeners in line with Services and
/// their ready pods until shutdown.
pub async fn run(cluster: Arc<Cluster>) {
    let mut changed = cluster.subscribe();
    let mut active: HashMap<SocketAddrV4, Active> = HashMap::new();
    let mut resync = tokio::time::interval(Duration::from_secs(1));
    loop {
        let want = desired(&cluster);
        let gone: Vec<SocketAddrV4> = active
            .keys()
            .filter(|a| !want.contains_key(a))
            .copied()
            .collect();
        for addr in gone {
            if let Some(a) = active.remove(&addr) {
                a.task.abort();
                // Wait until the listener is dropped, so the port is free.
                let _ = a.task.await;
            }
        }
        for (addr, route) in want {
            match active.get(&addr) {
                Some(a) => {
                    let mut r = lock(&a.route);
                    if *r != route {
                        *r = route;
                    }
                }
                None => match listen(&cluster, addr, route.clone()) {
                    Ok(a) => {
                        active.insert(addr, a);
                    }
                    Err(e) => tracing::warn!(
                        %addr, service = %format!("{}/{}", route.ns, route.service), error = %e,
                        "kube-proxy cannot listen on the Service's clusterIP; retrying"
                    ),
                },
            }
        }
        tokio::select! {
            _ = cluster.shutdown.cancelled() => break,
            _ = changed.changed() => {}
            _ = resync.tick() => {}
        }
        // Changes that come in a burst (a thousand pods starting) make one
        // sync, not one each.
        tokio::select! {
            _ = cluster.shutdown.cancelled() => break,
            _ = tokio::time::sleep(MIN_SYNC) => {}
        }
        changed.borrow_and_update();
    }
    for (_, a) in active {
        a.task.abort();
    }
}
