//! The daemon (docs/rules.md §8 and §9): ticks, sweeps what became due, health and metrics.
//!
//! Pieces, each in its own module:
//! - [`scheduler`]: tokio-cron-scheduler ticks in UTC on `scheduler.tick` and keeps a
//!   heartbeat;
//! - [`worker`]: one task that handles ticks one at a time and calls
//!   [`crate::sweep::sweep_due`] for what became due, cheaply when nothing did;
//! - [`http`]: `/healthz`, `/readyz`, `/metrics`;
//! - [`metrics`]: the Prometheus metrics;
//! - [`signals`]: SIGTERM/SIGINT stop, SIGHUP reloads;
//! - [`notify`]: systemd READY/RELOADING/STOPPING and the watchdog.
//!
//! Start: the caller has connected and (with `database.migrate_on_start`) migrated; serve binds
//! the listener, starts the worker and the scheduler, then sends READY=1 and logs
//! `daemon.started`. Stop: on SIGTERM or SIGINT it logs `daemon.stopping`, sends
//! STOPPING=1, stops ticking, lets the batch in flight commit (the sweep releases its lease)
//! and returns within [`STOP_DEADLINE`].

pub mod http;
pub mod metrics;
pub mod notify;
pub mod scheduler;
pub mod signals;
pub mod worker;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::clock::SharedClock;
use crate::config::{ConfigError, ConfigSource, Settings};
use crate::shutdown::{self, Shutdown};
use crate::storage::{redact_url, ContractStore, OutboxStore};
use crate::sweep::SweepOptions;
use crate::telemetry::LogReloader;
use crate::webhooks::{AttemptObserver, AttemptOutcome, SetupError, Webhooks};

use self::metrics::Metrics;
use self::scheduler::{Heartbeat, TickSchedule, Ticker};
use self::signals::{Request, SignalListener};
use self::worker::Worker;

/// How long after SIGTERM the daemon waits for the batch in flight before it exits anyway
/// (it must be gone within 10 s; systemd's `TimeoutStopSec=30` is the outer margin).
pub const STOP_DEADLINE: Duration = Duration::from_secs(8);

/// How often the database is probed for `contractd_database_up`.
const PROBE_EVERY: Duration = Duration::from_secs(5);

/// How often, at most, contracts are counted for `contractd_contracts`.
const COUNT_EVERY: Duration = Duration::from_secs(30);

