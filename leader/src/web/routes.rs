//! The route table: exact paths, nothing else. Assets are compiled into
//! the binary; nothing is read from the file system.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{Body, WebState, api, full, response, sse, text};

/// An embedded file: path, content type, contents.
type Asset = (&'static str, &'static str, &'static str);

const JS: &str = "text/javascript; charset=utf-8";

/// The pages' files.
const ASSETS: &[Asset] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("assets/index.html"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_str!("assets/style.css"),
    ),
    ("/app.js", JS, include_str!("assets/app.js")),
    ("/util.js", JS, include_str!("assets/util.js")),
    ("/jobs.js", JS, include_str!("assets/jobs.js")),
    ("/graph.js", JS, include_str!("assets/graph.js")),
    ("/timeline.js", JS, include_str!("assets/timeline.js")),
    ("/log.js", JS, include_str!("assets/log.js")),
    (
        "/favicon.svg",
        "image/svg+xml",
        include_str!("assets/favicon.svg"),
    ),
];

/// Answers an authenticated GET or HEAD.
pub(super) async fn route(state: &Arc<WebState>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    if let Some((_, ct, body)) = ASSETS.iter().find(|(p, _, _)| *p == path) {
        let mut r = response(StatusCode::OK, ct, full(*body));
        // Assets change only with the binary; pages and APIs stay no-store.
        if path != "/" {
            r.headers_mut().insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("private, max-age=60"),
            );
        }
        return r;
    }
    let query = req.uri().query().unwrap_or("");
    match path {
        "/metrics" => super::metrics::serve(state, req.headers()),
        "/api/workflow" => api::workflow(state).await,
        "/api/jobs" => api::jobs(state, query).await,
        "/api/job" => api::job(state, query).await,
        "/api/graph" => api::graph(state).await,
        "/api/timeline" => api::timeline(state).await,
        "/api/events" => sse::events(state, &req).await,
        "/api/log" => sse::log(state, &req).await,
        _ => text(
            StatusCode::NOT_FOUND,
            format!("no page {path:?} in this web view; start at /\n"),
        ),
    }
}
