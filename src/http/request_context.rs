//! Gives every request an id, echoed in `x-request-id` and in error bodies and named by
//! the `request` span that every log line of the request (and of the tasks it spawns)
//! sits in; logs one line per request (with the client's address) and the cause of an
//! error response once; and records the request in the metrics.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use std::time::Instant;
use tracing::Instrument;
use uuid::Uuid;

use super::error::Cause;
use super::forwarded::Client;
use crate::app::AppState;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being handled on this task, if any.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// A caller's own id is kept when it is short and plain, so logs can be joined across
/// services; anything else is replaced.
fn acceptable(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The method as a metrics label: one of the standard methods, else `other`, so that
/// callers cannot grow the label set (and the scrape) with made-up method names.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::TRACE,
        Method::CONNECT,
    ];
    KNOWN.iter().find(|known| *known == method).map_or("other", Method::as_str)
}

pub async fn request_context(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|id| acceptable(id))
        .map_or_else(|| Uuid::new_v4().to_string(), str::to_owned);
    let client = Client::of(request.headers(), request.extensions(), &state.trusted_proxies);
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map(|path| path.as_str().to_owned());
    let started = Instant::now();

    let span = tracing::info_span!("request", request_id = %request_id);
    let mut response = REQUEST_ID.scope(request_id.clone(), next.run(request)).instrument(span).await;
    if let Some(cause) = response.extensions_mut().remove::<Cause>() {
        cause.log(&request_id);
    }

    let elapsed = started.elapsed();
    // Unrouted paths share one label value, for the same reason as methods.
    let route = route.unwrap_or_else(|| "unmatched".into());
    let status = response.status().as_u16();
    state.metrics.http.with(&(route.clone(), method_label(&method), status)).observe(elapsed);
    tracing::info!(
        %method,
        route,
        status,
        latency_ms = elapsed.as_micros() as f64 / 1000.0,
        request_id = %request_id,
        client = client.addr.map(tracing::field::display),
        "request"
    );
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(X_REQUEST_ID, value);
    }
    response
}
