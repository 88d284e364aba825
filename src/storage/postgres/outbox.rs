//! The outbox on PostgreSQL: the feed in commit order by (transaction id, id), read only up
//! to the oldest transaction still running (see [`crate::storage::OutboxStore`]), and the
//! webhook deliveries, claimed with `FOR UPDATE SKIP LOCKED` so replicas never take the same
//! row.

use std::sync::LazyLock;

use super::read::PostgresDialect;
use super::PostgresStore;
use crate::storage::columns::{
    qualified_select_list, select_list, BACKLOG_COLUMNS, CLAIMED_COLUMNS, CURSOR_COLUMNS,
    DELIVERY_COLUMNS, DELIVERY_EVENT_COLUMNS, ENDPOINT_COLUMNS, FEED_COLUMNS, FEED_ENTRY_COLUMNS,
    FEED_POSITION_COLUMNS,
};
use crate::storage::rows::{
    backlog, cursor, delivery_record, endpoint_state, feed_entry, feed_event, feed_position,
    ClaimedRow,
};
use crate::storage::shared::{
    claimed_deliveries, fan_out_plan, requeue_targets, wall_clock_ms, AttemptColumns,
    ENDPOINT_GONE_REASON,
};
use crate::storage::{
    Attempt, Backlog, ClaimedDelivery, DeliveryFilter, DeliveryRecord, EndpointState, FeedEvent,
    FeedPosition, Requeue, StorageError, Subscription,
};

/// The feed's visibility rule: only events of transactions older than every transaction
/// still running, so an event that becomes visible later always has a larger position than
/// every event read now.
const VISIBLE: &str = "contract_events.tx_id < pg_snapshot_xmin(pg_current_snapshot())";

/// Feed events after the position (`$1` transaction, `$2` id), of the kinds `$3` (every kind
/// when empty), at most `$4`, in feed order. The columns are ordered qualified: the select
/// list's `tx_id` is its bigint form, which the index does not hold.
fn feed_sql(select: &str) -> String {
    format!(
        "SELECT {select} FROM contract_events WHERE {VISIBLE} \
         AND (contract_events.tx_id, contract_events.id) > ($1::text::xid8, $2::bigint) \
         AND (cardinality($3::text[]) = 0 OR kind = ANY($3::text[])) \
         ORDER BY contract_events.tx_id, contract_events.id LIMIT $4"
    )
}

/// See [`feed_sql`]: whole events.
static FEED_SQL: LazyLock<String> =
    LazyLock::new(|| feed_sql(&select_list::<PostgresDialect>(FEED_COLUMNS)));

/// See [`feed_sql`]: what fan-out needs of each event (position, contract, kind).
static FEED_ENTRIES_SQL: LazyLock<String> = LazyLock::new(|| {
    feed_sql(&select_list::<PostgresDialect>(
        FEED_ENTRY_COLUMNS.iter().copied(),
    ))
});

/// The feed position of the event `$1`, when the feed shows it.
static POSITION_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM contract_events WHERE id = $1 AND {VISIBLE}",
        select_list::<PostgresDialect>(FEED_POSITION_COLUMNS.iter().copied())
    )
});

/// The events of the ids in `$1`.
static EVENTS_BY_ID_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM contract_events WHERE id = ANY($1::bigint[])",
        select_list::<PostgresDialect>(FEED_COLUMNS)
    )
});

/// The endpoint row of `$1` created with its cursor at the head of the feed (the last
/// visible event, or the start when there is none), disabled as `$2`/`$3`, created at `$4`,
/// followed by `on_conflict`.
fn insert_endpoint_sql(on_conflict: &str) -> String {
    format!(
        "INSERT INTO webhook_endpoints (name, cursor_tx, cursor_id, disabled_at_ms, \
         disabled_reason, created_at_ms) \
         SELECT $1, COALESCE(head.tx_id, 0), COALESCE(head.id, 0), $2, $3, $4 \
         FROM (SELECT 1) AS one LEFT JOIN LATERAL (SELECT {position} FROM contract_events \
         WHERE {VISIBLE} ORDER BY contract_events.tx_id DESC, contract_events.id DESC LIMIT 1) \
         AS head ON true ON CONFLICT (name) {on_conflict}",
        position = select_list::<PostgresDialect>(FEED_POSITION_COLUMNS.iter().copied()),
    )
}

