//! Test data: files of reproducible pseudo-random bytes, and their SHA-256.
//!
//! Uses only `std`, `sha2` and `hex`, so that the agent's integration tests
//! can include this file with `#[path]` too (see [`crate::wait`] for why).

use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

/// Writes `mib` MiB of pseudo-random bytes to `path` and returns their
/// SHA-256 in hex.
///
/// The bytes are an xorshift64 stream from `seed` (which must not be 0):
/// random enough that no layer can compress or deduplicate them, and the
/// same for the same seed, without a random-number crate or the cost of a
/// cryptographic generator on gigabyte files.
pub fn write_random(path: &Path, mib: u64, seed: u64) -> std::io::Result<String> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut hasher = Sha256::new();
    let mut x = seed.max(1);
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for chunk in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        hasher.update(&buf);
        f.write_all(&buf)?;
    }
    f.flush()?;
    Ok(hex::encode(hasher.finalize()))
}

/// The SHA-256 of a file's contents, in hex, read 1 MiB at a time.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_returned_digest_is_the_files_and_the_seed_fixes_the_content() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        let sha_a = write_random(&a, 2, 7).unwrap_or_else(|e| panic!("{e}"));
        let sha_b = write_random(&b, 2, 7).unwrap_or_else(|e| panic!("{e}"));
        let sha_c = write_random(&c, 2, 8).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sha256_file(&a).unwrap_or_default(), sha_a);
        assert_eq!(sha_a, sha_b, "same seed, same bytes");
        assert_ne!(sha_a, sha_c, "another seed, other bytes");
        assert_eq!(std::fs::metadata(&a).map(|m| m.len()).unwrap_or(0), 2 << 20);
    }
}
