//! PostgreSQL: the production database, shared by several replicas. Dates are `date`.
//!
//! Round trips are what costs here, so every write works on whole batches: one `UPDATE … FROM
//! unnest(…)` guards and applies all changes of a batch, children and events are written with
//! one `unnest` insert each, and the import inserts contracts a thousand at a time. Semantics
//! are those of the SQLite store, checked by the same conformance suite.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use chrono::NaiveDate;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::Connection as _;
use sqlx::{PgPool, Postgres, Row, Transaction};

use super::rows::{
    assemble, due_column, CancellationColumns, ChangedParts, ChildTable, Children, ColumnType,
    ColumnValue, ContractColumn, ContractRow, ContractValues, LineRecordParts, LineRow,
    CONTRACT_COLUMNS,
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
use crate::contract::record::{format_date, DocumentRecord, ReferenceRecord, ScheduleRecord};
use crate::contract::{Cancellation, Contract, ContractEvent};
use crate::lifecycle::Job;

type Query<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

/// The PostgreSQL migrations, embedded in the binary.
fn migrator() -> Migrator {
    migrations!("postgres")
}

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

impl PostgresStore {
    /// Connect to the database (it must exist; [`ContractStore::migrate`] creates the tables).
    pub async fn connect(settings: &PostgresSettings) -> Result<PostgresStore, StorageError> {
        let options = PgConnectOptions::from_str(&settings.url)
            .map_err(|error| StorageError::Url(error.to_string()))?;
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(settings.connect_timeout)
            .connect_with(options.clone())
            .await;
        match pool {
            Ok(pool) => Ok(PostgresStore { pool }),
            // The pool only says it timed out; one direct attempt tells the operator why
            // (connection refused, authentication failed, no such database…).
            Err(sqlx::Error::PoolTimedOut) => {
                match tokio::time::timeout(
                    settings.connect_timeout,
                    sqlx::PgConnection::connect_with(&options),
                )
                .await
                {
                    Ok(Err(cause)) => Err(cause.into()),
                    _ => Err(sqlx::Error::PoolTimedOut.into()),
                }
            }
            Err(error) => Err(error.into()),
        }
    }

    /// A store on a pool opened elsewhere (tests, tools).
    pub fn from_pool(pool: PgPool) -> PostgresStore {
        PostgresStore { pool }
    }

    /// Close every connection of the pool (e.g. before the database is dropped).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn load_children(&self, rows: &[ContractRow]) -> Result<Children, StorageError> {
        let ids: Vec<i64> = rows
            .iter()
            .filter(|row| row.has_children)
            .map(|row| row.id)
            .collect();
        let mut children = Children::default();
        if ids.is_empty() {
            return Ok(children);
        }
        let lines = sqlx::query(
            "SELECT contract_id, ref, description, kind, billable, start_date, end_date, status, \
             amount_minor, currency, billing_period, auto_extend, cancellation_received_on, \
             cancellation_end_date, cancellation_reason, cancellation_notes, \
             cancellation_final_invoice, cancellation_restore_auto_extend \
             FROM contract_lines WHERE contract_id = ANY($1) ORDER BY contract_id, position",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        for row in lines {
            children.add_line(LineRow {
                contract_id: row.try_get(0)?,
                record: LineRecordParts {
                    reference: row.try_get(1)?,
                    description: row.try_get(2)?,
                    kind: row.try_get(3)?,
                    billable: row.try_get(4)?,
                    start_date: format_date(row.try_get(5)?),
                    end_date: date_text(&row, 6)?,
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
             FROM billing_schedules WHERE contract_id = ANY($1) ORDER BY contract_id, position",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        for row in schedules {
            children
                .schedules
                .entry(row.try_get(0)?)
                .or_default()
                .push(ScheduleRecord {
                    line_ref: row.try_get(1)?,
                    period_start: format_date(row.try_get(2)?),
                    period_end: format_date(row.try_get(3)?),
                    amount_minor: row.try_get(4)?,
                    status: row.try_get(5)?,
                    document: row.try_get(6)?,
                });
        }
        let documents = sqlx::query(
            "SELECT contract_id, ref, kind, status, consolidated, amount_minor, currency \
             FROM billing_documents WHERE contract_id = ANY($1) ORDER BY contract_id, position",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
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
        for (sql, target) in [
            (
                "SELECT contract_id, ref, status FROM renewals \
                 WHERE contract_id = ANY($1) ORDER BY contract_id, position",
                &mut children.renewals,
            ),
            (
                "SELECT contract_id, ref, status FROM change_requests \
                 WHERE contract_id = ANY($1) ORDER BY contract_id, position",
                &mut children.change_requests,
            ),
        ] {
            let rows = sqlx::query(sql).bind(&ids).fetch_all(&self.pool).await?;
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
        &self,
        rows: Vec<PgRow>,
        with_due: bool,
    ) -> Result<Vec<LoadedContract>, StorageError> {
        let rows = rows
            .iter()
            .map(|row| contract_row(row, with_due))
            .collect::<Result<Vec<_>, _>>()?;
        let mut children = self.load_children(&rows).await?;
        Ok(rows
            .into_iter()
            .map(|row| assemble(row, &mut children))
            .collect())
    }
}

/// An optional `date` column as the `YYYY-MM-DD` text rows.rs parses.
fn date_text(row: &PgRow, index: usize) -> Result<Option<String>, sqlx::Error> {
    Ok(row.try_get::<Option<NaiveDate>, _>(index)?.map(format_date))
}

fn cancellation_columns(row: &PgRow, first: usize) -> Result<CancellationColumns, sqlx::Error> {
    Ok(CancellationColumns {
        received_on: date_text(row, first)?,
        end_date: date_text(row, first + 1)?,
        reason: row.try_get(first + 2)?,
        notes: row.try_get(first + 3)?,
        final_invoice: row.try_get(first + 4)?,
        restore_auto_extend: row.try_get(first + 5)?,
    })
}

fn contract_row(row: &PgRow, with_due: bool) -> Result<ContractRow, sqlx::Error> {
    Ok(ContractRow {
        id: row.try_get(0)?,
        reference: row.try_get(1)?,
        version: row.try_get(2)?,
        customer: row.try_get(3)?,
        status: row.try_get(4)?,
        time_zone: row.try_get(5)?,
        start_date: format_date(row.try_get(6)?),
        end_date: date_text(row, 7)?,
        initial_term: row.try_get(8)?,
        original_end_date: date_text(row, 9)?,
        minimum_term_end: date_text(row, 10)?,
        notice_period: row.try_get(11)?,
        cancellation_window: row.try_get(12)?,
        auto_extend: row.try_get(13)?,
        extension_term: row.try_get(14)?,
        proration: row.try_get(15)?,
        end_reason: row.try_get(16)?,
        end_notes: row.try_get(17)?,
        cancellation: cancellation_columns(row, 18)?,
        cancellation_date: date_text(row, 24)?,
        latest_cancellation_date: date_text(row, 25)?,
        has_children: row.try_get(26)?,
        due: if with_due { row.try_get(27)? } else { None },
    })
}

fn run_key(row: &PgRow, first: usize) -> Result<Option<RunKey>, sqlx::Error> {
    let job: String = row.try_get(first)?;
    let zone: String = row.try_get(first + 1)?;
    let business_date: NaiveDate = row.try_get(first + 2)?;
    Ok(Job::parse(&job).map(|job| RunKey {
        job,
        zone,
        business_date,
    }))
}

/// `$1::t1[], $2::t2[], …` over `columns`, numbering parameters from `first`.
fn arrays(columns: &[(&str, &str)], first: usize) -> String {
    columns
        .iter()
        .enumerate()
        .map(|(index, (_, sql_type))| format!("${}::{sql_type}[]", first + index))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `unnest($1::t1[], $2::t2[], …) AS alias(c1, c2, …)` over `columns`, numbering parameters
/// from `first`.
fn unnest(columns: &[(&str, &str)], first: usize, alias: &str) -> String {
    format!(
        "unnest({}) AS {alias}({})",
        arrays(columns, first),
        names(columns)
    )
}

fn names(columns: &[(&str, &str)]) -> String {
    columns
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The six pending-cancellation columns, one array each (contract or line).
#[derive(Default)]
struct CancellationArrays {
    /// `cancellation_received_on`.
    received_on: Vec<Option<NaiveDate>>,
    /// `cancellation_end_date`.
    end_date: Vec<Option<NaiveDate>>,
    /// `cancellation_reason`.
    reason: Vec<Option<String>>,
    /// `cancellation_notes`.
    notes: Vec<Option<String>>,
    /// `cancellation_final_invoice`.
    final_invoice: Vec<Option<bool>>,
    /// `cancellation_restore_auto_extend`.
    restore_auto_extend: Vec<Option<bool>>,
}

impl CancellationArrays {
    fn push(&mut self, cancellation: Option<&Cancellation>) {
        self.received_on.push(cancellation.map(|c| c.received_on));
        self.end_date.push(cancellation.map(|c| c.end_date));
        self.reason
            .push(cancellation.and_then(|c| c.reason.clone()));
        self.notes.push(cancellation.and_then(|c| c.notes.clone()));
        self.final_invoice
            .push(cancellation.map(|c| c.final_invoice));
        self.restore_auto_extend
            .push(cancellation.map(|c| c.restore_auto_extend));
    }

    fn bind<'q>(self, query: Query<'q>) -> Query<'q> {
        query
            .bind(self.received_on)
            .bind(self.end_date)
            .bind(self.reason)
            .bind(self.notes)
            .bind(self.final_invoice)
            .bind(self.restore_auto_extend)
    }
}

/// The PostgreSQL type of a contract column.
fn pg_type(column: ContractColumn) -> &'static str {
    match column.sql_type() {
        ColumnType::Text => "text",
        ColumnType::Date => "date",
        ColumnType::Bool => "boolean",
    }
}

/// One contract column's values for many contracts, as one typed array.
enum ColumnArray {
    Text(Vec<Option<String>>),
    Date(Vec<Option<NaiveDate>>),
    Bool(Vec<Option<bool>>),
}

impl ColumnArray {
    fn new(column: ContractColumn, capacity: usize) -> ColumnArray {
        match column.sql_type() {
            ColumnType::Text => ColumnArray::Text(Vec::with_capacity(capacity)),
            ColumnType::Date => ColumnArray::Date(Vec::with_capacity(capacity)),
            ColumnType::Bool => ColumnArray::Bool(Vec::with_capacity(capacity)),
        }
    }

    fn push(&mut self, value: ColumnValue<'_>) {
        match (self, value) {
            (ColumnArray::Text(values), ColumnValue::Text(text)) => {
                values.push(text.map(Cow::into_owned));
            }
            (ColumnArray::Date(values), ColumnValue::Date(date)) => values.push(date),
            (ColumnArray::Bool(values), ColumnValue::Bool(flag)) => values.push(flag),
            // A column's values all have its type (ContractColumn::value).
            (array, _) => array.push_null(),
        }
    }

    fn push_null(&mut self) {
        match self {
            ColumnArray::Text(values) => values.push(None),
            ColumnArray::Date(values) => values.push(None),
            ColumnArray::Bool(values) => values.push(None),
        }
    }

    fn bind<'q>(self, query: Query<'q>) -> Query<'q> {
        match self {
            ColumnArray::Text(values) => query.bind(values),
            ColumnArray::Date(values) => query.bind(values),
            ColumnArray::Bool(values) => query.bind(values),
        }
    }
}

/// Values of some contract columns for many contracts, one array per column (`unnest` turns
/// them back into rows), after the contracts' refs.
struct ContractArrays {
    /// `ref`: the conflict target of the import and part of the update guard.
    reference: Vec<String>,
    /// The columns written, each with its values.
    columns: Vec<(ContractColumn, ColumnArray)>,
}

impl ContractArrays {
    fn new(columns: impl Iterator<Item = ContractColumn>, capacity: usize) -> ContractArrays {
        ContractArrays {
            reference: Vec::with_capacity(capacity),
            columns: columns
                .map(|column| (column, ColumnArray::new(column, capacity)))
                .collect(),
        }
    }

    fn push(&mut self, values: &ContractValues<'_>) {
        self.reference.push(values.contract.reference.clone());
        for (column, array) in &mut self.columns {
            array.push(column.value(values));
        }
    }

    /// `ref`, then each column, with its type, as the statements list them.
    fn typed_names(&self) -> Vec<(&'static str, &'static str)> {
        std::iter::once(("ref", "text"))
            .chain(
                self.columns
                    .iter()
                    .map(|(column, _)| (column.name(), pg_type(*column))),
            )
            .collect()
    }

    /// Bind `ref` and then the columns, in that order.
    fn bind<'q>(self, query: Query<'q>) -> Query<'q> {
        let query = query.bind(self.reference);
        self.columns
            .into_iter()
            .fold(query, |query, (_, array)| array.bind(query))
    }
}

/// The import insert of `arrays` (every column): one row per array element, in input order,
/// refs that exist skipped (the caller turns a skipped ref into
/// [`StorageError::DuplicateReference`]).
fn insert_contracts_sql(values: &ContractArrays) -> String {
    let columns = values.typed_names();
    let mut numbered = columns.clone();
    numbered.push(("ord", ""));
    format!(
        "INSERT INTO contracts ({names}, updated_at_ms) \
         SELECT {names}, ${now}::bigint FROM unnest({arrays}) WITH ORDINALITY AS u({numbered}) \
         ORDER BY ord ON CONFLICT (ref) DO NOTHING RETURNING id, ref",
        names = names(&columns),
        now = columns.len() + 1,
        arrays = arrays(&columns, 1),
        numbered = names(&numbered),
    )
}

/// The guarded update of a round of changes, setting the columns of `arrays`: a row changes
/// only while it still has the expected version (and ref); the ids of the rows that changed
/// come back.
fn update_contracts_sql(values: &ContractArrays) -> String {
    let mut columns = vec![("id", "bigint"), ("expected_version", "bigint")];
    columns.extend(values.typed_names());
    let assignments: String = values
        .columns
        .iter()
        .map(|(column, _)| format!("{name} = u.{name}, ", name = column.name()))
        .collect();
    format!(
        "UPDATE contracts AS c SET version = c.version + 1, {assignments}\
         updated_at_ms = ${now}::bigint FROM {unnest} \
         WHERE c.id = u.id AND c.version = u.expected_version AND c.ref = u.ref \
         RETURNING c.id",
        now = columns.len() + 1,
        unnest = unnest(&columns, 1, "u"),
    )
}

static INSERT_CHILDREN_SQL: LazyLock<String> = LazyLock::new(insert_children_sql);
static DELETE_CHILDREN_SQL: LazyLock<String> = LazyLock::new(delete_children_sql);

/// Line columns with their types, after `contract_id` and `position`.
const LINE_ARRAYS: [(&str, &str); 19] = [
    ("contract_id", "bigint"),
    ("position", "bigint"),
    ("ref", "text"),
    ("description", "text"),
    ("kind", "text"),
    ("billable", "boolean"),
    ("start_date", "date"),
    ("end_date", "date"),
    ("status", "text"),
    ("amount_minor", "bigint"),
    ("currency", "text"),
    ("billing_period", "text"),
    ("auto_extend", "boolean"),
    ("cancellation_received_on", "date"),
    ("cancellation_end_date", "date"),
    ("cancellation_reason", "text"),
    ("cancellation_notes", "text"),
    ("cancellation_final_invoice", "boolean"),
    ("cancellation_restore_auto_extend", "boolean"),
];

const SCHEDULE_ARRAYS: [(&str, &str); 8] = [
    ("contract_id", "bigint"),
    ("position", "bigint"),
    ("line_ref", "text"),
    ("period_start", "date"),
    ("period_end", "date"),
    ("amount_minor", "bigint"),
    ("status", "text"),
    ("document", "text"),
];

const DOCUMENT_ARRAYS: [(&str, &str); 8] = [
    ("contract_id", "bigint"),
    ("position", "bigint"),
    ("ref", "text"),
    ("kind", "text"),
    ("status", "text"),
    ("consolidated", "boolean"),
    ("amount_minor", "bigint"),
    ("currency", "text"),
];

const REFERENCE_ARRAYS: [(&str, &str); 4] = [
    ("contract_id", "bigint"),
    ("position", "bigint"),
    ("ref", "text"),
    ("status", "text"),
];

/// The child tables, each with its columns, in the order [`ChildArrays::bind`] binds them.
const CHILD_TABLES: [(&str, &[(&str, &str)]); 5] = [
    ("contract_lines", &LINE_ARRAYS),
    ("billing_schedules", &SCHEDULE_ARRAYS),
    ("billing_documents", &DOCUMENT_ARRAYS),
    ("renewals", &REFERENCE_ARRAYS),
    ("change_requests", &REFERENCE_ARRAYS),
];

/// One statement inserting the children of many contracts into all five tables.
fn insert_children_sql() -> String {
    let mut first = 1;
    let mut statements = Vec::new();
    for (table, columns) in CHILD_TABLES {
        statements.push(format!(
            "INSERT INTO {table} ({names}) SELECT {names} FROM {unnest}",
            names = names(columns),
            unnest = unnest(columns, first, "u"),
        ));
        first += columns.len();
    }
    let last = statements.pop().unwrap_or_default();
    let ctes = statements
        .iter()
        .enumerate()
        .map(|(index, statement)| format!("c{index} AS ({statement})"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("WITH {ctes} {last}")
}

/// One statement deleting, from each of the five tables in turn, the rows of the contracts
/// in `$1` … `$5`.
fn delete_children_sql() -> String {
    let mut statements: Vec<String> = CHILD_TABLES
        .iter()
        .enumerate()
        .map(|(index, (table, _))| {
            format!(
                "DELETE FROM {table} WHERE contract_id = ANY(${}::bigint[])",
                index + 1
            )
        })
        .collect();
    let last = statements.pop().unwrap_or_default();
    let ctes = statements
        .iter()
        .enumerate()
        .map(|(index, statement)| format!("c{index} AS ({statement})"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("WITH {ctes} {last}")
}

/// Line columns of many contracts, one array per column of [`LINE_ARRAYS`].
#[derive(Default)]
struct LineArrays {
    /// `contract_id`.
    contract_id: Vec<i64>,
    /// `position`: keeps the lines in the contract's order.
    position: Vec<i64>,
    /// `ref`.
    reference: Vec<String>,
    /// `description`.
    description: Vec<String>,
    /// `kind`.
    kind: Vec<&'static str>,
    /// `billable`.
    billable: Vec<bool>,
    /// `start_date`.
    start_date: Vec<NaiveDate>,
    /// `end_date`.
    end_date: Vec<Option<NaiveDate>>,
    /// `status`.
    status: Vec<&'static str>,
    /// `amount_minor`.
    amount_minor: Vec<i64>,
    /// `currency`.
    currency: Vec<String>,
    /// `billing_period`.
    billing_period: Vec<Option<String>>,
    /// `auto_extend`.
    auto_extend: Vec<bool>,
    /// The six `cancellation_*` columns.
    cancellation: CancellationArrays,
}

/// Schedule columns of many contracts, one array per column of [`SCHEDULE_ARRAYS`].
#[derive(Default)]
struct ScheduleArrays {
    /// `contract_id`.
    contract_id: Vec<i64>,
    /// `position`: keeps the schedules in the contract's order.
    position: Vec<i64>,
    /// `line_ref`.
    line_ref: Vec<String>,
    /// `period_start`.
    period_start: Vec<NaiveDate>,
    /// `period_end`.
    period_end: Vec<NaiveDate>,
    /// `amount_minor`.
    amount_minor: Vec<i64>,
    /// `status`.
    status: Vec<&'static str>,
    /// `document`.
    document: Vec<Option<String>>,
}

/// Document columns of many contracts, one array per column of [`DOCUMENT_ARRAYS`].
#[derive(Default)]
struct DocumentArrays {
    /// `contract_id`.
    contract_id: Vec<i64>,
    /// `position`: keeps the documents in the contract's order.
    position: Vec<i64>,
    /// `ref`.
    reference: Vec<String>,
    /// `kind`.
    kind: Vec<&'static str>,
    /// `status`.
    status: Vec<&'static str>,
    /// `consolidated`.
    consolidated: Vec<bool>,
    /// `amount_minor`.
    amount_minor: Vec<i64>,
    /// `currency`.
    currency: Vec<String>,
}

/// Renewal or change request columns of many contracts ([`REFERENCE_ARRAYS`]).
#[derive(Default)]
struct ReferenceArrays {
    /// `contract_id`.
    contract_id: Vec<i64>,
    /// `position`: keeps the entries in the contract's order.
    position: Vec<i64>,
    /// `ref`.
    reference: Vec<String>,
    /// `status`.
    status: Vec<&'static str>,
}

impl ReferenceArrays {
    fn push(&mut self, contract_id: i64, entries: impl Iterator<Item = (String, &'static str)>) {
        for (position, (reference, status)) in entries.enumerate() {
            self.contract_id.push(contract_id);
            self.position.push(position as i64);
            self.reference.push(reference);
            self.status.push(status);
        }
    }

    fn bind<'q>(self, query: Query<'q>) -> Query<'q> {
        query
            .bind(self.contract_id)
            .bind(self.position)
            .bind(self.reference)
            .bind(self.status)
    }
}

/// The children of many contracts, ready for [`insert_children_sql`].
#[derive(Default)]
struct ChildArrays {
    /// Rows of `contract_lines`.
    lines: LineArrays,
    /// Rows of `billing_schedules`.
    schedules: ScheduleArrays,
    /// Rows of `billing_documents`.
    documents: DocumentArrays,
    /// Rows of `renewals`.
    renewals: ReferenceArrays,
    /// Rows of `change_requests`.
    change_requests: ReferenceArrays,
    /// Whether any row was added (no statement is needed otherwise).
    any: bool,
    /// Per table of [`ChildTable::ALL`], the contracts whose rows there are replaced.
    replaced: [Vec<i64>; 5],
}

impl ChildArrays {
    /// The rows of the child tables in `parts` of a contract, replacing what it had there.
    fn push(&mut self, contract_id: i64, contract: &Contract, parts: ChangedParts) {
        for table in parts.tables() {
            self.replaced[table as usize].push(contract_id);
        }
        self.push_new(contract_id, contract, parts);
    }

    /// The rows of the child tables in `parts` of a contract that has none there yet.
    fn push_new(&mut self, contract_id: i64, contract: &Contract, parts: ChangedParts) {
        for table in parts.tables() {
            self.any |= table.has_rows(contract);
        }
        let lines = parts.rows_of(ChildTable::Lines, &contract.lines);
        let schedules = parts.rows_of(ChildTable::Schedules, &contract.schedules);
        let documents = parts.rows_of(ChildTable::Documents, &contract.documents);
        let renewals = parts.rows_of(ChildTable::Renewals, &contract.renewals);
        let change_requests = parts.rows_of(ChildTable::ChangeRequests, &contract.change_requests);
        for (position, line) in lines.iter().enumerate() {
            let lines = &mut self.lines;
            lines.contract_id.push(contract_id);
            lines.position.push(position as i64);
            lines.reference.push(line.reference.clone());
            lines.description.push(line.description.clone());
            lines.kind.push(line.kind.as_str());
            lines.billable.push(line.billable);
            lines.start_date.push(line.start_date);
            lines.end_date.push(line.end_date);
            lines.status.push(line.status.as_str());
            lines.amount_minor.push(line.amount_minor);
            lines.currency.push(line.currency.clone());
            lines
                .billing_period
                .push(line.billing_period.map(|period| period.to_string()));
            lines.auto_extend.push(line.auto_extend);
            lines.cancellation.push(line.cancellation.as_ref());
        }
        for (position, schedule) in schedules.iter().enumerate() {
            let schedules = &mut self.schedules;
            schedules.contract_id.push(contract_id);
            schedules.position.push(position as i64);
            schedules.line_ref.push(schedule.line_ref.clone());
            schedules.period_start.push(schedule.period_start);
            schedules.period_end.push(schedule.period_end);
            schedules.amount_minor.push(schedule.amount_minor);
            schedules.status.push(schedule.status.as_str());
            schedules.document.push(schedule.document.clone());
        }
        for (position, document) in documents.iter().enumerate() {
            let documents = &mut self.documents;
            documents.contract_id.push(contract_id);
            documents.position.push(position as i64);
            documents.reference.push(document.reference.clone());
            documents.kind.push(document.kind.as_str());
            documents.status.push(document.status.as_str());
            documents.consolidated.push(document.consolidated);
            documents.amount_minor.push(document.amount_minor);
            documents.currency.push(document.currency.clone());
        }
        self.renewals.push(
            contract_id,
            renewals
                .iter()
                .map(|r| (r.reference.clone(), r.status.as_str())),
        );
        self.change_requests.push(
            contract_id,
            change_requests
                .iter()
                .map(|r| (r.reference.clone(), r.status.as_str())),
        );
    }

    /// Bind every array, in the order of [`CHILD_TABLES`].
    fn bind<'q>(self, query: Query<'q>) -> Query<'q> {
        let lines = self.lines;
        let query = query
            .bind(lines.contract_id)
            .bind(lines.position)
            .bind(lines.reference)
            .bind(lines.description)
            .bind(lines.kind)
            .bind(lines.billable)
            .bind(lines.start_date)
            .bind(lines.end_date)
            .bind(lines.status)
            .bind(lines.amount_minor)
            .bind(lines.currency)
            .bind(lines.billing_period)
            .bind(lines.auto_extend);
        let schedules = self.schedules;
        let documents = self.documents;
        let query = lines
            .cancellation
            .bind(query)
            .bind(schedules.contract_id)
            .bind(schedules.position)
            .bind(schedules.line_ref)
            .bind(schedules.period_start)
            .bind(schedules.period_end)
            .bind(schedules.amount_minor)
            .bind(schedules.status)
            .bind(schedules.document)
            .bind(documents.contract_id)
            .bind(documents.position)
            .bind(documents.reference)
            .bind(documents.kind)
            .bind(documents.status)
            .bind(documents.consolidated)
            .bind(documents.amount_minor)
            .bind(documents.currency);
        let query = self.renewals.bind(query);
        self.change_requests.bind(query)
    }

    /// Delete the replaced rows, then insert the new ones.
    async fn write(mut self, tx: &mut Transaction<'static, Postgres>) -> Result<(), StorageError> {
        if self.replaced.iter().any(|ids| !ids.is_empty()) {
            let replaced = std::mem::take(&mut self.replaced);
            replaced
                .into_iter()
                .fold(sqlx::query(&DELETE_CHILDREN_SQL), |query, ids| {
                    query.bind(ids)
                })
                .execute(&mut **tx)
                .await?;
        }
        if self.any {
            self.bind(sqlx::query(&INSERT_CHILDREN_SQL))
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}

/// Event columns of many events, for one `unnest` insert.
#[derive(Default)]
struct EventArrays {
    /// `contract_id`.
    contract_id: Vec<i64>,
    /// `contract_ref`: the ref the history is listed by.
    contract_ref: Vec<String>,
    /// `kind`.
    kind: Vec<&'static str>,
    /// `effective_on`.
    effective_on: Vec<NaiveDate>,
    /// `line_ref`.
    line_ref: Vec<Option<String>>,
    /// `details`, as JSON text (cast to `jsonb` by the statement).
    details: Vec<String>,
    /// `transition_key`: unique per contract.
    transition_key: Vec<String>,
}

impl EventArrays {
    fn push(
        &mut self,
        contract_id: i64,
        contract_ref: &str,
        new_version: i64,
        events: &[ContractEvent],
    ) {
        for (index, event) in events.iter().enumerate() {
            self.contract_id.push(contract_id);
            self.contract_ref.push(contract_ref.to_string());
            self.kind.push(event.kind.as_str());
            self.effective_on.push(event.effective_on);
            self.line_ref.push(event.line_ref.clone());
            self.details.push(event.details.to_string());
            self.transition_key
                .push(transition_key(event, new_version, index));
        }
    }

    /// Insert every event, in order. A transition key a contract already has violates the
    /// unique key: refused with [`StorageError::DuplicateTransition`] naming that event (the
    /// caller's transaction is then rolled back).
    async fn insert(
        self,
        tx: &mut Transaction<'static, Postgres>,
        run_id: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        if self.contract_id.is_empty() {
            return Ok(());
        }
        let sent: Vec<(i64, String, String)> = self
            .contract_id
            .iter()
            .zip(&self.contract_ref)
            .zip(&self.transition_key)
            .map(|((id, reference), key)| (*id, reference.clone(), key.clone()))
            .collect();
        let inserted = sqlx::query(
            "INSERT INTO contract_events (contract_id, contract_ref, kind, effective_on, line_ref, \
             details, transition_key, run_id, recorded_at_ms) \
             SELECT contract_id, contract_ref, kind, effective_on, line_ref, details::jsonb, \
             transition_key, $8::text, $9::bigint \
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::date[], $5::text[], \
             $6::text[], $7::text[]) WITH ORDINALITY \
             AS e(contract_id, contract_ref, kind, effective_on, line_ref, details, \
             transition_key, ord) ORDER BY ord",
        )
        .bind(self.contract_id)
        .bind(self.contract_ref)
        .bind(self.kind)
        .bind(self.effective_on)
        .bind(self.line_ref)
        .bind(self.details)
        .bind(self.transition_key)
        .bind(run_id)
        .bind(now_ms)
        .execute(&mut **tx)
        .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(error))
                if error.constraint() == Some(EVENT_KEY_CONSTRAINT) =>
            {
                Err(duplicate_transition(
                    error.message(),
                    error.try_downcast_ref(),
                    sent,
                ))
            }
            Err(error) => Err(error.into()),
        }
    }
}

/// The unique key of transition events.
const EVENT_KEY_CONSTRAINT: &str = "contract_events_contract_id_transition_key_key";

/// The event a unique violation names (`Key (contract_id, transition_key)=(7, expired:…)`
/// in its detail), among those sent; the first sent when the detail cannot be read.
fn duplicate_transition(
    message: &str,
    postgres: Option<&sqlx::postgres::PgDatabaseError>,
    sent: Vec<(i64, String, String)>,
) -> StorageError {
    let detail = postgres.and_then(|error| error.detail()).unwrap_or(message);
    let named = detail
        .split_once(")=(")
        .and_then(|(_, rest)| rest.rsplit_once(") already exists"))
        .and_then(|(key, _)| key.split_once(", "))
        .and_then(|(id, key)| Some((id.parse::<i64>().ok()?, key.to_string())));
    let event = named
        .and_then(|(id, key)| {
            sent.iter()
                .find(|(sent_id, _, sent_key)| *sent_id == id && *sent_key == key)
                .cloned()
        })
        .or_else(|| sent.into_iter().next());
    let (contract_ref, transition_key) = match event {
        Some((_, reference, key)) => (reference, key),
        None => (String::new(), String::new()),
    };
    StorageError::DuplicateTransition {
        contract_ref,
        transition_key,
    }
}

/// An import into PostgreSQL: one transaction, held until commit.
pub struct PostgresImport {
    /// Everything the import inserts; rolled back when dropped.
    tx: Transaction<'static, Postgres>,
}

impl ContractImport for PostgresImport {
    async fn insert(
        &mut self,
        contracts: &[NewContract],
        now_ms: i64,
    ) -> Result<Vec<String>, StorageError> {
        let mut skipped = Vec::new();
        let mut zones = BTreeSet::new();
        for chunk in contracts.chunks(IMPORT_CHUNK) {
            let mut arrays = ContractArrays::new(ContractColumn::ALL.iter().copied(), chunk.len());
            for new in chunk {
                arrays.push(&ContractValues::of(&new.contract));
            }
            let sql = insert_contracts_sql(&arrays);
            let rows = arrays
                .bind(sqlx::query(&sql))
                .bind(now_ms)
                .fetch_all(&mut *self.tx)
                .await?;
            let mut ids = HashMap::with_capacity(rows.len());
            for row in &rows {
                ids.insert(row.try_get::<String, _>(1)?, row.try_get::<i64, _>(0)?);
            }
            let mut children = ChildArrays::default();
            let mut events = EventArrays::default();
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
                "INSERT INTO contract_zones (time_zone) SELECT unnest($1::text[]) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(zones.into_iter().collect::<Vec<_>>())
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(skipped)
    }

    async fn commit(self) -> Result<(), StorageError> {
        Ok(self.tx.commit().await?)
    }
}

impl ContractStore for PostgresStore {
    async fn migrate(&self) -> Result<(), StorageError> {
        migrator().run(&self.pool).await?;
        Ok(())
    }

    async fn readiness(&self) -> Result<bool, StorageError> {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(&self.pool)
            .await?;
        if !exists {
            return Ok(false);
        }
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await?;
        Ok(all_applied(&migrator(), &versions))
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

    async fn load_contract(&self, reference: &str) -> Result<Option<LoadedContract>, StorageError> {
        let rows = sqlx::query(&format!(
            "SELECT {CONTRACT_COLUMNS} FROM contracts WHERE ref = $1"
        ))
        .bind(reference)
        .fetch_all(&self.pool)
        .await?;
        Ok(self.assemble_rows(rows, false).await?.into_iter().next())
    }

    async fn contracts_page(
        &self,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<LoadedContract>, StorageError> {
        let rows = sqlx::query(&format!(
            "SELECT {CONTRACT_COLUMNS} FROM contracts WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        self.assemble_rows(rows, false).await
    }

    async fn events(&self, reference: &str) -> Result<Vec<StoredEvent>, StorageError> {
        // Found through the contract's id, so the (contract_id, transition_key) index serves
        // it; events always carry their contract's ref.
        let rows = sqlx::query(
            "SELECT kind, effective_on, line_ref, details::text, transition_key, run_id, \
             recorded_at_ms FROM contract_events \
             WHERE contract_id IN (SELECT id FROM contracts WHERE ref = $1) \
             AND contract_ref = $1 ORDER BY id",
        )
        .bind(reference)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let details: String = row.try_get(3)?;
                Ok(StoredEvent {
                    kind: row.try_get(0)?,
                    effective_on: row.try_get(1)?,
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
        usize::MAX
    }

    async fn zones(&self) -> Result<Vec<String>, StorageError> {
        // Byte order, as SQLite sorts, whatever the database's collation.
        Ok(sqlx::query_scalar(
            "SELECT time_zone FROM contract_zones ORDER BY time_zone COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    async fn succeeded_runs_since(&self, since: NaiveDate) -> Result<Vec<RunKey>, StorageError> {
        let rows = sqlx::query(
            "SELECT job, zone, business_date FROM job_runs \
             WHERE business_date >= $1 AND status = 'succeeded'",
        )
        .bind(since)
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
        let row = sqlx::query(
            "INSERT INTO job_runs (job, zone, business_date, run_id, owner, lease_until_ms, status, \
             started_at_ms) VALUES ($1, $2, $3, $4, $5, $6, 'running', $7) \
             ON CONFLICT (job, zone, business_date) DO UPDATE SET run_id = excluded.run_id, \
             owner = excluded.owner, lease_until_ms = excluded.lease_until_ms, status = 'running', \
             attempts = job_runs.attempts + 1, error = NULL, finished_at_ms = NULL \
             WHERE job_runs.status <> 'succeeded' AND job_runs.lease_until_ms < $7 \
             RETURNING id, run_id, cursor_due, cursor_id, examined, changed, skipped, attempts",
        )
        .bind(key.job.as_str())
        .bind(&key.zone)
        .bind(key.business_date)
        .bind(&run_id)
        .bind(owner)
        .bind(now_ms + lease_ms)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let cursor_due: Option<NaiveDate> = row.try_get(2)?;
        let cursor_id: Option<i64> = row.try_get(3)?;
        Ok(Some(RunClaim {
            row_id: row.try_get(0)?,
            run_id: row.try_get(1)?,
            key: key.clone(),
            cursor: match (cursor_due, cursor_id) {
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
        let rows = match after {
            None => {
                sqlx::query(&format!(
                    "SELECT {CONTRACT_COLUMNS}, {due} FROM contracts \
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
                    "SELECT {CONTRACT_COLUMNS}, {due} FROM contracts \
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

    async fn commit_batch(
        &self,
        progress: Option<BatchProgress<'_>>,
        changes: &[ContractChange],
        now_ms: i64,
    ) -> Result<CommitOutcome, StorageError> {
        let mut applied = vec![false; changes.len()];
        let mut tx = self.pool.begin().await?;
        for mut round in rounds(changes) {
            // Rows are locked in id order, so two batches touching the same contracts wait
            // for each other instead of deadlocking.
            round.sort_by_key(|&index| changes[index].id);
            // One statement for the round, setting every column any of its changes changes
            // (a change that leaves such a column alone writes back the value it read).
            let columns = round.iter().fold(ChangedParts::default(), |all, &index| {
                all.union(changes[index].parts)
            });
            let mut ids = Vec::with_capacity(round.len());
            let mut expected = Vec::with_capacity(round.len());
            let mut arrays = ContractArrays::new(columns.columns(), round.len());
            for &index in &round {
                let change = &changes[index];
                ids.push(change.id);
                expected.push(change.expected_version);
                arrays.push(&ContractValues::of(&change.contract));
            }
            let sql = update_contracts_sql(&arrays);
            let query = sqlx::query(&sql).bind(ids).bind(expected);
            let rows = arrays.bind(query).bind(now_ms).fetch_all(&mut *tx).await?;
            let mut updated = HashSet::with_capacity(rows.len());
            for row in &rows {
                updated.insert(row.try_get::<i64, _>(0)?);
            }
            let mut children = ChildArrays::default();
            for &index in &round {
                let change = &changes[index];
                if updated.contains(&change.id) {
                    applied[index] = true;
                    children.push(change.id, &change.contract, change.parts);
                }
            }
            children.write(&mut tx).await?;
        }
        let mut events = EventArrays::default();
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
                "UPDATE job_runs SET cursor_due = $1, cursor_id = $2, examined = $3, \
                 changed = $4, skipped = $5, batches = batches + 1, lease_until_ms = $6 \
                 WHERE id = $7 AND run_id = $8 AND status = 'running'",
            )
            .bind(progress.cursor.map(|cursor| cursor.due))
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
        let updated = sqlx::query(
            "UPDATE job_runs SET status = $1, examined = $2, changed = $3, skipped = $4, \
             error = $5, finished_at_ms = $6, lease_until_ms = $7 WHERE id = $8 AND run_id = $9",
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
        .execute(&self.pool)
        .await?;
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
             ORDER BY business_date DESC, zone COLLATE \"C\", id DESC LIMIT $1",
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
        let rows = sqlx::query(
            "SELECT status, COUNT(*) FROM contracts GROUP BY status ORDER BY status COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }
}
