//! The event feed (`events`) and webhook deliveries from the command line (`deliver`,
//! `deliveries`, `redeliver`), on SQLite and PostgreSQL, against real HTTP receivers on
//! 127.0.0.1: signatures checked by the Standard Webhooks reference library, bodies equal to
//! the feed's lines, resuming the feed after an id, `--follow`, a 410 that disables an
//! endpoint, a delivery out of attempts, and configuration errors that name their key.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::action_helpers::act;
use crate::harness::{minimal, with_line, Outcome, TestDb};
use crate::support::webhooks::{
    always, verify_signatures, webhooks_config, Received, Receiver, Reply, Script, PATH, SECRET,
};
use crate::support::Backend;

crate::both_databases! {
    backend: [
        every_webhook_verifies_and_carries_its_feed_event,
        events_resume_exactly_after_an_id_and_filter_by_type,
        events_follow_prints_new_events_until_sigterm,
        a_410_disables_the_endpoint_until_redeliver_enables_it,
        a_delivery_out_of_attempts_fails_and_holds_its_contract_back_until_redelivered,
        bad_webhook_configuration_exits_2_naming_the_key,
    ],
}

/// Write the `--config` file of a test: `[webhooks]` with `settings`, one endpoint per
/// (name, url); its path.
fn write_config(db: &TestDb, settings: &[(&str, u64)], endpoints: &[(&str, &str)]) -> String {
    let path = db.write_file("webhooks.toml", &webhooks_config(settings, endpoints));
    path.to_str().expect("a UTF-8 path").to_string()
}

/// `contractd --config FILE ARGS…`.
fn with_config(db: &TestDb, config: &str, args: &[&str]) -> Outcome {
    let mut full = vec!["--config", config];
    full.extend_from_slice(args);
    db.run(&full)
}

/// `contractd --config FILE deliver`.
fn deliver(db: &TestDb, config: &str) -> Outcome {
    with_config(db, config, &["deliver"])
}

/// `events ARGS…`, which must succeed: its lines.
fn feed(db: &TestDb, args: &[&str]) -> Vec<Value> {
    let mut full = vec!["events"];
    full.extend_from_slice(args);
    let outcome = db.run(&full);
    outcome.expect_code(0);
    outcome.json_lines()
}

/// The whole feed once every recorded event is in it. On PostgreSQL an event enters the
/// feed only when every transaction that was running when it committed has ended, on the
/// whole server (other tests' transactions delay it too): wait for that, rather than read a
/// feed that is still catching up.
fn complete_feed(db: &TestDb) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let recorded = db.count("contract_events");
        let lines = feed(db, &[]);
        if lines.len() as i64 == recorded {
            return lines;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the feed shows {} of the {recorded} recorded events after 30 s",
            lines.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `id` of a feed line.
fn id_of(line: &Value) -> String {
    line["id"]
        .as_str()
        .unwrap_or_else(|| panic!("a feed line without an id: {line}"))
        .to_string()
}

/// A feed line without its `id`: the body of the event's webhooks.
fn envelope_of(line: &Value) -> Value {
    let mut envelope = line.clone();
    envelope
        .as_object_mut()
        .expect("a feed line is an object")
        .remove("id");
    envelope
}

/// The feed lines of `reference`.
fn lines_of<'a>(feed: &'a [Value], reference: &str) -> Vec<&'a Value> {
    feed.iter()
        .filter(|line| line["data"]["ref"] == reference)
        .collect()
}

/// The one feed line of `reference` with this type.
fn line_of<'a>(feed: &'a [Value], reference: &str, kind: &str) -> &'a Value {
    let found: Vec<&Value> = lines_of(feed, reference)
        .into_iter()
        .filter(|line| line["type"] == kind)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {kind} event of '{reference}': {found:?}"
    );
    found[0]
}

/// The ids accepted (answered 2xx), in the order they were.
fn accepted_ids(requests: &[Received]) -> Vec<String> {
    requests
        .iter()
        .filter(|request| request.accepted())
        .map(|request| request.id().to_string())
        .collect()
}

