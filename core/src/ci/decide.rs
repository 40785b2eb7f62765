//! CI commands and their decider: what each reads ([`CiKey`]), and the pure decision, one
//! named step per command.
//!
//! Every command takes an optional `authorized_by` change id, recorded in its events. Unless
//! the class is declared uncontrolled, it must name a change that is implementing (or failed,
//! to back out) and whose scope covers the CI (CM-3); the append is then conditional on that
//! change's state stream ([`crate::control`]).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde_json::Value;

use super::schema::{SchemaRegistry, check_complete, check_value, schema_stream};
use super::state::{CiState, NameKey, NameState, RelState};
use super::{
    AttributeMap, CiError, CiEvent, CiField, CiLinked, CiRegistered, CiSnapshot, CiStatusChanged, CiUnlinked,
    CiUpdated, End, MAX_NAME_BYTES, MAX_REASON_BYTES, MAX_RELATIONSHIPS_PER_WITHDRAWAL, MAX_VERSION_BYTES, NameClaim,
    RelationshipCreated, RelationshipRemoved,
};
use crate::control::{ChangeControl, ChangeState, state_stream};
use crate::decider::{CommandContext, Decider, Decision, ReadSet, StreamKey, Written};
use crate::event::{EventRecord, StreamId};
use crate::ids::{ChangeId, CiId, RelId};
use crate::model::{
    CiClass, Environment, INITIAL_STATUSES, LOCATION_CLASSES, OWNER_CLASSES, RelType, STATUS_TRANSITIONS, Status, rule,
    transition_allowed,
};

/// Register a new CI.
#[derive(Clone, Debug, PartialEq)]
pub struct Register {
    /// Its id, chosen by the caller.
    pub ci_id: CiId,
    /// Its class.
    pub class: CiClass,
    /// Its name, unique in its class among CIs not withdrawn.
    pub name: String,
    /// Where its life starts (one of [`INITIAL_STATUSES`]).
    pub status: Status,
    /// Where it runs.
    pub environment: Option<Environment>,
    /// The team or person owning it.
    pub owner: Option<CiId>,
    /// The location it is at.
    pub location: Option<CiId>,
    /// Its version label.
    pub version: Option<String>,
    /// Its attributes, checked against the class's schema.
    pub attributes: BTreeMap<String, Value>,
    /// The change that authorises the registration (CM-3).
    pub authorized_by: Option<ChangeId>,
}

/// Change a CI's fields: `Some` sets, `clear` clears.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Update {
    /// The CI (also given by [`CiCommand::Update`]'s first field).
    pub ci_id: Option<CiId>,
    /// A new name.
    pub name: Option<String>,
    /// A new environment.
    pub environment: Option<Environment>,
    /// A new owner.
    pub owner: Option<CiId>,
    /// A new location.
    pub location: Option<CiId>,
    /// A new version label.
    pub version: Option<String>,
    /// Fields to clear.
    pub clear: Vec<CiField>,
    /// Attributes to set.
    pub set_attributes: BTreeMap<String, Value>,
    /// Attributes to remove.
    pub remove_attributes: Vec<String>,
    /// The change that authorises the edit (CM-3).
    pub authorized_by: Option<ChangeId>,
    /// The edit records what deployment tooling did without a change (an unauthorised
    /// change, CM-5 over CM-3): `authorized_by` then names the retrospective emergency change
    /// opened in the same append, which is not implementing, and the event is flagged. Only
    /// the release domain's observed deployments set it; no API argument reaches it.
    pub unauthorised: bool,
}

