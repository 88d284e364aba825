//! Properties of the contract calendar over random dates (1990–2100), periods (every unit,
//! counts mostly 0..=36, some up to 999), windows, minimum terms, end dates and extension terms.

use chrono::{Datelike, Duration, NaiveDate};
use contractd::calendar::{
    billing_period, extend_term, extension_end, last_day_of_month, prorate, shift, shift_back,
    shift_times, CancellationTerms, CancellationWindow, Period, PeriodUnit,
};
use proptest::prelude::*;

use crate::support::date;

const FIRST_DAY: &str = "1990-01-01";
const LAST_DAY: &str = "2100-12-31";

/// Any date 1990–2100, with month ends and the days just before them (the month-end rule's
/// territory) much more likely than chance would make them.
fn any_date() -> impl Strategy<Value = NaiveDate> {
    let span = (date(LAST_DAY) - date(FIRST_DAY)).num_days();
    (0..=span, 0..8_u32).prop_map(|(offset, bias)| {
        let date = date(FIRST_DAY) + Duration::days(offset);
        match bias {
            0 | 1 => last_day_of_month(date),
            2 => last_day_of_month(date) - Duration::days(1),
            3 => last_day_of_month(date) - Duration::days(2),
            _ => date,
        }
    })
}

fn unit() -> impl Strategy<Value = PeriodUnit> {
    prop_oneof![
        Just(PeriodUnit::Day),
        Just(PeriodUnit::Week),
        Just(PeriodUnit::Month),
        Just(PeriodUnit::Quarter),
        Just(PeriodUnit::Year),
    ]
}

/// Counts 0..=36 mostly, up to 999 sometimes.
fn period() -> impl Strategy<Value = Period> {
    let count = prop_oneof![9 => 0..=36_u16, 1 => 0..=999_u16];
    (count, unit()).prop_map(|(count, unit)| Period::new(count, unit).unwrap())
}

fn window() -> impl Strategy<Value = CancellationWindow> {
    prop_oneof![
        Just(CancellationWindow::EndOfTerm),
        Just(CancellationWindow::EndOfMonth),
        Just(CancellationWindow::EndOfQuarter),
        Just(CancellationWindow::EndOfYear),
    ]
}

/// Valid cancellation terms: `end_of_term` always has an end date; the end date and the
/// minimum term end lie on or after the start.
fn terms() -> impl Strategy<Value = CancellationTerms> {
    (
        any_date(),
        window(),
        proptest::option::of(0..4_000_i64),
        proptest::option::of(0..3_000_i64),
        period(),
        proptest::option::of(period()),
    )
        .prop_map(
            |(start_date, window, end_days, minimum_days, notice_period, extension_term)| {
                let end_days = match window {
                    CancellationWindow::EndOfTerm => Some(end_days.unwrap_or(365)),
                    _ => end_days,
                };
                CancellationTerms {
                    start_date,
                    end_date: end_days.map(|days| start_date + Duration::days(days)),
                    minimum_term_end: minimum_days.map(|days| start_date + Duration::days(days)),
                    notice_period,
                    window,
                    extension_term,
                }
            },
        )
}

/// An "as of" day around the contract's life: a little before its start to years after.
fn as_of(terms: &CancellationTerms, offset: i64) -> NaiveDate {
    terms.start_date + Duration::days(offset)
}

/// Every possible end date in `[from, until)`, in order, found with `next_possible_end_date`.
fn possible_end_dates(
    terms: &CancellationTerms,
    from: NaiveDate,
    until: NaiveDate,
) -> Vec<NaiveDate> {
    let mut found = Vec::new();
    let mut cursor = from;
    while let Some(date) = terms.next_possible_end_date(cursor) {
        if date >= until {
            break;
        }
        found.push(date);
        cursor = date.succ_opt().unwrap();
    }
    found
}

