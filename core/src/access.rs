//! Principals, roles, tokens and the permission matrix (CM-4: configuration data is protected
//! from unauthorised access and change; IS-1: access is controlled and recorded).
//!
//! A principal is a person or a system (a pipeline) and holds roles. Tokens belong to a
//! principal; only a blake3 hash of each token is ever recorded. Segregation-of-duties rules
//! compare principals, never tokens.
//!
//! All access events live in one stream, [`ACCESS_STREAM`], so that every decision sees the
//! whole access state at one version (names are unique, the last admin cannot be removed, a
//! token id is found without a lookup table) and the append is conditional on that version.
//! The state is a pure fold ([`AccessState::apply`]) and the decider ([`decide`]) does no I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::chain::Hash;
use crate::event::{EventRecord, Metadata, NewEvent, StreamId};
use crate::time::Timestamp;

/// The stream holding every principal and token event.
pub const ACCESS_STREAM: &str = "access";
/// Longest principal name, in bytes.
pub const MAX_PRINCIPAL_NAME_BYTES: usize = 64;
/// Longest display name or token label, in bytes.
pub const MAX_LABEL_BYTES: usize = 128;
/// Most live (unrevoked, unexpired) tokens one principal may hold.
pub const MAX_ACTIVE_TOKENS_PER_PRINCIPAL: usize = 100;
/// Most principals.
pub const MAX_PRINCIPALS: usize = 10_000;

/// The access stream's id.
pub fn access_stream() -> StreamId {
    StreamId::new(ACCESS_STREAM).expect("the access stream id is valid")
}

/// A role a principal may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// May read the configuration, changes and reports.
    Viewer,
    /// May read everything, including the log, and verify the chain.
    Auditor,
    /// May edit the configuration (under a change) and raise changes.
    Editor,
    /// May manage, assess, schedule, review and close changes.
    ChangeManager,
    /// May approve or reject normal changes (CH-4).
    Approver,
    /// May approve or reject emergency changes (CH-8).
    EmergencyApprover,
    /// May implement changes and report deployments.
    Deployer,
    /// May do everything but approve: principals, tokens, schema, policies.
    Admin,
}

impl Role {
    /// Every value, in declaration order.
    pub const ALL: [Role; 8] = [
        Role::Viewer,
        Role::Auditor,
        Role::Editor,
        Role::ChangeManager,
        Role::Approver,
        Role::EmergencyApprover,
        Role::Deployer,
        Role::Admin,
    ];

    /// The value's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Auditor => "auditor",
            Role::Editor => "editor",
            Role::ChangeManager => "change-manager",
            Role::Approver => "approver",
            Role::EmergencyApprover => "emergency-approver",
            Role::Deployer => "deployer",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = AccessError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s || role.as_str().replace('-', "_") == s)
            .ok_or_else(|| AccessError::UnknownRole(s.to_owned()))
    }
}

/// What kind of actor a principal is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PrincipalKind {
    /// A person.
    Person,
    /// A system: a pipeline or another tool.
    System,
}

impl FromStr for PrincipalKind {
    type Err = AccessError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "person" => Ok(PrincipalKind::Person),
            "system" => Ok(PrincipalKind::System),
            other => Err(AccessError::UnknownKind(other.to_owned())),
        }
    }
}

impl fmt::Display for PrincipalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PrincipalKind::Person => "person",
            PrincipalKind::System => "system",
        })
    }
}

/// Everything the API lets a caller do, each checked against the matrix below.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Read the event log (`events`, `head`).
    ReadLog,
    /// Subscribe to new events.
    SubscribeLog,
    /// Recompute the hash chain, read and check digests.
    VerifyLog,
    /// Scrape `/metrics`.
    ReadMetrics,
    /// Read one's own principal and roles (`me`).
    ReadOwnIdentity,
    /// List principals, their roles and token metadata.
    ReadPrincipals,
    /// Create principals, grant and revoke roles.
    ManagePrincipals,
    /// Issue and revoke tokens.
    ManageTokens,
    /// Read configuration items, relationships, impact and history (CM-9).
    ReadConfiguration,
    /// Register, update, transition and withdraw CIs; relate and unrelate them.
    EditConfiguration,
    /// Create and delete configuration baselines.
    ManageBaselines,
    /// Declare custom classes and attributes, and which classes are uncontrolled.
    ManageSchema,
    /// Raise, amend, submit and cancel one's own changes; link records to changes.
    RequestChange,
    /// Comment on a change.
    CommentChange,
    /// Submit, amend and cancel anyone's change.
    ManageChanges,
    /// Assess a submitted change.
    AssessChange,
    /// Approve or reject a normal change (CH-4).
    ApproveChange,
    /// Approve or reject an emergency change (CH-8).
    ApproveEmergencyChange,
    /// Schedule an approved change into its window.
    ScheduleChange,
    /// Start, complete, fail and back out a change (as its implementer).
    ImplementChange,
    /// Verify and sign off an implemented change (CH-6).
    VerifyChange,
    /// Record the post-implementation review (CH-7).
    ReviewChange,
    /// Close a change.
    CloseChange,
    /// Create and retire standard-change templates.
    ManageChangeTemplates,
    /// Load a new approval policy (CH-4).
    ManagePolicy,
    /// Plan, build, reject, defer, review and close releases (RL-1, RL-2, RL-6, RL-7).
    ManageReleases,
    /// Ask the deployment gate and report deployments (RL-6).
    Deploy,
    /// Ask for personal data to be erased from stored events (IS-1).
    RequestRedaction,
    /// Approve (and so carry out) or reject a redaction someone else asked for (IS-1).
    ApproveRedaction,
}

