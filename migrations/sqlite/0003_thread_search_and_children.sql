-- A thread's children, newest first, for the links on its dashboard page.
CREATE INDEX conversations_by_parent ON conversations (parent_id, created_at DESC, id DESC);

-- Titles by substring: a trigram index over conversations.title, kept in step by triggers.
-- Listings still check each match with LIKE, so it only narrows which rows are read.
CREATE VIRTUAL TABLE conversations_title USING fts5 (
    title, content = 'conversations', content_rowid = 'rowid', tokenize = 'trigram'
);
INSERT INTO conversations_title (conversations_title) VALUES ('rebuild');

CREATE TRIGGER conversations_title_insert AFTER INSERT ON conversations BEGIN
    INSERT INTO conversations_title (rowid, title) VALUES (new.rowid, new.title);
END;

CREATE TRIGGER conversations_title_delete AFTER DELETE ON conversations BEGIN
    INSERT INTO conversations_title (conversations_title, rowid, title)
    VALUES ('delete', old.rowid, old.title);
END;

CREATE TRIGGER conversations_title_update AFTER UPDATE OF title ON conversations BEGIN
    INSERT INTO conversations_title (conversations_title, rowid, title)
    VALUES ('delete', old.rowid, old.title);
    INSERT INTO conversations_title (rowid, title) VALUES (new.rowid, new.title);
END;
