//! One conformance suite for every `ContractStore`: each test is a generic function run on
//! SQLite and on PostgreSQL, each time on a brand-new database, so both backends are held to
//! exactly the same behaviour.
//!
//! PostgreSQL tests need the server at `CONTRACTD_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and fail when it is unreachable.

use crate::support;

use chrono::NaiveDate;
use contractd::contract::{Contract, ContractEvent, ContractStatus, EventKind};
use contractd::lifecycle::{DueDates, Job};
use contractd::storage::sqlite::RETRY_FAILED_RUN_AFTER_MS;
use contractd::storage::{
    BatchCursor, BatchProgress, CommitOutcome, ContractChange, ContractImport, ContractStore,
    LoadedContract, NewContract, RunClaim, RunCounts, RunKey, RunStatus, StorageError,
};
use serde_json::json;
use support::{contract_from_json, date, RawDb};

crate::both_databases! {
    store: [
        round_trip_keeps_every_child_kind_and_the_pending_cancellation,
        round_trip_of_a_minimal_contract,
        duplicate_ref_is_refused_and_nothing_is_written,
        import_writes_chunks_into_one_transaction_committed_only_when_asked,
        large_import_crosses_chunks_all_or_nothing,
        existing_references_lists_only_known_refs,
        contracts_page_walks_by_id,
        due_batch_returns_due_rows_of_the_zone_in_due_then_id_order,
        commit_batch_applies_changes_with_events_and_bumps_the_version,
        commit_batch_writes_what_changed_from_the_state_read,
        commit_batch_refuses_a_stale_version_as_a_conflict,
        commit_batch_applies_two_changes_of_one_contract_in_order,
        commit_batch_treats_a_renamed_contract_as_a_conflict,
        commit_batch_rolls_back_the_whole_batch_on_a_duplicate_transition,
        commit_batch_advances_the_ledger,
        claim_run_lease_and_takeover,
        succeeded_run_is_never_claimed_again,
        failed_run_is_retried_after_the_pause,
        released_run_is_taken_over_at_once_with_its_progress,
        succeeded_runs_since_lists_only_succeeded_runs,
        runs_are_listed_newest_first,
        count_by_status_counts_each_status,
        events_are_listed_oldest_first,
        zones_are_listed_once_in_byte_order,
        concurrent_claims_and_commits_have_one_winner,
    ],
    store_and_raw: [
        invalid_rows_come_back_as_errors_without_failing_the_batch,
    ],
    empty_store: [
        migrate_twice_then_ready,
    ],
}

/// "Now" for every write (Unix ms).
const NOW: i64 = 1_720_000_000_000;

/// A lease long enough for any test.
const LEASE: i64 = 60_000;

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

fn plain(reference: &str, zone: &str, end: Option<&str>) -> Contract {
    contract_from_json(&plain_json(reference, zone, end))
}

/// A contract with every kind of child, a pending cancellation and every optional field.
fn rich(reference: &str) -> Contract {
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

async fn insert<S: ContractStore>(store: &S, contracts: Vec<Contract>) {
    let news: Vec<NewContract> = contracts.into_iter().map(new).collect();
    store
        .insert_contracts(&news, NOW)
        .await
        .expect("insert_contracts");
}

/// The stored row of `reference`, which must exist and be valid.
async fn load<S: ContractStore>(store: &S, reference: &str) -> (LoadedContract, Contract) {
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

fn event(kind: EventKind, key: Option<&str>) -> ContractEvent {
    ContractEvent {
        kind,
        effective_on: date("2024-07-01"),
        line_ref: None,
        details: json!({ "kind": kind.as_str(), "n": 1 }),
        transition_key: key.map(str::to_string),
    }
}

/// The change of a loaded contract to `contract`.
fn change(
    loaded: &LoadedContract,
    contract: Contract,
    events: Vec<ContractEvent>,
) -> ContractChange {
    let before = loaded.contract.as_ref().expect("a valid stored contract");
    ContractChange::new(loaded.id, loaded.version, before, contract, events)
}

fn run_key(job: Job, zone: &str, business_date: &str) -> RunKey {
    RunKey {
        job,
        zone: zone.to_string(),
        business_date: date(business_date),
    }
}

async fn claim<S: ContractStore>(store: &S, key: &RunKey, owner: &str, now: i64) -> RunClaim {
    store
        .claim_run(key, owner, now, LEASE)
        .await
        .expect("claim_run")
        .unwrap_or_else(|| panic!("{owner} could not claim {key:?} at {now}"))
}

fn progress(claim: &RunClaim, cursor: Option<BatchCursor>, counts: RunCounts) -> BatchProgress<'_> {
    BatchProgress {
        claim,
        cursor,
        counts,
        lease_until_ms: NOW + 10 * LEASE,
    }
}

fn counts(examined: i64, changed: i64, skipped: i64) -> RunCounts {
    RunCounts {
        examined,
        changed,
        skipped,
    }
}

// ---------------------------------------------------------------------------------------
// Schema

async fn migrate_twice_then_ready<S: ContractStore>(store: S) {
    assert!(
        !store.readiness().await.expect("readiness before migrate"),
        "a database without tables is not ready"
    );
    store.migrate().await.expect("first migrate");
    store.migrate().await.expect("second migrate");
    assert!(store.readiness().await.expect("readiness after migrate"));
    assert!(store.zones().await.expect("zones").is_empty());
    assert!(store.count_by_status().await.expect("count").is_empty());
    assert!(store.runs(10).await.expect("runs").is_empty());
}

// ---------------------------------------------------------------------------------------
// Import and reading

async fn round_trip_keeps_every_child_kind_and_the_pending_cancellation<S: ContractStore>(
    store: S,
) {
    let original = rich("RICH-1");
    assert!(original.cancellation.is_some());
    assert!(original.lines[0].cancellation.is_some());
    insert(&store, vec![original.clone()]).await;

    let (loaded, contract) = load(&store, "RICH-1").await;
    assert_eq!(contract, original);
    assert_eq!(loaded.reference, "RICH-1");
    assert_eq!(loaded.version, 1);
    assert_eq!(loaded.due, None);
    assert!(loaded.id > 0);

    let page = store.contracts_page(0, 10).await.expect("contracts_page");
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, loaded.id);
    assert_eq!(page[0].contract.as_ref().ok(), Some(&original));

    let events = store.events("RICH-1").await.expect("events");
    assert_eq!(events.len(), 1);
    let imported = &events[0];
    assert_eq!(imported.kind, "imported");
    assert_eq!(imported.effective_on, imported_on());
    assert_eq!(imported.line_ref, None);
    assert_eq!(imported.details, json!({ "status": "active" }));
    assert_eq!(imported.transition_key, "imported");
    assert_eq!(imported.run_id, None);
    assert_eq!(imported.recorded_at_ms, NOW);

    assert!(store.load_contract("NOPE").await.expect("load").is_none());
    assert!(store.events("NOPE").await.expect("events").is_empty());
}

async fn round_trip_of_a_minimal_contract<S: ContractStore>(store: S) {
    let minimal = contract_from_json(
        r#"{"ref":"MIN","customer":"c","start_date":"2024-02-29","cancellation_window":"end_of_year","auto_extend":false}"#,
    );
    let evergreen = plain("EVERGREEN", "Pacific/Chatham", None);
    insert(&store, vec![minimal.clone(), evergreen.clone()]).await;
    assert_eq!(load(&store, "MIN").await.1, minimal);
    assert_eq!(load(&store, "EVERGREEN").await.1, evergreen);
    assert_eq!(
        store.zones().await.expect("zones"),
        vec!["Pacific/Chatham".to_string(), "UTC".to_string()]
    );
}

