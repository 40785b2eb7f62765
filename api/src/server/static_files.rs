//! Files built into the binary and served as they are: the pages of GraphiQL and of the
//! console. One lookup, one cache policy, one "no such file" answer for both.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// How long browsers may keep a file (they change only with the binary).
const ASSET_CACHE_CONTROL: &str = "public, max-age=3600";

/// One file: its name in the URL, its content type, its bytes.
pub type Asset = (&'static str, &'static str, &'static [u8]);

/// An HTML page (the security-headers layer gives it the page's Content-Security-Policy).
pub fn page(html: &'static [u8]) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

/// The file named `file` among `assets`, or 404 in the API's error shape.
pub fn serve(assets: &[Asset], file: &str) -> Response {
    match assets.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, bytes)) => {
            let mut response = ([(header::CONTENT_TYPE, *content_type)], *bytes).into_response();
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(ASSET_CACHE_CONTROL));
            response
        }
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/json")],
            super::errors::error_body("NOT_FOUND", "no such file"),
        )
            .into_response(),
    }
}
