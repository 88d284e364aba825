//! The tick: a tokio-cron-scheduler job on the configured cron expression, in UTC.
//!
//! The cron job only ticks. Each tick records a heartbeat (for `/healthz` and the systemd
//! watchdog), counts itself, and hands the work to the single sweep worker
//! ([`super::worker`]) unless that worker is still busy with an earlier tick, in which case
//! the tick is skipped: there is never more than one sweep at a time in one process.
//!
//! **Never create the job with a time zone:** tokio-cron-scheduler turns a zone into the UTC
//! offset it has at creation, so after a DST change such a job runs an hour off. Business
//! dates are worked out per zone on every tick instead (docs/rules.md §8).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};
use uuid::Uuid;

use super::metrics::Metrics;

/// How late a tick may be before the tick loop counts as dead. tokio-cron-scheduler looks
/// at its jobs every 500 ms; the rest is room for a loaded machine.
const TICK_GRACE: Duration = Duration::from_secs(5);

/// Proof that the tick loop is alive: when the last tick came and by when the next one is
/// due. Read by `/healthz` and the watchdog task.
#[derive(Debug)]
pub struct Heartbeat {
    /// Real Unix milliseconds of the latest tick (0 before the first).
    last_tick_ms: AtomicI64,
    /// Real Unix milliseconds by which the next tick must have come: its scheduled instant
    /// plus [`TICK_GRACE`]. Past it, the scheduler or the tick handler is stuck.
    next_due_ms: AtomicI64,
    /// The tick job whose schedule counts: after a reload, a late answer about the replaced
    /// job must not overwrite the new job's next tick.
    current_job: Mutex<Option<Uuid>>,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            last_tick_ms: AtomicI64::new(0),
            // Until the schedule is known, allow one grace period from start.
            next_due_ms: AtomicI64::new(real_now_ms().saturating_add(grace_ms())),
            current_job: Mutex::new(None),
        }
    }
}

impl Heartbeat {
    /// A heartbeat that expects a first tick within the grace period.
    pub fn new() -> Heartbeat {
        Heartbeat::default()
    }

    /// A tick happened now.
    fn beat(&self) {
        self.last_tick_ms.store(real_now_ms(), Ordering::SeqCst);
    }

    /// From now on only `job`'s schedule counts.
    fn follow(&self, job: Uuid) {
        *self
            .current_job
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(job);
    }

    /// Job `job` ticks next at `next` (ignored unless it is the job followed).
    fn expect(&self, job: Uuid, next: DateTime<Utc>) {
        let current = self
            .current_job
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *current == Some(job) {
            let due = next.timestamp_millis().saturating_add(grace_ms());
            self.next_due_ms.store(due, Ordering::SeqCst);
        }
    }

    /// Whether the tick loop keeps its schedule: the next tick is not overdue.
    pub fn is_alive(&self) -> bool {
        real_now_ms() <= self.next_due_ms.load(Ordering::SeqCst)
    }

    /// Real Unix milliseconds of the latest tick, if there was one.
    pub fn last_tick_ms(&self) -> Option<i64> {
        match self.last_tick_ms.load(Ordering::SeqCst) {
            0 => None,
            at => Some(at),
        }
    }
}

fn grace_ms() -> i64 {
    i64::try_from(TICK_GRACE.as_millis()).unwrap_or(i64::MAX)
}

/// Milliseconds since the Unix epoch of the real clock. Liveness is about real time, whatever
/// `serve --now` did to the business clock.
pub fn real_now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// What a tick does; cloned into the cron job (and into its replacement on reload).
#[derive(Debug, Clone)]
pub struct Ticker {
    /// Liveness record.
    heartbeat: Arc<Heartbeat>,
    /// Counts ticks.
    metrics: Arc<Metrics>,
    /// Set by the worker while it handles a tick: a tick meanwhile is skipped.
    busy: Arc<AtomicBool>,
    /// Wakes the worker.
    wake: mpsc::Sender<()>,
}

impl Ticker {
    /// A ticker that wakes the worker through `wake` unless `busy` is set.
    pub fn new(
        heartbeat: Arc<Heartbeat>,
        metrics: Arc<Metrics>,
        busy: Arc<AtomicBool>,
        wake: mpsc::Sender<()>,
    ) -> Ticker {
        Ticker {
            heartbeat,
            metrics,
            busy,
            wake,
        }
    }

