//! Records runs: each state in the store and, for a success, its question and answer on
//! its thread. A write a run cannot do without is retried while the store cannot be
//! reached, the same way for both.

use chrono::{DateTime, Utc};
use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use super::runners::Answer;
use crate::conversations::{ConversationError, Conversations};
use crate::domain::{NewTurn, Role, ToolRun, truncate_to_micros};
use crate::store::{Store, StoreError, run_idempotency_key};

/// Attempts at a store write a run cannot do without, and the pause that grows between them.
const STORE_ATTEMPTS: u32 = 4;
const STORE_RETRY: Duration = Duration::from_millis(500);

/// The time a run's states are recorded with, in the precision every store keeps.
pub(super) fn now() -> DateTime<Utc> {
    truncate_to_micros(Utc::now())
}

#[derive(Clone)]
pub(super) struct Recorder {
    store: Arc<dyn Store>,
    conversations: Conversations,
}

/// Whether a failure may pass if the write is made again: only a store that could not
/// be reached. A refusal or a store that failed otherwise answers the same again.
fn transient(error: &StoreError) -> bool {
    matches!(error, StoreError::Unavailable(_))
}

/// Makes `write` until it succeeds, fails in a way `transient` says a retry cannot get
/// past, or has been tried [`STORE_ATTEMPTS`] times, pausing longer after each failure.
async fn retrying<T, E: Display, F: Future<Output = Result<T, E>>>(
    run: &ToolRun,
    doing: &str,
    transient: fn(&E) -> bool,
    mut write: impl FnMut() -> F,
) -> Result<T, E> {
    let mut attempt = 1;
    loop {
        match write().await {
            Err(error) if attempt < STORE_ATTEMPTS && transient(&error) => {
                tracing::warn!(run.id = %run.id, attempt, %error, "{doing}; retrying");
                tokio::time::sleep(STORE_RETRY * attempt).await;
                attempt += 1;
            }
            ended => return ended,
        }
    }
}

impl Recorder {
    pub(super) fn new(store: Arc<dyn Store>, conversations: Conversations) -> Self {
        Self { store, conversations }
    }

    /// Records a state on the way; the final state is recorded by [`Self::save_final`].
    pub(super) async fn save(&self, run: &ToolRun) {
        if let Err(error) = self.store.save_run(run).await {
            tracing::error!(run.id = %run.id, status = run.status.as_str(), %error, "could not record the run");
        }
    }

    /// Records the end of a run: a run whose end is lost reads `running` until its lease
    /// ends after this process has stopped, and a sweep marks it failed. Returns the end
    /// the store held already, if it was another: another process failed the run when its
    /// lease lapsed (this one stalled, or could not renew it), and a run's end is final, so
    /// that end is the one to tell. (A retry finds this very end when an attempt whose
    /// answer was lost had written it.)
    pub(super) async fn save_final(&self, run: &ToolRun) -> Option<ToolRun> {
        let saved = retrying(run, "recording a run's end", transient, || self.store.save_run(run)).await;
        match saved {
            Ok(true) => None,
            Ok(false) => match self.store.get_run(run.id).await {
                Ok(stored) => stored.filter(|stored| stored.status.is_final() && stored != run),
                Err(error) => {
                    tracing::warn!(run.id = %run.id, %error, "could not read the end recorded for the run");
                    None
                }
            },
            Err(error) => {
                tracing::error!(run.id = %run.id, status = run.status.as_str(), %error, "could not record the run's end");
                None
            }
        }
    }

    /// Appends the question and the answer together. The run's id is the idempotency
    /// key, so retrying after a store timeout cannot append twice, and a commit whose
    /// answer was lost is found again. Returns the turns the thread has left, or a
    /// reason fit for the run's record.
    pub(super) async fn add_to_thread(&self, run: &ToolRun, answer: &Answer) -> Result<u32, String> {
        let question = NewTurn::new(Role::User, run.input.clone());
        let reply = NewTurn {
            tool_name: Some(run.tool.clone()),
            model_provider: answer.model_provider.clone(),
            model_name: answer.model_name.clone(),
            ..NewTurn::new(Role::Assistant, answer.output.clone())
        };
        let key = Some(run_idempotency_key(run.id));
        let transient_failure = |error: &ConversationError| matches!(error, ConversationError::Store(failure) if transient(failure));
        let append = || {
            let turns = vec![question.clone(), reply.clone()];
            self.conversations.append_turns(run.continuation_id, turns, key.clone())
        };
        match retrying(run, "appending a run's turns", transient_failure, append).await {
            Ok(appended) => Ok(appended.turns_remaining),
            Err(error @ (ConversationError::Store(_) | ConversationError::Interrupted(_))) => {
                tracing::error!(run.id = %run.id, %error, "could not append a run's turns");
                Err("the turns could not be written; the server log has the cause".into())
            }
            Err(refused) => Err(refused.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RunStatus;
    use std::sync::atomic::{AtomicU32, Ordering};
    use uuid::Uuid;

    fn run() -> ToolRun {
        ToolRun {
            id: Uuid::new_v4(),
            tool: "echo".into(),
            status: RunStatus::Running,
            continuation_id: Uuid::new_v4(),
            input: "question".into(),
            output: None,
            error: None,
            created_at: now(),
            started_at: None,
            finished_at: None,
            timeout_secs: 30,
            turns_remaining: None,
        }
    }

    /// Attempts made by a write whose first attempts fail with `failures`, in order.
    async fn attempts(failures: &[StoreError]) -> (u32, Result<(), StoreError>) {
        let made = AtomicU32::new(0);
        let ended = retrying(&run(), "writing", transient, || async {
            let attempt = made.fetch_add(1, Ordering::Relaxed) as usize;
            failures.get(attempt).cloned().map_or(Ok(()), Err)
        })
        .await;
        (made.into_inner(), ended)
    }

    #[tokio::test]
    async fn only_an_unreachable_store_is_tried_again() {
        let unreachable = StoreError::Unavailable("timed out".into());
        assert_eq!(attempts(&[unreachable]).await, (2, Ok(())));
        let broken = StoreError::Internal("disk full".into());
        assert_eq!(attempts(std::slice::from_ref(&broken)).await, (1, Err(broken)));
    }
}
