//! The nightly sweep on both databases (docs/rules.md section 5, the daily jobs, and section 1,
//! dates and zones): each rule through the real storage, idempotence, catch-up, time zones and DST,
//! invalid rows, failing runs, dry runs and lease takeover.

use crate::support;
use crate::support::population;
use crate::support::{load, noon};

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use contractd::clock::OffsetClock;
use contractd::contract::{Contract, ContractStatus, LineStatus};
use contractd::lifecycle::{Job, RulePolicy};
use contractd::shutdown::Shutdown;
use contractd::storage::{ContractStore, RunKey, RunStatus};
use contractd::sweep::{run_job, sweep_due, JobOutcome, SweepOptions, SweepReport};
use contractd::transfer::export;
use support::{date, fresh_sqlite, with_postgres, RawDb};

fn instant(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("test instant")
        .with_timezone(&Utc)
}

fn options(batch_size: u32) -> SweepOptions {
    SweepOptions::new(batch_size, Duration::from_secs(60), RulePolicy::default())
}

/// One sweep as of `day` in every zone.
async fn sweep_as_of<S: ContractStore>(store: &S, day: NaiveDate) -> SweepReport {
    let mut options = options(100);
    options.as_of = Some(day);
    sweep_due(
        store,
        &OffsetClock::fixed(noon(day)),
        &options,
        &Shutdown::never(),
    )
    .await
    .expect("sweep")
}

/// One sweep at an instant: each zone on its own local date.
async fn sweep_at<S: ContractStore>(store: &S, now: DateTime<Utc>) -> SweepReport {
    sweep_due(
        store,
        &OffsetClock::fixed(now),
        &options(100),
        &Shutdown::never(),
    )
    .await
    .expect("sweep")
}

async fn contract<S: ContractStore>(store: &S, reference: &str) -> Contract {
    store
        .load_contract(reference)
        .await
        .expect("load")
        .unwrap_or_else(|| panic!("no contract {reference}"))
        .contract
        .unwrap_or_else(|error| panic!("invalid contract {reference}: {error}"))
}

async fn event_kinds<S: ContractStore>(store: &S, reference: &str) -> Vec<String> {
    store
        .events(reference)
        .await
        .expect("events")
        .into_iter()
        .map(|event| event.kind)
        .collect()
}

async fn snapshot<S: ContractStore>(store: &S) -> String {
    let mut out = Vec::new();
    export(store, &[], &mut out, |error| panic!("invalid row: {error}"))
        .await
        .expect("export");
    String::from_utf8(out).expect("utf-8 export")
}

fn count(kinds: &[String], kind: &str) -> usize {
    kinds.iter().filter(|k| k.as_str() == kind).count()
}

crate::both_databases! {
    store_and_raw: [
        execute_cancellation_runs_the_day_after_its_end_date,
        line_cancellation_cancels_only_its_line,
        auto_extension_happens_the_day_after_the_deadline,
        auto_extension_catches_up_several_terms_in_one_sweep,
        expiry_of_contracts_and_of_single_lines,
        refresh_moves_the_deadline_to_the_next_window,
        the_same_sweep_twice_changes_nothing,
        one_sweep_after_forty_days_equals_forty_daily_sweeps,
        zones_swept_at_once_end_as_one_at_a_time,
        kiritimati_and_pago_pago_are_on_different_business_dates,
        havana_starts_its_business_day_at_the_first_instant_after_the_dst_gap,
        berlin_business_day_starts_at_local_midnight_across_both_dst_changes,
        an_invalid_row_is_skipped_and_the_batch_goes_on,
        a_database_error_fails_the_run_and_keeps_committed_batches,
        dry_run_writes_nothing,
        an_expired_lease_is_taken_over_and_resumes_from_the_cursor,
    ],
}

