//! The application state, built once at start-up from the configuration.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::Instrument;
use uuid::Uuid;

use crate::access::{ApiKeys, Sessions, TrustedProxies};
use crate::cache::{Cache, CacheError, MemoryCache, MeteredCache, NoCache, RedisCache};
use crate::config::{Config, Setting, StoreConfig, effective_settings};
use crate::conversations::Conversations;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::stats::{self, Sources, StatsRing};
use crate::store::{
    LockError, MeteredStore, PostgresStore, ServingLock, SqliteStore, Store, StoreError, SupabaseStore,
};
use crate::tools::{Executor, PgRelay, RedisRelay, Relay, RelayError};

/// Bytes of thread documents the in-process cache may hold.
const MEMORY_CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// Prefix of every Redis key exai writes.
const REDIS_NAMESPACE: &str = "exai";

pub struct App {
    pub conversations: Conversations,
    pub executor: Executor,
    pub health: Health,
    pub metrics: Arc<Metrics>,
    pub api_keys: ApiKeys,
    pub trusted_proxies: TrustedProxies,
    /// Samples of the last hour, for the dashboard and `/v1/stats`.
    pub stats: StatsRing,
    /// Dashboard sign-ins.
    pub sessions: Sessions,
    /// The settings in effect, secrets redacted, for the dashboard.
    pub settings: Vec<Setting>,
    /// Keeps a second process from serving the same SQLite database while this one lives.
    _serving_lock: Option<ServingLock>,
}

impl App {
    /// The parts the dashboard's and `/v1/stats`' figures are read from.
    pub fn stats_sources(&self) -> Sources<'_> {
        Sources {
            metrics: &self.metrics,
            cache: self.conversations.cache_stats(),
            health: &self.health,
            ring: &self.stats,
        }
    }
}

/// Samples the service every [`stats::INTERVAL`] for as long as the process runs. Each
/// sample asks for a health report (reused while fresh, as for `/healthz`), so that
/// every dependency's latency has a point in every sample.
pub fn spawn_sampler(state: AppState) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(stats::INTERVAL);
        loop {
            ticks.tick().await;
            state.health.report().await;
            state.stats.record(stats::read_counters(&state.stats_sources()));
        }
    });
}

/// What handlers receive: one shared, cheaply cloned handle.
#[derive(Clone)]
pub struct AppState(Arc<App>);

impl AppState {
    pub fn new(app: App) -> Self {
        Self(Arc::new(app))
    }
}

impl Deref for AppState {
    type Target = App;

