//! Operator actions (docs/rules.md §6): cancel, end early, revoke.
//!
//! Each action is a pure planning function: it validates first and returns either an
//! [`ActionError`] (nothing changed; the message names the contract, the field and what to do)
//! or the [`Transition`] to store. Its events have `transition_key` `None` (storage keys
//! operator changes by the contract's new version) and `effective_on` = today, the business
//! date of the contract's zone the action is taken on.
//!
//! Decisions where the rules are silent (gathered in docs/rules.md §11):
//!
//! - **Received date** `R` may not lie after today (a cancellation cannot be received in the
//!   future), nor before the contract's start, nor further back than
//!   `cancellations.max_backdate` unless overridden.
//! - **The received date decides** (docs/rules.md §6.2): the cancellation is weighed against
//!   the contract as it stood on `R`, and the extensions since that took it past the
//!   cancellation's end date are undone in the same transition ([`PastExtension`]: the
//!   operator reads them from the history). An extension made by the sweep of `R` itself
//!   counts as not yet made when judging, but is never undone.
//! - **An end date already past** executes at once, its events effective on the day after the
//!   end date, as the sweep of that day would have written them.
//! - **`immediately`** ends the contract (or line) today and executes at once. It is the
//!   Nexudus admin cancel, so it implies `override_notice`; combined with a different
//!   `end_date` it is an error.
//! - **`override_notice`** ignores the notice period, the minimum term and the cancellation
//!   window: any end date on or after the start date and not after the current end date; the
//!   end date defaults to today.
//! - **A requested end date after the current end date** is only possible as an extended end
//!   date of an auto-extending contract (a cancellation into a later term). Registering it
//!   extends the contract to that date at once (event `extended`, schedules planned as the
//!   auto-extend job would), so the contract never runs past its own end date waiting for the
//!   cancellation. Revoking the cancellation later does not undo that extension.
//! - **Line cancellations** use the contract's notice period, cancellation window and minimum
//!   term, with the line's own start date and end date (the contract's when the line has none)
//!   and no extension: a line end date is never after the line's or the contract's end date.
//!   Only active, billable lines can be cancelled, and not while a cancellation of the whole
//!   contract is pending (that one ends every line).
//! - **End early** needs a reason; the new end date `E` must be on or after the start date
//!   and, for a contract with an end date, not after it (`E` equal to the end date is allowed:
//!   it stops auto extension and records the reason). Draft invoices are deleted with the
//!   other draft documents and the schedules billed on them become planned again (they were
//!   never sent); draft credit notes refuse the action (Billing Central's rule). A pending
//!   cancellation of a line refuses it as well as one of the contract. `original_end_date`
//!   records the old end date only when `E` changes it (docs/rules.md §3.1: null while
//!   unchanged).
//! - **Billed periods**: a cancellation whose end date would delete or cut a billed schedule
//!   is refused unless `allow_end_before_billed_to` is set, when it is registered as well as
//!   when it executes at once (the sweep would refuse to execute it, and the contract would
//!   run on past its end date with the cancellation still pending).
//! - Lines that would start after the new end date are `cancelled`; their end date is capped
//!   at their own start date (a line cannot end before it starts).

use chrono::NaiveDate;
use serde_json::json;

use super::billing::{self, BilledBeyondEndDate, Scope};
use super::rules::{
    execute_pending_cancellation, execute_pending_line_cancellation, extend_contract,
};
use super::{RulePolicy, RuleRefusal};
use crate::calendar::{shift, Period};
use crate::calendar::{shift_back, CancellationTerms, CancellationWindow};
use crate::contract::record::parse_date;
use crate::contract::{
    Cancellation, ChangeRequestStatus, Contract, ContractEvent, ContractStatus, DocumentKind,
    DocumentStatus, EventKind, LineStatus, RenewalStatus, ScheduleStatus, Transition,
};

/// A request to cancel a contract or one of its lines (`contractd cancel`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CancelRequest {
    /// The day the cancellation was received (`--received-on`); notice is counted from it.
    /// Default: today. Never after today.
    pub received_on: Option<NaiveDate>,
    /// The requested end date (last day of service, `--end-date`). Default: the cancellation
    /// date `C(R)` as of the received date (today with `override_notice`).
    pub end_date: Option<NaiveDate>,
    /// The reason code (`--reason`).
    pub reason: Option<String>,
    /// Free text (`--notes`).
    pub notes: Option<String>,
    /// Cancel only this line (`--line`): it must be active and billable.
    pub line: Option<String>,
    /// Ignore notice period, minimum term and cancellation window (`--override`, the Nexudus
    /// admin cancel).
    pub override_notice: bool,
    /// End today and execute at once (`--immediately`); implies `override_notice`.
    pub immediately: bool,
    /// Create a final invoice of the remaining planned schedules when the cancellation
    /// executes (`--final-invoice`).
    pub final_invoice: bool,
    /// How far before today the received date may lie (configuration
    /// `cancellations.max_backdate`); `None`: no limit. `override_notice` and `immediately`
    /// lift it.
    pub max_backdate: Option<Period>,
}

/// An extension the contract went through, as its `extended` event recorded it. A
/// cancellation received before the extension ran is weighed against the contract as it
/// stood on its received date, and the extension is undone (docs/rules.md §6.2); the
/// operator loads these facts from the contract's history and hands them in, so planning
/// stays a pure function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastExtension {
    /// The business date the extension took effect on.
    pub effective_on: NaiveDate,
    /// The end date before it.
    pub from: NaiveDate,
    /// The end date after it.
    pub to: NaiveDate,
    /// How many extension terms it added, when the event says.
    pub terms: Option<u32>,
    /// The lines whose end date moved with the contract's.
    pub lines_moved: Vec<String>,
}

