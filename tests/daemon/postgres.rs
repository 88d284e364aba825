//! `contractd serve` on PostgreSQL: three replicas over simulated days (every transition
//! exactly once, the same as one process), and a database that goes away and comes back
//! under a running daemon (a private cluster, so the shared test server stays up).

use crate::support;
use crate::support::noon;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::NaiveDate;

use crate::harness::{
    contractd_ok, copy_postgres, duplicate_transitions, events, expiring, export, import,
    local_midnight, machine_alone, mixed_contract, scalar, wait_all_done, Daemon, DaemonOptions,
    DropDatabases, PrivateCluster,
};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// Three `serve` processes on one database, restarted with `--now` a day later four times
/// (one of them killed with -9 on the second day): every (contract, kind, effective date)
/// event at most once, and the outcome equals one `contractd run` per day on a copy.
#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_over_simulated_days_transition_exactly_once() {
    let _machine = machine_alone().await;
    const CONTRACTS: usize = 800;
    const DAYS: i64 = 4;
    let zones = [
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "Asia/Tokyo",
        "Pacific/Kiritimati",
    ];
    let first_day = NaiveDate::from_ymd_opt(2031, 3, 14).expect("date");
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = support::fresh_postgres_url().await;
    let mut cleanup = DropDatabases(vec![url.clone()]);
    contractd_ok(&url, &["migrate"], &[]);
    let records: Vec<_> = (0..CONTRACTS)
        .map(|i| mixed_contract(i, &zones, first_day, DAYS))
        .collect();
    import(&url, dir.path(), &records);
    let reference = copy_postgres(&url).await;
    cleanup.0.push(reference.clone());

    let sweep_env = [
        ("CONTRACTD__SWEEP__BATCH_SIZE", "20"),
        ("CONTRACTD__SWEEP__LEASE_SECONDS", "2"),
        ("CONTRACTD__DATABASE__MIGRATE_ON_START", "false"),
    ];
    for day in 0..DAYS {
        let instant = noon(first_day + chrono::Duration::days(day));
        contractd_ok(
            &reference,
            &["run", "--now", &instant.to_rfc3339()],
            &sweep_env,
        );
        let mut replicas: Vec<Daemon> = (0..3)
            .map(|_| {
                Daemon::start(
                    &url,
                    DaemonOptions {
                        now: Some(instant),
                        env: env(&sweep_env),
                        ..DaemonOptions::default()
                    },
                )
            })
            .collect();
        for replica in &mut replicas {
            replica.wait_started().await;
        }
        if day == 1 {
            // One replica dies mid-day; the others take its leases over.
            tokio::time::sleep(Duration::from_millis(300)).await;
            replicas[0].kill9().await;
        }
        wait_all_done(&url, &zones, instant, Duration::from_secs(90)).await;
        for replica in &mut replicas {
            if replica.is_running() {
                replica.signal("TERM");
                let status = replica.wait_exit(Duration::from_secs(10)).await;
                assert_eq!(
                    status.and_then(|s| s.code()),
                    Some(0),
                    "{}",
                    replica.log_tail(20)
                );
            }
        }
    }

    let actual_events = events(&url).await;
    let duplicates = duplicate_transitions(&actual_events);
    assert!(
        duplicates.is_empty(),
        "transitions recorded twice: {duplicates:?}"
    );
    assert_eq!(
        scalar(
            &url,
            "SELECT COUNT(*) FROM (SELECT contract_id, kind, effective_on, line_ref \
             FROM contract_events GROUP BY contract_id, kind, effective_on, line_ref \
             HAVING COUNT(*) > 1) AS twice"
        )
        .await,
        0
    );
    let expected_events = events(&reference).await;
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
    let kinds: BTreeSet<&str> = actual_events.iter().map(|e| e.kind.as_str()).collect();
    for kind in [
        "expired",
        "extended",
        "cancellation_executed",
        "deadlines_refreshed",
    ] {
        assert!(
            kinds.contains(kind),
            "no {kind} event: the population lacks work"
        );
    }
    assert_eq!(export(&url), export(&reference));
    let owners = scalar(
        &url,
        "SELECT COUNT(DISTINCT owner) FROM job_runs WHERE changed > 0",
    )
    .await;
    assert!(
        owners >= 2,
        "the work was shared: {owners} replica(s) changed contracts"
    );
}

