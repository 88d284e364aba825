//! The received date decides (docs/rules.md section 6.2), as a property over random
//! auto-extending contracts on both databases: a cancellation received on R and registered
//! after any number of daily sweeps (which may have extended the contract meanwhile) leaves
//! the contract exactly as the same cancellation registered on R, before those sweeps, and
//! swept to the same date.
//!
//! Each random contract is imported twice. The twin `B-n` is cancelled on its received date R
//! (before that day's sweep); `A-n` is cancelled on a later day T with `received_on` R, after
//! the sweeps up to T. Both are then swept on to the same final date and must be identical,
//! apart from their refs, their events and their recording instants.

use crate::support::noon;
use std::io::BufReader;
use std::time::Duration;

use chrono::{Days, NaiveDate};
use contractd::calendar::{prorate, shift, Period};
use contractd::clock::OffsetClock;
use contractd::contract::record::{ContractRecord, ParseDefaults};
use contractd::lifecycle::actions::CancelRequest;
use contractd::lifecycle::RulePolicy;
use contractd::operator::{self, Mode};
use contractd::shutdown::Shutdown;
use contractd::storage::ContractStore;
use contractd::sweep::{sweep_due, SweepOptions};
use contractd::transfer::import;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// Contract pairs per database.
const PAIRS: usize = 24;

crate::both_databases! {
    store: [backdated_cancellation_equals_a_timely_one_swept_to_the_same_date],
}

fn period(text: &str) -> Period {
    Period::parse(text).expect("a test period")
}

/// One random auto-extending contract as a record (without its ref), its received date R,
/// and the day T the backdated twin is registered on (R <= T <= R + 80).
struct Case {
    record: Value,
    received: NaiveDate,
    entered: NaiveDate,
}

fn random_case(rng: &mut StdRng, first: NaiveDate) -> Case {
    let start = first + Days::new(rng.random_range(0..60));
    let initial = ["1M", "2M", "3M", "6M", "12M"][rng.random_range(0..5)];
    let end = shift(start, period(initial)) - Days::new(1);
    let notice = ["0D", "7D", "1M", "2M"][rng.random_range(0..4)];
    let term = ["1M", "3M", "1Y"][rng.random_range(0..3)];
    let window = ["end_of_term", "end_of_month"][rng.random_range(0..2)];
    let prorated = rng.random_bool(0.7);
    let amount: i64 = rng.random_range(1..5000);
    // A line that moves with the contract, with its billing planned up to the end date (the
    // last period cut there), and sometimes an open-ended one without schedules.
    let mut lines = vec![json!({
        "ref": "seat", "kind": "recurring_fixed", "billable": true,
        "start_date": start, "end_date": end, "auto_extend": true,
        "amount_minor": amount, "currency": "EUR", "billing_period": "1M",
    })];
    let mut schedules = Vec::new();
    let mut index = 0;
    loop {
        let from = shift(start, Period::parse(&format!("{index}M")).expect("months"));
        if from > end {
            break;
        }
        let whole_end = shift(
            start,
            Period::parse(&format!("{}M", index + 1)).expect("months"),
        ) - Days::new(1);
        let to = whole_end.min(end);
        let piece = if to == whole_end || !prorated {
            amount
        } else {
            prorate(
                amount,
                (to - from).num_days() + 1,
                (whole_end - from).num_days() + 1,
            )
        };
        schedules.push(json!({
            "line_ref": "seat", "period_start": from, "period_end": to,
            "amount_minor": piece, "status": "planned",
        }));
        index += 1;
    }
    if rng.random_bool(0.5) {
        lines.push(json!({
            "ref": "usage", "kind": "recurring_usage", "billable": true,
            "start_date": start, "amount_minor": 0, "currency": "EUR",
            "billing_period": "1Q",
        }));
    }
    let received = start + Days::new(rng.random_range(0..300));
    let entered = received + Days::new(rng.random_range(0..=80));
    Case {
        record: json!({
            "customer": "Random",
            "time_zone": "Europe/Berlin",
            "start_date": start,
            "end_date": end,
            "notice_period": notice,
            "cancellation_window": window,
            "auto_extend": true,
            "extension_term": term,
            "proration": if prorated { "actual_days" } else { "none" },
            "lines": lines,
            "schedules": schedules,
        }),
        received,
        entered,
    }
}

async fn sweep<S: ContractStore>(store: &S, day: NaiveDate) {
    let policy = RulePolicy {
        allow_end_before_billed_to: true,
        ..RulePolicy::default()
    };
    let mut options = SweepOptions::new(100, Duration::from_secs(60), policy);
    options.as_of = Some(day);
    sweep_due(
        store,
        &OffsetClock::fixed(noon(day)),
        &options,
        &Shutdown::never(),
    )
    .await
    .expect("sweep");
}

