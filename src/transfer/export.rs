//! Writes what a store delivers from its snapshot as it arrives, so memory stays the
//! same whatever the store's size.

use std::io::Write;
use std::ops::ControlFlow;

use chrono::Utc;
use indicatif::ProgressBar;

use super::format::{FORMAT, Line, VERSION};
use crate::domain::ToolRun;
use crate::store::{Counts, ExportSink, Store, StoreError, ThreadRecord};

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

/// Writes every thread and run of `store` to `out`, from one snapshot where the
/// backend has one. `bar` counts threads written, out of those the snapshot holds.
pub async fn export(
    store: &dyn Store,
    out: &mut (impl Write + Send),
    bar: &ProgressBar,
) -> Result<Exported, ExportError> {
    let mut lines = Lines { out, backend: store.backend(), written: Exported::default(), failed: None, bar };
    store.export(&mut lines).await?;
    if let Some(error) = lines.failed {
        return Err(error.into());
    }
    let Exported { threads, turns, runs } = lines.written;
    write_line(lines.out, &Line::End { threads, turns, runs })?;
    lines.out.flush()?;
    Ok(lines.written)
}

/// The export file as a store's export sink: a line per thing delivered.
struct Lines<'a, W> {
    out: &'a mut W,
    backend: &'static str,
    written: Exported,
    /// Why writing stopped.
    failed: Option<std::io::Error>,
    bar: &'a ProgressBar,
}

impl<W: Write + Send> Lines<'_, W> {
    fn write(&mut self, line: &Line) -> ControlFlow<()> {
        match write_line(self.out, line) {
            Ok(()) => ControlFlow::Continue(()),
            Err(error) => {
                self.failed = Some(error);
                ControlFlow::Break(())
            }
        }
    }
}

impl<W: Write + Send> ExportSink for Lines<'_, W> {
    fn counts(&mut self, counts: Counts) -> ControlFlow<()> {
        self.bar.set_length(counts.threads);
        self.write(&Line::Header {
            format: FORMAT.into(),
            version: VERSION,
            backend: self.backend.into(),
            exported_at: Utc::now(),
            threads: counts.threads,
            turns: counts.turns,
            runs: counts.runs,
        })
    }

    fn thread(&mut self, record: ThreadRecord) -> ControlFlow<()> {
        self.written.threads += 1;
        self.written.turns += record.turns.len() as u64;
        self.bar.inc(1);
        self.write(&Line::Thread(record))
    }

    fn run(&mut self, run: ToolRun) -> ControlFlow<()> {
        self.written.runs += 1;
        self.write(&Line::Run { run })
    }
}

fn write_line(out: &mut impl Write, line: &Line) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    out.write_all(b"\n")
}
