//! The reminder rule of docs/rules.md section 5.5 as functions: what a contract is reminded of,
//! the windows `shift_back(date, t) <= D <= date`, exactly one reminder per (kind, date, lead
//! time), catch-up, moved dates, a contract's own lead times, and a property test of the due
//! date: whenever the rule sends on D, the contract's stored due date is before D.

use chrono::{Days, NaiveDate};
use contractd::calendar::{shift_back, Period};
use contractd::contract::record::{read_record, ContractRecord, ParseDefaults};
use contractd::contract::{Cancellation, Contract, ContractEvent, EventKind, LeadTimes};
use contractd::lifecycle::reminders::{
    next_reminder_on, reminder_target, reschedule, send_reminders, upcoming, ReminderTarget,
};
use contractd::lifecycle::{apply_job, DueDates, Job, RulePolicy};
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::support::{date, patched_contract};

fn p(text: &str) -> Period {
    text.parse().unwrap()
}

fn leads(texts: &[&str]) -> LeadTimes {
    LeadTimes::new(&texts.iter().map(|text| p(text)).collect::<Vec<_>>()).unwrap()
}

/// A contract from an import record with `patch` over a base, its dates computed as of
/// `today` and its next reminder scheduled with `configured`, as import stores it.
fn contract(patch: Value, today: &str, configured: &LeadTimes) -> Contract {
    let mut contract = patched_contract(
        json!({
            "ref": "R-1",
            "customer": "ACME",
            "time_zone": "UTC",
            "start_date": "2025-01-01",
            "notice_period": "1M",
            "cancellation_window": "end_of_year",
            "auto_extend": false,
        }),
        patch,
        date(today),
    );
    reschedule(&mut contract, configured);
    contract
}

/// Run the rule on every day from `from` to `to`, keeping its state, as daily sweeps would;
/// the events sent.
fn daily(
    mut contract: Contract,
    from: &str,
    to: &str,
    configured: &LeadTimes,
) -> (Contract, Vec<ContractEvent>) {
    let mut events = Vec::new();
    let mut day = date(from);
    while day <= date(to) {
        if let Some(transition) = send_reminders(&contract, day, configured) {
            events.extend(transition.events);
            contract = transition.contract;
        }
        day = day + Days::new(1);
    }
    (contract, events)
}

fn keys(events: &[ContractEvent]) -> Vec<(NaiveDate, String)> {
    events
        .iter()
        .map(|event| (event.effective_on, event.transition_key.clone().unwrap()))
        .collect()
}

#[test]
fn ncrc_year_end_with_one_month_notice_is_reminded_30_days_before_the_deadline() {
    // NCRC example 2: open-ended, "till end of a year", notice 1M: deadline 2025-11-30 for an
    // end on 2025-12-31.
    let configured = leads(&["30D", "7D"]);
    let c = contract(json!({}), "2025-10-01", &configured);
    assert_eq!(c.latest_cancellation_date, Some(date("2025-11-30")));
    assert_eq!(c.reminders.next_on, Some(date("2025-10-31")));
    assert_eq!(send_reminders(&c, date("2025-10-30"), &configured), None);
    let sent = send_reminders(&c, date("2025-10-31"), &configured).expect("the 30D reminder");
    assert_eq!(sent.events.len(), 1);
    let event = &sent.events[0];
    assert_eq!(event.kind, EventKind::DeadlineApproaching);
    assert_eq!(event.effective_on, date("2025-10-31"));
    assert_eq!(
        event.transition_key.as_deref(),
        Some("deadline_approaching:2025-11-30:30D")
    );
    assert_eq!(
        event.details,
        json!({
            "lead_time": "30D",
            "latest_cancellation_date": "2025-11-30",
            "cancellation_date": "2025-12-31",
            "extends_to": null,
            "days_left": 30,
        })
    );
    // The 7D reminder is next, on 2025-11-23.
    assert_eq!(sent.contract.reminders.next_on, Some(date("2025-11-23")));
    // Applying the rule again the same day changes nothing.
    assert_eq!(
        send_reminders(&sent.contract, date("2025-10-31"), &configured),
        None
    );
    let (_, events) = daily(c, "2025-10-01", "2025-11-30", &configured);
    assert_eq!(
        keys(&events),
        vec![
            (
                date("2025-10-31"),
                "deadline_approaching:2025-11-30:30D".to_string()
            ),
            (
                date("2025-11-23"),
                "deadline_approaching:2025-11-30:7D".to_string()
            ),
        ]
    );
}

