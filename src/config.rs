//! Typed, layered configuration: `config/default.toml` (compiled in), then an optional file,
//! then environment variables `CONTRACTD__SECTION__KEY`. Checked once at start: a wrong value
//! is an error naming its key.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono_tz::Tz;
use serde::Deserialize;

use crate::calendar::Period;
use crate::contract::LeadTimes;
use crate::storage::Subscription;
use crate::webhooks::{redact_url, stored_kind, SecretString, SigningKey, TYPE_PREFIX};

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
    /// A value of one entry of a list is not usable (`webhooks.endpoints[0].url`): the same
    /// as [`ConfigError::Invalid`], with a key built at run time.
    #[error("configuration key {key}: {message}")]
    InvalidEntry {
        /// The dotted key with the entry's index, e.g. `webhooks.endpoints[0].url`.
        key: String,
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
    /// Limits on operator cancellations.
    pub cancellations: CancellationSettings,
    /// Webhook endpoints and how deliveries are retried.
    pub webhooks: WebhookSettings,
    /// Reminders before deadlines and end dates.
    #[serde(default)]
    pub reminders: ReminderSettings,
}

/// `[database]`. Its URLs may hold passwords: `Debug` prints them redacted.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://FILE` or `postgres://…`.
    pub url: String,
    /// PostgreSQL: a URL straight to the server, for migrations (they need a session of
    /// their own) when `url` goes through a pooler; absent, `url` serves for everything.
    #[serde(default)]
    pub direct_url: Option<String>,
    /// PostgreSQL: `url` goes through a pooler in transaction mode (PgBouncer's
    /// `pool_mode = transaction`), so statements must not outlive a transaction.
    pub transaction_pooler: bool,
    /// Connection pool size.
    pub max_connections: u32,
    /// Apply migrations when a command starts.
    pub migrate_on_start: bool,
    /// SQLite: writer wait.
    pub busy_timeout_ms: u64,
    /// PostgreSQL: connection wait.
    pub connect_timeout_ms: u64,
}

impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &crate::storage::redact_url(&self.url))
            .field(
                "direct_url",
                &self.direct_url.as_deref().map(crate::storage::redact_url),
            )
            .field("transaction_pooler", &self.transaction_pooler)
            .field("max_connections", &self.max_connections)
            .field("migrate_on_start", &self.migrate_on_start)
            .field("busy_timeout_ms", &self.busy_timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .finish()
    }
}

impl DatabaseSettings {
    /// How statements are sent to PostgreSQL through `url`.
    pub fn statements(&self) -> crate::storage::Statements {
        if self.transaction_pooler {
            crate::storage::Statements::Unnamed
        } else {
            crate::storage::Statements::Prepared
        }
    }
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

/// `[cancellations]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancellationSettings {
    /// How far before today a cancellation's received date may lie (a period such as `90D`)
    /// unless the operator overrides; `0D` accepts only today.
    pub max_backdate: String,
}

impl CancellationSettings {
    /// `max_backdate` as a period.
    pub fn max_backdate(&self) -> Result<Period, ConfigError> {
        Period::parse(&self.max_backdate).map_err(|error| ConfigError::Invalid {
            key: "cancellations.max_backdate",
            message: error.to_string(),
        })
    }
}

/// `[reminders]`: reminders before deadlines and end dates (docs/rules.md §5.5).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReminderSettings {
    /// How long before a deadline or end date each reminder goes out (`["30D", "7D"]`), for
    /// contracts without their own `reminder_lead_times`; empty: no reminders. From the
    /// environment, a comma-separated list (`CONTRACTD__REMINDERS__LEAD_TIMES=30D,7D`).
    #[serde(default)]
    pub lead_times: LeadTimesSetting,
}

/// A list of lead times as configured: a TOML array, or one comma-separated string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum LeadTimesSetting {
    /// `["30D", "7D"]`.
    List(Vec<String>),
    /// `"30D,7D"` (an environment variable).
    Text(String),
}

impl Default for LeadTimesSetting {
    fn default() -> Self {
        LeadTimesSetting::List(Vec::new())
    }
}

