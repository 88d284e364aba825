//! Three simulated years of daily sweeps over 400 random contracts on each database, with
//! configured and per-contract lead times (some contracts with none) and random
//! cancellations, revocations and early ends between the sweeps, checking after every day
//! (docs/rules.md section 5.5):
//! - every reminder that fits the day (an active contract's deadline or end date `date`, a
//!   lead time `t` in force, `shift_back(date, t) <= day <= date`) has been sent;
//! - no reminder is ever sent twice for the same (contract, kind, date, lead time), and every
//!   reminder recorded is one that fitted a day;
//! - every reminder takes effect inside its window: never after the date it reminds of, never
//!   before its lead time.

use crate::support::all_contracts;
use crate::support::population;

use std::collections::HashMap;
use std::io::BufReader;
use std::time::Duration;

use chrono::{NaiveDate, TimeZone, Utc};
use contractd::calendar::{shift_back, Period};
use contractd::clock::OffsetClock;
use contractd::contract::record::ParseDefaults;
use contractd::contract::LeadTimes;
use contractd::lifecycle::actions::{CancelRequest, EndEarlyRequest};
use contractd::lifecycle::reminders::{lead_times_of, reminder_target};
use contractd::lifecycle::RulePolicy;
use contractd::operator;
use contractd::shutdown::Shutdown;
use contractd::storage::{ContractStore, FeedPosition, OutboxStore};
use contractd::sweep::{sweep_due, SweepOptions};
use contractd::transfer::import_with_lead_times;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

const CONTRACTS: usize = 400;
const DAYS: u64 = 3 * 365;
const ZONES: [&str; 3] = ["Europe/Berlin", "America/New_York", "Asia/Kolkata"];
const LEAD_TIMES: [&str; 7] = ["0D", "7D", "14D", "30D", "45D", "1M", "2M"];

crate::both_databases! {
    store: [three_years_of_reminders],
}

/// One reminder: (contract, kind, date reminded of, lead time).
type Key = (String, String, NaiveDate, String);

/// A random subset of the lead times (possibly empty), in random order.
fn random_lead_times(rng: &mut StdRng) -> Vec<&'static str> {
    let mut chosen: Vec<&str> = LEAD_TIMES
        .iter()
        .copied()
        .filter(|_| rng.random_bool(0.3))
        .collect();
    if chosen.len() > 1 && rng.random_bool(0.5) {
        chosen.reverse();
    }
    chosen
}

/// The population, every fourth contract with lead times of its own (an empty list included).
fn population_with_own_lead_times(rng: &mut StdRng, first_day: NaiveDate) -> String {
    population::jsonl(2026, CONTRACTS, first_day + chrono::Days::new(1), &ZONES)
        .lines()
        .enumerate()
        .map(|(index, line)| {
            let mut record: Value = serde_json::from_str(line).expect("json");
            if index % 4 == 0 {
                record["reminder_lead_times"] = serde_json::json!(random_lead_times(rng));
            }
            format!("{record}\n")
        })
        .collect()
}

/// A few random operator actions on `day`, refusals included; (applied, refused).
async fn operator_actions<S: ContractStore>(
    store: &S,
    rng: &mut StdRng,
    day: NaiveDate,
    refs: &[String],
    policy: RulePolicy,
) -> (usize, usize) {
    let clock =
        OffsetClock::fixed(Utc.from_utc_datetime(&day.and_hms_opt(12, 0, 0).expect("noon")));
    let (mut applied, mut refused) = (0, 0);
    for _ in 0..rng.random_range(0..5) {
        let reference = refs[rng.random_range(0..refs.len())].clone();
        let offset = rng.random_range(0..120);
        let result = match rng.random_range(0..10) {
            0..=3 => operator::cancel(
                store,
                &clock,
                policy,
                std::slice::from_ref(&reference),
                &CancelRequest::default(),
                operator::Mode::Apply,
            )
            .await
            .remove(0),
            4 => operator::cancel(
                store,
                &clock,
                policy,
                std::slice::from_ref(&reference),
                &CancelRequest {
                    end_date: Some(day + chrono::Days::new(offset)),
                    override_notice: true,
                    ..CancelRequest::default()
                },
                operator::Mode::Apply,
            )
            .await
            .remove(0),
            5..=7 => {
                operator::revoke(
                    store,
                    &clock,
                    policy,
                    &reference,
                    None,
                    operator::Mode::Apply,
                )
                .await
            }
            _ => {
                operator::end(
                    store,
                    &clock,
                    policy,
                    &reference,
                    &EndEarlyRequest {
                        end_date: day + chrono::Days::new(offset),
                        reason: "simulated".into(),
                        notes: None,
                    },
                    operator::Mode::Apply,
                )
                .await
            }
        };
        match result {
            Ok(_) => applied += 1,
            Err(failure) if failure.is_invalid_input() => refused += 1,
            Err(failure) => panic!("operator action failed on {day}: {failure}"),
        }
    }
    (applied, refused)
}

