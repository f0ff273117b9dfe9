//! Prometheus metrics: labelled latency histograms kept in-process, and a writer for
//! the text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// Upper bounds, in seconds, of the buckets for requests and calls to dependencies.
pub const CALL_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Upper bounds, in seconds, of the buckets for tool runs: from the quickest run to the
/// default `WORKFLOW_TOOL_TIMEOUT_SECS` (600), then on to the highest it may be set to.
pub const TOOL_RUN_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 21_600.0, 86_400.0,
];

pub struct Histogram {
    bounds: &'static [f64],
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// An empty histogram with buckets up to each of `bounds`, in ascending seconds.
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(bucket) = self.bounds.iter().position(|bound| seconds <= *bound) {
            self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The latency under which a share `q` (0 to 1) of the observations fell, as the
    /// upper bound of the bucket holding it; `None` before the first observation or when
    /// it lies past the last bucket.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        quantile_of(self.bounds, &counts, self.count(), q)
    }
}

/// The bucket bound at which the cumulative count reaches `q` of `total`.
fn quantile_of(bounds: &[f64], counts: &[u64], total: u64, q: f64) -> Option<Duration> {
    if total == 0 {
        return None;
    }
    let wanted = (q * total as f64).ceil().max(1.0) as u64;
    let mut cumulative = 0;
    for (bound, count) in bounds.iter().zip(counts) {
        cumulative += count;
        if cumulative >= wanted {
            return Some(Duration::from_secs_f64(*bound));
        }
    }
    None
}

/// Histograms by label values, created on first use, all with the same buckets.
pub struct Family<L> {
    bounds: &'static [f64],
    series: RwLock<BTreeMap<L, Arc<Histogram>>>,
}

impl<L: Ord + Clone> Family<L> {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self { bounds, series: RwLock::new(BTreeMap::new()) }
    }

    pub fn with(&self, labels: &L) -> Arc<Histogram> {
        if let Some(found) = self.series.read().unwrap_or_else(PoisonError::into_inner).get(labels) {
            return found.clone();
        }
        let mut series = self.series.write().unwrap_or_else(PoisonError::into_inner);
        series.entry(labels.clone()).or_insert_with(|| Arc::new(Histogram::new(self.bounds))).clone()
    }

    /// Every series with its histogram, in label order.
    pub fn snapshot(&self) -> Vec<(L, Arc<Histogram>)> {
        let series = self.series.read().unwrap_or_else(PoisonError::into_inner);
        series.iter().map(|(labels, histogram)| (labels.clone(), histogram.clone())).collect()
    }
}

/// The latencies the service records as it works. Counters other parts already keep
/// (cache statistics, store round trips, health) are read when metrics are scraped.
pub struct Metrics {
    /// By matched route template (or `unmatched`), method (or `other`) and status.
    pub http: Family<(String, &'static str, u16)>,
    /// By operation and backend.
    pub store: Family<(&'static str, &'static str)>,
    pub cache: Family<(&'static str, &'static str)>,
    /// Tool runs by tool and final status, from acceptance to end.
    pub runs: Family<(String, &'static str)>,
    pub runs_in_flight: AtomicI64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            http: Family::new(CALL_BUCKETS),
            store: Family::new(CALL_BUCKETS),
            cache: Family::new(CALL_BUCKETS),
            runs: Family::new(TOOL_RUN_BUCKETS),
            runs_in_flight: AtomicI64::new(0),
        }
    }
}

/// Builds a document in the Prometheus text exposition format.
#[derive(Default)]
pub struct Exposition {
    text: String,
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn label_set(labels: &[(&str, &str)]) -> String {
    let pairs: Vec<String> =
        labels.iter().map(|(name, value)| format!("{name}=\"{}\"", escape(value))).collect();
    pairs.join(",")
}

impl Exposition {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One metric with a single unlabelled value.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.header(name, kind, help);
        let _ = writeln!(self.text, "{name} {value}");
    }

    /// One metric with a value per label set.
    pub fn labelled(&mut self, name: &str, kind: &str, help: &str, series: &[(Vec<(&str, &str)>, f64)]) {
        self.header(name, kind, help);
        for (labels, value) in series {
            let _ = writeln!(self.text, "{name}{{{}}} {value}", label_set(labels));
        }
    }