async fn duplicate_ref_is_refused_and_nothing_is_written<S: ContractStore>(store: S) {
    insert(
        &store,
        vec![plain("A", "Europe/Berlin", Some("2024-12-31"))],
    )
    .await;

    let batch = vec![
        new(plain("B", "Asia/Tokyo", Some("2024-12-31"))),
        new(plain("A", "Europe/Berlin", Some("2025-12-31"))),
        new(rich("C")),
    ];
    match store.insert_contracts(&batch, NOW).await {
        Err(StorageError::DuplicateReference(reference)) => assert_eq!(reference, "A"),
        other => panic!("expected DuplicateReference(A), got {other:?}"),
    }
    // All or nothing: neither B (before the duplicate) nor C (after it) was written.
    assert!(store.load_contract("B").await.expect("load").is_none());
    assert!(store.load_contract("C").await.expect("load").is_none());
    assert!(store.events("B").await.expect("events").is_empty());
    assert_eq!(
        store.zones().await.expect("zones"),
        vec!["Europe/Berlin".to_string()]
    );
    assert_eq!(
        store.count_by_status().await.expect("count"),
        vec![("active".to_string(), 1)]
    );
    let (_, a) = load(&store, "A").await;
    assert_eq!(
        a.end_date,
        Some(date("2024-12-31")),
        "the existing A is untouched"
    );

    // A ref given twice in one import is a duplicate too: the second one is named.
    let twice = vec![
        new(plain("D", "UTC", None)),
        new(plain("E", "UTC", None)),
        new(plain("D", "UTC", None)),
    ];
    match store.insert_contracts(&twice, NOW).await {
        Err(StorageError::DuplicateReference(reference)) => assert_eq!(reference, "D"),
        other => panic!("expected DuplicateReference(D), got {other:?}"),
    }
    assert!(store
        .existing_references(&["D".to_string(), "E".to_string()])
        .await
        .expect("existing")
        .is_empty());

    // The first offending ref in input order is the one named.
    let two_problems = vec![
        new(plain("F", "UTC", None)),
        new(plain("F", "UTC", None)),
        new(plain("A", "UTC", None)),
    ];
    match store.insert_contracts(&two_problems, NOW).await {
        Err(StorageError::DuplicateReference(reference)) => assert_eq!(reference, "F"),
        other => panic!("expected DuplicateReference(F), got {other:?}"),
    }
    let two_problems = vec![
        new(plain("G", "UTC", None)),
        new(plain("A", "UTC", None)),
        new(plain("G", "UTC", None)),
    ];
    match store.insert_contracts(&two_problems, NOW).await {
        Err(StorageError::DuplicateReference(reference)) => assert_eq!(reference, "A"),
        other => panic!("expected DuplicateReference(A), got {other:?}"),
    }
    assert_eq!(
        store.count_by_status().await.expect("count"),
        vec![("active".to_string(), 1)]
    );
    assert!(store.insert_contracts(&[], NOW).await.is_ok());
}

async fn import_writes_chunks_into_one_transaction_committed_only_when_asked<S: ContractStore>(
    store: S,
) {
    insert(&store, vec![plain("A", "UTC", None)]).await;

    // Existing refs are skipped and named, the import goes on; dropped, it leaves nothing.
    let mut import = store.begin_import().await.expect("begin");
    let skipped = import
        .insert(
            &[
                new(plain("B", "UTC", None)),
                new(plain("A", "UTC", None)),
                new(rich("C")),
            ],
            NOW,
        )
        .await
        .expect("insert");
    assert_eq!(skipped, vec!["A".to_string()]);
    let skipped = import
        .insert(
            &[
                new(plain("D", "Asia/Tokyo", None)),
                new(plain("B", "UTC", None)),
            ],
            NOW,
        )
        .await
        .expect("insert");
    assert_eq!(
        skipped,
        vec!["B".to_string()],
        "B came earlier in the import"
    );
    assert!(
        store.load_contract("B").await.expect("load").is_none(),
        "nothing is visible before the commit"
    );
    drop(import);
    for reference in ["B", "C", "D"] {
        assert!(store
            .load_contract(reference)
            .await
            .expect("load")
            .is_none());
    }
    assert_eq!(store.zones().await.expect("zones"), vec!["UTC".to_string()]);

    // Committed, every chunk is there with its events and zones.
    let mut import = store.begin_import().await.expect("begin");
    for chunk in [
        vec![new(rich("C"))],
        vec![new(plain("D", "Asia/Tokyo", None))],
    ] {
        assert!(import.insert(&chunk, NOW).await.expect("insert").is_empty());
    }
    import.commit().await.expect("commit");
    assert_eq!(load(&store, "C").await.1, rich("C"));
    assert_eq!(event_keys(&store, "D").await, vec!["imported"]);
    assert_eq!(
        store.zones().await.expect("zones"),
        vec![
            "Asia/Tokyo".to_string(),
            "Europe/Berlin".to_string(),
            "UTC".to_string()
        ]
    );
}

async fn large_import_crosses_chunks_all_or_nothing<S: ContractStore>(store: S) {
    const COUNT: usize = 2_500;
    let contract = |index: usize| {
        if index.is_multiple_of(100) {
            rich(&format!("BULK-{index:05}"))
        } else {
            plain(
                &format!("BULK-{index:05}"),
                ["Europe/Berlin", "America/New_York", "Asia/Kolkata"][index % 3],
                Some("2025-06-30"),
            )
        }
    };
    // A duplicate far into the input (another chunk than the original) fails it all.
    let mut with_duplicate: Vec<NewContract> = (0..COUNT).map(|i| new(contract(i))).collect();
    with_duplicate[2_100] = new(contract(5));
    match store.insert_contracts(&with_duplicate, NOW).await {
        Err(StorageError::DuplicateReference(reference)) => assert_eq!(reference, "BULK-00005"),
        other => panic!("expected DuplicateReference(BULK-00005), got {other:?}"),
    }
    assert!(store.count_by_status().await.expect("count").is_empty());
    assert!(store.zones().await.expect("zones").is_empty());
    assert!(store.contracts_page(0, 10).await.expect("page").is_empty());

    let all: Vec<NewContract> = (0..COUNT).map(|i| new(contract(i))).collect();
    store.insert_contracts(&all, NOW).await.expect("import");
    assert_eq!(
        store.count_by_status().await.expect("count"),
        vec![("active".to_string(), COUNT as i64)]
    );
    for index in [0, 1, 999, 1_000, 1_001, 2_000, 2_100, COUNT - 1] {
        let reference = format!("BULK-{index:05}");
        assert_eq!(load(&store, &reference).await.1, contract(index));
        assert_eq!(event_keys(&store, &reference).await, vec!["imported"]);
    }
    // Ids follow the input order.
    let mut after = 0;
    let mut seen = Vec::new();
    loop {
        let page = store.contracts_page(after, 700).await.expect("page");
        let Some(last) = page.last() else { break };
        after = last.id;
        seen.extend(page.into_iter().map(|loaded| loaded.reference));
    }
    let expected: Vec<String> = (0..COUNT).map(|i| format!("BULK-{i:05}")).collect();
    assert_eq!(seen, expected);
    assert_eq!(
        store.zones().await.expect("zones"),
        vec!["America/New_York", "Asia/Kolkata", "Europe/Berlin"]
    );
}

async fn existing_references_lists_only_known_refs<S: ContractStore>(store: S) {
    insert(
        &store,
        vec![
            plain("K-1", "UTC", None),
            plain("K-2", "UTC", None),
            plain("K-3", "UTC", None),
        ],
    )
    .await;
    let asked: Vec<String> = ["K-3", "X", "K-1", "k-2", ""]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut found = store.existing_references(&asked).await.expect("existing");
    found.sort();
    assert_eq!(
        found,
        vec!["K-1", "K-3"],
        "exact, case-sensitive matches only"
    );
    assert!(store
        .existing_references(&[])
        .await
        .expect("existing")
        .is_empty());
    // Many refs at once (more than one lookup chunk on either backend).
    let many: Vec<String> = (0..12_000)
        .map(|i| format!("K-{i}"))
        .chain(["K-2".to_string()])
        .collect();
    let mut found = store.existing_references(&many).await.expect("existing");
    found.sort();
    found.dedup();
    assert_eq!(found, vec!["K-1", "K-2", "K-3"]);
}

