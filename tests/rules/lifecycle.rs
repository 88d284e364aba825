//! The daily rules of docs/rules.md section 5, one named test per behaviour, and a property test of
//! the due-date invariant: whenever `apply_job(job, c, D)` changes a contract, the contract's due
//! date for that job is before D (and applying the job again changes nothing).

use std::collections::HashSet;

use chrono::{Days, NaiveDate};
use contractd::calendar::{prorate, shift_back, CancellationWindow, Period};
use contractd::contract::record::{read_record, ParseDefaults};
use contractd::contract::{
    BillingDocument, BillingSchedule, Cancellation, Contract, ContractStatus, DocumentKind,
    DocumentStatus, EventKind, Line, LineKind, LineStatus, Proration, ScheduleStatus,
};
use contractd::lifecycle::{
    apply_job, auto_extend, execute_cancellations, execute_pending_cancellation, expire,
    refresh_deadlines, DueDates, Job, RulePolicy,
};
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::support::date;

fn p(text: &str) -> Period {
    text.parse().unwrap()
}

/// A contract from an import record: `base` with the fields of `patch` replaced.
fn contract(patch: Value) -> Contract {
    let mut record = json!({
        "ref": "C-1",
        "customer": "ACME",
        "time_zone": "UTC",
        "start_date": "2025-01-01",
        "end_date": "2025-12-31",
        "notice_period": "1M",
        "cancellation_window": "end_of_term",
        "auto_extend": false,
    });
    if let (Some(target), Some(source)) = (record.as_object_mut(), patch.as_object()) {
        for (key, value) in source {
            target.insert(key.clone(), value.clone());
        }
    }
    read_record(&record.to_string())
        .unwrap()
        .parse(&ParseDefaults {
            time_zone: chrono_tz::UTC,
        })
        .unwrap()
}

/// A contract with its computed dates as of `today`, as import stores it.
fn contract_as_of(patch: Value, today: &str) -> Contract {
    let mut contract = contract(patch);
    contract.recompute_cancellation_dates(date(today));
    contract
}

/// Monthly schedules of `line` for 2025, `amount` each; the first `billed` of them billed.
fn monthly_2025(line: &str, amount: i64, billed: usize) -> Vec<Value> {
    (1..=12)
        .map(|month| {
            let start = NaiveDate::from_ymd_opt(2025, month, 1).unwrap();
            let end = NaiveDate::from_ymd_opt(2025 + i32::from(month == 12), month % 12 + 1, 1)
                .unwrap()
                .pred_opt()
                .unwrap();
            let is_billed = (month as usize) <= billed;
            json!({
                "line_ref": line,
                "period_start": start.to_string(),
                "period_end": end.to_string(),
                "amount_minor": amount,
                "status": if is_billed { "billed" } else { "planned" },
                "document": if is_billed { Some(format!("INV-{month}")) } else { None },
            })
        })
        .collect()
}

fn invoices(count: usize) -> Vec<Value> {
    (1..=count)
        .map(|n| {
            json!({"ref": format!("INV-{n}"), "kind": "invoice", "status": "complete",
                   "amount_minor": 3100, "currency": "EUR"})
        })
        .collect()
}

/// A contract with a billable monthly line L1 (3100 a month) and a non-billable one-time line
/// L2, January to `billed` billed, and a pending cancellation ending `end`.
fn with_pending_cancellation(end: &str, billed: usize, final_invoice: bool) -> Contract {
    contract(json!({
        "cancellation_window": "end_of_month",
        "lines": [
            {"ref": "L1", "kind": "recurring_fixed", "billable": true, "start_date": "2025-01-01",
             "end_date": "2025-12-31", "amount_minor": 3100, "currency": "EUR",
             "billing_period": "1M"},
            {"ref": "L2", "kind": "one_time", "billable": false, "start_date": "2025-01-01",
             "amount_minor": 5000, "currency": "EUR"},
        ],
        "schedules": monthly_2025("L1", 3100, billed),
        "documents": invoices(billed),
        "cancellation": {"received_on": "2025-03-20", "end_date": end, "reason": "moving",
                         "notes": "customer relocates", "final_invoice": final_invoice},
    }))
}

fn policy() -> RulePolicy {
    RulePolicy::default()
}

fn allow_billed() -> RulePolicy {
    RulePolicy {
        allow_end_before_billed_to: true,
        ..RulePolicy::default()
    }
}

