//! The leader's stderr, shared by log lines and the live status line.
//!
//! On a terminal the progress display keeps one status line at the bottom
//! (redrawn in place with `\r`). A log line written over it would tear it:
//! the status would be left half-overwritten, or the log line would start
//! in its middle. So every write goes through one lock here: a log line
//! clears the status line, is written whole, and the status line is drawn
//! again under it.
//!
//! Messages meant for the user (`workflow ... succeeded`, the restart hint)
//! are tracing events with the target [`USER`]; [`UserFormat`] prints them
//! as bare lines, as they always looked, and every other event in the usual
//! `fmt` format.

use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// The tracing target of messages written for the user, printed without
/// time, level or target.
pub const USER: &str = "toil";

/// Clears the line the cursor is on and returns to its start.
const CLEAR: &[u8] = b"\r\x1b[2K";

/// stderr (or, in tests, any writer) and the status line drawn on it.
pub struct Terminal<W: Write + Send = io::Stderr> {
    inner: Mutex<State<W>>,
}

struct State<W> {
    out: W,
    /// The status line as last drawn, while it is on screen.
    status: Option<String>,
}

/// The process's stderr, one per process so that one lock covers every
/// writer of it.
pub fn stderr() -> Arc<Terminal> {
    static STDERR: OnceLock<Arc<Terminal>> = OnceLock::new();
    STDERR
        .get_or_init(|| Arc::new(Terminal::new(io::stderr())))
        .clone()
}

/// Writes a message for the user: a bare line on stderr, above the status
/// line (a tracing event with the target [`USER`]).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        ::tracing::info!(target: "toil", $($arg)*)
    };
}

impl<W: Write + Send> Terminal<W> {
    /// A terminal writing to `out`.
    pub fn new(out: W) -> Self {
        Terminal {
            inner: Mutex::new(State { out, status: None }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<W>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Draws `line` as the status line, replacing the one shown.
    pub fn draw_status(&self, line: &str) {
        let mut s = self.lock();
        let _ = s.out.write_all(CLEAR);
        let _ = s.out.write_all(line.as_bytes());
        let _ = s.out.flush();
        s.status = Some(line.to_string());
    }

    /// Removes the status line (at the end, or before other output).
    pub fn clear_status(&self) {
        let mut s = self.lock();
        if s.status.take().is_some() {
            let _ = s.out.write_all(CLEAR);
            let _ = s.out.flush();
        }
    }

    /// Writes whole lines above the status line: clears it, writes `bytes`
    /// and draws it again, all under the lock.
    pub fn write_lines(&self, bytes: &[u8]) {
        let mut s = self.lock();
        let State { out, status } = &mut *s;
        if status.is_some() {
            let _ = out.write_all(CLEAR);
        }
        let _ = out.write_all(bytes);
        if !bytes.ends_with(b"\n") {
            let _ = out.write_all(b"\n");
        }
        if let Some(line) = status {
            let _ = out.write_all(line.as_bytes());
        }
        let _ = out.flush();
    }

    /// Runs `f` with the status line cleared (output to another stream
    /// that shares the screen, such as a job's lines on stdout), then
    /// draws the status line again.
    pub fn around<R>(&self, f: impl FnOnce() -> R) -> R {
        let mut s = self.lock();
        let State { out, status } = &mut *s;
        if status.is_some() {
            let _ = out.write_all(CLEAR);
            let _ = out.flush();
        }
        let r = f();
        if let Some(line) = status {
            let _ = out.write_all(line.as_bytes());
            let _ = out.flush();
        }
        r
    }

    /// The writer itself, for tests.
    #[cfg(test)]
    fn with_out<R>(&self, f: impl FnOnce(&W) -> R) -> R {
        f(&self.lock().out)
    }
}

/// One event's bytes, written to the terminal whole when dropped.
pub struct LineWriter<'a, W: Write + Send> {
    terminal: &'a Terminal<W>,
    buf: Vec<u8>,
}

impl<W: Write + Send> Write for LineWriter<'_, W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send> Drop for LineWriter<'_, W> {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.terminal.write_lines(&self.buf);
        }
    }
}

/// Makes a [`LineWriter`] per event for `tracing_subscriber::fmt`.
#[derive(Clone)]
pub struct TerminalWriter<W: Write + Send + 'static = io::Stderr>(pub Arc<Terminal<W>>);

