//! The sweep worker: one task that handles ticks, one at a time, so one process never runs
//! two sweeps at once.
//!
//! A tick must be cheap when nothing is due, because it comes every second. The worker keeps
//! in memory the zones that have contracts and, per zone, the business date whose five jobs
//! are known to have succeeded. A tick whose zones' local dates have not changed and are all
//! done touches no database at all. The zone list is read again when a business date
//! changes, every [`ZONE_REFRESH`], and after a failure; when a zone's date is not known to
//! be done, one query of the ledger tells whether another replica did it meanwhile, and only
//! what is left goes to [`sweep_due`].
//!
//! A database that goes away does not stop the daemon: the tick fails, logs
//! `database.unavailable` and waits with exponential backoff (1 s doubling to 30 s) before
//! trying again; work resumes when the database answers.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use chrono_tz::Tz;
use tokio::sync::{mpsc, Notify};

use super::metrics::{real_unix_seconds, Metrics};
use crate::clock::{business_date, SharedClock};
use crate::lifecycle::Job;
use crate::shutdown::Shutdown;
use crate::storage::{ContractStore, RunKey, StorageError};
use crate::sweep::{sweep_due, JobOutcome, SweepOptions};

/// How often the zone list is read even when no business date changed (new zones from an
/// import show up within this).
pub const ZONE_REFRESH: Duration = Duration::from_secs(60);

/// First wait after a failure; doubles with each further failure.
const BACKOFF_START: Duration = Duration::from_secs(1);

/// Longest wait between attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How long the small bookkeeping queries of a tick (zone list, ledger) may take before the
/// database counts as unavailable. The sweep itself has no such limit: a batch may be big.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a tick could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum TickError {
    /// The database refused or could not be reached.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The database answers but its schema is not migrated.
    #[error("the database schema is not migrated")]
    NotMigrated,
    /// The database did not answer in time.
    #[error("the database did not answer within {} s", .0.as_secs())]
    Timeout(Duration),
}

/// Exponential backoff after failures.
#[derive(Debug, Default, Clone)]
struct Backoff {
    /// Failures in a row.
    failures: u32,
    /// No attempt before this instant.
    until: Option<Instant>,
}

impl Backoff {
    /// Whether an attempt may be made now.
    fn ready(&self) -> bool {
        self.until.is_none_or(|until| Instant::now() >= until)
    }

    /// One more failure: how long to wait before the next attempt.
    fn fail(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(16)).unwrap_or(u32::MAX);
        let delay = BACKOFF_START.saturating_mul(factor).min(BACKOFF_MAX);
        self.failures = self.failures.saturating_add(1);
        self.until = Some(Instant::now() + delay);
        delay
    }

    /// A success: whether it ends a run of failures.
    fn reset(&mut self) -> bool {
        let was_failing = self.failures > 0;
        self.failures = 0;
        self.until = None;
        was_failing
    }
}

/// The worker's state between ticks.
pub struct Worker<S: ContractStore> {
    /// The database.
    store: S,
    /// The business clock (`serve --now` shifts it).
    clock: SharedClock,
    /// Batch size, lease, rule policy and this process's ledger name.
    options: SweepOptions,
    /// Asks a running sweep to stop after its batch in flight.
    shutdown: Shutdown,
    /// Job runs, transitions and database health are counted here.
    metrics: Arc<Metrics>,
    /// Set while a tick is handled, so the scheduler skips ticks meanwhile.
    busy: Arc<AtomicBool>,
    /// The database URL, only to scrub its password from error messages.
    database_url: String,
    /// Zones that have contracts, as of the last read.
    zones: Vec<Tz>,
    /// When the zone list was last read (`None`: read it on the next tick).
    zones_read_at: Option<Instant>,
    /// Each zone's business date at the last tick: a change is a new day.
    dates: HashMap<Tz, NaiveDate>,
    /// Per zone, the business date whose five jobs are known to have succeeded.
    done: HashMap<String, NaiveDate>,
    /// Zones whose last attempt had a failed job wait before the next one.
    zone_backoff: HashMap<String, Backoff>,
    /// Waiting after a database failure.
    database_backoff: Backoff,
    /// Zone names already reported as not IANA zones (reported once).
    invalid_zones: HashSet<String>,
    /// Told after a sweep changed contracts, so the webhook worker sends their events at once
    /// instead of at its next poll.
    events_recorded: Arc<Notify>,
}

