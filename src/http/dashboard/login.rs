//! `/dashboard/login` and `/dashboard/logout`: an API key exchanged for a session
//! cookie, and the cookie ended.

use askama::Template;
use axum::extract::{Extension, Request, State};
use axum::http::StatusCode;
use axum::http::header::{COOKIE, LOCATION, RETRY_AFTER, SET_COOKIE};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use serde::Deserialize;

use super::forms::{ChangeForm, NoFields};
use super::{Page, render};
use crate::access::sessions::{self, COOKIE as SESSION_COOKIE, LIFETIME, Session};
use crate::app::AppState;
use crate::http::Client;

/// What the access check learned about a request, for the pages it lets through.
#[derive(Clone)]
pub struct Access {
    pub session: Option<Session>,
    /// The CSRF token the page's forms carry.
    pub csrf: String,
}

/// Open without API keys (the service then listens on loopback only); with keys, a
/// valid session cookie or API key is needed, and pages lead strangers to sign-in.
pub async fn require_access(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let session = request
        .headers()
        .get(COOKIE)
        .and_then(|value| value.to_str().ok())
        .and_then(|header| sessions::cookie(header, SESSION_COOKIE))
        .and_then(|token| state.sessions.verify(token, Utc::now()));
    if session.is_none() && !state.api_keys.admit(request.headers()) {
        return if request.method() == axum::http::Method::GET {
            Redirect::to("/dashboard/login").into_response()
        } else {
            (StatusCode::UNAUTHORIZED, "sign in first").into_response()
        };
    }
    let csrf = state.sessions.csrf_token(session.as_ref());
    request.extensions_mut().insert(Access { session, csrf });
    next.run(request).await
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    page: Page,
    problem: Option<&'static str>,
}

fn login_page(state: &AppState, status: StatusCode, problem: Option<&'static str>) -> Response {
    let access = Access { session: None, csrf: state.sessions.csrf_token(None) };
    let mut response = render(&LoginPage { page: Page::new("Sign in", "login", &access), problem });
    *response.status_mut() = status;
    response
}

pub async fn show_login(State(state): State<AppState>) -> Response {
    if state.api_keys.is_empty() {
        return Redirect::to("/dashboard").into_response();
    }
    login_page(&state, StatusCode::OK, None)
}

#[derive(Deserialize)]
pub struct LoginForm {
    key: String,
}

/// Who is signing in: the peer, or the address a trusted proxy forwarded for.
fn client_name(client: &Client) -> String {
    client.addr.map_or_else(|| "unknown".to_owned(), |addr| addr.to_string())
}

/// Secure when the browser reached us over TLS: directly, or through a trusted proxy
/// that says so (Caddy's `X-Forwarded-Proto`).
fn session_cookie(value: &str, max_age: i64, client: &Client) -> String {
    let secure = if client.https { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}={value}; Path=/dashboard; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")
}

pub async fn sign_in(
    State(state): State<AppState>,
    peer: Client,
    ChangeForm(form): ChangeForm<LoginForm>,
) -> Response {
    let now = Utc::now();
    let client = client_name(&peer);
    if let Err(wait) = state.sessions.may_try(&client, now) {
        let mut response = login_page(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            Some("Too many failed attempts; wait a few minutes."),
        );
        response.headers_mut().insert(RETRY_AFTER, wait.num_seconds().max(1).into());
        return response;
    }
    if state.api_keys.is_empty() || !state.api_keys.accepts(&form.key) {
        state.sessions.failed(&client, now);
        tracing::warn!(client, "dashboard sign-in with a key that is not valid");
        return login_page(&state, StatusCode::UNAUTHORIZED, Some("That key is not valid."));
    }
    let cookie = session_cookie(&state.sessions.issue(now), LIFETIME.num_seconds(), &peer);
    (StatusCode::SEE_OTHER, [(SET_COOKIE, cookie), (LOCATION, "/dashboard".to_owned())]).into_response()
}

pub async fn sign_out(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    peer: Client,
    ChangeForm(_): ChangeForm<NoFields>,
) -> Response {
    if let Some(session) = &access.session {
        state.sessions.revoke(session, Utc::now());
    }
    let cookie = session_cookie("", 0, &peer);
    (StatusCode::SEE_OTHER, [(SET_COOKIE, cookie), (LOCATION, "/dashboard/login".to_owned())]).into_response()
}
