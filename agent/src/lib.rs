//! The toil agent.
pub mod cache;
