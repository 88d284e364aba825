//! Issue 3 ("Foundation"), through the real binary: `import` is all or nothing and names the
//! line, ref and field of every problem; `export | import | export` reproduces the state
//! byte for byte; `show`, `history` and `runs`; and a row that another system broke is
//! skipped by a sweep and reported by export. Every test runs on SQLite and PostgreSQL,
//! each on a brand-new database.

use std::collections::BTreeSet;

use crate::harness::{changed, example_contracts, jsonl, minimal, remove, rich, with_line, TestDb};
use crate::support::Backend;
use serde_json::{json, Value};

crate::both_databases! {
    backend: [
        each_bad_record_is_refused_naming_line_ref_and_field,
        duplicate_ref_in_the_file_names_both_lines,
        duplicate_ref_of_an_invalid_record_is_reported_too,
        duplicate_ref_against_the_database_writes_nothing,
        ref_of_64_characters_is_accepted,
        ref_with_a_control_character_is_refused_and_escaped,
        invalid_utf8_is_reported_with_its_line,
        byte_order_mark_and_crlf_line_ends_are_accepted,
        import_reads_standard_input,
        json_errors_give_the_column_not_a_second_line_number,
        empty_file_is_refused,
        missing_file_is_refused,
        one_bad_record_spoils_the_whole_file,
        ten_thousand_records_with_a_hundred_bad_ones,
        export_import_export_is_byte_identical,
        computed_fields_in_the_file_are_ignored,
        initial_term_gives_the_end_date,
        defaults_are_applied,
        export_by_ref,
        export_of_an_unknown_ref_prints_nothing,
        show_prints_the_contract_as_json,
        history_lists_the_imported_event,
        runs_lists_the_ledger_after_a_run,
        invalid_row_is_skipped_by_the_sweep_and_reported_by_export,
    ],
}

/// Import `records` (given as text lines) into a fresh database: exit 3, nothing written.
/// Returns the outcome for the caller to check the messages.
fn refused(db: &TestDb, text: &str) -> crate::harness::Outcome {
    let outcome = db.import_text(text);
    outcome
        .expect_code(3)
        .expect_stderr(&["nothing was imported"]);
    assert_eq!(outcome.stdout, "", "a refused import printed on stdout");
    db.assert_empty();
    outcome
}

/// One bad record: what it is, its text, and what the problem reported for it must mention.
struct BadCase {
    name: &'static str,
    text: String,
    needles: &'static [&'static str],
}

