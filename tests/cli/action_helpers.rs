//! Helpers for the tests that drive the operator actions (`cancel`, `end`, `revoke`) and the
//! sweep through the real binary: the instant that fixes "today", the events of `history`,
//! a snapshot of everything an action must leave alone when it is refused or fails, field
//! assertions that name the contract and the field, and a "poison" trigger that makes the
//! database refuse every update of chosen contracts (on SQLite and PostgreSQL alike).

use serde_json::Value;

use crate::harness::{block_on, Outcome, TestDb};
use crate::support::Backend;

/// The `--now` instant of an action: `2025-11-22` becomes `2025-11-22T10:00:00Z` (the same
/// date in every European and American zone); a full RFC 3339 instant is kept as it is.
pub fn instant(now: &str) -> String {
    if now.len() == 10 {
        format!("{now}T10:00:00Z")
    } else {
        now.to_string()
    }
}

/// Run `contractd COMMAND ARGS… --now INSTANT` (cancel, end or revoke) as of `now` (see
/// [`instant`]).
pub fn act(db: &TestDb, command: &str, args: &[&str], now: &str) -> Outcome {
    let now = instant(now);
    let mut full = vec![command];
    full.extend_from_slice(args);
    full.push("--now");
    full.push(&now);
    db.run(&full)
}

/// [`act`] with extra environment variables (configuration such as
/// `CONTRACTD__BILLING__ALLOW_END_BEFORE_BILLED_TO`).
pub fn act_with_env(
    db: &TestDb,
    command: &str,
    args: &[&str],
    now: &str,
    env: &[(&str, &str)],
) -> Outcome {
    let now = instant(now);
    let mut full = vec![command];
    full.extend_from_slice(args);
    full.push("--now");
    full.push(&now);
    db.run_with_env(&full, env)
}

/// `contractd run --as-of DATE`, which must succeed.
pub fn run_as_of(db: &TestDb, date: &str) -> Outcome {
    let outcome = db.run(&["run", "--as-of", date]);
    outcome.expect_code(0);
    outcome
}

/// One line of `contractd history`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEvent {
    /// The business date it took effect on.
    pub effective_on: String,
    /// Its kind, e.g. `cancellation_executed`.
    pub kind: String,
    /// The line it is about, if any.
    pub line: Option<String>,
    /// The whole line as printed.
    pub text: String,
}

/// The events of `reference`, oldest first, as `history` prints them (which must succeed).
pub fn history(db: &TestDb, reference: &str) -> Vec<HistoryEvent> {
    let outcome = db.run(&["history", reference]);
    outcome.expect_code(0);
    outcome
        .stdout
        .lines()
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            assert!(
                words.len() >= 3,
                "history {reference}: unexpected line {line:?}"
            );
            HistoryEvent {
                effective_on: words[0].to_string(),
                kind: words[1].to_string(),
                line: (words[2] == "line").then(|| words[3].to_string()),
                text: line.to_string(),
            }
        })
        .collect()
}

/// The kinds of `reference`'s events, oldest first.
pub fn kinds(db: &TestDb, reference: &str) -> Vec<String> {
    history(db, reference)
        .into_iter()
        .map(|event| event.kind)
        .collect()
}

