//! The pod network: where pod processes, Service listeners and the
//! in-cluster API endpoint live, and the addresses pods get.
//!
//! Two modes ([`PodNetworkMode`]):
//! - `host` (the default): pods share the host's network, every pod's IP
//!   is `127.0.0.1`, and pods reach the API server at the host's
//!   `127.0.0.1:PORT`, as before.
//! - `isolated`: the emulator makes ONE network namespace for all pods, with
//!   only a loopback interface. Pod processes enter it before exec, so a
//!   leader listening on the host's `127.0.0.1:PORT` is unreachable from
//!   pods (connection refused), as an address behind NAT is on a real
//!   cluster. Each pod gets its own IP, `127.10.x.y`, released when its
//!   sandbox ends; the API server is served inside the namespace at
//!   [`IN_CLUSTER_API`] (`127.96.0.1:443`, the `kubernetes` Service's
//!   clusterIP), which is what `KUBERNETES_SERVICE_HOST`/`_PORT` name.
//!
//! All pods share the namespace, so two pods listening on `0.0.0.0` with
//! the same port collide (bind to `status.podIP` instead); pods reach each
//! other on their pod IPs, and the emulator's own code reaches them with
//! [`PodNetwork::connect`] and [`PodNetwork::bind`], which make their
//! sockets inside the namespace. All traffic stays on loopback addresses.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::sync::mpsc;

use super::cluster::lock;

/// The in-cluster address of the API server in isolated mode: the first
/// address of the Service range, as `10.96.0.1:443` is on kubeadm clusters.
pub const IN_CLUSTER_API: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(127, 96, 0, 1), 443);

/// First address of the pod range (`127.10.0.0/16`).
const POD_RANGE: [u8; 2] = [127, 10];

/// How pods are networked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PodNetworkMode {
    /// Pods share the host's network; every pod IP is `127.0.0.1`.
    #[default]
    Host,
    /// One network namespace for all pods, with only a loopback interface.
    Isolated,
}

impl std::str::FromStr for PodNetworkMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "host" => Ok(Self::Host),
            "isolated" => Ok(Self::Isolated),
            other => Err(format!(
                "unknown pod network {other:?}: use `host` (pods share the host's network) or `isolated` (one network namespace for all pods)"
            )),
        }
    }
}

impl std::fmt::Display for PodNetworkMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Host => "host",
            Self::Isolated => "isolated",
        })
    }
}

/// A request to the namespace thread: make a TCP socket there.
type SocketRequest = mpsc::Sender<io::Result<OwnedFd>>;

/// The namespace and the thread that makes sockets in it.
#[derive(Debug)]
struct Namespace {
    /// `/proc/thread-self/ns/net` of the namespace thread (keeps the
    /// namespace alive; children `setns` to it).
    fd: OwnedFd,
    /// Asks the namespace thread for a socket.
    requests: Mutex<mpsc::Sender<SocketRequest>>,
}

/// Pod IPs handed out, by pod uid.
#[derive(Debug, Default)]
struct PodIps {
    by_uid: HashMap<String, Ipv4Addr>,
    used: std::collections::HashSet<Ipv4Addr>,
    /// Next-fit cursor (offset into the range), so a released address is
    /// not handed out again at once.
    next: u32,
}

/// The pod network of one emulated cluster (see the module docs).
#[derive(Debug)]
pub struct PodNetwork {
    mode: PodNetworkMode,
    ns: Option<Namespace>,
    ips: Mutex<PodIps>,
    /// Held across Service admission and storage, so two creates cannot
    /// take the same clusterIP.
    pub(crate) cluster_ip_lock: Mutex<()>,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Brings the namespace's `lo` up (a new namespace has it down).
fn loopback_up() -> io::Result<()> {
    // SAFETY: plain syscalls on a socket we own and a zeroed ifreq.
    unsafe {
        let fd = OwnedFd::from_raw_fd(cvt(libc::socket(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            0,
        ))?);
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        cvt(libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req))?;
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        cvt(libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS, &req))?;
    }
    Ok(())
}

