//! A seeded, realistic population of contracts in the import format, as of a business date:
//! what each contract needs on that date is drawn from [`Kind`] (an expiry, a scheduled
//! cancellation, an extension or a deadline refresh due, or nothing due: fixed terms,
//! open-ended contracts, cancellations pending for later, ended contracts), over weighted
//! zones, a tenth with billed and planned schedules. The same seed gives the same contracts.
//!
//! The one generator of the tests (through `tests/support`) and of the sweep benchmark
//! (`benches/sweep.rs` includes this file by path, so it uses nothing else of the tests).

use chrono::{Datelike, Days, NaiveDate};
use contractd::calendar::{billing_period, prorate, shift, shift_back, Period};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// Contracts as of `business_date`, each with the [`Kind`] it was drawn as, without end: take
/// as many as wanted. The `index`th (from 0) has the ref [`reference`]`(prefix, index)`.
pub struct Population<'a> {
    rng: StdRng,
    business_date: NaiveDate,
    zones: &'a [(&'a str, u32)],
    total_weight: u32,
    prefix: &'a str,
    index: usize,
}

impl<'a> Population<'a> {
    /// The population of `seed` as of `business_date`, over `zones` with a weight each (how
    /// many contracts live there, relatively).
    pub fn new(
        seed: u64,
        business_date: NaiveDate,
        zones: &'a [(&'a str, u32)],
        prefix: &'a str,
    ) -> Population<'a> {
        Population {
            rng: StdRng::seed_from_u64(seed),
            business_date,
            zones,
            total_weight: zones.iter().map(|(_, weight)| weight).sum(),
            prefix,
            index: 0,
        }
    }
}

impl Iterator for Population<'_> {
    type Item = (Kind, Value);

    fn next(&mut self) -> Option<(Kind, Value)> {
        let mut roll = self.rng.random_range(0..self.total_weight);
        let zone = self
            .zones
            .iter()
            .find(|(_, weight)| {
                if roll < *weight {
                    true
                } else {
                    roll -= weight;
                    false
                }
            })
            .map(|(zone, _)| *zone)
            .unwrap_or("UTC");
        let kind = Kind::pick(&mut self.rng);
        let reference = reference(self.prefix, self.index);
        self.index += 1;
        Some((
            kind,
            contract(reference, zone, kind, self.business_date, &mut self.rng),
        ))
    }
}

/// The ref of the `index`th contract (from 0) of a population with this prefix.
pub fn reference(prefix: &str, index: usize) -> String {
    format!("{prefix}-{index:08}")
}

/// The first `count` contracts of the population of `seed` as of `business_date`, spread
/// evenly over `zones`, as JSON Lines with refs `P-00000000`, `P-00000001`, …
pub fn jsonl(seed: u64, count: usize, business_date: NaiveDate, zones: &[&str]) -> String {
    let weighted: Vec<(&str, u32)> = zones.iter().map(|zone| (*zone, 1)).collect();
    let mut lines = String::new();
    for (_, record) in Population::new(seed, business_date, &weighted, "P").take(count) {
        lines.push_str(&record.to_string());
        lines.push('\n');
    }
    lines
}

fn period(text: &str) -> Period {
    Period::parse(text).expect("period")
}

/// What a generated contract is meant to need on the business date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Fixed term that ended in the last days, no auto extension: `expire`.
    Expiry,
    /// A pending cancellation whose end date passed: `execute_cancellations`.
    Cancellation,
    /// Auto-extending, notice deadline passed: `auto_extend`.
    Extension,
    /// Open-ended, latest cancellation date passed (end of March): `refresh_deadlines`.
    Deadline,
    /// Fixed term ending later (half of them auto-extending): nothing due.
    Term,
    /// Open-ended with a deadline ahead: nothing due.
    Evergreen,
    /// A cancellation pending for a later end date: nothing due.
    LaterCancellation,
    /// Ended long ago (expired or cancelled): never read.
    Ended,
}

impl Kind {
    /// How the benchmark's report names it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Expiry => "expiry due",
            Kind::Cancellation => "scheduled cancellation due",
            Kind::Extension => "extension due",
            Kind::Deadline => "deadline refresh due",
            Kind::Term => "fixed term, not due",
            Kind::Evergreen => "open-ended, not due",
            Kind::LaterCancellation => "cancellation pending later",
            Kind::Ended => "ended (expired/cancelled)",
        }
    }

    fn pick(rng: &mut StdRng) -> Kind {
        let roll: f64 = rng.random();
        match roll {
            r if r < 0.075 => Kind::Expiry,
            r if r < 0.150 => Kind::Cancellation,
            r if r < 0.225 => Kind::Extension,
            r if r < 0.300 => Kind::Deadline,
            r if r < 0.700 => Kind::Term,
            r if r < 0.900 => Kind::Evergreen,
            r if r < 0.950 => Kind::LaterCancellation,
            _ => Kind::Ended,
        }
    }
}