async fn contracts_page_walks_by_id<S: ContractStore>(store: S) {
    insert(
        &store,
        vec![
            plain("P-3", "UTC", None),
            plain("P-1", "UTC", None),
            rich("P-5"),
        ],
    )
    .await;
    insert(
        &store,
        vec![plain("P-2", "UTC", None), plain("P-4", "UTC", None)],
    )
    .await;
    let mut after = 0;
    let mut pages = Vec::new();
    loop {
        let page = store.contracts_page(after, 2).await.expect("page");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        for loaded in &page {
            assert!(loaded.id > after, "ids strictly increase");
            assert!(loaded.contract.is_ok());
            after = loaded.id;
        }
        pages.push(
            page.into_iter()
                .map(|loaded| loaded.reference)
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(
        pages,
        vec![vec!["P-3", "P-1"], vec!["P-5", "P-2"], vec!["P-4"]],
        "insertion (id) order, not ref order"
    );
    let (p5, _) = load(&store, "P-5").await;
    let from_p5 = store.contracts_page(p5.id, 10).await.expect("page");
    assert_eq!(
        from_p5
            .iter()
            .map(|l| l.reference.as_str())
            .collect::<Vec<_>>(),
        vec!["P-2", "P-4"]
    );
    assert_eq!(from_p5.len(), 2);
    assert!(store.contracts_page(0, 0).await.expect("page").is_empty());
}

/// Contracts with something due for each job in two zones (see the due dates in the names).
fn due_fixture() -> Vec<Contract> {
    let with_line = contract_from_json(
        r#"{"ref":"X3-end-0131-with-line","customer":"c","time_zone":"Europe/Berlin",
            "start_date":"2024-01-01","end_date":"2024-01-31","cancellation_window":"end_of_term",
            "auto_extend":false,
            "lines":[{"ref":"L","kind":"recurring_fixed","billable":true,"start_date":"2024-01-01",
                      "end_date":"2024-01-31","amount_minor":100,"currency":"EUR",
                      "billing_period":"1M"}],
            "schedules":[{"line_ref":"L","period_start":"2024-01-01","period_end":"2024-01-31",
                          "amount_minor":100,"status":"planned"}]}"#
            .replace('\n', " ")
            .as_str(),
    );
    let mut extending = contract_from_json(
        r#"{"ref":"X5-deadline-0531","customer":"c","time_zone":"Europe/Berlin",
            "start_date":"2023-09-01","end_date":"2024-08-31","notice_period":"3M",
            "cancellation_window":"end_of_term","auto_extend":true,"extension_term":"1M"}"#
            .replace('\n', " ")
            .as_str(),
    );
    extending.latest_cancellation_date = Some(date("2024-05-31"));
    let mut later = contract_from_json(
        r#"{"ref":"X4-not-due","customer":"c","time_zone":"Europe/Berlin",
            "start_date":"2024-01-01","end_date":"2024-12-31","notice_period":"3M",
            "cancellation_window":"end_of_term","auto_extend":true,"extension_term":"12M"}"#
            .replace('\n', " ")
            .as_str(),
    );
    later.latest_cancellation_date = Some(date("2024-09-30"));
    let cancelling = contract_from_json(
        r#"{"ref":"X6-cancel-0615","customer":"c","time_zone":"Europe/Berlin",
            "start_date":"2024-01-01","end_date":"2024-12-31","cancellation_window":"end_of_month",
            "auto_extend":false,
            "cancellation":{"received_on":"2024-05-01","end_date":"2024-06-15"}}"#
            .replace('\n', " ")
            .as_str(),
    );
    let draft = contract_from_json(
        r#"{"ref":"X7-draft","customer":"c","status":"draft","time_zone":"Europe/Berlin",
            "start_date":"2024-01-01","end_date":"2024-02-29","cancellation_window":"end_of_term",
            "auto_extend":false}"#
            .replace('\n', " ")
            .as_str(),
    );
    let mut evergreen = plain("X8-evergreen", "Europe/Berlin", None);
    evergreen.latest_cancellation_date = Some(date("2024-06-20"));
    vec![
        plain("X1-end-0331", "Europe/Berlin", Some("2024-03-31")),
        plain("X2-end-0331", "Europe/Berlin", Some("2024-03-31")),
        with_line,
        later,
        extending,
        cancelling,
        draft,
        evergreen,
        plain("N1-other-zone", "America/New_York", Some("2024-01-31")),
        plain("X9-end-0630", "Europe/Berlin", Some("2024-06-30")),
        plain("X10-end-0701", "Europe/Berlin", Some("2024-07-01")),
    ]
}

async fn due_batch_returns_due_rows_of_the_zone_in_due_then_id_order<S: ContractStore>(store: S) {
    let fixture = due_fixture();
    insert(&store, fixture.clone()).await;
    let mut ids = Vec::new();
    for contract in &fixture {
        ids.push(load(&store, &contract.reference).await.0.id);
    }
    let business_date = date("2024-07-01");
    for job in Job::ALL.iter().copied() {
        // What the store must return: the zone's contracts whose due date for the job is
        // before the business date, by (due, id).
        let mut expected: Vec<(NaiveDate, i64, &Contract)> = fixture
            .iter()
            .zip(&ids)
            .filter(|(contract, _)| contract.time_zone.name() == "Europe/Berlin")
            .filter_map(|(contract, id)| {
                let due = DueDates::of(contract).for_job(job)?;
                (due < business_date).then_some((due, *id, contract))
            })
            .collect();
        expected.sort_by_key(|(due, id, _)| (*due, *id));

        for limit in [1, 2, 100] {
            let mut got = Vec::new();
            let mut cursor = None;
            loop {
                let batch = store
                    .due_batch(job, "Europe/Berlin", business_date, cursor, limit)
                    .await
                    .expect("due_batch");
                assert!(batch.len() <= limit as usize);
                let Some(last) = batch.last() else { break };
                cursor = Some(BatchCursor {
                    due: last.due.expect("a due row carries its due date"),
                    id: last.id,
                });
                let full = batch.len() == limit as usize;
                got.extend(batch);
                if !full {
                    break;
                }
            }
            assert_eq!(
                got.iter()
                    .map(|l| (l.due, l.id, l.reference.clone()))
                    .collect::<Vec<_>>(),
                expected
                    .iter()
                    .map(|(due, id, c)| (Some(*due), *id, c.reference.clone()))
                    .collect::<Vec<_>>(),
                "{job} with limit {limit}"
            );
            for (loaded, (_, _, contract)) in got.iter().zip(&expected) {
                assert_eq!(loaded.contract.as_ref().ok(), Some(*contract), "{job}");
                assert_eq!(loaded.version, 1);
            }
        }
    }

    // Expiry: the documented meaning of its due date, checked on concrete rows.
    let expiring: Vec<String> = store
        .due_batch(Job::Expire, "Europe/Berlin", business_date, None, 100)
        .await
        .expect("due_batch")
        .into_iter()
        .map(|loaded| loaded.reference)
        .collect();
    for reference in [
        "X3-end-0131-with-line",
        "X1-end-0331",
        "X2-end-0331",
        "X9-end-0630",
    ] {
        assert!(
            expiring.contains(&reference.to_string()),
            "{reference} in {expiring:?}"
        );
    }
    let position = |reference: &str| expiring.iter().position(|r| r == reference);
    assert!(position("X3-end-0131-with-line") < position("X1-end-0331"));
    assert!(
        position("X1-end-0331") < position("X2-end-0331"),
        "tie: by id"
    );
    assert!(!expiring.contains(&"X4-not-due".to_string()));
    assert!(
        !expiring.contains(&"X10-end-0701".to_string()),
        "due < D only"
    );
    let with_line = store
        .due_batch(Job::Expire, "Europe/Berlin", business_date, None, 1)
        .await
        .expect("due_batch");
    assert_eq!(with_line[0].reference, "X3-end-0131-with-line");
    let loaded = with_line[0].contract.as_ref().expect("valid");
    assert_eq!(loaded.lines.len(), 1, "children are loaded");
    assert_eq!(loaded.schedules.len(), 1, "children are loaded");

    // Other zones and earlier business dates.
    let other = store
        .due_batch(Job::Expire, "America/New_York", business_date, None, 100)
        .await
        .expect("due_batch");
    assert_eq!(
        other
            .iter()
            .map(|l| l.reference.as_str())
            .collect::<Vec<_>>(),
        vec!["N1-other-zone"]
    );
    assert!(store
        .due_batch(Job::Expire, "Asia/Tokyo", business_date, None, 100)
        .await
        .expect("due_batch")
        .is_empty());
    assert!(store
        .due_batch(Job::Expire, "Europe/Berlin", date("2024-01-01"), None, 100)
        .await
        .expect("due_batch")
        .is_empty());
}

