//! GraphQL over HTTP as generic clients expect it (graphql.github.io/graphql-over-http):
//! media types and status codes, GET for queries only, every refusal in the GraphQL error
//! shape; and CORS for an allowed origin's pages. Each refusal leaves the log as it was.

mod common;

use common::{TestServer, error_code, settings};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::{Value, json};

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

async fn post(server: &TestServer, accept: Option<&str>, token: Option<&str>, body: &str) -> (u16, String, Value) {
    let mut request = server.client.post(server.url("/graphql")).header(CONTENT_TYPE, "application/json");
    if let Some(accept) = accept {
        request = request.header(ACCEPT, accept);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.body(body.to_owned()).send().await.expect("request");
    let status = response.status().as_u16();
    let media = response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, media, body)
}

/// A request error: the GraphQL shape, a `code`, no `data` entry.
fn assert_request_error(body: &Value, code: &str) {
    assert!(body.get("data").is_none(), "a request error has no data entry: {body}");
    assert_eq!(error_code(body), code, "{body}");
    assert!(body["errors"][0]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

#[tokio::test]
async fn status_codes_follow_the_accepted_media_type() {
    let server = TestServer::start().await;
    let token = Some(server.admin_token.as_str());
    let head = server.head().await;
    let query = |q: &str| json!({ "query": q }).to_string();

    // A good query: 200 in either media type, answered in the one asked for.
    let (status, media, body) = post(&server, Some(GRAPHQL_RESPONSE), token, &query("{ head { position } }")).await;
    assert_eq!((status, media.starts_with(GRAPHQL_RESPONSE)), (200, true), "{body}");
    assert_eq!(body["data"]["head"]["position"], json!(head));
    let (status, media, _) = post(&server, Some("application/json"), token, &query("{ head { position } }")).await;
    assert_eq!((status, media.as_str()), (200, "application/json"));

    // Parse and validation errors: 400 with graphql-response+json, 200 with json; no data.
    for (text, code) in
        [("{ head { position }", "BAD_USER_INPUT"), ("{ head { noSuchField } }", "GRAPHQL_VALIDATION_FAILED")]
    {
        let (status, media, body) = post(&server, Some(GRAPHQL_RESPONSE), token, &query(text)).await;
        assert_eq!((status, media.starts_with(GRAPHQL_RESPONSE)), (400, true), "{text}: {body}");
        assert_request_error(&body, code);
        let (status, _, body) = post(&server, Some("application/json"), token, &query(text)).await;
        assert_eq!(status, 200, "{text}: {body}");
        assert_request_error(&body, code);
        let (status, _, body) = post(&server, None, token, &query(text)).await;
        assert_eq!(status, 200, "no Accept reads as application/json: {body}");
    }

    // The preferred type wins by q; a tie goes to graphql-response+json; */* is json.
    for (accept, expected) in [
        ("application/json;q=0.9, application/graphql-response+json", GRAPHQL_RESPONSE),
        ("application/graphql-response+json;q=0.5, application/json", "application/json"),
        ("application/json, application/graphql-response+json", GRAPHQL_RESPONSE),
        ("*/*", "application/json"),
        ("text/html, */*;q=0.8", "application/json"),
    ] {
        let (status, media, _) = post(&server, Some(accept), token, &query("{ head { position } }")).await;
        assert_eq!(status, 200, "{accept}");
        assert!(media.starts_with(expected), "{accept}: {media}");
    }
    let (status, _, body) = post(&server, Some("text/html"), token, &query("{ head { position } }")).await;
    assert_eq!(status, 406, "{body}");
    assert_eq!(error_code(&body), "NOT_ACCEPTABLE");

    // A field error is not a request error: data is there, 200 in either type.
    let (status, _, body) = post(
        &server,
        Some(GRAPHQL_RESPONSE),
        token,
        &query(r#"{ at { conflicts(change: "CHG-999999") { otherNumber } } }"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("data").is_some(), "{body}");
    assert_eq!(error_code(&body), "NOT_FOUND", "{body}");
    assert_eq!(server.head().await, head, "nothing was written");
}

#[tokio::test]
async fn transport_refusals_are_graphql_errors_with_their_status() {
    let server =
        TestServer::start_with(cmdb_api::settings::ServeSettings { max_request_body_bytes: 2048, ..settings() }).await;
    let head = server.head().await;
    let token = Some(server.admin_token.as_str());
    let mutation = json!({ "query": r#"mutation { createPrincipal(input: {name: "x", kind: SYSTEM, roles: [VIEWER]}) { position } }"# })
        .to_string();

    // No token, a malformed one: 401 with the challenge kept, in the negotiated type.
    for bad in [None, Some("cmdb_not-a-token")] {
        let mut request = server
            .client
            .post(server.url("/graphql"))
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, GRAPHQL_RESPONSE);
        if let Some(bad) = bad {
            request = request.bearer_auth(bad);
        }
        let response = request.body(mutation.clone()).send().await.expect("request");
        assert_eq!(response.status().as_u16(), 401);
        assert!(response.headers().get("www-authenticate").is_some());
        let media = response.headers()[CONTENT_TYPE].to_str().expect("ascii").to_owned();
        assert!(media.starts_with(GRAPHQL_RESPONSE), "{media}");
        let body: Value = response.json().await.expect("json");
        assert_request_error(&body, "UNAUTHENTICATED");
    }

    // A body that is not JSON, one over the bound, a form: 400, 413, 415.
    let (status, _, body) = post(&server, None, token, "{not json").await;
    assert_eq!(status, 400);
    assert_request_error(&body, "BAD_REQUEST");
    let big = json!({ "query": format!("{{ head {{ position }} }}{}", " ".repeat(4096)) }).to_string();
    let (status, _, body) = post(&server, None, token, &big).await;
    assert_eq!(status, 413);
    assert_request_error(&body, "PAYLOAD_TOO_LARGE");
    let form = server
        .client
        .post(server.url("/graphql"))
        .bearer_auth(&server.admin_token)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(mutation.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(form.status().as_u16(), 415);
    let body: Value = form.json().await.expect("json");
    assert_request_error(&body, "UNSUPPORTED_MEDIA_TYPE");

    // Unknown routes answer in the same shape.
    let response = server.client.get(server.url("/no/such/route")).send().await.expect("request");
    assert_eq!(response.status().as_u16(), 404);
    assert_request_error(&response.json::<Value>().await.expect("json"), "NOT_FOUND");
    assert_eq!(server.head().await, head, "no refusal wrote anything");
}

#[tokio::test]
async fn get_runs_queries_and_refuses_mutations() {
    let server = TestServer::start().await;
    let head = server.head().await;
    let get = |params: Vec<(&'static str, String)>, accept: &'static str| {
        server
            .client
            .get(server.url("/graphql"))
            .bearer_auth(&server.admin_token)
            .header(ACCEPT, accept)
            .query(&params)
            .send()
    };
    let response = get(
        vec![
            ("query", "query Head($p: Int) { head { position } at(position: $p) { position } }".into()),
            ("variables", json!({ "p": 1 }).to_string()),
            ("operationName", "Head".into()),
        ],
        GRAPHQL_RESPONSE,
    )
    .await
    .expect("request");
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["data"]["head"]["position"], json!(head), "{body}");
    assert_eq!(body["data"]["at"]["position"], json!(1), "{body}");

    // A mutation over GET: 405 with Allow: POST, and nothing written.
    let mutation =
        r#"mutation { createPrincipal(input: {name: "via-get", kind: SYSTEM, roles: [VIEWER]}) { position } }"#;
    for (params, label) in [
        (vec![("query", mutation.to_owned())], "anonymous"),
        (
            vec![
                ("query", format!("query Q {{ head {{ position }} }} {}", mutation.replace("mutation", "mutation M"))),
                ("operationName", "M".into()),
            ],
            "named among several",
        ),
    ] {
        let response = get(params, GRAPHQL_RESPONSE).await.expect("request");
        assert_eq!(response.status().as_u16(), 405, "{label}");
        assert_eq!(response.headers()["allow"], "POST", "{label}");
        let body: Value = response.json().await.expect("json");
        assert_request_error(&body, "METHOD_NOT_ALLOWED");
    }
    assert_eq!(server.head().await, head, "a GET wrote nothing");

    // Malformed variables: 400 naming them.
    let response =
        get(vec![("query", "{ head { position } }".into()), ("variables", "{nope".into())], GRAPHQL_RESPONSE)
            .await
            .expect("request");
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.expect("json");
    assert!(body["errors"][0]["message"].as_str().is_some_and(|m| m.contains("variables")), "{body}");

    // No query: the page for a browser, a 400 for an API client.
    let page = get(vec![], "text/html,application/xhtml+xml").await.expect("request");
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.headers()[CONTENT_TYPE].to_str().expect("ascii").starts_with("text/html"));
    let api = get(vec![], "application/json").await.expect("request");
    assert_eq!(api.status().as_u16(), 400);
}

async fn preflight(server: &TestServer, origin: &str) -> reqwest::Response {
    server
        .client
        .request(reqwest::Method::OPTIONS, server.url("/graphql"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn cors_answers_only_the_allowed_origins_and_never_allows_credentials() {
    let allowed = "http://dashboard.example:3000";
    let server = TestServer::start_with(cmdb_api::settings::ServeSettings {
        cors_allow_origins: vec![allowed.parse().expect("origin")],
        ..settings()
    })
    .await;
    let response = preflight(&server, allowed).await;
    assert!(response.status().is_success(), "{}", response.status());
    let headers = response.headers();
    assert_eq!(headers["access-control-allow-origin"], allowed);
    let methods = headers["access-control-allow-methods"].to_str().expect("ascii").to_ascii_uppercase();
    assert!(methods.contains("POST") && methods.contains("GET"), "{methods}");
    let allowed_headers = headers["access-control-allow-headers"].to_str().expect("ascii").to_ascii_lowercase();
    assert!(allowed_headers.contains("authorization") && allowed_headers.contains("content-type"));
    assert!(headers.get("access-control-allow-credentials").is_none());

    let other = preflight(&server, "http://evil.example").await;
    assert!(other.headers().get("access-control-allow-origin").is_none(), "another origin is not allowed");

    let answer = server
        .client
        .post(server.url("/graphql"))
        .header("origin", allowed)
        .bearer_auth(&server.admin_token)
        .json(&json!({ "query": "{ head { position } }" }))
        .send()
        .await
        .expect("request");
    assert_eq!(answer.status().as_u16(), 200);
    assert_eq!(answer.headers()["access-control-allow-origin"], allowed);
    let exposed = answer.headers()["access-control-expose-headers"].to_str().expect("ascii").to_ascii_lowercase();
    assert!(exposed.contains("x-request-id"), "{exposed}");

    // The default: no origin allowed, no CORS headers.
    let closed = TestServer::start().await;
    let response = preflight(&closed, allowed).await;
    assert!(response.headers().get("access-control-allow-origin").is_none());
}

#[test]
fn cors_origins_from_the_command_line_are_checked() {
    use clap::Parser;
    let parsed =
        cmdb_api::cli::Cli::try_parse_from(["cmdb", "serve", "--cors-allow-origin", "https://dashboard.example.com/"]);
    let error = parsed.expect_err("a path is refused").to_string();
    assert!(error.contains("nothing after it"), "{error}");
}
