-- Tool runs, kept after they finish so listings and the dashboard survive restarts.

CREATE TABLE tool_runs (
    id              TEXT PRIMARY KEY NOT NULL,
    tool            TEXT NOT NULL,
    status          TEXT NOT NULL,
    continuation_id TEXT NOT NULL,
    input           TEXT NOT NULL,
    output          TEXT,
    error           TEXT,
    created_at      TEXT NOT NULL,
    started_at      TEXT,
    finished_at     TEXT,
    timeout_secs    INTEGER NOT NULL,
    turns_remaining INTEGER
);

CREATE INDEX tool_runs_by_creation ON tool_runs (created_at DESC, id DESC);
CREATE INDEX tool_runs_unfinished ON tool_runs (status) WHERE status IN ('queued', 'running');
