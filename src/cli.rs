//! The command line (SPEC section 8): argument parsing and dispatch. This is the edge:
//! errors become messages and exit codes here.
//!
//! Exit codes: 0 done; 1 a job or action failed; 2 usage or configuration error; 3 invalid
//! input.

use std::io::{BufReader, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Parser, Subcommand};

use crate::clock::{OffsetClock, SharedClock, SystemClock};
use crate::config::{DatabaseKind, Settings};
use crate::contract::record::{format_date, parse_date, ContractRecord, ParseDefaults};
use crate::lifecycle::{Job, RulePolicy};
use crate::shutdown::Shutdown;
use crate::storage::sqlite::SqliteSettings;
use crate::storage::{redact_url, ContractStore, PostgresSettings, PostgresStore, SqliteStore};
use crate::sweep::{sweep_due, JobOutcome, SweepOptions};
use crate::transfer::{export, import, ExportError, ImportError};

/// contractd: runs the lifecycle of recurring contracts.
#[derive(Debug, Parser)]
#[command(name = "contractd", version, about)]
pub struct Cli {
    /// Configuration file layered over the defaults (environment CONTRACTD__SECTION__KEY wins).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Database URL (sqlite://FILE or postgres://…); wins over configuration.
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The daemon: ticks, health and metrics endpoints.
    Serve(ServeArgs),
    /// One sweep of everything due, then exit (cron, Kubernetes).
    Run(RunArgs),
    /// Apply the schema migrations.
    Migrate,
    /// Import contracts from JSON Lines (export's format); all or nothing.
    Import {
        /// The file, or - for standard input.
        file: PathBuf,
    },
    /// Export contracts as JSON Lines, computed fields included.
    Export {
        /// Only these contracts.
        #[arg(long = "ref", value_name = "REF")]
        references: Vec<String>,
    },
    /// Show one contract.
    Show {
        /// The contract's ref.
        reference: String,
    },
    /// Show a contract's events.
    History {
        /// The contract's ref.
        reference: String,
    },
    /// Register a cancellation of one or more contracts (or of one line).
    Cancel(CancelArgs),
    /// End a contract early.
    End(EndArgs),
    /// Revoke a pending cancellation.
    Revoke(RevokeArgs),
    /// The run ledger.
    Runs {
        /// How many rows.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

/// `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Start the daemon's clock at this instant (RFC 3339) and let it run on from there.
    #[arg(long, value_name = "INSTANT")]
    pub now: Option<DateTime<Utc>>,
}

/// `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Only this job (repeatable): execute_cancellations, auto_extend, expire, refresh_deadlines.
    #[arg(long = "job", value_name = "J", value_parser = parse_job)]
    pub jobs: Vec<Job>,
    /// Only this zone (repeatable).
    #[arg(long = "zone", value_name = "Z")]
    pub zones: Vec<String>,
    /// The current instant (RFC 3339); each zone gets its own local date.
    #[arg(long, value_name = "INSTANT", conflicts_with = "as_of")]
    pub now: Option<DateTime<Utc>>,
    /// Run this business date in every zone.
    #[arg(long, value_name = "DATE", value_parser = parse_date_arg)]
    pub as_of: Option<NaiveDate>,
    /// Print what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// Contract refs (bulk: each is reported).
    #[arg(required = true, value_name = "REF")]
    pub references: Vec<String>,
    /// The day the cancellation was received (default: today in the contract's zone).
    #[arg(long, value_name = "D", value_parser = parse_date_arg)]
    pub received_on: Option<NaiveDate>,
    /// Requested end date (default: the cancellation date).
    #[arg(long, value_name = "D", value_parser = parse_date_arg)]
    pub end_date: Option<NaiveDate>,
    /// Reason code.
    #[arg(long, value_name = "R")]
    pub reason: Option<String>,
    /// Notes.
    #[arg(long, value_name = "N")]
    pub notes: Option<String>,
    /// Cancel only this line.
    #[arg(long, value_name = "L")]
    pub line: Option<String>,
    /// Ignore notice period and minimum term (administrator cancel).
    #[arg(long = "override")]
    pub override_notice: bool,
    /// End today and execute at once.
    #[arg(long)]
    pub immediately: bool,
    /// Create a final invoice when the cancellation executes.
    #[arg(long)]
    pub final_invoice: bool,
    /// Act as if it were this instant (RFC 3339): "today" is its date in the contract's zone.
    #[arg(long, value_name = "INSTANT", hide = true)]
    pub now: Option<DateTime<Utc>>,
}

/// `end`.
#[derive(Debug, Args)]
pub struct EndArgs {
    /// The contract's ref.
    pub reference: String,
    /// The new end date (last day of service).
    #[arg(long, value_name = "D", value_parser = parse_date_arg)]
    pub end_date: NaiveDate,
    /// Reason.
    #[arg(long, value_name = "R")]
    pub reason: String,
    /// Notes.
    #[arg(long, value_name = "N")]
    pub notes: Option<String>,
    /// Allow ending before already billed periods end (credits the difference).
    #[arg(long)]
    pub allow_end_before_billed_to: bool,
    /// Act as if it were this instant (RFC 3339): "today" is its date in the contract's zone.
    #[arg(long, value_name = "INSTANT", hide = true)]
    pub now: Option<DateTime<Utc>>,
}

