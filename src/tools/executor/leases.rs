//! Run ownership when several processes share a store: each run is leased to the
//! instance running it; the instance renews the leases of its live runs, and every
//! instance fails the runs of instances that are gone.

use tokio::time::Instant;
use uuid::Uuid;

use super::Executor;
use crate::store::{Abandoned, RunLease, Sweep};
use crate::tools::recorder::now;

/// The error a run is failed with when its process is gone: a process restarted on a
/// store only it can use, or any process whose lease ran out.
const RESTARTED: &str = "the server restarted before the run finished";
const ABANDONED: &str = "the process running it stopped before the run finished";

impl Executor {
    /// This process's instance id, the owner of the runs it starts.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// A lease on a run for this instance, from now.
    pub(super) fn lease(&self) -> RunLease {
        RunLease { owner: self.inner.instance.clone(), expires_at: now() + self.inner.settings.run_lease }
    }

    /// Until shutdown, every quarter of a lease: renews the leases of this process's live
    /// runs, all in one store call, stops those whose cancel another process recorded or
    /// that another process failed, then fails the runs whose owner is gone. `exclusive`
    /// says no other process can use the store (SQLite's file lock), so every run of
    /// another instance is abandoned; otherwise only those whose lease ended are. The
    /// first sweep is at once.
    ///
    /// While the store is out of reach (a call fails, or a round takes half a lease), no
    /// process can renew a lease: a lapsed lease then says nothing of its owner. So after
    /// that, sweeps wait until this process has reached the store for a whole lease, in
    /// every round (a ping stands in for the sweep), which gives every live owner time to
    /// renew its leases first.
    pub async fn keep_leases(&self, exclusive: bool) {
        let lease = self.inner.settings.run_lease;
        let (abandoned, error) = if exclusive {
            (Abandoned::All, RESTARTED)
        } else {
            (Abandoned::LeaseEnded { legacy_grace: lease }, ABANDONED)
        };
        let mut ticks = tokio::time::interval(lease / 4);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Since when the store has answered every round in time; `None`: since start.
        let mut reached_since: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = self.inner.shutdown.cancelled() => return,
            }
            let round = Instant::now();
            let sweeping = reached_since.is_none_or(|since| since.elapsed() >= lease);
            let reached = self.renew_leases().await
                && if sweeping {
                    self.fail_abandoned(abandoned, error).await
                } else {
                    self.inner.store.ping().await.is_ok()
                };
            if !reached || round.elapsed() >= lease / 2 {
                reached_since = Some(Instant::now());
            }
        }
    }

    /// Whether the store could be reached.
    async fn renew_leases(&self) -> bool {
        let live: Vec<Uuid> = self.live().keys().copied().collect();
        if live.is_empty() {
            return true;
        }
        match self.inner.store.renew_run_leases(&self.lease(), &live).await {
            // Runs whose cancel was asked, and runs another process failed while this one
            // could not renew them, whose answers the store would refuse.
            Ok(to_stop) => {
                let cancelling: Vec<_> =
                    to_stop.iter().filter_map(|id| self.live().get(id).cloned()).collect();
                for live in cancelling {
                    live.cancel.cancel();
                }
                true
            }
            Err(error) => {
                tracing::warn!(runs = live.len(), %error, "could not renew the leases of this process's runs");
                false
            }
        }
    }

    /// Whether the store could be reached.
    async fn fail_abandoned(&self, abandoned: Abandoned, error: &str) -> bool {
        let owner = &self.inner.instance;
        let sweep = Sweep { owner, abandoned, error, now: now() };
        match self.inner.store.fail_abandoned_runs(&sweep).await {
            Ok(0) => true,
            Ok(failed) => {
                tracing::warn!(failed, "marked runs whose process is gone as failed");
                true
            }
            Err(error) => {
                tracing::warn!(%error, "could not look for runs whose process is gone");
                false
            }
        }
    }
}
