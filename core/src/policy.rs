//! The change-approval policy (CH-4): Rego text, evaluated with `regorus`, that decides which
//! approvals a change needs, whether a standard change is approved outright, and what denies
//! it. Policies are events on the `policy` stream (text, version, blake3 hash); until one is
//! loaded the engine's default ([`DEFAULT_POLICY`], `core/policies/change_approval.rego`) is
//! in force as version 0.
//!
//! Decisions must be replayable: a policy may not read the clock, randomness, the network or
//! the runtime ([`FORBIDDEN_BUILTINS`], refused at load time from the policy's tokens); the
//! engine passes `now` in the input instead. Every decision keeps the policy version and hash,
//! the regorus version, the complete input (canonical JSON) and the output, so
//! [`replay`] can re-run it later and compare.
//!
//! Not here: the facts (the projection computes them), the approvals themselves (the change
//! decider counts them against a decision).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Hash;
use crate::access::{AccessState, Operation, Role, permits};
use crate::event::{EventRecord, Metadata, NewEvent, StreamId};
use crate::time::Timestamp;

pub mod native;

/// The stream policies are loaded on.
pub const POLICY_STREAM: &str = "policy";
/// The rule a policy must define.
pub const DECISION_RULE: &str = "data.cmdb.change.decision";
/// The regorus release decisions are evaluated with (kept equal to Cargo.lock by a test).
pub const REGORUS_VERSION: &str = "0.14.1";
/// The default policy and its Rego tests.
pub const DEFAULT_POLICY: &str = include_str!("../policies/change_approval.rego");
/// The Rego tests of the default policy.
pub const DEFAULT_POLICY_TESTS: &str = include_str!("../policies/change_approval_test.rego");
/// The default policy's name.
pub const DEFAULT_POLICY_NAME: &str = "default";
/// Built-ins whose answer is not a function of the input.
pub const FORBIDDEN_BUILTINS: &[&str] = &[
    "time.now_ns",
    "rand.intn",
    "http.send",
    "opa.runtime",
    "uuid.rfc4122",
    "net.lookup_ip_addr",
    "crypto.x509.parse_and_verify_certificates_with_options",
];
/// Largest policy text, in bytes.
pub const MAX_POLICY_BYTES: usize = 256 * 1024;
/// Longest policy name, in bytes.
pub const MAX_POLICY_NAME_BYTES: usize = 100;
/// Bounds on a decision's output.
pub const MAX_APPROVAL_REQUIREMENTS: usize = 50;
/// Most denial reasons a decision may give.
pub const MAX_DENIALS: usize = 50;
/// Most approvals one requirement may ask for.
pub const MAX_REQUIRED_COUNT: u32 = 10;
/// Longest reason, in bytes.
pub const MAX_REASON_BYTES: usize = 1_000;
/// Most principals one requirement may name.
pub const MAX_PRINCIPALS_PER_REQUIREMENT: usize = 100;

/// The stream holding every policy loaded.
pub fn policy_stream() -> StreamId {
    StreamId::new(POLICY_STREAM).expect("the policy stream id is valid")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message says what its fields are")]
pub enum PolicyError {
    #[error("the policy does not parse: {0}")]
    /// The policy does not parse: ….
    Syntax(String),
    #[error(
        "the policy calls {builtin} (line {line}): decisions must be replayable, so a policy may not read the clock, randomness, the network or the runtime; use input.now / input.now_ns"
    )]
    ForbiddenBuiltin { builtin: String, line: u32 },
    #[error("the policy is {bytes} bytes; at most {bound}")]
    /// The policy is … bytes; at most ….
    TooLarge { bytes: usize, bound: usize },
    #[error("the policy name must be 1 to {MAX_POLICY_NAME_BYTES} bytes of text")]
    /// The policy name must be 1 to … bytes of text.
    BadName,
    #[error("the policy must define {DECISION_RULE} (package cmdb.change, rule decision): {0}")]
    /// The policy must define … (package cmdb.change, rule decision): ….
    NoDecision(String),
    #[error("evaluating the policy failed: {0}")]
    /// Evaluating the policy failed: ….
    Evaluation(String),
    #[error("the policy's decision is not well formed: {0}")]
    /// The policy's decision is not well formed: ….
    BadOutput(String),
    #[error("this text is already in force as policy version {0}")]
    /// This text is already in force as policy version ….
    Unchanged(u32),
    #[error("{principal} may not load policies (needs the admin role)")]
    /// … may not load policies (needs the admin role).
    NotPermitted { principal: String },
    #[error("policy version {0} is not in the log")]
    /// Policy version … is not in the log.
    UnknownVersion(u32),
    #[error("undecodable policy event at position {position}: {detail}")]
    /// Undecodable policy event at position …: ….
    Undecodable { position: u64, detail: String },
}

