//! `contractd serve`: the daemon (being written).

use crate::cli::CommandContext;
use crate::clock::SharedClock;
use crate::storage::ContractStore;

/// Run the daemon until SIGTERM or SIGINT.
pub async fn serve<S: ContractStore>(
    store: S,
    context: CommandContext,
    clock: SharedClock,
) -> anyhow::Result<()> {
    let _ = (store, context, clock);
    anyhow::bail!("serve is not available yet")
}
