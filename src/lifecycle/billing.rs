//! Billing effects of ending a contract or line at an end date (docs/rules.md §7), and the final
//! invoice of a cancellation (Nexudus).
//!
//! Ending at end date `E` (the last day of service, inclusive):
//!
//! - schedules starting after `E` are deleted;
//! - the schedule containing `E` ends at `E`; for a `recurring_fixed` line of a contract with
//!   `actual_days` proration its amount becomes
//!   [`prorate`]`(amount, used_days, period_days)`, where the period is the schedule's own
//!   `period_start..=period_end` before the cut; other lines keep the full amount;
//! - a **billed** schedule that is deleted or cut is refused ([`BilledBeyondEndDate`]) unless
//!   [`RulePolicy::allow_end_before_billed_to`] is set. When it is set, a billed schedule
//!   beyond `E` is deleted and its whole amount credited, and the billed schedule containing
//!   `E` keeps its document and is reduced, the difference credited. The credits are gathered
//!   in **one** draft credit note per currency, for exactly the billed difference:
//!   billed before = billed kept + credited, to the minor unit. Nothing to credit (a cut
//!   without proration) creates no credit note.
//!
//! Document references are deterministic, derived from the contract's state:
//! `<contract ref>-CN-<n>` for credit notes and `<contract ref>-FINAL-<n>` for final
//! invoices, `n` one more than the documents of that kind already linked (moved on until the
//! reference is unused), the contract ref shortened so the whole stays within 64 characters.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde_json::json;

use super::{RulePolicy, RuleRefusal};
use crate::calendar::{billing_period, prorate, BillingPeriod, Period, PeriodUnit};
use crate::contract::{
    BillingDocument, BillingSchedule, Contract, ContractEvent, DocumentKind, DocumentStatus,
    EventKind, LineKind, Proration, ScheduleStatus,
};

/// The currency used for a schedule whose line cannot be found (ISO 4217 "no currency").
const NO_CURRENCY: &str = "XXX";

/// The longest document reference a contract record accepts.
const MAX_REFERENCE_CHARS: usize = 64;

/// Which part of a contract ends: the whole contract or one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// Every schedule of every line.
    Contract,
    /// Only the schedules of the line with this reference.
    Line(&'a str),
}

impl Scope<'_> {
    /// Whether the schedules of the line `line_ref` are in this scope.
    pub fn covers(self, line_ref: &str) -> bool {
        match self {
            Scope::Contract => true,
            Scope::Line(reference) => reference == line_ref,
        }
    }

    fn line_ref(self) -> Option<String> {
        match self {
            Scope::Contract => None,
            Scope::Line(reference) => Some(reference.to_string()),
        }
    }
}

/// A billed schedule that ending at `end_date` would delete or cut, while the policy does not
/// allow ending before the billed-to date.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("contract '{contract}': schedules[{index}]: {}", self.reason())]
pub struct BilledBeyondEndDate {
    /// The contract's reference.
    pub contract: String,
    /// Index of the schedule in the contract's `schedules`.
    pub index: usize,
    /// The line the schedule bills.
    pub line_ref: String,
    /// First day of the billed period.
    pub period_start: NaiveDate,
    /// Last day of the billed period: the contract is billed up to here.
    pub period_end: NaiveDate,
    /// The document it was billed on.
    pub document: Option<String>,
    /// The end date that was asked for.
    pub end_date: NaiveDate,
}

impl BilledBeyondEndDate {
    /// The field the refusal is about, e.g. `schedules[3]`.
    pub fn field(&self) -> String {
        format!("schedules[{}]", self.index)
    }

    /// What is wrong and what to do, without the contract and field.
    fn reason(&self) -> String {
        let document = self
            .document
            .as_ref()
            .map(|document| format!(" on '{document}'"))
            .unwrap_or_default();
        format!(
            "line '{}' is billed{document} for {}..{}, beyond the end date {}; choose an end \
             date on or after {}, or set allow_end_before_billed_to to credit the billed \
             difference with a draft credit note",
            self.line_ref, self.period_start, self.period_end, self.end_date, self.period_end
        )
    }
}

impl From<BilledBeyondEndDate> for RuleRefusal {
    fn from(refusal: BilledBeyondEndDate) -> Self {
        RuleRefusal {
            field: refusal.field(),
            message: format!("contract '{}': {}", refusal.contract, refusal.reason()),
        }
    }
}

/// The first billed schedule in `scope` that ending at `end_date` would delete or cut, if any.
pub fn billed_beyond(
    contract: &Contract,
    scope: Scope<'_>,
    end_date: NaiveDate,
) -> Option<BilledBeyondEndDate> {
    contract
        .schedules
        .iter()
        .enumerate()
        .find(|(_, schedule)| {
            scope.covers(&schedule.line_ref)
                && schedule.status == ScheduleStatus::Billed
                && schedule.period_end > end_date
        })
        .map(|(index, schedule)| BilledBeyondEndDate {
            contract: contract.reference.clone(),
            index,
            line_ref: schedule.line_ref.clone(),
            period_start: schedule.period_start,
            period_end: schedule.period_end,
            document: schedule.document.clone(),
            end_date,
        })
}

