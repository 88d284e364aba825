//! The outbox: every recorded event, in commit order, as a feed that consumers resume from and
//! as webhook deliveries with their attempts.
//!
//! The events table is the outbox. An event row is written in the transaction of the change
//! it records, together with the contract's export record after that change, so a change that
//! rolls back leaves nothing to send and a process killed after a commit loses nothing:
//! deliveries are derived from the committed rows afterwards.
//!
//! **Architecture invariant:** the feed is in commit order. A consumer that resumes after the
//! last position it saw never misses an event. SQLite has one writer at a time, so ids are
//! assigned in commit order and the position is the id. PostgreSQL takes sequence values
//! before commit, so ids do not follow commit order; each event row records the id of its
//! transaction (`pg_current_xact_id()`), the feed is ordered by (transaction id, id), and a
//! reader sees only events of transactions older than every transaction still running (its
//! snapshot's `xmin`): any event that becomes visible later has a larger position than
//! everything already read. Per contract, event ids follow commit order on both databases,
//! because a contract's next change is computed from its committed state and guarded by its
//! version.

use std::future::Future;

use chrono::NaiveDate;

use super::StorageError;

/// Where an event stands in the feed. Ordered: later commits have larger positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FeedPosition {
    /// The transaction that recorded the event (PostgreSQL); 0 on SQLite, where the id alone
    /// is in commit order.
    pub transaction: i64,
    /// The event's id.
    pub id: i64,
}

/// The public id of a recorded event, `evt_<row id>`: the `webhook-id` of every attempt to
/// deliver it and the `id` of its feed line, which `events --after` takes back. Receivers
/// drop duplicates by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId(pub i64);

impl EventId {
    /// Read a public id (`evt_42`); `None` when it is not one.
    pub fn parse(text: &str) -> Option<EventId> {
        let digits = text.strip_prefix("evt_")?;
        if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok().map(EventId)
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "evt_{}", self.0)
    }
}

/// One recorded event as the feed and the webhooks carry it.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedEvent {
    /// Where it stands in the feed.
    pub position: FeedPosition,
    /// The contract it belongs to (its row id), for per-contract ordering.
    pub contract_id: i64,
    /// The contract's ref.
    pub contract_ref: String,
    /// The event kind as stored (`extended`, `cancellation_executed`, …).
    pub kind: String,
    /// The business date it takes effect on.
    pub effective_on: NaiveDate,
    /// The line concerned, for line events.
    pub line_ref: Option<String>,
    /// The event's details.
    pub details: serde_json::Value,
    /// The contract's export record right after the change that recorded this event; `None`
    /// for events recorded before the outbox existed.
    pub contract: Option<serde_json::Value>,
    /// When the change was committed (Unix milliseconds, from the clock of the process that
    /// made it).
    pub recorded_at_ms: i64,
}

/// One configured endpoint as the outbox needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The endpoint's unique name.
    pub endpoint: String,
    /// The event kinds it receives (stored kinds, without the `contract.` prefix); `None`
    /// for every kind.
    pub kinds: Option<Vec<String>>,
}

/// A delivery taken by one process for one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedDelivery {
    /// The delivery's row id.
    pub id: i64,
    /// The endpoint it goes to.
    pub endpoint: String,
    /// Attempts made before this one.
    pub attempts: i64,
    /// The event to send.
    pub event: FeedEvent,
}

/// How an attempt ended, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    /// A 2xx answer: done.
    Delivered,
    /// Not accepted; try again at this instant (Unix ms).
    RetryAt(i64),
    /// Not accepted and no attempt is left: the delivery is failed and holds back the
    /// endpoint's later events of the same contract until it is queued again.
    Failed,
    /// The endpoint answered 410 Gone: the endpoint is disabled and the delivery stays
    /// pending, first in line when the endpoint is enabled again.
    EndpointGone,
}

/// One attempt's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// When the attempt ended (Unix ms).
    pub at_ms: i64,
    /// The HTTP status, when an answer came.
    pub http_status: Option<u16>,
    /// What went wrong, when it did (no secret, no credential).
    pub error: Option<String>,
    /// What follows.
    pub result: AttemptResult,
}

text_enum! {
    /// A delivery's state.
    DeliveryStatus {
        /// Waiting for its next attempt (or for an earlier event of its contract).
        Pending => "pending",
        /// Accepted by the endpoint.
        Delivered => "delivered",
        /// Out of attempts; waits to be queued again.
        Failed => "failed",
    }
}

/// One delivery as listed for people.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    /// The delivery's row id.
    pub id: i64,
    /// The endpoint.
    pub endpoint: String,
    /// The event's id (its `webhook-id` is derived from it).
    pub event_id: i64,
    /// The event kind.
    pub kind: String,
    /// The contract's ref.
    pub contract_ref: String,
    /// Its state.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: i64,
    /// The last attempt's HTTP status.
    pub last_status: Option<u16>,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// When the last attempt ended (Unix ms).
    pub last_attempt_ms: Option<i64>,
    /// When the next attempt is due (Unix ms), while pending.
    pub next_attempt_ms: Option<i64>,
}

