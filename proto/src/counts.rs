//! How many jobs are in each state, indexed by the state itself.
//!
//! The leader keeps one count per `JobState` for the progress line, the
//! closing summary, `GetWorkflow` and its own "is it finished" test. A bare
//! `[u64; 8]` indexed by `JobState as usize` let any integer in, and left
//! every reader to know which states are final; [`StateCounts`] takes only a
//! `JobState` and says that once.

use std::ops::{Index, IndexMut};

use crate::v1::JobState;

/// Every state a job can be in, in the enum's order (without UNSPECIFIED,
/// which is never a job's state).
pub const JOB_STATES: [JobState; 7] = [
    JobState::Waiting,
    JobState::Queued,
    JobState::Running,
    JobState::Succeeded,
    JobState::Failed,
    JobState::Blocked,
    JobState::Cancelled,
];

/// One slot per enum value, UNSPECIFIED included, so a state is its own
/// index.
const SLOTS: usize = JobState::Cancelled as usize + 1;

impl JobState {
    /// True for the states a job never leaves (SUCCEEDED, FAILED, BLOCKED,
    /// CANCELLED); only `--restart` takes a failed job back.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Blocked | JobState::Cancelled
        )
    }
}

/// Jobs per state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateCounts([u64; SLOTS]);

impl StateCounts {
    /// All jobs, whatever their state.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Jobs in a final state.
    pub fn finished(&self) -> u64 {
        self.iter()
            .filter(|(s, _)| s.is_final())
            .map(|(_, n)| n)
            .sum()
    }

    /// Jobs that still wait, queue or run.
    pub fn unfinished(&self) -> u64 {
        self.total() - self.finished()
    }

    /// Jobs that ended without succeeding (failed, blocked or cancelled).
    pub fn unsuccessful(&self) -> u64 {
        self.finished() - self[JobState::Succeeded]
    }

    /// Each state with its count, in the enum's order, zeros included.
    pub fn iter(&self) -> impl Iterator<Item = (JobState, u64)> + '_ {
        JOB_STATES.iter().map(|&s| (s, self[s]))
    }
}

impl Index<JobState> for StateCounts {
    type Output = u64;

    fn index(&self, s: JobState) -> &u64 {
        &self.0[s as usize]
    }
}

impl IndexMut<JobState> for StateCounts {
    fn index_mut(&mut self, s: JobState) -> &mut u64 {
        &mut self.0[s as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_has_a_slot() {
        // A state added to the proto must be added to JOB_STATES too.
        assert!(JobState::try_from(SLOTS as i32).is_err());
        assert_eq!(JOB_STATES.len(), SLOTS - 1);
        for (i, s) in JOB_STATES.iter().enumerate() {
            assert_eq!(*s as usize, i + 1);
        }
    }

    #[test]
    fn counts_add_up_by_kind_of_state() {
        let mut c = StateCounts::default();
        c[JobState::Waiting] = 4;
        c[JobState::Running] = 2;
        c[JobState::Succeeded] = 10;
        c[JobState::Failed] = 1;
        c[JobState::Blocked] = 3;
        assert_eq!(c.total(), 20);
        assert_eq!(c.finished(), 14);
        assert_eq!(c.unfinished(), 6);
        assert_eq!(c.unsuccessful(), 4);
        let nonzero: Vec<(JobState, u64)> = c.iter().filter(|(_, n)| *n > 0).collect();
        assert_eq!(
            nonzero,
            [
                (JobState::Waiting, 4),
                (JobState::Running, 2),
                (JobState::Succeeded, 10),
                (JobState::Failed, 1),
                (JobState::Blocked, 3)
            ]
        );
    }
}
