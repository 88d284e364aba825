//! The daily sweep: for each (zone, business date) that is due, the five jobs in order, each
//! claimed in the run ledger and worked through in bounded batches.
//!
//! **Architecture invariant:** [`run_job`] runs one job for one (zone, date) and is the only
//! way a job runs, so tests call it directly instead of sleeping until midnight. The
//! scheduler only decides *when* to call [`sweep_due`]; the rules in `lifecycle` decide *what*
//! changes.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use futures::StreamExt;

use crate::clock::{business_date, unix_ms, Clock};
use crate::contract::ContractStatus;
use crate::lifecycle::reminders::reschedule;
use crate::lifecycle::{apply_job, Job, RulePolicy};
use crate::shutdown::Shutdown;
use crate::storage::{
    BatchCursor, BatchProgress, ContractChange, ContractStore, LoadedContract, RunClaim, RunCounts,
    RunKey, RunStatus, StorageError,
};

/// How the sweep works; from configuration.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// Contracts per batch (one transaction each).
    pub batch_size: u32,
    /// How long a claim lasts without progress before another process may take it over.
    pub lease: Duration,
    /// What the rules may do.
    pub policy: RulePolicy,
    /// This process's name in the ledger.
    pub owner: String,
    /// Only these jobs (all when empty).
    pub jobs: Vec<Job>,
    /// Only these zones (all when empty).
    pub zones: Vec<String>,
    /// Run this business date in every zone instead of each zone's current local date.
    pub as_of: Option<NaiveDate>,
    /// Work out and report what would change, write nothing.
    pub dry_run: bool,
    /// How many zones are swept at once (each zone's jobs still run in order).
    pub parallel_zones: usize,
}

impl SweepOptions {
    /// Options for one process with the given batch size and lease, all jobs and zones.
    pub fn new(batch_size: u32, lease: Duration, policy: RulePolicy) -> SweepOptions {
        SweepOptions {
            batch_size,
            lease,
            policy,
            owner: process_owner(),
            jobs: Vec::new(),
            zones: Vec::new(),
            as_of: None,
            dry_run: false,
            parallel_zones: 1,
        }
    }
}

/// A name for this process in the ledger: host, pid and a random suffix.
pub fn process_owner() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}:{}:{}", std::process::id(), &suffix[..8])
}

/// How one job run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// Every due contract was examined.
    Succeeded,
    /// Stopped by an error; committed batches stay, the next tick retries.
    Failed(String),
    /// Another process holds the run (or finished it meanwhile).
    NotClaimed,
    /// Shutdown was requested: committed batches stay, the lease was released.
    Interrupted,
    /// Dry run: nothing written.
    DryRun,
}

impl JobOutcome {
    /// The word used in logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            JobOutcome::Succeeded => "succeeded",
            JobOutcome::Failed(_) => "failed",
            JobOutcome::NotClaimed => "not_claimed",
            JobOutcome::Interrupted => "interrupted",
            JobOutcome::DryRun => "dry_run",
        }
    }
}

/// What one job run did.
#[derive(Debug, Clone)]
pub struct JobReport {
    /// What ran.
    pub key: RunKey,
    /// The attempt's id (empty when not claimed).
    pub run_id: String,
    /// Counts of this attempt and the attempts before it.
    pub counts: RunCounts,
    /// Counts of the attempts before this one (from the claim): this attempt did `counts`
    /// minus these, which is what per-process metrics add up.
    pub prior_counts: RunCounts,
    /// Rows skipped because they break the rules (subset of `counts.skipped`).
    pub invalid_rows: i64,
    /// Wall time of this attempt.
    pub duration: Duration,
    /// How it ended.
    pub outcome: JobOutcome,
    /// Dry run: one line per contract that would change.
    pub planned: Vec<String>,
}

/// Everything one sweep did.
#[derive(Debug, Clone, Default)]
pub struct SweepReport {
    /// One report per job run attempted, in order.
    pub jobs: Vec<JobReport>,
}

impl SweepReport {
    /// Whether any job failed (exit code 1 for `contractd run`).
    pub fn any_failed(&self) -> bool {
        self.jobs
            .iter()
            .any(|job| matches!(job.outcome, JobOutcome::Failed(_)))
    }

