//! Upper bounds on what a workflow file or an API client may ask for.
//!
//! Each is far above real use and far below what would exhaust the leader
//! or overflow a clock or a sum; a value past one is refused with an error
//! that names the bound.

use std::time::Duration;

/// The largest workflow file read, in bytes (also for the copy stored in
/// the job store, which jobs can write to).
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// The most instances one scattered job may have.
pub const MAX_SCATTER: u64 = 1_000_000;

/// The longest time limit: a year and a day.
pub const MAX_TIME_LIMIT: Duration = Duration::from_secs(366 * 24 * 3600);

/// The most memory or disk one job may ask for: 1 PiB.
pub const MAX_BYTES: u64 = 1 << 50;

/// The most CPU one job may ask for, in millicores: 100,000 cores.
pub const MAX_MILLICORES: u32 = 100_000_000;

/// The most GPUs one job may ask for.
pub const MAX_GPUS: u32 = 4096;

/// The most jobs one `AddJobs` call may add.
pub const MAX_ADDED_JOBS: usize = 10_000;

/// Checks a time limit against [`MAX_TIME_LIMIT`].
pub fn check_time_limit(d: Duration) -> Result<Duration, String> {
    if d > MAX_TIME_LIMIT {
        return Err(format!(
            "a time limit of {} is longer than the longest allowed, 366 days",
            humantime::format_duration(d)
        ));
    }
    Ok(d)
}
