//! The outbox on SQLite. One writer at a time, so event ids are assigned in commit order and
//! an event's feed position is its id (transaction 0). Every write goes through the writing
//! connection in a `BEGIN IMMEDIATE` transaction, so a claim and an attempt's record never
//! interleave with another process's; lists are bound as one JSON parameter (`json_each`).

use std::sync::LazyLock;

use serde_json::Value;

use super::read::SqliteDialect;
use super::SqliteStore;
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

/// Feed events after the id `?1`, of the kinds in the JSON array `?2` (every kind when it is
/// empty), at most `?3`, in id order.
fn feed_sql(select: &str) -> String {
    format!(
        "SELECT {select} FROM contract_events WHERE id > ?1 \
         AND (json_array_length(?2) = 0 OR kind IN (SELECT value FROM json_each(?2))) \
         ORDER BY id LIMIT ?3"
    )
}

/// See [`feed_sql`]: whole events.
static FEED_SQL: LazyLock<String> =
    LazyLock::new(|| feed_sql(&select_list::<SqliteDialect>(FEED_COLUMNS)));

/// See [`feed_sql`]: what fan-out needs of each event (position, contract, kind).
static FEED_ENTRIES_SQL: LazyLock<String> = LazyLock::new(|| {
    feed_sql(&select_list::<SqliteDialect>(
        FEED_ENTRY_COLUMNS.iter().copied(),
    ))
});

/// The feed position of the event `?1`.
static POSITION_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM contract_events WHERE id = ?1",
        select_list::<SqliteDialect>(FEED_POSITION_COLUMNS.iter().copied())
    )
});

/// The events of the ids in the JSON array `?1`.
static EVENTS_BY_ID_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM contract_events WHERE id IN (SELECT value FROM json_each(?1))",
        select_list::<SqliteDialect>(FEED_COLUMNS)
    )
});

/// The endpoint row of `?1` created with its cursor at the head of the feed (the last
/// event, or the start when there is none), disabled as `?2`/`?3`, created at `?4`, followed
/// by `on_conflict`.
fn insert_endpoint_sql(on_conflict: &str) -> String {
    "INSERT INTO webhook_endpoints (name, cursor_tx, cursor_id, disabled_at_ms, \
     disabled_reason, created_at_ms) \
     SELECT ?1, 0, COALESCE((SELECT MAX(id) FROM contract_events), 0), ?2, ?3, ?4 \
     WHERE true ON CONFLICT (name) "
        .to_string()
        + on_conflict
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

/// The endpoint's cursor.
static ENDPOINT_CURSOR_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM webhook_endpoints WHERE name = ?1",
        select_list::<SqliteDialect>(CURSOR_COLUMNS)
    )
});

/// Take the due deliveries: pending, due, not leased by a live process, to one of the
/// endpoints in the JSON array `?1`, and the earliest undelivered one of their contract for
/// their endpoint (an earlier delivery that is leased, waiting for a retry or failed holds
/// the later ones back: its status is still not `delivered`). A disabled endpoint's
/// deliveries are never taken, whatever the caller believes is enabled (another process may
/// have disabled it after a 410 Gone).
static CLAIM_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE webhook_deliveries SET lease_owner = ?2, lease_until_ms = ?3 + ?4 \
         WHERE id IN (SELECT d.id FROM webhook_deliveries AS d \
         WHERE d.status = 'pending' AND d.next_attempt_ms <= ?3 \
         AND (d.lease_until_ms IS NULL OR d.lease_until_ms < ?3) \
         AND d.endpoint IN (SELECT value FROM json_each(?1)) \
         AND NOT EXISTS (SELECT 1 FROM webhook_deliveries AS e WHERE e.endpoint = d.endpoint \
         AND e.contract_id = d.contract_id AND e.event_id < d.event_id \
         AND e.status <> 'delivered') \
         AND NOT EXISTS (SELECT 1 FROM webhook_endpoints AS x WHERE x.name = d.endpoint \
         AND x.disabled_at_ms IS NOT NULL) \
         ORDER BY d.event_id LIMIT ?5) RETURNING {}",
        select_list::<SqliteDialect>(CLAIMED_COLUMNS)
    )
});

