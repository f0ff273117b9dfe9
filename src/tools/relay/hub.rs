//! The one connection a process listens on, whatever the relay: a task owns it, listens
//! on every channel that has subscribers, and hands each message to its channel's
//! subscribers, so that a process holds one listening connection however many runs it
//! watches.

use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::RelayError;

/// Messages a subscriber may fall behind by before it misses some.
const BUFFER: usize = 256;
/// How often channels whose subscribers are all gone are left.
const SWEEP: Duration = Duration::from_secs(5);

/// A connection that listens on channels, as Postgres `LISTEN` or Redis `SUBSCRIBE`.
#[async_trait]
pub trait Listener: Sized + Send + 'static {
    /// What connecting takes.
    type Options: Send + Sync + 'static;

    async fn connect(options: &Self::Options) -> Result<Self, RelayError>;
    async fn listen(&mut self, channel: &str) -> Result<(), RelayError>;
    async fn unlisten(&mut self, channel: &str) -> Result<(), RelayError>;
    /// The next message as its channel and payload, or `None` once the connection is lost.
    async fn next(&mut self) -> Result<Option<(String, String)>, RelayError>;
}

type Subscribed = Result<broadcast::Receiver<String>, RelayError>;

struct Listen {
    channel: String,
    reply: oneshot::Sender<Subscribed>,
}

/// The handle of the listening task, which ends once the handle is dropped.
pub struct SharedListener {
    commands: mpsc::UnboundedSender<Listen>,
    timeout: Duration,
}

impl SharedListener {
    /// Starts the task; it connects on the first subscription. `timeout` bounds each
    /// subscription, and each call the task makes on the connection.
    pub fn start<L: Listener>(options: L::Options, timeout: Duration) -> Self {
        let (commands, received) = mpsc::unbounded_channel();
        let task = Listening::<L> { options, timeout, listener: None, channels: HashMap::new() };
        tokio::spawn(task.run(received));
        Self { commands, timeout }
    }

    /// The payloads of `channel`'s messages, until the connection is lost.
    pub async fn subscribe(&self, channel: &str) -> Result<BoxStream<'static, String>, RelayError> {
        let (reply, replied) = oneshot::channel();
        self.commands
            .send(Listen { channel: channel.to_owned(), reply })
            .map_err(|_| RelayError("the listening task has ended".into()))?;
        let receiver = tokio::time::timeout(self.timeout, replied)
            .await
            .map_err(|_| RelayError("no answer to subscribing".into()))?
            .map_err(|_| RelayError("the listening task has ended".into()))??;
        let payloads = futures_util::stream::unfold(receiver, |mut receiver| async move {
            loop {
                match receiver.recv().await {
                    Ok(payload) => return Some((payload, receiver)),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(payloads.boxed())
    }
}

struct Listening<L: Listener> {
    options: L::Options,
    timeout: Duration,
    listener: Option<L>,
    channels: HashMap<String, broadcast::Sender<String>>,
}

impl<L: Listener> Listening<L> {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Listen>) {
        let mut sweeps = tokio::time::interval(SWEEP);
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Listen { channel, reply }) if !reply.is_closed() => {
                        let _ = reply.send(self.listen(channel).await);
                    }
                    Some(_) => {}
                    None => return,
                },
                received = next(&mut self.listener) => match received {
                    Ok(Some((channel, payload))) => self.dispatch(&channel, payload),
                    Ok(None) => {
                        self.lost("the listening connection was lost");
                    }
                    Err(error) => {
                        self.lost(error);
                    }
                },
                _ = sweeps.tick() => self.sweep().await,
            }
        }
    }

    async fn listen(&mut self, channel: String) -> Subscribed {
        if let Some(sender) = self.channels.get(&channel) {
            return Ok(sender.subscribe());
        }
        let listening = async {
            let listener = match &mut self.listener {
                Some(listener) => listener,
                None => self.listener.insert(L::connect(&self.options).await?),
            };
            listener.listen(&channel).await
        };
        match tokio::time::timeout(self.timeout, listening).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(self.lost(error)),
            Err(_) => return Err(self.lost("no answer to subscribing")),
        }
        let (sender, receiver) = broadcast::channel(BUFFER);
        self.channels.insert(channel, sender);
        Ok(receiver)
    }

    fn dispatch(&mut self, channel: &str, payload: String) {
        if let Some(sender) = self.channels.get(channel) {
            let _ = sender.send(payload);
        }
    }

    /// Leaves the channels nobody subscribes to any more.
    async fn sweep(&mut self) {
        let deserted: Vec<String> = (self.channels.iter())
            .filter(|(_, sender)| sender.receiver_count() == 0)
            .map(|(channel, _)| channel.clone())
            .collect();
        for channel in deserted {
            self.channels.remove(&channel);
            let Some(listener) = &mut self.listener else { return };
            match tokio::time::timeout(self.timeout, listener.unlisten(&channel)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    self.lost(error);
                    return;
                }
                Err(_) => {
                    self.lost("no answer to unsubscribing");
                    return;
                }
            }
        }
    }

    /// Drops the connection and ends every subscription, whose subscribers subscribe
    /// again, connecting anew; the messages sent in between are missed.
    fn lost(&mut self, error: impl std::fmt::Display) -> RelayError {
        if self.listener.take().is_some() {
            tracing::warn!(%error, subscribed = self.channels.len(), "the relay's listening connection failed");
        }
        self.channels.clear();
        RelayError(error.to_string())
    }
}

/// The next message, or never without a connection.
async fn next<L: Listener>(listener: &mut Option<L>) -> Result<Option<(String, String)>, RelayError> {
    match listener {
        Some(listener) => listener.next().await,
        None => std::future::pending().await,
    }
}
