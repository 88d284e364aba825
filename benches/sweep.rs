//! The sweep benchmark (issue 8): the real import and the real sweep over a large, realistic
//! population, against the floor (hand-written set-based SQL making the same transitions) and
//! against a row-at-a-time loop (one transaction per contract), on SQLite and PostgreSQL.
//!
//! ```text
//! cargo bench --bench sweep -- [--contracts N] [--backend sqlite|postgres|both]
//!                              [--batch-size B] [--row-sample S] [--ticks T] [--seed X]
//!                              [--postgres-url URL] [--lead-times 30D,7D]
//! ```
//!
//! Defaults: 1,000,000 contracts, both backends, the batch size of `config/default.toml`,
//! a row-at-a-time sample of 50,000 contracts, 20 no-op ticks. PostgreSQL is the server at
//! `--postgres-url` (or `CONTRACTD_BENCH_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`, trust auth): each run creates
//! `contractd_bench_<uuid>_{sweep,floor,rows}` and drops them at the end.
//!
//! Every measured phase runs in a child process (this binary re-executed with a hidden
//! `--phase` argument), so each peak resident memory figure (VmHWM) is that phase's alone: the
//! import, which holds the whole file in memory, does not pollute the sweep's figure.
//!
//! What is measured, per backend (see docs/benchmarks.md):
//! 1. import of the generated JSON Lines file through `contractd::transfer::import`;
//! 2. one full sweep of business date 2026-04-01 with `contractd::sweep::sweep_due`
//!    (`as_of` that date, every zone), per job; then the no-op tick (the same call again, which
//!    must claim no run and read no contract), median of T;
//! 3. on a copy of the imported database: the floor for `execute_cancellations` and `expire`;
//! 4. on another copy: the row-at-a-time loop for the same two jobs, on a sample;
//! 5. a check that the floor made the same transitions as the sweep;
//! 6. on two more copies: `sweep_due` of `expire` alone, against the minimal-schema floor of
//!    issue 16 (`floor_contracts(id, ref, status, time_zone, end_date)` and `floor_events`,
//!    one `INSERT … SELECT` and one `UPDATE` in one transaction).
//!
//! `--phases sweep,compared,floor,rows,expire,minimal` runs only the phases listed (the import
//! always runs): `--phases expire,minimal` is the quick A/B loop of issue 16.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::{Connection, Executor, PgPool, Row, SqlitePool};

use contractd::clock::OffsetClock;
use contractd::config::Settings;
use contractd::contract::record::ParseDefaults;
use contractd::lifecycle::{apply_job, Job, RulePolicy};
use contractd::shutdown::Shutdown;
use contractd::storage::sqlite::SqliteSettings;
use contractd::storage::{
    ContractChange, ContractStore, PostgresSettings, PostgresStore, SqliteStore,
};
use contractd::sweep::{sweep_due, JobOutcome, SweepOptions, SweepReport};
use contractd::transfer::import_with_lead_times;

/// The population generator, shared with the tests. `pub`: the benchmark uses only part of
/// its API (the tests use the rest), which is no dead code.
#[path = "../tests/support/population.rs"]
pub mod population;

/// The machine and load every report starts with, shared by the benchmarks.
#[path = "common/machine.rs"]
mod machine;

use population::{Kind, Population};

/// The business date the sweep runs: the first of a month, so monthly deadlines roll over as
/// they do once a month in production.
const BUSINESS_DATE: &str = "2026-04-01";

/// When the import runs: every zone is on 2026-03-30 or 2026-03-31 then.
const IMPORT_NOW: &str = "2026-03-31T06:00:00Z";

/// The sweep's clock (only ledger timestamps depend on it: `as_of` gives the date).
const SWEEP_NOW: &str = "2026-04-01T06:00:00Z";

/// The server used unless `--postgres-url` or `CONTRACTD_BENCH_POSTGRES_URL` names another.
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// 24 IANA zones with a weight each (how many contracts live there, relatively): DST at
/// midnight (Santiago, Asuncion), half-hour offsets (Kolkata), both hemispheres, ±13 hours.
const ZONES: [(&str, u32); 24] = [
    ("Europe/Berlin", 10),
    ("America/New_York", 9),
    ("Europe/London", 8),
    ("America/Los_Angeles", 7),
    ("Europe/Paris", 6),
    ("America/Chicago", 5),
    ("Asia/Tokyo", 5),
    ("Asia/Shanghai", 4),
    ("Asia/Kolkata", 4),
    ("Australia/Sydney", 4),
    ("Europe/Madrid", 4),
    ("America/Sao_Paulo", 4),
    ("America/Toronto", 3),
    ("America/Mexico_City", 3),
    ("America/Denver", 3),
    ("Asia/Singapore", 3),
    ("Europe/Warsaw", 3),
    ("Asia/Dubai", 2),
    ("Pacific/Auckland", 2),
    ("Africa/Johannesburg", 2),
    ("America/Santiago", 2),
    ("America/Asuncion", 1),
    ("Africa/Lagos", 1),
    ("Pacific/Honolulu", 1),
];

/// The two jobs the floor and the row-at-a-time loop do, in sweep order.
const COMPARED_JOBS: [Job; 2] = [Job::ExecuteCancellations, Job::Expire];

fn main() {
    match run() {
        Ok(()) => {}
        Err(error) => {
            eprintln!("sweep bench: {error:#}");
            std::process::exit(1);
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse(std::env::args().skip(1))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match &args.phase {
        Some(phase) => {
            let result = runtime.block_on(run_phase(phase, &args))?;
            println!("RESULT {result}");
            Ok(())
        }
        None => runtime.block_on(orchestrate(&args)),
    }
}

// ---------------------------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

#[derive(Debug, Clone)]
struct Args {
    contracts: usize,
    backends: Vec<Backend>,
    batch_size: u32,
    parallel_zones: usize,
    row_sample: usize,
    ticks: usize,
    seed: u64,
    postgres_url: String,
    /// The phases to run after the import (all unless `--phases` lists some).
    phases: Vec<String>,
    /// Hidden: run one phase in this (child) process.
    phase: Option<String>,
    /// Hidden: the phase's backend.
    backend: Option<Backend>,
    /// Hidden: the phase's database URL.
    url: Option<String>,
    /// Hidden: the import file.
    file: Option<PathBuf>,
    /// `reminders.lead_times` for the import and the sweep (`30D,7D`); empty: none.
    lead_times: String,
}

fn usage() -> &'static str {
    "usage: cargo bench --bench sweep -- [--contracts N] [--backend sqlite|postgres|both] \
     [--batch-size B] [--parallel-zones P] [--row-sample S] [--ticks T] [--seed X] [--postgres-url URL] \
     [--lead-times 30D,7D] [--phases sweep,compared,floor,rows,expire,minimal]"
}

/// Every phase that runs after the import, in the order they run.
const PHASES: [&str; 6] = ["sweep", "compared", "floor", "rows", "expire", "minimal"];

impl Args {
    fn parse(raw: impl Iterator<Item = String>) -> anyhow::Result<Args> {
        let defaults = Settings::load(None, None).context("loading config/default.toml")?;
        let mut args = Args {
            contracts: 1_000_000,
            backends: vec![Backend::Sqlite, Backend::Postgres],
            batch_size: defaults.sweep.batch_size,
            parallel_zones: defaults.sweep.parallel_zones,
            row_sample: 50_000,
            ticks: 20,
            seed: 8,
            postgres_url: std::env::var("CONTRACTD_BENCH_POSTGRES_URL")
                .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_string()),
            phases: PHASES.iter().map(|phase| phase.to_string()).collect(),
            phase: None,
            backend: None,
            url: None,
            file: None,
            lead_times: String::new(),
        };
        let mut raw = raw.peekable();
        while let Some(flag) = raw.next() {
            let mut value = || {
                raw.next()
                    .ok_or_else(|| anyhow!("{flag} needs a value\n{}", usage()))
            };
            match flag.as_str() {
                // cargo bench passes --bench to harness = false targets.
                "--bench" => {}
                "--contracts" => args.contracts = number(&value()?)?,
                "--backend" => {
                    args.backends = match value()?.as_str() {
                        "sqlite" => vec![Backend::Sqlite],
                        "postgres" => vec![Backend::Postgres],
                        "both" => vec![Backend::Sqlite, Backend::Postgres],
                        other => bail!("unknown backend '{other}'\n{}", usage()),
                    }
                }
                "--batch-size" => args.batch_size = u32::try_from(number(&value()?)?)?,
                "--parallel-zones" => args.parallel_zones = number(&value()?)?.max(1),
                "--row-sample" => args.row_sample = number(&value()?)?,
                "--ticks" => args.ticks = number(&value()?)?.max(1),
                "--seed" => args.seed = u64::try_from(number(&value()?)?)?,
                "--postgres-url" => args.postgres_url = value()?,
                "--phases" => {
                    args.phases = value()?.split(',').map(str::to_string).collect();
                    if let Some(unknown) = args
                        .phases
                        .iter()
                        .find(|phase| !PHASES.contains(&phase.as_str()))
                    {
                        bail!("unknown phase '{unknown}'\n{}", usage());
                    }
                }
                "--phase" => args.phase = Some(value()?),
                "--phase-backend" => {
                    args.backend = Some(match value()?.as_str() {
                        "sqlite" => Backend::Sqlite,
                        _ => Backend::Postgres,
                    })
                }
                "--url" => args.url = Some(value()?),
                "--file" => args.file = Some(PathBuf::from(value()?)),
                "--lead-times" => args.lead_times = value()?,
                "--help" | "-h" => {
                    println!("{}", usage());
                    std::process::exit(0);
                }
                other => bail!("unknown argument '{other}'\n{}", usage()),
            }
        }
        if args.contracts == 0 || args.batch_size == 0 {
            bail!("--contracts and --batch-size must be positive");
        }
        args.policy()?;
        Ok(args)
    }

    /// The rules' policy: the defaults, with `--lead-times` as the configured lead times.
    fn policy(&self) -> anyhow::Result<RulePolicy> {
        let settings = contractd::config::ReminderSettings {
            lead_times: contractd::config::LeadTimesSetting::Text(self.lead_times.clone()),
        };
        Ok(RulePolicy {
            reminder_lead_times: settings.lead_times()?,
            ..RulePolicy::default()
        })
    }
}

