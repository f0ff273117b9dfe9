use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use utoipa::ToSchema;
use uuid::Uuid;

use super::Turn;

/// How many `parent_id` links a history read follows from the requested thread.
pub const HISTORY_MAX_DEPTH: u32 = 20;

/// Most bytes of turns one history read returns (and one tool run sends upstream): the
/// turns' content, files and metadata as stored. A chain can hold far more (20 links of
/// full threads of 1 MiB turns); the newest turns are kept, as a model's context window
/// needs anyway, and the server never loads more than this.
pub const HISTORY_MAX_BYTES: u32 = 2 * 1024 * 1024;

/// How much of a chain a history read returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// `parent_id` links followed from the requested thread.
    pub max_depth: u32,
    /// Bytes of turns (content, files and metadata as stored), newest turns first.
    pub max_bytes: u32,
}

impl HistoryLimits {
    pub const DEFAULT: HistoryLimits =
        HistoryLimits { max_depth: HISTORY_MAX_DEPTH, max_bytes: HISTORY_MAX_BYTES };
}

/// What a store returns for a history read: the threads of a chain, oldest first, and
/// the newest of their turns that fit the byte budget, in conversation order.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Chain {
    pub thread_ids: Vec<Uuid>,
    pub turns: Vec<Turn>,
    /// Turns in the whole chain, those left out for the budget included.
    pub total_turns: u32,
}

/// The conversation a continuation builds on.
#[derive(Debug, Serialize, ToSchema)]
pub struct History {
    /// Threads of the chain, oldest ancestor first, the requested thread last.
    pub thread_ids: Vec<Uuid>,
    /// The newest turns of the chain that fit in 2 MiB (content, files and metadata),
    /// oldest first.
    pub turns: Vec<Turn>,
    /// Files referred to by the returned turns, newest mention first, each once.
    pub files: Vec<String>,
    /// Turns in the whole chain.
    pub total_turns: u32,
    /// Older turns of the chain left out to keep within the budget.
    pub omitted_turns: u32,
    /// Whether any turn was left out (`omitted_turns > 0`).
    pub truncated: bool,
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
        let returned = u32::try_from(chain.turns.len()).unwrap_or(u32::MAX);
        let omitted_turns = chain.total_turns.saturating_sub(returned);
        History {
            thread_ids: chain.thread_ids,
            total_turns: chain.total_turns.max(returned),
            turns: chain.turns,
            files,
            omitted_turns,
            truncated: omitted_turns > 0,
        }
    }
}

/// What a history document says after its turns.
#[derive(Serialize)]
struct Tail<'a> {
    files: &'a [String],
    total_turns: u32,
    omitted_turns: u32,
    truncated: bool,
}

impl History {
    /// The history's JSON document in pieces: the head, then each turn serialized only
    /// when its piece is asked for and dropped with it, so that a response streamed from
    /// these never holds a second copy of the turns.
    pub fn into_json_chunks(self) -> impl Iterator<Item = Vec<u8>> + Send {
        let mut opening = br#"{"thread_ids":"#.to_vec();
        serde_json::to_writer(&mut opening, &self.thread_ids).expect("ids always serialize");
        opening.extend_from_slice(br#","turns":["#);
        let tail = Tail {
            files: &self.files,
            total_turns: self.total_turns,
            omitted_turns: self.omitted_turns,
            truncated: self.truncated,
        };
        let mut closing = b"],".to_vec();
        serde_json::to_writer(&mut closing, &tail).expect("a history's tail always serializes");
        closing.remove(2); // the tail's opening brace: its fields continue the document
        let turns = self.turns.into_iter().enumerate().map(|(index, turn)| {
            let mut piece = if index == 0 { Vec::new() } else { vec![b','] };
            serde_json::to_writer(&mut piece, &turn).expect("a turn always serializes");
            piece
        });
        std::iter::once(opening).chain(turns).chain(std::iter::once(closing))
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
            total_turns: 3,
        };
        let history = History::from(chain);
        assert_eq!(history.files, ["d", "c", "a", "b"]);
        assert_eq!((history.total_turns, history.omitted_turns, history.truncated), (3, 0, false));
    }

    #[test]
    fn the_chunks_make_the_same_document_as_serializing_it_whole() {
        for turns in [vec![], vec![turn(1, &["a"])], vec![turn(1, &["a"]), turn(2, &["b"]), turn(3, &[])]] {
            let chain = Chain { thread_ids: vec![Uuid::nil()], total_turns: 7, turns };
            let whole = serde_json::to_value(History::from(chain.clone())).unwrap();
            let chunks: Vec<u8> = History::from(chain).into_json_chunks().flatten().collect();
            assert_eq!(serde_json::from_slice::<serde_json::Value>(&chunks).unwrap(), whole);
        }
    }

    #[test]
    fn turns_left_out_are_counted() {
        let chain = Chain { thread_ids: vec![Uuid::nil()], turns: vec![turn(5, &[])], total_turns: 5 };
        let history = History::from(chain);
        assert_eq!((history.total_turns, history.omitted_turns, history.truncated), (5, 4, true));
    }
}