fn case(name: &'static str, record: Value, needles: &'static [&'static str]) -> BadCase {
    BadCase {
        name,
        text: record.to_string(),
        needles,
    }
}

/// Every rule of docs/rules.md section 3 (the contract record) broken once, plus syntax and type
/// errors.
fn bad_cases() -> Vec<BadCase> {
    let truncated = {
        let full = minimal("CUT").to_string();
        full[..full.len() / 2].to_string()
    };
    let mut no_term = with_line("NO-TERM");
    remove(&mut no_term, "/extension_term");
    vec![
        BadCase {
            name: "truncated JSON",
            text: truncated,
            needles: &["EOF"],
        },
        case(
            "amount_minor as a string",
            changed(
                with_line("TYPE-1"),
                &[("/lines/0/amount_minor", json!("1000"))],
            ),
            &["'TYPE-1'", "lines[0].amount_minor", "invalid type"],
        ),
        case(
            "auto_extend as \"yes\"",
            changed(minimal("TYPE-2"), &[("/auto_extend", json!("yes"))]),
            &["'TYPE-2'", "auto_extend", "invalid type"],
        ),
        case(
            "unknown top-level field",
            changed(minimal("UNKNOWN-1"), &[("/colour", json!("red"))]),
            &["'UNKNOWN-1'", "colour", "unknown field"],
        ),
        case(
            "unknown field in lines[0]",
            changed(with_line("UNKNOWN-2"), &[("/lines/0/colour", json!("red"))]),
            &["'UNKNOWN-2'", "lines[0].colour", "unknown field"],
        ),
        case(
            "unknown zone",
            changed(
                minimal("ZONE"),
                &[("/time_zone", json!("Mars/Olympus_Mons"))],
            ),
            &["'ZONE'", "time_zone", "Mars/Olympus_Mons"],
        ),
        case(
            "bad period",
            changed(minimal("PERIOD"), &[("/notice_period", json!("13X"))]),
            &["'PERIOD'", "notice_period", "13X"],
        ),
        case(
            "bad date",
            changed(minimal("DATE"), &[("/start_date", json!("2025-02-30"))]),
            &["'DATE'", "start_date", "2025-02-30"],
        ),
        case(
            "bad line date",
            changed(
                with_line("LINE-DATE"),
                &[("/lines/0/end_date", json!("2025-13-01"))],
            ),
            &["'LINE-DATE'", "lines[0].end_date", "2025-13-01"],
        ),
        case(
            "end_date before start_date",
            changed(
                minimal("BACKWARDS"),
                &[
                    ("/start_date", json!("2025-03-01")),
                    ("/end_date", json!("2025-02-28")),
                ],
            ),
            &["'BACKWARDS'", "end_date", "2025-02-28"],
        ),
        case(
            "end_of_term without an end date",
            changed(
                minimal("NO-END"),
                &[("/cancellation_window", json!("end_of_term"))],
            ),
            &["'NO-END'", "cancellation_window", "end date"],
        ),
        case(
            "auto_extend without extension_term",
            no_term,
            &["'NO-TERM'", "extension_term", "auto_extend"],
        ),
        case(
            "line starts before its contract",
            changed(
                with_line("EARLY"),
                &[("/lines/0/start_date", json!("2024-12-31"))],
            ),
            &["'EARLY'", "lines[0].start_date", "2024-12-31"],
        ),
        case(
            "line ends after its contract",
            changed(
                with_line("LATE"),
                &[("/lines/0/end_date", json!("2026-01-01"))],
            ),
            &["'LATE'", "lines[0].end_date", "2026-01-01"],
        ),
        case(
            "line starts after its contract ends",
            changed(
                with_line("AFTER"),
                &[
                    ("/lines/0/start_date", json!("2026-02-01")),
                    ("/lines/0/end_date", Value::Null),
                ],
            ),
            &["'AFTER'", "lines[0].start_date", "2026-02-01"],
        ),
        case(
            "negative line amount",
            changed(
                with_line("NEG-LINE"),
                &[("/lines/0/amount_minor", json!(-1))],
            ),
            &["'NEG-LINE'", "lines[0].amount_minor", "-1"],
        ),
        case(
            "negative schedule amount",
            changed(
                with_line("NEG-SCHED"),
                &[("/schedules/0/amount_minor", json!(-2))],
            ),
            &["'NEG-SCHED'", "schedules[0].amount_minor", "-2"],
        ),
        case(
            "negative document amount",
            changed(
                with_line("NEG-DOC"),
                &[("/documents/0/amount_minor", json!(-3))],
            ),
            &["'NEG-DOC'", "documents[0].amount_minor", "-3"],
        ),
        case(
            "ref of 65 characters",
            minimal(&"R".repeat(65)),
            &["ref", "64", "65"],
        ),
        case(
            "ref with a control character",
            minimal("TAB\tREF"),
            &["ref", "printable"],
        ),
        case(
            "unknown status",
            changed(minimal("STATUS"), &[("/status", json!("paused"))]),
            &["'STATUS'", "status", "paused"],
        ),
    ]
}

/// Each bad record on line 2 of a file of valid records: exit 3, only line 2 reported,
/// naming the ref and field, and nothing written. All cases share one database (none may
/// write anything); every failing case is listed, not only the first.
fn each_bad_record_is_refused_naming_line_ref_and_field(backend: Backend) {
    let db = TestDb::new(backend);
    let mut failures = Vec::new();
    for case in bad_cases() {
        let text = format!(
            "{}\n{}\n{}\n",
            minimal("GOOD-1"),
            case.text,
            with_line("GOOD-2")
        );
        let outcome = db.import_text(&text);
        let mut wrong = Vec::new();
        if outcome.code != 3 {
            wrong.push(format!("exit {} instead of 3", outcome.code));
        }
        if !outcome.stdout.is_empty() {
            wrong.push(format!("stdout {:?}", outcome.stdout));
        }
        if outcome.problem_lines() != BTreeSet::from([2]) {
            wrong.push(format!("reported lines {:?}", outcome.problem_lines()));
        }
        if !outcome.stderr.contains("1 invalid record(s)")
            || !outcome.stderr.contains("nothing was imported")
        {
            wrong.push("no summary".to_string());
        }
        let problem = outcome
            .problems()
            .into_iter()
            .find(|(line, _)| *line == 2)
            .map(|(_, text)| text)
            .unwrap_or_default();
        for needle in case.needles {
            if !problem.contains(needle) {
                wrong.push(format!("does not mention {needle:?}"));
            }
        }
        if db.count("contracts") != 0 {
            wrong.push("contracts were written".to_string());
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{}: {}\n    stderr: {}",
                case.name,
                wrong.join("; "),
                outcome.stderr.trim_end().replace('\n', "\n            ")
            ));
        }
    }
    db.assert_empty();
    assert!(
        failures.is_empty(),
        "{} bad record case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn duplicate_ref_in_the_file_names_both_lines(backend: Backend) {
    let db = TestDb::new(backend);
    let text = jsonl(&[
        minimal("ONE"),
        minimal("TWICE"),
        minimal("TWO"),
        with_line("TWICE"),
    ]);
    let outcome = refused(&db, &text);
    assert_eq!(outcome.problem_lines(), BTreeSet::from([4]));
    let problem = outcome.problem(4);
    assert!(
        problem.contains("'TWICE'") && problem.contains("ref") && problem.contains("line 2"),
        "the duplicate must name the ref and both lines: {problem}"
    );
}