fn new_tcp_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) returns a fresh descriptor we take ownership of.
    unsafe {
        let fd = cvt(libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
        ))?;
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// The namespace thread: unshares, reports the namespace (or why not),
/// then makes sockets on request until the network is dropped.
fn namespace_thread(
    ready: mpsc::Sender<io::Result<OwnedFd>>,
    requests: mpsc::Receiver<SocketRequest>,
) {
    let made = (|| {
        // SAFETY: unshare affects only this thread's network namespace.
        cvt(unsafe { libc::unshare(libc::CLONE_NEWNET) })?;
        loopback_up()?;
        let f = std::fs::File::open("/proc/thread-self/ns/net")?;
        Ok(OwnedFd::from(f))
    })();
    let failed = made.is_err();
    if ready.send(made).is_err() || failed {
        return;
    }
    for reply in requests {
        let _ = reply.send(new_tcp_socket());
    }
}

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn v4(addr: SocketAddr) -> io::Result<SocketAddrV4> {
    match addr {
        SocketAddr::V4(a) => Ok(a),
        SocketAddr::V6(a) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{a}: the emulator's pod network is IPv4 only (127.0.0.0/8)"),
        )),
    }
}

impl PodNetwork {
    /// The host network: plain `connect`/`bind`, pod IP `127.0.0.1`.
    pub fn host() -> Self {
        Self {
            mode: PodNetworkMode::Host,
            ns: None,
            ips: Mutex::new(PodIps::default()),
            cluster_ip_lock: Mutex::new(()),
        }
    }

