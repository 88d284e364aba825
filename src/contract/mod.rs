//! The contract aggregate: a contract with its lines, billing schedules, billing documents,
//! renewals and change requests (docs/rules.md §3).
//!
//! Values here are always valid: they are built by [`record::ContractRecord::parse`], which
//! checks every rule of docs/rules.md §3.3 and never touches I/O.

pub mod event;
pub mod export;
pub mod record;
pub mod reminder;

use chrono::NaiveDate;
use chrono_tz::Tz;

pub use event::{ContractEvent, EventKind, Transition};
pub use reminder::{LeadTimes, ReminderKind, Reminders, SentReminder};

use crate::calendar::{CancellationDates, CancellationTerms, CancellationWindow, Period};

text_enum! {
    /// Where a contract is in its life.
    ContractStatus {
        /// Not yet in force: the jobs leave it alone.
        Draft => "draft",
        /// In force and billable.
        Active => "active",
        /// Ended at its end date.
        Expired => "expired",
        /// Ended by a cancellation.
        Cancelled => "cancelled",
    }
}

text_enum! {
    /// Where a contract line is in its life.
    LineStatus {
        /// Delivered and billed.
        Active => "active",
        /// Ended by a cancellation (of the line or its contract).
        Cancelled => "cancelled",
        /// Ended at its end date.
        Expired => "expired",
    }
}

text_enum! {
    /// How a line is charged.
    LineKind {
        /// A fixed amount every billing period: prorated when the period is shortened.
        RecurringFixed => "recurring_fixed",
        /// Usage billed every period: never prorated.
        RecurringUsage => "recurring_usage",
        /// Charged once.
        OneTime => "one_time",
    }
}

text_enum! {
    /// How a shortened billing period is charged.
    Proration {
        /// By the days actually used.
        ActualDays => "actual_days",
        /// The full period amount.
        None => "none",
    }
}

text_enum! {
    /// Whether a billing schedule has been invoiced.
    ScheduleStatus {
        /// Not invoiced yet: may be changed or deleted freely.
        Planned => "planned",
        /// Invoiced: reducing it needs a credit note.
        Billed => "billed",
    }
}

text_enum! {
    /// What a billing document is.
    DocumentKind {
        /// Charges the customer.
        Invoice => "invoice",
        /// Gives money back.
        CreditNote => "credit_note",
    }
}

text_enum! {
    /// How far a billing document is.
    DocumentStatus {
        /// Being prepared: deleted when the contract ends early.
        Draft => "draft",
        /// Waiting for review.
        ReadyForReview => "ready_for_review",
        /// Posted.
        Complete => "complete",
    }
}

text_enum! {
    /// Where a renewal is.
    RenewalStatus {
        /// Being prepared: deleted when the contract ends early.
        Draft => "draft",
        /// Done.
        Complete => "complete",
    }
}

text_enum! {
    /// Where a change request is.
    ChangeRequestStatus {
        /// Being written.
        Draft => "draft",
        /// Waiting for approval.
        Pending => "pending",
        /// Approved, not applied yet.
        Approved => "approved",
        /// Turned down: kept when the contract ends early.
        Rejected => "rejected",
        /// Applied to the contract.
        Applied => "applied",
    }
}

/// A registered cancellation that has not been executed yet (of a contract or one line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancellation {
    /// The day the cancellation was received: notice is counted from it.
    pub received_on: NaiveDate,
    /// The last day of service once it executes.
    pub end_date: NaiveDate,
    /// The operator's reason code.
    pub reason: Option<String>,
    /// Free text from the operator.
    pub notes: Option<String>,
    /// Whether executing it creates a final invoice of the remaining planned schedules.
    pub final_invoice: bool,
    /// The `auto_extend` value to put back if the cancellation is revoked.
    pub restore_auto_extend: bool,
}

/// One line of a contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Unique within its contract.
    pub reference: String,
    /// What is delivered.
    pub description: String,
    /// How it is charged.
    pub kind: LineKind,
    /// Only billable lines can be cancelled on their own.
    pub billable: bool,
    /// First day of the line's service.
    pub start_date: NaiveDate,
    /// Last day of the line's service (inclusive), or open-ended.
    pub end_date: Option<NaiveDate>,
    /// Where the line is in its life.
    pub status: LineStatus,
    /// Price per billing period, in minor units.
    pub amount_minor: i64,
    /// ISO 4217 code of `amount_minor`.
    pub currency: String,
    /// Length of one billing period; needed to plan schedules for an extended term.
    pub billing_period: Option<Period>,
    /// Whether the line moves with its contract's auto extension.
    pub auto_extend: bool,
    /// A pending cancellation of this line only.
    pub cancellation: Option<Cancellation>,
}