impl Operation {
    /// Every value, in declaration order.
    pub const ALL: [Operation; 29] = [
        Operation::ReadLog,
        Operation::SubscribeLog,
        Operation::VerifyLog,
        Operation::ReadMetrics,
        Operation::ReadOwnIdentity,
        Operation::ReadPrincipals,
        Operation::ManagePrincipals,
        Operation::ManageTokens,
        Operation::ReadConfiguration,
        Operation::EditConfiguration,
        Operation::ManageBaselines,
        Operation::ManageSchema,
        Operation::RequestChange,
        Operation::CommentChange,
        Operation::ManageChanges,
        Operation::AssessChange,
        Operation::ApproveChange,
        Operation::ApproveEmergencyChange,
        Operation::ScheduleChange,
        Operation::ImplementChange,
        Operation::VerifyChange,
        Operation::ReviewChange,
        Operation::CloseChange,
        Operation::ManageChangeTemplates,
        Operation::ManagePolicy,
        Operation::ManageReleases,
        Operation::Deploy,
        Operation::RequestRedaction,
        Operation::ApproveRedaction,
    ];
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        f.write_str(&text)
    }
}

const EVERY_ROLE: &[Role] = &Role::ALL;

/// The permission matrix: for each operation, the roles that may perform it. The one place
/// where authorisation is decided; the API asks [`permits`] and nothing else.
pub const PERMISSIONS: &[(Operation, &[Role])] = &[
    (Operation::ReadLog, EVERY_ROLE),
    (Operation::SubscribeLog, EVERY_ROLE),
    (Operation::ReadMetrics, EVERY_ROLE),
    (Operation::ReadOwnIdentity, EVERY_ROLE),
    (Operation::VerifyLog, &[Role::Auditor, Role::Admin]),
    (Operation::ReadPrincipals, &[Role::Auditor, Role::Admin]),
    (Operation::ManagePrincipals, &[Role::Admin]),
    (Operation::ManageTokens, &[Role::Admin]),
    (Operation::ReadConfiguration, EVERY_ROLE),
    (Operation::EditConfiguration, &[Role::Editor, Role::ChangeManager, Role::Admin]),
    (Operation::ManageBaselines, &[Role::Auditor, Role::Editor, Role::ChangeManager, Role::Admin]),
    (Operation::ManageSchema, &[Role::Admin]),
    (
        Operation::RequestChange,
        &[Role::Editor, Role::ChangeManager, Role::Approver, Role::EmergencyApprover, Role::Deployer, Role::Admin],
    ),
    (
        Operation::CommentChange,
        &[
            Role::Auditor,
            Role::Editor,
            Role::ChangeManager,
            Role::Approver,
            Role::EmergencyApprover,
            Role::Deployer,
            Role::Admin,
        ],
    ),
    (Operation::ManageChanges, &[Role::ChangeManager, Role::Admin]),
    (Operation::AssessChange, &[Role::ChangeManager, Role::Admin]),
    // Approval is a role of its own: an admin approves only if also granted approver.
    (Operation::ApproveChange, &[Role::Approver]),
    (Operation::ApproveEmergencyChange, &[Role::EmergencyApprover]),
    (Operation::ScheduleChange, &[Role::ChangeManager, Role::Admin]),
    (Operation::ImplementChange, &[Role::Editor, Role::ChangeManager, Role::Deployer, Role::Admin]),
    (Operation::VerifyChange, &[Role::Editor, Role::ChangeManager, Role::Approver, Role::Admin]),
    (Operation::ReviewChange, &[Role::ChangeManager, Role::Admin]),
    (Operation::CloseChange, &[Role::ChangeManager, Role::Admin]),
    (Operation::ManageChangeTemplates, &[Role::ChangeManager, Role::Admin]),
    (Operation::ManagePolicy, &[Role::Admin]),
    (Operation::ManageReleases, &[Role::ChangeManager, Role::Admin]),
    (Operation::Deploy, &[Role::Deployer, Role::Admin]),
    (Operation::RequestRedaction, &[Role::Admin]),
    // The asker never approves their own (the decider refuses): a second admin or an auditor.
    (Operation::ApproveRedaction, &[Role::Auditor, Role::Admin]),
];

