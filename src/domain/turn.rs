use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
use uuid::Uuid;

use super::Metadata;
use super::validation::{
    MAX_CONTENT_BYTES, MAX_FILE_REF_BYTES, MAX_FILES_PER_TURN, MAX_MODEL_FIELD_CHARS, ValidationError,
    check_max_chars, check_metadata, check_text, check_tool_name,
};

/// Who spoke a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
    System,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::System => "system",
            Role::Tool => "tool",
        }
    }

    pub fn parse(value: &str) -> Option<Role> {
        [Role::User, Role::Assistant, Role::System, Role::Tool]
            .into_iter()
            .find(|role| role.as_str() == value)
    }
}

/// One stored turn of a thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Turn {
    pub thread_id: Uuid,
    /// 1-based position in the thread, contiguous.
    pub seq: u32,
    pub role: Role,
    pub content: String,
    pub tool_name: Option<String>,
    pub files: Vec<String>,
    pub model_provider: Option<String>,
    pub model_name: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Metadata,
    pub created_at: DateTime<Utc>,
}

/// A turn to append.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTurn {
    pub role: Role,
    /// Not empty; at most 1 MiB (1,048,576 bytes) of UTF-8.
    #[schema(min_length = 1, max_length = 1048576, pattern = "^[^\\u0000]*$")]
    pub content: String,
    #[schema(pattern = "^[a-z0-9_-]{1,64}$")]
    pub tool_name: Option<String>,
    /// Paths or URIs the turn refers to: at most 64, each 1 to 4,096 bytes.
    #[serde(default)]
    #[schema(schema_with = file_refs)]
    pub files: Vec<String>,
    /// At most 128 characters.
    #[schema(max_length = 128, pattern = "^[^\\u0000]*$")]
    pub model_provider: Option<String>,
    /// At most 128 characters.
    #[schema(max_length = 128, pattern = "^[^\\u0000]*$")]
    pub model_name: Option<String>,
    /// Any JSON object, at most 16 KiB once serialized and nested at most 32 deep, whose
    /// keys and strings hold no NUL character and whose numbers are not negative zero:
    /// what every store can read back exactly.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Metadata,
}

/// The `files` of a new turn, with the limits `NewTurn::validate` enforces. A length in
/// characters can only bound one in bytes from above; the description says bytes.
fn file_refs() -> ArrayBuilder {
    let entry = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_FILE_REF_BYTES))
        .pattern(Some("^[^\\u0000]*$"));
    ArrayBuilder::new()
        .items(entry)
        .max_items(Some(MAX_FILES_PER_TURN))
        .description(Some("Paths or URIs the turn refers to: at most 64, each 1 to 4,096 bytes."))
}

impl NewTurn {
    /// A turn with only a role and content.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_name: None,
            files: Vec::new(),
            model_provider: None,
            model_name: None,
            metadata: Metadata::new(),
        }
    }

    /// Whether `turn` is what appending this one stored: how a replayed idempotency key
    /// tells a retry from a different request.
    pub fn is_recorded_as(&self, turn: &Turn) -> bool {
        self.role == turn.role
            && self.content == turn.content
            && self.tool_name == turn.tool_name
            && self.files == turn.files
            && self.model_provider == turn.model_provider
            && self.model_name == turn.model_name
            && self.metadata == turn.metadata
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.content.is_empty() {
            return Err(ValidationError::new("content", "must not be empty"));
        }
        if self.content.len() > MAX_CONTENT_BYTES {
            return Err(ValidationError::new(
                "content",
                format!("must be at most {MAX_CONTENT_BYTES} bytes"),
            ));
        }
        check_text("content", &self.content)?;
        if let Some(name) = &self.tool_name {
            check_tool_name("tool_name", name)?;
        }
        if self.files.len() > MAX_FILES_PER_TURN {
            return Err(ValidationError::new(
                "files",
                format!("must list at most {MAX_FILES_PER_TURN} entries"),
            ));
        }
        if self.files.iter().any(|f| f.is_empty() || f.len() > MAX_FILE_REF_BYTES) {
            return Err(ValidationError::new(
                "files",
                format!("entries must be 1 to {MAX_FILE_REF_BYTES} bytes"),
            ));
        }
        for (index, file) in self.files.iter().enumerate() {
            check_text(format!("files[{index}]"), file)?;
        }
        if let Some(provider) = &self.model_provider {
            check_max_chars("model_provider", provider, MAX_MODEL_FIELD_CHARS)?;
        }
        if let Some(model) = &self.model_name {
            check_max_chars("model_name", model, MAX_MODEL_FIELD_CHARS)?;
        }
        check_metadata("metadata", &self.metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(content: &str) -> NewTurn {
        NewTurn::new(Role::User, content)
    }

    #[test]
    fn content_must_be_present_and_bounded() {
        assert_eq!(turn("").validate().unwrap_err().field, "content");
        assert!(turn(&"x".repeat(MAX_CONTENT_BYTES)).validate().is_ok());
        assert!(turn(&"x".repeat(MAX_CONTENT_BYTES + 1)).validate().is_err());
    }

    #[test]
    fn files_are_bounded() {
        let mut too_many = turn("hi");
        too_many.files = vec!["a.rs".into(); MAX_FILES_PER_TURN + 1];
        assert_eq!(too_many.validate().unwrap_err().field, "files");
        let mut empty_entry = turn("hi");
        empty_entry.files = vec![String::new()];
        assert_eq!(empty_entry.validate().unwrap_err().field, "files");
    }

    #[test]
    fn nul_is_refused_in_every_text_field() {
        let nul = "a\u{0}b".to_owned();
        let mut cases = vec![(turn(&nul), "content")];
        let mut files = turn("hi");
        files.files = vec!["ok".into(), nul.clone()];
        cases.push((files, "files[1]"));
        cases.push((NewTurn { model_provider: Some(nul.clone()), ..turn("hi") }, "model_provider"));
        cases.push((NewTurn { model_name: Some(nul.clone()), ..turn("hi") }, "model_name"));
        cases.push((NewTurn { tool_name: Some(nul.clone()), ..turn("hi") }, "tool_name"));
        let mut metadata = turn("hi");
        metadata.metadata.insert("k".into(), nul.clone().into());
        cases.push((metadata, "metadata.k"));
        for (turn, field) in cases {
            assert_eq!(turn.validate().unwrap_err().field, field);
        }
    }

    #[test]
    fn roles_round_trip_through_their_names() {
        for role in [Role::User, Role::Assistant, Role::System, Role::Tool] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("robot"), None);
    }
}
