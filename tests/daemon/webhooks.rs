//! Webhooks sent by `contractd serve` to real HTTP receivers on 127.0.0.1: retries after a
//! 500, a timeout and a closed connection, spaced and in order per contract while other
//! contracts go on; a kill -9 in the middle of a burst (every event still received); three
//! replicas on one PostgreSQL database (every event exactly once); and the
//! `contractd_webhook_*` metrics (a 410 disables its endpoint). Every signature is checked
//! with the Standard Webhooks reference library (`tests/support/verify_webhooks.py`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde_json::{json, Value};

use crate::harness::{
    block_on, contractd_ok, feed, import, machine_alone, machine_shared, mixed_contract,
    promtool_check_metrics, scalar, wait_all_done, Daemon, DaemonOptions, DropDatabases,
    TestDatabase,
};
use crate::support::webhooks::{
    always, verify_signatures, webhooks_config, Received, Receiver, Reply, Script, SECRET,
};
use crate::support::{self, Backend};

crate::both_databases! {
    backend: [
        serve_retries_refused_attempts_in_order_per_contract,
        serve_killed_mid_burst_still_delivers_every_event,
        serve_exposes_webhook_metrics_and_a_410_disables_the_endpoint,
    ],
}

/// The instant the daemons of these tests run at (`serve --now`, `run --now`): after the
/// cancellations and revocations of 2025-11-22/23.
fn sweep_instant() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 11, 24, 12, 0, 0)
        .single()
        .expect("an instant")
}

