//! Connections into a pod's network: the one way the emulator reaches a
//! pod's port (`pods/portforward`, and anything later that must talk to a
//! pod the way the kubelet does).

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::emulator::cluster::Cluster;

/// How long a dial may take before it is reported as failed.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a TCP connection to `port` of the pod whose IP is `pod_ip`.
///
/// A real kubelet (through the container runtime) connects to
/// `localhost:PORT` inside the pod's network namespace. Here the pod IP
/// from the pod's status is dialed instead, from inside the isolated pod
/// network when there is one. Blocking (call it from a blocking task): entering a pod's
/// network namespace to dial means switching this thread's namespace.
pub fn dial_pod(cluster: &Cluster, pod_ip: &str, port: u16) -> std::io::Result<TcpStream> {
    let ip: IpAddr = pod_ip.parse().map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("the pod IP {pod_ip:?} is not an IP address: {e}"),
        )
    })?;
    let addr = SocketAddr::new(ip, port);
    // In an isolated pod network the pod IP exists only inside it: dial
    // from there, as the kubelet dials inside the pod's namespace.
    let s = if cluster.pod_network().is_isolated() {
        cluster.pod_network().connect(addr)?
    } else {
        TcpStream::connect_timeout(&addr, DIAL_TIMEOUT)?
    };
    s.set_nodelay(true)?;
    Ok(s)
}

/// [`dial_pod`] from async code: the dial runs on a blocking thread and
/// the connection is handed back as a tokio stream.
pub async fn dial_pod_async(
    cluster: std::sync::Arc<Cluster>,
    pod_ip: String,
    port: u16,
) -> std::io::Result<tokio::net::TcpStream> {
    let s = tokio::task::spawn_blocking(move || dial_pod(&cluster, &pod_ip, port))
        .await
        .map_err(std::io::Error::other)??;
    s.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(s)
}

/// The error a forward reports when the pod's port cannot be reached,
/// worded like the container runtime's (kubectl prints it after
/// `an error occurred forwarding L -> P:`).
pub fn forward_error(pod_uid: &str, port: u16, e: &std::io::Error) -> String {
    format!(
        "error forwarding port {port} to pod {pod_uid}, uid : failed to execute portforward in network namespace of the pod: failed to connect to localhost:{port} inside namespace of the pod, IPv4: dial tcp4 127.0.0.1:{port}: connect: {}",
        e.kind()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_errors_name_the_port() {
        let e = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let msg = forward_error("u1", 8080, &e);
        assert!(
            msg.starts_with("error forwarding port 8080 to pod u1"),
            "{msg}"
        );
        assert!(msg.contains("localhost:8080"), "{msg}");
    }
}