/// `revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The contract's ref.
    pub reference: String,
    /// Revoke the pending cancellation of this line.
    #[arg(long, value_name = "L")]
    pub line: Option<String>,
    /// Act as if it were this instant (RFC 3339): "today" is its date in the contract's zone.
    #[arg(long, value_name = "INSTANT", hide = true)]
    pub now: Option<DateTime<Utc>>,
}

fn parse_job(text: &str) -> Result<Job, String> {
    Job::parse(text).ok_or_else(|| format!("'{text}' is not a job (expected {})", Job::expected()))
}

fn parse_date_arg(text: &str) -> Result<NaiveDate, String> {
    parse_date(text).ok_or_else(|| format!("'{text}' is not a date (expected YYYY-MM-DD)"))
}

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
    let settings = match Settings::load(cli.config.as_deref(), cli.database_url.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("contractd: {error}");
            return ExitCode::from(2);
        }
    };
    let reloader = crate::telemetry::init(&settings.log);
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
        config_file: cli.config.clone(),
        database_url: cli.database_url.clone(),
        reloader,
    };
    match runtime.block_on(dispatch(context, cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            let (Failure::Failed(error) | Failure::Usage(error) | Failure::InvalidInput(error)) =
                &failure;
            eprintln!("contractd: {error:#}");
            ExitCode::from(failure.code())
        }
    }
}

/// What every command gets.
pub struct CommandContext {
    /// The loaded configuration.
    pub settings: Settings,
    /// `--config`, for SIGHUP reload.
    pub config_file: Option<PathBuf>,
    /// `--database-url`, for SIGHUP reload.
    pub database_url: Option<String>,
    /// Changes the log level on reload.
    pub reloader: crate::telemetry::LogReloader,
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
pub async fn execute<S: ContractStore>(
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
    let policy = RulePolicy {
        allow_end_before_billed_to: settings.billing.allow_end_before_billed_to,
    };
    match command {
        Command::Migrate => Ok(()),
        Command::Serve(args) => {
            let clock: SharedClock = match args.now {
                Some(now) => Arc::new(OffsetClock::running_from(now)),
                None => Arc::new(SystemClock),
            };
            crate::daemon::serve(store, context, clock)
                .await
                .map_err(Failure::Failed)
        }
        Command::Run(args) => run(&store, settings, policy, args).await,
        Command::Import { file } => import_file(&store, settings, &file).await,
        Command::Export { references } => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let mut invalid = 0;
            let result = export(&store, &references, &mut out, |error| {
                invalid += 1;
                eprintln!("contractd: not exported: {error}");
            })
            .await;
            match result {
                Err(ExportError::NotFound(reference)) => Err(Failure::InvalidInput(
                    anyhow::anyhow!("no contract '{reference}'"),
                )),
                Err(error) => Err(Failure::Failed(error.into())),
                Ok(_) if invalid > 0 => Err(Failure::Failed(anyhow::anyhow!(
                    "{invalid} contract row(s) break the rules and were not exported"
                ))),
                Ok(_) => Ok(()),
            }
        }
        Command::Show { reference } => {
            let loaded = store
                .load_contract(&reference)
                .await
                .context("reading the contract")?
                .ok_or_else(|| {
                    Failure::InvalidInput(anyhow::anyhow!("no contract '{reference}'"))
                })?;
            let contract = loaded.contract.map_err(|error| {
                Failure::Failed(anyhow::anyhow!("the stored row breaks the rules: {error}"))
            })?;
            let record = ContractRecord::from_contract(&contract);
            let text = serde_json::to_string_pretty(&record).context("formatting")?;
            println!("{text}");
            Ok(())
        }
        Command::History { reference } => {
            if store
                .load_contract(&reference)
                .await
                .context("reading the contract")?
                .is_none()
            {
                return Err(Failure::InvalidInput(anyhow::anyhow!(
                    "no contract '{reference}'"
                )));
            }
            let events = store.events(&reference).await.context("reading events")?;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            for event in events {
                let recorded = DateTime::<Utc>::from_timestamp_millis(event.recorded_at_ms)
                    .map(|at| at.to_rfc3339())
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{}  {:<30} {}{}  {}",
                    format_date(event.effective_on),
                    event.kind,
                    event
                        .line_ref
                        .as_deref()
                        .map(|line| format!("line {line}  "))
                        .unwrap_or_default(),
                    event.details,
                    recorded
                );
            }
            Ok(())
        }
        Command::Runs { limit } => {
            let runs = store.runs(limit).await.context("reading the ledger")?;
            println!(
                "{:<10} {:<22} {:<21} {:<10} {:>8} {:>8} {:>8} {:>8}  error",
                "date", "zone", "job", "status", "attempts", "examined", "changed", "skipped"
            );
            for run in runs {
                println!(
                    "{:<10} {:<22} {:<21} {:<10} {:>8} {:>8} {:>8} {:>8}  {}",
                    format_date(run.key.business_date),
                    run.key.zone,
                    run.key.job.as_str(),
                    run.status.as_str(),
                    run.attempts,
                    run.counts.examined,
                    run.counts.changed,
                    run.counts.skipped,
                    run.error.unwrap_or_default()
                );
            }
            Ok(())
        }
        Command::Cancel(args) => {
            let clock = action_clock(args.now);
            crate::operator::cancel(&store, clock.as_ref(), policy, args).await
        }
        Command::End(args) => {
            let clock = action_clock(args.now);
            crate::operator::end(&store, clock.as_ref(), policy, args).await
        }
        Command::Revoke(args) => {
            let clock = action_clock(args.now);
            crate::operator::revoke(&store, clock.as_ref(), args).await
        }
    }
}

