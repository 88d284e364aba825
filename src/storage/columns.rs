//! The columns of every table, written down once: what both dialects select, what they
//! insert, and the values a contract gives its columns. The decoders (`rows.rs`) read the
//! same names; a dialect only decides how a column is spelled in its SQL ([`Dialect`]).
//!
//! Adding a contract column means a migration per dialect, a line in `contract_columns!`
//! (and [`ContractColumn::value`]), and the field of the record it is read into.

use std::borrow::Cow;

use chrono::NaiveDate;

use crate::calendar::Period;
use crate::contract::Contract;
use crate::lifecycle::{DueDates, Job};

/// How a column is stored, as far as reading and writing it differ between the dialects:
/// SQLite stores dates and JSON as text and booleans as integers; PostgreSQL has `date`,
/// `jsonb` and `boolean`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SqlType {
    /// A 64-bit integer (ids, positions, amounts, counts, instants in ms).
    Integer,
    /// Text.
    Text,
    /// A calendar date, read back as `YYYY-MM-DD` text on both dialects.
    Date,
    /// A boolean.
    Bool,
    /// A JSON document, read back as text on both dialects.
    Json,
    /// Bytes (PostgreSQL's `bytea`, a SQLite blob), read back as bytes on both dialects; on
    /// SQLite a value stored as text is read as its bytes. The event's contract record
    /// (`packed_record.rs`).
    Bytes,
    /// The id of the transaction that wrote a row (PostgreSQL's `xid8`), read back as a
    /// 64-bit integer; SQLite has none and reads 0.
    Transaction,
}

/// A column of a table: its name (what the decoders read it by) and how it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Column {
    /// The column's name, also the name it is selected under.
    pub name: &'static str,
    /// How it is stored.
    pub sql_type: SqlType,
}

impl Column {
    /// The column `name` of type `sql_type`.
    pub const fn new(name: &'static str, sql_type: SqlType) -> Column {
        Column { name, sql_type }
    }
}

use SqlType::{Bool, Bytes, Date, Integer, Json, Text, Transaction};

/// The contract columns no write sets, read before [`ContractColumn::ALL`]'s.
const CONTRACT_KEY_COLUMNS: [Column; 3] = [
    Column::new("id", Integer),
    Column::new("ref", Text),
    Column::new("version", Integer),
];

/// The contract columns reads select: the key columns, then every written column that is
/// read back, in table order.
pub(crate) fn contract_read_columns() -> impl Iterator<Item = Column> {
    CONTRACT_KEY_COLUMNS.into_iter().chain(
        ContractColumn::ALL
            .iter()
            .filter(|column| column.read_back())
            .map(|column| column.column()),
    )
}

/// `contract_lines`, as written.
const LINE_COLUMNS: [Column; 19] = [
    Column::new("contract_id", Integer),
    Column::new("position", Integer),
    Column::new("ref", Text),
    Column::new("description", Text),
    Column::new("kind", Text),
    Column::new("billable", Bool),
    Column::new("start_date", Date),
    Column::new("end_date", Date),
    Column::new("status", Text),
    Column::new("amount_minor", Integer),
    Column::new("currency", Text),
    Column::new("billing_period", Text),
    Column::new("auto_extend", Bool),
    Column::new("cancellation_received_on", Date),
    Column::new("cancellation_end_date", Date),
    Column::new("cancellation_reason", Text),
    Column::new("cancellation_notes", Text),
    Column::new("cancellation_final_invoice", Bool),
    Column::new("cancellation_restore_auto_extend", Bool),
];

/// `billing_schedules`, as written.
const SCHEDULE_COLUMNS: [Column; 8] = [
    Column::new("contract_id", Integer),
    Column::new("position", Integer),
    Column::new("line_ref", Text),
    Column::new("period_start", Date),
    Column::new("period_end", Date),
    Column::new("amount_minor", Integer),
    Column::new("status", Text),
    Column::new("document", Text),
];

/// `billing_documents`, as written.
const DOCUMENT_COLUMNS: [Column; 8] = [
    Column::new("contract_id", Integer),
    Column::new("position", Integer),
    Column::new("ref", Text),
    Column::new("kind", Text),
    Column::new("status", Text),
    Column::new("consolidated", Bool),
    Column::new("amount_minor", Integer),
    Column::new("currency", Text),
];

