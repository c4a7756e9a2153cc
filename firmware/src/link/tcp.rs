//! TCP client to the host, reconnecting with backoff.
//!
//! The connection is opened lazily: [`TcpLink::new`] only checks the
//! address, and [`Link::send`] connects when the backoff allows it. While the
//! host is away `send` answers [`LinkError::Down`] at once (with the time of
//! the next attempt) instead of blocking the pipeline.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::{Backoff, Incoming, IncomingDecoder, Link, LinkError, LinkStats};

/// Settings of a [`TcpLink`].
#[derive(Debug, Clone)]
pub struct TcpConfig {
    /// The host as `name:port` or `ip:port` (IPv6 as `[addr]:port`),
    /// resolved again on every connection attempt.
    pub address: String,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// How long one frame may take to write before the host counts as
    /// stalled and the connection is dropped.
    pub write_timeout: Duration,
    /// Delays between failed connection attempts.
    pub backoff: Backoff,
}

impl TcpConfig {
    /// Defaults for `address`: 3 s connect timeout, 5 s write timeout,
    /// backoff 100 ms doubling to 30 s with ±20 % jitter.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            connect_timeout: Duration::from_secs(3),
            write_timeout: Duration::from_secs(5),
            backoff: Backoff::default(),
        }
    }
}

/// A TCP connection to the host that reconnects by itself.
#[derive(Debug)]
pub struct TcpLink {
    config: TcpConfig,
    stream: Option<TcpStream>,
    /// No connection attempt before this instant (backoff).
    next_attempt: Option<Instant>,
    hello: Option<Vec<u8>>,
    decoder: IncomingDecoder,
    stats: LinkStats,
}

impl TcpLink {
    /// Checks the address's form; does not connect yet. A malformed address
    /// (no port, port not a number) is [`LinkError::Config`]; a name that
    /// does not resolve yet is a transient failure of the first `send`.
    pub fn new(config: TcpConfig) -> Result<Self, LinkError> {
        check_address(&config.address, "tcp")?;
        if config.write_timeout.is_zero() || config.connect_timeout.is_zero() {
            return Err(LinkError::Config {
                link: format!("tcp://{}", config.address),
                problem: "connect and write timeouts must be longer than zero".into(),
            });
        }
        Ok(Self {
            config,
            stream: None,
            next_attempt: None,
            hello: None,
            decoder: IncomingDecoder::default(),
            stats: LinkStats::default(),
        })
    }

    /// Time until the next automatic connection attempt (zero if due now),
    /// or `None` while connected.
    pub fn retry_in(&self) -> Option<Duration> {
        if self.stream.is_some() {
            return None;
        }
        Some(
            self.next_attempt
                .map(|t| t.saturating_duration_since(Instant::now()))
                .unwrap_or_default(),
        )
    }

    /// The local address of the current connection.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.stream.as_ref().and_then(|s| s.local_addr().ok())
    }

    fn name(&self) -> String {
        format!("tcp://{}", self.config.address)
    }

    fn down(&self, source: io::Error) -> LinkError {
        LinkError::Down {
            link: self.name(),
            source,
            retry_in: self.retry_in(),
        }
    }

    /// Drops the connection after a failure and schedules the next attempt.
    fn fail(&mut self, source: io::Error) -> LinkError {
        if let Some(stream) = self.stream.take() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        let delay = self.config.backoff.next_delay();
        self.next_attempt = Some(Instant::now() + delay);
        self.down(source)
    }

    fn connect_now(&mut self) -> Result<(), LinkError> {
        if let Some(stream) = self.stream.take() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        let stream = match self.open_stream() {
            Ok(stream) => stream,
            Err(e) => return Err(self.fail(e)),
        };
        self.stream = Some(stream);
        self.decoder.reset();
        if let Some(hello) = self.hello.clone()
            && let Err(e) = self.write_frame(&hello)
        {
            return Err(self.fail(e));
        }
        self.config.backoff.reset();
        self.next_attempt = None;
        self.stats.connects += 1;
        Ok(())
    }

    fn open_stream(&self) -> io::Result<TcpStream> {
        let mut last = io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            format!("{} resolved to no address", self.config.address),
        );
        for addr in self.config.address.to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, self.config.connect_timeout) {
                Ok(stream) => {
                    // Latents are small and latency matters more than packing.
                    stream.set_nodelay(true)?;
                    stream.set_write_timeout(Some(self.config.write_timeout))?;
                    return Ok(stream);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))?;
        stream.write_all(frame)
    }

    fn ensure_connected(&mut self) -> Result<(), LinkError> {
        if self.stream.is_some() {
            return Ok(());
        }
        match self.next_attempt {
            Some(t) if Instant::now() < t => Err(self.down(io::Error::new(
                io::ErrorKind::NotConnected,
                "not connected, waiting to retry",
            ))),
            _ => self.connect_now(),
        }
    }
}

