//! The `aws:` backend: a job store in the S3 bucket `NAME--toil`.
//!
//! Placeholder while the S3 backend is being written (issue 5); every call
//! fails with a clear message.

use std::path::Path;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::locator::Locator;
use crate::store::{Condition, Object, Transfer, Version};

/// A job store in an S3 bucket.
#[derive(Debug)]
pub struct S3Backend {
    locator: String,
}

fn unsupported<T>(l: &str) -> Result<T> {
    Err(Error::Permanent {
        message: format!("{l}: the aws: job store is not available in this build yet"),
    })
}

impl S3Backend {
    pub(crate) async fn connect(_region: &str, _name: &str, locator: &Locator) -> Result<Self> {
        Ok(S3Backend {
            locator: locator.to_string(),
        })
    }
    pub(crate) async fn initialize(&self) -> Result<bool> {
        unsupported(&self.locator)
    }
    pub(crate) async fn exists(&self) -> Result<bool> {
        unsupported(&self.locator)
    }
    pub(crate) async fn destroy(&self) -> Result<()> {
        unsupported(&self.locator)
    }
    pub(crate) async fn put_bytes(&self, _k: &str, _d: Bytes, _c: Condition) -> Result<Version> {
        unsupported(&self.locator)
    }
    pub(crate) async fn get_bytes(&self, _k: &str) -> Result<Option<Object>> {
        unsupported(&self.locator)
    }
    pub(crate) async fn put_file(&self, _k: &str, _s: &Path) -> Result<Transfer> {
        unsupported(&self.locator)
    }
    pub(crate) async fn get_file(&self, _k: &str, _d: &Path) -> Result<Transfer> {
        unsupported(&self.locator)
    }
    pub(crate) async fn size(&self, _k: &str) -> Result<Option<u64>> {
        unsupported(&self.locator)
    }
    pub(crate) async fn list(&self, _p: &str) -> Result<Vec<String>> {
        unsupported(&self.locator)
    }
    pub(crate) async fn delete(&self, _k: &str) -> Result<()> {
        unsupported(&self.locator)
    }
    pub(crate) async fn delete_prefix(&self, _p: &str) -> Result<u64> {
        unsupported(&self.locator)
    }
}