async fn invalid_rows_come_back_as_errors_without_failing_the_batch<S: ContractStore>(
    store: S,
    raw: RawDb,
) {
    let with_line = contract_from_json(
        &r#"{"ref":"BAD-LINE","customer":"c","time_zone":"Europe/Berlin",
            "start_date":"2024-01-01","end_date":"2024-03-31","cancellation_window":"end_of_term",
            "auto_extend":false,
            "lines":[{"ref":"L","kind":"one_time","billable":true,"start_date":"2024-01-01",
                      "amount_minor":100,"currency":"EUR"}]}"#
            .replace('\n', " "),
    );
    insert(
        &store,
        vec![
            plain("GOOD", "Europe/Berlin", Some("2024-03-31")),
            plain("BAD-NOTICE", "Europe/Berlin", Some("2024-03-31")),
            with_line,
            plain("BAD-ZONE", "Europe/Berlin", Some("2024-03-31")),
        ],
    )
    .await;
    // Another system writes rows contractd would never write.
    assert_eq!(
        raw.execute("UPDATE contracts SET notice_period = '5X' WHERE ref = 'BAD-NOTICE'")
            .await,
        1
    );
    assert_eq!(
        raw.execute("UPDATE contract_lines SET kind = 'subscription'")
            .await,
        1
    );
    assert_eq!(
        raw.execute("UPDATE contracts SET time_zone = 'Mars/Olympus' WHERE ref = 'BAD-ZONE'")
            .await,
        1
    );

    let field_errors = |loaded: &LoadedContract| -> Vec<String> {
        match &loaded.contract {
            Ok(_) => panic!("{} should be invalid", loaded.reference),
            Err(invalid) => {
                assert_eq!(
                    invalid.reference.as_deref(),
                    Some(loaded.reference.as_str())
                );
                invalid.errors.iter().map(|e| e.field.clone()).collect()
            }
        }
    };

    let batch = store
        .due_batch(Job::Expire, "Europe/Berlin", date("2024-07-01"), None, 10)
        .await
        .expect("an invalid row must not fail the batch");
    assert_eq!(
        batch
            .iter()
            .map(|l| l.reference.as_str())
            .collect::<Vec<_>>(),
        vec!["GOOD", "BAD-NOTICE", "BAD-LINE"]
    );
    assert!(batch[0].contract.is_ok());
    assert_eq!(field_errors(&batch[1]), vec!["notice_period"]);
    assert_eq!(field_errors(&batch[2]), vec!["lines[0].kind"]);
    for loaded in &batch {
        assert!(loaded.due.is_some_and(|due| due < date("2024-07-01")));
        assert_eq!(loaded.version, 1);
    }

    let mars = store
        .due_batch(Job::Expire, "Mars/Olympus", date("2024-07-01"), None, 10)
        .await
        .expect("due_batch");
    assert_eq!(mars.len(), 1);
    assert_eq!(field_errors(&mars[0]), vec!["time_zone"]);
    let message = mars[0]
        .contract
        .as_ref()
        .err()
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(message.contains("Mars/Olympus"), "{message}");

    let loaded = store
        .load_contract("BAD-ZONE")
        .await
        .expect("load")
        .expect("exists");
    assert_eq!(field_errors(&loaded), vec!["time_zone"]);
    let page = store.contracts_page(0, 10).await.expect("page");
    assert_eq!(page.len(), 4);
    assert_eq!(page.iter().filter(|l| l.contract.is_err()).count(), 3);
}

// ---------------------------------------------------------------------------------------
// Guarded batch commits

async fn commit_batch_applies_changes_with_events_and_bumps_the_version<S: ContractStore>(
    store: S,
) {
    insert(
        &store,
        vec![rich("CH-1"), plain("CH-2", "UTC", Some("2024-12-31"))],
    )
    .await;
    let (loaded_1, mut contract_1) = load(&store, "CH-1").await;
    let (loaded_2, mut contract_2) = load(&store, "CH-2").await;

    contract_1.cancellation = None;
    contract_1.auto_extend = true;
    contract_1.end_reason = None;
    contract_1.renewals.pop();
    contract_1.lines[1].description = "changed".to_string();
    contract_1.cancellation_date = Some(date("2025-09-30"));
    contract_1.latest_cancellation_date = Some(date("2025-06-30"));
    contract_2.status = ContractStatus::Expired;
    contract_2.end_notes = Some("expired by test".to_string());
    let mut line_event = event(EventKind::LineExpired, Some("line:L1:2024-07-01"));
    line_event.line_ref = Some("L1".to_string());
    line_event.details = json!({ "nested": { "a": [1, 2, 3] }, "text": "ü\"'" });

    let outcome = store
        .commit_batch(
            None,
            &[
                change(
                    &loaded_1,
                    contract_1.clone(),
                    vec![
                        event(EventKind::CancellationRevoked, None),
                        line_event.clone(),
                    ],
                ),
                change(
                    &loaded_2,
                    contract_2.clone(),
                    vec![event(EventKind::Expired, Some("expire:2024-12-31"))],
                ),
            ],
            NOW + 1,
        )
        .await
        .expect("commit_batch");
    assert_eq!(
        outcome,
        CommitOutcome {
            applied: 2,
            conflicts: 0
        }
    );

    let (after_1, stored_1) = load(&store, "CH-1").await;
    assert_eq!(after_1.version, 2);
    assert_eq!(after_1.id, loaded_1.id);
    assert_eq!(stored_1, contract_1);
    let (after_2, stored_2) = load(&store, "CH-2").await;
    assert_eq!(after_2.version, 2);
    assert_eq!(stored_2, contract_2);

    let events = store.events("CH-1").await.expect("events");
    assert_eq!(
        events
            .iter()
            .map(|e| e.transition_key.as_str())
            .collect::<Vec<_>>(),
        vec![
            "imported",
            "v2:0:cancellation_revoked",
            "line:L1:2024-07-01"
        ]
    );
    assert_eq!(events[1].kind, "cancellation_revoked");
    assert_eq!(events[1].effective_on, date("2024-07-01"));
    assert_eq!(events[1].run_id, None);
    assert_eq!(events[1].recorded_at_ms, NOW + 1);
    assert_eq!(events[2].line_ref.as_deref(), Some("L1"));
    assert_eq!(events[2].details, line_event.details);
    assert_eq!(
        event_keys(&store, "CH-2").await,
        vec!["imported", "expire:2024-12-31"]
    );
    assert_eq!(
        store.count_by_status().await.expect("count"),
        vec![("active".to_string(), 1), ("expired".to_string(), 1)]
    );

    // A second operator change on the new version gets its own version-based keys.
    let outcome = store
        .commit_batch(
            None,
            &[change(
                &after_1,
                stored_1.clone(),
                vec![event(EventKind::EndedEarly, None)],
            )],
            NOW + 2,
        )
        .await
        .expect("commit_batch");
    assert_eq!(outcome.applied, 1);
    assert_eq!(load(&store, "CH-1").await.0.version, 3);
    assert_eq!(
        event_keys(&store, "CH-1").await.last().map(String::as_str),
        Some("v3:0:ended_early")
    );

    // An empty batch is fine.
    assert_eq!(
        store.commit_batch(None, &[], NOW).await.expect("empty"),
        CommitOutcome::default()
    );
}

