//! The daily lifecycle rules of docs/rules.md §5 and the operator actions of §6, as pure
//! functions of (contract, business date).
//!
//! **Architecture invariant:** nothing here does I/O or reads a clock. Callers load the
//! contract, pass the business date in, and store the [`Transition`] that comes back.

pub mod actions;
pub mod billing;
pub mod reminders;
mod rules;

use chrono::NaiveDate;

use crate::calendar::previous_day;
use crate::contract::{Contract, ContractStatus, LeadTimes, Transition};

pub use rules::{
    auto_extend, execute_cancellations, execute_pending_cancellation,
    execute_pending_line_cancellation, expire, refresh_deadlines,
};

text_enum! {
    /// The five daily jobs, in the order they run for each (zone, business date).
    Job {
        /// Execute pending cancellations whose end date has passed.
        ExecuteCancellations => "execute_cancellations",
        /// Extend auto-extending contracts whose notice deadline passed without a cancellation.
        AutoExtend => "auto_extend",
        /// Expire contracts and lines past their end date.
        Expire => "expire",
        /// Recompute cancellation dates and deadlines whose deadline passed.
        RefreshDeadlines => "refresh_deadlines",
        /// Send the reminders before deadlines and end dates whose lead time has come.
        SendReminders => "send_reminders",
    }
}

/// Settings that change what a rule may do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RulePolicy {
    /// Allow an end date before the end of already billed periods; the billed difference is
    /// then credited with a draft credit note. Refused otherwise.
    pub allow_end_before_billed_to: bool,
    /// The configured reminder lead times (`reminders.lead_times`), for contracts without
    /// their own.
    pub reminder_lead_times: LeadTimes,
}

/// Why a rule that is due could not be applied to a contract (it is skipped and reported).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RuleRefusal {
    /// The field the refusal is about (e.g. `schedules[3]`).
    pub field: String,
    /// What blocks the rule and what would unblock it.
    pub message: String,
}

/// Apply one job's rule to one contract as of `business_date`. `Ok(None)`: nothing to do.
pub fn apply_job(
    job: Job,
    contract: &Contract,
    business_date: NaiveDate,
    policy: &RulePolicy,
) -> Result<Option<Transition>, RuleRefusal> {
    match job {
        Job::ExecuteCancellations => execute_cancellations(contract, business_date, policy),
        Job::AutoExtend => Ok(auto_extend(contract, business_date)),
        Job::Expire => Ok(expire(contract, business_date)),
        Job::RefreshDeadlines => Ok(refresh_deadlines(contract, business_date)),
        Job::SendReminders => Ok(reminders::send_reminders(
            contract,
            business_date,
            &policy.reminder_lead_times,
        )),
    }
}

/// For each job, the date after which a contract needs that job (the job examines it on
/// business date D when the due date is `< D`). Stored beside the contract so a job finds its
/// candidates with one indexed range query and never reads contracts with nothing due.
///
/// **Architecture invariant:** if [`apply_job`] would change a contract on date D (or refuse
/// to), then `DueDates::of(contract).for_job(job)` is `Some(d)` with `d < D`. Checked by the
/// property test in `tests/rules/lifecycle.rs`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DueDates {
    /// Earliest end date of a pending cancellation (contract or active line).
    pub cancellation: Option<NaiveDate>,
    /// The notice deadline of the end date of an auto-extending contract.
    pub extension: Option<NaiveDate>,
    /// Earliest end date that expiry acts on (contract without pending cancellation, or an
    /// active line; with a pending cancellation only lines ending before its end date).
    pub expiry: Option<NaiveDate>,
    /// The latest allowed cancellation date, after which the dates must be recomputed. `None`
    /// with a pending cancellation, and when it is null: no regular cancellation is left, which
    /// stays so as time passes (import and every transition compute the dates), so there is
    /// nothing to refresh.
    pub refresh: Option<NaiveDate>,
    /// The day before the contract's next reminder falls due (its computed
    /// `next_reminder_on`, set on every write with the lead times then in force).
    pub reminder: Option<NaiveDate>,
}

impl DueDates {
    /// The due dates of a contract in its current state.
    pub fn of(contract: &Contract) -> DueDates {
        let mut due = rules::due_dates(contract);
        if contract.status == ContractStatus::Active {
            due.reminder = contract.reminders.next_on.map(previous_day);
        }
        due
    }

    /// The due date of one job.
    pub fn for_job(&self, job: Job) -> Option<NaiveDate> {
        match job {
            Job::ExecuteCancellations => self.cancellation,
            Job::AutoExtend => self.extension,
            Job::Expire => self.expiry,
            Job::RefreshDeadlines => self.refresh,
            Job::SendReminders => self.reminder,
        }
    }
}