fn unix_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or(0)
}

/// A fixed-term contract that ended before the sweep's day and does not extend.
fn ended(reference: &str) -> Value {
    json!({
        "ref": reference,
        "customer": "Customer",
        "start_date": "2024-07-01",
        "end_date": "2025-06-30",
        "cancellation_window": "end_of_term",
        "auto_extend": false,
    })
}

/// Record events of several types: three imports, a cancellation registered then revoked
/// (EVER), and the sweep of 2025-12-01, which extends EXT (its notice deadline passed on
/// 2025-11-30) and expires OLD.
fn record_varied_events(db: &TestDb) {
    db.import_ok(&[with_line("EXT"), minimal("EVER"), ended("OLD")]);
    act(db, "cancel", &["EVER"], "2025-11-22").expect_code(0);
    act(db, "revoke", &["EVER"], "2025-11-23").expect_code(0);
    db.run(&["run", "--as-of", "2025-12-01"]).expect_code(0);
}

/// Every request of a `deliver` run: one per event of the feed, with the Standard Webhooks
/// headers (`webhook-id` the feed's `id`), the feed line as body (without `id`), the
/// contract's record after the change as `data.contract`, and a signature the reference
/// library verifies; an altered body does not verify.
fn every_webhook_verifies_and_carries_its_feed_event(backend: Backend) {
    let db = TestDb::new(backend);
    let receiver = Receiver::start(always(Reply::Status(200)));
    let config = write_config(&db, &[], &[("crm", &receiver.url())]);
    // The endpoint is seen first before any event: it receives everything that follows.
    deliver(&db, &config).expect_code(0);
    assert_eq!(receiver.count(), 0);
    record_varied_events(&db);
    let feed = complete_feed(&db);

    let before = unix_seconds();
    let outcome = deliver(&db, &config);
    outcome.expect_code(0);
    let after = unix_seconds();
    let types: BTreeSet<&str> = feed
        .iter()
        .map(|line| line["type"].as_str().expect("a type"))
        .collect();
    for kind in [
        "contract.imported",
        "contract.cancellation_registered",
        "contract.cancellation_revoked",
        "contract.extended",
        "contract.expired",
    ] {
        assert!(types.contains(kind), "no {kind} in the feed: {types:?}");
    }
    assert!(
        outcome.stdout.contains(&format!(
            "delivered {}, retrying 0, failed for good 0",
            feed.len()
        )),
        "{}",
        outcome.stdout
    );
    let requests = receiver.requests();
    assert_eq!(requests.len(), feed.len(), "one request per event");
    let by_id: BTreeMap<&str, &Received> = requests.iter().map(|r| (r.id(), r)).collect();
    assert_eq!(by_id.len(), feed.len(), "one request per webhook-id");
    for line in &feed {
        let id = id_of(line);
        let request = by_id
            .get(id.as_str())
            .unwrap_or_else(|| panic!("no request with webhook-id {id}"));
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, PATH);
        assert_eq!(
            request.headers.get("content-type").map(String::as_str),
            Some("application/json"),
            "{id}"
        );
        let timestamp: i64 = request.headers["webhook-timestamp"]
            .parse()
            .unwrap_or_else(|_| panic!("{id}: webhook-timestamp is not Unix seconds"));
        assert!(
            (before - 1..=after + 1).contains(&timestamp),
            "{id}: webhook-timestamp {timestamp} is not the time of sending ({before}..{after})"
        );
        assert!(
            request.headers["webhook-signature"].starts_with("v1,"),
            "{id}: {:?}",
            request.headers
        );
        let body = request.json();
        assert_eq!(body, envelope_of(line), "{id}: the body is the feed line");
        let keys: Vec<&str> = body
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys.iter().copied().collect::<BTreeSet<_>>(),
            BTreeSet::from(["type", "timestamp", "data"])
        );
        let data: BTreeSet<&str> = body["data"]
            .as_object()
            .expect("data is an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            data,
            BTreeSet::from(["ref", "effective_on", "line_ref", "details", "contract"]),
            "{id}"
        );
        let timestamp = body["timestamp"].as_str().expect("a timestamp");
        assert!(
            chrono::DateTime::parse_from_rfc3339(timestamp).is_ok() && timestamp.ends_with('Z'),
            "{id}: timestamp {timestamp}"
        );
        let effective_on = body["data"]["effective_on"].as_str().expect("a date");
        assert!(
            chrono::NaiveDate::parse_from_str(effective_on, "%Y-%m-%d").is_ok(),
            "{id}: effective_on {effective_on}"
        );
        assert_eq!(body["data"]["contract"]["ref"], body["data"]["ref"], "{id}");
    }

    // data.contract is the contract's record right after the change.
    let exported_ext = db.exported("EXT");
    assert_eq!(
        line_of(&feed, "EXT", "contract.imported")["data"]["contract"]["end_date"],
        json!("2025-12-31")
    );
    let extended = line_of(&feed, "EXT", "contract.extended");
    assert_ne!(
        exported_ext["end_date"],
        json!("2025-12-31"),
        "EXT was extended"
    );
    assert_eq!(
        extended["data"]["contract"]["end_date"], exported_ext["end_date"],
        "the extension's record has the new end date"
    );
    assert_eq!(
        line_of(&feed, "OLD", "contract.expired")["data"]["contract"]["status"],
        json!("expired")
    );
    assert!(
        line_of(&feed, "EVER", "contract.cancellation_registered")["data"]["contract"]
            ["cancellation"]["end_date"]
            .is_string(),
        "the registered cancellation is in the record"
    );
    assert_eq!(
        line_of(&feed, "EVER", "contract.cancellation_revoked")["data"]["contract"]["cancellation"],
        Value::Null,
        "the revoked cancellation is gone from the record"
    );
    for reference in ["EXT", "EVER", "OLD"] {
        let last = *lines_of(&feed, reference).last().expect("events");
        assert_eq!(
            last["data"]["contract"],
            db.exported(reference),
            "the last event of '{reference}' carries its exported record"
        );
    }

    // Nothing is sent twice.
    let again = deliver(&db, &config);
    again.expect_code(0);
    assert!(again.stdout.contains("delivered 0"), "{}", again.stdout);
    assert_eq!(receiver.count(), feed.len());

    verify_signatures(SECRET, &requests)
        .unwrap_or_else(|failure| panic!("the reference library refused a signature: {failure}"));
    let mut tampered = by_id[id_of(extended).as_str()].clone();
    tampered.body = tampered
        .body
        .replacen("\"ref\":\"EXT\"", "\"ref\":\"EXU\"", 1);
    assert_ne!(
        tampered.body,
        by_id[id_of(extended).as_str()].body,
        "the body was altered"
    );
    let mut with_tampered: Vec<Received> = requests.clone();
    with_tampered.push(tampered.clone());
    let refused =
        verify_signatures(SECRET, &with_tampered).expect_err("an altered body must not verify");
    assert!(
        refused.contains(&id_of(extended)) && refused.contains("signature"),
        "{refused}"
    );
    assert!(
        verify_signatures("whsec_QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB", &requests[..1]).is_err(),
        "another key must not verify"
    );
}

