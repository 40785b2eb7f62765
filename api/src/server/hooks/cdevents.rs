//! `POST /hooks/cdevents`: CDEvents (0.4 and 0.5) carried by CloudEvents over HTTP, in
//! structured mode (`application/cloudevents+json`), binary mode (`ce-*` headers, the CDEvent
//! as an `application/json` body) and batches (`application/cloudevents-batch+json`, at most
//! [`MAX_CDEVENTS_PER_BATCH`]). The sender is a bearer token of a principal with the deployer
//! role (one token per source); deliveries are idempotent on the CloudEvent's (source, id).
//!
//! - `service.deployed`, `service.upgraded`: a successful deployment of `artifactId` (a package
//!   URL; its version is the digest when it is one, its `tag` qualifier the version label) to
//!   `environment.id`; `service.rolledback`: the service runs `artifactId` again;
//!   `service.removed`: kept on the deployment record as observed.
//! - `incident.detected`, `incident.reported`: an incident on the CIs the affected `service`
//!   maps to (impact and urgency from `customData`, default medium); `incident.resolved`.
//! - `environment.*`, `change.merged`, `artifact.published`: recorded as deliveries.
//! - Any other type: kept as an unmapped delivery (visible in `unmappedSources`), not refused.
//!
//! A malformed event is refused with 400 naming the field; in a batch, nothing of a batch
//! with a malformed event is recorded.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use cloudevents::{AttributesReader, Data, Event};
use cmdb_core::release::ArtifactDigest;
use cmdb_core::release::observe::{
    DeliveryReceived, Impact, IncidentOpened, IncidentResolved, ObservedState, Provider, ToolRef, Urgency,
    environment_named,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{observation_response, parse_time, read_body, require_content_type};
use crate::app::tooling::{IncidentReport, Observation, ToolReport};
use crate::server::errors::ApiError;
use crate::server::{Authenticated, RequestId, ServerState};

/// Most events in one batch.
pub const MAX_CDEVENTS_PER_BATCH: usize = 100;

const STRUCTURED: &str = "application/cloudevents+json";
const BATCH: &str = "application/cloudevents-batch+json";

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::BadRequest(message.into())
}

/// A CDEvent's context (0.4 names its version `version`, 0.5 `specversion`).
#[derive(Deserialize)]
struct Context {
    id: String,
    source: String,
    #[serde(rename = "type")]
    event_type: String,
    timestamp: String,
    #[serde(default, alias = "specversion")]
    version: Option<String>,
}

#[derive(Deserialize)]
struct Subject {
    id: String,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    content: Value,
}

#[derive(Deserialize)]
struct CdEvent {
    context: Context,
    subject: Subject,
    #[serde(default, rename = "customData")]
    custom_data: Value,
}

/// What a CDEvent type is about: `dev.cdevents.<subject>.<predicate>.<version>`.
fn kind(event_type: &str) -> Option<(&str, &str)> {
    let rest = event_type.strip_prefix("dev.cdevents.")?;
    let mut parts = rest.splitn(3, '.');
    Some((parts.next()?, parts.next()?))
}

/// One parsed event: the envelope's (source, id, type) and the CDEvent.
struct Parsed {
    source: String,
    id: String,
    event_type: String,
    cdevent: Option<CdEvent>,
}

fn parse_event(event: Event, index: Option<usize>) -> Result<Parsed, ApiError> {
    let at = |field: &str| index.map_or_else(|| field.to_owned(), |i| format!("[{i}].{field}"));
    let (source, id, event_type) = (event.source().to_string(), event.id().to_owned(), event.ty().to_owned());
    if kind(&event_type).is_none() {
        // Not a CDEvent: kept as unmapped, its data not read.
        return Ok(Parsed { source, id, event_type, cdevent: None });
    }
    let data: Value = match event.data() {
        Some(Data::Json(value)) => value.clone(),
        Some(Data::String(text)) => serde_json::from_str(text).map_err(|e| bad(format!("{}: {e}", at("data"))))?,
        Some(Data::Binary(bytes)) => serde_json::from_slice(bytes).map_err(|e| bad(format!("{}: {e}", at("data"))))?,
        None => return Err(bad(format!("{} is missing: a CDEvent is the CloudEvent's data", at("data")))),
    };
    let cdevent: CdEvent = serde_path(&data).map_err(|e| bad(format!("{}: {e}", at("data"))))?;
    if cdevent.context.event_type != event_type {
        return Err(bad(format!(
            "{}: {:?} differs from the CloudEvent's type {event_type:?}",
            at("data.context.type"),
            cdevent.context.event_type
        )));
    }
    parse_time(&at("data.context.timestamp"), &cdevent.context.timestamp)?;
    let _ = (&cdevent.context.id, &cdevent.context.source, &cdevent.context.version);
    Ok(Parsed { source, id, event_type, cdevent: Some(cdevent) })
}

