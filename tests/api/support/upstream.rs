//! Upstreams for tool runs, started by the tests: a webhook, an OpenAI-compatible chat
//! API that streams slowly, and a server that accepts and never answers. They record
//! what they receive so tests can check what reached them.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use serde::Deserialize;
use serde_json::{Value, json};
use std::io::Read;
use std::net::TcpListener as StdListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Requests an upstream received: their JSON bodies and Authorization headers, the
/// headers of every request whatever its route or method, and how each webhook call ended.
#[derive(Default)]
pub struct Received {
    pub bodies: Mutex<Vec<Value>>,
    pub authorizations: Mutex<Vec<Option<String>>>,
    pub all_headers: Mutex<Vec<HeaderMap>>,
    /// One entry per webhook call that has ended: `true` when it answered, `false` when
    /// the caller closed the connection first (the server then drops the handler).
    pub ended: Mutex<Vec<bool>>,
}

/// Notes how a webhook call ended when it is dropped, answered or not.
struct Ending<'a> {
    received: &'a Received,
    answered: bool,
}

impl Drop for Ending<'_> {
    fn drop(&mut self) {
        self.received.ended.lock().unwrap().push(self.answered);
    }
}

impl Received {
    /// How the webhook calls that have ended did.
    pub fn endings(&self) -> Vec<bool> {
        self.ended.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.bodies.lock().unwrap().len()
    }

    pub fn last(&self) -> Value {
        self.bodies.lock().unwrap().last().cloned().unwrap_or(Value::Null)
    }
}

pub struct Upstream {
    pub url: String,
    pub received: Arc<Received>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Deserialize)]
struct Delay {
    ms: Option<u64>,
}

fn record(received: &Received, headers: &HeaderMap, body: &Value) {
    received.bodies.lock().unwrap().push(body.clone());
    let authorization = headers.get("authorization").map(|v| v.to_str().unwrap().to_owned());
    received.authorizations.lock().unwrap().push(authorization);
}

/// `POST /webhook[?ms=N]`: answers `{output: "seen: <input>"}`, after N ms.
async fn webhook(
    State(received): State<Arc<Received>>,
    Query(delay): Query<Delay>,
    headers: HeaderMap,
    body: axum::Json<Value>,
) -> Response {
    record(&received, &headers, &body);
    let mut ending = Ending { received: &received, answered: false };
    tokio::time::sleep(Duration::from_millis(delay.ms.unwrap_or(0))).await;
    ending.answered = true;
    let input = body["input"].as_str().unwrap_or_default();
    axum::Json(json!({"output": format!("seen: {input}")})).into_response()
}

/// `POST /broken`: always fails.
async fn broken(
    State(received): State<Arc<Received>>,
    headers: HeaderMap,
    body: axum::Json<Value>,
) -> Response {
    record(&received, &headers, &body);
    (StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded").into_response()
}

/// `POST /nul`: an answer holding the NUL character, which no store keeps as text.
async fn nul(State(received): State<Arc<Received>>, headers: HeaderMap, body: axum::Json<Value>) -> Response {
    record(&received, &headers, &body);
    axum::Json(json!({"output": "a\u{0}b"})).into_response()
}

/// `POST /v1/chat/completions`: "Hello world" in three pieces 300 ms apart when asked to
/// stream, else at once.
async fn chat(
    State(received): State<Arc<Received>>,
    headers: HeaderMap,
    body: axum::Json<Value>,
) -> Response {
    record(&received, &headers, &body);
    if body["stream"] != true {
        let completion = json!({"model": "test-model-v2", "choices": [{"message": {"role": "assistant", "content": "Hello world"}}]});
        return axum::Json(completion).into_response();
    }
    let pieces = ["Hel", "lo", " world"];
    let events = futures_util::stream::unfold(0, move |i| async move {
        if i > pieces.len() {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let line = match pieces.get(i) {
            Some(piece) => {
                let chunk = json!({"model": "test-model-v2", "choices": [{"delta": {"content": piece}}]});
                format!("data: {chunk}\n\n")
            }
            None => "data: [DONE]\n\n".to_owned(),
        };
        Some((Ok::<_, std::io::Error>(line), i + 1))
    });
    ([("content-type", "text/event-stream")], Body::from_stream(events)).into_response()
}

/// `/here/{status}/{*path}`: a redirect with `status` to `/{path}` on this upstream.
async fn redirect_here(Path((status, path)): Path<(u16, String)>) -> Response {
    redirect(status, format!("/{path}"))
}

/// `/away/{status}/{port}/{*path}`: a redirect with `status` to `/{path}` on another
/// port of this host.
async fn redirect_away(Path((status, port, path)): Path<(u16, u16, String)>) -> Response {
    redirect(status, format!("http://127.0.0.1:{port}/{path}"))
}

fn redirect(status: u16, location: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap();
    (status, [("location", location)]).into_response()
}

async fn note_headers(State(received): State<Arc<Received>>, request: Request, next: Next) -> Response {
    received.all_headers.lock().unwrap().push(request.headers().clone());
    next.run(request).await
}

pub async fn start() -> Upstream {
    let received = Arc::new(Received::default());
    let app = Router::new()
        .route("/webhook", post(webhook))
        .route("/broken", post(broken))
        .route("/nul", post(nul))
        .route("/v1/chat/completions", post(chat))
        .route("/here/{status}/{*path}", any(redirect_here))
        .route("/away/{status}/{port}/{*path}", any(redirect_away))
        .layer(middleware::from_fn_with_state(received.clone(), note_headers))
        // Room for the largest history a run may send.
        .layer(axum::extract::DefaultBodyLimit::max(16 * 1024 * 1024))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Upstream { url, received, task }
}

/// Accepts connections, reads what comes, never answers, and notes when each
/// connection is closed by the other side.
pub struct Hanging {
    pub url: String,
    pub accepted: Arc<AtomicUsize>,
    pub open: Arc<AtomicUsize>,
    pub closed_at: Arc<Mutex<Vec<Instant>>>,
}

pub fn hanging() -> Hanging {
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (accepted, open) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let closed_at = Arc::new(Mutex::new(Vec::new()));
    let (counted, still_open, closes) = (accepted.clone(), open.clone(), closed_at.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counted.fetch_add(1, Ordering::SeqCst);
            still_open.fetch_add(1, Ordering::SeqCst);
            let (still_open, closes) = (still_open.clone(), closes.clone());
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                while matches!(stream.read(&mut buffer), Ok(n) if n > 0) {}
                closes.lock().unwrap().push(Instant::now());
                still_open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Hanging { url, accepted, open, closed_at }
}
