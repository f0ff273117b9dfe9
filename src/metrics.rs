//! Prometheus metrics: labelled latency histograms kept in-process, and a writer for
//! the text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(bucket) = BUCKETS.iter().position(|bound| seconds <= *bound) {
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
        quantile_of(&counts, self.count(), q)
    }
}

/// The bucket bound at which the cumulative count reaches `q` of `total`.
fn quantile_of(counts: &[u64], total: u64, q: f64) -> Option<Duration> {
    if total == 0 {
        return None;
    }
    let wanted = (q * total as f64).ceil().max(1.0) as u64;
    let mut cumulative = 0;
    for (bound, count) in BUCKETS.iter().zip(counts) {
        cumulative += count;
        if cumulative >= wanted {
            return Some(Duration::from_secs_f64(*bound));
        }
    }
    None
}

/// Histograms by label values, created on first use.
pub struct Family<L> {
    series: RwLock<BTreeMap<L, Arc<Histogram>>>,
}

impl<L: Ord + Clone> Family<L> {
    fn new() -> Self {
        Self { series: RwLock::new(BTreeMap::new()) }
    }

    pub fn with(&self, labels: &L) -> Arc<Histogram> {
        if let Some(found) = self.series.read().unwrap_or_else(PoisonError::into_inner).get(labels) {
            return found.clone();
        }
        let mut series = self.series.write().unwrap_or_else(PoisonError::into_inner);
        series.entry(labels.clone()).or_default().clone()
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
            http: Family::new(),
            store: Family::new(),
            cache: Family::new(),
            runs: Family::new(),
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
            for (bound, bucket) in BUCKETS.iter().zip(&histogram.buckets) {
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
        let family = Family::new();
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
        let histogram = Histogram::default();
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
    fn label_values_are_escaped() {
        let mut out = Exposition::default();
        out.labelled("exai_x", "gauge", "test", &[(vec![("error", "a \"b\"\nc")], 1.0)]);
        assert!(out.finish().contains(r#"exai_x{error="a \"b\"\nc"} 1"#));
    }
}
