//! Billing periods from a line's anchor and proration of a shortened period.

use chrono::NaiveDate;

use super::{previous_day, shift_times, Period};

/// One billing period of a contract line: `start..=end`, both inclusive.
///
/// ```
/// use chrono::NaiveDate;
/// use contractd::calendar::{billing_period, BillingPeriod};
/// let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
/// let first = billing_period(d("2025-01-15"), "1M".parse().unwrap(), 0);
/// assert_eq!(first, BillingPeriod { start: d("2025-01-15"), end: d("2025-02-14") });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BillingPeriod {
    /// First day billed by this period.
    pub start: NaiveDate,
    /// Last day billed by this period (inclusive).
    pub end: NaiveDate,
}

impl BillingPeriod {
    /// Number of days in the period, both ends included.
    ///
    /// ```
    /// use chrono::NaiveDate;
    /// use contractd::calendar::BillingPeriod;
    /// let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
    /// let february = BillingPeriod { start: d("2024-02-01"), end: d("2024-02-29") };
    /// assert_eq!(february.days(), 29);
    /// ```
    pub fn days(&self) -> i64 {
        (self.end - self.start).num_days() + 1
    }
}

/// Billing period number `index` (0-based) of a line anchored at `anchor`: it starts at
/// `shift(anchor, index × period)` and ends the day before period `index + 1` starts.
/// Computed from the anchor, never step by step, so month ends do not drift.
///
/// ```
/// use chrono::NaiveDate;
/// use contractd::calendar::billing_period;
/// let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
/// let third = billing_period(d("2024-01-31"), "1M".parse().unwrap(), 2);
/// assert_eq!((third.start, third.end), (d("2024-03-31"), d("2024-04-29")));
/// ```
pub fn billing_period(anchor: NaiveDate, period: Period, index: i64) -> BillingPeriod {
    let start = shift_times(anchor, period, index);
    let next_start = shift_times(anchor, period, index.saturating_add(1));
    BillingPeriod {
        start,
        end: previous_day(next_start).max(start),
    }
}

/// `amount × used_days / period_days`, rounded half away from zero, on integer minor units.
/// Computed in i128 so no product overflows; no floating point anywhere.
/// A non-positive `period_days` yields the full amount.
///
/// ```
/// use contractd::calendar::prorate;
/// assert_eq!(prorate(10_000, 14, 31), 4_516); // 4516.129…
/// assert_eq!(prorate(3, 1, 2), 2);            // 1.5 rounds away from zero
/// assert_eq!(prorate(-3, 1, 2), -2);
/// ```
pub fn prorate(amount_minor: i64, used_days: i64, period_days: i64) -> i64 {
    if period_days <= 0 {
        return amount_minor;
    }
    let numerator = i128::from(amount_minor) * i128::from(used_days);
    let denominator = i128::from(period_days);
    let quotient = numerator / denominator;
    let remainder = numerator % denominator;
    let rounded = if 2 * remainder.abs() >= denominator {
        quotient + numerator.signum()
    } else {
        quotient
    };
    i64::try_from(rounded).unwrap_or(if rounded > 0 { i64::MAX } else { i64::MIN })
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

    #[test]
    fn monthly_from_the_31st_follows_month_ends_without_drift() {
        let month = p("1M");
        let expected = [
            ("2024-01-31", "2024-02-28"),
            ("2024-02-29", "2024-03-30"),
            ("2024-03-31", "2024-04-29"),
            ("2024-04-30", "2024-05-30"),
        ];
        for (index, (start, end)) in expected.into_iter().enumerate() {
            let period = billing_period(d("2024-01-31"), month, index as i64);
            assert_eq!((period.start, period.end), (d(start), d(end)), "{index}");
        }
    }

    #[test]
    fn periods_tile_the_calendar() {
        for (anchor, period) in [
            ("2024-01-30", "1M"),
            ("2024-01-31", "1M"),
            ("2023-11-30", "1Q"),
            ("2024-02-29", "1Y"),
            ("2025-03-03", "2W"),
        ] {
            let mut previous = billing_period(d(anchor), p(period), 0);
            assert_eq!(previous.start, d(anchor));
            for index in 1..60 {
                let current = billing_period(d(anchor), p(period), index);
                assert_eq!(current.start, previous.end.succ_opt().unwrap());
                assert_eq!(current.start, shift_times(d(anchor), p(period), index));
                assert!(current.days() >= 1);
                previous = current;
            }
        }
    }

    #[test]
    fn days_counts_both_ends() {
        let period = BillingPeriod {
            start: d("2024-02-01"),
            end: d("2024-02-29"),
        };
        assert_eq!(period.days(), 29);
    }

    #[test]
    fn prorate_rounds_half_away_from_zero() {
        assert_eq!(prorate(5, 1, 2), 3);
        assert_eq!(prorate(-5, 1, 2), -3);
        assert_eq!(prorate(1, 1, 3), 0);
        assert_eq!(prorate(2, 1, 3), 1);
        assert_eq!(prorate(-2, 1, 3), -1);
        assert_eq!(prorate(10_000, 31, 31), 10_000);
        assert_eq!(prorate(10_000, 0, 31), 0);
        assert_eq!(prorate(10_000, 5, 0), 10_000);
        assert_eq!(prorate(10_000, 5, -3), 10_000);
    }

    #[test]
    fn prorate_extremes_do_not_overflow() {
        assert_eq!(prorate(i64::MAX, i64::MAX, i64::MAX), i64::MAX);
        assert_eq!(prorate(i64::MIN, i64::MAX, i64::MAX), i64::MIN);
        assert_eq!(prorate(i64::MAX, 1, 2), i64::MAX / 2 + 1);
        assert_eq!(prorate(i64::MIN, 1, 2), i64::MIN / 2);
        assert_eq!(prorate(i64::MAX, 2, 1), i64::MAX);
        assert_eq!(prorate(i64::MIN, 2, 1), i64::MIN);
    }
}
