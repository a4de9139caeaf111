//! Request-level fault injection and the per-verb request counters.
//!
//! Both sit in front of every API request (after authentication, where a real
//! apiserver's priority-and-fairness filter sits), so injected 429s and 500s
//! look to clients exactly like the real ones, and benchmarks can read how
//! many calls of each kind a workload made.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::ApiError;

/// Fail the next `count` matching requests.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RequestFault {
    /// How many requests to fail.
    pub count: u32,
    /// 429 (with Retry-After) or any 5xx.
    pub code: u16,
    /// Only requests with this verb (`create`, `list`...), if set.
    #[serde(default)]
    pub verb: Option<String>,
    /// Only requests for this resource (`jobs`, `pods/log`), if set.
    #[serde(default)]
    pub resource: Option<String>,
    /// Seconds in the `Retry-After` header of a 429.
    #[serde(default = "default_retry_after")]
    pub retry_after_seconds: u64,
}

fn default_retry_after() -> u64 {
    1
}

impl RequestFault {
    /// Fails the next `count` requests of any kind with 429, Retry-After 1.
    pub fn too_many_requests(count: u32) -> Self {
        Self {
            count,
            code: 429,
            verb: None,
            resource: None,
            retry_after_seconds: 1,
        }
    }

    /// Fails the next `count` requests of any kind with 500.
    pub fn internal_error(count: u32) -> Self {
        Self {
            count,
            code: 500,
            verb: None,
            resource: None,
            retry_after_seconds: 1,
        }
    }

    /// Restricts the fault to one verb.
    pub fn verb(mut self, verb: &str) -> Self {
        self.verb = Some(verb.into());
        self
    }

    /// Restricts the fault to one resource (`jobs`, `pods/log`).
    pub fn resource(mut self, resource: &str) -> Self {
        self.resource = Some(resource.into());
        self
    }

    fn matches(&self, verb: &str, resource: &str) -> bool {
        self.verb.as_deref().is_none_or(|v| v == verb)
            && self.resource.as_deref().is_none_or(|r| r == resource)
    }

    fn error(&self) -> ApiError {
        match self.code {
            429 => ApiError::too_many_requests(self.retry_after_seconds),
            503 => {
                let mut e = ApiError::internal("injected fault");
                e.code = 503;
                e.reason = "ServiceUnavailable";
                e.message = "the server is currently unable to handle the request".into();
                e.retry_after = Some(self.retry_after_seconds);
                e
            }
            code => {
                let mut e = ApiError::internal("injected fault");
                e.code = code;
                e
            }
        }
    }
}

/// Counts of API requests, keyed by `(verb, resource)`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RequestCounts {
    /// `verb -> resource -> count`; resource includes the subresource
    /// (`pods/log`), or is the URL path for non-resource requests.
    pub by_verb: BTreeMap<String, BTreeMap<String, u64>>,
}

impl RequestCounts {
    /// Requests with one verb on one resource.
    pub fn get(&self, verb: &str, resource: &str) -> u64 {
        self.by_verb
            .get(verb)
            .and_then(|m| m.get(resource))
            .copied()
            .unwrap_or(0)
    }

    /// Requests with one verb on any resource.
    pub fn verb_total(&self, verb: &str) -> u64 {
        self.by_verb
            .get(verb)
            .map(|m| m.values().sum())
            .unwrap_or(0)
    }

    /// All requests.
    pub fn total(&self) -> u64 {
        self.by_verb.values().flat_map(|m| m.values()).sum()
    }
}

/// Live fault rules and counters.
#[derive(Debug, Default)]
pub struct Faults {
    /// Pending request faults, first match wins.
    rules: Vec<RequestFault>,
    /// Counters since start or the last reset.
    counts: RequestCounts,
}

impl Faults {
    /// Adds a rule.
    pub fn add(&mut self, rule: RequestFault) {
        if rule.count > 0 {
            self.rules.push(rule);
        }
    }

    /// Removes every pending rule.
    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// Counts a request and returns the injected error, if a rule matches.
    pub fn on_request(&mut self, verb: &str, resource: &str) -> Option<ApiError> {
        *self
            .counts
            .by_verb
            .entry(verb.to_string())
            .or_default()
            .entry(resource.to_string())
            .or_default() += 1;
        let idx = self.rules.iter().position(|r| r.matches(verb, resource))?;
        let err = self.rules[idx].error();
        self.rules[idx].count -= 1;
        if self.rules[idx].count == 0 {
            self.rules.remove(idx);
        }
        Some(err)
    }

    /// A snapshot of the counters.
    pub fn counts(&self) -> RequestCounts {
        self.counts.clone()
    }

    /// Zeroes the counters.
    pub fn reset_counts(&mut self) {
        self.counts = RequestCounts::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_fire_count_times_and_filter() {
        let mut f = Faults::default();
        f.add(
            RequestFault::too_many_requests(2)
                .verb("create")
                .resource("jobs"),
        );
        assert!(f.on_request("list", "jobs").is_none());
        let e = f.on_request("create", "jobs");
        assert_eq!(
            e.as_ref().map(|e| (e.code, e.retry_after)),
            Some((429, Some(1)))
        );
        assert!(f.on_request("create", "jobs").is_some());
        assert!(f.on_request("create", "jobs").is_none());
        assert_eq!(f.counts().get("create", "jobs"), 3);
        assert_eq!(f.counts().total(), 4);
        f.add(RequestFault::internal_error(1));
        assert_eq!(f.on_request("get", "pods").map(|e| e.code), Some(500));
    }
}
