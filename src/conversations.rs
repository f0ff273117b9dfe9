//! The dual-storage service: reads through the cache, updates it after the store has
//! committed (a new thread's document is stored, an appended thread's entry emptied for
//! the next read to fill), and coalesces concurrent misses for one thread.

mod guarded_cache;
mod single_flight;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinError;
use tracing::Instrument;
use uuid::Uuid;

use self::guarded_cache::{GuardedCache, Read};
use self::single_flight::SingleFlight;
use crate::cache::{Cache, CacheStats, CachedThread, Lease};
use crate::domain::{
    ConversationPolicy, History, HistoryLimits, NewThread, NewTurn, Rejection, Thread, ThreadWithTurns, Turn,
    ValidationError, check_idempotency_key, truncate_to_micros,
};
use crate::store::{
    Activity, AppendTurns, Cursor, Page, Store, StoreError, ThreadQuery, WriteError, next_page,
};

/// Why a conversation's request was not carried out: invalid, refused by its rules, or
/// the store failed.
#[derive(Debug, thiserror::Error)]
pub enum ConversationError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error(transparent)]
    Refused(#[from] Rejection),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The task carrying the write out panicked or was cancelled.
    #[error("the write stopped before it ended: {0}")]
    Interrupted(#[from] JoinError),
}

impl From<WriteError> for ConversationError {
    fn from(error: WriteError) -> Self {
        error.into_either()
    }
}

/// Which threads to list, by expiry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatusFilter {
    Active,
    Expired,
    #[default]
    All,
}

/// One page of threads, newest activity first.
pub struct ThreadList {
    pub threads: Vec<Thread>,
    pub next_cursor: Option<String>,
    /// The instant expiry was judged at.
    pub now: DateTime<Utc>,
}

/// The outcome of an append.
#[derive(Debug)]
pub struct TurnsAppended {
    pub turns: Vec<Turn>,
    pub turns_remaining: u32,
    /// The idempotency key had been used before; nothing was written.
    pub replayed: bool,
}

type Load = Result<Option<Bytes>, StoreError>;

#[derive(Clone)]
pub struct Conversations {
    store: Arc<dyn Store>,
    cache: Arc<GuardedCache>,
    policy: ConversationPolicy,
    cache_max_ttl: Option<Duration>,
    flights: Arc<SingleFlight<(Uuid, Lease), Load>>,
}

impl Conversations {
    pub fn new(store: Arc<dyn Store>, cache: Arc<dyn Cache>, policy: ConversationPolicy) -> Self {
        Self {
            store,
            cache: Arc::new(GuardedCache::new(cache)),
            policy,
            cache_max_ttl: None,
            flights: Arc::new(SingleFlight::new()),
        }
    }

    /// Serves no thread from the cache for longer than `max_ttl`, so a write made
    /// around exai shows within it.
    pub fn with_cache_max_ttl(mut self, max_ttl: Option<Duration>) -> Self {
        self.cache_max_ttl = max_ttl;
        self
    }

