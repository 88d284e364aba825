//! SQLite: the embedded default. WAL journal, `BEGIN IMMEDIATE` for every write transaction
//! (so two writers queue on the busy timeout instead of failing on lock upgrade), dates as
//! `YYYY-MM-DD` text.
//!
//! `connect.rs` opens the file and migrates it, `read.rs` reads, `write.rs` writes,
//! `outbox.rs` keeps the feed and the webhook deliveries; this module holds the store and
//! routes the [`ContractStore`] and [`OutboxStore`] calls to them.

mod connect;
mod outbox;
mod read;
mod write;

use std::time::Duration;

use chrono::NaiveDate;
use sqlx::SqlitePool;

use super::{
    Attempt, Backlog, BatchCursor, BatchProgress, ClaimedDelivery, CommitOutcome, ContractChange,
    ContractStore, DeliveryFilter, DeliveryRecord, EndpointState, FeedEvent, FeedPosition,
    LoadedContract, OutboxStore, Requeue, RunClaim, RunCounts, RunKey, RunRecord, RunStatus,
    StorageError, StoredEvent, Subscription,
};
use crate::lifecycle::Job;

pub use write::SqliteImport;

/// Connection settings for SQLite.
#[derive(Debug, Clone)]
pub struct SqliteSettings {
    /// `sqlite://path` (created on first use) or `sqlite::memory:`.
    pub url: String,
    /// Pool size.
    pub max_connections: u32,
    /// How long a writer waits for another writer before failing.
    pub busy_timeout: Duration,
}

/// A contract store in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Connections for reads that no write follows: commands, probes, metrics.
    pool: SqlitePool,
    /// The one connection every write goes through (`BEGIN IMMEDIATE`), and the sweep's
    /// batch reads: SQLite has one writer at a time anyway, and the pages a batch reads are
    /// the ones it then writes, still in this connection's cache. (So on SQLite the next
    /// batch is read after the current one commits, not during.)
    writer: SqlitePool,
}

impl ContractStore for SqliteStore {
    async fn migrate(&self) -> Result<(), StorageError> {
        self.run_migrations().await
    }

    async fn readiness(&self) -> Result<bool, StorageError> {
        self.schema_ready().await
    }

    type Import = SqliteImport;

    async fn begin_import(&self) -> Result<SqliteImport, StorageError> {
        Ok(SqliteImport {
            tx: self.write().await?,
        })
    }

    async fn existing_references(
        &self,
        references: &[String],
    ) -> Result<Vec<String>, StorageError> {
        self.read_existing_references(references).await
    }

    async fn load_contract(&self, reference: &str) -> Result<Option<LoadedContract>, StorageError> {
        self.read_contract(reference).await
    }

    async fn contracts_page(
        &self,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<LoadedContract>, StorageError> {
        self.read_contracts_page(after_id, limit).await
    }

    async fn events(&self, reference: &str) -> Result<Vec<StoredEvent>, StorageError> {
        self.read_events(reference).await
    }

    fn parallel_writers(&self) -> usize {
        1
    }

    async fn zones(&self) -> Result<Vec<String>, StorageError> {
        self.read_zones().await
    }

    async fn succeeded_runs_since(&self, since: NaiveDate) -> Result<Vec<RunKey>, StorageError> {
        self.read_succeeded_runs_since(since).await
    }

    async fn claim_run(
        &self,
        key: &RunKey,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<RunClaim>, StorageError> {
        self.write_claim_run(key, owner, now_ms, lease_ms).await
    }

    async fn due_batch(
        &self,
        job: Job,
        zone: &str,
        business_date: NaiveDate,
        after: Option<BatchCursor>,
        limit: u32,
    ) -> Result<Vec<LoadedContract>, StorageError> {
        self.read_due_batch(job, zone, business_date, after, limit)
            .await
    }

    async fn commit_batch(
        &self,
        progress: Option<BatchProgress<'_>>,
        changes: &[ContractChange],
        now_ms: i64,
    ) -> Result<CommitOutcome, StorageError> {
        self.write_batch(progress, changes, now_ms).await
    }

    async fn finish_run(
        &self,
        claim: &RunClaim,
        status: RunStatus,
        counts: RunCounts,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        self.write_finish_run(claim, status, counts, error, now_ms)
            .await
    }

    async fn runs(&self, limit: u32) -> Result<Vec<RunRecord>, StorageError> {
        self.read_runs(limit).await
    }

    async fn count_by_status(&self) -> Result<Vec<(String, i64)>, StorageError> {
        self.read_count_by_status().await
    }
}

impl OutboxStore for SqliteStore {
    async fn feed(
        &self,
        after: Option<FeedPosition>,
        kinds: &[String],
        limit: u32,
    ) -> Result<Vec<FeedEvent>, StorageError> {
        self.read_feed(after, kinds, limit).await
    }

    async fn feed_position(&self, event_id: i64) -> Result<Option<FeedPosition>, StorageError> {
        self.read_feed_position(event_id).await
    }

    async fn fan_out(
        &self,
        subscription: &Subscription,
        limit: u32,
        now_ms: i64,
    ) -> Result<u64, StorageError> {
        self.write_fan_out(subscription, limit, now_ms).await
    }

    async fn claim_deliveries(
        &self,
        endpoints: &[String],
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<ClaimedDelivery>, StorageError> {
        self.write_claim_deliveries(endpoints, owner, now_ms, lease_ms, limit)
            .await
    }

    async fn record_attempt(
        &self,
        delivery_id: i64,
        owner: &str,
        attempt: &Attempt,
    ) -> Result<bool, StorageError> {
        self.write_attempt(delivery_id, owner, attempt).await
    }

    async fn set_endpoint_disabled(
        &self,
        endpoint: &str,
        disabled: Option<(i64, String)>,
    ) -> Result<(), StorageError> {
        self.write_endpoint_disabled(endpoint, disabled).await
    }

    async fn endpoint_states(&self) -> Result<Vec<EndpointState>, StorageError> {
        self.read_endpoint_states().await
    }

    async fn deliveries(
        &self,
        filter: &DeliveryFilter,
    ) -> Result<Vec<DeliveryRecord>, StorageError> {
        self.read_deliveries(filter).await
    }

    async fn requeue(
        &self,
        endpoints: &[String],
        what: &Requeue,
        now_ms: i64,
    ) -> Result<u64, StorageError> {
        self.write_requeue(endpoints, what, now_ms).await
    }

    async fn backlog(&self) -> Result<Vec<Backlog>, StorageError> {
        self.read_backlog().await
    }
}
