//! One conformance suite for every `ContractStore`: each test is a generic function run on
//! SQLite and on PostgreSQL, each time on a brand-new database, so both backends are held to
//! exactly the same behaviour. By topic: [`schema`], [`import`], [`reading`], guarded
//! [`batches`] of changes, the run [`ledger`], and [`races`] between replicas; the fixtures they
//! share are here.
//!
//! PostgreSQL tests need the server at `CONTRACTD_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and fail when it is unreachable.

use crate::support;

use chrono::NaiveDate;
use contractd::contract::{Contract, ContractEvent, EventKind};
use contractd::lifecycle::Job;
use contractd::storage::{
    BatchCursor, BatchProgress, ContractChange, ContractStore, LoadedContract, NewContract,
    RunClaim, RunCounts, RunKey,
};
use serde_json::json;
use support::{contract_from_json, date};

mod batches;
mod import;
mod ledger;
mod races;
mod reading;
mod schema;

/// "Now" for every write (Unix ms).
pub(crate) const NOW: i64 = 1_720_000_000_000;

/// A lease long enough for any test.
pub(crate) const LEASE: i64 = 60_000;

/// The import day of every test contract.
fn imported_on() -> NaiveDate {
    date("2024-06-01")
}

/// A contract with no children: `end` is its end date (open-ended when `None`).
fn plain_json(reference: &str, zone: &str, end: Option<&str>) -> String {
    let (end, window) = match end {
        Some(end) => (format!("\"{end}\""), "end_of_term"),
        None => ("null".to_string(), "end_of_month"),
    };
    format!(
        r#"{{"ref":"{reference}","customer":"Customer {reference}","time_zone":"{zone}",
            "start_date":"2024-01-01","end_date":{end},"cancellation_window":"{window}",
            "auto_extend":false}}"#
    )
    .replace('\n', " ")
}

pub(crate) fn plain(reference: &str, zone: &str, end: Option<&str>) -> Contract {
    contract_from_json(&plain_json(reference, zone, end))
}

/// A contract with every kind of child, a pending cancellation and every optional field.
pub(crate) fn rich(reference: &str) -> Contract {
    let json = r#"{
        "ref": "REF", "customer": "Müller & Søn «ß» 😀 'quoted' \"double\"",
        "status": "active", "time_zone": "Europe/Berlin",
        "start_date": "2024-01-01", "end_date": "2025-12-31", "initial_term": "24M",
        "original_end_date": "2026-06-30", "minimum_term_end": "2024-12-31",
        "notice_period": "3M", "cancellation_window": "end_of_month",
        "auto_extend": false, "extension_term": "12M", "proration": "none",
        "lines": [
            {"ref": "L1", "description": "Desk", "kind": "recurring_fixed", "billable": true,
             "start_date": "2024-01-01", "end_date": "2025-12-31", "status": "active",
             "amount_minor": 25000, "currency": "EUR", "billing_period": "1M",
             "auto_extend": true,
             "cancellation": {"received_on": "2024-05-02", "end_date": "2024-08-31",
                              "reason": "moving", "notes": "line note",
                              "final_invoice": true, "restore_auto_extend": true}},
            {"ref": "L2", "description": "", "kind": "one_time", "billable": false,
             "start_date": "2024-01-01", "status": "expired", "amount_minor": 0,
             "currency": "EUR"},
            {"ref": "L3", "description": "Usage", "kind": "recurring_usage", "billable": true,
             "start_date": "2024-02-01", "status": "cancelled", "amount_minor": 100,
             "currency": "USD", "billing_period": "1Q"}
        ],
        "schedules": [
            {"line_ref": "L1", "period_start": "2024-01-01", "period_end": "2024-01-31",
             "amount_minor": 25000, "status": "billed", "document": "INV-1"},
            {"line_ref": "L1", "period_start": "2024-02-01", "period_end": "2024-02-29",
             "amount_minor": 25000, "status": "planned"},
            {"line_ref": "L3", "period_start": "2024-02-01", "period_end": "2024-04-30",
             "amount_minor": 300, "status": "planned"}
        ],
        "documents": [
            {"ref": "INV-1", "kind": "invoice", "status": "complete", "consolidated": false,
             "amount_minor": 25000, "currency": "EUR"},
            {"ref": "CN-1", "kind": "credit_note", "status": "ready_for_review",
             "consolidated": true, "amount_minor": 500, "currency": "EUR"}
        ],
        "cancellation": {"received_on": "2024-03-15", "end_date": "2024-09-30",
                         "reason": "price", "notes": "multi\nline",
                         "final_invoice": true, "restore_auto_extend": true},
        "end_reason": "customer request", "end_notes": "notes",
        "renewals": [{"ref": "R1", "status": "draft"}, {"ref": "R2", "status": "complete"}],
        "change_requests": [{"ref": "CR1", "status": "pending"},
                            {"ref": "CR2", "status": "rejected"}]
    }"#
    .replace('\n', " ")
    .replace("\"REF\"", &format!("\"{reference}\""));
    let mut contract = contract_from_json(&json);
    contract.cancellation_date = Some(date("2024-09-30"));
    contract.latest_cancellation_date = Some(date("2024-06-30"));
    contract
}