/// A policy loaded into the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyLoaded {
    /// The version number.
    pub version: u32,
    /// The name.
    pub name: String,
    /// The text.
    pub text: String,
    /// The blake3 hash.
    pub hash: Hash,
    /// Who did it (a principal name).
    pub by: String,
    /// The regorus release that decided.
    pub regorus_version: String,
}

impl PolicyLoaded {
    /// The type of the event `policy.loaded`.
    pub const EVENT_TYPE: &'static str = "policy.loaded";

    /// The event as it is appended, carrying `metadata`.
    pub fn to_new_event(&self, metadata: Metadata) -> NewEvent {
        NewEvent::json(Self::EVENT_TYPE, self, metadata).expect("a policy event serialises")
    }
}

/// A policy as the log holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    /// The version number.
    pub version: u32,
    /// The name.
    pub name: String,
    /// The text.
    pub text: String,
    /// The blake3 hash.
    pub hash: Hash,
    /// Who did it (a principal name).
    pub by: String,
    /// `None` for the built-in default.
    pub loaded_at: Option<Timestamp>,
    /// The log position.
    pub position: Option<u64>,
}

impl PolicyRecord {
    /// The default policy, in force until one is loaded.
    pub fn default_policy() -> PolicyRecord {
        PolicyRecord {
            version: 0,
            name: DEFAULT_POLICY_NAME.into(),
            text: DEFAULT_POLICY.into(),
            hash: text_hash(DEFAULT_POLICY),
            by: "system".into(),
            loaded_at: None,
            position: None,
        }
    }
}

/// The blake3 hash of a policy's text.
pub fn text_hash(text: &str) -> Hash {
    Hash(*blake3::hash(text.as_bytes()).as_bytes())
}

impl Default for PolicyRecord {
    fn default() -> Self {
        PolicyRecord::default_policy()
    }
}

/// Every loaded policy, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyState {
    /// Every version, in order.
    pub versions: Vec<PolicyRecord>,
    /// The version within its stream (the first event is 0).
    pub stream_version: Option<u64>,
}

impl PolicyState {
    /// Folds one stored event.
    pub fn apply(&mut self, record: &EventRecord) -> Result<(), PolicyError> {
        let loaded: PolicyLoaded = record
            .data_as()
            .map_err(|e| PolicyError::Undecodable { position: record.position, detail: e.to_string() })?;
        self.versions.push(PolicyRecord {
            version: loaded.version,
            name: loaded.name,
            text: loaded.text,
            hash: loaded.hash,
            by: loaded.by,
            loaded_at: Some(record.recorded_at),
            position: Some(record.position),
        });
        debug_assert!(self.stream_version.is_none_or(|v| v < record.stream_version), "a version only grows");
        self.stream_version = Some(record.stream_version);
        Ok(())
    }

    /// The policy in force now.
    pub fn in_force(&self) -> PolicyRecord {
        self.versions.last().cloned().unwrap_or_else(PolicyRecord::default_policy)
    }

    /// The policy in force at `position`.
    pub fn in_force_at(&self, position: u64) -> PolicyRecord {
        self.versions
            .iter()
            .rev()
            .find(|p| p.position.is_some_and(|at| at <= position))
            .cloned()
            .unwrap_or_else(PolicyRecord::default_policy)
    }

    /// The policy of one version (0 is the built-in default).
    pub fn version(&self, version: u32) -> Result<PolicyRecord, PolicyError> {
        if version == 0 {
            return Ok(PolicyRecord::default_policy());
        }
        self.versions.iter().find(|p| p.version == version).cloned().ok_or(PolicyError::UnknownVersion(version))
    }
}

/// The policies as the store holds them now.
pub async fn load(store: &dyn crate::EventStore) -> Result<PolicyState, crate::Error> {
    match crate::decider::fold::load(store, &PolicyKey::Policies).await? {
        PolicyRead::Policies(policies) => Ok(policies),
        PolicyRead::Access(_) => Ok(PolicyState::default()),
    }
}

