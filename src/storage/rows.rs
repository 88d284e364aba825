//! Rows shared by both databases: reading them back into contracts (through the same
//! parser as import, so a row written by another system is checked by the same rules) and
//! the column values written for a contract.

use std::borrow::Cow;
use std::collections::HashMap;

use chrono::NaiveDate;

use super::LoadedContract;
use crate::calendar::Period;
use crate::contract::record::{
    parse_date, CancellationRecord, ContractRecord, DocumentRecord, LineRecord, ParseDefaults,
    ReferenceRecord, ScheduleRecord,
};
use crate::contract::Contract;
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

/// A contract with the stored values derived from it (due dates, whether it has children).
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
            has_children: ChildTable::ALL.iter().any(|table| table.has_rows(contract)),
        }
    }
}

/// The SQL type of a contract column (SQLite stores dates as text, booleans as integers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColumnType {
    Text,
    Date,
    Bool,
}

/// One contract column's value, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ColumnValue<'a> {
    Text(Option<Cow<'a, str>>),
    Date(Option<NaiveDate>),
    Bool(Option<bool>),
}

macro_rules! contract_columns {
    ($($variant:ident => $name:literal : $kind:ident),+ $(,)?) => {
        /// The contract columns a write sets (all but `id`, `ref`, `version` and
        /// `updated_at_ms`), in table order.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum ContractColumn { $($variant),+ }

        impl ContractColumn {
            /// Every column, in table order; a column's index is its bit in [`ChangedParts`].
            pub const ALL: &'static [ContractColumn] = &[$(ContractColumn::$variant),+];

            /// The column's name.
            pub fn name(self) -> &'static str {
                match self { $(ContractColumn::$variant => $name),+ }
            }

            /// The column's SQL type.
            pub fn sql_type(self) -> ColumnType {
                match self { $(ContractColumn::$variant => ColumnType::$kind),+ }
            }
        }
    };
}

contract_columns! {
    Customer => "customer": Text,
    Status => "status": Text,
    TimeZone => "time_zone": Text,
    StartDate => "start_date": Date,
    EndDate => "end_date": Date,
    InitialTerm => "initial_term": Text,
    OriginalEndDate => "original_end_date": Date,
    MinimumTermEnd => "minimum_term_end": Date,
    NoticePeriod => "notice_period": Text,
    CancellationWindow => "cancellation_window": Text,
    AutoExtend => "auto_extend": Bool,
    ExtensionTerm => "extension_term": Text,
    Proration => "proration": Text,
    EndReason => "end_reason": Text,
    EndNotes => "end_notes": Text,
    CancellationReceivedOn => "cancellation_received_on": Date,
    CancellationEndDate => "cancellation_end_date": Date,
    CancellationReason => "cancellation_reason": Text,
    CancellationNotes => "cancellation_notes": Text,
    CancellationFinalInvoice => "cancellation_final_invoice": Bool,
    CancellationRestoreAutoExtend => "cancellation_restore_auto_extend": Bool,
    CancellationDate => "cancellation_date": Date,
    LatestCancellationDate => "latest_cancellation_date": Date,
    DueCancellationOn => "due_cancellation_on": Date,
    DueExtensionOn => "due_extension_on": Date,
    DueExpiryOn => "due_expiry_on": Date,
    DueRefreshOn => "due_refresh_on": Date,
    HasChildren => "has_children": Bool,
}

fn text(value: &str) -> ColumnValue<'_> {
    ColumnValue::Text(Some(Cow::Borrowed(value)))
}

fn optional_text(value: Option<&str>) -> ColumnValue<'_> {
    ColumnValue::Text(value.map(Cow::Borrowed))
}

fn period(value: Option<Period>) -> ColumnValue<'static> {
    ColumnValue::Text(value.map(|period| Cow::Owned(period.to_string())))
}

