//! Carries runs' events and cancel requests between the processes that share a store, so
//! that any of them serves `GET /v1/runs/{id}/events` and `POST /v1/runs/{id}/cancel`
//! for a run another one owns.

mod hub;
mod postgres;
mod redis;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use uuid::Uuid;

pub use self::postgres::PgRelay;
pub use self::redis::RedisRelay;
use super::live::RunEvent;

/// Why the relay could not carry a message.
#[derive(Debug, thiserror::Error)]
#[error("relay unavailable: {0}")]
pub struct RelayError(pub String);

#[async_trait]
pub trait Relay: Send + Sync {
    /// Sends an event of a run this process owns to whoever watches it elsewhere.
    async fn publish(&self, run: Uuid, event: &RunEvent) -> Result<(), RelayError>;

    /// The events published for `run` from now on.
    async fn subscribe(&self, run: Uuid) -> Result<BoxStream<'static, RunEvent>, RelayError>;

    /// Asks whichever process owns `run` to cancel it.
    async fn request_cancel(&self, run: Uuid) -> Result<(), RelayError>;

    /// Every cancel request from now on, for the runs of any process.
    async fn cancel_requests(&self) -> Result<BoxStream<'static, Uuid>, RelayError>;
}