/// Decides loading a policy: the actor may, the name is sane, the text compiles, calls no
/// forbidden built-in and decides well-formed on sample inputs, and differs from the one in
/// force. Pure apart from compiling.
/// `local_operator`: the command comes from a shell with access to the data directory (the
/// CLI), which is trusted as an administrator is; otherwise `actor` needs the admin role.
fn decide_load(
    state: &PolicyState,
    access: &AccessState,
    actor: &str,
    local_operator: bool,
    name: &str,
    text: &str,
) -> Result<PolicyLoaded, PolicyError> {
    let roles = access.roles_of(actor);
    if !local_operator && !permits(&roles, Operation::ManagePolicy) {
        return Err(PolicyError::NotPermitted { principal: actor.to_owned() });
    }
    if name.trim().is_empty() || name.len() > MAX_POLICY_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(PolicyError::BadName);
    }
    Policy::compile(text)?;
    let current = state.in_force();
    if current.hash == text_hash(text) {
        return Err(PolicyError::Unchanged(current.version));
    }
    Ok(PolicyLoaded {
        version: state.versions.last().map_or(1, |p| p.version + 1),
        name: name.to_owned(),
        text: text.to_owned(),
        hash: text_hash(text),
        by: actor.to_owned(),
        regorus_version: REGORUS_VERSION.into(),
    })
}

/// What a policy decision reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PolicyKey {
    /// The policies loaded.
    Policies,
    /// Who may load one.
    Access,
}

/// The fold of a [`PolicyKey`].
#[derive(Clone, Debug)]
pub enum PolicyRead {
    /// Of [`PolicyKey::Policies`].
    Policies(PolicyState),
    /// Of [`PolicyKey::Access`].
    Access(AccessState),
}

impl crate::decider::StreamKey for PolicyKey {
    type State = PolicyRead;

    fn streams(&self) -> Vec<StreamId> {
        match self {
            PolicyKey::Policies => vec![policy_stream()],
            PolicyKey::Access => vec![crate::access::access_stream()],
        }
    }

    fn initial(&self) -> PolicyRead {
        match self {
            PolicyKey::Policies => PolicyRead::Policies(PolicyState::default()),
            PolicyKey::Access => PolicyRead::Access(AccessState::default()),
        }
    }

    fn evolve(&self, state: &mut PolicyRead, record: &EventRecord) -> Result<(), crate::Error> {
        match state {
            PolicyRead::Policies(policies) => policies.apply(record)?,
            PolicyRead::Access(access) => access.apply(record)?,
        }
        Ok(())
    }
}

impl crate::decider::DomainEvent for PolicyLoaded {
    fn to_new_event(&self, metadata: Metadata) -> NewEvent {
        PolicyLoaded::to_new_event(self, metadata)
    }
}

/// Load a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadPolicy {
    /// Its name.
    pub name: String,
    /// Its Rego text.
    pub text: String,
    /// The command comes from a shell with access to the data directory (the CLI), trusted as
    /// an administrator is; otherwise the actor needs the admin role.
    pub local_operator: bool,
}

/// Decides loading policies: against the policy stream and the access state as read, with
/// the access stream as a condition.
#[derive(Clone, Copy, Debug, Default)]
pub struct PolicyDecider;

impl crate::decider::Decider for PolicyDecider {
    type Command = LoadPolicy;
    type Key = PolicyKey;
    type Event = PolicyLoaded;
    type Error = PolicyError;
    const NAME: &'static str = POLICY_STREAM;

    fn reads(&self, _command: &LoadPolicy, _read: &crate::decider::ReadSet<PolicyKey>) -> Vec<PolicyKey> {
        vec![PolicyKey::Policies, PolicyKey::Access]
    }

    fn decide(
        &self,
        command: &LoadPolicy,
        read: &crate::decider::ReadSet<PolicyKey>,
        context: &crate::decider::CommandContext,
    ) -> Result<crate::decider::Decision<PolicyKey, PolicyLoaded>, PolicyError> {
        let (empty_policies, empty_access) = (PolicyState::default(), AccessState::default());
        let policies = match read.get(&PolicyKey::Policies) {
            Some(PolicyRead::Policies(p)) => p,
            _ => &empty_policies,
        };
        let access = match read.get(&PolicyKey::Access) {
            Some(PolicyRead::Access(a)) => a,
            _ => &empty_access,
        };
        let loaded =
            decide_load(policies, access, context.actor(), command.local_operator, &command.name, &command.text)?;
        let mut decision = crate::decider::Decision::default();
        decision.write(PolicyKey::Policies, loaded);
        decision.require_unchanged(PolicyKey::Access);
        Ok(decision)
    }
}

