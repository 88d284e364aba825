//! The fifth daily rule, `send_reminders` (docs/rules.md §5.5), a pure function of (contract,
//! business date D, lead times), and the due date it keeps.
//!
//! - A contract that goes on unless cancelled (it auto-extends, or it has no end date) and has
//!   a latest allowed cancellation date L, with no cancellation pending: for each lead time t,
//!   when `shift_back(L, t) <= D <= L`, one `deadline_approaching` event.
//! - A contract with an end date E that will not be extended (no auto-extension, or a pending
//!   cancellation ending on E): when `shift_back(E, t) <= D <= E`, one `end_approaching` event.
//! - Exactly one event per (contract, kind, date reminded of, lead time): the contract keeps
//!   the reminders it was sent for dates not yet past, and the event's transition key is that
//!   reminder. A date already past (`D > date`) is never reminded of, so a catch-up after
//!   downtime sends only what is still ahead, once.
//! - Dates are compared with `<=` / `>=` only: a late sweep sends what daily sweeps would have
//!   sent for the dates still ahead.

use chrono::NaiveDate;
use serde_json::json;

use crate::calendar::{shift, shift_back};
use crate::contract::{
    Contract, ContractEvent, ContractStatus, EventKind, LeadTimes, ReminderKind, SentReminder,
    Transition,
};

/// What a contract's reminders are about on a given state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReminderTarget {
    /// The contract goes on unless cancelled by `latest_cancellation_date`.
    Deadline {
        /// `L`: the last day a cancellation may be received.
        latest_cancellation_date: NaiveDate,
        /// `C`: the end date if cancelled now.
        cancellation_date: Option<NaiveDate>,
        /// The end date the contract has if nobody cancels by `L` (`None`: open-ended).
        extends_to: Option<NaiveDate>,
    },
    /// The contract ends on `end_date` and will not be extended.
    End {
        /// `E`: the last day of service.
        end_date: NaiveDate,
        /// `term_end` (no auto-extension) or `cancellation` (a pending cancellation).
        cause: &'static str,
    },
}

impl ReminderTarget {
    /// The kind of reminder it gives.
    pub fn kind(&self) -> ReminderKind {
        match self {
            ReminderTarget::Deadline { .. } => ReminderKind::DeadlineApproaching,
            ReminderTarget::End { .. } => ReminderKind::EndApproaching,
        }
    }

    /// The date reminded of.
    pub fn date(&self) -> NaiveDate {
        match self {
            ReminderTarget::Deadline {
                latest_cancellation_date,
                ..
            } => *latest_cancellation_date,
            ReminderTarget::End { end_date, .. } => *end_date,
        }
    }
}

/// What an active contract's reminders are about (see the module's documentation); `None`
/// when it is not active or has nothing to be reminded of (no deadline left and no end).
pub fn reminder_target(contract: &Contract) -> Option<ReminderTarget> {
    if contract.status != ContractStatus::Active {
        return None;
    }
    if let Some(pending) = &contract.cancellation {
        return Some(ReminderTarget::End {
            end_date: pending.end_date,
            cause: "cancellation",
        });
    }
    let term = contract
        .extension_term
        .filter(|term| contract.auto_extend && !term.is_none());
    match (contract.end_date, term) {
        (Some(end_date), None) => Some(ReminderTarget::End {
            end_date,
            cause: "term_end",
        }),
        (end, term) => {
            let latest = contract.latest_cancellation_date?;
            let cancellation_date = contract.cancellation_date;
            let extends_to = match (end, term) {
                (Some(end), Some(term)) => Some(match cancellation_date {
                    Some(cancel) if cancel >= end => shift(cancel, term),
                    _ => end,
                }),
                _ => None,
            };
            Some(ReminderTarget::Deadline {
                latest_cancellation_date: latest,
                cancellation_date,
                extends_to,
            })
        }
    }
}

/// The lead times in force for a contract: its own, or the configured ones.
pub fn lead_times_of(contract: &Contract, configured: &LeadTimes) -> LeadTimes {
    contract.reminders.lead_times.unwrap_or(*configured)
}

