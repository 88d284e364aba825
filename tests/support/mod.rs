//! Helpers shared by the integration tests: the one way to run a test on both databases
//! ([`both_databases!`]), a brand-new database per test on each backend, raw SQL access for
//! playing "another system", contracts written as JSON, a seeded population of them, and
//! webhook receivers whose captures the Standard Webhooks reference library verifies.
//!
//! PostgreSQL is the server at `CONTRACTD_TEST_POSTGRES_URL` (default
//! [`DEFAULT_POSTGRES_URL`]). Tests that need it fail, never skip, when it cannot be reached.
//!
//! Every test binary declares it once, in its `main.rs`, as
//! `#[path = "../support/mod.rs"] pub mod support;`. It is `pub` there: these helpers are the
//! suite's shared API, so one that a binary does not use is no dead code in that binary.

pub mod pgbouncer;
pub mod population;
pub mod webhooks;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use contractd::contract::record::{read_record, ParseDefaults};
use contractd::contract::Contract;
use contractd::storage::sqlite::SqliteSettings;
use contractd::storage::{
    redact_url, ContractStore, PostgresSettings, PostgresStore, SqliteStore, Statements,
};
use contractd::transfer::import;
use futures::FutureExt;
use sqlx::{Connection, Executor, PgConnection, SqliteConnection};
use tempfile::TempDir;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in the test's temporary directory.
    Sqlite,
    /// A brand-new database on the PostgreSQL test server, dropped afterwards.
    Postgres,
}

