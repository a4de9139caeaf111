//! One backoff for every retry loop in the workspace: the Kubernetes API
//! calls, the S3 loops, the agent's calls to the leader, its log stream and
//! its result write.
//!
//! Every loop waits the same way: the delay starts at [`Backoff::first`],
//! doubles for each further retry up to [`Backoff::max`], and each wait is
//! a random point between half and all of that ("equal jitter"), so many
//! callers that failed together spread out, yet none waits longer than the
//! cap. Only the budget differs from caller to caller ([`Budget`]): a number
//! of calls, a total of waiting, or none at all for a caller that stops by
//! its own clock. The delays come from `backon` (the crate kube-runtime
//! retries with), built in one place, [`Backoff::builder`]; this crate is
//! the one leader and agent both depend on, so it lives here.
//!
//! Two ways to use it: [`Backoff::retry`] runs a call until it succeeds,
//! the error is judged final, or the budget is spent; loops with state of
//! their own (a download that resumes where its body broke off) take the
//! delays one at a time from [`Backoff::delays`].

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::Retryable;
pub use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// How long a caller may keep retrying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    /// At most this many calls in all, the first included.
    Attempts(u32),
    /// Retries stop before the waits would add up past this (the time the
    /// calls themselves take is not counted).
    TotalDelay(Duration),
    /// No limit here: the caller stops by a clock of its own (the agent's
    /// lease on the leader, a log stream's closing grace).
    Unlimited,
}

/// A retry policy: how the delays grow and how long to go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The wait before the first retry (at most; at least half of it).
    pub first: Duration,
    /// The longest single wait.
    pub max: Duration,
    /// When to give up.
    pub budget: Budget,
}

/// What a retry loop does with a failed call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Worth another call after the policy's delay.
    Retry,
    /// Worth another call after the wait the server asked for (an HTTP
    /// `Retry-After`); it takes precedence over the policy's delay but
    /// still spends the budget.
    RetryAfter(Duration),
    /// Final: another call cannot help.
    Fail,
}

/// The last error of a call that was given up, and how many calls were made.
#[derive(Debug)]
pub struct GaveUp<E> {
    /// The error of the last call.
    pub error: E,
    /// Calls made in all, the first included.
    pub attempts: u32,
}

impl Backoff {
    /// A policy; a `const fn` so callers can name theirs as constants.
    pub const fn new(first: Duration, max: Duration, budget: Budget) -> Self {
        Backoff { first, max, budget }
    }

    /// The one place the delays are defined. `backon`'s jitter adds up to
    /// the whole delay again, so it is built on half the delays: waits fall
    /// between half and all of `first × 2ⁿ`, never above `max`.
    pub fn builder(&self) -> ExponentialBuilder {
        let max = self.max.max(self.first);
        let b = ExponentialBuilder::default()
            .with_jitter()
            .with_factor(2.0)
            .with_min_delay(self.first / 2)
            .with_max_delay(max / 2);
        match self.budget {
            Budget::Attempts(n) => b.with_max_times(n.saturating_sub(1) as usize),
            Budget::TotalDelay(total) => b.without_max_times().with_total_delay(Some(total)),
            Budget::Unlimited => b.without_max_times(),
        }
    }

    /// The waits before retry 1, 2, ...; `None` once the budget is spent.
    pub fn delays(&self) -> ExponentialBackoff {
        self.builder().build()
    }

    /// Calls `op` until it succeeds, `judge` calls an error final, or the
    /// budget is spent; `on_retry` hears about each failure that is retried
    /// (the error, the calls so far, the wait) so the caller can log it.
    pub async fn retry<T, E, F, Fut>(
        &self,
        mut op: F,
        judge: impl Fn(&E) -> Verdict,
        mut on_retry: impl FnMut(&E, u32, Duration),
    ) -> Result<T, GaveUp<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        // Atomic rather than a `Cell` so the future stays `Send`.
        let attempts = AtomicU32::new(0);
        let call = || {
            attempts.fetch_add(1, Ordering::Relaxed);
            op()
        };
        call.retry(self.builder())
            .when(|e| judge(e) != Verdict::Fail)
            // A spent budget (`None`) stays spent whatever the server asked.
            .adjust(|e, delay| match judge(e) {
                Verdict::RetryAfter(asked) => delay.map(|_| asked),
                _ => delay,
            })
            .notify(|e, wait| on_retry(e, attempts.load(Ordering::Relaxed), wait))
            .await
            .map_err(|error| GaveUp {
                error,
                attempts: attempts.load(Ordering::Relaxed),
            })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::cell::{Cell, RefCell};

