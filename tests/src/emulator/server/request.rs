//! Turns a method and URL into the apiserver's request attributes: verb,
//! resource, subresource, namespace and name (what RBAC and the counters
//! are keyed on).

use std::collections::HashMap;

use crate::emulator::error::ApiError;
use crate::emulator::resources::{self, ResourceType};

/// A request for a resource.
#[derive(Clone, Debug)]
pub struct ResourceRequest {
    /// RBAC verb.
    pub verb: &'static str,
    /// The resource.
    pub resource: &'static ResourceType,
    /// Subresource, empty if none.
    pub subresource: String,
    /// Namespace; empty for cluster scope or an all-namespaces list.
    pub namespace: String,
    /// Object name; empty for collections.
    pub name: String,
}

impl ResourceRequest {
    /// `pods` or `pods/log`, as counted and matched by fault rules.
    pub fn resource_key(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.plural.to_string()
        } else {
            format!("{}/{}", self.resource.plural, self.subresource)
        }
    }
}

/// What a URL addresses.
#[derive(Clone, Debug)]
pub enum Target {
    /// A resource request.
    Resource(ResourceRequest),
    /// Discovery, `/version` and other non-resource paths.
    NonResource(String),
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes a query component (`+` is a space).
pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a query string into a map (last value wins).
pub fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    let mut m = HashMap::new();
    for pair in q.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        m.insert(decode(k), decode(v));
    }
    m
}

/// Whether a boolean query flag is set (`watch=1`, `watch=true`).
pub fn flag(q: &HashMap<String, String>, key: &str) -> bool {
    q.get(key).is_some_and(|v| v == "1" || v == "true")
}

/// Parses a path and method.
pub fn parse(
    method: &http::Method,
    path: &str,
    query: &HashMap<String, String>,
) -> Result<Target, ApiError> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] if !rest.is_empty() => ("", "v1", rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => return Ok(Target::NonResource(path.to_string())),
    };
    let (legacy_watch, rest) = match rest {
        ["watch", r @ ..] => (true, r),
        r => (false, r),
    };
    let (namespace, plural, name, sub) = match rest {
        ["namespaces"] => ("", "namespaces", "", ""),
        ["namespaces", n] => ("", "namespaces", *n, ""),
        ["namespaces", n, s] if group.is_empty() && (*s == "status" || *s == "finalize") => {
            ("", "namespaces", *n, *s)
        }
        ["namespaces", ns, r] => (*ns, *r, "", ""),
        ["namespaces", ns, r, n] => (*ns, *r, *n, ""),
        ["namespaces", ns, r, n, s] => (*ns, *r, *n, *s),
        [r] => ("", *r, "", ""),
        [r, n] => ("", *r, *n, ""),
        [r, n, s] => ("", *r, *n, *s),
        _ => return Err(ApiError::path_not_found()),
    };
    let resource = resources::find(group, version, plural).ok_or_else(ApiError::path_not_found)?;
    if !resource.namespaced && !namespace.is_empty() {
        return Err(ApiError::path_not_found());
    }
    if resource.namespaced && namespace.is_empty() && !name.is_empty() {
        return Err(ApiError::path_not_found());
    }
    if !sub.is_empty() && !resource.subresources.contains(&sub) && sub != "finalize" {
        return Err(ApiError::path_not_found());
    }
    let watch = legacy_watch || flag(query, "watch");
    let verb = match *method {
        http::Method::GET | http::Method::HEAD => {
            if watch {
                "watch"
            } else if name.is_empty() {
                "list"
            } else {
                "get"
            }
        }
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => {
            if name.is_empty() {
                "deletecollection"
            } else {
                "delete"
            }
        }
        _ => {
            return Err(ApiError::method_not_allowed(
                &resource.qualified(),
                method.as_str(),
            ));
        }
    };
    if verb == "create" && !name.is_empty() && sub.is_empty() {
        return Err(ApiError::method_not_allowed(&resource.qualified(), "POST"));
    }
    Ok(Target::Resource(ResourceRequest {
        verb,
        resource,
        subresource: sub.to_string(),
        namespace: namespace.to_string(),
        name: name.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(method: http::Method, path: &str, q: &str) -> Option<ResourceRequest> {
        match parse(&method, path, &parse_query(Some(q))) {
            Ok(Target::Resource(r)) => Some(r),
            _ => None,
        }
    }

    #[test]
    fn parses_resource_paths() {
        let r = res(
            http::Method::GET,
            "/apis/batch/v1/namespaces/toil/jobs",
            "watch=1",
        );
        assert_eq!(
            r.map(|r| (r.verb, r.resource.plural, r.namespace)),
            Some(("watch", "jobs", "toil".to_string()))
        );
        let r = res(http::Method::GET, "/api/v1/namespaces/toil/pods/p1/log", "");
        assert_eq!(
            r.map(|r| (r.verb, r.resource_key(), r.name)),
            Some(("get", "pods/log".to_string(), "p1".to_string()))
        );
        let r = res(http::Method::DELETE, "/api/v1/namespaces/toil/pods", "");
        assert_eq!(r.map(|r| r.verb), Some("deletecollection"));
        let r = res(http::Method::GET, "/api/v1/namespaces/toil", "");
        assert_eq!(
            r.map(|r| (r.resource.plural, r.name)),
            Some(("namespaces", "toil".to_string()))
        );
        let r = res(http::Method::GET, "/api/v1/pods", "");
        assert_eq!(
            r.map(|r| (r.verb, r.namespace)),
            Some(("list", String::new()))
        );
        assert!(res(http::Method::GET, "/api/v1/namespaces/x/nodes", "").is_none());
        assert!(res(http::Method::GET, "/api/v1/namespaces/x/widgets", "").is_none());
        assert!(matches!(
            parse(&http::Method::GET, "/version", &HashMap::new()),
            Ok(Target::NonResource(_))
        ));
    }

    #[test]
    fn decodes_queries() {
        let q = parse_query(Some("labelSelector=a%3Db%2Cc+in+%28x%29&watch=true"));
        assert_eq!(
            q.get("labelSelector").map(String::as_str),
            Some("a=b,c in (x)")
        );
        assert!(flag(&q, "watch"));
    }
}
