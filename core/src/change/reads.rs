//! What a change decision reads ([`ChangeKey`]) and how each key folds, and the loads the
//! API and the CLI make of one change, template or number.

use std::sync::LazyLock;

use super::command::{ChangeCommand, DetailsPatch};
use super::freeze::{self, FreezeScope, Freezes};
use super::{At, ChangeError, ChangeEvent, ChangeNumber, ChangeRecord, Scope, TemplateRecord, details_stream};
use crate::access::{AccessState, access_stream};
use crate::ci::schema::{SchemaRegistry, schema_stream};
use crate::ci::{CiState, NameKey, NameState};
use crate::control::state_stream;
use crate::decider::{Depth, ReadSet, StreamKey, fold};
use crate::event::{EventRecord, StreamId};
use crate::ids::{ChangeId, CiId, TemplateId};
use crate::policy::{PolicyState, policy_stream};
use crate::store::{Direction, EventStore};

/// The stream assigning change numbers.
pub const NUMBERS_STREAM: &str = "change-numbers";

/// The stream assigning change numbers.
pub fn numbers_stream() -> StreamId {
    StreamId::new(NUMBERS_STREAM).expect("valid stream id")
}

/// A stream (or pair of streams) a change decision reads or writes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChangeKey {
    /// Principals and roles now (who may do what, segregation of duties).
    Access,
    /// The schema registry (classes a scope or template names).
    Schema,
    /// A change as both its streams tell it, folded in log order.
    Change(ChangeId),
    /// A change's request stream, written to.
    Details(ChangeId),
    /// A change's state stream, written to (the CM-3 contract).
    State(ChangeId),
    /// A standard-change template.
    Template(TemplateId),
    /// A CI a scope names.
    Ci(CiId),
    /// A (class, name) a scope plans.
    Name(NameKey),
    /// The change numbers: the newest one only.
    Numbers,
    /// The approval policies loaded.
    Policy,
    /// The freeze windows.
    Freezes,
}

/// The fold of a [`ChangeKey`].
#[derive(Clone, Debug)]
pub enum ChangeRead {
    /// Of [`ChangeKey::Access`].
    Access(AccessState),
    /// Of [`ChangeKey::Schema`].
    Schema(SchemaRegistry),
    /// Of [`ChangeKey::Change`]: `None` until drafted.
    Change(Option<Box<ChangeRecord>>),
    /// Of keys only written ([`ChangeKey::Details`], [`ChangeKey::State`]).
    Written,
    /// Of [`ChangeKey::Template`].
    Template(Option<TemplateRecord>),
    /// Of [`ChangeKey::Ci`].
    Ci(CiState),
    /// Of [`ChangeKey::Name`].
    Name(NameState),
    /// Of [`ChangeKey::Numbers`]: the newest number assigned.
    Numbers(Option<ChangeNumber>),
    /// Of [`ChangeKey::Policy`].
    Policy(PolicyState),
    /// Of [`ChangeKey::Freezes`].
    Freezes(Freezes),
}

impl StreamKey for ChangeKey {
    type State = ChangeRead;

    fn streams(&self) -> Vec<StreamId> {
        match self {
            ChangeKey::Access => vec![access_stream()],
            ChangeKey::Schema => vec![schema_stream()],
            ChangeKey::Change(id) => vec![details_stream(*id), state_stream(*id)],
            ChangeKey::Details(id) => vec![details_stream(*id)],
            ChangeKey::State(id) => vec![state_stream(*id)],
            ChangeKey::Template(id) => vec![id.stream()],
            ChangeKey::Ci(id) => vec![id.stream()],
            ChangeKey::Name(key) => vec![key.stream()],
            ChangeKey::Numbers => vec![numbers_stream()],
            ChangeKey::Policy => vec![policy_stream()],
            ChangeKey::Freezes => vec![freeze::freezes_stream()],
        }
    }

    fn depth(&self) -> Depth {
        if *self == ChangeKey::Numbers { Depth::Newest } else { Depth::Whole }
    }

    fn initial(&self) -> ChangeRead {
        match self {
            ChangeKey::Access => ChangeRead::Access(AccessState::default()),
            ChangeKey::Schema => ChangeRead::Schema(SchemaRegistry::default()),
            ChangeKey::Change(_) => ChangeRead::Change(None),
            ChangeKey::Details(_) | ChangeKey::State(_) => ChangeRead::Written,
            ChangeKey::Template(_) => ChangeRead::Template(None),
            ChangeKey::Ci(_) => ChangeRead::Ci(CiState::default()),
            ChangeKey::Name(_) => ChangeRead::Name(NameState::default()),
            ChangeKey::Numbers => ChangeRead::Numbers(None),
            ChangeKey::Policy => ChangeRead::Policy(PolicyState::default()),
            ChangeKey::Freezes => ChangeRead::Freezes(Freezes::default()),
        }
    }

