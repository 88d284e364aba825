//! Reading from PostgreSQL: the statements, with id lists bound as arrays (`= ANY($1)`);
//! dates and JSON are selected as text, so the shared decoders read them as on SQLite.

use std::borrow::Cow;
use std::sync::LazyLock;

use chrono::NaiveDate;
use sqlx::postgres::PgRow;

use super::PostgresStore;
use crate::lifecycle::Job;
use crate::storage::columns::{
    contract_read_columns, due_column, due_item, select_list, ChildTable, Dialect, EVENT_COLUMNS,
    RUN_COLUMNS, RUN_KEY_COLUMNS,
};
use crate::storage::rows::{event, run_key, run_record, Children, ContractRow, StoredRow};
use crate::storage::shared::LOOKUP_CHUNK;
use crate::storage::{BatchCursor, LoadedContract, RunKey, RunRecord, StorageError, StoredEvent};

/// PostgreSQL has `date` and `jsonb`: they are selected as text, dates with an explicit
/// format so that no session setting (`DateStyle`) changes them.
pub(super) struct PostgresDialect;

impl Dialect for PostgresDialect {
    fn date_as_text(column: &str) -> Cow<'_, str> {
        Cow::Owned(format!("to_char({column}, 'YYYY-MM-DD')"))
    }

    fn json_as_text(column: &str) -> Cow<'_, str> {
        Cow::Owned(format!("{column}::text"))
    }

    fn as_bytes(column: &str) -> Cow<'_, str> {
        Cow::Borrowed(column)
    }

    fn transaction_as_integer(column: &str) -> Cow<'_, str> {
        // `xid8` has no cast to bigint; its text is the number.
        Cow::Owned(format!("{column}::text::bigint"))
    }
}

/// The contract select list. (Its dates are named after their columns: a statement that
/// orders by a date orders by the due column, which is not among them.)
static CONTRACT_SELECT: LazyLock<String> =
    LazyLock::new(|| select_list::<PostgresDialect>(contract_read_columns()));

/// Per child table of [`ChildTable::ALL`]: its rows of the contract ids in `$1`, in order.
static CHILD_SELECTS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ChildTable::ALL
        .iter()
        .map(|table| {
            format!(
                "SELECT {} FROM {} WHERE contract_id = ANY($1) ORDER BY contract_id, position",
                select_list::<PostgresDialect>(table.read_columns()),
                table.name()
            )
        })
        .collect()
});

/// The events of the contract `$1`, oldest first. Found through the contract's id, so the
/// (contract_id, transition_key) index serves it; events always carry their contract's ref.
static EVENTS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM contract_events \
         WHERE contract_id IN (SELECT id FROM contracts WHERE ref = $1) \
         AND contract_ref = $1 ORDER BY id",
        select_list::<PostgresDialect>(EVENT_COLUMNS)
    )
});

/// The keys of the runs that succeeded on or after `$1`.
static SUCCEEDED_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM job_runs WHERE business_date >= $1 AND status = 'succeeded'",
        select_list::<PostgresDialect>(RUN_KEY_COLUMNS.iter().copied())
    )
});

/// The ledger, newest first, at most `$1` rows. Ordered by the stored date (qualified: the
/// select list's `business_date` is its text), zones in byte order as SQLite sorts them.
static RUNS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM job_runs \
         ORDER BY job_runs.business_date DESC, zone COLLATE \"C\", id DESC LIMIT $1",
        select_list::<PostgresDialect>(RUN_COLUMNS)
    )
});

impl PostgresStore {
    /// The children of the contracts among `rows` that have any.
    async fn load_children(&self, rows: &[ContractRow]) -> Result<Children, StorageError> {
        let ids = ContractRow::ids_with_children(rows);
        let mut children = Children::default();
        if ids.is_empty() {
            return Ok(children);
        }
        for (table, sql) in ChildTable::ALL.into_iter().zip(CHILD_SELECTS.iter()) {
            let rows = sqlx::query(sql).bind(&ids).fetch_all(&self.pool).await?;
            children.add(table, &rows)?;
        }
        Ok(children)
    }

    /// Contract rows with their children, as contracts.
    async fn assemble_rows(
        &self,
        rows: Vec<PgRow>,
        with_due: bool,
    ) -> Result<Vec<LoadedContract>, StorageError> {
        let rows = ContractRow::decode_all(&rows, with_due)?;
        let children = self.load_children(&rows).await?;
        Ok(children.assemble(rows))
    }

