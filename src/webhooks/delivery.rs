//! One delivery pass: fan new events out to deliveries, then claim, send and record due
//! deliveries until nothing is due.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};

use super::backoff::{Backoff, Jitter, RandomJitter};
use super::envelope::{envelope, event_type};
use super::http::{SendResult, Sender, Verdict};
use super::secret::SigningKey;
use crate::clock::{unix_ms, Clock};
use crate::config::{ConfigError, WebhookSettings};
use crate::shutdown::Shutdown;
use crate::storage::{
    Attempt, AttemptResult, ClaimedDelivery, EventId, OutboxStore, StorageError, Subscription,
};

/// Events passed to deliveries per `fan_out` call: one bounded transaction each.
pub const FAN_OUT_LIMIT: u32 = 500;

/// Attempts in flight at once in one process: enough to keep several slow endpoints busy
/// without opening hundreds of connections.
pub const IN_FLIGHT: usize = 8;

/// What a delivery's lease adds to `timeout_ms`. An attempt is bounded by the timeout, but
/// the lease also has to cover recording the attempt (a database round trip that may wait
/// for a busy writer) and the difference between the clocks of the processes sharing the
/// database, which compare their own "now" against leases another process set. A lease
/// that ends too early makes another process send the same event again (a duplicate the
/// receiver drops by `webhook-id`, and our record refused as lease lost); one that ends too
/// late only delays the retry after a crash.
pub const LEASE_MARGIN_MS: i64 = 30_000;

/// Why the webhooks cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The `[webhooks]` section is not usable (a secret cannot be read, a URL is wrong).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The HTTP client cannot be built (TLS roots cannot be loaded).
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(reqwest::Error),
}

/// One configured endpoint, ready to send to.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// What the outbox needs: the name and the stored kinds it receives.
    pub subscription: Subscription,
    /// Where attempts go. Never logged.
    url: url::Url,
    /// The decoded signing key.
    key: SigningKey,
}

impl Endpoint {
    /// The endpoint's configured name.
    pub fn name(&self) -> &str {
        &self.subscription.endpoint
    }
}

/// How one attempt ended, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    /// Accepted (2xx).
    Delivered,
    /// Not accepted; another attempt is scheduled.
    Retry,
    /// Not accepted and no attempt is left.
    Failed,
    /// 410 Gone: the endpoint is now disabled.
    EndpointGone,
}

impl OutcomeKind {
    /// A fixed name for a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Delivered => "delivered",
            OutcomeKind::Retry => "retry",
            OutcomeKind::Failed => "failed",
            OutcomeKind::EndpointGone => "endpoint_gone",
        }
    }
}

/// One attempt as metrics see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptOutcome {
    /// What follows for the delivery.
    pub kind: OutcomeKind,
    /// The answer's status, when one came.
    pub http_status: Option<u16>,
    /// How long the attempt took.
    pub duration: Duration,
    /// Which attempt of its delivery this was (1-based).
    pub attempt: u32,
}

/// The hook the daemon's metrics implement: called once per attempt, after it ended and
/// before it is recorded.
pub trait AttemptObserver: Send + Sync {
    /// An attempt to `endpoint` ended with `outcome`.
    fn on_attempt(&self, endpoint: &str, outcome: &AttemptOutcome);
}

/// An observer that ignores everything (commands without metrics, tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl AttemptObserver for NoObserver {
    fn on_attempt(&self, _: &str, _: &AttemptOutcome) {}
}

/// The `[webhooks]` section made ready: endpoints with decoded keys, the HTTP client, the
/// retry schedule. Built once per configuration and shared by every pass.
#[derive(Clone)]
pub struct Webhooks {
    /// The endpoints, in configuration order.
    endpoints: Vec<Endpoint>,
    /// Sends attempts.
    sender: Sender,
    /// When failed attempts are retried.
    backoff: Backoff,
    /// How often `serve` looks for new events unprompted.
    poll: Duration,
    /// The random part of retry delays.
    jitter: Arc<dyn Jitter>,
    /// Told about every attempt.
    observer: Arc<dyn AttemptObserver>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.endpoints.iter().map(Endpoint::name).collect();
        f.debug_struct("Webhooks")
            .field("endpoints", &names)
            .field("backoff", &self.backoff)
            .field("poll", &self.poll)
            .finish_non_exhaustive()
    }
}

