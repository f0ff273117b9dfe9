use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::OnceCell;

/// Coalesces concurrent loads of the same key into one: the first caller runs the
/// load, the others wait for its result.
pub struct SingleFlight<K, V> {
    flights: Mutex<HashMap<K, Arc<OnceCell<V>>>>,
}

impl<K: Eq + Hash + Clone, V: Clone> SingleFlight<K, V> {
    pub fn new() -> Self {
        Self { flights: Mutex::new(HashMap::new()) }
    }

    pub async fn run<F, Fut>(&self, key: K, load: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let flight = self.flights().entry(key.clone()).or_default().clone();
        // If the caller running the load is cancelled, a waiting caller takes over.
        let value = flight.get_or_init(load).await.clone();
        // Whoever finishes first retires the flight, so later callers load afresh.
        self.retire(&key, &flight);
        value
    }

    fn retire(&self, key: &K, flight: &Arc<OnceCell<V>>) {
        let mut flights = self.flights();
        if flights.get(key).is_some_and(|current| Arc::ptr_eq(current, flight)) {
            flights.remove(key);
        }
    }

    fn flights(&self) -> std::sync::MutexGuard<'_, HashMap<K, Arc<OnceCell<V>>>> {
        self.flights.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_callers_share_one_load() {
        let flights = Arc::new(SingleFlight::<u32, u32>::new());
        let loads = Arc::new(AtomicUsize::new(0));
        let callers = (0..10).map(|_| {
            let (flights, loads) = (flights.clone(), loads.clone());
            tokio::spawn(async move {
                flights
                    .run(1, || async {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        7
                    })
                    .await
            })
        });
        for caller in callers.collect::<Vec<_>>() {
            assert_eq!(caller.await.unwrap(), 7);
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        // The finished flight is retired: the next caller loads again.
        assert_eq!(flights.run(1, || async { 8 }).await, 8);
    }
}
