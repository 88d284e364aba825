//! The operator actions of docs/rules.md section 6 as operators use them: the real binary's
//! `cancel`, `end` and `revoke` (with the hidden `--now` fixing "today"), then `run --as-of` the
//! days after, checked through `export`, `show` and `history`. The examples of the three seed pages
//! by name: NCRC's three notice examples, Nexudus's "cancellation date 15 May" and admin cancel
//! with a final invoice, and every bullet of Billing Central's "Ending Contracts". Refusals exit 3
//! and change nothing; database failures exit 1 and change nothing. Every test runs on SQLite and
//! PostgreSQL, each on a brand-new database.

use crate::action_helpers::{
    act, act_with_env, assert_unchanged, cure, expect_events, expect_field, expect_fields, history,
    kinds, poison, report_lines, run_as_of, snapshot,
};
use crate::harness::{changed, TestDb};
use crate::support::Backend;
use serde_json::{json, Value};

crate::both_databases! {
    backend: [
        ncrc_example_1_one_month_notice_till_end_of_contract,
        ncrc_example_2_one_month_notice_till_end_of_year_deadline_30_11,
        ncrc_example_3_no_notice_till_end_of_month,
        late_cancellation_with_an_end_date_names_the_deadline_and_changes_nothing,
        bulk_cancel_reports_each_ref_on_its_own_line,
        override_ignores_notice_and_minimum_term,
        immediately_ends_today_and_executes_at_once,
        end_date_before_today_executes_at_once,
        cancel_cutting_a_billed_period_is_refused_when_registered,
        final_invoice_bills_the_planned_schedules_on_execution,
        line_cancellation_only_for_billable_lines,
        nexudus_cancellation_date_15_may_is_end_date_14_may,
        billing_central_end_early_in_the_future_stays_active_until_the_day_after,
        billing_central_end_early_in_the_past_expires_at_once,
        billing_central_end_early_refusals_change_nothing,
        billing_central_end_before_billed_to_credits_the_billed_difference,
        revoke_restores_auto_extend_and_recomputes_the_dates,
        revoke_a_line_cancellation,
        database_failure_during_an_action_exits_1_and_changes_nothing,
        run_exits_1_when_a_job_fails_and_0_after_the_retry_pause,
        timely_cancellation_entered_after_the_auto_extension_ends_at_the_old_term,
    ],
}

// ---------------------------------------------------------------------------------------------
// Contracts
// ---------------------------------------------------------------------------------------------

/// NCRC example 1: "Cancellation Period: 1M, Allowed Cancellation: Till end of contract";
/// extended by a year when not cancelled in time.
pub(crate) fn ncrc_end_of_contract(reference: &str) -> Value {
    json!({
        "ref": reference,
        "customer": "Bakery Müller",
        "time_zone": "Europe/Berlin",
        "start_date": "2025-01-01",
        "end_date": "2025-12-31",
        "notice_period": "1M",
        "cancellation_window": "end_of_term",
        "auto_extend": true,
        "extension_term": "1Y",
    })
}

/// NCRC example 2: "Cancellation Period: 1M, Allowed Cancellation: Till end of a year".
fn ncrc_end_of_year(reference: &str) -> Value {
    json!({
        "ref": reference,
        "customer": "Hotel Alpenblick",
        "time_zone": "Europe/Vienna",
        "start_date": "2024-03-01",
        "notice_period": "1M",
        "cancellation_window": "end_of_year",
        "auto_extend": false,
    })
}

/// NCRC example 3: "Cancellation Period: -, Allowed Cancellation: Till end of the month".
fn ncrc_end_of_month(reference: &str) -> Value {
    json!({
        "ref": reference,
        "customer": "Print Shop Nord",
        "time_zone": "Europe/Berlin",
        "start_date": "2025-06-01",
        "cancellation_window": "end_of_month",
        "auto_extend": false,
    })
}

/// A line of the import format.
pub(crate) fn line(reference: &str, kind: &str, billable: bool, start: &str, amount: i64) -> Value {
    json!({
        "ref": reference,
        "description": format!("{reference} line"),
        "kind": kind,
        "billable": billable,
        "start_date": start,
        "amount_minor": amount,
        "currency": "EUR",
        "billing_period": if kind == "one_time" { Value::Null } else { json!("1M") },
    })
}

/// A schedule of the import format; billed on `document` when one is given.
pub(crate) fn schedule(
    line_ref: &str,
    start: &str,
    end: &str,
    amount: i64,
    document: Option<&str>,
) -> Value {
    json!({
        "line_ref": line_ref,
        "period_start": start,
        "period_end": end,
        "amount_minor": amount,
        "status": if document.is_some() { "billed" } else { "planned" },
        "document": document,
    })
}

/// A document of the import format.
pub(crate) fn document(reference: &str, kind: &str, status: &str, amount: i64) -> Value {
    json!({
        "ref": reference,
        "kind": kind,
        "status": status,
        "consolidated": false,
        "amount_minor": amount,
        "currency": "EUR",
    })
}

/// A pending cancellation of the import format.
fn pending(received_on: &str, end_date: &str, restore_auto_extend: bool) -> Value {
    json!({
        "received_on": received_on,
        "end_date": end_date,
        "reason": "moving",
        "notes": "registered by another system",
        "restore_auto_extend": restore_auto_extend,
    })
}

/// An open-ended monthly desk from 2025-01-01, cancellable at each month's end without
/// notice, prorated by actual days: October billed, November to January planned, 3100 a
/// month (100 a day in 31-day months).
fn monthly_desk(reference: &str) -> Value {
    json!({
        "ref": reference,
        "customer": "Coworking member",
        "time_zone": "Europe/Berlin",
        "start_date": "2025-01-01",
        "cancellation_window": "end_of_month",
        "auto_extend": false,
        "lines": [line("desk", "recurring_fixed", true, "2025-01-01", 3100)],
        "schedules": [
            schedule("desk", "2025-10-01", "2025-10-31", 3100, Some("INV-10")),
            schedule("desk", "2025-11-01", "2025-11-30", 3100, None),
            schedule("desk", "2025-12-01", "2025-12-31", 3100, None),
            schedule("desk", "2026-01-01", "2026-01-31", 3100, None),
        ],
        "documents": [document("INV-10", "invoice", "complete", 3100)],
    })
}

/// Billing Central's contract: a year with auto extension and actual-days proration; a seat
/// (1000 a month; August billed on a complete invoice, September on a draft one), quarterly
/// usage, an add-on from November; a complete credit note, a draft and a complete renewal,
/// and a change request of every status.
fn billing_central(reference: &str) -> Value {
    let mut addon = line("addon", "recurring_fixed", true, "2025-11-01", 500);
    addon["end_date"] = json!("2025-12-31");
    let mut usage = line("usage", "recurring_usage", true, "2025-01-01", 0);
    usage["billing_period"] = json!("1Q");
    let mut seat = line("seat", "recurring_fixed", true, "2025-01-01", 1000);
    seat["end_date"] = json!("2025-12-31");
    seat["auto_extend"] = json!(true);
    json!({
        "ref": reference,
        "customer": "Contoso Ltd",
        "time_zone": "Europe/Berlin",
        "start_date": "2025-01-01",
        "end_date": "2025-12-31",
        "notice_period": "1M",
        "cancellation_window": "end_of_term",
        "auto_extend": true,
        "extension_term": "1Y",
        "proration": "actual_days",
        "lines": [seat, usage, addon],
        "schedules": [
            schedule("seat", "2025-08-01", "2025-08-31", 1000, Some("INV-8")),
            schedule("seat", "2025-09-01", "2025-09-30", 1000, Some("INV-9-DRAFT")),
            schedule("seat", "2025-10-01", "2025-10-31", 1000, None),
            schedule("seat", "2025-11-01", "2025-11-30", 1000, None),
            schedule("seat", "2025-12-01", "2025-12-31", 1000, None),
            schedule("usage", "2025-10-01", "2025-12-31", 900, None),
            schedule("addon", "2025-11-01", "2025-11-30", 500, None),
            schedule("addon", "2025-12-01", "2025-12-31", 500, None),
        ],
        "documents": [
            document("INV-8", "invoice", "complete", 1000),
            document("INV-9-DRAFT", "invoice", "draft", 1000),
            document("CN-OLD", "credit_note", "complete", 250),
        ],
        "renewals": [
            {"ref": "REN-DRAFT", "status": "draft"},
            {"ref": "REN-DONE", "status": "complete"},
        ],
        "change_requests": [
            {"ref": "CR-DRAFT", "status": "draft"},
            {"ref": "CR-PENDING", "status": "pending"},
            {"ref": "CR-APPROVED", "status": "approved"},
            {"ref": "CR-REJECTED", "status": "rejected"},
            {"ref": "CR-APPLIED", "status": "applied"},
        ],
    })
}

/// `record` with a value appended to the array at `pointer`.
fn pushed(mut record: Value, pointer: &str, value: Value) -> Value {
    record
        .pointer_mut(pointer)
        .and_then(Value::as_array_mut)
        .unwrap_or_else(|| panic!("no array at {pointer}"))
        .push(value);
    record
}

