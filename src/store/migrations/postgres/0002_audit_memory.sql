-- 0002 (PostgreSQL): the audit trail and long-term memory, as SQLite's 0004-0007 have them
-- (tenant names, SQLite's 0005, are in 0001 here).

-- The append-only audit trail (src/audit): the database itself refuses to change or remove a
-- row, so no code path (nor a mistaken query) can rewrite history.
CREATE TABLE audit (
  id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant      TEXT NOT NULL,
  subject     TEXT NOT NULL,
  key_id      TEXT,
  action      TEXT NOT NULL,
  resource    TEXT,
  decision    TEXT NOT NULL,               -- allow | deny | done
  request_id  TEXT,
  detail      TEXT,
  created_ms  BIGINT NOT NULL
);
CREATE INDEX audit_tenant ON audit(tenant, id);
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit rows are append-only' USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

-- The memory outbox (src/memory): every memory write until its sink has it, inserted in the
-- transaction of the event it comes from, deleted once delivered. `key` is the idempotency key
-- (the event id). claimed_pid/claimed_start name the backend that took a `sending` row: when
-- it is gone, the row is a dead process's and any node's next claim puts it back (pg_memory.c).
CREATE TABLE memory_outbox (
  id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- delivery order
  key           TEXT NOT NULL,                      -- idempotency key (event id), per tenant
  tenant        TEXT NOT NULL,
  session_id    TEXT NOT NULL DEFAULT '',           -- rows of one session are delivered in id order
  namespace     TEXT NOT NULL DEFAULT '',           -- '' = memory.namespace at delivery
  body          TEXT NOT NULL,                      -- {value:{...}, tags:[...]} as JSON
  state         TEXT NOT NULL DEFAULT 'pending',    -- pending | sending | failed
  attempts      INTEGER NOT NULL DEFAULT 0,
  available_ms  BIGINT NOT NULL,                    -- not before (backoff)
  claimed_ms    BIGINT NOT NULL DEFAULT 0,          -- when it went sending
  claimed_pid   INTEGER NOT NULL DEFAULT 0,         -- backend that claimed it
  claimed_start TIMESTAMPTZ,                        -- and that backend's start (pids are reused)
  last_error    TEXT NOT NULL DEFAULT '',
  created_ms    BIGINT NOT NULL,
  updated_ms    BIGINT NOT NULL,
  UNIQUE (tenant, key)
);
CREATE INDEX memory_outbox_ready ON memory_outbox(state, available_ms, id);
CREATE INDEX memory_outbox_pending ON memory_outbox(id) WHERE state = 'pending';
-- the claim asks, per candidate, for earlier rows of its session still waiting or in flight: only
-- those rows are indexed, so failed rows piling up never lengthen that look-up
CREATE INDEX memory_outbox_session ON memory_outbox(tenant, session_id, id) WHERE state IN ('pending', 'sending');
CREATE INDEX memory_outbox_tenant ON memory_outbox(tenant, id);

-- The built-in memory (memory.driver = builtin): full-text recall, tenant-scoped. tsv is the
-- English tsvector of the content (at most its first 100,000 characters: a tsvector is bounded)
-- plus one lexeme naming the tenant and namespace ('s' || md5(length(tenant):tenant namespace)),
-- so the GIN index finds a query's words within one scope (pg_memory_search.c).
CREATE TABLE memories (
  id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant      TEXT NOT NULL,
  namespace   TEXT NOT NULL,
  key         TEXT NOT NULL,
  session_id  TEXT NOT NULL DEFAULT '',
  content     TEXT NOT NULL,                 -- the text that is searched
  payload     TEXT NOT NULL,                 -- the value as written (JSON)
  created_ms  BIGINT NOT NULL,
  tsv         tsvector GENERATED ALWAYS AS (
                to_tsvector('english'::regconfig, left(content, 100000)) ||
                ('s' || md5(length(tenant)::text || ':' || tenant || namespace))::tsvector) STORED,
  UNIQUE (tenant, namespace, key)
);
CREATE INDEX memories_tsv ON memories USING gin (tsv);
