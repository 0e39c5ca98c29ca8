-- 0002: sessions, their events, attachments, the local task queue and task results.
CREATE TABLE sessions (
  id          TEXT PRIMARY KEY,
  tenant      TEXT NOT NULL,
  subject     TEXT NOT NULL DEFAULT '',
  persona_id  TEXT,
  metadata    TEXT NOT NULL DEFAULT '{}',   -- JSON object
  paused      INTEGER NOT NULL DEFAULT 0,
  last_seq    INTEGER NOT NULL DEFAULT 0,   -- highest event seq assigned
  created_ms  INTEGER NOT NULL,
  updated_ms  INTEGER NOT NULL
);
CREATE INDEX sessions_tenant_updated ON sessions(tenant, updated_ms DESC, id);

CREATE TABLE events (
  session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
  seq         INTEGER NOT NULL,             -- 1..n per session, assigned on insert
  event_id    TEXT NOT NULL UNIQUE,
  tenant      TEXT NOT NULL,
  type        TEXT NOT NULL,
  body        TEXT NOT NULL,                -- the event as served (JSON, seq included)
  created_ms  INTEGER NOT NULL,
  PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;

CREATE TABLE attachments (
  id          TEXT PRIMARY KEY,
  tenant      TEXT NOT NULL,
  session_id  TEXT,
  filename    TEXT NOT NULL,
  mime        TEXT NOT NULL,
  size        INTEGER NOT NULL,
  sha256      TEXT NOT NULL,
  created_ms  INTEGER NOT NULL
);
CREATE INDEX attachments_tenant ON attachments(tenant, created_ms);

CREATE TABLE tasks (
  id                TEXT PRIMARY KEY,
  queue             TEXT NOT NULL,
  name              TEXT NOT NULL,
  tenant            TEXT NOT NULL,
  session_id        TEXT,
  payload           TEXT NOT NULL DEFAULT '{}',
  state             TEXT NOT NULL,          -- queued | reserved | done | dead
  attempts          INTEGER NOT NULL DEFAULT 0,
  max_retries       INTEGER NOT NULL DEFAULT 3,
  available_ms      INTEGER NOT NULL,       -- not before (countdown, retry backoff)
  reserved_until_ms INTEGER NOT NULL DEFAULT 0,
  worker            TEXT NOT NULL DEFAULT '',
  last_error        TEXT NOT NULL DEFAULT '',
  created_ms        INTEGER NOT NULL,
  updated_ms        INTEGER NOT NULL
);
CREATE INDEX tasks_ready ON tasks(queue, state, available_ms);
CREATE INDEX tasks_session ON tasks(session_id);

CREATE TABLE task_results (
  task_id      TEXT PRIMARY KEY,
  tenant       TEXT NOT NULL,
  status       TEXT NOT NULL,               -- SUCCESS | FAILURE
  result       TEXT,
  error        TEXT,
  completed_ms INTEGER NOT NULL
);
