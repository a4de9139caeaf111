//! The route table: exact paths, nothing else. Assets are compiled into
//! the binary; nothing is read from the file system.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{Body, WebState, full, response, text};

/// An embedded file: path, content type, contents.
type Asset = (&'static str, &'static str, &'static str);

/// The pages' files.
const ASSETS: &[Asset] = &[(
    "/",
    "text/html; charset=utf-8",
    include_str!("assets/index.html"),
)];

/// Answers an authenticated GET or HEAD.
pub(super) async fn route(state: &Arc<WebState>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    if let Some((_, ct, body)) = ASSETS.iter().find(|(p, _, _)| *p == path) {
        return response(StatusCode::OK, ct, full(*body));
    }
    match path {
        "/metrics" => super::metrics::serve(state),
        _ => text(
            StatusCode::NOT_FOUND,
            format!("no page {path:?} in this web view; start at /\n"),
        ),
    }
}
