//! The webhook benchmark (issue 13): deliveries per second to a loopback receiver and the delay
//! from commit to delivery, on SQLite and PostgreSQL.
//!
//! ```text
//! cargo bench --bench webhooks -- [--events N] [--backend sqlite|postgres|both]
//!                                 [--batch B] [--interval-ms I] [--timeout-s T] [--seed X]
//!                                 [--postgres-url URL]
//! ```
//!
//! Defaults: 10,000 events, both backends, batches of 1,000 every 2,000 ms in the serve
//! scenarios, 120 s at most per scenario. PostgreSQL is the server at `--postgres-url` (or
//! `CONTRACTD_BENCH_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`,
//! trust auth): each run creates `contractd_bench_<uuid>_{bulk,poll,wake}` and drops them at
//! the end. SQLite databases are files in a temporary directory.
//!
//! The receiver is an axum server on 127.0.0.1:0 in this process, answering 200 at once and
//! recording each request's arrival instant and `webhook-id`. One endpoint points at it, with
//! the default `[webhooks]` settings (timeout, retries, `poll_ms`), registered by one
//! `deliver_due` pass before any event exists (an endpoint starts at the head of the feed).
//! Events are the `imported` events of `contractd::transfer::import` (one per contract, all of
//! one import committed in one transaction); the commit instant of an import is when `import`
//! returns. Scenarios, each on a fresh database:
//!
//! 1. **bulk**: import N contracts in one transaction, then `deliver_due` passes until all N
//!    are delivered. Deliveries per second = N / the passes' wall time (fan-out included).
//! 2. **serve, poll**: `run_worker` runs as in `serve` (default `poll_ms`); N contracts are
//!    imported B at a time, one import every I ms, and nothing wakes the worker (as for an
//!    operator's import in another process: the next poll finds the events).
//! 3. **serve, wake**: the same, but the worker is woken after each import, as `serve`'s
//!    sweep wakes it after a pass that changed contracts.
//!
//! For every event the delay is from the commit of its import to the first arrival of its
//! `webhook-id` at the receiver (p50, p95, max). Duplicates (a second arrival of an id) are
//! counted.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Cursor;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{json, Value};
use sqlx::{Connection, Executor};
use tokio::sync::Notify;

use contractd::clock::{SharedClock, SystemClock};
use contractd::config::{EndpointSettings, Settings};
use contractd::contract::record::ParseDefaults;
use contractd::shutdown::{self, Shutdown};
use contractd::storage::sqlite::SqliteSettings;
use contractd::storage::{
    ContractStore, EventId, FeedPosition, OutboxStore, PostgresSettings, PostgresStore, SqliteStore,
};
use contractd::transfer::import;
use contractd::webhooks::{deliver_due, run_worker, SecretString, Webhooks, IN_FLIGHT};

/// The population generator, shared with the tests. `pub`: the benchmark uses only part of
/// its API (the tests use the rest), which is no dead code.
#[path = "../tests/support/population.rs"]
pub mod population;

/// The machine and load every report starts with, shared by the benchmarks.
#[path = "common/machine.rs"]
mod machine;

use population::Population;

/// The business date the population is generated for (as in the sweep benchmark).
const BUSINESS_DATE: &str = "2026-04-01";

/// The import's `now` (only the business dates and `recorded_at_ms` depend on it; delays
/// are measured with the monotonic clock).
const IMPORT_NOW: &str = "2026-03-31T06:00:00Z";

/// The server used unless `--postgres-url` or `CONTRACTD_BENCH_POSTGRES_URL` names another.
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The prefix of the generated refs: `BENCH-00000042` is the 43rd contract.
const PREFIX: &str = "BENCH";

/// The signing secret of the bench endpoint (the Standard Webhooks specification's example).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A few zones with weights (the zone does not matter to deliveries).
const ZONES: [(&str, u32); 6] = [
    ("Europe/Berlin", 10),
    ("America/New_York", 9),
    ("Europe/London", 8),
    ("Asia/Tokyo", 5),
    ("Australia/Sydney", 4),
    ("America/Sao_Paulo", 4),
];