fn keys(events: &[contractd::contract::ContractEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| event.transition_key.clone())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Due dates
// ---------------------------------------------------------------------------------------------

#[test]
fn due_dates_of_an_active_auto_extending_contract() {
    let c = contract_as_of(
        json!({"auto_extend": true, "extension_term": "1Y",
               "lines": [{"ref": "L1", "kind": "one_time", "billable": true,
                          "start_date": "2025-01-01", "end_date": "2025-06-30",
                          "amount_minor": 100, "currency": "EUR"}]}),
        "2025-03-01",
    );
    let due = DueDates::of(&c);
    assert_eq!(due.cancellation, None);
    assert_eq!(due.extension, Some(date("2025-11-30")));
    assert_eq!(due.expiry, Some(date("2025-06-30")), "the line ends first");
    assert_eq!(due.refresh, Some(date("2025-11-30")));
    assert_eq!(due.for_job(Job::AutoExtend), Some(date("2025-11-30")));
}

#[test]
fn due_dates_with_a_pending_cancellation() {
    let c = with_pending_cancellation("2025-05-31", 0, false);
    let due = DueDates::of(&c);
    assert_eq!(due.cancellation, Some(date("2025-05-31")));
    assert_eq!(due.extension, None);
    assert_eq!(
        due.expiry, None,
        "line L1 ends after the cancellation, which will end it"
    );
    assert_eq!(due.refresh, None);
}

#[test]
fn due_dates_are_empty_for_an_ended_contract() {
    let c = contract(json!({"status": "expired"}));
    assert_eq!(DueDates::of(&c), DueDates::default());
}

// ---------------------------------------------------------------------------------------------
// execute_cancellations
// ---------------------------------------------------------------------------------------------

#[test]
fn execute_cancellations_waits_until_the_day_after_the_end_date() {
    let c = with_pending_cancellation("2025-05-31", 0, false);
    assert_eq!(
        execute_cancellations(&c, date("2025-05-31"), &policy()),
        Ok(None)
    );
    let t = execute_cancellations(&c, date("2025-06-01"), &policy())
        .unwrap()
        .unwrap();
    assert_eq!(t.contract.status, ContractStatus::Cancelled);
}

#[test]
fn execute_cancellations_catches_up_after_downtime() {
    let c = with_pending_cancellation("2025-05-31", 0, false);
    let t = execute_cancellations(&c, date("2025-09-14"), &policy())
        .unwrap()
        .unwrap();
    assert_eq!(t.contract.end_date, Some(date("2025-05-31")));
    assert_eq!(t.contract.status, ContractStatus::Cancelled);
}

#[test]
fn execute_cancellations_sets_status_end_date_reason_and_original_end_date() {
    let c = with_pending_cancellation("2025-05-31", 0, false);
    let t = execute_cancellations(&c, date("2025-06-01"), &policy())
        .unwrap()
        .unwrap();
    let ended = &t.contract;
    assert_eq!(ended.status, ContractStatus::Cancelled);
    assert_eq!(ended.end_date, Some(date("2025-05-31")));
    assert_eq!(ended.original_end_date, Some(date("2025-12-31")));
    assert_eq!(ended.end_reason.as_deref(), Some("moving"));
    assert_eq!(ended.end_notes.as_deref(), Some("customer relocates"));
    assert_eq!(ended.cancellation, None);
    assert!(!ended.auto_extend);
    assert_eq!(ended.cancellation_date, None);
    assert_eq!(ended.latest_cancellation_date, None);
    assert_eq!(t.events[0].kind, EventKind::CancellationExecuted);
    assert_eq!(
        t.events[0].transition_key.as_deref(),
        Some("cancellation_executed:2025-05-31")
    );
    assert_eq!(t.events[0].effective_on, date("2025-06-01"));
    assert_eq!(t.events[0].details["reason"], "moving");
}

#[test]
fn execute_cancellations_keeps_an_existing_original_end_date() {
    let mut c = with_pending_cancellation("2025-05-31", 0, false);
    c.original_end_date = Some(date("2026-12-31"));
    let t = execute_cancellations(&c, date("2025-06-01"), &policy())
        .unwrap()
        .unwrap();
    assert_eq!(t.contract.original_end_date, Some(date("2026-12-31")));
}

#[test]
fn execute_cancellations_of_an_open_ended_contract_records_no_original_end_date() {
    let c = contract(json!({
        "end_date": null, "cancellation_window": "end_of_month",
        "cancellation": {"received_on": "2025-03-20", "end_date": "2025-04-30"},
    }));
    let t = execute_cancellations(&c, date("2025-05-01"), &policy())
        .unwrap()
        .unwrap();
    assert_eq!(t.contract.end_date, Some(date("2025-04-30")));
    assert_eq!(t.contract.original_end_date, None);
}

#[test]
fn execute_cancellations_at_the_end_date_records_no_original_end_date() {
    let c = with_pending_cancellation("2025-12-31", 0, false);
    let t = execute_cancellations(&c, date("2026-01-01"), &policy())
        .unwrap()
        .unwrap();
    assert_eq!(t.contract.original_end_date, None);
}

#[test]
fn execute_cancellations_cancels_billable_lines_and_expires_the_others_at_the_end_date() {
    let c = with_pending_cancellation("2025-05-31", 0, false);
    let t = execute_cancellations(&c, date("2025-06-01"), &policy())
        .unwrap()
        .unwrap();
    let l1 = t.contract.line("L1").unwrap();
    let l2 = t.contract.line("L2").unwrap();
    assert_eq!(l1.status, LineStatus::Cancelled);
    assert_eq!(l2.status, LineStatus::Expired);
    assert_eq!(l1.end_date, Some(date("2025-05-31")));
    assert_eq!(
        l2.end_date,
        Some(date("2025-05-31")),
        "open-ended line capped"
    );
}

#[test]
fn execute_cancellations_deletes_later_schedules_and_prorates_the_cut_one() {
    let c = with_pending_cancellation("2025-05-14", 4, false);
    let t = execute_cancellations(&c, date("2025-05-15"), &policy())
        .unwrap()
        .unwrap();
    let schedules = &t.contract.schedules;
    assert_eq!(schedules.len(), 5, "January to May remain");
    let may = &schedules[4];
    assert_eq!(may.period_end, date("2025-05-14"));
    assert_eq!(may.amount_minor, prorate(3100, 14, 31));
    assert_eq!(may.amount_minor, 1400);
    assert!(schedules.iter().all(|s| s.period_end <= date("2025-05-14")));
}

#[test]
fn execute_cancellations_refuses_a_billed_schedule_beyond_the_end_date_naming_it() {
    let c = with_pending_cancellation("2025-05-14", 5, false);
    let refusal = execute_cancellations(&c, date("2025-05-15"), &policy()).unwrap_err();
    assert_eq!(refusal.field, "schedules[4]");
    assert!(refusal.message.contains("'C-1'"), "{}", refusal.message);
    assert!(refusal
        .message
        .contains("line 'L1' is billed on 'INV-5' for 2025-05-01..2025-05-31"));
    assert_eq!(
        refusal.to_string(),
        "schedules[4]: contract 'C-1': line 'L1' is billed on 'INV-5' for 2025-05-01..2025-05-31, \
         beyond the end date 2025-05-14; choose an end date on or after 2025-05-31, or set \
         allow_end_before_billed_to to credit the billed difference with a draft credit note"
    );
    assert!(refusal.message.contains("allow_end_before_billed_to"));
}

#[test]
fn execute_cancellations_credits_the_billed_difference_when_allowed() {
    let c = with_pending_cancellation("2025-05-14", 6, false);
    let t = execute_cancellations(&c, date("2025-05-15"), &allow_billed())
        .unwrap()
        .unwrap();
    // May cut to 1400 (1700 back) and June deleted (3100 back).
    let notes: Vec<&BillingDocument> = t
        .contract
        .documents
        .iter()
        .filter(|doc| doc.kind == DocumentKind::CreditNote)
        .collect();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].amount_minor, 1700 + 3100);
    assert_eq!(notes[0].status, DocumentStatus::Draft);
    assert_eq!(notes[0].currency, "EUR");
    assert_eq!(notes[0].reference, "C-1-CN-1");
    let credit = t
        .events
        .iter()
        .find(|e| e.kind == EventKind::CreditNoteCreated)
        .unwrap();
    assert_eq!(credit.details["amount_minor"], 4800);
    assert_eq!(
        credit.transition_key.as_deref(),
        Some("credit_note_created:C-1-CN-1")
    );
}

