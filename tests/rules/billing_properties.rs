//! Properties of the billing effects at an end date (docs/rules.md section 7) over random schedules
//! (some billed, some planned), random amounts, end dates, proration and scope:
//!
//! - money is conserved, per currency: billed before = billed kept + credited;
//! - no schedule of the ended scope outlives the end date; the others are untouched;
//! - planned schedules only shrink (never appear, grow or move their start);
//! - a refusal changes nothing, and happens exactly when a billed schedule reaches beyond the
//!   end date without `allow_end_before_billed_to`;
//! - the final invoice bills exactly the planned schedules that are left.

use std::collections::BTreeMap;

use chrono::{Days, NaiveDate};
use contractd::contract::{
    BillingSchedule, Contract, ContractStatus, DocumentKind, DocumentStatus, Line, LineKind,
    LineStatus, Proration, ScheduleStatus,
};
use contractd::lifecycle::billing::{billed_beyond, create_final_invoice, end_billing, Scope};
use contractd::lifecycle::RulePolicy;
use proptest::prelude::*;

fn day(offset: u64) -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 1, 1).unwrap() + Days::new(offset)
}

/// The lines: two EUR lines (fixed and usage) and a USD fixed line.
fn lines() -> Vec<Line> {
    [
        ("L1", LineKind::RecurringFixed, "EUR"),
        ("L2", LineKind::RecurringUsage, "EUR"),
        ("L3", LineKind::RecurringFixed, "USD"),
    ]
    .into_iter()
    .map(|(reference, kind, currency)| Line {
        reference: reference.into(),
        description: String::new(),
        kind,
        billable: true,
        start_date: day(0),
        end_date: None,
        status: LineStatus::Active,
        amount_minor: 0,
        currency: currency.into(),
        billing_period: None,
        auto_extend: false,
        cancellation: None,
    })
    .collect()
}

/// Contiguous schedules of one line: (length in days, amount, billed) each.
fn line_schedules(
    line: &'static str,
) -> impl Strategy<Value = Vec<(&'static str, u64, i64, bool)>> {
    prop::collection::vec((1..60_u64, 0..1_000_000_i64, any::<bool>()), 0..12).prop_map(
        move |periods| {
            periods
                .into_iter()
                .map(|(length, amount, billed)| (line, length, amount, billed))
                .collect()
        },
    )
}

