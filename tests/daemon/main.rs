//! `contractd serve` as a process: the endpoints, metrics and systemd notifications of a
//! running daemon, interruptions by signals in the middle of a sweep, and PostgreSQL with
//! several replicas and a database that goes away.

#[path = "../support/mod.rs"]
pub mod support;

mod harness;

mod endpoints;
mod interruptions;
mod pgbouncer;
mod postgres;
mod webhooks;
