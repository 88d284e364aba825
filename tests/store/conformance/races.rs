//! Races: replicas claiming one run and writers committing one contract version at once.

use contractd::contract::EventKind;
use contractd::lifecycle::Job;
use contractd::storage::ContractStore;

use super::{change, event, event_keys, insert, load, rich, run_key, LEASE, NOW};

crate::both_databases! {
    store: [
        concurrent_claims_and_commits_have_one_winner,
    ],
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
