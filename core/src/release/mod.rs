//! Releases and deployments (RL-1 to RL-7, CM-3, CM-5): what a release delivers, who accepts
//! it for which environment, the deployments that carry it out, and the deployment gate.
//!
//! - A **release** (`REL-000001`, gapless, stream `release-<id>`) names its type (RL-1), the
//!   changes it delivers, the CI versions it sets (artifact, version, digest: RL-3), its target
//!   environments in order, its release and roll-back plans (RL-2), the baseline it is built
//!   against (RL-5) and its acceptance steps per environment, each signed off by a principal
//!   holding the role the step names (RL-4). Its life cycle is one table ([`table`]).
//! - A **deployment** (stream `deployment-<id>`) carries CI versions into one environment:
//!   requested -> started -> succeeded | failed -> rolled back, or refused. A success edits the
//!   CIs it touched in the same append, under the change that authorised it (CM-3 is checked
//!   by the CI decider itself); a roll-back restores what they were when it started.
//! - The **gate** ([`gate`]) is a pure function of recorded facts: every answer it gives is an
//!   event holding its request and facts, so it can be replayed like an approval decision.
//!
//! - What **deployment tooling** reports ([`observe`]): deliveries, mapping rules, observed
//!   deployments, unauthorised changes and incidents.
//!
//! Architecture invariant: this module uses the CI domain's decider for every CI edit it makes
//! (so schema checks and CM-3 hold exactly as for a person's edit) and reads changes only
//! through the CM-3 contract ([`crate::control`]); it writes a change's streams only through
//! the change domain's own decider (the retrospective change of an unauthorised deployment).

pub mod decide;
mod events;
pub mod gate;
pub mod observe;
pub mod table;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use crate::ids::{DeploymentId, ReleaseId};
use crate::model::{Environment, ModelError, lenient, named_enum};
pub use decide::{ReleaseCommand, ReleaseDecider, ReleaseKey, ReleaseRead};
pub use events::*;

/// Longest release title, in bytes.
pub const MAX_TITLE_BYTES: usize = 200;
/// Longest plan, note or reason, in bytes.
pub const MAX_TEXT_BYTES: usize = 10_000;
/// Most CI versions one release or deployment sets.
pub const MAX_VERSIONS_PER_RELEASE: usize = 200;
/// Most changes one release delivers.
pub const MAX_CHANGES_PER_RELEASE: usize = 100;
/// Most acceptance steps of one release.
pub const MAX_ACCEPTANCE_STEPS: usize = 50;
/// Most incidents linked to one release.
pub const MAX_INCIDENTS_PER_RELEASE: usize = 1_000;
/// Longest artifact name, version label, step name or external id, in bytes.
pub const MAX_NAME_BYTES: usize = 200;
/// Longest digest algorithm name (`sha256`), in bytes.
pub const MAX_DIGEST_ALGORITHM_BYTES: usize = 32;
/// Fewest and most hex characters of a digest of an algorithm this module does not know.
pub const DIGEST_HEX_BOUNDS: (usize, usize) = (32, 128);
/// Longest pipeline provider, run id or URL, in bytes.
pub const MAX_PIPELINE_FIELD_BYTES: usize = 512;

/// The stream assigning release numbers.
pub const NUMBERS_STREAM: &str = "release-numbers";

/// A release's human id, `REL-000001`: assigned when it is planned, gapless.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReleaseNumber(pub u64);

impl fmt::Display for ReleaseNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "REL-{:06}", self.0)
    }
}

impl FromStr for ReleaseNumber {
    type Err = ReleaseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || ReleaseError::InvalidNumber(s.to_owned());
        let trimmed = s.trim();
        let digits = trimmed.get(..4).filter(|p| p.eq_ignore_ascii_case("REL-")).map(|_| &trimmed[4..]);
        match digits {
            Some(d) if !d.is_empty() && d.len() <= 18 && d.bytes().all(|b| b.is_ascii_digit()) => {
                let number: u64 = d.parse().map_err(|_| invalid())?;
                if number == 0 { Err(invalid()) } else { Ok(ReleaseNumber(number)) }
            }
            _ => Err(invalid()),
        }
    }
}

named_enum!(
    /// A release's type (RL-1): what its policy asks before it may go live.
    ReleaseType, "release type", lenient {
        /// Every target environment needs acceptance steps, and a baseline (RL-4, RL-5).
        Major => "major",
        /// Production (when targeted) needs acceptance steps.
        Minor => "minor",
        /// Delivers an emergency change; no acceptance step is required (CH-8).
        Emergency => "emergency",
    }
);

