//! What deployment tooling tells the engine (CM-5, CM-7, CH-6, CH-9, RL-6, RL-7, IN-1):
//! deployments observed by GitHub or announced as CDEvents (Argo CD through its notifications),
//! the mapping rules from a tool's names to CIs, deliveries kept once each, unauthorised
//! changes caught, and incidents.
//!
//! - A **delivery** (stream `delivery-<hash of provider, source and delivery id>`) is recorded
//!   once: a second delivery of the same id is refused as a duplicate and changes nothing.
//!   A delivery that maps to no CI is kept as *unmapped* with the reason.
//! - **Mapping rules** (stream `tool-mappings`, admin): a provider's source (a GitHub
//!   repository, a CDEvents source) and optionally its subject (a GitHub environment, a
//!   CDEvents subject id, an Argo CD application) name a CI and, optionally, the environment.
//! - An **observed deployment** is a deployment record (`deployment-<id>`, the id derived from
//!   the provider, source and the tool's own deployment id, so every status of one tool
//!   deployment lands on one record) with the tool's observations. Found with an implementing
//!   change covering the CI (or an accepted release carried by one), its success edits the CI
//!   under that change as any deployment does. Found with none, its first observation appends,
//!   atomically: the deployment, an **unauthorised change** record, a retrospective emergency
//!   change (decided by the change domain's own decider, so its deadline is CH-8's) and, once
//!   it succeeded, the CI edit flagged unauthorised under that change.
//! - An **incident** (stream `incident-<hash of source and id>`) has a priority from impact and
//!   urgency, the CIs it affects, and a resolution time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ArtifactDigest, DeploymentId, MAX_NAME_BYTES, MAX_PIPELINE_FIELD_BYTES, MAX_TEXT_BYTES, ReleaseId};
use crate::event::StreamId;
use crate::ids::{ChangeId, CiId};
use crate::model::{Environment, ModelError, lenient, named_enum};
use crate::time::Timestamp;

/// Most mapping rules.
pub const MAX_MAPPING_RULES: usize = 10_000;
/// Most candidate changes an observation names.
pub const MAX_AUTHORISING_CANDIDATES: usize = 16;
/// Most observations one deployment keeps (a tool's statuses of one deployment).
pub const MAX_OBSERVATIONS_PER_DEPLOYMENT: usize = 1_000;
/// Most GitHub protection-rule callbacks waiting at once.
pub const MAX_PENDING_CALLBACKS: usize = 10_000;
/// The stream of GitHub protection-rule callbacks waiting for the gate.
pub const CALLBACKS_STREAM: &str = "github-callbacks";
/// Most CIs one incident names.
pub const MAX_CIS_PER_INCIDENT: usize = 100;
/// The stream of mapping rules.
pub const MAPPINGS_STREAM: &str = "tool-mappings";

named_enum!(
    /// A deployment tool the engine hears from.
    Provider, "deployment tool", lenient {
        /// GitHub deployments and deployment statuses (webhooks).
        Github => "github",
        /// CDEvents over CloudEvents (Argo CD, Tekton, Keptn, Spinnaker...).
        Cdevents => "cdevents",
    }
);

named_enum!(
    /// A state a tool reports for one of its deployments (GitHub's deployment statuses, and
    /// what the CDEvents service events mean).
    ObservedState, "observed deployment state", lenient {
        /// Waiting in the tool's queue.
        Queued => "queued",
        /// Created, not started (also a GitHub deployment without a status yet).
        Pending => "pending",
        /// Running.
        InProgress => "in_progress",
        /// Succeeded (CDEvents `service.deployed` and `service.upgraded`).
        Success => "success",
        /// Failed.
        Failure => "failure",
        /// Errored before it could finish.
        Error => "error",
        /// Superseded by a later deployment (GitHub marks earlier ones inactive).
        Inactive => "inactive",
        /// The service was rolled back to the artifact named (CDEvents `service.rolledback`).
        RolledBack => "rolled_back",
        /// The service was removed from the environment (CDEvents `service.removed`).
        Removed => "removed",
    }
);

impl ObservedState {
    /// Whether the CIs now run the artifact the observation names.
    pub fn deploys(self) -> bool {
        matches!(self, ObservedState::Success | ObservedState::RolledBack)
    }

    /// Whether the deployment went wrong.
    pub fn fails(self) -> bool {
        matches!(self, ObservedState::Failure | ObservedState::Error)
    }
}