    /// Whether shutdown interrupted a job.
    pub fn interrupted(&self) -> bool {
        self.jobs
            .iter()
            .any(|job| job.outcome == JobOutcome::Interrupted)
    }
}

/// The (zone, business date) pairs a sweep at `now` works on, with the zone parsed.
/// Zones that are not IANA names (written by another system) are logged and left out.
pub async fn due_zones<S: ContractStore>(
    store: &S,
    now: DateTime<Utc>,
    options: &SweepOptions,
) -> Result<Vec<(Tz, NaiveDate)>, StorageError> {
    let mut zones = Vec::new();
    for name in store.zones().await? {
        if !options.zones.is_empty() && !options.zones.contains(&name) {
            continue;
        }
        match name.parse::<Tz>() {
            Ok(zone) => {
                let date = options.as_of.unwrap_or_else(|| business_date(now, zone));
                zones.push((zone, date));
            }
            Err(_) => tracing::warn!(
                event = "zone.invalid",
                zone = %name,
                "contracts name a zone that is not an IANA time zone; they are not swept"
            ),
        }
    }
    Ok(zones)
}

/// The runs not yet succeeded among `zones` × jobs, in job order per zone.
pub async fn pending_runs<S: ContractStore>(
    store: &S,
    zones: &[(Tz, NaiveDate)],
    jobs: &[Job],
) -> Result<Vec<RunKey>, StorageError> {
    let Some(earliest) = zones.iter().map(|(_, date)| *date).min() else {
        return Ok(Vec::new());
    };
    let done: HashSet<RunKey> = store
        .succeeded_runs_since(earliest)
        .await?
        .into_iter()
        .collect();
    let jobs: &[Job] = if jobs.is_empty() { Job::ALL } else { jobs };
    let mut pending = Vec::new();
    for (zone, date) in zones {
        for job in Job::ALL.iter().filter(|job| jobs.contains(job)) {
            let key = RunKey {
                job: *job,
                zone: zone.name().to_string(),
                business_date: *date,
            };
            if !done.contains(&key) {
                pending.push(key);
            }
        }
    }
    Ok(pending)
}

/// One sweep of everything due at the clock's current instant: every pending run, in job
/// order per zone, `parallel_zones` zones at a time (as many as the store can write at once).
/// A failed job, or one held by another process, stops the later jobs of its zone (they wait
/// for a later sweep); shutdown stops each zone after its batch in flight. The report lists
/// the runs in the order one zone at a time would have run them.
pub async fn sweep_due<S: ContractStore>(
    store: &S,
    clock: &dyn Clock,
    options: &SweepOptions,
    shutdown: &Shutdown,
) -> Result<SweepReport, StorageError> {
    let zones = due_zones(store, clock.now(), options).await?;
    let runs = if options.dry_run {
        let jobs: &[Job] = if options.jobs.is_empty() {
            Job::ALL
        } else {
            &options.jobs
        };
        zones
            .iter()
            .flat_map(|(zone, date)| {
                jobs.iter().map(move |job| RunKey {
                    job: *job,
                    zone: zone.name().to_string(),
                    business_date: *date,
                })
            })
            .collect()
    } else {
        pending_runs(store, &zones, &options.jobs).await?
    };
    // Each zone's runs in job order, one task per zone, `parallel_zones` of them at a time.
    let mut by_zone: Vec<(String, Vec<(usize, RunKey)>)> = Vec::new();
    for (index, key) in runs.into_iter().enumerate() {
        match by_zone.iter_mut().find(|(zone, _)| *zone == key.zone) {
            Some((_, zone_runs)) => zone_runs.push((index, key)),
            None => by_zone.push((key.zone.clone(), vec![(index, key)])),
        }
    }
    let zone_runs = |runs: Vec<(usize, RunKey)>| async move {
        let mut reports = Vec::with_capacity(runs.len());
        for (index, key) in runs {
            if shutdown.is_requested() {
                break;
            }
            let job_report = run_job(store, clock, options, &key, shutdown).await;
            // A job that failed, was interrupted, or is held by another process (or a dead
            // one's lease) is not done: the zone's later jobs wait for it, or they would run
            // out of order.
            let stop = matches!(
                job_report.outcome,
                JobOutcome::Failed(_) | JobOutcome::Interrupted | JobOutcome::NotClaimed
            );
            reports.push((index, job_report));
            if stop {
                break;
            }
        }
        reports
    };
    let parallel = options.parallel_zones.min(store.parallel_writers()).max(1);
    let mut reports: Vec<(usize, JobReport)> =
        futures::stream::iter(by_zone.into_iter().map(|(_, runs)| zone_runs(runs)))
            .buffer_unordered(parallel)
            .flat_map(futures::stream::iter)
            .collect()
            .await;
    reports.sort_by_key(|(index, _)| *index);
    Ok(SweepReport {
        jobs: reports.into_iter().map(|(_, report)| report).collect(),
    })
}

