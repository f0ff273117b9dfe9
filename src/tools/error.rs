//! Why a run could not be started, found or stopped.

use tokio::task::JoinError;
use uuid::Uuid;

use crate::conversations::ConversationError;
use crate::domain::{Rejection, ToolRun, ValidationError};
use crate::store::{StoreError, WriteError};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no tool {0:?}")]
    ToolNotFound(String),
    #[error("{tool} already has {admitted} runs running or queued; retry later")]
    Busy { tool: String, admitted: usize },
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("no run {0}")]
    RunNotFound(Uuid),
    #[error("run {} has already finished ({})", .0.id, .0.status.as_str())]
    AlreadyFinished(Box<ToolRun>),
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error(transparent)]
    Refused(#[from] Rejection),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A task carrying out part of the request panicked or was cancelled.
    #[error("a task stopped before it ended: {0}")]
    Interrupted(#[from] JoinError),
}

impl From<ConversationError> for RunError {
    fn from(error: ConversationError) -> Self {
        match error {
            ConversationError::Invalid(invalid) => invalid.into(),
            ConversationError::Refused(refusal) => refusal.into(),
            ConversationError::Store(failure) => failure.into(),
            ConversationError::Interrupted(failure) => failure.into(),
        }
    }
}

impl From<WriteError> for RunError {
    fn from(error: WriteError) -> Self {
        error.into_either()
    }
}
