//! `/metrics`: the run's metrics in the Prometheus text format.

use http::{Response, StatusCode};

use super::{Body, WebState, full, response};

/// The exposition of `state.metrics`.
pub fn serve(state: &WebState) -> Response<Body> {
    response(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        full(state.metrics.encode()),
    )
}