async fn execute_cancellation_runs_the_day_after_its_end_date<S: ContractStore>(
    store: S,
    _raw: RawDb,
) {
    load(
        &store,
        r#"{"ref":"C-1","customer":"Ada","start_date":"2025-01-01","cancellation_window":"end_of_month","auto_extend":false,"cancellation":{"received_on":"2025-04-20","end_date":"2025-05-14","reason":"moving"},"lines":[{"ref":"desk","kind":"recurring_fixed","billable":true,"start_date":"2025-01-01","amount_minor":30000,"currency":"EUR","billing_period":"1M"},{"ref":"locker","kind":"one_time","billable":false,"start_date":"2025-01-01","amount_minor":500,"currency":"EUR"}]}"#,
        date("2025-05-01"),
    )
    .await;
    sweep_as_of(&store, date("2025-05-14")).await;
    assert_eq!(contract(&store, "C-1").await.status, ContractStatus::Active);
    sweep_as_of(&store, date("2025-05-15")).await;
    let cancelled = contract(&store, "C-1").await;
    assert_eq!(cancelled.status, ContractStatus::Cancelled);
    assert_eq!(cancelled.end_date, Some(date("2025-05-14")));
    assert!(cancelled.cancellation.is_none());
    assert_eq!(cancelled.end_reason.as_deref(), Some("moving"));
    assert_eq!(cancelled.lines[0].status, LineStatus::Cancelled);
    assert_eq!(cancelled.lines[1].status, LineStatus::Expired);
    let kinds = event_kinds(&store, "C-1").await;
    assert_eq!(count(&kinds, "cancellation_executed"), 1, "{kinds:?}");
    sweep_as_of(&store, date("2025-05-16")).await;
    assert_eq!(
        count(&event_kinds(&store, "C-1").await, "cancellation_executed"),
        1
    );
}

async fn line_cancellation_cancels_only_its_line<S: ContractStore>(store: S, _raw: RawDb) {
    load(
        &store,
        r#"{"ref":"C-2","customer":"Bo","start_date":"2025-01-01","cancellation_window":"end_of_month","auto_extend":false,"lines":[{"ref":"a","kind":"recurring_fixed","billable":true,"start_date":"2025-01-01","amount_minor":1000,"currency":"EUR","billing_period":"1M","cancellation":{"received_on":"2025-02-01","end_date":"2025-02-28"}},{"ref":"b","kind":"recurring_fixed","billable":true,"start_date":"2025-01-01","amount_minor":1000,"currency":"EUR","billing_period":"1M"}]}"#,
        date("2025-02-01"),
    )
    .await;
    sweep_as_of(&store, date("2025-03-01")).await;
    let after = contract(&store, "C-2").await;
    assert_eq!(after.status, ContractStatus::Active);
    assert_eq!(after.lines[0].status, LineStatus::Cancelled);
    assert_eq!(after.lines[0].end_date, Some(date("2025-02-28")));
    assert_eq!(after.lines[1].status, LineStatus::Active);
    assert_eq!(
        count(
            &event_kinds(&store, "C-2").await,
            "line_cancellation_executed"
        ),
        1
    );
}

async fn auto_extension_happens_the_day_after_the_deadline<S: ContractStore>(
    store: S,
    _raw: RawDb,
) {
    load(
        &store,
        r#"{"ref":"C-3","customer":"Cy","start_date":"2025-01-01","end_date":"2025-12-31","notice_period":"1M","cancellation_window":"end_of_term","auto_extend":true,"extension_term":"1Y"}"#,
        date("2025-06-01"),
    )
    .await;
    sweep_as_of(&store, date("2025-11-30")).await;
    assert_eq!(
        contract(&store, "C-3").await.end_date,
        Some(date("2025-12-31"))
    );
    sweep_as_of(&store, date("2025-12-01")).await;
    let extended = contract(&store, "C-3").await;
    assert_eq!(extended.end_date, Some(date("2026-12-31")));
    assert_eq!(extended.status, ContractStatus::Active);
    // The deadline was recomputed from the new end date in the same transaction.
    assert_eq!(extended.cancellation_date, Some(date("2026-12-31")));
    assert_eq!(extended.latest_cancellation_date, Some(date("2026-11-30")));
    assert_eq!(count(&event_kinds(&store, "C-3").await, "extended"), 1);
}

