use serde_json::Value;
use std::borrow::Cow;

use super::Metadata;

/// Content of one turn, in bytes.
pub const MAX_CONTENT_BYTES: usize = 1024 * 1024;
/// Serialized metadata of a thread or turn, in bytes.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_FILES_PER_TURN: usize = 64;
pub const MAX_FILE_REF_BYTES: usize = 4096;
pub const MAX_MODEL_FIELD_CHARS: usize = 128;
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;
/// Levels of nested objects and arrays in metadata, the metadata object being the first.
/// A store's answer wraps metadata a few levels deeper, and JSON readers stop at 128.
pub const MAX_METADATA_DEPTH: usize = 32;
/// Keys of this form are the server's own (a tool run's turns); a client cannot take them.
pub const RESERVED_IDEMPOTENCY_KEY_PREFIX: &str = "run:";

/// A request field that breaks one of the documented limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The field as the API names it; nested metadata as `metadata.key[2]`.
    pub field: Cow<'static, str>,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// Text every store keeps exactly. PostgreSQL cannot hold the NUL character in text or
/// JSON strings, so it is refused everywhere rather than stored on some backends only.
pub fn check_text(field: impl Into<Cow<'static, str>>, value: &str) -> Result<(), ValidationError> {
    if value.contains('\0') {
        return Err(ValidationError::new(field, "must not contain the NUL character (U+0000)"));
    }
    Ok(())
}

/// Text the server records from elsewhere (a tool's answer or error), made storable: a
/// NUL character becomes U+FFFD, as the record says what happened rather than refusing it.
pub fn storable_text(text: String) -> String {
    if text.contains('\0') { text.replace('\0', "\u{FFFD}") } else { text }
}

pub fn check_tool_name(field: &'static str, name: &str) -> Result<(), ValidationError> {
    let valid_chars =
        name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if name.is_empty() || name.len() > 64 || !valid_chars {
        return Err(ValidationError::new(field, "must match [a-z0-9_-]{1,64}"));
    }
    Ok(())
}

/// Text of at most `max` characters, as [`check_text`] allows it.
pub fn check_max_chars(field: &'static str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.chars().count() > max {
        return Err(ValidationError::new(field, format!("must be at most {max} characters")));
    }
    check_text(field, value)
}

pub fn check_metadata(field: &'static str, metadata: &Metadata) -> Result<(), ValidationError> {
    let size = serde_json::to_vec(metadata).map_or(usize::MAX, |bytes| bytes.len());
    if size > MAX_METADATA_BYTES {
        return Err(ValidationError::new(
            field,
            format!("must serialize to at most {MAX_METADATA_BYTES} bytes"),
        ));
    }
    let mut path = field.to_owned();
    metadata.iter().try_for_each(|(key, value)| check_entry(&mut path, key, value, 1))
}

/// Checks one member of a metadata object and what it holds; `path` names the object.
fn check_entry(path: &mut String, key: &str, value: &Value, depth: usize) -> Result<(), ValidationError> {
    check_text(format!("{path} (a key)"), key)?;
    let parent = path.len();
    path.push('.');
    path.push_str(key);
    check_json(path, value, depth)?;
    path.truncate(parent);
    Ok(())
}

/// A metadata value that every store reads back exactly as it was written. Numbers are
/// what JSON parsers hold as 64-bit integers or doubles, all of which round-trip, except
/// negative zero: PostgreSQL's numbers have no sign on zero.
fn check_json(path: &mut String, value: &Value, depth: usize) -> Result<(), ValidationError> {
    match value {
        Value::Null | Value::Bool(_) => Ok(()),
        Value::String(text) => check_text(path.clone(), text),
        Value::Number(number) => match number.as_f64() {
            Some(zero) if number.is_f64() && zero == 0.0 && zero.is_sign_negative() => {
                Err(ValidationError::new(path.clone(), "negative zero cannot be stored; send 0"))
            }
            _ => Ok(()),
        },
        Value::Array(_) | Value::Object(_) if depth >= MAX_METADATA_DEPTH => Err(ValidationError::new(
            path.clone(),
            format!("metadata may nest objects and arrays at most {MAX_METADATA_DEPTH} levels deep"),
        )),
        Value::Array(items) => items.iter().enumerate().try_for_each(|(index, item)| {
            let parent = path.len();
            path.push_str(&format!("[{index}]"));
            check_json(path, item, depth + 1)?;
            path.truncate(parent);
            Ok(())
        }),
        Value::Object(members) => {
            members.iter().try_for_each(|(key, value)| check_entry(path, key, value, depth + 1))
        }
    }
}

