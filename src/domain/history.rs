use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use utoipa::ToSchema;
use uuid::Uuid;

use super::Turn;

/// How many `parent_id` links a history read follows from the requested thread.
pub const HISTORY_MAX_DEPTH: u32 = 20;

/// What a store returns for a history read: the threads of a chain, oldest first,
/// and all of their turns in conversation order.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Chain {
    pub thread_ids: Vec<Uuid>,
    pub turns: Vec<Turn>,
}

/// The conversation a continuation builds on.
#[derive(Debug, Serialize, ToSchema)]
pub struct History {
    /// Threads of the chain, oldest ancestor first, the requested thread last.
    pub thread_ids: Vec<Uuid>,
    /// Every turn of the chain, oldest first.
    pub turns: Vec<Turn>,
    /// Files referred to anywhere in the chain, newest mention first, each once.
    pub files: Vec<String>,
    pub total_turns: usize,
}

impl From<Chain> for History {
    fn from(chain: Chain) -> Self {
        let mut seen = HashSet::new();
        let files = chain
            .turns
            .iter()
            .rev()
            .flat_map(|turn| turn.files.iter())
            .filter(|file| seen.insert(file.as_str()))
            .cloned()
            .collect();
        History { thread_ids: chain.thread_ids, total_turns: chain.turns.len(), turns: chain.turns, files }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Metadata, Role};

    fn turn(seq: u32, files: &[&str]) -> Turn {
        Turn {
            thread_id: Uuid::nil(),
            seq,
            role: Role::User,
            content: "c".into(),
            tool_name: None,
            files: files.iter().map(|f| f.to_string()).collect(),
            model_provider: None,
            model_name: None,
            metadata: Metadata::new(),
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn files_are_deduplicated_newest_first() {
        let chain = Chain {
            thread_ids: vec![Uuid::nil()],
            turns: vec![turn(1, &["a", "b"]), turn(2, &["c", "a"]), turn(3, &["d"])],
        };
        let history = History::from(chain);
        assert_eq!(history.files, ["d", "c", "a", "b"]);
        assert_eq!(history.total_turns, 3);
    }
}