/// A second record with the ref of an invalid one is still a duplicate: the operator should
/// learn of both problems from one run, not from the next.
fn duplicate_ref_of_an_invalid_record_is_reported_too(backend: Backend) {
    let db = TestDb::new(backend);
    let text = jsonl(&[
        minimal("ONE"),
        changed(minimal("TWICE"), &[("/notice_period", json!("13X"))]),
        minimal("TWICE"),
    ]);
    let outcome = refused(&db, &text);
    assert_eq!(outcome.problem_lines(), BTreeSet::from([2, 3]));
    assert!(outcome.problem(2).contains("notice_period"));
    let duplicate = outcome.problem(3);
    assert!(
        duplicate.contains("'TWICE'") && duplicate.contains("line 2"),
        "the duplicate must name the ref and both lines: {duplicate}"
    );
}

fn duplicate_ref_against_the_database_writes_nothing(backend: Backend) {
    let db = TestDb::new(backend);
    db.import_ok(&[minimal("FIRST-A"), minimal("SHARED"), with_line("FIRST-B")]);
    let before = db.export_ok(&[]).stdout;
    let events_before = db.count("contract_events");
    let outcome = db.import_records(&[
        minimal("SECOND-A"),
        with_line("SECOND-B"),
        minimal("SHARED"),
        changed(minimal("FIRST-B"), &[("/notice_period", json!("13X"))]),
    ]);
    outcome
        .expect_code(3)
        .expect_stderr(&["nothing was imported"]);
    assert_eq!(outcome.problem_lines(), BTreeSet::from([3, 4]));
    let problem = outcome.problem(3);
    assert!(
        problem.contains("'SHARED'") && problem.contains("ref") && problem.contains("exists"),
        "the problem must name the ref that exists: {problem}"
    );
    // An invalid record is checked against the database too: both of its problems at once.
    let fourth: Vec<String> = outcome
        .problems()
        .into_iter()
        .filter(|(line, _)| *line == 4)
        .map(|(_, text)| text)
        .collect();
    assert!(
        fourth.iter().any(|text| text.contains("notice_period"))
            && fourth
                .iter()
                .any(|text| text.contains("'FIRST-B'") && text.contains("exists")),
        "line 4 must report its bad period and its existing ref: {fourth:?}"
    );
    assert_eq!(
        db.export_ok(&[]).stdout,
        before,
        "the second file changed the state"
    );
    assert_eq!(db.count("contracts"), 3);
    assert_eq!(db.count("contract_events"), events_before);
}

/// The longest ref allowed, in characters (not bytes).
fn ref_of_64_characters_is_accepted(backend: Backend) {
    let db = TestDb::new(backend);
    let long = "Ä".repeat(64);
    db.import_ok(&[minimal(&long)]);
    assert_eq!(db.exported(&long)["ref"], long.as_str());
}

