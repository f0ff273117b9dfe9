//! The application state, built once at start-up from the configuration.

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;

use crate::cache::{Cache, MemoryCache};
use crate::config::{Config, StoreConfig};
use crate::conversations::Conversations;
use crate::http::ApiKeys;
use crate::store::{SqliteStore, Store, StoreError};

/// Bytes of thread documents the in-process cache may hold.
const MEMORY_CACHE_BYTES: u64 = 64 * 1024 * 1024;

pub struct App {
    pub conversations: Conversations,
    pub api_keys: ApiKeys,
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
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the {backend} store: {source}")]
    Store {
        backend: &'static str,
        source: StoreError,
    },
    #[error("the {0} backend is not available in this build")]
    Unsupported(&'static str),
}

impl App {
    pub async fn from_config(config: &Config) -> Result<App, StartupError> {
        if config.redis_url.is_some() {
            return Err(StartupError::Unsupported("redis"));
        }
        let store = open_store(&config.store).await?;
        let cache: Arc<dyn Cache> = Arc::new(MemoryCache::new(MEMORY_CACHE_BYTES));
        Ok(App {
            conversations: Conversations::new(store, cache, config.conversation),
            api_keys: ApiKeys::new(&config.api_keys),
        })
    }
}

/// Opens the configured store, applying its migrations where it owns its schema.
pub async fn open_store(config: &StoreConfig) -> Result<Arc<dyn Store>, StartupError> {
    match config {
        StoreConfig::Sqlite { data_dir } => {
            std::fs::create_dir_all(data_dir).map_err(|source| StartupError::DataDir {
                path: data_dir.clone(),
                source,
            })?;
            let store = SqliteStore::open(&data_dir.join("exai.db"))
                .await
                .map_err(|source| StartupError::Store {
                    backend: "sqlite",
                    source,
                })?;
            Ok(Arc::new(store))
        }
        other => Err(StartupError::Unsupported(other.backend())),
    }
}
