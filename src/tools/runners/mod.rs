//! Runners call a tool's upstream once and return its answer. They know nothing of
//! timeouts or cancellation: the executor drops a runner's future to stop it, which
//! closes its upstream connection at once.

mod http;
mod openai;

use async_trait::async_trait;

use super::registry::ToolKind;
use crate::domain::Turn;

/// What a run hands its tool.
pub struct Invocation<'a> {
    pub input: &'a str,
    /// The conversation so far, oldest turn first.
    pub history: &'a [Turn],
}

/// What a tool answered.
pub struct Answer {
    pub output: String,
    pub model_provider: Option<String>,
    pub model_name: Option<String>,
}

/// Receives each piece of a streamed answer as it arrives.
pub type Deltas<'a> = &'a (dyn Fn(String) + Send + Sync);

#[async_trait]
pub trait Runner: Send + Sync {
    /// Calls the upstream. An error is a message for the run's record: it must not hold
    /// a secret.
    async fn run(&self, invocation: Invocation<'_>, deltas: Deltas<'_>) -> Result<Answer, String>;
}

struct Echo;

#[async_trait]
impl Runner for Echo {
    async fn run(&self, invocation: Invocation<'_>, _: Deltas<'_>) -> Result<Answer, String> {
        Ok(Answer { output: invocation.input.to_owned(), model_provider: None, model_name: None })
    }
}

/// Most redirects followed within one origin.
const MAX_REDIRECTS: usize = 5;

/// The HTTP client every tool's runner shares. It follows a redirect only within the
/// origin (scheme, host and port) it was sent to: the configured headers, API key and
/// body go with a followed request, so they must not reach anyone else. A redirect
/// elsewhere is handed back as the upstream's answer. It sends no `Referer`, which
/// would carry the configured URL's query.
pub fn client() -> reqwest::Client {
    let same_origin = reqwest::redirect::Policy::custom(|attempt| {
        let origin = attempt.previous().first().map(url::Url::origin);
        if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else if origin.as_ref() == Some(&attempt.url().origin()) {
            attempt.follow()
        } else {
            attempt.stop()
        }
    });
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .redirect(same_origin)
        .referer(false)
        .build()
        // Only a missing TLS backend fails here, and a default client would follow
        // redirects anywhere: better no tools than that.
        .expect("the HTTP client for tools builds")
}

/// The runner for a kind of tool, sharing one HTTP client among all tools.
pub fn runner(kind: &ToolKind, client: &reqwest::Client) -> Box<dyn Runner> {
    match kind {
        ToolKind::Echo => Box::new(Echo),
        ToolKind::Http { url, headers } => {
            Box::new(http::HttpRunner::new(client.clone(), url.clone(), headers.clone()))
        }
        ToolKind::OpenAi { base_url, api_key, model, system_prompt, stream } => {
            Box::new(openai::OpenAiRunner::new(
                client.clone(),
                base_url,
                api_key.clone(),
                model.clone(),
                system_prompt.clone(),
                *stream,
            ))
        }
    }
}

/// Most an upstream may send: a little more than the largest turn it could produce.
const MAX_ANSWER_BYTES: usize = 2 * 1024 * 1024;

/// An upstream's address as errors show it: without credentials or query, which may
/// hold tokens.
fn shown(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{}://{host}:{port}{}", url.scheme(), url.path()),
        None => format!("{}://{host}{}", url.scheme(), url.path()),
    }
}

/// A request failure described without the URL, which reqwest would otherwise add.
fn failure(url: &url::Url, error: reqwest::Error) -> String {
    format!("{}: {}", shown(url), error.without_url())
}

/// Reads a whole body, refusing one larger than an answer can be.
async fn read_body(url: &url::Url, mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| failure(url, e))? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_ANSWER_BYTES {
            return Err(format!("{} sent more than {MAX_ANSWER_BYTES} bytes", shown(url)));
        }
    }
    Ok(body)
}

/// The start of an upstream's error body, enough to tell what went wrong.
fn excerpt(body: &str) -> String {
    const LIMIT: usize = 300;
    match body.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{}…", &body[..cut]),
        None => body.to_owned(),
    }
}
