//! Writes a store out page by page, so memory stays the same whatever its size.

use std::io::Write;

use chrono::Utc;

use super::format::{FORMAT, Line, VERSION};
use crate::store::{Activity, RunQuery, Store, StoreError, ThreadQuery};

/// Threads or runs read per store call.
const PAGE: u32 = 200;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the export: {0}")]
    Write(#[from] std::io::Error),
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exported {
    pub threads: u64,
    pub turns: u64,
    pub runs: u64,
}

/// Writes every thread and run of `store` to `out`. Threads are read one at a time
/// while paging, so a thread changed during the export is written as it was when read;
/// export a stopped server (or an `exai backup` copy) for one consistent instant.
pub async fn export(store: &dyn Store, out: &mut impl Write) -> Result<Exported, ExportError> {
    let exported_at = Utc::now();
    let before = count(store).await?;
    let header = Line::Header {
        format: FORMAT.into(),
        version: VERSION,
        backend: store.backend().into(),
        exported_at,
        threads: before.threads,
        turns: before.turns,
        runs: before.runs,
    };
    let mut counts = Exported::default();
    write_line(out, &header)?;
    let mut query = all_threads();
    loop {
        let page = store.list_threads(&query).await?;
        for listed in &page.items {
            // A thread deleted since the listing is simply not exported.
            let Some(read) = store.get_thread(listed.id).await? else { continue };
            counts.threads += 1;
            counts.turns += read.turns.len() as u64;
            write_line(out, &Line::Thread { thread: read.thread, turns: read.turns })?;
        }
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    let mut query = all_runs();
    loop {
        let page = store.list_runs(&query).await?;
        for run in page.items {
            counts.runs += 1;
            write_line(out, &Line::Run { run })?;
        }
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    write_line(out, &Line::End { threads: counts.threads, turns: counts.turns, runs: counts.runs })?;
    out.flush()?;
    Ok(counts)
}

/// What the store holds, from its listings alone: a quick pass for the header.
async fn count(store: &dyn Store) -> Result<Exported, StoreError> {
    let mut counts = Exported::default();
    let mut query = all_threads();
    loop {
        let page = store.list_threads(&query).await?;
        counts.threads += page.items.len() as u64;
        counts.turns += page.items.iter().map(|thread| u64::from(thread.turn_count)).sum::<u64>();
        let Some(next) = page.next else { break };
        query.after = Some(next);
    }
    let mut query = all_runs();
    loop {
        let page = store.list_runs(&query).await?;
        counts.runs += page.items.len() as u64;
        let Some(next) = page.next else { break };
        query.after = Some(next);
    }
    Ok(counts)
}

/// The first page of a listing of every thread.
fn all_threads() -> ThreadQuery {
    ThreadQuery { limit: PAGE, after: None, search: None, continuation_id: None, activity: Activity::Any }
}

/// The first page of a listing of every run.
fn all_runs() -> RunQuery {
    RunQuery { limit: PAGE, after: None, tool: None, status: None }
}

fn write_line(out: &mut impl Write, line: &Line) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    out.write_all(b"\n")
}
