//! The one place where errors become responses: HTTP errors as JSON with a status, and domain,
//! store, graph and application errors as GraphQL errors with a machine-readable `code`
//! extension ([`Code`]). Every match is exhaustive: a new variant must be given its code here.
//! Internal errors are logged with the request id by the schema's `Observe` extension (`graphql/observe.rs`).

use async_graphql::ErrorExtensions;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cmdb_core::access::{AccessError, Operation};
use cmdb_core::baseline::BaselineError;
use cmdb_core::change::ChangeError;
use cmdb_core::ci::CiError;
use cmdb_core::event::EnvelopeError;
use cmdb_core::model::ModelError;
use cmdb_core::policy::PolicyError;
use cmdb_core::release::ReleaseError;
use cmdb_core::release::observe::ObserveError;
use cmdb_core::store::StoreError;
use cmdb_projections::graph::{self as graph, GraphError};

use crate::app::AppError;
use crate::app::releases::GateError;
use crate::server::auth::AuthError;

/// An HTTP-level refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message says what its fields are")]
pub enum ApiError {
    #[error("{0}")]
    /// ….
    Unauthorized(#[from] AuthError),
    #[error("forbidden: this principal's roles do not allow {0}")]
    /// Forbidden: this principal's roles do not allow ….
    Forbidden(Operation),
    #[error("the request body is larger than max_request_body_bytes ({bound} bytes)")]
    /// The request body is larger than max_request_body_bytes (… bytes).
    PayloadTooLarge { bound: usize },
    #[error("{0}")]
    /// ….
    BadRequest(String),
    #[error("{0}")]
    /// ….
    Unavailable(String),
    #[error("internal error: {0}")]
    /// Internal error: ….
    Internal(String),
    #[error("{message}")]
    /// A refusal of the domain or the application layer, with its GraphQL code.
    Domain { code: Code, message: String },
    #[error("this token spent its query budget (cost_per_second); retry in {retry_after_seconds} s")]
    /// This token spent its query budget (cost_per_second); retry in … s.
    RateLimited { retry_after_seconds: u64 },
    #[error("deliveries from {source_name} exceed hook_deliveries_per_second; retry in {retry_after_seconds} s")]
    /// A source sent more deliveries than its rate allows.
    RateLimitedSource { source_name: String, retry_after_seconds: u64 },
    #[error("{0}")]
    /// The body's content type is not one the route reads.
    UnsupportedMediaType(String),
    #[error("{0}")]
    /// A webhook's signature is missing or wrong.
    BadSignature(String),
    #[error("{0}")]
    /// The route does not take this method for this request (a mutation over GET).
    MethodNotAllowed(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::RateLimited { .. } | ApiError::RateLimitedSource { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::BadSignature(_) => StatusCode::UNAUTHORIZED,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Domain { code, .. } => code.status(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "UNAUTHENTICATED",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            ApiError::BadRequest(_) => "BAD_REQUEST",
            ApiError::Unavailable(_) => "UNAVAILABLE",
            ApiError::Internal(_) => "INTERNAL",
            ApiError::RateLimited { .. } | ApiError::RateLimitedSource { .. } => "RATE_LIMITED",
            ApiError::UnsupportedMediaType(_) => "UNSUPPORTED_MEDIA_TYPE",
            ApiError::BadSignature(_) => "BAD_SIGNATURE",
            ApiError::MethodNotAllowed(_) => "METHOD_NOT_ALLOWED",
            ApiError::Domain { code, .. } => code.as_str(),
        }
    }

    /// An application error as an HTTP refusal, with the code GraphQL would give it.
    pub fn from_app(error: AppError) -> ApiError {
        let code = app_code(&error);
        ApiError::Domain { code, message: error.to_string() }
    }
}

/// The JSON body of every HTTP error, on every route: the GraphQL error shape
/// (`{"errors": [{"message", "extensions": {"code"}}]}`), so that GraphQL clients read a
/// refusal of the transport (no token, a body too large) like any other error.
pub fn error_body(code: &str, message: &str) -> String {
    error_body_with(code, message, serde_json::Map::new())
}

/// [`error_body`] with more extensions beside `code`.
pub fn error_body_with(
    code: &str,
    message: &str,
    mut extensions: serde_json::Map<String, serde_json::Value>,
) -> String {
    extensions.insert("code".into(), code.into());
    serde_json::json!({ "errors": [{ "message": message, "extensions": extensions }] }).to_string()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let mut extensions = serde_json::Map::new();
        if let ApiError::RateLimited { retry_after_seconds } | ApiError::RateLimitedSource { retry_after_seconds, .. } =
            &self
        {
            extensions.insert("retryAfterSeconds".into(), (*retry_after_seconds).into());
        }
        let body = error_body_with(self.code(), &message, extensions);
        let mut response = (self.status(), [(header::CONTENT_TYPE, "application/json")], body).into_response();
        if let ApiError::RateLimited { retry_after_seconds } | ApiError::RateLimitedSource { retry_after_seconds, .. } =
            self
        {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
        }
        if let ApiError::Unauthorized(_) = self {
            let challenge = format!(
                "Bearer realm=\"cmdb\", error=\"invalid_token\", error_description=\"{}\"",
                message.replace('"', "'")
            );
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
            }
        }
        response
    }
}