impl Webhooks {
    /// Check the settings, read and decode every secret (from the process environment for
    /// `secret_env`), and build the HTTP client.
    pub fn new(settings: &WebhookSettings) -> Result<Webhooks, SetupError> {
        settings.validate()?;
        let keys = settings.signing_keys()?;
        Webhooks::with_keys(settings, keys)
    }

    /// [`Webhooks::new`] with the keys already decoded (in the order of `endpoints`).
    fn with_keys(
        settings: &WebhookSettings,
        keys: Vec<SigningKey>,
    ) -> Result<Webhooks, SetupError> {
        let mut endpoints = Vec::with_capacity(settings.endpoints.len());
        for ((index, endpoint), key) in settings.endpoints.iter().enumerate().zip(keys) {
            endpoints.push(Endpoint {
                subscription: endpoint.subscription(),
                url: endpoint.parsed_url(index)?,
                key,
            });
        }
        let sender =
            Sender::new(Duration::from_millis(settings.timeout_ms)).map_err(SetupError::Client)?;
        Ok(Webhooks {
            endpoints,
            sender,
            backoff: Backoff {
                initial_ms: settings.initial_backoff_ms,
                max_ms: settings.max_backoff_ms,
                max_attempts: settings.max_attempts,
            },
            poll: Duration::from_millis(settings.poll_ms),
            jitter: Arc::new(RandomJitter),
            observer: Arc::new(NoObserver),
        })
    }

    /// The same, reporting every attempt to `observer` (the daemon's metrics).
    pub fn with_observer(mut self, observer: Arc<dyn AttemptObserver>) -> Webhooks {
        self.observer = observer;
        self
    }

    /// The same, with another source of randomness for retry delays (tests).
    pub fn with_jitter(mut self, jitter: Arc<dyn Jitter>) -> Webhooks {
        self.jitter = jitter;
        self
    }

    /// The configured endpoints.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The configured endpoints' names (for `requeue` and the backlog).
    pub fn endpoint_names(&self) -> Vec<String> {
        self.endpoints
            .iter()
            .map(|endpoint| endpoint.name().to_string())
            .collect()
    }

    /// The retry schedule.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// How often `serve` looks for new events when nothing wakes it.
    pub fn poll(&self) -> Duration {
        self.poll
    }

    /// How long a claimed delivery is ours: one attempt plus [`LEASE_MARGIN_MS`].
    pub fn lease_ms(&self) -> i64 {
        i64::try_from(self.sender.timeout().as_millis())
            .unwrap_or(i64::MAX)
            .saturating_add(LEASE_MARGIN_MS)
    }

    /// The endpoint named `name`, if configured.
    fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.endpoints
            .iter()
            .find(|endpoint| endpoint.name() == name)
    }
}

/// A delivery that failed for good in a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedDelivery {
    /// The delivery's row id.
    pub delivery_id: i64,
    /// The endpoint.
    pub endpoint: String,
    /// The event (its `webhook-id`).
    pub event_id: EventId,
    /// The event's public type.
    pub event_type: String,
    /// The contract concerned.
    pub contract_ref: String,
    /// Attempts made in all.
    pub attempts: u32,
    /// The last attempt's status, if an answer came.
    pub http_status: Option<u16>,
    /// What went wrong the last time.
    pub error: Option<String>,
}

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Events passed to deliveries by `fan_out`.
    pub fanned_out: u64,
    /// Deliveries accepted by their endpoint.
    pub delivered: u64,
    /// Failed attempts with a retry scheduled.
    pub retried: u64,
    /// Deliveries that failed for good (out of attempts).
    pub failed: Vec<FailedDelivery>,
    /// Endpoints disabled because they answered 410 Gone.
    pub endpoints_disabled: Vec<String>,
    /// Attempts whose record was refused because another process took the lease over.
    pub lease_lost: u64,
    /// The earliest retry this pass scheduled (Unix ms), so that `serve` wakes for it.
    pub next_retry_ms: Option<i64>,
    /// The pass stopped starting attempts because shutdown was requested.
    pub interrupted: bool,
}

impl DeliveryReport {
    /// How many deliveries failed for good (`contractd deliver` exits 1 when any did).
    pub fn failed_for_good(&self) -> usize {
        self.failed.len()
    }
}

