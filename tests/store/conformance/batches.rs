//! Guarded batch commits: changes with their events, written as computed from the state read,
//! refused as conflicts when stale, rolled back whole on a duplicate transition, and the ledger
//! advanced with each batch.

use crate::support::date;
use contractd::contract::{ContractStatus, EventKind};
use contractd::lifecycle::Job;
use contractd::storage::{
    BatchCursor, CommitOutcome, ContractChange, ContractStore, RunCounts, RunStatus, StorageError,
};
use serde_json::json;

use super::{
    change, claim, counts, event, event_keys, insert, load, plain, progress, rich, run_key, NOW,
};

crate::both_databases! {
    store: [
        commit_batch_applies_changes_with_events_and_bumps_the_version,
        commit_batch_writes_what_changed_from_the_state_read,
        commit_batch_refuses_a_stale_version_as_a_conflict,
        commit_batch_applies_two_changes_of_one_contract_in_order,
        commit_batch_treats_a_renamed_contract_as_a_conflict,
        commit_batch_rolls_back_the_whole_batch_on_a_duplicate_transition,
        commit_batch_advances_the_ledger,
        a_closing_batch_finishes_the_run_counting_conflicts_as_skipped,
    ],
}

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

/// The last batch of a run closes its ledger row in its own transaction, and the ledger counts
/// a change refused by its version guard as skipped, not changed.
async fn a_closing_batch_finishes_the_run_counting_conflicts_as_skipped<S: ContractStore>(
    store: S,
) {
    insert(
        &store,
        vec![
            plain("CLOSE-1", "UTC", Some("2024-03-31")),
            plain("CLOSE-2", "UTC", Some("2024-04-30")),
        ],
    )
    .await;
    let key = run_key(Job::Expire, "UTC", "2024-07-01");
    let run = claim(&store, &key, "worker-1", NOW).await;
    let (one, contract_one) = load(&store, "CLOSE-1").await;
    let (two, contract_two) = load(&store, "CLOSE-2").await;
    // Another process changes CLOSE-2 after this run read it: its change becomes a conflict.
    let mut elsewhere = contract_two.clone();
    elsewhere.customer = "changed elsewhere".to_string();
    store
        .commit_batch(None, &[change(&two, elsewhere, vec![])], NOW + 1)
        .await
        .expect("the other process's change");

    let mut closing = progress(
        &run,
        Some(BatchCursor {
            due: date("2024-04-30"),
            id: two.id,
        }),
        counts(2, 2, 0),
    );
    closing.closes_run = true;
    let outcome = store
        .commit_batch(
            Some(closing),
            &[
                change(
                    &one,
                    contract_one,
                    vec![event(EventKind::Expired, Some("expire:2024-03-31"))],
                ),
                change(
                    &two,
                    contract_two,
                    vec![event(EventKind::Expired, Some("expire:2024-04-30"))],
                ),
            ],
            NOW + 5,
        )
        .await
        .expect("closing batch");
    assert_eq!(
        outcome,
        CommitOutcome {
            applied: 1,
            conflicts: 1
        }
    );
    let runs = store.runs(10).await.expect("runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Succeeded);
    assert_eq!(runs[0].counts, counts(2, 1, 1));
    assert_eq!(runs[0].batches, 1);
    assert_eq!(runs[0].finished_at_ms, Some(NOW + 5));
    // Closed: never claimed again, and no further batch is taken.
    assert!(store
        .claim_run(&key, "worker-2", NOW + 10 * super::LEASE, super::LEASE)
        .await
        .expect("claim")
        .is_none());
    match store
        .commit_batch(Some(progress(&run, None, counts(3, 1, 1))), &[], NOW + 8)
        .await
    {
        Err(StorageError::LeaseLost { run_id }) => assert_eq!(run_id, run.run_id),
        other => panic!("expected LeaseLost, got {other:?}"),
    }
}