async fn auto_extension_catches_up_several_terms_in_one_sweep<S: ContractStore>(
    store: S,
    _raw: RawDb,
) {
    load(
        &store,
        r#"{"ref":"C-4","customer":"Di","start_date":"2025-01-01","end_date":"2025-01-31","notice_period":"7D","cancellation_window":"end_of_term","auto_extend":true,"extension_term":"1M"}"#,
        date("2025-01-02"),
    )
    .await;
    sweep_as_of(&store, date("2025-06-01")).await;
    let extended = contract(&store, "C-4").await;
    // 31 Jan → 28 Feb → 31 Mar → 30 Apr → 31 May (deadline 24 May < 1 Jun) → 30 Jun.
    assert_eq!(extended.end_date, Some(date("2025-06-30")));
    assert_eq!(extended.status, ContractStatus::Active);
    assert_eq!(count(&event_kinds(&store, "C-4").await, "extended"), 1);
}

async fn expiry_of_contracts_and_of_single_lines<S: ContractStore>(store: S, _raw: RawDb) {
    load(
        &store,
        concat!(
            r#"{"ref":"C-5","customer":"Ed","start_date":"2025-01-01","end_date":"2025-03-31","cancellation_window":"end_of_term","auto_extend":false,"lines":[{"ref":"l","kind":"recurring_fixed","billable":true,"start_date":"2025-01-01","amount_minor":100,"currency":"EUR","billing_period":"1M"}]}"#,
            "\n",
            r#"{"ref":"C-6","customer":"Fi","start_date":"2025-01-01","cancellation_window":"end_of_month","auto_extend":false,"lines":[{"ref":"short","kind":"recurring_fixed","billable":true,"start_date":"2025-01-01","end_date":"2025-02-28","amount_minor":100,"currency":"EUR","billing_period":"1M"},{"ref":"long","kind":"recurring_fixed","billable":true,"start_date":"2025-01-01","amount_minor":100,"currency":"EUR","billing_period":"1M"}]}"#,
        ),
        date("2025-01-01"),
    )
    .await;
    sweep_as_of(&store, date("2025-03-31")).await;
    assert_eq!(contract(&store, "C-5").await.status, ContractStatus::Active);
    sweep_as_of(&store, date("2025-04-01")).await;
    let expired = contract(&store, "C-5").await;
    assert_eq!(expired.status, ContractStatus::Expired);
    assert_eq!(expired.lines[0].status, LineStatus::Expired);
    let going_on = contract(&store, "C-6").await;
    assert_eq!(going_on.status, ContractStatus::Active);
    assert_eq!(going_on.lines[0].status, LineStatus::Expired);
    assert_eq!(going_on.lines[1].status, LineStatus::Active);
    assert_eq!(count(&event_kinds(&store, "C-5").await, "expired"), 1);
    assert_eq!(count(&event_kinds(&store, "C-6").await, "line_expired"), 1);
}

async fn refresh_moves_the_deadline_to_the_next_window<S: ContractStore>(store: S, _raw: RawDb) {
    load(
        &store,
        r#"{"ref":"C-7","customer":"Gus","start_date":"2024-01-01","notice_period":"1M","cancellation_window":"end_of_year","auto_extend":false}"#,
        date("2025-11-22"),
    )
    .await;
    let imported = contract(&store, "C-7").await;
    assert_eq!(imported.cancellation_date, Some(date("2025-12-31")));
    assert_eq!(imported.latest_cancellation_date, Some(date("2025-11-30")));
    sweep_as_of(&store, date("2025-11-30")).await;
    assert_eq!(
        contract(&store, "C-7").await.latest_cancellation_date,
        Some(date("2025-11-30"))
    );
    sweep_as_of(&store, date("2025-12-01")).await;
    let refreshed = contract(&store, "C-7").await;
    assert_eq!(refreshed.cancellation_date, Some(date("2026-12-31")));
    assert_eq!(refreshed.latest_cancellation_date, Some(date("2026-11-30")));
    assert_eq!(
        count(&event_kinds(&store, "C-7").await, "deadlines_refreshed"),
        1
    );
}

