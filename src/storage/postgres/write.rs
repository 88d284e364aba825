//! Writing to PostgreSQL. Round trips are what costs here, so every write works on whole
//! batches: one `UPDATE … FROM unnest(…)` guards and applies all changes of a round, children
//! and events are written with one `unnest` insert each, and the import inserts contracts a
//! thousand at a time. Each column's values are bound as one typed array.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::LazyLock;

use chrono::NaiveDate;
use sqlx::postgres::PgArguments;
use sqlx::Postgres;

use super::executor::Transaction;
use super::read::PostgresDialect;
use super::PostgresStore;
use crate::contract::{Cancellation, Contract, ContractEvent};
use crate::storage::columns::{
    select_list, ChangedParts, ChildTable, Column, ColumnValue, ContractColumn, ContractValues,
    SqlType, CLAIM_COLUMNS,
};
use crate::storage::packed_record::pack_record;
use crate::storage::rows::{run_claim, StoredRow};
use crate::storage::shared::{
    finish_timing, imported_event, outcome, rounds, transition_key, LedgerProgress, IMPORT_CHUNK,
};
use crate::storage::{
    BatchProgress, CommitOutcome, ContractChange, ContractImport, NewContract, RunClaim, RunCounts,
    RunKey, RunStatus, StorageError,
};

/// A statement being bound.
type Query<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

/// What a claim returns of the ledger row.
static CLAIM_RETURNING: LazyLock<String> =
    LazyLock::new(|| select_list::<PostgresDialect>(CLAIM_COLUMNS));

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

/// `c1, c2, …` over `columns`.
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
    /// The pending cancellation of one contract or line.
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

    /// Bind the arrays, in column order.
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

/// The PostgreSQL type of a column, as its arrays are cast.
fn pg_type(sql_type: SqlType) -> &'static str {
    match sql_type {
        SqlType::Integer => "bigint",
        SqlType::Text => "text",
        SqlType::Date => "date",
        SqlType::Bool => "boolean",
        SqlType::Json => "jsonb",
        SqlType::Bytes => "bytea",
        SqlType::Transaction => "xid8",
    }
}

/// `columns` with their PostgreSQL types.
fn typed(columns: &[Column]) -> Vec<(&'static str, &'static str)> {
    columns
        .iter()
        .map(|column| (column.name, pg_type(column.sql_type)))
        .collect()
}

/// One contract column's values for many contracts, as one typed array.
enum ColumnArray {
    /// A text column's values.
    Text(Vec<Option<String>>),
    /// A date column's values.
    Date(Vec<Option<NaiveDate>>),
    /// A boolean column's values.
    Bool(Vec<Option<bool>>),
}

impl ColumnArray {
    /// An empty array for `column`, of its type.
    fn new(column: ContractColumn, capacity: usize) -> ColumnArray {
        match column.sql_type() {
            SqlType::Date => ColumnArray::Date(Vec::with_capacity(capacity)),
            SqlType::Bool => ColumnArray::Bool(Vec::with_capacity(capacity)),
            // No contract column a write sets is an integer, JSON, bytes or a transaction id;
            // text holds any value.
            SqlType::Text
            | SqlType::Integer
            | SqlType::Json
            | SqlType::Bytes
            | SqlType::Transaction => ColumnArray::Text(Vec::with_capacity(capacity)),
        }
    }

    /// One contract's value.
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

    /// A NULL.
    fn push_null(&mut self) {
        match self {
            ColumnArray::Text(values) => values.push(None),
            ColumnArray::Date(values) => values.push(None),
            ColumnArray::Bool(values) => values.push(None),
        }
    }

    /// Bind the arrays, in column order.
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
    /// Empty arrays for `columns`.
    fn new(columns: impl Iterator<Item = ContractColumn>, capacity: usize) -> ContractArrays {
        ContractArrays {
            reference: Vec::with_capacity(capacity),
            columns: columns
                .map(|column| (column, ColumnArray::new(column, capacity)))
                .collect(),
        }
    }

