//! Forms that change something: accepted only from this origin and with the CSRF token
//! of the page that showed them.

use axum::extract::{Form, FromRequest, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::login::Access;
use crate::access::sessions::Session;
use crate::app::AppState;

/// Why a form that changes something was refused.
#[derive(Debug, thiserror::Error)]
pub enum FormRefusal {
    #[error("this form was sent from another origin")]
    ForeignOrigin,
    #[error("this form was sent from another site")]
    CrossSite,
    #[error("this form has expired; reload the page")]
    BadToken,
}

impl IntoResponse for FormRefusal {
    fn into_response(self) -> Response {
        (StatusCode::FORBIDDEN, self.to_string()).into_response()
    }
}

/// Refuses a form sent from another origin, or without this session's CSRF token.
fn check_form(
    state: &AppState,
    headers: &HeaderMap,
    session: Option<&Session>,
    csrf: &str,
) -> Result<(), FormRefusal> {
    let host = headers.get("host").and_then(|value| value.to_str().ok());
    if let Some(origin) = headers.get("origin") {
        let origin = origin.to_str().unwrap_or_default();
        let same = host
            .is_some_and(|host| origin == format!("http://{host}") || origin == format!("https://{host}"));
        if !same {
            return Err(FormRefusal::ForeignOrigin);
        }
    } else if headers.get("sec-fetch-site").is_some_and(|site| site != "same-origin") {
        return Err(FormRefusal::CrossSite);
    }
    if !state.sessions.csrf_matches(session, csrf) {
        return Err(FormRefusal::BadToken);
    }
    Ok(())
}

/// A form's own fields, extracted once its origin and CSRF token are checked.
pub struct ChangeForm<T>(pub T);

/// For forms whose only field is the token.
#[derive(Deserialize)]
pub struct NoFields {}

#[derive(Deserialize)]
struct Tokened<T> {
    csrf: String,
    #[serde(flatten)]
    fields: T,
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for ChangeForm<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let session = request.extensions().get::<Access>().and_then(|access| access.session.clone());
        let headers = request.headers().clone();
        let Form(form) =
            Form::<Tokened<T>>::from_request(request, state).await.map_err(IntoResponse::into_response)?;
        check_form(state, &headers, session.as_ref(), &form.csrf).map_err(IntoResponse::into_response)?;
        Ok(Self(form.fields))
    }
}
