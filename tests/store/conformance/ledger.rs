//! The run ledger: claims and leases, takeover, retries after a failure, release, and the
//! listings of runs.

use crate::support::date;
use contractd::contract::{ContractStatus, EventKind};
use contractd::lifecycle::Job;
use contractd::storage::RETRY_FAILED_RUN_AFTER_MS;
use contractd::storage::{BatchCursor, ContractStore, RunCounts, RunStatus, StorageError};

use super::{
    change, claim, counts, event, event_keys, insert, load, plain, progress, run_key, LEASE, NOW,
};

crate::both_databases! {
    store: [
        claim_run_lease_and_takeover,
        succeeded_run_is_never_claimed_again,
        failed_run_is_retried_after_the_pause,
        released_run_is_taken_over_at_once_with_its_progress,
        succeeded_runs_since_lists_only_succeeded_runs,
        runs_are_listed_newest_first,
    ],
}

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
