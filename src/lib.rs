//! contractd: the lifecycle of recurring contracts.
//!
//! The library knows contracts, their rules, storage, the sweep and the daemon; it never sees
//! the command line. The binary (`src/main.rs` and `src/cli/`) parses arguments, calls the
//! library, prints results and chooses exit codes.

#[macro_use]
mod text_enum;

pub mod calendar;
pub mod clock;
pub mod config;
pub mod contract;
pub mod daemon;
pub mod lifecycle;
pub mod operator;
pub mod shutdown;
pub mod storage;
pub mod sweep;
pub mod telemetry;
pub mod transfer;
pub mod upcoming;
pub mod webhooks;

#[cfg(test)]
mod tidy;
