//! UDP: one frame per datagram, fire and forget.
//!
//! UDP suits a LAN where a lost latent is cheaper than a late one. The link
//! is one-way: the host cannot acknowledge, so nothing is spooled for it.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::Duration;

use latentcam_wire::frame::MAX_ENCODED_LEN;

use super::tcp::check_address;
use super::{Incoming, Link, LinkError, LinkStats, is_disconnect};

/// Sends each frame as one UDP datagram to a fixed host.
#[derive(Debug)]
pub struct UdpLink {
    address: String,
    socket: Option<UdpSocket>,
    stats: LinkStats,
}

impl UdpLink {
    /// Resolves `address` (`host:port`) and opens a socket connected to it.
    /// A malformed address is [`LinkError::Config`]; a name that does not
    /// resolve is [`LinkError::Down`] (DNS may come up later).
    pub fn connect(address: impl Into<String>) -> Result<Self, LinkError> {
        let address = address.into();
        check_address(&address, "udp")?;
        let mut link = Self {
            address,
            socket: None,
            stats: LinkStats::default(),
        };
        link.reconnect()?;
        Ok(link)
    }

    /// The local address datagrams leave from.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.socket.as_ref().and_then(|s| s.local_addr().ok())
    }

    fn name(&self) -> String {
        format!("udp://{}", self.address)
    }

    fn open(&self) -> io::Result<UdpSocket> {
        let mut last = io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            format!("{} resolved to no address", self.address),
        );
        for remote in self.address.to_socket_addrs()? {
            let local: SocketAddr = if remote.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                ([0u16; 8], 0).into()
            };
            match UdpSocket::bind(local).and_then(|s| s.connect(remote).map(|()| s)) {
                Ok(socket) => return Ok(socket),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

impl Link for UdpLink {
    fn send(&mut self, frame: &[u8]) -> Result<(), LinkError> {
        if frame.len() > MAX_ENCODED_LEN {
            return Err(LinkError::FrameTooLarge {
                link: self.name(),
                len: frame.len(),
                max: MAX_ENCODED_LEN,
            });
        }
        let Some(socket) = self.socket.as_ref() else {
            return Err(LinkError::Down {
                link: self.name(),
                source: io::Error::from(io::ErrorKind::NotConnected),
                retry_in: None,
            });
        };
        match socket.send(frame) {
            Ok(n) if n == frame.len() => {
                self.stats.frames_sent += 1;
                self.stats.bytes_sent += n as u64;
                Ok(())
            }
            Ok(n) => Err(LinkError::Io {
                link: self.name(),
                source: io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("datagram truncated to {n} of {} bytes", frame.len()),
                ),
            }),
            // "Connection refused" on UDP is an ICMP port-unreachable for an
            // earlier datagram: nobody listens right now.
            Err(e) if is_disconnect(e.kind()) => Err(LinkError::Down {
                link: self.name(),
                source: e,
                retry_in: None,
            }),
            Err(e) => Err(LinkError::Io {
                link: self.name(),
                source: e,
            }),
        }
    }

    fn poll_incoming(&mut self, _timeout: Duration) -> Result<Vec<Incoming>, LinkError> {
        Ok(Vec::new())
    }

    fn reconnect(&mut self) -> Result<(), LinkError> {
        self.socket = None;
        match self.open() {
            Ok(socket) => {
                self.socket = Some(socket);
                self.stats.connects += 1;
                Ok(())
            }
            Err(source) => Err(LinkError::Down {
                link: self.name(),
                source,
                retry_in: None,
            }),
        }
    }

    fn is_connected(&self) -> bool {
        self.socket.is_some()
    }

    fn is_bidirectional(&self) -> bool {
        false
    }

    fn set_hello(&mut self, _frame: Vec<u8>) {}

    fn stats(&self) -> LinkStats {
        self.stats
    }

    fn describe(&self) -> String {
        self.name()
    }
}
