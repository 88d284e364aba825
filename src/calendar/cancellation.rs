//! Possible end dates, the cancellation date `C(T)`, the latest allowed cancellation date
//! `L(T)` (docs/rules.md §4) and the auto-extension step (docs/rules.md §5.2).

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, Days, NaiveDate};

use super::period::is_month_end;
use super::{
    days_in_month, last_day_of_month, next_day, shift, shift_back, shift_times, Period, PeriodUnit,
};

/// Which dates a contract may be cancelled to.
///
/// ```
/// use contractd::calendar::CancellationWindow;
/// let window: CancellationWindow = "end_of_quarter".parse().unwrap();
/// assert_eq!(window, CancellationWindow::EndOfQuarter);
/// assert_eq!(window.to_string(), "end_of_quarter");
/// ```
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
///
/// ```
/// use contractd::calendar::{CancellationWindow, UnknownWindow};
/// assert_eq!(
///     "monthly".parse::<CancellationWindow>(),
///     Err(UnknownWindow("monthly".to_string()))
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a cancellation window (expected end_of_term, end_of_month, end_of_quarter or end_of_year)")]
pub struct UnknownWindow(pub String);

impl CancellationWindow {
    /// The name used in files, the database and the command line.
    ///
    /// ```
    /// use contractd::calendar::CancellationWindow;
    /// assert_eq!(CancellationWindow::EndOfTerm.as_str(), "end_of_term");
    /// ```
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
///
/// ```
/// use chrono::NaiveDate;
/// use contractd::calendar::{CancellationDates, CancellationTerms, CancellationWindow};
/// let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
/// let terms = CancellationTerms {
///     start_date: d("2025-01-01"),
///     end_date: None,
///     minimum_term_end: None,
///     notice_period: "1M".parse().unwrap(),
///     window: CancellationWindow::EndOfMonth,
///     extension_term: None,
/// };
/// let expected = CancellationDates {
///     cancellation_date: d("2025-12-31"),
///     latest_cancellation_date: d("2025-11-30"),
/// };
/// assert_eq!(terms.dates_as_of(d("2025-11-22")), Some(expected));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancellationDates {
    /// `C(T)`: the earliest date the contract can still be ended on by a regular cancellation.
    pub cancellation_date: NaiveDate,
    /// `L(T)`: the last day on which that cancellation may be received
    /// (`cancellation_date` moved back by the notice period).
    pub latest_cancellation_date: NaiveDate,
}

/// The part of a contract that decides when it may be cancelled.
///
/// ```
/// use chrono::NaiveDate;
/// use contractd::calendar::{CancellationTerms, CancellationWindow, Period};
/// let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
/// // A one-year term, extended by a year at a time unless cancelled a month ahead.
/// let terms = CancellationTerms {
///     start_date: d("2025-01-01"),
///     end_date: Some(d("2025-12-31")),
///     minimum_term_end: None,
///     notice_period: "1M".parse().unwrap(),
///     window: CancellationWindow::EndOfTerm,
///     extension_term: Some("1Y".parse().unwrap()),
/// };
/// let dates = terms.dates_as_of(d("2025-12-01")).unwrap();
/// assert_eq!(dates.cancellation_date, d("2026-12-31"));
/// ```
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
    /// The earliest possible end date on or after `date`, if any (docs/rules.md §4.1).
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

    /// The first extended end date (k >= 1 extensions) on or after `lower`.
    fn first_extension_on_or_after(&self, end: NaiveDate, lower: NaiveDate) -> Option<NaiveDate> {
        let term = self.extension_term.filter(|term| !term.is_none())?;
        first_extension(end, term, lower, |extended| extended >= lower)
            .ok()
            .map(|(extended, _)| extended)
    }
}

