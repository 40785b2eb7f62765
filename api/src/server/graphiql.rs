//! GraphiQL, served from the binary: the page and every file it loads come from this server,
//! so its Content-Security-Policy can forbid anything from elsewhere (issue 20). The files
//! are GraphiQL 3.8.3 and React 18.3.1 as published on npm (MIT; licences beside them in
//! `api/assets/graphiql/`).

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// How long browsers may keep the files (they change only with the binary).
const ASSET_CACHE_CONTROL: &str = "public, max-age=3600";

/// Every file the page loads: name, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("graphiql.min.js", "text/javascript; charset=utf-8", include_bytes!("../../assets/graphiql/graphiql.min.js")),
    ("graphiql.min.css", "text/css; charset=utf-8", include_bytes!("../../assets/graphiql/graphiql.min.css")),
    (
        "react.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/graphiql/react.production.min.js"),
    ),
    (
        "react-dom.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/graphiql/react-dom.production.min.js"),
    ),
    ("init.js", "text/javascript; charset=utf-8", include_bytes!("../../assets/graphiql/init.js")),
    ("page.css", "text/css; charset=utf-8", include_bytes!("../../assets/graphiql/page.css")),
];

/// The page (`GET /graphql`).
pub async fn page() -> Response {
    let html: &[u8] = include_bytes!("../../assets/graphiql/index.html");
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

/// One of the page's files (`GET /graphiql/{file}`).
pub async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
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
