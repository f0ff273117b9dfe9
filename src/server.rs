//! Serving the router over HTTP/1.1 until a shutdown signal, letting in-flight work
//! finish. Idle and slow clients are bounded: a connection cap, a deadline for each
//! request's headers (which also ends idle kept-alive connections) and one for its body.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::app::AppState;
use crate::config::ConnectionSettings;
use crate::http::{DeadlineBody, Peer, router};

/// Pause after a failed accept (out of file descriptors, say) before trying again.
const ACCEPT_RETRY: Duration = Duration::from_secs(1);
/// File descriptors kept for the store, the cache, tool upstreams and files.
const RESERVED_FILES: u64 = 256;
/// How long in-flight requests may take to finish once shutting down: longer than any
/// store call (10 s at most), short enough that a client which stopped reading its
/// response cannot hold the process up.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// Raises the soft limit on open files to the hard limit, and returns the connection
/// cap those files allow: `wanted`, or less when the limit is lower.
pub fn fit_open_files(wanted: usize) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(error) => {
            tracing::warn!(%error, "cannot raise the open-file limit");
            match rlimit::Resource::NOFILE.get() {
                Ok((soft, _)) => soft,
                Err(_) => return wanted,
            }
        }
    };
    let room = usize::try_from(limit.saturating_sub(RESERVED_FILES)).unwrap_or(usize::MAX).max(1);
    if room < wanted {
        tracing::warn!(
            open_file_limit = limit,
            max_connections = room,
            "EXAI_MAX_CONNECTIONS lowered to fit the open-file limit"
        );
    }
    wanted.min(room)
}

/// Serves until `signal`, then stops every tool run (each records itself failed and
/// answers whoever waits for it), stops accepting, and lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    settings: ConnectionSettings,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let executor = state.executor.clone();
    let shutdown = async move {
        signal.await;
        executor.shutdown().await;
    };
    tokio::pin!(shutdown);
    let router = router(state);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(settings.header_timeout);
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let graceful = GracefulShutdown::new();
    loop {
        // A connection over the cap is left waiting in the listen backlog, not refused:
        // it is served as soon as another one closes.
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::error!(%error, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
        };
        let router = router.clone();
        let body_timeout = settings.body_timeout;
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let mut request = request.map(|body| Body::new(DeadlineBody::new(body, body_timeout)));
            request.extensions_mut().insert(Peer(peer));
            router.clone().oneshot(request)
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "connections still open after the grace period; closing them");
    }
    Ok(())
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
