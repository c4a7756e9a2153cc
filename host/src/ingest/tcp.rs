//! The TCP ingest server: one tokio task per device connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use latentcam_wire::{Ack, Bye, ByeReason, Message, frame};
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

/// Accepts connections until `shutdown` turns true; returns after every
/// connection task has finished.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<Context>,
    jobs: mpsc::Sender<Job>,
    mut shutdown: watch::Receiver<bool>,
) {
    let open = Arc::new(AtomicUsize::new(0));
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
                if open.load(Ordering::Relaxed) >= ctx.max_connections {
                    tracing::warn!(%peer, "refusing connection: {} already open", ctx.max_connections);
                    drop(stream);
                    continue;
                }
                open.fetch_add(1, Ordering::Relaxed);
                let (ctx, jobs, shutdown, open) =
                    (Arc::clone(&ctx), jobs.clone(), shutdown.clone(), Arc::clone(&open));
                tasks.spawn(async move {
                    connection(stream, peer.to_string(), &ctx, jobs, shutdown).await;
                    open.fetch_sub(1, Ordering::Relaxed);
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
    let mut conn = Conn::new(peer.clone(), ctx.limits, Instant::now());
    let mut buf = vec![0u8; 16 * 1024];
    let mut steps = Vec::new();
    let mut acked: Option<u64> = None;
    let mut ticker = tokio::time::interval(ACK_INTERVAL);
    tracing::debug!(%peer, "connected");
    let why = loop {
        tokio::select! {
            read = stream.read(&mut buf) => {
                match read {
                    Ok(0) => break "closed by the device".to_owned(),
                    Ok(n) => conn.feed(&buf[..n], Instant::now(), &ctx.manifest, &ctx.registry, &ctx.host_id, &mut steps),
                    Err(e) => break format!("read failed: {e}"),
                }
            }
            _ = ticker.tick() => {
                conn.tick(Instant::now(), &mut steps);
                if let Some(device) = conn.device() {
                    let held = ctx.registry.acked(device);
                    if held > acked && let Some(up_to) = held {
                        acked = held;
                        if let Ok(bytes) = frame::encode_to_vec(&Message::Ack(Ack { up_to })) {
                            steps.push(Step::Reply(bytes));
                        }
                    }
                }
            }
            _ = shutdown.changed() => {
                if let Ok(bytes) = frame::encode_to_vec(&Message::Bye(Bye { reason: ByeReason::Shutdown, detail: "host shutting down" })) {
                    let _ = stream.write_all(&bytes).await;
                }
                break "host shutting down".to_owned();
            }
        }
        let mut close = None;
        for step in steps.drain(..) {
            match step {
                Step::Reply(bytes) => {
                    if let Err(e) = stream.write_all(&bytes).await {
                        close = Some(format!("write failed: {e}"));
                        break;
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
