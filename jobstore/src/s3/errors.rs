//! Turning S3 SDK failures into [`Error`]s a caller can act on, with
//! messages that say what to change for the problems retrying cannot fix.

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

use crate::error::Error;

/// The message for a missing credential chain; tests look for it.
pub const NO_CREDENTIALS: &str = "no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, configure ~/.aws/credentials, or on Kubernetes set TOIL_AWS_SECRET_NAME";

/// What failed, reduced to what the mapping needs.
#[derive(Debug)]
pub(crate) struct Failure {
    /// HTTP status of the answer, if one came.
    pub status: Option<u16>,
    /// S3 error code (`NoSuchKey`, `SlowDown`, ...).
    pub code: Option<String>,
    /// S3's message.
    pub message: Option<String>,
    /// The bucket's region, when S3 said (`x-amz-bucket-region` or the
    /// `<Region>` of the error body).
    pub bucket_region: Option<String>,
    /// No answer came: a timeout or a connection error.
    pub transport: bool,
    /// Loading credentials failed.
    pub credentials: Option<String>,
    /// The full error chain, for messages.
    pub detail: String,
}

impl Failure {
    pub(crate) fn from_sdk<E>(err: SdkError<E, HttpResponse>) -> Failure
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code().map(str::to_string);
        let message = err.message().map(str::to_string);
        let bucket_region = err.raw_response().and_then(|r| {
            r.headers()
                .get("x-amz-bucket-region")
                .map(str::to_string)
                .or_else(|| {
                    let body = std::str::from_utf8(r.body().bytes()?).ok()?;
                    let start = body.find("<Region>")? + "<Region>".len();
                    let end = body[start..].find("</Region>")? + start;
                    Some(body[start..end].to_string())
                })
        });
        let transport = matches!(
            err,
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_)
        ) || matches!(&err, SdkError::ResponseError(_));
        let credentials = credentials_error(&err);
        let detail = chain(&err);
        Failure {
            status,
            code,
            message,
            bucket_region,
            transport: transport && credentials.is_none(),
            credentials,
            detail,
        }
    }

    /// A failure that did not come from the SDK (a response body that broke
    /// off, a short read).
    pub(crate) fn transport(detail: String) -> Failure {
        Failure {
            status: None,
            code: None,
            message: None,
            bucket_region: None,
            transport: true,
            credentials: None,
            detail,
        }
    }

    pub(crate) fn code_is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    /// 404 of any kind.
    pub(crate) fn is_not_found(&self) -> bool {
        self.status == Some(404)
    }

    /// True when retrying the same request may succeed.
    pub(crate) fn is_transient(&self) -> bool {
        if self.credentials.is_some() {
            return false;
        }
        if self.transport {
            return true;
        }
        let code = self.code.as_deref().unwrap_or("");
        matches!(
            code,
            "SlowDown"
                | "InternalError"
                | "ServiceUnavailable"
                | "RequestTimeout"
                | "RequestTimeoutException"
                | "Throttling"
                | "ThrottlingException"
                | "RequestThrottled"
                | "TooManyRequests"
                | "ConditionalRequestConflict"
                | "OperationAborted"
                | "ExpiredToken"
                | "TokenRefreshRequired"
                | "IncompleteBody"
        ) || matches!(self.status, Some(429) | Some(500..=599))
    }
}

/// The messages of an error and its sources, joined with ": " (a message
/// that merely repeats the previous one is left out).
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let msg = e.to_string();
        if !msg.is_empty() && out.last().is_none_or(|prev| !prev.ends_with(&msg)) {
            out.push(msg);
        }
        cur = e.source();
    }
    out.join(": ")
}

/// A credential-loading failure anywhere in the error's source chain.
fn credentials_error(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(ce) = e.downcast_ref::<CredentialsError>() {
            return Some(chain(ce));
        }
        cur = e.source();
    }
    None
}

/// Names the store, bucket, region and key a message is about.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Target<'a> {
    pub locator: &'a str,
    pub bucket: &'a str,
    pub region: &'a str,
    pub name: &'a str,
    pub key: Option<&'a str>,
}

