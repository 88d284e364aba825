//! Helpers for the tests that drive the real `contractd` binary: a brand-new database per
//! test on either backend, running the binary against it with chosen arguments and
//! environment, the captured outcome, and generated contract records.

use std::collections::BTreeSet;
use std::future::Future;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, SqliteConnection};
use tempfile::TempDir;

use crate::support::{date, drop_postgres, fresh_postgres_url, sqlite_url, Backend, RawDb};

/// The binary under test (a debug build).
pub const BINARY: &str = env!("CARGO_BIN_EXE_contractd");

/// No command of these tests may take longer than this; a hung binary fails the test.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Run a future to completion on a small runtime of its own (the tests themselves are
/// synchronous: they spawn processes).
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("cannot build a tokio runtime")
        .block_on(future)
}

/// What one run of the binary did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The command line, for failure messages.
    pub args: Vec<String>,
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
}

impl Outcome {
    /// Panic with the whole outcome unless the exit code is `code`.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "contractd {:?} exited {} (expected {code})\n--- stdout\n{}\n--- stderr\n{}",
            self.args, self.code, self.stdout, self.stderr
        );
        self
    }

    /// Panic unless stderr contains every one of `needles`.
    pub fn expect_stderr(&self, needles: &[&str]) -> &Self {
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "contractd {:?}: stderr does not mention {needle:?}\n--- stderr\n{}",
                self.args,
                self.stderr
            );
        }
        self
    }

    /// Stdout as JSON Lines; panics when any line is not a JSON object (stdout of export
    /// must hold nothing else: logs go to stderr).
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|line| match serde_json::from_str::<Value>(line) {
                Ok(value) if value.is_object() => value,
                _ => panic!(
                    "contractd {:?}: stdout line is not a JSON object: {line:?}\n--- stdout\n{}",
                    self.args, self.stdout
                ),
            })
            .collect()
    }

    /// The refs of the records on stdout, in order.
    pub fn exported_refs(&self) -> Vec<String> {
        self.json_lines()
            .iter()
            .map(|record| record["ref"].as_str().expect("ref").to_string())
            .collect()
    }

    /// The log lines on stderr that are JSON objects (logs are JSON when stderr is not a
    /// terminal).
    pub fn log_events(&self) -> Vec<Value> {
        self.stderr
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(Value::is_object)
            .collect()
    }

    /// The import problems on stderr: lines `line N: …`, by line number.
    pub fn problems(&self) -> Vec<(usize, String)> {
        self.stderr
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix("line ")?;
                let (number, _) = rest.split_once(':')?;
                Some((number.parse().ok()?, line.to_string()))
            })
            .collect()
    }

    /// The line numbers of the import problems.
    pub fn problem_lines(&self) -> BTreeSet<usize> {
        self.problems().into_iter().map(|(line, _)| line).collect()
    }

    /// The single problem reported for `line`; panics when there is none.
    pub fn problem(&self, line: usize) -> String {
        self.problems()
            .into_iter()
            .find(|(number, _)| *number == line)
            .map(|(_, text)| text)
            .unwrap_or_else(|| {
                panic!(
                    "contractd {:?}: no problem reported for line {line}\n--- stderr\n{}",
                    self.args, self.stderr
                )
            })
    }
}

/// A `contractd` command with a clean environment: no `CONTRACTD__*` variable or `RUST_LOG`
/// of the developer's shell leaks in, and it runs in `cwd` (so a default `contractd.db`
/// never lands in the source tree).
pub fn contractd(cwd: &Path) -> Command {
    let mut command = Command::new(BINARY);
    for (name, _) in std::env::vars_os() {
        if name
            .to_str()
            .is_some_and(|name| name.starts_with("CONTRACTD__") || name == "RUST_LOG")
        {
            command.env_remove(name);
        }
    }
    command.current_dir(cwd).stdin(Stdio::null());
    command
}

