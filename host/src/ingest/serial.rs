//! The serial ingest: one device on a serial line (linux-embedded-hal's
//! serialport), served by a blocking thread that drives a [`Conn`] and
//! writes `Welcome` and `Ack`s back on the line.

use std::io::{ErrorKind, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use linux_embedded_hal::serialport;
use tokio::sync::{mpsc, watch};

use super::{Conn, Context, Ingest, IngestKind, Job, Running, ServeError, Started, Step};

/// Settings of a serial ingest.
#[derive(Debug, Clone)]
pub struct SerialIngest {
    /// The device, e.g. `/dev/ttyUSB0`.
    pub path: PathBuf,
    /// Line speed.
    pub baud: u32,
}

impl Ingest for SerialIngest {
    fn kind(&self) -> IngestKind {
        IngestKind::Serial
    }

    fn describe(&self) -> String {
        format!("serial {} at {} baud", self.path.display(), self.baud)
    }

    fn start(self: Box<Self>, running: Running) -> Result<Started, ServeError> {
        let port = open(&self)?;
        let name = format!("serial:{}", self.path.display());
        Ok(Started {
            local: None,
            task: tokio::task::spawn_blocking(move || {
                serve(port, name, running.context, running.jobs, running.shutdown)
            }),
        })
    }
}

/// Why the serial line could not be served.
#[derive(Debug, thiserror::Error)]
#[error(
    "serial ingest {path}: {message} (check the device path, the baud rate and membership of the dialout group)"
)]
pub struct SerialError {
    /// The device.
    pub path: PathBuf,
    /// What the system said.
    pub message: String,
}

/// Opens the line; fails at once with a clear error if it cannot.
pub fn open(config: &SerialIngest) -> Result<serialport::TTYPort, SerialError> {
    serialport::new(config.path.to_string_lossy(), config.baud)
        .timeout(Duration::from_millis(50))
        .open_native()
        .map_err(|e| SerialError {
            path: config.path.clone(),
            message: e.to_string(),
        })
}

/// Serves the line until `shutdown` turns true: every read is fed to the session, replies
/// are written back, and `Ack`s follow the results. A device that says
/// `Bye` or breaks the protocol gets a fresh session on the same line (a
/// serial device cannot reconnect any other way).
pub fn serve(
    mut port: serialport::TTYPort,
    name: String,
    ctx: Arc<Context>,
    jobs: mpsc::Sender<Job>,
    shutdown: watch::Receiver<bool>,
) {
    // A serial device may be powered up long after the host: no Hello
    // deadline on a line nobody else can use.
    let limits = super::Limits {
        hello_timeout: Duration::from_secs(365 * 24 * 3600),
        idle_timeout: Duration::from_secs(365 * 24 * 3600),
        ..ctx.limits
    };
    let new_conn = || Conn::new(name.clone(), limits, Arc::clone(&ctx.auth), Instant::now());
    let mut conn = new_conn();
    let mut buf = vec![0u8; 4096];
    let mut steps = Vec::new();
    let mut last_ack_check = Instant::now();
    while !*shutdown.borrow() {
        match port.read(&mut buf) {
            Ok(n) => conn.feed(&buf[..n], Instant::now(), ctx.env(), &mut steps),
            Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {}
            Err(e) => {
                tracing::error!("{name}: read failed: {e}; stopping the serial ingest");
                return;
            }
        }
        if last_ack_check.elapsed() >= Duration::from_millis(50) {
            last_ack_check = Instant::now();
            conn.tick(Instant::now(), &ctx.registry, &mut steps);
        }
        let mut fresh = false;
        for step in steps.drain(..) {
            match step {
                Step::Reply(bytes) => {
                    if let Err(e) = port.write_all(&bytes).and_then(|()| port.flush()) {
                        tracing::warn!("{name}: write failed: {e}");
                    }
                }
                Step::Job(job) => {
                    if jobs.blocking_send(job).is_err() {
                        return;
                    }
                }
                Step::Close(why) => {
                    tracing::info!("{why}; waiting for the next Hello on the line");
                    fresh = true;
                }
            }
        }
        if fresh {
            conn = new_conn();
        }
    }
}
