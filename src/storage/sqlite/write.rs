//! Writing to SQLite: every write in one `BEGIN IMMEDIATE` transaction on the one writing
//! connection, the rows of a whole batch bound as one JSON parameter (events, which carry
//! the contract's export record, value by value).

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::LazyLock;

use chrono::NaiveDate;
use serde_json::Value;
use sqlx::{Sqlite, Transaction};

use super::read::SqliteDialect;
use super::SqliteStore;
use crate::contract::record::format_date;
use crate::contract::{Cancellation, Contract, ContractEvent};
use crate::storage::columns::{
    select_list, ChangedParts, ChildTable, ColumnValue, ContractColumn, ContractValues,
    CLAIM_COLUMNS,
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

/// What a claim returns of the ledger row.
static CLAIM_RETURNING: LazyLock<String> =
    LazyLock::new(|| select_list::<SqliteDialect>(CLAIM_COLUMNS));

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
        .map(|table| {
            let columns = table.columns();
            let names: Vec<&str> = columns.iter().map(|column| column.name).collect();
            format!(
                "{ROWS} INSERT INTO {} ({}) SELECT {} FROM u",
                table.name(),
                names.join(", "),
                json_fields(0, columns.len())
            )
        })
        .collect()
});

/// The values bound per event, in the order of [`INSERT_EVENTS_SQL`]'s rows.
const EVENT_VALUES: usize = 10;

/// Events go in statements of these many rows (a batch's events as a sum of them, largest
/// first), so that at most this many statements are ever prepared.
const EVENT_CHUNKS: [usize; 8] = [128, 64, 32, 16, 8, 4, 2, 1];

