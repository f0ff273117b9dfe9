-- A run records the instance that owns it and a lease its owner renews while the run
-- lives. Only one process opens the file at a time, so at start every unfinished run of
-- another instance is abandoned; runs recorded before these columns existed have none.
-- A cancel asked through the store is recorded on the run, for its owner to find.

ALTER TABLE tool_runs ADD COLUMN owner TEXT;
ALTER TABLE tool_runs ADD COLUMN lease_expires_at TEXT;
ALTER TABLE tool_runs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
