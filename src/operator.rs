//! Operator actions from the command line: cancel (one or many contracts, or one line), end
//! early, revoke. Each action loads the contract, plans the change with the pure functions of
//! [`crate::lifecycle::actions`] as of today in the contract's zone, and stores it in one
//! transaction guarded by the version it read (a concurrent change by the sweep makes it
//! re-read and re-plan, at most a few times).

use chrono::NaiveDate;

use crate::cli::{CancelArgs, EndArgs, Failure, RevokeArgs};
use crate::clock::{business_date, unix_ms, Clock};
use crate::contract::{Contract, Transition};
use crate::lifecycle::actions::{self, ActionError, CancelRequest, EndEarlyRequest};
use crate::lifecycle::RulePolicy;
use crate::storage::{ContractChange, ContractStore, StorageError};

/// How often an action re-reads a contract that changed under it before giving up.
const ATTEMPTS: usize = 3;

/// Why an action on one contract did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ActionFailure {
    /// No contract has this ref.
    #[error("contract '{0}': no such contract")]
    NotFound(String),
    /// The stored row breaks the rules; fix it (import) before acting on it.
    #[error("contract '{reference}': the stored row breaks the rules: {reason}")]
    InvalidRow {
        /// The contract's ref.
        reference: String,
        /// Why.
        reason: String,
    },
    /// The action's rules refused it; nothing changed.
    #[error(transparent)]
    Refused(#[from] ActionError),
    /// The contract kept changing under us.
    #[error("contract '{0}': changed concurrently {ATTEMPTS} times; try again")]
    Contended(String),
    /// The database failed; nothing changed.
    #[error("contract '{reference}': {source}")]
    Storage {
        /// The contract's ref.
        reference: String,
        /// The storage error.
        source: StorageError,
    },
}

impl ActionFailure {
    /// Whether the failure is about the operator's input (exit 3) rather than the system (1).
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, ActionFailure::NotFound(_) | ActionFailure::Refused(_))
    }
}

/// Load `reference`, plan with `plan(contract, today)` where today is the clock's date in
/// the contract's zone, and store the transition. Returns the stored transition.
pub async fn apply<S, F>(
    store: &S,
    clock: &dyn Clock,
    reference: &str,
    plan: F,
) -> Result<Transition, ActionFailure>
where
    S: ContractStore,
    F: FnMut(&Contract, NaiveDate) -> Result<Transition, ActionError>,
{
    let now = clock.now();
    apply_on(
        store,
        reference,
        |contract| business_date(now, contract.time_zone),
        unix_ms(now),
        plan,
    )
    .await
}

/// [`apply`] with the business date chosen by `today_of` (simulations and rehearsals that
/// run every zone on one date) and the instant recorded on events given as `now_ms`.
pub async fn apply_on<S, T, F>(
    store: &S,
    reference: &str,
    today_of: T,
    now_ms: i64,
    mut plan: F,
) -> Result<Transition, ActionFailure>
where
    S: ContractStore,
    T: Fn(&Contract) -> NaiveDate,
    F: FnMut(&Contract, NaiveDate) -> Result<Transition, ActionError>,
{
    let storage = |source| ActionFailure::Storage {
        reference: reference.to_string(),
        source,
    };
    for _ in 0..ATTEMPTS {
        let loaded = store
            .load_contract(reference)
            .await
            .map_err(storage)?
            .ok_or_else(|| ActionFailure::NotFound(reference.to_string()))?;
        let contract = loaded.contract.map_err(|invalid| {
            // The reason names the contract itself; say so once.
            let text = invalid.to_string();
            let reason = text
                .strip_prefix(&format!("contract '{reference}': "))
                .unwrap_or(&text)
                .to_string();
            ActionFailure::InvalidRow {
                reference: reference.to_string(),
                reason,
            }
        })?;
        let transition = plan(&contract, today_of(&contract))?;
        let change = ContractChange::new(
            loaded.id,
            loaded.version,
            &contract,
            transition.contract.clone(),
            transition.events.clone(),
        );
        let outcome = store
            .commit_batch(None, std::slice::from_ref(&change), now_ms)
            .await
            .map_err(storage)?;
        if outcome.applied == 1 {
            for event in &transition.events {
                tracing::info!(
                    event = "action.applied",
                    action = event.kind.as_str(),
                    contract_ref = %reference,
                    line_ref = event.line_ref.as_deref().unwrap_or(""),
                    effective_on = %event.effective_on,
                    to_status = transition.contract.status.as_str(),
                );
            }
            return Ok(transition);
        }
    }
    Err(ActionFailure::Contended(reference.to_string()))
}