/// The first day a reminder not sent yet falls due for this contract (`None`: none left).
pub fn next_reminder_on(contract: &Contract, configured: &LeadTimes) -> Option<NaiveDate> {
    let target = reminder_target(contract)?;
    lead_times_of(contract, configured)
        .iter()
        .filter(|lead_time| {
            !contract.reminders.sent.contains(&SentReminder {
                kind: target.kind(),
                date: target.date(),
                lead_time: *lead_time,
            })
        })
        .map(|lead_time| shift_back(target.date(), lead_time))
        .min()
}

/// Set the contract's computed `next_reminder_on` for its current state, as every write does
/// (the stored due date of `send_reminders` follows from it).
pub fn reschedule(contract: &mut Contract, configured: &LeadTimes) {
    contract.reminders.next_on = next_reminder_on(contract, configured);
}

/// The `send_reminders` rule on business date D: every reminder whose window
/// `shift_back(date, t) <= D <= date` is open and that was not sent yet, as events with
/// `effective_on` D. Reminders kept for dates already past are dropped and the next reminder
/// is scheduled. `None` when nothing changes.
pub fn send_reminders(
    contract: &Contract,
    business_date: NaiveDate,
    configured: &LeadTimes,
) -> Option<Transition> {
    if contract.status != ContractStatus::Active {
        return None;
    }
    let mut next = contract.clone();
    next.reminders
        .sent
        .retain(|sent| sent.date >= business_date);
    let mut events = Vec::new();
    if let Some(target) = reminder_target(contract) {
        let date = target.date();
        for lead_time in lead_times_of(contract, configured).iter() {
            let reminder = SentReminder {
                kind: target.kind(),
                date,
                lead_time,
            };
            let opens = shift_back(date, lead_time);
            if opens > business_date
                || business_date > date
                || next.reminders.sent.contains(&reminder)
            {
                continue;
            }
            events.push(reminder_event(&target, reminder, business_date));
            next.reminders.sent.push(reminder);
        }
    }
    reschedule(&mut next, configured);
    if next == *contract {
        return None;
    }
    Some(Transition {
        contract: next,
        events,
    })
}

/// The event of one reminder.
fn reminder_event(
    target: &ReminderTarget,
    reminder: SentReminder,
    business_date: NaiveDate,
) -> ContractEvent {
    let days_left = (reminder.date - business_date).num_days();
    let lead_time = reminder.lead_time.to_string();
    let (kind, details) = match *target {
        ReminderTarget::Deadline {
            latest_cancellation_date,
            cancellation_date,
            extends_to,
        } => (
            EventKind::DeadlineApproaching,
            json!({
                "lead_time": lead_time,
                "latest_cancellation_date": latest_cancellation_date,
                "cancellation_date": cancellation_date,
                "extends_to": extends_to,
                "days_left": days_left,
            }),
        ),
        ReminderTarget::End { end_date, cause } => (
            EventKind::EndApproaching,
            json!({
                "lead_time": lead_time,
                "end_date": end_date,
                "days_left": days_left,
                "cause": cause,
            }),
        ),
    };
    ContractEvent {
        kind,
        effective_on: business_date,
        line_ref: None,
        details,
        transition_key: Some(reminder.key()),
    }
}

/// One contract whose deadline or end falls within a window (`contractd reminders`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upcoming {
    /// The contract's ref.
    pub reference: String,
    /// Its customer.
    pub customer: String,
    /// Its zone.
    pub time_zone: String,
    /// What comes: a deadline or an end.
    pub kind: ReminderKind,
    /// What the date is, as the events' details say it.
    pub target: ReminderTarget,
    /// The day the list was computed for, in the contract's zone.
    pub today: NaiveDate,
    /// Days from `today` to the date.
    pub days_left: i64,
}

/// The contract's deadline or end when it falls within `today..=shift(today, within)`, with
/// what it is about; `None` otherwise. The same target as the reminders use, whatever the
/// lead times, with the cancellation dates computed as of `today` (not as of the last sweep).
pub fn upcoming(
    contract: &Contract,
    today: NaiveDate,
    within: crate::calendar::Period,
) -> Option<Upcoming> {
    let mut current = contract.clone();
    current.recompute_cancellation_dates(today);
    let target = reminder_target(&current)?;
    let date = target.date();
    if date < today || date > shift(today, within) {
        return None;
    }
    Some(Upcoming {
        reference: contract.reference.clone(),
        customer: contract.customer.clone(),
        time_zone: contract.time_zone.name().to_string(),
        kind: target.kind(),
        target,
        today,
        days_left: (date - today).num_days(),
    })
}