/// An evergreen contract, cancellable at each month's end, in UTC.
fn evergreen(reference: &str) -> Value {
    json!({
        "ref": reference,
        "customer": "Customer",
        "start_date": "2025-01-01",
        "cancellation_window": "end_of_month",
        "auto_extend": false,
    })
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// Write the `--config` file of a test: `[webhooks]` with `settings`, one endpoint per
/// (name, url).
fn write_config(
    db: &TestDatabase,
    settings: &[(&str, u64)],
    endpoints: &[(&str, &str)],
) -> PathBuf {
    db.write_file("webhooks.toml", &webhooks_config(settings, endpoints))
}

/// `contractd --config FILE ARGS…`, which must succeed.
fn with_config(db: &TestDatabase, config: &std::path::Path, args: &[&str]) -> String {
    let config = config.to_str().expect("a UTF-8 path");
    let mut full = vec!["--config", config];
    full.extend_from_slice(args);
    contractd_ok(&db.url, &full, &[])
}

/// The whole feed once every recorded event is in it. On PostgreSQL an event enters the
/// feed only when every transaction that was running when it committed has ended, on the
/// whole server (other tests' transactions delay it too): wait for that, rather than read a
/// feed that is still catching up.
async fn complete_feed(database_url: &str) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let recorded = scalar(database_url, "SELECT COUNT(*) FROM contract_events").await;
        let lines = feed(database_url, &[]);
        if lines.len() as i64 == recorded {
            return lines;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the feed shows {} of the {recorded} recorded events after 30 s",
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until every delivery in the database is delivered (none pending, none failed).
async fn wait_backlog_empty(database_url: &str, timeout: Duration) {
    let started = Instant::now();
    loop {
        let undelivered = scalar(
            database_url,
            "SELECT COUNT(*) FROM webhook_deliveries WHERE status <> 'delivered'",
        )
        .await;
        if undelivered == 0 {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "{undelivered} deliveries still undelivered after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `id` of a feed line.
fn id_of(line: &Value) -> String {
    line["id"]
        .as_str()
        .expect("a feed line has an id")
        .to_string()
}

/// Every feed line's id.
fn ids_of(feed: &[Value]) -> Vec<String> {
    feed.iter().map(id_of).collect()
}

/// The number of an `evt_<n>` id.
fn number(id: &str) -> i64 {
    id.strip_prefix("evt_")
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("not an event id: {id}"))
}

/// How many requests arrived per `webhook-id`.
fn counts(requests: &[Received]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for request in requests {
        *counts.entry(request.id().to_string()).or_default() += 1;
    }
    counts
}

/// Whether every id of `ids` was accepted (answered 2xx) at least once.
fn all_accepted(requests: &[Received], ids: &[String]) -> bool {
    let accepted: BTreeSet<&str> = requests
        .iter()
        .filter(|request| request.accepted())
        .map(Received::id)
        .collect();
    ids.iter().all(|id| accepted.contains(id.as_str()))
}

/// Whether every id of `ids` arrived at least once.
fn all_received(requests: &[Received], ids: &[String]) -> bool {
    let received: BTreeSet<&str> = requests.iter().map(Received::id).collect();
    ids.iter().all(|id| received.contains(id.as_str()))
}

/// The order per contract: for each contract, every request for one of its events arrived
/// after each earlier event of that contract (by id) had been accepted. So the first
/// successful deliveries of a contract follow its event ids, and a contract's later events
/// wait for an earlier one that is being retried.
fn assert_order_per_contract(feed: &[Value], requests: &[Received]) {
    let mut by_contract: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in feed {
        let reference = line["data"]["ref"].as_str().expect("data.ref").to_string();
        by_contract.entry(reference).or_default().push(id_of(line));
    }
    for (reference, mut ids) in by_contract {
        ids.sort_by_key(|id| number(id));
        for pair in ids.windows(2) {
            let (earlier, later) = (&pair[0], &pair[1]);
            let accepted = requests
                .iter()
                .position(|request| request.id() == earlier && request.accepted())
                .unwrap_or_else(|| panic!("{earlier} of '{reference}' was never accepted"));
            let first_later = requests
                .iter()
                .position(|request| request.id() == later)
                .unwrap_or_else(|| panic!("{later} of '{reference}' never arrived"));
            assert!(
                first_later > accepted,
                "contract '{reference}': {later} arrived (request #{first_later}) before the \
                 earlier {earlier} was accepted (request #{accepted})"
            );
        }
    }
}

/// The requests for the event of `reference` of type `kind`, in arrival order.
fn attempts_of<'a>(
    feed: &[Value],
    requests: &'a [Received],
    reference: &str,
    kind: &str,
) -> (String, Vec<&'a Received>) {
    let line = feed
        .iter()
        .find(|line| line["data"]["ref"] == reference && line["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} event of '{reference}' in the feed"));
    let id = id_of(line);
    let attempts = requests.iter().filter(|r| r.id() == id).collect();
    (id, attempts)
}

/// The attempt of one event fails once, then is accepted: 500 (twice), a hang past the
/// sender's timeout, a connection closed without an answer. Other contracts' events go on
/// meanwhile, each contract's later events wait for its earlier ones, and every request
/// (failed attempts included) is signed so that the reference library verifies it.
fn serve_retries_refused_attempts_in_order_per_contract(backend: Backend) {
    block_on(retries(backend));
}

async fn retries(backend: Backend) {
    let _machine = machine_shared().await;
    const TIMEOUT_MS: u64 = 1_000;
    const HANG: Duration = Duration::from_secs(3);
    let db = TestDatabase::new(backend).await;
    let script: Script = Arc::new(|_, body, attempt| {
        let first_event = body["type"] == "contract.imported";
        match (
            body["data"]["ref"].as_str().unwrap_or(""),
            first_event,
            attempt,
        ) {
            ("R-500", true, 1 | 2) => Reply::Status(500),
            ("R-HANG", true, 1) => Reply::Hang(HANG),
            ("R-CLOSE", true, 1) => Reply::Close,
            _ => Reply::Status(200),
        }
    });
    let receiver = Receiver::start(script);
    let config = write_config(
        &db,
        &[
            ("timeout_ms", TIMEOUT_MS),
            ("initial_backoff_ms", 300),
            ("max_backoff_ms", 600),
            ("max_attempts", 10),
            ("poll_ms", 100),
        ],
        &[("crm", &receiver.url())],
    );
    // The endpoint is seen first before any event: it receives all that follow.
    with_config(&db, &config, &["deliver"]);
    assert_eq!(receiver.count(), 0);
    let references = ["R-500", "R-HANG", "R-CLOSE", "R-OK1", "R-OK2"];
    let records: Vec<Value> = references.iter().map(|r| evergreen(r)).collect();
    import(&db.url, db.dir.path(), &records);
    let mut cancel = vec!["cancel"];
    cancel.extend(references);
    cancel.extend(["--now", "2025-11-22T10:00:00Z"]);
    contractd_ok(&db.url, &cancel, &[]);
    for reference in references {
        contractd_ok(
            &db.url,
            &["revoke", reference, "--now", "2025-11-23T10:00:00Z"],
            &[],
        );
    }
    // The day's sweep before the daemon starts, so the feed is complete from the start.
    let instant = sweep_instant();
    contractd_ok(&db.url, &["run", "--now", &instant.to_rfc3339()], &[]);
    let feed = complete_feed(&db.url).await;
    let ids = ids_of(&feed);
    assert!(ids.len() >= 15, "three events per contract: {feed:?}");

    let mut daemon = Daemon::start(
        &db.url,
        DaemonOptions {
            now: Some(instant),
            config: Some(config.clone()),
            ..DaemonOptions::default()
        },
    );
    daemon.wait_started().await;
    receiver
        .wait_until(
            "every event accepted",
            Duration::from_secs(60),
            |requests| all_accepted(requests, &ids),
        )
        .await;
    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        daemon.log_tail(20)
    );
    let requests = receiver.requests();

    // Every event accepted exactly once; no request for anything else.
    for (id, _) in counts(&requests) {
        assert!(ids.contains(&id), "a request for {id}, not in the feed");
    }
    for id in &ids {
        let accepted = requests
            .iter()
            .filter(|r| r.id() == id && r.accepted())
            .count();
        assert_eq!(accepted, 1, "{id} accepted {accepted} times");
    }

    // The refused attempts and their retries: the same id, the same body, later each time.
    let (id_500, tries_500) = attempts_of(&feed, &requests, "R-500", "contract.imported");
    let (id_hang, tries_hang) = attempts_of(&feed, &requests, "R-HANG", "contract.imported");
    let (id_close, tries_close) = attempts_of(&feed, &requests, "R-CLOSE", "contract.imported");
    let replies = |tries: &[&Received]| tries.iter().map(|r| r.reply).collect::<Vec<_>>();
    assert_eq!(
        replies(&tries_500),
        vec![Reply::Status(500), Reply::Status(500), Reply::Status(200)],
        "{id_500}"
    );
    assert_eq!(
        replies(&tries_hang),
        vec![Reply::Hang(HANG), Reply::Status(200)],
        "{id_hang}"
    );
    assert_eq!(
        replies(&tries_close),
        vec![Reply::Close, Reply::Status(200)],
        "{id_close}"
    );
    for tries in [&tries_500, &tries_hang, &tries_close] {
        for pair in tries.windows(2) {
            assert!(
                pair[1].arrived > pair[0].arrived,
                "a retry came after the failure"
            );
            assert_eq!(
                pair[1].body, pair[0].body,
                "every attempt sends the same body"
            );
            let timestamp = |r: &Received| -> i64 {
                r.headers["webhook-timestamp"]
                    .parse()
                    .expect("a numeric webhook-timestamp")
            };
            assert!(timestamp(pair[1]) >= timestamp(pair[0]));
        }
    }
    // A hung attempt is given up only after the timeout: the retry cannot come sooner.
    let hang_gap = tries_hang[1].arrived - tries_hang[0].arrived;
    assert!(
        hang_gap >= Duration::from_millis(TIMEOUT_MS),
        "{id_hang} retried {hang_gap:?} after a hung attempt, before the {TIMEOUT_MS} ms timeout"
    );
    // Every other event was accepted at the first attempt.
    for (id, count) in counts(&requests) {
        if ![&id_500, &id_hang, &id_close].contains(&&id) {
            assert_eq!(count, 1, "{id} was sent {count} times");
        }
    }

    assert_order_per_contract(&feed, &requests);
    // Other contracts went on while R-HANG's first event hung: their last events (each held
    // behind their earlier ones) were accepted between the hung attempt and its retry.
    let position = |wanted: &Received| {
        requests
            .iter()
            .position(|r| r.id() == wanted.id() && r.arrived == wanted.arrived)
            .expect("a request of the list")
    };
    let (hung, retried) = (position(tries_hang[0]), position(tries_hang[1]));
    for reference in ["R-OK1", "R-OK2"] {
        let (id, tries) = attempts_of(&feed, &requests, reference, "contract.cancellation_revoked");
        let at = position(tries[0]);
        assert!(
            hung < at && at < retried,
            "{id} of {reference} (request #{at}) was not delivered while {id_hang} of R-HANG \
             hung (requests #{hung}..#{retried})"
        );
    }

    // `deliveries` tells the attempts.
    let listing = with_config(&db, &config, &["deliveries", "--endpoint", "crm"]);
    let row = listing
        .lines()
        .find(|line| line.split_whitespace().next() == Some(id_500.as_str()))
        .unwrap_or_else(|| panic!("{id_500} not listed:\n{listing}"));
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &columns[1..6],
        ["crm", "contract.imported", "R-500", "delivered", "3"],
        "{row}"
    );

    verify_signatures(SECRET, &requests)
        .unwrap_or_else(|failure| panic!("the reference library refused a signature: {failure}"));
    let mut tampered = tries_500[2].clone();
    tampered.body = tampered.body.replacen("R-500", "R-501", 1);
    assert_ne!(tampered.body, tries_500[2].body);
    let refused =
        verify_signatures(SECRET, &[tampered]).expect_err("an altered body must not verify");
    assert!(refused.contains(&id_500), "{refused}");
}

/// kill -9 while thousands of deliveries go out to a slow receiver, then a restart: every
/// event is received at least once. Duplicates can only be the attempts the killed process
/// had in flight (sent before the kill, resent after its leases expired); their count is
/// reported.
fn serve_killed_mid_burst_still_delivers_every_event(backend: Backend) {
    block_on(killed_mid_burst(backend));
}

async fn killed_mid_burst(backend: Backend) {
    let _machine = machine_alone().await;
    const CONTRACTS: usize = 2_000;
    let db = TestDatabase::new(backend).await;
    let receiver = Receiver::start(always(Reply::SlowStatus(200, Duration::from_millis(5))));
    let config = write_config(
        &db,
        &[
            // The killed process's leases last timeout_ms + 30 s: keep the timeout short.
            ("timeout_ms", 500),
            ("initial_backoff_ms", 100),
            ("max_backoff_ms", 1_000),
            ("poll_ms", 100),
        ],
        &[("crm", &receiver.url())],
    );
    with_config(&db, &config, &["deliver"]);
    let records: Vec<Value> = (0..CONTRACTS)
        .map(|i| evergreen(&format!("B-{i:05}")))
        .collect();
    import(&db.url, db.dir.path(), &records);
    let instant = sweep_instant();
    contractd_ok(&db.url, &["run", "--now", &instant.to_rfc3339()], &[]);
    let feed = complete_feed(&db.url).await;
    let ids = ids_of(&feed);
    assert!(ids.len() >= CONTRACTS, "{} events", ids.len());
    let options = DaemonOptions {
        now: Some(instant),
        config: Some(config.clone()),
        ..DaemonOptions::default()
    };

    let mut first = Daemon::start(&db.url, options.clone());
    first.wait_started().await;
    receiver
        .wait_until(
            "a quarter of the burst",
            Duration::from_secs(90),
            |requests| requests.len() >= ids.len() / 4,
        )
        .await;
    first.kill9().await;
    let received_before = counts(&receiver.requests()).len();
    assert!(
        received_before < ids.len(),
        "the kill came after the burst: {received_before} of {} events were received",
        ids.len()
    );

    let restarted = Instant::now();
    let mut second = Daemon::start(&db.url, options);
    second.wait_started().await;
    // What the killed process had leased waits until the leases expire (timeout_ms + 30 s).
    receiver
        .wait_until(
            "every event received after the restart",
            Duration::from_secs(120),
            |requests| all_received(requests, &ids),
        )
        .await;
    // The deliveries the killed process had leased are sent again once their leases
    // expired: only then is every duplicate there to count.
    wait_backlog_empty(&db.url, Duration::from_secs(90)).await;
    second.signal("TERM");
    let status = second.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        second.log_tail(20)
    );

    let requests = receiver.requests();
    let counts = counts(&requests);
    for id in counts.keys() {
        assert!(ids.contains(id), "a request for {id}, not in the feed");
    }
    let duplicates: Vec<(&String, &usize)> =
        counts.iter().filter(|(_, count)| **count > 1).collect();
    for (id, count) in &duplicates {
        let times: Vec<Instant> = requests
            .iter()
            .filter(|r| r.id() == id.as_str())
            .map(|r| r.arrived)
            .collect();
        assert!(
            **count == 2 && times[0] < restarted && times[1] >= restarted,
            "{id} was received {count} times, not once before the kill and once after the \
             restart"
        );
    }
    eprintln!(
        "kill -9 mid-burst ({backend:?}): {} events, {received_before} received before the \
         kill, {} duplicate(s) around it: {:?}",
        ids.len(),
        duplicates.len(),
        duplicates.iter().map(|(id, _)| id).collect::<Vec<_>>()
    );
    assert_order_per_contract(&feed, &requests);
}

