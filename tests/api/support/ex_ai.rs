//! EX-AI's side of a shared database: its schema, rebuilt from what its published
//! migrations create, and the statements its Python server runs, either as SQL by the
//! tables' owner or as the REST requests supabase-py makes with the service_role key.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use super::postgrest::SECRET_KEY;

/// How EX-AI's migrations left the global uniqueness of `messages.idempotency_key`.
#[derive(Clone, Copy, Debug)]
pub enum KeyUniqueness {
    /// The table's `UNIQUE` constraint only.
    Constraint,
    /// Only the later `idx_messages_idempotency_key` index.
    Index,
    /// Both.
    Both,
}

/// EX-AI's schema, with Supabase's service_role, for `key` uniqueness.
pub fn schema(key: KeyUniqueness) -> String {
    let constraint = match key {
        KeyUniqueness::Index => "",
        KeyUniqueness::Constraint | KeyUniqueness::Both => "UNIQUE",
    };
    let index = match key {
        KeyUniqueness::Constraint => "",
        KeyUniqueness::Index | KeyUniqueness::Both => {
            "CREATE UNIQUE INDEX idx_messages_idempotency_key ON messages (idempotency_key);"
        }
    };
    format!(
        "
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        CREATE ROLE service_role NOLOGIN BYPASSRLS;
    END IF;
END $$;
CREATE TYPE message_role AS ENUM ('user', 'assistant', 'system');
CREATE TABLE conversations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    continuation_id text UNIQUE NOT NULL,
    title text,
    metadata jsonb,
    created_at timestamptz DEFAULT now(),
    updated_at timestamptz DEFAULT now()
);
CREATE TABLE messages (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    conversation_id uuid REFERENCES conversations (id) ON DELETE CASCADE,
    role message_role NOT NULL,
    content text NOT NULL,
    metadata jsonb,
    created_at timestamptz DEFAULT now(),
    idempotency_key text {constraint}
);
CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at = now();
    RETURN NEW;
END $$;
CREATE TRIGGER conversations_touch_updated_at BEFORE UPDATE ON conversations
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
{index}
ALTER TABLE conversations ADD COLUMN session_id text;
CREATE INDEX idx_messages_conversation_created ON messages (conversation_id, created_at);
CREATE INDEX idx_conversations_session ON conversations (session_id);
GRANT ALL ON conversations, messages TO service_role;
"
    )
}

/// EX-AI's key for a message: SHA-256 of `role:content:created_at`.
pub fn message_key(role: &str, content: &str, created_at: &str) -> String {
    hex(&Sha256::digest(format!("{role}:{content}:{created_at}")))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A message as EX-AI stores it.
pub struct Message<'a> {
    pub conversation_id: Uuid,
    pub role: &'a str,
    pub content: &'a str,
    pub metadata: Value,
    pub created_at: &'a str,
}

impl Message<'_> {
    fn row(&self) -> Value {
        json!({
            "conversation_id": self.conversation_id,
            "role": self.role,
            "content": self.content,
            "metadata": self.metadata,
            "created_at": self.created_at,
            "idempotency_key": message_key(self.role, self.content, self.created_at),
        })
    }
}

/// EX-AI's server, talking to the database one of the two ways it can.
pub enum ExAi {
    /// SQL as the tables' owner.
    Owner(PgPool),
    /// supabase-py's REST requests with the service_role key, at this base URL.
    ServiceRole(String),
}

impl ExAi {
    /// Its conversation upsert on `continuation_id`; the conversation's row id.
    pub async fn upsert_conversation(&self, continuation_id: &str, title: &str, metadata: Value) -> Uuid {
        match self {
            ExAi::Owner(pool) => sqlx::query_scalar(
                "INSERT INTO conversations (title, metadata, continuation_id) VALUES ($1, $2, $3) \
                 ON CONFLICT (continuation_id) DO UPDATE \
                 SET title = EXCLUDED.title, metadata = EXCLUDED.metadata, \
                     continuation_id = EXCLUDED.continuation_id \
                 RETURNING id",
            )
            .bind(title)
            .bind(Json(metadata))
            .bind(continuation_id)
            .fetch_one(pool)
            .await
            .unwrap(),
            ExAi::ServiceRole(_) => {
                let body = json!({"title": title, "metadata": metadata, "continuation_id": continuation_id});
                let stored = self
                    .rest_post(
                        "conversations?on_conflict=continuation_id",
                        "resolution=merge-duplicates",
                        body,
                    )
                    .await;
                stored[0]["id"].as_str().unwrap().parse().unwrap()
            }
        }
    }

