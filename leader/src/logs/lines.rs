//! Splitting job output into lines for the terminal, each byte looked at
//! once, and the budget that keeps lines waiting for the terminal from
//! growing the leader's memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The longest piece of a line echoed whole: output without newlines goes
/// to the terminal in pieces of this size, so a job that never prints one
/// costs at most this much per stream while it waits for the rest.
pub const LINE_PIECE_MAX: usize = 64 << 10;

/// Echo text waiting for the terminal, over every attempt. Past it, lines
/// are counted instead of queued (and the count is shown when there is
/// room again): a terminal slower than a job's output must not make the
/// leader hold the output in memory. The stored log keeps everything.
pub const ECHO_IN_FLIGHT_MAX: usize = 16 << 20;

/// The unfinished last line of one output stream.
#[derive(Debug, Default)]
pub struct LineSplitter {
    /// Bytes since the last newline (or piece); never more than
    /// [`LINE_PIECE_MAX`].
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Appends every line completed by `data` to `out`, each ending in a
    /// newline, and keeps the rest. A line longer than [`LINE_PIECE_MAX`]
    /// goes out in pieces of that size, each on a line of its own. Returns
    /// how many lines were added. Only `data` is scanned: the kept rest is
    /// never looked at again, so output without newlines costs time in
    /// proportion to its size, not to its square.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) -> usize {
        let mut lines = 0;
        let mut rest = data;
        loop {
            let newline = rest.iter().position(|&b| b == b'\n');
            let segment = &rest[..newline.unwrap_or(rest.len())];
            lines += self.add(segment, out);
            match newline {
                Some(at) => {
                    out.extend_from_slice(&self.partial);
                    out.push(b'\n');
                    self.partial.clear();
                    lines += 1;
                    rest = &rest[at + 1..];
                }
                None => return lines,
            }
        }
    }

    /// Adds bytes with no newline, sending out full pieces once more
    /// follows them.
    fn add(&mut self, mut segment: &[u8], out: &mut Vec<u8>) -> usize {
        let mut pieces = 0;
        while !segment.is_empty() {
            if self.partial.len() == LINE_PIECE_MAX {
                out.extend_from_slice(&self.partial);
                out.push(b'\n');
                self.partial.clear();
                pieces += 1;
            }
            let take = (LINE_PIECE_MAX - self.partial.len()).min(segment.len());
            self.partial.extend_from_slice(&segment[..take]);
            segment = &segment[take..];
        }
        pieces
    }

    /// The unfinished line, as a last line (for the end of the output).
    pub fn finish(&mut self, out: &mut Vec<u8>) -> usize {
        if self.partial.is_empty() {
            return 0;
        }
        out.extend_from_slice(&self.partial);
        out.push(b'\n');
        self.partial.clear();
        1
    }

    /// Bytes held.
    pub fn held(&self) -> usize {
        self.partial.len()
    }
}

/// Bytes of echo text queued for the terminal, shared by the hub and every
/// queued line.
#[derive(Debug, Default)]
pub struct EchoBudget {
    in_flight: Arc<AtomicUsize>,
}

impl EchoBudget {
    /// Reserves `n` bytes, unless that would pass [`ECHO_IN_FLIGHT_MAX`].
    pub fn reserve(&self, n: usize) -> Option<Charge> {
        let mut cur = self.in_flight.load(Ordering::Relaxed);
        loop {
            if cur.saturating_add(n) > ECHO_IN_FLIGHT_MAX {
                return None;
            }
            match self.in_flight.compare_exchange_weak(
                cur,
                cur + n,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(Charge {
                        n,
                        in_flight: self.in_flight.clone(),
                    });
                }
                Err(now) => cur = now,
            }
        }
    }

    /// Bytes queued now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// Bytes reserved for one queued echo; given back when it is printed (or
/// dropped).
#[derive(Debug)]
pub struct Charge {
    n: usize,
    in_flight: Arc<AtomicUsize>,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(self.n, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_across_chunks_and_long_ones_go_in_pieces() {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        assert_eq!(s.feed(b"one\ntw", &mut out), 1);
        assert_eq!(s.feed(b"o\n\nthree", &mut out), 2);
        assert_eq!(out, b"one\ntwo\n\n");
        assert_eq!(s.held(), 5);
        assert_eq!(s.finish(&mut out), 1);
        assert_eq!(out, b"one\ntwo\n\nthree\n");

        // A line exactly one piece long, then its newline: one line, not a
        // piece and an empty line.
        let mut out = Vec::new();
        let piece = vec![b'x'; LINE_PIECE_MAX];
        assert_eq!(s.feed(&piece, &mut out), 0);
        assert_eq!(s.feed(b"\n", &mut out), 1);
        assert_eq!(out.len(), LINE_PIECE_MAX + 1);

        // Two and a half pieces without a newline: two pieces out, the rest
        // held.
        let mut out = Vec::new();
        let long = vec![b'y'; LINE_PIECE_MAX * 5 / 2];
        assert_eq!(s.feed(&long, &mut out), 2);
        assert_eq!(s.held(), LINE_PIECE_MAX / 2);
        assert!(
            out.split(|&b| b == b'\n')
                .all(|l| l.len() <= LINE_PIECE_MAX)
        );
    }

    #[test]
    fn the_echo_budget_is_given_back_when_a_line_is_dropped() {
        let budget = EchoBudget::default();
        let a = budget.reserve(ECHO_IN_FLIGHT_MAX - 10).expect("room");
        assert!(budget.reserve(11).is_none(), "past the budget");
        let b = budget.reserve(10).expect("exactly the rest");
        drop(a);
        assert_eq!(budget.in_flight(), 10);
        drop(b);
        assert_eq!(budget.in_flight(), 0);
    }
}
