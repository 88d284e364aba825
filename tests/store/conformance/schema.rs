//! The schema: migrations are idempotent and leave the store ready.

use contractd::storage::ContractStore;

crate::both_databases! {
    empty_store: [
        migrate_twice_then_ready,
    ],
}

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