/// Run one job for one (zone, business date): claim it in the ledger, work through the due
/// contracts in batches (each batch and its ledger progress in one transaction), and close
/// the run. Never panics and never returns an error: failures are in the report and the
/// ledger.
pub async fn run_job<S: ContractStore>(
    store: &S,
    clock: &dyn Clock,
    options: &SweepOptions,
    key: &RunKey,
    shutdown: &Shutdown,
) -> JobReport {
    let started = Instant::now();
    let mut report = JobReport {
        key: key.clone(),
        run_id: String::new(),
        counts: RunCounts::default(),
        prior_counts: RunCounts::default(),
        invalid_rows: 0,
        duration: Duration::ZERO,
        outcome: JobOutcome::DryRun,
        planned: Vec::new(),
    };
    if options.dry_run {
        if let Err(error) = dry_run(store, options, key, &mut report).await {
            report.outcome = JobOutcome::Failed(error.to_string());
        }
        report.duration = started.elapsed();
        return report;
    }
    let lease_ms = i64::try_from(options.lease.as_millis()).unwrap_or(i64::MAX / 4);
    let claim = match store
        .claim_run(key, &options.owner, unix_ms(clock.now()), lease_ms)
        .await
    {
        Ok(Some(claim)) => claim,
        Ok(None) => {
            report.outcome = JobOutcome::NotClaimed;
            report.duration = started.elapsed();
            return report;
        }
        Err(error) => {
            report.outcome = JobOutcome::Failed(error.to_string());
            report.duration = started.elapsed();
            log_finished(&report);
            return report;
        }
    };
    report.run_id = claim.run_id.clone();
    report.counts = claim.counts;
    report.prior_counts = claim.counts;
    let worked = work_through(
        store,
        clock,
        options,
        &claim,
        shutdown,
        lease_ms,
        &mut report,
    )
    .await;
    let now_ms = unix_ms(clock.now());
    let (status, error) = match &worked {
        Ok(RunEnd::Closed | RunEnd::Done) => (RunStatus::Succeeded, None),
        Ok(RunEnd::Stopped) => (RunStatus::Running, None),
        Err(error) => (RunStatus::Failed, Some(error.to_string())),
    };
    report.outcome = match (&worked, status) {
        (Err(error), _) => JobOutcome::Failed(error.to_string()),
        (Ok(_), RunStatus::Running) => JobOutcome::Interrupted,
        _ => JobOutcome::Succeeded,
    };
    // A run whose last batch closed its ledger row is finished already.
    let closed = matches!(worked, Ok(RunEnd::Closed));
    let finished = if closed {
        Ok(())
    } else {
        store
            .finish_run(&claim, status, report.counts, error.as_deref(), now_ms)
            .await
    };
    if let Err(finish_error) = finished {
        report.outcome = JobOutcome::Failed(format!(
            "{}closing the run failed: {finish_error}",
            error.map(|e| format!("{e}; ")).unwrap_or_default()
        ));
    }
    report.duration = started.elapsed();
    log_finished(&report);
    report
}

/// How working through a run's batches ended.
enum RunEnd {
    /// Nothing is left and the last batch closed the ledger row in its own transaction.
    Closed,
    /// Nothing is left; the ledger row is still to be closed (no batch, or a full last one).
    Done,
    /// Stopped for shutdown before the end.
    Stopped,
}

