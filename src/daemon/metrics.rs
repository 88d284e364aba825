//! The daemon's Prometheus metrics, written by hand in the text exposition format 0.0.4
//! (what `promtool check metrics` and every Prometheus server read).
//!
//! The daily job is labelled `sweep_job`, never `job`: Prometheus keeps `job` for the scrape
//! job and would store ours as `exported_job`.
//!
//! Everything lives behind one mutex: updates happen a few times per job run, never per
//! contract, so contention is nil and the text is always a consistent snapshot.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::lifecycle::Job;
use crate::sweep::{JobOutcome, JobReport};

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds (seconds) of the job run duration histogram: from a run with nothing to do
/// (milliseconds) to a run over millions of contracts (minutes).
const DURATION_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Contract statuses that always have a `contractd_contracts` series (0 when none), so a
/// dashboard never shows a gap for a status that is merely empty.
const STATUSES: [&str; 4] = ["draft", "active", "expired", "cancelled"];

/// Outcomes of a finished job run that `contractd_job_runs_total` counts. `not_claimed` is
/// not a run of this process and `dry_run` never happens in the daemon.
const RUN_OUTCOMES: [&str; 3] = ["succeeded", "failed", "interrupted"];

/// The daemon's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Every value, behind one lock so a scrape sees one consistent state.
    state: Mutex<State>,
}

/// The values.
#[derive(Debug)]
struct State {
    /// `contractd_job_runs_total{sweep_job, outcome}`.
    job_runs: BTreeMap<(&'static str, &'static str), u64>,
    /// `contractd_transitions_total{sweep_job}`.
    transitions: BTreeMap<&'static str, u64>,
    /// `contractd_job_run_duration_seconds{sweep_job}`.
    durations: BTreeMap<&'static str, Histogram>,
    /// `contractd_contracts{status}`: `None` until the first count arrived.
    contracts: Option<BTreeMap<String, i64>>,
    /// `contractd_invalid_rows_skipped_total{sweep_job}`.
    invalid_rows: BTreeMap<&'static str, u64>,
    /// `contractd_job_last_success_timestamp_seconds{sweep_job, zone}`.
    last_success: BTreeMap<(&'static str, String), f64>,
    /// `contractd_database_up`: `None` until the first probe answered.
    database_up: Option<bool>,
    /// `contractd_ticks_total`.
    ticks: u64,
}

impl Default for State {
    fn default() -> Self {
        // Every job and outcome starts at 0, so `increase()` sees the first failure.
        let mut state = State {
            job_runs: BTreeMap::new(),
            transitions: BTreeMap::new(),
            durations: BTreeMap::new(),
            contracts: None,
            invalid_rows: BTreeMap::new(),
            last_success: BTreeMap::new(),
            database_up: None,
            ticks: 0,
        };
        for job in Job::ALL {
            let name = job.as_str();
            for outcome in RUN_OUTCOMES {
                state.job_runs.insert((name, outcome), 0);
            }
            state.transitions.insert(name, 0);
            state.durations.insert(name, Histogram::default());
            state.invalid_rows.insert(name, 0);
        }
        state
    }
}

/// A cumulative histogram with [`DURATION_BUCKETS`].
#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Observations per bucket (not cumulative; summed when rendered).
    buckets: [u64; DURATION_BUCKETS.len()],
    /// Sum of all observations.
    sum: f64,
    /// Number of observations (the `+Inf` bucket).
    count: u64,
}

impl Histogram {
    fn observe(&mut self, value: f64) {
        if let Some(index) = DURATION_BUCKETS.iter().position(|bound| value <= *bound) {
            self.buckets[index] += 1;
        }
        self.sum += value;
        self.count += 1;
    }
}

impl Metrics {
    /// Fresh metrics, every series at zero.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the counters inconsistent in a way
        // that matters more than losing the metrics; keep serving them.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One scheduler tick.
    pub fn tick(&self) {
        self.state().ticks += 1;
    }

    /// A job run of this process finished. `unix_seconds` is the real time it finished.
    pub fn job_finished(&self, report: &JobReport, unix_seconds: f64) {
        let job = report.key.job.as_str();
        let outcome = match report.outcome {
            JobOutcome::Succeeded => "succeeded",
            JobOutcome::Failed(_) => "failed",
            JobOutcome::Interrupted => "interrupted",
            JobOutcome::NotClaimed | JobOutcome::DryRun => return,
        };
        let mut state = self.state();
        *state.job_runs.entry((job, outcome)).or_default() += 1;
        let changed = report.counts.changed - report.prior_counts.changed;
        *state.transitions.entry(job).or_default() += u64::try_from(changed).unwrap_or(0);
        *state.invalid_rows.entry(job).or_default() +=
            u64::try_from(report.invalid_rows).unwrap_or(0);
        state
            .durations
            .entry(job)
            .or_default()
            .observe(report.duration.as_secs_f64());
        if report.outcome == JobOutcome::Succeeded {
            set_last_success(&mut state, job, &report.key.zone, unix_seconds);
        }
    }

