//! The API from a real browser (headless Chromium, no internet): GraphiQL renders the schema
//! and runs a query with a token entered once; a dashboard page on an allowed origin calls the
//! API across origins, and one on another origin cannot.

mod common;

use common::browser::Browser;
use common::{TestServer, settings};
use serde_json::json;

/// The query editor's CodeMirror instance.
const QUERY_EDITOR: &str = "document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror";
/// The response pane's text.
const RESPONSE: &str = "document.querySelector('.graphiql-response .CodeMirror').CodeMirror.getValue()";
/// The headers editor: the CodeMirror whose text names Authorization.
const HEADERS_EDITOR: &str = "Array.from(document.querySelectorAll('.CodeMirror')).map(e => e.CodeMirror).find(c => c.getValue().includes('Authorization'))";
/// The documentation explorer's text, once opened.
const DOCS: &str = "(document.querySelector('.graphiql-doc-explorer') || {innerText: ''}).innerText";

async fn open_docs(browser: &mut Browser) {
    browser
        .eval("(() => { if (!document.querySelector('.graphiql-doc-explorer')) document.querySelector('[aria-label=\"Show Documentation Explorer\"]').click(); return true; })()")
        .await;
}

#[tokio::test]
async fn graphiql_works_offline_and_uses_the_token_for_the_schema() {
    let Some(mut browser) = Browser::start("graphiql_works_offline_and_uses_the_token_for_the_schema").await else {
        return;
    };
    let server = TestServer::start().await;
    browser.open(&server.url("/graphql")).await;
    browser.wait_for(QUERY_EDITOR).await;

    // Without a token the schema fetch is refused, and GraphiQL shows the refusal as it reads it.
    browser.wait_for(&format!("{RESPONSE}.includes('UNAUTHENTICATED')")).await;

    // The token entered once in the Headers tab: the schema is fetched again with it.
    let headers = json!({ "Authorization": format!("Bearer {}", server.admin_token) }).to_string();
    browser.eval(&format!("{HEADERS_EDITOR}.setValue({}); true", json!(headers))).await;
    open_docs(&mut browser).await;
    browser.wait_for(&format!("{DOCS}.includes('mutation:') && {DOCS}.includes('subscription:')")).await;

    // A query runs with it.
    browser.eval(&format!("{QUERY_EDITOR}.setValue('{{ head {{ position }} me {{ principal }} }}'); true")).await;
    browser.eval("document.querySelector('.graphiql-execute-button').click(); true").await;
    browser.wait_for(&format!("{RESPONSE}.includes('\"principal\": \"admin\"')")).await;

    // A reload keeps the token: the schema loads without touching the headers.
    browser.open(&server.url("/graphql")).await;
    browser.wait_for(QUERY_EDITOR).await;
    open_docs(&mut browser).await;
    browser.wait_for(&format!("{DOCS}.includes('mutation:')")).await;

    // Everything the page loaded came from this server (fonts are data: URLs in its CSS).
    let foreign = browser.foreign_resources(&server.url("")).await;
    assert_eq!(foreign, json!([]), "GraphiQL loaded files from elsewhere");
}

/// A page of a dashboard on another origin: a small server of its own.
async fn dashboard_origin() -> String {
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|| async {
            axum::response::Html("<!DOCTYPE html><title>dashboard</title><p>dashboard</p>")
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://127.0.0.1:{}", address.port())
}

/// What `fetch` from the page gives: the answer's data, or the browser's refusal.
fn fetch_script(api: &str, token: &str) -> String {
    format!(
        "fetch({}, {{ method: 'POST', headers: {{ 'Authorization': 'Bearer {token}', 'Content-Type': 'application/json', 'Accept': 'application/graphql-response+json' }}, body: JSON.stringify({{ query: '{{ me {{ principal }} }}' }}) }})
           .then(r => r.json().then(b => ({{ status: r.status, principal: b.data && b.data.me.principal, requestId: r.headers.get('x-request-id') }})))
           .catch(e => ({{ refused: String(e) }}))",
        json!(api)
    )
}

#[tokio::test]
async fn a_dashboard_on_an_allowed_origin_can_call_the_api_and_others_cannot() {
    let Some(mut browser) = Browser::start("a_dashboard_on_an_allowed_origin_can_call_the_api_and_others_cannot").await
    else {
        return;
    };
    let dashboard = dashboard_origin().await;
    let allowing = TestServer::start_with(cmdb_api::settings::ServeSettings {
        cors_allow_origins: vec![dashboard.parse().expect("origin")],
        ..settings()
    })
    .await;
    let closed = TestServer::start().await;
    browser.open(&format!("{dashboard}/")).await;

    let answer = browser.eval(&fetch_script(&allowing.url("/graphql"), &allowing.admin_token)).await;
    assert_eq!(answer["status"], json!(200), "{answer}");
    assert_eq!(answer["principal"], json!("admin"), "{answer}");
    assert!(answer["requestId"].as_str().is_some_and(|id| !id.is_empty()), "exposed: {answer}");

    let refused = browser.eval(&fetch_script(&closed.url("/graphql"), &closed.admin_token)).await;
    assert!(refused["refused"].as_str().is_some_and(|e| e.contains("Failed to fetch")), "{refused}");
}
