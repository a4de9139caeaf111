//! `toil-agent relay`: the pod that joins agents to a leader the pods cannot
//! route to (a laptop behind NAT), using only the Kubernetes API server.
//!
//! - Agents dial the relay (through a ClusterIP Service) as if it were the
//!   leader. The relay accepts only connections whose first bytes are a
//!   TLS ClientHello record and forwards their bytes unread: the TLS
//!   session runs between the agent and the leader, which the agent pins
//!   by its certificate's fingerprint, so the relay can neither read nor
//!   alter what it carries.
//! - The leader opens a few tunnel connections to the relay's tunnel port
//!   through the API server (`pods/portforward`). Each must first present
//!   the relay token (from a Secret, like an agent's token) or it is
//!   dropped. Agent connections become streams over the live tunnels
//!   ([`crate::tunnel`]), spread over them.
//! - At start the relay probes the leader's direct address (TCP, then a
//!   TLS handshake pinned to the leader's certificate) and prints one line
//!   with the result, which the leader reads from the pod's log to choose
//!   between the direct path and the tunnel.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::transport::{Pin, Target};
use crate::tunnel::{self, Mux};

/// The variable that carries the relay token (from the relay's Secret).
pub const TOKEN_VAR: &str = "TOIL_RELAY_TOKEN";
/// How the relay's probe line starts; the leader looks for it in the log.
pub const PROBE_PREFIX: &str = "toil-relay probe:";
/// How long the probe of the direct address may take.
pub const PROBE_LIMIT: Duration = Duration::from_secs(3);
/// How long an agent connection waits for a tunnel before it is dropped
/// (the agent retries within its lease).
const TUNNEL_WAIT: Duration = Duration::from_secs(15);
/// How long a new connection has to send its first bytes.
const FIRST_BYTES_LIMIT: Duration = Duration::from_secs(10);

/// Arguments of `toil-agent relay` (set by the leader in the relay's Job).
#[derive(Clone, Debug, clap::Args)]
pub struct RelayArgs {
    /// The address agents connect to (the pod's IP, from the downward API;
    /// 0.0.0.0 listens on every address).
    #[arg(long = "bindIp", env = "TOIL_POD_IP", default_value = "0.0.0.0")]
    pub bind_ip: String,
    /// The port agents connect to.
    #[arg(
        long = "agentPort",
        env = "TOIL_RELAY_AGENT_PORT",
        default_value_t = 7070
    )]
    pub agent_port: u16,
    /// Where the leader's tunnels arrive. Every address: a kubelet's
    /// port-forward dials `localhost` inside the pod, some clusters (and
    /// the project's emulator) the pod's IP. Other pods can connect too,
    /// but a tunnel without the relay token is dropped at once.
    #[arg(
        long = "tunnelBind",
        env = "TOIL_RELAY_TUNNEL_BIND",
        default_value = "0.0.0.0:7071"
    )]
    pub tunnel_bind: SocketAddr,
    /// The secret a tunnel must present.
    #[arg(long, env = TOKEN_VAR, hide_env_values = true)]
    pub token: String,
    /// The leader's direct address to probe (`https://HOST:PORT`), if any.
    #[arg(long, env = "TOIL_RELAY_PROBE")]
    pub probe: Option<String>,
    /// The leader certificate's fingerprint, for the probe.
    #[arg(long = "leaderCertSha256", env = "TOIL_LEADER_CERT_SHA256")]
    pub leader_cert_sha256: Option<String>,
}

/// The live tunnels, and a round-robin cursor over them.
#[derive(Default)]
struct Tunnels {
    live: Vec<Mux>,
    next: usize,
}

impl Tunnels {
    fn pick(&mut self) -> Option<Mux> {
        self.live.retain(|m| !m.is_closed());
        if self.live.is_empty() {
            return None;
        }
        self.next = (self.next + 1) % self.live.len();
        Some(self.live[self.next].clone())
    }
}