async fn the_same_sweep_twice_changes_nothing<S: ContractStore>(store: S, raw: RawDb) {
    let day = date("2025-03-01");
    load(
        &store,
        &population::jsonl(7, 300, day, &["Europe/Berlin", "America/New_York"]),
        day - chrono::Days::new(1),
    )
    .await;
    let first = sweep_as_of(&store, day).await;
    assert!(first.jobs.iter().any(|job| job.counts.changed > 0));
    let after_first = snapshot(&store).await;
    let events_before = raw
        .execute("UPDATE contract_events SET run_id = run_id")
        .await;
    // The ledger says done: nothing runs.
    let second = sweep_as_of(&store, day).await;
    assert!(second.jobs.is_empty(), "{:?}", second.jobs);
    // Even with the ledger forgotten, the rules themselves change nothing the second time.
    raw.execute("DELETE FROM job_runs").await;
    let third = sweep_as_of(&store, day).await;
    assert_eq!(third.jobs.len(), 10);
    assert!(
        third.jobs.iter().all(|job| job.counts.changed == 0),
        "{:?}",
        third.jobs
    );
    assert_eq!(snapshot(&store).await, after_first);
    assert_eq!(
        raw.execute("UPDATE contract_events SET run_id = run_id")
            .await,
        events_before
    );
}

async fn one_sweep_after_forty_days_equals_forty_daily_sweeps<S: ContractStore>(
    store: S,
    raw: RawDb,
) {
    let zones = ["Europe/Berlin", "Pacific/Kiritimati", "America/Santiago"];
    let start = date("2025-02-10");
    let data = population::jsonl(11, 400, start + chrono::Days::new(1), &zones);
    load(&store, &data, start).await;
    // Daily sweeps on the store's database…
    for offset in 1..=40 {
        sweep_as_of(&store, start + chrono::Days::new(offset)).await;
    }
    let daily = snapshot(&store).await;
    // …and a single sweep on a second database of the same backend with the same contracts.
    let catch_up = match raw {
        RawDb::Sqlite(_) => {
            let (other, _dir) = fresh_sqlite().await;
            load(&other, &data, start).await;
            sweep_as_of(&other, start + chrono::Days::new(40)).await;
            snapshot(&other).await
        }
        RawDb::Postgres(_) => {
            let result = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
            let slot = result.clone();
            let data = data.clone();
            with_postgres(true, |other, _| async move {
                load(&other, &data, start).await;
                sweep_as_of(&other, start + chrono::Days::new(40)).await;
                *slot.lock().expect("slot") = snapshot(&other).await;
            })
            .await;
            let text = result.lock().expect("slot").clone();
            text
        }
    };
    assert_eq!(daily.lines().count(), 400);
    for (daily_line, catch_up_line) in daily.lines().zip(catch_up.lines()) {
        assert_eq!(daily_line, catch_up_line);
    }
}

/// A sweep of four zones at once, in small batches (so the next batch is read while one
/// commits), and the report it gives.
async fn sweep_zones_at_once<S: ContractStore>(
    store: &S,
    day: NaiveDate,
    parallel_zones: usize,
) -> (SweepReport, String) {
    let mut options = options(7);
    options.as_of = Some(day);
    options.parallel_zones = parallel_zones;
    let report = sweep_due(
        store,
        &OffsetClock::fixed(noon(day)),
        &options,
        &Shutdown::never(),
    )
    .await
    .expect("sweep");
    (report, snapshot(store).await)
}

