//! The toil agent.