/// Where a delivery or a deployment came from: the tool, its source and the tool's own id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolRef {
    /// The tool.
    pub provider: Provider,
    /// Its source: a GitHub repository (`octo-org/payments`), a CDEvents source.
    pub source: String,
    /// The tool's own id: a delivery id, a GitHub deployment id, a CDEvents event id.
    pub id: String,
}

impl ToolRef {
    fn hash(&self, kind: &str) -> String {
        let mut hasher = blake3::Hasher::new();
        for part in [kind, self.provider.as_str(), self.source.trim(), self.id.trim()] {
            hasher.update(&(part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        hasher.finalize().to_hex()[..32].to_owned()
    }

    /// The stream recording this delivery (its id is the delivery id).
    pub fn delivery_stream(&self) -> StreamId {
        StreamId::new(format!("delivery-{}", self.hash("delivery"))).expect("valid stream id")
    }

    /// The deployment record of this tool deployment (its id is the tool's deployment id):
    /// every status of one tool deployment lands on one record.
    pub fn deployment_id(&self) -> DeploymentId {
        let hash = blake3::hash(self.hash("deployment").as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&hash.as_bytes()[..16]);
        DeploymentId(uuid::Builder::from_custom_bytes(bytes).into_uuid())
    }

    /// The stream of this incident (its id is the tool's incident id).
    pub fn incident_stream(&self) -> StreamId {
        StreamId::new(format!("incident-{}", self.hash("incident"))).expect("valid stream id")
    }

    pub(super) fn check(&self) -> Result<(), ObserveError> {
        bounded_text("source", &self.source, MAX_PIPELINE_FIELD_BYTES)?;
        bounded_text("id", &self.id, MAX_PIPELINE_FIELD_BYTES)
    }
}

/// A delivery received from a tool: recorded once, with what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryReceived {
    /// Who sent it; `id` is the delivery id.
    pub tool: ToolRef,
    /// The tool's event type (`deployment_status`, `dev.cdevents.service.deployed.0.3.0`).
    pub event_type: String,
    /// What it is about (a GitHub environment, a CDEvents subject id), if anything.
    #[serde(default)]
    pub subject: Option<String>,
    /// Why nothing was recorded from it, for an unmapped delivery.
    #[serde(default)]
    pub unmapped: Option<String>,
}

/// A mapping rule: a tool's source (and subject) name a CI (CM-5, CM-7).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingRule {
    /// The tool.
    pub provider: Provider,
    /// Its source, compared case-insensitively (`octo-org/payments`, `/argocd/prod`).
    pub source: String,
    /// Its subject, compared case-insensitively (`production`, `payments-api`); none: every
    /// subject of the source not named by another rule.
    #[serde(default)]
    pub subject: Option<String>,
    /// The CI it names.
    pub ci: CiId,
    /// The environment deployments through it go to; none: read from the tool's environment
    /// name, else the CI's own.
    #[serde(default)]
    pub environment: Option<Environment>,
}

impl MappingRule {
    fn key(&self) -> (Provider, String, Option<String>) {
        rule_key(self.provider, &self.source, self.subject.as_deref())
    }
}

fn rule_key(provider: Provider, source: &str, subject: Option<&str>) -> (Provider, String, Option<String>) {
    (provider, source.trim().to_lowercase(), subject.map(|s| s.trim().to_lowercase()))
}

/// A mapping rule stopped applying.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingRemoved {
    /// The tool.
    pub provider: Provider,
    /// The rule's source.
    pub source: String,
    /// The rule's subject.
    #[serde(default)]
    pub subject: Option<String>,
}

/// The mapping rules in force.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mappings {
    rules: BTreeMap<(Provider, String, Option<String>), MappingRule>,
}

impl Mappings {
    /// Folds a rule set.
    pub fn set(&mut self, rule: &MappingRule) {
        self.rules.insert(rule.key(), rule.clone());
    }

    /// Folds a removal.
    pub fn remove(&mut self, removed: &MappingRemoved) {
        self.rules.remove(&rule_key(removed.provider, &removed.source, removed.subject.as_deref()));
    }

    /// The rule for a tool's source and subject: the one naming both, else the source's own.
    pub fn resolve(&self, provider: Provider, source: &str, subject: Option<&str>) -> Option<&MappingRule> {
        let exact = subject.and_then(|s| self.rules.get(&rule_key(provider, source, Some(s))));
        exact.or_else(|| self.rules.get(&rule_key(provider, source, None)))
    }