/// One approval the decision requires: `count` distinct principals, each holding `role` when
/// they approve, or each one of `principals`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRequirement {
    /// The role.
    pub role: Option<Role>,
    /// Principals that qualify by name.
    pub principals: Vec<String>,
    /// How many.
    pub count: u32,
    /// Why.
    pub reason: String,
}

impl ApprovalRequirement {
    /// Whether an approval by `principal`, holding `roles`, counts towards this requirement.
    pub fn counts(&self, principal: &str, roles: &BTreeSet<Role>) -> bool {
        match self.role {
            Some(role) => roles.contains(&role),
            None => self.principals.iter().any(|p| p == principal),
        }
    }
}

/// What a policy decided.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyOutput {
    /// Whether the change is approved without anyone's approval.
    pub auto_approve: bool,
    /// Why the policy denies the change (empty: it does not).
    pub deny: Vec<String>,
    /// Approvals and rejections, in order.
    pub approvals: Vec<ApprovalRequirement>,
}

impl PolicyOutput {
    /// Reads the policy's `decision` value strictly.
    pub fn from_json(value: &Value) -> Result<PolicyOutput, PolicyError> {
        let bad = |m: String| PolicyError::BadOutput(m);
        let object = value.as_object().ok_or_else(|| bad(format!("expected an object, got {value}")))?;
        if let Some(extra) = object.keys().find(|k| !["auto_approve", "deny", "approvals"].contains(&k.as_str())) {
            return Err(bad(format!("unknown key {extra:?} (expected auto_approve, deny, approvals)")));
        }
        let auto_approve = match object.get("auto_approve") {
            None => false,
            Some(v) => v.as_bool().ok_or_else(|| bad("auto_approve must be true or false".into()))?,
        };
        let reason = |v: &Value, what: &str| -> Result<String, PolicyError> {
            let text = v.as_str().ok_or_else(|| bad(format!("{what} must be text")))?;
            if text.trim().is_empty() || text.len() > MAX_REASON_BYTES {
                return Err(bad(format!("{what} must be 1 to {MAX_REASON_BYTES} bytes")));
            }
            Ok(text.to_owned())
        };
        let list = |key: &str, bound: usize| -> Result<Vec<Value>, PolicyError> {
            match object.get(key) {
                None => Ok(Vec::new()),
                Some(Value::Array(items)) if items.len() <= bound => Ok(items.clone()),
                Some(Value::Array(items)) => Err(bad(format!("{key} has {} entries; at most {bound}", items.len()))),
                Some(other) => Err(bad(format!("{key} must be a list, got {other}"))),
            }
        };
        let deny = list("deny", MAX_DENIALS)?.iter().map(|v| reason(v, "a denial")).collect::<Result<_, _>>()?;
        let mut approvals = Vec::new();
        for item in list("approvals", MAX_APPROVAL_REQUIREMENTS)? {
            let entry =
                item.as_object().ok_or_else(|| bad(format!("an approval requirement must be an object: {item}")))?;
            if let Some(extra) = entry.keys().find(|k| !["role", "principals", "count", "reason"].contains(&k.as_str()))
            {
                return Err(bad(format!("unknown key {extra:?} in an approval requirement")));
            }
            let count = entry
                .get("count")
                .and_then(Value::as_u64)
                .filter(|c| (1..=u64::from(MAX_REQUIRED_COUNT)).contains(c))
                .ok_or_else(|| bad(format!("count must be 1 to {MAX_REQUIRED_COUNT}: {item}")))?
                as u32;
            let reason = reason(entry.get("reason").unwrap_or(&Value::Null), "an approval's reason")?;
            let requirement = match (entry.get("role"), entry.get("principals")) {
                (Some(role), None) => {
                    let role = role.as_str().ok_or_else(|| bad("role must be text".into()))?;
                    let role: Role = role.parse().map_err(|_| bad(format!("unknown role {role:?}")))?;
                    ApprovalRequirement { role: Some(role), principals: Vec::new(), count, reason }
                }
                (None, Some(Value::Array(names))) => {
                    let names: Vec<String> = names
                        .iter()
                        .filter_map(|n| n.as_str().map(str::to_owned))
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect();
                    if names.is_empty() || names.len() > MAX_PRINCIPALS_PER_REQUIREMENT {
                        return Err(bad(format!(
                            "principals must name 1 to {MAX_PRINCIPALS_PER_REQUIREMENT} principals: {item}"
                        )));
                    }
                    if names.len() < count as usize {
                        return Err(bad(format!("count {count} is more than the {} principals named", names.len())));
                    }
                    ApprovalRequirement { role: None, principals: names, count, reason }
                }
                _ => return Err(bad(format!("an approval requirement names a role or principals, not both: {item}"))),
            };
            approvals.push(requirement);
        }
        Ok(PolicyOutput { auto_approve, deny, approvals })
    }
}