impl<S: ContractStore> std::fmt::Debug for Worker<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("zones", &self.zones)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<S: ContractStore> Worker<S> {
    /// A worker with nothing known yet: the first tick reads the zone list. Each argument is
    /// a collaborator the daemon shares with other tasks, hence their number.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: S,
        clock: SharedClock,
        options: SweepOptions,
        shutdown: Shutdown,
        metrics: Arc<Metrics>,
        busy: Arc<AtomicBool>,
        database_url: String,
        events_recorded: Arc<Notify>,
    ) -> Worker<S> {
        Worker {
            store,
            clock,
            options,
            shutdown,
            metrics,
            busy,
            database_url,
            zones: Vec::new(),
            zones_read_at: None,
            dates: HashMap::new(),
            done: HashMap::new(),
            zone_backoff: HashMap::new(),
            database_backoff: Backoff::default(),
            invalid_zones: HashSet::new(),
            events_recorded,
        }
    }

    /// Handle ticks until shutdown is requested or the scheduler is gone.
    pub async fn run(mut self, mut wake: mpsc::Receiver<()>) {
        let mut shutdown = self.shutdown.clone();
        loop {
            tokio::select! {
                biased;
                () = shutdown.requested() => break,
                message = wake.recv() => {
                    if message.is_none() {
                        break;
                    }
                }
            }
            self.busy.store(true, Ordering::SeqCst);
            self.handle_tick().await;
            self.busy.store(false, Ordering::SeqCst);
        }
    }

    /// One tick, with the database backoff around it.
    async fn handle_tick(&mut self) {
        if !self.database_backoff.ready() {
            return;
        }
        match self.tick().await {
            Ok(queried) => {
                if self.database_backoff.reset() {
                    tracing::info!(
                        event = "database.recovered",
                        "the database answers again; work resumes"
                    );
                }
                if queried {
                    self.metrics.set_database_up(true);
                }
            }
            Err(error) => {
                self.metrics.set_database_up(false);
                self.zones_read_at = None;
                let delay = self.database_backoff.fail();
                tracing::warn!(
                    event = "database.unavailable",
                    error = %scrub(&error.to_string(), &self.database_url),
                    retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "the database cannot be used; retrying"
                );
            }
        }
    }

    /// Work out what became due and sweep it. `Ok(true)` when the database was queried.
    async fn tick(&mut self) -> Result<bool, TickError> {
        let now = self.clock.now();
        let mut queried = false;
        let stale = self
            .zones_read_at
            .is_none_or(|read_at| read_at.elapsed() >= ZONE_REFRESH);
        let new_day = self
            .zones
            .iter()
            .any(|zone| self.dates.get(zone) != Some(&business_date(now, *zone)));
        if stale || new_day {
            self.read_zones().await?;
            queried = true;
        }
        self.dates = self
            .zones
            .iter()
            .map(|zone| (*zone, business_date(now, *zone)))
            .collect();
        let pending: Vec<(Tz, NaiveDate)> = self
            .dates
            .iter()
            .filter(|(zone, date)| {
                self.done.get(zone.name()) != Some(*date)
                    && self
                        .zone_backoff
                        .get(zone.name())
                        .is_none_or(Backoff::ready)
            })
            .map(|(zone, date)| (*zone, *date))
            .collect();
        tracing::trace!(
            event = "tick",
            zones = self.zones.len(),
            pending = pending.len(),
            zones_read = queried,
        );
        let Some(earliest) = pending.iter().map(|(_, date)| *date).min() else {
            return Ok(queried);
        };

        // Another replica (or an earlier life of this process) may have done them already.
        let succeeded: HashSet<RunKey> = with_timeout(self.store.succeeded_runs_since(earliest))
            .await?
            .into_iter()
            .collect();
        let mut to_sweep = Vec::new();
        for (zone, date) in pending {
            if all_succeeded(zone, date, |key| succeeded.contains(key)) {
                self.mark_done(zone, date);
            } else {
                to_sweep.push((zone, date));
            }
        }
        if to_sweep.is_empty() {
            return Ok(true);
        }

        let mut options = self.options.clone();
        options.zones = to_sweep
            .iter()
            .map(|(zone, _)| zone.name().to_string())
            .collect();
        let report = sweep_due(&self.store, self.clock.as_ref(), &options, &self.shutdown).await?;
        let finished = real_unix_seconds();
        for job in &report.jobs {
            self.metrics.job_finished(job, finished);
        }
        if report.jobs.iter().any(|job| job.counts.changed > 0) {
            self.events_recorded.notify_one();
        }
        let mut any_failed = false;
        for (zone, date) in to_sweep {
            let name = zone.name();
            let failed = report
                .jobs
                .iter()
                .any(|job| job.key.zone == name && matches!(job.outcome, JobOutcome::Failed(_)));
            if failed {
                any_failed = true;
                self.zone_backoff
                    .entry(name.to_string())
                    .or_default()
                    .fail();
                continue;
            }
            self.zone_backoff.remove(name);
            let done = all_succeeded(zone, date, |key| {
                succeeded.contains(key)
                    || report
                        .jobs
                        .iter()
                        .any(|job| &job.key == key && job.outcome == JobOutcome::Succeeded)
            });
            if done {
                self.mark_done(zone, date);
            }
        }
        if any_failed {
            // A job failed: if the database is what failed, back off as a whole.
            match tokio::time::timeout(QUERY_TIMEOUT, self.store.readiness()).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => return Err(TickError::NotMigrated),
                Ok(Err(error)) => return Err(error.into()),
                Err(_) => return Err(TickError::Timeout(QUERY_TIMEOUT)),
            }
        }
        Ok(true)
    }

    /// Read the zone list; forget what is known about zones that are gone.
    async fn read_zones(&mut self) -> Result<(), TickError> {
        let names = with_timeout(self.store.zones()).await?;
        let mut zones = Vec::with_capacity(names.len());
        for name in names {
            match name.parse::<Tz>() {
                Ok(zone) => zones.push(zone),
                Err(_) => {
                    if self.invalid_zones.insert(name.clone()) {
                        tracing::warn!(
                            event = "zone.invalid",
                            zone = %name,
                            "contracts name a zone that is not an IANA time zone; they are not swept"
                        );
                    }
                }
            }
        }
        let known: HashSet<&str> = zones.iter().map(|zone| zone.name()).collect();
        self.done.retain(|name, _| known.contains(name.as_str()));
        self.zone_backoff
            .retain(|name, _| known.contains(name.as_str()));
        self.zones = zones;
        self.zones_read_at = Some(Instant::now());
        Ok(())
    }

    /// `zone`'s five jobs succeeded for `date`.
    fn mark_done(&mut self, zone: Tz, date: NaiveDate) {
        let seen = real_unix_seconds();
        for job in Job::ALL {
            self.metrics.job_seen_succeeded(*job, zone.name(), seen);
        }
        self.done.insert(zone.name().to_string(), date);
        tracing::debug!(
            event = "zone.done",
            zone = zone.name(),
            business_date = %date,
            "every job succeeded for this zone and business date"
        );
    }
}

