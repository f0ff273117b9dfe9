//! The operator's dashboard: server-rendered pages (askama templates in `templates/`),
//! one stylesheet and one small script embedded from `static/`, under a strict CSP.

mod assets;
mod format;
mod forms;
mod login;
mod overview;
mod runs;
mod settings;
mod threads;

use askama::Template;
use axum::Router;
use axum::extract::Request;
use axum::http::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::app::AppState;

/// Only this origin's own files; no inline script or style; never framed.
const CSP: &str = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; \
                   object-src 'none'";

/// What every page's frame needs: its title, which navigation entry is current, and
/// where the assets are.
pub struct Page {
    pub title: &'static str,
    pub current: &'static str,
    pub css: String,
    pub js: String,
    pub icon: String,
    pub csrf: String,
    /// Whether a session is open, so the page offers to end it.
    pub signed_in: bool,
}

impl Page {
    pub fn new(title: &'static str, current: &'static str, access: &login::Access) -> Self {
        Self {
            title,
            current,
            css: assets::STYLESHEET.url(),
            js: assets::SCRIPT.url(),
            icon: assets::ICON.url(),
            csrf: access.csrf.clone(),
            signed_in: access.session.is_some(),
        }
    }
}

/// A rendered template as an HTML response; a template that fails to render is a bug,
/// answered as a plain 500.
fn render(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => ([(CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
        Err(error) => {
            tracing::error!(%error, "a dashboard template failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be rendered").into_response()
        }
    }
}

/// The dashboard's routes, and `/` leading to it.
pub fn routes(state: AppState) -> Router<AppState> {
    let pages = Router::new()
        .route("/dashboard", get(overview::show_overview))
        .route("/dashboard/overview", get(overview::overview_fragment))
        .route("/dashboard/threads", get(threads::list_threads))
        .route("/dashboard/threads/{id}", get(threads::show_thread))
        .route("/dashboard/threads/{id}/delete", get(threads::confirm_delete).post(threads::delete_thread))
        .route("/dashboard/runs", get(runs::list_runs))
        .route("/dashboard/runs/{id}", get(runs::show_run))
        .route("/dashboard/runs/{id}/live", get(runs::run_fragment))
        // The API's own stream, here behind the dashboard's sign-in rather than a bearer key.
        .route("/dashboard/runs/{id}/events", get(super::api::runs::run_events))
        .route("/dashboard/runs/{id}/cancel", post(runs::cancel_run))
        .route("/dashboard/tools", get(runs::list_tools))
        .route("/dashboard/tools/run", post(runs::start_run))
        .route("/dashboard/settings", get(settings::show_settings))
        .route("/dashboard/logout", post(login::sign_out))
        .route_layer(middleware::from_fn_with_state(state, login::require_access));
    Router::new()
        .merge(pages)
        .route("/dashboard/login", get(login::show_login).post(login::sign_in))
        .route("/dashboard/static/{name}", get(assets::serve_asset))
        .route("/", get(|| async { Redirect::to("/dashboard") }))
        .layer(middleware::from_fn(security_headers))
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}