    /// Every rule, in key order.
    pub fn rules(&self) -> impl Iterator<Item = &MappingRule> {
        self.rules.values()
    }

    /// How many rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether a rule with this key exists.
    pub fn contains(&self, provider: Provider, source: &str, subject: Option<&str>) -> bool {
        self.rules.contains_key(&rule_key(provider, source, subject))
    }
}

/// A tool's environment name as an environment (`prod`, `Production`, `stage`, `qa`, `dev`).
pub fn environment_named(name: &str) -> Option<Environment> {
    let name = name.trim().to_lowercase();
    let words: Vec<&str> = name.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect();
    let has = |options: &[&str]| words.iter().any(|w| options.contains(w));
    if has(&["production", "prod", "prd", "live"]) {
        Some(Environment::Production)
    } else if has(&["staging", "stage", "stg", "preprod", "uat"]) {
        Some(Environment::Staging)
    } else if has(&["test", "testing", "qa", "tst"]) {
        Some(Environment::Test)
    } else if has(&["development", "dev", "develop", "sandbox"]) {
        Some(Environment::Development)
    } else {
        None
    }
}

/// What a tool observed about one of its deployments, mapped to a CI (the command's input).
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedDeployment {
    /// The delivery that told it.
    pub delivery: DeliveryReceived,
    /// The tool's deployment (`id`: a GitHub deployment id; for CDEvents, the event id).
    pub deployment: ToolRef,
    /// The CI it maps to.
    pub ci: CiId,
    /// Where.
    pub environment: Environment,
    /// What: the artifact's name, if the tool says.
    pub artifact: Option<String>,
    /// Its version label (a tag, a git ref, a short sha).
    pub version: Option<String>,
    /// Its digest (`sha256:...`; a git commit as `sha1:...`).
    pub digest: Option<ArtifactDigest>,
    /// The state reported.
    pub state: ObservedState,
    /// The tool's description.
    pub description: Option<String>,
    /// A link to the tool's page.
    pub url: Option<String>,
    /// When the tool says it happened.
    pub occurred_at: Option<Timestamp>,
    /// Facts gathered at the head: changes that may authorise it (scheduled or implementing
    /// changes covering the CI, the changes of an accepted release setting its version), at
    /// most [`MAX_AUTHORISING_CANDIDATES`]; the first whose state authorises edits when the
    /// decision reads it is used.
    pub authorising: Vec<ChangeId>,
    /// Facts gathered at the head: the accepted release covering the CI there, if any.
    pub release: Option<ReleaseId>,
    /// The id the retrospective emergency change gets if nothing authorises the deployment.
    pub retrospective: ChangeId,
}

/// One observation, as the deployment's stream records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentObserved {
    /// The deployment.
    pub deployment_id: DeploymentId,
    /// The tool's deployment.
    pub tool: ToolRef,
    /// The delivery that told it.
    pub delivery: String,
    /// The state reported.
    pub state: ObservedState,
    /// The tool's description.
    #[serde(default)]
    pub description: Option<String>,
    /// A link to the tool's page.
    #[serde(default)]
    pub url: Option<String>,
    /// When the tool says it happened.
    #[serde(default)]
    pub occurred_at: Option<Timestamp>,
}

/// A deployment observed without a change or an accepted release covering its CI (CM-3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnauthorisedChange {
    /// The deployment.
    pub deployment_id: DeploymentId,
    /// The CI changed.
    pub ci: CiId,
    /// Where.
    pub environment: Environment,
    /// Who did it.
    pub tool: ToolRef,
    /// The retrospective emergency change opened for it (CH-8).
    pub change_id: ChangeId,
    /// The version observed.
    #[serde(default)]
    pub version: Option<String>,
}

named_enum!(
    /// How far an incident reaches (1 is widest).
    Impact, "impact", lenient {
        /// Many users or a whole service.
        High => "high",
        /// Some users or a part of a service.
        Medium => "medium",
        /// One user or a degraded non-critical function.
        Low => "low",
    }
);

named_enum!(
    /// How soon an incident must be resolved.
    Urgency, "urgency", lenient {
        /// Now.
        High => "high",
        /// Soon.
        Medium => "medium",
        /// When convenient.
        Low => "low",
    }
);