async fn commit_batch_writes_what_changed_from_the_state_read<S: ContractStore>(store: S) {
    insert(&store, vec![rich("KIDS")]).await;
    let original = load(&store, "KIDS").await;

    // A column and one child table changed: both are written, the other tables stay.
    let mut edited = original.1.clone();
    edited.customer = "written".to_string();
    edited.lines[0].description = "written too".to_string();
    store
        .commit_batch(None, &[change(&original.0, edited.clone(), vec![])], NOW)
        .await
        .expect("commit");
    let (after, stored) = load(&store, "KIDS").await;
    assert_eq!(stored, edited);

    // Only what differs from the state the change was computed from is written: a change
    // computed from a state whose documents were already gone leaves the stored ones alone.
    let mut assumed = stored.clone();
    assumed.documents.clear();
    let mut next = assumed.clone();
    next.end_notes = Some("noted".to_string());
    let partial = ContractChange::new(after.id, after.version, &assumed, next, vec![]);
    assert!(!partial.changes_children());
    store
        .commit_batch(None, &[partial], NOW)
        .await
        .expect("commit");
    let (after, stored) = load(&store, "KIDS").await;
    assert_eq!(stored.end_notes.as_deref(), Some("noted"));
    assert_eq!(stored.documents, edited.documents);

    // Every child table rewritten, in the new order.
    let mut rewritten = stored.clone();
    rewritten.lines.reverse();
    rewritten.schedules.truncate(1);
    rewritten.documents.reverse();
    rewritten.renewals.clear();
    rewritten.change_requests.reverse();
    store
        .commit_batch(None, &[change(&after, rewritten.clone(), vec![])], NOW)
        .await
        .expect("commit");
    let (after, stored) = load(&store, "KIDS").await;
    assert_eq!(stored, rewritten);

    // Down to no children at all, and back.
    let mut bare = stored.clone();
    bare.cancellation = None;
    bare.lines.clear();
    bare.schedules.clear();
    bare.documents.clear();
    bare.change_requests.clear();
    store
        .commit_batch(None, &[change(&after, bare.clone(), vec![])], NOW)
        .await
        .expect("commit");
    let (after, stored) = load(&store, "KIDS").await;
    assert_eq!(stored, bare);
    store
        .commit_batch(None, &[change(&after, original.1.clone(), vec![])], NOW)
        .await
        .expect("commit");
    let (after, stored) = load(&store, "KIDS").await;
    assert_eq!(stored, original.1);
    assert_eq!(after.version, 6);
}

async fn commit_batch_refuses_a_stale_version_as_a_conflict<S: ContractStore>(store: S) {
    insert(
        &store,
        vec![
            plain("STALE", "UTC", Some("2024-12-31")),
            plain("FRESH", "UTC", Some("2024-12-31")),
        ],
    )
    .await;
    let (stale, contract) = load(&store, "STALE").await;
    let (fresh, fresh_contract) = load(&store, "FRESH").await;
    let mut first = contract.clone();
    first.customer = "first writer".to_string();
    store
        .commit_batch(None, &[change(&stale, first.clone(), vec![])], NOW)
        .await
        .expect("commit");

    // The second writer read version 1 too: its change is a conflict, with no event, while
    // the other change of the batch goes through.
    let mut second = contract.clone();
    second.customer = "second writer".to_string();
    let mut fresh_change = fresh_contract.clone();
    fresh_change.customer = "fresh".to_string();
    let outcome = store
        .commit_batch(
            None,
            &[
                change(
                    &stale,
                    second,
                    vec![event(EventKind::Expired, Some("expire:x"))],
                ),
                change(
                    &fresh,
                    fresh_change.clone(),
                    vec![event(EventKind::Expired, Some("expire:x"))],
                ),
            ],
            NOW,
        )
        .await
        .expect("commit");
    assert_eq!(
        outcome,
        CommitOutcome {
            applied: 1,
            conflicts: 1
        }
    );
    let (after, stored) = load(&store, "STALE").await;
    assert_eq!(after.version, 2);
    assert_eq!(stored, first);
    assert_eq!(event_keys(&store, "STALE").await, vec!["imported"]);
    assert_eq!(load(&store, "FRESH").await.1, fresh_change);
    assert_eq!(
        event_keys(&store, "FRESH").await,
        vec!["imported", "expire:x"]
    );

    // A row that does not exist is a conflict as well.
    let mut ghost = change(&after, first, vec![event(EventKind::Expired, None)]);
    ghost.id = i64::MAX;
    let outcome = store
        .commit_batch(None, &[ghost], NOW)
        .await
        .expect("commit");
    assert_eq!(
        outcome,
        CommitOutcome {
            applied: 0,
            conflicts: 1
        }
    );
}

async fn commit_batch_applies_two_changes_of_one_contract_in_order<S: ContractStore>(store: S) {
    insert(&store, vec![rich("TWICE")]).await;
    let (loaded, contract) = load(&store, "TWICE").await;
    let mut first = contract.clone();
    first.customer = "first".to_string();
    first.renewals.clear();
    let mut second = first.clone();
    second.customer = "second".to_string();
    second.change_requests.clear();
    let mut second_change = change(
        &loaded,
        second.clone(),
        vec![event(EventKind::EndedEarly, None)],
    );
    second_change.expected_version = loaded.version + 1;
    let outcome = store
        .commit_batch(
            None,
            &[
                change(
                    &loaded,
                    first,
                    vec![event(EventKind::CancellationRevoked, None)],
                ),
                second_change,
            ],
            NOW,
        )
        .await
        .expect("commit");
    assert_eq!(
        outcome,
        CommitOutcome {
            applied: 2,
            conflicts: 0
        }
    );
    let (after, stored) = load(&store, "TWICE").await;
    assert_eq!(after.version, 3);
    assert_eq!(stored, second);
    assert_eq!(
        event_keys(&store, "TWICE").await,
        vec!["imported", "v2:0:cancellation_revoked", "v3:0:ended_early"]
    );

    // The same version twice: the second change lost the race.
    let mut a = stored.clone();
    a.customer = "a".to_string();
    let mut b = stored.clone();
    b.customer = "b".to_string();
    let outcome = store
        .commit_batch(
            None,
            &[change(&after, a.clone(), vec![]), change(&after, b, vec![])],
            NOW,
        )
        .await
        .expect("commit");
    assert_eq!(
        outcome,
        CommitOutcome {
            applied: 1,
            conflicts: 1
        }
    );
    assert_eq!(load(&store, "TWICE").await.1, a);
}

async fn commit_batch_treats_a_renamed_contract_as_a_conflict<S: ContractStore>(store: S) {
    insert(&store, vec![plain("NAME", "UTC", None)]).await;
    let (loaded, mut contract) = load(&store, "NAME").await;
    contract.reference = "OTHER-NAME".to_string();
    let outcome = store
        .commit_batch(None, &[change(&loaded, contract, vec![])], NOW)
        .await
        .expect("commit");
    assert_eq!(
        outcome,
        CommitOutcome {
            applied: 0,
            conflicts: 1
        }
    );
    assert_eq!(load(&store, "NAME").await.0.version, 1);
    assert!(store
        .load_contract("OTHER-NAME")
        .await
        .expect("load")
        .is_none());
}

