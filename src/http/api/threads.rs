use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{json_bytes, page_size, page_start};
use crate::app::AppState;
use crate::conversations::StatusFilter;
use crate::domain::{History, NewThread, Rejection, ThreadView, check_text};
use crate::http::error::{ApiError, ErrorCode, Problem};
use crate::http::extract::{AppJson, AppQuery, PathId};

const MAX_SEARCH_CHARS: usize = 200;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListThreadsParams {
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[0-9]{1,16}_[0-9a-f]{32}$")]
    cursor: Option<String>,
    /// Case-insensitive substring of the title, at most 200 characters, without NUL.
    #[param(max_length = 200, pattern = "^[^\\u0000]*$")]
    q: Option<String>,
    /// `active`, `expired` or `all` (default).
    status: Option<StatusFilter>,
    /// Only the thread with exactly this `continuation_id`, as EX-AI wrote it (an adopted
    /// conversation whose `continuation_id` is not a lower-case UUID has its row id as
    /// thread id). At most 200 characters, without NUL.
    #[param(max_length = 200, pattern = "^[^\\u0000]*$")]
    continuation_id: Option<String>,
}

/// A page of threads, newest activity first.
#[derive(Serialize, ToSchema)]
pub struct ThreadPage<'a> {
    data: Vec<ThreadView<'a>>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(pattern = "^[0-9]{1,16}_[0-9a-f]{32}$")]
    next_cursor: Option<String>,
}

fn thread_not_found(id: Uuid) -> ApiError {
    Rejection::ThreadNotFound(id).into()
}

/// Starts a thread. Its `id` is the `continuation_id` to pass around.
#[utoipa::path(post, path = "/v1/threads", tag = "threads", request_body = NewThread,
    responses(
        (status = CREATED, body = ThreadView, description = "The new thread, with `turns: []`",
            headers(("location" = String, description = "URL of the thread"))),
        (status = UNPROCESSABLE_ENTITY, body = Problem, content_type = "application/problem+json",
            description = "`validation_failed`, also for a `parent_id` that names no thread"),
    ))]
pub async fn create_thread(
    State(state): State<AppState>,
    AppJson(new): AppJson<NewThread>,
) -> Result<Response, ApiError> {
    let (id, body) = state.conversations.create_thread(new).await?;
    let mut response = json_bytes(StatusCode::CREATED, body);
    let location = format!("/v1/threads/{id}").parse().expect("a path is a valid header value");
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

/// Lists threads by most recent activity, with keyset paging.
#[utoipa::path(get, path = "/v1/threads", tag = "threads", params(ListThreadsParams),
    responses(
        (status = OK, body = ThreadPage),
        (status = UNPROCESSABLE_ENTITY, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_threads(
    State(state): State<AppState>,
    AppQuery(params): AppQuery<ListThreadsParams>,
) -> Result<Response, ApiError> {
    let limit = page_size(params.limit)?;
    let after = page_start(params.cursor.as_deref())?;
    for (name, text) in [("q", &params.q), ("continuation_id", &params.continuation_id)] {
        if let Some(text) = text {
            check_search_text(name, text)?;
        }
    }
    let search = params.q.filter(|q| !q.is_empty());
    let conversations = &state.conversations;
    let status = params.status.unwrap_or_default();
    let list = conversations.list_threads(limit, after, search, status, params.continuation_id).await?;
    let policy = conversations.policy();
    let data = list.threads.iter().map(|t| t.view(None, policy, list.now)).collect();
    Ok(Json(ThreadPage { data, next_cursor: list.next_cursor }).into_response())
}

/// A search text: at most [`MAX_SEARCH_CHARS`] characters, without NUL.
fn check_search_text(name: &'static str, text: &str) -> Result<(), ApiError> {
    if text.chars().count() > MAX_SEARCH_CHARS {
        return Err(ApiError::new(
            ErrorCode::ValidationFailed,
            format!("{name}: must be at most {MAX_SEARCH_CHARS} characters"),
        ));
    }
    check_text(name, text)?;
    Ok(())
}

/// Reads a thread with all of its turns.
#[utoipa::path(get, path = "/v1/threads/{id}", tag = "threads",
    params(("id" = Uuid, Path, description = "Thread id (continuation_id)")),
    responses(
        (status = OK, body = ThreadView),
        (status = NOT_FOUND, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_thread(State(state): State<AppState>, PathId(id): PathId) -> Result<Response, ApiError> {
    let body = state.conversations.get_thread(id).await?.ok_or_else(|| thread_not_found(id))?;
    Ok(json_bytes(StatusCode::OK, body))
}

/// Deletes a thread and its turns.
#[utoipa::path(delete, path = "/v1/threads/{id}", tag = "threads",
    params(("id" = Uuid, Path, description = "Thread id (continuation_id)")),
    responses(
        (status = NO_CONTENT, description = "Deleted"),
        (status = NOT_FOUND, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_thread(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    if state.conversations.delete_thread(id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(thread_not_found(id))
    }
}

/// The conversation a thread continues: its chain along `parent_id` (up to 20 links)
/// and its newest turns, oldest first, as many as fit in 2 MiB of content, files and
/// metadata (`omitted_turns` says how many older ones were left out), with the files
/// they mention. The document is streamed turn by turn.
#[utoipa::path(get, path = "/v1/threads/{id}/history", tag = "threads",
    params(("id" = Uuid, Path, description = "Thread id (continuation_id)")),
    responses(
        (status = OK, body = History),
        (status = NOT_FOUND, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_history(State(state): State<AppState>, PathId(id): PathId) -> Result<Response, ApiError> {
    let history = state.conversations.history(id).await?.ok_or_else(|| thread_not_found(id))?;
    let chunks = history.into_json_chunks().map(|chunk| Ok::<_, Infallible>(Bytes::from(chunk)));
    let body = Body::from_stream(futures_util::stream::iter(chunks));
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}
