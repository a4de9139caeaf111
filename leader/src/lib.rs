//! The toil leader.

pub mod core;
pub mod workflow;
