//! The command line: arguments, dispatch to the library, output and exit codes. This is the
//! edge: the library returns typed results and errors, and only here do they become text on
//! stdout and stderr and an exit code.
//!
//! Exit codes: 0 done; 1 a job or action failed; 2 usage or configuration error; 3 invalid
//! input.

mod actions;
mod args;
mod contracts;
mod events;
mod reminders;
mod sweep;
mod webhooks;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Parser;

use contractd::clock::{OffsetClock, SharedClock, SystemClock};
use contractd::config::{ConfigSource, DatabaseKind, Settings};
use contractd::lifecycle::RulePolicy;
use contractd::storage::sqlite::SqliteSettings;
use contractd::storage::{
    redact_url, ContractStore, OutboxStore, PostgresSettings, PostgresStore, SqliteStore,
};
use contractd::telemetry::LogReloader;

use self::args::{Cli, Command};

/// A command's failure, with the exit code it maps to.
#[derive(Debug)]
pub enum Failure {
    /// Exit 1: a job or action failed.
    Failed(anyhow::Error),
    /// Exit 2: usage or configuration.
    Usage(anyhow::Error),
    /// Exit 3: invalid input (nothing changed).
    InvalidInput(anyhow::Error),
}

impl Failure {
    fn code(&self) -> u8 {
        match self {
            Failure::Failed(_) => 1,
            Failure::Usage(_) => 2,
            Failure::InvalidInput(_) => 3,
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure::Failed(error)
    }
}

/// Parse the command line, run the command, return the exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(match error.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => 2,
            });
        }
    };
    let source = ConfigSource {
        file: cli.config.clone(),
        database_url: cli.database_url.clone(),
    };
    let settings = match source.load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("contractd: {error}");
            return ExitCode::from(2);
        }
    };
    let reloader = contractd::telemetry::init(&settings.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("contractd: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let context = CommandContext {
        settings,
        source,
        reloader,
    };
    match runtime.block_on(dispatch(context, cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            let (Failure::Failed(error) | Failure::Usage(error) | Failure::InvalidInput(error)) =
                &failure;
            let line = causes(error);
            eprintln!("contractd: {line}");
            if let Some(hint) = pooler_hint(&line) {
                eprintln!("contractd: {hint}");
            }
            ExitCode::from(failure.code())
        }
    }
}

/// An error and its causes on one line, "what: why: why", each cause once: a cause whose
/// text the line already holds is left out. Some errors repeat their source's text in their
/// own (sqlx's "error returned from database: X" has the database's "X" as its source), and a
/// chain printed naively said the same thing two or three times.
fn causes(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// A hint for the errors of named prepared statements that meet a transaction pooler
/// (another client's statement of the same name, or ours gone with the server connection):
/// the operator has put PgBouncer in transaction mode in front without saying so.
fn pooler_hint(line: &str) -> Option<&'static str> {
    let named = line.contains("prepared statement \"sqlx_s_");
    (named && (line.contains("already exists") || line.contains("does not exist"))).then_some(
        "hint: is database.url a pooler in transaction mode (PgBouncer)? Then set \
         database.transaction_pooler = true, and database.direct_url to the server for the \
         migrations (docs/operations.md, Behind PgBouncer)",
    )
}

/// What every command gets.
struct CommandContext {
    /// The loaded configuration.
    settings: Settings,
    /// Where it came from, for the daemon to read again on SIGHUP.
    source: ConfigSource,
    /// Changes the log level on reload.
    reloader: LogReloader,
}

async fn dispatch(context: CommandContext, command: Command) -> Result<(), Failure> {
    let settings = &context.settings;
    let kind = settings
        .database_kind()
        .map_err(|error| Failure::Usage(error.into()))?;
    match kind {
        DatabaseKind::Sqlite => {
            let store = SqliteStore::connect(&SqliteSettings {
                url: settings.database.url.clone(),
                max_connections: settings.database.max_connections,
                busy_timeout: Duration::from_millis(settings.database.busy_timeout_ms),
            })
            .await
            .with_context(|| format!("cannot open {}", redact_url(&settings.database.url)))?;
            execute(store, context, command).await
        }
        DatabaseKind::Postgres => {
            let store = PostgresStore::connect(&PostgresSettings {
                url: settings.database.url.clone(),
                direct_url: settings.database.direct_url.clone(),
                statements: settings.database.statements(),
                max_connections: settings.database.max_connections,
                connect_timeout: Duration::from_millis(settings.database.connect_timeout_ms),
            })
            .await
            .with_context(|| format!("cannot connect to {}", redact_url(&settings.database.url)))?;
            execute(store, context, command).await
        }
    }
}