fn main() {
    if let Err(error) = run() {
        eprintln!("webhooks bench: {error:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse(std::env::args().skip(1))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(orchestrate(&args))
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Bulk,
    ServePoll,
    ServeWake,
}

impl Scenario {
    const ALL: [Scenario; 3] = [Scenario::Bulk, Scenario::ServePoll, Scenario::ServeWake];

    fn name(self) -> &'static str {
        match self {
            Scenario::Bulk => "bulk",
            Scenario::ServePoll => "poll",
            Scenario::ServeWake => "wake",
        }
    }

    fn title(self, args: &Args) -> String {
        match self {
            Scenario::Bulk => format!("bulk: {} events in one commit, deliver_due", args.events),
            Scenario::ServePoll => format!(
                "serve, poll: {} per commit every {} ms, run_worker not woken",
                args.batch, args.interval_ms
            ),
            Scenario::ServeWake => format!(
                "serve, wake: {} per commit every {} ms, run_worker woken",
                args.batch, args.interval_ms
            ),
        }
    }
}

#[derive(Debug, Clone)]
struct Args {
    events: usize,
    backends: Vec<Backend>,
    batch: usize,
    interval_ms: u64,
    timeout_s: u64,
    seed: u64,
    postgres_url: String,
}

fn usage() -> &'static str {
    "usage: cargo bench --bench webhooks -- [--events N] [--backend sqlite|postgres|both] \
     [--batch B] [--interval-ms I] [--timeout-s T] [--seed X] [--postgres-url URL]\n\
     \n\
     --events N        events (imported contracts) per scenario (default 10000)\n\
     --backend         sqlite, postgres or both (default both)\n\
     --batch B         events per commit in the serve scenarios (default 1000)\n\
     --interval-ms I   time between those commits (default 2000)\n\
     --timeout-s T     give a scenario up after T s of delivering (default 120)\n\
     --seed X          the population's seed (default 13)\n\
     --postgres-url    the server to create bench databases on (default \
     $CONTRACTD_BENCH_POSTGRES_URL or postgres://postgres@127.0.0.1:5432/postgres)"
}

impl Args {
    fn parse(raw: impl Iterator<Item = String>) -> anyhow::Result<Args> {
        let mut args = Args {
            events: 10_000,
            backends: vec![Backend::Sqlite, Backend::Postgres],
            batch: 1_000,
            interval_ms: 2_000,
            timeout_s: 120,
            seed: 13,
            postgres_url: std::env::var("CONTRACTD_BENCH_POSTGRES_URL")
                .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_string()),
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
                "--events" => args.events = number(&value()?)?,
                "--backend" => {
                    args.backends = match value()?.as_str() {
                        "sqlite" => vec![Backend::Sqlite],
                        "postgres" => vec![Backend::Postgres],
                        "both" => vec![Backend::Sqlite, Backend::Postgres],
                        other => bail!("unknown backend '{other}'\n{}", usage()),
                    }
                }
                "--batch" => args.batch = number(&value()?)?,
                "--interval-ms" => args.interval_ms = u64::try_from(number(&value()?)?)?,
                "--timeout-s" => args.timeout_s = u64::try_from(number(&value()?)?)?,
                "--seed" => args.seed = u64::try_from(number(&value()?)?)?,
                "--postgres-url" => args.postgres_url = value()?,
                "--help" | "-h" => {
                    println!("{}", usage());
                    std::process::exit(0);
                }
                other => bail!("unknown argument '{other}'\n{}", usage()),
            }
        }
        if args.events == 0 || args.batch == 0 || args.timeout_s == 0 {
            bail!("--events, --batch and --timeout-s must be positive");
        }
        Ok(args)
    }
}

/// `10000`, `10_000` or `10,000`.
fn number(text: &str) -> anyhow::Result<usize> {
    text.replace(['_', ','], "")
        .parse()
        .with_context(|| format!("'{text}' is not a number"))
}

fn instant(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("instant")
        .with_timezone(&Utc)
}

// ---------------------------------------------------------------------------------------------
// The receiver
// ---------------------------------------------------------------------------------------------

/// Every request's event id (-1 when its `webhook-id` is not one) and arrival instant.
#[derive(Default)]
struct Arrivals {
    log: Mutex<Vec<(i64, Instant)>>,
}

