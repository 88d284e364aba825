//! `import`, `export`, `show` and `history`: contracts in and out, for people and scripts.

use std::io::{BufReader, IsTerminal, Write};
use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, Utc};

use contractd::config::Settings;
use contractd::contract::record::{format_date, ContractRecord, ParseDefaults};
use contractd::storage::ContractStore;
use contractd::transfer::{self, ExportError, ImportError};

use super::Failure;

/// `contractd import FILE`: all or nothing; every bad record is reported on stderr.
pub async fn import_file<S: ContractStore>(
    store: &S,
    settings: &Settings,
    file: &Path,
) -> Result<(), Failure> {
    let defaults = ParseDefaults {
        time_zone: settings
            .default_time_zone()
            .map_err(|error| Failure::Usage(error.into()))?,
    };
    let reader: Box<dyn std::io::BufRead> = if file.as_os_str() == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let opened = std::fs::File::open(file).map_err(|error| {
            Failure::InvalidInput(anyhow::anyhow!("cannot open {}: {error}", file.display()))
        })?;
        Box::new(BufReader::with_capacity(1 << 20, opened))
    };
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message("reading contracts");
        Some(bar)
    } else {
        None
    };
    let started = std::time::Instant::now();
    let lead_times = settings.rule_policy().reminder_lead_times;
    let result = transfer::import_with_lead_times(
        store,
        reader,
        &defaults,
        &lead_times,
        Utc::now(),
        |line| {
            if let Some(bar) = &bar {
                if line % 1000 == 0 {
                    bar.set_position(line as u64);
                }
            }
        },
    )
    .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    match result {
        Ok(count) => {
            tracing::info!(
                event = "import.finished",
                contracts = count,
                duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            );
            println!("imported {count} contracts");
            Ok(())
        }
        Err(ImportError::Invalid(problems)) => {
            for problem in &problems {
                eprintln!("{problem}");
            }
            Err(Failure::InvalidInput(anyhow::anyhow!(
                "{} invalid record(s) in {}; nothing was imported",
                problems.len(),
                file.display()
            )))
        }
        Err(error @ (ImportError::Empty | ImportError::Read(_))) => {
            Err(Failure::InvalidInput(error.into()))
        }
        Err(ImportError::Storage(error)) => Err(Failure::Failed(
            anyhow::Error::new(error).context("nothing was imported"),
        )),
    }
}

/// `contractd export [--ref R]…`: JSON Lines on stdout; rows that break the rules are named
/// on stderr and make the command fail after the others were written.
pub async fn export<S: ContractStore>(store: &S, references: &[String]) -> Result<(), Failure> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut invalid = 0;
    let result = transfer::export(store, references, &mut out, |error| {
        invalid += 1;
        eprintln!("contractd: not exported: {error}");
    })
    .await;
    match result {
        Err(ExportError::NotFound(reference)) => Err(Failure::InvalidInput(anyhow::anyhow!(
            "no contract '{reference}'"
        ))),
        Err(error) => Err(Failure::Failed(error.into())),
        Ok(_) if invalid > 0 => Err(Failure::Failed(anyhow::anyhow!(
            "{invalid} contract row(s) break the rules and were not exported"
        ))),
        Ok(_) => Ok(()),
    }
}

/// `contractd show REF`: the contract's export record, pretty-printed.
pub async fn show<S: ContractStore>(store: &S, reference: &str) -> Result<(), Failure> {
    let loaded = store
        .load_contract(reference)
        .await
        .context("reading the contract")?
        .ok_or_else(|| Failure::InvalidInput(anyhow::anyhow!("no contract '{reference}'")))?;
    let contract = loaded.contract.map_err(|error| {
        Failure::Failed(anyhow::anyhow!("the stored row breaks the rules: {error}"))
    })?;
    let record = ContractRecord::from_contract(&contract);
    let text = serde_json::to_string_pretty(&record).context("formatting")?;
    println!("{text}");
    Ok(())
}

/// `contractd history REF`: one line per event, oldest first.
pub async fn history<S: ContractStore>(store: &S, reference: &str) -> Result<(), Failure> {
    if store
        .load_contract(reference)
        .await
        .context("reading the contract")?
        .is_none()
    {
        return Err(Failure::InvalidInput(anyhow::anyhow!(
            "no contract '{reference}'"
        )));
    }
    let events = store.events(reference).await.context("reading events")?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for event in events {
        let recorded = DateTime::<Utc>::from_timestamp_millis(event.recorded_at_ms)
            .map(|at| at.to_rfc3339())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{}  {:<30} {}{}  {}",
            format_date(event.effective_on),
            event.kind,
            event
                .line_ref
                .as_deref()
                .map(|line| format!("line {line}  "))
                .unwrap_or_default(),
            event.details,
            recorded
        );
    }
    Ok(())
}