fn ref_with_a_control_character_is_refused_and_escaped(backend: Backend) {
    let db = TestDb::new(backend);
    let outcome = refused(
        &db,
        &format!("{}\n{}\n", minimal("GOOD"), minimal("BELL\u{7}\u{1b}[2J")),
    );
    let problem = outcome.problem(2);
    assert!(
        problem.contains("ref") && problem.contains("printable"),
        "{problem}"
    );
    // The message must not carry the control characters themselves to the terminal (an
    // escape sequence in a ref could rewrite the operator's screen or forge a log line).
    assert!(
        !outcome.stderr.chars().any(|c| c.is_control() && c != '\n'),
        "stderr passes control characters through: {:?}",
        outcome.stderr
    );
    assert!(
        problem.contains("BELL"),
        "the ref is still named: {problem}"
    );
}

/// A line that is not UTF-8 is one bad record like any other: named by its line number, and
/// the rest of the file is still checked.
fn invalid_utf8_is_reported_with_its_line(backend: Backend) {
    let db = TestDb::new(backend);
    let mut bytes = jsonl(&[minimal("U-1")]).into_bytes();
    let mut latin1 =
        jsonl(&[changed(minimal("U-2"), &[("/customer", json!("M~ller"))])]).into_bytes();
    let tilde = latin1.iter().position(|b| *b == b'~').expect("marker");
    latin1[tilde] = 0xFC; // ü in Latin-1
    bytes.extend(latin1);
    bytes
        .extend(jsonl(&[changed(minimal("U-3"), &[("/notice_period", json!("1X"))])]).into_bytes());
    let path = db.dir.path().join("latin1.jsonl");
    std::fs::write(&path, bytes).expect("write");
    let outcome = db.run(&["import", path.to_str().expect("UTF-8")]);
    outcome
        .expect_code(3)
        .expect_stderr(&["nothing was imported"]);
    assert_eq!(
        outcome.problem_lines(),
        BTreeSet::from([2, 3]),
        "{}",
        outcome.stderr
    );
    assert!(outcome.problem(2).contains("UTF-8"), "{}", outcome.stderr);
    assert!(
        outcome.problem(3).contains("notice_period"),
        "{}",
        outcome.stderr
    );
    db.assert_empty();
}

/// Files saved by Windows tools: a UTF-8 byte order mark before the first record and CRLF
/// line ends.
fn byte_order_mark_and_crlf_line_ends_are_accepted(backend: Backend) {
    let db = TestDb::new(backend);
    let text = format!("\u{feff}{}\r\n{}\r\n", minimal("BOM-1"), with_line("BOM-2"));
    let outcome = db.import_text(&text);
    outcome.expect_code(0);
    assert_eq!(db.export_ok(&[]).exported_refs(), ["BOM-1", "BOM-2"]);
    // A byte order mark anywhere else is not whitespace.
    let later = format!("{}\n\u{feff}{}\n", minimal("BOM-3"), minimal("BOM-4"));
    let refused = db.import_text(&later);
    refused.expect_code(3);
    assert_eq!(refused.problem_lines(), BTreeSet::from([2]));
}

fn import_reads_standard_input(backend: Backend) {
    let db = TestDb::new(backend);
    let mut command = db.command(&["import", "-"]);
    command.stdin(std::process::Stdio::piped());
    let text = jsonl(&[minimal("STDIN-1"), rich(4)]);
    let path = db.write_file("stdin.jsonl", &text);
    command.stdin(std::fs::File::open(path).expect("open"));
    let outcome = crate::harness::run_command(command);
    outcome.expect_code(0);
    assert_eq!(db.export_ok(&[]).exported_refs(), ["STDIN-1", "GEN-004"]);
}

/// Each record is one line, so a position inside it is a column: a message saying "line 1"
/// there would contradict the file line number it starts with.
fn json_errors_give_the_column_not_a_second_line_number(backend: Backend) {
    let db = TestDb::new(backend);
    let text = format!(
        "{}\n{}\n",
        minimal("COL-1"),
        changed(
            with_line("COL-2"),
            &[("/lines/0/amount_minor", json!("12"))]
        )
    );
    let outcome = refused(&db, &text);
    let problem = outcome.problem(2);
    assert!(!problem.contains("line 1"), "{problem}");
    assert!(problem.contains("column"), "{problem}");
}

fn empty_file_is_refused(backend: Backend) {
    let db = TestDb::new(backend);
    for text in ["", "\n\n   \n"] {
        let outcome = db.import_text(text);
        outcome.expect_code(3).expect_stderr(&["no contracts"]);
        db.assert_empty();
    }
}

