//! The engine's own facts sent out as CDEvents in CloudEvents (structured mode) to the
//! configured targets (`--cdevents-target NAME=URL`): a change approved, a deployment
//! succeeded, failed or rolled back, a release rolled back, an unauthorised change.
//!
//! One dispatcher per target follows the log from the position after the last fact its
//! stream (`outbound-<target>`) records as handled, so a restart goes on where it stopped
//! (at least once: a fact sent but not yet recorded when the process died is sent again with
//! the same CloudEvent id, `cmdb-<position>`, for the receiver to recognise). Each fact is
//! tried `outbound_max_attempts` times, waiting `outbound_backoff_ms` doubled after each
//! failure (at most [`MAX_BACKOFF_MS`]); then it is dead-lettered with the error and the
//! dispatcher goes on. A replay request (GraphQL `replayDeadLetter`, `cmdb outbound replay`)
//! sends a dead letter once more. Facts go out in log order per target.

use std::sync::Arc;
use std::time::Duration;

use cmdb_core::change::{ChangeEvent, ChangeState};
use cmdb_core::decider::execute;
use cmdb_core::outbound::{self, Handled, OutboundCommand, OutboundDecider, OutboundKey, OutboxState};
use cmdb_core::release::{DeploymentState, ReleaseEvent, ReleaseState};
use cmdb_core::store::subscribe;
use cmdb_core::{EventRecord, EventStore};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::app::App;

/// Longest wait between two attempts, in milliseconds.
pub const MAX_BACKOFF_MS: u64 = 60_000;
/// Longest a target may take to answer one attempt, in milliseconds.
pub const ATTEMPT_TIMEOUT_MS: u64 = 10_000;
/// Events the dispatcher reads from the log per page.
const PAGE_EVENTS: usize = 500;
/// The CloudEvents source of what the engine sends.
pub const SOURCE: &str = "/cmdb";

pub use crate::settings::Target;

/// How the dispatchers behave.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Attempts per fact before it is dead-lettered.
    pub max_attempts: u32,
    /// The first wait between attempts, in milliseconds (doubled after each failure).
    pub backoff_ms: u64,
    /// A bearer token sent with every fact, if set.
    pub token: Option<String>,
}

/// The CDEvent (in its CloudEvent) a record stands for, if it is a fact the engine sends.
pub fn cloudevent_of(app: &App, record: &EventRecord) -> Option<Value> {
    let time = record.recorded_at.to_rfc3339();
    let graph = app.graph.read();
    let (event_type, subject_id, content): (&str, String, Value) = match record.event_type.as_str() {
        cmdb_core::release::types::DEPLOYMENT_ENDED | cmdb_core::release::types::UNAUTHORISED => {
            let event = ReleaseEvent::from_record(record).ok()??;
            let (deployment_id, kind) = match &event {
                ReleaseEvent::DeploymentEnded(e) => (e.deployment_id, Some(e.state)),
                ReleaseEvent::Unauthorised(u) => (u.deployment_id, None),
                _ => return None,
            };
            let deployment = graph.release_book().deployment_at(deployment_id, record.position)?;
            let target = deployment.request.targets.first()?;
            let ci_name = graph.ci_at(target.ci, record.position).map(|c| c.name.to_string()).unwrap_or_default();
            let artifact = match &target.digest {
                Some(d) => format!("pkg:generic/{}@{}", ci_name, d.as_str().replace(':', "%3A")),
                None => format!("pkg:generic/{}@{}", ci_name, target.version),
            };
            let environment = json!({ "id": deployment.request.environment.as_str(), "source": SOURCE });
            match kind {
                Some(DeploymentState::Succeeded) => (
                    "dev.cdevents.service.deployed.0.3.0",
                    ci_name,
                    json!({ "environment": environment, "artifactId": artifact }),
                ),
                Some(DeploymentState::RolledBack) => (
                    "dev.cdevents.service.rolledback.0.3.0",
                    ci_name,
                    json!({ "environment": environment, "artifactId": artifact }),
                ),
                Some(DeploymentState::Failed) => (
                    "dev.cdeventsx.cmdb-deployment.failed.0.1.0",
                    deployment_id.to_string(),
                    json!({ "service": ci_name, "environment": environment, "artifactId": artifact }),
                ),
                Some(_) => return None,
                None => (
                    "dev.cdeventsx.cmdb-unauthorisedchange.detected.0.1.0",
                    deployment_id.to_string(),
                    json!({
                        "service": ci_name,
                        "environment": environment,
                        "artifactId": artifact,
                        "change": deployment.request.change_id.map(|c| c.to_string()),
                    }),
                ),
            }
        }
        cmdb_core::release::types::TRANSITIONED => match ReleaseEvent::from_record(record).ok()?? {
            ReleaseEvent::Transitioned(t) if t.to == ReleaseState::RolledBack => {
                let release = graph.release_book().release_at(t.release_id, record.position)?;
                (
                    "dev.cdeventsx.cmdb-release.rolledback.0.1.0",
                    release.number.to_string(),
                    json!({ "title": release.details.title, "reason": t.note, "environment": t.environment.map(|e| e.as_str()) }),
                )
            }
            _ => return None,
        },
        cmdb_core::control::TRANSITIONED => match ChangeEvent::from_record(record).ok()? {
            ChangeEvent::Transitioned(t) if t.to == ChangeState::Approved => {
                let change = graph.change_book().change_at(t.change_id, record.position)?;
                (
                    "dev.cdeventsx.cmdb-change.approved.0.1.0",
                    change.label(),
                    json!({ "title": change.details.title, "type": change.change_type.as_str(), "approvedBy": t.by }),
                )
            }
            _ => return None,
        },
        _ => return None,
    };
    let id = format!("cmdb-{}", record.position);
    Some(json!({
        "specversion": "1.0",
        "id": id,
        "source": SOURCE,
        "type": event_type,
        "time": time,
        "datacontenttype": "application/json",
        "data": {
            "context": { "specversion": "0.5.1", "id": id, "source": SOURCE, "type": event_type, "timestamp": time },
            "subject": { "id": subject_id, "source": SOURCE, "content": content },
        },
    }))
}