named_enum!(
    /// Where a release is in its life cycle.
    ReleaseState, "release state", lenient {
        /// Described; not yet built.
        Planned => "planned",
        /// Built: its artifacts and digests are fixed (RL-3).
        Built => "built",
        /// Accepted for at least one environment (RL-4).
        Accepted => "accepted",
        /// Deployed to its last target environment.
        Deployed => "deployed",
        /// Reviewed after release (RL-7).
        Reviewed => "reviewed",
        /// Done.
        Closed => "closed",
        /// Refused, with the reason (RL-6).
        Rejected => "rejected",
        /// Put off, with the reason (RL-6).
        Deferred => "deferred",
        /// A deployment of it was rolled back (RL-6).
        RolledBack => "rolled_back",
    }
);

named_enum!(
    /// A transition of a release's life cycle that a person asks for.
    ReleaseAction, "release action", lenient {
        /// Planned -> built.
        Build => "build",
        /// Sign off one acceptance step (RL-4).
        Accept => "accept",
        /// Refuse the release (RL-6).
        Reject => "reject",
        /// Put it off (RL-6).
        Defer => "defer",
        /// Take a deferred release up again.
        Resume => "resume",
        /// Record the post-release review (RL-7).
        Review => "review",
        /// Close it.
        Close => "close",
        /// Deployed to its last environment (recorded with that deployment's success).
        Deployed => "deployed",
        /// Rolled back (recorded with the deployment's roll-back).
        RollBack => "roll_back",
    }
);

named_enum!(
    /// Where a deployment is.
    DeploymentState, "deployment state", lenient {
        /// Asked for.
        Requested => "requested",
        /// Running: the configuration it changes is recorded as it was.
        Started => "started",
        /// Done: the CIs it touched carry the new versions.
        Succeeded => "succeeded",
        /// Went wrong.
        Failed => "failed",
        /// Undone: the CIs it touched are back as they were when it started.
        RolledBack => "rolled_back",
        /// Refused before it ran (a digest mismatch, RL-3).
        Refused => "refused",
    }
);

named_enum!(
    /// An outcome a deployment tool reports.
    ReportedOutcome, "deployment outcome", lenient {
        /// It started.
        Started => "started",
        /// It succeeded.
        Succeeded => "succeeded",
        /// It failed.
        Failed => "failed",
    }
);

/// An artifact digest, `<algorithm>:<lowercase hex>` (OCI style: `sha256:` and 64 hex digits).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ArtifactDigest(String);

impl ArtifactDigest {
    /// The digest as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// How many hex digits a known algorithm has.
    fn known_length(algorithm: &str) -> Option<usize> {
        match algorithm {
            "sha256" | "blake3" | "sha3-256" => Some(64),
            "sha384" => Some(96),
            "sha512" | "sha3-512" => Some(128),
            "sha1" => Some(40),
            "md5" => Some(32),
            _ => None,
        }
    }
}

impl FromStr for ArtifactDigest {
    type Err = ReleaseError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad =
            |why: &str| ReleaseError::MalformedDigest { digest: text.chars().take(200).collect(), why: why.into() };
        let (algorithm, hex) =
            text.split_once(':').ok_or_else(|| bad("expected <algorithm>:<hex>, as in sha256:..."))?;
        let algorithm_ok = !algorithm.is_empty()
            && algorithm.len() <= MAX_DIGEST_ALGORITHM_BYTES
            && algorithm.starts_with(|c: char| c.is_ascii_lowercase())
            && algorithm.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
        if !algorithm_ok {
            return Err(bad("the algorithm is lowercase letters, digits and + . _ - (sha256, sha512, blake3)"));
        }
        if !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) || hex.is_empty() {
            return Err(bad("the digest is lowercase hexadecimal"));
        }
        match ArtifactDigest::known_length(algorithm) {
            Some(length) if hex.len() != length => {
                return Err(bad(&format!("{algorithm} has {length} hex digits, got {}", hex.len())));
            }
            None if hex.len() < DIGEST_HEX_BOUNDS.0 || hex.len() > DIGEST_HEX_BOUNDS.1 || hex.len() % 2 != 0 => {
                return Err(bad("a digest has an even number of hex digits, 32 to 128"));
            }
            _ => {}
        }
        Ok(ArtifactDigest(text.to_owned()))
    }
}