fn days_before(date: NaiveDate, days: u64) -> NaiveDate {
    date.checked_sub_days(Days::new(days)).expect("date")
}

fn days_after(date: NaiveDate, days: u64) -> NaiveDate {
    date.checked_add_days(Days::new(days)).expect("date")
}

fn pick<'a>(rng: &mut StdRng, choices: &[&'a str]) -> &'a str {
    choices[rng.random_range(0..choices.len())]
}

/// A day in the last three days before the business date `today`, mostly yesterday.
fn recent_day(today: NaiveDate, rng: &mut StdRng) -> NaiveDate {
    let back = match rng.random_range(0..10) {
        0 => 3,
        1 => 2,
        _ => 1,
    };
    days_before(today, back)
}

/// The last day of the month `months` after that of the business date `today`.
fn month_end_after(today: NaiveDate, months: u32) -> NaiveDate {
    let first = today.with_day(1).expect("first of month");
    let next_first = shift(first, period(&format!("{}M", months + 1)));
    days_before(next_first, 1)
}

/// One contract of `kind` as an import record, as of the business date `today`.
fn contract(
    reference: String,
    zone: &str,
    kind: Kind,
    today: NaiveDate,
    rng: &mut StdRng,
) -> Value {
    let mut record = json!({
        "ref": reference,
        "customer": format!("Customer {:06}", rng.random_range(0..200_000)),
        "time_zone": zone,
    });
    let mut auto_extend = false;
    let mut status = "active";
    let (start, end): (NaiveDate, Option<NaiveDate>) = match kind {
        Kind::Expiry => {
            let end = recent_day(today, rng);
            let term = pick(rng, &["1Y", "1Y", "6M", "2Y", "3M"]);
            record["notice_period"] = pick(rng, &["0D", "1M", "3M"]).into();
            record["cancellation_window"] = "end_of_term".into();
            (shift_back(days_after(end, 1), period(term)), Some(end))
        }
        Kind::Cancellation => {
            let cancel_end = recent_day(today, rng);
            let start = days_before(cancel_end, rng.random_range(60..900));
            let end = rng
                .random_bool(0.4)
                .then(|| days_after(today, rng.random_range(30..400)));
            let restore = rng.random_bool(0.5);
            record["notice_period"] = pick(rng, &["0D", "1M"]).into();
            record["cancellation_window"] = "end_of_month".into();
            record["cancellation"] = json!({
                "received_on": days_before(cancel_end, rng.random_range(10..60)).to_string(),
                "end_date": cancel_end.to_string(),
                "reason": pick(rng, &["moving", "price", "closing", "downsizing"]),
                "notes": format!("ticket {}", rng.random_range(10_000..99_999)),
                "final_invoice": false,
                "restore_auto_extend": restore,
            });
            (start, end)
        }
        Kind::Extension => {
            let deadline = recent_day(today, rng);
            // A notice period, so the end date is still ahead: with none, the contract would be
            // due for expiry too (auto_extend runs first and extends it, but the floor, which
            // only does execute_cancellations and expire, would expire it).
            let notice = pick(rng, &["1M", "1M", "3M", "2W"]);
            let end = shift(deadline, period(notice));
            debug_assert!(shift_back(end, period(notice)) < today && end >= today);
            record["notice_period"] = notice.into();
            auto_extend = true;
            record["cancellation_window"] = "end_of_term".into();
            record["extension_term"] = pick(rng, &["1Y", "1Y", "1Y", "1M", "1Q", "2Y"]).into();
            (shift_back(days_after(end, 1), period("1Y")), Some(end))
        }
        Kind::Deadline => {
            // Each of these has its latest cancellation date on 31 March.
            let (window, notice) = *[
                ("end_of_month", "0D"),
                ("end_of_month", "1M"),
                ("end_of_quarter", "0D"),
                ("end_of_quarter", "3M"),
                ("end_of_year", "9M"),
            ]
            .get(rng.random_range(0..5))
            .expect("choice");
            record["notice_period"] = notice.into();
            record["cancellation_window"] = window.into();
            (days_before(today, rng.random_range(40..1500)), None)
        }
        Kind::Term => {
            let end = days_after(today, rng.random_range(100..900));
            let term = pick(rng, &["1Y", "2Y", "3Y"]);
            record["notice_period"] = pick(rng, &["0D", "2W", "1M", "3M"]).into();
            record["cancellation_window"] = "end_of_term".into();
            if rng.random_bool(0.5) {
                auto_extend = true;
                record["extension_term"] = pick(rng, &["1Y", "1M", "1Q"]).into();
            }
            let start = shift_back(days_after(end, 1), period(term));
            (start.min(days_before(today, 1)), Some(end))
        }
        Kind::Evergreen => {
            let (window, notice) = *[
                ("end_of_month", "7D"),
                ("end_of_month", "2W"),
                ("end_of_quarter", "1M"),
                ("end_of_quarter", "2W"),
                ("end_of_year", "1M"),
                ("end_of_year", "3M"),
            ]
            .get(rng.random_range(0..6))
            .expect("choice");
            record["notice_period"] = notice.into();
            record["cancellation_window"] = window.into();
            (days_before(today, rng.random_range(40..1500)), None)
        }
        Kind::LaterCancellation => {
            let cancel_end = month_end_after(today, rng.random_range(1..10));
            record["notice_period"] = pick(rng, &["0D", "1M"]).into();
            record["cancellation_window"] = "end_of_month".into();
            record["cancellation"] = json!({
                "received_on": days_before(today, rng.random_range(1..30)).to_string(),
                "end_date": cancel_end.to_string(),
                "reason": pick(rng, &["moving", "price"]),
                "final_invoice": false,
                "restore_auto_extend": false,
            });
            (days_before(today, rng.random_range(60..900)), None)
        }
        Kind::Ended => {
            let end = days_before(today, rng.random_range(30..700));
            status = if rng.random_bool(0.7) {
                "expired"
            } else {
                record["end_reason"] = "moving".into();
                "cancelled"
            };
            record["notice_period"] = "1M".into();
            record["cancellation_window"] = "end_of_term".into();
            (shift_back(days_after(end, 1), period("1Y")), Some(end))
        }
    };
    record["status"] = status.into();
    record["start_date"] = start.to_string().into();
    if let Some(end) = end {
        record["end_date"] = end.to_string().into();
    }
    record["auto_extend"] = auto_extend.into();
    if rng.random_bool(0.1) {
        add_lines(
            &mut record,
            start,
            end,
            auto_extend,
            status != "active",
            today,
            rng,
        );
    }
    record
}

