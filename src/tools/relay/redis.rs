//! The relay over Redis pub/sub: a run's events on `<namespace>:run:{id}`, cancel
//! requests on `<namespace>:cancel`. Publishing goes over a multiplexed command
//! connection; every subscription is made on the process's one pub/sub connection (a
//! connection that subscribes can send no other command), so that watchers cannot use
//! up Redis's clients.

use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink, PubSubStream};
use std::time::Duration;
use uuid::Uuid;

use super::hub::{Listener, SharedListener};
use super::{Relay, RelayError};
use crate::tools::live::RunEvent;

/// Longest a publish may take: an event that cannot be relayed is dropped, the run goes on.
const PUBLISH_TIMEOUT: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

pub struct RedisRelay {
    listener: SharedListener,
    commands: ConnectionManager,
    namespace: String,
}

fn failed(error: impl std::fmt::Display) -> RelayError {
    RelayError(error.to_string())
}

impl RedisRelay {
    /// Prepares the connections without connecting: a Redis that is down at start-up is
    /// tried again on each use.
    pub fn connect(url: &str, namespace: &str) -> Result<Self, RelayError> {
        let client = redis::Client::open(url).map_err(failed)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_number_of_retries(1);
        let commands = ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(failed)?;
        // A subscription may take as long as connecting and subscribing.
        let listener = SharedListener::start::<Subscriber>(client, CONNECT_TIMEOUT * 2);
        Ok(Self { listener, commands, namespace: namespace.to_owned() })
    }

    fn events_channel(&self, run: Uuid) -> String {
        format!("{}:run:{run}", self.namespace)
    }

    fn cancel_channel(&self) -> String {
        format!("{}:cancel", self.namespace)
    }

    async fn publish_on(&self, channel: String, message: String) -> Result<(), RelayError> {
        let mut commands = self.commands.clone();
        let mut command = redis::cmd("PUBLISH");
        command.arg(channel).arg(message);
        let publish = command.query_async::<i64>(&mut commands);
        match tokio::time::timeout(PUBLISH_TIMEOUT, publish).await {
            Ok(published) => published.map(drop).map_err(failed),
            Err(_) => Err(RelayError(format!("no answer within {PUBLISH_TIMEOUT:?}"))),
        }
    }
}

/// The process's pub/sub connection: subscribing on its sink while its stream is read.
struct Subscriber {
    sink: PubSubSink,
    messages: PubSubStream,
}

#[async_trait]
impl Listener for Subscriber {
    type Options = redis::Client;

    async fn connect(client: &redis::Client) -> Result<Self, RelayError> {
        let (sink, messages) = client.get_async_pubsub().await.map_err(failed)?.split();
        Ok(Self { sink, messages })
    }

    async fn listen(&mut self, channel: &str) -> Result<(), RelayError> {
        self.sink.subscribe(channel).await.map_err(failed)
    }

    async fn unlisten(&mut self, channel: &str) -> Result<(), RelayError> {
        self.sink.unsubscribe(channel).await.map_err(failed)
    }

    async fn next(&mut self) -> Result<Option<(String, String)>, RelayError> {
        while let Some(message) = self.messages.next().await {
            if let Ok(payload) = message.get_payload() {
                return Ok(Some((message.get_channel_name().to_owned(), payload)));
            }
        }
        Ok(None)
    }
}

#[async_trait]
impl Relay for RedisRelay {
    async fn publish(&self, run: Uuid, event: &RunEvent) -> Result<(), RelayError> {
        let message = serde_json::to_string(event).map_err(failed)?;
        self.publish_on(self.events_channel(run), message).await
    }

    async fn subscribe(&self, run: Uuid) -> Result<BoxStream<'static, RunEvent>, RelayError> {
        let messages = self.listener.subscribe(&self.events_channel(run)).await?;
        Ok(messages.filter_map(|message| async move { serde_json::from_str(&message).ok() }).boxed())
    }

    async fn request_cancel(&self, run: Uuid) -> Result<(), RelayError> {
        self.publish_on(self.cancel_channel(), run.to_string()).await
    }

    async fn cancel_requests(&self) -> Result<BoxStream<'static, Uuid>, RelayError> {
        let messages = self.listener.subscribe(&self.cancel_channel()).await?;
        Ok(messages.filter_map(|message| async move { Uuid::try_parse(&message).ok() }).boxed())
    }
}