/// PostgreSQL stops under a running daemon: /readyz answers 503 and
/// contractd_database_up 0, the daemon stays alive and logs database.unavailable; when the
/// server is back, /readyz answers 200 and the work that fell due meanwhile is done.
#[tokio::test(flavor = "multi_thread")]
async fn database_outage_under_a_running_daemon() {
    let _machine = machine_alone().await;
    let cluster = PrivateCluster::start();
    let url = cluster.url();
    let dir = tempfile::tempdir().expect("temporary directory");
    let date = NaiveDate::from_ymd_opt(2031, 3, 14).expect("date");
    contractd_ok(&url, &["migrate"], &[]);
    import(
        &url,
        dir.path(),
        &[
            // Due at start (the day before the rehearsed midnight).
            expiring("EARLY", "UTC", date - chrono::Duration::days(2)),
            // Due at the rehearsed midnight, while the database is down.
            expiring("LATE", "UTC", date - chrono::Duration::days(1)),
        ],
    );
    let midnight = local_midnight(chrono_tz::UTC, date);
    let mut daemon = Daemon::start(
        &url,
        DaemonOptions {
            now: Some(midnight - chrono::Duration::seconds(12)),
            env: env(&[
                ("CONTRACTD__DATABASE__CONNECT_TIMEOUT_MS", "1000"),
                ("CONTRACTD__DATABASE__MIGRATE_ON_START", "false"),
            ]),
            ..DaemonOptions::default()
        },
    );
    daemon.wait_started().await;
    daemon
        .wait_status("/readyz", 200, Duration::from_secs(10))
        .await;
    let expired = |reference: &'static str| {
        let url = url.clone();
        async move {
            scalar(
                &url,
                &format!(
                    "SELECT COUNT(*) FROM contract_events WHERE contract_ref = '{reference}' \
                     AND kind = 'expired'"
                ),
            )
            .await
        }
    };
    let started = Instant::now();
    while expired("EARLY").await == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "EARLY not expired:\n{}",
            daemon.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(expired("LATE").await, 0, "LATE is due only after midnight");

    cluster.stop_server();
    daemon
        .wait_status("/readyz", 503, Duration::from_secs(10))
        .await;
    assert_eq!(daemon.metric("contractd_database_up"), Some(0.0));
    assert_eq!(daemon.get("/healthz").0, 200, "alive without its database");
    // Midnight passes during the outage: the tick that notices the new day fails.
    let unavailable = daemon
        .wait_event("database.unavailable", Duration::from_secs(20))
        .await;
    assert!(
        unavailable["retry_in_ms"].as_u64().is_some(),
        "{unavailable}"
    );
    assert!(unavailable["error"].as_str().is_some(), "{unavailable}");
    // The next attempt comes after the backoff plus a connect timeout (about 2 s): wait for
    // it rather than for a fixed time, which raced with it on a loaded machine.
    let started = Instant::now();
    while daemon.events("database.unavailable").len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "retried with backoff:\n{}",
            daemon.log_tail(10)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(daemon.is_running(), "{}", daemon.log_tail(20));
    assert_eq!(daemon.get("/healthz").0, 200);

    cluster.start_server();
    daemon
        .wait_status("/readyz", 200, Duration::from_secs(15))
        .await;
    let started = Instant::now();
    while expired("LATE").await == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(45),
            "LATE not expired after the database came back:\n{}",
            daemon.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    daemon
        .wait_event("database.recovered", Duration::from_secs(5))
        .await;
    let started = Instant::now();
    while daemon.metric("contractd_database_up") != Some(1.0) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "database_up stays 0"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    daemon.signal("TERM");
    assert_eq!(
        daemon
            .wait_exit(Duration::from_secs(10))
            .await
            .and_then(|s| s.code()),
        Some(0)
    );
    assert_eq!(expired("LATE").await, 1);
}
