//! Typed, layered configuration: `config/default.toml` (compiled in), then an optional file,
//! then environment variables `CONTRACTD__SECTION__KEY`. Checked once at start: a wrong value
//! is an error naming its key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono_tz::Tz;
use serde::Deserialize;

/// The defaults shipped with the binary.
pub const DEFAULT_CONFIG: &str = include_str!("../config/default.toml");

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The sources could not be read or merged (file missing, bad TOML, wrong type). The
    /// cause is part of the message and not also a `source()`, so a chain prints it once.
    #[error("configuration: {0}")]
    Load(config::ConfigError),
    /// A value is of the right type but not usable.
    #[error("configuration key {key}: {message}")]
    Invalid {
        /// The dotted key, e.g. `contracts.default_time_zone`.
        key: &'static str,
        /// What is wrong and what is expected.
        message: String,
    },
}

impl From<config::ConfigError> for ConfigError {
    fn from(error: config::ConfigError) -> Self {
        ConfigError::Load(error)
    }
}

/// Where the configuration comes from, kept so that it can be read again while running
/// (the daemon reloads on SIGHUP): the compiled-in defaults, an optional file over them, the
/// environment over that, and an optional database URL over everything.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// A TOML file layered over the defaults; `None` reads defaults and environment only.
    pub file: Option<PathBuf>,
    /// A database URL that wins over every layer, for whoever starts the process with one
    /// database in mind (an operator, a test); `None` keeps the layered `database.url`.
    pub database_url: Option<String>,
}

impl ConfigSource {
    /// Read every layer now and check the result.
    pub fn load(&self) -> Result<Settings, ConfigError> {
        Settings::load(self.file.as_deref(), self.database_url.as_deref())
    }
}

/// Everything contractd can be configured with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where contracts are stored.
    pub database: DatabaseSettings,
    /// Defaults for contracts.
    pub contracts: ContractSettings,
    /// How the daily jobs work through contracts.
    pub sweep: SweepSettings,
    /// When the daemon looks for due work.
    pub scheduler: SchedulerSettings,
    /// Health and metrics endpoints.
    pub server: ServerSettings,
    /// Logging.
    pub log: LogSettings,
    /// Billing rules.
    pub billing: BillingSettings,
}

/// `[database]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://FILE` or `postgres://…`.
    pub url: String,
    /// Connection pool size.
    pub max_connections: u32,
    /// Apply migrations when a command starts.
    pub migrate_on_start: bool,
    /// SQLite: writer wait.
    pub busy_timeout_ms: u64,
    /// PostgreSQL: connection wait.
    pub connect_timeout_ms: u64,
}

/// `[contracts]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractSettings {
    /// Zone for imported contracts that name none.
    pub default_time_zone: String,
}

/// `[sweep]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSettings {
    /// Contracts per batch (one transaction each).
    pub batch_size: u32,
    /// Lease of a claimed run.
    pub lease_seconds: u64,
    /// Zones swept at once (PostgreSQL; SQLite sweeps one at a time).
    pub parallel_zones: usize,
}

/// `[scheduler]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerSettings {
    /// Cron expression with seconds, in UTC.
    pub tick: String,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    pub listen: String,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// tracing filter directive.
    pub level: String,
    /// `auto`, `json` or `text`.
    pub format: String,
}

/// `[billing]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingSettings {
    /// See [`crate::lifecycle::RulePolicy::allow_end_before_billed_to`].
    pub allow_end_before_billed_to: bool,
}

/// Which database a URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    /// `sqlite:` URLs.
    Sqlite,
    /// `postgres://` and `postgresql://` URLs.
    Postgres,
}