/// The roles that may perform `operation`, for messages (`change-manager or admin`).
pub fn roles_for(operation: Operation) -> String {
    PERMISSIONS
        .iter()
        .find(|(op, _)| *op == operation)
        .map(|(_, roles)| roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(" or "))
        .unwrap_or_default()
}

/// Whether any of `roles` may perform `operation`.
pub fn permits<'a>(roles: impl IntoIterator<Item = &'a Role>, operation: Operation) -> bool {
    let Some((_, allowed)) = PERMISSIONS.iter().find(|(op, _)| *op == operation) else {
        return false;
    };
    roles.into_iter().any(|role| allowed.contains(role))
}

/// A request to change access.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessCommand {
    /// Create a principal with roles.
    CreatePrincipal {
        /// The name.
        name: String,
        /// What kind.
        kind: PrincipalKind,
        /// A name for people.
        display_name: Option<String>,
        /// Its roles.
        roles: BTreeSet<Role>,
    },
    /// Give a principal a role.
    GrantRole {
        /// The name.
        name: String,
        /// The role.
        role: Role,
    },
    /// Take a role from a principal (never the last admin's admin role).
    RevokeRole {
        /// The name.
        name: String,
        /// The role.
        role: Role,
    },
    /// The caller generates the secret and passes only its hash: the decider stays pure and
    /// the secret never reaches the log.
    IssueToken {
        /// The principal.
        principal: String,
        /// The token.
        token_id: Uuid,
        /// The blake3 hash of the token (never the token).
        token_hash: Hash,
        /// A label to recognise it by.
        label: Option<String>,
        /// When it stops working, if ever.
        expires_at: Option<Timestamp>,
    },
    /// Revoke a token: it stops working at once.
    RevokeToken {
        /// The token.
        token_id: Uuid,
        /// Why.
        reason: Option<String>,
    },
}

/// What happened to access. Stored as the event's data; the type names are in
/// [`AccessEvent::event_type`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AccessEvent {
    /// The [`PrincipalCreated`] event.
    PrincipalCreated(PrincipalCreated),
    /// The [`RoleChanged`] event.
    RoleGranted(RoleChanged),
    /// The [`RoleChanged`] event.
    RoleRevoked(RoleChanged),
    /// The [`TokenIssued`] event.
    TokenIssued(TokenIssued),
    /// The [`TokenRevoked`] event.
    TokenRevoked(TokenRevoked),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
/// A principal was created.
pub struct PrincipalCreated {
    /// The name.
    pub name: String,
    /// What kind.
    pub kind: PrincipalKind,
    /// A name for people.
    pub display_name: Option<String>,
    /// Its roles.
    pub roles: BTreeSet<Role>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
/// A role was granted or revoked.
pub struct RoleChanged {
    /// The name.
    pub name: String,
    /// The role.
    pub role: Role,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
/// A token was issued (its hash only).
pub struct TokenIssued {
    /// The principal.
    pub principal: String,
    /// The token.
    pub token_id: Uuid,
    /// blake3 of the token text, hex.
    pub token_hash: Hash,
    /// A label to recognise it by.
    pub label: Option<String>,
    /// When it stops working, if ever.
    pub expires_at: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
/// A token was revoked.
pub struct TokenRevoked {
    /// The principal.
    pub principal: String,
    /// The token.
    pub token_id: Uuid,
    /// Why.
    pub reason: Option<String>,
}

impl AccessEvent {
    /// The type of the event `principal.created`.
    pub const PRINCIPAL_CREATED: &'static str = "principal.created";
    /// The type of the event `principal.role_granted`.
    pub const ROLE_GRANTED: &'static str = "principal.role_granted";
    /// The type of the event `principal.role_revoked`.
    pub const ROLE_REVOKED: &'static str = "principal.role_revoked";
    /// The type of the event `token.issued`.
    pub const TOKEN_ISSUED: &'static str = "token.issued";
    /// The type of the event `token.revoked`.
    pub const TOKEN_REVOKED: &'static str = "token.revoked";

    /// The event's type.
    pub fn event_type(&self) -> &'static str {
        match self {
            AccessEvent::PrincipalCreated(_) => Self::PRINCIPAL_CREATED,
            AccessEvent::RoleGranted(_) => Self::ROLE_GRANTED,
            AccessEvent::RoleRevoked(_) => Self::ROLE_REVOKED,
            AccessEvent::TokenIssued(_) => Self::TOKEN_ISSUED,
            AccessEvent::TokenRevoked(_) => Self::TOKEN_REVOKED,
        }
    }

