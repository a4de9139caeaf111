//! What happens after an attempt fails: which budget a cause spends, and how
//! long to wait before the next attempt.

use std::time::Duration;

use toil_proto::v1::CauseKind;

/// How a cause is treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// The job worked.
    Success,
    /// The job's own failure: spends a user retry (`--retryCount`).
    User,
    /// The platform's failure: spends the separate infrastructure budget, so
    /// a preempted job does not lose the user's retries.
    Infra,
    /// Retrying cannot help (bad image, unschedulable, bad config): fail now
    /// with the platform's own message.
    Fatal,
    /// Somebody asked for it to stop.
    Cancelled,
}

/// Classifies a cause.
pub fn classify(kind: CauseKind) -> Class {
    use CauseKind::*;
    match kind {
        Succeeded => Class::Success,
        ExitCode | OomKilled | DeadlineExceeded | Signaled | OutputMissing => Class::User,
        Evicted | Preempted | NodeLost | AgentLost | StagingFailed => Class::Infra,
        Unschedulable | ImagePull | ConfigError | PodStartTimeout | Unspecified => Class::Fatal,
        Cancelled => Class::Cancelled,
    }
}

/// Retry settings for a workflow.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts lost to infrastructure causes that are retried per job.
    pub infra_retries: u32,
    /// First back-off after a user failure; doubles each time.
    pub base_backoff: Duration,
    /// Longest back-off.
    pub max_backoff: Duration,
    /// On OOM_KILLED, retry with this factor more memory (0 or 1: no change).
    pub oom_memory_factor: f64,
    /// Never ask for more memory than this on an OOM retry.
    pub oom_memory_cap: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            infra_retries: 5,
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            oom_memory_factor: 2.0,
            oom_memory_cap: u64::MAX,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `n` (1 for the first retry) of the job's
    /// own failures: base × 2^(n-1), capped.
    pub fn user_backoff(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.base_backoff
            .checked_mul(factor)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }

    /// The memory for the next attempt after an out-of-memory kill.
    pub fn oom_memory(&self, current: u64) -> u64 {
        if self.oom_memory_factor <= 1.0 {
            return current;
        }
        let next = (current as f64 * self.oom_memory_factor) as u64;
        next.min(self.oom_memory_cap).max(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_spend_the_right_budget() {
        for (kind, class) in [
            (CauseKind::Succeeded, Class::Success),
            (CauseKind::ExitCode, Class::User),
            (CauseKind::OomKilled, Class::User),
            (CauseKind::Signaled, Class::User),
            (CauseKind::DeadlineExceeded, Class::User),
            (CauseKind::OutputMissing, Class::User),
            (CauseKind::Evicted, Class::Infra),
            (CauseKind::Preempted, Class::Infra),
            (CauseKind::NodeLost, Class::Infra),
            (CauseKind::AgentLost, Class::Infra),
            (CauseKind::StagingFailed, Class::Infra),
            (CauseKind::Unschedulable, Class::Fatal),
            (CauseKind::ImagePull, Class::Fatal),
            (CauseKind::ConfigError, Class::Fatal),
            (CauseKind::PodStartTimeout, Class::Fatal),
            (CauseKind::Cancelled, Class::Cancelled),
        ] {
            assert_eq!(classify(kind), class, "{kind:?}");
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy {
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(3),
            ..RetryPolicy::default()
        };
        let got: Vec<u128> = (1..=5).map(|n| p.user_backoff(n).as_millis()).collect();
        assert_eq!(got, vec![500, 1000, 2000, 3000, 3000]);
        assert_eq!(p.user_backoff(200), Duration::from_secs(3));
    }

    #[test]
    fn oom_memory_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            oom_memory_cap: 3 << 30,
            ..RetryPolicy::default()
        };
        assert_eq!(p.oom_memory(1 << 30), 2 << 30);
        assert_eq!(p.oom_memory(2 << 30), 3 << 30);
        assert_eq!(p.oom_memory(3 << 30), 3 << 30);
        let off = RetryPolicy {
            oom_memory_factor: 1.0,
            ..RetryPolicy::default()
        };
        assert_eq!(off.oom_memory(100), 100);
    }
}