/// Deserialises with the path of the field that failed (`subject.content.environment`).
fn serde_path<T: for<'de> Deserialize<'de>>(value: &Value) -> Result<T, String> {
    T::deserialize(value).map_err(|e| e.to_string())
}

/// Reads the body as CloudEvents: a batch, one structured event, or one binary-mode event.
fn events_of(headers: &HeaderMap, content_type: &str, body: Vec<u8>) -> Result<Vec<Parsed>, ApiError> {
    if content_type == BATCH {
        let events: Vec<Event> =
            serde_json::from_slice(&body).map_err(|e| bad(format!("the body is not a CloudEvents batch: {e}")))?;
        if events.is_empty() || events.len() > MAX_CDEVENTS_PER_BATCH {
            return Err(bad(format!("a batch holds 1 to {MAX_CDEVENTS_PER_BATCH} events, got {}", events.len())));
        }
        return events.into_iter().enumerate().map(|(i, e)| parse_event(e, Some(i))).collect();
    }
    if content_type == "application/json" && !headers.contains_key("ce-specversion") {
        return Err(bad("binary mode needs the ce-specversion, ce-id, ce-source and ce-type headers"));
    }
    let event = cloudevents::binding::http::to_event(headers, body)
        .map_err(|e| bad(format!("the body is not a CloudEvent: {e}")))?;
    Ok(vec![parse_event(event, None)?])
}

/// `POST /hooks/cdevents`.
pub async fn receive(
    State(state): State<ServerState>,
    axum::extract::Extension(request_id): axum::extract::Extension<RequestId>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    if !cmdb_core::access::permits(&caller.roles, cmdb_core::access::Operation::Deploy) {
        return Err(ApiError::Forbidden(cmdb_core::access::Operation::Deploy));
    }
    let content_type = require_content_type(
        &headers,
        &[STRUCTURED, BATCH, "application/json"],
        "application/cloudevents+json, application/cloudevents-batch+json, or application/json with ce-* headers",
    )?;
    let bytes = read_body(body, state.app.settings.max_request_body_bytes).await?;
    let events = events_of(&headers, &content_type, bytes.to_vec())?;
    // Every event is checked before any is recorded.
    let reports = events.into_iter().map(report_of).collect::<Result<Vec<_>, _>>()?;
    state.hook_limiter.admit(&format!("cdevents:{}", caller.principal))?;
    let mut metadata = caller.metadata(Some(request_id.0.clone()));
    metadata.source = cmdb_core::Source::Webhook;
    let mut answers = Vec::with_capacity(reports.len());
    for (delivery, report) in reports {
        answers.push((delivery.clone(), record(&state, report, metadata.clone()).await?));
    }
    if answers.len() == 1 && content_type != BATCH {
        let (delivery, observation) = &answers[0];
        return Ok(observation_response(delivery, observation));
    }
    let items: Vec<Value> = answers
        .iter()
        .map(|(delivery, observation)| {
            let response = observation_response(delivery, observation);
            json!({"delivery": delivery, "status": response.status().as_u16()})
        })
        .collect();
    Ok((axum::http::StatusCode::ACCEPTED, axum::Json(json!({"events": items}))).into_response())
}

/// What one event asks of the application.
enum Report {
    Deployment(Box<ToolReport>),
    Incident(Box<IncidentReport>),
    Resolved(Box<IncidentResolved>, DeliveryReceived),
    Recorded(DeliveryReceived),
    Unmapped(DeliveryReceived, String),
}

async fn record(state: &ServerState, report: Report, metadata: cmdb_core::Metadata) -> Result<Observation, ApiError> {
    let app = &state.app.app;
    let result = match report {
        Report::Deployment(report) => app.observe(*report, metadata).await,
        Report::Incident(report) => app.open_incident(*report, metadata).await,
        Report::Resolved(resolved, delivery) => app.resolve_incident(*resolved, Some(delivery), metadata).await,
        Report::Recorded(delivery) => app.received(delivery, metadata).await,
        Report::Unmapped(delivery, reason) => app.unmapped(delivery, reason, metadata).await,
    };
    result.map_err(ApiError::from_app)
}

fn text_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(value, |v, key| v.get(key)).and_then(Value::as_str)
}

fn required<'a>(value: &'a Value, path: &[&str], field: &str) -> Result<&'a str, ApiError> {
    text_at(value, path).filter(|t| !t.trim().is_empty()).ok_or_else(|| bad(format!("{field} is required")))
}

