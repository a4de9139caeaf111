//! Streaming file transfers to and from S3.
//!
//! - Upload: a file up to one part long goes in one `PutObject` carrying its
//!   SHA-256 as metadata. A longer one goes in a multipart upload: parts are
//!   read and hashed in order on a blocking thread, and up to `concurrency`
//!   parts are in flight, so memory stays near `part_size * concurrency`
//!   whatever the file's size. A failed upload is aborted.
//! - Download: by default one streamed `GetObject`, written and hashed as it
//!   arrives; a body that breaks off is resumed with `Range: bytes=N-` pinned
//!   to the first answer's ETag (`If-Match`). Ranged mode
//!   ([`super::TransferOptions::download_concurrency`] > 1): the first ranged
//!   answer tells the size, ETag and recorded SHA-256, the other ranges
//!   follow several at a time, pinned the same way, written in order.
//!
//! Both report what they actually moved: the size and the SHA-256 of the
//! bytes read from the source file (upload) or written to the destination
//! (download). A download whose SHA-256 differs from the one recorded at
//! upload is discarded with [`Error::Checksum`].

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

use super::errors::Failure;
use super::{S3Backend, SHA256_METADATA, drain};
use crate::error::{Error, Result};
use crate::store::Transfer;

pub(super) async fn put_file(b: &S3Backend, key: &str, src: &Path) -> Result<Transfer> {
    let path = src.to_path_buf();
    let (file, size) = blocking(move || {
        let f =
            File::open(&path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let len = f
            .metadata()
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
            .len();
        Ok((f, len))
    })
    .await?;
    let part_size = b.transfer.part_size_for(size);
    if size <= part_size {
        put_single(b, key, file, src, part_size).await
    } else {
        put_multipart(b, key, file, src, part_size).await
    }
}

async fn put_single(
    b: &S3Backend,
    key: &str,
    file: File,
    src: &Path,
    limit: u64,
) -> Result<Transfer> {
    let path = src.to_path_buf();
    let (_, hasher, data) = blocking(move || read_part(file, Sha256::new(), limit, &path)).await?;
    let path = src.to_path_buf();
    if data.len() as u64 == limit && !blocking(move || at_eof(&path, limit)).await? {
        return Err(grew(src));
    }
    let t = Transfer {
        size: data.len() as u64,
        sha256: hex::encode(hasher.finalize()),
    };
    b.client
        .put_object()
        .bucket(&b.bucket)
        .key(key)
        .content_length(data.len() as i64)
        .metadata(SHA256_METADATA, &t.sha256)
        .body(ByteStream::from(data))
        .send()
        .await
        .map_err(|e| b.sdk_err(e, "s3:PutObject", Some(key)))?;
    Ok(t)
}

fn grew(src: &Path) -> Error {
    Error::io(
        format!("storing {}", src.display()),
        std::io::Error::other(
            "the file grew while it was being stored; store it once it is complete",
        ),
    )
}

/// True if the file at `path` is no longer than `len`.
fn at_eof(path: &Path, len: u64) -> Result<bool> {
    let m =
        std::fs::metadata(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    Ok(m.len() <= len)
}

/// Reads the file in parts, hashing as it goes. Yields `(part number,
/// bytes)`; the digest of the whole file is left in `digest` at the end.
struct PartReader {
    file: Option<File>,
    hasher: Sha256,
    size: u64,
    next_part: i32,
    part_size: u64,
    src: PathBuf,
    done: bool,
    digest: Arc<Mutex<Option<Transfer>>>,
}

impl PartReader {
    async fn next_part(mut self) -> Result<Option<((i32, Bytes), PartReader)>> {
        if self.done {
            return Ok(None);
        }
        let file = self.file.take().ok_or_else(|| Error::Permanent {
            message: "part reader used after a failure (this is a bug)".into(),
        })?;
        let hasher = std::mem::take(&mut self.hasher);
        let (ps, src) = (self.part_size, self.src.clone());
        let (file, hasher, data) = blocking(move || read_part(file, hasher, ps, &src)).await?;
        self.file = Some(file);
        self.hasher = hasher;
        self.size += data.len() as u64;
        if (data.len() as u64) < self.part_size {
            self.done = true;
            let t = Transfer {
                size: self.size,
                sha256: hex::encode(std::mem::take(&mut self.hasher).finalize()),
            };
            *self.digest.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
            if data.is_empty() {
                return Ok(None);
            }
        }
        let n = self.next_part;
        self.next_part += 1;
        Ok(Some(((n, data), self)))
    }
}

async fn put_multipart(
    b: &S3Backend,
    key: &str,
    file: File,
    src: &Path,
    part_size: u64,
) -> Result<Transfer> {
    let op = "s3:PutObject";
    let created = b
        .client
        .create_multipart_upload()
        .bucket(&b.bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| b.sdk_err(e, op, Some(key)))?;
    let upload_id = created
        .upload_id()
        .ok_or_else(|| Error::Permanent {
            message: format!("S3 started a multipart upload of {key} without an upload id"),
        })?
        .to_string();

    let digest = Arc::new(Mutex::new(None));
    let reader = PartReader {
        file: Some(file),
        hasher: Sha256::new(),
        size: 0,
        next_part: 1,
        part_size,
        src: src.to_path_buf(),
        done: false,
        digest: digest.clone(),
    };
    let parts = futures::stream::try_unfold(reader, PartReader::next_part)
        .map_ok(|(n, data)| upload_part(b, key, &upload_id, n, data))
        .try_buffer_unordered(b.transfer.concurrency.max(1))
        .try_collect::<Vec<CompletedPart>>()
        .await;
    let mut parts = match parts {
        Ok(p) => p,
        Err(e) => {
            b.abort_upload(key, &upload_id).await;
            return Err(e);
        }
    };
    let transfer = digest.lock().unwrap_or_else(|e| e.into_inner()).take();
    let Some(transfer) = transfer.filter(|_| !parts.is_empty()) else {
        b.abort_upload(key, &upload_id).await;
        return Err(Error::io(
            format!("storing {}", src.display()),
            std::io::Error::other("the file shrank while it was being stored"),
        ));
    };
    parts.sort_by_key(|p| p.part_number());
    let n_parts = parts.len();
    let done = b
        .client
        .complete_multipart_upload()
        .bucket(&b.bucket)
        .key(key)
        .upload_id(&upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await;
    match done {
        Ok(_) => Ok(transfer),
        Err(e) => {
            let f = Failure::from_sdk(e);
            // An attempt whose answer was lost may have completed it.
            if f.code_is("NoSuchUpload") && b.size(key).await? == Some(transfer.size) {
                tracing::debug!(
                    key,
                    n_parts,
                    "multipart upload completed on an earlier attempt"
                );
                return Ok(transfer);
            }
            b.abort_upload(key, &upload_id).await;
            Err(b.err(f, op, Some(key)))
        }
    }
}

async fn upload_part(
    b: &S3Backend,
    key: &str,
    upload_id: &str,
    n: i32,
    data: Bytes,
) -> Result<CompletedPart> {
    let out = b
        .client
        .upload_part()
        .bucket(&b.bucket)
        .key(key)
        .upload_id(upload_id)
        .part_number(n)
        .content_length(data.len() as i64)
        .body(ByteStream::from(data))
        .send()
        .await
        .map_err(|e| b.sdk_err(e, "s3:PutObject", Some(key)))?;
    Ok(CompletedPart::builder()
        .part_number(n)
        .set_e_tag(out.e_tag().map(str::to_string))
        .build())
}

/// Reads up to `limit` bytes (less only at the end of the file) and hashes
/// them.
fn read_part(
    mut file: File,
    mut hasher: Sha256,
    limit: u64,
    src: &Path,
) -> Result<(File, Sha256, Bytes)> {
    let mut buf = Vec::with_capacity(limit as usize);
    (&mut file)
        .take(limit)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(format!("reading {}", src.display()), e))?;
    hasher.update(&buf);
    Ok((file, hasher, Bytes::from(buf)))
}

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
    let mut req = b.client.get_object().bucket(&b.bucket).key(key);
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
    let mut attempt = 0u32;
    loop {
        let mut stream = match body.take() {
            Some(s) => s,
            None => {
                let pos = sink.queued + batch.len;
                let mut req = b
                    .client
                    .get_object()
                    .bucket(&b.bucket)
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
                    break Some(aws_sdk_s3::error::DisplayErrorContext(&e).to_string());
                }
            }
        };
        let pos = sink.queued + batch.len;
        let failure = match failure {
            None if pos == total => break,
            None => format!("short body: {pos} of {total} bytes"),
            Some(f) => f,
        };
        attempt += 1;
        if attempt >= b.retry.max_attempts {
            return Err(b.err(Failure::transport(failure), op, Some(key)));
        }
        tracing::debug!(key, pos, attempt, error = %failure, "download broke off; resuming");
        tokio::time::sleep(b.retry.backoff(attempt)).await;
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
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let mut stream = match body.take() {
            Some(s) => s,
            None => {
                let pos = start + buf.len() as u64;
                let end = start + len - 1;
                let mut req = b
                    .client
                    .get_object()
                    .bucket(&b.bucket)
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
        if attempt >= b.retry.max_attempts {
            return Err(b.err(Failure::transport(failure), op, Some(key)));
        }
        tracing::debug!(key, start, got = buf.len(), attempt, error = %failure, "download broke off; resuming");
        tokio::time::sleep(b.retry.backoff(attempt)).await;
    }
}

/// Runs blocking filesystem work off the async threads.
async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Permanent {
            message: format!("job-store worker thread failed: {e}"),
        })?
}
