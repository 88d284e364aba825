//! `contractd serve` as a process: a rehearsed midnight, the HTTP endpoints and metrics
//! (checked by promtool), systemd notifications, SIGHUP reload, and readiness without
//! migrations. Every test spawns the real binary on its own SQLite database.

use std::time::{Duration, Instant};

use crate::harness::{
    contractd_ok, expiring, import, local_midnight, machine_shared, promtool_check_metrics, scalar,
    sqlite_url_in, Daemon, DaemonOptions, NotifySocket,
};
use chrono::{NaiveDate, Utc};

/// A business date far from today, so nothing but the rehearsed midnight matters.
fn rehearsal_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2031, 3, 14).expect("date")
}

/// docs/rules.md, the daily jobs: a contract whose end date is the day before is expired within 2 s
/// after its zone's local midnight, and not before. The daemon's clock starts 3 s before
/// Kiritimati's midnight (`serve --now`); a Berlin contract with the same end date must not move,
/// since Berlin is still on the earlier day.
#[tokio::test(flavor = "multi_thread")]
async fn midnight_transition_within_two_seconds() {
    let _machine = machine_shared().await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = sqlite_url_in(dir.path(), "t.db");
    let date = rehearsal_date();
    let end = date - chrono::Duration::days(1);
    import(
        &url,
        dir.path(),
        &[
            expiring("KIRI-1", "Pacific/Kiritimati", end),
            expiring("BERLIN-1", "Europe/Berlin", end),
        ],
    );
    let midnight = local_midnight(chrono_tz::Pacific::Kiritimati, date);
    let spawned = Instant::now();
    let mut daemon = Daemon::start(
        &url,
        DaemonOptions {
            now: Some(midnight - chrono::Duration::seconds(3)),
            ..DaemonOptions::default()
        },
    );
    daemon.wait_started().await;
    // The daemon's clock reads midnight 3 s after it was created, which happened between
    // the spawn and daemon.started. Poll the database until the transition shows.
    let started_seen = Instant::now();
    let committed_at = loop {
        let expired = scalar(
            &url,
            "SELECT COUNT(*) FROM contract_events WHERE contract_ref = 'KIRI-1' AND kind = 'expired'",
        )
        .await;
        if expired > 0 {
            break Instant::now();
        }
        assert!(
            started_seen.elapsed() < Duration::from_secs(10),
            "KIRI-1 not expired 10 s after start:\n{}",
            daemon.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    // Not before midnight: midnight is at least 3 s after the spawn.
    assert!(
        committed_at.duration_since(spawned) >= Duration::from_millis(2900),
        "expired {:?} after the spawn, before the rehearsed midnight",
        committed_at.duration_since(spawned)
    );
    // Within 2 s after midnight, which is at most 3 s after daemon.started was seen
    // (plus the polling interval).
    assert!(
        committed_at.duration_since(started_seen) <= Duration::from_millis(5100),
        "expired {:?} after start: later than 2 s after midnight",
        committed_at.duration_since(started_seen)
    );
    // The same in the daemon's own clock: the event was recorded in [midnight, midnight+2s].
    let recorded_ms = scalar(
        &url,
        "SELECT recorded_at_ms FROM contract_events WHERE contract_ref = 'KIRI-1' AND kind = 'expired'",
    )
    .await;
    let midnight_ms = midnight.timestamp_millis();
    assert!(
        (midnight_ms..=midnight_ms + 2000).contains(&recorded_ms),
        "recorded {} ms after midnight",
        recorded_ms - midnight_ms
    );
    let berlin = scalar(
        &url,
        "SELECT COUNT(*) FROM contract_events WHERE contract_ref = 'BERLIN-1' AND kind = 'expired'",
    )
    .await;
    assert_eq!(berlin, 0, "Berlin's day has not ended yet");
    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.and_then(|s| s.code()), Some(0));
}

/// /healthz and /readyz answer 200, /metrics passes `promtool check metrics`, carries every
/// documented family with the `sweep_job` label (never `job`), and the systemd protocol is
/// followed: READY=1, WATCHDOG=1 while ticking, STOPPING=1 on SIGTERM.
#[tokio::test(flavor = "multi_thread")]
async fn endpoints_metrics_and_systemd_notifications() {
    let _machine = machine_shared().await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = sqlite_url_in(dir.path(), "t.db");
    let date = rehearsal_date();
    import(
        &url,
        dir.path(),
        &[expiring("E-1", "UTC", date - chrono::Duration::days(1))],
    );
    let socket_path = dir.path().join("notify.sock");
    let notifications = NotifySocket::bind(&socket_path);
    let mut daemon = Daemon::start(
        &url,
        DaemonOptions {
            now: Some(local_midnight(chrono_tz::UTC, date) + chrono::Duration::hours(12)),
            notify_socket: Some(socket_path),
            watchdog_usec: Some(1_000_000),
            ..DaemonOptions::default()
        },
    );
    daemon.wait_started().await;
    daemon
        .wait_status("/healthz", 200, Duration::from_secs(5))
        .await;
    daemon
        .wait_status("/readyz", 200, Duration::from_secs(5))
        .await;
    daemon
        .wait_event("job.finished", Duration::from_secs(10))
        .await;

    // READY=1 first, then watchdog pings at half the 1 s interval.
    let started = Instant::now();
    while notifications.count("WATCHDOG=1") < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no watchdog pings: {:?}",
            notifications.messages()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        notifications.messages().first().map(String::as_str),
        Some("READY=1\n"),
        "READY=1 first"
    );

    // Wait until the sweep is counted, then check the exposition.
    let started = Instant::now();
    while daemon.metric("contractd_transitions_total{sweep_job=\"expire\"}") != Some(1.0) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "expire transition not counted:\n{}",
            daemon.get("/metrics").1
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, text) = daemon.get("/metrics");
    assert_eq!(status, 200);
    promtool_check_metrics(&text);
    for family in [
        "contractd_job_runs_total",
        "contractd_transitions_total",
        "contractd_job_run_duration_seconds",
        "contractd_contracts",
        "contractd_invalid_rows_skipped_total",
        "contractd_job_last_success_timestamp_seconds",
        "contractd_database_up",
        "contractd_ticks_total",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{text}"
        );
    }
    assert!(
        !text.contains("{job=") && !text.contains(",job="),
        "a `job` label:\n{text}"
    );
    assert_eq!(
        daemon.metric("contractd_job_runs_total{sweep_job=\"expire\",outcome=\"succeeded\"}"),
        Some(1.0)
    );
    assert_eq!(daemon.metric("contractd_database_up"), Some(1.0));
    assert!(daemon.metric("contractd_ticks_total").unwrap_or(0.0) >= 1.0);
    let last_success = daemon
        .metric("contractd_job_last_success_timestamp_seconds{sweep_job=\"expire\",zone=\"UTC\"}")
        .expect("last success of expire in UTC");
    let now = Utc::now().timestamp() as f64;
    assert!(
        (now - 60.0..=now + 1.0).contains(&last_success),
        "last success {last_success} is real time, not the shifted clock"
    );
    // The contract gauge comes from the background count (taken at start, before the sweep
    // or after it): one contract in all.
    let counted: f64 = ["draft", "active", "expired", "cancelled"]
        .iter()
        .filter_map(|status| daemon.metric(&format!("contractd_contracts{{status=\"{status}\"}}")))
        .sum();
    assert_eq!(counted, 1.0, "{text}");
    assert_eq!(daemon.get("/nothing-here").0, 404);

    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        daemon.log_tail(20)
    );
    assert!(
        notifications.messages().iter().any(|m| m == "STOPPING=1\n"),
        "STOPPING=1 on SIGTERM: {:?}",
        notifications.messages()
    );
    let stopping = daemon.events("daemon.stopping");
    assert_eq!(stopping.len(), 1);
    assert_eq!(stopping[0]["signal"], "SIGTERM");
    assert_eq!(daemon.events("daemon.stopped").len(), 1);
}