/// The artifact of a package URL: name, version label, digest.
fn artifact_of(purl: &str) -> Result<(String, Option<String>, Option<ArtifactDigest>), ApiError> {
    let parsed: packageurl::PackageUrl<'_> =
        purl.parse().map_err(|e| bad(format!("subject.content.artifactId: {purl:?} is not a package URL: {e}")))?;
    let qualifiers = parsed.qualifiers();
    let name = match qualifiers.get("repository_url") {
        Some(repository) => repository.to_string(),
        None => match parsed.namespace() {
            Some(namespace) => format!("{}/{}", namespace, parsed.name()),
            None => parsed.name().to_owned(),
        },
    };
    let version = parsed.version();
    let digest = version.and_then(|v| v.parse::<ArtifactDigest>().ok());
    let label = qualifiers
        .get("tag")
        .map(ToString::to_string)
        .or_else(|| version.filter(|_| digest.is_none()).map(str::to_owned));
    Ok((name, label, digest))
}

fn level<T: std::str::FromStr>(custom: &Value, key: &str, default: T) -> Result<T, ApiError>
where
    T::Err: std::fmt::Display,
{
    match custom.get(key).and_then(Value::as_str) {
        Some(text) => text.parse().map_err(|e| bad(format!("customData.{key}: {e}"))),
        None => Ok(default),
    }
}

fn report_of(parsed: Parsed) -> Result<(String, Report), ApiError> {
    let tool = ToolRef { provider: Provider::Cdevents, source: parsed.source.clone(), id: parsed.id.clone() };
    let delivery_id = parsed.id.clone();
    let mut delivery =
        DeliveryReceived { tool: tool.clone(), event_type: parsed.event_type.clone(), subject: None, unmapped: None };
    let Some(cdevent) = parsed.cdevent else {
        let reason = format!("{:?} is not a CDEvents type; kept, not applied", parsed.event_type);
        return Ok((delivery_id, Report::Unmapped(delivery, reason)));
    };
    let Some((subject_kind, predicate)) = kind(&parsed.event_type) else { unreachable!("checked in parse_event") };
    let content = &cdevent.subject.content;
    let subject_source = cdevent.subject.source.clone().unwrap_or_else(|| cdevent.context.source.clone());
    delivery.subject = Some(cdevent.subject.id.clone());
    let occurred = parse_time("data.context.timestamp", &cdevent.context.timestamp)?;
    let occurred_at = Some(occurred);
    let report = match (subject_kind, predicate) {
        ("service", "deployed" | "upgraded" | "rolledback" | "removed") => {
            let environment = required(content, &["environment", "id"], "subject.content.environment.id")?;
            let state = match predicate {
                "rolledback" => ObservedState::RolledBack,
                "removed" => ObservedState::Removed,
                _ => ObservedState::Success,
            };
            let (artifact, version, digest) = match text_at(content, &["artifactId"]) {
                Some(purl) => artifact_of(purl)?,
                None if state == ObservedState::Removed => (cdevent.subject.id.clone(), None, None),
                None => return Err(bad("subject.content.artifactId is required")),
            };
            Report::Deployment(Box::new(ToolReport {
                delivery,
                source: subject_source.clone(),
                deployment: ToolRef { provider: Provider::Cdevents, source: subject_source, id: parsed.id.clone() },
                environment_name: Some(environment.to_owned()),
                artifact: Some(artifact),
                version,
                digest,
                state,
                description: Some(format!("{} ({})", parsed.event_type, environment)),
                url: None,
                occurred_at,
            }))
        }
        ("incident", "detected" | "reported") => {
            let service = content.get("service").map(|s| {
                let id = text_at(s, &["id"]).unwrap_or_default().to_owned();
                let source = text_at(s, &["source"]).map_or_else(|| subject_source.clone(), str::to_owned);
                (source, id)
            });
            let title = text_at(content, &["description"]).unwrap_or(&cdevent.subject.id).chars().take(200).collect();
            let environment = text_at(content, &["environment", "id"]).and_then(environment_named);
            Report::Incident(Box::new(IncidentReport {
                delivery: Some(delivery),
                service: service.filter(|(_, id)| !id.is_empty()),
                opened: IncidentOpened {
                    incident: ToolRef {
                        provider: Provider::Cdevents,
                        source: subject_source,
                        id: cdevent.subject.id.clone(),
                    },
                    title,
                    impact: level(&cdevent.custom_data, "impact", Impact::Medium)?,
                    urgency: level(&cdevent.custom_data, "urgency", Urgency::Medium)?,
                    priority: 0,
                    cis: Vec::new(),
                    environment,
                    detected_at: occurred,
                },
            }))
        }
        ("incident", "resolved") => Report::Resolved(
            Box::new(IncidentResolved {
                incident: ToolRef {
                    provider: Provider::Cdevents,
                    source: subject_source,
                    id: cdevent.subject.id.clone(),
                },
                resolved_at: occurred,
                note: text_at(content, &["description"]).map(str::to_owned),
            }),
            delivery,
        ),
        ("environment", "created" | "modified" | "deleted") | ("change", "merged") | ("artifact", "published") => {
            Report::Recorded(delivery)
        }
        _ => {
            let reason = format!("{} is not a type this engine maps; kept, not applied", parsed.event_type);
            Report::Unmapped(delivery, reason)
        }
    };
    Ok((delivery_id, report))
}