    /// Reads an access event back from a stored record.
    pub fn from_record(record: &EventRecord) -> Result<AccessEvent, AccessError> {
        let bad = |e: serde_json::Error| AccessError::Undecodable { position: record.position, detail: e.to_string() };
        Ok(match record.event_type.as_str() {
            Self::PRINCIPAL_CREATED => AccessEvent::PrincipalCreated(record.data_as().map_err(bad)?),
            Self::ROLE_GRANTED => AccessEvent::RoleGranted(record.data_as().map_err(bad)?),
            Self::ROLE_REVOKED => AccessEvent::RoleRevoked(record.data_as().map_err(bad)?),
            Self::TOKEN_ISSUED => AccessEvent::TokenIssued(record.data_as().map_err(bad)?),
            Self::TOKEN_REVOKED => AccessEvent::TokenRevoked(record.data_as().map_err(bad)?),
            other => {
                return Err(AccessError::Undecodable {
                    position: record.position,
                    detail: format!("unknown access event type {other}"),
                });
            }
        })
    }

    /// The event as it is appended, carrying `metadata`.
    pub fn to_new_event(&self, metadata: Metadata) -> NewEvent {
        let data = match self {
            AccessEvent::PrincipalCreated(e) => serde_json::to_vec(e),
            AccessEvent::RoleGranted(e) | AccessEvent::RoleRevoked(e) => serde_json::to_vec(e),
            AccessEvent::TokenIssued(e) => serde_json::to_vec(e),
            AccessEvent::TokenRevoked(e) => serde_json::to_vec(e),
        };
        // Serialising these plain structs cannot fail.
        NewEvent::raw(self.event_type(), data.unwrap_or_default(), metadata)
    }
}

/// Why an access command was refused (or a stored access event could not be read).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message says what its fields are")]
pub enum AccessError {
    #[error(
        "principal name {0:?} is not valid: 1 to {MAX_PRINCIPAL_NAME_BYTES} characters, lowercase letters, digits and . _ - @, starting with a letter or digit"
    )]
    /// The [`String`] event.
    InvalidName(String),
    #[error(
        "unknown role {0:?}; roles are viewer, auditor, editor, change-manager, approver, emergency-approver, deployer, admin"
    )]
    /// The [`String`] event.
    UnknownRole(String),
    #[error("unknown principal kind {0:?}; expected person or system")]
    /// Unknown principal kind …; expected person or system.
    UnknownKind(String),
    #[error("a principal named {0:?} already exists")]
    /// A principal named … already exists.
    PrincipalExists(String),
    #[error("no principal named {0:?}")]
    /// No principal named ….
    UnknownPrincipal(String),
    #[error("principal {name:?} already has role {role}")]
    /// Principal … already has role ….
    RoleAlreadyGranted { name: String, role: Role },
    #[error("principal {name:?} does not have role {role}")]
    /// Principal … does not have role ….
    RoleNotGranted { name: String, role: Role },
    #[error("refused: {0:?} is the last principal with the admin role; grant admin to another principal first")]
    /// Refused: … is the last principal with the admin role; grant admin to another principal first.
    LastAdmin(String),
    #[error("no token with id {0}")]
    /// No token with id ….
    UnknownToken(Uuid),
    #[error("token {0} is already revoked")]
    /// Token … is already revoked.
    TokenAlreadyRevoked(Uuid),
    #[error("a token with id {0} already exists")]
    /// A token with id … already exists.
    TokenExists(Uuid),
    #[error(
        "principal {name:?} already holds {MAX_ACTIVE_TOKENS_PER_PRINCIPAL} live tokens (max_active_tokens_per_principal); revoke one first"
    )]
    TooManyTokens { name: String },
    #[error("there are already {MAX_PRINCIPALS} principals (max_principals)")]
    /// There are already … principals (max_principals).
    TooManyPrincipals,
    #[error("{field} is {bytes} bytes long; the bound is {MAX_LABEL_BYTES} (max_label_bytes)")]
    /// … is … bytes long; the bound is … (max_label_bytes).
    LabelTooLong { field: &'static str, bytes: usize },
    #[error("the token's expiry {0} is not in the future")]
    /// The token's expiry … is not in the future.
    ExpiryNotInFuture(Timestamp),
    #[error("access event at position {position} cannot be read: {detail}")]
    /// Access event at position … cannot be read: ….
    Undecodable { position: u64, detail: String },
}

/// Checks a principal name.
pub fn validate_principal_name(name: &str) -> Result<(), AccessError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_PRINCIPAL_NAME_BYTES
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | '@'));
    if ok { Ok(()) } else { Err(AccessError::InvalidName(name.to_owned())) }
}

