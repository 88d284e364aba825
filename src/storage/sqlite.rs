//! SQLite: the embedded default. WAL journal, `BEGIN IMMEDIATE` for every write transaction
//! (so two writers queue on the busy timeout instead of failing on lock upgrade), dates as
//! `YYYY-MM-DD` text.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use chrono::NaiveDate;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};

use super::rows::{
    assemble, due_column, CancellationColumns, Children, ContractRow, ContractValues,
    LineRecordParts, LineRow, CONTRACT_COLUMNS,
};
use super::{
    imported_event, transition_key, BatchCursor, BatchProgress, CommitOutcome, ContractChange,
    ContractStore, LoadedContract, NewContract, RunClaim, RunCounts, RunKey, RunRecord, RunStatus,
    StorageError, StoredEvent,
};
use crate::contract::record::{
    format_date, parse_date, DocumentRecord, ReferenceRecord, ScheduleRecord,
};
use crate::contract::{Cancellation, Contract, ContractEvent};
use crate::lifecycle::Job;

type Query<'q> = sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>>;

/// The SQLite migrations, embedded in the binary.
fn migrator() -> Migrator {
    Migrator {
        migrations: Cow::Owned(vec![Migration::new(
            1,
            Cow::Borrowed("schema"),
            MigrationType::Simple,
            Cow::Borrowed(include_str!("../../migrations/sqlite/0001_schema.sql")),
            false,
        )]),
        ..Migrator::DEFAULT
    }
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
    /// The connection pool; every write goes through `BEGIN IMMEDIATE`.
    pool: SqlitePool,
}

