//! One framed link over any two-way byte stream.
//!
//! What TCP, the serial line and the in-memory channel have in common lives
//! here once, in [`Framed`]: `Hello` first on every new connection, the
//! counters, the host → device decoder, and what a failure does to the
//! connection. What differs — how a connection is opened, written, read and
//! closed — is the small [`Transport`] trait, one implementation per medium.
//!
//! When a closed connection opens again is the [`Reopen`] policy: TCP
//! connects lazily inside [`Link::send`] once the backoff allows, a serial
//! port reopens only on [`Link::reconnect`] (reopening a vanished device
//! node in a loop helps no one).

use std::io;
use std::time::{Duration, Instant};

use super::{Backoff, Incoming, IncomingDecoder, Link, LinkError, LinkStats};

/// A two-way byte stream to the host, one implementation per medium.
pub trait Transport {
    /// Opens a new connection. The caller closes the old one first.
    fn open(&mut self) -> io::Result<()>;

    /// Closes the connection, if any; closing a closed one does nothing.
    fn close(&mut self);

    /// True while a connection is open.
    fn is_open(&self) -> bool;

    /// Writes all of `bytes` within the medium's write timeout.
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;

    /// Waits up to `timeout` for bytes, then takes whatever else is already
    /// buffered without waiting, handing every chunk to `sink`. Nothing
    /// arriving in time is `Ok`; the peer closing the connection is an error
    /// (after the chunks that came before it).
    fn read_some(&mut self, timeout: Duration, sink: &mut dyn FnMut(&[u8])) -> io::Result<()>;

    /// True when the connection stays usable after `error` from a write or
    /// read. The default is false: a timed-out TCP write may have left half
    /// a frame on the stream, so only a new connection is clean.
    fn survives(&self, error: &io::Error) -> bool {
        let _ = error;
        false
    }

    /// The medium and address for logs, e.g. `tcp://10.0.0.2:7878`.
    fn name(&self) -> String;
}

/// When a [`Framed`] link opens a closed connection again.
#[derive(Debug, Clone)]
pub enum Reopen {
    /// [`Link::send`] opens it itself, no sooner than the backoff allows
    /// after a failure; meanwhile sends answer [`LinkError::Down`] at once
    /// with the time of the next attempt.
    OnSend(Backoff),
    /// Only [`Link::reconnect`] opens it.
    OnRequest,
}

/// A bidirectional [`Link`] over a [`Transport`].
#[derive(Debug)]
pub struct Framed<T> {
    transport: T,
    reopen: Reopen,
    /// No automatic attempt before this instant ([`Reopen::OnSend`]).
    next_attempt: Option<Instant>,
    hello: Option<Vec<u8>>,
    /// The connection is new and `Hello` has not gone out on it yet.
    hello_due: bool,
    decoder: IncomingDecoder,
    stats: LinkStats,
}

impl<T: Transport> Framed<T> {
    /// A link over a transport that is not open yet.
    pub fn over(transport: T, reopen: Reopen) -> Self {
        Self {
            transport,
            reopen,
            next_attempt: None,
            hello: None,
            hello_due: false,
            decoder: IncomingDecoder::default(),
            stats: LinkStats::default(),
        }
    }

    /// A link over a transport its constructor has just opened (so that
    /// opening errors can be explained there); counts as the first
    /// connection, and `Hello` goes out before the first frame.
    pub fn over_open(transport: T, reopen: Reopen) -> Self {
        let mut link = Self::over(transport, reopen);
        link.hello_due = true;
        link.stats.connects = 1;
        link
    }

    /// The transport, for what only it knows (e.g. a local address).
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// Time until the next automatic connection attempt (zero if due now);
    /// `None` while connected or when only [`Link::reconnect`] reopens.
    pub fn retry_in(&self) -> Option<Duration> {
        if self.transport.is_open() || matches!(self.reopen, Reopen::OnRequest) {
            return None;
        }
        Some(
            self.next_attempt
                .map(|t| t.saturating_duration_since(Instant::now()))
                .unwrap_or_default(),
        )
    }

