//! `GET /api/v1/checkpoint`: the newest signed checkpoint as the C2SP formats say it is served
//! (`text/plain; charset=utf-8`, the signed note's bytes), for witnesses, monitors and scripts
//! that keep checkpoints outside the engine. `?size=N` answers the checkpoint of exactly that
//! tree size instead. Any token that may read the log.

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use cmdb_core::access::{Operation, permits};
use serde::Deserialize;

use super::errors::{ApiError, Code};
use super::{Authenticated, ServerState};

/// The query string.
#[derive(Deserialize)]
pub struct CheckpointQuery {
    size: Option<String>,
}

/// `GET /api/v1/checkpoint`.
pub async fn checkpoint(
    State(state): State<ServerState>,
    Authenticated(caller): Authenticated,
    Query(query): Query<CheckpointQuery>,
) -> Result<Response, ApiError> {
    if !permits(&caller.roles, Operation::ReadLog) {
        return Err(ApiError::Forbidden(Operation::ReadLog));
    }
    let size =
        match &query.size {
            None => None,
            Some(text) => Some(text.trim().parse::<u64>().map_err(|_| {
                ApiError::BadRequest(format!("size: {text:?} is not a tree size (a whole number >= 1)"))
            })?),
        };
    let log = state.app.evidence.log.read();
    let found = match size {
        None => log.latest_checkpoint(),
        Some(size) => log.checkpoint_of_size(size),
    };
    let Some(found) = found else {
        let message = match size {
            None => "no checkpoint has been signed yet (the server signs with --signing-key)".to_owned(),
            Some(size) => format!("no checkpoint of tree size {size} was signed"),
        };
        return Err(ApiError::Domain { code: Code::NotFound, message });
    };
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], found.signed.note.clone()).into_response())
}
