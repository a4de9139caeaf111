//! The terminal while a workflow runs: job output as it arrives, and (on a
//! terminal) one status line kept at the bottom, drawn through
//! [`crate::terminal`] so that log lines never tear it.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use toil_proto::v1::JobState;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::driver::Progress;
use crate::logs::EchoLine;

/// Renders `p` as `12/40 done · 4 running · 20 queued · 4 waiting · 1 failed`.
pub fn line(p: &Progress) -> String {
    let c = &p.counts;
    let done = c[JobState::Succeeded];
    let mut parts = vec![format!("{done}/{} done", p.total)];
    for (state, label) in [
        (JobState::Running, "running"),
        (JobState::Queued, "queued"),
        (JobState::Waiting, "waiting"),
        (JobState::Failed, "failed"),
        (JobState::Blocked, "blocked"),
        (JobState::Cancelled, "cancelled"),
    ] {
        let n = c[state];
        if n > 0 {
            parts.push(format!("{n} {label}"));
        }
    }
    parts.join(" · ")
}

fn elapsed(t: Instant) -> String {
    let s = t.elapsed().as_secs();
    format!("{}:{:02}", s / 60, s % 60)
}

/// Runs the display until `stop` fires and the echo channel is drained.
pub async fn run(
    name: String,
    mut progress: watch::Receiver<Progress>,
    mut echo: mpsc::Receiver<EchoLine>,
    stop: CancellationToken,
) {
    let tty = std::io::stderr().is_terminal();
    let term = crate::terminal::stderr();
    let t0 = Instant::now();
    let mut last_draw = Instant::now() - Duration::from_secs(1);
    let mut last_plain = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            l = echo.recv() => match l {
                Some(l) => term.around(|| print_line(&l)),
                None => break,
            },
            changed = progress.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        if tty && last_draw.elapsed() >= Duration::from_millis(100) {
            let p = progress.borrow().clone();
            term.draw_status(&format!("[{}] {name}: {}", elapsed(t0), line(&p)));
            last_draw = Instant::now();
        } else if !tty && last_plain.elapsed() >= Duration::from_secs(10) {
            let p = progress.borrow().clone();
            crate::say!("[{}] {name}: {}", elapsed(t0), line(&p));
            last_plain = Instant::now();
        }
    }
    while let Ok(l) = echo.try_recv() {
        term.around(|| print_line(&l));
    }
    term.clear_status();
}

/// Set when standard output is not for job output: `toil-cwl-runner`
/// prints only the output object there, so job output goes to stderr.
pub static ECHO_TO_STDERR: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Prints a batch of lines with one write: a flood of short lines written
/// a line at a time costs a system call each.
fn print_line(l: &EchoLine) {
    let mut text = String::with_capacity(l.text.len() + 16);
    for line in l.lines() {
        text.push('[');
        text.push_str(&l.job_id);
        text.push_str("] ");
        text.push_str(&crate::terminal::escape_controls(line));
        text.push('\n');
    }
    if ECHO_TO_STDERR.load(std::sync::atomic::Ordering::Relaxed) {
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    } else {
        let _ = std::io::stdout().lock().write_all(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_shows_only_what_is_there() {
        let mut p = Progress::default();
        p.counts[JobState::Succeeded] = 3;
        p.counts[JobState::Running] = 2;
        p.counts[JobState::Failed] = 1;
        p.total = 6;
        assert_eq!(line(&p), "3/6 done · 2 running · 1 failed");
    }
}