/// The machine-readable `code` of a GraphQL error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// The input is malformed or out of its allowed values.
    BadUserInput,
    /// The request is of the wrong kind (a subscription over POST).
    BadRequest,
    /// What the input names does not exist.
    NotFound,
    /// What the input creates exists already.
    AlreadyExists,
    /// The state does not allow it now.
    FailedPrecondition,
    /// A bound was passed (the `limit` extension names it).
    LimitExceeded,
    /// The caller's roles do not allow it.
    Forbidden,
    /// A rule of segregation of duties forbids it (CH-4, CH-6).
    SegregationOfDuties,
    /// A CI edit needs an implementing change covering it (CM-3).
    ChangeRequired,
    /// A freeze window covers the change (CH-5).
    FreezeWindow,
    /// An unacknowledged conflict with another scheduled change (CH-5).
    ChangeConflict,
    /// The approval policy denies it (CH-4).
    PolicyDenied,
    /// The approval policy failed on this input: an operator must fix the policy.
    PolicyFailed,
    /// Other writers kept changing what it read: retry.
    Conflict,
    /// Durable, or not written, but a read model or the store is not ready: retry.
    Unavailable,
    /// A fault of the engine: logged with the request id.
    Internal,
    /// No valid token.
    Unauthenticated,
    /// The token spent its query budget: retry after the `retryAfterSeconds` extension.
    RateLimited,
    /// The digest deployed is not the digest the release recorded (RL-3).
    DigestMismatch,
    /// This server is a read-only follower; the message names where writes go.
    ReadOnly,
    /// The commit's outcome is unknown (the database went away during it): read before retrying.
    OutcomeUnknown,
}

impl Code {
    /// As it appears in the `code` extension.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BadUserInput => "BAD_USER_INPUT",
            Code::BadRequest => "BAD_REQUEST",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::LimitExceeded => "LIMIT_EXCEEDED",
            Code::Forbidden => "FORBIDDEN",
            Code::SegregationOfDuties => "SEGREGATION_OF_DUTIES",
            Code::ChangeRequired => "CHANGE_REQUIRED",
            Code::FreezeWindow => "FREEZE_WINDOW",
            Code::ChangeConflict => "CHANGE_CONFLICT",
            Code::PolicyDenied => "POLICY_DENIED",
            Code::PolicyFailed => "POLICY_FAILED",
            Code::Conflict => "CONFLICT",
            Code::Unavailable => "UNAVAILABLE",
            Code::Internal => "INTERNAL",
            Code::Unauthenticated => "UNAUTHENTICATED",
            Code::RateLimited => "RATE_LIMITED",
            Code::DigestMismatch => "DIGEST_MISMATCH",
            Code::ReadOnly => "READ_ONLY",
            Code::OutcomeUnknown => "OUTCOME_UNKNOWN",
        }
    }
}

