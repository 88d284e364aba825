//! The daemon's Prometheus metrics, kept in a `prometheus-client` registry and exposed in the
//! text exposition format 0.0.4 (what `promtool check metrics` and every Prometheus server
//! read).
//!
//! The daily job is labelled `sweep_job`, never `job`: Prometheus keeps `job` for the scrape
//! job and would store ours as `exported_job`.
//!
//! Two things the library does its own way are adjusted here:
//! - its counter names the family `x` and the samples `x_total` (OpenMetrics), which the
//!   0.0.4 format reads as samples of an undocumented family; [`Total`] names both
//!   `x_total`;
//! - it writes label values as they are and appends a full stop to every help text, so
//!   free-text values go through [`Escaped`] and help texts are given without their last
//!   full stop.
//!
//! Every value is an atomic of its own: a scrape may see one job run's counters half
//! updated, which no rate or alert notices.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::text::encode_registry;
use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder, MetricEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::lifecycle::Job;
use crate::sweep::{JobOutcome, JobReport};

/// The content type of [`Metrics::render`]: the HTTP handler sends it so that Prometheus
/// parses the body as the text format 0.0.4 it is.
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

/// The outcomes of a webhook attempt, as labels of `contractd_webhook_deliveries_total`.
pub const WEBHOOK_OUTCOMES: [&str; 4] = ["delivered", "retry", "failed", "endpoint_gone"];

/// The daemon's metrics.
#[derive(Debug)]
pub struct Metrics {
    /// Every family below, registered in the order of the exposition.
    registry: Registry,
    /// `contractd_job_runs_total{sweep_job, outcome}`.
    job_runs: Family<RunLabels, Total>,
    /// `contractd_transitions_total{sweep_job}`.
    transitions: Family<JobLabels, Total>,
    /// `contractd_job_run_duration_seconds{sweep_job}`.
    durations: Family<JobLabels, Histogram>,
    /// `contractd_contracts{status}`: no series until the first count arrived.
    contracts: Family<StatusLabels, Gauge>,
    /// Statuses of the last count outside [`STATUSES`] (rows written by another system), so
    /// that the next count removes those no row has any more.
    other_statuses: Mutex<BTreeSet<String>>,
    /// `contractd_invalid_rows_skipped_total{sweep_job}`.
    invalid_rows: Family<JobLabels, Total>,
    /// `contractd_job_last_success_timestamp_seconds{sweep_job, zone}`.
    last_success: Family<SuccessLabels, Gauge<f64, AtomicU64>>,
    /// `contractd_database_up`: 0 until the first probe answered.
    database_up: Gauge,
    /// `contractd_ticks_total`.
    ticks: Total,
    /// `contractd_webhook_deliveries_total{endpoint, outcome}`: attempts by this process.
    webhook_attempts: Family<AttemptLabels, Total>,
    /// `contractd_webhook_pending_deliveries{endpoint}`, from the database.
    webhook_pending: Family<EndpointLabels, Gauge>,
    /// `contractd_webhook_oldest_pending_age_seconds{endpoint}`, from the database: how long
    /// the oldest event still waiting for this endpoint has waited (0 when none waits).
    webhook_oldest_age: Family<EndpointLabels, Gauge<f64, AtomicU64>>,
    /// `contractd_webhook_failed_deliveries{endpoint}`, from the database: deliveries out of
    /// attempts, waiting for `redeliver`.
    webhook_failed: Family<EndpointLabels, Gauge>,
    /// `contractd_webhook_endpoint_disabled{endpoint}`: 1 while a 410 Gone keeps it off.
    webhook_disabled: Family<EndpointLabels, Gauge>,
}

/// Labels of `contractd_webhook_deliveries_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    /// The endpoint's configured name (never its URL).
    endpoint: Escaped,
    /// delivered, retry, failed or endpoint_gone.
    outcome: &'static str,
}

/// Labels of the families kept per webhook endpoint.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    /// The endpoint's configured name (never its URL).
    endpoint: Escaped,
}

/// Labels of `contractd_job_runs_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    /// The daily job.
    sweep_job: &'static str,
    /// One of [`RUN_OUTCOMES`].
    outcome: &'static str,
}

