//! A test double of the outbox queue, in memory, for the delivery loop's unit tests.
//!
//! It implements what the delivery pass relies on, as `OutboxStore` documents it: a new
//! endpoint's cursor starts after the last event, fan-out honours the subscription's kinds,
//! a claim takes only due, unleased deliveries of enabled endpoints that are the earliest
//! undelivered event of their contract for that endpoint, and recording needs the lease.
//! It does not model transactions, several processes, or commit order on PostgreSQL: the
//! real stores and their conformance tests cover those. The feed, requeue and listing
//! methods are not used by the delivery pass and are minimal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::storage::{
    Attempt, AttemptResult, Backlog, ClaimedDelivery, DeliveryFilter, DeliveryRecord,
    DeliveryStatus, EndpointState, FeedEvent, FeedPosition, OutboxStore, Requeue, StorageError,
    Subscription,
};

/// One delivery row.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    /// Row id.
    pub id: i64,
    /// Endpoint name.
    pub endpoint: String,
    /// The event.
    pub event: FeedEvent,
    /// State.
    pub status: DeliveryStatus,
    /// Attempts recorded.
    pub attempts: Vec<Attempt>,
    /// Next attempt due (Unix ms).
    pub next_attempt_ms: i64,
    /// Who holds it, until when.
    pub lease: Option<(String, i64)>,
}

/// Everything the double holds.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// Recorded events, in id order.
    pub events: Vec<FeedEvent>,
    /// Per endpoint, the id of the last event fanned out.
    pub cursors: HashMap<String, i64>,
    /// Deliveries.
    pub rows: Vec<Row>,
    /// Disabled endpoints.
    pub disabled: HashMap<String, (i64, String)>,
    /// Every `claim_deliveries` call's endpoints, to check that disabled ones are left out.
    pub claims: Vec<Vec<String>>,
}

/// The double: shared state behind a lock.
#[derive(Debug, Clone, Default)]
pub(crate) struct MemoryStore {
    /// The state.
    pub state: Arc<Mutex<State>>,
}

impl MemoryStore {
    /// Record an event of contract `contract_id` (its ref is `C-<id>`); returns its id.
    pub fn record(&self, contract_id: i64, kind: &str, recorded_at_ms: i64) -> i64 {
        let mut state = self.state.lock().expect("lock");
        let id = state.events.len() as i64 + 1;
        state.events.push(FeedEvent {
            position: FeedPosition { transaction: 0, id },
            contract_id,
            contract_ref: format!("C-{contract_id}"),
            kind: kind.to_string(),
            effective_on: chrono::NaiveDate::from_ymd_opt(2025, 12, 1).expect("a date"),
            line_ref: None,
            details: serde_json::json!({}),
            contract: Some(serde_json::json!({"ref": format!("C-{contract_id}")})),
            recorded_at_ms,
        });
        id
    }

    /// The delivery of event `event_id` to `endpoint`.
    pub fn row(&self, endpoint: &str, event_id: i64) -> Option<Row> {
        let state = self.state.lock().expect("lock");
        state
            .rows
            .iter()
            .find(|row| row.endpoint == endpoint && row.event.position.id == event_id)
            .cloned()
    }

    /// Whether `endpoint` is disabled.
    pub fn is_disabled(&self, endpoint: &str) -> bool {
        self.state
            .lock()
            .expect("lock")
            .disabled
            .contains_key(endpoint)
    }
}