    use tokio::time::Instant;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// An error that says how it should be judged.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Fault {
        Busy,
        SlowDown(u64),
        Refused,
    }

    fn judge(f: &Fault) -> Verdict {
        match f {
            Fault::Busy => Verdict::Retry,
            Fault::SlowDown(s) => Verdict::RetryAfter(Duration::from_secs(*s)),
            Fault::Refused => Verdict::Fail,
        }
    }

    /// Runs `policy` against a call that fails with `faults` in turn, then
    /// succeeds; returns the result, the calls made and the waits (measured
    /// on the paused clock, so they are the real sleeps).
    async fn run(policy: Backoff, faults: &[Fault]) -> (Result<u32, GaveUp<Fault>>, Vec<Duration>) {
        let calls = RefCell::new(Vec::<Instant>::new());
        let r = policy
            .retry(
                || {
                    calls.borrow_mut().push(Instant::now());
                    let n = calls.borrow().len();
                    let out = faults.get(n - 1).copied();
                    async move { out.map_or(Ok(n as u32), Err) }
                },
                judge,
                |_, _, _| {},
            )
            .await;
        let at = calls.into_inner();
        (r, at.windows(2).map(|w| w[1] - w[0]).collect())
    }

    #[tokio::test(start_paused = true)]
    async fn delays_double_with_jitter_up_to_the_cap() {
        let p = Backoff::new(100 * MS, 1000 * MS, Budget::Attempts(8));
        let (r, waits) = run(p, &[Fault::Busy; 7]).await;
        assert_eq!(
            r.unwrap(),
            8,
            "seven failures, then the eighth call succeeds"
        );
        // Unjittered: 100, 200, 400, 800, then capped at 1000; each wait
        // lies between half and all of that.
        let full = [100, 200, 400, 800, 1000, 1000, 1000];
        assert_eq!(waits.len(), full.len());
        for (w, f) in waits.iter().zip(full) {
            let f = f * MS;
            assert!(*w >= f / 2 && *w <= f, "{w:?} outside [{:?}, {f:?}]", f / 2);
        }
        // The same policy many times: the waits spread out, none above the cap.
        let mut d = Backoff::new(100 * MS, 1000 * MS, Budget::Unlimited).delays();
        let late: Vec<Duration> = d.by_ref().skip(10).take(200).collect();
        assert!(late.iter().all(|w| *w >= 500 * MS && *w <= 1000 * MS));
        assert!(
            late.iter().any(|w| *w != late[0]),
            "jitter spreads callers out"
        );
        assert!(d.next().is_some(), "an unlimited budget never runs out");
    }

    #[tokio::test(start_paused = true)]
    async fn budgets_stop_retrying() {
        // Attempts: the fourth failure of a four-call budget is final.
        let p = Backoff::new(10 * MS, 100 * MS, Budget::Attempts(4));
        let (r, waits) = run(p, &[Fault::Busy; 10]).await;
        let e = r.unwrap_err();
        assert_eq!((e.error, e.attempts, waits.len()), (Fault::Busy, 4, 3));
        // Total delay: waits stop before they would add up past it.
        let p = Backoff::new(
            100 * MS,
            100 * MS,
            Budget::TotalDelay(Duration::from_secs(1)),
        );
        let t0 = Instant::now();
        let (r, waits) = run(p, &[Fault::Busy; 100]).await;
        let e = r.unwrap_err();
        // The delays handed out add up to at most the budget; tokio's timer
        // rounds each sleep up to its next millisecond, so the clock may
        // pass the budget by up to 1 ms per wait.
        let slack = Duration::from_millis(waits.len() as u64);
        assert!(
            t0.elapsed() <= Duration::from_secs(1) + slack,
            "{:?} after {} waits",
            t0.elapsed(),
            waits.len()
        );
        assert!(
            (10..=20).contains(&waits.len()),
            "{} waits of 50..100 ms",
            waits.len()
        );
        assert_eq!(e.attempts as usize, waits.len() + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_takes_precedence_and_spends_the_budget() {
        let p = Backoff::new(100 * MS, 1000 * MS, Budget::Attempts(3));
        let (r, waits) = run(p, &[Fault::SlowDown(7), Fault::Busy]).await;
        assert_eq!(r.unwrap(), 3);
        assert_eq!(
            waits[0],
            Duration::from_secs(7),
            "the server's wait, not 50..100 ms"
        );
        assert!(
            waits[1] >= 100 * MS && waits[1] <= 200 * MS,
            "{:?}",
            waits[1]
        );
        // A Retry-After does not stretch the budget: the third failure is final.
        let (r, waits) = run(p, &[Fault::SlowDown(1); 5]).await;
        let e = r.unwrap_err();
        assert_eq!((e.error, e.attempts), (Fault::SlowDown(1), 3));
        assert_eq!(waits, vec![Duration::from_secs(1); 2]);
    }

    #[test]
    fn a_retry_can_be_spawned() {
        fn send<T: Send>(_: &T) {}
        let p = Backoff::new(MS, MS, Budget::Attempts(2));
        let fut = p.retry(|| async { Ok::<_, Fault>(()) }, judge, |_, _, _| {});
        send(&fut);
    }

    #[tokio::test(start_paused = true)]
    async fn final_errors_are_not_retried() {
        let p = Backoff::new(100 * MS, 1000 * MS, Budget::Unlimited);
        let t0 = Instant::now();
        let seen = RefCell::new(Vec::new());
        let calls = Cell::new(0);
        let r: Result<(), _> = p
            .retry(
                || {
                    calls.set(calls.get() + 1);
                    let f = if calls.get() < 3 {
                        Fault::Busy
                    } else {
                        Fault::Refused
                    };
                    async move { Err(f) }
                },
                judge,
                |e, n, _| seen.borrow_mut().push((*e, n)),
            )
            .await;
        let e = r.unwrap_err();
        assert_eq!((e.error, e.attempts), (Fault::Refused, 3));
        assert_eq!(
            seen.into_inner(),
            vec![(Fault::Busy, 1), (Fault::Busy, 2)],
            "the retried failures are reported with the calls so far; the final one is not"
        );
        assert!(t0.elapsed() < 300 * MS, "no wait after a final error");
        let (r, waits) = run(p, &[Fault::Refused, Fault::Busy]).await;
        assert_eq!((r.unwrap_err().attempts, waits.len()), (1, 0));
    }
}
