//! Bearer API keys required for `/v1` and `/metrics`.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::error::{ApiError, ErrorCode};
use crate::access::bearer_token;
use crate::app::AppState;

pub async fn require_api_key(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if state.api_keys.is_empty() {
        return Ok(next.run(request).await);
    }
    match bearer_token(request.headers()) {
        Some(token) if state.api_keys.accepts(token) => Ok(next.run(request).await),
        Some(_) => Err(ApiError::new(ErrorCode::Unauthorized, "the API key is not valid")),
        None => Err(ApiError::new(ErrorCode::Unauthorized, "send an API key as Authorization: Bearer <key>")),
    }
}
