//! Helpers for the daemon tests: spawn the real `contractd` binary (`serve` and the other
//! commands), read its JSON logs, talk to its HTTP endpoints, send it signals, generate
//! contracts, read the database directly, and run a private PostgreSQL cluster.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, Row, SqliteConnection};

/// Shared by the tests that may run alongside each other, taken alone by the others.
static MACHINE: LazyLock<tokio::sync::RwLock<()>> = LazyLock::new(|| tokio::sync::RwLock::new(()));

/// The tests of this binary run in parallel threads, and most of them assert how soon the
/// daemon reacts. One that keeps the machine busy for a while (thousands of contracts, several
/// processes, a PostgreSQL cluster of its own) runs alone: it holds this for its whole run,
/// which waits until no other test of the binary runs and keeps the others waiting.
pub async fn machine_alone() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    MACHINE.write().await
}

/// What a light test holds for its whole run: it runs alongside the other light tests, never
/// alongside one that holds [`machine_alone`].
pub async fn machine_shared() -> tokio::sync::RwLockReadGuard<'static, ()> {
    MACHINE.read().await
}

/// The binary under test.
pub const BINARY: &str = env!("CARGO_BIN_EXE_contractd");

/// A port nobody listens on right now (bind to port 0, read it, let it go).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().expect("local address").port()
}

/// Environment every spawned command gets: JSON logs, the database, a quick tick. Variables
/// from the test's own environment that would change the outcome are removed.
fn base_command(database_url: &str) -> Command {
    let mut command = Command::new(BINARY);
    command
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env("CONTRACTD__DATABASE__URL", database_url)
        .env("CONTRACTD__LOG__FORMAT", "json")
        .env("CONTRACTD__SCHEDULER__TICK", "* * * * * *");
    command
}

/// Run a contractd command to completion.
pub fn contractd(database_url: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = base_command(database_url);
    command.args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {BINARY} {args:?}: {error}"))
}

