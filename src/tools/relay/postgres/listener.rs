//! The one connection a process listens on: a task owns it, LISTENs on every channel
//! that has subscribers, and hands each notification to its channel's subscribers, so
//! that a process holds one listening connection however many runs it watches.

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use sqlx::postgres::{PgConnectOptions, PgListener, PgNotification, PgPoolOptions};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{CALL_TIMEOUT, RelayError, failed};

/// How the listening connection names itself in `pg_stat_activity`.
pub const APPLICATION_NAME: &str = "exai relay";
/// Notifications a subscriber may fall behind by before it misses some.
const BUFFER: usize = 256;
/// How often channels whose subscribers are all gone are left.
const SWEEP: Duration = Duration::from_secs(5);

type Subscribed = Result<broadcast::Receiver<String>, RelayError>;

struct Listen {
    channel: String,
    reply: oneshot::Sender<Subscribed>,
}

/// The handle of the listening task, which ends once the handle is dropped.
pub struct SharedListener {
    commands: mpsc::UnboundedSender<Listen>,
}

impl SharedListener {
    /// Starts the task; it connects on the first subscription.
    pub fn start(options: PgConnectOptions) -> Self {
        let (commands, received) = mpsc::unbounded_channel();
        let options = options.application_name(APPLICATION_NAME);
        let task = Listening { options, listener: None, channels: HashMap::new() };
        tokio::spawn(task.run(received));
        Self { commands }
    }

    /// The payloads of `channel`'s notifications, until the connection is lost.
    pub async fn subscribe(&self, channel: &str) -> Result<BoxStream<'static, String>, RelayError> {
        let (reply, replied) = oneshot::channel();
        self.commands
            .send(Listen { channel: channel.to_owned(), reply })
            .map_err(|_| RelayError("the listening task has ended".into()))?;
        let receiver = tokio::time::timeout(CALL_TIMEOUT, replied)
            .await
            .map_err(|_| RelayError("no answer to LISTEN".into()))?
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

struct Listening {
    options: PgConnectOptions,
    listener: Option<PgListener>,
    channels: HashMap<String, broadcast::Sender<String>>,
}

impl Listening {
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
                    Ok(Some(notification)) => self.dispatch(&notification),
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
                None => self.listener.insert(connect(&self.options).await?),
            };
            listener.listen(&channel).await
        };
        match tokio::time::timeout(CALL_TIMEOUT, listening).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(self.lost(error)),
            Err(_) => return Err(self.lost("no answer to LISTEN")),
        }
        let (sender, receiver) = broadcast::channel(BUFFER);
        self.channels.insert(channel, sender);
        Ok(receiver)
    }

    fn dispatch(&mut self, notification: &PgNotification) {
        if let Some(sender) = self.channels.get(notification.channel()) {
            let _ = sender.send(notification.payload().to_owned());
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
            match tokio::time::timeout(CALL_TIMEOUT, listener.unlisten(&channel)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    self.lost(error);
                    return;
                }
                Err(_) => {
                    self.lost("no answer to UNLISTEN");
                    return;
                }
            }
        }
    }

    /// Drops the connection and ends every subscription, whose subscribers subscribe
    /// again, connecting anew; the notifications sent in between are missed.
    fn lost(&mut self, error: impl std::fmt::Display) -> RelayError {
        if self.listener.take().is_some() {
            tracing::warn!(%error, subscribed = self.channels.len(), "the relay's listening connection failed");
        }
        self.channels.clear();
        failed(error)
    }
}

async fn connect(options: &PgConnectOptions) -> Result<PgListener, sqlx::Error> {
    // A pool of one, as `PgListener` wants one, which never replaces its connection: once
    // that is lost, a new listener is made.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_with(options.clone())
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.ignore_pool_close_event(true);
    listener.eager_reconnect(false);
    Ok(listener)
}

/// The next notification, or never without a connection.
async fn next(listener: &mut Option<PgListener>) -> Result<Option<PgNotification>, sqlx::Error> {
    match listener {
        Some(listener) => listener.try_recv().await,
        None => std::future::pending().await,
    }
}
