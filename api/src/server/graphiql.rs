//! GraphiQL, served from the binary: the page and every file it loads come from this server,
//! so its Content-Security-Policy can forbid anything from elsewhere (issue 20). The files
//! are GraphiQL 3.8.3 and React 18.3.1 as published on npm (MIT; licences beside them in
//! `api/assets/graphiql/`).

use axum::extract::Path;
use axum::response::Response;

use super::static_files::{self, Asset};

const JS: &str = "text/javascript; charset=utf-8";

/// Every file the page loads: name, content type, bytes.
const ASSETS: &[Asset] = &[
    ("graphiql.min.js", JS, include_bytes!("../../assets/graphiql/graphiql.min.js")),
    ("graphiql.min.css", "text/css; charset=utf-8", include_bytes!("../../assets/graphiql/graphiql.min.css")),
    ("react.production.min.js", JS, include_bytes!("../../assets/graphiql/react.production.min.js")),
    ("react-dom.production.min.js", JS, include_bytes!("../../assets/graphiql/react-dom.production.min.js")),
    ("init.js", JS, include_bytes!("../../assets/graphiql/init.js")),
    ("page.css", "text/css; charset=utf-8", include_bytes!("../../assets/graphiql/page.css")),
];

/// The page (`GET /graphql`).
pub async fn page() -> Response {
    static_files::page(include_bytes!("../../assets/graphiql/index.html"))
}

/// One of the page's files (`GET /graphiql/{file}`).
pub async fn asset(Path(file): Path<String>) -> Response {
    static_files::serve(ASSETS, &file)
}