/// Deliveries as listed, newest first: endpoint `?1` (any when NULL), only failed when `?2`,
/// at most `?3`.
static DELIVERIES_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {}, {} FROM webhook_deliveries AS d JOIN contract_events AS e \
         ON e.id = d.event_id WHERE (?1 IS NULL OR d.endpoint = ?1) \
         AND (NOT ?2 OR d.status = 'failed') ORDER BY d.id DESC LIMIT ?3",
        qualified_select_list::<SqliteDialect>("d", DELIVERY_COLUMNS),
        qualified_select_list::<SqliteDialect>("e", DELIVERY_EVENT_COLUMNS),
    )
});

/// Every endpoint's state, by name.
static ENDPOINTS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM webhook_endpoints ORDER BY name",
        select_list::<SqliteDialect>(ENDPOINT_COLUMNS)
    )
});

/// The backlog of every endpoint known (by its row or by its deliveries): pending and failed
/// rows are found through their partial indexes, delivered ones are never read.
static BACKLOG_SQL: LazyLock<String> = LazyLock::new(|| {
    let [endpoint, pending, oldest, failed] = BACKLOG_COLUMNS.map(|column| column.name);
    format!(
        "SELECT {endpoint}, SUM({pending}) AS {pending}, MIN({oldest}) AS {oldest}, \
         SUM({failed}) AS {failed} FROM ( \
         SELECT name AS {endpoint}, 0 AS {pending}, NULL AS {oldest}, 0 AS {failed} \
         FROM webhook_endpoints \
         UNION ALL SELECT d.endpoint, COUNT(*), MIN(e.recorded_at_ms), 0 \
         FROM webhook_deliveries AS d JOIN contract_events AS e ON e.id = d.event_id \
         WHERE d.status = 'pending' GROUP BY d.endpoint \
         UNION ALL SELECT endpoint, 0, NULL, COUNT(*) FROM webhook_deliveries \
         WHERE status = 'failed' GROUP BY endpoint) \
         GROUP BY {endpoint} ORDER BY {endpoint}"
    )
});

/// A list as one JSON array parameter.
fn json_list<T: Into<Value> + Clone>(values: &[T]) -> String {
    Value::from(values.to_vec()).to_string()
}

