//! contractd: the lifecycle of recurring contracts.

#[macro_use]
mod text_enum;

pub mod calendar;
pub mod cli;
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
