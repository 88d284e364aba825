//! contractd: the lifecycle of recurring contracts.
pub mod calendar;
