//! `POST /hooks/github`: GitHub's `deployment` and `deployment_status` webhooks.
//!
//! The body must be `application/json` (a hook set to form encoding is refused with 415) and
//! signed: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body with the configured
//! secret>`, checked in constant time (`hmac`'s `verify_slice`); a missing or wrong signature is
//! 401 and nothing is recorded. `X-GitHub-Delivery` makes a delivery idempotent: GitHub's
//! redelivery of it answers 200 `duplicate`. A deployment maps to a CI through the rule for its
//! repository (`full_name`) and environment; every status (`queued`, `pending`, `in_progress`,
//! `success`, `failure`, `error`, `inactive`) lands on the one deployment record of GitHub's
//! deployment id. `deployment_protection_rule` is kept as a callback waiting for the gate and
//! answered by [`super::protection`]. `ping` is answered; other events are kept as unmapped
//! deliveries.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use cmdb_core::release::ArtifactDigest;
use cmdb_core::release::observe::{DeliveryReceived, ObservedState, Provider, ToolRef};
use hmac::{KeyInit, Mac};
use serde::Deserialize;

use super::{observation_response, parse_time, read_body, require_content_type};
use crate::app::tooling::ToolReport;
use crate::server::errors::ApiError;
use crate::server::listener::ConnectionSlot;
use crate::server::{RequestId, ServerState};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Longest X-GitHub-Delivery and X-GitHub-Event, in bytes.
pub const MAX_GITHUB_HEADER_BYTES: usize = 128;

#[derive(Deserialize)]
struct Repository {
    full_name: String,
}

#[derive(Deserialize)]
struct Deployment {
    id: u64,
    sha: String,
    #[serde(rename = "ref")]
    git_ref: String,
    environment: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    url: Option<String>,
}

#[derive(Deserialize)]
struct DeploymentStatus {
    state: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    target_url: Option<String>,
    #[serde(default)]
    environment_url: Option<String>,
    #[serde(default)]
    log_url: Option<String>,
    #[serde(default)]
    created_at: Option<String>,
}

#[derive(Deserialize)]
struct DeploymentEvent {
    deployment: Deployment,
    #[serde(default)]
    repository: Option<Repository>,
}

#[derive(Deserialize)]
struct DeploymentStatusEvent {
    deployment_status: DeploymentStatus,
    deployment: Deployment,
    #[serde(default)]
    repository: Option<Repository>,
}

#[derive(Deserialize)]
struct Installation {
    id: u64,
}

#[derive(Deserialize)]
struct ProtectionRuleEvent {
    environment: String,
    deployment_callback_url: String,
    deployment: Deployment,
    #[serde(default)]
    installation: Option<Installation>,
}

#[derive(Deserialize)]
struct AnyEvent {
    #[serde(default)]
    repository: Option<Repository>,
}

/// An event parsed in full on the first read.
enum Typed {
    Deployment(DeploymentEvent),
    Status(DeploymentStatusEvent),
    /// Read for its repository only.
    Other,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::BadRequest(message.into())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => {
            let text = value.to_str().map_err(|_| bad(format!("{name} is not visible ASCII")))?;
            if text.is_empty() || text.len() > MAX_GITHUB_HEADER_BYTES {
                return Err(bad(format!("{name} must be 1 to {MAX_GITHUB_HEADER_BYTES} bytes")));
            }
            Ok(Some(text))
        }
    }
}

/// Checks `X-Hub-Signature-256` over the body, in constant time.
pub fn verify_signature(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    let given = headers
        .get("x-hub-signature-256")
        .ok_or_else(|| ApiError::BadSignature("X-Hub-Signature-256 is missing; the hook must have a secret".into()))?;
    let hex_text = given
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("sha256="))
        .ok_or_else(|| ApiError::BadSignature("X-Hub-Signature-256 must be sha256=<hex>".into()))?;
    let signature =
        hex::decode(hex_text).map_err(|_| ApiError::BadSignature("X-Hub-Signature-256 is not hex".into()))?;
    let mut mac = HmacSha256::new_from_slice(secret).map_err(|e| ApiError::Internal(e.to_string()))?;
    mac.update(body);
    mac.verify_slice(&signature)
        .map_err(|_| ApiError::BadSignature("X-Hub-Signature-256 does not match the body and the secret".into()))
}

/// The signature GitHub would send for `body` (for tests and tools that replay deliveries).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A commit as a digest: `sha1:` for 40 hex digits, `sha256:` for 64 (SHA-256 repositories).
fn commit_digest(sha: &str) -> Result<ArtifactDigest, ApiError> {
    let algorithm = if sha.len() == 64 { "sha256" } else { "sha1" };
    format!("{algorithm}:{}", sha.to_ascii_lowercase()).parse().map_err(|e| bad(format!("deployment.sha: {e}")))
}

