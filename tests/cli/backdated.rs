//! Backdated cancellations through the real binary (docs/rules.md section 6.2): the received
//! date decides, extensions that ran after it are undone in the same transaction, and the
//! limits on the received date; `--dry-run` on `cancel`, `end` and `revoke` shows exactly what
//! the real command then does and writes nothing. Every test runs on SQLite and PostgreSQL.

use serde_json::{json, Value};

use crate::action_helpers::{
    act, act_with_env, assert_unchanged, expect_events, expect_field, expect_fields, history,
    kinds, report_lines, run_as_of, snapshot, HistoryEvent,
};
use crate::actions::{
    document, expect_cancelled, expect_registered, line, ncrc_end_of_contract, sched, schedule,
    schedules_of, ALLOW_BILLED,
};
use crate::harness::TestDb;
use crate::support::Backend;

crate::both_databases! {
    backend: [
        ncrc_example_1_entered_1_5_and_40_days_late_ends_on_the_original_end_date,
        monthly_contract_cancelled_three_terms_back_undoes_three_extensions,
        billed_schedule_in_an_undone_term_is_refused_unless_allowed_then_credited,
        received_after_the_deadline_is_refused_as_late,
        received_date_limits_and_max_backdate_with_override,
        line_cancellation_received_before_the_extension_undoes_its_share,
        bulk_backdated_cancel_judges_each_ref_on_its_own,
        revoking_a_backdated_cancellation_lets_the_next_sweep_extend_again,
        dry_run_prints_the_change_the_real_command_makes_and_writes_nothing,
    ],
}

/// A monthly desk contract: 2025-01-01..2025-09-30, no notice, extended a month at a time,
/// cancellable at the end of the term; one desk line (3100 a month, prorated by actual days)
/// that moves with the contract, July to September planned.
fn monthly(reference: &str) -> Value {
    let mut desk = line("desk", "recurring_fixed", true, "2025-01-01", 3100);
    desk["end_date"] = json!("2025-09-30");
    desk["auto_extend"] = json!(true);
    json!({
        "ref": reference,
        "customer": "Coworking member",
        "time_zone": "Europe/Berlin",
        "start_date": "2025-01-01",
        "end_date": "2025-09-30",
        "notice_period": "0D",
        "cancellation_window": "end_of_term",
        "auto_extend": true,
        "extension_term": "1M",
        "proration": "actual_days",
        "lines": [desk],
        "schedules": [
            schedule("desk", "2025-07-01", "2025-07-31", 3100, None),
            schedule("desk", "2025-08-01", "2025-08-31", 3100, None),
            schedule("desk", "2025-09-01", "2025-09-30", 3100, None),
        ],
    })
}

/// The events of `reference` from index `from` on, as (kind, effective_on).
fn events_since(db: &TestDb, reference: &str, from: usize) -> Vec<(String, String)> {
    history(db, reference)
        .into_iter()
        .skip(from)
        .map(|event| (event.kind, event.effective_on))
        .collect()
}

/// The details of a history line: the JSON between the kind (and line) and the recording
/// instant.
fn details(event: &HistoryEvent) -> Value {
    let start = event.text.find('{').expect("details in the history line");
    let end = event.text.rfind('}').expect("details in the history line");
    serde_json::from_str(&event.text[start..=end]).expect("details are JSON")
}

/// `(from, to, terms)` of the `extension_reverted` events of `reference`, in history order;
/// each also says why and when the cancellation was received.
fn reverted(
    db: &TestDb,
    reference: &str,
    count: usize,
    received_on: &str,
) -> Vec<(String, String, i64)> {
    expect_events(db, reference, "extension_reverted", count)
        .iter()
        .map(|event| {
            let details = details(event);
            assert_eq!(
                (details["reason"].clone(), details["received_on"].clone()),
                (json!("backdated_cancellation"), json!(received_on)),
                "contract '{reference}': extension_reverted details {details}"
            );
            (
                details["from"].as_str().expect("from").to_string(),
                details["to"].as_str().expect("to").to_string(),
                details["terms"].as_i64().expect("terms"),
            )
        })
        .collect()
}

