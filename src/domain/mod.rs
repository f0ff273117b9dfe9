//! Threads, turns and the rules they obey. Pure data and checks; no I/O.

mod history;
mod policy;
mod rejection;
mod run;
mod thread;
mod turn;
mod validation;

pub use history::{Chain, HISTORY_MAX_BYTES, HISTORY_MAX_DEPTH, History, HistoryLimits};
pub use policy::ConversationPolicy;
pub use rejection::Rejection;
pub use run::{RunStatus, RunView, ToolRun};
pub use thread::{NewThread, Thread, ThreadView, ThreadWithTurns};
pub use turn::{NewTurn, Role, Turn};
pub use validation::{
    ValidationError, check_client_idempotency_key, check_idempotency_key, check_text, check_tool_name,
    storable_text,
};

/// Free-form JSON object attached to threads and turns.
pub type Metadata = serde_json::Map<String, serde_json::Value>;

/// Timestamps are kept at microsecond precision, the finest every store can hold,
/// so a value reads back exactly as it was written whatever the backend.
pub fn truncate_to_micros(t: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    use chrono::{DurationRound, TimeDelta};
    t.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(t)
}
