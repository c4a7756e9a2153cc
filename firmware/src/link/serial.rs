//! Serial line (UART, USB-serial adapter) through `linux-embedded-hal`.
//!
//! The port is opened with [`linux_embedded_hal::Serial::open_from_builder`]
//! (8N1, no flow control, exclusive access). Frames are written through the
//! wrapped `serialport::TTYPort`'s `std::io` interface rather than the
//! embedded-hal-nb byte traits, which cost one system call per byte — 1300
//! per latent.
//!
//! A frame interrupted by a write timeout does no lasting harm here: the
//! next frame's leading `0x00` resynchronises the host's decoder. Other
//! write or read failures (an unplugged USB adapter gives `EIO`) close the
//! port; [`Link::reconnect`] opens it again. The hello frame
//! ([`Link::set_hello`]) goes out before the first frame after every open.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use linux_embedded_hal::Serial;
use linux_embedded_hal::serialport::{self, SerialPort};

use super::{Incoming, IncomingDecoder, Link, LinkError, LinkStats};

/// Default line speed: 921 600 baud carries ~70 1.3 KB latents a second.
pub const DEFAULT_BAUD: u32 = 921_600;

/// Settings of a [`SerialLink`].
#[derive(Debug, Clone)]
pub struct SerialConfig {
    /// The device, e.g. `/dev/ttyAMA0`, `/dev/serial0` or
    /// `/dev/serial/by-id/usb-…`.
    pub path: PathBuf,
    /// Line speed in baud.
    pub baud: u32,
    /// How long one frame may take to write.
    pub write_timeout: Duration,
}

impl SerialConfig {
    /// `path` at [`DEFAULT_BAUD`] with a 2 s write timeout.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            baud: DEFAULT_BAUD,
            write_timeout: Duration::from_secs(2),
        }
    }

    /// Replaces the baud rate.
    pub fn baud(mut self, baud: u32) -> Self {
        self.baud = baud;
        self
    }
}

/// Frames over a serial port.
pub struct SerialLink {
    config: SerialConfig,
    port: Option<Serial>,
    hello: Option<Vec<u8>>,
    /// The port was (re)opened and the hello has not gone out yet.
    hello_due: bool,
    decoder: IncomingDecoder,
    stats: LinkStats,
}

impl std::fmt::Debug for SerialLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialLink")
            .field("config", &self.config)
            .field("open", &self.port.is_some())
            .field("stats", &self.stats)
            .finish()
    }
}

impl SerialLink {
    /// Opens the port. A missing device, missing permission or a port held
    /// by another program is [`LinkError::Config`], with what to do about it.
    pub fn open(config: SerialConfig) -> Result<Self, LinkError> {
        let mut link = Self {
            config,
            port: None,
            hello: None,
            hello_due: false,
            decoder: IncomingDecoder::default(),
            stats: LinkStats::default(),
        };
        let port = link.open_port().map_err(|e| link.open_error(e))?;
        link.attach(port);
        Ok(link)
    }

    /// The port's path.
    pub fn path(&self) -> &Path {
        &self.config.path
    }

    fn name(&self) -> String {
        format!("serial:{}@{}", self.config.path.display(), self.config.baud)
    }

    fn open_port(&self) -> Result<Serial, serialport::Error> {
        let path = self.config.path.to_string_lossy().into_owned();
        let builder = serialport::new(path, self.config.baud)
            .data_bits(serialport::DataBits::Eight)
            .parity(serialport::Parity::None)
            .stop_bits(serialport::StopBits::One)
            .flow_control(serialport::FlowControl::None)
            .timeout(self.config.write_timeout);
        Serial::open_from_builder(builder)
    }

