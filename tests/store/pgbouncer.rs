//! PostgreSQL behind PgBouncer in transaction mode (a PgBouncer of the test's own, see
//! `tests/support/pgbouncer.rs`): named statements really break there, the migrations need
//! `direct_url`, and import and three stores sweeping at once through it end exactly as one
//! store straight on the server.

use crate::support;
use crate::support::pgbouncer::PgBouncer;
use crate::support::population;
use crate::support::{load, noon};

use std::time::Duration;

use chrono::NaiveDate;
use contractd::clock::OffsetClock;
use contractd::lifecycle::RulePolicy;
use contractd::shutdown::Shutdown;
use contractd::storage::{
    ContractStore, PostgresSettings, PostgresStore, Statements, StorageError,
};
use contractd::sweep::{sweep_due, SweepOptions};
use contractd::transfer::export;
use support::{connect_postgres, date, drop_postgres, fresh_postgres_url};

/// A store whose queries go through `bouncer` to the database `url`; migrations go straight
/// to `url` unless `direct` is false.
async fn pooled(
    bouncer: &PgBouncer,
    url: &str,
    statements: Statements,
    direct: bool,
) -> Result<PostgresStore, StorageError> {
    PostgresStore::connect(&PostgresSettings {
        url: bouncer.url(url),
        direct_url: direct.then(|| url.to_string()),
        statements,
        max_connections: 4,
        connect_timeout: Duration::from_secs(15),
    })
    .await
}

/// One sweep as of `day`, as the process `owner`, in small batches (many transactions).
async fn sweep<S: ContractStore>(store: &S, day: NaiveDate, owner: &str) -> i64 {
    let mut options = SweepOptions::new(25, Duration::from_secs(60), RulePolicy::default());
    options.as_of = Some(day);
    options.owner = owner.to_string();
    options.parallel_zones = 2;
    let report = sweep_due(
        store,
        &OffsetClock::fixed(noon(day)),
        &options,
        &Shutdown::never(),
    )
    .await
    .unwrap_or_else(|error| panic!("sweep by {owner} as of {day}: {error}"));
    report.jobs.iter().map(|job| job.counts.changed).sum()
}

async fn snapshot<S: ContractStore>(store: &S) -> String {
    let mut out = Vec::new();
    export(store, &[], &mut out, |error| panic!("invalid row: {error}"))
        .await
        .expect("export");
    String::from_utf8(out).expect("utf-8 export")
}

/// (contract ref, kind, effective date) of every event, sorted.
async fn transitions(url: &str) -> Vec<(String, String, String)> {
    let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(url)
        .await
        .expect("connect");
    let mut rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT contract_ref, kind, COALESCE(to_char(effective_on, 'YYYY-MM-DD'), '') \
         FROM contract_events",
    )
    .fetch_all(&mut connection)
    .await
    .expect("events");
    rows.sort();
    rows
}

/// The harness really puts a transaction pooler in between: sqlx's default named statements
/// collide there with those another client connection left on the same server connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_statements_break_behind_a_transaction_pooler() {
    let bouncer = PgBouncer::start();
    let url = fresh_postgres_url().await;
    let direct = connect_postgres(&url).await;
    direct.migrate().await.expect("migrate");
    direct.close().await;
    let mut failures = Vec::new();
    for _ in 0..6 {
        let store = pooled(&bouncer, &url, Statements::Prepared, true)
            .await
            .expect("connect through PgBouncer");
        for _ in 0..3 {
            if let Err(error) = store.runs(10).await {
                failures.push(error.to_string());
            }
        }
        store.close().await;
    }
    drop_postgres(&url).await;
    assert!(
        failures
            .iter()
            .any(|failure| failure.contains("prepared statement \"sqlx_s_")),
        "named statements were expected to collide through PgBouncer: {failures:?}"
    );
}

/// Without `direct_url`, a store behind the pooler refuses pending migrations (their lock
/// needs a session) and changes nothing; with it they are applied straight on the server;
/// afterwards the store without `direct_url` starts fine (nothing pending).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_go_straight_to_the_server() {
    let bouncer = PgBouncer::start();
    let url = fresh_postgres_url().await;
    let without = pooled(&bouncer, &url, Statements::Unnamed, false)
        .await
        .expect("connect through PgBouncer");
    let refused = without.migrate().await;
    assert!(
        matches!(refused, Err(StorageError::MigrationsNeedSession)),
        "{refused:?}"
    );
    assert!(!without.readiness().await.expect("readiness"));
    let with = pooled(&bouncer, &url, Statements::Unnamed, true)
        .await
        .expect("connect through PgBouncer");
    with.migrate().await.expect("migrate over direct_url");
    with.migrate().await.expect("migrate again: nothing to do");
    assert!(without.readiness().await.expect("readiness"));
    without
        .migrate()
        .await
        .expect("nothing pending: no session needed");
    without.close().await;
    with.close().await;
    drop_postgres(&url).await;
}

/// Import through the pooler, then three stores (three replicas, each its own pool and
/// owner) sweep the same days at once through it; a fourth store straight on the server
/// sweeps a copy alone. Same contracts, same transitions, each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_stores_sweeping_at_once_through_the_pooler_end_as_one_direct() {
    let bouncer = PgBouncer::start();
    let zones = ["Europe/Berlin", "America/New_York", "Asia/Tokyo", "UTC"];
    let start = date("2025-03-01");
    let data = population::jsonl(17, 600, start, &zones);
    let url = fresh_postgres_url().await;
    let reference_url = fresh_postgres_url().await;

    let importer = pooled(&bouncer, &url, Statements::Unnamed, true)
        .await
        .expect("connect through PgBouncer");
    importer.migrate().await.expect("migrate");
    load(&importer, &data, start - chrono::Days::new(1)).await;
    let reference = connect_postgres(&reference_url).await;
    reference.migrate().await.expect("migrate the reference");
    load(&reference, &data, start - chrono::Days::new(1)).await;
    assert_eq!(snapshot(&importer).await, snapshot(&reference).await);

    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(
            pooled(&bouncer, &url, Statements::Unnamed, true)
                .await
                .expect("connect through PgBouncer"),
        );
    }
    let mut changed_through_pooler = 0;
    let mut changed_direct = 0;
    for offset in 0..3 {
        let day = start + chrono::Days::new(offset);
        let (a, b, c) = tokio::join!(
            sweep(&replicas[0], day, "replica-a"),
            sweep(&replicas[1], day, "replica-b"),
            sweep(&replicas[2], day, "replica-c"),
        );
        changed_through_pooler += a + b + c;
        changed_direct += sweep(&reference, day, "alone").await;
    }
    assert!(
        changed_direct > 100,
        "the population lacks work: {changed_direct}"
    );
    assert_eq!(changed_through_pooler, changed_direct);
    assert_eq!(snapshot(&replicas[0]).await, snapshot(&reference).await);
    // Every transition of the lone sweep, and not one more (a second copy of any would
    // make the lists differ).
    assert_eq!(transitions(&url).await, transitions(&reference_url).await);

    for replica in replicas {
        replica.close().await;
    }
    importer.close().await;
    reference.close().await;
    drop_postgres(&url).await;
    drop_postgres(&reference_url).await;
}
