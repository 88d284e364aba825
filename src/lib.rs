//! contractd: the lifecycle of recurring contracts.

#[macro_use]
mod text_enum;

pub mod calendar;
pub mod contract;
pub mod lifecycle;
pub mod storage;
pub mod clock;
pub mod config;
pub mod telemetry;
pub mod shutdown;
pub mod sweep;
