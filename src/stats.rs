//! A fixed ring of recent samples taken from the counters `/metrics` keeps: the time
//! series behind the dashboard's charts and `GET /v1/stats`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use utoipa::ToSchema;

use crate::cache::{CacheStats, HitRate};
use crate::health::{Health, Status};
use crate::metrics::Metrics;

/// How often a sample is taken.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Samples kept: one hour at `INTERVAL`.
pub const CAPACITY: usize = 360;

/// Cumulative counters read at one instant.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub at: DateTime<Utc>,
    pub requests: u64,
    /// Responses with a 5xx status.
    pub server_errors: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// Finished tool runs by final status.
    pub runs_finished: BTreeMap<String, u64>,
    pub runs_in_flight: i64,
    /// The last health check of each dependency.
    pub dependencies: BTreeMap<String, DependencySample>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DependencySample {
    pub status: Status,
    pub response_time_ms: f64,
}

/// What happened during one interval, ending at `at`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Sample {
    pub at: DateTime<Utc>,
    pub requests_per_second: f64,
    pub server_errors_per_second: f64,
    /// Share of thread reads the cache served in the interval; absent without reads.
    pub cache_hit_ratio: Option<f64>,
    pub cache_lookups: u64,
    /// Tool runs accepted and not finished at `at`.
    pub runs_in_flight: i64,
    /// Tool runs that ended in the interval, by final status.
    pub runs_finished: BTreeMap<String, u64>,
    /// Each dependency's health check at `at`.
    pub dependencies: BTreeMap<String, DependencySample>,
}

impl Sample {
    /// The interval between two readings. Counters only grow, but a reading that went
    /// backwards counts as zero rather than wrapping.
    pub fn between(before: &Counters, after: &Counters) -> Sample {
        let seconds = (after.at - before.at).as_seconds_f64().max(f64::EPSILON);
        let rate = |from: u64, to: u64| to.saturating_sub(from) as f64 / seconds;
        let hits = after.cache_hits.saturating_sub(before.cache_hits);
        let lookups = hits + after.cache_misses.saturating_sub(before.cache_misses);
        let runs_finished = after
            .runs_finished
            .iter()
            .map(|(status, count)| {
                let earlier = before.runs_finished.get(status).copied().unwrap_or(0);
                (status.clone(), count.saturating_sub(earlier))
            })
            .filter(|(_, count)| *count > 0)
            .collect();
        Sample {
            at: after.at,
            requests_per_second: rate(before.requests, after.requests),
            server_errors_per_second: rate(before.server_errors, after.server_errors),
            cache_hit_ratio: (lookups > 0).then(|| hits as f64 / lookups as f64),
            cache_lookups: lookups,
            runs_in_flight: after.runs_in_flight,
            runs_finished,
            dependencies: after.dependencies.clone(),
        }
    }
}

/// The last `capacity` samples, oldest first; its memory is reserved up front.
pub struct StatsRing {
    capacity: usize,
    state: Mutex<RingState>,
}

struct RingState {
    previous: Option<Counters>,
    samples: VecDeque<Sample>,
}

impl Default for StatsRing {
    fn default() -> Self {
        Self::with_capacity(CAPACITY)
    }
}

impl StatsRing {
    pub fn with_capacity(capacity: usize) -> Self {
        let state = RingState { previous: None, samples: VecDeque::with_capacity(capacity) };
        Self { capacity, state: Mutex::new(state) }
    }

    /// Takes a reading: the first only sets the baseline; each later one adds the sample
    /// of the interval since the previous, dropping the oldest when full.
    pub fn record(&self, now: Counters) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(previous) = &state.previous {
            let sample = Sample::between(previous, &now);
            if state.samples.len() == self.capacity {
                state.samples.pop_front();
            }
            state.samples.push_back(sample);
        }
        state.previous = Some(now);
    }

    /// Every sample kept, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).samples.iter().cloned().collect()
    }
}

/// Latency of one store operation since start, from its histogram's buckets.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct OperationLatency {
    pub op: String,
    pub backend: String,
    pub calls: u64,
    /// Upper bounds of the buckets holding the 50th, 95th and 99th percentile;
    /// absent when past the last bucket (10 s).
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// The figures of `GET /v1/stats`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatsReport {
    pub interval_seconds: u64,
    pub capacity: usize,
    pub cache_last_five_minutes: HitRate,
    pub cache_since_start: HitRate,
    /// By store operation, in name order.
    pub store_latency: Vec<OperationLatency>,
    /// Oldest first, at most `capacity`.
    pub samples: Vec<Sample>,
}

