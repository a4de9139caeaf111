//! Streaming downloads from S3.
//!
//! By default one streamed `GetObject`, written and hashed as it arrives; a
//! body that breaks off is resumed with `Range: bytes=N-` pinned to the first
//! answer's ETag (`If-Match`). Ranged mode
//! ([`super::TransferOptions::download_concurrency`] > 1): the first ranged
//! answer tells the size, ETag and recorded SHA-256, the other ranges follow
//! several at a time, pinned the same way, and are written in order.
//!
//! The returned [`Transfer`] is the size and SHA-256 of the bytes written. A
//! download whose SHA-256 differs from the one recorded at upload is
//! discarded with [`Error::Checksum`]; any failed download removes `dest`.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use aws_sdk_s3::primitives::ByteStream;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::errors::{self, Failure};
use super::{S3Backend, SHA256_METADATA, blocking, drain};
use crate::error::{Error, Result};
use crate::types::Transfer;

/// What the first answer of a download said.
struct Head {
    /// The object's size.
    total: u64,
    /// Its ETag, which later requests are pinned to with `If-Match`.
    etag: Option<String>,
    /// The SHA-256 recorded when it was stored in one request.
    sha256: Option<String>,
    /// Bytes in `body`.
    first_len: u64,
    /// The body of the first answer.
    body: ByteStream,
}

impl Head {
    fn new(out: aws_sdk_s3::operation::get_object::GetObjectOutput) -> Head {
        let len = out.content_length().unwrap_or(0).max(0) as u64;
        let total = out
            .content_range()
            .and_then(|r| r.rsplit_once('/'))
            .and_then(|(_, t)| t.parse::<u64>().ok());
        Head {
            total: total.unwrap_or(len),
            first_len: len,
            etag: out.e_tag().map(str::to_string),
            sha256: out.metadata().and_then(|m| m.get(SHA256_METADATA)).cloned(),
            body: out.body,
        }
    }
}

pub(super) async fn get_file(b: &S3Backend, key: &str, dest: &Path) -> Result<Transfer> {
    let op = "s3:GetObject";
    let ranged = b.transfer.download_concurrency > 1;
    let ps = b.transfer.part_size.max(1);
    let mut req = b
        .client
        .get_object()
        .bucket(&b.bucket)
        .set_expected_bucket_owner(b.owner.clone())
        .key(key);
    if ranged {
        req = req.range(format!("bytes=0-{}", ps - 1));
    }
    let head = match req.send().await {
        Ok(out) => Head::new(out),
        Err(e) => {
            let f = Failure::from_sdk(e);
            if f.status != Some(416) {
                return Err(b.err(f, op, Some(key)));
            }
            // An empty object has no byte range to ask for.
            let out = b
                .client
                .get_object()
                .bucket(&b.bucket)
                .set_expected_bucket_owner(b.owner.clone())
                .key(key)
                .send()
                .await
                .map_err(|e| b.sdk_err(e, op, Some(key)))?;
            Head::new(out)
        }
    };
    let path = dest.to_path_buf();
    let file = blocking(move || {
        File::create(&path).map_err(|e| Error::io(format!("creating {}", path.display()), e))
    })
    .await?;
    let sink = Sink::new(file, dest);
    let result = if ranged {
        download_ranges(b, key, sink, head).await
    } else {
        download_stream(b, key, sink, head).await
    };
    if result.is_err() {
        let _ = tokio::fs::remove_file(dest).await;
    }
    result
}

