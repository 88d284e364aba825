//! The outbox side of both stores (`OutboxStore`): the contract's export record written with
//! every event, the feed in commit order, fan-out to endpoints, claims with leases and the
//! per-contract order, attempts, requeues, the backlog and the listing; and, on PostgreSQL,
//! transactions committing in the reverse order of their ids.

use std::collections::HashSet;

use contractd::contract::record::ContractRecord;
use contractd::contract::{Contract, EventKind};
use contractd::lifecycle::actions::{self, EndEarlyRequest};
use contractd::lifecycle::{Job, RulePolicy};
use contractd::operator::apply_on;
use contractd::storage::{
    Attempt, AttemptResult, Backlog, ClaimedDelivery, ContractStore, DeliveryFilter,
    DeliveryRecord, DeliveryStatus, EndpointState, FeedEvent, FeedPosition, OutboxStore, Requeue,
    Subscription,
};
use sqlx::{Connection, PgConnection};

use crate::conformance::{
    change, claim, counts, event, insert, load, plain, progress, rich, run_key, LEASE, NOW,
};
use crate::support::{self, date, RawDb};

crate::both_databases! {
    store_and_raw: [
        the_snapshot_is_written_with_each_event_of_an_import_a_batch_and_an_action,
        a_record_stored_as_text_before_packing_reads_as_it_was_and_a_damaged_one_names_its_event,
        the_feed_is_in_id_order_resumes_after_a_position_and_filters_kinds,
        fan_out_creates_deliveries_of_subscribed_kinds_and_advances_the_cursor,
        a_new_endpoint_starts_at_the_head_of_the_feed,
        a_claim_gives_each_delivery_to_one_owner_when_due_and_unleased,
        a_claim_keeps_the_order_per_contract_and_endpoint,
        record_attempt_writes_each_result_and_refuses_a_lost_lease,
        gone_disables_the_endpoint_and_keeps_the_delivery_first_in_line,
        requeue_queues_failed_deliveries_and_named_events,
        the_backlog_counts_pending_and_failed_per_endpoint,
        deliveries_are_listed_newest_first_by_endpoint_and_failure,
        concurrent_claims_never_take_one_delivery_twice,
    ],
}

/// How many events a test reads at once: more than any test writes.
const ALL: u32 = 1_000;

/// An endpoint subscribed to `kinds` (every kind when `None`).
fn subscription(endpoint: &str, kinds: Option<&[&str]>) -> Subscription {
    Subscription {
        endpoint: endpoint.to_string(),
        kinds: kinds.map(|kinds| kinds.iter().map(|kind| kind.to_string()).collect()),
    }
}

fn endpoints(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| name.to_string()).collect()
}

/// The export record of a contract, as the outbox stores it.
fn record(contract: &Contract) -> serde_json::Value {
    serde_json::to_value(ContractRecord::from_contract(contract)).expect("a record serialises")
}

