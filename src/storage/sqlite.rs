//! SQLite: the embedded default. WAL journal, `BEGIN IMMEDIATE` for every write transaction
//! (so two writers queue on the busy timeout instead of failing on lock upgrade), dates as
//! `YYYY-MM-DD` text.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use chrono::NaiveDate;
use serde_json::Value;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};

use super::rows::{
    assemble, due_column, CancellationColumns, ChangedParts, ChildTable, Children, ColumnValue,
    ContractColumn, ContractRow, ContractValues, LineRecordParts, LineRow, CONTRACT_COLUMNS,
};
use super::shared::{
    all_applied, finish_timing, imported_event, migrations, outcome, rounds, run_status,
    transition_key, IMPORT_CHUNK, LOOKUP_CHUNK,
};
use super::{
    BatchCursor, BatchProgress, CommitOutcome,
    ContractChange, ContractImport, ContractStore, LoadedContract, NewContract, RunClaim,
    RunCounts, RunKey, RunRecord, RunStatus, StorageError, StoredEvent,
};
use crate::contract::record::{
    format_date, parse_date, DocumentRecord, ReferenceRecord, ScheduleRecord,
};
use crate::contract::{Cancellation, Contract, ContractEvent};
use crate::lifecycle::Job;

/// The SQLite migrations, embedded in the binary.
fn migrator() -> Migrator {
    migrations!("sqlite")
}

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

/// Page cache of the writing connection, KiB: a batch's pages (its contracts, their index
/// entries and events) stay cached between its read and its write, and across batches.
const WRITER_CACHE_KIB: u32 = 32 * 1024;

/// WAL pages after which a commit checkpoints (SQLite's default is 1000): a batch commits a
/// few thousand pages, and checkpointing after every batch would copy pages the next batch
/// rewrites anyway, with two fsyncs each time.
const WAL_AUTOCHECKPOINT_PAGES: u32 = 16 * 1024;

/// Size the WAL file is cut back to after a checkpoint, bytes (a large import grows it to
/// the size of everything it wrote).
const WAL_SIZE_LIMIT_BYTES: u64 = 64 * 1024 * 1024;

impl SqliteStore {
    /// Open (creating when missing) the database file.
    pub async fn connect(settings: &SqliteSettings) -> Result<SqliteStore, StorageError> {
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(Self::writer_options(settings)?)
            .await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .connect_with(Self::reader_options(settings)?)
            .await?;
        Ok(SqliteStore { pool, writer })
    }

