//! One catalogue of error codes, rendered as RFC 9457 problem+json.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::deadline_body::BodyTimedOut;
use super::request_context;
use crate::conversations::ConversationError;
use crate::domain::{Rejection, ValidationError};
use crate::store::StoreError;
use crate::telemetry::Throttle;
use crate::tools::RunError;
use std::time::Duration;
use uuid::Uuid;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Seconds a client should wait before retrying when the store is unavailable.
const RETRY_AFTER_SECS: &str = "2";

/// While the store is down every request would warn; one warning per interval says it.
static STORE_WARNINGS: Throttle = Throttle::new(Duration::from_secs(10));

/// Stable error codes. Clients branch on `code`, never on `detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    MalformedJson,
    InvalidId,
    Unauthorized,
    NotFound,
    ThreadNotFound,
    MethodNotAllowed,
    TurnLimitReached,
    ThreadExpired,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
    ValidationFailed,
    IdempotencyKeyReused,
    RateLimited,
    Internal,
    StoreUnavailable,
    ShuttingDown,
    ToolNotFound,
    ToolFailed,
    ToolTimeout,
    RunNotFound,
    RunFinished,
    RunCancelled,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        self.describe().0
    }

    pub fn status(self) -> StatusCode {
        self.describe().1
    }

    fn title(self) -> &'static str {
        self.describe().2
    }

    fn describe(self) -> (&'static str, StatusCode, &'static str) {
        use ErrorCode::*;
        match self {
            MalformedJson => ("malformed_json", StatusCode::BAD_REQUEST, "Request body is not valid JSON"),
            InvalidId => ("invalid_id", StatusCode::BAD_REQUEST, "Malformed id in path"),
            Unauthorized => ("unauthorized", StatusCode::UNAUTHORIZED, "Missing or invalid API key"),
            NotFound => ("not_found", StatusCode::NOT_FOUND, "No such route"),
            ThreadNotFound => ("thread_not_found", StatusCode::NOT_FOUND, "Thread not found"),
            MethodNotAllowed => ("method_not_allowed", StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
            TurnLimitReached => ("turn_limit_reached", StatusCode::CONFLICT, "Turn limit reached"),
            ThreadExpired => ("thread_expired", StatusCode::GONE, "Thread expired"),
            PayloadTooLarge => ("payload_too_large", StatusCode::PAYLOAD_TOO_LARGE, "Request body too large"),
            RequestTimeout => ("request_timeout", StatusCode::REQUEST_TIMEOUT, "Request body too slow"),
            UnsupportedMediaType => (
                "unsupported_media_type",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Request body must be application/json",
            ),
            ValidationFailed => ("validation_failed", StatusCode::UNPROCESSABLE_ENTITY, "Invalid request"),
            IdempotencyKeyReused => (
                "idempotency_key_reused",
                StatusCode::UNPROCESSABLE_ENTITY,
                "Idempotency-Key already used for a different request",
            ),
            RateLimited => ("rate_limited", StatusCode::TOO_MANY_REQUESTS, "Too many runs for this tool"),
            Internal => ("internal", StatusCode::INTERNAL_SERVER_ERROR, "Internal error"),
            StoreUnavailable => ("store_unavailable", StatusCode::SERVICE_UNAVAILABLE, "Store unavailable"),
            ShuttingDown => ("shutting_down", StatusCode::SERVICE_UNAVAILABLE, "Server shutting down"),
            ToolNotFound => ("tool_not_found", StatusCode::NOT_FOUND, "Tool not found"),
            ToolFailed => ("tool_failed", StatusCode::BAD_GATEWAY, "Tool failed"),
            ToolTimeout => ("tool_timeout", StatusCode::GATEWAY_TIMEOUT, "Tool timed out"),
            RunNotFound => ("run_not_found", StatusCode::NOT_FOUND, "Run not found"),
            RunFinished => ("run_finished", StatusCode::CONFLICT, "Run already finished"),
            RunCancelled => ("run_cancelled", StatusCode::CONFLICT, "Run cancelled"),
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// URI naming the problem type: `urn:exai:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable code from the catalogue.
    pub code: String,
    /// The `x-request-id` of the request, to find it in the server logs.
    pub request_id: Option<String>,
    /// The tool run the problem is about, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<Uuid>,
}

/// What went wrong behind an error response, kept out of the body. Converting an error
/// has no side effects: the response carries its cause in an extension, and the request
/// middleware logs it once, with the request id.
#[derive(Debug, Clone)]
pub enum Cause {
    /// A fault the client cannot fix.
    Internal(String),
    /// The store could not be reached.
    StoreUnavailable(String),
}

impl Cause {
    /// Logs the cause as the request that met it is handled. While the store is down
    /// every request would warn, so those warnings are throttled.
    pub fn log(&self, request_id: &str) {
        match self {
            Self::Internal(cause) => tracing::error!(request_id, %cause, "internal error"),
            Self::StoreUnavailable(cause) => {
                if let Some(held_back) = STORE_WARNINGS.admit() {
                    tracing::warn!(request_id, %cause, held_back, "store unavailable; answering 503");
                }
            }
        }
    }
}

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    detail: String,
    run_id: Option<Uuid>,
    cause: Option<Cause>,
}

impl ApiError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self { code, detail: detail.into(), run_id: None, cause: None }
    }

    /// Names the tool run the problem is about.
    pub fn for_run(mut self, run_id: Uuid) -> Self {
        self.run_id = Some(run_id);
        self
    }

    /// Keeps the cause for the server log and tells the client nothing more.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        let mut error = Self::new(
            ErrorCode::Internal,
            "an internal error occurred; the request id locates it in the server logs",
        );
        error.cause = Some(Cause::Internal(cause.to_string()));
        error
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        let problem = Problem {
            kind: format!("urn:exai:problem:{}", self.code.as_str()),
            title: self.code.title().to_owned(),
            status: status.as_u16(),
            detail: self.detail,
            code: self.code.as_str().to_owned(),
            request_id: request_context::current_request_id(),
            run_id: self.run_id,
        };
        let mut response = (status, axum::Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match self.code {
            ErrorCode::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ErrorCode::StoreUnavailable | ErrorCode::ShuttingDown | ErrorCode::RateLimited => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
            }
            _ => {}
        }
        if let Some(cause) = self.cause {
            response.extensions_mut().insert(cause);
        }
        response
    }
}

