//! Reading: pages of contracts, the due rows of a zone in order, invalid rows as errors, counts
//! by status, events and zones.

use crate::support::{contract_from_json, date, RawDb};
use chrono::NaiveDate;
use contractd::contract::{Contract, EventKind};
use contractd::lifecycle::{DueDates, Job};
use contractd::storage::{BatchCursor, ContractStore, LoadedContract};

use super::{change, event, insert, load, plain, rich, NOW};

crate::both_databases! {
    store: [
        contracts_page_walks_by_id,
        due_batch_returns_due_rows_of_the_zone_in_due_then_id_order,
        count_by_status_counts_each_status,
        events_are_listed_oldest_first,
        zones_are_listed_once_in_byte_order,
    ],
    store_and_raw: [
        invalid_rows_come_back_as_errors_without_failing_the_batch,
    ],
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
