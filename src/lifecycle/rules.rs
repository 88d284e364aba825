//! The first four daily rules (docs/rules.md §5.1 to §5.4; the fifth is in `reminders.rs`),
//! each a pure function of (contract, business date D).
//!
//! Common to every rule:
//!
//! - only `active` contracts are touched (drafts wait, ended contracts are done);
//! - every comparison with D is `< D`, never `=`: one sweep after downtime catches up;
//! - every transition recomputes `cancellation_date` / `latest_cancellation_date` as of D in the
//!   state it returns, so no deadline computed from a superseded end date survives;
//! - every event carries a `transition_key` derived from the state the transition starts from
//!   (`expired:<end date>`, `extended:<old end date>`, …), so the same transition can never be
//!   recorded twice, and `effective_on` = D, the business date the change is made on;
//! - applying a rule to its own output for the same D gives `Ok(None)` / `None` (idempotence);
//! - if a rule changes a contract on D, the contract's [`DueDates`] for that job is before D.

use chrono::NaiveDate;
use serde_json::json;

use super::billing::{self, Scope};
use super::{DueDates, RulePolicy, RuleRefusal};
use crate::calendar::{billing_period, next_day, prorate, shift_back, Period, PeriodUnit};
use crate::contract::{
    BillingSchedule, Cancellation, Contract, ContractEvent, ContractStatus, EventKind, LineKind,
    LineStatus, Proration, ScheduleStatus, Transition,
};

/// The due dates of `contract` (see [`DueDates`]): each job examines the contract on D only
/// when its due date is before D.
///
/// A contract whose stored `latest_cancellation_date` is null has no refresh due date: import
/// and every transition compute the dates, and a null deadline (no regular cancellation left)
/// stays null as time passes, so there is nothing to refresh.
pub(super) fn due_dates(contract: &Contract) -> DueDates {
    if contract.status != ContractStatus::Active {
        return DueDates::default();
    }
    let pending = contract
        .cancellation
        .as_ref()
        .map(|pending| pending.end_date);
    let active_lines = || {
        contract
            .lines
            .iter()
            .filter(|line| line.status == LineStatus::Active)
    };
    let line_cancellation = active_lines()
        .filter_map(|line| line.cancellation.as_ref().map(|pending| pending.end_date))
        .min();
    let extension = match (pending, contract.end_date, contract.extension_term) {
        (None, Some(end), Some(term)) if contract.auto_extend && !term.is_none() => {
            Some(shift_back(end, contract.notice_period))
        }
        _ => None,
    };
    let contract_expiry = if pending.is_none() {
        contract.end_date
    } else {
        None
    };
    let line_expiry = active_lines()
        .filter_map(|line| line.end_date)
        .filter(|end| pending.is_none_or(|pending_end| *end < pending_end))
        .min();
    DueDates {
        cancellation: earliest(pending, line_cancellation),
        extension,
        expiry: earliest(contract_expiry, line_expiry),
        refresh: if pending.is_none() {
            contract.latest_cancellation_date
        } else {
            None
        },
        reminder: None,
    }
}

/// The earlier of two optional dates.
fn earliest(a: Option<NaiveDate>, b: Option<NaiveDate>) -> Option<NaiveDate> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// An event of a daily rule.
fn event(
    kind: EventKind,
    business_date: NaiveDate,
    line_ref: Option<String>,
    details: serde_json::Value,
    transition_key: String,
) -> ContractEvent {
    ContractEvent {
        kind,
        effective_on: business_date,
        line_ref,
        details,
        transition_key: Some(transition_key),
    }
}

/// The finished transition: dates recomputed as of `business_date`.
fn finish(
    mut contract: Contract,
    events: Vec<ContractEvent>,
    business_date: NaiveDate,
) -> Transition {
    contract.recompute_cancellation_dates(business_date);
    Transition { contract, events }
}