/// Wait until the feed shows every event committed so far. On PostgreSQL it shows only
/// events of transactions older than every transaction still running on the server, in any
/// database: another test's open transaction holds it back (never loses anything) until it
/// ends. SQLite shows every commit at once.
async fn settle(raw: &RawDb) {
    let RawDb::Postgres(url) = raw else { return };
    let mut connection = PgConnection::connect(url).await.expect("connect");
    for _ in 0..1_200 {
        let caught_up: bool = sqlx::query_scalar(
            "SELECT COALESCE((SELECT tx_id FROM contract_events ORDER BY tx_id DESC LIMIT 1) \
             < pg_snapshot_xmin(pg_current_snapshot()), true)",
        )
        .fetch_one(&mut connection)
        .await
        .expect("the feed's horizon");
        if caught_up {
            connection.close().await.expect("close");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("a transaction on the test server held the feed back for a minute");
}

/// The whole feed after `after`, once it shows every committed event.
async fn feed<S: OutboxStore>(
    store: &S,
    raw: &RawDb,
    after: Option<FeedPosition>,
) -> Vec<FeedEvent> {
    settle(raw).await;
    store.feed(after, &[], ALL).await.expect("feed")
}

fn ids(events: &[FeedEvent]) -> Vec<i64> {
    events.iter().map(|event| event.position.id).collect()
}

/// One fan-out round, once the feed shows every committed event.
async fn fan_out<S: OutboxStore>(
    store: &S,
    raw: &RawDb,
    subscription: &Subscription,
    now: i64,
) -> u64 {
    settle(raw).await;
    store
        .fan_out(subscription, ALL, now)
        .await
        .expect("fan_out")
}

async fn claim_at<S: OutboxStore>(
    store: &S,
    endpoints: &[String],
    owner: &str,
    now: i64,
    limit: u32,
) -> Vec<ClaimedDelivery> {
    store
        .claim_deliveries(endpoints, owner, now, LEASE, limit)
        .await
        .expect("claim_deliveries")
}

fn claimed_events(claimed: &[ClaimedDelivery]) -> Vec<(String, i64)> {
    claimed
        .iter()
        .map(|delivery| {
            (
                delivery.event.contract_ref.clone(),
                delivery.event.position.id,
            )
        })
        .collect()
}

async fn record_attempt<S: OutboxStore>(
    store: &S,
    delivery: i64,
    owner: &str,
    at_ms: i64,
    result: AttemptResult,
) -> bool {
    let http_status = match result {
        AttemptResult::Delivered => Some(204),
        AttemptResult::EndpointGone => Some(410),
        AttemptResult::RetryAt(_) | AttemptResult::Failed => Some(503),
    };
    store
        .record_attempt(
            delivery,
            owner,
            &Attempt {
                at_ms,
                http_status,
                error: (http_status != Some(204)).then(|| "unavailable".to_string()),
                result,
            },
        )
        .await
        .expect("record_attempt")
}

async fn deliveries<S: OutboxStore>(store: &S, endpoint: Option<&str>) -> Vec<DeliveryRecord> {
    store
        .deliveries(&DeliveryFilter {
            endpoint: endpoint.map(str::to_string),
            failed_only: false,
            limit: ALL,
        })
        .await
        .expect("deliveries")
}

/// The delivery of event `event_id` to `endpoint`.
async fn delivery<S: OutboxStore>(store: &S, endpoint: &str, event_id: i64) -> DeliveryRecord {
    deliveries(store, Some(endpoint))
        .await
        .into_iter()
        .find(|delivery| delivery.event_id == event_id)
        .unwrap_or_else(|| panic!("no delivery of event {event_id} to {endpoint}"))
}

/// Change `reference` (its customer, so the snapshot shows it) with events of `kinds`, each
/// with a key of its own, recorded at `now`.
async fn change_with<S: ContractStore>(
    store: &S,
    reference: &str,
    customer: &str,
    kinds: &[EventKind],
    now: i64,
) -> Contract {
    let (loaded, mut contract) = load(store, reference).await;
    contract.customer = customer.to_string();
    let events = kinds
        .iter()
        .enumerate()
        .map(|(index, kind)| event(*kind, Some(&format!("{customer}-{index}"))))
        .collect();
    let outcome = store
        .commit_batch(None, &[change(&loaded, contract.clone(), events)], now)
        .await
        .expect("commit_batch");
    assert_eq!(outcome.applied, 1);
    contract
}

/// Records are stored packed (migration 0007). A record written before as JSON text still reads
/// back as that JSON; one that cannot be unpacked fails the read with an error naming the event
/// and the column, not with a panic or a made-up record.
async fn a_record_stored_as_text_before_packing_reads_as_it_was_and_a_damaged_one_names_its_event<
    S,
>(
    store: S,
    raw: RawDb,
) where
    S: ContractStore + OutboxStore,
{
    let contract = plain("OLD", "UTC", Some("2024-12-31"));
    insert(&store, vec![contract.clone()]).await;
    let text = record(&contract).to_string();
    let as_stored = match raw {
        RawDb::Sqlite(_) => format!("'{text}'"),
        RawDb::Postgres(_) => format!("convert_to('{text}', 'UTF8')"),
    };
    let changed = raw
        .execute(&format!(
            "UPDATE contract_events SET contract_record = {as_stored} WHERE contract_ref = 'OLD'"
        ))
        .await;
    assert_eq!(changed, 1);
    let events = feed(&store, &raw, None).await;
    assert_eq!(events[0].contract, Some(record(&contract)));

    // The tag of a format this version does not know.
    let damaged = match raw {
        RawDb::Sqlite(_) => "X'09000000'",
        RawDb::Postgres(_) => "'\\x09000000'::bytea",
    };
    raw.execute(&format!(
        "UPDATE contract_events SET contract_record = {damaged} WHERE contract_ref = 'OLD'"
    ))
    .await;
    let error = store
        .feed(None, &[], ALL)
        .await
        .expect_err("an unreadable record is an error")
        .to_string();
    assert!(
        error.contains("contract_record") && error.contains("'OLD'") && error.contains("tag 9"),
        "{error}"
    );
}

async fn the_snapshot_is_written_with_each_event_of_an_import_a_batch_and_an_action<S>(
    store: S,
    raw: RawDb,
) where
    S: ContractStore + OutboxStore,
{
    // Import: the `imported` event carries the contract as imported.
    let imported = vec![rich("A"), plain("B", "UTC", Some("2024-12-31"))];
    insert(&store, imported.clone()).await;
    let events = feed(&store, &raw, None).await;
    assert_eq!(events.len(), 2);
    for (event, contract) in events.iter().zip(&imported) {
        assert_eq!(event.kind, "imported");
        assert_eq!(event.contract_ref, contract.reference);
        assert_eq!(event.contract, Some(record(contract)));
    }
    let after_import = events.last().map(|event| event.position);

    // A sweep batch: every event of a change carries that change's contract.
    let (loaded_a, mut a) = load(&store, "A").await;
    let (loaded_b, mut b) = load(&store, "B").await;
    a.customer = "A after the batch".to_string();
    b.customer = "B after the batch".to_string();
    let key = run_key(Job::Expire, "UTC", "2024-07-01");
    let run = claim(&store, &key, "sweeper", NOW).await;
    store
        .commit_batch(
            Some(progress(&run, None, counts(2, 2, 0))),
            &[
                change(
                    &loaded_a,
                    a.clone(),
                    vec![
                        event(EventKind::EndedEarly, Some("a-1")),
                        event(EventKind::FinalInvoiceCreated, Some("a-2")),
                    ],
                ),
                change(
                    &loaded_b,
                    b.clone(),
                    vec![event(EventKind::Expired, Some("b-1"))],
                ),
            ],
            NOW + 1,
        )
        .await
        .expect("commit_batch");
    let events = feed(&store, &raw, after_import).await;
    let seen: Vec<(&str, &str)> = events
        .iter()
        .map(|event| (event.contract_ref.as_str(), event.kind.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("A", "ended_early"),
            ("A", "final_invoice_created"),
            ("B", "expired")
        ]
    );
    assert_eq!(events[0].contract, Some(record(&a)));
    assert_eq!(events[1].contract, Some(record(&a)));
    assert_eq!(events[2].contract, Some(record(&b)));
    assert_eq!(events[0].recorded_at_ms, NOW + 1);
    let after_batch = events.last().map(|event| event.position);

    // An operator action: its transition's events carry the contract it leaves.
    let transition = apply_on(
        &store,
        "B",
        |_| date("2024-07-01"),
        NOW + 2,
        |contract, today| {
            actions::end_early(
                contract,
                &EndEarlyRequest {
                    end_date: date("2024-09-30"),
                    reason: "moving out".to_string(),
                    notes: None,
                },
                today,
                &RulePolicy::default(),
            )
        },
    )
    .await
    .expect("end early");
    let events = feed(&store, &raw, after_batch).await;
    assert!(!events.is_empty());
    assert_eq!(events.len(), transition.events.len());
    for event in &events {
        assert_eq!(event.contract_ref, "B");
        assert_eq!(event.contract, Some(record(&transition.contract)));
    }
    assert_eq!(events[0].kind, "ended_early");
}

async fn the_feed_is_in_id_order_resumes_after_a_position_and_filters_kinds<S>(store: S, raw: RawDb)
where
    S: ContractStore + OutboxStore,
{
    insert(
        &store,
        vec![
            plain("A", "UTC", None),
            plain("B", "UTC", None),
            plain("C", "UTC", None),
        ],
    )
    .await;
    change_with(
        &store,
        "A",
        "A2",
        &[EventKind::EndedEarly, EventKind::FinalInvoiceCreated],
        NOW,
    )
    .await;
    let events = feed(&store, &raw, None).await;
    assert_eq!(events.len(), 5);
    let positions: Vec<FeedPosition> = events.iter().map(|event| event.position).collect();
    assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "{positions:?}"
    );
    assert!(ids(&events).windows(2).all(|pair| pair[0] < pair[1]));
    let refs: Vec<&str> = events.iter().map(|e| e.contract_ref.as_str()).collect();
    assert_eq!(refs, ["A", "B", "C", "A", "A"]);
    assert_eq!(events[3].details["kind"], "ended_early");
    assert_eq!(events[3].effective_on, date("2024-07-01"));

    // Resuming after a position gives what follows it, page by page.
    settle(&raw).await;
    let page = store.feed(Some(positions[1]), &[], 2).await.expect("feed");
    assert_eq!(ids(&page), ids(&events[2..4]));
    let rest = feed(&store, &raw, Some(positions[3])).await;
    assert_eq!(ids(&rest), ids(&events[4..]));
    assert!(feed(&store, &raw, Some(positions[4])).await.is_empty());

    // The position of an event, by its id.
    assert_eq!(
        store
            .feed_position(events[2].position.id)
            .await
            .expect("position"),
        Some(positions[2])
    );
    assert_eq!(store.feed_position(999_999).await.expect("position"), None);

    // Only the kinds asked for.
    let kinds = ["final_invoice_created".to_string(), "imported".to_string()];
    settle(&raw).await;
    let filtered = store.feed(None, &kinds, ALL).await.expect("feed");
    assert_eq!(
        ids(&filtered),
        [
            events[0].position.id,
            events[1].position.id,
            events[2].position.id,
            events[4].position.id
        ]
    );
}

async fn fan_out_creates_deliveries_of_subscribed_kinds_and_advances_the_cursor<S>(
    store: S,
    raw: RawDb,
) where
    S: ContractStore + OutboxStore,
{
    let ended = subscription("ended", Some(&["ended_early"]));
    let every = subscription("every", None);
    // Seen for the first time on an empty feed: nothing to pass yet.
    assert_eq!(fan_out(&store, &raw, &ended, NOW).await, 0);
    assert_eq!(fan_out(&store, &raw, &every, NOW).await, 0);

    insert(
        &store,
        vec![plain("A", "UTC", None), plain("B", "UTC", None)],
    )
    .await;
    change_with(
        &store,
        "A",
        "A2",
        &[EventKind::EndedEarly, EventKind::FinalInvoiceCreated],
        NOW,
    )
    .await;
    change_with(&store, "B", "B2", &[EventKind::EndedEarly], NOW).await;
    let events = feed(&store, &raw, None).await;
    assert_eq!(events.len(), 5);

    // At most `limit` events per round; the cursor moves past the ones filtered out too.
    settle(&raw).await;
    assert_eq!(store.fan_out(&ended, 3, NOW).await.expect("fan_out"), 3);
    let listed: Vec<i64> = deliveries(&store, Some("ended"))
        .await
        .iter()
        .map(|delivery| delivery.event_id)
        .collect();
    assert_eq!(listed, [events[2].position.id]);
    assert_eq!(store.fan_out(&ended, 3, NOW).await.expect("fan_out"), 2);
    assert_eq!(fan_out(&store, &raw, &ended, NOW).await, 0, "caught up");
    let mut listed: Vec<i64> = deliveries(&store, Some("ended"))
        .await
        .iter()
        .map(|delivery| delivery.event_id)
        .collect();
    listed.sort_unstable();
    assert_eq!(listed, [events[2].position.id, events[4].position.id]);
    let first = delivery(&store, "ended", events[2].position.id).await;
    assert_eq!(first.status, DeliveryStatus::Pending);
    assert_eq!(first.attempts, 0);
    assert_eq!(first.next_attempt_ms, Some(NOW));
    assert_eq!(first.kind, "ended_early");
    assert_eq!(first.contract_ref, "A");

    // Every kind; a second round creates nothing twice.
    assert_eq!(fan_out(&store, &raw, &every, NOW).await, 5);
    assert_eq!(fan_out(&store, &raw, &every, NOW).await, 0);
    assert_eq!(deliveries(&store, Some("every")).await.len(), 5);
    assert_eq!(deliveries(&store, None).await.len(), 7);
}

async fn a_new_endpoint_starts_at_the_head_of_the_feed<S>(store: S, raw: RawDb)
where
    S: ContractStore + OutboxStore,
{
    insert(
        &store,
        vec![plain("A", "UTC", None), plain("B", "UTC", None)],
    )
    .await;
    let late = subscription("late", None);
    assert_eq!(fan_out(&store, &raw, &late, NOW).await, 0);
    assert!(deliveries(&store, Some("late")).await.is_empty());
    change_with(&store, "B", "B2", &[EventKind::EndedEarly], NOW).await;
    assert_eq!(fan_out(&store, &raw, &late, NOW).await, 1);
    let listed = deliveries(&store, Some("late")).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].contract_ref, "B");
    assert_eq!(listed[0].kind, "ended_early");
    assert_eq!(
        store.endpoint_states().await.expect("endpoint_states"),
        [EndpointState {
            endpoint: "late".to_string(),
            disabled_at_ms: None,
            disabled_reason: None,
        }]
    );
}

