//! The real `contractd` binary run command by command, as operators use it, on SQLite and on
//! PostgreSQL: import and export, configuration, and the operator actions with the sweeps of
//! the following days.

#[path = "../support/mod.rs"]
pub mod support;

mod harness;

mod action_helpers;
mod actions;
mod backdated;
mod config;
mod import_export;
mod pgbouncer;
mod reminders;
mod webhooks;