async fn zones_swept_at_once_end_as_one_at_a_time<S: ContractStore>(store: S, raw: RawDb) {
    let zones = [
        "Europe/Berlin",
        "America/New_York",
        "Asia/Tokyo",
        "Pacific/Kiritimati",
    ];
    let day = date("2025-03-01");
    let data = population::jsonl(13, 400, day, &zones);
    let start = day - chrono::Days::new(1);
    load(&store, &data, start).await;
    let (one_at_a_time, sequential) = sweep_zones_at_once(&store, day, 1).await;
    let (at_once, parallel) = match raw {
        RawDb::Sqlite(_) => {
            let (other, _dir) = fresh_sqlite().await;
            load(&other, &data, start).await;
            sweep_zones_at_once(&other, day, 4).await
        }
        RawDb::Postgres(_) => {
            let result = std::sync::Arc::new(std::sync::Mutex::new(None));
            let slot = result.clone();
            let data = data.clone();
            with_postgres(true, |other, _| async move {
                load(&other, &data, start).await;
                *slot.lock().expect("slot") = Some(sweep_zones_at_once(&other, day, 4).await);
            })
            .await;
            let outcome = result.lock().expect("slot").take();
            outcome.expect("the parallel sweep ran")
        }
    };
    let runs = |report: &SweepReport| -> Vec<(RunKey, i64, i64)> {
        report
            .jobs
            .iter()
            .map(|job| (job.key.clone(), job.counts.examined, job.counts.changed))
            .collect()
    };
    assert_eq!(
        runs(&at_once),
        runs(&one_at_a_time),
        "same runs, same order"
    );
    assert!(at_once.jobs.iter().any(|job| job.counts.changed > 7));
    assert!(at_once
        .jobs
        .iter()
        .all(|job| job.outcome == JobOutcome::Succeeded));
    assert_eq!(parallel.lines().count(), 400);
    for (left, right) in sequential.lines().zip(parallel.lines()) {
        assert_eq!(left, right);
    }
}

async fn kiritimati_and_pago_pago_are_on_different_business_dates<S: ContractStore>(
    store: S,
    _raw: RawDb,
) {
    load(
        &store,
        concat!(
            r#"{"ref":"KIRI","customer":"K","time_zone":"Pacific/Kiritimati","start_date":"2025-01-01","end_date":"2025-03-09","cancellation_window":"end_of_term","auto_extend":false}"#,
            "\n",
            r#"{"ref":"PAGO","customer":"P","time_zone":"Pacific/Pago_Pago","start_date":"2025-01-01","end_date":"2025-03-09","cancellation_window":"end_of_term","auto_extend":false}"#,
        ),
        date("2025-01-01"),
    )
    .await;
    // 10:30 UTC on 10 March: 00:30 on 11 March in Kiritimati (UTC+14), 23:30 on 9 March in
    // Pago Pago (UTC-11).
    let report = sweep_at(&store, instant("2025-03-10T10:30:00Z")).await;
    let dates: Vec<(String, NaiveDate)> = report
        .jobs
        .iter()
        .map(|job| (job.key.zone.clone(), job.key.business_date))
        .collect();
    assert!(dates.contains(&("Pacific/Kiritimati".into(), date("2025-03-11"))));
    assert!(dates.contains(&("Pacific/Pago_Pago".into(), date("2025-03-09"))));
    assert_eq!(
        contract(&store, "KIRI").await.status,
        ContractStatus::Expired
    );
    assert_eq!(
        contract(&store, "PAGO").await.status,
        ContractStatus::Active
    );
    // Pago Pago's 10 March starts at 11:00 UTC.
    sweep_at(&store, instant("2025-03-10T10:59:59Z")).await;
    assert_eq!(
        contract(&store, "PAGO").await.status,
        ContractStatus::Active
    );
    sweep_at(&store, instant("2025-03-10T11:00:00Z")).await;
    assert_eq!(
        contract(&store, "PAGO").await.status,
        ContractStatus::Expired
    );
}