impl<'a, W: Write + Send + 'static> MakeWriter<'a> for TerminalWriter<W> {
    type Writer = LineWriter<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            terminal: &self.0,
            buf: Vec::new(),
        }
    }
}

/// Bare lines for the user's messages, the usual format for the rest.
pub struct UserFormat {
    full: format::Format,
}

impl UserFormat {
    /// The format, with `fmt`'s defaults for events not meant for the user.
    pub fn new() -> Self {
        UserFormat {
            full: format::Format::default(),
        }
    }
}

impl Default for UserFormat {
    fn default() -> Self {
        UserFormat::new()
    }
}

impl<S, N> FormatEvent<S, N> for UserFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        if event.metadata().target() == USER {
            ctx.format_fields(w.by_ref(), event)?;
            return writeln!(w);
        }
        self.full.format_event(ctx, w, event)
    }
}

/// `text` with every control character but tab written out as an escape
/// (`\x1b`, `\u{9b}`), for printing what a job wrote: raw escape sequences
/// from a job could retitle, clear or rewrite the user's terminal, or hide
/// lines of the leader's own output.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\t' => out.push(c),
            c if c.is_control() && (c as u32) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_line_clears_the_status_line_and_draws_it_again() {
        let t = Terminal::new(Vec::new());
        t.write_lines(b"before any status\n");
        t.draw_status("[0:01] hello: 0/5 done");
        t.draw_status("[0:02] hello: 1/5 done · 1 running");
        // A log event arrives through the tracing writer in pieces.
        {
            let w = TerminalWriter(Arc::new(Terminal::new(Vec::new())));
            let mut line = w.make_writer();
            line.write_all(b"WARN toil_leader: ").expect("buffer");
            line.write_all(b"something happened\n").expect("buffer");
            w.0.with_out(|o| assert!(o.is_empty(), "nothing written before the event ends"));
            drop(line);
            w.0.with_out(|o| assert_eq!(o, b"WARN toil_leader: something happened\n"));
        }
        t.write_lines(b"a log line");
        t.around(|| {});
        t.clear_status();
        t.clear_status();
        let out = t.with_out(|o| String::from_utf8(o.clone()).expect("utf-8"));
        assert_eq!(
            out,
            concat!(
                "before any status\n",
                "\r\x1b[2K[0:01] hello: 0/5 done",
                "\r\x1b[2K[0:02] hello: 1/5 done · 1 running",
                // The log line: status cleared, line whole, status again.
                "\r\x1b[2Ka log line\n[0:02] hello: 1/5 done · 1 running",
                // Output on another stream: cleared around it.
                "\r\x1b[2K[0:02] hello: 1/5 done · 1 running",
                // Cleared once at the end.
                "\r\x1b[2K",
            )
        );
    }

    #[test]
    fn lines_from_many_threads_never_interleave() {
        let t = Arc::new(Terminal::new(Vec::new()));
        t.draw_status("status");
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let w = TerminalWriter(t.clone());
                std::thread::spawn(move || {
                    for n in 0..50 {
                        let mut line = w.make_writer();
                        let _ = write!(line, "thread {i} ");
                        let _ = writeln!(line, "line {n}");
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().expect("thread");
        }
        let out = t.with_out(|o| String::from_utf8(o.clone()).expect("utf-8"));
        let lines: Vec<&str> = out.split("\r\x1b[2K").filter(|s| !s.is_empty()).collect();
        // The first piece is the status line, then one piece per log line:
        // the whole line followed by the status line.
        assert_eq!(lines.len(), 1 + 200);
        for piece in &lines[1..] {
            let (line, status) = piece.split_once('\n').expect("a whole line");
            assert!(
                line.starts_with("thread ") && line.contains(" line "),
                "{line}"
            );
            assert_eq!(status, "status");
        }
    }

    #[test]
    fn control_characters_from_jobs_are_shown_escaped() {
        assert_eq!(escape_controls("plain\ttext"), "plain\ttext");
        assert_eq!(
            escape_controls("\x1b]0;pwned\x07\x1b[2Jhi\r\u{9b}31m"),
            "\\x1b]0;pwned\\x07\\x1b[2Jhi\\x0d\\u{9b}31m"
        );
    }
}
