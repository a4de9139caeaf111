//! The Common Workflow Language (CWL) v1.2 front end.
//!
//! CWL documents are loaded and checked here ([`load`]), their expressions
//! evaluated ([`expr`]), a CommandLineTool's command line built and its
//! outputs collected ([`tool`]), and a Workflow's steps driven as their inputs
//! become available ([`workflow`]). Nothing here knows about the scheduler:
//! the leader runs each tool invocation as a job through the [`Executor`]
//! trait, and the agent uses [`tool`] to run one invocation on its node.
//!
//! Documents are kept as JSON values in a *normalized* form (see
//! `cwl/DESIGN.md`): every id absolute, every map-form list a list, every
//! type expanded. Every module after the loader relies on that form.

pub mod expr;
pub mod files;
pub mod load;
pub mod tool;
pub mod types;
pub mod workflow;

mod model;
#[cfg(test)]
mod spec;
pub use model::*;
