//! The toil agent.
pub mod cache;
pub mod images;
pub mod stage_cmd;
