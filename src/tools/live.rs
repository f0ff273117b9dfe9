//! What a run still under way shares with those who watch it: its events, its outcome,
//! its cancellation.

use serde::{Deserialize, Serialize};
use std::sync::atomic::AtomicBool;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::domain::ToolRun;

/// Events kept for a subscriber that reads slowly.
pub(super) const EVENT_BUFFER: usize = 256;

/// What a subscriber to a run sees.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
pub enum RunEvent {
    Progress {
        elapsed_ms: u64,
        message: String,
    },
    /// A piece of a streamed answer.
    Delta {
        text: String,
    },
    Finished(ToolRun),
}

pub struct LiveRun {
    pub events: broadcast::Sender<RunEvent>,
    /// Set once, when the run has ended and been recorded.
    pub outcome: watch::Sender<Option<ToolRun>>,
    pub cancel: CancellationToken,
    /// The run holds a slot (it is no longer waiting in the queue).
    pub running: AtomicBool,
}

impl LiveRun {
    pub fn new() -> Self {
        Self {
            events: broadcast::channel(EVENT_BUFFER).0,
            outcome: watch::channel(None).0,
            cancel: CancellationToken::new(),
            running: AtomicBool::new(false),
        }
    }
}

/// A run just accepted, and the way to wait for its end.
pub struct Started {
    pub run: ToolRun,
    pub(super) outcome: watch::Receiver<Option<ToolRun>>,
}

impl Started {
    pub async fn finished(mut self) -> ToolRun {
        match self.outcome.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone().unwrap_or(self.run),
            Err(_) => self.run,
        }
    }
}

/// Where a subscriber starts: a run still live, or one already over.
pub enum Subscription {
    Live { events: broadcast::Receiver<RunEvent>, finished: Option<ToolRun> },
    Over(ToolRun),
}