/// `renewals` and `change_requests`, as written.
const REFERENCE_COLUMNS: [Column; 4] = [
    Column::new("contract_id", Integer),
    Column::new("position", Integer),
    Column::new("ref", Text),
    Column::new("status", Text),
];

/// `contract_events`, as read for a contract's history.
pub(crate) const EVENT_COLUMNS: [Column; 8] = [
    Column::new("id", Integer),
    Column::new("kind", Text),
    Column::new("effective_on", Date),
    Column::new("line_ref", Text),
    Column::new("details", Json),
    Column::new("transition_key", Text),
    Column::new("run_id", Text),
    Column::new("recorded_at_ms", Integer),
];

/// `contract_events`, as the feed and the webhooks carry them. `tx_id` is the transaction of
/// the event's feed position (see [`Dialect::transaction_as_integer`]); the first four are
/// what fan-out reads ([`FEED_ENTRY_COLUMNS`]), the first two the position.
pub(crate) const FEED_COLUMNS: [Column; 10] = [
    Column::new("tx_id", Transaction),
    Column::new("id", Integer),
    Column::new("contract_id", Integer),
    Column::new("kind", Text),
    Column::new("contract_ref", Text),
    Column::new("effective_on", Date),
    Column::new("line_ref", Text),
    Column::new("details", Json),
    Column::new("contract_record", Bytes),
    Column::new("recorded_at_ms", Integer),
];

/// An event's feed position.
pub(crate) const FEED_POSITION_COLUMNS: &[Column] = FEED_COLUMNS.split_at(2).0;

/// What fan-out needs of an event: its position, contract and kind.
pub(crate) const FEED_ENTRY_COLUMNS: &[Column] = FEED_COLUMNS.split_at(4).0;

/// `webhook_endpoints`: an endpoint's feed cursor.
pub(crate) const CURSOR_COLUMNS: [Column; 2] = [
    Column::new("cursor_tx", Integer),
    Column::new("cursor_id", Integer),
];

/// `webhook_endpoints`, as its state is listed.
pub(crate) const ENDPOINT_COLUMNS: [Column; 3] = [
    Column::new("name", Text),
    Column::new("disabled_at_ms", Integer),
    Column::new("disabled_reason", Text),
];

/// `webhook_deliveries`, as a claim returns them (the event is read apart).
pub(crate) const CLAIMED_COLUMNS: [Column; 4] = [
    Column::new("id", Integer),
    Column::new("endpoint", Text),
    Column::new("attempts", Integer),
    Column::new("event_id", Integer),
];

/// `webhook_deliveries`, as listed for people, with [`DELIVERY_EVENT_COLUMNS`].
pub(crate) const DELIVERY_COLUMNS: [Column; 9] = [
    Column::new("id", Integer),
    Column::new("endpoint", Text),
    Column::new("event_id", Integer),
    Column::new("status", Text),
    Column::new("attempts", Integer),
    Column::new("last_status", Integer),
    Column::new("last_error", Text),
    Column::new("last_attempt_ms", Integer),
    Column::new("next_attempt_ms", Integer),
];

/// `contract_events`, what a listed delivery shows of its event.
pub(crate) const DELIVERY_EVENT_COLUMNS: [Column; 2] =
    [Column::new("kind", Text), Column::new("contract_ref", Text)];

/// The names the backlog of an endpoint is computed under (aggregates, not stored columns).
pub(crate) const BACKLOG_COLUMNS: [Column; 4] = [
    Column::new("endpoint", Text),
    Column::new("pending", Integer),
    Column::new("oldest_pending_recorded_ms", Integer),
    Column::new("failed", Integer),
];

/// `job_runs`, as listed; the first three are the run's key.
pub(crate) const RUN_COLUMNS: [Column; 14] = [
    Column::new("job", Text),
    Column::new("zone", Text),
    Column::new("business_date", Date),
    Column::new("run_id", Text),
    Column::new("owner", Text),
    Column::new("status", Text),
    Column::new("attempts", Integer),
    Column::new("batches", Integer),
    Column::new("examined", Integer),
    Column::new("changed", Integer),
    Column::new("skipped", Integer),
    Column::new("error", Text),
    Column::new("started_at_ms", Integer),
    Column::new("finished_at_ms", Integer),
];