impl Code {
    /// The HTTP status of a refusal with this code (REST routes).
    pub fn status(self) -> StatusCode {
        match self {
            Code::BadUserInput | Code::BadRequest | Code::LimitExceeded => StatusCode::BAD_REQUEST,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::Forbidden | Code::SegregationOfDuties => StatusCode::FORBIDDEN,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Code::Unavailable | Code::OutcomeUnknown => StatusCode::SERVICE_UNAVAILABLE,
            Code::ReadOnly => StatusCode::METHOD_NOT_ALLOWED,
            Code::Internal | Code::PolicyFailed => StatusCode::INTERNAL_SERVER_ERROR,
            Code::AlreadyExists
            | Code::FailedPrecondition
            | Code::ChangeRequired
            | Code::FreezeWindow
            | Code::ChangeConflict
            | Code::PolicyDenied
            | Code::Conflict
            | Code::DigestMismatch => StatusCode::CONFLICT,
        }
    }
}

/// A GraphQL error with a `code` extension.
fn graphql_error(code: &str, message: impl Into<String>) -> async_graphql::Error {
    let code = code.to_owned();
    async_graphql::Error::new(message).extend_with(move |_, extensions| extensions.set("code", code.clone()))
}

/// A GraphQL error with `code`.
pub fn coded(code: Code, message: impl Into<String>) -> async_graphql::Error {
    graphql_error(code.as_str(), message)
}

/// The caller's roles do not permit `operation`.
pub fn forbidden(operation: Operation) -> async_graphql::Error {
    coded(Code::Forbidden, ApiError::Forbidden(operation).to_string())
}

/// Malformed input.
pub fn bad_input(message: impl Into<String>) -> async_graphql::Error {
    coded(Code::BadUserInput, message)
}

/// Malformed input in one field (named in `extensions.field`).
pub fn bad_input_field(field: &str, message: impl Into<String>) -> async_graphql::Error {
    let field = field.to_owned();
    bad_input(message).extend_with(move |_, extensions| extensions.set("field", field.clone()))
}

/// A limit refused: names the limit, the value and the bound.
pub fn limit_exceeded(limit: &str, value: u64, bound: u64) -> async_graphql::Error {
    let limit_name = limit.to_owned();
    async_graphql::Error::new(format!("limit exceeded: {limit} is {bound}, got {value}")).extend_with(move |_, e| {
        e.set("code", Code::LimitExceeded.as_str());
        e.set("limit", limit_name.clone());
        e.set("value", value);
        e.set("bound", bound);
    })
}

fn store_code(error: &StoreError) -> Code {
    match error {
        StoreError::VersionConflict { .. } => Code::Conflict,
        StoreError::LimitExceeded { .. } => Code::LimitExceeded,
        StoreError::InvalidInput(_) | StoreError::DuplicateEventId(_) => Code::BadUserInput,
        StoreError::StorageFull(_) | StoreError::WriterStopped(_) | StoreError::Closed | StoreError::Unavailable(_) => {
            Code::Unavailable
        }
        StoreError::ReadOnly(_) => Code::ReadOnly,
        StoreError::CommitOutcomeUnknown(_) => Code::OutcomeUnknown,
        StoreError::Storage(_) | StoreError::Corruption { .. } | StoreError::Open { .. } => Code::Internal,
    }
}

fn model_code(error: &ModelError) -> Code {
    match error {
        ModelError::InvalidId { .. }
        | ModelError::UnknownName { .. }
        | ModelError::InvalidClassName(_)
        | ModelError::InvalidChangeNumber(_)
        | ModelError::InvalidChangeRef(_)
        | ModelError::ClassNameTaken(_) => Code::BadUserInput,
        ModelError::TooManyClassNames => Code::LimitExceeded,
    }
}