/// `1000000`, `1_000_000` or `1,000,000`.
fn number(text: &str) -> anyhow::Result<usize> {
    text.replace(['_', ','], "")
        .parse()
        .with_context(|| format!("'{text}' is not a number"))
}

fn business_date() -> NaiveDate {
    NaiveDate::from_str(BUSINESS_DATE).expect("business date")
}

fn instant(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("instant")
        .with_timezone(&Utc)
}

// ---------------------------------------------------------------------------------------------
// The population
// ---------------------------------------------------------------------------------------------

/// Write `count` contracts of the population of `seed` (as of the business date, over
/// [`ZONES`]) to `path` as JSON Lines; returns how many of each kind.
fn generate(path: &Path, count: usize, seed: u64) -> anyhow::Result<BTreeMap<Kind, usize>> {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut kinds = BTreeMap::new();
    for (kind, record) in Population::new(seed, business_date(), &ZONES, "BENCH").take(count) {
        *kinds.entry(kind).or_insert(0) += 1;
        serde_json::to_writer(&mut out, &record)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(kinds)
}

// ---------------------------------------------------------------------------------------------
// Orchestration (the parent process)
// ---------------------------------------------------------------------------------------------

/// Databases of one backend for one run: created here, dropped by [`Databases::drop_all`].
struct Databases {
    backend: Backend,
    /// The database the real import and sweep run on.
    sweep: String,
    /// The copy the floor runs on.
    floor: String,
    /// The copy the row-at-a-time loop runs on.
    rows: String,
    /// The copy the sweep of only the compared jobs runs on.
    compared: String,
    /// The copy the sweep of `expire` alone runs on.
    expire: String,
    /// The copy the minimal-schema floor runs on.
    minimal: String,
    /// PostgreSQL: the database names to drop.
    postgres_names: Vec<String>,
}

async fn orchestrate(args: &Args) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("contractd-bench-")
        .tempdir()
        .context("creating a temporary directory")?;
    let file = dir.path().join("contracts.jsonl");
    eprintln!(
        "generating {} contracts in {} ({} zones, seed {}) ...",
        args.contracts,
        file.display(),
        ZONES.len(),
        args.seed
    );
    let started = Instant::now();
    let kinds = generate(&file, args.contracts, args.seed)?;
    let size = std::fs::metadata(&file)?.len();
    eprintln!(
        "  generated in {:.1} s, {:.0} MiB",
        started.elapsed().as_secs_f64(),
        size as f64 / 1048576.0
    );
    let mut report = String::new();
    writeln!(report, "{}", machine::machine_line())?;
    writeln!(
        report,
        "load average at the start: {}",
        machine::load_average()
    )?;
    writeln!(
        report,
        "contracts: {}, business date {BUSINESS_DATE}, {} zones, batch size {}, file {:.0} MiB",
        args.contracts,
        ZONES.len(),
        args.batch_size,
        size as f64 / 1048576.0
    )?;
    for (kind, count) in &kinds {
        writeln!(
            report,
            "  {:<28} {:>9} ({:.1}%)",
            kind.name(),
            count,
            100.0 * *count as f64 / args.contracts as f64
        )?;
    }
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for backend in &args.backends {
        let databases = create_databases(*backend, dir.path(), args).await?;
        let outcome = bench_backend(args, &databases, &file).await;
        drop_databases(&databases, args).await;
        match outcome {
            Ok(outcome) => {
                // Printed as soon as it is known: a later backend may fail.
                eprintln!("\n{}", outcome.render(args));
                writeln!(report, "\n{}", outcome.render(args))?;
                results.push(outcome.json);
            }
            Err(error) => {
                eprintln!("[{}] failed: {error:#}", backend.name());
                writeln!(report, "\n## {}\nFAILED: {error:#}", backend.title())?;
                failures.push(backend.name());
            }
        }
    }
    writeln!(
        report,
        "load average at the end: {}",
        machine::load_average()
    )?;
    println!("\n==== contractd sweep benchmark ====\n{report}");
    println!(
        "JSON {}",
        json!({ "contracts": args.contracts, "batch_size": args.batch_size, "backends": results })
    );
    if !failures.is_empty() {
        bail!("failed on {}", failures.join(", "));
    }
    Ok(())
}

fn postgres_url(admin: &str, database: &str) -> anyhow::Result<String> {
    let mut url = url::Url::parse(admin).context("--postgres-url")?;
    url.set_path(&format!("/{database}"));
    Ok(url.to_string())
}

async fn create_databases(backend: Backend, dir: &Path, args: &Args) -> anyhow::Result<Databases> {
    match backend {
        Backend::Sqlite => {
            let url = |name: &str| format!("sqlite://{}", dir.join(name).display());
            Ok(Databases {
                backend,
                sweep: url("sweep.db"),
                floor: url("floor.db"),
                rows: url("rows.db"),
                compared: url("compared.db"),
                expire: url("expire.db"),
                minimal: url("minimal.db"),
                postgres_names: Vec::new(),
            })
        }
        Backend::Postgres => {
            let base = format!("contractd_bench_{}", uuid::Uuid::new_v4().simple());
            let names: Vec<String> = ["sweep", "floor", "rows", "compared", "expire", "minimal"]
                .iter()
                .map(|suffix| format!("{base}_{suffix}"))
                .collect();
            let mut admin = sqlx::PgConnection::connect(&args.postgres_url)
                .await
                .with_context(|| {
                    format!(
                        "PostgreSQL at {} is unreachable (use --backend sqlite, or \
                         --postgres-url)",
                        contractd::storage::redact_url(&args.postgres_url)
                    )
                })?;
            admin
                .execute(format!("CREATE DATABASE {}", names[0]).as_str())
                .await?;
            admin.close().await?;
            Ok(Databases {
                backend,
                sweep: postgres_url(&args.postgres_url, &names[0])?,
                floor: postgres_url(&args.postgres_url, &names[1])?,
                rows: postgres_url(&args.postgres_url, &names[2])?,
                compared: postgres_url(&args.postgres_url, &names[3])?,
                expire: postgres_url(&args.postgres_url, &names[4])?,
                minimal: postgres_url(&args.postgres_url, &names[5])?,
                postgres_names: names,
            })
        }
    }
}

/// Copy the imported database to the floor's and the row loop's.
async fn copy_databases(databases: &Databases, args: &Args) -> anyhow::Result<()> {
    match databases.backend {
        Backend::Sqlite => {
            let path = |url: &str| PathBuf::from(url.trim_start_matches("sqlite://"));
            let source = path(&databases.sweep);
            for target in [
                &databases.floor,
                &databases.rows,
                &databases.compared,
                &databases.expire,
                &databases.minimal,
            ] {
                std::fs::copy(&source, path(target))
                    .with_context(|| format!("copying {}", source.display()))?;
            }
        }
        Backend::Postgres => {
            let mut admin = sqlx::PgConnection::connect(&args.postgres_url).await?;
            for target in &databases.postgres_names[1..] {
                admin
                    .execute(
                        format!(
                            "CREATE DATABASE {target} TEMPLATE {}",
                            databases.postgres_names[0]
                        )
                        .as_str(),
                    )
                    .await?;
            }
            admin.close().await?;
        }
    }
    Ok(())
}

async fn drop_databases(databases: &Databases, args: &Args) {
    if databases.postgres_names.is_empty() {
        return;
    }
    let Ok(mut admin) = sqlx::PgConnection::connect(&args.postgres_url).await else {
        eprintln!(
            "cannot connect to drop the bench databases {:?}",
            databases.postgres_names
        );
        return;
    };
    for name in &databases.postgres_names {
        let dropped = admin
            .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
            .await;
        if let Err(error) = dropped {
            eprintln!("cannot drop {name}: {error}");
        }
    }
    let _ = admin.close().await;
}