    /// Sets up a network of the given mode (isolated: makes the namespace,
    /// which needs root or CAP_SYS_ADMIN).
    pub fn new(mode: PodNetworkMode) -> Result<Self, String> {
        if mode == PodNetworkMode::Host {
            return Ok(Self::host());
        }
        let (ready_tx, ready_rx) = mpsc::channel();
        let (req_tx, req_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("k8s-emulator-netns".into())
            .spawn(move || namespace_thread(ready_tx, req_rx))
            .map_err(|e| format!("cannot start the pod network thread: {e}"))?;
        let fd = match ready_rx.recv() {
            Ok(Ok(fd)) => fd,
            Ok(Err(e)) => {
                return Err(format!(
                    "cannot make the isolated pod network (unshare(CLONE_NEWNET) and `lo` up): {e}; it needs root or CAP_SYS_ADMIN, or use the host pod network"
                ));
            }
            Err(_) => return Err("the pod network thread died while starting".into()),
        };
        Ok(Self {
            mode,
            ns: Some(Namespace {
                fd,
                requests: Mutex::new(req_tx),
            }),
            ips: Mutex::new(PodIps::default()),
            cluster_ip_lock: Mutex::new(()),
        })
    }

    /// The mode.
    pub fn mode(&self) -> PodNetworkMode {
        self.mode
    }

    /// Whether pods have a network of their own.
    pub fn is_isolated(&self) -> bool {
        self.ns.is_some()
    }

    /// The namespace's descriptor, for a child to `setns` into before exec
    /// (see [`enter_in_child`]); `None` on the host network.
    pub fn netns_fd(&self) -> Option<RawFd> {
        self.ns.as_ref().map(|n| n.fd.as_raw_fd())
    }

    /// A fresh TCP socket inside the pod network.
    fn socket(&self) -> io::Result<OwnedFd> {
        let Some(ns) = &self.ns else {
            return new_tcp_socket();
        };
        let (tx, rx) = mpsc::channel();
        lock(&ns.requests).send(tx).map_err(|_| {
            io::Error::new(io::ErrorKind::BrokenPipe, "the pod network thread is gone")
        })?;
        rx.recv().map_err(|_| {
            io::Error::new(io::ErrorKind::BrokenPipe, "the pod network thread is gone")
        })?
    }

    /// Connects to `addr` from inside the pod network (blocking; loopback
    /// connects finish at once). On the host network, a plain connect.
    pub fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        if self.ns.is_none() {
            return TcpStream::connect(addr);
        }
        let a = sockaddr(v4(addr)?);
        let fd = self.socket()?;
        loop {
            // SAFETY: connect(2) on our socket with a valid sockaddr_in.
            let r = unsafe {
                libc::connect(
                    fd.as_raw_fd(),
                    (&a as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            match cvt(r) {
                Ok(_) => return Ok(TcpStream::from(fd)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Like [`PodNetwork::connect`], without blocking the runtime (a full
    /// listen backlog makes a connect wait): the socket is made inside the
    /// pod network, the connect is tokio's.
    pub async fn connect_async(&self, addr: SocketAddr) -> io::Result<tokio::net::TcpStream> {
        if self.ns.is_none() {
            return tokio::net::TcpStream::connect(addr).await;
        }
        v4(addr)?;
        let std_socket = TcpStream::from(self.socket()?);
        std_socket.set_nonblocking(true)?;
        tokio::net::TcpSocket::from_std_stream(std_socket)
            .connect(addr)
            .await
    }

    /// Listens on `addr` inside the pod network (`SO_REUSEADDR`, like
    /// `std`'s bind). On the host network, a plain bind.
    pub fn bind(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        if self.ns.is_none() {
            return TcpListener::bind(addr);
        }
        let a = sockaddr(v4(addr)?);
        let fd = self.socket()?;
        let one: libc::c_int = 1;
        // SAFETY: setsockopt/bind/listen on our socket with valid pointers.
        unsafe {
            cvt(libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ))?;
            cvt(libc::bind(
                fd.as_raw_fd(),
                (&a as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ))?;
            cvt(libc::listen(fd.as_raw_fd(), 1024))?;
        }
        Ok(TcpListener::from(fd))
    }

    /// The IP of a pod (allocated on first call, the same afterwards):
    /// `127.10.x.y` when isolated, `127.0.0.1` on the host network.
    pub fn assign_pod_ip(&self, uid: &str) -> Ipv4Addr {
        if self.ns.is_none() {
            return Ipv4Addr::LOCALHOST;
        }
        let mut ips = lock(&self.ips);
        if let Some(ip) = ips.by_uid.get(uid) {
            return *ip;
        }
        // Offsets 1..=65534 of 127.10.0.0/16.
        for _ in 0..65534u32 {
            let off = ips.next % 65534 + 1;
            ips.next = off;
            let ip = Ipv4Addr::new(POD_RANGE[0], POD_RANGE[1], (off >> 8) as u8, off as u8);
            if ips.used.insert(ip) {
                ips.by_uid.insert(uid.to_string(), ip);
                return ip;
            }
        }
        // 65,534 live pods: share the last address rather than fail.
        tracing::warn!("the pod IP range 127.10.0.0/16 is exhausted");
        Ipv4Addr::new(POD_RANGE[0], POD_RANGE[1], 255, 254)
    }

    /// Releases a pod's IP (its sandbox is gone).
    pub fn release_pod_ip(&self, uid: &str) {
        let mut ips = lock(&self.ips);
        if let Some(ip) = ips.by_uid.remove(uid) {
            ips.used.remove(&ip);
        }
    }

    /// Where pods reach the API server: [`IN_CLUSTER_API`] when isolated,
    /// else `None` (the host's HTTPS address).
    pub fn in_cluster_api(&self) -> Option<SocketAddrV4> {
        self.ns.as_ref().map(|_| IN_CLUSTER_API)
    }
}

/// At start, after the host listeners: the `kubernetes` Service, and in
/// an isolated network the API served at [`IN_CLUSTER_API`] inside it (a
/// socket made in the namespace stays there; the same handler serves it).
pub fn start_in_cluster_api(
    cluster: &std::sync::Arc<super::cluster::Cluster>,
    tls: std::sync::Arc<rustls::ServerConfig>,
) -> Result<(), super::error::EmulatorError> {
    let https_port = cluster.https_port.get().copied().unwrap_or(443);
    super::services::create_kubernetes_service(cluster, https_port);
    let net = cluster.pod_network();
    let Some(addr) = net.in_cluster_api() else {
        return Ok(());
    };
    let bound = net
        .bind(SocketAddr::V4(addr))
        .and_then(|l| {
            l.set_nonblocking(true)?;
            Ok(l)
        })
        .and_then(tokio::net::TcpListener::from_std)
        .map_err(|e| {
            super::error::EmulatorError::io(
                format!("cannot listen on {addr} inside the pod network for the in-cluster API"),
                e,
            )
        })?;
    super::server::serve_https(cluster.clone(), bound, tls);
    Ok(())
}

/// Moves the calling process into the pod network namespace `fd`; for a
/// child between fork and exec, before it drops capabilities.
///
/// # Safety
/// Async-signal-safe (one syscall); `fd` must be [`PodNetwork::netns_fd`]
/// of a network that outlives the call.
pub unsafe fn enter_in_child(fd: RawFd) -> io::Result<()> {
    // SAFETY: setns(2) on a namespace descriptor the caller keeps open.
    cvt(unsafe { libc::setns(fd, libc::CLONE_NEWNET) }).map(|_| ())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_modes() {
        assert_eq!("host".parse(), Ok(PodNetworkMode::Host));
        assert_eq!("isolated".parse(), Ok(PodNetworkMode::Isolated));
        let err = "bridge".parse::<PodNetworkMode>().unwrap_err();
        assert!(
            err.contains("`host`") && err.contains("`isolated`"),
            "{err}"
        );
    }

    #[test]
    fn host_mode_is_plain_sockets_and_localhost() {
        let net = PodNetwork::host();
        let l = net.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        net.connect(addr).unwrap();
        assert_eq!(net.assign_pod_ip("u1"), Ipv4Addr::LOCALHOST);
        assert!(net.netns_fd().is_none());
    }
}