/// A request to change the configuration.
#[derive(Clone, Debug, PartialEq)]
pub enum CiCommand {
    /// Register a CI.
    Register(Register),
    /// Update a CI.
    Update(CiId, Update),
    /// Move a CI to another status (to `withdrawn`: a withdrawal).
    Transition {
        /// The CI.
        ci_id: CiId,
        /// The status it goes to.
        to: Status,
        /// Why.
        reason: Option<String>,
        /// The authorising change.
        authorized_by: Option<ChangeId>,
    },
    /// Withdraw a CI, removing its active relationships in the same append.
    Withdraw {
        /// The CI.
        ci_id: CiId,
        /// Why.
        reason: Option<String>,
        /// The authorising change.
        authorized_by: Option<ChangeId>,
    },
    /// Relate two CIs.
    Relate {
        /// The new relationship's id.
        rel_id: RelId,
        /// Its type.
        rel_type: RelType,
        /// The CI it goes from.
        source: CiId,
        /// The CI it goes to.
        target: CiId,
        /// The authorising change (covering the source).
        authorized_by: Option<ChangeId>,
    },
    /// Remove a relationship.
    Unrelate {
        /// The relationship.
        rel_id: RelId,
        /// Why.
        reason: Option<String>,
        /// The authorising change (covering the source).
        authorized_by: Option<ChangeId>,
    },
}

