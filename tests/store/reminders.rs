//! The send_reminders job on both databases (docs/rules.md section 5.5): NCRC's year end, end
//! dates and pending cancellations, idempotence, a catch-up after downtime, moved dates,
//! a 40-day catch-up against 40 daily sweeps, and a quiet day that reads no contract.

use crate::support;
use crate::support::noon;
use crate::support::population;

use std::collections::BTreeSet;
use std::io::BufReader;
use std::time::Duration;

use chrono::NaiveDate;
use contractd::calendar::Period;
use contractd::clock::OffsetClock;
use contractd::contract::record::ParseDefaults;
use contractd::contract::LeadTimes;
use contractd::lifecycle::actions::CancelRequest;
use contractd::lifecycle::{Job, RulePolicy};
use contractd::operator;
use contractd::shutdown::Shutdown;
use contractd::storage::{ContractStore, StoredEvent};
use contractd::sweep::{sweep_due, SweepOptions, SweepReport};
use contractd::transfer::{export, import_with_lead_times};
use serde_json::{json, Value};
use support::{date, fresh_sqlite, with_postgres, RawDb};

crate::both_databases! {
    store: [
        ncrc_year_end_is_reminded_30_and_7_days_before_the_deadline,
        end_dates_and_pending_cancellations_give_end_approaching,
        the_same_day_twice_sends_nothing_more,
        ten_days_of_downtime_send_what_is_still_ahead_once,
        a_moved_date_gets_its_own_reminders_and_none_twice,
        a_contract_s_own_lead_times_win_over_the_configured_ones,
        a_day_with_nothing_to_remind_reads_no_contract,
    ],
    store_and_raw: [
        forty_days_of_catch_up_send_the_reminders_of_forty_daily_sweeps,
    ],
}

fn lead_times(texts: &[&str]) -> LeadTimes {
    let periods: Vec<Period> = texts.iter().map(|text| text.parse().unwrap()).collect();
    LeadTimes::new(&periods).expect("lead times")
}

fn policy(texts: &[&str]) -> RulePolicy {
    RulePolicy {
        reminder_lead_times: lead_times(texts),
        ..RulePolicy::default()
    }
}

/// Import JSON Lines as if on `today`, scheduling reminders with `policy`'s lead times.
async fn load<S: ContractStore>(store: &S, lines: &str, today: NaiveDate, policy: &RulePolicy) {
    import_with_lead_times(
        store,
        BufReader::new(lines.as_bytes()),
        &ParseDefaults {
            time_zone: chrono_tz::UTC,
        },
        &policy.reminder_lead_times,
        noon(today),
        |_| {},
    )
    .await
    .unwrap_or_else(|error| panic!("test import failed: {error:?}"));
}

/// One record per line, from JSON values.
fn lines(records: &[Value]) -> String {
    records.iter().map(|record| format!("{record}\n")).collect()
}

/// One sweep of every job as of `day` in every zone.
async fn sweep<S: ContractStore>(store: &S, day: NaiveDate, policy: &RulePolicy) -> SweepReport {
    let mut options = SweepOptions::new(50, Duration::from_secs(60), *policy);
    options.as_of = Some(day);
    let report = sweep_due(
        store,
        &OffsetClock::fixed(noon(day)),
        &options,
        &Shutdown::never(),
    )
    .await
    .expect("sweep");
    assert!(!report.any_failed(), "{day}: {:?}", report.jobs);
    report
}

/// Daily sweeps from `from` to `to`, both included.
async fn sweep_days<S: ContractStore>(
    store: &S,
    from: NaiveDate,
    to: NaiveDate,
    policy: &RulePolicy,
) {
    let mut day = from;
    while day <= to {
        sweep(store, day, policy).await;
        day = day + chrono::Days::new(1);
    }
}

async fn reminders<S: ContractStore>(store: &S, reference: &str) -> Vec<StoredEvent> {
    store
        .events(reference)
        .await
        .expect("events")
        .into_iter()
        .filter(|event| {
            matches!(
                event.kind.as_str(),
                "deadline_approaching" | "end_approaching"
            )
        })
        .collect()
}

/// (effective on, transition key) of each reminder of a contract.
async fn reminder_keys<S: ContractStore>(store: &S, reference: &str) -> Vec<(String, String)> {
    reminders(store, reference)
        .await
        .into_iter()
        .map(|event| (event.effective_on.to_string(), event.transition_key))
        .collect()
}

fn pair(on: &str, key: &str) -> (String, String) {
    (on.to_string(), key.to_string())
}

