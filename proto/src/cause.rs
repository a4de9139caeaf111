//! One way to build a `Cause`, and one way to put it into words.
//!
//! The agent, the leader's driver, its Kubernetes batch system and its
//! restart path all end attempts; building the message by hand in each of
//! them let the same ending drift into different shapes (an `EXIT_CODE`
//! with or without its status, an `AGENT_LOST` with a code). The
//! constructors here are the only place that decides what each kind
//! carries, and [`Cause`]'s `Display` is the only place that says it to a
//! person (the terminal summary, `status`, the leader's log).

use std::fmt;

use crate::v1::{AttemptResult, Cause, CauseKind};

/// The message an `EXIT_CODE` cause carries; [`Cause`]'s `Display` leaves
/// it out because the label says the same.
fn exit_message(code: i32) -> String {
    format!("the command exited with status {code}")
}

impl Cause {
    /// A cause of `kind` in the words of whoever detected it (the
    /// scheduler's message, the engine's error), with no code.
    pub fn new(kind: CauseKind, message: impl Into<String>) -> Cause {
        Cause::with_code(kind, 0, message)
    }

    /// A cause with a code: the exit status for `EXIT_CODE`, the signal for
    /// `SIGNALED`, 137 for an `OOM_KILLED` whose kill was seen.
    pub fn with_code(kind: CauseKind, code: i32, message: impl Into<String>) -> Cause {
        Cause {
            kind: kind as i32,
            code,
            message: message.into(),
        }
    }

    /// The command exited with status 0 and every declared output was found.
    pub fn succeeded() -> Cause {
        Cause::new(CauseKind::Succeeded, "")
    }

    /// The command exited with non-zero status `code`.
    pub fn exit_code(code: i32) -> Cause {
        Cause::with_code(CauseKind::ExitCode, code, exit_message(code))
    }

    /// The command was killed by `signal` (not by the out-of-memory killer).
    pub fn signaled(signal: i32) -> Cause {
        Cause::with_code(
            CauseKind::Signaled,
            signal,
            format!("killed by signal {signal}"),
        )
    }

    /// The agent stopped reporting, was stopped from outside, or its leader
    /// went away: an infrastructure cause that does not spend user retries.
    pub fn agent_lost(message: impl Into<String>) -> Cause {
        Cause::new(CauseKind::AgentLost, message)
    }

    /// The job cannot run as configured; retrying does not help.
    pub fn config_error(message: impl Into<String>) -> Cause {
        Cause::new(CauseKind::ConfigError, message)
    }

    /// A user or the leader cancelled the job.
    pub fn cancelled(message: impl Into<String>) -> Cause {
        Cause::new(CauseKind::Cancelled, message)
    }
}

impl AttemptResult {
    /// The result of an attempt whose command gave no exit status (it never
    /// ran, or the leader or the platform ended it): only the cause is
    /// known, and `exit_code` is -1 as the protocol asks.
    pub fn ended(cause: Cause) -> AttemptResult {
        AttemptResult {
            cause: Some(cause),
            exit_code: -1,
            ..Default::default()
        }
    }
}

impl CauseKind {
    /// The kind in a few words, as the terminal shows it.
    fn label(self, code: i32) -> String {
        match self {
            CauseKind::Succeeded => "succeeded".into(),
            CauseKind::ExitCode => format!("exit code {code}"),
            CauseKind::OomKilled => "out of memory (OOM_KILLED)".into(),
            CauseKind::Unschedulable => "unschedulable".into(),
            CauseKind::ImagePull => "image pull failed".into(),
            CauseKind::Evicted => "evicted".into(),
            CauseKind::Preempted => "preempted".into(),
            CauseKind::NodeLost => "node lost".into(),
            CauseKind::AgentLost => "agent lost".into(),
            CauseKind::DeadlineExceeded => "time limit exceeded".into(),
            CauseKind::Cancelled => "cancelled".into(),
            CauseKind::ConfigError => "configuration error".into(),
            CauseKind::Signaled => format!("killed by signal {code}"),
            CauseKind::OutputMissing => "declared output missing".into(),
            CauseKind::StagingFailed => "staging failed".into(),
            CauseKind::PodStartTimeout => "pod never started".into(),
            CauseKind::Unspecified => "unknown".into(),
        }
    }
}

/// A cause in words: `exit code 3`, `unschedulable: 0/3 nodes are
/// available`. The message follows the label unless it only repeats it.
impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.kind();
        let label = kind.label(self.code);
        let repeats = self.message.is_empty()
            || kind == CauseKind::Succeeded
            || (kind == CauseKind::ExitCode
                && self.message.starts_with("the command exited with status"))
            || (kind == CauseKind::Signaled && self.message == label);
        if repeats {
            f.write_str(&label)
        } else {
            write!(f, "{label}: {}", self.message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_fill_the_fields_each_kind_needs() {
        let c = Cause::exit_code(3);
        assert_eq!((c.kind(), c.code), (CauseKind::ExitCode, 3));
        assert_eq!(c.message, "the command exited with status 3");
        let s = Cause::signaled(15);
        assert_eq!((s.kind(), s.code), (CauseKind::Signaled, 15));
        let lost = Cause::agent_lost("no report for 30 s");
        assert_eq!(
            (lost.kind(), lost.code, lost.message.as_str()),
            (CauseKind::AgentLost, 0, "no report for 30 s")
        );
        let r = AttemptResult::ended(Cause::cancelled("by a client"));
        assert_eq!(r.exit_code, -1);
        assert_eq!(r.cause.map(|c| c.kind()), Some(CauseKind::Cancelled));
    }

    #[test]
    fn causes_read_well() {
        assert_eq!(Cause::exit_code(3).to_string(), "exit code 3");
        assert_eq!(Cause::signaled(15).to_string(), "killed by signal 15");
        assert_eq!(Cause::succeeded().to_string(), "succeeded");
        assert_eq!(
            Cause::new(CauseKind::Unschedulable, "0/3 nodes are available").to_string(),
            "unschedulable: 0/3 nodes are available"
        );
        assert_eq!(
            Cause::with_code(CauseKind::OomKilled, 137, "asked for 64 MiB").to_string(),
            "out of memory (OOM_KILLED): asked for 64 MiB"
        );
        // An exit code with a message of its own keeps it.
        assert_eq!(
            Cause::with_code(CauseKind::ExitCode, 1, "assertion failed").to_string(),
            "exit code 1: assertion failed"
        );
        // A kind this build does not know still reads as something.
        let unknown = Cause {
            kind: 99,
            code: 0,
            message: String::new(),
        };
        assert_eq!(unknown.to_string(), "unknown");
    }
}