    /// See [`crate::storage::ContractStore::existing_references`].
    pub(super) async fn read_existing_references(
        &self,
        references: &[String],
    ) -> Result<Vec<String>, StorageError> {
        let mut existing = Vec::new();
        for chunk in references.chunks(LOOKUP_CHUNK) {
            existing.extend(
                sqlx::query_scalar::<_, String>("SELECT ref FROM contracts WHERE ref = ANY($1)")
                    .bind(chunk)
                    .fetch_all(&self.pool)
                    .await?,
            );
        }
        Ok(existing)
    }

    /// See [`crate::storage::ContractStore::load_contract`].
    pub(super) async fn read_contract(
        &self,
        reference: &str,
    ) -> Result<Option<LoadedContract>, StorageError> {
        let sql = format!("SELECT {} FROM contracts WHERE ref = $1", *CONTRACT_SELECT);
        let rows = sqlx::query(&sql)
            .bind(reference)
            .fetch_all(&self.pool)
            .await?;
        Ok(self.assemble_rows(rows, false).await?.into_iter().next())
    }

    /// See [`crate::storage::ContractStore::contracts_page`].
    pub(super) async fn read_contracts_page(
        &self,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<LoadedContract>, StorageError> {
        let sql = format!(
            "SELECT {} FROM contracts WHERE id > $1 ORDER BY id LIMIT $2",
            *CONTRACT_SELECT
        );
        let rows = sqlx::query(&sql)
            .bind(after_id)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        self.assemble_rows(rows, false).await
    }

    /// See [`crate::storage::ContractStore::events`].
    pub(super) async fn read_events(
        &self,
        reference: &str,
    ) -> Result<Vec<StoredEvent>, StorageError> {
        let rows = sqlx::query(&EVENTS_SQL)
            .bind(reference)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| event(row, reference)).collect()
    }

    /// See [`crate::storage::ContractStore::zones`].
    pub(super) async fn read_zones(&self) -> Result<Vec<String>, StorageError> {
        // Byte order, as SQLite sorts, whatever the database's collation.
        Ok(sqlx::query_scalar(
            "SELECT time_zone FROM contract_zones ORDER BY time_zone COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// See [`crate::storage::ContractStore::succeeded_runs_since`].
    pub(super) async fn read_succeeded_runs_since(
        &self,
        since: NaiveDate,
    ) -> Result<Vec<RunKey>, StorageError> {
        let rows = sqlx::query(&SUCCEEDED_SQL)
            .bind(since)
            .fetch_all(&self.pool)
            .await?;
        let mut keys = Vec::with_capacity(rows.len());
        for row in &rows {
            keys.extend(run_key(row)?);
        }
        Ok(keys)
    }

    /// See [`crate::storage::ContractStore::due_batch`].
    pub(super) async fn read_due_batch(
        &self,
        job: Job,
        zone: &str,
        business_date: NaiveDate,
        after: Option<BatchCursor>,
        limit: u32,
    ) -> Result<Vec<LoadedContract>, StorageError> {
        let due = due_column(job);
        let select = format!("{}, {}", *CONTRACT_SELECT, due_item::<PostgresDialect>(job));
        let rows = match after {
            None => {
                sqlx::query(&format!(
                    "SELECT {select} FROM contracts \
                     WHERE time_zone = $1 AND {due} IS NOT NULL AND {due} < $2 \
                     ORDER BY {due}, id LIMIT $3"
                ))
                .bind(zone)
                .bind(business_date)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
            Some(cursor) => {
                sqlx::query(&format!(
                    "SELECT {select} FROM contracts \
                     WHERE time_zone = $1 AND {due} IS NOT NULL AND {due} < $2 \
                     AND ({due}, id) > ($3, $4) ORDER BY {due}, id LIMIT $5"
                ))
                .bind(zone)
                .bind(business_date)
                .bind(cursor.due)
                .bind(cursor.id)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
        };
        self.assemble_rows(rows, true).await
    }

    /// See [`crate::storage::ContractStore::runs`].
    pub(super) async fn read_runs(&self, limit: u32) -> Result<Vec<RunRecord>, StorageError> {
        let rows = sqlx::query(&RUNS_SQL)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        let mut records = Vec::with_capacity(rows.len());
        for row in &rows {
            records.extend(run_record(row)?);
        }
        Ok(records)
    }

    /// See [`crate::storage::ContractStore::count_by_status`].
    pub(super) async fn read_count_by_status(&self) -> Result<Vec<(String, i64)>, StorageError> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS count FROM contracts GROUP BY status \
             ORDER BY status COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.text("status")?, row.integer("count")?)))
            .collect()
    }
}
