//! Export page by page in thread id order, from one snapshot where the transport holds
//! one; import of a batch of whole threads in one function call, one transaction.

use std::ops::ControlFlow;

use serde::Deserialize;
use uuid::Uuid;

use super::answers::{Rejections, decode_unrefused, transport_error};
use super::{Arg, Call, FunctionStore, Session, Transport};
use crate::domain::ToolRun;
use crate::store::{Counts, Cursor, ExportSink, ImportedThread, StoreError, ThreadRecord, run_position};

/// Threads or runs read per call.
const PAGE: usize = 500;

/// A thread `exai_import_threads` did not store.
#[derive(Deserialize)]
struct LeftOut {
    /// Its place in the batch, from 1.
    ord: usize,
    held: Option<ThreadRecord>,
}

/// The page of thread records after `after`, in thread id order.
fn threads_after(after: Option<Uuid>) -> Call {
    let args = vec![("p_after_id", Arg::Uuid(after)), ("p_limit", Arg::Int(PAGE as i32))];
    Call { function: "exai_export_threads", args }
}

/// Delivers every thread record to `sink`, a page per call, in thread id order.
pub(super) async fn threads_page_by_page<S: Session + ?Sized>(
    session: &mut S,
    sink: &mut dyn ExportSink,
) -> Result<ControlFlow<()>, StoreError> {
    let mut after = None;
    loop {
        let call = threads_after(after);
        let records: Vec<ThreadRecord> = decode_unrefused(call.function, session.call(&call).await)?;
        let full = records.len() == PAGE;
        for record in records {
            after = Some(record.thread.id);
            if sink.thread(record).is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
        if !full {
            return Ok(ControlFlow::Continue(()));
        }
    }
}

impl<T: Transport> FunctionStore<T> {
    pub(super) async fn export_pages(&self, sink: &mut dyn ExportSink) -> Result<(), StoreError> {
        let mut session =
            self.transport.snapshot().await.map_err(|error| transport_error("a snapshot", error))?;
        let session = session.as_mut();
        let counts: Counts =
            self.call_in(session, Call { function: "exai_export_counts", args: vec![] }).await?;
        if sink.counts(counts).is_break() {
            return Ok(());
        }
        if session.export_threads(sink).await?.is_break() {
            return Ok(());
        }
        let mut after: Option<Cursor> = None;
        loop {
            let call = Call {
                function: "exai_list_runs",
                args: vec![
                    ("p_limit", Arg::Int(PAGE as i32)),
                    ("p_after_created_at", Arg::Time(after.map(|cursor| cursor.at))),
                    ("p_after_id", Arg::Uuid(after.map(|cursor| cursor.id))),
                    ("p_tool", Arg::Text(None)),
                    ("p_status", Arg::Text(None)),
                ],
            };
            let runs: Vec<ToolRun> = self.call_in(session, call).await?;
            let full = runs.len() == PAGE;
            for run in runs {
                after = Some(run_position(&run));
                if sink.run(run).is_break() {
                    return Ok(());
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    pub(super) async fn import_records(
        &self,
        threads: &[ThreadRecord],
    ) -> Result<Vec<ImportedThread>, StoreError> {
        let batch = serde_json::to_value(threads).map_err(|e| StoreError::Internal(e.to_string()))?;
        let call = Call { function: "exai_import_threads", args: vec![("p_threads", Arg::Json(batch))] };
        let left: Vec<LeftOut> = self.call(call, Rejections::default()).await?;
        let mut outcomes = vec![ImportedThread::Created; threads.len()];
        for LeftOut { ord, held } in left {
            let outcome = outcomes.get_mut(ord.wrapping_sub(1)).ok_or_else(|| {
                StoreError::Internal(format!("exai_import_threads answered for thread {ord} of a batch"))
            })?;
            *outcome = match held {
                Some(record) => ImportedThread::Held(Box::new(record)),
                None => ImportedThread::ParentMissing,
            };
        }
        Ok(outcomes)
    }
}