/// Labels of the families counted per daily job.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    /// The daily job.
    sweep_job: &'static str,
}

/// Labels of `contractd_job_last_success_timestamp_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SuccessLabels {
    /// The daily job.
    sweep_job: &'static str,
    /// The IANA time zone whose business date the job succeeded for.
    zone: Escaped,
}

/// Labels of `contractd_contracts`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    /// The status as stored, which another system may have written.
    status: Escaped,
}

/// Labels of `contractd_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    /// The crate version of the running binary.
    version: Escaped,
}

/// A label value that may hold any text, escaped when encoded (the library writes values
/// as they are).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Escaped(
    /// The value as it is, escaped only when encoded.
    String,
);

impl EncodeLabelValue for Escaped {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(&escape(&self.0))
    }
}

/// A counter registered under its full name, `_total` included, and exposed under that
/// name alone, as the text format 0.0.4 wants (see the module documentation).
#[derive(Debug, Default, Clone)]
struct Total(
    /// The library's counter, which holds the value; only its encoding differs.
    Counter,
);

impl TypedMetric for Total {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for Total {
    fn encode(&self, mut encoder: MetricEncoder) -> std::fmt::Result {
        // The sample line without a suffix, `name{labels} value`, is what the gauge
        // encoding writes.
        encoder.encode_gauge(&self.0.get())
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A fresh `contractd_job_run_duration_seconds` series.
fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// A fresh `contractd_job_last_success_timestamp_seconds` series: NaN, never 0, until it is
/// set, so that a scrape in between does not see a success in 1970.
fn unset_timestamp() -> Gauge<f64, AtomicU64> {
    let gauge = Gauge::default();
    gauge.set(f64::NAN);
    gauge
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Fresh metrics, every series at zero.
    pub fn new() -> Metrics {
        let job_runs = Family::<RunLabels, Total>::default();
        let transitions = Family::<JobLabels, Total>::default();
        let durations = Family::new_with_constructor(duration_histogram as fn() -> Histogram);
        let contracts = Family::<StatusLabels, Gauge>::default();
        let invalid_rows = Family::<JobLabels, Total>::default();
        let last_success =
            Family::new_with_constructor(unset_timestamp as fn() -> Gauge<f64, AtomicU64>);
        let database_up = Gauge::default();
        let ticks = Total::default();
        let build_info = Family::<BuildLabels, Gauge>::default();
        let webhook_attempts = Family::<AttemptLabels, Total>::default();
        let webhook_pending = Family::<EndpointLabels, Gauge>::default();
        let webhook_oldest_age = Family::<EndpointLabels, Gauge<f64, AtomicU64>>::default();
        let webhook_failed = Family::<EndpointLabels, Gauge>::default();
        let webhook_disabled = Family::<EndpointLabels, Gauge>::default();

        // Every job and outcome starts at 0, so `increase()` sees the first failure. Creating
        // the series is all: the guards are dropped at once.
        for job in Job::ALL {
            let sweep_job = job.as_str();
            for outcome in RUN_OUTCOMES {
                let _ = job_runs.get_or_create(&RunLabels { sweep_job, outcome });
            }
            let _ = transitions.get_or_create(&JobLabels { sweep_job });
            let _ = durations.get_or_create(&JobLabels { sweep_job });
            let _ = invalid_rows.get_or_create(&JobLabels { sweep_job });
        }
        build_info
            .get_or_create(&BuildLabels {
                version: Escaped(env!("CARGO_PKG_VERSION").to_string()),
            })
            .set(1);

        // The library appends a full stop to each help text.
        let mut registry = Registry::default();
        registry.register(
            "contractd_job_runs_total",
            "Job runs finished by this process, per daily job and outcome",
            job_runs.clone(),
        );
        registry.register(
            "contractd_transitions_total",
            "Contracts changed by each daily job in this process",
            transitions.clone(),
        );
        registry.register(
            "contractd_job_run_duration_seconds",
            "How long one job run (one job, zone and business date) took",
            durations.clone(),
        );
        registry.register(
            "contractd_contracts",
            "Contracts in the database per status (refreshed at most every 30 seconds)",
            contracts.clone(),
        );
        registry.register(
            "contractd_invalid_rows_skipped_total",
            "Stored contract rows skipped because they break the rules, per daily job",
            invalid_rows.clone(),
        );
        registry.register(
            "contractd_job_last_success_timestamp_seconds",
            "Unix time at which this process last saw the daily job succeed for the zone's \
             current business date",
            last_success.clone(),
        );
        registry.register(
            "contractd_database_up",
            "1 when the database answers and its migrations are applied, else 0",
            database_up.clone(),
        );
        registry.register("contractd_ticks_total", "Scheduler ticks", ticks.clone());
        registry.register(
            "contractd_build_info",
            "Always 1; the version label says which contractd is running",
            build_info,
        );

        registry.register(
            "contractd_webhook_deliveries_total",
            "Webhook delivery attempts by this process, per endpoint and outcome (delivered, \
             retry, failed, endpoint_gone)",
            webhook_attempts.clone(),
        );
        registry.register(
            "contractd_webhook_pending_deliveries",
            "Webhook deliveries waiting to be sent, per endpoint (refreshed every 5 seconds)",
            webhook_pending.clone(),
        );
        registry.register(
            "contractd_webhook_oldest_pending_age_seconds",
            "Age of the oldest event still waiting for delivery, per endpoint (0 when none \
             waits)",
            webhook_oldest_age.clone(),
        );
        registry.register(
            "contractd_webhook_failed_deliveries",
            "Webhook deliveries that ran out of attempts and wait for redeliver, per endpoint",
            webhook_failed.clone(),
        );
        registry.register(
            "contractd_webhook_endpoint_disabled",
            "1 while an endpoint is disabled because it answered 410 Gone, else 0",
            webhook_disabled.clone(),
        );

        Metrics {
            registry,
            job_runs,
            transitions,
            durations,
            contracts,
            other_statuses: Mutex::default(),
            invalid_rows,
            last_success,
            database_up,
            ticks,
            webhook_attempts,
            webhook_pending,
            webhook_oldest_age,
            webhook_failed,
            webhook_disabled,
        }
    }

    /// The configured webhook endpoints: every series starts at 0, so `increase()` and the
    /// alerts see the first failure.
    pub fn webhook_endpoints(&self, names: &[String]) {
        for name in names {
            let endpoint = || Escaped(name.clone());
            for outcome in WEBHOOK_OUTCOMES {
                let _ = self.webhook_attempts.get_or_create(&AttemptLabels {
                    endpoint: endpoint(),
                    outcome,
                });
            }
            let labels = EndpointLabels {
                endpoint: endpoint(),
            };
            let _ = self.webhook_pending.get_or_create(&labels);
            let _ = self.webhook_oldest_age.get_or_create(&labels);
            let _ = self.webhook_failed.get_or_create(&labels);
            let _ = self.webhook_disabled.get_or_create(&labels);
        }
    }

    /// One webhook attempt to `endpoint` ended with `outcome` (one of [`WEBHOOK_OUTCOMES`]).
    pub fn webhook_attempt(&self, endpoint: &str, outcome: &'static str) {
        self.webhook_attempts
            .get_or_create(&AttemptLabels {
                endpoint: Escaped(endpoint.to_string()),
                outcome,
            })
            .0
            .inc();
    }

    /// The backlog of one endpoint as the database has it now: pending and failed
    /// deliveries, the age of the oldest pending event in seconds, and whether it is
    /// disabled.
    pub fn set_webhook_backlog(
        &self,
        endpoint: &str,
        pending: i64,
        oldest_age_seconds: f64,
        failed: i64,
        disabled: bool,
    ) {
        let labels = EndpointLabels {
            endpoint: Escaped(endpoint.to_string()),
        };
        self.webhook_pending.get_or_create(&labels).set(pending);
        self.webhook_oldest_age
            .get_or_create(&labels)
            .set(oldest_age_seconds);
        self.webhook_failed.get_or_create(&labels).set(failed);
        self.webhook_disabled
            .get_or_create(&labels)
            .set(i64::from(disabled));
    }

    /// One scheduler tick.
    pub fn tick(&self) {
        self.ticks.0.inc();
    }

    /// A job run of this process finished. `unix_seconds` is the real time it finished.
    pub fn job_finished(&self, report: &JobReport, unix_seconds: f64) {
        let sweep_job = report.key.job.as_str();
        let outcome = match report.outcome {
            JobOutcome::Succeeded => "succeeded",
            JobOutcome::Failed(_) => "failed",
            JobOutcome::Interrupted => "interrupted",
            JobOutcome::NotClaimed | JobOutcome::DryRun => return,
        };
        let job = JobLabels { sweep_job };
        self.job_runs
            .get_or_create(&RunLabels { sweep_job, outcome })
            .0
            .inc();
        let changed = report.counts.changed - report.prior_counts.changed;
        self.transitions
            .get_or_create(&job)
            .0
            .inc_by(u64::try_from(changed).unwrap_or(0));
        self.invalid_rows
            .get_or_create(&job)
            .0
            .inc_by(u64::try_from(report.invalid_rows).unwrap_or(0));
        self.durations
            .get_or_create(&job)
            .observe(report.duration.as_secs_f64());
        if report.outcome == JobOutcome::Succeeded {
            self.set_last_success(sweep_job, &report.key.zone, unix_seconds);
        }
    }

    /// The ledger shows that `job` succeeded for `zone`'s current business date (run by this
    /// process or another replica): this is when this process learnt it.
    pub fn job_seen_succeeded(&self, job: Job, zone: &str, unix_seconds: f64) {
        self.set_last_success(job.as_str(), zone, unix_seconds);
    }

    /// Whether the database answered and is migrated.
    pub fn set_database_up(&self, up: bool) {
        self.database_up.set(i64::from(up));
    }

    /// The latest count of contracts per status.
    pub fn set_contracts(&self, counts: &[(String, i64)]) {
        let status = |name: &str| StatusLabels {
            status: Escaped(name.to_string()),
        };
        for name in STATUSES {
            if !counts.iter().any(|(counted, _)| counted == name) {
                self.contracts.get_or_create(&status(name)).set(0);
            }
        }
        for (name, count) in counts {
            self.contracts.get_or_create(&status(name)).set(*count);
        }
        let others: BTreeSet<String> = counts
            .iter()
            .map(|(name, _)| name)
            .filter(|name| !STATUSES.contains(&name.as_str()))
            .cloned()
            .collect();
        let mut previous = self
            .other_statuses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for gone in previous.difference(&others) {
            self.contracts.remove(&status(gone));
        }
        *previous = others;
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        // Writing into a String cannot fail and no label here fails to encode. No `# EOF`
        // (`encode` would add it): that line ends OpenMetrics, which this text is not.
        let _ = encode_registry(&mut out, &self.registry);
        out
    }

    /// Raise the last success of `sweep_job` in `zone` to `unix_seconds`; it never goes
    /// back, whichever replica's news arrives first.
    fn set_last_success(&self, sweep_job: &'static str, zone: &str, unix_seconds: f64) {
        let labels = SuccessLabels {
            sweep_job,
            zone: Escaped(zone.to_string()),
        };
        let gauge = self.last_success.get_or_create(&labels);
        // `max` ignores the NaN of a fresh series.
        let _ = gauge
            .inner()
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some(f64::from_bits(bits).max(unix_seconds).to_bits())
            });
    }
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

