//! The quick start: import the sample contracts in `examples/contracts.jsonl` into a fresh
//! SQLite database (the embedded default), run one real sweep as of today in every zone, and
//! print what changed.
//!
//! ```text
//! cargo run --example quickstart
//! ```

use std::io::BufReader;
use std::time::Duration;

use anyhow::Context;
use contractd::clock::SystemClock;
use contractd::contract::record::ParseDefaults;
use contractd::lifecycle::RulePolicy;
use contractd::shutdown::Shutdown;
use contractd::storage::sqlite::{SqliteSettings, SqliteStore};
use contractd::storage::ContractStore;
use contractd::sweep::{sweep_due, SweepOptions};
use contractd::transfer::import;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let database = std::env::temp_dir().join("contractd-quickstart.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", database.display()));
    }
    let store = SqliteStore::connect(&SqliteSettings {
        url: format!("sqlite://{}", database.display()),
        max_connections: 4,
        busy_timeout: Duration::from_secs(5),
    })
    .await?;
    store.migrate().await?;

    let samples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/contracts.jsonl");
    let file = std::fs::File::open(samples).with_context(|| format!("opening {samples}"))?;
    let now = chrono::Utc::now();
    let imported = import(
        &store,
        BufReader::new(file),
        &ParseDefaults {
            time_zone: chrono_tz::UTC,
        },
        now,
        |_| {},
    )
    .await?;
    println!(
        "imported {imported} sample contracts into {}",
        database.display()
    );

    let options = SweepOptions::new(1000, Duration::from_secs(60), RulePolicy::default());
    let report = sweep_due(&store, &SystemClock, &options, &Shutdown::never()).await?;
    let changed: i64 = report.jobs.iter().map(|job| job.counts.changed).sum();
    println!(
        "swept {} (job, zone) runs as of each zone's local date: {changed} change(s)\n",
        report.jobs.len()
    );

    let mut after = 0;
    loop {
        let page = store.contracts_page(after, 100).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for loaded in page {
            let contract = loaded.contract?;
            println!(
                "{:<22} {:<9} end {:<10} cancel by {:<10} for {:<10} ({})",
                contract.reference,
                contract.status.as_str(),
                contract
                    .end_date
                    .map(|d| d.to_string())
                    .unwrap_or("-".into()),
                contract
                    .latest_cancellation_date
                    .map(|d| d.to_string())
                    .unwrap_or("-".into()),
                contract
                    .cancellation_date
                    .map(|d| d.to_string())
                    .unwrap_or("-".into()),
                contract.time_zone.name(),
            );
            for event in store.events(&contract.reference).await? {
                if event.kind != "imported" {
                    println!(
                        "    {} {} {}",
                        event.effective_on, event.kind, event.details
                    );
                }
            }
        }
    }
    Ok(())
}