/// One or two monthly recurring lines with their billing schedules around the business date
/// (billed until a month ago, planned after).
fn add_lines(
    record: &mut Value,
    start: NaiveDate,
    end: Option<NaiveDate>,
    auto_extend: bool,
    ended: bool,
    today: NaiveDate,
    rng: &mut StdRng,
) {
    let monthly = period("1M");
    let mut lines = Vec::new();
    let mut schedules = Vec::new();
    let count = if rng.random_bool(0.3) { 2 } else { 1 };
    for number in 0..count {
        let (reference, kind, billable) = if number == 0 {
            ("seat", "recurring_fixed", true)
        } else {
            ("usage", "recurring_usage", false)
        };
        let amount: i64 = rng.random_range(1_000..50_000);
        lines.push(json!({
            "ref": reference,
            "description": format!("{reference} plan"),
            "kind": kind,
            "billable": billable,
            "start_date": start.to_string(),
            "end_date": end.map(|end| end.to_string()),
            "status": if ended { "expired" } else { "active" },
            "amount_minor": amount,
            "currency": "EUR",
            "billing_period": "1M",
            "auto_extend": auto_extend,
        }));
        let from = days_before(today, 90).max(start);
        let until = days_after(today, 60).min(end.unwrap_or(NaiveDate::MAX));
        let months = i64::from(from.year() - start.year()) * 12 + i64::from(from.month())
            - i64::from(start.month());
        let mut index = (months - 1).max(0);
        loop {
            let billing = billing_period(start, monthly, index);
            index += 1;
            if billing.start > until {
                break;
            }
            if billing.end < from {
                continue;
            }
            let period_end = billing.end.min(end.unwrap_or(NaiveDate::MAX));
            let full_days = (billing.end - billing.start).num_days() + 1;
            let used_days = (period_end - billing.start).num_days() + 1;
            let billed = ended || period_end < days_before(today, 30);
            schedules.push(json!({
                "line_ref": reference,
                "period_start": billing.start.to_string(),
                "period_end": period_end.to_string(),
                "amount_minor": prorate(amount, used_days, full_days),
                "status": if billed { "billed" } else { "planned" },
            }));
        }
    }
    record["lines"] = Value::Array(lines);
    record["schedules"] = Value::Array(schedules);
}
