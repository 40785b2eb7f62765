//! What deployment tooling reports, through the application layer: a tool's deployment or
//! incident is mapped to a CI by the mapping rules (an event that maps to nothing is kept as
//! unmapped with the reason), the facts of its authority are gathered at the head (changes
//! scheduled or implementing on the CI), and the release decider records it (CM-3, CH-8).
//! No HTTP here: the hooks (`server/hooks/`) translate GitHub and CDEvents payloads into
//! [`ToolReport`]s and [`IncidentReport`]s.

use cmdb_core::event::Metadata;
use cmdb_core::ids::{ChangeId, CiId};
use cmdb_core::release::observe::{
    DeliveryReceived, IncidentOpened, IncidentResolved, MAX_AUTHORISING_CANDIDATES, MappingRule, ObserveError,
    ObservedDeployment, ObservedState, Provider, ToolRef, environment_named,
};
use cmdb_core::release::{ArtifactDigest, DeploymentRecord, ReleaseCommand, ReleaseError};
use cmdb_core::time::Timestamp;

use super::{App, AppError};

/// A tool's deployment as its payload tells it, before mapping.
#[derive(Clone, Debug)]
pub struct ToolReport {
    /// The delivery (its `subject` is what the rules match besides the source).
    pub delivery: DeliveryReceived,
    /// The source the rules match (a GitHub repository, a CDEvent subject's source).
    pub source: String,
    /// The tool's deployment.
    pub deployment: ToolRef,
    /// The tool's name for the environment (`production`, `prod-eu`), if any.
    pub environment_name: Option<String>,
    /// The artifact's name.
    pub artifact: Option<String>,
    /// Its version label.
    pub version: Option<String>,
    /// Its digest.
    pub digest: Option<ArtifactDigest>,
    /// The state reported.
    pub state: ObservedState,
    /// The tool's description.
    pub description: Option<String>,
    /// A link.
    pub url: Option<String>,
    /// When the tool says it happened.
    pub occurred_at: Option<Timestamp>,
}

/// An incident as a tool tells it, before mapping.
#[derive(Clone, Debug)]
pub struct IncidentReport {
    /// The delivery.
    pub delivery: Option<DeliveryReceived>,
    /// What the rules match: the affected service's source and id (or the incident's own).
    pub service: Option<(String, String)>,
    /// The incident, its title, impact, urgency, environment and time; `cis` may be empty
    /// (then filled by the mapping).
    pub opened: IncidentOpened,
}

/// What became of a report.
#[derive(Clone, Debug)]
pub enum Observation {
    /// Recorded on this deployment (as it stands after the report).
    Recorded(Box<DeploymentRecord>),
    /// Kept as unmapped, for this reason.
    Unmapped(String),
    /// The delivery was recorded before; nothing was recorded again.
    Duplicate,
    /// The delivery was recorded; it changes nothing (its id).
    Kept(String),
    /// An incident opened, resolved, or repeated.
    Incident {
        /// Its id at its tool.
        id: String,
        /// Its priority, when opened.
        priority: Option<u8>,
        /// The CIs it names.
        cis: Vec<CiId>,
    },
}

fn duplicate(error: &AppError) -> bool {
    matches!(
        error,
        AppError::Core(cmdb_core::Error::Release(ReleaseError::Observe(ObserveError::DuplicateDelivery { .. })))
    )
}

