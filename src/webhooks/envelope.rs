//! What an event looks like outside: the JSON envelope every webhook carries as its body, and
//! the same envelope with an `id` as one line of the `contractd events` feed.

use chrono::{DateTime, SecondsFormat};
use serde_json::{json, Value};

use crate::contract::EventKind;
use crate::storage::{EventId, FeedEvent};

/// The prefix of every public event type: `contract.` + the stored kind.
pub const TYPE_PREFIX: &str = "contract.";

/// Event kinds that other issues add and that are not in [`EventKind`] yet. Endpoints may
/// subscribe to them already, so a configuration written for them stays valid. This, with
/// [`EventKind::ALL`], is the one list of public event types (see [`known_event_types`]):
/// when one of these becomes an `EventKind`, remove it here.
const KINDS_NOT_YET_RECORDED: &[&str] = &[];

/// Every stored kind an endpoint may subscribe to, without the `contract.` prefix.
pub fn known_kinds() -> Vec<&'static str> {
    EventKind::ALL
        .iter()
        .map(|kind| kind.as_str())
        .chain(KINDS_NOT_YET_RECORDED.iter().copied())
        .collect()
}

/// Every public event type (`contract.extended`, …), as `webhooks.endpoints[].events`
/// accepts them.
pub fn known_event_types() -> Vec<String> {
    known_kinds()
        .into_iter()
        .map(|kind| format!("{TYPE_PREFIX}{kind}"))
        .collect()
}

/// The public type of a stored kind: `extended` → `contract.extended`.
pub fn event_type(kind: &str) -> String {
    format!("{TYPE_PREFIX}{kind}")
}

/// The stored kind of a public type, if it is one: `contract.extended` → `extended`.
pub fn stored_kind(event_type: &str) -> Option<&str> {
    let kind = event_type.strip_prefix(TYPE_PREFIX)?;
    known_kinds().contains(&kind).then_some(kind)
}

/// An instant in Unix milliseconds as RFC 3339 in UTC with milliseconds
/// (`2025-12-01T00:00:00.123Z`); `None` outside chrono's range (a corrupt row).
pub fn rfc3339_ms(unix_ms: i64) -> Option<String> {
    DateTime::from_timestamp_millis(unix_ms)
        .map(|instant| instant.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// The body of every webhook of this event: `type`, `timestamp` (when the change was
/// recorded) and `data` (the contract's ref, the date the change takes effect on, the line
/// concerned, the event's details and the contract's export record after the change).
pub fn envelope(event: &FeedEvent) -> Value {
    json!({
        "type": event_type(&event.kind),
        "timestamp": rfc3339_ms(event.recorded_at_ms),
        "data": {
            "ref": event.contract_ref,
            "effective_on": event.effective_on.format("%Y-%m-%d").to_string(),
            "line_ref": event.line_ref,
            "details": event.details,
            "contract": event.contract,
        },
    })
}

/// One line of the `contractd events` feed: the [`envelope`] plus `id` (`evt_<n>`, the same
/// as the webhooks' `webhook-id`), which `events --after` takes back.
pub fn feed_line(event: &FeedEvent) -> Value {
    let mut line = envelope(event);
    if let Value::Object(fields) = &mut line {
        fields.insert(
            "id".to_string(),
            Value::String(EventId(event.position.id).to_string()),
        );
    }
    line
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;
    use crate::storage::FeedPosition;

    pub(crate) fn event() -> FeedEvent {
        FeedEvent {
            position: FeedPosition {
                transaction: 0,
                id: 42,
            },
            contract_id: 7,
            contract_ref: "C-1".to_string(),
            kind: "cancellation_executed".to_string(),
            effective_on: NaiveDate::from_ymd_opt(2025, 12, 1).expect("a date"),
            line_ref: None,
            details: json!({"reason": "customer"}),
            contract: Some(json!({"ref": "C-1", "status": "cancelled"})),
            recorded_at_ms: 1_764_547_200_123,
        }
    }

    #[test]
    fn the_envelope_has_the_documented_shape() {
        assert_eq!(
            envelope(&event()),
            json!({
                "type": "contract.cancellation_executed",
                "timestamp": "2025-12-01T00:00:00.123Z",
                "data": {
                    "ref": "C-1",
                    "effective_on": "2025-12-01",
                    "line_ref": null,
                    "details": {"reason": "customer"},
                    "contract": {"ref": "C-1", "status": "cancelled"},
                },
            })
        );
    }

    #[test]
    fn a_line_event_without_a_snapshot_keeps_both_keys() {
        let mut event = event();
        event.line_ref = Some("L-2".to_string());
        event.contract = None;
        let data = &envelope(&event)["data"];
        assert_eq!(data["line_ref"], json!("L-2"));
        assert_eq!(data.get("contract"), Some(&Value::Null));
    }

    #[test]
    fn a_feed_line_is_the_envelope_with_its_public_id() {
        let line = feed_line(&event());
        assert_eq!(line["id"], json!("evt_42"));
        let mut without_id = line.clone();
        without_id.as_object_mut().expect("an object").remove("id");
        assert_eq!(without_id, envelope(&event()));
    }

    #[test]
    fn event_types_are_every_kind_plus_the_announced_ones() {
        let types = known_event_types();
        for kind in EventKind::ALL {
            assert!(types.contains(&format!("contract.{kind}")), "{kind}");
        }
        for announced in [
            "contract.deadline_approaching",
            "contract.end_approaching",
            "contract.extension_reverted",
        ] {
            assert!(types.iter().any(|known| known == announced), "{announced}");
        }
        assert_eq!(stored_kind("contract.extended"), Some("extended"));
        assert_eq!(stored_kind("extended"), None);
        assert_eq!(stored_kind("contract.nonsense"), None);
    }
}