fn access_code(error: &AccessError) -> Code {
    match error {
        AccessError::UnknownPrincipal(_) | AccessError::UnknownToken(_) => Code::NotFound,
        AccessError::PrincipalExists(_) | AccessError::TokenExists(_) => Code::AlreadyExists,
        AccessError::LastAdmin(_)
        | AccessError::TokenAlreadyRevoked(_)
        | AccessError::RoleAlreadyGranted { .. }
        | AccessError::RoleNotGranted { .. } => Code::FailedPrecondition,
        AccessError::TooManyTokens { .. } | AccessError::TooManyPrincipals => Code::LimitExceeded,
        AccessError::InvalidName(_)
        | AccessError::UnknownRole(_)
        | AccessError::UnknownKind(_)
        | AccessError::LabelTooLong { .. }
        | AccessError::ExpiryNotInFuture(_) => Code::BadUserInput,
        AccessError::Undecodable { .. } => Code::Internal,
    }
}

fn baseline_code(error: &BaselineError) -> Code {
    match error {
        BaselineError::Unknown(_) => Code::NotFound,
        BaselineError::Exists(_) => Code::AlreadyExists,
        BaselineError::InvalidName(_) | BaselineError::DescriptionTooLong(_) | BaselineError::Depth(_) => {
            Code::BadUserInput
        }
        BaselineError::Undecodable { .. } => Code::Internal,
    }
}

fn ci_code(error: &CiError) -> Code {
    match error {
        CiError::Model(model) => model_code(model),
        CiError::Invalid { .. } => Code::BadUserInput,
        CiError::UnknownCi(_) | CiError::UnknownRelationship(_) | CiError::UnknownChange(_) => Code::NotFound,
        CiError::NameTaken { .. }
        | CiError::CiExists(_)
        | CiError::RelationshipExists(_)
        | CiError::DuplicateRelationship { .. } => Code::AlreadyExists,
        CiError::CiWithdrawn(_)
        | CiError::TransitionNotAllowed { .. }
        | CiError::RelationshipRemoved(_)
        | CiError::NothingToChange
        | CiError::ReferenceWithdrawn { .. }
        | CiError::ChangeNotImplementing { .. }
        | CiError::NotInScope { .. }
        | CiError::NotPlanned { .. } => Code::FailedPrecondition,
        CiError::TooManyRelationships { .. } | CiError::TooManyAttributes { .. } => Code::LimitExceeded,
        // CM-3: a machine-readable code for "this edit needs a change".
        CiError::Unauthorized { .. } => Code::ChangeRequired,
        CiError::UnknownAttribute { .. }
        | CiError::InvalidAttribute { .. }
        | CiError::MissingAttribute { .. }
        | CiError::InvalidName(_)
        | CiError::UnknownClass(_)
        | CiError::InvalidAttributeName(_)
        | CiError::AttributeClash { .. }
        | CiError::InvalidDeclaration(_)
        | CiError::Empty { .. }
        | CiError::TooLong { .. }
        | CiError::InitialStatusNotAllowed(_)
        | CiError::WrongReferenceClass { .. }
        | CiError::OwnerRequired { .. }
        | CiError::SelfLoop(_)
        | CiError::RelationshipNotAllowed { .. } => Code::BadUserInput,
        CiError::Undecodable { .. } => Code::Internal,
    }
}

