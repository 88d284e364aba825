//! Storage: the one trait the rest of contractd talks to, and one module per database.
//!
//! **Architecture invariant:** only the modules under `storage` know SQL. Everything above
//! speaks in contracts, transitions, run claims and batches.
//!
//! Exactly-once effect of the daily jobs rests on three layers, all enforced here:
//! 1. the run ledger claim (`INSERT … ON CONFLICT` on (job, zone, business date), with a lease
//!    that another process may take over once it expires);
//! 2. every contract update is guarded by the version it was read at;
//! 3. transition events have a unique key per contract.

mod columns;
mod outbox;
mod packed_record;
pub mod postgres;
mod rows;
mod shared;
pub mod sqlite;

use std::future::Future;

use chrono::NaiveDate;

use crate::contract::record::InvalidContract;
use crate::contract::{Contract, ContractEvent};
use crate::lifecycle::Job;
use columns::ChangedParts;

pub use outbox::{
    Attempt, AttemptResult, Backlog, ClaimedDelivery, DeliveryFilter, DeliveryRecord,
    DeliveryStatus, EndpointState, EventId, FeedEvent, FeedPosition, OutboxStore, Requeue,
    Subscription,
};
pub use postgres::{PostgresSettings, PostgresStore, Statements};
pub use shared::RETRY_FAILED_RUN_AFTER_MS;
pub use sqlite::SqliteStore;

/// What can go wrong in storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database refused or could not be reached. The text is sqlx's, which already ends
    /// with its cause's text (the database's message, the I/O error…), so the cause is not
    /// also offered as `source()`: a chain printed link by link would repeat it.
    #[error("{0}")]
    Database(sqlx::Error),
    /// A schema migration failed; as for [`StorageError::Database`], its text already holds
    /// its cause's, so there is no `source()`.
    #[error("{0}")]
    Migration(sqlx::migrate::MigrateError),
    /// A contract with this ref already exists.
    #[error("contract '{0}' already exists")]
    DuplicateReference(String),
    /// The same transition was about to be recorded twice: the batch was rolled back.
    #[error("contract '{contract_ref}': transition '{transition_key}' is already recorded")]
    DuplicateTransition {
        /// The contract concerned.
        contract_ref: String,
        /// The key that already exists.
        transition_key: String,
    },
    /// Another process took over the run (our lease expired): the batch was rolled back.
    #[error("run {run_id} was taken over by another process")]
    LeaseLost {
        /// The attempt that lost its lease.
        run_id: String,
    },
    /// A stored value cannot be read as what its column holds (a row written by another
    /// system): reported rather than replaced by a made-up value.
    #[error("{table}.{column} of row {row}: '{value}' cannot be read")]
    InvalidValue {
        /// The table the row is in.
        table: &'static str,
        /// The column whose value is wrong.
        column: &'static str,
        /// Which row (its id, and what it belongs to).
        row: String,
        /// The value as stored.
        value: String,
    },
    /// The database URL cannot be used.
    #[error("database url: {0}")]
    Url(String),
    /// Schema migrations are pending, and the only connection goes through a transaction
    /// pooler, which keeps no session for the migrator's lock.
    #[error(
        "schema migrations are pending and need a connection straight to the server (a \
         transaction pooler keeps no session for their lock): set database.direct_url"
    )]
    MigrationsNeedSession,
}

impl From<sqlx::Error> for StorageError {
    fn from(error: sqlx::Error) -> StorageError {
        StorageError::Database(error)
    }
}

impl From<sqlx::migrate::MigrateError> for StorageError {
    fn from(error: sqlx::migrate::MigrateError) -> StorageError {
        StorageError::Migration(error)
    }
}

/// A contract as read from the database, valid or not.
#[derive(Debug, Clone)]
pub struct LoadedContract {
    /// Storage key: keyset pagination and guarded updates use it.
    pub id: i64,
    /// Incremented by every update; an update names the version it read.
    pub version: i64,
    /// The contract's ref, also when the row is invalid (for the log).
    pub reference: String,
    /// The due date the row was selected by (for the batch cursor), when selected by a job.
    pub due: Option<NaiveDate>,
    /// The contract, or why the row breaks the rules (it was written by another system).
    pub contract: Result<Contract, InvalidContract>,
}

