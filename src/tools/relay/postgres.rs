//! The relay over Postgres `LISTEN`/`NOTIFY`, for replicas without Redis: a run's events
//! on the channel `exai_run_<id>`, cancel requests on `exai_cancel`. Notifying goes
//! through a small pool; every subscription listens on the process's one listening
//! connection, so that watchers cannot use up the database's connections.

mod listener;

use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use std::time::Duration;
use uuid::Uuid;

use super::hub::SharedListener;
use super::{Relay, RelayError};
use crate::tools::live::RunEvent;

/// Longest a notification or a subscription may take to be made.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Postgres refuses payloads of 8000 bytes or more.
const MAX_PAYLOAD: usize = 7_999;
const CANCEL_CHANNEL: &str = "exai_cancel";

pub struct PgRelay {
    listener: SharedListener,
    notifier: PgPool,
}

fn failed(error: impl std::fmt::Display) -> RelayError {
    RelayError(error.to_string())
}

fn events_channel(run: Uuid) -> String {
    format!("exai_run_{}", run.simple())
}

/// The event as a payload Postgres takes: a final event too long for it goes without
/// the run's output and error, which its watchers read from the store.
fn payload(event: &RunEvent) -> Result<String, RelayError> {
    let payload = serde_json::to_string(event).map_err(failed)?;
    match event {
        RunEvent::Finished(run) if payload.len() > MAX_PAYLOAD => {
            let slim = crate::domain::ToolRun { output: None, error: None, ..run.clone() };
            serde_json::to_string(&RunEvent::Finished(slim)).map_err(failed)
        }
        _ => Ok(payload),
    }
}

impl PgRelay {
    /// Prepares the pool and the listening task without connecting.
    pub fn connect(url: &str) -> Result<Self, RelayError> {
        let options: PgConnectOptions = url.parse().map_err(failed)?;
        let notifier = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(CALL_TIMEOUT)
            .connect_lazy_with(options.clone());
        Ok(Self { listener: SharedListener::start::<PgListener>(options, CALL_TIMEOUT), notifier })
    }

    async fn notify(&self, channel: &str, payload: &str) -> Result<(), RelayError> {
        let notify =
            sqlx::query("SELECT pg_notify($1, $2)").bind(channel).bind(payload).execute(&self.notifier);
        match tokio::time::timeout(CALL_TIMEOUT, notify).await {
            Ok(notified) => notified.map(drop).map_err(failed),
            Err(_) => Err(RelayError(format!("no answer within {CALL_TIMEOUT:?}"))),
        }
    }
}

#[async_trait]
impl Relay for PgRelay {
    async fn publish(&self, run: Uuid, event: &RunEvent) -> Result<(), RelayError> {
        self.notify(&events_channel(run), &payload(event)?).await
    }

    async fn subscribe(&self, run: Uuid) -> Result<BoxStream<'static, RunEvent>, RelayError> {
        let payloads = self.listener.subscribe(&events_channel(run)).await?;
        Ok(payloads.filter_map(|payload| async move { serde_json::from_str(&payload).ok() }).boxed())
    }

    async fn request_cancel(&self, run: Uuid) -> Result<(), RelayError> {
        self.notify(CANCEL_CHANNEL, &run.to_string()).await
    }

    async fn cancel_requests(&self) -> Result<BoxStream<'static, Uuid>, RelayError> {
        let payloads = self.listener.subscribe(CANCEL_CHANNEL).await?;
        Ok(payloads.filter_map(|payload| async move { Uuid::try_parse(&payload).ok() }).boxed())
    }
}
