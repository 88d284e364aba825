//! Periods (`<n><unit>`) and the month-end-aware date shift of docs/rules.md §2.

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, Days, NaiveDate};

use super::days_in_month;

/// The unit of a [`Period`].
///
/// ```
/// use contractd::calendar::{Period, PeriodUnit};
/// assert_eq!(Period::parse("3q").unwrap().unit(), PeriodUnit::Quarter);
/// assert_eq!(Period::new(2, PeriodUnit::Week).unwrap().to_string(), "2W");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeriodUnit {
    /// `D`: one calendar day.
    Day,
    /// `W`: seven days.
    Week,
    /// `M`: one calendar month (month-end rule applies).
    Month,
    /// `Q`: three calendar months.
    Quarter,
    /// `Y`: twelve calendar months.
    Year,
}

impl PeriodUnit {
    fn letter(self) -> char {
        match self {
            PeriodUnit::Day => 'D',
            PeriodUnit::Week => 'W',
            PeriodUnit::Month => 'M',
            PeriodUnit::Quarter => 'Q',
            PeriodUnit::Year => 'Y',
        }
    }
}

/// A length of time such as a notice period, an extension term or a billing period.
///
/// Written `<n><unit>` with `n` in `0..=999` and unit `D`, `W`, `M`, `Q` or `Y`
/// (case-insensitive). `0D` (or any zero count) means "none".
///
/// ```
/// use contractd::calendar::Period;
/// let notice: Period = "1m".parse().unwrap();
/// assert_eq!(notice.to_string(), "1M");
/// assert!(Period::parse("13X").is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Period {
    /// How many units; 0..=999.
    count: u16,
    /// Which unit the count is of.
    unit: PeriodUnit,
}

/// Why a text is not a period.
///
/// ```
/// use contractd::calendar::{Period, PeriodError};
/// assert_eq!(Period::parse(""), Err(PeriodError::Empty));
/// assert_eq!(Period::parse("1.5M"), Err(PeriodError::Malformed("1.5M".into())));
/// assert_eq!(Period::parse("1000D"), Err(PeriodError::CountOutOfRange("1000D".into())));
/// assert_eq!(Period::parse("1X"), Err(PeriodError::UnknownUnit("1X".into())));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    /// Nothing was given.
    #[error("empty period (expected <n><unit> such as 1M, unit one of D W M Q Y)")]
    Empty,
    /// The text does not have the `<n><unit>` shape.
    #[error("'{0}' is not a period (expected <n><unit> such as 1M, unit one of D W M Q Y)")]
    Malformed(String),
    /// The count is larger than 999.
    #[error("'{0}': the count must be between 0 and 999")]
    CountOutOfRange(String),
    /// The unit letter is not one of D W M Q Y.
    #[error("'{0}': unknown unit (expected one of D W M Q Y)")]
    UnknownUnit(String),
}

impl Period {
    /// No time at all (`0D`).
    ///
    /// ```
    /// use contractd::calendar::Period;
    /// assert_eq!(Period::NONE, "0D".parse().unwrap());
    /// assert!(Period::NONE.is_none());
    /// ```
    pub const NONE: Period = Period {
        count: 0,
        unit: PeriodUnit::Day,
    };

    /// Build a period from a count and a unit; `None` when the count is above 999.
    ///
    /// ```
    /// use contractd::calendar::{Period, PeriodUnit};
    /// assert_eq!(Period::new(6, PeriodUnit::Month), Some("6M".parse().unwrap()));
    /// assert_eq!(Period::new(1000, PeriodUnit::Day), None);
    /// ```
    pub fn new(count: u16, unit: PeriodUnit) -> Option<Period> {
        (count <= 999).then_some(Period { count, unit })
    }

