//! Reads an export into a store, line by line. Ids, `seq`s and timestamps are kept, so
//! the API shows every thread as it was. Importing again changes nothing: a thread or
//! run already there as in the file is left alone, one that differs is reported as a
//! conflict and never overwritten, and a thread whose import was cut short is finished.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;

use chrono::TimeDelta;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use uuid::Uuid;

use super::format::{FORMAT, Line, VERSION};
use crate::domain::{ConversationPolicy, NewThread, NewTurn, Rejection, Thread, ToolRun, Turn};
use crate::store::{AppendTurns, Store, StoreError, WriteError};

/// Imported turns keep their original times, so neither the configured expiry nor the
/// turn limit of this deployment may refuse them.
const IMPORT_POLICY: ConversationPolicy =
    ConversationPolicy { timeout: TimeDelta::days(36_500), max_turns: u32::MAX };

/// Threads imported at once: each mostly waits for its store to commit.
const CONCURRENT_THREADS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("line {line}: {message}")]
    Malformed { line: u64, message: String },
    #[error("the file ends without its end line after line {line}: truncated")]
    Truncated { line: u64 },
    #[error(
        "the end line counts {expected} threads and {runs} runs; the file holds {found_threads} and {found_runs}"
    )]
    CountsDiffer { expected: u64, runs: u64, found_threads: u64, found_runs: u64 },
    #[error(transparent)]
    Refused(#[from] Rejection),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<WriteError> for ImportError {
    fn from(error: WriteError) -> Self {
        error.into_either()
    }
}

impl ImportError {
    /// The file itself is at fault, not the store.
    pub fn is_bad_file(&self) -> bool {
        matches!(
            self,
            ImportError::Malformed { .. } | ImportError::Truncated { .. } | ImportError::CountsDiffer { .. }
        )
    }
}

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Imported {
    pub threads_created: u64,
    /// Threads found with only some of their turns, then completed.
    pub threads_completed: u64,
    pub threads_unchanged: u64,
    pub runs_created: u64,
    pub runs_unchanged: u64,
    /// Threads and runs that differ from what the store holds, left as they are there.
    pub conflicts: u64,
}

impl Imported {
    pub fn changed_nothing(&self) -> bool {
        self.threads_created + self.threads_completed + self.runs_created == 0
    }
}

enum Outcome {
    Created,
    /// Only for threads.
    Completed,
    Unchanged,
    Conflict(String),
}