fn check_label(field: &'static str, text: Option<&str>) -> Result<(), AccessError> {
    match text {
        Some(text) if text.len() > MAX_LABEL_BYTES => Err(AccessError::LabelTooLong { field, bytes: text.len() }),
        _ => Ok(()),
    }
}

/// A token as the access state knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    /// The token.
    pub token_id: Uuid,
    /// The principal.
    pub principal: String,
    /// The blake3 hash of the token (never the token).
    pub token_hash: Hash,
    /// A label to recognise it by.
    pub label: Option<String>,
    /// When it was issued.
    pub issued_at: Timestamp,
    /// When it stops working, if ever.
    pub expires_at: Option<Timestamp>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
}

impl TokenInfo {
    /// Whether it still works at `now`.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| at > now)
    }
}

/// A principal as the access state knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PrincipalInfo {
    /// The name.
    pub name: String,
    /// What kind.
    pub kind: PrincipalKind,
    /// A name for people.
    pub display_name: Option<String>,
    /// Its roles.
    pub roles: BTreeSet<Role>,
    /// When it was created.
    pub created_at: Timestamp,
    /// Token ids, in issue order.
    pub tokens: Vec<Uuid>,
}

/// Every principal and token: the fold of the access stream.
#[derive(Clone, Debug, Default)]
pub struct AccessState {
    /// The stream version this state reflects (`None`: no access event yet).
    pub version: Option<u64>,
    /// The log position of the last event applied.
    pub position: u64,
    /// Principals that qualify by name.
    pub principals: BTreeMap<String, PrincipalInfo>,
    /// Every token, by id.
    pub tokens: BTreeMap<Uuid, TokenInfo>,
    by_hash: HashMap<Hash, Uuid>,
}

impl AccessState {
    /// The roles `principal` holds now (none for an unknown name).
    pub fn roles_of(&self, principal: &str) -> BTreeSet<Role> {
        self.principals.get(principal).map(|p| p.roles.clone()).unwrap_or_default()
    }

    /// Folds one stored access event in. Events must come in stream order.
    pub fn apply(&mut self, record: &EventRecord) -> Result<(), AccessError> {
        let event = AccessEvent::from_record(record)?;
        self.apply_event(&event, record.recorded_at);
        debug_assert!(self.version.is_none_or(|v| v < record.stream_version), "a version only grows");
        self.version = Some(record.stream_version);
        self.position = record.position;
        Ok(())
    }

    fn apply_event(&mut self, event: &AccessEvent, at: Timestamp) {
        match event {
            AccessEvent::PrincipalCreated(e) => {
                self.principals.insert(
                    e.name.clone(),
                    PrincipalInfo {
                        name: e.name.clone(),
                        kind: e.kind,
                        display_name: e.display_name.clone(),
                        roles: e.roles.clone(),
                        created_at: at,
                        tokens: Vec::new(),
                    },
                );
            }
            AccessEvent::RoleGranted(e) => {
                if let Some(p) = self.principals.get_mut(&e.name) {
                    p.roles.insert(e.role);
                }
            }
            AccessEvent::RoleRevoked(e) => {
                if let Some(p) = self.principals.get_mut(&e.name) {
                    p.roles.remove(&e.role);
                }
            }
            AccessEvent::TokenIssued(e) => {
                if let Some(p) = self.principals.get_mut(&e.principal) {
                    p.tokens.push(e.token_id);
                }
                self.by_hash.insert(e.token_hash, e.token_id);
                self.tokens.insert(
                    e.token_id,
                    TokenInfo {
                        token_id: e.token_id,
                        principal: e.principal.clone(),
                        token_hash: e.token_hash,
                        label: e.label.clone(),
                        issued_at: at,
                        expires_at: e.expires_at,
                        revoked_at: None,
                    },
                );
            }
            AccessEvent::TokenRevoked(e) => {
                if let Some(token) = self.tokens.get_mut(&e.token_id) {
                    token.revoked_at = Some(at);
                }
            }
        }
    }

    /// The token whose text hashes to `token_hash`, whatever its state.
    pub fn token_by_hash(&self, token_hash: &Hash) -> Option<&TokenInfo> {
        self.by_hash.get(token_hash).and_then(|id| self.tokens.get(id))
    }

    fn admins(&self) -> impl Iterator<Item = &PrincipalInfo> {
        self.principals.values().filter(|p| p.roles.contains(&Role::Admin))
    }
}

fn principal<'a>(state: &'a AccessState, name: &str) -> Result<&'a PrincipalInfo, AccessError> {
    state.principals.get(name).ok_or_else(|| AccessError::UnknownPrincipal(name.to_owned()))
}