impl PastExtension {
    /// The extensions still in force in a contract's history, oldest first: every `extended`
    /// event (`kind`, `effective_on`, `details`, oldest first) that no later
    /// `extension_reverted` event of the same `from` and `to` (of the contract, not of one
    /// line) has undone. Events of other kinds, and details without both dates, are skipped.
    pub fn in_force<'a, I>(events: I) -> Vec<PastExtension>
    where
        I: IntoIterator<Item = (&'a str, NaiveDate, Option<&'a str>, &'a serde_json::Value)>,
    {
        let mut extensions: Vec<PastExtension> = Vec::new();
        for (kind, effective_on, line_ref, details) in events {
            let date = |key: &str| {
                details
                    .get(key)
                    .and_then(serde_json::Value::as_str)
                    .and_then(parse_date)
            };
            let (Some(from), Some(to)) = (date("from"), date("to")) else {
                continue;
            };
            match EventKind::parse(kind) {
                Some(EventKind::Extended) => extensions.push(PastExtension {
                    effective_on,
                    from,
                    to,
                    terms: details
                        .get("terms")
                        .and_then(serde_json::Value::as_u64)
                        .and_then(|terms| u32::try_from(terms).ok()),
                    lines_moved: details
                        .get("lines_moved")
                        .and_then(serde_json::Value::as_array)
                        .map(|lines| {
                            lines
                                .iter()
                                .filter_map(|line| line.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default(),
                }),
                Some(EventKind::ExtensionReverted) if line_ref.is_none() => {
                    if let Some(index) = extensions
                        .iter()
                        .rposition(|extension| extension.from == from && extension.to == to)
                    {
                        extensions.remove(index);
                    }
                }
                Some(EventKind::ExtensionReverted) => {
                    // A line's share of an extension was undone: that line no longer moved.
                    if let Some(extension) = extensions
                        .iter_mut()
                        .rev()
                        .find(|extension| extension.from == from && extension.to == to)
                    {
                        extension
                            .lines_moved
                            .retain(|line| Some(line.as_str()) != line_ref);
                    }
                }
                _ => {}
            }
        }
        extensions
    }
}

/// A request to end a contract early (`contractd end`, Billing Central).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndEarlyRequest {
    /// The new end date (last day of service, inclusive).
    pub end_date: NaiveDate,
    /// Why the contract ends early (required).
    pub reason: String,
    /// The operator's notes, kept in `end_notes`.
    pub notes: Option<String>,
}

/// Why an operator action was refused. Nothing was changed; each message names the contract
/// (and line), the field, and what the operator can do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// The contract is not active.
    #[error("contract '{contract}': status is {status}; only an active contract can be {action}")]
    NotActive {
        /// The contract's ref.
        contract: String,
        /// Its status.
        status: ContractStatus,
        /// What was attempted, e.g. "cancelled".
        action: &'static str,
    },
    /// A cancellation of the contract is already pending.
    #[error(
        "contract '{contract}': cancellation: a cancellation ending {end_date} is already \
         pending; revoke it first"
    )]
    CancellationPending {
        /// The contract's ref.
        contract: String,
        /// The pending cancellation's end date.
        end_date: NaiveDate,
    },
    /// A cancellation of this line is already pending.
    #[error(
        "contract '{contract}' line '{line}': cancellation: a cancellation ending {end_date} is \
         already pending; revoke it first"
    )]
    LineCancellationPending {
        /// The contract's ref.
        contract: String,
        /// The line's ref.
        line: String,
        /// The pending cancellation's end date.
        end_date: NaiveDate,
    },
    /// Revoke found nothing to revoke on the contract.
    #[error("contract '{contract}': cancellation: no cancellation is pending, nothing to revoke")]
    NoPendingCancellation {
        /// The contract's ref.
        contract: String,
    },
    /// Revoke found nothing to revoke on the line.
    #[error(
        "contract '{contract}' line '{line}': cancellation: no cancellation of this line is \
         pending, nothing to revoke"
    )]
    NoPendingLineCancellation {
        /// The contract's ref.
        contract: String,
        /// The line's ref.
        line: String,
    },
    /// No line with this ref.
    #[error("contract '{contract}': line: there is no line '{line}' in this contract")]
    UnknownLine {
        /// The contract's ref.
        contract: String,
        /// The ref asked for.
        line: String,
    },
    /// Only billable lines can be cancelled on their own.
    #[error(
        "contract '{contract}' line '{line}': billable: only billable lines can be cancelled; \
         cancel the whole contract instead"
    )]
    LineNotBillable {
        /// The contract's ref.
        contract: String,
        /// The line's ref.
        line: String,
    },
    /// The line has already ended.
    #[error("contract '{contract}' line '{line}': status is {status}; only an active line can be cancelled")]
    LineNotActive {
        /// The contract's ref.
        contract: String,
        /// The line's ref.
        line: String,
        /// Its status.
        status: LineStatus,
    },
    /// The received date lies after today.
    #[error(
        "contract '{contract}': received_on {received_on} is after today ({today}); a \
         cancellation cannot be received in the future"
    )]
    ReceivedInFuture {
        /// The contract's ref.
        contract: String,
        /// The received date given.
        received_on: NaiveDate,
        /// Today in the contract's zone.
        today: NaiveDate,
    },
    /// The received date lies before the contract's start.
    #[error(
        "contract '{contract}': received_on {received_on} is before the start_date \
         {start_date}; a cancellation cannot be received before the contract starts"
    )]
    ReceivedBeforeStart {
        /// The contract's ref.
        contract: String,
        /// The received date given.
        received_on: NaiveDate,
        /// The contract's start date.
        start_date: NaiveDate,
    },
    /// The received date lies further back than `cancellations.max_backdate` allows.
    #[error(
        "contract '{contract}': received_on {received_on} is further back than \
         cancellations.max_backdate ({max_backdate}) allows: the earliest received date \
         accepted today ({today}) is {earliest}; check the date, or override the limit"
    )]
    ReceivedTooLongAgo {
        /// The contract's ref.
        contract: String,
        /// The received date given.
        received_on: NaiveDate,
        /// The configured limit.
        max_backdate: Period,
        /// The earliest received date accepted today.
        earliest: NaiveDate,
        /// Today in the contract's zone.
        today: NaiveDate,
    },
    /// The end date was moved after the received date by something other than the
    /// extensions recorded since, so the contract as of that day cannot be worked out.
    #[error(
        "contract '{contract}': end_date {} is not where the extensions since \
         received_on {received_on} left it ({extended_to}); it was changed otherwise since, \
         so the contract as it stood on {received_on} cannot be worked out",
        end_date.map_or_else(|| "(none)".to_string(), |end| end.to_string())
    )]
    EndDateChangedSinceReceived {
        /// The contract's ref.
        contract: String,
        /// The received date given.
        received_on: NaiveDate,
        /// The contract's current end date.
        end_date: Option<NaiveDate>,
        /// Where the extensions after the received date took it.
        extended_to: NaiveDate,
    },
    /// `immediately` with an end date other than today.
    #[error(
        "contract '{contract}': end_date {end_date} conflicts with ending immediately, which \
         ends the contract today ({today}); give one or the other"
    )]
    ImmediatelyWithEndDate {
        /// The contract's ref.
        contract: String,
        /// The end date given.
        end_date: NaiveDate,
        /// Today in the contract's zone.
        today: NaiveDate,
    },
    /// The notice deadline of every possible end date has passed.
    #[error(
        "{}: end_date: no regular cancellation is possible any more as of {received_on} (the \
         last notice deadline has passed and the contract does not auto-extend; it simply \
         expires at its end date)",
        subject(contract, line)
    )]
    NoRegularCancellation {
        /// The contract's ref.
        contract: String,
        /// The line's ref, for a line cancellation.
        line: Option<String>,
        /// The received date.
        received_on: NaiveDate,
    },
    /// The requested end date's notice deadline was missed.
    #[error(
        "{}: end_date {end_date} needs notice by {deadline} (received {received_on}){}",
        subject(contract, line),
        next_hint(next)
    )]
    NoticeMissed {
        /// The contract's ref.
        contract: String,
        /// The line's ref, for a line cancellation.
        line: Option<String>,
        /// The requested end date.
        end_date: NaiveDate,
        /// Its notice deadline, which is before the received date.
        deadline: NaiveDate,
        /// The received date.
        received_on: NaiveDate,
        /// The next possible end date and its deadline that can still be met, if any.
        next: Option<(NaiveDate, NaiveDate)>,
    },
    /// The requested end date is not in the cancellation window.
    #[error(
        "{}: end_date {end_date} is not a possible end date (cancellation_window {window}){}",
        subject(contract, line),
        next_hint(next)
    )]
    NotPossibleEndDate {
        /// The contract's ref.
        contract: String,
        /// The line's ref, for a line cancellation.
        line: Option<String>,
        /// The requested end date.
        end_date: NaiveDate,
        /// The contract's cancellation window.
        window: CancellationWindow,
        /// The next possible end date and its deadline that can still be met, if any.
        next: Option<(NaiveDate, NaiveDate)>,
    },
    /// The requested end date is before the minimum term's end.
    #[error(
        "{}: end_date {end_date} is before minimum_term_end {minimum_term_end}",
        subject(contract, line)
    )]
    BeforeMinimumTerm {
        /// The contract's ref.
        contract: String,
        /// The line's ref, for a line cancellation.
        line: Option<String>,
        /// The requested end date.
        end_date: NaiveDate,
        /// The contract's minimum term end.
        minimum_term_end: NaiveDate,
    },
    /// The requested end date is before the start date.
    #[error(
        "{}: end_date {end_date} is before the start_date {start_date}",
        subject(contract, line)
    )]
    EndDateBeforeStart {
        /// The contract's ref.
        contract: String,
        /// The line's ref, for a line cancellation.
        line: Option<String>,
        /// The requested end date.
        end_date: NaiveDate,
        /// The start date of the contract (or line).
        start_date: NaiveDate,
    },
    /// The requested end date is after the current end date.
    #[error(
        "{}: end_date {end_date} is after the current end date {current_end_date}; choose an \
         end date on or before it",
        subject(contract, line)
    )]
    EndDateAfterEnd {
        /// The contract's ref.
        contract: String,
        /// The line's ref, for a line cancellation.
        line: Option<String>,
        /// The requested end date.
        end_date: NaiveDate,
        /// The current end date of the contract (or line).
        current_end_date: NaiveDate,
    },
    /// A billed schedule reaches beyond the end date.
    #[error(transparent)]
    BilledBeyondEndDate(#[from] BilledBeyondEndDate),
    /// A rule refused to execute the cancellation at once.
    #[error("{field}: {message}")]
    Refused {
        /// The contract's ref.
        contract: String,
        /// The field the refusal is about.
        field: String,
        /// What blocks it (it names the contract).
        message: String,
    },
    /// A linked billing document blocks ending the contract early (Billing Central).
    #[error(
        "contract '{contract}': documents[{index}] ('{document}', {kind}, {status}{}) blocks \
         ending the contract early; {}",
        if *consolidated { ", consolidated" } else { "" },
        if *consolidated {
            "unconsolidate it first"
        } else {
            "complete or discard the credit note first"
        }
    )]
    DocumentBlocksEarlyEnd {
        /// The contract's ref.
        contract: String,
        /// Index in the contract's `documents`.
        index: usize,
        /// The document's ref.
        document: String,
        /// Its kind.
        kind: DocumentKind,
        /// Its status.
        status: DocumentStatus,
        /// Whether it is consolidated.
        consolidated: bool,
    },
    /// Ending early needs a reason.
    #[error("contract '{contract}': reason: ending a contract early needs a reason")]
    ReasonRequired {
        /// The contract's ref.
        contract: String,
    },
}

