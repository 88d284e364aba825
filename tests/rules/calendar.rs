//! The worked examples of docs/rules.md sections 2 (periods) and 4 (cancellation date and
//! deadline), one named test each, plus the rules around them: period parsing, auto-extension
//! catch-up, billing periods from the anchor, proration.

use contractd::calendar::{
    billing_period, extend_term, extension_end, prorate, shift, shift_back, shift_times,
    CancellationDates, CancellationTerms, CancellationWindow, Period, PeriodError, PeriodUnit,
};

use crate::support::date;

fn p(text: &str) -> Period {
    text.parse().unwrap()
}

// ---------------------------------------------------------------------------------------------
// docs/rules.md section 2, periods: the shift table (a "−" row is `shift_back(date, period)`).
// ---------------------------------------------------------------------------------------------

#[test]
fn shift_2025_12_31_minus_1m_is_2025_11_30() {
    assert_eq!(shift_back(date("2025-12-31"), p("1M")), date("2025-11-30"));
}

#[test]
fn shift_2025_12_31_minus_3m_is_2025_09_30() {
    assert_eq!(shift_back(date("2025-12-31"), p("3M")), date("2025-09-30"));
}

#[test]
fn shift_2025_06_30_minus_3m_is_2025_03_31() {
    // The month-end rule: clamping alone would give 2025-03-30.
    assert_eq!(shift_back(date("2025-06-30"), p("3M")), date("2025-03-31"));
}

#[test]
fn shift_2025_04_30_minus_1m_is_2025_03_31() {
    assert_eq!(shift_back(date("2025-04-30"), p("1M")), date("2025-03-31"));
}

#[test]
fn shift_2025_04_29_minus_1m_is_2025_03_29() {
    assert_eq!(shift_back(date("2025-04-29"), p("1M")), date("2025-03-29"));
}

#[test]
fn shift_2024_03_31_minus_1m_is_2024_02_29() {
    assert_eq!(shift_back(date("2024-03-31"), p("1M")), date("2024-02-29"));
}

#[test]
fn shift_2024_01_31_plus_1m_is_2024_02_29() {
    assert_eq!(shift(date("2024-01-31"), p("1M")), date("2024-02-29"));
}

#[test]
fn shift_2024_01_30_plus_1m_is_2024_02_29() {
    assert_eq!(shift(date("2024-01-30"), p("1M")), date("2024-02-29"));
}

#[test]
fn shift_2024_02_29_plus_1m_is_2024_03_31() {
    assert_eq!(shift(date("2024-02-29"), p("1M")), date("2024-03-31"));
}

#[test]
fn shift_2024_02_29_plus_1y_is_2025_02_28() {
    assert_eq!(shift(date("2024-02-29"), p("1Y")), date("2025-02-28"));
}

#[test]
fn shift_2027_02_28_plus_12m_is_2028_02_29() {
    assert_eq!(shift(date("2027-02-28"), p("12M")), date("2028-02-29"));
}

#[test]
fn shift_2025_01_15_plus_1q_is_2025_04_15() {
    assert_eq!(shift(date("2025-01-15"), p("1Q")), date("2025-04-15"));
}

#[test]
fn shift_2025_11_22_plus_2w_is_2025_12_06() {
    assert_eq!(shift(date("2025-11-22"), p("2W")), date("2025-12-06"));
}