/// The reminder events of one contract's history, each checked to lie inside its window:
/// never after the date it reminds of, never before its lead time; (key, taken effect on).
async fn reminders_of<S: ContractStore>(store: &S, reference: &str) -> Vec<(Key, NaiveDate)> {
    let mut found = Vec::new();
    for event in store.events(reference).await.expect("events") {
        if !matches!(
            event.kind.as_str(),
            "deadline_approaching" | "end_approaching"
        ) {
            continue;
        }
        let details = &event.details;
        let reminded = details["latest_cancellation_date"]
            .as_str()
            .or(details["end_date"].as_str())
            .and_then(|text| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok())
            .expect("the date reminded of");
        let lead = details["lead_time"]
            .as_str()
            .expect("lead time")
            .to_string();
        let period: Period = lead.parse().expect("a period");
        let on = event.effective_on;
        assert!(
            on <= reminded,
            "{reference} reminded on {on} of {reminded}, already past"
        );
        assert!(
            shift_back(reminded, period) <= on,
            "{reference} reminded on {on} of {reminded} before its {lead} window"
        );
        assert_eq!(
            details["days_left"].as_i64(),
            Some((reminded - on).num_days())
        );
        assert_eq!(
            event.transition_key,
            format!("{}:{reminded}:{lead}", event.kind)
        );
        found.push(((reference.to_string(), event.kind, reminded, lead), on));
    }
    found
}

/// Every reminder event in the feed, read to its end (once every transaction is over, so
/// the feed shows them all), counted by key.
async fn feed_reminders<S: OutboxStore>(store: &S) -> HashMap<Key, usize> {
    let kinds = [
        "deadline_approaching".to_string(),
        "end_approaching".to_string(),
    ];
    let mut counts = HashMap::new();
    let mut after: Option<FeedPosition> = None;
    loop {
        let page = store.feed(after, &kinds, 1000).await.expect("feed");
        let Some(last) = page.last() else { break };
        after = Some(last.position);
        for event in page {
            let details = &event.details;
            let reminded = details["latest_cancellation_date"]
                .as_str()
                .or(details["end_date"].as_str())
                .and_then(|text| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok())
                .expect("the date reminded of");
            let lead = details["lead_time"]
                .as_str()
                .expect("lead time")
                .to_string();
            *counts
                .entry((event.contract_ref, event.kind, reminded, lead))
                .or_insert(0) += 1;
        }
    }
    counts
}

async fn three_years_of_reminders<S: ContractStore + OutboxStore>(store: S) {
    let first_day = NaiveDate::from_ymd_opt(2025, 1, 1).expect("date");
    let mut rng = StdRng::seed_from_u64(14);
    let configured = ["30D", "7D", "1M"];
    let periods: Vec<Period> = configured
        .iter()
        .map(|text| text.parse().unwrap())
        .collect();
    let policy = RulePolicy {
        allow_end_before_billed_to: true,
        reminder_lead_times: LeadTimes::new(&periods).expect("lead times"),
    };
    let data = population_with_own_lead_times(&mut rng, first_day);
    import_with_lead_times(
        &store,
        BufReader::new(data.as_bytes()),
        &ParseDefaults {
            time_zone: chrono_tz::UTC,
        },
        &policy.reminder_lead_times,
        Utc.from_utc_datetime(&first_day.and_hms_opt(0, 0, 0).expect("midnight")),
        |_| {},
    )
    .await
    .expect("import");
    let refs: Vec<String> = all_contracts(&store)
        .await
        .into_iter()
        .map(|contract| contract.reference)
        .collect();
    let mut options = SweepOptions::new(100, Duration::from_secs(60), policy);
    // The reminders found in the histories, with the day each took effect.
    let mut sent: HashMap<Key, NaiveDate> = HashMap::new();
    let (mut applied, mut refused, mut checked) = (0, 0, 0);
    for offset in 1..=DAYS {
        let day = first_day + chrono::Days::new(offset);
        let (done, refusals) = operator_actions(&store, &mut rng, day, &refs, policy).await;
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
            let Some(target) = reminder_target(&contract) else {
                continue;
            };
            for lead in lead_times_of(&contract, &policy.reminder_lead_times).iter() {
                if shift_back(target.date(), lead) <= day && day <= target.date() {
                    let key = (
                        contract.reference.clone(),
                        target.kind().as_str().to_string(),
                        target.date(),
                        lead.to_string(),
                    );
                    if !sent.contains_key(&key) {
                        for (found, on) in reminders_of(&store, &contract.reference).await {
                            assert!(on <= day, "{day}: {found:?} takes effect on {on}");
                            sent.entry(found).or_insert(on);
                        }
                    }
                    let on = sent.get(&key).copied();
                    assert!(on.is_some(), "{day}: {key:?} fits but was not sent");
                    checked += 1;
                }
            }
        }
        // A reminder sent today fits today: it is checked above, so it is in `sent`.
    }
    // Every reminder recorded is one of those that fitted, recorded once.
    // (On PostgreSQL the feed shows a transaction once no older one is still running in
    // the cluster, which other tests' transactions may delay for a moment.)
    let mut feed = feed_reminders(&store).await;
    for _ in 0..120 {
        if feed.len() >= sent.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        feed = feed_reminders(&store).await;
    }
    for (key, count) in &feed {
        assert_eq!(*count, 1, "{key:?} recorded {count} times");
        assert!(
            sent.contains_key(key),
            "{key:?} was sent but never fitted a day"
        );
    }
    assert_eq!(feed.len(), sent.len());
    let mut kinds: HashMap<String, usize> = HashMap::new();
    for (_, kind, _, _) in sent.keys() {
        *kinds.entry(kind.clone()).or_default() += 1;
    }
    // The scenario really exercised the rule and the actions.
    assert!(applied > 300, "only {applied} operator actions applied");
    assert!(refused > 50, "only {refused} operator actions refused");
    assert!(
        kinds.get("deadline_approaching").copied().unwrap_or(0) > 500,
        "{kinds:?}"
    );
    assert!(
        kinds.get("end_approaching").copied().unwrap_or(0) > 100,
        "{kinds:?}"
    );
    assert!(checked > 10_000, "only {checked} reminder checks");
}