/// Maps a failure of S3 operation `op` (an IAM action name such as
/// `s3:PutObject`) to an [`Error`].
pub(crate) fn to_error(f: Failure, op: &str, t: Target<'_>) -> Error {
    let Target {
        locator,
        bucket,
        region,
        name,
        key,
    } = t;
    if let Some(cause) = &f.credentials {
        return Error::Permanent {
            message: format!("{NO_CREDENTIALS} (job store {locator}: {cause})"),
        };
    }
    let what = match key {
        Some(k) => format!("{op} of {k} in bucket {bucket}"),
        None => format!("{op} on bucket {bucket}"),
    };
    // "HTTP 403 AccessDenied: Access Denied", leaving out what S3 did not say.
    let s3_says = || {
        let status = f.status.map(|s| format!("HTTP {s}"));
        let head = [status.as_deref(), f.code.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        match f.message.as_deref() {
            None => head,
            Some(m) if head.is_empty() => m.to_string(),
            Some(m) => format!("{head}: {m}"),
        }
    };
    if f.status == Some(412) {
        return Error::PreconditionFailed {
            store: locator.to_string(),
            key: key.unwrap_or("").to_string(),
        };
    }
    if f.code_is("NoSuchBucket") {
        return Error::Permanent {
            message: format!(
                "job store {locator} does not exist: S3 bucket {bucket} not found in {region}; check the name and region, or create the store first (toil-leader does on a new run)"
            ),
        };
    }
    if f.is_not_found()
        && let Some(k) = key
    {
        return Error::NotFound {
            store: locator.to_string(),
            key: k.to_string(),
        };
    }
    let wrong_region = f.status == Some(301)
        || f.code_is("PermanentRedirect")
        || f.code_is("AuthorizationHeaderMalformed")
        || f.code_is("IllegalLocationConstraintException")
        || f.code_is("IncompatibleLocationConstraint")
        || f.code_is("InvalidLocationConstraint")
        || (f.bucket_region.as_deref().is_some_and(|r| r != region) && f.status == Some(400));
    if wrong_region {
        return Error::Permanent {
            message: wrong_region_message(
                locator,
                bucket,
                region,
                name,
                f.bucket_region.as_deref(),
            ),
        };
    }
    if f.code_is("InvalidAccessKeyId") {
        return Error::Permanent {
            message: format!(
                "S3 does not recognise the AWS access key id in use ({what} refused: {}): fix AWS_ACCESS_KEY_ID, the profile in ~/.aws/credentials, or the TOIL_AWS_SECRET_NAME secret",
                s3_says()
            ),
        };
    }
    if f.code_is("SignatureDoesNotMatch") {
        return Error::Permanent {
            message: format!(
                "S3 rejected the request signature ({what}): the AWS secret access key does not match the key id; fix AWS_SECRET_ACCESS_KEY, ~/.aws/credentials, or the TOIL_AWS_SECRET_NAME secret"
            ),
        };
    }
    if f.code_is("RequestTimeTooSkewed") {
        return Error::Permanent {
            message: format!(
                "S3 refused {what} because this machine's clock is too far off ({}); synchronise the clock (NTP)",
                s3_says()
            ),
        };
    }
    if f.code_is("BucketAlreadyExists") {
        return Error::Permanent {
            message: bucket_taken_message(locator, bucket),
        };
    }
    if f.code_is("InvalidBucketName") {
        return Error::Permanent {
            message: format!(
                "S3 refused the bucket name {bucket} of job store {locator} as invalid; choose another NAME in aws:REGION:NAME (lowercase letters, digits and single hyphens)"
            ),
        };
    }
    if f.status == Some(403) || f.code_is("AccessDenied") || f.code_is("AllAccessDisabled") {
        return Error::Permanent {
            message: format!(
                "access denied: {what} was refused ({}); grant the credentials in use {op} on arn:aws:s3:::{bucket} and arn:aws:s3:::{bucket}/* in their IAM policy, or, if the bucket belongs to another AWS account, choose another job store name",
                s3_says()
            ),
        };
    }
    if f.is_transient() {
        return Error::Transient {
            message: format!(
                "S3 {what} failed after retries: {}",
                if f.transport {
                    f.detail.clone()
                } else {
                    s3_says()
                }
            ),
        };
    }
    Error::Permanent {
        message: format!(
            "S3 {what} failed: {} ({})",
            if f.status.is_some() {
                s3_says()
            } else {
                "no answer".to_string()
            },
            f.detail
        ),
    }
}

pub(crate) fn wrong_region_message(
    locator: &str,
    bucket: &str,
    region: &str,
    name: &str,
    actual: Option<&str>,
) -> String {
    match actual {
        Some(actual) if actual != region => format!(
            "S3 bucket {bucket} is in region {actual}, not {region}: use --jobStore aws:{actual}:{name} (job store {locator})"
        ),
        _ => format!(
            "S3 bucket {bucket} is not in region {region} (S3 redirected the request): use the bucket's region in --jobStore aws:REGION:{name} (job store {locator})"
        ),
    }
}

pub(crate) fn bucket_taken_message(locator: &str, bucket: &str) -> String {
    format!(
        "the S3 bucket {bucket} already exists and is owned by another AWS account (bucket names are global); choose another job store name than in {locator}"
    )
}

/// Checks the S3 bucket-name rules the locator parser leaves to S3, so a bad
/// name fails before any request. The locator already ensures lowercase
/// letters, digits, '-' and '.', the length, and no "--".
pub(crate) fn check_bucket_name(bucket: &str, locator: &str) -> Result<(), Error> {
    let reason = if bucket.contains("..") {
        Some("two adjacent periods")
    } else if bucket.contains(".-") || bucket.contains("-.") {
        Some("a period next to a hyphen")
    } else if bucket.starts_with("xn--") || bucket.starts_with("sthree-") {
        Some("a prefix S3 reserves (xn--, sthree-)")
    } else if bucket.starts_with("amzn-s3-demo-") {
        Some("the reserved prefix amzn-s3-demo-")
    } else if bucket.split('.').count() == 4
        && bucket
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    {
        Some("the form of an IP address")
    } else {
        None
    };
    match reason {
        Some(r) => Err(Error::Permanent {
            message: format!(
                "job store {locator}: {bucket} is not a valid S3 bucket name ({r}); choose another NAME in aws:REGION:NAME"
            ),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_are_checked_before_any_request() {
        for bad in [
            "my..run--toil",
            "a.-b--toil",
            "sthree-x--toil",
            "xn--a--toil",
        ] {
            let e = check_bucket_name(bad, "aws:us-east-1:x").expect_err(bad);
            assert!(e.to_string().contains("choose another NAME"), "{e}");
        }
        for good in ["my-run--toil", "a.b--toil", "run1--toil"] {
            assert!(check_bucket_name(good, "aws:us-east-1:x").is_ok(), "{good}");
        }
    }

    #[test]
    fn wrong_region_names_the_fix() {
        let m = wrong_region_message(
            "aws:us-east-1:r",
            "r--toil",
            "us-east-1",
            "r",
            Some("eu-west-1"),
        );
        assert!(m.contains("aws:eu-west-1:r"), "{m}");
    }
}