/// What the figures are read from: the parts of a running service that count.
pub struct Sources<'a> {
    pub metrics: &'a Metrics,
    pub cache: &'a CacheStats,
    pub health: &'a Health,
    pub ring: &'a StatsRing,
}

impl StatsReport {
    pub fn of(app: &Sources) -> StatsReport {
        let millis = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        let store_latency = app
            .metrics
            .store
            .snapshot()
            .into_iter()
            .map(|((op, backend), histogram)| OperationLatency {
                op: op.to_owned(),
                backend: backend.to_owned(),
                calls: histogram.count(),
                p50_ms: millis(histogram.quantile(0.50)),
                p95_ms: millis(histogram.quantile(0.95)),
                p99_ms: millis(histogram.quantile(0.99)),
            })
            .collect();
        StatsReport {
            interval_seconds: INTERVAL.as_secs(),
            capacity: app.ring.capacity,
            cache_last_five_minutes: app.cache.last_five_minutes(),
            cache_since_start: app.cache.since_start(),
            store_latency,
            samples: app.ring.samples(),
        }
    }
}

/// Reads the counters of a running service, with its last health check.
pub fn read_counters(app: &Sources) -> Counters {
    let mut requests = 0;
    let mut server_errors = 0;
    for ((_, _, status), histogram) in app.metrics.http.snapshot() {
        requests += histogram.count();
        if status >= 500 {
            server_errors += histogram.count();
        }
    }
    let mut runs_finished = BTreeMap::<String, u64>::new();
    for ((_, status), histogram) in app.metrics.runs.snapshot() {
        *runs_finished.entry(status.to_owned()).or_default() += histogram.count();
    }
    let cache = app.cache.since_start();
    let dependencies = app
        .health
        .last()
        .map(|report| {
            report
                .checks
                .iter()
                .map(|(name, check)| {
                    let sample =
                        DependencySample { status: check.status, response_time_ms: check.response_time_ms };
                    (name.clone(), sample)
                })
                .collect()
        })
        .unwrap_or_default();
    Counters {
        at: Utc::now(),
        requests,
        server_errors,
        cache_hits: cache.hits,
        cache_misses: cache.misses,
        runs_finished,
        runs_in_flight: app.metrics.runs_in_flight.load(Ordering::Relaxed),
        dependencies,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn reading(seconds: i64, requests: u64, server_errors: u64) -> Counters {
        Counters {
            at: DateTime::UNIX_EPOCH + TimeDelta::seconds(seconds),
            requests,
            server_errors,
            ..Counters::default()
        }
    }

    #[test]
    fn the_first_reading_is_only_a_baseline() {
        let ring = StatsRing::with_capacity(3);
        ring.record(reading(0, 100, 0));
        assert!(ring.samples().is_empty());
        ring.record(reading(10, 150, 5));
        let samples = ring.samples();
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].requests_per_second, 5.0);
        assert_eq!(samples[0].server_errors_per_second, 0.5);
    }

    #[test]
    fn a_full_ring_drops_its_oldest_sample() {
        let ring = StatsRing::with_capacity(3);
        for step in 0..=5 {
            ring.record(reading(step * 10, (step * 10) as u64, 0));
        }
        let samples = ring.samples();
        let ends: Vec<i64> = samples.iter().map(|s| s.at.timestamp()).collect();
        assert_eq!(ends, [30, 40, 50]);
        assert!(samples.iter().all(|s| s.requests_per_second == 1.0));
    }

    #[test]
    fn cache_ratio_and_runs_cover_only_the_interval() {
        let mut before = reading(0, 0, 0);
        before.cache_hits = 10;
        before.cache_misses = 10;
        before.runs_finished = BTreeMap::from([("succeeded".to_owned(), 4)]);
        let mut after = reading(10, 0, 0);
        after.cache_hits = 13;
        after.cache_misses = 11;
        after.runs_finished = BTreeMap::from([("succeeded".to_owned(), 4), ("failed".to_owned(), 2)]);
        let sample = Sample::between(&before, &after);
        assert_eq!(sample.cache_lookups, 4);
        assert_eq!(sample.cache_hit_ratio, Some(0.75));
        assert_eq!(sample.runs_finished, BTreeMap::from([("failed".to_owned(), 2)]));
    }

    #[test]
    fn counters_going_backwards_count_as_zero() {
        let sample = Sample::between(&reading(0, 100, 9), &reading(10, 50, 3));
        assert_eq!((sample.requests_per_second, sample.server_errors_per_second), (0.0, 0.0));
        assert_eq!(sample.cache_hit_ratio, None);
    }
}
