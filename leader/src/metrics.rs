//! The leader's metrics, served as `/metrics` in the Prometheus text format.
//!
//! One [`Metrics`] per run, shared by the parts that count (the driver, the
//! batch systems, the job store, the log hub) and by the web server that
//! encodes it. Labels are bounded: job names, verbs, codes and causes, never
//! job ids.

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

/// Every metric of one leader run.
pub struct Metrics {
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every metric at zero.
    pub fn new() -> Self {
        let registry = Registry::with_prefix("toil");
        Metrics { registry }
    }

    /// The Prometheus text exposition (OpenMetrics text, version 1.0.0).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