impl ContractColumn {
    /// The value this column gets for a contract.
    pub fn value<'a>(self, values: &ContractValues<'a>) -> ColumnValue<'a> {
        use ContractColumn as C;
        let contract = values.contract;
        let pending = contract.cancellation.as_ref();
        match self {
            C::Customer => text(&contract.customer),
            C::Status => text(contract.status.as_str()),
            C::TimeZone => text(contract.time_zone.name()),
            C::StartDate => ColumnValue::Date(Some(contract.start_date)),
            C::EndDate => ColumnValue::Date(contract.end_date),
            C::InitialTerm => period(contract.initial_term),
            C::OriginalEndDate => ColumnValue::Date(contract.original_end_date),
            C::MinimumTermEnd => ColumnValue::Date(contract.minimum_term_end),
            C::NoticePeriod => period(Some(contract.notice_period)),
            C::CancellationWindow => text(contract.cancellation_window.as_str()),
            C::AutoExtend => ColumnValue::Bool(Some(contract.auto_extend)),
            C::ExtensionTerm => period(contract.extension_term),
            C::Proration => text(contract.proration.as_str()),
            C::EndReason => optional_text(contract.end_reason.as_deref()),
            C::EndNotes => optional_text(contract.end_notes.as_deref()),
            C::CancellationReceivedOn => ColumnValue::Date(pending.map(|c| c.received_on)),
            C::CancellationEndDate => ColumnValue::Date(pending.map(|c| c.end_date)),
            C::CancellationReason => optional_text(pending.and_then(|c| c.reason.as_deref())),
            C::CancellationNotes => optional_text(pending.and_then(|c| c.notes.as_deref())),
            C::CancellationFinalInvoice => ColumnValue::Bool(pending.map(|c| c.final_invoice)),
            C::CancellationRestoreAutoExtend => {
                ColumnValue::Bool(pending.map(|c| c.restore_auto_extend))
            }
            C::CancellationDate => ColumnValue::Date(contract.cancellation_date),
            C::LatestCancellationDate => ColumnValue::Date(contract.latest_cancellation_date),
            C::DueCancellationOn => ColumnValue::Date(values.due.cancellation),
            C::DueExtensionOn => ColumnValue::Date(values.due.extension),
            C::DueExpiryOn => ColumnValue::Date(values.due.expiry),
            C::DueRefreshOn => ColumnValue::Date(values.due.refresh),
            C::HasChildren => ColumnValue::Bool(Some(values.has_children)),
        }
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// The child tables, in the order both dialects write them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChildTable {
    Lines,
    Schedules,
    Documents,
    Renewals,
    ChangeRequests,
}

impl ChildTable {
    /// Every child table; a table's index is its bit in [`ChangedParts`].
    pub const ALL: [ChildTable; 5] = [
        ChildTable::Lines,
        ChildTable::Schedules,
        ChildTable::Documents,
        ChildTable::Renewals,
        ChildTable::ChangeRequests,
    ];