prop_compose! {
    fn contract_strategy()(
        l1 in line_schedules("L1"),
        l2 in line_schedules("L2"),
        l3 in line_schedules("L3"),
        offsets in (0..40_u64, 0..40_u64, 0..40_u64),
        proration in prop::sample::select(vec![Proration::ActualDays, Proration::None]),
    ) -> Contract {
        let mut schedules = Vec::new();
        for (periods, offset) in [(l1, offsets.0), (l2, offsets.1), (l3, offsets.2)] {
            let mut start = day(offset);
            for (line, length, amount, billed) in periods {
                let end = start + Days::new(length - 1);
                schedules.push(BillingSchedule {
                    line_ref: line.into(),
                    period_start: start,
                    period_end: end,
                    amount_minor: amount,
                    status: if billed { ScheduleStatus::Billed } else { ScheduleStatus::Planned },
                    document: billed.then(|| format!("INV-{line}")),
                });
                start = end + Days::new(1);
            }
        }
        Contract {
            reference: "B-1".into(),
            customer: "ACME".into(),
            status: ContractStatus::Active,
            time_zone: chrono_tz::UTC,
            start_date: day(0),
            end_date: None,
            initial_term: None,
            original_end_date: None,
            minimum_term_end: None,
            notice_period: contractd::calendar::Period::NONE,
            cancellation_window: contractd::calendar::CancellationWindow::EndOfMonth,
            auto_extend: false,
            extension_term: None,
            proration,
            lines: lines(),
            schedules,
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
}

fn scope_strategy() -> impl Strategy<Value = Option<&'static str>> {
    prop::sample::select(vec![None, Some("L1"), Some("L2"), Some("L3")])
}

fn scope(line: Option<&'static str>) -> Scope<'static> {
    line.map_or(Scope::Contract, Scope::Line)
}

fn in_scope(line: Option<&str>, schedule: &BillingSchedule) -> bool {
    line.is_none_or(|line| line == schedule.line_ref)
}

fn currency(line_ref: &str) -> &'static str {
    if line_ref == "L3" {
        "USD"
    } else {
        "EUR"
    }
}

/// Sum of the billed schedules in scope, per currency.
fn billed_by_currency(contract: &Contract, line: Option<&str>) -> BTreeMap<&'static str, i64> {
    let mut sums = BTreeMap::new();
    for schedule in &contract.schedules {
        if in_scope(line, schedule) && schedule.status == ScheduleStatus::Billed {
            *sums.entry(currency(&schedule.line_ref)).or_insert(0) += schedule.amount_minor;
        }
    }
    sums
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3_000, ..ProptestConfig::default() })]

    /// Billed before = billed kept + credited, per currency, to the minor unit; nothing in scope
    /// outlives the end date; planned schedules only shrink; other lines are untouched.
    #[test]
    fn ending_conserves_money_and_only_shrinks(
        contract in contract_strategy(),
        end_offset in 0..400_u64,
        line in scope_strategy(),
    ) {
        let end_date = day(end_offset);
        let policy = RulePolicy { allow_end_before_billed_to: true, ..RulePolicy::default() };
        let mut after = contract.clone();
        let events = end_billing(&mut after, scope(line), end_date, &policy, end_date).unwrap();

        // Money conserved per currency.
        let before = billed_by_currency(&contract, line);
        let kept = billed_by_currency(&after, line);
        let mut credited: BTreeMap<&str, i64> = BTreeMap::new();
        for document in &after.documents {
            prop_assert_eq!(document.kind, DocumentKind::CreditNote);
            prop_assert_eq!(document.status, DocumentStatus::Draft);
            prop_assert!(document.amount_minor > 0);
            let code = if document.currency == "USD" { "USD" } else { "EUR" };
            prop_assert!(!credited.contains_key(code), "one credit note per currency");
            credited.insert(code, document.amount_minor);
        }
        prop_assert_eq!(events.len(), after.documents.len());
        for code in ["EUR", "USD"] {
            let billed_before = before.get(code).copied().unwrap_or(0);
            let billed_kept = kept.get(code).copied().unwrap_or(0);
            let credit = credited.get(code).copied().unwrap_or(0);
            prop_assert_eq!(billed_before, billed_kept + credit, "currency {}", code);
        }

        // No schedule in scope outlives the end date; out of scope nothing changed.
        for schedule in &after.schedules {
            if in_scope(line, schedule) {
                prop_assert!(schedule.period_end <= end_date);
            }
        }
        let untouched = |c: &Contract| -> Vec<BillingSchedule> {
            c.schedules.iter().filter(|s| !in_scope(line, s)).cloned().collect()
        };
        prop_assert_eq!(untouched(&contract), untouched(&after));

        // Every schedule after is one from before, cut: same line, start and status, an end
        // and an amount no greater.
        for schedule in &after.schedules {
            let original = contract.schedules.iter().find(|s| {
                s.line_ref == schedule.line_ref && s.period_start == schedule.period_start
            });
            prop_assert!(original.is_some(), "a schedule appeared");
            if let Some(original) = original {
                prop_assert_eq!(original.status, schedule.status);
                prop_assert!(schedule.period_end <= original.period_end);
                prop_assert!(schedule.amount_minor <= original.amount_minor);
                prop_assert!(schedule.amount_minor >= 0);
                prop_assert_eq!(&original.document, &schedule.document);
            }
        }

        // Ending again at the same date changes nothing.
        let mut again = after.clone();
        let events = end_billing(&mut again, scope(line), end_date, &policy, end_date).unwrap();
        prop_assert!(events.is_empty());
        prop_assert_eq!(again, after);
    }

    /// Without `allow_end_before_billed_to`, ending is refused exactly when a billed schedule
    /// in scope reaches beyond the end date, and a refusal changes nothing.
    #[test]
    fn a_refusal_changes_nothing_and_names_the_schedule(
        contract in contract_strategy(),
        end_offset in 0..400_u64,
        line in scope_strategy(),
    ) {
        let end_date = day(end_offset);
        let expected = contract.schedules.iter().position(|s| {
            in_scope(line, s) && s.status == ScheduleStatus::Billed && s.period_end > end_date
        });
        let mut after = contract.clone();
        match end_billing(&mut after, scope(line), end_date, &RulePolicy::default(), end_date) {
            Err(refusal) => {
                prop_assert_eq!(Some(refusal.index), expected);
                prop_assert_eq!(refusal.field(), format!("schedules[{}]", refusal.index));
                prop_assert!(refusal.to_string().starts_with("contract 'B-1': schedules["));
                prop_assert_eq!(&after, &contract);
                prop_assert_eq!(billed_beyond(&contract, scope(line), end_date), Some(refusal));
            }
            Ok(events) => {
                prop_assert_eq!(expected, None);
                prop_assert!(events.is_empty(), "nothing billed was cut, nothing to credit");
                prop_assert!(after.documents.is_empty());
            }
        }
    }

    /// The final invoice bills exactly the planned schedules left up to the end date, one draft
    /// invoice per currency; afterwards nothing in scope is planned.
    #[test]
    fn the_final_invoice_bills_every_planned_schedule_left(
        contract in contract_strategy(),
        end_offset in 0..400_u64,
        line in scope_strategy(),
    ) {
        let end_date = day(end_offset);
        let policy = RulePolicy { allow_end_before_billed_to: true, ..RulePolicy::default() };
        let mut ended = contract.clone();
        end_billing(&mut ended, scope(line), end_date, &policy, end_date).unwrap();
        let mut planned: BTreeMap<&str, i64> = BTreeMap::new();
        for schedule in &ended.schedules {
            if in_scope(line, schedule) && schedule.status == ScheduleStatus::Planned {
                *planned.entry(currency(&schedule.line_ref)).or_insert(0) += schedule.amount_minor;
            }
        }
        let documents_before = ended.documents.len();
        let mut invoiced = ended.clone();
        let events = create_final_invoice(&mut invoiced, scope(line), end_date, end_date);
        let invoices: Vec<_> = invoiced.documents[documents_before..].to_vec();
        prop_assert_eq!(invoices.len(), planned.len());
        prop_assert_eq!(events.len(), planned.len());
        for invoice in &invoices {
            prop_assert_eq!(invoice.kind, DocumentKind::Invoice);
            prop_assert_eq!(invoice.status, DocumentStatus::Draft);
            let code = if invoice.currency == "USD" { "USD" } else { "EUR" };
            prop_assert_eq!(Some(invoice.amount_minor), planned.get(code).copied());
            let billed_on_it: i64 = invoiced
                .schedules
                .iter()
                .filter(|s| s.document.as_deref() == Some(invoice.reference.as_str()))
                .map(|s| s.amount_minor)
                .sum();
            prop_assert_eq!(billed_on_it, invoice.amount_minor);
        }
        prop_assert!(invoiced
            .schedules
            .iter()
            .filter(|s| in_scope(line, s))
            .all(|s| s.status == ScheduleStatus::Billed));
    }
}