/// One contract update, applied only if the row still has `expected_version`. Only the
/// columns and child tables that differ from the state it was computed from are written.
#[derive(Debug, Clone)]
pub struct ContractChange {
    /// Storage key of the contract.
    pub id: i64,
    /// The version the change was computed from.
    pub expected_version: i64,
    /// The new state.
    pub contract: Contract,
    /// Why it changed.
    pub events: Vec<ContractEvent>,
    /// What differs from the state at `expected_version`: what is written.
    pub(crate) parts: ChangedParts,
}

impl ContractChange {
    /// The change of the contract stored as `id` at `expected_version`, whose state then was
    /// `before`, to `after`, with the events that explain it.
    pub fn new(
        id: i64,
        expected_version: i64,
        before: &Contract,
        after: Contract,
        events: Vec<ContractEvent>,
    ) -> ContractChange {
        ContractChange {
            id,
            expected_version,
            parts: ChangedParts::between(before, &after),
            contract: after,
            events,
        }
    }

    /// Whether any line, schedule, document, renewal or change request differs.
    pub fn changes_children(&self) -> bool {
        self.parts.rewrites_children()
    }
}

/// The key of a ledger row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RunKey {
    /// Which job.
    pub job: Job,
    /// Which IANA zone.
    pub zone: String,
    /// Which business date of that zone.
    pub business_date: NaiveDate,
}

/// Where a job's keyset scan has got to: rows are read in (due date, id) order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchCursor {
    /// Due date of the last row read.
    pub due: NaiveDate,
    /// Id of the last row read.
    pub id: i64,
}

/// Counts of a run, cumulative over its batches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunCounts {
    /// Contracts read.
    pub examined: i64,
    /// Contracts changed.
    pub changed: i64,
    /// Contracts skipped (invalid rows, refusals, concurrent updates).
    pub skipped: i64,
}

impl RunCounts {
    /// Sum of two counts.
    pub fn plus(self, other: RunCounts) -> RunCounts {
        RunCounts {
            examined: self.examined + other.examined,
            changed: self.changed + other.changed,
            skipped: self.skipped + other.skipped,
        }
    }
}

/// A claimed ledger row: this process may work on the run until its lease ends.
#[derive(Debug, Clone)]
pub struct RunClaim {
    /// Ledger row id.
    pub row_id: i64,
    /// This attempt's id (changes on takeover, so a stale holder's commits are refused).
    pub run_id: String,
    /// What is being run.
    pub key: RunKey,
    /// Where a previous attempt stopped (a resumed run starts after it).
    pub cursor: Option<BatchCursor>,
    /// What previous attempts already counted.
    pub counts: RunCounts,
    /// How many attempts the run has had, this one included.
    pub attempts: i64,
}

/// Ledger progress written in the same transaction as a batch's changes.
#[derive(Debug, Clone)]
pub struct BatchProgress<'a> {
    /// The claim the batch belongs to.
    pub claim: &'a RunClaim,
    /// The cursor after this batch.
    pub cursor: Option<BatchCursor>,
    /// Cumulative counts after this batch, every change counted as applied (the store
    /// counts the ones refused by their version guard as skipped instead).
    pub counts: RunCounts,
    /// The renewed lease end (Unix ms).
    pub lease_until_ms: i64,
    /// This batch is the run's last (it was not full): the ledger row is closed as succeeded
    /// in the batch's own transaction, so a run that fits in one batch commits once after its
    /// claim instead of twice, and [`ContractStore::finish_run`] is not called for it.
    pub closes_run: bool,
}

/// What a committed batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitOutcome {
    /// Changes applied.
    pub applied: i64,
    /// Changes not applied because the row had moved on (another process changed it).
    pub conflicts: i64,
}

text_enum! {
    /// The state of a ledger row.
    RunStatus {
        /// Claimed, being worked on (or its holder died: the lease tells).
        Running => "running",
        /// Done for that business date.
        Succeeded => "succeeded",
        /// Stopped by an error; the next tick retries it.
        Failed => "failed",
    }
}