/// Decides an access command against the whole access state. Pure.
pub fn decide(state: &AccessState, command: &AccessCommand, now: Timestamp) -> Result<Vec<AccessEvent>, AccessError> {
    match command {
        AccessCommand::CreatePrincipal { name, kind, display_name, roles } => {
            validate_principal_name(name)?;
            check_label("display_name", display_name.as_deref())?;
            if state.principals.contains_key(name) {
                return Err(AccessError::PrincipalExists(name.clone()));
            }
            if state.principals.len() >= MAX_PRINCIPALS {
                return Err(AccessError::TooManyPrincipals);
            }
            Ok(vec![AccessEvent::PrincipalCreated(PrincipalCreated {
                name: name.clone(),
                kind: *kind,
                display_name: display_name.clone(),
                roles: roles.clone(),
            })])
        }
        AccessCommand::GrantRole { name, role } => {
            if principal(state, name)?.roles.contains(role) {
                return Err(AccessError::RoleAlreadyGranted { name: name.clone(), role: *role });
            }
            Ok(vec![AccessEvent::RoleGranted(RoleChanged { name: name.clone(), role: *role })])
        }
        AccessCommand::RevokeRole { name, role } => {
            if !principal(state, name)?.roles.contains(role) {
                return Err(AccessError::RoleNotGranted { name: name.clone(), role: *role });
            }
            if *role == Role::Admin && state.admins().count() == 1 {
                return Err(AccessError::LastAdmin(name.clone()));
            }
            Ok(vec![AccessEvent::RoleRevoked(RoleChanged { name: name.clone(), role: *role })])
        }
        AccessCommand::IssueToken { principal: name, token_id, token_hash, label, expires_at } => {
            let holder = principal(state, name)?;
            check_label("label", label.as_deref())?;
            if state.tokens.contains_key(token_id) || state.by_hash.contains_key(token_hash) {
                return Err(AccessError::TokenExists(*token_id));
            }
            if let Some(at) = expires_at
                && *at <= now
            {
                return Err(AccessError::ExpiryNotInFuture(*at));
            }
            let live = holder.tokens.iter().filter_map(|id| state.tokens.get(id)).filter(|t| t.is_live(now)).count();
            if live >= MAX_ACTIVE_TOKENS_PER_PRINCIPAL {
                return Err(AccessError::TooManyTokens { name: name.clone() });
            }
            Ok(vec![AccessEvent::TokenIssued(TokenIssued {
                principal: name.clone(),
                token_id: *token_id,
                token_hash: *token_hash,
                label: label.clone(),
                expires_at: *expires_at,
            })])
        }
        AccessCommand::RevokeToken { token_id, reason } => {
            check_label("reason", reason.as_deref())?;
            let token = state.tokens.get(token_id).ok_or(AccessError::UnknownToken(*token_id))?;
            if token.revoked_at.is_some() {
                return Err(AccessError::TokenAlreadyRevoked(*token_id));
            }
            Ok(vec![AccessEvent::TokenRevoked(TokenRevoked {
                principal: token.principal.clone(),
                token_id: *token_id,
                reason: reason.clone(),
            })])
        }
    }
}

/// A new bearer token: `cmdb_` and 64 hex digits of randomness the caller supplies (32 bytes
/// from the OS), and the hash that is stored in its place.
pub fn token_text(secret: &[u8; 32]) -> String {
    format!("cmdb_{}", hex::encode(secret))
}

