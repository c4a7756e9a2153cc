//! An in-memory link and its far end: what sits above a link (the session,
//! [`SecureLink`](super::SecureLink), the pipeline) can be tested without a
//! socket, and the far end can cut the "connection" to test what happens
//! then. It behaves like the TCP link: `Hello` first on every connection,
//! a stream of host → device bytes decoded as they come, [`LinkError::Down`]
//! while disconnected.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use super::{Incoming, IncomingDecoder, Link, LinkError, LinkStats};

/// A connected link and far end.
pub fn pair() -> (ChannelLink, ChannelEnd) {
    let (to_far, from_link) = mpsc::channel();
    let (to_link, from_far) = mpsc::channel();
    let up = Arc::new(AtomicBool::new(true));
    (
        ChannelLink {
            to_far,
            from_far,
            up: Arc::clone(&up),
            connected: false,
            hello: None,
            decoder: IncomingDecoder::default(),
            stats: LinkStats::default(),
        },
        ChannelEnd {
            from_link,
            to_link,
            up,
        },
    )
}

/// The device's side of [`pair`].
#[derive(Debug)]
pub struct ChannelLink {
    to_far: Sender<Vec<u8>>,
    from_far: Receiver<Vec<u8>>,
    /// Whether the far end lets connections stand.
    up: Arc<AtomicBool>,
    /// Whether this side holds a connection (and has sent `Hello` on it).
    connected: bool,
    hello: Option<Vec<u8>>,
    decoder: IncomingDecoder,
    stats: LinkStats,
}

/// The host's side of [`pair`].
#[derive(Debug)]
pub struct ChannelEnd {
    from_link: Receiver<Vec<u8>>,
    to_link: Sender<Vec<u8>>,
    up: Arc<AtomicBool>,
}

impl ChannelEnd {
    /// The next frame the link wrote, waiting up to `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<Vec<u8>> {
        self.from_link.recv_timeout(timeout).ok()
    }

    /// Writes host → device bytes (frames or noise).
    pub fn send(&self, bytes: &[u8]) {
        // The link side may be gone; a far end writing into the void is
        // what a host on a dead socket does too.
        let _ = self.to_link.send(bytes.to_vec());
    }

    /// Cuts the connection: the link's next call reports it down, and
    /// nothing reaches the link until [`ChannelEnd::restore`].
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
    }

    /// Lets the link connect again (it sends `Hello` first).
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl ChannelLink {
    fn down(&mut self, what: &str) -> LinkError {
        self.connected = false;
        self.decoder.reset();
        LinkError::Down {
            link: self.describe(),
            source: io::Error::new(io::ErrorKind::NotConnected, what.to_owned()),
            retry_in: None,
        }
    }

    /// Connects if not connected: `Hello` goes first.
    fn ensure_connected(&mut self) -> Result<(), LinkError> {
        if !self.up.load(Ordering::SeqCst) {
            return Err(self.down("the far end cut the connection"));
        }
        if !self.connected {
            // A new connection starts clean: nothing the far end wrote to
            // the old one is read on it.
            while self.from_far.try_recv().is_ok() {}
            if let Some(hello) = &self.hello {
                self.to_far
                    .send(hello.clone())
                    .map_err(|_| self.down("the far end is gone"))?;
            }
            self.connected = true;
            self.stats.connects += 1;
        }
        Ok(())
    }
}

impl Link for ChannelLink {
    fn send(&mut self, frame: &[u8]) -> Result<(), LinkError> {
        self.ensure_connected()?;
        if self.to_far.send(frame.to_vec()).is_err() {
            return Err(self.down("the far end is gone"));
        }
        self.stats.frames_sent += 1;
        self.stats.bytes_sent += frame.len() as u64;
        Ok(())
    }

    fn poll_incoming(&mut self, timeout: Duration) -> Result<Vec<Incoming>, LinkError> {
        if !self.connected || !self.up.load(Ordering::SeqCst) {
            return Err(self.down("not connected"));
        }
        let mut out = Vec::new();
        let first = match self.from_far.recv_timeout(timeout) {
            Ok(bytes) => bytes,
            Err(RecvTimeoutError::Timeout) => return Ok(out),
            Err(RecvTimeoutError::Disconnected) => return Err(self.down("the far end is gone")),
        };
        self.decoder.push(&first, &mut out, &mut self.stats);
        while let Ok(bytes) = self.from_far.try_recv() {
            self.decoder.push(&bytes, &mut out, &mut self.stats);
        }
        Ok(out)
    }

    fn reconnect(&mut self) -> Result<(), LinkError> {
        self.connected = false;
        self.ensure_connected()
    }

    fn disconnect(&mut self) {
        self.connected = false;
        self.decoder.reset();
    }

    fn is_connected(&self) -> bool {
        self.connected && self.up.load(Ordering::SeqCst)
    }

    fn is_bidirectional(&self) -> bool {
        true
    }

    fn set_hello(&mut self, frame: Vec<u8>) {
        self.hello = Some(frame);
    }

    fn stats(&self) -> LinkStats {
        self.stats
    }

    fn describe(&self) -> String {
        let state = if self.is_connected() {
            "connected"
        } else {
            "disconnected"
        };
        format!("channel: ({state})")
    }
}