#[test]
fn an_auto_extending_contract_is_told_what_it_extends_to() {
    let configured = leads(&["30D"]);
    let c = contract(
        json!({"end_date": "2025-12-31", "cancellation_window": "end_of_term",
               "auto_extend": true, "extension_term": "1Y"}),
        "2025-10-01",
        &configured,
    );
    let sent = send_reminders(&c, date("2025-11-10"), &configured).expect("reminder");
    assert_eq!(
        sent.events[0].details,
        json!({
            "lead_time": "30D",
            "latest_cancellation_date": "2025-11-30",
            "cancellation_date": "2025-12-31",
            "extends_to": "2026-12-31",
            "days_left": 20,
        })
    );
}

#[test]
fn a_term_end_without_extension_gives_end_approaching() {
    let configured = leads(&["1M"]);
    let c = contract(
        json!({"end_date": "2025-12-31", "cancellation_window": "end_of_term"}),
        "2025-10-01",
        &configured,
    );
    assert_eq!(
        reminder_target(&c),
        Some(ReminderTarget::End {
            end_date: date("2025-12-31"),
            cause: "term_end"
        })
    );
    // shift_back(2025-12-31, 1M) = 2025-11-30 (month-end rule).
    assert_eq!(c.reminders.next_on, Some(date("2025-11-30")));
    assert_eq!(send_reminders(&c, date("2025-11-29"), &configured), None);
    let sent = send_reminders(&c, date("2025-11-30"), &configured).expect("reminder");
    assert_eq!(sent.events[0].kind, EventKind::EndApproaching);
    assert_eq!(
        sent.events[0].details,
        json!({"lead_time": "1M", "end_date": "2025-12-31", "days_left": 31,
               "cause": "term_end"})
    );
}

#[test]
fn a_pending_cancellation_is_reminded_of_its_end_date() {
    let configured = leads(&["30D", "7D"]);
    let c = contract(
        json!({"cancellation": {"received_on": "2025-03-01", "end_date": "2025-06-30"}}),
        "2025-03-01",
        &configured,
    );
    assert_eq!(
        reminder_target(&c),
        Some(ReminderTarget::End {
            end_date: date("2025-06-30"),
            cause: "cancellation"
        })
    );
    let (_, events) = daily(c, "2025-05-01", "2025-07-05", &configured);
    assert_eq!(
        keys(&events),
        vec![
            (
                date("2025-05-31"),
                "end_approaching:2025-06-30:30D".to_string()
            ),
            (
                date("2025-06-23"),
                "end_approaching:2025-06-30:7D".to_string()
            ),
        ]
    );
    assert_eq!(events[0].details["cause"], json!("cancellation"));
}

#[test]
fn a_catch_up_sends_what_is_still_ahead_once_and_nothing_for_a_past_date() {
    let configured = leads(&["30D", "7D"]);
    let c = contract(json!({}), "2025-10-01", &configured);
    // Ten days of downtime ending on 2025-11-25: both windows opened meanwhile.
    let sent = send_reminders(&c, date("2025-11-25"), &configured).expect("catch-up");
    assert_eq!(
        keys(&sent.events),
        vec![
            (
                date("2025-11-25"),
                "deadline_approaching:2025-11-30:30D".to_string()
            ),
            (
                date("2025-11-25"),
                "deadline_approaching:2025-11-30:7D".to_string()
            ),
        ]
    );
    assert!(sent
        .events
        .iter()
        .all(|event| event.details["days_left"] == 5));
    assert_eq!(
        send_reminders(&sent.contract, date("2025-11-26"), &configured),
        None
    );
    // The deadline itself is still in time; the day after it is past.
    assert_eq!(
        send_reminders(&c, date("2025-11-30"), &configured)
            .expect("on the deadline")
            .events
            .len(),
        2
    );
    let late = send_reminders(&c, date("2025-12-01"), &configured);
    assert!(late.is_none_or(|transition| transition.events.is_empty()));
}