/// A ledger row, for `contractd runs`.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// What ran.
    pub key: RunKey,
    /// The latest attempt's id.
    pub run_id: String,
    /// The process that holds or held the lease.
    pub owner: String,
    /// Running, succeeded or failed.
    pub status: RunStatus,
    /// How many attempts.
    pub attempts: i64,
    /// Committed batches.
    pub batches: i64,
    /// Cumulative counts.
    pub counts: RunCounts,
    /// The last error.
    pub error: Option<String>,
    /// When the first attempt started (Unix ms).
    pub started_at_ms: i64,
    /// When it finished (Unix ms).
    pub finished_at_ms: Option<i64>,
}

/// An event as stored, for `contractd history`.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// What happened.
    pub kind: String,
    /// When it took effect.
    pub effective_on: NaiveDate,
    /// The line concerned.
    pub line_ref: Option<String>,
    /// Details as JSON.
    pub details: serde_json::Value,
    /// The unique transition key.
    pub transition_key: String,
    /// The run that made it, for daily jobs.
    pub run_id: Option<String>,
    /// When it was recorded (Unix ms).
    pub recorded_at_ms: i64,
}

/// A new contract with the event that records its creation.
#[derive(Debug, Clone)]
pub struct NewContract {
    /// The contract, computed fields filled in.
    pub contract: Contract,
    /// Its business date at import (the `imported` event's effective date).
    pub imported_on: NaiveDate,
}

