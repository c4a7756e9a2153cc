//! The status LED: one optional GPIO line that tells a person standing next
//! to the camera what the device is doing, without a screen.
//!
//! | state       | pattern                        |
//! |-------------|--------------------------------|
//! | streaming   | steady on                      |
//! | link down   | slow blink, 1 Hz (500/500 ms)  |
//! | error       | fast blink, 5 Hz (100/100 ms)  |
//! | off         | off                            |
//!
//! The logic is generic over [`embedded_hal::digital::OutputPin`] and is
//! driven by explicit timestamps, so it is tested with an in-memory pin and
//! no clock; on a device the pin is a linux-embedded-hal `CdevPin`.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use embedded_hal::digital::OutputPin;

/// What the LED shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum LedState {
    /// Latents are flowing: steady on.
    Streaming,
    /// The link to the host is down: slow blink.
    LinkDown,
    /// A fault needs attention (camera gone, model refused): fast blink.
    Error,
    /// Off (shutdown).
    Off,
}

impl LedState {
    /// Half-period of the blink in milliseconds, or `None` for a steady level.
    fn half_period_ms(self) -> Option<u64> {
        match self {
            LedState::Streaming | LedState::Off => None,
            LedState::LinkDown => Some(500),
            LedState::Error => Some(100),
        }
    }
}

/// Drives an output pin according to a [`LedState`].
#[derive(Debug)]
pub struct StatusLed<P: OutputPin> {
    pin: P,
    state: LedState,
    /// When the current state began, ms.
    since_ms: u64,
    /// Level last written, to avoid redundant GPIO writes.
    lit: Option<bool>,
}