impl TryFrom<String> for ArtifactDigest {
    type Error = ReleaseError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<ArtifactDigest> for String {
    fn from(digest: ArtifactDigest) -> String {
        digest.0
    }
}

impl fmt::Display for ArtifactDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a release or deployment command was refused, or a release event cannot be read.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message says what its fields are")]
pub enum ReleaseError {
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A CI edit of a deployment refused by the CI domain (CM-3, the schema).
    #[error(transparent)]
    Ci(#[from] crate::ci::CiError),
    /// The retrospective change of an unauthorised deployment refused by the change domain.
    #[error(transparent)]
    Change(#[from] crate::change::ChangeError),
    /// A delivery, mapping or incident refused.
    #[error(transparent)]
    Observe(#[from] observe::ObserveError),
    #[error("{0:?} is not a release number; expected REL- and digits, as in REL-000042")]
    InvalidNumber(String),
    #[error("{digest:?} is not a digest: {why}")]
    MalformedDigest { digest: String, why: String },
    #[error("no release {0}")]
    UnknownRelease(String),
    #[error("release {0} exists already")]
    ReleaseExists(ReleaseId),
    #[error("no deployment {0}")]
    UnknownDeployment(DeploymentId),
    #[error("deployment {0} exists already")]
    DeploymentExists(DeploymentId),
    #[error("{principal} may not {action}; it needs the role {roles}")]
    NotPermitted { principal: String, action: String, roles: String },
    #[error("{action} is not allowed on {release} in state {state}; allowed now: {allowed}")]
    TransitionNotAllowed { release: String, action: ReleaseAction, state: ReleaseState, allowed: String },
    #[error("{field} is required: {why}")]
    Missing { field: &'static str, why: &'static str },
    #[error("{field} is {bytes} bytes; the bound is {bound}")]
    TooLong { field: &'static str, bytes: usize, bound: usize },
    #[error("{field} names {count} items; the bound is {bound}")]
    TooMany { field: &'static str, count: usize, bound: usize },
    #[error("{what} {item} is named twice")]
    Duplicate { what: &'static str, item: String },
    #[error("no configuration item {0}")]
    UnknownCi(crate::ids::CiId),
    #[error("{0} is withdrawn")]
    CiWithdrawn(crate::ids::CiId),
    #[error("no submitted change {0} (a draft authorises nothing until it is submitted)")]
    UnknownChange(crate::ids::ChangeId),
    #[error("{release} does not target {environment}; its environments are {targets}")]
    NotATarget { release: String, environment: Environment, targets: String },
    #[error("a {release_type} release needs {what} (RL-1 release policy)")]
    Policy { release_type: ReleaseType, what: String },
    #[error("{release} has no acceptance step {step:?} for {environment}; its steps there: {steps}")]
    UnknownStep { release: String, environment: Environment, step: String, steps: String },
    #[error("step {step:?} of {release} for {environment} was signed off already by {by}")]
    StepSigned { release: String, environment: Environment, step: String, by: String },
    #[error("step {step:?} must be signed off by a principal holding the role {role}; {principal} does not (RL-4)")]
    WrongRole { step: String, role: crate::access::Role, principal: String },
    #[error("{release} is not accepted for {environment} (RL-4): {why}")]
    NotAccepted { release: String, environment: Environment, why: String },
    #[error("{release} must first be deployed to {earlier}, which comes before {environment} in its order")]
    OutOfOrder { release: String, environment: Environment, earlier: Environment },
    #[error(
        "digest mismatch for {ci}: the deployment carries {deployed}, the release recorded {recorded} (RL-3); the deployment {deployment} is recorded as refused"
    )]
    DigestMismatch { ci: crate::ids::CiId, deployed: String, recorded: String, deployment: DeploymentId },
    #[error("{ci} is not among the CI versions {release} sets")]
    NotInRelease { ci: crate::ids::CiId, release: String },
    #[error("deployment {deployment} is {state}; {action} needs it {needs}")]
    DeploymentState { deployment: DeploymentId, state: DeploymentState, action: &'static str, needs: &'static str },
    #[error("a deployment needs a change to authorise its CI edits (CM-3): {0}")]
    NoAuthority(String),
    #[error("incident {0:?} is linked to this release already")]
    IncidentLinked(String),
    #[error("release event at position {position} cannot be read: {detail}")]
    Undecodable { position: u64, detail: String },
}
