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
//! port; [`Link::reconnect`](super::Link::reconnect) opens it again
//! ([`Reopen::OnRequest`]). The hello frame goes out before the first frame
//! after every open.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use linux_embedded_hal::Serial;
use linux_embedded_hal::serialport::{self, SerialPort};

use super::LinkError;
use super::framed::{Framed, Reopen, Transport};

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
pub type SerialLink = Framed<SerialTransport>;

impl SerialLink {
    /// Opens the port. A missing device, missing permission or a port held
    /// by another program is [`LinkError::Config`], with what to do about it.
    pub fn open(config: SerialConfig) -> Result<Self, LinkError> {
        let mut transport = SerialTransport { config, port: None };
        let port = transport.open_port().map_err(|e| transport.open_error(e))?;
        transport.port = Some(port);
        Ok(Framed::over_open(transport, Reopen::OnRequest))
    }

    /// The port's path.
    pub fn path(&self) -> &Path {
        &self.transport().config.path
    }
}

/// The serial-port [`Transport`] under a [`SerialLink`].
pub struct SerialTransport {
    config: SerialConfig,
    port: Option<Serial>,
}

impl std::fmt::Debug for SerialTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialTransport")
            .field("config", &self.config)
            .field("open", &self.port.is_some())
            .finish()
    }
}

impl SerialTransport {
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

    fn port(&mut self) -> io::Result<&mut Serial> {
        self.port
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

fn to_io(e: serialport::Error) -> io::Error {
    io::Error::from(e)
}

impl Transport for SerialTransport {
    fn open(&mut self) -> io::Result<()> {
        // After the first open, a missing device means an unplugged adapter:
        // worth retrying, unlike a wrong path at start-up.
        self.port = Some(self.open_port().map_err(to_io)?);
        Ok(())
    }

    fn close(&mut self) {
        self.port = None;
    }

    fn is_open(&self) -> bool {
        self.port.is_some()
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let port = self.port()?;
        port.0.write_all(bytes)?;
        port.0.flush()
    }

    fn read_some(&mut self, timeout: Duration, sink: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        let write_timeout = self.config.write_timeout;
        let port = self.port()?;
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
                sink(&buf[..n]);
                loop {
                    match port.0.bytes_to_read().map_err(to_io) {
                        Ok(0) => break Ok(()),
                        Ok(_) => match port.0.read(&mut buf) {
                            Ok(n) => sink(&buf[..n]),
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
        result.and(restored)
    }

    /// A timeout keeps the port (the host resyncs at the next frame's
    /// leading delimiter); anything else (`EIO` from a vanished USB
    /// adapter, a hang-up) closes it until `reconnect`.
    fn survives(&self, error: &io::Error) -> bool {
        matches!(
            error.kind(),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
        )
    }

    fn name(&self) -> String {
        format!("serial:{}@{}", self.config.path.display(), self.config.baud)
    }
}