#[test]
fn execute_cancellations_creates_the_final_invoice_when_asked_for() {
    let c = with_pending_cancellation("2025-05-14", 3, true);
    let t = execute_cancellations(&c, date("2025-05-15"), &policy())
        .unwrap()
        .unwrap();
    let invoice = t
        .contract
        .documents
        .iter()
        .find(|doc| doc.reference == "C-1-FINAL-4")
        .expect("final invoice, numbered after the 3 invoices");
    assert_eq!(invoice.kind, DocumentKind::Invoice);
    assert_eq!(invoice.status, DocumentStatus::Draft);
    // April in full and May prorated.
    assert_eq!(invoice.amount_minor, 3100 + 1400);
    assert!(t
        .contract
        .schedules
        .iter()
        .all(|s| s.status == ScheduleStatus::Billed));
    let event = t
        .events
        .iter()
        .find(|e| e.kind == EventKind::FinalInvoiceCreated)
        .unwrap();
    assert_eq!(event.details["amount_minor"], 4500);
}

#[test]
fn execute_cancellations_without_planned_schedules_creates_no_final_invoice() {
    let c = with_pending_cancellation("2025-12-31", 12, true);
    let t = execute_cancellations(&c, date("2026-01-01"), &policy())
        .unwrap()
        .unwrap();
    assert_eq!(t.contract.documents.len(), 12);
    assert!(t
        .events
        .iter()
        .all(|e| e.kind != EventKind::FinalInvoiceCreated));
}

fn two_billable_lines() -> Value {
    json!({
        "cancellation_window": "end_of_month",
        "lines": [
            {"ref": "L1", "kind": "recurring_fixed", "billable": true, "start_date": "2025-01-01",
             "end_date": "2025-12-31", "amount_minor": 3100, "currency": "EUR",
             "billing_period": "1M",
             "cancellation": {"received_on": "2025-02-01", "end_date": "2025-03-31",
                              "reason": "downsizing"}},
            {"ref": "L2", "kind": "recurring_fixed", "billable": true, "start_date": "2025-01-01",
             "end_date": "2025-12-31", "amount_minor": 1000, "currency": "USD",
             "billing_period": "1M"},
        ],
        "schedules": monthly_2025("L1", 3100, 0).into_iter()
            .chain(monthly_2025("L2", 1000, 0)).collect::<Vec<_>>(),
    })
}