/// A decision as recorded: enough to replay it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDecision {
    /// The policy's version.
    pub policy_version: u32,
    /// The blake3 hash of the policy's text.
    pub policy_hash: Hash,
    /// The regorus release that decided.
    pub regorus_version: String,
    /// The complete input, canonical JSON (keys sorted).
    pub input: String,
    /// What the policy decided.
    pub output: PolicyOutput,
}

/// A compiled policy.
#[derive(Clone)]
pub struct Policy {
    engine: regorus::Engine,
    /// The blake3 hash.
    pub hash: Hash,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Policy({})", self.hash.to_hex())
    }
}

/// Finds calls of forbidden built-ins in the policy's tokens (comments and strings are not
/// tokens, so a mention there is fine).
fn forbidden_call(text: &str) -> Result<Option<(String, u32)>, PolicyError> {
    use regorus::unstable::{Lexer, Source, TokenKind};
    let source =
        Source::from_contents("policy.rego".into(), text.to_owned()).map_err(|e| PolicyError::Syntax(e.to_string()))?;
    let mut lexer = Lexer::new(&source);
    let mut dotted: Vec<String> = Vec::new();
    let mut expect_ident = true;
    let mut start_line = 0;
    let check = |dotted: &[String], line: u32| -> Option<(String, u32)> {
        let name = dotted.join(".");
        FORBIDDEN_BUILTINS.iter().find(|f| name == **f || name.starts_with(&format!("{f}."))).map(|_| (name, line))
    };
    loop {
        let token = lexer.next_token().map_err(|e| PolicyError::Syntax(e.to_string()))?;
        match token.0 {
            TokenKind::Eof => return Ok(check(&dotted, start_line)),
            TokenKind::Ident if expect_ident => {
                if dotted.is_empty() {
                    start_line = token.1.line;
                }
                dotted.push(token.1.text().to_owned());
                expect_ident = false;
            }
            TokenKind::Symbol if token.1.text() == "." && !expect_ident && !dotted.is_empty() => expect_ident = true,
            _ => {
                if let Some(found) = check(&dotted, start_line) {
                    return Ok(Some(found));
                }
                dotted.clear();
                expect_ident = true;
                if token.0 == TokenKind::Ident {
                    start_line = token.1.line;
                    dotted.push(token.1.text().to_owned());
                    expect_ident = false;
                }
            }
        }
    }
}

/// Inputs a new policy must decide well-formed on before it is accepted: one per change type,
/// with and without an assessment.
fn sample_inputs() -> Vec<Value> {
    let service = json!({"id": "00000000-0000-7000-8000-000000000001", "name": "sample", "tier": 1,
        "window_in_service_hours": true, "owners": ["sample.owner"], "depth": 1});
    let mut inputs = Vec::new();
    for change_type in ["standard", "normal", "emergency"] {
        for assessed in [false, true] {
            let assessment = assessed.then(|| {
                json!({"score": 60, "level": "high", "position": 1, "downstream_cis": 12, "truncated": false,
                    "services": [service.clone()], "recent_failures": 0,
                    "factors": [{"name": "change_type", "points": 10, "why": "sample"}]})
            });
            inputs.push(json!({
                "now": "2030-01-01T00:00:00Z",
                "now_ns": 1_893_456_000_000_000_000_i64,
                "change": {"id": "00000000-0000-7000-8000-000000000002", "number": "CHG-000001", "type": change_type,
                    "title": "sample", "requester": "sample.requester", "implementer": "sample.implementer",
                    "template": null, "window": null, "scope": {"cis": [], "planned": []}},
                "requester_roles": ["editor"],
                "assessment": assessment,
                "calendar": null,
            }));
        }
    }
    inputs
}