async fn commit_batch_rolls_back_the_whole_batch_on_a_duplicate_transition<S: ContractStore>(
    store: S,
) {
    insert(
        &store,
        vec![
            rich("DUP-A"),
            plain("DUP-B", "UTC", Some("2024-12-31")),
            plain("DUP-C", "UTC", Some("2024-12-31")),
        ],
    )
    .await;
    let (b, contract_b) = load(&store, "DUP-B").await;
    store
        .commit_batch(
            None,
            &[change(
                &b,
                contract_b.clone(),
                vec![event(EventKind::Expired, Some("expire:2024-12-31"))],
            )],
            NOW,
        )
        .await
        .expect("first commit");

    let key = run_key(Job::Expire, "UTC", "2025-01-01");
    let run = claim(&store, &key, "worker", NOW).await;
    let (a, contract_a) = load(&store, "DUP-A").await;
    let (b, contract_b) = load(&store, "DUP-B").await;
    let mut changed_a = contract_a.clone();
    changed_a.customer = "changed".to_string();
    changed_a.lines.clear();
    changed_a.schedules.clear();
    let mut changed_b = contract_b.clone();
    changed_b.customer = "changed".to_string();
    let result = store
        .commit_batch(
            Some(progress(
                &run,
                Some(BatchCursor {
                    due: date("2024-12-31"),
                    id: b.id,
                }),
                counts(2, 2, 0),
            )),
            &[
                change(
                    &a,
                    changed_a,
                    vec![event(EventKind::Expired, Some("expire:2024-12-31"))],
                ),
                change(
                    &b,
                    changed_b,
                    vec![event(EventKind::Expired, Some("expire:2024-12-31"))],
                ),
            ],
            NOW,
        )
        .await;
    match result {
        Err(StorageError::DuplicateTransition {
            contract_ref,
            transition_key,
        }) => {
            assert_eq!(contract_ref, "DUP-B");
            assert_eq!(transition_key, "expire:2024-12-31");
        }
        other => panic!("expected DuplicateTransition, got {other:?}"),
    }
    // Nothing of the batch stuck: not A's update, children or event, not the ledger.
    let (a_after, a_stored) = load(&store, "DUP-A").await;
    assert_eq!(a_after.version, 1);
    assert_eq!(a_stored, contract_a);
    assert_eq!(event_keys(&store, "DUP-A").await, vec!["imported"]);
    assert_eq!(load(&store, "DUP-B").await.0.version, 2);
    let runs = store.runs(10).await.expect("runs");
    assert_eq!(runs[0].batches, 0);
    assert_eq!(runs[0].counts, RunCounts::default());

    // The same key twice within one change is a duplicate too.
    let (c, contract_c) = load(&store, "DUP-C").await;
    let result = store
        .commit_batch(
            None,
            &[change(
                &c,
                contract_c,
                vec![
                    event(EventKind::Expired, Some("same")),
                    event(EventKind::LineExpired, Some("same")),
                ],
            )],
            NOW,
        )
        .await;
    match result {
        Err(StorageError::DuplicateTransition {
            contract_ref,
            transition_key,
        }) => {
            assert_eq!(contract_ref, "DUP-C");
            assert_eq!(transition_key, "same");
        }
        other => panic!("expected DuplicateTransition, got {other:?}"),
    }
    assert_eq!(load(&store, "DUP-C").await.0.version, 1);
    assert_eq!(event_keys(&store, "DUP-C").await, vec!["imported"]);
}