/// Execute pending cancellations (contract and lines) whose end date is before `business_date`.
///
/// - The contract's pending cancellation with end date `E < D`: status `cancelled`,
///   `end_date = E` (when that changes it, `original_end_date` records the old end date unless
///   it already holds one; an open-ended contract records nothing), `end_reason` / `end_notes`
///   from the cancellation, billable active lines `cancelled` and the other active lines
///   `expired` (a line that has not started by `E` is `cancelled` whatever it is), line end
///   dates capped at `E` (never before the line's start), pending line cancellations dropped,
///   billing effects at `E` ([`billing::end_billing`]), a final invoice when asked for, the
///   cancellation cleared, `auto_extend` off.
/// - A pending cancellation of an active line with end date `E < D` (and before the
///   contract's own due cancellation, which would end the line anyway): that line `cancelled`,
///   its end date `E`, its `auto_extend` off, billing effects and final invoice for that line
///   only. When this leaves no line active (and the contract has lines), the contract is
///   cancelled too, at the latest end date of its lines, with the reason and notes of the
///   line cancellation that ended last.
///
/// Refused ([`RuleRefusal`] naming the schedule) when a billed schedule reaches beyond the end
/// date and `policy.allow_end_before_billed_to` is off.
pub fn execute_cancellations(
    contract: &Contract,
    business_date: NaiveDate,
    policy: &RulePolicy,
) -> Result<Option<Transition>, RuleRefusal> {
    if contract.status != ContractStatus::Active {
        return Ok(None);
    }
    let contract_due = contract
        .cancellation
        .as_ref()
        .map(|pending| pending.end_date)
        .filter(|end| *end < business_date);
    let mut lines_due: Vec<(NaiveDate, usize)> = contract
        .lines
        .iter()
        .enumerate()
        .filter(|(_, line)| line.status == LineStatus::Active)
        .filter_map(|(index, line)| Some((line.cancellation.as_ref()?.end_date, index)))
        .filter(|(end, _)| *end < business_date && contract_due.is_none_or(|due| *end < due))
        .collect();
    if contract_due.is_none() && lines_due.is_empty() {
        return Ok(None);
    }
    lines_due.sort();
    let mut next = contract.clone();
    let mut events = Vec::new();
    let mut last = None;
    for &(_, index) in &lines_due {
        if let Some((line_events, executed)) =
            execute_line(&mut next, index, business_date, policy)?
        {
            events.extend(line_events);
            last = Some(executed);
        }
    }
    if contract_due.is_some() {
        events.extend(execute_contract(&mut next, business_date, policy)?);
    } else {
        events.extend(cancel_after_last_line(
            &mut next,
            last.as_ref(),
            business_date,
            policy,
        )?);
    }
    Ok(Some(finish(next, events, business_date)))
}

/// Execute the contract's pending cancellation now, whatever its end date: what the operator
/// action does for `--immediately` and for an end date before today. `Ok(None)` when no
/// cancellation is pending or the contract is not active.
pub fn execute_pending_cancellation(
    contract: &Contract,
    business_date: NaiveDate,
    policy: &RulePolicy,
) -> Result<Option<Transition>, RuleRefusal> {
    if contract.status != ContractStatus::Active || contract.cancellation.is_none() {
        return Ok(None);
    }
    let mut next = contract.clone();
    let events = execute_contract(&mut next, business_date, policy)?;
    Ok(Some(finish(next, events, business_date)))
}

/// Execute the pending cancellation of one line now, whatever its end date (the line action's
/// `--immediately` or end date before today); cancels the contract too when no line is left
/// active. `Ok(None)` when the line does not exist, is not active or has nothing pending.
pub fn execute_pending_line_cancellation(
    contract: &Contract,
    line_ref: &str,
    business_date: NaiveDate,
    policy: &RulePolicy,
) -> Result<Option<Transition>, RuleRefusal> {
    if contract.status != ContractStatus::Active {
        return Ok(None);
    }
    let Some(index) = contract.lines.iter().position(|line| {
        line.reference == line_ref
            && line.status == LineStatus::Active
            && line.cancellation.is_some()
    }) else {
        return Ok(None);
    };
    let mut next = contract.clone();
    let Some((mut events, executed)) = execute_line(&mut next, index, business_date, policy)?
    else {
        return Ok(None);
    };
    events.extend(cancel_after_last_line(
        &mut next,
        Some(&executed),
        business_date,
        policy,
    )?);
    Ok(Some(finish(next, events, business_date)))
}

