use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::page_size;
use crate::app::AppState;
use crate::domain::{NewTurn, Rejection, Turn, check_client_idempotency_key};
use crate::http::error::{ApiError, ErrorCode, Problem};
use crate::http::extract::{AppJson, AppQuery, PathId};

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const X_TURNS_REMAINING: HeaderName = HeaderName::from_static("x-turns-remaining");

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListTurnsParams {
    /// Only turns with a greater `seq` (default 0: from the start).
    #[param(format = Int64, minimum = 0, maximum = 4294967295_u64)]
    after_seq: Option<u32>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
}

/// A page of turns in `seq` order.
#[derive(Serialize, ToSchema)]
pub struct TurnPage {
    data: Vec<Turn>,
    /// Pass as `after_seq` for the next page; `null` on the last page.
    next_cursor: Option<u32>,
}

/// Appends a turn. With an `Idempotency-Key` already used on this thread for the same
/// body, returns the original turn with 200 and changes nothing; for another body, 422
/// `idempotency_key_reused`.
#[utoipa::path(post, path = "/v1/threads/{id}/turns", tag = "turns", request_body = NewTurn,
    params(
        ("id" = Uuid, Path, description = "Thread id (continuation_id)"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255,
            pattern = "^[\\x21-\\x7E]([\\x20-\\x7E]{0,253}[\\x21-\\x7E])?$",
            description = "Makes retries safe: 1 to 255 printable ASCII characters; HTTP drops \
                spaces at either end. Keys starting with `run:` are reserved for the turns of \
                tool runs (422)."),
    ),
    responses(
        (status = CREATED, body = Turn,
            headers(("x-turns-remaining" = u32, description = "Turns the thread can still take"))),
        (status = OK, body = Turn, description = "Replay of an earlier append with the same key",
            headers(("x-turns-remaining" = u32, description = "Turns the thread can still take"))),
        (status = NOT_FOUND, body = Problem, content_type = "application/problem+json"),
        (status = CONFLICT, body = Problem, content_type = "application/problem+json",
            description = "`turn_limit_reached`"),
        (status = GONE, body = Problem, content_type = "application/problem+json",
            description = "`thread_expired`: start a new thread with `parent_id` set"),
        (status = UNPROCESSABLE_ENTITY, body = Problem, content_type = "application/problem+json",
            description = "`validation_failed`, or `idempotency_key_reused`: the key was used \
                on this thread for a different body"),
    ))]
pub async fn append_turn(
    State(state): State<AppState>,
    PathId(id): PathId,
    headers: HeaderMap,
    AppJson(turn): AppJson<NewTurn>,
) -> Result<Response, ApiError> {
    let key = headers
        .get(IDEMPOTENCY_KEY)
        .map(|value| {
            value.to_str().map(str::to_owned).map_err(|_| {
                ApiError::new(ErrorCode::ValidationFailed, "Idempotency-Key: must be printable ASCII")
            })
        })
        .transpose()?;
    if let Some(key) = &key {
        check_client_idempotency_key(key)?;
    }
    let appended = state.conversations.append_turns(id, vec![turn], key).await?;
    let status = if appended.replayed { StatusCode::OK } else { StatusCode::CREATED };
    let turn = appended
        .turns
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::internal("the store returned no turn for an append"))?;
    Ok((status, [(X_TURNS_REMAINING, appended.turns_remaining.to_string())], Json(turn)).into_response())
}

/// Lists a thread's turns in `seq` order.
#[utoipa::path(get, path = "/v1/threads/{id}/turns", tag = "turns",
    params(("id" = Uuid, Path, description = "Thread id (continuation_id)"), ListTurnsParams),
    responses(
        (status = OK, body = TurnPage),
        (status = NOT_FOUND, body = Problem, content_type = "application/problem+json"),
        (status = UNPROCESSABLE_ENTITY, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_turns(
    State(state): State<AppState>,
    PathId(id): PathId,
    AppQuery(params): AppQuery<ListTurnsParams>,
) -> Result<Json<TurnPage>, ApiError> {
    let limit = page_size(params.limit)?;
    let (data, next_cursor) = state
        .conversations
        .list_turns(id, params.after_seq.unwrap_or(0), limit)
        .await?
        .ok_or(Rejection::ThreadNotFound(id))?;
    Ok(Json(TurnPage { data, next_cursor }))
}
