//! A recording TCP relay: listens on 127.0.0.1, forwards every connection to
//! a target address, and keeps a copy of the bytes each way, per
//! connection. Tests put it between a client and a server to see what
//! really crosses the wire: the requests an SDK sends, or what a sniffer on
//! the network path would learn.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// The bytes of one relayed connection.
#[derive(Clone, Debug, Default)]
pub struct Recorded {
    /// Client to server.
    pub up: Vec<u8>,
    /// Server to client.
    pub down: Vec<u8>,
}

type Shared = Arc<Mutex<Recorded>>;

/// A running relay. It stops accepting when dropped (its threads end with
/// their connections).
pub struct Relay {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<Shared>>>,
    stop: Arc<AtomicBool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Relay {
    /// Starts a relay to `target`.
    pub fn start(target: SocketAddr) -> std::io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let conns: Arc<Mutex<Vec<Shared>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (all, halt) = (conns.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if halt.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let rec: Shared = Arc::default();
                lock(&all).push(rec.clone());
                pump(&client, &server, rec.clone(), |r| &mut r.up);
                pump(&server, &client, rec, |r| &mut r.down);
            }
        });
        Ok(Relay { addr, conns, stop })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every connection so far, in the order they were accepted.
    pub fn connections(&self) -> Vec<Recorded> {
        lock(&self.conns).iter().map(|r| lock(r).clone()).collect()
    }

    /// Every byte clients sent so far, connection after connection.
    pub fn sent(&self) -> Vec<u8> {
        self.connections().into_iter().flat_map(|r| r.up).collect()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Copies `from` to `to` on a thread, appending what it copies to the side
/// of `rec` that `side` picks.
fn pump(from: &TcpStream, to: &TcpStream, rec: Shared, side: fn(&mut Recorded) -> &mut Vec<u8>) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    side(&mut lock(&rec)).extend_from_slice(&buf[..n]);
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
