//! Connecting to PostgreSQL: the pool, a direct attempt that says why the pool could not
//! connect, and the schema migrations (on a connection of their own to `direct_url` when it
//! is set: the migrator holds a session-level lock, which a transaction pooler cannot keep).

use std::str::FromStr;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection as _, PgConnection, PgPool};

use super::executor::{Pool, Statements};
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
        if let Some(direct) = &settings.direct_url {
            // Checked now, so that a wrong one fails every command, not only a migration.
            PgConnectOptions::from_str(direct)
                .map_err(|error| StorageError::Url(format!("direct_url: {error}")))?;
        }
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(settings.connect_timeout)
            .connect_with(options.clone())
            .await;
        match pool {
            Ok(pool) => Ok(PostgresStore {
                pool: Pool::new(pool, settings.statements),
                direct_url: settings.direct_url.clone(),
                connect_timeout: settings.connect_timeout,
            }),
            // The pool only says it timed out; one direct attempt tells the operator why
            // (connection refused, authentication failed, no such database…).
            Err(sqlx::Error::PoolTimedOut) => {
                match tokio::time::timeout(
                    settings.connect_timeout,
                    PgConnection::connect_with(&options),
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

    /// A store on a pool opened elsewhere (tests, tools), straight to the server.
    pub fn from_pool(pool: PgPool) -> PostgresStore {
        PostgresStore {
            pool: Pool::new(pool, Statements::Prepared),
            direct_url: None,
            connect_timeout: std::time::Duration::from_secs(30),
        }
    }

    /// Close every connection of the pool (e.g. before the database is dropped).
    pub async fn close(&self) {
        self.pool.inner().close().await;
    }

    /// Apply the migrations not applied yet: on a connection of their own to `direct_url`
    /// when it is set, else on the pool. Through a transaction pooler without `direct_url`,
    /// only a schema already up to date passes (there is nothing to apply, so no lock to
    /// hold); pending migrations are refused rather than run without their lock.
    pub(super) async fn run_migrations(&self) -> Result<(), StorageError> {
        if let Some(url) = &self.direct_url {
            let options = PgConnectOptions::from_str(url)
                .map_err(|error| StorageError::Url(format!("direct_url: {error}")))?;
            let mut connection =
                tokio::time::timeout(self.connect_timeout, PgConnection::connect_with(&options))
                    .await
                    .map_err(|_| {
                        sqlx::Error::Io(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "connecting to direct_url timed out",
                        ))
                    })??;
            let outcome = migrator().run_direct(&mut connection).await;
            let _ = connection.close().await;
            return Ok(outcome?);
        }
        match self.pool.statements() {
            Statements::Prepared => Ok(migrator().run(self.pool.inner()).await?),
            Statements::Unnamed if self.schema_ready().await? => Ok(()),
            Statements::Unnamed => Err(StorageError::MigrationsNeedSession),
        }
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
