//! Errors: the `Status` bodies the API returns, and the emulator's own
//! start-up errors.
//!
//! Clients branch on `code` and `reason` (kube-rs's `ErrorResponse`,
//! client-go's `IsNotFound`...), and people read `message`, so every variant
//! renders exactly the wording a real apiserver uses.

use serde_json::{Value, json};

/// How a resource is named in messages: `jobs.batch`, or `pods` for the core
/// group. `kind` in `details` is the plural resource name, as the apiserver
/// reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QualifiedResource {
    /// API group, empty for core.
    pub group: String,
    /// Plural resource name (`jobs`).
    pub resource: String,
}

impl QualifiedResource {
    /// Builds one from a group and a plural name.
    pub fn new(group: &str, resource: &str) -> Self {
        Self {
            group: group.to_string(),
            resource: resource.to_string(),
        }
    }
}

impl std::fmt::Display for QualifiedResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.group.is_empty() {
            write!(f, "{}", self.resource)
        } else {
            write!(f, "{}.{}", self.resource, self.group)
        }
    }
}

/// An API failure, rendered as a `meta.k8s.io/v1` `Status`.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    /// HTTP status code, also `Status.code`.
    pub code: u16,
    /// Machine-readable `Status.reason` (`NotFound`, `Forbidden`...).
    pub reason: &'static str,
    /// Human-readable `Status.message`.
    pub message: String,
    /// `Status.details`, when the apiserver sends one.
    pub details: Option<Value>,
    /// Seconds for a `Retry-After` header (429 and some 5xx).
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String) -> Self {
        Self {
            code,
            reason,
            message,
            details: None,
            retry_after: None,
        }
    }

    fn with_details(mut self, qr: &QualifiedResource, name: &str) -> Self {
        let mut d = json!({"group": qr.group, "kind": qr.resource});
        if !name.is_empty() {
            d["name"] = json!(name);
        }
        self.details = Some(d);
        self
    }

    /// 400 for malformed requests and bodies.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into())
    }

    /// 401 for a missing or unknown token.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized".into())
    }

    /// 403 from the RBAC authorizer, worded like the real one.
    pub fn forbidden_rbac(
        qr: &QualifiedResource,
        subresource: &str,
        name: &str,
        user: &str,
        verb: &str,
        namespace: &str,
    ) -> Self {
        let object = if name.is_empty() {
            format!("{qr}")
        } else {
            format!("{qr} \"{name}\"")
        };
        let resource = if subresource.is_empty() {
            qr.resource.clone()
        } else {
            format!("{}/{}", qr.resource, subresource)
        };
        let scope = if namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace \"{namespace}\"")
        };
        Self::new(
            403,
            "Forbidden",
            format!(
                "{object} is forbidden: User \"{user}\" cannot {verb} resource \"{resource}\" in API group \"{}\" {scope}",
                qr.group
            ),
        )
        .with_details(qr, name)
    }

    /// 403 for a non-resource URL (`/metrics`...).
    pub fn forbidden_path(user: &str, verb: &str, path: &str) -> Self {
        Self::new(
            403,
            "Forbidden",
            format!("forbidden: User \"{user}\" cannot {verb} path \"{path}\""),
        )
        .with_details_value(json!({}))
    }

    /// 403 raised by an admission check, such as a missing service account.
    pub fn forbidden(qr: &QualifiedResource, name: &str, why: &str) -> Self {
        let object = if name.is_empty() {
            format!("{qr}")
        } else {
            format!("{qr} \"{name}\"")
        };
        Self::new(403, "Forbidden", format!("{object} is forbidden: {why}")).with_details(qr, name)
    }

    fn with_details_value(mut self, v: Value) -> Self {
        self.details = Some(v);
        self
    }

    /// 404 for an object that does not exist.
    pub fn not_found(qr: &QualifiedResource, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{qr} \"{name}\" not found")).with_details(qr, name)
    }

    /// 404 for a URL that names no resource.
    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
        )
        .with_details_value(json!({}))
    }

    /// 405 for a verb the resource does not support.
    pub fn method_not_allowed(qr: &QualifiedResource, verb: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!(
                "the server does not allow this method on the requested resource ({verb} {qr})"
            ),
        )
        .with_details(qr, "")
    }

    /// 409 for a create whose name is taken.
    pub fn already_exists(qr: &QualifiedResource, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{qr} \"{name}\" already exists"),
        )
        .with_details(qr, name)
    }

    /// 409 for an update against a stale resourceVersion.
    pub fn conflict(qr: &QualifiedResource, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {qr} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        )
        .with_details(qr, name)
    }

    /// 410 for a resourceVersion that fell out of the history window.
    pub fn expired(requested: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// 422 with one field-level cause per problem, like the apiserver's
    /// aggregated validation errors.
    pub fn invalid(kind: &str, group: &str, name: &str, causes: &[FieldError]) -> Self {
        let kind_group = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let rendered: Vec<String> = causes.iter().map(FieldError::render).collect();
        let message = if rendered.len() == 1 {
            format!("{kind_group} \"{name}\" is invalid: {}", rendered[0])
        } else {
            format!(
                "{kind_group} \"{name}\" is invalid: [{}]",
                rendered.join(", ")
            )
        };
        let mut err = Self::new(422, "Invalid", message);
        err.details = Some(json!({
            "name": name,
            "group": group,
            "kind": kind,
            "causes": causes.iter().map(|c| json!({
                "reason": c.reason,
                "message": c.detail_message(),
                "field": c.field,
            })).collect::<Vec<_>>(),
        }));
        err
    }

    /// 429, optionally injected by a fault rule.
    pub fn too_many_requests(retry_after: u64) -> Self {
        let mut err = Self::new(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.".into(),
        );
        err.details = Some(json!({"retryAfterSeconds": retry_after}));
        err.retry_after = Some(retry_after);
        err
    }

    /// 500 with the apiserver's `InternalError` wording.
    pub fn internal(why: &str) -> Self {
        let mut err = Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {why}"),
        );
        err.details = Some(json!({"causes": [{"message": why}]}));
        err
    }

    /// 504 for a list or watch asking for a resourceVersion from the future.
    pub fn too_large_resource_version(requested: u64, current: u64) -> Self {
        let mut err = Self::new(
            504,
            "Timeout",
            format!("Timeout: Too large resource version: {requested}, current: {current}"),
        );
        err.details = Some(
            json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1}),
        );
        err.retry_after = Some(1);
        err
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

