//! Reading from SQLite: the statements, with id lists passed as one JSON parameter
//! (`json_each`); rows are decoded by the shared decoders.

use std::borrow::Cow;
use std::sync::LazyLock;

use chrono::NaiveDate;
use serde_json::Value;
use sqlx::sqlite::SqliteRow;
use sqlx::SqlitePool;

use super::SqliteStore;
use crate::contract::record::format_date;
use crate::lifecycle::Job;
use crate::storage::columns::{
    contract_read_columns, due_column, due_item, select_list, ChildTable, Dialect, EVENT_COLUMNS,
    RUN_COLUMNS, RUN_KEY_COLUMNS,
};
use crate::storage::rows::{event, run_key, run_record, Children, ContractRow, StoredRow};
use crate::storage::shared::LOOKUP_CHUNK;
use crate::storage::{BatchCursor, LoadedContract, RunKey, RunRecord, StorageError, StoredEvent};

/// SQLite stores dates as `YYYY-MM-DD` text and JSON as text: columns are read as they are.
pub(super) struct SqliteDialect;

impl Dialect for SqliteDialect {
    fn date_as_text(column: &str) -> Cow<'_, str> {
        Cow::Borrowed(column)
    }

    fn json_as_text(column: &str) -> Cow<'_, str> {
        Cow::Borrowed(column)
    }

    fn as_bytes(column: &str) -> Cow<'_, str> {
        // Records written before migration 0007 are text; a blob is what the decoder reads.
        Cow::Owned(format!("CAST({column} AS BLOB)"))
    }

    fn transaction_as_integer(_column: &str) -> Cow<'_, str> {
        // One writer at a time: the id alone is in commit order.
        Cow::Borrowed("0")
    }
}

/// The contract select list.
static CONTRACT_SELECT: LazyLock<String> =
    LazyLock::new(|| select_list::<SqliteDialect>(contract_read_columns()));

/// Per child table of [`ChildTable::ALL`]: its rows of the contract ids in `?1`, in order.
/// The ids go in as one JSON parameter, so each query is one prepared statement whatever
/// the batch (ids written into the SQL would prepare a new one every time).
static CHILD_SELECTS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ChildTable::ALL
        .iter()
        .map(|table| {
            format!(
                "SELECT {} FROM {} WHERE contract_id IN (SELECT value FROM json_each(?1)) \
                 ORDER BY contract_id, position",
                select_list::<SqliteDialect>(table.read_columns()),
                table.name()
            )
        })
        .collect()
});

/// The events of the contract `?1`, oldest first.
static EVENTS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM contract_events \
         WHERE contract_id IN (SELECT id FROM contracts WHERE ref = ?1) \
         AND contract_ref = ?1 ORDER BY id",
        select_list::<SqliteDialect>(EVENT_COLUMNS)
    )
});

/// The keys of the runs that succeeded on or after `?`.
static SUCCEEDED_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM job_runs WHERE business_date >= ? AND status = 'succeeded'",
        select_list::<SqliteDialect>(RUN_KEY_COLUMNS.iter().copied())
    )
});

/// The ledger, newest first, at most `?` rows.
static RUNS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM job_runs ORDER BY business_date DESC, zone, id DESC LIMIT ?",
        select_list::<SqliteDialect>(RUN_COLUMNS)
    )
});

/// The children of the contracts among `rows` that have any.
async fn load_children(pool: &SqlitePool, rows: &[ContractRow]) -> Result<Children, StorageError> {
    let ids = ContractRow::ids_with_children(rows);
    let mut children = Children::default();
    if ids.is_empty() {
        return Ok(children);
    }
    let list = Value::from(ids).to_string();
    for (table, sql) in ChildTable::ALL.into_iter().zip(CHILD_SELECTS.iter()) {
        let rows = sqlx::query(sql).bind(&list).fetch_all(pool).await?;
        children.add(table, &rows)?;
    }
    Ok(children)
}

/// Contract rows with their children, as contracts.
async fn assemble_rows(
    pool: &SqlitePool,
    rows: Vec<SqliteRow>,
    with_due: bool,
) -> Result<Vec<LoadedContract>, StorageError> {
    let rows = ContractRow::decode_all(&rows, with_due)?;
    let children = load_children(pool, &rows).await?;
    Ok(children.assemble(rows))
}

