//! Checking values against CWL types.
