//! Probes and metrics: for Docker, monitors, Caddy and Prometheus.

use axum::Json;
use axum::extract::State;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

use crate::app::AppState;
use crate::health::{Report, Status};
use crate::http::error::Problem;
use crate::http::extract::AppQuery;
use crate::metrics::Exposition;

#[derive(Serialize, ToSchema)]
pub struct Liveness {
    /// Always `alive`.
    status: &'static str,
}

/// Liveness: answers whenever the process serves; touches no dependency.
#[utoipa::path(get, path = "/livez", tag = "health", security(()),
    responses((status = OK, body = Liveness)))]
pub async fn livez() -> Json<Liveness> {
    Json(Liveness { status: "alive" })
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Readiness: whether the store answers, from the shared health result. When API keys
/// are configured, the store's error is given only with a valid key.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses(
        (status = OK, body = Readiness),
        (status = SERVICE_UNAVAILABLE, body = Readiness, description = "The store does not answer"),
    ))]
pub async fn readyz(State(state): State<AppState>, headers: HeaderMap) -> (StatusCode, Json<Readiness>) {
    let report = state.health.report().await;
    match report.checks.get("store").filter(|store| store.status != Status::Healthy) {
        None => (StatusCode::OK, Json(Readiness { status: "ready", error: None })),
        Some(store) => {
            let error = store.error.clone().filter(|_| state.api_keys.admit(&headers));
            (StatusCode::SERVICE_UNAVAILABLE, Json(Readiness { status: "not_ready", error }))
        }
    }
}

/// `text` for a line per check, for people; JSON otherwise.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthFormat {
    Json,
    Text,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HealthParams {
    /// `text` for a line per check, for people; JSON otherwise.
    format: Option<HealthFormat>,
}

const HEALTH_JSON: &str = "application/health+json";

/// The IETF health-check format, for `Accept: application/health+json`: `checks` maps
/// `<check>:responseTime` to its observations.
#[derive(ToSchema)]
#[expect(dead_code, reason = "describes the document `Report::health_json` builds")]
struct HealthCheckJson {
    /// `pass`, `warn` or `fail`.
    #[schema(pattern = "^(pass|warn|fail)$")]
    status: String,
    #[schema(value_type = Option<Object>)]
    checks: (),
}

/// Health of every dependency with its latency: 200 when healthy or degraded (cache
/// down), 503 when unhealthy (store down). Results are reused for
/// `EXAI_HEALTH_CACHE_MS`. `Accept: application/health+json` gives the IETF
/// health-check format. When API keys are configured, backends, error texts and the
/// version are given only with a valid key; anyone gets statuses and latencies.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()), params(HealthParams),
    responses(
        (status = OK, description = "`healthy` or `degraded`", content(
            (Report = "application/json"),
            (HealthCheckJson = "application/health+json"),
            (String = "text/plain"),
        )),
        (status = SERVICE_UNAVAILABLE, description = "`unhealthy`", content(
            (Report = "application/json"),
            (HealthCheckJson = "application/health+json"),
            (String = "text/plain"),
        )),
        (status = UNPROCESSABLE_ENTITY, body = Problem, content_type = "application/problem+json",
            description = "`validation_failed`: an unknown `format`"),
    ))]
pub async fn healthz(
    State(state): State<AppState>,
    AppQuery(params): AppQuery<HealthParams>,
    headers: HeaderMap,
) -> Response {
    let mut report = state.health.report().await;
    if !state.api_keys.admit(&headers) {
        report = Arc::new(report.public());
    }
    let status = match report.status {
        Status::Unhealthy => StatusCode::SERVICE_UNAVAILABLE,
        Status::Healthy | Status::Degraded => StatusCode::OK,
    };
    let wants_ietf = headers
        .get(ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains(HEALTH_JSON));
    match (params.format, wants_ietf) {
        (Some(HealthFormat::Text), _) => {
            (status, [(CONTENT_TYPE, "text/plain; charset=utf-8")], report.text()).into_response()
        }
        (None, true) => {
            (status, [(CONTENT_TYPE, HEALTH_JSON)], report.health_json().to_string()).into_response()
        }
        _ => (status, Json(Report::clone(&report))).into_response(),
    }
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = OK, content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut out = Exposition::default();
    let recorded = &state.metrics;
    out.histograms(
        "exai_http_request_duration_seconds",
        "HTTP requests by matched route, method and status, and their latency.",
        &recorded.http,
        |(route, method, status)| {
            vec![("route", route.clone()), ("method", method.to_string()), ("status", status.to_string())]
        },
    );
    let by_op = |(op, backend): &(&'static str, &'static str)| {
        vec![("op", op.to_string()), ("backend", backend.to_string())]
    };
    out.histograms(
        "exai_store_operation_duration_seconds",
        "Store calls by operation and backend.",
        &recorded.store,
        by_op,
    );
    out.histograms(
        "exai_cache_operation_duration_seconds",
        "Cache calls by operation and backend.",
        &recorded.cache,
        by_op,
    );

    out.histograms(
        "exai_tool_run_duration_seconds",
        "Finished tool runs by tool and status, from acceptance to end.",
        &recorded.runs,
        |(tool, status)| vec![("tool", tool.clone()), ("status", status.to_string())],
    );
    let in_flight = recorded.runs_in_flight.load(std::sync::atomic::Ordering::Relaxed);
    out.single(
        "exai_tool_runs_in_flight",
        "gauge",
        "Tool runs accepted and not yet finished.",
        in_flight as f64,
    );

    let conversations = &state.conversations;
    let store = conversations.store();
    let store_label = vec![("backend", store.backend())];
    out.labelled(
        "exai_store_round_trips_total",
        "counter",
        "Requests sent to the store.",
        &[(store_label, store.round_trips() as f64)],
    );
    let cache = vec![("backend", conversations.cache().backend())];
    let stats = conversations.cache_stats();
    let since_start = stats.since_start();
    for (name, help, value) in [
        ("exai_cache_hits_total", "Thread reads served from the cache.", since_start.hits),
        ("exai_cache_misses_total", "Thread reads the cache could not serve.", since_start.misses),
        ("exai_cache_errors_total", "Failed cache calls.", stats.errors()),
        (
            "exai_cache_rejected_fills_total",
            "Cache writes dropped for carrying an older version.",
            stats.rejected_fills(),
        ),
    ] {
        out.labelled(name, "counter", help, &[(cache.clone(), value as f64)]);
    }
    if let Some(ratio) = stats.last_five_minutes().ratio {
        out.labelled(
            "exai_cache_hit_ratio_5m",
            "gauge",
            "Cache hit ratio over the last five minutes.",
            &[(cache, ratio)],
        );
    }

    if let Some(report) = state.health.last() {
        let per_check = |value: &dyn Fn(&crate::health::Check) -> f64| -> Vec<(Vec<(&str, &str)>, f64)> {
            report
                .checks
                .iter()
                .map(|(name, check)| {
                    let backend = check.backend.as_deref().unwrap_or_default();
                    (vec![("check", name.as_str()), ("backend", backend)], value(check))
                })
                .collect()
        };
        out.labelled(
            "exai_health_check_up",
            "gauge",
            "1 when the dependency passed its last health check.",
            &per_check(&|check| f64::from(u8::from(check.status == Status::Healthy))),
        );
        out.labelled(
            "exai_health_check_duration_seconds",
            "gauge",
            "How long the dependency's last health check took.",
            &per_check(&|check| check.response_time_ms / 1000.0),
        );
    }
    ([(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out.finish()).into_response()
}