/// Run a command to its end (killed after [`COMMAND_TIMEOUT`]) and capture everything.
pub fn run_command(mut command: Command) -> Outcome {
    let args: Vec<String> = command
        .get_args()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {BINARY}: {error}"));
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stdout.read_to_end(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for contractd") {
            break status;
        }
        if started.elapsed() > COMMAND_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("contractd {args:?} did not finish within {COMMAND_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("contractd wrote non-UTF-8");
    Outcome {
        args,
        code: status.code().unwrap_or(-1),
        stdout: text(out.join().expect("stdout reader")),
        stderr: text(err.join().expect("stderr reader")),
    }
}

/// A brand-new database for one test, with a temporary directory for files and as the
/// binary's working directory. A PostgreSQL database is dropped when this is dropped (also
/// when the test panics).
pub struct TestDb {
    /// Which backend.
    pub backend: Backend,
    /// The URL given to the binary as `--database-url`.
    pub url: String,
    /// Files of the test; the binary's working directory.
    pub dir: TempDir,
    files: std::cell::Cell<usize>,
}

impl TestDb {
    /// A new, empty database (the binary migrates it on first use).
    pub fn new(backend: Backend) -> TestDb {
        let dir = tempfile::tempdir().expect("cannot create a temporary directory");
        let url = match backend {
            Backend::Sqlite => sqlite_url(&dir),
            Backend::Postgres => block_on(fresh_postgres_url()),
        };
        TestDb {
            backend,
            url,
            dir,
            files: std::cell::Cell::new(0),
        }
    }

    /// Raw SQL access, to play another system.
    pub fn raw(&self) -> RawDb {
        match self.backend {
            Backend::Sqlite => RawDb::Sqlite(self.url.clone()),
            Backend::Postgres => RawDb::Postgres(self.url.clone()),
        }
    }

    /// `contractd --database-url URL ARGS…` in the test directory.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = contractd(self.dir.path());
        command.arg("--database-url").arg(&self.url).args(args);
        command
    }

    /// Run `contractd --database-url URL ARGS…`.
    pub fn run(&self, args: &[&str]) -> Outcome {
        run_command(self.command(args))
    }

    /// Run with extra environment variables.
    pub fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Outcome {
        let mut command = self.command(args);
        command.envs(env.iter().copied());
        run_command(command)
    }

    /// Write a file into the test directory.
    pub fn write_file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).expect("cannot write a test file");
        path
    }

    /// Write `content` to a new file and import it.
    pub fn import_text(&self, content: &str) -> Outcome {
        let number = self.files.get() + 1;
        self.files.set(number);
        let path = self.write_file(&format!("import-{number}.jsonl"), content);
        self.run(&["import", path.to_str().expect("UTF-8 path")])
    }

    /// Import records, one a line.
    pub fn import_records(&self, records: &[Value]) -> Outcome {
        self.import_text(&jsonl(records))
    }

    /// Import records and insist that it worked.
    pub fn import_ok(&self, records: &[Value]) {
        let outcome = self.import_records(records);
        outcome.expect_code(0);
        assert!(
            outcome
                .stdout
                .contains(&format!("imported {} contracts", records.len())),
            "unexpected import summary: {}",
            outcome.stdout
        );
    }

    /// `export` that must succeed; returns its outcome (stdout checked to be JSON Lines).
    pub fn export_ok(&self, refs: &[&str]) -> Outcome {
        let mut args = vec!["export"];
        for reference in refs {
            args.push("--ref");
            args.push(reference);
        }
        let outcome = self.run(&args);
        outcome.expect_code(0);
        outcome.json_lines();
        outcome
    }

    /// One exported record.
    pub fn exported(&self, reference: &str) -> Value {
        let mut records = self.export_ok(&[reference]).json_lines();
        assert_eq!(records.len(), 1, "export --ref {reference}");
        records.remove(0)
    }

    /// `SELECT COUNT(*) FROM table`, straight from the database.
    pub fn count(&self, table: &str) -> i64 {
        self.counts(&[table])[0]
    }

    /// The row counts of several tables, over one connection.
    pub fn counts(&self, tables: &[&str]) -> Vec<i64> {
        block_on(async {
            let mut counts = Vec::new();
            match self.backend {
                Backend::Sqlite => {
                    let mut connection = SqliteConnection::connect(&self.url)
                        .await
                        .expect("open the SQLite test database");
                    for table in tables {
                        let sql = format!("SELECT COUNT(*) FROM {table}");
                        let count = sqlx::query_scalar::<_, i64>(&sql)
                            .fetch_one(&mut connection)
                            .await
                            .unwrap_or_else(|error| panic!("{sql}: {error}"));
                        counts.push(count);
                    }
                    let _ = connection.close().await;
                }
                Backend::Postgres => {
                    let mut connection = PgConnection::connect(&self.url)
                        .await
                        .expect("connect to the PostgreSQL test database");
                    for table in tables {
                        let sql = format!("SELECT COUNT(*) FROM {table}");
                        let count = sqlx::query_scalar::<_, i64>(&sql)
                            .fetch_one(&mut connection)
                            .await
                            .unwrap_or_else(|error| panic!("{sql}: {error}"));
                        counts.push(count);
                    }
                    let _ = connection.close().await;
                }
            }
            counts
        })
    }

    /// The database holds no contract, child row, event or zone, and `export` prints
    /// nothing.
    pub fn assert_empty(&self) {
        let tables = [
            "contracts",
            "contract_lines",
            "billing_schedules",
            "billing_documents",
            "renewals",
            "change_requests",
            "contract_events",
            "contract_zones",
        ];
        for (table, count) in tables.iter().zip(self.counts(&tables)) {
            assert_eq!(count, 0, "rows were written to {table}");
        }
        let export = self.export_ok(&[]);
        assert_eq!(export.stdout, "", "export after a refused import");
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.backend == Backend::Postgres {
            let url = self.url.clone();
            // A thread of its own: dropping may happen while a test unwinds, and a panic
            // there must not abort the test process.
            let _ = std::thread::spawn(move || block_on(drop_postgres(&url))).join();
        }
    }
}

