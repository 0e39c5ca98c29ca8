-- 0006: long-term memory (src/memory). memory_outbox holds every memory write until its sink
-- (SomaBrain, or the built-in table below) has it: a row is inserted in the same transaction as
-- the event it comes from and deleted once delivered. `key` is the idempotency key SomaBrain
-- sees (the event id), so a replay never stores twice.
CREATE TABLE memory_outbox (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,  -- delivery order
  key           TEXT NOT NULL,                      -- idempotency key (event id), per tenant
  tenant        TEXT NOT NULL,
  session_id    TEXT NOT NULL DEFAULT '',           -- rows of one session are delivered in id order
  namespace     TEXT NOT NULL DEFAULT '',           -- '' = memory.namespace at delivery
  body          TEXT NOT NULL,                      -- {value:{...}, tags:[...]} as JSON
  state         TEXT NOT NULL DEFAULT 'pending',    -- pending | sending | failed
  attempts      INTEGER NOT NULL DEFAULT 0,
  available_ms  INTEGER NOT NULL,                   -- not before (backoff)
  claimed_ms    INTEGER NOT NULL DEFAULT 0,         -- when it went sending
  last_error    TEXT NOT NULL DEFAULT '',
  created_ms    INTEGER NOT NULL,
  updated_ms    INTEGER NOT NULL,
  UNIQUE (tenant, key)
);
CREATE INDEX memory_outbox_ready ON memory_outbox(state, available_ms, id);
CREATE INDEX memory_outbox_session ON memory_outbox(session_id, id);
CREATE INDEX memory_outbox_tenant ON memory_outbox(tenant, id);

-- The built-in memory (memory.driver = builtin): full-text recall with FTS5, tenant-scoped.
-- The PostgreSQL driver keeps the same columns with a tsvector instead of the FTS5 table.
CREATE TABLE memories (
  id          INTEGER PRIMARY KEY,
  tenant      TEXT NOT NULL,
  namespace   TEXT NOT NULL,
  key         TEXT NOT NULL,
  session_id  TEXT NOT NULL DEFAULT '',
  content     TEXT NOT NULL,                 -- the text that is searched
  payload     TEXT NOT NULL,                 -- the value as written (JSON)
  created_ms  INTEGER NOT NULL,
  UNIQUE (tenant, namespace, key)
);
CREATE VIRTUAL TABLE memories_fts USING fts5(content, content='memories', content_rowid='id',
  tokenize='unicode61 remove_diacritics 2');
CREATE TRIGGER memories_ai AFTER INSERT ON memories BEGIN
  INSERT INTO memories_fts(rowid, content) VALUES (new.id, new.content);
END;
CREATE TRIGGER memories_ad AFTER DELETE ON memories BEGIN
  INSERT INTO memories_fts(memories_fts, rowid, content) VALUES ('delete', old.id, old.content);
END;