/// The stored form of a token.
pub fn token_hash(token: &str) -> Hash {
    Hash(*blake3::hash(token.as_bytes()).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decider::testing::{SCENARIO_START as NOW, Scenario};

    /// The log after these commands were accepted, in order (the one harness).
    struct World(Scenario);

    fn given(commands: &[AccessCommand]) -> World {
        let world = World(Scenario::new());
        for command in commands {
            world.0.given(&AccessDecider, "root", command.clone());
        }
        world
    }

    impl World {
        /// When `command` comes: the events it would append, or why not.
        fn when(&self, command: &AccessCommand) -> Result<Vec<AccessEvent>, AccessError> {
            self.0.when(&AccessDecider, "root", command).map(|d| d.events_of(&AccessKey).to_vec())
        }

        fn token_by_hash(&self, token_hash: &Hash) -> Option<TokenInfo> {
            self.0.fold(&AccessKey).token_by_hash(token_hash).cloned()
        }
    }

    fn create(name: &str, roles: &[Role]) -> AccessCommand {
        AccessCommand::CreatePrincipal {
            name: name.into(),
            kind: PrincipalKind::Person,
            display_name: None,
            roles: roles.iter().copied().collect(),
        }
    }

    fn issue(name: &str, n: u128) -> AccessCommand {
        AccessCommand::IssueToken {
            principal: name.into(),
            token_id: Uuid::from_u128(n),
            token_hash: token_hash(&format!("token-{n}")),
            label: None,
            expires_at: None,
        }
    }

    #[test]
    fn create_principal_then_names_are_unique() {
        let state = given(&[create("alice", &[Role::Admin])]);
        assert_eq!(state.when(&create("alice", &[])), Err(AccessError::PrincipalExists("alice".into())));
        let events = state.when(&create("bob", &[Role::Viewer])).expect("accepted");
        assert!(
            matches!(&events[..], [AccessEvent::PrincipalCreated(e)] if e.name == "bob" && e.roles.contains(&Role::Viewer))
        );
    }

    #[test]
    fn principal_names_are_validated() {
        let state = given(&[]);
        for bad in ["", "Alice", "a b", "-x", &"a".repeat(MAX_PRINCIPAL_NAME_BYTES + 1)] {
            assert!(matches!(state.when(&create(bad, &[])), Err(AccessError::InvalidName(_))), "{bad:?}");
        }
        for good in ["a", "deploy-bot", "jane.doe@example.org", &"a".repeat(MAX_PRINCIPAL_NAME_BYTES)] {
            assert!(state.when(&create(good, &[])).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn grant_and_revoke_roles() {
        let state = given(&[create("root", &[Role::Admin]), create("bob", &[Role::Viewer])]);
        let grant = AccessCommand::GrantRole { name: "bob".into(), role: Role::Approver };
        assert!(state.when(&grant).is_ok());
        let again = AccessCommand::GrantRole { name: "bob".into(), role: Role::Viewer };
        assert_eq!(state.when(&again), Err(AccessError::RoleAlreadyGranted { name: "bob".into(), role: Role::Viewer }));
        let missing = AccessCommand::RevokeRole { name: "bob".into(), role: Role::Deployer };
        assert_eq!(state.when(&missing), Err(AccessError::RoleNotGranted { name: "bob".into(), role: Role::Deployer }));
        let nobody = AccessCommand::GrantRole { name: "carol".into(), role: Role::Viewer };
        assert_eq!(state.when(&nobody), Err(AccessError::UnknownPrincipal("carol".into())));
    }

    #[test]
    fn the_last_admin_cannot_lose_the_role() {
        let state = given(&[create("root", &[Role::Admin])]);
        let revoke = AccessCommand::RevokeRole { name: "root".into(), role: Role::Admin };
        assert_eq!(state.when(&revoke), Err(AccessError::LastAdmin("root".into())));
        let state = given(&[create("root", &[Role::Admin]), create("second", &[Role::Admin])]);
        assert!(state.when(&revoke).is_ok());
    }

    #[test]
    fn tokens_are_issued_found_by_hash_and_revoked_once() {
        let state = given(&[create("bot", &[Role::Deployer]), issue("bot", 1)]);
        let token = state.token_by_hash(&token_hash("token-1")).expect("found by hash");
        assert_eq!(token.principal, "bot");
        assert!(token.is_live(NOW));
        assert_eq!(state.when(&issue("bot", 1)), Err(AccessError::TokenExists(Uuid::from_u128(1))));
        assert_eq!(state.when(&issue("ghost", 2)), Err(AccessError::UnknownPrincipal("ghost".into())));

        let revoke = AccessCommand::RevokeToken { token_id: Uuid::from_u128(1), reason: Some("leaked".into()) };
        let state = given(&[create("bot", &[Role::Deployer]), issue("bot", 1), revoke.clone()]);
        assert!(!state.token_by_hash(&token_hash("token-1")).expect("still known").is_live(NOW));
        assert_eq!(state.when(&revoke), Err(AccessError::TokenAlreadyRevoked(Uuid::from_u128(1))));
        let unknown = AccessCommand::RevokeToken { token_id: Uuid::from_u128(9), reason: None };
        assert_eq!(state.when(&unknown), Err(AccessError::UnknownToken(Uuid::from_u128(9))));
    }

    #[test]
    fn token_expiry_must_be_in_the_future_and_expired_tokens_are_not_live() {
        let state = given(&[create("bot", &[Role::Viewer])]);
        let past = AccessCommand::IssueToken {
            principal: "bot".into(),
            token_id: Uuid::from_u128(5),
            token_hash: token_hash("t5"),
            label: None,
            expires_at: Some(NOW),
        };
        assert_eq!(state.when(&past), Err(AccessError::ExpiryNotInFuture(NOW)));
        let soon = NOW.saturating_add_micros(1_000_000);
        let ok = AccessCommand::IssueToken {
            principal: "bot".into(),
            token_id: Uuid::from_u128(5),
            token_hash: token_hash("t5"),
            label: None,
            expires_at: Some(soon),
        };
        let state = given(&[create("bot", &[Role::Viewer]), ok]);
        let token = state.token_by_hash(&token_hash("t5")).expect("issued");
        assert!(token.is_live(NOW));
        assert!(!token.is_live(soon));
    }

    #[test]
    fn live_tokens_per_principal_are_bounded() {
        let mut commands = vec![create("bot", &[Role::Viewer])];
        commands.extend((0..MAX_ACTIVE_TOKENS_PER_PRINCIPAL as u128).map(|n| issue("bot", n + 100)));
        let state = given(&commands);
        assert_eq!(state.when(&issue("bot", 1)), Err(AccessError::TooManyTokens { name: "bot".into() }));
        commands.push(AccessCommand::RevokeToken { token_id: Uuid::from_u128(100), reason: None });
        let state = given(&commands);
        assert!(state.when(&issue("bot", 1)).is_ok(), "a revoked token frees a slot");
    }

    #[test]
    fn labels_are_bounded() {
        let state = given(&[create("bot", &[Role::Viewer])]);
        let long = AccessCommand::IssueToken {
            principal: "bot".into(),
            token_id: Uuid::from_u128(1),
            token_hash: token_hash("x"),
            label: Some("l".repeat(MAX_LABEL_BYTES + 1)),
            expires_at: None,
        };
        assert_eq!(state.when(&long), Err(AccessError::LabelTooLong { field: "label", bytes: MAX_LABEL_BYTES + 1 }));
    }

    #[test]
    fn the_matrix_names_every_operation_once_and_admin_may_do_everything_but_approve() {
        for operation in Operation::ALL {
            assert_eq!(PERMISSIONS.iter().filter(|(op, _)| *op == operation).count(), 1, "{operation}");
            // CH-4: approving is an authority of its own; an admin must be granted it.
            let approval = matches!(operation, Operation::ApproveChange | Operation::ApproveEmergencyChange);
            assert_eq!(permits(&[Role::Admin], operation), !approval, "admin and {operation}");
        }
        assert!(permits(&[Role::Viewer], Operation::ReadMetrics));
        assert!(!permits(&[Role::Viewer], Operation::VerifyLog));
        assert!(permits(&[Role::Viewer, Role::Auditor], Operation::VerifyLog));
        assert!(!permits(&[], Operation::ReadLog), "no roles, no access");
    }

    #[test]
    fn roles_parse_from_their_names() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert_eq!("change_manager".parse::<Role>(), Ok(Role::ChangeManager));
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn tokens_have_the_documented_shape_and_hash() {
        let token = token_text(&[0xab; 32]);
        assert!(token.starts_with("cmdb_"));
        assert_eq!(token.len(), 5 + 64);
        assert_eq!(token_hash(&token), Hash(*blake3::hash(token.as_bytes()).as_bytes()));
    }
}

/// The access stream, as a decision reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccessKey;

impl crate::decider::StreamKey for AccessKey {
    type State = AccessState;

    fn streams(&self) -> Vec<StreamId> {
        vec![access_stream()]
    }

    fn initial(&self) -> AccessState {
        AccessState::default()
    }

    fn evolve(&self, state: &mut AccessState, record: &EventRecord) -> Result<(), crate::Error> {
        Ok(state.apply(record)?)
    }
}

impl crate::decider::DomainEvent for AccessEvent {
    fn to_new_event(&self, metadata: Metadata) -> NewEvent {
        AccessEvent::to_new_event(self, metadata)
    }
}

/// Decides access commands. All of them read and write the one access stream, so every
/// decision sees the whole access state at one version.
#[derive(Clone, Copy, Debug, Default)]
pub struct AccessDecider;

impl crate::decider::Decider for AccessDecider {
    type Command = AccessCommand;
    type Key = AccessKey;
    type Event = AccessEvent;
    type Error = AccessError;
    const NAME: &'static str = ACCESS_STREAM;

    fn reads(&self, _command: &AccessCommand, _read: &crate::decider::ReadSet<AccessKey>) -> Vec<AccessKey> {
        vec![AccessKey]
    }

    fn decide(
        &self,
        command: &AccessCommand,
        read: &crate::decider::ReadSet<AccessKey>,
        context: &crate::decider::CommandContext,
    ) -> Result<crate::decider::Decision<AccessKey, AccessEvent>, AccessError> {
        let empty = AccessState::default();
        let state = read.get(&AccessKey).unwrap_or(&empty);
        let mut decision = crate::decider::Decision::default();
        for event in decide(state, command, context.now)? {
            decision.write(AccessKey, event);
        }
        Ok(decision)
    }
}

/// The access state as the store holds it now.
pub async fn load_state(store: &dyn crate::store::EventStore) -> Result<AccessState, crate::Error> {
    crate::decider::fold::load(store, &AccessKey).await
}
