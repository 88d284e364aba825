//! Periods (`<n><unit>`) and the month-end-aware date shift of SPEC section 2.

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, Days, NaiveDate};

use super::days_in_month;

/// The unit of a [`Period`].
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
    pub const NONE: Period = Period {
        count: 0,
        unit: PeriodUnit::Day,
    };

    /// Build a period from a count and a unit; `None` when the count is above 999.
    pub fn new(count: u16, unit: PeriodUnit) -> Option<Period> {
        (count <= 999).then_some(Period { count, unit })
    }

    /// Parse `<n><unit>`, e.g. `3M`, `14d`, `0D`.
    ///
    /// ```
    /// use contractd::calendar::{Period, PeriodUnit};
    /// let p = Period::parse("2W").unwrap();
    /// assert_eq!((p.count(), p.unit()), (2, PeriodUnit::Week));
    /// ```
    pub fn parse(text: &str) -> Result<Period, PeriodError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(PeriodError::Empty);
        }
        let mut chars = trimmed.chars();
        let unit_char = chars.next_back().ok_or(PeriodError::Empty)?;
        let digits = chars.as_str();
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
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
        if digits.len() > 3 {
            return Err(PeriodError::CountOutOfRange(text.to_string()));
        }
        let count: u16 = digits
            .parse()
            .map_err(|_| PeriodError::Malformed(text.to_string()))?;
        Period::new(count, unit).ok_or_else(|| PeriodError::CountOutOfRange(text.to_string()))
    }

    /// How many units.
    pub fn count(self) -> u16 {
        self.count
    }

    /// Which unit.
    pub fn unit(self) -> PeriodUnit {
        self.unit
    }

    /// True for a zero-length period (`0D`, `0M`, …).
    pub fn is_none(self) -> bool {
        self.count == 0
    }

    /// The period as whole months, for M, Q and Y; `None` for D and W.
    fn months(self) -> Option<i64> {
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

/// Move `date` forward by `period` (SPEC section 2).
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
/// This is how billing periods and extension terms are computed from their anchor, never step
/// by step: `shift_times(start, 1M, 2)` of 31 Jan is 31 Mar, not 29 Mar.
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

/// Move by whole months with the month-end rule.
fn shift_months(date: NaiveDate, months: i64) -> NaiveDate {
    let index = i64::from(date.year()) * 12 + i64::from(date.month0()) + months;
    let year = index.div_euclid(12);
    let month0 = index.rem_euclid(12) as u32;
    let Ok(year) = i32::try_from(year) else {
        return if months >= 0 {
            NaiveDate::MAX
        } else {
            NaiveDate::MIN
        };
    };
    let target_len = days_in_month(year, month0 + 1);
    let is_month_end = date.day() == days_in_month(date.year(), date.month());
    let day = if is_month_end {
        target_len
    } else {
        date.day().min(target_len)
    };
    NaiveDate::from_ymd_opt(year, month0 + 1, day).unwrap_or(if months >= 0 {
        NaiveDate::MAX
    } else {
        NaiveDate::MIN
    })
}
