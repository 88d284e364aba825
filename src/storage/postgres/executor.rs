//! The one place that decides how statements reach PostgreSQL, so that a transaction pooler
//! (PgBouncer in `pool_mode = transaction`) can sit between contractd and the server.
//!
//! A transaction pooler lends a server connection for one transaction only; the next
//! transaction of the same client connection may run on another server connection, shared
//! with other clients. Two things sqlx does by default break there:
//!
//! - It prepares every statement under a name (`sqlx_s_1`, `sqlx_s_2`… counted per client
//!   connection) and keeps it for reuse. Another client's `sqlx_s_1` already exists on the
//!   server connection it is lent (`prepared statement "sqlx_s_1" already exists`), and a
//!   statement kept for reuse is gone when the next transaction runs elsewhere. With
//!   `statement-cache-capacity=0` sqlx still names each statement, it only stops reusing
//!   (and never closes) them. A query marked not persistent uses the unnamed statement
//!   instead, which the server replaces with each new one.
//! - It sends a statement in two exchanges: Parse, Describe, Sync; then Bind, Execute, Sync.
//!   Outside a transaction the pooler may hand the server connection to another client at the
//!   first Sync, and the Bind would then run on a connection where the unnamed statement is
//!   missing, or is someone else's. So a statement outside a transaction is sent inside
//!   `BEGIN` … `COMMIT` of its own: the same effect (a lone statement is its own transaction),
//!   on one server connection from Parse to Commit.
//!
//! [`Pool`] and [`Transaction`] stand where sqlx's pool and transaction would: the queries of
//! `read.rs`, `write.rs` and `outbox.rs` run on them unchanged. With
//! [`Statements::Prepared`] they pass every query to sqlx as it is.

use std::fmt;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use sqlx::postgres::{PgArguments, PgQueryResult, PgRow, PgStatement, PgTypeInfo};
use sqlx::{Describe, Either, Execute, Executor, PgPool, Postgres};

/// How statements are sent to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statements {
    /// Named and reused on each connection (sqlx's default): one exchange per execution of a
    /// statement already prepared. Needs the same server connection for a client connection's
    /// whole life: a direct connection, or a pooler in session mode.
    Prepared,
    /// Unnamed, prepared again at each execution, and a lone statement wrapped in a
    /// transaction of its own: nothing outlives a transaction, so a transaction pooler may
    /// hand each transaction to any server connection.
    Unnamed,
}

/// The connection pool every query of the store goes through.
#[derive(Clone)]
pub(crate) struct Pool {
    pool: PgPool,
    statements: Statements,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("statements", &self.statements)
            .finish_non_exhaustive()
    }
}

impl Pool {
    pub(crate) fn new(pool: PgPool, statements: Statements) -> Pool {
        Pool { pool, statements }
    }

    /// sqlx's own pool, for what sends no statement of ours (closing, or a migrator straight
    /// to the server).
    pub(crate) fn inner(&self) -> &PgPool {
        &self.pool
    }

    /// How this pool sends statements.
    pub(crate) fn statements(&self) -> Statements {
        self.statements
    }

    /// Begin a transaction on a connection of the pool.
    pub(crate) async fn begin(&self) -> Result<Transaction, sqlx::Error> {
        Ok(Transaction {
            connection: InTransaction {
                tx: self.pool.begin().await?,
                statements: self.statements,
            },
        })
    }
}

/// A transaction: its queries run on `&mut *tx`, it ends with [`Transaction::commit`] (or is
/// rolled back when dropped), as sqlx's own.
#[derive(Debug)]
pub(crate) struct Transaction {
    connection: InTransaction,
}

impl Transaction {
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        self.connection.tx.commit().await
    }
}

impl std::ops::Deref for Transaction {
    type Target = InTransaction;

    fn deref(&self) -> &InTransaction {
        &self.connection
    }
}

impl std::ops::DerefMut for Transaction {
    fn deref_mut(&mut self) -> &mut InTransaction {
        &mut self.connection
    }
}

/// The connection of a [`Transaction`], as queries see it.
#[derive(Debug)]
pub(crate) struct InTransaction {
    tx: sqlx::Transaction<'static, Postgres>,
    statements: Statements,
}

/// A query as given, except that it is not prepared under a name when `unnamed`.
struct Sent<E> {
    query: E,
    unnamed: bool,
}

impl<'q, E: Execute<'q, Postgres>> Execute<'q, Postgres> for Sent<E> {
    fn sql(&self) -> &'q str {
        self.query.sql()
    }

    fn statement(&self) -> Option<&PgStatement<'q>> {
        self.query.statement()
    }

    fn take_arguments(&mut self) -> Result<Option<PgArguments>, sqlx::error::BoxDynError> {
        self.query.take_arguments()
    }

    fn persistent(&self) -> bool {
        !self.unnamed && self.query.persistent()
    }
}

type Step = Either<PgQueryResult, PgRow>;

impl<'c> Executor<'c> for &'c Pool {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Result<Step, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        match self.statements {
            Statements::Prepared => self.pool.fetch_many(query),
            Statements::Unnamed => {
                let pool = self;
                futures::stream::once(async move {
                    let mut tx = pool.begin().await?;
                    let steps: Vec<Step> = (&mut *tx).fetch_many(query).try_collect().await?;
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(futures::stream::iter(steps.into_iter().map(Ok)))
                })
                .try_flatten()
                .boxed()
            }
        }
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        match self.statements {
            Statements::Prepared => self.pool.fetch_optional(query),
            Statements::Unnamed => {
                let pool = self;
                Box::pin(async move {
                    let mut tx = pool.begin().await?;
                    let row = (&mut *tx).fetch_optional(query).await?;
                    tx.commit().await?;
                    Ok(row)
                })
            }
        }
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement<'q>, sqlx::Error>>
    where
        'c: 'e,
    {
        // A prepared statement is named by definition: only a session keeps it.
        self.pool.prepare_with(sql, parameters)
    }

    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> BoxFuture<'e, Result<Describe<Postgres>, sqlx::Error>>
    where
        'c: 'e,
    {
        self.pool.describe(sql)
    }
}

impl<'c> Executor<'c> for &'c mut InTransaction {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Result<Step, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        let unnamed = self.statements == Statements::Unnamed;
        (&mut *self.tx).fetch_many(Sent { query, unnamed })
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        let unnamed = self.statements == Statements::Unnamed;
        (&mut *self.tx).fetch_optional(Sent { query, unnamed })
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement<'q>, sqlx::Error>>
    where
        'c: 'e,
    {
        (&mut *self.tx).prepare_with(sql, parameters)
    }

    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> BoxFuture<'e, Result<Describe<Postgres>, sqlx::Error>>
    where
        'c: 'e,
    {
        (&mut *self.tx).describe(sql)
    }
}