/// Run a contractd command and insist that it succeeds; its standard output.
pub fn contractd_ok(database_url: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let output = contractd(database_url, args, env);
    assert!(
        output.status.success(),
        "contractd {args:?} failed with {}:\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        tail(&String::from_utf8_lossy(&output.stderr), 40)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Write `records` as JSON Lines into `dir` and import them.
pub fn import(database_url: &str, dir: &Path, records: &[Value]) {
    let file = dir.join(format!("import-{}.jsonl", uuid::Uuid::new_v4().simple()));
    let mut text = String::with_capacity(records.len() * 256);
    for record in records {
        text.push_str(&record.to_string());
        text.push('\n');
    }
    std::fs::write(&file, text).expect("writing the import file");
    let path = file.to_string_lossy().into_owned();
    contractd_ok(database_url, &["import", &path], &[]);
}

/// `contractd export`, one line per contract.
pub fn export(database_url: &str) -> Vec<String> {
    contractd_ok(database_url, &["export"], &[])
        .lines()
        .map(str::to_string)
        .collect()
}

/// A running `contractd serve`, killed when dropped.
pub struct Daemon {
    /// The process.
    pub child: Child,
    /// Its HTTP port.
    pub port: u16,
    /// Every log line it wrote so far.
    logs: Arc<Mutex<Vec<String>>>,
    /// Reads standard error into `logs`.
    reader: Option<std::thread::JoinHandle<()>>,
}

/// How to start a daemon.
#[derive(Debug, Clone, Default)]
pub struct DaemonOptions {
    /// `serve --now`.
    pub now: Option<DateTime<Utc>>,
    /// `--config FILE`.
    pub config: Option<PathBuf>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Variables of the default environment to leave out (e.g. the tick, so the
    /// configuration file decides it).
    pub env_remove: Vec<String>,
    /// Run through `sh` so `WATCHDOG_PID` can be the daemon's own pid.
    pub watchdog_usec: Option<u64>,
    /// `NOTIFY_SOCKET`.
    pub notify_socket: Option<PathBuf>,
}

impl Daemon {
    /// Start `contractd serve` on `database_url` on a free port.
    pub fn start(database_url: &str, options: DaemonOptions) -> Daemon {
        let port = free_port();
        let mut command = base_command(database_url);
        if let Some(usec) = options.watchdog_usec {
            // `exec` keeps the shell's pid, so $$ is the daemon's pid.
            command = {
                let mut shell = Command::new("sh");
                shell
                    .arg("-c")
                    .arg(format!(
                        "WATCHDOG_USEC={usec} WATCHDOG_PID=$$ exec \"$0\" \"$@\""
                    ))
                    .arg(BINARY)
                    .env_remove("RUST_LOG")
                    .env("CONTRACTD__DATABASE__URL", database_url)
                    .env("CONTRACTD__LOG__FORMAT", "json")
                    .env("CONTRACTD__SCHEDULER__TICK", "* * * * * *");
                shell
            };
        }
        if let Some(config) = &options.config {
            command.arg("--config").arg(config);
        }
        command.arg("serve");
        if let Some(now) = options.now {
            command.arg("--now").arg(now.to_rfc3339());
        }
        command.env("CONTRACTD__SERVER__LISTEN", format!("127.0.0.1:{port}"));
        if let Some(socket) = &options.notify_socket {
            command.env("NOTIFY_SOCKET", socket);
        }
        for (key, value) in &options.env {
            command.env(key, value);
        }
        for key in &options.env_remove {
            command.env_remove(key);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {BINARY} serve: {error}"));
        let logs = Arc::new(Mutex::new(Vec::new()));
        let reader = child.stderr.take().map(|stderr| {
            let logs = Arc::clone(&logs);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    logs.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                }
            })
        });
        Daemon {
            child,
            port,
            logs,
            reader,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every log line so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The log lines so far that are JSON with `event == name`.
    pub fn events(&self, name: &str) -> Vec<Value> {
        let logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        logs.iter()
            .filter(|line| line.contains(name))
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|value| value["event"] == name)
            .collect()
    }

    /// The last log lines, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        logs[logs.len().saturating_sub(lines)..].join("\n")
    }

    /// Wait until a log line with `event == name` shows up; panics after `timeout`.
    pub async fn wait_event(&mut self, name: &str, timeout: Duration) -> Value {
        let started = Instant::now();
        loop {
            if let Some(found) = self.events(name).into_iter().next() {
                return found;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "contractd exited ({status}) before logging {name}:\n{}",
                    self.log_tail(40)
                );
            }
            assert!(
                started.elapsed() < timeout,
                "no {name} within {timeout:?}:\n{}",
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait until the daemon logged `daemon.started`.
    pub async fn wait_started(&mut self) -> Value {
        self.wait_event("daemon.started", Duration::from_secs(30))
            .await
    }

    /// Send a signal (`TERM`, `INT`, `HUP`, `KILL`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Wait for the process to exit; `None` when it still runs after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return Some(status);
            }
            if started.elapsed() >= timeout {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL and reap.
    pub async fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.wait_exit(Duration::from_secs(10)).await;
    }

    /// `GET path` on the daemon's port: status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.port, path)
            .unwrap_or_else(|error| panic!("GET {path} on port {} failed: {error}", self.port))
    }

    /// `GET path`, or the error (the daemon may be down).
    pub fn try_get(&self, path: &str) -> std::io::Result<(u16, String)> {
        http_get(self.port, path)
    }

    /// Wait until `GET path` answers `status`; panics after `timeout`.
    pub async fn wait_status(&mut self, path: &str, status: u16, timeout: Duration) {
        let started = Instant::now();
        loop {
            let last = match self.try_get(path) {
                Ok((code, _)) if code == status => return,
                Ok((code, body)) => format!("{code} {body}"),
                Err(error) => error.to_string(),
            };
            assert!(
                self.is_running(),
                "contractd exited while waiting for {path} {status}:\n{}",
                self.log_tail(40)
            );
            assert!(
                started.elapsed() < timeout,
                "{path} did not answer {status} within {timeout:?} (last: {last}):\n{}",
                self.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The value of a metric sample line (`name{labels}` exactly as rendered).
    pub fn metric(&self, sample: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics");
        body.lines().find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == sample).then(|| value.parse().ok()).flatten()
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A minimal HTTP/1.1 GET (the endpoints answer with a content length and close).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {head:?}")))?;
    Ok((status, body.to_string()))
}

/// The instant of local midnight starting `date` in `zone` (its first instant).
pub fn local_midnight(zone: chrono_tz::Tz, date: NaiveDate) -> DateTime<Utc> {
    let midnight = date.and_hms_opt(0, 0, 0).expect("midnight");
    zone.from_local_datetime(&midnight)
        .earliest()
        .expect("midnight exists in the test zones")
        .with_timezone(&Utc)
}

/// A date as `YYYY-MM-DD`.
pub fn day(date: NaiveDate) -> String {
    date.format("%Y-%m-%d").to_string()
}

/// A contract that expires on `end + 1` in `zone`.
pub fn expiring(reference: &str, zone: &str, end: NaiveDate) -> Value {
    json!({
        "ref": reference,
        "customer": "customer",
        "time_zone": zone,
        "start_date": day(end - chrono::Duration::days(400)),
        "end_date": day(end),
        "cancellation_window": "end_of_term",
        "auto_extend": false,
    })
}

/// A mixed population: every daily job has work. `i` picks the kind and the zone; due dates
/// spread over `spread_days` days from `as_of` on (a contract with offset k becomes due on
/// `as_of + k`), so successive simulated days keep finding work. With `spread_days = 1`
/// everything is due on `as_of`.
pub fn mixed_contract(i: usize, zones: &[&str], as_of: NaiveDate, spread_days: i64) -> Value {
    let zone = zones[i % zones.len()];
    let offset = i64::try_from(i / zones.len()).unwrap_or(0) % spread_days.max(1);
    let reference = format!("M-{i:06}");
    let start = as_of - chrono::Duration::days(500 + offset);
    let line = |end: Option<NaiveDate>, auto_extend: bool| {
        json!({
            "ref": "L1",
            "description": "service",
            "kind": "recurring_fixed",
            "billable": true,
            "start_date": day(start),
            "end_date": end.map(day),
            "amount_minor": 1200 + i64::try_from(i % 7).unwrap_or(0),
            "currency": "EUR",
            "billing_period": "1M",
            "auto_extend": auto_extend,
        })
    };
    match i % 4 {
        // Expires: the end date is the day before it becomes due.
        0 => {
            let end = as_of - chrono::Duration::days(1) + chrono::Duration::days(offset);
            json!({
                "ref": reference, "customer": "c", "time_zone": zone,
                "start_date": day(start), "end_date": day(end),
                "cancellation_window": "end_of_term", "auto_extend": false,
                "lines": [line(None, false)],
            })
        }
        // Auto-extends: the notice deadline (a month before the end) passes around the due day.
        1 => {
            let end = as_of + chrono::Duration::days(29 + offset);
            json!({
                "ref": reference, "customer": "c", "time_zone": zone,
                "start_date": day(start), "end_date": day(end),
                "notice_period": "1M",
                "cancellation_window": "end_of_term", "auto_extend": true,
                "extension_term": "1Y",
                "lines": [line(Some(end), true)],
            })
        }
        // A pending cancellation that executes on the due day.
        2 => {
            let end = as_of - chrono::Duration::days(1) + chrono::Duration::days(offset);
            json!({
                "ref": reference, "customer": "c", "time_zone": zone,
                "start_date": day(start), "end_date": day(as_of + chrono::Duration::days(400)),
                "cancellation_window": "end_of_term", "auto_extend": false,
                "cancellation": {
                    "received_on": day(start + chrono::Duration::days(10)),
                    "end_date": day(end),
                    "reason": "moving",
                },
                "lines": [line(None, false)],
            })
        }
        // Open-ended monthly: its deadline keeps moving (refresh_deadlines).
        _ => json!({
            "ref": reference, "customer": "c", "time_zone": zone,
            "start_date": day(start),
            "notice_period": "1W",
            "cancellation_window": "end_of_month", "auto_extend": false,
            "lines": [line(None, false)],
        }),
    }
}

/// One stored event, without what differs between runs (run id, recording time).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventRow {
    /// The contract.
    pub contract_ref: String,
    /// What happened.
    pub kind: String,
    /// When it took effect.
    pub effective_on: String,
    /// The line, if any.
    pub line_ref: String,
    /// Details as JSON text (normalised).
    pub details: String,
    /// The unique transition key.
    pub transition_key: String,
}

/// Every event in the database, sorted.
pub async fn events(database_url: &str) -> Vec<EventRow> {
    let rows: Vec<(String, String, String, Option<String>, String, String)> =
        if database_url.starts_with("sqlite:") {
            let mut connection = SqliteConnection::connect(database_url)
                .await
                .expect("opening the SQLite database");
            let rows = sqlx::query(
                "SELECT contract_ref, kind, effective_on, line_ref, details, transition_key \
                 FROM contract_events",
            )
            .fetch_all(&mut connection)
            .await
            .expect("reading events");
            let _ = connection.close().await;
            rows.iter()
                .map(|row| {
                    (
                        row.get(0),
                        row.get(1),
                        row.get(2),
                        row.get(3),
                        row.get(4),
                        row.get(5),
                    )
                })
                .collect()
        } else {
            let mut connection = PgConnection::connect(database_url)
                .await
                .expect("connecting to PostgreSQL");
            let rows = sqlx::query(
                "SELECT contract_ref, kind, effective_on::text, line_ref, details::text, \
                 transition_key FROM contract_events",
            )
            .fetch_all(&mut connection)
            .await
            .expect("reading events");
            let _ = connection.close().await;
            rows.iter()
                .map(|row| {
                    (
                        row.get(0),
                        row.get(1),
                        row.get(2),
                        row.get(3),
                        row.get(4),
                        row.get(5),
                    )
                })
                .collect()
        };
    let mut events: Vec<EventRow> = rows
        .into_iter()
        .map(
            |(contract_ref, kind, effective_on, line_ref, details, transition_key)| EventRow {
                contract_ref,
                kind,
                effective_on,
                line_ref: line_ref.unwrap_or_default(),
                details: serde_json::from_str::<Value>(&details)
                    .map(|value| value.to_string())
                    .unwrap_or(details),
                transition_key,
            },
        )
        .collect();
    events.sort();
    events
}

/// Events that occur more than once per (contract, kind, effective date, line).
pub fn duplicate_transitions(events: &[EventRow]) -> Vec<(String, String, String, String, usize)> {
    let mut counts: BTreeMap<(String, String, String, String), usize> = BTreeMap::new();
    for event in events {
        *counts
            .entry((
                event.contract_ref.clone(),
                event.kind.clone(),
                event.effective_on.clone(),
                event.line_ref.clone(),
            ))
            .or_default() += 1;
    }
    counts
        .into_iter()
        .filter(|(_, count)| *count > 1)
        .map(|((a, b, c, d), count)| (a, b, c, d, count))
        .collect()
}

/// Run one SQL query returning a single integer.
pub async fn scalar(database_url: &str, sql: &str) -> i64 {
    if database_url.starts_with("sqlite:") {
        let mut connection = SqliteConnection::connect(database_url)
            .await
            .expect("opening the SQLite database");
        let value: i64 = sqlx::query_scalar(sql)
            .fetch_one(&mut connection)
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error}"));
        let _ = connection.close().await;
        value
    } else {
        let mut connection = PgConnection::connect(database_url)
            .await
            .expect("connecting to PostgreSQL");
        let value: i64 = sqlx::query_scalar(sql)
            .fetch_one(&mut connection)
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error}"));
        let _ = connection.close().await;
        value
    }
}

/// Ledger rows that succeeded for (zone, business date) pairs, counted.
pub async fn succeeded_runs(database_url: &str, zone: &str, date: NaiveDate) -> i64 {
    let date_sql = if database_url.starts_with("sqlite:") {
        format!("'{}'", day(date))
    } else {
        format!("DATE '{}'", day(date))
    };
    scalar(
        database_url,
        &format!(
            "SELECT COUNT(*) FROM job_runs WHERE status = 'succeeded' AND zone = '{zone}' \
             AND business_date = {date_sql}"
        ),
    )
    .await
}

/// Wait until every zone's five jobs succeeded for its business date at `instant`.
pub async fn wait_all_done(
    database_url: &str,
    zones: &[&str],
    instant: DateTime<Utc>,
    timeout: Duration,
) {
    let started = Instant::now();
    loop {
        let mut missing = Vec::new();
        for zone in zones {
            let tz: chrono_tz::Tz = zone.parse().expect("test zone");
            let date = instant.with_timezone(&tz).date_naive();
            if succeeded_runs(database_url, zone, date).await < 5 {
                missing.push(format!("{zone} {date}"));
            }
        }
        if missing.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "not every job succeeded within {timeout:?}; missing: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A SQLite database URL in `dir`.
pub fn sqlite_url_in(dir: &Path, name: &str) -> String {
    format!("sqlite://{}", dir.join(name).display())
}

/// Copy a SQLite database (with its write-ahead log) while nothing has it open.
pub fn copy_sqlite(dir: &Path, from: &str, to: &str) {
    for suffix in ["", "-wal"] {
        let source = dir.join(format!("{from}{suffix}"));
        if source.exists() {
            std::fs::copy(&source, dir.join(format!("{to}{suffix}"))).expect("copying SQLite");
        }
    }
}

/// A PostgreSQL cluster of its own, run as the `postgres` user (root may not run the
/// server), on its own port and socket directory; stopped and removed when dropped.
pub struct PrivateCluster {
    /// Holds the data directory, the socket and the log.
    dir: tempfile::TempDir,
    /// The port it listens on.
    pub port: u16,
    /// The server's programs.
    bin: PathBuf,
}

impl PrivateCluster {
    /// initdb and start a new cluster. Panics with a clear message when PostgreSQL's server
    /// programs are not installed.
    pub fn start() -> PrivateCluster {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|entries| {
                let mut versions: Vec<PathBuf> = entries
                    .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin")))
                    .filter(|bin| bin.join("pg_ctl").exists() && bin.join("initdb").exists())
                    .collect();
                versions.sort();
                versions.pop()
            })
            .expect("PostgreSQL server programs (/usr/lib/postgresql/*/bin/initdb) are missing");
        let dir = tempfile::Builder::new()
            .prefix("contractd-pg-")
            .tempdir()
            .expect("temporary directory");
        run_ok(
            Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path()),
        );
        let cluster = PrivateCluster {
            port: free_port(),
            dir,
            bin,
        };
        cluster.as_postgres(&[
            cluster.bin.join("initdb").to_string_lossy().as_ref(),
            "-D",
            cluster.data().to_string_lossy().as_ref(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]);
        cluster.start_server();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Run a command as the `postgres` user; panics with its output when it fails.
    fn as_postgres(&self, args: &[&str]) {
        run_ok(
            Command::new("runuser")
                .arg("-u")
                .arg("postgres")
                .arg("--")
                .args(args),
        );
    }

    /// `pg_ctl start`, waiting until it accepts connections.
    pub fn start_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        self.as_postgres(&[
            self.bin.join("pg_ctl").to_string_lossy().as_ref(),
            "-D",
            self.data().to_string_lossy().as_ref(),
            "-o",
            &options,
            "-l",
            self.dir.path().join("log").to_string_lossy().as_ref(),
            "-w",
            "-t",
            "30",
            "start",
        ]);
    }

    /// `pg_ctl stop -m fast`, waiting until it is down.
    pub fn stop_server(&self) {
        self.as_postgres(&[
            self.bin.join("pg_ctl").to_string_lossy().as_ref(),
            "-D",
            self.data().to_string_lossy().as_ref(),
            "-m",
            "fast",
            "-w",
            "-t",
            "30",
            "stop",
        ]);
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .arg("-u")
            .arg("postgres")
            .arg("--")
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "-t", "20", "stop"])
            .output();
    }
}

