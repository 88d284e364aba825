//! The webhook worker `serve` runs on its own task: passes of [`deliver_due`] one after the
//! other, waiting between them for new events, for the next retry, or for a wake-up.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::delivery::{deliver_due, Webhooks};
use crate::clock::{unix_ms, SharedClock};
use crate::shutdown::Shutdown;
use crate::storage::OutboxStore;

/// The first wait after a failed pass; doubles with each further failure.
const ERROR_BACKOFF_START: Duration = Duration::from_secs(1);

/// The longest wait after failed passes.
const ERROR_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Run passes until `shutdown` is requested. After a pass the worker waits for
/// `webhooks.poll()`, or less when a retry it scheduled is due sooner, or until `wake` is
/// notified (the daemon's sweep notifies after a pass that changed contracts; operator
/// commands run in other processes and their events are found by the next poll; a
/// notification during a pass is kept and starts the next one at once). A pass that fails
/// (the database is away) is logged as `webhook.pass_failed` and followed by a wait of 1 s
/// doubling to 30 s; the loop never ends on an error. Attempts in flight when shutdown is
/// requested finish (each within `timeout_ms`) and are recorded, unless the caller stops
/// waiting first (`serve` waits at most its stop deadline): an attempt cut off is not
/// recorded, its lease expires and it is sent again, which receivers drop by `webhook-id`.
pub async fn run_worker<S: OutboxStore>(
    store: S,
    webhooks: Arc<Webhooks>,
    owner: String,
    clock: SharedClock,
    wake: Arc<Notify>,
    mut shutdown: Shutdown,
) {
    let mut failures: u32 = 0;
    loop {
        if shutdown.is_requested() {
            break;
        }
        let wait = match deliver_due(&store, &webhooks, &owner, clock.as_ref(), &shutdown).await {
            Ok(report) => {
                if failures > 0 {
                    tracing::info!(
                        event = "webhook.pass_recovered",
                        "webhook deliveries work again"
                    );
                }
                failures = 0;
                let until_retry = report.next_retry_ms.map(|at| {
                    let left = at.saturating_sub(unix_ms(clock.now())).max(0);
                    Duration::from_millis(u64::try_from(left).unwrap_or(0))
                });
                until_retry.map_or(webhooks.poll(), |left| left.min(webhooks.poll()))
            }
            Err(error) => {
                let factor = 1u32.checked_shl(failures.min(16)).unwrap_or(u32::MAX);
                let wait = ERROR_BACKOFF_START
                    .saturating_mul(factor)
                    .min(ERROR_BACKOFF_MAX);
                failures = failures.saturating_add(1);
                tracing::error!(
                    event = "webhook.pass_failed",
                    error = %error,
                    failures,
                    retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    "a webhook delivery pass failed; trying again later"
                );
                wait
            }
        };
        tokio::select! {
            biased;
            () = shutdown.requested() => break,
            () = wake.notified(), if failures == 0 => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}
