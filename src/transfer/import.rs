//! Reads an export into a store, whole threads a batch at a time. Ids, `seq`s, times
//! and idempotency keys are kept, so the API shows every thread as it was and a retried
//! append is still recognised. Importing again changes nothing: a thread or run already
//! there as in the file is left alone, one that differs is reported as a conflict and
//! never overwritten. A batch is one transaction, so no thread is ever half-written.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use indicatif::ProgressBar;

use super::format::{FORMAT, Line, VERSION};
use crate::domain::ToolRun;
use crate::store::{ImportedThread, Store, StoreError, ThreadRecord};

/// A batch is sent once it holds this many threads or turns.
const BATCH_THREADS: usize = 500;
const BATCH_TURNS: usize = 5_000;
/// Batches under way at once: the next is read while the store writes one.
const CONCURRENT_BATCHES: usize = 2;

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
    Store(#[from] StoreError),
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
    pub threads_unchanged: u64,
    pub runs_created: u64,
    pub runs_unchanged: u64,
    /// Threads and runs that differ from what the store holds, left as they are there.
    pub conflicts: u64,
}

impl Imported {
    pub fn changed_nothing(&self) -> bool {
        self.threads_created + self.runs_created == 0
    }
}

/// Where a thread line is in the file: its byte offset and line number.
type Place = (u64, u64);

/// Threads read and not yet sent to the store.
#[derive(Default)]
struct Batch {
    records: Vec<ThreadRecord>,
    places: Vec<Place>,
    turns: usize,
}

impl Batch {
    fn push(&mut self, record: ThreadRecord, place: Place) {
        self.turns += record.turns.len();
        self.records.push(record);
        self.places.push(place);
    }

    fn is_full(&self) -> bool {
        self.records.len() >= BATCH_THREADS || self.turns >= BATCH_TURNS
    }
}

/// Sends batches to the store, a few at once, and counts what became of their threads.
struct Importer<'a> {
    store: &'a dyn Store,
    imported: Imported,
    /// Threads whose parent was not stored yet, tried again at the end.
    waiting: Vec<Place>,
}

impl Importer<'_> {
    /// Counts a batch's outcomes, or sets threads aside to wait for their parent.
    fn settle(
        &mut self,
        batch: Batch,
        outcome: Result<Vec<ImportedThread>, StoreError>,
    ) -> Result<(), StoreError> {
        for ((record, place), outcome) in batch.records.iter().zip(batch.places).zip(outcome?) {
            match outcome {
                ImportedThread::Created => self.imported.threads_created += 1,
                ImportedThread::Held(held) if held.same_as(record) => self.imported.threads_unchanged += 1,
                ImportedThread::Held(_) => {
                    let id = record.thread.id.to_string();
                    tracing::warn!(
                        id,
                        "conflict: the store holds a different thread under this id; left as it is"
                    );
                    self.imported.conflicts += 1;
                }
                ImportedThread::ParentMissing => self.waiting.push(place),
            }
        }
        Ok(())
    }

    async fn import_run(&mut self, run: &ToolRun) -> Result<(), StoreError> {
        match self.store.get_run(run.id).await? {
            None => {
                self.store.save_run(run).await?;
                self.imported.runs_created += 1;
            }
            Some(stored) if stored == *run => self.imported.runs_unchanged += 1,
            Some(_) => {
                let id = run.id.to_string();
                tracing::warn!(id, "conflict: the store holds a different run under this id; left as it is");
                self.imported.conflicts += 1;
            }
        }
        Ok(())
    }
}