#[test]
fn execute_cancellations_of_a_line_ends_that_line_only() {
    let c = contract(two_billable_lines());
    let t = execute_cancellations(&c, date("2025-04-01"), &policy())
        .unwrap()
        .unwrap();
    let l1 = t.contract.line("L1").unwrap();
    assert_eq!(l1.status, LineStatus::Cancelled);
    assert_eq!(l1.end_date, Some(date("2025-03-31")));
    assert_eq!(l1.cancellation, None);
    assert_eq!(t.contract.line("L2").unwrap().status, LineStatus::Active);
    assert_eq!(t.contract.status, ContractStatus::Active);
    assert_eq!(t.contract.end_date, Some(date("2025-12-31")));
    let l1_schedules = t
        .contract
        .schedules
        .iter()
        .filter(|s| s.line_ref == "L1")
        .count();
    let l2_schedules = t
        .contract
        .schedules
        .iter()
        .filter(|s| s.line_ref == "L2")
        .count();
    assert_eq!((l1_schedules, l2_schedules), (3, 12));
    assert_eq!(t.events[0].kind, EventKind::LineCancellationExecuted);
    assert_eq!(t.events[0].line_ref.as_deref(), Some("L1"));
    assert_eq!(
        t.events[0].transition_key.as_deref(),
        Some("line_cancellation_executed:L1:2025-03-31")
    );
}

#[test]
fn execute_cancellations_of_the_last_active_line_cancels_the_contract() {
    let mut c = contract(two_billable_lines());
    c.lines[1].cancellation = Some(Cancellation {
        received_on: date("2025-02-01"),
        end_date: date("2025-04-30"),
        reason: Some("closing".into()),
        notes: None,
        final_invoice: false,
        restore_auto_extend: false,
    });
    let t = execute_cancellations(&c, date("2025-05-01"), &policy())
        .unwrap()
        .unwrap();
    assert_eq!(t.contract.status, ContractStatus::Cancelled);
    assert_eq!(
        t.contract.end_date,
        Some(date("2025-04-30")),
        "the latest line end"
    );
    assert_eq!(t.contract.end_reason.as_deref(), Some("closing"));
    assert_eq!(t.contract.original_end_date, Some(date("2025-12-31")));
    let kinds: Vec<EventKind> = t.events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::LineCancellationExecuted,
            EventKind::LineCancellationExecuted,
            EventKind::CancellationExecuted
        ]
    );
}

#[test]
fn execute_pending_cancellation_executes_regardless_of_the_business_date() {
    let c = with_pending_cancellation("2025-05-31", 0, false);
    let t = execute_pending_cancellation(&c, date("2025-05-20"), &policy())
        .unwrap()
        .unwrap();
    assert_eq!(t.contract.status, ContractStatus::Cancelled);
    assert_eq!(t.contract.end_date, Some(date("2025-05-31")));
}

// ---------------------------------------------------------------------------------------------
// auto_extend
// ---------------------------------------------------------------------------------------------

fn auto_extending() -> Value {
    json!({"auto_extend": true, "extension_term": "1Y"})
}

#[test]
fn auto_extend_happens_the_day_after_the_deadline_not_at_the_end_date() {
    let c = contract_as_of(auto_extending(), "2025-06-01");
    assert_eq!(auto_extend(&c, date("2025-11-30")), None);
    let t = auto_extend(&c, date("2025-12-01")).unwrap();
    assert_eq!(t.contract.end_date, Some(date("2026-12-31")));
    let event = &t.events[0];
    assert_eq!(event.kind, EventKind::Extended);
    assert_eq!(event.details["from"], "2025-12-31");
    assert_eq!(event.details["to"], "2026-12-31");
    assert_eq!(event.details["terms"], 1);
    assert_eq!(
        event.transition_key.as_deref(),
        Some("extended:2025-12-31:2025-12-01")
    );
}

#[test]
fn auto_extend_catches_up_several_terms_in_one_call() {
    let c = contract_as_of(auto_extending(), "2025-06-01");
    // Down since before the 2025 deadline; the 2026 and 2027 deadlines passed too.
    let t = auto_extend(&c, date("2028-01-15")).unwrap();
    assert_eq!(t.contract.end_date, Some(date("2028-12-31")));
    assert_eq!(t.events.len(), 1);
    assert_eq!(t.events[0].details["terms"], 3);
}

#[test]
fn auto_extend_catches_up_monthly_terms_with_the_month_end_rule() {
    let c = contract_as_of(
        json!({"end_date": "2025-01-31", "notice_period": "0D", "auto_extend": true,
               "extension_term": "1M"}),
        "2025-01-10",
    );
    let t = auto_extend(&c, date("2025-05-02")).unwrap();
    assert_eq!(t.contract.end_date, Some(date("2025-05-31")));
    assert_eq!(t.events[0].details["terms"], 4);
}

