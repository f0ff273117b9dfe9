//! Tool runs in SQLite.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, ToSql, params};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

use super::SqliteStore;
use super::rows::{decode_time, decode_uuid, encode_time, number, position};
use crate::domain::{ConversationPolicy, Rejection, RunStatus, ToolRun};
use crate::store::{
    Listed, Page, RunLease, RunQuery, StoreError, Sweep, TURNS_PER_RUN, WriteError, run_position,
};

macro_rules! run_columns {
    () => {
        "id, tool, status, continuation_id, input, output, error, created_at, started_at, \
         finished_at, timeout_secs, turns_remaining"
    };
}
pub(super) const RUN_COLUMNS: &str = run_columns!();

/// A new run comes with its owner's columns; an update leaves them alone.
const UPSERT_RUN: &str = concat!(
    "INSERT INTO tool_runs (",
    run_columns!(),
    ", owner, lease_expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
     ON CONFLICT (id) DO UPDATE SET status = excluded.status, output = excluded.output, \
     error = excluded.error, started_at = excluded.started_at, \
     finished_at = excluded.finished_at, turns_remaining = excluded.turns_remaining \
     WHERE tool_runs.status IN ('queued', 'running')"
);

pub(super) fn decode_run(row: &SqliteRow) -> Result<ToolRun, StoreError> {
    let status: String = row.try_get("status")?;
    let optional_time = |column: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
        match row.try_get::<Option<String>, _>(column)? {
            Some(_) => decode_time(row, column).map(Some),
            None => Ok(None),
        }
    };
    Ok(ToolRun {
        id: decode_uuid(row, "id")?,
        tool: row.try_get("tool")?,
        status: RunStatus::parse(&status)
            .ok_or_else(|| StoreError::Internal(format!("unreadable run status {status:?}")))?,
        continuation_id: decode_uuid(row, "continuation_id")?,
        input: row.try_get("input")?,
        output: row.try_get("output")?,
        error: row.try_get("error")?,
        created_at: decode_time(row, "created_at")?,
        started_at: optional_time("started_at")?,
        finished_at: optional_time("finished_at")?,
        timeout_secs: row.try_get("timeout_secs")?,
        turns_remaining: row.try_get("turns_remaining")?,
    })
}

/// Inserts a run, owned by `lease`'s owner when given, or updates one that has not
/// ended; whether it wrote.
fn upsert(conn: &Connection, run: &ToolRun, lease: Option<&RunLease>) -> Result<bool, StoreError> {
    let written = conn.prepare_cached(UPSERT_RUN)?.execute(params![
        run.id.to_string(),
        run.tool,
        run.status.as_str(),
        run.continuation_id.to_string(),
        run.input,
        run.output,
        run.error,
        encode_time(run.created_at),
        run.started_at.map(encode_time),
        run.finished_at.map(encode_time),
        run.timeout_secs,
        run.turns_remaining,
        lease.map(|lease| &lease.owner),
        lease.map(|lease| encode_time(lease.expires_at)),
    ])?;
    Ok(written > 0)
}

impl SqliteStore {
    /// Whether the run was written: not when it had already ended.
    pub(super) fn upsert_run(&self, conn: &Connection, run: &ToolRun) -> Result<bool, StoreError> {
        self.trip();
        upsert(conn, run, None)
    }

    /// [`Store::reserve_run`](crate::store::Store::reserve_run) inside the writer's
    /// transaction, which SQLite's single writer serializes with every append.
    pub(super) fn reserve_in(
        &self,
        conn: &Connection,
        run: &ToolRun,
        lease: &RunLease,
        policy: ConversationPolicy,
        now: DateTime<Utc>,
    ) -> Result<(), WriteError> {
        let id = run.continuation_id;
        self.trip();
        let (updated_at, turn_count, open_runs): (_, u32, u32) = {
            let mut select = conn.prepare_cached(concat!(
                "SELECT updated_at, turn_count, (",
                open_runs!(),
                ") AS open_runs FROM conversations WHERE id = ?1"
            ))?;
            let mut rows = select.query(params![id.to_string(), None::<&str>])?;
            let row = rows.next()?.ok_or(Rejection::ThreadNotFound(id))?;
            (decode_time(row, "updated_at")?, number(row, "turn_count")?, number(row, "open_runs")?)
        };
        if policy.is_expired(updated_at, now) {
            return Err(Rejection::ThreadExpired(id).into());
        }
        if turn_count + TURNS_PER_RUN * (open_runs + 1) > policy.max_turns {
            return Err(Rejection::TurnLimitReached { thread_id: id, max_turns: policy.max_turns }.into());
        }
        self.trip();
        upsert(conn, run, Some(lease))?;
        Ok(())
    }

