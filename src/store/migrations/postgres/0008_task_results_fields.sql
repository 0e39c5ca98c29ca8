-- 0008 (PostgreSQL): as SQLite's 0012. A finished task's row keeps its name, retries and start
-- time (copied from its queue row when it finishes; NULL for rows written before), and results
-- expire (queue.result_expires_s): the sweep deletes rows completed before the cutoff through the
-- completed_ms index (pg_tasks.c). Adding NULL or constant-default columns rewrites nothing.
ALTER TABLE task_results ADD COLUMN IF NOT EXISTS name TEXT;
ALTER TABLE task_results ADD COLUMN IF NOT EXISTS retries BIGINT NOT NULL DEFAULT 0;
ALTER TABLE task_results ADD COLUMN IF NOT EXISTS started_ms BIGINT;
CREATE INDEX IF NOT EXISTS task_results_completed ON task_results(completed_ms);