/// Everything contractd stores. One implementation per database; both pass the same
/// conformance suite (`tests/store/conformance/`).
pub trait ContractStore: Send + Sync + Clone + 'static {
    /// Apply the schema migrations of this dialect.
    fn migrate(&self) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Whether the database answers and every migration is applied.
    fn readiness(&self) -> impl Future<Output = Result<bool, StorageError>> + Send;

    /// An import in progress, written chunk by chunk in one transaction.
    type Import: ContractImport;

    /// Start an import: one transaction that [`ContractImport::insert`] writes into and only
    /// [`ContractImport::commit`] makes visible, so a file of any size is written all or
    /// nothing without being held in memory. On SQLite it holds the write lock until then.
    fn begin_import(&self) -> impl Future<Output = Result<Self::Import, StorageError>> + Send;

    /// Insert contracts, all or none, each with an `imported` event. A ref that exists
    /// already fails the whole call with [`StorageError::DuplicateReference`].
    fn insert_contracts(
        &self,
        contracts: &[NewContract],
        now_ms: i64,
    ) -> impl Future<Output = Result<(), StorageError>> + Send {
        async move {
            let mut import = self.begin_import().await?;
            let skipped = import.insert(contracts, now_ms).await?;
            if let Some(reference) = skipped.into_iter().next() {
                return Err(StorageError::DuplicateReference(reference));
            }
            import.commit().await
        }
    }

    /// Which of these refs already exist.
    fn existing_references(
        &self,
        references: &[String],
    ) -> impl Future<Output = Result<Vec<String>, StorageError>> + Send;

    /// One contract by ref.
    fn load_contract(
        &self,
        reference: &str,
    ) -> impl Future<Output = Result<Option<LoadedContract>, StorageError>> + Send;

    /// Contracts in id order after `after_id`, at most `limit` (export).
    fn contracts_page(
        &self,
        after_id: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<LoadedContract>, StorageError>> + Send;

    /// The events of one contract, oldest first.
    fn events(
        &self,
        reference: &str,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, StorageError>> + Send;

    /// How many transactions can usefully write at once (SQLite has one writer): the sweep
    /// runs at most this many zones at a time.
    fn parallel_writers(&self) -> usize;

    /// Every zone that has contracts.
    fn zones(&self) -> impl Future<Output = Result<Vec<String>, StorageError>> + Send;

    /// The (job, zone, business date) runs that succeeded on or after `since`.
    fn succeeded_runs_since(
        &self,
        since: NaiveDate,
    ) -> impl Future<Output = Result<Vec<RunKey>, StorageError>> + Send;

    /// Claim a run: create its ledger row, or take it over when it failed or its lease
    /// expired. `None` when it succeeded already or another process holds a live lease.
    fn claim_run(
        &self,
        key: &RunKey,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> impl Future<Output = Result<Option<RunClaim>, StorageError>> + Send;

    /// The next batch of contracts due for `job` in `zone` on `business_date` (due date before
    /// it), in (due date, id) order after `after`.
    fn due_batch(
        &self,
        job: Job,
        zone: &str,
        business_date: NaiveDate,
        after: Option<BatchCursor>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<LoadedContract>, StorageError>> + Send;

    /// Apply changes in one transaction: each guarded by its expected version, with its
    /// events; with `progress`, the ledger row is advanced in the same transaction (refused
    /// with [`StorageError::LeaseLost`] when another attempt took the run over).
    fn commit_batch(
        &self,
        progress: Option<BatchProgress<'_>>,
        changes: &[ContractChange],
        now_ms: i64,
    ) -> impl Future<Output = Result<CommitOutcome, StorageError>> + Send;

    /// Close a run with its outcome.
    fn finish_run(
        &self,
        claim: &RunClaim,
        status: RunStatus,
        counts: RunCounts,
        error: Option<&str>,
        now_ms: i64,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// The ledger, newest first.
    fn runs(&self, limit: u32)
        -> impl Future<Output = Result<Vec<RunRecord>, StorageError>> + Send;

    /// How many contracts have each status.
    fn count_by_status(
        &self,
    ) -> impl Future<Output = Result<Vec<(String, i64)>, StorageError>> + Send;
}

/// An import in progress: one open transaction. Dropped without [`ContractImport::commit`],
/// it is rolled back and nothing it inserted was ever visible.
pub trait ContractImport: Send {
    /// Insert contracts, each with an `imported` event. A contract whose ref exists already
    /// (in the database, or earlier in this import) is not inserted: the refs of those come
    /// back, in input order.
    fn insert(
        &mut self,
        contracts: &[NewContract],
        now_ms: i64,
    ) -> impl Future<Output = Result<Vec<String>, StorageError>> + Send;

    /// Commit everything inserted.
    fn commit(self) -> impl Future<Output = Result<(), StorageError>> + Send;
}

/// Hide the password of a database URL, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "<unparseable url>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::error::Error;
    use std::fmt;

    use super::StorageError;

    /// A database's own error, as a driver reports it.
    #[derive(Debug)]
    struct Refused;

    impl fmt::Display for Refused {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("prepared statement \"s1\" does not exist")
        }
    }

    impl Error for Refused {}

    impl sqlx::error::DatabaseError for Refused {
        fn message(&self) -> &str {
            "prepared statement \"s1\" does not exist"
        }

        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed("26000"))
        }

        fn as_error(&self) -> &(dyn Error + Send + Sync + 'static) {
            self
        }

        fn as_error_mut(&mut self) -> &mut (dyn Error + Send + Sync + 'static) {
            self
        }

        fn into_error(self: Box<Self>) -> Box<dyn Error + Send + Sync + 'static> {
            self
        }

        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    /// A caller's error that names what it was doing and keeps the storage error as source.
    #[derive(Debug, thiserror::Error)]
    #[error("contract 'C-1'")]
    struct Caller {
        #[source]
        storage: StorageError,
    }

    /// The chain as an error report prints it: each error's text, then its source's, joined
    /// by ": ".
    fn chain(error: &dyn Error) -> String {
        let mut parts = vec![error.to_string()];
        let mut next = error.source();
        while let Some(cause) = next {
            parts.push(cause.to_string());
            next = cause.source();
        }
        parts.join(": ")
    }

    #[test]
    fn a_database_error_is_printed_once_along_its_chain() {
        let error = Caller {
            storage: sqlx::Error::Database(Box::new(Refused)).into(),
        };
        let printed = chain(&error);
        assert_eq!(
            printed,
            "contract 'C-1': error returned from database: prepared statement \"s1\" does not exist"
        );
        assert_eq!(printed.matches("does not exist").count(), 1, "{printed}");
    }

    #[test]
    fn an_io_error_is_printed_once_along_its_chain() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = Caller {
            storage: sqlx::Error::Io(refused).into(),
        };
        let printed = chain(&error);
        let segments: Vec<&str> = printed.split(": ").collect();
        let mut unique = segments.clone();
        unique.dedup();
        assert_eq!(segments, unique, "{printed}");
        assert_eq!(printed.matches("refused").count(), 1, "{printed}");
    }
}