/// An endpoint `hooks` that receives everything, then `contracts` imported and fanned out:
/// one pending delivery per contract, due at `NOW`.
async fn hooks_with<S>(store: &S, raw: &RawDb, contracts: &[&str]) -> Vec<String>
where
    S: ContractStore + OutboxStore,
{
    let hooks = subscription("hooks", None);
    fan_out(store, raw, &hooks, NOW).await;
    insert(
        store,
        contracts.iter().map(|r| plain(r, "UTC", None)).collect(),
    )
    .await;
    fan_out(store, raw, &hooks, NOW).await;
    endpoints(&["hooks"])
}

async fn a_claim_gives_each_delivery_to_one_owner_when_due_and_unleased<S>(store: S, raw: RawDb)
where
    S: ContractStore + OutboxStore,
{
    let hooks = hooks_with(&store, &raw, &["A", "B", "C"]).await;
    assert!(
        claim_at(&store, &hooks, "p1", NOW - 1, 10).await.is_empty(),
        "not due yet"
    );
    assert!(claim_at(&store, &endpoints(&["other"]), "p1", NOW, 10)
        .await
        .is_empty());

    let first = claim_at(&store, &hooks, "p1", NOW, 2).await;
    let refs: Vec<String> = claimed_events(&first).into_iter().map(|(r, _)| r).collect();
    assert_eq!(refs, ["A", "B"]);
    assert_eq!(first[0].endpoint, "hooks");
    assert_eq!(first[0].attempts, 0);
    assert_eq!(first[0].event.kind, "imported");
    assert!(first[0].event.contract.is_some());
    let second = claim_at(&store, &hooks, "p2", NOW, 10).await;
    assert_eq!(claimed_events(&second)[0].0, "C");
    assert!(
        claim_at(&store, &hooks, "p3", NOW + LEASE - 1, 10)
            .await
            .is_empty(),
        "leased"
    );

    // Leases that ran out are taken over; the first holder's record is refused.
    let taken = claim_at(&store, &hooks, "p3", NOW + LEASE + 1, 10).await;
    assert_eq!(taken.len(), 3);
    assert!(
        !record_attempt(
            &store,
            first[0].id,
            "p1",
            NOW + LEASE + 2,
            AttemptResult::Delivered
        )
        .await
    );
    assert!(
        record_attempt(
            &store,
            first[0].id,
            "p3",
            NOW + LEASE + 2,
            AttemptResult::Delivered
        )
        .await
    );
    assert_eq!(
        delivery(&store, "hooks", first[0].event.position.id)
            .await
            .status,
        DeliveryStatus::Delivered
    );
}