/// Records as JSON Lines.
pub fn jsonl(records: &[Value]) -> String {
    let mut text = String::new();
    for record in records {
        text.push_str(&record.to_string());
        text.push('\n');
    }
    text
}

/// The smallest valid record: an evergreen contract cancellable at each month's end.
pub fn minimal(reference: &str) -> Value {
    json!({
        "ref": reference,
        "customer": "Customer",
        "start_date": "2025-01-01",
        "cancellation_window": "end_of_month",
        "auto_extend": false,
    })
}

/// A valid fixed-term record with one recurring line, billed once, and one document, to
/// break in the rule tests.
pub fn with_line(reference: &str) -> Value {
    json!({
        "ref": reference,
        "customer": "Customer",
        "time_zone": "Europe/Berlin",
        "start_date": "2025-01-01",
        "end_date": "2025-12-31",
        "notice_period": "1M",
        "cancellation_window": "end_of_term",
        "auto_extend": true,
        "extension_term": "1Y",
        "lines": [{
            "ref": "seat",
            "kind": "recurring_fixed",
            "billable": true,
            "start_date": "2025-01-01",
            "end_date": "2025-12-31",
            "amount_minor": 1000,
            "currency": "EUR",
            "billing_period": "1M",
        }],
        "schedules": [{
            "line_ref": "seat",
            "period_start": "2025-01-01",
            "period_end": "2025-01-31",
            "amount_minor": 1000,
            "status": "billed",
            "document": "INV-1",
        }],
        "documents": [{
            "ref": "INV-1",
            "kind": "invoice",
            "status": "complete",
            "amount_minor": 1000,
            "currency": "EUR",
        }],
    })
}

