//! Possible end dates, the cancellation date `C(T)`, the latest allowed cancellation date
//! `L(T)` (SPEC section 4) and the auto-extension step (SPEC section 5.2).

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, Days, NaiveDate};

use super::{last_day_of_month, next_day, shift, shift_back, shift_times, Period};

/// Which dates a contract may be cancelled to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CancellationWindow {
    /// Only the end date (and, with auto extension, each extended end date).
    EndOfTerm,
    /// The last day of any calendar month.
    EndOfMonth,
    /// 31 Mar, 30 Jun, 30 Sep or 31 Dec.
    EndOfQuarter,
    /// 31 Dec.
    EndOfYear,
}

/// A text that names no cancellation window.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a cancellation window (expected end_of_term, end_of_month, end_of_quarter or end_of_year)")]
pub struct UnknownWindow(pub String);

impl CancellationWindow {
    /// The name used in files, the database and the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            CancellationWindow::EndOfTerm => "end_of_term",
            CancellationWindow::EndOfMonth => "end_of_month",
            CancellationWindow::EndOfQuarter => "end_of_quarter",
            CancellationWindow::EndOfYear => "end_of_year",
        }
    }

    /// The first last-day-of-window on or after `date`; `None` for `end_of_term`.
    fn window_end_on_or_after(self, date: NaiveDate) -> Option<NaiveDate> {
        match self {
            CancellationWindow::EndOfTerm => None,
            CancellationWindow::EndOfMonth => Some(last_day_of_month(date)),
            CancellationWindow::EndOfQuarter => {
                let quarter_end_month = (date.month0() / 3 + 1) * 3;
                NaiveDate::from_ymd_opt(date.year(), quarter_end_month, 1).map(last_day_of_month)
            }
            CancellationWindow::EndOfYear => NaiveDate::from_ymd_opt(date.year(), 12, 31),
        }
    }
}

impl fmt::Display for CancellationWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CancellationWindow {
    type Err = UnknownWindow;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "end_of_term" => Ok(CancellationWindow::EndOfTerm),
            "end_of_month" => Ok(CancellationWindow::EndOfMonth),
            "end_of_quarter" => Ok(CancellationWindow::EndOfQuarter),
            "end_of_year" => Ok(CancellationWindow::EndOfYear),
            other => Err(UnknownWindow(other.to_string())),
        }
    }
}

/// The cancellation date and its deadline as of one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancellationDates {
    /// `C(T)`: the earliest date the contract can still be ended on by a regular cancellation.
    pub cancellation_date: NaiveDate,
    /// `L(T)`: the last day on which that cancellation may be received
    /// (`cancellation_date` moved back by the notice period).
    pub latest_cancellation_date: NaiveDate,
}

/// The part of a contract that decides when it may be cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancellationTerms {
    /// First day of service: no window end before it is a possible end date.
    pub start_date: NaiveDate,
    /// Last day of service (inclusive), or `None` for an open-ended contract.
    pub end_date: Option<NaiveDate>,
    /// No possible end date lies before this day.
    pub minimum_term_end: Option<NaiveDate>,
    /// How long before an end date the cancellation must be received.
    pub notice_period: Period,
    /// Which dates are possible end dates.
    pub window: CancellationWindow,
    /// `Some` only when the contract auto-extends: each extended end date is possible too.
    pub extension_term: Option<Period>,
}

impl CancellationTerms {
    /// The earliest possible end date on or after `date`, if any (SPEC section 4).
    ///
    /// ```
    /// use chrono::NaiveDate;
    /// use contractd::calendar::{CancellationTerms, CancellationWindow, Period};
    /// let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
    /// let terms = CancellationTerms {
    ///     start_date: d("2025-01-01"),
    ///     end_date: None,
    ///     minimum_term_end: None,
    ///     notice_period: Period::NONE,
    ///     window: CancellationWindow::EndOfQuarter,
    ///     extension_term: None,
    /// };
    /// assert_eq!(terms.next_possible_end_date(d("2025-04-01")), Some(d("2025-06-30")));
    /// ```
    pub fn next_possible_end_date(&self, date: NaiveDate) -> Option<NaiveDate> {
        let mut lower = date.max(self.start_date);
        if let Some(minimum) = self.minimum_term_end {
            lower = lower.max(minimum);
        }
        match self.end_date {
            Some(end) if lower <= end => Some(
                self.window
                    .window_end_on_or_after(lower)
                    .map_or(end, |window_end| window_end.min(end)),
            ),
            Some(end) => self.first_extension_on_or_after(end, lower),
            None => self.window.window_end_on_or_after(lower),
        }
    }