/// Three `serve` replicas on one PostgreSQL database over a sweep of thousands of
/// transitions: every event recorded after the endpoint appeared is received exactly once,
/// and more than one replica sent them.
#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_deliver_every_event_exactly_once() {
    let _machine = machine_alone().await;
    const CONTRACTS: usize = 2_000;
    let zones = ["UTC", "Europe/Berlin", "Asia/Tokyo"];
    let day = NaiveDate::from_ymd_opt(2031, 3, 14).expect("date");
    let instant = Utc.from_utc_datetime(&day.and_hms_opt(12, 0, 0).expect("noon"));
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = support::fresh_postgres_url().await;
    let _cleanup = DropDatabases(vec![url.clone()]);
    contractd_ok(&url, &["migrate"], &[]);
    let records: Vec<Value> = (0..CONTRACTS)
        .map(|i| mixed_contract(i, &zones, day, 1))
        .collect();
    import(&url, dir.path(), &records);
    let receiver = Receiver::start(always(Reply::Status(200)));
    let config = dir.path().join("webhooks.toml");
    std::fs::write(
        &config,
        webhooks_config(
            &[("timeout_ms", 5_000), ("poll_ms", 100)],
            &[("crm", &receiver.url())],
        ),
    )
    .expect("writing the configuration");
    let config_text = config.to_str().expect("a UTF-8 path");
    // The endpoint appears after the import: it receives the sweep's events.
    contractd_ok(&url, &["--config", config_text, "deliver"], &[]);
    let imported = complete_feed(&url).await.len();

    let sweep_env = [
        ("CONTRACTD__SWEEP__BATCH_SIZE", "20"),
        ("CONTRACTD__SWEEP__LEASE_SECONDS", "2"),
        ("CONTRACTD__DATABASE__MIGRATE_ON_START", "false"),
    ];
    let mut replicas: Vec<Daemon> = (0..3)
        .map(|_| {
            Daemon::start(
                &url,
                DaemonOptions {
                    now: Some(instant),
                    config: Some(config.clone()),
                    env: env(&sweep_env),
                    ..DaemonOptions::default()
                },
            )
        })
        .collect();
    for replica in &mut replicas {
        replica.wait_started().await;
    }
    wait_all_done(&url, &zones, instant, Duration::from_secs(120)).await;
    let swept = complete_feed(&url).await.split_off(imported);
    assert!(swept.iter().all(|line| line["type"] != "contract.imported"));
    let ids = ids_of(&swept);
    assert!(
        ids.len() >= CONTRACTS,
        "thousands of transitions: only {} events",
        ids.len()
    );
    receiver
        .wait_until(
            "every event of the sweep received",
            Duration::from_secs(120),
            |requests| all_received(requests, &ids),
        )
        .await;
    wait_backlog_empty(&url, Duration::from_secs(60)).await;
    let mut delivered_by = Vec::new();
    for replica in &mut replicas {
        replica.signal("TERM");
        let status = replica.wait_exit(Duration::from_secs(15)).await;
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "{}",
            replica.log_tail(20)
        );
        delivered_by.push(replica.events("webhook.delivered").len());
    }

    let requests = receiver.requests();
    let counts = counts(&requests);
    let twice: Vec<(&String, &usize)> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        twice.is_empty(),
        "{} event(s) received more than once: {:?}",
        twice.len(),
        twice.iter().take(10).collect::<Vec<_>>()
    );
    let unexpected: Vec<&String> = counts.keys().filter(|id| !ids.contains(id)).collect();
    assert!(
        unexpected.is_empty(),
        "not events of the sweep: {unexpected:?}"
    );
    assert_eq!(requests.len(), ids.len());
    assert_eq!(
        delivered_by.iter().sum::<usize>(),
        ids.len(),
        "webhook.delivered per replica: {delivered_by:?}"
    );
    assert!(
        delivered_by.iter().filter(|count| **count > 0).count() >= 2,
        "the replicas shared the deliveries: {delivered_by:?}"
    );
    assert_order_per_contract(&swept, &requests);
}

