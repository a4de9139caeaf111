//! Streaming uploads to S3.
//!
//! A file up to one part long goes in one `PutObject` carrying its SHA-256
//! as metadata. A longer one goes in a multipart upload: parts are read and
//! hashed in order on a blocking thread, and up to `concurrency` parts are in
//! flight, so memory stays near `part_size * concurrency` whatever the file's
//! size (each part in a mapping of its own, see [`PartBuf`]). A failed upload
//! is aborted. The returned [`Transfer`] is the size
//! and SHA-256 of the bytes read from the file.
//!
//! A multipart object carries no SHA-256 metadata: S3 takes metadata when an
//! upload starts, before the file has been read. Its parts are checked by S3
//! (the SDK's CRC32 per part), and end to end by the caller, who records the
//! SHA-256 `put_file` returns and checks it on download.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use futures::TryStreamExt;
use sha2::{Digest, Sha256};

use super::errors::Failure;
use super::{S3Backend, SHA256_METADATA, blocking};
use crate::error::{Error, Result};
use crate::types::Transfer;

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
        .set_expected_bucket_owner(b.owner.clone())
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
        .set_expected_bucket_owner(b.owner.clone())
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
        .set_expected_bucket_owner(b.owner.clone())
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
        .set_expected_bucket_owner(b.owner.clone())
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
    let reading = |e| Error::io(format!("reading {}", src.display()), e);
    let mut buf = PartBuf::new(limit as usize).map_err(reading)?;
    while buf.len < buf.cap {
        match file.read(buf.spare()) {
            Ok(0) => break,
            Ok(n) => buf.len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(reading(e)),
        }
    }
    hasher.update(buf.as_ref());
    Ok((file, hasher, Bytes::from_owner(buf)))
}

/// The bytes of one part, in an anonymous memory mapping of their own that
/// is unmapped when the last [`Bytes`] referring to it is dropped.
///
/// Not a `Vec`: once glibc's malloc has raised its dynamic mmap threshold
/// (which it does the first time a large block is freed), it serves
/// part-sized blocks from per-thread arenas, and a freed part then stays in
/// the resident set. Parts are read on blocking-pool threads, one arena
/// each, so an agent's peak RSS for the same 1 GiB upload wandered between
/// 50 and 140 MB. A mapping of its own goes back to the system as soon as
/// the part has been sent: memory is the parts in flight, nothing more.
struct PartBuf {
    /// Start of the mapping.
    ptr: std::ptr::NonNull<u8>,
    /// Size of the mapping: `cap`, but at least 1 (none can be empty).
    mapped: usize,
    /// Bytes it may hold.
    cap: usize,
    /// Bytes filled, from the start.
    len: usize,
}

// SAFETY: the mapping is owned by this value alone (no other pointer to it
// escapes except through `&self`/`&mut self` borrows), like a `Vec<u8>`.
unsafe impl Send for PartBuf {}
// SAFETY: shared access is read-only (`AsRef<[u8]>`).
unsafe impl Sync for PartBuf {}

impl PartBuf {
    fn new(cap: usize) -> std::io::Result<PartBuf> {
        let mapped = cap.max(1);
        // SAFETY: a fresh private anonymous mapping; no existing memory is
        // affected. The result is checked for MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ptr = std::ptr::NonNull::new(p.cast::<u8>())
            .ok_or_else(|| std::io::Error::other("mmap returned a null pointer"))?;
        Ok(PartBuf {
            ptr,
            mapped,
            cap,
            len: 0,
        })
    }

    /// The part of the mapping not yet filled.
    fn spare(&mut self) -> &mut [u8] {
        // SAFETY: `len <= cap <= mapped`, the mapping's size, readable and
        // writable (anonymous mappings start zeroed, so initialised), and
        // `&mut self` makes this the only reference.
        unsafe {
            std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(self.len), self.cap - self.len)
        }
    }
}

impl AsRef<[u8]> for PartBuf {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the first `len` bytes of the mapping are initialised and
        // live as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for PartBuf {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`, once; no
        // reference into it outlives `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.mapped);
        }
    }
}