    /// Every family: name, type and help text exactly as dashboards, alerts and the
    /// operations guide know them.
    const FAMILIES: [(&str, &str, &str); 14] = [
        (
            "contractd_job_runs_total",
            "counter",
            "Job runs finished by this process, per daily job and outcome.",
        ),
        (
            "contractd_transitions_total",
            "counter",
            "Contracts changed by each daily job in this process.",
        ),
        (
            "contractd_job_run_duration_seconds",
            "histogram",
            "How long one job run (one job, zone and business date) took.",
        ),
        (
            "contractd_contracts",
            "gauge",
            "Contracts in the database per status (refreshed at most every 30 seconds).",
        ),
        (
            "contractd_invalid_rows_skipped_total",
            "counter",
            "Stored contract rows skipped because they break the rules, per daily job.",
        ),
        (
            "contractd_job_last_success_timestamp_seconds",
            "gauge",
            "Unix time at which this process last saw the daily job succeed for the zone's current business date.",
        ),
        (
            "contractd_database_up",
            "gauge",
            "1 when the database answers and its migrations are applied, else 0.",
        ),
        ("contractd_ticks_total", "counter", "Scheduler ticks."),
        (
            "contractd_build_info",
            "gauge",
            "Always 1; the version label says which contractd is running.",
        ),
        (
            "contractd_webhook_deliveries_total",
            "counter",
            "Webhook delivery attempts by this process, per endpoint and outcome (delivered, \
             retry, failed, endpoint_gone).",
        ),
        (
            "contractd_webhook_pending_deliveries",
            "gauge",
            "Webhook deliveries waiting to be sent, per endpoint (refreshed every 5 seconds).",
        ),
        (
            "contractd_webhook_oldest_pending_age_seconds",
            "gauge",
            "Age of the oldest event still waiting for delivery, per endpoint (0 when none \
             waits).",
        ),
        (
            "contractd_webhook_failed_deliveries",
            "gauge",
            "Webhook deliveries that ran out of attempts and wait for redeliver, per endpoint.",
        ),
        (
            "contractd_webhook_endpoint_disabled",
            "gauge",
            "1 while an endpoint is disabled because it answered 410 Gone, else 0.",
        ),
    ];

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