#[test]
fn a_transition_recomputes_the_deadline_from_the_new_end_date() {
    let c = contract_as_of(auto_extending(), "2025-06-01");
    assert_eq!(c.latest_cancellation_date, Some(date("2025-11-30")));
    let t = auto_extend(&c, date("2025-12-01")).unwrap();
    assert_eq!(t.contract.cancellation_date, Some(date("2026-12-31")));
    assert_eq!(
        t.contract.latest_cancellation_date,
        Some(date("2026-11-30"))
    );
    // So the refresh job has nothing left to do that day.
    assert_eq!(refresh_deadlines(&t.contract, date("2025-12-01")), None);
}

#[test]
fn auto_extend_moves_lines_that_ended_with_the_contract_and_plans_their_schedules() {
    let c = contract_as_of(
        json!({
            "auto_extend": true, "extension_term": "1Y",
            "lines": [
                {"ref": "L1", "kind": "recurring_fixed", "billable": true,
                 "start_date": "2025-01-01", "end_date": "2025-12-31", "amount_minor": 3100,
                 "currency": "EUR", "billing_period": "1M", "auto_extend": true},
                {"ref": "L2", "kind": "recurring_fixed", "billable": true,
                 "start_date": "2025-01-01", "end_date": "2025-12-31", "amount_minor": 500,
                 "currency": "EUR", "billing_period": "1M", "auto_extend": false},
                {"ref": "L3", "kind": "recurring_fixed", "billable": true,
                 "start_date": "2025-01-01", "end_date": "2025-06-30", "amount_minor": 700,
                 "currency": "EUR", "billing_period": "1M", "auto_extend": true},
            ],
            "schedules": monthly_2025("L1", 3100, 11),
            "documents": invoices(11),
        }),
        "2025-06-01",
    );
    let t = auto_extend(&c, date("2025-12-01")).unwrap();
    assert_eq!(
        t.contract.line("L1").unwrap().end_date,
        Some(date("2026-12-31"))
    );
    assert_eq!(
        t.contract.line("L2").unwrap().end_date,
        Some(date("2025-12-31")),
        "without auto_extend the line stays"
    );
    assert_eq!(
        t.contract.line("L3").unwrap().end_date,
        Some(date("2025-06-30")),
        "a line that ended before the contract stays"
    );
    let added: Vec<&BillingSchedule> = t
        .contract
        .schedules
        .iter()
        .filter(|s| s.period_start > date("2025-12-31"))
        .collect();
    assert_eq!(added.len(), 12);
    assert!(added.iter().all(|s| s.line_ref == "L1"
        && s.status == ScheduleStatus::Planned
        && s.amount_minor == 3100
        && s.document.is_none()));
    assert_eq!(added[0].period_start, date("2026-01-01"));
    assert_eq!(added[11].period_end, date("2026-12-31"));
    assert_eq!(t.events[0].details["schedules_added"], 12);
}

#[test]
fn auto_extend_cuts_and_prorates_the_last_period_and_reopens_it_on_the_next_extension() {
    // Quarterly billing anchored on 1 Feb; contract terms end on calendar-month ends.
    let c = contract_as_of(
        json!({
            "start_date": "2025-02-01", "end_date": "2025-04-30", "notice_period": "0D",
            "auto_extend": true, "extension_term": "1M",
            "lines": [{"ref": "L1", "kind": "recurring_fixed", "billable": true,
                       "start_date": "2025-02-01", "end_date": "2025-04-30",
                       "amount_minor": 9000, "currency": "EUR", "billing_period": "1Q",
                       "auto_extend": true}],
            "schedules": [{"line_ref": "L1", "period_start": "2025-02-01",
                           "period_end": "2025-04-30", "amount_minor": 9000,
                           "status": "planned"}],
        }),
        "2025-04-01",
    );
    // Extended to 31 May: the quarter 1 May..31 Jul is cut at 31 May (31 of 92 days).
    let t = auto_extend(&c, date("2025-05-01")).unwrap();
    let added: Vec<&BillingSchedule> = t.contract.schedules.iter().skip(1).collect();
    assert_eq!(added.len(), 1);
    assert_eq!(
        (added[0].period_start, added[0].period_end),
        (date("2025-05-01"), date("2025-05-31"))
    );
    assert_eq!(added[0].amount_minor, prorate(9000, 31, 92));
    // The next extension reopens that planned, cut quarter and plans it again up to the new
    // end date: never a day twice, and the same schedules as one catch-up extension would make.
    let t2 = auto_extend(&t.contract, date("2025-06-01")).unwrap();
    let later: Vec<&BillingSchedule> = t2.contract.schedules.iter().skip(1).collect();
    assert_eq!(later.len(), 1);
    assert_eq!(
        (later[0].period_start, later[0].period_end),
        (date("2025-05-01"), date("2025-06-30"))
    );
    assert_eq!(later[0].amount_minor, prorate(9000, 61, 92));
    let at_once = auto_extend(&c, date("2025-06-01")).unwrap();
    assert_eq!(at_once.contract.end_date, t2.contract.end_date);
    assert_eq!(at_once.contract.schedules, t2.contract.schedules);
}