/// `contract 'C-1'` or `contract 'C-1' line 'L1'`.
fn subject(contract: &str, line: &Option<String>) -> String {
    match line {
        Some(line) => format!("contract '{contract}' line '{line}'"),
        None => format!("contract '{contract}'"),
    }
}

/// The end of a "missed" message: what the operator can choose instead.
fn next_hint(next: &Option<(NaiveDate, NaiveDate)>) -> String {
    match next {
        Some((end_date, deadline)) => {
            format!("; the next possible end date is {end_date}, deadline {deadline}")
        }
        None => "; no later end date can be reached any more".to_string(),
    }
}

/// The earliest possible end date on or after `from` whose notice deadline is on or after
/// `received`, with that deadline.
fn next_reachable(
    terms: &CancellationTerms,
    from: NaiveDate,
    received: NaiveDate,
) -> Option<(NaiveDate, NaiveDate)> {
    let regular = terms.dates_as_of(received)?;
    if regular.cancellation_date >= from {
        return Some((regular.cancellation_date, regular.latest_cancellation_date));
    }
    // Deadlines grow with end dates, so any possible end date after C(R) is reachable.
    let candidate = terms.next_possible_end_date(from)?;
    Some((candidate, shift_back(candidate, terms.notice_period)))
}

/// Which part of the contract a cancellation ends, with what its end date must respect.
struct Target {
    contract: String,
    line: Option<String>,
    terms: CancellationTerms,
    /// End dates the contract had before extensions made on or before the received date: no
    /// longer possible, but asked for they are refused as late (their deadline passed before
    /// the extension ran), as they would have been before it.
    former_end_dates: Vec<NaiveDate>,
}

