//! The deployment gate (RL-4, RL-3, CH-5, CH-6, CM-3): "may this pipeline deploy this artifact
//! to this CI in this environment now?" answered as a pure function of a request and the facts
//! gathered for it ([`evaluate`]). Every answer given is recorded with both ([`super::GateDecided`]),
//! so it can be replayed ([`replay`]) exactly like an approval decision.
//!
//! Allowed only when: the release (if any) is built, accepted for the environment and deployed
//! to the environments before it; the digest (and version) match what it recorded; the change
//! covers the CI and is implementing, or approved and scheduled with now inside its window
//! (the allow then starts its implementation), or a standard change approved (pre-authorised
//! by its template) with now inside its window; no freeze covers it (emergency changes pass,
//! flagged); no conflict with another change is unacknowledged.
//! `pending` means waiting can turn the answer into an allow (an approval, an acceptance, the
//! window's start); `deny` means it cannot without someone changing the request or the records.

use serde::{Deserialize, Serialize};

use super::{ArtifactDigest, Pipeline, ReleaseState};
use crate::change::freeze::FreezeHit;
use crate::change::{ChangeType, ConflictFact, Window};
use crate::control::ChangeState;
use crate::ids::{ChangeId, CiId, ReleaseId};
use crate::model::{Environment, Status, lenient, named_enum};
use crate::time::Timestamp;

/// How long a pending answer asks the caller to wait when nothing says how long, in seconds.
pub const DEFAULT_RETRY_AFTER_SECONDS: u64 = 30;

named_enum!(
    /// The gate's answer.
    GateDecision, "gate decision", lenient {
        /// Deploy now.
        Allow => "allow",
        /// Do not deploy.
        Deny => "deny",
        /// Not yet: ask again (or wait for the decision to change).
        Pending => "pending",
    }
);

/// What the pipeline deploys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its digest.
    pub digest: ArtifactDigest,
}

/// What a pipeline asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateRequest {
    /// The service or CI deployed to.
    pub ci: CiId,
    /// The environment.
    pub environment: Environment,
    /// What is deployed.
    pub artifact: Artifact,
    /// The change that authorises it, as named by the caller or found for it.
    #[serde(default)]
    pub change: Option<ChangeId>,
    /// The release it carries out.
    #[serde(default)]
    pub release: Option<ReleaseId>,
    /// The run asking.
    #[serde(default)]
    pub pipeline: Option<Pipeline>,
}

/// The CI deployed to, as the graph holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiFact {
    /// Its name.
    pub name: String,
    /// Its status.
    pub status: Status,
    /// Its environment.
    pub environment: Option<Environment>,
}

/// The change, as the log holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeFact {
    /// Its number (or id while a draft).
    pub label: String,
    /// Where it is.
    pub state: ChangeState,
    /// Standard, normal or emergency.
    pub change_type: ChangeType,
    /// Its window.
    pub window: Option<Window>,
    /// Who implements it.
    pub implementer: Option<String>,
    /// Whether its scope covers the CI.
    pub covers_ci: bool,
}

/// The release, as the log holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseFact {
    /// Its number.
    pub label: String,
    /// Where it is.
    pub state: ReleaseState,
    /// Its target environments, in order.
    pub environments: Vec<Environment>,
    /// Environments it is accepted for.
    pub accepted: Vec<Environment>,
    /// Environments it is deployed to.
    pub deployed: Vec<Environment>,
    /// The version and digest it records for the CI, if it sets one.
    pub recorded: Option<(String, ArtifactDigest)>,
}

/// Everything an answer is computed from, recorded with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateFacts {
    /// When it was asked.
    pub now: Timestamp,
    /// The log position the facts were read at.
    pub position: u64,
    /// Who asked.
    pub actor: String,
    /// The CI.
    pub ci: CiFact,
    /// The change, if one authorises it.
    pub change: Option<ChangeFact>,
    /// The release, if named.
    pub release: Option<ReleaseFact>,
    /// Freeze windows covering the CI now.
    pub freezes: Vec<FreezeHit>,
    /// Conflicts of the change with other changes not acknowledged.
    pub conflicts: Vec<ConflictFact>,
}

/// One reason for an answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateReason {
    /// A stable code (`CHANGE_NOT_APPROVED`, `DIGEST_MISMATCH`...).
    pub code: String,
    /// What it means here.
    pub message: String,
    /// What it makes the answer at least (`allow` for a flag such as an emergency in a freeze).
    pub decision: GateDecision,
}