#[test]
fn auto_extend_leaves_a_contract_with_a_pending_cancellation_alone() {
    let mut c = contract_as_of(auto_extending(), "2025-06-01");
    c.cancellation = Some(Cancellation {
        received_on: date("2025-06-01"),
        end_date: date("2025-12-31"),
        reason: None,
        notes: None,
        final_invoice: false,
        restore_auto_extend: true,
    });
    assert_eq!(auto_extend(&c, date("2025-12-01")), None);
}

#[test]
fn auto_extend_leaves_a_contract_without_auto_extension_alone() {
    let c = contract_as_of(json!({}), "2025-06-01");
    assert_eq!(auto_extend(&c, date("2025-12-01")), None);
}

// ---------------------------------------------------------------------------------------------
// expire
// ---------------------------------------------------------------------------------------------

#[test]
fn expire_ends_a_contract_past_its_end_date_with_its_active_lines() {
    let c = contract_as_of(
        json!({"lines": [
            {"ref": "L1", "kind": "one_time", "billable": true, "start_date": "2025-01-01",
             "amount_minor": 100, "currency": "EUR"},
            {"ref": "L2", "kind": "one_time", "billable": true, "start_date": "2025-01-01",
             "end_date": "2025-03-31", "status": "cancelled", "amount_minor": 100,
             "currency": "EUR"},
        ]}),
        "2025-06-01",
    );
    assert_eq!(expire(&c, date("2025-12-31")), None);
    let t = expire(&c, date("2026-01-01")).unwrap();
    assert_eq!(t.contract.status, ContractStatus::Expired);
    assert_eq!(t.contract.line("L1").unwrap().status, LineStatus::Expired);
    assert_eq!(
        t.contract.line("L1").unwrap().end_date,
        Some(date("2025-12-31"))
    );
    assert_eq!(t.contract.line("L2").unwrap().status, LineStatus::Cancelled);
    assert_eq!(t.events[0].kind, EventKind::Expired);
    assert_eq!(
        t.events[0].transition_key.as_deref(),
        Some("expired:2025-12-31")
    );
    assert_eq!(t.contract.cancellation_date, None);
}

#[test]
fn expire_ends_a_line_past_its_own_end_date_while_the_contract_goes_on() {
    let c = contract_as_of(
        json!({"lines": [
            {"ref": "L1", "kind": "one_time", "billable": true, "start_date": "2025-01-01",
             "end_date": "2025-05-14", "amount_minor": 100, "currency": "EUR"},
            {"ref": "L2", "kind": "one_time", "billable": true, "start_date": "2025-01-01",
             "amount_minor": 100, "currency": "EUR"},
        ]}),
        "2025-05-01",
    );
    let t = expire(&c, date("2025-05-15")).unwrap();
    assert_eq!(t.contract.status, ContractStatus::Active);
    assert_eq!(t.contract.line("L1").unwrap().status, LineStatus::Expired);
    assert_eq!(t.contract.line("L2").unwrap().status, LineStatus::Active);
    assert_eq!(t.events[0].kind, EventKind::LineExpired);
    assert_eq!(
        t.events[0].transition_key.as_deref(),
        Some("line_expired:L1:2025-05-14")
    );
}

#[test]
fn expire_waits_for_a_pending_cancellation() {
    let c = with_pending_cancellation("2025-12-31", 0, false);
    assert_eq!(expire(&c, date("2026-01-01")), None);
}

// ---------------------------------------------------------------------------------------------
// refresh_deadlines
// ---------------------------------------------------------------------------------------------

#[test]
fn refresh_deadlines_recomputes_once_the_deadline_passed() {
    let c = contract_as_of(
        json!({"end_date": null, "cancellation_window": "end_of_month"}),
        "2025-11-22",
    );
    assert_eq!(c.cancellation_date, Some(date("2025-12-31")));
    assert_eq!(c.latest_cancellation_date, Some(date("2025-11-30")));
    assert_eq!(refresh_deadlines(&c, date("2025-11-30")), None);
    let t = refresh_deadlines(&c, date("2025-12-01")).unwrap();
    assert_eq!(t.contract.cancellation_date, Some(date("2026-01-31")));
    assert_eq!(
        t.contract.latest_cancellation_date,
        Some(date("2025-12-31"))
    );
    let event = &t.events[0];
    assert_eq!(event.kind, EventKind::DeadlinesRefreshed);
    assert_eq!(
        event.details["previous_latest_cancellation_date"],
        "2025-11-30"
    );
    assert_eq!(event.details["latest_cancellation_date"], "2025-12-31");
    assert_eq!(
        event.transition_key.as_deref(),
        Some("deadlines_refreshed:2025-11-30")
    );
}

#[test]
fn refresh_deadlines_clears_the_dates_after_the_last_deadline() {
    let c = contract_as_of(json!({}), "2025-06-01");
    let t = refresh_deadlines(&c, date("2025-12-01")).unwrap();
    assert_eq!(t.contract.cancellation_date, None);
    assert_eq!(t.contract.latest_cancellation_date, None);
}