    /// Its message insert, `on conflict (idempotency_key) do nothing`, for one or more rows.
    pub async fn store_messages(&self, messages: &[Message<'_>]) {
        let rows = Value::Array(messages.iter().map(Message::row).collect());
        match self {
            ExAi::Owner(pool) => {
                sqlx::query(
                    "INSERT INTO messages \
                         (conversation_id, role, content, metadata, created_at, idempotency_key) \
                     SELECT conversation_id, role, content, metadata, created_at, idempotency_key \
                     FROM jsonb_to_recordset($1) AS m (conversation_id uuid, role message_role, \
                         content text, metadata jsonb, created_at timestamptz, idempotency_key text) \
                     ON CONFLICT (idempotency_key) DO NOTHING",
                )
                .bind(Json(rows))
                .execute(pool)
                .await
                .unwrap();
            }
            ExAi::ServiceRole(_) => {
                self.rest_post("messages?on_conflict=idempotency_key", "resolution=ignore-duplicates", rows)
                    .await;
            }
        }
    }

    /// Its read of a conversation by exact `continuation_id`.
    pub async fn conversation(&self, continuation_id: &str) -> Option<Value> {
        let found =
            self.rest_or_sql_get("conversations", &[("continuation_id", continuation_id)], None).await;
        found.as_array().unwrap().first().cloned()
    }

    /// Its read of a conversation's messages, `order by created_at`, with a limit.
    pub async fn messages(&self, conversation_id: Uuid, limit: u32) -> Vec<Value> {
        let id = conversation_id.to_string();
        let found = self.rest_or_sql_get("messages", &[("conversation_id", &id)], Some(limit)).await;
        found.as_array().unwrap().clone()
    }

    async fn rest_or_sql_get(&self, table: &str, filters: &[(&str, &str)], limit: Option<u32>) -> Value {
        match self {
            ExAi::Owner(pool) => {
                let (column, value) = filters[0];
                let (order, limit) = match limit {
                    Some(n) => ("ORDER BY created_at", format!("LIMIT {n}")),
                    None => ("", String::new()),
                };
                let sql = format!(
                    "SELECT coalesce(jsonb_agg(to_jsonb(found)), '[]') FROM \
                     (SELECT * FROM {table} WHERE {column}::text = $1 {order} {limit}) found"
                );
                let found: Json<Value> = sqlx::query_scalar(&sql).bind(value).fetch_one(pool).await.unwrap();
                found.0
            }
            ExAi::ServiceRole(base) => {
                let mut query: Vec<(String, String)> = vec![("select".into(), "*".into())];
                query.extend(filters.iter().map(|(c, v)| (c.to_string(), format!("eq.{v}"))));
                if let Some(n) = limit {
                    query.push(("order".into(), "created_at".into()));
                    query.push(("limit".into(), n.to_string()));
                }
                let response = reqwest::Client::new()
                    .get(format!("{base}rest/v1/{table}"))
                    .query(&query)
                    .header("apikey", SECRET_KEY)
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success(), "{}", response.text().await.unwrap());
                response.json().await.unwrap()
            }
        }
    }

    async fn rest_post(&self, path: &str, resolution: &str, body: Value) -> Value {
        let ExAi::ServiceRole(base) = self else { unreachable!("only over REST") };
        let response = reqwest::Client::new()
            .post(format!("{base}rest/v1/{path}"))
            .header("apikey", SECRET_KEY)
            .header("prefer", format!("{resolution},return=representation"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "EX-AI's write: {}", response.text().await.unwrap());
        response.json().await.unwrap()
    }
}
