//! The toil leader.

pub mod workflow;