    /// One contract's values.
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
                    .map(|(column, _)| (column.name(), pg_type(column.sql_type()))),
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

/// See [`insert_children_sql`].
static INSERT_CHILDREN_SQL: LazyLock<String> = LazyLock::new(insert_children_sql);
/// See [`delete_children_sql`].
static DELETE_CHILDREN_SQL: LazyLock<String> = LazyLock::new(delete_children_sql);

/// One statement inserting the children of many contracts into all five tables.
fn insert_children_sql() -> String {
    let mut first = 1;
    let mut statements = Vec::new();
    for table in ChildTable::ALL {
        let columns = typed(table.columns());
        statements.push(format!(
            "INSERT INTO {table} ({names}) SELECT {names} FROM {unnest}",
            table = table.name(),
            names = names(&columns),
            unnest = unnest(&columns, first, "u"),
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
    let mut statements: Vec<String> = ChildTable::ALL
        .iter()
        .enumerate()
        .map(|(index, table)| {
            format!(
                "DELETE FROM {} WHERE contract_id = ANY(${}::bigint[])",
                table.name(),
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

/// Line columns of many contracts, one array per column of [`ChildTable::Lines`].
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

/// Schedule columns of many contracts, one array per column of [`ChildTable::Schedules`].
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

/// Document columns of many contracts, one array per column of [`ChildTable::Documents`].
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

/// Renewal or change request columns of many contracts ([`ChildTable::Renewals`], [`ChildTable::ChangeRequests`]).
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
    /// The entries of one contract, in order.
    fn push(&mut self, contract_id: i64, entries: impl Iterator<Item = (String, &'static str)>) {
        for (position, (reference, status)) in entries.enumerate() {
            self.contract_id.push(contract_id);
            self.position.push(position as i64);
            self.reference.push(reference);
            self.status.push(status);
        }
    }

    /// Bind the arrays, in column order.
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

    /// Bind every array, in the order of [`ChildTable::ALL`] and of each table's columns.
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
    async fn write(mut self, tx: &mut Transaction) -> Result<(), StorageError> {
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
    /// The export records of the changes, packed (`packed_record.rs`), each serialised once.
    records: Vec<Vec<u8>>,
    /// Scratch space the records are serialised in.
    json: Vec<u8>,
    /// `contract_record`: per event, its change's entry in `records` (none when the record
    /// could not be serialised).
    record_of: Vec<Option<usize>>,
}

impl EventArrays {
    /// The events of one contract, its update taking it to `new_version`, each with the
    /// contract's export record after the change (serialised once for all of them).
    fn push(
        &mut self,
        contract_id: i64,
        contract: &Contract,
        new_version: i64,
        events: &[ContractEvent],
    ) {
        if events.is_empty() {
            return;
        }
        let contract_ref = contract.reference.as_str();
        let record = pack_record(contract, &mut self.json).map(|record| {
            self.records.push(record);
            self.records.len() - 1
        });
        for (index, event) in events.iter().enumerate() {
            self.contract_id.push(contract_id);
            self.contract_ref.push(contract_ref.to_string());
            self.kind.push(event.kind.as_str());
            self.effective_on.push(event.effective_on);
            self.line_ref.push(event.line_ref.clone());
            self.details.push(event.details.to_string());
            self.transition_key
                .push(transition_key(event, new_version, index));
            self.record_of.push(record);
        }
    }

    /// Insert every event, in order. A transition key a contract already has violates the
    /// unique key: refused with [`StorageError::DuplicateTransition`] naming that event (the
    /// caller's transaction is then rolled back).
    async fn insert(
        self,
        tx: &mut Transaction,
        run_id: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        if self.contract_id.is_empty() {
            return Ok(());
        }
        let records: Vec<Option<&[u8]>> = self
            .record_of
            .iter()
            .map(|record| record.map(|index| self.records[index].as_slice()))
            .collect();
        let inserted = sqlx::query(
            "INSERT INTO contract_events (contract_id, contract_ref, kind, effective_on, line_ref, \
             details, transition_key, contract_record, run_id, recorded_at_ms) \
             SELECT contract_id, contract_ref, kind, effective_on, line_ref, details::jsonb, \
             transition_key, contract_record, $9::text, $10::bigint \
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::date[], $5::text[], \
             $6::text[], $7::text[], $8::bytea[]) WITH ORDINALITY \
             AS e(contract_id, contract_ref, kind, effective_on, line_ref, details, \
             transition_key, contract_record, ord) ORDER BY ord",
        )
        .bind(&self.contract_id)
        .bind(&self.contract_ref)
        .bind(&self.kind)
        .bind(&self.effective_on)
        .bind(&self.line_ref)
        .bind(&self.details)
        .bind(&self.transition_key)
        .bind(records)
        .bind(run_id)
        .bind(now_ms)
        .execute(&mut **tx)
        .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(error))
                if error.constraint() == Some(EVENT_KEY_CONSTRAINT) =>
            {
                // What was sent, to name the event the violation is about.
                let sent = self
                    .contract_id
                    .into_iter()
                    .zip(self.contract_ref)
                    .zip(self.transition_key)
                    .map(|((id, reference), key)| (id, reference, key))
                    .collect();
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
    pub(super) tx: Transaction,
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
                ids.insert(row.text("ref")?, row.integer("id")?);
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
                events.push(id, &new.contract, 1, &[event]);
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

impl PostgresStore {
    /// See [`crate::storage::ContractStore::claim_run`].
    pub(super) async fn write_claim_run(
        &self,
        key: &RunKey,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<RunClaim>, StorageError> {
        let run_id = uuid::Uuid::new_v4().to_string();
        let row = sqlx::query(&format!(
            "INSERT INTO job_runs (job, zone, business_date, run_id, owner, lease_until_ms, status, \
             started_at_ms) VALUES ($1, $2, $3, $4, $5, $6, 'running', $7) \
             ON CONFLICT (job, zone, business_date) DO UPDATE SET run_id = excluded.run_id, \
             owner = excluded.owner, lease_until_ms = excluded.lease_until_ms, status = 'running', \
             attempts = job_runs.attempts + 1, error = NULL, finished_at_ms = NULL \
             WHERE job_runs.status <> 'succeeded' AND job_runs.lease_until_ms < $7 \
             RETURNING {returning}",
            returning = *CLAIM_RETURNING,
        ))
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
        Ok(Some(run_claim(&row, key)?))
    }

    /// See [`crate::storage::ContractStore::commit_batch`].
    pub(super) async fn write_batch(
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
                updated.insert(row.integer("id")?);
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
                &change.contract,
                change.expected_version + 1,
                &change.events,
            );
        });
        let run_id = progress.as_ref().map(|p| p.claim.run_id.as_str());
        events.insert(&mut tx, run_id, now_ms).await?;
        if let Some(progress) = progress {
            let ledger = LedgerProgress::after(&progress, outcome, now_ms);
            let advanced = sqlx::query(
                "UPDATE job_runs SET cursor_due = $1, cursor_id = $2, examined = $3, \
                 changed = $4, skipped = $5, batches = batches + 1, lease_until_ms = $6, \
                 status = $7, finished_at_ms = $8 \
                 WHERE id = $9 AND run_id = $10 AND status = 'running'",
            )
            .bind(progress.cursor.map(|cursor| cursor.due))
            .bind(progress.cursor.map(|cursor| cursor.id))
            .bind(ledger.counts.examined)
            .bind(ledger.counts.changed)
            .bind(ledger.counts.skipped)
            .bind(ledger.lease_until_ms)
            .bind(ledger.status.as_str())
            .bind(ledger.finished_at_ms)
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

    /// See [`crate::storage::ContractStore::finish_run`].
    pub(super) async fn write_finish_run(
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
}
