//! `contractd serve` interrupted in the middle of a long sweep: by SIGTERM (graceful: the
//! batch in flight commits, exit 0 within 10 s, the next start finishes the run) and by
//! kill -9 at random points (the final state equals an uninterrupted run's). SQLite.

use std::time::{Duration, Instant};

use chrono::{NaiveDate, TimeZone, Utc};
use rand::Rng;

use crate::harness::{
    contractd_ok, copy_sqlite, duplicate_transitions, events, expiring, export, import,
    machine_alone, mixed_contract, scalar, sqlite_url_in, wait_all_done, Daemon, DaemonOptions,
};

/// The simulated business date: far from today, nowhere near a midnight in the test zones
/// at the chosen instant.
fn as_of() -> NaiveDate {
    NaiveDate::from_ymd_opt(2031, 3, 14).expect("date")
}

/// Noon UTC on [`as_of`].
fn noon() -> chrono::DateTime<Utc> {
    Utc.from_utc_datetime(&as_of().and_hms_opt(12, 0, 0).expect("noon"))
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// SIGTERM while 20,000 contracts expire in batches of 200: exit 0 within 10 s, every
/// committed batch whole (each expired contract has its event, no event without its
/// change), the run released; the next start finishes it, each contract expired once.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_long_sweep_commits_whole_batches_and_resumes() {
    let _machine = machine_alone().await;
    const CONTRACTS: i64 = 20_000;
    const BATCH: i64 = 200;
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = sqlite_url_in(dir.path(), "t.db");
    let end = as_of() - chrono::Duration::days(1);
    let records: Vec<_> = (0..CONTRACTS)
        .map(|i| expiring(&format!("C-{i:05}"), "UTC", end))
        .collect();
    import(&url, dir.path(), &records);
    let options = DaemonOptions {
        now: Some(noon()),
        env: env(&[("CONTRACTD__SWEEP__BATCH_SIZE", "200")]),
        ..DaemonOptions::default()
    };

    let mut daemon = Daemon::start(&url, options.clone());
    daemon.wait_started().await;
    // Wait until a few batches of the expire run are committed.
    let started = Instant::now();
    loop {
        let batches = scalar(
            &url,
            "SELECT COALESCE(MAX(batches), 0) FROM job_runs WHERE job = 'expire'",
        )
        .await;
        if batches >= 3 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the expire run did not get going:\n{}",
            daemon.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let signalled = Instant::now();
    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(10)).await;
    let took = signalled.elapsed();
    assert_eq!(
        status.and_then(|status| status.code()),
        Some(0),
        "not exited 0 within 10 s of SIGTERM:\n{}",
        daemon.log_tail(20)
    );
    assert!(took <= Duration::from_secs(10), "took {took:?}");
    assert_eq!(daemon.events("daemon.stopping")[0]["signal"], "SIGTERM");
    assert_eq!(daemon.events("daemon.stopped").len(), 1);
    assert!(
        daemon
            .events("job.finished")
            .iter()
            .any(|line| line["job"] == "expire" && line["outcome"] == "interrupted"),
        "the expire run was interrupted:\n{}",
        daemon.log_tail(10)
    );

    let expired = scalar(
        &url,
        "SELECT COUNT(*) FROM contracts WHERE status = 'expired'",
    )
    .await;
    assert!(
        expired > 0 && expired < CONTRACTS,
        "SIGTERM came mid-run: {expired} of {CONTRACTS} expired"
    );
    assert_eq!(expired % BATCH, 0, "only whole batches are committed");
    let expired_events = scalar(
        &url,
        "SELECT COUNT(*) FROM contract_events WHERE kind = 'expired'",
    )
    .await;
    assert_eq!(expired_events, expired, "one event per committed change");
    let changed_without_event = scalar(
        &url,
        "SELECT COUNT(*) FROM contracts c WHERE c.status = 'expired' AND NOT EXISTS \
         (SELECT 1 FROM contract_events e WHERE e.contract_id = c.id AND e.kind = 'expired')",
    )
    .await;
    assert_eq!(changed_without_event, 0);
    let event_without_change = scalar(
        &url,
        "SELECT COUNT(*) FROM contract_events e JOIN contracts c ON c.id = e.contract_id \
         WHERE e.kind = 'expired' AND c.status <> 'expired'",
    )
    .await;
    assert_eq!(event_without_change, 0);
    let (status, changed) = (
        scalar(
            &url,
            "SELECT COUNT(*) FROM job_runs WHERE job = 'expire' AND status = 'running'",
        )
        .await,
        scalar(
            &url,
            "SELECT COALESCE(MAX(changed), 0) FROM job_runs WHERE job = 'expire'",
        )
        .await,
    );
    assert_eq!(
        status, 1,
        "the interrupted run stays open for the next start"
    );
    assert_eq!(changed, expired, "the ledger counts the committed batches");

    // The next start finishes the run where it stopped.
    let mut daemon = Daemon::start(&url, options);
    daemon.wait_started().await;
    wait_all_done(&url, &["UTC"], noon(), Duration::from_secs(90)).await;
    daemon.signal("TERM");
    assert_eq!(
        daemon
            .wait_exit(Duration::from_secs(10))
            .await
            .and_then(|s| s.code()),
        Some(0)
    );
    assert_eq!(
        scalar(
            &url,
            "SELECT COUNT(*) FROM contracts WHERE status = 'expired'"
        )
        .await,
        CONTRACTS
    );
    assert_eq!(
        scalar(
            &url,
            "SELECT COUNT(*) FROM contract_events WHERE kind = 'expired'"
        )
        .await,
        CONTRACTS
    );
    assert_eq!(
        scalar(
            &url,
            "SELECT COUNT(*) FROM (SELECT contract_id FROM contract_events WHERE kind = 'expired' \
             GROUP BY contract_id HAVING COUNT(*) > 1) AS twice"
        )
        .await,
        0,
        "no contract expired twice"
    );
    let resumed = daemon
        .events("job.finished")
        .into_iter()
        .find(|line| line["job"] == "expire")
        .expect("the resumed expire run finished");
    assert_eq!(resumed["outcome"], "succeeded");
    assert_eq!(resumed["changed"], CONTRACTS);
    assert_eq!(
        scalar(
            &url,
            "SELECT attempts FROM job_runs WHERE job = 'expire' AND status = 'succeeded'"
        )
        .await,
        2
    );
}

