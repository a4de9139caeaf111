//! Waiting for a condition instead of sleeping for a guessed time.
//!
//! Every wait in the tests goes through [`wait_for`] (or [`wait_for_async`]):
//! a slow or loaded machine only makes a test slower, never wrong, and a
//! condition that never comes fails the test with what was awaited and the
//! last value seen, never by carrying on as if it had come.
//!
//! This file uses only `std` and `tokio` so that the agent's integration
//! tests can include it with `#[path]` (see `agent/tests/cache_support`):
//! the agent cannot use the `toil-tests` library without compiling the
//! whole end-to-end stack (kube, the AWS SDK, the emulator) for its tests.

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

/// How often conditions are polled: short enough not to slow tests down,
/// long enough not to load the machine they wait for.
pub const POLL: Duration = Duration::from_millis(20);

/// Polls `check` until it returns `Ok`, and returns that value.
///
/// `check` returns `Err(observed)` while the condition does not hold; after
/// `timeout` the test panics with `what` and the last `observed` value, so a
/// failure says what the test was waiting for and how far it got.
pub fn wait_for<T, O: Debug>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, O>,
) -> T {
    let start = Instant::now();
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) if start.elapsed() >= timeout => timed_out(what, timeout, &last),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// [`wait_for`] for conditions that need `.await` (gRPC or Kubernetes API
/// calls); it sleeps on the tokio timer, never blocking the runtime.
pub async fn wait_for_async<T, O: Debug, F: Future<Output = Result<T, O>>>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> F,
) -> T {
    let start = Instant::now();
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) if start.elapsed() >= timeout => timed_out(what, timeout, &last),
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// `Ok(())` when `cond` holds, else `Err(observed)`: for conditions whose
/// interesting state is not the value waited for.
pub fn when<O>(cond: bool, observed: O) -> Result<(), O> {
    if cond { Ok(()) } else { Err(observed) }
}

fn timed_out(what: &str, timeout: Duration, last: &dyn Debug) -> ! {
    panic!("timed out after {timeout:?} waiting for {what}; last observed: {last:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_value_once_the_condition_holds() {
        let mut n = 0;
        let v = wait_for("n to reach 3", Duration::from_secs(5), || {
            n += 1;
            if n >= 3 { Ok(n * 10) } else { Err(n) }
        });
        assert_eq!(v, 30);
    }

    #[test]
    #[should_panic(expected = "waiting for the impossible; last observed: \"still 7\"")]
    fn times_out_naming_what_was_awaited_and_the_last_value() {
        wait_for::<(), _>("the impossible", Duration::from_millis(50), || {
            Err("still 7")
        });
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for a flag; last observed: false")]
    async fn the_async_variant_times_out_the_same_way() {
        wait_for_async::<(), _, _>("a flag", Duration::from_millis(50), || async {
            when(false, false)
        })
        .await;
    }
}