/// Set the value at a JSON pointer (`/lines/0/amount_minor`), creating the last key.
pub fn set(record: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').expect("a JSON pointer");
    let shown = record.to_string();
    let target = record
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("no {parent} in {shown}"));
    match target {
        Value::Object(map) => {
            map.insert(key.to_string(), value);
        }
        Value::Array(items) => {
            let index: usize = key.parse().expect("an array index");
            items[index] = value;
        }
        other => panic!("cannot set {key} in {other}"),
    }
}

/// Remove the key at a JSON pointer.
pub fn remove(record: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').expect("a JSON pointer");
    if let Some(Value::Object(map)) = record.pointer_mut(parent) {
        map.remove(key);
    }
}

/// A record with `changes` applied (pointer, value).
pub fn changed(mut record: Value, changes: &[(&str, Value)]) -> Value {
    for (pointer, value) in changes {
        set(&mut record, pointer, value.clone());
    }
    record
}

fn plus_days(start: NaiveDate, days: u64) -> String {
    start
        .checked_add_days(Days::new(days))
        .expect("date in range")
        .format("%Y-%m-%d")
        .to_string()
}

/// The `index`th of a family of varied, valid contracts: every status, window and zone
/// kind, open-ended and fixed terms, lines of each kind (one with a pending line
/// cancellation), billed and planned schedules, invoices and credit notes, renewals, change
/// requests, pending cancellations, early-end notes, and text that needs escaping.
pub fn rich(index: usize) -> Value {
    const ZONES: [&str; 7] = [
        "Europe/Berlin",
        "America/Santiago",
        "Asia/Kolkata",
        "Pacific/Chatham",
        "UTC",
        "Australia/Lord_Howe",
        "America/Asuncion",
    ];
    const WINDOWS: [&str; 4] = [
        "end_of_term",
        "end_of_month",
        "end_of_quarter",
        "end_of_year",
    ];
    const NOTICES: [&str; 6] = ["0D", "14D", "2W", "1M", "1Q", "1Y"];
    let start = date("2024-01-01")
        .checked_add_days(Days::new((index as u64 * 17) % 400))
        .expect("date");
    let status = match index % 9 {
        3 => "draft",
        5 => "expired",
        7 => "cancelled",
        _ => "active",
    };
    let active = status == "active";
    let window = WINDOWS[index % WINDOWS.len()];
    // end_of_term needs an end date; every third other contract is open-ended.
    let open_ended = window != "end_of_term" && index.is_multiple_of(3);
    let end = (!open_ended).then(|| plus_days(start, 364 + (index as u64 % 5) * 31));
    let auto_extend = active && index.is_multiple_of(2) && index % 4 != 2;
    let pending_cancellation = active && index % 4 == 2 && end.is_some();
    let mut record = json!({
        "ref": format!("GEN-{index:03}"),
        "customer": format!("Kunde \"{index}\" — Ünïcødé ✓\\ line\nsecond line\ttab"),
        "status": status,
        "time_zone": ZONES[index % ZONES.len()],
        "start_date": plus_days(start, 0),
        "end_date": end,
        "notice_period": NOTICES[index % NOTICES.len()],
        "cancellation_window": window,
        "auto_extend": auto_extend,
        "extension_term": if auto_extend || index.is_multiple_of(5) { json!("1Y") } else { Value::Null },
        "proration": if index % 6 == 1 { "none" } else { "actual_days" },
    });
    if index % 4 == 1 {
        set(&mut record, "/initial_term", json!("1Y"));
        set(
            &mut record,
            "/minimum_term_end",
            json!(plus_days(start, 180)),
        );
    }
    if matches!(status, "expired" | "cancelled") {
        set(
            &mut record,
            "/original_end_date",
            json!(plus_days(start, 730)),
        );
        set(&mut record, "/end_reason", json!("customer moved"));
        set(
            &mut record,
            "/end_notes",
            json!("ended early on request, see ticket #42"),
        );
    }
    if pending_cancellation {
        set(
            &mut record,
            "/cancellation",
            json!({
                "received_on": plus_days(start, 100),
                "end_date": end.clone().expect("end date"),
                "reason": "too_expensive",
                "notes": "called on the phone",
                "final_invoice": index % 8 == 2,
                "restore_auto_extend": true,
            }),
        );
    }
    let line_end = end.clone();
    let line_status = match status {
        "active" | "draft" => "active",
        "expired" => "expired",
        _ => "cancelled",
    };
    let mut lines = vec![json!({
        "ref": "base",
        "description": "Base fee, \"all inclusive\"",
        "kind": "recurring_fixed",
        "billable": true,
        "start_date": plus_days(start, 0),
        "end_date": line_end,
        "status": line_status,
        "amount_minor": 10_000 + index as i64,
        "currency": "EUR",
        "billing_period": "1M",
        "auto_extend": auto_extend,
    })];
    if index % 2 == 1 {
        let mut usage = json!({
            "ref": "usage",
            "description": "Metered usage",
            "kind": "recurring_usage",
            "billable": true,
            "start_date": plus_days(start, 31),
            "end_date": Value::Null,
            "status": line_status,
            "amount_minor": 0,
            "currency": "USD",
            "billing_period": "1Q",
        });
        if active && end.is_some() {
            set(
                &mut usage,
                "/cancellation",
                json!({
                    "received_on": plus_days(start, 40),
                    "end_date": plus_days(start, 120),
                    "reason": "not needed",
                    "final_invoice": true,
                }),
            );
            set(&mut usage, "/end_date", json!(end.clone()));
        }
        lines.push(usage);
    }
    if index % 3 == 2 {
        lines.push(json!({
            "ref": "setup",
            "kind": "one_time",
            "billable": false,
            "start_date": plus_days(start, 0),
            "end_date": plus_days(start, 0),
            "status": if active { "expired" } else { line_status },
            "amount_minor": 25_000,
            "currency": "EUR",
        }));
    }
    set(&mut record, "/lines", Value::Array(lines));
    let invoice = format!("INV-{index}");
    set(
        &mut record,
        "/schedules",
        json!([
            {
                "line_ref": "base",
                "period_start": plus_days(start, 0),
                "period_end": plus_days(start, 30),
                "amount_minor": 10_000 + index as i64,
                "status": "billed",
                "document": invoice,
            },
            {
                "line_ref": "base",
                "period_start": plus_days(start, 31),
                "period_end": plus_days(start, 59),
                "amount_minor": 10_000 + index as i64,
                "status": "planned",
            },
        ]),
    );
    let mut documents = vec![json!({
        "ref": invoice,
        "kind": "invoice",
        "status": "complete",
        "consolidated": false,
        "amount_minor": 10_000 + index as i64,
        "currency": "EUR",
    })];
    if index % 5 == 4 {
        documents.push(json!({
            "ref": format!("CN-{index}"),
            "kind": "credit_note",
            "status": if index.is_multiple_of(2) { "draft" } else { "ready_for_review" },
            "consolidated": true,
            "amount_minor": 1_234,
            "currency": "EUR",
        }));
    }
    set(&mut record, "/documents", Value::Array(documents));
    if index.is_multiple_of(3) {
        set(
            &mut record,
            "/renewals",
            json!([
                {"ref": format!("REN-{index}-1"), "status": "complete"},
                {"ref": format!("REN-{index}-2"), "status": "draft"},
            ]),
        );
    }
    if index % 4 == 3 {
        set(
            &mut record,
            "/change_requests",
            json!([
                {"ref": "CR-1", "status": "draft"},
                {"ref": "CR-2", "status": "pending"},
                {"ref": "CR-3", "status": "approved"},
                {"ref": "CR-4", "status": "rejected"},
                {"ref": "CR-5", "status": "applied"},
            ]),
        );
    }
    record
}

/// The sample contracts shipped in `examples/contracts.jsonl`.
pub fn example_contracts() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/contracts.jsonl"
    ))
    .expect("examples/contracts.jsonl")
}