async fn a_claim_keeps_the_order_per_contract_and_endpoint<S>(store: S, raw: RawDb)
where
    S: ContractStore + OutboxStore,
{
    let hooks = hooks_with(&store, &raw, &["A", "B"]).await;
    change_with(&store, "A", "A2", &[EventKind::EndedEarly], NOW).await;
    fan_out(&store, &raw, &subscription("hooks", None), NOW).await;
    let events = feed(&store, &raw, None).await;
    let (a1, b1, a2) = (
        events[0].position.id,
        events[1].position.id,
        events[2].position.id,
    );

    // A's second event waits for its first, leased.
    let claimed = claim_at(&store, &hooks, "p1", NOW, 10).await;
    assert_eq!(
        claimed_events(&claimed),
        [("A".to_string(), a1), ("B".to_string(), b1)]
    );
    assert!(claim_at(&store, &hooks, "p2", NOW, 10).await.is_empty());

    // … waiting for a retry …
    assert!(
        record_attempt(
            &store,
            claimed[0].id,
            "p1",
            NOW + 1,
            AttemptResult::RetryAt(NOW + 1_000)
        )
        .await
    );
    assert!(
        record_attempt(
            &store,
            claimed[1].id,
            "p1",
            NOW + 1,
            AttemptResult::Delivered
        )
        .await
    );
    assert!(claim_at(&store, &hooks, "p2", NOW + 2, 10).await.is_empty());
    let retried = claim_at(&store, &hooks, "p2", NOW + 1_000, 10).await;
    assert_eq!(claimed_events(&retried), [("A".to_string(), a1)]);
    assert_eq!(retried[0].attempts, 1);

    // … or failed; another contract goes on meanwhile.
    assert!(
        record_attempt(
            &store,
            retried[0].id,
            "p2",
            NOW + 1_001,
            AttemptResult::Failed
        )
        .await
    );
    change_with(&store, "B", "B2", &[EventKind::EndedEarly], NOW + 1_002).await;
    fan_out(&store, &raw, &subscription("hooks", None), NOW + 1_002).await;
    let b2 = feed(&store, &raw, None).await[3].position.id;
    let others = claim_at(&store, &hooks, "p3", NOW + 2_000, 10).await;
    assert_eq!(claimed_events(&others), [("B".to_string(), b2)]);

    // Queued again, the failed one goes first, then the one it held back.
    assert_eq!(
        store
            .requeue(&hooks, &Requeue::Failed, NOW + 3_000)
            .await
            .expect("requeue"),
        1
    );
    let again = claim_at(&store, &hooks, "p4", NOW + 3_000, 10).await;
    assert_eq!(claimed_events(&again), [("A".to_string(), a1)]);
    assert!(
        record_attempt(
            &store,
            again[0].id,
            "p4",
            NOW + 3_001,
            AttemptResult::Delivered
        )
        .await
    );
    let last = claim_at(&store, &hooks, "p4", NOW + 3_002, 10).await;
    assert_eq!(claimed_events(&last), [("A".to_string(), a2)]);
}

