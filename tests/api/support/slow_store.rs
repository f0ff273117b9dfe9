//! A real store with a pause after each thread read, to widen the window between a
//! store read and the cache fill that follows it; or, for one chosen read, a pause
//! that lasts until the test lets it go.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

use exai::store::{DelegatingStore, Store, StoreHook};

pub type SlowStore = DelegatingStore<SlowReads>;

/// Pauses after each thread read of the store it wraps.
pub struct SlowReads {
    pub read_delay: Duration,
    pub gate: ReadGate,
}

pub fn slow_store(inner: Arc<dyn Store>, read_delay: Duration) -> SlowStore {
    DelegatingStore { inner, hook: SlowReads { read_delay, gate: ReadGate::default() } }
}

/// Holds the next thread read, once it has read the store, until released.
#[derive(Default)]
pub struct ReadGate {
    armed: Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
}

/// A read held by the gate: `reached` resolves once the read has read the store;
/// sending on `release` lets it carry on.
pub struct HeldRead {
    pub reached: oneshot::Receiver<()>,
    pub release: oneshot::Sender<()>,
}

impl ReadGate {
    pub fn hold_next(&self) -> HeldRead {
        let (reached_tx, reached) = oneshot::channel();
        let (release, release_rx) = oneshot::channel();
        *self.armed.lock().unwrap() = Some((reached_tx, release_rx));
        HeldRead { reached, release }
    }

    async fn pass(&self) {
        let armed = self.armed.lock().unwrap().take();
        if let Some((reached, release)) = armed {
            let _ = reached.send(());
            let _ = release.await;
        }
    }
}

impl StoreHook for SlowReads {
    async fn around<T: Send>(&self, op: &'static str, call: impl Future<Output = T> + Send) -> T {
        let output = call.await;
        if op == "get_thread" {
            tokio::time::sleep(self.read_delay).await;
            self.gate.pass().await;
        }
        output
    }
}