/// Which deliveries to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    /// Only this endpoint.
    pub endpoint: Option<String>,
    /// Only failed deliveries.
    pub failed_only: bool,
    /// At most this many, newest first.
    pub limit: u32,
}

/// What to queue again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requeue {
    /// Every failed delivery (of the endpoints given).
    Failed,
    /// These events (by id), whatever their deliveries' state; a delivery is created where
    /// none exists.
    Events(Vec<i64>),
}

/// An endpoint's state kept in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointState {
    /// The endpoint's name.
    pub endpoint: String,
    /// When it was disabled (Unix ms), if it is.
    pub disabled_at_ms: Option<i64>,
    /// Why (e.g. "410 Gone").
    pub disabled_reason: Option<String>,
}

/// The backlog of one endpoint, for metrics and alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlog {
    /// The endpoint's name.
    pub endpoint: String,
    /// Deliveries pending.
    pub pending: i64,
    /// When the oldest pending event was recorded (Unix ms).
    pub oldest_pending_recorded_ms: Option<i64>,
    /// Deliveries failed for good.
    pub failed: i64,
}

/// The outbox side of a store: the feed, and webhook deliveries. Every method is safe with
/// several processes on one database.
pub trait OutboxStore: Send + Sync + Clone + 'static {
    /// Events after `after` (from the beginning when `None`), in commit order, at most
    /// `limit`, only of `kinds` when given (stored kinds).
    fn feed(
        &self,
        after: Option<FeedPosition>,
        kinds: &[String],
        limit: u32,
    ) -> impl Future<Output = Result<Vec<FeedEvent>, StorageError>> + Send;

    /// The feed position of the event with this id, if there is one and it is visible in
    /// the feed.
    fn feed_position(
        &self,
        event_id: i64,
    ) -> impl Future<Output = Result<Option<FeedPosition>, StorageError>> + Send;

    /// Create the deliveries of at most `limit` new feed events for one endpoint, in one
    /// transaction with the endpoint's feed cursor. An endpoint seen for the first time starts
    /// after the last event committed so far (it receives what happens from now on). Returns
    /// how many events it passed (0 when it has caught up).
    fn fan_out(
        &self,
        subscription: &Subscription,
        limit: u32,
        now_ms: i64,
    ) -> impl Future<Output = Result<u64, StorageError>> + Send;

    /// Take at most `limit` deliveries that are due for `owner` until `now_ms + lease_ms`:
    /// pending, next attempt due, not leased by another live process, to one of `endpoints`
    /// (the enabled ones), and the earliest undelivered event of their contract for that
    /// endpoint (order per contract and endpoint).
    fn claim_deliveries(
        &self,
        endpoints: &[String],
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<ClaimedDelivery>, StorageError>> + Send;

    /// Record an attempt of a delivery `owner` claimed, releasing its lease. Returns `false`
    /// (and records nothing) when the lease was lost to another process.
    fn record_attempt(
        &self,
        delivery_id: i64,
        owner: &str,
        attempt: &Attempt,
    ) -> impl Future<Output = Result<bool, StorageError>> + Send;

    /// Disable an endpoint (`Some((at_ms, reason))`) or enable it again (`None`).
    fn set_endpoint_disabled(
        &self,
        endpoint: &str,
        disabled: Option<(i64, String)>,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// The state of every endpoint the database knows.
    fn endpoint_states(
        &self,
    ) -> impl Future<Output = Result<Vec<EndpointState>, StorageError>> + Send;

    /// Deliveries for people (`contractd deliveries`).
    fn deliveries(
        &self,
        filter: &DeliveryFilter,
    ) -> impl Future<Output = Result<Vec<DeliveryRecord>, StorageError>> + Send;

    /// Queue deliveries again for `endpoints`: pending, attempts reset, due at `now_ms`.
    /// Returns how many were queued.
    fn requeue(
        &self,
        endpoints: &[String],
        what: &Requeue,
        now_ms: i64,
    ) -> impl Future<Output = Result<u64, StorageError>> + Send;

    /// The backlog per endpoint.
    fn backlog(&self) -> impl Future<Output = Result<Vec<Backlog>, StorageError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::EventId;

    #[test]
    fn event_ids_round_trip_and_refuse_anything_else() {
        assert_eq!(EventId(42).to_string(), "evt_42");
        assert_eq!(EventId::parse("evt_42"), Some(EventId(42)));
        for bad in [
            "42",
            "evt_",
            "evt_-1",
            "evt_4x",
            "evt_99999999999999999999",
            "msg_1",
        ] {
            assert_eq!(EventId::parse(bad), None, "{bad}");
        }
    }
}
