//! `cancel`, `end` and `revoke`: call the operator actions, print one line per contract (in a
//! dry run followed by every change it would make), and add to a refusal the command line
//! that gets past it.

use contractd::calendar::Period;
use contractd::clock::Clock;
use contractd::contract::record::ContractRecord;
use contractd::contract::{Contract, Transition};
use contractd::lifecycle::actions::{ActionError, CancelRequest, EndEarlyRequest};
use contractd::lifecycle::RulePolicy;
use contractd::operator::{self, ActionFailure, ActionOutcome, Mode};
use contractd::storage::ContractStore;
use serde_json::Value;

use super::args::{CancelArgs, EndArgs, RevokeArgs};
use super::Failure;

/// `contractd cancel REF…`: each ref on its own (one bad ref does not stop the others).
pub async fn cancel<S: ContractStore>(
    store: &S,
    clock: &dyn Clock,
    policy: RulePolicy,
    max_backdate: Period,
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
        max_backdate: Some(max_backdate),
    };
    let mode = mode(args.dry_run);
    report(operator::cancel(store, clock, policy, &args.references, &request, mode).await)
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
    let mode = mode(args.dry_run);
    report(vec![
        operator::end(store, clock, policy, &args.reference, &request, mode).await,
    ])
}

/// `contractd revoke REF [--line L]`.
pub async fn revoke<S: ContractStore>(
    store: &S,
    clock: &dyn Clock,
    policy: RulePolicy,
    args: RevokeArgs,
) -> Result<(), Failure> {
    let mode = mode(args.dry_run);
    report(vec![
        operator::revoke(
            store,
            clock,
            policy,
            &args.reference,
            args.line.as_deref(),
            mode,
        )
        .await,
    ])
}

fn mode(dry_run: bool) -> Mode {
    if dry_run {
        Mode::DryRun
    } else {
        Mode::Apply
    }
}