/// Execute the pending cancellation of line `index` at its end date: the events and the
/// cancellation executed, `None` when the line has none.
fn execute_line(
    contract: &mut Contract,
    index: usize,
    business_date: NaiveDate,
    policy: &RulePolicy,
) -> Result<Option<(Vec<ContractEvent>, Cancellation)>, RuleRefusal> {
    let Some(line) = contract.lines.get(index) else {
        return Ok(None);
    };
    let Some(pending) = line.cancellation.clone() else {
        return Ok(None);
    };
    let line_ref = line.reference.clone();
    let end = pending.end_date;
    let mut events = Vec::new();
    let credit_events =
        billing::end_billing(contract, Scope::Line(&line_ref), end, policy, business_date)?;
    let Some(line) = contract.lines.get_mut(index) else {
        return Ok(None);
    };
    let previous_end = line.end_date;
    line.status = LineStatus::Cancelled;
    line.end_date = Some(end.max(line.start_date));
    line.auto_extend = false;
    line.cancellation = None;
    events.push(event(
        EventKind::LineCancellationExecuted,
        business_date,
        Some(line_ref.clone()),
        json!({
            "end_date": end,
            "previous_end_date": previous_end,
            "received_on": pending.received_on,
            "reason": pending.reason,
            "notes": pending.notes,
        }),
        format!("line_cancellation_executed:{line_ref}:{end}"),
    ));
    events.extend(credit_events);
    if pending.final_invoice {
        events.extend(billing::create_final_invoice(
            contract,
            Scope::Line(&line_ref),
            end,
            business_date,
        ));
    }
    Ok(Some((events, pending)))
}

/// Execute the contract's pending cancellation (if any) at its end date.
fn execute_contract(
    contract: &mut Contract,
    business_date: NaiveDate,
    policy: &RulePolicy,
) -> Result<Vec<ContractEvent>, RuleRefusal> {
    let Some(pending) = contract.cancellation.clone() else {
        return Ok(Vec::new());
    };
    let ending = Ending {
        end_date: pending.end_date,
        reason: pending.reason.clone(),
        notes: pending.notes.clone(),
        final_invoice: pending.final_invoice,
        details: json!({
            "received_on": pending.received_on,
            "cause": "cancellation",
        }),
    };
    end_by_cancellation(contract, ending, business_date, policy)
}

/// When line cancellations just left no line active, cancel the contract too: at the latest
/// end date of its lines, with the reason and notes of `last`, the line cancellation that
/// ended last.
fn cancel_after_last_line(
    contract: &mut Contract,
    last: Option<&Cancellation>,
    business_date: NaiveDate,
    policy: &RulePolicy,
) -> Result<Vec<ContractEvent>, RuleRefusal> {
    let Some(last) = last else {
        return Ok(Vec::new());
    };
    if contract.status != ContractStatus::Active
        || contract.lines.is_empty()
        || contract
            .lines
            .iter()
            .any(|line| line.status == LineStatus::Active)
    {
        return Ok(Vec::new());
    }
    let end_date = contract
        .lines
        .iter()
        .filter_map(|line| line.end_date)
        .max()
        .unwrap_or(last.end_date);
    let ending = Ending {
        end_date,
        reason: last.reason.clone(),
        notes: last.notes.clone(),
        final_invoice: false,
        details: json!({ "cause": "last_line_cancelled" }),
    };
    end_by_cancellation(contract, ending, business_date, policy)
}

/// How a contract is ended by a cancellation.
struct Ending {
    end_date: NaiveDate,
    reason: Option<String>,
    notes: Option<String>,
    final_invoice: bool,
    details: serde_json::Value,
}

