use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::validation::{MAX_TITLE_CHARS, ValidationError, check_max_chars, check_metadata, check_tool_name};
use super::{ConversationPolicy, Metadata, Turn};

/// A stored conversation thread. Its `id` is the `continuation_id` tools pass around.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thread {
    pub id: Uuid,
    pub parent_id: Option<Uuid>,
    pub title: Option<String>,
    pub tool_name: Option<String>,
    pub metadata: Metadata,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub turn_count: u32,
    /// Bumped on every change; orders cache entries.
    pub version: i64,
}

/// A thread together with all of its turns, oldest first.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ThreadWithTurns {
    pub thread: Thread,
    pub turns: Vec<Turn>,
}

/// A thread to create.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewThread {
    /// At most 200 characters.
    #[schema(max_length = 200, pattern = "^[^\\u0000]*$")]
    pub title: Option<String>,
    /// Tool that starts the thread.
    #[schema(pattern = "^[a-z0-9_-]{1,64}$")]
    pub tool_name: Option<String>,
    /// Thread this one continues; history follows this link. A thread that does not
    /// exist is refused with 422.
    pub parent_id: Option<Uuid>,
    /// Any JSON object, at most 16 KiB once serialized and nested at most 32 deep, whose
    /// keys and strings hold no NUL character and whose numbers are not negative zero:
    /// what every store can read back exactly.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Metadata,
}

impl NewThread {
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(title) = &self.title {
            check_max_chars("title", title, MAX_TITLE_CHARS)?;
        }
        if let Some(name) = &self.tool_name {
            check_tool_name("tool_name", name)?;
        }
        check_metadata("metadata", &self.metadata)
    }
}

/// A thread as the API shows it: stored fields plus what the policy derives from them.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Thread)]
pub struct ThreadView<'a> {
    pub id: Uuid,
    pub parent_id: Option<Uuid>,
    pub title: Option<&'a str>,
    pub tool_name: Option<&'a str>,
    #[schema(value_type = Object)]
    pub metadata: &'a Metadata,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// `updated_at` plus the conversation timeout; appending is refused from then on.
    pub expires_at: DateTime<Utc>,
    pub expired: bool,
    pub turn_count: u32,
    pub max_turns: u32,
    pub turns_remaining: u32,
    /// All turns, oldest first; present when a single thread is read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turns: Option<&'a [Turn]>,
}

impl Thread {
    pub fn view<'a>(
        &'a self,
        turns: Option<&'a [Turn]>,
        policy: &ConversationPolicy,
        now: DateTime<Utc>,
    ) -> ThreadView<'a> {
        ThreadView {
            id: self.id,
            parent_id: self.parent_id,
            title: self.title.as_deref(),
            tool_name: self.tool_name.as_deref(),
            metadata: &self.metadata,
            created_at: self.created_at,
            updated_at: self.updated_at,
            expires_at: policy.expires_at(self.updated_at),
            expired: policy.is_expired(self.updated_at, now),
            turn_count: self.turn_count,
            max_turns: policy.max_turns,
            turns_remaining: policy.turns_remaining(self.turn_count),
            turns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn view_derives_expiry_and_remaining_turns() {
        let now = Utc::now();
        let thread = Thread {
            id: Uuid::new_v4(),
            parent_id: None,
            title: Some("t".into()),
            tool_name: None,
            metadata: Metadata::new(),
            created_at: now,
            updated_at: now,
            turn_count: 2,
            version: 3,
        };
        let policy = ConversationPolicy { timeout: TimeDelta::hours(2), max_turns: 5 };
        let view = thread.view(None, &policy, now + TimeDelta::hours(3));
        assert!(view.expired);
        assert_eq!(view.expires_at, now + TimeDelta::hours(2));
        assert_eq!(view.turns_remaining, 3);
        let json = serde_json::to_value(&view).unwrap();
        assert!(json.get("turns").is_none());
        assert!(json.get("version").is_none());
    }

    #[test]
    fn nul_is_refused_in_titles_and_metadata() {
        let new = NewThread { title: Some("a\u{0}b".into()), ..NewThread::default() };
        assert_eq!(new.validate().unwrap_err().field, "title");
        let mut new = NewThread::default();
        new.metadata.insert("k\u{0}".into(), 1.into());
        assert_eq!(new.validate().unwrap_err().field, "metadata (a key)");
    }

    #[test]
    fn long_titles_are_refused() {
        let new = NewThread { title: Some("x".repeat(201)), ..NewThread::default() };
        assert_eq!(new.validate().unwrap_err().field, "title");
    }
}