/// Whether a cut schedule of this line is prorated.
fn prorates(contract: &Contract, line_ref: &str) -> bool {
    contract.proration == Proration::ActualDays
        && contract
            .line(line_ref)
            .is_some_and(|line| line.kind == LineKind::RecurringFixed)
}

/// The currency a schedule is billed in: its line's.
fn currency_of(contract: &Contract, line_ref: &str) -> String {
    contract
        .line(line_ref)
        .map_or_else(|| NO_CURRENCY.to_string(), |line| line.currency.clone())
}

/// The amount of `schedule` once it ends at `end_date` (which lies inside it).
fn cut_amount(schedule: &BillingSchedule, end_date: NaiveDate, prorated: bool) -> i64 {
    if !prorated {
        return schedule.amount_minor;
    }
    let used_days = (end_date - schedule.period_start).num_days() + 1;
    let period_days = (schedule.period_end - schedule.period_start).num_days() + 1;
    prorate(schedule.amount_minor, used_days, period_days)
}

/// Apply the billing effects of ending `scope` at `end_date` to `contract`, and return the
/// events of the credit notes created (`credit_note_created`, dated `business_date`).
///
/// Refused, with nothing changed, when a billed schedule would be deleted or cut and
/// `policy.allow_end_before_billed_to` is off.
pub fn end_billing(
    contract: &mut Contract,
    scope: Scope<'_>,
    end_date: NaiveDate,
    policy: &RulePolicy,
    business_date: NaiveDate,
) -> Result<Vec<ContractEvent>, BilledBeyondEndDate> {
    if !policy.allow_end_before_billed_to {
        if let Some(refusal) = billed_beyond(contract, scope, end_date) {
            return Err(refusal);
        }
    }
    // Per currency: the amount to credit and what it is for.
    let mut credits: BTreeMap<String, (i64, Vec<serde_json::Value>)> = BTreeMap::new();
    let mut deleted = 0_usize;
    let mut shortened = 0_usize;
    let schedules = std::mem::take(&mut contract.schedules);
    let mut kept = Vec::with_capacity(schedules.len());
    for mut schedule in schedules {
        if !scope.covers(&schedule.line_ref) || schedule.period_end <= end_date {
            kept.push(schedule);
            continue;
        }
        let billed = schedule.status == ScheduleStatus::Billed;
        let (new_amount, removed) = if schedule.period_start > end_date {
            (None, schedule.amount_minor)
        } else {
            let amount = cut_amount(&schedule, end_date, prorates(contract, &schedule.line_ref));
            (Some(amount), schedule.amount_minor.saturating_sub(amount))
        };
        if billed {
            let entry = credits
                .entry(currency_of(contract, &schedule.line_ref))
                .or_default();
            entry.0 = entry.0.saturating_add(removed);
            entry.1.push(json!({
                "line_ref": schedule.line_ref,
                "period_start": schedule.period_start,
                "period_end": schedule.period_end,
                "document": schedule.document,
                "billed_minor": schedule.amount_minor,
                "credited_minor": removed,
            }));
        }
        match new_amount {
            None => deleted += 1,
            Some(amount) => {
                shortened += 1;
                schedule.period_end = end_date;
                schedule.amount_minor = amount;
                kept.push(schedule);
            }
        }
    }
    contract.schedules = kept;

    let mut events = Vec::new();
    for (currency, (amount, credited)) in credits {
        // A cut without proration gives nothing back: no credit note for nothing.
        if amount <= 0 {
            continue;
        }
        let reference = next_document_reference(contract, DocumentKind::CreditNote, "CN");
        contract.documents.push(BillingDocument {
            reference: reference.clone(),
            kind: DocumentKind::CreditNote,
            status: DocumentStatus::Draft,
            consolidated: false,
            amount_minor: amount,
            currency: currency.clone(),
        });
        events.push(ContractEvent {
            kind: EventKind::CreditNoteCreated,
            effective_on: business_date,
            line_ref: scope.line_ref(),
            details: json!({
                "document": reference,
                "amount_minor": amount,
                "currency": currency,
                "end_date": end_date,
                "schedules_deleted": deleted,
                "schedules_shortened": shortened,
                "credited": credited,
            }),
            transition_key: Some(format!("credit_note_created:{reference}")),
        });
    }
    Ok(events)
}