    /// Metrics with a value in every family.
    fn busy() -> Metrics {
        let metrics = Metrics::new();
        metrics.tick();
        metrics.job_finished(&report(JobOutcome::Succeeded, 5, 2), 1_700_000_000.5);
        metrics.set_contracts(&[("active".to_string(), 7)]);
        metrics.set_database_up(true);
        metrics.webhook_endpoints(&["crm".to_string()]);
        metrics.webhook_attempt("crm", "delivered");
        metrics.set_webhook_backlog("crm", 3, 12.5, 1, false);
        metrics
    }

    #[test]
    fn webhook_series_start_at_zero_and_follow_the_backlog() {
        let metrics = Metrics::new();
        metrics.webhook_endpoints(&["crm".to_string()]);
        let text = metrics.render();
        for outcome in WEBHOOK_OUTCOMES {
            let sample = format!(
                "contractd_webhook_deliveries_total{{endpoint=\"crm\",outcome=\"{outcome}\"}} 0\n"
            );
            assert!(text.contains(&sample), "{sample} missing:\n{text}");
        }
        metrics.webhook_attempt("crm", "retry");
        metrics.set_webhook_backlog("crm", 4, 90.0, 2, true);
        let text = metrics.render();
        for sample in [
            "contractd_webhook_deliveries_total{endpoint=\"crm\",outcome=\"retry\"} 1\n",
            "contractd_webhook_pending_deliveries{endpoint=\"crm\"} 4\n",
            "contractd_webhook_oldest_pending_age_seconds{endpoint=\"crm\"} 90.0\n",
            "contractd_webhook_failed_deliveries{endpoint=\"crm\"} 2\n",
            "contractd_webhook_endpoint_disabled{endpoint=\"crm\"} 1\n",
        ] {
            assert!(text.contains(sample), "{sample} missing:\n{text}");
        }
    }