#[test]
fn refresh_deadlines_leaves_a_null_deadline_null() {
    let c = contract_as_of(json!({}), "2025-12-05");
    assert_eq!(c.latest_cancellation_date, None);
    assert_eq!(refresh_deadlines(&c, date("2025-12-20")), None);
}

// ---------------------------------------------------------------------------------------------
// Idempotence and transition keys
// ---------------------------------------------------------------------------------------------

#[test]
fn every_rule_is_idempotent_for_the_same_business_date() {
    let cases: Vec<(Job, Contract, NaiveDate)> = vec![
        (
            Job::ExecuteCancellations,
            with_pending_cancellation("2025-05-14", 6, true),
            date("2025-05-15"),
        ),
        (
            Job::ExecuteCancellations,
            contract(two_billable_lines()),
            date("2025-04-01"),
        ),
        (
            Job::AutoExtend,
            contract_as_of(auto_extending(), "2025-06-01"),
            date("2030-01-01"),
        ),
        (
            Job::Expire,
            contract_as_of(json!({}), "2025-06-01"),
            date("2026-01-01"),
        ),
        (
            Job::RefreshDeadlines,
            contract_as_of(
                json!({"end_date": null, "cancellation_window": "end_of_quarter"}),
                "2025-02-01",
            ),
            date("2025-07-01"),
        ),
    ];
    for (job, c, day) in cases {
        let t = apply_job(job, &c, day, &allow_billed())
            .unwrap()
            .unwrap_or_else(|| panic!("{job} should change the contract"));
        assert_eq!(
            apply_job(job, &t.contract, day, &allow_billed()),
            Ok(None),
            "{job} again"
        );
    }
}

#[test]
fn transition_keys_come_from_the_state_the_transition_starts_from() {
    // The same pending cancellation executed on two different days gives the same key, so a
    // second replica's attempt collides instead of recording it twice.
    let c = with_pending_cancellation("2025-05-31", 0, false);
    let a = execute_cancellations(&c, date("2025-06-01"), &policy())
        .unwrap()
        .unwrap();
    let b = execute_cancellations(&c, date("2025-06-03"), &policy())
        .unwrap()
        .unwrap();
    assert_eq!(keys(&a.events), keys(&b.events));
}

// ---------------------------------------------------------------------------------------------
// Property: the due-date invariant, idempotence, recomputed dates, unique keys.
// ---------------------------------------------------------------------------------------------

fn day(offset: i64) -> NaiveDate {
    let base = date("2024-01-01");
    if offset >= 0 {
        base + Days::new(offset as u64)
    } else {
        base - Days::new(offset.unsigned_abs())
    }
}

fn period() -> impl Strategy<Value = Period> {
    prop::sample::select(vec!["0D", "10D", "2W", "1M", "3M", "1Q", "1Y", "6M"]).prop_map(p)
}

fn window() -> impl Strategy<Value = CancellationWindow> {
    prop::sample::select(vec![
        CancellationWindow::EndOfTerm,
        CancellationWindow::EndOfMonth,
        CancellationWindow::EndOfQuarter,
        CancellationWindow::EndOfYear,
    ])
}

prop_compose! {
    fn pending()(received in 0..900_i64, end in 0..1_200_i64, final_invoice in any::<bool>(),
                 restore in any::<bool>()) -> Cancellation {
        Cancellation {
            received_on: day(received),
            end_date: day(end),
            reason: Some("r".into()),
            notes: None,
            final_invoice,
            restore_auto_extend: restore,
        }
    }
}

prop_compose! {
    fn line_strategy()(
        start in 0..300_i64,
        length in prop::option::of(0..900_i64),
        status in prop::sample::select(vec![LineStatus::Active, LineStatus::Active,
                                            LineStatus::Expired, LineStatus::Cancelled]),
        kind in prop::sample::select(vec![LineKind::RecurringFixed, LineKind::RecurringUsage,
                                          LineKind::OneTime]),
        billable in any::<bool>(),
        amount in 0..100_000_i64,
        billing in prop::sample::select(vec!["1M", "1Q", "2W", "1Y"]),
        auto_extend in any::<bool>(),
        cancellation in prop::option::of(pending()),
    ) -> Line {
        let start_date = day(start);
        Line {
            reference: String::new(),
            description: String::new(),
            kind,
            billable,
            start_date,
            end_date: length.map(|days| start_date + Days::new(days as u64)),
            status,
            amount_minor: amount,
            currency: "EUR".into(),
            billing_period: Some(p(billing)),
            auto_extend,
            cancellation: cancellation.filter(|_| status == LineStatus::Active && billable),
        }
    }
}