/// The refs of the objects in the array at `pointer` of an exported record.
fn refs_at(record: &Value, pointer: &str) -> Vec<String> {
    record
        .pointer(pointer)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("no array at {pointer}: {record}"))
        .iter()
        .map(|item| item["ref"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// The exported line `reference` of a record.
fn line_of<'a>(record: &'a Value, reference: &str) -> &'a Value {
    record["lines"]
        .as_array()
        .and_then(|lines| lines.iter().find(|line| line["ref"] == reference))
        .unwrap_or_else(|| panic!("no line '{reference}' in {record}"))
}

/// The exported document `reference` of a record.
fn document_of<'a>(record: &'a Value, reference: &str) -> &'a Value {
    record["documents"]
        .as_array()
        .and_then(|documents| documents.iter().find(|doc| doc["ref"] == reference))
        .unwrap_or_else(|| panic!("no document '{reference}' in {record:#}"))
}

/// The schedules of a record as (line, start, end, amount, status, document) tuples.
pub(crate) fn schedules_of(
    record: &Value,
) -> Vec<(String, String, String, i64, String, Option<String>)> {
    record["schedules"]
        .as_array()
        .expect("schedules")
        .iter()
        .map(|s| {
            (
                s["line_ref"].as_str().expect("line_ref").to_string(),
                s["period_start"].as_str().expect("start").to_string(),
                s["period_end"].as_str().expect("end").to_string(),
                s["amount_minor"].as_i64().expect("amount"),
                s["status"].as_str().expect("status").to_string(),
                s["document"].as_str().map(str::to_string),
            )
        })
        .collect()
}

/// One expected schedule tuple.
pub(crate) fn sched(
    line: &str,
    start: &str,
    end: &str,
    amount: i64,
    status: &str,
    document: Option<&str>,
) -> (String, String, String, i64, String, Option<String>) {
    (
        line.into(),
        start.into(),
        end.into(),
        amount,
        status.into(),
        document.map(str::to_string),
    )
}

/// A registered cancellation that has not executed: active, pending with these dates,
/// auto extension off, the pending end date as the cancellation date and no deadline.
pub(crate) fn expect_registered(
    db: &TestDb,
    reference: &str,
    received_on: &str,
    end_date: &str,
) -> Value {
    let record = db.exported(reference);
    expect_fields(
        &record,
        &[
            ("/status", json!("active")),
            ("/cancellation/received_on", json!(received_on)),
            ("/cancellation/end_date", json!(end_date)),
            ("/auto_extend", json!(false)),
            ("/cancellation_date", json!(end_date)),
            ("/latest_cancellation_date", Value::Null),
        ],
    );
    record
}

/// An executed cancellation: cancelled at `end_date`, nothing pending, no computed dates,
/// and exactly one `cancellation_executed` event, effective on `executed_on`.
pub(crate) fn expect_cancelled(
    db: &TestDb,
    reference: &str,
    end_date: &str,
    executed_on: &str,
) -> Value {
    let record = db.exported(reference);
    expect_fields(
        &record,
        &[
            ("/status", json!("cancelled")),
            ("/end_date", json!(end_date)),
            ("/cancellation", Value::Null),
            ("/auto_extend", json!(false)),
            ("/cancellation_date", Value::Null),
            ("/latest_cancellation_date", Value::Null),
        ],
    );
    let executed = expect_events(db, reference, "cancellation_executed", 1);
    assert_eq!(
        executed[0].effective_on, executed_on,
        "contract '{reference}': cancellation_executed effective_on: {}",
        executed[0].text
    );
    record
}

// ---------------------------------------------------------------------------------------------
// NCRC: "Working With Cancellation", the three examples, end to end.
// ---------------------------------------------------------------------------------------------

/// Example 1: "the termination must be submitted no later than 1 month before the end date
/// of the Contract". Received on 22 Nov it ends on 31 Dec; received on the deadline, 30 Nov
/// (22:30 UTC is 23:30 in Berlin: "today" is the date in the contract's zone), it still does.
/// Nothing happens on the end date itself; the day after, the sweep executes it.
fn ncrc_example_1_one_month_notice_till_end_of_contract(backend: Backend) {
    let db = TestDb::new(backend);
    db.import_ok(&[
        ncrc_end_of_contract("NCRC-1"),
        ncrc_end_of_contract("NCRC-1-ON-DEADLINE"),
        ncrc_end_of_contract("NCRC-1-TOO-LATE"),
    ]);

    let outcome = act(
        &db,
        "cancel",
        &[
            "NCRC-1",
            "--reason",
            "too_expensive",
            "--notes",
            "called on the phone",
        ],
        "2025-11-22",
    );
    outcome.expect_code(0);
    assert!(
        outcome
            .stdout
            .starts_with("NCRC-1: cancellation_registered")
            && outcome
                .stdout
                .contains("ends 2025-12-31 (received 2025-11-22)"),
        "cancel NCRC-1 report: {}",
        outcome.stdout
    );
    let record = expect_registered(&db, "NCRC-1", "2025-11-22", "2025-12-31");
    expect_fields(
        &record,
        &[
            ("/end_date", json!("2025-12-31")),
            ("/cancellation/reason", json!("too_expensive")),
            ("/cancellation/notes", json!("called on the phone")),
            ("/cancellation/restore_auto_extend", json!(true)),
            ("/cancellation/final_invoice", json!(false)),
        ],
    );
    let shown = db.run(&["show", "NCRC-1"]);
    shown.expect_code(0);
    let shown: Value = serde_json::from_str(&shown.stdout).expect("show prints JSON");
    assert_eq!(shown, record, "contract 'NCRC-1': show differs from export");
    assert_eq!(
        kinds(&db, "NCRC-1"),
        ["imported", "cancellation_registered"],
        "contract 'NCRC-1': history"
    );

    act(
        &db,
        "cancel",
        &["NCRC-1-ON-DEADLINE"],
        "2025-11-30T22:30:00Z",
    )
    .expect_code(0);
    expect_registered(&db, "NCRC-1-ON-DEADLINE", "2025-11-30", "2025-12-31");

    // One day too late: the contract runs to the end of the next term, to which it is
    // extended at once.
    let outcome = act(&db, "cancel", &["NCRC-1-TOO-LATE"], "2025-12-01");
    outcome.expect_code(0);
    assert!(
        outcome
            .stdout
            .starts_with("NCRC-1-TOO-LATE: extended, cancellation_registered"),
        "{}",
        outcome.stdout
    );
    let record = expect_registered(&db, "NCRC-1-TOO-LATE", "2025-12-01", "2026-12-31");
    expect_field(&record, "/end_date", json!("2026-12-31"));

    // The end date is the last day of service: nothing executes on it, and the pending
    // cancellation keeps the auto extension (deadline 30 Nov passed) from running.
    run_as_of(&db, "2025-12-31");
    expect_registered(&db, "NCRC-1", "2025-11-22", "2025-12-31");
    expect_registered(&db, "NCRC-1-ON-DEADLINE", "2025-11-30", "2025-12-31");

    run_as_of(&db, "2026-01-01");
    for reference in ["NCRC-1", "NCRC-1-ON-DEADLINE"] {
        let record = expect_cancelled(&db, reference, "2025-12-31", "2026-01-01");
        // The end date did not change, so there is no original end date to keep.
        expect_field(&record, "/original_end_date", Value::Null);
    }
    expect_registered(&db, "NCRC-1-TOO-LATE", "2025-12-01", "2026-12-31");
    let record = db.exported("NCRC-1");
    expect_fields(
        &record,
        &[
            ("/end_reason", json!("too_expensive")),
            ("/end_notes", json!("called on the phone")),
        ],
    );
    // Sweeping the same day again, or a later one, executes nothing a second time.
    db.run(&["run", "--as-of", "2026-01-01"]).expect_code(0);
    run_as_of(&db, "2026-01-02");
    expect_cancelled(&db, "NCRC-1", "2025-12-31", "2026-01-01");
}

