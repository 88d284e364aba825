//! Rows shared by both databases: reading them back into contracts (through the same
//! parser as import, so a row written by another system is checked by the same rules) and
//! the column values written for a contract.

use std::collections::HashMap;

use chrono::NaiveDate;

use super::LoadedContract;
use crate::contract::record::{
    parse_date, CancellationRecord, ContractRecord, DocumentRecord, LineRecord, ParseDefaults,
    ReferenceRecord, ScheduleRecord,
};
use crate::contract::{Cancellation, Contract};
use crate::lifecycle::DueDates;

/// The contract columns, in the order of [`CONTRACT_COLUMNS`].
pub(crate) const CONTRACT_COLUMNS: &str = "id, ref, version, customer, status, time_zone, \
    start_date, end_date, initial_term, original_end_date, minimum_term_end, notice_period, \
    cancellation_window, auto_extend, extension_term, proration, end_reason, end_notes, \
    cancellation_received_on, cancellation_end_date, cancellation_reason, cancellation_notes, \
    cancellation_final_invoice, cancellation_restore_auto_extend, cancellation_date, \
    latest_cancellation_date, has_children";

/// A contract row with dates as text (PostgreSQL dates are formatted by its module).
#[derive(Debug, Default)]
pub(crate) struct ContractRow {
    pub id: i64,
    pub reference: String,
    pub version: i64,
    pub customer: String,
    pub status: String,
    pub time_zone: String,
    pub start_date: String,
    pub end_date: Option<String>,
    pub initial_term: Option<String>,
    pub original_end_date: Option<String>,
    pub minimum_term_end: Option<String>,
    pub notice_period: String,
    pub cancellation_window: String,
    pub auto_extend: bool,
    pub extension_term: Option<String>,
    pub proration: String,
    pub end_reason: Option<String>,
    pub end_notes: Option<String>,
    pub cancellation: CancellationColumns,
    pub cancellation_date: Option<String>,
    pub latest_cancellation_date: Option<String>,
    pub has_children: bool,
    pub due: Option<NaiveDate>,
}

/// The six columns of a pending cancellation (contract or line).
#[derive(Debug, Default)]
pub(crate) struct CancellationColumns {
    pub received_on: Option<String>,
    pub end_date: Option<String>,
    pub reason: Option<String>,
    pub notes: Option<String>,
    pub final_invoice: Option<bool>,
    pub restore_auto_extend: Option<bool>,
}

impl CancellationColumns {
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

/// A line row with its contract id.
#[derive(Debug)]
pub(crate) struct LineRow {
    pub contract_id: i64,
    pub record: LineRecordParts,
}

/// The columns of a line row.
#[derive(Debug)]
pub(crate) struct LineRecordParts {
    pub reference: String,
    pub description: String,
    pub kind: String,
    pub billable: bool,
    pub start_date: String,
    pub end_date: Option<String>,
    pub status: String,
    pub amount_minor: i64,
    pub currency: String,
    pub billing_period: Option<String>,
    pub auto_extend: bool,
    pub cancellation: CancellationColumns,
}

/// Children of a set of contracts, by contract id.
#[derive(Debug, Default)]
pub(crate) struct Children {
    pub lines: HashMap<i64, Vec<LineRecord>>,
    pub schedules: HashMap<i64, Vec<ScheduleRecord>>,
    pub documents: HashMap<i64, Vec<DocumentRecord>>,
    pub renewals: HashMap<i64, Vec<ReferenceRecord>>,
    pub change_requests: HashMap<i64, Vec<ReferenceRecord>>,
}

impl Children {
    pub fn add_line(&mut self, row: LineRow) {
        let parts = row.record;
        self.lines
            .entry(row.contract_id)
            .or_default()
            .push(LineRecord {
                reference: parts.reference,
                description: parts.description,
                kind: parts.kind,
                billable: parts.billable,
                start_date: parts.start_date,
                end_date: parts.end_date,
                status: Some(parts.status),
                amount_minor: parts.amount_minor,
                currency: parts.currency,
                billing_period: parts.billing_period,
                auto_extend: parts.auto_extend,
                cancellation: parts.cancellation.record(),
            });
    }
}

/// Turn a row and its children into a contract, checked by the import rules.
pub(crate) fn assemble(mut row: ContractRow, children: &mut Children) -> LoadedContract {
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
    };
    let contract = record
        .parse(&ParseDefaults {
            time_zone: chrono_tz::UTC,
        })
        .map(|mut contract| {
            contract.cancellation_date = row.cancellation_date.as_deref().and_then(parse_date);
            contract.latest_cancellation_date =
                row.latest_cancellation_date.as_deref().and_then(parse_date);
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

/// Column values of a contract as written, typed, for both dialects to bind.
pub(crate) struct ContractValues<'a> {
    pub contract: &'a Contract,
    pub due: DueDates,
    pub has_children: bool,
}

impl<'a> ContractValues<'a> {
    pub fn of(contract: &'a Contract) -> Self {
        ContractValues {
            contract,
            due: DueDates::of(contract),
            has_children: !(contract.lines.is_empty()
                && contract.schedules.is_empty()
                && contract.documents.is_empty()
                && contract.renewals.is_empty()
                && contract.change_requests.is_empty()),
        }
    }

    pub fn cancellation(&self) -> Option<&'a Cancellation> {
        self.contract.cancellation.as_ref()
    }
}

/// The SQL fragment that selects candidates of one job: the due column.
pub(crate) fn due_column(job: crate::lifecycle::Job) -> &'static str {
    use crate::lifecycle::Job;
    match job {
        Job::ExecuteCancellations => "due_cancellation_on",
        Job::AutoExtend => "due_extension_on",
        Job::Expire => "due_expiry_on",
        Job::RefreshDeadlines => "due_refresh_on",
    }
}
