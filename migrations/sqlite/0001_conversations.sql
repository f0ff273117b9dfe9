-- Threads ("conversations") and their turns ("messages").
-- Timestamps are RFC 3339 UTC text with microseconds, so text order is time order.

CREATE TABLE conversations (
    id         TEXT PRIMARY KEY NOT NULL,
    parent_id  TEXT,
    title      TEXT,
    tool_name  TEXT,
    metadata   TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    turn_count INTEGER NOT NULL DEFAULT 0,
    version    INTEGER NOT NULL DEFAULT 1
);

CREATE INDEX conversations_by_activity ON conversations (updated_at DESC, id DESC);

CREATE TABLE messages (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq             INTEGER NOT NULL,
    role            TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
    content         TEXT NOT NULL,
    tool_name       TEXT,
    files           TEXT NOT NULL DEFAULT '[]',
    model_provider  TEXT,
    model_name      TEXT,
    metadata        TEXT NOT NULL DEFAULT '{}',
    idempotency_key TEXT,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (conversation_id, seq),
    UNIQUE (conversation_id, idempotency_key)
);