impl Target {
    /// The end date of a cancellation received on `received` (already checked `<= today`).
    fn end_date(
        &self,
        request: &CancelRequest,
        received: NaiveDate,
        today: NaiveDate,
    ) -> Result<NaiveDate, ActionError> {
        let start_date = self.terms.start_date;
        let before_start = |end_date: NaiveDate| ActionError::EndDateBeforeStart {
            contract: self.contract.clone(),
            line: self.line.clone(),
            end_date,
            start_date,
        };
        if request.immediately || request.override_notice {
            let end = if request.immediately {
                today
            } else {
                request.end_date.unwrap_or(today)
            };
            if end < start_date {
                return Err(before_start(end));
            }
            if let Some(current) = self.terms.end_date.filter(|current| end > *current) {
                if !self.terms.is_possible_end_date(end) {
                    return Err(ActionError::EndDateAfterEnd {
                        contract: self.contract.clone(),
                        line: self.line.clone(),
                        end_date: end,
                        current_end_date: current,
                    });
                }
            }
            return Ok(end);
        }
        let Some(end) = request.end_date else {
            return self
                .terms
                .dates_as_of(received)
                .map(|dates| dates.cancellation_date)
                .ok_or_else(|| ActionError::NoRegularCancellation {
                    contract: self.contract.clone(),
                    line: self.line.clone(),
                    received_on: received,
                });
        };
        if end < start_date {
            return Err(before_start(end));
        }
        if let Some(minimum) = self.terms.minimum_term_end.filter(|minimum| end < *minimum) {
            return Err(ActionError::BeforeMinimumTerm {
                contract: self.contract.clone(),
                line: self.line.clone(),
                end_date: end,
                minimum_term_end: minimum,
            });
        }
        if !self.terms.is_possible_end_date(end) {
            if self.former_end_dates.contains(&end) {
                return Err(ActionError::NoticeMissed {
                    contract: self.contract.clone(),
                    line: self.line.clone(),
                    end_date: end,
                    deadline: shift_back(end, self.terms.notice_period),
                    received_on: received,
                    next: next_reachable(&self.terms, end, received),
                });
            }
            if let Some(current) = self.terms.end_date.filter(|current| end > *current) {
                if self.terms.extension_term.is_none() {
                    return Err(ActionError::EndDateAfterEnd {
                        contract: self.contract.clone(),
                        line: self.line.clone(),
                        end_date: end,
                        current_end_date: current,
                    });
                }
            }
            return Err(ActionError::NotPossibleEndDate {
                contract: self.contract.clone(),
                line: self.line.clone(),
                end_date: end,
                window: self.terms.window,
                next: next_reachable(&self.terms, end, received),
            });
        }
        let deadline = shift_back(end, self.terms.notice_period);
        if deadline < received {
            return Err(ActionError::NoticeMissed {
                contract: self.contract.clone(),
                line: self.line.clone(),
                end_date: end,
                deadline,
                received_on: received,
                next: next_reachable(&self.terms, end, received),
            });
        }
        Ok(end)
    }
}

/// An event of an operator action (no transition key).
fn action_event(
    kind: EventKind,
    today: NaiveDate,
    line_ref: Option<String>,
    details: serde_json::Value,
) -> ContractEvent {
    ContractEvent {
        kind,
        effective_on: today,
        line_ref,
        details,
        transition_key: None,
    }
}

/// Operator changes are keyed by the contract's new version, not by a transition key.
fn without_keys(mut events: Vec<ContractEvent>) -> Vec<ContractEvent> {
    for event in &mut events {
        event.transition_key = None;
    }
    events
}

fn refused(contract: &Contract, refusal: RuleRefusal) -> ActionError {
    ActionError::Refused {
        contract: contract.reference.clone(),
        field: refusal.field,
        message: refusal.message,
    }
}

/// Register a cancellation of a contract or one of its lines (NCRC, Nexudus), as received on
/// `request.received_on` (default `today`), for a contract with no history to consult: see
/// [`cancel_with_history`].
pub fn cancel(
    contract: &Contract,
    request: &CancelRequest,
    today: NaiveDate,
    policy: &RulePolicy,
) -> Result<Transition, ActionError> {
    cancel_with_history(contract, request, &[], today, policy)
}