fn change_code(error: &ChangeError) -> Code {
    match error {
        ChangeError::Model(model) => model_code(model),
        ChangeError::Invalid { .. } => Code::BadUserInput,
        ChangeError::UnknownChange(_) | ChangeError::UnknownTemplate(_) | ChangeError::UnknownFreeze(_) => {
            Code::NotFound
        }
        ChangeError::ChangeExists(_) | ChangeError::TemplateExists(_) => Code::AlreadyExists,
        ChangeError::NotPermitted { .. } | ChangeError::NotRequester { .. } => Code::Forbidden,
        ChangeError::SegregationOfDuties { .. }
        | ChangeError::AlreadyDecided { .. }
        | ChangeError::NotImplementer { .. } => Code::SegregationOfDuties,
        ChangeError::TransitionNotAllowed { .. }
        | ChangeError::NotEditable { .. }
        | ChangeError::TemplateRetired(_)
        | ChangeError::NotYetApproved { .. }
        | ChangeError::NotReassessable { .. }
        | ChangeError::NotAssessed { .. }
        | ChangeError::NotReschedulable { .. }
        | ChangeError::FreezeAlreadyLifted(_)
        | ChangeError::StaleAssessment { .. } => Code::FailedPrecondition,
        ChangeError::ScopeTooLarge { .. } | ChangeError::TooMany { .. } | ChangeError::TooManyAssessments { .. } => {
            Code::LimitExceeded
        }
        // CH-5: a freeze window covers the scope; a conflict is not acknowledged.
        ChangeError::Frozen { .. } => Code::FreezeWindow,
        ChangeError::Conflicting { .. } => Code::ChangeConflict,
        // CH-4: the approval policy says no, with its reasons.
        ChangeError::PolicyDenied { .. } => Code::PolicyDenied,
        ChangeError::Policy(_) => Code::PolicyFailed,
        ChangeError::Missing { .. }
        | ChangeError::Empty { .. }
        | ChangeError::TooLong { .. }
        | ChangeError::WindowEndsBeforeStart { .. }
        | ChangeError::WindowTooLong { .. }
        | ChangeError::UnknownTimeZone(_)
        | ChangeError::DuplicateScope(_)
        | ChangeError::UnknownClass(_)
        | ChangeError::InvalidPlannedName(_)
        | ChangeError::InvalidLink(_)
        | ChangeError::DuplicateLink { .. }
        | ChangeError::TemplateMismatch(_)
        | ChangeError::ClassNotInTemplate { .. }
        | ChangeError::NotApplicable { .. }
        | ChangeError::InvalidRecurrence(_)
        | ChangeError::NotAService(_)
        | ChangeError::SelfConflict
        | ChangeError::HistoryDays { .. }
        // A draft's scope is checked as input: what it names must exist and be free.
        | ChangeError::UnknownCi(_)
        | ChangeError::UnknownPrincipal(_)
        | ChangeError::CiWithdrawn(_)
        | ChangeError::PlannedExists { .. }
        | ChangeError::NothingToChange => Code::BadUserInput,
        ChangeError::Undecodable { .. } => Code::Internal,
    }
}

fn release_code(error: &ReleaseError) -> Code {
    match error {
        ReleaseError::Model(model) => model_code(model),
        ReleaseError::Ci(ci) => ci_code(ci),
        ReleaseError::Change(change) => change_code(change),
        ReleaseError::Observe(observe) => observe_code(observe),
        ReleaseError::UnknownRelease(_) | ReleaseError::UnknownDeployment(_) => Code::NotFound,
        ReleaseError::ReleaseExists(_) | ReleaseError::DeploymentExists(_) | ReleaseError::IncidentLinked(_) => {
            Code::AlreadyExists
        }
        ReleaseError::NotPermitted { .. } | ReleaseError::WrongRole { .. } => Code::Forbidden,
        ReleaseError::TransitionNotAllowed { .. }
        | ReleaseError::StepSigned { .. }
        | ReleaseError::NotAccepted { .. }
        | ReleaseError::OutOfOrder { .. }
        | ReleaseError::DeploymentState { .. } => Code::FailedPrecondition,
        ReleaseError::NoAuthority(_) => Code::ChangeRequired,
        ReleaseError::DigestMismatch { .. } => Code::DigestMismatch,
        ReleaseError::TooMany { .. } => Code::LimitExceeded,
        ReleaseError::InvalidNumber(_)
        | ReleaseError::MalformedDigest { .. }
        | ReleaseError::Missing { .. }
        | ReleaseError::TooLong { .. }
        | ReleaseError::Duplicate { .. }
        | ReleaseError::UnknownCi(_)
        | ReleaseError::CiWithdrawn(_)
        | ReleaseError::UnknownChange(_)
        | ReleaseError::NotATarget { .. }
        | ReleaseError::Policy { .. }
        | ReleaseError::UnknownStep { .. }
        | ReleaseError::NotInRelease { .. } => Code::BadUserInput,
        ReleaseError::Undecodable { .. } => Code::Internal,
    }
}