    fn deref(&self) -> &App {
        &self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("EXAI_DATA_DIR: cannot create {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("cannot open the {backend} store: {source}")]
    Store { backend: &'static str, source: StoreError },
    #[error("REDIS_URL: {0}")]
    Cache(CacheError),
    #[error(transparent)]
    Locked(#[from] LockError),
    #[error("REDIS_URL or DATABASE_URL: {0}")]
    Relay(RelayError),
}

impl App {
    /// Builds every part from the configuration. Nothing here waits for a server:
    /// a store or cache that is down is reported by requests and health, not here.
    pub async fn from_config(config: &Config) -> Result<App, StartupError> {
        let _serving_lock = match &config.store {
            StoreConfig::Sqlite { data_dir } => Some(ServingLock::acquire(&sqlite_database(data_dir)?)?),
            StoreConfig::Postgres { .. } | StoreConfig::Supabase { .. } => None,
        };
        let store = open_store(&config.store).await?;
        let cache = open_cache(config)?;
        warm_up(store.clone());
        let relay = open_relay(config)?;
        let app = App::assemble(store, cache, relay, config);
        tracing::info!(instance = app.executor.instance(), "this process's instance id");
        // Only one process opens a SQLite file: there, every other instance's run is abandoned.
        let exclusive = matches!(config.store, StoreConfig::Sqlite { .. });
        let executor = app.executor.clone();
        let span = tracing::info_span!("replica", instance = executor.instance());
        let keeping = async move {
            tokio::join!(executor.keep_leases(exclusive), executor.take_cancel_requests());
        };
        tokio::spawn(keeping.instrument(span));
        Ok(App { _serving_lock, ..app })
    }

    /// The service over a store and a cache, each call to either timed for metrics, as a
    /// new instance with an id of its own, serving only the runs it starts.
    pub fn new(store: Arc<dyn Store>, cache: Arc<dyn Cache>, config: &Config) -> App {
        App::assemble(store, cache, None, config)
    }

    /// As [`App::new`], serving the runs of other processes through `relay`.
    fn assemble(
        store: Arc<dyn Store>,
        cache: Arc<dyn Cache>,
        relay: Option<Arc<dyn Relay>>,
        config: &Config,
    ) -> App {
        let instance = Uuid::new_v4().simple().to_string();
        let mut settings = effective_settings(config);
        settings.insert(0, Setting { name: "instance", value: instance.clone() });
        let metrics = Arc::new(Metrics::default());
        let store: Arc<dyn Store> = Arc::new(MeteredStore::new(store, metrics.clone(), config.slow_op));
        let cache: Arc<dyn Cache> = Arc::new(MeteredCache::new(cache, metrics.clone(), config.slow_op));
        let conversations = Conversations::new(store.clone(), cache.clone(), config.conversation)
            .with_cache_max_ttl(config.cache_max_ttl);
        App {
            executor: Executor::new(
                config.tools.clone(),
                store.clone(),
                conversations.clone(),
                metrics.clone(),
                instance.clone(),
                relay,
            ),
            conversations,
            health: Health::new(store, cache, config.health).with_instance(instance),
            metrics,
            api_keys: ApiKeys::new(&config.api_keys),
            trusted_proxies: config.trusted_proxies.clone(),
            stats: StatsRing::default(),
            sessions: Sessions::new(config.session_secret.as_ref()),
            settings,
            _serving_lock: None,
        }
    }
}

/// Redis when configured, else the in-process cache on SQLite, which only this process
/// writes. Without Redis, a Postgres or Supabase store gets no cache: other exai
/// processes may write it, and nothing would tell this one's cache.
pub fn open_cache(config: &Config) -> Result<Arc<dyn Cache>, StartupError> {
    Ok(match (&config.redis_url, &config.store) {
        (Some(url), _) => {
            Arc::new(RedisCache::connect(url.expose(), REDIS_NAMESPACE).map_err(StartupError::Cache)?)
        }
        (None, StoreConfig::Sqlite { .. }) => Arc::new(MemoryCache::new(MEMORY_CACHE_BYTES)),
        (None, StoreConfig::Postgres { .. } | StoreConfig::Supabase { .. }) => Arc::new(NoCache),
    })
}

/// The relay between processes: Redis pub/sub when Redis is configured, else Postgres
/// `LISTEN`/`NOTIFY` on a Postgres store.
fn open_relay(config: &Config) -> Result<Option<Arc<dyn Relay>>, StartupError> {
    let relay: Arc<dyn Relay> = match (&config.redis_url, &config.store) {
        (Some(url), _) => {
            Arc::new(RedisRelay::connect(url.expose(), REDIS_NAMESPACE).map_err(StartupError::Relay)?)
        }
        (None, StoreConfig::Postgres { url }) => {
            Arc::new(PgRelay::connect(url.expose()).map_err(StartupError::Relay)?)
        }
        (None, _) => return Ok(None),
    };
    Ok(Some(relay))
}

/// Opens the configured store. SQLite applies its migrations here; Postgres and
/// Supabase are migrated with `exai migrate`.
pub async fn open_store(config: &StoreConfig) -> Result<Arc<dyn Store>, StartupError> {
    let failed = |source| StartupError::Store { backend: config.backend(), source };
    Ok(match config {
        StoreConfig::Sqlite { data_dir } => {
            Arc::new(SqliteStore::open(&sqlite_database(data_dir)?).await.map_err(failed)?)
        }
        StoreConfig::Postgres { url } => Arc::new(PostgresStore::connect(url.expose()).map_err(failed)?),
        StoreConfig::Supabase { url, key, .. } => Arc::new(SupabaseStore::connect(url, key).map_err(failed)?),
    })
}

/// The SQLite database file in `data_dir`, which is created if missing.
fn sqlite_database(data_dir: &Path) -> Result<PathBuf, StartupError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|source| StartupError::DataDir { path: data_dir.to_owned(), source })?;
    Ok(data_dir.join("exai.db"))
}

/// Opens a first connection in the background and says whether the store answers.
fn warm_up(store: Arc<dyn Store>) {
    tokio::spawn(async move {
        match store.ping().await {
            Ok(()) => tracing::info!(store = store.backend(), "store reachable"),
            Err(error) => tracing::warn!(
                store = store.backend(),
                %error,
                "store not reachable yet; requests answer 503 until it is"
            ),
        }
    });
}