impl Arrivals {
    fn take(&self) -> Vec<(i64, Instant)> {
        std::mem::take(&mut *self.log.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Answer 200 at once. The body is read (a body left unread would close the connection).
async fn receive(
    State(arrivals): State<Arc<Arrivals>>,
    headers: HeaderMap,
    _body: Bytes,
) -> StatusCode {
    let arrived = Instant::now();
    let id = headers
        .get("webhook-id")
        .and_then(|value| value.to_str().ok())
        .and_then(EventId::parse)
        .map_or(-1, |id| id.0);
    arrivals
        .log
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((id, arrived));
    StatusCode::OK
}

/// Start the receiver on a free port of 127.0.0.1; it runs until the runtime ends.
async fn start_receiver(arrivals: Arc<Arrivals>) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the receiver")?;
    let address = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/hooks", post(receive))
        .with_state(arrivals);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            eprintln!("the receiver stopped: {error}");
        }
    });
    Ok(address)
}

// ---------------------------------------------------------------------------------------------
// Orchestration
// ---------------------------------------------------------------------------------------------

/// The generated contracts as JSON Lines, one string per contract.
fn generate(args: &Args) -> anyhow::Result<Vec<String>> {
    let date = NaiveDate::from_str(BUSINESS_DATE)?;
    Population::new(args.seed, date, &ZONES, PREFIX)
        .take(args.events)
        .map(|(_, record)| Ok(serde_json::to_string(&record)?))
        .collect()
}