/// Downloads with one streamed `GetObject`; if the body breaks off, the
/// rest is asked for from where it stopped.
async fn download_stream(b: &S3Backend, key: &str, mut sink: Sink, head: Head) -> Result<Transfer> {
    let op = "s3:GetObject";
    let total = head.total;
    let mut body = Some(head.body);
    // Chunks received and not yet handed to the sink (no copying).
    let mut batch = Batch::default();
    let mut delays = b.retry.backoff().delays();
    loop {
        let mut stream = match body.take() {
            Some(s) => s,
            None => {
                let pos = sink.queued + batch.len;
                let mut req = b
                    .client
                    .get_object()
                    .bucket(&b.bucket)
                    .set_expected_bucket_owner(b.owner.clone())
                    .key(key)
                    .range(format!("bytes={pos}-{}", total - 1));
                if let Some(etag) = &head.etag {
                    req = req.if_match(etag);
                }
                req.send().await.map_err(|e| replaced_or(b, e, key))?.body
            }
        };
        let failure = loop {
            match stream.next().await {
                None => break None,
                Some(Ok(chunk)) => {
                    batch.push(chunk);
                    if sink.queued + batch.len > total {
                        return Err(Error::Transient {
                            message: format!(
                                "{key}: S3 bucket {} sent more than the object's {total} bytes",
                                b.bucket
                            ),
                        });
                    }
                    if batch.len >= WRITE_CHUNK {
                        sink.write(batch.take()).await?;
                    }
                }
                Some(Err(e)) => {
                    break Some(errors::chain(&e));
                }
            }
        };
        let pos = sink.queued + batch.len;
        let failure = match failure {
            None if pos == total => break,
            None => format!("short body: {pos} of {total} bytes"),
            Some(f) => f,
        };
        let Some(delay) = delays.next() else {
            return Err(b.err(Failure::transport(failure), op, Some(key)));
        };
        tracing::debug!(key, pos, error = %failure, ?delay, "download broke off; resuming");
        tokio::time::sleep(delay).await;
    }
    if batch.len > 0 {
        sink.write(batch.take()).await?;
    }
    finish(b, key, sink, total, head.sha256).await
}

/// Downloads in ranges of `part_size`, `download_concurrency` at a time,
/// written in order.
async fn download_ranges(b: &S3Backend, key: &str, mut sink: Sink, head: Head) -> Result<Transfer> {
    let Head {
        total,
        etag,
        sha256,
        first_len,
        body,
    } = head;
    if first_len > 0 {
        let data = read_range(b, key, 0, first_len, etag.as_deref(), Some(body)).await?;
        sink.write(vec![data]).await?;
    }
    let ps = b.transfer.part_size.max(1);
    let ranges: Vec<(u64, u64)> = (first_len..total)
        .step_by(ps as usize)
        .map(|s| (s, ps.min(total - s)))
        .collect();
    let etag_ref = etag.as_deref();
    let mut parts = futures::stream::iter(ranges)
        .map(|(start, len)| read_range(b, key, start, len, etag_ref, None))
        .buffered(b.transfer.download_concurrency.max(1));
    while let Some(data) = parts.next().await {
        sink.write(vec![data?]).await?;
    }
    drop(parts);
    finish(b, key, sink, total, sha256).await
}

/// Checks the size and the recorded checksum of a finished download.
async fn finish(
    b: &S3Backend,
    key: &str,
    sink: Sink,
    total: u64,
    recorded: Option<String>,
) -> Result<Transfer> {
    let t = sink.finish().await?;
    if t.size != total {
        return Err(Error::Transient {
            message: format!(
                "{key}: read {} of {total} bytes from S3 bucket {}",
                t.size, b.bucket
            ),
        });
    }
    if let Some(expected) = recorded
        && !expected.eq_ignore_ascii_case(&t.sha256)
    {
        return Err(Error::Checksum {
            key: key.to_string(),
            expected,
            actual: t.sha256,
        });
    }
    Ok(t)
}

/// Maps the failure of a follow-up request of a download; 412 means the
/// object was replaced since the download started.
fn replaced_or<E>(
    b: &S3Backend,
    e: aws_sdk_s3::error::SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
    key: &str,
) -> Error
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let f = Failure::from_sdk(e);
    if f.status == Some(412) {
        return Error::Transient {
            message: format!(
                "{key} in S3 bucket {} was replaced while being read; read it again",
                b.bucket
            ),
        };
    }
    b.err(f, "s3:GetObject", Some(key))
}

