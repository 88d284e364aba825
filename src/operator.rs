//! Operator actions against a store: cancel (one or many contracts, or one line), end early,
//! revoke. Each action loads the contract (for a backdated cancellation also the extensions
//! in its history), plans the change with the pure functions of
//! [`crate::lifecycle::actions`] as of today in the contract's zone, and stores it in one
//! transaction guarded by the version it read (a concurrent change by the sweep makes it
//! re-read and re-plan, at most a few times). A dry run plans the same way and stores
//! nothing.

use chrono::{DateTime, NaiveDate, Utc};

use crate::clock::{business_date, unix_ms, Clock};
use crate::contract::record::InvalidContract;
use crate::contract::{Contract, Transition};
use crate::lifecycle::actions::{self, ActionError, CancelRequest, EndEarlyRequest, PastExtension};
use crate::lifecycle::reminders::reschedule;
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
    /// The stored row breaks the rules; fix it (import) before acting on it. The problems
    /// already name the contract, so the message does not name it again.
    #[error("contract '{}': the stored row breaks the rules: {}",
        .0.reference.as_deref().unwrap_or_default(), .0.problems())]
    InvalidRow(InvalidContract),
    /// The action's rules refused it; nothing changed.
    #[error(transparent)]
    Refused(#[from] ActionError),
    /// The contract kept changing under us.
    #[error("contract '{0}': changed concurrently {ATTEMPTS} times; try again")]
    Contended(String),
    /// The database failed; nothing changed. The storage error's text is part of the
    /// message (a bulk action prints one line per contract), so it is not also a `source()`:
    /// a printed chain names it once.
    #[error("contract '{reference}': {error}")]
    Storage {
        /// The contract's ref.
        reference: String,
        /// The storage error.
        error: StorageError,
    },
}

impl ActionFailure {
    /// Whether the failure is about the operator's input (exit 3) rather than the system (1).
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, ActionFailure::NotFound(_) | ActionFailure::Refused(_))
    }
}

/// Whether an action is stored or only planned (`--dry-run`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plan and store.
    Apply,
    /// Plan exactly as [`Mode::Apply`] would, and write nothing.
    DryRun,
}

/// What an action did to one contract (or, in a dry run, would do).
#[derive(Debug, Clone)]
pub struct ActionOutcome {
    /// The contract as it was read, before the action.
    pub before: Contract,
    /// The contract after the action and the events that explain it.
    pub transition: Transition,
    /// Whether it was stored (false in a dry run).
    pub written: bool,
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
    let step = Step {
        reference,
        today_of,
        now_ms,
        history: false,
        mode: Mode::Apply,
    };
    step.run(store, |contract, _, today| plan(contract, today))
        .await
        .map(|outcome| outcome.transition)
}

/// One action on one contract: how to find today, whether the plan needs the contract's
/// extensions, and whether to store the result.
struct Step<'a, T> {
    reference: &'a str,
    today_of: T,
    now_ms: i64,
    history: bool,
    mode: Mode,
}

/// A step as of the instant `now`: today is that instant's date in the contract's zone.
fn step_at(
    reference: &str,
    now: DateTime<Utc>,
    history: bool,
    mode: Mode,
) -> Step<'_, impl Fn(&Contract) -> NaiveDate> {
    Step {
        reference,
        today_of: move |contract: &Contract| business_date(now, contract.time_zone),
        now_ms: unix_ms(now),
        history,
        mode,
    }
}

impl<T: Fn(&Contract) -> NaiveDate> Step<'_, T> {
    /// Load the contract (and, when asked for, its extensions in force), plan, and store
    /// guarded by the version read, planning again when the contract changed meanwhile. A
    /// dry run plans the same way and stores nothing.
    async fn run<S, F>(&self, store: &S, mut plan: F) -> Result<ActionOutcome, ActionFailure>
    where
        S: ContractStore,
        F: FnMut(&Contract, &[PastExtension], NaiveDate) -> Result<Transition, ActionError>,
    {
        let reference = self.reference;
        let storage = |error| ActionFailure::Storage {
            reference: reference.to_string(),
            error,
        };
        for _ in 0..ATTEMPTS {
            let loaded = store
                .load_contract(reference)
                .await
                .map_err(storage)?
                .ok_or_else(|| ActionFailure::NotFound(reference.to_string()))?;
            let contract = loaded.contract.map_err(ActionFailure::InvalidRow)?;
            let extensions = if self.history {
                let events = store.events(reference).await.map_err(storage)?;
                PastExtension::in_force(events.iter().map(|event| {
                    (
                        event.kind.as_str(),
                        event.effective_on,
                        event.line_ref.as_deref(),
                        &event.details,
                    )
                }))
            } else {
                Vec::new()
            };
            let transition = plan(&contract, &extensions, (self.today_of)(&contract))?;
            if self.mode == Mode::DryRun {
                return Ok(ActionOutcome {
                    before: contract,
                    transition,
                    written: false,
                });
            }
            let change = ContractChange::new(
                loaded.id,
                loaded.version,
                &contract,
                transition.contract.clone(),
                transition.events.clone(),
            );
            let outcome = store
                .commit_batch(None, std::slice::from_ref(&change), self.now_ms)
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
                return Ok(ActionOutcome {
                    before: contract,
                    transition,
                    written: true,
                });
            }
        }
        Err(ActionFailure::Contended(reference.to_string()))
    }
}

/// Cancel each of `references` on its own, as of today in each contract's zone: one bad ref
/// does not stop the others. Each is weighed against the contract as it stood on the
/// received date, with the extensions since read from its history. The results come in the
/// order of `references`.
pub async fn cancel<S: ContractStore>(
    store: &S,
    clock: &dyn Clock,
    policy: RulePolicy,
    references: &[String],
    request: &CancelRequest,
    mode: Mode,
) -> Vec<Result<ActionOutcome, ActionFailure>> {
    let now = clock.now();
    let mut results = Vec::with_capacity(references.len());
    for reference in references {
        // The end date on the received date, which the extensions since tell.
        let step = step_at(reference, now, true, mode);
        results.push(
            step.run(store, |contract, extensions, today| {
                actions::cancel_with_history(contract, request, extensions, today, &policy)
                    .map(|transition| rescheduled(transition, &policy))
            })
            .await,
        );
    }
    results
}

/// End `reference` early on the request's end date.
pub async fn end<S: ContractStore>(
    store: &S,
    clock: &dyn Clock,
    policy: RulePolicy,
    reference: &str,
    request: &EndEarlyRequest,
    mode: Mode,
) -> Result<ActionOutcome, ActionFailure> {
    step_at(reference, clock.now(), false, mode)
        .run(store, |contract, _, today| {
            actions::end_early(contract, request, today, &policy)
                .map(|transition| rescheduled(transition, &policy))
        })
        .await
}

/// Revoke the pending cancellation of `reference`, or of its line `line`.
pub async fn revoke<S: ContractStore>(
    store: &S,
    clock: &dyn Clock,
    policy: RulePolicy,
    reference: &str,
    line: Option<&str>,
    mode: Mode,
) -> Result<ActionOutcome, ActionFailure> {
    step_at(reference, clock.now(), false, mode)
        .run(store, |contract, _, today| {
            actions::revoke(contract, line, today)
                .map(|transition| rescheduled(transition, &policy))
        })
        .await
}

/// The transition with the contract's next reminder scheduled for its new state, as every
/// write does (docs/rules.md §5.5).
pub fn rescheduled(mut transition: Transition, policy: &RulePolicy) -> Transition {
    reschedule(&mut transition.contract, &policy.reminder_lead_times);
    transition
}