async fn outbox(store: &dyn EventStore, target: &str) -> Result<OutboxState, cmdb_core::Error> {
    match cmdb_core::decider::fold::load(store, &OutboundKey::Target(target.to_owned())).await? {
        cmdb_core::outbound::OutboundRead::Target(state) => Ok(state),
        cmdb_core::outbound::OutboundRead::Access(_) => Ok(OutboxState::default()),
    }
}

/// One attempt: a 2xx answer within [`ATTEMPT_TIMEOUT_MS`] is a delivery.
async fn attempt(client: &reqwest::Client, target: &Target, delivery: &Delivery, body: &Value) -> Result<(), String> {
    let mut request = client
        .post(&target.url)
        .header("content-type", "application/cloudevents+json")
        .timeout(Duration::from_millis(ATTEMPT_TIMEOUT_MS))
        .body(body.to_string());
    if let Some(token) = &delivery.token {
        request = request.bearer_auth(token);
    }
    match request.send().await {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => Err(format!("HTTP {}", response.status().as_u16())),
        Err(error) => Err(format!("{error}")),
    }
}

/// Sends one fact with the retries; `Err` only when shutting down.
async fn send(
    client: &reqwest::Client,
    target: &Target,
    delivery: &Delivery,
    body: &Value,
    shutdown: &CancellationToken,
) -> Result<(u32, Option<String>), ()> {
    let mut wait = delivery.backoff_ms.max(1);
    let mut last = String::new();
    for attempts in 1..=delivery.max_attempts.max(1) {
        match attempt(client, target, delivery, body).await {
            Ok(()) => return Ok((attempts, None)),
            Err(error) => last = error,
        }
        if attempts == delivery.max_attempts.max(1) {
            break;
        }
        tokio::select! {
            () = shutdown.cancelled() => return Err(()),
            () = tokio::time::sleep(Duration::from_millis(wait)) => {}
        }
        wait = (wait * 2).min(MAX_BACKOFF_MS);
    }
    metrics::counter!("outbound_dead_letters_total", "target" => target.name.clone()).increment(1);
    Ok((delivery.max_attempts.max(1), Some(last)))
}

async fn record(app: &App, target: &Target, position: u64, body: &Value, outcome: (u32, Option<String>)) {
    let handled = Handled {
        position,
        event_type: body["type"].as_str().unwrap_or_default().to_owned(),
        attempts: outcome.0,
        error: outcome.1,
    };
    let command = OutboundCommand::Record { target: target.name.clone(), handled };
    let metadata = cmdb_core::Metadata::new(cmdb_core::Actor::system(), cmdb_core::Source::System);
    let context = app.context(metadata);
    if let Err(error) = execute(app.store.as_ref(), &OutboundDecider, &command, &context, None).await {
        tracing::warn!(target = %target.name, position, %error, "could not record an outbound delivery");
    }
}