/// `events --after ID` prints exactly the lines after ID; `--type` filters (also with
/// `--after`); an unknown id exits 3, a malformed one or an unknown type exits 2.
fn events_resume_exactly_after_an_id_and_filter_by_type(backend: Backend) {
    let db = TestDb::new(backend);
    record_varied_events(&db);
    let all = complete_feed(&db);
    assert!(all.len() >= 7, "{all:?}");
    let ids: Vec<String> = all.iter().map(id_of).collect();
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        ids.len(),
        "ids are unique"
    );
    for k in [0, 2, all.len() / 2, all.len() - 2, all.len() - 1] {
        let rest = feed(&db, &["--after", &ids[k]]);
        assert_eq!(rest, all[k + 1..].to_vec(), "--after {} (line {k})", ids[k]);
    }

    let of_types = |lines: &[Value], types: &[&str]| -> Vec<Value> {
        lines
            .iter()
            .filter(|line| types.iter().any(|kind| line["type"] == *kind))
            .cloned()
            .collect()
    };
    let imported = feed(&db, &["--type", "contract.imported"]);
    assert_eq!(imported.len(), 3);
    assert_eq!(imported, of_types(&all, &["contract.imported"]));
    let two = feed(
        &db,
        &["--type", "contract.imported", "--type", "contract.extended"],
    );
    assert_eq!(
        two,
        of_types(&all, &["contract.imported", "contract.extended"])
    );
    assert_eq!(two.len(), 4);
    let k = 1;
    assert_eq!(
        feed(&db, &["--after", &ids[k], "--type", "contract.imported"]),
        of_types(&all[k + 1..], &["contract.imported"])
    );
    assert_eq!(
        feed(&db, &["--after", &ids[all.len() - 1]]),
        Vec::<Value>::new()
    );

    db.run(&["events", "--after", "evt_999999999"])
        .expect_code(3)
        .expect_stderr(&["evt_999999999"]);
    for malformed in ["42", "evt_", "evt_x1", "evt_-1", "msg_1"] {
        db.run(&["events", "--after", malformed])
            .expect_code(2)
            .expect_stderr(&[malformed]);
    }
    for unknown in ["contract.exploded", "extended"] {
        db.run(&["events", "--type", unknown])
            .expect_code(2)
            .expect_stderr(&[unknown]);
    }
}

