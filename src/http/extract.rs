//! Extractors whose rejections speak problem+json like every other error.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::error::{ApiError, ErrorCode};
use crate::domain::ValidationError;

/// A JSON request body. A body that is not JSON is 400 `malformed_json`; well-formed JSON
/// that is not an object, or breaks the schema anywhere, is 422 `validation_failed`
/// naming the field.
pub struct AppJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        // Checks the content type, the size and the syntax; reading a raw value keeps
        // every number and nesting level as sent, so whatever it accepts is well-formed.
        let axum::Json(body) = axum::Json::<Box<RawValue>>::from_request(request, state).await?;
        read_object(body.get()).map(AppJson)
    }
}

/// Reads a well-formed JSON text as the request type.
fn read_object<T: DeserializeOwned>(json: &str) -> Result<T, ApiError> {
    if !json.starts_with('{') {
        return Err(ValidationError::new("body", "must be a JSON object").into());
    }
    let mut deserializer = serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let field = error.path().to_string();
        let message = plain_message(&error.into_inner());
        match field.as_str() {
            "." => ValidationError::new("body", message),
            _ => ValidationError::new(field, message),
        }
        .into()
    })
}

/// Serde's words for JSON's kinds and Rust's types, and what the API calls them.
const API_WORDS: [(&str, &str); 7] = [
    ("expected value", "has the wrong type"),
    ("invalid type: unit value", "invalid type: null"),
    ("expected u32", "expected an integer from 0 to 4294967295"),
    ("invalid type: sequence", "invalid type: array"),
    ("expected a sequence", "expected an array"),
    ("invalid type: map", "invalid type: object"),
    ("expected a map", "expected an object"),
];

/// The parser's complaint about a value, without its position in the text (the field
/// names the place) and in the API's words.
fn plain_message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let position = format!(" at line {} column {}", error.line(), error.column());
    let text = text.strip_suffix(&position).unwrap_or(&text);
    API_WORDS.iter().fold(text.to_owned(), |text, (serde, api)| text.replace(serde, api))
}

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct AppPath<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct AppQuery<T>(pub T);

/// What the document says an `{id}` in a path looks like.
pub const UUID_PATTERN: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// The `{id}` of a path: a UUID in its hyphenated form only. The braced, `urn:uuid:` and
/// unhyphenated spellings are refused so that each resource has one URL.
pub struct PathId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let AppPath(raw) = AppPath::<String>::from_request_parts(parts, state).await?;
        parse_hyphenated(&raw).map(PathId).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidId,
                "id: must be a UUID written xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx",
            )
        })
    }
}

/// The uuid crate tells its spellings apart by length; 36 characters is the hyphenated one.
fn parse_hyphenated(raw: &str) -> Option<Uuid> {
    (raw.len() == 36).then(|| Uuid::try_parse(raw).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::NewTurn;

    fn refusal(json: &str) -> String {
        let error = read_object::<NewTurn>(json).expect_err(json);
        let described = format!("{error:?}");
        let response = axum::response::IntoResponse::into_response(error);
        assert_eq!(response.status(), axum::http::StatusCode::UNPROCESSABLE_ENTITY, "{json}");
        described
    }

    #[test]
    fn mistyped_fields_are_named_in_the_apis_words() {
        for (json, expected) in [
            (r#"{"role": null, "content": "x"}"#, "role: has the wrong type"),
            (r#"{"role": 1, "content": "x"}"#, "role: has the wrong type"),
            (r#"{"role": [], "content": "x"}"#, "role: has the wrong type"),
            (r#"{"role": "user", "content": null}"#, "content: invalid type: null, expected a string"),
            (r#"{"role": "user", "content": "x", "files": {}}"#, "files: invalid type: object"),
            (r#"{"role": "user", "content": "x", "metadata": [1]}"#, "metadata: invalid type: array"),
            (
                r#"{"role": "user", "content": "x", "metadata": {"n": 1e400}}"#,
                "metadata.n: number out of range",
            ),
            (r#"["user", "x", null, [], null, null, {}]"#, "body: must be a JSON object"),
            (r#"{"role": "user"}"#, "body: missing field `content`"),
        ] {
            let refused = refusal(json);
            assert!(refused.contains(expected), "{json}: {refused}");
            for rust in ["struct", "NewTurn", "u32", "line 1"] {
                assert!(!refused.contains(rust), "{json}: {refused}");
            }
        }
    }

    #[test]
    fn only_the_hyphenated_spelling_is_an_id() {
        let id = Uuid::new_v4();
        assert_eq!(parse_hyphenated(&id.hyphenated().to_string()), Some(id));
        assert_eq!(parse_hyphenated(&id.hyphenated().to_string().to_uppercase()), Some(id));
        for other in [id.simple().to_string(), id.braced().to_string(), id.urn().to_string()] {
            assert_eq!(parse_hyphenated(&other), None, "{other}");
        }
        assert_eq!(parse_hyphenated("0123456789abcdef0123456789abcdef----"), None);
    }
}
