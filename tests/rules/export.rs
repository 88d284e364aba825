//! The export record written straight from a contract (`ExportRecord`, what every event and
//! `contractd export` write) is the same text as the owned `ContractRecord` that import reads,
//! serialised: for a generated population and for a contract with every optional part set.

use chrono::NaiveDate;
use contractd::calendar::Period;
use contractd::contract::export::ExportRecord;
use contractd::contract::record::ContractRecord;
use contractd::contract::{Contract, LeadTimes, ReminderKind, SentReminder};
use serde_json::json;

use crate::support::population::jsonl;
use crate::support::{contract_from_json, date, patched_contract};

/// Both writers give the same text, and it reads back as the same record.
fn assert_same_record(contract: &Contract) {
    let direct = serde_json::to_string(&ExportRecord(contract)).expect("direct record");
    let owned = serde_json::to_string(&ContractRecord::from_contract(contract)).expect("owned");
    assert_eq!(direct, owned, "{}", contract.reference);
    let read: ContractRecord = serde_json::from_str(&direct).expect("reads back");
    assert_eq!(read, ContractRecord::from_contract(contract));
}

fn period(text: &str) -> Period {
    Period::parse(text).expect("period")
}

#[test]
fn a_generated_population_is_written_the_same_by_both() {
    let zones = ["Europe/Berlin", "America/New_York", "Asia/Kolkata", "UTC"];
    let lines = jsonl(11, 3_000, date("2026-04-01"), &zones);
    let mut count = 0;
    for line in lines.lines() {
        let mut contract = contract_from_json(line);
        assert_same_record(&contract);
        // The computed and reminder fields the import leaves empty, on every contract.
        contract.cancellation_date = contract.end_date;
        contract.latest_cancellation_date = Some(contract.start_date);
        contract.reminders.next_on = Some(contract.start_date);
        contract.reminders.sent = vec![SentReminder {
            kind: ReminderKind::EndApproaching,
            date: contract.start_date,
            lead_time: period("30D"),
        }];
        assert_same_record(&contract);
        count += 1;
    }
    assert_eq!(count, 3_000);
}

#[test]
fn every_optional_part_is_written_the_same_by_both() {
    let base = json!({
        "ref": "ALL-PARTS", "customer": "Ünïcode \"quoted\" \\ customer\n",
        "status": "active", "time_zone": "Pacific/Chatham",
        "start_date": "2024-01-31", "initial_term": "1Y", "notice_period": "3M",
        "cancellation_window": "end_of_month", "auto_extend": true, "extension_term": "1M",
        "proration": "actual_days",
        "lines": [
            {"ref": "L1", "description": "seat", "kind": "recurring_fixed", "billable": true,
             "start_date": "2024-01-31", "amount_minor": 1250, "currency": "EUR",
             "billing_period": "1M", "auto_extend": true,
             "cancellation": {"received_on": "2024-05-02", "end_date": "2024-07-31",
                              "reason": "too_expensive", "notes": "line note",
                              "final_invoice": true, "restore_auto_extend": true}},
            {"ref": "L2", "description": "", "kind": "one_time", "billable": false,
             "start_date": "2024-02-29", "end_date": "2024-02-29", "status": "expired",
             "amount_minor": 5, "currency": "EUR"}
        ],
        "schedules": [
            {"line_ref": "L1", "period_start": "2024-01-31", "period_end": "2024-02-28",
             "amount_minor": 1250, "status": "billed", "document": "INV-1"},
            {"line_ref": "L1", "period_start": "2024-02-29", "period_end": "2024-03-30",
             "amount_minor": 1250, "status": "planned"}
        ],
        "documents": [
            {"ref": "INV-1", "kind": "invoice", "status": "complete", "consolidated": true,
             "amount_minor": 1250, "currency": "EUR"}
        ],
        "cancellation": {"received_on": "2024-05-01", "end_date": "2025-01-30",
                         "reason": null, "notes": "by letter", "final_invoice": false,
                         "restore_auto_extend": true},
        "end_reason": "customer_request", "end_notes": "ended",
        "renewals": [{"ref": "R-1", "status": "draft"}],
        "change_requests": [{"ref": "CR-1", "status": "pending"}, {"ref": "CR-2", "status": "rejected"}],
        "reminder_lead_times": ["30D", "1W"]
    });
    let mut contract = contract_from_json(&base.to_string());
    contract.cancellation_date = Some(date("2025-01-30"));
    contract.latest_cancellation_date = Some(date("2024-10-31"));
    contract.reminders.next_on = Some(date("2024-10-01"));
    contract.reminders.sent = vec![
        SentReminder {
            kind: ReminderKind::DeadlineApproaching,
            date: date("2024-10-31"),
            lead_time: period("30D"),
        },
        SentReminder {
            kind: ReminderKind::EndApproaching,
            date: date("2025-01-30"),
            lead_time: period("1W"),
        },
    ];
    assert_same_record(&contract);

    // No reminders for this contract (an empty list), and dates outside four-digit years.
    contract.reminders.lead_times = Some(LeadTimes::new(&[]).expect("empty list"));
    contract.original_end_date = NaiveDate::from_ymd_opt(10_000, 1, 1);
    contract.minimum_term_end = NaiveDate::from_ymd_opt(-1, 12, 31);
    assert_same_record(&contract);

    // Nothing optional at all.
    let bare = patched_contract(
        json!({"ref": "BARE", "customer": "c", "start_date": "2024-01-01",
                "cancellation_window": "end_of_month", "auto_extend": false}),
        json!({}),
        date("2024-01-01"),
    );
    assert_same_record(&bare);
}