/// Register a cancellation of a contract or one of its lines (NCRC, Nexudus), as received on
/// `request.received_on` (default `today`); `extensions` are the contract's extensions still
/// in force, oldest first ([`PastExtension::in_force`]).
///
/// The received date `R` may not lie after today, before the contract's start, or further
/// back than `request.max_backdate` (unless overridden). The cancellation is weighed against
/// the contract as it stood on `R`: the end date before the first extension that took effect
/// after `R`. Its end date is the cancellation date `C(R)`, or the requested one, which must
/// be a possible end date whose notice deadline is on or after `R`; otherwise the error
/// names the missed deadline and the next possible end date with its deadline.
/// `override_notice` and `immediately` waive notice, minimum term and window (see the module
/// docs).
///
/// Every extension after `R` that took the end date (of the contract, or of the line) past
/// that end date is undone first (event `extension_reverted` for each, newest first): the end
/// date and the lines it moved go back, the planned schedules of the undone terms are
/// deleted, billed ones refused unless the policy allows it and then credited
/// ([`billing::retract_billing`]). When the end date lies beyond where that leaves the
/// contract, the contract is extended to it as for a cancellation into a later term.
///
/// Registering turns `auto_extend` off (of the contract, or of the line), remembers the old
/// value in `restore_auto_extend`, records the cancellation and leaves the status `active`;
/// the dates are recomputed as of today. With `immediately`, or an end date before today, the
/// cancellation executes at once (billing effects, final invoice if asked for), its events
/// effective on the day after the end date as the sweep would have written them (today for
/// `immediately`). Refused, when it executes at once and when it is only registered, for
/// billed schedules beyond the end date (see [`RulePolicy`]): a registered one would be
/// refused by every sweep.
///
/// Events: `extension_reverted` (one per undone extension), `cancellation_registered` /
/// `line_cancellation_registered` (reason and notes in the details), then the execution's
/// events when it executes at once.
pub fn cancel_with_history(
    contract: &Contract,
    request: &CancelRequest,
    extensions: &[PastExtension],
    today: NaiveDate,
    policy: &RulePolicy,
) -> Result<Transition, ActionError> {
    let reference = contract.reference.clone();
    if contract.status != ContractStatus::Active {
        return Err(ActionError::NotActive {
            contract: reference,
            status: contract.status,
            action: "cancelled",
        });
    }
    let received = request.received_on.unwrap_or(today);
    if received > today {
        return Err(ActionError::ReceivedInFuture {
            contract: reference,
            received_on: received,
            today,
        });
    }
    if received < contract.start_date {
        return Err(ActionError::ReceivedBeforeStart {
            contract: reference,
            received_on: received,
            start_date: contract.start_date,
        });
    }
    if let Some(max_backdate) = request
        .max_backdate
        .filter(|_| !request.override_notice && !request.immediately)
    {
        let earliest = shift_back(today, max_backdate);
        if received < earliest {
            return Err(ActionError::ReceivedTooLongAgo {
                contract: reference,
                received_on: received,
                max_backdate,
                earliest,
                today,
            });
        }
    }
    if let Some(end_date) = request
        .end_date
        .filter(|end| request.immediately && *end != today)
    {
        return Err(ActionError::ImmediatelyWithEndDate {
            contract: reference,
            end_date,
            today,
        });
    }
    if let Some(pending) = &contract.cancellation {
        return Err(ActionError::CancellationPending {
            contract: reference,
            end_date: pending.end_date,
        });
    }
    let since = Since::new(contract, extensions, received, today)?;
    match &request.line {
        None => cancel_contract(contract, request, &since, policy),
        Some(line) => cancel_line(contract, line, request, &since, policy),
    }
}

/// The received date, today, and the extensions the contract had not been through yet when
/// the cancellation was received (oldest first), checked to lead from the end date of that day
/// to the current one. An extension that took effect on the received date itself counts as
/// not yet made: the sweep of a business date decides on what fell due before it, so the
/// received date is weighed against the end date that sweep started from (a catch-up sweep
/// and a daily one then refuse a late cancellation alike). Only extensions that took effect
/// after the received date are ever undone.
struct Since<'a> {
    received: NaiveDate,
    today: NaiveDate,
    extensions: Vec<&'a PastExtension>,
    /// The end dates extensions before the received date moved the contract from.
    former_end_dates: Vec<NaiveDate>,
}

impl<'a> Since<'a> {
    fn new(
        contract: &Contract,
        extensions: &'a [PastExtension],
        received: NaiveDate,
        today: NaiveDate,
    ) -> Result<Since<'a>, ActionError> {
        let later: Vec<&PastExtension> = extensions
            .iter()
            .filter(|extension| extension.effective_on >= received)
            .collect();
        if let Some(last) = later.last() {
            let chained = later.windows(2).all(|pair| pair[0].to == pair[1].from);
            if !chained || contract.end_date != Some(last.to) {
                if received == today {
                    // Nothing is undone for a cancellation received today: judge it against
                    // the contract as it is.
                    return Ok(Since {
                        received,
                        today,
                        extensions: Vec::new(),
                        former_end_dates: Vec::new(),
                    });
                }
                return Err(ActionError::EndDateChangedSinceReceived {
                    contract: contract.reference.clone(),
                    received_on: received,
                    end_date: contract.end_date,
                    extended_to: last.to,
                });
            }
        }
        let former_end_dates = extensions
            .iter()
            .filter(|extension| extension.effective_on < received)
            .map(|extension| extension.from)
            .collect();
        Ok(Since {
            received,
            today,
            extensions: later,
            former_end_dates,
        })
    }

    /// The contract's end date on the received date.
    fn contract_end(&self, contract: &Contract) -> Option<NaiveDate> {
        self.extensions
            .first()
            .map(|first| first.from)
            .or(contract.end_date)
    }
}

