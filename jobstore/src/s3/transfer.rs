//! Streaming file transfers to and from S3.
//!
//! - Upload: a file up to one part long goes in one `PutObject` carrying its
//!   SHA-256 as metadata. A longer one goes in a multipart upload: parts are
//!   read and hashed in order on a blocking thread, and up to `concurrency`
//!   parts are in flight, so memory stays near `part_size * concurrency`
//!   whatever the file's size. A failed upload is aborted.
//! - Download: the first ranged `GetObject` tells the size, the ETag and the
//!   recorded SHA-256; the other ranges follow, `concurrency` at a time, each
//!   pinned to that ETag with `If-Match`, and are written and hashed in order.
//!   A body that breaks off is resumed from the last byte received.
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
    total: u64,
    etag: Option<String>,
    sha256: Option<String>,
    first_len: u64,
    body: ByteStream,
}

pub(super) async fn get_file(b: &S3Backend, key: &str, dest: &Path) -> Result<Transfer> {
    let op = "s3:GetObject";
    let ps = b.transfer.part_size.max(1);
    let first = b
        .client
        .get_object()
        .bucket(&b.bucket)
        .key(key)
        .range(format!("bytes=0-{}", ps - 1))
        .send()
        .await;
    let head = match first {
        Ok(out) => {
            let total = out
                .content_range()
                .and_then(|r| r.rsplit_once('/'))
                .and_then(|(_, t)| t.parse::<u64>().ok());
            let len = out.content_length().unwrap_or(0).max(0) as u64;
            Head {
                total: total.unwrap_or(len),
                first_len: len,
                etag: out.e_tag().map(str::to_string),
                sha256: out.metadata().and_then(|m| m.get(SHA256_METADATA)).cloned(),
                body: out.body,
            }
        }
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
            let len = out.content_length().unwrap_or(0).max(0) as u64;
            Head {
                total: len,
                first_len: len,
                etag: out.e_tag().map(str::to_string),
                sha256: out.metadata().and_then(|m| m.get(SHA256_METADATA)).cloned(),
                body: out.body,
            }
        }
    };
    let result = download(b, key, dest, head).await;
    if let Err(e) = &result
        && !e.is_not_found()
    {
        let _ = tokio::fs::remove_file(dest).await;
    }
    result
}

async fn download(b: &S3Backend, key: &str, dest: &Path, head: Head) -> Result<Transfer> {
    let Head {
        total,
        etag,
        sha256,
        first_len,
        body,
    } = head;
    let path = dest.to_path_buf();
    let mut file = blocking(move || {
        File::create(&path).map_err(|e| Error::io(format!("creating {}", path.display()), e))
    })
    .await?;
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    if first_len > 0 {
        let data = read_range(b, key, 0, first_len, etag.as_deref(), Some(body)).await?;
        (file, hasher) = write_part(file, hasher, data, dest).await?;
        written += first_len;
    }
    let ps = b.transfer.part_size.max(1);
    let ranges: Vec<(u64, u64)> = (written..total)
        .step_by(ps as usize)
        .map(|s| (s, ps.min(total - s)))
        .collect();
    let etag_ref = etag.as_deref();
    let mut parts = futures::stream::iter(ranges)
        .map(|(start, len)| read_range(b, key, start, len, etag_ref, None))
        .buffered(b.transfer.concurrency.max(1));
    while let Some(data) = parts.next().await {
        let data = data?;
        written += data.len() as u64;
        (file, hasher) = write_part(file, hasher, data, dest).await?;
    }
    drop(parts);
    if written != total {
        return Err(Error::Transient {
            message: format!(
                "{key}: read {written} of {total} bytes from S3 bucket {}",
                b.bucket
            ),
        });
    }
    let actual = hex::encode(hasher.finalize());
    if let Some(expected) = sha256
        && !expected.eq_ignore_ascii_case(&actual)
    {
        return Err(Error::Checksum {
            key: key.to_string(),
            expected,
            actual,
        });
    }
    Ok(Transfer {
        size: written,
        sha256: actual,
    })
}

async fn write_part(
    mut file: File,
    mut hasher: Sha256,
    data: Bytes,
    dest: &Path,
) -> Result<(File, Sha256)> {
    let path = dest.to_path_buf();
    blocking(move || {
        hasher.update(&data);
        file.write_all(&data)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        Ok((file, hasher))
    })
    .await
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
                match req.send().await {
                    Ok(out) => out.body,
                    Err(e) => {
                        let f = Failure::from_sdk(e);
                        if f.status == Some(412) {
                            return Err(Error::Transient {
                                message: format!(
                                    "{key} in S3 bucket {} was replaced while being read; read it again",
                                    b.bucket
                                ),
                            });
                        }
                        return Err(b.err(f, op, Some(key)));
                    }
                }
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
