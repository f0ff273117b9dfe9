//! Any store, with each call timed for metrics and slow calls logged.

use std::sync::Arc;
use std::time::Duration;

use super::{DelegatingStore, Store, StoreHook};
use crate::metrics::{Metrics, timed};

pub type MeteredStore = DelegatingStore<Timing>;

/// Records each call in the store latency histograms, by operation and backend.
pub struct Timing {
    metrics: Arc<Metrics>,
    slow: Duration,
    backend: &'static str,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>, slow: Duration) -> Self {
        let hook = Timing { metrics, slow, backend: inner.backend() };
        Self { inner, hook }
    }
}

impl StoreHook for Timing {
    async fn around<T: Send>(&self, op: &'static str, call: impl Future<Output = T> + Send) -> T {
        timed(&self.metrics.store, "store", (op, self.backend), self.slow, call).await
    }
}
