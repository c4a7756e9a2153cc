//! The UDP ingest: one frame per datagram, one [`Conn`] per sender address.
//!
//! UDP devices are one-way (wire/SPEC.md §2): nothing is sent back, so
//! there is no `Welcome` or `Ack`, and a device repeats `Hello` every 10 s.
//! Datagrams from an address whose `Hello` has not arrived yet are dropped
//! (its state is forgotten on a protocol violation and rebuilt by the next
//! `Hello`). Senders idle for a minute are forgotten; at most
//! `max_connections` are tracked, and at most `Limits::max_per_ip` from one
//! IP address. Without authentication a flood of senders from many
//! addresses can still fill the table; see the README's security section.

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
        if running.context.auth.required() {
            return Err(ServeError::Unauthenticated { transport: "UDP" });
        }
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

/// Senders silent this long are forgotten.
const IDLE: Duration = Duration::from_secs(60);

/// Receives datagrams until `shutdown` turns true.
pub async fn serve(
    socket: UdpSocket,
    ctx: Arc<Context>,
    jobs: mpsc::Sender<Job>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut peers: HashMap<SocketAddr, (Conn, Instant)> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    let mut steps = Vec::new();
    let mut sweep = tokio::time::interval(Duration::from_secs(10));
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
                continue;
            }
            _ = shutdown.changed() => break,
        };
        let now = Instant::now();
        if !peers.contains_key(&peer)
            && (peers.len() >= ctx.max_connections
                || peers.keys().filter(|p| p.ip() == peer.ip()).count() >= ctx.limits.max_per_ip)
        {
            continue;
        }
        let (conn, seen) = peers.entry(peer).or_insert_with(|| {
            let auth = Arc::clone(&ctx.auth);
            (
                Conn::new(format!("udp://{peer}"), ctx.limits, auth, now),
                now,
            )
        });
        *seen = now;
        conn.feed(
            &buf[..n],
            now,
            &ctx.manifest,
            &ctx.registry,
            &ctx.host_id,
            &mut steps,
        );
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
        }
    }
}
