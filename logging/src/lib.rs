//! How every latentcam program logs: one set-up, called first thing in the
//! `main` of the edge, the host and the demo, so that they filter, format
//! and write log lines alike.

use std::fmt;
use std::io::IsTerminal;
use std::str::FromStr;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

/// The environment variable holding the filter: a level (`debug`), which
/// applies to latentcam's own crates, or per-crate directives
/// (`latentcam_host=debug,tract_core=info`) taken as they are.
pub const LOG_ENV: &str = "LATENTCAM_LOG";

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One line of text per event: time, level, message, fields.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields.message`
    /// and the event's other fields), for log collectors.
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format {other:?} (expected text or json)"
            )),
        }
    }
}

/// The filter for `spec`: a bare level (`info`, `debug`, …) turns on that
/// level for latentcam's crates and at most `warn` for everything else, so
/// that `debug` shows latentcam's own story rather than thousands of lines
/// of inference-engine internals; anything else is an `EnvFilter`
/// directive list, used as given.
pub fn filter(spec: &str) -> Result<EnvFilter, String> {
    let spec = spec.trim();
    let directives = match spec.parse::<LevelFilter>() {
        Ok(level) => format!("{},latentcam={level}", level.min(LevelFilter::WARN)),
        Err(_) => spec.to_owned(),
    };
    EnvFilter::try_new(&directives).map_err(|e| format!("bad log filter {spec:?}: {e}"))
}

/// Sends log lines to stderr in `format`, filtered by `$LATENTCAM_LOG` (else
/// by `default`, such as `"info"`; see [`filter`]); text is coloured only
/// when stderr is a terminal, so that journald and redirected logs get
/// plain text. A filter that does not parse is reported and `default` used.
/// A second call leaves the first set-up in place.
pub fn init(default: &str, format: LogFormat) {
    let from_env = std::env::var(LOG_ENV).ok().filter(|s| !s.trim().is_empty());
    let (filter, problem) = match from_env.as_deref().map(filter) {
        Some(Ok(filter)) => (filter, None),
        Some(Err(problem)) => (fallback(default), Some(problem)),
        None => (fallback(default), None),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .try_init(),
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
    };
    if let Some(problem) = problem {
        tracing::warn!("{LOG_ENV}: {problem}; logging at {default}");
    }
}

fn fallback(default: &str) -> EnvFilter {
    filter(default).unwrap_or_else(|_| EnvFilter::new("info"))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tracing::Level;

    use super::*;

    /// Log lines written to memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// What `spec` lets through of one event per target and level.
    fn passed(spec: &str) -> String {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter(spec).unwrap())
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::event!(target: "latentcam_firmware::pipeline", Level::DEBUG, "ours-debug");
            tracing::event!(target: "latentcam_host", Level::INFO, "ours-info");
            tracing::event!(target: "tract_core::model", Level::DEBUG, "theirs-debug");
            tracing::event!(target: "tract_core::model", Level::INFO, "theirs-info");
            tracing::event!(target: "rumqttc::state", Level::WARN, "theirs-warn");
        });
        out.text()
    }

    #[test]
    fn a_bare_level_is_for_latentcam_and_others_stay_at_warn() {
        let debug = passed("debug");
        assert!(
            debug.contains("ours-debug") && debug.contains("ours-info"),
            "{debug}"
        );
        assert!(debug.contains("theirs-warn"), "{debug}");
        assert!(
            !debug.contains("theirs-debug") && !debug.contains("theirs-info"),
            "{debug}"
        );
        let info = passed("info");
        assert!(
            !info.contains("ours-debug") && info.contains("ours-info"),
            "{info}"
        );
        assert!(!info.contains("theirs-info"), "{info}");
        let error = passed("error");
        assert!(
            !error.contains("theirs-warn"),
            "others are never louder: {error}"
        );
    }

    #[test]
    fn directives_are_taken_as_given() {
        let all = passed("debug,latentcam_host=off");
        assert!(
            all.contains("theirs-debug") && all.contains("ours-debug"),
            "{all}"
        );
        assert!(!all.contains("ours-info"), "{all}");
        assert!(filter("latentcam=loud").is_err());
    }

    #[test]
    fn formats_read_back_as_they_are_written() {
        for format in [LogFormat::Text, LogFormat::Json] {
            assert_eq!(format.to_string().parse::<LogFormat>(), Ok(format));
        }
        assert!(
            "xml"
                .parse::<LogFormat>()
                .unwrap_err()
                .contains("text or json")
        );
    }
}