/// The columns of a run's key (job, zone, business date).
pub(crate) const RUN_KEY_COLUMNS: &[Column] = RUN_COLUMNS.split_at(3).0;

/// `job_runs`, as returned to the process that claims a run.
pub(crate) const CLAIM_COLUMNS: [Column; 8] = [
    Column::new("id", Integer),
    Column::new("run_id", Text),
    Column::new("cursor_due", Date),
    Column::new("cursor_id", Integer),
    Column::new("examined", Integer),
    Column::new("changed", Integer),
    Column::new("skipped", Integer),
    Column::new("attempts", Integer),
];

/// The name the due date a job selected a contract by is read under.
pub(crate) const DUE: &str = "due";

/// What differs between the dialects when a column is selected: each spells "this column,
/// as the type the shared decoders read" its own way.
pub(crate) trait Dialect {
    /// A `date` column as `YYYY-MM-DD` text.
    fn date_as_text(column: &str) -> Cow<'_, str>;

    /// A JSON column as text.
    fn json_as_text(column: &str) -> Cow<'_, str>;

    /// A bytes column as bytes, whatever a row stored in it.
    fn as_bytes(column: &str) -> Cow<'_, str>;

    /// A transaction id column as a 64-bit integer.
    fn transaction_as_integer(column: &str) -> Cow<'_, str>;
}

/// `column` in a select list, read under the name `alias`.
pub(crate) fn select_item<D: Dialect>(column: Column, alias: &str) -> String {
    expression_as::<D>(column.sql_type, column.name, alias)
}

/// The column or expression `expression` of type `sql_type` in a select list, as the
/// decoders read that type, under the name `alias`.
fn expression_as<D: Dialect>(sql_type: SqlType, expression: &str, alias: &str) -> String {
    let expression = match sql_type {
        Date => D::date_as_text(expression),
        Json => D::json_as_text(expression),
        Bytes => D::as_bytes(expression),
        Transaction => D::transaction_as_integer(expression),
        Integer | Text | Bool => Cow::Borrowed(expression),
    };
    if expression == alias {
        expression.into_owned()
    } else {
        format!("{expression} AS {alias}")
    }
}

/// A select list of `columns`, each read under its own name.
pub(crate) fn select_list<D: Dialect>(columns: impl IntoIterator<Item = Column>) -> String {
    columns
        .into_iter()
        .map(|column| select_item::<D>(column, column.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A select list of `columns` of the table (or alias) `table`, each read under its own
/// name: for statements joining tables whose column names overlap.
pub(crate) fn qualified_select_list<D: Dialect>(
    table: &str,
    columns: impl IntoIterator<Item = Column>,
) -> String {
    columns
        .into_iter()
        .map(|column| {
            let qualified = format!("{table}.{}", column.name);
            expression_as::<D>(column.sql_type, &qualified, column.name)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The due date `job` selects contracts by, as a select-list item read as [`DUE`].
pub(crate) fn due_item<D: Dialect>(job: Job) -> String {
    select_item::<D>(Column::new(due_column(job), Date), DUE)
}

/// The due date column that selects the candidates of one job.
pub(crate) fn due_column(job: Job) -> &'static str {
    match job {
        Job::ExecuteCancellations => "due_cancellation_on",
        Job::AutoExtend => "due_extension_on",
        Job::Expire => "due_expiry_on",
        Job::RefreshDeadlines => "due_refresh_on",
        Job::SendReminders => "due_remind_on",
    }
}

/// A contract with the stored values derived from it (due dates, whether it has children).
pub(crate) struct ContractValues<'a> {
    /// The contract written.
    pub contract: &'a Contract,
    /// When each daily job next needs it: stored so a job selects its rows by index.
    pub due: DueDates,
    /// Whether any child table has its rows: reads skip the child queries otherwise.
    pub has_children: bool,
}

impl<'a> ContractValues<'a> {
    /// The values stored for `contract`.
    pub fn of(contract: &'a Contract) -> Self {
        ContractValues {
            contract,
            due: DueDates::of(contract),
            has_children: ChildTable::ALL.iter().any(|table| table.has_rows(contract)),
        }
    }
}

/// One contract column's value, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ColumnValue<'a> {
    /// A text column's value.
    Text(Option<Cow<'a, str>>),
    /// A date column's value.
    Date(Option<NaiveDate>),
    /// A boolean column's value.
    Bool(Option<bool>),
}

/// Declares [`ContractColumn`] from one list of (variant, name, type), so a column is added
/// in one place.
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
            pub fn sql_type(self) -> SqlType {
                match self { $(ContractColumn::$variant => SqlType::$kind),+ }
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
    ReminderLeadTimes => "reminder_lead_times": Text,
    RemindersSent => "reminders_sent": Text,
    NextReminderOn => "next_reminder_on": Date,
    DueRemindOn => "due_remind_on": Date,
}

/// A text value.
fn text(value: &str) -> ColumnValue<'_> {
    ColumnValue::Text(Some(Cow::Borrowed(value)))
}

/// A nullable text value.
fn optional_text(value: Option<&str>) -> ColumnValue<'_> {
    ColumnValue::Text(value.map(Cow::Borrowed))
}

/// A period, stored as its text (`1M`, `1Y`…).
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
            C::ReminderLeadTimes => ColumnValue::Text(
                contract
                    .reminders
                    .lead_times
                    .map(|list| Cow::Owned(list.to_text())),
            ),
            C::RemindersSent => ColumnValue::Text(contract.reminders.sent_text().map(Cow::Owned)),
            C::NextReminderOn => ColumnValue::Date(contract.reminders.next_on),
            C::DueRemindOn => ColumnValue::Date(values.due.reminder),
        }
    }

    /// Whether reads select this column: the due dates are derived from the contract and
    /// only select rows, so the contract is read without them.
    pub fn read_back(self) -> bool {
        !matches!(
            self,
            ContractColumn::DueCancellationOn
                | ContractColumn::DueExtensionOn
                | ContractColumn::DueExpiryOn
                | ContractColumn::DueRefreshOn
                | ContractColumn::DueRemindOn
        )
    }

    /// The column as a [`Column`].
    pub fn column(self) -> Column {
        Column::new(self.name(), self.sql_type())
    }

    /// The column's bit in [`ChangedParts`].
    fn bit(self) -> u64 {
        1 << (self as u64)
    }
}