#[test]
fn a_moved_date_gets_its_own_reminders_and_a_date_moved_back_none_twice() {
    let configured = leads(&["30D"]);
    let c = contract(json!({}), "2025-10-01", &configured);
    let reminded = send_reminders(&c, date("2025-11-01"), &configured)
        .expect("deadline reminder")
        .contract;
    // A cancellation ending on 2025-11-20 is registered: its end date is reminded of at
    // once (its window opened on 2025-10-21), then it is revoked.
    let mut cancelled = reminded.clone();
    cancelled.cancellation = Some(Cancellation {
        received_on: date("2025-11-02"),
        end_date: date("2025-11-20"),
        reason: None,
        notes: None,
        final_invoice: false,
        restore_auto_extend: false,
    });
    cancelled.recompute_cancellation_dates(date("2025-11-02"));
    reschedule(&mut cancelled, &configured);
    assert_eq!(cancelled.reminders.next_on, Some(date("2025-10-21")));
    let (after_end, events) = daily(cancelled, "2025-11-02", "2025-11-09", &configured);
    assert_eq!(
        keys(&events),
        vec![(
            date("2025-11-02"),
            "end_approaching:2025-11-20:30D".to_string()
        )]
    );
    let mut revoked = reminded;
    revoked.reminders.sent = after_end.reminders.sent.clone();
    revoked.recompute_cancellation_dates(date("2025-11-10"));
    reschedule(&mut revoked, &configured);
    // Back to the deadline of 2025-11-30: its 30D reminder was sent already.
    assert_eq!(revoked.latest_cancellation_date, Some(date("2025-11-30")));
    assert_eq!(revoked.reminders.next_on, None);
    let (_, again) = daily(revoked, "2025-11-10", "2025-11-30", &configured);
    assert!(again.is_empty(), "{again:?}");
}

#[test]
fn a_contract_s_own_lead_times_win_and_an_empty_list_means_none() {
    let configured = leads(&["30D"]);
    let own = contract(
        json!({"reminder_lead_times": ["2M", "1W"]}),
        "2025-09-01",
        &configured,
    );
    assert_eq!(own.reminders.next_on, Some(date("2025-09-30")));
    let (_, events) = daily(own, "2025-09-01", "2025-11-30", &configured);
    assert_eq!(
        keys(&events),
        vec![
            (
                date("2025-09-30"),
                "deadline_approaching:2025-11-30:2M".to_string()
            ),
            (
                date("2025-11-23"),
                "deadline_approaching:2025-11-30:1W".to_string()
            ),
        ]
    );
    let none = contract(
        json!({"reminder_lead_times": []}),
        "2025-09-01",
        &configured,
    );
    assert_eq!(none.reminders.next_on, None);
    assert_eq!(DueDates::of(&none).reminder, None);
    let (_, events) = daily(none, "2025-09-01", "2025-12-31", &configured);
    assert!(events.is_empty());
}

#[test]
fn nothing_is_reminded_without_lead_times_or_for_an_ended_contract() {
    let c = contract(json!({}), "2025-10-01", &LeadTimes::NONE);
    assert_eq!(c.reminders.next_on, None);
    assert_eq!(
        send_reminders(&c, date("2025-11-20"), &LeadTimes::NONE),
        None
    );
    let configured = leads(&["30D"]);
    let expired = contract(
        json!({"status": "expired", "end_date": "2025-06-30", "cancellation_window": "end_of_term"}),
        "2025-10-01",
        &configured,
    );
    assert_eq!(reminder_target(&expired), None);
    assert_eq!(next_reminder_on(&expired, &configured), None);
    assert_eq!(
        send_reminders(&expired, date("2025-06-15"), &configured),
        None
    );
}