    /// Explains an error from opening the port, naming the path and the fix.
    fn open_error(&self, e: serialport::Error) -> LinkError {
        let path = self.config.path.display();
        let problem = match e.kind() {
            serialport::ErrorKind::Io(io::ErrorKind::NotFound) => format!(
                "no such serial device {path}: check the device name and cable \
                 (`ls /dev/serial/by-id/`, `dmesg | tail`), or enable the UART \
                 (Raspberry Pi: raspi-config → Interface Options → Serial Port)"
            ),
            serialport::ErrorKind::Io(io::ErrorKind::PermissionDenied) => format!(
                "permission denied opening {path}: add the user to the `dialout` \
                 group (`sudo usermod -aG dialout $USER`, then log in again)"
            ),
            serialport::ErrorKind::NoDevice => format!(
                "{path} is in use by another program (a serial console getty? \
                 `sudo systemctl disable --now serial-getty@{}.service`)",
                self.config
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
            serialport::ErrorKind::InvalidInput => format!(
                "{path} rejected the settings ({e}): check the baud rate {}",
                self.config.baud
            ),
            _ => format!("cannot open {path} as a serial port: {e}"),
        };
        LinkError::Config {
            link: self.name(),
            problem,
        }
    }

    fn attach(&mut self, port: Serial) {
        self.decoder.reset();
        self.port = Some(port);
        self.hello_due = true;
        self.stats.connects += 1;
    }

    fn down(&self, source: io::Error) -> LinkError {
        LinkError::Down {
            link: self.name(),
            source,
            retry_in: None,
        }
    }

    /// Reports a lost line. A timeout keeps the port (the host resyncs at
    /// the next frame's leading delimiter); anything else (`EIO` from a
    /// vanished USB adapter, a hang-up) closes it until `reconnect`.
    fn fail(&mut self, e: io::Error) -> LinkError {
        if !matches!(
            e.kind(),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
        ) {
            self.port = None;
        }
        self.down(e)
    }
}

fn to_io(e: serialport::Error) -> io::Error {
    io::Error::from(e)
}

impl Link for SerialLink {
    fn send(&mut self, frame: &[u8]) -> Result<(), LinkError> {
        let Some(port) = self.port.as_mut() else {
            return Err(self.down(io::Error::new(
                io::ErrorKind::NotConnected,
                "port closed; call reconnect",
            )));
        };
        let hello = match (&self.hello, self.hello_due) {
            (Some(hello), true) => hello.as_slice(),
            _ => &[],
        };
        let written = port
            .0
            .write_all(hello)
            .and_then(|()| port.0.write_all(frame))
            .and_then(|()| port.0.flush());
        match written {
            Ok(()) => {
                self.hello_due = false;
                self.stats.frames_sent += 1;
                self.stats.bytes_sent += frame.len() as u64;
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    fn poll_incoming(&mut self, timeout: Duration) -> Result<Vec<Incoming>, LinkError> {
        let Some(port) = self.port.as_mut() else {
            return Err(self.down(io::Error::new(
                io::ErrorKind::NotConnected,
                "port closed; call reconnect",
            )));
        };
        let write_timeout = self.config.write_timeout;
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        // serialport applies one timeout to reads and writes: borrow it for
        // the first read, then drain what is buffered without waiting.
        let first = port
            .0
            .set_timeout(timeout.max(Duration::from_millis(1)))
            .map_err(to_io)
            .and_then(|()| port.0.read(&mut buf));
        let result = match first {
            Ok(n) => {
                self.decoder.push(&buf[..n], &mut out, &mut self.stats);
                loop {
                    match port.0.bytes_to_read().map_err(to_io) {
                        Ok(0) => break Ok(()),
                        Ok(_) => match port.0.read(&mut buf) {
                            Ok(n) => self.decoder.push(&buf[..n], &mut out, &mut self.stats),
                            Err(e) => break Err(e),
                        },
                        Err(e) => break Err(e),
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        };
        let restored = port.0.set_timeout(write_timeout).map_err(to_io);
        match result.and(restored) {
            Ok(()) => Ok(out),
            Err(e) => {
                let error = self.fail(e);
                if out.is_empty() { Err(error) } else { Ok(out) }
            }
        }
    }

    fn reconnect(&mut self) -> Result<(), LinkError> {
        self.port = None;
        // After the first open, a missing device means an unplugged adapter:
        // worth retrying, unlike a wrong path at start-up.
        let port = self.open_port().map_err(|e| self.down(to_io(e)))?;
        self.attach(port);
        Ok(())
    }

    fn disconnect(&mut self) {
        self.port = None;
    }

    fn is_connected(&self) -> bool {
        self.port.is_some()
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
        let state = if self.port.is_some() {
            "open"
        } else {
            "closed"
        };
        format!("{} ({state})", self.name())
    }
}
