//! Workflow files: parsing, validation and the parsed form.

pub mod spec;
