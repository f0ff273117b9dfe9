//! The time series and latencies behind the dashboard, as data anyone can use.

use axum::Json;
use axum::extract::State;

use crate::app::AppState;
use crate::stats::StatsReport;

/// Samples of the last hour (one every `interval_seconds`, oldest first), cache hit
/// rates, and store latency percentiles by operation since start.
#[utoipa::path(get, path = "/v1/stats", tag = "stats",
    responses((status = OK, body = StatsReport)))]
pub async fn get_stats(State(state): State<AppState>) -> Json<StatsReport> {
    Json(StatsReport::of(&state.stats_sources()))
}
