//! `deliver`, `deliveries` and `redeliver`: webhook deliveries from the command line.

use anyhow::Context;
use chrono::{DateTime, Utc};

use contractd::clock::{unix_ms, Clock, SystemClock};
use contractd::config::Settings;
use contractd::shutdown::Shutdown;
use contractd::storage::{DeliveryFilter, EventId, OutboxStore, Requeue};
use contractd::webhooks::{self, Webhooks};

use super::args::{DeliveriesArgs, RedeliverArgs};
use super::Failure;

/// The webhooks of the configuration, ready to send.
fn prepared(settings: &Settings) -> Result<Webhooks, Failure> {
    Webhooks::new(&settings.webhooks).map_err(|error| Failure::Usage(error.into()))
}

/// The configured endpoints' names: `deliveries` and `redeliver` only talk to the database,
/// so they need the names, not an HTTP client.
fn endpoint_names(settings: &Settings) -> Vec<String> {
    settings
        .webhooks
        .endpoints
        .iter()
        .map(|endpoint| endpoint.name.clone())
        .collect()
}

/// Check that `name` is a configured endpoint.
fn configured(known: &[String], name: &str) -> Result<(), Failure> {
    if known.iter().any(|known| known == name) {
        return Ok(());
    }
    Err(Failure::Usage(anyhow::anyhow!(
        "--endpoint '{name}' is not a configured endpoint (configured: {})",
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    )))
}

/// `contractd deliver`: one pass over what is due, a summary line, exit 1 when a delivery
/// failed for good during the pass (it then waits for `redeliver`).
pub async fn deliver<S: OutboxStore>(store: &S, settings: &Settings) -> Result<(), Failure> {
    let webhooks = prepared(settings)?;
    if webhooks.endpoints().is_empty() {
        println!("no webhook endpoints are configured");
        return Ok(());
    }
    let owner = format!("deliver-{}", uuid::Uuid::new_v4());
    let report = webhooks::deliver_due(store, &webhooks, &owner, &SystemClock, &Shutdown::never())
        .await
        .context("delivering webhooks")?;
    println!(
        "delivered {}, retrying {}, failed for good {}, endpoints disabled {}",
        report.delivered,
        report.retried,
        report.failed_for_good(),
        report.endpoints_disabled.len()
    );
    for failed in &report.failed {
        eprintln!(
            "contractd: {} to {} ({} of contract '{}') failed after {} attempts: {}",
            failed.event_id,
            failed.endpoint,
            failed.event_type,
            failed.contract_ref,
            failed.attempts,
            describe_failure(failed.http_status, failed.error.as_deref())
        );
    }
    for endpoint in &report.endpoints_disabled {
        eprintln!(
            "contractd: endpoint {endpoint} answered 410 Gone and is disabled \
             (contractd redeliver --endpoint {endpoint} enables it again)"
        );
    }
    // A CronJob has no metrics: its exit code is how a failed delivery or an endpoint that
    // stopped taking events gets noticed.
    if report.failed_for_good() > 0 || !report.endpoints_disabled.is_empty() {
        return Err(Failure::Failed(anyhow::anyhow!(
            "{} deliver(ies) failed for good and {} endpoint(s) were disabled (see above)",
            report.failed_for_good(),
            report.endpoints_disabled.len()
        )));
    }
    Ok(())
}

/// The last attempt's error, which names the HTTP status when one came, or else the status.
fn describe_failure(status: Option<u16>, error: Option<&str>) -> String {
    match (status, error) {
        (_, Some(error)) => error.to_string(),
        (Some(status), None) => format!("HTTP {status}"),
        (None, None) => "no answer".to_string(),
    }
}

/// `contractd deliveries [--endpoint N] [--failed]`: a table for people.
pub async fn deliveries<S: OutboxStore>(
    store: &S,
    settings: &Settings,
    args: DeliveriesArgs,
) -> Result<(), Failure> {
    if let Some(name) = &args.endpoint {
        configured(&endpoint_names(settings), name)?;
    }
    let filter = DeliveryFilter {
        endpoint: args.endpoint,
        failed_only: args.failed,
        limit: args.limit,
    };
    let rows = store
        .deliveries(&filter)
        .await
        .context("reading the deliveries")?;
    let states = store
        .endpoint_states()
        .await
        .context("reading the endpoints")?;
    for state in states.iter().filter(|state| state.disabled_at_ms.is_some()) {
        println!(
            "endpoint {} is disabled since {} ({})",
            state.endpoint,
            instant(state.disabled_at_ms),
            state
                .disabled_reason
                .as_deref()
                .unwrap_or("no reason recorded")
        );
    }
    println!(
        "{:<14} {:<16} {:<36} {:<20} {:<9} {:>8} {:>6}  {:<24} {:<24} error",
        "event",
        "endpoint",
        "type",
        "contract",
        "status",
        "attempts",
        "http",
        "last attempt",
        "next attempt"
    );
    for row in rows {
        println!(
            "{:<14} {:<16} {:<36} {:<20} {:<9} {:>8} {:>6}  {:<24} {:<24} {}",
            EventId(row.event_id).to_string(),
            row.endpoint,
            webhooks::event_type(&row.kind),
            row.contract_ref,
            row.status.as_str(),
            row.attempts,
            row.last_status
                .map(|status| status.to_string())
                .unwrap_or_else(|| "-".to_string()),
            instant(row.last_attempt_ms),
            instant(row.next_attempt_ms),
            row.last_error.unwrap_or_default()
        );
    }
    Ok(())
}

/// An instant in Unix ms for people, or "-".
fn instant(unix_ms: Option<i64>) -> String {
    unix_ms
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .map(|at| at.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".to_string())
}

/// `contractd redeliver [--endpoint N] (--failed | --event ID…)`: queue deliveries again,
/// due now; with `--endpoint` also enable that endpoint if a 410 Gone disabled it.
pub async fn redeliver<S: OutboxStore>(
    store: &S,
    settings: &Settings,
    args: RedeliverArgs,
) -> Result<(), Failure> {
    let known = endpoint_names(settings);
    let endpoints = match &args.endpoint {
        Some(name) => {
            configured(&known, name)?;
            vec![name.clone()]
        }
        None => known,
    };
    let mut events = Vec::with_capacity(args.events.len());
    for text in &args.events {
        let id = EventId::parse(text).ok_or_else(|| {
            Failure::Usage(anyhow::anyhow!(
                "--event '{text}' is not an event id (expected evt_<number>)"
            ))
        })?;
        events.push(id);
    }
    let now_ms = unix_ms(SystemClock.now());
    if let Some(name) = &args.endpoint {
        let disabled = store
            .endpoint_states()
            .await
            .context("reading the endpoints")?
            .into_iter()
            .any(|state| &state.endpoint == name && state.disabled_at_ms.is_some());
        if disabled {
            store
                .set_endpoint_disabled(name, None)
                .await
                .context("enabling the endpoint")?;
            println!("endpoint {name} enabled again");
        }
    }
    let what = if args.failed {
        Some(Requeue::Failed)
    } else if !events.is_empty() {
        Some(Requeue::Events(events.iter().map(|id| id.0).collect()))
    } else {
        None
    };
    if let Some(what) = what {
        let queued = store
            .requeue(&endpoints, &what, now_ms)
            .await
            .context("queueing the deliveries")?;
        println!("queued {queued} deliver(ies)");
        if let Requeue::Events(ids) = &what {
            if queued == 0 && !ids.is_empty() {
                return Err(Failure::InvalidInput(anyhow::anyhow!(
                    "none of the events given exists"
                )));
            }
        }
    }
    Ok(())
}
