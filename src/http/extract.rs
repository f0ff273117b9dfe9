//! Extractors whose rejections speak problem+json like every other error.

use axum::extract::{FromRequest, FromRequestParts, Request};
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::error::ApiError;
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
}
