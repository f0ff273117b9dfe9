//! `tools.toml`: the tools this server can run, read once and validated at start-up.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;
use url::Url;

use crate::domain::check_tool_name;
use crate::secret::Secret;

/// The tools and the limits every run of them keeps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolSettings {
    /// The registry, the built-in `echo` first.
    pub definitions: Vec<ToolDefinition>,
    /// No run, whatever it asks for, may take longer.
    pub timeout_cap: Duration,
    /// How often a run reports progress.
    pub progress_every: Duration,
    /// How long a run stays its process's without the process renewing its lease: when
    /// the process is gone, its runs are marked failed this long (and a quarter more, at
    /// most) after its last renewal.
    pub run_lease: Duration,
}

/// The built-in tool that answers with its input.
pub const ECHO: &str = "echo";
const DEFAULT_MAX_CONCURRENCY: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolDefinition {
    pub name: String,
    pub description: String,
    pub timeout: Duration,
    /// Runs at once; more wait in a bounded queue.
    pub max_concurrency: usize,
    pub kind: ToolKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolKind {
    Echo,
    /// `POST {input, history}` to `url`, expecting `{output}`.
    Http {
        url: Url,
        headers: HeaderMap,
    },
    /// An OpenAI-compatible chat-completions API (GLM, Kimi, Ollama, vLLM).
    OpenAi {
        base_url: Url,
        api_key: Secret,
        model: String,
        system_prompt: Option<String>,
        stream: bool,
    },
}

impl ToolKind {
    pub fn name(&self) -> &'static str {
        match self {
            ToolKind::Echo => "echo",
            ToolKind::Http { .. } => "http",
            ToolKind::OpenAi { .. } => "openai",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    tools: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    kind: String,
    #[serde(default)]
    description: String,
    timeout_secs: Option<u64>,
    max_concurrency: Option<usize>,
    url: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    base_url: Option<String>,
    api_key_env: Option<String>,
    model: Option<String>,
    system_prompt: Option<String>,
    #[serde(default)]
    stream: bool,
}

/// Where and what the syntax error is, in one line. Not the error's own rendering, which
/// quotes the offending line: that line may hold a token.
fn syntax_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().replace('\n', " ");
    match error.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message,
    }
}

/// The built-in `echo` tool, always present.
pub fn echo(timeout_cap: Duration) -> ToolDefinition {
    ToolDefinition {
        name: ECHO.into(),
        description: "Answers with its input; for trying the API".into(),
        timeout: timeout_cap.min(Duration::from_secs(30)),
        max_concurrency: 64,
        kind: ToolKind::Echo,
    }
}

/// Reads a registry. `var` looks up the environment variables that hold API keys; no
/// tool may allow more time than `timeout_cap`. Errors name the offending entry.
pub fn parse(
    text: &str,
    var: &impl Fn(&str) -> Option<String>,
    timeout_cap: Duration,
) -> Result<Vec<ToolDefinition>, String> {
    let file: File = toml::from_str(text).map_err(|e| syntax_error(text, &e))?;
    let mut tools = vec![echo(timeout_cap)];
    for (index, entry) in file.tools.into_iter().enumerate() {
        let at = format!("tools[{index}] ({})", entry.name);
        let tool = definition(entry, var, timeout_cap).map_err(|problem| format!("{at}: {problem}"))?;
        if tools.iter().any(|known| known.name == tool.name) {
            return Err(format!("{at}: the name {:?} is already taken", tool.name));
        }
        tools.push(tool);
    }
    Ok(tools)
}

fn url(field: &str, value: Option<String>) -> Result<Url, String> {
    let value = value.ok_or_else(|| format!("{field} is required"))?;
    let url = Url::parse(&value).map_err(|e| format!("{field}: {e}"))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(format!("{field}: scheme {other:?} is not http or https")),
    }
}

