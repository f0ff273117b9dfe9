//! `/dashboard`: dependencies, cache, store latency, traffic, runs and threads at a
//! glance, refreshed in place by the page's script through `/dashboard/overview`.

use askama::Template;
use axum::extract::{Extension, State};
use axum::response::Response;
use std::collections::BTreeMap;

use super::format::{millis, per_second, percent, relative, sparkline};
use super::login::Access;
use super::{Page, render};
use crate::app::AppState;
use crate::conversations::StatusFilter;
use crate::domain::RunStatus;
use crate::stats::{Sample, StatsReport};
use crate::store::RunQuery;

/// How many threads a count reads at most; past it the count says "100+".
const COUNT_LIMIT: u32 = 100;
const LATEST_THREADS: u32 = 10;

pub struct Dependency {
    pub name: String,
    pub status: &'static str,
    pub latency: String,
    pub spark: String,
}

pub struct Latency {
    pub op: String,
    pub backend: String,
    pub calls: u64,
    pub p50: String,
    pub p95: String,
    pub p99: String,
}

pub struct ThreadRow {
    pub id: String,
    pub title: String,
    pub turns: u32,
    pub updated: String,
    pub expired: bool,
}

/// Everything the overview shows, already written as text.
pub struct Overview {
    pub health: &'static str,
    pub dependencies: Vec<Dependency>,
    pub cache_recent: String,
    pub cache_since_start: String,
    pub cache_lookups: u64,
    pub cache_spark: String,
    pub store_latency: Vec<Latency>,
    pub requests: String,
    pub requests_spark: String,
    pub server_errors: String,
    pub server_errors_spark: String,
    pub runs_in_flight: i64,
    pub runs_queued: String,
    pub runs_last_hour: Vec<(String, u64)>,
    pub active_threads: String,
    pub expired_threads: String,
    pub latest_threads: Vec<ThreadRow>,
    /// Why threads or runs could not be read, when they could not.
    pub store_problem: Option<String>,
    pub sample_count: usize,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    page: Page,
    view: Overview,
}

#[derive(Template)]
#[template(path = "overview_body.html")]
struct OverviewBody {
    view: Overview,
}

pub async fn show_overview(State(state): State<AppState>, Extension(access): Extension<Access>) -> Response {
    let view = build(&state).await;
    render(&OverviewPage { page: Page::new("Overview", "overview", &access), view })
}

/// The overview's live part alone, for the script that refreshes it.
pub async fn overview_fragment(State(state): State<AppState>) -> Response {
    render(&OverviewBody { view: build(&state).await })
}

fn series(samples: &[Sample], value: impl Fn(&Sample) -> Option<f64>) -> Vec<Option<f64>> {
    samples.iter().map(value).collect()
}

/// A count of threads read a page at a time up to `COUNT_LIMIT`.
async fn count_threads(state: &AppState, status: StatusFilter) -> Result<String, String> {
    let page = state
        .conversations
        .list_threads(COUNT_LIMIT, None, None, status, None)
        .await
        .map_err(|error| error.to_string())?;
    Ok(match page.next_cursor {
        Some(_) => format!("{COUNT_LIMIT}+"),
        None => page.threads.len().to_string(),
    })
}

async fn build(state: &AppState) -> Overview {
    let report = state.health.report().await;
    let stats = StatsReport::of(&state.stats_sources());
    let samples = &stats.samples;
    let last = samples.last();
    let dependencies = report
        .checks
        .iter()
        .map(|(name, check)| Dependency {
            name: name.clone(),
            status: check.status.as_str(),
            latency: millis(check.response_time_ms),
            spark: sparkline(&series(samples, |s| s.dependencies.get(name).map(|d| d.response_time_ms)), 1.0),
        })
        .collect();
    let store_latency = stats
        .store_latency
        .iter()
        .map(|op| {
            let written = |ms: Option<f64>| ms.map_or_else(|| "> 10 s".to_owned(), millis);
            Latency {
                op: op.op.clone(),
                backend: op.backend.clone(),
                calls: op.calls,
                p50: written(op.p50_ms),
                p95: written(op.p95_ms),
                p99: written(op.p99_ms),
            }
        })
        .collect();
    let mut runs_last_hour = BTreeMap::<String, u64>::new();
    for (status, count) in samples.iter().flat_map(|s| &s.runs_finished) {
        *runs_last_hour.entry(status.clone()).or_default() += count;
    }

    let mut store_problem = None;
    let mut note = |result: Result<String, String>| {
        result.unwrap_or_else(|problem| {
            store_problem = Some(problem);
            "—".to_owned()
        })
    };
    let queued = RunQuery { limit: COUNT_LIMIT, after: None, tool: None, status: Some(RunStatus::Queued) };
    // Independent reads, so the page waits for the slowest of them rather than their sum.
    let (active, expired, queued, latest) = tokio::join!(
        count_threads(state, StatusFilter::Active),
        count_threads(state, StatusFilter::Expired),
        state.executor.list(&queued),
        state.conversations.list_threads(LATEST_THREADS, None, None, StatusFilter::All, None),
    );
    let active_threads = note(active);
    let expired_threads = note(expired);
    let runs_queued = note(queued.map_err(|e| e.to_string()).map(|page| {
        if page.next.is_some() { format!("{COUNT_LIMIT}+") } else { page.items.len().to_string() }
    }));
    let latest_threads = match latest {
        Ok(list) => list
            .threads
            .into_iter()
            .map(|thread| ThreadRow {
                id: thread.id.to_string(),
                title: thread.title.unwrap_or_default(),
                turns: thread.turn_count,
                updated: relative(thread.updated_at, list.now),
                expired: state.conversations.policy().is_expired(thread.updated_at, list.now),
            })
            .collect(),
        Err(error) => {
            store_problem = Some(error.to_string());
            Vec::new()
        }
    };

    Overview {
        health: report.status.as_str(),
        dependencies,
        cache_recent: percent(stats.cache_last_five_minutes.ratio),
        cache_since_start: percent(stats.cache_since_start.ratio),
        cache_lookups: stats.cache_since_start.hits + stats.cache_since_start.misses,
        cache_spark: sparkline(&series(samples, |s| s.cache_hit_ratio), 1.0),
        store_latency,
        requests: per_second(last.map_or(0.0, |s| s.requests_per_second)),
        requests_spark: sparkline(&series(samples, |s| Some(s.requests_per_second)), 1.0),
        server_errors: per_second(last.map_or(0.0, |s| s.server_errors_per_second)),
        server_errors_spark: sparkline(&series(samples, |s| Some(s.server_errors_per_second)), 0.1),
        runs_in_flight: state.metrics.runs_in_flight.load(std::sync::atomic::Ordering::Relaxed),
        runs_queued,
        runs_last_hour: runs_last_hour.into_iter().collect(),
        active_threads,
        expired_threads,
        latest_threads,
        store_problem,
        sample_count: samples.len(),
    }
}