impl Policy {
    /// Parses and checks a policy text.
    pub fn compile(text: &str) -> Result<Policy, PolicyError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge { bytes: text.len(), bound: MAX_POLICY_BYTES });
        }
        if let Some((builtin, line)) = forbidden_call(text)? {
            return Err(PolicyError::ForbiddenBuiltin { builtin, line });
        }
        let mut engine = regorus::Engine::new();
        engine.add_policy("policy.rego".into(), text.to_owned()).map_err(|e| PolicyError::Syntax(e.to_string()))?;
        let policy = Policy { engine, hash: text_hash(text) };
        for input in sample_inputs() {
            policy.evaluate(&input).map_err(|e| match e {
                PolicyError::Evaluation(m) if m.contains("undefined") || m.contains("not a valid rule path") => {
                    PolicyError::NoDecision(m)
                }
                other => other,
            })?;
        }
        Ok(policy)
    }

    /// Evaluates the decision rule on `input`.
    pub fn evaluate(&self, input: &Value) -> Result<PolicyOutput, PolicyError> {
        self.evaluate_text(&json_text(input)?)
    }

    /// Evaluates the decision rule on the input whose JSON text is `input`.
    fn evaluate_text(&self, input: &str) -> Result<PolicyOutput, PolicyError> {
        let mut engine = self.engine.clone();
        let input = regorus::Value::from_json_str(input).map_err(|e| PolicyError::Evaluation(e.to_string()))?;
        engine.set_input(input);
        let value = engine.eval_rule(DECISION_RULE.into()).map_err(|e| PolicyError::Evaluation(e.to_string()))?;
        if value == regorus::Value::Undefined {
            return Err(PolicyError::NoDecision("the decision is undefined for this input".into()));
        }
        let json = value.to_json_str().map_err(|e| PolicyError::BadOutput(e.to_string()))?;
        let json: Value = serde_json::from_str(&json).map_err(|e| PolicyError::BadOutput(e.to_string()))?;
        PolicyOutput::from_json(&json)
    }
}

/// The compiled form of a policy text, kept for the last text compiled (policies change
/// rarely; compiling on every decision would dominate its cost).
pub fn compiled(text: &str) -> Result<Arc<Policy>, PolicyError> {
    static LAST: Mutex<Option<Arc<Policy>>> = Mutex::new(None);
    let hash = text_hash(text);
    if let Ok(last) = LAST.lock()
        && let Some(policy) = last.as_ref().filter(|p| p.hash == hash)
    {
        return Ok(policy.clone());
    }
    let policy = Arc::new(Policy::compile(text)?);
    if let Ok(mut last) = LAST.lock() {
        *last = Some(policy.clone());
    }
    Ok(policy)
}

/// An input a policy decides on: anything that serialises to the input's canonical JSON (keys
/// sorted at every level) and can say what the default policy's rules read of it.
///
/// Two forms: a JSON value (any input, as the API and the tests give it) and the change
/// domain's typed input, which the engine builds for every assessment and what-if without a
/// JSON value (issue 15, part 3; `change::policy_input`).
pub trait DecisionInput: Serialize {
    /// What the default policy's rules read of it, or `None` when only the interpreter may
    /// answer ([`native`]).
    fn rule_input(&self) -> Option<native::RuleInput<'_>>;
}

impl DecisionInput for Value {
    fn rule_input(&self) -> Option<native::RuleInput<'_>> {
        native::read(self)
    }
}

/// Decides with `policy` on `input`, recording what a replay needs.
pub fn decide<I: DecisionInput + ?Sized>(policy: &PolicyRecord, input: &I) -> Result<PolicyDecision, PolicyError> {
    let text = json_text(input)?;
    let output = match native_output(policy, input) {
        Some(output) => output?,
        None => compiled(&policy.text)?.evaluate_text(&text)?,
    };
    Ok(PolicyDecision {
        policy_version: policy.version,
        policy_hash: policy.hash,
        regorus_version: REGORUS_VERSION.into(),
        input: text,
        output,
    })
}

/// `input` as compact JSON: for a value with serde_json's ordered map, or the typed input with
/// its fields declared in key order, the canonical text (keys sorted). Written straight into
/// bytes; `Value`'s `Display` goes through a formatter a few bytes at a time, which took three
/// times as long (0.31 ms) at the 100 KB of a 500-service input.
fn json_text<I: Serialize + ?Sized>(input: &I) -> Result<String, PolicyError> {
    serde_json::to_string(input).map_err(|e| PolicyError::Evaluation(format!("the input is not JSON: {e}")))
}