/// The extended end dates `E_k` (k >= 1) of `end` by a non-zero `term`, as [`extension_end`]
/// computes them: the first one that `accept`s, with its k.
///
/// `accept` must be monotone along the sequence (false … false, true …) and false for every
/// `E_k < lower`; `lower` only lets the walk skip ahead. `Err` carries the last date reached
/// when the sequence saturates at chrono's limit before any date is accepted.
fn first_extension(
    end: NaiveDate,
    term: Period,
    lower: NaiveDate,
    accept: impl Fn(NaiveDate) -> bool,
) -> Result<(NaiveDate, u32), (NaiveDate, u32)> {
    // One step of `term` is at most this many days (31 per month, 92 per quarter: Feb 28 →
    // May 31, 366 per year), so after k steps E_k <= end + k × longest. Every k below
    // gap / longest therefore gives E_k < lower: start the walk there.
    let longest_step_days = i64::from(term.count())
        * match term.unit() {
            PeriodUnit::Day => 1,
            PeriodUnit::Week => 7,
            PeriodUnit::Month => 31,
            PeriodUnit::Quarter => 92,
            PeriodUnit::Year => 366,
        };
    let gap_days = (lower - end).num_days().max(0);
    let mut times = u32::try_from((gap_days / longest_step_days.max(1)).max(1)).unwrap_or(u32::MAX);
    let mut extended = extension_end(end, term, times);
    loop {
        if accept(extended) {
            return Ok((extended, times));
        }
        let next = shift(extended, term);
        if next <= extended || times == u32::MAX {
            return Err((extended, times));
        }
        extended = next;
        times += 1;
    }
}

/// The end date after `times` auto-extensions of `end_date` by `extension_term`.
///
/// This is [`shift`] applied `times` times — exactly what `times` daily sweeps of the
/// auto-extension job produce, and what one sweep catching up `times` terms produces too.
/// It equals `shift_times(end_date, extension_term, times)` except when the month-end rule
/// turns an intermediate end date into a month end (30 Jan → 28 Feb → 31 Mar, where one
/// two-month jump would give 30 Mar): a stored end date carries no memory of an earlier anchor.
///
/// ```
/// use chrono::NaiveDate;
/// use contractd::calendar::{extension_end, shift_times, Period};
/// let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
/// let month: Period = "1M".parse().unwrap();
/// assert_eq!(extension_end(d("2025-01-30"), month, 1), d("2025-02-28"));
/// assert_eq!(extension_end(d("2025-01-30"), month, 2), d("2025-03-31"));
/// assert_eq!(extension_end(d("2025-01-15"), month, 40), shift_times(d("2025-01-15"), month, 40));
/// ```
pub fn extension_end(end_date: NaiveDate, extension_term: Period, times: u32) -> NaiveDate {
    let mut date = end_date;
    let mut remaining = i64::from(times);
    if let Some(months) = extension_term.months().filter(|&months| months > 0) {
        // Stepping and jumping agree from a month end on (the rule keeps it a month end) and as
        // long as no step lands on a month end (the day of month then never changes). So step
        // only while a landing is still possible. Whether a step lands depends only on its
        // target month and, for day 28, on that year being a leap year: on the target's month
        // index modulo 4800 (the Gregorian calendar repeats every 400 years). That index
        // repeats within 4800 steps, so a walk of 4800 steps without a landing never lands.
        let mut steps = 0_u32;
        while remaining > 0 && steps < 4_800 && may_land_on_month_end(date, months) {
            date = shift(date, extension_term);
            remaining -= 1;
            steps += 1;
        }
    }
    shift_times(date, extension_term, remaining)
}

/// Whether some step of `months` months from `date` (not itself a month end) can land on a
/// month end: only from day 28 and later, into a month of at most that many days.
fn may_land_on_month_end(date: NaiveDate, months: i64) -> bool {
    if is_month_end(date) || date.day() < 28 {
        return false;
    }
    (1..=12).any(|step: i64| {
        let month0 = (i64::from(date.month0()) + step * months).rem_euclid(12);
        // 2001 is a common year: February has 28 days, the fewest it can have.
        days_in_month(2001, month0 as u32 + 1) <= date.day()
    })
}

/// The result of [`extend_term`].
///
/// ```
/// use chrono::NaiveDate;
/// use contractd::calendar::{extend_term, ExtendedTerm};
/// let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
/// let (notice, quarter) = ("0D".parse().unwrap(), "1Q".parse().unwrap());
/// let extended = extend_term(d("2025-03-31"), notice, quarter, d("2025-09-01"));
/// assert_eq!(extended, ExtendedTerm { end_date: d("2025-09-30"), terms_added: 2 });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtendedTerm {
    /// The end date after all extensions.
    pub end_date: NaiveDate,
    /// How many extension terms were added (0: nothing was due).
    pub terms_added: u32,
}

