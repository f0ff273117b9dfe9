use async_trait::async_trait;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use url::Url;

use super::{Answer, Deltas, Invocation, MAX_ANSWER_BYTES, Runner, excerpt, failure, read_body, shown};
use crate::domain::Role;
use crate::secret::Secret;

/// An OpenAI-compatible chat-completions API. The conversation so far goes as chat
/// messages after the system prompt; with `stream` the answer arrives as server-sent
/// events and each piece is passed on as it comes.
pub struct OpenAiRunner {
    client: reqwest::Client,
    endpoint: Url,
    provider: String,
    api_key: Secret,
    model: String,
    system_prompt: Option<String>,
    stream: bool,
}

#[derive(Deserialize)]
struct Completion {
    model: Option<String>,
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(alias = "delta")]
    message: Message,
}

#[derive(Deserialize, Default)]
struct Message {
    #[serde(default)]
    content: Option<String>,
}

impl OpenAiRunner {
    pub fn new(
        client: reqwest::Client,
        base_url: &Url,
        api_key: Secret,
        model: String,
        system_prompt: Option<String>,
        stream: bool,
    ) -> Self {
        let endpoint = base_url.join("chat/completions").unwrap_or_else(|_| base_url.clone());
        let provider = base_url.host_str().unwrap_or("openai-compatible").to_owned();
        Self { client, endpoint, provider, api_key, model, system_prompt, stream }
    }

    fn messages(&self, invocation: &Invocation<'_>) -> Vec<Value> {
        let system = self.system_prompt.iter().map(|prompt| json!({"role": "system", "content": prompt}));
        let history = invocation.history.iter().map(|turn| {
            // Chat APIs take a `tool` message only as the answer to a tool call.
            let role = if turn.role == Role::Tool { Role::Assistant } else { turn.role };
            json!({"role": role, "content": turn.content})
        });
        let input = std::iter::once(json!({"role": "user", "content": invocation.input}));
        system.chain(history).chain(input).collect()
    }

    fn answer(&self, output: String, model: Option<String>) -> Answer {
        Answer {
            output,
            model_provider: Some(self.provider.clone()),
            model_name: Some(model.unwrap_or_else(|| self.model.clone())),
        }
    }
}

/// The first choice's text in a completion or a streamed chunk.
fn content(completion: Completion) -> (Option<String>, Option<String>) {
    let text = completion.choices.into_iter().next().and_then(|choice| choice.message.content);
    (text, completion.model)
}

#[async_trait]
impl Runner for OpenAiRunner {
    async fn run(&self, invocation: Invocation<'_>, deltas: Deltas<'_>) -> Result<Answer, String> {
        let endpoint = &self.endpoint;
        let body =
            json!({"model": self.model, "messages": self.messages(&invocation), "stream": self.stream});
        let response = self
            .client
            .post(endpoint.clone())
            .bearer_auth(self.api_key.expose())
            .json(&body)
            .send()
            .await
            .map_err(|e| failure(endpoint, e))?;
        let status = response.status();
        if !status.is_success() {
            let body = read_body(endpoint, response).await.unwrap_or_default();
            let body = String::from_utf8_lossy(&body);
            return Err(format!("{} answered HTTP {status}: {}", shown(endpoint), excerpt(&body)));
        }
        if !self.stream {
            let body = read_body(endpoint, response).await?;
            let completion: Completion = serde_json::from_slice(&body)
                .map_err(|e| format!("{}: unreadable completion: {e}", shown(endpoint)))?;
            let (text, model) = content(completion);
            return Ok(self.answer(text.unwrap_or_default(), model));
        }

        let mut output = String::new();
        let mut model = None;
        let mut pending = Vec::new();
        let mut chunks = response.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            pending.extend_from_slice(&chunk.map_err(|e| failure(endpoint, e))?);
            if pending.len() + output.len() > MAX_ANSWER_BYTES {
                return Err(format!("{} sent more than {MAX_ANSWER_BYTES} bytes", shown(endpoint)));
            }
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                let Some(data) = line.trim().strip_prefix("data:").map(str::trim) else { continue };
                if data == "[DONE]" {
                    return Ok(self.answer(output, model));
                }
                let chunk: Completion = serde_json::from_str(data).map_err(|e| {
                    format!("{}: unreadable stream event ({e}): {}", shown(endpoint), excerpt(data))
                })?;
                let (text, chunk_model) = content(chunk);
                model = model.or(chunk_model);
                if let Some(text) = text.filter(|text| !text.is_empty()) {
                    output.push_str(&text);
                    deltas(text);
                }
            }
        }
        // Without the closing [DONE] the answer may be cut short: not one to record.
        Err(format!("{} ended its stream before [DONE]", shown(endpoint)))
    }
}