impl<P: OutputPin> StatusLed<P> {
    /// A LED that starts off.
    pub fn new(pin: P) -> Self {
        Self {
            pin,
            state: LedState::Off,
            since_ms: 0,
            lit: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> LedState {
        self.state
    }

    /// Switches state at time `now_ms`; blinking restarts with the LED on so
    /// a change is visible at once.
    pub fn set_state(&mut self, state: LedState, now_ms: u64) -> Result<(), P::Error> {
        if state != self.state {
            self.state = state;
            self.since_ms = now_ms;
        }
        self.tick(now_ms)
    }

    /// Updates the pin for time `now_ms`. Call it at least every 50 ms.
    pub fn tick(&mut self, now_ms: u64) -> Result<(), P::Error> {
        let lit = match self.state.half_period_ms() {
            None => self.state == LedState::Streaming,
            Some(half) => (now_ms.saturating_sub(self.since_ms) / half).is_multiple_of(2),
        };
        if self.lit != Some(lit) {
            if lit {
                self.pin.set_high()?;
            } else {
                self.pin.set_low()?;
            }
            self.lit = Some(lit);
        }
        Ok(())
    }

    /// Gives the pin back (e.g. to release the GPIO line on shutdown).
    pub fn release(self) -> P {
        self.pin
    }
}

/// The pipeline's state, shared between the pipeline threads and the
/// threads that show it: the LED driver and the systemd notifier. Besides
/// the state it counts *beats*: the link session beats on every turn of its
/// loop (at least every 10 ms), so a beat count that stops rising means the
/// pipeline hangs (what the systemd watchdog is told).
#[derive(Debug)]
pub struct LedSignal(AtomicU8, AtomicU64);

impl Default for LedSignal {
    fn default() -> Self {
        Self(AtomicU8::new(LedState::LinkDown as u8), AtomicU64::new(0))
    }
}

impl LedSignal {
    /// Sets the state the LED should show.
    pub fn set(&self, state: LedState) {
        self.0.store(state as u8, Ordering::Relaxed);
    }

    /// The pipeline is alive (called by the session loop).
    pub fn beat(&self) {
        self.1.fetch_add(1, Ordering::Relaxed);
    }

    /// Beats so far.
    pub fn beats(&self) -> u64 {
        self.1.load(Ordering::Relaxed)
    }

    /// The state the LED should show.
    pub fn get(&self) -> LedState {
        match self.0.load(Ordering::Relaxed) {
            x if x == LedState::Streaming as u8 => LedState::Streaming,
            x if x == LedState::LinkDown as u8 => LedState::LinkDown,
            x if x == LedState::Error as u8 => LedState::Error,
            _ => LedState::Off,
        }
    }
}

/// Drives `led` from `signal` every 25 ms until `stop`, then turns it off
/// and returns the pin. A failing GPIO write is logged once and the loop
/// goes on: the LED is never worth stopping the camera for.
pub fn drive<P: OutputPin>(mut led: StatusLed<P>, signal: &LedSignal, stop: &AtomicBool) -> P
where
    P::Error: core::fmt::Debug,
{
    let start = Instant::now();
    let mut reported = false;
    let mut report = |e: P::Error| {
        if !reported {
            tracing::warn!("status LED write failed: {e:?}");
            reported = true;
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let now = start.elapsed().as_millis() as u64;
        if let Err(e) = led.set_state(signal.get(), now) {
            report(e);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let now = start.elapsed().as_millis() as u64;
    if let Err(e) = led.set_state(LedState::Off, now) {
        report(e);
    }
    led.release()
}

/// Why the GPIO line for the LED could not be opened.
#[derive(Debug, thiserror::Error)]
#[error(
    "status LED {chip} line {line}: {message} (check [led] chip/line; the user needs \
     read-write access to the chip, e.g. the `gpio` group; or set chip = \"\" to run without a LED)"
)]
pub struct GpioLedError {
    /// The GPIO chip.
    pub chip: std::path::PathBuf,
    /// The line offset.
    pub line: u32,
    /// What gpio-cdev said.
    pub message: String,
}

/// Opens line `line` of GPIO character device `chip` as an output for the
/// status LED (linux-embedded-hal `CdevPin`).
pub fn open_gpio(
    chip: &std::path::Path,
    line: u32,
) -> Result<StatusLed<linux_embedded_hal::CdevPin>, GpioLedError> {
    use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
    let err = |e: &dyn std::fmt::Display| GpioLedError {
        chip: chip.to_path_buf(),
        line,
        message: e.to_string(),
    };
    let mut gpio = Chip::new(chip).map_err(|e| err(&e))?;
    let handle = gpio
        .get_line(line)
        .and_then(|l| l.request(LineRequestFlags::OUTPUT, 0, "latentcam-status"))
        .map_err(|e| err(&e))?;
    let pin = linux_embedded_hal::CdevPin::new(handle).map_err(|e| err(&e))?;
    Ok(StatusLed::new(pin))
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::convert::Infallible;

    /// In-memory pin recording every write.
    #[derive(Debug, Default)]
    struct RecordingPin {
        writes: Vec<bool>,
    }

    impl embedded_hal::digital::ErrorType for RecordingPin {
        type Error = Infallible;
    }

    impl OutputPin for RecordingPin {
        fn set_low(&mut self) -> Result<(), Infallible> {
            self.writes.push(false);
            Ok(())
        }
        fn set_high(&mut self) -> Result<(), Infallible> {
            self.writes.push(true);
            Ok(())
        }
    }

    /// Samples the LED level every 10 ms over `duration` ms.
    fn levels(led: &mut StatusLed<RecordingPin>, start: u64, duration: u64) -> Vec<bool> {
        (start..start + duration)
            .step_by(10)
            .map(|t| {
                led.tick(t).unwrap();
                led.lit.unwrap()
            })
            .collect()
    }

    #[test]
    fn streaming_is_steady_on_with_one_write() {
        let mut led = StatusLed::new(RecordingPin::default());
        led.set_state(LedState::Streaming, 0).unwrap();
        assert!(levels(&mut led, 0, 5000).iter().all(|&l| l));
        assert_eq!(led.release().writes, vec![true]);
    }

    #[test]
    fn link_down_blinks_at_one_hertz() {
        let mut led = StatusLed::new(RecordingPin::default());
        led.set_state(LedState::LinkDown, 1000).unwrap();
        let l = levels(&mut led, 1000, 2000);
        // 500 ms on, 500 ms off, twice.
        assert!(l[..50].iter().all(|&x| x));
        assert!(l[50..100].iter().all(|&x| !x));
        assert!(l[100..150].iter().all(|&x| x));
        assert!(l[150..].iter().all(|&x| !x));
        assert_eq!(led.release().writes, vec![true, false, true, false]);
    }

    #[test]
    fn error_blinks_fast_and_state_changes_restart_the_pattern() {
        let mut led = StatusLed::new(RecordingPin::default());
        led.set_state(LedState::Error, 0).unwrap();
        let l = levels(&mut led, 0, 1000);
        let toggles = l.windows(2).filter(|w| w[0] != w[1]).count();
        assert_eq!(toggles, 9, "5 Hz blink over 1 s");
        // Mid-blink, a recovery shows at once.
        led.set_state(LedState::Streaming, 1050).unwrap();
        assert_eq!(led.lit, Some(true));
        led.set_state(LedState::Off, 2000).unwrap();
        assert_eq!(led.lit, Some(false));
    }

    #[test]
    fn drive_follows_the_signal_and_ends_off() {
        use std::sync::Arc;
        let signal = Arc::new(LedSignal::default());
        assert_eq!(signal.get(), LedState::LinkDown);
        signal.set(LedState::Streaming);
        let stop = Arc::new(AtomicBool::new(false));
        let driver = {
            let (signal, stop) = (Arc::clone(&signal), Arc::clone(&stop));
            std::thread::spawn(move || {
                drive(StatusLed::new(RecordingPin::default()), &signal, &stop)
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::Relaxed);
        let pin = driver.join().unwrap();
        // Lit for streaming, then dark on stop.
        assert_eq!(pin.writes.first(), Some(&true));
        assert_eq!(pin.writes.last(), Some(&false));
    }
}