impl From<Rejection> for ApiError {
    fn from(refusal: Rejection) -> Self {
        use ErrorCode::*;
        match refusal {
            Rejection::ThreadNotFound(id) => Self::new(ThreadNotFound, format!("no thread {id}")),
            Rejection::ParentNotFound(id) => {
                Self::new(ValidationFailed, format!("parent_id: no thread {id}"))
            }
            Rejection::ThreadExpired(id) => Self::new(
                ThreadExpired,
                format!(
                    "thread {id} has expired and can no longer be continued; it stays readable. \
                     Start a new thread with parent_id {id} to continue the conversation"
                ),
            ),
            Rejection::TurnLimitReached { thread_id, max_turns } => Self::new(
                TurnLimitReached,
                format!(
                    "thread {thread_id} holds its maximum of {max_turns} turns; \
                     start a new thread with parent_id {thread_id} to continue"
                ),
            ),
            reused @ Rejection::KeyReused(_) => Self::new(IdempotencyKeyReused, reused.to_string()),
            ended @ Rejection::RunEnded => Self::new(RunFinished, ended.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(cause) => Self {
                cause: Some(Cause::StoreUnavailable(cause)),
                ..Self::new(ErrorCode::StoreUnavailable, "the store cannot be reached right now; retry later")
            },
            StoreError::Internal(cause) | StoreError::Misconfigured(cause) => Self::internal(cause),
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(error: ValidationError) -> Self {
        Self::new(ErrorCode::ValidationFailed, error.to_string())
    }
}

impl From<ConversationError> for ApiError {
    fn from(error: ConversationError) -> Self {
        match error {
            ConversationError::Invalid(invalid) => invalid.into(),
            ConversationError::Refused(refusal) => refusal.into(),
            ConversationError::Store(store) => store.into(),
            interrupted @ ConversationError::Interrupted(_) => Self::internal(interrupted),
        }
    }
}

impl From<RunError> for ApiError {
    fn from(error: RunError) -> Self {
        use ErrorCode::*;
        let detail = error.to_string();
        match error {
            RunError::ToolNotFound(_) => Self::new(ToolNotFound, detail),
            RunError::Busy { .. } => Self::new(RateLimited, detail),
            RunError::ShuttingDown => Self::new(ShuttingDown, detail),
            RunError::RunNotFound(_) => Self::new(RunNotFound, detail),
            RunError::AlreadyFinished(run) => Self::new(RunFinished, detail).for_run(run.id),
            RunError::Invalid(invalid) => invalid.into(),
            RunError::Refused(refusal) => refusal.into(),
            RunError::Store(store) => store.into(),
            RunError::Interrupted(_) => Self::internal(detail),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let code = match rejection.status() {
            _ if body_timed_out(&rejection) => ErrorCode::RequestTimeout,
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
            StatusCode::UNPROCESSABLE_ENTITY => ErrorCode::ValidationFailed,
            _ => ErrorCode::MalformedJson,
        };
        Self::new(code, rejection.body_text())
    }
}

/// Whether reading the body failed because it did not arrive in time.
fn body_timed_out(rejection: &JsonRejection) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(error) = cause {
        if error.is::<BodyTimedOut>() {
            return true;
        }
        cause = error.source();
    }
    false
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::new(ErrorCode::InvalidId, rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(ErrorCode::ValidationFailed, rejection.body_text())
    }
}
