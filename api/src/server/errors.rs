//! The one place where errors become responses: HTTP errors as JSON with a status, and domain
//! and store errors as GraphQL errors with a machine-readable `code` extension.

use async_graphql::ErrorExtensions;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cmdb_core::access::{AccessError, Operation};
use cmdb_core::baseline::BaselineError;
use cmdb_core::change::ChangeError;
use cmdb_core::ci::CiError;
use cmdb_core::policy::PolicyError;
use cmdb_core::store::StoreError;

use crate::server::auth::AuthError;

/// An HTTP-level refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(#[from] AuthError),
    #[error("forbidden: this principal's roles do not allow {0}")]
    Forbidden(Operation),
    #[error("the request body is larger than max_request_body_bytes ({bound} bytes)")]
    PayloadTooLarge { bound: usize },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
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
        }
    }
}

/// The JSON body of every HTTP error.
pub fn error_body(code: &str, message: &str) -> String {
    serde_json::json!({ "error": { "code": code, "message": message } }).to_string()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let mut response =
            (self.status(), [(header::CONTENT_TYPE, "application/json")], error_body(self.code(), &message))
                .into_response();
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

/// A GraphQL error with a `code` extension.
pub fn graphql_error(code: &str, message: impl Into<String>) -> async_graphql::Error {
    let code = code.to_owned();
    async_graphql::Error::new(message).extend_with(move |_, extensions| extensions.set("code", code.clone()))
}

pub fn forbidden(operation: Operation) -> async_graphql::Error {
    graphql_error("FORBIDDEN", ApiError::Forbidden(operation).to_string())
}

pub fn bad_input(message: impl Into<String>) -> async_graphql::Error {
    graphql_error("BAD_USER_INPUT", message)
}

/// A limit refused: names the limit, the value and the bound.
pub fn limit_exceeded(limit: &str, value: u64, bound: u64) -> async_graphql::Error {
    let limit_name = limit.to_owned();
    async_graphql::Error::new(format!("limit exceeded: {limit} is {bound}, got {value}")).extend_with(move |_, e| {
        e.set("code", "LIMIT_EXCEEDED");
        e.set("limit", limit_name.clone());
        e.set("value", value);
        e.set("bound", bound);
    })
}

/// Maps the core's errors to GraphQL errors.
pub fn core_error(error: cmdb_core::Error) -> async_graphql::Error {
    use cmdb_core::Error;
    let message = error.to_string();
    let code = match &error {
        Error::Store(store) => match store {
            StoreError::VersionConflict { .. } => "CONFLICT",
            StoreError::LimitExceeded { limit, value, bound } => {
                return limit_exceeded(&limit.to_string(), *value, *bound);
            }
            StoreError::InvalidInput(_) | StoreError::DuplicateEventId(_) => "BAD_USER_INPUT",
            StoreError::StorageFull(_) | StoreError::WriterStopped(_) | StoreError::Closed => "UNAVAILABLE",
            StoreError::Storage(_) | StoreError::Corruption { .. } | StoreError::Open { .. } => "INTERNAL",
        },
        Error::Access(access) => match access {
            AccessError::UnknownPrincipal(_) | AccessError::UnknownToken(_) => "NOT_FOUND",
            AccessError::PrincipalExists(_) | AccessError::TokenExists(_) => "ALREADY_EXISTS",
            AccessError::LastAdmin(_)
            | AccessError::TokenAlreadyRevoked(_)
            | AccessError::RoleAlreadyGranted { .. }
            | AccessError::RoleNotGranted { .. } => "FAILED_PRECONDITION",
            AccessError::TooManyTokens { .. } | AccessError::TooManyPrincipals => "LIMIT_EXCEEDED",
            AccessError::Undecodable { .. } => "INTERNAL",
            _ => "BAD_USER_INPUT",
        },
        Error::Envelope(_) => "BAD_USER_INPUT",
        Error::Baseline(baseline) => match baseline {
            BaselineError::Unknown(_) => "NOT_FOUND",
            BaselineError::Exists(_) => "ALREADY_EXISTS",
            BaselineError::Undecodable { .. } => "INTERNAL",
            _ => "BAD_USER_INPUT",
        },
        Error::Ci(ci) => match ci {
            CiError::UnknownCi(_) | CiError::UnknownRelationship(_) => "NOT_FOUND",
            CiError::NameTaken { .. }
            | CiError::CiExists(_)
            | CiError::RelationshipExists(_)
            | CiError::DuplicateRelationship { .. } => "ALREADY_EXISTS",
            CiError::CiWithdrawn(_)
            | CiError::TransitionNotAllowed { .. }
            | CiError::RelationshipRemoved(_)
            | CiError::NothingToChange
            | CiError::ReferenceWithdrawn { .. } => "FAILED_PRECONDITION",
            CiError::TooManyRelationships { .. } | CiError::TooManyAttributes { .. } => "LIMIT_EXCEEDED",
            // CM-3: a machine-readable code for "this edit needs a change".
            CiError::Unauthorized { .. } => "CHANGE_REQUIRED",
            CiError::UnknownChange(_) => "NOT_FOUND",
            CiError::ChangeNotImplementing { .. } | CiError::NotInScope { .. } | CiError::NotPlanned { .. } => {
                "FAILED_PRECONDITION"
            }
            CiError::Undecodable { .. } => "INTERNAL",
            _ => "BAD_USER_INPUT",
        },
        Error::Change(change) => match change {
            ChangeError::UnknownChange(_) | ChangeError::UnknownTemplate(_) => "NOT_FOUND",
            ChangeError::ChangeExists(_) | ChangeError::TemplateExists(_) => "ALREADY_EXISTS",
            ChangeError::NotPermitted { .. } | ChangeError::NotRequester { .. } => "FORBIDDEN",
            ChangeError::SegregationOfDuties { .. }
            | ChangeError::AlreadyDecided { .. }
            | ChangeError::NotImplementer { .. } => "SEGREGATION_OF_DUTIES",
            ChangeError::TransitionNotAllowed { .. }
            | ChangeError::NotEditable { .. }
            | ChangeError::TemplateRetired(_)
            | ChangeError::NotYetApproved { .. } => "FAILED_PRECONDITION",
            ChangeError::ScopeTooLarge { .. }
            | ChangeError::TooMany { .. }
            | ChangeError::TooManyAssessments { .. } => "LIMIT_EXCEEDED",
            ChangeError::NotReassessable { .. }
            | ChangeError::NotAssessed { .. }
            | ChangeError::NotReschedulable { .. }
            | ChangeError::FreezeAlreadyLifted(_) => "FAILED_PRECONDITION",
            // CH-5: a freeze window covers the scope; a conflict is not acknowledged.
            ChangeError::Frozen { .. } => "FREEZE_WINDOW",
            ChangeError::Conflicting { .. } => "CHANGE_CONFLICT",
            ChangeError::UnknownFreeze(_) => "NOT_FOUND",
            // CH-4: the approval policy says no, with its reasons.
            ChangeError::PolicyDenied { .. } => "POLICY_DENIED",
            // The policy in force failed on this input: an operator must fix the policy.
            ChangeError::Policy(_) => "POLICY_FAILED",
            ChangeError::Undecodable { .. } => "INTERNAL",
            _ => "BAD_USER_INPUT",
        },
        Error::Policy(policy) => match policy {
            PolicyError::NotPermitted { .. } => "FORBIDDEN",
            PolicyError::Unchanged(_) => "FAILED_PRECONDITION",
            PolicyError::UnknownVersion(_) => "NOT_FOUND",
            PolicyError::TooLarge { .. } => "LIMIT_EXCEEDED",
            PolicyError::Undecodable { .. } => "INTERNAL",
            _ => "BAD_USER_INPUT",
        },
        Error::Contended { .. } => "CONFLICT",
    };
    if code == "INTERNAL" {
        tracing::error!(%message, "internal error in a GraphQL operation");
    }
    graphql_error(code, message)
}

pub fn store_error(error: StoreError) -> async_graphql::Error {
    core_error(cmdb_core::Error::Store(error))
}
