//! What a contract remembers about its reminders (docs/rules.md §5.5): its own lead times, the
//! reminders already sent for dates still ahead, and when the next one falls due.

use std::fmt;

use chrono::NaiveDate;

use crate::calendar::Period;

/// The most lead times one list may hold (configuration or a contract's own).
pub const MAX_LEAD_TIMES: usize = 8;

/// A list of at most [`MAX_LEAD_TIMES`] lead times, in the order given. Fixed size, so the
/// settings that carry it stay `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LeadTimes {
    periods: [Option<Period>; MAX_LEAD_TIMES],
}

/// Why a list of lead times is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeadTimesError {
    /// More than [`MAX_LEAD_TIMES`].
    #[error("at most {MAX_LEAD_TIMES} lead times are allowed, {0} given")]
    TooMany(usize),
    /// The same period twice.
    #[error("the lead time {0} is given twice")]
    Duplicate(Period),
}

impl LeadTimes {
    /// No lead times: no reminders.
    pub const NONE: LeadTimes = LeadTimes {
        periods: [None; MAX_LEAD_TIMES],
    };

    /// A list of lead times; refused when longer than [`MAX_LEAD_TIMES`] or with a period
    /// given twice.
    pub fn new(periods: &[Period]) -> Result<LeadTimes, LeadTimesError> {
        if periods.len() > MAX_LEAD_TIMES {
            return Err(LeadTimesError::TooMany(periods.len()));
        }
        let mut list = LeadTimes::NONE;
        for (index, period) in periods.iter().enumerate() {
            if periods[..index].contains(period) {
                return Err(LeadTimesError::Duplicate(*period));
            }
            list.periods[index] = Some(*period);
        }
        Ok(list)
    }

    /// The lead times, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = Period> + '_ {
        self.periods.iter().map_while(|period| *period)
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.periods[0].is_none()
    }

    /// The list as stored in the database: the periods joined by commas (`30D,7D`); empty
    /// for no lead times.
    pub fn to_text(&self) -> String {
        self.iter()
            .map(|period| period.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The periods as text, for the record.
    pub fn to_strings(&self) -> Vec<String> {
        self.iter().map(|period| period.to_string()).collect()
    }
}

impl fmt::Debug for LeadTimes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|period| period.to_string()))
            .finish()
    }
}

text_enum! {
    /// What a reminder is about.
    ReminderKind {
        /// The latest allowed cancellation date of a contract that goes on unless cancelled.
        DeadlineApproaching => "deadline_approaching",
        /// The end date of a contract that will not be extended.
        EndApproaching => "end_approaching",
    }
}

/// One reminder that was sent: exactly one per (contract, kind, date reminded of, lead time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SentReminder {
    /// What it was about.
    pub kind: ReminderKind,
    /// The date it reminded of (the deadline or the end date).
    pub date: NaiveDate,
    /// The lead time it was sent for.
    pub lead_time: Period,
}

impl SentReminder {
    /// The transition key of the event that sent it (`deadline_approaching:2025-11-30:30D`):
    /// storage refuses a second event with the same key on the same contract.
    pub fn key(&self) -> String {
        format!("{}:{}:{}", self.kind, self.date, self.lead_time)
    }
}

/// A contract's reminder settings and state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reminders {
    /// The contract's own lead times (record field `reminder_lead_times`): `None` means the
    /// configured ones, an empty list means no reminders for this contract.
    pub lead_times: Option<LeadTimes>,
    /// Reminders sent for dates that were not past when they were last written: never sent
    /// twice, even when the date moves away and back.
    pub sent: Vec<SentReminder>,
    /// Computed: the first day on which a reminder not sent yet falls due, with the lead
    /// times in force when the contract was last written (`None`: nothing to remind of).
    pub next_on: Option<NaiveDate>,
}

impl Reminders {
    /// The sent reminders as stored in the database: their keys joined by `;`, or `None`.
    pub fn sent_text(&self) -> Option<String> {
        if self.sent.is_empty() {
            return None;
        }
        Some(
            self.sent
                .iter()
                .map(SentReminder::key)
                .collect::<Vec<_>>()
                .join(";"),
        )
    }
}