/// kill -9 at random points of a sweep over a mixed population (every job has work), then
/// a restart that takes the dead leases over: the final contracts and events equal those of
/// an uninterrupted run on a copy of the same data, with no event twice and none missing.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_random_points_ends_like_an_uninterrupted_run() {
    let _machine = machine_alone().await;
    const CONTRACTS: usize = 4_000;
    let zones = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo"];
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = sqlite_url_in(dir.path(), "t.db");
    let reference = sqlite_url_in(dir.path(), "reference.db");
    let records: Vec<_> = (0..CONTRACTS)
        .map(|i| mixed_contract(i, &zones, as_of(), 1))
        .collect();
    import(&url, dir.path(), &records);
    copy_sqlite(dir.path(), "t.db", "reference.db");

    let sweep_env = [
        ("CONTRACTD__SWEEP__BATCH_SIZE", "50"),
        ("CONTRACTD__SWEEP__LEASE_SECONDS", "2"),
    ];
    let now = noon().to_rfc3339();
    contractd_ok(&reference, &["run", "--now", &now], &sweep_env);
    let expected_events = events(&reference).await;
    let total = i64::try_from(expected_events.len() - CONTRACTS).unwrap_or(i64::MAX);
    assert!(total > 0, "the population has due work");

    let options = DaemonOptions {
        now: Some(noon()),
        env: env(&sweep_env),
        ..DaemonOptions::default()
    };
    let mut rng = rand::rng();
    let mut progress = Vec::new();
    let done_sql = "SELECT COUNT(*) FROM contract_events WHERE kind <> 'imported'";
    for _ in 0..4 {
        let before = scalar(&url, done_sql).await;
        let mut daemon = Daemon::start(&url, options.clone());
        daemon.wait_started().await;
        // The whole sweep takes a fraction of a second, and starts at the next tick: kill a
        // few milliseconds after this daemon has committed something, or after 3 s.
        let started = std::time::Instant::now();
        while scalar(&url, done_sql).await == before && started.elapsed() < Duration::from_secs(3) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..40))).await;
        daemon.kill9().await;
        progress.push(scalar(&url, done_sql).await);
    }
    assert!(
        progress.iter().any(|done| *done > 0 && *done < total),
        "no kill landed in the middle of the sweep: {progress:?} of {total}"
    );

    let mut daemon = Daemon::start(&url, options);
    daemon.wait_started().await;
    wait_all_done(&url, &zones, noon(), Duration::from_secs(90)).await;
    daemon.signal("TERM");
    assert_eq!(
        daemon
            .wait_exit(Duration::from_secs(10))
            .await
            .and_then(|s| s.code()),
        Some(0)
    );

    let expected = export(&reference);
    let actual = export(&url);
    assert_eq!(actual.len(), CONTRACTS);
    for (got, want) in actual.iter().zip(expected.iter()) {
        assert_eq!(got, want, "contract differs from the uninterrupted run");
    }
    assert_eq!(actual, expected);
    let actual_events = events(&url).await;
    assert!(
        duplicate_transitions(&actual_events).is_empty(),
        "duplicates: {:?}",
        duplicate_transitions(&actual_events)
    );
    let missing: Vec<_> = expected_events
        .iter()
        .filter(|event| !actual_events.contains(event))
        .take(5)
        .collect();
    let extra: Vec<_> = actual_events
        .iter()
        .filter(|event| !expected_events.contains(event))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing: {missing:?}\nextra: {extra:?}"
    );
    assert_eq!(actual_events.len(), expected_events.len());
    eprintln!("transition events after each kill: {progress:?} of {total}");
}
