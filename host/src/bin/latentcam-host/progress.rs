//! Progress on stderr for the long-running commands: a bar on a terminal;
//! elsewhere (a log, a pipe, a CI job) a plain line at each stage's start
//! and then every [`PLAIN_EVERY`], so a log shows that work goes on
//! without filling up with redraws.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often a plain progress line is written.
pub const PLAIN_EVERY: Duration = Duration::from_secs(10);

/// One stage's progress: a bar, or plain lines.
pub struct Progress {
    what: String,
    total: u64,
    unit: Unit,
    shown: Shown,
}

/// What the positions count.
#[derive(Clone, Copy)]
pub enum Unit {
    /// Bytes (of a file being read).
    Bytes,
    /// Optimisation steps.
    Steps,
}

enum Shown {
    Bar(indicatif::ProgressBar),
    Plain { last: Instant },
}

impl Progress {
    /// Starts showing the progress of `what` towards `total`.
    pub fn start(what: impl Into<String>, total: u64, unit: Unit) -> Self {
        let what = what.into();
        let shown = if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(total);
            let counts = match unit {
                Unit::Bytes => "{bytes}/{total_bytes}",
                Unit::Steps => "step {pos}/{len}",
            };
            bar.set_style(
                indicatif::ProgressStyle::with_template(&format!(
                    "{{msg}} {{bar:40}} {counts} eta {{eta}}"
                ))
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_message(what.clone());
            Shown::Bar(bar)
        } else {
            Shown::Plain {
                last: Instant::now(),
            }
        };
        let progress = Self {
            what,
            total,
            unit,
            shown,
        };
        if let Shown::Plain { .. } = progress.shown {
            progress.line(0);
        }
        progress
    }

    /// Moves to `position`.
    pub fn set(&mut self, position: u64) {
        match &mut self.shown {
            Shown::Bar(bar) => bar.set_position(position),
            Shown::Plain { last } => {
                if last.elapsed() >= PLAIN_EVERY {
                    *last = Instant::now();
                    self.line(position);
                }
            }
        }
    }

    fn line(&self, position: u64) {
        let percent = match self.total {
            0 => 0.0,
            total => 100.0 * position as f64 / total as f64,
        };
        let counts = match self.unit {
            Unit::Bytes => format!("{position} of {} bytes", self.total),
            Unit::Steps => format!("step {position} of {}", self.total),
        };
        eprintln!("{}: {percent:.0}% ({counts})", self.what);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Shown::Bar(bar) = &self.shown {
            bar.finish_and_clear();
        }
    }
}

/// A reader that reports how many bytes have been read through it.
pub struct Counting<'a, R> {
    inner: R,
    read: u64,
    progress: &'a mut Progress,
}

impl<'a, R> Counting<'a, R> {
    /// Reads `inner`, moving `progress` along.
    pub fn new(inner: R, progress: &'a mut Progress) -> Self {
        Self {
            inner,
            read: 0,
            progress,
        }
    }
}

impl<R: std::io::Read> std::io::Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        self.progress.set(self.read);
        Ok(n)
    }
}
