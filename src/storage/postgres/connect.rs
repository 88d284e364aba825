//! Connecting to PostgreSQL: the pool, a direct attempt that says why the pool could not
//! connect, and the schema migrations.

use std::str::FromStr;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection as _, PgPool};

use super::{PostgresSettings, PostgresStore};
use crate::storage::shared::{all_applied, migrations};
use crate::storage::StorageError;

/// The PostgreSQL migrations, embedded in the binary.
fn migrator() -> Migrator {
    migrations!("postgres")
}

impl PostgresStore {
    /// Connect to the database (it must exist; [`crate::storage::ContractStore::migrate`]
    /// creates the tables).
    pub async fn connect(settings: &PostgresSettings) -> Result<PostgresStore, StorageError> {
        let options = PgConnectOptions::from_str(&settings.url)
            .map_err(|error| StorageError::Url(error.to_string()))?;
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(settings.connect_timeout)
            .connect_with(options.clone())
            .await;
        match pool {
            Ok(pool) => Ok(PostgresStore { pool }),
            // The pool only says it timed out; one direct attempt tells the operator why
            // (connection refused, authentication failed, no such database…).
            Err(sqlx::Error::PoolTimedOut) => {
                match tokio::time::timeout(
                    settings.connect_timeout,
                    sqlx::PgConnection::connect_with(&options),
                )
                .await
                {
                    Ok(Err(cause)) => Err(cause.into()),
                    _ => Err(sqlx::Error::PoolTimedOut.into()),
                }
            }
            Err(error) => Err(error.into()),
        }
    }

    /// A store on a pool opened elsewhere (tests, tools).
    pub fn from_pool(pool: PgPool) -> PostgresStore {
        PostgresStore { pool }
    }

    /// Close every connection of the pool (e.g. before the database is dropped).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Apply the migrations not applied yet.
    pub(super) async fn run_migrations(&self) -> Result<(), StorageError> {
        migrator().run(&self.pool).await?;
        Ok(())
    }

    /// Whether the database answers and every migration is applied.
    pub(super) async fn schema_ready(&self) -> Result<bool, StorageError> {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(&self.pool)
            .await?;
        if !exists {
            return Ok(false);
        }
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await?;
        Ok(all_applied(&migrator(), &versions))
    }
}