fn strings(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// NCRC example 1 (notice 1M, till end of contract, extended by 12M) with a cancellation
/// received on the deadline, 30 Nov 2025, entered 1, 5 and 40 days late, each after the daily
/// sweeps of those days (the one of 1 Dec extended every contract to 31 Dec 2026). Each ends on
/// 31 Dec 2025; the one entered 40 days late is already cancelled when the command returns,
/// its execution effective on 1 Jan 2026 as the sweep would have written it.
fn ncrc_example_1_entered_1_5_and_40_days_late_ends_on_the_original_end_date(backend: Backend) {
    let db = TestDb::new(backend);
    db.import_ok(&[
        ncrc_end_of_contract("LATE-1"),
        ncrc_end_of_contract("LATE-5"),
        ncrc_end_of_contract("LATE-40"),
    ]);
    run_as_of(&db, "2025-12-01");
    for reference in ["LATE-1", "LATE-5", "LATE-40"] {
        expect_field(&db.exported(reference), "/end_date", json!("2026-12-31"));
    }

    let outcome = act(
        &db,
        "cancel",
        &["LATE-1", "--received-on", "2025-11-30"],
        "2025-12-01",
    );
    outcome.expect_code(0);
    assert_eq!(
        outcome.stdout.trim_end(),
        "LATE-1: extension_reverted, cancellation_registered — status active, end date \
         2025-12-31, ends 2025-12-31 (received 2025-11-30)",
        "cancel LATE-1 report"
    );
    let record = expect_registered(&db, "LATE-1", "2025-11-30", "2025-12-31");
    expect_fields(
        &record,
        &[
            ("/end_date", json!("2025-12-31")),
            ("/original_end_date", Value::Null),
            ("/cancellation/restore_auto_extend", json!(true)),
        ],
    );
    assert_eq!(
        reverted(&db, "LATE-1", 1, "2025-11-30"),
        [("2025-12-31".to_string(), "2026-12-31".to_string(), 1)]
    );
    assert_eq!(
        events_since(&db, "LATE-1", 1),
        strings(&[
            ("extended", "2025-12-01"),
            ("extension_reverted", "2025-12-01"),
            ("cancellation_registered", "2025-12-01"),
        ]),
        "contract 'LATE-1': history"
    );

    for day in ["2025-12-02", "2025-12-03", "2025-12-04", "2025-12-05"] {
        run_as_of(&db, day);
    }
    act(
        &db,
        "cancel",
        &["LATE-5", "--received-on", "2025-11-30"],
        "2025-12-05",
    )
    .expect_code(0);
    expect_registered(&db, "LATE-5", "2025-11-30", "2025-12-31");
    expect_field(&db.exported("LATE-5"), "/end_date", json!("2025-12-31"));
    reverted(&db, "LATE-5", 1, "2025-11-30");

    run_as_of(&db, "2026-01-01");
    for reference in ["LATE-1", "LATE-5"] {
        let record = expect_cancelled(&db, reference, "2025-12-31", "2026-01-01");
        expect_field(&record, "/original_end_date", Value::Null);
    }
    run_as_of(&db, "2026-01-09");
    expect_field(&db.exported("LATE-40"), "/end_date", json!("2026-12-31"));
    let outcome = act(
        &db,
        "cancel",
        &["LATE-40", "--received-on", "2025-11-30"],
        "2026-01-09",
    );
    outcome.expect_code(0);
    assert_eq!(
        outcome.stdout.trim_end(),
        "LATE-40: extension_reverted, cancellation_registered, cancellation_executed — status \
         cancelled, end date 2025-12-31",
        "cancel LATE-40 report"
    );
    let record = expect_cancelled(&db, "LATE-40", "2025-12-31", "2026-01-01");
    expect_field(&record, "/original_end_date", Value::Null);
    assert_eq!(
        events_since(&db, "LATE-40", 2),
        strings(&[
            ("extension_reverted", "2026-01-09"),
            ("cancellation_registered", "2026-01-09"),
            ("cancellation_executed", "2026-01-01"),
        ]),
        "contract 'LATE-40': history"
    );
    // Later sweeps find nothing left to do.
    let before = snapshot(&db, &["LATE-1", "LATE-5", "LATE-40"]);
    run_as_of(&db, "2026-01-10");
    assert_unchanged(&db, &before, "the sweep after the cancellations");
}

/// A monthly contract (1M extension, no notice) cancelled with a received date three terms
/// back: the three extensions are undone (three `extension_reverted` events, newest first), the
/// schedules of those terms are gone, and the contract ends exactly as a twin whose
/// cancellation was entered on the day it was received and then swept.
fn monthly_contract_cancelled_three_terms_back_undoes_three_extensions(backend: Backend) {
    let db = TestDb::new(backend);
    db.import_ok(&[monthly("MONTHLY"), monthly("TWIN")]);
    act(&db, "cancel", &["TWIN", "--reason", "moving"], "2025-09-30").expect_code(0);
    for day in ["2025-10-01", "2025-11-01", "2025-12-01"] {
        run_as_of(&db, day);
    }
    assert_eq!(
        expect_events(&db, "MONTHLY", "extended", 3).len(),
        3,
        "three daily extensions"
    );
    let extended = db.exported("MONTHLY");
    expect_field(&extended, "/end_date", json!("2025-12-31"));
    assert_eq!(schedules_of(&extended).len(), 6, "{extended:#}");

    let outcome = act(
        &db,
        "cancel",
        &[
            "MONTHLY",
            "--received-on",
            "2025-09-30",
            "--reason",
            "moving",
        ],
        "2025-12-02",
    );
    outcome.expect_code(0);
    assert_eq!(
        reverted(&db, "MONTHLY", 3, "2025-09-30"),
        [
            ("2025-11-30".to_string(), "2025-12-31".to_string(), 1),
            ("2025-10-31".to_string(), "2025-11-30".to_string(), 1),
            ("2025-09-30".to_string(), "2025-10-31".to_string(), 1),
        ]
    );
    let record = expect_cancelled(&db, "MONTHLY", "2025-09-30", "2025-10-01");
    assert_eq!(
        schedules_of(&record),
        [
            sched("desk", "2025-07-01", "2025-07-31", 3100, "planned", None),
            sched("desk", "2025-08-01", "2025-08-31", 3100, "planned", None),
            sched("desk", "2025-09-01", "2025-09-30", 3100, "planned", None),
        ],
        "contract 'MONTHLY': schedules"
    );
    expect_fields(
        &record,
        &[
            ("/lines/0/end_date", json!("2025-09-30")),
            ("/lines/0/status", json!("cancelled")),
            ("/original_end_date", Value::Null),
        ],
    );
    let mut twin = db.exported("TWIN");
    twin["ref"] = json!("MONTHLY");
    assert_eq!(
        record, twin,
        "the backdated cancellation ends as the timely one"
    );
}

/// October was billed in advance, inside the first term an extension added. Undoing that
/// extension is refused (naming the schedule and its invoice) and changes nothing, unless
/// `allow_end_before_billed_to` is set: then one draft credit note gives back exactly the
/// billed amount.
fn billed_schedule_in_an_undone_term_is_refused_unless_allowed_then_credited(backend: Backend) {
    let db = TestDb::new(backend);
    let mut record = monthly("PREPAID");
    record["schedules"]
        .as_array_mut()
        .expect("schedules")
        .push(schedule(
            "desk",
            "2025-10-01",
            "2025-10-31",
            3100,
            Some("INV-10"),
        ));
    record["documents"] = json!([document("INV-10", "invoice", "complete", 3100)]);
    db.import_ok(&[record]);
    run_as_of(&db, "2025-10-01");
    run_as_of(&db, "2025-11-01");
    expect_field(&db.exported("PREPAID"), "/end_date", json!("2025-11-30"));

    let before = snapshot(&db, &["PREPAID"]);
    let args = ["PREPAID", "--received-on", "2025-09-30"];
    act(&db, "cancel", &args, "2025-11-05")
        .expect_code(3)
        .expect_stderr(&[
            "contract 'PREPAID'",
            "schedules[3]",
            "line 'desk' is billed on 'INV-10' for 2025-10-01..2025-10-31",
            "allow_end_before_billed_to",
        ]);
    assert_unchanged(&db, &before, "the refused backdated cancel");

    let outcome = act_with_env(&db, "cancel", &args, "2025-11-05", &[ALLOW_BILLED]);
    outcome.expect_code(0);
    assert_eq!(reverted(&db, "PREPAID", 2, "2025-09-30").len(), 2);
    let record = expect_cancelled(&db, "PREPAID", "2025-09-30", "2025-10-01");
    assert_eq!(
        schedules_of(&record),
        [
            sched("desk", "2025-07-01", "2025-07-31", 3100, "planned", None),
            sched("desk", "2025-08-01", "2025-08-31", 3100, "planned", None),
            sched("desk", "2025-09-01", "2025-09-30", 3100, "planned", None),
        ],
        "contract 'PREPAID': schedules"
    );
    let documents = record["documents"].as_array().expect("documents");
    assert_eq!(
        documents,
        &vec![
            document("INV-10", "invoice", "complete", 3100),
            document("PREPAID-CN-1", "credit_note", "draft", 3100),
        ],
        "contract 'PREPAID': documents"
    );
    let credit = expect_events(&db, "PREPAID", "credit_note_created", 1);
    assert_eq!(details(&credit[0])["amount_minor"], json!(3100));
    let order = kinds(&db, "PREPAID");
    assert_eq!(
        order[3..],
        [
            "extension_reverted",
            "extension_reverted",
            "credit_note_created",
            "cancellation_registered",
            "cancellation_executed",
        ],
        "contract 'PREPAID': history"
    );
}

/// Received after the deadline of the end date it asks for: refused exactly as a late
/// cancellation is, whether or not the sweep of that day already extended the contract, naming
/// the missed deadline and the next possible end date with its deadline. Without an end date it
/// takes that next one, and nothing is undone.
fn received_after_the_deadline_is_refused_as_late(backend: Backend) {
    let db = TestDb::new(backend);
    db.import_ok(&[ncrc_end_of_contract("LATE-R")]);
    run_as_of(&db, "2025-12-01");
    let before = snapshot(&db, &["LATE-R"]);
    for received in ["2025-12-01", "2025-12-03"] {
        let outcome = act(
            &db,
            "cancel",
            &[
                "LATE-R",
                "--received-on",
                received,
                "--end-date",
                "2025-12-31",
            ],
            "2025-12-05",
        );
        outcome.expect_code(3).expect_stderr(&[
            "contract 'LATE-R'",
            &format!("end_date 2025-12-31 needs notice by 2025-11-30 (received {received})"),
            "the next possible end date is 2026-12-31, deadline 2026-11-30",
        ]);
        assert_eq!(outcome.stdout, "");
        assert_unchanged(&db, &before, "the late cancel");
    }
    act(
        &db,
        "cancel",
        &["LATE-R", "--received-on", "2025-12-01"],
        "2025-12-05",
    )
    .expect_code(0);
    let record = expect_registered(&db, "LATE-R", "2025-12-01", "2026-12-31");
    expect_field(&record, "/end_date", json!("2026-12-31"));
    expect_events(&db, "LATE-R", "extension_reverted", 0);
}

/// The received date may not lie before the start date or after today, nor further back than
/// `cancellations.max_backdate` (90 days by default) unless `--override`; each refusal exits 3
/// and changes nothing. The limit comes from the configuration, and a bad value stops the
/// command with exit 2 naming the key.
fn received_date_limits_and_max_backdate_with_override(backend: Backend) {
    let db = TestDb::new(backend);
    db.import_ok(&[ncrc_end_of_contract("OLD")]);
    run_as_of(&db, "2025-12-01");
    run_as_of(&db, "2026-03-10");
    let before = snapshot(&db, &["OLD"]);
    let refusals: [(&[&str], &[&str]); 3] = [
        (
            &["OLD", "--received-on", "2024-12-31"],
            &[
                "contract 'OLD'",
                "received_on 2024-12-31 is before the start_date 2025-01-01",
            ],
        ),
        (
            &["OLD", "--received-on", "2026-03-11"],
            &[
                "contract 'OLD'",
                "received_on 2026-03-11 is after today (2026-03-10)",
            ],
        ),
        (
            &["OLD", "--received-on", "2025-11-28"],
            &[
                "contract 'OLD'",
                "received_on 2025-11-28 is further back than cancellations.max_backdate (90D)",
                "the earliest received date accepted today (2026-03-10) is 2025-12-10",
                "(use --override)",
            ],
        ),
    ];
    for (args, needles) in refusals {
        let outcome = act(&db, "cancel", args, "2026-03-10");
        outcome.expect_code(3).expect_stderr(needles);
        assert_eq!(outcome.stdout, "", "cancel {args:?} reported a change");
        assert_unchanged(&db, &before, &format!("the refused cancel {args:?}"));
    }
    let outcome = act_with_env(
        &db,
        "cancel",
        &["OLD", "--received-on", "2025-11-28"],
        "2026-03-10",
        &[("CONTRACTD__CANCELLATIONS__MAX_BACKDATE", "90 days")],
    );
    outcome
        .expect_code(2)
        .expect_stderr(&["cancellations.max_backdate"]);
    assert_unchanged(&db, &before, "cancel with a bad max_backdate");

    // A longer limit in the configuration, or --override, lets it through.
    let outcome = act_with_env(
        &db,
        "cancel",
        &["OLD", "--received-on", "2025-11-28", "--dry-run"],
        "2026-03-10",
        &[("CONTRACTD__CANCELLATIONS__MAX_BACKDATE", "4M")],
    );
    outcome.expect_code(0);
    assert_unchanged(&db, &before, "the dry run");
    act(
        &db,
        "cancel",
        &[
            "OLD",
            "--received-on",
            "2025-11-28",
            "--override",
            "--end-date",
            "2025-12-31",
        ],
        "2026-03-10",
    )
    .expect_code(0);
    reverted(&db, "OLD", 1, "2025-11-28");
    let record = expect_cancelled(&db, "OLD", "2025-12-31", "2026-01-01");
    expect_field(&record, "/original_end_date", Value::Null);
}

/// A line that moves with the contract, cancelled on its own with a received date before the
/// extension: only the line's share of the extension is undone (its end date and its
/// schedules of the new term); the contract and its other line stay extended.
fn line_cancellation_received_before_the_extension_undoes_its_share(backend: Backend) {
    let db = TestDb::new(backend);
    let mut seat = line("seat", "recurring_fixed", true, "2025-01-01", 1000);
    seat["end_date"] = json!("2025-12-31");
    seat["auto_extend"] = json!(true);
    let support = line("support", "recurring_fixed", true, "2025-01-01", 500);
    let mut record = ncrc_end_of_contract("LINES");
    record["lines"] = json!([seat, support]);
    record["schedules"] = json!([
        schedule("seat", "2025-12-01", "2025-12-31", 1000, None),
        schedule("support", "2025-12-01", "2025-12-31", 500, None),
    ]);
    db.import_ok(&[record]);
    run_as_of(&db, "2025-12-01");
    let extended = db.exported("LINES");
    expect_field(&extended, "/lines/0/end_date", json!("2026-12-31"));
    assert_eq!(schedules_of(&extended).len(), 2 + 24, "{extended:#}");

    let outcome = act(
        &db,
        "cancel",
        &["LINES", "--line", "seat", "--received-on", "2025-11-28"],
        "2025-12-02",
    );
    outcome.expect_code(0);
    let events = expect_events(&db, "LINES", "extension_reverted", 1);
    assert_eq!(events[0].line.as_deref(), Some("seat"));
    let record = db.exported("LINES");
    expect_fields(
        &record,
        &[
            ("/end_date", json!("2026-12-31")),
            ("/auto_extend", json!(true)),
            ("/lines/0/end_date", json!("2025-12-31")),
            ("/lines/0/cancellation/end_date", json!("2025-12-31")),
            ("/lines/0/cancellation/received_on", json!("2025-11-28")),
            ("/lines/1/end_date", Value::Null),
        ],
    );
    let schedules = schedules_of(&record);
    assert!(
        schedules
            .iter()
            .all(|s| s.0 != "seat" || s.2.as_str() <= "2025-12-31"),
        "the seat's 2026 schedules are gone: {schedules:?}"
    );
    assert_eq!(
        schedules.iter().filter(|s| s.0 == "support").count(),
        13,
        "the support line keeps its extension: {schedules:?}"
    );
    run_as_of(&db, "2026-01-01");
    let record = db.exported("LINES");
    expect_fields(
        &record,
        &[
            ("/status", json!("active")),
            ("/lines/0/status", json!("cancelled")),
            ("/lines/0/end_date", json!("2025-12-31")),
            ("/lines/1/status", json!("active")),
        ],
    );
}

/// A bulk cancel with one received date: each ref is judged against its own history and
/// reported on its own line; an unknown ref fails alone (exit 3).
fn bulk_backdated_cancel_judges_each_ref_on_its_own(backend: Backend) {
    let db = TestDb::new(backend);
    let mut not_extending = ncrc_end_of_contract("FIXED");
    not_extending["auto_extend"] = json!(false);
    not_extending["extension_term"] = Value::Null;
    db.import_ok(&[ncrc_end_of_contract("EXTENDED"), not_extending]);
    run_as_of(&db, "2025-12-01");
    let outcome = act(
        &db,
        "cancel",
        &["EXTENDED", "NOPE", "FIXED", "--received-on", "2025-11-28"],
        "2025-12-02",
    );
    outcome.expect_code(3);
    let done: Vec<&str> = outcome.stdout.lines().collect();
    assert_eq!(
        done,
        [
            "EXTENDED: extension_reverted, cancellation_registered — status active, end date \
             2025-12-31, ends 2025-12-31 (received 2025-11-28)",
            "FIXED: cancellation_registered — status active, end date 2025-12-31, ends \
             2025-12-31 (received 2025-11-28)",
        ],
        "bulk report:\n{}",
        outcome.stdout
    );
    assert_eq!(
        report_lines(&outcome),
        ["contract 'NOPE': no such contract"],
        "{}",
        outcome.stderr
    );
    expect_registered(&db, "EXTENDED", "2025-11-28", "2025-12-31");
    expect_registered(&db, "FIXED", "2025-11-28", "2025-12-31");
}

/// Revoking a backdated cancellation restores auto extension and leaves the undone term
/// undone; the next sweep extends the contract again as the rules say.
fn revoking_a_backdated_cancellation_lets_the_next_sweep_extend_again(backend: Backend) {
    let db = TestDb::new(backend);
    db.import_ok(&[ncrc_end_of_contract("REVOKED")]);
    run_as_of(&db, "2025-12-01");
    act(
        &db,
        "cancel",
        &["REVOKED", "--received-on", "2025-11-28"],
        "2025-12-02",
    )
    .expect_code(0);
    act(&db, "revoke", &["REVOKED"], "2025-12-03").expect_code(0);
    let record = db.exported("REVOKED");
    expect_fields(
        &record,
        &[
            ("/status", json!("active")),
            ("/end_date", json!("2025-12-31")),
            ("/auto_extend", json!(true)),
            ("/cancellation", Value::Null),
        ],
    );
    run_as_of(&db, "2025-12-04");
    expect_field(&db.exported("REVOKED"), "/end_date", json!("2026-12-31"));
    assert_eq!(
        kinds(&db, "REVOKED")[1..],
        [
            "extended",
            "extension_reverted",
            "cancellation_registered",
            "cancellation_revoked",
            "extended",
        ],
        "contract 'REVOKED': history"
    );
    // The undone extension no longer counts; the new one does: a cancellation received
    // before it (in time for 31 Dec 2025) undoes it in turn.
    act(
        &db,
        "cancel",
        &["REVOKED", "--received-on", "2025-11-29"],
        "2025-12-05",
    )
    .expect_code(0);
    expect_registered(&db, "REVOKED", "2025-11-29", "2025-12-31");
    expect_field(&db.exported("REVOKED"), "/end_date", json!("2025-12-31"));
    expect_events(&db, "REVOKED", "extension_reverted", 2);
}

/// `--dry-run` plans exactly as the real command: it prints the same report line (after
/// "dry run, nothing written: ") and every change, and writes nothing; the real command then
/// makes exactly those changes and records exactly those events. Likewise for `end` and
/// `revoke`, and a refusal is the same refusal.
fn dry_run_prints_the_change_the_real_command_makes_and_writes_nothing(backend: Backend) {
    let db = TestDb::new(backend);
    db.import_ok(&[monthly("DRY"), ncrc_end_of_contract("DRY-END")]);
    for day in ["2025-10-01", "2025-11-01", "2025-12-01"] {
        run_as_of(&db, day);
    }
    let refs = ["DRY", "DRY-END"];
    let args = ["DRY", "--received-on", "2025-09-30", "--reason", "moving"];
    let before = snapshot(&db, &refs);
    let old = db.exported("DRY");
    let events_before = history(&db, "DRY").len();

    let mut dry_args = args.to_vec();
    dry_args.push("--dry-run");
    let dry = act(&db, "cancel", &dry_args, "2025-12-02");
    dry.expect_code(0);
    assert_unchanged(&db, &before, "cancel --dry-run");
    let real = act(&db, "cancel", &args, "2025-12-02");
    real.expect_code(0);
    let (first, changes) = dry
        .stdout
        .split_once('\n')
        .expect("a report and its changes");
    assert_eq!(
        first.strip_prefix("dry run, nothing written: "),
        Some(real.stdout.trim_end()),
        "the dry run's report"
    );
    let new = db.exported("DRY");
    let new_events: Vec<HistoryEvent> = history(&db, "DRY")
        .into_iter()
        .skip(events_before)
        .collect();
    let mut printed_events = Vec::new();
    let mut fields = 0;
    for change in changes.lines() {
        let change = change.strip_prefix("  ").expect("changes are indented");
        if let Some(event) = change.strip_prefix("event ") {
            printed_events.push(event.to_string());
        } else if let Some(row) = change.strip_prefix("schedules deleted: ") {
            let row: Value = serde_json::from_str(row).expect("a schedule");
            assert!(old["schedules"]
                .as_array()
                .expect("schedules")
                .contains(&row));
            assert!(!new["schedules"]
                .as_array()
                .expect("schedules")
                .contains(&row));
        } else {
            let (field, values) = change.split_once(": ").expect("field: old -> new");
            let (was, is) = values.split_once(" -> ").expect("old -> new");
            if field.starts_with("lines") {
                continue;
            }
            let was: Value = serde_json::from_str(was).expect("old value");
            let is: Value = serde_json::from_str(is).expect("new value");
            assert_eq!((&old[field], &new[field]), (&was, &is), "field {field}");
            fields += 1;
        }
    }
    assert!(
        fields >= 4,
        "status, end_date, auto_extend, end_reason:\n{}",
        dry.stdout
    );
    assert_eq!(
        printed_events,
        new_events
            .iter()
            .map(|event| {
                let text = &event.text;
                format!(
                    "{} effective {}: {}",
                    event.kind,
                    event.effective_on,
                    &text[text.find('{').expect("details")..=text.rfind('}').expect("details")]
                )
            })
            .collect::<Vec<_>>(),
        "the dry run's events are the recorded ones"
    );
    assert_eq!(
        printed_events.len(),
        5,
        "three reverted, registered, executed:\n{}",
        dry.stdout
    );

    // end and revoke.
    let before = snapshot(&db, &refs);
    let end_args = [
        "DRY-END",
        "--end-date",
        "2026-06-30",
        "--reason",
        "downsizing",
    ];
    let mut dry_end = end_args.to_vec();
    dry_end.push("--dry-run");
    let dry = act(&db, "end", &dry_end, "2025-12-05");
    dry.expect_code(0);
    assert!(
        dry.stdout
            .contains("  end_date: \"2026-12-31\" -> \"2026-06-30\""),
        "{}",
        dry.stdout
    );
    assert_unchanged(&db, &before, "end --dry-run");
    let refused = act(&db, "revoke", &["DRY-END", "--dry-run"], "2025-12-05");
    refused
        .expect_code(3)
        .expect_stderr(&["contract 'DRY-END'", "no cancellation is pending"]);
    let real = act(&db, "end", &end_args, "2025-12-05");
    real.expect_code(0);
    assert_eq!(
        dry.stdout
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("dry run, nothing written: ")),
        Some(real.stdout.trim_end())
    );

    db.import_ok(&[ncrc_end_of_contract("DRY-REVOKE")]);
    act(&db, "cancel", &["DRY-REVOKE"], "2025-11-20").expect_code(0);
    let before = snapshot(&db, &["DRY-REVOKE"]);
    let dry = act(&db, "revoke", &["DRY-REVOKE", "--dry-run"], "2025-11-21");
    dry.expect_code(0);
    assert!(
        dry.stdout.contains("  auto_extend: false -> true"),
        "{}",
        dry.stdout
    );
    assert_unchanged(&db, &before, "revoke --dry-run");
    let real = act(&db, "revoke", &["DRY-REVOKE"], "2025-11-21");
    real.expect_code(0);
    assert_eq!(
        dry.stdout
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("dry run, nothing written: ")),
        Some(real.stdout.trim_end())
    );
}
