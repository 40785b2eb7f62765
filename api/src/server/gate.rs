//! `/api/v1/gate` and `/api/v1/deployments/report`: what deployment tooling calls (the
//! deployer role). The gate answers `{decision: allow | deny | pending, reasons, change,
//! release, window, retryAfterSeconds}` and records the answer with its inputs; with
//! `waitSeconds` it holds the request while the answer is `pending` and returns as soon as it
//! changes (woken by the graph applying new events, not by polling the log). A report says
//! what the pipeline did: started, succeeded (the CMDB then holds the new versions) or failed.
//!
//! Bad input (a malformed digest, an unknown environment or CI) is refused with a clear error
//! and nothing is recorded; an answer the gate gives, `deny` included, is always recorded.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use cmdb_core::access::{Operation, permits};
use cmdb_core::model::Environment;
use cmdb_core::release::gate::{Artifact, GateOutcome};
use cmdb_core::release::{ArtifactDigest, DeploymentRecord, Pipeline, ReportedOutcome};
use serde::Deserialize;
use serde_json::json;

use super::auth::Caller;
use super::errors::ApiError;
use super::{Authenticated, RequestId, ServerState};
use crate::app::changes::ChangeRef;
use crate::app::releases::{GateAsk, MAX_GATE_WAIT_SECONDS, ReleaseRef};

/// The artifact as a pipeline sends it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ArtifactBody {
    name: String,
    version: String,
    digest: String,
}

/// The pipeline run as it sends it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PipelineBody {
    provider: String,
    run_id: String,
    #[serde(default)]
    run_url: Option<String>,
}

/// The body of a gate call or a report.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct GateBody {
    /// The service or CI: an id or a name.
    #[serde(alias = "ci")]
    service: String,
    environment: String,
    artifact: ArtifactBody,
    #[serde(default)]
    change: Option<String>,
    #[serde(default)]
    release: Option<String>,
    #[serde(default)]
    pipeline: Option<PipelineBody>,
    /// Hold the call while pending, at most this long.
    #[serde(default)]
    wait_seconds: Option<u64>,
    /// Answer without writing anything.
    #[serde(default)]
    dry_run: bool,
    /// For a report: started, succeeded or failed.
    #[serde(default)]
    status: Option<String>,
    /// For a report: what happened.
    #[serde(default)]
    note: Option<String>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::BadRequest(message.into())
}

fn parse_ask(body: &GateBody) -> Result<GateAsk, ApiError> {
    let environment: Environment = body.environment.parse().map_err(|e| bad(format!("environment: {e}")))?;
    let digest: ArtifactDigest = body.artifact.digest.parse().map_err(|e| bad(format!("artifact.digest: {e}")))?;
    let text = |field: &str, value: &str| {
        if value.trim().is_empty()
            || value.len() > cmdb_core::release::MAX_NAME_BYTES
            || value.chars().any(char::is_control)
        {
            Err(bad(format!(
                "{field} must be 1 to {} bytes without control characters",
                cmdb_core::release::MAX_NAME_BYTES
            )))
        } else {
            Ok(value.to_owned())
        }
    };
    let artifact = Artifact {
        name: text("artifact.name", &body.artifact.name)?,
        version: text("artifact.version", &body.artifact.version)?,
        digest,
    };
    let change =
        body.change.as_deref().map(|c| c.parse::<ChangeRef>().map_err(|e| bad(format!("change: {e}")))).transpose()?;
    let release = body
        .release
        .as_deref()
        .map(|r| r.parse::<ReleaseRef>().map_err(|e| bad(format!("release: {e}"))))
        .transpose()?;
    let pipeline = match &body.pipeline {
        Some(p) => Some(Pipeline {
            provider: text("pipeline.provider", &p.provider)?,
            run_id: text("pipeline.runId", &p.run_id)?,
            run_url: p.run_url.clone(),
        }),
        None => None,
    };
    Ok(GateAsk { ci: text("service", &body.service)?, environment, artifact, change, release, pipeline })
}

