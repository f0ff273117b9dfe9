//! The export file: one JSON object per line. A header first (with the counts the
//! store held when the export began), then a line per thread with its turns (and the
//! idempotency keys its appends used) and a line per run, then an end line with the
//! counts written, whose absence tells a truncated file.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::ToolRun;
use crate::store::ThreadRecord;

pub const FORMAT: &str = "exai-export";
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Line {
    Header {
        format: String,
        version: u32,
        backend: String,
        exported_at: DateTime<Utc>,
        threads: u64,
        turns: u64,
        runs: u64,
    },
    /// A thread with its turns and the idempotency keys of its appends.
    Thread(ThreadRecord),
    Run {
        run: ToolRun,
    },
    End {
        threads: u64,
        turns: u64,
        runs: u64,
    },
}
