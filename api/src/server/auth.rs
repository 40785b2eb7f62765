//! Who is calling: a bearer token resolved against the access view to a principal and its
//! roles. Tokens are compared by their blake3 hash; the text is never stored.

use std::collections::BTreeSet;

use cmdb_core::Timestamp;
use cmdb_core::access::{PrincipalKind, Role, token_hash};
use uuid::Uuid;

use crate::app::access_view::AccessView;

/// The authenticated caller of one request or WebSocket connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The principal.
    pub principal: String,
    /// What kind.
    pub kind: PrincipalKind,
    /// The token.
    pub token_id: Uuid,
    /// Its roles.
    pub roles: BTreeSet<Role>,
}

impl Caller {
    /// The metadata every event written on this caller's behalf carries (API source, its
    /// principal and token, the request's correlation id).
    pub fn metadata(&self, correlation_id: Option<String>) -> cmdb_core::Metadata {
        let actor =
            cmdb_core::Actor { principal: self.principal.as_str().into(), token_id: Some(self.token_id.to_string()) };
        let mut metadata = cmdb_core::Metadata::new(actor, cmdb_core::Source::Api);
        metadata.correlation_id = correlation_id.map(cmdb_core::Text::from);
        metadata
    }
}

/// Why a request was not authenticated. The messages are shown to the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message says what its fields are")]
pub enum AuthError {
    #[error("missing bearer token: send the header `Authorization: Bearer <token>`")]
    /// Missing bearer token: send the header `Authorization: Bearer <token>`.
    Missing,
    #[error("the Authorization header must be `Bearer <token>`")]
    /// The Authorization header must be `Bearer <token>`.
    NotBearer,
    #[error("the bearer token is not a cmdb token (expected cmdb_ followed by 64 hex digits)")]
    /// The bearer token is not a cmdb token (expected cmdb_ followed by 64 hex digits).
    Malformed,
    #[error("the bearer token is not known")]
    /// The bearer token is not known.
    Unknown,
    #[error("the bearer token was revoked")]
    /// The bearer token was revoked.
    Revoked,
    #[error("the bearer token expired at {0}")]
    /// The bearer token expired at ….
    Expired(Timestamp),
}

/// The token inside an `Authorization` value (`Bearer <token>`, scheme case-insensitive).
pub fn bearer_token(header: &str) -> Result<&str, AuthError> {
    let (scheme, token) = header.trim().split_once(' ').ok_or(AuthError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::NotBearer);
    }
    Ok(token.trim())
}

/// Resolves a token to its caller, at `now`.
pub fn authenticate(view: &AccessView, token: &str, now: Timestamp) -> Result<Caller, AuthError> {
    let well_formed =
        token.len() == 69 && token.starts_with("cmdb_") && token[5..].bytes().all(|b| b.is_ascii_hexdigit());
    if !well_formed {
        return Err(AuthError::Malformed);
    }
    let state = view.snapshot();
    let info = state.token_by_hash(&token_hash(token)).ok_or(AuthError::Unknown)?;
    if info.revoked_at.is_some() {
        return Err(AuthError::Revoked);
    }
    if let Some(at) = info.expires_at
        && at <= now
    {
        return Err(AuthError::Expired(at));
    }
    let principal = state.principals.get(&info.principal).ok_or(AuthError::Unknown)?;
    Ok(Caller {
        principal: principal.name.clone(),
        kind: principal.kind,
        token_id: info.token_id,
        roles: principal.roles.clone(),
    })
}

/// Resolves an `Authorization` header value.
pub fn authenticate_header(view: &AccessView, header: Option<&str>, now: Timestamp) -> Result<Caller, AuthError> {
    let header = header.ok_or(AuthError::Missing)?;
    authenticate(view, bearer_token(header)?, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_taken_from_the_header() {
        assert_eq!(bearer_token("Bearer abc"), Ok("abc"));
        assert_eq!(bearer_token("bearer  abc "), Ok("abc"));
        assert_eq!(bearer_token("Basic abc"), Err(AuthError::NotBearer));
        assert_eq!(bearer_token("abc"), Err(AuthError::NotBearer));
    }
}