fn base(reference: &str) -> Value {
    json!({"ref": reference, "customer": format!("Customer of {reference}"),
           "time_zone": "Europe/Berlin", "start_date": "2025-01-01", "notice_period": "1M",
           "cancellation_window": "end_of_year", "auto_extend": false})
}

fn with(mut record: Value, patch: Value) -> Value {
    if let (Some(target), Some(source)) = (record.as_object_mut(), patch.as_object()) {
        for (key, value) in source {
            target.insert(key.clone(), value.clone());
        }
    }
    record
}

async fn ncrc_year_end_is_reminded_30_and_7_days_before_the_deadline<S: ContractStore>(store: S) {
    let policy = policy(&["30D", "7D"]);
    // NCRC example 2 (open-ended, end of year, notice 1M) and the same with an end date that
    // extends by a year.
    let records = [
        base("NCRC-2"),
        with(
            base("EXT-1"),
            json!({"end_date": "2025-12-31", "cancellation_window": "end_of_term",
                   "auto_extend": true, "extension_term": "1Y"}),
        ),
    ];
    load(&store, &lines(&records), date("2025-10-01"), &policy).await;
    sweep_days(&store, date("2025-10-02"), date("2025-12-03"), &policy).await;
    for reference in ["NCRC-2", "EXT-1"] {
        assert_eq!(
            reminder_keys(&store, reference).await,
            vec![
                pair("2025-10-31", "deadline_approaching:2025-11-30:30D"),
                pair("2025-11-23", "deadline_approaching:2025-11-30:7D"),
            ],
            "{reference}"
        );
    }
    let ncrc = reminders(&store, "NCRC-2").await;
    assert_eq!(
        ncrc[0].details,
        json!({"lead_time": "30D", "latest_cancellation_date": "2025-11-30",
               "cancellation_date": "2025-12-31", "extends_to": null, "days_left": 30})
    );
    let extending = reminders(&store, "EXT-1").await;
    assert_eq!(extending[1].details["extends_to"], json!("2026-12-31"));
    assert_eq!(extending[1].details["days_left"], json!(7));
    // After the deadline the next one (2026-11-30) is reminded of in its turn.
    let contract = store
        .load_contract("NCRC-2")
        .await
        .expect("load")
        .expect("exists")
        .contract
        .expect("valid");
    assert_eq!(contract.reminders.next_on, Some(date("2026-10-31")));
}

async fn end_dates_and_pending_cancellations_give_end_approaching<S: ContractStore>(store: S) {
    let policy = policy(&["30D"]);
    let records = [
        with(
            base("TERM"),
            json!({"end_date": "2025-12-31", "cancellation_window": "end_of_term"}),
        ),
        with(
            base("CANC"),
            json!({"cancellation_window": "end_of_month",
                   "cancellation": {"received_on": "2025-09-15", "end_date": "2025-11-30"}}),
        ),
    ];
    load(&store, &lines(&records), date("2025-10-01"), &policy).await;
    sweep_days(&store, date("2025-10-02"), date("2026-01-02"), &policy).await;
    assert_eq!(
        reminder_keys(&store, "TERM").await,
        vec![pair("2025-12-01", "end_approaching:2025-12-31:30D")]
    );
    assert_eq!(
        reminders(&store, "TERM").await[0].details,
        json!({"lead_time": "30D", "end_date": "2025-12-31", "days_left": 30,
               "cause": "term_end"})
    );
    assert_eq!(
        reminder_keys(&store, "CANC").await,
        vec![pair("2025-10-31", "end_approaching:2025-11-30:30D")]
    );
    assert_eq!(
        reminders(&store, "CANC").await[0].details["cause"],
        json!("cancellation")
    );
}

async fn the_same_day_twice_sends_nothing_more<S: ContractStore>(store: S) {
    let policy = policy(&["30D", "7D"]);
    load(
        &store,
        &lines(&[base("TWICE")]),
        date("2025-10-01"),
        &policy,
    )
    .await;
    sweep(&store, date("2025-10-31"), &policy).await;
    let once = reminder_keys(&store, "TWICE").await;
    assert_eq!(
        once,
        vec![pair("2025-10-31", "deadline_approaching:2025-11-30:30D")]
    );
    // The ledger says the run is done, and running the job again anyway sends nothing: the
    // contract is no longer due and its key is taken.
    let report = sweep(&store, date("2025-10-31"), &policy).await;
    assert!(report.jobs.iter().all(|job| job.counts.changed == 0));
    let due = store
        .due_batch(
            Job::SendReminders,
            "Europe/Berlin",
            date("2025-10-31"),
            None,
            10,
        )
        .await
        .expect("due batch");
    assert!(due.is_empty(), "still due: {:?}", due.len());
    assert_eq!(reminder_keys(&store, "TWICE").await, once);
}

