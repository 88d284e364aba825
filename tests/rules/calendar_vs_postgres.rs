//! Differential test: `shift`, `shift_back` and `shift_times` against PostgreSQL's own
//! `date + interval`, on random (date, period) pairs where the month-end rule does not apply
//! (PostgreSQL clamps but has no month-end step, so on a month's last day the two differ by
//! design; `postgres_differs_only_by_the_month_end_rule` shows that).
//!
//! Needs the PostgreSQL server at `CONTRACTD_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and fails, not skips, when it is unreachable.

use std::time::Duration;

use chrono::{Days, NaiveDate};
use contractd::calendar::{last_day_of_month, shift, shift_back, shift_times, Period, PeriodUnit};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool, Row};

use crate::support::{date, postgres_admin_url, DEFAULT_POSTGRES_URL};

const SEED: u64 = 0x00C0_FFEE_2025;
const PAIRS: usize = 150_000;
const BATCH: usize = 25_000;

async fn pool() -> PgPool {
    let url = postgres_admin_url();
    let unreachable = |error: sqlx::Error| -> ! {
        panic!(
            "PostgreSQL must be reachable for this test \
             (CONTRACTD_TEST_POSTGRES_URL, default {DEFAULT_POSTGRES_URL}): {error}"
        )
    };
    // One direct connection first: it reports why (refused, auth…) where a pool only times out.
    match PgConnection::connect(&url).await {
        Ok(connection) => connection.close().await.unwrap_or_else(|e| unreachable(e)),
        Err(error) => unreachable(error),
    }
    PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(15))
        .connect(&url)
        .await
        .unwrap_or_else(|error| unreachable(error))
}

/// Which of our entry points a case goes through.
#[derive(Debug, Clone, Copy)]
enum Call {
    Shift,
    ShiftBack,
    ShiftTimes(i64),
}

#[derive(Debug, Clone, Copy)]
struct Case {
    date: NaiveDate,
    period: Period,
    call: Call,
}

impl Case {
    fn times(self) -> i64 {
        match self.call {
            Call::Shift => 1,
            Call::ShiftBack => -1,
            Call::ShiftTimes(times) => times,
        }
    }

    fn ours(self) -> NaiveDate {
        match self.call {
            Call::Shift => shift(self.date, self.period),
            Call::ShiftBack => shift_back(self.date, self.period),
            Call::ShiftTimes(times) => shift_times(self.date, self.period, times),
        }
    }

    /// The (months, days) interval PostgreSQL is asked to add.
    fn interval(self) -> (i32, i32) {
        let count = i64::from(self.period.count()) * self.times();
        let (months, days) = match self.period.unit() {
            PeriodUnit::Day => (0, count),
            PeriodUnit::Week => (0, 7 * count),
            PeriodUnit::Month => (count, 0),
            PeriodUnit::Quarter => (3 * count, 0),
            PeriodUnit::Year => (12 * count, 0),
        };
        (i32::try_from(months).unwrap(), i32::try_from(days).unwrap())
    }
}

fn unit_months(unit: PeriodUnit) -> Option<i64> {
    match unit {
        PeriodUnit::Day | PeriodUnit::Week => None,
        PeriodUnit::Month => Some(1),
        PeriodUnit::Quarter => Some(3),
        PeriodUnit::Year => Some(12),
    }
}

/// Random cases 1990–2100 where the month-end rule does not apply: the date is not the last
/// day of its month, or the unit is D or W. A third each through shift, shift_back and
/// shift_times (with a multiplier that keeps results within roughly ±900 years).
fn cases(rng: &mut StdRng, count: usize) -> Vec<Case> {
    let first = NaiveDate::from_ymd_opt(1990, 1, 1).unwrap();
    let span = (NaiveDate::from_ymd_opt(2100, 12, 31).unwrap() - first).num_days() as u64;
    let units = [
        PeriodUnit::Day,
        PeriodUnit::Week,
        PeriodUnit::Month,
        PeriodUnit::Quarter,
        PeriodUnit::Year,
    ];
    let mut cases = Vec::with_capacity(count);
    while cases.len() < count {
        let mut date = first + Days::new(rng.random_range(0..=span));
        // Crowd the days next to month ends, where clamping happens.
        if rng.random_bool(0.5) {
            date = last_day_of_month(date) - Days::new(rng.random_range(1..=3));
        }
        let unit = units[rng.random_range(0..units.len())];
        if unit_months(unit).is_some() && date == last_day_of_month(date) {
            continue;
        }
        let amount: u16 = if rng.random_bool(0.7) {
            rng.random_range(0..=36)
        } else {
            rng.random_range(0..=999)
        };
        let period = Period::new(amount, unit).unwrap();
        let call = match cases.len() % 3 {
            0 => Call::Shift,
            1 => Call::ShiftBack,
            _ => {
                let per_time_days = i64::from(amount.max(1))
                    * match unit {
                        PeriodUnit::Day => 1,
                        PeriodUnit::Week => 7,
                        _ => 31 * unit_months(unit).unwrap(),
                    };
                let limit = (900 * 366 / per_time_days).clamp(1, 40);
                Call::ShiftTimes(rng.random_range(-limit..=limit))
            }
        };
        cases.push(Case { date, period, call });
    }
    cases
}