/// Per entry of [`EVENT_CHUNKS`]: the insert of that many events in row order, each unless its
/// contract has its transition key already; the ones inserted come back. Unlike the other
/// batch writes, events are bound value by value ([`EVENT_VALUES`] per event, the run and
/// the time repeated in each): each carries the contract's export record, a kilobyte or more
/// of JSON text that would otherwise be escaped into the batch's JSON array, parsed by SQLite
/// and extracted again.
///
/// The parameters are anonymous (`?`), not numbered (`?NNN`): sqlx asks SQLite the name of
/// every parameter it binds, and SQLite finds a numbered parameter's name by walking the list
/// of all of them, so with 1,026 numbered parameters binding was quadratic (7% of a SQLite
/// sweep's instructions in `sqlite3_bind_parameter_name`); anonymous ones have no name to look
/// up.
static INSERT_EVENTS_SQL: LazyLock<Vec<String>> = LazyLock::new(|| {
    let row = format!("({})", ["?"; EVENT_VALUES].join(", "));
    EVENT_CHUNKS
        .iter()
        .map(|&rows| {
            let values = vec![row.as_str(); rows];
            format!(
                "INSERT INTO contract_events (contract_id, contract_ref, kind, effective_on, \
                 line_ref, details, transition_key, contract_record, run_id, recorded_at_ms) \
                 VALUES {} ON CONFLICT (contract_id, transition_key) DO NOTHING \
                 RETURNING contract_id, transition_key",
                values.join(", ")
            )
        })
        .collect()
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

/// A date as an element of a row array: `YYYY-MM-DD` text, or null.
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

/// The children of many contracts, one row array per child, by table; each row's values
/// in the order of its table's [`ChildTable::columns`].
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

/// One event as bound.
struct EventRow {
    /// `contract_id`.
    contract_id: i64,
    /// `contract_ref`.
    contract_ref: String,
    /// `kind`.
    kind: &'static str,
    /// `effective_on`, `YYYY-MM-DD`.
    effective_on: String,
    /// `line_ref`.
    line_ref: Option<String>,
    /// `details`, as JSON text.
    details: String,
    /// `transition_key`: unique per contract.
    transition_key: String,
    /// `contract_record`: index into [`EventRows::records`].
    record: Option<usize>,
}

/// Events of many contracts, for one insert.
#[derive(Default)]
struct EventRows {
    /// The events, in order.
    rows: Vec<EventRow>,
    /// The export records of the changes, packed (`packed_record.rs`), each serialised once.
    records: Vec<Vec<u8>>,
    /// Scratch space the records are serialised in.
    json: Vec<u8>,
}

impl EventRows {
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
        let record = pack_record(contract, &mut self.json).map(|record| {
            self.records.push(record);
            self.records.len() - 1
        });
        for (index, event) in events.iter().enumerate() {
            self.rows.push(EventRow {
                contract_id,
                contract_ref: contract.reference.clone(),
                kind: event.kind.as_str(),
                effective_on: format_date(event.effective_on),
                line_ref: event.line_ref.clone(),
                details: event.details.to_string(),
                transition_key: transition_key(event, new_version, index),
                record,
            });
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
        let mut inserted = HashSet::with_capacity(self.rows.len());
        let mut rest: &[EventRow] = &self.rows;
        while !rest.is_empty() {
            let Some(position) = EVENT_CHUNKS.iter().position(|&size| size <= rest.len()) else {
                break;
            };
            let (chunk, after) = rest.split_at(EVENT_CHUNKS[position]);
            rest = after;
            let mut query = sqlx::query(&INSERT_EVENTS_SQL[position]);
            for row in chunk {
                query = query
                    .bind(row.contract_id)
                    .bind(row.contract_ref.as_str())
                    .bind(row.kind)
                    .bind(row.effective_on.as_str())
                    .bind(row.line_ref.as_deref())
                    .bind(row.details.as_str())
                    .bind(row.transition_key.as_str())
                    .bind(row.record.map(|index| self.records[index].as_slice()))
                    .bind(run_id)
                    .bind(now_ms);
            }
            let rows = query.fetch_all(&mut **tx).await?;
            if rows.len() == chunk.len() {
                continue;
            }
            for row in &rows {
                inserted.insert((row.integer("contract_id")?, row.text("transition_key")?));
            }
            let missing = chunk
                .iter()
                .find(|event| !inserted.remove(&(event.contract_id, event.transition_key.clone())));
            let (contract_ref, transition_key) = match missing {
                Some(event) => (event.contract_ref.clone(), event.transition_key.clone()),
                None => (String::new(), String::new()),
            };
            return Err(StorageError::DuplicateTransition {
                contract_ref,
                transition_key,
            });
        }
        Ok(())
    }
}

/// An import into SQLite: the write transaction, held until commit.
pub struct SqliteImport {
    /// Everything the import inserts; rolled back when dropped.
    pub(super) tx: Transaction<'static, Sqlite>,
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
                ids.insert(row.text("ref")?, row.integer("id")?);
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
                events.push(id, &new.contract, 1, &[event]);
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

impl SqliteStore {
    /// A write transaction on the writing connection, taking the write lock at once.
    pub(super) async fn write(&self) -> Result<Transaction<'static, Sqlite>, StorageError> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// See [`crate::storage::ContractStore::claim_run`].
    pub(super) async fn write_claim_run(
        &self,
        key: &RunKey,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<RunClaim>, StorageError> {
        let run_id = uuid::Uuid::new_v4().to_string();
        let mut tx = self.write().await?;
        let row = sqlx::query(&format!(
            "INSERT INTO job_runs (job, zone, business_date, run_id, owner, lease_until_ms, status, \
             started_at_ms) VALUES (?, ?, ?, ?, ?, ?, 'running', ?) \
             ON CONFLICT (job, zone, business_date) DO UPDATE SET run_id = excluded.run_id, \
             owner = excluded.owner, lease_until_ms = excluded.lease_until_ms, status = 'running', \
             attempts = job_runs.attempts + 1, error = NULL, finished_at_ms = NULL \
             WHERE job_runs.status <> 'succeeded' AND job_runs.lease_until_ms < ? \
             RETURNING {returning}",
            returning = *CLAIM_RETURNING,
        ))
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
                "UPDATE job_runs SET cursor_due = ?, cursor_id = ?, examined = ?, changed = ?, \
                 skipped = ?, batches = batches + 1, lease_until_ms = ?, status = ?, \
                 finished_at_ms = ? WHERE id = ? AND run_id = ? AND status = 'running'",
            )
            .bind(progress.cursor.map(|cursor| format_date(cursor.due)))
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
}