/// Create the endpoint row when missing (see [`insert_endpoint_sql`]).
static CREATE_ENDPOINT_SQL: LazyLock<String> = LazyLock::new(|| insert_endpoint_sql("DO NOTHING"));

/// Create the endpoint row when missing, and set its disabled state in any case.
static SET_DISABLED_SQL: LazyLock<String> = LazyLock::new(|| {
    insert_endpoint_sql(
        "DO UPDATE SET disabled_at_ms = excluded.disabled_at_ms, \
         disabled_reason = excluded.disabled_reason",
    )
});

/// The endpoint's cursor, its row locked until the transaction ends.
static LOCK_ENDPOINT_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM webhook_endpoints WHERE name = $1 FOR UPDATE",
        select_list::<PostgresDialect>(CURSOR_COLUMNS)
    )
});

/// Take the due deliveries: pending, due, not leased by a live process, to one of the
/// endpoints `$1`, and the earliest undelivered one of their contract for their endpoint
/// (an earlier delivery that is leased, waiting for a retry or failed holds the later ones
/// back: its status is still not `delivered`), and never of an endpoint that is disabled
/// (another process may have disabled it after a 410 Gone). Rows another claim has locked
/// are skipped; the candidates are picked in a CTE so they are evaluated once.
static CLAIM_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH picked AS (SELECT d.id FROM webhook_deliveries AS d \
         WHERE d.status = 'pending' AND d.next_attempt_ms <= $3 \
         AND (d.lease_until_ms IS NULL OR d.lease_until_ms < $3) \
         AND d.endpoint = ANY($1::text[]) \
         AND NOT EXISTS (SELECT 1 FROM webhook_deliveries AS e WHERE e.endpoint = d.endpoint \
         AND e.contract_id = d.contract_id AND e.event_id < d.event_id \
         AND e.status <> 'delivered') \
         AND NOT EXISTS (SELECT 1 FROM webhook_endpoints AS x WHERE x.name = d.endpoint \
         AND x.disabled_at_ms IS NOT NULL) \
         ORDER BY d.event_id LIMIT $5 FOR UPDATE SKIP LOCKED) \
         UPDATE webhook_deliveries AS w SET lease_owner = $2, lease_until_ms = $3 + $4 \
         FROM picked WHERE w.id = picked.id RETURNING {}",
        qualified_select_list::<PostgresDialect>("w", CLAIMED_COLUMNS)
    )
});

/// Deliveries as listed, newest first: endpoint `$1` (any when NULL), only failed when `$2`,
/// at most `$3`.
static DELIVERIES_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {}, {} FROM webhook_deliveries AS d JOIN contract_events AS e \
         ON e.id = d.event_id WHERE ($1::text IS NULL OR d.endpoint = $1) \
         AND (NOT $2 OR d.status = 'failed') ORDER BY d.id DESC LIMIT $3",
        qualified_select_list::<PostgresDialect>("d", DELIVERY_COLUMNS),
        qualified_select_list::<PostgresDialect>("e", DELIVERY_EVENT_COLUMNS),
    )
});

/// Every endpoint's state, by name in byte order (as SQLite sorts).
static ENDPOINTS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM webhook_endpoints ORDER BY name COLLATE \"C\"",
        select_list::<PostgresDialect>(ENDPOINT_COLUMNS)
    )
});

/// The backlog of every endpoint known (by its row or by its deliveries): pending and failed
/// rows are found through their partial indexes, delivered ones are never read.
static BACKLOG_SQL: LazyLock<String> = LazyLock::new(|| {
    let [endpoint, pending, oldest, failed] = BACKLOG_COLUMNS.map(|column| column.name);
    format!(
        "SELECT {endpoint}, SUM({pending})::bigint AS {pending}, MIN({oldest}) AS {oldest}, \
         SUM({failed})::bigint AS {failed} FROM ( \
         SELECT name AS {endpoint}, 0::bigint AS {pending}, NULL::bigint AS {oldest}, \
         0::bigint AS {failed} FROM webhook_endpoints \
         UNION ALL SELECT d.endpoint, COUNT(*), MIN(e.recorded_at_ms), 0 \
         FROM webhook_deliveries AS d JOIN contract_events AS e ON e.id = d.event_id \
         WHERE d.status = 'pending' GROUP BY d.endpoint \
         UNION ALL SELECT endpoint, 0, NULL, COUNT(*) FROM webhook_deliveries \
         WHERE status = 'failed' GROUP BY endpoint) AS b \
         GROUP BY {endpoint} ORDER BY {endpoint} COLLATE \"C\""
    )
});

