//! Redis: thread documents under `<namespace>:thread:{id}`, written only through a
//! compare-and-set script, every call bounded.

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};
use std::time::Duration;
use uuid::Uuid;

use super::{Cache, CacheError, CachedThread, Fill};

/// Longest any cache call may take before the request carries on without the cache.
const CALL_TIMEOUT: Duration = Duration::from_millis(250);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Keys deleted per command when clearing the namespace.
const CLEAR_BATCH: usize = 500;

/// Stores the document unless the entry holds this version or a newer one (a removal
/// marker is the newest of all), and sets its TTL: one atomic step.
const PUT_IF_NEWER: &str = r"
local current = redis.call('HGET', KEYS[1], 'v')
if current and tonumber(current) >= tonumber(ARGV[1]) then
    return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'b', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";

/// One multiplexed connection shared by every request: commands from concurrent
/// requests are pipelined on it, with no per-request pool checkout on the hot path.
/// It reconnects by itself after Redis restarts.
pub struct RedisCache {
    connection: ConnectionManager,
    prefix: String,
    put_if_newer: Script,
}

fn unavailable(error: RedisError) -> CacheError {
    CacheError(error.to_string())
}

impl RedisCache {
    /// Prepares the connection without waiting for it: Redis being down at start-up
    /// leaves the cache degraded, not the service stopped.
    pub fn connect(url: &str, namespace: &str) -> Result<Self, CacheError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        // Calls are bounded by `bounded` below; a second timer inside the client would
        // only add work to every call.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(None)
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_lazy_with_config(client, config).map_err(unavailable)?;
        Ok(Self {
            connection,
            prefix: format!("{namespace}:thread:"),
            put_if_newer: Script::new(PUT_IF_NEWER),
        })
    }

    fn key(&self, id: Uuid) -> String {
        format!("{}{id}", self.prefix)
    }

    /// Runs one cache call within the call timeout.
    async fn bounded<T>(&self, call: impl Future<Output = Result<T, RedisError>>) -> Result<T, CacheError> {
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(result) => result.map_err(unavailable),
            Err(_) => Err(CacheError(format!("no answer from Redis within {CALL_TIMEOUT:?}"))),
        }
    }
}

#[async_trait]
impl Cache for RedisCache {
    fn backend(&self) -> &'static str {
        "redis"
    }

    fn outlives_process(&self) -> bool {
        true
    }

    async fn get(&self, id: Uuid) -> Result<Option<Bytes>, CacheError> {
        let mut connection = self.connection.clone();
        let command = redis::cmd("HGET").arg(self.key(id)).arg("b").to_owned();
        let body: Option<Vec<u8>> = self.bounded(command.query_async(&mut connection)).await?;
        Ok(body.filter(|body| !body.is_empty()).map(Bytes::from))
    }

    async fn put(&self, id: Uuid, entry: CachedThread, ttl: Duration) -> Result<Fill, CacheError> {
        let mut connection = self.connection.clone();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut invocation = self.put_if_newer.key(self.key(id));
        invocation.arg(entry.version).arg(entry.body.as_ref()).arg(ttl_ms);
        let stored: i64 = self.bounded(invocation.invoke_async(&mut connection)).await?;
        Ok(if stored == 1 { Fill::Stored } else { Fill::Stale })
    }

    async fn purge(&self, ids: &[Uuid]) -> Result<(), CacheError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut connection = self.connection.clone();
        let keys: Vec<String> = ids.iter().map(|id| self.key(*id)).collect();
        let command = redis::cmd("DEL").arg(keys).to_owned();
        self.bounded(command.query_async::<i64>(&mut connection)).await.map(drop)
    }

    async fn clear(&self) -> Result<(), CacheError> {
        let mut connection = self.connection.clone();
        let pattern = format!("{}*", self.prefix);
        let mut cursor = 0u64;
        loop {
            let scan = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(CLEAR_BATCH)
                .to_owned();
            let (next, keys): (u64, Vec<String>) = self.bounded(scan.query_async(&mut connection)).await?;
            if !keys.is_empty() {
                let unlink = redis::cmd("UNLINK").arg(keys).to_owned();
                self.bounded(unlink.query_async::<i64>(&mut connection)).await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    async fn ping(&self) -> Result<(), CacheError> {
        let mut connection = self.connection.clone();
        let command = redis::cmd("PING").to_owned();
        self.bounded(command.query_async::<String>(&mut connection)).await.map(drop)
    }
}
