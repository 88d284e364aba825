//! Operator actions of docs/rules.md section 6 (cancel, end early, revoke), with the examples of
//! the three seed pages by name: NCRC's three notice examples, Nexudus's cancellation date and
//! admin cancel, and every bullet of Billing Central's "Ending Contracts".

use chrono::NaiveDate;
use contractd::calendar::prorate;
use contractd::calendar::Period;
use contractd::contract::Transition;
use contractd::contract::{
    Contract, ContractStatus, DocumentKind, DocumentStatus, EventKind, LineStatus, ScheduleStatus,
};
use contractd::lifecycle::actions::{
    cancel, cancel_with_history, end_early, revoke, ActionError, CancelRequest, EndEarlyRequest,
    PastExtension,
};
use contractd::lifecycle::{auto_extend, execute_cancellations, expire, RulePolicy};
use serde_json::{json, Value};

use crate::support::{date, patched_contract};

/// A contract from an import record: the defaults below with the fields of `patch` replaced,
/// its dates computed as of `today` (as import stores it).
fn contract(patch: Value, today: &str) -> Contract {
    patched_contract(
        json!({
            "ref": "C-1",
            "customer": "ACME",
            "time_zone": "Europe/Berlin",
            "start_date": "2025-01-01",
            "end_date": "2025-12-31",
            "notice_period": "1M",
            "cancellation_window": "end_of_term",
            "auto_extend": false,
        }),
        patch,
        date(today),
    )
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

fn received(day: &str) -> CancelRequest {
    CancelRequest {
        received_on: Some(date(day)),
        reason: Some("too_expensive".into()),
        notes: Some("called on the phone".into()),
        ..CancelRequest::default()
    }
}

/// Monthly schedules of `line` for 2025, `amount` each; the first `billed` of them billed on
/// `INV-<month>`.
fn monthly_2025(line: &str, amount: i64, billed: usize) -> Vec<Value> {
    (1..=12_u32)
        .map(|month| {
            let start = NaiveDate::from_ymd_opt(2025, month, 1).unwrap();
            let next = if month == 12 {
                NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()
            } else {
                NaiveDate::from_ymd_opt(2025, month + 1, 1).unwrap()
            };
            let end = next.pred_opt().unwrap();
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

// ---------------------------------------------------------------------------------------------
// NCRC: "Working With Cancellation", the three examples.
// ---------------------------------------------------------------------------------------------

/// Example 1: "Cancellation Period: 1M, Allowed Cancellation: Till end of contract — the
/// termination must be submitted no later than 1 month before the end date of the Contract or
/// Contract line."
#[test]
fn ncrc_example_1_one_month_notice_till_end_of_contract() {
    let c = contract(json!({}), "2025-11-22");
    assert_eq!(c.cancellation_date, Some(date("2025-12-31")));
    assert_eq!(c.latest_cancellation_date, Some(date("2025-11-30")));
    // Submitted on the deadline: valid, ends at the contract's end date.
    let t = cancel(&c, &received("2025-11-30"), date("2025-11-30"), &policy()).unwrap();
    assert_eq!(
        t.contract.cancellation.unwrap().end_date,
        date("2025-12-31")
    );
    // One day late: no regular cancellation is left; the contract simply expires.
    let late = cancel(&c, &received("2025-12-01"), date("2025-12-01"), &policy()).unwrap_err();
    assert!(matches!(late, ActionError::NoRegularCancellation { .. }));
    assert!(late.to_string().contains("contract 'C-1'"));
    // What gets past it (an override) is the command line's to say, in its own syntax.
    assert!(late
        .to_string()
        .contains("it simply expires at its end date"));
    assert!(!late.to_string().contains("--"));
}

/// Example 1 for a contract line: notice counts back from the line's own end date.
#[test]
fn ncrc_example_1_for_a_contract_line() {
    let c = contract(
        json!({"lines": [{"ref": "L1", "kind": "recurring_fixed", "billable": true,
                          "start_date": "2025-01-01", "end_date": "2025-06-30",
                          "amount_minor": 1000, "currency": "EUR", "billing_period": "1M"}]}),
        "2025-05-01",
    );
    let mut request = received("2025-05-31");
    request.line = Some("L1".into());
    let t = cancel(&c, &request, date("2025-05-31"), &policy()).unwrap();
    let line = t.contract.line("L1").unwrap();
    assert_eq!(
        line.cancellation.as_ref().unwrap().end_date,
        date("2025-06-30")
    );
    request.received_on = Some(date("2025-06-01"));
    let late = cancel(&c, &request, date("2025-06-01"), &policy()).unwrap_err();
    assert!(matches!(late, ActionError::NoRegularCancellation { .. }));
    assert!(late.to_string().starts_with("contract 'C-1' line 'L1'"));
}

/// Example 2: "Cancellation Period: 1M, Allowed Cancellation: Till end of a year — must be
/// submitted at least 1 month before the end of the year, i.e. 30.11.XX."
#[test]
fn ncrc_example_2_one_month_notice_till_end_of_year_deadline_is_30_11() {
    let c = contract(
        json!({"end_date": null, "cancellation_window": "end_of_year"}),
        "2025-11-22",
    );
    assert_eq!(c.cancellation_date, Some(date("2025-12-31")));
    assert_eq!(c.latest_cancellation_date, Some(date("2025-11-30")));
    let on_time = cancel(&c, &received("2025-11-30"), date("2025-11-30"), &policy()).unwrap();
    assert_eq!(
        on_time.contract.cancellation.unwrap().end_date,
        date("2025-12-31")
    );
    let next_year = cancel(&c, &received("2025-12-01"), date("2025-12-01"), &policy()).unwrap();
    assert_eq!(
        next_year.contract.cancellation.unwrap().end_date,
        date("2026-12-31")
    );
}

/// Example 3: "Cancellation Period: –, Allowed Cancellation: Till end of the month — the
/// notice of cancellation can thus be submitted monthly."
#[test]
fn ncrc_example_3_no_notice_period_till_end_of_month() {
    let c = contract(
        json!({"end_date": null, "notice_period": "0D", "cancellation_window": "end_of_month"}),
        "2025-11-22",
    );
    assert_eq!(c.cancellation_date, Some(date("2025-11-30")));
    assert_eq!(c.latest_cancellation_date, Some(date("2025-11-30")));
    let last_day = cancel(&c, &received("2025-11-30"), date("2025-11-30"), &policy()).unwrap();
    assert_eq!(
        last_day.contract.cancellation.unwrap().end_date,
        date("2025-11-30")
    );
    let next_month = cancel(&c, &received("2025-12-01"), date("2025-12-01"), &policy()).unwrap();
    assert_eq!(
        next_month.contract.cancellation.unwrap().end_date,
        date("2025-12-31")
    );
}

// ---------------------------------------------------------------------------------------------
// Cancel
// ---------------------------------------------------------------------------------------------

#[test]
fn cancel_too_late_names_the_missed_deadline_and_the_next_possible_end_date() {
    // An auto-extending contract whose extension has not run yet.
    let c = contract(
        json!({"auto_extend": true, "extension_term": "1Y"}),
        "2025-11-01",
    );
    let mut request = received("2025-12-05");
    request.end_date = Some(date("2025-12-31"));
    let error = cancel(&c, &request, date("2025-12-05"), &policy()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "contract 'C-1': end_date 2025-12-31 needs notice by 2025-11-30 (received 2025-12-05); \
         the next possible end date is 2026-12-31, deadline 2026-11-30"
    );
}

#[test]
fn cancel_with_an_end_date_outside_the_window_names_the_next_possible_one() {
    let c = contract(
        json!({"end_date": null, "cancellation_window": "end_of_quarter"}),
        "2025-02-01",
    );
    let mut request = received("2025-02-01");
    request.end_date = Some(date("2025-04-15"));
    let error = cancel(&c, &request, date("2025-02-01"), &policy()).unwrap_err();
    assert!(matches!(error, ActionError::NotPossibleEndDate { .. }));
    assert_eq!(
        error.to_string(),
        "contract 'C-1': end_date 2025-04-15 is not a possible end date (cancellation_window \
         end_of_quarter); the next possible end date is 2025-06-30, deadline 2025-05-31"
    );
}

#[test]
fn cancel_before_the_minimum_term_is_refused_unless_overridden() {
    let c = contract(
        json!({"end_date": null, "cancellation_window": "end_of_month",
               "minimum_term_end": "2025-12-31"}),
        "2025-03-01",
    );
    let mut request = received("2025-03-01");
    request.end_date = Some(date("2025-06-30"));
    let error = cancel(&c, &request, date("2025-03-01"), &policy()).unwrap_err();
    assert!(matches!(error, ActionError::BeforeMinimumTerm { .. }));
    assert!(error.to_string().contains("minimum_term_end 2025-12-31"));
    // Without a requested end date the first end date after the minimum term is taken.
    let t = cancel(&c, &received("2025-03-01"), date("2025-03-01"), &policy()).unwrap();
    assert_eq!(
        t.contract.cancellation.unwrap().end_date,
        date("2025-12-31")
    );
    request.override_notice = true;
    let t = cancel(&c, &request, date("2025-03-01"), &policy()).unwrap();
    assert_eq!(
        t.contract.cancellation.unwrap().end_date,
        date("2025-06-30")
    );
}

#[test]
fn cancel_registers_turns_auto_extend_off_and_stays_active() {
    let c = contract(
        json!({"auto_extend": true, "extension_term": "1Y"}),
        "2025-10-01",
    );
    let t = cancel(&c, &received("2025-10-01"), date("2025-10-01"), &policy()).unwrap();
    let registered = &t.contract;
    assert_eq!(registered.status, ContractStatus::Active);
    assert!(!registered.auto_extend);
    let pending = registered.cancellation.as_ref().unwrap();
    assert_eq!(pending.end_date, date("2025-12-31"));
    assert_eq!(pending.received_on, date("2025-10-01"));
    assert!(pending.restore_auto_extend);
    assert_eq!(pending.reason.as_deref(), Some("too_expensive"));
    // Dates recomputed: the pending cancellation's end date, no deadline.
    assert_eq!(registered.cancellation_date, Some(date("2025-12-31")));
    assert_eq!(registered.latest_cancellation_date, None);
    assert_eq!(registered.end_date, Some(date("2025-12-31")));
    let event = &t.events[0];
    assert_eq!(event.kind, EventKind::CancellationRegistered);
    assert_eq!(event.transition_key, None);
    assert_eq!(event.details["reason"], "too_expensive");
    assert_eq!(event.details["notes"], "called on the phone");
    // It executes the day after its end date, and not before.
    assert_eq!(
        execute_cancellations(registered, date("2025-12-31"), &policy()),
        Ok(None)
    );
    let executed = execute_cancellations(registered, date("2026-01-01"), &policy())
        .unwrap()
        .unwrap();
    assert_eq!(executed.contract.status, ContractStatus::Cancelled);
}

#[test]
fn cancel_a_second_time_while_one_is_pending_is_an_error() {
    let c = contract(json!({}), "2025-10-01");
    let t = cancel(&c, &received("2025-10-01"), date("2025-10-01"), &policy()).unwrap();
    let error = cancel(
        &t.contract,
        &received("2025-10-02"),
        date("2025-10-02"),
        &policy(),
    )
    .unwrap_err();
    assert!(matches!(error, ActionError::CancellationPending { .. }));
    assert!(error.to_string().contains("revoke it first"));
}

#[test]
fn cancel_an_ended_contract_is_an_error() {
    let c = contract(json!({"status": "expired"}), "2025-10-01");
    let error = cancel(&c, &received("2025-10-01"), date("2025-10-01"), &policy()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "contract 'C-1': status is expired; only an active contract can be cancelled"
    );
}

#[test]
fn cancel_received_in_the_future_is_an_error() {
    let c = contract(json!({}), "2025-10-01");
    let error = cancel(&c, &received("2025-10-02"), date("2025-10-01"), &policy()).unwrap_err();
    assert!(matches!(error, ActionError::ReceivedInFuture { .. }));
}

#[test]
fn cancel_received_in_the_past_with_an_end_date_before_today_executes_at_once() {
    let c = contract(
        json!({"end_date": null, "notice_period": "0D", "cancellation_window": "end_of_month"}),
        "2025-03-01",
    );
    // Received (and lost in the mail room) on 20 March, registered on 3 April.
    let t = cancel(&c, &received("2025-03-20"), date("2025-04-03"), &policy()).unwrap();
    assert_eq!(t.contract.status, ContractStatus::Cancelled);
    assert_eq!(t.contract.end_date, Some(date("2025-03-31")));
    let kinds: Vec<EventKind> = t.events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::CancellationRegistered,
            EventKind::CancellationExecuted
        ]
    );
    assert!(t.events.iter().all(|e| e.transition_key.is_none()));
}

#[test]
fn cancel_with_override_ignores_the_notice_period_and_defaults_to_today() {
    let c = contract(json!({"notice_period": "3M"}), "2025-11-01");
    let request = CancelRequest {
        override_notice: true,
        ..CancelRequest::default()
    };
    let t = cancel(&c, &request, date("2025-11-20"), &policy()).unwrap();
    let pending = t.contract.cancellation.unwrap();
    assert_eq!(pending.end_date, date("2025-11-20"));
    assert_eq!(t.contract.status, ContractStatus::Active);
}

#[test]
fn cancel_with_override_may_not_end_after_the_end_date() {
    let c = contract(json!({}), "2025-11-01");
    let request = CancelRequest {
        override_notice: true,
        end_date: Some(date("2026-01-31")),
        ..CancelRequest::default()
    };
    let error = cancel(&c, &request, date("2025-11-20"), &policy()).unwrap_err();
    assert!(matches!(error, ActionError::EndDateAfterEnd { .. }));
}

#[test]
fn cancel_immediately_with_another_end_date_is_an_error() {
    let c = contract(json!({}), "2025-11-01");
    let request = CancelRequest {
        immediately: true,
        end_date: Some(date("2025-12-31")),
        ..CancelRequest::default()
    };
    let error = cancel(&c, &request, date("2025-11-20"), &policy()).unwrap_err();
    assert!(matches!(error, ActionError::ImmediatelyWithEndDate { .. }));
}

#[test]
fn cancel_into_a_later_term_extends_the_contract_to_that_term() {
    let c = contract(
        json!({"auto_extend": true, "extension_term": "1Y"}),
        "2025-10-01",
    );
    let mut request = received("2025-10-01");
    request.end_date = Some(date("2026-12-31"));
    let t = cancel(&c, &request, date("2025-10-01"), &policy()).unwrap();
    assert_eq!(t.contract.end_date, Some(date("2026-12-31")));
    assert_eq!(
        t.contract.cancellation.unwrap().end_date,
        date("2026-12-31")
    );
    assert_eq!(t.events[0].kind, EventKind::Extended);
    assert_eq!(t.events[1].kind, EventKind::CancellationRegistered);
}

#[test]
fn cancel_without_any_possible_cancellation_says_so() {
    let c = contract(json!({}), "2025-12-10");
    let error = cancel(&c, &received("2025-12-10"), date("2025-12-10"), &policy()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "contract 'C-1': end_date: no regular cancellation is possible any more as of \
         2025-12-10 (the last notice deadline has passed and the contract does not \
         auto-extend; it simply expires at its end date)"
    );
}

fn with_lines() -> Value {
    json!({
        "cancellation_window": "end_of_month",
        "auto_extend": true, "extension_term": "1Y",
        "lines": [
            {"ref": "L1", "kind": "recurring_fixed", "billable": true, "start_date": "2025-01-01",
             "end_date": "2025-12-31", "amount_minor": 3100, "currency": "EUR",
             "billing_period": "1M", "auto_extend": true},
            {"ref": "L2", "kind": "recurring_fixed", "billable": false,
             "start_date": "2025-01-01", "amount_minor": 1000, "currency": "EUR",
             "billing_period": "1M"},
        ],
        "schedules": monthly_2025("L1", 3100, 0),
    })
}

#[test]
fn cancel_a_line_registers_on_that_line_only() {
    let c = contract(with_lines(), "2025-03-10");
    let mut request = received("2025-03-10");
    request.line = Some("L1".into());
    let t = cancel(&c, &request, date("2025-03-10"), &policy()).unwrap();
    let line = t.contract.line("L1").unwrap();
    let pending = line.cancellation.as_ref().unwrap();
    assert_eq!(
        pending.end_date,
        date("2025-04-30"),
        "end of month, one month notice"
    );
    assert!(pending.restore_auto_extend);
    assert!(!line.auto_extend);
    assert!(t.contract.auto_extend, "the contract still auto-extends");
    assert_eq!(t.contract.cancellation, None);
    assert_eq!(t.events[0].kind, EventKind::LineCancellationRegistered);
    assert_eq!(t.events[0].line_ref.as_deref(), Some("L1"));
    // Executed the day after its end date: the line ends, the contract goes on.
    let executed = execute_cancellations(&t.contract, date("2025-05-01"), &policy())
        .unwrap()
        .unwrap();
    assert_eq!(
        executed.contract.line("L1").unwrap().status,
        LineStatus::Cancelled
    );
    assert_eq!(executed.contract.status, ContractStatus::Active);
}

#[test]
fn cancel_a_line_only_when_it_is_billable() {
    let c = contract(with_lines(), "2025-03-10");
    let mut request = received("2025-03-10");
    request.line = Some("L2".into());
    let error = cancel(&c, &request, date("2025-03-10"), &policy()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "contract 'C-1' line 'L2': billable: only billable lines can be cancelled; cancel the \
         whole contract instead"
    );
    request.line = Some("L9".into());
    let error = cancel(&c, &request, date("2025-03-10"), &policy()).unwrap_err();
    assert!(matches!(error, ActionError::UnknownLine { .. }));
}

#[test]
fn cancel_a_line_may_not_end_after_its_end_date() {
    let c = contract(with_lines(), "2025-03-10");
    let mut request = received("2025-03-10");
    request.line = Some("L1".into());
    request.end_date = Some(date("2026-01-31"));
    let error = cancel(&c, &request, date("2025-03-10"), &policy()).unwrap_err();
    assert!(matches!(error, ActionError::EndDateAfterEnd { .. }));
}

// ---------------------------------------------------------------------------------------------
// Nexudus: "Cancelling Contracts"
// ---------------------------------------------------------------------------------------------

/// Nexudus: "if you set the cancellation date to May 15th, the member will ... lose access to your
/// space shortly after May 14th 11:59PM". Nexudus's cancellation date is the first day without
/// service; our `end_date` is the last day of service, inclusive (docs/rules.md, dates and zones).
/// So Nexudus's cancellation date 15 May is our end date 14 May: the contract is still active on
/// the 14th and the sweep for business date 15 May (just after local midnight) cancels it.
#[test]
fn nexudus_cancellation_date_15_may_is_our_end_date_14_may() {
    let c = contract(
        json!({"end_date": null, "cancellation_window": "end_of_month"}),
        "2025-05-01",
    );
    let request = CancelRequest {
        override_notice: true,
        end_date: Some(date("2025-05-14")),
        ..CancelRequest::default()
    };
    let t = cancel(&c, &request, date("2025-05-01"), &policy()).unwrap();
    assert_eq!(
        execute_cancellations(&t.contract, date("2025-05-14"), &policy()),
        Ok(None),
        "still has access all of 14 May"
    );
    let executed = execute_cancellations(&t.contract, date("2025-05-15"), &policy())
        .unwrap()
        .unwrap();
    assert_eq!(executed.contract.status, ContractStatus::Cancelled);
    assert_eq!(executed.contract.end_date, Some(date("2025-05-14")));
}

/// Nexudus: "if you want a member to keep access to your space until the end of the day on the
/// 15th, you need to set the cancellation date to the 16th" — in our convention the end date is
/// simply the 15th, the last day with access.
#[test]
fn nexudus_keeps_access_until_the_end_of_the_15th_with_end_date_15_may() {
    let c = contract(
        json!({"end_date": null, "cancellation_window": "end_of_month"}),
        "2025-05-01",
    );
    let request = CancelRequest {
        override_notice: true,
        end_date: Some(date("2025-05-15")),
        ..CancelRequest::default()
    };
    let t = cancel(&c, &request, date("2025-05-01"), &policy()).unwrap();
    assert_eq!(
        execute_cancellations(&t.contract, date("2025-05-15"), &policy()),
        Ok(None)
    );
    let executed = execute_cancellations(&t.contract, date("2025-05-16"), &policy())
        .unwrap()
        .unwrap();
    assert_eq!(executed.contract.end_date, Some(date("2025-05-15")));
}

/// Nexudus: "Cancelling contracts on the Admin Panel overrides any notice period or minimum term
/// set in the contracts." — `--immediately`.
#[test]
fn nexudus_immediate_cancel_overrides_notice_and_minimum_term() {
    let c = contract(
        json!({"notice_period": "3M", "minimum_term_end": "2025-12-31",
               "auto_extend": true, "extension_term": "1Y"}),
        "2025-05-20",
    );
    let request = CancelRequest {
        immediately: true,
        reason: Some("moved_out".into()),
        ..CancelRequest::default()
    };
    let t = cancel(&c, &request, date("2025-05-20"), &policy()).unwrap();
    assert_eq!(t.contract.status, ContractStatus::Cancelled);
    assert_eq!(t.contract.end_date, Some(date("2025-05-20")));
    assert_eq!(t.contract.original_end_date, Some(date("2025-12-31")));
    assert_eq!(t.contract.end_reason.as_deref(), Some("moved_out"));
    assert!(!t.contract.auto_extend);
    assert_eq!(t.contract.cancellation, None);
}

/// Nexudus: "Cancel contract and issue a final invoice", with "Adjust the last invoice based on
/// how many days are between the next invoice date and the cancellation date" (proration).
#[test]
fn nexudus_cancel_and_issue_a_prorated_final_invoice() {
    let mut patch = with_lines();
    patch["schedules"] = json!(monthly_2025("L1", 3100, 4));
    patch["documents"] = json!(invoices(4));
    let c = contract(patch, "2025-05-14");
    let request = CancelRequest {
        immediately: true,
        final_invoice: true,
        ..CancelRequest::default()
    };
    let t = cancel(&c, &request, date("2025-05-14"), &policy()).unwrap();
    let invoice = t
        .contract
        .documents
        .iter()
        .find(|doc| doc.reference == "C-1-FINAL-5")
        .unwrap();
    assert_eq!(invoice.status, DocumentStatus::Draft);
    assert_eq!(invoice.amount_minor, prorate(3100, 14, 31));
    let may = t
        .contract
        .schedules
        .iter()
        .find(|s| s.period_start == date("2025-05-01"))
        .unwrap();
    assert_eq!(may.status, ScheduleStatus::Billed);
    assert_eq!(may.document.as_deref(), Some("C-1-FINAL-5"));
    assert_eq!(may.period_end, date("2025-05-14"));
    assert!(t
        .events
        .iter()
        .any(|e| e.kind == EventKind::FinalInvoiceCreated));
}

#[test]
fn nexudus_without_proration_the_last_invoice_is_not_adjusted() {
    let mut patch = with_lines();
    patch["proration"] = json!("none");
    let c = contract(patch, "2025-05-14");
    let request = CancelRequest {
        immediately: true,
        final_invoice: true,
        ..CancelRequest::default()
    };
    let t = cancel(&c, &request, date("2025-05-14"), &policy()).unwrap();
    let may = t
        .contract
        .schedules
        .iter()
        .find(|s| s.period_start == date("2025-05-01"))
        .unwrap();
    assert_eq!(may.amount_minor, 3100);
}

// ---------------------------------------------------------------------------------------------
// Revoke (NCRC: "To reverse a cancellation … the recorded cancellation values are then
// automatically deleted.")
// ---------------------------------------------------------------------------------------------

#[test]
fn revoke_clears_the_cancellation_restores_auto_extend_and_recomputes() {
    let c = contract(
        json!({"auto_extend": true, "extension_term": "1Y"}),
        "2025-10-01",
    );
    let registered = cancel(&c, &received("2025-10-01"), date("2025-10-01"), &policy()).unwrap();
    let t = revoke(&registered.contract, None, date("2025-10-15")).unwrap();
    assert_eq!(t.contract.cancellation, None);
    assert!(t.contract.auto_extend);
    assert_eq!(t.contract.cancellation_date, Some(date("2025-12-31")));
    assert_eq!(
        t.contract.latest_cancellation_date,
        Some(date("2025-11-30"))
    );
    assert_eq!(t.events[0].kind, EventKind::CancellationRevoked);
    assert_eq!(t.events[0].details["end_date"], "2025-12-31");
}

#[test]
fn revoke_without_a_pending_cancellation_is_an_error() {
    let c = contract(json!({}), "2025-10-01");
    let error = revoke(&c, None, date("2025-10-01")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "contract 'C-1': cancellation: no cancellation is pending, nothing to revoke"
    );
    let error = revoke(&c, Some("L1"), date("2025-10-01")).unwrap_err();
    assert!(matches!(error, ActionError::UnknownLine { .. }));
}

#[test]
fn revoke_a_line_cancellation_restores_the_line() {
    let c = contract(with_lines(), "2025-03-10");
    let mut request = received("2025-03-10");
    request.line = Some("L1".into());
    let registered = cancel(&c, &request, date("2025-03-10"), &policy()).unwrap();
    let t = revoke(&registered.contract, Some("L1"), date("2025-03-11")).unwrap();
    let line = t.contract.line("L1").unwrap();
    assert_eq!(line.cancellation, None);
    assert!(line.auto_extend);
    assert_eq!(t.events[0].kind, EventKind::LineCancellationRevoked);
    let error = revoke(&t.contract, Some("L1"), date("2025-03-11")).unwrap_err();
    assert!(matches!(
        error,
        ActionError::NoPendingLineCancellation { .. }
    ));
}

// ---------------------------------------------------------------------------------------------
// Billing Central: "Ending Contracts", one test per bullet and note.
// ---------------------------------------------------------------------------------------------

/// BC-1: a year contract, L1 monthly 3100 EUR billed January to April on complete invoices,
/// May billed on a draft invoice, L2 starting in September; renewals and change requests in
/// every status.
fn billing_central(today: &str) -> Contract {
    let mut schedules = monthly_2025("L1", 3100, 4);
    schedules[4]["status"] = json!("billed");
    schedules[4]["document"] = json!("INV-5");
    let mut documents = invoices(4);
    documents.push(json!({"ref": "INV-5", "kind": "invoice", "status": "draft",
                          "amount_minor": 3100, "currency": "EUR"}));
    let mut record = json!({
        "ref": "BC-1",
        "auto_extend": true, "extension_term": "1Y",
        "lines": [
            {"ref": "L1", "kind": "recurring_fixed", "billable": true, "start_date": "2025-01-01",
             "end_date": "2025-12-31", "amount_minor": 3100, "currency": "EUR",
             "billing_period": "1M", "auto_extend": true},
            {"ref": "L2", "kind": "recurring_usage", "billable": true, "start_date": "2025-09-01",
             "end_date": "2025-12-31", "amount_minor": 800, "currency": "EUR",
             "billing_period": "1M"},
        ],
        "schedules": schedules,
        "documents": documents,
        "renewals": [{"ref": "R-1", "status": "draft"}, {"ref": "R-2", "status": "complete"}],
        "change_requests": [
            {"ref": "CR-1", "status": "draft"}, {"ref": "CR-2", "status": "pending"},
            {"ref": "CR-3", "status": "approved"}, {"ref": "CR-4", "status": "rejected"},
            {"ref": "CR-5", "status": "applied"},
        ],
    });
    record["ref"] = json!("BC-1");
    contract(record, today)
}

fn end_at(day: &str) -> EndEarlyRequest {
    EndEarlyRequest {
        end_date: date(day),
        reason: "customer_request".into(),
        notes: Some("agreed with sales".into()),
    }
}

/// "If the new end date is before today, the status of the contract is set to Expired."
#[test]
fn billing_central_new_end_date_before_today_sets_status_expired() {
    let c = billing_central("2025-06-10");
    let t = end_early(&c, &end_at("2025-06-05"), date("2025-06-10"), &policy()).unwrap();
    assert_eq!(t.contract.status, ContractStatus::Expired);
    assert_eq!(t.contract.line("L1").unwrap().status, LineStatus::Expired);
    assert_eq!(t.contract.cancellation_date, None);
}

/// "If the new end date is today or later, the status of the contract remains Active until the
/// end date is passed and a background job changes the contract's status to Expired."
#[test]
fn billing_central_new_end_date_today_or_later_stays_active_until_the_expire_job() {
    let c = billing_central("2025-06-10");
    for day in ["2025-06-10", "2025-06-30"] {
        let t = end_early(&c, &end_at(day), date("2025-06-10"), &policy()).unwrap();
        assert_eq!(t.contract.status, ContractStatus::Active);
        assert_eq!(expire(&t.contract, date(day)), None);
        let expired = expire(&t.contract, date(day).succ_opt().unwrap()).unwrap();
        assert_eq!(expired.contract.status, ContractStatus::Expired);
    }
}

/// "The original end date of the contract is recorded in the Original End Date field."
#[test]
fn billing_central_records_the_original_end_date() {
    let c = billing_central("2025-06-10");
    let t = end_early(&c, &end_at("2025-06-30"), date("2025-06-10"), &policy()).unwrap();
    assert_eq!(t.contract.original_end_date, Some(date("2025-12-31")));
    assert_eq!(t.contract.end_date, Some(date("2025-06-30")));
    // A second early end keeps the first original end date.
    let again = end_early(
        &t.contract,
        &end_at("2025-06-20"),
        date("2025-06-10"),
        &policy(),
    )
    .unwrap();
    assert_eq!(again.contract.original_end_date, Some(date("2025-12-31")));
}

/// "Draft renewals associated with the contract are deleted."
#[test]
fn billing_central_deletes_draft_renewals() {
    let c = billing_central("2025-06-10");
    let t = end_early(&c, &end_at("2025-06-30"), date("2025-06-10"), &policy()).unwrap();
    let left: Vec<&str> = t
        .contract
        .renewals
        .iter()
        .map(|r| r.reference.as_str())
        .collect();
    assert_eq!(left, vec!["R-2"]);
}

/// "Change requests with a status other than Rejected are deleted."
#[test]
fn billing_central_deletes_change_requests_not_rejected() {
    let c = billing_central("2025-06-10");
    let t = end_early(&c, &end_at("2025-06-30"), date("2025-06-10"), &policy()).unwrap();
    let left: Vec<&str> = t
        .contract
        .change_requests
        .iter()
        .map(|r| r.reference.as_str())
        .collect();
    assert_eq!(left, vec!["CR-4"]);
}

/// "Draft billing documents are deleted." What was billed on a draft invoice was never sent:
/// it is planned again.
#[test]
fn billing_central_deletes_draft_billing_documents() {
    let c = billing_central("2025-06-10");
    let t = end_early(&c, &end_at("2025-06-30"), date("2025-06-10"), &policy()).unwrap();
    assert!(t
        .contract
        .documents
        .iter()
        .all(|doc| doc.reference != "INV-5"));
    assert_eq!(t.contract.documents.len(), 4);
    let may = &t.contract.schedules[4];
    assert_eq!(may.status, ScheduleStatus::Planned);
    assert_eq!(may.document, None);
    assert_eq!(t.events[0].details["deleted_documents"], json!(["INV-5"]));
}

/// "Billing schedules that start after the new end date are deleted."
#[test]
fn billing_central_deletes_schedules_starting_after_the_new_end_date() {
    let c = billing_central("2025-06-10");
    let t = end_early(&c, &end_at("2025-06-30"), date("2025-06-10"), &policy()).unwrap();
    assert_eq!(t.contract.schedules.len(), 6);
    assert!(t
        .contract
        .schedules
        .iter()
        .all(|s| s.period_start <= date("2025-06-30")));
}

/// "Billing schedules in which the new end date falls have their End of Period updated to the
/// new end date. If a billing schedule is for a Recurring Fixed contract line item and the
/// contract uses proration, the billing schedule's value is recalculated."
#[test]
fn billing_central_cuts_the_schedule_containing_the_new_end_date_and_prorates_recurring_fixed() {
    let c = billing_central("2025-06-10");
    let t = end_early(&c, &end_at("2025-06-20"), date("2025-06-10"), &policy()).unwrap();
    let june = &t.contract.schedules[5];
    assert_eq!(june.period_end, date("2025-06-20"));
    assert_eq!(june.amount_minor, prorate(3100, 20, 30));
    assert_eq!(june.amount_minor, 2067);
}

#[test]
fn billing_central_does_not_prorate_usage_lines_or_contracts_without_proration() {
    let mut c = billing_central("2025-06-10");
    c.proration = contractd::contract::Proration::None;
    let t = end_early(&c, &end_at("2025-06-20"), date("2025-06-10"), &policy()).unwrap();
    assert_eq!(t.contract.schedules[5].amount_minor, 3100);
    assert_eq!(t.contract.schedules[5].period_end, date("2025-06-20"));
}

/// "If the new end date is before a contract line item's start date, that contract line item is
/// canceled."
#[test]
fn billing_central_cancels_lines_starting_after_the_new_end_date() {
    let c = billing_central("2025-06-10");
    let t = end_early(&c, &end_at("2025-06-30"), date("2025-06-10"), &policy()).unwrap();
    assert_eq!(t.contract.line("L2").unwrap().status, LineStatus::Cancelled);
    assert_eq!(t.contract.line("L1").unwrap().status, LineStatus::Active);
    assert_eq!(
        t.contract.line("L1").unwrap().end_date,
        Some(date("2025-06-30"))
    );
}

/// Note: "If the Allow End Contract Line Before Billed To field is enabled, ending a contract
/// early might result in billing schedules that have been billed being deleted" — and then a
/// draft credit note for the billed difference. Without it, ending before the billed-to date is
/// refused.
#[test]
fn billing_central_billed_schedules_beyond_the_new_end_date_need_allow_end_before_billed_to() {
    let c = billing_central("2025-06-10");
    let error = end_early(&c, &end_at("2025-04-15"), date("2025-06-10"), &policy()).unwrap_err();
    assert!(matches!(error, ActionError::BilledBeyondEndDate(_)));
    let message = error.to_string();
    assert!(
        message.starts_with("contract 'BC-1': schedules[3]"),
        "{message}"
    );
    assert!(message.contains("allow_end_before_billed_to"));

    let t = end_early(
        &c,
        &end_at("2025-04-15"),
        date("2025-06-10"),
        &allow_billed(),
    )
    .unwrap();
    let notes: Vec<_> = t
        .contract
        .documents
        .iter()
        .filter(|doc| doc.kind == DocumentKind::CreditNote)
        .collect();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].status, DocumentStatus::Draft);
    // April was billed in full (3100) and keeps 15 of 30 days; May was on the deleted draft.
    assert_eq!(notes[0].amount_minor, 3100 - prorate(3100, 15, 30));
    assert_eq!(notes[0].reference, "BC-1-CN-1");
    assert_eq!(t.events[1].kind, EventKind::CreditNoteCreated);
    assert_eq!(t.events[1].transition_key, None);
}