impl ReminderSettings {
    /// The lead times, each checked like every period; an error names the key and entry.
    pub fn lead_times(&self) -> Result<LeadTimes, ConfigError> {
        let texts: Vec<&str> = match &self.lead_times {
            LeadTimesSetting::List(list) => list.iter().map(String::as_str).collect(),
            LeadTimesSetting::Text(text) if text.trim().is_empty() => Vec::new(),
            LeadTimesSetting::Text(text) => text.split(',').collect(),
        };
        let mut periods = Vec::with_capacity(texts.len());
        for (index, text) in texts.iter().enumerate() {
            let period = Period::parse(text).map_err(|error| ConfigError::InvalidEntry {
                key: format!("reminders.lead_times[{index}]"),
                message: error.to_string(),
            })?;
            periods.push(period);
        }
        LeadTimes::new(&periods).map_err(|error| ConfigError::Invalid {
            key: "reminders.lead_times",
            message: error.to_string(),
        })
    }
}

/// `[webhooks]`: where events are sent and how failed deliveries are retried.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// The whole of one attempt (connect, send, read the answer), in ms: a receiver that
    /// stalls costs at most this.
    pub timeout_ms: u64,
    /// The retry delay's ceiling after the first failure, in ms.
    pub initial_backoff_ms: u64,
    /// The retry delay's ceiling never exceeds this, in ms.
    pub max_backoff_ms: u64,
    /// Attempts in all before a delivery fails for good.
    pub max_attempts: u32,
    /// How often `serve` looks for new events when nothing wakes it, in ms.
    pub poll_ms: u64,
    /// The endpoints (`[[webhooks.endpoints]]`); none by default.
    #[serde(default)]
    pub endpoints: Vec<EndpointSettings>,
}

/// One `[[webhooks.endpoints]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSettings {
    /// Unique name: the endpoint's key in the database, metrics, logs and commands.
    pub name: String,
    /// Where events are POSTed (`http` or `https`). Never logged with its credentials.
    pub url: String,
    /// The signing secret itself (`whsec_` + base64); exactly one of this and `secret_env`.
    #[serde(default)]
    pub secret: Option<SecretString>,
    /// The environment variable holding the signing secret, so that it stays out of files.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// The event types it receives (`contract.extended`, …); `None` for every type.
    #[serde(default)]
    pub events: Option<Vec<String>>,
}

impl WebhookSettings {
    /// Check every value, including that each endpoint's secret can be read and decoded now
    /// (from the process environment for `secret_env`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_with(&|name| std::env::var(name).ok())
    }

    /// [`WebhookSettings::validate`] with the environment given as a lookup.
    pub fn validate_with(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let at_least_one = |key: &'static str, value: u64| {
            if value == 0 {
                Err(ConfigError::Invalid {
                    key,
                    message: "must be at least 1".to_string(),
                })
            } else {
                Ok(())
            }
        };
        at_least_one("webhooks.timeout_ms", self.timeout_ms)?;
        at_least_one("webhooks.initial_backoff_ms", self.initial_backoff_ms)?;
        at_least_one("webhooks.max_attempts", u64::from(self.max_attempts))?;
        at_least_one("webhooks.poll_ms", self.poll_ms)?;
        if self.max_backoff_ms < self.initial_backoff_ms {
            return Err(ConfigError::Invalid {
                key: "webhooks.max_backoff_ms",
                message: format!(
                    "{} is less than webhooks.initial_backoff_ms ({})",
                    self.max_backoff_ms, self.initial_backoff_ms
                ),
            });
        }
        for (index, endpoint) in self.endpoints.iter().enumerate() {
            endpoint.validate(index)?;
            if let Some(first) = self.endpoints[..index]
                .iter()
                .position(|other| other.name == endpoint.name)
            {
                return Err(ConfigError::InvalidEntry {
                    key: format!("webhooks.endpoints[{index}].name"),
                    message: format!(
                        "'{}' is already the name of webhooks.endpoints[{first}]",
                        endpoint.name
                    ),
                });
            }
            endpoint.signing_key_with(index, env)?;
        }
        Ok(())
    }

    /// Every endpoint's signing key, in the order of `endpoints`, read from the process
    /// environment where `secret_env` says so.
    pub fn signing_keys(&self) -> Result<Vec<SigningKey>, ConfigError> {
        self.signing_keys_with(&|name| std::env::var(name).ok())
    }

    /// [`WebhookSettings::signing_keys`] with the environment given as a lookup.
    pub fn signing_keys_with(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<SigningKey>, ConfigError> {
        self.endpoints
            .iter()
            .enumerate()
            .map(|(index, endpoint)| endpoint.signing_key_with(index, env))
            .collect()
    }
}