/// Take back the billing that extensions added to `scope` after `end_date`, the end date the
/// scope goes back to when those extensions are undone (docs/rules.md §6.2):
///
/// - planned schedules starting after `end_date` are deleted;
/// - a planned schedule that contains `end_date` (an extension reopened it and planned it on
///   past that day) ends there again, with the amount an extension plans for such a piece:
///   the line's price, prorated by the days of its billing period for a `recurring_fixed`
///   line under `actual_days` (the same as the schedule had before it was reopened, so an
///   undone extension leaves no trace);
/// - billed schedules beyond `end_date` are refused unless the policy allows it, then
///   credited exactly as for an early end ([`end_billing`]).
///
/// Returns the `credit_note_created` events (dated `business_date`) and how many planned
/// schedules were deleted.
pub fn retract_billing(
    contract: &mut Contract,
    scope: Scope<'_>,
    end_date: NaiveDate,
    policy: &RulePolicy,
    business_date: NaiveDate,
) -> Result<(Vec<ContractEvent>, usize), BilledBeyondEndDate> {
    if !policy.allow_end_before_billed_to {
        if let Some(refusal) = billed_beyond(contract, scope, end_date) {
            return Err(refusal);
        }
    }
    let schedules = std::mem::take(&mut contract.schedules);
    let mut kept = Vec::with_capacity(schedules.len());
    let mut deleted = 0_usize;
    for mut schedule in schedules {
        if !scope.covers(&schedule.line_ref)
            || schedule.status != ScheduleStatus::Planned
            || schedule.period_end <= end_date
        {
            kept.push(schedule);
            continue;
        }
        if schedule.period_start > end_date {
            deleted += 1;
            continue;
        }
        schedule.amount_minor = piece_amount(contract, &schedule, end_date);
        schedule.period_end = end_date;
        kept.push(schedule);
    }
    contract.schedules = kept;
    let events = end_billing(contract, scope, end_date, policy, business_date)?;
    Ok((events, deleted))
}

/// The amount an extension plans for `schedule` cut to end at `end_date`: the line's price,
/// prorated by the days of the line's billing period that contains the schedule's start when
/// the line is `recurring_fixed` under `actual_days` and the piece is not a whole period.
/// Without a line or a billing period to go by, the schedule's own amount is cut
/// ([`cut_amount`]).
fn piece_amount(contract: &Contract, schedule: &BillingSchedule, end_date: NaiveDate) -> i64 {
    let prorated = prorates(contract, &schedule.line_ref);
    let Some(line) = contract.line(&schedule.line_ref) else {
        return cut_amount(schedule, end_date, prorated);
    };
    let Some(period) = line.billing_period.filter(|period| !period.is_none()) else {
        return cut_amount(schedule, end_date, prorated);
    };
    let Some(whole) = period_containing(line.start_date, period, schedule.period_start) else {
        return cut_amount(schedule, end_date, prorated);
    };
    if !prorated || (schedule.period_start == whole.start && end_date == whole.end) {
        return line.amount_minor;
    }
    let used = (end_date - schedule.period_start).num_days() + 1;
    prorate(line.amount_minor, used, whole.days())
}

/// The billing period of a line anchored at `anchor` that contains `date`, if any.
fn period_containing(anchor: NaiveDate, period: Period, date: NaiveDate) -> Option<BillingPeriod> {
    if date < anchor {
        return None;
    }
    // Period k starts no more than k × (the longest such period) days after the anchor, so
    // this index is at or before the one that contains `date`; walk forward from it.
    let longest = i64::from(period.count()).max(1)
        * match period.unit() {
            PeriodUnit::Day => 1,
            PeriodUnit::Week => 7,
            PeriodUnit::Month => 31,
            PeriodUnit::Quarter => 92,
            PeriodUnit::Year => 366,
        };
    let mut index = (date - anchor).num_days() / longest;
    let mut current = billing_period(anchor, period, index);
    while current.end < date {
        let next = billing_period(anchor, period, index.saturating_add(1));
        if next.start <= current.start {
            return None;
        }
        index = index.saturating_add(1);
        current = next;
    }
    (current.start <= date).then_some(current)
}