pub fn check_idempotency_key(key: &str) -> Result<(), ValidationError> {
    let printable = key.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES || !printable {
        return Err(ValidationError::new(
            "Idempotency-Key",
            format!("must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} printable ASCII characters"),
        ));
    }
    Ok(())
}

/// A key a client chose: valid, and outside the server's own namespace.
pub fn check_client_idempotency_key(key: &str) -> Result<(), ValidationError> {
    check_idempotency_key(key)?;
    if key.starts_with(RESERVED_IDEMPOTENCY_KEY_PREFIX) {
        return Err(ValidationError::new(
            "Idempotency-Key",
            format!("keys starting with `{RESERVED_IDEMPOTENCY_KEY_PREFIX}` are reserved for tool runs"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tool_names_follow_the_pattern() {
        assert!(check_tool_name("tool_name", "glm-4_6").is_ok());
        for bad in ["", "Chat", "a b", "é", &"x".repeat(65)] {
            assert!(check_tool_name("tool_name", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn metadata_size_is_bounded() {
        let mut metadata = Metadata::new();
        metadata.insert("k".into(), "v".repeat(MAX_METADATA_BYTES).into());
        assert!(check_metadata("metadata", &metadata).is_err());
        assert!(check_metadata("metadata", &Metadata::new()).is_ok());
    }

    #[test]
    fn idempotency_keys_are_printable_and_short() {
        assert!(check_idempotency_key("retry-7f3a").is_ok());
        assert!(check_idempotency_key("").is_err());
        assert!(check_idempotency_key("tab\there").is_err());
        assert!(check_idempotency_key(&"k".repeat(256)).is_err());
    }

    #[test]
    fn clients_cannot_take_the_servers_keys() {
        assert!(check_idempotency_key("run:7f3a").is_ok());
        assert!(check_client_idempotency_key("run:7f3a").is_err());
        assert!(check_client_idempotency_key("runs:7f3a").is_ok());
    }

    fn metadata(value: Value) -> Metadata {
        serde_json::from_value(value).unwrap()
    }

    fn refused_field(value: Value) -> Option<String> {
        check_metadata("metadata", &metadata(value)).err().map(|e| e.field.into_owned())
    }

    #[test]
    fn nul_is_refused_anywhere_in_metadata() {
        assert_eq!(refused_field(json!({"a": {"b": [1, "x\u{0}"]}})).as_deref(), Some("metadata.a.b[1]"));
        assert_eq!(refused_field(json!({"a": {"k\u{0}": 1}})).as_deref(), Some("metadata.a (a key)"));
        assert_eq!(refused_field(json!({"a": {"b": [1, "x"]}})), None);
    }

    #[test]
    fn negative_zero_is_refused_and_other_numbers_pass() {
        assert_eq!(refused_field(json!({"n": -0.0})).as_deref(), Some("metadata.n"));
        for n in [json!(0), json!(0.0), json!(f64::MAX), json!(5e-324), json!(u64::MAX), json!(i64::MIN)] {
            assert_eq!(refused_field(json!({ "n": n })), None, "{n}");
        }
    }

    #[test]
    fn metadata_nesting_is_bounded() {
        let nested = |levels: usize| (1..=levels).fold(json!(1), |inner, _| json!({ "k": inner }));
        assert_eq!(refused_field(nested(MAX_METADATA_DEPTH)), None);
        assert!(refused_field(nested(MAX_METADATA_DEPTH + 1)).is_some());
    }
}