fn is_month_end(date: NaiveDate) -> bool {
    last_day_of_month(date) == date
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4_000, ..ProptestConfig::default() })]

    /// C(T) >= T, L(T) >= T, L = shift_back(C, notice), and C is a possible end date.
    #[test]
    fn cancellation_date_is_a_possible_end_date_in_time(
        terms in terms(),
        offset in -400..8_000_i64,
    ) {
        let today = as_of(&terms, offset);
        if let Some(dates) = terms.dates_as_of(today) {
            prop_assert!(dates.cancellation_date >= today);
            prop_assert!(dates.latest_cancellation_date >= today);
            prop_assert_eq!(
                dates.latest_cancellation_date,
                shift_back(dates.cancellation_date, terms.notice_period)
            );
            prop_assert!(terms.is_possible_end_date(dates.cancellation_date));
        }
    }

    /// C(T) is the earliest: no possible end date E' in [T, C(T)) has its deadline >= T; and
    /// when there is no C(T), no possible end date from T on has one.
    #[test]
    fn no_earlier_possible_end_date_is_still_in_time(
        terms in terms(),
        offset in -400..8_000_i64,
    ) {
        let today = as_of(&terms, offset);
        let until = match terms.dates_as_of(today) {
            Some(dates) => dates.cancellation_date,
            None => {
                // Only a contract with a last possible end date can run out of them.
                let end = terms.end_date;
                prop_assert!(end.is_some());
                prop_assert!(terms.extension_term.is_none_or(|term| term.is_none()));
                end.unwrap().succ_opt().unwrap()
            }
        };
        for earlier in possible_end_dates(&terms, today, until) {
            prop_assert!(
                shift_back(earlier, terms.notice_period) < today,
                "{} was possible with deadline {}", earlier, shift_back(earlier, terms.notice_period)
            );
        }
    }

    /// C and L never move backwards as T grows, and once there is none there stays none.
    #[test]
    fn cancellation_dates_never_move_backwards(
        terms in terms(),
        first in -400..8_000_i64,
        gap in prop_oneof![0..40_i64, 0..4_000_i64],
    ) {
        let earlier = terms.dates_as_of(as_of(&terms, first));
        let later = terms.dates_as_of(as_of(&terms, first + gap));
        match (earlier, later) {
            (Some(earlier), Some(later)) => {
                prop_assert!(earlier.cancellation_date <= later.cancellation_date);
                prop_assert!(earlier.latest_cancellation_date <= later.latest_cancellation_date);
            }
            (None, later) => prop_assert!(later.is_none()),
            (Some(_), None) => {}
        }
    }

    /// `is_possible_end_date` and `next_possible_end_date` agree, and the latter never goes
    /// back in time nor before the start or the minimum term.
    #[test]
    fn next_possible_end_date_is_the_next_possible_end_date(
        terms in terms(),
        offset in -400..8_000_i64,
    ) {
        let from = as_of(&terms, offset);
        if let Some(next) = terms.next_possible_end_date(from) {
            prop_assert!(next >= from);
            prop_assert!(next >= terms.start_date);
            prop_assert!(terms.minimum_term_end.is_none_or(|minimum| next >= minimum));
            prop_assert!(terms.is_possible_end_date(next));
            let span = (next - from).num_days().min(400);
            for skipped in from.iter_days().take(span as usize) {
                prop_assert!(!terms.is_possible_end_date(skipped), "{} skipped", skipped);
            }
        }
    }

    /// extend_term terminates, only moves forward, leaves the deadline on or after D for a
    /// non-zero term, adds no term too many, and lands where the daily job's steps land.
    #[test]
    fn extend_term_catches_up_exactly(
        end in any_date(),
        notice in period(),
        term in period(),
        offset in prop_oneof![-400..400_i64, -400..20_000_i64],
    ) {
        let business_date = end + Duration::days(offset);
        let extended = extend_term(end, notice, term, business_date);
        prop_assert!(extended.end_date >= end);
        if term.is_none() {
            prop_assert_eq!(extended.end_date, end);
            prop_assert_eq!(extended.terms_added, 0);
        } else {
            prop_assert!(shift_back(extended.end_date, notice) >= business_date);
            prop_assert_eq!(extension_end(end, term, extended.terms_added), extended.end_date);
            if extended.terms_added > 0 {
                let one_less = extension_end(end, term, extended.terms_added - 1);
                prop_assert!(shift_back(one_less, notice) < business_date);
            }
            // Running it again the same day changes nothing (the job is idempotent).
            let again = extend_term(extended.end_date, notice, term, business_date);
            prop_assert_eq!(again.end_date, extended.end_date);
            prop_assert_eq!(again.terms_added, 0);
        }
    }

    /// An auto-extending `end_of_term` contract is extended to exactly the cancellation date
    /// it showed as of that day.
    #[test]
    fn extension_lands_on_the_cancellation_date(
        end in any_date(),
        notice in period(),
        term in period(),
        offset in -400..8_000_i64,
    ) {
        prop_assume!(!term.is_none());
        let business_date = end + Duration::days(offset);
        let terms = CancellationTerms {
            start_date: end - Duration::days(365),
            end_date: Some(end),
            minimum_term_end: None,
            notice_period: notice,
            window: CancellationWindow::EndOfTerm,
            extension_term: Some(term),
        };
        let extended = extend_term(end, notice, term, business_date);
        prop_assume!(business_date <= extended.end_date);
        prop_assert_eq!(
            terms.dates_as_of(business_date).map(|dates| dates.cancellation_date),
            Some(extended.end_date)
        );
    }

    /// The shift: monotone, ±1 times is shift/shift_back, days are exact, and the month-end
    /// rule keeps month ends month ends.
    #[test]
    fn shift_rules(
        date in any_date(),
        other in any_date(),
        period in period(),
        times in -40..=40_i64,
    ) {
        let (low, high) = if date <= other { (date, other) } else { (other, date) };
        prop_assert!(shift(low, period) <= shift(high, period));
        prop_assert!(shift_back(low, period) <= shift_back(high, period));
        prop_assert_eq!(shift_times(date, period, 1), shift(date, period));
        prop_assert_eq!(shift_times(date, period, -1), shift_back(date, period));
        prop_assert_eq!(shift_times(date, period, 0), date);
        prop_assert!(shift(date, period) >= date);
        prop_assert!(shift_back(date, period) <= date);
        let moved = shift_times(date, period, times);
        let count = i64::from(period.count());
        match period.unit() {
            PeriodUnit::Day => prop_assert_eq!((moved - date).num_days(), count * times),
            PeriodUnit::Week => prop_assert_eq!((moved - date).num_days(), 7 * count * times),
            unit => {
                let months = count * times * match unit {
                    PeriodUnit::Month => 1,
                    PeriodUnit::Quarter => 3,
                    _ => 12,
                };
                let index = |d: NaiveDate| i64::from(d.year()) * 12 + i64::from(d.month0());
                prop_assert_eq!(index(moved) - index(date), months);
                if is_month_end(date) {
                    prop_assert!(is_month_end(moved));
                } else {
                    prop_assert_eq!(moved.day(), date.day().min(last_day_of_month(moved).day()));
                }
            }
        }
    }

    /// Billing periods tile the calendar from the anchor without drift.
    #[test]
    fn billing_periods_tile_from_the_anchor(
        anchor in any_date(),
        period in period(),
        index in 0..200_i64,
    ) {
        prop_assume!(!period.is_none());
        let billed = billing_period(anchor, period, index);
        let next = billing_period(anchor, period, index + 1);
        prop_assert_eq!(billed.start, shift_times(anchor, period, index));
        prop_assert_eq!(billed.end.succ_opt().unwrap(), next.start);
        prop_assert!(billed.days() >= 1);
    }

    /// Proration keeps kept + credited == original, never exceeds the amount, rounds to the
    /// nearest minor unit with ties away from zero, and mirrors negative amounts.
    #[test]
    fn prorate_rules(
        amount in prop_oneof![-1_000_000_i64..1_000_000, any::<i64>()],
        days in prop_oneof![1..=366_i64, 1..=i64::MAX],
        used_share in 0.0..=1.0_f64,
    ) {
        let used = (((days as f64) * used_share).floor() as i64).clamp(0, days);
        let kept = prorate(amount, used, days);
        let credited = amount.checked_sub(kept);
        prop_assert!(credited.is_some());
        prop_assert_eq!(kept + credited.unwrap(), amount);
        prop_assert!(kept.unsigned_abs() <= amount.unsigned_abs());
        // |kept − amount × used / days| <= 1/2, and exactly 1/2 only away from zero.
        let exact = i128::from(amount) * i128::from(used);
        let error = i128::from(kept) * i128::from(days) - exact;
        prop_assert!(2 * error.abs() <= i128::from(days));
        if 2 * error.abs() == i128::from(days) {
            prop_assert!(error.signum() == exact.signum());
        }
        if amount != i64::MIN {
            prop_assert_eq!(prorate(-amount, used, days), -kept);
        }
    }
}
