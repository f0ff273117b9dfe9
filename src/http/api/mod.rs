//! Handlers, one module per resource.

pub mod runs;
pub mod stats;
pub mod system;
pub mod threads;
pub mod tools;
pub mod turns;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::error::{ApiError, ErrorCode};
use crate::store::Cursor;

pub const DEFAULT_PAGE_SIZE: u32 = 20;
pub const MAX_PAGE_SIZE: u32 = 100;

/// A JSON body that is already encoded, such as a cached thread document.
fn json_bytes(status: StatusCode, body: Bytes) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The position a `cursor` parameter names, if given.
fn page_start(cursor: Option<&str>) -> Result<Option<Cursor>, ApiError> {
    cursor
        .map(|cursor| {
            Cursor::decode(cursor).ok_or_else(|| {
                ApiError::new(ErrorCode::ValidationFailed, "cursor: not a cursor this API returned")
            })
        })
        .transpose()
}

fn page_size(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit.unwrap_or(DEFAULT_PAGE_SIZE) {
        size @ 1..=MAX_PAGE_SIZE => Ok(size),
        _ => Err(ApiError::new(
            ErrorCode::ValidationFailed,
            format!("limit: must be between 1 and {MAX_PAGE_SIZE}"),
        )),
    }
}
