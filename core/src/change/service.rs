//! Runs change commands against a store: load the change's two streams, the access state, the
//! template and the CIs the scope names; decide; append every written stream at the version
//! read, with the access stream (the roles the decision used) and the schema as conditions;
//! on a conflict, load again and re-decide.

use std::collections::BTreeMap;

use crate::Error;
use crate::access;
use crate::ci::service::read_whole_stream;
use crate::ci::{CiEvent, CiId, CiSnapshot, CiState, NameKey, NameState, TemplateId};
use crate::event::{EventRecord, Metadata, StreamId};
use crate::store::{AppendOutcome, AppendRequest, EventStore, ExpectedVersion, StoreError};
use crate::time::Timestamp;

use super::decide::{ChangeCommand, ChangeInput, ChangeSettings, DetailsPatch, decide};
use super::{
    At, ChangeControl, ChangeError, ChangeEvent, ChangeNumber, ChangeRecord, Scope, TemplateRecord, details_stream,
    numbers_stream, state_stream,
};
use crate::ci::ChangeId;

/// Re-decisions after a conflict before giving up.
pub const MAX_COMMAND_ATTEMPTS: usize = 8;
/// Pause before re-deciding, times the attempt number.
pub const RETRY_BACKOFF_STEP_MS: u64 = 2;

/// Reads a change's two streams and folds them in log order; `None` if it was never drafted.
pub async fn load_change(store: &dyn EventStore, id: ChangeId) -> Result<Option<ChangeRecord>, Error> {
    let details = read_whole_stream(store, &details_stream(id)).await?;
    let state = read_whole_stream(store, &state_stream(id)).await?;
    Ok(fold_change(&details, &state)?)
}

/// Folds the records of a change's two streams (each in stream order) in log order.
pub fn fold_change(details: &[EventRecord], state: &[EventRecord]) -> Result<Option<ChangeRecord>, ChangeError> {
    let mut all: Vec<(&EventRecord, bool)> =
        details.iter().map(|r| (r, false)).chain(state.iter().map(|r| (r, true))).collect();
    all.sort_by_key(|(r, _)| r.position);
    let mut record: Option<ChangeRecord> = None;
    for (stored, is_state) in all {
        let event = ChangeEvent::from_record(stored)?;
        let at = At::of(stored);
        match (&mut record, &event) {
            (None, ChangeEvent::Drafted(drafted)) => record = Some(ChangeRecord::drafted(drafted, at)),
            (Some(existing), _) => existing.apply(&event, at),
            (None, _) => {
                return Err(ChangeError::Undecodable {
                    position: stored.position,
                    detail: "a change event before the change was drafted".into(),
                });
            }
        }
        if let Some(existing) = &mut record {
            if is_state {
                existing.state_version = Some(stored.stream_version);
            } else {
                existing.details_version = Some(stored.stream_version);
            }
        }
    }
    Ok(record)
}

/// Reads every freeze window.
pub async fn load_freezes(store: &dyn EventStore) -> Result<super::freeze::Freezes, Error> {
    let mut freezes = super::freeze::Freezes::default();
    for record in read_whole_stream(store, &super::freeze::freezes_stream()).await? {
        freezes.apply(&record)?;
    }
    Ok(freezes)
}

/// Reads a change's state stream only: what a CI edit checks (CM-3).
pub async fn load_control(store: &dyn EventStore, id: ChangeId) -> Result<ChangeControl, Error> {
    let mut control = ChangeControl::default();
    for record in read_whole_stream(store, &state_stream(id)).await? {
        control.apply(&ChangeEvent::from_record(&record)?, record.stream_version);
    }
    Ok(control)
}

pub async fn load_template(store: &dyn EventStore, id: TemplateId) -> Result<Option<TemplateRecord>, Error> {
    let mut template = None;
    for record in read_whole_stream(store, &id.stream()).await? {
        TemplateRecord::apply(
            &mut template,
            &ChangeEvent::from_record(&record)?,
            At::of(&record),
            record.stream_version,
        );
    }
    Ok(template)
}

/// The change a number was assigned to.
pub async fn find_by_number(store: &dyn EventStore, number: ChangeNumber) -> Result<Option<ChangeId>, Error> {
    let stream = numbers_stream();
    let records =
        store.read_stream(&stream, crate::store::Direction::Forward, Some(number.0.saturating_sub(1)), 1).await?;
    match records.first() {
        Some(record) => match ChangeEvent::from_record(record)? {
            ChangeEvent::NumberAssigned(assigned) if assigned.number == number => Ok(Some(assigned.change_id)),
            _ => Ok(None),
        },
        None => Ok(None),
    }
}

fn expected(version: Option<u64>) -> ExpectedVersion {
    version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact)
}

/// The scope a command will leave the change with, if it sets or checks one.
fn scope_to_check<'a>(command: &'a ChangeCommand, change: Option<&'a ChangeRecord>) -> Option<&'a Scope> {
    match command {
        ChangeCommand::Draft { details, .. } | ChangeCommand::RecordRetrospective { details, .. } => {
            Some(&details.scope)
        }
        ChangeCommand::Amend { patch: DetailsPatch { scope: Some(scope), .. }, .. } => Some(scope),
        ChangeCommand::Amend { .. }
        | ChangeCommand::Act { .. }
        | ChangeCommand::Schedule { .. }
        | ChangeCommand::Reschedule { .. } => change.map(|c| &c.details.scope),
        _ => None,
    }
}