fn observe_code(error: &ObserveError) -> Code {
    match error {
        ObserveError::DuplicateDelivery { .. } | ObserveError::IncidentExists(_) => Code::AlreadyExists,
        ObserveError::NoSuchRule { .. } | ObserveError::UnknownIncident(_) | ObserveError::NoSuchCallback(_) => {
            Code::NotFound
        }
        ObserveError::IncidentResolved(_) => Code::FailedPrecondition,
        ObserveError::TooMany { .. } => Code::LimitExceeded,
        ObserveError::TooLong { .. } | ObserveError::Empty { .. } => Code::BadUserInput,
        ObserveError::Model(model) => model_code(model),
    }
}

fn policy_code(error: &PolicyError) -> Code {
    match error {
        PolicyError::NotPermitted { .. } => Code::Forbidden,
        PolicyError::Unchanged(_) => Code::FailedPrecondition,
        PolicyError::UnknownVersion(_) => Code::NotFound,
        PolicyError::TooLarge { .. } => Code::LimitExceeded,
        PolicyError::Syntax(_)
        | PolicyError::ForbiddenBuiltin { .. }
        | PolicyError::BadName
        | PolicyError::NoDecision(_)
        | PolicyError::Evaluation(_)
        | PolicyError::BadOutput(_) => Code::BadUserInput,
        PolicyError::Undecodable { .. } => Code::Internal,
    }
}

fn envelope_code(error: &EnvelopeError) -> Code {
    match error {
        EnvelopeError::EmptyStreamId
        | EnvelopeError::StreamIdTooLong { .. }
        | EnvelopeError::StreamIdCharacters(_)
        | EnvelopeError::EmptyEventType
        | EnvelopeError::EventTypeTooLong { .. }
        | EnvelopeError::EventTypeCharacters(_)
        | EnvelopeError::MetadataFieldTooLong { .. }
        | EnvelopeError::EmptyMetadataField { .. }
        | EnvelopeError::UnknownSource(_) => Code::BadUserInput,
    }
}

fn discovery_code(error: &cmdb_core::discovery::DiscoveryError) -> Code {
    use cmdb_core::discovery::DiscoveryError as D;
    match error {
        D::UnknownSource(_) | D::InvalidId(_) | D::Invalid { .. } => Code::BadUserInput,
        D::UnknownRun(_) => Code::NotFound,
        D::RunExists(_) | D::AuditExists(_) => Code::AlreadyExists,
        D::RunFinished(_) | D::RunNotFinished(_) | D::CountMismatch { .. } => Code::FailedPrecondition,
        D::RunTooLarge { .. } | D::BatchTooLarge { .. } => Code::LimitExceeded,
        D::Undecodable { .. } => Code::Internal,
    }
}

fn redaction_code(error: &cmdb_core::redaction::RedactionError) -> Code {
    use cmdb_core::redaction::RedactionError as R;
    match error {
        R::NoEvents
        | R::DuplicatePosition(_)
        | R::Reason { .. }
        | R::BadPointer { .. }
        | R::NoSuchField { .. }
        | R::Structural { .. }
        | R::Unredactable { .. }
        | R::NothingToErase(_)
        | R::NotJson(_) => Code::BadUserInput,
        R::TooManyEvents { .. } | R::TooManyFields { .. } => Code::LimitExceeded,
        R::Exists(_) => Code::AlreadyExists,
        R::Unknown(_) | R::NoSuchEvent { .. } => Code::NotFound,
        R::NotPending { .. } | R::PlanMismatch(_) => Code::FailedPrecondition,
        R::SameApprover { .. } => Code::SegregationOfDuties,
        R::Undecodable { .. } => Code::Internal,
    }
}