/// Note: "An error message is displayed if you attempt to end a contract that has Draft or
/// Ready for Review credit notes ... linked to it."
#[test]
fn billing_central_refuses_with_a_draft_or_ready_for_review_credit_note() {
    for status in ["draft", "ready_for_review"] {
        let mut c = billing_central("2025-06-10");
        c.documents.push(contractd::contract::BillingDocument {
            reference: "CN-9".into(),
            kind: DocumentKind::CreditNote,
            status: DocumentStatus::parse(status).unwrap(),
            consolidated: false,
            amount_minor: 100,
            currency: "EUR".into(),
        });
        let error =
            end_early(&c, &end_at("2025-06-30"), date("2025-06-10"), &policy()).unwrap_err();
        assert!(matches!(error, ActionError::DocumentBlocksEarlyEnd { .. }));
        assert!(error.to_string().contains("'CN-9'"));
        assert!(error
            .to_string()
            .starts_with("contract 'BC-1': documents[5]"));
    }
    // A complete credit note does not block.
    let mut c = billing_central("2025-06-10");
    c.documents.push(contractd::contract::BillingDocument {
        reference: "CN-9".into(),
        kind: DocumentKind::CreditNote,
        status: DocumentStatus::Complete,
        consolidated: false,
        amount_minor: 100,
        currency: "EUR".into(),
    });
    assert!(end_early(&c, &end_at("2025-06-30"), date("2025-06-10"), &policy()).is_ok());
}

