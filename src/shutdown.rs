//! Shutdown, passed into long-running work as a value and fanned out to every task.

use tokio::sync::watch;

/// Asks everything holding a [`Shutdown`] to stop taking new work.
#[derive(Debug, Clone)]
pub struct ShutdownTrigger {
    /// Sends `true` once shutdown is requested.
    sender: watch::Sender<bool>,
}

/// Tells work in progress whether it should stop after the batch in flight.
#[derive(Debug, Clone)]
pub struct Shutdown {
    /// Becomes `true` once shutdown is requested.
    receiver: watch::Receiver<bool>,
}

/// A connected trigger and listener.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (sender, receiver) = watch::channel(false);
    (ShutdownTrigger { sender }, Shutdown { receiver })
}

impl ShutdownTrigger {
    /// Request shutdown (idempotent).
    pub fn trigger(&self) {
        let _ = self.sender.send(true);
    }

    /// A new listener.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            receiver: self.sender.subscribe(),
        }
    }
}

impl Shutdown {
    /// A listener that never fires (one-shot commands, tests).
    pub fn never() -> Shutdown {
        let (sender, receiver) = watch::channel(false);
        std::mem::forget(sender);
        Shutdown { receiver }
    }

    /// Whether shutdown was requested.
    pub fn is_requested(&self) -> bool {
        *self.receiver.borrow()
    }

    /// Wait until shutdown is requested.
    pub async fn requested(&mut self) {
        while !*self.receiver.borrow_and_update() {
            if self.receiver.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}