fn missing_file_is_refused(backend: Backend) {
    let db = TestDb::new(backend);
    let missing = db.dir.path().join("nope.jsonl");
    let outcome = db.run(&["import", missing.to_str().expect("UTF-8")]);
    outcome.expect_code(3).expect_stderr(&["nope.jsonl"]);
    db.assert_empty();
}

fn one_bad_record_spoils_the_whole_file(backend: Backend) {
    let db = TestDb::new(backend);
    let mut records: Vec<Value> = (0..20).map(rich).collect();
    records.push(changed(minimal("LAST"), &[("/proration", json!("daily"))]));
    let outcome = db.import_records(&records);
    outcome.expect_code(3);
    assert_eq!(outcome.problem_lines(), BTreeSet::from([21]));
    assert!(outcome.problem(21).contains("proration"));
    db.assert_empty();
}

/// One bad record of each kind, by number.
fn bad_record(kind: usize, line: usize, previous_ref: &str) -> String {
    let reference = format!("BULK-{line:05}");
    let bad = match kind % 10 {
        0 => {
            let full = minimal(&reference).to_string();
            return full[..full.len() - 10].to_string();
        }
        1 => changed(
            with_line(&reference),
            &[("/lines/0/amount_minor", json!("9"))],
        ),
        2 => changed(minimal(&reference), &[("/colour", json!(1))]),
        3 => changed(
            minimal(&reference),
            &[("/time_zone", json!("Nowhere/City"))],
        ),
        4 => changed(minimal(&reference), &[("/notice_period", json!("13X"))]),
        5 => changed(minimal(&reference), &[("/start_date", json!("2025-02-30"))]),
        6 => changed(
            with_line(&reference),
            &[("/documents/0/amount_minor", json!(-5))],
        ),
        7 => minimal(previous_ref),
        8 => {
            let mut record = with_line(&reference);
            remove(&mut record, "/extension_term");
            record
        }
        _ => changed(
            with_line(&reference),
            &[("/lines/0/start_date", json!("2024-06-01"))],
        ),
    };
    bad.to_string()
}

fn ten_thousand_records_with_a_hundred_bad_ones(backend: Backend) {
    let db = TestDb::new(backend);
    let mut bad_lines: BTreeSet<usize> = (0..99).map(|k| k * 100 + (k * 37) % 100 + 1).collect();
    bad_lines.insert(10_000);
    assert_eq!(bad_lines.len(), 100);
    let mut text = String::new();
    let mut previous = String::new();
    for line in 1..=10_000 {
        if bad_lines.contains(&line) {
            let kind = bad_lines.range(..line).count();
            text.push_str(&bad_record(kind, line, &previous));
        } else {
            previous = format!("BULK-{line:05}");
            let record = if line % 10 == 0 {
                with_line(&previous)
            } else {
                minimal(&previous)
            };
            text.push_str(&record.to_string());
        }
        text.push('\n');
    }
    let outcome = refused(&db, &text);
    outcome.expect_stderr(&["100 invalid record(s)"]);
    assert_eq!(
        outcome.problem_lines(),
        bad_lines,
        "every bad line, and only those, must be reported"
    );
    assert_eq!(outcome.problems().len(), 100, "one report per bad line");
}

/// The state of a database as export prints it: examples plus generated contracts.
fn seeded(backend: Backend) -> (TestDb, String) {
    let db = TestDb::new(backend);
    let mut text = example_contracts();
    text.push_str(&jsonl(&(0..40).map(rich).collect::<Vec<_>>()));
    let outcome = db.import_text(&text);
    outcome.expect_code(0);
    assert!(
        outcome.stdout.contains("imported 48 contracts"),
        "{}",
        outcome.stdout
    );
    let export = db.export_ok(&[]);
    (db, export.stdout)
}

/// Every key of docs/rules.md section 3 (the contract record), computed ones included, is in each
/// exported record.
const EXPORTED_KEYS: [&str; 24] = [
    "ref",
    "customer",
    "status",
    "time_zone",
    "start_date",
    "end_date",
    "initial_term",
    "original_end_date",
    "minimum_term_end",
    "notice_period",
    "cancellation_window",
    "auto_extend",
    "extension_term",
    "proration",
    "lines",
    "schedules",
    "documents",
    "cancellation",
    "end_reason",
    "end_notes",
    "cancellation_date",
    "latest_cancellation_date",
    "renewals",
    "change_requests",
];