    /// Parse `<n><unit>`, e.g. `3M`, `14d`, `0D`: an ASCII count of value 0..=999 (leading
    /// zeros allowed) and a unit letter in either case, nothing else (no sign, no spaces).
    ///
    /// ```
    /// use contractd::calendar::{Period, PeriodUnit};
    /// let p = Period::parse("2W").unwrap();
    /// assert_eq!((p.count(), p.unit()), (2, PeriodUnit::Week));
    /// ```
    pub fn parse(text: &str) -> Result<Period, PeriodError> {
        // No trimming: the rules admit exactly `<n><unit>` (docs/rules.md §2, §11), so " 1M" or
        // "1M " is invalid input rather than something silently repaired.
        let mut chars = text.chars();
        let unit_char = chars.next_back().ok_or(PeriodError::Empty)?;
        let digits = chars.as_str();
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PeriodError::Malformed(text.to_string()));
        }
        let unit = match unit_char.to_ascii_uppercase() {
            'D' => PeriodUnit::Day,
            'W' => PeriodUnit::Week,
            'M' => PeriodUnit::Month,
            'Q' => PeriodUnit::Quarter,
            'Y' => PeriodUnit::Year,
            _ => return Err(PeriodError::UnknownUnit(text.to_string())),
        };
        // Judge the count by its value, not its length: "007D" is 7 days, while any number of
        // digits beyond 999 is out of range (and never overflows an integer type).
        let significant = digits.trim_start_matches('0');
        if significant.len() > 3 {
            return Err(PeriodError::CountOutOfRange(text.to_string()));
        }
        let count: u16 = if significant.is_empty() {
            0
        } else {
            significant
                .parse()
                .map_err(|_| PeriodError::Malformed(text.to_string()))?
        };
        Period::new(count, unit).ok_or_else(|| PeriodError::CountOutOfRange(text.to_string()))
    }

    /// How many units.
    ///
    /// ```
    /// use contractd::calendar::Period;
    /// assert_eq!(Period::parse("14D").unwrap().count(), 14);
    /// ```
    pub fn count(self) -> u16 {
        self.count
    }

    /// Which unit.
    ///
    /// ```
    /// use contractd::calendar::{Period, PeriodUnit};
    /// assert_eq!(Period::parse("1y").unwrap().unit(), PeriodUnit::Year);
    /// ```
    pub fn unit(self) -> PeriodUnit {
        self.unit
    }

    /// True for a zero-length period (`0D`, `0M`, …).
    ///
    /// ```
    /// use contractd::calendar::Period;
    /// assert!(Period::parse("0M").unwrap().is_none());
    /// assert!(!Period::parse("1D").unwrap().is_none());
    /// ```
    pub fn is_none(self) -> bool {
        self.count == 0
    }

    /// The period as whole months, for M, Q and Y; `None` for D and W.
    pub(super) fn months(self) -> Option<i64> {
        let n = i64::from(self.count);
        match self.unit {
            PeriodUnit::Month => Some(n),
            PeriodUnit::Quarter => Some(3 * n),
            PeriodUnit::Year => Some(12 * n),
            PeriodUnit::Day | PeriodUnit::Week => None,
        }
    }

    /// The period as days, for D and W; `None` for M, Q and Y.
    fn days(self) -> Option<i64> {
        let n = i64::from(self.count);
        match self.unit {
            PeriodUnit::Day => Some(n),
            PeriodUnit::Week => Some(7 * n),
            _ => None,
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.count, self.unit.letter())
    }
}

impl FromStr for Period {
    type Err = PeriodError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Period::parse(s)
    }
}