async fn record_attempt_writes_each_result_and_refuses_a_lost_lease<S>(store: S, raw: RawDb)
where
    S: ContractStore + OutboxStore,
{
    let hooks = hooks_with(&store, &raw, &["A", "B", "C"]).await;
    let claimed = claim_at(&store, &hooks, "p1", NOW, 10).await;
    let [a, b, c] = [&claimed[0], &claimed[1], &claimed[2]];

    assert!(!record_attempt(&store, a.id, "intruder", NOW + 5, AttemptResult::Delivered).await);
    let untouched = delivery(&store, "hooks", a.event.position.id).await;
    assert_eq!(
        (untouched.status, untouched.attempts),
        (DeliveryStatus::Pending, 0)
    );

    assert!(record_attempt(&store, a.id, "p1", NOW + 5, AttemptResult::Delivered).await);
    let delivered = delivery(&store, "hooks", a.event.position.id).await;
    assert_eq!(delivered.status, DeliveryStatus::Delivered);
    assert_eq!(delivered.attempts, 1);
    assert_eq!(delivered.last_status, Some(204));
    assert_eq!(delivered.last_error, None);
    assert_eq!(delivered.last_attempt_ms, Some(NOW + 5));
    assert_eq!(delivered.next_attempt_ms, None);
    // The lease went with the attempt: a second record is refused.
    assert!(!record_attempt(&store, a.id, "p1", NOW + 6, AttemptResult::Failed).await);

    assert!(
        record_attempt(
            &store,
            b.id,
            "p1",
            NOW + 5,
            AttemptResult::RetryAt(NOW + 60_000)
        )
        .await
    );
    let retrying = delivery(&store, "hooks", b.event.position.id).await;
    assert_eq!(retrying.status, DeliveryStatus::Pending);
    assert_eq!(retrying.attempts, 1);
    assert_eq!(retrying.last_status, Some(503));
    assert_eq!(retrying.last_error.as_deref(), Some("unavailable"));
    assert_eq!(retrying.next_attempt_ms, Some(NOW + 60_000));

    assert!(record_attempt(&store, c.id, "p1", NOW + 5, AttemptResult::Failed).await);
    let failed = delivery(&store, "hooks", c.event.position.id).await;
    assert_eq!(failed.status, DeliveryStatus::Failed);
    assert_eq!(failed.attempts, 1);
    assert_eq!(failed.next_attempt_ms, None);
    assert!(claim_at(&store, &hooks, "p2", NOW + 59_999, 10)
        .await
        .is_empty());
    let retry = claim_at(&store, &hooks, "p2", NOW + 60_000, 10).await;
    assert_eq!(retry.len(), 1);
    assert_eq!((retry[0].id, retry[0].attempts), (b.id, 1));
    assert!(store.endpoint_states().await.expect("states")[0]
        .disabled_at_ms
        .is_none());
}

