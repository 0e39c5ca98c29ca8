-- 0010 (PostgreSQL): retention, as SQLite's 0014. The audit trail stays append-only for every code
-- path but the retention sweep: a row may be deleted only when it is older than the transaction's
-- soma.audit_before_ms setting, which only the sweep sets (set_config(..., true): for its own
-- transaction, and back to 0 before its savepoint ends; pg_retention.c).
CREATE INDEX IF NOT EXISTS sessions_updated ON sessions(updated_ms);
CREATE INDEX IF NOT EXISTS audit_created ON audit(created_ms);
CREATE INDEX IF NOT EXISTS tasks_dead_updated ON tasks(updated_ms) WHERE state = 'dead';
CREATE OR REPLACE FUNCTION audit_retention_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.created_ms < COALESCE(NULLIF(current_setting('soma.audit_before_ms', true), '')::bigint, 0) THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION 'audit rows are append-only' USING ERRCODE = 'insufficient_privilege';
END
$$;
DROP TRIGGER IF EXISTS audit_no_delete ON audit;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit FOR EACH ROW EXECUTE FUNCTION audit_retention_only();