impl SqliteStore {
    /// See [`crate::storage::ContractStore::existing_references`].
    pub(super) async fn read_existing_references(
        &self,
        references: &[String],
    ) -> Result<Vec<String>, StorageError> {
        let mut existing = Vec::new();
        for chunk in references.chunks(LOOKUP_CHUNK) {
            existing.extend(
                sqlx::query_scalar::<_, String>(
                    "SELECT ref FROM contracts WHERE ref IN (SELECT value FROM json_each(?1))",
                )
                .bind(Value::from(chunk.to_vec()).to_string())
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
        let sql = format!("SELECT {} FROM contracts WHERE ref = ?", *CONTRACT_SELECT);
        let rows = sqlx::query(&sql)
            .bind(reference)
            .fetch_all(&self.pool)
            .await?;
        Ok(assemble_rows(&self.pool, rows, false)
            .await?
            .into_iter()
            .next())
    }

    /// See [`crate::storage::ContractStore::contracts_page`].
    pub(super) async fn read_contracts_page(
        &self,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<LoadedContract>, StorageError> {
        let sql = format!(
            "SELECT {} FROM contracts WHERE id > ? ORDER BY id LIMIT ?",
            *CONTRACT_SELECT
        );
        let rows = sqlx::query(&sql)
            .bind(after_id)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        assemble_rows(&self.pool, rows, false).await
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
        Ok(
            sqlx::query_scalar("SELECT time_zone FROM contract_zones ORDER BY time_zone")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// See [`crate::storage::ContractStore::succeeded_runs_since`].
    pub(super) async fn read_succeeded_runs_since(
        &self,
        since: NaiveDate,
    ) -> Result<Vec<RunKey>, StorageError> {
        let rows = sqlx::query(&SUCCEEDED_SQL)
            .bind(format_date(since))
            .fetch_all(&self.pool)
            .await?;
        let mut keys = Vec::with_capacity(rows.len());
        for row in &rows {
            keys.extend(run_key(row)?);
        }
        Ok(keys)
    }

    /// See [`crate::storage::ContractStore::due_batch`]. Read on the writing connection:
    /// the pages a batch reads are the ones it then writes.
    pub(super) async fn read_due_batch(
        &self,
        job: Job,
        zone: &str,
        business_date: NaiveDate,
        after: Option<BatchCursor>,
        limit: u32,
    ) -> Result<Vec<LoadedContract>, StorageError> {
        let due = due_column(job);
        let keyset = if after.is_some() {
            format!("AND ({due} > ? OR ({due} = ? AND id > ?))")
        } else {
            String::new()
        };
        let sql = format!(
            "SELECT {}, {} FROM contracts \
             WHERE time_zone = ? AND {due} IS NOT NULL AND {due} < ? {keyset} \
             ORDER BY {due}, id LIMIT ?",
            *CONTRACT_SELECT,
            due_item::<SqliteDialect>(job),
        );
        let mut query = sqlx::query(&sql)
            .bind(zone)
            .bind(format_date(business_date));
        if let Some(cursor) = after {
            query = query
                .bind(format_date(cursor.due))
                .bind(format_date(cursor.due))
                .bind(cursor.id);
        }
        let rows = query.bind(i64::from(limit)).fetch_all(&self.writer).await?;
        assemble_rows(&self.writer, rows, true).await
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
            "SELECT status, COUNT(*) AS count FROM contracts GROUP BY status ORDER BY status",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.text("status")?, row.integer("count")?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::NaiveDate;

    use super::super::SqliteSettings;
    use super::SqliteStore;
    use crate::contract::record::{read_record, ParseDefaults};
    use crate::storage::{ContractStore, NewContract, StorageError};

    #[tokio::test]
    async fn an_event_date_that_is_not_a_date_is_an_error_naming_the_row() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = SqliteStore::connect(&SqliteSettings {
            url: format!("sqlite://{}", dir.path().join("store.db").display()),
            max_connections: 2,
            busy_timeout: Duration::from_secs(5),
        })
        .await
        .expect("the store opens");
        store.migrate().await.expect("the schema migrates");
        let contract = read_record(
            r#"{"ref":"C-1","customer":"Bakery","time_zone":"UTC","start_date":"2025-01-01","end_date":"2025-12-31",
            "notice_period":"1M","cancellation_window":"end_of_term","auto_extend":false}"#,
        )
        .and_then(|record| {
            record.parse(&ParseDefaults {
                time_zone: chrono_tz::UTC,
            })
        })
        .expect("a valid contract");
        let imported_on = NaiveDate::from_ymd_opt(2025, 1, 1).expect("a date");
        store
            .insert_contracts(
                &[NewContract {
                    contract,
                    imported_on,
                }],
                0,
            )
            .await
            .expect("the contract is stored");
        // Another system wrote the event.
        sqlx::query("UPDATE contract_events SET effective_on = '2025-02-30'")
            .execute(&store.writer)
            .await
            .expect("the event is rewritten");

        match store.events("C-1").await {
            Err(StorageError::InvalidValue {
                table,
                column,
                row,
                value,
            }) => {
                assert_eq!((table, column), ("contract_events", "effective_on"));
                assert!(row.contains("C-1"), "{row}");
                assert_eq!(value, "2025-02-30");
            }
            other => panic!("expected an invalid value, got {other:?}"),
        }
    }
}