/// The gate's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateOutcome {
    /// Allow, deny or pending.
    pub decision: GateDecision,
    /// Why, most severe first.
    pub reasons: Vec<GateReason>,
    /// The change's label.
    pub change: Option<String>,
    /// The release's label.
    pub release: Option<String>,
    /// The change's window.
    pub window: Option<Window>,
    /// For `pending`: when to ask again.
    pub retry_after_seconds: Option<u64>,
    /// Whether the allow starts the change's implementation.
    pub starts_implementation: bool,
}

struct Reasons {
    list: Vec<GateReason>,
    retry_after: Option<u64>,
}

impl Reasons {
    fn add(&mut self, decision: GateDecision, code: &str, message: String) {
        self.list.push(GateReason { code: code.to_owned(), message, decision });
    }

    fn wait(&mut self, code: &str, message: String, seconds: u64) {
        self.add(GateDecision::Pending, code, message);
        self.retry_after = Some(self.retry_after.map_or(seconds, |s| s.min(seconds)).max(1));
    }
}

/// The gate's answer to `request` on `facts`. Pure.
pub fn evaluate(request: &GateRequest, facts: &GateFacts) -> GateOutcome {
    let mut reasons = Reasons { list: Vec::new(), retry_after: None };
    if facts.ci.status == Status::Withdrawn {
        reasons.add(GateDecision::Deny, "CI_WITHDRAWN", format!("{} is withdrawn", facts.ci.name));
    }
    if let Some(release) = &facts.release {
        release_reasons(request, release, &mut reasons);
    }
    let starts = match &facts.change {
        Some(change) => change_reasons(facts, change, &mut reasons),
        None => {
            reasons.add(
                GateDecision::Deny,
                "NO_CHANGE",
                format!(
                    "no change authorises deploying to {} (CM-3): name one, or give the service a pipeline change template",
                    facts.ci.name
                ),
            );
            false
        }
    };
    let emergency = facts.change.as_ref().is_some_and(|c| c.change_type == ChangeType::Emergency);
    for hit in &facts.freezes {
        let (decision, code) =
            if emergency { (GateDecision::Allow, "EMERGENCY_IN_FREEZE") } else { (GateDecision::Deny, "FROZEN") };
        reasons.add(
            decision,
            code,
            format!("freeze {:?} covers {} from {} to {}", hit.name, facts.ci.name, hit.start, hit.end),
        );
    }
    for conflict in &facts.conflicts {
        reasons.add(
            GateDecision::Deny,
            "CONFLICT",
            format!(
                "conflicts with {} ({}); acknowledge it or move a window (CH-5)",
                conflict.other_label, conflict.reason
            ),
        );
    }
    let decision = if reasons.list.iter().any(|r| r.decision == GateDecision::Deny) {
        GateDecision::Deny
    } else if reasons.list.iter().any(|r| r.decision == GateDecision::Pending) {
        GateDecision::Pending
    } else {
        GateDecision::Allow
    };
    let severity = |d: GateDecision| match d {
        GateDecision::Deny => 0,
        GateDecision::Pending => 1,
        GateDecision::Allow => 2,
    };
    reasons.list.sort_by_key(|r| severity(r.decision));
    GateOutcome {
        decision,
        reasons: reasons.list,
        change: facts.change.as_ref().map(|c| c.label.clone()),
        release: facts.release.as_ref().map(|r| r.label.clone()),
        window: facts.change.as_ref().and_then(|c| c.window.clone()),
        retry_after_seconds: (decision == GateDecision::Pending)
            .then(|| reasons.retry_after.unwrap_or(DEFAULT_RETRY_AFTER_SECONDS)),
        starts_implementation: decision == GateDecision::Allow && starts,
    }
}