/// Run a command against a store.
async fn execute<S: ContractStore + OutboxStore>(
    store: S,
    context: CommandContext,
    command: Command,
) -> Result<(), Failure> {
    let settings = &context.settings;
    if matches!(command, Command::Migrate) || settings.database.migrate_on_start {
        store
            .migrate()
            .await
            .context("applying the schema migrations")?;
        if matches!(command, Command::Migrate) {
            println!("migrations applied");
            return Ok(());
        }
    }
    let policy: RulePolicy = settings.rule_policy();
    match command {
        Command::Migrate => Ok(()),
        Command::Serve(args) => {
            let clock: SharedClock = match args.now {
                Some(now) => Arc::new(OffsetClock::running_from(now)),
                None => Arc::new(SystemClock),
            };
            let CommandContext {
                settings,
                source,
                reloader,
            } = context;
            contractd::daemon::serve(store, settings, source, reloader, clock)
                .await
                .map_err(|error| Failure::Failed(error.into()))
        }
        Command::Run(args) => sweep::run(&store, settings, policy, args).await,
        Command::Import { file } => contracts::import_file(&store, settings, &file).await,
        Command::Export { references } => contracts::export(&store, &references).await,
        Command::Show { reference } => contracts::show(&store, &reference).await,
        Command::History { reference } => contracts::history(&store, &reference).await,
        Command::Runs { limit } => sweep::runs(&store, limit).await,
        Command::Events(args) => events::events(&store, args).await,
        Command::Deliver => webhooks::deliver(&store, settings).await,
        Command::Deliveries(args) => webhooks::deliveries(&store, settings, args).await,
        Command::Redeliver(args) => webhooks::redeliver(&store, settings, args).await,
        Command::Cancel(args) => {
            let clock = action_clock(args.now);
            let max_backdate = settings
                .cancellations
                .max_backdate()
                .map_err(|error| Failure::Usage(error.into()))?;
            actions::cancel(&store, clock.as_ref(), policy, max_backdate, args).await
        }
        Command::End(args) => {
            let clock = action_clock(args.now);
            actions::end(&store, clock.as_ref(), policy, args).await
        }
        Command::Revoke(args) => {
            let clock = action_clock(args.now);
            actions::revoke(&store, clock.as_ref(), policy, args).await
        }
        Command::Reminders(args) => {
            let clock = action_clock(args.now);
            reminders::list(&store, clock.as_ref(), args).await
        }
    }
}

/// The clock of a command that acts once: the system clock, or `--now` (rehearsals and
/// tests), fixed at that instant.
fn action_clock(now: Option<DateTime<Utc>>) -> SharedClock {
    match now {
        Some(now) => Arc::new(OffsetClock::fixed(now)),
        None => Arc::new(SystemClock),
    }
}

#[cfg(test)]
mod tests {
    use super::causes;

    /// An error whose message includes its source's text, as sqlx's database errors do.
    #[derive(Debug, thiserror::Error)]
    #[error("error returned from database: {0}")]
    struct Repeating(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("prepared statement \"sqlx_s_1\" already exists")]
    struct Inner;

    #[test]
    fn each_cause_is_printed_once() {
        let error = anyhow::Error::new(Repeating(Inner)).context("cannot connect to postgres");
        assert_eq!(
            causes(&error),
            "cannot connect to postgres: error returned from database: prepared statement \
             \"sqlx_s_1\" already exists"
        );
    }

    #[test]
    fn named_statement_errors_hint_at_the_pooler_setting() {
        let error = anyhow::Error::new(Repeating(Inner)).context("cannot connect to postgres");
        let hint = super::pooler_hint(&causes(&error)).expect("a hint");
        assert!(
            hint.contains("database.transaction_pooler = true"),
            "{hint}"
        );
        assert_eq!(super::pooler_hint("connection refused"), None);
    }

    #[test]
    fn distinct_causes_are_all_kept() {
        let error = anyhow::anyhow!("no such file").context("cannot open contracts.jsonl");
        assert_eq!(causes(&error), "cannot open contracts.jsonl: no such file");
    }
}