/// PostgreSQL's `date + make_interval(months, days)` for each case, in one round trip.
async fn postgres_results(pool: &PgPool, cases: &[Case]) -> Vec<NaiveDate> {
    let dates: Vec<NaiveDate> = cases.iter().map(|case| case.date).collect();
    let (months, days): (Vec<i32>, Vec<i32>) = cases.iter().map(|case| case.interval()).unzip();
    let rows = sqlx::query(
        "SELECT (t.d + make_interval(months => t.m, days => t.n))::date AS shifted \
         FROM unnest($1::date[], $2::int[], $3::int[]) WITH ORDINALITY AS t(d, m, n, i) \
         ORDER BY t.i",
    )
    .bind(&dates)
    .bind(&months)
    .bind(&days)
    .fetch_all(pool)
    .await
    .expect("the differential query failed");
    assert_eq!(rows.len(), cases.len(), "one result per case");
    rows.iter()
        .map(|row| row.try_get::<NaiveDate, _>("shifted").unwrap())
        .collect()
}

#[tokio::test]
async fn shift_agrees_with_postgres_date_plus_interval() {
    let pool = pool().await;
    let mut rng = StdRng::seed_from_u64(SEED);
    let cases = cases(&mut rng, PAIRS);
    let mut compared = 0;
    let mut disagreements = Vec::new();
    for batch in cases.chunks(BATCH) {
        let theirs = postgres_results(&pool, batch).await;
        for (case, theirs) in batch.iter().zip(theirs) {
            compared += 1;
            let ours = case.ours();
            if ours != theirs {
                disagreements.push((*case, ours, theirs));
            }
        }
    }
    assert_eq!(compared, PAIRS);
    if let Some((case, ours, theirs)) = disagreements.first() {
        let (months, days) = case.interval();
        panic!(
            "{} of {compared} pairs disagree; first: {:?}({}, {}, times {}) = {ours}, but \
             PostgreSQL's {} + make_interval(months => {months}, days => {days}) = {theirs} \
             (seed {SEED:#x})",
            disagreements.len(),
            case.call,
            case.date,
            case.period,
            case.times(),
            case.date,
        );
    }
    let calls = [0, 1, 2].map(|kind| {
        cases
            .iter()
            .filter(|case| match case.call {
                Call::Shift => kind == 0,
                Call::ShiftBack => kind == 1,
                Call::ShiftTimes(_) => kind == 2,
            })
            .count()
    });
    assert!(calls.iter().all(|&count| count >= PAIRS / 4), "{calls:?}");
}

#[tokio::test]
async fn postgres_differs_only_by_the_month_end_rule() {
    // The cases the differential leaves out do differ, so leaving them out is necessary, and
    // the comparison above is not vacuous.
    let pool = pool().await;
    let p = |text: &str| text.parse::<Period>().unwrap();
    let month_ends = [
        Case {
            date: date("2027-02-28"),
            period: p("12M"),
            call: Call::Shift,
        },
        Case {
            date: date("2025-06-30"),
            period: p("3M"),
            call: Call::ShiftBack,
        },
        Case {
            date: date("2024-02-29"),
            period: p("1M"),
            call: Call::Shift,
        },
    ];
    let theirs = postgres_results(&pool, &month_ends).await;
    assert_eq!(
        theirs,
        [date("2028-02-28"), date("2025-03-30"), date("2024-03-29")]
    );
    let ours: Vec<NaiveDate> = month_ends.iter().map(|case| case.ours()).collect();
    assert_eq!(
        ours,
        [date("2028-02-29"), date("2025-03-31"), date("2024-03-31")]
    );
}
