//! `/dashboard/runs`: tool runs by tool and status, one run with its output while it
//! goes on, and cancelling it; `/dashboard/tools`: the registry and a form that starts
//! a run.

use askama::Template;
use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use serde::Deserialize;
use uuid::Uuid;

use super::format::{encoded, millis, relative};
use super::forms::{ChangeForm, NoFields};
use super::login::Access;
use super::{Page, render};
use crate::app::AppState;
use crate::domain::{RunStatus, ToolRun};
use crate::http::error::ApiError;
use crate::store::{Cursor, RunQuery};
use crate::tools::RunRequest;

const PAGE_SIZE: u32 = 50;

#[derive(Deserialize)]
pub struct RunsParams {
    #[serde(default)]
    tool: String,
    #[serde(default)]
    status: String,
    cursor: Option<String>,
}

pub struct RunRow {
    pub id: String,
    pub tool: String,
    pub status: &'static str,
    pub created: String,
    pub duration: String,
}

#[derive(Template)]
#[template(path = "runs.html")]
struct RunsPage {
    page: Page,
    tools: Vec<String>,
    statuses: Vec<&'static str>,
    tool: String,
    status: String,
    rows: Vec<RunRow>,
    next: Option<String>,
}

fn duration(run: &ToolRun) -> String {
    run.view().duration_ms.map_or_else(String::new, |ms| millis(ms as f64))
}

fn tool_names(state: &AppState) -> Vec<String> {
    let mut names: Vec<String> = state.executor.tools().map(|tool| tool.name.clone()).collect();
    names.sort();
    names
}

pub async fn list_runs(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    Query(params): Query<RunsParams>,
) -> Result<Response, ApiError> {
    let query = RunQuery {
        limit: PAGE_SIZE,
        after: params.cursor.as_deref().and_then(Cursor::decode),
        tool: Some(params.tool.clone()).filter(|tool| !tool.is_empty()),
        status: RunStatus::parse(&params.status),
    };
    let page = state.executor.list(&query).await?;
    let now = Utc::now();
    let rows = page
        .items
        .iter()
        .map(|run| RunRow {
            id: run.id.to_string(),
            tool: run.tool.clone(),
            status: run.status.as_str(),
            created: relative(run.created_at, now),
            duration: duration(run),
        })
        .collect();
    let next = page.next.map(|cursor| {
        format!(
            "/dashboard/runs?tool={}&status={}&cursor={}",
            encoded(&params.tool),
            encoded(&params.status),
            encoded(&cursor.encode())
        )
    });
    Ok(render(&RunsPage {
        page: Page::new("Tool runs", "runs", &access),
        tools: tool_names(&state),
        statuses: RunStatus::ALL.iter().map(|status| status.as_str()).collect(),
        tool: params.tool,
        status: params.status,
        rows,
        next,
    }))
}

/// What a run page shows, and its live part alone.
pub struct RunView {
    pub id: String,
    pub tool: String,
    pub status: &'static str,
    pub finished: bool,
    pub thread: String,
    pub input: String,
    pub output: Option<String>,
    pub error: Option<String>,
    pub created: String,
    pub duration: String,
    pub timeout_secs: u32,
}

impl RunView {
    fn of(run: &ToolRun) -> Self {
        Self {
            id: run.id.to_string(),
            tool: run.tool.clone(),
            status: run.status.as_str(),
            finished: run.status.is_final(),
            thread: run.continuation_id.to_string(),
            input: run.input.clone(),
            output: run.output.clone(),
            error: run.error.clone(),
            created: relative(run.created_at, Utc::now()),
            duration: duration(run),
            timeout_secs: run.timeout_secs,
        }
    }
}

#[derive(Template)]
#[template(path = "run.html")]
struct RunPage {
    page: Page,
    run: RunView,
}

#[derive(Template)]
#[template(path = "run_live.html")]
struct RunLive {
    run: RunView,
    csrf: String,
}

pub async fn show_run(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let run = RunView::of(&state.executor.get(id).await?);
    Ok(render(&RunPage { page: Page::new("Tool run", "runs", &access), run }))
}

/// The run's changing part, for the script that refreshes it until the run ends.
pub async fn run_fragment(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let run = RunView::of(&state.executor.get(id).await?);
    Ok(render(&RunLive { run, csrf: access.csrf }))
}

pub async fn cancel_run(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    ChangeForm(_): ChangeForm<NoFields>,
) -> Result<Response, ApiError> {
    match state.executor.cancel(id).await {
        Ok(_) | Err(crate::tools::RunError::AlreadyFinished(_)) => {
            Ok(Redirect::to(&format!("/dashboard/runs/{id}")).into_response())
        }
        Err(error) => Err(error.into()),
    }
}

pub struct ToolRow {
    pub name: String,
    pub kind: &'static str,
    pub description: String,
    pub timeout: String,
    pub concurrency: usize,
}

#[derive(Template)]
#[template(path = "tools.html")]
struct ToolsPage {
    page: Page,
    tools: Vec<ToolRow>,
}

pub async fn list_tools(State(state): State<AppState>, Extension(access): Extension<Access>) -> Response {
    let mut tools: Vec<ToolRow> = state
        .executor
        .tools()
        .map(|tool| ToolRow {
            name: tool.name.clone(),
            kind: tool.kind.name(),
            description: tool.description.clone(),
            timeout: format!("{} s", tool.timeout.as_secs()),
            concurrency: tool.max_concurrency,
        })
        .collect();
    tools.sort_by(|a, b| a.name.cmp(&b.name));
    render(&ToolsPage { page: Page::new("Tools", "tools", &access), tools })
}

#[derive(Deserialize)]
pub struct StartForm {
    tool: String,
    input: String,
    #[serde(default)]
    continuation_id: String,
    #[serde(default)]
    timeout_secs: String,
}

/// Starts a run without waiting for it, and goes to its page.
pub async fn start_run(
    State(state): State<AppState>,
    ChangeForm(form): ChangeForm<StartForm>,
) -> Result<Response, ApiError> {
    let invalid = |field: &str| {
        ApiError::new(crate::http::ErrorCode::ValidationFailed, format!("{field}: not a valid value"))
    };
    let continuation_id = match form.continuation_id.trim() {
        "" => None,
        id => Some(Uuid::parse_str(id).map_err(|_| invalid("continuation_id"))?),
    };
    let timeout_secs = match form.timeout_secs.trim() {
        "" => None,
        secs => Some(secs.parse().map_err(|_| invalid("timeout_secs"))?),
    };
    let request = RunRequest { input: form.input, continuation_id, timeout_secs };
    let started = state.executor.start(&form.tool, request).await?;
    Ok(Redirect::to(&format!("/dashboard/runs/{}", started.run.id)).into_response())
}
