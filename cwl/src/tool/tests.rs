//! Tests of the tool module: real commands in temporary directories.