async fn read_body(state: &ServerState, body: Body) -> Result<GateBody, ApiError> {
    let bound = state.app.settings.max_request_body_bytes;
    let bytes = axum::body::to_bytes(body, bound).await.map_err(|_| ApiError::PayloadTooLarge { bound })?;
    serde_json::from_slice(&bytes).map_err(|e| bad(format!("the body is not a gate request: {e}")))
}

fn require_deployer(caller: &Caller) -> Result<(), ApiError> {
    if permits(&caller.roles, Operation::Deploy) { Ok(()) } else { Err(ApiError::Forbidden(Operation::Deploy)) }
}

/// The answer as JSON.
pub fn outcome_json(outcome: &GateOutcome, recorded_at: Option<u64>) -> serde_json::Value {
    json!({
        "decision": outcome.decision.as_str(),
        "reasons": outcome.reasons.iter().map(|r| json!({"code": r.code, "message": r.message})).collect::<Vec<_>>(),
        "change": outcome.change,
        "release": outcome.release,
        "window": outcome.window.as_ref().map(|w| json!({
            "start": w.start.to_rfc3339(), "end": w.end.to_rfc3339(), "timeZone": w.time_zone,
        })),
        "retryAfterSeconds": outcome.retry_after_seconds,
        "startedImplementation": outcome.starts_implementation,
        "recordedAt": recorded_at,
    })
}

/// `POST /api/v1/gate`.
pub async fn gate(
    State(state): State<ServerState>,
    axum::extract::Extension(request_id): axum::extract::Extension<RequestId>,
    Authenticated(caller): Authenticated,
    body: Body,
) -> Result<Response, ApiError> {
    require_deployer(&caller)?;
    let body = read_body(&state, body).await?;
    if body.status.is_some() || body.note.is_some() {
        return Err(bad("status and note belong to /api/v1/deployments/report"));
    }
    let ask = parse_ask(&body)?;
    let metadata = caller.metadata(Some(request_id.0.clone()));
    // Leave a second of the request timeout for the final answer.
    let timeout_seconds = (state.app.settings.request_timeout_ms / 1000).saturating_sub(1);
    let wait = Duration::from_secs(body.wait_seconds.unwrap_or(0).min(MAX_GATE_WAIT_SECONDS).min(timeout_seconds));
    let app = &state.app.app;
    let answer =
        if body.dry_run { app.gate(&ask, true, metadata).await } else { app.gate_waiting(&ask, wait, metadata).await }
            .map_err(ApiError::from_app)?;
    Ok(Json(outcome_json(&answer.outcome, answer.recorded_at)).into_response())
}

/// The deployment as JSON.
pub fn deployment_json(deployment: &DeploymentRecord) -> serde_json::Value {
    json!({
        "deployment": deployment.request.deployment_id.to_string(),
        "state": deployment.state.as_str(),
        "environment": deployment.request.environment.as_str(),
        "change": deployment.request.change_id.map(|c| c.to_string()),
        "release": deployment.request.release_id.map(|r| r.to_string()),
    })
}

/// `POST /api/v1/deployments/report`.
pub async fn report(
    State(state): State<ServerState>,
    axum::extract::Extension(request_id): axum::extract::Extension<RequestId>,
    Authenticated(caller): Authenticated,
    body: Body,
) -> Result<Response, ApiError> {
    require_deployer(&caller)?;
    let body = read_body(&state, body).await?;
    if body.wait_seconds.is_some() || body.dry_run {
        return Err(bad("waitSeconds and dryRun belong to /api/v1/gate"));
    }
    let status = body.status.as_deref().ok_or_else(|| bad("status is required: started, succeeded or failed"))?;
    let outcome: ReportedOutcome = status.parse().map_err(|e| bad(format!("status: {e}")))?;
    let ask = parse_ask(&body)?;
    if ask.pipeline.is_none() {
        return Err(bad("pipeline (provider, runId) is required: it names the deployment"));
    }
    let metadata = caller.metadata(Some(request_id.0.clone()));
    let deployment = state
        .app
        .app
        .report_from_pipeline(&ask, outcome, body.note.clone(), metadata)
        .await
        .map_err(ApiError::from_app)?;
    Ok(Json(deployment_json(&deployment)).into_response())
}