    /// The options of the connections that only read.
    fn reader_options(settings: &SqliteSettings) -> Result<SqliteConnectOptions, StorageError> {
        Ok(SqliteConnectOptions::from_str(&settings.url)
            .map_err(|error| StorageError::Url(error.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(settings.busy_timeout)
            .foreign_keys(true)
            // Statement journals (a statement inside a transaction may have to be undone on
            // its own) stay in memory instead of temporary files.
            .pragma("temp_store", "memory"))
    }

    /// The options of the writing connection. Public so that tools writing to the same
    /// database (the benchmark's set-based floor) can use the same settings.
    pub fn writer_options(settings: &SqliteSettings) -> Result<SqliteConnectOptions, StorageError> {
        Ok(Self::reader_options(settings)?
            .pragma("cache_size", format!("-{WRITER_CACHE_KIB}"))
            .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string())
            .pragma("journal_size_limit", WAL_SIZE_LIMIT_BYTES.to_string()))
    }

    async fn write(&self) -> Result<Transaction<'static, Sqlite>, StorageError> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    async fn load_children(
        pool: &SqlitePool,
        rows: &[ContractRow],
    ) -> Result<Children, StorageError> {
        let ids: Vec<i64> = rows
            .iter()
            .filter(|row| row.has_children)
            .map(|row| row.id)
            .collect();
        let mut children = Children::default();
        if ids.is_empty() {
            return Ok(children);
        }
        // The ids go in as one JSON parameter, so each query is one prepared statement
        // whatever the batch (ids written into the SQL would prepare a new one every time).
        let list = Value::from(ids).to_string();
        let lines = sqlx::query(
            "SELECT contract_id, ref, description, kind, billable, start_date, end_date, status, \
             amount_minor, currency, billing_period, auto_extend, cancellation_received_on, \
             cancellation_end_date, cancellation_reason, cancellation_notes, \
             cancellation_final_invoice, cancellation_restore_auto_extend FROM contract_lines \
             WHERE contract_id IN (SELECT value FROM json_each(?1)) ORDER BY contract_id, position",
        )
        .bind(&list)
        .fetch_all(pool)
        .await?;
        for row in lines {
            children.add_line(LineRow {
                contract_id: row.try_get(0)?,
                record: LineRecordParts {
                    reference: row.try_get(1)?,
                    description: row.try_get(2)?,
                    kind: row.try_get(3)?,
                    billable: row.try_get(4)?,
                    start_date: row.try_get(5)?,
                    end_date: row.try_get(6)?,
                    status: row.try_get(7)?,
                    amount_minor: row.try_get(8)?,
                    currency: row.try_get(9)?,
                    billing_period: row.try_get(10)?,
                    auto_extend: row.try_get(11)?,
                    cancellation: cancellation_columns(&row, 12)?,
                },
            });
        }
        let schedules = sqlx::query(
            "SELECT contract_id, line_ref, period_start, period_end, amount_minor, status, document \
             FROM billing_schedules WHERE contract_id IN (SELECT value FROM json_each(?1)) \
             ORDER BY contract_id, position",
        )
        .bind(&list)
        .fetch_all(pool)
        .await?;
        for row in schedules {
            children
                .schedules
                .entry(row.try_get(0)?)
                .or_default()
                .push(ScheduleRecord {
                    line_ref: row.try_get(1)?,
                    period_start: row.try_get(2)?,
                    period_end: row.try_get(3)?,
                    amount_minor: row.try_get(4)?,
                    status: row.try_get(5)?,
                    document: row.try_get(6)?,
                });
        }
        let documents = sqlx::query(
            "SELECT contract_id, ref, kind, status, consolidated, amount_minor, currency \
             FROM billing_documents WHERE contract_id IN (SELECT value FROM json_each(?1)) \
             ORDER BY contract_id, position",
        )
        .bind(&list)
        .fetch_all(pool)
        .await?;
        for row in documents {
            children
                .documents
                .entry(row.try_get(0)?)
                .or_default()
                .push(DocumentRecord {
                    reference: row.try_get(1)?,
                    kind: row.try_get(2)?,
                    status: row.try_get(3)?,
                    consolidated: row.try_get(4)?,
                    amount_minor: row.try_get(5)?,
                    currency: row.try_get(6)?,
                });
        }
        for (table, target) in [
            ("renewals", &mut children.renewals),
            ("change_requests", &mut children.change_requests),
        ] {
            let rows = sqlx::query(&format!(
                "SELECT contract_id, ref, status FROM {table} \
                 WHERE contract_id IN (SELECT value FROM json_each(?1)) \
                 ORDER BY contract_id, position"
            ))
            .bind(&list)
            .fetch_all(pool)
            .await?;
            for row in rows {
                target
                    .entry(row.try_get(0)?)
                    .or_default()
                    .push(ReferenceRecord {
                        reference: row.try_get(1)?,
                        status: row.try_get(2)?,
                    });
            }
        }
        Ok(children)
    }

    async fn assemble_rows(
        pool: &SqlitePool,
        rows: Vec<SqliteRow>,
        with_due: bool,
    ) -> Result<Vec<LoadedContract>, StorageError> {
        let rows = rows
            .iter()
            .map(|row| contract_row(row, with_due))
            .collect::<Result<Vec<_>, _>>()?;
        let mut children = Self::load_children(pool, &rows).await?;
        Ok(rows
            .into_iter()
            .map(|row| assemble(row, &mut children))
            .collect())
    }
}

fn cancellation_columns(row: &SqliteRow, first: usize) -> Result<CancellationColumns, sqlx::Error> {
    Ok(CancellationColumns {
        received_on: row.try_get(first)?,
        end_date: row.try_get(first + 1)?,
        reason: row.try_get(first + 2)?,
        notes: row.try_get(first + 3)?,
        final_invoice: row.try_get(first + 4)?,
        restore_auto_extend: row.try_get(first + 5)?,
    })
}