/// Run a command; panics with its output when it fails.
fn run_ok(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed with {}:\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `promtool check metrics` on `text`; panics when promtool is missing (it must not be
/// skipped silently) or rejects the text.
pub fn promtool_check_metrics(text: &str) {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(error) => panic!(
            "promtool is missing ({error}): install Debian's `prometheus` package \
             (apt-get install prometheus) or run .ci/check-deploy, which installs it"
        ),
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).expect("feeding promtool");
    }
    let output = child.wait_with_output().expect("waiting for promtool");
    assert!(
        output.status.success(),
        "promtool check metrics rejected /metrics ({}):\n{}{}\n--- metrics ---\n{text}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A stand-in for systemd's notification socket: collects every datagram on a thread (so
/// the daemon's sends never block on a full queue).
pub struct NotifySocket {
    /// Every message received, in order.
    messages: Arc<Mutex<Vec<String>>>,
}

impl NotifySocket {
    /// Bind the socket at `path` and start collecting.
    pub fn bind(path: &Path) -> NotifySocket {
        let socket =
            std::os::unix::net::UnixDatagram::bind(path).expect("binding the notify socket");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let collected = Arc::clone(&messages);
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(length) = socket.recv(&mut buffer) {
                collected
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(String::from_utf8_lossy(&buffer[..length]).into_owned());
            }
        });
        NotifySocket { messages }
    }

    /// Every message so far.
    pub fn messages(&self) -> Vec<String> {
        self.messages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many messages contain `text`.
    pub fn count(&self, text: &str) -> usize {
        self.messages().iter().filter(|m| m.contains(text)).count()
    }
}

/// A copy of the PostgreSQL test database at `url` (nothing may be connected to it), named
/// like every test database so stale ones get cleaned up; its URL.
pub async fn copy_postgres(url: &str) -> String {
    let source = url::Url::parse(url).expect("database URL");
    let source_name = source.path().trim_start_matches('/').to_string();
    let name = format!(
        "{}{}_{}",
        crate::support::TEST_DATABASE_PREFIX,
        Utc::now().timestamp(),
        uuid::Uuid::new_v4().simple()
    );
    let mut admin = PgConnection::connect(&crate::support::postgres_admin_url())
        .await
        .expect("connecting to the PostgreSQL test server");
    sqlx::query(&format!(
        "CREATE DATABASE \"{name}\" TEMPLATE \"{source_name}\""
    ))
    .execute(&mut admin)
    .await
    .unwrap_or_else(|error| panic!("copying {source_name}: {error}"));
    let _ = admin.close().await;
    let mut copy = source;
    copy.set_path(&format!("/{name}"));
    copy.to_string()
}

/// Drops PostgreSQL test databases when the test ends, passed or failed.
pub struct DropDatabases(pub Vec<String>);

impl Drop for DropDatabases {
    fn drop(&mut self) {
        let urls = std::mem::take(&mut self.0);
        // Drop runs inside the test's runtime, which cannot be blocked on: use a thread
        // with a runtime of its own.
        let _ = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(async {
                    for url in &urls {
                        crate::support::drop_postgres(url).await;
                    }
                });
            }
        })
        .join();
    }
}