prop_compose! {
    fn contract_strategy()(
        length in prop::option::of(0..1_000_i64),
        status in prop::sample::select(vec![ContractStatus::Active, ContractStatus::Active,
                                            ContractStatus::Active, ContractStatus::Draft,
                                            ContractStatus::Expired, ContractStatus::Cancelled]),
        window in window(),
        notice in period(),
        auto_extend in any::<bool>(),
        extension in prop::option::of(period()),
        minimum in prop::option::of(0..600_i64),
        proration in prop::sample::select(vec![Proration::ActualDays, Proration::None]),
        mut lines in prop::collection::vec(line_strategy(), 0..3),
        cancellation in prop::option::of(pending()),
        computed_at in prop::option::of(-50..1_500_i64),
        billed_months in 0..14_usize,
    ) -> Contract {
        let start_date = day(0);
        let mut end_date = length.map(|days| start_date + Days::new(days as u64));
        if window == CancellationWindow::EndOfTerm && end_date.is_none() {
            end_date = Some(day(365));
        }
        let mut schedules = Vec::new();
        for (index, line) in lines.iter_mut().enumerate() {
            line.reference = format!("L{index}");
            // Monthly schedules from the line's start, the first `billed_months` billed.
            for month in 0..12_u32 {
                let period_start = line.start_date + chrono::Months::new(month);
                let period_end = line.start_date + chrono::Months::new(month + 1) - Days::new(1);
                let billed = (month as usize) < billed_months;
                schedules.push(BillingSchedule {
                    line_ref: line.reference.clone(),
                    period_start,
                    period_end,
                    amount_minor: line.amount_minor,
                    status: if billed { ScheduleStatus::Billed } else { ScheduleStatus::Planned },
                    document: None,
                });
            }
        }
        let mut contract = Contract {
            reference: "P-1".into(),
            customer: "ACME".into(),
            status,
            time_zone: chrono_tz::UTC,
            start_date,
            end_date,
            initial_term: None,
            original_end_date: None,
            minimum_term_end: minimum.map(day),
            notice_period: notice,
            cancellation_window: window,
            auto_extend: auto_extend && extension.is_some_and(|term| !term.is_none()),
            extension_term: extension,
            proration,
            lines,
            schedules,
            documents: Vec::new(),
            cancellation: cancellation.filter(|_| status == ContractStatus::Active),
            end_reason: None,
            end_notes: None,
            cancellation_date: None,
            latest_cancellation_date: None,
            renewals: Vec::new(),
            change_requests: Vec::new(),
            reminders: Default::default(),
        };
        if let Some(at) = computed_at {
            contract.recompute_cancellation_dates(day(at));
        }
        contract
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3_000, ..ProptestConfig::default() })]

    /// Whenever a job changes a contract (or refuses to) on D, its due date is before D; the
    /// result carries dates recomputed as of D; applying the job again changes nothing.
    #[test]
    fn a_job_acts_only_when_its_due_date_is_before_the_business_date(
        contract in contract_strategy(),
        business_offset in -50..1_800_i64,
        allow in any::<bool>(),
    ) {
        let business_date = day(business_offset);
        let policy = RulePolicy { allow_end_before_billed_to: allow, ..RulePolicy::default() };
        let due = DueDates::of(&contract);
        for job in Job::ALL.iter().copied() {
            let outcome = apply_job(job, &contract, business_date, &policy);
            let acted = !matches!(outcome, Ok(None));
            if acted {
                prop_assert!(
                    due.for_job(job).is_some_and(|date| date < business_date),
                    "{job} acted on {business_date} with due date {:?}", due.for_job(job)
                );
            }
            if let Ok(Some(transition)) = outcome {
                let mut recomputed = transition.contract.clone();
                recomputed.recompute_cancellation_dates(business_date);
                prop_assert_eq!(&recomputed, &transition.contract);
                prop_assert!(!transition.events.is_empty());
                prop_assert!(transition.events.iter().all(|e| e.transition_key.is_some()));
                prop_assert_eq!(
                    apply_job(job, &transition.contract, business_date, &policy),
                    Ok(None),
                    "{} is not idempotent", job
                );
            }
        }
    }

    /// Daily sweeps over a stretch of days: every job in order each day; no transition key
    /// ever repeats, and nothing ends before its end date.
    #[test]
    fn daily_sweeps_never_record_the_same_transition_twice(
        contract in contract_strategy(),
        first in -20..900_i64,
        step in 1..40_u64,
    ) {
        let policy = RulePolicy { allow_end_before_billed_to: true, ..RulePolicy::default() };
        let mut current = contract;
        let mut seen = HashSet::new();
        let mut business_date = day(first);
        for _ in 0..40 {
            for job in Job::ALL.iter().copied() {
                if let Ok(Some(transition)) = apply_job(job, &current, business_date, &policy) {
                    for key in keys(&transition.events) {
                        prop_assert!(seen.insert(key.clone()), "key {} twice", key);
                    }
                    current = transition.contract;
                }
            }
            if current.status == ContractStatus::Active && current.cancellation.is_none() {
                if let (Some(end), Some(latest)) = (current.end_date, current.latest_cancellation_date) {
                    prop_assert!(latest <= end || current.auto_extend);
                    prop_assert_eq!(Some(latest), current.cancellation_date.map(|c| shift_back(c, current.notice_period)));
                }
            }
            business_date = business_date + Days::new(step);
        }
    }
}