/// The batches of one claimed run.
async fn work_through<S: ContractStore>(
    store: &S,
    clock: &dyn Clock,
    options: &SweepOptions,
    claim: &RunClaim,
    shutdown: &Shutdown,
    lease_ms: i64,
    report: &mut JobReport,
) -> Result<RunEnd, StorageError> {
    let key = &claim.key;
    let mut cursor = claim.cursor;
    let read = |after: Option<BatchCursor>| {
        store.due_batch(
            key.job,
            &key.zone,
            key.business_date,
            after,
            options.batch_size,
        )
    };
    if shutdown.is_requested() {
        return Ok(RunEnd::Stopped);
    }
    let mut batch = read(cursor).await?;
    loop {
        if batch.is_empty() {
            return Ok(RunEnd::Done);
        }
        let full = batch.len() >= options.batch_size as usize;
        let plan = plan_batch(batch, key, &options.policy, cursor);
        cursor = plan.cursor;
        report.invalid_rows += plan.invalid_rows;
        let (counts, changes, from_statuses) = (plan.counts, plan.changes, plan.from_statuses);
        let cumulative = report.counts.plus(counts);
        let now_ms = unix_ms(clock.now());
        let commit = store.commit_batch(
            Some(BatchProgress {
                claim,
                cursor,
                counts: RunCounts {
                    changed: cumulative.changed + changes.len() as i64,
                    ..cumulative
                },
                lease_until_ms: now_ms.saturating_add(lease_ms),
                // A batch that is not full took every due contract left: the run ends with it.
                closes_run: !full,
            }),
            &changes,
            now_ms,
        );
        // The next batch is read while this one is written (on PostgreSQL; SQLite's store reads
        // it on its one writing connection, so there it waits for the commit): it starts
        // after this batch's cursor, and a transition never
        // leaves a contract due for the same job, so what this batch writes cannot move a
        // contract into it. Stopping for shutdown discards it unread by the rules.
        let (outcome, next) = if full && !shutdown.is_requested() {
            let (outcome, next) = tokio::join!(commit, read(cursor));
            (outcome?, Some(next))
        } else {
            (commit.await?, None)
        };
        // The ledger got `changed` assuming every change applied; correct the in-memory
        // count for conflicts (the next progress write or finish_run fixes the ledger).
        report.counts = RunCounts {
            changed: cumulative.changed + outcome.applied,
            skipped: cumulative.skipped + outcome.conflicts,
            ..cumulative
        };
        if outcome.conflicts > 0 {
            tracing::warn!(
                event = "contract.conflict",
                job = key.job.as_str(),
                zone = %key.zone,
                conflicts = outcome.conflicts,
                "contracts changed by another process meanwhile were left to it"
            );
        }
        for (change, from_status) in changes.iter().zip(&from_statuses) {
            for event in &change.events {
                tracing::info!(
                    event = "contract.transition",
                    contract_ref = %change.contract.reference,
                    kind = event.kind.as_str(),
                    from_status = from_status.as_str(),
                    to_status = change.contract.status.as_str(),
                    effective_on = %event.effective_on,
                    line_ref = event.line_ref.as_deref().unwrap_or(""),
                    job = key.job.as_str(),
                    run_id = %claim.run_id,
                );
            }
        }
        match next {
            Some(next) => batch = next?,
            None if full => return Ok(RunEnd::Stopped),
            None => return Ok(RunEnd::Closed),
        }
    }
}

/// What a job decided for one batch of due contracts, before anything is written.
struct BatchPlan {
    /// The keyset position after the batch.
    cursor: Option<BatchCursor>,
    /// Examined and skipped in this batch (`changed` is counted when the batch commits).
    counts: RunCounts,
    /// Rows skipped because they break the rules.
    invalid_rows: i64,
    /// The contracts that change, each guarded by the version it was read at.
    changes: Vec<ContractChange>,
    /// The status each changed contract had before (for the transition log).
    from_statuses: Vec<ContractStatus>,
    /// One line per skipped contract, for a dry run's listing.
    skipped: Vec<String>,
}

