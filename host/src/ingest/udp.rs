//! The UDP ingest: one frame per datagram, one [`Conn`] per sender address.
//!
//! UDP devices are one-way (wire/SPEC.md §2): nothing is sent back, so
//! there is no `Welcome` or `Ack`, and a device repeats `Hello` every 10 s
//! (an authenticating device follows each with its `NoiseK` `Handshake`
//! and seals everything else, see [`Conn::one_way`]). Datagrams from an
//! address whose `Hello` has not arrived yet are dropped (its state is
//! forgotten on a protocol violation and rebuilt by the next `Hello`).
//!
//! A sender gets one of the `max_connections` slots (at most
//! `Limits::max_per_ip` per IP address) only once it is admitted: when
//! authentication is required, only after a valid handshake with a
//! registered key. Until then it waits in a small table of its own
//! ([`MAX_PENDING`], oldest pushed out first), so anonymous floods cannot
//! lock out a registered device. Admitted senders idle for a minute are
//! forgotten. A host that admits unauthenticated devices can still have
//! its slots filled by a flood of plain `Hello`s; see the README's
//! security section.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use super::{Conn, Context, Ingest, IngestKind, Job, Running, ServeError, Started, Step};

/// The UDP ingest: receives on `address` (`host:port`; port 0 picks one).
#[derive(Debug, Clone)]
pub struct UdpIngest {
    /// Where to receive.
    pub address: String,
}

impl Ingest for UdpIngest {
    fn kind(&self) -> IngestKind {
        IngestKind::Udp
    }

    fn describe(&self) -> String {
        format!("udp {}", self.address)
    }

    fn start(self: Box<Self>, running: Running) -> Result<Started, ServeError> {
        super::check_listen_address(&self.address)?;
        let bind = |source| ServeError::Bind {
            address: self.address.clone(),
            source,
        };
        let std_socket = std::net::UdpSocket::bind(&self.address).map_err(bind)?;
        std_socket.set_nonblocking(true).map_err(bind)?;
        let socket = UdpSocket::from_std(std_socket).map_err(bind)?;
        let local = socket.local_addr().map_err(bind)?;
        Ok(Started {
            local: Some(local),
            task: tokio::spawn(serve(
                socket,
                running.context,
                running.jobs,
                running.shutdown,
            )),
        })
    }
}

/// Admitted senders silent this long are forgotten.
const IDLE: Duration = Duration::from_secs(60);

/// Senders not admitted yet (no `Hello` accepted, or one still waiting for
/// its `Handshake`) are forgotten after this long ...
const PENDING_IDLE: Duration = Duration::from_secs(5);

/// ... and at most this many are tracked: a new one pushes out the one
/// heard from least recently, so a flood of anonymous senders costs
/// bounded memory and never takes an admitted device's slot.
pub const MAX_PENDING: usize = 256;

type Peers = HashMap<SocketAddr, (Conn, Instant)>;

/// Receives datagrams until `shutdown` turns true.
pub async fn serve(
    socket: UdpSocket,
    ctx: Arc<Context>,
    jobs: mpsc::Sender<Job>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Admitted senders: at most `max_connections`, `max_per_ip` per address.
    let mut peers: Peers = HashMap::new();
    let mut pending: Peers = HashMap::new();
    let mut buf = vec![0u8; 65536];
    let mut steps = Vec::new();
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    loop {
        let (n, peer) = tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("UDP receive failed: {e}");
                    continue;
                }
            },
            _ = sweep.tick() => {
                let now = Instant::now();
                peers.retain(|_, (_, seen)| now.duration_since(*seen) < IDLE);
                pending.retain(|_, (_, seen)| now.duration_since(*seen) < PENDING_IDLE);
                continue;
            }
            _ = shutdown.changed() => break,
        };
        let now = Instant::now();
        let admitted = peers.contains_key(&peer);
        let table = if admitted {
            &mut peers
        } else {
            if !pending.contains_key(&peer) && pending.len() >= MAX_PENDING {
                let oldest = pending
                    .iter()
                    .min_by_key(|(_, (_, seen))| *seen)
                    .map(|(address, _)| *address);
                if let Some(oldest) = oldest {
                    pending.remove(&oldest);
                }
            }
            &mut pending
        };
        let (conn, seen) = table.entry(peer).or_insert_with(|| {
            let auth = Arc::clone(&ctx.auth);
            (
                Conn::new(format!("udp://{peer}"), ctx.limits, auth, now).one_way(),
                now,
            )
        });
        *seen = now;
        conn.feed(&buf[..n], now, ctx.env(), &mut steps);
        let promote = !admitted && conn.device().is_some();
        let mut forget = false;
        for step in steps.drain(..) {
            match step {
                // One-way: the device does not listen.
                Step::Reply(_) => {}
                Step::Job(job) => {
                    if jobs.send(job).await.is_err() {
                        return;
                    }
                }
                Step::Close(why) => {
                    tracing::debug!("{why}");
                    forget = true;
                }
            }
        }
        if forget {
            peers.remove(&peer);
            pending.remove(&peer);
        } else if promote {
            let Some(entry) = pending.remove(&peer) else {
                continue;
            };
            let from_ip = peers.keys().filter(|p| p.ip() == peer.ip()).count();
            if peers.len() < ctx.max_connections && from_ip < ctx.limits.max_per_ip {
                peers.insert(peer, entry);
            } else {
                tracing::warn!(
                    "UDP sender {peer} ({:?}) dropped: {} senders tracked ({} from its address)",
                    entry.0.device(),
                    peers.len(),
                    from_ip
                );
            }
        }
    }
}
