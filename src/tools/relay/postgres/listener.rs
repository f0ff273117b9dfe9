//! Postgres `LISTEN` as the process's one listening connection.

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};

use super::failed;
use crate::tools::relay::RelayError;
use crate::tools::relay::hub::Listener;

/// How the listening connection names itself in `pg_stat_activity`.
pub const APPLICATION_NAME: &str = "exai relay";

#[async_trait]
impl Listener for PgListener {
    type Options = PgConnectOptions;

    async fn connect(options: &PgConnectOptions) -> Result<Self, RelayError> {
        // A pool of one, as `PgListener` wants one, which never replaces its connection:
        // once that is lost, a new listener is made.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_with(options.clone().application_name(APPLICATION_NAME))
            .await
            .map_err(failed)?;
        let mut listener = PgListener::connect_with(&pool).await.map_err(failed)?;
        listener.ignore_pool_close_event(true);
        listener.eager_reconnect(false);
        Ok(listener)
    }

    async fn listen(&mut self, channel: &str) -> Result<(), RelayError> {
        PgListener::listen(self, channel).await.map_err(failed)
    }

    async fn unlisten(&mut self, channel: &str) -> Result<(), RelayError> {
        PgListener::unlisten(self, channel).await.map_err(failed)
    }

    async fn next(&mut self) -> Result<Option<(String, String)>, RelayError> {
        let notification = self.try_recv().await.map_err(failed)?;
        Ok(notification
            .map(|notification| (notification.channel().to_owned(), notification.payload().to_owned())))
    }
}
