//! Extractors whose rejections speak problem+json like every other error.

use axum::extract::{FromRequest, FromRequestParts};
use axum::http::request::Parts;
use uuid::Uuid;

use super::error::{ApiError, ErrorCode};

#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct AppJson<T>(pub T);

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
