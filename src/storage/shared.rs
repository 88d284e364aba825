//! What both stores do alike, apart from SQL: batch sizes, the ledger's timing rules, the
//! migrator, and the bookkeeping around a batch of changes and events.

use std::borrow::Cow;
use std::collections::HashMap;

use chrono::NaiveDate;
use sqlx::migrate::{Migration, MigrationType, Migrator};

use super::{CommitOutcome, ContractChange, RunStatus};
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
