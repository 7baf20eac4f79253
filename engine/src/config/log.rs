//! Log output: text or JSON lines on stderr, colour only on a terminal.

use std::io::IsTerminal;

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

/// The environment variable that picks the log format, whatever the settings say
/// (`text` or `json`): JSON lines without a configuration file.
pub const LOG_FORMAT_ENV: &str = "CONDUIT_LOG_FORMAT";

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LogFormat {
    /// One human-readable line per event (with colour on a terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields`, and the
    /// event's spans (`span`: the innermost, `spans`: all, outermost first) with their
    /// fields, so each line of a connection carries the connection's fields.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s.trim() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format {other:?} (expected text or json)"
            )),
        }
    }
}

/// The `[log]` section: what [`init_logging`] sets up.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogSettings {
    /// Text or JSON lines. Default [`LogFormat::Text`]; `CONDUIT_LOG_FORMAT` overrides.
    pub format: LogFormat,
    /// Which events are written, in `RUST_LOG` syntax (`info,conduit=debug`). Default
    /// `info`; a non-empty `RUST_LOG` overrides it.
    pub filter: String,
}

impl Default for LogSettings {
    fn default() -> LogSettings {
        LogSettings {
            format: LogFormat::Text,
            filter: "info".to_owned(),
        }
    }
}

impl LogSettings {
    /// Sets `format`.
    pub fn format(mut self, format: LogFormat) -> LogSettings {
        self.format = format;
        self
    }

    /// Sets `filter`.
    pub fn filter(mut self, filter: impl Into<String>) -> LogSettings {
        self.filter = filter.into();
        self
    }
}

/// Why [`init_logging`] did not set up logging.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// `CONDUIT_LOG_FORMAT` is neither `text` nor `json`.
    #[error("{LOG_FORMAT_ENV}: {0}")]
    Format(String),
    /// The filter (from `origin`: `RUST_LOG` or the settings) does not parse.
    #[error("bad log filter in {origin}: {problem}")]
    Filter {
        /// `RUST_LOG` or `log.filter`.
        origin: &'static str,
        /// What the parser said.
        problem: String,
    },
    /// A global `tracing` subscriber (or `log` logger) is already set: this process's
    /// logging is someone else's to set up.
    #[error("a global log subscriber is already set")]
    AlreadySet,
}

/// Sets up this process's logging as `settings` say, on stderr: text with colour codes
/// only when stderr is a terminal (a file or a pipe gets plain text), or JSON lines
/// with the fields of the spans each event happened in. `RUST_LOG`, when set and not
/// empty, replaces `settings.filter`; `CONDUIT_LOG_FORMAT` (`text` or `json`) replaces
/// `settings.format`.
///
/// Fails, setting nothing up, when a filter does not parse or a global subscriber is
/// already set (a second call, or a test harness's own).
pub fn init_logging(settings: &LogSettings) -> Result<(), LogError> {
    let format = match std::env::var(LOG_FORMAT_ENV) {
        Ok(v) if !v.trim().is_empty() => v.parse().map_err(LogError::Format)?,
        _ => settings.format,
    };
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => (v, "RUST_LOG"),
        _ => (settings.filter.clone(), "log.filter"),
    };
    let filter = parse_filter(&filter.0).map_err(|problem| LogError::Filter {
        origin: filter.1,
        problem,
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .with_ansi(false)
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
    result.map_err(|_| LogError::AlreadySet)
}

/// `filter` as an [`EnvFilter`], or what is wrong with it.
pub(super) fn parse_filter(filter: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(filter).map_err(|e| e.to_string())
}