/// What `policy` decides on `input`, without the record of it: a what-if, which records
/// nothing, needs no canonical text of its input (about 0.13 ms of a 0.35 ms decision at 500
/// services).
pub fn evaluate<I: DecisionInput + ?Sized>(policy: &PolicyRecord, input: &I) -> Result<PolicyOutput, PolicyError> {
    match native_output(policy, input) {
        Some(output) => output,
        None => compiled(&policy.text)?.evaluate_text(&json_text(input)?),
    }
}

/// The default policy's meaning, written natively, for the inputs it vouches for (replays
/// still run the interpreter, so each checks it again); `None` for any other policy or input.
fn native_output<I: DecisionInput + ?Sized>(
    policy: &PolicyRecord,
    input: &I,
) -> Option<Result<PolicyOutput, PolicyError>> {
    if policy.text != DEFAULT_POLICY {
        return None;
    }
    let decision = native::decide(&input.rule_input()?)?;
    Some(PolicyOutput::from_json(&decision))
}

/// What a replay found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replay {
    /// The recorded policy's text still hashes to the recorded hash.
    pub policy_intact: bool,
    /// What the policy decided.
    pub output: Result<PolicyOutput, PolicyError>,
    /// The recorded output equals the replayed one (and the text is intact).
    pub matches: bool,
    /// The decision was made with another regorus release than this build's.
    pub regorus_differs: bool,
}

/// Re-runs a recorded decision with the recorded policy text on the recorded input.
pub fn replay(decision: &PolicyDecision, policy: &PolicyRecord) -> Replay {
    let policy_intact = policy.version == decision.policy_version && text_hash(&policy.text) == decision.policy_hash;
    let output = serde_json::from_str::<Value>(&decision.input)
        .map_err(|e| PolicyError::Evaluation(format!("the recorded input is not JSON: {e}")))
        .and_then(|input| Policy::compile(&policy.text)?.evaluate(&input));
    let matches = policy_intact && output.as_ref().is_ok_and(|o| *o == decision.output);
    Replay { policy_intact, output, matches, regorus_differs: decision.regorus_version != REGORUS_VERSION }
}