/// The code of a core error.
pub fn core_code(error: &cmdb_core::Error) -> Code {
    use cmdb_core::Error;
    match error {
        Error::Store(store) => store_code(store),
        Error::Access(access) => access_code(access),
        Error::Envelope(envelope) => envelope_code(envelope),
        Error::Ci(ci) => ci_code(ci),
        Error::Baseline(baseline) => baseline_code(baseline),
        Error::Change(change) => change_code(change),
        Error::Control(_) => Code::Internal,
        Error::Model(model) => model_code(model),
        Error::Policy(policy) => policy_code(policy),
        Error::Release(release) => release_code(release),
        Error::Outbound(outbound) => match outbound {
            cmdb_core::outbound::OutboundError::InvalidTarget(_) => Code::BadUserInput,
            cmdb_core::outbound::OutboundError::NoDeadLetter { .. } => Code::NotFound,
            cmdb_core::outbound::OutboundError::Started(_) => Code::AlreadyExists,
            cmdb_core::outbound::OutboundError::Undecodable { .. } => Code::Internal,
        },
        Error::Discovery(discovery) => discovery_code(discovery),
        Error::Evidence(evidence) => match evidence {
            cmdb_core::evidence::EvidenceError::NotNewer { .. } => Code::AlreadyExists,
            cmdb_core::evidence::EvidenceError::Note(_)
            | cmdb_core::evidence::EvidenceError::EmptyTree
            | cmdb_core::evidence::EvidenceError::OriginChanged { .. } => Code::FailedPrecondition,
            cmdb_core::evidence::EvidenceError::Undecodable { .. } => Code::Internal,
        },
        Error::Redaction(redaction) => redaction_code(redaction),
        Error::Contended { .. } => Code::Conflict,
        Error::TooManyReads { .. } => Code::LimitExceeded,
        Error::TooManyReadRounds { .. } | Error::Internal(_) => Code::Internal,
    }
}

/// Maps the core's errors to GraphQL errors.
pub fn core_error(error: cmdb_core::Error) -> async_graphql::Error {
    if let cmdb_core::Error::Store(StoreError::LimitExceeded { limit, value, bound }) = &error {
        return limit_exceeded(&limit.to_string(), *value, *bound);
    }
    let (field, problems) = input_problems(&error);
    let coded = coded(core_code(&error), error.to_string());
    if field.is_none() && problems.is_empty() {
        return coded;
    }
    coded.extend_with(move |_, extensions| {
        if let Some(field) = &field {
            extensions.set("field", field.clone());
        }
        if !problems.is_empty() {
            let list: Vec<async_graphql::Value> = problems
                .iter()
                .map(|(field, message, code)| {
                    let mut entry = async_graphql::indexmap::IndexMap::new();
                    entry.insert(
                        async_graphql::Name::new("field"),
                        field.clone().map_or(async_graphql::Value::Null, Into::into),
                    );
                    entry.insert(async_graphql::Name::new("message"), message.clone().into());
                    entry.insert(async_graphql::Name::new("code"), code.as_str().into());
                    async_graphql::Value::Object(entry)
                })
                .collect();
            extensions.set("problems", async_graphql::Value::List(list));
        }
    })
}

/// One input problem as a client marks it: the field, the message, the code.
type Problem = (Option<String>, String, Code);