/// End the whole contract by a cancellation at `ending.end_date`.
fn end_by_cancellation(
    contract: &mut Contract,
    ending: Ending,
    business_date: NaiveDate,
    policy: &RulePolicy,
) -> Result<Vec<ContractEvent>, RuleRefusal> {
    let end = ending.end_date;
    let credit_events =
        billing::end_billing(contract, Scope::Contract, end, policy, business_date)?;
    let previous_end = contract.end_date;
    if let Some(old) = previous_end.filter(|old| *old != end) {
        contract.original_end_date.get_or_insert(old);
    }
    contract.end_date = Some(end);
    let mut ended_lines = Vec::new();
    for line in &mut contract.lines {
        if line.status == LineStatus::Active {
            line.status = if line.billable || line.start_date > end {
                LineStatus::Cancelled
            } else {
                LineStatus::Expired
            };
            ended_lines.push(json!({ "ref": line.reference, "status": line.status.as_str() }));
        }
        if line.end_date.is_none_or(|line_end| line_end > end) {
            line.end_date = Some(end.max(line.start_date));
        }
        line.cancellation = None;
    }
    contract.status = ContractStatus::Cancelled;
    contract.end_reason = ending.reason.clone();
    contract.end_notes = ending.notes.clone();
    contract.cancellation = None;
    contract.auto_extend = false;
    let mut details = json!({
        "end_date": end,
        "previous_end_date": previous_end,
        "reason": ending.reason,
        "notes": ending.notes,
        "final_invoice": ending.final_invoice,
        "lines": ended_lines,
    });
    if let (Some(target), Some(extra)) = (details.as_object_mut(), ending.details.as_object()) {
        target.extend(extra.clone());
    }
    let mut events = vec![event(
        EventKind::CancellationExecuted,
        business_date,
        None,
        details,
        format!("cancellation_executed:{end}"),
    )];
    events.extend(credit_events);
    if ending.final_invoice {
        events.extend(billing::create_final_invoice(
            contract,
            Scope::Contract,
            end,
            business_date,
        ));
    }
    Ok(events)
}

/// Extend an auto-extending contract whose notice deadline is before `business_date`
/// (docs/rules.md §5.2).
///
/// An active contract with `auto_extend`, an end date, a non-zero extension term and no
/// pending cancellation, whose deadline `shift_back(end_date, notice_period)` is before D,
/// gets `end_date` extended by whole terms ([`crate::calendar::extend_term`], one step at a
/// time) until the deadline is no longer past: one call catches up every missed term. Then
/// (see [`extend_contract`]) active lines with `auto_extend` whose end date was the old
/// contract end date move to the new one, and planned billing schedules are added for the new
/// term of recurring lines. Event `extended` with `{from, to, terms, …}`.
pub fn auto_extend(contract: &Contract, business_date: NaiveDate) -> Option<Transition> {
    if contract.status != ContractStatus::Active
        || !contract.auto_extend
        || contract.cancellation.is_some()
    {
        return None;
    }
    let end = contract.end_date?;
    let term = contract.extension_term.filter(|term| !term.is_none())?;
    let extended = crate::calendar::extend_term(end, contract.notice_period, term, business_date);
    if extended.terms_added == 0 || extended.end_date <= end {
        return None;
    }
    let mut next = contract.clone();
    let extension = extend_contract(&mut next, extended.end_date);
    let details = json!({
        "from": end,
        "to": extended.end_date,
        "terms": extended.terms_added,
        "extension_term": term.to_string(),
        "lines_moved": extension.lines_moved,
        "schedules_added": extension.schedules_added,
    });
    let events = vec![event(
        EventKind::Extended,
        business_date,
        None,
        details,
        // The business date too: a backdated cancellation can undo an extension, and a revoke
        // then lets the same end date extend again on a later day (docs/rules.md §6.2).
        format!("extended:{end}:{business_date}"),
    )];
    Some(finish(next, events, business_date))
}

/// What [`extend_contract`] changed besides the end date.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Extension {
    /// Lines whose end date moved with the contract's.
    pub lines_moved: Vec<String>,
    /// How many planned billing schedules were added.
    pub schedules_added: usize,
}

