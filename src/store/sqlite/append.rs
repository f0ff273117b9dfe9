//! Appends: checked, written and answered at a cost independent of the thread's size:
//! one statement reads what the checks need, one writes each turn and answers it as
//! stored, one moves the thread's header. The checks judge the thread as it was before
//! the writes; a refused append is undone by its savepoint.

use rusqlite::{Connection, params};
use uuid::Uuid;

use super::rows::{
    decode_thread, decode_time, decode_turn, encode_time, number, optional_number, required_text,
};
use super::{SELECT_TURNS_FROM, SqliteStore};
use crate::domain::{Rejection, Thread, Turn};
use crate::store::{AppendTurns, Appended, StoreError, TURNS_PER_RUN, WriteError};

/// Thread `?1`'s header with, for the idempotency key `?2`: the first seq of the turns
/// it already wrote, whether it is the key of an unfinished run (one holding room) or of
/// one that has ended, and how many other unfinished runs hold room.
const CHECK_APPEND: &str = concat!(
    "SELECT ",
    thread_columns!(),
    ", (SELECT seq FROM messages WHERE conversation_id = ?1 AND idempotency_key = ?2) AS replayed_from",
    ", EXISTS (SELECT 1 FROM tool_runs WHERE continuation_id = ?1",
    " AND status IN ('queued', 'running') AND 'run:' || id = ?2) AS run_under_way",
    ", EXISTS (SELECT 1 FROM tool_runs WHERE ?2 GLOB 'run:*' AND id = substr(?2, 5)",
    " AND status NOT IN ('queued', 'running')) AS run_ended",
    ", (",
    open_runs!(),
    ") AS open_runs FROM conversations c WHERE c.id = ?1"
);

/// Turn `?2` of thread `?1`, answered as stored.
const INSERT_TURN: &str = concat!(insert_turn!(), " RETURNING ", turn_columns!(""));

/// `?2` more turns on thread `?1`, changed at `?3`.
const MOVE_HEADER: &str = "UPDATE conversations SET turn_count = turn_count + ?2, updated_at = ?3, \
     version = version + 1 WHERE id = ?1 RETURNING turn_count, updated_at, version";

/// What the check read: the thread before the append, the first seq its key wrote if
/// it was used already, and the thread's time as stored.
struct Checked {
    thread: Thread,
    replayed_from: Option<u32>,
    updated_at: String,
}

impl SqliteStore {
    /// Appends within the writer's transaction and answers with the thread's header and
    /// the turns written: the thread's other turns are never read.
    pub(super) fn append_in(&self, conn: &Connection, append: &AppendTurns) -> Result<Appended, WriteError> {
        let id = append.thread_id;
        let Checked { mut thread, replayed_from, updated_at } = self.check(conn, append)?;
        if let Some(first) = replayed_from {
            let turns = self.turns_from(conn, id, first, append.turns.len() as u32)?;
            return Ok(Appended { thread, turns, replayed: true });
        }
        // Clocks of concurrent callers differ slightly, and a thread never moves back in
        // time. Compared as stored, as SQLite's `max` would.
        let at = encode_time(append.now).max(updated_at);
        let key = append.idempotency_key.as_deref();
        let id = id.to_string();
        let mut turns = Vec::with_capacity(append.turns.len());
        let mut insert = conn.prepare_cached(INSERT_TURN)?;
        for (seq, turn) in (thread.turn_count + 1..).zip(&append.turns) {
            self.trip();
            let key = if seq == thread.turn_count + 1 { key } else { None };
            let mut inserted = insert.query(turn_row!(id, seq, turn, key, at))?;
            let row =
                inserted.next()?.ok_or_else(|| StoreError::Internal("a turn was not inserted".into()))?;
            turns.extend(decode_turn(row)?);
        }
        self.trip();
        let mut header = conn.prepare_cached(MOVE_HEADER)?;
        let mut moved = header.query(params![id, append.turns.len() as u32, at])?;
        let row = moved.next()?.ok_or_else(|| StoreError::Internal("an append moved no header".into()))?;
        thread.turn_count = number(row, "turn_count")?;
        thread.updated_at = decode_time(row, "updated_at")?;
        thread.version = number(row, "version")?;
        Ok(Appended { thread, turns, replayed: false })
    }

    /// Reads the thread as it is before the append and judges the append by it, unless
    /// its key was used already.
    fn check(&self, conn: &Connection, append: &AppendTurns) -> Result<Checked, WriteError> {
        self.trip();
        let mut check = conn.prepare_cached(CHECK_APPEND)?;
        let mut rows = check.query(params![append.thread_id.to_string(), append.idempotency_key])?;
        let row = rows.next()?.ok_or(Rejection::ThreadNotFound(append.thread_id))?;
        let thread = decode_thread(row)?;
        let replayed_from = optional_number(row, "replayed_from")?;
        if replayed_from.is_none() {
            refusal(append, &thread, row)?;
        }
        Ok(Checked { thread, replayed_from, updated_at: required_text(row, "updated_at")? })
    }

    /// `count` turns of the thread from `first` on, as stored.
    fn turns_from(
        &self,
        conn: &Connection,
        id: Uuid,
        first: u32,
        count: u32,
    ) -> Result<Vec<Turn>, StoreError> {
        self.trip();
        let mut select = conn.prepare_cached(SELECT_TURNS_FROM)?;
        let mut rows = select.query(params![id.to_string(), first, count])?;
        let mut turns = Vec::new();
        while let Some(row) = rows.next()? {
            turns.extend(decode_turn(row)?);
        }
        Ok(turns)
    }
}

/// Why `thread`, as it was before the append, refuses it, if it does; `row` is its check.
fn refusal(append: &AppendTurns, thread: &Thread, row: &rusqlite::Row) -> Result<(), WriteError> {
    let id = append.thread_id;
    // A run's end is final: the answer of a run that ended without it stays out.
    if number::<i64>(row, "run_ended")? != 0 {
        return Err(Rejection::RunEnded.into());
    }
    // A run that reserved its room while the thread was open records its answer even
    // if the thread expired while it ran.
    if append.policy.is_expired(thread.updated_at, append.now) && number::<i64>(row, "run_under_way")? == 0 {
        return Err(Rejection::ThreadExpired(id).into());
    }
    // Other runs' reserved room stays free for their answers.
    let reserved = TURNS_PER_RUN * number::<u32>(row, "open_runs")?;
    if thread.turn_count + append.turns.len() as u32 + reserved > append.policy.max_turns {
        return Err(Rejection::TurnLimitReached { thread_id: id, max_turns: append.policy.max_turns }.into());
    }
    Ok(())
}
