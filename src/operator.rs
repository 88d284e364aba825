//! Operator actions from the command line: cancel, end early, revoke (being written).

use crate::cli::{CancelArgs, EndArgs, Failure, RevokeArgs};
use crate::config::Settings;
use crate::lifecycle::RulePolicy;
use crate::storage::ContractStore;

/// `contractd cancel`.
pub async fn cancel<S: ContractStore>(
    store: &S,
    settings: &Settings,
    policy: RulePolicy,
    args: CancelArgs,
) -> Result<(), Failure> {
    let _ = (store, settings, policy, args);
    Err(Failure::Failed(anyhow::anyhow!(
        "cancel is not available yet"
    )))
}

/// `contractd end`.
pub async fn end<S: ContractStore>(
    store: &S,
    settings: &Settings,
    policy: RulePolicy,
    args: EndArgs,
) -> Result<(), Failure> {
    let _ = (store, settings, policy, args);
    Err(Failure::Failed(anyhow::anyhow!("end is not available yet")))
}

/// `contractd revoke`.
pub async fn revoke<S: ContractStore>(
    store: &S,
    settings: &Settings,
    args: RevokeArgs,
) -> Result<(), Failure> {
    let _ = (store, settings, args);
    Err(Failure::Failed(anyhow::anyhow!(
        "revoke is not available yet"
    )))
}