fn cancel_contract(
    contract: &Contract,
    request: &CancelRequest,
    since: &Since<'_>,
    policy: &RulePolicy,
) -> Result<Transition, ActionError> {
    let (received, today) = (since.received, since.today);
    // The contract as it stood on the received date: before the extensions since, which it
    // only went through because it was auto-extending.
    let mut as_of = contract.clone();
    as_of.end_date = since.contract_end(contract);
    as_of.auto_extend |= !since.extensions.is_empty();
    let target = Target {
        contract: contract.reference.clone(),
        line: None,
        terms: as_of.cancellation_terms(),
        former_end_dates: since.former_end_dates.clone(),
    };
    let end = target.end_date(request, received, today)?;
    let mut next = contract.clone();
    let undone: Vec<&PastExtension> = since
        .extensions
        .iter()
        .copied()
        .skip_while(|extension| extension.to <= end)
        .skip_while(|extension| extension.effective_on <= received)
        .collect();
    let mut events = revert_extensions(&mut next, None, &undone, received, today, policy)?;
    if let Some(current) = next.end_date.filter(|current| end > *current) {
        // A cancellation into a later term: the contract runs to that term's end.
        let extension = extend_contract(&mut next, end);
        events.push(action_event(
            EventKind::Extended,
            today,
            None,
            json!({
                "from": current,
                "to": end,
                "cause": "cancellation_in_later_term",
                "lines_moved": extension.lines_moved,
                "schedules_added": extension.schedules_added,
            }),
        ));
    }
    let restore = next.auto_extend;
    next.auto_extend = false;
    next.cancellation = Some(Cancellation {
        received_on: received,
        end_date: end,
        reason: request.reason.clone(),
        notes: request.notes.clone(),
        final_invoice: request.final_invoice,
        restore_auto_extend: restore,
    });
    events.push(action_event(
        EventKind::CancellationRegistered,
        today,
        None,
        registered_details(request, received, end, restore),
    ));
    finish_cancel(next, events, None, end, request.immediately, today, policy)
}

/// Undo `undone` (extensions, oldest first, the first of them the one the end date goes
/// back before) for the whole contract (`line` `None`) or for one line: billing first
/// ([`billing::retract_billing`] at the end date before the first of them), then, newest
/// first, the end date and the lines each one moved. One `extension_reverted` event per
/// extension, newest first, then any `credit_note_created`.
fn revert_extensions(
    next: &mut Contract,
    line: Option<&str>,
    undone: &[&PastExtension],
    received: NaiveDate,
    today: NaiveDate,
    policy: &RulePolicy,
) -> Result<Vec<ContractEvent>, ActionError> {
    let Some(first) = undone.first() else {
        return Ok(Vec::new());
    };
    let scope = line.map_or(Scope::Contract, Scope::Line);
    // Which of the planned schedules each extension added (by where they start).
    let added: Vec<usize> = undone
        .iter()
        .map(|extension| {
            next.schedules
                .iter()
                .filter(|schedule| {
                    scope.covers(&schedule.line_ref)
                        && schedule.status == ScheduleStatus::Planned
                        && schedule.period_start > extension.from
                        && schedule.period_start <= extension.to
                })
                .count()
        })
        .collect();
    let (credit_events, _) = billing::retract_billing(next, scope, first.from, policy, today)?;
    let mut events = Vec::new();
    for (extension, schedules_deleted) in undone.iter().zip(added).rev() {
        let mut lines_moved_back = Vec::new();
        for moved in &mut next.lines {
            if line.is_none_or(|line| line == moved.reference)
                && moved.status == LineStatus::Active
                && moved.end_date == Some(extension.to)
                && extension.lines_moved.contains(&moved.reference)
            {
                moved.end_date = Some(extension.from);
                lines_moved_back.push(moved.reference.clone());
            }
        }
        if line.is_none() && next.end_date == Some(extension.to) {
            next.end_date = Some(extension.from);
        }
        let terms = extension
            .terms
            .unwrap_or_else(|| count_terms(extension.from, extension.to, next.extension_term));
        events.push(action_event(
            EventKind::ExtensionReverted,
            today,
            line.map(str::to_string),
            json!({
                "from": extension.from,
                "to": extension.to,
                "terms": terms,
                "reason": "backdated_cancellation",
                "received_on": received,
                "extended_on": extension.effective_on,
                "lines_moved_back": lines_moved_back,
                "schedules_deleted": schedules_deleted,
            }),
        ));
    }
    events.extend(without_keys(credit_events));
    Ok(events)
}

/// How many steps of `term` lead from `from` to `to` (an extension whose event did not say).
fn count_terms(from: NaiveDate, to: NaiveDate, term: Option<Period>) -> u32 {
    let Some(term) = term.filter(|term| !term.is_none()) else {
        return 0;
    };
    let mut date = from;
    let mut terms = 0_u32;
    while date < to && terms < 10_000 {
        let stepped = shift(date, term);
        if stepped <= date {
            break;
        }
        date = stepped;
        terms += 1;
    }
    terms
}