/// Reads the export at `path` into `store`; `bar` follows the bytes read.
pub async fn import(store: &dyn Store, path: &Path, bar: &ProgressBar) -> Result<Imported, ImportError> {
    let read_error = |source| ImportError::Read { path: path.display().to_string(), source };
    let file = File::open(path).map_err(read_error)?;
    bar.set_length(file.metadata().map_err(read_error)?.len());
    let mut reader = BufReader::new(file);
    let mut importer = Importer { store, imported: Imported::default(), waiting: Vec::new() };
    let mut in_flight = FuturesUnordered::new();
    let mut batch = Batch::default();
    let (mut number, mut offset, mut buffer) = (0u64, 0u64, String::new());
    let (mut threads, mut runs) = (0u64, 0u64);
    let mut end = None;
    let read: Result<(), ImportError> = async {
        loop {
            buffer.clear();
            let read = reader.read_line(&mut buffer).map_err(read_error)?;
            if read == 0 {
                return Ok(());
            }
            number += 1;
            match parse(&buffer, number)? {
                Line::Header { format, version, .. } if number == 1 => check_header(&format, version)?,
                _ if number == 1 => {
                    return Err(malformed(number, "the first line is not an exai export header"));
                }
                Line::Header { .. } => return Err(malformed(number, "a second header")),
                _ if end.is_some() => return Err(malformed(number, "a line after the end line")),
                Line::Thread(record) => {
                    threads += 1;
                    batch.push(record, (offset, number));
                    if batch.is_full() {
                        if in_flight.len() >= CONCURRENT_BATCHES
                            && let Some((done, outcome)) = in_flight.next().await
                        {
                            importer.settle(done, outcome)?;
                        }
                        let full = std::mem::take(&mut batch);
                        in_flight.push(async move {
                            let outcome = store_batch(store, &full.records).await;
                            (full, outcome)
                        });
                    }
                }
                Line::Run { run } => {
                    // A run's thread must be in before the run.
                    let pending = std::mem::take(&mut batch);
                    let outcome = store_batch(store, &pending.records).await;
                    while let Some((done, outcome)) = in_flight.next().await {
                        importer.settle(done, outcome)?;
                    }
                    importer.settle(pending, outcome)?;
                    runs += 1;
                    importer.import_run(&run).await?;
                }
                Line::End { threads, turns: _, runs } => end = Some((threads, runs)),
            }
            offset += read as u64;
            bar.set_position(offset);
        }
    }
    .await;
    // The whole threads read before whatever stopped the reading are stored.
    let outcome = store_batch(store, &batch.records).await;
    while let Some((done, outcome)) = in_flight.next().await {
        importer.settle(done, outcome)?;
    }
    importer.settle(batch, outcome)?;
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
    import_waiting(&mut importer, &mut reader).await.map_err(|error| match error {
        ImportError::Read { source, .. } => read_error(source),
        other => other,
    })?;
    Ok(importer.imported)
}

/// Imports the threads that waited for a parent, round after round, until none can
/// be: those have a parent neither the file nor the store holds.
async fn import_waiting(
    importer: &mut Importer<'_>,
    reader: &mut BufReader<File>,
) -> Result<(), ImportError> {
    let mut buffer = String::new();
    while !importer.waiting.is_empty() {
        let waiting = std::mem::take(&mut importer.waiting);
        let before = waiting.len();
        for places in waiting.chunks(BATCH_THREADS) {
            let mut batch = Batch::default();
            for &(offset, number) in places {
                let read_error = |source| ImportError::Read { path: String::new(), source };
                reader.seek(SeekFrom::Start(offset)).map_err(read_error)?;
                buffer.clear();
                reader.read_line(&mut buffer).map_err(read_error)?;
                if let Line::Thread(record) = parse(&buffer, number)? {
                    batch.push(record, (offset, number));
                }
            }
            let outcome = store_batch(importer.store, &batch.records).await;
            importer.settle(batch, outcome)?;
        }
        if importer.waiting.len() == before {
            for (_, line) in &importer.waiting {
                tracing::warn!(line, "conflict: the thread's parent is in neither the file nor the store");
            }
            importer.imported.conflicts += before as u64;
            break;
        }
    }
    Ok(())
}

async fn store_batch(store: &dyn Store, records: &[ThreadRecord]) -> Result<Vec<ImportedThread>, StoreError> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    store.import_threads(records).await
}

/// A line, with a thread's turns checked to be numbered 1, 2, … as the store keeps them.
fn parse(text: &str, number: u64) -> Result<Line, ImportError> {
    let line: Line = serde_json::from_str(text).map_err(|error| malformed(number, error.to_string()))?;
    if let Line::Thread(record) = &line {
        let thread = &record.thread;
        let numbered =
            record.turns.iter().zip(1..).all(|(turn, seq)| turn.seq == seq && turn.thread_id == thread.id);
        if !numbered || record.turns.len() != thread.turn_count as usize {
            return Err(malformed(number, "the thread's turns are not numbered 1 to its turn_count"));
        }
        if let Some(seq) = record.keys.keys().find(|seq| **seq == 0 || **seq > thread.turn_count) {
            return Err(malformed(number, format!("an idempotency key for turn {seq}, which is not there")));
        }
    }
    Ok(line)
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