/// Starts one dispatcher per configured target, until `shutdown`.
pub fn start_dispatchers(app: &Arc<App>, settings: &crate::settings::ServeSettings, shutdown: &CancellationToken) {
    let delivery = Delivery {
        max_attempts: settings.outbound_max_attempts,
        backoff_ms: settings.outbound_backoff_ms,
        token: settings.cdevents_target_token.as_ref().map(|t| t.0.clone()),
    };
    for target in &settings.cdevents_targets {
        tokio::spawn(dispatch(app.clone(), target.clone(), delivery.clone(), shutdown.clone()));
    }
}

/// Follows the log and sends each fact to `target`, until `shutdown`.
pub async fn dispatch(app: Arc<App>, target: Target, delivery: Delivery, shutdown: CancellationToken) {
    let client = reqwest::Client::new();
    let own_stream = outbound::stream(&target.name);
    let after = match outbox(app.store.as_ref(), &target.name).await {
        // A new target receives what happens from now on, not the history.
        Ok(state) if state.version.is_none() => match start(&app, &target).await {
            Some(after) => after,
            None => return,
        },
        Ok(state) => {
            // Replays asked for while the server was down.
            for letter in state.replays() {
                replay(&app, &client, &target, &delivery, letter.handled.position, &shutdown).await;
            }
            state.handled_through
        }
        Err(error) => {
            tracing::error!(target = %target.name, %error, "cannot read the outbox; not dispatching");
            return;
        }
    };
    let log = subscribe(app.store.clone(), after, PAGE_EVENTS).take_until(shutdown.clone().cancelled_owned());
    let mut log = std::pin::pin!(log);
    while let Some(next) = log.next().await {
        let record = match next {
            Ok(record) => record,
            Err(error) => {
                tracing::error!(target = %target.name, %error, "the log failed; the dispatcher stops");
                return;
            }
        };
        if record.stream_id == own_stream {
            // A replay asked for now; one done already (after a restart) is not sent twice.
            if record.event_type == outbound::REPLAY_REQUESTED
                && let Ok(replay_of) = record.data_as::<outbound::ReplayRequested>()
                && outbox(app.store.as_ref(), &target.name)
                    .await
                    .is_ok_and(|state| state.dead_letters.get(&replay_of.position).is_some_and(|l| l.replay_requested))
            {
                replay(&app, &client, &target, &delivery, replay_of.position, &shutdown).await;
            }
            continue;
        }
        if app.wait_for_graph(record.position).await.is_err() {
            tracing::warn!(target = %target.name, position = record.position, "the graph lags; the fact is read as it stands");
        }
        let Some(body) = cloudevent_of(&app, &record) else { continue };
        let Ok(outcome) = send(&client, &target, &delivery, &body, &shutdown).await else { return };
        record_outcome(&app, &target, record.position, &body, outcome).await;
    }
}

/// Records a new target's starting point (the head now); `None` if it cannot be recorded.
async fn start(app: &App, target: &Target) -> Option<u64> {
    let head = app.store.head().await.ok()?.position;
    let command = OutboundCommand::Start { target: target.name.clone(), after: head };
    let metadata = cmdb_core::Metadata::new(cmdb_core::Actor::system(), cmdb_core::Source::System);
    match execute(app.store.as_ref(), &OutboundDecider, &command, &app.context(metadata), None).await {
        Ok(_) => Some(head),
        // Another process started it meanwhile: go on from what it recorded.
        Err(cmdb_core::Error::Outbound(cmdb_core::outbound::OutboundError::Started(_))) => {
            outbox(app.store.as_ref(), &target.name).await.ok().map(|s| s.handled_through)
        }
        Err(error) => {
            tracing::error!(target = %target.name, %error, "cannot start the target; not dispatching");
            None
        }
    }
}

async fn record_outcome(app: &App, target: &Target, position: u64, body: &Value, outcome: (u32, Option<String>)) {
    if outcome.1.is_none() {
        metrics::counter!("outbound_delivered_total", "target" => target.name.clone()).increment(1);
    }
    record(app, target, position, body, outcome).await;
}

async fn replay(
    app: &App,
    client: &reqwest::Client,
    target: &Target,
    delivery: &Delivery,
    position: u64,
    shutdown: &CancellationToken,
) {
    let Ok(Some(record)) = app.store.event_at(position).await else { return };
    let Some(body) = cloudevent_of(app, &record) else { return };
    if let Ok(outcome) = send(client, target, delivery, &body, shutdown).await {
        record_outcome(app, target, position, &body, outcome).await;
    }
}