/// Example 2: "The cancellation must be submitted at least 1 month before the end of the
/// year, i.e. 30.11.XX". Received 22 Nov 2025 → ends 31 Dec 2025; received 1 Dec 2025 →
/// ends 31 Dec 2026; received on 30 Nov but registered on 1 Dec (`--received-on`) → still
/// 31 Dec 2025.
fn ncrc_example_2_one_month_notice_till_end_of_year_deadline_30_11(backend: Backend) {
    let db = TestDb::new(backend);
    db.import_ok(&[
        ncrc_end_of_year("YEAR-NOV"),
        ncrc_end_of_year("YEAR-DEC"),
        ncrc_end_of_year("YEAR-ON-DEADLINE"),
    ]);
    act(&db, "cancel", &["YEAR-NOV"], "2025-11-22").expect_code(0);
    act(&db, "cancel", &["YEAR-DEC"], "2025-12-01").expect_code(0);
    act(
        &db,
        "cancel",
        &["YEAR-ON-DEADLINE", "--received-on", "2025-11-30"],
        "2025-12-01",
    )
    .expect_code(0);
    expect_registered(&db, "YEAR-NOV", "2025-11-22", "2025-12-31");
    expect_registered(&db, "YEAR-DEC", "2025-12-01", "2026-12-31");
    expect_registered(&db, "YEAR-ON-DEADLINE", "2025-11-30", "2025-12-31");

    run_as_of(&db, "2026-01-01");
    for reference in ["YEAR-NOV", "YEAR-ON-DEADLINE"] {
        let record = expect_cancelled(&db, reference, "2025-12-31", "2026-01-01");
        // An open-ended contract had no end date to remember.
        expect_field(&record, "/original_end_date", Value::Null);
    }
    expect_registered(&db, "YEAR-DEC", "2025-12-01", "2026-12-31");
    expect_events(&db, "YEAR-DEC", "cancellation_executed", 0);

    run_as_of(&db, "2026-12-31");
    expect_registered(&db, "YEAR-DEC", "2025-12-01", "2026-12-31");
    run_as_of(&db, "2027-01-01");
    expect_cancelled(&db, "YEAR-DEC", "2026-12-31", "2027-01-01");
    expect_cancelled(&db, "YEAR-NOV", "2025-12-31", "2026-01-01");
}

/// Example 3: "The notice of cancellation can thus be submitted monthly": without notice,
/// a cancellation received any day of November ends on 30 November, even on the 30th.
fn ncrc_example_3_no_notice_till_end_of_month(backend: Backend) {
    let db = TestDb::new(backend);
    db.import_ok(&[
        ncrc_end_of_month("MONTH"),
        ncrc_end_of_month("MONTH-LAST-DAY"),
    ]);
    act(
        &db,
        "cancel",
        &["MONTH", "--reason", "closing"],
        "2025-11-22",
    )
    .expect_code(0);
    act(&db, "cancel", &["MONTH-LAST-DAY"], "2025-11-30").expect_code(0);
    expect_registered(&db, "MONTH", "2025-11-22", "2025-11-30");
    expect_registered(&db, "MONTH-LAST-DAY", "2025-11-30", "2025-11-30");
    expect_field(&db.exported("MONTH"), "/notice_period", json!("0D"));

    run_as_of(&db, "2025-11-30");
    expect_registered(&db, "MONTH", "2025-11-22", "2025-11-30");
    run_as_of(&db, "2025-12-01");
    for reference in ["MONTH", "MONTH-LAST-DAY"] {
        expect_cancelled(&db, reference, "2025-11-30", "2025-12-01");
    }
    expect_field(&db.exported("MONTH"), "/end_reason", json!("closing"));
}

// ---------------------------------------------------------------------------------------------
// Refusals of cancel and bulk reporting
// ---------------------------------------------------------------------------------------------

/// A requested end date whose deadline was missed (or that is not a possible end date) is
/// refused with exit 3, naming the contract, the field, the missed deadline and the next
/// possible end date with its deadline; nothing is written.
fn late_cancellation_with_an_end_date_names_the_deadline_and_changes_nothing(backend: Backend) {
    let db = TestDb::new(backend);
    let mut month_with_notice = ncrc_end_of_month("MONTH-1M");
    month_with_notice["notice_period"] = json!("1M");
    db.import_ok(&[ncrc_end_of_contract("LATE"), month_with_notice]);
    let before = snapshot(&db, &["LATE", "MONTH-1M"]);

    let cases: [(&[&str], &str, &[&str]); 5] = [
        (
            &["LATE", "--end-date", "2025-12-31", "--reason", "late"],
            "2025-12-01",
            &[
                "contract 'LATE'",
                "end_date 2025-12-31 needs notice by 2025-11-30 (received 2025-12-01)",
                "the next possible end date is 2026-12-31, deadline 2026-11-30",
            ],
        ),
        // Received late but registered even later: notice counts from the received date.
        (
            &[
                "LATE",
                "--end-date",
                "2025-12-31",
                "--received-on",
                "2025-12-02",
            ],
            "2025-12-10",
            &[
                "contract 'LATE'",
                "needs notice by 2025-11-30 (received 2025-12-02)",
                "next possible end date is 2026-12-31, deadline 2026-11-30",
            ],
        ),
        // docs/rules.md section 4: 30 Nov needed notice by 31 Oct.
        (
            &["MONTH-1M", "--end-date", "2025-11-30"],
            "2025-11-22",
            &[
                "contract 'MONTH-1M'",
                "end_date 2025-11-30 needs notice by 2025-10-31 (received 2025-11-22)",
                "the next possible end date is 2025-12-31, deadline 2025-11-30",
            ],
        ),
        (
            &["MONTH-1M", "--end-date", "2025-12-15"],
            "2025-11-22",
            &[
                "contract 'MONTH-1M'",
                "end_date 2025-12-15 is not a possible end date (cancellation_window end_of_month)",
                "the next possible end date is 2025-12-31, deadline 2025-11-30",
            ],
        ),
        (
            &["MONTH-1M", "--received-on", "2025-11-23"],
            "2025-11-22",
            &[
                "contract 'MONTH-1M'",
                "received_on 2025-11-23 is after today (2025-11-22)",
            ],
        ),
    ];
    for (args, now, needles) in cases {
        let outcome = act(&db, "cancel", args, now);
        outcome.expect_code(3).expect_stderr(needles);
        assert_eq!(outcome.stdout, "", "cancel {args:?} reported a change");
        assert_unchanged(&db, &before, &format!("the refused cancel {args:?}"));
    }
}

