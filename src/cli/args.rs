//! The command line's arguments (clap): every command, its flags and their help.

use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Parser, Subcommand};

use contractd::calendar::Period;
use contractd::contract::record::parse_date;
use contractd::lifecycle::Job;

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
    /// Print recorded events as JSON Lines, in commit order (a feed to resume from).
    Events(EventsArgs),
    /// Deliver the webhooks that are due, once, then exit (cron, Kubernetes).
    Deliver,
    /// List webhook deliveries with their attempts.
    Deliveries(DeliveriesArgs),
    /// Queue webhook deliveries again; re-enable an endpoint disabled by 410 Gone.
    Redeliver(RedeliverArgs),
    /// List the contracts whose cancellation deadline or end date falls within a window.
    Reminders(RemindersArgs),
}

/// `reminders`.
#[derive(Debug, Args)]
pub struct RemindersArgs {
    /// The window from today in each contract's zone, a period such as 30D, 2W or 1M.
    #[arg(long, value_name = "PERIOD", value_parser = parse_period_arg)]
    pub within: Period,
    /// Only this zone (repeatable).
    #[arg(long = "zone", value_name = "Z")]
    pub zones: Vec<String>,
    /// Print JSON Lines (one object per contract) for scripts.
    #[arg(long)]
    pub json: bool,
    /// Act as if it were this instant (RFC 3339): "today" is its date in the contract's zone.
    #[arg(long, value_name = "INSTANT", hide = true)]
    pub now: Option<DateTime<Utc>>,
}

/// `events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Start after this event (its `id`, e.g. evt_42); default: from the first event.
    #[arg(long, value_name = "ID")]
    pub after: Option<String>,
    /// Keep waiting for new events until interrupted.
    #[arg(long)]
    pub follow: bool,
    /// Only events of this type (repeatable), e.g. contract.extended.
    #[arg(long = "type", value_name = "T")]
    pub types: Vec<String>,
}

/// `deliveries`.
#[derive(Debug, Args)]
pub struct DeliveriesArgs {
    /// Only this endpoint.
    #[arg(long, value_name = "N")]
    pub endpoint: Option<String>,
    /// Only deliveries that failed for good.
    #[arg(long)]
    pub failed: bool,
    /// How many rows, newest first.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

/// `redeliver`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").args(["failed", "events"]).multiple(false)))]
pub struct RedeliverArgs {
    /// Only this endpoint; also re-enables it if a 410 Gone disabled it.
    #[arg(long, value_name = "N", required_unless_present_any = ["failed", "events"])]
    pub endpoint: Option<String>,
    /// Queue every delivery that failed for good.
    #[arg(long)]
    pub failed: bool,
    /// Queue these events (repeatable), e.g. evt_42.
    #[arg(long = "event", value_name = "ID")]
    pub events: Vec<String>,
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
    /// Only this job (repeatable): execute_cancellations, auto_extend, expire,
    /// refresh_deadlines, send_reminders.
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
    /// Ignore notice period, minimum term and window, and the limit on how far back the
    /// received date may lie (administrator cancel).
    #[arg(long = "override")]
    pub override_notice: bool,
    /// End today and execute at once.
    #[arg(long)]
    pub immediately: bool,
    /// Create a final invoice when the cancellation executes.
    #[arg(long)]
    pub final_invoice: bool,
    /// Show what would change (end dates, extensions undone, schedules, documents, events)
    /// and write nothing.
    #[arg(long)]
    pub dry_run: bool,
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
    /// Show what would change and write nothing.
    #[arg(long)]
    pub dry_run: bool,
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
    /// Show what would change and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Act as if it were this instant (RFC 3339): "today" is its date in the contract's zone.
    #[arg(long, value_name = "INSTANT", hide = true)]
    pub now: Option<DateTime<Utc>>,
}

fn parse_job(text: &str) -> Result<Job, String> {
    Job::parse(text).ok_or_else(|| format!("'{text}' is not a job (expected {})", Job::expected()))
}

fn parse_period_arg(text: &str) -> Result<Period, String> {
    Period::parse(text).map_err(|error| error.to_string())
}

fn parse_date_arg(text: &str) -> Result<NaiveDate, String> {
    parse_date(text).ok_or_else(|| format!("'{text}' is not a date (expected YYYY-MM-DD)"))
}