impl OutboxStore for MemoryStore {
    async fn feed(
        &self,
        after: Option<FeedPosition>,
        kinds: &[String],
        limit: u32,
    ) -> Result<Vec<FeedEvent>, StorageError> {
        let state = self.state.lock().expect("lock");
        Ok(state
            .events
            .iter()
            .filter(|event| after.is_none_or(|after| event.position > after))
            .filter(|event| kinds.is_empty() || kinds.contains(&event.kind))
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn feed_position(&self, event_id: i64) -> Result<Option<FeedPosition>, StorageError> {
        let state = self.state.lock().expect("lock");
        Ok(state
            .events
            .iter()
            .find(|event| event.position.id == event_id)
            .map(|event| event.position))
    }

    async fn fan_out(
        &self,
        subscription: &Subscription,
        limit: u32,
        now_ms: i64,
    ) -> Result<u64, StorageError> {
        let mut state = self.state.lock().expect("lock");
        let last = state.events.len() as i64;
        let Some(&cursor) = state.cursors.get(&subscription.endpoint) else {
            state.cursors.insert(subscription.endpoint.clone(), last);
            return Ok(0);
        };
        let passed: Vec<FeedEvent> = state
            .events
            .iter()
            .filter(|event| event.position.id > cursor)
            .take(limit as usize)
            .cloned()
            .collect();
        for event in &passed {
            let wanted = subscription
                .kinds
                .as_ref()
                .is_none_or(|kinds| kinds.contains(&event.kind));
            if wanted {
                let id = state.rows.len() as i64 + 1;
                state.rows.push(Row {
                    id,
                    endpoint: subscription.endpoint.clone(),
                    event: event.clone(),
                    status: DeliveryStatus::Pending,
                    attempts: Vec::new(),
                    next_attempt_ms: now_ms,
                    lease: None,
                });
            }
        }
        if let Some(event) = passed.last() {
            state
                .cursors
                .insert(subscription.endpoint.clone(), event.position.id);
        }
        Ok(passed.len() as u64)
    }

    async fn claim_deliveries(
        &self,
        endpoints: &[String],
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<ClaimedDelivery>, StorageError> {
        let mut state = self.state.lock().expect("lock");
        state.claims.push(endpoints.to_vec());
        let mut taken = Vec::new();
        let candidates: Vec<usize> = (0..state.rows.len()).collect();
        for index in candidates {
            if taken.len() >= limit as usize {
                break;
            }
            let row = &state.rows[index];
            let leased = row.lease.as_ref().is_some_and(|(_, until)| *until > now_ms);
            let earliest = !state.rows.iter().any(|other| {
                other.endpoint == row.endpoint
                    && other.event.contract_id == row.event.contract_id
                    && other.event.position.id < row.event.position.id
                    && other.status != DeliveryStatus::Delivered
            });
            if row.status == DeliveryStatus::Pending
                && row.next_attempt_ms <= now_ms
                && !leased
                && endpoints.contains(&row.endpoint)
                && earliest
            {
                let row = &mut state.rows[index];
                row.lease = Some((owner.to_string(), now_ms + lease_ms));
                taken.push(ClaimedDelivery {
                    id: row.id,
                    endpoint: row.endpoint.clone(),
                    attempts: row.attempts.len() as i64,
                    event: row.event.clone(),
                });
            }
        }
        Ok(taken)
    }

    async fn record_attempt(
        &self,
        delivery_id: i64,
        owner: &str,
        attempt: &Attempt,
    ) -> Result<bool, StorageError> {
        let mut state = self.state.lock().expect("lock");
        let Some(row) = state.rows.iter_mut().find(|row| row.id == delivery_id) else {
            return Ok(false);
        };
        if row.lease.as_ref().is_none_or(|(holder, _)| holder != owner) {
            return Ok(false);
        }
        row.lease = None;
        row.attempts.push(attempt.clone());
        match attempt.result {
            AttemptResult::Delivered => row.status = DeliveryStatus::Delivered,
            AttemptResult::RetryAt(at) => row.next_attempt_ms = at,
            AttemptResult::Failed => row.status = DeliveryStatus::Failed,
            AttemptResult::EndpointGone => {}
        }
        Ok(true)
    }

    async fn set_endpoint_disabled(
        &self,
        endpoint: &str,
        disabled: Option<(i64, String)>,
    ) -> Result<(), StorageError> {
        let mut state = self.state.lock().expect("lock");
        match disabled {
            Some(reason) => state.disabled.insert(endpoint.to_string(), reason),
            None => state.disabled.remove(endpoint),
        };
        Ok(())
    }

    async fn endpoint_states(&self) -> Result<Vec<EndpointState>, StorageError> {
        let state = self.state.lock().expect("lock");
        Ok(state
            .cursors
            .keys()
            .map(|endpoint| EndpointState {
                endpoint: endpoint.clone(),
                disabled_at_ms: state.disabled.get(endpoint).map(|(at, _)| *at),
                disabled_reason: state.disabled.get(endpoint).map(|(_, why)| why.clone()),
            })
            .collect())
    }

    async fn deliveries(
        &self,
        _filter: &DeliveryFilter,
    ) -> Result<Vec<DeliveryRecord>, StorageError> {
        Ok(Vec::new())
    }

    async fn requeue(
        &self,
        _endpoints: &[String],
        _what: &Requeue,
        _now_ms: i64,
    ) -> Result<u64, StorageError> {
        Ok(0)
    }

    async fn backlog(&self) -> Result<Vec<Backlog>, StorageError> {
        Ok(Vec::new())
    }
}