/// Priority 1 (critical) to 5 (planning) from impact and urgency, the usual 3x3 matrix.
pub fn priority(impact: Impact, urgency: Urgency) -> u8 {
    let rank = |i: usize| i as u8 + 1;
    let i = Impact::ALL.iter().position(|x| *x == impact).map_or(3, rank);
    let u = Urgency::ALL.iter().position(|x| *x == urgency).map_or(3, rank);
    let p = i + u - 1;
    debug_assert!((1..=5).contains(&p));
    p
}

/// A GitHub deployment protection rule the gate answered `pending`: it is answered through
/// `callback_url` when the gate's answer is no longer pending (the change approved or
/// rejected). Kept as an event, so a restarted server still answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackPending {
    /// GitHub's `deployment_callback_url`.
    pub callback_url: String,
    /// GitHub's environment name (sent back as `environment_name`).
    pub environment_name: String,
    /// The GitHub App installation to answer as (none: the configured token).
    #[serde(default)]
    pub installation: Option<u64>,
    /// The CI the repository maps to.
    pub ci: CiId,
    /// The environment.
    pub environment: Environment,
    /// The artifact (the repository).
    pub artifact: String,
    /// Its version (`ref@sha`).
    pub version: String,
    /// The commit as a digest.
    pub digest: ArtifactDigest,
    /// The workflow run (the gate's pipeline run id).
    pub run_id: String,
}

/// A protection-rule callback answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackAnswered {
    /// GitHub's `deployment_callback_url`.
    pub callback_url: String,
    /// `approved` or `rejected`.
    pub state: String,
    /// The comment sent (the change and the reasons).
    pub comment: String,
}

/// Callbacks waiting, by URL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Callbacks {
    /// Waiting for the gate.
    pub pending: BTreeMap<String, CallbackPending>,
}

/// An incident was detected or reported (IN-1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentOpened {
    /// The tool and its incident id (`provider` cdevents, or github for a mutation's own).
    pub incident: ToolRef,
    /// A summary.
    pub title: String,
    /// How far it reaches.
    pub impact: Impact,
    /// How soon it must be resolved.
    pub urgency: Urgency,
    /// 1 to 5, from impact and urgency.
    pub priority: u8,
    /// The CIs it affects (mapped).
    pub cis: Vec<CiId>,
    /// The environment it was seen in.
    #[serde(default)]
    pub environment: Option<Environment>,
    /// When it began.
    pub detected_at: Timestamp,
}

/// An incident was resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentResolved {
    /// The incident.
    pub incident: ToolRef,
    /// When.
    pub resolved_at: Timestamp,
    /// How.
    #[serde(default)]
    pub note: Option<String>,
}

/// An incident as its stream tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncidentRecord {
    /// What was opened.
    pub opened: IncidentOpened,
    /// Its resolution.
    pub resolved: Option<IncidentResolved>,
    /// The position it was opened at.
    pub position: u64,
}