impl serde::Serialize for Period {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Period {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Period::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Move `date` forward by `period` (docs/rules.md §2).
///
/// Days and weeks are exact. Months, quarters and years move by whole months with the
/// month-end rule: the last day of a month maps to the last day of the target month, any other
/// day keeps its day of month, clamped to the target month's length.
///
/// ```
/// use chrono::NaiveDate;
/// use contractd::calendar::{shift, Period};
/// let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
/// assert_eq!(shift(d("2024-01-31"), "1M".parse().unwrap()), d("2024-02-29"));
/// assert_eq!(shift(d("2024-02-29"), "1M".parse().unwrap()), d("2024-03-31"));
/// ```
pub fn shift(date: NaiveDate, period: Period) -> NaiveDate {
    shift_times(date, period, 1)
}

/// Move `date` back by `period`; the mirror of [`shift`].
///
/// ```
/// use chrono::NaiveDate;
/// use contractd::calendar::{shift_back, Period};
/// let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
/// assert_eq!(shift_back(d("2025-06-30"), "3M".parse().unwrap()), d("2025-03-31"));
/// ```
pub fn shift_back(date: NaiveDate, period: Period) -> NaiveDate {
    shift_times(date, period, -1)
}

/// Move `date` by `times` × `period` in one step (negative `times` moves back).
///
/// This is how billing periods are computed from their anchor, never step by step:
/// `shift_times(start, 1M, 2)` of 30 Jan 2024 is 30 Mar, where two steps would give 31 Mar
/// (30 Jan → 29 Feb, a month end → 31 Mar). Auto-extension, which moves a stored end date one
/// term per sweep, steps instead: see `extension_end`.
/// Results beyond chrono's range saturate at its limits.
///
/// ```
/// use chrono::NaiveDate;
/// use contractd::calendar::{shift_times, Period};
/// let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
/// assert_eq!(shift_times(d("2024-01-30"), "1M".parse().unwrap(), 2), d("2024-03-30"));
/// ```
pub fn shift_times(date: NaiveDate, period: Period, times: i64) -> NaiveDate {
    if let Some(days) = period.days() {
        let delta = days.saturating_mul(times);
        let moved = if delta >= 0 {
            date.checked_add_days(Days::new(delta.unsigned_abs()))
        } else {
            date.checked_sub_days(Days::new(delta.unsigned_abs()))
        };
        return moved.unwrap_or(if delta >= 0 {
            NaiveDate::MAX
        } else {
            NaiveDate::MIN
        });
    }
    let months = period.months().unwrap_or(0).saturating_mul(times);
    shift_months(date, months)
}

/// Whether `date` is the last day of its month (the month-end rule's trigger).
pub(super) fn is_month_end(date: NaiveDate) -> bool {
    date.day() == days_in_month(date.year(), date.month())
}

/// Move by whole months with the month-end rule.
fn shift_months(date: NaiveDate, months: i64) -> NaiveDate {
    let saturated = if months >= 0 {
        NaiveDate::MAX
    } else {
        NaiveDate::MIN
    };
    // `months` may be anything up to i64::MAX (a saturated `times`): add checked, so a far
    // shift saturates instead of overflowing.
    let Some(index) = (i64::from(date.year()) * 12 + i64::from(date.month0())).checked_add(months)
    else {
        return saturated;
    };
    let year = index.div_euclid(12);
    let month0 = index.rem_euclid(12) as u32;
    let Ok(year) = i32::try_from(year) else {
        return saturated;
    };
    let target_len = days_in_month(year, month0 + 1);
    let day = if is_month_end(date) {
        target_len
    } else {
        date.day().min(target_len)
    };
    NaiveDate::from_ymd_opt(year, month0 + 1, day).unwrap_or(saturated)
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
    fn parses_every_unit_in_either_case() {
        let units = [
            ('d', PeriodUnit::Day),
            ('w', PeriodUnit::Week),
            ('m', PeriodUnit::Month),
            ('q', PeriodUnit::Quarter),
            ('y', PeriodUnit::Year),
        ];
        for (letter, unit) in units {
            for count in [0_u16, 1, 9, 10, 99, 100, 999] {
                for text in [
                    format!("{count}{letter}"),
                    format!("{count}{}", letter.to_ascii_uppercase()),
                ] {
                    let period = Period::parse(&text).unwrap();
                    assert_eq!((period.count(), period.unit()), (count, unit), "{text}");
                    assert_eq!(period.to_string(), text.to_ascii_uppercase());
                }
            }
        }
    }

    #[test]
    fn leading_zeros_count_by_value() {
        assert_eq!(p("007D"), p("7D"));
        assert_eq!(p("0999M"), p("999M"));
        assert_eq!(p("00D"), Period::NONE);
        assert_eq!(
            Period::parse("0001000D"),
            Err(PeriodError::CountOutOfRange("0001000D".into()))
        );
    }

    #[test]
    fn rejects_everything_else_with_a_typed_error() {
        use PeriodError::*;
        let cases = [
            ("", Empty),
            ("1", Malformed("1".into())),
            ("M", Malformed("M".into())),
            ("-1M", Malformed("-1M".into())),
            ("+1M", Malformed("+1M".into())),
            ("1.5M", Malformed("1.5M".into())),
            (" 1 M", Malformed(" 1 M".into())),
            (" 1M", Malformed(" 1M".into())),
            ("1M ", Malformed("1M ".into())),
            ("1MM", Malformed("1MM".into())),
            ("M1", Malformed("M1".into())),
            ("1X", UnknownUnit("1X".into())),
            ("1é", UnknownUnit("1é".into())),
            ("١M", Malformed("١M".into())),
            ("1000D", CountOutOfRange("1000D".into())),
            (
                "99999999999999999999999D",
                CountOutOfRange("99999999999999999999999D".into()),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(Period::parse(text), Err(expected), "{text:?}");
        }
    }

    #[test]
    fn new_rejects_counts_above_999() {
        assert!(Period::new(999, PeriodUnit::Year).is_some());
        assert_eq!(Period::new(1000, PeriodUnit::Day), None);
    }

    #[test]
    fn serde_uses_the_text_form() {
        let period: Period = serde_json::from_str("\"3q\"").unwrap();
        assert_eq!(period, p("3Q"));
        assert_eq!(serde_json::to_string(&period).unwrap(), "\"3Q\"");
        assert!(serde_json::from_str::<Period>("\"3 Q\"").is_err());
    }

    #[test]
    fn zero_periods_are_none_and_shift_nothing() {
        for text in ["0D", "0W", "0M", "0Q", "0Y"] {
            let period = p(text);
            assert!(period.is_none());
            for date in ["2024-02-29", "2025-01-31", "2025-06-15"] {
                assert_eq!(shift(d(date), period), d(date));
                assert_eq!(shift_back(d(date), period), d(date));
            }
        }
    }

    #[test]
    fn month_end_rule() {
        assert_eq!(shift(d("2025-01-31"), p("1M")), d("2025-02-28"));
        assert_eq!(shift(d("2025-02-28"), p("1M")), d("2025-03-31"));
        assert_eq!(shift(d("2024-02-28"), p("1M")), d("2024-03-28"));
        assert_eq!(shift(d("2025-04-30"), p("1Q")), d("2025-07-31"));
        assert_eq!(shift_back(d("2025-03-31"), p("1M")), d("2025-02-28"));
        assert_eq!(shift_back(d("2025-03-30"), p("1M")), d("2025-02-28"));
        assert_eq!(shift_times(d("2025-01-31"), p("1M"), 2), d("2025-03-31"));
        assert_eq!(shift_times(d("2025-01-30"), p("1M"), -2), d("2024-11-30"));
        assert_eq!(shift_times(d("2025-01-15"), p("2W"), -3), d("2024-12-04"));
        assert_eq!(shift_times(d("2025-01-15"), p("1Y"), 0), d("2025-01-15"));
    }

    #[test]
    fn is_month_end_on_every_month_end() {
        assert!(is_month_end(d("2024-02-29")));
        assert!(!is_month_end(d("2024-02-28")));
        assert!(is_month_end(d("2025-02-28")));
        assert!(is_month_end(d("2025-04-30")));
        assert!(!is_month_end(d("2025-05-30")));
    }

    #[test]
    fn far_shifts_saturate_instead_of_overflowing() {
        // Regression: a saturated month count overflowed the month index (a panic in debug
        // builds) for M, Q and Y with very large `times`.
        let date = d("2025-01-15");
        for unit in ["1M", "1Q", "999Y", "7D", "999W"] {
            assert_eq!(
                shift_times(date, p(unit), i64::MAX),
                NaiveDate::MAX,
                "{unit}"
            );
            assert_eq!(
                shift_times(date, p(unit), i64::MIN),
                NaiveDate::MIN,
                "{unit}"
            );
        }
        assert_eq!(shift(NaiveDate::MAX, p("1M")), NaiveDate::MAX);
        assert_eq!(shift_back(NaiveDate::MIN, p("1D")), NaiveDate::MIN);
    }

    #[test]
    fn shift_is_monotone_and_shift_back_undoes_day_shifts() {
        let periods = ["1D", "5D", "1W", "1M", "2M", "1Q", "1Y", "13M"].map(p);
        let mut date = d("2023-01-01");
        while date < d("2025-12-31") {
            let next = date.succ_opt().unwrap();
            for period in periods {
                assert!(shift(date, period) <= shift(next, period));
                assert!(shift_back(date, period) <= shift_back(next, period));
                if period.days().is_some() {
                    assert_eq!(shift_back(shift(date, period), period), date);
                }
            }
            date = next;
        }
    }
}