async fn havana_starts_its_business_day_at_the_first_instant_after_the_dst_gap<S: ContractStore>(
    store: S,
    _raw: RawDb,
) {
    load(
        &store,
        r#"{"ref":"HAV","customer":"H","time_zone":"America/Havana","start_date":"2028-01-01","end_date":"2028-03-11","cancellation_window":"end_of_term","auto_extend":false}"#,
        date("2028-01-01"),
    )
    .await;
    // Cuba moves from UTC-5 to UTC-4 at local midnight of 12 March 2028: 00:00 does not exist,
    // the day starts at 01:00 local = 05:00 UTC.
    let before = sweep_at(&store, instant("2028-03-12T04:59:59Z")).await;
    assert!(before
        .jobs
        .iter()
        .all(|job| job.key.business_date == date("2028-03-11")));
    assert_eq!(contract(&store, "HAV").await.status, ContractStatus::Active);
    let after = sweep_at(&store, instant("2028-03-12T05:00:00Z")).await;
    assert!(after
        .jobs
        .iter()
        .all(|job| job.key.business_date == date("2028-03-12")));
    assert_eq!(
        contract(&store, "HAV").await.status,
        ContractStatus::Expired
    );
}

async fn berlin_business_day_starts_at_local_midnight_across_both_dst_changes<S: ContractStore>(
    store: S,
    _raw: RawDb,
) {
    load(
        &store,
        concat!(
            r#"{"ref":"SPRING","customer":"S","time_zone":"Europe/Berlin","start_date":"2025-01-01","end_date":"2025-03-30","cancellation_window":"end_of_term","auto_extend":false}"#,
            "\n",
            r#"{"ref":"AUTUMN","customer":"A","time_zone":"Europe/Berlin","start_date":"2025-01-01","end_date":"2025-10-26","cancellation_window":"end_of_term","auto_extend":false}"#,
        ),
        date("2025-01-01"),
    )
    .await;
    // 31 March starts at 00:00 CEST = 22:00 UTC on 30 March (the day after the spring change).
    sweep_at(&store, instant("2025-03-30T21:59:59Z")).await;
    assert_eq!(
        contract(&store, "SPRING").await.status,
        ContractStatus::Active
    );
    sweep_at(&store, instant("2025-03-30T22:00:00Z")).await;
    assert_eq!(
        contract(&store, "SPRING").await.status,
        ContractStatus::Expired
    );
    // 27 October starts at 00:00 CET = 23:00 UTC on 26 October (the day of the autumn change).
    sweep_at(&store, instant("2025-10-26T22:59:59Z")).await;
    assert_eq!(
        contract(&store, "AUTUMN").await.status,
        ContractStatus::Active
    );
    sweep_at(&store, instant("2025-10-26T23:00:00Z")).await;
    assert_eq!(
        contract(&store, "AUTUMN").await.status,
        ContractStatus::Expired
    );
}