/// Reads the export at `path` into `store`, telling `progress` each line number read.
pub async fn import(
    store: &dyn Store,
    path: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<Imported, ImportError> {
    let read_error = |source| ImportError::Read { path: path.display().to_string(), source };
    let mut reader = BufReader::new(File::open(path).map_err(read_error)?);
    let mut imported = Imported::default();
    // Children can come before their parents; they wait, by their place in the file.
    let mut waiting: Vec<(u64, u64)> = Vec::new();
    let (mut number, mut offset, mut buffer) = (0u64, 0u64, String::new());
    let (mut threads, mut runs) = (0u64, 0u64);
    let mut end = None;
    let mut in_flight = FuturesUnordered::new();
    let read: Result<(), ImportError> = async {
        loop {
            buffer.clear();
            let read = reader.read_line(&mut buffer).map_err(read_error)?;
            if read == 0 {
                return Ok(());
            }
            number += 1;
            progress(number);
            match parse(&buffer, number)? {
                Line::Header { format, version, .. } if number == 1 => check_header(&format, version)?,
                _ if number == 1 => {
                    return Err(malformed(number, "the first line is not an exai export header"));
                }
                Line::Header { .. } => return Err(malformed(number, "a second header")),
                _ if end.is_some() => return Err(malformed(number, "a line after the end line")),
                Line::Thread { thread, turns } => {
                    threads += 1;
                    if in_flight.len() >= CONCURRENT_THREADS
                        && let Some(done) = in_flight.next().await
                    {
                        settle(done, &mut imported, &mut waiting)?;
                    }
                    let at = (offset, number);
                    in_flight
                        .push(async move { (at, thread.id, import_thread(store, &thread, &turns).await) });
                }
                Line::Run { run } => {
                    // A run's thread must be in before the run.
                    while let Some(done) = in_flight.next().await {
                        settle(done, &mut imported, &mut waiting)?;
                    }
                    runs += 1;
                    match import_run(store, &run).await? {
                        Outcome::Created => imported.runs_created += 1,
                        Outcome::Unchanged => imported.runs_unchanged += 1,
                        conflict => tally(&mut imported, conflict, &run.id.to_string()),
                    }
                }
                Line::End { threads, turns: _, runs } => end = Some((threads, runs)),
            }
            offset += read as u64;
        }
    }
    .await;
    // Threads under way finish whatever stopped the reading, so none is left half-written.
    while let Some(done) = in_flight.next().await {
        settle(done, &mut imported, &mut waiting)?;
    }
    read?;
    let Some((expected, expected_runs)) = end else {
        return Err(ImportError::Truncated { line: number });
    };
    if (expected, expected_runs) != (threads, runs) {
        return Err(ImportError::CountsDiffer {
            expected,
            runs: expected_runs,
            found_threads: threads,
            found_runs: runs,
        });
    }
    import_waiting(store, &mut reader, waiting, &mut imported).await.map_err(|error| match error {
        ImportError::Read { source, .. } => read_error(source),
        other => other,
    })?;
    Ok(imported)
}

/// Imports the threads that waited for a parent, round after round, until none can
/// be: those have a parent neither the file nor the store holds.
async fn import_waiting(
    store: &dyn Store,
    reader: &mut BufReader<File>,
    mut waiting: Vec<(u64, u64)>,
    imported: &mut Imported,
) -> Result<(), ImportError> {
    let mut buffer = String::new();
    while !waiting.is_empty() {
        let before = waiting.len();
        let mut still = Vec::new();
        for (offset, number) in waiting {
            reader
                .seek(SeekFrom::Start(offset))
                .map_err(|source| ImportError::Read { path: String::new(), source })?;
            buffer.clear();
            reader
                .read_line(&mut buffer)
                .map_err(|source| ImportError::Read { path: String::new(), source })?;
            let Line::Thread { thread, turns } = parse(&buffer, number)? else { continue };
            match import_thread(store, &thread, &turns).await {
                Err(WriteError::Refused(Rejection::ParentNotFound(_))) => still.push((offset, number)),
                outcome => tally(imported, outcome?, &thread.id.to_string()),
            }
        }
        if still.len() == before {
            for (_, number) in &still {
                tracing::warn!(
                    line = number,
                    "conflict: the thread's parent is in neither the file nor the store"
                );
            }
            imported.conflicts += still.len() as u64;
            break;
        }
        waiting = still;
    }
    Ok(())
}

/// Counts a thread's outcome, or sets it aside to wait for its parent.
fn settle(
    ((offset, number), id, outcome): ((u64, u64), Uuid, Result<Outcome, WriteError>),
    imported: &mut Imported,
    waiting: &mut Vec<(u64, u64)>,
) -> Result<(), ImportError> {
    match outcome {
        Err(WriteError::Refused(Rejection::ParentNotFound(_))) => waiting.push((offset, number)),
        outcome => tally(imported, outcome?, &id.to_string()),
    }
    Ok(())
}

fn parse(text: &str, number: u64) -> Result<Line, ImportError> {
    serde_json::from_str(text).map_err(|error| malformed(number, error.to_string()))
}

fn malformed(line: u64, message: impl Into<String>) -> ImportError {
    ImportError::Malformed { line, message: message.into() }
}

fn check_header(format: &str, version: u32) -> Result<(), ImportError> {
    if format != FORMAT || version != VERSION {
        return Err(malformed(
            1,
            format!("{format} version {version}; this exai reads {FORMAT} version {VERSION}"),
        ));
    }
    Ok(())
}

fn tally(imported: &mut Imported, outcome: Outcome, id: &str) {
    match outcome {
        Outcome::Created => imported.threads_created += 1,
        Outcome::Completed => imported.threads_completed += 1,
        Outcome::Unchanged => imported.threads_unchanged += 1,
        Outcome::Conflict(why) => {
            tracing::warn!(id, why, "conflict: left as the store holds it");
            imported.conflicts += 1;
        }
    }
}

async fn import_thread(store: &dyn Store, thread: &Thread, turns: &[Turn]) -> Result<Outcome, WriteError> {
    let (held, outcome) = match store.get_thread(thread.id).await? {
        None => {
            let new = NewThread {
                title: thread.title.clone(),
                tool_name: thread.tool_name.clone(),
                parent_id: thread.parent_id,
                metadata: thread.metadata.clone(),
            };
            store.create_thread(thread.id, &new, thread.created_at).await?;
            (0, Outcome::Created)
        }
        Some(stored) => {
            let same = stored.thread.parent_id == thread.parent_id
                && stored.thread.title == thread.title
                && stored.thread.tool_name == thread.tool_name
                && stored.thread.metadata == thread.metadata
                && stored.thread.created_at == thread.created_at;
            if !same || stored.turns.len() > turns.len() || stored.turns[..] != turns[..stored.turns.len()] {
                return Ok(Outcome::Conflict("the store holds a different thread under this id".into()));
            }
            if stored.turns.len() == turns.len() {
                return Ok(Outcome::Unchanged);
            }
            (stored.turns.len(), Outcome::Completed)
        }
    };
    append_from(store, thread, &turns[held..]).await?;
    Ok(outcome)
}

/// Appends turns as they were appended: those written at one instant together, at it.
async fn append_from(store: &dyn Store, thread: &Thread, turns: &[Turn]) -> Result<(), WriteError> {
    for batch in turns.chunk_by(|a, b| a.created_at == b.created_at) {
        let append = AppendTurns {
            thread_id: thread.id,
            turns: batch.iter().map(new_turn).collect(),
            idempotency_key: None,
            policy: IMPORT_POLICY,
            now: batch[0].created_at,
        };
        let appended = store.append_turns(&append).await?;
        if appended.turns.first().map(|turn| turn.seq) != Some(batch[0].seq) {
            return Err(StoreError::Internal(format!(
                "thread {}: turn {} was stored with another seq",
                thread.id, batch[0].seq
            ))
            .into());
        }
    }
    Ok(())
}

fn new_turn(turn: &Turn) -> NewTurn {
    NewTurn {
        role: turn.role,
        content: turn.content.clone(),
        tool_name: turn.tool_name.clone(),
        files: turn.files.clone(),
        model_provider: turn.model_provider.clone(),
        model_name: turn.model_name.clone(),
        metadata: turn.metadata.clone(),
    }
}

async fn import_run(store: &dyn Store, run: &ToolRun) -> Result<Outcome, StoreError> {
    Ok(match store.get_run(run.id).await? {
        None => {
            store.save_run(run).await?;
            Outcome::Created
        }
        Some(stored) if stored == *run => Outcome::Unchanged,
        Some(_) => Outcome::Conflict("the store holds a different run under this id".into()),
    })
}