/// Note: "... or consolidated billing documents linked to it ... regardless of whether or not
/// it contains only billing documents related to the current contract."
#[test]
fn billing_central_refuses_with_a_consolidated_document() {
    let mut c = billing_central("2025-06-10");
    c.documents[0].consolidated = true;
    let error = end_early(&c, &end_at("2025-06-30"), date("2025-06-10"), &policy()).unwrap_err();
    assert!(error.to_string().contains("unconsolidate"));
}

/// Steps 3 and 4: "Select the reason for ending the contract" and "Enter additional notes ...
/// saved in the End Contract Notes field."
#[test]
fn billing_central_saves_the_reason_and_notes() {
    let c = billing_central("2025-06-10");
    let t = end_early(&c, &end_at("2025-06-30"), date("2025-06-10"), &policy()).unwrap();
    assert_eq!(t.contract.end_reason.as_deref(), Some("customer_request"));
    assert_eq!(t.contract.end_notes.as_deref(), Some("agreed with sales"));
    assert_eq!(t.events[0].kind, EventKind::EndedEarly);
    assert_eq!(t.events[0].details["reason"], "customer_request");
    let mut no_reason = end_at("2025-06-30");
    no_reason.reason = "  ".into();
    let error = end_early(&c, &no_reason, date("2025-06-10"), &policy()).unwrap_err();
    assert!(matches!(error, ActionError::ReasonRequired { .. }));
}

