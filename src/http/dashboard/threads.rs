//! `/dashboard/threads`: search and browse threads a page at a time, read one with its
//! turns, and delete one after confirming.

use askama::Template;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::format::{encoded, relative};
use super::forms::{ChangeForm, NoFields};
use super::login::Access;
use super::{Page, render};
use crate::app::AppState;
use crate::conversations::StatusFilter;
use crate::domain::{Metadata, Turn};
use crate::store::Cursor;

const PAGE_SIZE: u32 = 50;
/// Children linked from a thread's page; past it the page says there are more.
const CHILDREN_SHOWN: u32 = 20;

#[derive(Deserialize)]
pub struct ThreadsParams {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: StatusFilter,
    cursor: Option<String>,
}

pub struct ThreadRow {
    pub id: String,
    pub title: String,
    pub tool: String,
    pub turns: u32,
    pub updated: String,
    pub expiry: String,
    pub expired: bool,
}

#[derive(Template)]
#[template(path = "threads.html")]
struct ThreadsPage {
    page: Page,
    q: String,
    status: &'static str,
    rows: Vec<ThreadRow>,
    /// The link to the next page, keeping the search and filter.
    next: Option<String>,
    problem: Option<String>,
}

fn status_word(status: StatusFilter) -> &'static str {
    match status {
        StatusFilter::Active => "active",
        StatusFilter::Expired => "expired",
        StatusFilter::All => "all",
    }
}

pub async fn list_threads(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    Query(params): Query<ThreadsParams>,
) -> Response {
    let search = Some(params.q.trim().to_owned()).filter(|q| !q.is_empty());
    let after = params.cursor.as_deref().and_then(Cursor::decode);
    let status = status_word(params.status);
    let listed = state.conversations.list_threads(PAGE_SIZE, after, search, params.status, None).await;
    let (rows, next, problem) = match listed {
        Ok(list) => {
            let policy = state.conversations.policy();
            let rows = list
                .threads
                .into_iter()
                .map(|thread| ThreadRow {
                    id: thread.id.to_string(),
                    title: thread.title.unwrap_or_default(),
                    tool: thread.tool_name.unwrap_or_default(),
                    turns: thread.turn_count,
                    updated: relative(thread.updated_at, list.now),
                    expiry: relative(policy.expires_at(thread.updated_at), list.now),
                    expired: policy.is_expired(thread.updated_at, list.now),
                })
                .collect();
            let next = list.next_cursor.map(|cursor| {
                format!(
                    "/dashboard/threads?q={}&status={status}&cursor={}",
                    encoded(&params.q),
                    encoded(&cursor)
                )
            });
            (rows, next, None)
        }
        Err(error) => (Vec::new(), None, Some(error.to_string())),
    };
    let page = ThreadsPage {
        page: Page::new("Threads", "threads", &access),
        q: params.q,
        status,
        rows,
        next,
        problem,
    };
    render(&page)
}

/// The thread document as the API serves it.
#[derive(Deserialize)]
struct ThreadDocument {
    id: Uuid,
    parent_id: Option<Uuid>,
    title: Option<String>,
    tool_name: Option<String>,
    metadata: Metadata,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    expired: bool,
    turn_count: u32,
    max_turns: u32,
    turns: Vec<Turn>,
}

pub struct ChildLink {
    pub id: String,
    pub title: String,
    pub created: String,
}

pub struct TurnRow {
    pub seq: u32,
    pub role: &'static str,
    pub tool: String,
    pub model: String,
    pub files: Vec<String>,
    pub at: String,
    pub content: String,
    pub metadata: Option<String>,
}

#[derive(Template)]
#[template(path = "thread.html")]
struct ThreadPage {
    page: Page,
    id: String,
    title: String,
    tool: String,
    parent: Option<String>,
    children: Vec<ChildLink>,
    /// More children than `children` holds, or why they could not be read.
    children_note: Option<String>,
    created: String,
    updated: String,
    expiry: String,
    expired: bool,
    turns_used: String,
    metadata: Option<String>,
    turns: Vec<TurnRow>,
}

