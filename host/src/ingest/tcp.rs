//! The TCP ingest server: one tokio task per device connection.
//!
//! Bounded whatever peers do: at most `max_connections` at once and
//! `Limits::max_per_ip` per address (more are answered `Welcome { Busy }`
//! and closed, a few at a time, beyond that dropped); a connection must
//! say `Hello` within `Limits::hello_timeout`, then send something at least
//! every `Limits::idle_timeout`, and must read what the host writes within
//! [`WRITE_TIMEOUT`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use latentcam_wire::{Bye, ByeReason, Message, WelcomeStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::{Conn, Context, Ingest, IngestKind, Job, Running, ServeError, Started, Step};

/// The TCP ingest: listens on `address` (`host:port`; port 0 picks one).
#[derive(Debug, Clone)]
pub struct TcpIngest {
    /// Where to listen.
    pub address: String,
}

impl Ingest for TcpIngest {
    fn kind(&self) -> IngestKind {
        IngestKind::Tcp
    }

    fn describe(&self) -> String {
        format!("tcp {}", self.address)
    }

    fn start(self: Box<Self>, running: Running) -> Result<Started, ServeError> {
        super::check_listen_address(&self.address)?;
        let bind = |source| ServeError::Bind {
            address: self.address.clone(),
            source,
        };
        let std_listener = std::net::TcpListener::bind(&self.address).map_err(bind)?;
        std_listener.set_nonblocking(true).map_err(bind)?;
        let listener = TcpListener::from_std(std_listener).map_err(bind)?;
        let local = listener.local_addr().map_err(bind)?;
        Ok(Started {
            local: Some(local),
            task: tokio::spawn(serve(
                listener,
                running.context,
                running.jobs,
                running.shutdown,
            )),
        })
    }
}

/// How often a connection checks for newly processed latents to ack.
const ACK_INTERVAL: Duration = Duration::from_millis(50);

/// A device that does not take the host's bytes for this long is closed.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Refusals being written at once; connections beyond are dropped unanswered.
const MAX_REFUSING: usize = 64;

/// Open connections, in all and per IP address.
#[derive(Default)]
struct Slots {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl Slots {
    /// Takes a slot, or says why there is none.
    fn take(&mut self, ip: IpAddr, max_total: usize, max_per_ip: usize) -> Result<(), String> {
        let here = self.per_ip.get(&ip).copied().unwrap_or(0);
        if self.total >= max_total {
            return Err(format!("the host serves {max_total} connections already"));
        }
        if here >= max_per_ip {
            return Err(format!(
                "{max_per_ip} connections from {ip} already (the per-address limit)"
            ));
        }
        self.total += 1;
        self.per_ip.insert(ip, here + 1);
        Ok(())
    }

    fn give_back(&mut self, ip: IpAddr) {
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }
}

/// Answers a connection the host has no room for with `Welcome { Busy }`
/// (the edge logs the reason and retries later) and closes it.
async fn refuse(mut stream: TcpStream, reason: String, host_id: String) {
    let bytes = super::conn::welcome(WelcomeStatus::Busy, &reason, &host_id, None);
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        // Take the device's Hello first (it sends it at once): closing a
        // socket with unread bytes resets it, and a reset can discard the
        // Welcome before the device reads it.
        let mut hello = [0u8; 1024];
        let _ = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut hello)).await;
        stream.write_all(&bytes).await?;
        stream.shutdown().await
    })
    .await;
}

/// Accepts connections until `shutdown` turns true; returns after every
/// connection task has finished.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<Context>,
    jobs: mpsc::Sender<Job>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Mutex::new(Slots::default()));
    let refusing = Arc::new(tokio::sync::Semaphore::new(MAX_REFUSING));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let taken = slots
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take(peer.ip(), ctx.max_connections, ctx.limits.max_per_ip);
                if let Err(why) = taken {
                    tracing::debug!(%peer, "refusing connection: {why}");
                    if let Ok(permit) = Arc::clone(&refusing).try_acquire_owned() {
                        let host_id = ctx.host_id.clone();
                        tokio::spawn(async move {
                            refuse(stream, why, host_id).await;
                            drop(permit);
                        });
                    }
                    continue;
                }
                let (ctx, jobs, shutdown, slots) =
                    (Arc::clone(&ctx), jobs.clone(), shutdown.clone(), Arc::clone(&slots));
                tasks.spawn(async move {
                    connection(stream, peer.to_string(), &ctx, jobs, shutdown).await;
                    slots.lock().unwrap_or_else(PoisonError::into_inner).give_back(peer.ip());
                });
            }
            _ = shutdown.changed() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    while tasks.join_next().await.is_some() {}
}

async fn connection(
    mut stream: TcpStream,
    peer: String,
    ctx: &Context,
    jobs: mpsc::Sender<Job>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let mut conn = Conn::new(
        peer.clone(),
        ctx.limits,
        Arc::clone(&ctx.auth),
        Instant::now(),
    );
    let mut buf = vec![0u8; 16 * 1024];
    let mut steps = Vec::new();
    let mut ticker = tokio::time::interval(ACK_INTERVAL);
    tracing::debug!(%peer, "connected");
    let why = loop {
        tokio::select! {
            read = stream.read(&mut buf) => {
                match read {
                    Ok(0) => break "closed by the device".to_owned(),
                    Ok(n) => conn.feed(&buf[..n], Instant::now(), ctx.env(), &mut steps),
                    Err(e) => break format!("read failed: {e}"),
                }
            }
            _ = ticker.tick() => conn.tick(Instant::now(), &ctx.registry, &mut steps),
            _ = shutdown.changed() => {
                let bytes = conn.encode(&Message::Bye(Bye { reason: ByeReason::Shutdown, detail: "host shutting down" }));
                let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&bytes)).await;
                break "host shutting down".to_owned();
            }
        }
        let mut close = None;
        for step in steps.drain(..) {
            match step {
                Step::Reply(bytes) => {
                    match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&bytes)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            close = Some(format!("write failed: {e}"));
                            break;
                        }
                        Err(_) => {
                            close = Some(format!("the device read nothing for {WRITE_TIMEOUT:?}"));
                            break;
                        }
                    }
                }
                // Backpressure: a full queue slows this connection's reads,
                // and TCP flow control slows the device.
                Step::Job(job) => {
                    if jobs.send(job).await.is_err() {
                        close = Some("head worker stopped".to_owned());
                        break;
                    }
                }
                Step::Close(why) => close = Some(why),
            }
        }
        if let Some(why) = close {
            break why;
        }
    };
    let _ = stream.shutdown().await;
    match conn.device() {
        Some(device) => tracing::info!(%peer, %device, "connection closed: {why}"),
        None => tracing::info!(%peer, "connection closed before Hello: {why}"),
    }
}
