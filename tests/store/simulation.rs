//! Three simulated years of daily sweeps over 2,000 random contracts on each database, with
//! random cancellations, revocations and early ends between them, checking after every day:
//! - no active contract is past its end date without a pending cancellation, and no pending
//!   cancellation is past its end date;
//! - every auto-extending contract's notice deadline is not in the past;
//! - every active contract's cancellation date and deadline are exactly those of the rules as
//!   of that day;
//! - an ended contract has no active line and no pending cancellation, and no active line is
//!   past its own end date;
//! - every status change of the day has exactly one event explaining it, made that day.

use crate::support;
use crate::support::all_contracts;
use crate::support::population;

use std::collections::HashMap;
use std::io::BufReader;
use std::time::Duration;

use chrono::{NaiveDate, TimeZone, Utc};
use contractd::calendar::shift_back;
use contractd::clock::OffsetClock;
use contractd::contract::record::ParseDefaults;
use contractd::contract::{Contract, ContractStatus, LineStatus};
use contractd::lifecycle::actions::{self, CancelRequest, EndEarlyRequest};
use contractd::lifecycle::RulePolicy;
use contractd::operator::apply_on;
use contractd::shutdown::Shutdown;
use contractd::storage::ContractStore;
use contractd::sweep::{sweep_due, SweepOptions};
use contractd::transfer::import;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::RawDb;

const CONTRACTS: usize = 2_000;
const DAYS: u64 = 3 * 365;
const ZONES: [&str; 3] = ["Europe/Berlin", "America/New_York", "Asia/Kolkata"];

crate::both_databases! {
    store_and_raw: [three_years_of_daily_sweeps],
}

/// What the operator does on one day: a few random actions, refusals included.
async fn operator_actions<S: ContractStore>(
    store: &S,
    rng: &mut StdRng,
    day: NaiveDate,
    refs: &[String],
) -> (usize, usize) {
    let mut applied = 0;
    let mut refused = 0;
    let now_ms = Utc
        .from_utc_datetime(&day.and_hms_opt(9, 0, 0).expect("09:00"))
        .timestamp_millis();
    let policy = RulePolicy {
        allow_end_before_billed_to: true,
        ..RulePolicy::default()
    };
    for _ in 0..rng.random_range(0..6) {
        let reference = &refs[rng.random_range(0..refs.len())];
        let choice = rng.random_range(0..10);
        let offset = rng.random_range(0..120);
        let early = rng.random_bool(0.2);
        let result = apply_on(
            store,
            reference,
            |_| day,
            now_ms,
            |contract, today| match choice {
                0..=3 => actions::cancel(
                    contract,
                    &CancelRequest {
                        reason: Some("simulated".into()),
                        ..CancelRequest::default()
                    },
                    today,
                    &policy,
                ),
                4 => actions::cancel(
                    contract,
                    &CancelRequest {
                        end_date: Some(today + chrono::Days::new(offset)),
                        override_notice: true,
                        final_invoice: true,
                        ..CancelRequest::default()
                    },
                    today,
                    &policy,
                ),
                5 => actions::cancel(
                    contract,
                    &CancelRequest {
                        line: contract.lines.first().map(|line| line.reference.clone()),
                        ..CancelRequest::default()
                    },
                    today,
                    &policy,
                ),
                6..=7 => actions::revoke(contract, None, today),
                _ => actions::end_early(
                    contract,
                    &EndEarlyRequest {
                        end_date: if early {
                            today - chrono::Days::new(offset.min(20))
                        } else {
                            today + chrono::Days::new(offset)
                        },
                        reason: "simulated".into(),
                        notes: None,
                    },
                    today,
                    &policy,
                ),
            },
        )
        .await;
        match result {
            Ok(_) => applied += 1,
            Err(failure) if failure.is_invalid_input() => refused += 1,
            Err(failure) => panic!("operator action failed on {day}: {failure}"),
        }
    }
    (applied, refused)
}