fn definition(
    entry: Entry,
    var: &impl Fn(&str) -> Option<String>,
    timeout_cap: Duration,
) -> Result<ToolDefinition, String> {
    check_tool_name("name", &entry.name).map_err(|e| e.to_string())?;
    let timeout = match entry.timeout_secs {
        Some(0) => return Err("timeout_secs must be at least 1".into()),
        Some(secs) if Duration::from_secs(secs) > timeout_cap => {
            return Err(format!(
                "timeout_secs {secs} is above WORKFLOW_TOOL_TIMEOUT_SECS ({})",
                timeout_cap.as_secs()
            ));
        }
        Some(secs) => Duration::from_secs(secs),
        None => timeout_cap,
    };
    let max_concurrency = entry.max_concurrency.unwrap_or(DEFAULT_MAX_CONCURRENCY);
    if max_concurrency == 0 {
        return Err("max_concurrency must be at least 1".into());
    }
    let kind = match entry.kind.as_str() {
        "echo" => ToolKind::Echo,
        "http" => {
            let mut headers = HeaderMap::new();
            for (name, value) in entry.headers {
                let name =
                    HeaderName::try_from(name.as_str()).map_err(|_| format!("headers: bad name {name:?}"))?;
                let mut value =
                    HeaderValue::try_from(value).map_err(|_| format!("headers: bad value for {name}"))?;
                value.set_sensitive(true);
                headers.insert(name, value);
            }
            ToolKind::Http { url: url("url", entry.url)?, headers }
        }
        "openai" => {
            let key_env = entry.api_key_env.ok_or("api_key_env is required")?;
            let api_key = var(&key_env).ok_or_else(|| format!("api_key_env {key_env} is not set"))?;
            let mut base_url = url("base_url", entry.base_url)?;
            if !base_url.path().ends_with('/') {
                base_url.set_path(&format!("{}/", base_url.path()));
            }
            ToolKind::OpenAi {
                base_url,
                api_key: Secret::new(api_key),
                model: entry.model.ok_or("model is required")?,
                system_prompt: entry.system_prompt,
                stream: entry.stream,
            }
        }
        other => return Err(format!("kind {other:?} is not echo, http or openai")),
    };
    Ok(ToolDefinition { name: entry.name, description: entry.description, timeout, max_concurrency, kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: Duration = Duration::from_secs(600);

    fn vars(name: &str) -> Option<String> {
        (name == "GLM_API_KEY").then(|| "secret".to_owned())
    }

    #[test]
    fn a_registry_with_every_kind() {
        let text = r#"
            [[tools]]
            name = "glm"
            kind = "openai"
            description = "GLM-4.6"
            base_url = "https://api.z.ai/api/paas/v4"
            api_key_env = "GLM_API_KEY"
            model = "glm-4.6"
            stream = true
            timeout_secs = 120

            [[tools]]
            name = "hook"
            kind = "http"
            url = "http://127.0.0.1:9000/run"
            headers = { "x-token" = "abc" }
            max_concurrency = 2
        "#;
        let tools = parse(text, &vars, CAP).unwrap();
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["echo", "glm", "hook"]);
        assert_eq!(tools[1].timeout, Duration::from_secs(120));
        assert_eq!(tools[2].timeout, CAP);
        assert_eq!(tools[2].max_concurrency, 2);
        match &tools[1].kind {
            ToolKind::OpenAi { base_url, api_key, .. } => {
                assert_eq!(
                    base_url.join("chat/completions").unwrap().as_str(),
                    "https://api.z.ai/api/paas/v4/chat/completions"
                );
                assert_eq!(api_key.expose(), "secret");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn syntax_errors_do_not_quote_the_line() {
        let error = parse("[[tools]]\nheaders = { token = \"s3cret\" \n", &vars, CAP).unwrap_err();
        assert!(error.starts_with("line 2: "), "{error}");
        assert!(!error.contains("s3cret") && !error.contains('\n'), "{error}");
    }

    #[test]
    fn the_example_registry_is_valid() {
        let every_key_set = |_: &str| Some("key".to_owned());
        let tools = parse(include_str!("../../tools.example.toml"), &every_key_set, CAP).unwrap();
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["echo", "glm", "kimi"]);
    }

    #[test]
    fn errors_name_the_entry() {
        let cases = [
            ("[[tools]]\nname = \"x\"\nkind = \"ftp\"", "tools[0] (x): kind"),
            ("[[tools]]\nname = \"Bad Name\"\nkind = \"echo\"", "tools[0] (Bad Name): name"),
            ("[[tools]]\nname = \"echo\"\nkind = \"echo\"", "tools[0] (echo): the name"),
            ("[[tools]]\nname = \"h\"\nkind = \"http\"", "tools[0] (h): url is required"),
            (
                "[[tools]]\nname = \"s\"\nkind = \"echo\"\ntimeout_secs = 601",
                "tools[0] (s): timeout_secs 601",
            ),
            (
                "[[tools]]\nname = \"k\"\nkind = \"openai\"\nbase_url = \"https://a.b\"\nmodel = \"m\"\napi_key_env = \"NOPE\"",
                "tools[0] (k): api_key_env NOPE is not set",
            ),
            ("[[tools]]\nname = \"t\"\nkind = \"echo\"\ntypo = 1", "line 4: unknown field"),
        ];
        for (text, expected) in cases {
            let error = parse(text, &vars, CAP).unwrap_err();
            assert!(error.contains(expected), "{error}");
        }
    }
}
