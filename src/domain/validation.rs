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

/// A request field that breaks one of the documented limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: &'static str,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self { field, message: message.into() }
    }
}

pub fn check_tool_name(field: &'static str, name: &str) -> Result<(), ValidationError> {
    let valid_chars =
        name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if name.is_empty() || name.len() > 64 || !valid_chars {
        return Err(ValidationError::new(field, "must match [a-z0-9_-]{1,64}"));
    }
    Ok(())
}

pub fn check_max_chars(field: &'static str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.chars().count() > max {
        return Err(ValidationError::new(field, format!("must be at most {max} characters")));
    }
    Ok(())
}

pub fn check_metadata(field: &'static str, metadata: &Metadata) -> Result<(), ValidationError> {
    let size = serde_json::to_vec(metadata).map_or(usize::MAX, |bytes| bytes.len());
    if size > MAX_METADATA_BYTES {
        return Err(ValidationError::new(
            field,
            format!("must serialize to at most {MAX_METADATA_BYTES} bytes"),
        ));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
