//! The four daily rules (SPEC section 5).

use chrono::NaiveDate;

use super::{DueDates, RulePolicy, RuleRefusal};
use crate::contract::{Contract, Transition};

pub(super) fn due_dates(contract: &Contract) -> DueDates {
    let _ = contract;
    todo!("issue 4")
}

/// Execute pending cancellations (contract and lines) whose end date is before `business_date`.
pub fn execute_cancellations(
    contract: &Contract,
    business_date: NaiveDate,
    policy: &RulePolicy,
) -> Result<Option<Transition>, RuleRefusal> {
    let _ = (contract, business_date, policy);
    todo!("issue 4")
}

/// Extend an auto-extending contract whose notice deadline is before `business_date`.
pub fn auto_extend(contract: &Contract, business_date: NaiveDate) -> Option<Transition> {
    let _ = (contract, business_date);
    todo!("issue 4")
}

/// Expire a contract (or its lines) whose end date is before `business_date`.
pub fn expire(contract: &Contract, business_date: NaiveDate) -> Option<Transition> {
    let _ = (contract, business_date);
    todo!("issue 4")
}

/// Recompute the cancellation date and deadline when the deadline is before `business_date`.
pub fn refresh_deadlines(contract: &Contract, business_date: NaiveDate) -> Option<Transition> {
    let _ = (contract, business_date);
    todo!("issue 4")
}
