-- 0004: the append-only audit trail (src/audit). The database itself refuses to change or remove
-- a row, so no code path (nor a mistaken query) can rewrite history.
CREATE TABLE audit (
  id          INTEGER PRIMARY KEY AUTOINCREMENT,
  tenant      TEXT NOT NULL,
  subject     TEXT NOT NULL,
  key_id      TEXT,
  action      TEXT NOT NULL,
  resource    TEXT,
  decision    TEXT NOT NULL,               -- allow | deny | done
  request_id  TEXT,
  detail      TEXT,
  created_ms  INTEGER NOT NULL
);
CREATE INDEX audit_tenant ON audit(tenant, id);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END;
