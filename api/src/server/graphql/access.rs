//! Principals, roles and tokens over GraphQL (CM-4, IS-1): their views and the access mutations.

use super::context::{Requires, metadata, state};
use super::log::Written;
use super::scalars::{DateTime, Position};
use crate::server::AppState;
use crate::server::errors::{Code, app_error, bad_input, coded};
use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use cmdb_core::Timestamp;
use cmdb_core::access::{AccessCommand, Operation, PrincipalInfo, TokenInfo, token_hash, token_text};
use uuid::Uuid;

/// Roles, as GraphQL names them.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "cmdb_core::access::Role")]
pub enum Role {
    Viewer,
    Auditor,
    Editor,
    ChangeManager,
    Approver,
    EmergencyApprover,
    Deployer,
    Admin,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "cmdb_core::access::PrincipalKind")]
pub enum PrincipalKind {
    Person,
    System,
}

/// A token's metadata (never its text).
#[derive(SimpleObject)]
pub struct Token {
    pub token_id: ID,
    pub principal: String,
    pub label: Option<String>,
    pub issued_at: DateTime,
    pub expires_at: Option<DateTime>,
    pub revoked_at: Option<DateTime>,
    /// Neither revoked nor expired.
    pub live: bool,
}

impl Token {
    pub fn from_info(info: &TokenInfo, now: Timestamp) -> Token {
        Token {
            token_id: ID(info.token_id.to_string()),
            principal: info.principal.clone(),
            label: info.label.clone(),
            issued_at: DateTime(info.issued_at),
            expires_at: info.expires_at.map(DateTime),
            revoked_at: info.revoked_at.map(DateTime),
            live: info.is_live(now),
        }
    }
}

#[derive(SimpleObject)]
pub struct Principal {
    pub name: String,
    pub kind: PrincipalKind,
    pub display_name: Option<String>,
    pub roles: Vec<Role>,
    pub created_at: DateTime,
    pub tokens: Vec<Token>,
}

impl Principal {
    pub fn from_info(
        info: &PrincipalInfo,
        tokens: &std::collections::BTreeMap<uuid::Uuid, TokenInfo>,
        now: Timestamp,
    ) -> Principal {
        Principal {
            name: info.name.clone(),
            kind: info.kind.into(),
            display_name: info.display_name.clone(),
            roles: info.roles.iter().copied().map(Role::from).collect(),
            created_at: DateTime(info.created_at),
            tokens: info.tokens.iter().filter_map(|id| tokens.get(id)).map(|t| Token::from_info(t, now)).collect(),
        }
    }
}

/// The caller.
#[derive(SimpleObject)]
pub struct Me {
    pub principal: String,
    pub kind: PrincipalKind,
    pub roles: Vec<Role>,
    pub token_id: ID,
}

#[derive(SimpleObject)]
pub struct PrincipalChange {
    pub principal: Principal,
    pub position: Position,
}

/// A new token. `token` is shown only here, once.
#[derive(SimpleObject)]
pub struct CreatedToken {
    pub token: String,
    pub token_id: ID,
    pub principal: String,
    pub expires_at: Option<DateTime>,
    pub position: Position,
}

#[derive(Default)]
pub struct AccessMutation;

#[derive(InputObject)]
pub struct CreatePrincipalInput {
    /// Lowercase letters, digits and . _ - @; at most 64 characters.
    pub name: String,
    pub kind: PrincipalKind,
    pub display_name: Option<String>,
    #[graphql(default)]
    pub roles: Vec<Role>,
}

/// Runs an access command and waits until the server's own view has applied it, so the next
/// request (on any connection) sees the change: a revoked token is refused from then on.
async fn run(app: &AppState, command: AccessCommand, metadata: cmdb_core::Metadata) -> async_graphql::Result<u64> {
    let written = app.app.access(&command, metadata).await.map_err(app_error)?;
    Ok(written.last_position)
}

fn principal_change(app: &AppState, name: &str, position: u64) -> async_graphql::Result<PrincipalChange> {
    let state = app.access.snapshot();
    let info = state.principals.get(name).ok_or_else(|| coded(Code::Internal, "the principal vanished"))?;
    Ok(PrincipalChange {
        principal: Principal::from_info(info, &state.tokens, app.clock.now()),
        position: Position(position),
    })
}

fn parse_token_id(token_id: &ID) -> async_graphql::Result<Uuid> {
    Uuid::parse_str(token_id.as_str())
        .map_err(|_| bad_input(format!("tokenId {:?} is not a token id (a UUID)", token_id.as_str())))
}

#[Object]
impl AccessMutation {
    /// Creates a principal (a person or a system such as a pipeline) with roles.
    #[graphql(guard = "Requires(Operation::ManagePrincipals)")]
    async fn create_principal(
        &self,
        ctx: &Context<'_>,
        input: CreatePrincipalInput,
    ) -> async_graphql::Result<PrincipalChange> {
        let app = state(ctx);
        let command = AccessCommand::CreatePrincipal {
            name: input.name.clone(),
            kind: input.kind.into(),
            display_name: input.display_name,
            roles: input.roles.into_iter().map(Into::into).collect(),
        };
        let position = run(app, command, metadata(ctx)?).await?;
        principal_change(app, &input.name, position)
    }