#[test]
fn end_early_turns_auto_extend_off_and_recomputes_the_dates() {
    let c = billing_central("2025-06-10");
    assert!(c.auto_extend);
    let t = end_early(&c, &end_at("2025-08-31"), date("2025-06-10"), &policy()).unwrap();
    assert!(!t.contract.auto_extend);
    assert_eq!(t.contract.cancellation_date, Some(date("2025-08-31")));
    assert_eq!(
        t.contract.latest_cancellation_date,
        Some(date("2025-07-31"))
    );
}

#[test]
fn end_early_is_refused_while_a_cancellation_is_pending() {
    let c = billing_central("2025-06-10");
    let registered = cancel(&c, &received("2025-06-10"), date("2025-06-10"), &policy()).unwrap();
    let error = end_early(
        &registered.contract,
        &end_at("2025-06-30"),
        date("2025-06-10"),
        &policy(),
    )
    .unwrap_err();
    assert!(matches!(error, ActionError::CancellationPending { .. }));
}

#[test]
fn end_early_after_the_end_date_or_before_the_start_is_refused() {
    let c = billing_central("2025-06-10");
    let error = end_early(&c, &end_at("2026-01-31"), date("2025-06-10"), &policy()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "contract 'BC-1': end_date 2026-01-31 is after the current end date 2025-12-31; choose \
         an end date on or before it"
    );
    let error = end_early(&c, &end_at("2024-12-31"), date("2025-06-10"), &policy()).unwrap_err();
    assert!(matches!(error, ActionError::EndDateBeforeStart { .. }));
}

