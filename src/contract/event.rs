//! Events: the audit trail of every change to a contract.

use chrono::NaiveDate;

use super::Contract;

text_enum! {
    /// What happened to a contract.
    EventKind {
        /// Created by `import`.
        Imported => "imported",
        /// A cancellation of the whole contract was registered.
        CancellationRegistered => "cancellation_registered",
        /// A pending cancellation of the whole contract was revoked.
        CancellationRevoked => "cancellation_revoked",
        /// A pending cancellation of the whole contract was executed: status `cancelled`.
        CancellationExecuted => "cancellation_executed",
        /// A cancellation of one line was registered.
        LineCancellationRegistered => "line_cancellation_registered",
        /// A pending cancellation of one line was revoked.
        LineCancellationRevoked => "line_cancellation_revoked",
        /// A pending cancellation of one line was executed.
        LineCancellationExecuted => "line_cancellation_executed",
        /// The end date moved by one or more extension terms.
        Extended => "extended",
        /// An extension was undone by a cancellation received before it ran.
        ExtensionReverted => "extension_reverted",
        /// The contract reached its end date: status `expired`.
        Expired => "expired",
        /// A line reached its own end date while the contract goes on.
        LineExpired => "line_expired",
        /// `cancellation_date` / `latest_cancellation_date` were recomputed.
        DeadlinesRefreshed => "deadlines_refreshed",
        /// The contract was ended early by an operator.
        EndedEarly => "ended_early",
        /// A final invoice was created on cancellation.
        FinalInvoiceCreated => "final_invoice_created",
        /// A credit note was created for billed periods beyond a new end date.
        CreditNoteCreated => "credit_note_created",
        /// A reminder: the latest allowed cancellation date is near (docs/rules.md §5.5).
        DeadlineApproaching => "deadline_approaching",
        /// A reminder: an end date that will not be extended is near (docs/rules.md §5.5).
        EndApproaching => "end_approaching",
    }
}

/// One change to a contract, recorded in the same transaction as the change itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ContractEvent {
    /// What happened.
    pub kind: EventKind,
    /// The business date the change takes effect on.
    pub effective_on: NaiveDate,
    /// The line concerned, for line events.
    pub line_ref: Option<String>,
    /// Everything else worth keeping (old and new values, reason, notes…), as JSON.
    pub details: serde_json::Value,
    /// For transitions made by the daily jobs: a key derived from the state the transition
    /// starts from, unique per contract, so the same transition can never be recorded twice
    /// (the last of the three exactly-once guards). `None` for operator actions, which
    /// storage keys by the contract's new version instead.
    pub transition_key: Option<String>,
}

/// A contract's new state and the events that explain it.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The contract after the change.
    pub contract: Contract,
    /// Why it changed, in order.
    pub events: Vec<ContractEvent>,
}
