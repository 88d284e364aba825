//! contractd: the lifecycle of recurring contracts.

#[macro_use]
mod text_enum;

pub mod calendar;
pub mod contract;
pub mod lifecycle;
pub mod storage;
