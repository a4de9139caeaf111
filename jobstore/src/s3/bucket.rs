//! The bucket as a job store: creating it (in the locator's region, checked
//! to be ours), recognising it by its marker object, and deleting it whole.

use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use bytes::Bytes;

use super::S3Backend;
use super::errors::{self, Failure};
use crate::error::{Error, Result};
use crate::file::MARKER;
use crate::types::Condition;

impl S3Backend {
    pub(crate) async fn initialize(&self) -> Result<bool> {
        self.ensure_bucket().await?;
        if self.marker_exists().await? {
            return Ok(false);
        }
        let listing = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .set_expected_bucket_owner(self.owner.clone())
            .max_keys(1)
            .send()
            .await
            .map_err(|e| self.sdk_err(e, "s3:ListBucket", None))?;
        if listing.key_count().unwrap_or(0) > 0 || !listing.contents().is_empty() {
            // Another process may have made it a job store since the check
            // above (two leaders starting at once): then it is one.
            if self.marker_exists().await? {
                return Ok(false);
            }
            return Err(Error::Permanent {
                message: format!(
                    "S3 bucket {} exists and is not a job store (it has objects but no {MARKER}); choose another job store name than in {}",
                    self.bucket, self.locator
                ),
            });
        }
        let marker = serde_json::json!({
            "kind": "toil-jobstore",
            "locator": self.locator,
            "created_at": chrono::Utc::now().to_rfc3339(),
        });
        let data = Bytes::from(marker.to_string());
        match self.put_bytes(MARKER, data, Condition::IfAbsent).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_precondition_failed() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Creates the bucket unless it exists, and checks that it is ours and in
    /// the locator's region.
    async fn ensure_bucket(&self) -> Result<()> {
        let mut create = self.client.create_bucket().bucket(&self.bucket);
        if self.region != "us-east-1" {
            create = create.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
                    .build(),
            );
        }
        let mut may_create = true;
        match create.send().await {
            Ok(_) => {
                tracing::info!(bucket = %self.bucket, region = %self.region, "created or found S3 bucket")
            }
            Err(e) => {
                let f = Failure::from_sdk(e);
                if f.code_is("BucketAlreadyOwnedByYou") {
                    // Ours already; the region is checked below.
                } else if f.code_is("AccessDenied") {
                    // Perhaps allowed to use the bucket but not to create
                    // buckets: find out below.
                    may_create = false;
                } else {
                    return Err(self.err(f, "s3:CreateBucket", None));
                }
            }
        }
        match self
            .client
            .head_bucket()
            .bucket(&self.bucket)
            .set_expected_bucket_owner(self.owner.clone())
            .send()
            .await
        {
            Ok(out) => {
                if let Some(actual) = out.bucket_region()
                    && actual != self.region
                {
                    return Err(Error::Permanent {
                        message: errors::wrong_region_message(
                            &self.locator,
                            &self.bucket,
                            &self.region,
                            &self.name,
                            Some(actual),
                        ),
                    });
                }
                Ok(())
            }
            Err(e) => {
                let f = Failure::from_sdk(e);
                if f.is_not_found() && !may_create {
                    return Err(Error::Permanent {
                        message: format!(
                            "S3 bucket {} does not exist and the credentials in use may not create it (s3:CreateBucket denied); create the bucket in {} or grant s3:CreateBucket",
                            self.bucket, self.region
                        ),
                    });
                }
                Err(self.err(f, "s3:ListBucket", None))
            }
        }
    }