#[test]
fn the_job_uses_the_configured_lead_times_of_the_policy() {
    let policy = RulePolicy {
        reminder_lead_times: leads(&["30D"]),
        ..RulePolicy::default()
    };
    let c = contract(json!({}), "2025-10-01", &policy.reminder_lead_times);
    let sent = apply_job(Job::SendReminders, &c, date("2025-11-05"), &policy)
        .unwrap()
        .expect("a reminder");
    assert_eq!(sent.events.len(), 1);
    assert_eq!(
        DueDates::of(&c).for_job(Job::SendReminders),
        Some(date("2025-10-30"))
    );
}

#[test]
fn the_record_round_trips_lead_times_and_sent_reminders() {
    let configured = leads(&["30D"]);
    let c = contract(
        json!({"reminder_lead_times": ["30d", "7D"]}),
        "2025-10-01",
        &configured,
    );
    let sent = send_reminders(&c, date("2025-11-01"), &configured)
        .unwrap()
        .contract;
    let record = ContractRecord::from_contract(&sent);
    assert_eq!(
        record.reminder_lead_times,
        Some(vec!["30D".to_string(), "7D".to_string()])
    );
    assert_eq!(record.reminders_sent.len(), 1);
    assert_eq!(record.next_reminder_on.as_deref(), Some("2025-11-23"));
    let mut back = read_record(&serde_json::to_string(&record).unwrap())
        .unwrap()
        .parse(&ParseDefaults {
            time_zone: chrono_tz::UTC,
        })
        .unwrap();
    back.recompute_cancellation_dates(date("2025-11-01"));
    reschedule(&mut back, &configured);
    assert_eq!(back, sent);
}

#[test]
fn bad_reminder_fields_are_refused_naming_the_field() {
    let parse = |patch: Value| {
        let mut record = json!({"ref": "R-9", "customer": "ACME", "start_date": "2025-01-01",
                                "cancellation_window": "end_of_month", "auto_extend": false});
        if let (Some(target), Some(source)) = (record.as_object_mut(), patch.as_object()) {
            for (key, value) in source {
                target.insert(key.clone(), value.clone());
            }
        }
        read_record(&record.to_string())
            .and_then(|record| {
                record.parse(&ParseDefaults {
                    time_zone: chrono_tz::UTC,
                })
            })
            .unwrap_err()
            .to_string()
    };
    let error = parse(json!({"reminder_lead_times": ["30D", "soon"]}));
    assert!(error.contains("reminder_lead_times[1]"), "{error}");
    let error = parse(json!({"reminder_lead_times": ["7D", "7D"]}));
    assert!(
        error.contains("reminder_lead_times") && error.contains("twice"),
        "{error}"
    );
    let error =
        parse(json!({"reminder_lead_times": ["1D","2D","3D","4D","5D","6D","7D","8D","9D"]}));
    assert!(error.contains("at most 8"), "{error}");
    let error = parse(json!({"reminder_lead_times": "30D"}));
    assert!(error.contains("reminder_lead_times"), "{error}");
    let error = parse(json!({"reminders_sent": [
        {"kind": "nudge", "date": "2025-11-30", "lead_time": "30D"}]}));
    assert!(error.contains("reminders_sent[0].kind"), "{error}");
    let error = parse(json!({"reminders_sent": [
        {"kind": "end_approaching", "date": "2025-11-31", "lead_time": "30D"}]}));
    assert!(error.contains("reminders_sent[0].date"), "{error}");
}

#[test]
fn the_upcoming_list_takes_the_same_dates_as_the_reminders() {
    let configured = LeadTimes::NONE;
    let c = contract(json!({}), "2025-11-01", &configured);
    let entry = upcoming(&c, date("2025-11-01"), p("30D")).expect("within 30 days");
    assert_eq!(entry.days_left, 29);
    assert_eq!(entry.target.date(), date("2025-11-30"));
    assert_eq!(upcoming(&c, date("2025-10-30"), p("30D")), None);
    assert!(upcoming(&c, date("2025-10-31"), p("30D")).is_some());
}

