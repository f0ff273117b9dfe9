//! `/dashboard/settings`: the settings in effect, every secret redacted.

use askama::Template;
use axum::extract::{Extension, State};
use axum::response::Response;

use super::login::Access;
use super::{Page, render};
use crate::app::AppState;
use crate::config::Setting;

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    page: Page,
    settings: Vec<Setting>,
}

pub async fn show_settings(State(state): State<AppState>, Extension(access): Extension<Access>) -> Response {
    render(&SettingsPage {
        page: Page::new("Settings", "settings", &access),
        settings: state.settings.clone(),
    })
}