fn report_of(
    delivery: DeliveryReceived,
    repository: &str,
    deployment: &Deployment,
    state: ObservedState,
    status: Option<&DeploymentStatus>,
) -> Result<ToolReport, ApiError> {
    let digest = commit_digest(&deployment.sha)?;
    let short: String = deployment.sha.chars().take(7).collect();
    let version = if deployment.git_ref == deployment.sha { short } else { format!("{}@{short}", deployment.git_ref) };
    let created = status.and_then(|s| s.created_at.as_deref()).or(deployment.created_at.as_deref());
    let occurred_at = created.map(|t| parse_time("created_at", t)).transpose()?;
    let url = status
        .and_then(|s| s.environment_url.clone().or_else(|| s.target_url.clone()).or_else(|| s.log_url.clone()))
        .or_else(|| deployment.url.clone())
        .filter(|u| !u.is_empty());
    let description = status.and_then(|s| s.description.clone()).or_else(|| deployment.description.clone());
    Ok(ToolReport {
        delivery,
        source: repository.to_owned(),
        deployment: ToolRef {
            provider: Provider::Github,
            source: repository.to_owned(),
            id: deployment.id.to_string(),
        },
        environment_name: Some(deployment.environment.clone()),
        artifact: Some(repository.to_owned()),
        version: Some(version),
        digest: Some(digest),
        state,
        description: description.filter(|d| !d.is_empty()),
        url,
        occurred_at,
    })
}

/// `POST /hooks/github`.
pub async fn receive(
    State(state): State<ServerState>,
    axum::extract::Extension(request_id): axum::extract::Extension<RequestId>,
    connection: Option<axum::extract::Extension<ConnectionSlot>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let settings = &state.app.settings;
    let Some(secret) = settings.github_webhook_secret.as_ref() else {
        return Err(ApiError::Unavailable(
            "the GitHub hook is not configured: set CMDB_GITHUB_WEBHOOK_SECRET (and create its principal)".into(),
        ));
    };
    require_content_type(&headers, &["application/json"], "application/json (the hook's content type setting)")?;
    let bytes = read_body(body, settings.max_request_body_bytes).await?;
    verify_signature(secret.0.as_bytes(), &headers, &bytes)?;
    if let Some(axum::extract::Extension(connection)) = connection {
        connection.authenticate();
    }
    let event = header(&headers, "x-github-event")?.ok_or_else(|| bad("X-GitHub-Event is missing"))?.to_owned();
    let delivery_id = header(&headers, "x-github-delivery")?.ok_or_else(|| bad("X-GitHub-Delivery is missing"))?;
    if event == "ping" {
        return Ok(axum::Json(serde_json::json!({"delivery": delivery_id, "outcome": "pong"})).into_response());
    }
    let parse_error = |e: serde_json::Error| bad(format!("the body is not a GitHub {event} event: {e}"));
    // The two events every deployment sends are parsed once, with their repository (a body
    // is ~10 KiB); the rest are read for the repository first.
    let (repository, typed) = match event.as_str() {
        "deployment" => {
            let parsed: DeploymentEvent = serde_json::from_slice(&bytes).map_err(parse_error)?;
            let repository = parsed.repository.as_ref().map(|r| r.full_name.clone());
            (repository, Typed::Deployment(parsed))
        }
        "deployment_status" => {
            let parsed: DeploymentStatusEvent = serde_json::from_slice(&bytes).map_err(parse_error)?;
            let repository = parsed.repository.as_ref().map(|r| r.full_name.clone());
            (repository, Typed::Status(parsed))
        }
        _ => {
            let any: AnyEvent = serde_json::from_slice(&bytes).map_err(parse_error)?;
            (any.repository.map(|r| r.full_name), Typed::Other)
        }
    };
    let repository = repository.unwrap_or_default();
    if repository.trim().is_empty() {
        return Err(bad("repository.full_name is missing: deliveries are mapped by repository"));
    }
    state.hook_limiter.admit(&format!("github:{repository}"))?;
    let app = &state.app.app;
    let principal = settings.github_hook_principal.clone();
    if !cmdb_core::access::permits(&app.access.snapshot().roles_of(&principal), cmdb_core::access::Operation::Deploy) {
        return Err(ApiError::Unavailable(format!(
            "the GitHub hook's principal {principal:?} does not exist or lacks the deployer role"
        )));
    }
    let mut metadata = cmdb_core::Metadata::new(
        cmdb_core::Actor { principal: principal.into(), token_id: None },
        cmdb_core::Source::Webhook,
    );
    metadata.correlation_id = Some(request_id.0.as_str().into());
    let tool = ToolRef { provider: Provider::Github, source: repository.clone(), id: delivery_id.to_owned() };
    let delivery = |subject: Option<String>| DeliveryReceived {
        tool: tool.clone(),
        event_type: event.clone(),
        subject,
        unmapped: None,
    };
    let report = match (typed, event.as_str()) {
        (Typed::Deployment(parsed), _) => {
            let subject = Some(parsed.deployment.environment.clone());
            report_of(delivery(subject), &repository, &parsed.deployment, ObservedState::Pending, None)?
        }
        (Typed::Status(parsed), _) => {
            let observed: ObservedState =
                parsed.deployment_status.state.parse().map_err(|e| bad(format!("deployment_status.state: {e}")))?;
            let subject = Some(parsed.deployment.environment.clone());
            let status = Some(&parsed.deployment_status);
            report_of(delivery(subject), &repository, &parsed.deployment, observed, status)?
        }
        (Typed::Other, "deployment_protection_rule") => {
            let parsed: ProtectionRuleEvent = serde_json::from_slice(&bytes).map_err(parse_error)?;
            return protection_rule(app, delivery(Some(parsed.environment.clone())), &repository, parsed, metadata)
                .await;
        }
        (Typed::Other, other) => {
            let reason = format!("GitHub event {other:?} is not a deployment event; kept, not applied");
            let observation = app.unmapped(delivery(None), reason, metadata).await.map_err(ApiError::from_app)?;
            return Ok(observation_response(delivery_id, &observation));
        }
    };
    let observation = app.observe(report, metadata).await.map_err(ApiError::from_app)?;
    Ok(observation_response(delivery_id, &observation))
}