fn contract_row(row: &SqliteRow, with_due: bool) -> Result<ContractRow, sqlx::Error> {
    Ok(ContractRow {
        id: row.try_get(0)?,
        reference: row.try_get(1)?,
        version: row.try_get(2)?,
        customer: row.try_get(3)?,
        status: row.try_get(4)?,
        time_zone: row.try_get(5)?,
        start_date: row.try_get(6)?,
        end_date: row.try_get(7)?,
        initial_term: row.try_get(8)?,
        original_end_date: row.try_get(9)?,
        minimum_term_end: row.try_get(10)?,
        notice_period: row.try_get(11)?,
        cancellation_window: row.try_get(12)?,
        auto_extend: row.try_get(13)?,
        extension_term: row.try_get(14)?,
        proration: row.try_get(15)?,
        end_reason: row.try_get(16)?,
        end_notes: row.try_get(17)?,
        cancellation: cancellation_columns(row, 18)?,
        cancellation_date: row.try_get(24)?,
        latest_cancellation_date: row.try_get(25)?,
        has_children: row.try_get(26)?,
        due: if with_due {
            row.try_get::<Option<String>, _>(27)?
                .as_deref()
                .and_then(parse_date)
        } else {
            None
        },
    })
}

// Writes go in batches: the rows of a whole batch travel as one JSON array bound to one
// parameter and [`ROWS`] turns it back into rows inside SQLite, so a batch of a thousand
// contracts costs a handful of statements instead of several per contract (each statement
// is a round trip to the connection's worker thread). Element `i` of a row is read with
// `u.v ->> i`, which gives back exactly the value a bind would have given: TEXT, INTEGER
// (JSON true/false become 1/0, as bound booleans are), or NULL.

/// The rows of the JSON array `?1` as `u(k, v)`: `k` the row's index, `v` the row in SQLite's
/// binary JSON form. Materialised, so each row is converted once; otherwise every `u.v ->> i`
/// would render the row as text and parse it again.
const ROWS: &str = "WITH u AS MATERIALIZED (SELECT key AS k, jsonb(value) AS v FROM json_each(?1))";

const LINE_COLUMNS: [&str; 19] = [
    "contract_id",
    "position",
    "ref",
    "description",
    "kind",
    "billable",
    "start_date",
    "end_date",
    "status",
    "amount_minor",
    "currency",
    "billing_period",
    "auto_extend",
    "cancellation_received_on",
    "cancellation_end_date",
    "cancellation_reason",
    "cancellation_notes",
    "cancellation_final_invoice",
    "cancellation_restore_auto_extend",
];

const SCHEDULE_COLUMNS: [&str; 8] = [
    "contract_id",
    "position",
    "line_ref",
    "period_start",
    "period_end",
    "amount_minor",
    "status",
    "document",
];

const DOCUMENT_COLUMNS: [&str; 8] = [
    "contract_id",
    "position",
    "ref",
    "kind",
    "status",
    "consolidated",
    "amount_minor",
    "currency",
];

const REFERENCE_COLUMNS: [&str; 4] = ["contract_id", "position", "ref", "status"];

/// The columns of each child table, in the order of [`ChildTable::ALL`].
const CHILD_COLUMNS: [&[&str]; 5] = [
    &LINE_COLUMNS,
    &SCHEDULE_COLUMNS,
    &DOCUMENT_COLUMNS,
    &REFERENCE_COLUMNS,
    &REFERENCE_COLUMNS,
];

/// `u.v ->> first, …` for `count` elements.
fn json_fields(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|index| format!("u.v ->> {index}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The import insert: each element of `?1` is `[ref, every column…]`, in array order; refs
/// that exist are skipped (the caller turns a skipped ref into
/// [`StorageError::DuplicateReference`]).
static INSERT_CONTRACTS_SQL: LazyLock<String> = LazyLock::new(|| {
    let names: Vec<&str> = ContractColumn::ALL.iter().map(|c| c.name()).collect();
    format!(
        "{ROWS} INSERT INTO contracts (ref, {}, updated_at_ms) SELECT {}, ?2 \
         FROM u WHERE true ORDER BY u.k ON CONFLICT (ref) DO NOTHING RETURNING id, ref",
        names.join(", "),
        json_fields(0, names.len() + 1),
    )
});

/// The guarded update of a round of changes setting the columns of `parts`: each element of
/// `?1` is `[id, expected version, ref, those columns…]`; a row changes only while it still
/// has the expected version (and ref); the ids of the rows that changed come back.
fn update_contracts_sql(parts: ChangedParts) -> String {
    let assignments: String = parts
        .columns()
        .enumerate()
        .map(|(index, column)| format!("{} = u.v ->> {}, ", column.name(), index + 3))
        .collect();
    format!(
        "{ROWS} UPDATE contracts SET version = version + 1, {assignments}updated_at_ms = ?2 \
         FROM u WHERE contracts.id = u.v ->> 0 AND contracts.version = u.v ->> 1 \
         AND contracts.ref = u.v ->> 2 RETURNING contracts.id"
    )
}

/// Per child table: the insert of one row per element of `?1`.
static INSERT_CHILDREN_SQL: LazyLock<Vec<String>> = LazyLock::new(|| {
    ChildTable::ALL
        .iter()
        .zip(CHILD_COLUMNS)
        .map(|(table, columns)| {
            format!(
                "{ROWS} INSERT INTO {} ({}) SELECT {} FROM u",
                table.name(),
                columns.join(", "),
                json_fields(0, columns.len())
            )
        })
        .collect()
});

/// Events in array order, each unless its contract has its transition key already; the ones
/// inserted come back.
static INSERT_EVENTS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{ROWS} INSERT INTO contract_events (contract_id, contract_ref, kind, effective_on, \
         line_ref, details, transition_key, run_id, recorded_at_ms) SELECT {}, ?2, ?3 \
         FROM u WHERE true ORDER BY u.k ON CONFLICT (contract_id, transition_key) DO NOTHING \
         RETURNING contract_id, transition_key",
        json_fields(0, 7)
    )
});