fn new(contract: Contract) -> NewContract {
    NewContract {
        contract,
        imported_on: imported_on(),
    }
}

pub(crate) async fn insert<S: ContractStore>(store: &S, contracts: Vec<Contract>) {
    let news: Vec<NewContract> = contracts.into_iter().map(new).collect();
    store
        .insert_contracts(&news, NOW)
        .await
        .expect("insert_contracts");
}

/// The stored row of `reference`, which must exist and be valid.
pub(crate) async fn load<S: ContractStore>(
    store: &S,
    reference: &str,
) -> (LoadedContract, Contract) {
    let loaded = store
        .load_contract(reference)
        .await
        .expect("load_contract")
        .unwrap_or_else(|| panic!("contract {reference} is missing"));
    let contract = loaded
        .contract
        .clone()
        .unwrap_or_else(|error| panic!("contract {reference} is invalid: {error}"));
    (loaded, contract)
}

async fn event_keys<S: ContractStore>(store: &S, reference: &str) -> Vec<String> {
    store
        .events(reference)
        .await
        .expect("events")
        .into_iter()
        .map(|event| event.transition_key)
        .collect()
}

pub(crate) fn event(kind: EventKind, key: Option<&str>) -> ContractEvent {
    ContractEvent {
        kind,
        effective_on: date("2024-07-01"),
        line_ref: None,
        details: json!({ "kind": kind.as_str(), "n": 1 }),
        transition_key: key.map(str::to_string),
    }
}

/// The change of a loaded contract to `contract`.
pub(crate) fn change(
    loaded: &LoadedContract,
    contract: Contract,
    events: Vec<ContractEvent>,
) -> ContractChange {
    let before = loaded.contract.as_ref().expect("a valid stored contract");
    ContractChange::new(loaded.id, loaded.version, before, contract, events)
}

pub(crate) fn run_key(job: Job, zone: &str, business_date: &str) -> RunKey {
    RunKey {
        job,
        zone: zone.to_string(),
        business_date: date(business_date),
    }
}

pub(crate) async fn claim<S: ContractStore>(
    store: &S,
    key: &RunKey,
    owner: &str,
    now: i64,
) -> RunClaim {
    store
        .claim_run(key, owner, now, LEASE)
        .await
        .expect("claim_run")
        .unwrap_or_else(|| panic!("{owner} could not claim {key:?} at {now}"))
}

pub(crate) fn progress(
    claim: &RunClaim,
    cursor: Option<BatchCursor>,
    counts: RunCounts,
) -> BatchProgress<'_> {
    BatchProgress {
        claim,
        cursor,
        counts,
        lease_until_ms: NOW + 10 * LEASE,
        closes_run: false,
    }
}

pub(crate) fn counts(examined: i64, changed: i64, skipped: i64) -> RunCounts {
    RunCounts {
        examined,
        changed,
        skipped,
    }
}