    fn down(&self, source: io::Error) -> LinkError {
        LinkError::Down {
            link: self.transport.name(),
            source,
            retry_in: self.retry_in(),
        }
    }

    /// Closes the connection unless it survives `error`, schedules the next
    /// automatic attempt, and reports the link down.
    fn fail(&mut self, error: io::Error) -> LinkError {
        if !self.transport.survives(&error) {
            self.close_and_wait();
        }
        self.down(error)
    }

    fn close_and_wait(&mut self) {
        self.transport.close();
        if let Reopen::OnSend(backoff) = &mut self.reopen {
            self.next_attempt = Some(Instant::now() + backoff.next_delay());
        }
    }

    /// Opens a new connection now and sends `Hello` on it.
    fn open_now(&mut self) -> Result<(), LinkError> {
        self.transport.close();
        if let Err(e) = self.transport.open() {
            return Err(self.fail(e));
        }
        self.decoder.reset();
        self.hello_due = true;
        if let Err(e) = self.send_hello_if_due() {
            let survives = self.transport.survives(&e);
            let error = self.fail(e);
            if !survives {
                return Err(error);
            }
            // Still open: `Hello` goes out before the next frame.
        }
        if let Reopen::OnSend(backoff) = &mut self.reopen {
            backoff.reset();
        }
        self.next_attempt = None;
        self.stats.connects += 1;
        Ok(())
    }

    fn send_hello_if_due(&mut self) -> io::Result<()> {
        if let (Some(hello), true) = (&self.hello, self.hello_due) {
            self.transport.write_all(hello)?;
        }
        self.hello_due = false;
        Ok(())
    }

    fn ensure_open(&mut self) -> Result<(), LinkError> {
        if self.transport.is_open() {
            return Ok(());
        }
        match self.reopen {
            Reopen::OnRequest => Err(self.down(io::Error::new(
                io::ErrorKind::NotConnected,
                "closed; reconnect opens it again",
            ))),
            Reopen::OnSend(_) => match self.next_attempt {
                Some(t) if Instant::now() < t => Err(self.down(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "not connected, waiting to retry",
                ))),
                _ => self.open_now(),
            },
        }
    }
}

impl<T: Transport> Link for Framed<T> {
    fn send(&mut self, frame: &[u8]) -> Result<(), LinkError> {
        self.ensure_open()?;
        let written = self
            .send_hello_if_due()
            .and_then(|()| self.transport.write_all(frame));
        match written {
            Ok(()) => {
                self.stats.frames_sent += 1;
                self.stats.bytes_sent += frame.len() as u64;
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    fn poll_incoming(&mut self, timeout: Duration) -> Result<Vec<Incoming>, LinkError> {
        if !self.transport.is_open() {
            return Err(self.down(io::Error::new(io::ErrorKind::NotConnected, "not connected")));
        }
        let mut out = Vec::new();
        let (decoder, stats) = (&mut self.decoder, &mut self.stats);
        let read = self
            .transport
            .read_some(timeout, &mut |bytes| decoder.push(bytes, &mut out, stats));
        match read {
            Ok(()) => Ok(out),
            Err(e) => {
                let error = self.fail(e);
                // Messages that arrived before the failure (e.g. `Bye`)
                // still count; the next call reports the link down.
                if out.is_empty() { Err(error) } else { Ok(out) }
            }
        }
    }

    fn reconnect(&mut self) -> Result<(), LinkError> {
        self.open_now()
    }

    /// Closes the connection; with [`Reopen::OnSend`] a later `send`
    /// connects again only after the backoff (as after a failure),
    /// `reconnect` at once.
    fn disconnect(&mut self) {
        if self.transport.is_open() {
            self.close_and_wait();
        } else {
            self.transport.close();
        }
    }

    fn is_connected(&self) -> bool {
        self.transport.is_open()
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
        let state = if self.transport.is_open() {
            "connected"
        } else {
            "disconnected"
        };
        format!("{} ({state})", self.transport.name())
    }
}
