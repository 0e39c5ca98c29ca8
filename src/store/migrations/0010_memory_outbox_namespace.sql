-- 0010: the memory outbox is unique on (tenant, namespace, key), as the built-in `memories` table
-- and SomaBrain are. With UNIQUE (tenant, key) a key remembered in namespace a and then in b
-- while SomaBrain was down answered 200 `queued` twice, yet the second row was never written (ON
-- CONFLICT DO NOTHING) and only one memory was delivered. SQLite cannot drop a table constraint:
-- the table is rebuilt with its rows, its indexes and its AUTOINCREMENT counter (ids keep rising,
-- so no id of a delivered row is handed out again).
CREATE TABLE memory_outbox_new (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,  -- delivery order
  key           TEXT NOT NULL,                      -- idempotency key (event id), per tenant and namespace
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
  UNIQUE (tenant, namespace, key)
);
INSERT INTO memory_outbox_new(id, key, tenant, session_id, namespace, body, state, attempts, available_ms,
                              claimed_ms, last_error, created_ms, updated_ms)
  SELECT id, key, tenant, session_id, namespace, body, state, attempts, available_ms, claimed_ms, last_error,
         created_ms, updated_ms FROM memory_outbox ORDER BY id;
DELETE FROM sqlite_sequence WHERE name = 'memory_outbox_new';
INSERT INTO sqlite_sequence(name, seq) SELECT 'memory_outbox_new', seq FROM sqlite_sequence WHERE name = 'memory_outbox';
DROP TABLE memory_outbox;
ALTER TABLE memory_outbox_new RENAME TO memory_outbox;
CREATE INDEX memory_outbox_ready ON memory_outbox(state, available_ms, id);
CREATE INDEX memory_outbox_session ON memory_outbox(tenant, session_id, id);
CREATE INDEX memory_outbox_tenant ON memory_outbox(tenant, id);