#[test]
fn cancel_immediately_is_refused_for_billed_periods_beyond_today_unless_allowed() {
    let mut patch = with_lines();
    patch["schedules"] = json!(monthly_2025("L1", 3100, 5));
    patch["documents"] = json!(invoices(5));
    let c = contract(patch, "2025-05-14");
    let request = CancelRequest {
        immediately: true,
        ..CancelRequest::default()
    };
    let error = cancel(&c, &request, date("2025-05-14"), &policy()).unwrap_err();
    assert!(matches!(error, ActionError::BilledBeyondEndDate(_)));
    assert!(error
        .to_string()
        .starts_with("contract 'C-1': schedules[4]: line 'L1' is billed on 'INV-5'"));
    let t = cancel(&c, &request, date("2025-05-14"), &allow_billed()).unwrap();
    let note = t
        .contract
        .documents
        .iter()
        .find(|doc| doc.kind == DocumentKind::CreditNote)
        .unwrap();
    assert_eq!(note.amount_minor, 3100 - prorate(3100, 14, 31));
}

// ---------------------------------------------------------------------------------------------
// The received date decides (docs/rules.md section 6.2)
// ---------------------------------------------------------------------------------------------

/// The extensions recorded by these transitions' events, as the operator reads them back.
fn extensions_of(transitions: &[&Transition]) -> Vec<PastExtension> {
    PastExtension::in_force(transitions.iter().flat_map(|transition| {
        transition.events.iter().map(|event| {
            (
                event.kind.as_str(),
                event.effective_on,
                event.line_ref.as_deref(),
                &event.details,
            )
        })
    }))
}