/// Bulk cancel: each ref is tried on its own and reported on its own line; one unknown ref
/// and one with a pending cancellation make the exit code 3 while the good one is
/// registered. When all succeed, exit 0.
fn bulk_cancel_reports_each_ref_on_its_own_line(backend: Backend) {
    let db = TestDb::new(backend);
    let already = changed(
        ncrc_end_of_month("ALREADY"),
        &[("/cancellation", pending("2025-11-02", "2025-11-30", false))],
    );
    db.import_ok(&[
        ncrc_end_of_month("GOOD"),
        already,
        ncrc_end_of_month("BULK-A"),
        ncrc_end_of_month("BULK-B"),
        ncrc_end_of_month("BULK-C"),
    ]);
    let before = snapshot(&db, &["ALREADY"]);

    let outcome = act(
        &db,
        "cancel",
        &["GOOD", "MISSING", "ALREADY", "--reason", "bulk"],
        "2025-11-22",
    );
    outcome.expect_code(3);
    let done: Vec<&str> = outcome.stdout.lines().collect();
    assert_eq!(done.len(), 1, "one ref succeeded:\n{}", outcome.stdout);
    assert!(
        done[0].starts_with("GOOD: cancellation_registered"),
        "{}",
        done[0]
    );
    let failed = report_lines(&outcome);
    assert_eq!(
        failed.len(),
        2,
        "two refs failed, one line each:\n{}",
        outcome.stderr
    );
    assert!(
        failed[0].contains("contract 'MISSING'")
            && failed[0].contains("no such contract")
            && !failed[0].contains("ALREADY"),
        "{}",
        failed[0]
    );
    assert!(
        failed[1].contains("contract 'ALREADY'")
            && failed[1].contains("cancellation")
            && failed[1].contains("ending 2025-11-30 is already pending")
            && !failed[1].contains("MISSING"),
        "{}",
        failed[1]
    );
    outcome.expect_stderr(&["2 of 3 contract(s) not changed"]);
    expect_registered(&db, "GOOD", "2025-11-22", "2025-11-30");
    expect_field(&db.exported("GOOD"), "/cancellation/reason", json!("bulk"));
    assert_unchanged(&db, &before, "the bulk cancel");

    let outcome = act(&db, "cancel", &["BULK-A", "BULK-B", "BULK-C"], "2025-11-22");
    outcome.expect_code(0);
    let done: Vec<&str> = outcome.stdout.lines().collect();
    assert_eq!(done.len(), 3, "three reports:\n{}", outcome.stdout);
    for (line, reference) in done.iter().zip(["BULK-A", "BULK-B", "BULK-C"]) {
        assert!(
            line.starts_with(&format!("{reference}: cancellation_registered")),
            "{line}"
        );
        expect_registered(&db, reference, "2025-11-22", "2025-11-30");
    }
    assert!(
        report_lines(&outcome).is_empty(),
        "nothing failed: {}",
        outcome.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// Override, immediately, past end dates, final invoice, lines
// ---------------------------------------------------------------------------------------------

/// `--override` (Nexudus admin cancel) ignores the notice period and the minimum term:
/// without it the end date is refused; with it the cancellation is registered and the sweep
/// executes it the day after. Without `--end-date` it ends today.
fn override_ignores_notice_and_minimum_term(backend: Backend) {
    let db = TestDb::new(backend);
    let minimum = json!({
        "ref": "MIN-TERM",
        "customer": "Locked In GmbH",
        "time_zone": "Europe/Berlin",
        "start_date": "2025-01-01",
        "end_date": "2026-12-31",
        "minimum_term_end": "2026-06-30",
        "notice_period": "3M",
        "cancellation_window": "end_of_term",
        "auto_extend": false,
    });
    let mut today = minimum.clone();
    today["ref"] = json!("MIN-TODAY");
    db.import_ok(&[minimum, today]);
    let before = snapshot(&db, &["MIN-TERM"]);
    act(
        &db,
        "cancel",
        &["MIN-TERM", "--end-date", "2025-12-15"],
        "2025-11-22",
    )
    .expect_code(3)
    .expect_stderr(&[
        "contract 'MIN-TERM'",
        "end_date 2025-12-15 is before minimum_term_end 2026-06-30",
        "--override",
    ]);
    assert_unchanged(&db, &before, "the refused cancel");

    act(
        &db,
        "cancel",
        &["MIN-TERM", "--end-date", "2025-12-15", "--override"],
        "2025-11-22",
    )
    .expect_code(0);
    expect_registered(&db, "MIN-TERM", "2025-11-22", "2025-12-15");
    let registered = history(&db, "MIN-TERM");
    assert!(
        registered[1].text.contains("\"override\":true"),
        "contract 'MIN-TERM': the registration records the override: {}",
        registered[1].text
    );

    act(&db, "cancel", &["MIN-TODAY", "--override"], "2025-11-22").expect_code(0);
    // Ending today is not before today: it waits for the sweep of tomorrow.
    expect_registered(&db, "MIN-TODAY", "2025-11-22", "2025-11-22");

    run_as_of(&db, "2025-11-23");
    let record = expect_cancelled(&db, "MIN-TODAY", "2025-11-22", "2025-11-23");
    expect_field(&record, "/original_end_date", json!("2026-12-31"));
    expect_registered(&db, "MIN-TERM", "2025-11-22", "2025-12-15");
    run_as_of(&db, "2025-12-16");
    let record = expect_cancelled(&db, "MIN-TERM", "2025-12-15", "2025-12-16");
    expect_field(&record, "/original_end_date", json!("2026-12-31"));
}

/// `--immediately` ends the contract today and executes at once: cancelled right away,
/// billable lines cancelled, the others expired. It conflicts with another end date, is
/// refused for billed periods beyond today, and a cancelled contract cannot be cancelled.
fn immediately_ends_today_and_executes_at_once(backend: Backend) {
    let db = TestDb::new(backend);
    let with_lines = |reference: &str| {
        changed(
            ncrc_end_of_contract(reference),
            &[(
                "/lines",
                json!([
                    line("desk", "recurring_fixed", true, "2025-01-01", 3000),
                    line("coffee", "recurring_fixed", false, "2025-01-01", 0),
                ]),
            )],
        )
    };
    let billed = changed(
        with_lines("IMM-BILLED"),
        &[
            (
                "/schedules",
                json!([schedule(
                    "desk",
                    "2025-11-01",
                    "2025-11-30",
                    3000,
                    Some("INV-11")
                )]),
            ),
            (
                "/documents",
                json!([document("INV-11", "invoice", "complete", 3000)]),
            ),
        ],
    );
    db.import_ok(&[with_lines("IMM"), billed]);
    let before = snapshot(&db, &["IMM", "IMM-BILLED"]);

    act(
        &db,
        "cancel",
        &["IMM", "--immediately", "--end-date", "2025-12-31"],
        "2025-11-22",
    )
    .expect_code(3)
    .expect_stderr(&[
        "contract 'IMM'",
        "end_date 2025-12-31 conflicts with --immediately",
    ]);
    act(
        &db,
        "cancel",
        &["IMM-BILLED", "--immediately"],
        "2025-11-22",
    )
    .expect_code(3)
    .expect_stderr(&[
        "contract 'IMM-BILLED'",
        "schedules[0]",
        "line 'desk' is billed on 'INV-11' for 2025-11-01..2025-11-30, beyond the end date \
             2025-11-22",
        "allow_end_before_billed_to",
    ]);
    assert_unchanged(&db, &before, "the refused immediate cancels");

    let outcome = act(
        &db,
        "cancel",
        &["IMM", "--immediately", "--reason", "moving"],
        "2025-11-22",
    );
    outcome.expect_code(0);
    assert!(
        outcome.stdout.contains("cancellation_executed")
            && outcome.stdout.contains("status cancelled"),
        "contract 'IMM': the report says it executed: {}",
        outcome.stdout
    );
    let record = expect_cancelled(&db, "IMM", "2025-11-22", "2025-11-22");
    expect_fields(
        &record,
        &[
            ("/original_end_date", json!("2025-12-31")),
            ("/end_reason", json!("moving")),
        ],
    );
    expect_fields(
        line_of(&record, "desk"),
        &[
            ("/status", json!("cancelled")),
            ("/end_date", json!("2025-11-22")),
        ],
    );
    expect_fields(
        line_of(&record, "coffee"),
        &[
            ("/status", json!("expired")),
            ("/end_date", json!("2025-11-22")),
        ],
    );
    assert_eq!(
        kinds(&db, "IMM"),
        [
            "imported",
            "cancellation_registered",
            "cancellation_executed"
        ],
        "contract 'IMM': history"
    );

    let before = snapshot(&db, &["IMM"]);
    act(&db, "cancel", &["IMM", "--immediately"], "2025-11-23")
        .expect_code(3)
        .expect_stderr(&["contract 'IMM'", "status is cancelled"]);
    assert_unchanged(&db, &before, "cancelling a cancelled contract");
    // The sweep has nothing left to execute.
    run_as_of(&db, "2025-11-23");
    expect_cancelled(&db, "IMM", "2025-11-22", "2025-11-22");
}

/// A cancellation received in time whose end date is already past executes at once.
fn end_date_before_today_executes_at_once(backend: Backend) {
    let db = TestDb::new(backend);
    db.import_ok(&[ncrc_end_of_month("PAST")]);
    let outcome = act(
        &db,
        "cancel",
        &[
            "PAST",
            "--received-on",
            "2025-10-20",
            "--end-date",
            "2025-10-31",
            "--notes",
            "letter found late",
        ],
        "2025-11-22",
    );
    outcome.expect_code(0);
    // Executed as the sweep of the day after the end date would have: effective 1 Nov.
    let record = expect_cancelled(&db, "PAST", "2025-10-31", "2025-11-01");
    expect_field(&record, "/end_notes", json!("letter found late"));
    let events = history(&db, "PAST");
    assert_eq!(
        events
            .iter()
            .map(|event| (event.kind.as_str(), event.effective_on.as_str()))
            .collect::<Vec<_>>()[1..],
        [
            ("cancellation_registered", "2025-11-22"),
            ("cancellation_executed", "2025-11-01"),
        ],
        "contract 'PAST': history"
    );
}

/// The configuration that allows ending inside billed periods (credited with a draft note).
pub(crate) const ALLOW_BILLED: (&str, &str) =
    ("CONTRACTD__BILLING__ALLOW_END_BEFORE_BILLED_TO", "true");

/// A cancellation whose end date cuts a period that was already billed is refused when it is
/// registered, not only when it would execute: otherwise the sweep refuses to execute it every
/// day and the contract stays active past its end date. With `allow_end_before_billed_to` set
/// in the configuration it is registered, and executing it credits the billed difference.
fn cancel_cutting_a_billed_period_is_refused_when_registered(backend: Backend) {
    let db = TestDb::new(backend);
    let billed_november = |reference: &str| {
        changed(
            monthly_desk(reference),
            &[
                ("/schedules/1/status", json!("billed")),
                ("/schedules/1/document", json!("INV-11")),
                (
                    "/documents",
                    json!([
                        document("INV-10", "invoice", "complete", 3100),
                        document("INV-11", "invoice", "complete", 3100),
                    ]),
                ),
            ],
        )
    };
    db.import_ok(&[billed_november("BILLED"), billed_november("BILLED-ALLOWED")]);
    let before = snapshot(&db, &["BILLED"]);
    let args = ["--override", "--end-date", "2025-11-15"];
    let outcome = act(
        &db,
        "cancel",
        &[&["BILLED"][..], &args].concat(),
        "2025-11-10",
    );
    outcome.expect_code(3).expect_stderr(&[
        "contract 'BILLED'",
        "schedules[1]: line 'desk' is billed on 'INV-11' for 2025-11-01..2025-11-30, beyond \
         the end date 2025-11-15",
        "allow_end_before_billed_to",
    ]);
    assert_unchanged(&db, &before, "the refused cancel");
    // The line's own cancellation is held to the same rule.
    let line_args = [&["BILLED", "--line", "desk"][..], &args].concat();
    act(&db, "cancel", &line_args, "2025-11-10")
        .expect_code(3)
        .expect_stderr(&["contract 'BILLED'", "schedules[1]", "INV-11"]);
    assert_unchanged(&db, &before, "the refused line cancel");

    act_with_env(
        &db,
        "cancel",
        &[&["BILLED-ALLOWED"][..], &args].concat(),
        "2025-11-10",
        &[ALLOW_BILLED],
    )
    .expect_code(0);
    expect_registered(&db, "BILLED-ALLOWED", "2025-11-10", "2025-11-15");
    let run = db.run_with_env(&["run", "--as-of", "2025-11-16"], &[ALLOW_BILLED]);
    run.expect_code(0);
    let record = expect_cancelled(&db, "BILLED-ALLOWED", "2025-11-15", "2025-11-16");
    // 15 of 30 days of 3100 = 1550 kept, 1550 credited; December and January deleted.
    assert_eq!(
        schedules_of(&record),
        [
            sched(
                "desk",
                "2025-10-01",
                "2025-10-31",
                3100,
                "billed",
                Some("INV-10")
            ),
            sched(
                "desk",
                "2025-11-01",
                "2025-11-15",
                1550,
                "billed",
                Some("INV-11")
            ),
        ],
        "contract 'BILLED-ALLOWED': schedules"
    );
    assert_eq!(
        document_of(&record, "BILLED-ALLOWED-CN-1"),
        &document("BILLED-ALLOWED-CN-1", "credit_note", "draft", 1550),
        "contract 'BILLED-ALLOWED': the credit note"
    );
}

/// Nexudus "Cancel contract and issue a final invoice": executing the cancellation bills the
/// planned schedules up to the end date, the last one prorated, on one draft invoice; the
/// schedules after the end date are deleted. Without `--final-invoice` they stay planned.
fn final_invoice_bills_the_planned_schedules_on_execution(backend: Backend) {
    let db = TestDb::new(backend);
    db.import_ok(&[monthly_desk("FINAL"), monthly_desk("NO-FINAL")]);
    for (reference, extra) in [("FINAL", Some("--final-invoice")), ("NO-FINAL", None)] {
        let mut args = vec![reference, "--override", "--end-date", "2025-12-15"];
        args.extend(extra);
        act(&db, "cancel", &args, "2025-11-22").expect_code(0);
    }
    expect_field(
        &db.exported("FINAL"),
        "/cancellation/final_invoice",
        json!(true),
    );
    // Registering bills nothing yet.
    assert_eq!(
        db.exported("FINAL")["documents"],
        json!([document("INV-10", "invoice", "complete", 3100)]),
        "contract 'FINAL': documents before the execution"
    );

    run_as_of(&db, "2025-12-16");
    let record = expect_cancelled(&db, "FINAL", "2025-12-15", "2025-12-16");
    assert_eq!(
        schedules_of(&record),
        [
            sched(
                "desk",
                "2025-10-01",
                "2025-10-31",
                3100,
                "billed",
                Some("INV-10")
            ),
            sched(
                "desk",
                "2025-11-01",
                "2025-11-30",
                3100,
                "billed",
                Some("FINAL-FINAL-2")
            ),
            // 15 of 31 days of 3100.
            sched(
                "desk",
                "2025-12-01",
                "2025-12-15",
                1500,
                "billed",
                Some("FINAL-FINAL-2")
            ),
        ],
        "contract 'FINAL': schedules"
    );
    assert_eq!(
        document_of(&record, "FINAL-FINAL-2"),
        &document("FINAL-FINAL-2", "invoice", "draft", 4600),
        "contract 'FINAL': documents[1]"
    );
    expect_events(&db, "FINAL", "final_invoice_created", 1);

    let record = expect_cancelled(&db, "NO-FINAL", "2025-12-15", "2025-12-16");
    assert_eq!(
        schedules_of(&record),
        [
            sched(
                "desk",
                "2025-10-01",
                "2025-10-31",
                3100,
                "billed",
                Some("INV-10")
            ),
            sched("desk", "2025-11-01", "2025-11-30", 3100, "planned", None),
            sched("desk", "2025-12-01", "2025-12-15", 1500, "planned", None),
        ],
        "contract 'NO-FINAL': schedules"
    );
    assert_eq!(
        refs_at(&record, "/documents"),
        ["INV-10"],
        "contract 'NO-FINAL': documents"
    );
    expect_events(&db, "NO-FINAL", "final_invoice_created", 0);
}

/// `--line L` cancels one billable line; the contract goes on. A non-billable or unknown
/// line is refused (exit 3, the line named) and nothing changes.
fn line_cancellation_only_for_billable_lines(backend: Backend) {
    let db = TestDb::new(backend);
    let mut desk = line("desk", "recurring_fixed", true, "2025-06-01", 3000);
    desk["auto_extend"] = json!(true);
    let record = changed(
        ncrc_end_of_month("LINES"),
        &[(
            "/lines",
            json!([
                desk,
                line("coffee", "recurring_fixed", false, "2025-06-01", 0)
            ]),
        )],
    );
    db.import_ok(&[record]);
    let before = snapshot(&db, &["LINES"]);
    act(&db, "cancel", &["LINES", "--line", "coffee"], "2025-11-22")
        .expect_code(3)
        .expect_stderr(&[
            "contract 'LINES' line 'coffee'",
            "billable",
            "only billable lines can be cancelled",
        ]);
    act(&db, "cancel", &["LINES", "--line", "nope"], "2025-11-22")
        .expect_code(3)
        .expect_stderr(&["contract 'LINES'", "there is no line 'nope'"]);
    assert_unchanged(&db, &before, "the refused line cancels");

    act(
        &db,
        "cancel",
        &["LINES", "--line", "desk", "--reason", "fewer desks"],
        "2025-11-22",
    )
    .expect_code(0);
    let record = db.exported("LINES");
    expect_fields(
        &record,
        &[
            ("/status", json!("active")),
            ("/cancellation", Value::Null),
            ("/auto_extend", json!(false)),
        ],
    );
    expect_fields(
        line_of(&record, "desk"),
        &[
            ("/status", json!("active")),
            ("/auto_extend", json!(false)),
            ("/cancellation/received_on", json!("2025-11-22")),
            ("/cancellation/end_date", json!("2025-11-30")),
            ("/cancellation/reason", json!("fewer desks")),
            ("/cancellation/restore_auto_extend", json!(true)),
        ],
    );
    let registered = expect_events(&db, "LINES", "line_cancellation_registered", 1);
    assert_eq!(
        registered[0].line.as_deref(),
        Some("desk"),
        "contract 'LINES': line_cancellation_registered names the line: {}",
        registered[0].text
    );

    run_as_of(&db, "2025-11-30");
    expect_field(
        line_of(&db.exported("LINES"), "desk"),
        "/status",
        json!("active"),
    );
    run_as_of(&db, "2025-12-01");
    let record = db.exported("LINES");
    expect_field(&record, "/status", json!("active"));
    expect_fields(
        line_of(&record, "desk"),
        &[
            ("/status", json!("cancelled")),
            ("/end_date", json!("2025-11-30")),
            ("/cancellation", Value::Null),
        ],
    );
    expect_field(line_of(&record, "coffee"), "/status", json!("active"));
    let executed = expect_events(&db, "LINES", "line_cancellation_executed", 1);
    assert_eq!(executed[0].line.as_deref(), Some("desk"));
    expect_events(&db, "LINES", "cancellation_executed", 0);
}

// ---------------------------------------------------------------------------------------------
// Nexudus: "Scheduling Contracts Cancellations"
// ---------------------------------------------------------------------------------------------

/// "If you set the cancellation date to May 15th, the member … lose[s] access … shortly
/// after May 14th 11:59PM": our end date is 14 May. It is not a month end, so it needs
/// `--override`; `run --as-of 2025-05-14` leaves the contract active, `--as-of 2025-05-15`
/// cancels it and drops the schedule from 15 May.
fn nexudus_cancellation_date_15_may_is_end_date_14_may(backend: Backend) {
    let db = TestDb::new(backend);
    db.import_ok(&[json!({
        "ref": "NEXUDUS-DESK-7",
        "customer": "Ada Lovelace",
        "time_zone": "Europe/London",
        "start_date": "2025-02-15",
        "notice_period": "0D",
        "cancellation_window": "end_of_month",
        "auto_extend": false,
        "lines": [line("desk", "recurring_fixed", true, "2025-02-15", 30000)],
        "schedules": [
            schedule("desk", "2025-04-15", "2025-05-14", 30000, None),
            schedule("desk", "2025-05-15", "2025-06-14", 30000, None),
        ],
    })]);
    let before = snapshot(&db, &["NEXUDUS-DESK-7"]);
    act(
        &db,
        "cancel",
        &["NEXUDUS-DESK-7", "--end-date", "2025-05-14"],
        "2025-05-02",
    )
    .expect_code(3)
    .expect_stderr(&[
        "contract 'NEXUDUS-DESK-7'",
        "end_date 2025-05-14 is not a possible end date",
        "next possible end date is 2025-05-31",
    ]);
    assert_unchanged(&db, &before, "the refused cancel");

    act(
        &db,
        "cancel",
        &[
            "NEXUDUS-DESK-7",
            "--end-date",
            "2025-05-14",
            "--override",
            "--reason",
            "moving",
        ],
        "2025-05-02",
    )
    .expect_code(0);
    expect_registered(&db, "NEXUDUS-DESK-7", "2025-05-02", "2025-05-14");

    run_as_of(&db, "2025-05-14");
    let record = expect_registered(&db, "NEXUDUS-DESK-7", "2025-05-02", "2025-05-14");
    expect_field(line_of(&record, "desk"), "/status", json!("active"));
    expect_events(&db, "NEXUDUS-DESK-7", "cancellation_executed", 0);

    run_as_of(&db, "2025-05-15");
    let record = expect_cancelled(&db, "NEXUDUS-DESK-7", "2025-05-14", "2025-05-15");
    expect_fields(
        line_of(&record, "desk"),
        &[
            ("/status", json!("cancelled")),
            ("/end_date", json!("2025-05-14")),
        ],
    );
    assert_eq!(
        schedules_of(&record),
        [sched(
            "desk",
            "2025-04-15",
            "2025-05-14",
            30000,
            "planned",
            None
        )],
        "contract 'NEXUDUS-DESK-7': schedules"
    );
}

// ---------------------------------------------------------------------------------------------
// Billing Central: "Ending Contracts"
// ---------------------------------------------------------------------------------------------

/// `contractd end REF --end-date 2025-10-15` with this reason and notes, as of `now`.
fn end_at_october_15(
    db: &TestDb,
    reference: &str,
    now: &str,
    extra: &[&str],
) -> crate::harness::Outcome {
    let mut args = vec![
        reference,
        "--end-date",
        "2025-10-15",
        "--reason",
        "downsizing",
        "--notes",
        "agreed with the customer",
    ];
    args.extend_from_slice(extra);
    act(db, "end", &args, now)
}

/// What every early end at 15 Oct does to [`billing_central`], whatever today is: the
/// original end date recorded, draft renewals, change requests not rejected and draft
/// documents deleted (what was billed on the draft invoice planned again), auto extension
/// off, schedules after the end date deleted, the one containing it cut (the seat prorated,
/// usage not), the add-on starting after it cancelled, reason and notes kept.
fn expect_ended_at_october_15(record: &Value) {
    let reference = record["ref"].as_str().unwrap_or("?").to_string();
    expect_fields(
        record,
        &[
            ("/end_date", json!("2025-10-15")),
            ("/original_end_date", json!("2025-12-31")),
            ("/auto_extend", json!(false)),
            ("/end_reason", json!("downsizing")),
            ("/end_notes", json!("agreed with the customer")),
            ("/cancellation", Value::Null),
            ("/cancellation_date", Value::Null),
            ("/latest_cancellation_date", Value::Null),
        ],
    );
    assert_eq!(
        refs_at(record, "/renewals"),
        ["REN-DONE"],
        "contract '{reference}': renewals"
    );
    assert_eq!(
        refs_at(record, "/change_requests"),
        ["CR-REJECTED"],
        "contract '{reference}': change_requests"
    );
    assert_eq!(
        refs_at(record, "/documents")[..2],
        ["INV-8", "CN-OLD"],
        "contract '{reference}': documents (the draft invoice deleted)"
    );
    let schedules = schedules_of(record);
    assert_eq!(
        schedules[..2],
        [
            sched(
                "seat",
                "2025-08-01",
                "2025-08-31",
                1000,
                "billed",
                Some("INV-8")
            ),
            sched("seat", "2025-09-01", "2025-09-30", 1000, "planned", None),
        ],
        "contract '{reference}': schedules before the end date"
    );
    // 15 of 31 days of 1000 = 483.87… → 484.
    let october = &schedules[2];
    assert_eq!(
        (
            october.0.as_str(),
            october.1.as_str(),
            october.2.as_str(),
            october.3
        ),
        ("seat", "2025-10-01", "2025-10-15", 484),
        "contract '{reference}': schedules[2], the one containing the end date"
    );
    assert_eq!(
        schedules[3..],
        [sched(
            "usage",
            "2025-10-01",
            "2025-10-15",
            900,
            "planned",
            None
        )],
        "contract '{reference}': schedules[3..] (usage is not prorated; November, December \
         and the add-on deleted)"
    );
    expect_fields(
        line_of(record, "addon"),
        &[
            ("/status", json!("cancelled")),
            ("/end_date", json!("2025-11-01")),
        ],
    );
    expect_field(line_of(record, "seat"), "/end_date", json!("2025-10-15"));
    expect_field(line_of(record, "usage"), "/end_date", json!("2025-10-15"));
}

/// A new end date today or later: the contract stays active until the sweep of the day after
/// it expires the contract.
fn billing_central_end_early_in_the_future_stays_active_until_the_day_after(backend: Backend) {
    let db = TestDb::new(backend);
    db.import_ok(&[billing_central("BC-FUTURE"), billing_central("BC-DECEMBER")]);
    let outcome = end_at_october_15(&db, "BC-FUTURE", "2025-10-01", &[]);
    outcome.expect_code(0);
    assert!(
        outcome.stdout.starts_with("BC-FUTURE: ended_early"),
        "{}",
        outcome.stdout
    );
    let record = db.exported("BC-FUTURE");
    expect_ended_at_october_15(&record);
    expect_field(&record, "/status", json!("active"));
    expect_field(&record, "/schedules/2/status", json!("planned"));
    for line in ["seat", "usage"] {
        expect_field(line_of(&record, line), "/status", json!("active"));
    }
    let ended = expect_events(&db, "BC-FUTURE", "ended_early", 1);
    assert_eq!(ended[0].effective_on, "2025-10-01", "{}", ended[0].text);

    // The new end date's own deadline is still ahead: the dates are recomputed from it.
    act(
        &db,
        "end",
        &[
            "BC-DECEMBER",
            "--end-date",
            "2025-12-15",
            "--reason",
            "budget",
        ],
        "2025-10-01",
    )
    .expect_code(0);
    expect_fields(
        &db.exported("BC-DECEMBER"),
        &[
            ("/status", json!("active")),
            ("/end_date", json!("2025-12-15")),
            ("/auto_extend", json!(false)),
            ("/cancellation_date", json!("2025-12-15")),
            ("/latest_cancellation_date", json!("2025-11-15")),
        ],
    );

    run_as_of(&db, "2025-10-15");
    expect_field(&db.exported("BC-FUTURE"), "/status", json!("active"));
    run_as_of(&db, "2025-10-16");
    let record = db.exported("BC-FUTURE");
    expect_field(&record, "/status", json!("expired"));
    expect_ended_at_october_15(&record);
    for (line, status) in [
        ("seat", "expired"),
        ("usage", "expired"),
        ("addon", "cancelled"),
    ] {
        expect_field(line_of(&record, line), "/status", json!(status));
    }
    expect_events(&db, "BC-FUTURE", "expired", 1);
}

/// "If the new end date is before today, the status of the contract is set to Expired."
fn billing_central_end_early_in_the_past_expires_at_once(backend: Backend) {
    let db = TestDb::new(backend);
    db.import_ok(&[billing_central("BC-PAST")]);
    end_at_october_15(&db, "BC-PAST", "2025-11-20", &[]).expect_code(0);
    let record = db.exported("BC-PAST");
    expect_ended_at_october_15(&record);
    expect_field(&record, "/status", json!("expired"));
    for (line, status) in [
        ("seat", "expired"),
        ("usage", "expired"),
        ("addon", "cancelled"),
    ] {
        expect_field(line_of(&record, line), "/status", json!(status));
    }
    assert_eq!(
        kinds(&db, "BC-PAST"),
        ["imported", "ended_early"],
        "contract 'BC-PAST': history"
    );
    // The sweep has nothing left to do with it.
    run_as_of(&db, "2025-11-21");
    assert_eq!(db.exported("BC-PAST"), record, "contract 'BC-PAST'");
}

/// Every refusal of Billing Central's note and docs/rules.md section 6 exits 3, names the contract
/// and the field, and changes nothing.
fn billing_central_end_early_refusals_change_nothing(backend: Backend) {
    let db = TestDb::new(backend);
    let with_document =
        |reference: &str, doc: Value| pushed(billing_central(reference), "/documents", doc);
    let mut consolidated = document("INV-CONS", "invoice", "complete", 1000);
    consolidated["consolidated"] = json!(true);
    let pending_contract = changed(
        billing_central("BC-PENDING"),
        &[
            ("/auto_extend", json!(false)),
            ("/cancellation", pending("2025-09-01", "2025-12-31", true)),
        ],
    );
    let pending_line = changed(
        billing_central("BC-LINE-PENDING"),
        &[
            ("/lines/0/auto_extend", json!(false)),
            (
                "/lines/0/cancellation",
                pending("2025-09-01", "2025-11-30", true),
            ),
        ],
    );
    let billed = changed(
        with_document("BC-BILLED", document("INV-10", "invoice", "complete", 1000)),
        &[
            ("/schedules/2/status", json!("billed")),
            ("/schedules/2/document", json!("INV-10")),
        ],
    );
    db.import_ok(&[
        with_document("BC-CN-DRAFT", document("CN-D", "credit_note", "draft", 100)),
        with_document(
            "BC-CN-REVIEW",
            document("CN-R", "credit_note", "ready_for_review", 100),
        ),
        with_document("BC-CONSOLIDATED", consolidated),
        pending_contract,
        pending_line,
        billed,
    ]);
    let refs = [
        "BC-CN-DRAFT",
        "BC-CN-REVIEW",
        "BC-CONSOLIDATED",
        "BC-PENDING",
        "BC-LINE-PENDING",
        "BC-BILLED",
    ];
    let before = snapshot(&db, &refs);
    let cases: [(&str, &[&str]); 6] = [
        (
            "BC-CN-DRAFT",
            &[
                "documents[3] ('CN-D', credit_note, draft) blocks ending the contract early",
                "complete or discard the credit note first",
            ],
        ),
        (
            "BC-CN-REVIEW",
            &["documents[3] ('CN-R', credit_note, ready_for_review) blocks ending"],
        ),
        (
            "BC-CONSOLIDATED",
            &[
                "documents[3] ('INV-CONS', invoice, complete, consolidated) blocks ending",
                "unconsolidate it first",
            ],
        ),
        (
            "BC-PENDING",
            &["cancellation: a cancellation ending 2025-12-31 is already pending"],
        ),
        (
            "BC-LINE-PENDING",
            &["line 'seat': cancellation: a cancellation ending 2025-11-30 is already pending"],
        ),
        (
            "BC-BILLED",
            &[
                "schedules[2]: line 'seat' is billed on 'INV-10' for 2025-10-01..2025-10-31, \
                 beyond the end date 2025-10-15",
                "allow_end_before_billed_to",
            ],
        ),
    ];
    for (reference, needles) in cases {
        let outcome = end_at_october_15(&db, reference, "2025-10-01", &[]);
        outcome
            .expect_code(3)
            .expect_stderr(&[&format!("contract '{reference}'")])
            .expect_stderr(needles);
        assert_eq!(outcome.stdout, "", "end {reference} reported a change");
    }
    // Bad end dates and a missing reason are refused too.
    act(
        &db,
        "end",
        &["BC-BILLED", "--end-date", "2026-01-31", "--reason", "later"],
        "2025-10-01",
    )
    .expect_code(3)
    .expect_stderr(&[
        "contract 'BC-BILLED'",
        "end_date 2026-01-31 is after the current end date 2025-12-31",
    ]);
    act(
        &db,
        "end",
        &["BC-BILLED", "--end-date", "2025-10-31", "--reason", " "],
        "2025-10-01",
    )
    .expect_code(3)
    .expect_stderr(&["contract 'BC-BILLED'", "reason"]);
    assert_unchanged(&db, &before, "the refused early ends");
}

/// With `--allow-end-before-billed-to`, billed schedules beyond the end date are deleted or
/// cut and one draft credit note credits exactly the billed difference: billed before =
/// billed kept + credited, to the minor unit.
fn billing_central_end_before_billed_to_credits_the_billed_difference(backend: Backend) {
    let db = TestDb::new(backend);
    let mut record = billing_central("BC-ALLOW");
    for (index, invoice) in [(2, "INV-10"), (3, "INV-11")] {
        record = changed(
            pushed(
                record,
                "/documents",
                document(invoice, "invoice", "complete", 1000),
            ),
            &[
                (&format!("/schedules/{index}/status"), json!("billed")),
                (&format!("/schedules/{index}/document"), json!(invoice)),
            ],
        );
    }
    db.import_ok(&[record]);
    let before = db.exported("BC-ALLOW");
    end_at_october_15(
        &db,
        "BC-ALLOW",
        "2025-11-20",
        &["--allow-end-before-billed-to"],
    )
    .expect_code(0);
    let after = db.exported("BC-ALLOW");
    expect_ended_at_october_15(&after);
    expect_fields(
        &after,
        &[
            ("/status", json!("expired")),
            ("/schedules/2/status", json!("billed")),
            ("/schedules/2/document", json!("INV-10")),
        ],
    );
    assert_eq!(
        refs_at(&after, "/documents"),
        ["INV-8", "CN-OLD", "INV-10", "INV-11", "BC-ALLOW-CN-2"],
        "contract 'BC-ALLOW': documents"
    );
    // October: 1000 billed, 484 kept, 516 credited; November: 1000 billed, all credited.
    assert_eq!(
        document_of(&after, "BC-ALLOW-CN-2"),
        &document("BC-ALLOW-CN-2", "credit_note", "draft", 1516),
        "contract 'BC-ALLOW': the credit note"
    );
    let billed_on_sent_documents = |record: &Value| -> i64 {
        let drafts: Vec<&str> = record["documents"]
            .as_array()
            .expect("documents")
            .iter()
            .filter(|doc| doc["status"] == "draft")
            .filter_map(|doc| doc["ref"].as_str())
            .collect();
        schedules_of(record)
            .iter()
            .filter(|s| s.4 == "billed" && !drafts.contains(&s.5.as_deref().unwrap_or("")))
            .map(|s| s.3)
            .sum()
    };
    assert_eq!(
        billed_on_sent_documents(&before),
        billed_on_sent_documents(&after) + 1516,
        "contract 'BC-ALLOW': billed before = billed kept + credited"
    );
    let credited = expect_events(&db, "BC-ALLOW", "credit_note_created", 1);
    assert!(
        credited[0].text.contains("\"amount_minor\":1516"),
        "{}",
        credited[0].text
    );
}

// ---------------------------------------------------------------------------------------------
// Revoke
// ---------------------------------------------------------------------------------------------

/// Revoke clears the pending cancellation, puts `auto_extend` back as it was, and recomputes
/// the cancellation date and deadline as of today (after the deadline: the next term's,
/// which the auto extension then reaches). Without a pending cancellation: exit 3.
fn revoke_restores_auto_extend_and_recomputes_the_dates(backend: Backend) {
    let db = TestDb::new(backend);
    db.import_ok(&[
        ncrc_end_of_contract("REV"),
        ncrc_end_of_contract("REV-LATE"),
        ncrc_end_of_year("REV-NO-EXTEND"),
    ]);
    for reference in ["REV", "REV-LATE", "REV-NO-EXTEND"] {
        act(&db, "cancel", &[reference], "2025-11-22").expect_code(0);
        expect_registered(&db, reference, "2025-11-22", "2025-12-31");
    }

    let outcome = act(&db, "revoke", &["REV"], "2025-11-25");
    outcome.expect_code(0);
    assert!(
        outcome.stdout.starts_with("REV: cancellation_revoked"),
        "{}",
        outcome.stdout
    );
    let revoked = |reference: &str, auto_extend: bool, date: &str, deadline: &str| {
        let record = db.exported(reference);
        expect_fields(
            &record,
            &[
                ("/status", json!("active")),
                ("/cancellation", Value::Null),
                ("/auto_extend", json!(auto_extend)),
                ("/cancellation_date", json!(date)),
                ("/latest_cancellation_date", json!(deadline)),
            ],
        );
        record
    };
    revoked("REV", true, "2025-12-31", "2025-11-30");
    let events = expect_events(&db, "REV", "cancellation_revoked", 1);
    assert_eq!(events[0].effective_on, "2025-11-25", "{}", events[0].text);

    act(&db, "revoke", &["REV-NO-EXTEND"], "2025-11-23").expect_code(0);
    revoked("REV-NO-EXTEND", false, "2025-12-31", "2025-11-30");

    // Revoked after the deadline of 31 Dec: the next possible end date is a term later.
    act(&db, "revoke", &["REV-LATE"], "2025-12-05").expect_code(0);
    let record = revoked("REV-LATE", true, "2026-12-31", "2026-11-30");
    expect_field(&record, "/end_date", json!("2025-12-31"));
    run_as_of(&db, "2025-12-06");
    let record = revoked("REV-LATE", true, "2026-12-31", "2026-11-30");
    expect_field(&record, "/end_date", json!("2026-12-31"));
    expect_events(&db, "REV-LATE", "extended", 1);

    let before = snapshot(&db, &["REV"]);
    act(&db, "revoke", &["REV"], "2025-11-26")
        .expect_code(3)
        .expect_stderr(&[
            "contract 'REV'",
            "cancellation: no cancellation is pending, nothing to revoke",
        ]);
    act(&db, "revoke", &["NOPE"], "2025-11-26")
        .expect_code(3)
        .expect_stderr(&["contract 'NOPE': no such contract"]);
    assert_unchanged(&db, &before, "the refused revoke");
}

/// `revoke --line L` clears that line's pending cancellation and restores the line's
/// `auto_extend` (so it moves with the contract again when it is extended); the contract's
/// own revoke, a second revoke and an unknown line are refused.
fn revoke_a_line_cancellation(backend: Backend) {
    let db = TestDb::new(backend);
    let mut desk = line("desk", "recurring_fixed", true, "2025-01-01", 3000);
    desk["end_date"] = json!("2025-12-31");
    desk["auto_extend"] = json!(true);
    db.import_ok(&[changed(
        ncrc_end_of_contract("LREV"),
        &[("/lines", json!([desk]))],
    )]);
    act(&db, "cancel", &["LREV", "--line", "desk"], "2025-11-22").expect_code(0);
    let record = db.exported("LREV");
    expect_fields(
        line_of(&record, "desk"),
        &[
            ("/auto_extend", json!(false)),
            ("/cancellation/end_date", json!("2025-12-31")),
        ],
    );
    let before = snapshot(&db, &["LREV"]);
    act(&db, "revoke", &["LREV"], "2025-11-23")
        .expect_code(3)
        .expect_stderr(&["contract 'LREV'", "no cancellation is pending"]);
    act(&db, "revoke", &["LREV", "--line", "ghost"], "2025-11-23")
        .expect_code(3)
        .expect_stderr(&["contract 'LREV'", "there is no line 'ghost'"]);
    assert_unchanged(&db, &before, "the refused revokes");

    act(&db, "revoke", &["LREV", "--line", "desk"], "2025-11-23").expect_code(0);
    let record = db.exported("LREV");
    expect_fields(
        line_of(&record, "desk"),
        &[
            ("/auto_extend", json!(true)),
            ("/cancellation", Value::Null),
            ("/status", json!("active")),
        ],
    );
    expect_field(&record, "/auto_extend", json!(true));
    let revoked = expect_events(&db, "LREV", "line_cancellation_revoked", 1);
    assert_eq!(
        revoked[0].line.as_deref(),
        Some("desk"),
        "{}",
        revoked[0].text
    );

    let before = snapshot(&db, &["LREV"]);
    act(&db, "revoke", &["LREV", "--line", "desk"], "2025-11-24")
        .expect_code(3)
        .expect_stderr(&[
            "contract 'LREV' line 'desk'",
            "no cancellation of this line is pending",
        ]);
    assert_unchanged(&db, &before, "the second line revoke");

    // Not cancelled by 30 Nov: contract and line are extended together.
    run_as_of(&db, "2025-12-01");
    let record = db.exported("LREV");
    expect_field(&record, "/end_date", json!("2026-12-31"));
    expect_field(line_of(&record, "desk"), "/end_date", json!("2026-12-31"));
}

// ---------------------------------------------------------------------------------------------
// Failures of the database
// ---------------------------------------------------------------------------------------------

/// When the database refuses the write, the action exits 1 (not 3: the input was fine),
/// names the contract, and changes nothing; in a bulk cancel the good refs still go through
/// and the exit code is 1.
fn database_failure_during_an_action_exits_1_and_changes_nothing(backend: Backend) {
    let db = TestDb::new(backend);
    db.import_ok(&[
        ncrc_end_of_month("POISON-C"),
        billing_central("POISON-E"),
        changed(
            ncrc_end_of_month("POISON-R"),
            &[("/cancellation", pending("2025-11-02", "2025-11-30", false))],
        ),
        ncrc_end_of_month("HEALTHY"),
    ]);
    let poisoned = ["POISON-C", "POISON-E", "POISON-R"];
    poison(&db, &poisoned);
    let before = snapshot(&db, &poisoned);

    for (command, args) in [
        ("cancel", &["POISON-C", "--reason", "x"][..]),
        (
            "end",
            &["POISON-E", "--end-date", "2025-10-15", "--reason", "x"][..],
        ),
        ("revoke", &["POISON-R"][..]),
    ] {
        let outcome = act(&db, command, args, "2025-10-01");
        outcome
            .expect_code(1)
            .expect_stderr(&[&format!("contract '{}'", args[0]), "poisoned"]);
        assert_eq!(outcome.stdout, "", "{command} {args:?} reported a change");
    }
    assert_unchanged(&db, &before, "the failed actions");

    let outcome = act(
        &db,
        "cancel",
        &["HEALTHY", "MISSING", "POISON-C"],
        "2025-10-01",
    );
    outcome
        .expect_code(1)
        .expect_stderr(&["2 of 3 contract(s) not changed"]);
    let failed = report_lines(&outcome);
    assert_eq!(failed.len(), 2, "{}", outcome.stderr);
    assert!(failed[0].contains("contract 'MISSING'"), "{}", failed[0]);
    assert!(
        failed[1].contains("contract 'POISON-C'") && failed[1].contains("poisoned"),
        "{}",
        failed[1]
    );
    expect_registered(&db, "HEALTHY", "2025-10-01", "2025-10-31");
    assert_unchanged(&db, &before, "the partly failed bulk cancel");

    // Once the database accepts writes again, the same action goes through.
    cure(&db);
    act(&db, "cancel", &["POISON-C"], "2025-10-01").expect_code(0);
    expect_registered(&db, "POISON-C", "2025-10-01", "2025-10-31");

    // A row another system broke is not the operator's input either: exit 1, naming the
    // contract (once) and the field.
    let broken = crate::harness::block_on(
        db.raw()
            .execute("UPDATE contracts SET notice_period = '5X' WHERE ref = 'HEALTHY'"),
    );
    assert_eq!(broken, 1);
    let outcome = act(&db, "revoke", &["HEALTHY"], "2025-10-02");
    outcome.expect_code(1).expect_stderr(&[
        "contract 'HEALTHY': the stored row breaks the rules: notice_period: '5X'",
    ]);
    let reported = report_lines(&outcome);
    assert_eq!(
        reported.len(),
        1,
        "one report line for contract 'HEALTHY':\n{}",
        outcome.stderr
    );
    assert_eq!(
        reported[0].matches("HEALTHY").count(),
        1,
        "contract 'HEALTHY' named once: {}",
        reported[0]
    );
}

/// `contractd run` exits 1 when a job fails (the database refuses to update one due
/// contract); a run inside the retry pause leaves the failed job alone; once the pause has
/// passed and the database is healthy, the retry exits 0 and executes the cancellations once.
fn run_exits_1_when_a_job_fails_and_0_after_the_retry_pause(backend: Backend) {
    let db = TestDb::new(backend);
    let due = |reference: &str| {
        changed(
            ncrc_end_of_month(reference),
            &[
                ("/start_date", json!("2025-01-01")),
                ("/cancellation", pending("2025-05-02", "2025-05-31", false)),
            ],
        )
    };
    db.import_ok(&[due("RUN-OK"), due("RUN-POISON")]);
    poison(&db, &["RUN-POISON"]);

    let failed = db.run(&["run", "--now", "2025-06-01T12:00:00Z"]);
    failed.expect_code(1);
    assert!(
        failed
            .stdout
            .lines()
            .any(|line| line.contains("execute_cancellations") && line.contains("failed")),
        "the failed job is reported:\n{}",
        failed.stdout
    );
    expect_registered(&db, "RUN-POISON", "2025-05-02", "2025-05-31");

    cure(&db);
    // 5 s later the failed run is still pausing: nothing is executed.
    db.run(&["run", "--now", "2025-06-01T12:00:05Z"]);
    expect_registered(&db, "RUN-POISON", "2025-05-02", "2025-05-31");

    let retried = db.run(&["run", "--now", "2025-06-01T12:00:11Z"]);
    retried.expect_code(0);
    for reference in ["RUN-OK", "RUN-POISON"] {
        expect_cancelled(&db, reference, "2025-05-31", "2025-06-01");
    }
    let runs = db.run(&["runs"]);
    runs.expect_code(0);
    let row = runs
        .stdout
        .lines()
        .find(|line| line.contains("execute_cancellations"))
        .unwrap_or_else(|| panic!("no execute_cancellations run:\n{}", runs.stdout));
    let words: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        (words[3], words[4]),
        ("succeeded", "2"),
        "execute_cancellations: status and attempts\n{}",
        runs.stdout
    );
}

// ---------------------------------------------------------------------------------------------
// The received date decides (docs/rules.md section 6.2; more in `backdated.rs`)
// ---------------------------------------------------------------------------------------------

/// NCRC counts notice from the day the cancellation was received. One received on 28 Nov is
/// in time for 31 Dec 2025, even when it is entered on 2 Dec, after the sweep of 1 Dec (the
/// day after the deadline) extended the contract to 31 Dec 2026: the extension is undone, the
/// contract ends on 31 Dec 2025 and the sweep of 1 Jan 2026 executes the cancellation.
fn timely_cancellation_entered_after_the_auto_extension_ends_at_the_old_term(backend: Backend) {
    let db = TestDb::new(backend);
    db.import_ok(&[ncrc_end_of_contract("ENTERED-LATE")]);
    run_as_of(&db, "2025-12-01");
    expect_field(
        &db.exported("ENTERED-LATE"),
        "/end_date",
        json!("2026-12-31"),
    );
    act(
        &db,
        "cancel",
        &["ENTERED-LATE", "--received-on", "2025-11-28"],
        "2025-12-02",
    )
    .expect_code(0);
    expect_registered(&db, "ENTERED-LATE", "2025-11-28", "2025-12-31");
    run_as_of(&db, "2026-01-01");
    expect_cancelled(&db, "ENTERED-LATE", "2025-12-31", "2026-01-01");
}
