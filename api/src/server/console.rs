//! The web console (issue 19), served from the binary at `/` with its files under
//! `/console/`. It is a static page that talks to the public GraphQL API only, with the
//! token the user signs in with (kept in the tab's session storage, never in a URL), so it
//! is also an example for dashboard authors. Nothing is fetched from elsewhere: the graph
//! drawing library, Cytoscape.js 3.35.0 from npm (MIT; licence beside it in
//! `api/assets/console/`), is built in like the console's own scripts.

use axum::extract::Path;
use axum::response::Response;

use super::static_files::{self, Asset};

const JS: &str = "text/javascript; charset=utf-8";

/// Every file the console loads: name, content type, bytes.
const ASSETS: &[Asset] = &[
    ("cytoscape.min.js", JS, include_bytes!("../../assets/console/cytoscape.min.js")),
    ("console.css", "text/css; charset=utf-8", include_bytes!("../../assets/console/console.css")),
    ("dom.js", JS, include_bytes!("../../assets/console/dom.js")),
    ("api.js", JS, include_bytes!("../../assets/console/api.js")),
    ("moment.js", JS, include_bytes!("../../assets/console/moment.js")),
    ("views.js", JS, include_bytes!("../../assets/console/views.js")),
    ("picture.js", JS, include_bytes!("../../assets/console/picture.js")),
    ("live.js", JS, include_bytes!("../../assets/console/live.js")),
    ("app.js", JS, include_bytes!("../../assets/console/app.js")),
    ("LICENSE.cytoscape", "text/plain; charset=utf-8", include_bytes!("../../assets/console/LICENSE.cytoscape")),
];

/// The console's page (`GET /`).
pub async fn page() -> Response {
    static_files::page(include_bytes!("../../assets/console/index.html"))
}

/// One of the console's files (`GET /console/{file}`).
pub async fn asset(Path(file): Path<String>) -> Response {
    static_files::serve(ASSETS, &file)
}