async fn commit_batch_advances_the_ledger<S: ContractStore>(store: S) {
    insert(
        &store,
        vec![
            plain("LED-1", "UTC", Some("2024-03-31")),
            plain("LED-2", "UTC", Some("2024-04-30")),
        ],
    )
    .await;
    let key = run_key(Job::Expire, "UTC", "2024-07-01");
    let run = claim(&store, &key, "worker-1", NOW).await;
    let (one, contract_one) = load(&store, "LED-1").await;
    let (two, _) = load(&store, "LED-2").await;

    let first_cursor = BatchCursor {
        due: date("2024-03-31"),
        id: one.id,
    };
    let outcome = store
        .commit_batch(
            Some(progress(&run, Some(first_cursor), counts(1, 1, 0))),
            &[change(
                &one,
                contract_one,
                vec![event(EventKind::Expired, Some("expire:2024-03-31"))],
            )],
            NOW + 5,
        )
        .await
        .expect("first batch");
    assert_eq!(outcome.applied, 1);
    let runs = store.runs(10).await.expect("runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].batches, 1);
    assert_eq!(runs[0].counts, counts(1, 1, 0));
    assert_eq!(runs[0].status, RunStatus::Running);

    // A batch with no change still advances the ledger (examined rows that needed nothing).
    let second_cursor = BatchCursor {
        due: date("2024-04-30"),
        id: two.id,
    };
    store
        .commit_batch(
            Some(progress(&run, Some(second_cursor), counts(2, 1, 1))),
            &[],
            NOW + 6,
        )
        .await
        .expect("second batch");
    let runs = store.runs(10).await.expect("runs");
    assert_eq!(runs[0].batches, 2);
    assert_eq!(runs[0].counts, counts(2, 1, 1));

    let events = store.events("LED-1").await.expect("events");
    assert_eq!(events[1].run_id.as_deref(), Some(run.run_id.as_str()));
    assert_eq!(events[1].recorded_at_ms, NOW + 5);

    store
        .finish_run(&run, RunStatus::Succeeded, counts(2, 1, 1), None, NOW + 7)
        .await
        .expect("finish");
    // A finished run takes no more batches.
    match store
        .commit_batch(Some(progress(&run, None, counts(3, 1, 1))), &[], NOW + 8)
        .await
    {
        Err(StorageError::LeaseLost { run_id }) => assert_eq!(run_id, run.run_id),
        other => panic!("expected LeaseLost, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// The run ledger

async fn claim_run_lease_and_takeover<S: ContractStore>(store: S) {
    insert(
        &store,
        vec![plain("LEASE", "Europe/Berlin", Some("2024-03-31"))],
    )
    .await;
    let key = run_key(Job::Expire, "Europe/Berlin", "2024-07-01");

    let first = claim(&store, &key, "replica-a", NOW).await;
    assert_eq!(first.key, key);
    assert_eq!(first.attempts, 1);
    assert_eq!(first.cursor, None);
    assert_eq!(first.counts, RunCounts::default());

    // Live lease: nobody else gets it, not even at its last millisecond.
    for now in [NOW, NOW + 1, NOW + LEASE] {
        assert!(store
            .claim_run(&key, "replica-b", now, LEASE)
            .await
            .expect("claim")
            .is_none());
    }
    // Another key is independent.
    let other = claim(
        &store,
        &run_key(Job::AutoExtend, "Europe/Berlin", "2024-07-01"),
        "replica-b",
        NOW,
    )
    .await;
    assert_ne!(other.row_id, first.row_id);

    // Expired lease: taken over, with a new attempt id.
    let second = claim(&store, &key, "replica-b", NOW + LEASE + 1).await;
    assert_eq!(second.row_id, first.row_id);
    assert_ne!(second.run_id, first.run_id);
    assert_eq!(second.attempts, 2);

    // The old holder's batch is refused and rolled back, changes included.
    let (loaded, mut contract) = load(&store, "LEASE").await;
    contract.status = ContractStatus::Expired;
    let result = store
        .commit_batch(
            Some(progress(&first, None, counts(1, 1, 0))),
            &[change(
                &loaded,
                contract,
                vec![event(EventKind::Expired, Some("expire:2024-03-31"))],
            )],
            NOW + LEASE + 2,
        )
        .await;
    match result {
        Err(StorageError::LeaseLost { run_id }) => assert_eq!(run_id, first.run_id),
        other => panic!("expected LeaseLost, got {other:?}"),
    }
    let (after, stored) = load(&store, "LEASE").await;
    assert_eq!(after.version, 1);
    assert_eq!(stored.status, ContractStatus::Active);
    assert_eq!(event_keys(&store, "LEASE").await, vec!["imported"]);
    match store
        .finish_run(&first, RunStatus::Succeeded, counts(1, 1, 0), None, NOW)
        .await
    {
        Err(StorageError::LeaseLost { run_id }) => assert_eq!(run_id, first.run_id),
        other => panic!("expected LeaseLost, got {other:?}"),
    }

    let runs = store.runs(10).await.expect("runs");
    let record = runs.iter().find(|r| r.key == key).expect("run listed");
    assert_eq!(record.owner, "replica-b");
    assert_eq!(record.run_id, second.run_id);
    assert_eq!(record.status, RunStatus::Running);
    assert_eq!(record.attempts, 2);
    assert_eq!(record.started_at_ms, NOW, "the first attempt's start stays");
    assert_eq!(record.finished_at_ms, None);

    // The new holder commits normally.
    store
        .commit_batch(Some(progress(&second, None, counts(0, 0, 0))), &[], NOW)
        .await
        .expect("new holder commits");
}

async fn succeeded_run_is_never_claimed_again<S: ContractStore>(store: S) {
    let key = run_key(Job::RefreshDeadlines, "Asia/Tokyo", "2024-07-01");
    let run = claim(&store, &key, "a", NOW).await;
    store
        .finish_run(&run, RunStatus::Succeeded, counts(3, 2, 1), None, NOW + 9)
        .await
        .expect("finish");
    for now in [NOW + 10, NOW + LEASE * 1_000, i64::MAX / 2] {
        assert!(store
            .claim_run(&key, "b", now, LEASE)
            .await
            .expect("claim")
            .is_none());
    }
    let runs = store.runs(10).await.expect("runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Succeeded);
    assert_eq!(runs[0].counts, counts(3, 2, 1));
    assert_eq!(runs[0].finished_at_ms, Some(NOW + 9));
    assert_eq!(runs[0].attempts, 1);
    assert_eq!(runs[0].owner, "a");
}

async fn failed_run_is_retried_after_the_pause<S: ContractStore>(store: S) {
    let key = run_key(Job::ExecuteCancellations, "UTC", "2024-07-01");
    let run = claim(&store, &key, "a", NOW).await;
    store
        .commit_batch(
            Some(progress(
                &run,
                Some(BatchCursor {
                    due: date("2024-05-01"),
                    id: 42,
                }),
                counts(4, 1, 0),
            )),
            &[],
            NOW + 1,
        )
        .await
        .expect("batch");
    let failed_at = NOW + 2;
    store
        .finish_run(
            &run,
            RunStatus::Failed,
            counts(4, 1, 0),
            Some("database went away"),
            failed_at,
        )
        .await
        .expect("finish");
    let runs = store.runs(10).await.expect("runs");
    assert_eq!(runs[0].status, RunStatus::Failed);
    assert_eq!(runs[0].error.as_deref(), Some("database went away"));
    assert_eq!(runs[0].finished_at_ms, Some(failed_at));

    for now in [failed_at, failed_at + RETRY_FAILED_RUN_AFTER_MS] {
        assert!(
            store
                .claim_run(&key, "b", now, LEASE)
                .await
                .expect("claim")
                .is_none(),
            "a failed run waits {RETRY_FAILED_RUN_AFTER_MS} ms"
        );
    }
    let retry = claim(&store, &key, "b", failed_at + RETRY_FAILED_RUN_AFTER_MS + 1).await;
    assert_eq!(retry.attempts, 2);
    assert_ne!(retry.run_id, run.run_id);
    assert_eq!(
        retry.cursor,
        Some(BatchCursor {
            due: date("2024-05-01"),
            id: 42
        }),
        "the retry resumes after the last committed batch"
    );
    assert_eq!(retry.counts, counts(4, 1, 0));
    let runs = store.runs(10).await.expect("runs");
    assert_eq!(runs[0].status, RunStatus::Running);
    assert_eq!(runs[0].error, None);
    assert_eq!(runs[0].finished_at_ms, None);
    assert_eq!(runs[0].owner, "b");
}

async fn released_run_is_taken_over_at_once_with_its_progress<S: ContractStore>(store: S) {
    let key = run_key(Job::AutoExtend, "America/Santiago", "2024-09-08");
    let run = claim(&store, &key, "a", NOW).await;
    let cursor = BatchCursor {
        due: date("2024-06-30"),
        id: 7,
    };
    store
        .commit_batch(
            Some(progress(&run, Some(cursor), counts(5, 2, 1))),
            &[],
            NOW,
        )
        .await
        .expect("batch");
    store
        .finish_run(&run, RunStatus::Running, counts(5, 2, 1), None, NOW + 1)
        .await
        .expect("release");
    let runs = store.runs(10).await.expect("runs");
    assert_eq!(runs[0].status, RunStatus::Running);
    assert_eq!(runs[0].finished_at_ms, None);

    let next = claim(&store, &key, "b", NOW + 1).await;
    assert_eq!(next.cursor, Some(cursor));
    assert_eq!(next.counts, counts(5, 2, 1));
    assert_eq!(next.attempts, 2);
    assert_eq!(next.row_id, run.row_id);
}

async fn succeeded_runs_since_lists_only_succeeded_runs<S: ContractStore>(store: S) {
    let finished = [
        (
            run_key(Job::Expire, "UTC", "2024-06-29"),
            RunStatus::Succeeded,
        ),
        (
            run_key(Job::Expire, "UTC", "2024-06-30"),
            RunStatus::Succeeded,
        ),
        (
            run_key(Job::AutoExtend, "UTC", "2024-06-30"),
            RunStatus::Failed,
        ),
        (
            run_key(Job::Expire, "Asia/Tokyo", "2024-07-01"),
            RunStatus::Succeeded,
        ),
        (
            run_key(Job::RefreshDeadlines, "UTC", "2024-07-01"),
            RunStatus::Running,
        ),
    ];
    for (key, status) in &finished {
        let run = claim(&store, key, "a", NOW).await;
        store
            .finish_run(&run, *status, RunCounts::default(), None, NOW)
            .await
            .expect("finish");
    }
    claim(
        &store,
        &run_key(Job::ExecuteCancellations, "UTC", "2024-07-02"),
        "a",
        NOW,
    )
    .await;

    let mut since = store
        .succeeded_runs_since(date("2024-06-30"))
        .await
        .expect("succeeded_runs_since");
    since.sort_by_key(|key| (key.business_date, key.zone.clone(), key.job.as_str()));
    assert_eq!(
        since,
        vec![
            run_key(Job::Expire, "UTC", "2024-06-30"),
            run_key(Job::Expire, "Asia/Tokyo", "2024-07-01"),
        ]
    );
    assert!(store
        .succeeded_runs_since(date("2024-07-02"))
        .await
        .expect("since")
        .is_empty());
    assert_eq!(
        store
            .succeeded_runs_since(date("2000-01-01"))
            .await
            .expect("since")
            .len(),
        3
    );
}

async fn runs_are_listed_newest_first<S: ContractStore>(store: S) {
    // Claimed in this order; listed by business date (newest first), zone, then latest
    // claim first.
    let keys = [
        run_key(Job::Expire, "UTC", "2024-06-30"),
        run_key(Job::ExecuteCancellations, "Europe/Berlin", "2024-07-01"),
        run_key(Job::Expire, "Europe/Berlin", "2024-07-01"),
        run_key(Job::Expire, "America/New_York", "2024-07-01"),
        run_key(Job::AutoExtend, "Europe/Berlin", "2024-07-02"),
        run_key(Job::Expire, "MST", "2024-07-01"),
        run_key(Job::Expire, "Mexico/General", "2024-07-01"),
    ];
    for (index, key) in keys.iter().enumerate() {
        let run = claim(&store, key, &format!("owner-{index}"), NOW + index as i64).await;
        if index.is_multiple_of(2) {
            store
                .finish_run(
                    &run,
                    RunStatus::Failed,
                    counts(index as i64, 0, 0),
                    Some("boom"),
                    NOW + 100,
                )
                .await
                .expect("finish");
        }
    }
    let runs = store.runs(100).await.expect("runs");
    let listed: Vec<(String, String, &str)> = runs
        .iter()
        .map(|r| {
            (
                r.key.business_date.to_string(),
                r.key.zone.clone(),
                r.key.job.as_str(),
            )
        })
        .collect();
    let expected: Vec<(String, String, &str)> = [
        ("2024-07-02", "Europe/Berlin", "auto_extend"),
        ("2024-07-01", "America/New_York", "expire"),
        ("2024-07-01", "Europe/Berlin", "expire"),
        ("2024-07-01", "Europe/Berlin", "execute_cancellations"),
        ("2024-07-01", "MST", "expire"),
        ("2024-07-01", "Mexico/General", "expire"),
        ("2024-06-30", "UTC", "expire"),
    ]
    .iter()
    .map(|(date, zone, job)| (date.to_string(), zone.to_string(), *job))
    .collect();
    assert_eq!(
        listed, expected,
        "zones in byte order: MST before Mexico/General"
    );

    let berlin = &runs[0];
    assert_eq!(berlin.owner, "owner-4");
    assert_eq!(berlin.status, RunStatus::Failed);
    assert_eq!(berlin.error.as_deref(), Some("boom"));
    assert_eq!(berlin.counts, counts(4, 0, 0));
    assert_eq!(berlin.started_at_ms, NOW + 4);
    assert_eq!(berlin.finished_at_ms, Some(NOW + 100));
    assert_eq!(berlin.batches, 0);
    assert_eq!(berlin.attempts, 1);
    let new_york = &runs[1];
    assert_eq!(new_york.owner, "owner-3");
    assert_eq!(new_york.status, RunStatus::Running);
    assert_eq!(new_york.error, None);
    assert_eq!(new_york.finished_at_ms, None);

    let limited = store.runs(2).await.expect("runs");
    assert_eq!(limited.len(), 2);
    assert_eq!(limited[1].key, runs[1].key);
}

async fn count_by_status_counts_each_status<S: ContractStore>(store: S) {
    let with_status = |reference: &str, status: &str| {
        contract_from_json(&format!(
            r#"{{"ref":"{reference}","customer":"c","status":"{status}","start_date":"2024-01-01","end_date":"2024-12-31","cancellation_window":"end_of_term","auto_extend":false}}"#
        ))
    };
    insert(
        &store,
        vec![
            with_status("S1", "expired"),
            with_status("S2", "active"),
            with_status("S3", "draft"),
            with_status("S4", "active"),
            with_status("S5", "cancelled"),
            with_status("S6", "expired"),
            with_status("S7", "active"),
        ],
    )
    .await;
    assert_eq!(
        store.count_by_status().await.expect("count"),
        vec![
            ("active".to_string(), 3),
            ("cancelled".to_string(), 1),
            ("draft".to_string(), 1),
            ("expired".to_string(), 2),
        ]
    );
}

async fn events_are_listed_oldest_first<S: ContractStore>(store: S) {
    insert(&store, vec![plain("EV", "UTC", Some("2024-12-31"))]).await;
    let kinds = [
        vec![EventKind::CancellationRegistered],
        vec![
            EventKind::CancellationExecuted,
            EventKind::FinalInvoiceCreated,
            EventKind::CreditNoteCreated,
        ],
        vec![
            EventKind::CancellationRevoked,
            EventKind::DeadlinesRefreshed,
        ],
    ];
    for (round, batch) in kinds.iter().enumerate() {
        let (loaded, contract) = load(&store, "EV").await;
        let events = batch
            .iter()
            .enumerate()
            .map(|(index, kind)| {
                let mut e = event(*kind, None);
                e.effective_on =
                    date("2024-07-01") + chrono::Days::new((round * 10 + index) as u64);
                e
            })
            .collect();
        store
            .commit_batch(
                None,
                &[change(&loaded, contract, events)],
                NOW + round as i64,
            )
            .await
            .expect("commit");
    }
    let events = store.events("EV").await.expect("events");
    assert_eq!(
        events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        vec![
            "imported",
            "cancellation_registered",
            "cancellation_executed",
            "final_invoice_created",
            "credit_note_created",
            "cancellation_revoked",
            "deadlines_refreshed",
        ]
    );
    assert_eq!(
        events
            .iter()
            .map(|e| e.transition_key.as_str())
            .collect::<Vec<_>>(),
        vec![
            "imported",
            "v2:0:cancellation_registered",
            "v3:0:cancellation_executed",
            "v3:1:final_invoice_created",
            "v3:2:credit_note_created",
            "v4:0:cancellation_revoked",
            "v4:1:deadlines_refreshed",
        ]
    );
    assert_eq!(events[4].effective_on, date("2024-07-13"));
    assert_eq!(events[6].recorded_at_ms, NOW + 2);
}

async fn zones_are_listed_once_in_byte_order<S: ContractStore>(store: S) {
    insert(
        &store,
        vec![
            plain("Z1", "Mexico/General", None),
            plain("Z2", "MST", None),
            plain("Z3", "Europe/Berlin", None),
        ],
    )
    .await;
    insert(
        &store,
        vec![
            plain("Z4", "Europe/Berlin", None),
            plain("Z5", "America/Argentina/Buenos_Aires", None),
        ],
    )
    .await;
    assert_eq!(
        store.zones().await.expect("zones"),
        vec![
            "America/Argentina/Buenos_Aires",
            "Europe/Berlin",
            "MST",
            "Mexico/General",
        ]
    );
}

async fn concurrent_claims_and_commits_have_one_winner<S: ContractStore>(store: S) {
    // Replicas racing for one run: exactly one claim succeeds.
    let key = run_key(Job::Expire, "UTC", "2024-07-01");
    let claims = futures::future::join_all((0..8).map(|replica| {
        let store = store.clone();
        let key = key.clone();
        async move {
            store
                .claim_run(&key, &format!("replica-{replica}"), NOW, LEASE)
                .await
                .expect("claim_run")
        }
    }))
    .await;
    assert_eq!(claims.iter().filter(|claim| claim.is_some()).count(), 1);

    // Writers racing on one contract version: exactly one change is applied, with its event.
    insert(&store, vec![rich("RACE")]).await;
    let (loaded, contract) = load(&store, "RACE").await;
    let outcomes = futures::future::join_all((0..8).map(|writer| {
        let store = store.clone();
        let mut contract = contract.clone();
        contract.customer = format!("writer {writer}");
        contract.renewals.truncate(writer % 3);
        let change = change(
            &loaded,
            contract,
            vec![event(
                EventKind::EndedEarly,
                Some(&format!("writer-{writer}")),
            )],
        );
        async move {
            store
                .commit_batch(None, &[change], NOW)
                .await
                .expect("commit")
        }
    }))
    .await;
    let applied: i64 = outcomes.iter().map(|outcome| outcome.applied).sum();
    let conflicts: i64 = outcomes.iter().map(|outcome| outcome.conflicts).sum();
    assert_eq!((applied, conflicts), (1, 7));
    let (after, stored) = load(&store, "RACE").await;
    assert_eq!(after.version, 2);
    let winner = stored
        .customer
        .strip_prefix("writer ")
        .and_then(|n| n.parse::<usize>().ok())
        .expect("a writer's customer");
    assert_eq!(stored.renewals.len(), winner % 3, "the winner's children");
    assert_eq!(
        event_keys(&store, "RACE").await,
        vec!["imported".to_string(), format!("writer-{winner}")]
    );
}
