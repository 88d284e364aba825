//! systemd notifications (sd-notify): READY=1, RELOADING=1, STOPPING=1 and the watchdog.
//! Without `NOTIFY_SOCKET` (not under systemd) every call does nothing.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

use super::scheduler::Heartbeat;
use crate::shutdown::Shutdown;

fn send(states: &[NotifyState<'_>]) {
    // The environment is left alone (`false`): unsetting it is not thread-safe, and nothing
    // here starts child processes that could inherit it.
    if let Err(error) = sd_notify::notify(false, states) {
        tracing::warn!(
            event = "notify.failed",
            error = %error,
            "could not notify the service manager"
        );
    }
}

/// Started (migrated, listening, ticking) or done reloading.
pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// Reloading the configuration (followed by [`ready`]).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Shutting down.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// The watchdog interval systemd asks for (`WatchdogSec=`), if any.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        Some(Duration::from_micros(usec))
    } else {
        None
    }
}

/// Send WATCHDOG=1 every half `interval` while the tick loop keeps its schedule. When it
/// stalls the pings stop and systemd restarts the service.
pub async fn watchdog(interval: Duration, heartbeat: Arc<Heartbeat>, mut shutdown: Shutdown) {
    let period = (interval / 2).max(Duration::from_millis(100));
    let mut stalled = false;
    loop {
        tokio::select! {
            () = shutdown.requested() => return,
            () = tokio::time::sleep(period) => {}
        }
        if heartbeat.is_alive() {
            send(&[NotifyState::Watchdog]);
            stalled = false;
        } else if !stalled {
            stalled = true;
            tracing::error!(
                event = "watchdog.withheld",
                last_tick_ms = heartbeat.last_tick_ms().unwrap_or(0),
                "the tick loop is stalled; the systemd watchdog is no longer fed"
            );
        }
    }
}