/// NCRC example 1 with a seat that moves with the contract, billed monthly (a half month in
/// December, prorated), extended by the sweep of 1 Dec 2025.
fn extended_ncrc() -> (Contract, Transition) {
    let mut schedules = monthly_2025("seat", 3100, 0);
    schedules[11]["period_end"] = json!("2025-12-15");
    schedules[11]["amount_minor"] = json!(prorate(3100, 15, 31));
    let c = contract(
        json!({
            "end_date": "2025-12-15",
            "cancellation_window": "end_of_term",
            "auto_extend": true,
            "extension_term": "1Y",
            "proration": "actual_days",
            "lines": [{"ref": "seat", "kind": "recurring_fixed", "billable": true,
                "start_date": "2025-01-01", "end_date": "2025-12-15", "auto_extend": true,
                "amount_minor": 3100, "currency": "EUR", "billing_period": "1M"}],
            "schedules": schedules,
        }),
        "2025-11-01",
    );
    let extended = auto_extend(&c, date("2025-11-16")).expect("the sweep extends it");
    assert_eq!(extended.contract.end_date, Some(date("2026-12-15")));
    (c, extended)
}

#[test]
fn backdated_cancel_undoes_the_extension_and_restores_the_schedules_exactly() {
    let (before, extended) = extended_ncrc();
    let extensions = extensions_of(&[&extended]);
    assert_eq!(extensions.len(), 1);
    let t = cancel_with_history(
        &extended.contract,
        &received("2025-11-14"),
        &extensions,
        date("2025-11-20"),
        &policy(),
    )
    .unwrap();
    let kinds: Vec<EventKind> = t.events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::ExtensionReverted,
            EventKind::CancellationRegistered
        ]
    );
    assert_eq!(
        t.events[0].details,
        json!({
            "from": "2025-12-15", "to": "2026-12-15", "terms": 1,
            "reason": "backdated_cancellation", "received_on": "2025-11-14",
            "extended_on": "2025-11-16", "lines_moved_back": ["seat"],
            "schedules_deleted": 12,
        })
    );
    assert_eq!(t.contract.end_date, Some(date("2025-12-15")));
    assert_eq!(t.contract.lines, {
        let mut lines = before.lines.clone();
        lines[0].cancellation = None;
        lines
    });
    assert_eq!(
        t.contract.schedules, before.schedules,
        "the reopened half month is cut again"
    );
    assert_eq!(
        t.contract.cancellation.unwrap().end_date,
        date("2025-12-15")
    );
}

