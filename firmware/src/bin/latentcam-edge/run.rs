//! Running the pipeline: the configured parts, the LED and systemd
//! notification threads, and the report at the end.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use latentcam_firmware::assemble;
use latentcam_firmware::led::{self, LedSignal};
use latentcam_firmware::pipeline::{self, Report};

use crate::args::RunArgs;

/// Runs the pipeline until SIGINT/SIGTERM, `--max-frames` or the end of
/// a replay.
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing the signal handler")?;
    }
    let (parts, mut settings) = assemble::open_all(&config, Arc::clone(&stop))?;
    settings.max_frames = args.max_frames;
    settings.drain_timeout = std::time::Duration::from_secs_f64(args.drain_seconds.max(0.0));

    let signal = Arc::new(LedSignal::default());
    let led_stop = Arc::new(AtomicBool::new(false));
    let led_thread = if config.led.chip.as_os_str().is_empty() {
        None
    } else {
        let led = led::open_gpio(&config.led.chip, config.led.line)?;
        let (signal, led_stop) = (Arc::clone(&signal), Arc::clone(&led_stop));
        Some(std::thread::spawn(move || {
            led::drive(led, &signal, &led_stop);
        }))
    };

    // Under systemd (Type=notify): READY, STATUS and watchdog pings.
    let notify_thread = latentcam_firmware::notify::Notifier::from_env().map(|notifier| {
        let (signal, stop) = (Arc::clone(&signal), Arc::clone(&led_stop));
        std::thread::spawn(move || latentcam_firmware::notify::watch(&notifier, &signal, &stop))
    });

    let result = pipeline::run(parts, settings, stop, Some(signal));
    led_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in [led_thread, notify_thread].into_iter().flatten() {
        let _ = t.join();
    }
    let report = result?;
    summarize(&report);
    if let Some(path) = &args.report {
        write_report(path, &report)?;
    }
    Ok(())
}

fn summarize(r: &Report) {
    let t = &r.timings;
    let work = t.capture.total_s
        + t.preprocess.total_s
        + t.encode.total_s
        + t.codec.total_s
        + t.send.total_s;
    let share = |s: f64| if work > 0.0 { 100.0 * s / work } else { 0.0 };
    tracing::info!(
        "{} frames captured, {} encoded ({:.2} fps), {} dropped by the queue, {} corrupt; \
         {} sent + {} from spool, {} lost, {} still spooled; peak RSS {} KiB",
        r.captured,
        r.encoded,
        r.fps,
        r.dropped,
        r.corrupt,
        r.session.sent,
        r.session.sent_from_spool,
        r.session.link_dropped,
        r.session.spool_pending,
        r.peak_rss_kib.unwrap_or(0),
    );
    tracing::info!(
        "time per stage: capture {:.1}%, preprocess {:.1}% ({} us p50), encode {:.1}% ({} us p50), codec {:.1}%, send {:.1}%",
        share(t.capture.total_s),
        share(t.preprocess.total_s),
        t.preprocess.p50_us,
        share(t.encode.total_s),
        t.encode.p50_us,
        share(t.codec.total_s),
        share(t.send.total_s),
    );
}

fn write_report(path: &Path, report: &Report) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(report).context("rendering the report")?;
    std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
}