async fn ten_days_of_downtime_send_what_is_still_ahead_once<S: ContractStore>(store: S) {
    let policy = policy(&["30D", "7D"]);
    let records = [
        base("AHEAD"),
        with(
            base("PAST"),
            json!({"end_date": "2025-11-20", "cancellation_window": "end_of_term"}),
        ),
    ];
    load(&store, &lines(&records), date("2025-10-01"), &policy).await;
    sweep_days(&store, date("2025-10-02"), date("2025-11-14"), &policy).await;
    // PAST got its 30D reminder on 2025-10-21; its 7D one (2025-11-13) too.
    assert_eq!(
        reminder_keys(&store, "PAST").await,
        vec![
            pair("2025-10-21", "end_approaching:2025-11-20:30D"),
            pair("2025-11-13", "end_approaching:2025-11-20:7D"),
        ]
    );
    // Down from 2025-11-15 to 2025-11-24; the sweep of 2025-11-25 catches up.
    sweep(&store, date("2025-11-25"), &policy).await;
    assert_eq!(
        reminder_keys(&store, "AHEAD").await,
        vec![
            pair("2025-10-31", "deadline_approaching:2025-11-30:30D"),
            pair("2025-11-25", "deadline_approaching:2025-11-30:7D"),
        ]
    );
    assert_eq!(
        reminders(&store, "AHEAD").await[1].details["days_left"],
        json!(5)
    );
    // PAST ended meanwhile: nothing more for it.
    assert_eq!(reminders(&store, "PAST").await.len(), 2);
    sweep_days(&store, date("2025-11-26"), date("2025-12-01"), &policy).await;
    assert_eq!(reminders(&store, "AHEAD").await.len(), 2);
}

async fn a_moved_date_gets_its_own_reminders_and_none_twice<S: ContractStore>(store: S) {
    let policy = policy(&["30D"]);
    load(&store, &lines(&[base("MOVE")]), date("2025-10-01"), &policy).await;
    sweep_days(&store, date("2025-10-30"), date("2025-11-01"), &policy).await;
    let at = |day: &str| OffsetClock::fixed(noon(date(day)));
    // A cancellation to 2025-12-31 is registered on 2025-11-02: its end date is reminded of
    // on 2025-12-01 unless it is revoked first…
    operator::cancel(
        &store,
        &at("2025-11-02"),
        policy,
        &["MOVE".to_string()],
        &CancelRequest::default(),
        operator::Mode::Apply,
    )
    .await
    .into_iter()
    .for_each(|result| {
        result.expect("cancel");
    });
    sweep_days(&store, date("2025-11-02"), date("2025-11-05"), &policy).await;
    // …which it is: the deadline of 2025-11-30 is back, and it was reminded of already.
    operator::revoke(
        &store,
        &at("2025-11-06"),
        policy,
        "MOVE",
        None,
        operator::Mode::Apply,
    )
    .await
    .expect("revoke");
    sweep_days(&store, date("2025-11-06"), date("2025-12-02"), &policy).await;
    // After the deadline, refresh moves it to 2026-11-30: reminded of on 2026-10-31.
    sweep_days(&store, date("2026-10-30"), date("2026-10-31"), &policy).await;
    // A second cancellation, to 2026-12-31, received in time: its end is reminded of.
    operator::cancel(
        &store,
        &at("2026-11-01"),
        policy,
        &["MOVE".to_string()],
        &CancelRequest::default(),
        operator::Mode::Apply,
    )
    .await
    .into_iter()
    .for_each(|result| {
        result.expect("cancel");
    });
    sweep_days(&store, date("2026-11-01"), date("2026-12-02"), &policy).await;
    assert_eq!(
        reminder_keys(&store, "MOVE").await,
        vec![
            pair("2025-10-31", "deadline_approaching:2025-11-30:30D"),
            pair("2026-10-31", "deadline_approaching:2026-11-30:30D"),
            pair("2026-12-01", "end_approaching:2026-12-31:30D"),
        ]
    );
}

async fn a_contract_s_own_lead_times_win_over_the_configured_ones<S: ContractStore>(store: S) {
    let policy = policy(&["30D"]);
    let records = [
        with(base("OWN"), json!({"reminder_lead_times": ["2M"]})),
        with(base("NONE"), json!({"reminder_lead_times": []})),
        base("CONFIGURED"),
    ];
    load(&store, &lines(&records), date("2025-09-01"), &policy).await;
    sweep_days(&store, date("2025-09-29"), date("2025-10-31"), &policy).await;
    assert_eq!(
        reminder_keys(&store, "OWN").await,
        vec![pair("2025-09-30", "deadline_approaching:2025-11-30:2M")]
    );
    assert!(reminders(&store, "NONE").await.is_empty());
    assert_eq!(
        reminder_keys(&store, "CONFIGURED").await,
        vec![pair("2025-10-31", "deadline_approaching:2025-11-30:30D")]
    );
}