/// Runs every `test_` rule of `tests` against `policy`; returns (rule, passed) in order.
pub fn run_tests(policy: &str, tests: &str) -> Result<Vec<(String, bool)>, PolicyError> {
    let mut engine = regorus::Engine::new();
    engine.add_policy("policy.rego".into(), policy.to_owned()).map_err(|e| PolicyError::Syntax(e.to_string()))?;
    let package =
        engine.add_policy("tests.rego".into(), tests.to_owned()).map_err(|e| PolicyError::Syntax(e.to_string()))?;
    let names: BTreeSet<String> = tests
        .lines()
        .filter_map(|line| line.strip_prefix("test_"))
        .filter_map(|rest| rest.split(|c: char| !(c.is_alphanumeric() || c == '_')).next())
        .map(|rest| format!("test_{rest}"))
        .collect();
    let mut results = Vec::new();
    for name in names {
        let rule = format!("{package}.{name}");
        let passed = engine.eval_rule(rule).map(|v| v == regorus::Value::Bool(true)).unwrap_or(false);
        results.push((name, passed));
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_rego_tests_pass() {
        let results = run_tests(DEFAULT_POLICY, DEFAULT_POLICY_TESTS).expect("the tests load");
        assert!(results.len() >= 8, "{results:?}");
        let failed: Vec<_> = results.iter().filter(|(_, passed)| !passed).collect();
        assert!(failed.is_empty(), "failing Rego tests: {failed:?}");
    }

    #[test]
    fn a_failing_rego_test_is_reported() {
        let tests = "package cmdb.change_test\nimport rego.v1\nimport data.cmdb.change\n\ntest_wrong if {\n\tchange.decision.auto_approve with input as {\"change\": {\"type\": \"normal\"}}\n}\n";
        let results = run_tests(DEFAULT_POLICY, tests).expect("loads");
        assert_eq!(results, vec![("test_wrong".to_owned(), false)]);
    }

    #[test]
    fn the_default_policy_compiles_and_the_regorus_version_matches_the_lock_file() {
        Policy::compile(DEFAULT_POLICY).expect("the default compiles");
        let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock")).expect("Cargo.lock");
        let entry = lock.split("[[package]]").find(|p| p.contains("name = \"regorus\"")).expect("regorus is locked");
        assert!(entry.contains(&format!("version = \"{REGORUS_VERSION}\"")), "{entry}");
    }

    #[test]
    fn forbidden_builtins_are_refused_wherever_they_are_called() {
        for (call, name) in [
            ("x := time.now_ns()", "time.now_ns"),
            ("x := rand.intn(\"a\", 10)", "rand.intn"),
            ("x := http.send({\"method\": \"get\", \"url\": \"http://a\"})", "http.send"),
            ("x := opa.runtime()", "opa.runtime"),
            ("x := uuid.rfc4122(\"a\")", "uuid.rfc4122"),
        ] {
            let text = format!("{DEFAULT_POLICY}\nsneaky if {{\n\t{call}\n\tx != null\n}}\n");
            match Policy::compile(&text) {
                Err(PolicyError::ForbiddenBuiltin { builtin, line }) => {
                    assert_eq!(builtin, name);
                    assert!(line > 50, "the line is reported: {line}");
                }
                other => panic!("{call}: {other:?}"),
            }
        }
        // Mentions in comments and strings are not calls.
        let text = format!("{DEFAULT_POLICY}\n# never call time.now_ns() here\nnote := \"time.now_ns\"\n");
        Policy::compile(&text).expect("comments and strings are fine");
    }

    #[test]
    fn broken_policies_are_refused_with_the_parsers_message() {
        let syntax = Policy::compile("package cmdb.change\nimport rego.v1\ndecision := {").unwrap_err();
        assert!(matches!(syntax, PolicyError::Syntax(_)), "{syntax}");
        let no_rule = Policy::compile("package cmdb.other\nimport rego.v1\ndecision := {}").unwrap_err();
        assert!(matches!(no_rule, PolicyError::NoDecision(_)), "{no_rule}");
        let bad_shape = Policy::compile("package cmdb.change\nimport rego.v1\ndecision := {\"approvals\": [{\"role\": \"pope\", \"count\": 1, \"reason\": \"r\"}]}").unwrap_err();
        assert!(bad_shape.to_string().contains("pope"), "{bad_shape}");
        let huge = "#".repeat(MAX_POLICY_BYTES + 1);
        assert!(matches!(Policy::compile(&huge), Err(PolicyError::TooLarge { .. })));
    }

    #[test]
    fn outputs_are_read_strictly() {
        let ok = json!({"auto_approve": false, "deny": [], "approvals": [
            {"role": "approver", "count": 2, "reason": "two"},
            {"principals": ["b", "a", "a"], "count": 1, "reason": "owner"}]});
        let output = PolicyOutput::from_json(&ok).expect("well formed");
        assert_eq!(output.approvals[1].principals, vec!["a", "b"], "sorted, once each");
        for bad in [
            json!([]),
            json!({"verdict": true}),
            json!({"auto_approve": "yes"}),
            json!({"approvals": [{"role": "approver", "count": 0, "reason": "r"}]}),
            json!({"approvals": [{"role": "approver", "count": 11, "reason": "r"}]}),
            json!({"approvals": [{"role": "approver", "principals": ["a"], "count": 1, "reason": "r"}]}),
            json!({"approvals": [{"principals": [], "count": 1, "reason": "r"}]}),
            json!({"approvals": [{"principals": ["a"], "count": 2, "reason": "r"}]}),
            json!({"approvals": [{"role": "approver", "count": 1}]}),
            json!({"deny": [""]}),
        ] {
            assert!(PolicyOutput::from_json(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_recorded_input_text_is_the_canonical_json_of_the_input() {
        let input = serde_json::json!({
            "z": [1, -2, 3.5, null, true],
            "a": {"é\"\n\u{1}": "tab\there", "b": [], "a": {}},
            "m": u64::MAX,
        });
        let text = json_text(&input).expect("a value is JSON");
        assert_eq!(text, input.to_string());
        assert!(text.starts_with(r#"{"a":{"a":{},"b":[],"#), "keys sorted, compact: {text}");
        assert_eq!(serde_json::from_str::<Value>(&text).ok(), Some(input));
    }

    #[test]
    fn replay_finds_the_same_answer_and_reports_a_tampered_record() {
        let policy = PolicyRecord::default_policy();
        let input = sample_inputs().remove(3);
        let decision = decide(&policy, &input).expect("decides");
        let replayed = replay(&decision, &policy);
        assert!(replayed.matches && replayed.policy_intact && !replayed.regorus_differs, "{replayed:?}");
        let mut tampered = decision.clone();
        tampered.output.auto_approve = !tampered.output.auto_approve;
        assert!(!replay(&tampered, &policy).matches);
        let mut other_text = policy.clone();
        other_text.text.push_str("\n# edited\n");
        assert!(!replay(&decision, &other_text).policy_intact);
    }
}
