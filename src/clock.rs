//! The one source of "now". Domain code never reads a clock: it gets a business date.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;

/// Where the current instant comes from.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that starts at a given instant and runs on from there (`serve --now`), or stands
/// still (`run --now`, tests).
#[derive(Debug, Clone)]
pub struct OffsetClock {
    /// The instant the clock reads at `started`.
    origin: DateTime<Utc>,
    /// The real instant it was set, or `None` for a clock that stands still.
    started: Option<std::time::Instant>,
}

impl OffsetClock {
    /// A clock reading `origin` now and running on with real time.
    pub fn running_from(origin: DateTime<Utc>) -> OffsetClock {
        OffsetClock {
            origin,
            started: Some(std::time::Instant::now()),
        }
    }

    /// A clock that always reads `instant`.
    pub fn fixed(instant: DateTime<Utc>) -> OffsetClock {
        OffsetClock {
            origin: instant,
            started: None,
        }
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> DateTime<Utc> {
        match self.started {
            Some(started) => {
                let elapsed = chrono::Duration::from_std(started.elapsed()).unwrap_or_default();
                self.origin + elapsed
            }
            None => self.origin,
        }
    }
}

/// A shared clock.
pub type SharedClock = Arc<dyn Clock>;

/// The business date of `zone` at `instant`: its local calendar date. A local midnight that
/// does not exist (a DST jump at 00:00) needs no special case: the date changes at the first
/// instant that exists.
pub fn business_date(instant: DateTime<Utc>, zone: Tz) -> NaiveDate {
    instant.with_timezone(&zone).date_naive()
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(instant: DateTime<Utc>) -> i64 {
    instant.timestamp_millis()
}