/// Runs the relay until SIGTERM (or a listener fails).
pub async fn run(args: RelayArgs) -> anyhow::Result<()> {
    if args.token.trim().is_empty() {
        anyhow::bail!("{TOKEN_VAR} is empty: the leader sets it from the relay's Secret");
    }
    let agent_addr = format!("{}:{}", args.bind_ip, args.agent_port);
    let agents = TcpListener::bind(&agent_addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for agents on {agent_addr}: {e}"))?;
    let tunnels_l = TcpListener::bind(args.tunnel_bind).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen for the leader's tunnels on {}: {e}",
            args.tunnel_bind
        )
    })?;
    println!(
        "toil-relay: agents on {}, tunnels on {}",
        agents.local_addr()?,
        tunnels_l.local_addr()?
    );
    let tunnels = Arc::new(Mutex::new(Tunnels::default()));
    let (live_tx, live_rx) = watch::channel(0usize);
    let live_tx = Arc::new(live_tx);

    if let Some(addr) = args.probe.clone() {
        let pin = args.leader_cert_sha256.clone();
        tokio::spawn(async move {
            let line = match probe(&addr, pin.as_deref()).await {
                Ok(()) => format!("{PROBE_PREFIX} reachable {addr}"),
                Err(e) => format!("{PROBE_PREFIX} unreachable {addr}: {e}"),
            };
            println!("{line}");
        });
    }

    let tunnel_task = {
        let tunnels = tunnels.clone();
        let token = args.token.clone();
        let live_tx = live_tx.clone();
        async move {
            loop {
                let (mut conn, peer) = match tunnels_l.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a tunnel failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = conn.set_nodelay(true);
                let tunnels = tunnels.clone();
                let token = token.clone();
                let live_tx = live_tx.clone();
                tokio::spawn(async move {
                    let shook = tokio::time::timeout(
                        FIRST_BYTES_LIMIT,
                        tunnel::accept_handshake(&mut conn, &token),
                    )
                    .await;
                    match shook {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::warn!(%peer, error = %e, "tunnel refused");
                            return;
                        }
                        Err(_) => {
                            tracing::warn!(%peer, "tunnel refused: no handshake in time");
                            return;
                        }
                    }
                    let (mux, mut inbound) = Mux::start(conn);
                    let count = {
                        let mut t = tunnels.lock().unwrap_or_else(|p| p.into_inner());
                        t.live.push(mux.clone());
                        t.live.retain(|m| !m.is_closed());
                        t.live.len()
                    };
                    tracing::info!(%peer, tunnels = count, "tunnel up");
                    live_tx.send_replace(count);
                    // The leader opens no streams; drain until the end.
                    while inbound.recv().await.is_some() {}
                    mux.closed().await;
                    let count = {
                        let mut t = tunnels.lock().unwrap_or_else(|p| p.into_inner());
                        t.live.retain(|m| !m.is_closed());
                        t.live.len()
                    };
                    tracing::info!(%peer, tunnels = count, "tunnel down");
                    live_tx.send_replace(count);
                });
            }
        }
    };

    let agent_task = async move {
        loop {
            let (conn, peer) = match agents.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting an agent failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = conn.set_nodelay(true);
            let tunnels = tunnels.clone();
            let live = live_rx.clone();
            tokio::spawn(async move {
                if let Err(e) = carry(conn, peer, tunnels, live).await {
                    tracing::info!(%peer, "agent connection dropped: {e}");
                }
            });
        }
    };

    tokio::select! {
        _ = tunnel_task => Ok(()),
        _ = agent_task => Ok(()),
        s = crate::signals::stop_signal() => {
            let Ok(s) = s else { return Ok(()) };
            println!("toil-relay: {}, stopping", s.describe());
            // Never end as a success: the relay's Job would count a pod
            // that exits 0 (deleted or evicted, hence SIGTERM) as done and
            // make no replacement. 128 + the signal, as a shell reports it.
            let code = match s {
                crate::signals::StopSignal::Interrupt => 130,
                crate::signals::StopSignal::Terminate => 143,
            };
            std::process::exit(code)
        }
    }
}

/// Checks the first bytes of an agent connection and carries it over a tunnel.
async fn carry(
    mut conn: TcpStream,
    peer: SocketAddr,
    tunnels: Arc<Mutex<Tunnels>>,
    mut live: watch::Receiver<usize>,
) -> Result<(), String> {
    let mut head = [0u8; 5];
    let peeked = tokio::time::timeout(FIRST_BYTES_LIMIT, async {
        let mut got = 0;
        while got < head.len() {
            let n = conn.peek(&mut head).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed before sending anything".to_string());
            }
            got = n;
            if got < head.len() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        Ok(())
    })
    .await
    .map_err(|_| "sent nothing in time".to_string())?;
    peeked?;
    if !is_client_hello(&head) {
        return Err(format!(
            "not a TLS ClientHello (first bytes {head:02x?}); the relay carries only TLS to the leader"
        ));
    }
    let deadline = tokio::time::Instant::now() + TUNNEL_WAIT;
    let mux = loop {
        let picked = tunnels.lock().unwrap_or_else(|p| p.into_inner()).pick();
        if let Some(m) = picked {
            break m;
        }
        tokio::select! {
            r = live.changed() => if r.is_err() { return Err("the relay is stopping".into()) },
            _ = tokio::time::sleep_until(deadline) => {
                return Err("no tunnel from the leader is up".into());
            }
        }
    };
    let mut stream = mux
        .open(&peer.to_string())
        .await
        .map_err(|e| format!("opening a tunnel stream: {e}"))?;
    let r = tokio::io::copy_bidirectional(&mut conn, &mut stream).await;
    let _ = stream.shutdown().await;
    r.map(|_| ()).map_err(|e| e.to_string())
}

/// True when `head` starts a TLS handshake record (content type 22,
/// version 3.x, a length a ClientHello can have).
pub fn is_client_hello(head: &[u8; 5]) -> bool {
    let len = u16::from_be_bytes([head[3], head[4]]);
    head[0] == 0x16 && head[1] == 0x03 && head[2] <= 0x04 && (4..=16384 + 2048).contains(&len)
}

/// Dials `address` and runs a TLS handshake pinned to the leader's
/// certificate, within [`PROBE_LIMIT`].
pub async fn probe(address: &str, pin: Option<&str>) -> Result<(), String> {
    let target = Target::parse(address, pin)?;
    let Target::Tls { authority, pin } = target else {
        return Err(format!("{address} is not an https:// address"));
    };
    tokio::time::timeout(PROBE_LIMIT, handshake(&authority, pin))
        .await
        .map_err(|_| format!("no answer within {}s", PROBE_LIMIT.as_secs()))?
}

async fn handshake(authority: &str, pin: Pin) -> Result<(), String> {
    let tcp = TcpStream::connect(authority)
        .await
        .map_err(|e| e.to_string())?;
    let config = crate::transport::client_config(pin)?;
    let name = rustls::pki_types::ServerName::try_from(crate::transport::TLS_SERVER_NAME)
        .map_err(|e| e.to_string())?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let _ = tls.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tls_handshake_records_pass() {
        assert!(is_client_hello(&[0x16, 0x03, 0x01, 0x02, 0x00]));
        assert!(!is_client_hello(b"GET /"));
        assert!(!is_client_hello(b"PRI *"));
        assert!(!is_client_hello(&[0x17, 0x03, 0x03, 0x00, 0x10]));
        assert!(!is_client_hello(&[0x16, 0x03, 0x01, 0xff, 0xff]));
    }
}
