//! The application layer: what GraphQL resolvers, the CLI and the demo loader call to act on
//! the domain. It runs commands through the one executor of `cmdb-core`
//! ([`cmdb_core::decider::execute`]) and waits until the graph has applied them (read your
//! writes), assembles the facts change decisions take from the graph, turns a user's approval
//! into one atomic decision, and resolves change references.
//!
//! Architecture invariant: this layer holds no GraphQL and no HTTP; resolvers only translate
//! arguments into calls here and results back. It holds no domain rule either: those are in
//! the deciders. What it owns is sequencing: which facts a command needs, in which order
//! reads and commands happen, and what a caller may wait for.

pub mod access_view;
pub mod changes;
pub mod discovery;
pub mod evidence;
pub mod impact_cache;
pub mod redaction;
pub mod releases;
pub mod tooling;

use std::sync::Arc;
use std::time::Duration;

use cmdb_core::access::{AccessCommand, AccessDecider};
use cmdb_core::change::{ChangeDecider, ChangeSettings};
use cmdb_core::ci::{CiCommand, CiDecider, CiKey};
use cmdb_core::decider::cache::StateCache;
use cmdb_core::decider::{CommandContext, Decider, Executed, execute};
use cmdb_core::{Clock, EventStore, Metadata};
use cmdb_projections::facts::FactSettings;
use cmdb_projections::graph::{GraphError, TemporalGraph};
use cmdb_projections::runner::ProjectionHandle;

use access_view::AccessView;

/// How the application layer behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppSettings {
    /// What shapes change decisions (deadlines, freezes).
    pub change: ChangeSettings,
    /// What change facts depend on (history window, conflict depth).
    pub facts: FactSettings,
    /// How long a command waits for the graph (or the access view) to apply what it wrote.
    pub apply_wait: Duration,
}

/// Why an application call failed.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message says what its fields are")]
pub enum AppError {
    /// The domain refused, or the store failed.
    #[error(transparent)]
    Core(#[from] cmdb_core::Error),
    /// The graph could not answer.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// The gate could not answer (nothing was recorded).
    #[error(transparent)]
    Gate(#[from] releases::GateError),
    /// A change named by number or id that does not exist.
    #[error("no change {0}")]
    UnknownChange(String),
    /// The write is durable but the read models have not applied it within the wait.
    #[error("the change is durable at position {position} but the {model} has not applied it within {waited_ms} ms")]
    NotYetApplied {
        /// Where the write landed.
        position: u64,
        /// Which read model lags.
        model: &'static str,
        /// How long the call waited.
        waited_ms: u64,
    },
}

/// Where a command's events landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// The first event's position.
    pub first_position: u64,
    /// The last event's position: reads at it see the command's effect.
    pub last_position: u64,
}

impl<K, E> From<&Executed<K, E>> for Written {
    fn from(executed: &Executed<K, E>) -> Self {
        Written { first_position: executed.outcome.first_position, last_position: executed.outcome.last_position }
    }
}

/// The application: the log, the read models that follow it, the clock and the settings.
pub struct App {
    /// The event log.
    pub store: Arc<dyn EventStore>,
    /// The temporal graph (and the change book inside it).
    pub graph: ProjectionHandle<TemporalGraph>,
    /// Principals and tokens, as authentication reads them.
    pub access: Arc<AccessView>,
    /// The clock decisions are made at.
    pub clock: Arc<dyn Clock>,
    /// How it behaves.
    pub settings: AppSettings,
    /// The folds CI commands read, kept between commands (optimistic: never changes a decision).
    ci_cache: StateCache<CiKey>,
    /// Serialises access commands in this process (they all write the one access stream).
    access_commands: tokio::sync::Mutex<()>,
    /// Serialises gate calls of one pipeline run in this process.
    pipeline_locks: releases::PipelineLocks,
    /// Takes turns for observations that lost the race for the change numbers (each opens a
    /// retrospective change) more often than the executor retries.
    numbering: tokio::sync::Mutex<()>,
    /// The folds deployment and observation commands read (CIs, the schema, deployments,
    /// releases, deliveries; the change streams of an unauthorised deployment's retrospective
    /// change, access included), kept between commands like `ci_cache`: optimistic, so a
    /// decision on a stale fold is appended conditionally and decided again on fresh ones.
    deployment_cache: StateCache<cmdb_core::release::ReleaseKey>,
    /// Impact answers kept between requests.
    pub impacts: impact_cache::ImpactCache,
    /// The findings of the audits read most recently (recomputing them reads the whole scope).
    pub audit_findings: discovery::FindingsCache,
}

impl App {
    /// The application over a log and its read models.
    pub fn new(
        store: Arc<dyn EventStore>,
        graph: ProjectionHandle<TemporalGraph>,
        access: Arc<AccessView>,
        clock: Arc<dyn Clock>,
        settings: AppSettings,
    ) -> App {
        App {
            store,
            graph,
            access,
            clock,
            settings,
            ci_cache: StateCache::new(),
            impacts: impact_cache::ImpactCache::default(),
            access_commands: tokio::sync::Mutex::new(()),
            pipeline_locks: releases::PipelineLocks::default(),
            numbering: tokio::sync::Mutex::new(()),
            deployment_cache: StateCache::new(),
            audit_findings: discovery::FindingsCache::default(),
        }
    }