/// The workflow run a callback URL names (`.../actions/runs/<id>/deployment_protection_rule`).
fn run_of(callback_url: &str) -> Option<&str> {
    let rest = callback_url.split("/actions/runs/").nth(1)?;
    let id = rest.split('/').next()?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then_some(id)
}

/// A protection rule: recorded as a callback waiting for the gate (answered by
/// `protection::answer_callbacks`), or kept unmapped when no rule names its repository.
async fn protection_rule(
    app: &crate::app::App,
    delivery: DeliveryReceived,
    repository: &str,
    parsed: ProtectionRuleEvent,
    metadata: cmdb_core::Metadata,
) -> Result<Response, ApiError> {
    let delivery_id = delivery.tool.id.clone();
    let Some(rule) = app.mapping_for(Provider::Github, repository, Some(&parsed.environment)) else {
        let reason = format!(
            "no mapping rule for github source {repository:?} subject {:?}: the protection rule is not answered",
            parsed.environment
        );
        let observation = app.unmapped(delivery, reason, metadata).await.map_err(ApiError::from_app)?;
        return Ok(observation_response(&delivery_id, &observation));
    };
    let ci_environment = {
        let graph = app.graph.read();
        graph.ci_at(rule.ci, graph.applied()).and_then(|ci| ci.environment)
    };
    let environment = rule
        .environment
        .or_else(|| cmdb_core::release::observe::environment_named(&parsed.environment))
        .or(ci_environment)
        .ok_or_else(|| {
            bad(format!("environment: {:?} names no environment and the CI has none", parsed.environment))
        })?;
    let deployment = &parsed.deployment;
    let short: String = deployment.sha.chars().take(7).collect();
    let run_id = run_of(&parsed.deployment_callback_url).map_or_else(|| deployment.id.to_string(), str::to_owned);
    let pending = cmdb_core::release::observe::CallbackPending {
        callback_url: parsed.deployment_callback_url.clone(),
        environment_name: parsed.environment.clone(),
        installation: parsed.installation.map(|i| i.id),
        ci: rule.ci,
        environment,
        artifact: repository.to_owned(),
        version: format!("{}@{short}", deployment.git_ref),
        digest: commit_digest(&deployment.sha)?,
        run_id,
    };
    let received = app.received(delivery, metadata.clone()).await.map_err(ApiError::from_app)?;
    if let crate::app::tooling::Observation::Duplicate = received {
        return Ok(observation_response(&delivery_id, &received));
    }
    let command = cmdb_core::release::ReleaseCommand::CallbackPending(Box::new(pending));
    app.release(&command, metadata).await.map_err(ApiError::from_app)?;
    Ok((
        axum::http::StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({
            "delivery": delivery_id,
            "outcome": "waiting",
            "recorded": true,
            "callback": parsed.deployment_callback_url,
            "ci": rule.ci.to_string(),
        })),
    )
        .into_response())
}