/// The one way to run a test on both databases: each listed function becomes the two tests
/// `sqlite::NAME` and `postgres::NAME` of the module that lists it, each on a brand-new
/// database (so `cargo test --test AREA NAME` runs both, `cargo test --test AREA sqlite::`
/// every SQLite one). What the function is given depends on its list:
///
/// - `store`: `async fn NAME<S: ContractStore>(store: S)`, a migrated store;
/// - `store_and_raw`: `async fn NAME<S: ContractStore>(store: S, raw: RawDb)`, a migrated
///   store and raw SQL access to its database;
/// - `empty_store`: `async fn NAME<S: ContractStore>(store: S)`, a store whose database has no
///   tables yet;
/// - `backend`: `fn NAME(backend: Backend)`, which makes its database itself (the tests of
///   the binary: `TestDb::new(backend)`).
///
/// Async tests run on a multi-threaded runtime of two workers. Attributes written before a
/// name (`#[ignore = "why"]`) go on both of its tests. Each list is optional; they come in
/// this order:
///
/// ```ignore
/// crate::both_databases! {
///     store: [round_trip_of_a_minimal_contract],
///     store_and_raw: [invalid_rows_come_back_as_errors_without_failing_the_batch],
///     empty_store: [migrate_twice_then_ready],
///     backend: [#[ignore = "known gap"] some_test_of_the_binary],
/// }
/// ```
#[macro_export]
macro_rules! both_databases {
    (
        $(store: [$($(#[$store_meta:meta])* $store:ident),* $(,)?] $(,)?)?
        $(store_and_raw: [$($(#[$raw_meta:meta])* $raw:ident),* $(,)?] $(,)?)?
        $(empty_store: [$($(#[$empty_meta:meta])* $empty:ident),* $(,)?] $(,)?)?
        $(backend: [$($(#[$backend_meta:meta])* $backend:ident),* $(,)?] $(,)?)?
    ) => {
        mod sqlite {
            $($(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                $(#[$store_meta])*
                async fn $store() {
                    let (store, _dir) = $crate::support::fresh_sqlite().await;
                    super::$store(store).await;
                }
            )*)?
            $($(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                $(#[$raw_meta])*
                async fn $raw() {
                    let (store, dir) = $crate::support::fresh_sqlite().await;
                    super::$raw(store, $crate::support::RawDb::sqlite(&dir)).await;
                }
            )*)?
            $($(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                $(#[$empty_meta])*
                async fn $empty() {
                    let (store, _dir) = $crate::support::empty_sqlite().await;
                    super::$empty(store).await;
                }
            )*)?
            $($(
                #[test]
                $(#[$backend_meta])*
                fn $backend() {
                    super::$backend($crate::support::Backend::Sqlite);
                }
            )*)?
        }

        mod postgres {
            $($(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                $(#[$store_meta])*
                async fn $store() {
                    $crate::support::with_postgres(true, |store, _raw| super::$store(store)).await;
                }
            )*)?
            $($(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                $(#[$raw_meta])*
                async fn $raw() {
                    $crate::support::with_postgres(true, super::$raw).await;
                }
            )*)?
            $($(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                $(#[$empty_meta])*
                async fn $empty() {
                    $crate::support::with_postgres(false, |store, _raw| super::$empty(store)).await;
                }
            )*)?
            $($(
                #[test]
                $(#[$backend_meta])*
                fn $backend() {
                    super::$backend($crate::support::Backend::Postgres);
                }
            )*)?
        }
    };
}

/// The server the PostgreSQL tests use unless `CONTRACTD_TEST_POSTGRES_URL` names another.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Every test database's name starts with this (followed by its creation time and a uuid).
pub const TEST_DATABASE_PREFIX: &str = "contractd_test_";

/// Test databases older than this are dropped by the next test process (leftovers of a
/// killed run or of [`fresh_postgres`], which cannot drop its own).
const STALE_AFTER: Duration = Duration::from_secs(6 * 3600);

/// The URL of the PostgreSQL server's maintenance database.
pub fn postgres_admin_url() -> String {
    std::env::var("CONTRACTD_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into())
}

/// The `sqlite://` URL of the database file `t.db` in `dir`.
pub fn sqlite_url(dir: &TempDir) -> String {
    format!("sqlite://{}/t.db", dir.path().display())
}

async fn connect_sqlite(url: &str) -> SqliteStore {
    SqliteStore::connect(&SqliteSettings {
        url: url.to_string(),
        max_connections: 4,
        busy_timeout: Duration::from_secs(10),
    })
    .await
    .unwrap_or_else(|error| panic!("cannot open the SQLite test database {url}: {error}"))
}

/// A new SQLite database file in a temporary directory, without its tables. Keep the
/// directory alive as long as the store.
pub async fn empty_sqlite() -> (SqliteStore, TempDir) {
    let dir = tempfile::tempdir().expect("cannot create a temporary directory");
    let store = connect_sqlite(&sqlite_url(&dir)).await;
    (store, dir)
}

/// A new, migrated SQLite database file in a temporary directory. Keep the directory alive as
/// long as the store.
pub async fn fresh_sqlite() -> (SqliteStore, TempDir) {
    let (store, dir) = empty_sqlite().await;
    store
        .migrate()
        .await
        .expect("migrating the SQLite test database");
    (store, dir)
}

async fn admin_connection() -> PgConnection {
    let url = postgres_admin_url();
    let connecting = tokio::time::timeout(Duration::from_secs(15), PgConnection::connect(&url));
    match connecting.await {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => panic!(
            "PostgreSQL test server at {} is unreachable ({error}); start it or point \
             CONTRACTD_TEST_POSTGRES_URL at one (trust auth, a user that may create databases)",
            redact_url(&url)
        ),
        Err(_) => panic!(
            "PostgreSQL test server at {} did not answer within 15 s; start it or point \
             CONTRACTD_TEST_POSTGRES_URL at one",
            redact_url(&url)
        ),
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// Drop test databases left behind long ago (once per test process). A database somebody is
/// still connected to is left alone.
async fn drop_stale_databases(admin: &mut PgConnection) {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::SeqCst) {
        return;
    }
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE $1")
            .bind(format!("{TEST_DATABASE_PREFIX}%"))
            .fetch_all(&mut *admin)
            .await
            .unwrap_or_default();
    let cutoff = unix_seconds().saturating_sub(STALE_AFTER.as_secs());
    for name in names {
        let created = name
            .strip_prefix(TEST_DATABASE_PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|seconds| seconds.parse::<u64>().ok());
        if created.is_some_and(|created| created < cutoff) {
            let _ = admin
                .execute(format!("DROP DATABASE IF EXISTS \"{name}\"").as_str())
                .await;
        }
    }
}

/// Create a brand-new, empty database on the test server and return its URL.
pub async fn fresh_postgres_url() -> String {
    let mut admin = admin_connection().await;
    drop_stale_databases(&mut admin).await;
    let name = format!(
        "{TEST_DATABASE_PREFIX}{}_{}",
        unix_seconds(),
        uuid::Uuid::new_v4().simple()
    );
    // template0: nobody can be connected to it, so creating from it never fails for that.
    admin
        .execute(format!("CREATE DATABASE \"{name}\" TEMPLATE template0").as_str())
        .await
        .unwrap_or_else(|error| panic!("cannot create the test database {name}: {error}"));
    let _ = admin.close().await;
    let mut url = url::Url::parse(&postgres_admin_url()).expect("CONTRACTD_TEST_POSTGRES_URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// Open a store on `url` (not migrated).
pub async fn connect_postgres(url: &str) -> PostgresStore {
    PostgresStore::connect(&PostgresSettings {
        url: url.to_string(),
        direct_url: None,
        statements: Statements::Prepared,
        max_connections: 4,
        connect_timeout: Duration::from_secs(15),
    })
    .await
    .unwrap_or_else(|error| {
        panic!(
            "cannot connect to the PostgreSQL test database {}: {error}",
            redact_url(url)
        )
    })
}

/// A store on a brand-new, migrated PostgreSQL database. The database is left on the server
/// (dropped by a later test process once stale); [`with_postgres`] drops its database at once.
pub async fn fresh_postgres() -> PostgresStore {
    let store = connect_postgres(&fresh_postgres_url().await).await;
    store
        .migrate()
        .await
        .expect("migrating the PostgreSQL test database");
    store
}

/// Drop the test database at `url`, closing whatever is still connected to it.
pub async fn drop_postgres(url: &str) {
    let Some(name) = url::Url::parse(url)
        .ok()
        .map(|parsed| parsed.path().trim_start_matches('/').to_string())
        .filter(|name| name.starts_with(TEST_DATABASE_PREFIX))
    else {
        return;
    };
    let mut admin = admin_connection().await;
    let _ = admin
        .execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
        .await;
    let _ = admin.close().await;
}

/// Run `test` on a store over a brand-new PostgreSQL database (migrated when `migrated`),
/// then drop the database, also when the test panics (the panic goes on afterwards).
pub async fn with_postgres<F, Fut>(migrated: bool, test: F)
where
    F: FnOnce(PostgresStore, RawDb) -> Fut,
    Fut: Future<Output = ()>,
{
    let url = fresh_postgres_url().await;
    let store = connect_postgres(&url).await;
    if migrated {
        store
            .migrate()
            .await
            .expect("migrating the PostgreSQL test database");
    }
    let outcome = AssertUnwindSafe(test(store.clone(), RawDb::Postgres(url.clone())))
        .catch_unwind()
        .await;
    store.close().await;
    drop_postgres(&url).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Direct SQL access to a test database, bypassing the store (to play another system that
/// writes rows the store would never write).
#[derive(Debug, Clone)]
pub enum RawDb {
    /// The URL of a SQLite test database.
    Sqlite(String),
    /// The URL of a PostgreSQL test database.
    Postgres(String),
}

impl RawDb {
    /// Raw access to the SQLite database in `dir`.
    pub fn sqlite(dir: &TempDir) -> RawDb {
        RawDb::Sqlite(sqlite_url(dir))
    }

    /// Run one statement; panics when it fails. Returns the number of rows it changed.
    pub async fn execute(&self, sql: &str) -> u64 {
        let outcome = match self {
            RawDb::Sqlite(url) => {
                let mut connection = SqliteConnection::connect(url)
                    .await
                    .unwrap_or_else(|error| panic!("cannot open {url}: {error}"));
                let outcome = connection.execute(sql).await;
                let _ = connection.close().await;
                outcome.map(|done| done.rows_affected())
            }
            RawDb::Postgres(url) => {
                let mut connection = PgConnection::connect(url)
                    .await
                    .unwrap_or_else(|error| panic!("cannot connect to {url}: {error}"));
                let outcome = connection.execute(sql).await;
                let _ = connection.close().await;
                outcome.map(|done| done.rows_affected())
            }
        };
        outcome.unwrap_or_else(|error| panic!("raw SQL failed: {sql}: {error}"))
    }
}

/// A date written `YYYY-MM-DD`, as in `date("2025-01-31")`; panics on anything else.
pub fn date(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .unwrap_or_else(|error| panic!("not a YYYY-MM-DD date: {text:?}: {error}"))
}

/// A contract from one line of the import format (UTC when it names no zone). Panics with
/// the field errors when the record is invalid.
pub fn contract_from_json(json: &str) -> Contract {
    read_record(json)
        .and_then(|record| {
            record.parse(&ParseDefaults {
                time_zone: chrono_tz::UTC,
            })
        })
        .unwrap_or_else(|error| panic!("invalid test contract: {error}\n{json}"))
}

/// A contract from `base` with the fields of `patch` replaced, its cancellation dates
/// computed as of `today`, as import stores it.
pub fn patched_contract(
    mut base: serde_json::Value,
    patch: serde_json::Value,
    today: NaiveDate,
) -> Contract {
    if let (Some(target), Some(source)) = (base.as_object_mut(), patch.as_object()) {
        for (key, value) in source {
            target.insert(key.clone(), value.clone());
        }
    }
    let mut contract = contract_from_json(&base.to_string());
    contract.recompute_cancellation_dates(today);
    contract
}

/// Every stored contract, read page by page in id order; a stored contract that breaks the
/// rules fails the test.
pub async fn all_contracts<S: ContractStore>(store: &S) -> Vec<Contract> {
    let mut contracts = Vec::new();
    let mut after = 0;
    loop {
        let page = store.contracts_page(after, 1000).await.expect("page");
        let Some(last) = page.last() else { break };
        after = last.id;
        for loaded in page {
            contracts.push(
                loaded
                    .contract
                    .unwrap_or_else(|error| panic!("a stored contract broke the rules: {error}")),
            );
        }
    }
    contracts
}

/// Noon UTC on `day`: an instant within that business date in UTC and in the zones the tests
/// use around it.
pub fn noon(day: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_hms_opt(12, 0, 0).expect("noon"))
}

/// Import JSON Lines as if on `today` (computed fields as of that day); a failed import fails
/// the test.
pub async fn load<S: ContractStore>(store: &S, lines: &str, today: NaiveDate) {
    import(
        store,
        std::io::BufReader::new(lines.as_bytes()),
        &ParseDefaults {
            time_zone: chrono_tz::UTC,
        },
        noon(today),
        |_| {},
    )
    .await
    .unwrap_or_else(|error| panic!("test import failed: {error:?}"));
}