/// Per child table: the delete of the children of the contract ids in `?1`.
static DELETE_CHILDREN_SQL: LazyLock<Vec<String>> = LazyLock::new(|| {
    ChildTable::ALL
        .iter()
        .map(|table| {
            format!(
                "DELETE FROM {} WHERE contract_id IN (SELECT value FROM json_each(?1))",
                table.name()
            )
        })
        .collect()
});

fn date_json(date: Option<NaiveDate>) -> Value {
    date.map(format_date).into()
}

/// Append the six cancellation columns.
fn push_cancellation(row: &mut Vec<Value>, cancellation: Option<&Cancellation>) {
    row.push(cancellation.map(|c| format_date(c.received_on)).into());
    row.push(cancellation.map(|c| format_date(c.end_date)).into());
    row.push(cancellation.and_then(|c| c.reason.clone()).into());
    row.push(cancellation.and_then(|c| c.notes.clone()).into());
    row.push(cancellation.map(|c| c.final_invoice).into());
    row.push(cancellation.map(|c| c.restore_auto_extend).into());
}

/// A column value as an element of a row array.
fn column_json(value: ColumnValue<'_>) -> Value {
    match value {
        ColumnValue::Text(text) => text.map(Cow::into_owned).into(),
        ColumnValue::Date(date) => date_json(date),
        ColumnValue::Bool(flag) => flag.into(),
    }
}

/// Append the values of `columns` for a contract.
fn push_columns(
    row: &mut Vec<Value>,
    values: &ContractValues<'_>,
    columns: impl Iterator<Item = ContractColumn>,
) {
    row.extend(columns.map(|column| column_json(column.value(values))));
}

/// The children of many contracts, one row array per child, by table.
#[derive(Default)]
struct ChildRows {
    /// Rows of each table of [`ChildTable::ALL`], in that order.
    tables: [Vec<Value>; 5],
    /// Per table, the contracts whose rows there are replaced (deleted first).
    replaced: [Vec<i64>; 5],
}

impl ChildRows {
    /// The rows of the child tables in `parts` of a contract, replacing what it had there.
    fn push(&mut self, contract_id: i64, contract: &Contract, parts: ChangedParts) {
        for table in parts.tables() {
            self.replaced[table as usize].push(contract_id);
        }
        self.push_new(contract_id, contract, parts);
    }