async fn an_invalid_row_is_skipped_and_the_batch_goes_on<S: ContractStore>(store: S, raw: RawDb) {
    let mut lines = String::new();
    for index in 0..3 {
        lines.push_str(&format!(
            r#"{{"ref":"INV-{index}","customer":"c","start_date":"2025-01-01","end_date":"2025-02-28","cancellation_window":"end_of_term","auto_extend":false}}"#
        ));
        lines.push('\n');
    }
    load(&store, &lines, date("2025-01-01")).await;
    raw.execute("UPDATE contracts SET notice_period = '5X' WHERE ref = 'INV-1'")
        .await;
    let report = sweep_as_of(&store, date("2025-03-01")).await;
    let expire = report
        .jobs
        .iter()
        .find(|job| job.key.job == Job::Expire)
        .expect("expire ran");
    assert_eq!(expire.outcome, JobOutcome::Succeeded);
    assert_eq!(expire.counts.examined, 3);
    assert_eq!(expire.counts.changed, 2);
    assert_eq!(expire.counts.skipped, 1);
    assert_eq!(expire.invalid_rows, 1);
    assert_eq!(
        contract(&store, "INV-0").await.status,
        ContractStatus::Expired
    );
    assert_eq!(
        contract(&store, "INV-2").await.status,
        ContractStatus::Expired
    );
    let invalid = store
        .load_contract("INV-1")
        .await
        .expect("load")
        .expect("row");
    let error = invalid.contract.expect_err("still invalid");
    assert_eq!(error.errors[0].field, "notice_period");
    let runs = store.runs(10).await.expect("runs");
    let ledger = runs
        .iter()
        .find(|run| run.key.job == Job::Expire)
        .expect("ledger row");
    assert_eq!(ledger.status, RunStatus::Succeeded);
    assert_eq!(ledger.counts.skipped, 1);
}

async fn a_database_error_fails_the_run_and_keeps_committed_batches<S: ContractStore>(
    store: S,
    raw: RawDb,
) {
    let mut lines = String::new();
    for index in 0..200 {
        lines.push_str(&format!(
            r#"{{"ref":"E-{index:03}","customer":"c","start_date":"2025-01-01","end_date":"2025-02-28","cancellation_window":"end_of_term","auto_extend":false}}"#
        ));
        lines.push('\n');
    }
    load(&store, &lines, date("2025-01-01")).await;
    match &raw {
        RawDb::Sqlite(_) => {
            raw.execute(
                "CREATE TRIGGER poison BEFORE UPDATE ON contracts WHEN NEW.ref = 'E-150' \
                 BEGIN SELECT RAISE(ABORT, 'poisoned row'); END",
            )
            .await;
        }
        RawDb::Postgres(_) => {
            raw.execute(
                "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 IF NEW.ref = 'E-150' THEN RAISE EXCEPTION 'poisoned row'; END IF; \
                 RETURN NEW; END $$",
            )
            .await;
            raw.execute(
                "CREATE TRIGGER poison BEFORE UPDATE ON contracts FOR EACH ROW \
                 EXECUTE FUNCTION poison()",
            )
            .await;
        }
    }
    let day = date("2025-03-01");
    let mut options = options(50);
    options.as_of = Some(day);
    let clock = OffsetClock::fixed(noon(day));
    let report = sweep_due(&store, &clock, &options, &Shutdown::never())
        .await
        .expect("sweep");
    assert!(report.any_failed());
    let expire = report
        .jobs
        .iter()
        .find(|job| job.key.job == Job::Expire)
        .expect("expire ran");
    let JobOutcome::Failed(error) = &expire.outcome else {
        panic!("expire should have failed: {expire:?}")
    };
    assert!(error.contains("poisoned row"), "{error}");
    // Batches 1 to 3 (E-000..E-149) committed; batch 4 rolled back whole.
    assert_eq!(
        contract(&store, "E-149").await.status,
        ContractStatus::Expired
    );
    assert_eq!(
        contract(&store, "E-151").await.status,
        ContractStatus::Active
    );
    // The later job of that zone waits for the retry.
    assert!(!report
        .jobs
        .iter()
        .any(|job| job.key.job == Job::RefreshDeadlines));
    let ledger = store.runs(10).await.expect("runs");
    let failed = ledger
        .iter()
        .find(|run| run.key.job == Job::Expire)
        .expect("ledger row");
    assert_eq!(failed.status, RunStatus::Failed);
    assert!(failed
        .error
        .as_deref()
        .is_some_and(|e| e.contains("poisoned")));
    assert_eq!(failed.counts.changed, 150);
    // Repaired, the retry (after its pause) finishes the run from where it stopped.
    match &raw {
        RawDb::Sqlite(_) => raw.execute("DROP TRIGGER poison").await,
        RawDb::Postgres(_) => raw.execute("DROP TRIGGER poison ON contracts").await,
    };
    let later = OffsetClock::fixed(noon(day) + chrono::Duration::seconds(11));
    let retry = sweep_due(&store, &later, &options, &Shutdown::never())
        .await
        .expect("sweep");
    assert!(!retry.any_failed(), "{:?}", retry.jobs);
    for index in 0..200 {
        let reference = format!("E-{index:03}");
        assert_eq!(
            contract(&store, &reference).await.status,
            ContractStatus::Expired
        );
        assert_eq!(count(&event_kinds(&store, &reference).await, "expired"), 1);
    }
    let ledger = store.runs(10).await.expect("runs");
    let done = ledger
        .iter()
        .find(|run| run.key.job == Job::Expire)
        .expect("ledger row");
    assert_eq!(done.status, RunStatus::Succeeded);
    assert_eq!(done.attempts, 2);
    assert_eq!(done.counts.changed, 200);
}