/// Apply a job's rule to each contract of a batch: invalid rows and refusals are logged and
/// skipped, everything else becomes a guarded change. Shared by real and dry runs, so a dry
/// run shows exactly what a run would do.
fn plan_batch(
    batch: Vec<LoadedContract>,
    key: &RunKey,
    policy: &RulePolicy,
    mut cursor: Option<BatchCursor>,
) -> BatchPlan {
    let mut plan = BatchPlan {
        cursor,
        counts: RunCounts::default(),
        invalid_rows: 0,
        changes: Vec::new(),
        from_statuses: Vec::new(),
        skipped: Vec::new(),
    };
    for loaded in batch {
        plan.counts.examined += 1;
        if let Some(due) = loaded.due {
            cursor = Some(BatchCursor { due, id: loaded.id });
        }
        let contract = match loaded.contract {
            Ok(contract) => contract,
            Err(invalid) => {
                plan.counts.skipped += 1;
                plan.invalid_rows += 1;
                let field = invalid
                    .errors
                    .first()
                    .map(|error| error.field.clone())
                    .unwrap_or_default();
                tracing::warn!(
                    event = "contract.invalid",
                    contract_id = loaded.id,
                    contract_ref = %loaded.reference,
                    field = %field,
                    reason = %invalid,
                    job = key.job.as_str(),
                    zone = %key.zone,
                    "skipped a contract row that breaks the rules"
                );
                plan.skipped
                    .push(format!("{}: skipped, {invalid}", loaded.reference));
                continue;
            }
        };
        match apply_job(key.job, &contract, key.business_date, policy) {
            Ok(None) => {}
            Ok(Some(mut transition)) => {
                // Every write schedules the contract's next reminder with the lead times in
                // force, so the stored due date of send_reminders follows its new state.
                reschedule(&mut transition.contract, &policy.reminder_lead_times);
                plan.from_statuses.push(contract.status);
                plan.changes.push(ContractChange::new(
                    loaded.id,
                    loaded.version,
                    &contract,
                    transition.contract,
                    transition.events,
                ));
            }
            Err(refusal) => {
                plan.counts.skipped += 1;
                tracing::warn!(
                    event = "contract.refused",
                    contract_ref = %loaded.reference,
                    field = %refusal.field,
                    reason = %refusal.message,
                    job = key.job.as_str(),
                    zone = %key.zone,
                    "a due rule could not be applied; the contract was skipped"
                );
                plan.skipped
                    .push(format!("{}: refused, {refusal}", loaded.reference));
            }
        }
    }
    plan.cursor = cursor;
    plan
}

/// Work out what a job would change, writing nothing.
async fn dry_run<S: ContractStore>(
    store: &S,
    options: &SweepOptions,
    key: &RunKey,
    report: &mut JobReport,
) -> Result<(), StorageError> {
    let mut cursor = None;
    loop {
        let batch = store
            .due_batch(
                key.job,
                &key.zone,
                key.business_date,
                cursor,
                options.batch_size,
            )
            .await?;
        let full = batch.len() >= options.batch_size as usize;
        let plan = plan_batch(batch, key, &options.policy, cursor);
        cursor = plan.cursor;
        report.counts = report.counts.plus(RunCounts {
            changed: plan.changes.len() as i64,
            ..plan.counts
        });
        report.invalid_rows += plan.invalid_rows;
        for (change, from_status) in plan.changes.iter().zip(&plan.from_statuses) {
            let kinds: Vec<&str> = change
                .events
                .iter()
                .map(|event| event.kind.as_str())
                .collect();
            report.planned.push(format!(
                "{}: {} -> {} ({})",
                change.contract.reference,
                from_status,
                change.contract.status,
                kinds.join(", ")
            ));
        }
        report.planned.extend(plan.skipped);
        if !full {
            return Ok(());
        }
    }
}

fn log_finished(report: &JobReport) {
    let duration_ms = u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX);
    if let JobOutcome::Failed(error) = &report.outcome {
        tracing::error!(
            event = "job.failed",
            job = report.key.job.as_str(),
            zone = %report.key.zone,
            business_date = %report.key.business_date,
            run_id = %report.run_id,
            error = %error,
        );
    }
    tracing::info!(
        event = "job.finished",
        job = report.key.job.as_str(),
        zone = %report.key.zone,
        business_date = %report.key.business_date,
        run_id = %report.run_id,
        examined = report.counts.examined,
        changed = report.counts.changed,
        skipped = report.counts.skipped,
        duration_ms,
        outcome = report.outcome.as_str(),
    );
}
