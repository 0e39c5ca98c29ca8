-- 0007: recall cost bounded by the tenant, not by the whole memory. The full-text index gets a
-- `scope` column: one token naming the tenant and namespace (hex of each, so it is a single word
-- for the tokenizer), so a recall matches only its own scope inside the index, and looks at the
-- newest matching rows first (rowid order) instead of scoring every match of every tenant and
-- then filtering (which grew with every memory ever written: 17 ms at 4,000 memories).
ALTER TABLE memories ADD COLUMN scope TEXT GENERATED ALWAYS AS
  ('s' || lower(hex(tenant)) || 'n' || lower(hex(namespace))) VIRTUAL;
DROP TRIGGER memories_ai;
DROP TRIGGER memories_ad;
DROP TABLE memories_fts;
CREATE VIRTUAL TABLE memories_fts USING fts5(scope, content, content='memories', content_rowid='id',
  tokenize='unicode61 remove_diacritics 2');
INSERT INTO memories_fts(memories_fts) VALUES ('rebuild');
CREATE TRIGGER memories_ai AFTER INSERT ON memories BEGIN
  INSERT INTO memories_fts(rowid, scope, content) VALUES (new.id, new.scope, new.content);
END;
CREATE TRIGGER memories_ad AFTER DELETE ON memories BEGIN
  INSERT INTO memories_fts(memories_fts, rowid, scope, content) VALUES ('delete', old.id, old.scope, old.content);
END;
-- how many rows hold each word: recall leaves out words most memories hold (sqlite_memory.c)
CREATE VIRTUAL TABLE memories_vocab USING fts5vocab(memories_fts, 'row');
-- the relay's claim asks, per candidate row, for earlier rows of the same tenant and session: with
-- only (session_id, id) and (tenant, id) SQLite chose the latter, every earlier row of the tenant
-- per candidate (330 ms per claim with 2,600 pending rows); this index answers it in a few rows
DROP INDEX memory_outbox_session;
CREATE INDEX memory_outbox_session ON memory_outbox(tenant, session_id, id);