async fn load_scope(
    store: &dyn EventStore,
    scope: &Scope,
) -> Result<(BTreeMap<CiId, Option<CiSnapshot>>, BTreeMap<NameKey, Option<CiId>>), Error> {
    let mut cis = BTreeMap::new();
    let mut names = BTreeMap::new();
    if scope.len() > super::MAX_SCOPE_ITEMS {
        return Ok((cis, names)); // the decider refuses it; do not read thousands of streams first
    }
    for id in &scope.cis {
        let mut state = CiState::default();
        for record in read_whole_stream(store, &id.stream()).await? {
            state.apply(&CiEvent::from_record(&record)?, record.stream_version);
        }
        cis.insert(*id, state.ci);
    }
    for planned in &scope.planned {
        let key = planned.key();
        let mut state = NameState::default();
        for record in read_whole_stream(store, &key.stream()).await? {
            state.apply(&CiEvent::from_record(&record)?, record.stream_version);
        }
        names.insert(key, state.holder);
    }
    Ok((cis, names))
}

/// Executes one change command for `actor` (a principal name) at `now`.
pub async fn execute(
    store: &dyn EventStore,
    command: &ChangeCommand,
    metadata: Metadata,
    now: Timestamp,
    settings: ChangeSettings,
) -> Result<AppendOutcome, Error> {
    let actor = metadata.actor.principal.clone();
    for attempt in 0..MAX_COMMAND_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(RETRY_BACKOFF_STEP_MS * attempt as u64)).await;
        }
        let access = access::load_state(store).await?;
        let schema = crate::ci::registry::load(store).await?;
        let change = match command.change_id() {
            Some(id) => load_change(store, id).await?,
            None => None,
        };
        let template_id = match command {
            ChangeCommand::Draft { template_id, .. } => *template_id,
            ChangeCommand::CreateTemplate { template_id, .. } | ChangeCommand::RetireTemplate { template_id, .. } => {
                Some(*template_id)
            }
            _ => change.as_ref().and_then(|c| c.template_id),
        };
        let template = match template_id {
            Some(id) => load_template(store, id).await?,
            None => None,
        };
        let (cis, names) = match scope_to_check(command, change.as_ref()) {
            Some(scope) => load_scope(store, scope).await?,
            None => Default::default(),
        };
        let numbers_version = store.stream_version(&numbers_stream()).await?;
        let needs_policy =
            matches!(command, ChangeCommand::Reassess { .. } | ChangeCommand::Act { facts: Some(_), .. });
        let policies = if needs_policy { crate::policy::load(store).await? } else { Default::default() };
        let policy = policies.in_force();
        let needs_freezes = matches!(
            command,
            ChangeCommand::Schedule { .. }
                | ChangeCommand::Reschedule { .. }
                | ChangeCommand::CreateFreeze { .. }
                | ChangeCommand::LiftFreeze { .. }
        );
        let freezes = if needs_freezes { load_freezes(store).await? } else { Default::default() };
        let mut cis = cis;
        if let ChangeCommand::CreateFreeze { scope: super::freeze::FreezeScope::Service { service }, .. } = command {
            let (loaded, _) = load_scope(store, &Scope { cis: vec![*service], planned: Vec::new() }).await?;
            cis.extend(loaded);
        }
        let next_number = ChangeNumber(numbers_version.map_or(1, |v| v + 2));
        let input = ChangeInput {
            actor: &actor,
            access: &access,
            change: change.as_ref(),
            template: template.as_ref(),
            schema: &schema,
            cis: &cis,
            names: &names,
            next_number,
            now,
            settings,
            policy: &policy,
            freezes: &freezes,
        };
        let decision = decide(command, &input)?;
        let mut request = AppendRequest::new();
        for (stream, events) in &decision.writes {
            let version = if *stream == super::freeze::freezes_stream() {
                freezes.version
            } else {
                version_of(stream, change.as_ref(), template.as_ref(), numbers_version)
            };
            let new_events = events.iter().map(|e| e.to_new_event(metadata.clone())).collect();
            request = request.write(stream.clone(), expected(version), new_events);
        }
        // The roles the decision used, and the classes it checked, must still hold.
        request = request.condition(access::access_stream(), expected(access.version));
        request = request.condition(crate::ci::registry::schema_stream(), expected(schema.version));
        let freezes_written = decision.writes.iter().any(|(s, _)| *s == super::freeze::freezes_stream());
        if needs_freezes && !freezes_written {
            // Scheduling read the freezes as they stood.
            request = request.condition(super::freeze::freezes_stream(), expected(freezes.version));
        }
        if needs_policy {
            // The decision used the policy in force: a policy loaded meanwhile means deciding again.
            request = request.condition(crate::policy::policy_stream(), expected(policies.stream_version));
        }
        for stream in &decision.conditions {
            if decision.writes.iter().any(|(written, _)| written == stream)
                || request.conditions.iter().any(|c| c.stream == *stream)
            {
                continue;
            }
            let version = version_of(stream, change.as_ref(), template.as_ref(), numbers_version);
            request = request.condition(stream.clone(), expected(version));
        }
        match store.append(request).await {
            Ok(outcome) => return Ok(outcome),
            Err(StoreError::VersionConflict { .. }) => continue,
            Err(other) => return Err(other.into()),
        }
    }
    Err(Error::Contended { stream: "change".into(), attempts: MAX_COMMAND_ATTEMPTS })
}

fn version_of(
    stream: &StreamId,
    change: Option<&ChangeRecord>,
    template: Option<&TemplateRecord>,
    numbers_version: Option<u64>,
) -> Option<u64> {
    if *stream == numbers_stream() {
        return numbers_version;
    }
    if let Some(change) = change {
        if *stream == details_stream(change.change_id) {
            return change.details_version;
        }
        if *stream == state_stream(change.change_id) {
            return change.state_version;
        }
    }
    if let Some(template) = template {
        if *stream == template.template.template_id.stream() {
            return Some(template.version);
        }
    }
    None
}
