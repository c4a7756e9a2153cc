//! TCP client to the host, reconnecting with backoff.
//!
//! The connection is opened lazily: [`TcpLink::new`] only checks the
//! address, and [`Link::send`](super::Link::send) connects when the backoff
//! allows it ([`Reopen::OnSend`]). While the host is away `send` answers
//! [`LinkError::Down`] at once (with the time of the next attempt) instead of
//! blocking the pipeline.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::framed::{Framed, Reopen, Transport};
use super::{Backoff, LinkError};

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
pub type TcpLink = Framed<TcpTransport>;

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
        let reopen = Reopen::OnSend(config.backoff.clone());
        Ok(Framed::over(
            TcpTransport {
                config,
                stream: None,
            },
            reopen,
        ))
    }

    /// The local address of the current connection.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        let stream = self.transport().stream.as_ref()?;
        stream.local_addr().ok()
    }
}

/// The TCP [`Transport`] under a [`TcpLink`].
#[derive(Debug)]
pub struct TcpTransport {
    config: TcpConfig,
    stream: Option<TcpStream>,
}

impl TcpTransport {
    fn stream(&mut self) -> io::Result<&mut TcpStream> {
        self.stream
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

fn closed_by_host() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "host closed the connection")
}

impl Transport for TcpTransport {
    fn open(&mut self) -> io::Result<()> {
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
                    self.stream = Some(stream);
                    return Ok(());
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn close(&mut self) {
        if let Some(stream) = self.stream.take() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    fn is_open(&self) -> bool {
        self.stream.is_some()
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream()?.write_all(bytes)
    }

    fn read_some(&mut self, timeout: Duration, sink: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        let stream = self.stream()?;
        let mut buf = [0u8; 4096];
        // Wait for the first bytes, then drain what is already there.
        stream.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        match stream.read(&mut buf) {
            Ok(0) => return Err(closed_by_host()),
            Ok(n) => sink(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        stream.set_nonblocking(true)?;
        let drained = loop {
            match stream.read(&mut buf) {
                Ok(0) => break Err(closed_by_host()),
                Ok(n) => sink(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        let _ = stream.set_nonblocking(false);
        drained
    }

    fn name(&self) -> String {
        format!("tcp://{}", self.config.address)
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
