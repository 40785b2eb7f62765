//! Changes in the application layer: references to a change (id or `CHG-` number), the facts
//! change decisions take from the graph, and the commands that need them (assess, submit a
//! standard change, approve, schedule, reschedule, reassess).

use std::str::FromStr;

use cmdb_core::change::risk::AssessmentFacts;
use cmdb_core::change::{
    ChangeAction, ChangeCommand, ChangeDetails, ChangeError, ChangeNumber, ChangeRecord, ChangeState, ChangeType,
    Review, ScheduleFacts, Scope, Window, find_by_number, load_change,
};
use cmdb_core::ci::ChangeId;
use cmdb_core::model::ModelError;
use cmdb_core::{EventStore, Metadata};
use cmdb_projections::changes::ChangeBook;
use cmdb_projections::{calendar, facts};

use super::{App, AppError, Written};

/// How often an approval is decided again because the graph had not yet applied an edit of
/// its scope that the log holds (the facts were stale); each attempt first waits for the graph.
pub const MAX_STALE_FACTS_ATTEMPTS: usize = 3;

/// A change as a client names it: its id, or its number (`CHG-000042`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeRef {
    /// By id.
    Id(ChangeId),
    /// By number.
    Number(ChangeNumber),
}

impl FromStr for ChangeRef {
    type Err = ModelError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim().to_ascii_uppercase().starts_with("CHG-") {
            return text.parse().map(ChangeRef::Number);
        }
        text.parse().map(ChangeRef::Id).map_err(|_| ModelError::InvalidChangeRef(text.to_owned()))
    }
}

impl std::fmt::Display for ChangeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChangeRef::Id(id) => id.fmt(f),
            ChangeRef::Number(number) => number.fmt(f),
        }
    }
}

impl ChangeRef {
    /// The change it names, as the log holds it now (a number assigned a moment ago is found).
    pub async fn resolve(&self, store: &dyn EventStore) -> Result<ChangeId, AppError> {
        match self {
            ChangeRef::Id(id) => Ok(*id),
            ChangeRef::Number(number) => {
                find_by_number(store, *number).await?.ok_or_else(|| AppError::UnknownChange(number.to_string()))
            }
        }
    }

    /// The change it names in the change book at `position`, if any.
    pub fn resolve_at(&self, book: &ChangeBook, position: u64) -> Option<ChangeId> {
        match self {
            ChangeRef::Id(id) => Some(*id),
            ChangeRef::Number(number) => book.id_of(*number, position),
        }
    }
}

/// The change as the log holds it now.
pub async fn load(store: &dyn EventStore, id: ChangeId) -> Result<ChangeRecord, AppError> {
    load_change(store, id).await?.ok_or_else(|| AppError::UnknownChange(id.to_string()))
}

impl App {
    /// The change `reference` names, as the log holds it now: a number the graph has applied
    /// is looked up there (a number, once given, never moves), a newer one in the log.
    pub async fn resolve_change(&self, reference: &ChangeRef) -> Result<ChangeId, AppError> {
        let known = {
            let graph = self.graph.read();
            reference.resolve_at(graph.change_book(), graph.applied())
        };
        match known {
            Some(id) => Ok(id),
            None => reference.resolve(self.store.as_ref()).await,
        }
    }

    /// The risk facts of a change with `details`, from the graph at its applied position.
    pub fn risk_facts(
        &self,
        change_id: Option<ChangeId>,
        details: &ChangeDetails,
    ) -> Result<AssessmentFacts, AppError> {
        let graph = self.graph.read();
        let position = graph.applied();
        Ok(facts::risk_facts(&graph, change_id, details, position, self.clock.now(), self.settings.facts)?)
    }

    /// What scheduling `change_id` into `window` checks (services reached, conflicts).
    pub fn schedule_facts(
        &self,
        change_id: ChangeId,
        scope: &Scope,
        window: Option<&Window>,
    ) -> Result<ScheduleFacts, AppError> {
        let Some(window) = window else { return Ok(ScheduleFacts::default()) };
        let graph = self.graph.read();
        Ok(calendar::schedule_facts(&graph, Some(change_id), scope, window, self.settings.facts.conflict_max_depth)?)
    }

