//! A tool as the executor holds it: its runner, its slots and its bounded queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Semaphore;

use super::registry::ToolDefinition;
use super::runners::{Runner, runner};

/// Runs that may wait for a free slot, per slot of a tool's concurrency.
const QUEUE_PER_SLOT: usize = 4;

pub struct Tool {
    pub definition: ToolDefinition,
    pub runner: Box<dyn Runner>,
    /// One permit per run allowed at once.
    pub slots: Semaphore,
    /// Runs running or waiting for a slot.
    admitted: AtomicUsize,
}

/// A run's place in its tool's queue; given back when dropped, however the run ends.
pub struct Admission(Arc<Tool>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Tool {
    pub fn new(definition: ToolDefinition, client: &reqwest::Client) -> Self {
        Self {
            runner: runner(&definition.kind, client),
            slots: Semaphore::new(definition.max_concurrency),
            admitted: AtomicUsize::new(0),
            definition,
        }
    }

    /// A place in the queue, or `Err(runs already admitted)` when it is full.
    pub fn admit(self: &Arc<Self>) -> Result<Admission, usize> {
        let limit = self.definition.max_concurrency * (1 + QUEUE_PER_SLOT);
        let admitted = self.admitted.fetch_add(1, Ordering::AcqRel);
        let admission = Admission(self.clone());
        if admitted >= limit {
            return Err(admitted);
        }
        Ok(admission)
    }
}
