//! What the rules of a conversation refuse.

use uuid::Uuid;

/// A request the rules refuse: nothing was written, and asking again the same way is
/// refused again. Stores decide these atomically with the write they guard, so that no
/// caller has to check them in a separate step; they are not failures of the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("thread {0} not found")]
    ThreadNotFound(Uuid),
    #[error("parent thread {0} not found")]
    ParentNotFound(Uuid),
    #[error("thread {0} has expired")]
    ThreadExpired(Uuid),
    #[error("thread {thread_id} already holds {max_turns} turns")]
    TurnLimitReached { thread_id: Uuid, max_turns: u32 },
    /// The idempotency key was used before for turns other than these.
    #[error("Idempotency-Key {0:?} was used on this thread for a different request")]
    KeyReused(String),
    /// A run's turns came after the run had ended: another process failed it when its
    /// lease lapsed, and a late answer must not reach the thread.
    #[error("the run had already ended")]
    RunEnded,
}