#[test]
fn credit_note_references_count_on_from_existing_credit_notes() {
    use proptest::strategy::ValueTree;
    let mut contract = {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        contract_strategy().new_tree(&mut runner).unwrap().current()
    };
    contract.schedules = vec![BillingSchedule {
        line_ref: "L1".into(),
        period_start: day(0),
        period_end: day(29),
        amount_minor: 3000,
        status: ScheduleStatus::Billed,
        document: None,
    }];
    contract.proration = Proration::ActualDays;
    contract.documents = vec![contractd::contract::BillingDocument {
        reference: "B-1-CN-2".into(),
        kind: DocumentKind::CreditNote,
        status: DocumentStatus::Complete,
        consolidated: false,
        amount_minor: 1,
        currency: "EUR".into(),
    }];
    let policy = RulePolicy {
        allow_end_before_billed_to: true,
        ..RulePolicy::default()
    };
    end_billing(&mut contract, Scope::Contract, day(9), &policy, day(10)).unwrap();
    let note = contract.documents.last().unwrap();
    // One credit note existed, so 2 — taken already, so 3.
    assert_eq!(note.reference, "B-1-CN-3");
    assert_eq!(note.amount_minor, 2000);
    assert_eq!(contract.schedules[0].amount_minor, 1000);
}
