//! Opening the SQLite file: the two pools and their pragmas, and the schema migrations.

use std::str::FromStr;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::{SqliteSettings, SqliteStore};
use crate::storage::shared::{all_applied, migrations};
use crate::storage::StorageError;

/// The SQLite migrations, embedded in the binary.
fn migrator() -> Migrator {
    migrations!("sqlite")
}

/// Page cache of the writing connection, KiB: a batch's pages (its contracts, their index
/// entries and events) stay cached between its read and its write, and across batches.
const WRITER_CACHE_KIB: u32 = 32 * 1024;

/// WAL pages after which a commit checkpoints (SQLite's default is 1000): a batch commits a
/// few thousand pages, and checkpointing after every batch would copy pages the next batch
/// rewrites anyway, with two fsyncs each time.
const WAL_AUTOCHECKPOINT_PAGES: u32 = 16 * 1024;

/// Size the WAL file is cut back to after a checkpoint, bytes (a large import grows it to
/// the size of everything it wrote).
const WAL_SIZE_LIMIT_BYTES: u64 = 64 * 1024 * 1024;

impl SqliteStore {
    /// Open (creating when missing) the database file.
    pub async fn connect(settings: &SqliteSettings) -> Result<SqliteStore, StorageError> {
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(Self::writer_options(settings)?)
            .await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .connect_with(Self::reader_options(settings)?)
            .await?;
        Ok(SqliteStore { pool, writer })
    }

    /// The options of the connections that only read.
    fn reader_options(settings: &SqliteSettings) -> Result<SqliteConnectOptions, StorageError> {
        Ok(SqliteConnectOptions::from_str(&settings.url)
            .map_err(|error| StorageError::Url(error.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(settings.busy_timeout)
            .foreign_keys(true)
            // Statement journals (a statement inside a transaction may have to be undone on
            // its own) stay in memory instead of temporary files.
            .pragma("temp_store", "memory"))
    }

    /// The options of the writing connection. Public so that tools writing to the same
    /// database (the benchmark's set-based floor) can use the same settings.
    pub fn writer_options(settings: &SqliteSettings) -> Result<SqliteConnectOptions, StorageError> {
        Ok(Self::reader_options(settings)?
            .pragma("cache_size", format!("-{WRITER_CACHE_KIB}"))
            .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string())
            .pragma("journal_size_limit", WAL_SIZE_LIMIT_BYTES.to_string()))
    }

    /// Apply the migrations not applied yet.
    pub(super) async fn run_migrations(&self) -> Result<(), StorageError> {
        migrator().run(&self.pool).await?;
        Ok(())
    }

    /// Whether the database answers and every migration is applied.
    pub(super) async fn schema_ready(&self) -> Result<bool, StorageError> {
        let applied: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_one(&self.pool)
        .await?;
        if applied == 0 {
            return Ok(false);
        }
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await?;
        Ok(all_applied(&migrator(), &versions))
    }
}
