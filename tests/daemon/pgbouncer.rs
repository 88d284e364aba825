//! `contractd serve` behind PgBouncer in transaction mode (a PgBouncer of the test's own, see
//! `tests/support/pgbouncer.rs`): three replicas ticking through it over two simulated days,
//! each transition exactly once and the same as one `contractd run` a day straight on a copy;
//! `/readyz` answers through it.

use crate::support;
use crate::support::pgbouncer::PgBouncer;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{NaiveDate, TimeZone, Utc};

use crate::harness::{
    contractd_ok, copy_postgres, duplicate_transitions, events, export, import, machine_alone,
    mixed_contract, wait_all_done, Daemon, DaemonOptions, DropDatabases,
};

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_serving_through_pgbouncer_transition_exactly_once() {
    let _machine = machine_alone().await;
    const CONTRACTS: usize = 300;
    const DAYS: i64 = 2;
    let zones = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo"];
    let first_day = NaiveDate::from_ymd_opt(2031, 3, 14).expect("date");
    let bouncer = PgBouncer::start();
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
    ];
    let pooled = bouncer.url(&url);
    for day in 0..DAYS {
        let instant = Utc.from_utc_datetime(
            &(first_day + chrono::Duration::days(day))
                .and_hms_opt(12, 0, 0)
                .expect("noon"),
        );
        contractd_ok(
            &reference,
            &["run", "--now", &instant.to_rfc3339()],
            &sweep_env,
        );
        let mut env: Vec<(String, String)> = sweep_env
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        env.push(("CONTRACTD__DATABASE__DIRECT_URL".into(), url.clone()));
        env.push((
            "CONTRACTD__DATABASE__TRANSACTION_POOLER".into(),
            "true".into(),
        ));
        let mut replicas: Vec<Daemon> = (0..3)
            .map(|_| {
                Daemon::start(
                    &pooled,
                    DaemonOptions {
                        now: Some(instant),
                        env: env.clone(),
                        ..DaemonOptions::default()
                    },
                )
            })
            .collect();
        for replica in &mut replicas {
            replica.wait_started().await;
        }
        for replica in &mut replicas {
            replica
                .wait_status("/readyz", 200, Duration::from_secs(10))
                .await;
        }
        wait_all_done(&url, &zones, instant, Duration::from_secs(90)).await;
        // A few more ticks with nothing to do, through the pooler all the same.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        for replica in &mut replicas {
            assert!(replica.is_running(), "{}", replica.log_tail(20));
            let failures: Vec<_> = replica
                .log_lines()
                .into_iter()
                .filter(|line| line.contains("prepared statement") || line.contains("\"ERROR\""))
                .collect();
            assert!(failures.is_empty(), "{failures:?}");
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

    let actual = events(&url).await;
    let duplicates = duplicate_transitions(&actual);
    assert!(
        duplicates.is_empty(),
        "transitions recorded twice: {duplicates:?}"
    );
    let expected = events(&reference).await;
    assert_eq!(actual, expected);
    let kinds: BTreeSet<&str> = actual.iter().map(|e| e.kind.as_str()).collect();
    assert!(kinds.len() >= 3, "the population lacks work: {kinds:?}");
    assert_eq!(export(&url), export(&reference));
}