    /// The rows of the child tables in `parts` of a contract that has none there yet.
    fn push_new(&mut self, contract_id: i64, contract: &Contract, parts: ChangedParts) {
        let [lines, schedules, documents, renewals, change_requests] = &mut self.tables;
        let lines_rows = parts.rows_of(ChildTable::Lines, &contract.lines);
        let schedule_rows = parts.rows_of(ChildTable::Schedules, &contract.schedules);
        let document_rows = parts.rows_of(ChildTable::Documents, &contract.documents);
        let renewal_rows = parts.rows_of(ChildTable::Renewals, &contract.renewals);
        let request_rows = parts.rows_of(ChildTable::ChangeRequests, &contract.change_requests);
        for (position, line) in lines_rows.iter().enumerate() {
            let mut row: Vec<Value> = vec![
                contract_id.into(),
                (position as i64).into(),
                line.reference.clone().into(),
                line.description.clone().into(),
                line.kind.as_str().into(),
                line.billable.into(),
                format_date(line.start_date).into(),
                date_json(line.end_date),
                line.status.as_str().into(),
                line.amount_minor.into(),
                line.currency.clone().into(),
                line.billing_period.map(|period| period.to_string()).into(),
                line.auto_extend.into(),
            ];
            push_cancellation(&mut row, line.cancellation.as_ref());
            lines.push(Value::Array(row));
        }
        for (position, schedule) in schedule_rows.iter().enumerate() {
            schedules.push(Value::Array(vec![
                contract_id.into(),
                (position as i64).into(),
                schedule.line_ref.clone().into(),
                format_date(schedule.period_start).into(),
                format_date(schedule.period_end).into(),
                schedule.amount_minor.into(),
                schedule.status.as_str().into(),
                schedule.document.clone().into(),
            ]));
        }
        for (position, document) in document_rows.iter().enumerate() {
            documents.push(Value::Array(vec![
                contract_id.into(),
                (position as i64).into(),
                document.reference.clone().into(),
                document.kind.as_str().into(),
                document.status.as_str().into(),
                document.consolidated.into(),
                document.amount_minor.into(),
                document.currency.clone().into(),
            ]));
        }
        for (position, renewal) in renewal_rows.iter().enumerate() {
            renewals.push(Value::Array(vec![
                contract_id.into(),
                (position as i64).into(),
                renewal.reference.clone().into(),
                renewal.status.as_str().into(),
            ]));
        }
        for (position, request) in request_rows.iter().enumerate() {
            change_requests.push(Value::Array(vec![
                contract_id.into(),
                (position as i64).into(),
                request.reference.clone().into(),
                request.status.as_str().into(),
            ]));
        }
    }

    /// Delete the replaced rows, then insert the new ones.
    async fn write(self, tx: &mut Transaction<'static, Sqlite>) -> Result<(), StorageError> {
        for (ids, sql) in self.replaced.iter().zip(DELETE_CHILDREN_SQL.iter()) {
            if !ids.is_empty() {
                sqlx::query(sql)
                    .bind(Value::from(ids.clone()).to_string())
                    .execute(&mut **tx)
                    .await?;
            }
        }
        for (rows, sql) in self.tables.into_iter().zip(INSERT_CHILDREN_SQL.iter()) {
            if !rows.is_empty() {
                sqlx::query(sql)
                    .bind(Value::Array(rows).to_string())
                    .execute(&mut **tx)
                    .await?;
            }
        }
        Ok(())
    }
}

/// Events of many contracts, for one insert.
#[derive(Default)]
struct EventRows {
    /// `[contract id, contract ref, kind, effective on, line ref, details, transition key]`.
    rows: Vec<Value>,
    /// What was sent, in order: (contract id, contract ref, transition key).
    sent: Vec<(i64, String, String)>,
}

impl EventRows {
    fn push(
        &mut self,
        contract_id: i64,
        contract_ref: &str,
        new_version: i64,
        events: &[ContractEvent],
    ) {
        for (index, event) in events.iter().enumerate() {
            let key = transition_key(event, new_version, index);
            self.rows.push(Value::Array(vec![
                contract_id.into(),
                contract_ref.into(),
                event.kind.as_str().into(),
                format_date(event.effective_on).into(),
                event.line_ref.clone().into(),
                event.details.to_string().into(),
                key.clone().into(),
            ]));
            self.sent.push((contract_id, contract_ref.to_string(), key));
        }
    }

    /// Insert every event, in order; a transition key a contract already has is refused with
    /// [`StorageError::DuplicateTransition`] naming the first such event.
    async fn insert(
        self,
        tx: &mut Transaction<'static, Sqlite>,
        run_id: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let rows = sqlx::query(&INSERT_EVENTS_SQL)
            .bind(Value::Array(self.rows).to_string())
            .bind(run_id)
            .bind(now_ms)
            .fetch_all(&mut **tx)
            .await?;
        if rows.len() == self.sent.len() {
            return Ok(());
        }
        let mut inserted = HashSet::with_capacity(rows.len());
        for row in &rows {
            inserted.insert((row.try_get::<i64, _>(0)?, row.try_get::<String, _>(1)?));
        }
        let missing = self
            .sent
            .into_iter()
            .find(|(id, _, key)| !inserted.remove(&(*id, key.clone())));
        let (contract_ref, transition_key) = match missing {
            Some((_, reference, key)) => (reference, key),
            None => (String::new(), String::new()),
        };
        Err(StorageError::DuplicateTransition {
            contract_ref,
            transition_key,
        })
    }
}