async fn gone_disables_the_endpoint_and_keeps_the_delivery_first_in_line<S>(store: S, raw: RawDb)
where
    S: ContractStore + OutboxStore,
{
    let hooks = hooks_with(&store, &raw, &["A"]).await;
    let claimed = claim_at(&store, &hooks, "p1", NOW, 10).await;
    assert!(
        record_attempt(
            &store,
            claimed[0].id,
            "p1",
            NOW + 7,
            AttemptResult::EndpointGone
        )
        .await
    );
    assert_eq!(
        store.endpoint_states().await.expect("states"),
        [EndpointState {
            endpoint: "hooks".to_string(),
            disabled_at_ms: Some(NOW + 7),
            disabled_reason: Some("410 Gone".to_string()),
        }]
    );
    let gone = delivery(&store, "hooks", claimed[0].event.position.id).await;
    assert_eq!(gone.status, DeliveryStatus::Pending);
    assert_eq!(gone.attempts, 1);
    assert_eq!(gone.last_status, Some(410));
    assert_eq!(gone.next_attempt_ms, Some(NOW + 7));
    // A process that still believes the endpoint enabled (another replica, a `deliver` run)
    // claims nothing of it while it is disabled.
    assert!(claim_at(&store, &hooks, "p3", NOW + 8, 10).await.is_empty());

    store
        .set_endpoint_disabled("hooks", None)
        .await
        .expect("enable");
    assert_eq!(
        store.endpoint_states().await.expect("states")[0].disabled_at_ms,
        None
    );
    let again = claim_at(&store, &hooks, "p2", NOW + 8, 10).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, claimed[0].id);

    // An endpoint the database does not know yet is created, disabled.
    store
        .set_endpoint_disabled("paused", Some((NOW + 9, "by hand".to_string())))
        .await
        .expect("disable");
    let states = store.endpoint_states().await.expect("states");
    assert_eq!(states.len(), 2);
    assert_eq!(states[1].endpoint, "paused");
    assert_eq!(states[1].disabled_reason.as_deref(), Some("by hand"));
    assert_eq!(
        fan_out(&store, &raw, &subscription("paused", None), NOW).await,
        0,
        "at the head"
    );
}

