//! systemd notifications (sd-notify): READY=1, RELOADING=1, STOPPING=1 and the watchdog.
//! Without `NOTIFY_SOCKET` (not under systemd) nothing is sent and nothing is started.
//!
//! sd-notify sends on a blocking socket: when the receiver does not read (its queue is
//! full), a send blocks. So the sends happen on a thread of their own, fed through a bounded
//! queue; the async runtime never waits on the socket, and a stuck receiver costs at most
//! dropped watchdog pings (which is what a stuck receiver deserves).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::oneshot;

use super::scheduler::Heartbeat;
use crate::shutdown::Shutdown;

/// Messages waiting for the sender thread, at most.
const QUEUE: usize = 16;

/// How long [`Notifier::stopping`] waits for STOPPING=1 to be sent.
const STOPPING_WAIT: Duration = Duration::from_secs(1);

/// One notification for the sender thread.
#[derive(Debug)]
enum Message {
    /// READY=1.
    Ready,
    /// RELOADING=1 with MONOTONIC_USEC.
    Reloading,
    /// WATCHDOG=1.
    Watchdog,
    /// STOPPING=1; the sender says when it went out.
    Stopping(oneshot::Sender<()>),
}

/// Sends notifications to the service manager, if there is one.
#[derive(Debug, Clone)]
pub struct Notifier {
    /// The queue of the sender thread; `None` without `NOTIFY_SOCKET`.
    queue: Option<SyncSender<Message>>,
    /// Whether a full queue was reported already (reported once).
    full_reported: Arc<AtomicBool>,
}

impl Notifier {
    /// A notifier for this process: starts the sender thread when `NOTIFY_SOCKET` is set.
    pub fn start() -> Notifier {
        let queue = std::env::var_os("NOTIFY_SOCKET").and_then(|_| {
            let (sender, receiver) = sync_channel::<Message>(QUEUE);
            std::thread::Builder::new()
                .name("sd-notify".to_string())
                .spawn(move || {
                    for message in receiver {
                        deliver(message);
                    }
                })
                .map_err(|error| {
                    tracing::warn!(
                        event = "notify.failed",
                        error = %error,
                        "cannot start the systemd notification thread"
                    );
                })
                .ok()
                .map(|_| sender)
        });
        Notifier {
            queue,
            full_reported: Arc::new(AtomicBool::new(false)),
        }
    }

    fn enqueue(&self, message: Message) {
        let Some(queue) = &self.queue else { return };
        match queue.try_send(message) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                if !self.full_reported.swap(true, Ordering::SeqCst) {
                    tracing::warn!(
                        event = "notify.failed",
                        error = "the service manager does not read its notification socket",
                        "systemd notifications are being dropped"
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Started (migrated, listening, ticking) or done reloading.
    pub fn ready(&self) {
        self.enqueue(Message::Ready);
    }

    /// Reloading the configuration (followed by [`Notifier::ready`]).
    pub fn reloading(&self) {
        self.enqueue(Message::Reloading);
    }

    /// The tick loop is alive.
    fn watchdog(&self) {
        self.enqueue(Message::Watchdog);
    }

    /// Shutting down: queue STOPPING=1 and wait a moment for it to go out.
    pub async fn stopping(&self) {
        if self.queue.is_none() {
            return;
        }
        let (sent, wait) = oneshot::channel();
        self.enqueue(Message::Stopping(sent));
        let _ = tokio::time::timeout(STOPPING_WAIT, wait).await;
    }
}

/// Send one notification (on the sender thread).
fn deliver(message: Message) {
    let outcome = match message {
        Message::Ready => sd_notify::notify(false, &[NotifyState::Ready]),
        Message::Reloading => match NotifyState::monotonic_usec_now() {
            Ok(now) => sd_notify::notify(false, &[NotifyState::Reloading, now]),
            Err(_) => sd_notify::notify(false, &[NotifyState::Reloading]),
        },
        Message::Watchdog => sd_notify::notify(false, &[NotifyState::Watchdog]),
        Message::Stopping(sent) => {
            let outcome = sd_notify::notify(false, &[NotifyState::Stopping]);
            let _ = sent.send(());
            outcome
        }
    };
    // The environment is left alone (`false` above): unsetting it is not thread-safe.
    if let Err(error) = outcome {
        tracing::warn!(
            event = "notify.failed",
            error = %error,
            "could not notify the service manager"
        );
    }
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
pub async fn watchdog(
    interval: Duration,
    heartbeat: Arc<Heartbeat>,
    notifier: Notifier,
    mut shutdown: Shutdown,
) {
    let period = (interval / 2).max(Duration::from_millis(100));
    let mut stalled = false;
    loop {
        tokio::select! {
            () = shutdown.requested() => return,
            () = tokio::time::sleep(period) => {}
        }
        if heartbeat.is_alive() {
            notifier.watchdog();
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
