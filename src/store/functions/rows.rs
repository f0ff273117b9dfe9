//! Decoding what the store's SQL functions return, row by row, so one unreadable row
//! never takes a whole answer down.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::domain::Chain;
use crate::store::{Cursor, Listed, Page, readable_turn};

/// What `exai_history` returns, its turns decoded one by one.
#[derive(Deserialize)]
pub(super) struct ChainRows {
    thread_ids: Vec<Uuid>,
    turns: Vec<Box<RawValue>>,
    total_turns: u32,
}

impl ChainRows {
    pub(super) fn readable(self) -> Chain {
        let turns = self.turns.iter().filter_map(|turn| readable_turn(serde_json::from_str(turn.get())));
        Chain { thread_ids: self.thread_ids, turns: turns.collect(), total_turns: self.total_turns }
    }
}

/// The keyset columns of a listed thread or run, readable when the rest of it is not.
#[derive(Deserialize)]
pub(super) struct Keys {
    pub(super) id: Uuid,
    pub(super) created_at: DateTime<Utc>,
    pub(super) updated_at: Option<DateTime<Utc>>,
}

/// The page in a listing function's `limit + 1` rows, each decoded on its own so that
/// one unreadable row cannot take the page down.
pub(super) fn page_of<T: DeserializeOwned>(
    rows: Vec<Box<RawValue>>,
    limit: u32,
    at: fn(&T) -> Cursor,
    at_keys: fn(Keys) -> Cursor,
    what: &str,
) -> Page<T> {
    let rows = rows.iter().map(|row| {
        let keys = || serde_json::from_str(row.get()).ok().map(at_keys);
        Listed::decode(serde_json::from_str(row.get()), keys)
    });
    Page::of(rows.collect(), limit, at, what)
}