    /// The context of a command by `metadata`'s actor, now.
    pub fn context(&self, metadata: Metadata) -> CommandContext {
        CommandContext::new(metadata, self.clock.now())
    }

    /// Waits until the graph has applied `position`.
    pub async fn wait_for_graph(&self, position: u64) -> Result<(), AppError> {
        // A position written through another process (PostgreSQL): look at the log's head now
        // rather than at the next notification or poll.
        if self.graph.applied() < position && self.store.head().await.is_ok_and(|head| head.position < position) {
            let _ = self.store.refresh_head().await;
        }
        if self.graph.wait_for(position, self.settings.apply_wait).await {
            Ok(())
        } else {
            Err(AppError::NotYetApplied { position, model: "graph", waited_ms: self.wait_ms() })
        }
    }

    fn wait_ms(&self) -> u64 {
        u64::try_from(self.settings.apply_wait.as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs a command through the one executor and waits until the graph has applied it, so
    /// that the caller's next read sees it (read your writes).
    pub async fn run<D: Decider>(
        &self,
        decider: &D,
        command: &D::Command,
        metadata: Metadata,
    ) -> Result<Executed<D::Key, D::Event>, AppError> {
        let executed = execute(self.store.as_ref(), decider, command, &self.context(metadata), None).await?;
        self.wait_for_graph(executed.outcome.last_position).await?;
        Ok(executed)
    }

    /// Runs a CI command (with the state cache: a server's CI edits usually read nothing) and
    /// waits for the graph.
    pub async fn edit_ci(&self, command: &CiCommand, metadata: Metadata) -> Result<Written, AppError> {
        let context = self.context(metadata);
        let executed = execute(self.store.as_ref(), &CiDecider, command, &context, Some(&self.ci_cache)).await?;
        self.wait_for_graph(executed.outcome.last_position).await?;
        Ok(Written::from(&executed))
    }

    /// The change decider with this application's settings.
    pub fn change_decider(&self) -> ChangeDecider {
        ChangeDecider { settings: self.settings.change }
    }

    /// Runs an access command and waits until the access view has applied it, so the next
    /// request (on any connection) sees it: a revoked token is refused from then on.
    pub async fn access(&self, command: &AccessCommand, metadata: Metadata) -> Result<Written, AppError> {
        // One access command at a time in this process: they all write the one access stream,
        // and queueing here is cheaper than deciding again after conflicts. Other processes (the
        // CLI) still race, and lose at most a retry.
        let _turn = self.access_commands.lock().await;
        let executed = execute(self.store.as_ref(), &AccessDecider, command, &self.context(metadata), None).await?;
        let position = executed.outcome.last_position;
        if !self.access.wait_for(position, self.settings.apply_wait).await {
            return Err(AppError::NotYetApplied { position, model: "access view", waited_ms: self.wait_ms() });
        }
        Ok(Written::from(&executed))
    }
}

/// Runs a command where no application runs (the CLI on a data directory, the server's
/// bootstrap before it listens): the one executor, no cache, no read model to wait for.
pub async fn run_offline<D: Decider>(
    store: &dyn EventStore,
    decider: &D,
    command: &D::Command,
    metadata: Metadata,
    now: cmdb_core::Timestamp,
) -> Result<Executed<D::Key, D::Event>, cmdb_core::Error> {
    execute(store, decider, command, &CommandContext::new(metadata, now), None).await
}