/// The id of the retrospective change an unauthorised tool deployment gets: derived from the
/// deployment, so a delivery decided again names the same change.
pub fn retrospective_change_id(deployment: &ToolRef) -> ChangeId {
    let id = deployment.deployment_id();
    let hash = blake3::hash(format!("retrospective {id}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash.as_bytes()[..16]);
    ChangeId(uuid::Builder::from_custom_bytes(bytes).into_uuid())
}

impl App {
    /// The rule for a tool's source and subject, at the head.
    pub fn mapping_for(&self, provider: Provider, source: &str, subject: Option<&str>) -> Option<MappingRule> {
        self.graph.read().release_book().mappings().resolve(provider, source, subject).cloned()
    }

    /// Changes that may authorise an edit of `ci` now: implementing (or failed) on it. The
    /// decider checks each against the change's own state stream.
    fn authorising_candidates(&self, ci: CiId) -> Vec<ChangeId> {
        let graph = self.graph.read();
        graph
            .change_book()
            .authorising()
            .iter()
            .filter(|(_, cis)| cis.contains(&ci))
            .map(|(id, _)| *id)
            .take(MAX_AUTHORISING_CANDIDATES)
            .collect()
    }

    /// Records a tool's deployment: mapped to a CI and decided, or kept as unmapped.
    pub async fn observe(&self, report: ToolReport, metadata: Metadata) -> Result<Observation, AppError> {
        let provider = report.delivery.tool.provider;
        let source = report.source.clone();
        let subject = report.delivery.subject.clone();
        let Some(rule) = self.mapping_for(provider, &source, subject.as_deref()) else {
            let reason = format!("no mapping rule for {provider} source {source:?} subject {subject:?}");
            return self.unmapped(report.delivery, reason, metadata).await;
        };
        let ci_environment = {
            let graph = self.graph.read();
            graph.ci_at(rule.ci, graph.applied()).and_then(|ci| ci.environment)
        };
        let environment = rule.environment.or_else(|| report.environment_name.as_deref().and_then(environment_named));
        let Some(environment) = environment.or(ci_environment) else {
            let reason = format!(
                "the rule names CI {} but no environment, {:?} is not one, and the CI has none",
                rule.ci, report.environment_name
            );
            return self.unmapped(report.delivery, reason, metadata).await;
        };
        let id = report.deployment.deployment_id();
        let authorising = self.authorising_candidates(rule.ci);
        // A first sighting with no change to authorise it opens a retrospective change, and
        // change numbers are gapless on one stream: such observations take turns here rather
        // than race (and exhaust the executor's attempts) for the next number.
        let first_sighting = {
            let graph = self.graph.read();
            graph.release_book().deployment_at(id, graph.applied()).is_none()
        };
        let _turn = if authorising.is_empty() && first_sighting { Some(self.numbering.lock().await) } else { None };
        let command = ReleaseCommand::Observe(Box::new(ObservedDeployment {
            retrospective: retrospective_change_id(&report.deployment),
            delivery: report.delivery,
            deployment: report.deployment,
            ci: rule.ci,
            environment,
            artifact: report.artifact,
            version: report.version,
            digest: report.digest,
            state: report.state,
            description: report.description,
            url: report.url,
            occurred_at: report.occurred_at,
            authorising,
            release: None,
        }));
        let result = match self.release(&command, metadata.clone()).await {
            // A change that lapsed meanwhile can still make it retrospective: past the
            // executor's attempts, take a turn.
            Err(AppError::Core(cmdb_core::Error::Contended { .. })) if _turn.is_none() => {
                let _late = self.numbering.lock().await;
                self.release(&command, metadata).await
            }
            other => other,
        };
        match result {
            Ok(_) => Ok(Observation::Recorded(Box::new(self.deployment_now(id)?))),
            Err(e) if duplicate(&e) => Ok(Observation::Duplicate),
            Err(e) => Err(e),
        }
    }

    /// Records a delivery that changes nothing (a CDEvent kept for the record).
    pub async fn received(&self, delivery: DeliveryReceived, metadata: Metadata) -> Result<Observation, AppError> {
        let id = delivery.tool.id.clone();
        match self.release(&ReleaseCommand::RecordUnmapped(Box::new(delivery)), metadata).await {
            Ok(_) => Ok(Observation::Kept(id)),
            Err(e) if duplicate(&e) => Ok(Observation::Duplicate),
            Err(e) => Err(e),
        }
    }

    /// Keeps a delivery that maps to nothing, with the reason.
    pub async fn unmapped(
        &self,
        mut delivery: DeliveryReceived,
        reason: String,
        metadata: Metadata,
    ) -> Result<Observation, AppError> {
        delivery.unmapped = Some(reason.clone());
        match self.release(&ReleaseCommand::RecordUnmapped(Box::new(delivery)), metadata).await {
            Ok(_) => Ok(Observation::Unmapped(reason)),
            Err(e) if duplicate(&e) => Ok(Observation::Duplicate),
            Err(e) => Err(e),
        }
    }

    /// Opens an incident, its CIs given or mapped from the affected service.
    pub async fn open_incident(&self, report: IncidentReport, metadata: Metadata) -> Result<Observation, AppError> {
        let mut opened = report.opened;
        if let Some((source, id)) = &report.service {
            let rule = self.mapping_for(opened.incident.provider, source, Some(id));
            opened.cis.extend(rule.map(|r| r.ci).filter(|ci| !opened.cis.contains(ci)));
        }
        if opened.cis.is_empty()
            && let Some(delivery) = report.delivery
        {
            let reason = format!(
                "incident {:?}: no mapping rule for its service {:?} and no CI named",
                opened.incident.id, report.service
            );
            return self.unmapped(delivery, reason, metadata).await;
        }
        let (id, cis) = (opened.incident.id.clone(), opened.cis.clone());
        let priority = cmdb_core::release::observe::priority(opened.impact, opened.urgency);
        let command =
            ReleaseCommand::OpenIncident { opened: Box::new(opened), delivery: report.delivery.map(Box::new) };
        match self.release(&command, metadata).await {
            Ok(_) => Ok(Observation::Incident { id, priority: Some(priority), cis }),
            Err(e) if duplicate(&e) => Ok(Observation::Duplicate),
            Err(e) => Err(e),
        }
    }

    /// Resolves an incident; a tool's resolution of an incident never opened is kept unmapped.
    pub async fn resolve_incident(
        &self,
        resolved: IncidentResolved,
        delivery: Option<DeliveryReceived>,
        metadata: Metadata,
    ) -> Result<Observation, AppError> {
        let id = resolved.incident.id.clone();
        let command =
            ReleaseCommand::ResolveIncident { resolved: Box::new(resolved), delivery: delivery.clone().map(Box::new) };
        match self.release(&command, metadata.clone()).await {
            Ok(_) => Ok(Observation::Incident { id, priority: None, cis: Vec::new() }),
            Err(e) if duplicate(&e) => Ok(Observation::Duplicate),
            Err(e) => match delivery {
                Some(delivery) if not_open(&e) => {
                    self.unmapped(delivery, format!("incident {id:?} is not open here"), metadata).await
                }
                _ => Err(e),
            },
        }
    }
}

fn not_open(error: &AppError) -> bool {
    matches!(
        error,
        AppError::Core(cmdb_core::Error::Release(ReleaseError::Observe(
            ObserveError::UnknownIncident(_) | ObserveError::IncidentResolved(_)
        )))
    )
}