impl Settings {
    /// Load the layers and check every value. `database_url`, when given, wins over every
    /// layer.
    pub fn load(file: Option<&Path>, database_url: Option<&str>) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_CONFIG,
            config::FileFormat::Toml,
        ));
        if let Some(file) = file {
            builder = builder.add_source(config::File::from(file).required(true));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("CONTRACTD")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        );
        if let Some(url) = database_url {
            builder = builder.set_override("database.url", url)?;
        }
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Check the values the types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.default_time_zone()?;
        self.database_kind()?;
        self.listen_address()?;
        validate_tick(&self.scheduler.tick)?;
        if self.sweep.batch_size == 0 || self.sweep.batch_size > 100_000 {
            return Err(ConfigError::Invalid {
                key: "sweep.batch_size",
                message: format!("{} is out of range 1..=100000", self.sweep.batch_size),
            });
        }
        if !(1..=64).contains(&self.sweep.parallel_zones) {
            return Err(ConfigError::Invalid {
                key: "sweep.parallel_zones",
                message: format!("{} is out of range 1..=64", self.sweep.parallel_zones),
            });
        }
        if self.sweep.lease_seconds < 2 {
            return Err(ConfigError::Invalid {
                key: "sweep.lease_seconds",
                message: "must be at least 2".to_string(),
            });
        }
        if self.database.connect_timeout_ms == 0 {
            // Zero is no wait at all: every PostgreSQL connection would time out at once.
            return Err(ConfigError::Invalid {
                key: "database.connect_timeout_ms",
                message: "must be at least 1 (milliseconds)".to_string(),
            });
        }
        if self.database.max_connections == 0 {
            return Err(ConfigError::Invalid {
                key: "database.max_connections",
                message: "must be at least 1".to_string(),
            });
        }
        match self.log.format.as_str() {
            "auto" | "json" | "text" => {}
            other => {
                return Err(ConfigError::Invalid {
                    key: "log.format",
                    message: format!("'{other}' is not one of auto, json, text"),
                })
            }
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level).map_err(|error| {
            ConfigError::Invalid {
                key: "log.level",
                message: format!("'{}': {error}", self.log.level),
            }
        })?;
        Ok(())
    }

    /// The configured default zone.
    pub fn default_time_zone(&self) -> Result<Tz, ConfigError> {
        self.contracts
            .default_time_zone
            .parse::<Tz>()
            .map_err(|_| ConfigError::Invalid {
                key: "contracts.default_time_zone",
                message: format!(
                    "'{}' is not an IANA time zone",
                    self.contracts.default_time_zone
                ),
            })
    }

    /// Which database the URL selects.
    pub fn database_kind(&self) -> Result<DatabaseKind, ConfigError> {
        let url = self.database.url.as_str();
        if url.starts_with("sqlite:") {
            Ok(DatabaseKind::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            url::Url::parse(url).map_err(|error| ConfigError::Invalid {
                key: "database.url",
                message: format!("{}: {error}", crate::storage::redact_url(url)),
            })?;
            Ok(DatabaseKind::Postgres)
        } else {
            Err(ConfigError::Invalid {
                key: "database.url",
                message: format!(
                    "'{}' is neither sqlite://FILE nor postgres://…",
                    crate::storage::redact_url(url)
                ),
            })
        }
    }

    /// The health and metrics address.
    pub fn listen_address(&self) -> Result<SocketAddr, ConfigError> {
        self.server
            .listen
            .parse()
            .map_err(|_| ConfigError::Invalid {
                key: "server.listen",
                message: format!(
                    "'{}' is not an address such as 127.0.0.1:9464",
                    self.server.listen
                ),
            })
    }

    /// The lease of a claimed run.
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.sweep.lease_seconds)
    }
}

/// Check a tick expression the way the scheduler will read it.
pub fn validate_tick(expression: &str) -> Result<(), ConfigError> {
    tokio_cron_scheduler::Job::new_async(expression, |_, _| Box::pin(async {}))
        .map(|_| ())
        .map_err(|error| ConfigError::Invalid {
            key: "scheduler.tick",
            message: format!("'{expression}' is not a cron expression with seconds: {error:?}"),
        })
}