/// Run an async test body on a runtime of its own: the tests that [`crate::both_databases!`]
/// lists under `backend:` are synchronous.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}

/// A brand-new database for one test of the binary, with a temporary directory for its
/// files: a SQLite file there, or a new PostgreSQL database dropped when this is dropped
/// (also when the test panics).
pub struct TestDatabase {
    /// Its URL.
    pub url: String,
    /// The test's files (and the SQLite database).
    pub dir: tempfile::TempDir,
    /// Drops the PostgreSQL database.
    _cleanup: DropDatabases,
}

impl TestDatabase {
    /// A new, empty database on `backend` (the binary migrates it on first use).
    pub async fn new(backend: crate::support::Backend) -> TestDatabase {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (url, cleanup) = match backend {
            crate::support::Backend::Sqlite => {
                (sqlite_url_in(dir.path(), "t.db"), DropDatabases(Vec::new()))
            }
            crate::support::Backend::Postgres => {
                let url = crate::support::fresh_postgres_url().await;
                (url.clone(), DropDatabases(vec![url]))
            }
        };
        TestDatabase {
            url,
            dir,
            _cleanup: cleanup,
        }
    }

    /// Write a file into the test's directory; its path.
    pub fn write_file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("writing a test file");
        path
    }
}

/// `contractd events ARGS…`, which must succeed: the feed's lines.
pub fn feed(database_url: &str, args: &[&str]) -> Vec<Value> {
    let mut full = vec!["events"];
    full.extend_from_slice(args);
    contractd_ok(database_url, &full, &[])
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("a feed line is not JSON ({error}): {line}"))
        })
        .collect()
}
