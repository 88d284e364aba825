//! `reminders --within PERIOD`: the contracts whose cancellation deadline or end date falls
//! within a window from today, as a table for people or JSON Lines for scripts.

use std::io::Write;

use anyhow::Context;
use serde_json::json;

use contractd::clock::Clock;
use contractd::lifecycle::reminders::{ReminderTarget, Upcoming};
use contractd::storage::ContractStore;
use contractd::upcoming::list_upcoming;

use super::args::RemindersArgs;
use super::Failure;

/// `contractd reminders --within PERIOD [--zone Z]... [--json]`.
pub async fn list<S: ContractStore>(
    store: &S,
    clock: &dyn Clock,
    args: RemindersArgs,
) -> Result<(), Failure> {
    for zone in &args.zones {
        zone.parse::<chrono_tz::Tz>().map_err(|_| {
            Failure::Usage(anyhow::anyhow!("--zone '{zone}' is not an IANA time zone"))
        })?;
    }
    let found = list_upcoming(store, clock.now(), args.within, &args.zones)
        .await
        .context("reading the contracts")?;
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        found
            .iter()
            .try_for_each(|entry| writeln!(out, "{}", json_line(entry)))
    } else {
        write_table(&mut out, &found)
    };
    written
        .and_then(|()| out.flush())
        .context("writing the list")?;
    Ok(())
}

/// What is coming, in words, and its date.
fn what(target: &ReminderTarget) -> &'static str {
    match target {
        ReminderTarget::Deadline { .. } => "cancellation deadline",
        ReminderTarget::End {
            cause: "cancellation",
            ..
        } => "end (cancelled)",
        ReminderTarget::End { .. } => "end of term",
    }
}

/// One contract as a JSON object: the fields of the table and the details of the reminder.
fn json_line(entry: &Upcoming) -> serde_json::Value {
    let mut line = json!({
        "ref": entry.reference,
        "customer": entry.customer,
        "time_zone": entry.time_zone,
        "today": entry.today,
        "kind": entry.kind.as_str(),
        "date": entry.target.date(),
        "days_left": entry.days_left,
    });
    let extra = match entry.target {
        ReminderTarget::Deadline {
            cancellation_date,
            extends_to,
            ..
        } => json!({ "cancellation_date": cancellation_date, "extends_to": extends_to }),
        ReminderTarget::End { cause, .. } => json!({ "cause": cause }),
    };
    if let (Some(line), Some(extra)) = (line.as_object_mut(), extra.as_object()) {
        line.extend(extra.clone());
    }
    line
}

/// The list as an aligned table.
fn write_table(out: &mut impl Write, found: &[Upcoming]) -> std::io::Result<()> {
    if found.is_empty() {
        return writeln!(out, "nothing within the window");
    }
    let rows: Vec<[String; 5]> = found
        .iter()
        .map(|entry| {
            [
                entry.reference.clone(),
                entry.customer.clone(),
                what(&entry.target).to_string(),
                entry.target.date().to_string(),
                entry.days_left.to_string(),
            ]
        })
        .collect();
    let header = ["REF", "CUSTOMER", "WHAT", "DATE", "DAYS LEFT"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let print = |out: &mut dyn Write, cells: [&str; 5]| {
        let line = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join("  ");
        writeln!(out, "{}", line.trim_end())
    };
    print(out, header)?;
    for row in &rows {
        print(out, [&row[0], &row[1], &row[2], &row[3], &row[4]])?;
    }
    Ok(())
}