/// Move the contract's end date forward to `new_end` (nothing when it is not later), with its
/// lines and billing schedules:
///
/// - active lines with `auto_extend` whose end date was the old contract end date move to
///   `new_end`;
/// - for every active recurring line that runs into the new term (it moved, or it has no end
///   date of its own) and has a non-zero billing period, planned schedules are added for the
///   days from the day after the old end date (or after the line's last schedule, whichever is
///   later: never a duplicate period) to `new_end`; a *planned* schedule that the old end date
///   cut short is reopened and planned again from its start, so several extensions in a row
///   plan the same schedules as one catch-up extension over all of them. Periods come from the line's anchor, its
///   start date ([`billing_period`]); amount = `amount_minor`; a period cut at either side
///   (the rest of a period the old end date cut, or the last period cut at `new_end`) is
///   prorated for `recurring_fixed` lines under `actual_days` proration.
pub(crate) fn extend_contract(contract: &mut Contract, new_end: NaiveDate) -> Extension {
    let mut extension = Extension::default();
    let Some(old_end) = contract.end_date.filter(|old| *old < new_end) else {
        return extension;
    };
    contract.end_date = Some(new_end);
    let prorated_fixed = contract.proration == Proration::ActualDays;
    let mut added = Vec::new();
    for line in &mut contract.lines {
        if line.status != LineStatus::Active {
            continue;
        }
        let moves = line.auto_extend && line.end_date == Some(old_end);
        if moves {
            line.end_date = Some(new_end);
            extension.lines_moved.push(line.reference.clone());
        } else if line.end_date.is_some() {
            continue;
        }
        if !matches!(
            line.kind,
            LineKind::RecurringFixed | LineKind::RecurringUsage
        ) {
            continue;
        }
        let Some(period) = line.billing_period.filter(|period| !period.is_none()) else {
            continue;
        };
        // A planned schedule that the old end date cut short is reopened: the new term
        // continues its billing period, so it is planned again whole, exactly as one sweep that
        // extended over both terms at once would have planned it (catch-up equals daily).
        let cut_short = contract.schedules.iter().position(|schedule| {
            schedule.line_ref == line.reference
                && schedule.status == ScheduleStatus::Planned
                && schedule.period_end == old_end
                && period_containing(line.start_date, period, schedule.period_start)
                    .is_some_and(|whole| whole.end > old_end)
        });
        let reopened_from = cut_short.map(|index| contract.schedules.remove(index).period_start);
        let covered_to = contract
            .schedules
            .iter()
            .filter(|schedule| schedule.line_ref == line.reference)
            .map(|schedule| schedule.period_end)
            .max();
        if covered_to.is_some_and(|covered| covered >= new_end) {
            continue;
        }
        let from = reopened_from
            .unwrap_or_else(|| next_day(old_end))
            .max(covered_to.map_or(NaiveDate::MIN, next_day))
            .max(line.start_date);
        if from > new_end {
            continue;
        }
        let prorated = prorated_fixed && line.kind == LineKind::RecurringFixed;
        for (start, end, amount) in plan_periods(
            line.start_date,
            period,
            from,
            new_end,
            line.amount_minor,
            prorated,
        ) {
            added.push(BillingSchedule {
                line_ref: line.reference.clone(),
                period_start: start,
                period_end: end,
                amount_minor: amount,
                status: ScheduleStatus::Planned,
                document: None,
            });
        }
    }
    extension.schedules_added = added.len();
    contract.schedules.extend(added);
    extension
}

/// The most days one `period` can span (a lower bound on how many periods fit in a gap).
fn longest_days(period: Period) -> i64 {
    let per_unit = match period.unit() {
        PeriodUnit::Day => 1,
        PeriodUnit::Week => 7,
        PeriodUnit::Month => 31,
        PeriodUnit::Quarter => 92,
        PeriodUnit::Year => 366,
    };
    (i64::from(period.count()) * per_unit).max(1)
}