/// Print the per-contract results of a (bulk) action and choose the exit code: 0 when all
/// succeeded; otherwise 3 when every failure was the operator's input, else 1. A dry run
/// prints, under each contract's line, every change it would make.
fn report(results: Vec<Result<ActionOutcome, ActionFailure>>) -> Result<(), Failure> {
    let mut input_failures = 0;
    let mut system_failures = 0;
    for result in &results {
        match result {
            Ok(outcome) if outcome.written => println!("{}", describe(&outcome.transition)),
            Ok(outcome) => {
                println!(
                    "dry run, nothing written: {}",
                    describe(&outcome.transition)
                );
                for change in changes(&outcome.before, &outcome.transition) {
                    println!("  {change}");
                }
            }
            Err(failure) => {
                eprintln!("{}", explain(failure));
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

/// Every change from `before` to the transition's contract, one line each, in the words of
/// the export format: the contract's fields that differ (`field: old -> new`), lines whose
/// fields differ, schedules and documents deleted, changed or added, then each event with
/// its effective date and details.
fn changes(before: &Contract, transition: &Transition) -> Vec<String> {
    let old = serde_json::to_value(ContractRecord::from_contract(before)).unwrap_or_default();
    let new = serde_json::to_value(ContractRecord::from_contract(&transition.contract))
        .unwrap_or_default();
    let mut lines = Vec::new();
    if let (Some(old), Some(new)) = (old.as_object(), new.as_object()) {
        for (field, new_value) in new {
            if matches!(field.as_str(), "lines" | "schedules" | "documents") {
                continue;
            }
            let old_value = old.get(field).unwrap_or(&Value::Null);
            if old_value != new_value {
                lines.push(format!("{field}: {old_value} -> {new_value}"));
            }
        }
    }
    let rows = |record: &Value, key: &str| -> Vec<Value> {
        record
            .get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    for (key, identity) in [
        ("lines", &["ref"][..]),
        ("schedules", &["line_ref", "period_start"][..]),
        ("documents", &["ref"][..]),
    ] {
        let key_of = |row: &Value| -> String {
            identity
                .iter()
                .map(|field| row.get(*field).map(Value::to_string).unwrap_or_default())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let (old_rows, new_rows) = (rows(&old, key), rows(&new, key));
        for row in &old_rows {
            match new_rows
                .iter()
                .find(|new_row| key_of(new_row) == key_of(row))
            {
                None => lines.push(format!("{key} deleted: {row}")),
                Some(new_row) if new_row != row => {
                    lines.push(format!("{key} changed: {row} -> {new_row}"));
                }
                Some(_) => {}
            }
        }
        for row in &new_rows {
            if !old_rows
                .iter()
                .any(|old_row| key_of(old_row) == key_of(row))
            {
                lines.push(format!("{key} added: {row}"));
            }
        }
    }
    for event in &transition.events {
        lines.push(format!(
            "event {} effective {}{}: {}",
            event.kind,
            event.effective_on,
            event
                .line_ref
                .as_deref()
                .map(|line| format!(" line {line}"))
                .unwrap_or_default(),
            event.details
        ));
    }
    lines
}

/// Why an action did not happen, with what to type to get past a refusal where there is such
/// a command.
fn explain(failure: &ActionFailure) -> String {
    match failure {
        ActionFailure::Refused(refusal) => refusal_with_hint(refusal),
        other => other.to_string(),
    }
}

/// A refusal of the rules in the command line's words: the rules say what blocks the action
/// in the domain's terms; this adds the command or flag that does what they ask.
fn refusal_with_hint(refusal: &ActionError) -> String {
    let message = refusal.to_string();
    match refusal {
        ActionError::CancellationPending { contract, .. } => {
            format!("{message} (contractd revoke {contract})")
        }
        ActionError::LineCancellationPending { contract, line, .. } => {
            format!("{message} (contractd revoke {contract} --line {line})")
        }
        ActionError::ImmediatelyWithEndDate {
            contract,
            end_date,
            today,
        } => format!(
            "contract '{contract}': end_date {end_date} conflicts with --immediately, which ends \
             the contract today ({today}); give one or the other"
        ),
        ActionError::NoRegularCancellation { .. } => {
            format!("{message}; use --override to cancel anyway")
        }
        ActionError::NoticeMissed { next: None, .. }
        | ActionError::NotPossibleEndDate { next: None, .. } => {
            format!("{message} (use --override)")
        }
        ActionError::BeforeMinimumTerm { .. } => {
            format!("{message}; use --override to end it earlier")
        }
        ActionError::ReasonRequired { .. } => format!("{message} (--reason)"),
        ActionError::ReceivedTooLongAgo { .. } => format!("{message} (use --override)"),
        _ => message,
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    fn date(text: &str) -> NaiveDate {
        text.parse().expect("a date")
    }

    /// The hints read exactly as the rules' messages did before the command line took them
    /// over, so operators and their scripts see the same text.
    #[test]
    fn refusals_name_the_command_that_gets_past_them() {
        let pending = ActionError::CancellationPending {
            contract: "C-1".into(),
            end_date: date("2025-12-31"),
        };
        assert_eq!(
            refusal_with_hint(&pending),
            "contract 'C-1': cancellation: a cancellation ending 2025-12-31 is already pending; \
             revoke it first (contractd revoke C-1)"
        );
        let line = ActionError::LineCancellationPending {
            contract: "C-1".into(),
            line: "L1".into(),
            end_date: date("2025-12-31"),
        };
        assert!(refusal_with_hint(&line).ends_with("(contractd revoke C-1 --line L1)"));
        let none_left = ActionError::NoRegularCancellation {
            contract: "C-1".into(),
            line: None,
            received_on: date("2025-12-01"),
        };
        assert_eq!(
            refusal_with_hint(&none_left),
            "contract 'C-1': end_date: no regular cancellation is possible any more as of \
             2025-12-01 (the last notice deadline has passed and the contract does not \
             auto-extend; it simply expires at its end date); use --override to cancel anyway"
        );
        let missed = ActionError::NoticeMissed {
            contract: "C-1".into(),
            line: None,
            end_date: date("2025-12-31"),
            deadline: date("2025-11-30"),
            received_on: date("2025-12-01"),
            next: None,
        };
        assert!(refusal_with_hint(&missed)
            .ends_with("; no later end date can be reached any more (use --override)"));
        let minimum = ActionError::BeforeMinimumTerm {
            contract: "C-1".into(),
            line: None,
            end_date: date("2025-06-30"),
            minimum_term_end: date("2025-12-31"),
        };
        assert!(refusal_with_hint(&minimum).ends_with("; use --override to end it earlier"));
        let immediately = ActionError::ImmediatelyWithEndDate {
            contract: "C-1".into(),
            end_date: date("2025-12-31"),
            today: date("2025-12-01"),
        };
        assert!(refusal_with_hint(&immediately).contains("conflicts with --immediately"));
    }

    /// The rules themselves never write command-line syntax.
    #[test]
    fn the_rules_messages_name_no_command() {
        let pending = ActionError::CancellationPending {
            contract: "C-1".into(),
            end_date: date("2025-12-31"),
        };
        assert!(!pending.to_string().contains("contractd"));
        let minimum = ActionError::BeforeMinimumTerm {
            contract: "C-1".into(),
            line: None,
            end_date: date("2025-06-30"),
            minimum_term_end: date("2025-12-31"),
        };
        assert!(!minimum.to_string().contains("--"));
    }
}