fn lead_time() -> impl Strategy<Value = Period> {
    prop::sample::select(vec![
        "0D", "1D", "7D", "10D", "30D", "45D", "1W", "2W", "1M", "2M", "1Q",
    ])
    .prop_map(p)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    /// Whenever the rule sends a reminder on D, the contract's due date is before D; the
    /// reminder's window holds D; the rule sends nothing twice over any run of days, and one
    /// late sweep sends exactly the reminders of daily sweeps whose date is still ahead.
    #[test]
    fn reminders_are_due_exactly_once_and_catch_up_equals_daily(
        window in prop::sample::select(vec!["end_of_month", "end_of_quarter", "end_of_year", "end_of_term"]),
        notice in prop::sample::select(vec!["0D", "14D", "1M", "3M"]),
        end in prop::option::of(30..700_u64),
        auto_extend in any::<bool>(),
        configured in prop::collection::hash_set(lead_time(), 0..4),
        first in 0..400_u64,
        span in 1..120_u64,
    ) {
        let start = date("2025-01-01");
        let end_date = end.map(|days| start + Days::new(days));
        let window = if end_date.is_none() && window == "end_of_term" { "end_of_month" } else { window };
        let configured: Vec<Period> = configured.into_iter().collect();
        let configured = LeadTimes::new(&configured).unwrap();
        let mut patch = json!({"cancellation_window": window, "notice_period": notice,
                               "auto_extend": auto_extend && end_date.is_some(),
                               "extension_term": "1Y"});
        if let Some(end_date) = end_date {
            patch["end_date"] = json!(end_date.to_string());
        }
        let day0 = start + Days::new(first);
        let c = contract(patch, &day0.to_string(), &configured);
        let target = reminder_target(&c);
        let last = day0 + Days::new(span);
        let mut current = c.clone();
        let mut sent = Vec::new();
        let mut day = day0;
        while day <= last {
            let due = DueDates::of(&current).reminder;
            if let Some(transition) = send_reminders(&current, day, &configured) {
                if !transition.events.is_empty() {
                    prop_assert!(due.is_some_and(|due| due < day), "sent on {day} with due {due:?}");
                }
                for event in &transition.events {
                    let target = target.expect("a target");
                    prop_assert!(day <= target.date());
                    let lead = p(event.details["lead_time"].as_str().unwrap());
                    prop_assert!(shift_back(target.date(), lead) <= day);
                    let key = event.transition_key.clone().unwrap();
                    prop_assert!(!sent.iter().any(|(_, k)| *k == key), "{key} twice");
                    sent.push((day, key));
                }
                current = transition.contract;
            }
            day = day + Days::new(1);
        }
        // Every reminder whose window met the days swept was sent (the contract itself does
        // not change here, so its target stays).
        if let Some(target) = target {
            for lead in configured.iter() {
                let opens = shift_back(target.date(), lead);
                let fits = opens <= last && day0 <= target.date();
                let key = format!("{}:{}:{}", target.kind(), target.date(), lead);
                prop_assert_eq!(fits, sent.iter().any(|(_, k)| *k == key), "{}", key);
            }
        }
        // One sweep on the last day sends exactly the daily reminders whose date is ahead.
        let catch_up: Vec<String> = send_reminders(&c, last, &configured)
            .map(|transition| transition.events.iter().map(|e| e.transition_key.clone().unwrap()).collect())
            .unwrap_or_default();
        let mut expected: Vec<String> = sent
            .iter()
            .filter(|_| target.is_some_and(|target| target.date() >= last))
            .map(|(_, key)| key.clone())
            .collect();
        expected.sort();
        let mut catch_up = catch_up;
        catch_up.sort();
        prop_assert_eq!(catch_up, expected);
    }
}
