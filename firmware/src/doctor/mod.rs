//! `latentcam-edge doctor`: why is this device not streaming? Each check
//! prints one line — OK, WARN or FAIL — and, unless OK, the fix.
//!
//! Checks follow the configuration (the same file and flags as a run): the
//! model file and its SHA-256, the inference backend, the frame source
//! (camera device and formats, or the replay input), the serial port's
//! permissions, the device key (`[link] key_file`), the host's reachability
//! and its answer to a real `Hello` (through the Noise handshake when
//! `[link] host_key` is set), the clock, free disk for the spool, CPU
//! temperature and (on a Raspberry Pi) under-voltage and throttling, and the
//! status LED's GPIO chip.

mod devices;
mod host;
mod model;
mod system;

use std::fmt;
use std::path::Path;

use crate::config::{EdgeConfig, LinkKind};

use devices::{check_device_file, check_device_key, check_source};
use host::check_link;
use model::check_model;
use system::{check_clock, check_spool_disk, check_temperature, check_throttling};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Fine.
    Ok,
    /// Works, but something deserves a look.
    Warn,
    /// Streaming will not work until this is fixed.
    Fail,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Level::Ok => "OK",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        })
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked (`model`, `host`…).
    pub name: &'static str,
    /// The outcome.
    pub level: Level,
    /// What was found.
    pub detail: String,
    /// What to do about it (for WARN and FAIL).
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            level: Level::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            level: Level::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            level: Level::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<5} {:<12} {}", self.level, self.name, self.detail)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n{:19}fix: {fix}", "")?;
        }
        Ok(())
    }
}

/// Runs every check that applies to `config`, in order.
pub fn run(config: &EdgeConfig) -> Vec<Check> {
    let mut checks = Vec::new();
    let encoder = check_model(config, &mut checks);
    checks.push(check_source(config));
    if config.link.kind == LinkKind::Serial {
        checks.push(check_device_file(
            "serial",
            &config.link.path,
            "dialout",
            "check [link] path (ls /dev/ttyUSB* /dev/ttyACM* /dev/ttyAMA*)",
        ));
    }
    let key = match config.link.auth() {
        Ok(Some(auth)) => {
            let (check, key) = check_device_key(&auth);
            checks.push(check);
            key.map(|device| (device, auth.host_key))
        }
        _ => None,
    };
    checks.push(check_link(config, encoder.as_ref().map(|e| e.info()), key));
    checks.push(check_clock());
    checks.push(check_spool_disk(config));
    checks.push(check_temperature(Path::new("/sys/class/thermal")));
    checks.push(check_throttling());
    if !config.led.chip.as_os_str().is_empty() {
        checks.push(check_device_file(
            "led",
            &config.led.chip,
            "gpio",
            "check [led] chip (ls /dev/gpiochip*)",
        ));
    }
    checks
}

pub(crate) fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}