fn cancel_line(
    contract: &Contract,
    line_ref: &str,
    request: &CancelRequest,
    since: &Since<'_>,
    policy: &RulePolicy,
) -> Result<Transition, ActionError> {
    let (received, today) = (since.received, since.today);
    let reference = contract.reference.clone();
    let Some(index) = contract
        .lines
        .iter()
        .position(|line| line.reference == line_ref)
    else {
        return Err(ActionError::UnknownLine {
            contract: reference,
            line: line_ref.to_string(),
        });
    };
    let line = &contract.lines[index];
    if !line.billable {
        return Err(ActionError::LineNotBillable {
            contract: reference,
            line: line_ref.to_string(),
        });
    }
    if line.status != LineStatus::Active {
        return Err(ActionError::LineNotActive {
            contract: reference,
            line: line_ref.to_string(),
            status: line.status,
        });
    }
    if let Some(pending) = &line.cancellation {
        return Err(ActionError::LineCancellationPending {
            contract: reference,
            line: line_ref.to_string(),
            end_date: pending.end_date,
        });
    }
    // The line's and the contract's end dates on the received date.
    let moved_since: Vec<&PastExtension> = since
        .extensions
        .iter()
        .copied()
        .filter(|extension| extension.lines_moved.iter().any(|moved| moved == line_ref))
        .collect();
    let line_end_then = line
        .end_date
        .map(|end| moved_since.first().map_or(end, |first| first.from));
    let line_end = match (line_end_then, since.contract_end(contract)) {
        (Some(line_end), Some(contract_end)) => Some(line_end.min(contract_end)),
        (line_end, contract_end) => line_end.or(contract_end),
    };
    let target = Target {
        contract: reference,
        line: Some(line_ref.to_string()),
        terms: CancellationTerms {
            start_date: line.start_date,
            end_date: line_end,
            minimum_term_end: contract.minimum_term_end,
            notice_period: contract.notice_period,
            window: contract.cancellation_window,
            extension_term: None,
        },
        former_end_dates: Vec::new(),
    };
    let end = target.end_date(request, received, today)?;
    let mut next = contract.clone();
    let undone: Vec<&PastExtension> = moved_since
        .into_iter()
        .skip_while(|extension| extension.to <= end)
        .skip_while(|extension| extension.effective_on <= received)
        .collect();
    let mut events =
        revert_extensions(&mut next, Some(line_ref), &undone, received, today, policy)?;
    let restore = line.auto_extend;
    if let Some(line) = next.lines.get_mut(index) {
        line.auto_extend = false;
        line.cancellation = Some(Cancellation {
            received_on: received,
            end_date: end,
            reason: request.reason.clone(),
            notes: request.notes.clone(),
            final_invoice: request.final_invoice,
            restore_auto_extend: restore,
        });
    }
    events.push(action_event(
        EventKind::LineCancellationRegistered,
        today,
        Some(line_ref.to_string()),
        registered_details(request, received, end, restore),
    ));
    finish_cancel(
        next,
        events,
        Some(line_ref),
        end,
        request.immediately,
        today,
        policy,
    )
}

fn registered_details(
    request: &CancelRequest,
    received: NaiveDate,
    end: NaiveDate,
    restore: bool,
) -> serde_json::Value {
    json!({
        "received_on": received,
        "end_date": end,
        "reason": request.reason,
        "notes": request.notes,
        "final_invoice": request.final_invoice,
        "override": request.override_notice || request.immediately,
        "immediately": request.immediately,
        "restore_auto_extend": restore,
    })
}

/// Refuse an end date inside a period that is already billed (unless the policy allows it),
/// whether the cancellation executes at once or later: registered, it would be refused by
/// every sweep and the contract would run on past its end date. Then execute at once when
/// asked to or when the end date is already past; otherwise recompute the dates of the
/// registered state.
fn finish_cancel(
    mut next: Contract,
    mut events: Vec<ContractEvent>,
    line: Option<&str>,
    end: NaiveDate,
    immediately: bool,
    today: NaiveDate,
    policy: &RulePolicy,
) -> Result<Transition, ActionError> {
    if !policy.allow_end_before_billed_to {
        let scope = line.map_or(Scope::Contract, Scope::Line);
        if let Some(refusal) = billing::billed_beyond(&next, scope, end) {
            return Err(refusal.into());
        }
    }
    if immediately || end < today {
        // An end date already past executes as the sweep of the day after it would have.
        let executed_on = if end < today {
            end.succ_opt().unwrap_or(today)
        } else {
            today
        };
        let executed = match line {
            None => execute_pending_cancellation(&next, executed_on, policy),
            Some(line) => execute_pending_line_cancellation(&next, line, executed_on, policy),
        }
        .map_err(|refusal| refused(&next, refusal))?;
        if let Some(executed) = executed {
            events.extend(without_keys(executed.events));
            let mut contract = executed.contract;
            contract.recompute_cancellation_dates(today);
            return Ok(Transition { contract, events });
        }
    }
    next.recompute_cancellation_dates(today);
    Ok(Transition {
        contract: next,
        events,
    })
}

