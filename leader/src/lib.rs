//! The toil leader.

pub mod batch;
pub mod core;
pub mod driver;
pub mod events;
pub mod logs;
pub mod persist;
pub mod server;
pub mod workflow;