/// The field an input error is about, and every problem of a refusal that lists several (the
/// `field` and `problems` extensions).
fn input_problems(error: &cmdb_core::Error) -> (Option<String>, Vec<Problem>) {
    use cmdb_core::release::ReleaseError;
    let ci = |e: &CiError| -> (Option<String>, Vec<Problem>) {
        match e {
            CiError::Invalid { problems } => {
                (None, problems.iter().map(|p| (p.field(), p.to_string(), ci_code(p))).collect())
            }
            other => (other.field(), Vec::new()),
        }
    };
    let change = |e: &ChangeError| -> (Option<String>, Vec<Problem>) {
        match e {
            ChangeError::Invalid { problems } => {
                (None, problems.iter().map(|p| (p.field(), p.to_string(), change_code(p))).collect())
            }
            other => (other.field(), Vec::new()),
        }
    };
    match error {
        cmdb_core::Error::Ci(e) | cmdb_core::Error::Release(ReleaseError::Ci(e)) => ci(e),
        cmdb_core::Error::Change(e) | cmdb_core::Error::Release(ReleaseError::Change(e)) => change(e),
        cmdb_core::Error::Discovery(e) => (e.field().map(str::to_owned), Vec::new()),
        _ => (None, Vec::new()),
    }
}

/// Maps a store error to a GraphQL error.
pub fn store_error(error: StoreError) -> async_graphql::Error {
    core_error(cmdb_core::Error::Store(error))
}

/// Maps the graph's errors to GraphQL errors.
pub fn graph_error(error: GraphError) -> async_graphql::Error {
    match error {
        GraphError::Depth(value) => limit_exceeded("max_depth", u64::from(value), u64::from(graph::MAX_DEPTH)),
        GraphError::Results(value) => limit_exceeded("max_results", value as u64, graph::MAX_RESULTS as u64),
        GraphError::Roots(count) if count > 0 => limit_exceeded("cis", count as u64, graph::MAX_IMPACT_ROOTS as u64),
        GraphError::SeverityChain { steps, .. } => {
            let bound = graph::MAX_SEVERITY_CHAIN_STEPS as u64;
            async_graphql::Error::new(error.to_string()).extend_with(move |_, e| {
                e.set("code", Code::LimitExceeded.as_str());
                e.set("limit", "severity_path_steps");
                e.set("value", steps as u64);
                e.set("bound", bound);
            })
        }
        GraphError::UnknownCi { .. } => coded(Code::NotFound, error.to_string()),
        GraphError::Apply { .. } => coded(Code::Internal, error.to_string()),
        GraphError::NotAService { .. }
        | GraphError::FromAfterTo { .. }
        | GraphError::PositionAhead { .. }
        | GraphError::Roots(_)
        | GraphError::Invalid(_) => bad_input(error.to_string()),
    }
}

/// The code of an application error.
pub fn app_code(error: &AppError) -> Code {
    match error {
        AppError::Core(core) => core_code(core),
        AppError::Graph(GraphError::Depth(_) | GraphError::Results(_) | GraphError::SeverityChain { .. }) => {
            Code::LimitExceeded
        }
        AppError::Graph(GraphError::UnknownCi { .. }) => Code::NotFound,
        AppError::Graph(GraphError::Apply { .. }) => Code::Internal,
        AppError::Graph(_) => Code::BadUserInput,
        AppError::UnknownChange(_) => Code::NotFound,
        AppError::NotYetApplied { .. } => Code::Unavailable,
        AppError::Gate(GateError::UnknownCi(_) | GateError::UnknownRelease(_) | GateError::UnknownChange(_)) => {
            Code::NotFound
        }
        AppError::Gate(GateError::AmbiguousCi(..) | GateError::NoPipeline) => Code::BadUserInput,
    }
}

/// Maps the application layer's errors to GraphQL errors.
pub fn app_error(error: AppError) -> async_graphql::Error {
    match error {
        AppError::Core(core) => core_error(core),
        AppError::Graph(graph) => graph_error(graph),
        AppError::UnknownChange(_) => coded(Code::NotFound, error.to_string()),
        AppError::Gate(_) => coded(app_code(&error), error.to_string()),
        AppError::NotYetApplied { .. } => coded(Code::Unavailable, error.to_string()),
    }
}
