//! Issue 14 through the real binary: `contractd reminders --within PERIOD` (table and JSON
//! Lines, by zone), `run` sending reminder events with the configured lead times,
//! `reminder_lead_times` and `reminders_sent` round-tripping through export and import, bad
//! values refused with exit 3 naming the field, and a bad configured lead time with exit 2
//! naming the key. Every test runs on SQLite and PostgreSQL.

use crate::harness::{changed, jsonl, minimal, TestDb};
use crate::support::Backend;
use serde_json::{json, Value};

crate::both_databases! {
    backend: [
        reminders_lists_deadlines_and_ends_within_the_window,
        run_sends_reminders_with_the_configured_lead_times,
        reminder_fields_round_trip_through_export_and_import,
        bad_reminder_fields_exit_3_naming_the_field,
        bad_configured_lead_times_exit_2_naming_the_key,
    ],
}

/// The contracts of these tests, far enough ahead that the real clock at import is before
/// every deadline.
fn contracts() -> Vec<Value> {
    let year_end = |reference: &str, zone: &str| {
        changed(
            minimal(reference),
            &[
                ("/start_date", json!("2030-01-01")),
                ("/time_zone", json!(zone)),
                ("/customer", json!(format!("Customer {reference}"))),
                ("/notice_period", json!("1M")),
                ("/cancellation_window", json!("end_of_year")),
            ],
        )
    };
    vec![
        year_end("YEAR-BERLIN", "Europe/Berlin"),
        year_end("YEAR-TOKYO", "Asia/Tokyo"),
        changed(
            minimal("TERM-END"),
            &[
                ("/start_date", json!("2030-01-01")),
                ("/end_date", json!("2030-12-10")),
                ("/time_zone", json!("Europe/Berlin")),
                ("/cancellation_window", json!("end_of_term")),
            ],
        ),
        changed(
            minimal("LATER"),
            &[
                ("/start_date", json!("2030-01-01")),
                ("/end_date", json!("2031-06-30")),
                ("/cancellation_window", json!("end_of_term")),
            ],
        ),
    ]
}

fn reminders_lists_deadlines_and_ends_within_the_window(backend: Backend) {
    let db = TestDb::new(backend);
    db.import_ok(&contracts());
    let now = "2030-11-05T12:00:00Z";
    let table = db.run(&["reminders", "--within", "30D", "--now", now]);
    table.expect_code(0);
    let rows: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(rows.len(), 3, "{}", table.stdout);
    assert!(rows[0].starts_with("REF"), "{}", rows[0]);
    for reference in ["YEAR-BERLIN", "YEAR-TOKYO"] {
        let row = rows
            .iter()
            .find(|row| row.starts_with(reference))
            .unwrap_or_else(|| panic!("{reference} missing: {}", table.stdout));
        assert!(row.contains("cancellation deadline"), "{row}");
        assert!(row.contains("2030-11-30"), "{row}");
        assert!(row.trim_end().ends_with("25"), "{row}");
    }
    // Two months reach the term's end too, soonest first.
    let json = db.run(&["reminders", "--within", "2M", "--json", "--now", now]);
    json.expect_code(0);
    let lines = json.json_lines();
    let refs: Vec<&str> = lines
        .iter()
        .map(|line| line["ref"].as_str().expect("ref"))
        .collect();
    assert_eq!(refs, ["YEAR-BERLIN", "YEAR-TOKYO", "TERM-END"]);
    assert_eq!(
        lines[2],
        json!({"ref": "TERM-END", "customer": "Customer", "time_zone": "Europe/Berlin",
               "today": "2030-11-05", "kind": "end_approaching", "date": "2030-12-10",
               "days_left": 35, "cause": "term_end"})
    );
    assert_eq!(lines[0]["kind"], json!("deadline_approaching"));
    assert_eq!(lines[0]["cancellation_date"], json!("2030-12-31"));
    assert_eq!(lines[0]["extends_to"], Value::Null);
    // Only one zone.
    let tokyo = db.run(&[
        "reminders",
        "--within",
        "2M",
        "--zone",
        "Asia/Tokyo",
        "--json",
        "--now",
        now,
    ]);
    tokyo.expect_code(0);
    let refs: Vec<String> = tokyo
        .json_lines()
        .iter()
        .map(|line| line["ref"].as_str().expect("ref").to_string())
        .collect();
    assert_eq!(refs, ["YEAR-TOKYO"]);
    // Nothing within a day.
    let none = db.run(&["reminders", "--within", "1D", "--now", now]);
    none.expect_code(0);
    assert_eq!(none.stdout.trim(), "nothing within the window");
    // Bad arguments are usage errors.
    db.run(&["reminders", "--within", "soon"])
        .expect_code(2)
        .expect_stderr(&["soon"]);
    db.run(&["reminders", "--within", "30D", "--zone", "Mars/Base"])
        .expect_code(2)
        .expect_stderr(&["Mars/Base"]);
}