/// The child tables, in the order both dialects write them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChildTable {
    /// `contract_lines`.
    Lines,
    /// `billing_schedules`.
    Schedules,
    /// `billing_documents`.
    Documents,
    /// `renewals`.
    Renewals,
    /// `change_requests`.
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

    /// The table's columns, in the order both dialects write them (`position` keeps a
    /// contract's rows in order and is not read back).
    pub fn columns(self) -> &'static [Column] {
        match self {
            ChildTable::Lines => &LINE_COLUMNS,
            ChildTable::Schedules => &SCHEDULE_COLUMNS,
            ChildTable::Documents => &DOCUMENT_COLUMNS,
            ChildTable::Renewals | ChildTable::ChangeRequests => &REFERENCE_COLUMNS,
        }
    }

    /// The columns read back: all but `position`, which only orders the rows.
    pub fn read_columns(self) -> impl Iterator<Item = Column> {
        self.columns()
            .iter()
            .copied()
            .filter(|column| column.name != "position")
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

    /// The table's bit in [`ChangedParts`].
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
    columns: u64,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::record::{read_record, ParseDefaults};
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

    /// Reads every column under its own name, dates and JSON spelled as PostgreSQL would.
    struct Casting;

    impl Dialect for Casting {
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
            Cow::Owned(format!("{column}::text::bigint"))
        }
    }

    #[test]
    fn a_cast_column_is_read_under_its_own_name() {
        let select = select_list::<Casting>(EVENT_COLUMNS);
        assert_eq!(
            select,
            "id, kind, to_char(effective_on, 'YYYY-MM-DD') AS effective_on, line_ref, \
             details::text AS details, transition_key, run_id, recorded_at_ms"
        );
    }

    #[test]
    fn the_contract_is_read_without_its_due_dates() {
        let names: Vec<&str> = contract_read_columns().map(|column| column.name).collect();
        assert_eq!(names.len(), 3 + ContractColumn::ALL.len() - 5);
        assert_eq!(names[..4], ["id", "ref", "version", "customer"]);
        assert_eq!(names.last(), Some(&"next_reminder_on"));
        assert!(!names.iter().any(|name| name.starts_with("due_")));
    }
}