    #[graphql(guard = "Requires(Operation::ManagePrincipals)")]
    async fn grant_role(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {principal, role}")] principal: Option<String>,
        #[graphql(deprecation = "pass input: {principal, role}")] role: Option<Role>,
        input: Option<GrantRoleInput>,
    ) -> async_graphql::Result<PrincipalChange> {
        let any_loose = principal.is_some() || role.is_some();
        let loose = principal.zip(role).map(|(principal, role)| GrantRoleInput { principal, role });
        let GrantRoleInput { principal, role } = super::inputs::input_or(input, loose, any_loose, "{principal, role}")?;
        let app = state(ctx);
        let position =
            run(app, AccessCommand::GrantRole { name: principal.clone(), role: role.into() }, metadata(ctx)?).await?;
        principal_change(app, &principal, position)
    }

    #[graphql(guard = "Requires(Operation::ManagePrincipals)")]
    async fn revoke_role(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {principal, role}")] principal: Option<String>,
        #[graphql(deprecation = "pass input: {principal, role}")] role: Option<Role>,
        input: Option<RevokeRoleInput>,
    ) -> async_graphql::Result<PrincipalChange> {
        let any_loose = principal.is_some() || role.is_some();
        let loose = principal.zip(role).map(|(principal, role)| RevokeRoleInput { principal, role });
        let RevokeRoleInput { principal, role } =
            super::inputs::input_or(input, loose, any_loose, "{principal, role}")?;
        let app = state(ctx);
        let position =
            run(app, AccessCommand::RevokeRole { name: principal.clone(), role: role.into() }, metadata(ctx)?).await?;
        principal_change(app, &principal, position)
    }

    /// Issues a token for a principal. The token text is in the answer and nowhere else.
    #[graphql(guard = "Requires(Operation::ManageTokens)")]
    async fn create_token(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {principal, label, expiresAt}")] principal: Option<String>,
        #[graphql(deprecation = "pass input: {principal, label, expiresAt}")] label: Option<String>,
        #[graphql(deprecation = "pass input: {principal, label, expiresAt}")] expires_at: Option<DateTime>,
        input: Option<CreateTokenInput>,
    ) -> async_graphql::Result<CreatedToken> {
        let any_loose = principal.is_some() || label.is_some() || expires_at.is_some();
        let loose = principal.map(|principal| CreateTokenInput { principal, label, expires_at });
        let CreateTokenInput { principal, label, expires_at } =
            super::inputs::input_or(input, loose, any_loose, "{principal, label, expiresAt}")?;
        let app = state(ctx);
        let token = new_token_text();
        let token_id = app.ids.next_id();
        let command = AccessCommand::IssueToken {
            principal: principal.clone(),
            token_id,
            token_hash: token_hash(&token),
            label,
            expires_at: expires_at.map(|d| d.0),
        };
        let position = run(app, command, metadata(ctx)?).await?;
        Ok(CreatedToken {
            token,
            token_id: ID(token_id.to_string()),
            principal,
            expires_at,
            position: Position(position),
        })
    }

    /// Revokes a token. In force for every request once this returns.
    #[graphql(guard = "Requires(Operation::ManageTokens)")]
    async fn revoke_token(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {tokenId, reason}")] token_id: Option<ID>,
        #[graphql(deprecation = "pass input: {tokenId, reason}")] reason: Option<String>,
        input: Option<RevokeTokenInput>,
    ) -> async_graphql::Result<Written> {
        let any_loose = token_id.is_some() || reason.is_some();
        let loose = token_id.map(|token_id| RevokeTokenInput { token_id, reason });
        let RevokeTokenInput { token_id, reason } =
            super::inputs::input_or(input, loose, any_loose, "{tokenId, reason}")?;
        let app = state(ctx);
        let token_id = parse_token_id(&token_id)?;
        let position = run(app, AccessCommand::RevokeToken { token_id, reason }, metadata(ctx)?).await?;
        Ok(Written { position: Position(position) })
    }
}

/// 32 bytes from the operating system's generator, as a `cmdb_...` token.
pub fn new_token_text() -> String {
    let mut secret = [0u8; 32];
    rand::fill(&mut secret);
    token_text(&secret)
}

/// `grantRole(input:)`.
#[derive(async_graphql::InputObject)]
pub struct GrantRoleInput {
    principal: String,
    role: Role,
}

/// `revokeRole(input:)`.
#[derive(async_graphql::InputObject)]
pub struct RevokeRoleInput {
    principal: String,
    role: Role,
}

/// `createToken(input:)`.
#[derive(async_graphql::InputObject)]
pub struct CreateTokenInput {
    principal: String,
    label: Option<String>,
    expires_at: Option<DateTime>,
}

/// `revokeToken(input:)`.
#[derive(async_graphql::InputObject)]
pub struct RevokeTokenInput {
    token_id: ID,
    reason: Option<String>,
}
