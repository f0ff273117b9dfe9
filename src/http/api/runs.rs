use axum::Json;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::convert::Infallible;
use tokio::sync::broadcast::error::RecvError;
use utoipa::{IntoParams, ToSchema};

use super::{page_size, page_start};
use crate::app::AppState;
use crate::domain::{RunStatus, RunView, ToolRun, check_tool_name};
use crate::http::error::{ApiError, Problem};
use crate::http::extract::{AppQuery, PathId};
use crate::store::RunQuery;
use crate::tools::{RunEvent, Subscription};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListRunsParams {
    /// Only runs of this tool.
    #[param(pattern = "^[a-z0-9_-]{1,64}$")]
    tool: Option<String>,
    /// Only runs in this state.
    status: Option<RunStatus>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[0-9]{1,16}_[0-9a-f]{32}$")]
    cursor: Option<String>,
}

/// A page of runs, newest first.
#[derive(Serialize, ToSchema)]
pub struct RunPage<'a> {
    data: Vec<RunView<'a>>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(pattern = "^[0-9]{1,16}_[0-9a-f]{32}$")]
    next_cursor: Option<String>,
}

/// Lists runs, newest first.
#[utoipa::path(get, path = "/v1/runs", tag = "runs", params(ListRunsParams),
    responses(
        (status = OK, body = RunPage),
        (status = UNPROCESSABLE_ENTITY, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_runs(
    State(state): State<AppState>,
    AppQuery(params): AppQuery<ListRunsParams>,
) -> Result<Response, ApiError> {
    let limit = page_size(params.limit)?;
    let after = page_start(params.cursor.as_deref())?;
    if let Some(tool) = &params.tool {
        check_tool_name("tool", tool)?;
    }
    let query = RunQuery { limit, after, tool: params.tool, status: params.status };
    let runs = state.executor.list(&query).await?;
    let data = runs.items.iter().map(ToolRun::view).collect();
    Ok(Json(RunPage { data, next_cursor: runs.next.map(|next| next.encode()) }).into_response())
}

/// Reads a run.
#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs",
    params(("id" = Uuid, Path, description = "Run id")),
    responses(
        (status = OK, body = RunView),
        (status = NOT_FOUND, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_run(State(state): State<AppState>, PathId(id): PathId) -> Result<Response, ApiError> {
    let run = state.executor.get(id).await?;
    Ok(Json(run.view()).into_response())
}

/// Stops a run; the upstream connection is closed at once. Answers with the run as it
/// ended (usually `cancelled`, or whatever it reached first).
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs",
    params(("id" = Uuid, Path, description = "Run id")),
    responses(
        (status = OK, body = RunView),
        (status = NOT_FOUND, body = Problem, content_type = "application/problem+json"),
        (status = CONFLICT, body = Problem, content_type = "application/problem+json",
            description = "`run_finished`: the run had already ended"),
    ))]
pub async fn cancel_run(State(state): State<AppState>, PathId(id): PathId) -> Result<Response, ApiError> {
    let run = state.executor.cancel(id).await?;
    Ok(Json(run.view()).into_response())
}

/// One server-sent event of a run, as an event-stream parser reads it.
#[derive(ToSchema)]
#[expect(dead_code, reason = "describes the events `run_events` sends")]
struct RunEventFrame {
    /// `progress`, `delta`, or how the run ended.
    #[schema(pattern = "^(progress|delta|completed|failed|timed_out|cancelled)$")]
    event: String,
    /// JSON: `{elapsed_ms, message}`, `{text}`, or the run.
    #[schema(content_media_type = "application/json")]
    data: String,
}

/// The final event, named after how the run ended, carrying the run.
fn finished(run: &ToolRun) -> Event {
    Event::default().event(run.status.as_str()).json_data(run.view()).unwrap_or_default()
}

/// Server-sent events of a run: `progress` every `EXAI_TOOL_PROGRESS_SECS`
/// (`{elapsed_ms, message}`), `delta` pieces of a streamed answer (`{text}`), then one
/// event named after the final status with the run, then the end. A subscriber who
/// comes after the end gets the final event at once.
#[utoipa::path(get, path = "/v1/runs/{id}/events", tag = "runs",
    params(("id" = Uuid, Path, description = "Run id")),
    responses(
        (status = OK, content_type = "text/event-stream", body = RunEventFrame,
            description = "The schema describes each event"),
        (status = NOT_FOUND, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn run_events(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let subscription = state.executor.subscribe(id).await?;
    let events = stream::unfold(Some(subscription), |subscription| async move {
        match subscription? {
            Subscription::Over(run) | Subscription::Live { finished: Some(run), .. } => {
                Some((Ok(finished(&run)), None))
            }
            Subscription::Live { mut events, finished: None } => loop {
                let event = match events.recv().await {
                    Ok(RunEvent::Progress { elapsed_ms, message }) => Event::default()
                        .event("progress")
                        .json_data(json!({"elapsed_ms": elapsed_ms, "message": message})),
                    Ok(RunEvent::Delta { text }) => {
                        Event::default().event("delta").json_data(json!({"text": text}))
                    }
                    Ok(RunEvent::Finished(run)) => return Some((Ok(finished(&run)), None)),
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return None,
                };
                let next = Subscription::Live { events, finished: None };
                return Some((Ok(event.unwrap_or_default()), Some(next)));
            },
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