#[test]
fn backdated_cancel_received_after_the_deadline_is_late_whether_or_not_the_sweep_ran() {
    let (before, extended) = extended_ncrc();
    let extensions = extensions_of(&[&extended]);
    let mut request = received("2025-11-16");
    request.end_date = Some(date("2025-12-15"));
    for (contract, extensions) in [(&before, &[][..]), (&extended.contract, &extensions[..])] {
        let error = cancel_with_history(
            contract,
            &request,
            extensions,
            date("2025-11-20"),
            &policy(),
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "contract 'C-1': end_date 2025-12-15 needs notice by 2025-11-15 (received \
             2025-11-16); the next possible end date is 2026-12-15, deadline 2026-11-15"
        );
    }
}

#[test]
fn backdated_cancel_limits_on_the_received_date() {
    let (_, extended) = extended_ncrc();
    let extensions = extensions_of(&[&extended]);
    let today = date("2026-03-01");
    let mut request = received("2024-12-31");
    let error = cancel_with_history(&extended.contract, &request, &extensions, today, &policy())
        .unwrap_err();
    assert!(
        matches!(error, ActionError::ReceivedBeforeStart { .. }),
        "{error}"
    );
    request.received_on = Some(date("2025-11-14"));
    request.max_backdate = Some(Period::parse("90D").unwrap());
    let error = cancel_with_history(&extended.contract, &request, &extensions, today, &policy())
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "contract 'C-1': received_on 2025-11-14 is further back than \
         cancellations.max_backdate (90D) allows: the earliest received date accepted today \
         (2026-03-01) is 2025-12-01; check the date, or override the limit"
    );
    request.override_notice = true;
    request.end_date = Some(date("2025-12-15"));
    let t =
        cancel_with_history(&extended.contract, &request, &extensions, today, &policy()).unwrap();
    assert_eq!(t.contract.status, ContractStatus::Cancelled);
    assert_eq!(t.contract.end_date, Some(date("2025-12-15")));
    let executed = t
        .events
        .iter()
        .find(|e| e.kind == EventKind::CancellationExecuted)
        .unwrap();
    assert_eq!(
        executed.effective_on,
        date("2025-12-16"),
        "as the sweep would have"
    );
}

#[test]
fn an_undone_extension_no_longer_counts_and_a_moved_end_date_is_refused() {
    let (_, extended) = extended_ncrc();
    let undo = cancel_with_history(
        &extended.contract,
        &received("2025-11-14"),
        &extensions_of(&[&extended]),
        date("2025-11-20"),
        &policy(),
    )
    .unwrap();
    assert!(extensions_of(&[&extended, &undo]).is_empty());

    let mut moved = extended.contract.clone();
    moved.end_date = Some(date("2026-06-30"));
    let error = cancel_with_history(
        &moved,
        &received("2025-11-14"),
        &extensions_of(&[&extended]),
        date("2025-11-20"),
        &policy(),
    )
    .unwrap_err();
    assert!(
        matches!(error, ActionError::EndDateChangedSinceReceived { .. }),
        "{error}"
    );
}