/// One attempt, sent and recorded.
enum Completed {
    /// Recorded with this outcome.
    Recorded {
        /// What followed.
        kind: OutcomeKind,
        /// The retry instant, for a retry.
        retry_at: Option<i64>,
        /// The failure, for a delivery failed for good.
        failed: Option<FailedDelivery>,
        /// The endpoint, when it answered 410.
        gone: Option<String>,
    },
    /// Another process holds the lease now: nothing was recorded.
    LeaseLost,
}

/// One pass for the process `owner`: fan every endpoint's new events out, then send every
/// due delivery of the enabled endpoints, [`IN_FLIGHT`] at a time, until nothing is due.
/// Stops starting attempts once `shutdown` is requested (those in flight finish and are
/// recorded). A storage error ends the pass after the attempts in flight are recorded.
pub async fn deliver_due<S: OutboxStore>(
    store: &S,
    webhooks: &Webhooks,
    owner: &str,
    clock: &dyn Clock,
    shutdown: &Shutdown,
) -> Result<DeliveryReport, StorageError> {
    let mut report = DeliveryReport::default();
    for endpoint in &webhooks.endpoints {
        loop {
            if shutdown.is_requested() {
                report.interrupted = true;
                return Ok(report);
            }
            let passed = store
                .fan_out(&endpoint.subscription, FAN_OUT_LIMIT, unix_ms(clock.now()))
                .await?;
            report.fanned_out += passed;
            if passed == 0 {
                break;
            }
        }
    }

    let states = store.endpoint_states().await?;
    let mut enabled: Vec<String> = webhooks
        .endpoints
        .iter()
        .map(|endpoint| endpoint.name().to_string())
        .filter(|name| {
            !states
                .iter()
                .any(|state| &state.endpoint == name && state.disabled_at_ms.is_some())
        })
        .collect();

    let mut in_flight = FuturesUnordered::new();
    // Whether the last claim may have left due deliveries behind. A finished attempt can
    // make its contract's next event due, so every completion asks again.
    let mut more_due = true;
    let mut first_error: Option<StorageError> = None;
    loop {
        if shutdown.is_requested() && more_due {
            report.interrupted = true;
            more_due = false;
        }
        // Claim once half the slots are free rather than after every attempt: a claim is a
        // write (one connection on SQLite), and one per delivery made the pass as slow as
        // its claims.
        if more_due
            && first_error.is_none()
            && in_flight.len() <= IN_FLIGHT / 2
            && !enabled.is_empty()
        {
            let room = IN_FLIGHT - in_flight.len();
            let claimed = store
                .claim_deliveries(
                    &enabled,
                    owner,
                    unix_ms(clock.now()),
                    webhooks.lease_ms(),
                    u32::try_from(room).unwrap_or(u32::MAX),
                )
                .await;
            match claimed {
                Ok(claimed) => {
                    more_due = claimed.len() == room;
                    for delivery in claimed {
                        in_flight.push(send(webhooks, clock, delivery));
                    }
                }
                Err(error) => first_error = Some(error),
            }
        }
        let Some(sent) = in_flight.next().await else {
            break;
        };
        let completed = record(store, webhooks, owner, clock, sent).await;
        match completed {
            Ok(Completed::Recorded {
                kind,
                retry_at,
                failed,
                gone,
            }) => {
                match kind {
                    OutcomeKind::Delivered => report.delivered += 1,
                    OutcomeKind::Retry => report.retried += 1,
                    OutcomeKind::Failed | OutcomeKind::EndpointGone => {}
                }
                if let Some(at) = retry_at {
                    report.next_retry_ms = Some(report.next_retry_ms.map_or(at, |t| t.min(at)));
                }
                report.failed.extend(failed);
                if let Some(name) = gone {
                    enabled.retain(|enabled| enabled != &name);
                    if !report.endpoints_disabled.contains(&name) {
                        report.endpoints_disabled.push(name);
                    }
                }
                more_due = true;
            }
            Ok(Completed::LeaseLost) => {
                report.lease_lost += 1;
                more_due = true;
            }
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(report),
    }
}

/// A claimed delivery and what its receiver made of the attempt.
struct Sent {
    /// The delivery, as claimed.
    delivery: ClaimedDelivery,
    /// How the attempt ended.
    result: SendResult,
}

/// Send one claimed delivery. No database work happens here: the pass records attempts one
/// at a time on its own, so that attempts in flight never hold a connection that the pass's
/// next claim waits for (SQLite writes through a single connection; an attempt parked
/// mid-record while the pass awaited a claim deadlocked the two).
async fn send(webhooks: &Webhooks, clock: &dyn Clock, delivery: ClaimedDelivery) -> Sent {
    let webhook_id = EventId(delivery.event.position.id).to_string();
    let result = match webhooks.endpoint(&delivery.endpoint) {
        Some(endpoint) => {
            // Serializing a JSON value into a Vec cannot fail.
            let body = serde_json::to_vec(&envelope(&delivery.event)).unwrap_or_default();
            let timestamp_s = clock.now().timestamp();
            webhooks
                .sender
                .send(&endpoint.url, &endpoint.key, &webhook_id, timestamp_s, body)
                .await
        }
        // Claims only name configured endpoints; should a store return another, the
        // attempt fails like any other and is retried once the endpoint is configured.
        None => SendResult {
            verdict: Verdict::Retry,
            http_status: None,
            error: Some("the endpoint is not configured".to_string()),
            duration: Duration::ZERO,
        },
    };
    Sent { delivery, result }
}

/// Record an attempt that [`send`] made, with what follows for its delivery.
async fn record<S: OutboxStore>(
    store: &S,
    webhooks: &Webhooks,
    owner: &str,
    clock: &dyn Clock,
    sent: Sent,
) -> Result<Completed, StorageError> {
    let Sent { delivery, result } = sent;
    let number = u32::try_from(delivery.attempts.saturating_add(1).max(1)).unwrap_or(u32::MAX);
    let event_id = EventId(delivery.event.position.id);
    let webhook_id = event_id.to_string();
    let public_type = event_type(&delivery.event.kind);
    let at_ms = unix_ms(clock.now());
    let (kind, outcome) = match result.verdict {
        Verdict::Delivered => (OutcomeKind::Delivered, AttemptResult::Delivered),
        Verdict::Gone => (OutcomeKind::EndpointGone, AttemptResult::EndpointGone),
        Verdict::Retry => match webhooks.backoff.delay_ms(number, webhooks.jitter.as_ref()) {
            Some(delay) => (
                OutcomeKind::Retry,
                AttemptResult::RetryAt(
                    at_ms.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX)),
                ),
            ),
            None => (OutcomeKind::Failed, AttemptResult::Failed),
        },
    };
    let duration_ms = u64::try_from(result.duration.as_millis()).unwrap_or(u64::MAX);
    if kind == OutcomeKind::Delivered {
        tracing::info!(
            event = "webhook.delivered",
            endpoint = %delivery.endpoint,
            event_id = %webhook_id,
            r#type = %public_type,
            attempt = number,
            http_status = result.http_status,
            duration_ms,
            "webhook delivered"
        );
    } else {
        tracing::warn!(
            event = "webhook.failed",
            endpoint = %delivery.endpoint,
            event_id = %webhook_id,
            r#type = %public_type,
            attempt = number,
            http_status = result.http_status,
            duration_ms,
            r#final = kind == OutcomeKind::Failed,
            error = result.error.as_deref().unwrap_or(""),
            "webhook attempt failed"
        );
    }
    webhooks.observer.on_attempt(
        &delivery.endpoint,
        &AttemptOutcome {
            kind,
            http_status: result.http_status,
            duration: result.duration,
            attempt: number,
        },
    );
    let retry_at = match outcome {
        AttemptResult::RetryAt(at) => Some(at),
        _ => None,
    };
    let record = Attempt {
        at_ms,
        http_status: result.http_status,
        error: result.error.clone(),
        result: outcome,
    };
    if !store.record_attempt(delivery.id, owner, &record).await? {
        tracing::warn!(
            event = "webhook.lease_lost",
            endpoint = %delivery.endpoint,
            event_id = %webhook_id,
            attempt = number,
            "another process took this delivery over; its attempt is not recorded"
        );
        return Ok(Completed::LeaseLost);
    }
    let mut gone = None;
    if kind == OutcomeKind::EndpointGone {
        store
            .set_endpoint_disabled(&delivery.endpoint, Some((at_ms, "410 Gone".to_string())))
            .await?;
        tracing::warn!(
            event = "webhook.endpoint_disabled",
            endpoint = %delivery.endpoint,
            event_id = %webhook_id,
            reason = "410 Gone",
            "the endpoint answered 410 Gone and is disabled until it is enabled again"
        );
        gone = Some(delivery.endpoint.clone());
    }
    let failed = (kind == OutcomeKind::Failed).then(|| FailedDelivery {
        delivery_id: delivery.id,
        endpoint: delivery.endpoint.clone(),
        event_id,
        event_type: public_type,
        contract_ref: delivery.event.contract_ref.clone(),
        attempts: number,
        http_status: result.http_status,
        error: result.error,
    });
    Ok(Completed::Recorded {
        kind,
        retry_at,
        failed,
        gone,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
    use std::sync::Mutex;

    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::config::EndpointSettings;
    use crate::storage::DeliveryStatus;
    use crate::webhooks::backoff::tests::Extreme;
    use crate::webhooks::memory::MemoryStore;
    use crate::webhooks::secret::SecretString;

    const START_MS: i64 = 1_764_547_200_000;
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    /// A clock the test moves by hand.
    #[derive(Debug, Default)]
    struct ManualClock(AtomicI64);

    impl ManualClock {
        fn at(ms: i64) -> ManualClock {
            ManualClock(AtomicI64::new(ms))
        }
        fn advance(&self, ms: i64) {
            self.0.fetch_add(ms, Ordering::SeqCst);
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> DateTime<Utc> {
            DateTime::from_timestamp_millis(self.0.load(Ordering::SeqCst)).expect("in range")
        }
    }

    /// Decides each answer from the `webhook-id` and how many times that id came before.
    type Script = Arc<dyn Fn(&str, usize) -> StatusCode + Send + Sync>;

    /// What a scripted receiver saw.
    #[derive(Default)]
    struct Received {
        /// Every request's `webhook-id` and the status answered, in arrival order.
        log: Mutex<Vec<(String, u16)>>,
        /// Requests being handled right now, and the most at once.
        current: AtomicUsize,
        most: AtomicUsize,
    }

    impl Received {
        fn log(&self) -> Vec<(String, u16)> {
            self.log.lock().expect("lock").clone()
        }
        fn ids(&self) -> Vec<String> {
            self.log().into_iter().map(|(id, _)| id).collect()
        }
    }

    /// A real HTTP receiver on 127.0.0.1 answering as `script` says, after `delay`.
    async fn receiver(script: Script, delay: Duration) -> (SocketAddr, Arc<Received>) {
        let received = Arc::new(Received::default());
        let seen = received.clone();
        let app = axum::Router::new().route(
            "/hook",
            post(move |headers: HeaderMap| {
                let seen = seen.clone();
                let script = script.clone();
                async move {
                    let now = seen.current.fetch_add(1, Ordering::SeqCst) + 1;
                    seen.most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    let id = headers["webhook-id"].to_str().expect("ASCII").to_string();
                    let status = {
                        let mut log = seen.log.lock().expect("lock");
                        let before = log.iter().filter(|(seen, _)| seen == &id).count();
                        let status = script(&id, before);
                        log.push((id, status.as_u16()));
                        status
                    };
                    seen.current.fetch_sub(1, Ordering::SeqCst);
                    status
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("an address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (address, received)
    }

    fn answer(status: StatusCode) -> Script {
        Arc::new(move |_, _| status)
    }

    fn endpoint(name: &str, address: SocketAddr) -> EndpointSettings {
        EndpointSettings {
            name: name.to_string(),
            url: format!("http://{address}/hook"),
            secret: Some(SecretString::new(SECRET)),
            secret_env: None,
            events: None,
        }
    }

    fn settings(endpoints: Vec<EndpointSettings>, max_attempts: u32) -> WebhookSettings {
        WebhookSettings {
            timeout_ms: 2_000,
            initial_backoff_ms: 5_000,
            max_backoff_ms: 60_000,
            max_attempts,
            poll_ms: 50,
            endpoints,
        }
    }

    /// Webhooks whose retry delays are always the ceiling (`true`) or zero (`false`).
    fn webhooks(settings: &WebhookSettings, longest: bool) -> Webhooks {
        Webhooks::new(settings)
            .expect("valid settings")
            .with_jitter(Arc::new(Extreme(longest)))
    }

    async fn pass(store: &MemoryStore, webhooks: &Webhooks, clock: &ManualClock) -> DeliveryReport {
        deliver_due(store, webhooks, "test-owner", clock, &Shutdown::never())
            .await
            .expect("no storage error")
    }

    /// A store where `names` have already been seen (their cursors start at the first event
    /// recorded after this).
    async fn subscribed(webhooks: &Webhooks, clock: &ManualClock) -> MemoryStore {
        let store = MemoryStore::default();
        let report = pass(&store, webhooks, clock).await;
        assert_eq!(report, DeliveryReport::default());
        store
    }

    #[tokio::test]
    async fn an_endpoint_receives_only_events_recorded_after_it_first_appears() {
        let (address, received) = receiver(answer(StatusCode::OK), Duration::ZERO).await;
        let webhooks = webhooks(&settings(vec![endpoint("crm", address)], 5), true);
        let clock = ManualClock::at(START_MS);
        let store = MemoryStore::default();
        store.record(1, "imported", START_MS);
        assert_eq!(pass(&store, &webhooks, &clock).await.delivered, 0);
        store.record(1, "extended", START_MS);
        let report = pass(&store, &webhooks, &clock).await;
        assert_eq!(report.fanned_out, 1);
        assert_eq!(report.delivered, 1);
        assert_eq!(received.ids(), vec!["evt_2"]);
    }

    #[tokio::test]
    async fn a_failing_delivery_is_retried_after_the_backoff_then_delivered() {
        let script: Script = Arc::new(|_, before| {
            if before < 2 {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            }
        });
        let (address, received) = receiver(script, Duration::ZERO).await;
        let webhooks = webhooks(&settings(vec![endpoint("crm", address)], 5), true);
        let clock = ManualClock::at(START_MS);
        let store = subscribed(&webhooks, &clock).await;
        let event = store.record(1, "extended", START_MS);

        let first = pass(&store, &webhooks, &clock).await;
        assert_eq!((first.delivered, first.retried), (0, 1));
        assert_eq!(first.next_retry_ms, Some(START_MS + 5_000));
        // Not due yet: nothing is sent.
        clock.advance(4_999);
        assert_eq!(
            pass(&store, &webhooks, &clock).await,
            DeliveryReport::default()
        );
        clock.advance(1);
        let second = pass(&store, &webhooks, &clock).await;
        assert_eq!(second.retried, 1);
        assert_eq!(second.next_retry_ms, Some(START_MS + 5_000 + 10_000));
        clock.advance(10_000);
        let third = pass(&store, &webhooks, &clock).await;
        assert_eq!((third.delivered, third.retried), (1, 0));
        assert!(third.failed.is_empty());

        assert_eq!(
            received.log(),
            vec![
                ("evt_1".to_string(), 500),
                ("evt_1".to_string(), 500),
                ("evt_1".to_string(), 200)
            ]
        );
        let row = store.row("crm", event).expect("a delivery");
        assert_eq!(row.status, DeliveryStatus::Delivered);
        let results: Vec<AttemptResult> = row.attempts.iter().map(|a| a.result.clone()).collect();
        assert_eq!(
            results,
            vec![
                AttemptResult::RetryAt(START_MS + 5_000),
                AttemptResult::RetryAt(START_MS + 15_000),
                AttemptResult::Delivered
            ]
        );
        assert_eq!(row.attempts[0].http_status, Some(500));
        assert_eq!(
            row.attempts[0].error.as_deref(),
            Some("HTTP 500: not accepted")
        );
    }

    #[tokio::test]
    async fn events_of_one_contract_go_out_in_order_and_others_are_not_held_up() {
        // The first attempt of evt_1 fails; evt_2 (same contract) must wait for it, evt_3
        // (another contract) need not.
        let script: Script = Arc::new(|id, before| {
            if id == "evt_1" && before == 0 {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            }
        });
        let (address, received) = receiver(script, Duration::ZERO).await;
        let webhooks = webhooks(&settings(vec![endpoint("crm", address)], 5), true);
        let clock = ManualClock::at(START_MS);
        let store = subscribed(&webhooks, &clock).await;
        store.record(1, "cancellation_registered", START_MS);
        store.record(1, "cancellation_executed", START_MS);
        store.record(2, "extended", START_MS);

        let first = pass(&store, &webhooks, &clock).await;
        assert_eq!((first.delivered, first.retried), (1, 1));
        let mut sent = received.ids();
        sent.sort();
        assert_eq!(sent, vec!["evt_1", "evt_3"], "evt_2 waits behind evt_1");

        clock.advance(5_000);
        let second = pass(&store, &webhooks, &clock).await;
        assert_eq!(second.delivered, 2);
        let ids = received.ids();
        assert_eq!(&ids[2..], ["evt_1", "evt_2"]);
    }

    #[tokio::test]
    async fn a_delivery_fails_for_good_after_max_attempts_and_holds_its_contract_back() {
        let (address, received) = receiver(answer(StatusCode::BAD_GATEWAY), Duration::ZERO).await;
        // Zero delays: every retry is due at once, so one pass uses up every attempt.
        let webhooks = webhooks(&settings(vec![endpoint("crm", address)], 3), false);
        let clock = ManualClock::at(START_MS);
        let store = subscribed(&webhooks, &clock).await;
        let event = store.record(1, "expired", START_MS);
        store.record(1, "deadlines_refreshed", START_MS);

        let report = pass(&store, &webhooks, &clock).await;
        assert_eq!((report.delivered, report.retried), (0, 2));
        assert_eq!(report.failed_for_good(), 1);
        let failed = &report.failed[0];
        assert_eq!(failed.endpoint, "crm");
        assert_eq!(failed.event_id, EventId(event));
        assert_eq!(failed.event_type, "contract.expired");
        assert_eq!(failed.contract_ref, "C-1");
        assert_eq!(failed.attempts, 3);
        assert_eq!(failed.http_status, Some(502));
        assert_eq!(received.ids(), vec!["evt_1", "evt_1", "evt_1"]);
        let row = store.row("crm", event).expect("a delivery");
        assert_eq!(row.status, DeliveryStatus::Failed);
        assert_eq!(
            row.attempts.last().map(|a| &a.result),
            Some(&AttemptResult::Failed)
        );

        clock.advance(3_600_000);
        assert_eq!(
            pass(&store, &webhooks, &clock).await,
            DeliveryReport::default()
        );
        assert_eq!(
            received.ids().len(),
            3,
            "evt_2 stays behind the failed evt_1"
        );
    }

    #[tokio::test]
    async fn a_410_disables_its_endpoint_and_spares_the_others() {
        let (gone, gone_received) = receiver(answer(StatusCode::GONE), Duration::ZERO).await;
        let (fine, fine_received) = receiver(answer(StatusCode::OK), Duration::ZERO).await;
        let webhooks = webhooks(
            &settings(vec![endpoint("old", gone), endpoint("new", fine)], 5),
            true,
        );
        let clock = ManualClock::at(START_MS);
        let store = subscribed(&webhooks, &clock).await;
        let event = store.record(1, "extended", START_MS);
        store.record(1, "expired", START_MS);

        let report = pass(&store, &webhooks, &clock).await;
        assert_eq!(report.endpoints_disabled, vec!["old".to_string()]);
        assert_eq!(report.delivered, 2);
        assert_eq!(report.retried, 0);
        assert!(report.failed.is_empty());
        assert!(store.is_disabled("old"));
        assert_eq!(gone_received.ids(), vec!["evt_1"]);
        assert_eq!(fine_received.ids(), vec!["evt_1", "evt_2"]);
        let row = store.row("old", event).expect("a delivery");
        assert_eq!(
            row.status,
            DeliveryStatus::Pending,
            "kept for when it is enabled"
        );
        assert_eq!(row.attempts[0].result, AttemptResult::EndpointGone);
        assert_eq!(row.attempts[0].http_status, Some(410));

        clock.advance(3_600_000);
        store.record(2, "extended", START_MS);
        let later = pass(&store, &webhooks, &clock).await;
        assert_eq!(later.delivered, 1);
        assert_eq!(
            gone_received.ids().len(),
            1,
            "disabled endpoints are not claimed"
        );
        let last_claim = store.state.lock().expect("lock").claims.last().cloned();
        assert_eq!(last_claim, Some(vec!["new".to_string()]));
    }

    #[tokio::test]
    async fn at_most_eight_attempts_are_in_flight_and_they_do_overlap() {
        let (address, received) =
            receiver(answer(StatusCode::OK), Duration::from_millis(100)).await;
        let webhooks = webhooks(&settings(vec![endpoint("crm", address)], 5), true);
        let clock = ManualClock::at(START_MS);
        let store = subscribed(&webhooks, &clock).await;
        for contract in 1..=20 {
            store.record(contract, "extended", START_MS);
        }
        let report = pass(&store, &webhooks, &clock).await;
        assert_eq!(report.delivered, 20);
        let most = received.most.load(Ordering::SeqCst);
        assert!(most <= IN_FLIGHT, "{most} in flight");
        assert!(most > 1, "attempts ran one at a time");
    }

    #[tokio::test]
    async fn a_pass_after_shutdown_starts_no_attempt() {
        let (address, received) = receiver(answer(StatusCode::OK), Duration::ZERO).await;
        let webhooks = webhooks(&settings(vec![endpoint("crm", address)], 5), true);
        let clock = ManualClock::at(START_MS);
        let store = subscribed(&webhooks, &clock).await;
        store.record(1, "extended", START_MS);
        let (trigger, shutdown) = crate::shutdown::channel();
        trigger.trigger();
        let report = deliver_due(&store, &webhooks, "test-owner", &clock, &shutdown)
            .await
            .expect("no storage error");
        assert!(report.interrupted);
        assert_eq!(report.delivered, 0);
        assert!(received.ids().is_empty());
    }

    /// Counts attempts by outcome, as the daemon's metrics will.
    #[derive(Default)]
    struct Counting(Mutex<HashMap<(String, &'static str), u32>>);

    impl AttemptObserver for Counting {
        fn on_attempt(&self, endpoint: &str, outcome: &AttemptOutcome) {
            *self
                .0
                .lock()
                .expect("lock")
                .entry((endpoint.to_string(), outcome.kind.as_str()))
                .or_default() += 1;
        }
    }

    #[tokio::test]
    async fn the_observer_hears_of_every_attempt() {
        let script: Script = Arc::new(|_, before| {
            if before == 0 {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            }
        });
        let (address, _) = receiver(script, Duration::ZERO).await;
        let counting = Arc::new(Counting::default());
        let webhooks = webhooks(&settings(vec![endpoint("crm", address)], 5), false)
            .with_observer(counting.clone());
        let clock = ManualClock::at(START_MS);
        let store = subscribed(&webhooks, &clock).await;
        store.record(1, "extended", START_MS);
        pass(&store, &webhooks, &clock).await;
        let counts = counting.0.lock().expect("lock").clone();
        assert_eq!(counts.get(&("crm".to_string(), "retry")), Some(&1));
        assert_eq!(counts.get(&("crm".to_string(), "delivered")), Some(&1));
    }

    #[tokio::test]
    async fn the_worker_delivers_when_woken_and_stops_on_shutdown() {
        let (address, received) = receiver(answer(StatusCode::OK), Duration::ZERO).await;
        let mut settings = settings(vec![endpoint("crm", address)], 5);
        settings.poll_ms = 3_600_000;
        let webhooks = Arc::new(webhooks(&settings, true));
        let clock: crate::clock::SharedClock = Arc::new(crate::clock::SystemClock);
        let store = MemoryStore::default();
        let wake = Arc::new(tokio::sync::Notify::new());
        let (trigger, shutdown) = crate::shutdown::channel();
        let worker = tokio::spawn(crate::webhooks::run_worker(
            store.clone(),
            webhooks,
            "test-owner".to_string(),
            clock,
            wake.clone(),
            shutdown,
        ));
        // Let the first pass register the endpoint's cursor, then record and wake.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while store.state.lock().expect("lock").cursors.is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "no first pass");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        store.record(1, "extended", unix_ms(Utc::now()));
        wake.notify_one();
        while received.ids().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not delivered when woken"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        trigger.trigger();
        tokio::time::timeout(Duration::from_secs(5), worker)
            .await
            .expect("the worker stops on shutdown")
            .expect("the worker does not panic");
    }
}