/// The index and extent of the billing period (anchored at `anchor`) that contains `date`,
/// or the first one after it when `date` is before the anchor; `None` when periods stop
/// advancing (a zero period, or the end of the calendar).
fn locate_period(
    anchor: NaiveDate,
    period: Period,
    date: NaiveDate,
) -> Option<(i64, crate::calendar::BillingPeriod)> {
    // Period k starts at most k × longest days after the anchor, so this k starts on or
    // before `date`; walk forward to the period that contains it.
    let mut index = (date - anchor).num_days().max(0) / longest_days(period);
    let mut current = billing_period(anchor, period, index);
    while current.end < date {
        let next = billing_period(anchor, period, index.saturating_add(1));
        if next.start <= current.start {
            return None;
        }
        index = index.saturating_add(1);
        current = next;
    }
    Some((index, current))
}

/// The billing period (anchored at `anchor`) that contains `date`.
fn period_containing(
    anchor: NaiveDate,
    period: Period,
    date: NaiveDate,
) -> Option<crate::calendar::BillingPeriod> {
    locate_period(anchor, period, date)
        .map(|(_, whole)| whole)
        .filter(|whole| whole.start <= date)
}

/// The billing periods of a line anchored at `anchor`, cut to `from..=to`: `(start, end,
/// amount)`, the amount prorated by days for a cut period when `prorated`.
fn plan_periods(
    anchor: NaiveDate,
    period: Period,
    from: NaiveDate,
    to: NaiveDate,
    amount: i64,
    prorated: bool,
) -> Vec<(NaiveDate, NaiveDate, i64)> {
    let mut planned = Vec::new();
    let Some((mut index, mut current)) = locate_period(anchor, period, from) else {
        return planned;
    };
    while current.start <= to {
        let start = current.start.max(from);
        let end = current.end.min(to);
        let full = start == current.start && end == current.end;
        let piece_amount = if full || !prorated {
            amount
        } else {
            prorate(amount, (end - start).num_days() + 1, current.days())
        };
        planned.push((start, end, piece_amount));
        let next = billing_period(anchor, period, index.saturating_add(1));
        if next.start <= current.start {
            break;
        }
        index = index.saturating_add(1);
        current = next;
    }
    planned
}

/// Expire a contract (or its lines) whose end date is before `business_date`
/// (docs/rules.md §5.3).
///
/// An active contract without a pending cancellation whose end date is before D becomes
/// `expired` with its active lines (an open-ended line gets the contract's end date; pending
/// line cancellations are dropped): event `expired`. Otherwise each active line whose own end
/// date is before D becomes `expired` (its pending cancellation, which could no longer end it
/// earlier, dropped) while the contract goes on: event `line_expired`. With a pending
/// cancellation of the contract, only lines ending before its end date expire on their own;
/// the others are ended by the cancellation when it executes.
pub fn expire(contract: &Contract, business_date: NaiveDate) -> Option<Transition> {
    if contract.status != ContractStatus::Active {
        return None;
    }
    let mut next = contract.clone();
    let mut events = Vec::new();
    match (&contract.cancellation, contract.end_date) {
        (None, Some(end)) if end < business_date => {
            next.status = ContractStatus::Expired;
            let mut expired_lines = Vec::new();
            for line in &mut next.lines {
                if line.status != LineStatus::Active {
                    continue;
                }
                line.status = LineStatus::Expired;
                if line.end_date.is_none_or(|line_end| line_end > end) {
                    line.end_date = Some(end.max(line.start_date));
                }
                line.cancellation = None;
                expired_lines.push(line.reference.clone());
            }
            events.push(event(
                EventKind::Expired,
                business_date,
                None,
                json!({ "end_date": end, "lines": expired_lines }),
                format!("expired:{end}"),
            ));
        }
        (pending, _) => {
            // A line ending on or after a pending cancellation's end date is ended by that
            // cancellation (cancelled, not expired) when it executes.
            let pending_end = pending.as_ref().map(|pending| pending.end_date);
            for line in &mut next.lines {
                let Some(end) = line.end_date.filter(|end| {
                    *end < business_date && pending_end.is_none_or(|pending_end| *end < pending_end)
                }) else {
                    continue;
                };
                if line.status != LineStatus::Active {
                    continue;
                }
                line.status = LineStatus::Expired;
                let dropped = line.cancellation.take();
                events.push(event(
                    EventKind::LineExpired,
                    business_date,
                    Some(line.reference.clone()),
                    json!({
                        "end_date": end,
                        "dropped_cancellation_end_date": dropped.map(|pending| pending.end_date),
                    }),
                    format!("line_expired:{}:{end}", line.reference),
                ));
            }
            if events.is_empty() {
                return None;
            }
        }
    }
    Some(finish(next, events, business_date))
}