    #[test]
    fn every_family_has_its_help_and_type() {
        for text in [Metrics::new().render(), busy().render()] {
            let lines = format!("\n{text}");
            for (name, kind, help) in FAMILIES {
                assert!(
                    lines.contains(&format!("\n# HELP {name} {help}\n# TYPE {name} {kind}\n")),
                    "{name} missing or changed:\n{text}"
                );
            }
            assert_eq!(text.matches("# TYPE ").count(), FAMILIES.len(), "{text}");
        }
    }

    /// What `promtool check metrics` reads as the text format 0.0.4: each sample belongs to
    /// the family of the TYPE line above it (a histogram's with `_bucket`, `_sum` and
    /// `_count`), and nothing of OpenMetrics such as `# EOF` or `# UNIT`.
    #[test]
    fn every_sample_belongs_to_the_family_above_it() {
        let text = busy().render();
        let mut family: Option<(&str, &str)> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split_once(' ');
                continue;
            }
            assert!(
                line.starts_with("# HELP ") || !line.starts_with('#'),
                "{line}"
            );
            if line.starts_with('#') {
                continue;
            }
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let (family, kind) = family.unwrap_or_else(|| panic!("{line} before any TYPE"));
            let expected = if kind == "histogram" {
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| name.strip_suffix(suffix) == Some(family))
            } else {
                name == family
            };
            assert!(expected, "{line} under `# TYPE {family} {kind}`");
        }
    }

    #[test]
    fn renders_every_family_with_the_sweep_job_label() {
        let text = busy().render();
        assert!(
            text.contains("contractd_job_runs_total{sweep_job=\"expire\",outcome=\"succeeded\"} 1")
        );
        assert!(text.contains("contractd_transitions_total{sweep_job=\"expire\"} 3"));
        assert!(text.contains("contractd_invalid_rows_skipped_total{sweep_job=\"expire\"} 2"));
        assert!(text.contains(
            "contractd_job_last_success_timestamp_seconds{sweep_job=\"expire\",zone=\"Europe/Berlin\"} 1700000000.5"
        ));
        // The library writes `le` first.
        assert!(text.contains(
            "contractd_job_run_duration_seconds_bucket{le=\"0.05\",sweep_job=\"expire\"} 1"
        ));
        assert!(text.contains(
            "contractd_job_run_duration_seconds_bucket{le=\"0.025\",sweep_job=\"expire\"} 0"
        ));
        assert!(text.contains("contractd_contracts{status=\"active\"} 7"));
        assert!(text.contains("contractd_contracts{status=\"draft\"} 0"));
        assert!(text.contains("contractd_database_up 1"));
        assert!(text.contains("contractd_ticks_total 1"));
        assert!(text.contains(&format!(
            "contractd_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(!text.contains("{job=") && !text.contains(",job="));
    }

    #[test]
    fn every_job_has_every_bucket_from_the_start() {
        let text = Metrics::new().render();
        for job in Job::ALL {
            let job = job.as_str();
            for bound in DURATION_BUCKETS {
                // As the library writes it: `1.0`, `0.005`.
                let le = format!("{bound:?}");
                assert!(
                    text.contains(&format!(
                        "contractd_job_run_duration_seconds_bucket{{le=\"{le}\",sweep_job=\"{job}\"}} 0\n"
                    )),
                    "{job} {le}:\n{text}"
                );
            }
            assert!(text.contains(&format!(
                "contractd_job_run_duration_seconds_bucket{{le=\"+Inf\",sweep_job=\"{job}\"}} 0\n"
            )));
            assert!(text.contains(&format!(
                "contractd_job_run_duration_seconds_count{{sweep_job=\"{job}\"}} 0\n"
            )));
            for outcome in RUN_OUTCOMES {
                assert!(text.contains(&format!(
                    "contractd_job_runs_total{{sweep_job=\"{job}\",outcome=\"{outcome}\"}} 0\n"
                )));
            }
        }
        assert!(text.contains("contractd_database_up 0\n"));
        assert!(!text.contains("contractd_contracts{"), "no count yet");
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
            "contractd_job_last_success_timestamp_seconds{sweep_job=\"expire\",zone=\"UTC\"} 20.0\n"
        ));
    }

    #[test]
    fn statuses_no_row_has_any_more_go_away() {
        let metrics = Metrics::new();
        metrics.set_contracts(&[("active".to_string(), 2), ("odd\"one".to_string(), 1)]);
        let text = metrics.render();
        assert!(
            text.contains("contractd_contracts{status=\"odd\\\"one\"} 1\n"),
            "{text}"
        );
        metrics.set_contracts(&[("expired".to_string(), 2)]);
        let text = metrics.render();
        assert!(!text.contains("odd"), "{text}");
        assert!(text.contains("contractd_contracts{status=\"active\"} 0\n"));
        assert!(text.contains("contractd_contracts{status=\"expired\"} 2\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