    pub(super) async fn select_run(&self, id: Uuid) -> Result<Option<ToolRun>, StoreError> {
        self.trip();
        let row = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM tool_runs WHERE id = ?1"))
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(decode_run).transpose()
    }

    pub(super) async fn select_runs(&self, query: &RunQuery) -> Result<Page<ToolRun>, StoreError> {
        self.trip();
        let rows = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM tool_runs \
             WHERE (?1 IS NULL OR (created_at, id) < (?1, ?2)) \
             AND (?3 IS NULL OR tool = ?3) AND (?4 IS NULL OR status = ?4) \
             ORDER BY created_at DESC, id DESC LIMIT ?5"
        ))
        .bind(query.after.map(|c| encode_time(c.at)))
        .bind(query.after.map(|c| c.id.to_string()))
        .bind(&query.tool)
        .bind(query.status.map(RunStatus::as_str))
        .bind(query.limit + 1)
        .fetch_all(&self.reader)
        .await?;
        let rows = rows.iter().map(|row| Listed::decode(decode_run(row), || position(row, "created_at")));
        Ok(Page::of(rows.collect(), query.limit, run_position, "run"))
    }

    pub(super) fn renew_leases(
        &self,
        conn: &Connection,
        lease: &RunLease,
        runs: &[Uuid],
    ) -> Result<Vec<Uuid>, StoreError> {
        let runs = serde_json::to_string(runs).map_err(|e| StoreError::Internal(e.to_string()))?;
        let ids = |sql: &str, params: &[&dyn ToSql]| -> Result<Vec<String>, StoreError> {
            self.trip();
            let mut statement = conn.prepare_cached(sql)?;
            let ids = statement.query_map(params, |row| row.get::<_, Option<String>>(0))?;
            Ok(ids.collect::<Result<Vec<_>, _>>()?.into_iter().flatten().collect())
        };
        let expires_at = encode_time(lease.expires_at);
        let asked = ids(
            "UPDATE tool_runs SET lease_expires_at = ?1 \
             WHERE id IN (SELECT value FROM json_each(?2)) AND owner = ?3 \
             AND status IN ('queued', 'running') RETURNING CASE WHEN cancel_requested THEN id END",
            &[&expires_at, &runs, &lease.owner],
        )?;
        let ended = ids(
            "SELECT id FROM tool_runs WHERE id IN (SELECT value FROM json_each(?1)) \
             AND status NOT IN ('queued', 'running')",
            &[&runs],
        )?;
        let to_stop = asked.iter().chain(&ended);
        to_stop.map(|id| Uuid::try_parse(id).map_err(|e| StoreError::Internal(e.to_string()))).collect()
    }

    pub(super) fn ask_cancel(&self, conn: &Connection, id: Uuid) -> Result<bool, StoreError> {
        self.trip();
        let asked = conn
            .prepare_cached(
                "UPDATE tool_runs SET cancel_requested = 1 WHERE id = ?1 AND status IN ('queued', 'running')",
            )?
            .execute([id.to_string()])?;
        Ok(asked > 0)
    }

    /// Times compare as Julian days: a lease's and one computed from a legacy run's
    /// timeout are not written alike.
    pub(super) fn fail_abandoned(&self, conn: &Connection, sweep: &Sweep<'_>) -> Result<u64, StoreError> {
        let (every_one, legacy_grace) = sweep.scope();
        self.trip();
        let failed = conn
            .prepare_cached(
                "UPDATE tool_runs SET status = 'failed', error = ?1, finished_at = ?2 \
                 WHERE status IN ('queued', 'running') AND owner IS NOT ?3 \
                 AND (?4 OR coalesce(julianday(lease_expires_at), \
                      julianday(created_at) + (timeout_secs + ?5) / 86400.0) < julianday(?2))",
            )?
            .execute(params![
                sweep.error,
                encode_time(sweep.now),
                sweep.owner,
                every_one,
                legacy_grace.as_secs_f64()
            ])?;
        Ok(failed as u64)
    }
}
