//! `run` and `runs`: one sweep of what is due, and the run ledger.

use anyhow::Context;

use contractd::config::Settings;
use contractd::contract::record::format_date;
use contractd::lifecycle::RulePolicy;
use contractd::shutdown::Shutdown;
use contractd::storage::ContractStore;
use contractd::sweep::{sweep_due, JobOutcome, SweepOptions, SweepReport};

use super::args::RunArgs;
use super::{action_clock, Failure};

/// `contractd run`: sweep what is due (or what the flags choose), print one line per job
/// run, fail when a job failed.
pub async fn run<S: ContractStore>(
    store: &S,
    settings: &Settings,
    policy: RulePolicy,
    args: RunArgs,
) -> Result<(), Failure> {
    for zone in &args.zones {
        zone.parse::<chrono_tz::Tz>().map_err(|_| {
            Failure::Usage(anyhow::anyhow!("--zone '{zone}' is not an IANA time zone"))
        })?;
    }
    let clock = action_clock(args.now);
    let mut options = SweepOptions::new(settings.sweep.batch_size, settings.lease(), policy);
    options.parallel_zones = settings.sweep.parallel_zones;
    options.jobs = args.jobs;
    options.zones = args.zones;
    options.as_of = args.as_of;
    options.dry_run = args.dry_run;
    let report = sweep_due(store, clock.as_ref(), &options, &Shutdown::never())
        .await
        .context("the sweep could not start")?;
    print_report(&report, args.dry_run);
    if report.any_failed() {
        return Err(Failure::Failed(anyhow::anyhow!("a job failed (see above)")));
    }
    Ok(())
}

/// The summary for people: one line per job run.
fn print_report(report: &SweepReport, dry_run: bool) {
    if report.jobs.is_empty() {
        println!("nothing due");
        return;
    }
    println!(
        "{:<10} {:<22} {:<21} {:>8} {:>8} {:>8} {:>9}  outcome",
        "date", "zone", "job", "examined", "changed", "skipped", "time"
    );
    for job in &report.jobs {
        println!(
            "{:<10} {:<22} {:<21} {:>8} {:>8} {:>8} {:>7}ms  {}",
            format_date(job.key.business_date),
            job.key.zone,
            job.key.job.as_str(),
            job.counts.examined,
            job.counts.changed,
            job.counts.skipped,
            job.duration.as_millis(),
            match &job.outcome {
                JobOutcome::Failed(error) => format!("failed: {error}"),
                other => other.as_str().to_string(),
            }
        );
        if dry_run {
            for line in &job.planned {
                println!("    {line}");
            }
        }
    }
}

/// `contractd runs`: the newest rows of the run ledger.
pub async fn runs<S: ContractStore>(store: &S, limit: u32) -> Result<(), Failure> {
    let runs = store.runs(limit).await.context("reading the ledger")?;
    println!(
        "{:<10} {:<22} {:<21} {:<10} {:>8} {:>8} {:>8} {:>8}  error",
        "date", "zone", "job", "status", "attempts", "examined", "changed", "skipped"
    );
    for run in runs {
        println!(
            "{:<10} {:<22} {:<21} {:<10} {:>8} {:>8} {:>8} {:>8}  {}",
            format_date(run.key.business_date),
            run.key.zone,
            run.key.job.as_str(),
            run.status.as_str(),
            run.attempts,
            run.counts.examined,
            run.counts.changed,
            run.counts.skipped,
            run.error.unwrap_or_default()
        );
    }
    Ok(())
}