fn pretty(metadata: &Metadata) -> Option<String> {
    (!metadata.is_empty()).then(|| serde_json::to_string_pretty(metadata).unwrap_or_default())
}

fn model(turn: &Turn) -> String {
    match (&turn.model_provider, &turn.model_name) {
        (Some(provider), Some(name)) => format!("{provider}/{name}"),
        (Some(only), None) | (None, Some(only)) => only.clone(),
        (None, None) => String::new(),
    }
}

async fn read_thread(state: &AppState, id: Uuid) -> Result<ThreadDocument, Response> {
    let body = state.conversations.get_thread(id).await.map_err(|error| {
        (StatusCode::SERVICE_UNAVAILABLE, format!("the store did not answer: {error}")).into_response()
    })?;
    let body = body.ok_or_else(|| (StatusCode::NOT_FOUND, "no thread has this id").into_response())?;
    serde_json::from_slice(&body).map_err(|error| {
        tracing::error!(%error, thread.id = %id, "a thread document did not decode");
        (StatusCode::INTERNAL_SERVER_ERROR, "the thread could not be read").into_response()
    })
}

pub async fn show_thread(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    Path(id): Path<Uuid>,
) -> Response {
    let thread = match read_thread(&state, id).await {
        Ok(thread) => thread,
        Err(response) => return response,
    };
    let now = Utc::now();
    let (children, children_note) = match state.conversations.list_children(id, CHILDREN_SHOWN).await {
        Ok(page) => {
            let more = page.next.map(|_| format!("Only the newest {CHILDREN_SHOWN} are listed."));
            let links = page.items.into_iter().map(|child| ChildLink {
                id: child.id.to_string(),
                title: child.title.unwrap_or_default(),
                created: relative(child.created_at, now),
            });
            (links.collect(), more)
        }
        Err(error) => {
            (Vec::new(), Some(format!("The threads continuing this one could not be read: {error}")))
        }
    };
    let turns = thread
        .turns
        .iter()
        .map(|turn| TurnRow {
            seq: turn.seq,
            role: turn.role.as_str(),
            tool: turn.tool_name.clone().unwrap_or_default(),
            model: model(turn),
            files: turn.files.clone(),
            at: turn.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            content: turn.content.clone(),
            metadata: pretty(&turn.metadata),
        })
        .collect();
    let page = ThreadPage {
        page: Page::new("Thread", "threads", &access),
        id: thread.id.to_string(),
        title: thread.title.unwrap_or_default(),
        tool: thread.tool_name.unwrap_or_default(),
        parent: thread.parent_id.map(|parent| parent.to_string()),
        children,
        children_note,
        created: relative(thread.created_at, now),
        updated: relative(thread.updated_at, now),
        expiry: relative(thread.expires_at, now),
        expired: thread.expired,
        turns_used: format!("{} of {}", thread.turn_count, thread.max_turns),
        metadata: pretty(&thread.metadata),
        turns,
    };
    render(&page)
}

#[derive(Template)]
#[template(path = "thread_delete.html")]
struct DeletePage {
    page: Page,
    id: String,
    title: String,
    turns: u32,
}

/// Asks before deleting: a page with one button, so deleting works without script.
pub async fn confirm_delete(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    Path(id): Path<Uuid>,
) -> Response {
    match read_thread(&state, id).await {
        Ok(thread) => render(&DeletePage {
            page: Page::new("Delete thread", "threads", &access),
            id: thread.id.to_string(),
            title: thread.title.unwrap_or_default(),
            turns: thread.turn_count,
        }),
        Err(response) => response,
    }
}

pub async fn delete_thread(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    ChangeForm(_): ChangeForm<NoFields>,
) -> Response {
    match state.conversations.delete_thread(id).await {
        Ok(true) => Redirect::to("/dashboard/threads").into_response(),
        Ok(false) => (StatusCode::NOT_FOUND, "no thread has this id").into_response(),
        Err(error) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("the store did not answer: {error}")).into_response()
        }
    }
}
