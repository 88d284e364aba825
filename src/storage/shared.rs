//! What both stores do alike, apart from SQL: batch sizes, the ledger's timing rules, the
//! migrator, and the bookkeeping around a batch of changes and events.

use std::borrow::Cow;
use std::collections::HashMap;

use chrono::NaiveDate;
use sqlx::migrate::{Migration, MigrationType, Migrator};

use super::rows::{ClaimedRow, FeedEntry};
use super::{
    Attempt, AttemptResult, BatchProgress, ClaimedDelivery, CommitOutcome, ContractChange,
    DeliveryStatus, FeedEvent, FeedPosition, Requeue, RunCounts, RunStatus, Subscription,
};
use crate::contract::{Contract, ContractEvent, EventKind};

/// How many contracts one import statement inserts: large enough that a statement's round
/// trip is small next to its work, small enough that its parameters stay within limits.
pub(crate) const IMPORT_CHUNK: usize = 1000;

/// How many refs one `existing_references` query looks up, for the same reasons.
pub(crate) const LOOKUP_CHUNK: usize = 10_000;

/// How long a failed run waits before a tick retries it: a failure that repeats at once
/// (the database is down) is not retried in a tight loop.
pub const RETRY_FAILED_RUN_AFTER_MS: i64 = 10_000;

/// The lease and finish time written when a run ends: a succeeded run is closed; a failed one
/// may be retried after a pause; a released one (`Running`, on shutdown) may be taken over at
/// once by the next process.
pub(crate) fn finish_timing(status: RunStatus, now_ms: i64) -> (i64, Option<i64>) {
    match status {
        RunStatus::Succeeded => (now_ms, Some(now_ms)),
        RunStatus::Failed => (now_ms + RETRY_FAILED_RUN_AFTER_MS, Some(now_ms)),
        RunStatus::Running => (0, None),
    }
}

/// What a batch writes into its ledger row, in the batch's transaction.
pub(crate) struct LedgerProgress {
    /// The cumulative counts, with the changes refused by their version guard (`conflicts`)
    /// moved from changed to skipped.
    pub counts: RunCounts,
    /// `running`, or `succeeded` when the batch closes the run.
    pub status: RunStatus,
    /// The lease's end: renewed, or the closing instant.
    pub lease_until_ms: i64,
    /// When the run finished, if this batch closes it.
    pub finished_at_ms: Option<i64>,
}

impl LedgerProgress {
    /// The ledger columns after `progress`'s batch committed with `outcome`.
    pub(crate) fn after(
        progress: &BatchProgress<'_>,
        outcome: CommitOutcome,
        now_ms: i64,
    ) -> LedgerProgress {
        let counts = RunCounts {
            changed: progress.counts.changed - outcome.conflicts,
            skipped: progress.counts.skipped + outcome.conflicts,
            ..progress.counts
        };
        if progress.closes_run {
            let (lease_until_ms, finished_at_ms) = finish_timing(RunStatus::Succeeded, now_ms);
            LedgerProgress {
                counts,
                status: RunStatus::Succeeded,
                lease_until_ms,
                finished_at_ms,
            }
        } else {
            LedgerProgress {
                counts,
                status: RunStatus::Running,
                lease_until_ms: progress.lease_until_ms,
                finished_at_ms: None,
            }
        }
    }
}

/// The status of a ledger row as stored; a status this version does not know (written by
/// another version) counts as failed, so the run is retried rather than trusted.
pub(crate) fn run_status(stored: &str) -> RunStatus {
    RunStatus::parse(stored).unwrap_or(RunStatus::Failed)
}