/// Why the daemon could not start, or stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// SIGTERM, SIGINT and SIGHUP handlers could not be installed.
    #[error("installing the signal handlers")]
    Signals(#[source] std::io::Error),
    /// `server.listen` is not an address.
    #[error("reading server.listen")]
    Listen(#[source] ConfigError),
    /// The address is taken or not ours to bind.
    #[error("cannot listen on {address}")]
    Bind {
        /// The address from `server.listen`.
        address: SocketAddr,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
    /// The tick schedule could not be started.
    #[error("starting the tick scheduler")]
    Scheduler(#[source] tokio_cron_scheduler::JobSchedulerError),
    /// The webhook endpoints could not be prepared.
    #[error("preparing the webhooks")]
    Webhooks(#[source] SetupError),
    /// The health and metrics server stopped; without it the daemon cannot be operated.
    #[error("the HTTP server stopped: {0}")]
    HttpStopped(String),
}

/// Run the daemon until SIGTERM or SIGINT. `settings` is the configuration in force;
/// `source` is where it came from, read again on SIGHUP (log level and tick schedule apply
/// live, the rest after a restart); `log` applies a reloaded log level.
pub async fn serve<S: ContractStore + OutboxStore>(
    store: S,
    settings: Settings,
    source: ConfigSource,
    log: LogReloader,
    clock: SharedClock,
) -> Result<(), ServeError> {
    // Handlers first: a SIGTERM while starting must stop us cleanly, not kill us.
    let mut signals = SignalListener::install().map_err(ServeError::Signals)?;
    let address = settings.listen_address().map_err(ServeError::Listen)?;
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| ServeError::Bind { address, source })?;
    let listening: SocketAddr = listener.local_addr().unwrap_or(address);

    let metrics = Arc::new(Metrics::new());
    let webhooks = if settings.webhooks.endpoints.is_empty() {
        None
    } else {
        let observer: Arc<dyn AttemptObserver> = Arc::new(AttemptMetrics(Arc::clone(&metrics)));
        let webhooks = Webhooks::new(&settings.webhooks)
            .map_err(ServeError::Webhooks)?
            .with_observer(observer);
        metrics.webhook_endpoints(&webhooks.endpoint_names());
        Some(Arc::new(webhooks))
    };
    let events_recorded = Arc::new(Notify::new());
    let heartbeat = Arc::new(Heartbeat::new());
    let (trigger, shutdown) = shutdown::channel();
    let busy = Arc::new(AtomicBool::new(false));
    let (wake_sender, wake_receiver) = mpsc::channel(1);

    let mut options = SweepOptions::new(
        settings.sweep.batch_size,
        settings.lease(),
        settings.rule_policy(),
    );
    options.parallel_zones = settings.sweep.parallel_zones;
    let owner = options.owner.clone();
    let worker = Worker::new(
        store.clone(),
        Arc::clone(&clock),
        options,
        shutdown.clone(),
        Arc::clone(&metrics),
        Arc::clone(&busy),
        settings.database.url.clone(),
        Arc::clone(&events_recorded),
    );
    let worker = tokio::spawn(worker.run(wake_receiver));
    // Webhooks go out on a task of their own: a slow endpoint never delays a sweep. Their
    // retries, leases and `webhook-timestamp` follow the real clock, also under `--now`:
    // receivers compare the timestamp with their own clock, and other processes (`deliver`)
    // compare leases with theirs.
    let deliveries = webhooks.clone().map(|webhooks| {
        tokio::spawn(crate::webhooks::run_worker(
            store.clone(),
            webhooks,
            owner.clone(),
            Arc::new(crate::clock::SystemClock),
            Arc::clone(&events_recorded),
            shutdown.clone(),
        ))
    });
    let monitor = tokio::spawn(monitor(
        store.clone(),
        Arc::clone(&metrics),
        webhooks.as_ref().map(|webhooks| webhooks.endpoint_names()),
        shutdown.clone(),
    ));
    let router = http::router(http::HttpState {
        store,
        heartbeat: Arc::clone(&heartbeat),
        metrics: Arc::clone(&metrics),
    });
    let server = tokio::spawn(http::serve(listener, router, shutdown.clone()));

    let ticker = Ticker::new(
        Arc::clone(&heartbeat),
        Arc::clone(&metrics),
        busy,
        wake_sender,
    );
    let mut schedule =
        match TickSchedule::start(&settings.scheduler.tick, ticker, Arc::clone(&heartbeat)).await {
            Ok(schedule) => schedule,
            Err(error) => {
                trigger.trigger();
                signals.close();
                return Err(ServeError::Scheduler(error));
            }
        };

    let notifier = notify::Notifier::start();
    notifier.ready();
    tracing::info!(
        event = "daemon.started",
        version = env!("CARGO_PKG_VERSION"),
        listen = %listening,
        database = %redact_url(&settings.database.url),
        tick = %settings.scheduler.tick,
        owner = %owner,
        "contractd is serving"
    );
    let watchdog = notify::watchdog_interval().map(|interval| {
        tokio::spawn(notify::watchdog(
            interval,
            Arc::clone(&heartbeat),
            notifier.clone(),
            shutdown.clone(),
        ))
    });

    let mut reload = Reload {
        settings,
        source,
        log,
    };
    let mut server = Some(server);
    let mut failure = None;
    let signal = loop {
        tokio::select! {
            request = signals.next() => match request {
                Some(Request::Stop(name)) => break name,
                Some(Request::Reload) => reload.apply(&mut schedule, &notifier).await,
                None => break "none",
            },
            outcome = wait_server(&mut server) => {
                // The listener died: without health endpoints the daemon is not operable.
                tracing::error!(
                    event = "http.failed",
                    error = %outcome,
                    "the HTTP server stopped; shutting down"
                );
                failure = Some(ServeError::HttpStopped(outcome));
                break "none";
            }
        }
    };

    tracing::info!(
        event = "daemon.stopping",
        signal,
        "stopping: no new work; the batch in flight is committed"
    );
    let deadline = tokio::time::Instant::now() + STOP_DEADLINE;
    trigger.trigger();
    notifier.stopping().await;
    schedule.stop().await;
    let drained = tokio::select! {
        joined = tokio::time::timeout_at(deadline, worker) => joined.is_ok(),
        request = signals.next() => {
            tracing::warn!(
                event = "daemon.stop_forced",
                signal = match request { Some(Request::Stop(name)) => name, _ => "none" },
                "a second signal: not waiting for the batch in flight"
            );
            false
        }
    };
    if !drained {
        tracing::warn!(
            event = "daemon.stop_timeout",
            "the batch in flight did not finish in time; it is rolled back"
        );
    }
    signals.close();
    if let Some(server) = server {
        finish(server, deadline).await;
    }
    if let Some(deliveries) = deliveries {
        finish(deliveries, deadline).await;
    }
    finish(monitor, deadline).await;
    if let Some(watchdog) = watchdog {
        finish(watchdog, deadline).await;
    }
    tracing::info!(event = "daemon.stopped", "contractd stopped");
    match failure {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Wait for the HTTP server task to end (forever when it was already taken).
async fn wait_server(server: &mut Option<JoinHandle<std::io::Result<()>>>) -> String {
    let Some(handle) = server.as_mut() else {
        return std::future::pending().await;
    };
    let outcome = match handle.await {
        Ok(Ok(())) => "the server ended".to_string(),
        Ok(Err(error)) => error.to_string(),
        Err(error) => error.to_string(),
    };
    *server = None;
    outcome
}

/// Wait for a task until `deadline`, then abandon it.
async fn finish<T>(handle: JoinHandle<T>, deadline: tokio::time::Instant) {
    let abort = handle.abort_handle();
    if tokio::time::timeout_at(deadline, handle).await.is_err() {
        abort.abort();
    }
}

/// Keep `contractd_database_up`, `contractd_contracts` and the webhook backlog of
/// `endpoints` current, away from the tick path.
async fn monitor<S: ContractStore + OutboxStore>(
    store: S,
    metrics: Arc<Metrics>,
    endpoints: Option<Vec<String>>,
    mut shutdown: Shutdown,
) {
    let mut counted_at: Option<tokio::time::Instant> = None;
    loop {
        let up = http::probe_database(&store, &metrics).await.is_ok();
        let due = counted_at.is_none_or(|at| at.elapsed() >= COUNT_EVERY);
        if up && due {
            match tokio::time::timeout(http::READINESS_TIMEOUT * 4, store.count_by_status()).await {
                Ok(Ok(counts)) => {
                    metrics.set_contracts(&counts);
                    counted_at = Some(tokio::time::Instant::now());
                }
                Ok(Err(_)) | Err(_) => metrics.set_database_up(false),
            }
        }
        if let (true, Some(endpoints)) = (up, &endpoints) {
            let read = async {
                Ok::<_, crate::storage::StorageError>((
                    store.backlog().await?,
                    store.endpoint_states().await?,
                ))
            };
            match tokio::time::timeout(http::READINESS_TIMEOUT * 4, read).await {
                Ok(Ok((backlog, states))) => {
                    let now_ms = crate::clock::unix_ms(chrono::Utc::now());
                    for endpoint in endpoints {
                        let of = backlog.iter().find(|entry| &entry.endpoint == endpoint);
                        let disabled = states.iter().any(|state| {
                            &state.endpoint == endpoint && state.disabled_at_ms.is_some()
                        });
                        let oldest_age = of
                            .and_then(|entry| entry.oldest_pending_recorded_ms)
                            .map(|recorded| (now_ms - recorded).max(0) as f64 / 1000.0)
                            .unwrap_or(0.0);
                        metrics.set_webhook_backlog(
                            endpoint,
                            of.map_or(0, |entry| entry.pending),
                            oldest_age,
                            of.map_or(0, |entry| entry.failed),
                            disabled,
                        );
                    }
                }
                // The probe above says whether the database is up; a backlog that could not
                // be read leaves the webhook gauges as they were until the next round.
                Ok(Err(error)) => tracing::debug!(
                    event = "webhook.backlog_unread",
                    error = %error,
                    "the webhook backlog could not be read"
                ),
                Err(_) => tracing::debug!(
                    event = "webhook.backlog_unread",
                    "the webhook backlog was not read in time"
                ),
            }
        }
        tokio::select! {
            () = shutdown.requested() => return,
            () = tokio::time::sleep(PROBE_EVERY) => {}
        }
    }
}

/// Counts every webhook attempt in the metrics.
struct AttemptMetrics(Arc<Metrics>);

impl AttemptObserver for AttemptMetrics {
    fn on_attempt(&self, endpoint: &str, outcome: &AttemptOutcome) {
        self.0.webhook_attempt(endpoint, outcome.kind.as_str());
    }
}

/// What a SIGHUP needs: where the configuration came from and what can change live.
struct Reload {
    /// The configuration in force.
    settings: Settings,
    /// Where it came from, read again.
    source: ConfigSource,
    /// Applies a new log level.
    log: LogReloader,
}

impl Reload {
    /// Read the configuration again and apply the log level and the tick schedule. An
    /// invalid configuration changes nothing.
    async fn apply(&mut self, schedule: &mut TickSchedule, notifier: &notify::Notifier) {
        notifier.reloading();
        self.load_and_apply(schedule).await;
        notifier.ready();
    }

    async fn load_and_apply(&mut self, schedule: &mut TickSchedule) {
        let new = match self.source.load() {
            Ok(new) => new,
            Err(error) => {
                tracing::error!(
                    event = "daemon.reload_failed",
                    error = %error,
                    "the configuration was not reloaded; the previous one stays in force"
                );
                return;
            }
        };
        let old_tick = schedule.expression().to_string();
        if let Err(error) = schedule.replace(&new.scheduler.tick).await {
            tracing::error!(
                event = "daemon.reload_failed",
                error = %error,
                tick = %new.scheduler.tick,
                "the new tick schedule could not be installed; nothing was changed"
            );
            return;
        }
        // RUST_LOG wins over the configured level, at start and on reload.
        let level = match std::env::var("RUST_LOG")
            .ok()
            .filter(|directive| tracing_subscriber::EnvFilter::try_new(directive).is_ok())
        {
            Some(directive) => directive,
            None => new.log.level.clone(),
        };
        if let Err(error) = self.log.set_level(&level) {
            tracing::error!(
                event = "daemon.reload_failed",
                error = %error,
                log_level = %level,
                "the new log level could not be applied; the tick schedule was"
            );
        }
        let restart = restart_only_changes(&self.settings, &new);
        if !restart.is_empty() {
            tracing::warn!(
                event = "daemon.restart_required",
                keys = %restart.join(","),
                "these settings changed but apply only after a restart"
            );
        }
        tracing::info!(
            event = "daemon.reloaded",
            log_level = %level,
            tick = %new.scheduler.tick,
            tick_changed = old_tick != new.scheduler.tick,
            "configuration reloaded"
        );
        // What applies live now comes from the new file; the rest stays as started.
        self.settings.log.level = new.log.level;
        self.settings.scheduler.tick = new.scheduler.tick;
    }
}

/// The keys that differ between `old` and `new` and only a restart applies.
fn restart_only_changes(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut check = |key: &'static str, differs: bool| {
        if differs {
            keys.push(key);
        }
    };
    check("database.url", old.database.url != new.database.url);
    check(
        "database.direct_url",
        old.database.direct_url != new.database.direct_url,
    );
    check(
        "database.transaction_pooler",
        old.database.transaction_pooler != new.database.transaction_pooler,
    );
    check(
        "database.max_connections",
        old.database.max_connections != new.database.max_connections,
    );
    check(
        "database.busy_timeout_ms",
        old.database.busy_timeout_ms != new.database.busy_timeout_ms,
    );
    check(
        "database.connect_timeout_ms",
        old.database.connect_timeout_ms != new.database.connect_timeout_ms,
    );
    check(
        "sweep.batch_size",
        old.sweep.batch_size != new.sweep.batch_size,
    );
    check(
        "sweep.parallel_zones",
        old.sweep.parallel_zones != new.sweep.parallel_zones,
    );
    check(
        "sweep.lease_seconds",
        old.sweep.lease_seconds != new.sweep.lease_seconds,
    );
    check("server.listen", old.server.listen != new.server.listen);
    check("log.format", old.log.format != new.log.format);
    check(
        "billing.allow_end_before_billed_to",
        old.billing.allow_end_before_billed_to != new.billing.allow_end_before_billed_to,
    );
    check(
        "reminders.lead_times",
        old.reminders.lead_times().ok() != new.reminders.lead_times().ok(),
    );
    // Endpoints, secrets and the retry schedule are read once by the webhook worker.
    check("webhooks", old.webhooks != new.webhooks);
    keys
}