/// SIGHUP reads the configuration file again: a new log level applies without a restart;
/// an invalid file is reported and the old configuration stays; a new tick schedule replaces
/// the old one.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_log_level_and_tick() {
    let _machine = machine_shared().await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = sqlite_url_in(dir.path(), "t.db");
    import(
        &url,
        dir.path(),
        &[expiring("E-1", "UTC", rehearsal_date())],
    );
    let config = dir.path().join("contractd.toml");
    let write = |text: &str| std::fs::write(&config, text).expect("writing the config file");
    write("[log]\nlevel = \"info\"\n[scheduler]\ntick = \"* * * * * *\"\n");
    let mut daemon = Daemon::start(
        &url,
        DaemonOptions {
            config: Some(config.clone()),
            // The file decides the tick.
            env_remove: vec!["CONTRACTD__SCHEDULER__TICK".into()],
            ..DaemonOptions::default()
        },
    );
    daemon.wait_started().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let trace_lines = |daemon: &Daemon| {
        daemon
            .log_lines()
            .iter()
            .filter(|line| {
                line.contains("\"level\":\"TRACE\"") && line.contains("\"event\":\"tick\"")
            })
            .count()
    };
    assert_eq!(trace_lines(&daemon), 0, "no trace lines at level info");

    // A new level.
    write("[log]\nlevel = \"info,contractd=trace\"\n[scheduler]\ntick = \"* * * * * *\"\n");
    daemon.signal("HUP");
    let reloaded = daemon
        .wait_event("daemon.reloaded", Duration::from_secs(10))
        .await;
    assert_eq!(reloaded["log_level"], "info,contractd=trace");
    assert_eq!(reloaded["tick_changed"], false);
    let started = Instant::now();
    while trace_lines(&daemon) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no trace-level tick line after the reload:\n{}",
            daemon.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(daemon.is_running());
    // Ticks with nothing due do no database work: no zone due, the zone list not read
    // (it is read at most once a minute, or when a business date changes).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let ticks = daemon.events("tick");
    assert!(ticks.len() >= 2, "{ticks:?}");
    assert!(
        ticks.iter().all(|tick| tick["pending"] == 0),
        "idle ticks found work: {ticks:?}"
    );
    assert!(
        ticks
            .iter()
            .filter(|tick| tick["zones_read"] == true)
            .count()
            <= 1,
        "idle ticks read the zone list: {ticks:?}"
    );

    // An invalid file: reported, nothing changes, the daemon keeps running and ticking.
    write("[log]\nlevel = \"info\"\n[scheduler]\ntick = \"every now and then\"\n");
    daemon.signal("HUP");
    let failed = daemon
        .wait_event("daemon.reload_failed", Duration::from_secs(10))
        .await;
    assert!(
        failed["error"]
            .as_str()
            .unwrap_or_default()
            .contains("scheduler.tick"),
        "{failed}"
    );
    assert_eq!(daemon.events("daemon.reloaded").len(), 1);
    let before = trace_lines(&daemon);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(daemon.is_running());
    assert_eq!(daemon.get("/healthz").0, 200);
    assert!(
        trace_lines(&daemon) > before,
        "the previous level (trace) and tick stay after a failed reload"
    );

    // A slower tick: every third second.
    write("[log]\nlevel = \"info,contractd=trace\"\n[scheduler]\ntick = \"*/3 * * * * *\"\n");
    daemon.signal("HUP");
    let started = Instant::now();
    while daemon.events("daemon.reloaded").len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "second reload not logged:\n{}",
            daemon.log_tail(10)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reloaded = daemon.events("daemon.reloaded")[1].clone();
    assert_eq!(reloaded["tick"], "*/3 * * * * *");
    assert_eq!(reloaded["tick_changed"], true);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let ticks_before = daemon.metric("contractd_ticks_total").unwrap_or(0.0);
    tokio::time::sleep(Duration::from_millis(6500)).await;
    let ticks = daemon.metric("contractd_ticks_total").unwrap_or(0.0) - ticks_before;
    assert!(
        (1.0..=3.0).contains(&ticks),
        "{ticks} ticks in 6.5 s: the tick every 3 s is not in force"
    );
    assert_eq!(
        daemon.get("/healthz").0,
        200,
        "a slower tick is still healthy"
    );

    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.and_then(|s| s.code()), Some(0));
}

/// Without migrations the daemon runs but is not ready; once migrated it is.
#[tokio::test(flavor = "multi_thread")]
async fn not_ready_until_migrated() {
    let _machine = machine_shared().await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = sqlite_url_in(dir.path(), "t.db");
    let mut daemon = Daemon::start(
        &url,
        DaemonOptions {
            env: vec![(
                "CONTRACTD__DATABASE__MIGRATE_ON_START".into(),
                "false".into(),
            )],
            ..DaemonOptions::default()
        },
    );
    daemon.wait_started().await;
    daemon
        .wait_status("/readyz", 503, Duration::from_secs(5))
        .await;
    daemon
        .wait_status("/healthz", 200, Duration::from_secs(5))
        .await;
    let unavailable = daemon
        .wait_event("database.unavailable", Duration::from_secs(10))
        .await;
    assert!(unavailable["retry_in_ms"].as_u64().is_some());
    contractd_ok(&url, &["migrate"], &[]);
    daemon
        .wait_status("/readyz", 200, Duration::from_secs(5))
        .await;
    daemon.signal("INT");
    let status = daemon.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    assert_eq!(daemon.events("daemon.stopping")[0]["signal"], "SIGINT");
}
