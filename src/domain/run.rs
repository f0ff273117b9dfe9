use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Where a tool run is in its life. The last four are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    Completed,
    Failed,
    TimedOut,
    Cancelled,
}

impl RunStatus {
    pub const ALL: [RunStatus; 6] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::TimedOut,
        RunStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::TimedOut => "timed_out",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(value: &str) -> Option<RunStatus> {
        Self::ALL.into_iter().find(|status| status.as_str() == value)
    }

    pub fn is_final(self) -> bool {
        !matches!(self, RunStatus::Queued | RunStatus::Running)
    }
}

/// One execution of a tool, tied to the thread it continues.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ToolRun {
    pub id: Uuid,
    pub tool: String,
    pub status: RunStatus,
    /// The thread the run reads its history from and appends its turns to.
    pub continuation_id: Uuid,
    pub input: String,
    pub output: Option<String>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub timeout_secs: u32,
    /// Turns the thread can still take, once the run has finished.
    pub turns_remaining: Option<u32>,
}

/// A run as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ToolRun)]
pub struct RunView<'a> {
    #[serde(flatten)]
    pub run: &'a ToolRun,
    /// From start to finish, once finished.
    pub duration_ms: Option<i64>,
}

impl ToolRun {
    pub fn view(&self) -> RunView<'_> {
        let duration_ms = match (self.started_at, self.finished_at) {
            (Some(started), Some(finished)) => Some((finished - started).num_milliseconds()),
            _ => None,
        };
        RunView { run: self, duration_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in RunStatus::ALL {
            assert_eq!(RunStatus::parse(status.as_str()), Some(status));
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        assert!(RunStatus::TimedOut.is_final() && !RunStatus::Running.is_final());
    }
}