/// The auto-extension step of docs/rules.md §5.2: while the notice deadline of `end_date`
/// (`end_date` moved back by `notice_period`) is before `business_date`, extend by
/// `extension_term`. One call catches up any number of missed terms and lands exactly where
/// daily sweeps would have ([`extension_end`]), which is also the cancellation date the
/// contract showed as of `business_date` (`end_of_term` with this extension term).
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
    let unchanged = ExtendedTerm {
        end_date,
        terms_added: 0,
    };
    if extension_term.is_none() || shift_back(end_date, notice_period) >= business_date {
        return unchanged;
    }
    // shift_back(E, notice) >= D implies E >= shift(D, notice) − 3 days (see `dates_as_of`).
    let lower = shift(business_date, notice_period)
        .checked_sub_days(Days::new(3))
        .unwrap_or(NaiveDate::MIN);
    let (end_date, terms_added) = first_extension(end_date, extension_term, lower, |extended| {
        shift_back(extended, notice_period) >= business_date
    })
    .unwrap_or_else(|saturated| saturated);
    ExtendedTerm {
        end_date,
        terms_added,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    fn p(text: &str) -> Period {
        text.parse().unwrap()
    }

    fn terms(window: CancellationWindow) -> CancellationTerms {
        CancellationTerms {
            start_date: d("2024-01-01"),
            end_date: None,
            minimum_term_end: None,
            notice_period: p("1M"),
            window,
            extension_term: None,
        }
    }

    /// A tiny deterministic generator, so the brute-force comparisons need no dependency.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, bound: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % bound
        }

        fn date(&mut self, from_year: i32, years: u64) -> NaiveDate {
            d(&format!("{from_year}-01-01"))
                + chrono::Duration::days(self.below(years * 366) as i64)
        }

        fn period(&mut self, max_count: u64) -> Period {
            let unit = [
                PeriodUnit::Day,
                PeriodUnit::Week,
                PeriodUnit::Month,
                PeriodUnit::Quarter,
                PeriodUnit::Year,
            ][self.below(5) as usize];
            Period::new(self.below(max_count + 1) as u16, unit).unwrap()
        }
    }

    /// docs/rules.md §4 read literally, one day at a time.
    fn is_possible_by_definition(terms: &CancellationTerms, date: NaiveDate) -> bool {
        if date < terms.start_date || terms.minimum_term_end.is_some_and(|min| date < min) {
            return false;
        }
        let in_window = match terms.window {
            CancellationWindow::EndOfTerm => false,
            CancellationWindow::EndOfMonth => is_month_end(date),
            CancellationWindow::EndOfQuarter => {
                is_month_end(date) && date.month().is_multiple_of(3)
            }
            CancellationWindow::EndOfYear => date.month() == 12 && date.day() == 31,
        };
        match terms.end_date {
            None => in_window,
            Some(end) if date <= end => date == end || in_window,
            Some(end) => match terms.extension_term.filter(|term| !term.is_none()) {
                None => false,
                Some(term) => {
                    let mut extended = end;
                    while extended < date {
                        extended = shift(extended, term);
                    }
                    extended == date
                }
            },
        }
    }

    fn dates_by_definition(
        terms: &CancellationTerms,
        today: NaiveDate,
        horizon: NaiveDate,
    ) -> Option<CancellationDates> {
        today
            .iter_days()
            .take_while(|&date| date <= horizon)
            .filter(|&date| is_possible_by_definition(terms, date))
            .map(|date| CancellationDates {
                cancellation_date: date,
                latest_cancellation_date: shift_back(date, terms.notice_period),
            })
            .find(|dates| dates.latest_cancellation_date >= today)
    }

    #[test]
    fn window_names_round_trip() {
        for window in [
            CancellationWindow::EndOfTerm,
            CancellationWindow::EndOfMonth,
            CancellationWindow::EndOfQuarter,
            CancellationWindow::EndOfYear,
        ] {
            assert_eq!(window.as_str().parse::<CancellationWindow>(), Ok(window));
            assert_eq!(window.to_string(), window.as_str());
        }
        assert_eq!(
            "End_Of_Month".parse::<CancellationWindow>(),
            Err(UnknownWindow("End_Of_Month".to_string()))
        );
    }

    #[test]
    fn window_ends_of_each_window() {
        let cases = [
            (CancellationWindow::EndOfMonth, "2024-02-01", "2024-02-29"),
            (CancellationWindow::EndOfMonth, "2024-02-29", "2024-02-29"),
            (CancellationWindow::EndOfQuarter, "2025-01-01", "2025-03-31"),
            (CancellationWindow::EndOfQuarter, "2025-04-01", "2025-06-30"),
            (CancellationWindow::EndOfQuarter, "2025-09-30", "2025-09-30"),
            (CancellationWindow::EndOfQuarter, "2025-10-01", "2025-12-31"),
            (CancellationWindow::EndOfYear, "2025-01-01", "2025-12-31"),
            (CancellationWindow::EndOfYear, "2025-12-31", "2025-12-31"),
        ];
        for (window, date, expected) in cases {
            assert_eq!(window.window_end_on_or_after(d(date)), Some(d(expected)));
        }
        assert_eq!(
            CancellationWindow::EndOfTerm.window_end_on_or_after(d("2025-01-01")),
            None
        );
    }

    #[test]
    fn spec_examples_end_of_year_and_end_of_month() {
        let year = terms(CancellationWindow::EndOfYear);
        let month = terms(CancellationWindow::EndOfMonth);
        let expect = |terms: &CancellationTerms, today: &str, c: &str, l: &str| {
            assert_eq!(
                terms.dates_as_of(d(today)),
                Some(CancellationDates {
                    cancellation_date: d(c),
                    latest_cancellation_date: d(l),
                }),
                "{:?} as of {today}",
                terms.window
            );
        };
        expect(&year, "2025-11-22", "2025-12-31", "2025-11-30");
        expect(&year, "2025-11-30", "2025-12-31", "2025-11-30");
        expect(&year, "2025-12-01", "2026-12-31", "2026-11-30");
        expect(&month, "2025-11-22", "2025-12-31", "2025-11-30");
        expect(&month, "2025-10-31", "2025-11-30", "2025-10-31");
        expect(&month, "2025-11-01", "2025-12-31", "2025-11-30");
    }

    #[test]
    fn end_of_term_without_extension_runs_out() {
        let terms = CancellationTerms {
            end_date: Some(d("2025-12-31")),
            ..terms(CancellationWindow::EndOfTerm)
        };
        assert_eq!(
            terms
                .dates_as_of(d("2025-11-30"))
                .map(|x| x.cancellation_date),
            Some(d("2025-12-31"))
        );
        assert_eq!(terms.dates_as_of(d("2025-12-01")), None);
        assert_eq!(terms.dates_as_of(d("2030-01-01")), None);
    }

    #[test]
    fn end_of_term_with_extension_moves_to_the_next_term() {
        let terms = CancellationTerms {
            end_date: Some(d("2025-12-31")),
            extension_term: Some(p("1Y")),
            ..terms(CancellationWindow::EndOfTerm)
        };
        let dates = terms.dates_as_of(d("2025-12-01")).unwrap();
        assert_eq!(dates.cancellation_date, d("2026-12-31"));
        assert_eq!(dates.latest_cancellation_date, d("2026-11-30"));
        // Decades later, still the right term (the walk starts from an estimate).
        let dates = terms.dates_as_of(d("2090-12-01")).unwrap();
        assert_eq!(dates.cancellation_date, d("2091-12-31"));
    }

    #[test]
    fn zero_extension_term_is_no_extension() {
        let terms = CancellationTerms {
            end_date: Some(d("2025-12-31")),
            extension_term: Some(Period::NONE),
            ..terms(CancellationWindow::EndOfTerm)
        };
        assert_eq!(terms.dates_as_of(d("2025-12-01")), None);
        let extended = extend_term(d("2025-12-31"), p("1M"), Period::NONE, d("2026-06-01"));
        assert_eq!(extended.end_date, d("2025-12-31"));
        assert_eq!(extended.terms_added, 0);
    }

    #[test]
    fn minimum_term_and_start_bound_the_possible_end_dates() {
        let terms = CancellationTerms {
            start_date: d("2025-03-15"),
            minimum_term_end: Some(d("2025-08-15")),
            notice_period: Period::NONE,
            ..terms(CancellationWindow::EndOfMonth)
        };
        assert_eq!(
            terms.next_possible_end_date(d("2025-01-01")),
            Some(d("2025-08-31"))
        );
        assert!(!terms.is_possible_end_date(d("2025-07-31")));
        assert!(terms.is_possible_end_date(d("2025-08-31")));
        // A minimum term beyond a fixed end without extension leaves nothing.
        let fixed = CancellationTerms {
            end_date: Some(d("2025-06-30")),
            ..terms
        };
        assert_eq!(fixed.next_possible_end_date(d("2025-01-01")), None);
    }

    #[test]
    fn end_date_inside_a_window_is_possible_and_caps_the_window() {
        let terms = CancellationTerms {
            end_date: Some(d("2025-05-14")),
            ..terms(CancellationWindow::EndOfQuarter)
        };
        assert_eq!(
            terms.next_possible_end_date(d("2025-04-01")),
            Some(d("2025-05-14"))
        );
        assert!(terms.is_possible_end_date(d("2025-03-31")));
        assert!(!terms.is_possible_end_date(d("2025-06-30")));
    }

    #[test]
    fn extension_end_steps_like_the_daily_job() {
        let month = p("1M");
        assert_eq!(extension_end(d("2025-01-30"), month, 0), d("2025-01-30"));
        assert_eq!(extension_end(d("2025-01-30"), month, 1), d("2025-02-28"));
        assert_eq!(extension_end(d("2025-01-30"), month, 2), d("2025-03-31"));
        assert_eq!(extension_end(d("2025-01-30"), month, 3), d("2025-04-30"));
        // Day 28 only becomes a month end in a common year's February.
        assert_eq!(extension_end(d("2024-01-28"), month, 2), d("2024-03-28"));
        assert_eq!(extension_end(d("2025-01-28"), month, 2), d("2025-03-31"));
        // A four-year term from a leap day-28 first lands on a month end in 2100.
        assert_eq!(extension_end(d("2024-02-28"), p("4Y"), 19), d("2100-02-28"));
        assert_eq!(extension_end(d("2024-02-28"), p("4Y"), 20), d("2104-02-29"));
        // Never lands: January 30 yearly.
        assert_eq!(
            extension_end(d("2025-01-30"), p("1Y"), 500),
            d("2525-01-30")
        );
    }

    #[test]
    fn extension_end_equals_stepping_for_random_cases() {
        let mut rng = Lcg(7);
        for _ in 0..3_000 {
            // Bias towards the interesting days 28..=31.
            let mut end = rng.date(1990, 110);
            if rng.below(2) == 0 {
                end = last_day_of_month(end) - chrono::Duration::days(rng.below(4) as i64);
            }
            let max_count = if rng.below(4) == 0 { 999 } else { 30 };
            let term = rng.period(max_count);
            let times = rng.below(60) as u32;
            let mut stepped = end;
            for _ in 0..times {
                stepped = shift(stepped, term);
            }
            assert_eq!(
                extension_end(end, term, times),
                stepped,
                "{end} + {times} × {term}"
            );
        }
    }

    #[test]
    fn extend_term_catches_up_several_terms_at_once() {
        // Deadline 2025-11-30 missed and the sweeps of two more years missed too.
        let extended = extend_term(d("2025-12-31"), p("1M"), p("1Y"), d("2027-12-05"));
        assert_eq!(extended.end_date, d("2028-12-31"));
        assert_eq!(extended.terms_added, 3);
        // Not due yet: unchanged.
        let unchanged = extend_term(d("2025-12-31"), p("1M"), p("1Y"), d("2025-11-30"));
        assert_eq!(unchanged.end_date, d("2025-12-31"));
        assert_eq!(unchanged.terms_added, 0);
    }

    #[test]
    fn extend_term_one_catch_up_equals_daily_sweeps() {
        // One sweep after downtime must leave the contract where daily sweeps would have:
        // 30 Jan → 28 Feb → 31 Mar (the month-end rule), not the jump's 30 Mar.
        let notice = Period::NONE;
        let term = p("1M");
        let mut daily = d("2025-01-30");
        let mut day = d("2025-01-31");
        while day <= d("2025-06-15") {
            daily = extend_term(daily, notice, term, day).end_date;
            day = next_day(day);
        }
        let once = extend_term(d("2025-01-30"), notice, term, d("2025-06-15"));
        assert_eq!(daily, d("2025-06-30"));
        assert_eq!(once.end_date, daily);
        assert_eq!(once.terms_added, 5);
    }

    #[test]
    fn extend_term_lands_on_the_cancellation_date_the_contract_showed() {
        // Regression: possible extended end dates were shift_times(end, term, k) while the job
        // steps, so with end 2025-01-30, term 1M, notice 2M the contract showed C = 2025-03-30
        // as of 2025-01-05 and was then extended to 2025-03-31.
        let terms = CancellationTerms {
            start_date: d("2024-01-30"),
            end_date: Some(d("2025-01-30")),
            minimum_term_end: None,
            notice_period: p("2M"),
            window: CancellationWindow::EndOfTerm,
            extension_term: Some(p("1M")),
        };
        let shown = terms.dates_as_of(d("2025-01-05")).unwrap();
        let extended = extend_term(d("2025-01-30"), p("2M"), p("1M"), d("2025-01-05"));
        assert_eq!(shown.cancellation_date, d("2025-03-31"));
        assert_eq!(extended.end_date, d("2025-03-31"));

        let mut rng = Lcg(11);
        for _ in 0..3_000 {
            let end = rng.date(1990, 110);
            let max_count = if rng.below(8) == 0 { 999 } else { 24 };
            let notice = rng.period(max_count);
            let term = rng.period(24);
            if term.is_none() {
                continue;
            }
            let business_date = end + chrono::Duration::days(rng.below(4_000) as i64 - 1_000);
            let terms = CancellationTerms {
                start_date: end - chrono::Duration::days(400),
                end_date: Some(end),
                minimum_term_end: None,
                notice_period: notice,
                window: CancellationWindow::EndOfTerm,
                extension_term: Some(term),
            };
            let extended = extend_term(end, notice, term, business_date);
            assert!(shift_back(extended.end_date, notice) >= business_date);
            assert_eq!(
                extension_end(end, term, extended.terms_added),
                extended.end_date
            );
            if extended.terms_added > 0 {
                let before = extension_end(end, term, extended.terms_added - 1);
                assert!(shift_back(before, notice) < business_date);
            }
            let expected = terms
                .dates_as_of(business_date)
                .map(|dates| dates.cancellation_date);
            if business_date <= extended.end_date {
                assert_eq!(
                    expected,
                    Some(extended.end_date),
                    "end {end}, notice {notice}, term {term}, as of {business_date}"
                );
            }
        }
    }

    #[test]
    fn dates_as_of_matches_the_definition_day_by_day() {
        let windows = [
            CancellationWindow::EndOfTerm,
            CancellationWindow::EndOfMonth,
            CancellationWindow::EndOfQuarter,
            CancellationWindow::EndOfYear,
        ];
        let mut rng = Lcg(3);
        for _ in 0..1_500 {
            let start = rng.date(2000, 30);
            let window = windows[rng.below(4) as usize];
            let end_date = match (window, rng.below(3)) {
                (CancellationWindow::EndOfTerm, _) | (_, 0 | 1) => {
                    Some(start + chrono::Duration::days(rng.below(1_500) as i64))
                }
                _ => None,
            };
            let terms = CancellationTerms {
                start_date: start,
                end_date,
                minimum_term_end: (rng.below(3) == 0)
                    .then(|| start + chrono::Duration::days(rng.below(900) as i64)),
                notice_period: rng.period(14),
                window,
                extension_term: (rng.below(2) == 0).then(|| rng.period(14)),
            };
            let today = start + chrono::Duration::days(rng.below(2_500) as i64 - 200);
            let horizon = today + chrono::Duration::days(365 * 40);
            assert_eq!(
                terms.dates_as_of(today),
                dates_by_definition(&terms, today, horizon),
                "{terms:?} as of {today}"
            );
            let probe = today + chrono::Duration::days(rng.below(800) as i64);
            assert_eq!(
                terms.is_possible_end_date(probe),
                is_possible_by_definition(&terms, probe),
                "{terms:?} at {probe}"
            );
        }
    }
}
