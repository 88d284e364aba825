//! `events`: the feed of recorded events as JSON Lines, in commit order, for consumers that
//! pull. A consumer keeps the `id` of the last line it handled and starts again with
//! `--after ID`; it never misses an event (see the outbox's commit-order invariant).

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

use contractd::storage::{EventId, FeedPosition, OutboxStore};
use contractd::webhooks;

use super::args::EventsArgs;
use super::Failure;

/// Events read per query.
const PAGE: u32 = 500;

/// How long `--follow` waits before looking again when it has caught up.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// `contractd events [--after ID] [--follow] [--type T]…`.
pub async fn events<S: OutboxStore>(store: &S, args: EventsArgs) -> Result<(), Failure> {
    let mut kinds = Vec::with_capacity(args.types.len());
    for name in &args.types {
        let kind = webhooks::stored_kind(name).ok_or_else(|| {
            Failure::Usage(anyhow::anyhow!(
                "--type '{name}' is not an event type (expected one of {})",
                webhooks::known_event_types().join(", ")
            ))
        })?;
        kinds.push(kind.to_string());
    }
    let mut after: Option<FeedPosition> = match &args.after {
        None => None,
        Some(text) => {
            let id = EventId::parse(text).ok_or_else(|| {
                Failure::Usage(anyhow::anyhow!(
                    "--after '{text}' is not an event id (expected evt_<number>)"
                ))
            })?;
            let position = store
                .feed_position(id.0)
                .await
                .context("reading the feed")?
                .ok_or_else(|| Failure::InvalidInput(anyhow::anyhow!("no event '{id}'")))?;
            Some(position)
        }
    };
    let mut stop = Stop::install().context("installing the signal handlers")?;
    let stdout = std::io::stdout();
    loop {
        let page = store
            .feed(after, &kinds, PAGE)
            .await
            .context("reading the feed")?;
        {
            let mut out = stdout.lock();
            for event in &page {
                let line = webhooks::feed_line(event);
                if writeln!(out, "{line}").is_err() {
                    // The reader went away (a closed pipe): nothing more to do.
                    return Ok(());
                }
                after = Some(event.position);
            }
            if out.flush().is_err() {
                return Ok(());
            }
        }
        if page.len() as u32 == PAGE {
            continue;
        }
        if !args.follow {
            return Ok(());
        }
        tokio::select! {
            () = stop.requested() => return Ok(()),
            () = tokio::time::sleep(FOLLOW_EVERY) => {}
        }
    }
}

/// SIGINT or SIGTERM ends `--follow` cleanly, after the line being written.
struct Stop {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Stop {
    fn install() -> std::io::Result<Stop> {
        Ok(Stop {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn requested(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
