//! systemd's notification protocol (`sd_notify(3)`), spoken directly on the
//! `NOTIFY_SOCKET` datagram socket — no libsystemd on the device. (The
//! `sd-notify` crate does the same in as many lines but reads the socket
//! from the process environment on every call; a [`Notifier`] holds its
//! address, so a test talks to a socket of its own.)
//!
//! Under `Type=notify` with `WatchdogSec=` (see `firmware/deploy/latentcam-edge.service`)
//! the edge says `READY=1` once its link session runs, then `WATCHDOG=1`
//! at half the watchdog period **only while the pipeline's beat count
//! rises** ([`LedSignal::beats`]): a hung pipeline stops the pings and
//! systemd restarts the program, and the on-disk spool keeps what was not
//! delivered. `STATUS=` mirrors the LED state for `systemctl status`, and
//! `STOPPING=1` precedes a clean exit. Outside systemd (no `NOTIFY_SOCKET`)
//! nothing is sent.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::led::{LedSignal, LedState};

/// A connection to the service manager, if there is one.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    address: SocketAddr,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From the environment systemd sets: `NOTIFY_SOCKET` (a path, or
    /// `@name` for the abstract namespace) and `WATCHDOG_USEC` (honoured
    /// unless `WATCHDOG_PID` names another process). `None` outside
    /// systemd or when the socket cannot be used (logged).
    pub fn from_env() -> Option<Self> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&usec| usec > 0)
            .filter(|_| {
                std::env::var("WATCHDOG_PID")
                    .ok()
                    .and_then(|p| p.parse::<u32>().ok())
                    .is_none_or(|pid| pid == std::process::id())
            })
            .map(Duration::from_micros);
        match Self::connect(&path.to_string_lossy(), watchdog) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!("NOTIFY_SOCKET {path:?} unusable: {e}");
                None
            }
        }
    }

    /// A notifier for the socket at `path` (`@name`: abstract namespace).
    pub fn connect(path: &str, watchdog: Option<Duration>) -> io::Result<Self> {
        let address = match path.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name.as_bytes())?
            }
            None => SocketAddr::from_pathname(path)?,
        };
        Ok(Self {
            socket: UnixDatagram::unbound()?,
            address,
            watchdog,
        })
    }

    /// The watchdog period systemd expects pings within, if any.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends one notification (`KEY=value` lines).
    pub fn notify(&self, state: &str) -> io::Result<()> {
        self.socket
            .send_to_addr(state.as_bytes(), &self.address)
            .map(drop)
    }
}

/// What `systemctl status` shows for a state.
fn status_text(state: LedState) -> &'static str {
    match state {
        LedState::Streaming => "streaming",
        LedState::LinkDown => "link down, spooling",
        LedState::Error => "fault: see the journal",
        LedState::Off => "stopping",
    }
}

/// Reports the pipeline to systemd until `stop`: `READY=1` at the first
/// beat, `WATCHDOG=1` while beats rise, `STATUS=` on every change, then
/// `STOPPING=1`. Send failures are logged once; they never stop the camera.
pub fn watch(notifier: &Notifier, signal: &LedSignal, stop: &AtomicBool) {
    let tick = notifier
        .watchdog()
        .map_or(Duration::from_millis(500), |w| {
            (w / 2).max(Duration::from_millis(10))
        })
        .min(Duration::from_millis(500));
    let mut warned = false;
    let mut send = |state: &str| {
        if let Err(e) = notifier.notify(state)
            && !std::mem::replace(&mut warned, true)
        {
            tracing::warn!("cannot notify systemd: {e}");
        }
    };
    let (mut ready, mut last_beats, mut last_status) = (false, signal.beats(), None);
    let mut next_ping = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(tick.min(Duration::from_millis(50)));
        let beats = signal.beats();
        let state = signal.get();
        if !ready && beats > 0 {
            ready = true;
            send(&format!("READY=1\nSTATUS={}", status_text(state)));
            last_status = Some(state);
        }
        if ready && last_status != Some(state) {
            send(&format!("STATUS={}", status_text(state)));
            last_status = Some(state);
        }
        if ready && notifier.watchdog().is_some() && Instant::now() >= next_ping {
            // Only a pipeline that made progress since the last ping is
            // vouched for.
            if beats > last_beats {
                send("WATCHDOG=1");
                last_beats = beats;
            }
            next_ping = Instant::now() + tick;
        }
    }
    send("STOPPING=1");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn receive_all(socket: &UnixDatagram) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 512];
        while let Ok(n) = socket.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    #[test]
    fn pings_only_while_the_pipeline_beats() {
        let name = format!("latentcam-notify-test-{}", std::process::id());
        let listener = {
            use std::os::linux::net::SocketAddrExt;
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap()
        };
        listener.set_nonblocking(true).unwrap();
        let notifier =
            Notifier::connect(&format!("@{name}"), Some(Duration::from_millis(100))).unwrap();
        let signal = Arc::new(LedSignal::default());
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (signal, stop) = (Arc::clone(&signal), Arc::clone(&stop));
            std::thread::spawn(move || watch(&notifier, &signal, &stop))
        };
        // Not ready before the first beat.
        std::thread::sleep(Duration::from_millis(150));
        assert!(receive_all(&listener).is_empty());
        // Beating: ready, status, pings.
        signal.set(LedState::Streaming);
        for _ in 0..40 {
            signal.beat();
            std::thread::sleep(Duration::from_millis(10));
        }
        // (One ping may still vouch for the last beats.)
        std::thread::sleep(Duration::from_millis(150));
        let got = receive_all(&listener);
        assert_eq!(got[0], "READY=1\nSTATUS=streaming", "{got:?}");
        let pings = got.iter().filter(|m| *m == "WATCHDOG=1").count();
        assert!(pings >= 2, "{got:?}");
        // A hung pipeline (no beats) gets no pings; a state change is told.
        signal.set(LedState::LinkDown);
        std::thread::sleep(Duration::from_millis(300));
        let got = receive_all(&listener);
        assert_eq!(got, ["STATUS=link down, spooling"], "{got:?}");
        stop.store(true, Ordering::Relaxed);
        watcher.join().unwrap();
        assert_eq!(receive_all(&listener), ["STOPPING=1"]);
    }

    #[test]
    fn a_bad_socket_path_is_an_error_not_a_panic() {
        let long = "x".repeat(200);
        assert!(Notifier::connect(&long, None).is_err());
    }
}