/// Bytes gathered from a streamed body before they are written out.
const WRITE_CHUNK: u64 = 1 << 20;

/// Body chunks waiting to be written.
#[derive(Default)]
struct Batch {
    chunks: Vec<Bytes>,
    len: u64,
}

impl Batch {
    fn push(&mut self, chunk: Bytes) {
        self.len += chunk.len() as u64;
        self.chunks.push(chunk);
    }

    fn take(&mut self) -> Vec<Bytes> {
        self.len = 0;
        std::mem::take(&mut self.chunks)
    }
}

/// Writes a download to its file and hashes it, on a blocking thread, one
/// write in flight while the next chunk arrives.
struct Sink {
    /// The file and hasher, when no write holds them.
    idle: Option<(File, Sha256)>,
    /// The write in flight.
    pending: Option<tokio::task::JoinHandle<Result<(File, Sha256)>>>,
    /// Bytes handed to `write` so far.
    queued: u64,
    dest: PathBuf,
}

impl Sink {
    fn new(file: File, dest: &Path) -> Sink {
        Sink {
            idle: Some((file, Sha256::new())),
            pending: None,
            queued: 0,
            dest: dest.to_path_buf(),
        }
    }

    async fn settle(&mut self) -> Result<(File, Sha256)> {
        if let Some(job) = self.pending.take() {
            return job.await.map_err(|e| Error::Permanent {
                message: format!("job-store worker thread failed: {e}"),
            })?;
        }
        self.idle.take().ok_or_else(|| Error::Permanent {
            message: "download sink used after a failure (this is a bug)".into(),
        })
    }

    /// Queues `chunks` (in order) for writing once the previous write is done.
    async fn write(&mut self, chunks: Vec<Bytes>) -> Result<()> {
        let (mut file, mut hasher) = self.settle().await?;
        self.queued += chunks.iter().map(|c| c.len() as u64).sum::<u64>();
        let path = self.dest.clone();
        self.pending = Some(tokio::task::spawn_blocking(move || {
            for data in &chunks {
                hasher.update(data);
                file.write_all(data)
                    .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
            }
            Ok((file, hasher))
        }));
        Ok(())
    }

    async fn finish(mut self) -> Result<Transfer> {
        let (_file, hasher) = self.settle().await?;
        Ok(Transfer {
            size: self.queued,
            sha256: hex::encode(hasher.finalize()),
        })
    }
}

/// Reads `len` bytes at `start`, from `body` if given (an answer already
/// received) and from new ranged requests pinned to `etag` for whatever is
/// still missing when a body breaks off.
async fn read_range(
    b: &S3Backend,
    key: &str,
    start: u64,
    len: u64,
    etag: Option<&str>,
    mut body: Option<ByteStream>,
) -> Result<Bytes> {
    let op = "s3:GetObject";
    let mut buf = BytesMut::with_capacity(len as usize);
    let mut delays = b.retry.backoff().delays();
    loop {
        let mut stream = match body.take() {
            Some(s) => s,
            None => {
                let pos = start + buf.len() as u64;
                let end = start + len - 1;
                let mut req = b
                    .client
                    .get_object()
                    .bucket(&b.bucket)
                    .set_expected_bucket_owner(b.owner.clone())
                    .key(key)
                    .range(format!("bytes={pos}-{end}"));
                if let Some(etag) = etag {
                    req = req.if_match(etag);
                }
                req.send().await.map_err(|e| replaced_or(b, e, key))?.body
            }
        };
        let failure = match drain(&mut stream, &mut buf, len as usize).await {
            Ok(()) if buf.len() as u64 == len => return Ok(buf.freeze()),
            Ok(()) => format!("short body: {} of {len} bytes", buf.len()),
            Err(e) => e,
        };
        let Some(delay) = delays.next() else {
            return Err(b.err(Failure::transport(failure), op, Some(key)));
        };
        tracing::debug!(key, start, got = buf.len(), error = %failure, ?delay, "download broke off; resuming");
        tokio::time::sleep(delay).await;
    }
}
