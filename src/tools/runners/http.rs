use async_trait::async_trait;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::json;
use url::Url;

use super::{Answer, Deltas, Invocation, Runner, excerpt, failure, read_body, shown};

/// A webhook: `POST {input, history: [{role, content}]}`, answered with `{output}`.
pub struct HttpRunner {
    client: reqwest::Client,
    url: Url,
    headers: HeaderMap,
}

#[derive(Deserialize)]
struct Reply {
    output: String,
}

impl HttpRunner {
    pub fn new(client: reqwest::Client, url: Url, headers: HeaderMap) -> Self {
        Self { client, url, headers }
    }
}

#[async_trait]
impl Runner for HttpRunner {
    async fn run(&self, invocation: Invocation<'_>, _: Deltas<'_>) -> Result<Answer, String> {
        let history: Vec<_> = invocation
            .history
            .iter()
            .map(|turn| json!({"role": turn.role, "content": turn.content}))
            .collect();
        let response = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .json(&json!({"input": invocation.input, "history": history}))
            .send()
            .await
            .map_err(|e| failure(&self.url, e))?;
        let status = response.status();
        let body = read_body(&self.url, response).await?;
        let body = String::from_utf8_lossy(&body);
        if !status.is_success() {
            return Err(format!("{} answered HTTP {status}: {}", shown(&self.url), excerpt(&body)));
        }
        let reply: Reply = serde_json::from_str(&body).map_err(|e| {
            format!("{} answered without an output ({e}): {}", shown(&self.url), excerpt(&body))
        })?;
        Ok(Answer { output: reply.output, model_provider: None, model_name: None })
    }
}
