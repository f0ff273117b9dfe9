//! What export and import move in bulk: a thread with every turn and the idempotency
//! keys its appends used, read from one snapshot or stored in one transaction.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

use crate::domain::{Thread, ToolRun, Turn};

/// A thread as it is stored: its turns, oldest first, and the idempotency key of each
/// append that had one, by the `seq` of the append's first turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreadRecord {
    pub thread: Thread,
    pub turns: Vec<Turn>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "keys_by_seq")]
    pub keys: BTreeMap<u32, String>,
}

/// JSON object keys are strings; read through a buffer (as in a tagged line), they are
/// not taken for numbers, so each is parsed here.
fn keys_by_seq<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<u32, String>, D::Error> {
    BTreeMap::<String, String>::deserialize(deserializer)?
        .into_iter()
        .map(|(seq, key)| Ok((seq.parse().map_err(D::Error::custom)?, key)))
        .collect()
}

impl ThreadRecord {
    /// The same thread, turns and keys; the version (a cache's ordering, which moves on
    /// differently in each store) does not count.
    pub fn same_as(&self, other: &ThreadRecord) -> bool {
        let version = |thread: &Thread| Thread { version: 0, ..thread.clone() };
        version(&self.thread) == version(&other.thread)
            && self.turns == other.turns
            && self.keys == other.keys
    }
}

/// What a store holds, counted in the snapshot an export reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Counts {
    pub threads: u64,
    pub turns: u64,
    pub runs: u64,
}

/// Where [`Store::export`](super::Store::export) delivers what it reads, in order:
/// the counts, then every thread, then every run. `Break` stops the export (a write
/// failed; the sink keeps why).
pub trait ExportSink: Send {
    fn counts(&mut self, counts: Counts) -> ControlFlow<()>;
    fn thread(&mut self, record: ThreadRecord) -> ControlFlow<()>;
    fn run(&mut self, run: ToolRun) -> ControlFlow<()>;
}

/// What became of one thread of an imported batch.
#[derive(Debug, Clone, PartialEq)]
pub enum ImportedThread {
    Created,
    /// The store held a thread under this id already, as here; it was left alone.
    Held(Box<ThreadRecord>),
    /// Its parent is neither in the store nor stored by this batch; nothing was written.
    ParentMissing,
}