/// The events of `reference` of this kind; panics (showing the history) unless there are
/// exactly `count`.
pub fn expect_events(db: &TestDb, reference: &str, kind: &str, count: usize) -> Vec<HistoryEvent> {
    let events = history(db, reference);
    let found: Vec<HistoryEvent> = events
        .iter()
        .filter(|event| event.kind == kind)
        .cloned()
        .collect();
    assert_eq!(
        found.len(),
        count,
        "contract '{reference}': expected {count} '{kind}' event(s) in its history:\n{}",
        events
            .iter()
            .map(|event| event.text.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    found
}

/// Everything about some contracts that an action must not change when it is refused or
/// fails: their export (computed fields included) and their history (with the recording
/// instants).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    refs: Vec<String>,
    export: String,
    histories: Vec<String>,
}

/// Take a [`Snapshot`] of `refs`.
pub fn snapshot(db: &TestDb, refs: &[&str]) -> Snapshot {
    let histories = refs
        .iter()
        .map(|reference| {
            let outcome = db.run(&["history", reference]);
            outcome.expect_code(0);
            outcome.stdout
        })
        .collect();
    Snapshot {
        refs: refs.iter().map(|r| r.to_string()).collect(),
        export: db.export_ok(refs).stdout,
        histories,
    }
}

/// Panic, naming what was done and the first difference, unless `refs` of `before` are
/// exactly as they were.
pub fn assert_unchanged(db: &TestDb, before: &Snapshot, what: &str) {
    let refs: Vec<&str> = before.refs.iter().map(String::as_str).collect();
    let after = snapshot(db, &refs);
    for (index, reference) in refs.iter().enumerate() {
        let old = before.export.lines().nth(index).unwrap_or_default();
        let new = after.export.lines().nth(index).unwrap_or_default();
        assert!(
            old == new,
            "{what} changed contract '{reference}':\n- {old}\n+ {new}"
        );
        assert!(
            before.histories[index] == after.histories[index],
            "{what} changed the history of contract '{reference}':\n--- before\n{}--- after\n{}",
            before.histories[index],
            after.histories[index]
        );
    }
}

/// The per-contract report lines an action printed on stderr: neither JSON log lines nor
/// the final `contractd: …` summary.
pub fn report_lines(outcome: &Outcome) -> Vec<&str> {
    outcome
        .stderr
        .lines()
        .filter(|line| !line.trim_start().starts_with('{') && !line.starts_with("contractd: "))
        .filter(|line| !line.trim().is_empty())
        .collect()
}

/// Panic, naming the contract and the field, unless the value at `pointer` (a JSON pointer
/// such as `/cancellation/end_date`) of the exported `record` is `expected`.
pub fn expect_field(record: &Value, pointer: &str, expected: Value) {
    let reference = record["ref"].as_str().unwrap_or("?");
    let actual = record.pointer(pointer).unwrap_or_else(|| {
        panic!("contract '{reference}': the export has no field {pointer}\n{record:#}")
    });
    assert_eq!(
        actual, &expected,
        "contract '{reference}': field {pointer}\n{record:#}"
    );
}

/// [`expect_field`] for several fields.
pub fn expect_fields(record: &Value, fields: &[(&str, Value)]) {
    for (pointer, expected) in fields {
        expect_field(record, pointer, expected.clone());
    }
}

/// The name of the poison trigger (and, on PostgreSQL, of its function).
const POISON: &str = "contractd_test_poison";

/// Make every UPDATE of the contracts `refs` fail inside the database (a trigger that raises
/// an error naming the contract), as a broken disk or a constraint added by another system
/// would. Undo with [`cure`].
pub fn poison(db: &TestDb, refs: &[&str]) {
    let list = refs
        .iter()
        .map(|reference| format!("'{}'", reference.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = match db.backend {
        Backend::Sqlite => format!(
            "CREATE TRIGGER {POISON} BEFORE UPDATE ON contracts WHEN OLD.ref IN ({list}) \
             BEGIN SELECT RAISE(ABORT, 'poisoned: this contract may not change'); END"
        ),
        Backend::Postgres => format!(
            "CREATE FUNCTION {POISON}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF OLD.ref IN ({list}) THEN \
             RAISE EXCEPTION 'poisoned: contract % may not change', OLD.ref; \
             END IF; RETURN NEW; END $$; \
             CREATE TRIGGER {POISON} BEFORE UPDATE ON contracts FOR EACH ROW \
             EXECUTE FUNCTION {POISON}()"
        ),
    };
    block_on(db.raw().execute(&sql));
}

/// Remove the trigger of [`poison`].
pub fn cure(db: &TestDb) {
    let sql = match db.backend {
        Backend::Sqlite => format!("DROP TRIGGER {POISON}"),
        Backend::Postgres => {
            format!("DROP TRIGGER {POISON} ON contracts; DROP FUNCTION {POISON}()")
        }
    };
    block_on(db.raw().execute(&sql));
}