impl EndpointSettings {
    /// Check the name, the URL and the event types of the entry at `index`.
    fn validate(&self, index: usize) -> Result<(), ConfigError> {
        let key = |field: &str| format!("webhooks.endpoints[{index}].{field}");
        if self.name.is_empty() {
            return Err(ConfigError::InvalidEntry {
                key: key("name"),
                message: "must not be empty".to_string(),
            });
        }
        // The name is a metric label, a log field and a command-line argument: keep it plain.
        if !self
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(ConfigError::InvalidEntry {
                key: key("name"),
                message: format!(
                    "'{}' may only contain ASCII letters, digits, '-', '_' and '.'",
                    self.name
                ),
            });
        }
        self.parsed_url(index)?;
        if let Some(events) = &self.events {
            if events.is_empty() {
                return Err(ConfigError::InvalidEntry {
                    key: key("events"),
                    message: "is empty: leave it out to receive every event type".to_string(),
                });
            }
            for (position, event_type) in events.iter().enumerate() {
                if stored_kind(event_type).is_none() {
                    return Err(ConfigError::InvalidEntry {
                        key: format!("webhooks.endpoints[{index}].events[{position}]"),
                        message: format!(
                            "'{event_type}' is not a known event type: one of {}",
                            crate::webhooks::known_event_types().join(", ")
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// The URL, checked: it parses, is `http` or `https` and names a host.
    pub fn parsed_url(&self, index: usize) -> Result<url::Url, ConfigError> {
        let invalid = |message: String| ConfigError::InvalidEntry {
            key: format!("webhooks.endpoints[{index}].url"),
            message,
        };
        // The URL's own text is not repeated when it does not parse: it may hold a password.
        let url = url::Url::parse(&self.url)
            .map_err(|error| invalid(format!("not an absolute URL: {error}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(format!(
                "'{}': scheme '{}' is not http or https",
                redact_url(&url),
                url.scheme()
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid(format!("'{}' names no host", redact_url(&url))));
        }
        Ok(url)
    }

    /// The signing key of the entry at `index`, from `secret` or from the variable
    /// `secret_env` names (looked up with `env`).
    pub fn signing_key_with(
        &self,
        index: usize,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<SigningKey, ConfigError> {
        let invalid = |field: &str, message: String| ConfigError::InvalidEntry {
            key: format!("webhooks.endpoints[{index}].{field}"),
            message,
        };
        match (&self.secret, &self.secret_env) {
            (Some(secret), None) => SigningKey::from_secret(secret)
                .map_err(|error| invalid("secret", error.to_string())),
            (None, Some(variable)) => {
                if variable.is_empty() {
                    return Err(invalid(
                        "secret_env",
                        "must name an environment variable".to_string(),
                    ));
                }
                let value = env(variable).ok_or_else(|| {
                    invalid(
                        "secret_env",
                        format!("the environment variable {variable} is not set"),
                    )
                })?;
                SigningKey::from_secret(&SecretString::new(value)).map_err(|error| {
                    invalid("secret_env", format!("the value of {variable}: {error}"))
                })
            }
            (None, None) => Err(invalid(
                "secret",
                "no secret: set secret (whsec_…) or secret_env (a variable holding it)".to_string(),
            )),
            (Some(_), Some(_)) => Err(invalid(
                "secret",
                "both secret and secret_env are set: keep one".to_string(),
            )),
        }
    }

    /// What the outbox needs to know of this endpoint: its name and the stored kinds it
    /// receives.
    pub fn subscription(&self) -> Subscription {
        Subscription {
            endpoint: self.name.clone(),
            kinds: self.events.as_ref().map(|events| {
                events
                    .iter()
                    .map(|event_type| {
                        event_type
                            .strip_prefix(TYPE_PREFIX)
                            .unwrap_or(event_type)
                            .to_string()
                    })
                    .collect()
            }),
        }
    }
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
        self.cancellations.max_backdate()?;
        self.webhooks.validate()?;
        self.reminders.lead_times()?;
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

    /// Which database the URL selects; also checks `database.direct_url` and
    /// `database.transaction_pooler`, which only PostgreSQL has.
    pub fn database_kind(&self) -> Result<DatabaseKind, ConfigError> {
        let kind = self.url_kind()?;
        if let Some(direct) = &self.database.direct_url {
            let invalid = |message: String| ConfigError::Invalid {
                key: "database.direct_url",
                message,
            };
            if kind != DatabaseKind::Postgres {
                return Err(invalid(
                    "only for PostgreSQL (database.url is SQLite)".into(),
                ));
            }
            if !(direct.starts_with("postgres://") || direct.starts_with("postgresql://")) {
                return Err(invalid(format!(
                    "'{}' is not postgres://…",
                    crate::storage::redact_url(direct)
                )));
            }
            url::Url::parse(direct).map_err(|error| {
                invalid(format!("{}: {error}", crate::storage::redact_url(direct)))
            })?;
        }
        if self.database.transaction_pooler && kind != DatabaseKind::Postgres {
            return Err(ConfigError::Invalid {
                key: "database.transaction_pooler",
                message: "only for PostgreSQL (database.url is SQLite)".into(),
            });
        }
        Ok(kind)
    }

    /// Which database `database.url` selects.
    fn url_kind(&self) -> Result<DatabaseKind, ConfigError> {
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

    /// What the rules may do, from `[billing]` and `[reminders]` (checked by
    /// [`Settings::validate`]; an unusable lead time list counts as none).
    pub fn rule_policy(&self) -> crate::lifecycle::RulePolicy {
        crate::lifecycle::RulePolicy {
            allow_end_before_billed_to: self.billing.allow_end_before_billed_to,
            reminder_lead_times: self.reminders.lead_times().unwrap_or(LeadTimes::NONE),
        }
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn load(toml: &str) -> Result<Settings, ConfigError> {
        let mut file = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile()
            .expect("a temporary file");
        file.write_all(toml.as_bytes()).expect("written");
        Settings::load(Some(file.path()), Some("sqlite://unused.db"))
    }

    fn endpoint() -> EndpointSettings {
        EndpointSettings {
            name: "crm".to_string(),
            url: "https://crm.example/hooks/contractd".to_string(),
            secret: Some(SecretString::new(SECRET)),
            secret_env: None,
            events: None,
        }
    }

    fn webhooks(endpoints: Vec<EndpointSettings>) -> WebhookSettings {
        WebhookSettings {
            timeout_ms: 10_000,
            initial_backoff_ms: 5_000,
            max_backoff_ms: 21_600_000,
            max_attempts: 15,
            poll_ms: 1_000,
            endpoints,
        }
    }

    /// The environment of these tests: one variable set, everything else unset.
    fn env(name: &str) -> Option<String> {
        match name {
            "CRM_SECRET" => Some(SECRET.to_string()),
            "BAD_SECRET" => Some("whsec_***".to_string()),
            _ => None,
        }
    }

    /// The key and message of the error `settings` gives.
    fn error_of(settings: &WebhookSettings) -> (String, String) {
        match settings.validate_with(&env) {
            Ok(()) => panic!("accepted"),
            Err(ConfigError::Invalid { key, message }) => (key.to_string(), message),
            Err(ConfigError::InvalidEntry { key, message }) => (key, message),
            Err(other) => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn the_defaults_have_no_endpoint_and_the_documented_schedule() {
        let settings = Settings::load(None, Some("sqlite://unused.db")).expect("defaults load");
        let webhooks = &settings.webhooks;
        assert_eq!(
            (
                webhooks.timeout_ms,
                webhooks.initial_backoff_ms,
                webhooks.max_backoff_ms,
                webhooks.max_attempts,
                webhooks.poll_ms
            ),
            (10_000, 5_000, 21_600_000, 15, 1_000)
        );
        assert!(webhooks.endpoints.is_empty());
    }

    #[test]
    fn endpoints_load_from_an_array_of_tables_in_a_file() {
        let settings = load(&format!(
            r#"
            [webhooks]
            max_attempts = 3

            [[webhooks.endpoints]]
            name = "crm"
            url = "https://crm.example/hooks/contractd"
            secret = "{SECRET}"
            events = ["contract.cancellation_executed", "contract.extended"]

            [[webhooks.endpoints]]
            name = "audit"
            url = "http://127.0.0.1:9000/audit"
            secret = "{SECRET}"
            "#
        ))
        .expect("a valid file");
        let webhooks = &settings.webhooks;
        assert_eq!(webhooks.max_attempts, 3);
        assert_eq!(webhooks.timeout_ms, 10_000, "the rest from the defaults");
        assert_eq!(webhooks.endpoints.len(), 2);
        assert_eq!(
            webhooks.endpoints[0].subscription(),
            Subscription {
                endpoint: "crm".to_string(),
                kinds: Some(vec![
                    "cancellation_executed".to_string(),
                    "extended".to_string()
                ]),
            }
        );
        assert_eq!(webhooks.endpoints[1].subscription().kinds, None);
        assert_eq!(webhooks.signing_keys().expect("keys").len(), 2);
    }

    #[test]
    fn a_secret_env_naming_an_unset_variable_fails_the_load_naming_the_key() {
        let error = load(
            r#"
            [[webhooks.endpoints]]
            name = "crm"
            url = "https://crm.example/hooks"
            secret_env = "CONTRACTD_TEST_WEBHOOK_SECRET_NEVER_SET_5b1f"
            "#,
        )
        .expect_err("an unset variable");
        assert_eq!(
            error.to_string(),
            "configuration key webhooks.endpoints[0].secret_env: the environment variable \
             CONTRACTD_TEST_WEBHOOK_SECRET_NEVER_SET_5b1f is not set"
        );
    }

    #[test]
    fn an_unknown_field_of_an_endpoint_is_refused() {
        let error = load(
            r#"
            [[webhooks.endpoints]]
            name = "crm"
            url = "https://crm.example/hooks"
            secret = "whsec_AAAA"
            retries = 3
            "#,
        )
        .expect_err("an unknown field");
        assert!(error.to_string().contains("retries"), "{error}");
    }

    #[test]
    fn every_webhook_error_names_its_key() {
        let with = |change: &dyn Fn(&mut EndpointSettings)| {
            let mut endpoint = endpoint();
            change(&mut endpoint);
            webhooks(vec![super::tests::endpoint(), endpoint])
        };
        let cases: Vec<(WebhookSettings, &str, &str)> = vec![
            (
                with(&|e| e.url = "not a url".to_string()),
                "webhooks.endpoints[1].url",
                "not an absolute URL: relative URL without a base",
            ),
            (
                with(&|e| e.url = "ftp://user:pw@files.example/x".to_string()),
                "webhooks.endpoints[1].url",
                "'ftp://***:***@files.example/x': scheme 'ftp' is not http or https",
            ),
            (
                with(&|e| e.name = "crm".to_string()),
                "webhooks.endpoints[1].name",
                "'crm' is already the name of webhooks.endpoints[0]",
            ),
            (
                with(&|e| e.name = String::new()),
                "webhooks.endpoints[1].name",
                "must not be empty",
            ),
            (
                with(&|e| {
                    e.name = "my crm".to_string();
                }),
                "webhooks.endpoints[1].name",
                "'my crm' may only contain ASCII letters, digits, '-', '_' and '.'",
            ),
            (
                with(&|e| {
                    e.name = "b".to_string();
                    e.secret = None;
                }),
                "webhooks.endpoints[1].secret",
                "no secret: set secret (whsec_…) or secret_env (a variable holding it)",
            ),
            (
                with(&|e| {
                    e.name = "b".to_string();
                    e.secret_env = Some("CRM_SECRET".to_string());
                }),
                "webhooks.endpoints[1].secret",
                "both secret and secret_env are set: keep one",
            ),
            (
                with(&|e| {
                    e.name = "b".to_string();
                    e.secret = None;
                    e.secret_env = Some("UNSET".to_string());
                }),
                "webhooks.endpoints[1].secret_env",
                "the environment variable UNSET is not set",
            ),
            (
                with(&|e| {
                    e.name = "b".to_string();
                    e.secret = None;
                    e.secret_env = Some("BAD_SECRET".to_string());
                }),
                "webhooks.endpoints[1].secret_env",
                "the value of BAD_SECRET: the part after 'whsec_' is not valid base64",
            ),
            (
                with(&|e| {
                    e.name = "b".to_string();
                    e.secret = Some(SecretString::new("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
                }),
                "webhooks.endpoints[1].secret",
                "must start with 'whsec_' followed by the key in base64",
            ),
            (
                with(&|e| {
                    e.name = "b".to_string();
                    e.secret = Some(SecretString::new("whsec_!!!!"));
                }),
                "webhooks.endpoints[1].secret",
                "the part after 'whsec_' is not valid base64",
            ),
            (
                with(&|e| {
                    e.name = "b".to_string();
                    e.events = Some(vec![]);
                }),
                "webhooks.endpoints[1].events",
                "is empty: leave it out to receive every event type",
            ),
        ];
        for (settings, key, message) in cases {
            assert_eq!(error_of(&settings), (key.to_string(), message.to_string()));
        }

        let unknown = with(&|e| {
            e.name = "b".to_string();
            e.events = Some(vec![
                "contract.extended".to_string(),
                "contract.exploded".to_string(),
            ]);
        });
        let (key, message) = error_of(&unknown);
        assert_eq!(key, "webhooks.endpoints[1].events[1]");
        assert!(
            message.starts_with("'contract.exploded' is not a known event type: one of "),
            "{message}"
        );
        assert!(
            message.contains("contract.deadline_approaching"),
            "{message}"
        );

        let mut backwards = webhooks(vec![]);
        backwards.max_backoff_ms = 1_000;
        assert_eq!(
            error_of(&backwards),
            (
                "webhooks.max_backoff_ms".to_string(),
                "1000 is less than webhooks.initial_backoff_ms (5000)".to_string()
            )
        );
        for (key, change) in [
            (
                "webhooks.timeout_ms",
                &(|w: &mut WebhookSettings| w.timeout_ms = 0) as &dyn Fn(&mut WebhookSettings),
            ),
            ("webhooks.initial_backoff_ms", &|w| w.initial_backoff_ms = 0),
            ("webhooks.max_attempts", &|w| w.max_attempts = 0),
            ("webhooks.poll_ms", &|w| w.poll_ms = 0),
        ] {
            let mut settings = webhooks(vec![]);
            change(&mut settings);
            assert_eq!(
                error_of(&settings),
                (key.to_string(), "must be at least 1".to_string())
            );
        }
    }

    #[test]
    fn a_valid_section_passes_and_secrets_come_from_the_environment() {
        let mut from_env = endpoint();
        from_env.name = "audit".to_string();
        from_env.secret = None;
        from_env.secret_env = Some("CRM_SECRET".to_string());
        let settings = webhooks(vec![endpoint(), from_env]);
        settings.validate_with(&env).expect("valid");
        let keys = settings.signing_keys_with(&env).expect("keys");
        assert_eq!(keys[0], keys[1]);
    }

    #[test]
    fn printed_settings_never_show_a_secret() {
        let settings = webhooks(vec![endpoint()]);
        let printed = format!("{settings:?}");
        assert!(!printed.contains("MfKQ9r8"), "{printed}");
        assert!(printed.contains("[redacted]"), "{printed}");
    }

    #[test]
    fn direct_url_is_checked_and_never_printed() {
        let pooled = |direct: &str, pooler: bool| {
            let mut file = tempfile::Builder::new()
                .suffix(".toml")
                .tempfile()
                .expect("a temporary file");
            write!(
                file,
                "[database]\ndirect_url = \"{direct}\"\ntransaction_pooler = {pooler}\n"
            )
            .expect("written");
            Settings::load(
                Some(file.path()),
                Some("postgres://app:pooled-pw@pgbouncer:6432/db"),
            )
        };
        let settings = pooled("postgres://app:direct-pw@server:5432/db", true).expect("valid");
        assert_eq!(
            settings.database.statements(),
            crate::storage::Statements::Unnamed
        );
        let printed = format!("{:?}", settings.database);
        assert!(!printed.contains("direct-pw"), "{printed}");
        assert!(!printed.contains("pooled-pw"), "{printed}");
        assert!(printed.contains("server:5432"), "{printed}");
        let error = pooled("mysql://server/db", false).expect_err("not PostgreSQL");
        assert!(
            error
                .to_string()
                .starts_with("configuration key database.direct_url:"),
            "{error}"
        );
        let error = load("[database]\ndirect_url = \"postgres://server/db\"\n")
            .expect_err("SQLite has no direct_url");
        assert!(
            error
                .to_string()
                .contains("database.direct_url: only for PostgreSQL"),
            "{error}"
        );
        let error = load("[database]\ntransaction_pooler = true\n").expect_err("SQLite");
        assert!(
            error.to_string().contains("database.transaction_pooler"),
            "{error}"
        );
        let defaults = load("").expect("defaults");
        assert_eq!(defaults.database.direct_url, None);
        assert_eq!(
            defaults.database.statements(),
            crate::storage::Statements::Prepared
        );
    }
}