async fn dry_run_writes_nothing<S: ContractStore>(store: S, _raw: RawDb) {
    let day = date("2025-06-01");
    load(
        &store,
        &population::jsonl(3, 120, day, &["Europe/Berlin"]),
        day - chrono::Days::new(1),
    )
    .await;
    let before = snapshot(&store).await;
    let mut options = options(25);
    options.as_of = Some(day);
    options.dry_run = true;
    let report = sweep_due(
        &store,
        &OffsetClock::fixed(noon(day)),
        &options,
        &Shutdown::never(),
    )
    .await
    .expect("dry run");
    let planned: i64 = report.jobs.iter().map(|job| job.counts.changed).sum();
    assert!(planned > 0);
    assert!(report
        .jobs
        .iter()
        .all(|job| job.outcome == JobOutcome::DryRun));
    assert_eq!(snapshot(&store).await, before);
    assert!(store.runs(10).await.expect("runs").is_empty());
}

async fn an_expired_lease_is_taken_over_and_resumes_from_the_cursor<S: ContractStore>(
    store: S,
    _raw: RawDb,
) {
    let mut lines = String::new();
    for index in 0..30 {
        lines.push_str(&format!(
            r#"{{"ref":"L-{index:02}","customer":"c","start_date":"2025-01-01","end_date":"2025-02-28","cancellation_window":"end_of_term","auto_extend":false}}"#
        ));
        lines.push('\n');
    }
    load(&store, &lines, date("2025-01-01")).await;
    let day = date("2025-03-01");
    let key = RunKey {
        job: Job::Expire,
        zone: "UTC".into(),
        business_date: day,
    };
    let start = noon(day);
    // A process claims the run and dies without a word.
    let dead = store
        .claim_run(&key, "dead-process", start.timestamp_millis(), 5_000)
        .await
        .expect("claim")
        .expect("claimed");
    assert_eq!(dead.attempts, 1);
    let mut options = options(10);
    options.as_of = Some(day);
    let live = run_job(
        &store,
        &OffsetClock::fixed(start + chrono::Duration::seconds(1)),
        &options,
        &key,
        &Shutdown::never(),
    )
    .await;
    assert_eq!(live.outcome, JobOutcome::NotClaimed);
    let taken_over = run_job(
        &store,
        &OffsetClock::fixed(start + chrono::Duration::seconds(6)),
        &options,
        &key,
        &Shutdown::never(),
    )
    .await;
    assert_eq!(taken_over.outcome, JobOutcome::Succeeded);
    assert_eq!(taken_over.counts.changed, 30);
    for index in 0..30 {
        assert_eq!(
            contract(&store, &format!("L-{index:02}")).await.status,
            ContractStatus::Expired
        );
    }
}