    /// Runs a change command and waits for the graph.
    pub async fn change(&self, command: &ChangeCommand, metadata: Metadata) -> Result<Written, AppError> {
        Ok(Written::from(&self.run(&self.change_decider(), command, metadata).await?))
    }

    /// A transition of the change's life cycle (CH-1 to CH-8). Assessing, and submitting a
    /// standard change, carry the risk facts from the graph (CH-2). Approving an assessed
    /// change whose scope changed since its assessment carries fresh facts, and the
    /// reassessment and the approval are one decision (one atomic append; CH-2, CH-4).
    pub async fn transition(
        &self,
        change_id: ChangeId,
        action: ChangeAction,
        note: Option<String>,
        review: Option<Review>,
        metadata: Metadata,
    ) -> Result<Written, AppError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let facts = self.facts_for_transition(change_id, action).await?.map(Box::new);
            let command = ChangeCommand::Act { change_id, action, note: note.clone(), review: review.clone(), facts };
            match self.change(&command, metadata.clone()).await {
                Err(AppError::Core(cmdb_core::Error::Change(ChangeError::StaleAssessment { .. })))
                    if attempt < MAX_STALE_FACTS_ATTEMPTS =>
                {
                    // The log holds an edit of the scope the graph has not applied yet.
                    let head = self.store.head().await.map_err(cmdb_core::Error::from)?.position;
                    self.wait_for_graph(head).await?;
                }
                other => return other,
            }
        }
    }

    /// The facts `action` needs, if any.
    async fn facts_for_transition(
        &self,
        change_id: ChangeId,
        action: ChangeAction,
    ) -> Result<Option<AssessmentFacts>, AppError> {
        if !matches!(action, ChangeAction::Assess | ChangeAction::Submit | ChangeAction::Approve) {
            return Ok(None);
        }
        let change = load(self.store.as_ref(), change_id).await?;
        let wanted = match action {
            ChangeAction::Assess => true,
            ChangeAction::Submit => change.change_type == ChangeType::Standard,
            _ => change.state == ChangeState::Assessed && self.assessment_is_stale(&change),
        };
        if wanted { self.risk_facts(Some(change_id), &change.details).map(Some) } else { Ok(None) }
    }

    /// Whether a CI of the change's scope changed after the facts of its assessment in force.
    fn assessment_is_stale(&self, change: &ChangeRecord) -> bool {
        let Some(entry) = change.assessment() else { return false };
        let graph = self.graph.read();
        facts::scope_changed_since(&graph, &change.details.scope, entry.assessment.facts.position)
    }

    /// Assesses an assessed change again on request: new facts, a new decision.
    pub async fn reassess(&self, change_id: ChangeId, metadata: Metadata) -> Result<Written, AppError> {
        let change = load(self.store.as_ref(), change_id).await?;
        let facts = Box::new(self.risk_facts(Some(change_id), &change.details)?);
        let trigger = cmdb_core::change::AssessmentTrigger::Request;
        self.change(&ChangeCommand::Reassess { change_id, facts, trigger }, metadata).await
    }

    /// Schedules an approved change into its window, checked against freezes and conflicts.
    pub async fn schedule(
        &self,
        change_id: ChangeId,
        note: Option<String>,
        metadata: Metadata,
    ) -> Result<Written, AppError> {
        let change = load(self.store.as_ref(), change_id).await?;
        let facts = Box::new(self.schedule_facts(change_id, &change.details.scope, change.details.window.as_ref())?);
        self.change(&ChangeCommand::Schedule { change_id, note, facts }, metadata).await
    }

    /// Moves a scheduled change to `window`, with the same checks.
    pub async fn reschedule(
        &self,
        change_id: ChangeId,
        window: Window,
        note: Option<String>,
        metadata: Metadata,
    ) -> Result<Written, AppError> {
        let change = load(self.store.as_ref(), change_id).await?;
        let facts = Box::new(self.schedule_facts(change_id, &change.details.scope, Some(&window))?);
        self.change(&ChangeCommand::Reschedule { change_id, window, note, facts }, metadata).await
    }
}