/// An import into SQLite: the write transaction, held until commit.
pub struct SqliteImport {
    /// Everything the import inserts; rolled back when dropped.
    tx: Transaction<'static, Sqlite>,
}

impl ContractImport for SqliteImport {
    async fn insert(
        &mut self,
        contracts: &[NewContract],
        now_ms: i64,
    ) -> Result<Vec<String>, StorageError> {
        let mut skipped = Vec::new();
        let mut zones = BTreeSet::new();
        for chunk in contracts.chunks(IMPORT_CHUNK) {
            let rows: Vec<Value> = chunk
                .iter()
                .map(|new| {
                    let mut row = Vec::with_capacity(ContractColumn::ALL.len() + 1);
                    row.push(new.contract.reference.clone().into());
                    push_columns(
                        &mut row,
                        &ContractValues::of(&new.contract),
                        ContractColumn::ALL.iter().copied(),
                    );
                    Value::Array(row)
                })
                .collect();
            let inserted = sqlx::query(&INSERT_CONTRACTS_SQL)
                .bind(Value::Array(rows).to_string())
                .bind(now_ms)
                .fetch_all(&mut *self.tx)
                .await?;
            let mut ids = HashMap::with_capacity(inserted.len());
            for row in &inserted {
                ids.insert(row.try_get::<String, _>(1)?, row.try_get::<i64, _>(0)?);
            }
            let mut children = ChildRows::default();
            let mut events = EventRows::default();
            for new in chunk {
                // A ref that exists, or that came twice (only its first occurrence was
                // inserted), was skipped.
                let Some(id) = ids.remove(&new.contract.reference) else {
                    skipped.push(new.contract.reference.clone());
                    continue;
                };
                children.push_new(id, &new.contract, ChangedParts::everything());
                let event = imported_event(&new.contract, new.imported_on);
                events.push(id, &new.contract.reference, 1, &[event]);
                zones.insert(new.contract.time_zone.name());
            }
            children.write(&mut self.tx).await?;
            events.insert(&mut self.tx, None, now_ms).await?;
        }
        if !zones.is_empty() {
            sqlx::query(
                "INSERT INTO contract_zones (time_zone) SELECT value FROM json_each(?1) \
                 WHERE true ON CONFLICT DO NOTHING",
            )
            .bind(Value::from(zones.into_iter().collect::<Vec<_>>()).to_string())
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(skipped)
    }

    async fn commit(self) -> Result<(), StorageError> {
        Ok(self.tx.commit().await?)
    }
}

fn run_key(row: &SqliteRow, first: usize) -> Result<Option<RunKey>, sqlx::Error> {
    let job: String = row.try_get(first)?;
    let zone: String = row.try_get(first + 1)?;
    let date: String = row.try_get(first + 2)?;
    Ok(match (Job::parse(&job), parse_date(&date)) {
        (Some(job), Some(business_date)) => Some(RunKey {
            job,
            zone,
            business_date,
        }),
        _ => None,
    })
}

impl ContractStore for SqliteStore {
    async fn migrate(&self) -> Result<(), StorageError> {
        migrator().run(&self.pool).await?;
        Ok(())
    }

    async fn readiness(&self) -> Result<bool, StorageError> {
        let applied: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_one(&self.pool)
        .await?;
        if applied == 0 {
            return Ok(false);
        }
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await?;
        Ok(all_applied(&migrator(), &versions))
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

    async fn load_contract(&self, reference: &str) -> Result<Option<LoadedContract>, StorageError> {
        let rows = sqlx::query(&format!(
            "SELECT {CONTRACT_COLUMNS} FROM contracts WHERE ref = ?"
        ))
        .bind(reference)
        .fetch_all(&self.pool)
        .await?;
        Ok(Self::assemble_rows(&self.pool, rows, false)
            .await?
            .into_iter()
            .next())
    }

    async fn contracts_page(
        &self,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<LoadedContract>, StorageError> {
        let rows = sqlx::query(&format!(
            "SELECT {CONTRACT_COLUMNS} FROM contracts WHERE id > ? ORDER BY id LIMIT ?"
        ))
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Self::assemble_rows(&self.pool, rows, false).await
    }

    async fn events(&self, reference: &str) -> Result<Vec<StoredEvent>, StorageError> {
        let rows = sqlx::query(
            "SELECT kind, effective_on, line_ref, details, transition_key, run_id, recorded_at_ms \
             FROM contract_events WHERE contract_id IN (SELECT id FROM contracts WHERE ref = ?1) \
             AND contract_ref = ?1 ORDER BY id",
        )
        .bind(reference)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let effective_on: String = row.try_get(1)?;
                let details: String = row.try_get(3)?;
                Ok(StoredEvent {
                    kind: row.try_get(0)?,
                    effective_on: parse_date(&effective_on).unwrap_or_default(),
                    line_ref: row.try_get(2)?,
                    details: serde_json::from_str(&details)
                        .unwrap_or(serde_json::Value::String(details)),
                    transition_key: row.try_get(4)?,
                    run_id: row.try_get(5)?,
                    recorded_at_ms: row.try_get(6)?,
                })
            })
            .collect()
    }

