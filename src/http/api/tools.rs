use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::app::AppState;
use crate::domain::{RunStatus, RunView, ToolRun};
use crate::http::error::{ApiError, ErrorCode, Problem};
use crate::http::extract::{AppJson, AppPath};
use crate::tools::RunRequest;

/// A tool this server can run.
#[derive(Serialize, ToSchema)]
pub struct ToolInfo<'a> {
    name: &'a str,
    /// `echo`, `http` or `openai`.
    kind: &'static str,
    description: &'a str,
    timeout_secs: u64,
    max_concurrency: usize,
}

#[derive(Serialize, ToSchema)]
pub struct ToolList<'a> {
    data: Vec<ToolInfo<'a>>,
}

/// The tool registry: the built-in `echo` and the tools of `tools.toml`.
#[utoipa::path(get, path = "/v1/tools", tag = "tools", responses((status = OK, body = ToolList)))]
pub async fn list_tools(State(state): State<AppState>) -> Response {
    let data = state
        .executor
        .tools()
        .map(|tool| ToolInfo {
            name: &tool.name,
            kind: tool.kind.name(),
            description: &tool.description,
            timeout_secs: tool.timeout.as_secs(),
            max_concurrency: tool.max_concurrency,
        })
        .collect();
    Json(ToolList { data }).into_response()
}

/// A run to start.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRun {
    /// What to ask the tool; it becomes the user turn. Not empty; at most 1 MiB
    /// (1,048,576 bytes) of UTF-8.
    #[schema(min_length = 1, max_length = 1048576, pattern = "^[^\\u0000]*$")]
    input: String,
    /// The thread to continue; without one a new thread is started.
    continuation_id: Option<Uuid>,
    /// Seconds the run may take, at least 1 and at most the tool's own `timeout_secs`
    /// (larger values are refused with 422); the tool's own by default.
    #[schema(format = Int64, minimum = 1, maximum = 4294967295_u64)]
    #[serde(default, deserialize_with = "whole_number")]
    timeout_secs: Option<u32>,
    /// Answer when the run has finished (default), or at once with 202.
    wait: Option<bool>,
}

/// JSON Schema's `integer` takes `30.0` as well as `30`, and so does this.
fn whole_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let whole = number.as_u64().or_else(|| {
        number
            .as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= f64::from(u32::MAX))
            .map(|f| f as u64)
    });
    whole.and_then(|n| u32::try_from(n).ok()).map(Some).ok_or_else(|| {
        D::Error::custom(format!(
            "timeout_secs: {number} is not a whole number of seconds up to {}",
            u32::MAX
        ))
    })
}

/// What a finished run means for the caller who waited for it.
fn outcome(run: ToolRun) -> Result<Response, ApiError> {
    let detail = || run.error.clone().unwrap_or_default();
    match run.status {
        RunStatus::TimedOut => Err(ApiError::new(ErrorCode::ToolTimeout, detail()).for_run(run.id)),
        RunStatus::Failed => Err(ApiError::new(ErrorCode::ToolFailed, detail()).for_run(run.id)),
        RunStatus::Cancelled => Err(ApiError::new(ErrorCode::RunCancelled, detail()).for_run(run.id)),
        RunStatus::Completed => Ok(Json(run.view()).into_response()),
        RunStatus::Queued | RunStatus::Running => {
            Err(ApiError::internal(format!("run {} ended unrecorded", run.id)))
        }
    }
}

/// Runs a tool. With a `continuation_id` the thread's conversation (its newest turns
/// within 2 MiB, as `GET /v1/threads/{id}/history` returns them) is sent along, and the
/// run is refused (409/410) before any upstream call when the thread cannot take its two
/// turns besides two for every run still under way on it; on success the input and the
/// answer are appended together. A run never
/// outlives its timeout and does not stop when the caller goes away.
#[utoipa::path(post, path = "/v1/tools/{name}/runs", tag = "tools", request_body = NewRun,
    params(("name" = String, Path, description = "Tool name", pattern = "^[a-z0-9_-]{1,64}$")),
    responses(
        (status = OK, body = RunView, description = "The finished run (`wait`)", links(
            ("read" = (operation_id = "get_run", parameters(("id" = "$response.body#/id")))),
            ("cancel" = (operation_id = "cancel_run", parameters(("id" = "$response.body#/id")))),
        )),
        (status = ACCEPTED, body = RunView, description = "The accepted run (`wait: false`)",
            headers(("location" = String, description = "URL of the run")), links(
            ("follow" = (operation_id = "run_events", parameters(("id" = "$response.body#/id")))),
            ("cancel" = (operation_id = "cancel_run", parameters(("id" = "$response.body#/id")))),
        )),
        (status = NOT_FOUND, body = Problem, content_type = "application/problem+json",
            description = "`tool_not_found` or `thread_not_found`"),
        (status = CONFLICT, body = Problem, content_type = "application/problem+json",
            description = "`turn_limit_reached`, or `run_cancelled` while waiting"),
        (status = GONE, body = Problem, content_type = "application/problem+json"),
        (status = TOO_MANY_REQUESTS, body = Problem, content_type = "application/problem+json",
            description = "`rate_limited`: the tool's queue is full"),
        (status = BAD_GATEWAY, body = Problem, content_type = "application/problem+json",
            description = "`tool_failed`, with `run_id`"),
        (status = GATEWAY_TIMEOUT, body = Problem, content_type = "application/problem+json",
            description = "`tool_timeout`, with `run_id`"),
        (status = SERVICE_UNAVAILABLE, body = Problem, content_type = "application/problem+json",
            description = "`store_unavailable` or `shutting_down`"),
    ))]
pub async fn create_run(
    State(state): State<AppState>,
    AppPath(name): AppPath<String>,
    AppJson(new): AppJson<NewRun>,
) -> Result<Response, ApiError> {
    let request =
        RunRequest { input: new.input, continuation_id: new.continuation_id, timeout_secs: new.timeout_secs };
    let started = state.executor.start(&name, request).await?;
    if new.wait.unwrap_or(true) {
        return outcome(started.finished().await);
    }
    let location = format!("/v1/runs/{}", started.run.id);
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(started.run.view())).into_response())
}
