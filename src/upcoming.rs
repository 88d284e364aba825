//! What `contractd reminders` lists: the contracts whose deadline or end date falls within a
//! window from today in each contract's zone (docs/rules.md §5.5). The rule is the pure
//! [`lifecycle::reminders::upcoming`]; this reads the contracts.

use chrono::{DateTime, Utc};

use crate::calendar::Period;
use crate::clock::business_date;
use crate::lifecycle::reminders::{upcoming, Upcoming};
use crate::storage::{ContractStore, StorageError};

/// Contracts read per page.
const PAGE: u32 = 1000;

/// Every active contract (of `zones`, or of every zone when empty) whose deadline or end date
/// lies within `within` of today in its zone as of `now`, soonest first (then by ref). Rows
/// that break the rules are left out, as export does. Reads every contract: an operator's
/// command, not a daily job.
pub async fn list_upcoming<S: ContractStore>(
    store: &S,
    now: DateTime<Utc>,
    within: Period,
    zones: &[String],
) -> Result<Vec<Upcoming>, StorageError> {
    let mut found = Vec::new();
    let mut after = 0;
    loop {
        let page = store.contracts_page(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for loaded in page {
            let Ok(contract) = loaded.contract else {
                continue;
            };
            if !zones.is_empty() && !zones.iter().any(|zone| zone == contract.time_zone.name()) {
                continue;
            }
            let today = business_date(now, contract.time_zone);
            if let Some(entry) = upcoming(&contract, today, within) {
                found.push(entry);
            }
        }
    }
    found.sort_by(|a, b| (a.days_left, &a.reference).cmp(&(b.days_left, &b.reference)));
    Ok(found)
}
