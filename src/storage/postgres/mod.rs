//! PostgreSQL: the production database, shared by several replicas. Dates are `date`.
//! Semantics are those of the SQLite store, checked by the same conformance suite.
//!
//! `connect.rs` connects and migrates, `read.rs` reads, `write.rs` writes (in batches bound
//! as arrays); this module holds the store and routes the [`ContractStore`] calls to them.

mod connect;
mod read;
mod write;

use std::time::Duration;

use chrono::NaiveDate;
use sqlx::PgPool;

use super::{
    BatchCursor, BatchProgress, CommitOutcome, ContractChange, ContractStore, LoadedContract,
    RunClaim, RunCounts, RunKey, RunRecord, RunStatus, StorageError, StoredEvent,
};
use crate::lifecycle::Job;

pub use write::PostgresImport;

/// Connection settings for PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    /// `postgres://user:password@host:port/database?options`.
    pub url: String,
    /// Pool size: the most connections this process opens at once.
    pub max_connections: u32,
    /// How long opening (or waiting for) a connection may take before it fails.
    pub connect_timeout: Duration,
}

/// A contract store in a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    /// The connection pool every query goes through.
    pool: PgPool,
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
