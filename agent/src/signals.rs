//! The signals that ask a process to stop, for the agent and the leader
//! alike (the leader embeds this crate).
//!
//! Both treat SIGINT (Ctrl-C) and SIGTERM (what Kubernetes sends a pod it
//! deletes) as "stop now, cleanly": the agent kills its job and reports,
//! the leader stops its agents and keeps the job store for `--restart`.

use tokio::signal::unix::{SignalKind, signal};

/// Which signal asked the process to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGINT: Ctrl-C at a terminal.
    Interrupt,
    /// SIGTERM: a service manager, `kill`, or Kubernetes deleting a pod.
    Terminate,
}

impl StopSignal {
    /// What happened, as the leader tells the user: `interrupted (SIGINT)`.
    pub fn describe(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "interrupted (SIGINT)",
            StopSignal::Terminate => "terminated (SIGTERM)",
        }
    }
}

/// Waits for the first SIGINT or SIGTERM.
///
/// The handlers are installed when this is first polled, and from then on
/// the default action (ending the process at once) no longer applies: a
/// caller spawns this early and stops cleanly when it returns. An error
/// means the handlers could not be installed, so the process keeps the
/// default action.
pub async fn stop_signal() -> std::io::Result<StopSignal> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = int.recv() => Ok(StopSignal::Interrupt),
        _ = term.recv() => Ok(StopSignal::Terminate),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_signal_to_this_process_is_reported_by_name() {
        let waiting = tokio::spawn(stop_signal());
        // Let the task install its handlers before the signal is sent.
        tokio::task::yield_now().await;
        for _ in 0..100 {
            if waiting.is_finished() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM);
        }
        let got = waiting.await.expect("the waiting task ends");
        assert_eq!(got.expect("handlers installed"), StopSignal::Terminate);
        assert_eq!(StopSignal::Terminate.describe(), "terminated (SIGTERM)");
    }
}