    /// The table's name.
    pub fn name(self) -> &'static str {
        match self {
            ChildTable::Lines => "contract_lines",
            ChildTable::Schedules => "billing_schedules",
            ChildTable::Documents => "billing_documents",
            ChildTable::Renewals => "renewals",
            ChildTable::ChangeRequests => "change_requests",
        }
    }

    /// Whether the contract has rows in this table.
    pub fn has_rows(self, contract: &Contract) -> bool {
        match self {
            ChildTable::Lines => !contract.lines.is_empty(),
            ChildTable::Schedules => !contract.schedules.is_empty(),
            ChildTable::Documents => !contract.documents.is_empty(),
            ChildTable::Renewals => !contract.renewals.is_empty(),
            ChildTable::ChangeRequests => !contract.change_requests.is_empty(),
        }
    }

    /// Whether the table's rows of two states of a contract differ.
    fn differs(self, before: &Contract, after: &Contract) -> bool {
        match self {
            ChildTable::Lines => before.lines != after.lines,
            ChildTable::Schedules => before.schedules != after.schedules,
            ChildTable::Documents => before.documents != after.documents,
            ChildTable::Renewals => before.renewals != after.renewals,
            ChildTable::ChangeRequests => before.change_requests != after.change_requests,
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// Which contract columns and child tables a change writes: exactly those whose stored values
/// differ between the state it was computed from and the new state. Changes with the same
/// parts are written by one statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) struct ChangedParts {
    /// One bit per [`ContractColumn`].
    columns: u32,
    /// One bit per [`ChildTable`].
    tables: u8,
}

impl ChangedParts {
    /// What differs between `before` (the stored state) and `after`.
    pub(crate) fn between(before: &Contract, after: &Contract) -> ChangedParts {
        let (old, new) = (ContractValues::of(before), ContractValues::of(after));
        let mut parts = ChangedParts::default();
        for column in ContractColumn::ALL {
            if column.value(&old) != column.value(&new) {
                parts.columns |= column.bit();
            }
        }
        for table in ChildTable::ALL {
            if table.differs(before, after) {
                parts.tables |= table.bit();
            }
        }
        parts
    }

    /// Every column and every child table (a new contract).
    pub(crate) fn everything() -> ChangedParts {
        ChangedParts {
            columns: ContractColumn::ALL
                .iter()
                .fold(0, |bits, column| bits | column.bit()),
            tables: ChildTable::ALL
                .iter()
                .fold(0, |bits, table| bits | table.bit()),
        }
    }

    /// Everything either changes.
    pub(crate) fn union(self, other: ChangedParts) -> ChangedParts {
        ChangedParts {
            columns: self.columns | other.columns,
            tables: self.tables | other.tables,
        }
    }

    /// The changed columns, in table order.
    pub(crate) fn columns(self) -> impl Iterator<Item = ContractColumn> {
        ContractColumn::ALL
            .iter()
            .copied()
            .filter(move |column| self.columns & column.bit() != 0)
    }

    /// The child tables to rewrite, in write order.
    pub(crate) fn tables(self) -> impl Iterator<Item = ChildTable> {
        ChildTable::ALL
            .into_iter()
            .filter(move |table| self.tables & table.bit() != 0)
    }

    /// Whether this child table is rewritten.
    pub(crate) fn rewrites(self, table: ChildTable) -> bool {
        self.tables & table.bit() != 0
    }

    /// `rows` (a contract's rows of `table`) when that table is rewritten, none otherwise.
    pub(crate) fn rows_of<T>(self, table: ChildTable, rows: &[T]) -> &[T] {
        if self.rewrites(table) {
            rows
        } else {
            &[]
        }
    }

    /// Whether any child table is rewritten.
    pub(crate) fn rewrites_children(self) -> bool {
        self.tables != 0
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::record::read_record;
    use crate::contract::{ContractStatus, LineStatus};

    fn contract() -> Contract {
        let line = r#"{"ref":"C-1","customer":"Bakery","time_zone":"Europe/Berlin",
            "start_date":"2025-01-01","end_date":"2025-12-31","notice_period":"1M",
            "cancellation_window":"end_of_term","auto_extend":true,"extension_term":"1Y",
            "lines":[{"ref":"seat","description":"Seat","kind":"recurring_fixed",
            "billable":true,"start_date":"2025-01-01","status":"active","amount_minor":1000,
            "currency":"EUR","billing_period":"1M"}]}"#
            .replace('\n', "");
        read_record(&line)
            .and_then(|record| {
                record.parse(&ParseDefaults {
                    time_zone: chrono_tz::UTC,
                })
            })
            .expect("a valid contract")
    }

    fn columns(parts: ChangedParts) -> Vec<&'static str> {
        parts.columns().map(ContractColumn::name).collect()
    }

    #[test]
    fn an_unchanged_contract_writes_nothing() {
        let before = contract();
        let parts = ChangedParts::between(&before, &before.clone());
        assert_eq!(parts, ChangedParts::default());
        assert!(!parts.rewrites_children());
    }

    #[test]
    fn a_status_change_writes_the_status_and_the_due_dates_it_moves() {
        let before = contract();
        let mut after = before.clone();
        after.status = ContractStatus::Expired;
        let parts = ChangedParts::between(&before, &after);
        assert_eq!(
            columns(parts),
            ["status", "due_extension_on", "due_expiry_on"]
        );
        assert!(!parts.rewrites_children());
    }

    #[test]
    fn a_line_change_rewrites_the_lines_only() {
        let before = contract();
        let mut after = before.clone();
        after.lines[0].status = LineStatus::Expired;
        after.end_notes = Some("noted".to_string());
        let parts = ChangedParts::between(&before, &after);
        // The line no longer ends anything: the expiry due date is the contract's own.
        assert_eq!(columns(parts), ["end_notes"]);
        assert_eq!(parts.tables().collect::<Vec<_>>(), [ChildTable::Lines]);
    }

    #[test]
    fn a_new_contract_writes_every_column_and_table() {
        let everything = ChangedParts::everything();
        assert_eq!(everything.columns().count(), ContractColumn::ALL.len());
        assert_eq!(everything.tables().count(), ChildTable::ALL.len());
        let union = ChangedParts::default().union(everything);
        assert_eq!(union, everything);
    }
}
