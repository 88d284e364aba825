//! Everything in-process through a `ContractStore`, on SQLite and on PostgreSQL, each test on
//! a brand-new database: the storage conformance suite, the outbox (feed and webhook
//! deliveries), the nightly sweep job by job, and a simulation of three years of daily sweeps
//! with operator actions in between.

#[path = "../support/mod.rs"]
pub mod support;

mod backdated;
mod conformance;
mod outbox;
mod pgbouncer;
mod reminder_simulation;
mod reminders;
mod simulation;
mod sweep;