fn check_invariants(contract: &Contract, day: NaiveDate) {
    let reference = &contract.reference;
    match contract.status {
        ContractStatus::Active => {
            match &contract.cancellation {
                Some(pending) => assert!(
                    pending.end_date >= day,
                    "{day}: {reference} has a pending cancellation ending {} left unexecuted",
                    pending.end_date
                ),
                None => {
                    if let Some(end) = contract.end_date {
                        assert!(
                            end >= day,
                            "{day}: {reference} is active past its end date {end}"
                        );
                        if contract.auto_extend {
                            if let Some(term) = contract.extension_term {
                                if !term.is_none() {
                                    let deadline = shift_back(end, contract.notice_period);
                                    assert!(
                                        deadline >= day,
                                        "{day}: {reference} auto-extends but its deadline \
                                         {deadline} is in the past"
                                    );
                                }
                            }
                        }
                    }
                    let expected = contract.cancellation_terms().dates_as_of(day);
                    assert_eq!(
                        (
                            contract.cancellation_date,
                            contract.latest_cancellation_date
                        ),
                        (
                            expected.map(|d| d.cancellation_date),
                            expected.map(|d| d.latest_cancellation_date)
                        ),
                        "{day}: {reference} has stale cancellation dates"
                    );
                }
            }
            for line in &contract.lines {
                if line.status == LineStatus::Active {
                    if let Some(end) = line.end_date {
                        assert!(
                            end >= day,
                            "{day}: {reference} line {} is active past its end date {end}",
                            line.reference
                        );
                    }
                }
            }
        }
        ContractStatus::Expired | ContractStatus::Cancelled => {
            assert!(
                contract.cancellation.is_none(),
                "{day}: ended {reference} still has a pending cancellation"
            );
            assert!(
                contract
                    .lines
                    .iter()
                    .all(|line| line.status != LineStatus::Active),
                "{day}: ended {reference} still has an active line"
            );
        }
        ContractStatus::Draft => {}
    }
}

async fn three_years_of_daily_sweeps<S: ContractStore>(store: S, _raw: RawDb) {
    let first_day = NaiveDate::from_ymd_opt(2025, 1, 1).expect("date");
    let data = population::jsonl(2024, CONTRACTS, first_day + chrono::Days::new(1), &ZONES);
    import(
        &store,
        BufReader::new(data.as_bytes()),
        &ParseDefaults {
            time_zone: chrono_tz::UTC,
        },
        Utc.from_utc_datetime(&first_day.and_hms_opt(0, 0, 0).expect("midnight")),
        |_| {},
    )
    .await
    .expect("import");
    let refs: Vec<String> = (0..CONTRACTS)
        .map(|i| population::reference("P", i))
        .collect();
    let mut rng = StdRng::seed_from_u64(99);
    let mut statuses: HashMap<String, ContractStatus> = all_contracts(&store)
        .await
        .into_iter()
        .map(|contract| (contract.reference, contract.status))
        .collect();
    let mut options = SweepOptions::new(250, Duration::from_secs(60), RulePolicy::default());
    let (mut applied, mut refused, mut transitions) = (0, 0, 0);
    for offset in 1..=DAYS {
        let day = first_day + chrono::Days::new(offset);
        let (done, refusals) = operator_actions(&store, &mut rng, day, &refs).await;
        applied += done;
        refused += refusals;
        options.as_of = Some(day);
        let clock =
            OffsetClock::fixed(Utc.from_utc_datetime(&day.and_hms_opt(12, 0, 0).expect("noon")));
        let report = sweep_due(&store, &clock, &options, &Shutdown::never())
            .await
            .expect("sweep");
        assert!(!report.any_failed(), "{day}: {:?}", report.jobs);
        for contract in all_contracts(&store).await {
            check_invariants(&contract, day);
            let before = statuses
                .insert(contract.reference.clone(), contract.status)
                .expect("known contract");
            if before != contract.status {
                transitions += 1;
                let explaining: Vec<_> = store
                    .events(&contract.reference)
                    .await
                    .expect("events")
                    .into_iter()
                    .filter(|event| {
                        event.effective_on == day
                            && matches!(
                                (contract.status, event.kind.as_str()),
                                (ContractStatus::Expired, "expired" | "ended_early")
                                    | (
                                        ContractStatus::Cancelled,
                                        "cancellation_executed" | "line_cancellation_executed"
                                    )
                            )
                    })
                    .collect();
                assert!(
                    !explaining.is_empty(),
                    "{day}: {} went from {before} to {} without an event",
                    contract.reference,
                    contract.status
                );
                let ending_events = explaining
                    .iter()
                    .filter(|event| {
                        matches!(
                            event.kind.as_str(),
                            "expired" | "ended_early" | "cancellation_executed"
                        )
                    })
                    .count();
                assert!(
                    ending_events <= 1,
                    "{day}: {} has {ending_events} events for one status change: {explaining:?}",
                    contract.reference
                );
            }
        }
    }
    // The scenario really exercised the rules and the actions.
    assert!(applied > 500, "only {applied} operator actions applied");
    assert!(refused > 50, "only {refused} operator actions refused");
    assert!(transitions > 1000, "only {transitions} status changes");
}
