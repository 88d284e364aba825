//! Import: contracts round-trip with every child, and an import is all or nothing, in one
//! transaction across chunks, committed only when asked; which refs already exist.

use crate::support::{contract_from_json, date};
use contractd::storage::{ContractImport, ContractStore, NewContract, StorageError};
use serde_json::json;

use super::{event_keys, imported_on, insert, load, new, plain, rich, NOW};

crate::both_databases! {
    store: [
        round_trip_keeps_every_child_kind_and_the_pending_cancellation,
        round_trip_of_a_minimal_contract,
        duplicate_ref_is_refused_and_nothing_is_written,
        import_writes_chunks_into_one_transaction_committed_only_when_asked,
        large_import_crosses_chunks_all_or_nothing,
        existing_references_lists_only_known_refs,
    ],
}

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