/// The migrations of one dialect, each (version, description, SQL), in order, embedded in
/// the binary. The list is written once here; `$dialect` names the directory under
/// `migrations/`. A new migration is added here and in both directories.
macro_rules! migrations {
    ($dialect:literal) => {
        $crate::storage::shared::migrator(&[
            (
                1,
                "schema",
                include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/migrations/",
                    $dialect,
                    "/0001_schema.sql"
                )),
            ),
            (
                2,
                "drop status index",
                include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/migrations/",
                    $dialect,
                    "/0002_drop_status_index.sql"
                )),
            ),
            (
                3,
                "outbox",
                include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/migrations/",
                    $dialect,
                    "/0003_outbox.sql"
                )),
            ),
            (
                4,
                "reminders",
                include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/migrations/",
                    $dialect,
                    "/0004_reminders.sql"
                )),
            ),
            (
                5,
                "event record json",
                include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/migrations/",
                    $dialect,
                    "/0005_event_record_json.sql"
                )),
            ),
            (
                6,
                "event record text",
                include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/migrations/",
                    $dialect,
                    "/0006_event_record_text.sql"
                )),
            ),
            (
                7,
                "event record packed",
                include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/migrations/",
                    $dialect,
                    "/0007_event_record_packed.sql"
                )),
            ),
        ])
    };
}
pub(crate) use migrations;