    /// A histogram family; `labels` names the label values of each series.
    pub fn histograms<L>(
        &mut self,
        name: &str,
        help: &str,
        family: &Family<L>,
        labels: impl Fn(&L) -> Vec<(&'static str, String)>,
    ) where
        L: Ord + Clone,
    {
        self.header(name, "histogram", help);
        for (key, histogram) in family.snapshot() {
            let owned = labels(&key);
            let base: Vec<(&str, &str)> = owned.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let mut cumulative = 0;
            for (bound, bucket) in histogram.bounds.iter().zip(&histogram.buckets) {
                cumulative += bucket.load(Ordering::Relaxed);
                let le = bound.to_string();
                let mut with_le = base.clone();
                with_le.push(("le", &le));
                let _ = writeln!(self.text, "{name}_bucket{{{}}} {cumulative}", label_set(&with_le));
            }
            let count = histogram.count();
            let mut with_inf = base.clone();
            with_inf.push(("le", "+Inf"));
            let sum = histogram.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let set = label_set(&base);
            let _ = writeln!(self.text, "{name}_bucket{{{}}} {count}", label_set(&with_inf));
            let _ = writeln!(self.text, "{name}_sum{{{set}}} {sum}\n{name}_count{{{set}}} {count}");
        }
    }

    pub fn finish(self) -> String {
        self.text
    }
}

/// Times a call to a dependency: records it by operation and backend, and warns when it
/// took longer than `slow`.
pub async fn timed<T>(
    family: &Family<(&'static str, &'static str)>,
    dependency: &'static str,
    (op, backend): (&'static str, &'static str),
    slow: Duration,
    call: impl Future<Output = T>,
) -> T {
    let started = Instant::now();
    let output = call.await;
    let elapsed = started.elapsed();
    family.with(&(op, backend)).observe(elapsed);
    if elapsed > slow {
        let duration_ms = elapsed.as_micros() as f64 / 1000.0;
        tracing::warn!(dependency, op, backend, duration_ms, "slow call");
    }
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_render_cumulative_buckets() {
        let family = Family::new(CALL_BUCKETS);
        family.with(&("get", "redis")).observe(Duration::from_micros(300));
        family.with(&("get", "redis")).observe(Duration::from_millis(3));
        family.with(&("get", "redis")).observe(Duration::from_secs(60));
        let mut out = Exposition::default();
        out.histograms("exai_t_seconds", "test", &family, |(op, backend)| {
            vec![("op", op.to_string()), ("backend", backend.to_string())]
        });
        let text = out.finish();
        assert!(text.contains("# TYPE exai_t_seconds histogram"));
        assert!(text.contains(r#"exai_t_seconds_bucket{op="get",backend="redis",le="0.0005"} 1"#));
        assert!(text.contains(r#"exai_t_seconds_bucket{op="get",backend="redis",le="0.005"} 2"#));
        assert!(text.contains(r#"exai_t_seconds_bucket{op="get",backend="redis",le="+Inf"} 3"#));
        assert!(text.contains(r#"exai_t_seconds_count{op="get",backend="redis"} 3"#));
    }

    #[test]
    fn quantiles_are_bucket_bounds() {
        let histogram = Histogram::new(CALL_BUCKETS);
        assert_eq!(histogram.quantile(0.5), None);
        for _ in 0..98 {
            histogram.observe(Duration::from_micros(800));
        }
        histogram.observe(Duration::from_millis(20));
        histogram.observe(Duration::from_secs(60));
        assert_eq!(histogram.quantile(0.5), Some(Duration::from_millis(1)));
        assert_eq!(histogram.quantile(0.99), Some(Duration::from_millis(25)));
        assert_eq!(histogram.quantile(1.0), None, "past the last bucket");
    }

    #[test]
    fn tool_runs_up_to_the_timeout_land_in_finite_buckets() {
        let histogram = Histogram::new(TOOL_RUN_BUCKETS);
        histogram.observe(Duration::from_secs(3));
        histogram.observe(Duration::from_secs(599));
        histogram.observe(Duration::from_secs(86_400));
        assert_eq!(histogram.quantile(0.3), Some(Duration::from_secs(5)));
        assert_eq!(histogram.quantile(0.6), Some(Duration::from_secs(600)));
        assert_eq!(histogram.quantile(1.0), Some(Duration::from_secs(86_400)));
        let metrics = Metrics::default();
        metrics.runs.with(&("slow".to_owned(), "succeeded")).observe(Duration::from_secs(120));
        let mut out = Exposition::default();
        out.histograms("exai_r_seconds", "test", &metrics.runs, |(tool, status)| {
            vec![("tool", tool.clone()), ("status", status.to_string())]
        });
        let text = out.finish();
        assert!(
            text.contains(r#"exai_r_seconds_bucket{tool="slow",status="succeeded",le="60"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"exai_r_seconds_bucket{tool="slow",status="succeeded",le="120"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = Exposition::default();
        out.labelled("exai_x", "gauge", "test", &[(vec![("error", "a \"b\"\nc")], 1.0)]);
        assert!(out.finish().contains(r#"exai_x{error="a \"b\"\nc"} 1"#));
    }
}
