//! SIGTERM and SIGINT stop the daemon; SIGHUP reloads its configuration.

use futures::StreamExt;
use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_tokio::{Handle, Signals};

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Stop: finish the batch in flight, exit 0. Carries the signal's name for the log.
    Stop(&'static str),
    /// Read the configuration again.
    Reload,
}

/// The daemon's signal handlers, as a stream of requests.
pub struct SignalListener {
    /// The signals received, in order.
    signals: Signals,
    /// Unregisters the handlers when the daemon is done.
    handle: Handle,
}

impl std::fmt::Debug for SignalListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignalListener")
    }
}

impl SignalListener {
    /// Install the handlers. From here on SIGTERM, SIGINT and SIGHUP no longer have their
    /// default effect (ending the process); they are queued for [`SignalListener::next`].
    pub fn install() -> std::io::Result<SignalListener> {
        let signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
        let handle = signals.handle();
        Ok(SignalListener { signals, handle })
    }

    /// The next request; `None` once the handlers are closed.
    pub async fn next(&mut self) -> Option<Request> {
        loop {
            match self.signals.next().await? {
                SIGTERM => return Some(Request::Stop("SIGTERM")),
                SIGINT => return Some(Request::Stop("SIGINT")),
                SIGHUP => return Some(Request::Reload),
                _ => continue,
            }
        }
    }

    /// Unregister the handlers.
    pub fn close(&self) {
        self.handle.close();
    }
}