async fn requeue_queues_failed_deliveries_and_named_events<S>(store: S, raw: RawDb)
where
    S: ContractStore + OutboxStore,
{
    let hooks = hooks_with(&store, &raw, &["A", "B"]).await;
    let claimed = claim_at(&store, &hooks, "p1", NOW, 10).await;
    assert!(
        record_attempt(
            &store,
            claimed[0].id,
            "p1",
            NOW + 1,
            AttemptResult::Delivered
        )
        .await
    );
    assert!(record_attempt(&store, claimed[1].id, "p1", NOW + 1, AttemptResult::Failed).await);
    let (a, b) = (claimed[0].event.position.id, claimed[1].event.position.id);

    // Failed ones, of the endpoints named only.
    assert_eq!(
        store
            .requeue(&endpoints(&["other"]), &Requeue::Failed, NOW + 2)
            .await
            .expect("requeue"),
        0
    );
    assert_eq!(
        store
            .requeue(&hooks, &Requeue::Failed, NOW + 2)
            .await
            .expect("requeue"),
        1
    );
    let queued = delivery(&store, "hooks", b).await;
    assert_eq!(
        (queued.status, queued.attempts, queued.next_attempt_ms),
        (DeliveryStatus::Pending, 0, Some(NOW + 2))
    );
    assert_eq!(
        store
            .requeue(&hooks, &Requeue::Failed, NOW + 2)
            .await
            .expect("requeue"),
        0
    );

    // Named events, whatever their state, created where missing; unknown ids are not queued.
    let both = endpoints(&["hooks", "new"]);
    let queued = store
        .requeue(&both, &Requeue::Events(vec![a, 999_999, a]), NOW + 3)
        .await
        .expect("requeue");
    assert_eq!(queued, 2);
    let again = delivery(&store, "hooks", a).await;
    assert_eq!(
        (again.status, again.attempts, again.next_attempt_ms),
        (DeliveryStatus::Pending, 0, Some(NOW + 3))
    );
    let created = delivery(&store, "new", a).await;
    assert_eq!(
        (
            created.status,
            created.attempts,
            created.contract_ref.as_str()
        ),
        (DeliveryStatus::Pending, 0, "A")
    );
    let claimed = claim_at(&store, &both, "p2", NOW + 3, 10).await;
    let mut taken: Vec<(String, i64)> = claimed
        .iter()
        .map(|d| (d.endpoint.clone(), d.event.position.id))
        .collect();
    taken.sort();
    assert_eq!(
        taken,
        [
            ("hooks".to_string(), a),
            ("hooks".to_string(), b),
            ("new".to_string(), a)
        ]
    );
}

async fn the_backlog_counts_pending_and_failed_per_endpoint<S>(store: S, raw: RawDb)
where
    S: ContractStore + OutboxStore,
{
    let hooks = hooks_with(&store, &raw, &["A", "B", "C"]).await;
    fan_out(
        &store,
        &raw,
        &subscription("quiet", Some(&["expired"])),
        NOW,
    )
    .await;
    change_with(&store, "C", "C2", &[EventKind::EndedEarly], NOW + 50).await;
    fan_out(&store, &raw, &subscription("hooks", None), NOW).await;
    fan_out(
        &store,
        &raw,
        &subscription("quiet", Some(&["expired"])),
        NOW,
    )
    .await;
    let claimed = claim_at(&store, &hooks, "p1", NOW, 2).await;
    assert!(
        record_attempt(
            &store,
            claimed[0].id,
            "p1",
            NOW + 1,
            AttemptResult::Delivered
        )
        .await
    );
    assert!(record_attempt(&store, claimed[1].id, "p1", NOW + 1, AttemptResult::Failed).await);
    assert_eq!(
        store.backlog().await.expect("backlog"),
        [
            Backlog {
                endpoint: "hooks".to_string(),
                pending: 2,
                oldest_pending_recorded_ms: Some(NOW),
                failed: 1,
            },
            Backlog {
                endpoint: "quiet".to_string(),
                pending: 0,
                oldest_pending_recorded_ms: None,
                failed: 0,
            },
        ]
    );
    // C's imported event delivered: what is left pending was recorded later.
    let rest = claim_at(&store, &hooks, "p1", NOW + 2, 10).await;
    assert_eq!(rest.len(), 1);
    assert!(record_attempt(&store, rest[0].id, "p1", NOW + 3, AttemptResult::Delivered).await);
    let backlog = store.backlog().await.expect("backlog");
    assert_eq!(
        (backlog[0].pending, backlog[0].oldest_pending_recorded_ms),
        (1, Some(NOW + 50))
    );
}

async fn deliveries_are_listed_newest_first_by_endpoint_and_failure<S>(store: S, raw: RawDb)
where
    S: ContractStore + OutboxStore,
{
    let hooks = hooks_with(&store, &raw, &["A", "B", "C"]).await;
    fan_out(&store, &raw, &subscription("other", None), NOW).await;
    change_with(&store, "A", "A2", &[EventKind::EndedEarly], NOW).await;
    fan_out(&store, &raw, &subscription("hooks", None), NOW).await;
    fan_out(&store, &raw, &subscription("other", None), NOW).await;
    let claimed = claim_at(&store, &hooks, "p1", NOW, 10).await;
    assert!(record_attempt(&store, claimed[1].id, "p1", NOW + 1, AttemptResult::Failed).await);

    let all = deliveries(&store, None).await;
    assert_eq!(all.len(), 5);
    assert!(
        all.windows(2).all(|pair| pair[0].id > pair[1].id),
        "newest first"
    );
    assert_eq!(
        (all[0].endpoint.as_str(), all[0].contract_ref.as_str()),
        ("other", "A")
    );
    let hooks_only = deliveries(&store, Some("hooks")).await;
    let refs: Vec<&str> = hooks_only.iter().map(|d| d.contract_ref.as_str()).collect();
    assert_eq!(refs, ["A", "C", "B", "A"]);
    let failed = store
        .deliveries(&DeliveryFilter {
            endpoint: None,
            failed_only: true,
            limit: ALL,
        })
        .await
        .expect("deliveries");
    assert_eq!(failed.len(), 1);
    assert_eq!(
        (
            failed[0].contract_ref.as_str(),
            failed[0].status,
            failed[0].last_status
        ),
        ("B", DeliveryStatus::Failed, Some(503))
    );
    let limited = store
        .deliveries(&DeliveryFilter {
            endpoint: Some("hooks".to_string()),
            failed_only: false,
            limit: 2,
        })
        .await
        .expect("deliveries");
    assert_eq!(limited, hooks_only[..2]);
}

