//! The rules as functions, without a database or a process: the calendar (periods,
//! cancellation dates and deadlines, billing periods, proration), the daily jobs, the operator
//! actions and the billing effects, by worked example and by property; and the calendar
//! against PostgreSQL's own date arithmetic.

#[path = "../support/mod.rs"]
pub mod support;

mod actions;
mod billing_properties;
mod calendar;
mod calendar_properties;
mod calendar_vs_postgres;
mod export;
mod lifecycle;
mod reminders;