    /// Whether `date` is one of the contract's possible end dates.
    ///
    /// ```
    /// use chrono::NaiveDate;
    /// use contractd::calendar::{CancellationTerms, CancellationWindow, Period};
    /// let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
    /// let terms = CancellationTerms {
    ///     start_date: d("2025-01-01"),
    ///     end_date: Some(d("2025-12-31")),
    ///     minimum_term_end: None,
    ///     notice_period: "1M".parse().unwrap(),
    ///     window: CancellationWindow::EndOfMonth,
    ///     extension_term: None,
    /// };
    /// assert!(terms.is_possible_end_date(d("2025-04-30")));
    /// assert!(!terms.is_possible_end_date(d("2025-04-29")));
    /// ```
    pub fn is_possible_end_date(&self, date: NaiveDate) -> bool {
        self.next_possible_end_date(date) == Some(date)
    }

    /// The cancellation date `C(T)` and latest allowed cancellation date `L(T)` as of `today`,
    /// or `None` when no regular cancellation is possible any more.
    ///
    /// ```
    /// use chrono::NaiveDate;
    /// use contractd::calendar::{CancellationTerms, CancellationWindow, Period};
    /// let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
    /// let terms = CancellationTerms {
    ///     start_date: d("2024-01-01"),
    ///     end_date: None,
    ///     minimum_term_end: None,
    ///     notice_period: "1M".parse().unwrap(),
    ///     window: CancellationWindow::EndOfYear,
    ///     extension_term: None,
    /// };
    /// let dates = terms.dates_as_of(d("2025-11-22")).unwrap();
    /// assert_eq!(dates.cancellation_date, d("2025-12-31"));
    /// assert_eq!(dates.latest_cancellation_date, d("2025-11-30"));
    /// ```
    pub fn dates_as_of(&self, today: NaiveDate) -> Option<CancellationDates> {
        // shift_back(E) >= T implies E >= shift(T) - 3 days (shift is monotone and the
        // month-end rule moves a date by at most 3 days), so the search may start there.
        let earliest = shift(today, self.notice_period)
            .checked_sub_days(Days::new(3))
            .unwrap_or(today)
            .max(today);
        let mut candidate = self.next_possible_end_date(earliest)?;
        loop {
            let deadline = shift_back(candidate, self.notice_period);
            if deadline >= today {
                return Some(CancellationDates {
                    cancellation_date: candidate,
                    latest_cancellation_date: deadline,
                });
            }
            let after = next_day(candidate);
            if after == candidate {
                return None;
            }
            candidate = self.next_possible_end_date(after)?;
        }
    }

    /// `shift(end, k × extension_term)` for the smallest k >= 1 that is on or after `lower`.
    fn first_extension_on_or_after(&self, end: NaiveDate, lower: NaiveDate) -> Option<NaiveDate> {
        let term = self.extension_term.filter(|term| !term.is_none())?;
        // Under-estimate k from the gap (a term is at most 31 days per month, 7 per week…),
        // then walk up.
        let gap_days = (lower - end).num_days().max(0);
        let longest_term_days = i64::from(term.count())
            * match term.unit() {
                super::PeriodUnit::Day => 1,
                super::PeriodUnit::Week => 7,
                super::PeriodUnit::Month => 31,
                super::PeriodUnit::Quarter => 92,
                super::PeriodUnit::Year => 366,
            };
        let mut times = (gap_days / longest_term_days).max(1);
        loop {
            let extended = shift_times(end, term, times);
            if extended >= lower {
                return Some(extended);
            }
            if extended == NaiveDate::MAX {
                return None;
            }
            times += 1;
        }
    }
}

/// The result of [`extend_term`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtendedTerm {
    /// The end date after all extensions.
    pub end_date: NaiveDate,
    /// How many extension terms were added (0: nothing was due).
    pub terms_added: u32,
}

/// The auto-extension step of SPEC section 5.2: while the notice deadline of `end_date`
/// (`end_date` moved back by `notice_period`) is before `business_date`, extend by
/// `extension_term`. One call catches up any number of missed terms.
///
/// A zero `extension_term` extends nothing.
///
/// ```
/// use chrono::NaiveDate;
/// use contractd::calendar::{extend_term, Period};
/// let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
/// let notice: Period = "1M".parse().unwrap();
/// let term: Period = "1Y".parse().unwrap();
/// // deadline 2025-11-30 passed on 2025-12-01: extended once.
/// let extended = extend_term(d("2025-12-31"), notice, term, d("2025-12-01"));
/// assert_eq!(extended.end_date, d("2026-12-31"));
/// assert_eq!(extended.terms_added, 1);
/// ```
pub fn extend_term(
    end_date: NaiveDate,
    notice_period: Period,
    extension_term: Period,
    business_date: NaiveDate,
) -> ExtendedTerm {
    let mut extended = ExtendedTerm {
        end_date,
        terms_added: 0,
    };
    if extension_term.is_none() {
        return extended;
    }
    while shift_back(extended.end_date, notice_period) < business_date {
        let next = shift(extended.end_date, extension_term);
        if next <= extended.end_date {
            break;
        }
        extended.end_date = next;
        extended.terms_added += 1;
    }
    extended
}