/// The index of a generated contract from its ref.
fn contract_index(reference: &str) -> Option<usize> {
    reference
        .strip_prefix(PREFIX)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

async fn orchestrate(args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let lines = generate(args)?;
    eprintln!(
        "generated {} contracts in {:.1} s",
        lines.len(),
        started.elapsed().as_secs_f64()
    );
    let arrivals = Arc::new(Arrivals::default());
    let address = start_receiver(arrivals.clone()).await?;
    let dir = tempfile::Builder::new()
        .prefix("contractd-bench-webhooks-")
        .tempdir()
        .context("creating a temporary directory")?;
    let mut report = String::new();
    writeln!(report, "{}", machine::machine_line())?;
    writeln!(
        report,
        "load average at the start: {}",
        machine::load_average()
    )?;
    writeln!(
        report,
        "events: {} ({} per commit every {} ms in the serve scenarios), {IN_FLIGHT} attempts in \
         flight, default [webhooks] settings",
        args.events, args.batch, args.interval_ms
    )?;
    writeln!(
        report,
        "\n| backend | scenario | deliveries/s | wall s | first arrival ms | delay p50 ms | \
         p95 ms | max ms | duplicates |\n|---|---|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for backend in &args.backends {
        for scenario in Scenario::ALL {
            let label = format!("{} {}", backend.name(), scenario.name());
            eprintln!("[{label}] {} ...", scenario.title(args));
            let database = Database::create(*backend, dir.path(), scenario, args).await;
            let outcome = match database {
                Ok(database) => {
                    let outcome =
                        bench_on(&database, scenario, args, &lines, &arrivals, address).await;
                    database.drop(args).await;
                    outcome
                }
                Err(error) => Err(error),
            };
            arrivals.take();
            match outcome {
                Ok(outcome) => {
                    eprintln!("  {}", outcome.summary());
                    writeln!(report, "{}", outcome.row(*backend, scenario))?;
                    results.push(outcome.json(*backend, scenario));
                }
                Err(error) => {
                    eprintln!("[{label}] failed: {error:#}");
                    writeln!(
                        report,
                        "| {} | {} | FAILED: {error:#} |",
                        backend.name(),
                        scenario.name()
                    )?;
                    failures.push(label);
                }
            }
        }
    }
    writeln!(
        report,
        "\ndeliveries/s: events / wall time (bulk: from the first deliver_due pass's start to \
         its end, fan-out included; serve: from the first commit to the last arrival). Delay: \
         from the commit of an event's import to the first arrival of its webhook-id."
    )?;
    writeln!(
        report,
        "load average at the end: {}",
        machine::load_average()
    )?;
    println!("\n==== contractd webhooks benchmark ====\n{report}");
    println!(
        "JSON {}",
        json!({
            "events": args.events,
            "batch": args.batch,
            "interval_ms": args.interval_ms,
            "results": results,
        })
    );
    if !failures.is_empty() {
        bail!("failed: {}", failures.join(", "));
    }
    Ok(())
}

/// One scenario's database.
struct Database {
    backend: Backend,
    url: String,
    /// PostgreSQL: the database to drop.
    postgres_name: Option<String>,
}

impl Database {
    async fn create(
        backend: Backend,
        dir: &std::path::Path,
        scenario: Scenario,
        args: &Args,
    ) -> anyhow::Result<Database> {
        match backend {
            Backend::Sqlite => Ok(Database {
                backend,
                url: format!(
                    "sqlite://{}",
                    dir.join(format!("{}.db", scenario.name())).display()
                ),
                postgres_name: None,
            }),
            Backend::Postgres => {
                let name = format!(
                    "contractd_bench_{}_{}",
                    uuid::Uuid::new_v4().simple(),
                    scenario.name()
                );
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
                    .execute(format!("CREATE DATABASE {name}").as_str())
                    .await?;
                admin.close().await?;
                let mut url = url::Url::parse(&args.postgres_url).context("--postgres-url")?;
                url.set_path(&format!("/{name}"));
                Ok(Database {
                    backend,
                    url: url.to_string(),
                    postgres_name: Some(name),
                })
            }
        }
    }

    async fn drop(&self, args: &Args) {
        let Some(name) = &self.postgres_name else {
            return;
        };
        let Ok(mut admin) = sqlx::PgConnection::connect(&args.postgres_url).await else {
            eprintln!("cannot connect to drop the bench database {name}");
            return;
        };
        let dropped = admin
            .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
            .await;
        if let Err(error) = dropped {
            eprintln!("cannot drop {name}: {error}");
        }
        let _ = admin.close().await;
    }
}

async fn bench_on(
    database: &Database,
    scenario: Scenario,
    args: &Args,
    lines: &[String],
    arrivals: &Arc<Arrivals>,
    address: SocketAddr,
) -> anyhow::Result<Outcome> {
    let defaults = Settings::load(None, None).context("loading config/default.toml")?;
    match database.backend {
        Backend::Sqlite => {
            let store = SqliteStore::connect(&SqliteSettings {
                url: database.url.clone(),
                max_connections: defaults.database.max_connections,
                busy_timeout: Duration::from_millis(defaults.database.busy_timeout_ms),
            })
            .await?;
            scenario_on(&store, &defaults, scenario, args, lines, arrivals, address).await
        }
        Backend::Postgres => {
            let store = PostgresStore::connect(&PostgresSettings {
                url: database.url.clone(),
                // The benchmark connects straight to the server, which also takes the migrations.
                direct_url: Some(database.url.clone()),
                statements: defaults.database.statements(),
                max_connections: defaults.database.max_connections,
                connect_timeout: Duration::from_millis(defaults.database.connect_timeout_ms),
            })
            .await?;
            let outcome =
                scenario_on(&store, &defaults, scenario, args, lines, arrivals, address).await;
            store.close().await;
            outcome
        }
    }
}

/// Import `lines` in one transaction; the instant it returned (the commit) and its duration.
async fn import_lines<S: ContractStore>(
    store: &S,
    lines: &[String],
) -> anyhow::Result<(Instant, Duration)> {
    let mut text = lines.join("\n");
    text.push('\n');
    let started = Instant::now();
    let imported = import(
        store,
        Cursor::new(text.into_bytes()),
        &ParseDefaults {
            time_zone: chrono_tz::UTC,
        },
        instant(IMPORT_NOW),
        |_| {},
    )
    .await
    .map_err(|error| anyhow!("import failed: {error}"))?;
    let committed = Instant::now();
    if imported != lines.len() {
        bail!("imported {imported} of {} contracts", lines.len());
    }
    Ok((committed, committed - started))
}

async fn scenario_on<S: ContractStore + OutboxStore>(
    store: &S,
    defaults: &Settings,
    scenario: Scenario,
    args: &Args,
    lines: &[String],
    arrivals: &Arc<Arrivals>,
    address: SocketAddr,
) -> anyhow::Result<Outcome> {
    store.migrate().await?;
    let mut settings = defaults.webhooks.clone();
    settings.endpoints = vec![EndpointSettings {
        name: "bench".to_string(),
        url: format!("http://{address}/hooks"),
        secret: Some(SecretString::new(SECRET)),
        secret_env: None,
        events: None,
    }];
    let webhooks = Webhooks::new(&settings).context("setting the webhooks up")?;
    let owner = format!("bench-{}", std::process::id());
    let clock: SharedClock = Arc::new(SystemClock);
    // Register the endpoint before any event exists: it starts at the head of the feed.
    let registered = deliver_due(store, &webhooks, &owner, clock.as_ref(), &Shutdown::never())
        .await
        .context("registering the endpoint")?;
    if registered.fanned_out != 0 || registered.delivered != 0 {
        bail!("the fresh database already had events: {registered:?}");
    }
    arrivals.take();
    let deadline = Duration::from_secs(args.timeout_s);
    // Per batch: the instant its import committed.
    let mut commits: Vec<Instant> = Vec::new();
    let mut imports = Vec::new();
    let mut outcome = Outcome::default();
    match scenario {
        Scenario::Bulk => {
            let (committed, took) = import_lines(store, lines).await?;
            commits.push(committed);
            imports.push(took);
            let started = Instant::now();
            let mut delivered = 0u64;
            loop {
                let pass =
                    deliver_due(store, &webhooks, &owner, clock.as_ref(), &Shutdown::never())
                        .await
                        .context("a deliver_due pass")?;
                outcome.passes += 1;
                delivered += pass.delivered;
                outcome.retried += pass.retried;
                outcome.lease_lost += pass.lease_lost;
                outcome.failed += pass.failed.len() as u64;
                if delivered >= lines.len() as u64 {
                    break;
                }
                if started.elapsed() > deadline {
                    bail!(
                        "{delivered} of {} delivered after {deadline:?}",
                        lines.len()
                    );
                }
                if pass.delivered == 0 && pass.fanned_out == 0 {
                    // A retry is scheduled (the receiver only answers 200: should not happen).
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            outcome.wall = started.elapsed();
            outcome.first_from = started;
        }
        Scenario::ServePoll | Scenario::ServeWake => {
            let wake = Arc::new(Notify::new());
            let (trigger, shutdown) = shutdown::channel();
            let worker = tokio::spawn(run_worker(
                store.clone(),
                Arc::new(webhooks),
                owner.clone(),
                clock.clone(),
                wake.clone(),
                shutdown,
            ));
            let started = Instant::now();
            for (index, chunk) in lines.chunks(args.batch).enumerate() {
                let due = started + Duration::from_millis(args.interval_ms * index as u64);
                tokio::time::sleep_until(due.into()).await;
                let (committed, took) = import_lines(store, chunk).await?;
                if scenario == Scenario::ServeWake {
                    wake.notify_one();
                }
                commits.push(committed);
                imports.push(took);
            }
            // Until every event arrived (the receiver never answers anything but 200, so
            // every request is a new id unless an attempt was repeated).
            let waiting = Instant::now();
            loop {
                let unique = {
                    let log = arrivals.log.lock().unwrap_or_else(|p| p.into_inner());
                    let mut ids: Vec<i64> = log.iter().map(|(id, _)| *id).collect();
                    ids.sort_unstable();
                    ids.dedup();
                    ids.len()
                };
                if unique >= lines.len() {
                    break;
                }
                if waiting.elapsed() > deadline {
                    trigger.trigger();
                    let _ = worker.await;
                    bail!(
                        "{unique} of {} delivered {deadline:?} after the last commit",
                        lines.len()
                    );
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            trigger.trigger();
            worker.await.context("the webhook worker panicked")?;
            outcome.first_from = commits[0];
        }
    }
    outcome.imports = imports;
    let received = arrivals.take();
    // Event id -> the instant its import committed, from the feed (every event of these
    // databases is an `imported` event of a generated contract).
    let mut committed_at: HashMap<i64, Instant> = HashMap::with_capacity(lines.len());
    let mut after: Option<FeedPosition> = None;
    loop {
        let page = store.feed(after, &[], 1000).await?;
        let Some(last) = page.last() else {
            break;
        };
        after = Some(last.position);
        for event in &page {
            let index = contract_index(&event.contract_ref)
                .ok_or_else(|| anyhow!("unexpected ref {}", event.contract_ref))?;
            let batch = match scenario {
                Scenario::Bulk => 0,
                _ => index / args.batch,
            };
            let commit = commits
                .get(batch)
                .ok_or_else(|| anyhow!("{} is in no import", event.contract_ref))?;
            committed_at.insert(event.position.id, *commit);
        }
    }
    let mut first: HashMap<i64, Instant> = HashMap::with_capacity(received.len());
    for (id, arrived) in &received {
        if first.insert(*id, *arrived).is_some() {
            outcome.duplicates += 1;
        }
    }
    let mut delays = Vec::with_capacity(first.len());
    for (id, arrived) in &first {
        let commit = committed_at
            .get(id)
            .ok_or_else(|| anyhow!("evt_{id} arrived but is not in the feed"))?;
        delays.push(arrived.saturating_duration_since(*commit));
    }
    if delays.len() != lines.len() {
        bail!(
            "{} distinct events arrived of {}",
            delays.len(),
            lines.len()
        );
    }
    delays.sort_unstable();
    let earliest = first.values().min().copied();
    let latest = first.values().max().copied();
    if let (Some(earliest), Some(latest)) = (earliest, latest) {
        outcome.first_arrival = earliest.saturating_duration_since(outcome.first_from);
        if scenario != Scenario::Bulk {
            outcome.wall = latest.saturating_duration_since(outcome.first_from);
        }
    }
    outcome.delays = delays;
    outcome.events = lines.len();
    outcome.requests = received.len();
    Ok(outcome)
}

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Outcome {
    events: usize,
    requests: usize,
    /// Bulk: the passes' wall time; serve: first commit to last arrival.
    wall: Duration,
    /// Where `wall` and `first_arrival` start.
    first_from: Instant,
    /// From `first_from` to the first arrival.
    first_arrival: Duration,
    /// Commit-to-arrival delays, sorted.
    delays: Vec<Duration>,
    /// The imports' durations.
    imports: Vec<Duration>,
    passes: u64,
    retried: u64,
    lease_lost: u64,
    failed: u64,
    duplicates: u64,
}

impl Default for Outcome {
    fn default() -> Outcome {
        Outcome {
            events: 0,
            requests: 0,
            wall: Duration::ZERO,
            first_from: Instant::now(),
            first_arrival: Duration::ZERO,
            delays: Vec::new(),
            imports: Vec::new(),
            passes: 0,
            retried: 0,
            lease_lost: 0,
            failed: 0,
            duplicates: 0,
        }
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

impl Outcome {
    fn percentile(&self, fraction: f64) -> Duration {
        if self.delays.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((self.delays.len() as f64) * fraction).ceil() as usize;
        self.delays[rank.clamp(1, self.delays.len()) - 1]
    }

    fn rate(&self) -> f64 {
        self.events as f64 / self.wall.as_secs_f64()
    }

    fn import_ms(&self) -> (f64, f64) {
        let total: f64 = self.imports.iter().map(|d| ms(*d)).sum();
        let max = self.imports.iter().map(|d| ms(*d)).fold(0.0, f64::max);
        (total / self.imports.len().max(1) as f64, max)
    }

    fn summary(&self) -> String {
        let (import_mean, import_max) = self.import_ms();
        format!(
            "{} events, {} requests, {:.0} deliveries/s over {:.2} s; delay p50 {:.0} ms, p95 \
             {:.0} ms, max {:.0} ms; first arrival {:.0} ms; {} import(s) of {:.0} ms mean, {:.0} \
             ms max; passes {}, retries {}, lease lost {}, failed {}, duplicates {}",
            self.events,
            self.requests,
            self.rate(),
            self.wall.as_secs_f64(),
            ms(self.percentile(0.50)),
            ms(self.percentile(0.95)),
            ms(self.percentile(1.0)),
            ms(self.first_arrival),
            self.imports.len(),
            import_mean,
            import_max,
            self.passes,
            self.retried,
            self.lease_lost,
            self.failed,
            self.duplicates
        )
    }

    fn row(&self, backend: Backend, scenario: Scenario) -> String {
        format!(
            "| {} | {} | {:.0} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
            backend.name(),
            scenario.name(),
            self.rate(),
            self.wall.as_secs_f64(),
            ms(self.first_arrival),
            ms(self.percentile(0.50)),
            ms(self.percentile(0.95)),
            ms(self.percentile(1.0)),
            self.duplicates
        )
    }

    fn json(&self, backend: Backend, scenario: Scenario) -> Value {
        let (import_mean, import_max) = self.import_ms();
        json!({
            "backend": backend.name(),
            "scenario": scenario.name(),
            "events": self.events,
            "requests": self.requests,
            "wall_s": self.wall.as_secs_f64(),
            "deliveries_per_s": self.rate(),
            "first_arrival_ms": ms(self.first_arrival),
            "delay_ms": {
                "p50": ms(self.percentile(0.50)),
                "p95": ms(self.percentile(0.95)),
                "max": ms(self.percentile(1.0)),
            },
            "import_ms": { "mean": import_mean, "max": import_max, "count": self.imports.len() },
            "passes": self.passes,
            "retried": self.retried,
            "lease_lost": self.lease_lost,
            "failed": self.failed,
            "duplicates": self.duplicates,
        })
    }
}
