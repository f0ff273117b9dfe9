//! Serving the router until a shutdown signal, letting in-flight work finish.

use tokio::net::TcpListener;

use crate::app::AppState;
use crate::http::router;

/// Serves until `signal`, then stops every tool run (each records itself failed and
/// answers whoever waits for it) and lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let executor = state.executor.clone();
    let shutdown = async move {
        signal.await;
        executor.shutdown().await;
    };
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutting down; finishing requests in flight");
}
