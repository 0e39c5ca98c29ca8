-- 0014: retention (src/orchestrator/retention.c). Indexes let the sweeper find the oldest sessions,
-- audit rows and dead letters without scanning. The audit trail stays append-only for every code
-- path but the sweep: a row may be deleted only when it is older than audit_retention.before_ms,
-- which is 0 (nothing) except inside the sweep's own transaction (sqlite_retention.c sets it, deletes
-- a batch of rows older than retention.audit_s, and sets it back to 0 before its savepoint ends).
-- Every statement may run again (the migration tests apply it twice).
CREATE INDEX IF NOT EXISTS sessions_updated ON sessions(updated_ms);
CREATE INDEX IF NOT EXISTS audit_created ON audit(created_ms);
CREATE INDEX IF NOT EXISTS tasks_dead_updated ON tasks(updated_ms) WHERE state = 'dead';
CREATE TABLE IF NOT EXISTS audit_retention (
  id         INTEGER PRIMARY KEY CHECK (id = 1),
  before_ms  INTEGER NOT NULL
);
INSERT OR IGNORE INTO audit_retention(id, before_ms) VALUES (1, 0);
DROP TRIGGER IF EXISTS audit_no_delete;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
  WHEN OLD.created_ms >= (SELECT before_ms FROM audit_retention WHERE id = 1)
  BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END;