/// A migrator over one dialect's migrations, each (version, description, SQL), in order.
pub(crate) fn migrator(migrations: &[(i64, &'static str, &'static str)]) -> Migrator {
    Migrator {
        migrations: Cow::Owned(
            migrations
                .iter()
                .map(|&(version, description, sql)| {
                    Migration::new(
                        version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect(),
        ),
        ..Migrator::DEFAULT
    }
}

/// Whether every migration of `migrator` is among the `applied` versions.
pub(crate) fn all_applied(migrator: &Migrator, applied: &[i64]) -> bool {
    migrator
        .iter()
        .all(|migration| applied.contains(&migration.version))
}

/// The changes of a batch in rounds, each a list of indices into `changes`: a contract
/// changed twice in one batch is applied in order, its n-th change in the n-th round.
pub(crate) fn rounds(changes: &[ContractChange]) -> Vec<Vec<usize>> {
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    let mut seen: HashMap<i64, usize> = HashMap::new();
    for (index, change) in changes.iter().enumerate() {
        let occurrence = seen.entry(change.id).or_insert(0);
        if rounds.len() <= *occurrence {
            rounds.push(Vec::new());
        }
        rounds[*occurrence].push(index);
        *occurrence += 1;
    }
    rounds
}

/// What a batch did, given which of its changes were applied; `record` gets the applied
/// changes, in batch order, to write their events.
pub(crate) fn outcome<'a>(
    changes: &'a [ContractChange],
    applied: &[bool],
    mut record: impl FnMut(&'a ContractChange),
) -> CommitOutcome {
    let mut outcome = CommitOutcome::default();
    for (change, applied) in changes.iter().zip(applied) {
        if *applied {
            outcome.applied += 1;
            record(change);
        } else {
            outcome.conflicts += 1;
        }
    }
    outcome
}

/// The transition key stored for an event: the rule's own key for daily jobs, or one made
/// unique by the contract's new version for operator actions.
pub(crate) fn transition_key(event: &ContractEvent, new_version: i64, index: usize) -> String {
    match &event.transition_key {
        Some(key) => key.clone(),
        None => format!("v{new_version}:{index}:{}", event.kind),
    }
}

/// The `imported` event of a new contract.
pub(crate) fn imported_event(contract: &Contract, imported_on: NaiveDate) -> ContractEvent {
    ContractEvent {
        kind: EventKind::Imported,
        effective_on: imported_on,
        line_ref: None,
        details: serde_json::json!({ "status": contract.status.as_str() }),
        transition_key: Some("imported".to_string()),
    }
}

/// Why an endpoint that answered 410 Gone is disabled.
pub(crate) const ENDPOINT_GONE_REASON: &str = "410 Gone";

/// Now, by this process's clock (Unix ms), for the one write that is given no instant: the
/// creation time of an endpoint row first seen when it is enabled.
pub(crate) fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// What one attempt writes into its delivery row, apart from the attempt's own record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AttemptColumns {
    /// The delivery's new status.
    pub status: DeliveryStatus,
    /// When the next attempt is due; none once delivered or failed.
    pub next_attempt_ms: Option<i64>,
    /// When it was delivered, if it just was.
    pub delivered_at_ms: Option<i64>,
    /// Whether the endpoint is disabled in the same transaction (410 Gone).
    pub disables_endpoint: bool,
}

impl AttemptColumns {
    /// The columns an attempt writes.
    pub(crate) fn of(attempt: &Attempt) -> AttemptColumns {
        let (status, next_attempt_ms, delivered_at_ms, disables_endpoint) = match attempt.result {
            AttemptResult::Delivered => {
                (DeliveryStatus::Delivered, None, Some(attempt.at_ms), false)
            }
            AttemptResult::RetryAt(at_ms) => (DeliveryStatus::Pending, Some(at_ms), None, false),
            AttemptResult::Failed => (DeliveryStatus::Failed, None, None, false),
            // First in line again once the endpoint is enabled.
            AttemptResult::EndpointGone => {
                (DeliveryStatus::Pending, Some(attempt.at_ms), None, true)
            }
        };
        AttemptColumns {
            status,
            next_attempt_ms,
            delivered_at_ms,
            disables_endpoint,
        }
    }
}

/// What one fan-out round writes for an endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FanOutPlan {
    /// The events it receives, in feed order.
    pub event_ids: Vec<i64>,
    /// Their contracts, index for index.
    pub contract_ids: Vec<i64>,
    /// Where its cursor goes: the last event read, whether it receives it or not; none when
    /// nothing was read.
    pub cursor: Option<FeedPosition>,
    /// How many events were read.
    pub passed: u64,
}

/// The deliveries and cursor of an endpoint subscribed as `subscription`, from the feed
/// events read after its cursor (in feed order).
pub(crate) fn fan_out_plan(subscription: &Subscription, entries: &[FeedEntry]) -> FanOutPlan {
    let mut plan = FanOutPlan {
        cursor: entries.last().map(|entry| entry.position),
        passed: entries.len() as u64,
        ..FanOutPlan::default()
    };
    for entry in entries {
        let wanted = match &subscription.kinds {
            None => true,
            Some(kinds) => kinds.contains(&entry.kind),
        };
        if wanted {
            plan.event_ids.push(entry.position.id);
            plan.contract_ids.push(entry.contract_id);
        }
    }
    plan
}

/// Claimed deliveries with their events, in event order. A delivery whose event could not be
/// read (none can: deliveries go with their events) is left out; its lease runs out.
pub(crate) fn claimed_deliveries(
    mut claimed: Vec<ClaimedRow>,
    events: Vec<FeedEvent>,
) -> Vec<ClaimedDelivery> {
    claimed.sort_by_key(|row| (row.event_id, row.id));
    let events: HashMap<i64, FeedEvent> = events
        .into_iter()
        .map(|event| (event.position.id, event))
        .collect();
    claimed
        .into_iter()
        .filter_map(|row| {
            Some(ClaimedDelivery {
                id: row.id,
                endpoint: row.endpoint,
                attempts: row.attempts,
                // Several endpoints' deliveries of one event share it.
                event: events.get(&row.event_id)?.clone(),
            })
        })
        .collect()
}

/// The endpoints of a requeue, and the event ids it names (`None`: every failed delivery),
/// each once: PostgreSQL refuses an upsert that would touch a row twice.
pub(crate) fn requeue_targets(
    endpoints: &[String],
    what: &Requeue,
) -> (Vec<String>, Option<Vec<i64>>) {
    let mut endpoints = endpoints.to_vec();
    endpoints.sort();
    endpoints.dedup();
    let ids = match what {
        Requeue::Failed => None,
        Requeue::Events(ids) => {
            let mut ids = ids.clone();
            ids.sort_unstable();
            ids.dedup();
            Some(ids)
        }
    };
    (endpoints, ids)
}
