//! EX-AI's original Supabase tables, adopted in place by `exai migrate`.

use axum::http::StatusCode;
use serde_json::json;
use std::sync::Arc;

use exai::store::PostgresStore;

use crate::support::process::exai_command;
use crate::support::services::PostgresServer;
use crate::support::{TestApp, memory_cache, policy};

const A: &str = "03c6f0d2-09ec-421f-9e00-9859572bbaf5";
const B: &str = "369a99d1-e24f-4c23-b99c-767b4e0f0f0b";
const C: &str = "debb44af-15b9-456d-9b88-6a2519f81427";

/// The schema EX-AI created, with conversations and messages written out of order.
const EX_AI_SCHEMA: &str = "
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
    conversation_id uuid REFERENCES conversations (id),
    role message_role NOT NULL,
    content text NOT NULL,
    metadata jsonb,
    idempotency_key text UNIQUE,
    created_at timestamptz DEFAULT now()
);
INSERT INTO conversations (id, continuation_id, title, metadata, updated_at) VALUES
    ('5bff413f-2925-438f-873e-d29e2fde93a8', '03c6f0d2-09ec-421f-9e00-9859572bbaf5',
     'Architecture & Planning', '{\"model\": \"glm-4.6\"}', now()),
    ('9935b5af-ffa6-4c64-b999-afd5c6e0a465', '369a99d1-e24f-4c23-b99c-767b4e0f0f0b',
     NULL, NULL, now() - interval '1 minute'),
    ('66d31162-e932-4468-b7ee-f2767bf55452', 'not-a-uuid', 'unaddressable', NULL, now());
INSERT INTO conversations (id, continuation_id, title, created_at, updated_at) VALUES
    ('7eaffc72-0e46-4d21-9b06-0e162a5a1eff', 'DEBB44AF-15B9-456D-9B88-6A2519F81427', 'upper case, no times',
     now() - interval '1 hour', NULL);
INSERT INTO messages (conversation_id, role, content, metadata, idempotency_key, created_at) VALUES
    ('5bff413f-2925-438f-873e-d29e2fde93a8', 'assistant', 'second', NULL, NULL, now() - interval '2 minutes'),
    ('5bff413f-2925-438f-873e-d29e2fde93a8', 'user', 'first', '{\"tokens\": 3}', 'k1', now() - interval '3 minutes'),
    ('5bff413f-2925-438f-873e-d29e2fde93a8', 'system', 'third', NULL, NULL, now() - interval '1 minute'),
    ('9935b5af-ffa6-4c64-b999-afd5c6e0a465', 'user', 'only', NULL, NULL, now() - interval '5 minutes');
";

#[tokio::test]
async fn ex_ai_tables_are_adopted_and_readable_through_the_api() {
    let Some(postgres) = PostgresServer::start() else {
        return;
    };
    postgres.psql("postgres", "CREATE DATABASE ex_ai");
    postgres.psql("ex_ai", EX_AI_SCHEMA);
    let url = postgres.url("ex_ai");
    for run in ["first", "second"] {
        let output = exai_command().arg("migrate").env("DATABASE_URL", &url).output().unwrap();
        assert!(output.status.success(), "{run} migrate: {}", String::from_utf8_lossy(&output.stderr));
    }

    let store = Arc::new(PostgresStore::connect(&url).unwrap());
    let app = TestApp::with_backends(store, memory_cache(), policy(20));
    let thread = app.get(&format!("/v1/threads/{A}")).await.json();
    assert_eq!(thread["title"], "Architecture & Planning");
    assert_eq!(thread["metadata"], json!({"model": "glm-4.6"}));
    assert_eq!(thread["turn_count"], 3);
    let turns = thread["turns"].as_array().unwrap();
    let order: Vec<(u64, &str, &str)> = turns
        .iter()
        .map(|t| (t["seq"].as_u64().unwrap(), t["role"].as_str().unwrap(), t["content"].as_str().unwrap()))
        .collect();
    assert_eq!(order, [(1, "user", "first"), (2, "assistant", "second"), (3, "system", "third")]);
    assert_eq!(turns[0]["metadata"], json!({"tokens": 3}));
    assert_eq!(turns[1]["metadata"], json!({}));
    assert_eq!(turns[0]["files"], json!([]));

    let listed = app.get("/v1/threads").await.json();
    let ids: Vec<&str> =
        listed["data"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [A, B, C], "newest activity first; a non-UUID continuation_id is left out");
    let upper = app.get(&format!("/v1/threads/{C}")).await.json();
    assert_eq!(upper["title"], "upper case, no times");
    assert_eq!(upper["updated_at"], upper["created_at"], "a missing updated_at is its creation");

    let appended =
        app.post_json(&format!("/v1/threads/{A}/turns"), &json!({"role": "tool", "content": "fourth"})).await;
    assert_eq!(appended.status, StatusCode::CREATED, "{}", appended.text());
    assert_eq!(appended.json()["seq"], 4);

    // Keys were unique across all threads; now they are unique per thread.
    let mut request = crate::support::json_request(
        &format!("/v1/threads/{B}/turns"),
        json!({"role": "user", "content": "again"}).to_string(),
    );
    request.headers_mut().insert("idempotency-key", "k1".parse().unwrap());
    assert_eq!(app.send(request).await.status, StatusCode::CREATED);

    let history = app.get(&format!("/v1/threads/{B}/history")).await.json();
    assert_eq!(history["total_turns"], 2);
}