fn run_sends_reminders_with_the_configured_lead_times(backend: Backend) {
    let db = TestDb::new(backend);
    let env = [("CONTRACTD__REMINDERS__LEAD_TIMES", "30D,7D")];
    let import = db.run_with_env(
        &[
            "import",
            db.write_file("c.jsonl", &jsonl(&contracts()))
                .to_str()
                .expect("path"),
        ],
        &env,
    );
    import.expect_code(0);
    assert_eq!(
        db.exported("YEAR-BERLIN")["next_reminder_on"],
        json!("2030-10-31")
    );
    let run = db.run_with_env(&["run", "--as-of", "2030-11-05"], &env);
    run.expect_code(0);
    assert!(run.stdout.contains("send_reminders"), "{}", run.stdout);
    let events = db.run(&["events", "--type", "contract.deadline_approaching"]);
    events.expect_code(0);
    let lines = events.json_lines();
    assert_eq!(lines.len(), 2, "{}", events.stdout);
    let berlin = lines
        .iter()
        .find(|line| line["data"]["ref"] == "YEAR-BERLIN")
        .expect("the Berlin reminder");
    assert_eq!(berlin["data"]["effective_on"], json!("2030-11-05"));
    assert_eq!(
        berlin["data"]["details"],
        json!({"lead_time": "30D", "latest_cancellation_date": "2030-11-30",
               "cancellation_date": "2030-12-31", "extends_to": null, "days_left": 25})
    );
    // The second run of the same day sends nothing; the record remembers what was sent.
    db.run_with_env(&["run", "--as-of", "2030-11-05"], &env)
        .expect_code(0);
    let again = db.run(&["events", "--type", "contract.deadline_approaching"]);
    assert_eq!(again.json_lines().len(), 2);
    let exported = db.exported("YEAR-BERLIN");
    assert_eq!(
        exported["reminders_sent"],
        json!([{"kind": "deadline_approaching", "date": "2030-11-30", "lead_time": "30D"}])
    );
    assert_eq!(exported["next_reminder_on"], json!("2030-11-23"));
}

fn reminder_fields_round_trip_through_export_and_import(backend: Backend) {
    let first = TestDb::new(backend);
    let records = vec![
        changed(
            minimal("OWN"),
            &[("/reminder_lead_times", json!(["30d", "1W", "2M"]))],
        ),
        changed(minimal("NONE"), &[("/reminder_lead_times", json!([]))]),
        changed(
            minimal("SENT"),
            &[
                ("/start_date", json!("2030-01-01")),
                ("/cancellation_window", json!("end_of_year")),
                ("/notice_period", json!("1M")),
                ("/reminder_lead_times", json!(["30D", "7D"])),
                (
                    "/reminders_sent",
                    json!([{"kind": "deadline_approaching", "date": "2030-11-30",
                            "lead_time": "30D"}]),
                ),
            ],
        ),
        minimal("CONFIGURED"),
    ];
    first.import_ok(&records);
    let exported = first.export_ok(&[]).stdout;
    let by_ref = |text: &str, reference: &str| -> Value {
        text.lines()
            .map(|line| serde_json::from_str::<Value>(line).expect("JSON"))
            .find(|record| record["ref"] == reference)
            .expect("exported")
    };
    assert_eq!(
        by_ref(&exported, "OWN")["reminder_lead_times"],
        json!(["30D", "1W", "2M"])
    );
    assert_eq!(by_ref(&exported, "NONE")["reminder_lead_times"], json!([]));
    assert!(by_ref(&exported, "NONE").get("next_reminder_on").is_none());
    assert!(by_ref(&exported, "CONFIGURED")
        .get("reminder_lead_times")
        .is_none());
    let sent = by_ref(&exported, "SENT");
    assert_eq!(sent["reminders_sent"][0]["lead_time"], json!("30D"));
    // The 30D reminder was sent: the next one is the 7D one.
    assert_eq!(sent["next_reminder_on"], json!("2030-11-23"));
    let second = TestDb::new(backend);
    second.import_text(&exported).expect_code(0);
    assert_eq!(second.export_ok(&[]).stdout, exported);
}

fn bad_reminder_fields_exit_3_naming_the_field(backend: Backend) {
    let db = TestDb::new(backend);
    let cases = [
        (
            changed(
                minimal("B-1"),
                &[("/reminder_lead_times", json!(["30D", "soon"]))],
            ),
            "reminder_lead_times[1]",
        ),
        (
            changed(
                minimal("B-2"),
                &[("/reminder_lead_times", json!(["7D", "7D"]))],
            ),
            "reminder_lead_times",
        ),
        (
            changed(minimal("B-3"), &[("/reminder_lead_times", json!("30D"))]),
            "reminder_lead_times",
        ),
        (
            changed(
                minimal("B-4"),
                &[(
                    "/reminders_sent",
                    json!([{"kind": "deadline_approaching", "date": "2030-02-30",
                            "lead_time": "30D"}]),
                )],
            ),
            "reminders_sent[0].date",
        ),
    ];
    for (record, field) in &cases {
        let outcome = db.import_records(std::slice::from_ref(record));
        outcome
            .expect_code(3)
            .expect_stderr(&[record["ref"].as_str().expect("ref"), field]);
    }
    db.assert_empty();
}

fn bad_configured_lead_times_exit_2_naming_the_key(backend: Backend) {
    let db = TestDb::new(backend);
    db.run_with_env(
        &["reminders", "--within", "30D"],
        &[("CONTRACTD__REMINDERS__LEAD_TIMES", "30D,3X")],
    )
    .expect_code(2)
    .expect_stderr(&["reminders.lead_times[1]"]);
    let file = db.write_file(
        "bad.toml",
        "[reminders]\nlead_times = [\"1D\", \"2D\", \"3D\", \"4D\", \"5D\", \"6D\", \"7D\", \"8D\", \"9D\"]\n",
    );
    db.run(&[
        "--config",
        file.to_str().expect("path"),
        "reminders",
        "--within",
        "30D",
    ])
    .expect_code(2)
    .expect_stderr(&["reminders.lead_times", "at most 8"]);
}