#[test]
fn shift_table_rows_agree_with_shift_times() {
    // The same rows through shift_times with ±1, so neither entry point can drift.
    let rows = [
        ("2025-12-31", "1M", -1, "2025-11-30"),
        ("2025-12-31", "3M", -1, "2025-09-30"),
        ("2025-06-30", "3M", -1, "2025-03-31"),
        ("2025-04-30", "1M", -1, "2025-03-31"),
        ("2025-04-29", "1M", -1, "2025-03-29"),
        ("2024-03-31", "1M", -1, "2024-02-29"),
        ("2024-01-31", "1M", 1, "2024-02-29"),
        ("2024-01-30", "1M", 1, "2024-02-29"),
        ("2024-02-29", "1M", 1, "2024-03-31"),
        ("2024-02-29", "1Y", 1, "2025-02-28"),
        ("2027-02-28", "12M", 1, "2028-02-29"),
        ("2025-01-15", "1Q", 1, "2025-04-15"),
        ("2025-11-22", "2W", 1, "2025-12-06"),
    ];
    for (start, period, times, expected) in rows {
        assert_eq!(
            shift_times(date(start), p(period), times),
            date(expected),
            "{start} {times} × {period}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// docs/rules.md section 4, cancellation date and deadline: the examples with notice 1M.
// ---------------------------------------------------------------------------------------------

fn open_ended(window: CancellationWindow) -> CancellationTerms {
    CancellationTerms {
        start_date: date("2024-01-01"),
        end_date: None,
        minimum_term_end: None,
        notice_period: p("1M"),
        window,
        extension_term: None,
    }
}

fn dates(cancellation_date: &str, latest_cancellation_date: &str) -> Option<CancellationDates> {
    Some(CancellationDates {
        cancellation_date: date(cancellation_date),
        latest_cancellation_date: date(latest_cancellation_date),
    })
}

#[test]
fn end_of_year_notice_1m_as_of_2025_11_22_is_c_2025_12_31_l_2025_11_30() {
    let terms = open_ended(CancellationWindow::EndOfYear);
    assert_eq!(
        terms.dates_as_of(date("2025-11-22")),
        dates("2025-12-31", "2025-11-30")
    );
}

#[test]
fn end_of_year_notice_1m_as_of_2025_12_01_is_c_2026_12_31_l_2026_11_30() {
    let terms = open_ended(CancellationWindow::EndOfYear);
    assert_eq!(
        terms.dates_as_of(date("2025-12-01")),
        dates("2026-12-31", "2026-11-30")
    );
}

#[test]
fn end_of_month_notice_1m_as_of_2025_11_22_is_c_2025_12_31_l_2025_11_30() {
    let terms = open_ended(CancellationWindow::EndOfMonth);
    assert_eq!(
        terms.dates_as_of(date("2025-11-22")),
        dates("2025-12-31", "2025-11-30")
    );
}

#[test]
fn end_of_month_deadline_for_2025_11_30_was_2025_10_31() {
    // "30 Nov is the deadline for 31 Dec; for 30 Nov it was 31 Oct."
    let terms = open_ended(CancellationWindow::EndOfMonth);
    assert!(terms.is_possible_end_date(date("2025-11-30")));
    assert_eq!(shift_back(date("2025-11-30"), p("1M")), date("2025-10-31"));
    assert_eq!(
        terms.dates_as_of(date("2025-10-31")),
        dates("2025-11-30", "2025-10-31")
    );
}

#[test]
fn end_of_year_on_the_deadline_itself_is_still_in_time() {
    let terms = open_ended(CancellationWindow::EndOfYear);
    assert_eq!(
        terms.dates_as_of(date("2025-11-30")),
        dates("2025-12-31", "2025-11-30")
    );
}

#[test]
fn fixed_term_without_extension_has_no_dates_after_its_last_deadline() {
    let terms = CancellationTerms {
        end_date: Some(date("2025-12-31")),
        ..open_ended(CancellationWindow::EndOfYear)
    };
    assert_eq!(
        terms.dates_as_of(date("2025-11-30")),
        dates("2025-12-31", "2025-11-30")
    );
    assert_eq!(terms.dates_as_of(date("2025-12-01")), None);
}

// ---------------------------------------------------------------------------------------------
// Period parsing.
// ---------------------------------------------------------------------------------------------

#[test]
fn period_parses_every_unit_in_both_cases_over_0_to_999() {
    let units = [
        ("D", PeriodUnit::Day),
        ("W", PeriodUnit::Week),
        ("M", PeriodUnit::Month),
        ("Q", PeriodUnit::Quarter),
        ("Y", PeriodUnit::Year),
    ];
    for (letter, unit) in units {
        for count in 0..=999_u16 {
            for text in [
                format!("{count}{letter}"),
                format!("{count}{}", letter.to_lowercase()),
            ] {
                let period = Period::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
                assert_eq!(period.count(), count, "{text}");
                assert_eq!(period.unit(), unit, "{text}");
                assert_eq!(period.to_string(), format!("{count}{letter}"));
                assert_eq!(period.is_none(), count == 0);
                assert_eq!(text.parse::<Period>(), Ok(period));
            }
        }
    }
}

#[test]
fn period_zero_days_means_none() {
    assert_eq!(p("0D"), Period::NONE);
    assert!(Period::NONE.is_none());
}

#[test]
fn period_rejects_malformed_text_with_typed_errors() {
    let cases = [
        ("", PeriodError::Empty),
        ("1", PeriodError::Malformed("1".into())),
        ("M", PeriodError::Malformed("M".into())),
        ("1000D", PeriodError::CountOutOfRange("1000D".into())),
        ("-1M", PeriodError::Malformed("-1M".into())),
        ("1.5M", PeriodError::Malformed("1.5M".into())),
        ("1X", PeriodError::UnknownUnit("1X".into())),
        (" 1 M", PeriodError::Malformed(" 1 M".into())),
        ("1MM", PeriodError::Malformed("1MM".into())),
        (" 1M", PeriodError::Malformed(" 1M".into())),
        ("1M ", PeriodError::Malformed("1M ".into())),
        ("+1M", PeriodError::Malformed("+1M".into())),
        ("1 M", PeriodError::Malformed("1 M".into())),
        ("12345Y", PeriodError::CountOutOfRange("12345Y".into())),
    ];
    for (text, expected) in cases {
        assert_eq!(Period::parse(text), Err(expected.clone()), "{text:?}");
        assert_eq!(text.parse::<Period>(), Err(expected), "{text:?}");
    }
}

#[test]
fn period_errors_name_the_text() {
    let message = Period::parse("1X").unwrap_err().to_string();
    assert!(message.contains("'1X'"), "{message}");
    let message = Period::parse("1000D").unwrap_err().to_string();
    assert!(message.contains("999"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// Auto-extension (docs/rules.md section 5, the daily jobs).
// ---------------------------------------------------------------------------------------------

#[test]
fn extension_is_due_the_day_after_the_deadline() {
    let on_deadline = extend_term(date("2025-12-31"), p("1M"), p("1Y"), date("2025-11-30"));
    assert_eq!(on_deadline.end_date, date("2025-12-31"));
    assert_eq!(on_deadline.terms_added, 0);
    let after = extend_term(date("2025-12-31"), p("1M"), p("1Y"), date("2025-12-01"));
    assert_eq!(after.end_date, date("2026-12-31"));
    assert_eq!(after.terms_added, 1);
}

#[test]
fn extension_catches_up_several_missed_terms_in_one_call() {
    // The sweeps of three years were missed: 2025, 2026 and 2027 deadlines all passed.
    let extended = extend_term(date("2025-12-31"), p("1M"), p("1Y"), date("2028-01-10"));
    assert_eq!(extended.end_date, date("2028-12-31"));
    assert_eq!(extended.terms_added, 3);
}

#[test]
fn extension_catch_up_equals_daily_sweeps_across_month_ends() {
    // 2025-01-30 monthly, notice 0D: daily sweeps give 28 Feb, then (month-end rule) 31 Mar,
    // 30 Apr, 31 May; one sweep after four months of downtime must give the same.
    let mut daily = date("2025-01-30");
    for day in date("2025-01-31")
        .iter_days()
        .take_while(|&day| day <= date("2025-05-20"))
    {
        daily = extend_term(daily, Period::NONE, p("1M"), day).end_date;
    }
    let once = extend_term(
        date("2025-01-30"),
        Period::NONE,
        p("1M"),
        date("2025-05-20"),
    );
    assert_eq!(daily, date("2025-05-31"));
    assert_eq!(once.end_date, daily);
    assert_eq!(once.terms_added, 4);
    assert_eq!(extension_end(date("2025-01-30"), p("1M"), 4), daily);
}

#[test]
fn extension_with_notice_longer_than_the_term_adds_terms_until_the_deadline_is_ahead() {
    // Notice 3M, term 1M: on 2025-01-05 the end must lie beyond 2025-04-05.
    let extended = extend_term(date("2024-12-31"), p("3M"), p("1M"), date("2025-01-05"));
    assert_eq!(extended.end_date, date("2025-04-30"));
    assert_eq!(extended.terms_added, 4);
    assert!(shift_back(extended.end_date, p("3M")) >= date("2025-01-05"));
}

#[test]
fn extension_by_a_zero_term_never_extends() {
    let extended = extend_term(date("2025-12-31"), p("1M"), p("0M"), date("2027-01-01"));
    assert_eq!(extended.end_date, date("2025-12-31"));
    assert_eq!(extended.terms_added, 0);
}

#[test]
fn extended_end_dates_are_possible_end_dates_of_the_auto_extending_contract() {
    let terms = CancellationTerms {
        start_date: date("2025-01-01"),
        end_date: Some(date("2025-12-31")),
        minimum_term_end: None,
        notice_period: p("1M"),
        window: CancellationWindow::EndOfTerm,
        extension_term: Some(p("1Y")),
    };
    assert!(terms.is_possible_end_date(date("2026-12-31")));
    assert!(terms.is_possible_end_date(date("2030-12-31")));
    assert!(!terms.is_possible_end_date(date("2026-06-30")));
    assert_eq!(
        terms.dates_as_of(date("2027-12-01")),
        dates("2028-12-31", "2028-11-30")
    );
}

// ---------------------------------------------------------------------------------------------
// Billing periods from the anchor (docs/rules.md section 2, periods).
// ---------------------------------------------------------------------------------------------

#[test]
fn billing_monthly_from_31_jan_2024_follows_the_month_ends() {
    let month = p("1M");
    let expected = [
        ("2024-01-31", "2024-02-28"),
        ("2024-02-29", "2024-03-30"),
        ("2024-03-31", "2024-04-29"),
        ("2024-04-30", "2024-05-30"),
        ("2024-05-31", "2024-06-29"),
    ];
    for (k, (start, end)) in expected.into_iter().enumerate() {
        let period = billing_period(date("2024-01-31"), month, k as i64);
        assert_eq!(
            (period.start, period.end),
            (date(start), date(end)),
            "period {k}"
        );
    }
}

#[test]
fn billing_monthly_from_31_jan_2025_first_period_ends_27_feb() {
    // In a common year the second period starts on 28 Feb (the month end), so the first one
    // ends the day before.
    let first = billing_period(date("2025-01-31"), p("1M"), 0);
    assert_eq!(
        (first.start, first.end),
        (date("2025-01-31"), date("2025-02-27"))
    );
    let second = billing_period(date("2025-01-31"), p("1M"), 1);
    assert_eq!(
        (second.start, second.end),
        (date("2025-02-28"), date("2025-03-30"))
    );
}

#[test]
fn billing_monthly_from_30_jan_does_not_drift() {
    // Step by step, 30 Jan → 29 Feb → 31 Mar would drift; from the anchor it is 30 Mar.
    let third = billing_period(date("2024-01-30"), p("1M"), 2);
    assert_eq!(third.start, date("2024-03-30"));
    let later = billing_period(date("2024-01-30"), p("1M"), 13);
    assert_eq!(later.start, date("2025-02-28"));
    assert_eq!(
        billing_period(date("2024-01-30"), p("1M"), 14).start,
        date("2025-03-30")
    );
}

#[test]
fn billing_period_k_starts_at_shift_times_of_the_anchor() {
    for (anchor, period) in [
        ("2024-01-31", "1M"),
        ("2024-01-30", "1M"),
        ("2024-02-29", "1Y"),
        ("2023-08-31", "1Q"),
        ("2025-03-17", "2W"),
        ("2025-03-17", "10D"),
    ] {
        for k in 0..120 {
            let billed = billing_period(date(anchor), p(period), k);
            let next = billing_period(date(anchor), p(period), k + 1);
            assert_eq!(billed.start, shift_times(date(anchor), p(period), k));
            assert_eq!(billed.end.succ_opt().unwrap(), next.start);
            assert_eq!(billed.days(), (next.start - billed.start).num_days());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Proration (docs/rules.md, billing effects): round half away from zero on minor units.
// ---------------------------------------------------------------------------------------------

#[test]
fn prorate_rounds_half_away_from_zero() {
    assert_eq!(prorate(1_000, 1, 8), 125);
    assert_eq!(prorate(1, 1, 2), 1);
    assert_eq!(prorate(3, 1, 2), 2);
    assert_eq!(prorate(5, 1, 2), 3);
    assert_eq!(prorate(1, 1, 3), 0);
    assert_eq!(prorate(10_000, 14, 31), 4_516);
    assert_eq!(prorate(10_000, 15, 31), 4_839);
}

#[test]
fn prorate_negative_amounts_mirror_positive_ones() {
    assert_eq!(prorate(-1, 1, 2), -1);
    assert_eq!(prorate(-3, 1, 2), -2);
    assert_eq!(prorate(-5, 1, 2), -3);
    assert_eq!(prorate(-1, 1, 3), 0);
    assert_eq!(prorate(-10_000, 14, 31), -4_516);
    for amount in -200..=200 {
        for used in 0..=31 {
            assert_eq!(prorate(-amount, used, 31), -prorate(amount, used, 31));
        }
    }
}

#[test]
fn prorate_full_and_empty_periods() {
    assert_eq!(prorate(12_345, 31, 31), 12_345);
    assert_eq!(prorate(12_345, 0, 31), 0);
    assert_eq!(prorate(12_345, 3, 0), 12_345);
}

#[test]
fn prorate_i64_extremes_do_not_overflow() {
    assert_eq!(prorate(i64::MAX, 1, 1), i64::MAX);
    assert_eq!(prorate(i64::MIN, 1, 1), i64::MIN);
    assert_eq!(prorate(i64::MAX, 30, 31), 8_925_843_906_633_654_007);
    assert_eq!(prorate(i64::MIN, 30, 31), -8_925_843_906_633_654_008);
    assert_eq!(prorate(i64::MAX, i64::MAX - 1, i64::MAX), i64::MAX - 1);
    assert_eq!(prorate(i64::MIN, i64::MAX, i64::MAX), i64::MIN);
    assert_eq!(prorate(i64::MAX, 1, i64::MAX), 1);
}

#[test]
fn prorate_kept_plus_credited_is_the_original() {
    for amount in [0, 1, 99, 10_000, 123_456_789, i64::MAX, -7, i64::MIN] {
        for (used, days) in [(0, 31), (14, 31), (31, 31), (1, 2), (59, 366)] {
            let kept = prorate(amount, used, days);
            let credited = amount - kept;
            assert_eq!(kept + credited, amount);
            assert!(kept.unsigned_abs() <= amount.unsigned_abs());
        }
    }
}