fn export_import_export_is_byte_identical(backend: Backend) {
    let (first, exported) = seeded(backend);
    let records: Vec<Value> = exported
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON"))
        .collect();
    assert_eq!(records.len(), 48);
    for record in &records {
        let object = record.as_object().expect("an object");
        for key in EXPORTED_KEYS {
            assert!(object.contains_key(key), "export lacks {key}: {record}");
        }
        assert_eq!(
            object.len(),
            EXPORTED_KEYS.len(),
            "unexpected keys: {record}"
        );
    }
    // The generated variety really made it through.
    let any = |pointer: &str| {
        records
            .iter()
            .any(|r| !r[pointer.trim_start_matches('/')].is_null())
    };
    assert!(any("/cancellation") && any("/initial_term") && any("/end_reason"));
    assert!(records.iter().any(|r| r["lines"]
        .as_array()
        .is_some_and(|lines| lines.iter().any(|line| !line["cancellation"].is_null()))));
    for status in ["draft", "active", "expired", "cancelled"] {
        assert!(records.iter().any(|r| r["status"] == status), "no {status}");
    }

    let second = TestDb::new(backend);
    second.import_text(&exported).expect_code(0);
    let again = second.export_ok(&[]).stdout;
    assert!(
        again == exported,
        "export | import | export differs:\n{}",
        first_difference(&exported, &again)
    );
    // And the first database is unchanged by being exported.
    assert_eq!(first.export_ok(&[]).stdout, exported);
}

fn first_difference(left: &str, right: &str) -> String {
    for (number, (a, b)) in left.lines().zip(right.lines()).enumerate() {
        if a != b {
            return format!("line {}:\n- {a}\n+ {b}", number + 1);
        }
    }
    format!(
        "{} lines against {} lines",
        left.lines().count(),
        right.lines().count()
    )
}

fn computed_fields_in_the_file_are_ignored(backend: Backend) {
    let db = TestDb::new(backend);
    // A far-away fixed term: its dates do not depend on today.
    let base = json!({
        "ref": "COMPUTED",
        "customer": "Far Future",
        "start_date": "2090-01-01",
        "end_date": "2099-12-31",
        "notice_period": "1M",
        "cancellation_window": "end_of_term",
        "auto_extend": false,
    });
    let lying = changed(
        base.clone(),
        &[
            ("/cancellation_date", json!("1999-01-01")),
            ("/latest_cancellation_date", json!("not even a date")),
        ],
    );
    db.import_ok(&[lying]);
    let exported = db.exported("COMPUTED");
    assert_eq!(exported["cancellation_date"], "2099-12-31");
    assert_eq!(exported["latest_cancellation_date"], "2099-11-30");

    let clean = TestDb::new(backend);
    clean.import_ok(&[base]);
    assert_eq!(clean.exported("COMPUTED"), exported);
}

fn initial_term_gives_the_end_date(backend: Backend) {
    let db = TestDb::new(backend);
    let term = |reference: &str, start: &str, term: &str| {
        json!({
            "ref": reference,
            "customer": "Term",
            "start_date": start,
            "initial_term": term,
            "cancellation_window": "end_of_term",
            "auto_extend": false,
        })
    };
    db.import_ok(&[
        term("YEAR", "2025-01-01", "1Y"),
        term("QUARTER", "2025-01-15", "1Q"),
        term("LEAP", "2024-01-31", "1M"),
        term("WEEKS", "2025-11-22", "2W"),
    ]);
    for (reference, end, initial) in [
        ("YEAR", "2025-12-31", "1Y"),
        ("QUARTER", "2025-04-14", "1Q"),
        ("LEAP", "2024-02-28", "1M"),
        ("WEEKS", "2025-12-05", "2W"),
    ] {
        let record = db.exported(reference);
        assert_eq!(record["end_date"], end, "{reference}");
        assert_eq!(record["initial_term"], initial, "{reference}");
    }
    // An explicit end date wins over the term.
    let explicit = changed(
        term("EXPLICIT", "2025-01-01", "1Y"),
        &[("/end_date", json!("2025-06-30"))],
    );
    db.import_ok(&[explicit]);
    assert_eq!(db.exported("EXPLICIT")["end_date"], "2025-06-30");
}