/// Recompute the cancellation date and deadline when the deadline is before `business_date`
/// (docs/rules.md §5.4).
///
/// Only an active contract without a pending cancellation whose stored
/// `latest_cancellation_date` is before D, and only when the values as of D differ (they
/// always do: the new deadline is on or after D, or null when no regular cancellation is left).
/// A null deadline is left alone: it means no regular cancellation is possible any more, and
/// that stays so as time passes. Event `deadlines_refreshed` with old and new values.
pub fn refresh_deadlines(contract: &Contract, business_date: NaiveDate) -> Option<Transition> {
    if contract.status != ContractStatus::Active || contract.cancellation.is_some() {
        return None;
    }
    let passed = contract
        .latest_cancellation_date
        .filter(|deadline| *deadline < business_date)?;
    let mut next = contract.clone();
    next.recompute_cancellation_dates(business_date);
    if next.cancellation_date == contract.cancellation_date
        && next.latest_cancellation_date == contract.latest_cancellation_date
    {
        return None;
    }
    let details = json!({
        "previous_cancellation_date": contract.cancellation_date,
        "previous_latest_cancellation_date": contract.latest_cancellation_date,
        "cancellation_date": next.cancellation_date,
        "latest_cancellation_date": next.latest_cancellation_date,
    });
    let events = vec![event(
        EventKind::DeadlinesRefreshed,
        business_date,
        None,
        details,
        format!("deadlines_refreshed:{passed}"),
    )];
    Some(finish(next, events, business_date))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    fn p(text: &str) -> Period {
        text.parse().unwrap()
    }

    #[test]
    fn plan_periods_follow_the_anchor_and_prorate_cut_periods() {
        // Anchored on 31 Jan: periods start on month ends, computed from the anchor.
        let planned = plan_periods(
            d("2024-01-31"),
            p("1M"),
            d("2024-03-10"),
            d("2024-05-15"),
            2900,
            true,
        );
        let periods: Vec<(NaiveDate, NaiveDate)> = planned
            .iter()
            .map(|(start, end, _)| (*start, *end))
            .collect();
        assert_eq!(
            periods,
            vec![
                (d("2024-03-10"), d("2024-03-30")),
                (d("2024-03-31"), d("2024-04-29")),
                (d("2024-04-30"), d("2024-05-15")),
            ]
        );
        // 29 Feb..30 Mar is 31 days, 21 of them used; 30 Apr..30 May is 31 days, 16 used.
        assert_eq!(planned[0].2, prorate(2900, 21, 31));
        assert_eq!(planned[1].2, 2900);
        assert_eq!(planned[2].2, prorate(2900, 16, 31));
    }

    #[test]
    fn plan_periods_without_proration_keep_the_full_amount() {
        let planned = plan_periods(
            d("2025-01-01"),
            p("1Q"),
            d("2025-02-01"),
            d("2025-02-28"),
            9000,
            false,
        );
        assert_eq!(planned, vec![(d("2025-02-01"), d("2025-02-28"), 9000)]);
    }

    #[test]
    fn plan_periods_far_from_the_anchor_start_near_it() {
        let planned = plan_periods(
            d("2000-01-01"),
            p("1D"),
            d("2025-01-01"),
            d("2025-01-03"),
            10,
            true,
        );
        assert_eq!(planned.len(), 3);
        assert_eq!(planned[0], (d("2025-01-01"), d("2025-01-01"), 10));
    }

    #[test]
    fn plan_periods_saturate_at_the_end_of_the_calendar() {
        let planned = plan_periods(
            NaiveDate::MAX,
            p("1Y"),
            NaiveDate::MAX,
            NaiveDate::MAX,
            10,
            true,
        );
        assert_eq!(planned.len(), 1);
    }
}