/// Create the final invoice of a cancellation: one draft invoice per currency of the planned
/// schedules of `scope` that start on or before `end_date` (call it after [`end_billing`], so
/// they are already cut and prorated), amount = their sum; they become `billed` on it.
/// No planned schedule, no invoice. Returns the `final_invoice_created` events.
pub fn create_final_invoice(
    contract: &mut Contract,
    scope: Scope<'_>,
    end_date: NaiveDate,
    business_date: NaiveDate,
) -> Vec<ContractEvent> {
    let mut by_currency: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (index, schedule) in contract.schedules.iter().enumerate() {
        if scope.covers(&schedule.line_ref)
            && schedule.status == ScheduleStatus::Planned
            && schedule.period_start <= end_date
        {
            by_currency
                .entry(currency_of(contract, &schedule.line_ref))
                .or_default()
                .push(index);
        }
    }
    let mut events = Vec::new();
    for (currency, indexes) in by_currency {
        let reference = next_document_reference(contract, DocumentKind::Invoice, "FINAL");
        let mut amount = 0_i64;
        for &index in &indexes {
            if let Some(schedule) = contract.schedules.get_mut(index) {
                amount = amount.saturating_add(schedule.amount_minor);
                schedule.status = ScheduleStatus::Billed;
                schedule.document = Some(reference.clone());
            }
        }
        contract.documents.push(BillingDocument {
            reference: reference.clone(),
            kind: DocumentKind::Invoice,
            status: DocumentStatus::Draft,
            consolidated: false,
            amount_minor: amount,
            currency: currency.clone(),
        });
        events.push(ContractEvent {
            kind: EventKind::FinalInvoiceCreated,
            effective_on: business_date,
            line_ref: scope.line_ref(),
            details: json!({
                "document": reference,
                "amount_minor": amount,
                "currency": currency,
                "end_date": end_date,
                "schedules": indexes.len(),
            }),
            transition_key: Some(format!("final_invoice_created:{reference}")),
        });
    }
    events
}

/// `<contract ref>-<tag>-<n>`: `n` one more than the documents of `kind` already linked,
/// moved on until unused; the contract ref is shortened to keep within 64 characters.
fn next_document_reference(contract: &Contract, kind: DocumentKind, tag: &str) -> String {
    let existing = contract
        .documents
        .iter()
        .filter(|document| document.kind == kind)
        .count();
    let mut number = existing.saturating_add(1);
    loop {
        let suffix = format!("-{tag}-{number}");
        let room = MAX_REFERENCE_CHARS.saturating_sub(suffix.chars().count());
        let prefix: String = contract.reference.chars().take(room).collect();
        let reference = format!("{prefix}{suffix}");
        if !contract
            .documents
            .iter()
            .any(|document| document.reference == reference)
        {
            return reference;
        }
        number = number.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::{CancellationWindow, Period};
    use crate::contract::ContractStatus;

    fn contract(reference: &str) -> Contract {
        Contract {
            reference: reference.to_string(),
            customer: "ACME".into(),
            status: ContractStatus::Active,
            time_zone: chrono_tz::UTC,
            start_date: NaiveDate::from_ymd_opt(2025, 1, 1).unwrap(),
            end_date: None,
            initial_term: None,
            original_end_date: None,
            minimum_term_end: None,
            notice_period: Period::NONE,
            cancellation_window: CancellationWindow::EndOfMonth,
            auto_extend: false,
            extension_term: None,
            proration: Proration::ActualDays,
            lines: Vec::new(),
            schedules: Vec::new(),
            documents: Vec::new(),
            cancellation: None,
            end_reason: None,
            end_notes: None,
            cancellation_date: None,
            latest_cancellation_date: None,
            renewals: Vec::new(),
            change_requests: Vec::new(),
            reminders: Default::default(),
        }
    }

    #[test]
    fn document_references_stay_within_64_characters() {
        let long = "X".repeat(64);
        let reference = next_document_reference(&contract(&long), DocumentKind::CreditNote, "CN");
        assert_eq!(reference.chars().count(), 64);
        assert!(reference.ends_with("-CN-1"));
    }

    #[test]
    fn document_references_number_after_existing_documents_of_the_kind() {
        let mut c = contract("C-1");
        c.documents.push(BillingDocument {
            reference: "INV-1".into(),
            kind: DocumentKind::Invoice,
            status: DocumentStatus::Complete,
            consolidated: false,
            amount_minor: 1,
            currency: "EUR".into(),
        });
        assert_eq!(
            next_document_reference(&c, DocumentKind::Invoice, "FINAL"),
            "C-1-FINAL-2"
        );
        assert_eq!(
            next_document_reference(&c, DocumentKind::CreditNote, "CN"),
            "C-1-CN-1"
        );
    }

    #[test]
    fn a_schedule_of_an_unknown_line_is_cut_without_proration() {
        let mut c = contract("C-1");
        c.schedules.push(BillingSchedule {
            line_ref: "GONE".into(),
            period_start: NaiveDate::from_ymd_opt(2025, 1, 1).unwrap(),
            period_end: NaiveDate::from_ymd_opt(2025, 1, 31).unwrap(),
            amount_minor: 3100,
            status: ScheduleStatus::Planned,
            document: None,
        });
        let end = NaiveDate::from_ymd_opt(2025, 1, 10).unwrap();
        let events = end_billing(&mut c, Scope::Contract, end, &RulePolicy::default(), end);
        assert_eq!(events, Ok(Vec::new()));
        assert_eq!(c.schedules[0].amount_minor, 3100);
        assert_eq!(c.schedules[0].period_end, end);
    }
}