/// The clock of an operator action: the system clock, or `--now` (rehearsals and tests).
fn action_clock(now: Option<DateTime<Utc>>) -> SharedClock {
    match now {
        Some(now) => Arc::new(OffsetClock::fixed(now)),
        None => Arc::new(SystemClock),
    }
}

async fn run<S: ContractStore>(
    store: &S,
    settings: &Settings,
    policy: RulePolicy,
    args: RunArgs,
) -> Result<(), Failure> {
    for zone in &args.zones {
        zone.parse::<chrono_tz::Tz>().map_err(|_| {
            Failure::Usage(anyhow::anyhow!("--zone '{zone}' is not an IANA time zone"))
        })?;
    }
    let clock: SharedClock = match args.now {
        Some(now) => Arc::new(OffsetClock::fixed(now)),
        None => Arc::new(SystemClock),
    };
    let mut options = SweepOptions::new(settings.sweep.batch_size, settings.lease(), policy);
    options.parallel_zones = settings.sweep.parallel_zones;
    options.jobs = args.jobs;
    options.zones = args.zones;
    options.as_of = args.as_of;
    options.dry_run = args.dry_run;
    let report = sweep_due(store, clock.as_ref(), &options, &Shutdown::never())
        .await
        .context("the sweep could not start")?;
    print_report(&report, args.dry_run);
    if report.any_failed() {
        return Err(Failure::Failed(anyhow::anyhow!("a job failed (see above)")));
    }
    Ok(())
}

/// The summary for people: one line per job run.
fn print_report(report: &crate::sweep::SweepReport, dry_run: bool) {
    if report.jobs.is_empty() {
        println!("nothing due");
        return;
    }
    println!(
        "{:<10} {:<22} {:<21} {:>8} {:>8} {:>8} {:>9}  outcome",
        "date", "zone", "job", "examined", "changed", "skipped", "time"
    );
    for job in &report.jobs {
        println!(
            "{:<10} {:<22} {:<21} {:>8} {:>8} {:>8} {:>7}ms  {}",
            format_date(job.key.business_date),
            job.key.zone,
            job.key.job.as_str(),
            job.counts.examined,
            job.counts.changed,
            job.counts.skipped,
            job.duration.as_millis(),
            match &job.outcome {
                JobOutcome::Failed(error) => format!("failed: {error}"),
                other => other.as_str().to_string(),
            }
        );
        if dry_run {
            for line in &job.planned {
                println!("    {line}");
            }
        }
    }
}

async fn import_file<S: ContractStore>(
    store: &S,
    settings: &Settings,
    file: &std::path::Path,
) -> Result<(), Failure> {
    let defaults = ParseDefaults {
        time_zone: settings
            .default_time_zone()
            .map_err(|error| Failure::Usage(error.into()))?,
    };
    let reader: Box<dyn std::io::BufRead> = if file.as_os_str() == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let opened = std::fs::File::open(file).map_err(|error| {
            Failure::InvalidInput(anyhow::anyhow!("cannot open {}: {error}", file.display()))
        })?;
        Box::new(BufReader::with_capacity(1 << 20, opened))
    };
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message("reading contracts");
        Some(bar)
    } else {
        None
    };
    let started = std::time::Instant::now();
    let result = import(store, reader, &defaults, Utc::now(), |line| {
        if let Some(bar) = &bar {
            if line % 1000 == 0 {
                bar.set_position(line as u64);
            }
        }
    })
    .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    match result {
        Ok(count) => {
            tracing::info!(
                event = "import.finished",
                contracts = count,
                duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            );
            println!("imported {count} contracts");
            Ok(())
        }
        Err(ImportError::Invalid(problems)) => {
            for problem in &problems {
                eprintln!("{problem}");
            }
            Err(Failure::InvalidInput(anyhow::anyhow!(
                "{} invalid record(s) in {}; nothing was imported",
                problems.len(),
                file.display()
            )))
        }
        Err(error @ (ImportError::Empty | ImportError::Read(_))) => {
            Err(Failure::InvalidInput(error.into()))
        }
        Err(ImportError::Storage(error)) => Err(Failure::Failed(
            anyhow::Error::new(error).context("nothing was imported"),
        )),
    }
}