async fn a_day_with_nothing_to_remind_reads_no_contract<S: ContractStore>(store: S) {
    let policy = policy(&["30D", "7D"]);
    let records: Vec<Value> = (0..20)
        .map(|index| base(&format!("QUIET-{index}")))
        .collect();
    load(&store, &lines(&records), date("2025-10-01"), &policy).await;
    let examined = |report: &SweepReport| {
        report
            .jobs
            .iter()
            .find(|job| job.key.job == Job::SendReminders)
            .map(|job| job.counts.examined)
    };
    let quiet = sweep(&store, date("2025-10-15"), &policy).await;
    assert_eq!(examined(&quiet), Some(0));
    let busy = sweep(&store, date("2025-10-31"), &policy).await;
    assert_eq!(examined(&busy), Some(20));
    let quiet_again = sweep(&store, date("2025-11-01"), &policy).await;
    assert_eq!(examined(&quiet_again), Some(0));
}

/// (ref, transition key) of every reminder sent for a date on or after `from`, and the
/// export with the reminder memory left out.
async fn reminder_state<S: ContractStore>(
    store: &S,
    refs: &[String],
    from: NaiveDate,
) -> (BTreeSet<(String, String)>, Vec<Value>) {
    let mut sent = BTreeSet::new();
    for reference in refs {
        for event in reminders(store, reference).await {
            let date_of = event.details["latest_cancellation_date"]
                .as_str()
                .or(event.details["end_date"].as_str())
                .map(date)
                .expect("a reminded date");
            if date_of >= from {
                sent.insert((reference.clone(), event.transition_key));
            }
        }
    }
    let mut out = Vec::new();
    export(store, &[], &mut out, |error| panic!("invalid row: {error}"))
        .await
        .expect("export");
    let records = String::from_utf8(out)
        .expect("utf-8")
        .lines()
        .map(|line| {
            let mut record: Value = serde_json::from_str(line).expect("json");
            if let Some(object) = record.as_object_mut() {
                // Daily sweeps also remember reminders of dates that have passed since; they
                // are forgotten at the contract's next reminder.
                object.remove("reminders_sent");
            }
            record
        })
        .collect();
    (sent, records)
}

async fn forty_days_of_catch_up_send_the_reminders_of_forty_daily_sweeps<S: ContractStore>(
    store: S,
    raw: RawDb,
) {
    let policy = policy(&["30D", "7D", "1M"]);
    let zones = ["Europe/Berlin", "Pacific/Kiritimati", "America/Santiago"];
    let start = date("2025-10-10");
    let data = population::jsonl(17, 300, start + chrono::Days::new(1), &zones);
    let refs: Vec<String> = data
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).expect("json")["ref"]
                .as_str()
                .expect("ref")
                .to_string()
        })
        .collect();
    let last = start + chrono::Days::new(40);
    load(&store, &data, start, &policy).await;
    sweep_days(&store, start + chrono::Days::new(1), last, &policy).await;
    let daily = reminder_state(&store, &refs, last).await;
    let catch_up = match raw {
        RawDb::Sqlite(_) => {
            let (other, _dir) = fresh_sqlite().await;
            load(&other, &data, start, &policy).await;
            sweep(&other, last, &policy).await;
            reminder_state(&other, &refs, last).await
        }
        RawDb::Postgres(_) => {
            let result = std::sync::Arc::new(std::sync::Mutex::new(None));
            let slot = result.clone();
            let data = data.clone();
            let refs = refs.clone();
            with_postgres(true, |other, _| async move {
                load(&other, &data, start, &policy).await;
                sweep(&other, last, &policy).await;
                *slot.lock().expect("slot") = Some(reminder_state(&other, &refs, last).await);
            })
            .await;
            let state = result.lock().expect("slot").take().expect("catch-up state");
            state
        }
    };
    assert!(
        daily.0.len() > 20,
        "only {} reminders ahead: the population does not exercise the rule",
        daily.0.len()
    );
    assert_eq!(daily.0, catch_up.0);
    assert_eq!(daily.1.len(), catch_up.1.len());
    for (daily_record, catch_up_record) in daily.1.iter().zip(&catch_up.1) {
        assert_eq!(daily_record, catch_up_record);
    }
}
