//! Logging: tracing with JSON lines when stdout is not a terminal (for dashboards) and
//! readable text on a terminal. Every log line that dashboards use carries a stable `event`
//! field (see docs/operations.md).

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry};

use crate::config::LogSettings;

/// Changes the log filter of a running process (SIGHUP reload).
#[derive(Clone)]
pub struct LogReloader {
    /// The reload handle of the installed filter layer.
    handle: reload::Handle<EnvFilter, Registry>,
}

impl std::fmt::Debug for LogReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogReloader")
    }
}

impl LogReloader {
    /// Replace the filter with `level` (a tracing directive).
    pub fn set_level(&self, level: &str) -> Result<(), String> {
        let filter =
            EnvFilter::try_new(configured_filter(level)).map_err(|error| error.to_string())?;
        self.handle
            .reload(filter)
            .map_err(|error| error.to_string())
    }
}

/// Install the global subscriber. `RUST_LOG`, when set, wins over the configured level.
/// Logs go to stderr so stdout stays for command output (export, summaries).
pub fn init(settings: &LogSettings) -> LogReloader {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|directive| EnvFilter::try_new(directive).ok())
        .unwrap_or_else(|| {
            EnvFilter::try_new(configured_filter(&settings.level))
                .unwrap_or_else(|_| EnvFilter::new("info"))
        });
    let (filter, handle) = reload::Layer::new(filter);
    let json = match settings.format.as_str() {
        "json" => true,
        "text" => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        let _ = registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(std::io::stderr),
            )
            .try_init();
    } else {
        let _ = registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init();
    }
    LogReloader { handle }
}

/// The configured level, with two chatty dependencies kept at warn unless the level names
/// them itself: PostgreSQL notices ("relation … already exists, skipping" from idempotent
/// migrations) and the scheduler's start-up chatter.
fn configured_filter(level: &str) -> String {
    let mut filter = level.to_string();
    for quiet in ["sqlx::postgres::notice", "tokio_cron_scheduler"] {
        if !level.contains(quiet) {
            filter.push_str(&format!(",{quiet}=warn"));
        }
    }
    filter
}