/// Why an observation or incident was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message says what its fields are")]
pub enum ObserveError {
    #[error("delivery {id:?} from {provider} was recorded already; nothing was recorded again")]
    DuplicateDelivery { provider: Provider, id: String },
    #[error("{field} is {bytes} bytes; the bound is {bound}")]
    TooLong { field: &'static str, bytes: usize, bound: usize },
    #[error("{field} is empty")]
    Empty { field: &'static str },
    #[error("{field} names {count} items; the bound is {bound}")]
    TooMany { field: &'static str, count: usize, bound: usize },
    #[error("no mapping rule for {provider} source {source_name:?} subject {subject:?}")]
    NoSuchRule { provider: Provider, source_name: String, subject: Option<String> },
    #[error("no protection-rule callback {0:?} is waiting")]
    NoSuchCallback(String),
    #[error("incident {0:?} is recorded already")]
    IncidentExists(String),
    #[error("no incident {0:?}")]
    UnknownIncident(String),
    #[error("incident {0:?} is resolved already")]
    IncidentResolved(String),
    #[error(transparent)]
    Model(#[from] ModelError),
}

pub(super) fn bounded_text(field: &'static str, value: &str, bound: usize) -> Result<(), ObserveError> {
    if value.trim().is_empty() {
        return Err(ObserveError::Empty { field });
    }
    if value.len() > bound {
        return Err(ObserveError::TooLong { field, bytes: value.len(), bound });
    }
    Ok(())
}

pub(super) fn optional_bounded(field: &'static str, value: Option<&str>, bound: usize) -> Result<(), ObserveError> {
    match value {
        Some(v) if v.len() > bound => Err(ObserveError::TooLong { field, bytes: v.len(), bound }),
        _ => Ok(()),
    }
}

impl ObservedDeployment {
    pub(super) fn check(&self) -> Result<(), ObserveError> {
        self.delivery.tool.check()?;
        self.deployment.check()?;
        bounded_text("event type", &self.delivery.event_type, MAX_NAME_BYTES)?;
        optional_bounded("artifact", self.artifact.as_deref(), MAX_PIPELINE_FIELD_BYTES)?;
        optional_bounded("version", self.version.as_deref(), MAX_NAME_BYTES)?;
        optional_bounded("description", self.description.as_deref(), MAX_TEXT_BYTES)?;
        optional_bounded("url", self.url.as_deref(), MAX_PIPELINE_FIELD_BYTES)?;
        if self.authorising.len() > MAX_AUTHORISING_CANDIDATES {
            return Err(ObserveError::TooMany {
                field: "authorising",
                count: self.authorising.len(),
                bound: MAX_AUTHORISING_CANDIDATES,
            });
        }
        Ok(())
    }
}

impl IncidentOpened {
    pub(super) fn check(&self) -> Result<(), ObserveError> {
        self.incident.check()?;
        bounded_text("title", &self.title, super::MAX_TITLE_BYTES)?;
        if self.cis.len() > MAX_CIS_PER_INCIDENT {
            return Err(ObserveError::TooMany { field: "cis", count: self.cis.len(), bound: MAX_CIS_PER_INCIDENT });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_is_the_usual_matrix() {
        assert_eq!(priority(Impact::High, Urgency::High), 1);
        assert_eq!(priority(Impact::High, Urgency::Low), 3);
        assert_eq!(priority(Impact::Medium, Urgency::Medium), 3);
        assert_eq!(priority(Impact::Low, Urgency::Low), 5);
        assert_eq!(priority(Impact::Low, Urgency::High), 3);
    }

    #[test]
    fn environment_names_of_tools() {
        for (name, env) in [
            ("production", Some(Environment::Production)),
            ("prod-eu-west-1", Some(Environment::Production)),
            ("Staging", Some(Environment::Staging)),
            ("qa", Some(Environment::Test)),
            ("dev", Some(Environment::Development)),
            ("github-pages", None),
            ("", None),
        ] {
            assert_eq!(environment_named(name), env, "{name}");
        }
    }

    #[test]
    fn one_tool_deployment_is_one_record_and_deliveries_differ() {
        let tool = |id: &str| ToolRef { provider: Provider::Github, source: "octo/app".into(), id: id.into() };
        assert_eq!(tool("42").deployment_id(), tool("42").deployment_id());
        assert_ne!(tool("42").deployment_id(), tool("43").deployment_id());
        assert_ne!(tool("42").delivery_stream(), tool("43").delivery_stream());
        let other = ToolRef { provider: Provider::Cdevents, ..tool("42") };
        assert_ne!(other.deployment_id(), tool("42").deployment_id());
    }

    #[test]
    fn a_rule_naming_the_subject_wins_over_the_sources_own() {
        let mut mappings = Mappings::default();
        let general = MappingRule {
            provider: Provider::Github,
            source: "Octo/App".into(),
            subject: None,
            ci: CiId(uuid::Uuid::from_u128(1)),
            environment: None,
        };
        let production =
            MappingRule { subject: Some("production".into()), ci: CiId(uuid::Uuid::from_u128(2)), ..general.clone() };
        mappings.set(&general);
        mappings.set(&production);
        assert_eq!(
            mappings.resolve(Provider::Github, "octo/app", Some("Production")).map(|r| r.ci),
            Some(production.ci)
        );
        assert_eq!(mappings.resolve(Provider::Github, "octo/app", Some("staging")).map(|r| r.ci), Some(general.ci));
        assert!(mappings.resolve(Provider::Cdevents, "octo/app", None).is_none());
        mappings.remove(&MappingRemoved { provider: Provider::Github, source: "octo/app".into(), subject: None });
        assert!(mappings.resolve(Provider::Github, "octo/app", Some("staging")).is_none());
    }
}
