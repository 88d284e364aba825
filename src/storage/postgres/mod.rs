//! PostgreSQL: the production database, shared by several replicas. Dates are `date`.
//! Semantics are those of the SQLite store, checked by the same conformance suite.
//!
//! `connect.rs` connects and migrates, `executor.rs` decides how statements are sent (so
//! that a transaction pooler may sit in front of the server), `read.rs` reads, `write.rs` writes (in batches bound
//! as arrays), `outbox.rs` keeps the feed and the webhook deliveries; this module holds the
//! store and routes the [`ContractStore`] and [`OutboxStore`] calls to them.

mod connect;
mod executor;
mod outbox;
mod read;
mod write;

use std::time::Duration;

use chrono::NaiveDate;

use super::{
    Attempt, Backlog, BatchCursor, BatchProgress, ClaimedDelivery, CommitOutcome, ContractChange,
    ContractStore, DeliveryFilter, DeliveryRecord, EndpointState, FeedEvent, FeedPosition,
    LoadedContract, OutboxStore, Requeue, RunClaim, RunCounts, RunKey, RunRecord, RunStatus,
    StorageError, StoredEvent, Subscription,
};
use crate::lifecycle::Job;
use executor::Pool;

pub use executor::Statements;
pub use write::PostgresImport;

/// Connection settings for PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    /// `postgres://user:password@host:port/database?options`: every query goes here.
    pub url: String,
    /// A connection straight to the server, for what needs a session of its own (the
    /// migrations, which hold a session-level lock); `None`: `url` is used for that too.
    pub direct_url: Option<String>,
    /// How statements are sent through `url`: [`Statements::Unnamed`] when it is a
    /// transaction pooler (PgBouncer's `pool_mode = transaction`).
    pub statements: Statements,
    /// Pool size: the most connections this process opens at once.
    pub max_connections: u32,
    /// How long opening (or waiting for) a connection may take before it fails.
    pub connect_timeout: Duration,
}

/// A contract store in a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    /// The connection pool every query goes through.
    pool: Pool,
    /// Where migrations run when not on the pool: the settings' `direct_url`.
    direct_url: Option<String>,
    /// How long opening a direct connection may take.
    connect_timeout: Duration,
}

impl ContractStore for PostgresStore {
    async fn migrate(&self) -> Result<(), StorageError> {
        self.run_migrations().await
    }

    async fn readiness(&self) -> Result<bool, StorageError> {
        self.schema_ready().await
    }

    type Import = PostgresImport;

    async fn begin_import(&self) -> Result<PostgresImport, StorageError> {
        Ok(PostgresImport {
            tx: self.pool.begin().await?,
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
        usize::MAX
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

impl OutboxStore for PostgresStore {
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