impl SqliteStore {
    /// See [`crate::storage::OutboxStore::feed`].
    pub(super) async fn read_feed(
        &self,
        after: Option<FeedPosition>,
        kinds: &[String],
        limit: u32,
    ) -> Result<Vec<FeedEvent>, StorageError> {
        let rows = sqlx::query(&FEED_SQL)
            .bind(after.map_or(0, |position| position.id))
            .bind(json_list(kinds))
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
        let mut tx = self.write().await?;
        sqlx::query(&CREATE_ENDPOINT_SQL)
            .bind(&subscription.endpoint)
            .bind(None::<i64>)
            .bind(None::<String>)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(&ENDPOINT_CURSOR_SQL)
            .bind(&subscription.endpoint)
            .fetch_one(&mut *tx)
            .await?;
        let after = cursor(&row)?;
        let rows = sqlx::query(&FEED_ENTRIES_SQL)
            .bind(after.id)
            .bind("[]")
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        let entries = rows.iter().map(feed_entry).collect::<Result<Vec<_>, _>>()?;
        let plan = fan_out_plan(subscription, &entries);
        if !plan.event_ids.is_empty() {
            let rows: Vec<Value> = plan
                .event_ids
                .iter()
                .zip(&plan.contract_ids)
                .map(|(event, contract)| Value::from(vec![*event, *contract]))
                .collect();
            sqlx::query(
                "INSERT INTO webhook_deliveries (endpoint, event_id, contract_id, status, \
                 attempts, next_attempt_ms, created_at_ms) \
                 SELECT ?1, value ->> 0, value ->> 1, 'pending', 0, ?3, ?3 \
                 FROM json_each(?2) WHERE true ORDER BY key \
                 ON CONFLICT (endpoint, event_id) DO NOTHING",
            )
            .bind(&subscription.endpoint)
            .bind(Value::Array(rows).to_string())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(last) = plan.cursor {
            sqlx::query(
                "UPDATE webhook_endpoints SET cursor_tx = ?2, cursor_id = ?3 WHERE name = ?1",
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
        let mut tx = self.write().await?;
        let rows = sqlx::query(&CLAIM_SQL)
            .bind(json_list(endpoints))
            .bind(owner)
            .bind(now_ms)
            .bind(lease_ms)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        let claimed = rows
            .iter()
            .map(ClaimedRow::decode)
            .collect::<Result<Vec<_>, _>>()?;
        if claimed.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = claimed.iter().map(|row| row.event_id).collect();
        let rows = sqlx::query(&EVENTS_BY_ID_SQL)
            .bind(json_list(&ids))
            .fetch_all(&mut *tx)
            .await?;
        let events = rows.iter().map(feed_event).collect::<Result<Vec<_>, _>>()?;
        tx.commit().await?;
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
        let mut tx = self.write().await?;
        let endpoint: Option<String> = sqlx::query_scalar(
            "UPDATE webhook_deliveries SET status = ?3, attempts = attempts + 1, \
             next_attempt_ms = ?4, delivered_at_ms = COALESCE(?5, delivered_at_ms), \
             last_status = ?6, last_error = ?7, last_attempt_ms = ?8, lease_owner = NULL, \
             lease_until_ms = NULL \
             WHERE id = ?1 AND lease_owner = ?2 AND status = 'pending' RETURNING endpoint",
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
        let mut tx = self.write().await?;
        sqlx::query(&SET_DISABLED_SQL)
            .bind(endpoint)
            .bind(at_ms)
            .bind(reason)
            .bind(at_ms.unwrap_or_else(wall_clock_ms))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
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
        let mut tx = self.write().await?;
        let done = match event_ids {
            None => {
                sqlx::query(
                    "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, \
                     next_attempt_ms = ?2, lease_owner = NULL, lease_until_ms = NULL \
                     WHERE status = 'failed' AND endpoint IN (SELECT value FROM json_each(?1))",
                )
                .bind(json_list(&endpoints))
                .bind(now_ms)
                .execute(&mut *tx)
                .await?
            }
            Some(ids) if ids.is_empty() => return Ok(0),
            Some(ids) => {
                sqlx::query(
                    "INSERT INTO webhook_deliveries (endpoint, event_id, contract_id, status, \
                     attempts, next_attempt_ms, created_at_ms) \
                     SELECT p.value, e.id, e.contract_id, 'pending', 0, ?3, ?3 \
                     FROM json_each(?1) AS p JOIN contract_events AS e \
                     ON e.id IN (SELECT value FROM json_each(?2)) WHERE true \
                     ON CONFLICT (endpoint, event_id) DO UPDATE SET status = 'pending', \
                     attempts = 0, next_attempt_ms = excluded.next_attempt_ms, \
                     lease_owner = NULL, lease_until_ms = NULL, delivered_at_ms = NULL",
                )
                .bind(json_list(&endpoints))
                .bind(json_list(&ids))
                .bind(now_ms)
                .execute(&mut *tx)
                .await?
            }
        };
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// See [`crate::storage::OutboxStore::backlog`].
    pub(super) async fn read_backlog(&self) -> Result<Vec<Backlog>, StorageError> {
        let rows = sqlx::query(&BACKLOG_SQL).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(backlog).collect::<Result<_, _>>()?)
    }
}