/// One billing period of one line, planned or billed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingSchedule {
    /// The line this schedule bills.
    pub line_ref: String,
    /// First day billed.
    pub period_start: NaiveDate,
    /// Last day billed (inclusive).
    pub period_end: NaiveDate,
    /// Amount of this period, in minor units of the line's currency.
    pub amount_minor: i64,
    /// Planned or billed.
    pub status: ScheduleStatus,
    /// The billing document it was billed on.
    pub document: Option<String>,
}

/// An invoice or credit note linked to a contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingDocument {
    /// Unique within its contract.
    pub reference: String,
    /// Invoice or credit note.
    pub kind: DocumentKind,
    /// How far it is.
    pub status: DocumentStatus,
    /// Whether it bills several contracts at once: such a contract cannot be ended early.
    pub consolidated: bool,
    /// Total, in minor units (never negative: a credit note's amount is what it gives back).
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
}

/// A renewal of the contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewal {
    /// Its external reference.
    pub reference: String,
    /// Draft renewals are deleted when the contract ends early.
    pub status: RenewalStatus,
}

/// A change request against the contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRequest {
    /// Its external reference.
    pub reference: String,
    /// Every status but `rejected` is deleted when the contract ends early.
    pub status: ChangeRequestStatus,
}

/// A recurring contract with everything that hangs off it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contract {
    /// External reference, unique.
    pub reference: String,
    /// Customer name or reference.
    pub customer: String,
    /// Where it is in its life.
    pub status: ContractStatus,
    /// The zone whose local midnight starts each of its business days.
    pub time_zone: Tz,
    /// First day of service.
    pub start_date: NaiveDate,
    /// Last day of service (inclusive), or open-ended.
    pub end_date: Option<NaiveDate>,
    /// The initial term the end date was derived from, if given.
    pub initial_term: Option<Period>,
    /// The end date before the first early end or cancellation changed it.
    pub original_end_date: Option<NaiveDate>,
    /// No cancellation may end the contract before this day.
    pub minimum_term_end: Option<NaiveDate>,
    /// How long before an end date a cancellation must be received.
    pub notice_period: Period,
    /// Which dates the contract can be cancelled to.
    pub cancellation_window: CancellationWindow,
    /// Whether the contract extends itself when not cancelled in time.
    pub auto_extend: bool,
    /// How much each auto extension adds.
    pub extension_term: Option<Period>,
    /// How a shortened billing period is charged.
    pub proration: Proration,
    /// The contract's lines.
    pub lines: Vec<Line>,
    /// Billing schedules of the lines.
    pub schedules: Vec<BillingSchedule>,
    /// Invoices and credit notes.
    pub documents: Vec<BillingDocument>,
    /// The pending cancellation of the whole contract.
    pub cancellation: Option<Cancellation>,
    /// Why it was ended early or cancelled.
    pub end_reason: Option<String>,
    /// The operator's notes on the early end or cancellation.
    pub end_notes: Option<String>,
    /// `C(T)` as of the last refresh (computed).
    pub cancellation_date: Option<NaiveDate>,
    /// `L(T)` as of the last refresh (computed).
    pub latest_cancellation_date: Option<NaiveDate>,
    /// Renewals.
    pub renewals: Vec<Renewal>,
    /// Change requests.
    pub change_requests: Vec<ChangeRequest>,
    /// Reminder lead times and the reminders sent (docs/rules.md §5.5).
    pub reminders: Reminders,
}

impl Contract {
    /// The terms that decide its possible end dates (docs/rules.md §4.1).
    pub fn cancellation_terms(&self) -> CancellationTerms {
        CancellationTerms {
            start_date: self.start_date,
            end_date: self.end_date,
            minimum_term_end: self.minimum_term_end,
            notice_period: self.notice_period,
            window: self.cancellation_window,
            extension_term: if self.auto_extend {
                self.extension_term
            } else {
                None
            },
        }
    }

    /// Recompute `cancellation_date` and `latest_cancellation_date` as of `today`.
    ///
    /// Only an active contract without a pending cancellation has a regular cancellation
    /// date. With a pending cancellation, `cancellation_date` is the end date it will execute
    /// at and `latest_cancellation_date` is null (a second cancellation would be refused).
    /// Any other status has neither.
    pub fn recompute_cancellation_dates(&mut self, today: NaiveDate) {
        let dates: Option<CancellationDates> = match (&self.cancellation, self.status) {
            (Some(pending), ContractStatus::Active) => {
                self.cancellation_date = Some(pending.end_date);
                self.latest_cancellation_date = None;
                return;
            }
            (None, ContractStatus::Active) => self.cancellation_terms().dates_as_of(today),
            _ => None,
        };
        self.cancellation_date = dates.map(|d| d.cancellation_date);
        self.latest_cancellation_date = dates.map(|d| d.latest_cancellation_date);
    }

    /// The line with this reference.
    pub fn line(&self, reference: &str) -> Option<&Line> {
        self.lines.iter().find(|line| line.reference == reference)
    }
}