/// Run one phase in a child process (this binary again) and return its result.
fn child(
    phase: &str,
    backend: Backend,
    url: &str,
    args: &Args,
    file: Option<&Path>,
) -> anyhow::Result<Value> {
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let mut command = Command::new(exe);
    command
        .arg("--phase")
        .arg(phase)
        .arg("--phase-backend")
        .arg(backend.name())
        .arg("--url")
        .arg(url)
        .arg("--contracts")
        .arg(args.contracts.to_string())
        .arg("--batch-size")
        .arg(args.batch_size.to_string())
        .arg("--parallel-zones")
        .arg(args.parallel_zones.to_string())
        .arg("--row-sample")
        .arg(args.row_sample.to_string())
        .arg("--ticks")
        .arg(args.ticks.to_string())
        .arg("--lead-times")
        .arg(&args.lead_times)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(file) = file {
        command.arg("--file").arg(file);
    }
    let output = command.output().context("running a bench phase")?;
    if !output.status.success() {
        bail!(
            "phase {phase} on {} failed ({})",
            backend.name(),
            output.status
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix("RESULT "))
        .ok_or_else(|| anyhow!("phase {phase} printed no result"))?;
    Ok(serde_json::from_str(line)?)
}

/// Everything measured on one backend.
struct Outcome {
    backend: Backend,
    json: Value,
}

async fn bench_backend(args: &Args, databases: &Databases, file: &Path) -> anyhow::Result<Outcome> {
    let backend = databases.backend;
    eprintln!("[{}] import ...", backend.name());
    let imported = child("import", backend, &databases.sweep, args, Some(file))?;
    eprintln!(
        "  {} contracts in {:.1} s",
        imported["imported"], imported["seconds"]
    );
    copy_databases(databases, args).await?;
    let wanted = |phase: &str| args.phases.iter().any(|listed| listed == phase);
    // One phase in its own process when it was asked for: what it measured, or null.
    let phase = |name: &str, title: &str, url: &str, figure: &str| -> anyhow::Result<Value> {
        if !wanted(name) {
            return Ok(Value::Null);
        }
        eprintln!("[{}] {title} ...", backend.name());
        let measured = child(name, backend, url, args, None)?;
        eprintln!("  {name} {:.2} s", measured[figure]);
        Ok(measured)
    };
    let swept = phase("sweep", "sweep + no-op ticks", &databases.sweep, "seconds")?;
    let compared = phase(
        "compared",
        "sweep of execute_cancellations + expire only",
        &databases.compared,
        "seconds",
    )?;
    let floor = phase("floor", "floor", &databases.floor, "seconds")?;
    let rows = phase("rows", "row-at-a-time", &databases.rows, "sample_seconds")?;
    let expire = phase(
        "expire",
        "sweep of expire only",
        &databases.expire,
        "seconds",
    )?;
    let minimal = phase(
        "minimal",
        "minimal-schema floor of expire",
        &databases.minimal,
        "seconds",
    )?;
    let mut check = Value::Null;
    if wanted("sweep") && wanted("floor") {
        eprintln!(
            "[{}] checking the floor against the sweep ...",
            backend.name()
        );
        check = compare(backend, &databases.sweep, &databases.floor).await?;
    }
    if wanted("expire") && wanted("minimal") && expire["changed"] != minimal["changed"] {
        eprintln!(
            "[{}] the minimal floor expired {} contracts, the expire sweep changed {}",
            backend.name(),
            minimal["changed"],
            expire["changed"]
        );
    }
    Ok(Outcome {
        backend,
        json: json!({
            "backend": backend.name(),
            "import": imported,
            "sweep": swept,
            "compared": compared,
            "floor": floor,
            "rows": rows,
            "floor_matches_sweep": check,
            "expire": expire,
            "minimal": minimal,
        }),
    })
}

fn seconds(value: &Value) -> f64 {
    value.as_f64().unwrap_or(f64::NAN)
}

fn mib(kib: &Value) -> f64 {
    kib.as_f64().unwrap_or(f64::NAN) / 1024.0
}

impl Outcome {
    fn render(&self, args: &Args) -> String {
        let json = &self.json;
        let import = &json["import"];
        let sweep = &json["sweep"];
        let floor = &json["floor"];
        let rows = &json["rows"];
        let mut out = String::new();
        let _ = writeln!(out, "## {}", self.backend.title());
        let _ = writeln!(
            out,
            "import: {} contracts in {:.1} s = {:.0} contracts/s (peak RSS {:.0} MiB)",
            import["imported"],
            seconds(&import["seconds"]),
            seconds(&import["imported"]) / seconds(&import["seconds"]),
            mib(&import["peak_kib"])
        );
        let due = &import["due"];
        let _ = writeln!(
            out,
            "due on {BUSINESS_DATE}: execute_cancellations {}, auto_extend {}, expire {}, \
             refresh_deadlines {}, send_reminders {}; distinct contracts {} ({:.1}%)",
            due["execute_cancellations"],
            due["auto_extend"],
            due["expire"],
            due["refresh_deadlines"],
            due["send_reminders"],
            due["any"],
            100.0 * seconds(&due["any"]) / args.contracts as f64
        );
        // A phase left out by `--phases` has no figures (null): its lines are left out too,
        // rather than printed as NaN or as a failed comparison.
        if !sweep.is_null() {
            let _ = writeln!(
                out,
                "\n| job | examined | changed | run time s | contracts/s |\n|---|---:|---:|---:|---:|"
            );
            for job in Job::ALL {
                let entry = &sweep["jobs"][job.as_str()];
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {:.2} | {:.0} |",
                    job.as_str(),
                    entry["examined"],
                    entry["changed"],
                    seconds(&entry["seconds"]),
                    seconds(&entry["changed"]) / seconds(&entry["seconds"])
                );
            }
            let _ = writeln!(
                out,
                "| **whole sweep, wall time** ({} runs, {} zones at a time) | {} | {} | {:.2} | {:.0} |",
                sweep["runs"],
                // SQLite has one writer: the store sweeps one zone at a time.
                match self.backend {
                    Backend::Sqlite => 1,
                    Backend::Postgres => args.parallel_zones,
                },
                sweep["examined"],
                sweep["changed"],
                seconds(&sweep["seconds"]),
                seconds(&sweep["changed"]) / seconds(&sweep["seconds"])
            );
            let _ = writeln!(
                out,
                "(a job's run time is the sum of its runs' durations; runs of zones swept at once \
                 overlap, so these add up to more than the wall time)"
            );
        }
        let compared = &json["compared"];
        if !compared.is_null() {
            let compared_sweep = seconds(&compared["seconds"]);
            let compared_changed = seconds(&compared["changed"]);
            let _ = writeln!(
                out,
                "\nexecute_cancellations + expire ({compared_changed:.0} contracts):\n\
                 | approach | s | contracts/s | ratio |\n|---|---:|---:|---:|"
            );
            let floor_seconds = seconds(&floor["seconds"]);
            let rows_seconds = seconds(&rows["estimated_seconds"]);
            if !floor.is_null() {
                let _ = writeln!(
                    out,
                    "| floor (set-based SQL) | {:.2} | {:.0} | sweep/floor = {:.2} |",
                    floor_seconds,
                    seconds(&floor["changed"]) / floor_seconds,
                    compared_sweep / floor_seconds
                );
            }
            let _ = writeln!(
                out,
                "| sweep (sweep_due of these two jobs, wall time) | {:.2} | {:.0} | |",
                compared_sweep,
                compared_changed / compared_sweep
            );
            if !rows.is_null() {
                let _ = writeln!(
                    out,
                    "| row-at-a-time{} | {:.2} | {:.0} | row/sweep = {:.1} |",
                    if rows["extrapolated"].as_bool().unwrap_or(false) {
                        format!(
                            " (sample of {}, extrapolated)",
                            rows["sampled"].as_u64().unwrap_or(0)
                        )
                    } else {
                        String::new()
                    },
                    rows_seconds,
                    seconds(&rows["candidates"]) / rows_seconds,
                    rows_seconds / compared_sweep
                );
            }
        }
        if !floor.is_null() {
            let _ = writeln!(
                out,
                "\nfloor per job: execute_cancellations {:.2} s ({} contracts), expire {:.2} s ({} \
                 contracts); floor made the same transitions as the sweep: {}",
                seconds(&floor["jobs"]["execute_cancellations"]["seconds"]),
                floor["jobs"]["execute_cancellations"]["changed"],
                seconds(&floor["jobs"]["expire"]["seconds"]),
                floor["jobs"]["expire"]["changed"],
                if json["floor_matches_sweep"]["same"].as_bool() == Some(true) {
                    "yes".to_string()
                } else if json["floor_matches_sweep"].is_null() {
                    "not checked (the sweep phase did not run)".to_string()
                } else {
                    format!("NO: {}", json["floor_matches_sweep"]["differences"])
                }
            );
        }
        let expire = &json["expire"];
        let minimal = &json["minimal"];
        if !expire.is_null() && !minimal.is_null() {
            let _ = writeln!(
                out,
                "\nexpire alone against the minimal-schema floor (issue 16):\n\
                 | approach | s | contracts/s | ratio |\n|---|---:|---:|---:|\n\
                 | minimal floor (`floor_contracts` + `floor_events`, 2 statements) | {:.3} | {:.0} | \
                 expire/minimal = {:.2} |\n\
                 | sweep of expire (`sweep_due`, wall time; peak RSS {:.1} MiB) | {:.3} | {:.0} | |",
                seconds(&minimal["seconds"]),
                seconds(&minimal["changed"]) / seconds(&minimal["seconds"]),
                seconds(&expire["seconds"]) / seconds(&minimal["seconds"]),
                mib(&expire["peak_kib"]),
                seconds(&expire["seconds"]),
                seconds(&expire["changed"]) / seconds(&expire["seconds"]),
            );
        }
        if !sweep.is_null() {
            let _ = writeln!(
                out,
                "sweep peak RSS: {:.1} MiB (batch size {})",
                mib(&sweep["peak_kib"]),
                args.batch_size
            );
            let _ = writeln!(
                out,
                "no-op tick (zones + ledger, no contract read): median {:.2} ms, min {:.2} ms, max \
                 {:.2} ms over {} ticks",
                seconds(&sweep["noop_ms"]["median"]),
                seconds(&sweep["noop_ms"]["min"]),
                seconds(&sweep["noop_ms"]["max"]),
                args.ticks
            );
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Phases (child processes)
// ---------------------------------------------------------------------------------------------

/// Peak resident set size of this process, KiB.
fn peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

async fn run_phase(phase: &str, args: &Args) -> anyhow::Result<Value> {
    if phase == "parse" {
        // Diagnostics: what import costs before the database (read, parse, compute dates).
        let file = args
            .file
            .clone()
            .ok_or_else(|| anyhow!("parse needs --file"))?;
        let started = Instant::now();
        let mut parsed = Vec::new();
        for line in std::io::BufRead::lines(BufReader::new(std::fs::File::open(&file)?)) {
            let line = line?;
            let record = contractd::contract::record::read_record(&line)
                .map_err(|error| anyhow!("{error}"))?;
            let mut contract = record
                .parse(&ParseDefaults {
                    time_zone: chrono_tz::UTC,
                })
                .map_err(|error| anyhow!("{error}"))?;
            let today = contractd::clock::business_date(instant(IMPORT_NOW), contract.time_zone);
            contract.recompute_cancellation_dates(today);
            let _ = contractd::lifecycle::DueDates::of(&contract);
            parsed.push(contract);
        }
        return Ok(
            json!({ "contracts": parsed.len(), "seconds": started.elapsed().as_secs_f64(), "peak_kib": peak_kib() }),
        );
    }
    if phase == "generate" {
        // For profiling one phase by hand: write the file the phases read.
        let file = args
            .file
            .clone()
            .ok_or_else(|| anyhow!("generate needs --file"))?;
        let kinds = generate(&file, args.contracts, args.seed)?;
        let kinds: BTreeMap<&str, usize> = kinds
            .iter()
            .map(|(kind, count)| (kind.name(), *count))
            .collect();
        return Ok(json!({ "kinds": kinds }));
    }
    let backend = args
        .backend
        .ok_or_else(|| anyhow!("--phase needs --phase-backend"))?;
    let url = args
        .url
        .clone()
        .ok_or_else(|| anyhow!("--phase needs --url"))?;
    match backend {
        Backend::Sqlite => {
            let defaults = Settings::load(None, None)?;
            let store = SqliteStore::connect(&SqliteSettings {
                url: url.clone(),
                max_connections: defaults.database.max_connections,
                busy_timeout: Duration::from_millis(defaults.database.busy_timeout_ms),
            })
            .await?;
            phase_on(phase, args, &store, &Raw::sqlite(&url).await?).await
        }
        Backend::Postgres => {
            let defaults = Settings::load(None, None)?;
            let store = PostgresStore::connect(&PostgresSettings {
                url: url.clone(),
                // The benchmark connects straight to the server, which also takes the migrations.
                direct_url: Some(url.clone()),
                statements: defaults.database.statements(),
                max_connections: defaults.database.max_connections,
                connect_timeout: Duration::from_millis(defaults.database.connect_timeout_ms),
            })
            .await?;
            let result = phase_on(phase, args, &store, &Raw::postgres(&url).await?).await;
            store.close().await;
            result
        }
    }
}

async fn phase_on<S: ContractStore>(
    phase: &str,
    args: &Args,
    store: &S,
    raw: &Raw,
) -> anyhow::Result<Value> {
    match phase {
        "import" => import_phase(args, store, raw).await,
        "sweep" => sweep_phase(args, store).await,
        "compared" => compared_phase(args, store).await,
        "expire" => expire_phase(args, store).await,
        "minimal" => minimal_phase(raw).await,
        "floor" => floor_phase(raw).await,
        "rows" => rows_phase(args, store, raw).await,
        "profile" => profile_phase(args, store).await,
        "insert" => insert_phase(args, store).await,
        other => bail!("unknown phase '{other}'"),
    }
}

/// Direct SQL access for what the store does not offer: counts, the floor, maintenance.
enum Raw {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Raw {
    /// One connection with the settings of the store's writing connection, so the floor
    /// and the sweep write to SQLite on equal terms.
    async fn sqlite(url: &str) -> anyhow::Result<Raw> {
        let options = SqliteStore::writer_options(&SqliteSettings {
            url: url.to_string(),
            max_connections: 1,
            busy_timeout: Duration::from_secs(30),
        })?;
        Ok(Raw::Sqlite(
            SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await?,
        ))
    }

    async fn postgres(url: &str) -> anyhow::Result<Raw> {
        Ok(Raw::Postgres(
            PgPoolOptions::new().max_connections(1).connect(url).await?,
        ))
    }

    /// A query returning `(label, number)` rows; `?1` is the business date.
    async fn pairs(&self, sql: &str) -> anyhow::Result<Vec<(String, i64)>> {
        let rows = match self {
            Raw::Sqlite(pool) => sqlx::query(sql)
                .bind(BUSINESS_DATE)
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|row| Ok((row.try_get::<String, _>(0)?, row.try_get::<i64, _>(1)?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()?,
            Raw::Postgres(pool) => sqlx::query(&sql.replace("?1", "$1"))
                .bind(business_date())
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|row| Ok((row.try_get::<String, _>(0)?, row.try_get::<i64, _>(1)?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()?,
        };
        Ok(rows)
    }

    async fn refs(&self, sql: &str) -> anyhow::Result<Vec<String>> {
        Ok(match self {
            Raw::Sqlite(pool) => {
                sqlx::query_scalar(sql)
                    .bind(BUSINESS_DATE)
                    .fetch_all(pool)
                    .await?
            }
            Raw::Postgres(pool) => {
                sqlx::query_scalar(&sql.replace("?1", "$1"))
                    .bind(business_date())
                    .fetch_all(pool)
                    .await?
            }
        })
    }

    async fn close(&self) {
        match self {
            Raw::Sqlite(pool) => pool.close().await,
            Raw::Postgres(pool) => pool.close().await,
        }
    }
}

fn due_column(job: Job) -> &'static str {
    match job {
        Job::ExecuteCancellations => "due_cancellation_on",
        Job::AutoExtend => "due_extension_on",
        Job::Expire => "due_expiry_on",
        Job::RefreshDeadlines => "due_refresh_on",
        Job::SendReminders => "due_remind_on",
    }
}

/// Import the file through the real import path, timed; then (untimed) count what is due and
/// leave the database as a running system would have it (SQLite: WAL checkpointed;
/// PostgreSQL: vacuumed and analysed, as autovacuum does after a bulk load).
async fn import_phase<S: ContractStore>(
    args: &Args,
    store: &S,
    raw: &Raw,
) -> anyhow::Result<Value> {
    store.migrate().await?;
    let file = args
        .file
        .clone()
        .ok_or_else(|| anyhow!("import needs --file"))?;
    let started = Instant::now();
    let reader = BufReader::with_capacity(1 << 20, std::fs::File::open(&file)?);
    let imported = import_with_lead_times(
        store,
        reader,
        &ParseDefaults {
            time_zone: chrono_tz::UTC,
        },
        &args.policy()?.reminder_lead_times,
        instant(IMPORT_NOW),
        |_| {},
    )
    .await
    .map_err(|error| anyhow!("import failed: {error}"))?;
    let elapsed = started.elapsed();
    let peak = peak_kib();
    let mut due = serde_json::Map::new();
    for job in Job::ALL {
        let column = due_column(*job);
        let count = raw
            .pairs(&format!(
                "SELECT 'n', COUNT(*) FROM contracts WHERE {column} IS NOT NULL AND {column} < ?1"
            ))
            .await?;
        due.insert(job.as_str().into(), count[0].1.into());
    }
    let any = raw
        .pairs(
            "SELECT 'n', COUNT(*) FROM contracts WHERE due_cancellation_on < ?1 \
             OR due_extension_on < ?1 OR due_expiry_on < ?1 OR due_refresh_on < ?1 \
             OR due_remind_on < ?1",
        )
        .await?;
    due.insert("any".into(), any[0].1.into());
    match raw {
        Raw::Sqlite(pool) => {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(pool)
                .await?;
        }
        Raw::Postgres(pool) => {
            sqlx::query("VACUUM (ANALYZE)").execute(pool).await?;
        }
    }
    raw.close().await;
    Ok(json!({
        "imported": imported,
        "seconds": elapsed.as_secs_f64(),
        "contracts_per_second": imported as f64 / elapsed.as_secs_f64(),
        "peak_kib": peak,
        "due": due,
    }))
}

fn sweep_options(args: &Args) -> SweepOptions {
    let mut options = SweepOptions::new(
        args.batch_size,
        Duration::from_secs(60),
        args.policy().unwrap_or_default(),
    );
    options.as_of = Some(business_date());
    options.parallel_zones = args.parallel_zones;
    options
}

/// Fail the phase unless every run of the sweep succeeded.
fn all_succeeded(report: &SweepReport) -> anyhow::Result<()> {
    if let Some(failed) = report
        .jobs
        .iter()
        .find(|job| job.outcome != JobOutcome::Succeeded)
    {
        bail!(
            "{} in {} did not succeed: {:?}",
            failed.key.job.as_str(),
            failed.key.zone,
            failed.outcome
        );
    }
    Ok(())
}

/// The real sweep restricted to the jobs the floor does, on its own copy: the wall time the
/// floor and the row-at-a-time loop are compared with (with zones swept in parallel, the run
/// times of the full sweep overlap and do not add up to a job's wall time).
async fn compared_phase<S: ContractStore>(args: &Args, store: &S) -> anyhow::Result<Value> {
    let clock = OffsetClock::fixed(instant(SWEEP_NOW));
    let mut options = sweep_options(args);
    options.jobs = COMPARED_JOBS.to_vec();
    let started = Instant::now();
    let report = sweep_due(store, &clock, &options, &Shutdown::never()).await?;
    let elapsed = started.elapsed();
    all_succeeded(&report)?;
    let changed: i64 = report.jobs.iter().map(|run| run.counts.changed).sum();
    Ok(json!({
        "seconds": elapsed.as_secs_f64(),
        "changed": changed,
        "runs": report.jobs.len(),
        "peak_kib": peak_kib(),
    }))
}

/// The real sweep of `expire` alone, on its own copy: what the minimal floor is compared with.
async fn expire_phase<S: ContractStore>(args: &Args, store: &S) -> anyhow::Result<Value> {
    let clock = OffsetClock::fixed(instant(SWEEP_NOW));
    let mut options = sweep_options(args);
    options.jobs = vec![Job::Expire];
    let started = Instant::now();
    let report = sweep_due(store, &clock, &options, &Shutdown::never()).await?;
    let elapsed = started.elapsed();
    all_succeeded(&report)?;
    let changed: i64 = report.jobs.iter().map(|run| run.counts.changed).sum();
    Ok(json!({
        "seconds": elapsed.as_secs_f64(),
        "changed": changed,
        "runs": report.jobs.len(),
        "peak_kib": peak_kib(),
    }))
}

/// One full sweep of the business date with the real sweep; then the no-op tick.
async fn sweep_phase<S: ContractStore>(args: &Args, store: &S) -> anyhow::Result<Value> {
    let clock = OffsetClock::fixed(instant(SWEEP_NOW));
    let options = sweep_options(args);
    let shutdown = Shutdown::never();
    let before = peak_kib();
    let started = Instant::now();
    let report = sweep_due(store, &clock, &options, &shutdown).await?;
    let elapsed = started.elapsed();
    let peak = peak_kib();
    all_succeeded(&report)?;
    let mut jobs = serde_json::Map::new();
    let (mut examined, mut changed, mut skipped) = (0, 0, 0);
    for job in Job::ALL {
        let runs: Vec<_> = report
            .jobs
            .iter()
            .filter(|run| run.key.job == *job)
            .collect();
        let sum = |field: fn(&contractd::sweep::JobReport) -> i64| -> i64 {
            runs.iter().map(|run| field(run)).sum()
        };
        let job_examined = sum(|run| run.counts.examined);
        let job_changed = sum(|run| run.counts.changed);
        let job_skipped = sum(|run| run.counts.skipped);
        examined += job_examined;
        changed += job_changed;
        skipped += job_skipped;
        let job_seconds: f64 = runs.iter().map(|run| run.duration.as_secs_f64()).sum();
        jobs.insert(
            job.as_str().into(),
            json!({
                "runs": runs.len(),
                "examined": job_examined,
                "changed": job_changed,
                "skipped": job_skipped,
                "seconds": job_seconds,
            }),
        );
    }
    // The no-op tick: the date's runs are done, so this lists the zones, reads the ledger and
    // must claim nothing (claiming a run is the only way a contract gets read).
    let mut samples = Vec::with_capacity(args.ticks);
    for _ in 0..args.ticks {
        let tick = Instant::now();
        let again = sweep_due(store, &clock, &options, &shutdown).await?;
        samples.push(tick.elapsed().as_secs_f64() * 1000.0);
        if !again.jobs.is_empty() {
            bail!("the no-op tick ran {} job(s)", again.jobs.len());
        }
    }
    samples.sort_by(f64::total_cmp);
    Ok(json!({
        "seconds": elapsed.as_secs_f64(),
        "runs": report.jobs.len(),
        "examined": examined,
        "changed": changed,
        "skipped": skipped,
        "jobs": jobs,
        "peak_kib": peak,
        "peak_kib_before_sweep": before,
        "noop_ms": {
            "median": samples[samples.len() / 2],
            "min": samples[0],
            "max": samples[samples.len() - 1],
            "samples": samples,
        },
    }))
}

// ---------------------------------------------------------------------------------------------
// The floor: hand-written set-based SQL for execute_cancellations and expire
// ---------------------------------------------------------------------------------------------

/// SQLite: a few statements per job in one `BEGIN IMMEDIATE` transaction, each over the whole
/// due set (`?1` business date, `?2` now in ms; `{where}` selects the due contracts as `c`).
const SQLITE_CANCEL: [&str; 5] = [
    "INSERT INTO contract_events (contract_id, contract_ref, kind, effective_on, line_ref, \
     details, transition_key, run_id, recorded_at_ms) \
     SELECT c.id, c.ref, 'cancellation_executed', ?1, NULL, json_object( \
       'end_date', c.cancellation_end_date, 'previous_end_date', c.end_date, \
       'reason', c.cancellation_reason, 'notes', c.cancellation_notes, \
       'final_invoice', json(CASE WHEN c.cancellation_final_invoice THEN 'true' ELSE 'false' END), \
       'lines', CASE WHEN c.has_children THEN json((SELECT json_group_array(json_object( \
           'ref', x.ref, 'status', x.status)) FROM (SELECT l.ref, CASE WHEN l.billable \
           OR l.start_date > c.cancellation_end_date THEN 'cancelled' ELSE 'expired' END \
           AS status FROM contract_lines l WHERE l.contract_id = c.id AND l.status = 'active' \
           ORDER BY l.position) x)) ELSE json('[]') END, \
       'received_on', c.cancellation_received_on, 'cause', 'cancellation'), \
     'cancellation_executed:' || c.cancellation_end_date, NULL, ?2 \
     FROM contracts c WHERE {where}",
    "DELETE FROM billing_schedules WHERE contract_id IN \
     (SELECT c.id FROM contracts c WHERE {where} AND c.has_children) \
     AND period_start > (SELECT cancellation_end_date FROM contracts \
                         WHERE id = billing_schedules.contract_id)",
    "UPDATE billing_schedules AS s SET period_end = c.cancellation_end_date, \
     amount_minor = CASE WHEN l.kind = 'recurring_fixed' AND c.proration = 'actual_days' \
       THEN (2 * s.amount_minor * (CAST(julianday(c.cancellation_end_date) \
       - julianday(s.period_start) AS INTEGER) + 1) + (CAST(julianday(s.period_end) \
       - julianday(s.period_start) AS INTEGER) + 1)) / (2 * (CAST(julianday(s.period_end) \
       - julianday(s.period_start) AS INTEGER) + 1)) ELSE s.amount_minor END \
     FROM contracts AS c, contract_lines AS l \
     WHERE {where} AND c.has_children AND s.contract_id = c.id \
     AND l.contract_id = c.id AND l.ref = s.line_ref \
     AND s.period_start <= c.cancellation_end_date AND s.period_end > c.cancellation_end_date",
    "UPDATE contract_lines AS l SET \
     status = CASE WHEN l.status <> 'active' THEN l.status WHEN l.billable \
       OR l.start_date > c.cancellation_end_date THEN 'cancelled' ELSE 'expired' END, \
     end_date = CASE WHEN l.end_date IS NULL OR l.end_date > c.cancellation_end_date \
       THEN max(c.cancellation_end_date, l.start_date) ELSE l.end_date END, \
     cancellation_received_on = NULL, cancellation_end_date = NULL, \
     cancellation_reason = NULL, cancellation_notes = NULL, \
     cancellation_final_invoice = NULL, cancellation_restore_auto_extend = NULL \
     FROM contracts AS c WHERE {where} AND c.has_children AND l.contract_id = c.id",
    "UPDATE contracts AS c SET version = c.version + 1, status = 'cancelled', \
     original_end_date = CASE WHEN c.end_date IS NOT NULL \
       AND c.end_date <> c.cancellation_end_date \
       THEN coalesce(c.original_end_date, c.end_date) ELSE c.original_end_date END, \
     end_date = c.cancellation_end_date, end_reason = c.cancellation_reason, \
     end_notes = c.cancellation_notes, auto_extend = 0, \
     cancellation_received_on = NULL, cancellation_end_date = NULL, \
     cancellation_reason = NULL, cancellation_notes = NULL, \
     cancellation_final_invoice = NULL, cancellation_restore_auto_extend = NULL, \
     cancellation_date = NULL, latest_cancellation_date = NULL, \
     due_cancellation_on = NULL, due_extension_on = NULL, due_expiry_on = NULL, \
     due_refresh_on = NULL, updated_at_ms = ?2 WHERE {where}",
];

const SQLITE_CANCEL_WHERE: &str = "c.time_zone IN ({zones}) AND c.due_cancellation_on < ?1 \
     AND +c.status = 'active' AND c.cancellation_end_date IS NOT NULL \
     AND c.cancellation_end_date < ?1";

const SQLITE_EXPIRE: [&str; 3] = [
    "INSERT INTO contract_events (contract_id, contract_ref, kind, effective_on, line_ref, \
     details, transition_key, run_id, recorded_at_ms) \
     SELECT c.id, c.ref, 'expired', ?1, NULL, json_object('end_date', c.end_date, \
       'lines', CASE WHEN c.has_children THEN json((SELECT json_group_array(x.ref) FROM \
         (SELECT l.ref FROM contract_lines l WHERE l.contract_id = c.id \
          AND l.status = 'active' ORDER BY l.position) x)) ELSE json('[]') END), \
     'expired:' || c.end_date, NULL, ?2 FROM contracts c WHERE {where}",
    "UPDATE contract_lines AS l SET status = 'expired', \
     end_date = CASE WHEN l.end_date IS NULL OR l.end_date > c.end_date \
       THEN max(c.end_date, l.start_date) ELSE l.end_date END, \
     cancellation_received_on = NULL, cancellation_end_date = NULL, \
     cancellation_reason = NULL, cancellation_notes = NULL, \
     cancellation_final_invoice = NULL, cancellation_restore_auto_extend = NULL \
     FROM contracts AS c WHERE {where} AND c.has_children AND l.contract_id = c.id \
     AND l.status = 'active'",
    "UPDATE contracts AS c SET version = c.version + 1, status = 'expired', \
     cancellation_date = NULL, latest_cancellation_date = NULL, \
     due_cancellation_on = NULL, due_extension_on = NULL, due_expiry_on = NULL, \
     due_refresh_on = NULL, updated_at_ms = ?2 WHERE {where}",
];

const SQLITE_EXPIRE_WHERE: &str = "c.time_zone IN ({zones}) AND c.due_expiry_on < ?1 \
     AND +c.status = 'active' AND c.cancellation_end_date IS NULL \
     AND c.end_date IS NOT NULL AND c.end_date < ?1";

/// PostgreSQL: one statement per job (data-modifying CTEs all see the snapshot before it);
/// `$1` business date, `$2` zones, `$3` now in ms.
const POSTGRES_CANCEL: &str = "WITH due AS MATERIALIZED ( \
       SELECT c.id, c.ref, c.end_date, c.proration, c.has_children, \
              c.cancellation_end_date AS e, c.cancellation_received_on AS received_on, \
              c.cancellation_reason AS reason, c.cancellation_notes AS notes, \
              coalesce(c.cancellation_final_invoice, false) AS final_invoice \
       FROM contracts c WHERE c.time_zone = ANY($2) AND c.due_cancellation_on < $1 \
       AND c.status = 'active' AND c.cancellation_end_date IS NOT NULL \
       AND c.cancellation_end_date < $1 \
     ), line_lists AS ( \
       SELECT l.contract_id, jsonb_agg(jsonb_build_object('ref', l.ref, 'status', \
         CASE WHEN l.billable OR l.start_date > d.e THEN 'cancelled' ELSE 'expired' END) \
         ORDER BY l.position) AS lines \
       FROM contract_lines l JOIN due d ON d.id = l.contract_id \
       WHERE d.has_children AND l.status = 'active' GROUP BY l.contract_id \
     ), dropped AS ( \
       DELETE FROM billing_schedules s USING due d \
       WHERE d.has_children AND s.contract_id = d.id AND s.period_start > d.e RETURNING 1 \
     ), cut AS ( \
       UPDATE billing_schedules s SET period_end = d.e, \
         amount_minor = CASE WHEN l.kind = 'recurring_fixed' AND d.proration = 'actual_days' \
           THEN (2 * s.amount_minor * (d.e - s.period_start + 1) \
                 + (s.period_end - s.period_start + 1)) \
                / (2 * (s.period_end - s.period_start + 1)) ELSE s.amount_minor END \
       FROM due d, contract_lines l \
       WHERE d.has_children AND s.contract_id = d.id AND l.contract_id = d.id \
       AND l.ref = s.line_ref AND s.period_start <= d.e AND s.period_end > d.e RETURNING 1 \
     ), ended_lines AS ( \
       UPDATE contract_lines l SET \
         status = CASE WHEN l.status <> 'active' THEN l.status \
           WHEN l.billable OR l.start_date > d.e THEN 'cancelled' ELSE 'expired' END, \
         end_date = CASE WHEN l.end_date IS NULL OR l.end_date > d.e \
           THEN greatest(d.e, l.start_date) ELSE l.end_date END, \
         cancellation_received_on = NULL, cancellation_end_date = NULL, \
         cancellation_reason = NULL, cancellation_notes = NULL, \
         cancellation_final_invoice = NULL, cancellation_restore_auto_extend = NULL \
       FROM due d WHERE d.has_children AND l.contract_id = d.id RETURNING 1 \
     ), updated AS ( \
       UPDATE contracts c SET version = c.version + 1, status = 'cancelled', \
         original_end_date = CASE WHEN c.end_date IS NOT NULL AND c.end_date <> d.e \
           THEN coalesce(c.original_end_date, c.end_date) ELSE c.original_end_date END, \
         end_date = d.e, end_reason = d.reason, end_notes = d.notes, auto_extend = false, \
         cancellation_received_on = NULL, cancellation_end_date = NULL, \
         cancellation_reason = NULL, cancellation_notes = NULL, \
         cancellation_final_invoice = NULL, cancellation_restore_auto_extend = NULL, \
         cancellation_date = NULL, latest_cancellation_date = NULL, \
         due_cancellation_on = NULL, due_extension_on = NULL, due_expiry_on = NULL, \
         due_refresh_on = NULL, updated_at_ms = $3 \
       FROM due d WHERE c.id = d.id RETURNING c.id \
     ) \
     INSERT INTO contract_events (contract_id, contract_ref, kind, effective_on, line_ref, \
       details, transition_key, run_id, recorded_at_ms) \
     SELECT d.id, d.ref, 'cancellation_executed', $1, NULL, jsonb_build_object( \
       'end_date', to_char(d.e, 'YYYY-MM-DD'), \
       'previous_end_date', to_char(d.end_date, 'YYYY-MM-DD'), \
       'reason', d.reason, 'notes', d.notes, 'final_invoice', d.final_invoice, \
       'lines', coalesce(ll.lines, '[]'::jsonb), \
       'received_on', to_char(d.received_on, 'YYYY-MM-DD'), 'cause', 'cancellation'), \
       'cancellation_executed:' || to_char(d.e, 'YYYY-MM-DD'), NULL, $3 \
     FROM updated u JOIN due d ON d.id = u.id LEFT JOIN line_lists ll ON ll.contract_id = d.id";

const POSTGRES_EXPIRE: &str = "WITH due AS MATERIALIZED ( \
       SELECT c.id, c.ref, c.end_date, c.has_children FROM contracts c \
       WHERE c.time_zone = ANY($2) AND c.due_expiry_on < $1 AND c.status = 'active' \
       AND c.cancellation_end_date IS NULL AND c.end_date IS NOT NULL AND c.end_date < $1 \
     ), line_lists AS ( \
       SELECT l.contract_id, jsonb_agg(l.ref ORDER BY l.position) AS lines \
       FROM contract_lines l JOIN due d ON d.id = l.contract_id \
       WHERE d.has_children AND l.status = 'active' GROUP BY l.contract_id \
     ), ended_lines AS ( \
       UPDATE contract_lines l SET status = 'expired', \
         end_date = CASE WHEN l.end_date IS NULL OR l.end_date > d.end_date \
           THEN greatest(d.end_date, l.start_date) ELSE l.end_date END, \
         cancellation_received_on = NULL, cancellation_end_date = NULL, \
         cancellation_reason = NULL, cancellation_notes = NULL, \
         cancellation_final_invoice = NULL, cancellation_restore_auto_extend = NULL \
       FROM due d WHERE d.has_children AND l.contract_id = d.id AND l.status = 'active' \
       RETURNING 1 \
     ), updated AS ( \
       UPDATE contracts c SET version = c.version + 1, status = 'expired', \
         cancellation_date = NULL, latest_cancellation_date = NULL, \
         due_cancellation_on = NULL, due_extension_on = NULL, due_expiry_on = NULL, \
         due_refresh_on = NULL, updated_at_ms = $3 \
       FROM due d WHERE c.id = d.id RETURNING c.id \
     ) \
     INSERT INTO contract_events (contract_id, contract_ref, kind, effective_on, line_ref, \
       details, transition_key, run_id, recorded_at_ms) \
     SELECT d.id, d.ref, 'expired', $1, NULL, jsonb_build_object( \
       'end_date', to_char(d.end_date, 'YYYY-MM-DD'), 'lines', coalesce(ll.lines, '[]'::jsonb)), \
       'expired:' || to_char(d.end_date, 'YYYY-MM-DD'), NULL, $3 \
     FROM updated u JOIN due d ON d.id = u.id LEFT JOIN line_lists ll ON ll.contract_id = d.id";

/// The minimal-schema floor of issue 16, built (untimed) from the imported rows: the
/// contracts the expire job expires on the business date are `active` with their end date;
/// active contracts it leaves alone (they extend, or a cancellation is pending: the minimal
/// schema has no column to say so) are `renewing`, so the floor expires exactly the contracts
/// the sweep of `expire` does. `?1` / `$1` is the business date.
const MINIMAL_SETUP_SQLITE: [&str; 4] = [
    "CREATE TABLE floor_contracts (id INTEGER PRIMARY KEY, ref TEXT NOT NULL UNIQUE, \
     status TEXT NOT NULL, time_zone TEXT NOT NULL, end_date TEXT)",
    "CREATE TABLE floor_events (id INTEGER PRIMARY KEY, contract_id INTEGER NOT NULL, \
     kind TEXT NOT NULL, effective_on TEXT NOT NULL, details TEXT NOT NULL, \
     UNIQUE (contract_id, kind, effective_on))",
    "INSERT INTO floor_contracts (id, ref, status, time_zone, end_date) \
     SELECT id, ref, CASE WHEN status <> 'active' THEN status \
       WHEN due_expiry_on < ?1 AND cancellation_end_date IS NULL AND end_date IS NOT NULL \
         AND end_date < ?1 THEN 'active' ELSE 'renewing' END, time_zone, end_date \
     FROM contracts ORDER BY id",
    "CREATE INDEX floor_contracts_status_end ON floor_contracts (status, end_date)",
];

const MINIMAL_SETUP_POSTGRES: [&str; 4] = [
    "CREATE TABLE floor_contracts (id BIGINT PRIMARY KEY, ref TEXT NOT NULL UNIQUE, \
     status TEXT NOT NULL, time_zone TEXT NOT NULL, end_date DATE)",
    "CREATE TABLE floor_events (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
     contract_id BIGINT NOT NULL, kind TEXT NOT NULL, effective_on DATE NOT NULL, \
     details JSONB NOT NULL, UNIQUE (contract_id, kind, effective_on))",
    "INSERT INTO floor_contracts (id, ref, status, time_zone, end_date) \
     SELECT id, ref, CASE WHEN status <> 'active' THEN status \
       WHEN due_expiry_on < $1 AND cancellation_end_date IS NULL AND end_date IS NOT NULL \
         AND end_date < $1 THEN 'active' ELSE 'renewing' END, time_zone, end_date \
     FROM contracts ORDER BY id",
    "CREATE INDEX floor_contracts_status_end ON floor_contracts (status, end_date)",
];

/// The minimal floor itself, in one transaction: the events, then the status change.
const MINIMAL_SQLITE: [&str; 2] = [
    "INSERT INTO floor_events (contract_id, kind, effective_on, details) \
     SELECT id, 'expired', ?1, json_object('end_date', end_date) FROM floor_contracts \
     WHERE status = 'active' AND end_date < ?1",
    "UPDATE floor_contracts SET status = 'expired' WHERE status = 'active' AND end_date < ?1",
];

const MINIMAL_POSTGRES: [&str; 2] = [
    "INSERT INTO floor_events (contract_id, kind, effective_on, details) \
     SELECT id, 'expired', $1, jsonb_build_object('end_date', end_date) FROM floor_contracts \
     WHERE status = 'active' AND end_date < $1",
    "UPDATE floor_contracts SET status = 'expired' WHERE status = 'active' AND end_date < $1",
];

/// Issue 16's floor: set up the minimal tables (untimed; SQLite checkpointed, PostgreSQL
/// vacuumed and analysed as after the import), then time the two statements and the commit.
async fn minimal_phase(raw: &Raw) -> anyhow::Result<Value> {
    let (changed, events, elapsed) = match raw {
        Raw::Sqlite(pool) => {
            for statement in MINIMAL_SETUP_SQLITE {
                sqlx::query(statement)
                    .bind(BUSINESS_DATE)
                    .execute(pool)
                    .await
                    .with_context(|| format!("minimal setup failed: {statement}"))?;
            }
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(pool)
                .await?;
            let started = Instant::now();
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            let inserted = sqlx::query(MINIMAL_SQLITE[0])
                .bind(BUSINESS_DATE)
                .execute(&mut *tx)
                .await?;
            let updated = sqlx::query(MINIMAL_SQLITE[1])
                .bind(BUSINESS_DATE)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            (
                updated.rows_affected(),
                inserted.rows_affected(),
                started.elapsed(),
            )
        }
        Raw::Postgres(pool) => {
            for statement in MINIMAL_SETUP_POSTGRES {
                sqlx::query(statement)
                    .bind(business_date())
                    .execute(pool)
                    .await
                    .with_context(|| format!("minimal setup failed: {statement}"))?;
            }
            sqlx::query("VACUUM (ANALYZE) floor_contracts, floor_events")
                .execute(pool)
                .await?;
            let started = Instant::now();
            let mut tx = pool.begin().await?;
            let inserted = sqlx::query(MINIMAL_POSTGRES[0])
                .bind(business_date())
                .execute(&mut *tx)
                .await?;
            let updated = sqlx::query(MINIMAL_POSTGRES[1])
                .bind(business_date())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            (
                updated.rows_affected(),
                inserted.rows_affected(),
                started.elapsed(),
            )
        }
    };
    raw.close().await;
    Ok(json!({
        "seconds": elapsed.as_secs_f64(),
        "changed": changed,
        "events": events,
        "peak_kib": peak_kib(),
    }))
}

async fn floor_phase(raw: &Raw) -> anyhow::Result<Value> {
    let now_ms = instant(SWEEP_NOW).timestamp_millis();
    let mut jobs = serde_json::Map::new();
    let mut total = 0.0;
    let mut total_changed = 0;
    for job in COMPARED_JOBS {
        let started = Instant::now();
        let (changed, events) = match raw {
            Raw::Sqlite(pool) => {
                let zones: Vec<String> = sqlx::query_scalar("SELECT time_zone FROM contract_zones")
                    .fetch_all(pool)
                    .await?;
                let zones = zones
                    .iter()
                    .map(|zone| format!("'{}'", zone.replace('\'', "''")))
                    .collect::<Vec<_>>()
                    .join(", ");
                let (statements, filter): (&[&str], &str) = match job {
                    Job::ExecuteCancellations => (&SQLITE_CANCEL, SQLITE_CANCEL_WHERE),
                    _ => (&SQLITE_EXPIRE, SQLITE_EXPIRE_WHERE),
                };
                let filter = filter.replace("{zones}", &zones);
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let mut affected = Vec::new();
                for statement in statements {
                    let sql = statement.replace("{where}", &filter);
                    let done = sqlx::query(&sql)
                        .bind(BUSINESS_DATE)
                        .bind(now_ms)
                        .execute(&mut *tx)
                        .await
                        .with_context(|| format!("floor statement failed: {sql}"))?;
                    affected.push(done.rows_affected());
                }
                tx.commit().await?;
                (affected[affected.len() - 1], affected[0])
            }
            Raw::Postgres(pool) => {
                let zones: Vec<String> = sqlx::query_scalar("SELECT time_zone FROM contract_zones")
                    .fetch_all(pool)
                    .await?;
                let sql = match job {
                    Job::ExecuteCancellations => POSTGRES_CANCEL,
                    _ => POSTGRES_EXPIRE,
                };
                let mut tx = pool.begin().await?;
                let done = sqlx::query(sql)
                    .bind(business_date())
                    .bind(&zones)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await
                    .context("floor statement failed")?;
                tx.commit().await?;
                (done.rows_affected(), done.rows_affected())
            }
        };
        let elapsed = started.elapsed().as_secs_f64();
        total += elapsed;
        total_changed += changed;
        jobs.insert(
            job.as_str().into(),
            json!({ "seconds": elapsed, "changed": changed, "events": events }),
        );
    }
    raw.close().await;
    Ok(json!({
        "seconds": total,
        "changed": total_changed,
        "jobs": jobs,
        "peak_kib": peak_kib(),
    }))
}

// ---------------------------------------------------------------------------------------------
// Row at a time: read one contract, decide in Rust, write it and its events, one transaction
// per contract
// ---------------------------------------------------------------------------------------------

async fn rows_phase<S: ContractStore>(args: &Args, store: &S, raw: &Raw) -> anyhow::Result<Value> {
    let today = business_date();
    let policy = RulePolicy::default();
    let now_ms = instant(SWEEP_NOW).timestamp_millis();
    // The sample is split over the jobs in proportion to their candidates, counted up front
    // (expiry candidates do not depend on the cancellations executed first in this data).
    let mut counts = Vec::new();
    for job in COMPARED_JOBS {
        let column = due_column(job);
        let count = raw
            .pairs(&format!(
                "SELECT 'n', COUNT(*) FROM contracts WHERE {column} IS NOT NULL AND {column} < ?1"
            ))
            .await?[0]
            .1;
        counts.push(count as usize);
    }
    let total: usize = counts.iter().sum();
    let mut jobs = serde_json::Map::new();
    let (mut sampled_total, mut sample_seconds, mut estimated) = (0usize, 0.0, 0.0);
    for (job, candidates) in COMPARED_JOBS.iter().zip(&counts) {
        let quota = if total <= args.row_sample {
            *candidates
        } else {
            ((args.row_sample as f64) * (*candidates as f64) / (total as f64)).ceil() as usize
        };
        let column = due_column(*job);
        let refs = raw
            .refs(&format!(
                "SELECT ref FROM contracts WHERE {column} IS NOT NULL AND {column} < ?1 \
                 ORDER BY {column}, id LIMIT {quota}"
            ))
            .await?;
        let started = Instant::now();
        let mut changed = 0;
        for reference in &refs {
            let Some(loaded) = store.load_contract(reference).await? else {
                continue;
            };
            let Ok(contract) = &loaded.contract else {
                continue;
            };
            if let Ok(Some(transition)) = apply_job(*job, contract, today, &policy) {
                let change = ContractChange::new(
                    loaded.id,
                    loaded.version,
                    contract,
                    transition.contract,
                    transition.events,
                );
                changed += store.commit_batch(None, &[change], now_ms).await?.applied;
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        let rate = refs.len() as f64 / elapsed;
        let job_estimate = if refs.is_empty() {
            0.0
        } else {
            *candidates as f64 / rate
        };
        sampled_total += refs.len();
        sample_seconds += elapsed;
        estimated += job_estimate;
        jobs.insert(
            job.as_str().into(),
            json!({
                "candidates": candidates,
                "sampled": refs.len(),
                "changed": changed,
                "sample_seconds": elapsed,
                "contracts_per_second": rate,
                "estimated_seconds": job_estimate,
            }),
        );
    }
    raw.close().await;
    Ok(json!({
        "candidates": total,
        "sampled": sampled_total,
        "extrapolated": sampled_total < total,
        "sample_seconds": sample_seconds,
        "estimated_seconds": estimated,
        "jobs": jobs,
        "peak_kib": peak_kib(),
    }))
}

// ---------------------------------------------------------------------------------------------
// The floor made the same transitions as the sweep
// ---------------------------------------------------------------------------------------------

/// Facts both databases must agree on after the sweep (all four jobs) and the floor (two):
/// the other two jobs change no status, no line of an ended contract, no schedule of a
/// cancelled one.
const CHECKS: [&str; 6] = [
    "SELECT status, COUNT(*) FROM contracts GROUP BY status",
    "SELECT kind, COUNT(*) FROM contract_events \
     WHERE kind IN ('expired', 'cancellation_executed') GROUP BY kind",
    "SELECT c.status || '/' || l.status, COUNT(*) FROM contract_lines l \
     JOIN contracts c ON c.id = l.contract_id WHERE c.status <> 'active' \
     GROUP BY c.status, l.status",
    "SELECT 'cancelled schedules ' || COUNT(*), CAST(coalesce(SUM(s.amount_minor), 0) AS BIGINT) \
     FROM billing_schedules s JOIN contracts c ON c.id = s.contract_id \
     WHERE c.status = 'cancelled'",
    "SELECT 'cancelled with original end date', COUNT(*) FROM contracts \
     WHERE status = 'cancelled' AND original_end_date IS NOT NULL",
    "SELECT 'ended contracts still due', COUNT(*) FROM contracts WHERE status <> 'active' \
     AND (due_cancellation_on IS NOT NULL OR due_expiry_on IS NOT NULL)",
];

async fn compare(backend: Backend, sweep_url: &str, floor_url: &str) -> anyhow::Result<Value> {
    let open = |url: String| async move {
        match backend {
            Backend::Sqlite => Raw::sqlite(&url).await,
            Backend::Postgres => Raw::postgres(&url).await,
        }
    };
    let swept = open(sweep_url.to_string()).await?;
    let floor = open(floor_url.to_string()).await?;
    let mut differences = Vec::new();
    let mut facts = Vec::new();
    for check in CHECKS {
        let mut a = swept.pairs(check).await?;
        let mut b = floor.pairs(check).await?;
        a.sort();
        b.sort();
        if a != b {
            differences.push(format!("{check}: sweep {a:?} vs floor {b:?}"));
        }
        facts.push(format!("{a:?}"));
    }
    swept.close().await;
    floor.close().await;
    Ok(json!({ "same": differences.is_empty(), "differences": differences, "facts": facts }))
}

/// Diagnostics: the sweep's loop by hand (no ledger), timing reads, rules and writes apart:
/// wall seconds and CPU seconds of all threads (the database's worker threads included), so
/// variants can be compared on a busy machine.
async fn profile_phase<S: ContractStore>(args: &Args, store: &S) -> anyhow::Result<Value> {
    let today = business_date();
    let policy = RulePolicy::default();
    let now_ms = instant(SWEEP_NOW).timestamp_millis();
    let zones = store.zones().await?;
    let mut result = serde_json::Map::new();
    let (mut total_wall, mut total_cpu) = (0.0, 0.0);
    for job in Job::ALL {
        let mut wall = [0.0f64; 3];
        let mut cpu = [0.0f64; 3];
        let io_before = io_counters();
        let mut count = 0;
        let mut clock = |section: usize, started: (Instant, f64)| {
            wall[section] += started.0.elapsed().as_secs_f64();
            cpu[section] += cpu_seconds() - started.1;
        };
        let now = || (Instant::now(), cpu_seconds());
        for zone in &zones {
            let mut cursor = None;
            loop {
                let started = now();
                let batch = store
                    .due_batch(*job, zone, today, cursor, args.batch_size)
                    .await?;
                clock(0, started);
                if batch.is_empty() {
                    break;
                }
                let full = batch.len() >= args.batch_size as usize;
                let started = now();
                let mut changes = Vec::new();
                for loaded in batch {
                    count += 1;
                    if let Some(due) = loaded.due {
                        cursor = Some(contractd::storage::BatchCursor { due, id: loaded.id });
                    }
                    let Ok(contract) = &loaded.contract else {
                        continue;
                    };
                    if let Ok(Some(transition)) = apply_job(*job, contract, today, &policy) {
                        changes.push(ContractChange::new(
                            loaded.id,
                            loaded.version,
                            contract,
                            transition.contract,
                            transition.events,
                        ));
                    }
                }
                clock(1, started);
                let started = now();
                store.commit_batch(None, &changes, now_ms).await?;
                clock(2, started);
                if !full {
                    break;
                }
            }
        }
        total_wall += wall.iter().sum::<f64>();
        total_cpu += cpu.iter().sum::<f64>();
        result.insert(
            job.as_str().into(),
            json!({
                "contracts": count,
                "io": io_counters().iter().zip(io_before.iter()).map(|(a, b)| a - b).collect::<Vec<_>>(),
                "wall": { "read": wall[0], "rules": wall[1], "write": wall[2] },
                "cpu": { "read": cpu[0], "rules": cpu[1], "write": cpu[2] },
            }),
        );
    }
    result.insert("wall".into(), total_wall.into());
    result.insert("cpu".into(), total_cpu.into());
    result.insert("schedstat".into(), schedstat());
    Ok(Value::Object(result))
}

/// `[rchar, wchar, syscr, syscw]` of this process so far.
fn io_counters() -> [i64; 4] {
    let text = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().parse().ok())
            .unwrap_or(0)
    };
    [
        field("rchar:"),
        field("wchar:"),
        field("syscr:"),
        field("syscw:"),
    ]
}

/// CPU seconds used so far by every thread of this process.
fn cpu_seconds() -> f64 {
    let mut nanos = 0.0;
    if let Ok(entries) = std::fs::read_dir("/proc/self/task") {
        for entry in entries.flatten() {
            let stat = std::fs::read_to_string(entry.path().join("schedstat")).unwrap_or_default();
            nanos += stat
                .split_whitespace()
                .next()
                .and_then(|field| field.parse::<f64>().ok())
                .unwrap_or(0.0);
        }
    }
    nanos / 1e9
}

/// Per thread: seconds on CPU and seconds runnable but waiting for a CPU.
fn schedstat() -> Value {
    let mut threads = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc/self/task") {
        for entry in entries.flatten() {
            let stat = std::fs::read_to_string(entry.path().join("schedstat")).unwrap_or_default();
            let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            let fields: Vec<f64> = stat
                .split_whitespace()
                .filter_map(|field| field.parse().ok())
                .collect();
            if fields.len() >= 3 {
                threads.push(json!({
                    "thread": name.trim(),
                    "cpu_s": fields[0] / 1e9,
                    "runqueue_wait_s": fields[1] / 1e9,
                    "slices": fields[2],
                }));
            }
        }
    }
    Value::Array(threads)
}

/// Diagnostics: import's two database calls timed apart, on contracts parsed beforehand.
async fn insert_phase<S: ContractStore>(args: &Args, store: &S) -> anyhow::Result<Value> {
    store.migrate().await?;
    let file = args
        .file
        .clone()
        .ok_or_else(|| anyhow!("insert needs --file"))?;
    let now = instant(IMPORT_NOW);
    let mut contracts = Vec::new();
    for line in std::io::BufRead::lines(BufReader::new(std::fs::File::open(&file)?)) {
        let record =
            contractd::contract::record::read_record(&line?).map_err(|error| anyhow!("{error}"))?;
        let mut contract = record
            .parse(&ParseDefaults {
                time_zone: chrono_tz::UTC,
            })
            .map_err(|error| anyhow!("{error}"))?;
        let today = contractd::clock::business_date(now, contract.time_zone);
        contract.recompute_cancellation_dates(today);
        contracts.push(contractd::storage::NewContract {
            contract,
            imported_on: today,
        });
    }
    let references: Vec<String> = contracts
        .iter()
        .map(|new| new.contract.reference.clone())
        .collect();
    let (cpu, started) = (cpu_seconds(), Instant::now());
    let existing = store.existing_references(&references).await?;
    let lookup = (started.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    let (cpu, started) = (cpu_seconds(), Instant::now());
    store
        .insert_contracts(&contracts, now.timestamp_millis())
        .await?;
    let insert = (started.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    Ok(json!({
        "existing": existing.len(),
        "lookup_wall_cpu": [lookup.0, lookup.1],
        "insert_wall_cpu": [insert.0, insert.1],
        "io": std::fs::read_to_string("/proc/self/io").unwrap_or_default(),
    }))
}
