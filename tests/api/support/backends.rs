//! The application on each store backend, for behaviour that must be alike on all.

use std::any::Any;
use std::sync::Arc;

use super::postgrest::{self, SECRET_KEY};
use super::{TestApp, memory_cache, policy, services, sqlite_store};
use exai::secret::Secret;
use exai::store::{PostgresStore, SupabaseStore};

/// The application on one store backend, with what keeps that backend alive.
pub struct OnBackend {
    pub name: &'static str,
    pub app: TestApp,
    _guard: Box<dyn Any>,
}

/// The application on every store backend this machine can run: SQLite, PostgreSQL, and
/// Supabase through PostgREST, each with a database of its own.
pub async fn every_backend() -> Vec<OnBackend> {
    let (sqlite, dir) = sqlite_store().await;
    let app = TestApp::with_backends(sqlite, memory_cache(), policy(20));
    let mut backends = vec![OnBackend { name: "sqlite", app, _guard: Box::new(dir) }];
    if let Some(url) = services::postgres_database() {
        let store = Arc::new(PostgresStore::connect(&url).unwrap());
        let app = TestApp::with_backends(store, memory_cache(), policy(20));
        backends.push(OnBackend { name: "postgres", app, _guard: Box::new(()) });
    }
    if let Some(url) = services::postgres_database() {
        let gateway = postgrest::start(&url, SECRET_KEY).await;
        let store = SupabaseStore::connect(&gateway.url.parse().unwrap(), &Secret::new(SECRET_KEY)).unwrap();
        let app = TestApp::with_backends(Arc::new(store), memory_cache(), policy(20));
        backends.push(OnBackend { name: "supabase", app, _guard: Box::new(gateway) });
    }
    backends
}
