-- Most turns carry no idempotency key, yet the table's UNIQUE (conversation_id,
-- idempotency_key) gave each of them an index entry: one more page for every append to
-- change and sync. Keys are now unique through an index over the keyed turns alone.
-- SQLite cannot drop a table's constraint, so the table is rebuilt.

CREATE TABLE messages_rebuilt (
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
    PRIMARY KEY (conversation_id, seq)
);

INSERT INTO messages_rebuilt SELECT conversation_id, seq, role, content, tool_name, files,
    model_provider, model_name, metadata, idempotency_key, created_at FROM messages;
DROP TABLE messages;
ALTER TABLE messages_rebuilt RENAME TO messages;

CREATE UNIQUE INDEX messages_by_idempotency_key ON messages (conversation_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
