//! Webhooks: every recorded event, POSTed to the configured endpoints in the Standard
//! Webhooks format, at least once, in order per contract and endpoint, with retries.
//!
//! The outbox (`storage::OutboxStore`) holds the queue: [`deliver_due`] fans new events out
//! to deliveries, claims the due ones under a lease, sends them ([`Sender`]), and records
//! each attempt with what follows (delivered, retry at, failed for good, endpoint gone).
//! [`run_worker`] repeats that for `serve`. Nothing here keeps state a crash could lose: a
//! process killed mid-attempt leaves a lease that expires and the attempt is made again
//! (receivers drop duplicates by `webhook-id`).
//!
//! Secrets never print ([`SecretString`], [`SigningKey`]) and endpoint URLs are never
//! logged: logs and metrics name endpoints by their configured name.

mod backoff;
mod delivery;
mod envelope;
mod http;
mod secret;
mod signature;
mod worker;

#[cfg(test)]
mod memory;

pub use backoff::{Backoff, Jitter, RandomJitter};
pub use delivery::{
    deliver_due, AttemptObserver, AttemptOutcome, DeliveryReport, Endpoint, FailedDelivery,
    NoObserver, OutcomeKind, SetupError, Webhooks, FAN_OUT_LIMIT, IN_FLIGHT, LEASE_MARGIN_MS,
};
pub use envelope::{
    envelope, event_type, feed_line, known_event_types, known_kinds, rfc3339_ms, stored_kind,
    TYPE_PREFIX,
};
pub use http::{SendResult, Sender, Verdict, MAX_RESPONSE_BYTES};
pub use secret::{SecretError, SecretString, SigningKey, SECRET_PREFIX};
pub use signature::sign;
pub use worker::run_worker;

/// A URL as it may be shown to people: user name and password replaced by `***`, the query
/// and fragment dropped (webhook URLs often carry tokens there). Logs name endpoints by
/// their configured name and do not even show this; configuration errors do.
pub fn redact_url(url: &url::Url) -> String {
    let mut shown = url.clone();
    if !shown.username().is_empty() {
        let _ = shown.set_username("***");
    }
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    let hidden_query = shown.query().is_some();
    shown.set_query(None);
    shown.set_fragment(None);
    let mut text = shown.to_string();
    if hidden_query {
        text.push_str("?***");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn a_shown_url_has_no_credentials_and_no_query() {
        let url =
            url::Url::parse("https://user:pa55@crm.example:8443/hooks?token=t0k#x").expect("a URL");
        let shown = redact_url(&url);
        assert_eq!(shown, "https://***:***@crm.example:8443/hooks?***");
        for secret in ["user", "pa55", "t0k"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        let plain = url::Url::parse("http://crm.example/hooks").expect("a URL");
        assert_eq!(redact_url(&plain), "http://crm.example/hooks");
    }
}