/// Whether every job succeeded for (`zone`, `date`) according to `succeeded`.
fn all_succeeded(zone: Tz, date: NaiveDate, succeeded: impl Fn(&RunKey) -> bool) -> bool {
    Job::ALL.iter().all(|job| {
        succeeded(&RunKey {
            job: *job,
            zone: zone.name().to_string(),
            business_date: date,
        })
    })
}

/// A bookkeeping query with [`QUERY_TIMEOUT`].
async fn with_timeout<T>(
    query: impl std::future::Future<Output = Result<T, StorageError>>,
) -> Result<T, TickError> {
    match tokio::time::timeout(QUERY_TIMEOUT, query).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(TickError::Timeout(QUERY_TIMEOUT)),
    }
}

/// `text` with the password of `url` replaced, should a driver ever echo it.
pub fn scrub(text: &str, url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => match parsed.password() {
            Some(password) if !password.is_empty() => text.replace(password, "***"),
            _ => text.to_string(),
        },
        Err(_) => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_thirty_seconds_and_resets() {
        let mut backoff = Backoff::default();
        let delays: Vec<u64> = (0..8).map(|_| backoff.fail().as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 30, 30, 30]);
        assert!(!backoff.ready());
        assert!(backoff.reset());
        assert!(backoff.ready());
        assert!(!backoff.reset());
    }

    #[test]
    fn scrub_hides_the_password() {
        assert_eq!(
            scrub("failed for s3cret@db", "postgres://u:s3cret@db/x"),
            "failed for ***@db"
        );
        assert_eq!(scrub("no password", "sqlite://x.db"), "no password");
    }
}