fn release_reasons(request: &GateRequest, release: &ReleaseFact, reasons: &mut Reasons) {
    let label = &release.label;
    let environment = request.environment;
    match release.state {
        ReleaseState::Rejected | ReleaseState::Deferred | ReleaseState::Closed | ReleaseState::Reviewed => {
            reasons.add(GateDecision::Deny, "RELEASE_NOT_DEPLOYABLE", format!("{label} is {}", release.state));
            return;
        }
        ReleaseState::RolledBack => {
            reasons.add(
                GateDecision::Deny,
                "RELEASE_ROLLED_BACK",
                format!("{label} was rolled back; plan a new release (RL-6)"),
            );
            return;
        }
        _ => {}
    }
    let Some(index) = release.environments.iter().position(|e| *e == environment) else {
        let targets: Vec<&str> = release.environments.iter().map(|e| e.as_str()).collect();
        reasons.add(
            GateDecision::Deny,
            "NOT_A_TARGET",
            format!("{label} does not target {environment}; its environments are {}", targets.join(", ")),
        );
        return;
    };
    match &release.recorded {
        None => reasons.add(GateDecision::Deny, "NOT_IN_RELEASE", format!("{label} sets no version on this CI")),
        Some((version, digest)) => {
            if *digest != request.artifact.digest {
                reasons.add(
                    GateDecision::Deny,
                    "DIGEST_MISMATCH",
                    format!(
                        "the artifact's digest {} is not the {digest} {label} recorded (RL-3)",
                        request.artifact.digest
                    ),
                );
            }
            if *version != request.artifact.version {
                reasons.add(
                    GateDecision::Deny,
                    "VERSION_MISMATCH",
                    format!(
                        "the artifact's version {} is not the {version} {label} recorded",
                        request.artifact.version
                    ),
                );
            }
        }
    }
    if release.state == ReleaseState::Planned {
        reasons.wait("RELEASE_NOT_BUILT", format!("{label} is planned, not yet built"), DEFAULT_RETRY_AFTER_SECONDS);
    } else if !release.accepted.contains(&environment) {
        reasons.wait(
            "RELEASE_NOT_ACCEPTED",
            format!("{label} is not yet accepted for {environment} (RL-4)"),
            DEFAULT_RETRY_AFTER_SECONDS,
        );
    }
    if let Some(earlier) = release.environments[..index].iter().find(|e| !release.deployed.contains(e)) {
        reasons.wait(
            "EARLIER_ENVIRONMENT",
            format!("{label} is not yet deployed to {earlier}, which comes before {environment}"),
            DEFAULT_RETRY_AFTER_SECONDS,
        );
    }
}

/// The change's reasons; whether an allow starts its implementation.
fn change_reasons(facts: &GateFacts, change: &ChangeFact, reasons: &mut Reasons) -> bool {
    let label = &change.label;
    if !change.covers_ci {
        reasons.add(GateDecision::Deny, "NOT_IN_SCOPE", format!("{label}'s scope does not cover {}", facts.ci.name));
    }
    let implementer_ok = change.implementer.as_deref() == Some(facts.actor.as_str());
    let not_implementer = |reasons: &mut Reasons| {
        reasons.add(
            GateDecision::Deny,
            "NOT_IMPLEMENTER",
            format!(
                "{label} is implemented by {}, not {} (CH-6); name the pipeline's principal as its implementer",
                change.implementer.as_deref().unwrap_or("nobody"),
                facts.actor
            ),
        );
    };
    let in_window = |reasons: &mut Reasons| -> bool {
        let Some(window) = &change.window else {
            reasons.add(GateDecision::Deny, "NO_WINDOW", format!("{label} has no window"));
            return false;
        };
        if facts.now < window.start {
            let seconds = u64::try_from((window.start.as_micros() - facts.now.as_micros()) / 1_000_000).unwrap_or(0);
            reasons.wait("OUTSIDE_WINDOW", format!("{label}'s window opens at {}", window.start), seconds + 1);
            false
        } else if facts.now >= window.end {
            reasons.add(
                GateDecision::Deny,
                "WINDOW_PASSED",
                format!("{label}'s window closed at {}; reschedule it", window.end),
            );
            false
        } else {
            true
        }
    };
    match (change.state, change.change_type) {
        (ChangeState::Implementing, _) => false,
        // Scheduled, or approved and pre-authorised (standard): inside the window, it starts.
        (ChangeState::Scheduled, _) | (ChangeState::Approved, ChangeType::Standard) => {
            if !in_window(reasons) {
                false
            } else if implementer_ok {
                true
            } else {
                not_implementer(reasons);
                false
            }
        }
        (ChangeState::Approved, ChangeType::Emergency) => {
            if !implementer_ok {
                not_implementer(reasons);
            }
            implementer_ok
        }
        (ChangeState::Approved, _) => {
            reasons.wait(
                "NOT_SCHEDULED",
                format!("{label} is approved but not scheduled into a window"),
                DEFAULT_RETRY_AFTER_SECONDS,
            );
            false
        }
        (ChangeState::Draft | ChangeState::Submitted | ChangeState::Assessed, _) => {
            reasons.wait(
                "CHANGE_NOT_APPROVED",
                format!("{label} is {}; it waits for approval (CH-4)", change.state),
                DEFAULT_RETRY_AFTER_SECONDS,
            );
            false
        }
        (other, _) => {
            reasons.add(
                GateDecision::Deny,
                "CHANGE_NOT_OPEN",
                format!("{label} is {other}; it authorises no deployment"),
            );
            false
        }
    }
}

/// Replays a recorded decision: the answer the gate gives now to the recorded request and
/// facts, which must equal the recorded answer.
pub fn replay(recorded: &super::GateDecided) -> (GateOutcome, bool) {
    let again = evaluate(&recorded.request, &recorded.facts);
    let same = again == recorded.outcome;
    (again, same)
}