    /// The ledger shows that `job` succeeded for `zone`'s current business date (run by this
    /// process or another replica): this is when this process learnt it.
    pub fn job_seen_succeeded(&self, job: Job, zone: &str, unix_seconds: f64) {
        set_last_success(&mut self.state(), job.as_str(), zone, unix_seconds);
    }

    /// Whether the database answered and is migrated.
    pub fn set_database_up(&self, up: bool) {
        self.state().database_up = Some(up);
    }

    /// The latest count of contracts per status.
    pub fn set_contracts(&self, counts: &[(String, i64)]) {
        let mut by_status: BTreeMap<String, i64> = STATUSES
            .iter()
            .map(|status| (status.to_string(), 0))
            .collect();
        for (status, count) in counts {
            by_status.insert(status.clone(), *count);
        }
        self.state().contracts = Some(by_status);
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let state = self.state().clone_values();
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail; the results are ignored for that reason.
        let _ = render(&mut out, &state);
        out
    }
}

fn set_last_success(state: &mut State, job: &'static str, zone: &str, unix_seconds: f64) {
    let entry = state
        .last_success
        .entry((job, zone.to_string()))
        .or_insert(unix_seconds);
    if unix_seconds > *entry {
        *entry = unix_seconds;
    }
}

impl State {
    /// A copy, so the lock is not held while formatting.
    fn clone_values(&self) -> State {
        State {
            job_runs: self.job_runs.clone(),
            transitions: self.transitions.clone(),
            durations: self.durations.clone(),
            contracts: self.contracts.clone(),
            invalid_rows: self.invalid_rows.clone(),
            last_success: self.last_success.clone(),
            database_up: self.database_up,
            ticks: self.ticks,
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) -> std::fmt::Result {
    writeln!(out, "# HELP {name} {help}")?;
    writeln!(out, "# TYPE {name} {kind}")
}

/// A label value with `\`, `"` and newlines escaped as the text format requires.
fn escape(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for character in value.chars() {
        match character {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// A float the way Prometheus reads it.
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value == f64::INFINITY {
        "+Inf".to_string()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        format!("{value}")
    }
}

fn render(out: &mut String, state: &State) -> std::fmt::Result {
    header(
        out,
        "contractd_job_runs_total",
        "counter",
        "Job runs finished by this process, per daily job and outcome.",
    )?;
    for ((job, outcome), value) in &state.job_runs {
        writeln!(
            out,
            "contractd_job_runs_total{{sweep_job=\"{job}\",outcome=\"{outcome}\"}} {value}"
        )?;
    }

    header(
        out,
        "contractd_transitions_total",
        "counter",
        "Contracts changed by each daily job in this process.",
    )?;
    for (job, value) in &state.transitions {
        writeln!(
            out,
            "contractd_transitions_total{{sweep_job=\"{job}\"}} {value}"
        )?;
    }

    header(
        out,
        "contractd_job_run_duration_seconds",
        "histogram",
        "How long one job run (one job, zone and business date) took.",
    )?;
    for (job, histogram) in &state.durations {
        let mut cumulative = 0;
        for (bound, count) in DURATION_BUCKETS.iter().zip(histogram.buckets.iter()) {
            cumulative += count;
            writeln!(
                out,
                "contractd_job_run_duration_seconds_bucket{{sweep_job=\"{job}\",le=\"{}\"}} {cumulative}",
                number(*bound)
            )?;
        }
        writeln!(
            out,
            "contractd_job_run_duration_seconds_bucket{{sweep_job=\"{job}\",le=\"+Inf\"}} {}",
            histogram.count
        )?;
        writeln!(
            out,
            "contractd_job_run_duration_seconds_sum{{sweep_job=\"{job}\"}} {}",
            number(histogram.sum)
        )?;
        writeln!(
            out,
            "contractd_job_run_duration_seconds_count{{sweep_job=\"{job}\"}} {}",
            histogram.count
        )?;
    }

    if let Some(contracts) = &state.contracts {
        header(
            out,
            "contractd_contracts",
            "gauge",
            "Contracts in the database per status (refreshed at most every 30 seconds).",
        )?;
        for (status, value) in contracts {
            writeln!(
                out,
                "contractd_contracts{{status=\"{}\"}} {value}",
                escape(status)
            )?;
        }
    }

    header(
        out,
        "contractd_invalid_rows_skipped_total",
        "counter",
        "Stored contract rows skipped because they break the rules, per daily job.",
    )?;
    for (job, value) in &state.invalid_rows {
        writeln!(
            out,
            "contractd_invalid_rows_skipped_total{{sweep_job=\"{job}\"}} {value}"
        )?;
    }

    header(
        out,
        "contractd_job_last_success_timestamp_seconds",
        "gauge",
        "Unix time at which this process last saw the daily job succeed for the zone's current business date.",
    )?;
    for ((job, zone), value) in &state.last_success {
        writeln!(
            out,
            "contractd_job_last_success_timestamp_seconds{{sweep_job=\"{job}\",zone=\"{}\"}} {}",
            escape(zone),
            number(*value)
        )?;
    }

    header(
        out,
        "contractd_database_up",
        "gauge",
        "1 when the database answers and its migrations are applied, else 0.",
    )?;
    writeln!(
        out,
        "contractd_database_up {}",
        u8::from(state.database_up.unwrap_or(false))
    )?;

    header(out, "contractd_ticks_total", "counter", "Scheduler ticks.")?;
    writeln!(out, "contractd_ticks_total {}", state.ticks)?;

    header(
        out,
        "contractd_build_info",
        "gauge",
        "Always 1; the version label says which contractd is running.",
    )?;
    writeln!(
        out,
        "contractd_build_info{{version=\"{}\"}} 1",
        escape(env!("CARGO_PKG_VERSION"))
    )
}

/// Seconds since the Unix epoch of the real clock (metrics are compared with Prometheus's
/// own time, so they never use the daemon's possibly shifted clock).
pub fn real_unix_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{RunCounts, RunKey};

    fn report(outcome: JobOutcome, changed: i64, prior: i64) -> JobReport {
        JobReport {
            key: RunKey {
                job: Job::Expire,
                zone: "Europe/Berlin".to_string(),
                business_date: chrono::NaiveDate::from_ymd_opt(2025, 1, 1).unwrap_or_default(),
            },
            run_id: "r".to_string(),
            counts: RunCounts {
                examined: 10,
                changed,
                skipped: 0,
            },
            prior_counts: RunCounts {
                examined: 0,
                changed: prior,
                skipped: 0,
            },
            invalid_rows: 2,
            duration: Duration::from_millis(30),
            outcome,
            planned: Vec::new(),
        }
    }

    #[test]
    fn renders_every_family_with_the_sweep_job_label() {
        let metrics = Metrics::new();
        metrics.tick();
        metrics.job_finished(&report(JobOutcome::Succeeded, 5, 2), 1_700_000_000.5);
        metrics.set_contracts(&[("active".to_string(), 7)]);
        metrics.set_database_up(true);
        let text = metrics.render();
        assert!(
            text.contains("contractd_job_runs_total{sweep_job=\"expire\",outcome=\"succeeded\"} 1")
        );
        assert!(text.contains("contractd_transitions_total{sweep_job=\"expire\"} 3"));
        assert!(text.contains("contractd_invalid_rows_skipped_total{sweep_job=\"expire\"} 2"));
        assert!(text.contains(
            "contractd_job_last_success_timestamp_seconds{sweep_job=\"expire\",zone=\"Europe/Berlin\"} 1700000000.5"
        ));
        assert!(text.contains(
            "contractd_job_run_duration_seconds_bucket{sweep_job=\"expire\",le=\"0.05\"} 1"
        ));
        assert!(text.contains(
            "contractd_job_run_duration_seconds_bucket{sweep_job=\"expire\",le=\"0.025\"} 0"
        ));
        assert!(text.contains("contractd_contracts{status=\"active\"} 7"));
        assert!(text.contains("contractd_contracts{status=\"draft\"} 0"));
        assert!(text.contains("contractd_database_up 1"));
        assert!(text.contains("contractd_ticks_total 1"));
        assert!(!text.contains("{job=") && !text.contains(",job="));
    }

    #[test]
    fn not_claimed_runs_are_not_counted() {
        let metrics = Metrics::new();
        metrics.job_finished(&report(JobOutcome::NotClaimed, 0, 0), 1.0);
        let text = metrics.render();
        assert!(!text
            .lines()
            .any(|line| line.starts_with("contractd_job_runs_total") && line.ends_with(" 1")));
        assert!(
            text.contains("contractd_job_runs_total{sweep_job=\"expire\",outcome=\"succeeded\"} 0")
        );
    }

    #[test]
    fn last_success_never_goes_back() {
        let metrics = Metrics::new();
        metrics.job_seen_succeeded(Job::Expire, "UTC", 20.0);
        metrics.job_seen_succeeded(Job::Expire, "UTC", 10.0);
        assert!(metrics.render().contains(
            "contractd_job_last_success_timestamp_seconds{sweep_job=\"expire\",zone=\"UTC\"} 20"
        ));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