/// A child process killed when dropped (a test that fails leaves no `--follow` behind).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `events --follow` prints what is there, then the events recorded after it started, and
/// exits 0 on SIGTERM.
fn events_follow_prints_new_events_until_sigterm(backend: Backend) {
    let db = TestDb::new(backend);
    db.import_ok(&[minimal("FOLLOW-A"), minimal("FOLLOW-B")]);
    let before = complete_feed(&db);
    assert_eq!(before.len(), 2);

    let mut command: Command = db.command(&["events", "--follow"]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = Running(command.spawn().expect("starting events --follow"));
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let stdout = child.0.stdout.take().expect("stdout");
    let collected = Arc::clone(&lines);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            collected
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(line);
        }
    });
    let mut stderr = child.0.stderr.take().expect("stderr");
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let wait_lines = |count: usize, what: &str| {
        let started = Instant::now();
        loop {
            let printed = lines.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if printed.len() >= count {
                return printed;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "events --follow: {what}: {} line(s) within 20 s: {printed:?}",
                printed.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_lines(before.len(), "the events already there");

    act(&db, "cancel", &["FOLLOW-A"], "2025-11-22").expect_code(0);
    db.import_ok(&[minimal("FOLLOW-C")]);
    let after = complete_feed(&db);
    assert_eq!(after.len(), 4);
    let printed = wait_lines(after.len(), "the events recorded after it started");

    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.0.id().to_string())
        .status()
        .expect("running kill");
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = child.0.try_wait().expect("waiting for events --follow") {
            break exit;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "events --follow did not exit within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    reader.join().expect("the stdout reader");
    let stderr = errors.join().expect("the stderr reader");
    assert_eq!(exit.code(), Some(0), "events --follow on SIGTERM: {stderr}");
    let printed: Vec<Value> = printed
        .iter()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert_eq!(printed, after, "the lines printed are the feed");
    assert_eq!(
        lines.lock().unwrap_or_else(|p| p.into_inner()).len(),
        after.len(),
        "nothing else printed"
    );
}

/// An endpoint answering 410 Gone is disabled: the `deliver` run that saw it exits 1,
/// `deliveries` says so, nothing more is sent to it (neither what waits nor new events);
/// `redeliver --endpoint N` enables it again and what waited arrives, in order per contract.
fn a_410_disables_the_endpoint_until_redeliver_enables_it(backend: Backend) {
    let db = TestDb::new(backend);
    let gone = Receiver::start(always(Reply::Status(410)));
    let config = write_config(&db, &[], &[("gone", &gone.url())]);
    deliver(&db, &config).expect_code(0);
    db.import_ok(&[minimal("G-1"), minimal("G-2")]);
    complete_feed(&db);

    // A disabled endpoint fails the run (a CronJob has no metrics to tell it).
    let first = deliver(&db, &config);
    first.expect_code(1).expect_stderr(&[
        "endpoint gone answered 410 Gone and is disabled",
        "contractd redeliver --endpoint gone",
        "1 endpoint(s) were disabled",
    ]);
    assert!(
        first.stdout.contains("delivered 0") && first.stdout.contains("endpoints disabled 1"),
        "{}",
        first.stdout
    );
    // The two imports were claimed together: at most those attempts were made.
    let sent = gone.count();
    assert!((1..=2).contains(&sent), "{}", gone.summary());
    let listing = with_config(&db, &config, &["deliveries"]);
    listing.expect_code(0);
    assert!(
        listing.stdout.contains("endpoint gone is disabled since")
            && listing.stdout.contains("(410 Gone)"),
        "{}",
        listing.stdout
    );
    assert!(listing.stdout.contains("pending"), "{}", listing.stdout);

    act(&db, "cancel", &["G-1"], "2025-11-22").expect_code(0);
    complete_feed(&db);
    let disabled = deliver(&db, &config);
    disabled.expect_code(0);
    assert!(
        disabled.stdout.contains("delivered 0"),
        "{}",
        disabled.stdout
    );
    assert_eq!(gone.count(), sent, "a disabled endpoint is sent nothing");

    gone.set_script(always(Reply::Status(200)));
    let enabled = with_config(&db, &config, &["redeliver", "--endpoint", "gone"]);
    enabled.expect_code(0);
    assert!(
        enabled.stdout.contains("endpoint gone enabled again"),
        "{}",
        enabled.stdout
    );
    let listing = with_config(&db, &config, &["deliveries"]);
    assert!(
        !listing.stdout.contains("is disabled"),
        "{}",
        listing.stdout
    );
    let resumed = deliver(&db, &config);
    resumed.expect_code(0);
    let feed = complete_feed(&db);
    assert_eq!(feed.len(), 3);
    assert!(
        resumed
            .stdout
            .contains(&format!("delivered {}", feed.len())),
        "{}",
        resumed.stdout
    );
    let accepted = accepted_ids(&gone.requests());
    let mut expected: Vec<String> = feed.iter().map(id_of).collect();
    let mut got = accepted.clone();
    got.sort();
    expected.sort();
    assert_eq!(
        got, expected,
        "every event arrives once the endpoint is enabled"
    );
    let g1: Vec<String> = lines_of(&feed, "G-1").into_iter().map(id_of).collect();
    let order: Vec<&String> = accepted.iter().filter(|id| g1.contains(id)).collect();
    assert_eq!(
        order,
        g1.iter().collect::<Vec<_>>(),
        "G-1's events in order"
    );
    verify_signatures(SECRET, &gone.requests())
        .unwrap_or_else(|failure| panic!("the reference library refused a signature: {failure}"));
}

/// A delivery refused `max_attempts` times fails for good: the `deliver` run that gives up
/// exits 1 naming it, `deliveries --failed` lists it, the contract's later events wait (other
/// contracts' do not), and `redeliver --endpoint N --failed` queues it again: everything
/// arrives, in order.
fn a_delivery_out_of_attempts_fails_and_holds_its_contract_back_until_redelivered(
    backend: Backend,
) {
    let db = TestDb::new(backend);
    let refusing: Script = Arc::new(|_, body, _| {
        if body["data"]["ref"] == "F-1" {
            Reply::Status(500)
        } else {
            Reply::Status(200)
        }
    });
    let receiver = Receiver::start(refusing);
    let config = write_config(
        &db,
        &[
            ("initial_backoff_ms", 1),
            ("max_backoff_ms", 1),
            ("max_attempts", 3),
        ],
        &[("crm", &receiver.url())],
    );
    deliver(&db, &config).expect_code(0);
    db.import_ok(&[minimal("F-1"), minimal("F-2")]);
    let feed_after_import = complete_feed(&db);
    let f1_imported = id_of(line_of(&feed_after_import, "F-1", "contract.imported"));
    let f2_imported = id_of(line_of(&feed_after_import, "F-2", "contract.imported"));

    // Retries are due within 1 ms, but a run ends when nothing is due at its last look:
    // run `deliver` until the one that uses up the last attempt.
    let mut runs = 0;
    let failing = loop {
        runs += 1;
        let outcome = deliver(&db, &config);
        if outcome.code != 0 || runs == 10 {
            break outcome;
        }
    };
    failing.expect_code(1).expect_stderr(&[
        &format!("{f1_imported} to crm"),
        "contract.imported of contract 'F-1'",
        "failed after 3 attempts",
        "HTTP 500",
    ]);
    assert!(
        failing.stdout.contains("failed for good 1"),
        "{}",
        failing.stdout
    );
    assert!(
        !failing.stderr.contains("HTTP 500: HTTP 500"),
        "the status is said once: {}",
        failing.stderr
    );
    let requests = receiver.requests();
    let f1_tries: Vec<&Received> = requests.iter().filter(|r| r.id() == f1_imported).collect();
    assert_eq!(f1_tries.len(), 3, "{}", receiver.summary());
    assert_eq!(accepted_ids(&requests), vec![f2_imported.clone()]);

    for args in [
        &["deliveries", "--failed"][..],
        &["deliveries", "--failed", "--endpoint", "crm"][..],
    ] {
        let listing = with_config(&db, &config, args);
        listing.expect_code(0);
        let rows: Vec<&str> = listing.stdout.lines().skip(1).collect();
        assert_eq!(rows.len(), 1, "{args:?}:\n{}", listing.stdout);
        let columns: Vec<&str> = rows[0].split_whitespace().collect();
        assert_eq!(
            &columns[..7],
            [
                f1_imported.as_str(),
                "crm",
                "contract.imported",
                "F-1",
                "failed",
                "3",
                "500"
            ],
            "{}",
            rows[0]
        );
    }

    // F-1's next event waits behind the failed one; F-2's goes out.
    act(&db, "cancel", &["F-1", "F-2"], "2025-11-22").expect_code(0);
    let feed_after_cancel = complete_feed(&db);
    let f1_cancel = id_of(line_of(
        &feed_after_cancel,
        "F-1",
        "contract.cancellation_registered",
    ));
    let f2_cancel = id_of(line_of(
        &feed_after_cancel,
        "F-2",
        "contract.cancellation_registered",
    ));
    receiver.set_script(always(Reply::Status(200)));
    let waiting = deliver(&db, &config);
    waiting.expect_code(0);
    let requests = receiver.requests();
    assert!(
        requests.iter().all(|r| r.id() != f1_cancel),
        "{f1_cancel} was sent while the earlier {f1_imported} of its contract failed"
    );
    assert_eq!(
        requests.iter().filter(|r| r.id() == f1_imported).count(),
        3,
        "a failed delivery is not retried by itself"
    );
    assert_eq!(
        accepted_ids(&requests),
        vec![f2_imported.clone(), f2_cancel.clone()]
    );

    let queued = with_config(
        &db,
        &config,
        &["redeliver", "--endpoint", "crm", "--failed"],
    );
    queued.expect_code(0);
    assert!(queued.stdout.contains("queued 1"), "{}", queued.stdout);
    deliver(&db, &config).expect_code(0);
    let requests = receiver.requests();
    assert_eq!(
        accepted_ids(&requests),
        vec![f2_imported, f2_cancel, f1_imported, f1_cancel],
        "everything arrives, F-1's events in order"
    );
    let listing = with_config(&db, &config, &["deliveries", "--failed"]);
    assert_eq!(listing.stdout.lines().count(), 1, "{}", listing.stdout);
    verify_signatures(SECRET, &requests)
        .unwrap_or_else(|failure| panic!("the reference library refused a signature: {failure}"));
}

/// A `[webhooks]` section that cannot work stops every command with exit 2 and a message
/// naming the key (and never the secret).
fn bad_webhook_configuration_exits_2_naming_the_key(backend: Backend) {
    let db = TestDb::new(backend);
    const UNSET: &str = "CONTRACTD_TEST_WEBHOOK_SECRET_NOT_SET";
    let endpoint = |name: &str, url: &str, rest: &str| {
        format!("[[webhooks.endpoints]]\nname = \"{name}\"\nurl = \"{url}\"\n{rest}\n")
    };
    let secret = format!("secret = \"{SECRET}\"");
    let cases: Vec<(&str, String, Vec<String>)> = vec![
        (
            "a URL that is not http(s)",
            endpoint("crm", "ftp://crm.example/hooks", &secret),
            vec!["webhooks.endpoints[0].url".into(), "ftp".into()],
        ),
        (
            "a duplicate name",
            endpoint("crm", "https://crm.example/a", &secret)
                + &endpoint("crm", "https://crm.example/b", &secret),
            vec![
                "webhooks.endpoints[1].name".into(),
                "'crm' is already the name of webhooks.endpoints[0]".into(),
            ],
        ),
        (
            "an unset secret_env",
            endpoint(
                "crm",
                "https://crm.example/hooks",
                &format!("secret_env = \"{UNSET}\""),
            ),
            vec!["webhooks.endpoints[0].secret_env".into(), UNSET.into()],
        ),
        (
            "an unknown event type",
            endpoint(
                "crm",
                "https://crm.example/hooks",
                &format!("{secret}\nevents = [\"contract.extended\", \"contract.exploded\"]"),
            ),
            vec![
                "webhooks.endpoints[0].events[1]".into(),
                "contract.exploded".into(),
            ],
        ),
        (
            "a secret without whsec_",
            endpoint(
                "crm",
                "https://crm.example/hooks",
                "secret = \"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"",
            ),
            vec!["webhooks.endpoints[0].secret".into(), "whsec_".into()],
        ),
    ];
    for (what, text, needles) in cases {
        let path = db.write_file("bad.toml", &text);
        for command in [&["deliver"][..], &["events"][..], &["export"][..]] {
            let mut full = vec!["--config", path.to_str().expect("UTF-8")];
            full.extend_from_slice(command);
            let mut run = db.command(&full);
            run.env_remove(UNSET);
            let outcome = crate::harness::run_command(run);
            let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
            outcome.expect_code(2).expect_stderr(&needles);
            assert!(
                !outcome.stderr.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
                "{what}: the secret is printed: {}",
                outcome.stderr
            );
            assert_eq!(outcome.stdout, "", "{what}: {command:?} did something");
        }
    }
    // The same from the environment.
    db.run_with_env(&["deliver"], &[("CONTRACTD__WEBHOOKS__MAX_ATTEMPTS", "0")])
        .expect_code(2)
        .expect_stderr(&["webhooks.max_attempts"]);
    // Commands that name an endpoint insist that it is configured.
    let config = write_config(&db, &[], &[("crm", "http://127.0.0.1:9/hooks")]);
    for args in [
        &["redeliver", "--endpoint", "nope"][..],
        &["deliveries", "--endpoint", "nope"][..],
    ] {
        with_config(&db, &config, args)
            .expect_code(2)
            .expect_stderr(&["'nope' is not a configured endpoint"]);
    }
}