    fn evolve(&self, state: &mut ChangeRead, record: &EventRecord) -> Result<(), crate::Error> {
        match state {
            ChangeRead::Access(access) => access.apply(record)?,
            ChangeRead::Schema(registry) => registry.apply(record)?,
            ChangeRead::Change(change) => fold_change_record(change, record)?,
            ChangeRead::Written => {}
            ChangeRead::Template(template) => {
                let event = ChangeEvent::from_record(record)?;
                TemplateRecord::apply(template, &event, At::of(record), record.stream_version);
            }
            ChangeRead::Ci(ci) => ci.apply_record(record)?,
            ChangeRead::Name(name) => name.apply(&crate::ci::CiEvent::from_record(record)?, record.stream_version),
            ChangeRead::Numbers(newest) => {
                if let ChangeEvent::NumberAssigned(assigned) = ChangeEvent::from_record(record)? {
                    *newest = Some(assigned.number);
                }
            }
            ChangeRead::Policy(policies) => policies.apply(record)?,
            ChangeRead::Freezes(freezes) => freezes.apply(record)?,
        }
        Ok(())
    }
}

/// Folds one record of a change's two streams (in log order).
fn fold_change_record(change: &mut Option<Box<ChangeRecord>>, record: &EventRecord) -> Result<(), ChangeError> {
    let event = ChangeEvent::from_record(record)?;
    let at = At::of(record);
    match (change.as_mut(), &event) {
        (None, ChangeEvent::Drafted(drafted)) => *change = Some(Box::new(ChangeRecord::drafted(drafted, at))),
        (Some(existing), _) => existing.apply(&event, at),
        (None, _) => {
            return Err(ChangeError::Undecodable {
                position: record.position,
                detail: "a change event before the change was drafted".into(),
            });
        }
    }
    if let Some(existing) = change.as_mut() {
        let is_state = record.stream_id == state_stream(existing.change_id);
        let version = if is_state { &mut existing.state_version } else { &mut existing.details_version };
        debug_assert!(version.is_none_or(|v| v < record.stream_version), "a fold only moves forward");
        *version = Some(record.stream_version);
    }
    Ok(())
}

/// Folds the records of a change's two streams (each in stream order) in log order.
pub fn fold_change(details: &[EventRecord], state: &[EventRecord]) -> Result<Option<ChangeRecord>, ChangeError> {
    let mut all: Vec<&EventRecord> = details.iter().chain(state).collect();
    all.sort_by_key(|r| r.position);
    let mut change = None;
    for record in all {
        fold_change_record(&mut change, record)?;
    }
    Ok(change.map(|c| *c))
}

static EMPTY_ACCESS: LazyLock<AccessState> = LazyLock::new(AccessState::default);
static EMPTY_SCHEMA: LazyLock<SchemaRegistry> = LazyLock::new(SchemaRegistry::default);
static EMPTY_POLICIES: LazyLock<PolicyState> = LazyLock::new(PolicyState::default);
static EMPTY_FREEZES: LazyLock<Freezes> = LazyLock::new(Freezes::default);

/// Typed access to what a change decision read.
impl ReadSet<ChangeKey> {
    /// Principals and roles (empty before read).
    pub fn access(&self) -> &AccessState {
        match self.get(&ChangeKey::Access) {
            Some(ChangeRead::Access(access)) => access,
            _ => &EMPTY_ACCESS,
        }
    }

    /// The schema registry (empty before read).
    pub fn schema(&self) -> &SchemaRegistry {
        match self.get(&ChangeKey::Schema) {
            Some(ChangeRead::Schema(registry)) => registry,
            _ => &EMPTY_SCHEMA,
        }
    }

    /// The change, if read and drafted.
    pub fn change(&self, id: ChangeId) -> Option<&ChangeRecord> {
        match self.get(&ChangeKey::Change(id)) {
            Some(ChangeRead::Change(Some(change))) => Some(change),
            _ => None,
        }
    }

    /// The template, if read and created.
    pub fn template(&self, id: TemplateId) -> Option<&TemplateRecord> {
        match self.get(&ChangeKey::Template(id)) {
            Some(ChangeRead::Template(Some(template))) => Some(template),
            _ => None,
        }
    }

    /// A CI's stream fold, if read.
    pub fn ci_state(&self, id: CiId) -> Option<&CiState> {
        match self.get(&ChangeKey::Ci(id)) {
            Some(ChangeRead::Ci(state)) => Some(state),
            _ => None,
        }
    }

    /// Which CI holds a name, if the claim was read.
    pub fn name_holder(&self, key: &NameKey) -> Option<CiId> {
        match self.get(&ChangeKey::Name(key.clone())) {
            Some(ChangeRead::Name(state)) => state.holder,
            _ => None,
        }
    }

    /// The number the next submission gets.
    pub fn next_number(&self) -> ChangeNumber {
        match self.get(&ChangeKey::Numbers) {
            Some(ChangeRead::Numbers(Some(newest))) => ChangeNumber(newest.0 + 1),
            _ => ChangeNumber(1),
        }
    }