impl SqliteStore {
    /// Open (creating when missing) the database file.
    pub async fn connect(settings: &SqliteSettings) -> Result<SqliteStore, StorageError> {
        let options = SqliteConnectOptions::from_str(&settings.url)
            .map_err(|error| StorageError::Url(error.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(settings.busy_timeout)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .connect_with(options)
            .await?;
        Ok(SqliteStore { pool })
    }

    async fn write(&self) -> Result<Transaction<'static, Sqlite>, StorageError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
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
        let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        let lines = sqlx::query(&format!(
            "SELECT contract_id, ref, description, kind, billable, start_date, end_date, status, \
             amount_minor, currency, billing_period, auto_extend, cancellation_received_on, \
             cancellation_end_date, cancellation_reason, cancellation_notes, \
             cancellation_final_invoice, cancellation_restore_auto_extend \
             FROM contract_lines WHERE contract_id IN ({list}) ORDER BY contract_id, position"
        ))
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
        let schedules = sqlx::query(&format!(
            "SELECT contract_id, line_ref, period_start, period_end, amount_minor, status, document \
             FROM billing_schedules WHERE contract_id IN ({list}) ORDER BY contract_id, position"
        ))
        .fetch_all(&self.pool)
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
        let documents = sqlx::query(&format!(
            "SELECT contract_id, ref, kind, status, consolidated, amount_minor, currency \
             FROM billing_documents WHERE contract_id IN ({list}) ORDER BY contract_id, position"
        ))
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
        for (table, target) in [
            ("renewals", &mut children.renewals),
            ("change_requests", &mut children.change_requests),
        ] {
            let rows = sqlx::query(&format!(
                "SELECT contract_id, ref, status FROM {table} \
                 WHERE contract_id IN ({list}) ORDER BY contract_id, position"
            ))
            .fetch_all(&self.pool)
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
        &self,
        rows: Vec<SqliteRow>,
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

fn text_date(date: Option<NaiveDate>) -> Option<String> {
    date.map(format_date)
}

/// Bind the cancellation columns (six values).
fn bind_cancellation<'q>(query: Query<'q>, cancellation: Option<&Cancellation>) -> Query<'q> {
    query
        .bind(cancellation.map(|c| format_date(c.received_on)))
        .bind(cancellation.map(|c| format_date(c.end_date)))
        .bind(cancellation.and_then(|c| c.reason.clone()))
        .bind(cancellation.and_then(|c| c.notes.clone()))
        .bind(cancellation.map(|c| c.final_invoice))
        .bind(cancellation.map(|c| c.restore_auto_extend))
}

/// The writable contract columns, in the order [`bind_contract`] binds them.
const WRITE_COLUMNS: [&str; 30] = [
    "customer",
    "status",
    "time_zone",
    "start_date",
    "end_date",
    "initial_term",
    "original_end_date",
    "minimum_term_end",
    "notice_period",
    "cancellation_window",
    "auto_extend",
    "extension_term",
    "proration",
    "end_reason",
    "end_notes",
    "cancellation_received_on",
    "cancellation_end_date",
    "cancellation_reason",
    "cancellation_notes",
    "cancellation_final_invoice",
    "cancellation_restore_auto_extend",
    "cancellation_date",
    "latest_cancellation_date",
    "due_cancellation_on",
    "due_extension_on",
    "due_expiry_on",
    "due_refresh_on",
    "has_children",
    "updated_at_ms",
    "ref",
];

fn bind_contract<'q>(query: Query<'q>, values: &ContractValues<'_>, now_ms: i64) -> Query<'q> {
    let contract = values.contract;
    let query = query
        .bind(contract.customer.clone())
        .bind(contract.status.as_str())
        .bind(contract.time_zone.name())
        .bind(format_date(contract.start_date))
        .bind(text_date(contract.end_date))
        .bind(contract.initial_term.map(|term| term.to_string()))
        .bind(text_date(contract.original_end_date))
        .bind(text_date(contract.minimum_term_end))
        .bind(contract.notice_period.to_string())
        .bind(contract.cancellation_window.as_str())
        .bind(contract.auto_extend)
        .bind(contract.extension_term.map(|term| term.to_string()))
        .bind(contract.proration.as_str())
        .bind(contract.end_reason.clone())
        .bind(contract.end_notes.clone());
    bind_cancellation(query, values.cancellation())
        .bind(text_date(contract.cancellation_date))
        .bind(text_date(contract.latest_cancellation_date))
        .bind(text_date(values.due.cancellation))
        .bind(text_date(values.due.extension))
        .bind(text_date(values.due.expiry))
        .bind(text_date(values.due.refresh))
        .bind(values.has_children)
        .bind(now_ms)
        .bind(contract.reference.clone())
}

async fn insert_children(
    tx: &mut Transaction<'static, Sqlite>,
    contract_id: i64,
    contract: &Contract,
) -> Result<(), StorageError> {
    for (position, line) in contract.lines.iter().enumerate() {
        let query = sqlx::query(
            "INSERT INTO contract_lines (contract_id, position, ref, description, kind, billable, \
             start_date, end_date, status, amount_minor, currency, billing_period, auto_extend, \
             cancellation_received_on, cancellation_end_date, cancellation_reason, \
             cancellation_notes, cancellation_final_invoice, cancellation_restore_auto_extend) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(contract_id)
        .bind(position as i64)
        .bind(line.reference.clone())
        .bind(line.description.clone())
        .bind(line.kind.as_str())
        .bind(line.billable)
        .bind(format_date(line.start_date))
        .bind(text_date(line.end_date))
        .bind(line.status.as_str())
        .bind(line.amount_minor)
        .bind(line.currency.clone())
        .bind(line.billing_period.map(|period| period.to_string()))
        .bind(line.auto_extend);
        bind_cancellation(query, line.cancellation.as_ref())
            .execute(&mut **tx)
            .await?;
    }
    for (position, schedule) in contract.schedules.iter().enumerate() {
        sqlx::query(
            "INSERT INTO billing_schedules (contract_id, position, line_ref, period_start, \
             period_end, amount_minor, status, document) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(contract_id)
        .bind(position as i64)
        .bind(schedule.line_ref.clone())
        .bind(format_date(schedule.period_start))
        .bind(format_date(schedule.period_end))
        .bind(schedule.amount_minor)
        .bind(schedule.status.as_str())
        .bind(schedule.document.clone())
        .execute(&mut **tx)
        .await?;
    }
    for (position, document) in contract.documents.iter().enumerate() {
        sqlx::query(
            "INSERT INTO billing_documents (contract_id, position, ref, kind, status, \
             consolidated, amount_minor, currency) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(contract_id)
        .bind(position as i64)
        .bind(document.reference.clone())
        .bind(document.kind.as_str())
        .bind(document.status.as_str())
        .bind(document.consolidated)
        .bind(document.amount_minor)
        .bind(document.currency.clone())
        .execute(&mut **tx)
        .await?;
    }
    let references = [
        (
            "renewals",
            contract
                .renewals
                .iter()
                .map(|r| (r.reference.clone(), r.status.as_str()))
                .collect::<Vec<_>>(),
        ),
        (
            "change_requests",
            contract
                .change_requests
                .iter()
                .map(|r| (r.reference.clone(), r.status.as_str()))
                .collect::<Vec<_>>(),
        ),
    ];
    for (table, entries) in references {
        for (position, (reference, status)) in entries.into_iter().enumerate() {
            sqlx::query(&format!(
                "INSERT INTO {table} (contract_id, position, ref, status) VALUES (?, ?, ?, ?)"
            ))
            .bind(contract_id)
            .bind(position as i64)
            .bind(reference)
            .bind(status)
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

async fn delete_children(
    tx: &mut Transaction<'static, Sqlite>,
    contract_id: i64,
) -> Result<(), StorageError> {
    for table in [
        "contract_lines",
        "billing_schedules",
        "billing_documents",
        "renewals",
        "change_requests",
    ] {
        sqlx::query(&format!("DELETE FROM {table} WHERE contract_id = ?"))
            .bind(contract_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

async fn insert_events(
    tx: &mut Transaction<'static, Sqlite>,
    contract_id: i64,
    contract_ref: &str,
    new_version: i64,
    events: &[ContractEvent],
    run_id: Option<&str>,
    now_ms: i64,
) -> Result<(), StorageError> {
    for (index, event) in events.iter().enumerate() {
        let key = transition_key(event, new_version, index);
        let inserted = sqlx::query(
            "INSERT INTO contract_events (contract_id, contract_ref, kind, effective_on, line_ref, \
             details, transition_key, run_id, recorded_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (contract_id, transition_key) DO NOTHING",
        )
        .bind(contract_id)
        .bind(contract_ref)
        .bind(event.kind.as_str())
        .bind(format_date(event.effective_on))
        .bind(event.line_ref.clone())
        .bind(event.details.to_string())
        .bind(key.clone())
        .bind(run_id)
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StorageError::DuplicateTransition {
                contract_ref: contract_ref.to_string(),
                transition_key: key,
            });
        }
    }
    Ok(())
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
        Ok(migrator()
            .iter()
            .all(|migration| versions.contains(&migration.version)))
    }

    async fn insert_contracts(
        &self,
        contracts: &[NewContract],
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let mut tx = self.write().await?;
        let insert = format!(
            "INSERT INTO contracts ({}) VALUES ({}) ON CONFLICT (ref) DO NOTHING RETURNING id",
            WRITE_COLUMNS.join(", "),
            vec!["?"; WRITE_COLUMNS.len()].join(", ")
        );
        for new in contracts {
            let values = ContractValues::of(&new.contract);
            let id: Option<i64> = bind_contract(sqlx::query(&insert), &values, now_ms)
                .fetch_optional(&mut *tx)
                .await?
                .map(|row| row.try_get(0))
                .transpose()?;
            let Some(id) = id else {
                return Err(StorageError::DuplicateReference(
                    new.contract.reference.clone(),
                ));
            };
            insert_children(&mut tx, id, &new.contract).await?;
            let event = imported_event(&new.contract, new.imported_on);
            insert_events(
                &mut tx,
                id,
                &new.contract.reference,
                1,
                &[event],
                None,
                now_ms,
            )
            .await?;
            sqlx::query("INSERT INTO contract_zones (time_zone) VALUES (?) ON CONFLICT DO NOTHING")
                .bind(new.contract.time_zone.name())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn existing_references(
        &self,
        references: &[String],
    ) -> Result<Vec<String>, StorageError> {
        let mut existing = Vec::new();
        for chunk in references.chunks(500) {
            let placeholders = vec!["?"; chunk.len()].join(", ");
            let sql = format!("SELECT ref FROM contracts WHERE ref IN ({placeholders})");
            let mut query = sqlx::query_scalar::<_, String>(&sql);
            for reference in chunk {
                query = query.bind(reference);
            }
            existing.extend(query.fetch_all(&self.pool).await?);
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
        Ok(self.assemble_rows(rows, false).await?.into_iter().next())
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
        self.assemble_rows(rows, false).await
    }

    async fn events(&self, reference: &str) -> Result<Vec<StoredEvent>, StorageError> {
        let rows = sqlx::query(
            "SELECT kind, effective_on, line_ref, details, transition_key, run_id, recorded_at_ms \
             FROM contract_events WHERE contract_ref = ? ORDER BY id",
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
        let rows = query.bind(i64::from(limit)).fetch_all(&self.pool).await?;
        self.assemble_rows(rows, true).await
    }

    async fn commit_batch(
        &self,
        progress: Option<BatchProgress<'_>>,
        changes: &[ContractChange],
        now_ms: i64,
    ) -> Result<CommitOutcome, StorageError> {
        let mut tx = self.write().await?;
        let update = format!(
            "UPDATE contracts SET version = version + 1, {} WHERE ref = ? AND id = ? AND version = ?",
            WRITE_COLUMNS[..WRITE_COLUMNS.len() - 1]
                .iter()
                .map(|column| format!("{column} = ?"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut outcome = CommitOutcome::default();
        let run_id = progress.as_ref().map(|p| p.claim.run_id.as_str());
        for change in changes {
            let values = ContractValues::of(&change.contract);
            let updated = bind_contract(sqlx::query(&update), &values, now_ms)
                .bind(change.id)
                .bind(change.expected_version)
                .execute(&mut *tx)
                .await?;
            if updated.rows_affected() == 0 {
                outcome.conflicts += 1;
                continue;
            }
            if change.children_changed {
                delete_children(&mut tx, change.id).await?;
                insert_children(&mut tx, change.id, &change.contract).await?;
            }
            insert_events(
                &mut tx,
                change.id,
                &change.contract.reference,
                change.expected_version + 1,
                &change.events,
                run_id,
                now_ms,
            )
            .await?;
            outcome.applied += 1;
        }
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
                status: RunStatus::parse(&status).unwrap_or(RunStatus::Failed),
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

/// How long a failed run waits before a tick retries it.
pub const RETRY_FAILED_RUN_AFTER_MS: i64 = 10_000;

/// The lease and finish time written when a run ends: a succeeded run is closed; a failed one
/// may be retried after a pause; a released one (`Running`, on shutdown) may be taken over at
/// once by the next process.
pub(crate) fn finish_timing(status: RunStatus, now_ms: i64) -> (i64, Option<i64>) {
    match status {
        RunStatus::Succeeded => (now_ms, Some(now_ms)),
        RunStatus::Failed => (now_ms + RETRY_FAILED_RUN_AFTER_MS, Some(now_ms)),
        RunStatus::Running => (0, None),
    }
}