/// One line for people about a contract after an action.
fn describe(transition: &Transition) -> String {
    let contract = &transition.contract;
    let kinds: Vec<&str> = transition
        .events
        .iter()
        .map(|event| event.kind.as_str())
        .collect();
    let pending = contract
        .cancellation
        .as_ref()
        .map(|pending| {
            format!(
                ", ends {} (received {})",
                pending.end_date, pending.received_on
            )
        })
        .unwrap_or_default();
    let end = contract
        .end_date
        .map(|end| format!(", end date {end}"))
        .unwrap_or_default();
    format!(
        "{}: {} — status {}{end}{pending}",
        contract.reference,
        kinds.join(", "),
        contract.status
    )
}

/// Turn the per-contract results of a (bulk) action into output and an exit code: 0 when all
/// succeeded; otherwise 3 when every failure was the operator's input, else 1.
fn report(results: Vec<Result<Transition, ActionFailure>>) -> Result<(), Failure> {
    let mut input_failures = 0;
    let mut system_failures = 0;
    for result in &results {
        match result {
            Ok(transition) => println!("{}", describe(transition)),
            Err(failure) => {
                eprintln!("{failure}");
                if failure.is_invalid_input() {
                    input_failures += 1;
                } else {
                    system_failures += 1;
                }
            }
        }
    }
    let failed = input_failures + system_failures;
    if failed == 0 {
        return Ok(());
    }
    let message = anyhow::anyhow!(
        "{failed} of {} contract(s) not changed (see above)",
        results.len()
    );
    if system_failures > 0 {
        Err(Failure::Failed(message))
    } else {
        Err(Failure::InvalidInput(message))
    }
}

/// `contractd cancel REF…`: each ref on its own (one bad ref does not stop the others).
pub async fn cancel<S: ContractStore>(
    store: &S,
    clock: &dyn Clock,
    policy: RulePolicy,
    args: CancelArgs,
) -> Result<(), Failure> {
    let request = CancelRequest {
        received_on: args.received_on,
        end_date: args.end_date,
        reason: args.reason,
        notes: args.notes,
        line: args.line,
        override_notice: args.override_notice,
        immediately: args.immediately,
        final_invoice: args.final_invoice,
    };
    let mut results = Vec::with_capacity(args.references.len());
    for reference in &args.references {
        results.push(
            apply(store, clock, reference, |contract, today| {
                actions::cancel(contract, &request, today, &policy)
            })
            .await,
        );
    }
    report(results)
}

/// `contractd end REF --end-date D --reason R`.
pub async fn end<S: ContractStore>(
    store: &S,
    clock: &dyn Clock,
    mut policy: RulePolicy,
    args: EndArgs,
) -> Result<(), Failure> {
    policy.allow_end_before_billed_to |= args.allow_end_before_billed_to;
    let request = EndEarlyRequest {
        end_date: args.end_date,
        reason: args.reason,
        notes: args.notes,
    };
    let result = apply(store, clock, &args.reference, |contract, today| {
        actions::end_early(contract, &request, today, &policy)
    })
    .await;
    report(vec![result])
}

/// `contractd revoke REF [--line L]`.
pub async fn revoke<S: ContractStore>(
    store: &S,
    clock: &dyn Clock,
    args: RevokeArgs,
) -> Result<(), Failure> {
    let result = apply(store, clock, &args.reference, |contract, today| {
        actions::revoke(contract, args.line.as_deref(), today)
    })
    .await;
    report(vec![result])
}