async fn concurrent_claims_never_take_one_delivery_twice<S>(store: S, raw: RawDb)
where
    S: ContractStore + OutboxStore,
{
    let references: Vec<String> = (0..300).map(|n| format!("R{n:03}")).collect();
    let refs: Vec<&str> = references.iter().map(String::as_str).collect();
    let hooks = hooks_with(&store, &raw, &refs).await;
    assert_eq!(deliveries(&store, None).await.len(), 300);
    let workers = futures::future::join_all((0..8).map(|worker| {
        let store = store.clone();
        let hooks = hooks.clone();
        tokio::spawn(async move {
            let mut taken = Vec::new();
            loop {
                let claimed = claim_at(&store, &hooks, &format!("w{worker}"), NOW, 7).await;
                if claimed.is_empty() {
                    return taken;
                }
                taken.extend(claimed.iter().map(|delivery| delivery.id));
            }
        })
    }))
    .await;
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.expect("a claiming task"));
    }
    let unique: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "a delivery was claimed twice");
    assert_eq!(all.len(), 300);
}

/// PostgreSQL only: ids are taken before commit, so they do not follow commit order.
mod postgres_commit_order {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_transactions_committing_in_reverse_id_order_are_fed_in_commit_order() {
        support::with_postgres(true, |store, raw| async move {
            let RawDb::Postgres(url) = &raw else {
                panic!("a PostgreSQL database")
            };
            insert(&store, vec![plain("A", "UTC", None)]).await;
            let hooks = subscription("hooks", None);
            assert_eq!(fan_out(&store, &raw, &hooks, NOW).await, 0);
            let seen = feed(&store, &raw, None).await;
            assert_eq!(seen.len(), 1);
            let resume = seen.last().map(|event| event.position);
            let (loaded, _) = load(&store, "A").await;

            let insert_event = |key: &'static str| {
                format!(
                    "INSERT INTO contract_events (contract_id, contract_ref, kind, effective_on, \
                     details, transition_key, recorded_at_ms) \
                     VALUES ({}, 'A', 'ended_early', '2024-07-01', '{{}}', '{key}', {NOW}) \
                     RETURNING id",
                    loaded.id
                )
            };
            let mut first = PgConnection::connect(url).await.expect("connect");
            let mut second = PgConnection::connect(url).await.expect("connect");
            let mut t1 = first.begin().await.expect("begin T1");
            let id1: i64 = sqlx::query_scalar(&insert_event("t1"))
                .fetch_one(&mut *t1)
                .await
                .expect("T1 inserts");
            let mut t2 = second.begin().await.expect("begin T2");
            let id2: i64 = sqlx::query_scalar(&insert_event("t2"))
                .fetch_one(&mut *t2)
                .await
                .expect("T2 inserts");
            assert!(id1 < id2);
            t2.commit().await.expect("T2 commits first");

            // T2 committed, but T1, older, still runs: T2's event is not in the feed yet.
            let between = store.feed(resume, &[], ALL).await.expect("feed");
            assert!(between.is_empty(), "T2 shown while T1 runs: {between:?}");
            assert_eq!(store.feed_position(id2).await.expect("position"), None);
            assert_eq!(store.fan_out(&hooks, ALL, NOW).await.expect("fan_out"), 0);

            t1.commit().await.expect("T1 commits");
            let events = feed(&store, &raw, resume).await;
            assert_eq!(ids(&events), [id1, id2], "T1's event first");
            assert!(events[0].position < events[1].position);
            assert_eq!(
                store.feed_position(id2).await.expect("position"),
                Some(events[1].position)
            );
            // The endpoint that fanned out between the commits misses nothing either.
            assert_eq!(fan_out(&store, &raw, &hooks, NOW).await, 2);
            let mut delivered: Vec<i64> = deliveries(&store, Some("hooks"))
                .await
                .iter()
                .map(|delivery| delivery.event_id)
                .collect();
            delivered.sort_unstable();
            assert_eq!(delivered, [id1, id2]);
            first.close().await.expect("close");
            second.close().await.expect("close");
        })
        .await;
    }
}
