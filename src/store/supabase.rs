//! Supabase through PostgREST: the store's SQL functions called as
//! `POST /rest/v1/rpc/<function>` over one shared HTTPS client.

use async_trait::async_trait;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::time::Duration;
use url::Url;

use super::StoreError;
use super::functions::{Arg, Call, CallError, FunctionStore, Session, Transport};
use crate::secret::Secret;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

pub type SupabaseStore = FunctionStore<PostgrestTransport>;

pub struct PostgrestTransport {
    http: reqwest::Client,
    rpc: Url,
}

/// PostgREST's error body.
#[derive(Debug, Default, Deserialize)]
struct PostgrestError {
    code: Option<String>,
    message: Option<String>,
    details: Option<String>,
    hint: Option<String>,
}

impl SupabaseStore {
    /// Builds the one client of the process (keep-alive pool, HTTP/2 where offered,
    /// connect and total timeouts) with the key headers its kind of key needs.
    pub fn connect(project: &Url, key: &Secret) -> Result<Self, StoreError> {
        let rpc =
            project.join("rest/v1/rpc/").map_err(|e| StoreError::Internal(format!("SUPABASE_URL: {e}")))?;
        let http = reqwest::Client::builder()
            .default_headers(key_headers(key)?)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(32)
            // The key must not follow a redirect to another host.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| StoreError::Internal(format!("building the HTTP client: {e}")))?;
        Ok(FunctionStore::new(PostgrestTransport { http, rpc }))
    }
}

/// A legacy service-role key is a JWT and goes in both `apikey` and
/// `Authorization: Bearer`; a new `sb_secret_…` key is not a JWT and goes only in `apikey`.
fn key_headers(key: &Secret) -> Result<HeaderMap, StoreError> {
    let value = |text: &str| {
        let mut value = HeaderValue::from_str(text).map_err(|_| {
            StoreError::Internal("SUPABASE_SERVICE_ROLE_KEY: not a valid header value".into())
        })?;
        value.set_sensitive(true);
        Ok::<_, StoreError>(value)
    };
    let key = key.expose();
    let mut headers = HeaderMap::new();
    headers.insert("apikey", value(key)?);
    if is_jwt(key) {
        headers.insert(AUTHORIZATION, value(&format!("Bearer {key}"))?);
    }
    Ok(headers)
}

fn is_jwt(key: &str) -> bool {
    key.starts_with("eyJ") && key.split('.').count() == 3
}

fn json_arg(arg: &Arg) -> Value {
    match arg {
        Arg::Uuid(value) => value.map_or(Value::Null, |v| Value::String(v.to_string())),
        Arg::Text(value) => value.clone().map_or(Value::Null, Value::String),
        Arg::Int(value) => Value::from(*value),
        Arg::BigInt(value) => Value::from(*value),
        Arg::Bool(value) => Value::Bool(*value),
        Arg::Json(value) => value.clone(),
        Arg::Time(value) => value.map_or(Value::Null, |t| Value::String(t.to_rfc3339())),
    }
}

#[async_trait]
impl Transport for PostgrestTransport {
    fn backend(&self) -> &'static str {
        "supabase"
    }

    async fn call(&self, call: &Call) -> Result<String, CallError> {
        let url = self.rpc.join(call.function).map_err(|e| CallError::Failed(e.to_string()))?;
        let body: Map<String, Value> =
            call.args.iter().map(|(name, arg)| ((*name).to_owned(), json_arg(arg))).collect();
        let response = self
            .http
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| CallError::Unavailable(format!("Supabase unreachable: {e}")))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| CallError::Unavailable(format!("Supabase answer cut short: {e}")))?;
        if status.is_success() {
            // Every store function returns a JSON value, so an empty body is a broken
            // answer (from a proxy, say), never "nothing found".
            return match text.is_empty() {
                true => Err(CallError::Failed(format!("{} answered {status} with no body", call.function))),
                false => Ok(text),
            };
        }
        let error: PostgrestError = serde_json::from_str(&text).unwrap_or_default();
        Err(classify(status, error))
    }

    async fn snapshot(&self) -> Result<Box<dyn Session + '_>, CallError> {
        Ok(Box::new(EachOnItsOwn(self)))
    }
}

/// PostgREST runs each call in a transaction of its own: a session's calls read the
/// database as it is when each is made.
struct EachOnItsOwn<'a>(&'a PostgrestTransport);

#[async_trait]
impl Session for EachOnItsOwn<'_> {
    async fn call(&mut self, call: &Call) -> Result<String, CallError> {
        self.0.call(call).await
    }
}

fn classify(status: StatusCode, error: PostgrestError) -> CallError {
    let sqlstate = error.code.clone().unwrap_or_default();
    if sqlstate.starts_with("EX") {
        return CallError::Rejected { sqlstate };
    }
    let described = format!(
        "HTTP {status} {sqlstate}: {} {} {}",
        error.message.unwrap_or_default(),
        error.details.unwrap_or_default(),
        error.hint.unwrap_or_default()
    );
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            CallError::Misconfigured(format!("Supabase refused the key ({described})"))
        }
        _ if sqlstate == "PGRST202" || sqlstate == "42883" => CallError::Misconfigured(format!(
            "a store function is missing ({described}); apply migrations/postgres to the project"
        )),
        StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => CallError::Unavailable(described),
        _ if status.is_server_error() => CallError::Unavailable(described),
        _ => CallError::Failed(described),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2lnbmF0dXJl";

    #[test]
    fn a_jwt_key_goes_in_both_headers() {
        let headers = key_headers(&Secret::new(JWT)).unwrap();
        assert_eq!(headers["apikey"], JWT);
        assert_eq!(headers[AUTHORIZATION], format!("Bearer {JWT}").as_str());
        assert!(headers["apikey"].is_sensitive());
    }

    #[test]
    fn a_secret_key_goes_only_in_apikey() {
        let headers = key_headers(&Secret::new("sb_secret_abc123")).unwrap();
        assert_eq!(headers["apikey"], "sb_secret_abc123");
        assert!(headers.get(AUTHORIZATION).is_none());
    }

    #[test]
    fn postgrest_errors_keep_their_meaning() {
        let error = |code: &str| PostgrestError { code: Some(code.into()), ..PostgrestError::default() };
        assert_eq!(
            classify(StatusCode::BAD_REQUEST, error("EX410")),
            CallError::Rejected { sqlstate: "EX410".into() }
        );
        assert!(matches!(
            classify(StatusCode::SERVICE_UNAVAILABLE, error("PGRST001")),
            CallError::Unavailable(_)
        ));
        assert!(matches!(classify(StatusCode::NOT_FOUND, error("PGRST202")), CallError::Misconfigured(_)));
        assert!(matches!(classify(StatusCode::UNAUTHORIZED, error("PGRST301")), CallError::Misconfigured(_)));
        assert!(matches!(classify(StatusCode::BAD_REQUEST, error("22P02")), CallError::Failed(_)));
    }
}
