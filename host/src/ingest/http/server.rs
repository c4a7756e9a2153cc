//! The HTTP API's accept loop: at most [`HttpLimits::max_connections`]
//! connections at once (more are closed at accept and counted), and a
//! deadline for every request head, so idle or stalled clients cannot hold
//! file descriptors the device ingests need.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use super::{HttpLimits, HttpStats, Tls};

/// How long open connections get to finish their request at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How long the accept loop pauses after a failed accept (out of file
/// descriptors, say) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `app` on `listener` until `shutdown` turns true, then gives open
/// connections [`SHUTDOWN_GRACE`] to finish.
pub(super) async fn run(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    tls: Option<Tls>,
    stats: Arc<HttpStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut builder = http1::Builder::new();
    // The header timer starts whenever a connection waits for a request
    // head: at accept and after every response. It is also the keep-alive
    // idle timeout.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let builder = Arc::new(builder);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("HTTP API: accept failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            // Closed at once: the descriptor goes back before the next accept.
            drop(stream);
            let refused = stats.refused.fetch_add(1, Ordering::Relaxed) + 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    %peer,
                    refused,
                    "HTTP API: {} connections open, the most allowed; closing new ones (see --http-max-connections)",
                    limits.max_connections
                );
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (builder, app, stats, shutdown) = (
            Arc::clone(&builder),
            app.clone(),
            Arc::clone(&stats),
            shutdown.clone(),
        );
        let tls = tls.clone();
        tokio::spawn(async move {
            stats.open.fetch_add(1, Ordering::Relaxed);
            match tls {
                None => connection(stream, &builder, app, &stats, shutdown).await,
                // The handshake counts against the time for the request head.
                Some(tls) => {
                    match tokio::time::timeout(limits.header_timeout, tls.accept(stream)).await {
                        Ok(Ok(stream)) => connection(stream, &builder, app, &stats, shutdown).await,
                        Ok(Err(e)) => tracing::debug!(%peer, "HTTP API: TLS handshake failed: {e}"),
                        Err(_) => {
                            stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            stats.open.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        });
    }
    // Every connection holds a slot until it ends.
    let all = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(all)).await;
}

/// Serves one connection until it closes, times out, or the host shuts
/// down (then the request in progress may finish).
async fn connection<I>(
    io: I,
    builder: &http1::Builder,
    app: Router,
    stats: &HttpStats,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await {
                Ok(result) => result,
                Err(_) => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        if e.is_timeout() {
            stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
        } else {
            tracing::debug!("HTTP API connection: {e}");
        }
    }
}