    /// The approval policies (the built-in default only, before read).
    pub fn policies(&self) -> &PolicyState {
        match self.get(&ChangeKey::Policy) {
            Some(ChangeRead::Policy(policies)) => policies,
            _ => &EMPTY_POLICIES,
        }
    }

    /// The freeze windows (none before read).
    pub fn freezes(&self) -> &Freezes {
        match self.get(&ChangeKey::Freezes) {
            Some(ChangeRead::Freezes(freezes)) => freezes,
            _ => &EMPTY_FREEZES,
        }
    }
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
        ChangeCommand::AcknowledgeConflict { .. }
        | ChangeCommand::CreateFreeze { .. }
        | ChangeCommand::LiftFreeze { .. }
        | ChangeCommand::Reassess { .. }
        | ChangeCommand::Comment { .. }
        | ChangeCommand::Link { .. }
        | ChangeCommand::CreateTemplate { .. }
        | ChangeCommand::RetireTemplate { .. } => None,
    }
}

/// Whether a command's decision uses the approval policy in force.
pub(super) fn needs_policy(command: &ChangeCommand) -> bool {
    matches!(command, ChangeCommand::Reassess { .. } | ChangeCommand::Act { facts: Some(_), .. })
}

/// Whether a command's decision uses the freeze windows.
pub(super) fn needs_freezes(command: &ChangeCommand) -> bool {
    matches!(
        command,
        ChangeCommand::Schedule { .. }
            | ChangeCommand::Reschedule { .. }
            | ChangeCommand::CreateFreeze { .. }
            | ChangeCommand::LiftFreeze { .. }
    )
}

/// Whether a command assigns the next change number.
fn assigns_number(command: &ChangeCommand) -> bool {
    matches!(
        command,
        ChangeCommand::RecordRetrospective { .. } | ChangeCommand::Act { action: super::ChangeAction::Submit, .. }
    )
}

/// The keys `command` reads, given what is read: the access state and the schema always;
/// the change, its template, the numbers, the policy and the freezes as the command needs;
/// then the CIs and names its scope names.
pub(super) fn reads_of(command: &ChangeCommand, read: &ReadSet<ChangeKey>) -> Vec<ChangeKey> {
    let mut keys = vec![ChangeKey::Access, ChangeKey::Schema];
    let change_id = command.change_id();
    keys.extend(change_id.map(ChangeKey::Change));
    match command {
        ChangeCommand::Draft { template_id: Some(id), .. }
        | ChangeCommand::CreateTemplate { template_id: id, .. }
        | ChangeCommand::RetireTemplate { template_id: id, .. } => keys.push(ChangeKey::Template(*id)),
        ChangeCommand::CreateFreeze { scope: FreezeScope::Service { service }, .. } => {
            keys.push(ChangeKey::Ci(*service));
        }
        _ => {}
    }
    if assigns_number(command) {
        keys.push(ChangeKey::Numbers);
    }
    if needs_policy(command) {
        keys.push(ChangeKey::Policy);
    }
    if needs_freezes(command) {
        keys.push(ChangeKey::Freezes);
    }
    let change = change_id.and_then(|id| read.change(id));
    if change_id.is_some() && !change_id.is_some_and(|id| read.contains(&ChangeKey::Change(id))) {
        return keys; // the change first: its template and scope decide what else to read
    }
    keys.extend(change.and_then(|c| c.template_id).map(ChangeKey::Template));
    if let Some(scope) = scope_to_check(command, change) {
        // Past the bound the decider refuses the scope: do not read thousands of streams first.
        if scope.len() <= super::MAX_SCOPE_ITEMS {
            keys.extend(scope.cis.iter().copied().map(ChangeKey::Ci));
            keys.extend(scope.planned.iter().map(|p| ChangeKey::Name(NameKey::planned(p))));
        }
    }
    keys
}

/// A change as the log holds it now; `None` if it was never drafted.
pub async fn load_change(store: &dyn EventStore, id: ChangeId) -> Result<Option<ChangeRecord>, crate::Error> {
    match fold::load(store, &ChangeKey::Change(id)).await? {
        ChangeRead::Change(change) => Ok(change.map(|c| *c)),
        _ => Ok(None),
    }
}

/// The change a number was assigned to.
pub async fn find_by_number(store: &dyn EventStore, number: ChangeNumber) -> Result<Option<ChangeId>, crate::Error> {
    let records = store.read_stream(&numbers_stream(), Direction::Forward, Some(number.0.saturating_sub(1)), 1).await?;
    match records.first() {
        Some(record) => match ChangeEvent::from_record(record)? {
            ChangeEvent::NumberAssigned(assigned) if assigned.number == number => Ok(Some(assigned.change_id)),
            _ => Ok(None),
        },
        None => Ok(None),
    }
}