impl CiCommand {
    /// The change the command names as its authority.
    pub fn authorized_by(&self) -> Option<ChangeId> {
        match self {
            CiCommand::Register(r) => r.authorized_by,
            CiCommand::Update(_, u) => u.authorized_by,
            CiCommand::Transition { authorized_by, .. }
            | CiCommand::Withdraw { authorized_by, .. }
            | CiCommand::Relate { authorized_by, .. }
            | CiCommand::Unrelate { authorized_by, .. } => *authorized_by,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What a CI decision reads
// ---------------------------------------------------------------------------------------------

/// A stream a CI decision reads or writes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CiKey {
    /// The schema registry (custom classes, attributes, uncontrolled classes).
    Schema,
    /// A CI's stream.
    Ci(CiId),
    /// A relationship's stream.
    Rel(RelId),
    /// A (class, name) claim.
    Name(NameKey),
    /// The state stream of a change an edit names (CM-3).
    Control(ChangeId),
}

/// The fold of a [`CiKey`].
#[derive(Clone, Debug)]
pub enum CiRead {
    /// Of [`CiKey::Schema`].
    Schema(SchemaRegistry),
    /// Of [`CiKey::Ci`].
    Ci(CiState),
    /// Of [`CiKey::Rel`].
    Rel(RelState),
    /// Of [`CiKey::Name`].
    Name(NameState),
    /// Of [`CiKey::Control`].
    Control(ChangeControl),
}

impl StreamKey for CiKey {
    type State = CiRead;

    fn streams(&self) -> Vec<StreamId> {
        vec![match self {
            CiKey::Schema => schema_stream(),
            CiKey::Ci(id) => id.stream(),
            CiKey::Rel(id) => id.stream(),
            CiKey::Name(key) => key.stream(),
            CiKey::Control(id) => state_stream(*id),
        }]
    }

    fn initial(&self) -> CiRead {
        match self {
            CiKey::Schema => CiRead::Schema(SchemaRegistry::default()),
            CiKey::Ci(_) => CiRead::Ci(CiState::default()),
            CiKey::Rel(_) => CiRead::Rel(RelState::default()),
            CiKey::Name(_) => CiRead::Name(NameState::default()),
            CiKey::Control(_) => CiRead::Control(ChangeControl::default()),
        }
    }

    fn evolve(&self, state: &mut CiRead, record: &EventRecord) -> Result<(), crate::Error> {
        match state {
            CiRead::Schema(registry) => registry.apply(record)?,
            CiRead::Ci(ci) => ci.apply_record(record)?,
            CiRead::Rel(rel) => rel.apply(&CiEvent::from_record(record)?, record.stream_version),
            CiRead::Name(name) => name.apply(&CiEvent::from_record(record)?, record.stream_version),
            CiRead::Control(control) => control.apply(record)?,
        }
        Ok(())
    }
}

static EMPTY_SCHEMA: LazyLock<SchemaRegistry> = LazyLock::new(SchemaRegistry::default);

/// Typed access to what a CI decision read.
impl ReadSet<CiKey> {
    /// The schema registry read (the empty one before it is read).
    pub fn schema(&self) -> &SchemaRegistry {
        match self.get(&CiKey::Schema) {
            Some(CiRead::Schema(registry)) => registry,
            _ => &EMPTY_SCHEMA,
        }
    }

    /// A CI's stream fold, if read.
    pub fn ci_state(&self, id: CiId) -> Option<&CiState> {
        match self.get(&CiKey::Ci(id)) {
            Some(CiRead::Ci(state)) => Some(state),
            _ => None,
        }
    }

    /// The CI as it stands, if read and registered.
    pub fn snapshot(&self, id: CiId) -> Option<&CiSnapshot> {
        self.ci_state(id).and_then(|s| s.ci.as_ref())
    }

    /// A relationship's stream fold, if read.
    pub fn rel_state(&self, id: RelId) -> Option<&RelState> {
        match self.get(&CiKey::Rel(id)) {
            Some(CiRead::Rel(state)) => Some(state),
            _ => None,
        }
    }

    /// Which CI holds a name, if the claim was read.
    pub fn name_holder(&self, key: &NameKey) -> Option<CiId> {
        match self.get(&CiKey::Name(key.clone())) {
            Some(CiRead::Name(state)) => state.holder,
            _ => None,
        }
    }

    /// A change's control record, if read.
    pub fn control(&self, id: ChangeId) -> Option<&ChangeControl> {
        match self.get(&CiKey::Control(id)) {
            Some(CiRead::Control(control)) => Some(control),
            _ => None,
        }
    }
}

/// The CIs, relationships and names `command` reads, given what is read.
fn reads_of(command: &CiCommand, read: &ReadSet<CiKey>) -> Vec<CiKey> {
    // The schema first: it declares the custom classes the other streams may name.
    if !read.contains(&CiKey::Schema) {
        return vec![CiKey::Schema];
    }
    let mut keys = Vec::new();
    match command {
        CiCommand::Register(r) => {
            keys.push(CiKey::Ci(r.ci_id));
            keys.extend(r.owner.into_iter().chain(r.location).map(CiKey::Ci));
            keys.push(CiKey::Name(NameKey::new(r.class, &r.name)));
        }
        CiCommand::Update(id, u) => {
            keys.push(CiKey::Ci(*id));
            keys.extend(u.owner.into_iter().chain(u.location).map(CiKey::Ci));
            if let (Some(new_name), Some(current)) = (&u.name, read.snapshot(*id)) {
                keys.push(CiKey::Name(NameKey::new(current.class, new_name)));
                keys.push(CiKey::Name(NameKey::new(current.class, &current.name)));
            }
        }
        CiCommand::Transition { ci_id, to, .. } if *to != Status::Withdrawn => keys.push(CiKey::Ci(*ci_id)),
        CiCommand::Transition { ci_id, .. } | CiCommand::Withdraw { ci_id, .. } => {
            keys.push(CiKey::Ci(*ci_id));
            if let Some(state) = read.ci_state(*ci_id) {
                for (rel_id, link) in &state.links {
                    keys.push(CiKey::Rel(*rel_id));
                    keys.push(CiKey::Ci(link.other));
                }
                if let Some(current) = &state.ci {
                    keys.push(CiKey::Name(NameKey::new(current.class, &current.name)));
                }
            }
        }
        CiCommand::Relate { rel_id, source, target, .. } => {
            keys.extend([CiKey::Rel(*rel_id), CiKey::Ci(*source), CiKey::Ci(*target)]);
        }
        CiCommand::Unrelate { rel_id, .. } => {
            keys.push(CiKey::Rel(*rel_id));
            if let Some(created) = read.rel_state(*rel_id).and_then(|r| r.created.as_ref()) {
                keys.extend([CiKey::Ci(created.source), CiKey::Ci(created.target)]);
            }
        }
    }
    keys.extend(command.authorized_by().map(CiKey::Control));
    keys
}

// ---------------------------------------------------------------------------------------------
// The decider
// ---------------------------------------------------------------------------------------------

/// Decides CI commands.
#[derive(Clone, Copy, Debug, Default)]
pub struct CiDecider;

/// A CI decision.
pub type CiDecision = Decision<CiKey, CiEvent>;

impl Decider for CiDecider {
    type Command = CiCommand;
    type Key = CiKey;
    type Event = CiEvent;
    type Error = CiError;
    const NAME: &'static str = "ci";

    fn reads(&self, command: &CiCommand, read: &ReadSet<CiKey>) -> Vec<CiKey> {
        reads_of(command, read)
    }

    fn decide(
        &self,
        command: &CiCommand,
        read: &ReadSet<CiKey>,
        _context: &CommandContext,
    ) -> Result<CiDecision, CiError> {
        decide(command, read)
    }

    fn evolve_written(&self, read: &mut ReadSet<CiKey>, key: &CiKey, event: &CiEvent, at: Written) -> Option<()> {
        read.evolve_own(key, at.stream_version, |state| match state {
            CiRead::Ci(ci) => ci.apply(event, at.stream_version, at.position),
            CiRead::Rel(rel) => rel.apply(event, at.stream_version),
            CiRead::Name(name) => name.apply(event, at.stream_version),
            // CI commands never write the schema or a change's state stream.
            CiRead::Schema(_) | CiRead::Control(_) => {}
        })
    }

    fn evolves_written(&self) -> bool {
        true
    }
}

/// Decides a CI command on what was read. Pure.
pub fn decide(command: &CiCommand, read: &ReadSet<CiKey>) -> Result<CiDecision, CiError> {
    let mut decision = CiDecision::default();
    match command {
        CiCommand::Register(r) => register(read, &mut decision, r)?,
        CiCommand::Update(id, u) => update(read, &mut decision, *id, u)?,
        CiCommand::Transition { ci_id, to: Status::Withdrawn, reason, authorized_by } => {
            withdraw(read, &mut decision, *ci_id, reason.as_deref(), *authorized_by)?;
        }
        CiCommand::Transition { ci_id, to, reason, authorized_by } => {
            transition(read, &mut decision, *ci_id, *to, reason.as_deref(), *authorized_by)?;
        }
        CiCommand::Withdraw { ci_id, reason, authorized_by } => {
            withdraw(read, &mut decision, *ci_id, reason.as_deref(), *authorized_by)?;
        }
        CiCommand::Relate { rel_id, rel_type, source, target, authorized_by } => {
            relate(read, &mut decision, *rel_id, *rel_type, (*source, *target), *authorized_by)?;
        }
        CiCommand::Unrelate { rel_id, reason, authorized_by } => {
            unrelate(read, &mut decision, *rel_id, reason.as_deref(), *authorized_by)?;
        }
    }
    // The registry the command was validated against must not change underneath it.
    decision.require_unchanged(CiKey::Schema);
    debug_assert!(decision.event_count() > 0, "an accepted CI command writes something");
    Ok(decision)
}

fn register(read: &ReadSet<CiKey>, decision: &mut CiDecision, r: &Register) -> Result<(), CiError> {
    // Every input problem at once, before the checks of state and authority (CM-3's
    // CHANGE_REQUIRED does not hide a malformed registration).
    let schema = read.schema();
    let mut problems = crate::problems::Problems::new();
    problems.check(check_name(&r.name));
    problems.check(check_len("version", r.version.as_deref(), MAX_VERSION_BYTES));
    if !INITIAL_STATUSES.contains(&r.status) {
        problems.push(CiError::InitialStatusNotAllowed(r.status));
    }
    if schema.knows(r.class) {
        match check_complete(schema, r.class, &r.attributes) {
            Err(CiError::Invalid { problems: several }) => several.into_iter().for_each(|p| problems.push(p)),
            other => problems.check(other),
        }
        if schema.like(r.class) == CiClass::BusinessService && r.owner.is_none() {
            problems.push(CiError::OwnerRequired { class: r.class });
        }
    } else {
        problems.push(CiError::UnknownClass(r.class.as_str().to_owned()));
    }
    problems.finish(|problems| CiError::Invalid { problems })?;
    if read.ci_state(r.ci_id).is_some_and(|s| s.version.is_some()) {
        return Err(CiError::CiExists(r.ci_id));
    }
    authorize(read, decision, "registering", r.class, Subject::Planned(&r.name), r.authorized_by)?;
    if let Some(owner) = r.owner {
        reference(read, decision, "owner", owner, OWNER_CLASSES)?;
    }
    if let Some(location) = r.location {
        reference(read, decision, "location", location, LOCATION_CLASSES)?;
    }
    claim(read, decision, r.class, &r.name, r.ci_id)?;
    decision.write(
        CiKey::Ci(r.ci_id),
        CiEvent::Registered(Box::new(CiRegistered {
            ci_id: r.ci_id,
            class: r.class,
            name: r.name.clone(),
            status: r.status,
            environment: r.environment,
            owner: r.owner,
            location: r.location,
            version: r.version.clone(),
            attributes: AttributeMap::from(&r.attributes),
            authorized_by: r.authorized_by,
        })),
    );
    Ok(())
}

fn update(read: &ReadSet<CiKey>, decision: &mut CiDecision, id: CiId, u: &Update) -> Result<(), CiError> {
    let current = live_ci(read, id)?;
    if u.unauthorised {
        // Recorded as observed, flagged; the retrospective change is written in the same
        // append, so its state stream is not read here (CH-8 follows it up).
        if u.authorized_by.is_none() {
            return Err(CiError::Unauthorized {
                action: "recording",
                class: current.class,
                subject: format!("CI {id}"),
            });
        }
    } else {
        authorize(read, decision, "updating", current.class, Subject::Existing(id), u.authorized_by)?;
    }
    let mut event = CiUpdated {
        ci_id: Some(id),
        authorized_by: u.authorized_by,
        unauthorised: u.unauthorised,
        ..CiUpdated::default()
    };
    if let Some(name) = u.name.as_ref().filter(|n| **n != current.name) {
        rename(read, decision, current, name)?;
        event.name = Some(name.clone());
    }
    if let Some(environment) = u.environment.filter(|e| current.environment != Some(*e)) {
        event.environment = Some(environment);
    }
    if let Some(owner) = u.owner.filter(|o| current.owner != Some(*o)) {
        reference(read, decision, "owner", owner, OWNER_CLASSES)?;
        event.owner = Some(owner);
    }
    if let Some(location) = u.location.filter(|l| current.location != Some(*l)) {
        reference(read, decision, "location", location, LOCATION_CLASSES)?;
        event.location = Some(location);
    }
    check_len("version", u.version.as_deref(), MAX_VERSION_BYTES)?;
    if let Some(version) = u.version.as_ref().filter(|v| current.version.as_deref() != Some(v.as_str())) {
        event.version = Some(version.as_str().into());
    }
    clear_fields(read.schema(), current, &u.clear, &mut event)?;
    edit_attributes(read.schema(), current, u, &mut event)?;
    let mut after = current.clone();
    after.evolve(&CiEvent::Updated(Box::new(event.clone())));
    if after.attributes.len() > super::schema::MAX_ATTRIBUTES {
        return Err(CiError::TooManyAttributes { count: after.attributes.len() });
    }
    if after == *current {
        return Err(CiError::NothingToChange);
    }
    decision.write(CiKey::Ci(id), CiEvent::Updated(Box::new(event)));
    Ok(())
}

/// A new name: claimed, and the old one released (unless only its case changes).
fn rename(read: &ReadSet<CiKey>, decision: &mut CiDecision, current: &CiSnapshot, name: &str) -> Result<(), CiError> {
    check_name(name)?;
    let old = NameKey::new(current.class, &current.name);
    if NameKey::new(current.class, name) == old {
        return Ok(());
    }
    claim(read, decision, current.class, name, current.id)?;
    decision.write(
        CiKey::Name(old),
        CiEvent::NameReleased(NameClaim { class: current.class, name: current.name.to_string(), ci_id: current.id }),
    );
    Ok(())
}

fn clear_fields(
    schema: &SchemaRegistry,
    current: &CiSnapshot,
    clear: &[CiField],
    event: &mut CiUpdated,
) -> Result<(), CiError> {
    for field in clear {
        let present = match field {
            CiField::Environment => current.environment.is_some(),
            CiField::Owner => current.owner.is_some(),
            CiField::Location => current.location.is_some(),
            CiField::Version => current.version.is_some(),
        };
        if *field == CiField::Owner && schema.like(current.class) == CiClass::BusinessService {
            return Err(CiError::OwnerRequired { class: current.class });
        }
        if present && !event.cleared.contains(field) {
            event.cleared.push(*field);
        }
    }
    Ok(())
}

fn edit_attributes(
    schema: &SchemaRegistry,
    current: &CiSnapshot,
    u: &Update,
    event: &mut CiUpdated,
) -> Result<(), CiError> {
    for (name, value) in &u.set_attributes {
        check_value(schema, current.class, name, value)?;
        if current.attributes.get(name) != Some(value) {
            event.attributes_set.insert(name.clone(), value.clone());
        }
    }
    for name in &u.remove_attributes {
        match schema.attribute(current.class, name) {
            Some(attribute) if attribute.required() => {
                return Err(CiError::MissingAttribute {
                    class: current.class,
                    attribute: name.clone(),
                    expected: "a value (the attribute is required)".into(),
                });
            }
            Some(_) => {}
            None => check_value(schema, current.class, name, &Value::Null)?,
        }
        if current.attributes.contains_key(name) && !event.attributes_removed.contains(name) {
            event.attributes_removed.push(name.clone());
        }
    }
    Ok(())
}

fn transition(
    read: &ReadSet<CiKey>,
    decision: &mut CiDecision,
    ci_id: CiId,
    to: Status,
    reason: Option<&str>,
    authorized_by: Option<ChangeId>,
) -> Result<(), CiError> {
    check_len("reason", reason, MAX_REASON_BYTES)?;
    let current = live_ci(read, ci_id)?;
    authorize(read, decision, "transitioning", current.class, Subject::Existing(ci_id), authorized_by)?;
    if !transition_allowed(current.status, to) {
        let allowed = STATUS_TRANSITIONS
            .iter()
            .find(|(from, _)| *from == current.status)
            .map(|(_, to)| to.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "))
            .unwrap_or_default();
        return Err(CiError::TransitionNotAllowed { ci: ci_id, from: current.status, to, allowed });
    }
    decision.write(
        CiKey::Ci(ci_id),
        CiEvent::StatusChanged(CiStatusChanged {
            ci_id,
            from: current.status,
            to,
            reason: reason.map(str::to_owned),
            authorized_by,
        }),
    );
    Ok(())
}

fn withdraw(
    read: &ReadSet<CiKey>,
    decision: &mut CiDecision,
    ci_id: CiId,
    reason: Option<&str>,
    authorized_by: Option<ChangeId>,
) -> Result<(), CiError> {
    check_len("reason", reason, MAX_REASON_BYTES)?;
    let current = live_ci(read, ci_id)?;
    authorize(read, decision, "withdrawing", current.class, Subject::Existing(ci_id), authorized_by)?;
    let links = read.ci_state(ci_id).map(|s| &s.links).ok_or(CiError::UnknownCi(ci_id))?;
    if links.len() > MAX_RELATIONSHIPS_PER_WITHDRAWAL {
        return Err(CiError::TooManyRelationships { ci: ci_id, count: links.len() });
    }
    let because = Some(format!("CI {ci_id} was withdrawn"));
    for (rel_id, link) in links {
        decision.write(
            CiKey::Rel(*rel_id),
            CiEvent::RelationshipRemoved(RelationshipRemoved {
                rel_id: *rel_id,
                reason: because.clone(),
                authorized_by,
            }),
        );
        decision.write(CiKey::Ci(link.other), CiEvent::Unlinked(CiUnlinked { ci_id: link.other, rel_id: *rel_id }));
        decision.write(CiKey::Ci(ci_id), CiEvent::Unlinked(CiUnlinked { ci_id, rel_id: *rel_id }));
    }
    let key = NameKey::new(current.class, &current.name);
    if read.name_holder(&key) == Some(ci_id) {
        decision.write(
            CiKey::Name(key),
            CiEvent::NameReleased(NameClaim { class: current.class, name: current.name.to_string(), ci_id }),
        );
    }
    decision.write(
        CiKey::Ci(ci_id),
        CiEvent::Withdrawn(CiStatusChanged {
            ci_id,
            from: current.status,
            to: Status::Withdrawn,
            reason: reason.map(str::to_owned),
            authorized_by,
        }),
    );
    Ok(())
}

fn relate(
    read: &ReadSet<CiKey>,
    decision: &mut CiDecision,
    rel_id: RelId,
    rel_type: RelType,
    (source, target): (CiId, CiId),
    authorized_by: Option<ChangeId>,
) -> Result<(), CiError> {
    if source == target {
        return Err(CiError::SelfLoop(source));
    }
    if read.rel_state(rel_id).is_some_and(|r| r.version.is_some()) {
        return Err(CiError::RelationshipExists(rel_id));
    }
    let source_ci = live_ci(read, source)?;
    let target_ci = live_ci(read, target)?;
    authorize(read, decision, "relating", source_ci.class, Subject::Existing(source), authorized_by)?;
    let rule = rule(rel_type);
    let schema = read.schema();
    let (source_like, target_like) = (schema.like(source_ci.class), schema.like(target_ci.class));
    if !rule.sources.contains(&source_like) || !rule.targets.contains(&target_like) {
        let names = |classes: &[CiClass]| classes.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ");
        return Err(CiError::RelationshipNotAllowed {
            rel_type,
            source_class: source_ci.class,
            target_class: target_ci.class,
            sources: names(rule.sources),
            targets: names(rule.targets),
        });
    }
    let duplicate = read
        .ci_state(source)
        .into_iter()
        .flat_map(|s| &s.links)
        .find(|(_, l)| l.end == End::Source && l.rel_type == rel_type && l.other == target);
    if let Some((existing, _)) = duplicate {
        return Err(CiError::DuplicateRelationship {
            rel_type,
            source_ci: source,
            target_ci: target,
            existing: *existing,
        });
    }
    decision.write(
        CiKey::Rel(rel_id),
        CiEvent::RelationshipCreated(RelationshipCreated { rel_id, rel_type, source, target, authorized_by }),
    );
    for (ci_id, other, end) in [(source, target, End::Source), (target, source, End::Target)] {
        decision.write(CiKey::Ci(ci_id), CiEvent::Linked(CiLinked { ci_id, rel_id, rel_type, other, end }));
    }
    Ok(())
}

fn unrelate(
    read: &ReadSet<CiKey>,
    decision: &mut CiDecision,
    rel_id: RelId,
    reason: Option<&str>,
    authorized_by: Option<ChangeId>,
) -> Result<(), CiError> {
    check_len("reason", reason, MAX_REASON_BYTES)?;
    let rel = read.rel_state(rel_id).ok_or(CiError::UnknownRelationship(rel_id))?;
    let created = rel.created.as_ref().ok_or(CiError::UnknownRelationship(rel_id))?;
    if rel.removed {
        return Err(CiError::RelationshipRemoved(rel_id));
    }
    let source_class = read.snapshot(created.source).map(|c| c.class).ok_or(CiError::UnknownCi(created.source))?;
    authorize(read, decision, "unrelating", source_class, Subject::Existing(created.source), authorized_by)?;
    decision.write(
        CiKey::Rel(rel_id),
        CiEvent::RelationshipRemoved(RelationshipRemoved { rel_id, reason: reason.map(str::to_owned), authorized_by }),
    );
    for end in [created.source, created.target] {
        decision.write(CiKey::Ci(end), CiEvent::Unlinked(CiUnlinked { ci_id: end, rel_id }));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Shared checks
// ---------------------------------------------------------------------------------------------

/// What an edit is about, for the CM-3 check.
enum Subject<'a> {
    Existing(CiId),
    Planned(&'a str),
}

/// CM-3: an edit to a controlled class needs a change that is implementing (or failed, to back
/// out) and covers the CI; the decision is then conditional on the change's state stream.
fn authorize(
    read: &ReadSet<CiKey>,
    decision: &mut CiDecision,
    action: &'static str,
    class: CiClass,
    subject: Subject<'_>,
    authorized_by: Option<ChangeId>,
) -> Result<(), CiError> {
    let Some(change) = authorized_by else {
        if !read.schema().controlled(class) {
            return Ok(());
        }
        let subject = match subject {
            Subject::Existing(id) => format!("CI {id}"),
            Subject::Planned(name) => format!("a planned {class} named {name:?}"),
        };
        return Err(CiError::Unauthorized { action, class, subject });
    };
    let control = read.control(change).filter(|c| c.state.is_some()).ok_or(CiError::UnknownChange(change))?;
    let label = control.label(change);
    let state = control.state.unwrap_or(ChangeState::Draft);
    if !state.authorises_edits() {
        return Err(CiError::ChangeNotImplementing { change: label, state: state.to_string() });
    }
    match subject {
        Subject::Existing(id) => {
            let registered_under = read.ci_state(id).and_then(|s| s.registered_under);
            if !control.scope.covers_ci(id) && registered_under != Some(change) {
                return Err(CiError::NotInScope { change: label, ci: id });
            }
        }
        Subject::Planned(name) => {
            if !control.scope.plans(class, name) {
                return Err(CiError::NotPlanned { change: label, class, name: name.to_owned() });
            }
        }
    }
    decision.require_unchanged(CiKey::Control(change));
    Ok(())
}

pub(crate) fn check_name(name: &str) -> Result<(), CiError> {
    let ok =
        !name.is_empty() && name.len() <= MAX_NAME_BYTES && name.trim() == name && !name.chars().any(char::is_control);
    if ok { Ok(()) } else { Err(CiError::InvalidName(name.to_owned())) }
}

fn check_len(field: &'static str, text: Option<&str>, bound: usize) -> Result<(), CiError> {
    match text {
        Some(text) if text.len() > bound => Err(CiError::TooLong { field, bytes: text.len(), bound }),
        Some(text) if text.trim().is_empty() => Err(CiError::Empty { field }),
        _ => Ok(()),
    }
}

fn live_ci(read: &ReadSet<CiKey>, id: CiId) -> Result<&CiSnapshot, CiError> {
    let ci = read.snapshot(id).ok_or(CiError::UnknownCi(id))?;
    if ci.status == Status::Withdrawn {
        return Err(CiError::CiWithdrawn(id));
    }
    Ok(ci)
}

/// Checks a reference (owner, location) and makes its stream a condition.
fn reference(
    read: &ReadSet<CiKey>,
    decision: &mut CiDecision,
    field: &'static str,
    id: CiId,
    allowed: &[CiClass],
) -> Result<(), CiError> {
    let target = read.snapshot(id).ok_or(CiError::UnknownCi(id))?;
    if target.status == Status::Withdrawn {
        return Err(CiError::ReferenceWithdrawn { field, ci: id });
    }
    if !allowed.contains(&read.schema().like(target.class)) {
        return Err(CiError::WrongReferenceClass {
            field,
            ci: id,
            class: target.class,
            allowed: allowed.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(" or "),
        });
    }
    decision.require_unchanged(CiKey::Ci(id));
    Ok(())
}

fn claim(
    read: &ReadSet<CiKey>,
    decision: &mut CiDecision,
    class: CiClass,
    name: &str,
    ci_id: CiId,
) -> Result<(), CiError> {
    let key = NameKey::new(class, name);
    if let Some(holder) = read.name_holder(&key)
        && holder != ci_id
    {
        return Err(CiError::NameTaken { class, name: name.to_owned(), holder });
    }
    decision.write(CiKey::Name(key), CiEvent::NameClaimed(NameClaim { class, name: name.to_owned(), ci_id }));
    Ok(())
}
