//! An in-memory link and its far end: what sits above a link (the session,
//! [`SecureLink`](super::SecureLink), the pipeline) can be tested without a
//! socket, and the far end can cut the "connection" to test what happens
//! then. It behaves like the TCP link: `Hello` first on every connection,
//! a stream of host → device bytes decoded as they come,
//! [`LinkError::Down`](super::LinkError::Down) while disconnected, a new
//! connection on the next send once the far end allows it.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use super::Backoff;
use super::framed::{Framed, Reopen, Transport};

/// A connected link and far end.
pub fn pair() -> (ChannelLink, ChannelEnd) {
    let (to_far, from_link) = mpsc::channel();
    let (to_link, from_far) = mpsc::channel();
    let up = Arc::new(AtomicBool::new(true));
    let transport = ChannelTransport {
        to_far,
        from_far,
        up: Arc::clone(&up),
        connected: false,
    };
    // No delay between attempts: the far end decides when they succeed.
    let reopen = Reopen::OnSend(Backoff::new(Duration::ZERO, Duration::ZERO));
    (
        Framed::over(transport, reopen),
        ChannelEnd {
            from_link,
            to_link,
            up,
        },
    )
}

/// The device's side of [`pair`].
pub type ChannelLink = Framed<ChannelTransport>;

/// The in-memory [`Transport`] under a [`ChannelLink`].
#[derive(Debug)]
pub struct ChannelTransport {
    to_far: Sender<Vec<u8>>,
    from_far: Receiver<Vec<u8>>,
    /// Whether the far end lets connections stand.
    up: Arc<AtomicBool>,
    /// Whether this side holds a connection.
    connected: bool,
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

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the far end is gone")
}

impl Transport for ChannelTransport {
    fn open(&mut self) -> io::Result<()> {
        self.connected = false;
        if !self.up.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the far end cut the connection",
            ));
        }
        // A new connection starts clean: nothing the far end wrote to the
        // old one is read on it.
        while self.from_far.try_recv().is_ok() {}
        self.connected = true;
        Ok(())
    }

    fn close(&mut self) {
        self.connected = false;
    }

    fn is_open(&self) -> bool {
        self.connected && self.up.load(Ordering::SeqCst)
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.to_far.send(bytes.to_vec()).map_err(|_| gone())
    }

    fn read_some(&mut self, timeout: Duration, sink: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        match self.from_far.recv_timeout(timeout) {
            Ok(bytes) => sink(&bytes),
            Err(RecvTimeoutError::Timeout) => return Ok(()),
            Err(RecvTimeoutError::Disconnected) => return Err(gone()),
        }
        while let Ok(bytes) = self.from_far.try_recv() {
            sink(&bytes);
        }
        Ok(())
    }

    fn name(&self) -> String {
        "channel".to_owned()
    }
}