    fn parallel_writers(&self) -> usize {
        1
    }

    async fn zones(&self) -> Result<Vec<String>, StorageError> {
        Ok(
            sqlx::query_scalar("SELECT time_zone FROM contract_zones ORDER BY time_zone")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn succeeded_runs_since(&self, since: NaiveDate) -> Result<Vec<RunKey>, StorageError> {
        let rows = sqlx::query(
            "SELECT job, zone, business_date FROM job_runs \
             WHERE business_date >= ? AND status = 'succeeded'",
        )
        .bind(format_date(since))
        .fetch_all(&self.pool)
        .await?;
        let mut keys = Vec::with_capacity(rows.len());
        for row in &rows {
            keys.extend(run_key(row, 0)?);
        }
        Ok(keys)
    }

    async fn claim_run(
        &self,
        key: &RunKey,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<RunClaim>, StorageError> {
        let run_id = uuid::Uuid::new_v4().to_string();
        let mut tx = self.write().await?;
        let row = sqlx::query(
            "INSERT INTO job_runs (job, zone, business_date, run_id, owner, lease_until_ms, status, \
             started_at_ms) VALUES (?, ?, ?, ?, ?, ?, 'running', ?) \
             ON CONFLICT (job, zone, business_date) DO UPDATE SET run_id = excluded.run_id, \
             owner = excluded.owner, lease_until_ms = excluded.lease_until_ms, status = 'running', \
             attempts = job_runs.attempts + 1, error = NULL, finished_at_ms = NULL \
             WHERE job_runs.status <> 'succeeded' AND job_runs.lease_until_ms < ? \
             RETURNING id, run_id, cursor_due, cursor_id, examined, changed, skipped, attempts",
        )
        .bind(key.job.as_str())
        .bind(&key.zone)
        .bind(format_date(key.business_date))
        .bind(&run_id)
        .bind(owner)
        .bind(now_ms + lease_ms)
        .bind(now_ms)
        .bind(now_ms)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let Some(row) = row else { return Ok(None) };
        let cursor_due: Option<String> = row.try_get(2)?;
        let cursor_id: Option<i64> = row.try_get(3)?;
        Ok(Some(RunClaim {
            row_id: row.try_get(0)?,
            run_id: row.try_get(1)?,
            key: key.clone(),
            cursor: match (cursor_due.as_deref().and_then(parse_date), cursor_id) {
                (Some(due), Some(id)) => Some(BatchCursor { due, id }),
                _ => None,
            },
            counts: RunCounts {
                examined: row.try_get(4)?,
                changed: row.try_get(5)?,
                skipped: row.try_get(6)?,
            },
            attempts: row.try_get(7)?,
        }))
    }

    async fn due_batch(
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
            "SELECT {CONTRACT_COLUMNS}, {due} FROM contracts \
             WHERE time_zone = ? AND {due} IS NOT NULL AND {due} < ? {keyset} \
             ORDER BY {due}, id LIMIT ?"
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
        Self::assemble_rows(&self.writer, rows, true).await
    }

    async fn commit_batch(
        &self,
        progress: Option<BatchProgress<'_>>,
        changes: &[ContractChange],
        now_ms: i64,
    ) -> Result<CommitOutcome, StorageError> {
        let mut applied = vec![false; changes.len()];
        let mut tx = self.write().await?;
        for round in rounds(changes) {
            // One statement for the round, setting every column any of its changes changes
            // (a change that leaves such a column alone writes back the value it read).
            let columns = round.iter().fold(ChangedParts::default(), |all, &index| {
                all.union(changes[index].parts)
            });
            let rows: Vec<Value> = round
                .iter()
                .map(|&index| {
                    let change = &changes[index];
                    let mut row = Vec::with_capacity(3 + ContractColumn::ALL.len());
                    row.push(change.id.into());
                    row.push(change.expected_version.into());
                    row.push(change.contract.reference.clone().into());
                    push_columns(
                        &mut row,
                        &ContractValues::of(&change.contract),
                        columns.columns(),
                    );
                    Value::Array(row)
                })
                .collect();
            let updated: HashSet<i64> =
                sqlx::query_scalar::<_, i64>(&update_contracts_sql(columns))
                    .bind(Value::Array(rows).to_string())
                    .bind(now_ms)
                    .fetch_all(&mut *tx)
                    .await?
                    .into_iter()
                    .collect();
            let mut children = ChildRows::default();
            for &index in &round {
                let change = &changes[index];
                if updated.contains(&change.id) {
                    applied[index] = true;
                    children.push(change.id, &change.contract, change.parts);
                }
            }
            children.write(&mut tx).await?;
        }
        let mut events = EventRows::default();
        let outcome = outcome(changes, &applied, |change| {
            events.push(
                change.id,
                &change.contract.reference,
                change.expected_version + 1,
                &change.events,
            );
        });
        let run_id = progress.as_ref().map(|p| p.claim.run_id.as_str());
        events.insert(&mut tx, run_id, now_ms).await?;
        if let Some(progress) = progress {
            let advanced = sqlx::query(
                "UPDATE job_runs SET cursor_due = ?, cursor_id = ?, examined = ?, changed = ?, \
                 skipped = ?, batches = batches + 1, lease_until_ms = ? \
                 WHERE id = ? AND run_id = ? AND status = 'running'",
            )
            .bind(progress.cursor.map(|cursor| format_date(cursor.due)))
            .bind(progress.cursor.map(|cursor| cursor.id))
            .bind(progress.counts.examined)
            .bind(progress.counts.changed)
            .bind(progress.counts.skipped)
            .bind(progress.lease_until_ms)
            .bind(progress.claim.row_id)
            .bind(&progress.claim.run_id)
            .execute(&mut *tx)
            .await?;
            if advanced.rows_affected() == 0 {
                return Err(StorageError::LeaseLost {
                    run_id: progress.claim.run_id.clone(),
                });
            }
        }
        tx.commit().await?;
        Ok(outcome)
    }

    async fn finish_run(
        &self,
        claim: &RunClaim,
        status: RunStatus,
        counts: RunCounts,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let (lease_until_ms, finished_at_ms) = finish_timing(status, now_ms);
        let mut tx = self.write().await?;
        let updated = sqlx::query(
            "UPDATE job_runs SET status = ?, examined = ?, changed = ?, skipped = ?, error = ?, \
             finished_at_ms = ?, lease_until_ms = ? WHERE id = ? AND run_id = ?",
        )
        .bind(status.as_str())
        .bind(counts.examined)
        .bind(counts.changed)
        .bind(counts.skipped)
        .bind(error)
        .bind(finished_at_ms)
        .bind(lease_until_ms)
        .bind(claim.row_id)
        .bind(&claim.run_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if updated.rows_affected() == 0 {
            return Err(StorageError::LeaseLost {
                run_id: claim.run_id.clone(),
            });
        }
        Ok(())
    }

    async fn runs(&self, limit: u32) -> Result<Vec<RunRecord>, StorageError> {
        let rows = sqlx::query(
            "SELECT job, zone, business_date, run_id, owner, status, attempts, batches, examined, \
             changed, skipped, error, started_at_ms, finished_at_ms FROM job_runs \
             ORDER BY business_date DESC, zone, id DESC LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut records = Vec::with_capacity(rows.len());
        for row in &rows {
            let Some(key) = run_key(row, 0)? else {
                continue;
            };
            let status: String = row.try_get(5)?;
            records.push(RunRecord {
                key,
                run_id: row.try_get(3)?,
                owner: row.try_get(4)?,
                status: run_status(&status),
                attempts: row.try_get(6)?,
                batches: row.try_get(7)?,
                counts: RunCounts {
                    examined: row.try_get(8)?,
                    changed: row.try_get(9)?,
                    skipped: row.try_get(10)?,
                },
                error: row.try_get(11)?,
                started_at_ms: row.try_get(12)?,
                finished_at_ms: row.try_get(13)?,
            });
        }
        Ok(records)
    }

    async fn count_by_status(&self) -> Result<Vec<(String, i64)>, StorageError> {
        let rows =
            sqlx::query("SELECT status, COUNT(*) FROM contracts GROUP BY status ORDER BY status")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }
}