    pub fn policy(&self) -> &ConversationPolicy {
        &self.policy
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn cache(&self) -> &Arc<dyn Cache> {
        self.cache.inner()
    }

    pub fn cache_stats(&self) -> &CacheStats {
        self.cache.stats()
    }

    /// Creates a thread and returns its document.
    pub async fn create_thread(&self, new: NewThread) -> Result<(Uuid, Bytes), ConversationError> {
        new.validate()?;
        let this = self.clone();
        detached(async move {
            let now = now();
            let thread = this.store.create_thread(Uuid::new_v4(), &new, now).await?;
            let id = thread.id;
            let (document, ttl) = this.document(&ThreadWithTurns { thread, turns: Vec::new() }, now);
            let body = document.body.clone();
            this.cache.write_through(id, document, ttl).await;
            Ok((id, body))
        })
        .await
    }

    /// The thread document with all turns, from the cache when it holds it.
    ///
    /// Concurrent misses share one store read only when they got the same lease: a write
    /// (in any process sharing the cache) replaces the lease, so a read that starts after
    /// it never waits for the answer of a store read made before it. Misses without a
    /// lease each read the store, since nothing tells them apart.
    pub async fn get_thread(&self, id: Uuid) -> Result<Option<Bytes>, StoreError> {
        match self.cache.get(id).await {
            Read::Hit(body) => Ok(Some(body)),
            Read::Miss(Some(lease)) => self.flights.run((id, lease), || self.load(id, Some(lease))).await,
            Read::Miss(None) => self.load(id, None).await,
        }
    }

    pub async fn list_threads(
        &self,
        limit: u32,
        after: Option<Cursor>,
        search: Option<String>,
        status: StatusFilter,
        continuation_id: Option<String>,
    ) -> Result<ThreadList, StoreError> {
        let now = now();
        let cutoff = self.policy.expiry_cutoff(now);
        let activity = match status {
            StatusFilter::All => Activity::Any,
            StatusFilter::Active => Activity::ChangedAfter(cutoff),
            StatusFilter::Expired => Activity::ChangedAtOrBefore(cutoff),
        };
        let query = ThreadQuery { limit, after, search, activity, continuation_id };
        let page = self.store.list_threads(&query).await?;
        Ok(ThreadList { threads: page.items, next_cursor: page.next.map(|next| next.encode()), now })
    }

    /// The threads that continue `parent_id`, newest first, at most `limit`; `next` is
    /// set when there are more.
    pub async fn list_children(&self, parent_id: Uuid, limit: u32) -> Result<Page<Thread>, StoreError> {
        self.store.list_children(parent_id, limit).await
    }

    /// Deletes a thread from the store, then from the cache; `false` when it did not exist.
    pub async fn delete_thread(&self, id: Uuid) -> Result<bool, ConversationError> {
        let this = self.clone();
        detached(async move {
            let deleted = match this.store.delete_thread(id).await {
                Ok(deleted) => deleted,
                Err(error) => return Err(this.distrust_after(id, error).await.into()),
            };
            let block_fills_for = this.policy.timeout.to_std().unwrap_or_default();
            this.cache.remove(id, block_fills_for).await;
            Ok(deleted)
        })
        .await
    }

    /// Appends turns atomically. Returns once the store has committed them.
    pub async fn append_turns(
        &self,
        thread_id: Uuid,
        turns: Vec<NewTurn>,
        idempotency_key: Option<String>,
    ) -> Result<TurnsAppended, ConversationError> {
        for turn in &turns {
            turn.validate()?;
        }
        if let Some(key) = &idempotency_key {
            check_idempotency_key(key)?;
        }
        let this = self.clone();
        detached(async move {
            let now = now();
            let append = AppendTurns { thread_id, turns, idempotency_key, policy: this.policy, now };
            let appended = match this.store.append_turns(&append).await {
                Ok(appended) => appended,
                Err(WriteError::Refused(refusal)) => return Err(refusal.into()),
                Err(WriteError::Failed(error)) => {
                    return Err(this.distrust_after(thread_id, error).await.into());
                }
            };
            // The next read fills the entry: writing the whole document here would cost
            // every append the size of its thread. A replay too: the first attempt may
            // have committed without updating the cache.
            this.cache.invalidate(thread_id).await;
            let same_request = append.turns.len() == appended.turns.len()
                && append.turns.iter().zip(&appended.turns).all(|(new, old)| new.is_recorded_as(old));
            if appended.replayed && !same_request {
                return Err(Rejection::KeyReused(append.idempotency_key.unwrap_or_default()).into());
            }
            Ok(TurnsAppended {
                turns: appended.turns,
                turns_remaining: this.policy.turns_remaining(appended.thread.turn_count),
                replayed: appended.replayed,
            })
        })
        .await
    }

    /// Turns after `after_seq` and the `after_seq` of the next page; `None` for an unknown thread.
    pub async fn list_turns(
        &self,
        thread_id: Uuid,
        after_seq: u32,
        limit: u32,
    ) -> Result<Option<(Vec<Turn>, Option<u32>)>, StoreError> {
        let Some(mut turns) = self.store.list_turns(thread_id, after_seq, limit + 1).await? else {
            return Ok(None);
        };
        let next = next_page(&mut turns, limit).map(|last| last.seq);
        Ok(Some((turns, next)))
    }

    /// The conversation a new exchange continues: the newest turns of the thread's chain
    /// within the history budget, oldest first. Whether the thread can take the exchange
    /// is the store's to decide when the run is reserved.
    pub async fn continuation(&self, id: Uuid) -> Result<Vec<Turn>, ConversationError> {
        let chain =
            self.store.history(id, HistoryLimits::DEFAULT).await?.ok_or(Rejection::ThreadNotFound(id))?;
        Ok(chain.turns)
    }

    /// A thread's chain with its newest turns within the history budget.
    pub async fn history(&self, thread_id: Uuid) -> Result<Option<History>, StoreError> {
        let chain = self.store.history(thread_id, HistoryLimits::DEFAULT).await?;
        Ok(chain.map(History::from))
    }

    /// A write that failed without a clear answer (a timeout, a lost connection) may
    /// still have committed, so the cached thread is no longer to be trusted. Other
    /// threads keep their entries. Returns the error.
    async fn distrust_after(&self, id: Uuid, error: StoreError) -> StoreError {
        if matches!(error, StoreError::Unavailable(_) | StoreError::Internal(_)) {
            self.cache.distrust(id).await;
        }
        error
    }

    /// Reads the thread from the store, and fills the cache if the miss came with a lease.
    async fn load(&self, id: Uuid, lease: Option<Lease>) -> Load {
        let Some(thread) = self.store.get_thread(id).await? else {
            return Ok(None);
        };
        let now = now();
        let (document, ttl) = self.document(&thread, now);
        let body = document.body.clone();
        if let Some(lease) = lease {
            self.cache.fill(id, lease, document, ttl).await;
        }
        Ok(Some(body))
    }

    /// The thread's API document for the cache, and how long it stays correct.
    fn document(&self, thread: &ThreadWithTurns, now: DateTime<Utc>) -> (CachedThread, Duration) {
        let view = thread.thread.view(Some(&thread.turns), &self.policy, now);
        let body = serde_json::to_vec(&view).expect("a thread view always serializes");
        let ttl = self.policy.cache_ttl(thread.thread.updated_at, now);
        let ttl = self.cache_max_ttl.map_or(ttl, |max| ttl.min(max));
        (CachedThread { version: thread.thread.version, body: body.into() }, ttl)
    }
}

fn now() -> DateTime<Utc> {
    truncate_to_micros(Utc::now())
}

/// Runs a write to completion even if the request that asked for it goes away,
/// so that a commit is always followed by its cache update. It stays in the caller's
/// span, so that what it logs names the request.
async fn detached<T, E>(work: impl Future<Output = Result<T, E>> + Send + 'static) -> Result<T, E>
where
    T: Send + 'static,
    E: From<JoinError> + Send + 'static,
{
    tokio::spawn(work.in_current_span()).await.unwrap_or_else(|failure| Err(failure.into()))
}
