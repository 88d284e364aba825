//! Reading rows back, the same way on both databases: one decoder per table, by column name
//! (the names of `columns.rs`), then contracts assembled through the same parser as import,
//! so a row written by another system is checked by the same rules.
//!
//! Each dialect selects columns so that they decode to the same Rust types on both (dates
//! and JSON as text; see [`super::columns::Dialect`]), so one decoder serves both.

use std::collections::HashMap;

use chrono::NaiveDate;
use sqlx::{ColumnIndex, Decode, Row, Type};

use super::columns::{ChildTable, DUE};
use super::packed_record::unpack_record;
use super::shared::run_status;
use super::{
    Backlog, BatchCursor, DeliveryRecord, DeliveryStatus, EndpointState, FeedEvent, FeedPosition,
    LoadedContract, RunClaim, RunCounts, RunKey, RunRecord, StorageError, StoredEvent,
};
use crate::contract::record::{
    parse_date, CancellationRecord, ContractRecord, DocumentRecord, LineRecord, ParseDefaults,
    ReferenceRecord, ScheduleRecord, SentReminderRecord,
};
use crate::lifecycle::Job;

/// A row of either database, read by column name. It bundles the bounds sqlx needs to
/// decode the types both dialects select (text, 64-bit integers, booleans, each maybe
/// NULL), so that a decoder is written once, generic over the database.
pub(crate) trait StoredRow {
    /// A text column.
    fn text(&self, column: &'static str) -> Result<String, sqlx::Error>;
    /// A nullable text column.
    fn optional_text(&self, column: &'static str) -> Result<Option<String>, sqlx::Error>;
    /// A nullable bytes column.
    fn optional_bytes(&self, column: &'static str) -> Result<Option<Vec<u8>>, sqlx::Error>;
    /// An integer column.
    fn integer(&self, column: &'static str) -> Result<i64, sqlx::Error>;
    /// A nullable integer column.
    fn optional_integer(&self, column: &'static str) -> Result<Option<i64>, sqlx::Error>;
    /// A boolean column.
    fn flag(&self, column: &'static str) -> Result<bool, sqlx::Error>;
    /// A nullable boolean column.
    fn optional_flag(&self, column: &'static str) -> Result<Option<bool>, sqlx::Error>;
}

impl<R> StoredRow for R
where
    R: Row,
    &'static str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, column: &'static str) -> Result<String, sqlx::Error> {
        self.try_get(column)
    }

    fn optional_text(&self, column: &'static str) -> Result<Option<String>, sqlx::Error> {
        self.try_get(column)
    }

    fn optional_bytes(&self, column: &'static str) -> Result<Option<Vec<u8>>, sqlx::Error> {
        self.try_get(column)
    }

    fn integer(&self, column: &'static str) -> Result<i64, sqlx::Error> {
        self.try_get(column)
    }

    fn optional_integer(&self, column: &'static str) -> Result<Option<i64>, sqlx::Error> {
        self.try_get(column)
    }

    fn flag(&self, column: &'static str) -> Result<bool, sqlx::Error> {
        self.try_get(column)
    }

    fn optional_flag(&self, column: &'static str) -> Result<Option<bool>, sqlx::Error> {
        self.try_get(column)
    }
}

/// A contract row with dates as text, as the import parser takes them.
#[derive(Debug, Default)]
pub(crate) struct ContractRow {
    /// `id`.
    pub id: i64,
    /// `ref`.
    pub reference: String,
    /// `version`.
    pub version: i64,
    /// `customer`.
    pub customer: String,
    /// `status`.
    pub status: String,
    /// `time_zone`.
    pub time_zone: String,
    /// `start_date`.
    pub start_date: String,
    /// `end_date`.
    pub end_date: Option<String>,
    /// `initial_term`.
    pub initial_term: Option<String>,
    /// `original_end_date`.
    pub original_end_date: Option<String>,
    /// `minimum_term_end`.
    pub minimum_term_end: Option<String>,
    /// `notice_period`.
    pub notice_period: String,
    /// `cancellation_window`.
    pub cancellation_window: String,
    /// `auto_extend`.
    pub auto_extend: bool,
    /// `extension_term`.
    pub extension_term: Option<String>,
    /// `proration`.
    pub proration: String,
    /// `end_reason`.
    pub end_reason: Option<String>,
    /// `end_notes`.
    pub end_notes: Option<String>,
    /// The six `cancellation_*` columns of a pending cancellation.
    pub cancellation: CancellationColumns,
    /// `cancellation_date`: computed, stored so reads need not recompute it.
    pub cancellation_date: Option<String>,
    /// `latest_cancellation_date`: computed, stored likewise.
    pub latest_cancellation_date: Option<String>,
    /// `reminder_lead_times`: the contract's own lead times joined by commas (empty: none),
    /// NULL for the configured ones.
    pub reminder_lead_times: Option<String>,
    /// `reminders_sent`: the keys of the reminders sent, joined by `;`.
    pub reminders_sent: Option<String>,
    /// `next_reminder_on`: computed, stored likewise.
    pub next_reminder_on: Option<String>,
    /// `has_children`: whether the child tables need to be read.
    pub has_children: bool,
    /// The due date the row was selected by, when a job selected it.
    pub due: Option<NaiveDate>,
}

impl ContractRow {
    /// Decode a contract row; `with_due` when it was selected with its due date.
    pub fn decode(row: &impl StoredRow, with_due: bool) -> Result<ContractRow, sqlx::Error> {
        Ok(ContractRow {
            id: row.integer("id")?,
            reference: row.text("ref")?,
            version: row.integer("version")?,
            customer: row.text("customer")?,
            status: row.text("status")?,
            time_zone: row.text("time_zone")?,
            start_date: row.text("start_date")?,
            end_date: row.optional_text("end_date")?,
            initial_term: row.optional_text("initial_term")?,
            original_end_date: row.optional_text("original_end_date")?,
            minimum_term_end: row.optional_text("minimum_term_end")?,
            notice_period: row.text("notice_period")?,
            cancellation_window: row.text("cancellation_window")?,
            auto_extend: row.flag("auto_extend")?,
            extension_term: row.optional_text("extension_term")?,
            proration: row.text("proration")?,
            end_reason: row.optional_text("end_reason")?,
            end_notes: row.optional_text("end_notes")?,
            cancellation: CancellationColumns::decode(row)?,
            cancellation_date: row.optional_text("cancellation_date")?,
            latest_cancellation_date: row.optional_text("latest_cancellation_date")?,
            reminder_lead_times: row.optional_text("reminder_lead_times")?,
            reminders_sent: row.optional_text("reminders_sent")?,
            next_reminder_on: row.optional_text("next_reminder_on")?,
            has_children: row.flag("has_children")?,
            due: if with_due {
                row.optional_text(DUE)?.as_deref().and_then(parse_date)
            } else {
                None
            },
        })
    }

    /// Decode contract rows; `with_due` when they were selected with their due date.
    pub fn decode_all(
        rows: &[impl StoredRow],
        with_due: bool,
    ) -> Result<Vec<ContractRow>, sqlx::Error> {
        rows.iter()
            .map(|row| ContractRow::decode(row, with_due))
            .collect()
    }

    /// The ids of the contracts among `rows` that have rows in child tables: the only ones
    /// the child queries need to ask for.
    pub fn ids_with_children(rows: &[ContractRow]) -> Vec<i64> {
        rows.iter()
            .filter(|row| row.has_children)
            .map(|row| row.id)
            .collect()
    }
}

/// The six columns of a pending cancellation (contract or line: same names in both tables).
#[derive(Debug, Default)]
pub(crate) struct CancellationColumns {
    /// `cancellation_received_on`.
    pub received_on: Option<String>,
    /// `cancellation_end_date`.
    pub end_date: Option<String>,
    /// `cancellation_reason`.
    pub reason: Option<String>,
    /// `cancellation_notes`.
    pub notes: Option<String>,
    /// `cancellation_final_invoice`.
    pub final_invoice: Option<bool>,
    /// `cancellation_restore_auto_extend`.
    pub restore_auto_extend: Option<bool>,
}

impl CancellationColumns {
    /// The columns of a contract or line row.
    fn decode(row: &impl StoredRow) -> Result<CancellationColumns, sqlx::Error> {
        Ok(CancellationColumns {
            received_on: row.optional_text("cancellation_received_on")?,
            end_date: row.optional_text("cancellation_end_date")?,
            reason: row.optional_text("cancellation_reason")?,
            notes: row.optional_text("cancellation_notes")?,
            final_invoice: row.optional_flag("cancellation_final_invoice")?,
            restore_auto_extend: row.optional_flag("cancellation_restore_auto_extend")?,
        })
    }

    /// The pending cancellation as the import parser takes it; none when both dates are
    /// NULL.
    fn record(self) -> Option<CancellationRecord> {
        match (self.received_on, self.end_date) {
            (None, None) => None,
            (received_on, end_date) => Some(CancellationRecord {
                received_on: received_on.unwrap_or_default(),
                end_date: end_date.unwrap_or_default(),
                reason: self.reason,
                notes: self.notes,
                final_invoice: self.final_invoice.unwrap_or(false),
                restore_auto_extend: self.restore_auto_extend.unwrap_or(false),
            }),
        }
    }
}

/// A `contract_lines` row.
fn line(row: &impl StoredRow) -> Result<LineRecord, sqlx::Error> {
    Ok(LineRecord {
        reference: row.text("ref")?,
        description: row.text("description")?,
        kind: row.text("kind")?,
        billable: row.flag("billable")?,
        start_date: row.text("start_date")?,
        end_date: row.optional_text("end_date")?,
        status: Some(row.text("status")?),
        amount_minor: row.integer("amount_minor")?,
        currency: row.text("currency")?,
        billing_period: row.optional_text("billing_period")?,
        auto_extend: row.flag("auto_extend")?,
        cancellation: CancellationColumns::decode(row)?.record(),
    })
}

/// A `billing_schedules` row.
fn schedule(row: &impl StoredRow) -> Result<ScheduleRecord, sqlx::Error> {
    Ok(ScheduleRecord {
        line_ref: row.text("line_ref")?,
        period_start: row.text("period_start")?,
        period_end: row.text("period_end")?,
        amount_minor: row.integer("amount_minor")?,
        status: row.text("status")?,
        document: row.optional_text("document")?,
    })
}

/// A `billing_documents` row.
fn document(row: &impl StoredRow) -> Result<DocumentRecord, sqlx::Error> {
    Ok(DocumentRecord {
        reference: row.text("ref")?,
        kind: row.text("kind")?,
        status: row.text("status")?,
        consolidated: row.flag("consolidated")?,
        amount_minor: row.integer("amount_minor")?,
        currency: row.text("currency")?,
    })
}

/// A `renewals` or `change_requests` row.
fn reference(row: &impl StoredRow) -> Result<ReferenceRecord, sqlx::Error> {
    Ok(ReferenceRecord {
        reference: row.text("ref")?,
        status: row.text("status")?,
    })
}

/// Children of a set of contracts, by contract id.
#[derive(Debug, Default)]
pub(crate) struct Children {
    /// Lines, in position order.
    pub lines: HashMap<i64, Vec<LineRecord>>,
    /// Billing schedules, in position order.
    pub schedules: HashMap<i64, Vec<ScheduleRecord>>,
    /// Billing documents, in position order.
    pub documents: HashMap<i64, Vec<DocumentRecord>>,
    /// Renewals, in position order.
    pub renewals: HashMap<i64, Vec<ReferenceRecord>>,
    /// Change requests, in position order.
    pub change_requests: HashMap<i64, Vec<ReferenceRecord>>,
}

impl Children {
    /// Add the rows read from `table` (in contract, position order), each under its
    /// `contract_id`.
    pub fn add(&mut self, table: ChildTable, rows: &[impl StoredRow]) -> Result<(), sqlx::Error> {
        for row in rows {
            let id = row.integer("contract_id")?;
            match table {
                ChildTable::Lines => self.lines.entry(id).or_default().push(line(row)?),
                ChildTable::Schedules => {
                    self.schedules.entry(id).or_default().push(schedule(row)?);
                }
                ChildTable::Documents => {
                    self.documents.entry(id).or_default().push(document(row)?);
                }
                ChildTable::Renewals => {
                    self.renewals.entry(id).or_default().push(reference(row)?);
                }
                ChildTable::ChangeRequests => {
                    let requests = self.change_requests.entry(id).or_default();
                    requests.push(reference(row)?);
                }
            }
        }
        Ok(())
    }

    /// Turn contract rows and their children into contracts, checked by the import rules.
    pub fn assemble(mut self, rows: Vec<ContractRow>) -> Vec<LoadedContract> {
        rows.into_iter()
            .map(|row| assemble(row, &mut self))
            .collect()
    }
}

/// Turn a row and its children into a contract, checked by the import rules.
fn assemble(mut row: ContractRow, children: &mut Children) -> LoadedContract {
    let id = row.id;
    let cancellation = std::mem::take(&mut row.cancellation).record();
    let record = ContractRecord {
        reference: row.reference.clone(),
        customer: row.customer,
        status: Some(row.status),
        time_zone: Some(row.time_zone),
        start_date: row.start_date,
        end_date: row.end_date,
        initial_term: row.initial_term,
        original_end_date: row.original_end_date,
        minimum_term_end: row.minimum_term_end,
        notice_period: Some(row.notice_period),
        cancellation_window: row.cancellation_window,
        auto_extend: row.auto_extend,
        extension_term: row.extension_term,
        proration: Some(row.proration),
        lines: children.lines.remove(&id).unwrap_or_default(),
        schedules: children.schedules.remove(&id).unwrap_or_default(),
        documents: children.documents.remove(&id).unwrap_or_default(),
        cancellation,
        end_reason: row.end_reason,
        end_notes: row.end_notes,
        cancellation_date: None,
        latest_cancellation_date: None,
        renewals: children.renewals.remove(&id).unwrap_or_default(),
        change_requests: children.change_requests.remove(&id).unwrap_or_default(),
        reminder_lead_times: row.reminder_lead_times.map(|text| {
            if text.is_empty() {
                Vec::new()
            } else {
                text.split(',').map(str::to_string).collect()
            }
        }),
        reminders_sent: row
            .reminders_sent
            .as_deref()
            .map(sent_reminder_records)
            .unwrap_or_default(),
        next_reminder_on: None,
    };
    let contract = record
        .parse(&ParseDefaults {
            time_zone: chrono_tz::UTC,
        })
        .map(|mut contract| {
            contract.cancellation_date = row.cancellation_date.as_deref().and_then(parse_date);
            contract.latest_cancellation_date =
                row.latest_cancellation_date.as_deref().and_then(parse_date);
            contract.reminders.next_on = row.next_reminder_on.as_deref().and_then(parse_date);
            contract
        });
    LoadedContract {
        id,
        version: row.version,
        reference: row.reference,
        due: row.due,
        contract,
    }
}

/// The stored `reminders_sent` column (`kind:date:lead_time` keys joined by `;`) as records,
/// for the parser to check: a malformed key becomes a record whose fields are refused.
fn sent_reminder_records(text: &str) -> Vec<SentReminderRecord> {
    text.split(';')
        .filter(|key| !key.is_empty())
        .map(|key| {
            let mut parts = key.splitn(3, ':');
            let mut next = || parts.next().unwrap_or_default().to_string();
            SentReminderRecord {
                kind: next(),
                date: next(),
                lead_time: next(),
            }
        })
        .collect()
}

/// A `contract_events` row of the contract `contract_ref`. A date that is not one is an
/// error naming the row: the history must not show a made-up date.
pub(crate) fn event(row: &impl StoredRow, contract_ref: &str) -> Result<StoredEvent, StorageError> {
    let effective_on = row.text("effective_on")?;
    let Some(date) = parse_date(&effective_on) else {
        return Err(StorageError::InvalidValue {
            table: "contract_events",
            column: "effective_on",
            row: format!("id {} (contract '{contract_ref}')", row.integer("id")?),
            value: effective_on,
        });
    };
    let details = row.text("details")?;
    Ok(StoredEvent {
        kind: row.text("kind")?,
        effective_on: date,
        line_ref: row.optional_text("line_ref")?,
        details: serde_json::from_str(&details).unwrap_or(serde_json::Value::String(details)),
        transition_key: row.text("transition_key")?,
        run_id: row.optional_text("run_id")?,
        recorded_at_ms: row.integer("recorded_at_ms")?,
    })
}

/// The key of a `job_runs` row; `None` for a job or date this version cannot read (a row
/// written by another version), which the listings leave out.
pub(crate) fn run_key(row: &impl StoredRow) -> Result<Option<RunKey>, sqlx::Error> {
    let job = row.text("job")?;
    let zone = row.text("zone")?;
    let date = row.text("business_date")?;
    Ok(match (Job::parse(&job), parse_date(&date)) {
        (Some(job), Some(business_date)) => Some(RunKey {
            job,
            zone,
            business_date,
        }),
        _ => None,
    })
}

/// A `job_runs` row as listed; `None` when its key cannot be read ([`run_key`]).
pub(crate) fn run_record(row: &impl StoredRow) -> Result<Option<RunRecord>, sqlx::Error> {
    let Some(key) = run_key(row)? else {
        return Ok(None);
    };
    Ok(Some(RunRecord {
        key,
        run_id: row.text("run_id")?,
        owner: row.text("owner")?,
        status: run_status(&row.text("status")?),
        attempts: row.integer("attempts")?,
        batches: row.integer("batches")?,
        counts: run_counts(row)?,
        error: row.optional_text("error")?,
        started_at_ms: row.integer("started_at_ms")?,
        finished_at_ms: row.optional_integer("finished_at_ms")?,
    }))
}

/// The counts of a `job_runs` row.
fn run_counts(row: &impl StoredRow) -> Result<RunCounts, sqlx::Error> {
    Ok(RunCounts {
        examined: row.integer("examined")?,
        changed: row.integer("changed")?,
        skipped: row.integer("skipped")?,
    })
}

/// The `job_runs` row of `key` just claimed.
pub(crate) fn run_claim(row: &impl StoredRow, key: &RunKey) -> Result<RunClaim, sqlx::Error> {
    let cursor_due = row.optional_text("cursor_due")?;
    let cursor_id = row.optional_integer("cursor_id")?;
    Ok(RunClaim {
        row_id: row.integer("id")?,
        run_id: row.text("run_id")?,
        key: key.clone(),
        cursor: match (cursor_due.as_deref().and_then(parse_date), cursor_id) {
            (Some(due), Some(id)) => Some(BatchCursor { due, id }),
            _ => None,
        },
        counts: run_counts(row)?,
        attempts: row.integer("attempts")?,
    })
}

/// A stored JSON document as text: the document, or the text as a JSON string when another
/// system stored something that is not JSON (as [`event`] does with details).
fn json_value(text: String) -> serde_json::Value {
    serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
}

/// The feed position of a `contract_events` row (`tx_id`, `id`).
pub(crate) fn feed_position(row: &impl StoredRow) -> Result<FeedPosition, sqlx::Error> {
    Ok(FeedPosition {
        transaction: row.integer("tx_id")?,
        id: row.integer("id")?,
    })
}

/// What fan-out needs of a feed event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FeedEntry {
    /// Where it stands in the feed: the endpoint's cursor moves past it.
    pub position: FeedPosition,
    /// Its contract, stored with the delivery for the per-contract order.
    pub contract_id: i64,
    /// Its kind, matched against the subscription.
    pub kind: String,
}

/// A feed row as fan-out reads it ([`super::columns::FEED_ENTRY_COLUMNS`]).
pub(crate) fn feed_entry(row: &impl StoredRow) -> Result<FeedEntry, sqlx::Error> {
    Ok(FeedEntry {
        position: feed_position(row)?,
        contract_id: row.integer("contract_id")?,
        kind: row.text("kind")?,
    })
}

/// A feed row ([`super::columns::FEED_COLUMNS`]). A date that is not one is an error naming
/// the row, as in [`event`]: a webhook must not carry a made-up date.
pub(crate) fn feed_event(row: &impl StoredRow) -> Result<FeedEvent, StorageError> {
    let position = feed_position(row)?;
    let contract_ref = row.text("contract_ref")?;
    let effective_on = row.text("effective_on")?;
    let Some(date) = parse_date(&effective_on) else {
        return Err(StorageError::InvalidValue {
            table: "contract_events",
            column: "effective_on",
            row: format!("id {} (contract '{contract_ref}')", position.id),
            value: effective_on,
        });
    };
    let contract = match row.optional_bytes("contract_record")? {
        None => None,
        Some(stored) => Some(json_value(unpack_record(stored).map_err(|error| {
            StorageError::InvalidValue {
                table: "contract_events",
                column: "contract_record",
                row: format!("id {} (contract '{contract_ref}')", position.id),
                value: format!("a record that cannot be unpacked: {error}"),
            }
        })?)),
    };
    Ok(FeedEvent {
        position,
        contract_id: row.integer("contract_id")?,
        contract_ref,
        kind: row.text("kind")?,
        effective_on: date,
        line_ref: row.optional_text("line_ref")?,
        details: json_value(row.text("details")?),
        contract,
        recorded_at_ms: row.integer("recorded_at_ms")?,
    })
}

/// An endpoint's feed cursor ([`super::columns::CURSOR_COLUMNS`]).
pub(crate) fn cursor(row: &impl StoredRow) -> Result<FeedPosition, sqlx::Error> {
    Ok(FeedPosition {
        transaction: row.integer("cursor_tx")?,
        id: row.integer("cursor_id")?,
    })
}

/// A delivery just claimed ([`super::columns::CLAIMED_COLUMNS`]); its event is read apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClaimedRow {
    /// `id`.
    pub id: i64,
    /// `endpoint`.
    pub endpoint: String,
    /// `attempts`: made before this one.
    pub attempts: i64,
    /// `event_id`: the event to send.
    pub event_id: i64,
}

impl ClaimedRow {
    /// Decode a claimed delivery.
    pub fn decode(row: &impl StoredRow) -> Result<ClaimedRow, sqlx::Error> {
        Ok(ClaimedRow {
            id: row.integer("id")?,
            endpoint: row.text("endpoint")?,
            attempts: row.integer("attempts")?,
            event_id: row.integer("event_id")?,
        })
    }
}

/// A delivery as listed ([`super::columns::DELIVERY_COLUMNS`] and
/// [`super::columns::DELIVERY_EVENT_COLUMNS`]). A status or HTTP status this version cannot
/// read is an error naming the row rather than a made-up value.
pub(crate) fn delivery_record(row: &impl StoredRow) -> Result<DeliveryRecord, StorageError> {
    let id = row.integer("id")?;
    let invalid = |column: &'static str, value: String| StorageError::InvalidValue {
        table: "webhook_deliveries",
        column,
        row: format!("id {id}"),
        value,
    };
    let stored_status = row.text("status")?;
    let Some(status) = DeliveryStatus::parse(&stored_status) else {
        return Err(invalid("status", stored_status));
    };
    let last_status = match row.optional_integer("last_status")? {
        None => None,
        Some(code) => {
            Some(u16::try_from(code).map_err(|_| invalid("last_status", code.to_string()))?)
        }
    };
    Ok(DeliveryRecord {
        id,
        endpoint: row.text("endpoint")?,
        event_id: row.integer("event_id")?,
        kind: row.text("kind")?,
        contract_ref: row.text("contract_ref")?,
        status,
        attempts: row.integer("attempts")?,
        last_status,
        last_error: row.optional_text("last_error")?,
        last_attempt_ms: row.optional_integer("last_attempt_ms")?,
        next_attempt_ms: match status {
            DeliveryStatus::Pending => row.optional_integer("next_attempt_ms")?,
            DeliveryStatus::Delivered | DeliveryStatus::Failed => None,
        },
    })
}

/// An endpoint's state ([`super::columns::ENDPOINT_COLUMNS`]).
pub(crate) fn endpoint_state(row: &impl StoredRow) -> Result<EndpointState, sqlx::Error> {
    Ok(EndpointState {
        endpoint: row.text("name")?,
        disabled_at_ms: row.optional_integer("disabled_at_ms")?,
        disabled_reason: row.optional_text("disabled_reason")?,
    })
}

/// An endpoint's backlog ([`super::columns::BACKLOG_COLUMNS`]).
pub(crate) fn backlog(row: &impl StoredRow) -> Result<Backlog, sqlx::Error> {
    Ok(Backlog {
        endpoint: row.text("endpoint")?,
        pending: row.integer("pending")?,
        oldest_pending_recorded_ms: row.optional_integer("oldest_pending_recorded_ms")?,
        failed: row.integer("failed")?,
    })
}