fn defaults_are_applied(backend: Backend) {
    let db = TestDb::new(backend);
    let record = json!({
        "ref": "DEFAULTS",
        "customer": "Minimal GmbH",
        "start_date": "2025-01-01",
        "cancellation_window": "end_of_month",
        "auto_extend": false,
        "lines": [{
            "ref": "l1",
            "kind": "one_time",
            "billable": true,
            "start_date": "2025-01-01",
            "amount_minor": 500,
            "currency": "EUR",
        }],
        "schedules": [{
            "line_ref": "l1",
            "period_start": "2025-01-01",
            "period_end": "2025-01-01",
            "amount_minor": 500,
            "status": "planned",
        }],
    });
    db.run_with_env(
        &[
            "import",
            db.write_file("d.jsonl", &jsonl(&[record]))
                .to_str()
                .expect("UTF-8"),
        ],
        &[("CONTRACTD__CONTRACTS__DEFAULT_TIME_ZONE", "Asia/Tokyo")],
    )
    .expect_code(0);
    let exported = db.exported("DEFAULTS");
    assert_eq!(exported["status"], "active");
    assert_eq!(exported["time_zone"], "Asia/Tokyo");
    assert_eq!(exported["notice_period"], "0D");
    assert_eq!(exported["proration"], "actual_days");
    assert_eq!(exported["end_date"], Value::Null);
    assert_eq!(exported["extension_term"], Value::Null);
    assert_eq!(exported["cancellation"], Value::Null);
    assert_eq!(exported["renewals"], json!([]));
    assert_eq!(exported["change_requests"], json!([]));
    assert_eq!(exported["documents"], json!([]));
    let line = &exported["lines"][0];
    assert_eq!(line["status"], "active");
    assert_eq!(line["auto_extend"], false);
    assert_eq!(line["description"], "");
    assert_eq!(line["end_date"], Value::Null);
    assert_eq!(exported["schedules"][0]["document"], Value::Null);
    assert!(exported["cancellation_date"].is_string(), "{exported}");
    // Without the variable, the shipped default zone (UTC) applies.
    db.import_ok(&[minimal("UTC-DEFAULT")]);
    assert_eq!(db.exported("UTC-DEFAULT")["time_zone"], "UTC");
}

fn export_by_ref(backend: Backend) {
    let db = TestDb::new(backend);
    db.import_ok(&[minimal("A"), rich(1), minimal("C"), rich(2)]);
    let all = db.export_ok(&[]).json_lines();
    assert_eq!(all.len(), 4);
    let one = db.export_ok(&["GEN-001"]);
    assert_eq!(one.json_lines(), vec![all[1].clone()]);
    let several = db.export_ok(&["C", "A", "GEN-002"]);
    assert_eq!(several.exported_refs(), ["C", "A", "GEN-002"]);
    assert_eq!(several.json_lines()[2], all[3]);
}

/// An unknown ref is invalid input: exit 3, and nothing half-written on stdout for a script
/// to pick up.
fn export_of_an_unknown_ref_prints_nothing(backend: Backend) {
    let db = TestDb::new(backend);
    db.import_ok(&[minimal("A"), minimal("B")]);
    for args in [
        &["export", "--ref", "MISSING"][..],
        &["export", "--ref", "A", "--ref", "MISSING", "--ref", "B"][..],
    ] {
        let outcome = db.run(args);
        outcome.expect_code(3).expect_stderr(&["MISSING"]);
        assert_eq!(outcome.stdout, "", "export {args:?} printed records");
    }
}

fn show_prints_the_contract_as_json(backend: Backend) {
    let db = TestDb::new(backend);
    db.import_ok(&[rich(2), minimal("OTHER")]);
    let outcome = db.run(&["show", "GEN-002"]);
    outcome.expect_code(0);
    let shown: Value = serde_json::from_str(&outcome.stdout)
        .unwrap_or_else(|error| panic!("show did not print JSON ({error}): {}", outcome.stdout));
    assert_eq!(shown, db.exported("GEN-002"));
    let missing = db.run(&["show", "NOPE"]);
    missing.expect_code(3).expect_stderr(&["NOPE"]);
    assert_eq!(missing.stdout, "");
}

fn history_lists_the_imported_event(backend: Backend) {
    let db = TestDb::new(backend);
    db.import_ok(&[minimal("HIST"), minimal("OTHER")]);
    let outcome = db.run(&["history", "HIST"]);
    outcome.expect_code(0);
    let lines: Vec<&str> = outcome.stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "one event after an import:\n{}",
        outcome.stdout
    );
    assert!(lines[0].contains("imported"), "{}", outcome.stdout);
    db.run(&["history", "NOPE"])
        .expect_code(3)
        .expect_stderr(&["NOPE"]);
}