/// End a contract early at `request.end_date` (every bullet of Billing Central's "Ending
/// Contracts", as docs/rules.md §6.6 restates them; see the module docs for the decisions).
///
/// Refused when a `draft` or `ready_for_review` credit note or any consolidated document is
/// linked, when a cancellation (of the contract or a line) is pending, when the contract is
/// not active, and for billed schedules beyond the end date unless the policy allows it.
/// Otherwise: `original_end_date` records the old end date (unless already set); draft
/// renewals, change requests other than `rejected` and draft billing documents are deleted;
/// `auto_extend` off; billing effects at `E`; lines starting after `E` `cancelled`, lines
/// ending after `E` end at `E`; status `expired` (with the active lines) at once when
/// `E < today`, otherwise `active` until the expire job; `end_reason` / `end_notes` set; dates
/// recomputed as of today. Events: `ended_early`, then any `credit_note_created`.
pub fn end_early(
    contract: &Contract,
    request: &EndEarlyRequest,
    today: NaiveDate,
    policy: &RulePolicy,
) -> Result<Transition, ActionError> {
    let reference = contract.reference.clone();
    if contract.status != ContractStatus::Active {
        return Err(ActionError::NotActive {
            contract: reference,
            status: contract.status,
            action: "ended early",
        });
    }
    if request.reason.trim().is_empty() {
        return Err(ActionError::ReasonRequired {
            contract: reference,
        });
    }
    if let Some(pending) = &contract.cancellation {
        return Err(ActionError::CancellationPending {
            contract: reference,
            end_date: pending.end_date,
        });
    }
    if let Some((line, pending)) = contract
        .lines
        .iter()
        .find_map(|line| Some((line, line.cancellation.as_ref()?)))
    {
        return Err(ActionError::LineCancellationPending {
            contract: reference,
            line: line.reference.clone(),
            end_date: pending.end_date,
        });
    }
    if let Some((index, document)) = contract.documents.iter().enumerate().find(|(_, doc)| {
        doc.consolidated
            || (doc.kind == DocumentKind::CreditNote
                && matches!(
                    doc.status,
                    DocumentStatus::Draft | DocumentStatus::ReadyForReview
                ))
    }) {
        return Err(ActionError::DocumentBlocksEarlyEnd {
            contract: reference,
            index,
            document: document.reference.clone(),
            kind: document.kind,
            status: document.status,
            consolidated: document.consolidated,
        });
    }
    let end = request.end_date;
    if end < contract.start_date {
        return Err(ActionError::EndDateBeforeStart {
            contract: reference,
            line: None,
            end_date: end,
            start_date: contract.start_date,
        });
    }
    if let Some(current) = contract.end_date.filter(|current| end > *current) {
        return Err(ActionError::EndDateAfterEnd {
            contract: reference,
            line: None,
            end_date: end,
            current_end_date: current,
        });
    }

    let mut next = contract.clone();
    // Draft documents go; what was billed on a draft invoice was never sent: planned again.
    let deleted_documents: Vec<String> = next
        .documents
        .iter()
        .filter(|doc| doc.status == DocumentStatus::Draft)
        .map(|doc| doc.reference.clone())
        .collect();
    next.documents
        .retain(|doc| doc.status != DocumentStatus::Draft);
    for schedule in &mut next.schedules {
        if schedule
            .document
            .as_ref()
            .is_some_and(|doc| deleted_documents.contains(doc))
        {
            schedule.status = ScheduleStatus::Planned;
            schedule.document = None;
        }
    }
    let deleted_renewals: Vec<String> = next
        .renewals
        .iter()
        .filter(|renewal| renewal.status == RenewalStatus::Draft)
        .map(|renewal| renewal.reference.clone())
        .collect();
    next.renewals
        .retain(|renewal| renewal.status != RenewalStatus::Draft);
    let deleted_change_requests: Vec<String> = next
        .change_requests
        .iter()
        .filter(|request| request.status != ChangeRequestStatus::Rejected)
        .map(|request| request.reference.clone())
        .collect();
    next.change_requests
        .retain(|request| request.status == ChangeRequestStatus::Rejected);

    let credit_events = billing::end_billing(&mut next, Scope::Contract, end, policy, today)?;

    let previous_end = contract.end_date;
    if let Some(old) = previous_end.filter(|old| *old != end) {
        next.original_end_date.get_or_insert(old);
    }
    next.end_date = Some(end);
    next.auto_extend = false;
    let expired_now = end < today;
    let mut cancelled_lines = Vec::new();
    let mut shortened_lines = Vec::new();
    for line in &mut next.lines {
        if line.status == LineStatus::Active && line.start_date > end {
            line.status = LineStatus::Cancelled;
            cancelled_lines.push(line.reference.clone());
        }
        if line.end_date.is_none_or(|line_end| line_end > end) {
            line.end_date = Some(end.max(line.start_date));
            shortened_lines.push(line.reference.clone());
        }
        if expired_now && line.status == LineStatus::Active {
            line.status = LineStatus::Expired;
        }
    }
    if expired_now {
        next.status = ContractStatus::Expired;
    }
    next.end_reason = Some(request.reason.clone());
    next.end_notes = request.notes.clone();
    next.recompute_cancellation_dates(today);

    let mut events = vec![action_event(
        EventKind::EndedEarly,
        today,
        None,
        json!({
            "from": previous_end,
            "to": end,
            "reason": request.reason,
            "notes": request.notes,
            "status": next.status.as_str(),
            "deleted_documents": deleted_documents,
            "deleted_renewals": deleted_renewals,
            "deleted_change_requests": deleted_change_requests,
            "cancelled_lines": cancelled_lines,
            "shortened_lines": shortened_lines,
        }),
    )];
    events.extend(without_keys(credit_events));
    Ok(Transition {
        contract: next,
        events,
    })
}

/// Revoke a pending cancellation of the contract (`line` `None`) or of one line (NCRC): only a
/// pending cancellation can be revoked. Its values are cleared, `auto_extend` (of the
/// contract, or of the line) is restored from `restore_auto_extend`, and the dates are
/// recomputed as of today (a restored auto extension whose deadline has passed is caught up by
/// the next auto-extend run). Events `cancellation_revoked` / `line_cancellation_revoked`.
pub fn revoke(
    contract: &Contract,
    line: Option<&str>,
    today: NaiveDate,
) -> Result<Transition, ActionError> {
    let reference = contract.reference.clone();
    let mut next = contract.clone();
    let (kind, pending) = match line {
        None => {
            let Some(pending) = next.cancellation.take() else {
                return Err(ActionError::NoPendingCancellation {
                    contract: reference,
                });
            };
            next.auto_extend = pending.restore_auto_extend;
            (EventKind::CancellationRevoked, pending)
        }
        Some(line_ref) => {
            let Some(line) = next
                .lines
                .iter_mut()
                .find(|line| line.reference == line_ref)
            else {
                return Err(ActionError::UnknownLine {
                    contract: reference,
                    line: line_ref.to_string(),
                });
            };
            let Some(pending) = line.cancellation.take() else {
                return Err(ActionError::NoPendingLineCancellation {
                    contract: reference,
                    line: line_ref.to_string(),
                });
            };
            line.auto_extend = pending.restore_auto_extend;
            (EventKind::LineCancellationRevoked, pending)
        }
    };
    if contract.status != ContractStatus::Active {
        return Err(ActionError::NotActive {
            contract: reference,
            status: contract.status,
            action: "changed",
        });
    }
    next.recompute_cancellation_dates(today);
    let events = vec![action_event(
        kind,
        today,
        line.map(str::to_string),
        json!({
            "received_on": pending.received_on,
            "end_date": pending.end_date,
            "reason": pending.reason,
            "notes": pending.notes,
            "auto_extend_restored": pending.restore_auto_extend,
        }),
    )];
    Ok(Transition {
        contract: next,
        events,
    })
}