/// One field-level validation failure.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueTooLong`...
    pub reason: &'static str,
    /// The field path (`metadata.name`).
    pub field: String,
    /// The offending value, quoted in the message when present.
    pub value: Option<String>,
    /// What is wrong with it.
    pub detail: String,
}

impl FieldError {
    /// An invalid value.
    pub fn invalid(
        field: impl Into<String>,
        value: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            reason: "FieldValueInvalid",
            field: field.into(),
            value: Some(value.into()),
            detail: detail.into(),
        }
    }

    /// A missing value.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            reason: "FieldValueRequired",
            field: field.into(),
            value: None,
            detail: detail.into(),
        }
    }

    /// A value from outside a fixed set.
    pub fn not_supported(
        field: impl Into<String>,
        value: impl Into<String>,
        allowed: &[&str],
    ) -> Self {
        let quoted: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
        Self {
            reason: "FieldValueNotSupported",
            field: field.into(),
            value: Some(value.into()),
            detail: format!("supported values: {}", quoted.join(", ")),
        }
    }

    fn detail_message(&self) -> String {
        match (&self.value, self.reason) {
            (Some(v), "FieldValueNotSupported") => {
                format!("Unsupported value: \"{v}\": {}", self.detail)
            }
            (Some(v), _) => format!("Invalid value: \"{v}\": {}", self.detail),
            (None, _) => format!("Required value: {}", self.detail),
        }
    }

    fn render(&self) -> String {
        format!("{}: {}", self.field, self.detail_message())
    }
}

/// Errors starting or driving the emulator (not API responses).
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// A configuration value that cannot work.
    #[error("invalid emulator configuration: {0}")]
    Config(String),
    /// A file or socket operation failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Generating the TLS material failed.
    #[error("cannot set up TLS")]
    Tls(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// An RBAC or manifest file could not be used.
    #[error("cannot load {path}: {why}")]
    Manifest {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
    /// An API-level operation was refused.
    #[error("api: {0}")]
    Api(#[from] ApiError),
    /// The object named by a fault-injection call does not exist.
    #[error("{0} not found")]
    NotFound(String),
}

impl EmulatorError {
    /// Wraps an I/O error with what was being attempted.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}
