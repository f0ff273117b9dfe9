//! Watching and cancelling runs: this process's own, and those another process owns,
//! through the relay, to which this process's runs are published and cancel requests
//! come.

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use std::sync::Arc;
use tokio::sync::broadcast;
use tracing::Instrument;
use uuid::Uuid;

use super::Executor;
use crate::domain::ToolRun;
use crate::tools::RunError;
use crate::tools::live::{EVENT_BUFFER, LiveRun, RunEvent, Subscription};
use crate::tools::relay::Relay;

/// How long to wait before listening for cancel requests again after the relay failed.
const RELISTEN: std::time::Duration = std::time::Duration::from_secs(1);

impl Executor {
    /// A run's events from now on: this process's own, or relayed from its owner.
    pub async fn subscribe(&self, id: Uuid) -> Result<Subscription, RunError> {
        let live = self.live().get(&id).cloned();
        match live {
            Some(live) => {
                let events = live.events.subscribe();
                let finished = live.outcome.borrow().clone();
                Ok(Subscription::Live { events, finished })
            }
            None => self.watch_elsewhere(id).await,
        }
    }

    /// Stops a live run and returns it once it has recorded its end.
    pub async fn cancel(&self, id: Uuid) -> Result<ToolRun, RunError> {
        let Some(live) = self.live().get(&id).cloned() else { return self.cancel_elsewhere(id).await };
        if let Some(run) = live.outcome.borrow().clone() {
            return Err(RunError::AlreadyFinished(Box::new(run)));
        }
        let mut outcome = live.outcome.subscribe();
        live.cancel.cancel();
        let ended = outcome.wait_for(Option::is_some).await.map(|run| run.clone());
        match ended {
            Ok(Some(run)) => Ok(run),
            _ => self.get(id).await,
        }
    }

    /// Publishes the events of a run this process has just accepted, until its end.
    pub(super) fn publish_events(&self, run: Uuid, live: &LiveRun) {
        let Some(relay) = self.inner.relay.clone() else { return };
        let mut events = live.events.subscribe();
        let publishing = async move {
            loop {
                let event = match events.recv().await {
                    Ok(event) => event,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if let Err(error) = relay.publish(run, &event).await {
                    tracing::warn!(run.id = %run, %error, "could not relay a run's event");
                }
                if matches!(event, RunEvent::Finished(_)) {
                    return;
                }
            }
        };
        self.inner.tasks.spawn(publishing.in_current_span());
    }

    /// A run this process does not run: its events through the relay, if there is one
    /// (subscribed again whenever the relay drops it), ending with its final event, which
    /// the store gives every quarter lease, so that without a relay, or when its owner is
    /// gone, the run still ends for its watchers.
    pub(super) async fn watch_elsewhere(&self, id: Uuid) -> Result<Subscription, RunError> {
        let run = self.get(id).await?;
        if run.status.is_final() {
            return Ok(Subscription::Over(run));
        }
        let mut relayed = match &self.inner.relay {
            Some(relay) => relay.subscribe(id).await.unwrap_or_else(|error| {
                tracing::warn!(run.id = %id, %error, "watching a run through the store alone");
                futures_util::stream::pending().boxed()
            }),
            None => futures_util::stream::pending().boxed(),
        };
        // The run may have ended before the subscription took.
        let run = self.get(id).await?;
        if run.status.is_final() {
            return Ok(Subscription::Over(run));
        }
        let (sender, events) = broadcast::channel(EVENT_BUFFER);
        let this = self.clone();
        let mut checks = tokio::time::interval(self.inner.settings.run_lease / 4);
        let bridging = async move {
            loop {
                let event = tokio::select! {
                    next = relayed.next() => match next {
                        // The store's copy is whole; a relayed one may have left out the output.
                        Some(RunEvent::Finished(run)) => match this.get(id).await {
                            Ok(stored) if stored.status.is_final() => RunEvent::Finished(stored),
                            _ => RunEvent::Finished(run),
                        },
                        Some(event) => event,
                        // The relay went away: the store still tells the end, and the
                        // relay is asked again for the events to come.
                        None => {
                            relayed = this.resubscribed(id);
                            continue;
                        }
                    },
                    _ = checks.tick() => match this.get(id).await {
                        Ok(run) if run.status.is_final() => RunEvent::Finished(run),
                        _ if sender.receiver_count() == 0 => return,
                        _ => continue,
                    },
                    () = this.inner.shutdown.cancelled() => return,
                };
                let last = matches!(event, RunEvent::Finished(_));
                if sender.send(event).is_err() || last {
                    return;
                }
            }
        };
        self.inner.tasks.spawn(bridging.in_current_span());
        Ok(Subscription::Live { events, finished: None })
    }

    /// A run's relayed events from a subscription made again after a pause; when it
    /// cannot be made, a stream that ends at once, to be made again.
    fn resubscribed(&self, id: Uuid) -> BoxStream<'static, RunEvent> {
        let Some(relay) = self.inner.relay.clone() else { return futures_util::stream::pending().boxed() };
        let subscribing = async move {
            tokio::time::sleep(RELISTEN).await;
            relay.subscribe(id).await.unwrap_or_else(|_| futures_util::stream::empty().boxed())
        };
        futures_util::stream::once(subscribing).flatten().boxed()
    }

    /// Asks the process that runs `id` to cancel it, and returns the run once ended. The
    /// request is recorded on the run, where its owner finds it when it renews its lease,
    /// and sent through the relay, if there is one, for the owner to act at once.
    pub(super) async fn cancel_elsewhere(&self, id: Uuid) -> Result<ToolRun, RunError> {
        let mut events = match self.watch_elsewhere(id).await? {
            Subscription::Live { events, finished: None } => events,
            Subscription::Over(run) | Subscription::Live { finished: Some(run), .. } => {
                return Err(RunError::AlreadyFinished(Box::new(run)));
            }
        };
        if !self.inner.store.request_run_cancel(id).await? {
            return Err(RunError::AlreadyFinished(Box::new(self.get(id).await?)));
        }
        if let Some(relay) = &self.inner.relay
            && let Err(error) = relay.request_cancel(id).await
        {
            tracing::warn!(run.id = %id, %error, "the cancel waits for the owner to renew its lease");
        }
        loop {
            match events.recv().await {
                Ok(RunEvent::Finished(run)) => return Ok(run),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return self.get(id).await,
            }
        }
    }

    /// Until shutdown, cancels this process's runs that another process asks to cancel.
    pub async fn take_cancel_requests(&self) {
        let Some(relay) = self.inner.relay.clone() else { return };
        let shutdown = self.inner.shutdown.clone();
        tokio::select! {
            () = self.listen_for_cancels(relay) => {}
            () = shutdown.cancelled() => {}
        }
    }

    async fn listen_for_cancels(&self, relay: Arc<dyn Relay>) {
        loop {
            match relay.cancel_requests().await {
                Ok(mut requests) => {
                    while let Some(id) = requests.next().await {
                        let live = self.live().get(&id).cloned();
                        if let Some(live) = live {
                            live.cancel.cancel();
                        }
                    }
                    tracing::warn!("lost the relay's cancel requests; listening again");
                }
                Err(error) => tracing::warn!(%error, "cannot listen for cancel requests yet"),
            }
            tokio::time::sleep(RELISTEN).await;
        }
    }
}
