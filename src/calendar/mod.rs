//! The contract calendar: periods, date shifting, cancellation dates and deadlines, billing
//! periods and proration.
//!
//! **Architecture invariant:** everything in this module is a pure function of its arguments.
//! No I/O, no clock, no time zone lookup: a business date is always passed in.

mod cancellation;
mod money;
mod period;

pub use cancellation::{
    extend_term, extension_end, CancellationDates, CancellationTerms, CancellationWindow,
    ExtendedTerm, UnknownWindow,
};
pub use money::{billing_period, prorate, BillingPeriod};
pub use period::{shift, shift_back, shift_times, Period, PeriodError, PeriodUnit};

use chrono::{Datelike, NaiveDate};

/// The last day of the month that `date` falls in.
///
/// ```
/// use chrono::NaiveDate;
/// use contractd::calendar::last_day_of_month;
/// let d = NaiveDate::from_ymd_opt(2024, 2, 10).unwrap();
/// assert_eq!(last_day_of_month(d), NaiveDate::from_ymd_opt(2024, 2, 29).unwrap());
/// ```
pub fn last_day_of_month(date: NaiveDate) -> NaiveDate {
    let days = days_in_month(date.year(), date.month());
    date.with_day(days).unwrap_or(date)
}

/// Number of days of `month` (1..=12) in `year`, leap years included.
///
/// ```
/// use contractd::calendar::days_in_month;
/// assert_eq!(days_in_month(2024, 2), 29);
/// assert_eq!(days_in_month(2100, 2), 28);
/// assert_eq!(days_in_month(2025, 4), 30);
/// ```
pub fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ => {
            if NaiveDate::from_ymd_opt(year, 2, 29).is_some() {
                29
            } else {
                28
            }
        }
    }
}

/// The day after `date` (saturating at the largest representable date).
///
/// ```
/// use chrono::NaiveDate;
/// use contractd::calendar::next_day;
/// let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
/// assert_eq!(next_day(d("2024-02-28")), d("2024-02-29"));
/// assert_eq!(next_day(NaiveDate::MAX), NaiveDate::MAX);
/// ```
pub fn next_day(date: NaiveDate) -> NaiveDate {
    date.succ_opt().unwrap_or(date)
}

/// The day before `date` (saturating at the smallest representable date).
///
/// ```
/// use chrono::NaiveDate;
/// use contractd::calendar::previous_day;
/// let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
/// assert_eq!(previous_day(d("2025-03-01")), d("2025-02-28"));
/// assert_eq!(previous_day(NaiveDate::MIN), NaiveDate::MIN);
/// ```
pub fn previous_day(date: NaiveDate) -> NaiveDate {
    date.pred_opt().unwrap_or(date)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn days_in_month_agrees_with_chrono() {
        for year in [1900, 2000, 2023, 2024, 2100] {
            for month in 1..=12 {
                let first = NaiveDate::from_ymd_opt(year, month, 1).unwrap();
                let next = first.checked_add_months(chrono::Months::new(1)).unwrap();
                assert_eq!(
                    i64::from(days_in_month(year, month)),
                    (next - first).num_days(),
                    "{year}-{month}"
                );
                assert_eq!(last_day_of_month(first).day(), days_in_month(year, month));
            }
        }
    }

    #[test]
    fn next_and_previous_day_saturate() {
        assert_eq!(next_day(d("2024-02-28")), d("2024-02-29"));
        assert_eq!(previous_day(d("2024-03-01")), d("2024-02-29"));
        assert_eq!(next_day(NaiveDate::MAX), NaiveDate::MAX);
        assert_eq!(previous_day(NaiveDate::MIN), NaiveDate::MIN);
    }
}