    /// One tick of job `id`: heartbeat, count, wake the worker or skip; then learn when the
    /// next tick is due.
    fn fire(&self, id: Uuid, scheduler: JobScheduler) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        self.heartbeat.beat();
        self.metrics.tick();
        if self.busy.load(Ordering::SeqCst) {
            tracing::debug!(
                event = "tick.skipped",
                "a sweep is still running; this tick is skipped"
            );
        } else if let Err(mpsc::error::TrySendError::Full(())) = self.wake.try_send(()) {
            tracing::debug!(
                event = "tick.skipped",
                "the previous tick has not been picked up yet; this tick is skipped"
            );
        }
        let heartbeat = Arc::clone(&self.heartbeat);
        Box::pin(async move { learn_next_tick(&heartbeat, scheduler, id).await })
    }
}

/// Ask the scheduler when job `id` ticks next and record it in the heartbeat. The scheduler
/// updates its record of the next tick concurrently with running the job, so wait a little
/// until it has moved past now.
async fn learn_next_tick(heartbeat: &Heartbeat, mut scheduler: JobScheduler, id: Uuid) {
    for _ in 0..40 {
        match scheduler.next_tick_for_job(id).await {
            Ok(Some(next)) if next > Utc::now() => {
                heartbeat.expect(id, next);
                return;
            }
            // Removed (replaced on reload) or finished: nothing more to expect from it.
            Ok(None) => return,
            Ok(Some(_)) | Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The running cron scheduler with its one tick job.
pub struct TickSchedule {
    /// tokio-cron-scheduler.
    scheduler: JobScheduler,
    /// The tick job now in the scheduler.
    job: Uuid,
    /// Its cron expression (to tell whether a reload changes it).
    expression: String,
    /// What each tick does.
    ticker: Ticker,
    /// Records when the next tick is due.
    heartbeat: Arc<Heartbeat>,
}

impl std::fmt::Debug for TickSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TickSchedule")
            .field("job", &self.job)
            .field("expression", &self.expression)
            .finish()
    }
}

/// A tick job on `expression`, in UTC (see the module docs: never with a zone).
fn tick_job(expression: &str, ticker: &Ticker) -> Result<Job, JobSchedulerError> {
    let ticker = ticker.clone();
    Job::new_async(expression, move |id, scheduler| ticker.fire(id, scheduler))
}

impl TickSchedule {
    /// Start ticking on `expression`.
    pub async fn start(
        expression: &str,
        ticker: Ticker,
        heartbeat: Arc<Heartbeat>,
    ) -> Result<TickSchedule, JobSchedulerError> {
        let scheduler = JobScheduler::new().await?;
        let job = tick_job(expression, &ticker)?;
        heartbeat.follow(job.guid());
        let job = scheduler.add(job).await?;
        scheduler.start().await?;
        let schedule = TickSchedule {
            scheduler,
            job,
            expression: expression.to_string(),
            ticker,
            heartbeat,
        };
        schedule.learn_next_tick().await;
        Ok(schedule)
    }

    /// Record when the current job ticks next.
    async fn learn_next_tick(&self) {
        let mut scheduler = self.scheduler.clone();
        if let Ok(Some(next)) = scheduler.next_tick_for_job(self.job).await {
            self.heartbeat.expect(self.job, next);
        }
    }

    /// The cron expression ticking now.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// Tick on `expression` from now on. The new job is added before the old one is removed,
    /// so no tick is lost; at worst one tick comes twice (the worker skips or absorbs it).
    pub async fn replace(&mut self, expression: &str) -> Result<(), JobSchedulerError> {
        if expression == self.expression {
            return Ok(());
        }
        let job = tick_job(expression, &self.ticker)?;
        self.heartbeat.follow(job.guid());
        let job = match self.scheduler.add(job).await {
            Ok(job) => job,
            Err(error) => {
                self.heartbeat.follow(self.job);
                return Err(error);
            }
        };
        let old = std::mem::replace(&mut self.job, job);
        self.expression = expression.to_string();
        self.learn_next_tick().await;
        self.scheduler.remove(&old).await
    }

    /// Stop ticking.
    pub async fn stop(&mut self) {
        if let Err(error) = self.scheduler.shutdown().await {
            tracing::warn!(
                event = "scheduler.stop_failed",
                error = %error,
                "the tick scheduler did not stop cleanly"
            );
        }
    }
}