    async fn marker_exists(&self) -> Result<bool> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .set_expected_bucket_owner(self.owner.clone())
            .key(MARKER)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => {
                let f = Failure::from_sdk(e);
                if f.is_not_found() {
                    Ok(false)
                } else {
                    Err(self.err(f, "s3:GetObject", Some(MARKER)))
                }
            }
        }
    }

    /// True if the bucket exists and holds the marker. Also the front
    /// door's check of the locator and the credentials, so it asks in a way
    /// that makes S3 say what is wrong:
    /// - `HeadBucket` first, for the bucket's region: a store opened with
    ///   the wrong region is refused with the right locator instead of being
    ///   used (AWS answers a wrong-region request with a redirect; servers
    ///   with one endpoint for every region, like moto, answer it normally,
    ///   but both send `x-amz-bucket-region`);
    /// - then `GetObject` of the marker, not `HeadObject`: an error answer to
    ///   a HEAD has no body, so a 403 would not say whether the key id is
    ///   unknown, the secret wrong, or the access denied.
    pub(crate) async fn exists(&self) -> Result<bool> {
        match self
            .client
            .head_bucket()
            .bucket(&self.bucket)
            .set_expected_bucket_owner(self.owner.clone())
            .send()
            .await
        {
            Ok(out) => {
                if let Some(actual) = out.bucket_region()
                    && actual != self.region
                {
                    return Err(Error::Permanent {
                        message: errors::wrong_region_message(
                            &self.locator,
                            &self.bucket,
                            &self.region,
                            &self.name,
                            Some(actual),
                        ),
                    });
                }
            }
            Err(e) => {
                let f = Failure::from_sdk(e);
                if f.is_not_found() {
                    return Ok(false);
                }
                // A 403 says nothing more here; the GET below tells which
                // 403 it is. Anything else (a redirect to the bucket's
                // region, say) is answered now.
                if f.status != Some(403) {
                    return Err(self.err(f, "s3:ListBucket", None));
                }
            }
        }
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .set_expected_bucket_owner(self.owner.clone())
            .key(MARKER)
            .send()
            .await
        {
            Ok(out) => {
                // A few hundred bytes, read so the connection can be reused.
                let _ = out.body.collect().await;
                Ok(true)
            }
            Err(e) => {
                let f = Failure::from_sdk(e);
                if f.is_not_found() {
                    Ok(false)
                } else {
                    Err(self.err(f, "s3:GetObject", Some(MARKER)))
                }
            }
        }
    }

    pub(crate) async fn destroy(&self) -> Result<()> {
        if !self.marker_exists().await? {
            match self
                .client
                .head_bucket()
                .bucket(&self.bucket)
                .set_expected_bucket_owner(self.owner.clone())
                .send()
                .await
            {
                Ok(_) => {
                    return Err(Error::Permanent {
                        message: format!(
                            "refusing to delete S3 bucket {}: it is not a job store (no {MARKER} object in it)",
                            self.bucket
                        ),
                    });
                }
                Err(e) => {
                    let f = Failure::from_sdk(e);
                    if f.is_not_found() {
                        return Ok(());
                    }
                    return Err(self.err(f, "s3:ListBucket", None));
                }
            }
        }
        // The marker goes last, so an interrupted destroy can be run again.
        for round in 0.. {
            let keys = self.list_raw("").await?;
            let others: Vec<String> = keys.into_iter().filter(|k| k != MARKER).collect();
            self.delete_keys(&others).await?;
            self.abort_uploads().await?;
            self.delete(MARKER).await?;
            match self
                .client
                .delete_bucket()
                .bucket(&self.bucket)
                .set_expected_bucket_owner(self.owner.clone())
                .send()
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) => {
                    let f = Failure::from_sdk(e);
                    if f.code_is("NoSuchBucket") {
                        return Ok(());
                    }
                    if f.code_is("BucketNotEmpty") && round < 3 {
                        // Something was written meanwhile: delete again.
                        continue;
                    }
                    return Err(self.err(f, "s3:DeleteBucket", None));
                }
            }
        }
        Ok(())
    }

    /// Aborts unfinished multipart uploads (their parts cost storage and
    /// they would keep the bucket from being deleted).
    async fn abort_uploads(&self) -> Result<()> {
        let mut key_marker: Option<String> = None;
        let mut id_marker: Option<String> = None;
        loop {
            let out = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .set_expected_bucket_owner(self.owner.clone())
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send()
                .await
                .map_err(|e| self.sdk_err(e, "s3:ListBucketMultipartUploads", None))?;
            for u in out.uploads() {
                let (Some(key), Some(id)) = (u.key(), u.upload_id()) else {
                    continue;
                };
                self.abort_upload(key, id).await;
            }
            if out.is_truncated() != Some(true) {
                return Ok(());
            }
            key_marker = out.next_key_marker().map(str::to_string);
            id_marker = out.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() && id_marker.is_none() {
                return Ok(());
            }
        }
    }

    /// Best effort: a failed abort only leaves parts behind.
    pub(super) async fn abort_upload(&self, key: &str, upload_id: &str) {
        if let Err(e) = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .set_expected_bucket_owner(self.owner.clone())
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            let f = Failure::from_sdk(e);
            if !f.is_not_found() {
                tracing::warn!(bucket = %self.bucket, key, upload_id, error = %f.detail, "could not abort a multipart upload; its parts stay until a lifecycle rule or `clean` removes them");
            }
        }
    }
}