fn runs_lists_the_ledger_after_a_run(backend: Backend) {
    let db = TestDb::new(backend);
    let before = db.run(&["runs"]);
    before.expect_code(0);
    assert_eq!(
        before.stdout.lines().count(),
        1,
        "only the header:\n{}",
        before.stdout
    );
    db.import_ok(&[
        changed(minimal("ENDS"), &[("/end_date", json!("2025-03-31"))]),
        minimal("GOES-ON"),
    ]);
    db.run(&["run", "--as-of", "2025-07-01"]).expect_code(0);
    let outcome = db.run(&["runs"]);
    outcome.expect_code(0);
    let rows: Vec<Vec<&str>> = outcome
        .stdout
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect())
        .collect();
    let jobs: BTreeSet<&str> = rows.iter().map(|row| row[2]).collect();
    assert_eq!(
        jobs,
        BTreeSet::from([
            "execute_cancellations",
            "auto_extend",
            "expire",
            "refresh_deadlines",
            "send_reminders"
        ]),
        "{}",
        outcome.stdout
    );
    for row in &rows {
        assert_eq!(row[0], "2025-07-01", "{}", outcome.stdout);
        assert_eq!(row[1], "UTC");
        assert_eq!(row[3], "succeeded", "{}", outcome.stdout);
    }
    let expire = rows.iter().find(|row| row[2] == "expire").expect("expire");
    assert_eq!(expire[6], "1", "one contract expired:\n{}", outcome.stdout);
}

fn invalid_row_is_skipped_by_the_sweep_and_reported_by_export(backend: Backend) {
    let db = TestDb::new(backend);
    let ending =
        |reference: &str| changed(minimal(reference), &[("/end_date", json!("2025-03-31"))]);
    db.import_ok(&[
        ending("OK-1"),
        ending("BROKEN"),
        ending("OK-2"),
        minimal("EVERGREEN"),
    ]);
    let changed_rows = crate::harness::block_on(
        db.raw()
            .execute("UPDATE contracts SET notice_period = '5X' WHERE ref = 'BROKEN'"),
    );
    assert_eq!(changed_rows, 1);

    let run = db.run(&["run", "--as-of", "2025-07-01"]);
    run.expect_code(0);
    let events = run.log_events();
    assert!(
        !events.is_empty(),
        "stderr is not JSON lines:\n{}",
        run.stderr
    );
    let invalid: Vec<&Value> = events
        .iter()
        .filter(|event| event["event"] == "contract.invalid")
        .collect();
    assert!(
        !invalid.is_empty(),
        "no contract.invalid logged:\n{}",
        run.stderr
    );
    for event in &invalid {
        assert_eq!(event["contract_ref"], "BROKEN", "{event}");
        assert_eq!(event["field"], "notice_period", "{event}");
        assert!(
            event["reason"]
                .as_str()
                .is_some_and(|reason| reason.contains("5X")),
            "{event}"
        );
    }
    let expired: BTreeSet<&str> = events
        .iter()
        .filter(|event| event["event"] == "contract.transition")
        .filter_map(|event| event["contract_ref"].as_str())
        .collect();
    assert_eq!(expired, BTreeSet::from(["OK-1", "OK-2"]), "{}", run.stderr);
    let skipped: u64 = events
        .iter()
        .filter(|event| event["event"] == "job.finished")
        .filter_map(|event| event["skipped"].as_u64())
        .sum();
    assert!(
        skipped >= 1,
        "the broken row is counted as skipped:\n{}",
        run.stderr
    );

    let export = db.run(&["export"]);
    export
        .expect_code(1)
        .expect_stderr(&["BROKEN", "notice_period", "5X"]);
    assert_eq!(export.exported_refs(), ["OK-1", "OK-2", "EVERGREEN"]);
    let records = export.json_lines();
    assert_eq!(records[0]["status"], "expired");
    assert_eq!(records[1]["status"], "expired");
    assert_eq!(records[2]["status"], "active");

    // show names the broken row too, as a failure rather than invalid input.
    db.run(&["show", "BROKEN"])
        .expect_code(1)
        .expect_stderr(&["notice_period"]);
}
