//! Container log files in the CRI format the real kubelet reads
//! (`<RFC3339Nano> <stream> <F|P> <text>`), so `sinceTime`, `timestamps` and
//! `tailLines` can be answered exactly.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::emulator::cluster::lock;

/// A log file shared by a container's stdout and stderr readers.
#[derive(Clone, Debug)]
pub struct LogWriter {
    file: Arc<Mutex<std::fs::File>>,
}

impl LogWriter {
    /// Opens (appending) a log file.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self {
            file: Arc::new(Mutex::new(file)),
        })
    }

    fn write(&self, stream: &str, full: bool, text: &[u8]) {
        let ts = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.9fZ");
        let mut line = format!("{ts} {stream} {} ", if full { 'F' } else { 'P' }).into_bytes();
        line.extend_from_slice(text);
        line.push(b'\n');
        let _ = lock(&self.file).write_all(&line);
    }

    /// Copies a stream into the log until EOF.
    pub async fn pump(self, stream: &'static str, reader: impl AsyncRead + Unpin) {
        let mut r = BufReader::new(reader);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if buf.last() == Some(&b'\n') {
                        buf.pop();
                        self.write(stream, true, &buf);
                    } else {
                        self.write(stream, false, &buf);
                    }
                }
            }
        }
    }
}

/// One parsed log record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The timestamp as written.
    pub timestamp: String,
    /// The text, without the newline.
    pub text: Vec<u8>,
    /// Whether the line was complete (ended with a newline).
    pub full: bool,
}

impl Record {
    /// The bytes `kubectl logs` shows for this record.
    pub fn render(&self, timestamps: bool) -> Vec<u8> {
        let mut out = Vec::new();
        if timestamps {
            out.extend_from_slice(self.timestamp.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&self.text);
        if self.full {
            out.push(b'\n');
        }
        out
    }

    /// The record's time.
    pub fn time(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        chrono::DateTime::parse_from_rfc3339(&self.timestamp)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc))
    }
}

/// Parses complete records from `data`; returns them and how many bytes
/// were consumed (a trailing incomplete record is left for later).
pub fn parse(data: &[u8]) -> (Vec<Record>, usize) {
    let mut out = Vec::new();
    let mut consumed = 0;
    for line in data.split_inclusive(|b| *b == b'\n') {
        if line.last() != Some(&b'\n') {
            break;
        }
        consumed += line.len();
        let line = &line[..line.len() - 1];
        let mut parts = line.splitn(4, |b| *b == b' ');
        let ts = parts.next().unwrap_or_default();
        let _stream = parts.next();
        let tag = parts.next().unwrap_or_default();
        let text = parts.next().unwrap_or_default();
        out.push(Record {
            timestamp: String::from_utf8_lossy(ts).into_owned(),
            text: text.to_vec(),
            full: tag != b"P",
        });
    }
    (out, consumed)
}

/// Where a container's log lives: one file per run, like the kubelet's
/// `<restartCount>.log`.
pub fn log_path(pod_dir: &Path, container: &str, restart: i32) -> PathBuf {
    pod_dir
        .join("logs")
        .join(container)
        .join(format!("{restart}.log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_render() {
        let data = b"2024-01-01T00:00:00.000000001Z stdout F hi\n2024-01-01T00:00:01Z stderr P part\n2024-01-01T00:00:02Z std";
        let (recs, used) = parse(data);
        assert_eq!(recs.len(), 2);
        assert_eq!(used, data.len() - "2024-01-01T00:00:02Z std".len());
        assert_eq!(recs[0].render(false), b"hi\n");
        assert_eq!(recs[1].render(false), b"part");
        assert!(
            recs[0]
                .render(true)
                .starts_with(b"2024-01-01T00:00:00.000000001Z hi")
        );
        assert!(recs[0].time().is_some());
    }
}