/// Checks `host:port` form, so typos fail at start-up instead of retrying
/// forever.
pub(crate) fn check_address(address: &str, scheme: &str) -> Result<(), LinkError> {
    let problem = match address.rsplit_once(':') {
        None => Some("no port: write it as host:port, e.g. 192.168.1.10:7878".to_string()),
        Some((host, port)) => {
            if host.is_empty() {
                Some("no host name before the port".to_string())
            } else if port.parse::<u16>().map_or(true, |p| p == 0) {
                Some(format!("port `{port}` is not a number from 1 to 65535"))
            } else {
                None
            }
        }
    };
    match problem {
        Some(problem) => Err(LinkError::Config {
            link: format!("{scheme}://{address}"),
            problem: format!("bad address: {problem}"),
        }),
        None => Ok(()),
    }
}

impl Link for TcpLink {
    fn send(&mut self, frame: &[u8]) -> Result<(), LinkError> {
        self.ensure_connected()?;
        match self.write_frame(frame) {
            Ok(()) => {
                self.stats.frames_sent += 1;
                self.stats.bytes_sent += frame.len() as u64;
                Ok(())
            }
            // A timed-out write may have left half a frame on the stream;
            // the only clean continuation is a new connection.
            Err(e) => Err(self.fail(e)),
        }
    }

    fn poll_incoming(&mut self, timeout: Duration) -> Result<Vec<Incoming>, LinkError> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(self.down(io::Error::new(io::ErrorKind::NotConnected, "not connected")));
        };
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        // Wait for the first bytes, then drain what is already there.
        let first = stream
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .and_then(|()| stream.read(&mut buf));
        let mut result = match first {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "host closed the connection",
            )),
            Ok(n) => {
                self.decoder.push(&buf[..n], &mut out, &mut self.stats);
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(out);
            }
            Err(e) => Err(e),
        };
        if result.is_ok() {
            result = stream.set_nonblocking(true).and_then(|()| {
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) => {
                            break Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "host closed the connection",
                            ));
                        }
                        Ok(n) => self.decoder.push(&buf[..n], &mut out, &mut self.stats),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                        Err(e) => break Err(e),
                    }
                }
            });
            if let Some(stream) = self.stream.as_mut() {
                let _ = stream.set_nonblocking(false);
            }
        }
        match result {
            Ok(()) => Ok(out),
            Err(e) => {
                let error = self.fail(e);
                // Messages that arrived before the close (e.g. `Bye`) still
                // count; the next call reports the link down.
                if out.is_empty() { Err(error) } else { Ok(out) }
            }
        }
    }

    fn reconnect(&mut self) -> Result<(), LinkError> {
        self.connect_now()
    }

    /// Closes the connection; a later `send` connects again only after the
    /// backoff (as after a failure), `reconnect` at once.
    fn disconnect(&mut self) {
        if let Some(stream) = self.stream.take() {
            let _ = stream.shutdown(Shutdown::Both);
            self.next_attempt = Some(Instant::now() + self.config.backoff.next_delay());
        }
    }

    fn is_connected(&self) -> bool {
        self.stream.is_some()
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
        let state = if self.stream.is_some() {
            "connected"
        } else {
            "disconnected"
        };
        format!("{} ({state})", self.name())
    }
}