impl PostgresStore {
    /// See [`crate::storage::OutboxStore::feed`].
    pub(super) async fn read_feed(
        &self,
        after: Option<FeedPosition>,
        kinds: &[String],
        limit: u32,
    ) -> Result<Vec<FeedEvent>, StorageError> {
        let after = after.unwrap_or(FeedPosition {
            transaction: 0,
            id: 0,
        });
        let rows = sqlx::query(&FEED_SQL)
            .bind(after.transaction)
            .bind(after.id)
            .bind(kinds)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(feed_event).collect()
    }

    /// See [`crate::storage::OutboxStore::feed_position`].
    pub(super) async fn read_feed_position(
        &self,
        event_id: i64,
    ) -> Result<Option<FeedPosition>, StorageError> {
        let row = sqlx::query(&POSITION_SQL)
            .bind(event_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(feed_position).transpose()?)
    }

    /// See [`crate::storage::OutboxStore::fan_out`].
    pub(super) async fn write_fan_out(
        &self,
        subscription: &Subscription,
        limit: u32,
        now_ms: i64,
    ) -> Result<u64, StorageError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(&CREATE_ENDPOINT_SQL)
            .bind(&subscription.endpoint)
            .bind(None::<i64>)
            .bind(None::<String>)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(&LOCK_ENDPOINT_SQL)
            .bind(&subscription.endpoint)
            .fetch_one(&mut *tx)
            .await?;
        let after = cursor(&row)?;
        let rows = sqlx::query(&FEED_ENTRIES_SQL)
            .bind(after.transaction)
            .bind(after.id)
            .bind(&[] as &[String])
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        let entries = rows.iter().map(feed_entry).collect::<Result<Vec<_>, _>>()?;
        let plan = fan_out_plan(subscription, &entries);
        if !plan.event_ids.is_empty() {
            sqlx::query(
                "INSERT INTO webhook_deliveries (endpoint, event_id, contract_id, status, \
                 attempts, next_attempt_ms, created_at_ms) \
                 SELECT $1, u.event_id, u.contract_id, 'pending', 0, $4, $4 \
                 FROM unnest($2::bigint[], $3::bigint[]) WITH ORDINALITY \
                 AS u(event_id, contract_id, ord) ORDER BY ord \
                 ON CONFLICT (endpoint, event_id) DO NOTHING",
            )
            .bind(&subscription.endpoint)
            .bind(&plan.event_ids)
            .bind(&plan.contract_ids)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(last) = plan.cursor {
            sqlx::query(
                "UPDATE webhook_endpoints SET cursor_tx = $2, cursor_id = $3 WHERE name = $1",
            )
            .bind(&subscription.endpoint)
            .bind(last.transaction)
            .bind(last.id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(plan.passed)
    }

    /// See [`crate::storage::OutboxStore::claim_deliveries`].
    pub(super) async fn write_claim_deliveries(
        &self,
        endpoints: &[String],
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<ClaimedDelivery>, StorageError> {
        if endpoints.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&CLAIM_SQL)
            .bind(endpoints)
            .bind(owner)
            .bind(now_ms)
            .bind(lease_ms)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        let claimed = rows
            .iter()
            .map(ClaimedRow::decode)
            .collect::<Result<Vec<_>, _>>()?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = claimed.iter().map(|row| row.event_id).collect();
        let rows = sqlx::query(&EVENTS_BY_ID_SQL)
            .bind(&ids)
            .fetch_all(&self.pool)
            .await?;
        let events = rows.iter().map(feed_event).collect::<Result<Vec<_>, _>>()?;
        Ok(claimed_deliveries(claimed, events))
    }

    /// See [`crate::storage::OutboxStore::record_attempt`].
    pub(super) async fn write_attempt(
        &self,
        delivery_id: i64,
        owner: &str,
        attempt: &Attempt,
    ) -> Result<bool, StorageError> {
        let columns = AttemptColumns::of(attempt);
        let mut tx = self.pool.begin().await?;
        let endpoint: Option<String> = sqlx::query_scalar(
            "UPDATE webhook_deliveries SET status = $3, attempts = attempts + 1, \
             next_attempt_ms = $4, delivered_at_ms = COALESCE($5, delivered_at_ms), \
             last_status = $6, last_error = $7, last_attempt_ms = $8, lease_owner = NULL, \
             lease_until_ms = NULL \
             WHERE id = $1 AND lease_owner = $2 AND status = 'pending' RETURNING endpoint",
        )
        .bind(delivery_id)
        .bind(owner)
        .bind(columns.status.as_str())
        .bind(columns.next_attempt_ms)
        .bind(columns.delivered_at_ms)
        .bind(attempt.http_status.map(i64::from))
        .bind(attempt.error.as_deref())
        .bind(attempt.at_ms)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(endpoint) = endpoint else {
            return Ok(false);
        };
        if columns.disables_endpoint {
            sqlx::query(&SET_DISABLED_SQL)
                .bind(&endpoint)
                .bind(attempt.at_ms)
                .bind(ENDPOINT_GONE_REASON)
                .bind(attempt.at_ms)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// See [`crate::storage::OutboxStore::set_endpoint_disabled`].
    pub(super) async fn write_endpoint_disabled(
        &self,
        endpoint: &str,
        disabled: Option<(i64, String)>,
    ) -> Result<(), StorageError> {
        let (at_ms, reason) = disabled.unzip();
        sqlx::query(&SET_DISABLED_SQL)
            .bind(endpoint)
            .bind(at_ms)
            .bind(reason)
            .bind(at_ms.unwrap_or_else(wall_clock_ms))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// See [`crate::storage::OutboxStore::endpoint_states`].
    pub(super) async fn read_endpoint_states(&self) -> Result<Vec<EndpointState>, StorageError> {
        let rows = sqlx::query(&ENDPOINTS_SQL).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(endpoint_state).collect::<Result<_, _>>()?)
    }

    /// See [`crate::storage::OutboxStore::deliveries`].
    pub(super) async fn read_deliveries(
        &self,
        filter: &DeliveryFilter,
    ) -> Result<Vec<DeliveryRecord>, StorageError> {
        let rows = sqlx::query(&DELIVERIES_SQL)
            .bind(filter.endpoint.as_deref())
            .bind(filter.failed_only)
            .bind(i64::from(filter.limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(delivery_record).collect()
    }

    /// See [`crate::storage::OutboxStore::requeue`].
    pub(super) async fn write_requeue(
        &self,
        endpoints: &[String],
        what: &Requeue,
        now_ms: i64,
    ) -> Result<u64, StorageError> {
        let (endpoints, event_ids) = requeue_targets(endpoints, what);
        if endpoints.is_empty() {
            return Ok(0);
        }
        let done = match event_ids {
            None => {
                sqlx::query(
                    "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, \
                     next_attempt_ms = $2, lease_owner = NULL, lease_until_ms = NULL \
                     WHERE status = 'failed' AND endpoint = ANY($1::text[])",
                )
                .bind(&endpoints)
                .bind(now_ms)
                .execute(&self.pool)
                .await?
            }
            Some(ids) if ids.is_empty() => return Ok(0),
            Some(ids) => {
                sqlx::query(
                    "INSERT INTO webhook_deliveries (endpoint, event_id, contract_id, status, \
                     attempts, next_attempt_ms, created_at_ms) \
                     SELECT p.endpoint, e.id, e.contract_id, 'pending', 0, $3, $3 \
                     FROM unnest($1::text[]) AS p(endpoint) \
                     CROSS JOIN contract_events AS e WHERE e.id = ANY($2::bigint[]) \
                     ON CONFLICT (endpoint, event_id) DO UPDATE SET status = 'pending', \
                     attempts = 0, next_attempt_ms = excluded.next_attempt_ms, \
                     lease_owner = NULL, lease_until_ms = NULL, delivered_at_ms = NULL",
                )
                .bind(&endpoints)
                .bind(&ids)
                .bind(now_ms)
                .execute(&self.pool)
                .await?
            }
        };
        Ok(done.rows_affected())
    }

    /// See [`crate::storage::OutboxStore::backlog`].
    pub(super) async fn read_backlog(&self) -> Result<Vec<Backlog>, StorageError> {
        let rows = sqlx::query(&BACKLOG_SQL).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(backlog).collect::<Result<_, _>>()?)
    }
}