/// Cancel `reference` on `today`, received on `received` (None: today); whether it was
/// accepted, and the refusal's text when not.
async fn cancel<S: ContractStore>(
    store: &S,
    reference: &str,
    today: NaiveDate,
    received: Option<NaiveDate>,
) -> Result<(), String> {
    let request = CancelRequest {
        received_on: received,
        reason: Some("property".into()),
        ..CancelRequest::default()
    };
    let policy = RulePolicy {
        allow_end_before_billed_to: true,
        ..RulePolicy::default()
    };
    let mut results = operator::cancel(
        store,
        &OffsetClock::fixed(noon(today)),
        policy,
        &[reference.to_string()],
        &request,
        Mode::Apply,
    )
    .await;
    match results.remove(0) {
        Ok(_) => Ok(()),
        Err(failure) if failure.is_invalid_input() => Err(failure.to_string()),
        Err(failure) => panic!("cancel {reference} on {today}: {failure}"),
    }
}

async fn record<S: ContractStore>(store: &S, reference: &str) -> Value {
    let loaded = store
        .load_contract(reference)
        .await
        .expect("load")
        .expect("the contract exists");
    let contract = loaded.contract.expect("a valid contract");
    let mut record = serde_json::to_value(ContractRecord::from_contract(&contract)).expect("json");
    record["ref"] = json!("X");
    record
}

async fn backdated_cancellation_equals_a_timely_one_swept_to_the_same_date<S: ContractStore>(
    store: S,
) {
    let mut rng = StdRng::seed_from_u64(0x0015_bacd_a7ed);
    let first = NaiveDate::from_ymd_opt(2025, 1, 1).expect("a date");
    let cases: Vec<Case> = (0..PAIRS).map(|_| random_case(&mut rng, first)).collect();
    let mut lines = String::new();
    for (n, case) in cases.iter().enumerate() {
        for twin in ["A", "B"] {
            let mut record = case.record.clone();
            record["ref"] = json!(format!("{twin}-{n}"));
            lines.push_str(&record.to_string());
            lines.push('\n');
        }
    }
    import(
        &store,
        BufReader::new(lines.as_bytes()),
        &ParseDefaults {
            time_zone: chrono_tz::UTC,
        },
        noon(first),
        |_| {},
    )
    .await
    .unwrap_or_else(|error| panic!("import failed: {error:?}"));

    let last = cases.iter().map(|case| case.entered).max().expect("cases") + Days::new(40);
    let mut timely: Vec<Option<Result<(), String>>> = vec![None; PAIRS];
    let mut backdated: Vec<Option<Result<(), String>>> = vec![None; PAIRS];
    let mut day = first;
    while day <= last {
        // The timely twin is registered on R before that day's sweep; the backdated one after
        // the sweeps up to the day it is entered.
        for (n, case) in cases.iter().enumerate() {
            if case.received == day {
                timely[n] = Some(cancel(&store, &format!("B-{n}"), day, None).await);
            }
        }
        sweep(&store, day).await;
        for (n, case) in cases.iter().enumerate() {
            if case.entered == day {
                backdated[n] =
                    Some(cancel(&store, &format!("A-{n}"), day, Some(case.received)).await);
            }
        }
        day = day + Days::new(1);
    }

    let mut accepted = 0;
    let mut undid = 0;
    for (n, case) in cases.iter().enumerate() {
        let events = store.events(&format!("A-{n}")).await.expect("events");
        undid += usize::from(
            events
                .iter()
                .any(|event| event.kind == "extension_reverted"),
        );
        let what = format!(
            "pair {n} (received {}, entered {}): {}",
            case.received, case.entered, case.record
        );
        assert_eq!(
            timely[n].as_ref().map(Result::is_ok),
            backdated[n].as_ref().map(Result::is_ok),
            "{what}: timely {:?}, backdated {:?}",
            timely[n],
            backdated[n]
        );
        accepted += usize::from(backdated[n].as_ref().is_some_and(Result::is_ok));
        assert_eq!(
            record(&store, &format!("A-{n}")).await,
            record(&store, &format!("B-{n}")).await,
            "{what}: the backdated cancellation left the contract otherwise"
        );
    }
    assert!(
        accepted > PAIRS / 2,
        "most cancellations are accepted: {accepted}"
    );
    assert!(
        undid >= 3,
        "several cancellations undid extensions: {undid}"
    );
}
