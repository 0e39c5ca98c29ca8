-- PostgreSQL 0001: identity (tenants, API keys), chat (sessions, events, attachments) and the local
-- task queue (tasks with their dead letters, task results): the tables of the SQLite migrations
-- 0001, 0002, 0003 and 0005 in PostgreSQL's types. Times are ms since the epoch (BIGINT), JSON is
-- kept as the text that is served (TEXT), so both drivers return the same bytes.
CREATE TABLE tenants (
  id         TEXT PRIMARY KEY,
  name       TEXT NOT NULL DEFAULT '',
  created_ms BIGINT NOT NULL
);

CREATE TABLE api_keys (
  id         TEXT PRIMARY KEY,              -- public part of the token, shown by `keys list`
  tenant_id  TEXT NOT NULL REFERENCES tenants(id),
  name       TEXT NOT NULL DEFAULT '',
  scopes     TEXT NOT NULL DEFAULT '',      -- space-separated, e.g. "admin"
  token_hash BYTEA NOT NULL,                -- SHA-256 of the whole token (write decode($n, 'hex'))
  created_ms BIGINT NOT NULL,
  revoked_ms BIGINT                         -- NULL while the key is valid
);
CREATE INDEX api_keys_tenant ON api_keys(tenant_id);

-- store_data_version: every change to keys or tenants moves this sequence, so the key cache of
-- every node (polling it) notices another node's key change. nextval is not rolled back: a
-- rolled-back change costs a needless reload, never a missed one.
CREATE SEQUENCE keys_version;
CREATE FUNCTION keys_version_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM nextval('keys_version');
  RETURN NULL;
END $$;
CREATE TRIGGER api_keys_version AFTER INSERT OR UPDATE OR DELETE ON api_keys
  FOR EACH STATEMENT EXECUTE FUNCTION keys_version_bump();
CREATE TRIGGER tenants_version AFTER INSERT OR UPDATE OR DELETE ON tenants
  FOR EACH STATEMENT EXECUTE FUNCTION keys_version_bump();

CREATE TABLE sessions (
  id          TEXT PRIMARY KEY,
  tenant      TEXT NOT NULL,
  subject     TEXT NOT NULL DEFAULT '',
  persona_id  TEXT,
  metadata    TEXT NOT NULL DEFAULT '{}',   -- JSON object
  paused      BOOLEAN NOT NULL DEFAULT false,
  last_seq    BIGINT NOT NULL DEFAULT 0,    -- highest event seq assigned
  created_ms  BIGINT NOT NULL,
  updated_ms  BIGINT NOT NULL
);
CREATE INDEX sessions_tenant_updated ON sessions(tenant, updated_ms DESC, id DESC);

CREATE TABLE events (
  session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
  seq         BIGINT NOT NULL,              -- 1..n per session, assigned on insert
  event_id    TEXT NOT NULL UNIQUE,
  tenant      TEXT NOT NULL,
  type        TEXT NOT NULL,
  body        TEXT NOT NULL,                -- the event as served (JSON, seq included)
  created_ms  BIGINT NOT NULL,
  PRIMARY KEY (session_id, seq)
);

CREATE TABLE attachments (
  id          TEXT PRIMARY KEY,
  tenant      TEXT NOT NULL,
  session_id  TEXT,
  filename    TEXT NOT NULL,
  mime        TEXT NOT NULL,
  size        BIGINT NOT NULL,
  sha256      TEXT NOT NULL,
  created_ms  BIGINT NOT NULL
);
CREATE INDEX attachments_tenant ON attachments(tenant, created_ms);
CREATE INDEX attachments_session ON attachments(session_id);

-- the local queue (queue.driver = local): several nodes reserve from it with FOR UPDATE SKIP LOCKED
CREATE TABLE tasks (
  id                TEXT PRIMARY KEY,
  queue             TEXT NOT NULL,
  name              TEXT NOT NULL,
  tenant            TEXT NOT NULL,
  session_id        TEXT,
  payload           TEXT NOT NULL DEFAULT '{}',
  state             TEXT NOT NULL,          -- queued | reserved | dead (done tasks leave the table)
  attempts          INTEGER NOT NULL DEFAULT 0,
  max_retries       INTEGER NOT NULL DEFAULT 3,
  available_ms      BIGINT NOT NULL,        -- not before (countdown, retry backoff)
  reserved_until_ms BIGINT NOT NULL DEFAULT 0,
  worker            TEXT NOT NULL DEFAULT '',
  last_error        TEXT NOT NULL DEFAULT '',
  created_ms        BIGINT NOT NULL,
  updated_ms        BIGINT NOT NULL
);
CREATE INDEX tasks_ready ON tasks(queue, state, available_ms);
CREATE INDEX tasks_expiry ON tasks(queue, state, reserved_until_ms);
CREATE INDEX tasks_session ON tasks(session_id) WHERE state = 'queued';

CREATE TABLE task_results (
  task_id      TEXT PRIMARY KEY,
  tenant       TEXT NOT NULL,
  status       TEXT NOT NULL,               -- SUCCESS | FAILURE
  result       TEXT,
  error        TEXT,
  completed_ms BIGINT NOT NULL
);
