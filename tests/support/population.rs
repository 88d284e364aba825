//! A seeded, mixed population of contracts in the import format, shared by the sweep tests
//! and the simulation: every window, several notice periods and extension terms, open-ended
//! and fixed-term contracts, lines, and pending cancellations.

use chrono::NaiveDate;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn date(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").expect("test date")
}

/// A mixed, seeded population of contracts (as JSON Lines) for whole-sweep comparisons.
pub fn population(seed: u64, count: usize, zones: &[&str]) -> String {
    let mut rng = StdRng::seed_from_u64(seed);
    let windows = [
        "end_of_term",
        "end_of_month",
        "end_of_quarter",
        "end_of_year",
    ];
    let notices = ["0D", "7D", "2W", "1M", "3M"];
    let terms = ["1M", "3M", "1Y", "1Q"];
    let mut lines = String::new();
    for index in 0..count {
        let start = date("2024-01-01") + chrono::Days::new(rng.random_range(0..500));
        let window = windows[rng.random_range(0..windows.len())];
        let has_end = window == "end_of_term" || rng.random_bool(0.6);
        let end = start + chrono::Days::new(rng.random_range(20..400));
        let auto = has_end && rng.random_bool(0.5);
        let zone = zones[index % zones.len()];
        let mut record = serde_json::json!({
            "ref": format!("P-{index:05}"),
            "customer": format!("customer {index}"),
            "time_zone": zone,
            "start_date": start.to_string(),
            "notice_period": notices[rng.random_range(0..notices.len())],
            "cancellation_window": window,
            "auto_extend": auto,
        });
        if has_end {
            record["end_date"] = end.to_string().into();
        }
        if auto {
            record["extension_term"] = terms[rng.random_range(0..terms.len())].into();
        }
        if rng.random_bool(0.3) {
            let line_end = if has_end { Some(end) } else { None };
            record["lines"] = serde_json::json!([{
                "ref": "main",
                "kind": "recurring_fixed",
                "billable": true,
                "start_date": start.to_string(),
                "end_date": line_end.map(|d| d.to_string()),
                "amount_minor": rng.random_range(100..100_000),
                "currency": "EUR",
                "billing_period": "1M",
                "auto_extend": auto,
            }]);
        }
        if has_end && rng.random_bool(0.15) {
            let received = start + chrono::Days::new(rng.random_range(0..10));
            let cancel_end = (start + chrono::Days::new(rng.random_range(15..300))).min(end);
            record["cancellation"] = serde_json::json!({
                "received_on": received.to_string(),
                "end_date": cancel_end.max(start).to_string(),
                "reason": "test",
            });
            record["auto_extend"] = false.into();
            if let Some(map) = record.as_object_mut() {
                map.remove("extension_term");
            }
        }
        lines.push_str(&record.to_string());
        lines.push('\n');
    }
    lines
}
