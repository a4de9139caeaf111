//! File and Directory objects.