/// With endpoints configured, /metrics carries the `contractd_webhook_*` families and stays
/// clean for promtool; an endpoint answering 410 Gone is disabled (the gauge says 1), keeps
/// its pending deliveries and is sent nothing more, while the other endpoint goes on.
fn serve_exposes_webhook_metrics_and_a_410_disables_the_endpoint(backend: Backend) {
    block_on(metrics(backend));
}

async fn metrics(backend: Backend) {
    let _machine = machine_shared().await;
    let db = TestDatabase::new(backend).await;
    let crm = Receiver::start(always(Reply::Status(200)));
    let gone = Receiver::start(always(Reply::Status(410)));
    let config = write_config(
        &db,
        &[("timeout_ms", 2_000), ("poll_ms", 100)],
        &[("crm", &crm.url()), ("gone", &gone.url())],
    );
    with_config(&db, &config, &["deliver"]);
    import(&db.url, db.dir.path(), &[evergreen("M-1")]);
    let instant = sweep_instant();
    contractd_ok(&db.url, &["run", "--now", &instant.to_rfc3339()], &[]);
    let first = ids_of(&complete_feed(&db.url).await);

    let mut daemon = Daemon::start(
        &db.url,
        DaemonOptions {
            now: Some(instant),
            config: Some(config.clone()),
            ..DaemonOptions::default()
        },
    );
    daemon.wait_started().await;
    crm.wait_until("crm has M-1's events", Duration::from_secs(30), |r| {
        all_accepted(r, &first)
    })
    .await;
    gone.wait_until("gone was tried", Duration::from_secs(30), |r| !r.is_empty())
        .await;
    // The backlog gauges are refreshed every 5 s.
    let started = Instant::now();
    while daemon.metric("contractd_webhook_endpoint_disabled{endpoint=\"gone\"}") != Some(1.0)
        || daemon
            .metric("contractd_webhook_pending_deliveries{endpoint=\"gone\"}")
            .unwrap_or(0.0)
            < first.len() as f64
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the 410 endpoint is not reported disabled with its pending deliveries:\n{}",
            daemon.get("/metrics").1
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let tried = gone.count();
    assert_eq!(
        tried,
        1,
        "the first 410 disables the endpoint: {}",
        gone.summary()
    );

    // A new event goes to crm only.
    import(&db.url, db.dir.path(), &[evergreen("M-2")]);
    let all = ids_of(&complete_feed(&db.url).await);
    crm.wait_until("crm has M-2's event", Duration::from_secs(30), |r| {
        all_accepted(r, &all)
    })
    .await;
    assert_eq!(gone.count(), tried, "a disabled endpoint is sent nothing");

    let (status, text) = daemon.get("/metrics");
    assert_eq!(status, 200);
    promtool_check_metrics(&text);
    for (family, kind) in [
        ("contractd_webhook_deliveries_total", "counter"),
        ("contractd_webhook_pending_deliveries", "gauge"),
        ("contractd_webhook_oldest_pending_age_seconds", "gauge"),
        ("contractd_webhook_failed_deliveries", "gauge"),
        ("contractd_webhook_endpoint_disabled", "gauge"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} {kind}")),
            "{family} ({kind}) missing:\n{text}"
        );
    }
    assert!(
        !text.contains(&crm.url()) && !text.contains(&gone.url()),
        "a URL in the metrics"
    );
    for outcome in ["delivered", "retry", "failed", "endpoint_gone"] {
        for endpoint in ["crm", "gone"] {
            let sample = format!(
                "contractd_webhook_deliveries_total{{endpoint=\"{endpoint}\",outcome=\"{outcome}\"}}"
            );
            assert!(
                daemon.metric(&sample).is_some(),
                "{sample} missing:\n{text}"
            );
        }
    }
    let sample = |name: &str, endpoint: &str| {
        daemon
            .metric(&format!("{name}{{endpoint=\"{endpoint}\"}}"))
            .unwrap_or_else(|| panic!("{name}{{endpoint=\"{endpoint}\"}} missing:\n{text}"))
    };
    assert_eq!(
        daemon.metric("contractd_webhook_deliveries_total{endpoint=\"crm\",outcome=\"delivered\"}"),
        Some(all.len() as f64)
    );
    assert_eq!(
        daemon.metric(
            "contractd_webhook_deliveries_total{endpoint=\"gone\",outcome=\"endpoint_gone\"}"
        ),
        Some(1.0)
    );
    assert_eq!(sample("contractd_webhook_endpoint_disabled", "crm"), 0.0);
    assert_eq!(sample("contractd_webhook_failed_deliveries", "crm"), 0.0);
    assert!(sample("contractd_webhook_oldest_pending_age_seconds", "gone") >= 0.0);

    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        daemon.log_tail(20)
    );
    verify_signatures(SECRET, &crm.requests())
        .unwrap_or_else(|failure| panic!("the reference library refused a signature: {failure}"));
}
