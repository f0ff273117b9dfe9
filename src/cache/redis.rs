//! Redis: thread documents under `<namespace>:thread:{id}` (a hash: version `v`, body `b`,
//! lease `l`), read and written only through atomic scripts, every call bounded.

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};
use std::time::Duration;
use uuid::Uuid;

use super::{Cache, CacheError, CachedThread, Fill, LEASE_TTL, Lease, Lookup, Update};

/// Longest any cache call may take before the request carries on without the cache.
const CALL_TIMEOUT: Duration = Duration::from_millis(250);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Keys deleted per command when clearing the namespace.
const CLEAR_BATCH: usize = 500;

/// The document, else the entry's lease, else a new lease (ARGV[1]) on a new entry
/// that expires after ARGV[2] ms. An empty document is a removal marker: a miss whose
/// fill the marker's version will refuse.
const GET_OR_LEASE: &str = r"
local found = redis.call('HMGET', KEYS[1], 'b', 'l')
if found[1] then
    if found[1] ~= '' then
        return {1, found[1]}
    end
    return {0, ARGV[1]}
end
if found[2] then
    return {0, found[2]}
end
redis.call('HSET', KEYS[1], 'l', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {0, ARGV[1]}
";

/// Stores the document (version ARGV[2], body ARGV[3], TTL ARGV[4] ms) only while the
/// entry holds the lease ARGV[1] and no document of the same or a newer version.
const FILL_UNDER_LEASE: &str = r"
if redis.call('HGET', KEYS[1], 'l') ~= ARGV[1] then
    return 0
end
local current = redis.call('HGET', KEYS[1], 'v')
if current and tonumber(current) >= tonumber(ARGV[2]) then
    return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'b', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
";

/// The write-through (version ARGV[1], body ARGV[2], TTL ARGV[3] ms): replaces an older
/// document, or leaves the entry empty; either way under the new lease ARGV[4]. Returns
/// 1 stored, 2 invalidated, 0 stale.
const PUT_IF_NEWER: &str = r"
local current = redis.call('HGET', KEYS[1], 'v')
if current and tonumber(current) >= tonumber(ARGV[1]) then
    return 0
end
if current then
    redis.call('HSET', KEYS[1], 'v', ARGV[1], 'b', ARGV[2], 'l', ARGV[4])
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return 1
end
redis.call('HSET', KEYS[1], 'l', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 2
";

/// Leaves the entry empty under the new lease ARGV[1] for ARGV[2] ms, unless it holds a
/// removal marker.
const INVALIDATE: &str = r"
if redis.call('HGET', KEYS[1], 'b') == '' then
    return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'l', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

/// Replaces the entry with an empty document of the newest version of all, for ARGV[1] ms.
const REMOVE: &str = r"
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'b', '')
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
";

/// One multiplexed connection shared by every request: commands from concurrent
/// requests are pipelined on it, with no per-request pool checkout on the hot path.
/// It reconnects by itself after Redis restarts.
pub struct RedisCache {
    connection: ConnectionManager,
    prefix: String,
    get_or_lease: Script,
    fill_under_lease: Script,
    put_if_newer: Script,
    invalidate: Script,
    remove: Script,
}

fn unavailable(error: RedisError) -> CacheError {
    CacheError(error.to_string())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX).max(1)
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
            get_or_lease: Script::new(GET_OR_LEASE),
            fill_under_lease: Script::new(FILL_UNDER_LEASE),
            put_if_newer: Script::new(PUT_IF_NEWER),
            invalidate: Script::new(INVALIDATE),
            remove: Script::new(REMOVE),
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

    async fn get(&self, id: Uuid, lease: Lease) -> Result<Lookup, CacheError> {
        let mut connection = self.connection.clone();
        let mut invocation = self.get_or_lease.key(self.key(id));
        invocation.arg(lease.0).arg(millis(LEASE_TTL));
        let (hit, value): (i64, Vec<u8>) = self.bounded(invocation.invoke_async(&mut connection)).await?;
        if hit == 1 {
            return Ok(Lookup::Hit(Bytes::from(value)));
        }
        let lease = std::str::from_utf8(&value).ok().and_then(|nonce| nonce.parse().ok());
        lease
            .map(|nonce| Lookup::Miss(Lease(nonce)))
            .ok_or_else(|| CacheError("malformed cache lease".into()))
    }

    async fn fill(
        &self,
        id: Uuid,
        lease: Lease,
        entry: CachedThread,
        ttl: Duration,
    ) -> Result<Fill, CacheError> {
        let mut connection = self.connection.clone();
        let mut invocation = self.fill_under_lease.key(self.key(id));
        invocation.arg(lease.0).arg(entry.version).arg(entry.body.as_ref()).arg(millis(ttl));
        let stored: i64 = self.bounded(invocation.invoke_async(&mut connection)).await?;
        Ok(if stored == 1 { Fill::Stored } else { Fill::Rejected })
    }

    async fn put(&self, id: Uuid, entry: CachedThread, ttl: Duration) -> Result<Update, CacheError> {
        let mut connection = self.connection.clone();
        let mut invocation = self.put_if_newer.key(self.key(id));
        invocation
            .arg(entry.version)
            .arg(entry.body.as_ref())
            .arg(millis(ttl))
            .arg(Lease::random().0)
            .arg(millis(LEASE_TTL));
        let outcome: i64 = self.bounded(invocation.invoke_async(&mut connection)).await?;
        Ok(match outcome {
            1 => Update::Stored,
            2 => Update::Invalidated,
            _ => Update::Stale,
        })
    }

    async fn invalidate(&self, id: Uuid) -> Result<(), CacheError> {
        let mut connection = self.connection.clone();
        let mut invocation = self.invalidate.key(self.key(id));
        invocation.arg(Lease::random().0).arg(millis(LEASE_TTL));
        self.bounded(invocation.invoke_async::<i64>(&mut connection)).await.map(drop)
    }

    async fn remove(&self, id: Uuid, block_fills_for: Duration) -> Result<(), CacheError> {
        let mut connection = self.connection.clone();
        let mut invocation = self.remove.key(self.key(id));
        invocation.arg(millis(block_fills_for)).arg(i64::MAX);
        self.bounded(invocation.invoke_async::<i64>(&mut connection)).await.map(drop)
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
