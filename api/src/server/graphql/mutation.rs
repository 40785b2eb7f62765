use std::time::Duration;

use async_graphql::{Context, ID, InputObject, Object};
use cmdb_core::access::{self, AccessCommand, Operation, token_hash, token_text};
use uuid::Uuid;

use super::scalars::{DateTime, Position};
use super::types::{CreatedToken, Principal, PrincipalChange, PrincipalKind, Role, Written};
use super::{Requires, app, metadata};
use crate::server::AppState;
use crate::server::errors::{bad_input, core_error, graphql_error};

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
    // One access command at a time in this process: they all write the one access stream, and
    // queueing here is cheaper than re-deciding after conflicts. Other processes (the CLI)
    // still race, and lose at most a retry.
    let _turn = app.access_commands.lock().await;
    let outcome =
        access::execute(app.store.as_ref(), &command, metadata, app.clock.as_ref()).await.map_err(core_error)?;
    let applied =
        app.access.wait_for(outcome.last_position, Duration::from_millis(app.settings.min_position_wait_ms)).await;
    if !applied {
        return Err(graphql_error(
            "UNAVAILABLE",
            format!(
                "the change is durable at position {} but the server has not applied it yet",
                outcome.last_position
            ),
        ));
    }
    Ok(outcome.last_position)
}

fn principal_change(app: &AppState, name: &str, position: u64) -> async_graphql::Result<PrincipalChange> {
    let state = app.access.snapshot();
    let info = state.principals.get(name).ok_or_else(|| graphql_error("INTERNAL", "the principal vanished"))?;
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
        let app = app(ctx);
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
        principal: String,
        role: Role,
    ) -> async_graphql::Result<PrincipalChange> {
        let app = app(ctx);
        let position =
            run(app, AccessCommand::GrantRole { name: principal.clone(), role: role.into() }, metadata(ctx)?).await?;
        principal_change(app, &principal, position)
    }

    #[graphql(guard = "Requires(Operation::ManagePrincipals)")]
    async fn revoke_role(
        &self,
        ctx: &Context<'_>,
        principal: String,
        role: Role,
    ) -> async_graphql::Result<PrincipalChange> {
        let app = app(ctx);
        let position =
            run(app, AccessCommand::RevokeRole { name: principal.clone(), role: role.into() }, metadata(ctx)?).await?;
        principal_change(app, &principal, position)
    }

    /// Issues a token for a principal. The token text is in the answer and nowhere else.
    #[graphql(guard = "Requires(Operation::ManageTokens)")]
    async fn create_token(
        &self,
        ctx: &Context<'_>,
        principal: String,
        label: Option<String>,
        expires_at: Option<DateTime>,
    ) -> async_graphql::Result<CreatedToken> {
        let app = app(ctx);
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
        token_id: ID,
        reason: Option<String>,
    ) -> async_graphql::Result<Written> {
        let app = app(ctx);
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
